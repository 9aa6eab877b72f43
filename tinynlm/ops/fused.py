"""Ops whose forward and backward each run as one fused kernel: layer norm, cross-entropy from
logits and scaled dot-product attention.

Each Function here takes the kernel pair that ``dispatch.fused`` found for the device and the
composed ``reference`` (the same function written with ordinary tensor ops, in ``tinynlm.nn``).
The fused kernels give first derivatives; when the backward is itself recorded
(``create_graph=True``) the gradients come from differentiating the reference instead, so double
backward works through every fused op. Softmax and GELU, which sit in the core op files, follow
the same pattern in their own classes.
"""

from __future__ import annotations

from ..autograd import Function, grad, is_grad_enabled
from ..tensor import Tensor


def composed_gradients(function, grads):
    """The input gradients of ``function`` computed through its composed reference, recorded
    (for ``create_graph``): the fused kernels themselves are not differentiable."""
    inputs = function.saved_tensors
    wanted = [i for i in range(len(inputs)) if function.needs_input_grad(i)]
    found = grad(function.reference(*inputs), [inputs[i] for i in wanted], grads,
                 create_graph=True, allow_unused=True)
    gradients = [None] * len(inputs)
    for i, gradient in zip(wanted, found):
        gradients[i] = gradient
    return tuple(gradients)


class FusedLayerNorm(Function):
    """Layer norm over the trailing ``columns`` elements of each row, with an optional weight
    and bias flattened to (columns,); inputs ``(x, [weight, [bias]])``."""

    def __init__(self, kernels, columns, eps, reference, inputs):
        self.kernels, self.columns, self.eps, self.reference = kernels, columns, eps, reference
        self.save_inputs = tuple(range(inputs))

    def forward(self, x, weight=None, bias=None):
        rows = x.reshape(-1, self.columns)                                  # (N, C)
        flat = [None if p is None else p.reshape(-1) for p in (weight, bias)]
        y, self.mean, self.rstd = self.kernels[0](rows, *flat, self.eps)    # (N, C), (N,), (N,)
        return y.reshape(x.shape)

    def backward(self, grad):
        if is_grad_enabled():
            return composed_gradients(self, (grad,))
        x, *parameters = self.saved_tensors
        weight = parameters[0].data.reshape(-1) if parameters else None
        dx, dweight, dbias = self.kernels[1](grad.data.reshape(-1, self.columns),
                                             x.data.reshape(-1, self.columns), self.mean,
                                             self.rstd, weight)
        gradients = [Tensor._make(dx.reshape(x.shape), grad.device)]
        for parameter, gradient in zip(parameters, (dweight, dbias)):
            gradients.append(Tensor._make(gradient.reshape(parameter.shape), grad.device))
        return tuple(gradients)


class FusedCrossEntropy(Function):
    """Per-row cross-entropy of logits (N, V) against the constant class ids ``target`` (N,),
    with ``ignore_index`` and ``label_smoothing``; the loss of each row (N,) comes out and the
    backward makes the logits' gradient in one pass, keeping no probabilities."""

    save_inputs = (0,)

    def __init__(self, kernels, target, ignore_index, label_smoothing, reference):
        self.kernels, self.target, self.reference = kernels, target, reference
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def forward(self, logits):
        loss, self.lse = self.kernels[0](logits, self.target, self.ignore_index,
                                         self.label_smoothing)              # (N,), (N,)
        return loss

    def backward(self, grad):
        if is_grad_enabled():
            return composed_gradients(self, (grad,))
        (logits,) = self.saved_tensors
        dlogits = self.kernels[1](logits.data, self.target, self.lse, grad.data,
                                  self.ignore_index, self.label_smoothing)  # (N, V)
        return (Tensor._make(dlogits, grad.device),)


class FusedAttention(Function):
    """``softmax(q k^T * scale + mask) v`` for q (..., L, E), k (..., S, E), v (..., S, Ev) with
    equal batch dims, without the (L, S) score matrix: the kernel saves only the output and the
    row logsumexp, and the backward recomputes the probabilities tile by tile. ``mask`` (bool,
    True = take part) and ``bias`` (added to the scores) are constant arrays broadcast to
    (N, L, S) or None."""

    save_inputs = (0, 1, 2)
    save_output = True

    def __init__(self, kernels, scale, causal, mask, bias, reference):
        self.kernels, self.scale, self.causal = kernels, scale, causal
        self.mask, self.bias, self.reference = mask, bias, reference

    def forward(self, q, k, v):
        *batch, length, features = q.shape
        xp = self.xp
        # (N, L, E), (N, S, E), (N, S, Ev), C-contiguous; kept for the backward (the saved
        # input tensors are there for version checks and the composed double backward)
        self.arrays = (xp.ascontiguousarray(q.reshape(-1, length, features)),
                       xp.ascontiguousarray(k.reshape(-1, k.shape[-2], features)),
                       xp.ascontiguousarray(v.reshape(-1, v.shape[-2], v.shape[-1])))
        out, self.lse = self.kernels[0](*self.arrays, self.scale, self.causal, self.mask,
                                        self.bias)                          # (N, L, Ev), (N, L)
        return out.reshape(*batch, length, v.shape[-1])

    def backward(self, grad):
        if is_grad_enabled():
            return composed_gradients(self, (grad,))
        q, k, v = self.arrays
        out = self.saved_outputs[0].reshape(q.shape[0], q.shape[1], -1)     # (N, L, Ev)
        dout = self.xp.ascontiguousarray(grad.data.reshape(out.shape))      # (N, L, Ev)
        dq, dk, dv = self.kernels[1](q, k, v, out, self.lse, dout, self.scale, self.causal,
                                     self.mask, self.bias)
        return tuple(Tensor._make(g.reshape(t.shape), grad.device)
                     for g, t in zip((dq, dk, dv), self.saved_tensors))
