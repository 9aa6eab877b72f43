"""Workloads, their variants, and how one is measured: the engine under every suite.

A :class:`Workload` is one thing to time (a per-op overhead case, a layer's forward+backward, an
attention call, a training step) at one size. Its :class:`Variant` s are the implementations
timed side by side: ``fused`` and ``composed`` (tinynlm with the fused kernels on and off),
``tinynlm`` (where the kernels play no part), ``numpy`` (the same arithmetic by hand) and
``torch`` (PyTorch on the same device, only when compared). Each variant's ``build(device,
torch)`` returns a step: a no-argument callable that runs the workload once and returns a
result to compare (an output, a gradient or a loss).

:func:`measure_workload` then, for one device and thread count:

1. builds every variant that can run there (PyTorch only when asked for and importable; a
   variant that raises while building is reported, not fatal);
2. calls each step once (Numba's and CuPy's compilation happen here, untimed) and, when the
   workload gives a tolerance, checks each result against the baseline variant's: a variant
   that computes something else would make its ratio meaningless;
3. measures the peak extra memory of one call (NumPy allocations traced by ``tracemalloc`` on
   the CPU, which misses Numba's in-kernel buffers and PyTorch's; the CuPy pool's high-water
   mark or ``torch.cuda.max_memory_allocated`` on the GPU);
4. times the steps with their repeats interleaved (``benchmarks.timing``: warm-up calls, then
   the median and interquartile range; on the GPU the device is synchronised around each
   repeat), and returns one row per variant.

A row's ``ratio`` is its median over the baseline's: PyTorch's when it was compared, else the
workload's own baseline (``composed``, or ``numpy`` for the per-op cases).
"""

from __future__ import annotations

import gc
import math
import tracemalloc
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import tinynlm as tn
from tinynlm import backend

from .timing import measure_side_by_side


@dataclass(frozen=True)
class Variant:
    """One implementation of a workload: ``build(device, torch_module)`` -> step."""

    name: str
    build: Callable


@dataclass(frozen=True)
class Workload:
    """One thing to time at one size; see the module docstring.

    ``params`` are the sizes (they go into the JSON and the plots); ``tokens`` and ``flops`` are
    per call, for throughput; ``ops`` is how many tinynlm ops a per-op case records (for the
    overhead per op against ``numpy``); ``tolerance`` (relative, of the largest magnitude) is
    how closely each variant's result must match the baseline's (None: not compared);
    ``smallest`` marks the smallest size of its family, which the smoke test runs.
    """

    suite: str
    name: str
    description: str
    variants: tuple
    baseline: str
    params: dict = field(default_factory=dict)
    devices: tuple = ("cpu", "cuda")
    tokens: int | None = None
    flops: float | None = None
    ops: int | None = None
    tolerance: float | None = None
    smallest: bool = False


@dataclass(frozen=True)
class Settings:
    """How to measure: repeats and warm-up calls per variant, the shortest repeat, whether to
    measure memory."""

    repeats: int = 7
    warmup: int = 2
    min_repeat_seconds: float = 0.02
    memory: bool = True


# ----------------------------------------------------------------------------- results


def to_host(result):
    """A NumPy float64 array of a tinynlm tensor, a CuPy or NumPy array, a torch tensor, a
    number, or a list/tuple of them (concatenated, flattened)."""
    if isinstance(result, (list, tuple)):
        parts = [to_host(part) for part in result if part is not None]
        return np.concatenate([part.ravel() for part in parts]) if parts else np.zeros(0)
    if isinstance(result, tn.Tensor):
        return backend.to_host(result.data).astype(np.float64)
    if hasattr(result, "detach"):  # a torch tensor
        return result.detach().cpu().double().numpy()
    if hasattr(result, "__cuda_array_interface__"):  # a CuPy array
        result = result.get()
    return np.asarray(result, np.float64)


def check_result(workload: Workload, name: str, result, expected) -> None:
    """Raise if ``result`` differs from the baseline's by more than the workload's tolerance
    of the baseline's largest magnitude."""
    got, want = to_host(result), to_host(expected)
    if got.shape != want.shape:
        raise AssertionError(f"{workload.name}: {name} gave shape {got.shape}, the baseline "
                             f"{want.shape}")
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    error = float(np.abs(got - want).max(initial=0.0))
    if not error <= workload.tolerance * scale:
        raise AssertionError(f"{workload.name}: {name} differs from the baseline by {error:.3g} "
                             f"(allowed {workload.tolerance * scale:.3g})")


# ----------------------------------------------------------------------------- memory


class CupyPoolHighWater:
    """While active, every CuPy allocation goes through the default pool and the pool's used
    bytes are read after each one; ``peak_extra`` is the high-water mark minus the used bytes
    at the start (the pool's free blocks are released first)."""

    def __init__(self):
        import cupy

        self.cupy = cupy
        self.pool = cupy.get_default_memory_pool()

    def __enter__(self):
        self.pool.free_all_blocks()
        self.start = self.peak = self.pool.used_bytes()
        self.cupy.cuda.set_allocator(self._malloc)
        return self

    def _malloc(self, size):
        pointer = self.pool.malloc(size)
        self.peak = max(self.peak, self.pool.used_bytes())
        return pointer

    def __exit__(self, *exc):
        self.cupy.cuda.set_allocator(self.pool.malloc)
        return False

    @property
    def peak_extra(self) -> int:
        return self.peak - self.start


def release_cached_memory(device: str, torch_module, collect_garbage: bool = False):
    """Hand the GPU allocators' cached free blocks back to the device, after a garbage
    collection if asked (slow with PyTorch loaded; needed after an error, whose traceback held
    arrays)."""
    if collect_garbage:
        gc.collect()
    if device == "cuda":
        backend.cupy_module().get_default_memory_pool().free_all_blocks()
        if torch_module is not None and torch_module.cuda.is_available():
            torch_module.cuda.empty_cache()


def peak_extra_memory(step: Callable, device: str, is_torch: bool, torch_module) -> int | None:
    """Bytes allocated at the peak of one call of ``step`` beyond what was live before it;
    None where it cannot be measured (PyTorch on the CPU)."""
    release_cached_memory(device, torch_module)
    if device == "cpu":
        if is_torch:
            return None
        tracemalloc.start()
        try:
            step()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    if is_torch:
        cuda = torch_module.cuda
        cuda.synchronize()
        before = cuda.memory_allocated()
        cuda.reset_peak_memory_stats()
        step()
        cuda.synchronize()
        return cuda.max_memory_allocated() - before
    with CupyPoolHighWater() as high_water:
        step()
        tn.cuda.synchronize()
    return high_water.peak_extra


def is_out_of_memory(error: BaseException) -> bool:
    """NumPy's MemoryError (CuPy's OutOfMemoryError is one too), PyTorch's OutOfMemoryError,
    and the out-of-memory errors of CUDA libraries (cuBLAS, Numba's CUDA driver calls)."""
    if isinstance(error, MemoryError) or "OutOfMemory" in type(error).__name__:
        return True
    message = str(error).lower()
    return "out of memory" in message or "alloc_failed" in message


def describe_failure(error: BaseException) -> str:
    if is_out_of_memory(error):
        return "OOM"
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:200]


# ----------------------------------------------------------------------------- measuring


def measure_workload(workload: Workload, device: str, threads: int | None, torch_module,
                     settings: Settings) -> list[dict]:
    """Measure every variant of ``workload`` on ``device``; one row per variant (see the
    module docstring). ``threads`` is recorded in the rows (the caller pins it)."""
    steps, failures = {}, {}
    for variant in workload.variants:
        if variant.name == "torch" and (torch_module is None or device == "cuda"
                                        and not torch_module.cuda.is_available()):
            continue
        try:
            step = variant.build(device, torch_module)
        except Exception as error:  # noqa: BLE001 - reported in the row, the others go on
            failures[variant.name] = describe_failure(error)
            release_cached_memory(device, torch_module, collect_garbage=True)
            continue
        if step is not None:
            steps[variant.name] = step
    results = {}
    for name in list(steps):
        try:
            results[name] = steps[name]()  # the first call: compilation, caches
        except Exception as error:  # noqa: BLE001
            failures[name] = describe_failure(error)
            del steps[name]
            release_cached_memory(device, torch_module, collect_garbage=True)
    baseline = "torch" if "torch" in steps else workload.baseline
    if workload.tolerance is not None and baseline in results:
        for name, result in list(results.items()):
            if name == baseline:
                continue
            try:
                check_result(workload, name, result, results[baseline])
            except AssertionError as error:  # reported in its row; not timed
                failures[name] = f"wrong result: {error}"
                del steps[name]
    results.clear()
    memory = {}
    if settings.memory:
        for name, step in steps.items():
            memory[name] = peak_extra_memory(step, device, name == "torch", torch_module)
    names = list(steps)
    timings = measure_side_by_side([steps[name] for name in names], repeats=settings.repeats,
                                   warmup=settings.warmup, device=device,
                                   min_repeat_seconds=settings.min_repeat_seconds) if names else []
    by_name = dict(zip(names, timings))
    rows = []
    for variant in workload.variants:
        name = variant.name
        if name not in by_name and name not in failures:
            continue
        row = {"suite": workload.suite, "workload": workload.name,
               "description": workload.description, "params": dict(workload.params),
               "device": device, "threads": threads, "variant": name, "baseline": baseline}
        if name in failures:
            row["status"] = failures[name]
            rows.append(row)
            continue
        timing = by_name[name]
        row.update(status="ok", median_s=timing.median, iqr_s=timing.iqr,
                   min_s=timing.minimum, repeats=timing.repeats,
                   calls_per_repeat=timing.number, peak_extra_bytes=memory.get(name))
        if workload.tokens:
            row["tokens_per_s"] = workload.tokens / timing.median
        if workload.flops:
            row["gflop_per_s"] = workload.flops / timing.median / 1e9
        if baseline in by_name:
            row["ratio"] = timing.median / by_name[baseline].median
        if workload.ops and "numpy" in by_name and name != "numpy":
            row["overhead_per_op_us"] = (timing.median - by_name["numpy"].median) \
                / workload.ops * 1e6
        rows.append(row)
    release_cached_memory(device, torch_module)
    return rows


def finite_positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0
