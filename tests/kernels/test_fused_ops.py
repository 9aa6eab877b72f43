"""Fused ops against their composed references, through the tensor API on every device.

Each test runs the same call with the fused kernels on and off (``tn.use_fused_kernels``) and
compares outputs and gradients: float64 to 1e-10, float32 to a few ulps of the values' scale.
Every kernel output is poisoned (allocated full of NaN) so an element a kernel forgets to write
fails. Gradchecks in float64 go through the fused path, and double backward (which falls back to
the composed reference) is checked with gradgradcheck.
"""

import importlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinynlm as tn
import tinynlm.nn.functional as F

TOLERANCE = {"float64": 1e-10, "float32": 2e-5}
KERNEL_MODULES = ["tinynlm.kernels.cpu_fused", "tinynlm.kernels.cpu_attention"]


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Every array a CPU kernel allocates starts as NaN."""
    for name in KERNEL_MODULES:
        module = importlib.import_module(name)
        monkeypatch.setattr(module, "_empty", lambda shape, dtype: np.full(shape, np.nan, dtype))


def run_both(function, arrays, dtype, device, constant=()):
    """``[(output, gradients, used_kernel)]`` of ``function(*inputs, *constant)`` with fused
    kernels on, then off; ``used_kernel`` tells whether the output came from a fused kernel.
    The backward is seeded with a fixed random gradient."""
    results = []
    for enabled in (True, False):
        with tn.use_fused_kernels(enabled):
            inputs = [tn.tensor(a, dtype=dtype, device=device, requires_grad=True) for a in arrays]
            output = function(*inputs, *constant)
            used_kernel = getattr(output.grad_fn, "kernels", None) is not None
            seed = np.random.default_rng(7).standard_normal(output.shape)
            output.backward(tn.tensor(seed, dtype=dtype, device=device))
            results.append((output.detach().numpy(), [x.grad.numpy() for x in inputs],
                            used_kernel))
    return results


def assert_paths_agree(results, dtype):
    (fused, fused_grads, _), (composed, composed_grads, _) = results
    tolerance = TOLERANCE[dtype]
    for got, want in [(fused, composed)] + list(zip(fused_grads, composed_grads)):
        assert got.dtype == want.dtype and got.shape == want.shape
        scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
        np.testing.assert_allclose(got, want, rtol=0, atol=tolerance * scale)


rows_and_columns = st.tuples(st.integers(1, 6), st.integers(1, 40))
dtypes = st.sampled_from(["float32", "float64"])


@given(shape=st.lists(st.integers(1, 7), min_size=1, max_size=3), dtype=dtypes,
       seed=st.integers(0, 2**16))
def test_gelu_fused_matches_composed(device, shape, dtype, seed):
    x = np.random.default_rng(seed).standard_normal(shape) * 3
    results = run_both(F.gelu, [x], dtype, device)
    assert results[0][2] and not results[1][2]
    assert_paths_agree(results, dtype)


@given(rows_columns=rows_and_columns, log=st.booleans(), dtype=dtypes, seed=st.integers(0, 2**16))
def test_softmax_fused_matches_composed(device, rows_columns, log, dtype, seed):
    x = np.random.default_rng(seed).standard_normal(rows_columns) * 4
    x[0, :] = -np.inf if rows_columns[1] > 3 else x[0, :]  # an all -inf row: softmax NaN, as torch
    function = F.log_softmax if log else F.softmax
    with np.errstate(invalid="ignore", divide="ignore"):
        results = run_both(lambda t: function(t, -1), [x], dtype, device)
    if rows_columns[1] > 3:  # NaN rows compare equal as NaN; the rest must match
        for output, grads, _ in results:
            assert np.isnan(output[0]).all() or (log and np.isinf(output[0]).all())
        results = [(out[1:], [g[1:] for g in grads], fn) for out, grads, fn in results]
    assert results[0][2] and not results[1][2]
    assert_paths_agree(results, dtype)


@given(rows_columns=rows_and_columns, affine=st.sampled_from(["none", "weight", "both"]),
       dtype=dtypes, seed=st.integers(0, 2**16))
def test_layer_norm_fused_matches_composed(device, rows_columns, affine, dtype, seed):
    rng = np.random.default_rng(seed)
    rows, columns = rows_columns
    arrays = [rng.standard_normal((2, rows, columns)) * 3 + 1]
    if affine != "none":
        arrays.append(rng.standard_normal(columns))
    if affine == "both":
        arrays.append(rng.standard_normal(columns))
    results = run_both(lambda x, *p: F.layer_norm(x, (columns,), *p), arrays, dtype, device)
    assert results[0][2] and not results[1][2]
    assert_paths_agree(results, dtype)


def test_layer_norm_over_several_trailing_dims(device):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((3, 4, 5)), rng.standard_normal((4, 5)), rng.standard_normal((4, 5))]
    results = run_both(lambda x, w, b: F.layer_norm(x, (4, 5), w, b), arrays, "float64", device)
    assert results[0][2] and not results[1][2]
    assert_paths_agree(results, "float64")


@given(rows_columns=rows_and_columns, smoothing=st.sampled_from([0.0, 0.1, 1.0]),
       ignore=st.booleans(), reduction=st.sampled_from(["none", "mean", "sum"]), dtype=dtypes,
       seed=st.integers(0, 2**16))
def test_cross_entropy_fused_matches_composed(device, rows_columns, smoothing, ignore, reduction,
                                              dtype, seed):
    rng = np.random.default_rng(seed)
    rows, classes = rows_columns
    logits = rng.standard_normal((rows, classes)) * 5
    target = rng.integers(0, classes, rows)
    if ignore:
        target[0] = -100
    target = tn.tensor(target, device=device)
    results = run_both(lambda x: F.cross_entropy(x, target, reduction=reduction,
                                                 label_smoothing=smoothing), [logits], dtype,
                       device)
    if reduction == "none":
        assert results[0][2] and not results[1][2]
    assert_paths_agree(results, dtype)


def test_cross_entropy_fused_checks_targets():
    with pytest.raises(IndexError, match="cross_entropy: target 3 is out of range for 3"):
        F.cross_entropy(tn.zeros(2, 3), tn.tensor([0, 3]))


@pytest.mark.parametrize("case", ["gelu", "layer_norm", "cross_entropy", "softmax"])
def test_gradcheck_and_double_backward_through_fused_ops(case):
    rng = np.random.default_rng(3)
    x = tn.tensor(rng.standard_normal((3, 5)), requires_grad=True)
    weight = tn.tensor(rng.standard_normal(5), requires_grad=True)
    target = tn.tensor([1, 4, -100])
    function = {
        "gelu": lambda x, w: F.gelu(x * w),
        "layer_norm": lambda x, w: F.layer_norm(x, (5,), w, w * 0.5),
        "cross_entropy": lambda x, w: F.cross_entropy(x * w, target, label_smoothing=0.2),
        "softmax": lambda x, w: F.log_softmax(x * w, -1),
    }[case]
    assert tn.gradcheck(function, (x, weight))
    assert tn.gradgradcheck(function, (x, weight))


attention_cases = st.fixed_dictionaries({
    "batch": st.sampled_from([(), (2,), (2, 3)]),
    "length": st.integers(1, 9),
    "source_length": st.integers(1, 9),
    "features": st.integers(1, 6),
    "value_features": st.integers(1, 5),
    "mask": st.sampled_from(["none", "causal", "bool", "key_padding", "float"]),
})


@given(case=attention_cases, dtype=dtypes, seed=st.integers(0, 2**16))
def test_attention_fused_matches_composed(device, case, dtype, seed):
    rng = np.random.default_rng(seed)
    batch, length, source = case["batch"], case["length"], case["source_length"]
    arrays = [rng.standard_normal(batch + (length, case["features"])),
              rng.standard_normal(batch + (source, case["features"])),
              rng.standard_normal(batch + (source, case["value_features"]))]
    mask, causal = None, case["mask"] == "causal"
    if case["mask"] == "bool":  # some rows fully masked: zeros, as composed
        mask = tn.tensor(rng.random(batch + (length, source)) < 0.6, device=device)
    elif case["mask"] == "key_padding":
        mask = tn.tensor(rng.random(batch[:1] + (1,) * (len(batch) > 1) + (1, source)) < 0.7,
                         device=device)
    elif case["mask"] == "float":
        mask = tn.tensor(np.where(rng.random((length, source)) < 0.3, -np.inf,
                                  rng.standard_normal((length, source))), dtype=dtype,
                         device=device)
    results = run_both(lambda q, k, v: F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=causal, scale=0.7), arrays, dtype, device)
    assert results[0][2] and not results[1][2]
    assert_paths_agree(results, dtype)
    assert all(np.isfinite(g).all() for g in results[0][1])


def test_attention_gradcheck_and_double_backward_through_fused_kernel():
    rng = np.random.default_rng(5)
    q, k, v = (tn.tensor(rng.standard_normal((2, 3, 4)), requires_grad=True) for _ in range(3))
    keep = tn.tensor([[True, True, False], [False, False, False], [True, False, True]])

    def attention(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep)

    assert tn.gradcheck(attention, (q, k, v))
    assert tn.gradgradcheck(attention, (q, k, v))
    assert tn.gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                        (q, k, v))


def test_attention_falls_back_to_composed_for_dropout_and_mask_gradients():
    q = tn.randn(1, 2, 3, 4, requires_grad=True)
    out = F.scaled_dot_product_attention(q, q, q, dropout_p=0.5)
    assert getattr(out.grad_fn, "kernels", None) is None
    bias = tn.zeros(3, 3, requires_grad=True)
    out = F.scaled_dot_product_attention(q, q, q, attn_mask=bias)
    out.sum().backward()
    assert bias.grad is not None and bias.grad.shape == (3, 3)


def test_transformer_layer_uses_fused_attention_and_matches_composed():
    layer = tn.nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0,
                                          batch_first=True, dtype=tn.float64)
    x = np.random.default_rng(1).standard_normal((2, 5, 8))
    causal = tn.nn.Transformer.generate_square_subsequent_mask(5, dtype=tn.float64)
    outputs = []
    for enabled in (True, False):
        with tn.use_fused_kernels(enabled):
            layer.zero_grad()
            out = layer(tn.tensor(x), src_mask=causal, is_causal=True)
            out.sum().backward()
            outputs.append((out.detach().numpy(), [p.grad.numpy() for p in layer.parameters()]))
    np.testing.assert_allclose(outputs[0][0], outputs[1][0], atol=1e-10)
    for got, want in zip(outputs[0][1], outputs[1][1]):
        np.testing.assert_allclose(got, want, atol=1e-10)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_row_kernels_shared_among_threads(monkeypatch, dtype):
    """GELU, layer norm, softmax and cross-entropy calls cut into many blocks taken by three
    threads agree with the composed ops."""
    from tinynlm.kernels import cpu_fused, cpu_parallel

    monkeypatch.setattr(cpu_fused, "ELEMENTS_PER_BLOCK", 7)
    for module in (cpu_fused, cpu_parallel):
        monkeypatch.setattr(module, "cpu_cores", lambda: 3)
    assert cpu_fused._blocks(97 * 24, 97) == 12
    rng = np.random.default_rng(11)
    x, weight, bias = rng.standard_normal((97, 24)), rng.standard_normal(24), rng.standard_normal(24)
    assert_paths_agree(run_both(F.gelu, [x], dtype, "cpu"), dtype)
    assert_paths_agree(run_both(lambda x, w, b: F.layer_norm(x, (24,), w, b), [x, weight, bias],
                                dtype, "cpu"), dtype)
    for log in (False, True):
        softmax = F.log_softmax if log else F.softmax
        assert_paths_agree(run_both(lambda x: softmax(x, -1), [x], dtype, "cpu"), dtype)
    target = tn.tensor(rng.integers(0, 24, 97))
    assert_paths_agree(run_both(lambda x: F.cross_entropy(x, target, label_smoothing=0.1), [x],
                                dtype, "cpu"), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gelu_and_layer_norm_blocks_longer_than_a_tile(monkeypatch, dtype):
    """Blocks that span several of the GELU backward's tiles (from offsets that are not tile
    multiples), and layer-norm blocks of more rows than one flush of the dweight/dbias sums."""
    from tinynlm.kernels import cpu_fused, cpu_parallel

    elements = 3 * cpu_fused.GELU_TILE + 1001
    monkeypatch.setattr(cpu_fused, "ELEMENTS_PER_BLOCK", elements // 3)
    for module in (cpu_fused, cpu_parallel):
        monkeypatch.setattr(module, "cpu_cores", lambda: 2)
    assert cpu_fused._blocks(elements) == 3
    rng = np.random.default_rng(12)
    assert_paths_agree(run_both(F.gelu, [rng.standard_normal(elements) * 3], dtype, "cpu"), dtype)
    rows = 5 * cpu_fused.ROWS_PER_FLUSH + 7
    x, weight, bias = rng.standard_normal((rows, 24)), rng.standard_normal(24), rng.standard_normal(24)
    monkeypatch.setattr(cpu_fused, "ELEMENTS_PER_BLOCK", x.size)  # one block of all the rows
    assert_paths_agree(run_both(lambda x, w, b: F.layer_norm(x, (24,), w, b), [x, weight, bias],
                                dtype, "cpu"), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("affine", ["none", "weight", "bias", "both"])
def test_layer_norm_kernel_takes_weight_and_bias_each_optional(dtype, affine):
    """The CPU kernel itself with each of weight and bias left out (``F.layer_norm`` sends a
    bias without a weight down the composed path, the kernel API still takes it)."""
    from tinynlm.kernels import cpu_fused

    rng = np.random.default_rng(3)
    x = (rng.standard_normal((5, 12)) * 3 + 1).astype(dtype)
    weight = rng.standard_normal(12).astype(dtype) if affine in ("weight", "both") else None
    bias = rng.standard_normal(12).astype(dtype) if affine in ("bias", "both") else None
    y, mean, rstd = cpu_fused.layer_norm_forward(x, weight, bias, 1e-5)
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-5)
    want = want * (1 if weight is None else weight) + (0 if bias is None else bias)
    np.testing.assert_allclose(y, want, rtol=0, atol=TOLERANCE[dtype] * np.abs(want).max())
    np.testing.assert_allclose(mean, x64.mean(1), rtol=TOLERANCE[dtype])
