"""``python -m benchmarks``: the benchmark suites on the CPU and GPU backends, with PyTorch as a
reference column, printed as tables and saved as JSON; ``compare`` shows the change between
two saved runs.

Usage, from the repository root::

    python -m benchmarks [--suite ops,layers,attention,train|all] [--device cpu,cuda]
                         [--threads 1,2] [--quick] [--json out.json] [--plot out.png]
                         [--compare-torch | --no-compare-torch] [--repeats N] [--smallest]
    python -m benchmarks compare old.json new.json [--threshold 0.1]

Suites: ``ops`` (per-op overhead and large-op throughput), ``layers`` (single layers forward
and backward), ``attention`` (fused against composed attention by length) and ``train`` (one
training step of a GPT and an LSTM language model). Each workload runs its variants side by
side on each device: tinynlm with the fused kernels on and off, NumPy by hand for the op cases,
and PyTorch on the same device (by default whenever it is importable; ``--no-compare-torch``
skips it). On the CPU each thread count in ``--threads`` (default: 1 and all usable cores; with
``--quick`` only all cores) pins NumPy's BLAS, tinynlm's attention kernels and PyTorch.
``--smallest`` runs only the smallest case of each workload (what the test suite runs).
Nothing here asserts on speed: the targets are printed with a verdict.
"""

from __future__ import annotations

import argparse
import sys
import time

import tinynlm as tn

from . import attention, layers, ops, report, runner, train
from .environment import (environment, format_environment, pinned_threads,
                          torch_to_compare, usable_cpus)

SUITES = {"ops": ops, "layers": layers, "attention": attention, "train": train}
FULL = runner.Settings(repeats=5, warmup=1)
QUICK = runner.Settings(repeats=3, warmup=1)


def _names(text: str, choices, what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["all"] and what == "suite":
        return list(choices)
    unknown = [name for name in names if name not in choices]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(unknown) or text!r}; "
                                         f"choose from {', '.join(choices)}")
    return names


def _thread_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"--threads wants positive integers like 1,2; got "
                                         f"{text!r}")
    return list(dict.fromkeys(counts))


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default="all",
                        type=lambda text: _names(text, SUITES, "suite"),
                        help="comma-separated suites, or all (default)")
    parser.add_argument("--device", default="cpu",
                        type=lambda text: _names(text, ("cpu", "cuda"), "device"),
                        help="comma-separated devices: cpu, cuda (default cpu)")
    parser.add_argument("--threads", type=_thread_counts,
                        help="CPU thread counts to measure at (default: 1 and all usable "
                             "cores; with --quick all cores)")
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes, fewer repeats, one thread count")
    parser.add_argument("--smallest", action="store_true",
                        help="only the smallest case of each workload")
    parser.add_argument("--repeats", type=int, help="timed repeats per variant (default "
                                                     f"{FULL.repeats}, {QUICK.repeats} quick)")
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON (rewritten "
                                                        "after each workload)")
    parser.add_argument("--plot", metavar="PATH", help="draw the results (needs matplotlib)")
    parser.add_argument("--compare-torch", action=argparse.BooleanOptionalAction, default=None,
                        help="time PyTorch too (default: when it is importable)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory call")
    return parser.parse_args(argv)


def run(args) -> dict:
    """Measure what ``args`` asks for; return the report (also written to --json)."""
    if "cuda" in args.device and not tn.cuda.is_available():
        raise SystemExit("benchmarks: --device cuda was asked for, but no CUDA GPU is usable "
                         "(tn.cuda.is_available() is False: CuPy or a GPU is missing)")
    torch_module = torch_to_compare(args.compare_torch, args.device, "benchmarks")
    settings = QUICK if args.quick else FULL
    settings = runner.Settings(repeats=args.repeats or settings.repeats, warmup=settings.warmup,
                               min_repeat_seconds=settings.min_repeat_seconds,
                               memory=not args.no_memory)
    threads = args.threads or ([usable_cpus()] if args.quick else
                               list(dict.fromkeys([1, usable_cpus()])))
    result = {"environment": environment("cuda" if "cuda" in args.device else "cpu",
                                         torch_module),
              "settings": {"argv": sys.argv[1:], "suites": args.suite, "devices": args.device,
                           "threads": threads, "quick": args.quick, "smallest": args.smallest,
                           "repeats": settings.repeats, "warmup": settings.warmup,
                           "min_repeat_seconds": settings.min_repeat_seconds},
              "rows": [], "targets": []}
    print(format_environment(result["environment"]))
    print(f"median of {settings.repeats} interleaved repeats (>= "
          f"{settings.min_repeat_seconds * 1e3:.0f} ms each) after {settings.warmup} warm-up "
          "call(s) and a checked first call; CPU thread counts "
          f"{', '.join(map(str, threads))}", flush=True)
    started = time.perf_counter()
    for suite in args.suite:
        workloads = SUITES[suite].workloads(args.quick)
        if args.smallest:
            workloads = [workload for workload in workloads if workload.smallest]
        for device in args.device:
            for workload in (w for w in workloads if device in w.devices):
                for count in (threads if device == "cpu" else [None]):
                    with pinned_threads(count or usable_cpus(), torch_module):
                        rows = runner.measure_workload(workload, device, count, torch_module,
                                                       settings)
                    result["rows"].extend(rows)
                    print(f"  [{time.perf_counter() - started:6.1f} s] {suite}: "
                          f"{workload.name} on {device}"
                          f"{f', {count} threads' if count else ''}", flush=True)
                    if args.json:
                        report.write_json(result, args.json)
    result["targets"] = report.evaluate_targets(result)
    result["seconds"] = time.perf_counter() - started
    if args.json:
        report.write_json(result, args.json)
    print()
    print(report.format_report(result))
    print(f"\n{len(result['rows'])} rows in {result['seconds']:.0f} s"
          f"{f'; wrote {args.json}' if args.json else ''}")
    if args.plot:
        report.plot(result, args.plot)
        print(f"drew {args.plot}")
    failed = [row for row in result["rows"] if row.get("status") not in ("ok", "OOM")]
    if failed:
        raise SystemExit("benchmarks: some variants failed:\n  " + "\n  ".join(
            f"{row['workload']} {row['variant']} on {row['device']}: {row['status']}"
            for row in failed))
    return result


def compare(argv) -> str:
    parser = argparse.ArgumentParser(prog="python -m benchmarks compare",
                                     description="the change per workload between two reports")
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--threshold", type=float, default=report.REGRESSION_THRESHOLD,
                        help="relative change that counts as slower/faster (default "
                             f"{report.REGRESSION_THRESHOLD})")
    args = parser.parse_args(argv)
    text = report.format_comparison(report.read_json(args.old), report.read_json(args.new),
                                    args.threshold)
    print(text)
    return text


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["compare"]:
        return compare(argv[1:])
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
