"""The collector's lifecycle in its own sealed sequence: start, heartbeat, probe failures and
detaches, stop.

`Lifecycle` stands between the capture loop and the delivery pipeline (it is the agent's
sink): it passes documents through, writes a heartbeat every `lifecycle.heartbeat_s` with
the counters since the last one, and a stop document before the pipeline closes. The start
document is the first one sealed by a run: it says which probe families are attached, the
version and configuration digest, when the host booted, the host's public checkpoint key,
and how the previous run ended (clean, with its last sequence, or unclean), so that
`report gaps` can tell a restart from a crash and a quiet host from a dead collector.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from collector.capture.families import FAMILIES
from collector.config import Config
from collector.delivery.pipeline import Pipeline
from collector.ecs.documents import Doc
from collector.ecs.host import HostInfo
from collector.ecs.lifecycle import (
    checkpoint_document,
    heartbeat_document,
    probe_document,
    start_document,
    stop_document,
)
from collector.metrics import Metrics


def host_boot_time(stat_path: str = "/proc/stat") -> str | None:
    """When the host booted (btime of /proc/stat), RFC 3339 UTC; None when unknown."""
    try:
        with open(stat_path) as handle:
            for line in handle:
                if line.startswith("btime "):
                    since = int(line.split()[1])
                    return datetime.fromtimestamp(since, timezone.utc).isoformat().replace(
                        "+00:00", "Z")
    except (OSError, ValueError, IndexError):
        return None
    return None


def checkpoint_builder(host: HostInfo) -> Callable[[dict[str, Any]], Doc]:
    """The pipeline's checkpoint document builder for this host."""
    return functools.partial(checkpoint_document, host)


class Counters:
    """The metrics a heartbeat reports, as differences since the last reading."""

    def __init__(self, metrics: Metrics) -> None:
        self._registry = metrics.registry
        self._last = self._read()

    def _value(self, name: str, **labels: str) -> float:
        return self._registry.get_sample_value(name, labels) or 0.0

    def _lost(self) -> float:
        total = 0.0
        for metric in self._registry.collect():
            if metric.name == "audit_collector_events_lost":
                total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
        return total

    def _read(self) -> dict[str, float]:
        values = {f"captured.{f.label}": self._value("audit_collector_events_captured_total",
                                                     kind=f.label) for f in FAMILIES}
        values["lost"] = self._lost()
        values["spooled"] = self._value("audit_collector_documents_total", output="spool")
        values["shipped"] = self._value("audit_collector_shipped_documents_total")
        values["dead_lettered"] = self._value("audit_collector_dead_letters_total")
        return values

    def since_last(self) -> dict[str, Any]:
        now = self._read()
        grown = {k: int(now[k] - self._last.get(k, 0.0)) for k in now}
        self._last = now
        counts: dict[str, Any] = {"captured": {k.split(".", 1)[1]: v for k, v in grown.items()
                                               if k.startswith("captured.")}}
        counts.update({k: v for k, v in grown.items() if not k.startswith("captured.")})
        return counts


class Lifecycle:
    """The agent's sink: the pipeline, plus the collector's own documents."""

    def __init__(self, cfg: Config, host: HostInfo, pipeline: Pipeline, metrics: Metrics,
                 config_digest: str, clock: Callable[[], float] = time.monotonic,
                 wall_ns: Callable[[], int] = time.time_ns) -> None:
        """clock: when heartbeats are due; wall_ns: the documents' time (tests set both)."""
        self._cfg = cfg
        self._host = host
        self._pipeline = pipeline
        self._digest = config_digest
        self._clock = clock
        self._wall_ns = wall_ns
        self._counters = Counters(metrics)
        self._interval = cfg.lifecycle.heartbeat_s
        self._next_heartbeat = clock() + self._interval
        self._since_ns = wall_ns()
        self._families: list[str] = []
        self._early: list[Doc] = []  # probe failures before the start document
        self._started = False
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    def started(self, families: list[str], ok: bool = True) -> None:
        """The start document: call before anything else is submitted."""
        self._families = list(families)
        self._pipeline.submit(start_document(self._host, self._start_fields(families), ok,
                                             now_ns=self._wall_ns()))
        self._started = True
        for doc in self._early:
            self._pipeline.submit(doc)
        self._early.clear()
        self._since_ns = self._wall_ns()
        self._next_heartbeat = self._clock() + self._interval

    def _start_fields(self, families: list[str]) -> dict[str, Any]:
        sealer = self._pipeline.sealer
        previous: dict[str, Any] = {"end": sealer.previous_end}
        if sealer.previous_last is not None:
            previous["last_sequence"] = sealer.previous_last
        if sealer.skipped is not None:
            previous["skipped_first"], previous["skipped_last"] = sealer.skipped
        fields: dict[str, Any] = {
            "config_digest": self._digest, "families": families,
            "heartbeat_s": self._interval, "previous": previous,
        }
        boot = host_boot_time()
        if boot is not None:
            fields["host_boot_time"] = boot
        checkpoints = self._pipeline.checkpoints
        if checkpoints is None:
            fields["signing"] = "off"
        else:
            fields["signing"] = checkpoints.signing
            if checkpoints.key is not None:
                fields["public_key"] = checkpoints.key.public_b64
                fields["key_id"] = checkpoints.key.id
        return fields

    def probe_failed(self, family: str, target: str, error: str) -> None:
        doc = probe_document(self._host, True, family, target, error, now_ns=self._wall_ns())
        if self._started:
            self._pipeline.submit(doc)
        else:
            self._early.append(doc)

    def stopped(self, reason: str) -> None:
        """Detach and stop documents (the last ones of a clean run), then close."""
        if self._closed:
            return
        for family in self._families:
            self._pipeline.submit(probe_document(self._host, False, family,
                                                 now_ns=self._wall_ns()))
        self._pipeline.submit(stop_document(self._host, reason, self._families,
                                            now_ns=self._wall_ns()))
        self.close()

    # ------------------------------------------------------------------ DocumentSink

    def submit(self, doc: Doc) -> None:
        self._pipeline.submit(doc)

    def ringbuf_lost(self, grown: dict[str, int], total: int) -> None:
        self._pipeline.ringbuf_lost(grown, total)

    def flush_pending(self) -> None:
        self._pipeline.flush_pending()

    def tick(self) -> None:
        now = self._clock()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self._interval
            self.heartbeat()
        self._pipeline.tick()

    def heartbeat(self) -> None:
        since, self._since_ns = self._since_ns, self._wall_ns()
        self._pipeline.submit(heartbeat_document(self._host, self._interval, since,
                                                 self._counters.since_last(),
                                                 now_ns=self._since_ns))

    def close(self, timeout_s: float = 10.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._pipeline.close(timeout_s)

