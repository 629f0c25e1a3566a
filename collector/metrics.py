"""Counters and gauges, rendered as Prometheus text, served on a loopback HTTP endpoint.

`/metrics` is the Prometheus exposition; `/health` is a small JSON object that deployment
tooling polls to learn whether the probes are attached and Elasticsearch is reachable.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import orjson

Labels = tuple[tuple[str, str], ...]
T = TypeVar("T")


class Metric:
    def __init__(self, name: str, help_text: str, kind: str) -> None:
        self.name = name
        self.help = help_text
        self.kind = kind  # "counter", "gauge" or "summary"
        self._values: dict[Labels, float] = {}
        self._lock = threading.Lock()
        self._read: Callable[[], float | None] | None = None  # see track()

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = _labels(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def set(self, value: float, **labels: str) -> None:
        with self._lock:
            self._values[_labels(labels)] = float(value)

    def get(self, **labels: str) -> float:
        self._refresh()
        with self._lock:
            return self._values.get(_labels(labels), 0.0)

    def bind(self, **labels: str) -> BoundCounter:
        """An incrementer for fixed labels: the hot path skips sorting them per event."""
        return BoundCounter(self, _labels(labels))

    def track(self, owner: T, read: Callable[[T], float]) -> None:
        """Take the unlabelled value from read(owner) at scrape time instead of a set() per
        change (a per-event gauge costs a lock and a dict write per event). The owner is
        held weakly: once it is gone, the last value read stays."""
        ref = weakref.ref(owner)
        self._read = lambda: None if (alive := ref()) is None else read(alive)

    def _refresh(self) -> None:
        value = self._read() if self._read is not None else None
        if value is not None:
            self.set(value)

    def total(self) -> float:
        self._refresh()
        with self._lock:
            return sum(self._values.values())

    def samples(self) -> list[tuple[Labels, float]]:
        self._refresh()
        with self._lock:
            return sorted(self._values.items())


class BoundCounter:
    __slots__ = ("_key", "_metric")

    def __init__(self, metric: Metric, key: Labels) -> None:
        self._metric = metric
        self._key = key

    def inc(self, amount: float = 1.0) -> None:
        metric = self._metric
        with metric._lock:
            metric._values[self._key] = metric._values.get(self._key, 0.0) + amount


class Summary(Metric):
    """Count and sum of observations (e.g. bulk latency), exposed as _count and _sum."""

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text, "summary")

    def observe(self, value: float, **labels: str) -> None:
        key = _labels(labels)
        with self._lock:
            self._values[(*key, ("__part", "sum"))] = (
                self._values.get((*key, ("__part", "sum")), 0.0) + value
            )
            self._values[(*key, ("__part", "count"))] = (
                self._values.get((*key, ("__part", "count")), 0.0) + 1
            )


def _labels(labels: dict[str, str]) -> Labels:
    return tuple(sorted((k, str(v)) for k, v in labels.items()))


class Registry:
    def __init__(self) -> None:
        self._metrics: dict[str, Metric] = {}
        self._lock = threading.Lock()
        self.health: dict[str, Any] = {"probes_attached": False, "elasticsearch_reachable": None}

    def counter(self, name: str, help_text: str) -> Metric:
        return self._get(name, lambda: Metric(name, help_text, "counter"))

    def gauge(self, name: str, help_text: str) -> Metric:
        return self._get(name, lambda: Metric(name, help_text, "gauge"))

    def summary(self, name: str, help_text: str) -> Summary:
        metric = self._get(name, lambda: Summary(name, help_text))
        assert isinstance(metric, Summary)
        return metric

    def _get(self, name: str, make: Callable[[], Metric]) -> Metric:
        with self._lock:
            if name not in self._metrics:
                self._metrics[name] = make()
            return self._metrics[name]

    def render(self) -> str:
        with self._lock:
            metrics = list(self._metrics.values())
        return "".join(_render_metric(m) for m in metrics)


def _render_metric(metric: Metric) -> str:
    lines = [f"# HELP {metric.name} {metric.help}", f"# TYPE {metric.name} {metric.kind}"]
    for labels, value in metric.samples():
        name = metric.name
        plain = [(k, v) for k, v in labels if k != "__part"]
        part = dict(labels).get("__part")
        if part:
            name = f"{name}_{part}"
        lines.append(f"{name}{_format_labels(plain)} {_format_value(value)}")
    return "\n".join(lines) + "\n"


def _format_labels(labels: Iterable[tuple[str, str]]) -> str:
    items = [f'{k}="{_escape(v)}"' for k, v in labels]
    return "{" + ",".join(items) + "}" if items else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


# The process-wide registry every module records into.
REGISTRY = Registry()

EVENTS_CAPTURED = REGISTRY.counter(
    "audit_collector_events_captured_total", "Events decoded from the kernel, by kind."
)
EVENTS_LOST = REGISTRY.counter(
    "audit_collector_events_lost_total",
    "Events lost, by kind and where (ringbuf reservation failures, spool policy drops).",
)
DOCUMENTS_EMITTED = REGISTRY.counter(
    "audit_collector_documents_total", "Documents written, by output."
)
PROBES_ATTACHED = REGISTRY.gauge(
    "audit_collector_probes_attached", "Attached probes, by family."
)


class _Handler(BaseHTTPRequestHandler):
    registry: Registry = REGISTRY

    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/metrics":
            body = self.registry.render().encode()
            ctype = "text/plain; version=0.0.4; charset=utf-8"
        elif self.path.split("?")[0] == "/health":
            body = orjson.dumps(self.registry.health)
            ctype = "application/json"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # scrapes are not worth a log line each


class MetricsServer:
    """The /metrics and /health endpoint in a daemon thread."""

    def __init__(self, host: str, port: int, registry: Registry = REGISTRY) -> None:
        handler = type("Handler", (_Handler,), {"registry": registry})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
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
