"""Checks of the CUDA kernels (``kernels/cuda_attention.py``, ``kernels/cuda_fused.py``) against
float64 NumPy references written here.

Run as ``python -m tests.kernels.cuda_simulator_checks`` (from the repository root), it runs every
check on Numba's CUDA simulator, which runs each CUDA thread as a Python thread on NumPy arrays:
it enables the simulator before Numba is imported, shrinks the kernels' tiles and blocks so that
the simulated blocks stay small, prints each check's time, and exits non-zero if any check failed.
Numba must not have been imported without the simulator in the same process, which is why
``test_cuda_simulator.py`` runs this module in a subprocess.

``test_cuda_simulator.py`` also imports the checks and runs them on CuPy arrays on a real GPU,
with the kernels' own tile sizes and larger problems (``Backend.large``).

Every output the kernels allocate is filled with NaN first (:func:`poison_outputs`), so an element
a kernel forgets to write fails the comparison.
"""

import importlib
import os
import sys
import time

import numpy as np

DTYPES = (np.float32, np.float64)


class Backend:
    """Where the checks run: the array module (NumPy on the simulator, CuPy on a GPU), the two
    kernel modules, and whether to add larger problems (GPU only: the simulator is slow)."""

    def __init__(self, xp, large):
        self.xp = xp
        self.large = large
        self.attention = importlib.import_module("tinynlm.kernels.cuda_attention")
        self.fused = importlib.import_module("tinynlm.kernels.cuda_fused")

    def put(self, a):
        return self.xp.asarray(a)

    def get(self, a):
        return a if self.xp is np else self.xp.asnumpy(a)


def poison_outputs(backend, set_attribute=setattr):
    """Make the kernel modules' ``_empty`` fill every output with NaN (``set_attribute`` may be
    pytest's ``monkeypatch.setattr``, which undoes it after the test)."""
    for module in (backend.attention, backend.fused):
        set_attribute(module, "_empty", _filled_with_nan(module._empty))


def _filled_with_nan(empty):
    def nan_empty(shape, dtype, like):
        out = empty(shape, dtype, like)
        out.fill(np.nan)
        return out
    return nan_empty


def assert_close(name, actual, expected, dtype):
    """``actual`` (from a kernel, in ``dtype``) matches the float64 ``expected``: same shape, dtype,
    NaN and infinite entries, and the largest error on the finite entries is within 1e-5
    (float32) or 1e-10 (float64) of the largest finite magnitude of ``expected``."""
    if actual.shape != expected.shape or actual.dtype != dtype:
        raise AssertionError(f"{name}: got {actual.dtype}{actual.shape}, expected "
                             f"{np.dtype(dtype)}{expected.shape}")
    actual = actual.astype(np.float64)
    if np.isnan(actual).any() and not np.isnan(expected).any():
        raise AssertionError(f"{name}: NaN at {np.argwhere(np.isnan(actual))[:5].tolist()}")
    finite = np.isfinite(expected)
    if not np.array_equal(actual[~finite], expected[~finite], equal_nan=True):
        raise AssertionError(f"{name}: non-finite entries differ: {actual[~finite][:5]} vs "
                             f"{expected[~finite][:5]}")
    tolerance = 1e-5 if dtype == np.float32 else 1e-10
    scale = np.abs(expected[finite]).max(initial=0.0)
    error = np.abs(actual[finite] - expected[finite]).max(initial=0.0)
    if not error <= tolerance * scale:   # also catches NaN where a finite value is expected
        raise AssertionError(f"{name}: max error {error:.3g} > {tolerance:g} * {scale:.3g}")


# --- attention ---------------------------------------------------------------------------------

def attention_reference(q, k, v, scale, causal, mask, bias, dout):
    """``(out, lse, dq, dk, dv)`` in float64 with the full ``(N, L, S)`` matrices."""
    s = scale * q @ k.transpose(0, 2, 1)
    if bias is not None:
        s = s + bias
    allowed = np.ones(s.shape, bool)
    if causal:
        allowed &= np.tril(np.ones(s.shape[1:], bool))
    if mask is not None:
        allowed &= mask
    s = np.where(allowed, s, -np.inf)
    live = (s > -np.inf).any(-1, keepdims=True)   # rows with a key left (a bias may be -inf)
    top = np.where(live, s.max(-1, keepdims=True), 0.0)
    e = np.exp(s - top)
    total = np.where(live, e.sum(-1, keepdims=True), 1.0)
    p = e / total
    out = p @ v
    lse = np.where(live, top + np.log(total), -np.inf)[..., 0]
    ds = p * (dout @ v.transpose(0, 2, 1) - (dout * out).sum(-1, keepdims=True))
    dq = scale * ds @ k
    dk = scale * ds.transpose(0, 2, 1) @ q
    dv = p.transpose(0, 2, 1) @ dout
    return out, lse, dq, dk, dv


def _attention_inputs(backend, rng, dtype, n, q_len, k_len, e, ev, mask=None, bias=None):
    """Random inputs as float64 NumPy arrays (already rounded to ``dtype``) and as the kernels'
    arguments (``dtype``, on the backend's device; mask and bias possibly zero-stride views)."""
    host = {name: rng.standard_normal(shape).astype(dtype).astype(np.float64)
            for name, shape in (("q", (n, q_len, e)), ("k", (n, k_len, e)), ("v", (n, k_len, ev)),
                                ("dout", (n, q_len, ev)))}
    device = {name: backend.put(a.astype(dtype)) for name, a in host.items()}
    host["mask"] = host["bias"] = device["mask"] = device["bias"] = None
    if mask == "random":   # some rows (and, in problem 0, the last row) with every key masked
        m = rng.random((n, q_len, k_len)) < 0.7
        m[:, 1] = False
        m[0, -1] = False
        host["mask"], device["mask"] = m, backend.put(m)
    elif mask == "broadcast":   # one (L, S) mask for all problems, row 2 fully masked
        m = rng.random((1, q_len, k_len)) < 0.6
        m[0, 2] = False
        host["mask"] = np.broadcast_to(m, (n, q_len, k_len))
        device["mask"] = backend.xp.broadcast_to(backend.put(m), (n, q_len, k_len))
    if bias in ("random", "with -inf"):
        b = rng.standard_normal((n, q_len, k_len)).astype(dtype)
        if bias == "with -inf":   # an additive mask: some keys, and every key of row 2, at -inf
            b[rng.random(b.shape) < 0.3] = -np.inf
            b[:, 2] = -np.inf
        host["bias"], device["bias"] = b.astype(np.float64), backend.put(b)
    elif bias == "broadcast":
        b = rng.standard_normal((1, q_len, 1)).astype(dtype)
        host["bias"] = np.broadcast_to(b.astype(np.float64), (n, q_len, k_len))
        device["bias"] = backend.xp.broadcast_to(backend.put(b), (n, q_len, k_len))
    return host, device


ATTENTION_CASES = [
    # E and Ev are never multiples of the 16-wide feature rows; L and S not of the tiles
    dict(n=2, q_len=7, k_len=7, e=5, ev=5, causal=False),
    dict(n=2, q_len=9, k_len=9, e=4, ev=4, causal=True),
    dict(n=1, q_len=6, k_len=11, e=3, ev=6, causal=True, bias="with -inf"),  # L < S
    dict(n=2, q_len=10, k_len=5, e=6, ev=3, causal=True, mask="random"),     # L > S
    dict(n=2, q_len=7, k_len=9, e=5, ev=4, causal=False, mask="random", bias="random"),
    dict(n=3, q_len=6, k_len=6, e=4, ev=4, causal=True, mask="broadcast", bias="broadcast"),
    dict(n=1, q_len=5, k_len=6, e=17, ev=20, causal=False, mask="random"),  # 32-wide rows
]

LARGE_ATTENTION_CASES = [   # the kernels' own tiles: 32, 16 and 8 rows, one or more per problem
    dict(n=3, q_len=200, k_len=300, e=64, ev=64, causal=True, mask="random", bias="random"),
    dict(n=2, q_len=300, k_len=129, e=128, ev=128, causal=False, mask="broadcast"),
    dict(n=2, q_len=70, k_len=70, e=80, ev=16, causal=True, bias="broadcast"),
    dict(n=4, q_len=33, k_len=65, e=16, ev=128, causal=False),
]


def check_attention(backend):
    """Forward and backward against the reference: causal or not, L != S, masks with fully
    masked rows, biases (one with -inf entries and rows), broadcast (zero-stride) masks and
    biases, E != Ev."""
    rng = np.random.default_rng(0)
    cases = ATTENTION_CASES + (LARGE_ATTENTION_CASES if backend.large else [])
    for case in cases:
        case = dict(case)
        causal = case.pop("causal")
        for dtype in DTYPES:
            host, device = _attention_inputs(backend, rng, dtype, **case)
            scale = 1 / np.sqrt(case["e"])
            expected = attention_reference(host["q"], host["k"], host["v"], scale, causal,
                                           host["mask"], host["bias"], host["dout"])
            out, lse = backend.attention.attention_forward(
                device["q"], device["k"], device["v"], scale, causal, device["mask"],
                device["bias"])
            grads = backend.attention.attention_backward(
                device["q"], device["k"], device["v"], out, lse, device["dout"], scale, causal,
                device["mask"], device["bias"])
            label = f"attention {case} causal={causal} {np.dtype(dtype)}"
            for name, actual, wanted in zip(("out", "lse", "dq", "dk", "dv"),
                                            (out, lse) + tuple(grads), expected):
                assert_close(f"{label} {name}", backend.get(actual), wanted, dtype)


def check_attention_finite_differences(backend):
    """The float64 backward against central differences of the forward, along random directions
    of ``(q, k, v)``, with a causal mask, a random mask (one row fully masked) and a bias."""
    rng = np.random.default_rng(1)
    host, device = _attention_inputs(backend, rng, np.float64, n=2, q_len=5, k_len=6, e=3, ev=2,
                                     mask="random", bias="random")
    scale, causal, step = 0.7, True, 1e-5
    attention = backend.attention

    def loss(q, k, v):
        out, _ = attention.attention_forward(backend.put(q), backend.put(k), backend.put(v),
                                             scale, causal, device["mask"], device["bias"])
        return float((backend.get(out) * host["dout"]).sum())

    out, lse = attention.attention_forward(device["q"], device["k"], device["v"], scale, causal,
                                           device["mask"], device["bias"])
    grads = [backend.get(g) for g in attention.attention_backward(
        device["q"], device["k"], device["v"], out, lse, device["dout"], scale, causal,
        device["mask"], device["bias"])]
    inputs = [host["q"], host["k"], host["v"]]
    for trial in range(3):
        direction = [rng.standard_normal(a.shape) for a in inputs]
        plus = loss(*[a + step * d for a, d in zip(inputs, direction)])
        minus = loss(*[a - step * d for a, d in zip(inputs, direction)])
        numeric = (plus - minus) / (2 * step)
        analytic = sum(float((g * d).sum()) for g, d in zip(grads, direction))
        if not abs(numeric - analytic) <= 1e-7 * max(1.0, abs(analytic)):
            raise AssertionError(f"attention finite differences, direction {trial}: "
                                 f"numeric {numeric!r} vs backward {analytic!r}")


# --- fused kernels -----------------------------------------------------------------------------

def _rows(backend, rng, dtype, shape, low=-3.0, high=3.0):
    """A random array as float64 (rounded to ``dtype``) and on the backend in ``dtype``."""
    a = rng.uniform(low, high, shape).astype(dtype)
    return a.astype(np.float64), backend.put(a)


def check_gelu(backend):
    """GELU forward and backward, elementwise over 1-D to 3-D arrays."""
    from math import erf

    rng = np.random.default_rng(2)
    erf = np.vectorize(erf)
    shapes = [(3, 37), (50,), (2, 3, 5)] + ([(1000, 1001)] if backend.large else [])
    for dtype in DTYPES:
        for shape in shapes:
            x, x_dev = _rows(backend, rng, dtype, shape, -6.0, 6.0)
            dy, dy_dev = _rows(backend, rng, dtype, shape)
            cdf = 0.5 * (1 + erf(x / np.sqrt(2)))
            pdf = np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)
            label = f"gelu {shape} {np.dtype(dtype)}"
            assert_close(f"{label} forward", backend.get(backend.fused.gelu_forward(x_dev)),
                         x * cdf, dtype)
            assert_close(f"{label} backward",
                         backend.get(backend.fused.gelu_backward(x_dev, dy_dev)),
                         dy * (cdf + x * pdf), dtype)


def check_softmax(backend):
    """Softmax and log-softmax over the last dim, forward and backward, with some ``-inf``
    inputs; 2-D and 3-D inputs."""
    rng = np.random.default_rng(3)
    shapes = [(5, 37), (1, 3), (2, 3, 5)] + ([(64, 1000), (3, 50000)] if backend.large else [])
    for dtype in DTYPES:
        for shape in shapes:
            for log in (False, True):
                x, _ = _rows(backend, rng, dtype, shape, -8.0, 8.0)
                x.reshape(-1, shape[-1])[0, :2] = -np.inf
                x_dev = backend.put(x.astype(dtype))
                dy, dy_dev = _rows(backend, rng, dtype, shape)
                shifted = x - x.max(-1, keepdims=True)
                log_y = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
                y = np.exp(log_y)
                if log:
                    expected_y, expected_dx = log_y, dy - y * dy.sum(-1, keepdims=True)
                else:
                    expected_y, expected_dx = y, y * (dy - (dy * y).sum(-1, keepdims=True))
                label = f"{'log_' if log else ''}softmax {shape} {np.dtype(dtype)}"
                y_dev = backend.fused.softmax_forward(x_dev, log)
                assert_close(f"{label} forward", backend.get(y_dev), expected_y, dtype)
                dx_dev = backend.fused.softmax_backward(y_dev, dy_dev, log)
                assert_close(f"{label} backward", backend.get(dx_dev), expected_dx, dtype)


def check_layer_norm(backend):
    """Layer norm forward (y, mean, rstd) and backward (dx, dweight, dbias), with and without
    weight and bias; more rows than the weight-gradient partitions."""
    rng = np.random.default_rng(4)
    shapes = [(6, 37), (1, 5), (11, 3)] + ([(4096, 768), (3, 5000)] if backend.large else [])
    eps = 1e-5
    for dtype in DTYPES:
        for shape in shapes:
            for affine in ("weight and bias", "weight", "none"):
                x, x_dev = _rows(backend, rng, dtype, shape, -2.0, 4.0)
                dy, dy_dev = _rows(backend, rng, dtype, shape)
                w = b = w_dev = b_dev = None
                if affine != "none":
                    w, w_dev = _rows(backend, rng, dtype, shape[1:], 0.5, 1.5)
                if affine == "weight and bias":
                    b, b_dev = _rows(backend, rng, dtype, shape[1:])
                mean = x.mean(1, keepdims=True)
                rstd = 1 / np.sqrt(((x - mean) ** 2).mean(1, keepdims=True) + eps)
                xhat = (x - mean) * rstd
                y = xhat * (1 if w is None else w) + (0 if b is None else b)
                g = dy * (1 if w is None else w)
                dx = rstd * (g - g.mean(1, keepdims=True)
                             - xhat * (g * xhat).mean(1, keepdims=True))
                label = f"layer_norm {shape} {affine} {np.dtype(dtype)}"
                fused = backend.fused
                y_dev, mean_dev, rstd_dev = fused.layer_norm_forward(x_dev, w_dev, b_dev, eps)
                assert_close(f"{label} y", backend.get(y_dev), y, dtype)
                assert_close(f"{label} mean", backend.get(mean_dev), mean[:, 0], dtype)
                assert_close(f"{label} rstd", backend.get(rstd_dev), rstd[:, 0], dtype)
                dx_dev, dw_dev, db_dev = fused.layer_norm_backward(
                    dy_dev, x_dev, mean_dev, rstd_dev, w_dev)
                assert_close(f"{label} dx", backend.get(dx_dev), dx, dtype)
                if w is None:
                    if dw_dev is not None or db_dev is not None:
                        raise AssertionError(f"{label}: dweight/dbias without a weight")
                else:
                    assert_close(f"{label} dweight", backend.get(dw_dev),
                                 (dy * xhat).sum(0), dtype)
                    assert_close(f"{label} dbias", backend.get(db_dev), dy.sum(0), dtype)


def check_cross_entropy(backend):
    """Cross-entropy forward (loss rows, lse) and backward, with ignored rows and label
    smoothing; ``ignore_index`` either outside the classes or one of them."""
    rng = np.random.default_rng(5)
    shapes = [(7, 37), (3, 2)] + ([(512, 50000)] if backend.large else [])
    for dtype in DTYPES:
        for n, classes in shapes:
            for ignore_index, smoothing in ((-100, 0.0), (-100, 0.1), (1, 0.25)):
                logits, logits_dev = _rows(backend, rng, dtype, (n, classes), -5.0, 5.0)
                target = rng.integers(0, classes, n)
                target[::3] = ignore_index
                grad, grad_dev = _rows(backend, rng, dtype, (n,))
                top = logits.max(1, keepdims=True)
                lse = (top + np.log(np.exp(logits - top).sum(1, keepdims=True)))[:, 0]
                ignored = target == ignore_index
                picked = logits[np.arange(n), np.where(ignored, 0, target)]
                loss = np.where(ignored, 0.0, (1 - smoothing) * (lse - picked)
                                + smoothing * (lse - logits.mean(1)))
                one_hot = np.zeros((n, classes))
                one_hot[np.arange(n), np.where(ignored, 0, target)] = 1.0
                dlogits = grad[:, None] * (np.exp(logits - lse[:, None])
                                           - (1 - smoothing) * one_hot - smoothing / classes)
                dlogits[ignored] = 0.0
                label = f"cross_entropy {(n, classes)} ignore={ignore_index} " \
                        f"smoothing={smoothing} {np.dtype(dtype)}"
                target_dev = backend.put(target.astype(np.int64))
                fused = backend.fused
                loss_dev, lse_dev = fused.cross_entropy_forward(logits_dev, target_dev,
                                                                ignore_index, smoothing)
                assert_close(f"{label} loss", backend.get(loss_dev), loss, dtype)
                assert_close(f"{label} lse", backend.get(lse_dev), lse, dtype)
                dlogits_dev = fused.cross_entropy_backward(logits_dev, target_dev, lse_dev,
                                                           grad_dev, ignore_index, smoothing)
                assert_close(f"{label} dlogits", backend.get(dlogits_dev), dlogits, dtype)


CHECKS = {check.__name__[len("check_"):]: check for check in (
    check_attention, check_attention_finite_differences, check_gelu, check_softmax,
    check_layer_norm, check_cross_entropy)}

# Small tiles and blocks for the simulator, which runs one Python thread per CUDA thread. They
# keep several tiles per problem and loops over more elements than threads; the attention's
# problems are split over several launches (as past 65535 problems on a GPU).
SIMULATOR_SETTINGS = {
    "cuda_attention": {"THREADS": 8, "MAX_BLOCK": 4, "MAX_GRID_Y": 2},
    "cuda_fused": {"THREADS": 8, "MAX_BLOCKS": 2, "PARTITIONS": 4},
}


def main():
    if "numba" in sys.modules:
        sys.exit("numba was imported before the CUDA simulator could be enabled")
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    from numba import config

    if not config.ENABLE_CUDASIM:
        sys.exit("NUMBA_ENABLE_CUDASIM=1 did not enable Numba's CUDA simulator")
    # The simulator's block manager polls its threads while holding the GIL; a shorter switch
    # interval than the default 5 ms lets the threads reach each syncthreads() several times
    # faster.
    sys.setswitchinterval(5e-4)
    backend = Backend(np, large=False)
    for name, settings in SIMULATOR_SETTINGS.items():
        module = getattr(backend, name[len("cuda_"):])
        for attribute, value in settings.items():
            setattr(module, attribute, value)
    poison_outputs(backend)
    failures = []
    start = time.perf_counter()
    for name, check in CHECKS.items():
        began = time.perf_counter()
        try:
            check(backend)
        except Exception as error:  # noqa: BLE001 - report every failing check, then exit 1
            failures.append(name)
            print(f"FAIL {name}: {type(error).__name__}: {error}", flush=True)
        else:
            print(f"ok   {name} ({time.perf_counter() - began:.1f} s)", flush=True)
    print(f"CUDA simulator: {len(CHECKS) - len(failures)} of {len(CHECKS)} checks passed in "
          f"{time.perf_counter() - start:.1f} s")
    if failures:
        sys.exit(f"CUDA simulator checks failed: {', '.join(failures)}")


if __name__ == "__main__":
    main()
