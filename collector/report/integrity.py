"""`report integrity`: per host and day, the chain head, the signature status and the first
broken sequence.

Each host's documents of the period are read in sequence order and checked as `verify`
does (collector.delivery.elasticsearch.verify.ChainVerifier: recomputed hashes, links,
gaps against the events_lost reports, duplicates), and, with ``--keys FILE``, every signed
checkpoint against the host's public key from that file (never from the index). After the
period, the chain is followed to the next checkpoint so that the period's last documents
are judged by the signature that covers them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from collector.delivery.chain import chain_of
from collector.delivery.elasticsearch.verify import ChainVerifier, Finding, loss_report_of
from collector.report.coverage import sequence_days
from collector.report.model import Report
from collector.report.period import Period
from collector.report.source import Source

COLUMNS = ["host", "host_id", "day", "documents", "first_sequence", "last_sequence",
           "head_hash", "checkpoints_valid", "checkpoints_invalid", "signature",
           "first_broken_sequence", "problems", "status"]
SORT = [{"event.sequence": "asc"},
        {"audit_collector.chain.hash": {"order": "asc", "unmapped_type": "keyword"}}]
FOLLOW_LIMIT = 100_000  # documents read after the period to reach the next checkpoint


@dataclass
class _Day:
    day: str
    documents: int = 0
    first: int | None = None
    last: int | None = None
    head: str | None = None
    valid: int = 0
    invalid: int = 0
    findings: list[Finding] = field(default_factory=list)


def _day_of(source: dict[str, Any]) -> str:
    stamp = source.get("@timestamp")
    return stamp[:10] if isinstance(stamp, str) else "unknown"


class _HostCheck:
    def __init__(self, source: Source, host_id: str, period: Period,
                 keys: dict[str, list[str]] | None) -> None:
        self.source = source
        self.host_id = host_id
        self.period = period
        self.verifier = ChainVerifier(reports=self._reports(),
                                      keys=None if keys is None else keys.get(host_id, []))
        self.days: dict[str, _Day] = {}

    def _reports(self) -> list[Any]:
        query = {"bool": {"filter": [{"term": {"host.id": self.host_id}},
                                     {"term": {"event.action": "events_lost"}},
                                     {"exists": {"field": "audit_collector.lost.first_sequence"}}]}}
        found = (loss_report_of(hit["_source"]) for hit in self.source.stream(
            query, [{"event.sequence": "asc"}], ["event.sequence", "audit_collector.lost"]))
        return [r for r in found if r is not None]

    def run(self, now: float) -> list[_Day]:
        query = {"bool": {"filter": [{"term": {"host.id": self.host_id}},
                                     self.period.range_query()]}}
        for hit in self.source.stream(query, SORT, None):
            self._feed(hit, counted=True)
        self._follow()
        before = len(self.verifier.findings)
        self.verifier.finish(now)
        for finding in self.verifier.findings[before:]:
            self._day_holding(finding.first_seq).findings.append(finding)
        return sorted(self.days.values(), key=lambda d: d.day)

    def _feed(self, hit: dict[str, Any], counted: bool) -> None:
        src = hit["_source"]
        sigs = self.verifier.signatures
        before = (len(self.verifier.findings), sigs.valid, sigs.invalid)
        self.verifier.feed(hit["_id"], src)
        if not counted:
            return
        day = self.days.setdefault(_day_of(src), _Day(_day_of(src)))
        seq = (src.get("event") or {}).get("sequence")
        day.documents += 1
        if isinstance(seq, int):
            day.first = seq if day.first is None else min(day.first, seq)
            if day.last is None or seq >= day.last:
                day.last = seq
                chain = chain_of(src)
                day.head = chain[1] if chain else None
        day.findings.extend(self.verifier.findings[before[0]:])
        day.valid += sigs.valid - before[1]
        day.invalid += sigs.invalid - before[2]

    def _follow(self) -> None:
        """Documents after the period, up to the first checkpoint (which signs the
        period's tail); they count for the signature only."""
        last = self.verifier.last_seq
        if last is None or self.verifier.keys is None:
            return
        query = {"bool": {"filter": [{"term": {"host.id": self.host_id}},
                                     {"range": {"event.sequence": {"gt": last}}}]}}
        for read, hit in enumerate(self.source.stream(query, SORT, None)):
            valid = self.verifier.signatures.valid
            self._feed(hit, counted=False)
            if self.verifier.signatures.valid > valid or read >= FOLLOW_LIMIT:
                return

    def _day_holding(self, seq: int) -> _Day:
        for day in sorted(self.days.values(), key=lambda d: d.day):
            if day.first is not None and day.last is not None and day.first <= seq <= day.last:
                return day
        return max(self.days.values(), key=lambda d: d.day)


def _signature(day: _Day, verifier: ChainVerifier) -> str:
    if verifier.keys is None:
        return "not checked (no --keys)"
    if not verifier.keys:
        return "no key for this host"
    if day.invalid:
        return "invalid"
    covered = verifier.signatures.covered_to  # the checkpoint document itself included
    if covered is not None and day.last is not None and day.last <= covered:
        return "signed"
    if any(f.kind == "pending" for f in day.findings):
        return "pending"
    return "unsigned"


def _row(host: str, host_id: str, day: _Day, verifier: ChainVerifier) -> dict[str, Any]:
    failing = [f for f in day.findings if f.failing]
    signature = _signature(day, verifier)
    problems = sorted({f.kind for f in day.findings})
    if failing or signature in ("invalid", "unsigned"):
        status = "FAILED"
    elif signature == "no key for this host":
        status = "not established"
    else:
        status = "ok"
    return {"host": host, "host_id": host_id, "day": day.day, "documents": day.documents,
            "first_sequence": day.first, "last_sequence": day.last, "head_hash": day.head,
            "checkpoints_valid": day.valid, "checkpoints_invalid": day.invalid,
            "signature": signature,
            "first_broken_sequence": min((f.first_seq for f in failing), default=None),
            "problems": ", ".join(problems), "status": status,
            "_details": [f.line().strip() for f in day.findings]}


def integrity_report(source: Source, period: Period, host: str | None,
                     keys: dict[str, list[str]] | None, now: float) -> Report:
    report = Report("integrity", "Integrity of the audit trail (hash chain and signatures)",
                    COLUMNS, iter(()))
    report.header.append(("signatures", "checked against the key file given with --keys"
                          if keys is not None else "not checked: no --keys FILE given (the "
                          "index's own start documents are not trusted for this)"))
    report.rows = _rows(source, period, host, keys, now, report)
    return report


def _rows(source: Source, period: Period, host: str | None,
          keys: dict[str, list[str]] | None, now: float, report: Report
          ) -> Iterator[dict[str, Any]]:
    totals = report.totals
    totals.update(hosts=0, host_days=0, failed=0, documents=0)
    seen: set[str] = set()
    for day in sequence_days(source, period, host):
        if day["host_id"] in seen:
            continue
        seen.add(day["host_id"])
        totals["hosts"] += 1
        check = _HostCheck(source, day["host_id"], period, keys)
        for result in check.run(now):
            row = _row(day["host"], day["host_id"], result, check.verifier)
            totals["host_days"] += 1
            totals["documents"] += result.documents
            if row["status"] != "ok":
                totals["failed"] += 1
                report.findings += 1
            yield row
    if totals["hosts"] == 0:
        report.no_documents(period.text(), "integrity")
