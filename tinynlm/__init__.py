"""tinynlm: a small deep learning engine for neural language models, on NumPy and CuPy.

>>> import tinynlm as tn
>>> x = tn.tensor([1.0, 2.0, 3.0], requires_grad=True)
>>> (x.exp() * 2).sum().backward()
>>> [round(v, 3) for v in x.grad.tolist()]
[5.437, 14.778, 40.171]
"""

import sys as _sys

from . import process as _process

# Before anything imports NumPy: see tinynlm/process.py for what these do and how to opt out.
_process.set_openblas_thread_timeout(numpy_loaded="numpy" in _sys.modules)
_process.keep_freed_memory()


def _load_source_kernels():
    """In a source checkout ``kernels/`` sits beside this package (an install maps it to
    ``tinynlm.kernels``); load it under that name so the checkout works the same way."""
    import importlib.util
    import os
    import sys

    package_dir = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(package_dir, "kernels", "__init__.py")
    source = os.path.join(os.path.dirname(package_dir), "kernels", "__init__.py")
    if os.path.isfile(installed) or not os.path.isfile(source) or "tinynlm.kernels" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        "tinynlm.kernels", source, submodule_search_locations=[os.path.dirname(source)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["tinynlm.kernels"] = module
    spec.loader.exec_module(module)


_load_source_kernels()

from . import cuda, kernels, nn, ops, optim  # noqa: E402
from .autograd import (enable_grad, grad, is_grad_enabled, no_grad,  # noqa: E402
                       set_grad_enabled)
from .backend import Device as device  # noqa: E402
from .dispatch import fused_kernels_enabled, use_fused_kernels  # noqa: E402
from .backend import get_rng_state, manual_seed, set_rng_state  # noqa: E402
from .creation import (arange, empty, eye, from_numpy, full, full_like, linspace,  # noqa: E402
                       ones, ones_like, rand, rand_like, randint, randn, randn_like, tensor,
                       zeros, zeros_like)
from .dtypes import (bool_ as bool, double, float, float16, float32, float64, half,  # noqa: E402
                     int, int8, int16, int32, int64, long, short, uint8)
from .gradcheck import GradcheckError, gradcheck, gradgradcheck  # noqa: E402
from .ops import *  # noqa: E402,F401,F403
from .tensor import Tensor  # noqa: E402
from .serialization import load, save  # noqa: E402

__version__ = "0.1.0"
