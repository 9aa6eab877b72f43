"""The Python side of ``benchmarks/gpu_check.sh``: a pytest runner that a stage timeout can
interrupt cleanly, and the summary tables read back from the results.

The timings themselves come from the benchmark suites (``python3 -m benchmarks``), which the
shell script runs on ``cuda`` (training steps also on ``cpu``, for the speed-up) and from
``python3 -m benchmarks.attention --device cuda``.

``pytest ARGS``: ``pytest.main(ARGS)`` with SIGINT raising KeyboardInterrupt even where the
shell started it ignoring SIGINT, so that ``timeout -s INT`` stops it with its report written.

``summary DIR``: the stages (``stages.jsonl``, written by the shell script), the test counts
(``*.xml``, JUnit), the attention targets (``attention.json``), and the training steps and
targets of the suites' reports (``train.json``, ``ops-layers.json``), as short tables.

Run from the repository root::

    python3 -m benchmarks.gpu_check pytest [PYTEST ARGS...]
    python3 -m benchmarks.gpu_check summary RESULTS_DIR
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import xml.etree.ElementTree as ElementTree

from . import attention, report

# ----------------------------------------------------------------------------- pytest


def run_pytest(pytest_args) -> int:
    """``pytest.main(pytest_args)``, with SIGINT raising KeyboardInterrupt (see the module
    docstring)."""
    import pytest

    signal.signal(signal.SIGINT, signal.default_int_handler)
    return int(pytest.main(list(pytest_args)))


# ----------------------------------------------------------------------------- summary


SUITE_REPORTS = ("train.json", "ops-layers.json")


def summarize(results_dir: str) -> str:
    """The short tables the shell script prints last."""
    sections = [_stages_table(results_dir)]
    attention_path = os.path.join(results_dir, "attention.json")
    if os.path.exists(attention_path):
        sections.append(_attention_summary(attention_path))
    for name in SUITE_REPORTS:
        path = os.path.join(results_dir, name)
        if os.path.exists(path):
            sections.append(_suite_summary(name, path))
    return "\n\n".join(sections)


def _stages_table(results_dir) -> str:
    path = os.path.join(results_dir, "stages.jsonl")
    if not os.path.exists(path):
        return f"no stages recorded ({path} is missing)"
    with open(path, encoding="utf-8") as file:
        stages = [json.loads(line) for line in file if line.strip()]
    lines = []
    for stage in stages:
        if stage["exit_code"] is None:
            outcome = "skipped: " + stage.get("reason", "")
        elif stage["exit_code"] == 0:
            outcome = "ok"
        elif stage["exit_code"] in (124, 137):
            outcome = f"TIMED OUT after {stage['limit_s']} s"
        else:
            outcome = f"FAILED (exit {stage['exit_code']})"
        junit = os.path.join(results_dir, f"{stage['stage']}.xml")
        if os.path.exists(junit):
            outcome += f"; {_test_counts(junit)}"
        log = stage["log"] if os.path.exists(os.path.join(results_dir, stage["log"])) else "-"
        lines.append([stage["stage"], outcome, str(stage["seconds"]), log])
    return "stages\n" + report.render_table(["stage", "outcome", "seconds", "log"], lines)


def _test_counts(junit_path) -> str:
    try:
        root = ElementTree.parse(junit_path).getroot()
    except ElementTree.ParseError as error:
        return f"unreadable test report ({error})"
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    totals = {key: sum(int(suite.get(key, 0)) for suite in suites)
              for key in ("tests", "failures", "errors", "skipped")}
    passed = totals["tests"] - totals["failures"] - totals["errors"] - totals["skipped"]
    return (f"{passed} passed, {totals['failures']} failed, {totals['errors']} errors, "
            f"{totals['skipped']} skipped")


def _attention_summary(path) -> str:
    with open(path, encoding="utf-8") as file:
        report = json.load(file)
    targets = report["targets"] or attention.evaluate_targets(report["rows"], report["device"])
    measured = sorted({row["T"] for row in report["rows"]})
    return (f"attention on {report['device']} ({report['environment'].get('gpu', 'CPU')}), "
            f"T measured: {measured or 'none'}\n" + attention.format_targets(targets))


def _suite_summary(name, path) -> str:
    """A suite report's tables and targets, plus the cuda speed-up over the cpu for each
    workload and variant measured on both."""
    with open(path, encoding="utf-8") as file:
        result = json.load(file)
    text = f"{name}\n{report.format_report(result)}"
    cpu = {(row["workload"], row["variant"]): row["median_s"] for row in result["rows"]
           if row["device"] == "cpu" and row.get("status") == "ok"}
    lines = [[row["workload"], row["variant"], f"{cpu[key] / row['median_s']:.1f}x"]
             for row in result["rows"] if row["device"] == "cuda" and row.get("status") == "ok"
             for key in [(row["workload"], row["variant"])] if key in cpu]
    if lines:
        text += "\n\ncuda speed-up over cpu\n" + report.render_table(
            ["workload", "variant", "cpu time / cuda time"], lines)
    return text


# ----------------------------------------------------------------------------- command line


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.gpu_check",
                                     description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    # Listed for --help only: main() hands everything after "pytest" to pytest unparsed.
    commands.add_parser("pytest", help="run pytest with the arguments that follow, "
                                       "interruptible by SIGINT")
    summary = commands.add_parser("summary", help="print the tables of a results directory")
    summary.add_argument("results_dir")
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["pytest"]:
        raise SystemExit(run_pytest(argv[1:]))
    args = parse_args(argv)
    print(summarize(args.results_dir))
    return None


if __name__ == "__main__":
    main()
