"""The CUDA kernels (``kernels/cuda_attention.py``, ``kernels/cuda_fused.py``) against float64
NumPy references: always on Numba's CUDA simulator, and on CuPy arrays where a GPU is usable.

The checks themselves are in ``cuda_simulator_checks.py``. The simulator has to be enabled before
Numba is first imported, and this pytest process has imported Numba already, so the simulator run
is a subprocess: ``python -m tests.kernels.cuda_simulator_checks``.
"""

import os
import subprocess
import sys

import pytest

import tinynlm as tn
from tests.kernels import cuda_simulator_checks as checks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_cuda_kernels_on_the_simulator():
    result = subprocess.run([sys.executable, "-m", "tests.kernels.cuda_simulator_checks"],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (f"CUDA simulator checks failed:\n{result.stdout}\n"
                                    f"{result.stderr}")


def _gpu_unusable():
    """Why the GPU tests cannot run here, or None when they can."""
    if not tn.cuda.is_available():
        return "no usable CUDA GPU (needs CuPy and a GPU)"
    from numba import cuda

    if not cuda.is_available():
        return "Numba cannot use the GPU (install numba-cuda, the project's gpu extra)"
    return None


GPU_UNUSABLE = _gpu_unusable()


@pytest.mark.skipif(GPU_UNUSABLE is not None, reason=GPU_UNUSABLE or "")
@pytest.mark.parametrize("name", list(checks.CHECKS))
def test_cuda_kernels_on_gpu(name, monkeypatch):
    import cupy

    backend = checks.Backend(cupy, large=True)
    checks.poison_outputs(backend, monkeypatch.setattr)
    checks.CHECKS[name](backend)
    cupy.cuda.get_current_stream().synchronize()
