"""Per-op overhead: forward + backward of tiny ops in tinynlm against NumPy doing it by hand.

For each case tinynlm runs the forward pass on leaf tensors that require grad and calls
``backward()``; the baseline does the same arithmetic directly on arrays: the forward, then the
backward formulas written out by hand (for ``z = (a * b).sum()``: ``grad_a = ones * b``,
``grad_b = ones * a``). Both sides reset their leaves' ``.grad`` to None at the start of every
iteration, and both are checked to give the same gradients before they are timed. On a GPU the
baseline is the same hand-written code on CuPy arrays.

The operands are tiny (16 elements), so the array arithmetic costs well under a microsecond and
what is left is the engine's Python overhead: ``overhead/op`` is (tinynlm - baseline) divided by
the number of ops the case records (each op's share covers its forward and its backward).

Run from the repository root::

    python3 -m benchmarks.op_overhead [--quick] [--device cpu|cuda] [--json out.json]
                                      [--case NAME ...] [--list]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

import tinynlm as tn
from tinynlm import backend

from .environment import environment, format_environment
from .timing import measure_side_by_side

FULL_REPEATS = 15
QUICK_REPEATS = 5
MIN_REPEAT_SECONDS = 0.02


@dataclass(frozen=True)
class Case:
    """One benchmark: ``build(device, xp)`` returns ``(tinynlm_step, by_hand_step)``, two
    no-argument callables that each run one iteration and return the gradients (or outputs)
    to compare. ``ops`` is how many tinynlm ops one iteration's forward pass records."""

    name: str
    description: str
    ops: int
    build: Callable
    grad_enabled: bool = True


class HandLeaf:
    """The by-hand side's leaf: an array and its ``.grad`` (reset each iteration, like a tensor)."""

    __slots__ = ("data", "grad")

    def __init__(self, data):
        self.data = data
        self.grad = None


def _operands(device, xp, *shapes, seed=0):
    """For each shape: a tinynlm leaf that requires grad and an equal, separate xp array."""
    rng = np.random.default_rng(seed)
    pairs = []
    for shape in shapes:
        values = (rng.standard_normal(shape) * 0.5).astype(np.float32)
        pairs.append((tn.tensor(values, device=device, requires_grad=True), xp.asarray(values)))
    return pairs


# ----------------------------------------------------------------------------- the cases


def _add16_sum(device, xp):
    (a, a_array), (b, b_array) = _operands(device, xp, (16,), (16,))
    hand_a, hand_b = HandLeaf(a_array), HandLeaf(b_array)

    def tinynlm_step():
        a.grad = None
        b.grad = None
        (a + b).sum().backward()
        return a.grad, b.grad

    def by_hand_step():
        hand_a.grad = None
        hand_b.grad = None
        c = hand_a.data + hand_b.data
        c.sum()
        grad_c = xp.ones_like(c)
        hand_a.grad = grad_c
        hand_b.grad = grad_c.copy()  # each leaf owns its gradient buffer, as in tinynlm
        return hand_a.grad, hand_b.grad

    return tinynlm_step, by_hand_step


def _mul16_sum(device, xp):
    (a, a_array), (b, b_array) = _operands(device, xp, (16,), (16,))
    hand_a, hand_b = HandLeaf(a_array), HandLeaf(b_array)

    def tinynlm_step():
        a.grad = None
        b.grad = None
        (a * b).sum().backward()
        return a.grad, b.grad

    def by_hand_step():
        hand_a.grad = None
        hand_b.grad = None
        a_data, b_data = hand_a.data, hand_b.data
        c = a_data * b_data
        c.sum()
        ones = xp.ones_like(c)
        hand_a.grad = ones * b_data
        hand_b.grad = ones * a_data
        return hand_a.grad, hand_b.grad

    return tinynlm_step, by_hand_step


def _tanh16_sum(device, xp):
    ((a, a_array),) = _operands(device, xp, (16,))
    hand_a = HandLeaf(a_array)

    def tinynlm_step():
        a.grad = None
        a.tanh().sum().backward()
        return (a.grad,)

    def by_hand_step():
        hand_a.grad = None
        y = xp.tanh(hand_a.data)
        y.sum()
        ones = xp.ones_like(y)
        hand_a.grad = ones * (1 - y * y)
        return (hand_a.grad,)

    return tinynlm_step, by_hand_step


def _softmax4x16_wsum(device, xp):
    """z = (softmax(x, -1) * w).sum() with w a constant (a plain sum of a softmax is constant)."""
    ((x, x_array), (w, w_array)) = _operands(device, xp, (4, 16), (4, 16), seed=1)
    w.requires_grad_(False)
    hand_x = HandLeaf(x_array)

    def tinynlm_step():
        x.grad = None
        (tn.softmax(x, dim=-1) * w).sum().backward()
        return (x.grad,)

    def by_hand_step():
        hand_x.grad = None
        x_data = hand_x.data
        e = xp.exp(x_data - x_data.max(axis=-1, keepdims=True))
        s = e / e.sum(axis=-1, keepdims=True)
        p = s * w_array
        p.sum()
        grad_s = xp.ones_like(p) * w_array
        hand_x.grad = s * (grad_s - (grad_s * s).sum(axis=-1, keepdims=True))
        return (hand_x.grad,)

    return tinynlm_step, by_hand_step


def _matmul64_sum(device, xp):
    (a, a_array), (b, b_array) = _operands(device, xp, (64, 64), (64, 64), seed=2)
    hand_a, hand_b = HandLeaf(a_array), HandLeaf(b_array)

    def tinynlm_step():
        a.grad = None
        b.grad = None
        (a @ b).sum().backward()
        return a.grad, b.grad

    def by_hand_step():
        hand_a.grad = None
        hand_b.grad = None
        a_data, b_data = hand_a.data, hand_b.data
        c = a_data @ b_data
        c.sum()
        grad_c = xp.ones_like(c)
        hand_a.grad = grad_c @ b_data.T
        hand_b.grad = a_data.T @ grad_c
        return hand_a.grad, hand_b.grad

    return tinynlm_step, by_hand_step


def _chain10_sum(device, xp):
    """Ten elementwise ops (mul, add, tanh, mul, sub, exp, mul, add, tanh, mul), then a sum."""
    (a, a_array), (b, b_array) = _operands(device, xp, (16,), (16,), seed=3)
    hand_a, hand_b = HandLeaf(a_array), HandLeaf(b_array)

    def tinynlm_step():
        a.grad = None
        b.grad = None
        y3 = (a * b + a).tanh()
        y6 = (y3 * b - a).exp()
        ((y6 * y3 + b).tanh() * a).sum().backward()
        return a.grad, b.grad

    def by_hand_step():
        hand_a.grad = None
        hand_b.grad = None
        a_data, b_data = hand_a.data, hand_b.data
        y1 = a_data * b_data
        y2 = y1 + a_data
        y3 = xp.tanh(y2)
        y4 = y3 * b_data
        y5 = y4 - a_data
        y6 = xp.exp(y5)
        y7 = y6 * y3
        y8 = y7 + b_data
        y9 = xp.tanh(y8)
        y10 = y9 * a_data
        y10.sum()
        # backward, last op first; gradients reaching one value from several uses add up
        g10 = xp.ones_like(y10)
        g9, grad_a = g10 * a_data, g10 * y9
        g8 = g9 * (1 - y9 * y9)
        grad_b = g8                                   # y8 = y7 + b
        g6, g3 = g8 * y3, g8 * y6                     # y7 = y6 * y3
        g5 = g6 * y6                                  # y6 = exp(y5)
        grad_a = grad_a + -g5                         # y5 = y4 - a
        g3, grad_b = g3 + g5 * b_data, grad_b + g5 * y3   # y4 = y3 * b
        g2 = g3 * (1 - y3 * y3)                       # y3 = tanh(y2)
        grad_a = grad_a + g2                          # y2 = y1 + a
        hand_a.grad = grad_a + g2 * b_data            # y1 = a * b
        hand_b.grad = grad_b + g2 * a_data
        return hand_a.grad, hand_b.grad

    return tinynlm_step, by_hand_step


def _add16_forward(device, xp):
    """Forward only: with grad mode on a graph node is recorded (and dropped); under no_grad not."""
    (a, a_array), (b, b_array) = _operands(device, xp, (16,), (16,))

    def tinynlm_step():
        return (a + b,)

    def by_hand_step():
        return (a_array + b_array,)

    return tinynlm_step, by_hand_step


CASES = {case.name: case for case in [
    Case("add16_sum", "(a + b).sum(), fwd+bwd, 16 float32", 2, _add16_sum),
    Case("mul16_sum", "(a * b).sum(), fwd+bwd, 16 float32", 2, _mul16_sum),
    Case("tanh16_sum", "a.tanh().sum(), fwd+bwd, 16 float32", 2, _tanh16_sum),
    Case("softmax4x16_wsum", "(softmax(x, -1) * w).sum(), fwd+bwd, (4, 16)", 3, _softmax4x16_wsum),
    Case("matmul64_sum", "(a @ b).sum(), fwd+bwd, 64x64 float32", 2, _matmul64_sum),
    Case("chain10_sum", "10 elementwise ops then sum, fwd+bwd, 16 float32", 11, _chain10_sum),
    Case("add16_fwd", "a + b, forward only, grad mode on (records a node)", 1, _add16_forward),
    Case("add16_fwd_nograd", "a + b, forward only, under tn.no_grad()", 1, _add16_forward,
         grad_enabled=False),
]}


# ----------------------------------------------------------------------------- running


def _host(value):
    """A NumPy copy of a tensor or a NumPy/CuPy array."""
    if isinstance(value, tn.Tensor):
        value = value.data
    return backend.to_host(value)


def check_same_results(case, tinynlm_step, by_hand_step):
    """Both sides must compute the same numbers, or the comparison means nothing."""
    with tn.set_grad_enabled(case.grad_enabled):
        ours, theirs = tinynlm_step(), by_hand_step()
    if len(ours) != len(theirs):
        raise AssertionError(f"{case.name}: {len(ours)} results from tinynlm, "
                             f"{len(theirs)} by hand")
    for index, (mine, expected) in enumerate(zip(ours, theirs)):
        if mine is None:
            raise AssertionError(f"{case.name}: tinynlm gave no result {index}")
        np.testing.assert_allclose(_host(mine), _host(expected), rtol=1e-4, atol=1e-6,
                                   err_msg=f"{case.name}: result {index} differs from the "
                                           "hand-written NumPy version")


def run_case(case: Case, device: str, repeats: int) -> dict:
    """Time one case on both sides, interleaved; a row of results (times in microseconds)."""
    xp = backend.array_module(backend.as_device(device))
    tinynlm_step, by_hand_step = case.build(device, xp)
    check_same_results(case, tinynlm_step, by_hand_step)
    with tn.set_grad_enabled(case.grad_enabled):
        ours, theirs = measure_side_by_side([tinynlm_step, by_hand_step], repeats=repeats,
                                            min_repeat_seconds=MIN_REPEAT_SECONDS, device=device)
    microseconds = 1e6
    return {
        "case": case.name,
        "description": case.description,
        "device": device,
        "ops": case.ops,
        "tinynlm_us": ours.median * microseconds,
        "numpy_us": theirs.median * microseconds,
        "ratio": ours.median / theirs.median,
        "overhead_per_op_us": (ours.median - theirs.median) / case.ops * microseconds,
        "tinynlm_min_us": ours.minimum * microseconds,
        "tinynlm_iqr_us": ours.iqr * microseconds,
        "numpy_min_us": theirs.minimum * microseconds,
        "numpy_iqr_us": theirs.iqr * microseconds,
        "tinynlm_calls_per_repeat": ours.number,
        "numpy_calls_per_repeat": theirs.number,
        "repeats": ours.repeats,
    }


def format_table(rows, device: str) -> str:
    """The results as an aligned text table."""
    baseline = "NumPy" if device == "cpu" else "CuPy"
    headers = ["case", "ops", "tinynlm µs", f"{baseline}-by-hand µs", "ratio",
               "overhead/op µs"]
    lines = [[row["case"], str(row["ops"]), f"{row['tinynlm_us']:.2f}", f"{row['numpy_us']:.2f}",
              f"{row['ratio']:.1f}x", f"{row['overhead_per_op_us']:.2f}"] for row in rows]
    widths = [max(len(header), *(len(line[i]) for line in lines))
              for i, header in enumerate(headers)]

    def render(cells):
        return "  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                         for i, (cell, width) in enumerate(zip(cells, widths)))

    return "\n".join([render(headers), render(["-" * width for width in widths])]
                     + [render(line) for line in lines])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.op_overhead",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_REPEATS} repeats per case instead of {FULL_REPEATS}")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", metavar="PATH", help="also write the rows as a JSON list")
    parser.add_argument("--case", action="append", choices=sorted(CASES), metavar="NAME",
                        help="run only this case (repeatable); see --list")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    return parser.parse_args(argv)


def main(argv=None) -> list[dict]:
    """Run the benchmark as the command line asks; returns the rows it printed."""
    args = parse_args(argv)
    if args.list:
        for case in CASES.values():
            print(f"{case.name:18}  {case.description}")
        return []
    if args.device == "cuda" and not tn.cuda.is_available():
        raise SystemExit("op_overhead: --device cuda was asked for, but no CUDA GPU is usable "
                         "(tn.cuda.is_available() is False: CuPy or a GPU is missing)")
    cases = [CASES[name] for name in args.case] if args.case else list(CASES.values())
    repeats = QUICK_REPEATS if args.quick else FULL_REPEATS

    print(format_environment(environment(args.device, None)))
    print(f"device {args.device}")
    print(f"median of {repeats} repeats of >= {MIN_REPEAT_SECONDS * 1e3:.0f} ms each, tinynlm and "
          "by-hand interleaved; overhead/op = (tinynlm - by hand) / ops", flush=True)
    rows = [run_case(case, args.device, repeats) for case in cases]
    print(format_table(rows, args.device))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(rows, file, indent=2)
        print(f"wrote {len(rows)} rows to {args.json}")
    bad = [row["case"] for row in rows if not all(
        math.isfinite(row[key]) and row[key] > 0 for key in ("tinynlm_us", "numpy_us"))]
    if bad:
        print(f"warning: non-positive or non-finite times for {bad}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
