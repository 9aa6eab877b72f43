"""Process-wide defaults that ``import tinynlm`` sets for speed: each is a default only (a value
you set yourself wins) and each can be turned off.

* ``OPENBLAS_THREAD_TIMEOUT=4``: NumPy's OpenBLAS keeps its idle threads spinning for about
  0.1 s (2**28 cycles) after each matrix product, and tinynlm's CPU kernels share their work
  among all cores: a spinning thread on a core halved their speed. Threads that sleep at once
  cost a wake-up of a few microseconds per product instead. OpenBLAS reads the variable when it
  loads, so this only works when tinynlm is imported before NumPy.
* glibc's ``malloc`` keeps freed blocks of up to 32 MiB for reuse (``M_MMAP_THRESHOLD`` 32 MiB,
  ``M_TRIM_THRESHOLD`` 64 MiB). By default it hands large freed blocks back to the system and
  asks for them again: a training step, which allocates and frees the same few-MiB arrays over
  and over, then pays a page fault for every fresh 4 KiB page (about 14,000 a step for the
  benchmarks' small GPT, a fifth of its time). The cost: up to 64 MiB of freed memory may stay
  with each malloc arena (the main thread's, and one per thread that allocates, such as the
  kernels' helper threads). Skipped when ``MALLOC_MMAP_THRESHOLD_`` or
  ``MALLOC_TRIM_THRESHOLD_`` is set or ``GLIBC_TUNABLES`` names either threshold (glibc has read
  them), when ``TINYNLM_MALLOC_TUNING=0``, or without glibc.
"""

from __future__ import annotations

import ctypes
import os

MMAP_THRESHOLD = 32 * 2**20   # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 64 * 2**20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # mallopt parameter numbers (malloc.h)


def set_openblas_thread_timeout(numpy_loaded: bool) -> None:
    """Default OpenBLAS's idle-thread timeout to 4 (sleep at once), unless NumPy is loaded."""
    if not numpy_loaded:
        os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (see the module docstring); True when set.

    >>> isinstance(keep_freed_memory(), bool)
    True
    """
    if os.environ.get("TINYNLM_MALLOC_TUNING", "1") == "0":
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "malloc.mmap_threshold" in tunables or "malloc.trim_threshold" in tunables:
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, ValueError, OSError):  # not glibc (macOS, Windows, musl)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
