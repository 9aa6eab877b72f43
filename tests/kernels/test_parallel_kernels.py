"""How the CPU kernels share calls among threads: the thread count from the environment, and a
process forked after the helper threads started. (Each kernel's multi-block path is checked
against the composed ops in its own test module, with small blocks forced.)"""

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(code, **environment):
    environment = dict(os.environ, **environment,
                       PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                            env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_thread_count_comes_from_the_environment():
    code = "import tinynlm; print(tinynlm.kernels.cpu_cores())"
    assert _run(code, TINYNLM_KERNEL_THREADS="3").strip() == "3"
    assert int(_run(code, TINYNLM_KERNEL_THREADS="").strip()) >= 1  # unset: the usable cores


def test_kernels_work_in_a_forked_child():
    """A process forked after the kernels' thread pool started can still use the kernels."""
    if not hasattr(os, "fork"):
        pytest.skip("no os.fork on this platform")
    output = _run("""
        import os
        import numpy as np
        import tinynlm
        from tinynlm.kernels import cpu_fused
        tinynlm.kernels.set_cpu_cores(2)  # a helper thread even on one core
        x = np.random.default_rng(0).standard_normal(4 * cpu_fused.ELEMENTS_PER_BLOCK)
        cpu_fused.gelu_forward(x.astype(np.float32))  # four blocks: the pool starts
        pid = os.fork()
        if pid == 0:
            cpu_fused.gelu_forward(x.astype(np.float32))
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status))
    """)
    assert "child exit 0" in output
