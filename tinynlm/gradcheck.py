"""Check analytic gradients against central finite differences, in float64."""

from __future__ import annotations

import numpy as np

from . import autograd
from .tensor import Tensor


class GradcheckError(RuntimeError):
    """An analytic gradient disagrees with the finite-difference estimate."""


def _as_tuple(value):
    return value if isinstance(value, tuple) else tuple(value) if isinstance(value, list) \
        else (value,)


def _working_copies(inputs):
    """Fresh copies of the tensor inputs (so perturbing them never touches the caller's)."""
    copies = []
    for value in inputs:
        if isinstance(value, Tensor):
            copy = Tensor._make(value.data.copy(), value.device)
            copies.append(copy.requires_grad_() if value.requires_grad else copy)
        else:
            copies.append(value)
    return copies


def _checked_positions(inputs, op_name):
    positions = [i for i, value in enumerate(inputs)
                 if isinstance(value, Tensor) and value.requires_grad]
    if not positions:
        raise ValueError(f"{op_name}: no input requires grad, so there is nothing to check")
    for i in positions:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"{op_name}: input {i} has dtype {inputs[i].dtype}; gradient checks "
                            "need float64 inputs (finite differences in float32 are noise)")
    return positions


def _tensor_outputs(fn, inputs, op_name):
    outputs = _as_tuple(fn(*inputs))
    for i, output in enumerate(outputs):
        if not isinstance(output, Tensor):
            raise TypeError(f"{op_name}: output {i} of fn is a {type(output).__name__}, not a Tensor")
    return [output for output in outputs if output.dtype.kind == "f"]


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True, seed=0):
    """Compare the gradients autograd computes for ``fn`` at ``inputs`` with finite differences.

    Every output is weighted by a fixed random tensor and summed, so one backward pass gives the
    analytic gradient of that scalar for every input that requires grad; each input element is
    then nudged by ``+-eps`` for the numeric one. An element fails when
    ``|analytic - numeric| > atol + rtol * |numeric|``.

    Returns True on success; on failure raises :class:`GradcheckError` naming the input, the
    element, both values and their difference (or returns False with ``raise_exception=False``).

    >>> import tinynlm as tn
    >>> x = tn.randn(3, 4, dtype=tn.float64, requires_grad=True)
    >>> tn.gradcheck(lambda t: (t.tanh() * t).sum(dim=1), (x,))
    True
    """
    inputs = _working_copies(_as_tuple(inputs))
    positions = _checked_positions(inputs, "gradcheck")
    rng = np.random.default_rng(seed)
    outputs = _tensor_outputs(fn, inputs, "gradcheck")
    weights = []
    for output in outputs:
        host = rng.standard_normal(output.shape).astype(output.dtype)
        weights.append(output.xp.asarray(host))

    def weighted_sum(results):
        return sum(float((output.data * weight).sum()) for output, weight in zip(results, weights))

    with autograd.enable_grad():
        results = _tensor_outputs(fn, inputs, "gradcheck")
        differentiable = [(r, Tensor._make(w, r.device)) for r, w in zip(results, weights)
                          if r.requires_grad]
        analytic = [None] * len(positions)
        if differentiable:
            grads = autograd.grad([r for r, _ in differentiable], [inputs[i] for i in positions],
                                  grad_outputs=[w for _, w in differentiable], allow_unused=True)
            analytic = [None if g is None else g.detach() for g in grads]

    for slot, i in enumerate(positions):
        tensor = inputs[i]
        data = tensor.data
        analytic_host = (np.zeros(tensor.shape) if analytic[slot] is None
                         else np.asarray(analytic[slot].numpy(), dtype=np.float64))
        with autograd.no_grad():
            for element in np.ndindex(*tensor.shape):
                original = float(data[element])
                data[element] = original + eps
                plus = weighted_sum(_tensor_outputs(fn, inputs, "gradcheck"))
                data[element] = original - eps
                minus = weighted_sum(_tensor_outputs(fn, inputs, "gradcheck"))
                data[element] = original
                numeric = (plus - minus) / (2 * eps)
                value = float(analytic_host[element])
                if not abs(value - numeric) <= atol + rtol * abs(numeric):
                    if not raise_exception:
                        return False
                    raise GradcheckError(
                        f"gradcheck: gradient mismatch for input {i} (shape {tensor.shape}) at "
                        f"element {element}: analytic {value:.8g}, numeric {numeric:.8g}, "
                        f"difference {value - numeric:.3g} (atol {atol}, rtol {rtol})")
    return True


def gradgradcheck(fn, inputs, grad_outputs=None, eps=1e-6, atol=1e-5, rtol=1e-3,
                  raise_exception=True, seed=0):
    """Check second derivatives: :func:`gradcheck` applied to the vector-Jacobian product of
    ``fn`` (taken with ``create_graph=True``), with respect to the inputs and to random
    ``grad_outputs``.

    >>> import tinynlm as tn
    >>> x = tn.randn(4, dtype=tn.float64, requires_grad=True)
    >>> tn.gradgradcheck(lambda t: (t * t * t).sin(), (x,))
    True
    """
    inputs = _as_tuple(inputs)
    positions = _checked_positions(inputs, "gradgradcheck")
    outputs = _tensor_outputs(fn, inputs, "gradgradcheck")
    if grad_outputs is None:
        rng = np.random.default_rng(seed + 1)
        grad_outputs = []
        for output in outputs:
            host = rng.standard_normal(output.shape)
            grad_outputs.append(Tensor._make(output.xp.asarray(host), output.device)
                                .requires_grad_())
    grad_outputs = tuple(_as_tuple(grad_outputs))
    count = len(inputs)

    def vector_jacobian_product(*arguments):
        with autograd.enable_grad():  # gradcheck evaluates this under no_grad too
            return _vector_jacobian_product(arguments)

    def _vector_jacobian_product(arguments):
        primal, cotangents = arguments[:count], arguments[count:]
        results = _tensor_outputs(fn, primal, "gradgradcheck")
        pairs = [(r, c) for r, c in zip(results, cotangents) if r.requires_grad]
        wanted = [primal[i] for i in positions]
        if not pairs:
            return tuple(Tensor._make(t.xp.zeros(t.shape), t.device) for t in wanted)
        grads = autograd.grad([r for r, _ in pairs], wanted, grad_outputs=[c for _, c in pairs],
                              create_graph=True, allow_unused=True)
        return tuple(Tensor._make(t.xp.zeros(t.shape), t.device) if g is None else g
                     for g, t in zip(grads, wanted))

    return gradcheck(vector_jacobian_product, tuple(inputs) + grad_outputs, eps=eps, atol=atol,
                     rtol=rtol, raise_exception=raise_exception, seed=seed)
