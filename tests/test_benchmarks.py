"""The benchmark scripts run and report well-formed numbers. Nothing here asserts on speed."""

import doctest
import importlib.util
import json
import math
import shutil
import subprocess
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


# ----------------------------------------------------------------------------- attention


def test_attention_quick_run_reports_every_implementation(tmp_path, capsys):
    from benchmarks import attention

    json_path = tmp_path / "attention.json"
    report = attention.main(["--quick", "--lengths", "32", "--repeats", "2",
                             "--json", str(json_path)])

    assert [(row["T"], row["causal"], row["pass"]) for row in report["rows"]] == [
        (32, False, "forward"), (32, False, "forward+backward"),
        (32, True, "forward"), (32, True, "forward+backward")]
    for row in report["rows"]:
        results = row["results"]
        assert {"fused", "composed"} <= set(results)
        for name, result in results.items():
            assert result["status"] == "ok", (name, result)
            assert math.isfinite(result["median_s"]) and result["median_s"] > 0
            assert result["iqr_s"] >= 0 and result["repeats"] == 2
            if name != "composed":
                assert result["matches_composed"], (name, result["max_abs_diff_vs_composed"])
        for name in ("fused", "composed"):
            assert results[name]["peak_extra_bytes"] > 0
            assert ("flops_per_s" in results[name]) == (row["pass"] == "forward")
        assert row["fused_over_composed"] == pytest.approx(
            results["fused"]["median_s"] / results["composed"]["median_s"])
    assert len(report["targets"]) == len(attention.TARGETS["cpu"])  # no T >= 1024: not measured
    assert json.loads(json_path.read_text(encoding="utf-8")) == report
    printed = capsys.readouterr().out
    assert "fused/composed" in printed and "BLAS" in printed and "targets" in printed


def test_attention_targets_are_judged_from_the_numbers():
    from benchmarks import attention

    def row(pass_name, fused_over_composed, fused_over_torch, memory_ratio):
        return {"T": 4096, "causal": False, "pass": pass_name,
                "fused_over_composed": fused_over_composed, "fused_over_torch": fused_over_torch,
                "composed_memory_over_fused": memory_ratio,
                "results": {"fused": {"status": "ok"}, "composed": {"status": "ok"}}}

    lines = attention.evaluate_targets(
        [row("forward+backward", 0.25, 2.0, 20.0), row("forward", 0.9, None, 5.0)], "cpu")
    verdicts = [(line["target"].split(" ")[-1], line["case"].split(" ")[-1], line["passed"])
                for line in lines]
    assert verdicts == [
        ("1024", "forward+backward", True),                                 # 4x faster
        ("4096", "forward+backward", False), ("4096", "forward", None),     # 2x torch; no torch
        ("4096", "forward+backward", True), ("4096", "forward", False),     # 20x, 5x less memory
    ]


@pytest.mark.skipif(tn.cuda.is_available(), reason="checks the message shown without a GPU")
def test_attention_on_cuda_without_gpu_exits_with_a_clear_message():
    from benchmarks import attention

    with pytest.raises(SystemExit, match="no CUDA GPU is usable"):
        attention.main(["--quick", "--device", "cuda"])


# ----------------------------------------------------------------------------- gpu_check


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_script_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(REPO_ROOT / "benchmarks" / "gpu_check.sh")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_gpu_check_summary_reads_the_results(tmp_path):
    from benchmarks import gpu_check

    stages = [{"stage": "gpu-tests", "exit_code": 124, "seconds": 101, "limit_s": 100,
               "log": "gpu-tests.log", "reason": ""},
              {"stage": "train", "exit_code": 0, "seconds": 40, "limit_s": 90,
               "log": "train.log", "reason": ""}]
    (tmp_path / "stages.jsonl").write_text("".join(json.dumps(stage) + "\n" for stage in stages))
    row = {"suite": "train", "workload": "gpt", "threads": None, "variant": "fused",
           "baseline": "composed", "status": "ok", "iqr_s": 0.001, "params": {}}
    rows = [{**row, "device": "cuda", "median_s": 0.05},
            {**row, "device": "cpu", "threads": 2, "median_s": 0.1}]
    (tmp_path / "train.json").write_text(json.dumps({"rows": rows, "targets": []}))

    summary = gpu_check.summarize(str(tmp_path))

    assert "TIMED OUT after 100 s" in summary
    assert "== train ==" in summary
    speedups = summary.split("cuda speed-up over cpu")[1].splitlines()
    assert next(line for line in speedups if line.startswith("gpt ")).split()[-1] == "2.0x"


# ----------------------------------------------------------------------------- python -m benchmarks


def test_suite_runs_the_smallest_case_of_every_workload(tmp_path, capsys):
    """The quick suite's smallest case of each workload, once each: well-formed rows, the
    variants' results checked against each other, JSON and (with matplotlib) a plot."""
    from benchmarks import __main__ as cli
    from benchmarks import report

    json_path, plot_path = tmp_path / "bench.json", tmp_path / "bench.png"
    plot = ["--plot", str(plot_path)] if importlib.util.find_spec("matplotlib") else []
    result = cli.main(["--quick", "--smallest", "--repeats", "1", "--threads", "1",
                       "--json", str(json_path)] + plot)

    expected = {(suite, workload.name) for suite, module in cli.SUITES.items()
                for workload in module.workloads(True) if workload.smallest
                and "cpu" in workload.devices}
    assert {(row["suite"], row["workload"]) for row in result["rows"]} == expected
    for row in result["rows"]:
        assert row["status"] == "ok", row
        assert row["device"] == "cpu" and row["threads"] == 1
        assert math.isfinite(row["median_s"]) and row["median_s"] > 0 and row["iqr_s"] >= 0
        if row["variant"] != row["baseline"]:
            assert row["ratio"] > 0
    variants = {row["variant"] for row in result["rows"]}
    assert {"fused", "composed", "tinynlm", "numpy"} <= variants
    assert ("torch" in variants) == (importlib.util.find_spec("torch") is not None)
    assert json.loads(json_path.read_text(encoding="utf-8")) == result
    assert not plot or plot_path.stat().st_size > 0
    printed = capsys.readouterr().out
    for suite in cli.SUITES:
        assert f"== {suite} ==" in printed
    assert "targets" in printed and "BLAS" in printed
    assert report.evaluate_targets(result) == result["targets"]


def _row(workload, variant, median_s, iqr_s=0.0, **extra):
    return {"suite": "train", "workload": workload, "device": "cpu", "threads": 2,
            "variant": variant, "status": "ok", "median_s": median_s, "iqr_s": iqr_s,
            "params": {}, **extra}


def test_compare_reports_the_change_per_workload(tmp_path, capsys):
    from benchmarks import __main__ as cli

    old = {"rows": [_row("a", "fused", 1.0), _row("b", "fused", 1.0), _row("c", "fused", 1.0, 0.3),
                    _row("d", "fused", 1.0), _row("gone", "fused", 1.0)]}
    new = {"rows": [_row("a", "fused", 1.2), _row("b", "fused", 0.8), _row("c", "fused", 1.2, 0.3),
                    _row("d", "fused", 1.05), _row("added", "fused", 1.0)]}
    paths = []
    for name, content in (("old.json", old), ("new.json", new)):
        (tmp_path / name).write_text(json.dumps(content))
        paths.append(str(tmp_path / name))

    cli.main(["compare", *paths])

    verdicts = {line.split()[1]: line.split()[-1] if "only" not in line else " ".join(
        line.split()[-2:]) for line in capsys.readouterr().out.splitlines()[2:]}
    assert verdicts == {"a": "slower", "b": "faster", "c": "same",  # c: within the IQR
                        "d": "same", "gone": "only old", "added": "only new"}


def test_compare_rejects_files_that_are_not_reports(tmp_path):
    from benchmarks import __main__ as cli

    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(SystemExit, match="list.json is not a report"):
        cli.main(["compare", str(tmp_path / "list.json"), str(tmp_path / "list.json")])
    with pytest.raises(SystemExit, match="broken.json is not JSON"):
        cli.main(["compare", str(tmp_path / "broken.json"), str(tmp_path / "list.json")])
    with pytest.raises(SystemExit, match="cannot read"):
        cli.main(["compare", str(tmp_path / "missing.json"), str(tmp_path / "list.json")])


def test_targets_are_judged_from_the_rows():
    from benchmarks import report

    full = {"batch": 16, "length": 128}
    rows = [_row("gpt", "fused", 1.3, params=full, baseline="torch", ratio=1.3),
            _row("lstm", "fused", 1.0, params={"batch": 32, "length": 64}, baseline="composed",
                 ratio=0.9),
            {**_row("overhead add16_sum", "tinynlm", 1e-4, overhead_per_op_us=4.0,
                    baseline="numpy"), "suite": "ops"}]
    verdicts = {(target["case"].split(" (")[0], target["verdict"])
                for target in report.evaluate_targets({"rows": rows})}
    assert verdicts == {("overhead add16_sum", "PASS"), ("gpt", "FAIL"),
                        ("lstm", "n/a"), ("gpt-512x6", "n/a")}


def test_thread_pinning_is_restored():
    from benchmarks.environment import numpy_blas_threads, pinned_threads

    from tinynlm import kernels

    before = numpy_blas_threads()[0], kernels.cpu_cores()
    with pinned_threads(1, None) as pinned:
        assert kernels.cpu_cores() == 1
        if pinned["blas"]:
            assert numpy_blas_threads()[0] == 1
    assert (numpy_blas_threads()[0], kernels.cpu_cores()) == before


def test_unknown_suite_is_an_error(capsys):
    from benchmarks import __main__ as cli

    with pytest.raises(SystemExit):
        cli.main(["--suite", "nonsense"])
    assert "unknown suite" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["benchmarks.report", "benchmarks.environment"])
def test_docstring_examples(name):
    import importlib

    failures, attempted = doctest.testmod(importlib.import_module(name))
    assert attempted > 0 and failures == 0


def test_compare_never_pairs_different_sizes():
    from benchmarks import report

    old = {"rows": [_row("lstm", "fused", 1.0, params={"input_shape": [16, 32, 256]})]}
    new = {"rows": [_row("lstm", "fused", 2.0, params={"input_shape": [32, 64, 256]})]}
    assert [entry["verdict"] for entry in report.compare_rows(old, new)] == ["only old",
                                                                            "only new"]
