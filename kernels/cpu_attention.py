"""Fused scaled-dot-product attention on the CPU in Numba: the FlashAttention-2 algorithm.

For each of the ``N`` independent problems (batch times heads, flattened) the scores are
``scale * q @ k.T + bias``, with ``-inf`` for the keys a query does not see (causality, the bool
mask, or a ``-inf`` bias); ``out = softmax(scores) @ v`` row by row and ``lse`` is the row
logsumexp of the scores. The (L, S) score matrix is never formed:

Forward. The queries are cut into blocks of ``QUERY_BLOCK`` rows; each (problem, query block) is
one work item. It streams over blocks of ``KEY_BLOCK`` keys and values:
a BLAS product gives a tile of scores, the tile is masked and biased, and an online softmax keeps
a running row maximum ``m`` and row sum ``l``. When a tile raises ``m``, the sum and the output
accumulated so far are rescaled by ``exp(m_old - m_new)``; the tile's ``exp(scores - m_new)``
times the value block (a second BLAS product) is added to the output, which is divided by ``l``
once at the end. ``lse = m + log(l)`` is all the backward needs. Under causality a query block
stops at the key of its last row, skipping the tiles it cannot see (half the work).

Backward. Each (problem, key block) is one work item: it owns those rows of ``dk`` and
``dv`` and walks over the query blocks that can see its keys, recomputing the probabilities
``P = exp(scores - lse)`` from ``q``, ``k`` and ``lse``. With ``D = rowsum(dout * out)``:
``dv += P.T @ dout``, ``dS = P * (dout @ v.T - D)``, ``dk += scale * dS.T @ q`` and
``dq += scale * dS @ k``. Every key block adds into all rows of ``dq``, so each thread adds into
its own copy and the copies are summed at the end (race-free; ``threads * N * L * E`` extra),
unless there are enough problems that every thread's chunks can hold whole problems.

Threads. A long call's work items are cut into chunks of consecutive items, which the calling
thread and a small pool take one at a time until none is left, up to one thread per core
(``cpu_parallel.run_in_threads``); the compiled kernels release the GIL. Short calls run on the
calling thread.

A query that sees no key gets ``out = 0``, ``lse = -inf`` and zero gradients. Work items hold at
most a few ``QUERY_BLOCK x KEY_BLOCK`` tiles, so the extra memory grows with the lengths, not with
their product. Float32 is computed in float32 (float32 BLAS), float64 in float64. OpenBLAS is
held to one thread while a kernel runs (see ``cpu_parallel.single_threaded_blas``).

Masks and biases may be broadcast views (zero strides, e.g. a key-padding mask broadcast from
``(N, 1, S)``): the wrappers cut each zero-stride axis to length 1 and the kernels read such an
axis at index 0, so a broadcast is never materialised. A missing one becomes a ``(1, 1, 1)``
dummy and a flag, and all inputs are passed as read-only views, so each kernel is compiled once
per dtype, on its first call (several seconds), and cached on disk for later processes.
"""

import math

import numba
import numpy as np

from . import cpu_cores
from .cpu_math import exp_in_place
from .cpu_parallel import run_in_threads

# 128 x 128 tiles were the fastest of 32..256 measured on one thread (float32, E = 64 and 128, L = S
# = 256 and 1024): 64 x 64 took 7-25% longer, 32 x 32 40-50% longer (OpenBLAS is slow on small
# products). A float32 tile of scores is 64 KiB; with the query, key and value blocks it stays in
# L2 cache for head sizes up to 128.
QUERY_BLOCK = 128
KEY_BLOCK = 128


# A chunk of a call should be worth more than handing it to a thread (tens of microseconds): at
# least this many multiply-adds in the score products (about 0.1 ms on one core).
MIN_WORK_PER_CHUNK = 2**22
# Chunks per thread: enough that a thread slowed by other work on its core (see
# cpu_parallel.run_in_threads) leaves little for the others to wait on.
CHUNKS_PER_THREAD = 8


def _chunk_count(q_shape, k_shape, v_shape):
    """How many chunks to cut a call's work items into: one for small calls (run on the calling
    thread), up to ``CHUNKS_PER_THREAD`` per core for long sequences."""
    batch, q_len, head_dim = q_shape
    work = batch * q_len * k_shape[1] * (head_dim + v_shape[2])
    return max(1, min(cpu_cores() * CHUNKS_PER_THREAD, work // MIN_WORK_PER_CHUNK))


def _thread_count(n_chunks):
    """The threads that share ``n_chunks`` chunks: one per core, at most one per chunk."""
    return min(cpu_cores(), n_chunks)


def _empty(shape, dtype):
    """Allocate an output array (tests replace this to poison outputs with NaN)."""
    return np.empty(shape, dtype)


def _read_only(array, dtype=None):
    """A C-contiguous, read-only view of ``array`` (a copy only if it is not C-contiguous or not
    of ``dtype``). Numba compiles writable and read-only arrays separately; making every input
    read-only keeps to one compiled kernel per dtype."""
    view = np.ascontiguousarray(array, dtype).view()
    view.flags.writeable = False
    return view


def _compact(array, shape, dtype, name):
    """``array`` of ``shape`` with its zero-stride (broadcast) axes cut to length 1, read-only,
    and True; or a ``(1, 1, 1)`` dummy of ones and False for None."""
    if array is None:
        return _read_only(np.ones((1, 1, 1), dtype)), False
    if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, expected {shape}")
    unbroadcast = tuple(slice(0, 1) if stride == 0 else slice(None) for stride in array.strides)
    return _read_only(array[unbroadcast], dtype), True


def _prepared(q, k, v, mask, bias):
    """Check the arguments; return read-only ``q, k, v`` and the compacted mask and bias, each
    followed by its flag."""
    if q.dtype not in (np.float32, np.float64) or k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"q, k, v must share one dtype, float32 or float64, got "
                        f"{q.dtype}, {k.dtype}, {v.dtype}")
    if (q.ndim, k.ndim, v.ndim) != (3, 3, 3) or k.shape[0] != q.shape[0] \
            or k.shape[2] != q.shape[2] or v.shape[:2] != k.shape[:2]:
        raise ValueError(f"shapes q (N, L, E), k (N, S, E), v (N, S, Ev) expected, got "
                         f"{q.shape}, {k.shape}, {v.shape}")
    scores_shape = q.shape[:2] + k.shape[1:2]  # (N, L, S)
    return (_read_only(q), _read_only(k), _read_only(v),
            *_compact(mask, scores_shape, np.bool_, "mask"),
            *_compact(bias, scores_shape, q.dtype, "bias"))


def attention_forward(q, k, v, scale, causal, mask=None, bias=None):
    """Attention output and row logsumexp: ``softmax(scale * q @ k.T + bias) @ v``.

    ``q`` (N, L, E), ``k`` (N, S, E), ``v`` (N, S, Ev): one dtype, float32 or float64 (copied if
    not C-contiguous). ``causal``: query ``i`` sees keys ``j <= i``. ``mask``: bool (N, L, S),
    True where the key takes part; ``bias``: (N, L, S) added to the scaled scores; both may be
    broadcast views. Returns ``out`` (N, L, Ev) and ``lse`` (N, L), the logsumexp of each row of
    scores (``-inf``, with ``out = 0``, for a row that sees no key).

    >>> import numpy as np
    >>> q = np.array([[[1.0, 0.0]]]); k = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    >>> v = np.array([[[10.0], [20.0]]])
    >>> out, lse = attention_forward(q, k, v, scale=1.0, causal=False)
    >>> out.round(4).tolist(), lse.round(4).tolist()
    ([[[12.6894]]], [[1.3133]])
    >>> attention_forward(q, k, v, 1.0, causal=True)[0].tolist()  # query 0 sees key 0 only
    [[[10.0]]]
    """
    q, k, v, mask, has_mask, bias, has_bias = _prepared(q, k, v, mask, bias)
    batch, q_len = q.shape[:2]
    value_dim = v.shape[2]
    out = _empty((batch, q_len, value_dim), q.dtype)  # (N, L, Ev)
    lse = _empty((batch, q_len), q.dtype)  # (N, L)
    scale = q.dtype.type(scale)

    def run_items(thread, first_item, stop_item):
        _forward_kernel(q, k, v, scale, bool(causal), mask, has_mask, bias, has_bias,
                        QUERY_BLOCK, KEY_BLOCK, first_item, stop_item, out, lse)

    run_in_threads(run_items, batch * -(-q_len // QUERY_BLOCK),
                    _chunk_count(q.shape, k.shape, v.shape))
    return out, lse


def attention_backward(q, k, v, out, lse, dout, scale, causal, mask=None, bias=None):
    """Gradients ``(dq, dk, dv)`` of the attention output, from the forward's ``out`` and ``lse``.

    The arguments are those of :func:`attention_forward`, its results ``out`` (N, L, Ev) and
    ``lse`` (N, L), and ``dout`` (N, L, Ev), the gradient of the loss by ``out``. The
    probabilities are recomputed tile by tile from ``q``, ``k`` and ``lse``; a row that sees no
    key gets zero gradients.

    >>> import numpy as np
    >>> q = np.array([[[1.0, 0.0]]]); k = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    >>> v = np.array([[[10.0], [20.0]]])
    >>> out, lse = attention_forward(q, k, v, 1.0, False)
    >>> dq, dk, dv = attention_backward(q, k, v, out, lse, np.ones_like(out), 1.0, False)
    >>> dv.round(4).tolist()  # the attention probabilities of the one query
    [[[0.7311], [0.2689]]]
    >>> dq.round(4).tolist()
    [[[-1.9661, 1.9661]]]
    """
    q, k, v, mask, has_mask, bias, has_bias = _prepared(q, k, v, mask, bias)
    out, lse, dout = (_read_only(a, q.dtype) for a in (out, lse, dout))
    batch, q_len, head_dim = q.shape
    key_len, value_dim = v.shape[1:]
    out_dot_dout = np.einsum("nle,nle->nl", out, dout)  # (N, L), D = rowsum(dout * out)
    dk = _empty((batch, key_len, head_dim), q.dtype)  # (N, S, E)
    dv = _empty((batch, key_len, value_dim), q.dtype)  # (N, S, Ev)
    n_key_blocks = -(-key_len // KEY_BLOCK)
    n_chunks = min(batch * n_key_blocks, _chunk_count(q.shape, k.shape, v.shape))
    # Every key block adds into all rows of dq[n]. With a problem or more per chunk, chunks
    # hold whole problems and share one dq; otherwise each thread adds into its own copy.
    whole_problems = batch >= n_chunks
    copies = 1 if whole_problems else _thread_count(n_chunks)
    dq_sums = np.zeros((copies, batch, q_len, head_dim), q.dtype)  # (copies, N, L, E)
    scale_ = q.dtype.type(scale)

    def run_items(thread, first_item, stop_item):
        _backward_kernel(q, k, v, lse, dout, out_dot_dout, scale_, bool(causal), mask,
                         has_mask, bias, has_bias, QUERY_BLOCK, KEY_BLOCK, first_item,
                         stop_item, dq_sums[0 if whole_problems else thread], dk, dv)

    run_in_threads(run_items, batch * n_key_blocks, n_chunks,
                   n_key_blocks if whole_problems and n_key_blocks else 1,
                   fixed=not whole_problems)  # per-thread sums of dq: in a fixed order
    if whole_problems:
        dq = dq_sums[0]
    else:
        dq = _empty((batch, q_len, head_dim), q.dtype)  # (N, L, E)
        np.sum(dq_sums, axis=0, out=dq)
    dq *= scale
    return dq, dk, dv


@numba.njit(cache=True, error_model="numpy")
def _broadcast_index(index, size):
    """The index into an axis that may have been cut to length 1 from a broadcast."""
    return index if size > 1 else 0


@numba.njit(cache=True, error_model="numpy")
def _scale_rows(rows, scale, scaled):
    """``scaled[...] = scale * rows`` for two arrays of the same 2-D shape."""
    for i in range(rows.shape[0]):
        for j in range(rows.shape[1]):
            scaled[i, j] = scale * rows[i, j]


@numba.njit(cache=True, error_model="numpy")
def _add_into(total, addend):
    """``total += addend`` for two arrays of the same 2-D shape."""
    for i in range(total.shape[0]):
        for j in range(total.shape[1]):
            total[i, j] += addend[i, j]


@numba.njit(cache=True, error_model="numpy")
def _copy_into(target, source):
    """``target[...] = source`` for two arrays of the same 2-D shape."""
    for i in range(target.shape[0]):
        for j in range(target.shape[1]):
            target[i, j] = source[i, j]


@numba.njit(cache=True, error_model="numpy")
def _mask_scores(scores, n, first_row, first_key, causal, mask, has_mask, bias, has_bias):
    """Add the bias to a tile of scaled scores and set the keys a query does not see to -inf.

    ``scores`` is the tile of problem ``n`` for queries ``first_row...`` and keys ``first_key...``.
    """
    n_rows, n_cols = scores.shape
    mask_n = _broadcast_index(n, mask.shape[0])
    bias_n = _broadcast_index(n, bias.shape[0])
    for r in range(n_rows):
        row = first_row + r
        visible = n_cols  # the keys past the diagonal are hidden under causality
        if causal:
            visible = min(n_cols, max(0, row + 1 - first_key))
            for c in range(visible, n_cols):
                scores[r, c] = -np.inf
        if has_bias:
            bias_row = bias[bias_n, _broadcast_index(row, bias.shape[1])]  # (S,) or (1,)
            for c in range(visible):
                scores[r, c] += bias_row[_broadcast_index(first_key + c, bias.shape[2])]
        if has_mask:
            mask_row = mask[mask_n, _broadcast_index(row, mask.shape[1])]  # (S,) or (1,)
            for c in range(visible):
                if not mask_row[_broadcast_index(first_key + c, mask.shape[2])]:
                    scores[r, c] = -np.inf


@numba.njit(cache=True, error_model="numpy")
def _exp_shifted(row, shift, bits):
    """``row[i] = exp(row[i] - shift)`` in place (0 for -inf): float32 rows by the vectorised
    :func:`~tinynlm.kernels.cpu_math.exp_in_place` (``bits`` is its int32 scratch, as long as
    the row; relative error under 3e-7), float64 rows by libm's exp."""
    if row.itemsize == 4:
        exp_in_place(row, shift, bits)
        return
    for i in range(row.size):
        row[i] = math.exp(row[i] - shift) if row[i] != -np.inf else 0.0


@numba.njit(cache=True, error_model="numpy", fastmath={"reassoc", "nsz"})
def _row_sum(row):
    """The sum of a 1-D array, added in whatever order is fastest: reassociation lets LLVM keep
    several partial sums in vector registers instead of one chain of dependent additions (4x
    faster on a 128-key row)."""
    total = row.dtype.type(0)
    for i in range(row.size):
        total += row[i]
    return total


@numba.njit(cache=True, error_model="numpy")
def _online_softmax_step(scores, row_max, row_sum, out_acc, bits):
    """Fold a tile of scores into the running row maxima and sums of a query block.

    Turns ``scores`` (rows, keys) into ``exp(scores - new row max)`` in place and rescales the
    running sums ``row_sum`` and the unnormalised outputs ``out_acc`` (rows, Ev) to the new max.
    """
    n_rows, n_cols = scores.shape
    for r in range(n_rows):
        tile_max = scores[r, 0]
        for c in range(1, n_cols):
            tile_max = max(tile_max, scores[r, c])
        new_max = max(row_max[r], tile_max)
        if new_max == -np.inf:  # no key of this row seen so far
            for c in range(n_cols):
                scores[r, c] = 0
            continue
        correction = math.exp(row_max[r] - new_max)
        _exp_shifted(scores[r], new_max, bits)
        row_sum[r] = row_sum[r] * correction + _row_sum(scores[r])
        row_max[r] = new_max
        if correction != 1:
            for e in range(out_acc.shape[1]):
                out_acc[r, e] *= correction


@numba.njit(cache=True, error_model="numpy")
def _forward_query_block(q, k, v, scale, causal, mask, has_mask, bias, has_bias,
                         n, first_row, n_rows, key_block, out, lse):
    """Fill ``out`` and ``lse`` for the ``n_rows`` queries from ``first_row`` of problem ``n``."""
    head_dim, key_len, value_dim = q.shape[2], k.shape[1], v.shape[2]
    scaled_queries = np.empty((n_rows, head_dim), q.dtype)  # (rows, E)
    _scale_rows(q[n, first_row:first_row + n_rows], scale, scaled_queries)
    scores_buffer = np.empty(n_rows * key_block, q.dtype)  # room for a (rows, keys) tile
    bits = np.empty(key_block, np.int32)  # scratch of _exp_shifted
    tile_values = np.empty((n_rows, value_dim), q.dtype)  # (rows, Ev)
    out_acc = np.zeros((n_rows, value_dim), q.dtype)  # (rows, Ev), unnormalised
    row_max = np.empty(n_rows, q.dtype)  # (rows,)
    for r in range(n_rows):
        row_max[r] = -np.inf
    row_sum = np.zeros(n_rows, q.dtype)  # (rows,)
    key_stop = min(key_len, first_row + n_rows) if causal else key_len
    for first_key in range(0, key_stop, key_block):
        n_cols = min(key_block, key_stop - first_key)
        scores = scores_buffer[:n_rows * n_cols].reshape((n_rows, n_cols))  # (rows, keys)
        np.dot(scaled_queries, k[n, first_key:first_key + n_cols].T, scores)
        _mask_scores(scores, n, first_row, first_key, causal, mask, has_mask, bias, has_bias)
        _online_softmax_step(scores, row_max, row_sum, out_acc, bits)
        np.dot(scores, v[n, first_key:first_key + n_cols], tile_values)
        _add_into(out_acc, tile_values)
    for r in range(n_rows):
        if row_sum[r] > 0:
            lse[n, first_row + r] = row_max[r] + math.log(row_sum[r])
            for e in range(value_dim):
                out[n, first_row + r, e] = out_acc[r, e] / row_sum[r]
        else:  # the row sees no key
            lse[n, first_row + r] = -np.inf
            for e in range(value_dim):
                out[n, first_row + r, e] = 0


@numba.njit(cache=True, error_model="numpy")
def _backward_key_block(q, k, v, lse, dout, out_dot_dout, scale, causal, mask, has_mask, bias,
                        has_bias, n, first_key, n_cols, query_block, dq_acc, dk, dv):
    """Fill ``dk`` and ``dv`` for the ``n_cols`` keys from ``first_key`` of problem ``n``.

    Adds ``dS @ k`` for these keys into ``dq_acc`` (L, E), the caller's unscaled copy of ``dq[n]``.
    """
    q_len, head_dim, value_dim = q.shape[1], q.shape[2], v.shape[2]
    keys = k[n, first_key:first_key + n_cols]  # (keys, E)
    values = v[n, first_key:first_key + n_cols]  # (keys, Ev)
    dk_acc = np.zeros((n_cols, head_dim), q.dtype)  # (keys, E)
    dv_acc = np.zeros((n_cols, value_dim), q.dtype)  # (keys, Ev)
    dk_tile = np.empty((n_cols, head_dim), q.dtype)  # (keys, E)
    dv_tile = np.empty((n_cols, value_dim), q.dtype)  # (keys, Ev)
    scaled_buffer = np.empty(query_block * head_dim, q.dtype)  # room for (rows, E)
    dq_buffer = np.empty(query_block * head_dim, q.dtype)  # room for (rows, E)
    probs_buffer = np.empty(query_block * n_cols, q.dtype)  # room for (rows, keys)
    dscores_buffer = np.empty(query_block * n_cols, q.dtype)  # room for (rows, keys)
    bits = np.empty(n_cols, np.int32)  # scratch of _exp_shifted
    # Under causality the query blocks that end before first_key see none of these keys.
    first_block_row = (first_key // query_block) * query_block if causal else 0
    for first_row in range(first_block_row, q_len, query_block):
        n_rows = min(query_block, q_len - first_row)
        queries = q[n, first_row:first_row + n_rows]  # (rows, E)
        dout_rows = dout[n, first_row:first_row + n_rows]  # (rows, Ev)
        scaled_queries = scaled_buffer[:n_rows * head_dim].reshape((n_rows, head_dim))
        _scale_rows(queries, scale, scaled_queries)
        probs = probs_buffer[:n_rows * n_cols].reshape((n_rows, n_cols))  # (rows, keys)
        np.dot(scaled_queries, keys.T, probs)
        _mask_scores(probs, n, first_row, first_key, causal, mask, has_mask, bias, has_bias)
        for r in range(n_rows):
            row_lse = lse[n, first_row + r]
            if row_lse == -np.inf:  # the row sees no key: exp(score - inf) = 0
                row_lse = np.inf
            _exp_shifted(probs[r], row_lse, bits)
        dscores = dscores_buffer[:n_rows * n_cols].reshape((n_rows, n_cols))  # (rows, keys)
        np.dot(dout_rows, values.T, dscores)  # dP = dout @ v.T
        for r in range(n_rows):
            row_d = out_dot_dout[n, first_row + r]
            for c in range(n_cols):
                dscores[r, c] = probs[r, c] * (dscores[r, c] - row_d)
        np.dot(probs.T, dout_rows, dv_tile)
        _add_into(dv_acc, dv_tile)
        np.dot(dscores.T, scaled_queries, dk_tile)  # scale * dS.T @ q
        _add_into(dk_acc, dk_tile)
        dq_tile = dq_buffer[:n_rows * head_dim].reshape((n_rows, head_dim))
        np.dot(dscores, keys, dq_tile)
        _add_into(dq_acc[first_row:first_row + n_rows], dq_tile)
    _copy_into(dk[n, first_key:first_key + n_cols], dk_acc)
    _copy_into(dv[n, first_key:first_key + n_cols], dv_acc)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _forward_kernel(q, k, v, scale, causal, mask, has_mask, bias, has_bias,
                    query_block, key_block, first_item, stop_item, out, lse):
    """Fill ``out`` (N, L, Ev) and ``lse`` (N, L) for the work items (problem, query block)
    numbered ``first_item`` to ``stop_item - 1``."""
    q_len = q.shape[1]
    n_query_blocks = (q_len + query_block - 1) // query_block
    for item in range(first_item, stop_item):
        first_row = item % n_query_blocks * query_block
        _forward_query_block(q, k, v, scale, causal, mask, has_mask, bias, has_bias,
                             item // n_query_blocks, first_row,
                             min(query_block, q_len - first_row), key_block, out, lse)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _backward_kernel(q, k, v, lse, dout, out_dot_dout, scale, causal, mask, has_mask, bias,
                     has_bias, query_block, key_block, first_item, stop_item, dq_acc, dk, dv):
    """Fill ``dk`` and ``dv`` and add ``dS @ k`` into ``dq_acc`` (N, L, E) for the work items
    (problem, key block) numbered ``first_item`` to ``stop_item - 1``."""
    key_len = k.shape[1]
    n_key_blocks = (key_len + key_block - 1) // key_block
    for item in range(first_item, stop_item):
        n = item // n_key_blocks
        first_key = item % n_key_blocks * key_block
        _backward_key_block(q, k, v, lse, dout, out_dot_dout, scale, causal, mask, has_mask,
                            bias, has_bias, n, first_key, min(key_block, key_len - first_key),
                            query_block, dq_acc[n], dk, dv)
