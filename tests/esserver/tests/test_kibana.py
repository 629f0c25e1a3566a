"""The Kibana-API test server: saved-object import, kbn-xsrf, spaces, auth, status, faults.
Driven with plain urllib, as a client without a Kibana library would."""

from __future__ import annotations

import base64
import socket
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.esserver.kibana import KibanaTestServer
from tests.esserver.pytest_plugin import ServerProcess

PATTERN = {"type": "index-pattern", "id": "audit", "attributes": {
    "title": "logs-audit_collector-*", "timeFieldName": "@timestamp"}, "references": []}
SEARCH = {"type": "search", "id": "execs", "attributes": {"title": "Executions"},
          "references": [{"name": "kibanaSavedObjectMeta.searchSourceJSON.index",
                          "type": "index-pattern", "id": "audit"}]}
DASHBOARD = {"type": "dashboard", "id": "overview", "attributes": {"title": "Overview"},
             "references": [{"name": "panel_0", "type": "search", "id": "execs"}]}


@pytest.fixture
def kbn(kibana_server: KibanaTestServer) -> KibanaTestServer:
    return kibana_server  # the pytest plugin's fixture


def ndjson(*objects: dict[str, Any]) -> bytes:
    lines = [orjson.dumps(o) for o in objects]
    lines.append(orjson.dumps({"excludedObjects": [], "excludedObjectsCount": 0,
                               "exportedCount": len(objects), "missingRefCount": 0,
                               "missingReferences": []}))
    return b"\n".join(lines) + b"\n"


def call(kbn: KibanaTestServer, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(kbn.url + path, data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), orjson.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        data = e.read()
        return e.code, dict(e.headers), orjson.loads(data) if data else None


def import_file(kbn: KibanaTestServer, payload: bytes, query: str = "", space: str = "",
                filename: str = "objects.ndjson", xsrf: bool = True,
                auth: str | None = None) -> tuple[int, dict[str, str], Any]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{filename}\"\r\nContent-Type: application/ndjson\r\n\r\n").encode() \
        + payload + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    if xsrf:
        headers["kbn-xsrf"] = "true"
    if auth:
        headers["Authorization"] = auth
    prefix = f"/s/{space}" if space else ""
    return call(kbn, "POST", f"{prefix}/api/saved_objects/_import{query}", body, headers)


def test_import_creates_objects_and_reports_them(kbn: KibanaTestServer) -> None:
    status, headers, body = import_file(kbn, ndjson(PATTERN, SEARCH, DASHBOARD))
    assert status == 200
    assert body == {"successCount": 3, "success": True, "warnings": [], "successResults": [
        {"type": "index-pattern", "id": "audit",
         "meta": {"title": "logs-audit_collector-*", "icon": "indexPatternApp"}},
        {"type": "search", "id": "execs", "meta": {"title": "Executions", "icon": "discoverApp"}},
        {"type": "dashboard", "id": "overview",
         "meta": {"title": "Overview", "icon": "dashboardApp"}}]}
    assert headers["kbn-name"] == "kibana"
    stored = kbn.get_object("search", "execs")
    assert stored is not None and stored["attributes"] == {"title": "Executions"}
    assert stored["references"] == SEARCH["references"] and stored["namespaces"] == ["default"]
    assert sorted(kbn.objects()) == [("dashboard", "overview"), ("index-pattern", "audit"),
                                     ("search", "execs")]
    status, _, got = call(kbn, "GET", "/api/saved_objects/dashboard/overview")
    assert (status, got["attributes"]["title"]) == (200, "Overview")
    assert kbn.imports[-1].objects == 3 and kbn.imports[-1].success_count == 3


def test_conflicts_then_overwrite_then_new_copies(kbn: KibanaTestServer) -> None:
    import_file(kbn, ndjson(PATTERN, SEARCH))
    changed = dict(SEARCH, attributes={"title": "Executions v2"})
    status, _, body = import_file(kbn, ndjson(PATTERN, changed))
    assert status == 200 and body["success"] is False and body["successCount"] == 0
    assert body["errors"] == [
        {"id": "audit", "type": "index-pattern", "meta": {"title": "logs-audit_collector-*",
                                                          "icon": "indexPatternApp"},
         "error": {"type": "conflict"}},
        {"id": "execs", "type": "search", "meta": {"title": "Executions v2",
                                                   "icon": "discoverApp"},
         "error": {"type": "conflict"}}]
    assert "successResults" not in body
    assert kbn.get_object("search", "execs")["attributes"]["title"] == "Executions"
    status, _, body = import_file(kbn, ndjson(PATTERN, changed), "?overwrite=true")
    assert body["success"] is True and body["successCount"] == 2
    assert [r["overwrite"] for r in body["successResults"]] == [True, True]
    assert kbn.get_object("search", "execs")["attributes"]["title"] == "Executions v2"
    status, _, body = import_file(kbn, ndjson(PATTERN, SEARCH), "?createNewCopies=true")
    assert body["success"] is True
    new_pattern, new_search = (r["destinationId"] for r in body["successResults"])
    copy = kbn.get_object("search", new_search)
    assert copy is not None and copy["references"][0]["id"] == new_pattern  # re-pointed
    status, _, body = import_file(kbn, ndjson(PATTERN), "?overwrite=true&createNewCopies=true")
    assert (status, body) == (400, {"statusCode": 400, "error": "Bad Request", "message":
                                    "[request query]: cannot use [overwrite] with "
                                    "[createNewCopies]"})


def test_missing_references_and_unsupported_types(kbn: KibanaTestServer) -> None:
    strange = {"type": "no-such-type", "id": "x", "attributes": {"title": "X"}}
    status, _, body = import_file(kbn, ndjson(DASHBOARD, PATTERN, strange))
    assert status == 200 and body["success"] is False and body["successCount"] == 1
    assert body["errors"] == [
        {"id": "x", "type": "no-such-type", "meta": {"title": "X", "icon": None},
         "error": {"type": "unsupported_type"}},
        {"id": "overview", "type": "dashboard", "meta": {"title": "Overview",
                                                         "icon": "dashboardApp"},
         "error": {"type": "missing_references",
                   "references": [{"type": "search", "id": "execs"}]}}]
    assert [r["id"] for r in body["successResults"]] == ["audit"]
    assert kbn.get_object("dashboard", "overview") is None
    # a reference to an object already in the space resolves
    status, _, body = import_file(kbn, ndjson(SEARCH))
    assert body["success"] is True


def test_request_errors(kbn: KibanaTestServer) -> None:
    status, _, body = import_file(kbn, ndjson(PATTERN), xsrf=False)
    assert (status, body) == (400, {"statusCode": 400, "error": "Bad Request",
                                    "message": "Request must contain a kbn-xsrf header."})
    status, _, body = import_file(kbn, ndjson(PATTERN), filename="objects.json")
    assert (status, body["message"]) == (400, "Invalid file extension .json")
    status, _, body = import_file(kbn, ndjson(PATTERN, PATTERN))
    assert (status, body["message"]) == (
        400, "Non-unique import objects detected: [index-pattern:audit]")
    status, _, body = import_file(kbn, b"{not json\n")
    assert status == 400 and body["message"].startswith("Unexpected token in JSON at line 1")
    status, _, body = call(kbn, "POST", "/api/saved_objects/_import", b"{}", {
        "kbn-xsrf": "x", "Content-Type": "application/json"})
    assert (status, body["error"]) == (415, "Unsupported Media Type")
    assert kbn.objects() == {}


def test_spaces(kbn: KibanaTestServer) -> None:
    status, _, body = import_file(kbn, ndjson(PATTERN), space="team-a")
    assert (status, body) == (404, {"statusCode": 404, "error": "Not Found",
                                    "message": "Saved object [space/team-a] not found"})
    status, _, space = call(kbn, "POST", "/api/spaces/space", orjson.dumps(
        {"id": "team-a", "name": "Team A"}), {"kbn-xsrf": "1",
                                              "Content-Type": "application/json"})
    assert (status, space["id"], space["name"]) == (200, "team-a", "Team A")
    status, _, _ = call(kbn, "POST", "/api/spaces/space", orjson.dumps(
        {"id": "team-a", "name": "Again"}), {"kbn-xsrf": "1",
                                             "Content-Type": "application/json"})
    assert status == 409
    status, _, body = call(kbn, "POST", "/api/spaces/space", orjson.dumps(
        {"id": "Bad Id", "name": "x"}), {"kbn-xsrf": "1", "Content-Type": "application/json"})
    assert status == 400 and body["message"].startswith("[request body.id]")
    kbn.add_space("team-b", name="Team B")
    assert kbn.spaces() == ["default", "team-a", "team-b"]
    status, _, body = import_file(kbn, ndjson(PATTERN), space="team-a")
    assert body["success"] is True
    assert ("index-pattern", "audit") in kbn.objects("team-a")
    assert kbn.objects("default") == {}  # spaces do not share objects
    assert kbn.get_object("index-pattern", "audit", "team-a")["namespaces"] == ["team-a"]
    status, _, listed = call(kbn, "GET", "/api/spaces/space")
    assert [s["id"] for s in listed] == ["default", "team-a", "team-b"]
    assert call(kbn, "GET", "/s/team-a/api/saved_objects/index-pattern/audit")[0] == 200
    assert call(kbn, "GET", "/api/spaces/space/none")[0] == 404


def test_auth_and_status(kbn: KibanaTestServer) -> None:
    status, _, body = call(kbn, "GET", "/api/status")
    assert status == 200 and body["version"]["number"] == "8.17.0"
    assert body["status"]["overall"]["level"] == "available"
    kbn.add_user("elastic", "changeme")
    status, headers, body = import_file(kbn, ndjson(PATTERN))
    assert (status, body) == (401, {"statusCode": 401, "error": "Unauthorized",
                                    "message": "Unauthorized"})
    assert headers["WWW-Authenticate"] == 'Basic realm="kibana"'
    wrong = "Basic " + base64.b64encode(b"elastic:wrong").decode()
    status, _, body = import_file(kbn, ndjson(PATTERN), auth=wrong)
    assert status == 401 and "unable to authenticate user [elastic]" in body["message"]
    right = "Basic " + base64.b64encode(b"elastic:changeme").decode()
    assert import_file(kbn, ndjson(PATTERN), auth=right)[2]["success"] is True
    key = kbn.add_api_key("k", "s")
    assert call(kbn, "GET", "/api/status", headers={"Authorization": f"ApiKey {key}"})[0] == 200
    assert call(kbn, "GET", "/api/status")[0] == 401


def test_faults(kbn: KibanaTestServer) -> None:
    kbn.reject_objects(types=["dashboard"])
    status, _, body = import_file(kbn, ndjson(PATTERN, SEARCH, DASHBOARD))
    assert status == 200 and body["success"] is False and body["successCount"] == 2
    assert body["errors"] == [{"id": "overview", "type": "dashboard",
                               "meta": {"title": "Overview", "icon": "dashboardApp"},
                               "error": {"type": "unknown", "statusCode": 500, "message":
                                         "[es_rejected_execution_exception] rejected execution "
                                         "of coordinating operation"}}]
    assert import_file(kbn, ndjson(DASHBOARD))[2]["success"] is True  # used up after one
    kbn.fail_requests(503)
    status, _, body = import_file(kbn, ndjson(PATTERN), "?overwrite=true")
    assert (status, body["message"]) == (503, "Kibana server is not ready yet")
    kbn.go_down(None)
    with pytest.raises(urllib.error.URLError) as ei:
        import_file(kbn, ndjson(PATTERN))
    assert isinstance(ei.value.reason, ConnectionRefusedError)
    kbn.bring_up()
    assert import_file(kbn, ndjson(PATTERN), "?overwrite=true")[0] == 200
    assert kbn.counter("requests.import") == 4 and kbn.counter("responses.503") == 1
    with socket.create_connection((kbn.host, kbn.port), timeout=5):
        pass


def test_standalone_kibana_process(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path, module="tests.esserver.kibana",
                         extra_args=["--space", "ops", "--user", "u:pw"])
    try:
        auth = "Basic " + base64.b64encode(b"u:pw").decode()
        req = urllib.request.Request(proc.url + "/api/spaces/space/ops",
                                     headers={"Authorization": auth})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert orjson.loads(resp.read())["id"] == "ops"
    finally:
        assert proc.stop() == 0
