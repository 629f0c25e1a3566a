"""The durable spool: records, acks, torn tails, size bound and full disk."""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from pathlib import Path

import pytest

from collector.delivery.metrics import DeliveryMetrics
from collector.delivery.spool import HEADER_SIZE, MEMORY_BYTES, Record, Spool, scan_segment
from tests.delivery.spool_support import (
    PAYLOAD,
    fill,
    flip_byte,
    open_spool,
    read_all,
    rewrite,
    sample,
    segments,
    small_tmpfs,
    spool_cfg,
    spool_with,
)


def test_restart_resumes_at_first_unacknowledged_record(tmp_path: Path) -> None:
    spool = Spool(spool_cfg(tmp_path))
    fill(spool, 1, 300)
    batch = spool.read_batch(120, 1 << 20)
    assert [r.seq for r in batch] == list(range(1, 121))
    assert batch[0].id == "id-1" and batch[0].data == PAYLOAD % 1
    spool.ack(batch)
    unacked = spool.read_batch(50, 1 << 20)  # read, never acknowledged
    assert unacked[0].seq == 121
    spool.close()

    again = Spool(spool_cfg(tmp_path))
    assert again.pending()[0] == 180
    assert again.last_record is not None and again.last_record.seq == 300
    assert read_all(again) == list(range(121, 301))
    assert len(segments(tmp_path)) == 1  # acknowledged segments are deleted


# Live reading: from memory (the fast path), from disk only, and from both (a memory that
# holds only the newest ~2 KiB of documents, so that reads move from disk to memory).
READ_PATHS = pytest.mark.parametrize("memory_bytes", [MEMORY_BYTES, 0, 2048],
                                     ids=["memory", "disk", "disk-then-memory"])


@READ_PATHS
def test_records_are_invisible_to_the_shipper_until_flushed(tmp_path: Path,
                                                            memory_bytes: int) -> None:
    spool = Spool(spool_cfg(tmp_path), memory_bytes=memory_bytes)
    spool.append(1, "id-1", b"{}")
    assert spool.read_batch(10, 1 << 20) == []
    spool.flush()
    assert [r.seq for r in spool.read_batch(10, 1 << 20)] == [1]


@READ_PATHS
def test_a_background_sync_makes_records_readable_only_after_the_fsync(
        tmp_path: Path, memory_bytes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """flush_soon (the capture thread's) fsyncs on the syncer thread: nothing is readable
    until that fsync has returned, and records appended meanwhile wait for the next one."""
    entered, release, synced_fds = threading.Event(), threading.Event(), []
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        entered.set()
        assert release.wait(10)
        real_fsync(fd)
        synced_fds.append(fd)

    spool = Spool(spool_cfg(tmp_path), memory_bytes=memory_bytes)
    monkeypatch.setattr(os, "fsync", slow_fsync)
    spool.append(1, "id-1", b"{}")
    spool.flush_soon()
    assert entered.wait(10)
    spool.append(2, "id-2", b"{}")  # appends go on while the disk is busy
    assert not spool.wait_for_data(0.2)
    assert spool.read_batch(10, 1 << 20) == []
    release.set()
    assert spool.wait_for_data(10)
    assert [r.seq for r in spool.read_batch(10, 1 << 20)] == [1]  # 2 came after the fsync
    assert synced_fds and threading.current_thread().name != "spool-sync"
    spool.release()
    spool.flush_soon()
    deadline, seqs = time.monotonic() + 10, [1]
    while seqs == [1] and time.monotonic() < deadline:
        time.sleep(0.01)
        seqs = [r.seq for r in spool.read_batch(10, 1 << 20)]
        spool.release()
    assert seqs == [1, 2]
    spool.close()
    assert again_readable(tmp_path) == [1, 2]


def again_readable(path: Path) -> list[int]:
    return read_all(Spool(spool_cfg(path)))


def test_torn_tail_is_cut_and_good_records_kept(tmp_path: Path) -> None:
    spool = Spool(spool_cfg(tmp_path, segment_bytes=1 << 20))
    fill(spool, 1, 50)
    spool.close()
    newest = segments(tmp_path)[-1]
    good_size = newest.stat().st_size
    with open(newest, "ab") as handle:  # half a record, as after SIGKILL mid-write
        handle.write(b"\xff\x00\x00\x00\x12\x34")
    again, drops, metrics = open_spool(spool_cfg(tmp_path, segment_bytes=1 << 20))
    assert sample(metrics, "audit_collector_spool_corrupt_bytes_total") == 6
    assert newest.stat().st_size == good_size
    assert drops.take() == []
    fill(again, 51, 60)
    assert read_all(again) == list(range(1, 61))


def test_flipped_byte_in_older_segment_reports_the_unreadable_range(tmp_path: Path) -> None:
    spool_with(tmp_path, 200)
    at = HEADER_SIZE + 20 * 250  # somewhere around the 20th record
    rewrite(segments(tmp_path)[0], flip_byte(at))

    again, drops, _ = open_spool(spool_cfg(tmp_path))
    losses = drops.take()
    seqs = read_all(again)
    assert len(losses) == 1 and losses[0].reason == "corrupt"
    lost = set(range(losses[0].first_seq, losses[0].last_seq + 1))
    assert sorted(set(seqs) | lost) == list(range(1, 201))
    assert not set(seqs) & lost


@READ_PATHS
def test_drop_oldest_reports_exact_runs_and_spares_the_batch_in_flight(
    tmp_path: Path, memory_bytes: int
) -> None:
    spool, drops, metrics = open_spool(spool_cfg(tmp_path, max_bytes=64 << 10,
                                                 segment_bytes=16 << 10), memory_bytes)
    fill(spool, 1, 100)
    in_flight = spool.read_batch(10, 1 << 20)  # pins the oldest segment
    results = fill(spool, 101, 600)
    assert all(results)
    losses = drops.take()
    lost = {s for loss in losses for s in range(loss.first_seq, loss.last_seq + 1)}
    assert all(loss.reason == "drop-oldest" for loss in losses)
    assert sample(metrics, "audit_collector_spool_dropped_total", reason="drop-oldest") == \
        len(lost)
    assert not lost & {r.seq for r in in_flight}
    assert losses[-1].last_data == PAYLOAD % losses[-1].last_seq
    spool.ack(in_flight)
    remaining = read_all(spool)
    assert sorted(set(remaining) | lost | set(range(1, 11))) == list(range(1, 601))
    assert sum(p.stat().st_size for p in segments(tmp_path)) <= 64 << 10


def test_drop_newest_refuses_and_reports_one_run(tmp_path: Path) -> None:
    spool, drops, _ = open_spool(spool_cfg(tmp_path, max_bytes=64 << 10,
                                           segment_bytes=16 << 10, full_policy="drop-newest"))
    results = fill(spool, 1, 600)
    accepted = [seq for seq, ok in zip(range(1, 601), results) if ok]
    assert accepted == list(range(1, len(accepted) + 1))
    [loss] = drops.take()
    assert (loss.first_seq, loss.last_seq, loss.reason) == (len(accepted) + 1, 600,
                                                            "drop-newest")
    assert spool.append(601, "report", b"{}", report=True)  # the reserve takes reports
    spool.flush()
    assert read_all(spool) == [*accepted, 601]


@pytest.mark.parametrize("policy", ["drop-oldest", "drop-newest"])
def test_full_disk_applies_the_policy(tmp_path: Path, policy: str) -> None:
    with small_tmpfs(tmp_path / "fs", "256k") as fs:
        # max_bytes above the file system size: ENOSPC comes first.
        spool, drops, _ = open_spool(spool_cfg(fs / "spool", max_bytes=8 << 20,
                                               segment_bytes=32 << 10, full_policy=policy))
        results = fill(spool, 1, 2000)
        losses = drops.take()
        lost = {s for loss in losses for s in range(loss.first_seq, loss.last_seq + 1)}
        accepted = {seq for seq, ok in zip(range(1, 2001), results) if ok}
        kept = set(read_all(spool))
        spool.close()
        assert lost, "the file system must have filled"
        assert kept | lost == set(range(1, 2001)) and not kept & lost
        if policy == "drop-newest":
            assert kept == accepted and min(lost) > max(kept)
            assert {loss.reason for loss in losses} == {"drop-newest"}
        else:
            assert max(kept) == 2000  # the newest records survive
            assert {loss.reason for loss in losses} == {"drop-oldest"}
        assert os.statvfs(fs).f_bavail >= 0


def test_start_on_a_full_disk_refuses_then_recovers(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "fs", "64k") as fs:
        filler = fs / "filler"
        with contextlib.suppress(OSError), open(filler, "wb") as handle:
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
        spool, drops, _ = open_spool(spool_cfg(fs / "spool" if (fs / "spool").exists() else fs,
                                               full_policy="drop-newest"))
        assert fill(spool, 1, 3) == [False, False, False]
        [loss] = drops.take()
        assert (loss.first_seq, loss.last_seq) == (1, 3)
        filler.unlink()
        assert fill(spool, 4, 5) == [True, True]
        assert read_all(spool) == [4, 5]
        spool.close()


@READ_PATHS
def test_a_batch_cut_by_bytes_never_skips_the_rest_of_its_segment(tmp_path: Path,
                                                                 memory_bytes: int) -> None:
    """Regression: a batch that hit its byte budget inside one segment went on to take a
    smaller record from the next segment, and its ack moved the cursor past the records
    left in between: acknowledged, never shipped (found by bench.exec_storm)."""
    spool = Spool(spool_cfg(tmp_path, segment_bytes=4 << 10), memory_bytes=memory_bytes)
    big, small = b"b" * 2000, b"s" * 100
    for seq, data in enumerate([big, big, small, big, big], start=1):
        spool.append(seq, f"id-{seq}", data)
    spool.flush()
    assert len(segments(tmp_path)) == 3  # [1, 2] [3, 4] [5]
    batch = spool.read_batch(100, 2500)  # 2 does not fit; 3 would, but lies beyond 2
    assert [r.seq for r in batch] == [1]
    spool.ack(batch)
    assert spool.pending()[0] == 4
    assert read_all(spool) == [2, 3, 4, 5]


@READ_PATHS
def test_concurrent_appends_and_byte_cut_batches_ship_every_record_once(
    tmp_path: Path, memory_bytes: int
) -> None:
    """Writer and reader race across many rotations with batches cut by count and by bytes;
    every sequence comes out exactly once, in order, and the spool ends empty."""
    spool = Spool(spool_cfg(tmp_path, segment_bytes=8 << 10, max_bytes=64 << 20),
                  memory_bytes=memory_bytes)
    rng = random.Random(7)
    total, shipped = 6000, []
    done = threading.Event()
    deadline = time.monotonic() + 60  # a safety net: a loaded machine takes 10-40 s

    def reader() -> None:
        reader_rng = random.Random(11)
        while not (done.is_set() and spool.pending() == (0, 0)) and time.monotonic() < deadline:
            batch = spool.read_batch(reader_rng.randint(1, 60), reader_rng.randint(50, 9000))
            if not batch:
                spool.wait_for_data(0.01)
                continue
            shipped.extend(r.seq for r in batch)
            spool.ack(batch)

    thread = threading.Thread(target=reader)
    thread.start()
    for seq in range(1, total + 1):
        spool.append(seq, f"id-{seq}", b"x" * rng.choice((40, 300, 1200, 3000)))
        if rng.random() < 0.05:
            spool.flush()
    spool.flush()
    done.set()
    thread.join(90)
    assert not thread.is_alive()
    assert shipped == list(range(1, total + 1))
    assert spool.pending() == (0, 0)


def test_ack_refuses_a_batch_with_a_hole(tmp_path: Path) -> None:
    spool = Spool(spool_cfg(tmp_path))
    fill(spool, 1, 5)
    batch = spool.read_batch(5, 1 << 20)
    with pytest.raises(ValueError, match="not contiguous at sequence 3"):
        spool.ack([batch[0], batch[2]])
    assert spool.pending()[0] == 5
    assert read_all(spool) == [1, 2, 3, 4, 5]


# --------------------------------------------------------------------------- memory fast path


def reads(metrics: DeliveryMetrics) -> tuple[float, float]:
    """(records read from memory, records read from disk)."""
    return (sample(metrics, "audit_collector_spool_read_records_total", source="memory"),
            sample(metrics, "audit_collector_spool_read_records_total", source="disk"))


def on_disk(path: Path) -> list[Record]:
    return [item for seg in segments(path)
            for item in scan_segment(seg.read_bytes(), int(seg.name[4:16]))
            if isinstance(item, Record)]


def test_live_batches_come_from_memory_as_they_are_on_disk(tmp_path: Path) -> None:
    spool, _, metrics = open_spool(spool_cfg(tmp_path, segment_bytes=8 << 10))
    fill(spool, 1, 120)  # several segments
    batch = spool.read_batch(1000, 1 << 20)
    assert batch == on_disk(tmp_path)  # same segment, offsets, sequence, id and bytes
    assert reads(metrics) == (120, 0)
    spool.ack(batch)
    fill(spool, 121, 130)
    assert read_all(spool) == list(range(121, 131))
    assert reads(metrics) == (130, 0)


def test_after_a_restart_the_backlog_is_read_from_disk_then_memory_takes_over(
    tmp_path: Path,
) -> None:
    spool = Spool(spool_cfg(tmp_path))
    fill(spool, 1, 300)
    spool.ack(spool.read_batch(100, 1 << 20))
    spool.close()
    again, _, metrics = open_spool(spool_cfg(tmp_path))
    fill(again, 301, 350)
    assert read_all(again) == list(range(101, 351))
    assert reads(metrics) == (50, 200)  # what the last process wrote comes from disk


def test_a_backlog_larger_than_memory_is_read_from_disk_up_to_what_memory_holds(
    tmp_path: Path,
) -> None:
    record = len(PAYLOAD % 100)
    spool, drops, metrics = open_spool(spool_cfg(tmp_path), memory_bytes=20 * record)
    fill(spool, 1, 100)  # nothing read meanwhile (an outage)
    shipped = []
    while batch := spool.read_batch(10, 1 << 20):
        shipped.extend(r.seq for r in batch)
        spool.ack(batch)
    assert shipped == list(range(1, 101))
    assert reads(metrics) == (20, 80)
    assert drops.take() == [] and spool.pending() == (0, 0)


def test_records_in_memory_are_shipped_intact_when_their_file_is_damaged(
    tmp_path: Path,
) -> None:
    """The memory copy is the record as written; damage on disk after that (which a disk
    read would skip and report lost) loses nothing while memory still holds it."""
    spool, drops, _ = open_spool(spool_cfg(tmp_path, segment_bytes=1 << 20))
    fill(spool, 1, 50)
    rewrite(segments(tmp_path)[0], lambda raw: raw.__setitem__(slice(HEADER_SIZE, 900),
                                                               b"\xee" * (900 - HEADER_SIZE)))
    assert read_all(spool) == list(range(1, 51))
    assert drops.take() == []
