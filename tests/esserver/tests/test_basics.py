"""Info, headers, compression, routing, the admin API and the standalone process."""

from __future__ import annotations

import gzip
import http.client
from pathlib import Path

import orjson
import pytest
from elasticsearch import ApiError, BadRequestError, Elasticsearch, helpers

from tests.esserver import ESTestServer
from tests.esserver.pytest_plugin import ServerProcess
from tests.esserver.tests.helpers import ops, raw


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
    for path in ("/", "/_index_template/logs", "/_data_stream", "/_ilm/policy/none"):
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == (404 if path.startswith("/_ilm") else 200)
        assert resp.getheader("X-Elastic-Product") == "Elasticsearch"
    conn.close()
    assert srv.counter("connections") == 1
    assert srv.counter("requests") == 4
    assert srv.counter("responses.404") == 1


def test_routes_unknown_paths_and_wrong_methods(srv: ESTestServer) -> None:
    # endpoints nothing calls are not served, like a path Elasticsearch does not know
    for method, path in (("GET", "/_cluster/health"), ("GET", "/_cat/indices"),
                         ("POST", "/logs/_forcemerge"), ("GET", "/_nonsense")):
        status, headers, body = raw(srv, method, path)
        assert (status, orjson.loads(body)) == (400, {
            "error": f"no handler found for uri [{path}] and method [{method}]", "status": 400})
        assert headers["x-elastic-product"] == "Elasticsearch"
    status, headers, body = raw(srv, "GET", "/_bulk")
    assert (status, orjson.loads(body)) == (405, {
        "error": "Incorrect HTTP method for uri [/_bulk] and method [GET], allowed: [POST, PUT]",
        "status": 405})
    assert headers["allow"] == "POST,PUT"
    status, _, body = raw(srv, "PUT", "/logs/_doc")  # an auto-generated id needs POST
    assert orjson.loads(body)["error"].endswith("allowed: [POST]")
    assert [r.endpoint for r in srv.request_log] == ["other", "other", "other", "other", "bulk",
                                                     "doc"]
    assert srv.counter("requests.other") == 4


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
    client.indices.refresh(index="audit")
    assert client.count(index="audit")["count"] == 200
    res = client.search(index="audit", size=100, sort=["seq"])
    assert [h["_source"]["seq"] for h in res["hits"]["hits"]] == list(range(100))
    client.close()
    status, headers, body = raw(srv, "POST", "/audit/_search", body=b'{"size":50}', headers={
        "Content-Type": "application/json", "Accept-Encoding": "gzip"})
    assert (status, headers["content-encoding"]) == (200, "gzip")
    assert len(orjson.loads(gzip.decompress(body))["hits"]["hits"]) == 50


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
