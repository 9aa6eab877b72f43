"""Choosing the next token from a language model's logits, on the host with NumPy.

:class:`Sampler` is the one place both models sample: it turns a (B, vocab) array of logits into
B next token ids by dividing by the temperature, keeping the ``top_k`` most likely tokens, keeping
the nucleus of probability ``top_p``, then drawing one id per row from a
``numpy.random.Generator`` (so a seeded generator gives the same text every time).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from .. import backend


@dataclass(frozen=True)
class Sampler:
    """Next token ids from (B, vocab) logits.

    * ``temperature`` divides the logits: below 1 sharpens the distribution, above 1 flattens
      it. ``0`` means greedy decoding (the argmax), which is what sampling tends to as the
      temperature goes to 0.
    * ``top_k`` keeps only the ``k`` most likely tokens (and any tied with the k-th).
    * ``top_p`` keeps the smallest set of most likely tokens whose probabilities add up to at
      least ``top_p`` (nucleus sampling); the most likely token is always kept.
    * ``generator`` is a ``numpy.random.Generator``; None draws from tinynlm's CPU generator,
      which ``tn.manual_seed`` seeds.

    Top-k is applied before top-p, both after the temperature, as in Hugging Face's samplers.

    >>> import numpy as np
    >>> logits = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    >>> Sampler(temperature=0)(logits).tolist()
    [1, 0]
    >>> Sampler(top_k=2).probabilities(logits).round(3).tolist()  # ties with the 2nd stay
    [[0.13, 0.87, 0.0], [0.909, 0.045, 0.045]]
    >>> sampler = Sampler(top_p=0.9, generator=np.random.default_rng(0))
    >>> sampler(logits).shape
    (2,)
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    generator: np.random.Generator | None = None

    def __post_init__(self):
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, numbers.Real) \
                or not self.temperature >= 0 or self.temperature == float("inf"):
            raise ValueError(f"Sampler: temperature must be a finite number >= 0 (0 is greedy), "
                             f"got {self.temperature!r}")
        if self.top_k is not None and (isinstance(self.top_k, bool) or not isinstance(
                self.top_k, numbers.Integral) or self.top_k < 1):
            raise ValueError(f"Sampler: top_k must be a positive int or None, got {self.top_k!r}")
        if self.top_p is not None and (isinstance(self.top_p, bool) or not isinstance(
                self.top_p, numbers.Real) or not 0 < self.top_p <= 1):
            raise ValueError(f"Sampler: top_p must be in (0, 1] or None, got {self.top_p!r}")
        if self.generator is not None and not isinstance(self.generator, np.random.Generator):
            raise TypeError(f"Sampler: generator must be a numpy.random.Generator or None, got "
                            f"{type(self.generator).__name__}")

    def probabilities(self, logits) -> np.ndarray:
        """The (B, vocab) float64 distribution the next ids are drawn from: after the
        temperature, top-k and top-p; one-hot at the argmax when the temperature is 0."""
        logits = self._check(logits)
        if self.temperature == 0:
            return np.eye(logits.shape[1])[logits.argmax(1)]
        logits = logits / self.temperature
        if self.top_k is not None and self.top_k < logits.shape[1]:
            kth_largest = np.sort(logits, axis=1)[:, -self.top_k, None]      # (B, 1)
            logits = np.where(logits < kth_largest, -np.inf, logits)
        probabilities = np.exp(logits - logits.max(1, keepdims=True))
        probabilities /= probabilities.sum(1, keepdims=True)
        if self.top_p is not None and self.top_p < 1:
            order = np.argsort(-probabilities, axis=1, kind="stable")         # (B, vocab)
            ranked = np.take_along_axis(probabilities, order, 1)              # (B, vocab)
            # A token stays if the more likely ones before it hold less than top_p.
            keep_ranked = np.cumsum(ranked, 1) - ranked < self.top_p
            keep = np.empty_like(keep_ranked)
            np.put_along_axis(keep, order, keep_ranked, 1)
            probabilities = np.where(keep, probabilities, 0.0)
            probabilities /= probabilities.sum(1, keepdims=True)
        return probabilities

    def __call__(self, logits) -> np.ndarray:
        """Next ids, (B,) int64: the argmax with temperature 0, else one draw per row."""
        if self.temperature == 0:
            return self._check(logits).argmax(1)
        cumulative = np.cumsum(self.probabilities(logits), 1)                 # (B, vocab)
        generator = backend.generator(backend.CPU) if self.generator is None else self.generator
        uniform = generator.random((cumulative.shape[0], 1)) * cumulative[:, -1:]  # (B, 1)
        # Inverse transform sampling: the first id whose cumulative probability passes the draw.
        return (cumulative <= uniform).sum(1)

    @staticmethod
    def _check(logits) -> np.ndarray:
        logits = np.asarray(logits)
        if logits.ndim != 2 or logits.shape[1] == 0 or logits.dtype.kind != "f":
            raise ValueError(f"Sampler: logits must be a (B, vocab) floating point array, got "
                             f"shape {logits.shape} and dtype {logits.dtype}")
        return logits.astype(np.float64)
