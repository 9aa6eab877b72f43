"""Elementwise ops: arithmetic, math functions, activations, comparisons, selection and dropout.

Each op is a Function: ``forward`` on arrays through ``self.xp``, ``backward`` with tensor ops
(so it can be differentiated again). Binary ops broadcast; their gradients are summed back to
each input's shape by ``sum_to``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .. import backend, dispatch, dtypes
from ..autograd import Function, is_grad_enabled
from ..tensor import Tensor
from .common import (binary_operands, broadcast_error, promote_to_float, scalar_tensor, sum_to)


def _binary(function, op_name, a, b):
    a, b = binary_operands(op_name, a, b)
    try:
        return function(a, b)
    except ValueError:
        try:
            np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise broadcast_error(op_name, a, b) from None
        raise


# ----------------------------------------------------------------------------- arithmetic


class Add(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, grad):
        a_shape, b_shape = self.shapes
        return (sum_to(grad, a_shape) if self.needs_input_grad(0) else None,
                sum_to(grad, b_shape) if self.needs_input_grad(1) else None)


class Sub(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, grad):
        a_shape, b_shape = self.shapes
        return (sum_to(grad, a_shape) if self.needs_input_grad(0) else None,
                sum_to(-grad, b_shape) if self.needs_input_grad(1) else None)


class Mul(Function):
    save_inputs = (0, 1)

    def forward(self, a, b):
        return a * b

    def backward(self, grad):
        a, b = self.saved_tensors
        return (sum_to(grad * b, a.shape) if self.needs_input_grad(0) else None,
                sum_to(grad * a, b.shape) if self.needs_input_grad(1) else None)


class Div(Function):
    save_inputs = (0, 1)

    def forward(self, a, b):
        return a / b

    def backward(self, grad):
        a, b = self.saved_tensors
        grad_over_b = grad / b
        return (sum_to(grad_over_b, a.shape) if self.needs_input_grad(0) else None,
                sum_to(-grad_over_b * a / b, b.shape) if self.needs_input_grad(1) else None)


class Pow(Function):
    """``a ** b`` with both a tensor."""

    save_inputs = (0, 1)
    save_output = True

    def forward(self, a, b):
        return self.xp.power(a, b)

    def backward(self, grad):
        a, b = self.saved_tensors
        grad_a = grad_b = None
        if self.needs_input_grad(0):
            # b * a^(b-1) is 0 where b == 0 (even at a == 0, where a^(b-1) is infinite).
            slope = where(b == 0, 0.0, b * a ** (b - 1))
            grad_a = sum_to(grad * slope, a.shape)
        if self.needs_input_grad(1):
            # d(a^b)/db = a^b log a; taken as 0 where a == 0 (as PyTorch does).
            log_a = where(a == 0, 0.0, log(where(a == 0, 1.0, a)))
            grad_b = sum_to(grad * self.output() * log_a, b.shape)
        return grad_a, grad_b


class PowScalar(Function):
    """``a ** p`` with ``p`` a Python number."""

    save_inputs = (0,)

    def __init__(self, exponent):
        self.exponent = exponent

    def forward(self, a):
        return a ** self.exponent

    def backward(self, grad):
        (a,) = self.saved_tensors
        p = self.exponent
        if p == 0:
            return grad * 0
        if p == 1:
            return grad
        if p == 2:
            return grad * a * 2
        return grad * (a ** (p - 1) * p)


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, grad):
        return -grad


def add(a, b):
    """``a + b`` with broadcasting; either may be a number.

    >>> import tinynlm as tn
    >>> tn.add(tn.ones(2, 3), tn.arange(3.0)).shape
    (2, 3)
    """
    return _binary(Add(), "add", a, b)


def sub(a, b):
    """``a - b`` with broadcasting."""
    return _binary(Sub(), "sub", a, b)


def mul(a, b):
    """``a * b`` with broadcasting."""
    return _binary(Mul(), "mul", a, b)


def div(a, b):
    """True division ``a / b`` with broadcasting; integer inputs give float32."""
    a, b = binary_operands("div", a, b)
    return _binary(Div(), "div", promote_to_float(a), promote_to_float(b))


def pow(base, exponent):
    """``base ** exponent``; a number exponent keeps the base's dtype.

    >>> import tinynlm as tn
    >>> (tn.tensor([2.0, 3.0]) ** 2).tolist()
    [4.0, 9.0]
    """
    if isinstance(base, Tensor) and isinstance(exponent, numbers.Number) \
            and not isinstance(exponent, bool):
        exponent = _python_number(exponent)
        if base.dtype.kind != "f" and not isinstance(exponent, int):
            base = promote_to_float(base)
        return PowScalar(exponent)(base)
    return _binary(Pow(), "pow", base, exponent)


def _python_number(value):
    """A NumPy scalar as the Python number it holds: NumPy 2 treats ``np.float64(2)`` as a
    float64 operand (promoting float32 arrays), a Python float as a weak one (it does not)."""
    return value.item() if isinstance(value, np.generic) else value


def neg(x):
    """``-x``."""
    return Neg()(x)


# ----------------------------------------------------------------------------- math functions


class Exp(Function):
    save_output = True

    def forward(self, x):
        return self.xp.exp(x)

    def backward(self, grad):
        return grad * self.output()


class Log(Function):
    save_inputs = (0,)

    def forward(self, x):
        return self.xp.log(x)

    def backward(self, grad):
        (x,) = self.saved_tensors
        return grad / x


class Sqrt(Function):
    save_output = True

    def forward(self, x):
        return self.xp.sqrt(x)

    def backward(self, grad):
        return grad / (self.output() * 2)


class Rsqrt(Function):
    save_output = True

    def forward(self, x):
        return 1 / self.xp.sqrt(x)

    def backward(self, grad):
        out = self.output()
        return grad * (out * out * out) * -0.5


class Abs(Function):
    save_inputs = (0,)

    def forward(self, x):
        return self.xp.abs(x)

    def backward(self, grad):
        (x,) = self.saved_tensors
        return grad * sign(x)


class Sin(Function):
    save_inputs = (0,)

    def forward(self, x):
        return self.xp.sin(x)

    def backward(self, grad):
        (x,) = self.saved_tensors
        return grad * cos(x)


class Cos(Function):
    save_inputs = (0,)

    def forward(self, x):
        return self.xp.cos(x)

    def backward(self, grad):
        (x,) = self.saved_tensors
        return -grad * sin(x)


class Tanh(Function):
    save_output = True

    def forward(self, x):
        return self.xp.tanh(x)

    def backward(self, grad):
        out = self.output()
        return grad * (1 - out * out)


class Sigmoid(Function):
    save_output = True

    def forward(self, x):
        # exp of a non-positive number only: no overflow warnings for large |x|.
        xp = self.xp
        negative_abs_exp = xp.exp(-xp.abs(x))
        return xp.where(x >= 0, 1 / (1 + negative_abs_exp), negative_abs_exp / (1 + negative_abs_exp))

    def backward(self, grad):
        out = self.output()
        return grad * out * (1 - out)


class Relu(Function):
    save_output = True

    def forward(self, x):
        return self.xp.maximum(x, 0)

    def backward(self, grad):
        return grad * (self.output() > 0).to(grad.dtype)


class Erf(Function):
    save_inputs = (0,)

    def forward(self, x):
        return dispatch.kernel("erf", self.xp)(x).astype(x.dtype, copy=False)

    def backward(self, grad):
        (x,) = self.saved_tensors
        return grad * exp(-(x * x)) * (2 / math.sqrt(math.pi))


class Gelu(Function):
    """Exact GELU through a fused kernel (forward and backward each one pass); the backward
    falls back to tensor ops when it is itself recorded (``create_graph``)."""

    save_inputs = (0,)

    def __init__(self, kernels):
        self.kernels = kernels

    def forward(self, x):
        return self.kernels[0](x)

    def backward(self, grad):
        (x,) = self.saved_tensors
        if not is_grad_enabled():
            return Tensor._make(self.kernels[1](x.data, grad.data), grad.device)
        # d/dx x * Phi(x) = Phi(x) + x * phi(x)
        cdf = (erf(x * (1 / math.sqrt(2))) + 1) * 0.5
        pdf = exp(x * x * -0.5) * (1 / math.sqrt(2 * math.pi))
        return grad * (cdf + x * pdf)


class Softplus(Function):
    save_inputs = (0,)

    def __init__(self, beta, threshold):
        self.beta, self.threshold = beta, threshold

    def forward(self, x):
        scaled = x * self.beta
        # log(1 + e^s) computed as max(s, 0) + log1p(e^-|s|): stable for any s.
        soft = self.xp.maximum(scaled, 0) + self.xp.log1p(self.xp.exp(-self.xp.abs(scaled)))
        return self.xp.where(scaled > self.threshold, x, soft / self.beta)

    def backward(self, grad):
        (x,) = self.saved_tensors
        scaled = x * self.beta
        return grad * where(scaled > self.threshold, 1.0, sigmoid(scaled))


def exp(x):
    """e to the power ``x``."""
    return Exp()(promote_to_float(x))


def log(x):
    """Natural logarithm."""
    return Log()(promote_to_float(x))


def sqrt(x):
    """Square root."""
    return Sqrt()(promote_to_float(x))


def rsqrt(x):
    """``1 / sqrt(x)``."""
    return Rsqrt()(promote_to_float(x))


def abs(x):
    """Absolute value (gradient 0 at 0, as in PyTorch)."""
    return Abs()(x)


def sin(x):
    return Sin()(promote_to_float(x))


def cos(x):
    return Cos()(promote_to_float(x))


def tanh(x):
    return Tanh()(promote_to_float(x))


def sigmoid(x):
    """``1 / (1 + exp(-x))``, computed without overflow."""
    return Sigmoid()(promote_to_float(x))


def relu(x):
    """``max(x, 0)``."""
    return Relu()(x)


def erf(x):
    """The error function."""
    return Erf()(promote_to_float(x))


def gelu(x, approximate="none"):
    """Gaussian error linear unit: ``x * Phi(x)`` exactly (``approximate="none"``) or with
    PyTorch's tanh approximation (``approximate="tanh"``).

    >>> import tinynlm as tn
    >>> round(tn.gelu(tn.tensor(1.0)).item(), 4)
    0.8413
    """
    x = promote_to_float(x)
    if approximate == "none":
        kernels = dispatch.fused("gelu", x.xp) if x.dtype.itemsize >= 4 else None
        if kernels is not None:
            return Gelu(kernels)(x)
        return x * (erf(x * (1 / math.sqrt(2))) + 1) * 0.5
    if approximate == "tanh":
        inner = (x + x * x * x * 0.044715) * math.sqrt(2 / math.pi)
        return x * (tanh(inner) + 1) * 0.5
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def silu(x):
    """``x * sigmoid(x)`` (also called swish)."""
    x = promote_to_float(x)
    return x * sigmoid(x)


def softplus(x, beta=1.0, threshold=20.0):
    """``log(1 + exp(beta * x)) / beta``, linear where ``beta * x > threshold`` (PyTorch's)."""
    return Softplus(_python_number(beta), _python_number(threshold))(promote_to_float(x))


def sign(x):
    """-1, 0 or 1 by the sign of each element (not differentiable: no graph is recorded)."""
    return Tensor._make(x.xp.sign(x.data), x.device)


# ----------------------------------------------------------------------------- selection


class MaxOrMin(Function):
    """Elementwise maximum (``take_larger``) or minimum of two tensors."""

    save_inputs = (0, 1)

    def __init__(self, take_larger):
        self.take_larger = take_larger

    def forward(self, a, b):
        return self.xp.maximum(a, b) if self.take_larger else self.xp.minimum(a, b)

    def backward(self, grad):
        a, b = self.saved_tensors
        a_wins = (a > b) if self.take_larger else (a < b)
        # Ties split the gradient evenly, as PyTorch does.
        a_share = a_wins.to(grad.dtype) + (a == b).to(grad.dtype) * 0.5
        return (sum_to(grad * a_share, a.shape) if self.needs_input_grad(0) else None,
                sum_to(grad * (1 - a_share), b.shape) if self.needs_input_grad(1) else None)


class Clamp(Function):
    save_inputs = (0,)

    def __init__(self, low, high):
        self.low, self.high = low, high

    def forward(self, x):
        return self.xp.clip(x, self.low, self.high)

    def backward(self, grad):
        (x,) = self.saved_tensors
        inside = x.data
        xp = x.xp
        keep = xp.ones(x.shape, dtype=bool)
        if self.low is not None:
            keep &= inside >= self.low
        if self.high is not None:
            keep &= inside <= self.high
        return grad * Tensor._make(keep.astype(grad.dtype), grad.device)


class Where(Function):
    """``condition ? a : b``; the condition is a constant boolean array."""

    def __init__(self, condition):
        self.condition = condition

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return self.xp.where(self.condition, a, b)

    def backward(self, grad):
        a_shape, b_shape = self.shapes
        condition = Tensor._make(self.condition, grad.device)
        zero = scalar_tensor(0, grad.dtype, grad.device)
        grad_a = grad_b = None
        if self.needs_input_grad(0):
            grad_a = sum_to(where(condition, grad, zero), a_shape)
        if self.needs_input_grad(1):
            grad_b = sum_to(where(condition, zero, grad), b_shape)
        return grad_a, grad_b


def maximum(a, b):
    """Elementwise maximum (ties share the gradient evenly)."""
    return _binary(MaxOrMin(True), "maximum", a, b)


def minimum(a, b):
    """Elementwise minimum (ties share the gradient evenly)."""
    return _binary(MaxOrMin(False), "minimum", a, b)


class ClampBetweenTensors(Function):
    """``min(max(x, low), high)`` with tensor bounds; the gradient goes to whichever of x, low
    and high the result equals (x when x sits exactly on a bound), as in PyTorch."""

    save_inputs = (0, 1, 2)

    def forward(self, x, low, high):
        return self.xp.minimum(self.xp.maximum(x, low), high)

    def backward(self, grad):
        x, low, high = (t.data for t in self.saved_tensors)
        xp = self.saved_tensors[0].xp
        takes_high = (x > high) | (low > high)
        takes_x = (x >= low) & ~takes_high
        takes_low = ~takes_x & ~takes_high
        grads = []
        for position, share in enumerate((takes_x, takes_low, takes_high)):
            if self.needs_input_grad(position):
                mask = Tensor._make(xp.asarray(share, dtype=grad.dtype), grad.device)
                grads.append(sum_to(grad * mask, self.saved_tensors[position].shape))
            else:
                grads.append(None)
        return tuple(grads)


def clamp(x, min=None, max=None):
    """Limit values to ``[min, max]``; either bound may be None, a number or a tensor.

    >>> import tinynlm as tn
    >>> tn.tensor([-2.0, 0.5, 3.0]).clamp(-1, 1).tolist()
    [-1.0, 0.5, 1.0]
    """
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        low = -math.inf if min is None else min
        high = math.inf if max is None else max
        x, low = binary_operands("clamp", x, low)
        x, high = binary_operands("clamp", x, high)
        low, high = low.to(x.dtype), high.to(x.dtype)
        try:
            return ClampBetweenTensors()(x, low, high)
        except ValueError:
            raise broadcast_error("clamp", x, low, high) from None
    low, high = _python_number(min), _python_number(max)
    if x.dtype.kind != "f" and any(isinstance(bound, float) for bound in (low, high)):
        x = promote_to_float(x)  # an integer tensor clamped to float bounds becomes float32
    return Clamp(low, high)(x)


def _condition_array(condition, op_name, device):
    if not isinstance(condition, Tensor):
        raise TypeError(f"{op_name}: condition must be a bool Tensor, got {type(condition).__name__}")
    if condition.dtype != dtypes.bool_:
        raise TypeError(f"{op_name}: condition must have dtype bool, got {condition.dtype}")
    if condition.device != device:
        raise RuntimeError(f"{op_name}: condition is on {condition.device} but the values are on "
                           f"{device}")
    return condition.data


def where(condition, a, b):
    """Pick from ``a`` where ``condition`` is true, else from ``b`` (all three broadcast).

    >>> import tinynlm as tn
    >>> x = tn.tensor([-1.0, 2.0])
    >>> tn.where(x > 0, x, 0.0).tolist()
    [0.0, 2.0]
    """
    a, b = binary_operands("where", a, b)
    condition_array = _condition_array(condition, "where", a.device)
    try:
        return Where(condition_array)(a, b)
    except ValueError:
        raise broadcast_error("where", condition, a, b) from None


def masked_fill(x, mask, value):
    """``x`` with ``value`` wherever the bool ``mask`` (broadcast to ``x``'s shape) is true."""
    mask_array = _condition_array(mask, "masked_fill", x.device)
    try:
        broadcast = np.broadcast_shapes(mask.shape, x.shape)
    except ValueError:
        broadcast = None
    if broadcast != x.shape:
        raise ValueError(f"masked_fill: mask of shape {mask.shape} does not broadcast to the "
                         f"input's shape {x.shape}")
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"masked_fill: value must be a number or a one-element tensor, got "
                             f"shape {value.shape}")
        fill = value.to(x.dtype).reshape(())
    else:
        fill = scalar_tensor(value, x.dtype, x.device)
    return Where(mask_array)(fill, x)


# ----------------------------------------------------------------------------- comparisons and logic


def _elementwise_constant(ufunc_name, op_name, description, integer_only=False):
    """A non-differentiable binary op (comparison, logic, bits) with broadcasting."""
    def compute(a, b):
        a, b = binary_operands(op_name, a, b)
        if integer_only and (a.dtype.kind not in "biu" or b.dtype.kind not in "biu"):
            raise TypeError(f"{op_name}: needs integer or bool tensors, got {a.dtype} and "
                            f"{b.dtype}")
        try:
            result = getattr(a.xp, ufunc_name)(a.data, b.data)
        except ValueError:
            raise broadcast_error(op_name, a, b) from None
        return Tensor._make(result, a.device)

    compute.__name__ = op_name
    compute.__doc__ = f"Elementwise {description} (not differentiable)."
    return compute


eq = _elementwise_constant("equal", "eq", "``a == b`` as a bool tensor")
ne = _elementwise_constant("not_equal", "ne", "``a != b`` as a bool tensor")
lt = _elementwise_constant("less", "lt", "``a < b`` as a bool tensor")
le = _elementwise_constant("less_equal", "le", "``a <= b`` as a bool tensor")
gt = _elementwise_constant("greater", "gt", "``a > b`` as a bool tensor")
ge = _elementwise_constant("greater_equal", "ge", "``a >= b`` as a bool tensor")
logical_and = _elementwise_constant("logical_and", "logical_and", "logical and, as bools")
logical_or = _elementwise_constant("logical_or", "logical_or", "logical or, as bools")
bitwise_and = _elementwise_constant("bitwise_and", "bitwise_and", "``a & b`` (logical on bools)",
                                    integer_only=True)
bitwise_or = _elementwise_constant("bitwise_or", "bitwise_or", "``a | b`` (logical on bools)",
                                   integer_only=True)
bitwise_xor = _elementwise_constant("bitwise_xor", "bitwise_xor",
                                    "``a ^ b`` (logical on bools)", integer_only=True)


def logical_not(x):
    """Elementwise not, as a bool tensor."""
    return Tensor._make(x.xp.logical_not(x.data), x.device)


def bitwise_not(x):
    """``~x``: logical not on bools, bitwise not on integers (as in PyTorch)."""
    if x.dtype.kind not in "biu":
        raise TypeError(f"bitwise_not: needs an integer or bool tensor, got {x.dtype}")
    return Tensor._make(x.xp.invert(x.data), x.device)


def isfinite(x):
    """Whether each element is finite, as a bool tensor."""
    return Tensor._make(x.xp.isfinite(x.data), x.device)


def isnan(x):
    """Whether each element is NaN, as a bool tensor."""
    return Tensor._make(x.xp.isnan(x.data), x.device)


# ----------------------------------------------------------------------------- dtype and device


class Cast(Function):
    def __init__(self, dtype):
        self.dtype = dtype

    def forward(self, x):
        self.input_dtype = x.dtype
        return x.astype(self.dtype)

    def backward(self, grad):
        return grad.to(self.input_dtype)


class ToDevice(Function):
    def __init__(self, target):
        self.target_device = target

    def forward(self, x):
        self.source_device = backend.device_of_array(x)
        return backend.move_array(x, self.target_device)

    def backward(self, grad):
        return to_device(grad, self.source_device)


class Clone(Function):
    def forward(self, x):
        return x.copy()

    def backward(self, grad):
        return grad


def cast(x, dtype):
    """``x`` converted to ``dtype`` (differentiable between float dtypes); x itself if unchanged."""
    if x.dtype == dtype:
        return x
    if x.requires_grad and dtype.kind != "f":
        # Integer results cannot carry gradients; the result is simply cut from the graph.
        return Tensor._make(x.data.astype(dtype), x.device)
    return Cast(dtype)(x)


def to_device(x, device):
    """``x`` copied to ``device`` (differentiable); x itself when already there."""
    if x.device == device:
        return x
    return ToDevice(device)(x)


def clone(x):
    """A copy of ``x`` that stays in the graph."""
    return Clone()(x)


# ----------------------------------------------------------------------------- dropout


def dropout(x, p=0.5, training=True):
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``.

    Identity when not ``training`` or ``p == 0``. Draws from the device's generator.

    >>> import tinynlm as tn
    >>> tn.dropout(tn.ones(4), p=0.5, training=False).tolist()
    [1.0, 1.0, 1.0, 1.0]
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    keep = backend.generator(x.device).random(x.shape, dtype=np.float32) >= p
    scale = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
    return x * Tensor._make(scale, x.device)
