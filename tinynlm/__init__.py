"""tinynlm: a small deep learning engine for neural language models, on NumPy and CuPy.

>>> import tinynlm as tn
>>> x = tn.tensor([1.0, 2.0, 3.0], requires_grad=True)
>>> (x.exp() * 2).sum().backward()
>>> [round(v, 3) for v in x.grad.tolist()]
[5.437, 14.778, 40.171]
"""

import os as _os

# In a source checkout the kernels/ folder sits beside this package; an install maps it to
# tinynlm.kernels. Let the checkout import it under the same name.
_source_kernels = _os.path.join(_os.path.dirname(__path__[0]), "kernels", "__init__.py")
if not _os.path.isdir(_os.path.join(__path__[0], "kernels")) and _os.path.isfile(_source_kernels):
    __path__.append(_os.path.dirname(__path__[0]))

from . import cuda, nn, ops  # noqa: E402
from .autograd import (enable_grad, grad, is_grad_enabled, no_grad,  # noqa: E402
                       set_grad_enabled)
from .backend import Device as device  # noqa: E402
from .backend import manual_seed  # noqa: E402
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
