"""Elementwise CPU kernels compiled by Numba."""

import math

import numba


# Compiled eagerly on first import (about a second). No on-disk cache: in a source checkout this
# file is importable under two module names, and Numba's cache would pin one of them.
@numba.vectorize(["float32(float32)", "float64(float64)"])
def erf(x):
    """The error function, elementwise (NumPy has none; Numba compiles ``math.erf``)."""
    return math.erf(x)
