"""The kernel registry: which compiled implementation an op uses on which device.

Kernels live in ``tinynlm.kernels`` (the top-level ``kernels/`` folder of the source tree) and are
plain functions over arrays. They are imported lazily, the first time an op asks for one, so
``import tinynlm`` does not pay for Numba's compilation.

Two kinds of entry:

* ``KERNELS``: a single function an op cannot do without (NumPy has no ``erf``).
* ``FUSED``: a fused op, a module with ``<op>_forward`` and ``<op>_backward``, that replaces a
  composed op (written from ordinary tensor ops) where it supports the call. The composed
  version stays as the reference, and :func:`use_fused_kernels` switches the fused ones off
  (as does the environment variable ``TINYNLM_FUSED_KERNELS=0``), for comparisons and
  benchmarks.
"""

from __future__ import annotations

import importlib
import os
import warnings

import numpy as np

# (op name, device type) -> "module:function" of the kernel
KERNELS = {
    ("erf", "cpu"): "tinynlm.kernels.cpu_elementwise:erf",
    ("erf", "cuda"): "tinynlm.kernels.cuda_elementwise:erf",
    ("index_add_rows", "cpu"): "tinynlm.kernels.cpu_scatter:add_rows",
}

# (fused op, device type) -> module with `<op>_forward` and `<op>_backward`
FUSED = {
    ("gelu", "cpu"): "tinynlm.kernels.cpu_fused",
    ("softmax", "cpu"): "tinynlm.kernels.cpu_fused",
    ("layer_norm", "cpu"): "tinynlm.kernels.cpu_fused",
    ("cross_entropy", "cpu"): "tinynlm.kernels.cpu_fused",
    ("attention", "cpu"): "tinynlm.kernels.cpu_attention",
    ("lstm", "cpu"): "tinynlm.kernels.cpu_recurrence",
    ("gru", "cpu"): "tinynlm.kernels.cpu_recurrence",
    ("gelu", "cuda"): "tinynlm.kernels.cuda_fused",
    ("softmax", "cuda"): "tinynlm.kernels.cuda_fused",
    ("layer_norm", "cuda"): "tinynlm.kernels.cuda_fused",
    ("cross_entropy", "cuda"): "tinynlm.kernels.cuda_fused",
    ("attention", "cuda"): "tinynlm.kernels.cuda_attention",
}

_loaded = {}


def _device_type(xp) -> str:
    return "cpu" if xp is np else "cuda"


def kernel(op_name: str, xp):
    """The kernel registered for ``op_name`` on the device type that array module ``xp`` serves.

    >>> float(kernel("erf", np)(np.array([0.0]))[0])
    0.0
    """
    key = (op_name, _device_type(xp))
    function = _loaded.get(key)
    if function is None:
        if key not in KERNELS:
            raise NotImplementedError(f"{op_name}: no kernel registered for device type {key[1]}")
        module_name, _, attribute = KERNELS[key].partition(":")
        function = _loaded[key] = getattr(importlib.import_module(module_name), attribute)
    return function


class _FusedMode:
    enabled = os.environ.get("TINYNLM_FUSED_KERNELS", "1") != "0"


def fused_kernels_enabled() -> bool:
    """Whether ops use their fused kernels where they can (the default)."""
    return _FusedMode.enabled


class use_fused_kernels:
    """Turn the fused kernels on or off: called plainly it switches at once; as a context
    manager it restores the previous setting afterwards.

    >>> import tinynlm as tn
    >>> with tn.use_fused_kernels(False):
    ...     tn.fused_kernels_enabled()
    False
    >>> tn.fused_kernels_enabled()
    True
    """

    def __init__(self, enabled: bool):
        self.previous = _FusedMode.enabled
        _FusedMode.enabled = bool(enabled)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _FusedMode.enabled = self.previous
        return False


def fused(op_name: str, xp):
    """``(forward, backward)`` of the fused kernel for ``op_name`` on ``xp``'s device type, or
    None when fused kernels are off or none is available there (the op then runs composed).

    >>> forward, backward = fused("gelu", np)
    >>> round(float(forward(np.array([1.0]))[0]), 4)
    0.8413
    """
    if not _FusedMode.enabled:
        return None
    key = (op_name, _device_type(xp))
    pair = _loaded.get(key, False)
    if pair is False:
        pair = _loaded[key] = _import_fused(op_name, key)
    return pair


def _import_fused(op_name, key):
    if key not in FUSED:
        return None
    try:
        module = importlib.import_module(FUSED[key])
    except ImportError as error:  # e.g. numba-cuda missing: the composed ops still work
        warnings.warn(f"{op_name}: fused {key[1]} kernels unavailable ({error}); using the "
                      "composed version", RuntimeWarning, stacklevel=3)
        return None
    return getattr(module, f"{op_name}_forward"), getattr(module, f"{op_name}_backward")
