"""Gradient clipping: rescale gradients by their total norm, or clamp each value.

Both work in place on the ``.grad`` of the given parameters (those whose ``.grad`` is None are
skipped), exactly as ``torch.nn.utils.clip_grad_norm_`` and ``clip_grad_value_`` do.
"""

from __future__ import annotations

import math

from ..autograd import no_grad
from ..creation import tensor
from ..ops import isfinite, stack
from ..tensor import Tensor


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False) -> Tensor:
    """Scale the gradients so that their total norm is at most ``max_norm``; return the total
    norm they had, as a 0-d Tensor.

    The total norm is the ``norm_type`` norm (a p-norm with p > 0, or ``inf`` for the largest
    absolute value) of all gradients taken together as one vector. Every gradient is multiplied
    by ``min(1, max_norm / (total_norm + 1e-6))``. With ``error_if_nonfinite`` a NaN or infinite
    total norm raises instead.

    >>> import tinynlm as tn
    >>> from tinynlm.optim import clip_grad_norm_
    >>> w = tn.zeros(2, requires_grad=True)
    >>> w.grad = tn.tensor([3.0, 4.0])
    >>> clip_grad_norm_([w], max_norm=1.0).item()
    5.0
    >>> [round(value, 4) for value in w.grad.tolist()]
    [0.6, 0.8]
    """
    norm_type = float(norm_type)
    if not norm_type > 0:
        raise ValueError(f"clip_grad_norm_: norm_type must be a positive p (or inf), "
                         f"got {norm_type}")
    grads = _gradients(parameters)
    if not grads:
        return tensor(0.0)
    with no_grad():
        first = grads[0]
        norms = [_vector_norm(grad, norm_type).to(first.device) for grad in grads]
        total_norm = _vector_norm(stack(norms), norm_type)
        if error_if_nonfinite and not bool(isfinite(total_norm)):
            raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the "
                               "gradients is non-finite, so it cannot be clipped; pass "
                               "error_if_nonfinite=False to scale them by it anyway")
        # Multiplying by 1 when nothing needs clipping avoids a device-to-host sync.
        scale = (float(max_norm) / (total_norm + 1e-6)).clamp(max=1.0)
        for grad in grads:
            grad.mul_(scale.to(grad.device))
    return total_norm


def clip_grad_value_(parameters, clip_value) -> None:
    """Clamp every gradient value into ``[-clip_value, clip_value]``, in place.

    >>> import tinynlm as tn
    >>> from tinynlm.optim import clip_grad_value_
    >>> w = tn.zeros(3, requires_grad=True)
    >>> w.grad = tn.tensor([-2.0, 0.5, 3.0])
    >>> clip_grad_value_([w], clip_value=1.0)
    >>> w.grad.tolist()
    [-1.0, 0.5, 1.0]
    """
    clip_value = float(clip_value)
    with no_grad():
        for grad in _gradients(parameters):
            grad.copy_(grad.clamp(-clip_value, clip_value))


def _gradients(parameters) -> list:
    """The ``.grad`` Tensors of a Tensor or an iterable of Tensors, skipping None."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [param.grad for param in parameters if param.grad is not None]


def _vector_norm(x: Tensor, norm_type: float) -> Tensor:
    """The ``norm_type`` norm of all entries of ``x`` (0-d, in ``x``'s dtype)."""
    if math.isinf(norm_type):
        return x.abs().amax()
    if norm_type == 2.0:
        return (x * x).sum().sqrt()
    return (x.abs() ** norm_type).sum() ** (1.0 / norm_type)
