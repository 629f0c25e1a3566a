"""The pipeline hands sealed documents to the spool in runs (pipeline.SPOOL_RUN_DOCS):
when a run is full, after each poll (`flush_pending`), at every tick and before a loss
report or checkpoint, so the spool receives every document once and in sequence order."""

from __future__ import annotations

import functools
from pathlib import Path

import msgspec
import orjson

from collector.delivery.metrics import DeliveryMetrics
from collector.delivery.pipeline import SPOOL_RUN_DOCS, Pipeline
from collector.ecs.documents import events_lost_document
from collector.ecs.lifecycle import checkpoint_document
from tests.delivery.helpers import HOST, make_config, metric, new_pipeline, synthetic_doc
from tests.delivery.spool_support import read_all

UNUSED_URL = "http://127.0.0.1:9"  # the shipper is never started


def spooled(pipeline: Pipeline) -> list[tuple[int, str]]:
    """(sequence, action) of every record in the spool, in spool order."""
    spool = pipeline.spool
    assert spool is not None
    spool.flush()
    out: list[tuple[int, str]] = []
    while batch := spool.read_batch(1000, 1 << 30):
        out += [(r.seq, orjson.loads(r.data)["event"]["action"]) for r in batch]
        spool.ack(batch)
    return out


def test_documents_reach_the_spool_when_a_run_is_full_or_flushed(tmp_path: Path) -> None:
    metrics = DeliveryMetrics()
    pipeline = new_pipeline(make_config(tmp_path, UNUSED_URL), metrics, start_shipping=False)
    spool = pipeline.spool
    assert spool is not None
    for n in range(10):
        pipeline.submit(synthetic_doc(n))
    assert spool.pending()[0] == 0  # sealed, waiting for the end of the poll
    pipeline.flush_pending()
    assert spool.pending()[0] == 10
    for n in range(10, 10 + SPOOL_RUN_DOCS):
        pipeline.submit(synthetic_doc(n))
    assert spool.pending()[0] == 10 + SPOOL_RUN_DOCS  # a full run goes at once
    pipeline.submit(synthetic_doc(999))
    pipeline.tick()
    assert spool.pending()[0] == 11 + SPOOL_RUN_DOCS
    assert metric(metrics, "audit_collector_documents_total", output="spool") == \
        11 + SPOOL_RUN_DOCS
    seqs = [seq for seq, _ in spooled(pipeline)]
    assert seqs == list(range(seqs[0], seqs[0] + 11 + SPOOL_RUN_DOCS))


def test_a_checkpoint_follows_the_documents_it_signs(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, UNUSED_URL)
    cfg = msgspec.structs.replace(cfg, checkpoint=msgspec.structs.replace(
        cfg.checkpoint, every_docs=7, every_s=3600))
    pipeline = Pipeline(cfg, HOST, functools.partial(events_lost_document, HOST),
                        start_shipping=False,
                        build_checkpoint=functools.partial(checkpoint_document, HOST))
    for n in range(20):
        pipeline.submit(synthetic_doc(n))  # checkpoints after the 7th and the 14th
    pipeline.flush_pending()
    records = spooled(pipeline)
    seqs = [seq for seq, _ in records]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) == 22
    assert [i for i, (_, action) in enumerate(records) if action == "checkpoint"] == [7, 15]


def test_a_loss_report_follows_the_documents_before_it(tmp_path: Path) -> None:
    pipeline = new_pipeline(make_config(tmp_path, UNUSED_URL), start_shipping=False)
    for n in range(5):
        pipeline.submit(synthetic_doc(n))
    pipeline.ringbuf_lost({"exec": 3}, 3)
    pipeline.tick()
    records = spooled(pipeline)
    assert [action for _, action in records] == ["exec"] * 5 + ["events_lost"]
    assert [seq for seq, _ in records] == sorted(seq for seq, _ in records)


def test_close_leaves_no_document_behind(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, UNUSED_URL)
    pipeline = new_pipeline(cfg, start_shipping=False)
    for n in range(30):
        pipeline.submit(synthetic_doc(n))
    pipeline.close()
    again = new_pipeline(cfg, start_shipping=False)
    assert again.spool is not None
    last = pipeline.sealer.head.seq
    assert read_all(again.spool) == list(range(last - 29, last + 1))
