"""The Python side of ``benchmarks/gpu_check.sh``: training-step timings, a pytest runner that a
stage timeout can interrupt cleanly, and the summary table read back from the results.

``training``: one AdamW training step (zero_grad, forward with targets, backward, step) of each
model, timed with ``benchmarks.timing`` after warm-up steps (median and IQR; on a GPU each
repeat is synchronised), on each device asked for:

* ``gpt-small``: ``GPT(GPTConfig(vocab_size=96, block_size=128, n_layer=4, n_head=4,
  n_embd=128))``, batch 16 x 128 tokens, on cuda and cpu;
* ``lstm``: ``RNNLanguageModel(RNNLMConfig(vocab_size=96, cell="lstm", n_embd=128,
  hidden_size=256, n_layer=2))``, batch 16 x 128 tokens, on cuda and cpu;
* ``gpt-512x6``: width 512, 6 layers, 8 heads, 1024 tokens, batch 8, on cuda only, with the
  fused kernels on and off.

Random token ids; the loss must stay finite. On cuda the peak extra memory of one step is the
high-water mark of CuPy's pool (as in ``benchmarks.attention``). ``--quick`` shrinks every case
to batch 2 x 32 tokens and 2 timed steps (a smoke run). The JSON is rewritten after every case.

``pytest ARGS``: ``pytest.main(ARGS)`` with SIGINT raising KeyboardInterrupt even where the
shell started it ignoring SIGINT, so that ``timeout -s INT`` stops it with its report written.

``summary DIR``: the stages (``stages.jsonl``, written by the shell script), the test counts
(``*.xml``, JUnit), the attention targets (``attention.json``) and the training steps
(``training.json``), as short tables.

Run from the repository root::

    python3 -m benchmarks.gpu_check training [--devices cuda,cpu] [--quick] [--json PATH]
    python3 -m benchmarks.gpu_check pytest [PYTEST ARGS...]
    python3 -m benchmarks.gpu_check summary RESULTS_DIR
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from typing import Callable

import numpy as np

import tinynlm as tn
from tinynlm.models import GPT, GPTConfig, RNNLanguageModel, RNNLMConfig
from tinynlm.optim import AdamW

from . import attention, runner
from .timing import measure

VOCAB_SIZE = 96
FULL_STEPS, QUICK_STEPS = 5, 2
FULL_WARMUP, QUICK_WARMUP = 2, 1
QUICK_BATCH, QUICK_SEQ_LEN = 2, 32


@dataclass(frozen=True)
class TrainingCase:
    """A model to time: ``build()`` makes it on the CPU; ``devices`` where it is timed."""

    name: str
    build: Callable
    batch: int
    seq_len: int
    devices: tuple[str, ...]
    fused: bool = True


TRAINING_CASES = [
    TrainingCase("gpt-small", lambda: GPT(GPTConfig(vocab_size=VOCAB_SIZE, block_size=128,
                                                    n_layer=4, n_head=4, n_embd=128)),
                 batch=16, seq_len=128, devices=("cuda", "cpu")),
    TrainingCase("lstm", lambda: RNNLanguageModel(RNNLMConfig(
        vocab_size=VOCAB_SIZE, cell="lstm", n_embd=128, hidden_size=256, n_layer=2)),
                 batch=16, seq_len=128, devices=("cuda", "cpu")),
    *(TrainingCase("gpt-512x6", lambda: GPT(GPTConfig(vocab_size=VOCAB_SIZE, block_size=1024,
                                                      n_layer=6, n_head=8, n_embd=512)),
                   batch=8, seq_len=1024, devices=("cuda",), fused=fused)
      for fused in (True, False)),
]


# ----------------------------------------------------------------------------- training


def time_training_step(case: TrainingCase, device: str, quick: bool) -> dict:
    """Build the model on ``device`` and time its training step; one result row."""
    batch, seq_len = (QUICK_BATCH, min(QUICK_SEQ_LEN, case.seq_len)) if quick else (
        case.batch, case.seq_len)
    steps, warmup = (QUICK_STEPS, QUICK_WARMUP) if quick else (FULL_STEPS, FULL_WARMUP)
    tn.manual_seed(0)
    model = case.build().to(device)
    optimizer = AdamW(model.parameters(), lr=1e-3)
    tokens = np.random.default_rng(0).integers(0, VOCAB_SIZE, size=(batch, seq_len + 1))
    inputs = tn.tensor(tokens[:, :-1], device=device)
    targets = tn.tensor(tokens[:, 1:], device=device)
    losses = []

    def training_step():
        optimizer.zero_grad()
        loss = model(inputs, targets)[1]
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())

    with tn.use_fused_kernels(case.fused):
        timing = measure(training_step, repeats=steps, number=1, warmup=warmup, device=device)
        peak_extra_bytes = None
        if device == "cuda":
            with runner.CupyPoolHighWater() as high_water:
                training_step()
                tn.cuda.synchronize()
            peak_extra_bytes = high_water.peak_extra
    first_loss, last_loss = losses[0].item(), losses[-1].item()
    if not (math.isfinite(first_loss) and math.isfinite(last_loss)):
        raise FloatingPointError(f"{case.name} on {device}: the loss went from {first_loss} to "
                                 f"{last_loss}")
    return {"model": case.name, "device": device, "fused": case.fused, "batch": batch,
            "seq_len": seq_len, "parameters": model.num_parameters(),
            "step_ms": timing.median * 1e3, "step_iqr_ms": timing.iqr * 1e3,
            "steps_timed": timing.repeats, "tokens_per_s": batch * seq_len / timing.median,
            "first_loss": first_loss, "last_loss": last_loss,
            "peak_extra_bytes": peak_extra_bytes, "status": "ok"}


def run_training(args) -> list[dict]:
    devices = [device for device in args.devices.split(",") if device]
    if "cuda" in devices and not tn.cuda.is_available():
        raise SystemExit("gpu_check training: cuda was asked for, but no CUDA GPU is usable "
                         "(tn.cuda.is_available() is False: CuPy or a GPU is missing)")
    rows = []
    for case in TRAINING_CASES:
        for device in [device for device in case.devices if device in devices]:
            try:
                row = time_training_step(case, device, args.quick)
            except Exception as error:  # noqa: BLE001 - reported, and the next case runs
                row = {"model": case.name, "device": device, "fused": case.fused,
                       "status": f"error: {type(error).__name__}: {error}"}
                print(f"gpu_check training: {case.name} on {device} failed: {row['status']}",
                      file=sys.stderr)
            finally:
                if device == "cuda":
                    attention.release_cached_memory("cuda", None, collect_garbage=True)
            rows.append(row)
            print(_training_line(row), flush=True)
            if args.json:
                with open(args.json, "w", encoding="utf-8") as file:
                    json.dump({"benchmark": "training", "quick": args.quick, "rows": rows}, file,
                              indent=2)
    if any(row["status"] != "ok" for row in rows):
        raise SystemExit("gpu_check training: some cases failed (see above)")
    return rows


def _training_line(row) -> str:
    label = f"{row['model']} on {row['device']}{'' if row['fused'] else ' (fused kernels off)'}"
    if row["status"] != "ok":
        return f"{label}: {row['status']}"
    memory = ("" if row["peak_extra_bytes"] is None
              else f", peak extra {row['peak_extra_bytes'] / 2**20:.0f} MiB")
    return (f"{label}: {row['step_ms']:.1f} ms/step (IQR {row['step_iqr_ms']:.1f}), "
            f"{row['tokens_per_s']:.0f} tokens/s, batch {row['batch']}x{row['seq_len']}, "
            f"{row['parameters']} parameters, loss {row['first_loss']:.3f} -> "
            f"{row['last_loss']:.3f}{memory}")


# ----------------------------------------------------------------------------- pytest


def run_pytest(pytest_args) -> int:
    """``pytest.main(pytest_args)``, with SIGINT raising KeyboardInterrupt (see the module
    docstring)."""
    import pytest

    signal.signal(signal.SIGINT, signal.default_int_handler)
    return int(pytest.main(list(pytest_args)))


# ----------------------------------------------------------------------------- summary


def summarize(results_dir: str) -> str:
    """The short tables the shell script prints last."""
    sections = [_stages_table(results_dir)]
    attention_path = os.path.join(results_dir, "attention.json")
    if os.path.exists(attention_path):
        sections.append(_attention_summary(attention_path))
    training_path = os.path.join(results_dir, "training.json")
    if os.path.exists(training_path):
        sections.append(_training_table(training_path))
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
    return "stages\n" + attention.render_table(["stage", "outcome", "seconds", "log"], lines)


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


def _training_table(path) -> str:
    with open(path, encoding="utf-8") as file:
        rows = json.load(file)["rows"]
    cpu_times = {row["model"]: row["step_ms"] for row in rows
                 if row["device"] == "cpu" and row["status"] == "ok"}
    lines = []
    for row in rows:
        if row["status"] != "ok":
            lines.append([row["model"], row["device"], _yes_no(row["fused"]), row["status"],
                          "-", "-", "-"])
            continue
        speedup = cpu_times.get(row["model"]) if row["device"] == "cuda" else None
        lines.append([row["model"], row["device"], _yes_no(row["fused"]),
                      f"{row['step_ms']:.1f}", f"{row['tokens_per_s']:.0f}",
                      "-" if speedup is None else f"{speedup / row['step_ms']:.1f}x",
                      "-" if row["peak_extra_bytes"] is None
                      else f"{row['peak_extra_bytes'] / 2**20:.0f}"])
    return "training steps\n" + attention.render_table(
        ["model", "device", "fused", "ms/step", "tokens/s", "cuda speed-up vs cpu",
         "peak extra MiB"], lines)


def _yes_no(flag) -> str:
    return "yes" if flag else "no"


# ----------------------------------------------------------------------------- command line


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.gpu_check",
                                     description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    training = commands.add_parser("training", help="time training steps on cuda and cpu")
    training.add_argument("--devices", default="cuda,cpu",
                          help="comma-separated devices to time on (default cuda,cpu)")
    training.add_argument("--quick", action="store_true",
                          help=f"batch {QUICK_BATCH} x {QUICK_SEQ_LEN} tokens, {QUICK_STEPS} "
                               "timed steps (a smoke run)")
    training.add_argument("--json", metavar="PATH", help="write the rows as JSON")
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
    if args.command == "training":
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return run_training(args)
    print(summarize(args.results_dir))
    return None


if __name__ == "__main__":
    main()
