"""Shipping health: /health and the metrics tell whether documents reach Elasticsearch, not
only whether it answers (issue 10, items 9 and 4)."""

from __future__ import annotations

import base64
import logging
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.delivery.elasticsearch import shipper
from collector.metrics import Metrics, MetricsServer
from tests.delivery.elasticsearch.support import wait_for
from tests.delivery.elasticsearch.test_faults import assert_exactly_once
from tests.delivery.helpers import dead_letter_ids, make_config, metric, new_pipeline, submit_docs
from tests.esserver import ESTestServer

SHIPPER_LOG = "collector.delivery.elasticsearch.shipper"


@pytest.fixture
def endpoint() -> Iterator[tuple[Metrics, str]]:
    metrics = Metrics()
    server = MetricsServer("127.0.0.1", 0, metrics)
    server.start()
    host, port = server.address
    yield metrics, f"http://{host}:{port}"
    server.stop()


def health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
        return dict(orjson.loads(response.read()))


def shipping(url: str) -> dict[str, Any]:
    return dict(health(url)["shipping"])


@pytest.mark.parametrize(("status", "error_class"), [
    (401, "unauthorized"), (403, "forbidden"), (413, "too_large"), (502, "unavailable"),
    (503, "unavailable"), (429, "rejected")])
def test_health_says_shipping_fails_while_every_request_is_rejected(
    server: ESTestServer, tmp_path: Path, endpoint: tuple[Metrics, str], status: int,
    error_class: str
) -> None:
    metrics, url = endpoint
    server.fail_requests(status, requests=None)
    cfg = make_config(tmp_path, server.url)
    pipeline = new_pipeline(cfg, metrics.delivery)
    run = submit_docs(pipeline, 30)
    pipeline.tick()
    wait_for(lambda: shipping(url)["consecutive_failures"] >= 2, what="failures")
    now = health(url)
    # Elasticsearch (or its proxy) answers: reachable, but nothing is shipped.
    assert now["elasticsearch_reachable"] is True
    assert now["shipping"]["state"] == "failing"
    assert now["shipping"]["last_error_class"] == error_class
    assert now["shipping"]["last_success"] is None
    assert "\n" not in now["shipping"]["last_error"]
    registry = metrics.delivery
    assert metric(registry, "audit_collector_elasticsearch_reachable") == 1
    assert metric(registry, "audit_collector_shipping_consecutive_failures") >= 2
    assert metric(registry, "audit_collector_shipping_failures_total", **{
        "error_class": error_class}) >= 2
    assert metric(registry, "audit_collector_shipping_last_success_timestamp_seconds") == 0

    server.clear_faults()
    wait_for(lambda: shipping(url)["state"] == "ok", what="recovery")
    after = shipping(url)
    assert after["consecutive_failures"] == 0 and after["last_success"] is not None
    assert after["last_error_class"] == error_class  # the last error stays visible
    assert metric(registry, "audit_collector_shipping_consecutive_failures") == 0
    assert metric(registry, "audit_collector_shipping_last_success_timestamp_seconds") > 0
    pipeline.close(30)
    assert_exactly_once(server, run)
    assert dead_letter_ids(cfg) == []


def test_connection_refused_is_unreachable_and_failing(tmp_path: Path,
                                                       endpoint: tuple[Metrics, str]) -> None:
    metrics, url = endpoint
    with ESTestServer(major=8) as srv:
        cfg = make_config(tmp_path, srv.url)
    pipeline = new_pipeline(cfg, metrics.delivery)  # the server is gone: port closed
    submit_docs(pipeline, 5)
    pipeline.tick()
    wait_for(lambda: shipping(url)["consecutive_failures"] >= 2, what="failures")
    now = health(url)
    assert now["elasticsearch_reachable"] is False
    assert now["shipping"]["last_error_class"] == "connection"
    pipeline.close(0.2)


def test_health_before_anything_was_shipped(endpoint: tuple[Metrics, str]) -> None:
    _, url = endpoint
    assert health(url)["shipping"] is None  # no Elasticsearch output (yet)


def test_revoked_api_key_is_retried_logged_once_and_resumes_when_restored(
    server: ESTestServer, tmp_path: Path, endpoint: tuple[Metrics, str],
    caplog: pytest.LogCaptureFixture
) -> None:
    """401 with WWW-Authenticate: retried with backoff, one clear log line (never the key),
    visible in /health; when the key is valid again, shipping resumes on its own."""
    metrics, url = endpoint
    secret = "s3cr3t-Key-Value"
    encoded = base64.b64encode(f"collector-key:{secret}".encode()).decode()
    key_file = tmp_path / "api_key"
    key_file.write_text(encoded + "\n")
    server.add_api_key("admin-key", "other")  # security on; our key is not (yet) known
    cfg = make_config(tmp_path, server.url, es={"api_key_file": str(key_file)},
                      retry={"initial_s": 0.02, "max_s": 0.1})
    with caplog.at_level(logging.DEBUG):
        pipeline = new_pipeline(cfg, metrics.delivery)
        run = submit_docs(pipeline, 40)
        pipeline.tick()
        wait_for(lambda: shipping(url)["consecutive_failures"] >= 5, what="401s")
        assert shipping(url)["last_error_class"] == "unauthorized"
        assert server.counter("responses.401") >= 5
        server.add_api_key("collector-key", secret)  # rotated back in
        wait_for(lambda: shipping(url)["state"] == "ok", what="resumed")
        pipeline.close(30)
    assert_exactly_once(server, run)
    ours = [r for r in caplog.records if r.name == SHIPPER_LOG]
    refused = [r.getMessage() for r in ours
               if r.levelno >= logging.WARNING and "401" in r.getMessage()]
    assert len(refused) == 1, refused  # debug has a line per retry
    assert "credentials" in refused[0] and r"api_key" in refused[0]
    assert any("resumed" in r.getMessage() for r in ours)
    assert secret not in caplog.text and encoded not in caplog.text


def test_forbidden_bulk_is_logged_once_per_change(
    server: ESTestServer, tmp_path: Path, endpoint: tuple[Metrics, str],
    caplog: pytest.LogCaptureFixture
) -> None:
    metrics, url = endpoint
    cfg = make_config(tmp_path, server.url, retry={"initial_s": 0.02, "max_s": 0.05})
    server.fail_requests(403, requests=None)
    with caplog.at_level(logging.INFO, logger=SHIPPER_LOG):
        pipeline = new_pipeline(cfg, metrics.delivery)
        run = submit_docs(pipeline, 10)
        pipeline.tick()
        wait_for(lambda: shipping(url)["consecutive_failures"] >= 6, what="403s")
        server.clear_faults()
        server.fail_requests(502, requests=None)
        wait_for(lambda: shipping(url)["last_error_class"] == "unavailable", what="502s")
        wait_for(lambda: shipping(url)["consecutive_failures"] >= 12, what="more failures")
        server.clear_faults()
        pipeline.close(30)
    assert_exactly_once(server, run)
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([m for m in messages if "403" in m]) == 1, messages
    assert len([m for m in messages if "502" in m]) == 1, messages
    assert all("<html>" not in m for m in messages)


def test_api_key_rotated_on_disk_is_used_without_a_restart(
    server: ESTestServer, tmp_path: Path, endpoint: tuple[Metrics, str],
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(shipper, "CREDENTIALS_RECHECK_S", 0.05)
    metrics, url = endpoint
    old = server.add_api_key("old-key", "old-secret")
    key_file = tmp_path / "api_key"
    key_file.write_text(old + "\n")
    cfg = make_config(tmp_path, server.url, es={"api_key_file": str(key_file)},
                      retry={"initial_s": 0.02, "max_s": 0.1})
    server.security.clear()  # the old key is revoked...
    new = server.add_api_key("new-key", "new-secret")
    with caplog.at_level(logging.DEBUG):
        pipeline = new_pipeline(cfg, metrics.delivery)
        run = submit_docs(pipeline, 20)
        pipeline.tick()
        wait_for(lambda: shipping(url)["last_error_class"] == "unauthorized", what="401")
        key_file.write_text(new + "\n")  # ...and the new one written to the key file
        wait_for(lambda: shipping(url)["state"] == "ok", what="resumed")
        pipeline.close(30)
    assert_exactly_once(server, run)
    assert "credentials changed" in caplog.text
    for secret in ("old-secret", "new-secret", old, new):
        assert secret not in caplog.text
