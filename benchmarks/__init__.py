"""Benchmarks for tinynlm; run them from the repository root as modules.

Per-op overhead of tinynlm (forward + backward of tiny ops) against NumPy doing the same
arithmetic by hand::

    python3 -m benchmarks.op_overhead                  # full run, prints a table
    python3 -m benchmarks.op_overhead --quick          # fewer repeats (well under 20 s)
    python3 -m benchmarks.op_overhead --case add16_sum --case matmul64_sum
    python3 -m benchmarks.op_overhead --json out.json  # also save the rows for later comparison
    python3 -m benchmarks.op_overhead --device cuda    # on a GPU (CuPy by hand as the baseline)
    python3 -m benchmarks.op_overhead --list           # the case names

All scripts time through :mod:`benchmarks.timing`. Benchmarks never assert on speed; the test
``tests/test_benchmarks.py`` only checks that they run and report well-formed numbers.
"""

# tinynlm before anything imports NumPy: it sets the default of OpenBLAS's idle-thread spin,
# which OpenBLAS reads when NumPy loads it (see tinynlm/__init__.py).
import tinynlm  # noqa: E402,F401
