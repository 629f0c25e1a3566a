"""Reading the data stream for reports: composite aggregations paged to the end, points in
time walked with search_after, and a record of every query sent (for --evidence).

Everything is streamed: a page is processed before the next is asked for, so memory is
bounded by the page size whatever the number of documents.
"""

from __future__ import annotations

import calendar
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import orjson
from elasticsearch import Elasticsearch

COMPOSITE_PAGE = 1000
SEARCH_PAGE = 2000
KEEP_ALIVE = "5m"


class QueryLog:
    """The distinct queries a report sent, with how many requests each took (the paging
    values `after`/`search_after` and the point in time's id left out)."""

    def __init__(self) -> None:
        self._entries: dict[bytes, dict[str, Any]] = {}

    def note(self, api: str, body: dict[str, Any]) -> None:
        shape = {k: v for k, v in body.items() if k not in ("search_after", "pit")}
        aggs = shape.get("aggs")
        if isinstance(aggs, dict):
            shape["aggs"] = _without_after(aggs)
        key = orjson.dumps({"api": api, **shape}, option=orjson.OPT_SORT_KEYS)
        entry = self._entries.get(key)
        if entry is None:
            self._entries[key] = {"api": api, "body": shape, "requests": 1}
        else:
            entry["requests"] += 1

    def entries(self) -> list[dict[str, Any]]:
        return list(self._entries.values())


def _without_after(aggs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in aggs.items():
        if isinstance(spec, dict) and isinstance(spec.get("composite"), dict):
            spec = {**spec, "composite": {k: v for k, v in spec["composite"].items()
                                          if k != "after"}}
        out[name] = spec
    return out


class Source:
    """The data stream a report reads, through the official client."""

    def __init__(self, client: Elasticsearch, index: str) -> None:
        self.client = client
        self.index = index
        self.queries = QueryLog()

    # ------------------------------------------------------------------ primitives

    def search(self, **body: Any) -> dict[str, Any]:
        self.queries.note("search", {"index": self.index, **body})
        return dict(self.client.search(index=self.index, **body).body)

    def count(self, query: dict[str, Any]) -> int:
        self.queries.note("count", {"index": self.index, "query": query})
        return int(self.client.count(index=self.index, query=query).body["count"])

    def cluster(self) -> dict[str, Any]:
        info = self.client.info().body
        return {"cluster_name": info.get("cluster_name"),
                "cluster_uuid": info.get("cluster_uuid"),
                "version": (info.get("version") or {}).get("number")}

    # ------------------------------------------------------------------ paging

    def composite(self, query: dict[str, Any], sources: list[dict[str, Any]],
                  aggs: dict[str, Any] | None = None, size: int = COMPOSITE_PAGE
                  ) -> Iterator[dict[str, Any]]:
        """Every bucket of a composite aggregation, page by page until there is no
        after_key (no 10,000-bucket limit)."""
        after: dict[str, Any] | None = None
        while True:
            composite: dict[str, Any] = {"size": size, "sources": sources}
            if after is not None:
                composite["after"] = after
            spec: dict[str, Any] = {"composite": composite}
            if aggs:
                spec["aggs"] = aggs
            body = self.search(size=0, track_total_hits=False, query=query,
                               aggs={"groups": spec})
            result = body["aggregations"]["groups"]
            yield from result["buckets"]
            after = result.get("after_key")
            if after is None or not result["buckets"]:
                return

    def stream(self, query: dict[str, Any], sort: list[Any], fields: list[str] | None,
               page: int = SEARCH_PAGE) -> Iterator[dict[str, Any]]:
        """Every hit of a query in sort order, through a point in time with search_after
        (ties broken by the implicit _shard_doc), one page in memory at a time."""
        self.queries.note("open_point_in_time", {"index": self.index,
                                                 "keep_alive": KEEP_ALIVE})
        pit = self.client.open_point_in_time(index=self.index, keep_alive=KEEP_ALIVE).body["id"]
        try:
            after: list[Any] | None = None
            while True:
                body: dict[str, Any] = {"pit": {"id": pit, "keep_alive": KEEP_ALIVE},
                                        "size": page, "query": query, "sort": sort,
                                        "track_total_hits": False}
                if fields is not None:
                    body["_source"] = {"includes": fields}
                if after is not None:
                    body["search_after"] = after
                self.queries.note("search", body)
                response = self.client.search(**body).body
                pit = response.get("pit_id", pit)
                hits = response["hits"]["hits"]
                yield from hits
                if len(hits) < page:
                    return
                after = hits[-1]["sort"]
        finally:
            with contextlib.suppress(Exception):  # expired or closed: nothing to free
                self.client.close_point_in_time(id=pit)


def epoch(stamp: Any) -> float | None:
    """Unix seconds (with fraction) of an RFC 3339 UTC @timestamp, or None."""
    if not isinstance(stamp, str) or len(stamp) < 19:
        return None
    try:
        whole = time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    frac = 0.0
    if len(stamp) > 20 and stamp[19] == ".":
        digits = "".join(ch for ch in stamp[20:] if ch.isdigit())
        frac = float(f"0.{digits}") if digits else 0.0
    return calendar.timegm(whole) + frac


def host_filter(host: str | None) -> list[dict[str, Any]]:
    """--host matches host.name or host.id."""
    if not host:
        return []
    return [{"bool": {"should": [{"term": {"host.name": host}}, {"term": {"host.id": host}}],
                      "minimum_should_match": 1}}]


def field(source: dict[str, Any], path: str) -> Any:
    node: Any = source
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node
