"""A whole recurrent layer (one direction) as one autograd op: ``Recurrence``.

Composed from core ops, a recurrent layer records about a dozen graph nodes per time step, and
at language-model sizes their Python bookkeeping, not the arithmetic, sets the time. This op
runs the loop over time on arrays instead: each step is one BLAS product ``h @ W_hh.T`` and the
gate arithmetic, with what the backward needs stored per step; the backward runs the steps in
reverse, and the weight's gradient is one product over all steps at the end. On the CPU the
loops are compiled (``tinynlm.kernels.cpu_recurrence``, found through ``dispatch.fused`` as
``lstm`` and ``gru``); elsewhere, and for the Elman RNN, they are the array-op functions below,
with the same arguments and results. Double backward (``create_graph=True``) differentiates the
composed reference, as the fused kernels do.

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


def _order(steps, reverse):
    return range(steps - 1, -1, -1) if reverse else range(steps)


# ----------------------------------------------------------------------------- array-op loops
# The same API as tinynlm.kernels.cpu_recurrence: forward(projected, h0, [c0,] weight_hh,
# [hidden_bias,] reverse) -> (outputs, h_n, [c_n,] saved), saved[-1] being each step's h
# before it; backward(saved, weight_hh, reverse, grad_outputs, grad_h, [grad_c]) ->
# (grad_projected, grad_recurrent, grad_h0, [grad_c0]).


def _lstm_forward(xp, projected, h0, c0, weight_hh, reverse):
    steps, batch, width = projected.shape
    hidden = width // 4
    gates = xp.empty_like(projected)                                    # (T, B, 4H), activated
    c_prev, tanh_c, h_prev, outputs = (xp.empty((steps, batch, hidden), projected.dtype)
                                       for _ in range(4))
    h, c = h0, c0
    for t in _order(steps, reverse):
        h_prev[t], c_prev[t] = h, c
        step = gates[t]
        xp.add(projected[t], h @ weight_hh.T, out=step)
        _sigmoid(xp, step[:, :2 * hidden], out=step[:, :2 * hidden])            # i, f
        xp.tanh(step[:, 2 * hidden:3 * hidden], out=step[:, 2 * hidden:3 * hidden])  # g
        _sigmoid(xp, step[:, 3 * hidden:], out=step[:, 3 * hidden:])            # o
        i, f = step[:, :hidden], step[:, hidden:2 * hidden]
        g, o = step[:, 2 * hidden:3 * hidden], step[:, 3 * hidden:]
        c = f * c + i * g
        xp.tanh(c, out=tanh_c[t])
        h = xp.multiply(o, tanh_c[t], out=outputs[t])
    return outputs, h.copy(), c, (gates, c_prev, tanh_c, h_prev)


def _lstm_backward(xp, saved, weight_hh, reverse, grad_outputs, grad_h, grad_c):
    gates, c_prev, tanh_c, _ = saved
    hidden = c_prev.shape[-1]
    grad_gates = xp.empty_like(gates)
    dh, dc = grad_h.astype(gates.dtype), grad_c.astype(gates.dtype)     # (B, H), copies
    for t in _order(gates.shape[0], reverse)[::-1]:
        dh += grad_outputs[t]
        i, f = gates[t, :, :hidden], gates[t, :, hidden:2 * hidden]
        g, o = gates[t, :, 2 * hidden:3 * hidden], gates[t, :, 3 * hidden:]
        step = grad_gates[t]
        dc += dh * o * (1 - tanh_c[t] * tanh_c[t])
        xp.multiply(dc * g, i * (1 - i), out=step[:, :hidden])
        xp.multiply(dc * c_prev[t], f * (1 - f), out=step[:, hidden:2 * hidden])
        xp.multiply(dc * i, 1 - g * g, out=step[:, 2 * hidden:3 * hidden])
        xp.multiply(dh * tanh_c[t], o * (1 - o), out=step[:, 3 * hidden:])
        dc *= f
        dh = step @ weight_hh                                           # (B, H)
    return grad_gates, grad_gates, dh, dc


def _gru_forward(xp, projected, h0, weight_hh, hidden_bias, reverse):
    steps, batch, width = projected.shape
    hidden = width // 3
    gates = xp.empty_like(projected)                                    # (T, B, 3H): r, z, n
    hidden_new, h_prev, outputs = (xp.empty((steps, batch, hidden), projected.dtype)
                                   for _ in range(3))
    h = h0
    for t in _order(steps, reverse):
        h_prev[t] = h
        recurrent = h @ weight_hh.T + hidden_bias                       # (B, 3H)
        hidden_new[t] = recurrent[:, 2 * hidden:]
        step = gates[t]
        xp.add(projected[t, :, :2 * hidden], recurrent[:, :2 * hidden], out=step[:, :2 * hidden])
        _sigmoid(xp, step[:, :2 * hidden], out=step[:, :2 * hidden])            # r, z
        r, z, n = step[:, :hidden], step[:, hidden:2 * hidden], step[:, 2 * hidden:]
        xp.multiply(r, hidden_new[t], out=n)
        n += projected[t, :, 2 * hidden:]
        xp.tanh(n, out=n)
        h = xp.add(n, z * (h - n), out=outputs[t])                      # (1 - z) n + z h
    return outputs, h.copy(), (gates, hidden_new, h_prev)


def _gru_backward(xp, saved, weight_hh, reverse, grad_outputs, grad_h):
    gates, hidden_new, h_prev = saved
    hidden = h_prev.shape[-1]
    grad_projected, grad_gates = xp.empty_like(gates), xp.empty_like(gates)
    dh = grad_h.astype(gates.dtype)                                     # (B, H), a copy
    for t in _order(gates.shape[0], reverse)[::-1]:
        dh += grad_outputs[t]
        r, z = gates[t, :, :hidden], gates[t, :, hidden:2 * hidden]
        n = gates[t, :, 2 * hidden:]
        d_new = dh * (1 - z) * (1 - n * n)
        d_update = dh * (h_prev[t] - n) * z * (1 - z)
        d_reset = d_new * hidden_new[t] * r * (1 - r)
        for grads in (grad_projected[t], grad_gates[t]):
            grads[:, :hidden] = d_reset
            grads[:, hidden:2 * hidden] = d_update
        grad_projected[t, :, 2 * hidden:] = d_new
        xp.multiply(d_new, r, out=grad_gates[t, :, 2 * hidden:])
        dh = dh * z + grad_gates[t] @ weight_hh
    return grad_projected, grad_gates, dh


def _rnn_forward(xp, projected, h0, weight_hh, reverse, relu):
    steps = projected.shape[0]
    outputs = xp.empty((steps,) + h0.shape, projected.dtype)            # (T, B, H)
    h_prev = xp.empty_like(outputs)
    h = h0
    for t in _order(steps, reverse):
        h_prev[t] = h
        h = xp.add(projected[t], h @ weight_hh.T, out=outputs[t])
        xp.maximum(h, 0, out=h) if relu else xp.tanh(h, out=h)
    return outputs, h.copy(), (outputs, h_prev)


def _rnn_backward(xp, saved, weight_hh, reverse, grad_outputs, grad_h, relu):
    outputs, _ = saved
    grad_gates = xp.empty_like(outputs)
    dh = grad_h.astype(outputs.dtype)
    for t in _order(outputs.shape[0], reverse)[::-1]:
        dh += grad_outputs[t]
        h = outputs[t]
        xp.multiply(dh, (h > 0) if relu else 1 - h * h, out=grad_gates[t])
        dh = grad_gates[t] @ weight_hh
    return grad_gates, grad_gates, dh


_ARRAY_LOOPS = {
    "LSTM": (_lstm_forward, _lstm_backward),
    "GRU": (_gru_forward, _gru_backward),
    "RNN_TANH": (functools.partial(_rnn_forward, relu=False),
                 functools.partial(_rnn_backward, relu=False)),
    "RNN_RELU": (functools.partial(_rnn_forward, relu=True),
                 functools.partial(_rnn_backward, relu=True)),
}


class Recurrence(Function):
    """One recurrent layer in one direction over a whole sequence; see the module docstring.

    ``mode`` is ``"LSTM"``, ``"GRU"``, ``"RNN_TANH"`` or ``"RNN_RELU"``; ``reverse`` runs the
    steps last to first; ``reference`` is the composed version, ``reference(*inputs)`` ->
    the same outputs, for double backward.
    """

    def __init__(self, mode, reverse, reference):
        self.mode, self.reverse, self.reference = mode, reverse, reference
        self.lstm, self.gru = mode == "LSTM", mode == "GRU"
        # an Elman RNN's backward reads its outputs: saved so that changing them is caught
        self.save_output = not (self.lstm or self.gru)

    def _loops(self):
        """(forward, backward) over the sequence: the device's compiled ones, or array ops."""
        kernels = fused(self.mode.lower(), self.xp) if self.lstm or self.gru else None
        if kernels is not None:
            return kernels
        forward, backward = _ARRAY_LOOPS[self.mode]
        xp = self.xp
        return (lambda *args: forward(xp, *args)), (lambda *args: backward(xp, *args))

    def forward(self, projected, h0, *rest):
        self.save_inputs = tuple(range(2 + len(rest)))
        *results, self.saved = self._loops()[0](projected, h0, *rest, self.reverse)
        return tuple(results)

    def backward(self, grad_outputs, grad_h, *grad_rest):
        if is_grad_enabled():
            return composed_gradients(self, (grad_outputs, grad_h, *grad_rest))
        projected, h0, *rest = (tensor.data for tensor in self.saved_tensors)
        weight_hh = rest[1] if self.lstm else rest[0]
        grad_projected, grad_recurrent, *grad_states = self._loops()[1](
            self.saved, weight_hh, self.reverse, grad_outputs.data, grad_h.data,
            *(grad.data for grad in grad_rest))
        steps, batch, width = projected.shape
        h_prev = self.saved[-1].reshape(steps * batch, h0.shape[-1])         # (T*B, H)
        grad_weight_hh = grad_recurrent.reshape(steps * batch, width).T @ h_prev  # (G*H, H)
        gradients = [grad_projected, *grad_states, grad_weight_hh]
        if self.gru:
            gradients.append(grad_recurrent.reshape(steps * batch, width).sum(axis=0))
        return tuple(Tensor._make(gradient, grad_outputs.device) for gradient in gradients)
