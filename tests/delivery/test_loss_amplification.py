"""Loss reports during an outage with a full spool (issue 10, item 20): the spool drops
segments that hold earlier loss reports, the ledger reports those losses again; before,
each came back as a report of its own, so reports grew every round (~30 WARNING lines a
second in the field, thousands of the dropped documents were loss reports)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import orjson
import pytest

from collector.delivery.chain import Sealer, point_of
from collector.delivery.loss import DroppedRange, LossLedger
from collector.delivery.metrics import DeliveryMetrics
from collector.delivery.spool import Spool
from collector.ecs.documents import events_lost_document
from tests.delivery.helpers import HOST, synthetic_doc
from tests.delivery.spool_support import PAYLOAD, spool_cfg


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_with_a_full_spool_reports_once_per_round(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The pipeline's wiring, without the shipper (Elasticsearch is down): 600 documents
    a second into a 1 MiB spool, the ledger's round once a second, for two minutes."""
    clock, metrics = Clock(), DeliveryMetrics()
    ledger = LossLedger(metrics, functools.partial(events_lost_document, HOST), point_of,
                        clock)
    spool = Spool(spool_cfg(tmp_path / "spool", max_bytes=1 << 20, segment_bytes=64 << 10),
                  ledger.spool_dropped, metrics)
    sealer = Sealer(tmp_path / "state", HOST)
    reports: list[int] = []
    first_seq = [sealer.head.seq + 1]

    def write(doc: dict, report: bool = False) -> int | None:
        sealed = sealer.seal(doc)
        if report:
            reports.append(sealed.seq)
        return sealed.seq if spool.append(sealed.seq, sealed.id, sealed.data, report) else None

    per_round = []
    with caplog.at_level(logging.WARNING, logger="collector.delivery.loss"):
        for second in range(120):
            for n in range(600):
                write(synthetic_doc(second * 600 + n, pad=300))
            spool.flush()
            clock.now += 1
            before = len(reports)
            ledger.report(functools.partial(write, report=True))
            per_round.append(len(reports) - before)
    assert max(per_round) == 1, per_round  # one cause (drop-oldest): one report a round
    assert len(caplog.records) <= 120
    # Nothing is lost unreported: at shutdown (forced rounds) every sequence missing from
    # the spool is covered by a report in it.
    for _ in range(5):
        ledger.report(functools.partial(write, report=True), force=True)
    spool.flush()
    kept: dict[int, dict] = {}
    while batch := spool.read_batch(1000, 1 << 30):
        kept.update((r.seq, orjson.loads(r.data)) for r in batch)
        spool.ack(batch)
    covered = {s for doc in kept.values() if (lost := doc["audit_collector"].get("lost"))
               for s in range(lost["first_sequence"], lost["last_sequence"] + 1)}
    missing = set(range(first_seq[0], max(kept))) - set(kept)
    assert len(missing) > 60_000 and missing <= covered
    assert not ledger.pending()
    assert len(reports) < 130


def test_one_append_that_drops_several_segments_reports_one_run(tmp_path: Path) -> None:
    calls: list[list[DroppedRange]] = []
    spool = Spool(spool_cfg(tmp_path, max_bytes=64 << 10, segment_bytes=16 << 10),
                  calls.append)
    for seq in range(1, 200):
        spool.append(seq, f"id-{seq}", PAYLOAD % seq)
    spool.flush()
    calls.clear()
    assert spool.append(200, "id-200", b"x" * (40 << 10))  # room for it: two segments go
    assert len(calls) == 1
    [[run]] = calls
    assert (run.first_seq, run.reason) == (1, "drop-oldest") and run.count > 100
