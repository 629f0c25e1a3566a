"""Points in time: a frozen view of some indices (each at its refresh watermark when the PIT
was opened), kept alive by ``keep_alive`` and extended by every search that uses it.

While a PIT holds an index, the index does not merge, so slot positions (and with them
``_shard_doc`` values) stay valid.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ESError
from .settings import parse_time

if TYPE_CHECKING:
    from .store import Index

_MAGIC = b"esserver-pit:"


@dataclass
class PointInTime:
    id: str
    shards: list[tuple[Index, int]]  # (index, watermark), in shard order
    keep_alive_s: float
    expires: float  # time.monotonic()


def keep_alive_seconds(value: str | None, what: str = "keep_alive") -> float:
    if value is None:
        raise ESError(400, {"type": "action_request_validation_exception",
                            "reason": f"Validation Failed: 1: [{what}] is not specified;"})
    seconds = parse_time(str(value), what)
    if seconds is None or seconds <= 0:
        raise ESError(400, {"type": "illegal_argument_exception",
                            "reason": f"failed to parse [{what}] with value [{value}]"})
    return seconds


def missing_context(pit_id: str) -> ESError:
    reason = f"No search context found for id [{pit_id}]"
    err = {"type": "search_context_missing_exception", "reason": reason}
    return ESError(404, {"type": "search_phase_execution_exception", "reason": "all shards failed",
                         "phase": "query", "grouped": True,
                         "failed_shards": [{"shard": -1, "index": None, "reason": err}],
                         "caused_by": err}, root_cause=[err])


class PitRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pits: dict[str, PointInTime] = {}

    def open(self, shards: list[tuple[Index, int]], keep_alive_s: float) -> PointInTime:
        pit_id = base64.urlsafe_b64encode(_MAGIC + os.urandom(18)).decode()
        pit = PointInTime(pit_id, shards, keep_alive_s, time.monotonic() + keep_alive_s)
        with self._lock:
            self._pits[pit_id] = pit
            for idx, _w in shards:
                idx.pits += 1
        return pit

    def use(self, pit_id: str, keep_alive_s: float | None) -> PointInTime:
        """The PIT, its life extended (404 once it expired or was closed)."""
        _check_id(pit_id)
        now = time.monotonic()
        self.expire(now)
        with self._lock:
            pit = self._pits.get(pit_id)
            if pit is None:
                raise missing_context(pit_id)
            if keep_alive_s is not None:
                pit.keep_alive_s = keep_alive_s
            pit.expires = now + pit.keep_alive_s
            return pit

    def close(self, pit_id: str) -> bool:
        _check_id(pit_id)
        with self._lock:
            pit = self._pits.pop(pit_id, None)
        if pit is None:
            return False
        self._release(pit)
        return True

    def expire(self, now: float) -> None:
        with self._lock:
            gone = [p for p in self._pits.values() if p.expires <= now]
            for pit in gone:
                del self._pits[pit.id]
        for pit in gone:
            self._release(pit)

    def clear(self) -> None:
        with self._lock:
            pits, self._pits = list(self._pits.values()), {}
        for pit in pits:
            self._release(pit)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pits)

    @staticmethod
    def _release(pit: PointInTime) -> None:
        for idx, _w in pit.shards:
            idx.pits -= 1


def _check_id(pit_id: str) -> None:
    try:
        ok = base64.urlsafe_b64decode(pit_id.encode()).startswith(_MAGIC)
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise ESError(400, {"type": "illegal_argument_exception",
                            "reason": f"invalid id: [{pit_id}]"})
