"""Point in time, search_after with the implicit _shard_doc tie-breaker, track_total_hits."""

from __future__ import annotations

import time
from typing import Any

import pytest
from elasticsearch import BadRequestError, Elasticsearch, NotFoundError

from tests.esserver import ESTestServer
from tests.esserver.tests.helpers import ids


def _load(es: Elasticsearch, index: str, n: int, start: int = 0, same_ts: bool = False) -> None:
    ops: list[dict[str, Any]] = []
    for i in range(start, start + n):
        ts = "2024-05-01T00:00:00Z" if same_ts else f"2024-05-01T00:00:{i % 60:02d}Z"
        ops += [{"create": {"_index": index, "_id": f"{index}-{i}"}},
                {"@timestamp": ts, "n": i, "host": {"id": f"h{i % 3}"}}]
    es.bulk(operations=ops, refresh=True)


def _all_pages(es: Elasticsearch, pit_id: str, sort: list[Any], size: int,
               query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    hits: list[dict[str, Any]] = []
    after = None
    while True:
        kw: dict[str, Any] = {"search_after": after} if after is not None else {}
        r = es.search(pit={"id": pit_id, "keep_alive": "1m"}, size=size, sort=sort,
                      query=query, **kw)
        page = r["hits"]["hits"]
        if not page:
            return hits
        hits += page
        after = page[-1]["sort"]


def test_open_search_and_close(srv: ESTestServer, es: Elasticsearch) -> None:
    _load(es, "pa", 5)
    opened = es.open_point_in_time(index="pa", keep_alive="1m")
    assert set(opened) == {"id", "_shards"}
    assert opened["_shards"] == {"total": 1, "successful": 1, "skipped": 0, "failed": 0}
    r = es.search(pit={"id": opened["id"], "keep_alive": "1m"}, size=10)
    assert r["pit_id"] == opened["id"] and r["hits"]["total"]["value"] == 5
    assert es.close_point_in_time(id=opened["id"]).body == {"succeeded": True, "num_freed": 1}
    with pytest.raises(NotFoundError) as ei:
        es.close_point_in_time(id=opened["id"])
    assert ei.value.body == {"succeeded": True, "num_freed": 0}
    with pytest.raises(NotFoundError) as ei2:
        es.search(pit={"id": opened["id"]})
    err = ei2.value.body["error"]
    assert err["type"] == "search_phase_execution_exception"
    assert err["caused_by"] == {"type": "search_context_missing_exception",
                                "reason": f"No search context found for id [{opened['id']}]"}
    with pytest.raises(BadRequestError) as ei3:
        es.perform_request("POST", "/pa/_pit", headers={"accept": "application/json"})
    assert ei3.value.body["error"]["reason"] == (
        "Validation Failed: 1: [keep_alive] is not specified;")
    with pytest.raises(BadRequestError) as ei4:
        es.search(pit={"id": "bm90LWEtcGl0"})
    assert ei4.value.body["error"]["reason"] == "invalid id: [bm90LWEtcGl0]"
    pit2 = es.open_point_in_time(index="pa", keep_alive="1m")["id"]
    with pytest.raises(BadRequestError) as ei5:
        es.search(index="pa", pit={"id": pit2})
    assert ei5.value.body["error"]["reason"].startswith(
        "Validation Failed: 1: [indices] cannot be used with point in time")


def test_pit_is_a_frozen_view(srv: ESTestServer, es: Elasticsearch) -> None:
    _load(es, "fz", 4)
    pit = es.open_point_in_time(index="fz", keep_alive="1m")["id"]
    _load(es, "fz", 2, start=4)  # written and refreshed after the PIT opened
    es.delete(index="fz", id="fz-0", refresh=True)
    es.update(index="fz", id="fz-1", doc={"n": 100}, refresh=True)
    frozen = es.search(pit={"id": pit}, size=10, sort=[{"n": "asc"}])
    assert [h["_id"] for h in frozen["hits"]["hits"]] == ["fz-0", "fz-1", "fz-2", "fz-3"]
    assert frozen["hits"]["hits"][1]["_source"]["n"] == 1  # the version of that time
    live = es.search(index="fz", size=10, sort=[{"n": "asc"}])
    assert ids(live) == ["fz-2", "fz-3", "fz-4", "fz-5", "fz-1"]


def test_implicit_shard_doc_tiebreaker_pages_exactly_once(srv: ESTestServer,
                                                          es: Elasticsearch) -> None:
    _load(es, "ta", 7, same_ts=True)
    _load(es, "tb", 6, same_ts=True)
    pit = es.open_point_in_time(index="ta,tb", keep_alive="1m")["id"]
    r = es.search(pit={"id": pit}, size=3, sort=[{"@timestamp": "asc"}])
    first = r["hits"]["hits"]
    assert [h["sort"] for h in first] == [[1714521600000, 0], [1714521600000, 1],
                                          [1714521600000, 2]]  # [value, _shard_doc]
    hits = _all_pages(es, pit, [{"@timestamp": "asc"}], size=4)
    assert sorted(h["_id"] for h in hits) == sorted(
        [f"ta-{i}" for i in range(7)] + [f"tb-{i}" for i in range(6)])
    assert len(hits) == 13  # every document once, although all share one timestamp
    assert hits[7]["sort"] == [1714521600000, 1 << 32]  # the second shard's first document
    # an explicit _shard_doc, descending
    desc = es.search(pit={"id": pit}, size=2, sort=[{"_shard_doc": "desc"}])
    assert [h["sort"] for h in desc["hits"]["hits"]] == [[(1 << 32) + 5], [(1 << 32) + 4]]
    # search_after with as many values as the explicit sort: no tie-breaker is added
    r2 = es.search(pit={"id": pit}, size=20, sort=[{"n": "asc"}], search_after=[2])
    assert [h["sort"] for h in r2["hits"]["hits"]][:2] == [[3], [3]]
    with pytest.raises(BadRequestError) as ei:
        es.search(index="ta", sort=[{"_shard_doc": "asc"}])
    assert ei.value.body["error"]["caused_by"]["reason"] == (
        "[_shard_doc] sort field cannot be used without [point in time]")


def test_search_after_with_keyword_and_descending_sorts(srv: ESTestServer,
                                                        es: Elasticsearch) -> None:
    _load(es, "sa", 30)
    pit = es.open_point_in_time(index="sa", keep_alive="1m")["id"]
    sort = [{"host.id.keyword": "desc"}, {"n": "desc"}]
    hits = _all_pages(es, pit, sort, size=7)
    expected = sorted(range(30), key=lambda i: (-(i % 3), -i))
    assert [h["_source"]["n"] for h in hits] == expected
    # without a PIT too (no tie-breaker; the sort here is unique)
    page = es.search(index="sa", size=5, sort=sort, search_after=["h1", 28])
    assert [h["_source"]["n"] for h in page["hits"]["hits"]] == [25, 22, 19, 16, 13]
    with pytest.raises(BadRequestError) as ei:
        es.search(index="sa", size=5, sort=sort, search_after=["h1"])
    assert ei.value.body["error"]["reason"] == "search_after has 1 value(s) but sort has 2."
    with pytest.raises(BadRequestError) as ei2:
        es.search(index="sa", from_=5, sort=sort, search_after=["h1", 28])
    assert "`from` parameter must be set to 0 when `search_after` is used" in \
        ei2.value.body["error"]["reason"]


def test_keep_alive_expiry_and_extension(srv: ESTestServer, es: Elasticsearch) -> None:
    _load(es, "ka", 2)
    pit = es.open_point_in_time(index="ka", keep_alive="600ms")["id"]
    for _ in range(3):  # each use extends it by its keep_alive
        time.sleep(0.35)
        es.search(pit={"id": pit, "keep_alive": "600ms"})
    assert len(srv.cluster.pits) == 1
    time.sleep(0.9)
    with pytest.raises(NotFoundError):
        es.search(pit={"id": pit})
    assert len(srv.cluster.pits) == 0
    assert srv.cluster.indices["ka"].pits == 0  # the index may merge again


def test_track_total_hits(srv: ESTestServer, es: Elasticsearch) -> None:
    srv.load_docs("many", ({"n": i} for i in range(10_050)))
    default = es.search(index="many", size=0)["hits"]["total"]
    assert default == {"value": 10_000, "relation": "gte"}
    assert es.search(index="many", size=0, track_total_hits=True)["hits"]["total"] == {
        "value": 10_050, "relation": "eq"}
    assert "total" not in es.search(index="many", size=0, track_total_hits=False)["hits"]
    assert es.search(index="many", size=0, track_total_hits=5)["hits"]["total"] == {
        "value": 5, "relation": "gte"}
    small = es.search(index="many", size=0, track_total_hits=20_000,
                      query={"range": {"n": {"lt": 7}}})
    assert small["hits"]["total"] == {"value": 7, "relation": "eq"}
    # with search_after the total is still every match
    page = es.search(index="many", size=1, sort=["n"], search_after=[10_000],
                     track_total_hits=True)
    assert page["hits"]["total"]["value"] == 10_050 and ids(page) != []
