"""The flash-attention CPU kernels (``tinynlm.kernels.cpu_attention``) against plain NumPy.

The reference builds the whole (N, L, S) score matrix in float64. Property tests cover cross
attention (L != S), lengths that are and are not multiples of the tile sizes (the default tiles
and small ones patched in), head sizes 1..256, causality, random and key-padding masks (fully
masked rows included), biases with -inf, and both dtypes: float64 to 1e-10 and float32 to 1e-5
of the largest magnitude of the terms summed. Then a finite-difference check of the backward,
NaN-poisoned outputs, fully masked rows, and the memory bound (nothing of size L x S).
"""

import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinynlm  # noqa: F401  (maps the source kernels/ folder to tinynlm.kernels)
from tinynlm.kernels import cpu_attention, cpu_parallel

TOLERANCE = {np.float64: 1e-10, np.float32: 1e-5}


def reference_attention(q, k, v, dout, scale, causal, mask=None, bias=None):
    """``(result, magnitude)`` for out, lse, dq, dk and dv, in float64 from the full score matrix;
    a row that sees no key gets out 0, lse -inf and zero gradients. ``magnitude`` is the same sum
    over absolute values: rounding errors grow with it, not with the result (the gradients are
    differences, ``dS = P * (dout @ v.T - D)``, that can cancel to 0)."""
    q, k, v, dout = (np.asarray(a, np.float64) for a in (q, k, v, dout))
    scores = scale * q @ k.transpose(0, 2, 1)                                # (N, L, S)
    if bias is not None:
        scores = scores + bias
    visible = np.ones(scores.shape, bool)
    if causal:
        visible &= np.tril(np.ones(scores.shape[1:], bool))
    if mask is not None:
        visible &= mask
    scores = np.where(visible, scores, -np.inf)
    row_max = scores.max(-1, keepdims=True)                                  # (N, L, 1)
    seen = np.isfinite(row_max)
    weights = np.exp(scores - np.where(seen, row_max, 0))
    row_sum = weights.sum(-1, keepdims=True)
    probs = np.where(seen, weights / np.where(seen, row_sum, 1), 0)          # (N, L, S)
    lse = np.where(seen, row_max + np.log(np.where(seen, row_sum, 1)), -np.inf)[..., 0]

    def gradients(q, k, v, dout, sign):
        dprobs = dout @ v.transpose(0, 2, 1)                                 # (N, L, S)
        dscores = probs * (dprobs + sign * (dprobs * probs).sum(-1, keepdims=True))
        return (probs @ v, scale * dscores @ k, scale * dscores.transpose(0, 2, 1) @ q,
                probs.transpose(0, 2, 1) @ dout)

    out, dq, dk, dv = gradients(q, k, v, dout, -1)
    magnitudes = gradients(*(np.abs(a) for a in (q, k, v, dout)), 1)
    return list(zip((out, lse, dq, dk, dv), (magnitudes[0], np.abs(lse), *magnitudes[1:])))


def assert_close(actual, expected, magnitude, dtype):
    """Equal to the dtype's tolerance times the largest ``magnitude`` (at least 1); infinities
    must match exactly."""
    assert actual.dtype == dtype and actual.shape == expected.shape
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(actual[~finite], expected[~finite])
    scale = max(1.0, float(magnitude[finite].max())) if finite.any() else 1.0
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=0,
                               atol=TOLERANCE[dtype] * scale)


def run_and_compare(q, k, v, dout, scale, causal, mask=None, bias=None):
    """Run both kernels and compare every result with the reference."""
    dtype = q.dtype.type
    out, lse = cpu_attention.attention_forward(q, k, v, scale, causal, mask, bias)
    grads = cpu_attention.attention_backward(q, k, v, out, lse, dout, scale, causal, mask, bias)
    expected = reference_attention(q, k, v, dout, scale, causal, mask, bias)
    for actual, (want, magnitude) in zip((out, lse, *grads), expected):
        assert_close(actual, want, magnitude, dtype)
    return out, lse, grads


def make_mask(kind, rng, batch, q_len, key_len):
    """None, a random (N, L, S) mask with a fully masked row, or a key-padding mask broadcast
    from (N, 1, S) (zero strides) whose last problem has every key padded."""
    if kind == "none":
        return None
    if kind == "random":
        mask = rng.random((batch, q_len, key_len)) < 0.7
        mask[0, q_len // 2] = False
        return mask
    padding = rng.random((batch, 1, key_len)) < 0.8
    if batch > 1:
        padding[-1] = False
    return np.broadcast_to(padding, (batch, q_len, key_len))


def make_bias(kind, rng, batch, q_len, key_len, dtype):
    """None, a full (N, L, S) bias with some -inf, or a per-key bias broadcast from (1, 1, S)."""
    if kind == "none":
        return None
    if kind == "full":
        bias = rng.standard_normal((batch, q_len, key_len))
        bias[rng.random(bias.shape) < 0.1] = -np.inf
        return bias.astype(dtype)
    return np.broadcast_to(rng.standard_normal((1, 1, key_len)).astype(dtype),
                           (batch, q_len, key_len))


def random_inputs(rng, batch, q_len, key_len, head_dim, value_dim, dtype):
    """q (N, L, E), k (N, S, E), v and dout (N, S/L, Ev), standard normal, of ``dtype``."""
    shapes = [(batch, q_len, head_dim), (batch, key_len, head_dim), (batch, key_len, value_dim),
              (batch, q_len, value_dim)]
    return [rng.standard_normal(shape).astype(dtype) for shape in shapes]


def check_against_reference(batch, q_len, key_len, head_dim, value_dim, causal, mask_kind,
                            bias_kind, dtype, seed):
    """Random inputs, mask and bias of these kinds, run and compared with the reference."""
    rng = np.random.default_rng(seed)
    q, k, v, dout = random_inputs(rng, batch, q_len, key_len, head_dim, value_dim, dtype)
    mask = make_mask(mask_kind, rng, batch, q_len, key_len)
    bias = make_bias(bias_kind, rng, batch, q_len, key_len, dtype)
    run_and_compare(q, k, v, dout, head_dim ** -0.5, causal, mask, bias)


problems = dict(causal=st.booleans(), mask_kind=st.sampled_from(["none", "random", "padding"]),
                bias_kind=st.sampled_from(["none", "full", "keys"]),
                dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))


@given(batch=st.integers(1, 3), q_len=st.integers(1, 300), key_len=st.integers(1, 300),
       head_dim=st.sampled_from([1, 3, 16, 64, 256]), value_dim=st.sampled_from([1, 5, 32, 256]),
       **problems)
def test_kernels_match_reference(batch, q_len, key_len, head_dim, value_dim, causal, mask_kind,
                                 bias_kind, dtype, seed):
    """Forward (out, lse) and backward (dq, dk, dv) with the default tiles."""
    check_against_reference(batch, q_len, key_len, head_dim, value_dim, causal, mask_kind,
                            bias_kind, dtype, seed)


@given(blocks=st.sampled_from([(1, 1), (3, 5), (8, 3)]), batch=st.integers(1, 3),
       q_len=st.integers(1, 30), key_len=st.integers(1, 30), head_dim=st.integers(1, 8),
       value_dim=st.integers(1, 8), **problems)
def test_kernels_match_reference_with_small_tiles(blocks, batch, q_len, key_len, head_dim,
                                                  value_dim, causal, mask_kind, bias_kind, dtype,
                                                  seed):
    """The same with tiles of a few rows and keys, so that short sequences span many tiles."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cpu_attention, "QUERY_BLOCK", blocks[0])
        patch.setattr(cpu_attention, "KEY_BLOCK", blocks[1])
        check_against_reference(batch, q_len, key_len, head_dim, value_dim, causal, mask_kind,
                                bias_kind, dtype, seed)


@pytest.mark.parametrize("q_len, key_len", [(1, 1), (128, 128), (129, 257), (300, 5)])
@pytest.mark.parametrize("causal", [False, True])
def test_default_tile_edges(q_len, key_len, causal):
    """Lengths of one, of exactly one tile, one past a tile and L much larger than S."""
    q, k, v, dout = random_inputs(np.random.default_rng(0), 2, q_len, key_len, 64, 64,
                                  np.float32)
    run_and_compare(q, k, v, dout, 0.125, causal)


def test_backward_matches_finite_differences():
    """d/dx sum(out * dout) by central differences, float64, with causality, a mask and a bias."""
    rng = np.random.default_rng(1)
    q, k, v, dout = random_inputs(rng, 1, 3, 4, 2, 3, np.float64)
    mask = np.ones((1, 3, 4), bool)
    mask[0, 2, 1] = False
    bias = rng.standard_normal((1, 3, 4))
    args = (0.7, True, mask, bias)
    out, lse = cpu_attention.attention_forward(q, k, v, *args)
    grads = cpu_attention.attention_backward(q, k, v, out, lse, dout, *args)
    step = 1e-6
    for array, grad in zip((q, k, v), grads):
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + step
            plus = (cpu_attention.attention_forward(q, k, v, *args)[0] * dout).sum()
            array[index] = saved - step
            minus = (cpu_attention.attention_forward(q, k, v, *args)[0] * dout).sum()
            array[index] = saved
            numeric[index] = (plus - minus) / (2 * step)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_output_element_is_written(monkeypatch, dtype):
    """With outputs allocated full of NaN, no NaN survives (tiles of 8 over lengths 37 and 21)."""
    monkeypatch.setattr(cpu_attention, "_empty",
                        lambda shape, dtype: np.full(shape, np.nan, dtype))
    monkeypatch.setattr(cpu_attention, "QUERY_BLOCK", 8)
    monkeypatch.setattr(cpu_attention, "KEY_BLOCK", 8)
    rng = np.random.default_rng(2)
    q, k, v, dout = random_inputs(rng, 3, 37, 21, 16, 8, dtype)
    mask = make_mask("padding", rng, 3, 37, 21)
    for causal in (False, True):
        out, lse, grads = run_and_compare(q, k, v, dout, 0.25, causal, mask)
        for result in (out, lse, *grads):
            assert not np.isnan(result).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch, q_len, key_len", [(3, 45, 30), (30, 9, 7)])
def test_work_shared_among_threads(monkeypatch, dtype, batch, q_len, key_len):
    """Work cut into many chunks taken by three threads (more than this machine may have) gives
    the reference results, with every output element written: with few problems (the
    backward's threads add into their own copies of dq) and with more problems than chunks
    (chunks hold whole problems and share one dq)."""
    monkeypatch.setattr(cpu_attention, "_empty",
                        lambda shape, dtype: np.full(shape, np.nan, dtype))
    monkeypatch.setattr(cpu_attention, "QUERY_BLOCK", 4)
    monkeypatch.setattr(cpu_attention, "KEY_BLOCK", 4)
    monkeypatch.setattr(cpu_attention, "MIN_WORK_PER_CHUNK", 1)
    monkeypatch.setattr(cpu_attention, "cpu_cores", lambda: 3)
    monkeypatch.setattr(cpu_parallel, "cpu_cores", lambda: 3)
    rng = np.random.default_rng(5)
    q, k, v, dout = random_inputs(rng, batch, q_len, key_len, 8, 5, dtype)
    assert cpu_attention._chunk_count(q.shape, k.shape, v.shape) == 24
    mask = make_mask("random", rng, batch, q_len, key_len)
    for causal in (False, True):
        out, lse, grads = run_and_compare(q, k, v, dout, 0.3, causal, mask)
        for result in (out, lse, *grads):
            assert not np.isnan(result).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fully_masked_rows_give_zeros(dtype):
    """Rows without a key (by mask, by -inf bias, or every key padded) give out 0, lse -inf and
    zero gradients, and the other rows are untouched by them."""
    rng = np.random.default_rng(3)
    q, k, v, dout = random_inputs(rng, 2, 6, 5, 4, 3, dtype)
    mask = np.ones((2, 6, 5), bool)
    mask[0, 1] = False
    mask[1] = False
    bias = np.zeros((2, 6, 5), dtype)
    bias[0, 4] = -np.inf
    for causal in (False, True):
        out, lse, (dq, dk, dv) = run_and_compare(q, k, v, dout, 0.5, causal, mask, bias)
        for n, row in [(0, 1), (0, 4)] + [(1, i) for i in range(6)]:
            assert lse[n, row] == -np.inf
            assert (out[n, row] == 0).all() and (dq[n, row] == 0).all()
        assert (dk[1] == 0).all() and (dv[1] == 0).all()
        assert np.isfinite(out).all() and np.isfinite(dq).all() and np.isfinite(dk).all()


def test_memory_grows_with_length_not_length_squared():
    """Forward and backward at L = S = 2048 allocate far less than one (L, S) float32 array."""
    length = 2048
    q, k, v, dout = random_inputs(np.random.default_rng(4), 1, length, length, 16, 16,
                                  np.float32)
    padding = np.broadcast_to(np.arange(length) < length - 100, (1, length, length))
    small = [a[:, :8] for a in (q, k, v, dout)]
    out, lse = cpu_attention.attention_forward(*small[:3], 0.25, True, padding[:, :8, :8])
    cpu_attention.attention_backward(*small[:3], out, lse, small[3], 0.25, True,
                                     padding[:, :8, :8])  # compile outside the measurement
    tracemalloc.start()
    try:
        out, lse = cpu_attention.attention_forward(q, k, v, 0.25, True, padding)
        cpu_attention.attention_backward(q, k, v, out, lse, dout, 0.25, True, padding)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < length * length * 4 / 8


def test_openblas_thread_count_is_restored():
    """The kernels run with OpenBLAS on one thread and leave its thread count as it was."""
    functions = cpu_parallel.openblas_thread_functions()
    if functions is None:
        pytest.skip("no OpenBLAS behind scipy.linalg.cython_blas")
    get_threads, _ = functions
    before = get_threads()
    with cpu_parallel.single_threaded_blas():
        assert get_threads() == 1
    assert get_threads() == before


def test_rejects_mismatched_arguments():
    q = np.zeros((2, 3, 4))
    with pytest.raises(TypeError, match="dtype"):
        cpu_attention.attention_forward(q, q.astype(np.float32), q, 1.0, False)
    with pytest.raises(ValueError, match="shapes"):
        cpu_attention.attention_forward(q, np.zeros((2, 3, 5)), q, 1.0, False)
    with pytest.raises(ValueError, match="mask"):
        cpu_attention.attention_forward(q, q, q, 1.0, False, mask=np.ones((2, 3, 4), bool))


def test_backward_is_reproducible_with_threads(monkeypatch):
    """Per-thread partial sums of dq are added in a fixed order: the same bits every call."""
    monkeypatch.setattr(cpu_attention, "MIN_WORK_PER_CHUNK", 1)
    for module in (cpu_attention, cpu_parallel):
        monkeypatch.setattr(module, "cpu_cores", lambda: 3)
    q, k, v, dout = random_inputs(np.random.default_rng(6), 2, 300, 300, 16, 16, np.float32)
    out, lse = cpu_attention.attention_forward(q, k, v, 0.25, False)
    first = cpu_attention.attention_backward(q, k, v, out, lse, dout, 0.25, False)
    for _ in range(3):
        again = cpu_attention.attention_backward(q, k, v, out, lse, dout, 0.25, False)
        for a, b in zip(first, again):
            assert np.array_equal(a, b)


def test_backward_without_keys():
    q = np.ones((2, 3, 4), np.float32)
    k = v = np.ones((2, 0, 4), np.float32)
    out, lse = cpu_attention.attention_forward(q, k, v, 1.0, False)
    assert (out == 0).all() and np.isneginf(lse).all()
    dq, dk, dv = cpu_attention.attention_backward(q, k, v, out, lse, np.ones_like(out), 1.0, False)
    assert (dq == 0).all() and dk.shape == (2, 0, 4) and dv.shape == (2, 0, 4)
