"""LSTM and GRU cell kernels on the CPU (Numba): one time step's gate arithmetic, forward and
backward, in one pass over the batch rows.

``tinynlm.ops.recurrence.Recurrence`` runs a recurrent layer's loop over time; each step is a
BLAS product ``h @ W_hh.T`` and then the gates. In NumPy the gates take a dozen calls and
temporaries per step (about 300 microseconds at batch 32, hidden 256, more than the product);
here they take one call. Gate orders are PyTorch's (LSTM i, f, g, o; GRU r, z, n) and all arrays
are C-contiguous, (B, G*H) for gates and (B, H) for states.

float32 computes ``exp`` with the vectorised polynomial of :mod:`tinynlm.kernels.cpu_math`
(sigmoid ``1 / (1 + exp(-x))``, tanh ``2 sigmoid(2x) - 1``: absolute error about 1e-7);
float64 uses libm. Rows are spread over threads with ``numba.prange`` when the kernels have
more than one thread (``tinynlm.kernels.CPU_THREADS``).

>>> import numpy as np
>>> gates = np.zeros((1, 4), np.float32)          # H = 1: i, f, g, o pre-activations
>>> c_prev = np.ones((1, 1), np.float32)
>>> c, tanh_c, h = (np.empty((1, 1), np.float32) for _ in range(3))
>>> lstm_cell_forward(gates, c_prev, c, tanh_c, h)
>>> gates.round(4).tolist(), c.tolist()            # sigmoid(0) = 0.5, tanh(0) = 0
([[0.5, 0.5, 0.0, 0.5]], [[0.5]])
"""

import math

import numba
import numpy as np

from . import cpu_kernel, cpu_threads
from .cpu_math import exp_in_place


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


@cpu_kernel
def _lstm_forward(gates, c_prev, c_out, tanh_c_out, h_out):
    batch, width = gates.shape
    hidden = width // 4
    for b in numba.prange(batch):
        row = gates[b]
        bits = np.empty(width, np.int32)
        _sigmoid_in_place(row[:2 * hidden], bits)                  # i, f
        _tanh_in_place(row[2 * hidden:3 * hidden], bits)           # g
        _sigmoid_in_place(row[3 * hidden:], bits)                  # o
        for j in range(hidden):
            c_out[b, j] = row[hidden + j] * c_prev[b, j] + row[j] * row[2 * hidden + j]
            tanh_c_out[b, j] = c_out[b, j]
        _tanh_in_place(tanh_c_out[b], bits)
        for j in range(hidden):
            h_out[b, j] = row[3 * hidden + j] * tanh_c_out[b, j]


@cpu_kernel
def _lstm_backward(gates, c_prev, tanh_c, dh, dc, grad_gates):
    batch, width = gates.shape
    hidden = width // 4
    for b in numba.prange(batch):
        for j in range(hidden):
            i, f = gates[b, j], gates[b, hidden + j]
            g, o = gates[b, 2 * hidden + j], gates[b, 3 * hidden + j]
            tc = tanh_c[b, j]
            d_cell = dc[b, j] + dh[b, j] * o * (1 - tc * tc)
            grad_gates[b, j] = d_cell * g * i * (1 - i)
            grad_gates[b, hidden + j] = d_cell * c_prev[b, j] * f * (1 - f)
            grad_gates[b, 2 * hidden + j] = d_cell * i * (1 - g * g)
            grad_gates[b, 3 * hidden + j] = dh[b, j] * tc * o * (1 - o)
            dc[b, j] = d_cell * f


@cpu_kernel
def _gru_forward(gates, input_new, hidden_new, h_prev, h_out):
    batch, width = gates.shape
    hidden = width // 3
    for b in numba.prange(batch):
        row = gates[b]
        bits = np.empty(width, np.int32)
        _sigmoid_in_place(row[:2 * hidden], bits)                  # r, z
        for j in range(hidden):
            row[2 * hidden + j] = input_new[b, j] + row[j] * hidden_new[b, j]
        _tanh_in_place(row[2 * hidden:], bits)                     # n
        for j in range(hidden):
            n = row[2 * hidden + j]
            h_out[b, j] = n + row[hidden + j] * (h_prev[b, j] - n)


@cpu_kernel
def _gru_backward(gates, hidden_new, h_prev, dh, grad_input_gates, grad_hidden_gates,
                  dh_direct):
    batch, width = gates.shape
    hidden = width // 3
    for b in numba.prange(batch):
        for j in range(hidden):
            r, z, n = gates[b, j], gates[b, hidden + j], gates[b, 2 * hidden + j]
            d_h = dh[b, j]
            d_new = d_h * (1 - z) * (1 - n * n)
            d_update = d_h * (h_prev[b, j] - n) * z * (1 - z)
            d_reset = d_new * hidden_new[b, j] * r * (1 - r)
            grad_input_gates[b, j] = d_reset
            grad_input_gates[b, hidden + j] = d_update
            grad_input_gates[b, 2 * hidden + j] = d_new
            grad_hidden_gates[b, j] = d_reset
            grad_hidden_gates[b, hidden + j] = d_update
            grad_hidden_gates[b, 2 * hidden + j] = d_new * r
            dh_direct[b, j] = d_h * z


@cpu_threads
def lstm_cell_forward(gates, c_prev, c_out, tanh_c_out, h_out):
    """One LSTM step: ``gates`` (B, 4H) holds the pre-activations ``x W_ih^T + h W_hh^T + b``
    and is overwritten with the activated gates i, f, g, o; writes the new cell ``c_out``,
    its tanh ``tanh_c_out`` and the new hidden state ``h_out``, each (B, H)."""
    _lstm_forward(gates, c_prev, c_out, tanh_c_out, h_out)


@cpu_threads
def lstm_cell_backward(gates, c_prev, tanh_c, dh, dc, grad_gates):
    """The backward of one LSTM step: from the activated ``gates`` (B, 4H), the previous cell
    ``c_prev``, ``tanh_c`` and the gradients ``dh`` by the new h and ``dc`` by the new c
    (each (B, H)), writes the gradients by the pre-activations into ``grad_gates`` (B, 4H) and
    overwrites ``dc`` with the gradient by ``c_prev``."""
    _lstm_backward(gates, c_prev, tanh_c, dh, dc, grad_gates)


@cpu_threads
def gru_cell_forward(gates, input_new, hidden_new, h_prev, h_out):
    """One GRU step: ``gates`` (B, 3H) holds the summed pre-activations of r and z in its first
    2H columns and is overwritten with r, z and n; ``input_new`` is the input's n part ``x
    W_in^T + b_in`` and ``hidden_new`` the hidden side's ``h W_hn^T + b_hn``, each (B, H);
    writes ``h_out = (1 - z) n + z h_prev``."""
    _gru_forward(gates, input_new, hidden_new, h_prev, h_out)


@cpu_threads
def gru_cell_backward(gates, hidden_new, h_prev, dh, grad_input_gates, grad_hidden_gates,
                      dh_direct):
    """The backward of one GRU step from ``gates`` (r, z, n), ``hidden_new`` and ``h_prev``:
    the gradients by the input side's pre-activations (B, 3H), by the hidden side's (whose n
    part is r times the input side's) and ``dh_direct = dh * z``, the part of the gradient by
    ``h_prev`` that does not pass through ``W_hh``."""
    _gru_backward(gates, hidden_new, h_prev, dh, grad_input_gates, grad_hidden_gates,
                  dh_direct)
