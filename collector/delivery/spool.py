"""Durable on-disk spool between the capture loop and the Elasticsearch shipper.

Layout: ``DIR/seg-<id>.spool`` segment files, each an 8-byte magic followed by records::

    u32 body length | u32 CRC32(body) | body = u64 sequence | u16 id length | id | document

and ``DIR/ack.json`` = {"segment": S, "offset": O}: every record before offset O of segment S,
and every record of a lower segment, is acknowledged. A segment is deleted once all its
records are acknowledged (or dropped); a missing segment therefore never needs an ack.

* Open: every segment is scanned; a torn tail (SIGKILL or power loss mid-write) of the newest
  segment is cut off, a corrupt region inside an older segment makes the rest of that
  segment unreadable; both are counted, and records known to be lost by the second are
  reported like policy drops. Start-up always continues.
* Bound: ``max_bytes`` over all segment files. ``drop-oldest`` deletes the oldest segment
  that is neither being written nor being shipped; ``drop-newest`` refuses the new record.
  A full disk (ENOSPC/EDQUOT) applies the same policy. Every dropped record is counted and
  its sequence range handed to the loss ledger (`on_drop`) for an ``events_lost`` document.
  Loss reports may use a small reserve above ``max_bytes`` so that under ``drop-newest`` the
  report itself gets in.
* The shipper reads only records already fsynced (with ``fsync: batch``): a document that
  reached Elasticsearch is also on disk here, so after a power loss the sealer never
  re-issues a sequence whose ``_id`` is already stored.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from collector.delivery.loss import DroppedRange, DropReason, runs_of
from collector.delivery.metrics import DeliveryMetrics
from collector.delivery.settings import SpoolConfig

MAGIC = b"ACSPOOL1"
HEADER_SIZE = len(MAGIC)
RECORD_HEAD = struct.Struct("<II")  # body length, CRC32 of the body
BODY_HEAD = struct.Struct("<QH")  # sequence, id length
MAX_RECORD_BODY = 64 << 20  # larger lengths can only be garbage
REPORT_RESERVE_BYTES = 256 << 10
ACK_FILE = "ack.json"
SEGMENT_RE = re.compile(r"^seg-(\d{12})\.spool$")
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)

# Told every run of records the spool lost (under the spool's lock: it must only queue).
DropCallback = Callable[[list[DroppedRange]], None]


@dataclass(frozen=True)
class Record:
    segment: int
    offset: int
    end: int
    seq: int
    id: str
    data: bytes


@dataclass
class _Segment:
    id: int
    path: Path
    size: int  # bytes written
    readable: int  # bytes the shipper may read (fsynced, or up to a corrupt region)


@dataclass
class _OpenScan:
    last_record: Record | None = None
    corrupt_after: Record | None = None
    losses: list[DroppedRange] = field(default_factory=list)


def encode_record(seq: int, doc_id: str, data: bytes) -> bytes:
    raw_id = doc_id.encode()
    body = BODY_HEAD.pack(seq, len(raw_id)) + raw_id + data
    return RECORD_HEAD.pack(len(body), zlib.crc32(body)) + body


def _decode_body(segment: int, offset: int, end: int, body: bytes) -> Record:
    seq, id_len = BODY_HEAD.unpack_from(body)
    id_end = BODY_HEAD.size + id_len
    return Record(segment, offset, end, seq, body[BODY_HEAD.size:id_end].decode(),
                  body[id_end:])


def iter_records(buf: bytes, base: int, segment: int) -> Iterator[Record]:
    """Valid records in buf (which starts at file offset base); stops at the first bad one."""
    pos = 0
    while pos + RECORD_HEAD.size <= len(buf):
        length, crc = RECORD_HEAD.unpack_from(buf, pos)
        start, stop = pos + RECORD_HEAD.size, pos + RECORD_HEAD.size + length
        if length < BODY_HEAD.size or length > MAX_RECORD_BODY or stop > len(buf):
            return
        body = buf[start:stop]
        if zlib.crc32(body) != crc:
            return
        try:
            yield _decode_body(segment, base + pos, base + stop, body)
        except (struct.error, UnicodeDecodeError):
            return
        pos = stop


def _require_contiguous(batch: list[Record]) -> None:
    """An ack moves the cursor to the batch's last record: a hole would be acknowledged
    without being shipped. Fail loudly instead (the records stay in the spool)."""
    for prev, rec in zip(batch, batch[1:]):
        same_segment = rec.segment == prev.segment and rec.offset == prev.end
        next_segment = rec.segment > prev.segment and rec.offset == HEADER_SIZE
        if not (same_segment or next_segment):
            raise ValueError(f"spool batch is not contiguous at sequence {rec.seq}")


class Spool:
    """Thread-safe: the pipeline appends and flushes, the shipper reads and acknowledges."""

    def __init__(self, cfg: SpoolConfig, on_drop: DropCallback | None = None,
                 metrics: DeliveryMetrics | None = None) -> None:
        self._cfg = cfg
        self._on_drop = on_drop or (lambda runs: None)
        self._metrics = metrics or DeliveryMetrics()
        self._dir = Path(cfg.dir)
        self._lock = threading.Lock()
        self._data_ready = threading.Condition(self._lock)
        self._segments: dict[int, _Segment] = {}
        self._pinned: set[int] = set()
        self._fd: int | None = None
        self._unacked_records = 0
        self._acked_seq = 0
        self._dir.mkdir(parents=True, exist_ok=True)
        self._cursor = self._load_ack()
        scan = self._scan_segments()
        self.last_record: Record | None = scan.last_record
        self._record_losses(scan.losses)
        self._open_active()
        self._metrics.read_at_scrape(self._metrics.spool_bytes, self._locked_total_bytes)
        self._metrics.read_at_scrape(self._metrics.spool_records, lambda: self._unacked_records)

    # ------------------------------------------------------------------ public API

    def append(self, seq: int, doc_id: str, data: bytes, report: bool = False) -> bool:
        """Append one record; False when it was refused (the loss is recorded).

        report=True marks a loss report, which may use a small reserve above max_bytes.
        """
        rec = encode_record(seq, doc_id, data)
        with self._lock:
            refused = self._write_with_policy(rec, report)
            if refused is None:
                self._unacked_records += 1
                if self._cfg.fsync == "none":
                    self._data_ready.notify_all()
                return True
            self._record_losses([DroppedRange(seq, seq, refused, data)])
            return False

    def can_take(self, nbytes: int, report: bool = False) -> bool:
        """Whether a record of about nbytes can go in (drop-oldest can always make room)."""
        with self._lock:
            if self._cfg.full_policy == "drop-oldest":
                return True
            return self._total_bytes() + nbytes <= self._limit(report)

    def flush(self) -> None:
        """Make appended records durable (per fsync policy) and visible to the shipper."""
        with self._lock:
            self._sync_active()
            self._data_ready.notify_all()

    def wait_for_data(self, timeout: float) -> bool:
        with self._lock:
            if self._has_readable():
                return True
            self._data_ready.wait(timeout)
            return self._has_readable()

    def wake(self) -> None:
        with self._lock:
            self._data_ready.notify_all()

    def pending(self) -> tuple[int, int]:
        """(unacknowledged records, readable bytes not yet acknowledged)."""
        with self._lock:
            return self._unacked_records, self._readable_bytes()

    def read_batch(self, max_docs: int, max_bytes: int) -> list[Record]:
        """The oldest unacknowledged records; their segments are kept from drop-oldest
        until `ack` or `release`.

        Reading happens outside the lock (segments are append-only below their readable
        end, and pinned segments are never deleted), so `append` is not held up by it.
        """
        with self._lock:
            plan = [(seg, self._cursor[1] if seg.id == self._cursor[0] else HEADER_SIZE,
                     seg.readable) for seg in self._segments_from_cursor()]
            plan = [(seg, start, end) for seg, start, end in plan if start < end]
            self._pinned.update(seg.id for seg, _, _ in plan)
        batch: list[Record] = []
        budget = max_bytes
        for seg, start, end in plan:
            got = self._read_records(seg, start, end, max_docs - len(batch), budget, bool(batch))
            batch.extend(got)
            budget -= sum(len(r.data) for r in got)
            # A batch must be contiguous from the cursor: `ack` moves the cursor to its last
            # record, so a segment left part-read ends the batch.
            if not got or got[-1].end < end or len(batch) >= max_docs or budget <= 0:
                break
        with self._lock:
            used = {r.segment for r in batch}
            self._pinned.difference_update(seg.id for seg, _, _ in plan if seg.id not in used)
        return batch

    def ack(self, batch: list[Record]) -> None:
        """Acknowledge a batch returned by `read_batch` (all of it)."""
        if not batch:
            return
        _require_contiguous(batch)
        last = batch[-1]
        with self._lock:
            self._pinned.clear()
            if (last.segment, last.end) <= self._cursor:
                return
            self._cursor = (last.segment, last.end)
            self._acked_seq = max(self._acked_seq, last.seq)
            self._unacked_records = max(0, self._unacked_records - len(batch))
            self._delete_acked_segments()
            self._save_ack()

    def release(self) -> None:
        with self._lock:
            self._pinned.clear()

    @property
    def acked_seq(self) -> int:
        """Highest sequence acknowledged by this process (0 before the first ack)."""
        return self._acked_seq

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
            self._save_ack()

    # ------------------------------------------------------------------ open

    def _load_ack(self) -> tuple[int, int]:
        try:
            state = orjson.loads((self._dir / ACK_FILE).read_bytes())
            return int(state["segment"]), int(state["offset"])
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return 0, 0

    def _segment_ids(self) -> list[int]:
        ids = []
        for entry in os.listdir(self._dir):
            match = SEGMENT_RE.match(entry)
            if match:
                ids.append(int(match.group(1)))
        return sorted(ids)

    def _path(self, seg_id: int) -> Path:
        return self._dir / f"seg-{seg_id:012d}.spool"

    def _scan_segments(self) -> _OpenScan:
        scan = _OpenScan()
        ids = self._segment_ids()
        for seg_id in ids:
            if seg_id < self._cursor[0]:
                self._unlink(self._path(seg_id))  # acknowledged before a crash
                continue
            self._scan_one(seg_id, is_newest=seg_id == ids[-1], scan=scan)
        self._cursor = self._normalized_cursor()
        return scan

    def _scan_one(self, seg_id: int, is_newest: bool, scan: _OpenScan) -> None:
        path = self._path(seg_id)
        buf = path.read_bytes()
        if buf[:HEADER_SIZE] != MAGIC:
            self._metrics.spool_corrupt_bytes.inc(len(buf))
            self._unlink(path)
            return
        good_end = HEADER_SIZE
        acked_to = self._cursor[1] if seg_id == self._cursor[0] else 0
        for rec in iter_records(buf[HEADER_SIZE:], HEADER_SIZE, seg_id):
            self._note_corrupt_gap(scan, rec)
            good_end = rec.end
            scan.last_record = rec
            if rec.offset >= acked_to:
                self._unacked_records += 1
        if good_end < len(buf):
            self._metrics.spool_corrupt_bytes.inc(len(buf) - good_end)
            if is_newest:
                self._truncate(path, good_end)  # torn tail: never durable, never shipped
            else:
                scan.corrupt_after = scan.last_record
        size = good_end if is_newest else len(buf)
        self._segments[seg_id] = _Segment(seg_id, path, size, good_end)

    @staticmethod
    def _note_corrupt_gap(scan: _OpenScan, rec: Record) -> None:
        """Records behind a corrupt region of an older segment are lost: their sequences lie
        between that segment's last good record and the next good record."""
        before = scan.corrupt_after
        scan.corrupt_after = None
        if before is not None and rec.seq > before.seq + 1:
            scan.losses.append(DroppedRange(before.seq + 1, rec.seq - 1, "corrupt"))

    def _normalized_cursor(self) -> tuple[int, int]:
        seg_id, offset = self._cursor
        for sid in sorted(self._segments):
            if sid == seg_id:
                return sid, max(HEADER_SIZE, min(offset, self._segments[sid].readable))
            if sid > seg_id:
                return sid, HEADER_SIZE
        return seg_id, offset

    def _open_active(self) -> None:
        if self._segments:
            active = self._segments[max(self._segments)]
            self._fd = os.open(active.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            return
        try:
            self._create_first_segment()
        except OSError as exc:
            if exc.errno not in FULL_ERRNOS:
                raise
            # Disk full at start: records are refused (and reported) until space appears.

    def _create_first_segment(self) -> None:
        """The first segment of an empty spool, at the ack cursor (never below it: records
        there would count as acknowledged)."""
        self._create_segment(max(self._cursor[0], 1))
        self._cursor = (max(self._segments), HEADER_SIZE)

    # ------------------------------------------------------------------ writing

    def _limit(self, report: bool) -> int:
        return self._cfg.max_bytes + (REPORT_RESERVE_BYTES if report else 0)

    def _total_bytes(self) -> int:
        return sum(seg.size for seg in self._segments.values())

    def _active(self) -> _Segment:
        return self._segments[max(self._segments)]

    def _write_with_policy(self, rec: bytes, report: bool) -> DropReason | None:
        """Write rec, dropping old segments when the policy allows; the refusal reason."""
        if not self._segments:
            try:
                self._create_first_segment()
            except OSError as exc:
                return self._refusal_reason() if exc.errno in FULL_ERRNOS else "write-error"
        while True:
            if not self._rotate_if_needed(len(rec)) or (
                self._total_bytes() + len(rec) > self._limit(report)
            ):
                if self._drop_for_space():
                    continue
                return self._refusal_reason()
            try:
                self._write(rec)
                return None
            except OSError as exc:
                if exc.errno not in FULL_ERRNOS:
                    return "write-error"
                if self._drop_for_space():
                    continue
                return self._refusal_reason()

    def _refusal_reason(self) -> DropReason:
        return "drop-newest" if self._cfg.full_policy == "drop-newest" else "full"

    def _drop_for_space(self) -> bool:
        return self._cfg.full_policy == "drop-oldest" and self._drop_oldest()

    def _write(self, rec: bytes) -> None:
        active = self._active()
        assert self._fd is not None
        written = 0
        try:
            while written < len(rec):
                written += os.write(self._fd, rec[written:])
        except OSError:
            # A partial record would look like a torn tail: cut it off now.
            self._truncate(active.path, active.size)
            raise
        active.size += len(rec)
        if self._cfg.fsync == "none":
            active.readable = active.size

    def _rotate_if_needed(self, rec_len: int) -> bool:
        """Start a new segment when the record would overflow the active one; False when
        the new segment could not be created (disk full)."""
        active = self._active()
        if active.size + rec_len <= self._cfg.segment_bytes or active.size <= HEADER_SIZE:
            return True
        self._sync_active()
        try:
            self._create_segment(active.id + 1)
        except OSError as exc:
            if exc.errno in FULL_ERRNOS:
                return False
            raise
        self._delete_acked_segments()
        return True

    def _create_segment(self, seg_id: int) -> None:
        path = self._path(seg_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC,
                     0o600)
        try:
            os.write(fd, MAGIC)
        except OSError:
            os.close(fd)
            self._unlink(path)
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self._segments[seg_id] = _Segment(seg_id, path, HEADER_SIZE, HEADER_SIZE)

    def _sync_active(self) -> None:
        if not self._segments:
            return
        active = self._active()
        if active.readable >= active.size:
            return
        if self._cfg.fsync == "batch" and self._fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
        active.readable = active.size

    # ------------------------------------------------------------------ dropping

    def _drop_oldest(self) -> bool:
        """Delete the oldest segment that is neither active nor being shipped."""
        active_id = max(self._segments, default=None)
        for seg_id in sorted(self._segments):
            if seg_id == active_id or seg_id in self._pinned:
                continue
            self._drop_segment(self._segments[seg_id])
            return True
        return False

    def _drop_segment(self, seg: _Segment) -> None:
        start = self._cursor[1] if seg.id == self._cursor[0] else HEADER_SIZE
        records = self._read_all(seg, start)
        self._record_losses(runs_of(((r.seq, r.data) for r in records), "drop-oldest"))
        self._unacked_records = max(0, self._unacked_records - len(records))
        del self._segments[seg.id]
        self._unlink(seg.path)
        if self._cursor[0] == seg.id:
            self._cursor = self._normalized_cursor()

    def _record_losses(self, runs: list[DroppedRange]) -> None:
        for run in runs:
            self._metrics.spool_dropped.labels(reason=run.reason).inc(run.count)
        if runs:
            self._on_drop(runs)

    # ------------------------------------------------------------------ reading and acks

    def _segments_from_cursor(self) -> list[_Segment]:
        return [self._segments[s] for s in sorted(self._segments) if s >= self._cursor[0]]

    def _has_readable(self) -> bool:
        return self._readable_bytes() > 0

    def _readable_bytes(self) -> int:
        total = 0
        for seg in self._segments_from_cursor():
            start = self._cursor[1] if seg.id == self._cursor[0] else HEADER_SIZE
            total += max(0, seg.readable - start)
        return total

    def _read_records(
        self, seg: _Segment, start: int, end: int, max_docs: int, budget: int, have_some: bool
    ) -> list[Record]:
        if start >= end or max_docs <= 0:
            return []
        want = min(end - start, max(budget, 0) + (1 << 16))
        buf = self._pread(seg, start, want)
        out: list[Record] = []
        for rec in iter_records(buf, start, seg.id):
            if len(out) >= max_docs or (budget - len(rec.data) < 0 and (out or have_some)):
                break
            out.append(rec)
            budget -= len(rec.data)
        if not out and not have_some:
            out = self._read_one_large(seg, start, end)
        return out

    def _read_one_large(self, seg: _Segment, start: int, end: int) -> list[Record]:
        """A single record larger than the read window."""
        head = self._pread(seg, start, RECORD_HEAD.size)
        if len(head) < RECORD_HEAD.size:
            return []
        length, _ = RECORD_HEAD.unpack(head)
        buf = self._pread(seg, start, min(RECORD_HEAD.size + length, end - start))
        return list(iter_records(buf, start, seg.id))[:1]

    def _read_all(self, seg: _Segment, start: int) -> list[Record]:
        return list(iter_records(self._pread(seg, start, seg.readable - start), start, seg.id))

    @staticmethod
    def _pread(seg: _Segment, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        with open(seg.path, "rb") as handle:
            handle.seek(start)
            return handle.read(length)

    def _delete_acked_segments(self) -> None:
        if not self._segments:
            return
        active_id = max(self._segments)
        for seg_id in sorted(self._segments):
            seg = self._segments[seg_id]
            fully_acked = seg_id < self._cursor[0] or (
                seg_id == self._cursor[0] and self._cursor[1] >= seg.readable
            )
            if not fully_acked or seg_id == active_id:
                continue
            del self._segments[seg_id]
            self._unlink(seg.path)
        self._cursor = self._normalized_cursor()

    def _save_ack(self) -> None:
        path = self._dir / ACK_FILE
        tmp = path.with_suffix(".tmp")
        body = orjson.dumps({"segment": self._cursor[0], "offset": self._cursor[1]})
        try:
            with open(tmp, "wb") as handle:
                handle.write(body)
                if self._cfg.fsync == "batch":
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError:
            # Disk full: keep the ack in memory; at worst a restart replays records, which
            # Elasticsearch answers with 409 (already stored).
            self._unlink(tmp)

    # ------------------------------------------------------------------ helpers

    def _locked_total_bytes(self) -> int:
        with self._lock:
            return self._total_bytes()

    @staticmethod
    def _unlink(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    @staticmethod
    def _truncate(path: Path, size: int) -> None:
        with contextlib.suppress(OSError):
            os.truncate(path, size)
