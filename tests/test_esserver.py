"""Tests of the Elasticsearch-API test server, driven through the official client."""

from __future__ import annotations

import datetime
import gzip
import http.client
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from elasticsearch import (
    ApiError,
    BadRequestError,
    ConflictError,
    ConnectionError,
    ConnectionTimeout,
    Elasticsearch,
    NotFoundError,
    helpers,
)

try:
    from tests.esserver import BulkItem, ESTestServer
    from tests.esserver.pytest_plugin import ServerProcess
except ModuleNotFoundError:  # repo root not on sys.path: tests/ is (pytest rootdir insertion)
    from esserver import BulkItem, ESTestServer  # type: ignore[no-redef]
    from esserver.pytest_plugin import ServerProcess  # type: ignore[no-redef]

TS = "2024-05-01T12:00:00.000Z"


@pytest.fixture
def srv() -> Iterator[ESTestServer]:
    with ESTestServer(major=8) as server:
        yield server


@pytest.fixture
def es(srv: ESTestServer) -> Iterator[Elasticsearch]:
    client = Elasticsearch(srv.url, max_retries=0, request_timeout=10)
    yield client
    client.close()


def raw(srv: ESTestServer, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def ops(n: int, index: str = "audit", op: str = "create", start: int = 0) -> list[dict[str, Any]]:
    return [{"_op_type": op, "_index": index, "_id": f"id-{i}",
             "_source": {"@timestamp": TS, "seq": i, "host": {"name": f"h{i % 3}"}}}
            for i in range(start, start + n)]


# ============================================================================ basics
def test_info_ping_and_head(srv: ESTestServer, es: Elasticsearch) -> None:
    info = es.info().body
    assert info["version"]["number"] == "8.17.0"
    assert info["version"]["build_flavor"] == "default"
    assert info["version"]["lucene_version"] == "9.12.0"
    assert info["tagline"] == "You Know, for Search"
    assert info["cluster_name"] == "es-test-cluster"
    assert len(info["cluster_uuid"]) == 22
    assert es.ping() is True
    status, headers, body = raw(srv, "HEAD", "/")
    assert (status, body) == (200, b"")
    assert headers["x-elastic-product"] == "Elasticsearch"
    _, _, get_body = raw(srv, "GET", "/")
    assert int(headers["content-length"]) == len(get_body)


def test_product_header_on_2xx_and_keepalive(srv: ESTestServer) -> None:
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    for path in ("/", "/_cluster/health", "/_index_template/logs", "/_data_stream"):
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
        assert resp.getheader("X-Elastic-Product") == "Elasticsearch"
    conn.close()
    assert srv.counter("connections") == 1
    assert srv.counter("requests") == 4


def test_major9_and_client8(es: Elasticsearch) -> None:
    with ESTestServer(major=9) as s9:
        client = Elasticsearch(s9.url, max_retries=0)
        assert client.info()["version"]["number"] == "9.1.0"
        resp = client.bulk(operations=[{"create": {"_index": "x", "_id": "1"}}, {"a": 1}])
        assert resp["errors"] is False
        assert s9.get_doc("x", "1") == {"a": 1}
        client.close()


def test_compat_header_rejected_by_major9(srv: ESTestServer) -> None:
    with ESTestServer(major=9) as s9:
        client = Elasticsearch(s9.url, max_retries=0)
        accept7 = "application/vnd.elasticsearch+json; compatible-with=7"
        with pytest.raises(BadRequestError) as ei:
            client.perform_request("GET", "/", headers={"accept": accept7})
        assert ei.value.meta.status == 400
        assert ei.value.body == {
            "error": {
                "root_cause": [{"type": "media_type_header_exception",
                                "reason": "Invalid media-type value on headers "
                                "[Content-Type, Accept]"}],
                "type": "media_type_header_exception",
                "reason": "Invalid media-type value on headers [Content-Type, Accept]",
                "caused_by": {"type": "status_exception",
                              "reason": "Accept version must be either version 9 or 8, but "
                              f"found 7. Accept={accept7}"},
            },
            "status": 400,
        }
        # compatible-with=8 is fine on a 9 server
        status, _, _ = raw(s9, "GET", "/", headers={
            "Accept": "application/vnd.elasticsearch+json; compatible-with=8"})
        assert status == 200
        client.close()
    # a major-8 server rejects compatible-with=9
    status, _, body = raw(srv, "GET", "/", headers={
        "Accept": "application/vnd.elasticsearch+json; compatible-with=9"})
    assert status == 400
    assert orjson.loads(body)["error"]["caused_by"]["reason"] == (
        "Accept version must be either version 8 or 7, but found 9. "
        "Accept=application/vnd.elasticsearch+json; compatible-with=9")
    # versioned Accept with unversioned Content-Type
    status, _, body = raw(srv, "POST", "/_search", body=b"{}", headers={
        "Accept": "application/vnd.elasticsearch+json; compatible-with=8",
        "Content-Type": "application/json"})
    assert status == 400
    assert orjson.loads(body)["error"]["caused_by"]["reason"] == (
        "A compatible version is required on both Content-Type and Accept headers if either "
        "one has requested a compatible version. Accept=application/vnd.elasticsearch+json; "
        "compatible-with=8, Content-Type=application/json")
    status, _, body = raw(srv, "POST", "/_search", body=b"{}",
                          headers={"Content-Type": "text/plain"})
    assert (status, orjson.loads(body)) == (
        406, {"error": "Content-Type header [text/plain] is not supported", "status": 406})
    # plain application/json works and is echoed as plain JSON
    status, headers, _ = raw(srv, "POST", "/_search", body=b"{}",
                             headers={"Content-Type": "application/json"})
    assert (status, headers["content-type"]) == (200, "application/json")


def test_gzip_request_and_response(srv: ESTestServer) -> None:
    client = Elasticsearch(srv.url, http_compress=True, max_retries=0)
    ok, errors = helpers.bulk(client, ops(200), chunk_size=200)
    assert (ok, errors) == (200, [])
    bulk_records = [r for r in srv.request_log if r.endpoint == "bulk"]
    assert [r.content_encoding for r in bulk_records] == ["gzip"]
    assert client.count(index="audit")["count"] == 200
    res = client.search(index="audit", size=100, sort=["seq"])
    assert [h["_source"]["seq"] for h in res["hits"]["hits"]] == list(range(100))
    client.close()
    status, headers, body = raw(srv, "POST", "/audit/_search", body=b'{"size":50}', headers={
        "Content-Type": "application/json", "Accept-Encoding": "gzip"})
    assert (status, headers["content-encoding"]) == (200, "gzip")
    assert len(orjson.loads(gzip.decompress(body))["hits"]["hits"]) == 50


# ============================================================================ bulk
def test_bulk_create_then_replay_conflicts(srv: ESTestServer, es: Elasticsearch) -> None:
    ok, errors = helpers.bulk(es, ops(500), chunk_size=250)
    assert (ok, errors) == (500, [])
    ok, errors = helpers.bulk(es, ops(500), chunk_size=250, raise_on_error=False)
    assert ok == 0
    assert len(errors) == 500
    first = errors[0]["create"]
    assert first["status"] == 409
    assert first["_id"] == "id-0"
    assert first["error"]["type"] == "version_conflict_engine_exception"
    assert first["error"]["reason"] == (
        "[id-0]: version conflict, document already exists (current version [1])")
    assert first["error"]["index"] == "audit"
    assert srv.counter("bulk.items.created") == 500
    assert srv.counter("bulk.items.conflict") == 500
    assert srv.counter("bulk.items.status.409") == 500
    assert srv.counter("requests.bulk") == 4
    assert srv.doc_count("audit") == 500
    assert srv.get_doc("audit", "id-7") == {"@timestamp": TS, "seq": 7, "host": {"name": "h1"}}


def test_bulk_item_shapes(srv: ESTestServer, es: Elasticsearch) -> None:
    resp = es.bulk(operations=[
        {"index": {"_index": "t"}}, {"a": 1},
        {"create": {"_index": "t", "_id": "1"}}, {"a": 2},
        {"index": {"_index": "t", "_id": "1"}}, {"a": 3, "b": {"c": "x"}},
        {"update": {"_index": "t", "_id": "1"}}, {"doc": {"b": {"d": "y"}}},
        {"update": {"_index": "t", "_id": "1"}}, {"doc": {"b": {"d": "y"}}},
        {"update": {"_index": "t", "_id": "nope"}}, {"doc": {"a": 1}},
        {"delete": {"_index": "t", "_id": "1"}},
        {"delete": {"_index": "t", "_id": "1"}},
    ], refresh=False)
    items = resp["items"]
    assert resp["errors"] is True
    assert isinstance(resp["took"], int)
    auto = items[0]["index"]
    assert (auto["status"], auto["result"], auto["_version"], auto["_seq_no"]) == (
        201, "created", 1, 0)
    assert len(auto["_id"]) == 20
    assert auto["_shards"] == {"total": 2, "successful": 1, "failed": 0}
    assert items[1] == {"create": {"_index": "t", "_id": "1", "_version": 1,
                                   "result": "created",
                                   "_shards": {"total": 2, "successful": 1, "failed": 0},
                                   "_seq_no": 1, "_primary_term": 1, "status": 201}}
    assert (items[2]["index"]["status"], items[2]["index"]["result"],
            items[2]["index"]["_version"]) == (200, "updated", 2)
    assert (items[3]["update"]["status"], items[3]["update"]["result"],
            items[3]["update"]["_version"], items[3]["update"]["_seq_no"]) == (
        200, "updated", 3, 3)
    assert (items[4]["update"]["result"], items[4]["update"]["_version"],
            items[4]["update"]["_shards"]) == ("noop", 3, {"total": 0, "successful": 0,
                                                          "failed": 0})
    missing = items[5]["update"]
    assert missing["status"] == 404
    assert missing["error"]["type"] == "document_missing_exception"
    assert missing["error"]["reason"] == "[nope]: document missing"
    assert (items[6]["delete"]["status"], items[6]["delete"]["result"],
            items[6]["delete"]["_version"]) == (200, "deleted", 4)
    assert (items[7]["delete"]["status"], items[7]["delete"]["result"]) == (404, "not_found")
    assert "error" not in items[7]["delete"]
    assert srv.get_doc("t", "1") is None
    assert srv.doc_count("t") == 1
    # a delete of a missing doc alone is not an error
    resp = es.bulk(operations=[{"delete": {"_index": "t", "_id": "zzz"}}])
    assert resp["errors"] is False


def test_bulk_requires_trailing_newline_and_valid_actions(srv: ESTestServer) -> None:
    hdr = {"Content-Type": "application/x-ndjson"}
    status, _, body = raw(srv, "POST", "/_bulk",
                          body=b'{"index":{"_index":"a"}}\n{"x":1}', headers=hdr)
    assert status == 400
    assert orjson.loads(body)["error"] == {
        "root_cause": [{"type": "illegal_argument_exception",
                        "reason": "The bulk request must be terminated by a newline [\\n]"}],
        "type": "illegal_argument_exception",
        "reason": "The bulk request must be terminated by a newline [\\n]"}
    status, _, body = raw(srv, "POST", "/_bulk", body=b'{"upsert":{"_index":"a"}}\n{}\n',
                          headers=hdr)
    assert status == 400
    assert orjson.loads(body)["error"]["reason"] == (
        "Malformed action/metadata line [1], expected field [create], [delete], [index] or "
        "[update] but found [upsert]")
    assert srv.index_names() == []
    status, _, body = raw(srv, "POST", "/dflt/_bulk", body=b'{"create":{}}\n{"x":1}\n',
                          headers=hdr)
    assert status == 200
    assert orjson.loads(body)["items"][0]["create"]["_index"] == "dflt"


def test_single_document_apis(srv: ESTestServer, es: Elasticsearch) -> None:
    r = es.index(index="docs", id="a", document={"user": {"name": "alice"}, "n": 1})
    assert (r["result"], r["_version"]) == ("created", 1)
    r = es.update(index="docs", id="a", doc={"user": {"role": "admin"}})
    assert (r["result"], r["_version"]) == ("updated", 2)
    got = es.get(index="docs", id="a")
    assert got["_source"] == {"user": {"name": "alice", "role": "admin"}, "n": 1}
    assert (got["found"], got["_version"], got["_seq_no"]) == (True, 2, 1)
    with pytest.raises(ConflictError) as ei:
        es.create(index="docs", id="a", document={"n": 2})
    assert ei.value.body["error"]["reason"] == (
        "[a]: version conflict, document already exists (current version [2])")
    with pytest.raises(NotFoundError):
        es.get(index="docs", id="missing")
    assert es.delete(index="docs", id="a")["result"] == "deleted"
    assert es.exists(index="docs", id="a").body is False
    with pytest.raises(NotFoundError) as ei2:
        es.get(index="nosuchindex", id="a")
    assert ei2.value.body["error"]["type"] == "index_not_found_exception"
    assert es.indices.exists(index="docs").body is True
    with pytest.raises(BadRequestError) as ei3:
        es.indices.create(index="docs")
    assert ei3.value.error == "resource_already_exists_exception"


# ============================================================================ templates & DS
def _ds_template(es: Elasticsearch, name: str = "audit-tpl", pattern: str = "audit-*",
                 priority: int = 200, **mappings: Any) -> None:
    es.indices.put_index_template(
        name=name, index_patterns=[pattern], priority=priority, data_stream={},
        template={"settings": {"number_of_replicas": 0},
                  "mappings": mappings or {"properties": {
                      "@timestamp": {"type": "date"}, "host": {"properties": {
                          "name": {"type": "keyword"}}}, "seq": {"type": "long"}}}})


def test_data_stream_only_create_and_backing_index(srv: ESTestServer, es: Elasticsearch) -> None:
    _ds_template(es)
    day = datetime.datetime.now(datetime.UTC).strftime("%Y.%m.%d")
    backing = f".ds-audit-default-{day}-000001"
    resp = es.bulk(operations=[
        {"index": {"_index": "audit-default"}}, {"@timestamp": TS, "seq": 1},
        {"create": {"_index": "audit-default", "_id": "e1"}}, {"@timestamp": TS, "seq": 2},
        {"create": {"_index": "audit-default"}}, {"seq": 3},
    ])
    i0, i1, i2 = (it[next(iter(it))] for it in resp["items"])
    assert (i0["status"], i0["error"]) == (400, {
        "type": "illegal_argument_exception",
        "reason": "only write ops with an op_type of create are allowed in data streams"})
    assert (i1["status"], i1["_index"], i1["_id"], i1["_shards"]["total"]) == (
        201, backing, "e1", 1)
    assert i2["status"] == 400
    assert i2["error"]["type"] == "document_parsing_exception"
    assert i2["error"]["caused_by"]["reason"] == "data stream timestamp field [@timestamp] is " \
        "missing"
    ds = es.indices.get_data_stream(name="audit-default")["data_streams"][0]
    assert (ds["name"], ds["template"], ds["generation"], ds["status"]) == (
        "audit-default", "audit-tpl", 1, "GREEN")
    assert [i["index_name"] for i in ds["indices"]] == [backing]
    assert ds["timestamp_field"] == {"name": "@timestamp"}
    assert srv.backing_indices("audit-default") == [backing]
    assert srv.get_doc("audit-default", "e1") == {"@timestamp": TS, "seq": 2}
    hits = es.search(index="audit-*")["hits"]["hits"]
    assert [(h["_index"], h["_id"]) for h in hits] == [(backing, "e1")]
    mapping = es.indices.get_mapping(index="audit-default")[backing]["mappings"]
    assert mapping["properties"]["host"] == {"properties": {"name": {"type": "keyword"}}}
    # tamper with the stored document through the backing index (update API)
    r = es.update(index=backing, id="e1", doc={"seq": 99})
    assert r["result"] == "updated"
    assert srv.get_doc("audit-default", "e1") == {"@timestamp": TS, "seq": 99}
    with pytest.raises(BadRequestError) as ei:
        es.update(index="audit-default", id="e1", doc={"seq": 98})
    assert ei.value.message == "illegal_argument_exception"
    # PUT /_data_stream and duplicate
    with pytest.raises(BadRequestError) as ei2:
        es.indices.create_data_stream(name="audit-default")
    assert ei2.value.body["error"]["reason"] == "data_stream [audit-default] already exists"
    with pytest.raises(BadRequestError) as ei3:
        es.indices.create_data_stream(name="nomatch")
    assert ei3.value.body["error"]["reason"] == (
        "no matching index template found for data stream [nomatch]")
    assert es.indices.create_data_stream(name="audit-other")["acknowledged"] is True
    assert srv.data_stream_names() == ["audit-default", "audit-other"]
    es.indices.delete_data_stream(name="audit-other")
    assert srv.data_stream_names() == ["audit-default"]


def test_template_priority_conflicts(srv: ESTestServer, es: Elasticsearch) -> None:
    with pytest.raises(BadRequestError) as ei:
        es.indices.put_index_template(name="mine", index_patterns=["logs-audit-*"],
                                      priority=100, data_stream={})
    assert ei.value.body["error"]["type"] == "illegal_argument_exception"
    assert ei.value.body["error"]["reason"] == (
        "index template [mine] has index patterns [logs-audit-*] matching patterns from "
        "existing templates [logs] with patterns (logs => [logs-*-*]) that have the same "
        "priority [100], multiple index templates may not match during index creation, "
        "please use a different priority")
    es.indices.put_index_template(name="mine", index_patterns=["logs-audit-*"], priority=101,
                                  data_stream={})
    es.indices.put_index_template(name="a", index_patterns=["foo-*"])
    with pytest.raises(BadRequestError):
        es.indices.put_index_template(name="b", index_patterns=["*-bar"])
    es.indices.put_index_template(name="c", index_patterns=["baz-*"])  # no overlap with foo-*
    assert es.indices.exists_index_template(name="mine").body is True
    got = es.indices.get_index_template(name="mine")["index_templates"]
    assert got == [{"name": "mine", "index_template": {
        "index_patterns": ["logs-audit-*"], "composed_of": [], "priority": 101,
        "data_stream": {"hidden": False, "allow_custom_routing": False}}}]
    es.indices.delete_index_template(name="mine")
    assert es.indices.exists_index_template(name="mine").body is False
    with pytest.raises(NotFoundError):
        es.indices.get_index_template(name="mine")
    # the built-in logs template creates data streams for logs-*-*
    resp = es.bulk(operations=[{"create": {"_index": "logs-app-default"}}, {"@timestamp": TS}])
    assert resp["items"][0]["create"]["_index"].startswith(".ds-logs-app-default-")
    assert srv.data_stream_names() == ["logs-app-default"]


def test_ilm_and_index_management(srv: ESTestServer, es: Elasticsearch) -> None:
    policy = {"phases": {"hot": {"actions": {"rollover": {"max_age": "1d"}}}}}
    assert es.ilm.put_lifecycle(name="p1", policy=policy)["acknowledged"] is True
    got = es.ilm.get_lifecycle(name="p1")["p1"]
    assert (got["version"], got["policy"]) == (1, policy)
    es.ilm.put_lifecycle(name="p1", policy=policy)
    assert es.ilm.get_lifecycle(name="p1")["p1"]["version"] == 2
    es.ilm.delete_lifecycle(name="p1")
    with pytest.raises(NotFoundError):
        es.ilm.get_lifecycle(name="p1")
    es.indices.create(index="plain", mappings={"properties": {"k": {"type": "keyword"}}})
    assert es.indices.get_mapping(index="plain")["plain"]["mappings"] == {
        "properties": {"k": {"type": "keyword"}}}
    assert es.cluster.health()["status"] == "green"
    es.indices.delete(index="plain")
    assert srv.index_names() == []


# ============================================================================ mapping
def test_dynamic_mapping_conflicts(srv: ESTestServer, es: Elasticsearch) -> None:
    resp = es.bulk(operations=[
        {"create": {"_index": "m", "_id": "1"}}, {"host": "web-1", "count": 5, "ok": True},
        {"create": {"_index": "m", "_id": "2"}}, {"host": {"name": "web-2"}},
        {"create": {"_index": "m", "_id": "3"}}, {"count": "many"},
        {"create": {"_index": "m", "_id": "4"}}, {"proc": {"pid": 1}},
        {"create": {"_index": "m", "_id": "5"}}, {"proc": "x", "brand_new": 1},
        {"create": {"_index": "m", "_id": "6"}}, {"count": "42", "ok": "false",
                                                  "when": "2024-01-01T00:00:00Z"},
        {"create": {"_index": "m", "_id": "7"}}, {"when": "yesterday"},
        {"create": {"_index": "m", "_id": "8"}}, {"proc.pid": 2, "proc.name": "sh"},
    ])
    st = [it["create"]["status"] for it in resp["items"]]
    assert st == [201, 400, 400, 201, 400, 201, 400, 201]
    e2 = resp["items"][1]["create"]["error"]
    assert e2 == {"type": "document_parsing_exception",
                  "reason": "[1:9] failed to parse field [host] of type [text] in document "
                  "with id '2'. Preview of field's value: '{name=web-2}'",
                  "caused_by": {"type": "illegal_state_exception",
                                "reason": "Can't get text on a START_OBJECT at 1:9"}}
    e3 = resp["items"][2]["create"]["error"]
    assert e3["reason"] == ("[1:10] failed to parse field [count] of type [long] in document "
                            "with id '3'. Preview of field's value: 'many'")
    assert e3["caused_by"] == {"type": "number_format_exception",
                               "reason": 'For input string: "many"'}
    assert resp["items"][4]["create"]["error"]["reason"] == (
        "[1:9] object mapping for [proc] tried to parse field [proc] as object, but found a "
        "concrete value")
    assert resp["items"][6]["create"]["error"]["caused_by"]["reason"] == (
        "failed to parse date field [yesterday] with format "
        "[strict_date_optional_time||epoch_millis]")
    props = srv.mapping("m")["properties"]
    assert props["count"] == {"type": "long"}
    assert props["ok"] == {"type": "boolean"}
    assert props["when"] == {"type": "date"}
    assert props["proc"] == {"properties": {"name": {
        "type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}},
        "pid": {"type": "long"}}}
    assert "brand_new" not in props  # the failed document's mapping update was rolled back
    # literal dotted keys are searchable with the object path
    hits = es.search(index="m", query={"term": {"proc.pid": 2}})["hits"]["hits"]
    assert [h["_id"] for h in hits] == ["8"]


def test_strict_and_explicit_mappings(srv: ESTestServer, es: Elasticsearch) -> None:
    es.indices.put_index_template(name="strict", index_patterns=["strict-*"], priority=10,
                                  template={"mappings": {"dynamic": "strict", "properties": {
                                      "a": {"type": "keyword"}, "n": {"type": "integer"}}}})
    resp = es.bulk(operations=[
        {"index": {"_index": "strict-1", "_id": "1"}}, {"a": "x", "n": 1},
        {"index": {"_index": "strict-1", "_id": "2"}}, {"a": "x", "extra": 1},
        {"index": {"_index": "strict-1", "_id": "3"}}, {"a": {"b": 1}},
        {"index": {"_index": "strict-1", "_id": "4"}}, {"n": 3000000000},
    ])
    items = [it["index"] for it in resp["items"]]
    assert [i["status"] for i in items] == [201, 400, 400, 400]
    assert items[1]["error"] == {
        "type": "strict_dynamic_mapping_exception",
        "reason": "[1:18] mapping set to strict, dynamic introduction of [extra] within [_doc] "
        "is not allowed"}
    assert items[2]["error"]["reason"].startswith("[1:6] failed to parse field [a] of type "
                                                  "[keyword]")
    assert items[3]["error"]["caused_by"]["reason"] == (
        "Value [3000000000] is out of range for a integer")


# ============================================================================ search
@pytest.fixture
def search_data(srv: ESTestServer, es: Elasticsearch) -> Elasticsearch:
    es.indices.create(index="ev-a", mappings={"properties": {
        "@timestamp": {"type": "date"}, "host": {"properties": {"name": {"type": "keyword"}}},
        "seq": {"type": "long"}, "msg": {"type": "text"}, "score": {"type": "double"}}})
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
    helpers.bulk(es, docs)
    return es


def _ids(resp: Any) -> list[str]:
    return [h["_id"] for h in resp["hits"]["hits"]]


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
    es.bulk(operations=[{"create": {"_index": "s", "_id": "1"}}, {"a": 1}])
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


# ============================================================================ admin API & process
def test_admin_http_api(srv: ESTestServer, es: Elasticsearch) -> None:
    status, _, body = raw(srv, "POST", "/_test/faults", body=orjson.dumps(
        {"kind": "items", "status": 429, "positions": [1]}))
    assert (status, orjson.loads(body)["id"]) == (200, 1)
    resp = es.bulk(operations=[x for i in range(3) for x in (
        {"create": {"_index": "ad", "_id": str(i)}}, {"i": i})])
    assert [it["create"]["status"] for it in resp["items"]] == [201, 429, 201]
    _, _, body = raw(srv, "GET", "/_test/faults")
    assert orjson.loads(body)["faults"][0]["items_hit"] == 1
    _, _, body = raw(srv, "GET", "/_test/stats")
    stats = orjson.loads(body)
    assert (stats["bulk.items.created"], stats["bulk.items.rejected"]) == (2, 1)
    _, _, body = raw(srv, "GET", "/_test/docs/ad/2")
    assert orjson.loads(body) == {"i": 2}
    assert raw(srv, "GET", "/_test/docs/ad/1")[0] == 404
    assert raw(srv, "DELETE", "/_test/faults")[0] == 200
    assert srv.faults.list() == []
    status, _, body = raw(srv, "POST", "/_test/faults", body=b'{"kind": "bogus"}')
    assert status == 400
    assert raw(srv, "POST", "/_test/down", body=b'{"seconds": 0.3}')[0] == 200
    assert srv.wait_until_up(5) is True
    assert raw(srv, "POST", "/_test/reset")[0] == 200
    assert srv.index_names() == []
    assert srv.counter("requests") == 0


def test_standalone_process(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path, major=9)
    try:
        client = Elasticsearch(proc.url, max_retries=0)
        assert client.info()["version"]["number"] == "9.1.0"
        proc.admin.add_fault(kind="status", status=429)
        with pytest.raises(ApiError) as ei:
            client.bulk(operations=[{"create": {"_index": "sp", "_id": "1"}}, {"a": 1}])
        assert ei.value.meta.status == 429
        client.bulk(operations=[{"create": {"_index": "sp", "_id": "1"}}, {"a": 1}])
        assert proc.admin.doc("sp", "1") == {"a": 1}
        assert proc.admin.stats()["bulk.items.created"] == 1
        client.close()
    finally:
        assert proc.stop() == 0


# ============================================================================ concurrency & speed
def test_concurrent_bulks_are_consistent(srv: ESTestServer) -> None:
    client = Elasticsearch(srv.url, max_retries=0, connections_per_node=8)
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            for batch in range(5):
                helpers.bulk(client, ops(100, index="cc", start=w * 1000 + batch * 100))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert srv.doc_count("cc") == 4000
    assert srv.counter("bulk.items.created") == 4000
    idx = srv.cluster.indices["cc"]
    assert sorted(d.seq_no for d in idx.docs.values()) == list(range(4000))
    client.close()


def test_bulk_of_1000_small_docs_is_fast(srv: ESTestServer, es: Elasticsearch) -> None:
    es.bulk(operations=[{"create": {"_index": "speed", "_id": "warm"}}, {"@timestamp": TS,
                                                                          "seq": 0}])
    body = b"".join(
        orjson.dumps({"create": {"_index": "speed"}}) + b"\n"
        + orjson.dumps({"@timestamp": TS, "seq": i, "host": {"name": "h"}}) + b"\n"
        for i in range(1000))
    status, _, out = raw(srv, "POST", "/_bulk", body=body,
                         headers={"Content-Type": "application/x-ndjson"})
    resp = orjson.loads(out)
    assert (status, resp["errors"], len(resp["items"])) == (200, False, 1000)
    assert resp["took"] < 100
    assert srv.doc_count("speed") == 1001
