"""Vectorisable elementary functions for the CPU kernels (Numba).

LLVM vectorises a loop only when every call in it has a vector form, and libm's ``exp`` has
none, so a float32 loop calling ``math.exp`` runs one element at a time. :func:`exp_in_place`
computes ``exp`` from plain arithmetic instead: ``x = k ln 2 + r`` with ``|r| <= ln 2 / 2``
(Cody-Waite: ln 2 split in two so ``k ln 2`` is exact), a degree-6 polynomial for ``exp(r)``,
and ``2^k`` built from its exponent bits in an int32 scratch array. Relative error under 3e-7
(measured over [-87, 88]; float32's own rounding is 6e-8); ``exp(x)`` is 0 below -87 (and for
-inf, where the true value is under 2e-38) and saturates at ``exp(88)``.

>>> import numpy as np
>>> x = np.array([-np.inf, -100.0, -1.0, 0.0, 0.5, 10.0], np.float32)
>>> values = x.copy(); bits = np.empty(x.size, np.int32)
>>> exp_in_place(values, np.float32(0), bits)
>>> bool(np.allclose(values, np.exp(x), rtol=3e-7, atol=2e-38))
True
"""

import numba
import numpy as np


@numba.njit(cache=True, error_model="numpy")
def exp_in_place(values, shift, bits):
    """``values[i] = exp(values[i] - shift)`` for a 1-D float32 array; ``bits`` is an int32
    scratch at least as long. In place on purpose: with separate input and output arrays LLVM
    cannot rule out that they overlap and leaves the loop scalar (4x slower)."""
    n = values.size
    powers = bits[:n].view(np.float32)
    for i in range(n):
        value = np.float32(values[i] - shift)
        clipped = min(max(value, np.float32(-87.0)), np.float32(88.0))
        k = np.floor(clipped * np.float32(1.4426950408889634) + np.float32(0.5))
        r = (clipped - k * np.float32(0.693359375)) + k * np.float32(2.12194440e-4)
        # 2^k as float32 bits; 0.0 where exp underflows (and for -inf)
        bits[i] = (np.int32(k) + np.int32(127)) << 23 if not value < np.float32(-87.0) else 0
        values[i] = np.float32(1) + r * (np.float32(1) + r * (np.float32(0.5) + r * (
            np.float32(1 / 6) + r * (np.float32(1 / 24) + r * (np.float32(1 / 120)
                                                              + r * np.float32(1 / 720))))))
    for i in range(n):
        values[i] = values[i] * powers[i]
