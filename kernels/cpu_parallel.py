"""Running compiled CPU kernels on several threads: Python threads over Numba code that
releases the GIL (``nogil=True``), with OpenBLAS held to one thread meanwhile.

The attention and recurrent kernels call BLAS (``np.dot``) from inside compiled code on every
thread, so OpenBLAS's own threads must stay out of the way (:func:`single_threaded_blas`); the
work is cut into chunks that the calling thread and a small pool take in turn
(:func:`run_in_threads`).
"""

import concurrent.futures
import contextlib
import ctypes
import functools
import os
import threading

from . import cpu_cores


@functools.cache
def openblas_thread_functions():
    """OpenBLAS's (get, set) thread-count functions behind Numba's ``np.dot``, or None.

    Numba's ``np.dot`` calls the BLAS that ``scipy.linalg.cython_blas`` links; looking the
    functions up through that module finds them in that BLAS. SciPy's wheels rename OpenBLAS's
    symbols with a ``scipy_`` prefix.
    """
    from scipy.linalg import cython_blas

    blas = ctypes.CDLL(cython_blas.__file__)
    for prefix in ("scipy_openblas", "openblas"):
        get_threads = getattr(blas, f"{prefix}_get_num_threads", None)
        set_threads = getattr(blas, f"{prefix}_set_num_threads", None)
        if get_threads is not None and set_threads is not None:
            return get_threads, set_threads
    return None


_BLAS_THREADS_LOCK = threading.Lock()


def _forget_threads_after_fork():
    """In a forked child the parent's pool threads do not exist (work handed to them would
    wait forever) and the lock may be held by a thread that is gone: start afresh."""
    global _BLAS_THREADS_LOCK
    _BLAS_THREADS_LOCK = threading.Lock()
    _thread_pool.cache_clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads_after_fork)


@contextlib.contextmanager
def single_threaded_blas():
    """Run the block with OpenBLAS on one thread, then restore its thread count.

    The kernels call BLAS from every thread. Left alone, OpenBLAS also splits each tile
    product above its size threshold (m * n * k > 2**18, e.g. 128 x 128 x 64) over its own
    threads, and the two thread pools fighting over the cores made the kernels 10-20x slower.
    The setting is process-wide (so is OpenBLAS's ``openblas_set_num_threads_local`` in its
    pthreads builds): calls from several Python threads take turns, so that none restores the
    count while another still runs.
    """
    functions = openblas_thread_functions()
    if functions is None:
        yield
        return
    get_threads, set_threads = functions
    with _BLAS_THREADS_LOCK:
        previous = get_threads()
        set_threads(1)
        try:
            yield
        finally:
            set_threads(previous)


@functools.cache
def _thread_pool(workers):
    """The helper threads of :func:`run_in_threads`, made once per size."""
    return concurrent.futures.ThreadPoolExecutor(workers, "tinynlm-kernels")


def run_in_threads(run_items, n_items, n_chunks, align=1, *, fixed=False, blas=True):
    """Run work items ``0 .. n_items - 1`` as ``n_chunks`` runs of consecutive items (starting
    at multiples of ``align``, which divides ``n_items``), calling
    ``run_items(thread, first_item, stop_item)`` on up to ``cpu_cores()`` threads (the calling
    thread and a pool), each taking the next chunk when it is done with one; OpenBLAS runs on one
    thread meanwhile (``blas=False``: the kernels call no BLAS, leave it alone). Returns when
    all are done. ``fixed=True`` hands thread ``t`` the chunks ``t, t + threads, ...`` instead,
    so that per-thread partial sums add the same numbers in the same order on every call
    (reproducible results for a given thread count).

    The compiled kernels release the GIL, so the threads run in parallel. Python threads rather
    than Numba's ``prange``: Numba's workers spin between parallel regions and fought OpenBLAS's
    for the cores, and compiling for them took several times as long. Taking chunks as they come
    (rather than a fixed share each) keeps the other threads busy when one is slowed, e.g. by
    NumPy's OpenBLAS threads, which spin for a while after each matrix product (see the README).

    >>> seen = []
    >>> run_in_threads(lambda thread, first, stop: seen.append((first, stop)), 10, 3)
    >>> sorted(seen)
    [(0, 3), (3, 6), (6, 10)]
    """
    groups = n_items // align
    n_chunks = max(1, min(n_chunks, groups))
    bounds = [align * (groups * chunk // n_chunks) for chunk in range(n_chunks + 1)]
    chunks = iter(range(n_chunks))  # next() on it is atomic under the GIL
    n_threads = min(cpu_cores(), n_chunks)

    def run_chunks(thread):
        for chunk in range(thread, n_chunks, n_threads) if fixed else chunks:
            run_items(thread, bounds[chunk], bounds[chunk + 1])

    with single_threaded_blas() if blas else contextlib.nullcontext():
        if n_threads == 1:
            run_chunks(0)
            return
        pool = _thread_pool(n_threads - 1)
        others = [pool.submit(run_chunks, thread) for thread in range(1, n_threads)]
        try:
            run_chunks(0)
        finally:
            for share in others:
                share.result()
