"""`report coverage`: per host and day, first/last sequence, documents, missing
(max - min + 1 - count), heartbeats, restarts and documented losses; the hosts of an
inventory that sent nothing.

Three composite aggregations over (host.id, host.name, day), each paged to the end and
sorted the same way, joined as they stream: every document (min/max/count/cardinality of
event.sequence), the lifecycle documents (heartbeats, starts, stops, per action) and the
events_lost reports (sums of what they report).
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
                                           "time_zone": "UTC"}}}]
SEQUENCE_AGGS = {"first": {"min": {"field": "event.sequence"}},
                 "last": {"max": {"field": "event.sequence"}},
                 "count": {"value_count": {"field": "event.sequence"}},
                 "distinct": {"cardinality": {"field": "event.sequence",
                                              "precision_threshold": 40000}}}
LIFECYCLE_COUNTED = ("heartbeat", "collector_start", "collector_stop")
LOST_FIELDS = ("documents", "exec", "namespace", "bash")


def base_query(period: Period, host: str | None, *extra: dict[str, Any]) -> dict[str, Any]:
    return {"bool": {"filter": [period.range_query(), *host_filter(host), *extra]}}


def _key(bucket: dict[str, Any]) -> tuple[str, str, int]:
    key = bucket["key"]
    return key["host"], key["name"], int(key["day"])


def _value(bucket: dict[str, Any], name: str) -> int | None:
    value = (bucket.get(name) or {}).get("value")
    return None if value is None else int(value)


def sequence_days(source: Source, period: Period, host: str | None
                  ) -> Iterator[dict[str, Any]]:
    """Per (host, name, day): first/last sequence, count and distinct count."""
    for bucket in source.composite(base_query(period, host), KEY_SOURCES, SEQUENCE_AGGS):
        host_id, name, day = _key(bucket)
        yield {"host_id": host_id, "host": name, "day": day_of(day // 1000),
               "key": (host_id, name, day), "first": _value(bucket, "first"),
               "last": _value(bucket, "last"), "count": _value(bucket, "count") or 0,
               "distinct": _value(bucket, "distinct")}


def _lifecycle(source: Source, period: Period, host: str | None
               ) -> Iterator[tuple[tuple[str, str, int], dict[str, Any]]]:
    query = base_query(period, host, {"terms": {"event.action": list(LIFECYCLE_COUNTED)}})
    sources = [*KEY_SOURCES, {"action": {"terms": {"field": "event.action"}}}]
    aggs = {"interval": {"max": {"field": "audit_collector.collector.heartbeat_s"}}}
    current: tuple[str, str, int] | None = None
    found: dict[str, Any] = {}
    for bucket in source.composite(query, sources, aggs):
        key = _key(bucket)
        if key != current:
            if current is not None:
                yield current, found
            current, found = key, {}
        found[bucket["key"]["action"]] = bucket["doc_count"]
        interval = _value(bucket, "interval")
        if interval:
            found["interval"] = interval
    if current is not None:
        yield current, found


def _losses(source: Source, period: Period, host: str | None
            ) -> Iterator[tuple[tuple[str, str, int], dict[str, int]]]:
    query = base_query(period, host, {"term": {"event.action": "events_lost"}})
    aggs = {name: {"sum": {"field": f"audit_collector.lost.{name}"}} for name in LOST_FIELDS}
    for bucket in source.composite(query, KEY_SOURCES, aggs):
        yield _key(bucket), {name: _value(bucket, name) or 0 for name in LOST_FIELDS}


class _Follower:
    """A sorted stream of (key, value) read up to a key (the join of the composites)."""

    def __init__(self, items: Iterator[tuple[Any, Any]]) -> None:
        self._items = items
        self._next = next(items, None)

    def at(self, key: Any) -> Any:
        while self._next is not None and self._next[0] < key:
            self._next = next(self._items, None)
        if self._next is not None and self._next[0] == key:
            return self._next[1]
        return None


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
    lifecycle = _Follower(_lifecycle(source, period, host))
    losses = _Follower(_losses(source, period, host))
    seen_names: set[str] = set()
    totals = report.totals
    totals.update(hosts=0, host_days=0, documents=0, missing=0, events_lost=0,
                  documents_lost=0, host_days_with_problems=0)
    last_host = None
    for day in sequence_days(source, period, host):
        seen_names.add(day["host"])
        life = lifecycle.at(day["key"]) or {}
        lost = losses.at(day["key"]) or {}
        row = _row(day, life, lost, period)
        if day["host_id"] != last_host:
            totals["hosts"] += 1
            last_host = day["host_id"]
        _add_up(totals, row)
        if row["status"] != "ok":
            report.findings += 1
        yield row
    if totals["host_days"] == 0:
        report.notes.append(f"no documents in {period.text()}: coverage cannot be established "
                            "for any host")
        report.findings += 1
    if inventory is not None:
        yield from _silent_hosts(inventory, seen_names, period, report)


def _row(day: dict[str, Any], life: dict[str, Any], lost: dict[str, int], period: Period
         ) -> dict[str, Any]:
    first, last, count = day["first"], day["last"], day["count"]
    missing = (last - first + 1 - count) if first is not None and last is not None else 0
    distinct = day["distinct"] if day["distinct"] is not None else count
    interval = life.get("interval") or DEFAULT_HEARTBEAT_S
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
