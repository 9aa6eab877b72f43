"""Printing, checking, saving, comparing and plotting benchmark results.

A report (what ``python -m benchmarks --json`` writes) is a dict: ``environment`` (see
:mod:`benchmarks.environment`), ``settings`` (how it was measured), ``rows`` (one per workload,
device, thread count and variant; see :func:`benchmarks.runner.measure_workload`) and
``targets`` (each performance target of the issues with the measured value and a verdict).

>>> row = {"suite": "ops", "workload": "w", "device": "cpu", "threads": 1, "variant": "v",
...        "status": "ok", "median_s": 0.002, "iqr_s": 0.0001}
>>> faster = dict(row, median_s=0.001)
>>> print(format_comparison({"rows": [row]}, {"rows": [faster]}))  # doctest: +NORMALIZE_WHITESPACE
suite  workload  device  threads  variant  old ms  new ms  change  verdict
-----  --------  ------  -------  -------  ------  ------  ------  -------
ops    w         cpu     1        v        2       1       -50.0%  faster
"""

from __future__ import annotations

import json
import math
import os
import tempfile

# How much slower (relative) a median must be, beyond both runs' interquartile ranges, for
# ``compare`` to call it a regression.
REGRESSION_THRESHOLD = 0.10


# ----------------------------------------------------------------------------- tables


def render_table(headers, lines) -> str:
    """Aligned columns: text left, numbers right."""
    widths = [max(len(header), *(len(line[i]) for line in lines)) if lines else len(header)
              for i, header in enumerate(headers)]

    def numeric(cell):
        return cell[:1].isdigit() or cell[:1] in "-+" and cell[1:2].isdigit()

    def render(cells):
        return "  ".join(cell.rjust(width) if numeric(cell) and index else cell.ljust(width)
                         for index, (cell, width) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([render(headers), render(["-" * width for width in widths])]
                     + [render(line) for line in lines])


def _number(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if abs(value) >= 10 ** digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


# the optional columns: (header, row -> cell or None)
_COLUMNS = [
    ("tokens/s", lambda row: _number(row["tokens_per_s"], 4) if "tokens_per_s" in row else None),
    ("GFLOP/s", lambda row: _number(row["gflop_per_s"]) if "gflop_per_s" in row else None),
    ("peak MiB", lambda row: _number(row["peak_extra_bytes"] / 2**20)
     if row.get("peak_extra_bytes") is not None else None),
    ("overhead/op µs", lambda row: _number(row["overhead_per_op_us"])
     if "overhead_per_op_us" in row else None),
]


def format_suite_table(rows) -> str:
    """One suite's rows: time, spread, the optional columns that any row has, and the ratio to
    the baseline (``1.32x torch``: 1.32 times the baseline's time)."""
    optional = [(header, cell) for header, cell in _COLUMNS
                if any(cell(row) is not None for row in rows if row.get("status") == "ok")]
    headers = (["workload", "device", "threads", "variant", "median ms", "IQR ms"]
               + [header for header, _ in optional] + ["vs baseline"])
    lines = []
    for row in rows:
        start = [row["workload"], row["device"], str(row["threads"] or "-"), row["variant"]]
        if row.get("status") != "ok":
            lines.append(start + [row.get("status", "?")] + [""] * (len(headers) - 5))
            continue
        ratio = (f"{row['ratio']:.2f}x {row['baseline']}" if row.get("ratio") is not None
                 and row["variant"] != row["baseline"] else "baseline"
                 if row["variant"] == row["baseline"] else "-")
        lines.append(start + [_number(row["median_s"] * 1e3), _number(row["iqr_s"] * 1e3)]
                     + [cell(row) or "-" for _, cell in optional] + [ratio])
    return render_table(headers, lines)


def format_report(report) -> str:
    """Every suite's table, then the targets."""
    parts = []
    for suite in dict.fromkeys(row["suite"] for row in report["rows"]):
        rows = [row for row in report["rows"] if row["suite"] == suite]
        parts.append(f"== {suite} ==\n{format_suite_table(rows)}")
    if report.get("targets"):
        parts.append("== targets (reported, not asserted) ==\n" + render_table(
            ["target", "case", "measured", "verdict"],
            [[t["target"], t["case"], t["measured"], t["verdict"]] for t in report["targets"]]))
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------- targets


def _rows(report, **match):
    return [row for row in report["rows"] if row.get("status") == "ok"
            and all(row.get(key) == value for key, value in match.items())]


def _case(row) -> str:
    threads = f", {row['threads']} threads" if row.get("threads") else ""
    return f"{row['workload']} ({row['device']}{threads})"


def evaluate_targets(report) -> list[dict]:
    """The issues' performance targets against the rows: each with the measured value and
    PASS/FAIL, or n/a where the row that decides it was not measured (PyTorch not compared, a
    quick run's smaller sizes, no GPU)."""
    targets = []

    def add(target, case, measured, passed):
        targets.append({"target": target, "case": case, "measured": measured,
                        "verdict": "n/a" if passed is None else "PASS" if passed else "FAIL"})

    overhead = _rows(report, suite="ops", workload="overhead add16_sum", variant="tinynlm")
    for row in overhead:
        add("per-op overhead, fwd+bwd of a 16-element add, <= 5 us", _case(row),
            f"{row['overhead_per_op_us']:.1f} us", row["overhead_per_op_us"] <= 5)
    if not overhead:
        add("per-op overhead, fwd+bwd of a 16-element add, <= 5 us", "ops suite", "not run", None)
    for workload, params, device, limit in (
            ("gpt", {"batch": 16, "length": 128}, "cpu", 1.25),
            ("lstm", {"batch": 32, "length": 64}, "cpu", 1.5),
            ("gpt-512x6", {"batch": 8, "length": 1024}, "cuda", 2.5)):
        target = f"{workload} training step on {device} <= {limit}x PyTorch"
        rows = [row for row in _rows(report, suite="train", workload=workload, device=device,
                                     variant="fused") if row["params"] == params]
        compared = [row for row in rows if row["baseline"] == "torch" and "ratio" in row]
        for row in compared:
            add(target, _case(row), f"{row['ratio']:.2f}x", row["ratio"] <= limit)
        if not compared:
            why = ("PyTorch not compared" if rows else
                   "not run at the full size" if device == "cpu" else "no GPU run")
            add(target, f"{workload} ({device})", why, None)
    for row in _rows(report, suite="attention", device="cpu", variant="fused"):
        params = row["params"]
        if params["pass"] == "forward+backward" and params["T"] >= 1024:
            composed = _rows(report, suite="attention", device="cpu", variant="composed",
                             workload=row["workload"], threads=row["threads"])
            if composed:
                speedup = composed[0]["median_s"] / row["median_s"]
                add("attention fwd+bwd >= 2x faster than composed at T >= 1024", _case(row),
                    f"{speedup:.2f}x", speedup >= 2)
        if params["T"] == 4096 and row["baseline"] == "torch" and "ratio" in row:
            add("attention within 1.5x of PyTorch at T = 4096", _case(row),
                f"{row['ratio']:.2f}x", row["ratio"] <= 1.5)
    return targets


# ----------------------------------------------------------------------------- JSON


def write_json(report, path) -> None:
    """Write ``report`` to ``path`` atomically (a temporary file renamed over it), so an
    interrupted run never leaves a half-written file where a good one was."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".benchmark-", suffix=".json", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(report, file, indent=2)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def read_json(path) -> dict:
    """A report written by :func:`write_json`; a clear error for anything else."""
    try:
        with open(path, encoding="utf-8") as file:
            report = json.load(file)
    except OSError as error:
        raise SystemExit(f"benchmarks compare: cannot read {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise SystemExit(f"benchmarks compare: {path} is not JSON ({error})") from None
    if not isinstance(report, dict) or not isinstance(report.get("rows"), list):
        raise SystemExit(f"benchmarks compare: {path} is not a report of python -m benchmarks "
                         "(no 'rows' list)")
    return report


# ----------------------------------------------------------------------------- compare


def _key(row):
    """What makes two rows the same measurement: the sizes (``params``) included, so that a
    quick run's rows never pair with a full run's."""
    return (row["suite"], row["workload"], row["device"], row.get("threads"), row["variant"],
            json.dumps(row.get("params", {}), sort_keys=True))


def compare_rows(old, new, threshold=REGRESSION_THRESHOLD) -> list[dict]:
    """Per workload, device, thread count and variant measured in both reports: the old and
    new median and the verdict: ``slower`` when the new median is more than ``threshold``
    above the old one and the difference exceeds both interquartile ranges, ``faster``
    likewise, else ``same``; rows in only one report are listed as ``only old``/``only new``."""
    old_rows = {_key(row): row for row in old["rows"] if row.get("status") == "ok"}
    new_rows = {_key(row): row for row in new["rows"] if row.get("status") == "ok"}
    result = []
    for key in list(old_rows) + [key for key in new_rows if key not in old_rows]:
        before, after = old_rows.get(key), new_rows.get(key)
        entry = dict(zip(("suite", "workload", "device", "threads", "variant"), key[:5]))
        if before is None or after is None:
            entry.update(verdict="only new" if before is None else "only old",
                         old_s=before and before["median_s"], new_s=after and after["median_s"])
            result.append(entry)
            continue
        change = after["median_s"] / before["median_s"] - 1
        noise = max(before.get("iqr_s", 0), after.get("iqr_s", 0))
        clear = abs(after["median_s"] - before["median_s"]) > noise
        verdict = ("slower" if change > threshold and clear else
                   "faster" if change < -threshold and clear else "same")
        entry.update(old_s=before["median_s"], new_s=after["median_s"], change=change,
                     verdict=verdict)
        result.append(entry)
    return result


def format_comparison(old, new, threshold=REGRESSION_THRESHOLD) -> str:
    lines = []
    for entry in compare_rows(old, new, threshold):
        lines.append([entry["suite"], entry["workload"], entry["device"],
                      str(entry["threads"] or "-"), entry["variant"],
                      _number(entry["old_s"] and entry["old_s"] * 1e3),
                      _number(entry["new_s"] and entry["new_s"] * 1e3),
                      f"{entry['change']:+.1%}" if "change" in entry else "-", entry["verdict"]])
    return render_table(["suite", "workload", "device", "threads", "variant", "old ms", "new ms",
                         "change", "verdict"], lines)


# ----------------------------------------------------------------------------- plots


def plot(report, path) -> None:
    """Draw the report into an image at ``path`` (matplotlib, the ``bench`` extra): time
    against sequence length per variant for the attention suite, and each other suite's
    median times as bars (log scale), one panel per suite."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("benchmarks: --plot needs matplotlib (pip install -e '.[bench]')") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in report["rows"] if row.get("status") == "ok"]
    suites = list(dict.fromkeys(row["suite"] for row in rows))
    if not suites:
        raise SystemExit("benchmarks: nothing was measured, so there is nothing to plot")
    figure, axes = plt.subplots(len(suites), 1, figsize=(10, 4.5 * len(suites)), squeeze=False)
    for axis, suite in zip(axes[:, 0], suites):
        suite_rows = [row for row in rows if row["suite"] == suite]
        if suite == "attention":
            _plot_lengths(axis, suite_rows)
        else:
            _plot_bars(axis, suite_rows)
        axis.set_title(suite)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_lengths(axis, rows):
    series = {}
    for row in rows:
        params = row["params"]
        label = (f"{row['variant']} {'causal' if params['causal'] else 'full'} {params['pass']}"
                 f" ({row['device']}, {row['threads'] or '-'} thr)")
        series.setdefault(label, []).append((params["T"], row["median_s"] * 1e3))
    for label, points in sorted(series.items()):
        points.sort()
        axis.plot([t for t, _ in points], [ms for _, ms in points], marker="o", label=label)
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xlabel("sequence length T")
    axis.set_ylabel("median ms")
    axis.legend(fontsize=7, ncol=2)


def _plot_bars(axis, rows):
    labels = [f"{row['workload']} · {row['variant']} ({row['device']}, "
              f"{row['threads'] or '-'} thr)" for row in rows]
    axis.barh(range(len(rows)), [row["median_s"] * 1e3 for row in rows])
    axis.set_yticks(range(len(rows)), labels, fontsize=7)
    axis.invert_yaxis()
    axis.set_xscale("log")
    axis.set_xlabel("median ms")
