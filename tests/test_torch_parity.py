"""Parity with PyTorch: forward values, gradients, output dtypes and shapes of every op.

PyTorch is an optional oracle: the whole module is skipped when it is not installed.

Each case in ``CASES`` is ``(name, fn, inputs)``. ``fn(m, *xs)`` is written once against a module
``m``: it runs with ``m = tinynlm`` on tinynlm tensors and with ``m = TORCH_API`` (``torch``, plus
``torch.nn.functional``'s ``gelu``/``silu``/``softplus``/``dropout``) on torch tensors built from
the same seeded NumPy arrays. ``inputs`` are makers ``rng -> ndarray``: floating arrays become
tensors that require grad, integer and bool arrays become constant tensors.

For every case, in float64 (tight tolerances) and float32 (loose tolerances), the test checks:

* each output's shape, dtype, ``requires_grad`` and values against torch's;
* the gradient of a random-weighted sum of the float outputs (a random ``grad_outputs`` for each)
  with respect to every floating input, tinynlm's ``tn.grad`` against ``torch.autograd.grad``.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

import tinynlm as tn

torch = pytest.importorskip("torch", reason="PyTorch is an optional oracle for the parity tests")
F = torch.nn.functional


class _TorchAPI:
    """``torch`` with the few functions that live in ``torch.nn.functional`` added."""

    gelu = staticmethod(F.gelu)
    silu = staticmethod(F.silu)
    softplus = staticmethod(F.softplus)
    dropout = staticmethod(F.dropout)

    def __getattr__(self, name):
        return getattr(torch, name)


TORCH_API = _TorchAPI()

TOLERANCES = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-5)}


# ----------------------------------------------------------------------------- input makers


def N(*shape, scale=1.0):
    """Standard normal values (times ``scale``)."""
    return lambda rng: rng.standard_normal(shape) * scale


def U(low, high, *shape):
    """Uniform values in ``[low, high)``."""
    return lambda rng: rng.uniform(low, high, shape)


def P(*shape):
    """Positive values in [0.5, 2): for log, sqrt, rsqrt, division, pow bases."""
    return U(0.5, 2.0, *shape)


def NZ(*shape):
    """Values with |v| in [0.5, 2) and a random sign: away from zero."""
    return lambda rng: rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)


def TIES(*shape, levels=3):
    """Small integers as floats: many exact ties."""
    return lambda rng: rng.integers(0, levels, shape).astype(np.float64)


def INTS(high, *shape):
    """An int64 constant in ``[0, high)`` (repeats likely)."""
    return lambda rng: rng.integers(0, high, shape).astype(np.int64)


def MASK(*shape):
    """A bool constant."""
    return lambda rng: rng.random(shape) < 0.5


def C(value):
    """A fixed array."""
    return lambda rng: np.asarray(value)


# ----------------------------------------------------------------------------- the cases

CASES = []


def case(name, fn, *inputs):
    CASES.append(pytest.param(name, fn, inputs, id=name))


# arithmetic, with broadcasting and Python numbers on either side
case("add", lambda m, a, b: a + b, N(4, 3), N(3))
case("add_broadcast_both", lambda m, a, b: a + b, N(2, 1, 3), N(4, 1))
case("add_0d", lambda m, a, b: a + b, N(3), N())
case("add_scalar", lambda m, a: a + 2.5, N(4, 3))
case("radd_scalar", lambda m, a: 2.5 + a, N(4, 3))
case("add_fn", lambda m, a, b: m.add(a, b), N(2, 3), N(2, 1))
case("sub", lambda m, a, b: a - b, N(4, 3), N(4, 1))
case("rsub_scalar", lambda m, a: 1.5 - a, N(4, 3))
case("mul", lambda m, a, b: a * b, N(2, 3, 4), N(3, 1))
case("mul_scalar", lambda m, a: a * -3.0, N(4, 3))
case("rmul_scalar", lambda m, a: -3.0 * a, N(4, 3))
case("mul_same_tensor", lambda m, a: a * a, N(4, 3))
case("div", lambda m, a, b: a / b, N(4, 3), NZ(3))
case("div_broadcast_both", lambda m, a, b: a / b, N(4, 1), NZ(1, 3))
case("div_scalar", lambda m, a: a / 4.0, N(4, 3))
case("rdiv_scalar", lambda m, a: 2.0 / a, NZ(4, 3))
case("pow_tensor_tensor", lambda m, a, b: a ** b, P(4, 3), N(4, 3))
case("pow_tensor_tensor_broadcast", lambda m, a, b: a ** b, P(4, 3), N(3))
case("pow_fn_tensor_tensor", lambda m, a, b: m.pow(a, b), P(2, 3), N(2, 1))
case("pow_scalar_2", lambda m, a: a ** 2, N(4, 3))
case("pow_scalar_3", lambda m, a: a ** 3, N(4, 3))
case("pow_scalar_0", lambda m, a: a ** 0, N(4, 3))
case("pow_scalar_1", lambda m, a: a ** 1, N(4, 3))
case("pow_scalar_neg1", lambda m, a: a ** -1, NZ(4, 3))
case("pow_scalar_half", lambda m, a: a ** 0.5, P(4, 3))
case("pow_scalar_2_5", lambda m, a: a ** 2.5, P(4, 3))
case("pow_scalar_neg_half", lambda m, a: a ** -0.5, P(4, 3))
case("pow_method_scalar", lambda m, a: a.pow(3.0), N(4, 3))
case("pow_scalar_base", lambda m, a: 2.0 ** a, N(4, 3))
case("pow_scalar_base_half", lambda m, a: 0.5 ** a, N(4, 3))

# matmul in every PyTorch case
case("matmul_1d_1d", lambda m, a, b: a @ b, N(3), N(3))
case("matmul_2d_1d", lambda m, a, b: a @ b, N(3, 4), N(4))
case("matmul_1d_2d", lambda m, a, b: a @ b, N(4), N(4, 5))
case("matmul_1d_3d", lambda m, a, b: a @ b, N(4), N(2, 4, 5))
case("matmul_3d_1d", lambda m, a, b: a @ b, N(2, 3, 4), N(4))
case("matmul_2d_2d", lambda m, a, b: a @ b, N(3, 4), N(4, 5))
case("matmul_btc_cd", lambda m, a, b: a @ b, N(2, 3, 4), N(4, 5))
case("matmul_2d_3d", lambda m, a, b: a @ b, N(3, 4), N(2, 4, 5))
case("matmul_batched", lambda m, a, b: a @ b, N(2, 3, 4), N(2, 4, 5))
case("matmul_batched_broadcast", lambda m, a, b: a @ b, N(2, 1, 3, 4), N(5, 4, 2))
case("matmul_4d_2d", lambda m, a, b: a @ b, N(2, 2, 3, 4), N(4, 2))
case("matmul_fn", lambda m, a, b: m.matmul(a, b), N(2, 3, 4), N(4))

# unary math and activations
case("neg", lambda m, x: -x, N(4, 3))
case("neg_fn", lambda m, x: m.neg(x), N(4, 3))
case("exp", lambda m, x: m.exp(x), N(4, 3))
case("log", lambda m, x: m.log(x), P(4, 3))
case("sqrt", lambda m, x: m.sqrt(x), P(4, 3))
case("rsqrt", lambda m, x: m.rsqrt(x), P(4, 3))
case("abs", lambda m, x: m.abs(x), NZ(4, 3))
case("sin", lambda m, x: m.sin(x), N(4, 3, scale=3))
case("cos", lambda m, x: m.cos(x), N(4, 3, scale=3))
case("tanh", lambda m, x: m.tanh(x), N(4, 3, scale=2))
case("sigmoid", lambda m, x: m.sigmoid(x), N(4, 5, scale=6))
case("relu", lambda m, x: m.relu(x), NZ(4, 3))
case("gelu", lambda m, x: m.gelu(x), N(4, 5, scale=3))
case("gelu_tanh", lambda m, x: m.gelu(x, approximate="tanh"), N(4, 5, scale=3))
case("silu", lambda m, x: m.silu(x), N(4, 5, scale=3))
case("softplus", lambda m, x: m.softplus(x), N(4, 5, scale=3))
case("softplus_default_threshold", lambda m, x: m.softplus(x), U(-40, 40, 4, 5))
case("softplus_beta2_threshold5", lambda m, x: m.softplus(x, 2.0, 5.0), U(-6, 6, 4, 5))
case("softplus_beta_half_threshold1", lambda m, x: m.softplus(x, 0.5, 1.0), U(-6, 6, 4, 5))
case("erf", lambda m, x: m.erf(x), N(4, 5, scale=2))
case("method_chain", lambda m, x: x.exp().sin().tanh(), N(4, 3))

# elementwise selection
case("maximum", lambda m, a, b: m.maximum(a, b), N(4, 3), N(3))
case("minimum", lambda m, a, b: m.minimum(a, b), N(4, 3), N(4, 1))
case("maximum_ties", lambda m, a, b: m.maximum(a, b), TIES(4, 5), TIES(4, 5))
case("minimum_ties", lambda m, a, b: m.minimum(a, b), TIES(4, 5), TIES(4, 5))
case("maximum_ties_broadcast", lambda m, a, b: m.maximum(a, b), TIES(4, 5), TIES(5))
case("minimum_ties_broadcast", lambda m, a, b: m.minimum(a, b), TIES(4, 1), TIES(5))
case("clamp_scalar", lambda m, x: x.clamp(-0.5, 0.7), N(4, 5))
case("clamp_scalar_min", lambda m, x: x.clamp(min=0.1), N(4, 5))
case("clamp_scalar_max", lambda m, x: x.clamp(max=-0.2), N(4, 5))
case("clamp_fn_scalar", lambda m, x: m.clamp(x, -0.3, 0.3), N(4, 5))
case("clamp_scalar_at_bounds", lambda m, x: x.clamp(0.0, 1.0), TIES(4, 5))
case("clamp_tensor", lambda m, x, lo, hi: x.clamp(lo, hi),
     N(4, 5), U(-0.8, -0.2, 5), U(0.2, 0.8, 4, 5))
case("clamp_tensor_min", lambda m, x, lo: x.clamp(min=lo), N(4, 5), N(4, 1))
case("clamp_tensor_max", lambda m, x, hi: x.clamp(max=hi), N(4, 5), N(5))
case("clamp_tensor_at_bounds", lambda m, x, lo, hi: x.clamp(lo, hi),
     TIES(4, 5), C(np.zeros(5)), C(np.ones((4, 5)) + np.eye(4, 5)))
case("where", lambda m, c, a, b: m.where(c, a, b), MASK(4, 3), N(4, 3), N(3))
case("where_broadcast_condition", lambda m, c, a, b: m.where(c, a, b), MASK(4, 1), N(4, 3), N(4, 3))
case("where_scalar_other", lambda m, c, a: m.where(c, a, 0.0), MASK(4, 3), N(4, 3))
case("where_scalar_input", lambda m, c, b: m.where(c, -1.5, b), MASK(4, 3), N(4, 3))
case("where_from_comparison", lambda m, a: m.where(a > 0, a, a * 0.1), NZ(4, 3))
case("masked_fill", lambda m, x, k: x.masked_fill(k, -2.5), N(4, 3), MASK(4, 3))
case("masked_fill_broadcast_mask", lambda m, x, k: x.masked_fill(k, 7.0), N(2, 4, 3), MASK(1, 3))
case("masked_fill_neg_inf", lambda m, x, k: x.masked_fill(k, float("-inf")), N(4, 3), MASK(4, 3))
case("masked_fill_tensor_value", lambda m, x, k, v: x.masked_fill(k, v), N(4, 3), MASK(4, 3), N())
case("masked_fill_fn", lambda m, x, k: m.masked_fill(x, k, 0.0), N(4, 3), MASK(4, 1))

# reductions
for dim, keepdim in [(None, False), (None, True), (1, False), (-1, True), ((0, 2), False),
                     ((0, 2), True), ((-1, 0), False)]:
    tag = f"dim{dim}_keep{keepdim}".replace(" ", "")
    case(f"sum_{tag}", lambda m, x, d=dim, k=keepdim: x.sum(dim=d, keepdim=k), N(2, 3, 4))
    case(f"mean_{tag}", lambda m, x, d=dim, k=keepdim: x.mean(dim=d, keepdim=k), N(2, 3, 4))
    case(f"amax_{tag}", lambda m, x, d=dim, k=keepdim: x.amax(dim=d, keepdim=k), N(2, 3, 4))
    case(f"amin_{tag}", lambda m, x, d=dim, k=keepdim: x.amin(dim=d, keepdim=k), N(2, 3, 4))
    case(f"amax_ties_{tag}", lambda m, x, d=dim, k=keepdim: x.amax(dim=d, keepdim=k), TIES(2, 3, 4))
    case(f"amin_ties_{tag}", lambda m, x, d=dim, k=keepdim: x.amin(dim=d, keepdim=k), TIES(2, 3, 4))
case("sum_fn", lambda m, x: m.sum(x, 1), N(3, 4))
case("mean_fn", lambda m, x: m.mean(x, (0, 1)), N(3, 4))
case("amax_fn", lambda m, x: m.amax(x, 0), N(3, 4))
case("amin_fn", lambda m, x: m.amin(x, -1), N(3, 4))
for stat in ("var", "std"):
    for label, kwargs in [
        ("default", {}),
        ("dim1", dict(dim=1)),
        ("dim1_biased", dict(dim=1, unbiased=False)),
        ("dim1_unbiased_keepdim", dict(dim=1, unbiased=True, keepdim=True)),
        ("dims02_keepdim", dict(dim=(0, 2), keepdim=True)),
        ("dimneg1_correction0", dict(dim=-1, correction=0)),
        ("dim0_correction2", dict(dim=0, correction=2)),
        ("all_biased", dict(unbiased=False)),
        ("all_correction0", dict(dim=None, correction=0)),
        ("all_keepdim", dict(dim=None, keepdim=True)),
    ]:
        case(f"{stat}_{label}", lambda m, x, s=stat, kw=kwargs: getattr(x, s)(**kw), N(3, 4, 5))
case("var_fn", lambda m, x: m.var(x, 1), N(3, 4))
case("std_fn", lambda m, x: m.std(x, 0, keepdim=True), N(3, 4))
case("max_dim", lambda m, x: x.max(dim=1), N(3, 4, 5))
case("max_dim_keepdim", lambda m, x: x.max(dim=-1, keepdim=True), N(3, 4, 5))
case("min_dim", lambda m, x: x.min(dim=0), N(3, 4, 5))
case("min_dim_keepdim", lambda m, x: x.min(dim=2, keepdim=True), N(3, 4, 5))
case("max_dim_values_only", lambda m, x: x.max(dim=1).values, N(3, 4))
case("min_dim_indices_only", lambda m, x: x.min(dim=1).indices, N(3, 4))
case("max_fn_dim", lambda m, x: m.max(x, 1), N(3, 4))
case("max_dim_1d", lambda m, x: x.max(dim=0), N(6))
case("max_all", lambda m, x: x.max(), N(3, 4))
case("min_all", lambda m, x: x.min(), N(3, 4))
case("max_all_ties", lambda m, x: x.max(), TIES(3, 4))
case("min_all_ties", lambda m, x: x.min(), TIES(3, 4))
case("argmax", lambda m, x: x.argmax(), N(3, 4))
case("argmax_dim", lambda m, x: x.argmax(dim=1), N(3, 4, 5))
case("argmax_dim_keepdim", lambda m, x: x.argmax(dim=-1, keepdim=True), N(3, 4, 5))
case("argmax_none_keepdim", lambda m, x: x.argmax(keepdim=True), N(3, 4))
case("argmax_fn", lambda m, x: m.argmax(x, 0), N(3, 4))
case("argmax_ties_first", lambda m, x: x.argmax(dim=1), TIES(4, 6))
case("argmin_dim", lambda m, x: x.argmin(dim=0), N(3, 4))
case("logsumexp", lambda m, x: m.logsumexp(x, 1), N(3, 4, 5))
case("logsumexp_keepdim", lambda m, x: x.logsumexp(-1, keepdim=True), N(3, 4, 5))
case("logsumexp_dims", lambda m, x: m.logsumexp(x, (0, 2)), N(3, 4, 5))
case("logsumexp_1e4", lambda m, x: m.logsumexp(x, -1), N(3, 5, scale=1e4))
case("softmax_last", lambda m, x: m.softmax(x, -1), N(3, 4, 5, scale=2))
case("softmax_first", lambda m, x: m.softmax(x, 0), N(3, 4, 5, scale=2))
case("softmax_method", lambda m, x: x.softmax(1), N(3, 4))
case("softmax_1d", lambda m, x: m.softmax(x, 0), N(6))
case("softmax_1e4", lambda m, x: m.softmax(x, -1), N(3, 5, scale=1e4))
case("log_softmax_last", lambda m, x: m.log_softmax(x, -1), N(3, 4, 5, scale=2))
case("log_softmax_mid", lambda m, x: m.log_softmax(x, 1), N(3, 4, 5, scale=2))
case("log_softmax_method", lambda m, x: x.log_softmax(0), N(3, 4))
case("log_softmax_1e4", lambda m, x: m.log_softmax(x, -1), N(3, 5, scale=1e4))
case("log_softmax_1e4_dim0", lambda m, x: m.log_softmax(x, 0), N(4, 3, scale=1e4))

# views and shapes
case("reshape", lambda m, x: x.reshape(4, -1), N(2, 3, 4))
case("reshape_tuple", lambda m, x: x.reshape((3, 8)), N(2, 3, 4))
case("reshape_same_shape", lambda m, x: x.reshape(2, 3, 4), N(2, 3, 4))
case("reshape_fn", lambda m, x: m.reshape(x, (-1,)), N(2, 3, 4))
case("reshape_to_0d", lambda m, x: x.reshape(()), N(1, 1))
case("view", lambda m, x: x.view(6, 4), N(2, 3, 4))
case("view_minus1", lambda m, x: x.view(-1, 2), N(2, 3, 4))
case("flatten", lambda m, x: x.flatten(), N(2, 3, 4))
case("flatten_start1", lambda m, x: x.flatten(1), N(2, 3, 4))
case("flatten_0_1", lambda m, x: x.flatten(0, 1), N(2, 3, 4))
case("flatten_fn", lambda m, x: m.flatten(x, 1, -1), N(2, 3, 4, 2))
case("transpose", lambda m, x: x.transpose(0, 2), N(2, 3, 4))
case("transpose_neg", lambda m, x: x.transpose(-1, -2), N(2, 3, 4))
case("transpose_fn", lambda m, x: m.transpose(x, 0, 1), N(2, 3))
case("T_2d", lambda m, x: x.T, N(2, 3))
case("mT", lambda m, x: x.mT, N(2, 3, 4))
case("permute", lambda m, x: x.permute(2, 0, 1), N(2, 3, 4))
case("permute_tuple", lambda m, x: x.permute((1, 2, 0)), N(2, 3, 4))
case("permute_fn_neg", lambda m, x: m.permute(x, (-1, 0, 1)), N(2, 3, 4))
case("expand", lambda m, x: x.expand(4, 3), N(1, 3))
case("expand_new_dims", lambda m, x: x.expand(2, 3, 4), N(3, 1))
case("expand_minus1", lambda m, x: x.expand(5, -1, 4), N(3, 1))
case("expand_as", lambda m, x, y: x.expand_as(y) * y, N(3, 1), N(2, 3, 4))
case("unsqueeze0", lambda m, x: x.unsqueeze(0), N(2, 3))
case("unsqueeze1", lambda m, x: x.unsqueeze(1), N(2, 3))
case("unsqueeze_neg1", lambda m, x: x.unsqueeze(-1), N(2, 3))
case("unsqueeze_fn", lambda m, x: m.unsqueeze(x, -2), N(2, 3))
case("squeeze_all", lambda m, x: x.squeeze(), N(2, 1, 3, 1))
case("squeeze_dim", lambda m, x: x.squeeze(1), N(2, 1, 3, 1))
case("squeeze_dim_neg", lambda m, x: x.squeeze(-1), N(2, 1, 3, 1))
case("squeeze_non_one_is_noop", lambda m, x: x.squeeze(0), N(2, 1, 3, 1))
case("squeeze_tuple", lambda m, x: x.squeeze((1, 3)), N(2, 1, 3, 1))
case("squeeze_fn", lambda m, x: m.squeeze(x, 0), N(1, 3))

# join and split
case("cat_dim0", lambda m, a, b, c: m.cat([a, b, c]), N(2, 3), N(1, 3), N(4, 3))
case("cat_dim1", lambda m, a, b: m.cat([a, b], dim=1), N(2, 3), N(2, 5))
case("cat_dim_neg", lambda m, a, b: m.cat((a, b), -1), N(2, 3, 1), N(2, 3, 2))
case("cat_same_tensor", lambda m, a: m.cat([a, a * 2, a], 0), N(2, 3))
case("cat_single", lambda m, a: m.cat([a], 0), N(2, 3))
case("stack_dim0", lambda m, a, b, c: m.stack([a, b, c]), N(2, 3), N(2, 3), N(2, 3))
case("stack_dim1", lambda m, a, b: m.stack([a, b], dim=1), N(2, 3), N(2, 3))
case("stack_dim_neg", lambda m, a, b: m.stack((a, b), -1), N(2, 3), N(2, 3))
case("split_int", lambda m, x: m.split(x, 2), N(5, 3))
case("split_int_dim1", lambda m, x: m.split(x, 3, dim=1), N(2, 7))
case("split_int_larger_than_dim", lambda m, x: m.split(x, 8), N(5, 3))
case("split_list", lambda m, x: m.split(x, [1, 3, 1]), N(5, 3))
case("split_list_dim_neg", lambda m, x: x.split([2, 2], dim=-1), N(3, 4))
case("split_method_int", lambda m, x: x.split(2, 1), N(3, 5))
case("split_partial_use", lambda m, x: m.split(x, 2)[1], N(5, 3))
case("chunk_uneven_5_3", lambda m, x: m.chunk(x, 3), N(5))
case("chunk_uneven_6_4", lambda m, x: m.chunk(x, 4), N(6, 2))
case("chunk_even", lambda m, x: m.chunk(x, 2, dim=1), N(3, 4))
case("chunk_more_than_length", lambda m, x: x.chunk(5), N(3, 2))
case("chunk_method_dim", lambda m, x: x.chunk(3, dim=-1), N(2, 7))

# indexing
case("getitem_int", lambda m, x: x[1], N(3, 4))
case("getitem_neg_int", lambda m, x: x[-1], N(3, 4))
case("getitem_int_int", lambda m, x: x[1, -2], N(3, 4))
case("getitem_slice", lambda m, x: x[1:3], N(5, 4))
case("getitem_slice_step", lambda m, x: x[::2, 1::2], N(5, 4))
case("getitem_slice_past_end", lambda m, x: x[1:100:3], N(8, 2))
case("getitem_slice_neg_bounds", lambda m, x: x[-4:-1:2, :-1], N(5, 4))
case("getitem_none", lambda m, x: x[None], N(3, 4))
case("getitem_none_mid", lambda m, x: x[:, None, 1:], N(3, 4))
case("getitem_ellipsis", lambda m, x: x[..., 1], N(2, 3, 4))
case("getitem_ellipsis_none", lambda m, x: x[0, ..., None, ::2], N(2, 3, 4))
case("getitem_list_repeated", lambda m, x: x[[0, 2, 0]], N(3, 4))
case("getitem_list_negative", lambda m, x: x[[-1, 0, -1]], N(3, 4))
case("getitem_tensor_repeated", lambda m, x: x[m.tensor([2, 0, 2, 2])], N(3, 4))
case("getitem_tensor_negative", lambda m, x: x[m.tensor([-1, 0, -1])], N(3, 4))
case("getitem_empty_list", lambda m, x: x[[]], N(3, 4))
case("getitem_tensor_2d", lambda m, x: x[m.tensor([[0, 1], [1, 1], [2, 0]])], N(3, 4))
case("getitem_tensor_2d_input", lambda m, x, i: x[i], N(5, 4), INTS(5, 3, 6))
case("getitem_bool_mask", lambda m, x, k: x[k], N(3, 4), C(np.array([[1, 0, 1, 1], [0, 0, 0, 1],
                                                                        [1, 1, 0, 0]], bool)))
case("getitem_bool_mask_rows", lambda m, x, k: x[k], N(4, 3), C(np.array([1, 0, 1, 1], bool)))
case("getitem_bool_mask_from_values", lambda m, x: x[x > 0], NZ(4, 3))
case("getitem_slice_then_list", lambda m, x: x[:, [0, 2, 0]], N(3, 4))
case("getitem_two_lists", lambda m, x: x[[0, 1], [1, 2]], N(3, 4))
case("getitem_two_lists_repeated", lambda m, x: x[[0, 0, 2], [1, 1, 3]], N(3, 4))
case("getitem_lists_around_slice", lambda m, x: x[[0, 1], :, [1, 0]], N(2, 3, 4))
case("getitem_slice_list_slice", lambda m, x: x[1:, [2, 0, 2], ::2], N(3, 4, 5))
case("getitem_list_ellipsis", lambda m, x: x[..., [3, 0, 3]], N(2, 3, 4))
case("getitem_int_list_adjacent", lambda m, x: x[1, [0, 2, 0]], N(3, 4))
case("getitem_int_slice_list", lambda m, x: x[:, 1, :, [0, 1]], N(2, 3, 4, 5))
case("getitem_0d_int_tensor", lambda m, x: x[m.tensor(2)], N(3, 4))
case("getitem_slice_bool_mask", lambda m, x: x[:, m.tensor([True, False, True, True])], N(3, 4))
case("gather_dim1", lambda m, x, i: m.gather(x, 1, i), N(3, 4), INTS(4, 3, 5))
case("gather_dim0", lambda m, x, i: x.gather(0, i), N(3, 4), INTS(3, 2, 4))
case("gather_smaller_index", lambda m, x, i: x.gather(1, i), N(4, 5), INTS(5, 2, 3))
case("gather_3d_neg_dim", lambda m, x, i: x.gather(-1, i), N(2, 3, 4), INTS(4, 2, 3, 6))
case("index_select_dim0", lambda m, x, i: m.index_select(x, 0, i), N(4, 3), C(np.array([2, 0, 2])))
case("index_select_dim1", lambda m, x, i: x.index_select(1, i), N(4, 3), C(np.array([1])))
case("index_select_neg_dim", lambda m, x, i: x.index_select(-1, i), N(2, 3, 4), INTS(4, 6))
for diagonal in (0, 1, -1, 2, -3, 7):
    case(f"tril_diag{diagonal}", lambda m, x, d=diagonal: m.tril(x, d), N(4, 5))
    case(f"triu_diag{diagonal}", lambda m, x, d=diagonal: m.triu(x, d), N(4, 5))
case("tril_batched", lambda m, x: x.tril(1), N(2, 3, 4))
case("triu_batched", lambda m, x: x.triu(-1), N(2, 4, 3))
case("tril_method_default", lambda m, x: x.tril(), N(3, 3))
case("triu_method_default", lambda m, x: x.triu(), N(3, 3))


# ----------------------------------------------------------------------------- the harness


def _outputs(result):
    return list(result) if isinstance(result, (tuple, list)) else [result]


def _torch_dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def _make_inputs(arrays, float_dtype):
    """tinynlm and torch tensors from the same arrays; floats require grad."""
    tn_inputs, torch_inputs = [], []
    for array in arrays:
        is_float = array.dtype.kind == "f"
        if is_float:
            array = array.astype(float_dtype)
        tn_inputs.append(tn.tensor(array, requires_grad=is_float))
        torch_inputs.append(torch.tensor(array, requires_grad=is_float))
    return tn_inputs, torch_inputs


def _assert_close(label, actual, expected, tolerance):
    if expected.dtype.kind == "f":
        np.testing.assert_allclose(actual, expected, err_msg=label, **tolerance)
    else:
        np.testing.assert_array_equal(actual, expected, err_msg=label)


def check_parity(fn, makers, float_dtype, seed):
    rng = np.random.default_rng(seed)
    arrays = [make(rng) for make in makers]
    tolerance = TOLERANCES[float_dtype]
    tn_inputs, torch_inputs = _make_inputs(arrays, float_dtype)

    tn_outs = _outputs(fn(tn, *tn_inputs))
    torch_outs = _outputs(fn(TORCH_API, *torch_inputs))
    assert len(tn_outs) == len(torch_outs), \
        f"tinynlm gave {len(tn_outs)} outputs, torch {len(torch_outs)}"
    for position, (ours, theirs) in enumerate(zip(tn_outs, torch_outs)):
        label = f"output {position}"
        assert isinstance(ours, tn.Tensor), f"{label}: tinynlm returned {type(ours).__name__}"
        assert ours.shape == tuple(theirs.shape), f"{label}: shape {ours.shape} vs torch " \
                                                  f"{tuple(theirs.shape)}"
        assert str(ours.dtype) == _torch_dtype_name(theirs.dtype), \
            f"{label}: dtype {ours.dtype} vs torch {theirs.dtype}"
        assert ours.requires_grad == theirs.requires_grad, \
            f"{label}: requires_grad {ours.requires_grad} vs torch {theirs.requires_grad}"
        _assert_close(f"{label} values", ours.detach().numpy(), theirs.detach().numpy(),
                      tolerance)

    # Gradients of sum_k <w_k, out_k> over the float outputs, w_k random.
    differentiable = [k for k, out in enumerate(torch_outs) if out.requires_grad]
    grad_positions = [k for k, t in enumerate(torch_inputs) if t.requires_grad]
    if not differentiable or not grad_positions:
        return
    weights = [rng.standard_normal(tuple(torch_outs[k].shape)).astype(float_dtype)
               for k in differentiable]
    torch_grads = torch.autograd.grad([torch_outs[k] for k in differentiable],
                                      [torch_inputs[k] for k in grad_positions],
                                      grad_outputs=[torch.tensor(w) for w in weights],
                                      allow_unused=True)
    tn_grads = tn.grad([tn_outs[k] for k in differentiable],
                       [tn_inputs[k] for k in grad_positions],
                       grad_outputs=tuple(tn.tensor(w) for w in weights), allow_unused=True)
    for k, ours, theirs in zip(grad_positions, tn_grads, torch_grads):
        label = f"grad of input {k}"
        expected = (np.zeros(arrays[k].shape, float_dtype) if theirs is None
                    else theirs.numpy())
        if ours is None:
            actual = np.zeros(arrays[k].shape, float_dtype)
        else:
            assert ours.shape == arrays[k].shape, f"{label}: shape {ours.shape}"
            assert ours.dtype == float_dtype, f"{label}: dtype {ours.dtype}"
            actual = ours.detach().numpy()
        _assert_close(label, actual, expected, tolerance)


@pytest.mark.parametrize("float_dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name, fn, makers", CASES)
def test_parity(name, fn, makers, float_dtype):
    check_parity(fn, makers, float_dtype, seed=zlib.crc32(name.encode()))


# ----------------------------------------------------------------------------- extra checks


@pytest.mark.parametrize("float_dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", ["log_softmax", "softmax", "logsumexp"])
def test_large_magnitude_stays_finite(name, float_dtype):
    rng = np.random.default_rng(7)
    array = (rng.standard_normal((4, 6)) * 1e4).astype(float_dtype)
    x = tn.tensor(array, requires_grad=True)
    out = getattr(tn, name)(x, -1)
    out.backward(tn.tensor(rng.standard_normal(out.shape).astype(float_dtype)))
    assert np.isfinite(out.detach().numpy()).all()
    assert np.isfinite(x.grad.numpy()).all()


def _dropout_pair(array, p, training):
    x_tn = tn.tensor(array, requires_grad=True)
    x_torch = torch.tensor(array, requires_grad=True)
    return x_tn, tn.dropout(x_tn, p, training), x_torch, F.dropout(x_torch, p, training)


@pytest.mark.parametrize("float_dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("p, training", [(0.0, True), (0.0, False), (0.5, False), (0.9, False)])
def test_dropout_identity(p, training, float_dtype):
    array = np.random.default_rng(3).standard_normal((5, 7)).astype(float_dtype)
    weight = np.random.default_rng(4).standard_normal((5, 7)).astype(float_dtype)
    x_tn, out_tn, x_torch, out_torch = _dropout_pair(array, p, training)
    assert out_tn.dtype == float_dtype and out_tn.shape == tuple(out_torch.shape)
    np.testing.assert_array_equal(out_tn.detach().numpy(), out_torch.detach().numpy())
    np.testing.assert_array_equal(out_tn.detach().numpy(), array)
    out_tn.backward(tn.tensor(weight))
    out_torch.backward(torch.tensor(weight))
    np.testing.assert_array_equal(x_tn.grad.numpy(), x_torch.grad.numpy())
    np.testing.assert_array_equal(x_tn.grad.numpy(), weight)


@pytest.mark.parametrize("float_dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.8])
def test_dropout_scaling_and_rate(p, float_dtype):
    n = 200_000
    array = np.random.default_rng(5).uniform(0.5, 2.0, n).astype(float_dtype)
    weight = np.random.default_rng(6).standard_normal(n).astype(float_dtype)
    x_tn, out_tn, x_torch, out_torch = _dropout_pair(array, p, True)
    out_tn.backward(tn.tensor(weight))
    out_torch.backward(torch.tensor(weight))
    # Kept values scale by 1 / (1 - p), zeroed ones are exactly 0; the gradient uses the same mask.
    scale = float_dtype(1.0 / (1.0 - p))
    for out, grad in [(out_tn.detach().numpy(), x_tn.grad.numpy()),
                      (out_torch.detach().numpy(), x_torch.grad.numpy())]:
        assert out.dtype == float_dtype and grad.dtype == float_dtype and out.shape == (n,)
        kept = out != 0
        tolerance = TOLERANCES[float_dtype]
        np.testing.assert_allclose(out[kept], array[kept] * scale, **tolerance)
        np.testing.assert_allclose(grad[kept], weight[kept] * scale, **tolerance)
        np.testing.assert_array_equal(grad[~kept], 0)
        # The zeroed fraction is within 6 standard deviations of p.
        zeroed = 1.0 - kept.mean()
        assert abs(zeroed - p) < 6 * math.sqrt(p * (1 - p) / n), (zeroed, p)
