"""The kernel registry: which faster implementation an op uses on which device.

Kernels live in ``tinynlm.kernels`` (the top-level ``kernels/`` folder of the source tree) and are
plain functions over arrays. They are imported lazily, the first time an op asks for one, so
``import tinynlm`` does not pay for Numba's compilation.
"""

from __future__ import annotations

import importlib

import numpy as np

# (op name, device type) -> "module:function" of the kernel
KERNELS = {
    ("erf", "cpu"): "tinynlm.kernels.cpu_elementwise:erf",
    ("erf", "cuda"): "tinynlm.kernels.cuda_elementwise:erf",
}

_loaded = {}


def kernel(op_name: str, xp):
    """The kernel registered for ``op_name`` on the device type that array module ``xp`` serves.

    >>> import numpy as np
    >>> float(kernel("erf", np)(np.array([0.0]))[0])
    0.0
    """
    key = (op_name, "cpu" if xp is np else "cuda")
    function = _loaded.get(key)
    if function is None:
        if key not in KERNELS:
            raise NotImplementedError(f"{op_name}: no kernel registered for device type {key[1]}")
        module_name, _, attribute = KERNELS[key].partition(":")
        function = _loaded[key] = getattr(importlib.import_module(module_name), attribute)
    return function
