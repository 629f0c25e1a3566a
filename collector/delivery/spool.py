"""Durable on-disk spool between the capture loop and the Elasticsearch shipper.

Layout: ``DIR/seg-<id>.spool`` segment files, each an 8-byte magic followed by records::

    u32 body length | u32 CRC32(body) | body = u64 sequence | u16 id length | id | document

and ``DIR/ack.json`` = {"segment": S, "offset": O, "seq": Q}: every record before offset O of
segment S, and every record of a lower segment, is acknowledged; Q is the sequence of the
last of them (it bounds a loss found later at the start of the spool). A segment is deleted
once all its records are acknowledged (or dropped); a missing segment never needs an ack.
DIR is 0700 and must be a real directory of this user; files are 0600.

* Open: every segment is scanned. Damage is told apart by what follows it: when an intact
  record (header and CRC) follows, the damaged range is a *hole*, skipped by the reader, and
  the sequences between its neighbours are reported lost (reason ``corrupt``); when nothing
  intact follows, the newest segment has a *torn tail* (SIGKILL or power loss mid-write:
  never durable, never shipped), which is cut; in an older segment the rest is unreadable
  and its sequences are bounded by the next intact record. A segment with nothing intact is
  deleted and bounded the same way. An ack that is not on a record boundary resumes at the
  start of the record it falls in (replayed: Elasticsearch answers 409); an ack beyond the
  last segment deletes nothing and resumes at the first record. Everything found is logged
  once and kept in `findings`; start-up always continues.
* Bound: ``max_bytes`` over all segment files. ``drop-oldest`` deletes the oldest segment
  that is neither being written nor being shipped; ``drop-newest`` refuses the new record.
  A full disk (ENOSPC/EDQUOT) applies the same policy. Every dropped record is counted and
  its sequence range handed to the loss ledger (`on_drop`, one call per append with the
  runs merged) for an ``events_lost`` document. Loss reports may use a small reserve above
  ``max_bytes`` so that under ``drop-newest`` the report itself gets in.
* Any other error (EMFILE at rotation, EIO, EACCES, EROFS, a record that cannot be encoded)
  refuses the record with reason ``write-error``: `append` never raises, since it runs inside
  the ring-buffer callback, where an exception loses the record silently. The next append
  tries again; the log says once when writing fails and once when it works again.
* The shipper reads only records already fsynced (with ``fsync: batch``): a document that
  reached Elasticsearch is also on disk here, so after a power loss the sealer never
  re-issues a sequence whose ``_id`` is already stored. A reader that finds no record at
  the cursor (the file changed underneath) skips to the next intact one and reports.
* Memory fast path: the newest records appended by this process (up to ``memory_bytes`` of
  documents) are also kept in memory, and a batch that starts at the cursor is served from
  there instead of being read back from disk. Everything else is unchanged: the same
  records, only once fsynced, pinned, acknowledged through the same cursor. The disk is
  read for a backlog older than what memory holds, and after a restart.
* Syncing: `flush` fsyncs on the caller's thread; `flush_soon` (the pipeline's tick, i.e.
  the capture thread) hands the fsync to a syncer thread, so the capture loop does not wait
  on the disk. The syncer fsyncs a duplicate of the active segment's descriptor and only
  then makes the bytes written before the call readable: the rule above holds unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import stat
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import orjson

from collector.delivery.loss import DroppedRange, DropReason, runs_of
from collector.delivery.metrics import DeliveryMetrics
from collector.delivery.settings import SpoolConfig
from collector.delivery.statefiles import (
    open_private_dir,
    read_file,
    remove_stale_temps,
    replace_file,
)

log = logging.getLogger(__name__)

MAGIC = b"ACSPOOL1"
HEADER_SIZE = len(MAGIC)
RECORD_HEAD = struct.Struct("<II")  # body length, CRC32 of the body
BODY_HEAD = struct.Struct("<QH")  # sequence, id length
MAX_RECORD_BODY = 64 << 20  # larger lengths can only be garbage
MAX_ID_BYTES = 255  # see _CANDIDATE
REPORT_RESERVE_BYTES = 256 << 10
# Documents kept in memory for the shipper: a few batches at full rate. Past it (an outage)
# the oldest fall back to disk reads; it bounds the memory an outage adds.
MEMORY_BYTES = 4 << 20
ACK_FILE = "ack.json"
ACK_MAX_BYTES = 4096
SEGMENT_RE = re.compile(r"^seg-(\d{12})\.spool$")
MAX_SEGMENT_ID = 10**11  # far beyond any spool's life; a larger id in the ack is garbage
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
ODD_LOG_INTERVAL_S = 60.0
MAX_FINDINGS = 100

# A record's id length is a u16 below 256 followed by a printable ASCII id: the bytes
# (n, 0, c) 16 bytes into the record. A regex finds these candidates (in C, overlapping) when
# resynchronising after damage; JSON never holds a raw NUL, so documents yield none.
_CANDIDATE = re.compile(rb"(?=[\x01-\xff]\x00[\x21-\x7e])")
_ID_LEN_AT = RECORD_HEAD.size + 8

# Told every run of records the spool lost (under the spool's lock: it must only queue).
DropCallback = Callable[[list[DroppedRange]], None]
_O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_O_APPEND = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC


class Record(NamedTuple):
    """One record: where it is in the spool, its sequence, _id and document. (A named tuple:
    one is made per appended event, and a frozen dataclass costs ~5x more to create.)"""

    segment: int
    offset: int
    end: int
    seq: int
    id: str
    data: bytes


@dataclass(frozen=True)
class SpoolFinding:
    """Something the spool found wrong and worked around (for the log and /health)."""

    kind: str  # ack-resync, damage, torn-tail, write-error
    detail: str


@dataclass(frozen=True)
class _Damage:
    """Bytes [start, end) of a segment that hold no intact record."""

    start: int
    end: int
    torn: bool  # at the very end, and only a partial record (or unwritten zeros)


@dataclass
class _Segment:
    id: int
    size: int  # bytes written
    readable: int  # bytes the shipper may read (fsynced, or up to a damaged tail)
    holes: list[tuple[int, int]] = field(default_factory=list)  # damage with records after

    @property
    def name(self) -> str:
        return segment_name(self.id)


@dataclass
class _Ack:
    segment: int
    offset: int
    seq: int | None


@dataclass
class _OpenScan:
    """State carried from segment to segment while the spool is opened."""

    prev_seq: int | None  # the last intact sequence seen (or the acknowledged one)
    damaged: str = ""  # where damage was seen since prev_seq (bounded by the next record)
    last_record: Record | None = None
    losses: list[DroppedRange] = field(default_factory=list)


def segment_name(seg_id: int) -> str:
    return f"seg-{seg_id:012d}.spool"


def encode_record(seq: int, doc_id: str, data: bytes) -> bytes:
    """Raises ValueError (or struct.error) for what the format cannot hold."""
    raw_id = doc_id.encode()
    if not 0 < len(raw_id) <= MAX_ID_BYTES or not 0x21 <= raw_id[0] <= 0x7E:
        raise ValueError(f"document id {doc_id[:40]!r} is not 1..{MAX_ID_BYTES} bytes "
                         "starting with a printable character")
    body = BODY_HEAD.pack(seq, len(raw_id)) + raw_id + data
    return RECORD_HEAD.pack(len(body), zlib.crc32(body)) + body


def _decode_body(segment: int, offset: int, end: int, body: bytes) -> Record:
    seq, id_len = BODY_HEAD.unpack_from(body)
    id_end = BODY_HEAD.size + id_len
    if id_end > len(body):
        raise struct.error("id beyond the body")
    return Record(segment, offset, end, seq, body[BODY_HEAD.size:id_end].decode(),
                  body[id_end:])


def record_at(buf: bytes, pos: int, base: int, segment: int) -> Record | None:
    """The intact record starting at buf[pos] (file offset base + pos), or None."""
    if pos < 0 or pos + RECORD_HEAD.size > len(buf):
        return None
    length, crc = RECORD_HEAD.unpack_from(buf, pos)
    start, stop = pos + RECORD_HEAD.size, pos + RECORD_HEAD.size + length
    if length < BODY_HEAD.size or length > MAX_RECORD_BODY or stop > len(buf):
        return None
    body = buf[start:stop]
    if zlib.crc32(body) != crc:
        return None
    try:
        return _decode_body(segment, base + pos, base + stop, body)
    except (struct.error, UnicodeDecodeError):
        return None


def iter_records(buf: bytes, base: int, segment: int) -> Iterator[Record]:
    """Intact records in buf (which starts at file offset base); stops at the first bad one."""
    pos = 0
    while (rec := record_at(buf, pos, base, segment)) is not None:
        yield rec
        pos = rec.end - base


def next_record(buf: bytes, pos: int, base: int, segment: int) -> Record | None:
    """The first intact record starting at or after buf[pos]: where reading resumes after
    damage."""
    for match in _CANDIDATE.finditer(buf, pos + _ID_LEN_AT):
        rec = record_at(buf, match.start() - _ID_LEN_AT, base, segment)
        if rec is not None:
            return rec
    return None


def _looks_torn(tail: bytes) -> bool:
    """A write cut short: less than a header, unwritten zeros, or a plausible header whose
    record runs past the end of the file."""
    if len(tail) < RECORD_HEAD.size or not tail.strip(b"\0"):
        return True
    length, _ = RECORD_HEAD.unpack_from(tail)
    return BODY_HEAD.size <= length <= MAX_RECORD_BODY and RECORD_HEAD.size + length > len(tail)


def scan_segment(buf: bytes, segment: int) -> Iterator[Record | _Damage]:
    """Intact records and damaged ranges of a whole segment file, in file order."""
    pos = HEADER_SIZE
    if buf[:HEADER_SIZE] != MAGIC:
        yield _Damage(0, min(HEADER_SIZE, len(buf)), torn=False)
    while pos < len(buf):
        rec = record_at(buf, pos, 0, segment)
        if rec is None:
            rec = next_record(buf, pos + 1, 0, segment)
            if rec is None:
                yield _Damage(pos, len(buf), torn=_looks_torn(buf[pos:]))
                return
            yield _Damage(pos, rec.offset, torn=False)
        yield rec
        pos = rec.end


def _coalesce(runs: list[DroppedRange]) -> list[DroppedRange]:
    """Contiguous runs of one reason as one run (one events_lost document for them)."""
    out: list[DroppedRange] = []
    for run in runs:
        last = out[-1] if out else None
        if last and last.reason == run.reason and last.last_seq + 1 == run.first_seq:
            out[-1] = DroppedRange(last.first_seq, run.last_seq, run.reason, run.last_data)
        else:
            out.append(run)
    return out


def _lost_between(prev_seq: int | None, next_seq: int) -> DroppedRange | None:
    if prev_seq is None or next_seq <= prev_seq + 1:
        return None
    return DroppedRange(prev_seq + 1, next_seq - 1, "corrupt")


def _describe(run: DroppedRange | None, prev_seq: int | None, next_seq: int) -> str:
    if run is not None:
        return f"sequences {run.first_seq}..{run.last_seq} lost"
    if prev_seq is None:
        return f"records before seq {next_seq} unreadable (no earlier sequence to bound them)"
    return "no sequence lost"


class _NoRoom(Exception):
    """The record does not fit under max_bytes."""


class Spool:
    """Thread-safe: the pipeline appends and flushes, the shipper reads and acknowledges."""

    def __init__(self, cfg: SpoolConfig, on_drop: DropCallback | None = None,
                 metrics: DeliveryMetrics | None = None,
                 memory_bytes: int = MEMORY_BYTES) -> None:
        self._cfg = cfg
        self._on_drop = on_drop or (lambda runs: None)
        self._metrics = metrics or DeliveryMetrics()
        self._dir = Path(cfg.dir)
        self._lock = threading.Lock()
        self._data_ready = threading.Condition(self._lock)
        self._segments: dict[int, _Segment] = {}
        self._pinned: set[int] = set()
        self._fd: int | None = None
        self._rotate_next = False  # the active file may hold a partial record: start anew
        self._unacked_records = 0
        self._acked_seq = 0
        self._cursor_seq: int | None = None  # sequence of the last record before the cursor
        self._gap_after: int | None = None  # damage after this sequence, end not known yet
        self._write_error: str | None = None
        self._refused_since_error = 0
        self._odd_logged_at = -ODD_LOG_INTERVAL_S
        self._drops: list[DroppedRange] = []
        # The newest appended records, contiguous up to the end of the active segment.
        self._recent: deque[Record] = deque()
        self._recent_bytes = 0
        self._memory_bytes = memory_bytes
        self.findings: deque[SpoolFinding] = deque(maxlen=MAX_FINDINGS)
        self._sync_wanted = threading.Event()
        self._syncer: threading.Thread | None = None
        self._closing = False
        self._dir_fd = open_private_dir(self._dir, "spool.dir")
        remove_stale_temps(self._dir_fd, ACK_FILE)
        self._cursor = (0, 0)
        scan = self._open_segments()
        self.last_record: Record | None = scan.last_record
        self._gap_after = scan.prev_seq if scan.damaged else None
        self._record_losses(scan.losses)
        with self._lock:
            try:
                self._open_active()
            except OSError as exc:  # refused (and reported) per record until it works
                self._write_failed(exc)
        self._metrics.read_at_scrape(self._metrics.spool_bytes, self._locked_total_bytes)
        self._metrics.read_at_scrape(self._metrics.spool_records, lambda: self._unacked_records)

    # ------------------------------------------------------------------ public API

    def append(self, seq: int, doc_id: str, data: bytes, report: bool = False) -> bool:
        """Append one record; False when it was refused (the loss is recorded). Never raises.

        report=True marks a loss report, which may use a small reserve above max_bytes.
        """
        with self._lock:
            try:
                taken = self._append_locked(seq, doc_id, data, report)
                self._record_losses(self._take_drops())
            except Exception:  # a bug must not vanish silently in a ctypes callback
                self._log_odd(log.exception, "spool: unexpected error appending seq %d", seq)
                return False
            return taken

    def append_many(self, records: Sequence[tuple[int, str, bytes]]) -> list[bool]:
        """Append records in order, in one write(2) when they all fit the active segment
        and the limit (else, or when that write fails, one by one as `append` does): per
        record, whether it was taken. Never raises."""
        with self._lock:
            try:
                taken = self._append_run_locked(records)
                if taken is None:
                    taken = [self._append_locked(*rec, report=False) for rec in records]
                self._record_losses(self._take_drops())
            except Exception:  # a bug must not vanish silently in a ctypes callback
                self._log_odd(log.exception, "spool: unexpected error appending %d records",
                              len(records))
                return [False] * len(records)
            return taken

    def _append_run_locked(self, records: Sequence[tuple[int, str, bytes]]) -> list[bool] | None:
        """All of records in one write, or None when they must go one by one (a record the
        format cannot hold, a segment or size limit in the way, a failed write)."""
        if len(records) < 2 or self._fd is None or self._rotate_next:
            return None
        try:
            encoded = [encode_record(seq, doc_id, data) for seq, doc_id, data in records]
        except (ValueError, struct.error):
            return None  # the single path names the record it cannot store
        run = b"".join(encoded)
        active = self._active()
        if (active.size + len(run) > self._cfg.segment_bytes
                or self._total_bytes() + len(run) > self._limit(False)):
            return None
        try:
            self._write(run)
        except OSError:
            return None  # cut off again by _write: each record meets the error on its own
        self._write_worked()
        offset = active.size - len(run)
        for (seq, doc_id, data), rec in zip(records, encoded):
            offset += len(rec)
            self._remember_at(active.id, offset - len(rec), offset, seq, doc_id, data)
        self._count_written(len(records))
        return [True] * len(records)

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

    def flush_soon(self) -> None:
        """Like `flush`, with the fsync done by the syncer thread (the records become
        readable once it is done); without fsync there is nothing to wait for."""
        if self._cfg.fsync != "batch":
            self.flush()
            return
        if self._syncer is None:
            self._syncer = threading.Thread(target=self._sync_loop, name="spool-sync",
                                            daemon=True)
            self._syncer.start()
        self._sync_wanted.set()

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

    @property
    def write_error(self) -> str | None:
        """Why records are being refused right now (None while writing works)."""
        return self._write_error

    def read_batch(self, max_docs: int, max_bytes: int) -> list[Record]:
        """The oldest unacknowledged records; their segments are kept from drop-oldest
        until `ack` or `release`.

        Reading happens outside the lock (segments are append-only below their readable
        end, and pinned segments are never deleted), so `append` is not held up by it.
        """
        batch, resynced = self._read_batch(max_docs, max_bytes)
        if resynced:
            batch, _ = self._read_batch(max_docs, max_bytes)
        return batch

    def _read_batch(self, max_docs: int, max_bytes: int) -> tuple[list[Record], bool]:
        """A batch, and whether the cursor had to skip damage (then read again)."""
        with self._lock:
            batch = self._memory_batch(max_docs, max_bytes)
            if batch:
                self._pinned.update(r.segment for r in batch)
                self._close_gap(batch)
                self._metrics.spool_reads.labels(source="memory").inc(len(batch))
                return batch, False
            plan = self._read_plan()
            self._pinned.update(seg.id for seg, _, _ in plan)
        batch: list[Record] = []
        budget = max_bytes
        for seg, start, end in plan:
            got = self._read_records(seg, start, end, max_docs - len(batch), budget, bool(batch))
            batch.extend(got)
            budget -= sum(len(r.data) for r in got)
            # A batch must be contiguous from the cursor: `ack` moves the cursor to its last
            # record, so a segment left part-read (or cut by a hole) ends the batch.
            if (not got or got[-1].end < seg.readable or len(batch) >= max_docs
                    or budget <= 0):
                break
        resynced = not batch and bool(plan) and self._resync_at_cursor(*plan[0])
        self._metrics.spool_reads.labels(source="disk").inc(len(batch))
        with self._lock:
            used = {r.segment for r in batch}
            self._pinned.difference_update(seg.id for seg, _, _ in plan if seg.id not in used)
            if batch:
                self._close_gap(batch)
        return batch, resynced

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
            self._cursor_seq = last.seq
            self._acked_seq = max(self._acked_seq, last.seq)
            self._unacked_records = max(0, self._unacked_records - len(batch))
            self._delete_acked_segments()
            self._forget_read()
            self._save_ack()

    def release(self) -> None:
        with self._lock:
            self._pinned.clear()

    @property
    def acked_seq(self) -> int:
        """Highest sequence acknowledged by this process (0 before the first ack)."""
        return self._acked_seq

    def close(self) -> None:
        if self._syncer is not None:
            self._closing = True
            self._sync_wanted.set()
            self._syncer.join()
        with self._lock:
            self._recent.clear()
            self._recent_bytes = 0
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
            if self._dir_fd < 0:
                return
            self._save_ack()
            os.close(self._dir_fd)
            self._dir_fd = -1

    # ------------------------------------------------------------------ open

    def _open_segments(self) -> _OpenScan:
        ids = self._segment_ids()
        ack = self._load_ack(ids)
        self._cursor = (ack.segment, ack.offset) if ack else (0, 0)
        self._cursor_seq = ack.seq if ack else None
        scan = _OpenScan(prev_seq=self._cursor_seq)
        for seg_id in ids:
            if seg_id < self._cursor[0]:
                self._unlink(segment_name(seg_id))  # acknowledged before a crash
                continue
            self._open_one(seg_id, seg_id == ids[-1], scan)
        self._cursor = self._normalized_cursor()
        if scan.damaged:
            self._finding("damage", f"{scan.damaged}: the sequences after "
                          f"{scan.prev_seq} in it are reported once the next record is read")
        scan.losses = _coalesce(scan.losses)
        return scan

    def _load_ack(self, ids: list[int]) -> _Ack | None:
        """The saved cursor, or None (start at the first record) when there is none or it
        cannot be right: then nothing is deleted on its account."""
        try:
            state = orjson.loads(read_file(self._dir_fd, ACK_FILE, ACK_MAX_BYTES))
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            return self._ack_resync(f"{ACK_FILE} is unreadable ({exc})")
        ack = _valid_ack(state)
        if ack is None:
            return self._ack_resync(f"{ACK_FILE} holds no valid cursor: {_short(state)}")
        if ids and ack.segment > ids[-1]:
            return self._ack_resync(f"{ACK_FILE} points at segment {ack.segment}, beyond the "
                                    f"last one ({ids[-1]})")
        return ack

    def _ack_resync(self, why: str) -> None:
        self._finding("ack-resync", f"{why}; every record is shipped again from the first "
                      "(Elasticsearch answers 409 for those it has)")
        return None

    def _open_one(self, seg_id: int, is_newest: bool, scan: _OpenScan) -> None:
        name = segment_name(seg_id)
        try:
            buf = self._read_segment_file(name)
        except OSError as exc:
            log.warning("spool: ignoring %s: %s", name, exc)
            if exc.errno == errno.ELOOP:
                self._unlink(name)  # a planted symlink: never ours
            return
        if is_newest and len(buf) <= HEADER_SIZE and MAGIC.startswith(buf):
            # No record yet (or killed before its header was written): nothing to lose. An
            # older segment is never empty: it was fsynced before the next one was created.
            if buf == MAGIC:
                self._segments[seg_id] = _Segment(seg_id, len(buf), len(buf))
            else:
                self._unlink(name)
            return
        seg = _Segment(seg_id, len(buf), len(buf))
        acked_to = self._cursor[1] if seg_id == self._cursor[0] else 0
        records = 0
        for item in scan_segment(buf, seg_id):
            if isinstance(item, Record):
                records += 1
                self._scan_record(item, seg, scan)
            else:
                self._scan_damage(item, seg, is_newest, acked_to, scan)
        if records == 0:
            scan.damaged = scan.damaged or f"{name} ({len(buf)} bytes, nothing readable)"
            self._unlink(name)
            return
        self._segments[seg_id] = seg

    def _scan_record(self, rec: Record, seg: _Segment, scan: _OpenScan) -> None:
        if scan.damaged:
            lost = _lost_between(scan.prev_seq, rec.seq)
            if lost is not None:
                scan.losses.append(lost)
            self._finding("damage", f"{scan.damaged}: "
                          f"{_describe(lost, scan.prev_seq, rec.seq)}")
            scan.damaged = ""
        if seg.id == self._cursor[0] and rec.offset < self._cursor[1] < rec.end:
            self._finding("ack-resync", f"{ACK_FILE} offset {self._cursor[1]} is inside the "
                          f"record of seq {rec.seq} in {seg.name}; it is shipped again from "
                          f"offset {rec.offset} (Elasticsearch answers 409 if it has it)")
            self._cursor = (seg.id, rec.offset)
            self._cursor_seq = scan.prev_seq
        if seg.id > self._cursor[0] or rec.offset >= self._cursor[1]:
            self._unacked_records += 1
        elif rec.end == self._cursor[1]:
            self._cursor_seq = rec.seq
        scan.prev_seq = rec.seq
        scan.last_record = rec

    def _scan_damage(self, damage: _Damage, seg: _Segment, is_newest: bool, acked_to: int,
                     scan: _OpenScan) -> None:
        self._metrics.spool_corrupt_bytes.inc(damage.end - damage.start)
        at_end = damage.end == seg.size
        if at_end:
            seg.readable = damage.start
        if at_end and is_newest:
            # Nothing intact after it: cut, so appends continue after the last record.
            self._truncate(seg.name, damage.start)
            seg.size = damage.start
            if damage.torn:
                self._finding("torn-tail", f"{seg.name}: cut {damage.end - damage.start} "
                              f"bytes of a record cut short after seq {scan.prev_seq}",
                              level=logging.INFO)
                return
        elif damage.end > HEADER_SIZE:
            seg.holes.append((max(damage.start, HEADER_SIZE), damage.end))
        if damage.start == 0 and damage.end <= HEADER_SIZE:
            return  # a bad magic alone loses nothing
        if damage.end <= acked_to:
            return  # acknowledged: shipped before the damage happened
        scan.damaged = scan.damaged or f"{seg.name} at offset {damage.start}"

    def _read_segment_file(self, name: str) -> bytes:
        fd = os.open(name, _O_READ, dir_fd=self._dir_fd)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(f"{name} is not a regular file")
            return _pread_all(fd, 0, info.st_size)
        finally:
            os.close(fd)

    def _segment_ids(self) -> list[int]:
        ids = []
        for entry in os.listdir(self._dir_fd):
            match = SEGMENT_RE.match(entry)
            if match:
                ids.append(int(match.group(1)))
        return sorted(ids)

    def _normalized_cursor(self) -> tuple[int, int]:
        seg_id, offset = self._cursor
        for sid in sorted(self._segments):
            seg = self._segments[sid]
            if sid == seg_id:
                return sid, _past_holes(seg, max(HEADER_SIZE, min(offset, seg.readable)))
            if sid > seg_id:
                return sid, _past_holes(seg, HEADER_SIZE)
        return seg_id, offset

    def _open_active(self) -> None:
        if self._segments:
            self._fd = os.open(self._active().name, _O_APPEND, dir_fd=self._dir_fd)
            return
        # The first segment of an empty spool, at the ack cursor (never below it: records
        # there would count as acknowledged).
        self._create_segment(max(self._cursor[0], 1))
        self._cursor = (max(self._segments), HEADER_SIZE)

    # ------------------------------------------------------------------ writing

    def _append_locked(self, seq: int, doc_id: str, data: bytes, report: bool) -> bool:
        """Write one record; False when it is refused (its drop is queued for the report)."""
        refused = self._write_one(seq, doc_id, data, report)
        if refused is not None:
            self._drops.append(DroppedRange(seq, seq, refused, data))
            return False
        return True

    def _write_one(self, seq: int, doc_id: str, data: bytes,
                   report: bool) -> DropReason | None:
        try:
            rec = encode_record(seq, doc_id, data)
        except (ValueError, struct.error) as exc:
            self._log_odd(log.error, "spool: cannot store seq %d: %s", seq, exc)
            return "write-error"
        refused = self._write_with_policy(rec, report)
        if refused is None:
            self._remember(len(rec), seq, doc_id, data)
            self._count_written(1)
        return refused

    def _count_written(self, count: int) -> None:
        """Records now on disk: unacknowledged, and readable at once without fsync."""
        self._unacked_records += count
        if self._cfg.fsync == "none":
            self._data_ready.notify_all()

    def _limit(self, report: bool) -> int:
        return self._cfg.max_bytes + (REPORT_RESERVE_BYTES if report else 0)

    def _total_bytes(self) -> int:
        return sum(seg.size for seg in self._segments.values())

    def _active(self) -> _Segment:
        return self._segments[max(self._segments)]

    def _write_with_policy(self, rec: bytes, report: bool) -> DropReason | None:
        """Write rec, dropping old segments when the policy allows; the refusal reason."""
        while True:
            try:
                self._write_within_limit(rec, report)
                self._write_worked()
                return None
            except _NoRoom:
                pass
            except OSError as exc:
                if exc.errno not in FULL_ERRNOS:
                    return self._write_failed(exc)
            try:
                if self._drop_for_space():
                    continue
            except OSError as exc:
                return self._write_failed(exc)
            return self._refusal_reason()

    def _write_within_limit(self, rec: bytes, report: bool) -> None:
        self._make_active_take(len(rec))
        if self._total_bytes() + len(rec) > self._limit(report):
            raise _NoRoom
        self._write(rec)

    def _make_active_take(self, rec_len: int) -> None:
        """Have an open active segment with room for the record: open it, or start a new
        one when the record would overflow it (or its end may hold a partial record)."""
        if self._fd is None:
            self._open_active()
        active = self._active()
        overflow = active.size + rec_len > self._cfg.segment_bytes and active.size > HEADER_SIZE
        if not (overflow or self._rotate_next):
            return
        self._sync_active()
        self._create_segment(active.id + 1)
        self._rotate_next = False
        self._delete_acked_segments()

    def _refusal_reason(self) -> DropReason:
        return "drop-newest" if self._cfg.full_policy == "drop-newest" else "full"

    def _drop_for_space(self) -> bool:
        return self._cfg.full_policy == "drop-oldest" and self._drop_oldest()

    def _write(self, rec: bytes) -> None:
        active = self._active()
        assert self._fd is not None
        try:
            _write_all(self._fd, rec)
        except OSError:
            # A partial record would look like damage: cut it off now, or leave this file.
            try:
                os.ftruncate(self._fd, active.size)
            except OSError:
                self._rotate_next = True
            raise
        active.size += len(rec)
        if self._cfg.fsync == "none":
            active.readable = active.size

    def _write_failed(self, exc: OSError) -> DropReason:
        self._refused_since_error += 1
        if self._write_error is None:
            self._write_error = str(exc)
            self._finding("write-error", f"cannot write to {self._dir}: {exc}; records are "
                          "refused (and reported lost) until it works again")
        return "write-error"

    def _write_worked(self) -> None:
        if self._write_error is not None:
            log.info("spool: writing again after %d refused records (%s)",
                     self._refused_since_error, self._write_error)
            self._write_error = None
            self._refused_since_error = 0

    def _create_segment(self, seg_id: int) -> None:
        name = segment_name(seg_id)
        fd = os.open(name, os.O_CREAT | os.O_TRUNC | _O_APPEND, 0o600, dir_fd=self._dir_fd)
        try:
            os.fchmod(fd, 0o600)
            _write_all(fd, MAGIC)
        except OSError:
            os.close(fd)
            self._unlink(name)
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self._segments[seg_id] = _Segment(seg_id, HEADER_SIZE, HEADER_SIZE)

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

    def _sync_loop(self) -> None:
        while True:
            self._sync_wanted.wait()
            self._sync_wanted.clear()
            if self._closing:
                return
            try:
                self._sync_in_background()
            except Exception:  # the thread must outlive a bug; close() still syncs
                self._log_odd(log.exception, "spool: unexpected error syncing")

    def _sync_in_background(self) -> None:
        """fsync what the active segment holds now, then make it readable. The descriptor is
        duplicated under the lock: a rotation may close the original meanwhile."""
        with self._lock:
            if not self._segments or self._fd is None:
                return
            active = self._active()
            if active.readable >= active.size:
                return
            synced_to, fd = active.size, os.dup(self._fd)
        try:
            with contextlib.suppress(OSError):
                os.fsync(fd)
        finally:
            os.close(fd)
        with self._lock:
            # The same segment object: an emptied spool may recreate a file of that id.
            if self._segments.get(active.id) is active and \
                    active.readable < synced_to <= active.size:
                active.readable = synced_to
            self._data_ready.notify_all()

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
        records = self._records_from(seg, start)
        self._drops.extend(runs_of(((r.seq, r.data) for r in records), "drop-oldest"))
        self._unacked_records = max(0, self._unacked_records - len(records))
        del self._segments[seg.id]
        self._unlink(seg.name)
        if self._cursor[0] == seg.id:
            if records:
                self._cursor_seq = records[-1].seq
            self._cursor = self._normalized_cursor()
        self._forget_read()

    def _take_drops(self) -> list[DroppedRange]:
        if not self._drops:  # the common case, on every append
            return self._drops
        drops, self._drops = self._drops, []
        return _coalesce(drops)

    def _record_losses(self, runs: list[DroppedRange]) -> None:
        for run in runs:
            self._metrics.spool_dropped.labels(reason=run.reason).inc(run.count)
        if runs:
            self._on_drop(runs)

    # ------------------------------------------------------------------ memory fast path

    def _remember(self, rec_len: int, seq: int, doc_id: str, data: bytes) -> None:
        """Keep the record just written (at the end of the active segment) in memory."""
        active = self._active()
        self._remember_at(active.id, active.size - rec_len, active.size, seq, doc_id, data)

    def _remember_at(self, segment: int, offset: int, end: int, seq: int, doc_id: str,
                     data: bytes) -> None:
        if self._memory_bytes <= 0:
            return
        self._recent.append(Record(segment, offset, end, seq, doc_id, data))
        self._recent_bytes += len(data)
        while self._recent_bytes > self._memory_bytes and len(self._recent) > 1:
            self._recent_bytes -= len(self._recent.popleft().data)

    def _forget_read(self) -> None:
        """Drop remembered records the cursor has passed (acknowledged, dropped or skipped)."""
        recent = self._recent
        while recent and ((recent[0].segment, recent[0].offset) < self._cursor
                          or recent[0].segment not in self._segments):
            self._recent_bytes -= len(recent.popleft().data)

    def _memory_batch(self, max_docs: int, max_bytes: int) -> list[Record]:
        """The batch at the cursor from memory, when memory holds the cursor's record; only
        records the shipper may read (fsynced), by the same limits as a disk read."""
        self._forget_read()
        if not self._recent or not self._nothing_unread_before(self._recent[0]):
            return []
        out: list[Record] = []
        budget = max_bytes
        for rec in self._recent:
            seg = self._segments.get(rec.segment)
            if seg is None or rec.end > seg.readable or len(out) >= max_docs:
                break
            if budget - len(rec.data) < 0 and out:
                break
            out.append(rec)
            budget -= len(rec.data)
        return out

    def _nothing_unread_before(self, rec: Record) -> bool:
        """Whether rec is the first record at the cursor (no readable bytes between)."""
        for seg in self._segments_from_cursor():
            start = self._cursor[1] if seg.id == self._cursor[0] else HEADER_SIZE
            start = _past_holes(seg, start)
            if seg.id == rec.segment:
                return start == rec.offset
            if start < seg.readable:
                return False
        return False

    # ------------------------------------------------------------------ reading and acks

    def _segments_from_cursor(self) -> list[_Segment]:
        return [self._segments[s] for s in sorted(self._segments) if s >= self._cursor[0]]

    def _read_plan(self) -> list[tuple[_Segment, int, int]]:
        """(segment, start, end) ranges a batch may take, in order: a batch never crosses a
        hole, since its ack moves the cursor to its last record."""
        plan = []
        for seg in self._segments_from_cursor():
            start = self._cursor[1] if seg.id == self._cursor[0] else HEADER_SIZE
            if plan and _hole_at(seg, start):
                break
            end = _extent_end(seg, start)
            if start < end:
                plan.append((seg, start, end))
            if end < seg.readable:
                break
        return plan

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

    def _records_from(self, seg: _Segment, start: int) -> list[Record]:
        """Every intact record of seg from start on, across its holes."""
        out: list[Record] = []
        while start < seg.readable:
            end = _extent_end(seg, start)
            out.extend(iter_records(self._pread(seg, start, end - start), start, seg.id))
            start = _past_holes(seg, end) if end < seg.readable else seg.readable
        return out

    def _resync_at_cursor(self, seg: _Segment, start: int, end: int) -> bool:
        """No record decodes at the cursor although bytes are readable: the file changed
        under the spool. Skip to the next intact record (reporting the sequences between),
        instead of stalling the shipper on it forever."""
        buf = self._pread(seg, start, seg.readable - start)
        found = next_record(buf, 1, start, seg.id)
        with self._lock:
            if self._cursor != (seg.id, start) or seg.id not in self._segments:
                return False
            stop = found.offset if found else seg.readable
            seg.holes = sorted([*seg.holes, (start, stop)])
            self._metrics.spool_corrupt_bytes.inc(stop - start)
            prev = self._cursor_seq
            if found is None:
                self._gap_after = prev
                what = "sequences after it are reported once the next record is read"
            else:
                lost = _lost_between(prev, found.seq)
                what = _describe(lost, prev, found.seq)
                if lost is not None:
                    self._unacked_records = max(0, self._unacked_records - lost.count)
                    self._record_losses([lost])
                self._cursor_seq = found.seq - 1 if lost is not None else prev
            self._finding("damage", f"{seg.name} is damaged at offset {start} ({stop - start} "
                          f"bytes, found while shipping): {what}")
            self._cursor = self._normalized_cursor()
            self._save_ack()
            return True

    def _close_gap(self, batch: list[Record]) -> None:
        """Damage whose end was unknown is bounded by the first record read after it."""
        if self._gap_after is None:
            return
        after = next((r for r in batch if r.seq > self._gap_after), None)
        if after is None:
            return
        lost = _lost_between(self._gap_after, after.seq)
        self._gap_after = None
        if lost is not None:
            log.warning("spool: sequences %d..%d were in damaged spool data", lost.first_seq,
                        lost.last_seq)
            self._record_losses([lost])

    def _pread(self, seg: _Segment, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        fd = os.open(seg.name, _O_READ, dir_fd=self._dir_fd)
        try:
            return _pread_all(fd, start, length)
        finally:
            os.close(fd)

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
            self._unlink(seg.name)
        self._cursor = self._normalized_cursor()

    def _save_ack(self) -> None:
        body = orjson.dumps({"segment": self._cursor[0], "offset": self._cursor[1],
                             "seq": self._cursor_seq})
        # Disk full or read-only: keep the ack in memory; at worst a restart replays
        # records, which Elasticsearch answers with 409 (already stored).
        with contextlib.suppress(OSError):
            replace_file(self._dir_fd, ACK_FILE, body, durable=self._cfg.fsync == "batch")

    # ------------------------------------------------------------------ helpers

    def _finding(self, kind: str, detail: str, level: int = logging.WARNING) -> None:
        self.findings.append(SpoolFinding(kind, detail))
        log.log(level, "spool: %s", detail)

    def _log_odd(self, emit: Callable[..., None], msg: str, *args: object) -> None:
        """Log what should never happen at most once a minute (it may repeat per record)."""
        now = time.monotonic()
        if now - self._odd_logged_at >= ODD_LOG_INTERVAL_S:
            self._odd_logged_at = now
            emit(msg, *args)

    def _locked_total_bytes(self) -> int:
        with self._lock:
            return self._total_bytes()

    def _unlink(self, name: str) -> None:
        # A file that cannot be deleted (read-only directory) is deleted at the next start:
        # it is below the ack cursor or known bad by then.
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=self._dir_fd)

    def _truncate(self, name: str, size: int) -> None:
        with contextlib.suppress(OSError):
            fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._dir_fd)
            try:
                os.ftruncate(fd, size)
            finally:
                os.close(fd)


# ---------------------------------------------------------------------- module helpers


def _require_contiguous(batch: list[Record]) -> None:
    """An ack moves the cursor to the batch's last record: a hole would be acknowledged
    without being shipped. Fail loudly instead (the records stay in the spool)."""
    for prev, rec in zip(batch, batch[1:]):
        same_segment = rec.segment == prev.segment and rec.offset == prev.end
        next_segment = rec.segment > prev.segment and rec.offset == HEADER_SIZE
        if not (same_segment or next_segment):
            raise ValueError(f"spool batch is not contiguous at sequence {rec.seq}")


def _hole_at(seg: _Segment, offset: int) -> bool:
    return any(start <= offset < end for start, end in seg.holes)


def _past_holes(seg: _Segment, offset: int) -> int:
    """offset, or the end of the hole it falls in."""
    for start, end in seg.holes:
        if start <= offset < end:
            offset = end
    return offset


def _extent_end(seg: _Segment, start: int) -> int:
    """Where the readable bytes from start stop: the next hole, or the readable end."""
    return min([seg.readable, *(hs for hs, _ in seg.holes if hs >= start)])


def _valid_ack(state: object) -> _Ack | None:
    if not isinstance(state, dict):
        return None
    segment, offset, seq = state.get("segment"), state.get("offset"), state.get("seq")
    if not (_is_int(segment) and 0 <= segment <= MAX_SEGMENT_ID):
        return None
    if not (_is_int(offset) and 0 <= offset < 1 << 40):
        return None
    if seq is not None and not (_is_int(seq) and 0 <= seq < 1 << 64):
        return None
    return _Ack(segment, offset, seq)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    while written < len(data):  # a short write (signal, nearly full disk): the rest
        written += os.write(fd, data[written:])


def _pread_all(fd: int, start: int, length: int) -> bytes:
    chunks = []
    while length > 0:
        chunk = os.pread(fd, length, start)
        if not chunk:
            break
        chunks.append(chunk)
        start += len(chunk)
        length -= len(chunk)
    return b"".join(chunks)
