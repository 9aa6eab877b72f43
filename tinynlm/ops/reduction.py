"""Reductions over dims (``dim`` is None, an int or a tuple; ``keepdim`` as in PyTorch), and the
numerically stable softmax family."""

from __future__ import annotations

from collections import namedtuple

from .. import dispatch
from ..autograd import Function, is_grad_enabled
from ..tensor import Tensor, _normalize_dim
from .common import normalize_dims, require_float
from .elementwise import exp, where
from .shape import Expand, Reshape, gather, reshape, squeeze

values_indices = namedtuple("values_indices", ["values", "indices"])


def _kept_shape(shape, dims):
    """``shape`` with the reduced ``dims`` set to 1."""
    return tuple(1 if i in dims else size for i, size in enumerate(shape))


class Sum(Function):
    def __init__(self, dims, keepdim):
        self.dims, self.keepdim = dims, keepdim

    def forward(self, x):
        self.input_shape = x.shape
        return x.sum(axis=self.dims, keepdims=self.keepdim)

    def backward(self, grad):
        if not self.keepdim and grad.ndim:  # a 0-d gradient broadcasts as it is
            grad = Reshape(_kept_shape(self.input_shape, self.dims))(grad)
        return Expand(self.input_shape)(grad)


def sum(x, dim=None, keepdim=False):
    """Sum over ``dim`` (all dims when None).

    >>> import tinynlm as tn
    >>> tn.ones(2, 3).sum(dim=1).tolist()
    [3.0, 3.0]
    """
    dims = normalize_dims(dim, x.ndim, "sum")
    if x.dtype.kind == "b":
        x = x.long()
    return Sum(dims, keepdim)(x)


def _count(x, dims):
    count = 1
    for d in dims:
        count *= x.shape[d]
    return count


def mean(x, dim=None, keepdim=False):
    """Mean over ``dim`` (all dims when None); needs a floating point tensor."""
    require_float(x, "mean")
    dims = normalize_dims(dim, x.ndim, "mean")
    count = _count(x, dims)
    return Sum(dims, keepdim)(x) * (1.0 / count if count else float("nan"))


def var(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """Variance over ``dim`` with Bessel's correction by default (``correction=1``, PyTorch's)."""
    require_float(x, "var")
    if unbiased is not None and correction is not None:
        raise ValueError("var: pass either unbiased or correction, not both")
    if correction is None:
        correction = 0 if unbiased is False else 1
    dims = normalize_dims(dim, x.ndim, "var")
    centered = x - mean(x, dims, keepdim=True)
    divisor = _count(x, dims) - correction
    squares = Sum(dims, keepdim)(centered * centered)
    return squares * (1.0 / divisor if divisor > 0 else float("nan"))


class SqrtOfVariance(Function):
    """``sqrt`` whose gradient is 0 where the result is 0 (constant inputs), as in PyTorch's
    std, instead of 0/0."""

    save_output = True

    def forward(self, variance):
        return self.xp.sqrt(variance)

    def backward(self, grad):
        out = self.output()
        return where(out == 0, 0.0, grad / (out * 2))


def std(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """Standard deviation over ``dim`` (the square root of :func:`var`)."""
    return SqrtOfVariance()(var(x, dim, unbiased, keepdim, correction=correction))


class Amax(Function):
    """Max (or min) over dims; ties share the gradient evenly, as in PyTorch's amax."""

    save_inputs = (0,)
    save_output = True

    def __init__(self, dims, keepdim, largest):
        self.dims, self.keepdim, self.largest = dims, keepdim, largest

    def forward(self, x):
        if x.size == 0:
            raise RuntimeError(f"{'amax' if self.largest else 'amin'}: cannot reduce an empty "
                               f"tensor of shape {x.shape}")
        reduce = x.max if self.largest else x.min
        return reduce(axis=self.dims, keepdims=self.keepdim)

    def backward(self, grad):
        (x,) = self.saved_tensors
        kept = _kept_shape(x.shape, self.dims)
        out = self.output()
        if not self.keepdim:
            grad, out = reshape(grad, kept), reshape(out, kept)
        winners = (x == out).to(grad.dtype)
        share = winners / Sum(self.dims, True)(winners)
        return grad * share


def amax(x, dim=None, keepdim=False):
    """The largest value over ``dim``."""
    return Amax(normalize_dims(dim, x.ndim, "amax"), keepdim, True)(x)


def amin(x, dim=None, keepdim=False):
    """The smallest value over ``dim``."""
    return Amax(normalize_dims(dim, x.ndim, "amin"), keepdim, False)(x)


def _arg_reduce(x, dim, keepdim, largest):
    name = "argmax" if largest else "argmin"
    if x.numel() == 0:
        raise RuntimeError(f"{name}: cannot reduce an empty tensor of shape {x.shape}")
    function = x.xp.argmax if largest else x.xp.argmin
    if dim is None:
        index = function(x.data.reshape(-1))
        result = index.reshape((1,) * x.ndim) if keepdim else index
    else:
        axis = _normalize_dim(dim, x.ndim, name)
        result = function(x.data, axis=axis)
        if keepdim:
            result = x.xp.expand_dims(result, axis)
    return Tensor._make(x.xp.asarray(result, dtype="int64"), x.device)


def argmax(x, dim=None, keepdim=False):
    """Index of the largest value over ``dim`` (of the flattened tensor when None)."""
    return _arg_reduce(x, dim, keepdim, True)


def argmin(x, dim=None, keepdim=False):
    """Index of the smallest value over ``dim`` (of the flattened tensor when None)."""
    return _arg_reduce(x, dim, keepdim, False)


def _max_min(x, dim, keepdim, largest):
    if dim is None:
        return Amax(tuple(range(x.ndim)), False, largest)(x)
    dim = _normalize_dim(dim, x.ndim, "max" if largest else "min")
    indices = _arg_reduce(x, dim, True, largest)
    values = gather(x, dim, indices)
    if not keepdim:
        values, indices = squeeze(values, dim), squeeze(indices, dim)
    return values_indices(values, indices)


def max(x, dim=None, keepdim=False):
    """The largest value, or with ``dim`` a ``(values, indices)`` pair as in PyTorch.

    >>> import tinynlm as tn
    >>> values, indices = tn.tensor([[1.0, 5.0], [7.0, 2.0]]).max(dim=1)
    >>> values.tolist(), indices.tolist()
    ([5.0, 7.0], [1, 0])
    """
    return _max_min(x, dim, keepdim, True)


def min(x, dim=None, keepdim=False):
    """The smallest value, or with ``dim`` a ``(values, indices)`` pair as in PyTorch."""
    return _max_min(x, dim, keepdim, False)


def all(x, dim=None, keepdim=False):
    """Whether every element (over ``dim``) is non-zero, as a bool tensor."""
    dims = normalize_dims(dim, x.ndim, "all")
    return Tensor._make(x.xp.all(x.data, axis=dims, keepdims=keepdim), x.device)


def any(x, dim=None, keepdim=False):
    """Whether any element (over ``dim``) is non-zero, as a bool tensor."""
    dims = normalize_dims(dim, x.ndim, "any")
    return Tensor._make(x.xp.any(x.data, axis=dims, keepdims=keepdim), x.device)


# ----------------------------------------------------------------------------- softmax family


def _stable_shift(xp, x, dims):
    """The row max to subtract before exp; 0 where the max is infinite (all -inf rows) or
    where the rows are empty."""
    if x.size == 0:
        kept = tuple(1 if i in (dims if isinstance(dims, tuple) else (dims,)) else size
                     for i, size in enumerate(x.shape))
        return xp.zeros(kept, x.dtype)
    row_max = x.max(axis=dims, keepdims=True)
    return xp.where(xp.isfinite(row_max), row_max, 0)


class LogSumExp(Function):
    save_inputs = (0,)
    save_output = True

    def __init__(self, dims, keepdim):
        self.dims, self.keepdim = dims, keepdim

    def forward(self, x):
        xp = self.xp
        shift = _stable_shift(xp, x, self.dims)
        result = xp.log(xp.exp(x - shift).sum(axis=self.dims, keepdims=True)) + shift
        return result if self.keepdim else result.squeeze(axis=self.dims)

    def backward(self, grad):
        (x,) = self.saved_tensors
        out = self.output()
        if not self.keepdim:
            kept = _kept_shape(x.shape, self.dims)
            grad, out = reshape(grad, kept), reshape(out, kept)
        return grad * exp(x - out)


def logsumexp(x, dim, keepdim=False):
    """``log(sum(exp(x)))`` over ``dim``, stable for large magnitudes.

    >>> import tinynlm as tn
    >>> round(tn.tensor([1e4, 1e4]).logsumexp(0).item(), 3)
    10000.693
    """
    require_float(x, "logsumexp")
    return LogSumExp(normalize_dims(dim, x.ndim, "logsumexp"), keepdim)(x)


class Softmax(Function):
    """Softmax (``log=False``) or log-softmax (``log=True``) along ``dim``.

    Over the last dim of a float32 or float64 input a fused row kernel does the work (forward
    and backward); otherwise, and when the backward is itself recorded (``create_graph``), the
    composed version here runs, which is also the reference the kernel is tested against.
    """

    save_output = True

    def __init__(self, dim, log):
        self.dim, self.log = dim, log

    def forward(self, x):
        xp = self.xp
        self.kernels = None
        if self.dim == x.ndim - 1 and x.size and x.dtype in (xp.float32, xp.float64):
            self.kernels = dispatch.fused("softmax", xp)
        if self.kernels is not None:
            return self.kernels[0](x, self.log)
        shifted = x - _stable_shift(xp, x, self.dim)
        if self.log:
            return shifted - xp.log(xp.exp(shifted).sum(axis=self.dim, keepdims=True))
        e = xp.exp(shifted)
        return e / e.sum(axis=self.dim, keepdims=True)

    def backward(self, grad):
        if self.kernels is not None and not is_grad_enabled():
            dx = self.kernels[1](self.saved_outputs[0], grad.data, self.log)
            return Tensor._make(dx, grad.device)
        out = self.output()
        if self.log:
            return grad - exp(out) * grad.sum(dim=self.dim, keepdim=True)
        return out * (grad - (grad * out).sum(dim=self.dim, keepdim=True))


def softmax(x, dim):
    """``exp(x) / sum(exp(x))`` along ``dim``, computed stably.

    >>> import tinynlm as tn
    >>> tn.softmax(tn.tensor([0.0, 0.0]), dim=0).tolist()
    [0.5, 0.5]
    """
    require_float(x, "softmax")
    return Softmax(_normalize_dim(dim, x.ndim, "softmax"), log=False)(x)


def log_softmax(x, dim):
    """``x - logsumexp(x)`` along ``dim``, computed stably."""
    require_float(x, "log_softmax")
    return Softmax(_normalize_dim(dim, x.ndim, "log_softmax"), log=True)(x)
