"""Helpers every op module shares: operand conversion, dtype checks, dims and unbroadcasting."""

from __future__ import annotations

import numbers

import numpy as np

from .. import backend, dtypes
from ..autograd import Function
from ..tensor import Tensor, _normalize_dim


def scalar_tensor(value, dtype, device) -> Tensor:
    """A 0-d constant tensor (filled on the device, so no host-to-device copy)."""
    if device is backend.CPU:
        return Tensor._make(np.array(value, dtype=dtype), device)
    return Tensor._make(backend.array_module(device).full((), value, dtype=dtype), device)


def as_operand(value, like: Tensor, op_name: str) -> Tensor:
    """``value`` (a Tensor, a Python/NumPy number or a NumPy array) as a tensor beside ``like``."""
    if type(value) is float and like.dtype.kind == "f":  # the common case, decided fast
        return scalar_tensor(value, like.dtype, like.device)
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (numbers.Number, np.generic)) and not isinstance(value, complex):
        return scalar_tensor(value, dtypes.scalar_dtype(value, like.dtype), like.device)
    if isinstance(value, np.ndarray) and like.device.type == "cpu":
        return Tensor._make(value.astype(dtypes.as_dtype(value.dtype), copy=False), like.device)
    raise TypeError(f"{op_name}: expected a Tensor or a number, got {type(value).__name__}")


def binary_operands(op_name: str, a, b):
    """Both operands as tensors of one dtype (PyTorch promotion), on one device."""
    if (isinstance(a, Tensor) and isinstance(b, Tensor) and a.device is b.device
            and a.data.dtype == b.data.dtype):
        return a, b  # the common case, decided fast
    if not isinstance(a, Tensor):
        if not isinstance(b, Tensor):
            raise TypeError(f"{op_name}: expected at least one Tensor, got {type(a).__name__} and "
                            f"{type(b).__name__}")
        a = as_operand(a, b, op_name)
    else:
        b = as_operand(b, a, op_name)
    if a.device is not b.device and a.device != b.device:
        raise RuntimeError(f"{op_name}: expected both tensors on one device, got {a.device} and "
                           f"{b.device}")
    if a.dtype != b.dtype:
        dtype = dtypes.result_type(a.dtype, b.dtype, a.ndim == 0, b.ndim == 0)
        a, b = a.to(dtype), b.to(dtype)
    return a, b


def broadcast_error(op_name, *tensors):
    """A ValueError naming the op and the shapes that do not broadcast."""
    shapes = " and ".join(str(t.shape) for t in tensors)
    return ValueError(f"{op_name}: shapes {shapes} cannot be broadcast together")


def require_float(tensor: Tensor, op_name: str) -> Tensor:
    """Refuse integer and bool tensors where only floats make sense."""
    if tensor.dtype.kind != "f":
        raise TypeError(f"{op_name}: expected a floating point tensor, got dtype {tensor.dtype} "
                        "(convert it with .float())")
    return tensor


def promote_to_float(tensor: Tensor) -> Tensor:
    """Integer and bool tensors become float32 (as PyTorch does for exp, sin, ...)."""
    return tensor if tensor.dtype.kind == "f" else tensor.to(dtypes.DEFAULT_FLOAT)


def normalize_dims(dim, ndim: int, op_name: str):
    """``dim`` (None, an int or a sequence of ints) as a sorted tuple of non-negative dims."""
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, (int, np.integer)):
        dim = (dim,)
    dims = tuple(_normalize_dim(d, ndim, op_name) for d in dim)
    if ndim == 0:
        return ()  # a 0-d tensor accepts dim 0 or -1 and has nothing to reduce
    if len(set(dims)) != len(dims):
        raise ValueError(f"{op_name}: dim {tuple(dim)} repeats a dimension")
    return tuple(sorted(dims))


class SumTo(Function):
    """Sum a broadcast gradient back down to ``shape`` (the inverse of broadcasting)."""

    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        lead = x.ndim - len(self.shape)
        axes = tuple(range(lead)) + tuple(lead + i for i, size in enumerate(self.shape)
                                          if size == 1 and x.shape[lead + i] != 1)
        self.input_shape = x.shape
        return x.sum(axis=axes).reshape(self.shape) if axes else x.reshape(self.shape)

    def backward(self, grad):
        from .shape import expand

        return expand(grad, *self.input_shape)


def sum_to(tensor: Tensor, shape: tuple) -> Tensor:
    """``tensor`` summed over broadcast dimensions so that it has ``shape``."""
    return tensor if tensor.shape == shape else SumTo(shape)(tensor)
