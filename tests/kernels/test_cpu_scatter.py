"""The row scatter-add kernel (``tinynlm.kernels.cpu_scatter``) against ``np.add.at``, directly
and through the ops that use it (an embedding's gradient, the gradient of indexing)."""

import contextlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinynlm as tn
from tinynlm import backend, dispatch
from tinynlm.kernels import cpu_scatter


@contextlib.contextmanager
def _recording_kernel_calls(calls):
    """Record each call of the scatter kernel that ``backend.index_add`` makes."""
    kernel = dispatch.kernel("index_add_rows", np)
    dispatch._loaded[("index_add_rows", "cpu")] = lambda *args: calls.append(kernel(*args))
    try:
        yield
    finally:
        dispatch._loaded[("index_add_rows", "cpu")] = kernel


@given(rows=st.integers(1, 20), width=st.lists(st.integers(1, 5), max_size=2),
       ids=st.integers(65, 300), index_dims=st.integers(1, 2),
       dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2**16))
def test_add_rows_matches_numpy_add_at(rows, width, ids, index_dims, dtype, seed):
    rng = np.random.default_rng(seed)
    index_shape = (ids,) if index_dims == 1 else (ids // 5 + 1, 5)
    index = rng.integers(0, rows, index_shape)           # many repeats: ids > rows
    values = rng.standard_normal(index_shape + tuple(width)).astype(dtype)
    start = rng.standard_normal((rows, *width)).astype(dtype)
    got, want = start.copy(), start.copy()
    calls = []
    with _recording_kernel_calls(calls):
        backend.index_add(np, got, index, values)
    assert len(calls) == 1                               # it took the kernel path
    np.add.at(want, index, values)
    np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == "float32" else 1e-12, atol=1e-6)


def test_add_rows_reads_strided_rows_and_keeps_the_given_order():
    rng = np.random.default_rng(1)
    values = rng.standard_normal((100, 8))[:, ::2]       # not contiguous
    index = np.zeros(100, np.int64)                      # every row into row 0
    target = np.zeros((3, 4))
    cpu_scatter.add_rows(target, index, values)
    want = np.zeros(4)
    for row in values:                                   # the same additions, in order
        want += row
    assert target[0].tolist() == want.tolist() and not target[1:].any()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_embedding_gradient_with_repeated_ids(dtype):
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 50, (8, 30))
    grad = rng.standard_normal((8, 30, 6))
    embedding = tn.nn.Embedding(50, 6).to(getattr(tn, dtype))
    embedding(tn.tensor(ids)).backward(tn.tensor(grad, dtype=getattr(tn, dtype)))
    want = np.zeros((50, 6))
    np.add.at(want, ids, grad)
    np.testing.assert_allclose(embedding.weight.grad.numpy(), want,
                               rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-5)


def test_fallbacks_keep_numpy_add_at_semantics():
    """Negative ids, float16, mismatched shapes and small index arrays go through
    ``np.add.at`` (same results, same errors); big-endian ids take the kernel."""
    rng = np.random.default_rng(3)
    index = rng.integers(-10, 10, 100)
    values = rng.standard_normal((100, 3))
    calls = []
    with _recording_kernel_calls(calls):
        for target_dtype, ids in [(np.float64, index), (np.float16, index % 10),
                                  (np.float64, index[:50] % 10)]:
            got, want = np.zeros((10, 3), target_dtype), np.zeros((10, 3), target_dtype)
            rows = values[:ids.size].astype(target_dtype)
            backend.index_add(np, got, ids, rows)
            np.add.at(want, ids, rows)
            assert got.dtype == target_dtype
            np.testing.assert_array_equal(got, want)
        with pytest.raises(ValueError):
            backend.index_add(np, np.zeros((10, 3)), index % 10, np.ones((3, 100)))
        assert calls == []
        got, want = np.zeros((10, 3)), np.zeros((10, 3))
        backend.index_add(np, got, (index % 10).astype(">i8"), values)
        np.add.at(want, index % 10, values)
        assert len(calls) == 1
        np.testing.assert_allclose(got, want)
