"""Positional encodings, which tell attention (blind to order by itself) where each token sits:
the fixed sinusoids of "Attention Is All You Need", learned position embeddings (GPT-2) and
rotary embeddings (RoPE, applied to queries and keys inside attention).

Each takes an ``offset``: the position of the first token given, for decoding one token at a
time against cached keys and values.
"""

from __future__ import annotations

import math

import numpy as np

from .. import creation, dtypes, ops
from .layers import Dropout, Embedding
from .module import Module


class SinusoidalPositionalEncoding(Module):
    """Add the fixed sinusoidal table of "Attention Is All You Need" to the input, then dropout:
    ``PE[pos, 2i] = sin(pos / 10000^(2i/d_model))``, ``PE[pos, 2i+1] = cos(...)``.

    ``forward(x, offset=0)``: ``x`` is (N, T, d_model) (or (..., T, d_model)) with
    ``batch_first=True``, (T, N, d_model) without, or (T, d_model); position ``offset + t`` is
    added to token ``t``. The table (``max_len``, d_model) is a non-persistent buffer, so it is
    not in the state dict.

    >>> import tinynlm as tn
    >>> encoding = tn.nn.SinusoidalPositionalEncoding(d_model=4, max_len=10)
    >>> encoding(tn.zeros(1, 2, 4))[0, 1].tolist() == encoding.table[1].tolist()
    True
    """

    def __init__(self, d_model, max_len=5000, dropout=0.0, batch_first=True):
        super().__init__()
        self.d_model, self.max_len, self.batch_first = d_model, max_len, batch_first
        positions = np.arange(max_len)[:, None]                              # (max_len, 1)
        frequencies = np.exp(np.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        table = np.zeros((max_len, d_model))
        table[:, 0::2] = np.sin(positions * frequencies)
        table[:, 1::2] = np.cos(positions * frequencies[:d_model // 2])
        self.register_buffer("table", creation.tensor(table, dtype=dtypes.float32),
                             persistent=False)
        self.dropout = Dropout(dropout)

    def forward(self, x, offset=0):
        sequence_dim = 0 if x.ndim == 2 or not self.batch_first else -2
        length = x.shape[sequence_dim] if x.ndim >= 2 else 0
        _check_positions("SinusoidalPositionalEncoding", x, offset, length, self.max_len,
                         self.d_model)
        table = self.table[offset:offset + length].to(x.dtype)              # (T, d_model)
        if sequence_dim == 0:
            table = table.reshape(length, *[1] * (x.ndim - 2), self.d_model)  # (T, 1, d_model)
        return self.dropout(x + table)

    def extra_repr(self):
        return f"d_model={self.d_model}, max_len={self.max_len}, batch_first={self.batch_first}"


class LearnedPositionalEmbedding(Module):
    """Add a learned vector per position (GPT-2's position embedding): ``embedding`` is an
    :class:`Embedding` (``max_len``, d_model) looked up at positions ``offset .. offset+T-1``.

    ``forward(x, offset=0)``: ``x`` is (..., T, d_model), batch first. Positions past
    ``max_len`` raise an error (a learned table cannot extrapolate).

    >>> import tinynlm as tn
    >>> positional = tn.nn.LearnedPositionalEmbedding(max_len=16, d_model=4)
    >>> positional(tn.zeros(2, 5, 4)).shape
    (2, 5, 4)
    """

    def __init__(self, max_len, d_model, device=None, dtype=None):
        super().__init__()
        self.max_len, self.d_model = max_len, d_model
        self.embedding = Embedding(max_len, d_model, device=device, dtype=dtype)

    def forward(self, x, offset=0):
        length = x.shape[-2] if x.ndim >= 2 else 0
        _check_positions("LearnedPositionalEmbedding", x, offset, length, self.max_len,
                         self.d_model)
        positions = creation.arange(offset, offset + length, device=x.device)
        return x + self.embedding(positions)                                 # (..., T, d_model)

    def extra_repr(self):
        return f"max_len={self.max_len}, d_model={self.d_model}"


class RotaryPositionalEmbedding(Module):
    """Rotary position embedding (RoPE, Su et al. 2021): rotate each pair of features of a
    query or key by an angle proportional to its position, so that the dot product of a query
    at position m and a key at position n depends only on m - n.

    Convention: "rotate half", as GPT-NeoX and LLaMA in Hugging Face: feature ``i`` pairs with
    feature ``i + head_dim/2`` (not with ``i + 1`` as in the interleaved RoFormer/GPT-J form),
    with angle ``position * base^(-2i/head_dim)``::

        rope(x) = x * cos + rotate_half(x) * sin,   rotate_half([x1, x2]) = [-x2, x1]

    ``forward(x, offset=0)``: ``x`` is (..., T, head_dim), e.g. (N, nh, T, hs) queries or keys;
    token ``t`` gets position ``offset + t``. The cos and sin tables (``max_len``, head_dim) are
    non-persistent float32 buffers (cast to the input's dtype, so rotations are exact to about
    1e-7 even in float64). It has no parameters.

    >>> import tinynlm as tn
    >>> rope = tn.nn.RotaryPositionalEmbedding(head_dim=4, max_len=8)
    >>> q = tn.randn(1, 2, 3, 4)
    >>> rope(q).shape
    (1, 2, 3, 4)
    >>> bool(((rope(q) - q)[..., 0, :].abs() < 1e-7).all())  # position 0 is not rotated
    True
    """

    def __init__(self, head_dim, max_len=4096, base=10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RotaryPositionalEmbedding: head_dim must be even, got {head_dim}")
        self.head_dim, self.max_len, self.base = head_dim, max_len, base
        inverse_frequencies = base ** (-np.arange(0, head_dim, 2) / head_dim)  # (head_dim/2,)
        angles = np.outer(np.arange(max_len), inverse_frequencies)             # (max_len, hd/2)
        angles = np.concatenate([angles, angles], axis=-1)                     # (max_len, hd)
        self.register_buffer("cos", creation.tensor(np.cos(angles), dtype=dtypes.float32),
                             persistent=False)
        self.register_buffer("sin", creation.tensor(np.sin(angles), dtype=dtypes.float32),
                             persistent=False)

    def forward(self, x, offset=0):
        length = x.shape[-2] if x.ndim >= 2 else 0
        _check_positions("RotaryPositionalEmbedding", x, offset, length, self.max_len,
                         self.head_dim)
        cos = self.cos[offset:offset + length].to(x.dtype)                     # (T, head_dim)
        sin = self.sin[offset:offset + length].to(x.dtype)
        return x * cos + _rotate_half(x) * sin

    def extra_repr(self):
        return f"head_dim={self.head_dim}, max_len={self.max_len}, base={self.base}"


def _rotate_half(x):
    """[x1, x2] -> [-x2, x1] over the two halves of the last dim."""
    first, second = x.chunk(2, dim=-1)
    return ops.cat([-second, first], dim=-1)


def _check_positions(op_name, x, offset, length, max_len, features):
    if x.ndim < 2 or x.shape[-1] != features:
        raise ValueError(f"{op_name}: expects inputs (..., T, {features}), got shape {x.shape}")
    if offset < 0 or offset + length > max_len:
        raise ValueError(f"{op_name}: positions {offset}..{offset + length - 1} do not fit "
                         f"max_len={max_len} (input of shape {x.shape}, offset {offset})")
