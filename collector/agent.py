"""The capture loop: poll the ring buffer, decode, enrich, hand documents to the pipeline.

One thread does it all, like execsnoop's loop; the pipeline must never block it (shipping
runs on its own thread behind the spool).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from collector.capture.bash_tracker import BashTracker
from collector.capture.families import BASH, FAMILIES
from collector.capture.hostns import detect_host_namespaces
from collector.capture.probes import Probes
from collector.capture.records import BashEvent, DecodeError, ExecEvent, decode
from collector.config import Config
from collector.ecs.documents import DataStream, Doc, DocumentBuilder, host_process_table
from collector.ecs.enrichment import Enrichment
from collector.ecs.host import HostInfo
from collector.ecs.processes import ProcessTable
from collector.metrics import Metrics

log = logging.getLogger(__name__)

BASH_CHECK_POLL_MS = 2


class DocumentSink(Protocol):
    def submit(self, doc: Doc) -> None: ...
    def ringbuf_lost(self, grown: dict[str, int], total: int) -> None: ...
    # Optional: probe_failed(family, target, error), for a sink that records it.
    def tick(self) -> None: ...
    def flush_pending(self) -> None: ...  # after each poll: what it produced goes on now
    def close(self, timeout_s: float = 10.0) -> None: ...


def data_stream(cfg: Config) -> DataStream:
    """data_stream.* of every document: the Elasticsearch data stream they belong to."""
    return DataStream(cfg.elasticsearch.dataset, cfg.elasticsearch.namespace)


@dataclass
class Agent:
    cfg: Config
    host: HostInfo
    sink: DocumentSink
    probes: Probes | None = None
    metrics: Metrics = field(default_factory=Metrics)
    stop_event: threading.Event = field(default_factory=threading.Event)
    on_ready: Callable[[Agent], None] | None = None
    _lost_seen: dict[str, int] = field(default_factory=dict)
    _builder: DocumentBuilder | None = None
    _processes: ProcessTable | None = None
    _bash: BashTracker | None = None
    stop_reason: str = "stopped"

    def start(self) -> None:
        """Compile, load and attach; after this returns, events are being captured."""
        self.probes = self.probes or Probes(self.cfg.capture)
        self.probes.on_attach_failure = getattr(self.sink, "probe_failed", None)
        self.probes.load()
        host_ns = detect_host_namespaces()
        assert self.probes.spec is not None
        enrich = Enrichment.of_host(host_ns, self.probes.spec.cgroup_mount)
        table = host_process_table(self.host, enrich, self.cfg.capture.max_processes,
                                   self.metrics.capture.processes_evicted.inc)
        self._builder = DocumentBuilder(self.host, enrich, data_stream(self.cfg), table)
        self._processes = table
        # Probes are attached: what starts from now on is recorded; what runs already
        # is entered from /proc, so its events join their sessions too.
        seeded = table.seed()
        if BASH.name in self.probes.families:
            self._bash = BashTracker(self.probes, self.cfg.capture.follow_new_bash,
                                     on_unreadable=self.metrics.capture.bash_unchecked.inc,
                                     on_deferred=self.metrics.capture.bash_deferred.inc)
        self._captured = {f.label: self.metrics.capture.events_captured.labels(kind=f.label)
                          for f in FAMILIES}
        self.probes.open(self._on_record)
        for family in self.probes.families:
            self.metrics.capture.probes_attached.labels(family=family).set(1)
        self._count_bash_probes()
        self.metrics.probes_attached = True
        self.metrics.families = list(self.probes.families)
        log.info("probes attached in %.2f s: %s; %d running processes entered",
                 self.probes.load_seconds, ", ".join(self.probes.families), seeded)

    def run(self) -> None:
        """Capture until stop() (or SIGINT/SIGTERM when installed), then flush."""
        assert self.probes is not None
        interval = self.cfg.capture.poll_interval_ms
        if self.on_ready:
            self.on_ready(self)
        next_housekeeping = 0.0
        try:
            while not self.stop_event.is_set():
                # A bash being checked off this thread is probed as soon as it is known:
                # its first line may come within milliseconds.
                checking = self._bash is not None and self._bash.checking
                self.probes.poll(BASH_CHECK_POLL_MS if checking else interval)
                self.sink.flush_pending()
                if checking:
                    self._follow_bash_results()
                # Wake-ups come every few dozen events in a storm; housekeeping (loss
                # counters, flushes) runs on the poll interval, not per wake-up.
                now = time.monotonic()
                if now >= next_housekeeping:
                    next_housekeeping = now + interval / 1000
                    self._report_losses()
                    self.sink.tick()
                    if self._processes is not None:
                        self.metrics.capture.processes_tracked.set(len(self._processes))
            self.probes.drain()  # what the kernel wrote before we were told to stop
            self._report_losses()
        finally:
            self.metrics.probes_attached = False
            self.probes.close()

    def stop(self, *args: Any) -> None:
        """Stop capturing; as a signal handler, remembers the signal (the stop document
        says why the collector stopped)."""
        if args and isinstance(args[0], int):
            self.stop_reason = f"signal {signal.Signals(args[0]).name}"
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    # -- per record

    def _on_record(self, data: bytes) -> None:
        try:
            event = decode(data, self.cfg.capture.max_args)
        except DecodeError as exc:
            self.metrics.capture.decode_errors.inc()
            log.warning("undecodable record: %s", exc)
            return
        kind = event.family.label
        if isinstance(event, BashEvent) and not self._is_bash(event.who.pid):
            return
        self._captured[kind].inc()
        if isinstance(event, ExecEvent) and event.args_fault:
            self.metrics.capture.args_unread.inc()
        assert self._builder is not None
        try:
            doc = self._builder.build(event)
        except Exception:  # one odd event must not stop the loop; it is counted
            self.metrics.capture.decode_errors.inc()
            log.exception("could not build a document for a %s event", kind)
            return
        self.sink.submit(doc)
        if isinstance(event, ExecEvent) and event.retval == 0:
            self._follow_bash(event)

    def _follow_bash_results(self) -> None:
        if self._bash is not None and self._bash.poll():
            self._count_bash_probes()

    def _follow_bash(self, event: ExecEvent) -> None:
        """Probe bash binaries that start running but are not probed yet."""
        if self._bash is not None and self._bash.on_exec(event):
            self._count_bash_probes()

    def _is_bash(self, pid: int) -> bool:
        return self._bash is None or self._bash.keeps_line(pid)

    # -- loss

    def _report_losses(self) -> None:
        assert self.probes is not None
        counts = self.probes.lost_counts()
        grown = {k: v - self._lost_seen.get(k, 0) for k, v in counts.items()}
        grown = {k: v for k, v in grown.items() if v > 0}
        if not grown:
            return
        self._lost_seen = counts
        self.sink.ringbuf_lost(grown, sum(counts.values()))

    def _count_bash_probes(self) -> None:
        assert self.probes is not None
        self.metrics.capture.probes_attached.labels(family="bash_binaries").set(
            len(self.probes.bash_probes))
