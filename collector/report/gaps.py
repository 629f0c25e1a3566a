"""`report gaps`: every break in a host's sequence and every heartbeat silence longer than
twice the interval, with start, end, duration and cause.

Causes: ``collector restart`` (a stop, then a start), ``unclean stop`` (the next start says
the previous run did not end cleanly: killed, crashed, power lost; its reserved sequence
numbers are skipped), ``state reset`` (the next start found no usable state), ``ring-buffer
loss`` (the kernel dropped events: an events_lost report with its window), ``spool drop``
and ``dead letter`` (sequences an events_lost report declares lost), ``collector stopped``
(a stop and nothing after it), ``no data`` (an inventory host that sent nothing) and
``unexplained`` (missing sequences nothing accounts for, e.g. deleted documents; a silence
while the sequence continues).

How, in bounded memory: the per-host-day composite of `coverage` finds the days whose
sequences are not complete; only those sequence ranges are read document by document. The
lifecycle documents (heartbeats, starts, stops) stream through a point in time sorted by
host and time, and ring-buffer loss reports likewise; the three streams are joined by host.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from collector.report.coverage import base_query, sequence_days
from collector.report.inventory import matches
from collector.report.model import Report
from collector.report.period import Period, iso
from collector.report.source import Source, epoch
from collector.report.source import field as get

DEFAULT_HEARTBEAT_S = 60
COLUMNS = ["host", "host_id", "start", "end", "duration_s", "duration", "cause",
           "sequences", "missing", "detail"]
LIFECYCLE = ("heartbeat", "collector_start", "collector_stop")
LIFE_FIELDS = ["@timestamp", "event.action", "event.sequence", "host.name",
               "audit_collector.collector"]
LIFE_PAGE = 5000  # heartbeats are most of what gaps reads: fewer, larger pages
SEQ_FIELDS = ["@timestamp", "event.action", "event.sequence", "audit_collector.collector"]


@dataclass
class Mark:
    """One document: when, which sequence, what."""

    ts: float
    seq: int
    action: str
    collector: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, hit: dict[str, Any]) -> Mark:
        src = hit["_source"]
        return cls(epoch(src.get("@timestamp")) or 0.0, int(get(src, "event.sequence") or 0),
                   str(get(src, "event.action")), get(src, "audit_collector.collector") or {})

    @property
    def previous_end(self) -> str:
        return str((self.collector.get("previous") or {}).get("end", "unknown"))


@dataclass
class Gap:
    start: float | None
    end: float | None
    cause: str
    detail: str
    first_missing: int | None = None
    last_missing: int | None = None
    missing: int | None = None
    after_seq: int | None = None  # the sequence window the gap lies in (for merging)
    before_seq: int | None = None

    def row(self, host: str, host_id: str | None) -> dict[str, Any]:
        duration = (self.end - self.start) if self.start is not None and self.end is not None \
            else None
        seqs = "" if self.first_missing is None else (
            str(self.first_missing) if self.first_missing == self.last_missing
            else f"{self.first_missing}..{self.last_missing}")
        return {"host": host, "host_id": host_id,
                "start": iso_ms(self.start), "end": iso_ms(self.end),
                "duration_s": None if duration is None else round(duration, 3),
                "duration": human(duration), "cause": self.cause, "sequences": seqs,
                "missing": self.missing, "detail": self.detail}


def iso_ms(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    whole = int(seconds)
    return iso(whole)[:-1] + f".{round((seconds - whole) * 1000) % 1000:03d}Z"


def human(seconds: float | None) -> str:
    if seconds is None:
        return "ongoing"
    total = round(seconds)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}h {minutes:02d}m {secs:02d}s" if hours or days else f"{minutes}m {secs:02d}s"
    return f"{days}d {text}" if days else text


# --------------------------------------------------------------------------- sequences


def _intervals(days: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """Sequence ranges worth reading: incomplete days and the joints between days."""
    spans = sorted((d for d in days if d["first"] is not None), key=lambda d: d["first"])
    wanted: list[tuple[int, int]] = []
    for day in spans:
        distinct = day["distinct"] if day["distinct"] is not None else day["count"]
        if day["count"] != day["last"] - day["first"] + 1 or distinct != day["count"]:
            wanted.append((day["first"], day["last"]))
    for before, after in zip(spans, spans[1:]):
        if after["first"] != before["last"] + 1:
            low, high = sorted((before["last"], after["first"]))
            wanted.append((low, high))
    merged: list[tuple[int, int]] = []
    for low, high in sorted(wanted):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def _sequence_gaps(source: Source, host_id: str, days: list[dict[str, Any]]
                   ) -> list[Gap]:
    gaps: list[Gap] = []
    for low, high in _intervals(days):
        query = {"bool": {"filter": [{"term": {"host.id": host_id}}, {"range": {
            "event.sequence": {"gte": low, "lte": high}}}]}}
        previous: Mark | None = None
        for hit in source.stream(query, [{"event.sequence": "asc"}], SEQ_FIELDS):
            mark = Mark.of(hit)
            if previous is not None and mark.seq > previous.seq + 1:
                gaps.append(_classify(source, host_id, previous, mark))
            if previous is None or mark.seq > previous.seq:
                previous = mark
    return gaps


def _classify(source: Source, host_id: str, before: Mark, after: Mark) -> Gap:
    first, last = before.seq + 1, after.seq - 1
    gap = Gap(before.ts, after.ts, "unexplained", f"{last - first + 1} sequence numbers "
              "missing, not reported lost (deleted documents?)", first, last,
              last - first + 1, before.seq, after.seq)
    reported = _loss_reports(source, host_id, first, last)
    if _covers(reported, first, last):
        sources = sorted({str(get(r, "audit_collector.lost.source")) for r in reported})
        reasons = sorted({str(get(r, "audit_collector.lost.reason")) for r in reported})
        gap.cause = "dead letter" if sources == ["dead_letter"] else "spool drop"
        gap.detail = (f"{gap.missing} documents reported lost by events_lost "
                      f"({', '.join(sources)}: {', '.join(reasons)})")
        return gap
    if after.action == "collector_start":
        end = after.previous_end
        if end == "unclean":
            gap.cause = "unclean stop"
            gap.detail = (f"{gap.missing} sequence numbers reserved before an unclean stop "
                          "and never used (or the spool's unshipped tail was lost)")
        elif end in ("none", "unknown"):
            gap.cause = "state reset"
            gap.detail = "the collector started without usable state: a new numbering"
    return gap


def _loss_reports(source: Source, host_id: str, first: int, last: int
                  ) -> list[dict[str, Any]]:
    query = {"bool": {"filter": [
        {"term": {"host.id": host_id}}, {"term": {"event.action": "events_lost"}},
        {"range": {"audit_collector.lost.first_sequence": {"lte": last}}},
        {"range": {"audit_collector.lost.last_sequence": {"gte": first}}}]}}
    found = source.search(query=query, size=1000, track_total_hits=False,
                          sort=[{"audit_collector.lost.first_sequence": "asc"}],
                          _source=["audit_collector.lost"])
    return [hit["_source"] for hit in found["hits"]["hits"]]


def _covers(reports: list[dict[str, Any]], first: int, last: int) -> bool:
    at = first
    for report in reports:
        low = get(report, "audit_collector.lost.first_sequence")
        high = get(report, "audit_collector.lost.last_sequence")
        if isinstance(low, int) and isinstance(high, int) and low <= at <= high:
            at = high + 1
            if at > last:
                return True
    return False


# --------------------------------------------------------------------------- silences


def _interval(mark: Mark, last_known: int) -> int:
    value = mark.collector.get("heartbeat_s")
    return value if isinstance(value, int) and value > 0 else last_known


@dataclass
class _Silences:
    source: Source
    host_id: str
    period: Period
    now: float
    gaps: list[Gap] = field(default_factory=list)
    interval: int = DEFAULT_HEARTBEAT_S

    def walk(self, marks: Iterator[Mark]) -> bool:
        """Pairs of consecutive lifecycle documents; False when there were none."""
        previous: Mark | None = None
        for mark in marks:
            if previous is None:
                self._leading(mark)
            else:
                self._pair(previous, mark)
            self.interval = _interval(mark, self.interval)
            previous = mark
        if previous is None:
            return False
        self._trailing(previous)
        return True

    def _pair(self, before: Mark, after: Mark) -> None:
        if after.action == "collector_start":
            self.gaps.append(self._restart(before, after))
        elif after.ts - before.ts > 2 * self.interval:
            self.gaps.append(Gap(before.ts, after.ts, "unexplained",
                                 f"no heartbeat for {human(after.ts - before.ts)} (interval "
                                 f"{self.interval} s) while the sequence went on",
                                 after_seq=before.seq, before_seq=after.seq))

    def _restart(self, before: Mark, start: Mark) -> Gap:
        end = start.previous_end
        if before.action == "collector_stop" and end == "clean":
            return Gap(before.ts, start.ts, "collector restart", "stopped cleanly ("
                       f"{before.collector.get('reason', 'stop')}), started again",
                       after_seq=before.seq, before_seq=start.seq)
        if end == "unclean":
            last_seen = self._last_sign_of_life(start, before)
            detail = "the collector stopped without a stop document (killed, crashed or " \
                     "power lost); start is its last document"
            boot = epoch(start.collector.get("host_boot_time"))
            if boot is not None and boot > last_seen:
                detail += f"; the host rebooted at {iso_ms(boot)}"
            return Gap(last_seen, start.ts, "unclean stop", detail, after_seq=before.seq,
                       before_seq=start.seq)
        return Gap(before.ts, start.ts, "state reset", "the collector started without "
                   f"usable state (previous run: {end})", after_seq=before.seq,
                   before_seq=start.seq)

    def _last_sign_of_life(self, start: Mark, before: Mark) -> float:
        """The time of the previous run's last document (the start names its sequence)."""
        last = (start.collector.get("previous") or {}).get("last_sequence")
        if not isinstance(last, int) or last <= before.seq:
            return before.ts
        found = self.source.search(query={"bool": {"filter": [
            {"term": {"host.id": self.host_id}}, {"term": {"event.sequence": last}}]}},
            size=1, _source=["@timestamp"], track_total_hits=False)
        hits = found["hits"]["hits"]
        stamp = epoch(hits[0]["_source"].get("@timestamp")) if hits else None
        return stamp if stamp is not None and stamp > before.ts else before.ts

    def _neighbour(self, at: float, later: bool) -> Mark | None:
        """The host's nearest lifecycle document before (or after) a time."""
        bound = {"gte" if later else "lt": iso_ms(at)}
        query = {"bool": {"filter": [{"term": {"host.id": self.host_id}},
                                     {"terms": {"event.action": list(LIFECYCLE)}},
                                     {"range": {"@timestamp": bound}}]}}
        order = "asc" if later else "desc"
        found = self.source.search(query=query, size=1, track_total_hits=False,
                                   sort=[{"@timestamp": order}, {"event.sequence": order}],
                                   _source=LIFE_FIELDS)
        hits = found["hits"]["hits"]
        return Mark.of(hits[0]) if hits else None

    def _leading(self, first: Mark) -> None:
        if first.action == "collector_start" and first.previous_end == "none":
            return  # the host's first run: nothing before it to look for
        if first.action != "collector_start" and \
                first.ts - self.period.start <= 2 * self.interval:
            return
        before = self._neighbour(self.period.start, later=False)
        if before is not None:
            self.interval = _interval(before, self.interval)
            self._pair(before, first)

    def _trailing(self, last: Mark) -> None:
        horizon = min(float(self.period.end), self.now)
        if horizon - last.ts <= 2 * self.interval:
            return
        after = self._neighbour(self.period.end, later=True)
        if after is not None:
            self._pair(last, after)
        elif last.action == "collector_stop":
            self.gaps.append(Gap(last.ts, None, "collector stopped", "stopped ("
                                 f"{last.collector.get('reason', 'stop')}) and not started "
                                 "again", after_seq=last.seq))
        else:
            self.gaps.append(Gap(last.ts, None, "unexplained", "no heartbeat since; still "
                                 "silent at the end of the period", after_seq=last.seq))


def _merge(silences: list[Gap], seq_gaps: list[Gap]) -> list[Gap]:
    """A sequence break inside a silence (or restart) is the same outage: one row, with the
    sequences; a silence with an explained break inside takes its cause."""
    rest = list(seq_gaps)
    for gap in silences:
        inside = [s for s in rest if gap.after_seq is not None and s.after_seq is not None
                  and gap.after_seq <= s.after_seq and (gap.before_seq is None or (
                      s.before_seq is not None and s.before_seq <= gap.before_seq))]
        for found in inside:
            rest.remove(found)
        if not inside:
            continue
        gap.first_missing = min(s.first_missing for s in inside if s.first_missing is not None)
        gap.last_missing = max(s.last_missing for s in inside if s.last_missing is not None)
        gap.missing = sum(s.missing or 0 for s in inside)
        if gap.cause == "unexplained" and all(s.cause != "unexplained" for s in inside):
            gap.cause = inside[0].cause
            gap.detail = inside[0].detail
        elif gap.cause != "unexplained" and any(s.cause == "unexplained" for s in inside):
            gap.detail += "; also sequences missing that nothing accounts for"
            gap.cause = "unexplained"
    return sorted([*silences, *rest], key=lambda g: (g.start or 0.0, g.after_seq or 0))


# --------------------------------------------------------------------------- ring buffer


def _ringbuf_gap(hit: dict[str, Any]) -> Gap:
    src = hit["_source"]
    lost = get(src, "audit_collector.lost") or {}
    counts = {k: lost.get(k) for k in ("exec", "namespace", "bash") if lost.get(k)}
    end = epoch(src.get("@timestamp"))
    start = epoch(lost.get("first_seen")) or end
    total = sum(counts.values())
    detail = "the kernel's ring buffer was full: " + ", ".join(
        f"{k}={v}" for k, v in counts.items()) + " events lost"
    return Gap(start, end, "ring-buffer loss", detail, missing=total)


# --------------------------------------------------------------------------- the report


def _grouped(items: Iterator[dict[str, Any]], key: str) -> Iterator[tuple[str, list[Any]]]:
    for host_id, group in itertools.groupby(items, key=lambda item: item[key]):
        yield host_id, list(group)


class _HostStream:
    """A stream sorted by host.id, read one host at a time."""

    def __init__(self, hits: Iterator[dict[str, Any]]) -> None:
        self._hits = hits
        self._next = next(hits, None)

    def take(self, host_id: str) -> Iterator[dict[str, Any]]:
        while self._next is not None and get(self._next["_source"], "host.id") < host_id:
            self._next = next(self._hits, None)
        while self._next is not None and get(self._next["_source"], "host.id") == host_id:
            yield self._next
            self._next = next(self._hits, None)


def gaps_report(source: Source, period: Period, host: str | None,
                inventory: list[str] | None, now: float) -> Report:
    report = Report("gaps", "Logging gaps and outages", COLUMNS, iter(()))
    report.rows = _rows(source, period, host, inventory, now, report)
    return report


def _rows(source: Source, period: Period, host: str | None, inventory: list[str] | None,
          now: float, report: Report) -> Iterator[dict[str, Any]]:
    # First the sequence breaks of every host (read only where a day is incomplete: kept,
    # they are rows of the report), then one walk over the lifecycle documents; the
    # drill-downs do not interleave with that walk's pages.
    names: dict[str, str] = {}
    seq_gaps: dict[str, list[Gap]] = {}
    for host_id, days in _grouped(sequence_days(source, period, host), "host_id"):
        names[host_id] = days[-1]["host"]
        found = _sequence_gaps(source, host_id, days)
        if found:
            seq_gaps[host_id] = found
    sort = [{"host.id": "asc"}, {"@timestamp": "asc"}, {"event.sequence": "asc"}]
    life = _HostStream(source.stream(
        base_query(period, host, {"terms": {"event.action": list(LIFECYCLE)}}), sort,
        [*LIFE_FIELDS, "host.id"], page=LIFE_PAGE))
    ringbuf = _HostStream(source.stream(
        base_query(period, host, {"term": {"event.action": "events_lost"}},
                   {"term": {"audit_collector.lost.source": "ringbuf"}}), sort,
        ["@timestamp", "host.id", "audit_collector.lost"]))
    totals = report.totals
    totals.update(hosts=len(names), gaps=0, outage_s=0.0)
    by_cause: dict[str, int] = {}
    for host_id, name in names.items():
        silences = _Silences(source, host_id, period, now)
        if not silences.walk(Mark.of(hit) for hit in life.take(host_id)):
            report.notes.append(f"{name}: no heartbeat or start document in the period: "
                                "outages cannot be established from heartbeats (collector "
                                "older than lifecycle documents?)")
        gaps = _merge(silences.gaps, seq_gaps.pop(host_id, []))
        gaps += [_ringbuf_gap(hit) for hit in ringbuf.take(host_id)]
        gaps.sort(key=lambda g: (g.start or 0.0))
        for gap in gaps:
            row = gap.row(name, host_id)
            by_cause[gap.cause] = by_cause.get(gap.cause, 0) + 1
            totals["gaps"] += 1
            totals["outage_s"] = round(totals["outage_s"] + (row["duration_s"] or 0), 3)
            report.findings += 1
            yield row
    totals["by_cause"] = by_cause
    if not names:
        report.no_documents(period.text(), "gaps")
    if inventory is not None:
        seen = set(names.values())
        for name in inventory:
            if not any(matches(name, s) for s in seen):
                by_cause["no data"] = by_cause.get("no data", 0) + 1
                totals["gaps"] += 1
                report.findings += 1
                yield Gap(float(period.start), float(period.end), "no data",
                          "in the inventory, sent nothing in the period").row(name, None)
