"""Counting a load's events in a tracer's output file, from where the case started."""

from __future__ import annotations

import os
from pathlib import Path


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class LineCounter:
    """Counts complete lines (appended since `start`) that contain any of the patterns (a
    pattern may be a tuple of byte strings: a line must contain all of them).

    Reads only what was appended since the previous call, so polling a growing file while
    a tracer catches up stays cheap.
    """

    def __init__(self, path: Path, patterns: dict[str, bytes | tuple[bytes, ...]],
                 start: int | None = None,
                 line_prefix: bytes = b"") -> None:
        self.path = path
        self.patterns = patterns
        self.line_prefix = line_prefix
        self._offset = file_size(path) if start is None else start
        self.counts = dict.fromkeys(patterns, 0)

    def poll(self) -> dict[str, int]:
        chunk = self._read_new()
        if chunk:
            for line in chunk.split(b"\n"):
                if not line.startswith(self.line_prefix):
                    continue
                for name, pattern in self.patterns.items():
                    needles = pattern if isinstance(pattern, tuple) else (pattern,)
                    if all(needle in line for needle in needles):
                        self.counts[name] += 1
        return dict(self.counts)

    def _read_new(self) -> bytes:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return b""
        end = data.rfind(b"\n")
        if end < 0:
            return b""
        self._offset += end + 1
        return data[:end]


def tail_text(path: Path, limit: int = 4000) -> str:
    """The end of a log file, for error messages."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, file_size(path) - limit), os.SEEK_SET)
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
