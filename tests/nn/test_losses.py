"""Losses: gradients, stability at huge logits, reductions and errors."""

import numpy as np
import pytest

import tinynlm as tn
from tinynlm import nn
from tinynlm.nn import functional as F


PROBABILITIES = tn.tensor(np.random.default_rng(0).dirichlet(np.ones(4), size=3))  # (3, 4)


def _logits(*shape):
    return tn.randn(*shape, dtype=tn.float64, requires_grad=True)


@pytest.mark.parametrize("loss", [
    lambda x: F.cross_entropy(x, tn.tensor([0, 2, 1])),
    lambda x: F.cross_entropy(x, tn.tensor([0, 2, -100]), reduction="sum"),
    lambda x: F.cross_entropy(x, tn.tensor([0, 2, 1]), label_smoothing=0.2),
    lambda x: F.cross_entropy(x, tn.tensor([0, 2, 1]), reduction="none",
                              weight=tn.tensor([1.0, 2.0, 0.5, 1.5], dtype=tn.float64)),
    lambda x: F.cross_entropy(x, tn.tensor([0, 3, 1]), ignore_index=3, label_smoothing=0.1,
                              weight=tn.tensor([1.0, 2.0, 0.5, 1.5], dtype=tn.float64)),
    lambda x: F.cross_entropy(x, PROBABILITIES, label_smoothing=0.1),
    lambda x: F.nll_loss(x.log_softmax(1), tn.tensor([1, 1, 3])),
    lambda x: F.mse_loss(x, tn.ones(3, 4, dtype=tn.float64)),
    lambda x: F.l1_loss(x, tn.full((3, 4), 3.0, dtype=tn.float64), reduction="sum"),
    lambda x: F.binary_cross_entropy_with_logits(x, PROBABILITIES,
                                                 pos_weight=tn.full((4,), 2.0, dtype=tn.float64)),
])
def test_losses_gradcheck(loss):
    assert tn.gradcheck(loss, (_logits(3, 4),))


def test_cross_entropy_over_extra_dims_gradcheck():
    target = tn.tensor([[0, 1, 2], [2, 2, -100]])
    assert tn.gradcheck(lambda x: F.cross_entropy(x, target, label_smoothing=0.1),
                        (_logits(2, 3, 3),))
    assert F.cross_entropy(_logits(2, 3, 3), target, reduction="none").shape == (2, 3)


def test_unbatched_cross_entropy():
    logits = tn.tensor([1.0, 2.0, 3.0])
    expected = -np.log(np.exp(2.0) / np.exp([1.0, 2.0, 3.0]).sum())
    assert abs(F.cross_entropy(logits, tn.tensor(1)).item() - expected) < 1e-6


@pytest.mark.parametrize("magnitude", [1e4, -1e4])
def test_losses_stay_finite_for_huge_logits(magnitude):
    logits = (tn.randn(4, 5) * magnitude).requires_grad_()
    losses = [F.cross_entropy(logits, tn.tensor([0, 1, 2, 3]), label_smoothing=0.1),
              F.binary_cross_entropy_with_logits(logits, tn.rand(4, 5))]
    for loss in losses:
        loss.backward()
        assert np.isfinite(loss.item())
        assert np.isfinite(logits.grad.numpy()).all()


def test_cross_entropy_errors():
    logits = tn.zeros(3, 4)
    with pytest.raises(IndexError, match="target 4 is out of range for 4 classes"):
        F.cross_entropy(logits, tn.tensor([0, 4, 1]))
    with pytest.raises(ValueError, match=r"needs a target of shape \(3,\), got \(2,\)"):
        F.cross_entropy(logits, tn.tensor([0, 1]))
    with pytest.raises(TypeError, match="expected a floating point tensor"):
        F.cross_entropy(tn.zeros(3, 4, dtype=tn.int64), tn.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\)"):
        F.cross_entropy(logits, tn.tensor([0, 1, 2]), weight=tn.ones(3))
    with pytest.raises(ValueError, match="reduction must be"):
        F.cross_entropy(logits, tn.tensor([0, 1, 2]), reduction="avg")
    with pytest.raises(ValueError, match="probability targets must have the input's shape"):
        F.cross_entropy(logits, tn.zeros(3, 3))


def test_loss_modules_match_the_functions():
    logits, target = tn.randn(5, 3), tn.tensor([0, 1, 2, 1, 0])
    module = nn.CrossEntropyLoss(label_smoothing=0.1, ignore_index=2)
    assert module(logits, target).item() == F.cross_entropy(
        logits, target, ignore_index=2, label_smoothing=0.1).item()
    assert nn.MSELoss()(logits, logits * 0).item() == pytest.approx(float((logits ** 2).mean()))
    assert nn.NLLLoss(reduction="sum")(logits.log_softmax(1), target).item() == pytest.approx(
        F.cross_entropy(logits, target, reduction="sum").item(), rel=1e-6)
