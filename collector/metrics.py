"""One collector instance's metrics (prometheus_client) and its `/metrics` + `/health`
endpoint.

`Metrics` owns the registry: the capture loop's counters live here, the delivery wing's in
`delivery.metrics.DeliveryMetrics` on the same registry. `/health` is a small JSON object
that deployment tooling polls: probes attached, Elasticsearch reachable (it answers), shipping
(whether documents are stored: state, last success, consecutive failures, last error class),
the version and the digest of the configuration file that is running.

The endpoint is reachable by local users: every connection has a read timeout and their
number is capped, so idle or slow clients cannot hold threads and file descriptors.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest

from collector import __version__
from collector.delivery.metrics import DeliveryMetrics

REQUEST_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 16


class CaptureMetrics:
    """The capture loop's counters."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events_captured = Counter("audit_collector_events_captured",
                                       "Events decoded from the kernel, by kind.", ["kind"],
                                       registry=registry)
        self.decode_errors = Counter("audit_collector_decode_errors",
                                     "Ring buffer records that could not be decoded.",
                                     registry=registry)
        self.bash_unchecked = Counter(
            "audit_collector_bash_follow_unreadable",
            "Executables not checked for bash: no path to them could be read (e.g. EACCES).",
            registry=registry)
        self.bash_deferred = Counter(
            "audit_collector_bash_follow_deferred",
            "New executables not checked for bash at once (the check queue was full): "
            "checked at their next exec.", registry=registry)
        self.args_unread = Counter(
            "audit_collector_exec_args_unread",
            "Exec events whose argv could not be read (flagged audit_collector.exec."
            "args_unread).", registry=registry)
        self.processes_tracked = Gauge(
            "audit_collector_processes_tracked",
            "Live processes in the process table.", registry=registry)
        self.processes_evicted = Counter(
            "audit_collector_processes_evicted",
            "Live processes dropped from the process table at capture.max_processes.",
            registry=registry)
        self.probes_attached = Gauge("audit_collector_probes_attached",
                                     "Attached probes, by family.", ["family"],
                                     registry=registry)


class Metrics:
    def __init__(self, config_digest: str | None = None) -> None:
        self.registry = CollectorRegistry()
        self.capture = CaptureMetrics(self.registry)
        self.delivery = DeliveryMetrics(self.registry)
        self.config_digest = config_digest
        self.probes_attached = False
        self.families: list[str] = []

    def health(self) -> dict[str, Any]:
        return {
            "probes_attached": self.probes_attached,
            "elasticsearch_reachable": self.delivery.es_reachable_state,
            "shipping": self.delivery.shipping.snapshot(),
            "families": self.families,
            "version": __version__,
            "config_digest": self.config_digest,
        }

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Handler(BaseHTTPRequestHandler):
    metrics: Metrics
    timeout = REQUEST_TIMEOUT_S  # a client that stops sending is dropped

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/metrics":
            self._reply(self.metrics.exposition(), CONTENT_TYPE_LATEST)
        elif path == "/health":
            self._reply(orjson.dumps(self.metrics.health()), "application/json")
        else:
            self.send_error(404)

    def _reply(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # scrapes are not worth a log line each


class _BoundedServer(ThreadingHTTPServer):
    """One thread per connection, at most max_connections at once (more are closed)."""

    daemon_threads = True
    request_queue_size = 64  # connections waiting for accept(); the kernel drops the rest

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler],
                 max_connections: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__((host, port), handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class MetricsServer:
    """The /metrics and /health endpoint in a daemon thread."""

    def __init__(self, host: str, port: int, metrics: Metrics,
                 timeout_s: float = REQUEST_TIMEOUT_S,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        handler = type("Handler", (_Handler,), {"metrics": metrics, "timeout": timeout_s})
        self._server = _BoundedServer(host, port, handler, max_connections)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
