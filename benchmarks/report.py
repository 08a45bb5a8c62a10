"""The run's output: one table (text), the same as JSON, and optionally a PNG chart."""
from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Iterable

from benchmarks.harness import Row, Run

__all__ = ["chart", "machine", "table", "to_json"]


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": sys.version.split()[0],
            "implementation": platform.python_implementation(), "platform": platform.platform(),
            "loadavg": load}


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "µs":
        return f"{value:,.1f} µs"
    return f"{value:,.0f}"


def _ratio(row: Row) -> str:
    ratio = row.ratio
    if ratio is None:
        return "-"
    return f"{ratio:,.0f}×" if ratio >= 100 else f"{ratio:.2f}×"


def table(rows: Iterable[Row]) -> str:
    """The table: figure, idgen, baseline, ratio, target, met; skipped rows say why."""
    header = ("figure", "unit", "idgen", "baseline", "ratio", "target", "met", "baseline is / notes")
    lines: list[tuple[str, ...]] = []
    for row in rows:
        if row.skipped:
            lines.append((f"{row.scenario}. {row.figure}", row.unit, "skipped", "", "", row.target,
                          "", row.skipped))
            continue
        met = "" if row.met is None else ("yes" if row.met else "NO")
        notes = row.baseline_name + (f"; {row.note}" if row.note else "")
        lines.append((f"{row.scenario}. {row.figure}", row.unit, _num(row.idgen, row.unit),
                      _num(row.baseline, row.unit), _ratio(row), row.target, met, notes))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(header)]
    widths[-1] = len(header[-1])  # the notes column is last and not padded

    def fmt(cells: tuple[str, ...]) -> str:
        return " | ".join(c.rjust(w) if 2 <= i <= 4 else c.ljust(w)
                          for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [fmt(header), "-+-".join("-" * w for w in widths)]
    out += [fmt(line) for line in lines]
    return "\n".join(out)


def markdown(rows: Iterable[Row]) -> str:
    """The same table as Markdown, for RESULTS.md."""
    out = ["| figure | unit | idgen | baseline | ratio | target | met | baseline is / notes |",
           "|---|---|--:|--:|--:|---|---|---|"]
    for row in rows:
        if row.skipped:
            out.append(f"| {row.scenario}. {row.figure} | {row.unit} | skipped | | | {row.target} "
                       f"| | {row.skipped} |")
            continue
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        notes = row.baseline_name + (f"; {row.note}" if row.note else "")
        out.append(f"| {row.scenario}. {row.figure} | {row.unit} | {_num(row.idgen, row.unit)} | "
                   f"{_num(row.baseline, row.unit)} | {_ratio(row)} | {row.target} | {met} | "
                   f"{notes} |")
    return "\n".join(out)


def to_json(run: Run, extra: dict[str, object]) -> str:
    return json.dumps({
        **extra,
        "quick": run.quick,
        "scenarios": {str(k): v for k, v in sorted(run.scenarios.items())},
        "rows": [row.to_json() for row in run.rows.values()],
    }, indent=2, default=str)


def chart(rows: Iterable[Row], path: str) -> str | None:
    """Draw the ratios as a PNG; returns why not when it cannot (matplotlib missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"matplotlib is not installed ({exc}); pip install 'idgen[chart]'"
    drawn = [r for r in rows if not r.skipped and r.ratio]
    if not drawn:
        return "no figure has a ratio to draw"
    fig, ax = plt.subplots(figsize=(11, 0.38 * len(drawn) + 1.5))
    labels = [f"{r.scenario}. {r.figure}" for r in drawn][::-1]
    ratios = [r.ratio or 0.0 for r in drawn][::-1]
    colors = ["#2a9d8f" if r.met else "#e76f51" if r.met is False else "#8d99ae"
              for r in drawn][::-1]
    ax.barh(labels, ratios, color=colors)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("idgen ÷ baseline, same run (log scale; for µs figures lower is better)")
    ax.set_title("idgen against its baselines (green: target met, red: missed, grey: no target)")
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
