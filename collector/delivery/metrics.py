"""The delivery wing's metrics, registered in the registry of one collector instance.

Every component of the wing takes a `DeliveryMetrics`; left out, it gets one of its own on
a private registry, so tests read exact values without diffing a process-wide state.
"""

from __future__ import annotations

from collections.abc import Callable

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
        self.es_reachable = Gauge("audit_collector_elasticsearch_reachable",
                                  "1 when the last request got an HTTP response.", registry=r)
        # None until an Elasticsearch output has tried a request (for /health).
        self.es_reachable_state: bool | None = None

    def set_reachable(self, reachable: bool) -> None:
        self.es_reachable.set(1 if reachable else 0)
        self.es_reachable_state = reachable

    @staticmethod
    def read_at_scrape(gauge: Gauge, read: Callable[[], float]) -> None:
        """Take the value at scrape time instead of a set() per event (a lock per event)."""
        gauge.set_function(read)
