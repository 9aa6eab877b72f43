"""Scaled dot-product attention: the fused flash-attention kernel against the composed version
and PyTorch, in time (forward, and forward + backward) and in peak extra memory.

Shapes: batch 1, 4 heads, head size 64, float32, each sequence length T (queries = keys = T),
causal and not. Three implementations, where they can run:

* ``fused``: ``tinynlm.nn.functional.scaled_dot_product_attention`` with the fused kernels on
  (Numba on the CPU, Numba CUDA on the GPU); never forms the (T, T) score matrix.
* ``composed``: the same call under ``tn.use_fused_kernels(False)``: scores, softmax and the
  product with the values in tensor ops (every fused kernel off, the softmax's too).
* ``torch``: ``torch.nn.functional.scaled_dot_product_attention`` on the same device and data.
  It runs by default when PyTorch is importable (and, on ``cuda``, has CUDA);
  ``--no-compare-torch`` skips it, ``--compare-torch`` makes its absence an error. On the CPU
  PyTorch's thread count is set to NumPy's BLAS thread count (both are printed).

Passes: ``forward`` runs under no_grad (``torch.no_grad()`` for PyTorch); ``forward+backward``
runs the forward with grad and ``out.backward(grad_out)`` with a fixed random ``grad_out``,
resetting the inputs' ``.grad`` first. Each implementation is called once before anything is
measured (Numba's and CuPy's compilation is not timed), its result (the output, or the query's
gradient) is compared with the composed one, then its memory is measured over one call and
the implementations are timed side by side with ``benchmarks.timing`` (median and IQR over the
repeats, interleaved; on the GPU every repeat is synchronised).

Peak extra memory, over one call, on top of what was allocated before it (the inputs):

* CPU: ``tracemalloc``'s peak, tracing started after the inputs were made. NumPy reports its
  allocations to tracemalloc; allocations inside Numba-compiled code (the fused kernels'
  per-thread tiles, a few 128 x 128 blocks) and PyTorch's are not traced, so PyTorch shows n/a.
* GPU: CuPy's pool is emptied (``free_all_blocks``), then an allocator installed with
  ``cupy.cuda.set_allocator`` forwards to the pool and reads ``pool.used_bytes()`` after every
  allocation. Used bytes only grow at an allocation, so the largest value read is the exact
  high-water mark; the used bytes before the call are subtracted. PyTorch:
  ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus
  ``memory_allocated()`` before.

An implementation that runs out of memory (NumPy's ``MemoryError``, CuPy's or PyTorch's
out-of-memory error) is reported as OOM and the others carry on. The forward's FLOP/s count
``4 * B * H * T^2 * D`` multiply-adds-as-two (halved when causal). The issue's targets are
printed with PASS/FAIL against the numbers; nothing is asserted.

Run from the repository root::

    python3 -m benchmarks.attention [--device cpu|cuda] [--lengths 256,1024,4096] [--quick]
                                    [--repeats N] [--json out.json] [--[no-]compare-torch]

``--quick`` is T = 128 and 256 with 3 repeats. ``--json`` is rewritten after every length, so
an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

import tinynlm as tn
from tinynlm import backend, dispatch
from tinynlm.nn import functional as F

from . import runner
from .environment import (environment, format_environment, numpy_blas_threads,
                          torch_to_compare)
from .report import render_table
from .runner import is_out_of_memory, release_cached_memory
from .timing import measure_side_by_side

BATCH, HEADS, HEAD_DIM = 1, 4, 64
CPU_LENGTHS = (256, 1024, 4096)
GPU_LENGTHS = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
QUICK_LENGTHS = (128, 256)
FULL_REPEATS, QUICK_REPEATS = 7, 3
FULL_WARMUP, QUICK_WARMUP = 2, 1
MIN_REPEAT_SECONDS = 0.02
PASSES = ("forward", "forward+backward")
# Fused and PyTorch results must match the composed ones this closely (float32).
RTOL = ATOL = 1e-3


# ----------------------------------------------------------------------------- inputs and steps


@dataclass
class Inputs:
    """Query, key and value (B, H, T, D) that require grad, and the output gradient; the same
    numbers as tinynlm tensors and, when PyTorch is compared, as torch tensors."""

    query: tn.Tensor
    key: tn.Tensor
    value: tn.Tensor
    grad_output: tn.Tensor
    torch_tensors: tuple | None

    def clear_grads(self):
        for tensor in (self.query, self.key, self.value, *(self.torch_tensors or ())[:3]):
            tensor.grad = None


def make_inputs(length: int, device: str, torch_module, seed: int = 0) -> Inputs:
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal((BATCH, HEADS, length, HEAD_DIM), dtype=np.float32)
              for _ in range(4)]
    query, key, value = (tn.tensor(array, device=device, requires_grad=True)
                         for array in arrays[:3])
    grad_output = tn.tensor(arrays[3], device=device)
    torch_tensors = None
    if torch_module is not None:
        torch_tensors = tuple(torch_module.from_numpy(array).to(device).requires_grad_(index < 3)
                              for index, array in enumerate(arrays))
    return Inputs(query, key, value, grad_output, torch_tensors)


def tinynlm_step(inputs: Inputs, causal: bool, *, fused: bool, backward: bool) -> Callable:
    """One call of tinynlm's attention: returns the output (forward) or the query's gradient."""
    q, k, v = inputs.query, inputs.key, inputs.value

    def forward():
        with tn.use_fused_kernels(fused), tn.no_grad():
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    def forward_backward():
        with tn.use_fused_kernels(fused):
            q.grad = k.grad = v.grad = None
            F.scaled_dot_product_attention(q, k, v, is_causal=causal).backward(inputs.grad_output)
        return q.grad

    return forward_backward if backward else forward


def torch_step(inputs: Inputs, causal: bool, torch_module, *, backward: bool) -> Callable:
    """One call of PyTorch's attention: returns the output (forward) or the query's gradient."""
    q, k, v, grad_output = inputs.torch_tensors
    attention = torch_module.nn.functional.scaled_dot_product_attention

    def forward():
        with torch_module.no_grad():
            return attention(q, k, v, is_causal=causal)

    def forward_backward():
        q.grad = k.grad = v.grad = None
        attention(q, k, v, is_causal=causal).backward(grad_output)
        return q.grad

    return forward_backward if backward else forward


def _host(result) -> np.ndarray:
    if isinstance(result, tn.Tensor):
        return backend.to_host(result.data)
    return result.detach().cpu().numpy()  # a torch tensor


# ----------------------------------------------------------------------------- memory


def peak_extra_memory(step: Callable, inputs: Inputs, device: str, is_torch: bool,
                      torch_module) -> int | None:
    """Bytes allocated at the peak of one call of ``step`` beyond what was live before it, the
    inputs' gradients cleared first; None where it cannot be measured (PyTorch on the CPU)."""
    inputs.clear_grads()
    return runner.peak_extra_memory(step, device, is_torch, torch_module)


# ----------------------------------------------------------------------------- one measurement


def forward_flops(length: int, causal: bool) -> float:
    """4 * B * H * T^2 * D (two products of T x T x D, two FLOPs per multiply-add), halved when
    causal (half the scores are skipped)."""
    flops = 4.0 * BATCH * HEADS * length * length * HEAD_DIM
    return flops / 2 if causal else flops


def measure_case(length: int, causal: bool, pass_name: str, inputs: Inputs, device: str,
                 torch_module, repeats: int, warmup: int) -> dict:
    """Check, measure the memory of and time each implementation for one (T, causal, pass)."""
    backward = pass_name == "forward+backward"
    steps = {"composed": tinynlm_step(inputs, causal, fused=False, backward=backward),
             "fused": tinynlm_step(inputs, causal, fused=True, backward=backward)}
    if torch_module is not None:
        steps["torch"] = torch_step(inputs, causal, torch_module, backward=backward)
    results = {name: {"status": "ok"} for name in steps}
    case = _case_name({"T": length, "causal": causal, "pass": pass_name})
    reference = None
    for name, step in steps.items():
        failed_before = any(result["status"] != "ok" for result in results.values())
        release_cached_memory(device, torch_module, collect_garbage=failed_before)
        try:
            value = _host(step())  # compiles; the result checked against the composed one
            if name == "composed":
                reference = value
            elif reference is not None:
                results[name]["max_abs_diff_vs_composed"] = float(np.max(np.abs(value - reference)))
                results[name]["matches_composed"] = bool(
                    np.allclose(value, reference, rtol=RTOL, atol=ATOL))
            del value
            results[name]["peak_extra_bytes"] = peak_extra_memory(
                step, inputs, device, name == "torch", torch_module)
        except Exception as error:  # noqa: BLE001 - reported, and the others carry on
            results[name]["status"] = _failure(error, f"{name} at {case}")
    runnable = [name for name in steps if results[name]["status"] == "ok"]
    release_cached_memory(device, torch_module, collect_garbage=len(runnable) < len(steps))
    try:
        timings = measure_side_by_side([steps[name] for name in runnable], repeats=repeats,
                                       warmup=warmup, min_repeat_seconds=MIN_REPEAT_SECONDS,
                                       device=device)
    except Exception as error:  # noqa: BLE001 - e.g. out of memory while interleaved
        status = _failure(error, f"timing {'+'.join(runnable)} at {case}")
        timings = []
        for name in runnable:
            results[name]["status"] = status
    for name, timing in zip(runnable, timings):
        results[name].update(median_s=timing.median, iqr_s=timing.iqr, min_s=timing.minimum,
                             calls_per_repeat=timing.number, repeats=timing.repeats)
        if not backward:
            results[name]["flops_per_s"] = forward_flops(length, causal) / timing.median
    return {"T": length, "causal": causal, "pass": pass_name,
            "forward_flops": forward_flops(length, causal),
            "fused_over_composed": _ratio(results, "fused", "composed", "median_s"),
            "fused_over_torch": _ratio(results, "fused", "torch", "median_s"),
            "composed_memory_over_fused": _ratio(results, "composed", "fused", "peak_extra_bytes"),
            "results": results}


def _failure(error, what: str) -> str:
    """The status of a failed measurement: ``OOM``, or ``error: ...`` (also printed)."""
    if is_out_of_memory(error):
        return "OOM"
    status = f"error: {type(error).__name__}: {error}"
    print(f"attention: {what} failed: {status}", file=sys.stderr)
    return status


def _ratio(results, numerator, denominator, key):
    top = results.get(numerator, {}).get(key)
    bottom = results.get(denominator, {}).get(key)
    return top / bottom if top is not None and bottom else None


# ----------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """One of the issue's targets: the rows it is judged on and, for a row, the measured value
    as text and whether it passes (None when the numbers are missing)."""

    description: str
    applies: Callable[[dict], bool]
    judge: Callable[[dict], tuple[str, bool | None]]


def _speedup_at_least(times: float):
    def judge(row):
        ratio = row["fused_over_composed"]
        if ratio is None:
            return "n/a", None
        return f"{1 / ratio:.2f}x faster", 1 / ratio >= times
    return judge


def _within_torch(times: float):
    def judge(row):
        ratio = row["fused_over_torch"]
        if ratio is None:
            return ("n/a" if "torch" in row["results"] else "n/a (PyTorch not run)"), None
        return f"{ratio:.2f}x PyTorch's time", ratio <= times
    return judge


def _memory_lower(times: float):
    def judge(row):
        ratio = row["composed_memory_over_fused"]
        if ratio is None:
            return "n/a", None
        return f"{ratio:.1f}x lower", ratio >= times
    return judge


def _forward_tflops_at_least(tflops: float):
    def judge(row):
        rate = row["results"]["fused"].get("flops_per_s")
        if rate is None:
            return "n/a", None
        return f"{rate / 1e12:.2f} TFLOP/s", rate >= tflops * 1e12
    return judge


def _runs_where_composed_does_not(row):
    fused, composed = row["results"]["fused"]["status"], row["results"]["composed"]["status"]
    composed_text = "composed OOM" if composed == "OOM" else f"composed {composed}"
    return f"fused {fused}, {composed_text}", fused == "ok"


def _backward(row):
    return row["pass"] == "forward+backward"


TARGETS = {
    "cpu": [
        Target("fused fwd+bwd >= 2x faster than composed at T >= 1024",
               lambda row: _backward(row) and row["T"] >= 1024, _speedup_at_least(2.0)),
        Target("fused within 1.5x of PyTorch's time at T = 4096",
               lambda row: row["T"] == 4096, _within_torch(1.5)),
        Target("fused peak extra memory < 1/10 of composed at T = 4096",
               lambda row: row["T"] == 4096, _memory_lower(10.0)),
    ],
    "cuda": [
        Target("fused peak memory >= 8x lower than composed at T = 2048",
               lambda row: row["T"] == 2048, _memory_lower(8.0)),
        Target("fused peak memory >= 30x lower than composed at T = 8192",
               lambda row: row["T"] == 8192, _memory_lower(30.0)),
        Target("fused forward >= 1.5x faster than composed at T >= 4096",
               lambda row: not _backward(row) and row["T"] >= 4096, _speedup_at_least(1.5)),
        Target("fused forward >= 17 TFLOP/s (judged at T >= 4096)",
               lambda row: not _backward(row) and row["T"] >= 4096, _forward_tflops_at_least(17)),
        Target("T = 32768 runs (where composed is expected to OOM)",
               lambda row: row["T"] == 32768, _runs_where_composed_does_not),
    ],
}


def evaluate_targets(rows, device: str) -> list[dict]:
    """One line per target and row it applies to (one 'not measured' line if none does)."""
    lines = []
    for target in TARGETS[device]:
        judged = [row for row in rows if target.applies(row)]
        if not judged:
            lines.append({"target": target.description, "case": "-",
                          "measured": "not measured (no such length)", "passed": None})
        for row in judged:
            measured, passed = target.judge(row)
            lines.append({"target": target.description, "case": _case_name(row),
                          "measured": measured, "passed": passed})
    return lines


def _case_name(row) -> str:
    return f"T={row['T']} {'causal' if row['causal'] else 'full'} {row['pass']}"


# ----------------------------------------------------------------------------- the attention suite


SUITE_GPU_QUICK_LENGTHS = (256, 1024)


def _suite_variant(length: int, causal: bool, backward: bool, fused: bool | None):
    """A runner variant: tinynlm fused or composed (``fused`` True/False), or PyTorch (None)."""
    def build(device, torch_module):
        inputs = make_inputs(length, device, torch_module if fused is None else None)
        if fused is None:
            return torch_step(inputs, causal, torch_module, backward=backward)
        return tinynlm_step(inputs, causal, fused=fused, backward=backward)
    return build


def workloads(quick: bool) -> list[runner.Workload]:
    """The ``attention`` suite of ``python -m benchmarks``: each (T, causal, pass) with the
    variants fused, composed (the baseline) and torch; the CPU lengths on ``cpu``, the GPU
    lengths on ``cuda``."""
    result = []
    for device, lengths in (("cpu", QUICK_LENGTHS if quick else CPU_LENGTHS),
                            ("cuda", SUITE_GPU_QUICK_LENGTHS if quick else GPU_LENGTHS)):
        for length in lengths:
            for causal in (False, True):
                for pass_name in PASSES:
                    backward = pass_name == "forward+backward"
                    result.append(runner.Workload(
                        "attention", f"T={length} {'causal' if causal else 'full'} {pass_name}",
                        f"scaled_dot_product_attention B={BATCH} H={HEADS} D={HEAD_DIM} "
                        f"float32, T={length}, {'causal' if causal else 'full'}, {pass_name}",
                        (runner.Variant("fused", _suite_variant(length, causal, backward, True)),
                         runner.Variant("composed",
                                        _suite_variant(length, causal, backward, False)),
                         runner.Variant("torch", _suite_variant(length, causal, backward, None))),
                        baseline="composed",
                        params={"T": length, "causal": causal, "pass": pass_name},
                        devices=(device,), tokens=BATCH * length,
                        flops=None if backward else forward_flops(length, causal),
                        tolerance=RTOL, smallest=length == lengths[0]))
    return result


# ----------------------------------------------------------------------------- report


def format_table(rows) -> str:
    headers = ["T", "causal", "pass", "fused ms (IQR)", "composed ms", "torch ms",
               "fused/composed", "fused/torch", "fused MiB", "composed MiB", "torch MiB",
               "fused GFLOP/s", "torch GFLOP/s"]
    lines = []
    for row in rows:
        results = row["results"]
        lines.append([str(row["T"]), "yes" if row["causal"] else "no", row["pass"],
                      _time_cell(results.get("fused"), with_iqr=True),
                      _time_cell(results.get("composed")), _time_cell(results.get("torch")),
                      _number(row["fused_over_composed"], "{:.2f}"),
                      _number(row["fused_over_torch"], "{:.2f}"),
                      _memory_cell(results.get("fused")), _memory_cell(results.get("composed")),
                      _memory_cell(results.get("torch")),
                      _rate_cell(results.get("fused")), _rate_cell(results.get("torch"))])
    return render_table(headers, lines)


def format_targets(lines) -> str:
    verdicts = {True: "PASS", False: "FAIL", None: "n/a"}
    return render_table(["target", "case", "measured", "verdict"],
                   [[line["target"], line["case"], line["measured"], verdicts[line["passed"]]]
                    for line in lines])


def _time_cell(result, with_iqr=False) -> str:
    if result is None:
        return "-"
    if "median_s" not in result:
        return result["status"] if result["status"] == "OOM" else "error"
    text = f"{result['median_s'] * 1e3:.3g}"
    return f"{text} ({result['iqr_s'] * 1e3:.2g})" if with_iqr else text


def _memory_cell(result) -> str:
    if result is None:
        return "-"
    if result.get("peak_extra_bytes") is None:
        return "OOM" if result["status"] == "OOM" else "n/a"
    return f"{result['peak_extra_bytes'] / 2**20:.3g}"


def _rate_cell(result) -> str:
    if result is None or "flops_per_s" not in result:
        return "-"
    return f"{result['flops_per_s'] / 1e9:.4g}"


def _number(value, pattern) -> str:
    return "-" if value is None else pattern.format(value)


def _memory_note(device: str) -> str:
    if device == "cpu":
        return ("peak extra memory: tracemalloc peak over one call (NumPy allocations; not "
                "Numba's in-kernel tiles, not PyTorch's)")
    return ("peak extra memory: high-water mark of CuPy pool used bytes over one call (allocator "
            "wrapper), PyTorch: torch.cuda.max_memory_allocated, each minus the bytes in use "
            "before")


# ----------------------------------------------------------------------------- command line


def _lengths(text: str) -> list[int]:
    try:
        lengths = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"lengths must be comma-separated integers, got {text!r}")
    if not lengths or min(lengths) < 1:
        raise argparse.ArgumentTypeError(f"lengths must be positive integers, got {text!r}")
    return lengths


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.attention",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--lengths", type=_lengths, metavar="T,T,...",
                        help=f"sequence lengths (default: cpu {','.join(map(str, CPU_LENGTHS))};"
                             f" cuda {','.join(map(str, GPU_LENGTHS))})")
    parser.add_argument("--quick", action="store_true",
                        help=f"T = {','.join(map(str, QUICK_LENGTHS))} (unless --lengths) and "
                             f"{QUICK_REPEATS} repeats")
    parser.add_argument("--repeats", type=int, help=f"timed repeats (default {FULL_REPEATS}, "
                                                    f"{QUICK_REPEATS} with --quick)")
    parser.add_argument("--json", metavar="PATH", help="write every number as JSON")
    parser.add_argument("--compare-torch", action=argparse.BooleanOptionalAction, default=None,
                        help="time PyTorch too (default: when it is importable and usable on "
                             "the device)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Run the benchmark as the command line asks; returns the report (what --json writes)."""
    args = parse_args(argv)
    device = args.device
    if device == "cuda" and not tn.cuda.is_available():
        raise SystemExit("attention: --device cuda was asked for, but no CUDA GPU is usable "
                         "(tn.cuda.is_available() is False: CuPy or a GPU is missing)")
    xp = backend.array_module(backend.as_device(device))
    if dispatch.fused("attention", xp) is None:
        raise SystemExit(f"attention: the fused attention kernels are not available on {device} "
                         "(fused kernels switched off by TINYNLM_FUSED_KERNELS=0, or Numba's "
                         "CUDA support, numba-cuda, is missing); nothing to compare")
    lengths = args.lengths or list(QUICK_LENGTHS if args.quick else
                                   CPU_LENGTHS if device == "cpu" else GPU_LENGTHS)
    repeats = args.repeats or (QUICK_REPEATS if args.quick else FULL_REPEATS)
    warmup = QUICK_WARMUP if args.quick else FULL_WARMUP
    torch_module = torch_to_compare(args.compare_torch, [device], "attention")
    blas_threads = numpy_blas_threads()
    if torch_module is not None:
        torch_module.set_num_threads(blas_threads[0])

    report = {"benchmark": "attention", "device": device,
              "environment": environment(device, torch_module),
              "config": {"batch": BATCH, "heads": HEADS, "head_dim": HEAD_DIM,
                         "dtype": "float32", "lengths": lengths, "repeats": repeats,
                         "warmup": warmup, "min_repeat_seconds": MIN_REPEAT_SECONDS,
                         "quick": args.quick},
              "memory_method": _memory_note(device), "rows": [], "targets": []}
    print(format_environment(report["environment"]))
    print(f"B={BATCH} H={HEADS} D={HEAD_DIM} float32; median of {repeats} interleaved repeats "
          f"(>= {MIN_REPEAT_SECONDS * 1e3:.0f} ms each) after warm-up; ratios are times "
          "(< 1: fused is faster)", flush=True)
    for length in lengths:
        inputs = make_inputs(length, device, torch_module)
        for causal in (False, True):
            for pass_name in PASSES:
                row = measure_case(length, causal, pass_name, inputs, device, torch_module,
                                   repeats, warmup)
                report["rows"].append(row)
                print(f"  measured {_case_name(row)}", flush=True)
        del inputs
        release_cached_memory(device, torch_module, collect_garbage=True)
        _write_json(report, args.json)
    report["targets"] = evaluate_targets(report["rows"], device)
    _write_json(report, args.json)

    print(format_table(report["rows"]))
    print(_memory_note(device))
    print(f"\nThe issue's targets on {device} (reported, not asserted):")
    print(format_targets(report["targets"]))
    if args.json:
        print(f"wrote {args.json}")
    problems = [f"{_case_name(row)} {name}: {result['status']}"
                for row in report["rows"] for name, result in row["results"].items()
                if result["status"] not in ("ok", "OOM")]
    problems += [f"{_case_name(row)} {name}: result differs from composed by "
                 f"{result['max_abs_diff_vs_composed']:.3g}"
                 for row in report["rows"] for name, result in row["results"].items()
                 if result.get("matches_composed") is False]
    if problems:
        raise SystemExit("attention: some measurements failed:\n  " + "\n  ".join(problems))
    return report


def _write_json(report, path):
    if path:
        with open(path, "w", encoding="utf-8") as file:
            json.dump(report, file, indent=2)


if __name__ == "__main__":
    main()
