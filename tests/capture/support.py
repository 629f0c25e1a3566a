"""Run the real capture agent (real BPF on the real kernel) in a background thread.

Documents go to an in-memory sink so tests can wait for the ones they caused and compare
them with ground truth from /proc. Everything the tests trigger runs in child processes:
the collector never traces its own process.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

from collector.agent import Agent
from collector.config import config_from_mapping
from collector.delivery.chain import point_of
from collector.delivery.loss import LossLedger
from collector.delivery.metrics import DeliveryMetrics
from collector.ecs.documents import events_lost_document
from collector.ecs.host import HostInfo, detect_host

Doc = dict[str, Any]


class MemorySink:
    """Documents in a list; ring-buffer losses through the real loss ledger."""

    def __init__(self, host: HostInfo) -> None:
        self.docs: list[Doc] = []
        self._cond = threading.Condition()
        self.metrics = DeliveryMetrics()
        self.losses = LossLedger(self.metrics, functools.partial(events_lost_document, host),
                                 point_of)

    def losses_metric(self, kind: str) -> float:
        """audit_collector_events_lost_total for ring-buffer losses of one family."""
        value = self.metrics.registry.get_sample_value(
            "audit_collector_events_lost_total", {"kind": kind, "where": "ringbuf"})
        return value or 0.0

    def submit(self, doc: Doc) -> None:
        with self._cond:
            self.docs.append(doc)
            self._cond.notify_all()

    def ringbuf_lost(self, grown: dict[str, int], total: int) -> None:
        self.losses.ringbuf_lost(grown, total)

    def tick(self) -> None:
        self.losses.report(self._write_report, track=False)

    def flush_pending(self) -> None:
        return  # submit keeps each document at once

    def _write_report(self, doc: Doc) -> int:
        self.submit(doc)
        return 0

    def close(self, timeout_s: float = 10.0) -> None:
        return

    def wait_for(self, predicate: Callable[[Doc], bool], timeout: float = 10.0,
                 count: int = 1) -> list[Doc]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [d for d in self.docs if predicate(d)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out waiting for {count} matching document(s); "
                        f"{len(found)} found among {len(self.docs)}")
                self._cond.wait(left)


class RunningAgent:
    def __init__(self, capture: dict[str, Any] | None = None) -> None:
        self.cfg = config_from_mapping({"capture": {"poll_interval_ms": 20, **(capture or {})},
                                        "metrics": {"enabled": False}})
        host = detect_host()
        self.sink = MemorySink(host)
        self.agent = Agent(self.cfg, host, self.sink)
        self._thread = threading.Thread(target=self.agent.run, name="agent", daemon=True)

    def __enter__(self) -> RunningAgent:
        self.agent.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.agent.stop()
        self._thread.join(timeout=10)
