"""From an ECS dict to every configured output, without ever waiting on the network.

``submit`` seals the document (sequence + chain), serializes it once, hands the bytes to the
stdout/file sinks (buffered) and, when an Elasticsearch output is configured, appends it to
the durable spool; the shipper thread does the rest. ``tick`` flushes sinks and the spool,
checkpoints the sealer and turns spool drops and dead letters into ``events_lost``
documents. ``close`` flushes, lets the shipper drain for a bounded time and leaves whatever
is left in the spool for the next start.

Loss reports: each run of dropped sequences becomes one ``events_lost`` document with
``audit_collector.lost.{documents, first_sequence, last_sequence, reason,
last_chain_hash}``. A report that is itself dropped before it was shipped is emitted again,
so every reported range reaches Elasticsearch or is reported once more.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from collector.delivery.chain import ChainPoint, SealedDoc, Sealer, point_of
from collector.delivery.elasticsearch.credentials import auth_options
from collector.delivery.settings import DeliverySettings, parse_outputs
from collector.delivery.sinks import FileSink, Sink, StdoutSink, last_point_in_file
from collector.delivery.spool import DroppedRange, Spool
from collector.ecs.documents import events_lost_document
from collector.ecs.host import HostInfo

log = logging.getLogger(__name__)

REPORT_INTERVAL_S = 1.0  # at most one round of loss reports a second (bounds report volume)
REPORT_SIZE_ESTIMATE = 4096
SOURCE_BY_REASON = {"rejected": "dead_letter"}


@dataclass(frozen=True)
class _Report:
    seq: int  # the events_lost document's own sequence
    loss: DroppedRange
    source: str


class Pipeline:
    def __init__(self, cfg: DeliverySettings, host: HostInfo, client: Any = None,
                 start_shipping: bool = True) -> None:
        """client: an Elasticsearch client to use instead of one built from cfg (tests).
        start_shipping=False: the caller calls `start_shipping()` later (`run` does, after the
        probes are loaded); credentials are still checked now."""
        self._cfg = cfg
        self._host = host
        self._sinks: list[Sink] = []
        self._spool: Spool | None = None
        self._shipper: Any = None
        recovered = self._open_outputs()
        self._sealer = Sealer(cfg.state_dir, host, tuple(recovered))
        self._in_flight_reports: list[_Report] = []
        self._held_losses: list[tuple[DroppedRange, str]] = []
        self._last_report_at = 0.0
        self._closed = False
        self._client = client
        if self._spool is not None:
            if start_shipping:
                self.start_shipping()
            else:
                auth_options(cfg.elasticsearch)  # a missing secret fails now, not later

    # ------------------------------------------------------------------ public API

    def submit(self, doc: dict[str, Any]) -> None:
        """Seal and write one document; never blocks on the network."""
        self._write(self._sealer.seal(doc))

    def tick(self) -> None:
        """Time-based work, ~10x a second from the capture loop."""
        for sink in self._sinks:
            sink.flush()
        if self._spool is not None:
            self._spool.flush()
            self._report_losses(force=False)
        self._sealer.checkpoint()

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush everything; give the shipper up to timeout_s to drain."""
        if self._closed:
            return
        self._closed = True
        self.tick()
        if self._spool is not None:
            if self._shipper is not None:
                self._drain(time.monotonic() + timeout_s)
            else:
                self._report_losses(force=True)  # spooled, shipped by the next start
                self._spool.flush()
            self._spool.close()
        for sink in self._sinks:
            sink.close()
        self._sealer.checkpoint(durable=True)

    def _drain(self, deadline: float) -> None:
        """Ship until the spool is empty, including loss reports made while draining."""
        assert self._spool is not None
        drained = False
        while True:
            self._report_losses(force=True)
            self._spool.flush()
            drained = self._shipper.drain(deadline)
            self._collect_losses()
            if not drained or not self._held_losses:
                break
        self._shipper.stop(max(0.1, deadline - time.monotonic()))
        self._report_losses(force=True)  # whatever came in last stays spooled for next start
        self._spool.flush()
        if not drained:
            log.warning("shutdown: %d documents stay in the spool for the next start",
                        self._spool.pending()[0])

    def lost_document(
        self, counts: dict[str, int], source: str, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return events_lost_document(self._host, counts, source, extra)

    @property
    def sealer(self) -> Sealer:
        return self._sealer

    @property
    def spool(self) -> Spool | None:
        return self._spool

    # ------------------------------------------------------------------ outputs

    def _open_outputs(self) -> list[ChainPoint | None]:
        """Open sinks and spool; the chain points they last recorded (sequence recovery)."""
        recovered: list[ChainPoint | None] = []
        for output in parse_outputs(self._cfg.outputs):
            if output.kind == "stdout":
                self._sinks.append(StdoutSink())
            elif output.kind == "file":
                recovered.append(last_point_in_file(output.target))
                self._sinks.append(FileSink(output.target))
            elif self._spool is None:
                self._spool = Spool(self._cfg.spool)
                last = self._spool.last_record
                recovered.append(point_of(last.data) if last else None)
        return recovered

    def start_shipping(self) -> None:
        """Start the shipper thread (when an Elasticsearch output is configured)."""
        if self._spool is None or self._shipper is not None:
            return
        # Imported here: the client adds ~11 MiB, which `run` keeps out of the probe
        # compilation's peak.
        from collector.delivery.elasticsearch.client import build_client
        from collector.delivery.elasticsearch.shipper import Shipper

        client = self._client or build_client(self._cfg)
        self._shipper = Shipper(self._cfg, self._spool, client)
        self._shipper.start()

    def _write(self, sealed: SealedDoc, report: bool = False) -> bool:
        for sink in self._sinks:
            sink.write(sealed.data)
        if self._spool is None:
            return True
        return self._spool.append(sealed.seq, sealed.id, sealed.data, report=report)

    # ------------------------------------------------------------------ loss reports

    def _report_losses(self, force: bool) -> None:
        self._collect_losses()
        now = time.monotonic()
        if not self._held_losses or (not force and now - self._last_report_at < REPORT_INTERVAL_S):
            return
        self._last_report_at = now
        assert self._spool is not None
        while self._held_losses:
            if not self._spool.can_take(REPORT_SIZE_ESTIMATE, report=True):
                return  # drop-newest and full even with the reserve: try again later
            loss, source = self._held_losses.pop(0)
            if not self._emit_report(loss, source):
                self._held_losses.insert(0, (loss, source))  # disk full: retry later
                self._collect_losses()
                return
            self._collect_losses()  # the report itself may have pushed out older records

    def _collect_losses(self) -> None:
        assert self._spool is not None
        acked = self._spool.acked_seq
        self._in_flight_reports = [r for r in self._in_flight_reports if r.seq > acked]
        for loss in self._spool.take_losses():
            self._hold(loss, "spool")
            self._held_losses.extend(self._swallowed_reports(loss))
        rejections = self._shipper.take_rejections() if self._shipper is not None else []
        for loss in rejections:
            self._hold(loss, SOURCE_BY_REASON.get(loss.reason, "spool"))

    def _hold(self, loss: DroppedRange, source: str) -> None:
        """Queue a loss for reporting, extending the last queued run when contiguous."""
        if self._held_losses:
            last, last_source = self._held_losses[-1]
            if (last_source == source and last.reason == loss.reason
                    and last.last_seq + 1 == loss.first_seq):
                last.last_seq, last.last_data = loss.last_seq, loss.last_data
                return
        self._held_losses.append((loss, source))

    def _swallowed_reports(self, loss: DroppedRange) -> list[tuple[DroppedRange, str]]:
        """Earlier reports that this drop removed before they were shipped: report again."""
        swallowed = [r for r in self._in_flight_reports
                     if loss.first_seq <= r.seq <= loss.last_seq]
        for report in swallowed:
            self._in_flight_reports.remove(report)
        return [(r.loss, r.source) for r in swallowed]

    def _emit_report(self, loss: DroppedRange, source: str) -> bool:
        extra: dict[str, Any] = {
            "first_sequence": loss.first_seq,
            "last_sequence": loss.last_seq,
            "reason": loss.reason,
        }
        point = point_of(loss.last_data) if loss.last_data else None
        if point is not None and point.seq == loss.last_seq:
            extra["last_chain_hash"] = point.hash
        doc = self.lost_document({"documents": loss.count}, source, extra)
        sealed = self._sealer.seal(doc)
        if not self._write(sealed, report=True):
            return False
        self._in_flight_reports.append(_Report(sealed.seq, loss, source))
        log.warning("%d documents lost (%s, %s), sequences %d..%d", loss.count, source,
                    loss.reason, loss.first_seq, loss.last_seq)
        return True
