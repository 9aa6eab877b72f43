"""The CPU kernels compiled for several threads (what machines with more than two cores run).

The kernels' thread count is fixed when ``tinynlm.kernels`` is imported, so this runs in a
subprocess with ``TINYNLM_KERNEL_THREADS=2`` and its own Numba cache folder, so that it compiles
the parallel versions instead of loading the serial ones the rest of the suite cached. It compares fused against composed in float64, with
shapes large enough that every thread gets work.
"""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHECKS = textwrap.dedent("""
    import numpy as np
    import tinynlm as tn
    import tinynlm.nn.functional as F
    from tinynlm import kernels

    assert kernels.CPU_THREADS == 2, kernels.CPU_THREADS
    rng = np.random.default_rng(0)

    def both(function, *arrays):
        results = []
        for enabled in (True, False):
            with tn.use_fused_kernels(enabled):
                inputs = [tn.tensor(a, requires_grad=True) for a in arrays]
                output = function(*inputs)
                output.backward(tn.tensor(np.cos(np.arange(output.numel())).reshape(output.shape)))
                results.append([output.detach().numpy()] + [x.grad.numpy() for x in inputs])
        for got, want in zip(*results):
            np.testing.assert_allclose(got, want, atol=1e-10, rtol=0)

    both(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
         *(rng.standard_normal((3, 2, 300, 16)) for _ in range(3)))
    both(lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
         rng.standard_normal((4, 130, 8)), rng.standard_normal((4, 257, 8)),
         rng.standard_normal((4, 257, 5)))
    both(lambda x, w, b: F.layer_norm(x, (24,), w, b), rng.standard_normal((97, 24)),
         rng.standard_normal(24), rng.standard_normal(24))
    both(F.gelu, rng.standard_normal((50, 40)))
    both(lambda x: F.log_softmax(x, -1), rng.standard_normal((33, 20)))
    target = tn.tensor(rng.integers(0, 20, 33))
    both(lambda x: F.cross_entropy(x, target, label_smoothing=0.1), rng.standard_normal((33, 20)))
    print("parallel kernels agree")
""")


def test_kernels_compiled_for_two_threads_match_composed(tmp_path):
    environment = dict(os.environ, TINYNLM_KERNEL_THREADS="2", NUMBA_NUM_THREADS="2",
                       NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"),
                       PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", CHECKS], cwd=ROOT, env=environment,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "parallel kernels agree" in result.stdout


def test_kernels_work_in_a_forked_child():
    """A process forked after the kernels' thread pool started can still use the kernels."""
    if not hasattr(os, "fork"):
        import pytest

        pytest.skip("no os.fork on this platform")
    code = textwrap.dedent("""
        import os, sys
        import numpy as np
        import tinynlm
        from tinynlm.kernels import cpu_fused
        tinynlm.kernels.set_cpu_cores(2)  # a helper thread even on one core
        x = np.random.default_rng(0).standard_normal(2**18).astype(np.float32)
        cpu_fused.gelu_forward(x)
        pid = os.fork()
        if pid == 0:
            cpu_fused.gelu_forward(x)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status))
    """)
    environment = dict(os.environ,
                       PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environment,
                            capture_output=True, text=True, timeout=300)
    assert "child exit 0" in result.stdout, result.stdout + result.stderr
