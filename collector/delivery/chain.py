"""Tamper evidence: per-host sequence numbers and a hash chain over every document.

Design
------
* Every document gets ``event.sequence``: one counter per host, monotonic across restarts and
  boots. The counter never reuses a number that reached a durable place: at start the sealer
  takes the highest of (its state file, the spool's last record, the file sinks' last line)
  and continues after it. A host whose state was wiped (no state file, empty spool) starts a
  new chain at the wall clock in microseconds, which is above any earlier sequence of that
  host as long as the clock did not go back and the earlier chain averaged under a million
  documents per second; this keeps ``_id`` values from colliding with an old chain's.
* ``_id`` is ``<host.id>-<boot id at sealing>-<sequence>``: a replayed record is answered 409
  (already stored), so delivery is exactly once.
* ``audit_collector.chain.hash`` = SHA-256 hex of ``prev`` (UTF-8) followed by the canonical
  bytes of the document without its ``audit_collector.chain`` object (orjson, sorted keys).
  ``audit_collector.chain.prev`` is the previous document's hash, or "" for the first
  document of a chain (a *genesis*).
* The chain is never restarted on loss. When the spool drops sealed documents (size bound,
  full disk), the ``events_lost`` document reports the dropped sequence range and carries
  ``audit_collector.lost.last_chain_hash``: the hash of the last dropped document, which is
  exactly the ``prev`` of the first document after the gap. `verify` can therefore check the
  link across a reported gap, and tell a reported loss (range and count match, link matches)
  from a deletion (no report, or the link does not match).
* What the chain cannot show without an outside anchor: removal of the newest documents
  (tail truncation), or a rewrite of every document from some point on by someone who can
  recompute hashes. The last sequence is exported as a metric so monitoring can anchor it.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from collector.delivery.metrics import DeliveryMetrics

STATE_FILE = "chain.state"
CHECKPOINT_INTERVAL_S = 1.0
GENESIS_PREV = ""



class HostIdentity(Protocol):
    """What names a host in document ids (the ECS wing's HostInfo has it)."""

    @property
    def id(self) -> str: ...

    @property
    def boot_id(self) -> str: ...


@dataclass(frozen=True)
class ChainPoint:
    """A position in the chain: a sequence and the chain hash of the document holding it."""

    seq: int
    hash: str


@dataclass(frozen=True)
class SealedDoc:
    id: str
    seq: int
    data: bytes  # the document as sent to every output (orjson, chain spliced in)


def document_id(host_id: str, boot_id: str, seq: int) -> str:
    return f"{host_id}-{boot_id}-{seq}"


def canonical(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


_CUSTOM_KEY = b'"audit_collector":{'


def with_chain(content: bytes, prev: str, digest: str) -> bytes:
    """The document's bytes with its chain object added, without serialising it again.

    `content` is canonical JSON (sorted keys), so the first `"audit_collector":{` is the
    top-level key: inside strings every quote is escaped. The chain goes first in that
    object; verify re-canonicalises, so key order in the output does not matter.
    """
    chain = orjson.dumps({"prev": prev, "hash": digest})
    at = content.find(_CUSTOM_KEY)
    if at < 0:
        return content[:-1] + b',"audit_collector":{"chain":' + chain + b"}}"
    at += len(_CUSTOM_KEY)
    rest = content[at:]
    glue = b"" if rest.startswith(b"}") else b","
    return content[:at] + b'"chain":' + chain + glue + rest


def content_bytes(doc: dict[str, Any]) -> bytes:
    """Canonical bytes of a document without its chain object (what the chain hash covers)."""
    custom = doc.get("audit_collector")
    if not isinstance(custom, dict) or "chain" not in custom:
        return canonical(doc)
    rest = {k: v for k, v in custom.items() if k != "chain"}
    stripped = {k: v for k, v in doc.items() if k != "audit_collector"}
    if rest:
        stripped["audit_collector"] = rest
    return canonical(stripped)


def chain_hash(prev: str, content: bytes) -> str:
    digest = hashlib.sha256(prev.encode())
    digest.update(content)
    return digest.hexdigest()


def chain_of(doc: dict[str, Any]) -> tuple[str, str] | None:
    """(prev, hash) of a sealed document, or None when it carries no chain."""
    chain = (doc.get("audit_collector") or {}).get("chain")
    if not isinstance(chain, dict):
        return None
    prev, digest = chain.get("prev"), chain.get("hash")
    if not isinstance(prev, str) or not isinstance(digest, str):
        return None
    return prev, digest


def point_of(data: bytes) -> ChainPoint | None:
    """The chain point of serialized sealed document bytes (spool records, sink lines)."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    seq = (doc.get("event") or {}).get("sequence")
    chain = chain_of(doc)
    if not isinstance(seq, int) or chain is None:
        return None
    return ChainPoint(seq, chain[1])


class Sealer:
    """Numbers and chains documents; one instance per process, used from one thread."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        host: HostIdentity,
        recovered: tuple[ChainPoint | None, ...] = (),
        metrics: DeliveryMetrics | None = None,
    ) -> None:
        self._host = host
        self._state_path = Path(state_dir) / STATE_FILE
        candidates = [self._load_state(), *recovered]
        known = [p for p in candidates if p is not None]
        if known:
            self._head = max(known, key=lambda p: p.seq)
        else:
            # Fresh state: start above any earlier chain of this host (see module docstring).
            self._head = ChainPoint(time.time_ns() // 1000, GENESIS_PREV)
        self._saved_seq: int | None = None
        self._saved_at = -1e9  # monotonic time of the last state file write
        metrics = metrics or DeliveryMetrics()
        metrics.read_at_scrape(metrics.last_sequence, lambda: self._head.seq)

    @property
    def head(self) -> ChainPoint:
        """The last sealed (or recovered) position; the next document gets head.seq + 1."""
        return self._head

    def seal(self, doc: dict[str, Any]) -> SealedDoc:
        """Number and chain a document. The caller's dict is not modified."""
        seq = self._head.seq + 1
        sealed = dict(doc)
        sealed["event"] = {**(doc.get("event") or {}), "sequence": seq}
        custom = {k: v for k, v in (doc.get("audit_collector") or {}).items() if k != "chain"}
        if custom:
            sealed["audit_collector"] = custom
        else:
            sealed.pop("audit_collector", None)
        prev = self._head.hash
        content = canonical(sealed)
        digest = chain_hash(prev, content)
        self._head = ChainPoint(seq, digest)
        doc_id = document_id(self._host.id, self._host.boot_id, seq)
        return SealedDoc(doc_id, seq, with_chain(content, prev, digest))

    def checkpoint(self, durable: bool = False) -> None:
        """Persist the head (atomically) when it moved since the last checkpoint."""
        if self._saved_seq == self._head.seq:
            return
        # The spool and file sinks are the exact recovery points; the state file only
        # needs to be recent, so a storm does not rewrite it on every tick.
        now = time.monotonic()
        if not durable and now - self._saved_at < CHECKPOINT_INTERVAL_S:
            return
        body = orjson.dumps({"seq": self._head.seq, "hash": self._head.hash})
        tmp = self._state_path.with_suffix(".tmp")
        try:
            self._state_path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as handle:
                handle.write(body)
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, self._state_path)
        except OSError:
            return  # a full disk must not stop capture; the spool still holds the head
        self._saved_seq = self._head.seq
        self._saved_at = now

    def _load_state(self) -> ChainPoint | None:
        try:
            state = orjson.loads(self._state_path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        seq, digest = state.get("seq"), state.get("hash")
        if isinstance(seq, int) and isinstance(digest, str):
            return ChainPoint(seq, digest)
        return None
