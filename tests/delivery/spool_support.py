"""Helpers shared by the spool tests: configs, filling and draining, a drop recorder."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from collector.delivery.loss import DroppedRange
from collector.delivery.metrics import DeliveryMetrics
from collector.delivery.settings import SpoolConfig
from collector.delivery.spool import MEMORY_BYTES, Spool

PAYLOAD = b'{"event":{"sequence":%d},"pad":"' + b"p" * 200 + b'"}'


def spool_cfg(path: Path, **overrides: object) -> SpoolConfig:
    values: dict[str, object] = {"dir": str(path), "max_bytes": 1 << 20,
                                 "segment_bytes": 16 << 10, "fsync": "batch"}
    values.update(overrides)
    return SpoolConfig(**values)  # type: ignore[arg-type]


def fill(spool: Spool, first: int, last: int) -> list[bool]:
    results = [spool.append(seq, f"id-{seq}", PAYLOAD % seq) for seq in range(first, last + 1)]
    spool.flush()
    return results


def read_all(spool: Spool) -> list[int]:
    seqs: list[int] = []
    while batch := spool.read_batch(100, 1 << 20):
        seqs.extend(r.seq for r in batch)
        spool.ack(batch)
    return seqs


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("seg-*.spool"))


class Drops:
    """The spool's drop callback, merging contiguous runs of one reason as the ledger does."""

    def __init__(self) -> None:
        self.runs: list[DroppedRange] = []

    def __call__(self, runs: list[DroppedRange]) -> None:
        for run in runs:
            last = self.runs[-1] if self.runs else None
            if last and last.reason == run.reason and last.last_seq + 1 == run.first_seq:
                last.last_seq, last.last_data = run.last_seq, run.last_data
            else:
                self.runs.append(DroppedRange(run.first_seq, run.last_seq, run.reason,
                                              run.last_data))

    def take(self) -> list[DroppedRange]:
        runs, self.runs = self.runs, []
        return runs


def open_spool(cfg: SpoolConfig, memory_bytes: int = MEMORY_BYTES
               ) -> tuple[Spool, Drops, DeliveryMetrics]:
    """memory_bytes=0: every batch is read back from disk (no memory fast path)."""
    drops, metrics = Drops(), DeliveryMetrics()
    return Spool(cfg, drops, metrics, memory_bytes=memory_bytes), drops, metrics


def sample(metrics: DeliveryMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def spool_with(path: Path, last: int, acked: int = 0, **overrides: object) -> None:
    """A closed spool at path holding records 1..last, the first `acked` acknowledged."""
    spool = Spool(spool_cfg(path, **overrides))
    fill(spool, 1, last)
    if acked:
        spool.ack(spool.read_batch(acked, 1 << 30))
    spool.close()


def rewrite(path: Path, edit: Callable[[bytearray], object]) -> None:
    """Change a file's bytes in place (damage a segment)."""
    raw = bytearray(path.read_bytes())
    edit(raw)
    path.write_bytes(bytes(raw))


def flip_byte(at: int) -> Callable[[bytearray], None]:
    def edit(raw: bytearray) -> None:
        raw[at] ^= 0xFF

    return edit
