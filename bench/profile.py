"""Where a Python process spends its CPU: py-spy (if installed) and a summary of its stacks."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

TOP = 15
# "function (path/to/file.py:123)" -> "function (file.py)"
THREAD_RE = re.compile(r"^thread \(\w+\):?")
FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*?)(?::\d+)?\)$")


def find_py_spy(explicit: str | None) -> str | None:
    if explicit:
        return explicit if Path(explicit).exists() else None
    return shutil.which("py-spy")


def start_recording(py_spy: str, pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """Sample pid for `seconds` without stopping it (collapsed stacks, one per line)."""
    argv = [py_spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
            "--rate", "200", "--nonblocking", "--threads", "--format", "raw",
            "--output", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def short_frame(frame: str) -> str:
    match = FRAME_RE.match(frame.strip())
    if not match:
        return frame.strip()
    return f"{match['func']} ({Path(match['file']).name})"


def summarize(collapsed: str, top: int = TOP) -> dict[str, Any]:
    """Self and inclusive shares of the samples, by function, and by thread (py-spy
    --threads starts each stack with "thread (TID): NAME")."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        if frames and THREAD_RE.match(frames[0]):
            threads[THREAD_RE.sub("", frames.pop(0)).strip() or "?"] += count
        frames = [short_frame(f) for f in frames]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    def shares(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": name, "share": round(n / total, 3)}
                for name, n in counter.most_common(top)] if total else []
    return {"samples": total, "self": shares(own), "inclusive": shares(inclusive),
            "threads": shares(threads)}


def finish_recording(proc: subprocess.Popen[bytes], out: Path) -> dict[str, Any]:
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        return {"error": "py-spy did not finish"}
    if proc.returncode != 0 or not out.exists():
        return {"error": f"py-spy failed: {err.decode(errors='replace').strip()[-300:]}"}
    return summarize(out.read_text())
