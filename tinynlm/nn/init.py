"""Weight initialisation, in place, with PyTorch's formulas (``tinynlm.nn.init``).

Every function fills ``tensor`` without recording a graph, draws from the tensor's device
generator (seeded by ``tn.manual_seed``) and returns the tensor.
"""

from __future__ import annotations

import math

import numpy as np

from .. import backend


def _fill(tensor, array):
    tensor.data[...] = array.astype(tensor.dtype, copy=False)
    tensor._version[0] += 1  # a backward that saved the old values must refuse to run
    return tensor


def _draw_uniform(tensor, low, high):
    gen = backend.generator(tensor.device)
    draw_dtype = tensor.dtype if tensor.dtype in (np.float32, np.float64) else np.float32
    return gen.random(tensor.shape, dtype=draw_dtype) * (high - low) + low


def _draw_normal(tensor, mean, std):
    gen = backend.generator(tensor.device)
    draw_dtype = tensor.dtype if tensor.dtype in (np.float32, np.float64) else np.float32
    return gen.standard_normal(tensor.shape, dtype=draw_dtype) * std + mean


def calculate_gain(nonlinearity: str, param=None) -> float:
    """The recommended gain for a nonlinearity (PyTorch's table).

    >>> round(calculate_gain("tanh"), 4)
    1.6667
    """
    if nonlinearity in ("linear", "identity", "sigmoid", "conv1d", "conv2d", "conv3d"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def fan_in_and_fan_out(tensor):
    """``(fan_in, fan_out)`` of a weight of shape (out, in, *receptive field)."""
    if tensor.ndim < 2:
        raise ValueError(f"init: fan in and fan out need a tensor with at least 2 dims, got "
                         f"shape {tensor.shape}")
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def uniform_(tensor, a=0.0, b=1.0):
    """Fill with values drawn uniformly from [a, b).

    >>> import tinynlm as tn
    >>> w = uniform_(tn.empty(1000), -0.1, 0.1)
    >>> bool((w.abs() <= 0.1).all())
    True
    """
    return _fill(tensor, _draw_uniform(tensor, a, b))


def normal_(tensor, mean=0.0, std=1.0):
    """Fill with values drawn from a normal distribution."""
    return _fill(tensor, _draw_normal(tensor, mean, std))


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):
    """Fill with normal values redrawn until they land in [a, b]."""
    mass = 0.5 * (math.erf((b - mean) / (std * math.sqrt(2))) - math.erf((a - mean) / (std * math.sqrt(2))))
    if mass < 1e-3:
        raise ValueError(f"trunc_normal_: [{a}, {b}] holds only {mass:.2g} of N({mean}, {std}^2); "
                         "redrawing until values land there would take too long")
    values = _draw_normal(tensor, mean, std)
    outside = (values < a) | (values > b)
    while bool(outside.any()):
        values = tensor.xp.where(outside, _draw_normal(tensor, mean, std), values)
        outside = (values < a) | (values > b)
    return _fill(tensor, values)


def constant_(tensor, value):
    """Fill with ``value``.

    >>> import tinynlm as tn
    >>> constant_(tn.empty(2), 0.5).tolist()
    [0.5, 0.5]
    """
    tensor.data[...] = value
    tensor._version[0] += 1
    return tensor


def zeros_(tensor):
    return constant_(tensor, 0)


def ones_(tensor):
    return constant_(tensor, 1)


def xavier_uniform_(tensor, gain=1.0):
    """Glorot uniform: bound ``gain * sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor, gain=1.0):
    """Glorot normal: std ``gain * sqrt(2 / (fan_in + fan_out))``."""
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def _kaiming_std(tensor, a, mode, nonlinearity):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"kaiming init: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(fan) if fan else 0.0  # empty: no-op


def kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    """He uniform: bound ``sqrt(3) * gain / sqrt(fan)``. ``Linear`` uses ``a=sqrt(5)``, which
    gives ``1 / sqrt(fan_in)``."""
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    """He normal: std ``gain / sqrt(fan)``."""
    return normal_(tensor, 0.0, _kaiming_std(tensor, a, mode, nonlinearity))


def orthogonal_(tensor, gain=1.0):
    """Fill with a (semi-)orthogonal matrix (higher dims flattened after the first), scaled.

    >>> import tinynlm as tn
    >>> w = orthogonal_(tn.empty(3, 5, dtype=tn.float64))
    >>> bool(((w @ w.T) - tn.eye(3, dtype=tn.float64)).abs().max() < 1e-12)
    True
    """
    if tensor.ndim < 2:
        raise ValueError(f"orthogonal_: needs at least 2 dims, got shape {tensor.shape}")
    rows = tensor.shape[0]
    cols = tensor.numel() // max(rows, 1)
    flat = backend.to_host(_draw_normal(tensor, 0.0, 1.0)).reshape(rows, cols).astype(np.float64)
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    result = backend.move_array(np.ascontiguousarray(q.reshape(tensor.shape) * gain), tensor.device)
    return _fill(tensor, result)
