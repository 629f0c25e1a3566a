"""`Spool.append_many`: a run of records in one write(2), and every case where it must go
record by record instead (segment end, size limit, a record the format cannot hold, a
failed write) with the same outcome, losses and order as single appends."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import pytest

import collector.delivery.spool as spool_module
from collector.delivery.spool import Spool, scan_segment
from tests.delivery.spool_support import (
    PAYLOAD,
    open_spool,
    read_all,
    sample,
    segments,
    small_tmpfs,
    spool_cfg,
)


def records(first: int, last: int) -> list[tuple[int, str, bytes]]:
    return [(seq, f"id-{seq}", PAYLOAD % seq) for seq in range(first, last + 1)]


def count_writes(monkeypatch: pytest.MonkeyPatch,
                 fail: Callable[[bytes], OSError | None] = lambda data: None) -> list[int]:
    """Sizes of the spool's record writes; fail(data) returns the error a write meets."""
    sizes: list[int] = []
    real = spool_module._write_all

    def write_all(fd: int, data: bytes) -> None:
        sizes.append(len(data))
        error = fail(data)
        if error is not None:
            raise error
        real(fd, data)

    monkeypatch.setattr(spool_module, "_write_all", write_all)
    return sizes


def on_disk_seqs(path: Path) -> list[int]:
    return [item.seq for seg in segments(path)
            for item in scan_segment(seg.read_bytes(), int(seg.name[4:16]))
            if isinstance(item, spool_module.Record)]


@pytest.mark.parametrize("memory_bytes", [spool_module.MEMORY_BYTES, 0],
                         ids=["from memory", "from disk"])
def test_a_run_is_one_write_read_back_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               memory_bytes: int) -> None:
    spool, drops, _ = open_spool(spool_cfg(tmp_path), memory_bytes=memory_bytes)
    spool.append(1, "id-1", PAYLOAD % 1)  # opens the segment
    writes = count_writes(monkeypatch)
    assert spool.append_many(records(2, 41)) == [True] * 40
    assert len(writes) == 1
    spool.flush()
    assert spool.pending()[0] == 41
    assert read_all(spool) == list(range(1, 42))
    assert drops.take() == []
    spool.close()
    assert on_disk_seqs(tmp_path) == list(range(1, 42))


def test_a_run_survives_a_restart_record_by_record(tmp_path: Path) -> None:
    spool = Spool(spool_cfg(tmp_path))
    spool.append(1, "id-1", PAYLOAD % 1)
    spool.append_many(records(2, 30))
    spool.close()
    again, _, _ = open_spool(spool_cfg(tmp_path))
    assert read_all(again) == list(range(1, 31))


def test_a_run_over_the_segment_end_goes_record_by_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool, drops, _ = open_spool(spool_cfg(tmp_path, segment_bytes=4096))
    spool.append(1, "id-1", PAYLOAD % 1)
    writes = count_writes(monkeypatch)
    assert spool.append_many(records(2, 60)) == [True] * 59  # ~14 KB: four segments
    assert len(writes) > 1 and max(writes) < 4096
    spool.flush()
    assert len(segments(tmp_path)) >= 4
    assert read_all(spool) == list(range(1, 61))
    assert drops.take() == []


def test_a_run_over_the_size_limit_applies_the_policy_to_each_record(tmp_path: Path) -> None:
    record = len(spool_module.encode_record(1, "id-1", PAYLOAD % 1))
    spool, drops, _ = open_spool(spool_cfg(tmp_path, max_bytes=30 * record, segment_bytes=4096,
                                           full_policy="drop-newest"))
    spool.append(1, "id-1", PAYLOAD % 1)
    taken = spool.append_many(records(2, 60))
    accepted = [seq for seq, ok in zip(range(2, 61), taken) if ok]
    assert accepted and accepted == list(range(2, 2 + len(accepted)))  # the oldest kept
    lost = [(d.first_seq, d.last_seq, d.reason) for d in drops.take()]
    assert lost == [(accepted[-1] + 1, 60, "drop-newest")]
    spool.flush()
    assert read_all(spool) == [1, *accepted]


def test_a_record_the_format_cannot_hold_is_refused_alone(tmp_path: Path) -> None:
    spool, drops, metrics = open_spool(spool_cfg(tmp_path))
    spool.append(1, "id-1", PAYLOAD % 1)
    run = records(2, 10)
    run[4] = (6, " starts-with-a-space", PAYLOAD % 6)
    assert spool.append_many(run) == [True] * 4 + [False] + [True] * 4
    assert [(d.first_seq, d.last_seq, d.reason) for d in drops.take()] == [(6, 6, "write-error")]
    assert sample(metrics, "audit_collector_spool_dropped_total", reason="write-error") == 1
    spool.flush()
    assert read_all(spool) == [1, 2, 3, 4, 5, 7, 8, 9, 10]


def test_a_failed_run_write_leaves_no_partial_run_and_each_record_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's write fails part-way (written bytes cut off again); the records then go
    one by one and are all taken: nothing doubled, nothing lost."""
    one_record = len(spool_module.encode_record(2, "id-2", PAYLOAD % 2))
    spool, drops, _ = open_spool(spool_cfg(tmp_path))
    spool.append(1, "id-1", PAYLOAD % 1)
    real = spool_module.os.write

    def half_then_fail(data: bytes) -> OSError | None:
        if len(data) > one_record + 8:
            real(spool._fd, data[: len(data) // 2])  # a torn run on disk
            return OSError(errno.EIO, "Input/output error")
        return None

    writes = count_writes(monkeypatch, half_then_fail)
    assert spool.append_many(records(2, 21)) == [True] * 20
    assert len(writes) == 21  # the run, then each record
    spool.flush()
    assert drops.take() == []
    assert read_all(spool) == list(range(1, 22))
    spool.close()
    assert on_disk_seqs(tmp_path) == list(range(1, 22))


def test_a_run_on_a_full_disk_is_settled_record_by_record(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "fs", "64k") as fs:
        spool, drops, _ = open_spool(spool_cfg(fs / "spool", max_bytes=8 << 20,
                                               segment_bytes=1 << 20, full_policy="drop-newest"))
        spool.append(1, "id-1", PAYLOAD % 1)
        taken: list[bool] = []
        for first in range(2, 2000, 50):
            taken += spool.append_many(records(first, first + 49))
        accepted = [seq for seq, ok in zip(range(2, 2002), taken) if ok]
        lost = {s for d in drops.take() for s in range(d.first_seq, d.last_seq + 1)}
        assert lost, "the file system must have filled"
        assert set(accepted) | lost == set(range(2, 2002)) and not set(accepted) & lost
        spool.flush()
        assert read_all(spool) == [1, *accepted]
        spool.close()
