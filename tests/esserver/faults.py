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

``error_type`` picks the Elasticsearch error an item or request fault answers with (see
:data:`ERROR_STATUS`); without it the status decides (429 ``es_rejected_execution_exception``,
503 ``unavailable_shards_exception`` per item, 403 ``security_exception``, ...).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .docvalues import get_values
from .errors import circuit_breaking
from .mapping import java_str
from .security import challenges
from .settings import CLUSTER_BLOCKS, INDEX_BLOCKS, block_error

REQUEST_KINDS = frozenset({"status", "delay", "reset", "down"})
# The status each injectable error type comes with when the fault names no status.
ERROR_STATUS = {
    "es_rejected_execution_exception": 429,
    "cluster_block_exception": 429,  # flood-stage watermark; 403: a write block
    "circuit_breaking_exception": 429,
    "security_exception": 403,
    "index_not_found_exception": 404,
    "index_closed_exception": 400,
    "unavailable_shards_exception": 503,
    "version_conflict_engine_exception": 409,
    "document_parsing_exception": 400,
    "mapper_parsing_exception": 400,
    "illegal_argument_exception": 400,
}
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
    error_type: str | None = None
    durability: str = "TRANSIENT"  # circuit_breaking_exception
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
            d.update(status=self.status, type=self.error_type)
        elif self.kind in ("delay", "down"):
            d["seconds"] = self.seconds
        elif self.kind == "reset":
            d["when"] = self.when
        else:
            d.update(status=self.status, type=self.error_type, every=self.every,
                     fraction=self.fraction,
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
             "seconds", "when", "every", "fraction", "positions", "field", "value", "reason",
             "type", "durability"}
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
    error_type = spec.get("type")
    if "status" in spec:
        status = int(spec["status"])
    elif kind == "mapping":
        status = 400
    else:
        status = ERROR_STATUS.get(error_type or "", 429)
    return Fault(
        kind=kind,
        requests=spec.get("requests", 1),
        skip=int(spec.get("skip", 0)),
        probability=spec.get("probability"),
        seed=spec.get("seed"),
        endpoints=frozenset(endpoints),
        status=status,
        body=spec.get("body"),
        error_type=error_type,
        durability=str(spec.get("durability", "TRANSIENT")),
        seconds=float(spec.get("seconds", 0.0)),
        when=spec.get("when", "before"),
        every=spec.get("every"),
        fraction=spec.get("fraction"),
        positions=frozenset(positions) if positions is not None else None,
        match_field=spec.get("field"),
        match_value=spec.get("value"),
        reason=spec.get("reason"),
    )


# ============================================================================ injected errors
_REJECTED = ("rejected execution of {op} operation [coordinating_and_primary_bytes=104857600, "
             "replica_bytes=0, all_bytes=104857600, {op}_operation_bytes={size}, "
             "max_coordinating_and_primary_bytes=107374182]")
_OUTCOMES = {
    "es_rejected_execution_exception": "rejected",
    "unavailable_shards_exception": "unavailable",
    "version_conflict_engine_exception": "conflict",
    "document_parsing_exception": "mapping_error",
    "mapper_parsing_exception": "mapping_error",
    "cluster_block_exception": "blocked",
    "circuit_breaking_exception": "circuit_breaking",
    "security_exception": "forbidden",
    "index_not_found_exception": "index_not_found",
    "index_closed_exception": "index_closed",
}


def default_error_type(status: int) -> str:
    return {429: "es_rejected_execution_exception", 503: "unavailable_shards_exception",
            409: "version_conflict_engine_exception", 403: "security_exception",
            404: "index_not_found_exception"}.get(
        status, "exception" if status >= 500 else "illegal_argument_exception")


def outcome_of(error_type: str) -> str:
    """The ``bulk.items.<outcome>`` counter of an item error."""
    return _OUTCOMES.get(error_type, "error")


def item_error(fault: Fault, index: str, doc_id: str | None, source: Any,
               parsing_type: str) -> tuple[int, dict[str, Any]]:
    """(status, error object) of a bulk item a fault selected."""

    status = fault.status
    kind = parsing_type if fault.kind == "mapping" else (
        fault.error_type or default_error_type(status))
    if kind in ("document_parsing_exception", "mapper_parsing_exception"):
        field = fault.match_field
        if fault.reason:
            reason = fault.reason
        elif field:
            vals = get_values(source, field) if isinstance(source, dict) else []
            preview = java_str(vals[0]) if vals else ""
            reason = (f"[1:1] failed to parse field [{field}] of type [keyword] in document "
                      f"with id '{doc_id}'. Preview of field's value: '{preview}'")
        else:
            reason = "[1:1] failed to parse"
        return status, {"type": kind, "reason": reason,
                        "caused_by": {"type": "illegal_argument_exception",
                                      "reason": "injected mapping error"}}
    if kind == "cluster_block_exception":
        blocks = [b for b in INDEX_BLOCKS if b.status == status] or [INDEX_BLOCKS[1]]
        return status, block_error(blocks[-1:], index).err
    if kind == "circuit_breaking_exception":
        err = circuit_breaking(fault.durability)
        if fault.reason:
            err["reason"] = fault.reason
        return status, err
    if kind == "security_exception":
        return status, {"type": kind, "reason": fault.reason or (
            "action [indices:data/write/bulk[s]] is unauthorized for user [collector] with "
            f"effective roles [writer] on indices [{index}], this action is granted by the "
            "index privileges [create_doc,create,delete,index,write,all]")}
    if kind == "index_not_found_exception":
        return status, {"type": kind, "reason": fault.reason or (
            f"no such index [{index}] and [action.auto_create_index] is [false]"),
            "index_uuid": "_na_", "index": index}
    if kind == "index_closed_exception":
        return status, {"type": kind, "reason": fault.reason or "closed",
                        "index_uuid": "_na_", "index": index}
    if kind == "es_rejected_execution_exception":
        return status, {"type": kind,
                        "reason": fault.reason or _REJECTED.format(op="primary", size=2048)}
    if kind == "unavailable_shards_exception":
        return status, {"type": kind, "reason": fault.reason or (
            f"[{index}][0] primary shard is not active Timeout: [1m], request: "
            f"[BulkShardRequest [[{index}][0]] containing [1] requests]")}
    if kind == "version_conflict_engine_exception":
        return status, {"type": kind, "reason": fault.reason or (
            f"[{doc_id}]: version conflict, document already exists (current version [1])"),
            "index_uuid": "_na_", "shard": "0", "index": index}
    return status, {"type": kind, "reason": fault.reason or
                    f"injected item failure with status [{status}]"}


def request_error(fault: Fault, major: int) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """(error object, extra headers) of a whole-request status fault."""

    status = fault.status
    kind = fault.error_type or {
        429: "es_rejected_execution_exception", 503: "cluster_block_exception",
        401: "security_exception", 403: "security_exception",
    }.get(status, "exception" if status >= 500 else "illegal_argument_exception")
    if kind == "es_rejected_execution_exception":
        return {"type": kind, "reason": fault.reason or _REJECTED.format(
            op="coordinating", size=1048576)}, []
    if kind == "circuit_breaking_exception":
        return circuit_breaking(fault.durability), []
    if kind == "cluster_block_exception":
        if status == 503:
            return {"type": kind, "reason": "blocked by: [SERVICE_UNAVAILABLE/2/no master];"}, []
        block = INDEX_BLOCKS[2] if status == 429 else CLUSTER_BLOCKS[0]
        return block_error([block], None).err, []
    if kind == "security_exception" and status == 401:
        err = {"type": kind, "reason": fault.reason or
               "missing authentication credentials for REST request [/_bulk]",
               "header": {"WWW-Authenticate": challenges(major)}}
        return err, [("WWW-Authenticate", c) for c in challenges(major)]
    if kind == "security_exception":
        return {"type": kind, "reason": fault.reason or (
            "action [indices:data/write/bulk] is unauthorized for user [collector] with "
            "effective roles [writer], this action is granted by the cluster privileges "
            "[all]")}, []
    return {"type": kind, "reason": fault.reason or
            f"injected failure with status [{status}]"}, []
