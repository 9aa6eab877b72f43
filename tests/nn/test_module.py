"""The module system: registration, traversal, modes, devices and dtypes, state dicts."""

import numpy as np
import pytest

import tinynlm as tn
from tinynlm import nn


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(3, 4)
        self.second = nn.Linear(4, 2, bias=False)
        self.scale = nn.Parameter(tn.ones(2))
        self.register_buffer("offset", tn.zeros(2))
        self.register_buffer("scratch", tn.zeros(1), persistent=False)
        self.plain = 5  # not registered

    def forward(self, x):
        return self.second(self.first(x).relu()) * self.scale + self.offset


def test_registration_and_names():
    model = TwoLayer()
    assert [name for name, _ in model.named_parameters()] == [
        "scale", "first.weight", "first.bias", "second.weight"]
    assert [name for name, _ in model.named_buffers()] == ["offset", "scratch"]
    assert [name for name, _ in model.named_children()] == ["first", "second"]
    assert [name for name, _ in model.named_modules()] == ["", "first", "second"]
    assert model.num_parameters() == 2 + 12 + 4 + 8
    assert list(model.state_dict()) == ["scale", "offset", "first.weight", "first.bias",
                                        "second.weight"]


def test_shared_parameters_are_listed_once_but_saved_under_each_name():
    model = nn.Module()
    model.a = nn.Linear(2, 2)
    model.b = nn.Linear(2, 2)
    model.b.weight = model.a.weight  # weight tying
    assert len(list(model.parameters())) == 3
    assert {"a.weight", "b.weight"} <= set(model.state_dict())


def test_reassigning_and_deleting_attributes_updates_the_registry():
    model = TwoLayer()
    model.first = nn.Identity()
    assert "first.weight" not in dict(model.named_parameters())
    del model.scale
    assert "scale" not in dict(model.named_parameters())
    model.second.bias = None
    with pytest.raises(TypeError, match="parameter 'weight'"):
        model.second.weight = tn.ones(2, 4)


def test_train_eval_and_apply():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    model.eval()
    assert not model.training and not model[1].training
    model.train()
    assert all(module.training for module in model.modules())
    visited = []
    model.apply(lambda module: visited.append(type(module).__name__))
    assert visited == ["Linear", "Dropout", "Sequential"]


def test_zero_grad_and_requires_grad():
    model = TwoLayer()
    model(tn.ones(5, 3)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad(set_to_none=False)
    assert all(float(p.grad.abs().sum()) == 0 for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    model.requires_grad_(False)
    assert not any(p.requires_grad for p in model.parameters())


def test_to_dtype_keeps_parameter_identity():
    model = TwoLayer()
    weight = model.first.weight
    model.double()
    assert model.first.weight is weight and weight.dtype == tn.float64
    assert model.offset.dtype == tn.float64
    assert model(tn.ones(1, 3, dtype=tn.float64)).dtype == tn.float64
    with pytest.raises(TypeError, match="only floating dtypes"):
        model.to(tn.int64)


def test_state_dict_round_trip_copies_values():
    source, target = TwoLayer(), TwoLayer()
    state = source.state_dict()
    state["scale"][...] = 7.0  # the state dict is a copy: the model is untouched
    assert source.scale.tolist() == [1.0, 1.0]
    result = target.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    np.testing.assert_array_equal(target.first.weight.detach().numpy(),
                                  source.first.weight.detach().numpy())
    assert target.scale.tolist() == [7.0, 7.0]
    state["scale"][...] = 9.0  # and loading copies, so later changes do not leak in
    assert target.scale.tolist() == [7.0, 7.0]


def test_load_state_dict_reports_every_problem_and_changes_nothing():
    model = TwoLayer()
    before = model.state_dict()
    state = model.state_dict()
    del state["scale"]
    state["extra.weight"] = np.zeros(3)
    state["first.weight"] = np.zeros((5, 5), np.float32)
    state["second.weight"] = np.ones((2, 4), np.float32)
    with pytest.raises(RuntimeError) as error:
        model.load_state_dict(state)
    message = str(error.value)
    assert "missing keys: scale" in message and "unexpected keys: extra.weight" in message
    assert "shape mismatch for first.weight" in message and "(5, 5)" in message
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    result = model.load_state_dict({"scale": np.full(2, 3.0)}, strict=False)
    assert "first.weight" in result.missing_keys
    assert model.scale.tolist() == [3.0, 3.0]


def test_load_state_dict_casts_to_the_parameter_dtype():
    model = nn.Linear(2, 2)
    model.load_state_dict({"weight": np.ones((2, 2)), "bias": np.zeros(2)})
    assert model.weight.dtype == tn.float32


def test_containers():
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(2)])
    layers.append(nn.ReLU())
    layers.insert(0, nn.Tanh())
    assert [type(m).__name__ for m in layers] == ["Tanh", "Linear", "Linear", "ReLU"]
    assert list(layers.state_dict()) == ["1.weight", "1.bias", "2.weight", "2.bias"]
    table = nn.ModuleDict({"encoder": nn.Linear(2, 3)})
    table["decoder"] = nn.Linear(3, 2)
    assert list(table) == ["encoder", "decoder"] and "decoder" in table
    assert len(list(table.parameters())) == 4
    model = nn.Sequential(nn.Linear(2, 3), nn.GELU(), nn.Linear(3, 1))
    assert len(model) == 3 and isinstance(model[1], nn.GELU)
    assert len(model[:2]) == 2
    assert model(tn.ones(4, 2)).shape == (4, 1)


def test_repr_is_nested_and_readable():
    text = repr(nn.Sequential(nn.Linear(2, 3), nn.Dropout(0.1)))
    assert text == ("Sequential(\n  (0): Linear(in_features=2, out_features=3, bias=True)\n"
                    "  (1): Dropout(p=0.1)\n)")


def test_parameter_basics():
    param = nn.Parameter(tn.zeros(3))
    assert isinstance(param, tn.Tensor) and param.requires_grad and param.is_leaf
    assert "Parameter containing" in repr(param)
    with pytest.raises(RuntimeError, match="floating point"):
        nn.Parameter(tn.tensor([1, 2]))
    assert not nn.Parameter(tn.zeros(1), requires_grad=False).requires_grad


def test_assigning_before_init_is_an_error():
    class Broken(nn.Module):
        def __init__(self):
            self.weight = nn.Parameter(tn.zeros(1))

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Broken()


def test_training_run_is_deterministic_under_manual_seed():
    def run():
        tn.manual_seed(7)
        model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Tanh(), nn.Linear(8, 3))
        x = tn.randn(16, 4)
        target = tn.randint(0, 3, (16,))
        losses = []
        for _ in range(5):
            loss = nn.functional.cross_entropy(model(x), target)
            model.zero_grad()
            loss.backward()
            with tn.no_grad():
                for p in model.parameters():
                    p.data -= 0.1 * p.grad.data
            losses.append(loss.item())
        return losses

    assert run() == run()


def test_replacing_a_module_or_parameter_keeps_its_place():
    layers = nn.ModuleList([nn.ReLU(), nn.Tanh(), nn.Sigmoid()])
    layers[0] = nn.GELU()
    assert [type(m).__name__ for m in layers] == ["GELU", "Tanh", "Sigmoid"]
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    setattr(model, "0", nn.Linear(2, 3))
    assert model(tn.ones(1, 2)).shape == (1, 1)
    pair = nn.Module()
    pair.a, pair.b = nn.Linear(2, 2), nn.Linear(2, 2)
    pair.a = nn.Linear(2, 2)
    assert list(pair.state_dict()) == ["a.weight", "a.bias", "b.weight", "b.bias"]


def test_pytorch_only_arguments_are_accepted_or_refused_clearly():
    assert nn.ReLU(inplace=True)(tn.tensor([-1.0, 1.0])).tolist() == [0.0, 1.0]
    assert nn.Dropout(0.1, inplace=True).p == 0.1
    frozen = nn.Embedding.from_pretrained(tn.eye(3))
    assert not frozen.weight.requires_grad
    with pytest.raises(NotImplementedError, match="max_norm"):
        nn.Embedding(3, 2, max_norm=1.0)
    with pytest.raises(TypeError, match="input dtype float64 does not match the weight dtype"):
        nn.Linear(3, 2)(tn.ones(1, 3, dtype=tn.float64))
