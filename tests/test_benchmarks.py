"""The benchmark scripts run and report well-formed numbers. Nothing here asserts on speed."""

import doctest
import json
import math
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # benchmarks/ is a top-level folder, not part of the package
    sys.path.insert(0, str(REPO_ROOT))

import tinynlm as tn  # noqa: E402
from benchmarks import op_overhead, timing  # noqa: E402

TIME_KEYS = ("tinynlm_us", "numpy_us", "tinynlm_min_us", "numpy_min_us")


def test_quick_run_writes_well_formed_rows(tmp_path, capsys):
    json_path = tmp_path / "op_overhead.json"
    cases = ["add16_sum", "add16_fwd_nograd"]
    rows = op_overhead.main(["--quick", "--json", str(json_path)]
                            + [arg for name in cases for arg in ("--case", name)])

    assert [row["case"] for row in rows] == cases
    for row in rows:
        for key in TIME_KEYS:
            assert math.isfinite(row[key]) and row[key] > 0, (row["case"], key, row[key])
        assert row["tinynlm_iqr_us"] >= 0 and row["numpy_iqr_us"] >= 0
        assert row["ratio"] == pytest.approx(row["tinynlm_us"] / row["numpy_us"])
        assert row["overhead_per_op_us"] == pytest.approx(
            (row["tinynlm_us"] - row["numpy_us"]) / row["ops"])
        assert row["repeats"] == op_overhead.QUICK_REPEATS
        assert row["device"] == "cpu"

    assert json.loads(json_path.read_text(encoding="utf-8")) == rows
    printed = capsys.readouterr().out
    assert "NumPy" in printed.splitlines()[0] and "Python" in printed.splitlines()[0]
    assert "overhead/op" in printed
    for name in cases:
        assert name in printed


@pytest.mark.parametrize("name", sorted(op_overhead.CASES))
def test_each_case_matches_its_hand_written_numpy_version(name):
    # One iteration per side: the baseline must compute the same gradients, or the ratio lies.
    case = op_overhead.CASES[name]
    import numpy as np

    tinynlm_step, by_hand_step = case.build("cpu", np)
    op_overhead.check_same_results(case, tinynlm_step, by_hand_step)


@pytest.mark.skipif(tn.cuda.is_available(), reason="checks the message shown without a GPU")
def test_cuda_without_gpu_exits_with_a_clear_message():
    with pytest.raises(SystemExit, match="no CUDA GPU is usable"):
        op_overhead.main(["--quick", "--device", "cuda", "--case", "add16_sum"])


def test_timing_helper_reports_positive_times_and_its_doctests_pass():
    result = timing.measure(lambda: None, repeats=3, number=100)
    assert (result.number, result.repeats) == (100, 3)
    assert 0 < result.minimum <= result.median and result.iqr >= 0
    failures, _ = doctest.testmod(timing)
    assert failures == 0
