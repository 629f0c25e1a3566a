"""Refresh: writes become searchable at the next refresh, as in Elasticsearch."""

from __future__ import annotations

import time
from typing import Any

import pytest
from elasticsearch import BadRequestError, Elasticsearch

from tests.esserver import ESTestServer
from tests.esserver.tests.helpers import TS, ids


def _template(es: Elasticsearch, pattern: str, **settings: Any) -> None:
    es.indices.put_index_template(name=pattern.rstrip("*-") or "t", index_patterns=[pattern],
                                  template={"settings": settings})


def _count(es: Elasticsearch, index: str) -> int:
    return int(es.count(index=index)["count"])


def wait_until(check: Any, timeout: float = 5.0) -> float:
    """Seconds until ``check()`` held (AssertionError after ``timeout``)."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not reached")
        time.sleep(0.02)
    return time.monotonic() - start


def test_writes_are_searchable_after_the_refresh_interval(srv: ESTestServer,
                                                           es: Elasticsearch) -> None:
    _template(es, "ri-*", **{"index.refresh_interval": "1s"})
    es.index(index="ri-a", id="1", document={"n": 1})
    started = time.monotonic()
    assert _count(es, "ri-a") == 0  # written, acknowledged, not yet searchable
    assert es.search(index="ri-a")["hits"]["total"]["value"] == 0
    assert es.get(index="ri-a", id="1")["_source"] == {"n": 1}  # GET is realtime
    assert srv.get_doc("ri-a", "1") == {"n": 1} and srv.doc_count("ri-a") == 1  # Python sees all
    waited = wait_until(lambda: _count(es, "ri-a") == 1)
    assert time.monotonic() - started > 0.3 and waited < 2.0
    # an update and a delete stay invisible to search until the next refresh as well
    es.update(index="ri-a", id="1", doc={"n": 2})
    es.index(index="ri-a", id="2", document={"n": 3})
    assert [h["_source"] for h in es.search(index="ri-a")["hits"]["hits"]] == [{"n": 1}]
    es.delete(index="ri-a", id="1")
    assert ids(es.search(index="ri-a")) == ["1"]
    es.indices.refresh(index="ri-a")
    assert [(h["_id"], h["_source"]) for h in es.search(index="ri-a")["hits"]["hits"]] == [
        ("2", {"n": 3})]


def test_refresh_parameter_true_and_wait_for(srv: ESTestServer, es: Elasticsearch) -> None:
    _template(es, "rp-*", **{"index.refresh_interval": "1s"})
    resp = es.bulk(operations=[{"create": {"_index": "rp-a", "_id": "1"}}, {"n": 1}],
                   refresh=True)
    assert resp["items"][0]["create"]["forced_refresh"] is True
    assert _count(es, "rp-a") == 1
    started = time.monotonic()
    resp = es.bulk(operations=[{"create": {"_index": "rp-a", "_id": "2"}}, {"n": 2}],
                   refresh="wait_for")
    waited = time.monotonic() - started
    assert "forced_refresh" not in resp["items"][0]["create"]
    assert _count(es, "rp-a") == 2  # wait_for returned once a refresh made it visible
    assert 0.05 < waited < 2.0
    r = es.index(index="rp-a", id="3", document={"n": 3}, refresh="wait_for")
    assert r["result"] == "created" and _count(es, "rp-a") == 3
    with pytest.raises(BadRequestError) as ei:
        es.index(index="rp-a", id="4", document={"n": 4}, refresh="soon")  # type: ignore[arg-type]
    assert ei.value.body["error"]["reason"] == "Unknown value for refresh: [soon]."


def test_refresh_interval_minus_one_and_the_refresh_api(srv: ESTestServer,
                                                        es: Elasticsearch) -> None:
    _template(es, "never-*", **{"index.refresh_interval": "-1"})
    es.bulk(operations=[{"create": {"_index": "never-a", "_id": "1"}}, {"n": 1}])
    time.sleep(1.3)
    assert _count(es, "never-a") == 0
    shards = es.indices.refresh(index="never-a")["_shards"]
    assert shards == {"total": 2, "successful": 1, "failed": 0}
    assert _count(es, "never-a") == 1
    # dynamic: turning the periodic refresh on again
    es.indices.put_settings(index="never-a", settings={"index": {"refresh_interval": "200ms"}})
    es.bulk(operations=[{"create": {"_index": "never-a", "_id": "2"}}, {"n": 2}])
    wait_until(lambda: _count(es, "never-a") == 2, timeout=2)
    assert srv.index_settings("never-a")["index.refresh_interval"] == "200ms"
    with pytest.raises(BadRequestError) as ei:
        es.indices.put_settings(index="never-a", settings={"index.refresh_interval": "often"})
    assert "failed to parse setting [index.refresh_interval]" in ei.value.body["error"]["reason"]


def test_search_idle_index_refreshes_when_searched(srv: ESTestServer, es: Elasticsearch) -> None:
    """Without an explicit refresh_interval a shard that saw no search for
    index.search.idle.after skips scheduled refreshes; the next search refreshes it."""
    _template(es, "idle-*", **{"index.search.idle.after": "300ms"})
    es.bulk(operations=[{"create": {"_index": "idle-a", "_id": "1"}}, {"@timestamp": TS}])
    time.sleep(1.5)  # past one refresh interval and idle since creation
    idx = srv.cluster.indices["idle-a"]
    assert idx.pending  # the scheduled refresh skipped the idle shard
    assert _count(es, "idle-a") == 1  # the search refreshed it first
    assert not idx.pending
    # a shard searched recently (here: created less than 30 s ago) refreshes every second
    es.bulk(operations=[{"create": {"_index": "busy", "_id": "1"}}, {"@timestamp": TS}])
    busy = srv.cluster.indices["busy"]
    assert busy.pending
    assert 0.2 < wait_until(lambda: not busy.pending, timeout=3) < 1.5
