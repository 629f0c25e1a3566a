"""Authentication (401 with WWW-Authenticate) and write privileges (per-item 403)."""

from __future__ import annotations

import base64
import http.client
from pathlib import Path

import orjson
import pytest
from elasticsearch import AuthenticationException, Elasticsearch

from tests.esserver import ESTestServer
from tests.esserver.pytest_plugin import ServerProcess
from tests.esserver.security import api_key_header
from tests.esserver.tests.helpers import raw

CHALLENGES_8 = ['Basic realm="security", charset="UTF-8"', 'Bearer realm="security"', "ApiKey"]


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_missing_credentials_get_401_with_challenges(srv: ESTestServer) -> None:
    srv.add_user("elastic", "changeme")
    status, headers, body = raw(srv, "GET", "/_cluster/settings?pretty")
    assert status == 401
    error = orjson.loads(body)
    reason = "missing authentication credentials for REST request [/_cluster/settings?pretty]"
    assert error == {
        "error": {
            "root_cause": [{"type": "security_exception", "reason": reason,
                            "header": {"WWW-Authenticate": CHALLENGES_8}}],
            "type": "security_exception", "reason": reason,
            "header": {"WWW-Authenticate": CHALLENGES_8}},
        "status": 401}
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    conn.request("HEAD", "/")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 401
    assert resp.headers.get_all("WWW-Authenticate") == CHALLENGES_8  # three header lines
    conn.close()
    assert headers["x-elastic-product"] == "Elasticsearch"
    assert raw(srv, "GET", "/_test/stats")[0] == 200  # the admin API needs no credentials
    assert srv.counter("responses.401") == 2


def test_basic_auth_with_the_official_client(srv: ESTestServer) -> None:
    srv.add_user("elastic", "changeme")
    good = Elasticsearch(srv.url, basic_auth=("elastic", "changeme"), max_retries=0)
    assert good.info()["tagline"] == "You Know, for Search"
    bad = Elasticsearch(srv.url, basic_auth=("elastic", "wrong"), max_retries=0)
    with pytest.raises(AuthenticationException) as ei:
        bad.info()
    assert ei.value.meta.status == 401
    assert ei.value.body["error"]["reason"] == (
        "unable to authenticate user [elastic] for REST request [/]")
    assert ei.value.meta.headers["www-authenticate"].startswith('Basic realm="security"')
    unknown = Elasticsearch(srv.url, basic_auth=("mallory", "changeme"), max_retries=0)
    with pytest.raises(AuthenticationException):
        unknown.bulk(operations=[{"create": {"_index": "x", "_id": "1"}}, {"a": 1}])
    assert srv.doc_count("x") == 0  # nothing applied
    for client in (good, bad, unknown):
        client.close()


def test_api_keys(srv: ESTestServer) -> None:
    encoded = srv.add_api_key("k1", "s3cret")
    assert encoded == api_key_header("k1", "s3cret") == base64.b64encode(b"k1:s3cret").decode()
    client = Elasticsearch(srv.url, api_key=encoded, max_retries=0)
    resp = client.bulk(operations=[{"create": {"_index": "x", "_id": "1"}}, {"a": 1}])
    assert resp["errors"] is False
    wrong_key = Elasticsearch(srv.url, api_key=api_key_header("k1", "guess"), max_retries=0)
    with pytest.raises(AuthenticationException) as ei:
        wrong_key.info()
    err = ei.value.body["error"]
    assert err["reason"] == ("unable to authenticate with provided credentials and anonymous "
                             "access is not allowed for this request")
    assert err["additional_unsuccessful_credentials"] == (
        "API key: invalid credentials for API key [k1]")
    unknown = Elasticsearch(srv.url, api_key=("k9", "s3cret"), max_retries=0)
    with pytest.raises(AuthenticationException) as ei2:
        unknown.info()
    assert ei2.value.body["error"]["additional_unsuccessful_credentials"] == (
        "API key: unable to find apikey with id k9")
    status, _, body = raw(srv, "GET", "/", headers={"Authorization": "ApiKey !!notbase64"})
    assert status == 401 and b"invalid ApiKey value" in body
    for c in (client, wrong_key, unknown):
        c.close()


def test_write_privileges_are_checked_per_item(srv: ESTestServer) -> None:
    srv.add_user("writer", "pw", write=["logs-*"], roles=["logs_writer"])
    encoded = srv.add_api_key("k2", "s", owner="collector", write=["audit-*"])
    client = Elasticsearch(srv.url, basic_auth=("writer", "pw"), max_retries=0)
    resp = client.bulk(operations=[
        {"create": {"_index": "logs-app-default", "_id": "1"}}, {"@timestamp": 1},
        {"create": {"_index": "secrets", "_id": "2"}}, {"a": 1},
    ])
    ok, denied = (it["create"] for it in resp["items"])
    assert ok["status"] == 201
    assert denied == {"_index": "secrets", "_id": "2", "status": 403, "error": {
        "type": "security_exception",
        "reason": "action [indices:data/write/bulk[s]] is unauthorized for user [writer] with "
        "effective roles [logs_writer] on indices [secrets], this action is granted by the "
        "index privileges [create_doc,create,delete,index,write,all]"}}
    assert srv.index_names(include_hidden=False) == []  # no index was created for it
    assert srv.counter("bulk.items.forbidden") == 1
    keyed = Elasticsearch(srv.url, api_key=encoded, max_retries=0)
    item = keyed.bulk(operations=[{"create": {"_index": "logs-x-y", "_id": "3"}},
                                  {"@timestamp": 1}])["items"][0]["create"]
    assert item["error"]["reason"].startswith(
        "action [indices:data/write/bulk[s]] is unauthorized for API key id [k2] of user "
        "[collector] with effective roles [writer] on indices [logs-x-y]")
    client.close()
    keyed.close()


def test_standalone_server_with_credentials(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path, extra_args=["--api-key", "k1:s3cret", "--user", "u:pw"])
    try:
        with pytest.raises(AuthenticationException):
            Elasticsearch(proc.url, max_retries=0).info()
        for auth in ({"api_key": ("k1", "s3cret")}, {"basic_auth": ("u", "pw")}):
            client = Elasticsearch(proc.url, max_retries=0, **auth)  # type: ignore[arg-type]
            assert client.info()["tagline"] == "You Know, for Search"
            client.close()
        assert proc.admin.stats()["responses.401"] == 1
    finally:
        assert proc.stop() == 0
