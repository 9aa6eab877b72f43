"""Hypothesis strategies for shapes, broadcast pairs, dims and well-conditioned values.

Values come from a NumPy generator seeded by hypothesis (fast, and still shrinkable through the
seed). Each value domain keeps inputs away from kinks and poles, so finite differences are
meaningful: ``positive`` for log/sqrt, ``nonzero`` for abs/division, ``real`` elsewhere.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


def shapes(min_dims=0, max_dims=3, min_side=1, max_side=4):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=max_side)


def broadcast_pairs(max_dims=3, max_side=4):
    """Two shapes that broadcast together (dims of size 1 and missing leading dims included)."""
    return hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=max_dims,
                                             max_side=max_side).map(lambda result: result.input_shapes)


def dim_of(ndim):
    """One valid dim, negative ones included."""
    if ndim == 0:
        return st.sampled_from([0, -1])
    return st.integers(-ndim, ndim - 1)


def dims_of(ndim):
    """None, one dim or a tuple of distinct dims (negative ones included)."""
    if ndim == 0:
        return st.none()
    single = st.integers(-ndim, ndim - 1)
    several = st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).flatmap(
        lambda dims: st.tuples(*[st.sampled_from([d, d - ndim]) for d in dims]))
    return st.one_of(st.none(), single, several)


def real(rng, shape):
    return rng.standard_normal(shape)


def positive(rng, shape):
    return rng.uniform(0.3, 3.0, shape)


def nonzero(rng, shape):
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.3, 2.0, shape)


def distinct(rng, shape):
    """Values at least 0.01 apart (no ties for max/min and friends)."""
    size = int(np.prod(shape))
    return (rng.permutation(size) * 0.05 + rng.uniform(0, 0.01, size) - size * 0.025).reshape(shape)


def arrays(draw, shapes_, domain=real):
    """Draw one array per shape from ``domain`` (or from a list of domains, one per shape),
    all from one generator seeded by hypothesis so that inputs never repeat each other."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    domains = domain if isinstance(domain, list) else [domain] * len(shapes_)
    return [np.asarray(d(rng, shape), dtype=np.float64) for d, shape in zip(domains, shapes_)]
