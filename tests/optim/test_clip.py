"""Gradient clipping: norms, in-place scaling, value clamping, and PyTorch parity.

Tests that take the ``torch`` fixture compare with ``torch.nn.utils`` and are skipped when PyTorch
is not installed; every other test needs only tinynlm.
"""

import math

import numpy as np
import pytest

import tinynlm as tn
from tinynlm.optim import clip_grad_norm_, clip_grad_value_

SHAPES = [(3, 4), (5,), ()]


def params_with_gradients(gradients, dtype=tn.float64, device="cpu"):
    params = [tn.zeros(np.shape(grad), dtype=dtype, device=device, requires_grad=True)
              for grad in gradients]
    for param, grad in zip(params, gradients):
        param.grad = tn.tensor(grad, dtype=dtype, device=device)
    return params


def random_gradients(seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return [scale * rng.normal(size=shape) for shape in SHAPES]


def test_clips_to_max_norm_and_returns_the_norm_before(device):
    params = params_with_gradients([[3.0, 4.0], [12.0]], device=device)
    total = clip_grad_norm_(params, max_norm=2.0)
    assert total.shape == () and total.device == device and not total.requires_grad
    assert total.item() == pytest.approx(13.0, rel=1e-15)
    scale = 2.0 / (13.0 + 1e-6)
    np.testing.assert_allclose(params[0].grad.tolist(), [3.0 * scale, 4.0 * scale], rtol=1e-15)
    np.testing.assert_allclose(params[1].grad.tolist(), [12.0 * scale], rtol=1e-15)
    assert clip_grad_norm_(params, max_norm=2.0).item() == pytest.approx(2.0, rel=1e-6)


def test_gradients_within_the_limit_are_unchanged():
    gradients = random_gradients(0)
    params = params_with_gradients(gradients)
    total = clip_grad_norm_(params, max_norm=100.0)
    expected = math.sqrt(sum(float(np.sum(grad ** 2)) for grad in gradients))
    assert total.item() == pytest.approx(expected, rel=1e-12)
    for param, grad in zip(params, gradients):
        np.testing.assert_array_equal(param.grad.data, grad)


def test_infinity_norm_is_the_largest_absolute_value():
    params = params_with_gradients([[1.0, -7.0], [3.0]])
    total = clip_grad_norm_(params, max_norm=1.0, norm_type=math.inf)
    assert total.item() == 7.0
    np.testing.assert_allclose(params[0].grad.tolist(), [1 / (7 + 1e-6), -7 / (7 + 1e-6)])


def test_p_norm():
    params = params_with_gradients([[1.0, -2.0], [2.0]])
    total = clip_grad_norm_(params, max_norm=10.0, norm_type=3)
    assert total.item() == pytest.approx(17.0 ** (1 / 3), rel=1e-12)


def test_float32_gradients_stay_float32():
    params = params_with_gradients(random_gradients(1, scale=10.0), dtype=tn.float32)
    total = clip_grad_norm_(params, max_norm=1.0)
    assert total.dtype == np.float32
    assert all(param.grad.dtype == np.float32 for param in params)
    norm_after = math.sqrt(sum(float(np.sum(param.grad.data.astype(np.float64) ** 2))
                               for param in params))
    assert norm_after == pytest.approx(1.0, rel=1e-5)


def test_parameters_without_gradients_are_skipped_and_a_single_tensor_is_accepted():
    with_grad = params_with_gradients([[6.0, 8.0]])[0]
    without_grad = tn.zeros(2, requires_grad=True)
    assert clip_grad_norm_([with_grad, without_grad], max_norm=5.0).item() == 10.0
    assert without_grad.grad is None
    assert clip_grad_norm_(with_grad, max_norm=100.0).item() == pytest.approx(5.0, rel=1e-6)
    assert clip_grad_norm_([without_grad], max_norm=1.0).item() == 0.0


def test_non_finite_norms():
    params = params_with_gradients([[1.0, math.nan]])
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_(params, max_norm=1.0, error_if_nonfinite=True)
    assert params[0].grad.tolist()[0] == 1.0  # nothing was scaled
    assert math.isnan(clip_grad_norm_(params, max_norm=1.0).item())
    with pytest.raises(ValueError, match="norm_type must be a positive p"):
        clip_grad_norm_(params, max_norm=1.0, norm_type=0)


def test_clip_grad_value_clamps_in_place():
    params = params_with_gradients([[-3.0, 0.25, 2.0], [0.5]], dtype=tn.float32)
    gradient_array = params[0].grad.data
    assert clip_grad_value_(params, clip_value=1.0) is None
    assert params[0].grad.tolist() == [-1.0, 0.25, 1.0] and params[1].grad.tolist() == [0.5]
    assert params[0].grad.data is gradient_array and gradient_array.dtype == np.float32


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.5, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_grad_norm_matches_torch(torch, norm_type, max_norm):
    gradients = random_gradients(2, scale=3.0)
    params = params_with_gradients(gradients)
    theirs = [torch.zeros(np.shape(grad), dtype=torch.float64, requires_grad=True)
              for grad in gradients]
    for param, grad in zip(theirs, gradients):
        param.grad = torch.tensor(grad)
    their_total = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    our_total = clip_grad_norm_(params, max_norm, norm_type)
    assert our_total.item() == pytest.approx(their_total.item(), rel=1e-12)
    for ours, their in zip(params, theirs):
        np.testing.assert_allclose(ours.grad.data, their.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_clip_grad_norm_matches_torch_in_float32(torch):
    gradients = random_gradients(3, scale=3.0)
    params = params_with_gradients(gradients, dtype=tn.float32)
    theirs = [torch.zeros(np.shape(grad), requires_grad=True) for grad in gradients]
    for param, grad in zip(theirs, gradients):
        param.grad = torch.tensor(grad, dtype=torch.float32)
    their_total = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    our_total = clip_grad_norm_(params, 1.0)
    assert our_total.item() == pytest.approx(their_total.item(), rel=1e-6)
    for ours, their in zip(params, theirs):
        np.testing.assert_allclose(ours.grad.data, their.grad.numpy(), rtol=1e-6, atol=1e-7)


def test_clip_grad_value_matches_torch(torch):
    gradients = random_gradients(4, scale=2.0)
    params = params_with_gradients(gradients)
    theirs = [torch.zeros(np.shape(grad), dtype=torch.float64, requires_grad=True)
              for grad in gradients]
    for param, grad in zip(theirs, gradients):
        param.grad = torch.tensor(grad)
    torch.nn.utils.clip_grad_value_(theirs, 0.7)
    clip_grad_value_(params, 0.7)
    for ours, their in zip(params, theirs):
        np.testing.assert_array_equal(ours.grad.data, their.grad.numpy())
