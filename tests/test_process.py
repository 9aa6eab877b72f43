"""The process-wide defaults ``import tinynlm`` sets (``tinynlm/process.py``), each checked in
a fresh interpreter, since each acts on the process."""

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code, environment):
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environment,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _environment(**changes):
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("OPENBLAS_THREAD_TIMEOUT", "TINYNLM_MALLOC_TUNING", "GLIBC_TUNABLES",
                                  "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    environment["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    environment.update(changes)
    return environment


def _openblas_timeout_after(statement, environment):
    """OPENBLAS_THREAD_TIMEOUT as a fresh interpreter sees it after ``statement``."""
    return _run(f"{statement}\nimport os\nprint(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))",
                environment)


def test_openblas_idle_threads_default_set_before_numpy_loads():
    """Importing tinynlm first sets OpenBLAS's idle-thread timeout (read when NumPy loads it);
    a value in the environment wins, and after NumPy it is left alone (it would do nothing)."""
    assert _openblas_timeout_after("import tinynlm", _environment()) == "4"
    assert _openblas_timeout_after("import numpy, tinynlm", _environment()) == "None"
    assert _openblas_timeout_after("import tinynlm",
                                   _environment(OPENBLAS_THREAD_TIMEOUT="20")) == "20"


# Allocate six 4 MiB arrays, free them, repeat: with glibc's defaults the freed top of the heap
# goes back to the system each round and the next round page-faults it in again.
FAULTS_PER_ROUND = textwrap.dedent("""
    import resource
    import tinynlm
    import numpy as np
    def round_trip():
        arrays = [np.ones(2**20, np.float32) for _ in range(6)]
        del arrays
    for _ in range(3):
        round_trip()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        round_trip()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    print(tinynlm.process.keep_freed_memory(), (after - before) / 20)
""")


@pytest.mark.skipif(not hasattr(os, "confstr") or "CS_GNU_LIBC_VERSION" not in os.confstr_names,
                    reason="glibc only: the malloc thresholds are a glibc setting")
def test_freed_arrays_are_reused_without_page_faults():
    """After ``import tinynlm`` a freed 4 MiB array's memory is reused, not faulted in again
    (about half of the 6 x 1024 pages a round
    fault otherwise); ``TINYNLM_MALLOC_TUNING=0`` and glibc's own
    ``MALLOC_*`` variables leave malloc alone."""
    if not os.confstr("CS_GNU_LIBC_VERSION"):
        pytest.skip("not glibc")
    pages_per_round = 6 * 4 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    set_flag, faults = _run(FAULTS_PER_ROUND, _environment()).split()
    assert set_flag == "True"
    assert float(faults) < pages_per_round / 20
    # Without the setting the same rounds fault (so the check above can tell the difference).
    set_flag, faults = _run(FAULTS_PER_ROUND, _environment(TINYNLM_MALLOC_TUNING="0")).split()
    assert set_flag == "False"
    assert float(faults) > pages_per_round / 4
    for setting in ({"MALLOC_TRIM_THRESHOLD_": "1000000"},
                    {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1000000"}):
        set_flag, _ = _run(FAULTS_PER_ROUND, _environment(**setting)).split()
        assert set_flag == "False"  # the user's own malloc setting wins
