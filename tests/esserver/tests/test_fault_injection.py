"""Fault injection: whole-request errors, per-item errors, delays, resets, downtime."""

from __future__ import annotations

import random
import socket
import time

import pytest
from elasticsearch import ApiError, ConnectionError, ConnectionTimeout, Elasticsearch, helpers

from tests.esserver import BulkItem, ESTestServer
from tests.esserver.tests.helpers import ops


# ============================================================================ faults
def test_fault_whole_request_429(srv: ESTestServer, es: Elasticsearch) -> None:
    srv.fail_requests(429)
    with pytest.raises(ApiError) as ei:
        es.bulk(operations=[{"create": {"_index": "f", "_id": "1"}}, {"a": 1}])
    assert ei.value.meta.status == 429
    assert ei.value.body["error"]["type"] == "es_rejected_execution_exception"
    assert ei.value.body["status"] == 429
    assert srv.doc_count("f") == 0
    # the default client retries 429s: one more failure then success
    srv.fail_requests(429)
    retrying = Elasticsearch(srv.url, max_retries=3)
    resp = retrying.bulk(operations=[{"create": {"_index": "f", "_id": "1"}}, {"a": 1}])
    assert resp["errors"] is False
    assert srv.counter("requests.bulk") == 3
    assert srv.counter("faults.status") == 2
    assert srv.counter("responses.429") == 2
    assert srv.get_doc("f", "1") == {"a": 1}
    retrying.close()


@pytest.mark.parametrize("status", [502, 503, 504])
def test_fault_5xx(srv: ESTestServer, es: Elasticsearch, status: int) -> None:
    srv.fail_requests(status, requests=1)
    with pytest.raises(ApiError) as ei:
        es.bulk(operations=[{"create": {"_index": "f", "_id": "1"}}, {"a": 1}])
    assert ei.value.meta.status == status
    if status == 503:
        assert ei.value.body["error"]["type"] == "cluster_block_exception"
    else:
        assert f"{status} " in ei.value.body
    assert srv.doc_count("f") == 0
    assert es.bulk(operations=[{"create": {"_index": "f", "_id": "1"}}, {"a": 1}])[
        "errors"] is False


def test_fault_per_item_429_every_third(srv: ESTestServer, es: Elasticsearch) -> None:
    fault = srv.fail_items(429, every=3)
    resp = es.bulk(operations=[x for i in range(9) for x in (
        {"create": {"_index": "p", "_id": str(i)}}, {"i": i})])
    statuses = [it["create"]["status"] for it in resp["items"]]
    assert statuses == [201, 201, 429, 201, 201, 429, 201, 201, 429]
    assert resp["items"][2]["create"]["error"]["type"] == "es_rejected_execution_exception"
    assert resp["errors"] is True
    assert sorted(srv.docs("p")) == ["0", "1", "3", "4", "6", "7"]
    assert fault.items_hit == 3
    assert srv.counter("bulk.items.rejected") == 3
    # helpers retry rejected items with backoff: a fresh fault then everything lands
    srv.fail_items(429, fraction=0.5, seed=3, requests=1)
    # (helpers only retry item-level 429s when raise_on_error=False)
    ok, errors = helpers.bulk(es, ops(40, index="q"), max_retries=3, initial_backoff=0.01,
                              raise_on_error=False)
    assert (ok, errors) == (40, [])
    assert [r.items for r in srv.request_log if r.endpoint == "bulk"][-2:] == [40, 18]
    assert srv.doc_count("q") == 40


def test_fault_delay_longer_than_timeout(srv: ESTestServer) -> None:
    client = Elasticsearch(srv.url, request_timeout=0.3, max_retries=0)
    srv.delay_responses(1.0)
    t0 = time.monotonic()
    with pytest.raises(ConnectionTimeout):
        client.bulk(operations=[{"create": {"_index": "d", "_id": "1"}}, {"a": 1}])
    assert time.monotonic() - t0 < 0.9
    assert srv.get_doc("d", "1") == {"a": 1}  # applied before the slow response
    assert srv.counter("faults.delay") == 1
    client.close()


def test_fault_reset_before_and_after(srv: ESTestServer, es: Elasticsearch) -> None:
    srv.reset_connections("before")
    with pytest.raises(ConnectionError):
        es.bulk(operations=[{"create": {"_index": "r", "_id": "1"}}, {"a": 1}])
    assert srv.get_doc("r", "1") is None
    srv.reset_connections("after")
    with pytest.raises(ConnectionError):
        es.bulk(operations=[{"create": {"_index": "r", "_id": "1"}}, {"a": 1}])
    assert srv.get_doc("r", "1") == {"a": 1}
    assert srv.counter("faults.reset.before") == 1
    assert srv.counter("faults.reset.after") == 1
    # a client that retries after a reset-after sees its own write as a 409 conflict
    srv.reset_connections("after")
    retrying = Elasticsearch(srv.url, max_retries=1)
    resp = retrying.bulk(operations=[{"create": {"_index": "r", "_id": "2"}}, {"a": 2}])
    assert resp["items"][0]["create"]["status"] == 409
    assert srv.counter("bulk.items.created") == 2
    retrying.close()
    assert [r.status for r in srv.request_log if r.endpoint == "bulk"] == [
        None, None, None, 200]


def test_fault_server_down_then_up(srv: ESTestServer, es: Elasticsearch) -> None:
    es.bulk(operations=[{"create": {"_index": "u", "_id": "1"}}, {"a": 1}])
    srv.go_down(0.6)
    assert srv.is_down is True
    with pytest.raises(ConnectionError):
        es.info()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((srv.host, srv.port), timeout=1).close()
    assert srv.wait_until_up(5) is True
    assert es.info()["version"]["number"] == "8.17.0"
    assert srv.get_doc("u", "1") == {"a": 1}
    # down triggered by a request: that bulk is not applied
    srv.down_on_request(0.5)
    with pytest.raises(ConnectionError):
        es.bulk(operations=[{"create": {"_index": "u", "_id": "2"}}, {"a": 2}])
    assert srv.wait_until_up(5) is True
    assert srv.get_doc("u", "2") is None
    assert (srv.counter("server.down"), srv.counter("server.up")) == (2, 2)


def test_fault_mapping_errors_by_predicate(srv: ESTestServer, es: Elasticsearch) -> None:
    srv.mapping_errors(field="user.name", value="mallory")
    srv.mapping_errors(predicate=lambda item: item.id == "x3")
    resp = es.bulk(operations=[x for i, who in enumerate(["bob", "mallory", "eve", "bob"])
                               for x in ({"create": {"_index": "mp", "_id": f"x{i}"}},
                                         {"user": {"name": who}})])
    items = [it["create"] for it in resp["items"]]
    assert [i["status"] for i in items] == [201, 400, 201, 400]
    assert items[1]["error"]["type"] == "document_parsing_exception"
    assert items[1]["error"]["reason"] == (
        "[1:1] failed to parse field [user.name] of type [keyword] in document with id 'x1'. "
        "Preview of field's value: 'mallory'")
    assert sorted(srv.docs("mp")) == ["x0", "x2"]
    assert srv.counter("bulk.items.mapping_error") == 2


def test_fault_probability_is_seeded(srv: ESTestServer, es: Elasticsearch) -> None:
    srv.fail_requests(503, requests=None, probability=0.3, seed=11)
    rng = random.Random(11)
    expected = [rng.random() < 0.3 for _ in range(20)]
    observed = []
    for i in range(20):
        try:
            es.bulk(operations=[{"create": {"_index": "pr", "_id": str(i)}}, {"i": i}])
            observed.append(False)
        except ApiError as e:
            assert e.meta.status == 503
            observed.append(True)
    assert observed == expected
    assert srv.doc_count("pr") == expected.count(False)


def test_fault_skip_and_endpoint_filter(srv: ESTestServer, es: Elasticsearch) -> None:
    srv.fail_requests(429, skip=2, requests=1, endpoints=["search"])
    es.bulk(operations=[{"create": {"_index": "s", "_id": "1"}}, {"a": 1}], refresh=True)
    es.search(index="s")
    es.search(index="s")
    with pytest.raises(ApiError):
        es.search(index="s")
    assert es.search(index="s")["hits"]["total"]["value"] == 1
    desc = srv.faults.list()[0].describe()
    assert (desc["triggered"], desc["active"]) == (1, False)


def test_item_predicate_sees_bulk_item(srv: ESTestServer, es: Elasticsearch) -> None:
    seen: list[BulkItem] = []

    def record(item: BulkItem) -> bool:
        seen.append(item)
        return False

    srv.fail_items(predicate=record)
    es.bulk(operations=[{"create": {"_index": "bi", "_id": "7"}}, {"k": "v"},
                        {"delete": {"_index": "bi", "_id": "8"}}])
    assert seen == [BulkItem(0, "create", "bi", "7", {"k": "v"}),
                    BulkItem(1, "delete", "bi", "8", None)]
