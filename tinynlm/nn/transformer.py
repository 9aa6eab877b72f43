"""The Transformer of "Attention Is All You Need", as ``torch.nn``'s: ``TransformerEncoderLayer``,
``TransformerEncoder``, ``TransformerDecoderLayer``, ``TransformerDecoder`` and ``Transformer``.

Same constructor arguments and defaults, parameter names (``self_attn``, ``multihead_attn``,
``linear1``, ``linear2``, ``norm1``..``norm3``, ``layers.0...``, ``encoder.norm``,
``decoder.norm``), initialisation, masks and ``is_causal`` hints as PyTorch, so state dicts
load from torch. PyTorch's inference fast paths (nested tensors, fused encoder kernels) are not
copied; their arguments are accepted and ignored. Masks follow ``MultiheadAttention``: a bool
``*_mask`` is True where a query may NOT attend, a bool ``*_key_padding_mask`` is True at
padding, float masks are added to the attention scores.
"""

from __future__ import annotations

import copy

import numpy as np

from .. import backend, creation, dtypes
from . import functional as F
from . import init
from .attention import MultiheadAttention
from .layers import Dropout, LayerNorm, Linear
from .module import Module, ModuleList


class TransformerEncoderLayer(Module):
    """Self-attention then a feed-forward network, each wrapped in a residual connection and a
    layer norm (after it, or before it with ``norm_first=True``: the pre-LN variant).

    ``forward(src, src_mask=None, src_key_padding_mask=None, is_causal=False)``: ``src`` is
    (S, N, E), (N, S, E) with ``batch_first=True``, or unbatched (S, E); ``src_mask`` (S, S) or
    (N * nhead, S, S); ``src_key_padding_mask`` (N, S) or (S,). Returns the shape of ``src``.
    ``activation`` is ``"relu"``, ``"gelu"`` or any callable.

    >>> import tinynlm as tn
    >>> layer = tn.nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16,
    ...                                       batch_first=True)
    >>> layer(tn.randn(3, 5, 8)).shape
    (3, 5, 8)
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation=F.relu,
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True,
                 device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first, **factory)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **factory)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **factory)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation = _activation_function(activation)

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        x = src
        if self.norm_first:
            x = x + self._self_attention_block(self.norm1(x), src_mask, src_key_padding_mask,
                                               is_causal)
            x = x + self._feed_forward_block(self.norm2(x))
        else:
            x = self.norm1(x + self._self_attention_block(x, src_mask, src_key_padding_mask,
                                                          is_causal))
            x = self.norm2(x + self._feed_forward_block(x))
        return x

    def _self_attention_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           need_weights=False, is_causal=is_causal)[0]
        return self.dropout1(x)

    def _feed_forward_block(self, x):
        x = self.linear2(self.dropout(self.activation(self.linear1(x))))
        return self.dropout2(x)


class TransformerDecoderLayer(Module):
    """Self-attention over the target, attention to the encoder's output (``memory``), then a
    feed-forward network; each with a residual connection and a layer norm (after it, or before
    it with ``norm_first=True``).

    ``forward(tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False)``: ``tgt`` is
    (T, N, E) (or (N, T, E), or (T, E)), ``memory`` (S, N, E) likewise; ``tgt_mask`` (T, T),
    ``memory_mask`` (T, S). Returns the shape of ``tgt``.

    >>> import tinynlm as tn
    >>> layer = tn.nn.TransformerDecoderLayer(d_model=8, nhead=2, dim_feedforward=16)
    >>> layer(tn.randn(4, 3, 8), tn.randn(6, 3, 8)).shape
    (4, 3, 8)
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation=F.relu,
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True,
                 device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout,
                                            batch_first=batch_first, bias=bias, **factory)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout,
                                                 batch_first=batch_first, bias=bias, **factory)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **factory)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **factory)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.dropout3 = Dropout(dropout)
        self.activation = _activation_function(activation)

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False):
        x = tgt
        if self.norm_first:
            x = x + self._self_attention_block(self.norm1(x), tgt_mask, tgt_key_padding_mask,
                                               tgt_is_causal)
            x = x + self._memory_attention_block(self.norm2(x), memory, memory_mask,
                                                 memory_key_padding_mask, memory_is_causal)
            x = x + self._feed_forward_block(self.norm3(x))
        else:
            x = self.norm1(x + self._self_attention_block(x, tgt_mask, tgt_key_padding_mask,
                                                          tgt_is_causal))
            x = self.norm2(x + self._memory_attention_block(x, memory, memory_mask,
                                                            memory_key_padding_mask,
                                                            memory_is_causal))
            x = self.norm3(x + self._feed_forward_block(x))
        return x

    def _self_attention_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           is_causal=is_causal, need_weights=False)[0]
        return self.dropout1(x)

    def _memory_attention_block(self, x, memory, attn_mask, key_padding_mask, is_causal):
        x = self.multihead_attn(x, memory, memory, attn_mask=attn_mask,
                                key_padding_mask=key_padding_mask, is_causal=is_causal,
                                need_weights=False)[0]
        return self.dropout2(x)

    def _feed_forward_block(self, x):
        x = self.linear2(self.dropout(self.activation(self.linear1(x))))
        return self.dropout3(x)


class TransformerEncoder(Module):
    """``num_layers`` independent copies of ``encoder_layer`` (``layers.0``, ``layers.1``, ...)
    applied in turn, then ``norm`` if given. ``enable_nested_tensor`` and ``mask_check`` (for
    PyTorch's inference fast path) are accepted and ignored.

    ``forward(src, mask=None, src_key_padding_mask=None, is_causal=None)``: with
    ``is_causal=None`` a ``mask`` equal to the causal mask is detected, as in PyTorch.

    >>> import tinynlm as tn
    >>> layer = tn.nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16)
    >>> encoder = tn.nn.TransformerEncoder(layer, num_layers=2, norm=tn.nn.LayerNorm(8))
    >>> mask = tn.nn.Transformer.generate_square_subsequent_mask(5)
    >>> encoder(tn.randn(5, 3, 8), mask=mask).shape
    (5, 3, 8)
    """

    def __init__(self, encoder_layer, num_layers, norm=None, enable_nested_tensor=True,
                 mask_check=True):
        super().__init__()
        self.layers = ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm
        self.enable_nested_tensor = enable_nested_tensor
        self.mask_check = mask_check

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        output = src
        if self.num_layers:
            length = _sequence_length(src, self.layers[0].self_attn.batch_first)
            is_causal = _detect_is_causal_mask(mask, is_causal, length)
        for layer in self.layers:
            output = layer(output, src_mask=mask, src_key_padding_mask=src_key_padding_mask,
                           is_causal=is_causal)
        if self.norm is not None:
            output = self.norm(output)
        return output


class TransformerDecoder(Module):
    """``num_layers`` independent copies of ``decoder_layer`` applied in turn, each attending to
    ``memory``, then ``norm`` if given.

    ``forward(tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal=False)``; with
    ``tgt_is_causal=None`` a causal ``tgt_mask`` is detected, as in PyTorch.

    >>> import tinynlm as tn
    >>> layer = tn.nn.TransformerDecoderLayer(d_model=8, nhead=2, dim_feedforward=16)
    >>> decoder = tn.nn.TransformerDecoder(layer, num_layers=2)
    >>> decoder(tn.randn(4, 3, 8), tn.randn(6, 3, 8)).shape
    (4, 3, 8)
    """

    def __init__(self, decoder_layer, num_layers, norm=None):
        super().__init__()
        self.layers = ModuleList([copy.deepcopy(decoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal=False):
        output = tgt
        if self.num_layers:
            length = _sequence_length(tgt, self.layers[0].self_attn.batch_first)
            tgt_is_causal = _detect_is_causal_mask(tgt_mask, tgt_is_causal, length)
        for layer in self.layers:
            output = layer(output, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                           tgt_key_padding_mask=tgt_key_padding_mask,
                           memory_key_padding_mask=memory_key_padding_mask,
                           tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)
        if self.norm is not None:
            output = self.norm(output)
        return output


class Transformer(Module):
    """The encoder-decoder Transformer: ``encoder`` (a ``TransformerEncoder`` of
    ``num_encoder_layers`` layers and a final ``LayerNorm``) and ``decoder`` (likewise), or
    ``custom_encoder`` / ``custom_decoder``. Every parameter with more than one dim is then
    re-drawn Xavier-uniform, as in PyTorch.

    ``forward(src, tgt, src_mask=None, tgt_mask=None, memory_mask=None,
    src_key_padding_mask=None, tgt_key_padding_mask=None, memory_key_padding_mask=None,
    src_is_causal=None, tgt_is_causal=None, memory_is_causal=False)``: ``src`` (S, N, E) and
    ``tgt`` (T, N, E) (batch first with ``batch_first=True``, or unbatched); returns the
    decoder's output, shaped like ``tgt``. Token embeddings, positional encodings and the output
    projection are left to the caller, as in PyTorch.

    >>> import tinynlm as tn
    >>> model = tn.nn.Transformer(d_model=8, nhead=2, num_encoder_layers=1,
    ...                           num_decoder_layers=1, dim_feedforward=16, batch_first=True)
    >>> tgt_mask = tn.nn.Transformer.generate_square_subsequent_mask(4)
    >>> model(tn.randn(2, 6, 8), tn.randn(2, 4, 8), tgt_mask=tgt_mask).shape
    (2, 4, 8)
    """

    def __init__(self, d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6,
                 dim_feedforward=2048, dropout=0.1, activation=F.relu, custom_encoder=None,
                 custom_decoder=None, layer_norm_eps=1e-5, batch_first=False, norm_first=False,
                 bias=True, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        layer_options = dict(dim_feedforward=dim_feedforward, dropout=dropout,
                             activation=activation, layer_norm_eps=layer_norm_eps,
                             batch_first=batch_first, norm_first=norm_first, bias=bias, **factory)
        if custom_encoder is not None:
            self.encoder = custom_encoder
        else:
            self.encoder = TransformerEncoder(
                TransformerEncoderLayer(d_model, nhead, **layer_options), num_encoder_layers,
                LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory))
        if custom_decoder is not None:
            self.decoder = custom_decoder
        else:
            self.decoder = TransformerDecoder(
                TransformerDecoderLayer(d_model, nhead, **layer_options), num_decoder_layers,
                LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory))
        self._reset_parameters()
        self.d_model = d_model
        self.nhead = nhead
        self.batch_first = batch_first

    def forward(self, src, tgt, src_mask=None, tgt_mask=None, memory_mask=None,
                src_key_padding_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, src_is_causal=None, tgt_is_causal=None,
                memory_is_causal=False):
        batch_dim = 0 if self.batch_first else 1
        if src.ndim == 3 and src.shape[batch_dim] != tgt.shape[batch_dim]:
            raise RuntimeError(f"Transformer: src {src.shape} and tgt {tgt.shape} must have the "
                               f"same batch size (dim {batch_dim}, batch_first={self.batch_first})")
        if src.shape[-1] != self.d_model or tgt.shape[-1] != self.d_model:
            raise RuntimeError(f"Transformer: src {src.shape} and tgt {tgt.shape} must have "
                               f"d_model={self.d_model} features")
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask,
                              is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask,
                            tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)

    @staticmethod
    def generate_square_subsequent_mask(sz, device=None, dtype=None):
        """The (sz, sz) causal float mask: ``-inf`` above the diagonal (a query may not see
        later keys), 0 elsewhere.

        >>> import tinynlm as tn
        >>> tn.nn.Transformer.generate_square_subsequent_mask(3).tolist()
        [[0.0, -inf, -inf], [0.0, 0.0, -inf], [0.0, 0.0, 0.0]]
        """
        host = np.triu(np.full((sz, sz), -np.inf), 1)
        return creation.tensor(host, dtype=dtypes.DEFAULT_FLOAT if dtype is None else dtype,
                               device=device)

    def _reset_parameters(self):
        for param in self.parameters():
            if param.ndim > 1:
                init.xavier_uniform_(param)


def _activation_function(activation):
    """``"relu"`` or ``"gelu"`` as the function; any callable as it is."""
    if isinstance(activation, str):
        if activation == "relu":
            return F.relu
        if activation == "gelu":
            return F.gelu
    elif callable(activation):
        return activation
    raise RuntimeError(f"Transformer: activation should be 'relu', 'gelu' or a callable, not "
                       f"{activation!r}")


def _sequence_length(x, batch_first):
    return x.shape[1 if batch_first and x.ndim == 3 else 0]


def _detect_is_causal_mask(mask, is_causal, length):
    """PyTorch's rule: an explicit ``is_causal`` wins; otherwise a mask equal to
    :meth:`Transformer.generate_square_subsequent_mask` (or its bool form) counts as causal."""
    if is_causal is not None or mask is None:
        return bool(is_causal)
    if mask.shape != (length, length):
        return False
    above_diagonal = np.triu(np.ones((length, length), dtype=bool), 1)
    causal = above_diagonal if mask.dtype == dtypes.bool_ else np.where(above_diagonal, -np.inf, 0)
    return bool((backend.to_host(mask.data) == causal).all())
