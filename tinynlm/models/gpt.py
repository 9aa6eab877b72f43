"""GPT: a decoder-only Transformer language model, after Karpathy's nanoGPT.

Token and learned position embeddings, ``n_layer`` pre-norm blocks (causal self-attention with
one fused q/k/v projection, then a 4x MLP with GELU), a final LayerNorm and an output head that
shares its weight with the token embedding. Parameter names follow nanoGPT's
(``transformer.h.0.attn.c_attn.weight``, ``lm_head.weight``, ...).

Generation keeps a key/value cache (:class:`KVCache`): the prompt is encoded once, then each new
token costs one position, its single query attending over the cached keys and values of every
layer. Positions are learned only up to ``block_size``, so once the context is full each new
token re-encodes the last ``block_size`` tokens from scratch, exactly as generation without a
cache does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import creation, ops
from ..nn import functional as F
from ..nn import init
from ..nn.layers import Dropout, Embedding, LayerNorm, Linear
from ..nn.module import Module, ModuleDict, ModuleList
from .language_model import LanguageModel


@dataclass
class GPTConfig:
    """The sizes of a :class:`GPT`: ``block_size`` is the longest context, ``n_embd`` the width
    (split over ``n_head`` heads), ``bias`` whether Linear and LayerNorm layers have biases.

    >>> GPTConfig(vocab_size=65).n_embd
    128
    """

    vocab_size: int
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig: {name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd ({self.n_embd}) must be a multiple of n_head "
                             f"({self.n_head})")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"GPTConfig: dropout must be in [0, 1), got {self.dropout!r}")


class KVCache:
    """The keys and values each layer has computed so far, each (B, nh, T_so_far, hs), so that
    generation encodes every position once. ``len(cache)`` is T_so_far. :meth:`GPT.forward`
    with ``kv_cache=`` appends the new positions and numbers them after the cached ones.

    >>> import tinynlm as tn
    >>> model = GPT(GPTConfig(vocab_size=10, n_layer=2, n_head=2, n_embd=8))
    >>> cache = KVCache(n_layer=2)
    >>> with tn.no_grad():
    ...     _ = model(tn.tensor([[1, 2, 3]]), kv_cache=cache)
    ...     _ = model(tn.tensor([[4]]), kv_cache=cache)
    >>> len(cache), cache.keys[1].shape
    (4, (1, 2, 4, 4))
    """

    def __init__(self, n_layer):
        self.keys = [None] * n_layer
        self.values = [None] * n_layer

    def __len__(self):
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def append(self, layer, k, v):
        """Add one layer's new keys and values, (B, nh, T, hs); return all of that layer's,
        (B, nh, T_so_far, hs)."""
        if self.keys[layer] is not None:
            k = ops.cat([self.keys[layer], k], 2)                           # (B, nh, T_so_far, hs)
            v = ops.cat([self.values[layer], v], 2)                         # (B, nh, T_so_far, hs)
        self.keys[layer], self.values[layer] = k, v
        return k, v


class CausalSelfAttention(Module):
    """Multi-head self-attention in which each position sees only itself and earlier ones:
    one Linear (``c_attn``) makes q, k and v for all heads, ``c_proj`` mixes the heads' outputs.

    >>> import tinynlm as tn
    >>> attention = CausalSelfAttention(GPTConfig(vocab_size=10, n_head=2, n_embd=8), 0)
    >>> attention(tn.randn(3, 5, 8)).shape
    (3, 5, 8)
    """

    def __init__(self, config, layer_index):
        super().__init__()
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = Dropout(config.dropout)
        self.n_head, self.dropout, self.layer_index = config.n_head, config.dropout, layer_index

    def forward(self, x, kv_cache=None):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)                            # 3 x (B, T, C)
        q = q.reshape(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.reshape(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.reshape(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if kv_cache is not None:
            k, v = kv_cache.append(self.layer_index, k, v)                  # (B, nh, T_so_far, hs)
        # Without earlier positions query i sees keys 0..i. After cached ones, a single new
        # query (GPT.forward allows no more) follows every key, so it needs no mask.
        dropout_p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p,
                                           is_causal=k.shape[2] == T)        # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)                              # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(Module):
    """The position-wise feed-forward network: widen 4x, GELU, project back, dropout."""

    def __init__(self, config):
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(Module):
    """One pre-norm Transformer block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    def __init__(self, config, layer_index):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_index)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, kv_cache=None):
        x = x + self.attn(self.ln_1(x), kv_cache)
        return x + self.mlp(self.ln_2(x))


class GPT(LanguageModel):
    """A GPT language model over token ids (B, T), T <= ``config.block_size``.

    ``forward(idx, targets=None, kv_cache=None)`` returns ``(logits, loss)``: logits (B, T,
    vocab_size) and, with ``targets`` (B, T), the mean cross-entropy (else None). ``kv_cache``
    is for generation (see :class:`KVCache`). ``generate(idx, max_new_tokens, temperature=1.0,
    top_k=None, top_p=None, generator=None)`` appends sampled tokens and ``generate_tokens``
    yields them one at a time (see :class:`~tinynlm.models.language_model.LanguageModel`):
    with a key/value cache, one position per new token until the context holds ``block_size``
    tokens, then a forward over the last ``block_size`` tokens per new token.

    Initialised as nanoGPT: weights N(0, 0.02), biases zero, and the projections into the
    residual stream (``c_proj``) N(0, 0.02 / sqrt(2 * n_layer)).

    >>> import math
    >>> import tinynlm as tn
    >>> model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8))
    >>> idx, targets = tn.tensor([[1, 2, 3], [4, 5, 6]]), tn.tensor([[2, 3, 4], [5, 6, 7]])
    >>> logits, loss = model(idx, targets)
    >>> logits.shape, abs(loss.item() - math.log(10)) < 0.1  # about ln(vocab_size) at first
    ((2, 3, 10), True)
    >>> model.lm_head.weight is model.transformer.wte.weight
    True
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = ModuleDict(dict(
            wte=Embedding(config.vocab_size, config.n_embd),
            wpe=Embedding(config.block_size, config.n_embd),
            drop=Dropout(config.dropout),
            h=ModuleList([Block(config, index) for index in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        for name, parameter in self.named_parameters():
            if name.endswith("c_proj.weight"):
                init.normal_(parameter, 0.0, 0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (Linear, Embedding)):
            init.normal_(module.weight, 0.0, 0.02)
        if isinstance(module, Linear) and module.bias is not None:
            init.zeros_(module.bias)

    def forward(self, idx, targets=None, kv_cache=None):
        self._check_ids(idx, "forward")
        B, T = idx.shape
        if kv_cache is not None and len(kv_cache.keys) != self.config.n_layer:
            raise ValueError(f"GPT.forward: the kv_cache has {len(kv_cache.keys)} layers, the "
                             f"model {self.config.n_layer}")
        past = 0 if kv_cache is None else len(kv_cache)
        if past + T > self.config.block_size:
            cached = f" ({past} cached + {T} new)" if past else ""
            raise ValueError(f"GPT.forward: sequence length {past + T}{cached} exceeds the "
                             f"block_size of {self.config.block_size}")
        if past and T != 1:
            raise ValueError(f"GPT.forward: after {past} cached positions feed one token at a "
                             f"time, got {T}")
        positions = creation.arange(past, past + T, device=idx.device)    # (T,)
        x = self.transformer.drop(self.transformer.wte(idx)
                                  + self.transformer.wpe(positions))      # (B, T, C)
        for block in self.transformer.h:
            x = block(x, kv_cache)
        logits = self.lm_head(self.transformer.ln_f(x))                   # (B, T, vocab_size)
        return logits, None if targets is None else self._loss(logits, targets)

    def _incremental_logits(self):
        block_size = self.config.block_size
        cache = KVCache(self.config.n_layer)
        context = None  # the last block_size tokens, (B, <= block_size)

        def next_logits(tokens):
            nonlocal cache, context
            context = tokens if context is None else ops.cat([context, tokens], 1)
            context = context[:, -block_size:]                            # (B, <= block_size)
            if len(cache) + tokens.shape[1] > block_size:
                # No position left: start over from the last block_size tokens.
                cache, tokens = KVCache(self.config.n_layer), context
            return self(tokens, kv_cache=cache)[0][:, -1]                 # (B, vocab_size)

        return next_logits
