"""Checks every registered op gets: forward against NumPy in float64, gradcheck, gradgradcheck,
float32 against the float64 reference (dtype and shape of outputs and gradients kept), and the
GPU against the CPU."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinynlm as tn
from tests.conftest import GPU_REASON
from tests.ops.cases import CASES

NAMES = sorted(CASES)
# Second derivatives cost a backward per finite-difference step: fewer examples.
FEWER = settings(max_examples=max(5, settings.default.max_examples // 3))


def _outputs(result):
    return result if isinstance(result, tuple) else (result,)


def _inputs(example, dtype, device="cpu"):
    return [tn.tensor(a, dtype=dtype, device=device, requires_grad=True) for a in example.arrays]


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_forward_matches_numpy_float64(name, data, device):
    example = data.draw(CASES[name])
    results = _outputs(example.fn(*_inputs(example, tn.float64, device)))
    expected = _outputs(example.reference(*example.arrays))
    assert len(results) == len(expected)
    for result, reference in zip(results, expected):
        assert result.shape == np.shape(reference)
        assert result.dtype == tn.float64
        np.testing.assert_allclose(result.detach().numpy(), reference, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_gradcheck(name, data, device):
    example = data.draw(CASES[name])
    assert tn.gradcheck(example.fn, _inputs(example, tn.float64, device))


@pytest.mark.parametrize("name", NAMES)
@FEWER
@given(data=st.data())
def test_gradgradcheck(name, data):
    example = data.draw(CASES[name])
    assert tn.gradgradcheck(example.fn, _inputs(example, tn.float64))


def _forward_and_grads(example, dtype, device="cpu"):
    """Outputs and input gradients of a fixed random weighting of the outputs."""
    inputs = _inputs(example, dtype, device)
    outputs = _outputs(example.fn(*inputs))
    rng = np.random.default_rng(0)
    loss = sum((out * tn.tensor(rng.standard_normal(out.shape), dtype=dtype, device=device)).sum()
               for out in outputs)
    loss.backward()
    grads = [x.grad for x in inputs]
    return outputs, grads, inputs


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_float32_matches_float64(name, data, device):
    example = data.draw(CASES[name])
    outputs32, grads32, inputs32 = _forward_and_grads(example, tn.float32, device)
    outputs64, grads64, _ = _forward_and_grads(example, tn.float64)
    for out32, out64 in zip(outputs32, outputs64):
        assert out32.dtype == tn.float32, "float32 inputs must give float32 outputs"
        np.testing.assert_allclose(out32.detach().numpy(), out64.detach().numpy(),
                                   rtol=2e-5, atol=2e-5)
    for x, grad32, grad64 in zip(inputs32, grads32, grads64):
        assert grad32 is not None and grad32.dtype == tn.float32 and grad32.shape == x.shape
        assert grad32.device == x.device
        np.testing.assert_allclose(grad32.numpy(), grad64.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
@pytest.mark.skipif(not tn.cuda.is_available(), reason=GPU_REASON)
def test_gpu_matches_cpu(name, data):
    example = data.draw(CASES[name])
    outputs_gpu, grads_gpu, _ = _forward_and_grads(example, tn.float64, "cuda")
    outputs_cpu, grads_cpu, _ = _forward_and_grads(example, tn.float64, "cpu")
    for gpu, cpu in zip(list(outputs_gpu) + grads_gpu, list(outputs_cpu) + grads_cpu):
        assert gpu.device == "cuda:0"
        np.testing.assert_allclose(gpu.detach().cpu().numpy(), cpu.detach().numpy(),
                                   rtol=1e-10, atol=1e-12)


def _non_contiguous(array, dtype):
    """The same values as a non-contiguous view (every dim reversed in memory order)."""
    stored = array.transpose().copy().transpose()
    tensor = tn.from_numpy(stored.astype(np.dtype(dtype), copy=False))
    return tensor.requires_grad_()


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_non_contiguous_inputs_give_the_same_results(name, data):
    example = data.draw(CASES[name])
    contiguous = _inputs(example, tn.float64)
    strided = [_non_contiguous(a, "float64") for a in example.arrays]
    for result, expected in zip(_outputs(example.fn(*strided)), _outputs(example.fn(*contiguous))):
        # Reductions may sum in another order over strided memory: equal to rounding.
        np.testing.assert_allclose(result.detach().numpy(), expected.detach().numpy(),
                                   rtol=1e-12, atol=1e-12)
    sum(out.sum() for out in _outputs(example.fn(*strided))).backward()
    sum(out.sum() for out in _outputs(example.fn(*contiguous))).backward()
    for x, y in zip(strided, contiguous):
        np.testing.assert_allclose(x.grad.numpy(), y.grad.numpy(), rtol=1e-12, atol=1e-12)
