"""Aggregations: composite (terms and date_histogram sources, paging), terms, and the
min/max/value_count/cardinality/avg/sum metrics, through the official client."""

from __future__ import annotations

from typing import Any

import pytest
from elasticsearch import BadRequestError, Elasticsearch

from tests.esserver import ESTestServer

DAY = 86_400_000
D1 = 1714521600000  # 2024-05-01T00:00:00Z


@pytest.fixture
def data(srv: ESTestServer, es: Elasticsearch) -> Elasticsearch:
    """Seven events over three days on three hosts (one without a host), one multi-tagged."""
    es.indices.put_index_template(name="ev", index_patterns=["ev-*"], template={"mappings": {
        "dynamic": False, "properties": {
            "@timestamp": {"type": "date_nanos"}, "host": {"properties": {
                "id": {"type": "keyword"}}}, "seq": {"type": "long"},
            "tags": {"type": "keyword"}, "msg": {"type": "text"}}}})
    docs = [
        ("1", "2024-05-01T01:00:00.000000001Z", "h1", 1, ["a"]),
        ("2", "2024-05-01T23:59:59.999999999Z", "h1", 2, ["a", "b"]),
        ("3", "2024-05-02T10:00:00Z", "h2", 3, []),
        ("4", "2024-05-02T11:00:00Z", "h1", 4, ["b"]),
        ("5", "2024-05-03T00:00:00Z", "h2", 5, ["c"]),
        ("6", "2024-05-03T12:00:00Z", None, 6, []),
        ("7", "2024-05-03T13:00:00Z", "h3", 7, ["a"]),
    ]
    ops: list[dict[str, Any]] = []
    for doc_id, ts, host, seq, tags in docs:
        src: dict[str, Any] = {"@timestamp": ts, "seq": seq, "tags": tags, "msg": "x"}
        if host:
            src["host"] = {"id": host}
        ops += [{"create": {"_index": "ev-a" if seq < 5 else "ev-b", "_id": doc_id}}, src]
    es.bulk(operations=ops, refresh=True)
    return es


def composite(es: Elasticsearch, sources: list[dict[str, Any]], size: int = 10,
              after: dict[str, Any] | None = None, sub: dict[str, Any] | None = None,
              query: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"sources": sources, "size": size}
    if after is not None:
        body["after"] = after
    agg: dict[str, Any] = {"composite": body}
    if sub:
        agg["aggs"] = sub
    resp = es.search(index="ev-*", size=0, aggs={"c": agg}, query=query)
    return dict(resp["aggregations"]["c"])


HOST_DAY = [{"host": {"terms": {"field": "host.id"}}},
            {"day": {"date_histogram": {"field": "@timestamp", "calendar_interval": "1d"}}}]


def test_composite_terms_and_calendar_days(data: Elasticsearch) -> None:
    got = composite(data, HOST_DAY, size=100)
    assert got["buckets"] == [
        {"key": {"host": "h1", "day": D1}, "doc_count": 2},
        {"key": {"host": "h1", "day": D1 + DAY}, "doc_count": 1},
        {"key": {"host": "h2", "day": D1 + DAY}, "doc_count": 1},
        {"key": {"host": "h2", "day": D1 + 2 * DAY}, "doc_count": 1},
        {"key": {"host": "h3", "day": D1 + 2 * DAY}, "doc_count": 1},
    ]  # document 6 has no host: no bucket without missing_bucket
    assert got["after_key"] == {"host": "h3", "day": D1 + 2 * DAY}
    assert list(got) == ["after_key", "buckets"]


def test_composite_paging_with_after_key_to_the_end(data: Elasticsearch) -> None:
    everything = composite(data, HOST_DAY, size=100)["buckets"]
    pages: list[list[dict[str, Any]]] = []
    after = None
    while True:
        got = composite(data, HOST_DAY, size=2, after=after)
        if not got["buckets"]:
            assert "after_key" not in got
            break
        pages.append(got["buckets"])
        after = got["after_key"]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [b for p in pages for b in p] == everything


def test_composite_order_missing_bucket_and_fixed_interval(data: Elasticsearch) -> None:
    sources = [{"host": {"terms": {"field": "host.id", "order": "desc",
                                   "missing_bucket": True}}},
               {"half": {"date_histogram": {"field": "@timestamp", "fixed_interval": "12h",
                                            "order": "desc"}}}]
    got = composite(data, sources, size=100)
    keys = [(b["key"]["host"], b["key"]["half"]) for b in got["buckets"]]
    assert keys == [("h3", D1 + 5 * DAY // 2), ("h2", D1 + 2 * DAY), ("h2", D1 + DAY),
                    ("h1", D1 + DAY), ("h1", D1 + DAY // 2), ("h1", D1),
                    (None, D1 + 5 * DAY // 2)]  # desc: the null bucket comes last by default
    first = composite(data, [{"host": {"terms": {
        "field": "host.id", "missing_bucket": True, "missing_order": "last"}}}], size=100)
    assert [b["key"]["host"] for b in first["buckets"]] == ["h1", "h2", "h3", None]
    asc = composite(data, [{"host": {"terms": {"field": "host.id", "missing_bucket": True}}}],
                    size=1)
    assert asc["after_key"] == {"host": None}  # asc: null first
    rest = composite(data, [{"host": {"terms": {"field": "host.id", "missing_bucket": True}}}],
                     size=10, after={"host": None})
    assert [b["key"]["host"] for b in rest["buckets"]] == ["h1", "h2", "h3"]


def test_composite_format_time_zone_and_multi_valued_terms(data: Elasticsearch) -> None:
    day = {"day": {"date_histogram": {"field": "@timestamp", "calendar_interval": "day",
                                      "format": "yyyy-MM-dd", "time_zone": "+02:00"}}}
    got = composite(data, [day], size=100)
    # in UTC+2 document 2 (23:59:59 UTC on the 1st) falls on the 2nd
    assert [(b["key"]["day"], b["doc_count"]) for b in got["buckets"]] == [
        ("2024-05-01", 1), ("2024-05-02", 3), ("2024-05-03", 3)]
    page2 = composite(data, [day], size=10, after={"day": "2024-05-01"})
    assert [b["key"]["day"] for b in page2["buckets"]] == ["2024-05-02", "2024-05-03"]
    tags = composite(data, [{"tag": {"terms": {"field": "tags"}}}], size=100)
    assert [(b["key"]["tag"], b["doc_count"]) for b in tags["buckets"]] == [
        ("a", 3), ("b", 2), ("c", 1)]  # document 2 counts in "a" and in "b"
    month = composite(data, [{"m": {"date_histogram": {"field": "@timestamp",
                                                        "calendar_interval": "1M"}}}])
    assert month["buckets"] == [{"key": {"m": 1714521600000}, "doc_count": 7}]
    week = composite(data, [{"w": {"date_histogram": {"field": "@timestamp",
                                                       "calendar_interval": "week"}}}])
    assert week["buckets"] == [{"key": {"w": 1714348800000}, "doc_count": 7}]  # Monday 29 Apr


def test_composite_with_metric_sub_aggregations(data: Elasticsearch) -> None:
    sub = {"first": {"min": {"field": "seq"}}, "last": {"max": {"field": "seq"}},
           "n": {"value_count": {"field": "seq"}}, "tags": {"cardinality": {"field": "tags"}},
           "start": {"min": {"field": "@timestamp"}}}
    got = composite(data, [{"host": {"terms": {"field": "host.id"}}}], size=1, sub=sub)
    assert got["buckets"] == [{
        "key": {"host": "h1"}, "doc_count": 3,
        "first": {"value": 1.0}, "last": {"value": 4.0}, "n": {"value": 3},
        "tags": {"value": 2},
        # date_nanos aggregate in milliseconds
        "start": {"value": 1714525200000.0, "value_as_string": "2024-05-01T01:00:00.000Z"}}]
    missing = composite(data, [{"host": {"terms": {"field": "host.id"}}}], size=10, sub=sub,
                        query={"term": {"host.id": "h3"}})
    assert missing["buckets"][0]["tags"] == {"value": 1}


def test_top_level_metrics_and_terms(data: Elasticsearch) -> None:
    resp = data.search(index="ev-*", size=0, aggs={
        "min": {"min": {"field": "seq"}}, "max": {"max": {"field": "@timestamp"}},
        "count": {"value_count": {"field": "host.id"}},
        "hosts": {"cardinality": {"field": "host.id"}},
        "avg": {"avg": {"field": "seq"}}, "sum": {"sum": {"field": "seq"}},
        "by_host": {"terms": {"field": "host.id", "size": 2},
                    "aggs": {"top": {"max": {"field": "seq"}}}}})
    aggs = resp["aggregations"]
    assert aggs["min"] == {"value": 1.0}
    assert aggs["max"] == {"value": 1714741200000.0,
                           "value_as_string": "2024-05-03T13:00:00.000Z"}
    assert (aggs["count"], aggs["hosts"]) == ({"value": 6}, {"value": 3})
    assert (aggs["avg"], aggs["sum"]) == ({"value": 4.0}, {"value": 28.0})
    assert aggs["by_host"] == {"doc_count_error_upper_bound": 0, "sum_other_doc_count": 1,
                               "buckets": [{"key": "h1", "doc_count": 3, "top": {"value": 4.0}},
                                           {"key": "h2", "doc_count": 2, "top": {"value": 5.0}}]}
    empty = data.search(index="ev-*", size=0, query={"term": {"host.id": "none"}}, aggs={
        "min": {"min": {"field": "seq"}}, "n": {"cardinality": {"field": "seq"}}})
    assert empty["aggregations"] == {"min": {"value": None}, "n": {"value": 0}}


def test_aggregation_errors(data: Elasticsearch) -> None:
    def bad(aggs: dict[str, Any]) -> str:
        with pytest.raises(BadRequestError) as ei:
            data.search(index="ev-*", size=0, aggs=aggs)
        err = ei.value.body["error"]
        return str(err.get("caused_by", err)["reason"])

    comp = {"sources": HOST_DAY}
    assert bad({"c": {"composite": {**comp, "after": {"host": "h1"}}}}) == (
        "[after] has 1 value(s) but [sources] has 2")
    assert bad({"c": {"composite": {**comp, "after": {"host": "h1", "x": 1}}}}) == (
        "Missing value for [after.day]")
    assert bad({"c": {"composite": {"sources": [{"d": {"date_histogram": {
        "field": "@timestamp", "calendar_interval": "2d"}}}]}}}) == (
        "The supplied interval [2d] could not be parsed as a calendar interval.")
    assert "must be non-null" in bad({"c": {"composite": {"sources": [{"d": {
        "date_histogram": {"field": "@timestamp"}}}]}}})
    assert bad({"t": {"terms": {"field": "host.id"}, "aggs": {"c": {"composite": comp}}}}) == (
        "[composite] aggregation cannot be used with a parent aggregation of type: [t]")
    assert bad({"m": {"min": {"field": "host.id"}}}) == (
        "Field [host.id] of type [keyword] is not supported for aggregation [min]")
    assert bad({"m": {"terms": {"field": "msg"}}}).startswith("Text fields are not optimised")
