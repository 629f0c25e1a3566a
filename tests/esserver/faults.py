"""Scriptable fault injection.

A :class:`FaultPlan` holds an ordered list of :class:`Fault` objects.  For every incoming
(non-admin) request the plan is consulted:

* request-level faults (``status``, ``delay``, ``reset``, ``down``): the first active fault
  whose endpoint filter matches, whose ``skip`` budget is exhausted and whose probability
  roll succeeds is *triggered* for that request (at most one per request);
* item-level faults (``items``, ``mapping``): every matching active fault applies to the
  bulk request, selecting items by position / every-k / fraction / predicate.

``requests`` is how many requests a fault triggers on before it expires (``None`` = until
removed).  Probabilistic faults use their own ``random.Random(seed)``.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

REQUEST_KINDS = frozenset({"status", "delay", "reset", "down"})
ITEM_KINDS = frozenset({"items", "mapping"})
KINDS = REQUEST_KINDS | ITEM_KINDS


@dataclass
class BulkItem:
    """What an item predicate sees."""

    position: int  # 0-based position inside the bulk request
    action: str  # index / create / update / delete
    index: str  # target name as sent (data stream name, alias-free index name)
    id: str | None  # None for auto-generated ids (not yet assigned)
    source: dict[str, Any] | None  # parsed source (None for delete / unparsable)


ItemPredicate = Callable[[BulkItem], bool]


@dataclass
class Fault:
    kind: str
    requests: int | None = 1
    skip: int = 0
    probability: float | None = None
    seed: int | None = None
    endpoints: frozenset[str] = frozenset({"bulk"})
    # status
    status: int = 429
    body: Any = None
    # delay
    seconds: float = 0.0
    # reset: "before" (request not applied) or "after" (applied, no response)
    when: str = "before"
    # items / mapping selection
    every: int | None = None
    fraction: float | None = None
    positions: frozenset[int] | None = None
    predicate: ItemPredicate | None = None
    match_field: str | None = None
    match_value: Any = None
    reason: str | None = None
    # bookkeeping
    id: int = 0
    triggered: int = 0
    items_hit: int = 0
    seen: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {sorted(KINDS)}")
        if self.when not in ("before", "after"):
            raise ValueError("when must be 'before' or 'after'")
        self._rng = random.Random(self.seed)

    @property
    def active(self) -> bool:
        return self.requests is None or self.triggered < self.requests

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "requests": self.requests,
            "skip": self.skip,
            "probability": self.probability,
            "seed": self.seed,
            "endpoints": sorted(self.endpoints),
            "triggered": self.triggered,
            "items_hit": self.items_hit,
            "active": self.active,
        }
        if self.kind == "status":
            d["status"] = self.status
        elif self.kind in ("delay", "down"):
            d["seconds"] = self.seconds
        elif self.kind == "reset":
            d["when"] = self.when
        else:
            d.update(status=self.status, every=self.every, fraction=self.fraction,
                     positions=sorted(self.positions) if self.positions is not None else None,
                     field=self.match_field, value=self.match_value,
                     predicate=self.predicate is not None)
        return d

    def _matches_endpoint(self, endpoint: str) -> bool:
        return "*" in self.endpoints or endpoint in self.endpoints

    def _roll(self) -> bool:
        """Called for a matching request: decide whether the fault fires for it."""
        self.seen += 1
        if self.seen <= self.skip:
            return False
        if self.probability is not None and self._rng.random() >= self.probability:
            return False
        self.triggered += 1
        return True

    def selects(self, item: BulkItem) -> bool:
        hit = True
        if self.positions is not None:
            hit = item.position in self.positions
        if hit and self.every is not None:
            hit = (item.position + 1) % self.every == 0
        if hit and self.fraction is not None:
            hit = self._rng.random() < self.fraction
        if hit and self.match_field is not None:
            from .query import get_values

            vals = get_values(item.source, self.match_field) if item.source else []
            hit = (self.match_value in vals) if self.match_value is not None else bool(vals)
        if hit and self.predicate is not None:
            hit = bool(self.predicate(item))
        if hit:
            self.items_hit += 1
        return hit


class FaultPlan:
    """Thread-safe ordered collection of faults."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._next_id = 1

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            fault.id = self._next_id
            self._next_id += 1
            self._faults.append(fault)
        return fault

    def remove(self, fault_id: int) -> bool:
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if f.id != fault_id]
            return len(self._faults) != before

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def list(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def take_request_fault(self, endpoint: str) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if (f.kind in REQUEST_KINDS and f.active and f._matches_endpoint(endpoint)
                        and f._roll()):
                    return f
            return None

    def take_item_faults(self, endpoint: str) -> list[Fault]:
        with self._lock:
            out = []
            for f in self._faults:
                if (f.kind in ITEM_KINDS and f.active and f._matches_endpoint(endpoint)
                        and f._roll()):
                    out.append(f)
            return out


def fault_from_json(spec: dict[str, Any]) -> Fault:
    """Build a fault from the admin API JSON (no Python predicates there)."""
    known = {"kind", "requests", "skip", "probability", "seed", "endpoints", "status", "body",
             "seconds", "when", "every", "fraction", "positions", "field", "value", "reason"}
    unknown = set(spec) - known
    if unknown:
        raise ValueError(f"unknown fault parameters {sorted(unknown)}")
    kind = spec.get("kind")
    if not isinstance(kind, str):
        raise ValueError("fault needs a 'kind'")
    endpoints: Iterable[str] = spec.get("endpoints") or ["bulk"]
    if isinstance(endpoints, str):
        endpoints = [endpoints]
    positions = spec.get("positions")
    return Fault(
        kind=kind,
        requests=spec.get("requests", 1),
        skip=int(spec.get("skip", 0)),
        probability=spec.get("probability"),
        seed=spec.get("seed"),
        endpoints=frozenset(endpoints),
        status=int(spec.get("status", 400 if kind == "mapping" else 429)),
        body=spec.get("body"),
        seconds=float(spec.get("seconds", 0.0)),
        when=spec.get("when", "before"),
        every=spec.get("every"),
        fraction=spec.get("fraction"),
        positions=frozenset(positions) if positions is not None else None,
        match_field=spec.get("field"),
        match_value=spec.get("value"),
        reason=spec.get("reason"),
    )
