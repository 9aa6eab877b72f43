"""Fused CPU kernels compiled by Numba: GELU, row softmax / log-softmax, layer norm and
cross-entropy from logits, each forward and backward.

Each op is one pass (or two) over its rows instead of the five to ten NumPy calls and temporary
arrays of its composed version in ``tinynlm.ops``; that composed version stays as the reference
these kernels are tested against. Large calls are cut into blocks of elements or rows that all
cores take in turn (Python threads over code that releases the GIL, as the attention kernels).
float32 inputs keep float32 outputs; softmax and cross-entropy accumulate their row statistics
(max, sums) in float64, layer norm in float32 with reassociated (vector) partial sums.

Outputs are allocated by :func:`_empty` and handed to the compiled kernels, so a test can poison
them (fill with NaN) and catch any element a kernel fails to write. The kernels compile on first
use and are cached on disk (Numba's ``cache=True``) for later processes.
"""

import math

import numba
import numpy as np

from . import cpu_cores
from .cpu_math import exp_in_place
from .cpu_parallel import run_in_threads

# A block of work handed to a thread: large enough that waking the thread is a small part of
# it. A wake-up takes tens to hundreds of microseconds (more right after an OpenBLAS call): with
# blocks of 2**16 elements, layer norm over (2048, 128) took twice as long on two threads as on
# one inside a GPT training step.
ELEMENTS_PER_BLOCK = 2**18
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _empty(shape, dtype):
    """Every output array of this module comes from here (tests poison it)."""
    return np.empty(shape, dtype)


def _blocks(elements, items=None):
    """How many blocks to cut a call of ``elements`` numbers (``items`` rows, or elements) into
    for :func:`~tinynlm.kernels.cpu_parallel.run_in_threads`: one (the calling thread) for small
    calls, up to four per core for large ones."""
    blocks = max(1, min(4 * cpu_cores(), elements // ELEMENTS_PER_BLOCK))
    return min(blocks, elements if items is None else items)


def _rows(x):
    """``x`` as a C-contiguous (N, C) array over its last dim."""
    return np.ascontiguousarray(x).reshape(-1, x.shape[-1])


def _run_rows(run, rows, elements):
    """``run(first, stop)`` over blocks of the ``rows`` (or elements) of a call of ``elements``
    numbers, on all cores for long calls (:func:`_blocks`)."""
    run_in_threads(lambda thread, first, stop: run(first, stop), rows, _blocks(elements, rows),
                   blas=False)


# ----------------------------------------------------------------------------- GELU


# float64 uses libm's erf and exp, one element at a time. For float32, whose outputs need only
# about 1e-6 relative accuracy, erf is Abramowitz & Stegun's 7.1.28 (|error| <= 3e-7, plain
# arithmetic, so LLVM vectorises the loop) and the backward's exp is the polynomial of
# ``cpu_math``: about ten times faster than libm per element.
_ERF_COEFFICIENTS = (0.0705230784, 0.0422820123, 0.0092705272, 0.0001520143, 0.0002765672,
                     0.0000430638)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _gelu_forward_float64(x, y, first, stop):
    x, y = x[first:stop], y[first:stop]
    for i in range(x.size):
        value = x[i]
        y[i] = 0.5 * value * (1.0 + math.erf(value * _INV_SQRT2))


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _gelu_backward_float64(x, dy, dx, first, stop):
    x, dy, dx = x[first:stop], dy[first:stop], dx[first:stop]
    for i in range(x.size):
        value = x[i]
        cdf = 0.5 * (1.0 + math.erf(value * _INV_SQRT2))
        pdf = math.exp(-0.5 * value * value) * _INV_SQRT_2PI
        dx[i] = dy[i] * (cdf + value * pdf)


@numba.njit(inline="always", error_model="numpy")
def _normal_cdf_float32(value):
    """Phi(value) = (1 + erf(value / sqrt 2)) / 2 in float32 arithmetic."""
    a1, a2, a3, a4, a5, a6 = _ERF_COEFFICIENTS
    z = abs(value) * np.float32(_INV_SQRT2)
    poly = np.float32(1) + z * (np.float32(a1) + z * (np.float32(a2) + z * (
        np.float32(a3) + z * (np.float32(a4) + z * (np.float32(a5) + z * np.float32(a6))))))
    poly2 = poly * poly
    poly4 = poly2 * poly2
    poly8 = poly4 * poly4
    erf_abs = np.float32(1) - np.float32(1) / (poly8 * poly8)   # 1 - poly^-16
    erf = erf_abs if value >= 0 else -erf_abs
    return np.float32(0.5) * (np.float32(1) + erf)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _gelu_forward_float32(x, y, first, stop):
    x, y = x[first:stop], y[first:stop]
    for i in range(x.size):
        y[i] = x[i] * _normal_cdf_float32(x[i])


GELU_TILE = 1024  # elements whose exp(-x^2 / 2) is computed at once, in L1-resident scratch


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _gelu_backward_float32(x, dy, dx, first, stop):
    """One pass over tiles of the slice: exp(-x^2 / 2) into a small scratch with the vectorised
    polynomial exp (``cpu_math``), then ``dx``. (Loops over slices: LLVM leaves a loop over
    ``range(first, stop)`` of the whole arrays scalar, 2-3x slower.)"""
    gaussian = np.empty(GELU_TILE, np.float32)
    bits = np.empty(GELU_TILE, np.int32)     # scratch of exp_in_place
    for start in range(first, stop, GELU_TILE):
        end = min(start + GELU_TILE, stop)
        values, grads, out = x[start:end], dy[start:end], dx[start:end]
        pdf = gaussian[:end - start]
        for i in range(pdf.size):
            pdf[i] = np.float32(-0.5) * values[i] * values[i]
        exp_in_place(pdf, np.float32(0), bits)
        for i in range(pdf.size):
            value = values[i]
            out[i] = grads[i] * (_normal_cdf_float32(value)
                                 + value * pdf[i] * np.float32(_INV_SQRT_2PI))


def gelu_forward(x):
    """Exact GELU ``x * Phi(x)`` elementwise, any shape.

    >>> round(float(gelu_forward(np.array([1.0]))[0]), 4)
    0.8413
    """
    flat = np.ascontiguousarray(x).reshape(-1)
    y = _empty(flat.shape, x.dtype)
    kernel = _gelu_forward_float32 if x.dtype == np.float32 else _gelu_forward_float64
    _run_rows(lambda first, stop: kernel(flat, y, first, stop), flat.size, flat.size)
    return y.reshape(x.shape)


def gelu_backward(x, dy):
    """The gradient of :func:`gelu_forward`: ``dy * (Phi(x) + x * phi(x))``.

    >>> round(float(gelu_backward(np.array([0.0]), np.array([1.0]))[0]), 4)
    0.5
    """
    flat = np.ascontiguousarray(x).reshape(-1)
    dx = _empty(flat.shape, x.dtype)
    dy = np.ascontiguousarray(dy, dtype=x.dtype).reshape(-1)
    kernel = _gelu_backward_float32 if x.dtype == np.float32 else _gelu_backward_float64
    _run_rows(lambda first, stop: kernel(flat, dy, dx, first, stop), flat.size, flat.size)
    return dx.reshape(x.shape)


# ----------------------------------------------------------------------------- softmax


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath={"reassoc", "nsz"})
def _softmax_forward(x, y, log, first, stop):
    columns = x.shape[1]
    for row in range(first, stop):
        row_max = -np.inf
        for j in range(columns):
            row_max = max(row_max, x[row, j])
        if not np.isfinite(row_max):  # all -inf (or +inf/NaN present): no shift, as composed
            row_max = 0.0
        total = 0.0
        for j in range(columns):
            total += math.exp(x[row, j] - row_max)
        if log:
            log_total = math.log(total) + row_max
            for j in range(columns):
                y[row, j] = x[row, j] - log_total
        else:
            for j in range(columns):
                y[row, j] = math.exp(x[row, j] - row_max) / total


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath={"reassoc", "nsz"})
def _softmax_backward(y, dy, dx, log, first, stop):
    columns = y.shape[1]
    for row in range(first, stop):
        total = 0.0
        if log:
            for j in range(columns):
                total += dy[row, j]
            for j in range(columns):
                dx[row, j] = dy[row, j] - math.exp(y[row, j]) * total
        else:
            for j in range(columns):
                total += dy[row, j] * y[row, j]
            for j in range(columns):
                dx[row, j] = y[row, j] * (dy[row, j] - total)


def softmax_forward(x, log):
    """Softmax (``log=False``) or log-softmax (``log=True``) over the last dim.

    >>> softmax_forward(np.array([[0.0, 0.0]]), log=False).tolist()
    [[0.5, 0.5]]
    """
    rows = _rows(x)                                                         # (N, C)
    y = _empty(rows.shape, x.dtype)                                         # (N, C)
    _run_rows(lambda first, stop: _softmax_forward(rows, y, log, first, stop), rows.shape[0],
              rows.size)
    return y.reshape(x.shape)


def softmax_backward(y, dy, log):
    """The input gradient of :func:`softmax_forward` from its output ``y`` and ``dy``.

    >>> softmax_backward(np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]]), log=False).tolist()
    [[0.25, -0.25]]
    """
    rows = _rows(y)                                                         # (N, C)
    grad_rows = _rows(dy.astype(y.dtype, copy=False))                      # (N, C)
    dx = _empty(rows.shape, y.dtype)                                        # (N, C)
    _run_rows(lambda first, stop: _softmax_backward(rows, grad_rows, dx, log, first, stop),
              rows.shape[0], rows.size)
    return dx.reshape(y.shape)


# ----------------------------------------------------------------------------- layer norm


# The arithmetic stays in x's dtype, so that LLVM works on float32 rows in full-width vector
# registers (row sums with reassociation: several partial sums, more accurate than one running
# float32 sum); the column sums of dweight and dbias, over many rows, are flushed into float64
# every ROWS_PER_FLUSH rows. ``constants`` holds (0, 1, eps, 1 / C) in x's dtype, since Numba
# promotes float32 arithmetic with a Python int or float to float64. Accuracy matches PyTorch's
# float32 kernel for the usual widths; for very wide rows far from zero it is a few times worse
# (65,536 columns around 1e3: 2.4e-4 absolute against PyTorch's 7e-5).
ROWS_PER_FLUSH = 32


def _layer_norm_constants(dtype, columns, eps=0.0):
    return np.array([0, 1, eps, 1 / max(columns, 1)], dtype)  # no rows to average if C is 0


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath={"reassoc", "nsz"})
def _layer_norm_forward(x, weight, bias, constants, first, stop, y, mean, rstd):
    columns = x.shape[1]
    zero, one, eps, inv_columns = constants[0], constants[1], constants[2], constants[3]
    for row in range(first, stop):
        values, out = x[row], y[row]
        total = zero
        for j in range(columns):
            total += values[j]
        row_mean = total * inv_columns
        squares = zero
        for j in range(columns):
            centered = values[j] - row_mean
            squares += centered * centered
        row_rstd = one / math.sqrt(squares * inv_columns + eps)
        mean[row], rstd[row] = row_mean, row_rstd
        if weight.size and bias.size:
            for j in range(columns):
                out[j] = (values[j] - row_mean) * row_rstd * weight[j] + bias[j]
        elif weight.size:
            for j in range(columns):
                out[j] = (values[j] - row_mean) * row_rstd * weight[j]
        elif bias.size:
            for j in range(columns):
                out[j] = (values[j] - row_mean) * row_rstd + bias[j]
        else:
            for j in range(columns):
                out[j] = (values[j] - row_mean) * row_rstd


@numba.njit(cache=True, error_model="numpy", nogil=True, fastmath={"reassoc", "nsz"})
def _layer_norm_backward(dy, x, mean, rstd, weight, constants, first, stop, dx, dweight_sums,
                         dbias_sums):
    """Rows first..stop-1; adds their dweight and dbias terms into ``dweight_sums`` and
    ``dbias_sums`` (C,), the calling thread's float64 partial sums. ``weight`` may be empty."""
    columns = x.shape[1]
    zero, inv_columns = constants[0], constants[3]
    has_weight = weight.size > 0
    g = np.empty(columns, x.dtype)            # dy * weight of one row
    xhat = np.empty(columns, x.dtype)         # the normalised row
    dweight_rows = np.zeros(columns, x.dtype)  # sums over the rows since the last flush
    dbias_rows = np.zeros(columns, x.dtype)
    for row in range(first, stop):
        values, grads, out = x[row], dy[row], dx[row]
        row_mean, row_rstd = mean[row], rstd[row]
        # dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * weight
        g_total, g_xhat_total = zero, zero
        for j in range(columns):
            xhat[j] = (values[j] - row_mean) * row_rstd
            g[j] = grads[j] * weight[j] if has_weight else grads[j]
            g_total += g[j]
            g_xhat_total += g[j] * xhat[j]
            dweight_rows[j] += grads[j] * xhat[j]
            dbias_rows[j] += grads[j]
        g_mean, g_xhat_mean = g_total * inv_columns, g_xhat_total * inv_columns
        for j in range(columns):
            out[j] = row_rstd * (g[j] - g_mean - xhat[j] * g_xhat_mean)
        if (row - first) % ROWS_PER_FLUSH == ROWS_PER_FLUSH - 1 or row == stop - 1:
            for j in range(columns):
                dweight_sums[j] += dweight_rows[j]
                dbias_sums[j] += dbias_rows[j]
                dweight_rows[j] = 0
                dbias_rows[j] = 0


def layer_norm_forward(x, weight, bias, eps):
    """Layer norm of each row of ``x`` (N, C): ``(x - mean) * rstd * weight + bias``, with
    ``rstd = 1 / sqrt(biased variance + eps)``. ``weight`` and ``bias`` are (C,) or None.
    Returns ``(y, mean, rstd)``, the statistics (N,) saved for the backward.

    >>> y, mean, rstd = layer_norm_forward(np.array([[1.0, 3.0]]), None, None, 0.0)
    >>> y.tolist(), mean.tolist(), rstd.tolist()
    ([[-1.0, 1.0]], [2.0], [1.0])
    """
    x = np.ascontiguousarray(x)                                             # (N, C)
    rows, columns = x.shape
    y = _empty((rows, columns), x.dtype)                                    # (N, C)
    mean, rstd = _empty(rows, x.dtype), _empty(rows, x.dtype)               # (N,), (N,)
    unused = np.zeros(0, x.dtype)
    weight_ = unused if weight is None else np.ascontiguousarray(weight)
    bias_ = unused if bias is None else np.ascontiguousarray(bias)
    constants = _layer_norm_constants(x.dtype, columns, eps)

    _run_rows(lambda first, stop: _layer_norm_forward(x, weight_, bias_, constants, first, stop,
                                                      y, mean, rstd), rows, x.size)
    return y, mean, rstd


def layer_norm_backward(dy, x, mean, rstd, weight):
    """Gradients ``(dx, dweight, dbias)`` of :func:`layer_norm_forward` from the output
    gradient ``dy`` (N, C) and the saved statistics; ``dweight`` and ``dbias`` are None when
    ``weight`` is None.

    >>> x = np.array([[1.0, 3.0]])
    >>> _, mean, rstd = layer_norm_forward(x, None, None, 0.0)
    >>> dx, _, _ = layer_norm_backward(np.array([[1.0, 0.0]]), x, mean, rstd, None)
    >>> dx.tolist()
    [[0.0, 0.0]]
    """
    x = np.ascontiguousarray(x)                                             # (N, C)
    rows, columns = x.shape
    dx = _empty((rows, columns), x.dtype)                                   # (N, C)
    dy = np.ascontiguousarray(dy, dtype=x.dtype)                            # (N, C)
    weight_ = np.zeros(0, x.dtype) if weight is None else np.ascontiguousarray(weight)
    constants = _layer_norm_constants(x.dtype, columns)
    # Per-thread partial sums of dweight and dbias, added up once the rows are done.
    dweight_parts = np.zeros((cpu_cores(), columns), np.float64)            # (threads, C)
    dbias_parts = np.zeros((cpu_cores(), columns), np.float64)              # (threads, C)

    def run_rows(thread, first, stop):
        _layer_norm_backward(dy, x, mean, rstd, weight_, constants, first, stop, dx,
                             dweight_parts[thread], dbias_parts[thread])

    # fixed: each thread's partial sums add the same rows in the same order on every call
    run_in_threads(run_rows, rows, _blocks(x.size, rows), fixed=True, blas=False)
    if weight is None:
        return dx, None, None
    return dx, dweight_parts.sum(0).astype(x.dtype), dbias_parts.sum(0).astype(x.dtype)


# ----------------------------------------------------------------------------- cross-entropy


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _cross_entropy_forward(logits, target, ignore_index, smoothing, first, stop, loss, lse):
    classes = logits.shape[1]
    for row in range(first, stop):
        row_max = -np.inf
        total = 0.0
        for j in range(classes):
            row_max = max(row_max, logits[row, j])
            total += logits[row, j]
        shift = row_max if np.isfinite(row_max) else 0.0
        exp_total = 0.0
        for j in range(classes):
            exp_total += math.exp(logits[row, j] - shift)
        row_lse = math.log(exp_total) + shift
        lse[row] = row_lse
        label = target[row]
        if label == ignore_index:
            loss[row] = 0.0
        else:
            loss[row] = ((1.0 - smoothing) * (row_lse - logits[row, label])
                         + smoothing * (row_lse - total / classes))


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _cross_entropy_backward(logits, target, lse, grad_rows, ignore_index, smoothing, first, stop,
                            dlogits):
    classes = logits.shape[1]
    uniform = smoothing / classes
    for row in range(first, stop):
        label = target[row]
        if label == ignore_index:
            for j in range(classes):
                dlogits[row, j] = 0.0
            continue
        g, row_lse = grad_rows[row], lse[row]
        for j in range(classes):
            dlogits[row, j] = g * (math.exp(logits[row, j] - row_lse) - uniform)
        dlogits[row, label] -= g * (1.0 - smoothing)


def cross_entropy_forward(logits, target, ignore_index, label_smoothing):
    """Per-row cross-entropy of ``logits`` (N, V) against class ids ``target`` (N,), as
    PyTorch's with ``reduction="none"``: ``(1 - e)(lse - x_t) + e (lse - mean(x))`` for label
    smoothing ``e``, 0 on rows whose target is ``ignore_index``. Returns ``(loss, lse)``, both
    (N,); the row logsumexp is all the backward needs besides the logits. Targets must already
    be checked to lie in ``[0, V)`` (or equal ``ignore_index``).

    >>> loss, lse = cross_entropy_forward(np.zeros((1, 2)), np.array([1]), -100, 0.0)
    >>> round(float(loss[0]), 4)
    0.6931
    """
    logits = np.ascontiguousarray(logits)                                   # (N, V)
    target = np.ascontiguousarray(target, dtype=np.int64)                   # (N,)
    rows = logits.shape[0]
    loss, lse = _empty(rows, logits.dtype), _empty(rows, logits.dtype)      # (N,), (N,)
    _run_rows(lambda first, stop: _cross_entropy_forward(
        logits, target, ignore_index, label_smoothing, first, stop, loss, lse), rows, logits.size)
    return loss, lse


def cross_entropy_backward(logits, target, lse, grad_rows, ignore_index, label_smoothing):
    """``dlogits`` (N, V) of :func:`cross_entropy_forward` given the gradient of each row's loss
    ``grad_rows`` (N,): ``g * (softmax(x) - (1 - e) onehot(t) - e / V)``, 0 on ignored rows,
    in one pass over the logits.

    >>> logits = np.zeros((1, 2))
    >>> _, lse = cross_entropy_forward(logits, np.array([1]), -100, 0.0)
    >>> cross_entropy_backward(logits, np.array([1]), lse, np.ones(1), -100, 0.0).tolist()
    [[0.5, -0.5]]
    """
    logits = np.ascontiguousarray(logits)                                   # (N, V)
    target = np.ascontiguousarray(target, dtype=np.int64)                   # (N,)
    grad_rows = np.ascontiguousarray(grad_rows, dtype=logits.dtype)         # (N,)
    dlogits = _empty(logits.shape, logits.dtype)                            # (N, V)
    _run_rows(lambda first, stop: _cross_entropy_backward(
        logits, target, lse, grad_rows, ignore_index, label_smoothing, first, stop, dlogits),
        logits.shape[0], logits.size)
    return dlogits
