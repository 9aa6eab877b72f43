"""Scaled dot-product attention: the one attention function every attention module calls.

:func:`scaled_dot_product_attention` has ``torch.nn.functional``'s signature and semantics.
Every attention module in ``tinynlm.nn`` goes through this file: ``MultiheadAttention`` (and so
the Transformer layers) and ``DotProductAttention`` call :func:`scaled_dot_product_attention` or,
when they must return the attention weights, its twin
:func:`scaled_dot_product_attention_with_weights`; ``AdditiveAttention``, whose scores are not dot
products, calls the shared last step :func:`masked_softmax_attention`. A fused kernel put behind
:func:`scaled_dot_product_attention` therefore speeds up every caller that does not ask for the
weights, and the composed version here stays as the reference it is tested against.

Only core ops are imported here (not ``nn.functional``, which re-exports this function).
"""

from __future__ import annotations

import math

import numpy as np

from .. import creation, dispatch, dtypes, ops
from ..ops.fused import FusedAttention
from ..tensor import Tensor


def masked_softmax_attention(scores, value, attn_mask=None, dropout_p=0.0):
    """Softmax of ``scores`` over the keys, dropout, then the weighted sum of ``value``.

    The step every attention shares once it has its scores. ``scores`` is (..., L, S) and
    ``value`` (..., S, Ev); ``attn_mask``, broadcastable to the scores, is a bool mask
    (True = the key takes part, False = it is left out) or a float mask added to the scores.
    Returns ``(output, weights)``: (..., L, Ev) and (..., L, S), the weights after dropout.

    A query row whose scores are all ``-inf`` once masked (every key left out) gets all-zero
    weights, so a zero output and zero gradients, instead of the NaN of a plain softmax; this is
    what PyTorch's ``scaled_dot_product_attention`` does since 2.5.

    >>> import tinynlm as tn
    >>> scores = tn.tensor([[0.0, 0.0], [1.0, 2.0]])
    >>> keep = tn.tensor([[True, True], [False, False]])
    >>> output, weights = masked_softmax_attention(scores, tn.eye(2), keep)
    >>> weights.tolist()
    [[0.5, 0.5], [0.0, 0.0]]
    """
    if attn_mask is not None:
        _check_mask(attn_mask, scores.shape, "attn_mask", "masked_softmax_attention")
    return _masked_softmax_attention(scores, value, attn_mask, dropout_p)


def _masked_softmax_attention(scores, value, attn_mask, dropout_p):
    """:func:`masked_softmax_attention` with the mask already checked."""
    if attn_mask is not None:
        if attn_mask.dtype == dtypes.bool_:
            scores = scores.masked_fill(~attn_mask, -math.inf)
        else:
            scores = scores + attn_mask.to(scores.dtype)
        # Rows with every key masked would give 0/0 = NaN, in the forward and in the gradient:
        # give them finite scores for the softmax and zero weights after it.
        fully_masked = (scores == -math.inf).all(dim=-1, keepdim=True)      # (..., L, 1)
        scores = scores.masked_fill(fully_masked, 0.0)
        weights = ops.softmax(scores, -1).masked_fill(fully_masked, 0.0)
    else:
        weights = ops.softmax(scores, -1)
    if dropout_p > 0.0:
        weights = ops.dropout(weights, dropout_p, training=True)
    return weights @ value, weights


def scaled_dot_product_attention_with_weights(query, key, value, attn_mask=None, dropout_p=0.0,
                                              is_causal=False, *, scale=None, enable_gqa=False):
    """:func:`scaled_dot_product_attention` that also returns the attention weights, for the
    callers that must hand them out (``MultiheadAttention(need_weights=True)``,
    ``DotProductAttention``). Returns ``(output, weights)``: (..., L, Ev) and (..., L, S).
    It always runs composed (the weights are the (L, S) matrix a fused kernel avoids).

    >>> import tinynlm as tn
    >>> q, k, v = tn.ones(2, 3, 4), tn.ones(2, 5, 4), tn.ones(2, 5, 6)
    >>> output, weights = scaled_dot_product_attention_with_weights(q, k, v)
    >>> output.shape, weights.shape
    ((2, 3, 6), (2, 3, 5))
    """
    query, key, value, scale = _checked_arguments(query, key, value, attn_mask, dropout_p,
                                                  is_causal, scale, enable_gqa)
    return _composed_attention(query, key, value, attn_mask, dropout_p, is_causal, scale)


def _checked_arguments(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa):
    """Check the arguments of an attention call; return ``(query, key, value, scale)`` with the
    key and value heads repeated for grouped-query attention and the default scale filled in."""
    op_name = "scaled_dot_product_attention"
    _check_inputs(query, key, value, enable_gqa, op_name)
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"{op_name}: dropout_p must be in [0, 1], got {dropout_p}")
    if is_causal and attn_mask is not None:
        raise ValueError(f"{op_name}: pass either attn_mask or is_causal=True, not both "
                         "(PyTorch refuses an explicit mask with is_causal)")
    if enable_gqa:
        key, value = _repeat_heads(key, query.shape[-3]), _repeat_heads(value, query.shape[-3])
    if attn_mask is not None:
        scores_shape = np.broadcast_shapes(query.shape[:-2], key.shape[:-2]) + (
            query.shape[-2], key.shape[-2])
        _check_mask(attn_mask, scores_shape, "attn_mask", op_name)
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    return query, key, value, scale


def _composed_attention(query, key, value, attn_mask, dropout_p, is_causal, scale):
    """Attention in tensor ops, scores matrix and all: ``(output, weights)``. The reference of
    the fused kernel."""
    length, source_length = query.shape[-2], key.shape[-2]
    scores = (query * scale) @ key.mT                                       # (..., L, S)
    if is_causal:
        # Query i sees keys 0..i: the top-left-aligned lower triangle, also when L != S.
        attn_mask = creation.ones(length, source_length, dtype=dtypes.bool_,
                                  device=query.device).tril()
    return _masked_softmax_attention(scores, value, attn_mask, dropout_p)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, *, scale=None, enable_gqa=False):
    """Attention of ``query`` (..., L, E) over ``key`` (..., S, E) and ``value`` (..., S, Ev),
    as ``torch.nn.functional.scaled_dot_product_attention``: ``softmax(q k^T * scale + mask) v``.

    * ``scale`` defaults to ``1 / sqrt(E)``; it and ``enable_gqa`` are keyword-only, as in
      PyTorch.
    * ``attn_mask`` broadcasts to (..., L, S): a bool mask says which keys take part (True =
      take part, the opposite of ``MultiheadAttention``'s masks); a float mask is added to the
      scores (``-inf`` leaves a key out).
    * ``is_causal=True`` lets query ``i`` see keys ``0..i`` only (a lower triangle aligned
      top-left, also when L != S, as in PyTorch); it cannot be combined with ``attn_mask``.
    * ``dropout_p`` is always applied (pass 0.0 outside training, as with PyTorch).
    * ``enable_gqa=True`` repeats each of the key/value heads (dim -3) for a group of query heads.
    * A query row with every key masked gives zeros (and zero gradients), as PyTorch's does since
      2.5 (older PyTorch, and its ``MultiheadAttention`` with ``need_weights=True``, give NaN).

    Fused kernels (flash attention: tiles of keys streamed past tiles of queries with an online
    softmax, so memory grows with L + S, not L * S) do every float32 or float64 call whose
    query, key and value have the same batch dims and whose ``dropout_p`` is 0, with a causal,
    bool or float mask (a float mask that requires grad, and any call with dropout, runs the
    composed version, which is also the kernels' reference). A mask whose batch dims cannot be
    viewed as (N, L, S) without copying is copied (1 byte per score for a bool mask).

    This is the one attention function of tinynlm: every attention module computes through it,
    its twin that also returns the weights, or their shared last step (see the module
    docstring), so the fused kernels speed up every caller that does not ask for the weights,
    the Transformer layers among them.

    >>> import tinynlm as tn
    >>> q, k, v = tn.randn(2, 4, 3, 8), tn.randn(2, 4, 5, 8), tn.randn(2, 4, 5, 6)
    >>> scaled_dot_product_attention(q, k, v).shape
    (2, 4, 3, 6)
    >>> scaled_dot_product_attention(q, k, v, is_causal=True).shape
    (2, 4, 3, 6)
    """
    query, key, value, scale = _checked_arguments(query, key, value, attn_mask, dropout_p,
                                                  is_causal, scale, enable_gqa)
    kernels = _fused_kernels(query, key, value, attn_mask, dropout_p)
    if kernels is None:
        return _composed_attention(query, key, value, attn_mask, dropout_p, is_causal, scale)[0]
    batch, length, source_length = query.shape[:-2], query.shape[-2], key.shape[-2]
    mask = bias = None
    if attn_mask is not None:
        xp = query.xp
        scores_mask = xp.broadcast_to(attn_mask.data, batch + (length, source_length))
        scores_mask = scores_mask.reshape(-1, length, source_length)         # (N, L, S)
        if attn_mask.dtype == dtypes.bool_:
            mask = scores_mask
        else:
            bias = scores_mask.astype(query.dtype, copy=False)

    def reference(query, key, value):
        return _composed_attention(query, key, value, attn_mask, 0.0, is_causal, scale)[0]

    return FusedAttention(kernels, float(scale), bool(is_causal), mask, bias,
                          reference)(query, key, value)                      # (..., L, Ev)


def _fused_kernels(query, key, value, attn_mask, dropout_p):
    """The fused attention kernels if they can do this call, else None."""
    if dropout_p > 0.0 or query.dtype not in (dtypes.float32, dtypes.float64):
        return None
    if not query.shape[:-2] == key.shape[:-2] == value.shape[:-2]:
        return None
    if 0 in query.shape or 0 in key.shape or 0 in value.shape:
        return None
    if attn_mask is not None and attn_mask.requires_grad:
        return None
    return dispatch.fused("attention", query.xp)


def _check_inputs(query, key, value, enable_gqa, op_name):
    for name, tensor in (("query", query), ("key", key), ("value", value)):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{op_name}: {name} must be a Tensor, got {type(tensor).__name__}")
        if tensor.ndim < 2:
            raise ValueError(f"{op_name}: {name} needs at least 2 dims (..., length, features), "
                             f"got shape {tensor.shape}")
        if tensor.dtype.kind != "f":
            raise TypeError(f"{op_name}: {name} must be floating point, got dtype {tensor.dtype}")
    if not query.dtype == key.dtype == value.dtype:
        raise TypeError(f"{op_name}: query, key and value must have one dtype, got "
                        f"{query.dtype}, {key.dtype} and {value.dtype}")
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(f"{op_name}: query {query.shape}, key {key.shape} and value "
                         f"{value.shape} do not fit (..., L, E), (..., S, E) and (..., S, Ev)")
    if enable_gqa:
        if min(query.ndim, key.ndim, value.ndim) < 3:
            raise ValueError(f"{op_name}: enable_gqa needs a heads dim (-3) in query, key and "
                             f"value, got shapes {query.shape}, {key.shape} and {value.shape}")
        heads = query.shape[-3]
        if key.shape[-3] != value.shape[-3] or heads % key.shape[-3]:
            raise ValueError(f"{op_name}: with enable_gqa the query heads ({heads}) must be a "
                             f"multiple of the key and value heads ({key.shape[-3]} and "
                             f"{value.shape[-3]})")
    try:
        np.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    except ValueError:
        if not enable_gqa:
            raise ValueError(f"{op_name}: the batch dims of query {query.shape}, key "
                             f"{key.shape} and value {value.shape} do not broadcast") from None


def _check_mask(mask, scores_shape, mask_name, op_name):
    if not isinstance(mask, Tensor):
        raise TypeError(f"{op_name}: {mask_name} must be a Tensor, got {type(mask).__name__}")
    if mask.dtype != dtypes.bool_ and mask.dtype.kind != "f":
        raise TypeError(f"{op_name}: {mask_name} must be a bool or floating point tensor, got "
                        f"dtype {mask.dtype}")
    try:
        fits = np.broadcast_shapes(mask.shape, scores_shape) == tuple(scores_shape)
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{op_name}: {mask_name} of shape {mask.shape} does not broadcast to "
                         f"the attention scores' shape {tuple(scores_shape)} (..., L, S)")


def _repeat_heads(tensor, heads):
    """(..., h, S, E) -> (..., heads, S, E), each head repeated for its group of query heads
    (``repeat_interleave`` along dim -3, as PyTorch's ``enable_gqa``)."""
    groups = heads // tensor.shape[-3]
    if groups == 1:
        return tensor
    *batch, kv_heads, length, features = tensor.shape
    repeated = tensor.unsqueeze(-3).expand(*batch, kv_heads, groups, length, features)
    return repeated.reshape(*batch, heads, length, features)              # (..., heads, S, E)
