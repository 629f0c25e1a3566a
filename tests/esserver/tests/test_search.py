"""Search and count: queries, sorting, search_after."""

from __future__ import annotations

from typing import Any

import pytest
from elasticsearch import BadRequestError, Elasticsearch, NotFoundError, helpers

from tests.esserver import ESTestServer
from tests.esserver.tests.helpers import ids as _ids


# ============================================================================ search
@pytest.fixture
def search_data(srv: ESTestServer, es: Elasticsearch) -> Elasticsearch:
    es.indices.put_index_template(name="ev", index_patterns=["ev-a"], template={"mappings": {
        "properties": {
        "@timestamp": {"type": "date"}, "host": {"properties": {"name": {"type": "keyword"}}},
        "seq": {"type": "long"}, "msg": {"type": "text"}, "score": {"type": "double"}}}})
    docs = []
    for i in range(20):
        docs.append({"_op_type": "create", "_index": "ev-a" if i < 10 else "ev-b",
                     "_id": f"d{i:02d}",
                     "_source": {"@timestamp": f"2024-05-01T12:00:{i:02d}Z",
                                 "host": {"name": f"h{i % 4}"}, "seq": i,
                                 "msg": f"Process started pid {i}",
                                 "score": i / 2, **({"flag": True} if i % 5 == 0 else {})}})
    docs.append({"_op_type": "create", "_index": "ev-b", "_id": "dotted",
                 "_source": {"host.name": "hx", "seq": 100, "@timestamp": "2024-05-02T00:00:00Z"}})
    helpers.bulk(es, docs, refresh=True)
    return es


def test_search_term_range_bool_sort(srv: ESTestServer, search_data: Elasticsearch) -> None:
    es = search_data
    r = es.search(index="ev-a", query={"term": {"host.name": "h1"}}, sort=["seq"])
    assert _ids(r) == ["d01", "d05", "d09"]
    assert r["hits"]["total"] == {"value": 3, "relation": "eq"}
    assert r["hits"]["hits"][0]["sort"] == [1]
    assert r["hits"]["hits"][0]["_score"] is None
    # ev-b was dynamically mapped: host.name is text + keyword
    r = es.search(index="ev-*", query={"term": {"host.name.keyword": "hx"}})
    assert _ids(r) == ["dotted"]
    r = es.search(index="ev-*", query={"terms": {"host.name": ["h2", "h3"]}}, sort=["seq"],
                  size=100)
    assert _ids(r) == ["d02", "d03", "d06", "d07", "d10", "d11", "d14", "d15", "d18", "d19"]
    r = es.search(index="ev-*", query={"range": {"seq": {"gt": 3, "lte": 6}}}, sort=["seq"])
    assert _ids(r) == ["d04", "d05", "d06"]
    r = es.search(index="ev-*", query={"range": {"@timestamp": {
        "gte": "2024-05-01T12:00:18Z", "lt": "2024-05-02T00:00:00Z"}}}, sort=["seq"])
    assert _ids(r) == ["d18", "d19"]
    r = es.search(index="ev-*", size=50, sort=[{"seq": "asc"}], query={"bool": {
        "filter": [{"range": {"seq": {"lt": 12}}}],
        "must_not": [{"term": {"host.name": "h0"}}],
        "should": [{"term": {"seq": 1}}, {"term": {"seq": 2}}, {"exists": {"field": "flag"}}],
        "minimum_should_match": 1}})
    assert _ids(r) == ["d01", "d02", "d05", "d10"]
    r = es.search(index="ev-a", query={"match": {"msg": "STARTED pid"}}, size=0)
    assert r["hits"]["total"]["value"] == 10
    r = es.search(index="ev-*", query={"exists": {"field": "flag"}}, sort=[{"seq": "desc"}])
    assert _ids(r) == ["d15", "d10", "d05", "d00"]
    r = es.search(index="ev-a", sort=[{"host.name": "desc"}, {"seq": "asc"}], size=4,
                  source=["seq"])
    assert _ids(r) == ["d03", "d07", "d02", "d06"]
    assert r["hits"]["hits"][0]["_source"] == {"seq": 3}
    assert r["hits"]["hits"][0]["sort"] == ["h3", 3]
    r = es.search(index="ev-a", query={"match_all": {}}, track_total_hits=False, size=1)
    assert "total" not in r["hits"]
    assert es.count(index="ev-*", query={"range": {"score": {"gte": 5.0}}})["count"] == 10
    assert es.count(index="ev-*")["count"] == 21
    with pytest.raises(BadRequestError) as ei:
        es.search(index="ev-a", sort=["msg"])
    assert ei.value.body["error"]["root_cause"][0]["reason"].startswith(
        "Text fields are not optimised")
    with pytest.raises(NotFoundError):
        es.search(index="missing-index")
    assert es.search(index="missing-*")["hits"]["total"]["value"] == 0


def test_search_after_pagination(srv: ESTestServer, search_data: Elasticsearch) -> None:
    es = search_data
    seen: list[str] = []
    after: list[Any] | None = None
    pages = 0
    while True:
        kwargs: dict[str, Any] = {"search_after": after} if after else {}
        r = es.search(index="ev-*", size=6, sort=[{"@timestamp": "asc"}, {"seq": "asc"}],
                      **kwargs)
        hits = r["hits"]["hits"]
        if not hits:
            break
        pages += 1
        seen += [h["_id"] for h in hits]
        after = hits[-1]["sort"]
    assert pages == 4
    assert seen == [f"d{i:02d}" for i in range(20)] + ["dotted"]
    first = es.search(index="ev-a", size=1, sort=[{"@timestamp": "asc"}])["hits"]["hits"][0]
    assert first["sort"] == [1714564800000]
    r = es.search(index="ev-*", from_=18, size=5, sort=["seq"])
    assert _ids(r) == ["d18", "d19", "dotted"]
