"""Compiled kernels, installed as ``tinynlm.kernels``: Numba on the CPU, CUDA on the GPU.

Kernels are plain functions over NumPy or CuPy arrays and know nothing of tensors; the op layer
finds them through ``tinynlm.dispatch``.
"""

import functools
import os


def _default_cpu_threads():
    configured = os.environ.get("TINYNLM_KERNEL_THREADS")
    if configured:
        return max(1, int(configured))
    import numba

    # The CPU kernels run between OpenBLAS's matrix products, whose threads keep spinning for a
    # while after each product; Numba threads on the same cores then fight them. Half the cores
    # for the kernels was fastest where measured (a GPT training step on 2 cores: 0.30 s with one
    # kernel thread, 0.49 s with two).
    return max(1, numba.config.NUMBA_NUM_THREADS // 2)


CPU_THREADS = _default_cpu_threads()


def _cpu_cores():
    configured = os.environ.get("TINYNLM_KERNEL_THREADS")
    if configured:
        return max(1, int(configured))
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


_CPU_CORES = _cpu_cores()


def cpu_cores() -> int:
    """How many threads the CPU kernels that share long calls among cores (attention, recurrent
    layers, GELU, layer norm) use: the cores this process may run on, unless
    ``TINYNLM_KERNEL_THREADS`` or :func:`set_cpu_cores` says otherwise."""
    return _CPU_CORES


def set_cpu_cores(count: int):
    """Let those kernels (see :func:`cpu_cores`) use ``count`` threads from the next call on
    (benchmarks pin it to compare thread counts).

    >>> previous = cpu_cores(); set_cpu_cores(1); cpu_cores()
    1
    >>> set_cpu_cores(previous)
    """
    global _CPU_CORES
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"set_cpu_cores: count must be a positive int, got {count!r}")
    _CPU_CORES = count


def cpu_threads(function):
    """Run ``function`` (a CPU kernel's wrapper) with ``CPU_THREADS`` Numba threads, then
    restore the caller's setting."""
    import numba

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        previous = numba.get_num_threads()
        numba.set_num_threads(min(CPU_THREADS, numba.config.NUMBA_NUM_THREADS))
        try:
            return function(*args, **kwargs)
        finally:
            numba.set_num_threads(previous)

    return wrapper


def enabled(on: bool = True):
    """Switch the fused kernels on or off; also a context manager that restores the setting.
    The same switch as ``tinynlm.use_fused_kernels``; ``TINYNLM_FUSED_KERNELS=0`` in the
    environment starts with them off.

    >>> import tinynlm as tn
    >>> with tn.kernels.enabled(False):
    ...     tn.fused_kernels_enabled()
    False
    >>> tn.fused_kernels_enabled()
    True
    """
    from tinynlm.dispatch import use_fused_kernels

    return use_fused_kernels(on)


def cpu_kernel(function=None, *, reassociate=False):
    """``numba.njit`` with the on-disk cache, compiled for parallel threads (``prange``) only
    when the kernels get more than one thread: the parallel compile takes several times as
    long, and on two cores the kernels run on one. NumPy's error model (a division by zero
    gives inf or NaN instead of raising) lets LLVM vectorise the loops. ``reassociate=True``
    lets it also reorder additions (``fastmath={"reassoc", "nsz"}``), so that a running sum
    is kept as several partial sums in vector registers instead of one chain of dependent
    additions; NaN and infinity keep their meaning. Use it as ``@cpu_kernel`` or
    ``@cpu_kernel(reassociate=True)``."""
    import numba

    def compile(function):
        fastmath = {"reassoc", "nsz"} if reassociate else False
        return numba.njit(parallel=CPU_THREADS > 1, cache=True, error_model="numpy",
                          fastmath=fastmath)(function)

    return compile if function is None else compile(function)
