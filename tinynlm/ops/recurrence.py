"""A whole recurrent layer (one direction) as one autograd op: ``Recurrence``.

Composed from core ops, a recurrent layer records about a dozen graph nodes per time step, and
at language-model sizes their Python bookkeeping, not the arithmetic, sets the time. This op
runs the same loop directly on arrays (NumPy or CuPy): each step is one BLAS product
``h @ W_hh.T`` and the gate arithmetic, with what the backward needs stored per step; the
backward runs the steps in reverse, and the weight's gradient is one product over all steps at
the end. Double backward (``create_graph=True``) differentiates the composed reference, as the
fused kernels do.

Inputs: ``projected`` (T, B, G*H), the inputs already projected by ``W_ih`` (with the biases
that add there); the initial state ``h0`` (B, H) (and ``c0`` for an LSTM); ``weight_hh`` (G*H,
H); for a GRU the hidden bias ``b_hh`` (G*H), which its reset gate multiplies. Outputs: every
step's hidden state (T, B, H), the final ``h`` (and ``c``). Gate orders are PyTorch's: LSTM
i, f, g, o; GRU r, z, n.
"""

from __future__ import annotations

import functools

from ..autograd import Function, is_grad_enabled
from ..dispatch import fused
from ..tensor import Tensor
from .fused import composed_gradients


def _sigmoid(xp, x, out=None):
    """``1 / (1 + exp(-x))`` in place where ``out`` is given, in x's dtype."""
    out = xp.negative(x, out=out)
    xp.exp(out, out=out)
    out += 1
    return xp.reciprocal(out, out=out)


# The gate arithmetic of one step in array ops, for devices without a cell kernel (the CPU has
# Numba ones, ``tinynlm.kernels.cpu_recurrence``, with the same arguments and meaning).


def _lstm_cell_forward(xp, gates, c_prev, c_out, tanh_c_out, h_out):
    hidden = c_prev.shape[-1]
    _sigmoid(xp, gates[:, :2 * hidden], out=gates[:, :2 * hidden])            # i, f
    xp.tanh(gates[:, 2 * hidden:3 * hidden], out=gates[:, 2 * hidden:3 * hidden])  # g
    _sigmoid(xp, gates[:, 3 * hidden:], out=gates[:, 3 * hidden:])            # o
    i, f = gates[:, :hidden], gates[:, hidden:2 * hidden]
    g, o = gates[:, 2 * hidden:3 * hidden], gates[:, 3 * hidden:]
    xp.add(f * c_prev, i * g, out=c_out)
    xp.tanh(c_out, out=tanh_c_out)
    xp.multiply(o, tanh_c_out, out=h_out)


def _lstm_cell_backward(xp, gates, c_prev, tanh_c, dh, dc, grad_gates):
    hidden = c_prev.shape[-1]
    i, f = gates[:, :hidden], gates[:, hidden:2 * hidden]
    g, o = gates[:, 2 * hidden:3 * hidden], gates[:, 3 * hidden:]
    dc += dh * o * (1 - tanh_c * tanh_c)
    xp.multiply(dc * g, i * (1 - i), out=grad_gates[:, :hidden])
    xp.multiply(dc * c_prev, f * (1 - f), out=grad_gates[:, hidden:2 * hidden])
    xp.multiply(dc * i, 1 - g * g, out=grad_gates[:, 2 * hidden:3 * hidden])
    xp.multiply(dh * tanh_c, o * (1 - o), out=grad_gates[:, 3 * hidden:])
    dc *= f


def _gru_cell_forward(xp, gates, input_new, hidden_new, h_prev, h_out):
    hidden = h_prev.shape[-1]
    _sigmoid(xp, gates[:, :2 * hidden], out=gates[:, :2 * hidden])            # r, z
    r, z, n = gates[:, :hidden], gates[:, hidden:2 * hidden], gates[:, 2 * hidden:]
    xp.multiply(r, hidden_new, out=n)
    n += input_new
    xp.tanh(n, out=n)
    xp.add(n, z * (h_prev - n), out=h_out)                                    # (1 - z) n + z h


def _gru_cell_backward(xp, gates, hidden_new, h_prev, dh, grad_input_gates, grad_hidden_gates,
                       dh_direct):
    hidden = h_prev.shape[-1]
    r, z, n = gates[:, :hidden], gates[:, hidden:2 * hidden], gates[:, 2 * hidden:]
    d_new = dh * (1 - z) * (1 - n * n)
    d_update = dh * (h_prev - n) * z * (1 - z)
    d_reset = d_new * hidden_new * r * (1 - r)
    for grads in (grad_input_gates, grad_hidden_gates):
        grads[:, :hidden] = d_reset
        grads[:, hidden:2 * hidden] = d_update
    grad_input_gates[:, 2 * hidden:] = d_new
    xp.multiply(d_new, r, out=grad_hidden_gates[:, 2 * hidden:])
    xp.multiply(dh, z, out=dh_direct)


_ARRAY_CELLS = {"LSTM": (_lstm_cell_forward, _lstm_cell_backward),
                "GRU": (_gru_cell_forward, _gru_cell_backward)}


class Recurrence(Function):
    """One recurrent layer in one direction over a whole sequence; see the module docstring.

    ``mode`` is ``"LSTM"``, ``"GRU"``, ``"RNN_TANH"`` or ``"RNN_RELU"``; ``reverse`` runs the
    steps last to first; ``reference`` is the composed version, ``reference(*inputs)`` ->
    the same outputs, for double backward.
    """

    def __init__(self, mode, reverse, reference):
        self.mode, self.reverse, self.reference = mode, reverse, reference
        self.lstm, self.gru = mode == "LSTM", mode == "GRU"
        self.save_output = not (self.lstm or self.gru)  # an Elman RNN's backward needs its h

    def _order(self, steps):
        return range(steps - 1, -1, -1) if self.reverse else range(steps)

    def _last(self, steps):
        return 0 if self.reverse else steps - 1

    def _cells(self):
        """(forward, backward) of the step's gate arithmetic: the device's cell kernels, or
        array ops."""
        xp = self.xp
        kernels = fused(f"{self.mode.lower()}_cell", xp)
        if kernels is not None:
            return kernels
        forward, backward = _ARRAY_CELLS[self.mode]
        return functools.partial(forward, xp), functools.partial(backward, xp)

    def forward(self, projected, h0, *rest):
        xp = self.xp
        self.save_inputs = tuple(range(2 + len(rest)))
        steps, batch, _ = projected.shape
        hidden = h0.shape[-1]
        weight_hh = rest[1] if self.lstm else rest[0]
        weight_hh_t = weight_hh.T                                           # (H, G*H)
        outputs = xp.empty((steps, batch, hidden), projected.dtype)         # (T, B, H)
        self.h_prev = xp.empty_like(outputs)  # the state each step starts from, (T, B, H)
        h = xp.ascontiguousarray(h0)
        if self.lstm or self.gru:
            cell_forward = self._cells()[0]
            self.gates = xp.empty_like(projected)            # (T, B, G*H), activated
        if self.lstm:
            self.c_prev = xp.empty_like(outputs)
            self.tanh_c = xp.empty_like(outputs)
            c = xp.ascontiguousarray(rest[0])
        elif self.gru:
            hidden_bias = rest[1]
            self.hidden_new = xp.empty_like(outputs)  # W_hn h + b_hn per step, (T, B, H)
        for t in self._order(steps):
            self.h_prev[t] = h
            recurrent = h @ weight_hh_t                                     # (B, G*H)
            if self.lstm:
                self.c_prev[t] = c
                xp.add(projected[t], recurrent, out=self.gates[t])
                c = xp.empty_like(c)
                cell_forward(self.gates[t], self.c_prev[t], c, self.tanh_c[t], outputs[t])
            elif self.gru:
                recurrent += hidden_bias
                self.hidden_new[t] = recurrent[:, 2 * hidden:]
                xp.add(projected[t, :, :2 * hidden], recurrent[:, :2 * hidden],
                       out=self.gates[t, :, :2 * hidden])
                cell_forward(self.gates[t], xp.ascontiguousarray(projected[t, :, 2 * hidden:]),
                             self.hidden_new[t], self.h_prev[t], outputs[t])
            else:
                pre = xp.add(projected[t], recurrent, out=outputs[t])
                if self.mode == "RNN_TANH":
                    xp.tanh(pre, out=pre)
                else:
                    xp.maximum(pre, 0, out=pre)
            h = outputs[t]
        final_h = outputs[self._last(steps)].copy()
        return (outputs, final_h, c) if self.lstm else (outputs, final_h)

    def backward(self, grad_outputs, grad_h, *grad_rest):
        if is_grad_enabled():
            return composed_gradients(self, (grad_outputs, grad_h, *grad_rest))
        xp = self.xp
        projected, h0, *rest = (tensor.data for tensor in self.saved_tensors)
        weight_hh = rest[1] if self.lstm else rest[0]
        steps, batch, width = projected.shape
        hidden = h0.shape[-1]
        # d(loss)/d(pre-activation gates) per step, (T, B, G*H), on the recurrent side; a GRU's
        # input side differs in the n part and is kept apart
        grad_gates = xp.empty_like(projected)
        grad_projected = xp.empty_like(projected) if self.gru else grad_gates
        if self.lstm or self.gru:
            cell_backward = self._cells()[1]
        dh = grad_h.data.copy()                                             # (B, H)
        if self.lstm:
            dc = xp.ascontiguousarray(grad_rest[0].data, dtype=projected.dtype).copy()
        elif self.gru:
            dh_direct = xp.empty_like(dh)
        for t in self._order(steps)[::-1]:
            dh += grad_outputs.data[t]
            if self.lstm:
                cell_backward(self.gates[t], self.c_prev[t], self.tanh_c[t], dh, dc,
                              grad_gates[t])
                dh = grad_gates[t] @ weight_hh                              # (B, H)
            elif self.gru:
                cell_backward(self.gates[t], self.hidden_new[t], self.h_prev[t], dh,
                              grad_projected[t], grad_gates[t], dh_direct)
                dh = grad_gates[t] @ weight_hh
                dh += dh_direct
            else:
                h = self.saved_outputs[0][t]
                if self.mode == "RNN_TANH":
                    xp.multiply(dh, 1 - h * h, out=grad_gates[t])
                else:
                    xp.multiply(dh, h > 0, out=grad_gates[t])
                dh = grad_gates[t] @ weight_hh
        flat_gates = grad_gates.reshape(steps * batch, width)                # (T*B, G*H)
        grad_weight_hh = flat_gates.T @ self.h_prev.reshape(steps * batch, hidden)  # (G*H, H)
        gradients = [grad_projected, dh]
        if self.lstm:
            gradients += [dc, grad_weight_hh]
        elif self.gru:
            gradients += [grad_weight_hh, flat_gates.sum(axis=0)]
        else:
            gradients += [grad_weight_hh]
        return tuple(Tensor._make(gradient, grad_outputs.device) for gradient in gradients)
