"""The text a language model trains on: the embedded default corpus, or a UTF-8 file."""

from __future__ import annotations

import os


def load_corpus(path=None) -> str:
    """The training text: the UTF-8 file at ``path``, or, with no path, the English text of
    Python's own documentation topics (``pydoc_data.topics``, on every Python install, so
    nothing is ever downloaded): the topics joined with newlines in sorted-key order, about
    465,000 characters.

    Raises ``FileNotFoundError``, ``IsADirectoryError`` or ``ValueError`` (an empty file, or
    bytes that are not valid UTF-8, with the byte offset) naming the file.

    >>> text = load_corpus()
    >>> len(text) > 400_000 and "lambda" in text
    True
    """
    if path is None:
        from pydoc_data.topics import topics

        return "\n".join(topics[key] for key in sorted(topics))
    name = os.fspath(path)
    if os.path.isdir(name):
        raise IsADirectoryError(f"load_corpus: {name!r} is a directory, not a text file")
    if not os.path.exists(name):
        raise FileNotFoundError(f"load_corpus: no such file {name!r}")
    with open(name, "rb") as file:
        raw = file.read()
    if not raw:
        raise ValueError(f"load_corpus: the file {name!r} is empty")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"load_corpus: the file {name!r} is not valid UTF-8: byte "
                         f"{raw[error.start]:#04x} at byte offset {error.start} "
                         f"({error.reason})") from None
