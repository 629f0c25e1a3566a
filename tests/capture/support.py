"""Run the real capture agent (real BPF on the real kernel) in a background thread.

Documents go to an in-memory sink so tests can wait for the ones they caused and compare
them with ground truth from /proc. Everything the tests trigger runs in child processes:
the collector never traces its own process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from collector.agent import Agent
from collector.config import config_from_mapping
from collector.ecs.host import detect_host

Doc = dict[str, Any]


class MemorySink:
    def __init__(self) -> None:
        self.docs: list[Doc] = []
        self._cond = threading.Condition()

    def submit(self, doc: Doc) -> None:
        with self._cond:
            self.docs.append(doc)
            self._cond.notify_all()

    def tick(self) -> None:
        return

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
        self.sink = MemorySink()
        self.agent = Agent(self.cfg, detect_host(), self.sink)
        self._thread = threading.Thread(target=self.agent.run, name="agent", daemon=True)

    def __enter__(self) -> RunningAgent:
        self.agent.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.agent.stop()
        self._thread.join(timeout=10)
