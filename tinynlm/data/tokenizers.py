"""Tokenizers: text to int64 token ids and back, by character or by UTF-8 byte.

Both kinds share the :class:`Tokenizer` interface and describe themselves as a small JSON-ready
dict (with a ``"kind"`` field) that :func:`tokenizer_from_dict` turns back into a tokenizer, so a
checkpoint can carry the tokenizer its model was trained with.
"""

from __future__ import annotations

import abc

import numpy as np


def as_token_ids(ids, who="token ids") -> np.ndarray:
    """``ids`` (a list, a NumPy array or a tinynlm Tensor, on any device) as a 1-D int64 NumPy
    array; ``who`` names the caller in errors.

    >>> as_token_ids([3, 1, 2])
    array([3, 1, 2])
    """
    array = np.asarray(ids)  # a Tensor converts through __array__, copied to the host if on a GPU
    if array.ndim != 1:
        raise ValueError(f"{who}: expected a 1-D sequence of token ids, got shape {array.shape}")
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{who}: token ids must be integers, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def _check_ids_in_range(ids: np.ndarray, vocab_size: int, who: str):
    bad = np.flatnonzero((ids < 0) | (ids >= vocab_size))
    if bad.size:
        raise ValueError(f"{who}: token id {ids[bad[0]]} at position {bad[0]} is outside the "
                         f"vocabulary of {vocab_size} tokens")


class Tokenizer(abc.ABC):
    """What every tokenizer offers: ``vocab_size``, ``encode``, ``decode`` and ``to_dict``.

    Two tokenizers are equal when their dicts are.

    >>> ByteTokenizer() == tokenizer_from_dict({"kind": "byte"})
    True
    """

    kind: str  # the "kind" field of the dict; each subclass sets its own

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """How many distinct token ids there are: ids run from 0 to ``vocab_size - 1``."""

    @abc.abstractmethod
    def encode(self, text: str) -> np.ndarray:
        """``text`` as a 1-D int64 array of token ids."""

    @abc.abstractmethod
    def decode(self, ids) -> str:
        """The text of token ``ids`` (a list, a NumPy array or a tinynlm Tensor)."""

    @abc.abstractmethod
    def to_dict(self) -> dict:
        """Everything needed to rebuild this tokenizer, as JSON-ready data with a ``"kind"``."""

    @classmethod
    def from_dict(cls, description: dict) -> "Tokenizer":
        """The tokenizer that ``to_dict`` described (of this class's kind)."""
        if not isinstance(description, dict) or description.get("kind") != cls.kind:
            raise ValueError(f"{cls.__name__}.from_dict: expected a dict with kind "
                             f"{cls.kind!r}, got {description!r:.80}")
        return cls._from_checked_dict(description)

    @classmethod
    @abc.abstractmethod
    def _from_checked_dict(cls, description: dict) -> "Tokenizer":
        """Build from a dict whose kind has been checked."""

    def __eq__(self, other):
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


class CharTokenizer(Tokenizer):
    """One token per character of a fixed vocabulary: token id ``i`` is ``characters[i]``.

    Encoding a character outside the vocabulary is an error naming it and its position, unless
    ``unknown`` (one of the characters) is given: then such characters encode as ``unknown``.

    >>> tokenizer = CharTokenizer.from_text("hello world")
    >>> tokenizer.vocab_size
    8
    >>> tokenizer.encode("hold")
    array([3, 5, 4, 1])
    >>> tokenizer.decode([3, 5, 4, 1])
    'hold'
    """

    kind = "char"

    def __init__(self, characters: str, unknown: str | None = None):
        if not isinstance(characters, str) or not characters:
            raise ValueError(f"CharTokenizer: characters must be a non-empty string, "
                             f"got {characters!r:.80}")
        if len(set(characters)) != len(characters):
            repeated = next(c for i, c in enumerate(characters) if c in characters[:i])
            raise ValueError(f"CharTokenizer: the character {repeated!r} appears more than once "
                             "in the vocabulary")
        if unknown is not None and (not isinstance(unknown, str) or unknown not in characters):
            raise ValueError(f"CharTokenizer: the unknown character {unknown!r} must be one of "
                             "the vocabulary's characters")
        self.characters = characters
        self.unknown = unknown
        # Code points of the vocabulary, and their sorted order, so encode maps a whole text
        # with one searchsorted instead of a Python loop over its characters.
        self._code_points = _code_points(characters)
        self._order = np.argsort(self._code_points, kind="stable")
        self._sorted_code_points = self._code_points[self._order]

    @classmethod
    def from_text(cls, text: str, unknown: str | None = None) -> "CharTokenizer":
        """The tokenizer whose vocabulary is the sorted set of characters of ``text`` (plus
        ``unknown``, when given).

        >>> CharTokenizer.from_text("banana").characters
        'abn'
        """
        if not isinstance(text, str):
            raise TypeError(f"CharTokenizer.from_text: expected a str, got {type(text).__name__}")
        extra = set() if unknown is None else {unknown}
        return cls("".join(sorted(set(text) | extra)), unknown=unknown)

    @property
    def vocab_size(self) -> int:
        return len(self.characters)

    def encode(self, text: str) -> np.ndarray:
        """``text`` as a 1-D int64 array of token ids.

        >>> CharTokenizer("ab").encode("abba")
        array([0, 1, 1, 0])
        """
        if not isinstance(text, str):
            raise TypeError(f"CharTokenizer.encode: expected a str, got {type(text).__name__}")
        points = _code_points(text)
        slots = np.searchsorted(self._sorted_code_points, points)
        slots = np.minimum(slots, len(self._sorted_code_points) - 1)
        known = self._sorted_code_points[slots] == points
        ids = self._order[slots].astype(np.int64)
        if not known.all():
            if self.unknown is None:
                position = int(np.argmin(known))
                raise ValueError(f"CharTokenizer.encode: the character {text[position]!r} at "
                                 f"position {position} is not in the vocabulary of "
                                 f"{self.vocab_size} characters")
            ids[~known] = self.characters.index(self.unknown)
        return ids

    def decode(self, ids) -> str:
        """The text of token ``ids`` (a list, a NumPy array or a tinynlm Tensor).

        >>> CharTokenizer("ab").decode(np.array([1, 0]))
        'ba'
        """
        ids = as_token_ids(ids, "CharTokenizer.decode")
        _check_ids_in_range(ids, self.vocab_size, "CharTokenizer.decode")
        return self._code_points[ids].tobytes().decode("utf-32-le", "surrogatepass")

    def to_dict(self) -> dict:
        """``{"kind": "char", "characters": ..., "unknown": ...}``.

        >>> CharTokenizer("ab").to_dict()
        {'kind': 'char', 'characters': 'ab', 'unknown': None}
        """
        return {"kind": self.kind, "characters": self.characters, "unknown": self.unknown}

    @classmethod
    def _from_checked_dict(cls, description):
        return cls(description.get("characters"), unknown=description.get("unknown"))

    def __repr__(self):
        return f"CharTokenizer(vocab_size={self.vocab_size}, unknown={self.unknown!r})"


def _code_points(text: str) -> np.ndarray:
    """The Unicode code points of ``text`` as a uint32 array (lone surrogates included)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


class ByteTokenizer(Tokenizer):
    """One token per UTF-8 byte: a vocabulary of 256 that can encode any text. Decoding bytes
    that are not valid UTF-8 (say, a character cut in half) gives U+FFFD in their place.

    >>> tokenizer = ByteTokenizer()
    >>> tokenizer.encode("é!")
    array([195, 169,  33])
    >>> tokenizer.decode([195, 169, 33])
    'é!'
    """

    kind = "byte"

    @property
    def vocab_size(self) -> int:
        return 256

    def encode(self, text: str) -> np.ndarray:
        """The UTF-8 bytes of ``text`` as a 1-D int64 array."""
        if not isinstance(text, str):
            raise TypeError(f"ByteTokenizer.encode: expected a str, got {type(text).__name__}")
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(f"ByteTokenizer.encode: the character {text[error.start]!r} at "
                             f"position {error.start} has no UTF-8 encoding "
                             f"({error.reason})") from None
        return np.frombuffer(raw, dtype=np.uint8).astype(np.int64)

    def decode(self, ids) -> str:
        """The text of UTF-8 byte ``ids``; invalid bytes become U+FFFD."""
        ids = as_token_ids(ids, "ByteTokenizer.decode")
        _check_ids_in_range(ids, self.vocab_size, "ByteTokenizer.decode")
        return ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def to_dict(self) -> dict:
        """``{"kind": "byte"}``."""
        return {"kind": self.kind}

    @classmethod
    def _from_checked_dict(cls, description):
        return cls()


TOKENIZER_KINDS = {tokenizer.kind: tokenizer for tokenizer in (CharTokenizer, ByteTokenizer)}


def tokenizer_from_dict(description: dict) -> Tokenizer:
    """The tokenizer that ``Tokenizer.to_dict`` described, of whichever kind it names.

    >>> tokenizer_from_dict(CharTokenizer("xyz").to_dict()).decode([2, 0])
    'zx'
    """
    kind = description.get("kind") if isinstance(description, dict) else None
    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"tokenizer_from_dict: unknown tokenizer kind {kind!r}; expected one of "
                         f"{sorted(TOKENIZER_KINDS)}")
    return TOKENIZER_KINDS[kind].from_dict(description)
