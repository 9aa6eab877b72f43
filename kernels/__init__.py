"""Compiled kernels, installed as ``tinynlm.kernels``: Numba on the CPU, CUDA on the GPU.

Kernels are plain functions over NumPy or CuPy arrays and know nothing of tensors; the op layer
finds them through ``tinynlm.dispatch``.
"""

import os


def _cpu_cores():
    configured = os.environ.get("TINYNLM_KERNEL_THREADS")
    if configured:
        return max(1, int(configured))
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


_CPU_CORES = _cpu_cores()


def cpu_cores() -> int:
    """How many threads the CPU kernels use to share a long call among cores: the cores this
    process may run on, unless ``TINYNLM_KERNEL_THREADS`` or :func:`set_cpu_cores` says
    otherwise. Short calls run on the calling thread alone."""
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
