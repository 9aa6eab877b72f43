"""Basic layers and losses against PyTorch (an optional oracle): load PyTorch's weights, then
compare outputs and gradients w.r.t. inputs and every parameter."""

import numpy as np
import pytest

import tinynlm as tn
from tinynlm import nn

torch = pytest.importorskip("torch", reason="PyTorch is an optional oracle for parity tests")

TOLERANCE = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-6)}


def _compare(ours, theirs, dtype):
    np.testing.assert_allclose(ours, theirs, **TOLERANCE[dtype])


def _check_module(ours, theirs, inputs, dtype, integer_inputs=()):
    """Same weights, same inputs: same outputs and same gradients."""
    theirs = theirs.to(torch.float64 if dtype == np.float64 else torch.float32)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    ours.to(tn.float64 if dtype == np.float64 else tn.float32)
    our_inputs, their_inputs = [], []
    for position, array in enumerate(inputs):
        if position in integer_inputs:
            our_inputs.append(tn.tensor(array))
            their_inputs.append(torch.tensor(array))
        else:
            our_inputs.append(tn.tensor(array.astype(dtype), requires_grad=True))
            their_inputs.append(torch.tensor(array.astype(dtype), requires_grad=True))
    our_out, their_out = ours(*our_inputs), theirs(*their_inputs)
    _compare(our_out.detach().numpy(), their_out.detach().numpy(), dtype)
    weight = np.random.default_rng(1).standard_normal(their_out.shape).astype(dtype)
    (our_out * tn.tensor(weight)).sum().backward()
    (their_out * torch.tensor(weight)).sum().backward()
    for our_input, their_input in zip(our_inputs, their_inputs):
        if their_input.requires_grad:
            _compare(our_input.grad.numpy(), their_input.grad.numpy(), dtype)
    their_params = dict(theirs.named_parameters())
    for name, param in ours.named_parameters():
        _compare(param.grad.numpy(), their_params[name].grad.numpy(), dtype)


RNG = np.random.default_rng(0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, make_ours, make_theirs, inputs, integer_inputs", [
    ("linear", lambda: nn.Linear(4, 3), lambda: torch.nn.Linear(4, 3),
     [RNG.standard_normal((2, 5, 4))], ()),
    ("linear_no_bias", lambda: nn.Linear(4, 3, bias=False),
     lambda: torch.nn.Linear(4, 3, bias=False), [RNG.standard_normal((5, 4))], ()),
    ("bilinear", lambda: nn.Bilinear(3, 2, 4), lambda: torch.nn.Bilinear(3, 2, 4),
     [RNG.standard_normal((5, 3)), RNG.standard_normal((5, 2))], ()),
    ("embedding_padding", lambda: nn.Embedding(6, 3, padding_idx=2),
     lambda: torch.nn.Embedding(6, 3, padding_idx=2), [np.array([[0, 2, 5], [5, 5, 1]])], (0,)),
    ("layer_norm", lambda: nn.LayerNorm(4), lambda: torch.nn.LayerNorm(4),
     [RNG.standard_normal((3, 4)) * 3 + 1], ()),
    ("layer_norm_2d_no_bias", lambda: nn.LayerNorm((2, 4), bias=False),
     lambda: torch.nn.LayerNorm((2, 4), bias=False), [RNG.standard_normal((3, 2, 4))], ()),
    ("rms_norm", lambda: nn.RMSNorm(4), lambda: torch.nn.RMSNorm(4),
     [RNG.standard_normal((3, 4))], ()),
    ("mlp", lambda: nn.Sequential(nn.Linear(4, 8), nn.GELU(approximate="tanh"), nn.Linear(8, 2)),
     lambda: torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(approximate="tanh"),
                                 torch.nn.Linear(8, 2)), [RNG.standard_normal((3, 4))], ()),
])
def test_layer_matches_pytorch(name, make_ours, make_theirs, inputs, integer_inputs, dtype):
    _check_module(make_ours(), make_theirs(), inputs, dtype, integer_inputs)


def test_default_initialisation_matches_pytorch_statistics():
    torch.manual_seed(0)
    ours, theirs = nn.Linear(256, 128), torch.nn.Linear(256, 128)
    our_weight, their_weight = ours.weight.detach().numpy(), theirs.weight.detach().numpy()
    assert abs(our_weight.std() - their_weight.std()) < 0.002
    assert abs(np.abs(our_weight).max() - np.abs(their_weight).max()) < 0.002
    assert ours.weight.shape == tuple(theirs.weight.shape)


LOGITS = RNG.standard_normal((4, 5)) * 3
TARGET = np.array([0, 3, 4, 1])
WEIGHT = np.array([1.0, 2.0, 0.5, 1.5, 1.0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, loss", [
    ("ce_mean", lambda x, F: F.cross_entropy(x, T(F, TARGET))),
    ("ce_ignore", lambda x, F: F.cross_entropy(x, T(F, np.array([0, -100, 4, 1])))),
    ("ce_custom_ignore_sum", lambda x, F: F.cross_entropy(x, T(F, TARGET), ignore_index=3,
                                                          reduction="sum")),
    ("ce_weight", lambda x, F: F.cross_entropy(x, T(F, TARGET), weight=W(F, x))),
    ("ce_smoothing", lambda x, F: F.cross_entropy(x, T(F, TARGET), label_smoothing=0.2)),
    ("ce_everything", lambda x, F: F.cross_entropy(x, T(F, TARGET), weight=W(F, x),
                                                   ignore_index=1, label_smoothing=0.15)),
    ("ce_none", lambda x, F: F.cross_entropy(x, T(F, TARGET), weight=W(F, x),
                                             label_smoothing=0.1, reduction="none")),
    ("ce_probabilities", lambda x, F: F.cross_entropy(x, P(F, x), weight=W(F, x),
                                                      label_smoothing=0.1)),
    ("ce_k_dims", lambda x, F: F.cross_entropy(x.reshape(2, 5, 2), T(F, np.array([[0, 4], [2, 2]])),
                                               label_smoothing=0.1)),
    ("nll", lambda x, F: F.nll_loss(F.log_softmax(x, 1), T(F, TARGET), weight=W(F, x))),
    ("mse", lambda x, F: F.mse_loss(x, P(F, x))),
    ("l1_sum", lambda x, F: F.l1_loss(x, P(F, x), reduction="sum")),
    ("bce", lambda x, F: F.binary_cross_entropy_with_logits(x, P(F, x), weight=W(F, x),
                                                            pos_weight=W(F, x) * 2)),
])
def test_loss_matches_pytorch(name, loss, dtype):
    """``loss(x, F)`` is written once and run with tinynlm's and PyTorch's functional modules."""
    our_x = tn.tensor(LOGITS.astype(dtype), requires_grad=True)
    their_x = torch.tensor(LOGITS.astype(dtype), requires_grad=True)
    our_loss = loss(our_x, nn.functional)
    their_loss = loss(their_x, torch.nn.functional)
    _compare(our_loss.detach().numpy(), their_loss.detach().numpy(), dtype)
    our_loss.sum().backward()
    their_loss.sum().backward()
    _compare(our_x.grad.numpy(), their_x.grad.numpy(), dtype)


def T(F, array):
    """Integer targets for either library."""
    return tn.tensor(array) if F is nn.functional else torch.tensor(array)


def W(F, like):
    """Class weights in the logits' dtype for either library."""
    if F is nn.functional:
        return tn.tensor(WEIGHT, dtype=like.dtype)
    return torch.tensor(WEIGHT, dtype=like.dtype)


def P(F, like):
    """Class probabilities shaped like the logits, in their dtype."""
    probabilities = np.random.default_rng(2).dirichlet(np.ones(5), size=4)
    if F is nn.functional:
        return tn.tensor(probabilities, dtype=like.dtype)
    return torch.tensor(probabilities, dtype=like.dtype)
