"""Tamper evidence: per-host sequence numbers and a hash chain over every document.

Design
------
* Every document gets ``event.sequence``: one counter per host, monotonic across restarts and
  boots. A number is never issued twice, even when the spool's tail is lost together with a
  stale state file: before sealing, the sealer records in its state file (durably) that the
  next block of numbers (``RESERVE_BLOCK``) may be used; the checkpoint at each tick extends
  the reservation ahead of use, so events rarely wait for it. At start it continues above
  the highest of (its state file's head, the spool's last record, the file sinks' last line)
  and, after an unclean stop (the reservation was not given back by the final checkpoint),
  above the reserved block: those numbers are skipped, and since nothing was sealed between,
  the next document links straight to the last recovered one (`verify` names the skip).
  A host whose state was wiped (no state file, empty spool) starts a new chain at the wall
  clock in microseconds, which is above any earlier sequence of that host as long as the
  clock did not go back and the earlier chain averaged under a million documents per second;
  this keeps ``_id`` values from colliding with an old chain's. An invalid state file (not
  JSON, a sequence outside 0..2^62, a hash that is not SHA-256 hex, a symlink) is reported
  (`Sealer.state_problem`, one log line) and ignored: the chain continues above the other
  recovery points and the wall clock. The state file is 0600, replaced atomically through a
  temporary file that is never a planted symlink (statefiles.py).
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
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from collector.delivery.metrics import DeliveryMetrics
from collector.delivery.statefiles import open_dir, read_file, remove_stale_temps, replace_file

log = logging.getLogger(__name__)

STATE_FILE = "chain.state"
STATE_MAX_BYTES = 4096
CHECKPOINT_INTERVAL_S = 1.0
GENESIS_PREV = ""
MAX_START_SEQ = 1 << 62  # see valid_seq
RESERVE_BLOCK = 1 << 16  # sequences reserved on disk ahead of use
RESERVE_RETRY_S = 1.0
_HASH_RE = re.compile(r"[0-9a-f]{64}")


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


@dataclass(frozen=True)
class _State:
    """The state file: the head, and the highest sequence reserved for use."""

    head: ChainPoint
    reserved: int


def valid_seq(seq: object) -> bool:
    """A sequence a chain may continue from: an int in 0..2^62 (event.sequence is an
    Elasticsearch long; a start near 2^63 would run out)."""
    return isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < MAX_START_SEQ


def parse_state(body: bytes) -> _State | str:
    """The state file's content, or why it cannot be used."""
    try:
        state = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "not JSON"
    if not isinstance(state, dict):
        return f"not a JSON object: {_short(state)}"
    seq, digest = state.get("seq"), state.get("hash")
    reserved = state.get("reserved", seq)  # files written before reservations: seq
    if not valid_seq(seq):
        return f"seq {_short(seq)} is not an integer in 0..2^62"
    if not (isinstance(digest, str) and (digest == GENESIS_PREV or _HASH_RE.fullmatch(digest))):
        return f"hash {_short(digest)} is not a SHA-256 hex digest"
    if not (valid_seq(reserved) and reserved >= seq):
        return f"reserved {_short(reserved)} is not an integer in seq..2^62"
    return _State(ChainPoint(seq, digest), reserved)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Sealer:
    """Numbers and chains documents; one instance per process, used from one thread.

    After construction: `state_problem` says why the state file was not used (invalid or
    unreadable: reported, then ignored), `skipped` which sequences were passed over at the
    start (reserved before an unclean stop), and `write_problem` why the state cannot be
    saved right now (None when it can).
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        host: HostIdentity,
        recovered: tuple[ChainPoint | None, ...] = (),
        metrics: DeliveryMetrics | None = None,
    ) -> None:
        self._host = host
        self._state_dir = Path(state_dir)
        self.state_problem: str | None = None
        self.skipped: tuple[int, int] | None = None
        self.write_problem: str | None = None
        # How the previous run ended: clean (it gave its reservation back), unclean (it
        # did not: killed, crashed, power lost), none (no state, nothing recovered) or
        # unknown (the state file was unusable); and the last sequence it is known to have
        # sealed.
        self.previous_end = "none"
        self.previous_last: int | None = None
        self._saved_seq: int | None = None
        self._saved_at = -1e9  # monotonic time of the last state file write
        self._retry_at = -1e9  # monotonic time before which a failed reservation waits
        self._head = self._starting_head(self._load_state(), recovered)
        self._reserved = self._head.seq  # nothing reserved on disk for this run yet
        self._reserve(self._head.seq + RESERVE_BLOCK)
        metrics = metrics or DeliveryMetrics()
        metrics.read_at_scrape(metrics.last_sequence, lambda: self._head.seq)

    @property
    def head(self) -> ChainPoint:
        """The last sealed (or recovered) position; the next document gets head.seq + 1."""
        return self._head

    def seal(self, doc: dict[str, Any]) -> SealedDoc:
        """Number and chain a document. The caller's dict is not modified."""
        seq = self._head.seq + 1
        if seq > self._reserved:
            self._reserve_now(seq)
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
        """Persist the head (atomically) when it moved since the last checkpoint, and keep
        sequences reserved ahead of use. durable=True is the last checkpoint of a clean
        stop: it also gives back the unused reserved sequences, so the next start
        continues without a skip."""
        if durable:
            if self._write_state(self._head.seq, durable=True):
                self._reserved = self._head.seq
            return
        now = time.monotonic()
        if self._reserved - self._head.seq < RESERVE_BLOCK // 2 and now >= self._retry_at:
            self._reserve(self._head.seq + RESERVE_BLOCK)  # off the per-event path
            return
        # The spool and file sinks are the exact recovery points; the state file only
        # needs to be recent, so a storm does not rewrite it on every tick.
        if self._saved_seq == self._head.seq or now - self._saved_at < CHECKPOINT_INTERVAL_S:
            return
        self._write_state(self._reserved, durable=False)

    # ------------------------------------------------------------------ start

    def _starting_head(self, state: _State | None,
                       recovered: tuple[ChainPoint | None, ...]) -> ChainPoint:
        """Above every recovery point and every sequence that may have been used."""
        points = [p for p in recovered if p is not None and valid_seq(p.seq)]
        if state is not None:
            points.append(state.head)
        head = max(points, key=lambda p: p.seq) if points else None
        self._note_previous(state, head)
        if state is not None:
            used_up_to = state.reserved  # equal to state.head.seq after a clean stop
        elif head is None or self.state_problem is not None:
            # No (usable) state: the wall clock in microseconds is above every sequence of
            # this host's chains (see the module docstring).
            used_up_to = time.time_ns() // 1000
        else:
            used_up_to = head.seq  # no state file: the outputs are all there is
        if head is None:
            return ChainPoint(used_up_to, GENESIS_PREV)
        if used_up_to > head.seq:
            # Nothing between was sealed into the chain, or it would be a recovery point
            # (or lost with the spool's tail): the next document links to head directly.
            self.skipped = (head.seq + 1, used_up_to)
            log.info("chain: continuing at seq %d after seq %d: %d sequence numbers reserved "
                     "before an unclean stop (or a state reset) are not reused",
                     used_up_to + 1, head.seq, used_up_to - head.seq)
            return ChainPoint(used_up_to, head.hash)
        return head

    def _note_previous(self, state: _State | None, head: ChainPoint | None) -> None:
        if state is not None:
            clean = state.reserved == state.head.seq and (head is None
                                                          or head.seq <= state.head.seq)
            self.previous_end = "clean" if clean else "unclean"
        elif head is not None or self.state_problem is not None:
            self.previous_end = "unknown"
        self.previous_last = head.seq if head is not None else None

    def _load_state(self) -> _State | None:
        path = self._state_dir / STATE_FILE
        try:
            dir_fd = open_dir(self._state_dir)
        except OSError as exc:
            self._note_write_problem(exc)
            return None
        try:
            remove_stale_temps(dir_fd, STATE_FILE)
            state = parse_state(read_file(dir_fd, STATE_FILE, STATE_MAX_BYTES))
        except FileNotFoundError:
            return None
        except OSError as exc:
            state = f"unreadable: {exc.strerror or exc}"
        finally:
            os.close(dir_fd)
        if isinstance(state, str):
            self.state_problem = f"{path} is invalid ({state}); not used"
            log.warning("chain: %s: continuing above the spool, the outputs and the wall "
                        "clock", self.state_problem)
            return None
        return state

    # ------------------------------------------------------------------ saving

    def _reserve_now(self, seq: int) -> None:
        """seal() ran past the reservation (a burst between checkpoints, or the disk
        refused it): reserve a block synchronously, retried at most once a second."""
        if time.monotonic() >= self._retry_at:
            self._reserve(seq - 1 + RESERVE_BLOCK)

    def _reserve(self, up_to: int) -> None:
        """Durably record that sequences up to up_to may be used, before any of them is:
        a restart after a crash continues above them, whatever else was lost."""
        if self._write_state(up_to, durable=True):
            self._reserved = up_to
        else:
            # Capture goes on (a full disk must not stop it) without the guarantee.
            self._retry_at = time.monotonic() + RESERVE_RETRY_S

    def _write_state(self, reserved: int, durable: bool) -> bool:
        body = orjson.dumps({"seq": self._head.seq, "hash": self._head.hash,
                             "reserved": reserved})
        try:
            dir_fd = open_dir(self._state_dir)
            try:
                replace_file(dir_fd, STATE_FILE, body, durable)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            self._note_write_problem(exc)
            return False
        if self.write_problem is not None:
            log.info("chain: saving %s again", self._state_dir / STATE_FILE)
            self.write_problem = None
        self._saved_seq = self._head.seq
        self._saved_at = time.monotonic()
        return True

    def _note_write_problem(self, exc: OSError) -> None:
        if self.write_problem is None:
            self.write_problem = f"cannot save {self._state_dir / STATE_FILE}: " \
                f"{exc.strerror or exc}"
            log.warning("chain: %s; sequences cannot be reserved ahead of use until it "
                        "can (a crash then may reuse some)", self.write_problem)
