"""The loss ledger: every loss counted once, reported once per run, reports that are lost
reported again, reports that Elasticsearch rejects not reported in a loop."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import orjson

from collector.delivery.chain import point_of
from collector.delivery.loss import DroppedRange, LossLedger
from collector.delivery.metrics import DeliveryMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def build(counts: dict[str, int], source: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {"lost": {"source": source, **counts, **extra}}


class Writer:
    """Seals reports with consecutive sequences from 1000; refuses while `full`."""

    def __init__(self) -> None:
        self.docs: list[tuple[int, dict[str, Any]]] = []
        self.full = False

    def __call__(self, doc: dict[str, Any]) -> int | None:
        if self.full:
            return None
        seq = 1000 + len(self.docs)
        self.docs.append((seq, doc))
        return seq

    def lost(self) -> list[dict[str, Any]]:
        return [doc["lost"] for _, doc in self.docs]


def sealed(seq: int, chain_hash: str) -> bytes:
    return orjson.dumps({"event": {"sequence": seq},
                         "audit_collector": {"chain": {"prev": "", "hash": chain_hash}}})


def ledger(clock: Clock | None = None) -> tuple[LossLedger, DeliveryMetrics]:
    metrics = DeliveryMetrics()
    return LossLedger(metrics, build, point_of, clock or Clock()), metrics


def lost_metric(metrics: DeliveryMetrics, **labels: str) -> float:
    return metrics.registry.get_sample_value("audit_collector_events_lost_total", labels) or 0


def test_contiguous_drops_become_one_report_with_the_chain_link() -> None:
    losses, metrics = ledger()
    losses.spool_dropped([DroppedRange(10, 19, "drop-oldest", sealed(19, "h19"))])
    losses.spool_dropped([DroppedRange(20, 29, "drop-oldest", sealed(29, "h29"))])
    losses.spool_dropped([DroppedRange(40, 40, "drop-newest", sealed(40, "h40"))])
    write = Writer()
    losses.report(write)
    assert write.lost() == [
        {"source": "spool", "documents": 20, "first_sequence": 10, "last_sequence": 29,
         "reason": "drop-oldest", "last_chain_hash": "h29"},
        {"source": "spool", "documents": 1, "first_sequence": 40, "last_sequence": 40,
         "reason": "drop-newest", "last_chain_hash": "h40"},
    ]
    assert lost_metric(metrics, kind="document", where="spool") == 21
    assert not losses.pending()


def test_reports_come_at_most_once_per_interval_unless_forced() -> None:
    clock = Clock()
    losses, _ = ledger(clock)
    write = Writer()
    losses.spool_dropped([DroppedRange(1, 1, "full")])
    losses.report(write)
    losses.spool_dropped([DroppedRange(5, 5, "full")])
    losses.report(write)
    assert len(write.docs) == 1
    clock.now += 1.0
    losses.report(write)
    assert len(write.docs) == 2
    losses.spool_dropped([DroppedRange(9, 9, "full")])
    losses.report(write, force=True)
    assert len(write.docs) == 3


def test_a_refused_report_stays_held() -> None:
    losses, _ = ledger()
    write = Writer()
    write.full = True
    losses.spool_dropped([DroppedRange(1, 3, "full")])
    losses.report(write, force=True)
    assert write.docs == [] and losses.pending()
    write.full = False
    losses.report(write, force=True)
    assert [doc["first_sequence"] for doc in write.lost()] == [1]


def test_a_report_dropped_before_it_was_shipped_is_made_again() -> None:
    losses, _ = ledger()
    write = Writer()
    losses.spool_dropped([DroppedRange(1, 5, "drop-oldest")])
    losses.report(write, force=True)
    (report_seq, _doc), = write.docs
    # drop-oldest now deletes the segment that held the report itself
    losses.spool_dropped([DroppedRange(report_seq - 1, report_seq, "drop-oldest")])
    losses.report(write, force=True)
    reported = [(d["first_sequence"], d["last_sequence"]) for d in write.lost()]
    assert reported == [(1, 5), (report_seq - 1, report_seq), (1, 5)]


def test_an_acknowledged_report_is_not_made_again() -> None:
    losses, _ = ledger()
    write = Writer()
    losses.spool_dropped([DroppedRange(1, 5, "drop-oldest")])
    losses.report(write, force=True)
    report_seq = write.docs[0][0]
    losses.acknowledged(report_seq)
    losses.spool_dropped([DroppedRange(report_seq, report_seq, "drop-oldest")])
    losses.report(write, force=True)
    assert [(d["first_sequence"], d["last_sequence"]) for d in write.lost()] == \
        [(1, 5), (report_seq, report_seq)]


def test_rejected_documents_are_reported_but_rejected_reports_are_not() -> None:
    losses, metrics = ledger()
    write = Writer()
    losses.rejected([(7, sealed(7, "h7")), (8, sealed(8, "h8")), (12, sealed(12, "h12"))])
    losses.report(write, force=True)
    assert [(d["source"], d["first_sequence"], d["last_sequence"], d["last_chain_hash"])
            for d in write.lost()] == [("dead_letter", 7, 8, "h8"),
                                       ("dead_letter", 12, 12, "h12")]
    own = [seq for seq, _ in write.docs]
    losses.rejected([(seq, b"{}") for seq in own])  # Elasticsearch rejects the reports too
    losses.report(write, force=True)
    assert len(write.docs) == 2  # no report about a rejected report: that would loop
    assert lost_metric(metrics, kind="document", where="dead_letter") == 5


def test_ring_buffer_losses_are_summed_per_family_until_reported() -> None:
    losses, metrics = ledger()
    write = Writer()
    losses.ringbuf_lost({"exec": 3}, 3)
    losses.ringbuf_lost({"exec": 2, "bash": 1}, 6)
    before = time.time()
    losses.report(write)
    [report] = write.lost()
    first_seen = datetime.fromisoformat(report.pop("first_seen")).timestamp()
    assert report == {"source": "ringbuf", "exec": 5, "bash": 1, "total": 6}
    assert before - 5 < first_seen <= before  # when the first of them was seen
    assert lost_metric(metrics, kind="exec", where="ringbuf") == 5
    assert lost_metric(metrics, kind="bash", where="ringbuf") == 1
