"""Loss accounting: every loss the collector knows of is counted once and reported in an
``events_lost`` document, in the same sealed sequence as the events.

Three sources drop documents or events, each through an explicit callback:

* the spool (`Spool(on_drop=ledger.spool_dropped)`): policy drops at the size bound or on a
  full disk, corrupt regions found at start-up, write errors;
* the shipper (`Shipper(on_reject=ledger.rejected)`): documents Elasticsearch rejected,
  dead-lettered;
* the kernel (`ledger.ringbuf_lost`, from the capture loop): ring-buffer reservations that
  failed, per probe family.

The ledger holds what is not reported yet, merges contiguous runs of one cause, and hands
reports to the pipeline at most once per interval (`report`), which seals and writes them.
It remembers its reports until they are acknowledged: a report that the spool drops before
it was shipped is made again, and a report that Elasticsearch rejects is counted and logged
but not reported again (that would loop). Only the ledger knows which sequences are its
reports: the shipper never looks inside a document.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, Optional

from collector.delivery.metrics import DeliveryMetrics

log = logging.getLogger(__name__)

REPORT_INTERVAL_S = 1.0  # at most one round of reports a second (bounds report volume)

# drop-oldest: deleted to make room; drop-newest: refused by policy; full: refused because
# nothing could be deleted; corrupt: unreadable at open; write-error: an I/O error;
# rejected: dead-lettered by Elasticsearch.
DropReason = Literal["drop-oldest", "drop-newest", "full", "corrupt", "write-error", "rejected"]
SOURCE_OF_REASON = {"rejected": "dead_letter"}

# Builds an events_lost document: (counts, source, extra fields) -> document.
ReportBuilder = Callable[[dict[str, int], str, dict[str, Any]], dict[str, Any]]
# Seals and writes a report; its sequence, or None when it could not be written now.
ReportWriter = Callable[[dict[str, Any]], Optional[int]]


@dataclass
class DroppedRange:
    """A run of consecutive sequences that were lost, for one events_lost document."""

    first_seq: int
    last_seq: int
    reason: DropReason
    last_data: bytes = b""  # the last lost document: its chain hash bridges the gap

    @property
    def count(self) -> int:
        return self.last_seq - self.first_seq + 1

    @property
    def source(self) -> str:
        return SOURCE_OF_REASON.get(self.reason, "spool")


@dataclass
class _RingbufLoss:
    counts: dict[str, int] = field(default_factory=dict)
    total: int = 0
    first_seen: float | None = None  # unix time the first loss of this report was seen


def runs_of(records: Iterable[tuple[int, bytes]], reason: DropReason) -> list[DroppedRange]:
    """Split (sequence, document) pairs, in sequence order, into runs of consecutive ones."""
    runs: list[DroppedRange] = []
    for seq, data in records:
        if runs and seq == runs[-1].last_seq + 1:
            runs[-1].last_seq, runs[-1].last_data = seq, data
        else:
            runs.append(DroppedRange(seq, seq, reason, data))
    return runs


class LossLedger:
    """Thread-safe: drops arrive from the capture thread (spool appends), the shipper
    thread (rejections) and start-up; reports are made on the sealing thread."""

    def __init__(self, metrics: DeliveryMetrics, build_report: ReportBuilder,
                 point_of: Callable[[bytes], Any],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._metrics = metrics
        self._build_report = build_report
        self._point_of = point_of  # chain point of a sealed document's bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._held: list[DroppedRange] = []
        self._ringbuf = _RingbufLoss()
        self._in_flight: dict[int, DroppedRange] = {}  # report sequence -> what it reported
        self._last_round = -REPORT_INTERVAL_S

    # ------------------------------------------------------------------ drops

    def spool_dropped(self, runs: list[DroppedRange]) -> None:
        """The spool lost these runs (any reason but `rejected`)."""
        with self._lock:
            for run in runs:
                self._metrics.events_lost.labels(kind="document", where="spool").inc(run.count)
                self._hold(run)
                self._hold_swallowed_reports(run)

    def rejected(self, records: list[tuple[int, bytes]]) -> None:
        """Elasticsearch rejected these (sequence, document) records; they are in the dead
        letter file."""
        with self._lock:
            own = [seq for seq, _ in records if seq in self._in_flight]
            for seq in own:
                log.error("events_lost document seq %d was rejected by Elasticsearch; it is "
                          "in the dead letter file", seq)
            others = [(seq, data) for seq, data in records if seq not in self._in_flight]
            self._metrics.events_lost.labels(kind="document", where="dead_letter").inc(
                len(records))
            for run in runs_of(others, "rejected"):
                self._hold(run)

    def ringbuf_lost(self, grown: dict[str, int], total: int) -> None:
        """The kernel could not reserve ring-buffer space for these events (per family)."""
        with self._lock:
            if self._ringbuf.first_seen is None:
                self._ringbuf.first_seen = time.time()
            for kind, count in grown.items():
                self._metrics.events_lost.labels(kind=kind, where="ringbuf").inc(count)
                self._ringbuf.counts[kind] = self._ringbuf.counts.get(kind, 0) + count
            self._ringbuf.total = total

    def acknowledged(self, seq: int) -> None:
        """Everything up to seq reached Elasticsearch: those reports are safe."""
        with self._lock:
            for report_seq in [s for s in self._in_flight if s <= seq]:
                del self._in_flight[report_seq]

    # ------------------------------------------------------------------ reports

    def pending(self) -> bool:
        with self._lock:
            return bool(self._held or self._ringbuf.counts)

    def report(self, write: ReportWriter, force: bool = False, track: bool = True) -> None:
        """Hand held losses to `write` as events_lost documents (at most one round per
        interval unless forced). track=False: nothing acknowledges them (no spool)."""
        now = self._clock()
        if not force and now - self._last_round < REPORT_INTERVAL_S:
            return
        if not self.pending():
            return
        self._last_round = now
        self._report_ringbuf(write)
        reported: set[str] = set()  # causes reported in this round
        while True:
            with self._lock:
                loss = self._next_held(reported, force)
                if loss is None:
                    return
                self._held.remove(loss)
            seq = write(self._loss_document(loss))
            if seq is None:  # refused (full disk, drop-newest): keep it for the next round
                with self._lock:
                    self._held.insert(0, loss)
                return
            if not force:
                reported.add(loss.reason)
            log.warning("%d documents lost (%s, %s), sequences %d..%d", loss.count,
                        loss.source, loss.reason, loss.first_seq, loss.last_seq)
            if track:
                with self._lock:
                    self._in_flight[seq] = loss

    def _report_ringbuf(self, write: ReportWriter) -> None:
        with self._lock:
            loss, self._ringbuf = self._ringbuf, _RingbufLoss()
        if not loss.counts:
            return
        log.warning("ring buffer full: lost %s", loss.counts)
        extra: dict[str, Any] = {"total": loss.total}
        if loss.first_seen is not None:  # the loss happened between then and this report
            extra["first_seen"] = datetime.fromtimestamp(
                loss.first_seen, timezone.utc).isoformat(timespec="milliseconds")
        if write(self._build_report(loss.counts, "ringbuf", extra)) is None:
            with self._lock:  # not written: count it again with the next round
                if self._ringbuf.first_seen is None or (
                        loss.first_seen is not None and loss.first_seen < self._ringbuf.first_seen):
                    self._ringbuf.first_seen = loss.first_seen
                for kind, count in loss.counts.items():
                    self._ringbuf.counts[kind] = self._ringbuf.counts.get(kind, 0) + count

    def _loss_document(self, loss: DroppedRange) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "first_sequence": loss.first_seq,
            "last_sequence": loss.last_seq,
            "reason": loss.reason,
        }
        point = self._point_of(loss.last_data) if loss.last_data else None
        if point is not None and point.seq == loss.last_seq:
            extra["last_chain_hash"] = point.hash
        return self._build_report({"documents": loss.count}, loss.source, extra)

    # ------------------------------------------------------------------ helpers (locked)

    def _next_held(self, reported: set[str], force: bool) -> DroppedRange | None:
        """The first held loss of a cause not reported in this round (any when forced).
        One report per cause per round bounds the volume during an outage, while the
        pieces of a long loss (reports the spool dropped, held again) merge in _hold."""
        return next((loss for loss in self._held if force or loss.reason not in reported),
                    None)

    def _hold(self, loss: DroppedRange) -> None:
        """Queue a loss, merged with every queued run of the same cause that it touches or
        overlaps, in any order: a report that was itself dropped comes back right next to
        the run that dropped it, and must not become a report of its own (during an outage
        with a full spool that grew the reports every round)."""
        merged = DroppedRange(loss.first_seq, loss.last_seq, loss.reason, loss.last_data)
        keep: list[DroppedRange] = []
        for held in self._held:
            if held.reason != merged.reason or held.first_seq > merged.last_seq + 1 \
                    or merged.first_seq > held.last_seq + 1:
                keep.append(held)
                continue
            newest = held if held.last_seq > merged.last_seq else merged
            merged = DroppedRange(min(held.first_seq, merged.first_seq), newest.last_seq,
                                  merged.reason, newest.last_data)
        keep.append(merged)
        self._held = keep

    def _hold_swallowed_reports(self, run: DroppedRange) -> None:
        """Reports that this drop removed before they were shipped: report them again."""
        for seq in [s for s in self._in_flight if run.first_seq <= s <= run.last_seq]:
            self._hold(self._in_flight.pop(seq))
