"""``tn.cuda``: whether a GPU is usable, and a few CUDA utilities."""

from . import backend


def is_available() -> bool:
    """True when CuPy is installed and sees a CUDA GPU; never raises.

    >>> import tinynlm as tn
    >>> isinstance(tn.cuda.is_available(), bool)
    True
    """
    return backend.cuda_is_available()


def device_count() -> int:
    """How many CUDA GPUs CuPy sees (0 without CuPy or a GPU)."""
    if not is_available():
        return 0
    return backend.cupy_module().cuda.runtime.getDeviceCount()


def synchronize(device=None):
    """Wait for all work queued on a GPU (for timing); raises without CUDA."""
    cupy = backend.cupy_module()
    index = 0 if device is None else backend.Device(device).index
    with cupy.cuda.Device(index):
        cupy.cuda.Device(index).synchronize()


def manual_seed(seed: int):
    """Seed the generators (shared with ``tn.manual_seed``)."""
    return backend.manual_seed(seed)
