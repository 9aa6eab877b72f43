"""The ``ops`` suite: per-op overhead on tiny tensors, and throughput of large elementwise,
reduction and matrix-product ops.

Overhead: the cases of :mod:`benchmarks.op_overhead` (forward + backward of ``(a + b).sum()``
on 16 float32 numbers, a 64x64 product, a softmax, ...) in tinynlm (``tinynlm``), the same
arithmetic and its hand-derived gradients in NumPy (``numpy``, the baseline) and, when compared,
PyTorch (``torch``). ``overhead_per_op_us`` is (variant - numpy) / ops recorded.

Throughput: ``a + b`` and ``a.sum()`` over 4M float32 numbers and a 1024x1024 product, forward
under no_grad, in tinynlm, NumPy and PyTorch; GFLOP/s counts one FLOP per element (two per
multiply-add for the product).
"""

from __future__ import annotations

import numpy as np

import tinynlm as tn
from tinynlm import backend

from . import op_overhead
from .runner import Variant, Workload

SUITE = "ops"
OVERHEAD_CASES = ("add16_sum", "mul16_sum", "tanh16_sum", "softmax4x16_wsum", "matmul64_sum",
                  "chain10_sum", "add16_fwd", "add16_fwd_nograd")
# (shapes, seed, which operands require grad) of each case, as op_overhead makes them
_OPERANDS = {
    "add16_sum": (((16,), (16,)), 0, (True, True)),
    "mul16_sum": (((16,), (16,)), 0, (True, True)),
    "tanh16_sum": (((16,),), 0, (True,)),
    "softmax4x16_wsum": (((4, 16), (4, 16)), 1, (True, False)),
    "matmul64_sum": (((64, 64), (64, 64)), 2, (True, True)),
    "chain10_sum": (((16,), (16,)), 3, (True, True)),
    "add16_fwd": (((16,), (16,)), 0, (True, True)),
    "add16_fwd_nograd": (((16,), (16,)), 0, (True, True)),
}


def _torch_overhead_step(name, device, torch):
    """The case ``name`` in PyTorch, on the same numbers as op_overhead's operands."""
    shapes, seed, requires_grad = _OPERANDS[name]
    rng = np.random.default_rng(seed)
    leaves = [torch.from_numpy((rng.standard_normal(shape) * 0.5).astype(np.float32))
              .to(device).requires_grad_(grad) for shape, grad in zip(shapes, requires_grad)]

    def backward(loss):
        for leaf in leaves:
            leaf.grad = None
        loss.backward()
        return tuple(leaf.grad for leaf in leaves if leaf.requires_grad)

    a = leaves[0]
    b = leaves[1] if len(leaves) > 1 else None
    if name == "add16_sum":
        return lambda: backward((a + b).sum())
    if name == "mul16_sum":
        return lambda: backward((a * b).sum())
    if name == "tanh16_sum":
        return lambda: backward(a.tanh().sum())
    if name == "softmax4x16_wsum":
        return lambda: backward((torch.softmax(a, dim=-1) * b).sum())
    if name == "matmul64_sum":
        return lambda: backward((a @ b).sum())
    if name == "chain10_sum":
        def chain():
            y3 = (a * b + a).tanh()
            y6 = (y3 * b - a).exp()
            return backward(((y6 * y3 + b).tanh() * a).sum())
        return chain
    if name == "add16_fwd":
        return lambda: (a + b,)

    def add_without_grad():
        with torch.no_grad():
            return (a + b,)
    return add_without_grad


def _overhead_workload(name) -> Workload:
    case = op_overhead.CASES[name]

    def side(index):
        def build(device, torch):
            step = case.build(device, backend.array_module(backend.as_device(device)))[index]
            if case.grad_enabled or index == 1:
                return step

            def without_grad():
                with tn.no_grad():
                    return step()
            return without_grad
        return build

    return Workload(
        SUITE, f"overhead {name}", case.description,
        (Variant("tinynlm", side(0)), Variant("numpy", side(1)),
         Variant("torch", lambda device, torch: _torch_overhead_step(name, device, torch))),
        baseline="numpy", params={"case": name}, ops=case.ops, tolerance=1e-5,
        smallest=True)


def _throughput_workload(kind, size, smallest) -> Workload:
    """``a + b`` or ``a.sum()`` over ``size`` numbers, or an (n, n) @ (n, n) product."""
    shapes = ((size, size), (size, size)) if kind == "matmul" else ((size,), (size,))
    rng = np.random.default_rng(4)
    arrays = [rng.standard_normal(shape, dtype=np.float32) for shape in shapes]
    compute = {"add": lambda a, b: a + b, "sum": lambda a, b: a.sum(),
               "matmul": lambda a, b: a @ b}[kind]

    def tinynlm_step(device, torch):
        a, b = (tn.tensor(array, device=device) for array in arrays)

        def step():
            with tn.no_grad():
                return compute(a, b)
        return step

    def numpy_step(device, torch):
        xp = backend.array_module(backend.as_device(device))
        a, b = (xp.asarray(array) for array in arrays)
        return lambda: compute(a, b)

    def torch_step(device, torch):
        a, b = (torch.from_numpy(array).to(device) for array in arrays)

        def step():
            with torch.no_grad():
                return compute(a, b)
        return step

    flops = 2.0 * size ** 3 if kind == "matmul" else float(size)
    label = f"{size}x{size} @ {size}x{size}" if kind == "matmul" else f"{size:,} float32"
    return Workload(SUITE, f"{kind} {size}", f"{kind} forward, {label}",
                    (Variant("tinynlm", tinynlm_step), Variant("numpy", numpy_step),
                     Variant("torch", torch_step)),
                    baseline="numpy", params={"kind": kind, "size": size}, flops=flops,
                    tolerance=1e-4, smallest=smallest)


def workloads(quick: bool) -> list[Workload]:
    """The suite's workloads; ``quick`` uses smaller throughput sizes."""
    vector, matrix = (2**20, 512) if quick else (2**22, 1024)
    return ([_overhead_workload(name) for name in OVERHEAD_CASES]
            + [_throughput_workload("add", vector, True), _throughput_workload("sum", vector, True),
               _throughput_workload("matmul", matrix, True)])
