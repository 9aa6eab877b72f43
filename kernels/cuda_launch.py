"""What every Numba CUDA kernel wrapper needs to launch on CuPy arrays (or, on Numba's CUDA
simulator, on NumPy arrays): output allocation on the input's device, CuPy's current stream,
and kernel arguments that share CuPy's memory."""

import numpy as np
from numba import cuda


def empty_like_device(shape, dtype, like):
    """An uninitialized output array on ``like``'s device (CuPy for CuPy arrays, else NumPy)."""
    if isinstance(like, np.ndarray):
        return np.empty(shape, dtype)
    import cupy

    return cupy.empty(shape, dtype)


def launch_stream(like):
    """The stream to launch on: CuPy's current stream for CuPy arrays, else the default (0)."""
    if isinstance(like, np.ndarray):
        return 0
    import cupy

    pointer = cupy.cuda.get_current_stream().ptr
    return cuda.external_stream(pointer) if pointer else 0


def kernel_argument(a):
    """A kernel argument for array ``a``: for a CuPy array, a Numba view of it (without the stream
    synchronization Numba would otherwise do: the launch is on the same stream). NumPy arrays,
    which Numba copies to the device and back, go as they are, except read-only ones (broadcast
    views), which are marked as inputs so that nothing is copied back into them."""
    if isinstance(a, np.ndarray):
        return a if a.flags.writeable else cuda.In(a)
    return cuda.as_cuda_array(a, sync=False)
