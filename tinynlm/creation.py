"""Functions that make new tensors: from data, filled with a constant, ranges and random draws."""

from __future__ import annotations

import numbers

import numpy as np

from . import backend, dtypes
from .tensor import Tensor


def as_array(data, dtype=None, device=None):
    """``data`` (nested lists, numbers, a NumPy/CuPy array or a Tensor) as a fresh array on
    ``device`` with ``dtype``, following PyTorch's type inference: Python floats become float32,
    Python ints int64, and a NumPy array keeps its dtype."""
    if isinstance(data, Tensor):
        data = data.data
    if backend.is_array(data):
        source_device = backend.device_of_array(data)
        device = source_device if device is None else backend.as_device(device)
        array = backend.move_array(data, device)
        if array is data:
            array = array.copy()
        inferred = array.dtype
    else:
        device = backend.CPU if device is None else backend.as_device(device)
        try:
            host = np.array(data)
        except ValueError as error:
            raise ValueError(f"tensor: cannot build a tensor from ragged or malformed data "
                             f"({error})") from None
        if host.dtype == object or host.dtype.kind not in "biuf":
            raise TypeError(f"tensor: cannot build a tensor from data of type "
                            f"{type(data).__name__} (NumPy dtype {host.dtype})")
        if isinstance(data, (np.ndarray, np.generic)):
            inferred = host.dtype
        else:
            inferred = {"b": dtypes.bool_, "i": dtypes.int64, "u": dtypes.int64,
                        "f": dtypes.DEFAULT_FLOAT}[host.dtype.kind]
        array = backend.move_array(host, device)
    target = dtypes.as_dtype(inferred if dtype is None else dtype)
    if array.dtype != target:
        array = array.astype(target)
    return array, device


def tensor(data, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A new tensor holding a copy of ``data``.

    >>> import tinynlm as tn
    >>> tn.tensor([1, 2, 3]).dtype
    dtype('int64')
    >>> tn.tensor([1.0, 2.0], requires_grad=True)
    tensor([1., 2.], requires_grad=True)
    """
    return Tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)


def from_numpy(array: np.ndarray) -> Tensor:
    """A CPU tensor sharing memory with a NumPy array (its dtype is kept)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    dtypes.as_dtype(array.dtype)
    return Tensor._make(array, backend.CPU)


def _shape_from(sizes, op_name):
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    if not all(isinstance(size, numbers.Integral) and size >= 0 for size in sizes):
        raise ValueError(f"{op_name}: sizes must be non-negative integers, got {sizes}")
    return tuple(int(size) for size in sizes)


def _filled(op_name, fill, sizes, dtype, device, requires_grad):
    device = backend.as_device("cpu" if device is None else device)
    dtype = dtypes.DEFAULT_FLOAT if dtype is None else dtypes.as_dtype(dtype)
    xp = backend.array_module(device)
    shape = _shape_from(sizes, op_name)
    if device.type == "cpu":
        array = fill(xp, shape, dtype)
    else:
        with xp.cuda.Device(device.index):
            array = fill(xp, shape, dtype)
    result = Tensor._make(array, device)
    return result.requires_grad_() if requires_grad else result


def zeros(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of zeros: ``tn.zeros(2, 3)`` or ``tn.zeros((2, 3))``.

    >>> import tinynlm as tn
    >>> tn.zeros(2, 3).shape
    (2, 3)
    """
    return _filled("zeros", lambda xp, s, d: xp.zeros(s, d), size, dtype, device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of ones."""
    return _filled("ones", lambda xp, s, d: xp.ones(s, d), size, dtype, device, requires_grad)


def empty(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    """An uninitialised tensor."""
    return _filled("empty", lambda xp, s, d: xp.empty(s, d), size, dtype, device, requires_grad)


def full(size, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor filled with ``fill_value``; the dtype is inferred from it when not given."""
    if dtype is None:
        dtype = dtypes.scalar_dtype(fill_value, dtypes.bool_)
    return _filled("full", lambda xp, s, d: xp.full(s, fill_value, d), (size,), dtype, device,
                   requires_grad)


def _like(template, dtype, device):
    return (template.shape, template.dtype if dtype is None else dtype,
            template.device if device is None else device)


def zeros_like(template, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Zeros with the shape (and by default dtype and device) of ``template``."""
    shape, dtype, device = _like(template, dtype, device)
    return zeros(shape, dtype=dtype, device=device, requires_grad=requires_grad)


def ones_like(template, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Ones with the shape (and by default dtype and device) of ``template``."""
    shape, dtype, device = _like(template, dtype, device)
    return ones(shape, dtype=dtype, device=device, requires_grad=requires_grad)


def full_like(template, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    shape, dtype, device = _like(template, dtype, device)
    return full(shape, fill_value, dtype=dtype, device=device, requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Values from ``start`` up to (not including) ``end``: int64 for integer arguments,
    else float32.

    >>> import tinynlm as tn
    >>> tn.arange(4).tolist()
    [0, 1, 2, 3]
    """
    if end is None:
        start, end = 0, start
    if dtype is None:
        integral = all(isinstance(v, numbers.Integral) for v in (start, end, step))
        dtype = dtypes.int64 if integral else dtypes.DEFAULT_FLOAT
    if step == 0:
        raise ValueError("arange: step must be non-zero")
    host = np.arange(start, end, step, dtype=np.float64 if dtypes.as_dtype(dtype).kind == "f"
                     else None)
    return tensor(host, dtype=dtype, device=device, requires_grad=requires_grad)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False) -> Tensor:
    """``steps`` evenly spaced values from ``start`` to ``end`` inclusive."""
    return tensor(np.linspace(start, end, int(steps)), dtype=dtype or dtypes.DEFAULT_FLOAT,
                  device=device, requires_grad=requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    """The identity matrix (``n`` x ``m``)."""
    return _filled("eye", lambda xp, s, d: xp.eye(n, m, dtype=d), (), dtype, device,
                   requires_grad)


# ----------------------------------------------------------------------------- random


def _random(op_name, draw, sizes, dtype, device, requires_grad):
    device = backend.as_device("cpu" if device is None else device)
    dtype = dtypes.DEFAULT_FLOAT if dtype is None else dtypes.as_dtype(dtype)
    shape = _shape_from(sizes, op_name)
    if device.type == "cpu":
        array = draw(backend.generator(device), shape, dtype)
    else:
        with backend.cupy_module().cuda.Device(device.index):
            array = draw(backend.generator(device), shape, dtype)
    result = Tensor._make(array, device)
    return result.requires_grad_() if requires_grad else result


def _float_draw(method):
    def draw(gen, shape, dtype):
        if dtype.kind != "f":
            raise TypeError(f"{method}: needs a floating dtype, got {dtype}")
        if dtype in (dtypes.float32, dtypes.float64):
            return getattr(gen, method)(shape, dtype=dtype)
        return getattr(gen, method)(shape, dtype=dtypes.float32).astype(dtype)
    return draw


def rand(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Uniform random values in [0, 1), from the device's generator (see ``tn.manual_seed``)."""
    return _random("rand", _float_draw("random"), size, dtype, device, requires_grad)


def randn(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Standard normal random values, from the device's generator (see ``tn.manual_seed``)."""
    return _random("randn", _float_draw("standard_normal"), size, dtype, device, requires_grad)


def randint(low, high=None, size=(), dtype=None, device=None) -> Tensor:
    """Random integers in [low, high) (int64 by default): ``tn.randint(10, (3,))`` or
    ``tn.randint(2, 10, (3,))``."""
    if high is None or isinstance(high, (tuple, list)):
        # randint(high, size): low defaults to 0
        low, high, size = 0, low, (size if high is None else high)
    if low >= high:
        raise ValueError(f"randint: need low < high, got low={low}, high={high}")

    def draw(gen, shape, dtype):
        return gen.integers(low, high, size=shape).astype(dtype, copy=False)

    return _random("randint", draw, (size,), dtype or dtypes.int64, device, False)


def rand_like(template, dtype=None, device=None) -> Tensor:
    shape, dtype, device = _like(template, dtype, device)
    return rand(shape, dtype=dtype, device=device)


def randn_like(template, dtype=None, device=None) -> Tensor:
    shape, dtype, device = _like(template, dtype, device)
    return randn(shape, dtype=dtype, device=device)
