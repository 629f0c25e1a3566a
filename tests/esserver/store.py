"""Indices and data streams: document storage, versions and refresh visibility.

An index keeps its documents like a Lucene index does: append-only slots, one per version
written, in sequence-number order; an update or delete marks the superseded version dead
with the sequence number of the operation that replaced it.  A *searcher* is a
sequence-number watermark: it sees the versions written at or below it and not yet replaced
at it.  ``refresh`` moves the index's watermark to its latest operation, so writes become
searchable only then (realtime GET and the Python accessors read the latest versions
directly).  Replaced versions are dropped ("merged") once no searcher can see them and no
point in time holds the index.

A version keeps its ``_source`` as the JSON bytes it arrived as (about a quarter of the
memory of the parsed dict); fields are read through :class:`.docvalues.Columns`.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Iterator, Sequence
from operator import attrgetter
from typing import Any

import orjson

from .docvalues import Columns
from .mapping import Mapping
from .settings import nest_settings, parse_time

DEFAULT_REFRESH_S = 1.0
DEFAULT_SEARCH_IDLE_S = 30.0


def new_uuid() -> str:
    return base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")


def exact_bytes(data: bytes) -> bytes:
    """A copy without spare capacity: ``orjson.dumps`` results carry a few KiB each."""
    return bytes(memoryview(data))


class Doc:
    """One stored version of a document; ``raw`` is its ``_source`` as JSON."""

    __slots__ = ("id", "raw", "seq_no", "version")

    def __init__(self, doc_id: str, raw: bytes, version: int, seq_no: int) -> None:
        self.id = doc_id
        self.raw = raw
        self.version = version
        self.seq_no = seq_no

    @property
    def source(self) -> dict[str, Any]:
        """A fresh parse of the stored ``_source`` (callers may keep or change it)."""
        src: dict[str, Any] = orjson.loads(self.raw)
        return src


_SEQ_NO = attrgetter("seq_no")


class Index:
    def __init__(self, name: str, mapping: Mapping, settings: dict[str, Any],
                 data_stream: str | None = None, template: str | None = None) -> None:
        self.name = name
        self.uuid = new_uuid()
        self.mapping = mapping
        self.creation_date = int(time.time() * 1000)
        self.settings = settings
        self.data_stream = data_stream
        self.template = template
        self.hidden = data_stream is not None or settings.get("index.hidden") == "true"
        self.slots: list[Doc] = []
        self.live: dict[str, int] = {}  # id -> slot of its latest version
        self.dead: dict[int, int] = {}  # slot of a replaced version -> seq_no replacing it
        self.tombstones: dict[str, int] = {}  # id -> version of its delete
        self.seq_no = -1
        self.refreshed_seq = -1
        self.pits = 0  # open points in time: slots must keep their positions
        self.generation = 0  # merges so far: slot positions are valid within one
        self.columns = Columns(self)
        now = time.monotonic()
        self.last_tick = now
        self.last_search = now

    # ------------------------------------------------------------------ settings
    @property
    def shards_total(self) -> int:
        try:
            return 1 + int(self.settings.get("index.number_of_replicas", "1"))
        except ValueError:
            return 2

    @property
    def max_result_window(self) -> int:
        return int(self.settings.get("index.max_result_window", "10000"))

    @property
    def mode(self) -> str:
        return str(self.settings.get("index.mode", "standard"))

    @property
    def refresh_interval(self) -> float | None:
        """Seconds between scheduled refreshes (None: ``-1``, never)."""
        value = self.settings.get("index.refresh_interval")
        return DEFAULT_REFRESH_S if value is None else parse_time(value,
                                                                  "index.refresh_interval")

    def search_idle(self, now: float) -> bool:
        """Search-idle shards skip scheduled refreshes (only while refresh_interval is not
        set explicitly); a search on one refreshes it first."""
        if "index.refresh_interval" in self.settings:
            return False
        after = parse_time(self.settings.get("index.search.idle.after", "30s"),
                           "index.search.idle.after")
        return after is not None and now - self.last_search >= after

    def settings_body(self, major: int) -> dict[str, Any]:
        flat: dict[str, Any] = {
            "index.number_of_shards": "1",
            "index.number_of_replicas": "1",
            "index.routing.allocation.include._tier_preference": "data_content",
            **self.settings,
            "index.uuid": self.uuid,
            "index.creation_date": str(self.creation_date),
            "index.provided_name": self.name,
            "index.version.created": {7: "7172599", 8: "8521000", 9: "9033000"}.get(major, "0"),
        }
        if self.data_stream is not None:
            flat["index.hidden"] = "true"
            flat["index.routing.allocation.include._tier_preference"] = "data_hot"
        return nest_settings(flat)

    # ------------------------------------------------------------------ documents
    def next_seq(self) -> int:
        self.seq_no += 1
        return self.seq_no

    def current(self, doc_id: str) -> Doc | None:
        slot = self.live.get(doc_id)
        return self.slots[slot] if slot is not None else None

    def put(self, doc: Doc) -> None:
        """Store a new version (replacing the current one, if any)."""
        old = self.live.get(doc.id)
        if old is not None:
            self.dead[old] = doc.seq_no
        self.live[doc.id] = len(self.slots)
        self.slots.append(doc)

    def remove(self, doc_id: str, seq_no: int) -> Doc | None:
        slot = self.live.pop(doc_id, None)
        if slot is None:
            return None
        self.dead[slot] = seq_no
        return self.slots[slot]

    def live_docs(self) -> Iterator[Doc]:
        slots = self.slots
        return (slots[i] for i in self.live.values())

    def __len__(self) -> int:
        return len(self.live)

    # ------------------------------------------------------------------ searching
    def visible(self, watermark: int | None = None) -> Sequence[int]:
        """Slots a searcher at ``watermark`` (default: the last refresh) sees."""
        w = self.refreshed_seq if watermark is None else watermark
        n = bisect_right_by(self.slots, w, _SEQ_NO)  # slots are in seq_no order
        dead = self.dead
        if not dead:
            return range(n)
        return [i for i in range(n) if i not in dead or dead[i] > w]

    def searchable(self, watermark: int | None = None) -> Iterator[Doc]:
        slots = self.slots
        return (slots[i] for i in self.visible(watermark))

    @property
    def pending(self) -> bool:
        return self.seq_no > self.refreshed_seq

    def refresh(self) -> None:
        self.refreshed_seq = self.seq_no
        if self.pits == 0 and len(self.dead) > 1024 and len(self.dead) * 2 > len(self.slots):
            self._merge()

    def _merge(self) -> None:
        """Drop versions no searcher can see any more; slots get new positions."""
        w = self.refreshed_seq
        keep = [i for i in range(len(self.slots)) if self.dead.get(i, w + 1) > w]
        moved = {old: new for new, old in enumerate(keep)}
        self.slots = [self.slots[i] for i in keep]
        self.live = {doc_id: moved[slot] for doc_id, slot in self.live.items()}
        self.dead = {moved[old]: seq for old, seq in self.dead.items() if old in moved}
        self.columns = Columns(self)
        self.generation += 1


class DataStream:
    def __init__(self, name: str, template: str, tpl_body: dict[str, Any]) -> None:
        self.name = name
        self.template = template
        self.tpl_body = tpl_body
        self.indices: list[Index] = []
        self.generation = 0
        self.created = time.time()

    @property
    def write_index(self) -> Index:
        return self.indices[-1]


def bisect_right_by(items: Sequence[Any], target: Any, key: Callable[[Any], Any]) -> int:
    """bisect.bisect_right with a key function (its `key` argument is Python 3.10+)."""
    low, high = 0, len(items)
    while low < high:
        middle = (low + high) // 2
        if target < key(items[middle]):
            high = middle
        else:
            low = middle + 1
    return low
