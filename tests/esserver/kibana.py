"""A Kibana-API test server: saved-object import, spaces, status.

Follows Kibana's documented behaviour (and its import code) for what ``setup --kibana``
calls::

    POST /api/saved_objects/_import              POST /s/{space}/api/saved_objects/_import
    GET  /api/saved_objects/{type}/{id}          GET  /s/{space}/api/saved_objects/{type}/{id}
    GET  /api/spaces/space[/{id}]                POST /api/spaces/space
    GET  /api/status

* Import: ``multipart/form-data`` with a ``file`` part whose name ends in ``.ndjson`` (one
  saved object per line; export summary lines are skipped); ``overwrite``,
  ``createNewCopies`` and ``compatibilityMode`` query flags (overwrite and createNewCopies
  exclude each other).  Per-object errors as Kibana reports them: ``unsupported_type``,
  ``missing_references`` (a reference neither in the file nor in the space), ``conflict``
  (the object exists and ``overwrite`` is off); objects without errors are created.  The
  answer is ``{"successCount", "success", "warnings", "successResults"?, "errors"?}``.
  The same type and id twice in a file is a 400.
* ``kbn-xsrf``: any request other than GET/HEAD without it (or ``kbn-version``) gets 400.
* Spaces: ``default`` exists; others are created with :meth:`KibanaTestServer.add_space` or
  ``POST /api/spaces/space``; a request into an unknown space gets 404.
* Security: off until a user or API key is added; then 401 (``WWW-Authenticate: Basic
  realm="kibana"``) for missing or wrong credentials.
* TLS: ``ssl_context`` (a server-side context) serves HTTPS instead of HTTP.
* Faults: :meth:`KibanaTestServer.reject_objects` makes the next imports report per-object
  errors (as when Elasticsearch refuses the write); ``fail_requests``/``delay_responses``/
  ``reset_connections``/``go_down`` as on the Elasticsearch server.

Errors have Kibana's (hapi Boom) shape: ``{"statusCode", "error", "message"}``.
"""

from __future__ import annotations

import argparse
import base64
import copy
import os
import re
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import orjson

from . import httpcore
from .errors import ESError
from .faults import Fault, FaultPlan
from .httpcore import BaseTestServer, Request, Response, Route, Router, run_standalone
from .security import Security

IMPORTABLE = {
    "config": "advancedSettingsApp", "dashboard": "dashboardApp",
    "index-pattern": "indexPatternApp", "lens": "lensApp", "map": "gisApp",
    "query": "discoverApp", "search": "discoverApp", "tag": "tag",
    "visualization": "visualizeApp", "canvas-workpad": "canvasApp",
    "event-annotation-group": "annotationApp", "links": "link",
}
_SPACE_ID_RE = re.compile(r"[a-z0-9_\-]+")
DEFAULT_VERSION = "8.17.0"


class KibanaError(Exception):
    """An error answered in Kibana's ``{"statusCode", "error", "message"}`` shape."""

    def __init__(self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()
                 ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)

    def body(self) -> dict[str, Any]:
        return {"statusCode": self.status, "error": httpcore.REASONS.get(self.status, "Error"),
                "message": self.message}


@dataclass
class Rejection:
    """Objects a fault makes fail on import, and with which error."""

    predicate: Callable[[dict[str, Any]], bool]
    error: dict[str, Any]
    requests: int | None = 1
    used: int = 0
    hits: int = 0


@dataclass
class ImportRecord:
    """What one import request asked for and got (``KibanaTestServer.imports``)."""

    space: str
    overwrite: bool
    create_new_copies: bool
    objects: int
    success_count: int
    errors: list[dict[str, Any]] = field(default_factory=list)


class KibanaTestServer(BaseTestServer):
    """An in-process Kibana-API server for tests (see module docstring)."""

    name = "kibanaserver"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 version: str = DEFAULT_VERSION, request_log_size: int = 2000,
                 max_import_bytes: int = 26_214_400, ssl_context: ssl.SSLContext | None = None
                 ) -> None:
        super().__init__(host, port, request_log_size=request_log_size,
                         max_body_bytes=max_import_bytes, ssl_context=ssl_context)
        self.version = version
        self.uuid = str(uuid.uuid4())
        self.security = Security(int(version.split(".")[0]))
        self.faults = FaultPlan()
        self.imports: list[ImportRecord] = []
        self._lock = threading.RLock()
        self._spaces: dict[str, dict[str, Any]] = {}
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self._rejections: list[Rejection] = []
        self.router = Router(self._routes())
        self.reset()

    # ------------------------------------------------------------------ Python API
    def reset(self) -> None:
        """Only the default space, no objects, no faults, no counters."""
        with self._lock:
            self._spaces = {"default": {"id": "default", "name": "Default",
                                        "description": "This is your default space!",
                                        "color": "#00bfb3", "disabledFeatures": [],
                                        "_reserved": True}}
            self._objects = {"default": {}}
            self._rejections = []
            self.imports = []
        self.faults.clear()
        self.reset_stats()

    def add_space(self, space_id: str, name: str | None = None, **attributes: Any
                  ) -> dict[str, Any]:
        return self._create_space({"id": space_id, "name": name or space_id, **attributes})

    def spaces(self) -> list[str]:
        with self._lock:
            return sorted(self._spaces)

    def objects(self, space: str = "default") -> dict[tuple[str, str], dict[str, Any]]:
        """Stored saved objects of a space by ``(type, id)`` (deep copies)."""
        with self._lock:
            return copy.deepcopy(self._objects.get(space, {}))

    def get_object(self, type_: str, object_id: str, space: str = "default"
                   ) -> dict[str, Any] | None:
        with self._lock:
            found = self._objects.get(space, {}).get((type_, object_id))
            return copy.deepcopy(found) if found is not None else None

    def add_user(self, name: str, password: str) -> None:
        self.security.add_user(name, password)

    def add_api_key(self, key_id: str, key: str) -> str:
        return self.security.add_api_key(key_id, key)

    def reject_objects(self, predicate: Callable[[dict[str, Any]], bool] | None = None, *,
                       types: Iterable[str] | None = None, ids: Iterable[str] | None = None,
                       error: dict[str, Any] | None = None, requests: int | None = 1
                       ) -> Rejection:
        """The next ``requests`` imports fail the objects selected (by ``predicate`` on the
        object, or by ``types``/``ids``) with ``error`` (default: what Kibana reports when
        Elasticsearch refuses the write: ``{"type": "unknown", "message": ...,
        "statusCode": 500}``); other objects import normally."""
        wanted_types = set(types) if types is not None else None
        wanted_ids = set(ids) if ids is not None else None

        def selects(obj: dict[str, Any]) -> bool:
            if wanted_types is not None and obj.get("type") not in wanted_types:
                return False
            if wanted_ids is not None and obj.get("id") not in wanted_ids:
                return False
            return predicate(obj) if predicate is not None else True

        rejection = Rejection(selects, error or {
            "type": "unknown", "statusCode": 500,
            "message": "[es_rejected_execution_exception] rejected execution of coordinating "
                       "operation"}, requests)
        with self._lock:
            self._rejections.append(rejection)
        return rejection

    def fail_requests(self, status: int = 503, *, requests: int | None = 1, skip: int = 0,
                      endpoints: Iterable[str] = ("import",), body: Any = None) -> Fault:
        """Whole-request errors (503 by default: ``Kibana server is not ready yet``)."""
        return self.faults.add(Fault("status", requests=requests, skip=skip,
                                     endpoints=frozenset(endpoints), status=status, body=body))

    def delay_responses(self, seconds: float, *, requests: int | None = 1,
                        endpoints: Iterable[str] = ("import",)) -> Fault:
        return self.faults.add(Fault("delay", requests=requests, seconds=seconds,
                                     endpoints=frozenset(endpoints)))

    def reset_connections(self, *, requests: int | None = 1,
                          endpoints: Iterable[str] = ("import",)) -> Fault:
        return self.faults.add(Fault("reset", requests=requests, endpoints=frozenset(endpoints)))

    # ------------------------------------------------------------------ HTTP
    def _routes(self) -> list[Route]:
        return httpcore.route_table([
            ("POST", "/api/saved_objects/_import", "import", self._import),
            ("GET", "/api/saved_objects/{type}/{id}", "saved_object", self._get_object),
            ("GET", "/api/spaces/space", "spaces", self._list_spaces),
            ("GET", "/api/spaces/space/{id}", "spaces", self._get_space),
            ("POST", "/api/spaces/space", "spaces", self._post_space),
            ("GET", "/api/status", "status", self._status),
        ])

    def handle(self, ex: httpcore.Exchange, req: Request) -> None:
        space, segs = _space_of(req.segs)
        route, path_params, allowed = self.router.match(req.method, segs)
        endpoint = route.endpoint if route else "other"
        record = httpcore.RequestRecord(time.time(), req.method, req.path, endpoint, None,
                               len(req.body), None)
        self._count("requests", f"requests.{endpoint}")
        ex.begin(record)
        req.path_params = path_params
        fault = self.faults.take_request_fault(endpoint)
        if fault is not None:
            record.fault = fault.kind
            self._count(f"faults.{fault.kind}")
            if fault.kind == "reset":
                ex.reset()
                return
            if fault.kind == "down":
                self._up_event.clear()
                ex.reset()
                self.go_down(fault.seconds if fault.seconds > 0 else None)
                return
            if fault.kind == "status":
                ex.send(self._fault_response(fault))
                return
        try:
            resp = self._respond(req, route, allowed, space)
        except KibanaError as e:
            resp = self._json(e.status, e.body(), e.headers)
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.seconds)
        ex.send(resp, head=req.method == "HEAD")

    def _respond(self, req: Request, route: Route | None, allowed: list[str], space: str
                 ) -> Response:
        if req.size > self.max_body_bytes:
            raise KibanaError(413, "Payload content length greater than maximum allowed: "
                                   f"{self.max_body_bytes}")
        self._authenticate(req)
        if req.method not in ("GET", "HEAD") and not (req.header("kbn-xsrf")
                                                     or req.header("kbn-version")):
            raise KibanaError(400, "Request must contain a kbn-xsrf header.")
        if route is None:
            if allowed:
                raise KibanaError(405, "Method Not Allowed")
            raise KibanaError(404, "Not Found")
        with self._lock:
            if space not in self._spaces:
                raise KibanaError(404, f"Saved object [space/{space}] not found")
        status, payload = route.handler(req, space)
        return self._json(status, payload)

    def _authenticate(self, req: Request) -> None:
        try:
            self.security.authenticate(req.header("Authorization"), req.path)
        except ESError as e:
            reason = str(e.err.get("reason", ""))
            message = "Unauthorized" if reason.startswith("missing authentication") else (
                f"[security_exception\n\tRoot causes:\n\t\tsecurity_exception: {reason}]: "
                f"{reason}")
            raise KibanaError(401, message.replace(f"[{req.path}]",
                                                   "[/_security/_authenticate]"),
                              [("WWW-Authenticate", 'Basic realm="kibana"')]) from None

    def _json(self, status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()
              ) -> Response:
        return httpcore.json_response(status, payload, "application/json; charset=utf-8",
                             [("kbn-name", "kibana"), *headers])

    def _fault_response(self, fault: Fault) -> Response:
        if fault.body is not None:
            if isinstance(fault.body, str):
                return Response(fault.status, fault.body.encode(), "text/plain; charset=utf-8")
            return self._json(fault.status, fault.body)
        message = ("Kibana server is not ready yet" if fault.status == 503 else
                   f"injected failure with status [{fault.status}]")
        return self._json(fault.status, KibanaError(fault.status, message).body())

    # ------------------------------------------------------------------ spaces and status
    def _list_spaces(self, req: Request, space: str) -> tuple[int, Any]:
        with self._lock:
            return 200, [_public_space(s) for s in self._spaces.values()]

    def _get_space(self, req: Request, space: str) -> tuple[int, Any]:
        space_id = req.path_params["id"]
        with self._lock:
            found = self._spaces.get(space_id)
        if found is None:
            raise KibanaError(404, f"Saved object [space/{space_id}] not found")
        return 200, _public_space(found)

    def _post_space(self, req: Request, space: str) -> tuple[int, Any]:
        try:
            body = orjson.loads(req.body or b"null")
        except orjson.JSONDecodeError as e:
            raise KibanaError(400, f"Invalid request payload JSON format: {e}") from None
        if not isinstance(body, dict):
            raise KibanaError(400, "[request body]: expected a plain object value, but found "
                                   f"[{type(body).__name__}] instead.")
        return 200, self._create_space(body)

    def _create_space(self, body: dict[str, Any]) -> dict[str, Any]:
        space_id, name = body.get("id"), body.get("name")
        if not isinstance(space_id, str) or not _SPACE_ID_RE.fullmatch(space_id):
            raise KibanaError(400, "[request body.id]: must be lower case, a-z, 0-9, '_', and "
                                   "'-' are allowed")
        if not isinstance(name, str) or not name:
            raise KibanaError(400, "[request body.name]: expected value of type [string] but "
                                   f"got [{_js_type(name)}]")
        space = {"id": space_id, "name": name, "disabledFeatures": [],
                 **{k: v for k, v in body.items() if k not in ("id", "name")}}
        with self._lock:
            if space_id in self._spaces:
                raise KibanaError(409, f"A space with the identifier {space_id} already "
                                       "exists.")
            self._spaces[space_id] = space
            self._objects[space_id] = {}
        return _public_space(space)

    def _status(self, req: Request, space: str) -> tuple[int, Any]:
        available = {"level": "available", "summary": "All services and plugins are available"}
        return 200, {
            "name": "kibana", "uuid": self.uuid,
            "version": {"number": self.version, "build_hash": "0" * 40, "build_number": 80000,
                        "build_snapshot": False, "build_flavor": "traditional",
                        "build_date": "2024-12-10T10:00:00.000Z"},
            "status": {"overall": available, "core": {
                "elasticsearch": {"level": "available", "summary": "Elasticsearch is available"},
                "savedObjects": {"level": "available",
                                 "summary": "SavedObjects service has completed migrations "
                                            "and is available"}},
                "plugins": {}},
            "metrics": {"last_updated": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                        "collection_interval_in_millis": 5000},
        }

    # ------------------------------------------------------------------ saved objects
    def _get_object(self, req: Request, space: str) -> tuple[int, Any]:
        type_, object_id = req.path_params["type"], req.path_params["id"]
        with self._lock:
            found = self._objects[space].get((type_, object_id))
        if found is None:
            raise KibanaError(404, f"Saved object [{type_}/{object_id}] not found")
        return 200, copy.deepcopy(found)

    def _import(self, req: Request, space: str) -> tuple[int, Any]:
        flags = _import_flags(req.params)
        overwrite, new_copies = flags["overwrite"], flags["createNewCopies"]
        objects = _read_import_file(req)
        with self._lock:
            result = self._import_objects(objects, space, overwrite, new_copies)
        self.imports.append(ImportRecord(space, overwrite, new_copies, len(objects),
                                         result["successCount"], result.get("errors", [])))
        return 200, result

    def _import_objects(self, objects: list[dict[str, Any]], space: str, overwrite: bool,
                        new_copies: bool) -> dict[str, Any]:
        keys = [f"{o.get('type')}:{o.get('id')}" for o in objects]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise KibanaError(400, f"Non-unique import objects detected: [{','.join(repeated)}]")
        stored = self._objects[space]
        errors: list[dict[str, Any]] = []
        failed: set[tuple[str, str]] = set()

        def fail(obj: dict[str, Any], error: dict[str, Any]) -> None:
            failed.add((obj["type"], obj["id"]))
            errors.append({"id": obj["id"], "type": obj["type"],
                           "meta": {"title": _title(obj)}, "error": error})

        importable = []
        for obj in objects:
            if obj["type"] in IMPORTABLE:
                importable.append(obj)
            else:
                fail(obj, {"type": "unsupported_type"})
        in_file = {(o["type"], o["id"]) for o in importable}
        for obj in importable:
            missing = [{"type": ref.get("type"), "id": ref.get("id")}
                       for ref in obj.get("references") or []
                       if (ref.get("type"), ref.get("id")) not in in_file
                       and (ref.get("type"), ref.get("id")) not in stored]
            if missing:
                fail(obj, {"type": "missing_references", "references": missing})
        new_ids = {(o["type"], o["id"]): str(uuid.uuid4()) for o in importable} \
            if new_copies else {}
        pending_overwrite: set[tuple[str, str]] = set()
        if not new_copies:  # one object may get both a reference and a conflict error
            for obj in importable:
                key = (obj["type"], obj["id"])
                if key in stored:
                    if overwrite:
                        pending_overwrite.add(key)
                    else:
                        fail(obj, {"type": "conflict"})
        created = []
        for obj in importable:
            key = (obj["type"], obj["id"])
            if key in failed:
                continue
            rejection = self._rejection_for(obj)
            if rejection is not None:
                fail(obj, dict(rejection.error))
                continue
            created.append(obj)
            dest = new_ids.get(key)
            stored[(obj["type"], dest or obj["id"])] = _stored(obj, space, dest, new_ids)
        for rejection in self._rejections:  # each import request uses each rejection once
            rejection.used += 1
        self._rejections = [r for r in self._rejections
                            if r.requests is None or r.used < r.requests]
        results = []
        for obj in created:
            key = (obj["type"], obj["id"])
            result: dict[str, Any] = {"type": obj["type"], "id": obj["id"], "meta": {
                "title": _title(obj), "icon": IMPORTABLE[obj["type"]]}}
            if key in pending_overwrite:
                result["overwrite"] = True
            if key in new_ids:
                result["destinationId"] = new_ids[key]
            results.append(result)
        out: dict[str, Any] = {"successCount": len(created), "success": not errors,
                               "warnings": []}
        if results:
            out["successResults"] = results
        if errors:
            out["errors"] = [{**e, "meta": {**e["meta"], "icon": IMPORTABLE.get(e["type"])},
                              **({"overwrite": True} if (e["type"], e["id"]) in
                                 pending_overwrite else {})} for e in errors]
        return out

    def _rejection_for(self, obj: dict[str, Any]) -> Rejection | None:
        for rejection in self._rejections:
            if rejection.predicate(obj):
                rejection.hits += 1
                return rejection
        return None


# ============================================================================ helpers
def _space_of(segs: list[str]) -> tuple[str, list[str]]:
    """``/s/<space>/api/...`` -> (space, segments without the prefix)."""
    if len(segs) >= 2 and segs[0] == "s":
        return segs[1], segs[2:]
    return "default", segs


def _public_space(space: dict[str, Any]) -> dict[str, Any]:
    return dict(space)


def _js_type(value: Any) -> str:
    if value is None:
        return "undefined"
    return {str: "string", bool: "boolean", int: "number", float: "number", list: "Array"}.get(
        type(value), "Object")


def _import_flags(params: dict[str, str]) -> dict[str, bool]:
    flags = {}
    for name in ("overwrite", "createNewCopies", "compatibilityMode"):
        value = params.get(name, "false")
        if value not in ("true", "false"):
            raise KibanaError(400, f"[request query.{name}]: expected value of type [boolean] "
                                   f"but got [string]")
        flags[name] = value == "true"
    if flags["overwrite"] and flags["createNewCopies"]:
        raise KibanaError(400, "[request query]: cannot use [overwrite] with [createNewCopies]")
    if flags["createNewCopies"] and flags["compatibilityMode"]:
        raise KibanaError(400, "[request query]: cannot use [createNewCopies] with "
                               "[compatibilityMode]")
    return flags


def _read_import_file(req: Request) -> list[dict[str, Any]]:
    ctype = req.header("Content-Type") or ""
    if not ctype.lower().startswith("multipart/form-data"):
        raise KibanaError(415, "Unsupported Media Type")
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + req.body)
    file_part: Message | None = None
    for part in message.iter_parts() if message.is_multipart() else []:
        if part.get_param("name", header="content-disposition") == "file":
            file_part = part
    if file_part is None:
        raise KibanaError(400, "[request body.file]: expected value of type [Stream] but got "
                               "[undefined]")
    filename = file_part.get_filename() or ""
    extension = os.path.splitext(filename)[1].lower()
    if extension != ".ndjson":
        raise KibanaError(400, f"Invalid file extension {extension}")
    payload = file_part.get_payload(decode=True) or b""
    objects: list[dict[str, Any]] = []
    for number, line in enumerate(payload.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise KibanaError(400, f"Unexpected token in JSON at line {number}: {e}") from None
        if not isinstance(obj, dict):
            raise KibanaError(400, f"Line {number} is not a JSON object")
        if "exportedCount" in obj and "type" not in obj:
            continue  # the export summary line
        if not isinstance(obj.get("type"), str) or not isinstance(obj.get("id"), str):
            raise KibanaError(400, f"Line {number}: a saved object needs [type] and [id]")
        objects.append(obj)
    return objects


def _title(obj: dict[str, Any]) -> Any:
    attributes = obj.get("attributes")
    return attributes.get("title") if isinstance(attributes, dict) else None


def _stored(obj: dict[str, Any], space: str, dest: str | None,
            new_ids: dict[tuple[str, str], str]) -> dict[str, Any]:
    references = [dict(ref, id=new_ids.get((ref.get("type"), ref.get("id")), ref.get("id")))
                  for ref in obj.get("references") or []]
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    return {"id": dest or obj["id"], "type": obj["type"],
            "namespaces": [space], "updated_at": now, "created_at": now,
            "version": base64.b64encode(os.urandom(6)).decode(),
            "attributes": copy.deepcopy(obj.get("attributes") or {}),
            "references": references, "managed": bool(obj.get("managed", False)),
            "coreMigrationVersion": obj.get("coreMigrationVersion", "8.8.0"),
            **({"typeMigrationVersion": obj["typeMigrationVersion"]}
               if "typeMigrationVersion" in obj else {}),
            **({"originId": obj["id"]} if dest else {})}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.esserver.kibana",
                                 description="Kibana-API test server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5601, help="0 = pick a free port")
    ap.add_argument("--version", default=DEFAULT_VERSION)
    ap.add_argument("--space", action="append", default=[], help="create this space too")
    ap.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD")
    ap.add_argument("--port-file", default=None)
    args = ap.parse_args(argv)
    srv = KibanaTestServer(args.host, args.port, version=args.version)
    for space in args.space:
        srv.add_space(space)
    for pair in args.user:
        name, _, password = pair.partition(":")
        srv.add_user(name, password)
    return run_standalone(srv, args.port_file, f"kibana {args.version}")


if __name__ == "__main__":
    sys.exit(main())
