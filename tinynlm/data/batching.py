"""Token ids to training and evaluation batches of (input, target) windows.

A window is ``block_size + 1`` consecutive ids: the input ``x`` is its first ``block_size`` ids
and the target ``y`` its last ``block_size``, so ``y[:, t]`` is the id that follows ``x[:, t]``.
"""

from __future__ import annotations

import numbers
from typing import Iterator

import numpy as np

from .. import creation
from ..tensor import Tensor
from .tokenizers import as_token_ids


def _require_positive_int(value, name: str, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{who}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _require_window(ids: np.ndarray, block_size: int, who: str):
    if len(ids) < block_size + 1:
        raise ValueError(f"{who}: {len(ids)} token ids are too few for one window of "
                         f"block_size + 1 = {block_size + 1} ids")


def split_train_val(ids, val_fraction: float = 0.1, min_length: int = 1):
    """``(train_ids, val_ids)``: the held-out part is the last ``round(len(ids) *
    val_fraction)`` ids, so the split is the same every time. Each part must hold at least
    ``min_length`` ids (pass ``block_size + 1`` to be sure both can make a window).

    >>> train, val = split_train_val(np.arange(10), val_fraction=0.2)
    >>> train, val
    (array([0, 1, 2, 3, 4, 5, 6, 7]), array([8, 9]))
    """
    ids = as_token_ids(ids, "split_train_val")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"split_train_val: val_fraction must lie strictly between 0 and 1, "
                         f"got {val_fraction!r}")
    min_length = _require_positive_int(min_length, "min_length", "split_train_val")
    val_length = round(len(ids) * val_fraction)
    train_length = len(ids) - val_length
    if min(train_length, val_length) < min_length:
        raise ValueError(f"split_train_val: {len(ids)} ids with val_fraction={val_fraction} give "
                         f"{train_length} training and {val_length} validation ids; each part "
                         f"needs at least {min_length}")
    return ids[:train_length], ids[train_length:]


def _windows_as_tensors(windows: np.ndarray, device) -> tuple[Tensor, Tensor]:
    """Windows (N, T + 1) as the int64 tensors ``x`` = (N, T) and ``y`` = (N, T) on ``device``."""
    return (creation.tensor(windows[:, :-1], device=device),
            creation.tensor(windows[:, 1:], device=device))


class RandomWindowBatcher:
    """Training batches of windows whose starts are drawn uniformly at random over ``ids``.

    ``seed`` is an int, None (fresh entropy) or a ``numpy.random.Generator`` (used, not copied).
    The same seed gives the same batches; :meth:`state_dict` / :meth:`load_state_dict` carry
    the generator's state, so a resumed run draws the same batches as an uninterrupted one.

    >>> batcher = RandomWindowBatcher(np.arange(100), block_size=8, batch_size=4, seed=0)
    >>> x, y = batcher.next_batch()
    >>> x.shape, y.shape, x.dtype
    ((4, 8), (4, 8), dtype('int64'))
    >>> bool(((y.numpy() - x.numpy()) == 1).all())
    True
    """

    def __init__(self, ids, block_size: int, batch_size: int, seed=None):
        who = "RandomWindowBatcher"
        self.ids = as_token_ids(ids, who)
        self.block_size = _require_positive_int(block_size, "block_size", who)
        self.batch_size = _require_positive_int(batch_size, "batch_size", who)
        _require_window(self.ids, self.block_size, who)
        self.generator = seed if isinstance(seed, np.random.Generator) \
            else np.random.default_rng(seed)
        self._window_offsets = np.arange(self.block_size + 1)

    def next_batch(self, device="cpu") -> tuple[Tensor, Tensor]:
        """The next ``(x, y)``: int64 tensors of shape (batch_size, block_size) on ``device``."""
        last_start = len(self.ids) - self.block_size - 1
        starts = self.generator.integers(0, last_start + 1, size=self.batch_size)   # (B,)
        windows = self.ids[starts[:, None] + self._window_offsets]              # (B, T + 1)
        return _windows_as_tensors(windows, device)

    def state_dict(self) -> dict:
        """The random generator's state as plain Python data (JSON-ready for NumPy's default
        PCG64 generator), for a checkpoint.

        >>> batcher = RandomWindowBatcher(np.arange(100), block_size=8, batch_size=4, seed=0)
        >>> state = batcher.state_dict()
        >>> first = batcher.next_batch()[0].tolist()
        >>> batcher.load_state_dict(state)
        >>> batcher.next_batch()[0].tolist() == first
        True
        """
        return {"generator": self.generator.bit_generator.state}

    def load_state_dict(self, state: dict):
        """Continue drawing from a state that :meth:`state_dict` returned."""
        generator_state = state.get("generator") if isinstance(state, dict) else None
        expected = type(self.generator.bit_generator).__name__
        if not isinstance(generator_state, dict) \
                or generator_state.get("bit_generator") != expected:
            raise ValueError(f"RandomWindowBatcher.load_state_dict: expected a state dict "
                             f"holding a {expected} generator state, got {state!r:.120}")
        self.generator.bit_generator.state = generator_state

    def __repr__(self):
        return (f"RandomWindowBatcher(ids={len(self.ids)}, block_size={self.block_size}, "
                f"batch_size={self.batch_size})")


def sequential_batches(ids, block_size: int, batch_size: int, device="cpu",
                       max_batches: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """Evaluation batches: the non-overlapping windows ``ids[i*T : i*T + T + 1]`` in order,
    ``batch_size`` windows at a time (the last batch may be smaller), the same every time so
    evaluation losses compare between runs. Ids after the last whole window are left out;
    ``max_batches`` stops early. Arguments are checked at the call, not at the first batch.

    >>> batches = list(sequential_batches(np.arange(10), block_size=3, batch_size=2))
    >>> [x.tolist() for x, y in batches]
    [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8]]]
    >>> [y.tolist() for x, y in batches]
    [[[1, 2, 3], [4, 5, 6]], [[7, 8, 9]]]
    """
    who = "sequential_batches"
    ids = as_token_ids(ids, who)
    block_size = _require_positive_int(block_size, "block_size", who)
    batch_size = _require_positive_int(batch_size, "batch_size", who)
    if max_batches is not None:
        max_batches = _require_positive_int(max_batches, "max_batches", who)
    _require_window(ids, block_size, who)
    window_count = (len(ids) - 1) // block_size
    used = ids[:window_count * block_size + 1]
    # Each window's inputs are a row here; its targets are the same row one id later.
    windows = np.concatenate([used[:-1].reshape(window_count, block_size),            # (N, T)
                              used[block_size::block_size, None]], axis=1)           # (N, T + 1)
    starts = range(0, window_count, batch_size)[:max_batches]
    return (_windows_as_tensors(windows[start:start + batch_size], device) for start in starts)
