"""A recurrent language model: token embedding, a stacked LSTM, GRU or Elman RNN, dropout and a
Linear head predicting the next token.

The recurrent state carries everything the model knows about the past, so generation encodes
the prompt once and then costs one recurrent step per new token, however long the text grows.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..nn import init
from ..nn.layers import Dropout, Embedding, Linear
from ..nn.recurrent import GRU, LSTM, RNN
from .language_model import LanguageModel

_CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


@dataclass
class RNNLMConfig:
    """The sizes of an :class:`RNNLanguageModel`. ``cell`` is ``"lstm"``, ``"gru"`` or ``"rnn"``
    (tanh); ``dropout`` acts between recurrent layers and before the head; ``tie_weights``
    shares the head's weight with the embedding (needs ``n_embd == hidden_size``).

    >>> RNNLMConfig(vocab_size=65, cell="gru").hidden_size
    256
    """

    vocab_size: int
    cell: str = "lstm"
    n_embd: int = 128
    hidden_size: int = 256
    n_layer: int = 2
    dropout: float = 0.0
    tie_weights: bool = False

    def __post_init__(self):
        for name in ("vocab_size", "n_embd", "hidden_size", "n_layer"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RNNLMConfig: {name} must be a positive int, got {value!r}")
        if self.cell not in _CELLS:
            raise ValueError(f"RNNLMConfig: cell must be one of {sorted(_CELLS)}, got "
                             f"{self.cell!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"RNNLMConfig: dropout must be in [0, 1), got {self.dropout!r}")
        if self.tie_weights and self.n_embd != self.hidden_size:
            raise ValueError(f"RNNLMConfig: tie_weights needs n_embd == hidden_size, got "
                             f"{self.n_embd} and {self.hidden_size}")


class RNNLanguageModel(LanguageModel):
    """Embedding -> LSTM/GRU/RNN (batch first) -> dropout -> Linear head.

    ``forward(idx, targets=None, state=None)`` returns ``(logits, loss, state)``: logits (B, T,
    vocab_size), the mean cross-entropy against ``targets`` (B, T) or None, and the final
    recurrent state (``(h, c)`` for an LSTM, else ``h``; each (n_layer, B, hidden_size)). Pass
    the state back in to continue a text; for truncated backpropagation through time pass
    :meth:`detach_state` of it. ``generate`` and ``generate_tokens`` are as for GPT (see
    :class:`~tinynlm.models.language_model.LanguageModel`).

    Initialised as PyTorch's word-language-model example: embedding and head weights uniform in
    ``±0.1``, head bias zero; the recurrent layers keep PyTorch's initialisation.

    >>> import math
    >>> import tinynlm as tn
    >>> model = RNNLanguageModel(RNNLMConfig(vocab_size=10, n_embd=8, hidden_size=16))
    >>> idx, targets = tn.tensor([[1, 2, 3], [4, 5, 6]]), tn.tensor([[2, 3, 4], [5, 6, 7]])
    >>> logits, loss, (h, c) = model(idx, targets)
    >>> logits.shape, h.shape, abs(loss.item() - math.log(10)) < 0.1  # about ln(vocab_size)
    ((2, 3, 10), (2, 2, 16), True)
    """

    def __init__(self, config: RNNLMConfig):
        super().__init__()
        self.config = config
        self.embedding = Embedding(config.vocab_size, config.n_embd)
        between_layers = config.dropout if config.n_layer > 1 else 0.0
        self.rnn = _CELLS[config.cell](config.n_embd, config.hidden_size,
                                       num_layers=config.n_layer, batch_first=True,
                                       dropout=between_layers)
        self.dropout = Dropout(config.dropout)
        self.head = Linear(config.hidden_size, config.vocab_size)
        init.uniform_(self.embedding.weight, -0.1, 0.1)
        init.uniform_(self.head.weight, -0.1, 0.1)
        init.zeros_(self.head.bias)
        if config.tie_weights:
            self.head.weight = self.embedding.weight

    def forward(self, idx, targets=None, state=None):
        self._check_ids(idx, "forward")
        output, state = self.rnn(self.embedding(idx), state)              # (B, T, hidden_size)
        logits = self.head(self.dropout(output))                          # (B, T, vocab_size)
        return logits, None if targets is None else self._loss(logits, targets), state

    @staticmethod
    def detach_state(state):
        """The state cut from the graph (``h`` or ``(h, c)``), to carry into the next batch.

        >>> import tinynlm as tn
        >>> model = RNNLanguageModel(RNNLMConfig(vocab_size=5, n_embd=4, hidden_size=4))
        >>> _, _, state = model(tn.tensor([[1, 2]]))
        >>> [tensor.requires_grad for tensor in RNNLanguageModel.detach_state(state)]
        [False, False]
        """
        if isinstance(state, tuple):
            return tuple(tensor.detach() for tensor in state)
        return state.detach()

    def _incremental_logits(self):
        state = None

        def next_logits(tokens):
            nonlocal state
            logits, _, state = self(tokens, state=state)
            return logits[:, -1]                                          # (B, vocab_size)

        return next_logits
