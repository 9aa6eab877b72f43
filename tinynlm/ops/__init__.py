"""Every tensor op, defined once for both devices; ``tinynlm`` re-exports them as ``tn.exp`` etc."""

from .common import sum_to
from .elementwise import (abs, add, bitwise_and, bitwise_not, bitwise_or, bitwise_xor, cast,
                          clamp, clone, cos, div, dropout, eq, erf, exp, ge, gelu,
                          gt, isfinite, isnan, le, log, logical_and, logical_not, logical_or, lt,
                          masked_fill, maximum, minimum, mul, ne, neg, pow, relu, rsqrt, sigmoid,
                          sign, silu, sin, softplus, sqrt, sub, tanh, to_device, where)
from .linalg import matmul
from .reduction import (all, amax, amin, any, argmax, argmin, log_softmax, logsumexp, max, mean,
                        min, softmax, std, sum, var)
from .shape import (array_index, cat, chunk, expand, flatten, gather, getitem, index_select,
                    permute, reshape, split, squeeze, stack, transpose, tril, triu, unbind, unsqueeze,
                    view)

__all__ = [name for name in dir() if not name.startswith("_")]
