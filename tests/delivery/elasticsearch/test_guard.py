"""The template guard: never ship into a data stream that is not built from the collector's
template, or that is not in index.mode standard (issue 10: on Elasticsearch 9 a stream
created without the template is logsdb, whose synthetic _source breaks the hash chain)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from collector.delivery.elasticsearch import shipper
from collector.delivery.elasticsearch.client import build_client
from collector.delivery.elasticsearch.index import (
    check_stream,
    setup_cluster,
    stream_guard,
    template_body,
)
from collector.delivery.spool import Spool
from collector.metrics import Metrics
from tests.delivery.elasticsearch.support import wait_for
from tests.delivery.elasticsearch.test_faults import assert_exactly_once, assert_verify_clean
from tests.delivery.helpers import DATA_STREAM, make_config, metric, new_pipeline, submit_docs
from tests.esserver import ESTestServer

SHIPPER_LOG = "collector.delivery.elasticsearch.shipper"
TS = "2024-11-29T02:00:00.000000001Z"


@pytest.fixture
def es9() -> Iterator[ESTestServer]:
    with ESTestServer(major=9) as srv:
        yield srv


@pytest.fixture
def fast_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shipper, "GUARD_BLOCKED_INTERVAL_S", 0.2)


def test_no_template_on_9_blocks_until_setup(es9: ESTestServer, tmp_path: Path,
                                             fast_guard: None,
                                             caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_config(tmp_path, es9.url, es={"api_version": 9})
    metrics = Metrics()
    with caplog.at_level(logging.INFO, logger=SHIPPER_LOG):
        pipeline = new_pipeline(cfg, metrics.delivery)
        run = submit_docs(pipeline, 100)
        pipeline.tick()
        wait_for(lambda: (metrics.health()["shipping"] or {}).get("state", "").startswith(
            "blocked"), what="blocked")
        state = metrics.health()["shipping"]["state"]
        assert "logs-audit_collector" in state and "setup" in state
        assert metric(metrics.delivery, "audit_collector_shipping_blocked") == 1
        assert es9.data_stream_names() == []  # no logsdb stream was auto-created
        assert es9.counter("requests.bulk") == 0

        assert setup_cluster(cfg, io.StringIO()) == 0  # the guard re-checks and lets go
        wait_for(lambda: metrics.health()["shipping"]["state"] == "ok", what="unblocked")
        pipeline.close(30)
    assert_exactly_once(es9, run)
    assert metric(metrics.delivery, "audit_collector_shipping_blocked") == 0
    blocked = [r for r in caplog.records if "refus" in r.getMessage()]
    assert len(blocked) == 1 and blocked[0].levelno == logging.ERROR
    assert_verify_clean(cfg)


def test_a_logsdb_stream_stays_blocked_and_documents_stay_spooled(
    es9: ESTestServer, tmp_path: Path, fast_guard: None
) -> None:
    cfg = make_config(tmp_path, es9.url, es={"api_version": 9})
    # Someone wrote to the stream before setup: the built-in logs template made it logsdb.
    client = Elasticsearch(es9.url)
    client.index(index=DATA_STREAM, document={"@timestamp": TS})
    client.close()
    # Our template is installed by hand (not by setup, which would roll the stream over):
    # the stream stays logsdb.
    client = Elasticsearch(es9.url)
    client.indices.put_index_template(name="logs-audit_collector", **template_body(cfg))
    client.close()
    guard = stream_guard(build_client(cfg), cfg)
    assert not guard.ok and "logsdb" in guard.reason and "_rollover" in guard.reason
    metrics = Metrics()
    pipeline = new_pipeline(cfg, metrics.delivery)
    submit_docs(pipeline, 50)
    pipeline.tick()
    wait_for(lambda: (metrics.health()["shipping"] or {}).get("state", "").startswith(
        "blocked"), what="blocked")
    assert "logsdb" in metrics.health()["shipping"]["state"]
    pipeline.close(0.5)
    assert es9.doc_count(DATA_STREAM) == 1
    assert Spool(cfg.spool).pending()[0] == 50
    out = io.StringIO()
    assert setup_cluster(cfg, out) == 0 and "rolled over" in out.getvalue()  # what fixes it
    assert stream_guard(build_client(cfg), cfg).ok


def test_stream_guard_answers_for_check(es9: ESTestServer, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, es9.url, es={"api_version": 9})
    client = build_client(cfg)
    missing = stream_guard(client, cfg)
    assert not missing.ok and "not installed" in missing.reason
    ok, line = check_stream(client, cfg)
    assert not ok and "setup" in line
    setup_cluster(cfg, io.StringIO())
    assert stream_guard(client, cfg).ok
    ok, line = check_stream(client, cfg)
    assert ok and "standard" in line
    # Another template for the stream: not ours, whatever its mode.
    other = make_config(tmp_path, es9.url, es={"api_version": 9, "dataset": "other"})
    client.indices.put_index_template(name="someone-elses", index_patterns=["logs-other-*"],
                                      data_stream={}, priority=500, template={
                                          "settings": {"index.mode": "standard"}})
    client.indices.create_data_stream(name="logs-other-default")
    refused = stream_guard(client, other)
    assert not refused.ok and "someone-elses" in refused.reason
    client.close()


def test_without_the_privilege_to_look_the_guard_is_unverified(
    server: ESTestServer, tmp_path: Path
) -> None:
    server.fail_requests(403, requests=None, endpoints=("data_stream", "index_template"))
    cfg = make_config(tmp_path, server.url)
    client = build_client(cfg)
    result = stream_guard(client, cfg)
    assert result.ok and result.unverified and "view_index_metadata" in result.reason
    ok, line = check_stream(client, cfg)
    assert not ok and "view_index_metadata" in line
    client.close()
    metrics = Metrics()
    pipeline = new_pipeline(cfg, metrics.delivery)  # ships, and says the guard is blind
    run = submit_docs(pipeline, 20)
    pipeline.close(30)
    assert_exactly_once(server, run)
    assert "unverified" in metrics.health()["shipping"]["guard"]
