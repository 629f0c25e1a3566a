"""The metrics endpoint: Prometheus text and /health from one instance's registry, and
bounded against local users who open connections and send nothing."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.request
from collections.abc import Iterator

import pytest

from collector import __version__
from collector.metrics import Metrics, MetricsServer


@pytest.fixture
def served() -> Iterator[tuple[Metrics, MetricsServer]]:
    metrics = Metrics(config_digest="ab" * 32)
    server = MetricsServer("127.0.0.1", 0, metrics, timeout_s=1.0, max_connections=4)
    server.start()
    yield metrics, server
    server.stop()


def get(server: MetricsServer, path: str) -> bytes:
    host, port = server.address
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as response:
        return response.read()


def test_metrics_and_health_come_from_this_instance(
    served: tuple[Metrics, MetricsServer],
) -> None:
    metrics, server = served
    metrics.capture.events_captured.labels(kind="exec").inc(3)
    metrics.delivery.events_lost.labels(kind="document", where="spool").inc(2)
    metrics.delivery.read_at_scrape(metrics.delivery.spool_records, lambda: 7)
    text = get(server, "/metrics").decode()
    assert 'audit_collector_events_captured_total{kind="exec"} 3.0' in text
    assert 'audit_collector_events_lost_total{kind="document",where="spool"} 2.0' in text
    assert "audit_collector_spool_records 7.0" in text
    assert "_created" not in text
    health = json.loads(get(server, "/health"))
    assert health == {"probes_attached": False, "elasticsearch_reachable": None,
                      "shipping": None,  # no Elasticsearch output: nothing to ship
                      "families": [], "version": __version__, "config_digest": "ab" * 32}
    assert Metrics().capture.events_captured.labels(kind="exec")._value.get() == 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_idle_connections_cannot_exhaust_descriptors(
    served: tuple[Metrics, MetricsServer],
) -> None:
    _metrics, server = served
    before = open_fds()
    idle = []
    for _ in range(200):  # each sends a request line and then nothing, like the attack
        sock = socket.create_connection(server.address)
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        idle.append(sock)
    time.sleep(0.3)
    # Ours are the 200 client sockets; the server side holds at most 4 more.
    assert open_fds() - before <= 200 + 4
    time.sleep(1.5)  # the server's read timeout ends the ones it accepted
    assert b"audit_collector" in get(server, "/metrics")
    for sock in idle:
        sock.close()


def test_ipv6_loopback_listen() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this kernel")
    try:
        server = MetricsServer("::1", 0, Metrics())
    except OSError as exc:
        pytest.skip(f"::1 not configured here: {exc}")
    server.start()
    try:
        with urllib.request.urlopen(f"http://[::1]:{server.address[1]}/health",
                                    timeout=5) as response:
            assert json.loads(response.read())["probes_attached"] is False
    finally:
        server.stop()
