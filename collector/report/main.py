"""`audit-collector report ...`: build a report from the cluster and write it (to stdout,
--out FILE, or an --evidence folder). Exit status: 0 the report shows nothing wrong, 1 it
shows gaps, failures or what it could not establish, 2 it could not be made (one line on
stderr: bad input, unknown host, the cluster unreachable or answering errors, a tampered
evidence folder)."""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from elastic_transport import TransportError
from elasticsearch import ApiError, NotFoundError

from collector import __version__
from collector.delivery.elasticsearch.client import build_client
from collector.delivery.elasticsearch.index import error_text, policy_name
from collector.delivery.elasticsearch.settings import ClusterConfigError, ClusterSettings
from collector.delivery.signing import SigningKeyError, load_public_keys
from collector.report.commands import commands_report
from collector.report.coverage import coverage_report
from collector.report.evidence import EvidenceError, EvidenceFolder, verify_evidence
from collector.report.gaps import gaps_report
from collector.report.integrity import integrity_report
from collector.report.inventory import InventoryError, load_inventory
from collector.report.model import Report
from collector.report.period import DAY_S, Period, PeriodError, parse_point, period_of
from collector.report.render import HtmlPage, grid_html, write
from collector.report.source import Source, epoch, host_filter

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
# A report's first aggregation over months of a fleet's documents may take minutes; the
# shipper's request timeout (elasticsearch.request_timeout_s) is for bulk requests.
REPORT_TIMEOUT_S = 600.0
EXTENSIONS = {"table": "txt", "csv": "csv", "ndjson": "ndjson", "html": "html"}
RETENTION_DAYS = 365


class ReportError(ValueError):
    """The report cannot be made; one line."""


def _fail(message: str, err: TextIO) -> int:
    print(f"report: {message}", file=err)
    return EXIT_ERROR


def run_report(cfg: ClusterSettings, args: Any, argv: list[str],
               out: TextIO | None = None, err: TextIO | None = None,
               client: Any = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    if args.report == "verify-evidence":
        try:
            print(verify_evidence(args.folder, args.key), file=out)
        except EvidenceError as exc:
            return _fail(str(exc), err)
        return EXIT_OK
    try:
        inputs = _inputs(args)
        client = client or build_client(cfg, max(cfg.elasticsearch.request_timeout_s,
                                                 REPORT_TIMEOUT_S))
        source = Source(client, cfg.elasticsearch.data_stream)
        return _produce(source, cfg, args, argv, inputs, out, err)
    except (PeriodError, InventoryError, ReportError, EvidenceError, ClusterConfigError) as exc:
        return _fail(str(exc), err)
    except (ApiError, TransportError) as exc:
        return _fail(f"cannot read {cfg.elasticsearch.data_stream}: {error_text(exc, cfg)}",
                     err)


def _inputs(args: Any) -> dict[str, Any]:
    """Everything read from the command line and local files, before the cluster is asked."""
    inputs: dict[str, Any] = {"period": period_of(args.start, args.end), "now": time.time()}
    inventory = getattr(args, "inventory", None)
    inputs["inventory"] = load_inventory(inventory) if inventory else None
    keys = getattr(args, "keys", None)
    try:
        inputs["keys"] = load_public_keys(keys) if keys else None
    except SigningKeyError as exc:
        raise ReportError(f"--keys: {exc}") from None
    if args.out and args.evidence:
        raise ReportError("--out and --evidence: choose one (the evidence folder holds the "
                          "report)")
    return inputs


def _produce(source: Source, cfg: ClusterSettings, args: Any, argv: list[str],
             inputs: dict[str, Any], out: TextIO, err: TextIO) -> int:
    period: Period = inputs["period"]
    if args.host and source.count({"bool": {"filter": host_filter(args.host)}}) == 0:
        raise ReportError(f"unknown host {args.host!r}: no document of {source.index} has it "
                          "as host.name or host.id")
    cluster = source.cluster()
    header = [("period", period.text()), ("index", source.index),
              ("cluster", f"{cluster['cluster_name']} (uuid {cluster['cluster_uuid']}, "
                          f"Elasticsearch {cluster['version']})"),
              ("hosts", args.host or "all"),
              ("generated", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(inputs["now"]))
               + f" by audit-collector {__version__}")]
    evidence = EvidenceFolder(args.evidence, args.signing_key) if args.evidence else None
    try:
        name = f"{args.report}.{EXTENSIONS[args.format]}"
        target = evidence.path(name) if evidence else (Path(args.out) if args.out else None)
        findings = _write_to(target, lambda stream: _render(source, cfg, args, inputs,
                                                            header, stream), out)
        if evidence is not None:
            evidence.write_json("queries.json", source.queries.entries())
            evidence.write_json("cluster.json", cluster)
            signed = evidence.seal(argv)
            print(f"report: evidence written to {args.evidence} ({signed})", file=err)
    except BaseException:
        if evidence is not None:
            evidence.discard()
        raise
    return EXIT_FINDINGS if findings else EXIT_OK


def _write_to(target: Path | None, render: Any, out: TextIO) -> int:
    """Render into target through a temporary file renamed at the end (stdout: directly)."""
    if target is None:
        return int(render(out))
    partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
    try:
        with open(partial, "w", encoding="utf-8") as stream:
            findings = int(render(stream))
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
    return findings


def _render(source: Source, cfg: ClusterSettings, args: Any, inputs: dict[str, Any],
            header: list[tuple[str, str]], stream: TextIO) -> int:
    period, now = inputs["period"], inputs["now"]
    if args.report in ("coverage", "gaps") and args.format == "html":
        return _coverage_page(source, cfg, args, inputs, header, stream)
    report: Report
    if args.report == "coverage":
        report = coverage_report(source, period, args.host, inputs["inventory"])
        report.header.extend(retention(source, cfg))
    elif args.report == "gaps":
        report = gaps_report(source, period, args.host, inputs["inventory"], now)
    elif args.report == "commands":
        report = commands_report(source, period, args.host,
                                 args.privileged or not args.user, args.user or [])
    else:
        report = integrity_report(source, period, args.host, inputs["keys"], now)
    write(report, args.format, stream, header)
    return report.findings


# --------------------------------------------------------------------------- retention


def retention(source: Source, cfg: ClusterSettings) -> list[tuple[str, str]]:
    """PCI DSS 10.5.1: the ILM policy's delete age and the oldest document kept."""
    lines: list[tuple[str, str]] = []
    name = policy_name(cfg)
    try:
        policy = source.client.ilm.get_lifecycle(name=name).body.get(name, {}).get("policy", {})
        delete = ((policy.get("phases") or {}).get("delete") or {}).get("min_age")
        days = _days(delete) if delete else None
        verdict = ("no delete phase: kept until removed by hand" if delete is None else
                   f"deletes {delete} after rollover" + (
                       "" if days is None else (" (meets 12 months)" if days >= RETENTION_DAYS
                                                else " (shorter than the 12 months of PCI DSS "
                                                     "10.5.1)")))
        lines.append(("retention", f"ILM policy {name}: {verdict}"))
    except NotFoundError:
        lines.append(("retention", f"ILM policy {name} not found: retention not established"))
    except ApiError as exc:
        lines.append(("retention", f"ILM policy {name} could not be read ({exc.meta.status}): "
                      "retention not established"))
    oldest = source.search(size=0, track_total_hits=False, aggs={
        "oldest": {"min": {"field": "@timestamp"}}})["aggregations"]["oldest"]
    stamp = oldest.get("value_as_string")
    first = epoch(stamp)
    if first is not None:
        lines.append(("oldest document", f"{stamp} ({int((time.time() - first) // DAY_S)} "
                      "days immediately available)"))
    return lines


def _days(age: str) -> float | None:
    units = {"d": 1.0, "h": 1 / 24, "m": 1 / 1440, "s": 1 / 86400, "ms": 1 / 86_400_000}
    for unit in ("ms", "d", "h", "m", "s"):
        if age.endswith(unit) and age[: -len(unit)].isdigit():
            return int(age[: -len(unit)]) * units[unit]
    return None


# --------------------------------------------------------------------------- html page


def _coverage_page(source: Source, cfg: ClusterSettings, args: Any, inputs: dict[str, Any],
                   header: list[tuple[str, str]], stream: TextIO) -> int:
    """coverage and gaps as one page: the host x day grid with gaps marked, the gap
    table, totals (both need the rows: held in memory, one per host-day and per gap)."""
    period = inputs["period"]
    coverage = coverage_report(source, period, args.host, inputs["inventory"])
    coverage.header.extend(retention(source, cfg))
    rows = list(coverage.rows)
    gaps = gaps_report(source, period, args.host, inputs["inventory"], inputs["now"])
    gap_rows = list(gaps.rows)
    gaps.header.extend(coverage.header)
    title = "Logging coverage and gaps"
    lines = [title, *[f"{label}: {value}" for label, value in [*header, *gaps.header]],
             "requirements:"]
    lines += [f"  {req}" for req in dict.fromkeys(coverage.requirements + gaps.requirements)]
    page = HtmlPage(title, lines)
    hosts = list(dict.fromkeys(r["host"] for r in rows))
    stream.write(page.start())
    stream.write(grid_html(hosts, period.days(), _cells(rows, gap_rows, period)))
    page.table(gaps.columns, gap_rows, stream, heading=f"Gaps ({len(gap_rows)})")
    page.table(coverage.columns, rows, stream, heading="Coverage per host and day")
    stream.write(page.end(coverage, gaps))
    return coverage.findings + gaps.findings


def _cells(rows: list[dict[str, Any]], gap_rows: list[dict[str, Any]], period: Period
           ) -> dict[tuple[str, str], tuple[str, str, str]]:
    outage: dict[tuple[str, str], float] = {}
    causes: dict[tuple[str, str], set[str]] = {}
    for gap in gap_rows:
        start = epoch(gap["start"]) or period.start
        end = epoch(gap["end"]) or float(period.end)
        for day in period.days():
            low = max(start, float(period.start), _day_start(day))
            high = min(end, float(period.end), _day_start(day) + DAY_S)
            if high > low or (high == low and start == end and _inside(start, day)):
                key = (gap["host"], day)
                outage[key] = outage.get(key, 0.0) + (high - low)
                causes.setdefault(key, set()).add(gap["cause"])
    cells: dict[tuple[str, str], tuple[str, str, str]] = {}
    for row in rows:
        key = (row["host"], row["day"])
        tip = f"{row['documents']} documents; {row['status']}"
        if key in causes:
            minutes = outage.get(key, 0.0) / 60
            cells[key] = ("gap", f"gap {minutes:.0f} min" if minutes >= 1 else "gap",
                          f"{tip}; gaps: {', '.join(sorted(causes[key]))}")
        elif row["documents"] == 0:
            cells[key] = ("gap", "no data", row["status"])
        elif row["missing"] or row["duplicates"] or row["heartbeats"] == 0:
            cells[key] = ("gap", "gap", tip)
        elif row["events_lost"] or row["documents_lost"]:
            cells[key] = ("loss", f"lost {row['events_lost'] + row['documents_lost']}", tip)
        else:
            cells[key] = ("ok", f"{row['heartbeat_coverage']}%", tip)
    return cells


def _day_start(day: str) -> float:
    return float(parse_point(day, "day"))


def _inside(moment: float, day: str) -> bool:
    start = _day_start(day)
    return start <= moment < start + DAY_S
