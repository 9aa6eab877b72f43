"""Attention modules: PyTorch's ``MultiheadAttention`` and the two classic sequence-to-sequence
attentions, ``AdditiveAttention`` (Bahdanau) and ``DotProductAttention`` (Luong).

All of them end in :mod:`.scaled_attention` (see its docstring), so a faster attention kernel
there speeds them all up.
"""

from __future__ import annotations

import math

from .. import creation, dtypes, ops
from ..tensor import Tensor
from . import functional as F
from . import init
from .layers import Linear
from .module import Module, Parameter
from .scaled_attention import (masked_softmax_attention, scaled_dot_product_attention,
                               scaled_dot_product_attention_with_weights)


class MultiheadAttention(Module):
    """Multi-head attention as ``torch.nn.MultiheadAttention``: same arguments, parameters
    (``in_proj_weight`` (3E, E) and ``in_proj_bias`` (3E,) when ``kdim == vdim == embed_dim``,
    else ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight``; ``out_proj``; ``bias_k`` and
    ``bias_v`` (1, 1, E) with ``add_bias_kv``), initialisation (Xavier-uniform projections, zero
    biases), masks and outputs, so a PyTorch state dict loads as it is.

    ``forward(query, key, value)`` takes (L, N, E) / (S, N, kdim) / (S, N, vdim) tensors, or
    (N, L, E) ... with ``batch_first=True``, or unbatched (L, E) / (S, kdim) / (S, vdim), and
    returns ``(attn_output, attn_weights)``: the output has the query's layout; the weights are
    (N, L, S) averaged over heads, (N, num_heads, L, S) with ``average_attn_weights=False``
    (without N when unbatched), or None with ``need_weights=False``.

    Masks (PyTorch's conventions, the opposite of ``scaled_dot_product_attention``'s bools):

    * ``key_padding_mask`` (N, S) or (S,): True marks a padding key to ignore; a float mask is
      added to the scores.
    * ``attn_mask`` (L, S) or (N * num_heads, L, S): True means the query may NOT attend to that
      key; a float mask is added.
    * ``is_causal=True`` is a hint that ``attn_mask`` is the causal mask (one is required); with
      ``need_weights=False`` and no ``key_padding_mask`` the causal flag is used instead of it.

    A query whose keys are all masked gets a zero attention result (so ``out_proj.bias``) and
    zero weights, where PyTorch gives NaN when ``need_weights=True``.

    >>> import tinynlm as tn
    >>> attention = tn.nn.MultiheadAttention(8, 2, batch_first=True)
    >>> x = tn.randn(3, 5, 8)
    >>> output, weights = attention(x, x, x)
    >>> output.shape, weights.shape
    ((3, 5, 8), (3, 5, 5))
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
                 add_zero_attn=False, kdim=None, vdim=None, batch_first=False, device=None,
                 dtype=None):
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"MultiheadAttention: embed_dim and num_heads must be positive, got "
                             f"embed_dim={embed_dim} and num_heads={num_heads}")
        if embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim {embed_dim} is not divisible by "
                             f"num_heads {num_heads}")
        factory = {"dtype": dtype, "device": device}
        self.embed_dim = embed_dim
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(creation.empty(3 * embed_dim, embed_dim, **factory))
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.q_proj_weight = Parameter(creation.empty(embed_dim, embed_dim, **factory))
            self.k_proj_weight = Parameter(creation.empty(embed_dim, self.kdim, **factory))
            self.v_proj_weight = Parameter(creation.empty(embed_dim, self.vdim, **factory))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(creation.empty(3 * embed_dim, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, **factory)
        if add_bias_kv:
            self.bias_k = Parameter(creation.empty(1, 1, embed_dim, **factory))
            self.bias_v = Parameter(creation.empty(1, 1, embed_dim, **factory))
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()

    def _reset_parameters(self):
        """PyTorch's initialisation: Xavier-uniform projections, zero biases, Xavier-normal
        ``bias_k``/``bias_v`` (``out_proj.weight`` keeps ``Linear``'s own init)."""
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            for weight in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                init.xavier_uniform_(weight)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)
        if self.bias_k is not None:
            init.xavier_normal_(self.bias_k)
            init.xavier_normal_(self.bias_v)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        is_batched = self._check_shapes(query, key, value, key_padding_mask, attn_mask)
        self_attention = query is key and key is value
        if not is_batched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        batch, length, _ = query.shape                                    # query (N, L, E)

        key_padding_mask = _additive_mask(key_padding_mask, query.dtype)   # (N, S)
        if is_causal and attn_mask is None:
            raise RuntimeError("MultiheadAttention: is_causal=True is a hint that needs the "
                               "causal attn_mask too; make one with "
                               "Transformer.generate_square_subsequent_mask(L)")
        use_causal_flag = is_causal and key_padding_mask is None and not need_weights
        attn_mask = None if use_causal_flag else _additive_mask(attn_mask, query.dtype)

        q, k, v = self._in_projection(query, key, value, self_attention)  # (N, L|S, E)
        if self.bias_k is not None:
            k = ops.cat([k, self.bias_k.expand(batch, 1, self.embed_dim)], dim=1)
            v = ops.cat([v, self.bias_v.expand(batch, 1, self.embed_dim)], dim=1)
            attn_mask, key_padding_mask = _pad_key(attn_mask), _pad_key(key_padding_mask)
        q, k, v = (self._split_heads(t) for t in (q, k, v))              # (N, nh, L|S, hs)
        if self.add_zero_attn:
            zeros = creation.zeros(batch, self.num_heads, 1, self.head_dim, dtype=k.dtype,
                                   device=k.device)
            k, v = ops.cat([k, zeros], dim=2), ops.cat([v, zeros], dim=2)
            attn_mask, key_padding_mask = _pad_key(attn_mask), _pad_key(key_padding_mask)
        mask = self._merged_mask(attn_mask, key_padding_mask, batch)      # (N|1, nh|1, L, S)

        dropout_p = self.dropout if self.training else 0.0
        if need_weights:
            output, weights = scaled_dot_product_attention_with_weights(q, k, v, mask, dropout_p)
            if average_attn_weights:
                weights = weights.mean(dim=1)                             # (N, L, S)
        else:
            output = scaled_dot_product_attention(q, k, v, mask, dropout_p,
                                                  is_causal=use_causal_flag)
            weights = None
        output = output.transpose(1, 2).reshape(batch, length, self.embed_dim)  # (N, L, E)
        output = self.out_proj(output)
        if not is_batched:
            output = output.squeeze(0)
            weights = None if weights is None else weights.squeeze(0)
        elif not self.batch_first:
            output = output.transpose(0, 1)                               # (L, N, E)
        return output, weights

    def _in_projection(self, query, key, value, self_attention):
        if self._qkv_same_embed_dim:
            if self_attention:  # one fused matmul for q, k and v
                return F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
            weights = self.in_proj_weight.chunk(3)
        else:
            weights = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        biases = (None,) * 3 if self.in_proj_bias is None else self.in_proj_bias.chunk(3)
        return tuple(F.linear(x, w, b) for x, w, b in zip((query, key, value), weights, biases))

    def _split_heads(self, x):
        batch, length, _ = x.shape
        return x.reshape(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def _merged_mask(self, attn_mask, key_padding_mask, batch):
        """The float masks as one mask broadcasting to the scores (N, num_heads, L, S)."""
        mask = None
        if attn_mask is not None:
            if attn_mask.ndim == 2:
                mask = attn_mask                                          # (L, S)
            else:
                length, source_length = attn_mask.shape[1:]
                mask = attn_mask.reshape(batch, self.num_heads, length, source_length)
        if key_padding_mask is not None:
            padding = key_padding_mask.reshape(batch, 1, 1, key_padding_mask.shape[-1])
            mask = padding if mask is None else mask + padding            # (N, nh, L, S)
        return mask

    def _check_shapes(self, query, key, value, key_padding_mask, attn_mask):
        """Check inputs and masks against PyTorch's rules; return whether the input is batched."""
        name = "MultiheadAttention"
        if query.ndim not in (2, 3):
            raise ValueError(f"{name}: query must be 2-D (unbatched) or 3-D (batched), got shape "
                             f"{query.shape}")
        is_batched = query.ndim == 3
        if key.ndim != query.ndim or value.ndim != query.ndim:
            raise ValueError(f"{name}: key {key.shape} and value {value.shape} must have as many "
                             f"dims as query {query.shape}")
        for tensor, tensor_name, size in ((query, "query", self.embed_dim), (key, "key", self.kdim),
                                          (value, "value", self.vdim)):
            if tensor.shape[-1] != size:
                raise ValueError(f"{name}: {tensor_name} of shape {tensor.shape} must have "
                                 f"{size} features in its last dim")
        sequence_dim = 1 if is_batched and self.batch_first else 0
        batch_dim = 1 - sequence_dim
        if key.shape[sequence_dim] != value.shape[sequence_dim] or (
                is_batched and not query.shape[batch_dim] == key.shape[batch_dim]
                == value.shape[batch_dim]):
            raise ValueError(f"{name}: query {query.shape}, key {key.shape} and value "
                             f"{value.shape} disagree in batch size or key/value length "
                             f"(batch_first={self.batch_first})")
        length, source_length = query.shape[sequence_dim], key.shape[sequence_dim]
        batch = query.shape[batch_dim] if is_batched else None
        if key_padding_mask is not None:
            expected = (batch, source_length) if is_batched else (source_length,)
            _check_mask(key_padding_mask, "key_padding_mask", [expected], name)
        if attn_mask is not None:
            heads = (batch if is_batched else 1) * self.num_heads
            _check_mask(attn_mask, "attn_mask",
                        [(length, source_length), (heads, length, source_length)], name)
        return is_batched

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"dropout={self.dropout}, batch_first={self.batch_first}")


class AdditiveAttention(Module):
    """Bahdanau's additive attention: ``score(q, k) = v^T tanh(W_q q + W_k k)``, then a softmax
    over the keys and the weighted sum of the values.

    ``queries`` (..., L, query_size), ``keys`` (..., S, key_size), ``values`` (..., S, Ev) and an
    optional bool ``key_padding_mask`` (..., S), True marking padding keys to ignore. Returns
    ``(context, attention_weights)``: (..., L, Ev) and (..., L, S). A query whose keys are all
    padding gets zero weights and a zero context. Parameters: ``query_proj``, ``key_proj``
    (``Linear`` to ``hidden_size``, no bias) and ``score_proj`` (``Linear(hidden_size, 1)``, no
    bias); dropout acts on the weights while training.

    >>> import tinynlm as tn
    >>> attention = tn.nn.AdditiveAttention(query_size=6, key_size=4, hidden_size=8)
    >>> padding = tn.tensor([[False, False, True]])
    >>> context, weights = attention(tn.randn(1, 2, 6), tn.randn(1, 3, 4), tn.randn(1, 3, 5),
    ...                              key_padding_mask=padding)
    >>> context.shape, weights[..., 2].tolist()
    ((1, 2, 5), [[0.0, 0.0]])
    """

    def __init__(self, query_size, key_size, hidden_size, dropout=0.0, device=None, dtype=None):
        super().__init__()
        factory = {"dtype": dtype, "device": device}
        self.query_proj = Linear(query_size, hidden_size, bias=False, **factory)
        self.key_proj = Linear(key_size, hidden_size, bias=False, **factory)
        self.score_proj = Linear(hidden_size, 1, bias=False, **factory)
        self.dropout = dropout

    def forward(self, queries, keys, values, key_padding_mask=None):
        keep = _keep_mask(key_padding_mask, keys, "AdditiveAttention")
        # Every query against every key: (..., L, 1, H) + (..., 1, S, H).
        features = (self.query_proj(queries).unsqueeze(-2)
                    + self.key_proj(keys).unsqueeze(-3)).tanh()           # (..., L, S, H)
        scores = self.score_proj(features).squeeze(-1)                    # (..., L, S)
        dropout_p = self.dropout if self.training else 0.0
        return masked_softmax_attention(scores, values, keep, dropout_p)

    def extra_repr(self):
        return f"dropout={self.dropout}"


class DotProductAttention(Module):
    """Luong's multiplicative attention with a choice of score:

    * ``"dot"``: ``q . k``;
    * ``"scaled"``: ``q . k / sqrt(d)`` (the Transformer's);
    * ``"general"``: ``q . (W k)`` with a learned ``key_proj = Linear(key_size, query_size,
      bias=False)`` (``key_size`` defaults to ``query_size``).

    ``queries`` (..., L, Eq), ``keys`` (..., S, Ek), ``values`` (..., S, Ev) and an optional bool
    ``key_padding_mask`` (..., S), True marking padding keys to ignore. Returns ``(context,
    attention_weights)``: (..., L, Ev) and (..., L, S); a query whose keys are all padding gets
    zero weights and a zero context. Dropout acts on the weights while training.

    >>> import tinynlm as tn
    >>> attention = tn.nn.DotProductAttention("general", query_size=4, key_size=6)
    >>> context, weights = attention(tn.randn(2, 3, 4), tn.randn(2, 5, 6), tn.randn(2, 5, 7))
    >>> context.shape, weights.shape
    ((2, 3, 7), (2, 3, 5))
    """

    SCORES = ("dot", "scaled", "general")

    def __init__(self, score="scaled", query_size=None, key_size=None, dropout=0.0, device=None,
                 dtype=None):
        super().__init__()
        if score not in self.SCORES:
            raise ValueError(f"DotProductAttention: score must be one of {self.SCORES}, got "
                             f"{score!r}")
        self.score = score
        self.dropout = dropout
        if score == "general":
            if query_size is None:
                raise ValueError("DotProductAttention: score='general' needs query_size")
            key_size = query_size if key_size is None else key_size
            self.key_proj = Linear(key_size, query_size, bias=False, device=device, dtype=dtype)
        else:
            self.key_proj = None

    def forward(self, queries, keys, values, key_padding_mask=None):
        keep = _keep_mask(key_padding_mask, keys, "DotProductAttention")
        if self.key_proj is not None:
            keys = self.key_proj(keys)                                    # (..., S, Eq)
        scale = None if self.score == "scaled" else 1.0
        dropout_p = self.dropout if self.training else 0.0
        return scaled_dot_product_attention_with_weights(queries, keys, values, keep, dropout_p,
                                                         scale=scale)

    def extra_repr(self):
        return f"score={self.score!r}, dropout={self.dropout}"


# ----------------------------------------------------------------------------- masks


def _check_mask(mask, mask_name, allowed_shapes, op_name):
    if not isinstance(mask, Tensor):
        raise TypeError(f"{op_name}: {mask_name} must be a Tensor, got {type(mask).__name__}")
    if mask.dtype != dtypes.bool_ and mask.dtype.kind != "f":
        raise TypeError(f"{op_name}: {mask_name} must be a bool or floating point tensor, got "
                        f"dtype {mask.dtype}")
    if mask.shape not in allowed_shapes:
        raise ValueError(f"{op_name}: {mask_name} has shape {mask.shape}, expected "
                         + " or ".join(str(shape) for shape in allowed_shapes))


def _additive_mask(mask, dtype):
    """A bool mask (True = masked out) as a float mask of ``-inf`` and 0; a float mask as it is."""
    if mask is None:
        return None
    if mask.dtype == dtypes.bool_:
        return creation.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask,
                                                                                       -math.inf)
    return mask.to(dtype)


def _pad_key(mask):
    """A float mask with one more key (the last dim), which every query may attend to."""
    if mask is None:
        return None
    column = creation.zeros(*mask.shape[:-1], 1, dtype=mask.dtype, device=mask.device)
    return ops.cat([mask, column], dim=-1)


def _keep_mask(key_padding_mask, keys, op_name):
    """A bool key padding mask (..., S), True = padding, as the keep mask (..., 1, S) that
    ``scaled_attention`` takes (True = the key takes part)."""
    if key_padding_mask is None:
        return None
    if not isinstance(key_padding_mask, Tensor) or key_padding_mask.dtype != dtypes.bool_:
        raise TypeError(f"{op_name}: key_padding_mask must be a bool tensor (True = padding), got "
                        f"{getattr(key_padding_mask, 'dtype', type(key_padding_mask).__name__)}")
    if key_padding_mask.shape != keys.shape[:-1]:
        raise ValueError(f"{op_name}: key_padding_mask has shape {key_padding_mask.shape}, "
                         f"expected the keys' shape without features {keys.shape[:-1]}")
    return ~key_padding_mask.unsqueeze(-2)                                # (..., 1, S)
