"""From an ECS dict to every configured output, without ever waiting on the network.

``submit`` seals the document (sequence + chain), serializes it once, hands the bytes to the
stdout/file sinks (buffered) and, when an Elasticsearch output is configured, appends it to
the durable spool; the shipper thread does the rest. ``tick`` flushes sinks and the spool,
checkpoints the sealer and lets the loss ledger (delivery/loss.py) write its
``events_lost`` reports. With a checkpoint builder, a signed checkpoint document
(delivery/checkpoint.py) follows every `checkpoint.every_docs` documents or
`checkpoint.every_s` seconds, and one signs the last document before the spool is drained
at ``close``. ``close`` flushes, lets the shipper drain for a bounded time and leaves
whatever is left in the spool for the next start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from collector.delivery.chain import ChainPoint, HostIdentity, SealedDoc, Sealer, point_of
from collector.delivery.checkpoint import CheckpointBuilder, Checkpointer
from collector.delivery.elasticsearch.credentials import auth_options
from collector.delivery.loss import LossLedger, ReportBuilder
from collector.delivery.metrics import DeliveryMetrics
from collector.delivery.settings import DeliverySettings, parse_outputs
from collector.delivery.sinks import FileSink, Sink, StdoutSink, last_point_in_file
from collector.delivery.spool import Spool

log = logging.getLogger(__name__)

REPORT_SIZE_ESTIMATE = 4096
# Sealed documents go to the spool in runs of up to this many (one lock, one write(2)):
# a storm's wake-up brings dozens of records; `flush_pending` ends each run early.
SPOOL_RUN_DOCS = 64


class Pipeline:
    def __init__(self, cfg: DeliverySettings, host: HostIdentity, build_report: ReportBuilder,
                 client: Any = None, start_shipping: bool = True,
                 metrics: DeliveryMetrics | None = None,
                 build_checkpoint: CheckpointBuilder | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """build_report: makes an events_lost document (the ECS wing's, wired by the caller).
        build_checkpoint: makes a checkpoint document; given (and `checkpoint.enabled`), the
        host key is loaded or created and checkpoints are signed. clock: when checkpoints
        are due (tests drive a fake one).
        client: an Elasticsearch client to use instead of one built from cfg (tests).
        start_shipping=False: the caller calls `start_shipping()` later (`run` does, after the
        probes are loaded); credentials are still checked now."""
        self._cfg = cfg
        self._metrics = metrics or DeliveryMetrics()
        self.losses = LossLedger(self._metrics, build_report, point_of)
        self._sinks: list[Sink] = []
        self._spool: Spool | None = None
        self._shipper: Any = None
        recovered = self._open_outputs()
        self._sealer = Sealer(cfg.state_dir, host, tuple(recovered), self._metrics)
        self._spooled = self._metrics.documents.labels(output="spool")
        self._pending: list[SealedDoc] = []  # sealed, not yet handed to the spool
        self.checkpoints: Checkpointer | None = None
        if build_checkpoint is not None and cfg.checkpoint.enabled:
            self.checkpoints = Checkpointer(cfg.checkpoint, cfg.state_dir, host,
                                            build_checkpoint, clock)
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
        if self.checkpoints is not None and self.checkpoints.sealed():
            self._sign_head()

    def ringbuf_lost(self, grown: dict[str, int], total: int) -> None:
        """The kernel dropped events (per family) since the last call; `total` since start."""
        self.losses.ringbuf_lost(grown, total)

    def flush_pending(self) -> None:
        """Hand the sealed documents waiting for the spool to it (the capture loop calls
        this after each poll: they wait no longer than the records did in the ring buffer)."""
        if not self._pending:
            return
        assert self._spool is not None
        run, self._pending = self._pending, []
        taken = self._spool.append_many([(doc.seq, doc.id, doc.data) for doc in run])
        self._spooled.inc(sum(taken))

    def tick(self) -> None:
        """Time-based work, ~10x a second from the capture loop."""
        self.flush_pending()
        for sink in self._sinks:
            sink.flush()
        if self._spool is not None:
            self._spool.flush_soon()  # the fsync waits on the disk off the capture thread
            self.losses.acknowledged(self._spool.acked_seq)
        self._report_losses(force=False)
        if self.checkpoints is not None and self.checkpoints.due_by_time(self._sealer.head):
            self._sign_head()
        self._sealer.checkpoint()

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush everything; give the shipper up to timeout_s to drain."""
        if self._closed:
            return
        self._closed = True
        self.tick()
        self._sign_head()  # everything sealed so far, the stop document included
        if self._spool is not None:
            if self._shipper is not None:
                self._drain(time.monotonic() + timeout_s)
            else:
                self._report_losses(force=True)  # spooled, shipped by the next start
                self._sign_head()
                self._spool.flush()
            self._spool.close()
        else:
            self._report_losses(force=True)
            self._sign_head()
        for sink in self._sinks:
            sink.close()
        self._sealer.checkpoint(durable=True)

    def _drain(self, deadline: float) -> None:
        """Ship until the spool is empty, including loss reports made while draining."""
        assert self._spool is not None
        drained = False
        while True:
            self._report_losses(force=True)
            self._sign_head()
            self._spool.flush()
            drained = self._shipper.drain(deadline)
            self.losses.acknowledged(self._spool.acked_seq)
            if not drained or not self.losses.pending():
                break
        self._shipper.stop(max(0.1, deadline - time.monotonic()))
        self._report_losses(force=True)  # whatever came in last stays spooled for next start
        self._sign_head()
        self._spool.flush()
        if not drained:
            log.warning("shutdown: %d documents stay in the spool for the next start",
                        self._spool.pending()[0])

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
                self._sinks.append(StdoutSink(metrics=self._metrics))
            elif output.kind == "file":
                recovered.append(last_point_in_file(output.target))
                self._sinks.append(FileSink(output.target, metrics=self._metrics))
            elif self._spool is None:
                self._spool = Spool(self._cfg.spool, self.losses.spool_dropped, self._metrics)
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
        self._shipper = Shipper(self._cfg, self._spool, client, self.losses.rejected,
                                self._metrics)
        self._shipper.start()

    def _write(self, sealed: SealedDoc, report: bool = False) -> bool:
        """report=False: the spool gets the document with the next run (True is returned;
        a refusal is counted by the spool as a loss). report=True: now, after the run, and
        whether it was taken."""
        for sink in self._sinks:
            sink.write(sealed.data)
        if self._spool is None:
            return True
        if not report:
            self._pending.append(sealed)
            if len(self._pending) >= SPOOL_RUN_DOCS:
                self.flush_pending()
            return True
        self.flush_pending()
        taken = self._spool.append(sealed.seq, sealed.id, sealed.data, report=True)
        if taken:
            self._spooled.inc()
        return taken

    def _sign_head(self) -> None:
        """Seal a checkpoint signing the head, when anything was sealed since the last one
        (it uses the loss reports' reserve: a full spool must not keep the tail unsigned)."""
        checkpoints = self.checkpoints
        head = self._sealer.head
        if checkpoints is None or not checkpoints.moved(head):
            return
        if self._spool is not None and not self._spool.can_take(REPORT_SIZE_ESTIMATE,
                                                                 report=True):
            return
        sealed = self._sealer.seal(checkpoints.document(head))
        self._write(sealed, report=True)
        checkpoints.written(sealed.seq)

    # ------------------------------------------------------------------ loss reports

    def _report_losses(self, force: bool) -> None:
        self.losses.report(self._write_report, force=force, track=self._spool is not None)

    def _write_report(self, doc: dict[str, Any]) -> int | None:
        """Seal and write an events_lost document; its sequence, or None when the spool
        cannot take it now (nothing is sealed then)."""
        if self._spool is not None and not self._spool.can_take(REPORT_SIZE_ESTIMATE,
                                                                 report=True):
            return None
        sealed = self._sealer.seal(doc)
        return sealed.seq if self._write(sealed, report=True) else None
