"""`report coverage`: per host and day, first/last sequence, documents, missing
(max - min + 1 - count), heartbeats, restarts and documented losses; the hosts of an
inventory that sent nothing.

One composite aggregation over (host.id, host.name, day, event.action), paged to the end:
per bucket min/max/count/cardinality of event.sequence, the heartbeat interval and the sums
of what events_lost reports declare; the buckets of one host-day are consecutive and are
merged as they stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from collector.report.inventory import matches
from collector.report.model import Report
from collector.report.period import DAY_S, Period, day_of
from collector.report.source import Source, host_filter

HEARTBEAT_OK_PERCENT = 95
DEFAULT_HEARTBEAT_S = 60
COLUMNS = ["host", "host_id", "day", "first_sequence", "last_sequence", "documents",
           "missing", "duplicates", "heartbeats", "heartbeat_coverage", "starts",
           "events_lost", "documents_lost", "status"]
KEY_SOURCES = [{"host": {"terms": {"field": "host.id"}}},
               {"name": {"terms": {"field": "host.name"}}},
               {"day": {"date_histogram": {"field": "@timestamp", "calendar_interval": "1d",
                                           "time_zone": "UTC"}}},
               {"action": {"terms": {"field": "event.action"}}}]
LOST_FIELDS = ("documents", "exec", "namespace", "bash")
DAY_AGGS = {"first": {"min": {"field": "event.sequence"}},
            "last": {"max": {"field": "event.sequence"}},
            "count": {"value_count": {"field": "event.sequence"}},
            "distinct": {"cardinality": {"field": "event.sequence",
                                         "precision_threshold": 40000}},
            "interval": {"max": {"field": "audit_collector.collector.heartbeat_s"}},
            **{f"lost_{name}": {"sum": {"field": f"audit_collector.lost.{name}"}}
               for name in LOST_FIELDS}}


def base_query(period: Period, host: str | None, *extra: dict[str, Any]) -> dict[str, Any]:
    return {"bool": {"filter": [period.range_query(), *host_filter(host), *extra]}}


def _value(bucket: dict[str, Any], name: str) -> int | None:
    value = (bucket.get(name) or {}).get("value")
    return None if value is None else int(value)


def host_days(source: Source, period: Period, host: str | None) -> Iterator[dict[str, Any]]:
    """Per (host, name, day): first/last sequence, count, distinct count, lifecycle counts
    and the losses reported; from one composite over (host, name, day, action) whose
    buckets of a host-day are consecutive (one pass over the documents)."""
    current: dict[str, Any] | None = None
    for bucket in source.composite(base_query(period, host), KEY_SOURCES, DAY_AGGS):
        key = bucket["key"]
        ident = (key["host"], key["name"], int(key["day"]))
        if current is None or current["key"] != ident:
            if current is not None:
                yield current
            current = {"host_id": ident[0], "host": ident[1], "day": day_of(ident[2] // 1000),
                       "key": ident, "first": None, "last": None, "count": 0,
                       "distinct": 0, "actions": {}, "interval": None,
                       "lost": dict.fromkeys(LOST_FIELDS, 0)}
        _add_bucket(current, key["action"], bucket)
    if current is not None:
        yield current


def _add_bucket(day: dict[str, Any], action: str, bucket: dict[str, Any]) -> None:
    first, last = _value(bucket, "first"), _value(bucket, "last")
    if first is not None:
        day["first"] = first if day["first"] is None else min(day["first"], first)
    if last is not None:
        day["last"] = last if day["last"] is None else max(day["last"], last)
    day["count"] += _value(bucket, "count") or 0
    day["distinct"] += _value(bucket, "distinct") or 0
    day["actions"][action] = bucket["doc_count"]
    interval = _value(bucket, "interval")
    if interval:
        day["interval"] = interval
    if action == "events_lost":
        for name in LOST_FIELDS:
            day["lost"][name] += _value(bucket, f"lost_{name}") or 0


sequence_days = host_days  # gaps and integrity read the same per host-day rows


def status_of(row: dict[str, Any]) -> str:
    problems = []
    if row["missing"]:
        problems.append(f"missing {row['missing']}")
    if row["duplicates"]:
        problems.append(f"duplicates {row['duplicates']}")
    if row["events_lost"] or row["documents_lost"]:
        problems.append(f"lost {row['events_lost'] + row['documents_lost']}")
    if not row["heartbeats"]:
        problems.append("no heartbeats")
    elif row["heartbeat_coverage"] < HEARTBEAT_OK_PERCENT:
        problems.append(f"heartbeats {row['heartbeat_coverage']}%")
    return ", ".join(problems) or "ok"


def coverage_report(source: Source, period: Period, host: str | None,
                    inventory: list[str] | None) -> Report:
    report = Report("coverage", "Logging coverage per host and day", COLUMNS, iter(()))
    report.rows = _rows(source, period, host, inventory, report)
    return report


def _rows(source: Source, period: Period, host: str | None, inventory: list[str] | None,
          report: Report) -> Iterator[dict[str, Any]]:
    seen_names: set[str] = set()
    totals = report.totals
    totals.update(hosts=0, host_days=0, documents=0, missing=0, events_lost=0,
                  documents_lost=0, host_days_with_problems=0)
    last_host = None
    for day in host_days(source, period, host):
        seen_names.add(day["host"])
        row = _row(day, period)
        if day["host_id"] != last_host:
            totals["hosts"] += 1
            last_host = day["host_id"]
        _add_up(totals, row)
        if row["status"] != "ok":
            report.findings += 1
        yield row
    if totals["host_days"] == 0:
        report.no_documents(period.text(), "coverage")
    if inventory is not None:
        yield from _silent_hosts(inventory, seen_names, period, report)


def _row(day: dict[str, Any], period: Period) -> dict[str, Any]:
    first, last, count = day["first"], day["last"], day["count"]
    missing = (last - first + 1 - count) if first is not None and last is not None else 0
    distinct = day["distinct"]
    interval = day["interval"] or DEFAULT_HEARTBEAT_S
    life, lost = day["actions"], day["lost"]
    beats = life.get("heartbeat", 0)
    seconds = period.seconds_in(day["day"]) or DAY_S
    row = {"host": day["host"], "host_id": day["host_id"], "day": day["day"],
           "first_sequence": first, "last_sequence": last, "documents": count,
           "missing": max(missing, 0), "duplicates": max(count - distinct, 0),
           "heartbeats": beats,
           "heartbeat_coverage": min(100, round(100 * beats * interval / seconds)),
           "starts": life.get("collector_start", 0),
           "events_lost": lost.get("exec", 0) + lost.get("namespace", 0) + lost.get("bash", 0),
           "documents_lost": lost.get("documents", 0)}
    row["status"] = status_of(row)
    return row


def _add_up(totals: dict[str, Any], row: dict[str, Any]) -> None:
    totals["host_days"] += 1
    for name in ("documents", "missing", "events_lost", "documents_lost"):
        totals[name] += row[name] or 0
    if row["status"] != "ok":
        totals["host_days_with_problems"] += 1


def _silent_hosts(inventory: list[str], seen: set[str], period: Period, report: Report
                  ) -> Iterator[dict[str, Any]]:
    silent = [name for name in inventory if not any(matches(name, s) for s in seen)]
    report.totals["inventory_hosts"] = len(inventory)
    report.totals["inventory_hosts_silent"] = len(silent)
    unlisted = sorted(s for s in seen if not any(matches(name, s) for name in inventory))
    if unlisted:
        shown = ", ".join(unlisted[:10]) + (" ..." if len(unlisted) > 10 else "")
        report.notes.append(f"{len(unlisted)} host(s) sent documents but are not in the "
                            f"inventory: {shown}")
    for name in silent:
        for day in period.days():
            report.findings += 1
            yield {"host": name, "host_id": None, "day": day, "first_sequence": None,
                   "last_sequence": None, "documents": 0, "missing": None, "duplicates": None,
                   "heartbeats": 0, "heartbeat_coverage": 0, "starts": 0, "events_lost": None,
                   "documents_lost": None, "status": "no documents (in the inventory)"}
