"""Fused GPU kernels with Numba CUDA: GELU, softmax, layer norm and cross-entropy.

Each op is one launch (layer-norm backward: three) that reads its rows a few times and writes its
outputs once, instead of the several temporaries an expression of array calls would make.

Launch configuration (:data:`THREADS` threads per block, a power of two):

* GELU (exact, with ``erf``), forward and backward: elementwise over the flattened array, a 1-D
  grid of at most :data:`MAX_BLOCKS` blocks and a grid-stride loop.
* Row kernels (softmax, log-softmax, layer norm, cross-entropy): one block per row of an
  ``(N, C)`` array, its threads striding over the row, with tree reductions in shared memory
  (``THREADS`` elements per reduction buffer). Softmax, log-softmax and the cross-entropy's
  log-sum-exp take the row max and the sum of ``exp(x - max)`` in one pass: each thread keeps a
  running max and a sum rescaled whenever the max grows, and the reduction merges ``(max, sum)``
  pairs the same way. Layer norm takes the mean, then the biased variance around it.
* Layer-norm ``dweight`` and ``dbias``: column sums over rows, in two launches with no atomics:
  grid ``(ceil(C / THREADS), P)``, where thread column ``c`` of partition ``p`` sums rows
  ``p, p + P, ...`` into a ``(P, C)`` buffer (``P = min(N, PARTITIONS)``), then one thread per
  column adds the ``P`` partial sums.

Arithmetic is in the input dtype (float32 accumulates in float32). Inputs are CuPy arrays and the
kernels run on CuPy's current stream; NumPy arrays work too (Numba's CUDA simulator runs on
them). Kernels are compiled on first use, once per dtype (and argument types).
"""

import functools
import math
from types import SimpleNamespace

import numpy as np
from numba import cuda, from_dtype

# _empty is looked up in this module at each call, so tests can poison it here.
from .cuda_launch import empty_like_device as _empty
from .cuda_launch import kernel_argument as _device
from .cuda_launch import launch_stream as _stream

THREADS = 256        # threads per block; a power of two (the reductions halve it)
MAX_BLOCKS = 8192    # most blocks of an elementwise launch (a grid-stride loop does the rest)
PARTITIONS = 256     # most row partitions of the layer-norm weight-gradient partial sums


def gelu_forward(x):
    """Exact GELU, ``x * Phi(x)`` with the normal CDF ``Phi(x) = (1 + erf(x / sqrt 2)) / 2``."""
    y = _empty(x.shape, x.dtype, x)
    if x.size:
        _gelu_kernels(x.dtype, THREADS).forward[_flat_grid(x.size), THREADS, _stream(x)](
            _device(x.reshape(-1)), _device(y.reshape(-1)))
    return y


def gelu_backward(x, dy):
    """Gradient of :func:`gelu_forward`: ``dy * (Phi(x) + x * phi(x))``, shaped like ``x``."""
    dx = _empty(x.shape, x.dtype, x)
    if x.size:
        _gelu_kernels(x.dtype, THREADS).backward[_flat_grid(x.size), THREADS, _stream(x)](
            _device(x.reshape(-1)), _device(dy.reshape(-1)), _device(dx.reshape(-1)))
    return dx


def softmax_forward(x, log):
    """Softmax over the last dim of ``x`` (``(N, C)``, or any shape: its rows are the last dim);
    the log-softmax when ``log`` is True."""
    rows = x.reshape(-1, x.shape[-1])                                       # (N, C)
    y = _empty(rows.shape, x.dtype, x)                                      # (N, C)
    if rows.shape[0]:
        _row_kernels(x.dtype, THREADS).softmax_forward[rows.shape[0], THREADS, _stream(x)](
            _device(rows), log, _device(y))
    return y.reshape(x.shape)


def softmax_backward(y, dy, log):
    """Gradient of :func:`softmax_forward` from its output ``y`` and the gradient ``dy``:
    ``y * (dy - sum(dy * y))``, or for log-softmax ``dy - exp(y) * sum(dy)``, over the last dim."""
    rows = y.reshape(-1, y.shape[-1])                                       # (N, C)
    dx = _empty(rows.shape, y.dtype, y)                                     # (N, C)
    if rows.shape[0]:
        _row_kernels(y.dtype, THREADS).softmax_backward[rows.shape[0], THREADS, _stream(y)](
            _device(rows), _device(dy.reshape(rows.shape)), log, _device(dx))
    return dx.reshape(y.shape)


def layer_norm_forward(x, weight, bias, eps):
    """Layer norm over the last dim of ``x (N, C)``: ``(y, mean, rstd)``, with ``mean`` and
    ``rstd = 1 / sqrt(var + eps)`` (biased variance) of shape ``(N,)``, for the backward."""
    n = x.shape[0]
    y = _empty(x.shape, x.dtype, x)
    mean = _empty((n,), x.dtype, x)
    rstd = _empty((n,), x.dtype, x)
    if n:
        _row_kernels(x.dtype, THREADS).layer_norm_forward[n, THREADS, _stream(x)](
            _device(x), _device(x[0] if weight is None else weight),
            _device(x[0] if bias is None else bias), weight is not None, bias is not None,
            x.dtype.type(eps), _device(y), _device(mean), _device(rstd))
    return y, mean, rstd


def layer_norm_backward(dy, x, mean, rstd, weight):
    """Gradients ``(dx, dweight, dbias)`` of :func:`layer_norm_forward`; ``dweight`` and ``dbias``
    (shape ``(C,)``) are None when there is no ``weight``."""
    n, c = x.shape
    stream = _stream(x)
    kernels = _row_kernels(x.dtype, THREADS)
    dx = _empty(x.shape, x.dtype, x)
    if n:
        kernels.layer_norm_backward[n, THREADS, stream](
            _device(dy), _device(x), _device(mean), _device(rstd),
            _device(x[0] if weight is None else weight), weight is not None, _device(dx))
    if weight is None:
        return dx, None, None
    dweight = _empty((c,), x.dtype, x)
    dbias = _empty((c,), x.dtype, x)
    if c:
        parts = min(n, PARTITIONS)
        partial_w = _empty((parts, c), x.dtype, x)
        partial_b = _empty((parts, c), x.dtype, x)
        column_blocks = (c + THREADS - 1) // THREADS
        if parts:
            kernels.layer_norm_partials[(column_blocks, parts), THREADS, stream](
                _device(dy), _device(x), _device(mean), _device(rstd), _device(partial_w),
                _device(partial_b))
        kernels.column_sums[column_blocks, THREADS, stream](
            _device(partial_w), _device(partial_b), _device(dweight), _device(dbias))
    return dx, dweight, dbias


def cross_entropy_forward(logits, target, ignore_index, label_smoothing):
    """Per-row cross-entropy of ``logits (N, V)`` against class indices ``target (N,)`` (int64),
    with label smoothing as in PyTorch: ``(1 - eps)(lse - x_t) + eps (lse - mean(x))``.

    Returns ``(loss_rows, lse)``, both ``(N,)``; ``loss_rows`` is 0 where ``target`` equals
    ``ignore_index``, and NaN where a target is out of range.
    """
    n = logits.shape[0]
    loss = _empty((n,), logits.dtype, logits)
    lse = _empty((n,), logits.dtype, logits)
    if n:
        _row_kernels(logits.dtype, THREADS).cross_entropy_forward[n, THREADS, _stream(logits)](
            _device(logits), _device(target), np.int64(ignore_index),
            logits.dtype.type(label_smoothing), _device(loss), _device(lse))
    return loss, lse


def cross_entropy_backward(logits, target, lse, grad_rows, ignore_index, label_smoothing):
    """Gradient of the per-row losses with respect to ``logits``, in one pass from the saved
    ``lse``: ``grad_i (softmax_ij - (1 - eps)[j = t_i] - eps / V)``, 0 on ignored rows."""
    n = logits.shape[0]
    dlogits = _empty(logits.shape, logits.dtype, logits)
    if n:
        _row_kernels(logits.dtype, THREADS).cross_entropy_backward[n, THREADS, _stream(logits)](
            _device(logits), _device(target), _device(lse), _device(grad_rows),
            np.int64(ignore_index), logits.dtype.type(label_smoothing), _device(dlogits))
    return dlogits


def _flat_grid(size):
    return min(MAX_BLOCKS, (size + THREADS - 1) // THREADS)


@functools.lru_cache(maxsize=None)
def _gelu_kernels(dtype, T):
    """The GELU ``forward`` and ``backward`` kernels over flat arrays of ``dtype``."""
    half, one = dtype.type(0.5), dtype.type(1)
    inv_sqrt2 = dtype.type(1 / math.sqrt(2))
    inv_sqrt_2pi = dtype.type(1 / math.sqrt(2 * math.pi))

    @cuda.jit
    def forward(x, y):
        for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
            v = x[i]
            y[i] = half * v * (one + math.erf(v * inv_sqrt2))

    @cuda.jit
    def backward(x, dy, dx):
        for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
            v = x[i]
            cdf = half * (one + math.erf(v * inv_sqrt2))
            dx[i] = dy[i] * (cdf + v * inv_sqrt_2pi * math.exp(-half * v * v))

    return SimpleNamespace(forward=forward, backward=backward)


@functools.lru_cache(maxsize=None)
def _row_kernels(dtype, T):
    """The row kernels for ``dtype`` and ``T`` threads per block, as attributes named after their
    ops: one block per row, its threads striding over it (see the module docstring)."""
    nb_dtype = from_dtype(dtype)
    zero, one = dtype.type(0), dtype.type(1)
    neg_inf, nan = dtype.type(-np.inf), dtype.type(np.nan)

    @cuda.jit(device=True)
    def block_sum(buffer, value, tid):
        """The sum of ``value`` over the block's threads, returned to every thread."""
        buffer[tid] = value
        cuda.syncthreads()
        step = T // 2
        while step > 0:
            if tid < step:
                buffer[tid] += buffer[tid + step]
            cuda.syncthreads()
            step //= 2
        total = buffer[0]
        cuda.syncthreads()   # the buffer may be reused at once
        return total

    @cuda.jit(device=True)
    def running_max_sum(m, s, v):
        """Add ``v`` to the running max ``m`` and sum ``s`` of ``exp(x - m)``."""
        if v > m:
            return v, s * math.exp(m - v) + one
        if v != neg_inf:     # (-inf adds nothing; NaN makes the sum NaN)
            return m, s + math.exp(v - m)
        return m, s

    @cuda.jit(device=True)
    def block_max_sum(buffer_m, buffer_s, m, s, tid):
        """Merge the threads' ``(max, sum of exp(x - max))`` pairs into the row's, for all."""
        buffer_m[tid] = m
        buffer_s[tid] = s
        cuda.syncthreads()
        step = T // 2
        while step > 0:
            if tid < step:
                m1 = buffer_m[tid]
                m2 = buffer_m[tid + step]
                top = max(m1, m2)
                if top != neg_inf:
                    buffer_s[tid] = (buffer_s[tid] * math.exp(m1 - top)
                                     + buffer_s[tid + step] * math.exp(m2 - top))
                buffer_m[tid] = top
            cuda.syncthreads()
            step //= 2
        m = buffer_m[0]
        s = buffer_s[0]
        cuda.syncthreads()
        return m, s

    @cuda.jit
    def softmax_forward(x, log, y):
        # x, y (N, C)
        row = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        width = x.shape[1]
        buffer_m = cuda.shared.array(T, nb_dtype)
        buffer_s = cuda.shared.array(T, nb_dtype)
        m = neg_inf
        s = zero
        for c in range(tid, width, T):
            m, s = running_max_sum(m, s, x[row, c])
        m, s = block_max_sum(buffer_m, buffer_s, m, s, tid)
        if log:
            shift = m + math.log(s)
            for c in range(tid, width, T):
                y[row, c] = x[row, c] - shift
        else:
            inverse = one / s
            for c in range(tid, width, T):
                y[row, c] = math.exp(x[row, c] - m) * inverse

    @cuda.jit
    def softmax_backward(y, dy, log, dx):
        # y, dy, dx (N, C)
        row = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        width = y.shape[1]
        buffer = cuda.shared.array(T, nb_dtype)
        partial = zero
        for c in range(tid, width, T):
            partial += dy[row, c] if log else dy[row, c] * y[row, c]
        total = block_sum(buffer, partial, tid)
        for c in range(tid, width, T):
            if log:
                dx[row, c] = dy[row, c] - math.exp(y[row, c]) * total
            else:
                dx[row, c] = y[row, c] * (dy[row, c] - total)

    @cuda.jit
    def layer_norm_forward(x, weight, bias, has_weight, has_bias, eps, y, mean, rstd):
        # x, y (N, C); weight, bias (C,) (unread when absent); mean, rstd (N,)
        row = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        width = x.shape[1]
        buffer = cuda.shared.array(T, nb_dtype)
        partial = zero
        for c in range(tid, width, T):
            partial += x[row, c]
        mu = block_sum(buffer, partial, tid) / nb_dtype(width)
        partial = zero
        for c in range(tid, width, T):
            centered = x[row, c] - mu
            partial += centered * centered
        r = one / math.sqrt(block_sum(buffer, partial, tid) / nb_dtype(width) + eps)
        for c in range(tid, width, T):
            value = (x[row, c] - mu) * r
            if has_weight:
                value *= weight[c]
            if has_bias:
                value += bias[c]
            y[row, c] = value
        if tid == 0:
            mean[row] = mu
            rstd[row] = r

    @cuda.jit
    def layer_norm_backward(dy, x, mean, rstd, weight, has_weight, dx):
        # dy, x, dx (N, C); mean, rstd (N,); weight (C,) (unread when absent)
        # dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * weight
        row = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        width = x.shape[1]
        buffer = cuda.shared.array(T, nb_dtype)
        mu = mean[row]
        r = rstd[row]
        sum_g = zero
        sum_gx = zero
        for c in range(tid, width, T):
            g = dy[row, c] * weight[c] if has_weight else dy[row, c]
            sum_g += g
            sum_gx += g * (x[row, c] - mu) * r
        mean_g = block_sum(buffer, sum_g, tid) / nb_dtype(width)
        mean_gx = block_sum(buffer, sum_gx, tid) / nb_dtype(width)
        for c in range(tid, width, T):
            g = dy[row, c] * weight[c] if has_weight else dy[row, c]
            dx[row, c] = r * (g - mean_g - (x[row, c] - mu) * r * mean_gx)

    @cuda.jit
    def layer_norm_partials(dy, x, mean, rstd, partial_w, partial_b):
        # dy, x (N, C); partial_w, partial_b (P, C): sums over rows p, p + P, ...
        c = cuda.blockIdx.x * T + cuda.threadIdx.x
        part = cuda.blockIdx.y
        parts = partial_w.shape[0]
        if c < x.shape[1]:
            sum_w = zero
            sum_b = zero
            for row in range(part, x.shape[0], parts):
                g = dy[row, c]
                sum_w += g * (x[row, c] - mean[row]) * rstd[row]
                sum_b += g
            partial_w[part, c] = sum_w
            partial_b[part, c] = sum_b

    @cuda.jit
    def column_sums(partial_w, partial_b, dweight, dbias):
        # partial_w, partial_b (P, C) -> dweight, dbias (C,)
        c = cuda.blockIdx.x * T + cuda.threadIdx.x
        if c < dweight.shape[0]:
            sum_w = zero
            sum_b = zero
            for part in range(partial_w.shape[0]):
                sum_w += partial_w[part, c]
                sum_b += partial_b[part, c]
            dweight[c] = sum_w
            dbias[c] = sum_b

    @cuda.jit
    def cross_entropy_forward(logits, target, ignore_index, smoothing, loss, lse):
        # logits (N, V); target (N,) int64; loss, lse (N,)
        row = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        classes = logits.shape[1]
        buffer_m = cuda.shared.array(T, nb_dtype)
        buffer_s = cuda.shared.array(T, nb_dtype)
        m = neg_inf
        s = zero
        partial = zero   # sum of the logits, for the smoothing term
        for c in range(tid, classes, T):
            v = logits[row, c]
            m, s = running_max_sum(m, s, v)
            partial += v
        m, s = block_max_sum(buffer_m, buffer_s, m, s, tid)
        total = block_sum(buffer_s, partial, tid)
        if tid == 0:
            row_lse = m + math.log(s)
            lse[row] = row_lse
            t = target[row]
            if t == ignore_index:
                loss[row] = zero
            else:
                picked = logits[row, t] if 0 <= t < classes else nan
                loss[row] = ((one - smoothing) * (row_lse - picked)
                             + smoothing * (row_lse - total / nb_dtype(classes)))

    @cuda.jit
    def cross_entropy_backward(logits, target, lse, grad, ignore_index, smoothing, dlogits):
        # logits, dlogits (N, V); target (N,) int64; lse, grad (N,)
        row = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        classes = logits.shape[1]
        t = target[row]
        if t == ignore_index:
            for c in range(tid, classes, T):
                dlogits[row, c] = zero
        else:
            g = grad[row]
            row_lse = lse[row]
            uniform = smoothing / nb_dtype(classes)
            for c in range(tid, classes, T):
                d = math.exp(logits[row, c] - row_lse) - uniform
                if c == t:
                    d -= one - smoothing
                dlogits[row, c] = g * d

    return SimpleNamespace(
        softmax_forward=softmax_forward, softmax_backward=softmax_backward,
        layer_norm_forward=layer_norm_forward, layer_norm_backward=layer_norm_backward,
        layer_norm_partials=layer_norm_partials, column_sums=column_sums,
        cross_entropy_forward=cross_entropy_forward,
        cross_entropy_backward=cross_entropy_backward)
