"""Bulk and single-document writes, templates, data streams, ILM and mappings."""

from __future__ import annotations

import datetime
import threading
from typing import Any

import orjson
import pytest
from elasticsearch import BadRequestError, ConflictError, Elasticsearch, NotFoundError, helpers

from tests.esserver import ESTestServer
from tests.esserver.tests.helpers import TS, ops, raw


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


def test_bulk_filter_path_keeps_only_the_named_fields(srv: ESTestServer,
                                                      es: Elasticsearch) -> None:
    """Response filtering as Elasticsearch documents it: `*` matches one key, objects and
    arrays the filter empties are left out (so a fully stored bulk asked only for errors
    answers {"errors": false})."""
    def create(doc_id: str, doc: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"create": {"_index": "f", "_id": doc_id}}, doc]

    stored = es.bulk(operations=create("1", {"n": 1}) + create("2", {"n": 2}),
                     filter_path="errors,items.*.status,items.*.error")
    assert stored.body == {"errors": False,
                           "items": [{"create": {"status": 201}}, {"create": {"status": 201}}]}
    mixed = es.bulk(operations=create("1", {"n": 1}) + create("3", {"n": "x"})
                    + create("4", {"n": 4}),
                    filter_path="errors,items.*.status,items.*.error.type")
    assert mixed.body == {"errors": True, "items": [
        {"create": {"status": 409, "error": {"type": "version_conflict_engine_exception"}}},
        {"create": {"status": 400, "error": {"type": "document_parsing_exception"}}},
        {"create": {"status": 201}}]}
    only_errors = es.bulk(operations=create("5", {"n": 5}), filter_path="errors,items.*.error")
    assert only_errors.body == {"errors": False}
    failed_only = es.bulk(operations=create("5", {"n": 5}) + create("6", {"n": 6}),
                          filter_path="items.*.error.reason")
    assert failed_only.body == {"items": [{"create": {"error": {
        "reason": "[5]: version conflict, document already exists (current version [1])"}}}]}
    assert srv.doc_count("f") == 5  # 1, 2, 4, 5, 6


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
    with pytest.raises(NotFoundError) as ei1:
        es.get(index="docs", id="a")
    assert ei1.value.body == {"_index": "docs", "_id": "a", "found": False}
    with pytest.raises(NotFoundError) as ei2:
        es.get(index="nosuchindex", id="a")
    assert ei2.value.body["error"]["type"] == "index_not_found_exception"
    assert es.options(ignore_status=404).delete(index="docs", id="a")["result"] == "not_found"


# ============================================================================ templates & DS
def _ds_template(es: Elasticsearch, name: str = "audit-tpl", pattern: str = "audit-*",
                 priority: int = 200, settings: dict[str, Any] | None = None,
                 **mappings: Any) -> None:
    es.indices.put_index_template(
        name=name, index_patterns=[pattern], priority=priority, data_stream={},
        template={"settings": {"number_of_replicas": 0, **(settings or {})},
                  "mappings": mappings or {"properties": {
                      "@timestamp": {"type": "date"}, "host": {"properties": {
                          "name": {"type": "keyword"}}}, "seq": {"type": "long"}}}})


def test_data_stream_only_create_and_backing_index(srv: ESTestServer, es: Elasticsearch) -> None:
    _ds_template(es)
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y.%m.%d")
    backing = f".ds-audit-default-{day}-000001"
    resp = es.bulk(operations=[
        {"index": {"_index": "audit-default"}}, {"@timestamp": TS, "seq": 1},
        {"create": {"_index": "audit-default", "_id": "e1"}}, {"@timestamp": TS, "seq": 2},
        {"create": {"_index": "audit-default"}}, {"seq": 3},
    ], refresh="wait_for")
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
    listed = es.indices.get_data_stream()["data_streams"]
    assert [d["name"] for d in listed] == ["audit-default", "audit-other"]
    with pytest.raises(NotFoundError):
        es.indices.get_data_stream(name="audit-none")


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
    got = es.indices.get_index_template(name="mine")["index_templates"]
    assert got == [{"name": "mine", "index_template": {
        "index_patterns": ["logs-audit-*"], "composed_of": [], "priority": 101,
        "data_stream": {"hidden": False, "allow_custom_routing": False}}}]
    with pytest.raises(NotFoundError) as ei2:
        es.indices.get_index_template(name="other")
    assert ei2.value.body["error"]["reason"] == "index template matching [other] not found"
    with pytest.raises(BadRequestError) as ei3:
        es.indices.put_index_template(name="mine", index_patterns=["x-*"], create=True)
    assert ei3.value.body["error"]["reason"] == "index template [mine] already exists"
    # the built-in logs template creates data streams for logs-*-*
    resp = es.bulk(operations=[{"create": {"_index": "logs-app-default"}}, {"@timestamp": TS}])
    assert resp["items"][0]["create"]["_index"].startswith(".ds-logs-app-default-")
    assert srv.data_stream_names() == ["logs-app-default"]


def test_ilm_policy_and_put_mapping(srv: ESTestServer, es: Elasticsearch) -> None:
    policy = {"phases": {"hot": {"actions": {"rollover": {"max_age": "1d"}}}}}
    assert es.ilm.put_lifecycle(name="p1", policy=policy)["acknowledged"] is True
    got = es.ilm.get_lifecycle(name="p1")["p1"]
    assert (got["version"], got["policy"]) == (1, policy)
    es.ilm.put_lifecycle(name="p1", policy=policy)
    assert es.ilm.get_lifecycle(name="p1")["p1"]["version"] == 2
    with pytest.raises(NotFoundError) as ei:
        es.ilm.get_lifecycle(name="p2")
    assert ei.value.body["error"]["reason"] == "Lifecycle policy not found: p2"
    _ds_template(es, "ilm-tpl", "ilm-*", settings={"index.lifecycle.name": "p1"})
    es.indices.create_data_stream(name="ilm-x")
    assert es.ilm.get_lifecycle(name="p1")["p1"]["in_use_by"]["data_streams"] == ["ilm-x"]
    # put mapping on a data stream reaches its backing indices
    es.indices.put_mapping(index="ilm-x", properties={"k": {"type": "keyword"}}, dynamic=False)
    [backing] = srv.backing_indices("ilm-x")
    mapping = es.indices.get_mapping(index="ilm-x")[backing]["mappings"]
    assert (mapping["dynamic"], mapping["properties"]["k"]) == ("false", {"type": "keyword"})
    with pytest.raises(NotFoundError):
        es.indices.put_mapping(index="nope", properties={"k": {"type": "keyword"}})


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
    es.indices.refresh(index="m")
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
    assert sorted(d.seq_no for d in idx.live_docs()) == list(range(4000))
    client.close()


def test_bulk_of_1000_small_docs_is_stored_in_one_request(srv: ESTestServer,
                                                          es: Elasticsearch) -> None:
    # Its speed is bench/ship's to show (no timed unit tests: a busy machine fails them).
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
    assert isinstance(resp["took"], int) and resp["took"] >= 0
    assert srv.doc_count("speed") == 1001
