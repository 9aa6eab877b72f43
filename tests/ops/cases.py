"""The op registry the generic tests run over.

Each entry is a hypothesis strategy that draws an :class:`Example`: a tinynlm function of some
tensors, an independent NumPy float64 reference of the same computation, and the input arrays.
Registering an op here gives it every generic check in ``test_generic.py``: forward against
NumPy, gradcheck, gradgradcheck, float32 against float64, and CPU against GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from hypothesis import strategies as st

import tinynlm as tn
from tests.strategies import (arrays, broadcast_pairs, dim_of, dims_of, distinct, nonzero,
                              positive, real, shapes)


@dataclass
class Example:
    fn: Callable          # tinynlm tensors -> Tensor or tuple of Tensors
    reference: Callable   # float64 NumPy arrays -> array or tuple of arrays
    arrays: list          # float64 inputs

    def __repr__(self):
        return f"Example(shapes={[a.shape for a in self.arrays]})"


CASES = {}  # name -> strategy of Example


def register(name):
    def decorate(builder):
        CASES[name] = st.composite(lambda draw: builder(draw))()
        return builder
    return decorate


def _erf(a):
    return np.vectorize(math.erf, otypes=[np.float64])(a)


def _away_from(points, domain=real):
    """A domain whose values keep at least 0.05 from each of ``points`` (kinks)."""
    def draw_values(rng, shape):
        values = domain(rng, shape)
        for point in points:
            close = np.abs(values - point) < 0.05
            values = np.where(close, point + 0.1 * np.where(values >= point, 1, -1), values)
        return values
    return draw_values


# ----------------------------------------------------------------------------- unary elementwise

UNARY = {
    "neg": (lambda x: -x, lambda a: -a, real),
    "exp": (tn.exp, np.exp, real),
    "log": (tn.log, np.log, positive),
    "sqrt": (tn.sqrt, np.sqrt, positive),
    "rsqrt": (tn.rsqrt, lambda a: 1 / np.sqrt(a), positive),
    "abs": (tn.abs, np.abs, nonzero),
    "sin": (tn.sin, np.sin, real),
    "cos": (tn.cos, np.cos, real),
    "tanh": (tn.tanh, np.tanh, real),
    "sigmoid": (tn.sigmoid, lambda a: 1 / (1 + np.exp(-a)), real),
    "relu": (tn.relu, lambda a: np.maximum(a, 0), nonzero),
    "gelu": (tn.gelu, lambda a: a * 0.5 * (1 + _erf(a / math.sqrt(2))), real),
    "gelu_tanh": (lambda x: tn.gelu(x, approximate="tanh"),
                  lambda a: 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a**3))),
                  real),
    "silu": (tn.silu, lambda a: a / (1 + np.exp(-a)), real),
    "softplus": (tn.softplus, lambda a: np.log1p(np.exp(a)), real),
    "softplus_beta_threshold": (lambda x: tn.softplus(x, beta=2.0, threshold=1.0),
                                lambda a: np.where(2 * a > 1, a, np.log1p(np.exp(2 * a)) / 2),
                                _away_from([0.5])),
    "erf": (tn.erf, _erf, real),
    "square": (lambda x: x ** 2, lambda a: a ** 2, real),
    "cube": (lambda x: x ** 3, lambda a: a ** 3, real),
    "pow_half": (lambda x: x ** 0.5, np.sqrt, positive),
    "pow_negative": (lambda x: x ** -1.5, lambda a: a ** -1.5, positive),
    "scalar_base_pow": (lambda x: 2.0 ** x, lambda a: 2.0 ** a, real),
    "clamp": (lambda x: x.clamp(-0.5, 0.5), lambda a: np.clip(a, -0.5, 0.5),
              _away_from([-0.5, 0.5])),
    "clamp_min": (lambda x: tn.clamp(x, min=0.2), lambda a: np.maximum(a, 0.2),
                  _away_from([0.2])),
    "scalar_arithmetic": (lambda x: (3.0 - x) * 2 / 4 + 1, lambda a: (3.0 - a) * 2 / 4 + 1, real),
    "scalar_division": (lambda x: 1.5 / x, lambda a: 1.5 / a, nonzero),
}


def _unary_builder(fn, reference, domain):
    def build(draw):
        return Example(fn, reference, arrays(draw, [draw(shapes())], domain))
    return build


for _name, (_fn, _reference, _domain) in UNARY.items():
    register(_name)(_unary_builder(_fn, _reference, _domain))


# ----------------------------------------------------------------------------- binary broadcast

BINARY = {
    "add": (lambda a, b: a + b, np.add, real, real),
    "sub": (lambda a, b: a - b, np.subtract, real, real),
    "mul": (lambda a, b: a * b, np.multiply, real, real),
    "div": (lambda a, b: a / b, np.divide, real, nonzero),
    "pow": (lambda a, b: a ** b, np.power, positive, real),
    "maximum": (tn.maximum, np.maximum, real, real),
    "minimum": (tn.minimum, np.minimum, real, real),
}


def _binary_builder(fn, reference, domain_a, domain_b):
    def build(draw):
        return Example(fn, reference, arrays(draw, draw(broadcast_pairs()), [domain_a, domain_b]))
    return build


for _name, (_fn, _reference, _domain_a, _domain_b) in BINARY.items():
    register(_name)(_binary_builder(_fn, _reference, _domain_a, _domain_b))


@register("where")
def _where(draw):
    shape_a, shape_b = draw(broadcast_pairs())
    a, b = arrays(draw, [shape_a, shape_b])
    condition = np.random.default_rng(draw(st.integers(0, 100))).random(
        np.broadcast_shapes(shape_a, shape_b)) < 0.5
    return Example(lambda x, y: tn.where(tn.tensor(condition), x, y),
                   lambda x, y: np.where(condition, x, y), [a, b])


@register("masked_fill")
def _masked_fill(draw):
    shape = draw(shapes())
    mask_shape = tuple(draw(st.sampled_from([1, size])) for size in shape)
    mask = np.random.default_rng(draw(st.integers(0, 100))).random(mask_shape) < 0.5
    return Example(lambda x: x.masked_fill(tn.tensor(mask), -2.5),
                   lambda a: np.where(mask, -2.5, a), arrays(draw, [shape]))


# ----------------------------------------------------------------------------- reductions


def _reduction(fn, reference, domain=real, min_side=1):
    def build(draw):
        # A variance needs two values: no 0-d inputs when min_side says so.
        shape = draw(shapes(min_dims=1 if min_side > 1 else 0, min_side=min_side))
        dim = draw(dims_of(len(shape)))
        keepdim = draw(st.booleans())
        axis = dim if dim is None or isinstance(dim, int) else tuple(dim)
        return Example(lambda x: fn(x, dim, keepdim), lambda a: reference(a, axis, keepdim),
                       arrays(draw, [shape], domain))
    return build


register("sum")(_reduction(lambda x, d, k: x.sum(d, keepdim=k),
                           lambda a, d, k: np.sum(a, axis=d, keepdims=k)))
register("mean")(_reduction(lambda x, d, k: x.mean(d, keepdim=k),
                            lambda a, d, k: np.mean(a, axis=d, keepdims=k)))
register("var")(_reduction(lambda x, d, k: x.var(d, keepdim=k),
                           lambda a, d, k: np.var(a, axis=d, keepdims=k, ddof=1), min_side=2))
register("var_biased")(_reduction(lambda x, d, k: x.var(d, unbiased=False, keepdim=k),
                                  lambda a, d, k: np.var(a, axis=d, keepdims=k), min_side=2))
register("std")(_reduction(lambda x, d, k: x.std(d, keepdim=k),
                           lambda a, d, k: np.std(a, axis=d, keepdims=k, ddof=1), min_side=2))
register("amax")(_reduction(lambda x, d, k: x.amax(d, keepdim=k),
                            lambda a, d, k: np.max(a, axis=d, keepdims=k), distinct))
register("amin")(_reduction(lambda x, d, k: x.amin(d, keepdim=k),
                            lambda a, d, k: np.min(a, axis=d, keepdims=k), distinct))
register("logsumexp")(_reduction(
    lambda x, d, k: x.logsumexp(d if d is not None else tuple(range(x.ndim)), keepdim=k),
    lambda a, d, k: np.log(np.sum(np.exp(a), axis=d, keepdims=k))))


def _along_dim(fn, reference, domain=real):
    def build(draw):
        shape = draw(shapes(min_dims=1))
        dim = draw(dim_of(len(shape)))
        return Example(lambda x: fn(x, dim), lambda a: reference(a, dim),
                       arrays(draw, [shape], domain))
    return build


def _softmax_reference(a, dim):
    e = np.exp(a - a.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


register("softmax")(_along_dim(tn.softmax, _softmax_reference))
register("log_softmax")(_along_dim(tn.log_softmax, lambda a, d: np.log(_softmax_reference(a, d))))
register("max_dim")(_along_dim(lambda x, d: x.max(dim=d).values,
                               lambda a, d: np.max(a, axis=d), distinct))
register("min_dim_keepdim")(_along_dim(lambda x, d: x.min(dim=d, keepdim=True).values,
                                       lambda a, d: np.min(a, axis=d, keepdims=True), distinct))
register("max_all")(_along_dim(lambda x, d: x.max(), lambda a, d: np.max(a), distinct))


# ----------------------------------------------------------------------------- shapes and indexing


@register("reshape")
def _reshape(draw):
    shape = draw(shapes())
    target = tuple(reversed(shape)) + (1,)
    return Example(lambda x: x.reshape(target), lambda a: a.reshape(target),
                   arrays(draw, [shape]))


@register("flatten")
def _flatten(draw):
    shape = draw(shapes(min_dims=2))
    start = draw(st.integers(0, len(shape) - 1))
    return Example(lambda x: x.flatten(start), lambda a: a.reshape(a.shape[:start] + (-1,)),
                   arrays(draw, [shape]))


@register("permute")
def _permute(draw):
    shape = draw(shapes(min_dims=1))
    order = draw(st.permutations(range(len(shape))))
    return Example(lambda x: x.permute(*order), lambda a: a.transpose(order), arrays(draw, [shape]))


@register("transpose")
def _transpose(draw):
    shape = draw(shapes(min_dims=2))
    dim0, dim1 = draw(dim_of(len(shape))), draw(dim_of(len(shape)))
    return Example(lambda x: x.transpose(dim0, dim1), lambda a: np.swapaxes(a, dim0, dim1),
                   arrays(draw, [shape]))


@register("expand")
def _expand(draw):
    shape = draw(shapes())
    target = (2,) + tuple(draw(st.sampled_from([size, 3])) if size == 1 else size
                          for size in shape)
    return Example(lambda x: x.expand(*target) * 1.0, lambda a: np.broadcast_to(a, target) * 1.0,
                   arrays(draw, [shape]))


@register("unsqueeze_squeeze")
def _unsqueeze_squeeze(draw):
    shape = draw(shapes())
    dim = draw(st.integers(-len(shape) - 1, len(shape)))
    return Example(lambda x: x.unsqueeze(dim).squeeze() * 2,
                   lambda a: np.squeeze(np.expand_dims(a, dim)) * 2, arrays(draw, [shape]))


@register("cat")
def _cat(draw):
    shape = draw(shapes(min_dims=1))
    dim = draw(dim_of(len(shape)))
    sizes = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    shapes_ = [shape[:dim % len(shape)] + (size,) + shape[dim % len(shape) + 1:] for size in sizes]
    return Example(lambda *xs: tn.cat(xs, dim), lambda *as_: np.concatenate(as_, axis=dim),
                   arrays(draw, shapes_))


@register("stack")
def _stack(draw):
    shape = draw(shapes())
    count = draw(st.integers(1, 3))
    dim = draw(st.integers(-len(shape) - 1, len(shape)))
    return Example(lambda *xs: tn.stack(xs, dim), lambda *as_: np.stack(as_, axis=dim),
                   arrays(draw, [shape] * count))


@register("split")
def _split(draw):
    shape = draw(shapes(min_dims=1))
    dim = draw(dim_of(len(shape)))
    size = draw(st.integers(1, 3))
    length = shape[dim]
    bounds = list(range(size, length, size))
    return Example(lambda x: tuple(p * (i + 1) for i, p in enumerate(x.split(size, dim))),
                   lambda a: tuple(p * (i + 1) for i, p in enumerate(np.split(a, bounds, axis=dim))),
                   arrays(draw, [shape]))


@register("chunk_partial_use")
def _chunk(draw):
    shape = draw(shapes(min_dims=1))
    dim = draw(dim_of(len(shape)))
    chunks = draw(st.integers(1, 4))
    length = shape[dim]
    step = max(-(-length // chunks), 1)
    bounds = list(range(step, length, step))
    # Only the first piece is used: the others get zero gradient.
    return Example(lambda x: x.chunk(chunks, dim)[0].exp(),
                   lambda a: np.exp(np.split(a, bounds, axis=dim)[0]), arrays(draw, [shape]))


def _index_patterns(shape):
    rows = shape[0]
    return [
        (slice(None, None, 2),),
        (0,),
        (Ellipsis, -1),
        (None, slice(1, None)),
        ([0, rows - 1, 0],),
        (np.array([[0, rows - 1], [rows - 1, rows - 1]]),),
        (slice(None), [1, 0, 1]),
        ([0, rows - 1], [1, 0]),
        (-1, Ellipsis, None),
    ]


@register("getitem")
def _getitem(draw):
    shape = draw(shapes(min_dims=2, min_side=2))
    index = draw(st.sampled_from(_index_patterns(shape)))
    return Example(lambda x: x[index], lambda a: a[index], arrays(draw, [shape]))


@register("getitem_tensor_index")
def _getitem_tensor(draw):
    shape = draw(shapes(min_dims=1, min_side=2))
    rng = np.random.default_rng(draw(st.integers(0, 100)))
    index = rng.integers(-shape[0], shape[0], size=(2, 3))  # repeats likely: gradients add up
    return Example(lambda x: x[tn.tensor(index)], lambda a: a[index], arrays(draw, [shape]))


@register("getitem_bool_mask")
def _getitem_mask(draw):
    shape = draw(shapes(min_dims=1))
    mask = np.random.default_rng(draw(st.integers(0, 100))).random(shape) < 0.5
    return Example(lambda x: x[tn.tensor(mask)], lambda a: a[mask], arrays(draw, [shape]))


@register("gather")
def _gather(draw):
    shape = draw(shapes(min_dims=1))
    dim = draw(dim_of(len(shape)))
    index_shape = tuple(draw(st.integers(1, size)) if i != dim % len(shape) else draw(st.integers(1, 4))
                        for i, size in enumerate(shape))
    index = np.random.default_rng(draw(st.integers(0, 100))).integers(0, shape[dim], index_shape)
    trim = tuple(slice(None) if i == dim % len(shape) else slice(0, size)
                 for i, size in enumerate(index_shape))
    return Example(lambda x: x.gather(dim, tn.tensor(index)),
                   lambda a: np.take_along_axis(a[trim], index, axis=dim), arrays(draw, [shape]))


@register("index_select")
def _index_select(draw):
    shape = draw(shapes(min_dims=1))
    dim = draw(dim_of(len(shape)))
    index = np.random.default_rng(draw(st.integers(0, 100))).integers(0, shape[dim], 4)
    return Example(lambda x: x.index_select(dim, tn.tensor(index)),
                   lambda a: np.take(a, index, axis=dim), arrays(draw, [shape]))


@register("tril_triu")
def _triangles(draw):
    shape = draw(shapes(min_dims=2))
    diagonal = draw(st.integers(-2, 2))
    return Example(lambda x: x.tril(diagonal) + x.triu(diagonal + 1) * 3,
                   lambda a: np.tril(a, diagonal) + np.triu(a, diagonal + 1) * 3,
                   arrays(draw, [shape]))


# ----------------------------------------------------------------------------- matmul


@register("matmul")
def _matmul(draw):
    m, n, p = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    batch_a, batch_b = draw(broadcast_pairs(max_dims=2, max_side=3))
    kind = draw(st.sampled_from(["vector_vector", "matrix_vector", "vector_matrix", "batched",
                                 "batched_by_matrix"]))
    shapes_ = {"vector_vector": [(n,), (n,)],
               "matrix_vector": [batch_a + (m, n), (n,)],
               "vector_matrix": [(n,), batch_b + (n, p)],
               "batched": [batch_a + (m, n), batch_b + (n, p)],
               "batched_by_matrix": [batch_a + (m, n), (n, p)]}[kind]
    return Example(lambda a, b: a @ b, np.matmul, arrays(draw, shapes_))
