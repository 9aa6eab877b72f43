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


# The cores this process may run on; the attention kernels share long sequences among them
# with Python threads (their compiled code releases the GIL).
CPU_CORES = _cpu_cores()


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


def cpu_kernel(function):
    """``numba.njit`` with the on-disk cache, compiled for parallel threads (``prange``) only
    when the kernels get more than one thread: the parallel compile takes several times as
    long, and on two cores the kernels run on one. NumPy's error model (a division by zero
    gives inf or NaN instead of raising) lets LLVM vectorise the loops."""
    import numba

    return numba.njit(parallel=CPU_THREADS > 1, cache=True, error_model="numpy")(function)
