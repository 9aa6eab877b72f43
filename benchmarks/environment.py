"""What a benchmark ran on, and the thread counts it pins.

``environment(device, torch)`` collects versions, the CPU, the BLAS and its threads, the kernels'
threads and (on ``cuda``) the GPU, for the printed header and the JSON. ``pinned_threads(n)``
runs a block with NumPy's BLAS, tinynlm's attention kernels and PyTorch all on ``n`` threads.

>>> info = environment("cpu", None)
>>> info["usable_cpus"] >= 1 and info["numpy"] == np.__version__
True
>>> with pinned_threads(1, None) as pinned:
...     numpy_blas_threads()[0] if pinned["blas"] else 1
1
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import os
import platform
import subprocess

import numba
import numpy as np

import tinynlm as tn
from tinynlm import backend, kernels


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@functools.cache
def _numpy_openblas():
    """``(get_threads, set_threads, where)`` for the OpenBLAS that NumPy's wheels bundle
    (``numpy.libs``), or None (another BLAS, or a NumPy built against a system library)."""
    libraries = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in glob.glob(os.path.join(libraries, "*openblas*")):
        library = ctypes.CDLL(path)
        for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", "64_"),
                               ("scipy_openblas", ""), ("openblas", "")):
            get_name = f"{prefix}_get_num_threads{suffix}"
            set_name = f"{prefix}_set_num_threads{suffix}"
            if hasattr(library, get_name) and hasattr(library, set_name):
                return (getattr(library, get_name), getattr(library, set_name),
                        f"{os.path.basename(path)}:{get_name}")
    return None


def numpy_blas_threads() -> tuple[int, str]:
    """NumPy's BLAS thread count and where it was read; the usable CPUs (OpenBLAS's default),
    marked as assumed, when it cannot be read."""
    openblas = _numpy_openblas()
    if openblas is not None:
        return int(openblas[0]()), openblas[2]
    return usable_cpus(), "assumed: the usable CPUs"


@contextlib.contextmanager
def pinned_threads(count: int, torch_module):
    """Run the block with NumPy's OpenBLAS, tinynlm's CPU kernels and PyTorch's intra-op pool on
    ``count`` threads each, then restore them. Yields which could be pinned: ``{"blas": bool,
    "kernels": True, "torch": bool}`` (a BLAS other than NumPy's bundled OpenBLAS is left
    alone)."""
    openblas = _numpy_openblas()
    previous_blas = int(openblas[0]()) if openblas else None
    previous_kernels = kernels.cpu_cores()
    previous_torch = torch_module.get_num_threads() if torch_module is not None else None
    if openblas:
        openblas[1](count)
    kernels.set_cpu_cores(count)
    if torch_module is not None:
        torch_module.set_num_threads(count)
    try:
        yield {"blas": openblas is not None, "kernels": True, "torch": torch_module is not None}
    finally:
        if openblas:
            openblas[1](previous_blas)
        kernels.set_cpu_cores(previous_kernels)
        if torch_module is not None:
            torch_module.set_num_threads(previous_torch)


def source_state() -> str:
    """`` (git 2a0a39f-dirty)`` for a source checkout, else ''."""
    try:
        described = subprocess.run(["git", "describe", "--always", "--dirty"], timeout=5,
                                   cwd=os.path.dirname(tn.__file__), capture_output=True,
                                   text=True, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f" (git {described})" if described else ""


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas_name() -> str:
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas.get('version', '')}".rstrip()
    except Exception:  # noqa: BLE001 - older NumPy has no machine-readable config
        return "unknown"


def environment(device: str, torch_module) -> dict:
    """Versions, CPU, BLAS, thread counts and (on cuda) the GPU, for the report and the JSON."""
    blas_threads, blas_threads_from = numpy_blas_threads()
    info = {
        "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
        "tinynlm": f"{tn.__version__}{source_state()}",
        "torch": None if torch_module is None else torch_module.__version__,
        "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(), "usable_cpus": usable_cpus(),
        "blas": _blas_name(), "blas_threads": blas_threads,
        "blas_threads_from": blas_threads_from,
        "openblas_thread_timeout": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
        "kernel_threads": kernels.cpu_cores(),
        "torch_threads": None if torch_module is None else torch_module.get_num_threads(),
    }
    if device == "cuda":
        cupy = backend.cupy_module()
        properties = cupy.cuda.runtime.getDeviceProperties(0)
        name = properties["name"]
        info.update(cupy=cupy.__version__,
                    gpu=name.decode() if isinstance(name, bytes) else name,
                    gpu_memory_bytes=int(properties["totalGlobalMem"]),
                    cuda_runtime=cupy.cuda.runtime.runtimeGetVersion(),
                    cuda_driver=cupy.cuda.runtime.driverGetVersion())
    return info


def format_environment(info: dict) -> str:
    """The environment as two or three header lines."""
    lines = [f"Python {info['python']} | NumPy {info['numpy']} | Numba {info['numba']} | tinynlm "
             f"{info['tinynlm']} | PyTorch {info['torch'] or 'not compared'}",
             f"CPU: {info['cpu_model']}, {info['cpu_count']} CPUs ({info['usable_cpus']} usable) |"
             f" BLAS {info['blas']}, {info['blas_threads']} threads "
             f"({info['blas_threads_from']}), OPENBLAS_THREAD_TIMEOUT "
             f"{info['openblas_thread_timeout'] or 'unset'} | CPU kernels use "
             f"{info['kernel_threads']} threads | PyTorch threads "
             f"{info['torch_threads'] if info['torch_threads'] is not None else '-'}"]
    if "gpu" in info:
        lines.append(f"GPU: {info['gpu']}, {info['gpu_memory_bytes'] / 2**30:.0f} GiB | CuPy "
                     f"{info['cupy']} | CUDA runtime {info['cuda_runtime']}, driver "
                     f"{info['cuda_driver']}")
    return "\n".join(lines)


def torch_to_compare(wanted: bool | None, devices, program: str):
    """The torch module to time as the reference column, or None. ``wanted``: True (an error,
    naming ``program``, if PyTorch does not import or lacks the CUDA that ``devices`` ask for),
    False (never), None (whenever it is usable on some device asked for)."""
    if wanted is False:
        return None
    try:
        import torch
    except ImportError as error:
        if wanted:
            raise SystemExit(f"{program}: --compare-torch was given but PyTorch does not import "
                             f"({error})") from None
        return None
    if "cuda" in devices and not torch.cuda.is_available():
        if wanted:
            raise SystemExit(f"{program}: --compare-torch on cuda, but this PyTorch has no "
                             "usable CUDA (torch.cuda.is_available() is False)")
        if all(device == "cuda" for device in devices):
            return None
    return torch
