"""The delivery wing's metrics, registered in the registry of one collector instance.

Every component of the wing takes a `DeliveryMetrics`; left out, it gets one of its own on
a private registry, so tests read exact values without diffing a process-wide state.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Summary, disable_created_metrics

# The `_created` series double every counter for no use here.
disable_created_metrics()


class DeliveryMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events_lost = Counter(
            "audit_collector_events_lost", "Events lost, by kind and where (ringbuf "
            "reservation failures, spool policy drops, dead letters).", ["kind", "where"],
            registry=r)
        self.documents = Counter("audit_collector_documents", "Documents written, by output.",
                                 ["output"], registry=r)
        self.last_sequence = Gauge("audit_collector_last_sequence",
                                   "Highest event.sequence sealed by this collector.",
                                   registry=r)
        self.spool_bytes = Gauge("audit_collector_spool_bytes", "Bytes in spool segment files.",
                                 registry=r)
        self.spool_records = Gauge("audit_collector_spool_records",
                                   "Spooled records not yet acknowledged by Elasticsearch.",
                                   registry=r)
        self.spool_dropped = Counter("audit_collector_spool_dropped",
                                     "Records the spool dropped, by reason.", ["reason"],
                                     registry=r)
        self.spool_reads = Counter(
            "audit_collector_spool_read_records",
            "Records the shipper took from the spool, by source: memory (handed over as "
            "appended) or disk (a backlog older than memory holds, or after a restart).",
            ["source"], registry=r)
        self.spool_corrupt_bytes = Counter(
            "audit_collector_spool_corrupt_bytes",
            "Bytes skipped at open: torn tails and corrupt regions of segment files.",
            registry=r)
        self.shipped = Counter("audit_collector_shipped_documents",
                               "Documents stored by Elasticsearch (201).", registry=r)
        self.duplicates = Counter(
            "audit_collector_shipped_duplicates",
            "Documents Elasticsearch already had (409 on create): replays after a crash or "
            "retry.", registry=r)
        self.dead_letters = Counter("audit_collector_dead_letters",
                                    "Documents rejected by Elasticsearch (dead-lettered).",
                                    registry=r)
        self.retries = Counter(
            "audit_collector_bulk_retries",
            "Retries: whole bulk requests (kind=request) and rejected items (kind=item).",
            ["kind"], registry=r)
        self.bulk_latency = Summary("audit_collector_bulk_latency_seconds",
                                    "Time of _bulk requests that got a response.", registry=r)
        self.es_reachable = Gauge(
            "audit_collector_elasticsearch_reachable",
            "1 when the last request got an HTTP response (of any status: see "
            "audit_collector_shipping_* for whether documents are stored).", registry=r)
        self.item_errors = Counter(
            "audit_collector_bulk_item_errors",
            "Per-item errors in bulk responses, by error type and what the shipper did: "
            "dead_lettered (an error about the document) or retried (anything else).",
            ["type", "outcome"], registry=r)
        self.shipping = ShippingHealth(r)
        # None until an Elasticsearch output has tried a request (for /health).
        self.es_reachable_state: bool | None = None

    def set_reachable(self, reachable: bool) -> None:
        self.es_reachable.set(1 if reachable else 0)
        self.es_reachable_state = reachable

    @staticmethod
    def read_at_scrape(gauge: Gauge, read: Callable[[], float]) -> None:
        """Take the value at scrape time instead of a set() per event (a lock per event)."""
        gauge.set_function(read)


ERROR_TYPE_RE = re.compile(r"^[a-z0-9_]{1,80}$")


def error_type_label(error_type: Any) -> str:
    """An Elasticsearch error type as a label value (anything odd becomes "other")."""
    return error_type if isinstance(error_type, str) and ERROR_TYPE_RE.match(error_type) \
        else "other"


class ShippingHealth:
    """Whether documents reach Elasticsearch, for `/health` and the metrics.

    `audit_collector_elasticsearch_reachable` only says that the cluster (or a proxy in
    front of it) answers; a 401 answers too. This records what shipping achieves: when a
    bulk request last settled every document it carried, how many attempts failed since, and
    the class of the last failure. The shipper thread writes, the /health handler reads.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._active = False
        self._last_success: float | None = None  # unix time
        self._consecutive = 0
        self._last_class: str | None = None
        self._last_error: str | None = None
        self._blocked: str | None = None
        self._guard: str | None = None
        self.last_success_ts = Gauge(
            "audit_collector_shipping_last_success_timestamp_seconds",
            "Unix time of the last bulk request that settled every document it carried "
            "(0: none yet).", registry=registry)
        self.consecutive_failures = Gauge(
            "audit_collector_shipping_consecutive_failures",
            "Failed shipping attempts since the last success: failed requests, and bulk "
            "responses that held documents back for a retry.", registry=registry)
        self.failures = Counter(
            "audit_collector_shipping_failures",
            "Failed shipping attempts, by class (unauthorized, forbidden, too_large, "
            "rejected, unavailable, connection, timeout, index_blocked, ...).",
            ["error_class"], registry=registry)
        self.blocked = Gauge(
            "audit_collector_shipping_blocked",
            "1 while the shipper refuses the data stream (not built from the collector's "
            "index template, or not in index.mode standard).", registry=registry)

    def activate(self) -> None:
        """An Elasticsearch output exists: /health reports shipping from now on."""
        with self._lock:
            self._active = True

    def succeeded(self) -> tuple[int, str | None]:
        """A bulk request settled everything; (failures before it, their last class)."""
        now = time.time()
        with self._lock:
            before, last = self._consecutive, self._last_class
            self._consecutive = 0
            self._last_success = now
        self.consecutive_failures.set(0)
        self.last_success_ts.set(now)
        return before, last

    def failed(self, error_class: str, detail: str) -> bool:
        """One failed attempt; True when it starts a failure streak or changes its class
        (worth a log line)."""
        with self._lock:
            news = self._consecutive == 0 or error_class != self._last_class
            self._consecutive += 1
            self._last_class, self._last_error = error_class, detail
            count = self._consecutive
        self.consecutive_failures.set(count)
        self.failures.labels(error_class=error_class).inc()
        return news

    @property
    def consecutive(self) -> int:
        with self._lock:
            return self._consecutive

    def set_guard(self, guard: str, blocked_reason: str | None) -> None:
        """The data stream check's verdict ("ok", "unverified: ...", "blocked: ...")."""
        with self._lock:
            self._guard, self._blocked = guard, blocked_reason
        self.blocked.set(1 if blocked_reason else 0)

    @property
    def blocked_reason(self) -> str | None:
        with self._lock:
            return self._blocked

    def snapshot(self) -> dict[str, Any] | None:
        """The `shipping` object of /health; None without an Elasticsearch output."""
        with self._lock:
            if not self._active:
                return None
            since = (round(time.time() - self._last_success, 3)
                     if self._last_success is not None else None)
            return {
                "state": self._state(),
                "last_success": _iso(self._last_success),
                "seconds_since_success": since,
                "consecutive_failures": self._consecutive,
                "last_error_class": self._last_class,
                "last_error": self._last_error,
                "guard": self._guard,
            }

    def _state(self) -> str:
        if self._blocked:
            return f"blocked: {self._blocked}"
        if self._consecutive:
            return "failing"
        return "ok" if self._last_success is not None else "idle"


def _iso(unix: float | None) -> str | None:
    if unix is None:
        return None
    return datetime.fromtimestamp(unix, timezone.utc).isoformat(timespec="milliseconds")
