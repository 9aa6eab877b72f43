"""Data types and PyTorch's promotion rules.

Dtypes are NumPy dtype objects (CuPy uses the same ones): ``tn.float32``, ``tn.float64``,
``tn.int64``, ``tn.bool``. The default float dtype is float32. Promotion follows PyTorch, not
NumPy: a float32 tensor combined with an integer tensor or any Python/NumPy scalar stays float32.
"""

from __future__ import annotations

import builtins

import numpy as np

float16 = half = np.dtype("float16")
float32 = float = np.dtype("float32")
float64 = double = np.dtype("float64")
int8 = np.dtype("int8")
uint8 = np.dtype("uint8")
int16 = short = np.dtype("int16")
int32 = int = np.dtype("int32")
int64 = long = np.dtype("int64")
bool_ = np.dtype("bool")

DEFAULT_FLOAT = float32
SUPPORTED = (float16, float32, float64, int8, uint8, int16, int32, int64, bool_)

_NAMES = {"float": float32, "double": float64, "half": float16, "long": int64, "int": int32,
          "short": int16, "bool": bool_}


def as_dtype(spec) -> np.dtype:
    """``tn.float32``, ``"float32"``, ``np.float32`` or ``float`` to a supported NumPy dtype."""
    if spec is builtins.float:  # the Python type means double precision, as in PyTorch
        return float64
    if spec is builtins.int:
        return int64
    if spec is builtins.bool:
        return bool_
    if isinstance(spec, str) and spec in _NAMES:
        return _NAMES[spec]
    try:
        dtype = np.dtype(spec)
    except TypeError:
        raise TypeError(f"dtype: cannot interpret {spec!r} as a dtype") from None
    if dtype not in SUPPORTED:
        raise TypeError(f"dtype: {dtype} is not supported; use one of "
                        f"{', '.join(str(d) for d in SUPPORTED)}")
    return dtype


def is_floating(dtype) -> bool:
    return dtype.kind == "f"


def _category(dtype) -> int:
    return {"b": 0, "u": 1, "i": 1, "f": 2}[dtype.kind]


def result_type(first: np.dtype, second: np.dtype, first_is_0d=False, second_is_0d=False):
    """PyTorch's promotion of two tensor dtypes: the higher category wins outright
    (float beats int beats bool); within a category a 0-d tensor gives way to one with dims
    (it acts like a scalar), else the wider type wins.

    >>> result_type(float32, int64)
    dtype('float32')
    >>> result_type(int32, int64)
    dtype('int64')
    >>> result_type(float32, float64, second_is_0d=True)
    dtype('float32')
    """
    if first == second:
        return first
    first_category, second_category = _category(first), _category(second)
    if first_category != second_category:
        return first if first_category > second_category else second
    if first_is_0d != second_is_0d:
        return second if first_is_0d else first
    return np.promote_types(first, second)


def scalar_dtype(value, tensor_dtype: np.dtype) -> np.dtype:
    """The dtype a Python/NumPy scalar takes beside a tensor: the tensor's own, unless the scalar
    is of a higher category (a float scalar with an integer tensor gives the default float)."""
    if isinstance(value, (bool, np.bool_)):
        kind = "b"
    elif isinstance(value, (builtins.int, np.integer)):
        kind = "i"
    elif isinstance(value, (builtins.float, np.floating)):
        kind = "f"
    else:
        raise TypeError(f"expected a number, got {type(value).__name__}")
    scalar_category = {"b": 0, "i": 1, "f": 2}[kind]
    if scalar_category <= _category(tensor_dtype):
        return tensor_dtype
    return DEFAULT_FLOAT if kind == "f" else int64
