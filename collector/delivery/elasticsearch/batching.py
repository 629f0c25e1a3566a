"""When pending documents become a batch: by count, by bytes or by age, whichever first.

Defaults (BatchConfig): 1000 documents, 5 MiB, 1 s. The window starts when the first pending
document is seen and restarts after each cut, so a trickle of events is shipped at most
max_wait_s after it was captured, and a burst is shipped as soon as a batch is full.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from collector.delivery.settings import BatchConfig


class BatchWindow:
    def __init__(
        self, cfg: BatchConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_docs = cfg.max_docs
        self.max_bytes = cfg.max_bytes
        self.max_wait_s = cfg.max_wait_s
        self._clock = clock
        self._opened_at: float | None = None

    def due(self, docs: int, nbytes: int) -> bool:
        """Whether docs/nbytes pending should be cut into a batch now."""
        if docs <= 0:
            self._opened_at = None
            return False
        if docs >= self.max_docs or nbytes >= self.max_bytes:
            return True
        if self._opened_at is None:
            self._opened_at = self._clock()
        return self._clock() - self._opened_at >= self.max_wait_s

    def remaining_s(self) -> float:
        """Seconds until the age limit of the open window (max_wait_s when none is open)."""
        if self._opened_at is None:
            return self.max_wait_s
        return max(0.0, self.max_wait_s - (self._clock() - self._opened_at))

    def cut(self) -> None:
        """A batch was taken: the next window opens with the next pending document."""
        self._opened_at = None
