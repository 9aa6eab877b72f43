"""What the language models share: checking token ids, the next-token loss, and generation.

A model subclasses :class:`LanguageModel`, defines ``forward(idx, targets=None, ...)`` and
``_incremental_logits()``; it then gets ``generate_tokens`` (a stream of sampled ids) and
``generate`` (the prompt with the sampled ids appended).
"""

from __future__ import annotations

import contextlib

import numpy as np

from .. import creation, ops
from ..autograd import no_grad
from ..nn import functional as F
from ..nn.module import Module
from ..tensor import Tensor
from .sampling import Sampler


def check_token_ids(ids, where, label="token ids"):
    """Refuse anything but a (B, T) integer tensor with T >= 1, naming ``where`` and ``label``.

    >>> import tinynlm as tn
    >>> check_token_ids(tn.tensor([[1, 2]]), "example")
    """
    if not isinstance(ids, Tensor) or ids.dtype.kind not in "iu":
        raise TypeError(f"{where}: {label} must be an integer Tensor, got "
                        f"{getattr(ids, 'dtype', type(ids).__name__)}")
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"{where}: {label} must have shape (B, T) with T >= 1, got {ids.shape}")


class LanguageModel(Module):
    """Base class of the models that read token ids (B, T) and predict each next token.

    Subclasses implement ``forward`` and ``_incremental_logits()``: a fresh function
    ``next_logits(tokens)`` that takes the (B, T) tokens following those it was given before and
    returns the (B, vocab) logits of the token after them, keeping whatever state (a key/value
    cache, a recurrent state) lets it skip the earlier tokens.

    >>> import numpy as np
    >>> import tinynlm as tn
    >>> from tinynlm.models import GPT, GPTConfig
    >>> model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8))
    >>> out = model.generate(tn.tensor([[1, 2]]), 5, generator=np.random.default_rng(0))
    >>> out.shape
    (1, 7)
    """

    def generate_tokens(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                        generator=None):
        """Sample ``max_new_tokens`` tokens after the prompt ``idx`` (B, T), yielding each as it
        is produced: a (B,) int64 NumPy array of ids.

        The prompt is encoded at once (errors surface here); each later token costs one step of
        the model (for GPT, see its note on ``block_size``). ``temperature``, ``top_k``, ``top_p`` and ``generator`` are those of
        :class:`~tinynlm.models.sampling.Sampler`. Every model call runs under ``tn.no_grad()``
        in eval mode; the model's mode is restored before each token is handed out, so the
        caller's code between tokens runs as it would otherwise.
        """
        sampler = Sampler(temperature, top_k, top_p, generator)
        self._check_ids(idx, "generate_tokens")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
                or max_new_tokens < 0:
            raise ValueError(f"{type(self).__name__}.generate_tokens: max_new_tokens must be an "
                             f"int >= 0, got {max_new_tokens!r}")
        next_logits = self._incremental_logits()
        with self._inference():
            logits = next_logits(idx)                                          # (B, vocab)
        return self._stream(next_logits, logits, int(max_new_tokens), sampler, idx)

    def _stream(self, next_logits, logits, count, sampler, idx):
        """The generator behind :meth:`generate_tokens`, from the logits after the prompt."""
        for index in range(count):
            if index:
                token = creation.tensor(ids[:, None], dtype=idx.dtype, device=idx.device)  # (B, 1)
                with self._inference():
                    logits = next_logits(token)                                # (B, vocab)
            ids = sampler(logits.numpy())
            yield ids

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                 generator=None):
        """``idx`` (B, T) with ``max_new_tokens`` sampled tokens appended: (B, T +
        max_new_tokens), on the prompt's device. See :meth:`generate_tokens`."""
        tokens = self.generate_tokens(idx, max_new_tokens, temperature, top_k, top_p, generator)
        new = np.array(list(tokens), dtype=np.int64).reshape(-1, idx.shape[0]).T  # (B, new)
        return ops.cat([idx, creation.tensor(new, dtype=idx.dtype, device=idx.device)], 1)

    @contextlib.contextmanager
    def _inference(self):
        """No gradients and eval mode (dropout off) inside; the mode is restored after."""
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                yield
        finally:
            self.train(was_training)

    def _check_ids(self, idx, method):
        check_token_ids(idx, f"{type(self).__name__}.{method}")

    def _loss(self, logits, targets):
        """Mean cross-entropy of ``logits`` (B, T, vocab) against ``targets`` (B, T)."""
        batch, length, vocab = logits.shape
        if not isinstance(targets, Tensor) or targets.shape != (batch, length):
            raise ValueError(f"{type(self).__name__}.forward: targets must be a tensor of the "
                             f"ids' shape {(batch, length)}, got "
                             f"{getattr(targets, 'shape', type(targets).__name__)}")
        return F.cross_entropy(logits.reshape(batch * length, vocab),            # (B*T, vocab)
                               targets.reshape(batch * length))                   # (B*T,)
