"""Local sinks: stdout and ``file:PATH`` (NDJSON, one sealed document per line).

Both buffer in memory and write on `flush` (every pipeline tick) and at `close`, so the
capture loop pays for one write per tick, not per document. The file is opened for append;
``fsync=True`` makes each flush durable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import BinaryIO, Protocol

from collector.delivery.chain import ChainPoint, point_of
from collector.delivery.metrics import DeliveryMetrics

log = logging.getLogger(__name__)

TAIL_PROBE_BYTES = 1 << 20
WARN_INTERVAL_S = 60.0


def write_all(fd: int, data: bytes) -> None:
    """Write every byte: a raw write that a signal interrupts on a full pipe returns a
    short count (sys.stdout.buffer is a raw FileIO under PYTHONUNBUFFERED=1)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Sink(Protocol):
    name: str

    def write(self, line: bytes) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class _BufferedSink:
    name = "sink"

    def __init__(self, stream: BinaryIO, metrics: DeliveryMetrics | None = None) -> None:
        self._stream = stream
        self._emitted = (metrics or DeliveryMetrics()).documents.labels(output=self.name)
        self._buffer: list[bytes] = []
        self._count = 0
        self._unwritten = 0  # documents not written since the last warning
        self._warned_at = -WARN_INTERVAL_S

    def write(self, line: bytes) -> None:
        self._buffer.append(line)
        self._buffer.append(b"\n")
        self._count += 1

    def flush(self) -> None:
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        self._buffer.clear()
        try:
            self._stream.flush()  # whatever else went through the stream object first
            write_all(self._stream.fileno(), data)
            self._after_flush()
        except (OSError, ValueError) as exc:
            # stdout closed or the disk is full: local sinks must not stop capture.
            self._note_unwritten(exc)
            return
        self._emitted.inc(self._count)
        self._count = 0

    def _note_unwritten(self, exc: Exception) -> None:
        self._unwritten += self._count
        self._count = 0
        now = time.monotonic()
        if now - self._warned_at >= WARN_INTERVAL_S:
            log.warning("output %s: %d documents not written: %s", self.name,
                        self._unwritten, getattr(exc, "strerror", None) or exc)
            self._warned_at = now
            self._unwritten = 0

    def _after_flush(self) -> None:
        return

    def close(self) -> None:
        self.flush()


class StdoutSink(_BufferedSink):
    name = "stdout"

    def __init__(self, stream: BinaryIO | None = None,
                 metrics: DeliveryMetrics | None = None) -> None:
        super().__init__(stream or sys.stdout.buffer, metrics)


class FileSink(_BufferedSink):
    name = "file"

    def __init__(self, path: str | os.PathLike[str], fsync: bool = False,
                 metrics: DeliveryMetrics | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._fsync = fsync
        # Typed bash lines can hold passwords: owner-only, whatever the umask.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        super().__init__(os.fdopen(fd, "ab"), metrics)

    def _after_flush(self) -> None:
        if self._fsync:
            os.fsync(self._stream.fileno())

    def close(self) -> None:
        super().close()
        with contextlib.suppress(OSError):
            self._stream.close()


def last_point_in_file(path: str | os.PathLike[str]) -> ChainPoint | None:
    """The chain point of the last complete line of an NDJSON sink file (sequence recovery)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - TAIL_PROBE_BYTES))
            tail = handle.read()
    except OSError:
        return None
    for line in reversed(tail.split(b"\n")):
        point = point_of(line) if line.strip() else None
        if point is not None:
            return point
    return None
