"""Sequence-to-sequence models with attention: an RNN encoder-decoder with additive (Bahdanau)
attention and a Transformer encoder-decoder.

Both read source ids ``src`` (B, S) and, with teacher forcing, decoder inputs ``tgt_in`` (B, T)
(the target shifted right behind ``bos_id``), and return logits (B, T, vocab_size) for the
target ``tgt_out`` (the target followed by ``eos_id``). Source positions holding ``pad_id`` are
padding: the encoder and the attention ignore them. One vocabulary serves both sides.

``greedy_decode(src, max_len)`` translates a batch and returns the chosen ids and, for each
example, the attention map (output step x source position) that explains the choice.
"""

from __future__ import annotations

import math

import numpy as np

from .. import creation, ops
from ..autograd import no_grad
from ..nn import functional as F
from ..nn import init
from ..nn.attention import AdditiveAttention
from ..nn.layers import Embedding, Linear
from ..nn.module import Module
from ..nn.packing import pack_padded_sequence, pad_packed_sequence
from ..nn.positional import SinusoidalPositionalEncoding
from ..nn.recurrent import GRU, GRUCell
from ..nn.transformer import Transformer
from .language_model import check_token_ids


class Seq2SeqModel(Module):
    """What both encoder-decoders share: the special ids, the padding mask, the loss and greedy
    decoding. A subclass defines ``forward(src, tgt_in)`` and ``_start_decoding(src)``, which
    returns an object with ``next_logits(prefix)`` (the (B, vocab) logits of the token after the
    decoder inputs ``prefix`` (B, t)) and ``attention_weights(prefix)`` ((B, t, S): where each
    of those t decoder steps looked in the source).
    """

    def __init__(self, vocab_size, pad_id, bos_id, eos_id):
        super().__init__()
        if len({pad_id, bos_id, eos_id}) != 3 or not all(
                0 <= token < vocab_size for token in (pad_id, bos_id, eos_id)):
            raise ValueError(f"{type(self).__name__}: pad_id {pad_id}, bos_id {bos_id} and "
                             f"eos_id {eos_id} must be distinct ids below vocab_size "
                             f"{vocab_size}")
        self.vocab_size = vocab_size
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id

    def source_padding_mask(self, src):
        """(B, S) bool, True at the padding of ``src`` (B, S). Padding goes after each source's
        tokens (the RNN encoder reads the first ``S - padding`` of them)."""
        self._check_ids(src, "src")
        return src == self.pad_id

    def loss(self, src, tgt_in, tgt_out):
        """Mean cross-entropy of the teacher-forced logits against ``tgt_out`` (B, T), skipping
        positions that hold ``pad_id``."""
        logits = self(src, tgt_in)                                        # (B, T, vocab)
        batch, length, vocab = logits.shape
        return F.cross_entropy(logits.reshape(batch * length, vocab),
                               tgt_out.reshape(batch * length), ignore_index=self.pad_id)

    def greedy_decode(self, src, max_len):
        """Translate ``src`` (B, S) greedily, in eval mode without gradients.

        Returns ``(ids, weights)``: ``ids`` (B, T_out) int64, each row the chosen tokens up to
        and including ``eos_id`` and ``pad_id`` after it (T_out <= ``max_len``; decoding stops
        once every row has ended), and ``weights`` (B, T_out, S), row ``t`` of example ``b`` the
        attention over the source at the step that chose ``ids[b, t]`` (rows after a row's EOS
        come from steps whose choice was discarded).
        """
        if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) \
                or max_len < 1:
            raise ValueError(f"{type(self).__name__}.greedy_decode: max_len must be a positive "
                             f"int, got {max_len!r}")
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                return self._greedy_decode(src, int(max_len))
        finally:
            self.train(was_training)

    def _greedy_decode(self, src, max_len):
        decoding = self._start_decoding(src)
        batch = src.shape[0]
        prefix = creation.full((batch, 1), self.bos_id, dtype=src.dtype, device=src.device)
        finished = np.zeros(batch, dtype=bool)
        chosen = []
        for _ in range(max_len):
            tokens = decoding.next_logits(prefix).argmax(dim=-1).numpy()  # (B,)
            tokens = np.where(finished, self.pad_id, tokens)
            finished |= tokens == self.eos_id
            chosen.append(tokens)
            prefix = ops.cat([prefix, creation.tensor(tokens[:, None], dtype=src.dtype,
                                                      device=src.device)], dim=1)
            if finished.all():
                break
        weights = decoding.attention_weights(prefix[:, :-1])              # (B, T_out, S)
        ids = creation.tensor(np.stack(chosen, axis=1).astype(np.int64), device=src.device)
        return ids, weights

    def _check_ids(self, ids, label):
        check_token_ids(ids, type(self).__name__, label)

    def _start_decoding(self, src):
        raise NotImplementedError


class AttentionRNNSeq2Seq(Seq2SeqModel):
    """An RNN encoder-decoder with additive (Bahdanau) attention and input feeding.

    * Encoder: ``source_embedding`` then a bidirectional GRU (``encoder``, ``hidden_size`` per
      direction) over the unpadded source; its outputs (B, S, 2 * hidden_size) are the keys and
      values of the attention. ``bridge`` maps the two final states to the decoder's first state.
    * Decoder step t: ``decoder_cell`` (a GRUCell) reads ``[target_embedding(y_{t-1}); c_{t-1}]``
      (input feeding: the previous context), giving ``h_t``; ``attention`` (AdditiveAttention)
      scores every source position against ``h_t`` and returns the context ``c_t``; ``output``
      maps ``[h_t; c_t]`` to the logits of ``y_t``.

    ``forward(src, tgt_in)`` runs the decoder with teacher forcing: src (B, S), tgt_in (B, T) ->
    logits (B, T, vocab_size). Padding (``pad_id``) in ``src`` is skipped by the encoder and
    masked in the attention.

    >>> import tinynlm as tn
    >>> model = AttentionRNNSeq2Seq(vocab_size=12, embedding_dim=4, hidden_size=6)
    >>> src = tn.tensor([[5, 6, 7], [8, 9, 0]])            # the second source is padded
    >>> model(src, tn.tensor([[1, 5], [1, 6]])).shape
    (2, 2, 12)
    >>> ids, weights = model.greedy_decode(src, max_len=4)
    >>> ids.shape[1] <= 4, weights[1, :, 2].abs().sum().item()  # no attention on the padding
    (True, 0.0)
    """

    def __init__(self, vocab_size, embedding_dim=32, hidden_size=64, attention_size=None,
                 pad_id=0, bos_id=1, eos_id=2):
        super().__init__(vocab_size, pad_id, bos_id, eos_id)
        self.hidden_size = hidden_size
        memory_size = 2 * hidden_size  # both directions of the encoder
        self.source_embedding = Embedding(vocab_size, embedding_dim)
        self.target_embedding = Embedding(vocab_size, embedding_dim)
        self.encoder = GRU(embedding_dim, hidden_size, batch_first=True, bidirectional=True)
        self.bridge = Linear(memory_size, hidden_size)
        self.decoder_cell = GRUCell(embedding_dim + memory_size, hidden_size)
        self.attention = AdditiveAttention(hidden_size, memory_size,
                                           attention_size or hidden_size)
        self.output = Linear(hidden_size + memory_size, vocab_size)

    def forward(self, src, tgt_in):
        self._check_ids(tgt_in, "tgt_in")
        decoding = self._start_decoding(src)
        embedded = self.target_embedding(tgt_in)                          # (B, T, E)
        features = [decoding.step(embedded[:, t]) for t in range(tgt_in.shape[1])]
        return self.output(ops.stack(features, dim=1))                    # (B, T, vocab)

    def encode(self, src):
        """``(memory, padding, state)``: encoder outputs (B, S, 2H), the padding mask (B, S) and
        the decoder's first state (B, H)."""
        padding = self.source_padding_mask(src)                           # (B, S)
        lengths = src.shape[1] - padding.sum(dim=1).numpy()               # (B,)
        packed = pack_padded_sequence(self.source_embedding(src), lengths, batch_first=True,
                                      enforce_sorted=False)
        output, final = self.encoder(packed)                              # final (2, B, H)
        memory, _ = pad_packed_sequence(output, batch_first=True,
                                        total_length=src.shape[1])        # (B, S, 2H)
        state = self.bridge(ops.cat([final[0], final[1]], dim=-1)).tanh() # (B, H)
        return memory, padding, state

    def _start_decoding(self, src):
        return _RNNDecoding(self, *self.encode(src))


class _RNNDecoding:
    """The decoder's running state over one batch: hidden state, last context and the
    attention weights of every step so far."""

    def __init__(self, model, memory, padding, state):
        self.model, self.memory, self.padding, self.state = model, memory, padding, state
        self.context = creation.zeros(memory.shape[0], memory.shape[2], dtype=memory.dtype,
                                      device=memory.device)               # (B, 2H)
        self.weights = []

    def step(self, embedded):
        """One decoder step on the embedded previous tokens (B, E); returns the output features
        [h_t; c_t] (B, 3H)."""
        model = self.model
        self.state = model.decoder_cell(ops.cat([embedded, self.context], dim=-1),
                                        self.state)                       # (B, H)
        context, weights = model.attention(self.state.unsqueeze(1), self.memory, self.memory,
                                           key_padding_mask=self.padding)  # (B, 1, 2H), (B, 1, S)
        self.context = context.squeeze(1)                                 # (B, 2H)
        self.weights.append(weights.squeeze(1))                           # (B, S)
        return ops.cat([self.state, self.context], dim=-1)                # (B, 3H)

    def next_logits(self, prefix):
        embedded = self.model.target_embedding(prefix[:, -1])             # (B, E)
        return self.model.output(self.step(embedded))                     # (B, vocab)

    def attention_weights(self, prefix):
        return ops.stack(self.weights[:prefix.shape[1]], dim=1)           # (B, T, S)


class TransformerSeq2Seq(Seq2SeqModel):
    """A Transformer encoder-decoder: token embeddings (``source_embedding``,
    ``target_embedding``) scaled by ``sqrt(d_model)`` plus fixed sinusoidal positions, then
    ``transformer`` (``nn.Transformer``, batch first) with padding masks on the source and a
    causal mask on the target, then ``output`` (Linear to the vocabulary).

    ``forward(src, tgt_in)``: src (B, S), tgt_in (B, T) -> logits (B, T, vocab_size).
    ``greedy_decode`` reports the cross-attention weights of the last decoder layer, averaged
    over its heads.

    >>> import tinynlm as tn
    >>> model = TransformerSeq2Seq(vocab_size=12, d_model=8, nhead=2, num_encoder_layers=1,
    ...                            num_decoder_layers=1, dim_feedforward=16)
    >>> src = tn.tensor([[5, 6, 7], [8, 9, 0]])
    >>> model(src, tn.tensor([[1, 5], [1, 6]])).shape
    (2, 2, 12)
    >>> ids, weights = model.greedy_decode(src, max_len=4)
    >>> weights.shape == (2, ids.shape[1], 3), weights[1, :, 2].abs().sum().item()
    (True, 0.0)
    """

    def __init__(self, vocab_size, d_model=64, nhead=4, num_encoder_layers=2,
                 num_decoder_layers=2, dim_feedforward=128, dropout=0.0, max_len=128, pad_id=0,
                 bos_id=1, eos_id=2):
        super().__init__(vocab_size, pad_id, bos_id, eos_id)
        self.d_model = d_model
        self.source_embedding = Embedding(vocab_size, d_model)
        self.target_embedding = Embedding(vocab_size, d_model)
        for embedding in (self.source_embedding, self.target_embedding):
            # N(0, 1/d_model): after the sqrt(d_model) scale, tokens and positions (both about
            # unit size per feature) weigh alike.
            init.normal_(embedding.weight, std=1 / math.sqrt(d_model))
        self.positions = SinusoidalPositionalEncoding(d_model, max_len=max_len, dropout=dropout)
        self.transformer = Transformer(d_model, nhead, num_encoder_layers, num_decoder_layers,
                                       dim_feedforward, dropout, batch_first=True)
        self.output = Linear(d_model, vocab_size)

    def forward(self, src, tgt_in):
        memory, padding = self.encode(src)
        return self.output(self.decode(tgt_in, memory, padding))         # (B, T, vocab)

    def encode(self, src):
        """``(memory, padding)``: the encoder's output (B, S, d_model) and the padding mask
        (B, S)."""
        padding = self.source_padding_mask(src)                           # (B, S)
        source = self._embed(self.source_embedding, src)                  # (B, S, d_model)
        return self.transformer.encoder(source, src_key_padding_mask=padding), padding

    def decode(self, tgt_in, memory, padding):
        """The decoder's output (B, T, d_model) for inputs ``tgt_in`` (B, T), each position
        seeing itself, the positions before it and the unpadded ``memory``."""
        self._check_ids(tgt_in, "tgt_in")
        causal = self._causal_mask(tgt_in.shape[1], memory)
        target = self._embed(self.target_embedding, tgt_in)               # (B, T, d_model)
        return self.transformer.decoder(target, memory, tgt_mask=causal, tgt_is_causal=True,
                                        memory_key_padding_mask=padding)

    def cross_attention_weights(self, tgt_in, memory, padding):
        """(B, T, S): the last decoder layer's attention over ``memory``, averaged over heads,
        for decoder inputs ``tgt_in`` (B, T).

        ``TransformerDecoderLayer`` does not return its weights, so this runs the layers before
        the last one and then the last one's self-attention block (post-norm, as
        ``nn.Transformer`` builds it) to rebuild the query its ``multihead_attn`` sees.
        """
        causal = self._causal_mask(tgt_in.shape[1], memory)
        x = self._embed(self.target_embedding, tgt_in)                    # (B, T, d_model)
        *earlier, last = self.transformer.decoder.layers
        for layer in earlier:
            x = layer(x, memory, tgt_mask=causal, tgt_is_causal=True,
                      memory_key_padding_mask=padding)
        x = last.norm1(x + last.self_attn(x, x, x, attn_mask=causal, need_weights=False)[0])
        return last.multihead_attn(x, memory, memory, key_padding_mask=padding,
                                   need_weights=True)[1]                  # (B, T, S)

    def _embed(self, embedding, ids):
        return self.positions(embedding(ids) * math.sqrt(self.d_model))   # (B, T, d_model)

    @staticmethod
    def _causal_mask(length, like):
        return Transformer.generate_square_subsequent_mask(length, device=like.device,
                                                           dtype=like.dtype)  # (T, T)

    def _start_decoding(self, src):
        return _TransformerDecoding(self, *self.encode(src))


class _TransformerDecoding:
    """Greedy decoding re-runs the decoder over the whole prefix at each step (targets here are
    a dozen tokens, so a key/value cache would save little)."""

    def __init__(self, model, memory, padding):
        self.model, self.memory, self.padding = model, memory, padding

    def next_logits(self, prefix):
        hidden = self.model.decode(prefix, self.memory, self.padding)     # (B, t, d_model)
        return self.model.output(hidden[:, -1])                           # (B, vocab)

    def attention_weights(self, prefix):
        return self.model.cross_attention_weights(prefix, self.memory, self.padding)
