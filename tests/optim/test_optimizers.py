"""Optimizers: convergence, state dicts, dtypes, parameter groups, errors, and PyTorch parity.

Tests that take the ``torch`` fixture compare with ``torch.optim`` and are skipped when PyTorch is
not installed; every other test needs only tinynlm. Parameters are plain leaf tensors whose
``.grad`` the tests set directly.
"""

import copy
import math
import pickle

import numpy as np
import pytest

import tinynlm as tn
from tinynlm import optim

# Options that between them take every branch of every update rule.
OPTION_GRID = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.2, "weight_decay": 0.05}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "maximize": True}),
    ("Adam", {}),
    ("Adam", {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.01, "amsgrad": True, "maximize": True}),
    ("AdamW", {"lr": 0.01}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
    ("RMSprop", {}),
    ("RMSprop", {"alpha": 0.9, "eps": 1e-6, "weight_decay": 0.1, "maximize": True}),
    ("RMSprop", {"momentum": 0.9}),
    ("RMSprop", {"centered": True, "momentum": 0.5}),
    ("Adagrad", {}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.1,
                 "initial_accumulator_value": 0.1, "eps": 1e-6}),
    ("Adagrad", {"maximize": True}),
]
GRID = [pytest.param(name, options, id=f"{name}-{'-'.join(options) or 'defaults'}")
        for name, options in OPTION_GRID]

SHAPES = [(3, 4), (5,), ()]  # a matrix, a vector and a 0-d parameter


def random_starts(rng):
    return [rng.normal(size=shape) for shape in SHAPES]


def gradient_sequence(rng, steps):
    """Per step, one gradient array per parameter; the last parameter has a gradient only on
    even steps (None otherwise), so skipping parameters without gradients is exercised."""
    return [[rng.normal(size=shape) if index < len(SHAPES) - 1 or step % 2 == 0 else None
             for index, shape in enumerate(SHAPES)]
            for step in range(steps)]


def make_optimizer(module, name, params, options):
    """The optimizer ``name`` from ``module`` (tinynlm.optim or torch.optim), with the first two
    parameters in a group with ``options`` and the rest in a group with its own learning rate."""
    groups = [{"params": params[:2]}, {"params": params[2:], "lr": 0.05}]
    return getattr(module, name)(groups, **options)


def apply_gradients(optimizer, params, step_gradients):
    for param, grad in zip(params, step_gradients):
        param.grad = None if grad is None else tn.tensor(grad, dtype=param.dtype,
                                                         device=param.device)
    optimizer.step()


def host(array):
    return tn.tensor(array).numpy()


# ----------------------------------------------------------------------------- convergence
TARGET, CURVATURES = np.array([1.0, -2.0, 0.5]), np.array([2.0, 20.0, 0.2])


def quadratic(w):
    """An ill-conditioned quadratic with its minimum 0 at TARGET: (loss, gradient)."""
    return 0.5 * np.sum(CURVATURES * (w - TARGET) ** 2), CURVATURES * (w - TARGET)


def rosenbrock(w):
    """The Rosenbrock valley, minimum 0 at (1, 1): (loss, gradient)."""
    x, y = w
    loss = (1 - x) ** 2 + 100 * (y - x * x) ** 2
    return loss, np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])


def minimise(make_optimizer_for, problem, start, steps):
    w = tn.tensor(start, requires_grad=True)
    optimizer = make_optimizer_for([w])
    for _ in range(steps):
        w.grad = tn.tensor(problem(w.data)[1], dtype=w.dtype)
        optimizer.step()
    return problem(w.data)[0]


@pytest.mark.parametrize("make_optimizer_for, threshold", [
    (lambda params: optim.SGD(params, lr=0.04), 1e-2),
    (lambda params: optim.SGD(params, lr=0.04, momentum=0.9), 1e-8),
    (lambda params: optim.SGD(params, lr=0.04, momentum=0.9, nesterov=True), 1e-8),
    (lambda params: optim.Adam(params, lr=0.05), 1e-8),
    (lambda params: optim.AdamW(params, lr=0.05, weight_decay=0.0), 1e-8),
    (lambda params: optim.RMSprop(params, lr=0.01), 3e-3),
    (lambda params: optim.RMSprop(params, lr=0.01, centered=True, momentum=0.5), 3e-3),
    (lambda params: optim.Adagrad(params, lr=0.5), 1e-8),
], ids=["SGD", "SGD-momentum", "SGD-nesterov", "Adam", "AdamW", "RMSprop", "RMSprop-centered",
        "Adagrad"])
def test_minimises_an_ill_conditioned_quadratic(make_optimizer_for, threshold):
    # The loss starts at 41.025.
    assert minimise(make_optimizer_for, quadratic, [0.0, 0.0, 0.0], 300) < threshold


@pytest.mark.parametrize("make_optimizer_for, threshold", [
    (lambda params: optim.SGD(params, lr=1e-3, momentum=0.9), 1e-6),
    (lambda params: optim.Adam(params, lr=0.02), 1e-3),
], ids=["SGD-momentum", "Adam"])
def test_minimises_the_rosenbrock_function(make_optimizer_for, threshold):
    # The loss starts at 12.5, and plain descent crawls along the curved valley.
    assert minimise(make_optimizer_for, rosenbrock, [-1.5, 2.0], 2000) < threshold


# ----------------------------------------------------------------------------- PyTorch parity
@pytest.mark.parametrize("name, options", GRID)
def test_matches_torch_for_twenty_steps(torch, name, options):
    rng = np.random.default_rng(0)
    starts, gradients = random_starts(rng), gradient_sequence(rng, 20)
    ours = [tn.tensor(start, requires_grad=True) for start in starts]  # float64
    theirs = [torch.tensor(start, requires_grad=True) for start in starts]
    our_optimizer = make_optimizer(optim, name, ours, options)
    their_optimizer = make_optimizer(torch.optim, name, theirs, options)
    for step_gradients in gradients:
        apply_gradients(our_optimizer, ours, step_gradients)
        for param, grad in zip(theirs, step_gradients):
            param.grad = None if grad is None else torch.tensor(grad)
        their_optimizer.step()

    for our_param, their_param in zip(ours, theirs):
        assert our_param.dtype == np.float64
        np.testing.assert_allclose(our_param.data, their_param.detach().numpy(),
                                   rtol=1e-10, atol=1e-14)
        our_state, their_state = our_optimizer.state[our_param], their_optimizer.state[their_param]
        assert set(our_state) == set(their_state)
        for key, value in our_state.items():
            np.testing.assert_allclose(value, np.asarray(their_state[key]), rtol=1e-10,
                                       atol=1e-14, err_msg=key)
    for our_group, their_group in zip(our_optimizer.param_groups, their_optimizer.param_groups):
        assert set(our_group) <= set(their_group)  # PyTorch's names, so checkpoints line up
        for key in set(our_group) - {"params"}:
            assert our_group[key] == their_group[key], key


# ----------------------------------------------------------------------------- state dicts
@pytest.mark.parametrize("name, options", GRID)
def test_state_dict_round_trip_continues_the_same_trajectory(name, options, device):
    rng = np.random.default_rng(1)
    starts, gradients = random_starts(rng), gradient_sequence(rng, 10)
    original = [tn.tensor(start, device=device, requires_grad=True) for start in starts]
    optimizer = make_optimizer(optim, name, original, options)
    for step_gradients in gradients[:5]:
        apply_gradients(optimizer, original, step_gradients)

    saved = optimizer.state_dict()
    snapshot = copy.deepcopy(saved)
    from_disk = pickle.loads(pickle.dumps(saved))
    resumed = [tn.tensor(param.data, requires_grad=True) for param in original]
    # Built with default hyperparameters: loading must bring back the saved ones.
    resumed_optimizer = getattr(optim, name)(
        [{"params": resumed[:2]}, {"params": resumed[2:]}])
    resumed_optimizer.load_state_dict(from_disk)
    for step_gradients in gradients[5:]:
        apply_gradients(optimizer, original, step_gradients)
        apply_gradients(resumed_optimizer, resumed, step_gradients)

    for first, second in zip(original, resumed):
        np.testing.assert_array_equal(host(first.data), host(second.data))
    assert optimizer.param_groups[1]["lr"] == resumed_optimizer.param_groups[1]["lr"] == 0.05
    # Steps after saving or loading never write into the state dict.
    for index, values in snapshot["state"].items():
        for key, value in values.items():
            np.testing.assert_array_equal(saved["state"][index][key], value)
            np.testing.assert_array_equal(from_disk["state"][index][key], value)


def test_state_dict_layout_follows_pytorch():
    params = [tn.ones(2, requires_grad=True), tn.ones(3, requires_grad=True),
              tn.ones((), requires_grad=True)]
    optimizer = optim.Adam([{"params": params[:2]}, {"params": params[2:], "lr": 0.5}])
    params[0].grad, params[2].grad = tn.ones(2), tn.ones(())
    optimizer.step()
    saved = optimizer.state_dict()
    assert [group["params"] for group in saved["param_groups"]] == [[0, 1], [2]]
    assert saved["param_groups"][1]["lr"] == 0.5
    assert saved["param_groups"][0]["betas"] == (0.9, 0.999)
    assert sorted(saved["state"]) == [0, 2]  # the parameter without a gradient has no state
    assert set(saved["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert saved["state"][0]["step"] == 1 and isinstance(saved["state"][0]["step"], int)
    assert isinstance(saved["state"][2]["exp_avg"], np.ndarray)
    assert saved["state"][2]["exp_avg"].shape == ()


def test_loading_puts_state_in_each_parameters_dtype():
    w64 = tn.tensor([1.0, 2.0], dtype=tn.float64, requires_grad=True)
    optimizer = optim.Adam([w64])
    w64.grad = tn.tensor([0.5, 0.5], dtype=tn.float64)
    optimizer.step()
    w32 = tn.tensor([1.0, 2.0], requires_grad=True)
    resumed = optim.Adam([w32])
    resumed.load_state_dict(optimizer.state_dict())
    assert resumed.state[w32]["exp_avg"].dtype == np.float32
    assert resumed.state[w32]["step"] == 1


@pytest.mark.parametrize("change, message", [
    (lambda saved: saved["param_groups"].append(dict(saved["param_groups"][0], params=[])),
     "2 parameter groups but the optimizer has 1"),
    (lambda saved: saved["param_groups"][0]["params"].append(2),
     "group 0 has 3 parameters in the state dict but 2"),
    (lambda saved: saved["state"][0].update(exp_avg=np.zeros(7)),
     r"'exp_avg' of parameter 0 has shape \(7,\) but the parameter has shape \(2,\)"),
    (lambda saved: saved["state"].update({5: {"step": 1}}),
     "state for parameter 5, which no parameter group lists"),
], ids=["groups", "parameters", "shape", "unknown-index"])
def test_load_state_dict_rejects_a_mismatch_and_changes_nothing(change, message):
    params = [tn.ones(2, requires_grad=True), tn.ones(3, requires_grad=True)]
    optimizer = optim.Adam(params, lr=0.1)
    for param in params:
        param.grad = tn.ones(param.shape)
    optimizer.step()
    saved = optimizer.state_dict()
    saved["param_groups"][0]["lr"] = 0.5
    change(saved)
    with pytest.raises(ValueError, match=message):
        optimizer.load_state_dict(saved)
    assert optimizer.param_groups[0]["lr"] == 0.1
    assert optimizer.state[params[0]]["step"] == 1


# ----------------------------------------------------------------------------- dtypes and devices
@pytest.mark.parametrize("name, options", GRID)
def test_float32_parameters_and_state_stay_float32(name, options, device):
    # NumPy float64 hyperparameters would promote float32 arithmetic if used as they are.
    options = {key: (np.float64(value) if type(value) is float else value)
               for key, value in options.items()}
    rng = np.random.default_rng(2)
    params = [tn.tensor(start, dtype=tn.float32, device=device, requires_grad=True)
              for start in random_starts(rng)]
    optimizer = make_optimizer(optim, name, params, options)
    for step_gradients in gradient_sequence(rng, 3):
        apply_gradients(optimizer, params, step_gradients)
    for param in params:
        assert param.dtype == np.float32
        for key, value in optimizer.state[param].items():
            if key != "step":
                assert value.dtype == np.float32, key
                assert type(value) is type(param.data), key  # on the parameter's device


def test_float32_update_matches_float64_to_float32_precision():
    rng = np.random.default_rng(3)
    starts, gradients = random_starts(rng), gradient_sequence(rng, 10)
    results = {}
    for dtype in (tn.float32, tn.float64):
        params = [tn.tensor(start, dtype=dtype, requires_grad=True) for start in starts]
        optimizer = make_optimizer(optim, "Adam", params, {"lr": 0.01, "amsgrad": True})
        for step_gradients in gradients:
            apply_gradients(optimizer, params, step_gradients)
        results[dtype] = [param.data for param in params]
    for low, high in zip(results[tn.float32], results[tn.float64]):
        np.testing.assert_allclose(low, high, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- groups and steps
def test_param_groups_use_their_own_learning_rates():
    fast, slow = tn.ones(3, requires_grad=True), tn.ones(3, requires_grad=True)
    optimizer = optim.SGD([{"params": [fast], "lr": 0.1}, {"params": [slow]}], lr=0.01,
                          momentum=0.9)
    for _ in range(3):
        fast.grad, slow.grad = tn.ones(3), tn.ones(3)
        optimizer.step()
    fast_moved, slow_moved = 1 - fast.data, 1 - slow.data
    assert np.all(slow_moved > 0)
    np.testing.assert_allclose(fast_moved, 10 * slow_moved, rtol=1e-5)


def test_add_param_group_takes_defaults_and_new_hyperparameters():
    first, second = tn.ones(2, requires_grad=True), tn.ones(2, requires_grad=True)
    optimizer = optim.Adam([first], lr=0.1)
    optimizer.add_param_group({"params": second, "betas": (0.5, 0.5)})
    assert optimizer.param_groups[1]["lr"] == 0.1
    assert optimizer.param_groups[1]["params"] == [second]
    first.grad, second.grad = tn.ones(2), tn.ones(2)
    optimizer.step()
    # First Adam step: the move is lr whatever the betas (up to eps).
    np.testing.assert_allclose(first.data, second.data, rtol=1e-6)
    assert optimizer.state[second]["exp_avg"][0] == pytest.approx(0.5)


def test_step_skips_parameters_without_gradients():
    used, unused = tn.ones(2, requires_grad=True), tn.ones(2, requires_grad=True)
    optimizer = optim.Adam([used, unused], lr=0.1, weight_decay=0.1)
    used.grad = tn.ones(2)
    optimizer.step()
    assert unused.tolist() == [1.0, 1.0] and not optimizer.state.get(unused)
    assert used.tolist()[0] < 1.0


def test_step_runs_the_closure_with_grad_enabled_and_returns_its_loss():
    w = tn.tensor([2.0], requires_grad=True)
    optimizer = optim.SGD([w], lr=0.25)

    def closure():
        optimizer.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss

    with tn.no_grad():
        loss = optimizer.step(closure)
    assert loss.item() == 4.0
    assert w.item() == 1.0  # 2 - 0.25 * 4


def test_zero_grad_sets_none_or_zeros():
    w = tn.ones(2, requires_grad=True)
    optimizer = optim.SGD([w])
    (w * 3).sum().backward()
    optimizer.zero_grad(set_to_none=False)
    assert w.grad.tolist() == [0.0, 0.0]
    optimizer.zero_grad()
    assert w.grad is None


def test_a_step_makes_a_pending_backward_through_the_parameter_raise():
    w = tn.tensor([1.0, 2.0], requires_grad=True)
    optimizer = optim.SGD([w], lr=0.1)
    loss = (w * w).sum()  # saves w for its gradient
    w.grad = tn.ones(2)
    optimizer.step()
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()


def test_hyperparameters_changed_after_construction_are_checked_and_kept_float32_safe():
    w = tn.ones(2, requires_grad=True)
    optimizer = optim.Adam([w])
    w.grad = tn.ones(2)
    optimizer.param_groups[0]["lr"] = np.float64(0.5)
    optimizer.step()
    assert type(optimizer.param_groups[0]["lr"]) is float
    assert type(optimizer.state[w]["exp_avg"]) is np.ndarray and w.dtype == np.float32
    optimizer.param_groups[0]["lr"] = -0.5
    with pytest.raises(ValueError, match=r"Adam: invalid lr -0\.5"):
        optimizer.step()


def test_repr_lists_each_group():
    optimizer = optim.SGD([tn.ones(1, requires_grad=True)], lr=0.1)
    assert "Parameter Group 0" in repr(optimizer) and "    lr: 0.1" in repr(optimizer)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("make, message", [
    (lambda p: optim.SGD(p, lr=-0.1), r"SGD: invalid lr -0\.1"),
    (lambda p: optim.SGD(p, lr=math.nan), "SGD: invalid lr nan"),
    (lambda p: optim.SGD(p, lr="0.1"), "SGD: invalid lr '0.1'"),
    (lambda p: optim.SGD(p, momentum=-0.5), r"SGD: invalid momentum -0\.5"),
    (lambda p: optim.SGD(p, weight_decay=-1.0), r"SGD: invalid weight_decay -1\.0"),
    (lambda p: optim.SGD(p, nesterov=True), "SGD: Nesterov momentum requires a momentum > 0"),
    (lambda p: optim.SGD(p, momentum=0.9, dampening=0.1, nesterov=True), "zero dampening"),
    (lambda p: optim.Adam(p, betas=(1.0, 0.999)), r"Adam: invalid betas\[0\] 1\.0"),
    (lambda p: optim.Adam(p, betas=(0.9, -0.1)), r"Adam: invalid betas\[1\] -0\.1"),
    (lambda p: optim.Adam(p, betas=0.9), "Adam: betas must be a pair"),
    (lambda p: optim.Adam(p, eps=-1e-8), "Adam: invalid eps -1e-08"),
    (lambda p: optim.AdamW(p, weight_decay=-0.01), r"AdamW: invalid weight_decay -0\.01"),
    (lambda p: optim.RMSprop(p, alpha=-0.9), r"RMSprop: invalid alpha -0\.9"),
    (lambda p: optim.RMSprop(p, momentum=-0.9), r"RMSprop: invalid momentum -0\.9"),
    (lambda p: optim.Adagrad(p, lr_decay=-0.1), r"Adagrad: invalid lr_decay -0\.1"),
    (lambda p: optim.Adagrad(p, initial_accumulator_value=-1.0),
     r"Adagrad: invalid initial_accumulator_value -1\.0"),
    (lambda p: optim.SGD([{"params": p, "lr": -1.0}], lr=0.1), r"SGD: invalid lr -1\.0"),
])
def test_invalid_hyperparameters_raise_naming_the_optimizer_and_value(make, message):
    with pytest.raises(ValueError, match=message):
        make([tn.ones(2, requires_grad=True)])


def test_invalid_parameters_raise():
    w, v = tn.ones(2, requires_grad=True), tn.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="same tensor twice"):
        optim.SGD([w, w])
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [w]}, {"params": [v, w]}])
    optimizer = optim.SGD([w])
    with pytest.raises(ValueError, match="more than one parameter group"):
        optimizer.add_param_group({"params": [w]})
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])
    with pytest.raises(TypeError, match="single Tensor"):
        optim.Adam(w)
    with pytest.raises(TypeError, match="ordered collection"):
        optim.Adam({w})
    with pytest.raises(TypeError, match="can only optimize Tensors, got ndarray"):
        optim.Adam([np.ones(2)])
    with pytest.raises(ValueError, match="non-leaf"):
        optim.Adam([w * 2])


def test_a_gradient_that_does_not_fit_its_parameter_raises():
    w = tn.ones(2, requires_grad=True)
    optimizer = optim.SGD([w], lr=0.1)
    w.grad = tn.ones(1)  # would broadcast silently
    with pytest.raises(RuntimeError, match=r"SGD.step: a parameter of shape \(2,\)"):
        optimizer.step()
    w.grad = tn.ones(2, dtype=tn.float64)
    with pytest.raises(RuntimeError, match="dtype float64"):
        optimizer.step()
    assert w.tolist() == [1.0, 1.0]
