"""Elementwise CPU kernels compiled by Numba."""

import math

import numba


@numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
def erf(x):
    """The error function, elementwise (NumPy has none; Numba compiles ``math.erf``)."""
    return math.erf(x)
