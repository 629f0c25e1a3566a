"""`audit-collector verify`: read a host's documents back and check sequence and chain.

Two passes over the data stream, both sorted by ``event.sequence`` and paged with
``search_after``: first the host's ``events_lost`` reports (which sequence ranges the
collector itself declared lost), then every document. The tiebreaker sort key is the
chain hash: sorting on ``_id`` needs fielddata on ``_id``, which Elasticsearch 8 disables.

For each document the chain hash is recomputed (see `collector.delivery.chain`), and:

* hash mismatch                       -> EDITED (content changed after sealing);
* ``prev`` != previous document's hash -> CHAIN BREAK (the previous document was rewritten
  with a recomputed hash, or this one was inserted);
* two documents with one sequence     -> DUPLICATE;
* missing sequences                   -> GAP, *explained* when events_lost reports cover
  every missing sequence; then the link across the gap is checked against the report's
  ``last_chain_hash`` (the hash of the last lost document). A deletion shows as an
  unexplained gap, and the document after it does not link;
* ``prev`` == "" after the first document -> RESTART (collector state was reset): noted,
  not a failure, since nothing in the stored data is contradicted.
* a gap across which the chain links straight (``prev`` is the hash of the document before
  the gap) -> SKIPPED: no document was sealed in between, the numbers were never used (the
  collector reserves numbers ahead of use and skips the unused ones after an unclean stop).
  Noted, not a failure.
* a gap after which ``prev`` is the hash of a recent earlier document -> FORK: the collector
  restarted from an older position (its spool's tail was lost after a crash) above every
  number it may have used, so nothing stored is contradicted; documents it had not shipped
  may be lost without a report. Noted, not a failure.

Signed checkpoints (``--keys FILE``, the public keys the role collected; see
delivery/signing.py): each checkpoint document's signature is checked against the host's
key from that file, never from the index, and the chain hash it signed against the stored
document at that sequence:

* signature does not verify            -> BAD SIGNATURE (forged or altered checkpoint);
* signed hash != stored hash           -> CHECKPOINT MISMATCH (the documents up to there were
  rewritten and the chain recomputed);
* documents after the last valid checkpoint, the oldest of them older than twice the
  checkpoint interval -> UNSIGNED TAIL (appended without the key, or the collector stopped
  without signing and never came back); younger ones are ``pending``.
* the host has no key in the file       -> ``no key``: not established, not a failure.

Search sees a write only after the index's next refresh (every ``index.refresh_interval``,
1 s by default), so verify first refreshes the stream; without the privilege to (403) it
waits until the host's document count stops changing for longer than the refresh interval.

Exit status 0 when nothing unexplained was found, 1 otherwise (2 when the cluster could not
be read, with one line on stderr).
"""

from __future__ import annotations

import calendar
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from elastic_transport import TransportError
from elasticsearch import ApiError, AuthorizationException, Elasticsearch

from collector.delivery.chain import GENESIS_PREV, chain_hash, chain_of, content_bytes
from collector.delivery.elasticsearch.client import build_client
from collector.delivery.elasticsearch.index import error_text
from collector.delivery.elasticsearch.settings import ClusterConfigError, ClusterSettings
from collector.delivery.signing import checkpoint_payload, signature_valid

PAGE_SIZE = 1000
RECENT_HASHES = 1 << 16  # how far back a fork point is recognised (a reserve block)
SORT = [{"event.sequence": {"order": "asc"}},
        {"audit_collector.chain.hash": {"order": "asc", "unmapped_type": "keyword"}}]
FAILING = ("gap", "edited", "chain_break", "duplicate", "unchained", "bad_signature",
           "checkpoint_mismatch", "unsigned_tail")
DEFAULT_CHECKPOINT_S = 60


@dataclass(frozen=True)
class LossReport:
    """What an events_lost document declared."""

    seq: int
    first: int
    last: int
    source: str
    reason: str
    last_chain_hash: str | None


@dataclass(frozen=True)
class Finding:
    kind: str  # gap, explained_gap, edited, chain_break, duplicate, unchained, restart, ...
    first_seq: int
    last_seq: int
    detail: str

    @property
    def failing(self) -> bool:
        return self.kind in FAILING

    def line(self) -> str:
        where = (f"seq {self.first_seq}" if self.first_seq == self.last_seq
                 else f"seq {self.first_seq}..{self.last_seq}")
        label = self.kind.upper().replace("_", " ") if self.failing else self.kind.replace("_", " ")
        return f"  {label} {where}: {self.detail}"


@dataclass
class _Head:
    seq: int
    hash: str
    id: str


@dataclass
class Signatures:
    """What the signed checkpoints established for one host."""

    valid: int = 0
    invalid: int = 0  # bad signature or mismatch
    unchecked: int = 0  # no key for the host, or the signed document was not read
    covered_seq: int | None = None  # documents up to here are covered by a valid signature
    covered_to: int | None = None  # ...and the checkpoint document that says so
    every_s: int = DEFAULT_CHECKPOINT_S


@dataclass
class ChainVerifier:
    """Streaming check of one host's documents, fed in (sequence, chain hash) order.

    keys: the host's public keys (base64) from the collected key file, or None when
    signatures are not checked."""

    reports: list[LossReport] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    documents: int = 0
    first_seq: int | None = None
    keys: list[str] | None = None
    signatures: Signatures = field(default_factory=Signatures)
    _head: _Head | None = None
    _recent: dict[str, int] = field(default_factory=dict)  # chain hash -> sequence
    _hash_at: dict[int, str] = field(default_factory=dict)  # sequence -> chain hash
    _tail_first: tuple[int, str] | None = None  # first unsigned document: (seq, @timestamp)

    def feed(self, doc_id: str, source: dict[str, Any]) -> None:
        self.documents += 1
        seq = (source.get("event") or {}).get("sequence")
        chain = chain_of(source)
        if not isinstance(seq, int) or chain is None:
            self._add("unchained", seq if isinstance(seq, int) else -1, f"{doc_id} has no "
                      "event.sequence or chain")
            return
        prev, digest = chain
        if chain_hash(prev, content_bytes(source)) != digest:
            self._add("edited", seq, f"{doc_id}: content does not match its chain hash")
        self._note_reported_but_present(seq, doc_id)
        checkpoint = (source.get("audit_collector") or {}).get("checkpoint")
        if isinstance(checkpoint, dict):
            self._check_checkpoint(seq, checkpoint, source)
        if self._tail_first is None and (self.signatures.covered_to is None
                                         or seq > self.signatures.covered_to):
            self._tail_first = (seq, str(source.get("@timestamp", "")))
        head = self._head
        if head is None:
            self.first_seq = seq
        elif seq == head.seq:
            self._add("duplicate", seq, f"{doc_id} and {head.id} carry the same sequence")
            return
        elif seq == head.seq + 1:
            self._check_link(seq, prev, head.hash, head.seq)
        else:
            self._check_gap(head, seq, prev)
        self._head = _Head(seq, digest, doc_id)
        self._remember(digest, seq)

    def _remember(self, digest: str, seq: int) -> None:
        self._recent[digest] = seq
        self._hash_at[seq] = digest
        if len(self._recent) > RECENT_HASHES:
            del self._recent[next(iter(self._recent))]
        if len(self._hash_at) > RECENT_HASHES:
            del self._hash_at[next(iter(self._hash_at))]

    # -- checkpoints

    def _check_checkpoint(self, seq: int, checkpoint: dict[str, Any],
                          source: dict[str, Any]) -> None:
        sigs = self.signatures
        signed_seq, signed_hash = checkpoint.get("sequence"), checkpoint.get("hash")
        if isinstance(checkpoint.get("every_s"), int) and checkpoint["every_s"] > 0:
            sigs.every_s = checkpoint["every_s"]
        if not isinstance(signed_seq, int) or not isinstance(signed_hash, str):
            sigs.invalid += 1
            self._add("bad_signature", seq, "checkpoint without a sequence and hash")
            return
        stored = self._hash_at.get(signed_seq)
        if stored is not None and stored != signed_hash:
            sigs.invalid += 1
            self._add("checkpoint_mismatch", seq, f"the checkpoint signs seq {signed_seq} "
                      "with another chain hash than the stored document's (documents up to "
                      "there were rewritten and the chain recomputed)")
            return
        if self.keys is None:
            sigs.unchecked += 1
            return
        host = source.get("host") or {}
        payload = checkpoint_payload(str(host.get("id", "")),
                                     str(checkpoint.get("boot_id", "")), signed_seq,
                                     signed_hash)
        signature = str(checkpoint.get("signature", ""))
        if not self.keys:
            sigs.unchecked += 1
            if sigs.unchecked == 1:
                self._add("no_key", seq, "the key file has no public key for this host: "
                          "signatures cannot be checked")
            return
        if not any(signature_valid(key, payload, signature) for key in self.keys):
            sigs.invalid += 1
            self._add("bad_signature", seq, f"the signature of the checkpoint of seq "
                      f"{signed_seq} does not verify with the host's key (forged or altered)")
            return
        if stored is None:
            sigs.unchecked += 1
            return
        sigs.valid += 1
        sigs.covered_seq, sigs.covered_to = signed_seq, seq
        self._tail_first = None

    def finish(self, now_s: float | None = None) -> None:
        """After the last document: judge the documents no valid signature covers."""
        if self.keys is None or not self.keys or self._tail_first is None \
                or self._head is None:
            return
        first, stamp = self._tail_first
        last = self._head.seq
        after = (f"after seq {self.signatures.covered_seq}" if self.signatures.covered_seq
                 is not None else "(no valid checkpoint at all)")
        age = _age_s(stamp, now_s)
        limit = 2 * self.signatures.every_s
        if age is not None and age <= limit:
            self._add("pending", first, f"documents {after} are younger than {limit} s: "
                      "the next checkpoint signs them", last)
            return
        self._add("unsigned_tail", first, f"documents {after} are not covered by a valid "
                  f"signature although the collector signs every {self.signatures.every_s} s "
                  "(appended without the key, or the collector stopped without signing)", last)

    def _check_link(self, seq: int, prev: str, expected: str, prev_seq: int) -> None:
        if prev == expected:
            return
        if prev == GENESIS_PREV:
            self._add("restart", seq, "a new chain starts here (collector state was reset)")
            return
        self._add("chain_break", seq, f"prev does not match the hash of seq {prev_seq} "
                  "(that document was rewritten, or this one inserted)")

    def _check_gap(self, head: _Head, seq: int, prev: str) -> None:
        first, last = head.seq + 1, seq - 1
        if prev == GENESIS_PREV:
            self._add("restart", seq, f"a new chain starts here after seq {head.seq} "
                      "(collector state was reset)")
            return
        missing = last - first + 1
        covering = self._covering(first, last)
        if covering is None:
            self._unreported_gap(head, first, last, prev)
            return
        names = ", ".join(f"seq {r.seq} ({r.source}, {r.reason})" for r in covering)
        self._add("explained_gap", first, f"{missing} documents reported lost by "
                  f"events_lost {names}", last)
        bridge = next((r for r in covering if r.last == last and r.last_chain_hash), None)
        if bridge is not None and bridge.last_chain_hash != prev:
            self._add("chain_break", seq, "prev does not match the reported hash of the last "
                      f"lost document (seq {last})")

    def _unreported_gap(self, head: _Head, first: int, last: int, prev: str) -> None:
        missing = last - first + 1
        if prev == head.hash:
            self._add("skipped", first, f"{missing} sequence numbers never used: seq {last + 1} "
                      f"links straight to seq {head.seq} (reserved before an unclean stop)",
                      last)
            return
        fork = self._recent.get(prev)
        if fork is not None:
            self._add("fork", last + 1, f"the chain continues from seq {fork}, not {head.seq}: "
                      f"the collector restarted from an older position (its spool's tail was "
                      f"lost) and skipped {missing} numbers it may have used")
            return
        self._add("gap", first, f"{missing} documents missing, not reported lost", last)

    def _covering(self, first: int, last: int) -> list[LossReport] | None:
        """Reports that together cover first..last, or None when some sequence is not."""
        used: list[LossReport] = []
        at = first
        for report in sorted(self.reports, key=lambda r: r.first):
            if report.last < at or report.first > at:
                continue
            used.append(report)
            at = report.last + 1
            if at > last:
                return used
        return None

    def _note_reported_but_present(self, seq: int, doc_id: str) -> None:
        for report in self.reports:
            if report.first <= seq <= report.last:
                self._add("reported_lost_but_present", seq, f"{doc_id} is stored although "
                          f"events_lost seq {report.seq} reported it lost (it was in flight)")
                return

    def _add(self, kind: str, first: int, detail: str, last: int | None = None) -> None:
        self.findings.append(Finding(kind, first, first if last is None else last, detail))

    @property
    def last_seq(self) -> int | None:
        return self._head.seq if self._head else None

    @property
    def clean(self) -> bool:
        return not any(f.failing for f in self.findings)


def _age_s(stamp: str, now_s: float | None) -> float | None:
    """Seconds from an RFC 3339 @timestamp to now (None when it cannot be read)."""
    seconds = epoch_seconds(stamp)
    if seconds is None:
        return None
    return (time.time() if now_s is None else now_s) - seconds


def epoch_seconds(stamp: str) -> int | None:
    """Unix seconds of an RFC 3339 UTC timestamp (the collector's @timestamp), to the
    second; None when it is not one."""
    try:
        return calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
    except (ValueError, TypeError):
        return None


def loss_report_of(source: dict[str, Any]) -> LossReport | None:
    lost = (source.get("audit_collector") or {}).get("lost") or {}
    seq = (source.get("event") or {}).get("sequence")
    first, last = lost.get("first_sequence"), lost.get("last_sequence")
    if not all(isinstance(v, int) for v in (seq, first, last)):
        return None
    return LossReport(seq, first, last, str(lost.get("source", "")), str(lost.get("reason", "")),
                      lost.get("last_chain_hash"))


def verify_documents(
    docs: Iterable[tuple[str, dict[str, Any]]], reports: list[LossReport],
    keys: list[str] | None = None, now_s: float | None = None,
) -> ChainVerifier:
    verifier = ChainVerifier(reports=reports, keys=keys)
    for doc_id, source in docs:
        verifier.feed(doc_id, source)
    verifier.finish(now_s)
    return verifier


# --------------------------------------------------------------------------- reading


def iter_documents(
    client: Elasticsearch, index: str, query: dict[str, Any], page_size: int = PAGE_SIZE
) -> Iterator[tuple[str, dict[str, Any]]]:
    search_after: list[Any] | None = None
    while True:
        response = client.search(index=index, query=query, sort=SORT, size=page_size,
                                 search_after=search_after, track_total_hits=False)
        hits = response.body["hits"]["hits"]
        for hit in hits:
            yield hit["_id"], hit["_source"]
        if len(hits) < page_size:
            return
        search_after = hits[-1]["sort"]


DEFAULT_REFRESH_S = 1.0  # index.refresh_interval when the index does not set it
TAIL_WAIT_MAX_S = 60.0


def refresh(client: Elasticsearch, index: str) -> bool:
    """Make what was just shipped searchable; False without the privilege to (403)."""
    try:
        client.indices.refresh(index=index)
    except AuthorizationException:
        return False
    return True


def refresh_interval_s(client: Elasticsearch, index: str) -> float | None:
    """The longest refresh interval of the index's backing indices (the default when they
    cannot be read); None when refreshes are off (-1)."""
    try:
        found = client.indices.get_settings(index=index, flat_settings=True).body
    except ApiError:
        return DEFAULT_REFRESH_S
    longest = DEFAULT_REFRESH_S
    for entry in found.values():
        value = (entry.get("settings") or {}).get("index.refresh_interval")
        seconds = _seconds(value) if value is not None else DEFAULT_REFRESH_S
        if seconds is None:
            return None
        longest = max(longest, seconds)
    return longest


def _seconds(value: Any) -> float | None:
    text = str(value).strip()
    if text.startswith("-"):
        return None
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return float(text[: -len(unit)]) * units[unit]
    return DEFAULT_REFRESH_S


def wait_for_tail(count: Callable[[], int], interval_s: float,
                  max_s: float = TAIL_WAIT_MAX_S, sleep: Callable[[float], None] = time.sleep
                  ) -> float:
    """Poll `count` until it has not changed for longer than one refresh interval (so every
    write made before the call is searchable); the seconds waited."""
    started = time.monotonic()
    last, steady_since = count(), time.monotonic()
    settle = interval_s * 1.2 + 0.2
    while time.monotonic() - steady_since < settle and time.monotonic() - started < max_s:
        sleep(min(0.25, settle / 4))
        now = count()
        if now != last:
            last, steady_since = now, time.monotonic()
    return time.monotonic() - started


def make_searchable(client: Elasticsearch, index: str, host_id: str | None,
                    out: TextIO) -> None:
    """Refresh, or without the privilege wait for the writes of the last refresh interval."""
    if refresh(client, index):
        return
    interval = refresh_interval_s(client, index)
    if interval is None:
        print(f"verify: no privilege to refresh {index} and its refresh_interval is -1: "
              "documents written since its last refresh are not seen", file=out)
        return
    query = _host_query(host_id) if host_id else {"match_all": {}}
    waited = wait_for_tail(lambda: int(client.count(index=index, query=query).body["count"]),
                           interval)
    print(f"verify: no privilege to refresh {index}; waited {waited:.1f} s for recent writes "
          "to become searchable", file=out)


def host_ids(client: Elasticsearch, index: str) -> list[str]:
    response = client.search(index=index, size=0, aggs={"hosts": {"terms": {
        "field": "host.id", "size": 10000}}})
    return [b["key"] for b in response.body["aggregations"]["hosts"]["buckets"]]


def _host_query(host_id: str, lost_only: bool = False) -> dict[str, Any]:
    clauses: list[dict[str, Any]] = [{"term": {"host.id": host_id}}]
    if lost_only:
        clauses.append({"term": {"event.action": "events_lost"}})
    return {"bool": {"filter": clauses}}


def verify_host(client: Elasticsearch, index: str, host_id: str,
                keys: dict[str, list[str]] | None = None) -> ChainVerifier:
    reports = [r for _, src in iter_documents(client, index, _host_query(host_id, True))
               if (r := loss_report_of(src)) is not None]
    return verify_documents(iter_documents(client, index, _host_query(host_id)), reports,
                            None if keys is None else keys.get(host_id, []))


def _print_host(out: TextIO, host_id: str, result: ChainVerifier) -> None:
    span = (f"sequences {result.first_seq}..{result.last_seq}"
            if result.first_seq is not None else "no documents")
    print(f"host {host_id}: {result.documents} documents, {span}", file=out)
    for finding in result.findings:
        print(finding.line(), file=out)
    if result.keys is not None:
        sigs = result.signatures
        covered = (f"documents up to seq {sigs.covered_seq} covered"
                   if sigs.covered_seq is not None else "no document covered")
        print(f"  signatures: {sigs.valid} valid, {sigs.invalid} invalid, {sigs.unchecked} "
              f"not checked; {covered}", file=out)
    failing = sum(1 for f in result.findings if f.failing)
    print(f"  result: {'clean' if failing == 0 else f'{failing} unexplained problem(s)'}",
          file=out)


def run_verify(
    cfg: ClusterSettings, host_id: str | None, out: TextIO,
    client: Elasticsearch | None = None, err: TextIO | None = None,
    keys: dict[str, list[str]] | None = None,
) -> int:
    """Verify one host (or every host); findings on `out`, a failure in one line on `err`
    (stderr). keys: host.id -> public keys (from `--keys FILE`) to check checkpoints."""
    index = cfg.elasticsearch.data_stream
    err = err or sys.stderr
    try:
        client = client or build_client(cfg)
    except ClusterConfigError as exc:
        print(f"verify: {exc}", file=err)
        return 2
    try:
        make_searchable(client, index, host_id, out)
        hosts = [host_id] if host_id else host_ids(client, index)
        if not hosts:
            print(f"verify: no documents in {index}", file=out)
            return 0
        clean = True
        for host in hosts:
            result = verify_host(client, index, host, keys)
            _print_host(out, host, result)
            clean = clean and result.clean
    except (ApiError, TransportError) as exc:
        print(f"verify: cannot read {index}: {error_text(exc, cfg)}", file=err)
        return 2
    return 0 if clean else 1
