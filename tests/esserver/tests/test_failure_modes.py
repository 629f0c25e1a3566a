"""Elasticsearch's failure modes: index blocks, auto-create refused, circuit breakers,
http.max_content_length, typed per-item errors, and the cluster settings behind them."""

from __future__ import annotations

import gzip
import http.client
from typing import Any

import orjson
import pytest
from elasticsearch import (
    ApiError,
    AuthenticationException,
    AuthorizationException,
    BadRequestError,
    Elasticsearch,
    NotFoundError,
)

from tests.esserver import ESTestServer
from tests.esserver.tests.helpers import TS, raw

FLOOD = ("TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark, index has "
         "read-only-allow-delete block")


def _items(resp: Any) -> list[dict[str, Any]]:
    return [it[next(iter(it))] for it in resp["items"]]


def _create(index: str, *ids: str) -> list[dict[str, Any]]:
    return [x for i in ids for x in ({"create": {"_index": index, "_id": i}},
                                     {"@timestamp": TS, "n": i})]


# ============================================================================ index blocks
def test_flood_stage_block_gives_retryable_429_items(srv: ESTestServer, es: Elasticsearch) -> None:
    es.bulk(operations=_create("logs-app-default", "1"))
    srv.flood_stage(True)
    items = _items(es.bulk(operations=_create("logs-app-default", "2", "3")))
    [backing] = srv.backing_indices("logs-app-default")
    assert items[0] == {"_index": backing, "_id": "2", "status": 429, "error": {
        "type": "cluster_block_exception",
        "reason": f"index [{backing}] blocked by: [{FLOOD}];"}}
    assert srv.counter("bulk.items.blocked") == 2
    assert srv.index_settings("logs-app-default")["index.blocks.read_only_allow_delete"] == "true"
    # metadata writes are blocked too; removing the block itself is allowed
    with pytest.raises(ApiError) as ei:
        es.indices.put_mapping(index="logs-app-default", properties={"k": {"type": "keyword"}})
    assert ei.value.meta.status == 429
    es.indices.put_settings(index="logs-app-default",
                            settings={"index.blocks.read_only_allow_delete": None})
    assert _items(es.bulk(operations=_create("logs-app-default", "2")))[0]["status"] == 201
    assert sorted(srv.docs("logs-app-default")) == ["1", "2"]


def test_write_and_read_only_blocks_are_403(srv: ESTestServer, es: Elasticsearch) -> None:
    es.bulk(operations=_create("plain", "1"))
    es.indices.put_settings(index="plain", settings={"index": {"blocks": {"write": True}}})
    item = _items(es.bulk(operations=_create("plain", "2")))[0]
    assert (item["status"], item["error"]) == (403, {
        "type": "cluster_block_exception",
        "reason": "index [plain] blocked by: [FORBIDDEN/8/index write (api)];"})
    with pytest.raises(AuthorizationException):  # single-document APIs answer with the error
        es.index(index="plain", id="3", document={"a": 1})
    with pytest.raises(AuthorizationException):
        es.delete(index="plain", id="1")
    es.indices.put_settings(index="plain", settings={"index.blocks.read_only": True})
    item = _items(es.bulk(operations=_create("plain", "2")))[0]
    assert item["error"]["reason"] == ("index [plain] blocked by: [FORBIDDEN/5/index read-only "
                                       "(api)];[FORBIDDEN/8/index write (api)];")
    settings = es.indices.get_settings(index="plain")["plain"]["settings"]["index"]["blocks"]
    assert settings == {"read_only": "true", "write": "true"}
    with pytest.raises(AuthorizationException):
        es.indices.put_settings(index="plain", settings={"index.number_of_replicas": 0})
    # a mixed block set answers with the highest status of its blocks (429 here)
    srv.flood_stage(True, "plain")
    assert _items(es.bulk(operations=_create("plain", "2")))[0]["status"] == 429
    srv.flood_stage(False, "plain")
    es.indices.put_settings(index="plain", settings={"index.blocks": {"read_only": None,
                                                                      "write": False}})
    assert _items(es.bulk(operations=_create("plain", "2")))[0]["status"] == 201


def test_cluster_wide_read_only_block_fails_the_whole_request(srv: ESTestServer,
                                                              es: Elasticsearch) -> None:
    es.cluster.put_settings(persistent={"cluster.blocks.read_only": True})
    with pytest.raises(AuthorizationException) as ei:
        es.bulk(operations=_create("x", "1"))
    assert ei.value.body["error"]["reason"] == "blocked by: [FORBIDDEN/6/cluster read-only (api)];"
    es.cluster.put_settings(persistent={"cluster.blocks.read_only": None})
    assert _items(es.bulk(operations=_create("x", "1")))[0]["status"] == 201


def test_index_settings_validation(srv: ESTestServer, es: Elasticsearch) -> None:
    es.bulk(operations=_create("v", "1"))
    with pytest.raises(BadRequestError) as ei:
        es.indices.put_settings(index="v", settings={"index.nonsense": 1})
    assert ei.value.body["error"]["reason"].startswith("unknown setting [index.nonsense]")
    with pytest.raises(BadRequestError) as ei2:
        es.indices.put_settings(index="v", settings={"index.mode": "logsdb"})
    uuid = srv.cluster.indices["v"].uuid
    assert ei2.value.body["error"]["reason"] == (
        f"Can't update non dynamic settings [[index.mode]] for open indices [[v/{uuid}]]")
    with pytest.raises(NotFoundError):
        es.indices.put_settings(index="missing", settings={"index.blocks.write": True})
    flat = es.indices.get_settings(index="v", flat_settings=True)["v"]["settings"]
    assert flat["index.provided_name"] == "v" and flat["index.uuid"] == uuid


# ============================================================================ auto-create
def test_auto_create_off_gives_404_items(srv: ESTestServer, es: Elasticsearch) -> None:
    es.bulk(operations=_create("exists", "1"))
    resp = es.cluster.put_settings(persistent={"action.auto_create_index": False})
    assert resp == {"acknowledged": True, "persistent": {"action": {"auto_create_index":
                                                                      "false"}},
                    "transient": {}}
    a, b = _items(es.bulk(operations=_create("newone", "1") + _create("exists", "2")))
    assert a == {"_index": "newone", "_id": "1", "status": 404, "error": {
        "type": "index_not_found_exception",
        "reason": "no such index [newone] and [action.auto_create_index] is [false]",
        "index_uuid": "_na_", "index": "newone"}}
    assert b["status"] == 201  # an existing index takes writes
    assert "newone" not in srv.index_names()
    assert srv.counter("bulk.items.index_not_found") == 1
    # the built-in logs template sets allow_auto_create: true, which wins over the setting
    assert _items(es.bulk(operations=_create("logs-app-default", "1")))[0]["status"] == 201
    # ... and a template without it (like the collector's) follows the setting
    es.indices.put_index_template(name="audit", index_patterns=["logs-audit-*"], priority=200,
                                  data_stream={})
    with pytest.raises(NotFoundError) as ei:
        es.index(index="logs-audit-default", document={"@timestamp": TS})
    assert ei.value.body["error"]["reason"] == (
        "no such index [logs-audit-default] and [action.auto_create_index] is [false]")
    es.indices.create_data_stream(name="logs-audit-default")  # explicit creation still works
    assert es.index(index="logs-audit-default", document={"@timestamp": TS})["result"] == \
        "created"
    assert es.cluster.get_settings(flat_settings=True)["persistent"] == {
        "action.auto_create_index": "false"}


def test_auto_create_patterns_and_template_veto(srv: ESTestServer, es: Elasticsearch) -> None:
    es.cluster.put_settings(transient={"action.auto_create_index": "+app-*,-tmp-*"})
    a, b, c = _items(es.bulk(operations=_create("app-1", "1") + _create("tmp-1", "1")
                             + _create("other", "1")))
    assert a["status"] == 201
    assert b["error"]["reason"] == (
        "no such index [tmp-1] and [action.auto_create_index] contains [-tmp-*] which forbids "
        "automatic creation of the index")
    assert c["error"]["reason"] == (
        "no such index [other] and [action.auto_create_index] ([+app-*,-tmp-*]) doesn't match")
    es.indices.put_index_template(name="noauto", index_patterns=["app-locked-*"], priority=5,
                                  allow_auto_create=False)
    d = _items(es.bulk(operations=_create("app-locked-1", "1")))[0]
    assert d["error"] == {
        "type": "index_not_found_exception",
        "reason": "no such index [composable template [app-locked-*] forbids index auto "
        "creation]", "index_uuid": "_na_",
        "index": "composable template [app-locked-*] forbids index auto creation"}
    with pytest.raises(BadRequestError) as ei:
        es.cluster.put_settings(persistent={"action.auto_create_index": "+"})
    assert "must contain an index name after [+]" in ei.value.body["error"]["reason"]
    with pytest.raises(BadRequestError) as ei2:
        es.cluster.put_settings(persistent={"no.such.setting": 1})
    assert ei2.value.body["error"]["reason"] == "persistent setting [no.such.setting], not " \
        "recognized"


def test_auto_id_write_to_a_data_stream_defaults_to_create(srv: ESTestServer,
                                                         es: Elasticsearch) -> None:
    r = es.index(index="logs-app-default", document={"@timestamp": TS, "m": 1})
    assert (r["result"], r["_version"]) == ("created", 1)
    status, _, body = raw(srv, "POST", "/logs-app-default/_doc", body=b'{"@timestamp": 1}',
                          headers={"Content-Type": "application/json"})
    assert status == 201 and orjson.loads(body)["_index"].startswith(".ds-logs-app-default-")
    # an explicit op_type=index is still refused by a data stream, as is an id with PUT
    with pytest.raises(BadRequestError) as ei:
        es.index(index="logs-app-default", document={"@timestamp": TS}, op_type="index")
    assert ei.value.body["error"]["reason"] == (
        "only write ops with an op_type of create are allowed in data streams")
    with pytest.raises(BadRequestError):
        es.index(index="logs-app-default", id="x", document={"@timestamp": TS})


# ============================================================================ typed item errors
def test_item_faults_with_elasticsearch_error_types(srv: ESTestServer, es: Elasticsearch) -> None:
    srv.fail_items(error_type="circuit_breaking_exception", durability="PERMANENT",
                   positions=[0])
    srv.fail_items(error_type="security_exception", positions=[1])
    srv.fail_items(error_type="index_not_found_exception", positions=[2])
    srv.fail_items(error_type="index_closed_exception", positions=[3])
    srv.fail_items(403, error_type="cluster_block_exception", positions=[4])
    srv.fail_items(error_type="cluster_block_exception", positions=[5])
    items = _items(es.bulk(operations=_create("ty", "0", "1", "2", "3", "4", "5", "6")))
    assert [i["status"] for i in items] == [429, 403, 404, 400, 403, 429, 201]
    breaker = items[0]["error"]
    assert (breaker["type"], breaker["durability"], breaker["bytes_limit"]) == (
        "circuit_breaking_exception", "PERMANENT", 1020054732)
    assert breaker["reason"].startswith("[parent] Data too large, data for [<http_request>]")
    assert items[1]["error"]["type"] == "security_exception"
    assert items[2]["error"]["reason"] == ("no such index [ty] and [action.auto_create_index] "
                                           "is [false]")
    assert items[3]["error"] == {"type": "index_closed_exception", "reason": "closed",
                                 "index_uuid": "_na_", "index": "ty"}
    assert items[4]["error"]["reason"] == "index [ty] blocked by: [FORBIDDEN/8/index write (api)];"
    assert items[5]["error"]["reason"] == f"index [ty] blocked by: [{FLOOD}];"
    assert sorted(srv.docs("ty")) == ["6"]
    for outcome in ("circuit_breaking", "forbidden", "index_not_found", "index_closed"):
        assert srv.counter(f"bulk.items.{outcome}") == 1
    assert srv.counter("bulk.items.blocked") == 2
    # the admin API takes the same types
    status, _, _ = raw(srv, "POST", "/_test/faults", body=orjson.dumps(
        {"kind": "items", "type": "circuit_breaking_exception", "durability": "TRANSIENT"}))
    assert status == 200
    item = _items(es.bulk(operations=_create("ty", "7")))[0]
    assert (item["status"], item["error"]["durability"]) == (429, "TRANSIENT")


def test_request_faults_with_error_types(srv: ESTestServer, es: Elasticsearch) -> None:
    srv.fail_requests(error_type="circuit_breaking_exception", durability="TRANSIENT")
    with pytest.raises(ApiError) as ei:
        es.bulk(operations=_create("rq", "1"))
    assert ei.value.meta.status == 429
    assert ei.value.body["error"]["durability"] == "TRANSIENT"
    assert ei.value.body["error"]["root_cause"][0]["type"] == "circuit_breaking_exception"
    srv.fail_requests(401)
    with pytest.raises(AuthenticationException) as ei2:
        es.bulk(operations=_create("rq", "1"))
    assert ei2.value.meta.headers["www-authenticate"]
    srv.fail_requests(403)
    with pytest.raises(AuthorizationException):
        es.bulk(operations=_create("rq", "1"))
    srv.fail_requests(413)
    with pytest.raises(ApiError) as ei3:
        es.bulk(operations=_create("rq", "1"))
    assert (ei3.value.meta.status, ei3.value.body) == (413, None)  # an empty body
    assert srv.doc_count("rq") == 0
    assert es.bulk(operations=_create("rq", "1"))["errors"] is False


# ============================================================================ body size
def test_max_content_length_413_then_connection_closed(srv: ESTestServer) -> None:
    srv.max_content_length = 4096
    big = b"".join(orjson.dumps(x) + b"\n" for x in _create("mc", *[str(i) for i in range(60)]))
    assert len(big) > 4096
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    conn.request("POST", "/_bulk", body=big, headers={"Content-Type": "application/x-ndjson"})
    resp = conn.getresponse()
    assert (resp.status, resp.read(), resp.getheader("Connection")) == (413, b"", "close")
    assert resp.getheader("X-elastic-product") is None  # answered below the REST layer
    conn.close()
    assert srv.doc_count("mc") == 0
    # gzip: the limit applies to the decompressed body
    small_gz = gzip.compress(big)
    assert len(small_gz) < 4096
    status, _, _ = raw(srv, "POST", "/_bulk", body=small_gz, headers={
        "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"})
    assert status == 413
    ok = b"".join(orjson.dumps(x) + b"\n" for x in _create("mc", "1", "2"))
    status, _, _ = raw(srv, "POST", "/_bulk", body=gzip.compress(ok), headers={
        "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"})
    assert status == 200 and srv.doc_count("mc") == 2
    client = Elasticsearch(srv.url, max_retries=0)
    with pytest.raises(ApiError) as ei:
        client.bulk(operations=_create("mc", *[str(i) for i in range(60)]))
    assert ei.value.meta.status == 413
    assert client.info()["tagline"]  # a new connection works
    assert srv.counter("responses.413") == 3
    client.close()
