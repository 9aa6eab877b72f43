"""LSTM and GRU layers on the CPU (Numba): the whole loop over time of one layer in one
direction, forward and backward, as compiled code.

``tinynlm.ops.recurrence.Recurrence`` calls these for a recurrent layer. Each step is a BLAS
product ``W_hh @ h.T`` (``np.dot`` inside the compiled loop) and the gate arithmetic in one pass
over the batch rows: in NumPy the gates alone took a dozen calls and temporaries per step. The
batch rows are independent, so long enough calls split them into blocks that run on all cores
at once (:func:`~tinynlm.kernels.cpu_parallel.run_in_threads`), each block stepping through
time on its own: no synchronisation per step, and BLAS on one thread per block. Gate orders are
PyTorch's (LSTM i, f, g, o; GRU r, z, n).

float32 computes ``exp`` with the vectorised polynomial of :mod:`tinynlm.kernels.cpu_math`
(sigmoid ``1 / (1 + exp(-x))``, tanh ``2 sigmoid(2x) - 1``: absolute error about 1e-7);
float64 uses libm.

>>> import numpy as np
>>> projected = np.zeros((2, 1, 4), np.float32)     # T = 2, B = 1, H = 1: i, f, g, o
>>> h0, c0 = np.zeros((1, 1), np.float32), np.ones((1, 1), np.float32)
>>> outputs, h_n, c_n, saved = lstm_forward(projected, h0, c0, np.zeros((4, 1), np.float32),
...                                          reverse=False)
>>> c_n.tolist(), [round(float(h), 4) for h in outputs.ravel()]  # h = 0.5 tanh(c)
([[0.25]], [0.2311, 0.1225])
"""

import math

import numba
import numpy as np

from . import cpu_cores
from .cpu_math import exp_in_place
from .cpu_parallel import run_in_threads


@numba.njit(cache=True, error_model="numpy")
def _sigmoid_in_place(values, bits):
    """``values = 1 / (1 + exp(-values))`` for a 1-D float array (``bits``: int32 scratch)."""
    if values.itemsize == 4:
        for i in range(values.size):
            values[i] = -values[i]
        exp_in_place(values, np.float32(0), bits)
        for i in range(values.size):
            values[i] = np.float32(1) / (np.float32(1) + values[i])
    else:
        for i in range(values.size):
            values[i] = 1.0 / (1.0 + math.exp(-values[i]))


@numba.njit(cache=True, error_model="numpy")
def _tanh_in_place(values, bits):
    """``values = tanh(values)`` for a 1-D float array, as ``2 sigmoid(2x) - 1`` in float32."""
    if values.itemsize == 4:
        for i in range(values.size):
            values[i] = np.float32(-2) * values[i]
        exp_in_place(values, np.float32(0), bits)
        for i in range(values.size):
            values[i] = np.float32(2) / (np.float32(1) + values[i]) - np.float32(1)
    else:
        for i in range(values.size):
            values[i] = math.tanh(values[i])


# ----------------------------------------------------------------------------- one step


@numba.njit(cache=True, error_model="numpy")
def _lstm_step(gates, c_prev, c_out, tanh_c_out, h_out):
    """``gates`` (rows, 4H), the pre-activations, becomes the activated i, f, g, o; writes the
    new cell, its tanh and the new h, each (rows, H)."""
    rows, width = gates.shape
    hidden = width // 4
    bits = np.empty(width, np.int32)
    for b in range(rows):
        row = gates[b]
        _sigmoid_in_place(row[:2 * hidden], bits)                  # i, f
        _tanh_in_place(row[2 * hidden:3 * hidden], bits)           # g
        _sigmoid_in_place(row[3 * hidden:], bits)                  # o
        for j in range(hidden):
            c_out[b, j] = row[hidden + j] * c_prev[b, j] + row[j] * row[2 * hidden + j]
            tanh_c_out[b, j] = c_out[b, j]
        _tanh_in_place(tanh_c_out[b], bits)
        for j in range(hidden):
            h_out[b, j] = row[3 * hidden + j] * tanh_c_out[b, j]


@numba.njit(cache=True, error_model="numpy")
def _lstm_step_backward(gates, c_prev, tanh_c, dh, dc, grad_gates):
    """From the gradients ``dh``, ``dc`` by the step's new h and c: the gradients by its
    pre-activations into ``grad_gates``, and ``dc`` becomes the gradient by ``c_prev``."""
    rows, width = gates.shape
    hidden = width // 4
    one = np.float32(1)  # exact in float64 too; a plain 1 would promote float32 to float64
    for b in range(rows):
        for j in range(hidden):
            i, f = gates[b, j], gates[b, hidden + j]
            g, o = gates[b, 2 * hidden + j], gates[b, 3 * hidden + j]
            tc = tanh_c[b, j]
            d_cell = dc[b, j] + dh[b, j] * o * (one - tc * tc)
            grad_gates[b, j] = d_cell * g * i * (one - i)
            grad_gates[b, hidden + j] = d_cell * c_prev[b, j] * f * (one - f)
            grad_gates[b, 2 * hidden + j] = d_cell * i * (one - g * g)
            grad_gates[b, 3 * hidden + j] = dh[b, j] * tc * o * (one - o)
            dc[b, j] = d_cell * f


@numba.njit(cache=True, error_model="numpy")
def _gru_step(gates, input_new, hidden_new, h_prev, h_out):
    """``gates`` (rows, 3H) holds the summed pre-activations of r and z and becomes r, z, n;
    ``input_new`` / ``hidden_new`` are the two sides' n parts; writes the new h."""
    rows, width = gates.shape
    hidden = width // 3
    bits = np.empty(width, np.int32)
    for b in range(rows):
        row = gates[b]
        _sigmoid_in_place(row[:2 * hidden], bits)                  # r, z
        for j in range(hidden):
            row[2 * hidden + j] = input_new[b, j] + row[j] * hidden_new[b, j]
        _tanh_in_place(row[2 * hidden:], bits)                     # n
        for j in range(hidden):
            n = row[2 * hidden + j]
            h_out[b, j] = n + row[hidden + j] * (h_prev[b, j] - n)


@numba.njit(cache=True, error_model="numpy")
def _gru_step_backward(gates, hidden_new, h_prev, dh, grad_input_gates, grad_hidden_gates,
                       dh_direct):
    """The gradients by the input side's pre-activations, by the hidden side's (whose n part
    is r times the input side's) and ``dh * z``, the part by ``h_prev`` not through W_hh."""
    rows, width = gates.shape
    hidden = width // 3
    one = np.float32(1)  # exact in float64 too; a plain 1 would promote float32 to float64
    for b in range(rows):
        for j in range(hidden):
            r, z, n = gates[b, j], gates[b, hidden + j], gates[b, 2 * hidden + j]
            d_h = dh[b, j]
            d_new = d_h * (one - z) * (one - n * n)
            d_update = d_h * (h_prev[b, j] - n) * z * (one - z)
            d_reset = d_new * hidden_new[b, j] * r * (one - r)
            grad_input_gates[b, j] = d_reset
            grad_input_gates[b, hidden + j] = d_update
            grad_input_gates[b, 2 * hidden + j] = d_new
            grad_hidden_gates[b, j] = d_reset
            grad_hidden_gates[b, hidden + j] = d_update
            grad_hidden_gates[b, 2 * hidden + j] = d_new * r
            dh_direct[b, j] = d_h * z


# ----------------------------------------------------------------------------- whole sequences
# Each runs batch rows first..stop-1 through every step; arrays are (T, B, ...) and (B, ...).
# The recurrent products are taken transposed, ``W_hh @ h^T`` (G*H, rows) rather than
# ``h @ W_hh^T`` (rows, G*H): with few rows OpenBLAS repacks the whole weight on every call of
# the second form, and the first ran 1.5x (one thread) to 1.8x (two threads) faster per step
# (LSTM, H=256, 32 rows). The small transposes of h and of the gate gradients cost far less.


@numba.njit(cache=True, error_model="numpy")
def _transpose_into(source, target):
    """``target[j, b] = source[b, j]``."""
    for b in range(source.shape[0]):
        for j in range(source.shape[1]):
            target[j, b] = source[b, j]


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _lstm_rows_forward(projected, h0, c0, weight_hh, reverse, first, stop, gates, c_prev,
                       tanh_c, h_prev, outputs, c_last):
    steps, width = projected.shape[0], projected.shape[2]
    rows, hidden = stop - first, width // 4
    h = h0[first:stop].copy()                                           # (rows, H)
    c = c0[first:stop].copy()                                           # (rows, H)
    h_t = np.empty((hidden, rows), projected.dtype)                     # (H, rows)
    recurrent_t = np.empty((width, rows), projected.dtype)              # (4H, rows)
    for step in range(steps):
        t = steps - 1 - step if reverse else step
        h_prev[t, first:stop] = h
        c_prev[t, first:stop] = c
        _transpose_into(h, h_t)
        np.dot(weight_hh, h_t, recurrent_t)
        step_gates = gates[t, first:stop]
        for b in range(rows):
            for j in range(width):
                step_gates[b, j] = projected[t, first + b, j] + recurrent_t[j, b]
        _lstm_step(step_gates, c_prev[t, first:stop], c, tanh_c[t, first:stop],
                   outputs[t, first:stop])
        h[:] = outputs[t, first:stop]
    c_last[first:stop] = c


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _lstm_rows_backward(gates, c_prev, tanh_c, grad_outputs, grad_h, grad_c, weight_hh_t,
                        reverse, first, stop, grad_gates, grad_h0, grad_c0):
    steps, width = gates.shape[0], gates.shape[2]
    rows, hidden = stop - first, width // 4
    dh = grad_h[first:stop].copy()                                      # (rows, H)
    dc = grad_c[first:stop].copy()                                      # (rows, H)
    grad_gates_t = np.empty((width, rows), gates.dtype)                 # (4H, rows)
    dh_t = np.empty((hidden, rows), gates.dtype)                        # (H, rows)
    for step in range(steps):
        t = step if reverse else steps - 1 - step
        dh += grad_outputs[t, first:stop]
        _lstm_step_backward(gates[t, first:stop], c_prev[t, first:stop], tanh_c[t, first:stop],
                            dh, dc, grad_gates[t, first:stop])
        _transpose_into(grad_gates[t, first:stop], grad_gates_t)
        np.dot(weight_hh_t, grad_gates_t, dh_t)                         # (H, rows)
        _transpose_into(dh_t, dh)
    grad_h0[first:stop] = dh
    grad_c0[first:stop] = dc


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _gru_rows_forward(projected, h0, weight_hh, hidden_bias, reverse, first, stop, gates,
                      hidden_new, h_prev, outputs):
    steps, width = projected.shape[0], projected.shape[2]
    rows, hidden = stop - first, width // 3
    h = h0[first:stop].copy()                                           # (rows, H)
    h_t = np.empty((hidden, rows), projected.dtype)                     # (H, rows)
    recurrent_t = np.empty((width, rows), projected.dtype)              # (3H, rows)
    input_new = np.empty((rows, hidden), projected.dtype)               # (rows, H)
    for step in range(steps):
        t = steps - 1 - step if reverse else step
        h_prev[t, first:stop] = h
        _transpose_into(h, h_t)
        np.dot(weight_hh, h_t, recurrent_t)
        step_gates, step_new = gates[t, first:stop], hidden_new[t, first:stop]
        for b in range(rows):
            for j in range(2 * hidden):
                step_gates[b, j] = projected[t, first + b, j] + recurrent_t[j, b] + hidden_bias[j]
            for j in range(hidden):
                step_new[b, j] = recurrent_t[2 * hidden + j, b] + hidden_bias[2 * hidden + j]
                input_new[b, j] = projected[t, first + b, 2 * hidden + j]
        _gru_step(step_gates, input_new, step_new, h_prev[t, first:stop], outputs[t, first:stop])
        h[:] = outputs[t, first:stop]


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _gru_rows_backward(gates, hidden_new, h_prev, grad_outputs, grad_h, weight_hh_t, reverse,
                       first, stop, grad_projected, grad_gates, grad_h0):
    steps, width = gates.shape[0], gates.shape[2]
    rows, hidden = stop - first, width // 3
    dh = grad_h[first:stop].copy()                                      # (rows, H)
    dh_direct = np.empty_like(dh)
    grad_gates_t = np.empty((width, rows), gates.dtype)                 # (3H, rows)
    dh_t = np.empty((hidden, rows), gates.dtype)                        # (H, rows)
    for step in range(steps):
        t = step if reverse else steps - 1 - step
        dh += grad_outputs[t, first:stop]
        _gru_step_backward(gates[t, first:stop], hidden_new[t, first:stop], h_prev[t, first:stop],
                           dh, grad_projected[t, first:stop], grad_gates[t, first:stop],
                           dh_direct)
        _transpose_into(grad_gates[t, first:stop], grad_gates_t)
        np.dot(weight_hh_t, grad_gates_t, dh_t)                         # (H, rows)
        _transpose_into(dh_t, dh)
        dh += dh_direct
    grad_h0[first:stop] = dh


# ----------------------------------------------------------------------------- the API

# A block of rows should be worth more than waking a thread: at least this many multiply-adds
# in its recurrent products over the sequence.
MIN_WORK_PER_BLOCK = 2**22


def _contiguous(*arrays):
    return [np.ascontiguousarray(array) for array in arrays]


def _run_blocks(run_rows, batch, steps, width, hidden):
    """``run_rows(thread, first, stop)`` over blocks of batch rows, one per core for long calls."""
    blocks = max(1, min(cpu_cores(), batch, steps * batch * width * hidden // MIN_WORK_PER_BLOCK))
    run_in_threads(run_rows, batch, blocks)


def lstm_forward(projected, h0, c0, weight_hh, reverse):
    """An LSTM layer over a sequence: ``projected`` (T, B, 4H) is ``x W_ih^T + b_ih + b_hh``,
    ``h0`` and ``c0`` (B, H) the initial state, ``weight_hh`` (4H, H). Returns the outputs
    (T, B, H), the final h and c (B, H), and what the backward needs: ``saved`` = (activated
    gates (T, B, 4H), each step's c before it, tanh of its new c, its h before it), the last
    being ``h_prev`` (T, B, H), which the caller uses for the weight's gradient."""
    projected, h0, c0, weight_hh = _contiguous(projected, h0, c0, weight_hh)
    steps, batch, width = projected.shape
    hidden = width // 4
    gates = np.empty_like(projected)
    c_prev, tanh_c, h_prev, outputs = (np.empty((steps, batch, hidden), projected.dtype)
                                       for _ in range(4))
    c_last = np.empty_like(c0)

    def run_rows(thread, first, stop):
        _lstm_rows_forward(projected, h0, c0, weight_hh, reverse, first, stop, gates, c_prev,
                           tanh_c, h_prev, outputs, c_last)

    _run_blocks(run_rows, batch, steps, width, hidden)
    h_last = outputs[0 if reverse else steps - 1].copy()
    return outputs, h_last, c_last, (gates, c_prev, tanh_c, h_prev)


def lstm_backward(saved, weight_hh, reverse, grad_outputs, grad_h, grad_c):
    """The backward of :func:`lstm_forward`: from the gradients by its outputs, final h and
    final c, returns the gradients by ``projected`` (T, B, 4H) (also the recurrent product's,
    for the weight's gradient), by ``h0`` and by ``c0``."""
    gates, c_prev, tanh_c, _ = saved
    weight_hh, grad_outputs, grad_h, grad_c = _contiguous(
        weight_hh, grad_outputs, grad_h.astype(gates.dtype, copy=False),
        grad_c.astype(gates.dtype, copy=False))
    steps, batch, width = gates.shape
    weight_hh_t = np.ascontiguousarray(weight_hh.T)                     # (H, 4H)
    grad_gates = np.empty_like(gates)
    grad_h0, grad_c0 = np.empty_like(grad_h), np.empty_like(grad_c)

    def run_rows(thread, first, stop):
        _lstm_rows_backward(gates, c_prev, tanh_c, grad_outputs, grad_h, grad_c, weight_hh_t,
                            reverse, first, stop, grad_gates, grad_h0, grad_c0)

    _run_blocks(run_rows, batch, steps, width, width // 4)
    return grad_gates, grad_gates, grad_h0, grad_c0  # the input and recurrent sides agree


def gru_forward(projected, h0, weight_hh, hidden_bias, reverse):
    """A GRU layer over a sequence: ``projected`` (T, B, 3H) is ``x W_ih^T + b_ih``, ``h0``
    (B, H), ``weight_hh`` (3H, H), ``hidden_bias`` ``b_hh`` (3H). Returns the outputs (T, B,
    H), the final h and ``saved`` = (r, z, n (T, B, 3H), each step's ``h W_hn^T + b_hn`` (T, B,
    H), its h before it)."""
    projected, h0, weight_hh, hidden_bias = _contiguous(projected, h0, weight_hh, hidden_bias)
    steps, batch, width = projected.shape
    hidden = width // 3
    gates = np.empty_like(projected)
    hidden_new, h_prev, outputs = (np.empty((steps, batch, hidden), projected.dtype)
                                   for _ in range(3))

    def run_rows(thread, first, stop):
        _gru_rows_forward(projected, h0, weight_hh, hidden_bias, reverse, first, stop, gates,
                          hidden_new, h_prev, outputs)

    _run_blocks(run_rows, batch, steps, width, hidden)
    h_last = outputs[0 if reverse else steps - 1].copy()
    return outputs, h_last, (gates, hidden_new, h_prev)


def gru_backward(saved, weight_hh, reverse, grad_outputs, grad_h):
    """The backward of :func:`gru_forward`: returns the gradients by ``projected`` (T, B, 3H),
    by the recurrent product ``h W_hh^T + b_hh`` (T, B, 3H; for the weight's and the bias's
    gradients) and by ``h0``."""
    gates, hidden_new, h_prev = saved
    weight_hh, grad_outputs, grad_h = _contiguous(weight_hh, grad_outputs,
                                                  grad_h.astype(gates.dtype, copy=False))
    steps, batch, width = gates.shape
    weight_hh_t = np.ascontiguousarray(weight_hh.T)                     # (H, 3H)
    grad_projected, grad_gates = np.empty_like(gates), np.empty_like(gates)
    grad_h0 = np.empty_like(grad_h)

    def run_rows(thread, first, stop):
        _gru_rows_backward(gates, hidden_new, h_prev, grad_outputs, grad_h, weight_hh_t, reverse,
                           first, stop, grad_projected, grad_gates, grad_h0)

    _run_blocks(run_rows, batch, steps, width, width // 3)
    return grad_projected, grad_gates, grad_h0
