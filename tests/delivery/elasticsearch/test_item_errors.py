"""Per-item errors: only errors about the document itself are dead-lettered; cluster
conditions and unknown errors are held and retried (issue 10, item 10)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from collector.delivery.metrics import DeliveryMetrics
from tests.delivery.elasticsearch.support import wait_for
from tests.delivery.elasticsearch.test_faults import assert_exactly_once, deliver
from tests.delivery.helpers import (
    dead_letter_ids,
    make_config,
    metric,
    new_pipeline,
    stored,
    submit_docs,
)
from tests.esserver import ESTestServer

SHIPPER_LOG = "collector.delivery.elasticsearch.shipper"


@pytest.mark.parametrize(("status", "error_type"), [
    (400, "index_closed_exception"),
    (429, "cluster_block_exception"),  # flood-stage watermark
    (403, "cluster_block_exception"),  # index.blocks.write
    (403, "security_exception"),  # a role without create_doc on the stream
    (404, "index_not_found_exception"),  # auto-create off
    (429, "circuit_breaking_exception"),
    (503, "unavailable_shards_exception"),
    (429, "es_rejected_execution_exception"),
    (400, "a_future_exception"),  # unknown: held, not dead-lettered
])
def test_item_errors_not_about_the_document_are_retried(
    server: ESTestServer, tmp_path: Path, status: int, error_type: str
) -> None:
    server.fail_items(status, error_type=error_type, requests=3)  # every item, 3 bulks
    metrics = DeliveryMetrics()
    run = deliver(make_config(tmp_path, server.url), 300, metrics=metrics)
    assert_exactly_once(server, run)
    assert dead_letter_ids(cfg := make_config(tmp_path, server.url)) == [], cfg
    assert server.counter(f"bulk.items.status.{status}") >= 300
    assert metric(metrics, "audit_collector_bulk_item_errors_total", type=error_type,
                  outcome="retried") >= 300
    assert metric(metrics, "audit_collector_dead_letters_total") == 0


@pytest.mark.parametrize(("error_type", "reason"), [
    ("document_parsing_exception", "[1:120] failed to parse field [process.pid] of type "
     "[long] in document with id 'x'. Preview of field's value: 'abc'"),
    ("mapper_parsing_exception", "failed to parse field [process.pid] of type [long]"),
    ("strict_dynamic_mapping_exception", "[1:2] mapping set to strict, dynamic introduction "
     "of [extra] within [_doc] is not allowed"),
    ("illegal_argument_exception", "Document contains at least one immense term in "
     "field=\"message\" (whose UTF8 encoding is longer than the max length 32766)"),
])
def test_document_errors_are_dead_lettered(server: ESTestServer, tmp_path: Path,
                                           error_type: str, reason: str) -> None:
    server.fail_items(400, error_type=error_type, reason=reason, requests=None,
                      predicate=lambda item: item.source is not None
                      and item.source.get("process", {}).get("pid", 1) % 25 == 3)
    metrics = DeliveryMetrics()
    cfg = make_config(tmp_path, server.url)
    run = deliver(cfg, 200, metrics=metrics)
    rejected = frozenset(i for n, i in enumerate(run.ids) if (1000 + n) % 25 == 3)
    assert_exactly_once(server, run, rejected)
    assert sorted(dead_letter_ids(cfg)) == sorted(rejected)
    assert metric(metrics, "audit_collector_bulk_item_errors_total", type=error_type,
                  outcome="dead_lettered") == len(rejected)


def test_illegal_argument_not_about_a_field_is_retried(server: ESTestServer,
                                                       tmp_path: Path) -> None:
    server.fail_items(400, error_type="illegal_argument_exception", requests=2,
                      reason="only write ops with an op_type of create are allowed in data "
                      "streams")
    cfg = make_config(tmp_path, server.url)
    run = deliver(cfg, 100)
    assert_exactly_once(server, run)
    assert dead_letter_ids(cfg) == []


def test_unknown_item_errors_are_logged_rate_limited(
    server: ESTestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.fail_items(400, error_type="a_future_exception", requests=6,
                      reason="something new")
    cfg = make_config(tmp_path, server.url, retry={"item_attempts": 3})
    with caplog.at_level(logging.INFO, logger=SHIPPER_LOG):
        run = deliver(cfg, 100)
    assert_exactly_once(server, run)
    lines = [r.getMessage() for r in caplog.records if "a_future_exception" in r.getMessage()]
    assert len(lines) == 1, lines  # six rejected rounds, one line
    assert "something new" in lines[0] and "retried" in lines[0]


def test_flood_stage_holds_documents_until_it_clears(server: ESTestServer,
                                                     tmp_path: Path) -> None:
    server.flood_stage(True)
    cfg = make_config(tmp_path, server.url)
    metrics = DeliveryMetrics()
    pipeline = new_pipeline(cfg, metrics)
    run = submit_docs(pipeline, 200)
    pipeline.tick()
    wait_for(lambda: server.counter("bulk.items.blocked") >= 400, what="blocked items")
    assert stored(server) == {}
    server.flood_stage(False)
    pipeline.close(30)
    assert_exactly_once(server, run)
    assert dead_letter_ids(cfg) == []


def test_auto_create_off_holds_documents_until_the_stream_exists(
    server: ESTestServer, tmp_path: Path
) -> None:
    """The template is installed (setup ran for another namespace), the stream is not, and
    auto-creation is off: per-item 404 index_not_found until someone creates it."""
    server.cluster_settings(**{"action.auto_create_index": False})
    cfg = make_config(tmp_path, server.url, es={"namespace": "other"})
    pipeline = new_pipeline(cfg)
    run = submit_docs(pipeline, 50)
    pipeline.tick()
    wait_for(lambda: server.counter("bulk.items.index_not_found") >= 100,
             what="index_not_found items")
    server.cluster.put_data_stream("logs-audit_collector-other")
    pipeline.close(30)
    assert sorted(server.docs("logs-audit_collector-other")) == sorted(run.ids)
    assert dead_letter_ids(cfg) == []
