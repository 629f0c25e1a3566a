"""How many documents the test server holds and how fast it aggregates them.

``python -m tests.esserver.scale --docs 2000000 [--hosts 1000] [--days 30]`` loads synthetic
audit documents (``host.id``, ``event.sequence``, ``@timestamp`` as ``date_nanos``, a
chain hash, argv) through :meth:`ESTestServer.load_docs`, then, through the official
client: a coverage-style composite aggregation (host x day, min/max/count of the sequence)
paged to the end, and a point-in-time walk sorted by ``@timestamp`` with ``search_after``.
Prints one JSON object: memory (RSS growth of this process) and times, also per million
documents.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from typing import Any

import orjson

from .server import ESTestServer

INDEX = "logs-scale-default"
MAPPINGS = {"dynamic": False, "properties": {
    "@timestamp": {"type": "date_nanos"},
    "host": {"properties": {"id": {"type": "keyword"}, "name": {"type": "keyword"}}},
    "event": {"properties": {"sequence": {"type": "long"}, "action": {"type": "keyword"}}},
    "process": {"properties": {"args": {"type": "keyword"}, "pid": {"type": "long"}}},
    "audit_collector": {"properties": {"chain": {"properties": {
        "hash": {"type": "keyword"}, "prev": {"type": "keyword"}}}}}}}


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


def documents(n: int, hosts: int, days: int) -> Iterator[tuple[str, dict[str, Any]]]:
    per_host = max(1, n // hosts)
    step_ns = days * 86_400 * 10**9 // per_host
    start_ns = 1_714_521_600 * 10**9  # 2024-05-01
    for i in range(n):
        host, seq = i % hosts, i // hosts
        ts = start_ns + seq * step_ns + host
        secs, nanos = divmod(ts, 10**9)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{nanos:09d}Z"
        yield f"{host:04x}-boot-{seq}", {
            "@timestamp": stamp,
            "host": {"id": f"host-{host:04d}", "name": f"web-{host}"},
            "event": {"sequence": seq, "action": "exec" if i % 11 else "bash_command",
                      "kind": "event", "category": ["process"], "type": ["start"]},
            "process": {"pid": 1000 + i % 30000, "executable": "/usr/bin/true",
                        "args": ["/usr/bin/true", f"arg-{i}"], "args_count": 2},
            "user": {"id": str(i % 5), "name": f"user{i % 5}"},
            "audit_collector": {"chain": {"hash": f"{i:064x}", "prev": f"{i - 1:064x}"}},
        }


def measure(n: int, hosts: int, days: int, pit_pages: int) -> dict[str, Any]:
    from elasticsearch import Elasticsearch

    out: dict[str, Any] = {"docs": n, "hosts": hosts, "days": days}
    with ESTestServer(major=8) as srv:
        srv.cluster.put_template("scale", {"index_patterns": ["logs-scale-*"], "data_stream": {},
                                           "priority": 200, "template": {"mappings": MAPPINGS}})
        base = rss_mib()
        started = time.perf_counter()
        srv.load_docs(INDEX, documents(n, hosts, days))
        out["load_s"] = round(time.perf_counter() - started, 1)
        out["stored_mib"] = round(rss_mib() - base)
        out["bytes_per_doc"] = round((rss_mib() - base) * 2**20 / n)
        es = Elasticsearch(srv.url, request_timeout=3600)
        out.update(_composite(es))
        out.update(_pit_walk(es, pit_pages))
        out["total_mib"] = round(rss_mib() - base)
        es.close()
    million = n / 1e6
    for key in ("load_s", "composite_first_page_s", "composite_all_pages_s"):
        out[key.replace("_s", "_s_per_million")] = round(out[key] / million, 2)
    return out


def _composite(es: Any) -> dict[str, Any]:
    def page(after: dict[str, Any] | None) -> dict[str, Any]:
        comp: dict[str, Any] = {"size": 1000, "sources": [
            {"host": {"terms": {"field": "host.id"}}},
            {"day": {"date_histogram": {"field": "@timestamp", "calendar_interval": "1d"}}}]}
        if after:
            comp["after"] = after
        resp = es.search(index=INDEX, size=0, track_total_hits=False, aggs={"c": {
            "composite": comp, "aggs": {"first": {"min": {"field": "event.sequence"}},
                                        "last": {"max": {"field": "event.sequence"}},
                                        "n": {"value_count": {"field": "event.sequence"}}}}})
        return dict(resp["aggregations"]["c"])

    started = time.perf_counter()
    result = page(None)
    first = time.perf_counter() - started
    pages, buckets = 1, len(result["buckets"])
    while result.get("after_key"):
        result = page(result["after_key"])
        pages += 1
        buckets += len(result["buckets"])
    total = time.perf_counter() - started
    again = time.perf_counter()
    page(None)
    return {"composite_first_page_s": round(first, 2), "composite_pages": pages,
            "composite_buckets": buckets, "composite_all_pages_s": round(total, 2),
            "composite_repeat_first_page_s": round(time.perf_counter() - again, 3)}


def _pit_walk(es: Any, max_pages: int) -> dict[str, Any]:
    pit = es.open_point_in_time(index=INDEX, keep_alive="5m")["id"]
    started = time.perf_counter()
    after: list[Any] | None = None
    pages = rows = 0
    first = 0.0
    while pages < max_pages:
        kw = {"search_after": after} if after is not None else {}
        hits = es.search(pit={"id": pit, "keep_alive": "5m"}, size=1000, track_total_hits=False,
                         sort=[{"@timestamp": "asc"}], query={"term": {"event.action": "exec"}},
                         **kw)["hits"]["hits"]
        if not hits:
            break
        pages += 1
        rows += len(hits)
        after = hits[-1]["sort"]
        if pages == 1:
            first = time.perf_counter() - started
    total = time.perf_counter() - started
    es.close_point_in_time(id=pit)
    per_page = (total - first) / max(pages - 1, 1)
    return {"pit_first_page_s": round(first, 2), "pit_pages": pages, "pit_rows": rows,
            "pit_next_page_ms": round(per_page * 1000, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.esserver.scale")
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--pit-pages", type=int, default=50)
    args = ap.parse_args(argv)
    result = measure(args.docs, args.hosts, args.days, args.pit_pages)
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
