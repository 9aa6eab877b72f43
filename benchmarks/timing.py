"""The timing helper every benchmark script uses.

A callable is run a few times to warm up, then timed in ``repeats`` repeats of ``number`` calls
each (``number`` is chosen so that one repeat takes at least ``min_repeat_seconds`` unless it is
given). The result is the median time per call, with the minimum and the interquartile range, in
seconds. Several callables can be timed side by side: their repeats are interleaved, so slow drift
of the machine (frequency scaling, other load) affects them alike and their ratio stays fair.

On a CUDA device the GPU is synchronised (``tn.cuda.synchronize``) before a repeat starts and
before it stops, so queued kernels are counted.

The garbage collector is left on, as it is in a real training loop.

>>> from benchmarks.timing import measure, measure_side_by_side
>>> timing = measure(lambda: sum(range(100)), repeats=3, number=200)
>>> timing.number, timing.repeats, 0 < timing.minimum <= timing.median
(200, 3, True)
>>> fast, slow = measure_side_by_side([lambda: None, lambda: sum(range(1000))], repeats=3,
...                                   min_repeat_seconds=0.002)
>>> fast.median < slow.median
True
"""

from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one callable: the median, minimum and interquartile range over the
    repeats, the calls per repeat (``number``) and how many repeats were taken."""

    median: float
    minimum: float
    iqr: float
    number: int
    repeats: int


def measure(function: Callable[[], object], *, repeats: int = 7, number: int | None = None,
            warmup: int = 3, min_repeat_seconds: float = 0.02, device: str = "cpu") -> Timing:
    """Time ``function()`` (no arguments); see the module docstring for the method."""
    return measure_side_by_side([function], repeats=repeats, number=number, warmup=warmup,
                                min_repeat_seconds=min_repeat_seconds, device=device)[0]


def measure_side_by_side(functions: Sequence[Callable[[], object]], *, repeats: int = 7,
                         number: int | None = None, warmup: int = 3,
                         min_repeat_seconds: float = 0.02, device: str = "cpu") -> list[Timing]:
    """Time each of ``functions`` with their repeats interleaved; one :class:`Timing` each.

    Each callable gets its own calls-per-repeat count (unless ``number`` fixes it for all).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    synchronize = _synchronizer(device)
    for function in functions:
        for _ in range(warmup):
            function()
    synchronize()
    numbers = [number or _calls_per_repeat(function, min_repeat_seconds, synchronize)
               for function in functions]
    per_call = [[] for _ in functions]
    for repeat in range(repeats):
        # each repeat starts with the next callable: one that leaves threads spinning (OpenMP
        # or OpenBLAS worker threads wait busily for a while after their work) slows whichever
        # runs after it, and rotating spreads that over all of them
        for index in _rotated(range(len(functions)), repeat):
            samples = per_call[index]
            samples.append(_time_calls(functions[index], numbers[index], synchronize)
                           / numbers[index])
    return [_summarise(samples, calls) for samples, calls in zip(per_call, numbers)]


def _rotated(items, shift):
    items = list(items)
    shift %= max(1, len(items))
    return items[shift:] + items[:shift]


def _time_calls(function, number, synchronize) -> float:
    """Wall-clock seconds for ``number`` calls of ``function``."""
    calls = itertools.repeat(None, number)
    synchronize()
    start = time.perf_counter()
    for _ in calls:
        function()
    synchronize()
    return time.perf_counter() - start


def _calls_per_repeat(function, min_seconds, synchronize) -> int:
    """The first of 1, 2, 5, 10, 20, 50, ... calls that take at least ``min_seconds``."""
    for power in itertools.count():
        for factor in (1, 2, 5):
            number = factor * 10 ** power
            if _time_calls(function, number, synchronize) >= min_seconds:
                return number
    raise AssertionError("unreachable")


def _summarise(samples, number) -> Timing:
    if len(samples) > 1:
        first_quartile, _, third_quartile = statistics.quantiles(samples, n=4)
    else:
        first_quartile = third_quartile = samples[0]
    return Timing(median=statistics.median(samples), minimum=min(samples),
                  iqr=third_quartile - first_quartile, number=number, repeats=len(samples))


def _synchronizer(device: str):
    """A no-argument function that waits for ``device``'s queued work (a no-op on the CPU)."""
    if not str(device).startswith("cuda"):
        return lambda: None
    import tinynlm as tn

    return lambda: tn.cuda.synchronize(str(device))
