"""Shared by the benchmarks: medians, text tables, the machine's description, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procstat import machine_busy_fraction

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BUSY_WARNING = 0.15


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table; None prints as '-'."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if i else v.ljust(w)
                         for i, (v, w) in enumerate(zip(values, widths)))
    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def machine() -> dict[str, Any]:
    """Where the numbers come from, including how busy the machine already was."""
    busy = machine_busy_fraction(1.0)
    return {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg": list(os.getloadavg()),
        "busy_before": busy,
        "busy_warning": busy > BUSY_WARNING,
    }


def busy_note(info: dict[str, Any]) -> str | None:
    if not info.get("busy_warning"):
        return None
    return (f"WARNING: the machine was {info['busy_before']:.0%} busy before the run "
            f"(load average {info['loadavg'][0]:.2f}): other work shares these CPUs, so the "
            "absolute rates are low and noisy; ratios measured in the same run still compare.")


def announce_machine() -> dict[str, Any]:
    """The machine's description, after printing a warning when it was busy."""
    info = machine()
    note = busy_note(info)
    if note:
        print(note, flush=True)
    return info


@dataclass(frozen=True)
class Target:
    name: str
    goal: str
    value: str
    met: bool | None  # None: could not be measured

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.name, "goal": self.goal, "value": self.value, "met": self.met}


def targets_table(targets: Sequence[Target]) -> str:
    status = {True: "met", False: "SHORT", None: "n/a"}
    return table(["target", "goal", "measured", "status"],
                 [[t.name, t.goal, t.value, status[t.met]] for t in targets])


def write_result(name: str, data: dict[str, Any], path: Path | None = None) -> Path:
    path = path or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
