"""Fused scaled-dot-product attention on the GPU (FlashAttention-2 style), with Numba CUDA.

For each of the ``N`` (batch * heads) problems, with scores ``s_ij = scale * q_i . k_j + bias_ij``
(``-inf`` where ``mask`` is False or, when causal, where ``j > i``)::

    out_i = sum_j softmax_j(s_i) v_j          lse_i = log sum_j exp(s_ij)

No ``L x S`` matrix is ever stored: the kernels walk the keys (or queries) one tile at a time.

Forward (one launch, grid ``(ceil(L / B), N)``): a block owns ``B`` query rows. It copies its
query tile to shared memory, then for each key tile: copies the keys, computes the ``B x B``
score tile, copies the values over the keys, and updates the online softmax, one thread per
query row: the running row max ``m``, the running row sum ``l`` of ``exp(s - m)``, and
``alpha = exp(m_old - m_new)``, the factor that rescales the output accumulated so far. Each
thread keeps a fixed set of ``(row, feature)`` output accumulators in registers. At the end
``out = acc / l`` and ``lse = m + log(l)``; a row whose every key is masked has ``l = 0`` and
gets ``out = 0`` and ``lse = -inf``. When causal, key tiles wholly right of the diagonal are
skipped.

Backward (two launches, no atomics), with ``P = exp(S - lse)`` recomputed tile by tile from the
saved ``lse`` and ``D_i = dout_i . out_i``::

    dS = P * (dout v^T - D)     dq = scale dS k     dk = scale dS^T q     dv = P^T dout

1. Over query tiles, grid ``(ceil(L / B), N)``: computes ``D`` for its rows (and saves it for
   launch 2), then walks the key tiles accumulating ``dq`` in registers.
2. Over key tiles, grid ``(ceil(S / B), N)``: walks the query tiles (when causal, only those at
   or below the diagonal) accumulating ``dk`` and ``dv`` in registers.

Tiles are square (``B`` query rows, ``B`` key rows) and sized per pass, dtype and head size: the
largest power of two up to :data:`MAX_BLOCK` whose shared memory stays within
:data:`SHARED_MEMORY_LIMIT` (48 KiB, the static limit per block). Feature rows in shared memory
have room for ``D = max(E, Ev)`` rounded up to a multiple of 16, plus one padding column so that
threads reading different rows of a column hit different banks. With ``D = 64`` the tile is 32
in every pass in float32 (float64: 32 forward, 16 backward); with ``D = 128`` it is 32 forward and
16 backward in float32 (float64: 16 and 8).
Blocks have :data:`THREADS` threads, which loop over tile elements with a block-wide stride.
Arithmetic is in the input dtype (float32 accumulates in float32).

Arrays: ``q (N, L, E)``, ``k (N, S, E)``, ``v (N, S, Ev)`` C-contiguous float32 or float64;
``mask`` a bool ``(N, L, S)`` array (True = the key takes part) and ``bias`` a float ``(N, L, S)``
array, either of which may be a broadcast view with zero strides. Inputs are CuPy arrays, and the
kernels run on CuPy's current stream; NumPy arrays work too (Numba's CUDA simulator runs on
them). Kernels are compiled on first use, once per dtype, tile and padded head size.
"""

import functools
import math

import numpy as np
from numba import cuda, from_dtype

# _empty is looked up in this module at each call, so tests can poison it here.
from .cuda_launch import empty_like_device as _empty
from .cuda_launch import kernel_argument as _device
from .cuda_launch import launch_stream as _stream

THREADS = 128                   # threads per block
MAX_BLOCK = 32                  # largest query/key tile tried (rows)
SHARED_MEMORY_LIMIT = 48 * 1024  # bytes of static shared memory per block
MAX_GRID_Y = 65535              # CUDA's limit on gridDim.y, which counts the N problems


def attention_forward(q, k, v, scale, causal, mask=None, bias=None):
    """Attention output ``(N, L, Ev)`` and row log-sum-exp ``(N, L)``, both in ``q``'s dtype.

    For example, with CuPy arrays ``q`` of shape (8, 128, 64) and ``k``, ``v`` of shape
    (8, 256, 64), ``attention_forward(q, k, v, 0.125, False)`` returns ``out`` (8, 128, 64) and
    ``lse`` (8, 128).
    """
    _check(q, k, v, mask, bias)
    n, length, e = q.shape
    ev = v.shape[2]
    out = _empty((n, length, ev), q.dtype, q)
    lse = _empty((n, length), q.dtype, q)
    if n * length == 0:
        return out, lse
    d = _padded_dim(e, ev)
    b = _tile("forward", d, q.dtype.itemsize)
    kernel = _forward_kernel(q.dtype, d, b, THREADS)
    stream = _stream(q)
    for part in _batches(n):
        args = _arguments((q, k, v), mask, bias, part)
        kernel[(_blocks(length, b), part.stop - part.start), THREADS, stream](
            *args, q.dtype.type(scale), causal, _device(out[part]), _device(lse[part]))
    return out, lse


def attention_backward(q, k, v, out, lse, dout, scale, causal, mask=None, bias=None):
    """Gradients ``(dq, dk, dv)`` of attention, shaped like ``q``, ``k``, ``v``.

    ``out`` and ``lse`` are :func:`attention_forward`'s results for the same inputs, ``dout`` the
    gradient of ``out``. Rows whose every key is masked get zero gradients.
    """
    _check(q, k, v, mask, bias)
    n, length, e = q.shape
    s, ev = v.shape[1], v.shape[2]
    dq = _empty(q.shape, q.dtype, q)
    dk = _empty(k.shape, q.dtype, q)
    dv = _empty(v.shape, q.dtype, q)
    delta = _empty((n, length), q.dtype, q)   # D = rowsum(dout * out), written by launch 1
    d = _padded_dim(e, ev)
    b_q = _tile("dq", d, q.dtype.itemsize)
    b_kv = _tile("dkv", d, q.dtype.itemsize)
    dq_kernel = _dq_kernel(q.dtype, d, b_q, THREADS)
    dkv_kernel = _dkv_kernel(q.dtype, d, b_kv, THREADS)
    stream = _stream(q)
    scale = q.dtype.type(scale)
    for part in _batches(n):
        args = _arguments((q, k, v), mask, bias, part)
        saved = [_device(a[part]) for a in (out, lse, dout, delta)]
        count = part.stop - part.start
        if length:
            dq_kernel[(_blocks(length, b_q), count), THREADS, stream](
                *args, *saved, scale, causal, _device(dq[part]))
        if s:
            dkv_kernel[(_blocks(s, b_kv), count), THREADS, stream](
                *args, *saved, scale, causal, _device(dk[part]), _device(dv[part]))
    return dq, dk, dv


def _check(q, k, v, mask, bias):
    """Check the dtypes and shapes of the inputs."""
    if q.dtype not in (np.float32, np.float64) or k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"attention: q, k, v must share one dtype, float32 or float64, got "
                        f"{q.dtype}, {k.dtype}, {v.dtype}")
    if (q.ndim, k.ndim, v.ndim) != (3, 3, 3) or k.shape[0] != q.shape[0] \
            or k.shape[2] != q.shape[2] or v.shape[:2] != k.shape[:2]:
        raise ValueError(f"attention: shapes q (N, L, E), k (N, S, E), v (N, S, Ev) expected, "
                         f"got {q.shape}, {k.shape}, {v.shape}")
    scores = q.shape[:2] + k.shape[1:2]
    for name, a in (("mask", mask), ("bias", bias)):
        if a is not None and a.shape != scores:
            raise ValueError(f"attention: {name} has shape {a.shape}, expected {scores}")


def _arguments(qkv, mask, bias, part):
    """``q, k, v, mask, bias, has_mask, has_bias`` for the problems in slice ``part``; an absent
    mask or bias is replaced by ``q``, which the kernel then never reads."""
    q = qkv[0]
    arrays = [a[part] for a in qkv]
    arrays += [q[part] if mask is None else mask[part], q[part] if bias is None else bias[part]]
    return [_device(a) for a in arrays] + [mask is not None, bias is not None]


def _batches(n):
    """Slices of the ``n`` problems, each small enough for the grid's y dimension."""
    return [slice(start, min(n, start + MAX_GRID_Y)) for start in range(0, n, MAX_GRID_Y)]


def _blocks(rows, tile):
    return (rows + tile - 1) // tile


def _padded_dim(e, ev):
    """Feature slots per shared-memory row: ``max(e, ev)`` rounded up to a multiple of 16."""
    return 16 * max(1, (max(e, ev) + 15) // 16)


def _shared_bytes(pass_name, b, d, itemsize):
    """Static shared memory of one block of a pass with tile ``b`` and padded head size ``d``."""
    row = b * (d + 1)
    elements = {
        "forward": 2 * row + b * (b + 1) + 3 * b,   # q, k/v, scores, m, l, alpha
        "dq": 4 * row + b * b + 2 * b,              # q, dout, k, v, dS, lse, D
        "dkv": 4 * row + 2 * b * b + 2 * b,         # k, v, q, dout, P, dS, lse, D
    }[pass_name]
    return elements * itemsize


def _tile(pass_name, d, itemsize):
    """The largest tile, halving from ``min(MAX_BLOCK, THREADS)``, whose shared memory fits."""
    b = min(MAX_BLOCK, THREADS)
    while b >= 1:
        if _shared_bytes(pass_name, b, d, itemsize) <= SHARED_MEMORY_LIMIT:
            return b
        b //= 2
    raise ValueError(f"attention: head size {d} is too large for {SHARED_MEMORY_LIMIT} bytes "
                     "of shared memory per block")


@functools.lru_cache(maxsize=None)
def _forward_kernel(dtype, D, B, T):
    """The forward kernel for ``dtype``, padded head size ``D``, tile ``B`` and ``T`` threads."""
    nb_dtype = from_dtype(dtype)
    zero, one, neg_inf = dtype.type(0), dtype.type(1), dtype.type(-np.inf)
    DP = D + 1                 # shared row length: one padding column against bank conflicts
    BP = B + 1                 # score row length, padded for the row-per-thread softmax
    NACC = -(-B * D // T)      # output accumulators per thread

    @cuda.jit
    def forward(q, k, v, mask, bias, has_mask, has_bias, scale, causal, out, lse):
        n = cuda.blockIdx.y
        q0 = cuda.blockIdx.x * B
        tid = cuda.threadIdx.x
        length, s_len, e, ev = q.shape[1], k.shape[1], q.shape[2], v.shape[2]
        qn = min(B, length - q0)

        q_tile = cuda.shared.array((B, DP), nb_dtype)    # (query row, feature)
        kv_tile = cuda.shared.array((B, DP), nb_dtype)   # (key row, feature): k, then v
        p_tile = cuda.shared.array((B, BP), nb_dtype)    # scores, then probabilities
        row_max = cuda.shared.array(B, nb_dtype)
        row_sum = cuda.shared.array(B, nb_dtype)
        row_alpha = cuda.shared.array(B, nb_dtype)
        acc = cuda.local.array(NACC, nb_dtype)            # out[i, f] with i, f = divmod(., D)

        for idx in range(tid, qn * e, T):
            i = idx // e
            q_tile[i, idx - i * e] = q[n, q0 + i, idx - i * e]
        if tid < B:
            row_max[tid] = neg_inf
            row_sum[tid] = zero
        for r in range(NACC):
            acc[r] = zero

        key_end = min(s_len, q0 + qn) if causal else s_len
        for k0 in range(0, key_end, B):
            kn = min(B, s_len - k0)
            cuda.syncthreads()   # the previous tile's readers are done with kv_tile and p_tile
            for idx in range(tid, kn * e, T):
                j = idx // e
                kv_tile[j, idx - j * e] = k[n, k0 + j, idx - j * e]
            cuda.syncthreads()
            for idx in range(tid, qn * kn, T):
                i = idx // kn
                j = idx - i * kn
                qi = q0 + i
                kj = k0 + j
                if (causal and kj > qi) or (has_mask and not mask[n, qi, kj]):
                    p_tile[i, j] = neg_inf
                else:
                    dot = zero
                    for f in range(e):
                        dot += q_tile[i, f] * kv_tile[j, f]
                    score = dot * scale
                    if has_bias:
                        score += bias[n, qi, kj]
                    p_tile[i, j] = score
            cuda.syncthreads()
            for idx in range(tid, kn * ev, T):
                j = idx // ev
                kv_tile[j, idx - j * ev] = v[n, k0 + j, idx - j * ev]
            if tid < qn:   # online softmax, one thread per query row
                m_old = row_max[tid]
                m_new = m_old
                for j in range(kn):
                    m_new = max(m_new, p_tile[tid, j])
                alpha = one
                if m_new == neg_inf:   # every key so far masked: nothing to add
                    for j in range(kn):
                        p_tile[tid, j] = zero
                else:
                    alpha = math.exp(m_old - m_new)
                    total = zero
                    for j in range(kn):
                        p = math.exp(p_tile[tid, j] - m_new)
                        p_tile[tid, j] = p
                        total += p
                    row_sum[tid] = row_sum[tid] * alpha + total
                row_max[tid] = m_new
                row_alpha[tid] = alpha
            cuda.syncthreads()
            for r in range(NACC):
                idx = tid + r * T
                i = idx // D
                f = idx - i * D
                if i < qn and f < ev:
                    a = acc[r] * row_alpha[i]
                    for j in range(kn):
                        a += p_tile[i, j] * kv_tile[j, f]
                    acc[r] = a

        cuda.syncthreads()
        for r in range(NACC):
            idx = tid + r * T
            i = idx // D
            f = idx - i * D
            if i < qn and f < ev:
                total = row_sum[i]
                out[n, q0 + i, f] = acc[r] / total if total > zero else zero
        if tid < qn:
            total = row_sum[tid]
            lse[n, q0 + tid] = row_max[tid] + math.log(total) if total > zero else neg_inf

    return forward


@functools.lru_cache(maxsize=None)
def _dq_kernel(dtype, D, B, T):
    """Backward launch 1, over query tiles: ``D = rowsum(dout * out)`` and ``dq``."""
    nb_dtype = from_dtype(dtype)
    zero, neg_inf = dtype.type(0), dtype.type(-np.inf)
    DP = D + 1
    NACC = -(-B * D // T)      # dq accumulators per thread

    @cuda.jit
    def dq_kernel(q, k, v, mask, bias, has_mask, has_bias, out, lse, dout, delta, scale, causal,
                  dq):
        n = cuda.blockIdx.y
        q0 = cuda.blockIdx.x * B
        tid = cuda.threadIdx.x
        length, s_len, e, ev = q.shape[1], k.shape[1], q.shape[2], v.shape[2]
        qn = min(B, length - q0)

        q_tile = cuda.shared.array((B, DP), nb_dtype)
        do_tile = cuda.shared.array((B, DP), nb_dtype)
        k_tile = cuda.shared.array((B, DP), nb_dtype)
        v_tile = cuda.shared.array((B, DP), nb_dtype)
        ds_tile = cuda.shared.array((B, B), nb_dtype)    # (query, key) dS
        row_lse = cuda.shared.array(B, nb_dtype)
        row_delta = cuda.shared.array(B, nb_dtype)
        acc = cuda.local.array(NACC, nb_dtype)            # dq[i, f] with i, f = divmod(., D)

        for idx in range(tid, qn * e, T):
            i = idx // e
            q_tile[i, idx - i * e] = q[n, q0 + i, idx - i * e]
        for idx in range(tid, qn * ev, T):
            i = idx // ev
            do_tile[i, idx - i * ev] = dout[n, q0 + i, idx - i * ev]
        for r in range(NACC):
            acc[r] = zero
        cuda.syncthreads()
        if tid < qn:
            total = zero
            for f in range(ev):
                total += do_tile[tid, f] * out[n, q0 + tid, f]
            row_delta[tid] = total
            delta[n, q0 + tid] = total
            row_lse[tid] = lse[n, q0 + tid]

        key_end = min(s_len, q0 + qn) if causal else s_len
        for k0 in range(0, key_end, B):
            kn = min(B, s_len - k0)
            cuda.syncthreads()
            for idx in range(tid, kn * e, T):
                j = idx // e
                k_tile[j, idx - j * e] = k[n, k0 + j, idx - j * e]
            for idx in range(tid, kn * ev, T):
                j = idx // ev
                v_tile[j, idx - j * ev] = v[n, k0 + j, idx - j * ev]
            cuda.syncthreads()
            for idx in range(tid, qn * kn, T):
                i = idx // kn
                j = idx - i * kn
                qi = q0 + i
                kj = k0 + j
                ds = zero
                if not ((causal and kj > qi) or (has_mask and not mask[n, qi, kj])
                        or row_lse[i] == neg_inf):
                    dot = zero
                    for f in range(e):
                        dot += q_tile[i, f] * k_tile[j, f]
                    score = dot * scale
                    if has_bias:
                        score += bias[n, qi, kj]
                    p = math.exp(score - row_lse[i])
                    dp = zero
                    for f in range(ev):
                        dp += do_tile[i, f] * v_tile[j, f]
                    ds = p * (dp - row_delta[i])
                ds_tile[i, j] = ds
            cuda.syncthreads()
            for r in range(NACC):
                idx = tid + r * T
                i = idx // D
                f = idx - i * D
                if i < qn and f < e:
                    a = acc[r]
                    for j in range(kn):
                        a += ds_tile[i, j] * k_tile[j, f]
                    acc[r] = a

        for r in range(NACC):
            idx = tid + r * T
            i = idx // D
            f = idx - i * D
            if i < qn and f < e:
                dq[n, q0 + i, f] = acc[r] * scale

    return dq_kernel


@functools.lru_cache(maxsize=None)
def _dkv_kernel(dtype, D, B, T):
    """Backward launch 2, over key tiles: ``dk`` and ``dv`` (reads the ``D`` of launch 1)."""
    nb_dtype = from_dtype(dtype)
    zero, neg_inf = dtype.type(0), dtype.type(-np.inf)
    DP = D + 1
    NACC = -(-B * D // T)      # dk (and dv) accumulators per thread

    @cuda.jit
    def dkv_kernel(q, k, v, mask, bias, has_mask, has_bias, out, lse, dout, delta, scale, causal,
                   dk, dv):
        n = cuda.blockIdx.y
        k0 = cuda.blockIdx.x * B
        tid = cuda.threadIdx.x
        length, s_len, e, ev = q.shape[1], k.shape[1], q.shape[2], v.shape[2]
        kn = min(B, s_len - k0)

        k_tile = cuda.shared.array((B, DP), nb_dtype)
        v_tile = cuda.shared.array((B, DP), nb_dtype)
        q_tile = cuda.shared.array((B, DP), nb_dtype)
        do_tile = cuda.shared.array((B, DP), nb_dtype)
        p_tile = cuda.shared.array((B, B), nb_dtype)     # (query, key) P
        ds_tile = cuda.shared.array((B, B), nb_dtype)    # (query, key) dS
        row_lse = cuda.shared.array(B, nb_dtype)
        row_delta = cuda.shared.array(B, nb_dtype)
        dk_acc = cuda.local.array(NACC, nb_dtype)         # dk[j, f] with j, f = divmod(., D)
        dv_acc = cuda.local.array(NACC, nb_dtype)         # dv[j, f] likewise

        for idx in range(tid, kn * e, T):
            j = idx // e
            k_tile[j, idx - j * e] = k[n, k0 + j, idx - j * e]
        for idx in range(tid, kn * ev, T):
            j = idx // ev
            v_tile[j, idx - j * ev] = v[n, k0 + j, idx - j * ev]
        for r in range(NACC):
            dk_acc[r] = zero
            dv_acc[r] = zero

        # causal: query i sees key j only when i >= j, so query tiles start at this key tile
        for q0 in range(k0 if causal else 0, length, B):
            qn = min(B, length - q0)
            cuda.syncthreads()
            for idx in range(tid, qn * e, T):
                i = idx // e
                q_tile[i, idx - i * e] = q[n, q0 + i, idx - i * e]
            for idx in range(tid, qn * ev, T):
                i = idx // ev
                do_tile[i, idx - i * ev] = dout[n, q0 + i, idx - i * ev]
            if tid < qn:
                row_lse[tid] = lse[n, q0 + tid]
                row_delta[tid] = delta[n, q0 + tid]
            cuda.syncthreads()
            for idx in range(tid, qn * kn, T):
                i = idx // kn
                j = idx - i * kn
                qi = q0 + i
                kj = k0 + j
                p = zero
                ds = zero
                if not ((causal and kj > qi) or (has_mask and not mask[n, qi, kj])
                        or row_lse[i] == neg_inf):
                    dot = zero
                    for f in range(e):
                        dot += q_tile[i, f] * k_tile[j, f]
                    score = dot * scale
                    if has_bias:
                        score += bias[n, qi, kj]
                    p = math.exp(score - row_lse[i])
                    dp = zero
                    for f in range(ev):
                        dp += do_tile[i, f] * v_tile[j, f]
                    ds = p * (dp - row_delta[i])
                p_tile[i, j] = p
                ds_tile[i, j] = ds
            cuda.syncthreads()
            for r in range(NACC):
                idx = tid + r * T
                j = idx // D
                f = idx - j * D
                if j < kn:
                    if f < ev:
                        a = dv_acc[r]
                        for i in range(qn):
                            a += p_tile[i, j] * do_tile[i, f]
                        dv_acc[r] = a
                    if f < e:
                        a = dk_acc[r]
                        for i in range(qn):
                            a += ds_tile[i, j] * q_tile[i, f]
                        dk_acc[r] = a

        for r in range(NACC):
            idx = tid + r * T
            j = idx // D
            f = idx - j * D
            if j < kn:
                if f < ev:
                    dv[n, k0 + j, f] = dv_acc[r]
                if f < e:
                    dk[n, k0 + j, f] = dk_acc[r] * scale

    return dkv_kernel
