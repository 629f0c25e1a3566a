"""HTTP front end: an Elasticsearch-API test server with fault injection.

``ESTestServer`` runs a ``ThreadingHTTPServer`` (one thread per connection, HTTP/1.1
keep-alive) in a background thread.  See ``tests/esserver/__init__.py`` for an overview.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fnmatch
import gc
import gzip
import http
import socket
import struct
import sys
import threading
import time
import traceback
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from .cluster import Cluster
from .errors import ESError, error_body, es_error
from .faults import BulkItem, Fault, FaultPlan, fault_from_json

_REASONS = {s.value: s.phrase for s in http.HTTPStatus}
_JSON_TYPES = frozenset({"application/json", "application/x-ndjson",
                         "application/vnd.elasticsearch+json",
                         "application/vnd.elasticsearch+x-ndjson"})


@dataclass
class RequestRecord:
    """One entry of :attr:`ESTestServer.request_log`."""

    time: float
    method: str
    path: str
    endpoint: str
    status: int | None  # None: no response was sent (reset / down)
    bytes_in: int
    fault: str | None
    items: int = 0
    content_encoding: str | None = None


# ============================================================================ media types
def _parse_media(value: str | None) -> tuple[str, dict[str, str]] | None:
    if not value:
        return None
    first = value.split(",")[0].strip()
    parts = [p.strip() for p in first.split(";")]
    params: dict[str, str] = {}
    for p in parts[1:]:
        k, _, v = p.partition("=")
        params[k.strip().lower()] = v.strip()
    return parts[0].lower(), params


def check_media(accept: str | None, ctype: str | None, has_body: bool, major: int) -> int | None:
    """Validate Accept/Content-Type like ``RestCompatibleVersionHelper``.

    Returns the requested compatible-with version (None when unversioned).
    """
    a = _parse_media(accept)
    c = _parse_media(ctype)
    if has_body and (c is None or c[0] not in _JSON_TYPES):
        raise ESError(406, {}, None)  # rendered specially by the caller
    a_ver = _compat_version(a)
    c_ver = _compat_version(c) if has_body else None
    minimum = major - 1

    def fail(reason: str) -> ESError:
        err = {"type": "media_type_header_exception",
               "reason": "Invalid media-type value on headers [Content-Type, Accept]",
               "caused_by": {"type": "status_exception", "reason": reason}}
        return ESError(400, err, [{"type": "media_type_header_exception",
                                   "reason": err["reason"]}])

    av = a_ver if a_ver is not None else major
    if av > major or av < minimum:
        raise fail(f"Accept version must be either version {major} or {minimum}, but found {av}. "
                   f"Accept={accept}")
    if has_body:
        cv = c_ver if c_ver is not None else major
        if cv > major or cv < minimum:
            raise fail(f"Content-Type version must be either version {major} or {minimum}, but "
                       f"found {cv}. Content-Type={ctype}")
        if cv != av:
            raise fail("A compatible version is required on both Content-Type and Accept "
                       "headers if either one has requested a compatible version and the "
                       f"compatible versions must match. Accept={accept}, Content-Type={ctype}")
        if (c_ver is None) != (a_ver is None) and a is not None:
            raise fail("A compatible version is required on both Content-Type and Accept "
                       "headers if either one has requested a compatible version. "
                       f"Accept={accept}, Content-Type={ctype}")
    return a_ver


def _compat_version(media: tuple[str, dict[str, str]] | None) -> int | None:
    if media is None or "vnd.elasticsearch" not in media[0]:
        return None
    v = media[1].get("compatible-with")
    if v is None:
        return None
    try:
        return int(v)
    except ValueError:
        return -1


# ============================================================================ filter_path
_NOTHING = object()


def apply_filter_path(obj: Any, spec: str) -> Any:
    patterns = [p.split(".") for p in spec.split(",") if p and not p.startswith("-")]
    if not patterns:
        return obj

    def expand(pats: list[list[str]], key: str) -> list[list[str]]:
        out: list[list[str]] = []
        for p in pats:
            if not p:
                continue
            if p[0] == "**":
                out.append(p)
                out.extend(expand([p[1:]], key))
            elif fnmatch.fnmatchcase(key, p[0]):
                out.append(p[1:])
        return out

    def walk(node: Any, pats: list[list[str]]) -> Any:
        if any(len(p) == 0 for p in pats):
            return node
        if isinstance(node, list):
            res = [r for r in (walk(x, pats) for x in node) if r is not _NOTHING]
            return res if res else _NOTHING
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                sub = expand(pats, k)
                if sub:
                    r = walk(v, sub)
                    if r is not _NOTHING:
                        out[k] = r
            return out if out else _NOTHING
        return _NOTHING

    r = walk(obj, patterns)
    return {} if r is _NOTHING else r


def endpoint_of(segs: list[str]) -> str:
    if not segs:
        return "info"
    s0 = segs[0]
    tail = segs[1] if len(segs) > 1 else ""
    named = {"_bulk": "bulk", "_search": "search", "_count": "count", "_refresh": "refresh",
             "_index_template": "index_template", "_component_template": "component_template",
             "_data_stream": "data_stream", "_ilm": "ilm", "_cluster": "cluster", "_cat": "cat",
             "_mapping": "mapping", "_settings": "settings", "_nodes": "nodes",
             "_license": "license"}
    if s0 in named:
        return named[s0]
    per_index = {"_bulk": "bulk", "_search": "search", "_count": "count",
                 "_refresh": "refresh", "_doc": "doc", "_create": "doc", "_update": "update",
                 "_mapping": "mapping", "_settings": "settings", "_rollover": "rollover",
                 "_delete_by_query": "delete_by_query"}
    if tail:
        return per_index.get(tail, "other")
    return "index"


# ============================================================================ HTTP plumbing
class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], es: ESTestServer) -> None:
        self.es = es
        super().__init__(addr, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, OSError, ValueError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.es._track(self.connection, True)

    def finish(self) -> None:
        self.server.es._track(self.connection, False)
        with contextlib.suppress(OSError, ValueError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    # ------------------------------------------------------------------ io helpers
    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send(self, status: int, payload: Any, *, ctype: str = "application/json",
              product: bool = True, head: bool = False, extra: dict[str, str] | None = None
              ) -> None:
        if isinstance(payload, bytes):
            data = payload
        elif payload is None:
            data = b""
        else:
            data = orjson.dumps(payload)
        headers = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
        if product:
            headers.append("X-elastic-product: Elasticsearch")
        if data or head:
            headers.append(f"content-type: {ctype}")
        accept_enc = (self.headers.get("Accept-Encoding") or "").lower()
        if (data and not head and self.server.es.gzip_responses and "gzip" in accept_enc
                and len(data) >= 1024):
            data = gzip.compress(data, compresslevel=1)
            headers.append("content-encoding: gzip")
        for k, v in (extra or {}).items():
            headers.append(f"{k}: {v}")
        headers.append(f"content-length: {len(data)}")
        if self.close_connection:
            headers.append("connection: close")
        blob = ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1")
        if not head:
            blob += data
        self._status = status
        self._finalize()
        try:
            self.wfile.write(blob)
        except OSError:
            self.close_connection = True

    def _finalize(self) -> None:
        """Account for the request (before the client can observe the outcome)."""
        record = getattr(self, "_record", None)
        if record is None:
            return
        self._record = None
        es = self.server.es
        record.status = self._status
        if self._status is not None:
            es._count(f"responses.{self._status}")
        es._log(record)

    def _rst(self) -> None:
        """Abort the connection with a TCP RST and no response."""
        self._finalize()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        self.server.es._track(self.connection, False)
        with contextlib.suppress(OSError):
            self.rfile.close()
        with contextlib.suppress(OSError):
            self.connection.close()

    # ------------------------------------------------------------------ request
    def _handle(self, method: str) -> None:
        es = self.server.es
        self._status: int | None = None
        self._record = None
        try:
            body = self._read_body()
        except (OSError, ValueError):
            self.close_connection = True
            return
        url = urlsplit(self.path)
        segs = [unquote(s) for s in url.path.split("/") if s]
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        if segs and segs[0] == "_test":
            self._admin(method, segs[1:], params, body)
            return
        endpoint = endpoint_of(segs)
        record = RequestRecord(time.time(), method, self.path, endpoint, None, len(body), None,
                               content_encoding=self.headers.get("Content-Encoding"))
        es._count("requests", f"requests.{endpoint}")
        self._record: RequestRecord | None = record
        try:
            self._process(method, segs, params, body, endpoint, record)
        finally:
            self._finalize()

    def _process(self, method: str, segs: list[str], params: dict[str, str], body: bytes,
                 endpoint: str, record: RequestRecord) -> None:
        es = self.server.es
        head = method == "HEAD"
        enc = (self.headers.get("Content-Encoding") or "").lower()
        if body and enc in ("gzip", "x-gzip", "deflate"):
            try:
                body = gzip.decompress(body) if "gzip" in enc else zlib.decompress(body)
            except (OSError, zlib.error, EOFError):
                self._send(400, error_body(400, {"type": "illegal_argument_exception",
                                                 "reason": "failed to decompress request body"}))
                return
        ctype = self.headers.get("Content-Type")
        accept = self.headers.get("Accept")
        try:
            compat = check_media(accept, ctype, bool(body), es.major)
        except ESError as e:
            if e.status == 406:
                self._send(406, {"error": f"Content-Type header [{ctype or ''}] is not "
                                          "supported", "status": 406})
            else:
                self._send(e.status, e.body())
            return
        resp_type = (f"application/vnd.elasticsearch+json;compatible-with={compat}"
                     if compat is not None else "application/json")

        fault = es.faults.take_request_fault(endpoint)
        if fault is not None:
            record.fault = fault.kind
            es._count(f"faults.{fault.kind}")
            if fault.kind == "status":
                self._send_fault_status(fault, resp_type)
                return
            if fault.kind == "reset" and fault.when == "before":
                es._count("faults.reset.before")
                self._rst()
                return
            if fault.kind == "down":
                es._up_event.clear()  # is_down/wait_until_up see it before the client does
                self._rst()
                es.go_down(fault.seconds if fault.seconds > 0 else None)
                return
        item_faults = es.faults.take_item_faults(endpoint) if endpoint == "bulk" else []
        for f in item_faults:
            es._count(f"faults.{f.kind}")
        try:
            status, payload = self._dispatch(method, segs, params, body, item_faults, record)
        except ESError as e:
            status, payload = e.status, e.body()
        except orjson.JSONDecodeError as e:
            status, payload = 400, error_body(400, {
                "type": "x_content_parse_exception", "reason": f"[1:1] {e}"})
        except Exception as e:  # pragma: no cover - server bug, surface it loudly
            traceback.print_exc(file=sys.stderr)
            status, payload = 500, error_body(500, {"type": "exception", "reason": repr(e)})
        if isinstance(payload, dict) and params.get("filter_path"):
            payload = apply_filter_path(payload, params["filter_path"])
        if fault is not None and fault.kind == "reset" and fault.when == "after":
            es._count("faults.reset.after")
            self._rst()
            return
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.seconds)
        if isinstance(payload, str):
            self._send(status, payload.encode(), ctype="text/plain; charset=UTF-8", head=head)
        else:
            self._send(status, payload, ctype=resp_type, head=head)

    def _send_fault_status(self, fault: Fault, resp_type: str) -> None:
        status = fault.status
        if fault.body is not None:
            body = fault.body
            if isinstance(body, str):
                self._send(status, body.encode(), ctype="text/plain; charset=UTF-8",
                           product=False)
            else:
                self._send(status, body, ctype=resp_type, product=status < 500)
            return
        if status == 429:
            err = {"type": "es_rejected_execution_exception",
                   "reason": "rejected execution of coordinating operation "
                   "[coordinating_and_primary_bytes=104857600, replica_bytes=0, "
                   "all_bytes=104857600, coordinating_operation_bytes=1048576, "
                   "max_coordinating_and_primary_bytes=107374182]"}
            self._send(429, error_body(429, err), ctype=resp_type)
        elif status == 503:
            err = {"type": "cluster_block_exception",
                   "reason": "blocked by: [SERVICE_UNAVAILABLE/2/no master];"}
            self._send(503, error_body(503, err), ctype=resp_type)
        elif status in (502, 504):
            # these come from a proxy / load balancer in front of Elasticsearch
            phrase = _REASONS[status]
            html = (f"<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
                    f"<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>"
                    "\r\n</body>\r\n</html>\r\n")
            self._send(status, html.encode(), ctype="text/html", product=False)
        else:
            err = {"type": "exception" if status >= 500 else "illegal_argument_exception",
                   "reason": f"injected failure with status [{status}]"}
            self._send(status, error_body(status, err), ctype=resp_type)

    # ------------------------------------------------------------------ routing
    def _dispatch(self, method: str, segs: list[str], params: dict[str, str], body: bytes,
                  item_faults: list[Fault], record: RequestRecord) -> tuple[int, Any]:
        es = self.server.es
        c = es.cluster
        n = len(segs)

        def jbody() -> dict[str, Any]:
            if not body:
                return {}
            obj = orjson.loads(body)
            if not isinstance(obj, dict):
                raise es_error(400, "parsing_exception", "request body must be an object")
            return obj

        def need_body() -> dict[str, Any]:
            if not body:
                raise es_error(400, "parse_exception", "request body is required")
            return jbody()

        def bad_method(allowed: str) -> ESError:
            return _HandlerError(405, {
                "error": f"Incorrect HTTP method for uri [{self.path}] and method [{method}], "
                f"allowed: [{allowed}]", "status": 405})

        refresh = params.get("refresh", "false") in ("", "true", "wait_for")
        if n == 0:
            if method in ("GET", "HEAD"):
                return 200, c.info()
            raise bad_method("HEAD, GET")
        s0 = segs[0]
        # ---------------------------------------------------------------- bulk
        if segs[-1] == "_bulk" and n <= 2:
            if method not in ("POST", "PUT"):
                raise bad_method("POST, PUT")
            counts: Counter[str] = Counter()
            resp = c.bulk(body, segs[0] if n == 2 else None, refresh, item_faults, counts,
                          params.get("require_data_stream") == "true")
            record.items = len(resp["items"])
            es._merge_counts(counts)
            es._count("bulk.requests.applied")
            if es.gc_freeze:
                gc.freeze()
            return 200, resp
        # ---------------------------------------------------------------- search / count
        if segs[-1] in ("_search", "_count") and n <= 2:
            if method not in ("GET", "POST"):
                raise bad_method("GET, POST")
            target = segs[0] if n == 2 else None
            return 200, c.search(target, jbody(), params, count_only=segs[-1] == "_count")
        if segs[-1] == "_refresh" and n <= 2:
            return 200, c.refresh(segs[0] if n == 2 else None)
        if s0 == "_cluster" and n >= 2 and segs[1] == "health":
            return 200, c.health(segs[2] if n > 2 else None)
        if s0 == "_index_template":
            name = segs[1] if n > 1 else None
            if method == "PUT" or (method == "POST" and name):
                assert name is not None
                return 200, c.put_template(name, need_body(), params.get("create") == "true")
            if method == "GET":
                return 200, c.get_templates(name)
            if method == "HEAD":
                return (200 if name and c.template_exists(name) else 404), None
            if method == "DELETE" and name:
                return 200, c.delete_template(name)
            raise bad_method("GET, HEAD, PUT, POST, DELETE")
        if s0 == "_component_template":
            name = segs[1] if n > 1 else None
            if method in ("PUT", "POST") and name:
                return 200, c.put_component_template(name, need_body())
            if method == "GET":
                return 200, c.get_component_templates(name)
            if method == "HEAD":
                ok = bool(name) and name in c.component_templates
                return (200 if ok else 404), None
            if method == "DELETE" and name:
                return 200, c.delete_component_template(name)
            raise bad_method("GET, HEAD, PUT, POST, DELETE")
        if s0 == "_data_stream":
            name = segs[1] if n > 1 else None
            if method == "PUT" and name:
                return 200, c.put_data_stream(name)
            if method == "GET":
                return 200, c.get_data_streams(name)
            if method == "DELETE" and name:
                return 200, c.delete_data_stream(name)
            raise bad_method("GET, PUT, DELETE")
        if s0 == "_ilm" and n >= 2 and segs[1] == "policy":
            name = segs[2] if n > 2 else None
            if method == "PUT" and name:
                return 200, c.put_ilm(name, need_body())
            if method == "GET":
                return 200, c.get_ilm(name)
            if method == "DELETE" and name:
                return 200, c.delete_ilm(name)
            raise bad_method("GET, PUT, DELETE")
        if s0 == "_mapping" and method == "GET":
            return 200, c.get_mapping(None)
        if s0 == "_settings" and method == "GET":
            return 200, c.get_settings(None)
        if s0 == "_cat" and n >= 2 and segs[1] == "indices":
            rows = c.cat_indices(segs[2] if n > 2 else None)
            if params.get("format") == "json":
                return 200, rows
            lines = [f"{r['health']} {r['status']} {r['index']} {r['uuid']} {r['pri']} "
                     f"{r['rep']} {r['docs.count']} {r['docs.deleted']} {r['store.size']} "
                     f"{r['pri.store.size']} {r['dataset.size']}" for r in rows]
            return 200, "".join(line + "\n" for line in lines)
        if s0.startswith("_"):
            raise _HandlerError(400, {
                "error": f"no handler found for uri [{self.path}] and method [{method}]"})
        # ---------------------------------------------------------------- /{index}/...
        target = s0
        if n == 1:
            if method == "PUT":
                return 200, c.create_index(target, jbody())
            if method == "DELETE":
                return 200, c.delete_index(target)
            if method == "GET":
                return 200, c.get_index(target)
            if method == "HEAD":
                return (200 if c.index_exists(target) else 404), None
            raise bad_method("GET, HEAD, PUT, DELETE")
        op = segs[1]
        if op == "_mapping":
            if method == "GET":
                return 200, c.get_mapping(target)
            if method in ("PUT", "POST"):
                return 200, c.put_mapping(target, need_body())
            raise bad_method("GET, PUT, POST")
        if op == "_settings" and method == "GET":
            return 200, c.get_settings(target)
        if op == "_rollover" and method == "POST":
            return 200, c.rollover(target)
        if op == "_delete_by_query" and method == "POST":
            return 200, c.delete_by_query(target, need_body())
        if op in ("_doc", "_create", "_update") and n <= 3:
            doc_id = segs[2] if n == 3 else None
            if op == "_update":
                if method != "POST" or doc_id is None:
                    raise bad_method("POST")
                return c.write_one("update", target, doc_id, body, refresh, params)
            if op == "_create":
                if method not in ("PUT", "POST") or doc_id is None:
                    raise bad_method("PUT, POST")
                return c.write_one("create", target, doc_id, body, refresh, params)
            if method in ("GET", "HEAD") and doc_id is not None:
                status, doc = c.get_doc(target, doc_id, _source_arg(params))
                return status, (None if method == "HEAD" else doc)
            if method == "DELETE" and doc_id is not None:
                return c.write_one("delete", target, doc_id, b"", refresh, params)
            if method in ("PUT", "POST"):
                if method == "PUT" and doc_id is None:
                    raise bad_method("POST")
                return c.write_one("index", target, doc_id, body, refresh, params)
            raise bad_method("GET, HEAD, PUT, POST, DELETE")
        raise _HandlerError(400, {
            "error": f"no handler found for uri [{self.path}] and method [{method}]"})

    # ------------------------------------------------------------------ admin API
    def _admin(self, method: str, segs: list[str], params: dict[str, str], body: bytes) -> None:
        es = self.server.es
        try:
            data = orjson.loads(body) if body else {}
            res = es._admin(method, segs, params, data)
        except (ValueError, TypeError, KeyError) as e:
            self._send(400, {"error": str(e)})
            return
        except LookupError as e:
            self._send(404, {"error": str(e)})
            return
        status, payload, after = res
        if after is not None:
            self.close_connection = True
        self._send(status, payload)
        if after is not None:
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_WR)
            after()


def _source_arg(params: dict[str, str]) -> Any:
    if "_source" in params:
        v = params["_source"]
        return v == "true" if v in ("true", "false") else v.split(",")
    if "_source_includes" in params or "_source_excludes" in params:
        return {"includes": [s for s in params.get("_source_includes", "").split(",") if s],
                "excludes": [s for s in params.get("_source_excludes", "").split(",") if s]}
    return True


class _HandlerError(ESError):
    """An error whose body is not the standard ``{"error": {...}}`` shape."""

    def __init__(self, status: int, raw_body: dict[str, Any]) -> None:
        super().__init__(status, {"type": "", "reason": str(raw_body.get("error"))})
        self.raw_body = raw_body

    def body(self) -> dict[str, Any]:
        return self.raw_body


# ============================================================================ public server
class ESTestServer:
    """An in-process Elasticsearch-API server for tests (see package docstring)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, major: int = 8, *,
                 version: str | None = None, cluster_name: str = "es-test-cluster",
                 gzip_responses: bool = True, request_log_size: int = 2000,
                 gc_freeze: bool = False) -> None:
        self.host = host
        self.port = port
        self.major = major
        self.cluster = Cluster(major, version=version, cluster_name=cluster_name)
        self.faults = FaultPlan()
        self.gzip_responses = gzip_responses
        # gc.freeze() after every bulk: stored documents are long-lived, and without it the
        # cyclic GC rescans them over and over (halves ingest throughput at ~100k docs).
        self.gc_freeze = gc_freeze
        self.request_log: deque[RequestRecord] = deque(maxlen=request_log_size)
        self._counters: Counter[str] = Counter()
        self._counter_lock = threading.Lock()
        self._life_lock = threading.RLock()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._running = False
        self._down = False
        self._up_event = threading.Event()

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> ESTestServer:
        with self._life_lock:
            if self._running:
                return self
            self._serve()
            self._running = True
        return self

    def stop(self) -> None:
        with self._life_lock:
            if not self._running:
                return
            self._running = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._unserve()
            self._down = False
        self._close_connections(None)

    def __enter__(self) -> ESTestServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _serve(self) -> None:
        deadline = time.monotonic() + 5.0
        while True:
            try:
                httpd = _HTTPServer((self.host, self.port), self)
                break
            except OSError as e:
                if e.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"esserver-{self.port}", daemon=True)
        self._thread.start()
        self._up_event.set()

    def _unserve(self) -> None:
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        self._up_event.clear()
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    # ------------------------------------------------------------------ up / down
    @property
    def is_down(self) -> bool:
        return self._running and (self._down or not self._up_event.is_set())

    def go_down(self, seconds: float | None = None, *, _keep: socket.socket | None = None
                ) -> None:
        """Stop listening (connections are refused) and drop open connections.

        With ``seconds`` the server comes back automatically (same port, data intact);
        otherwise call :meth:`bring_up`.
        """
        with self._life_lock:
            if not self._running:
                raise RuntimeError("server is not running")
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not self._down:
                self._down = True
                self._count("server.down")
                self._unserve()
            if seconds is not None:
                self._timer = threading.Timer(seconds, self.bring_up)
                self._timer.daemon = True
                self._timer.start()
        self._close_connections(_keep)

    def bring_up(self) -> None:
        with self._life_lock:
            if self._timer is not None and self._timer is not threading.current_thread():
                self._timer.cancel()
            self._timer = None
            if not self._running or not self._down:
                return
            self._serve()
            self._down = False
            self._count("server.up")

    def wait_until_up(self, timeout: float = 10.0) -> bool:
        return self._up_event.wait(timeout)

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._conns_lock:
            if add:
                self._conns.add(sock)
                self._counters["connections"] += 1
            else:
                self._conns.discard(sock)

    def _close_connections(self, keep: socket.socket | None) -> None:
        with self._conns_lock:
            conns = [c for c in self._conns if c is not keep]
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)

    # ------------------------------------------------------------------ counters
    def _count(self, *keys: str) -> None:
        with self._counter_lock:
            for k in keys:
                self._counters[k] += 1

    def _merge_counts(self, counts: Counter[str]) -> None:
        with self._counter_lock:
            self._counters.update(counts)

    def _log(self, record: RequestRecord) -> None:
        self.request_log.append(record)

    def stats(self) -> dict[str, int]:
        """Snapshot of all counters (see README in the package docstring for keys)."""
        with self._counter_lock:
            return dict(self._counters)

    def counter(self, key: str) -> int:
        with self._counter_lock:
            return self._counters.get(key, 0)

    def reset_stats(self) -> None:
        with self._counter_lock:
            self._counters.clear()
        self.request_log.clear()

    def reset(self) -> None:
        """Drop all data (indices, data streams, user templates, ILM), faults and counters."""
        self.cluster.reset()
        self.faults.clear()
        self.reset_stats()

    # ------------------------------------------------------------------ data accessors
    def _stored(self, index: str, doc_id: str) -> tuple[Any, Any] | None:
        """(backing index, stored document) by index, backing index or data stream name;
        the caller holds the cluster lock."""
        ds = self.cluster.data_streams.get(index)
        candidates = ds.indices if ds else [self.cluster.indices[index]] \
            if index in self.cluster.indices else []
        for idx in reversed(candidates):
            doc = idx.docs.get(doc_id)
            if doc is not None:
                return idx, doc
        return None

    def get_doc(self, index: str, doc_id: str) -> dict[str, Any] | None:
        """``_source`` of a document (deep copy) by index, backing index or data stream name."""
        with self.cluster.lock:
            found = self._stored(index, doc_id)
            return copy.deepcopy(found[1].source) if found else None

    def doc_meta(self, index: str, doc_id: str) -> dict[str, Any] | None:
        """``{"_index", "_version", "_seq_no"}`` of a stored document, or None."""
        with self.cluster.lock:
            found = self._stored(index, doc_id)
            if found is None:
                return None
            idx, doc = found
            return {"_index": idx.name, "_version": doc.version, "_seq_no": doc.seq_no}

    def docs(self, target: str = "*") -> dict[str, dict[str, Any]]:
        """All documents ``{_id: _source}`` (deep copies) of an index/data stream/pattern."""
        return copy.deepcopy(self.cluster.find_docs(target))

    def doc_count(self, target: str = "*") -> int:
        with self.cluster.lock:
            try:
                return sum(len(i.docs) for i in self.cluster.resolve(target))
            except ESError:
                return 0

    def index_names(self, include_hidden: bool = True) -> list[str]:
        with self.cluster.lock:
            return sorted(n for n, i in self.cluster.indices.items()
                          if include_hidden or not i.hidden)

    def data_stream_names(self) -> list[str]:
        with self.cluster.lock:
            return sorted(self.cluster.data_streams)

    def backing_indices(self, data_stream: str) -> list[str]:
        with self.cluster.lock:
            return [i.name for i in self.cluster.data_streams[data_stream].indices]

    def mapping(self, index: str) -> dict[str, Any]:
        """Mapping of an index (or the write index of a data stream)."""
        with self.cluster.lock:
            ds = self.cluster.data_streams.get(index)
            idx = ds.write_index if ds else self.cluster.indices[index]
            return copy.deepcopy(idx.mapping.to_dict())

    def template(self, name: str) -> dict[str, Any] | None:
        with self.cluster.lock:
            t = self.cluster.templates.get(name)
            return copy.deepcopy(t) if t is not None else None

    # ------------------------------------------------------------------ faults
    def add_fault(self, fault: Fault) -> Fault:
        return self.faults.add(fault)

    def fail_requests(self, status: int = 429, *, requests: int | None = 1, skip: int = 0,
                      probability: float | None = None, seed: int | None = None,
                      endpoints: Iterable[str] = ("bulk",), body: Any = None) -> Fault:
        """Whole-request error responses (nothing is applied).

        429 → ``es_rejected_execution_exception``; 503 → ``cluster_block_exception``;
        502/504 → an nginx HTML page without ``X-Elastic-Product`` (a proxy in front of ES).
        ``body`` (dict → JSON, str → text/plain) overrides the body.
        """
        return self.faults.add(Fault("status", requests=requests, skip=skip,
                                     probability=probability, seed=seed,
                                     endpoints=frozenset(endpoints), status=status, body=body))

    def fail_items(self, status: int = 429, *, every: int | None = None,
                   fraction: float | None = None, positions: Iterable[int] | None = None,
                   predicate: Callable[[BulkItem], bool] | None = None,
                   requests: int | None = 1, skip: int = 0, probability: float | None = None,
                   seed: int | None = None, reason: str | None = None) -> Fault:
        """Per-item failures inside bulk responses (selected items are NOT applied).

        Selection criteria combine with AND: ``positions`` (0-based in the request),
        ``every`` (items k-1, 2k-1, ... i.e. every k-th), ``fraction`` (seeded random),
        ``predicate(BulkItem)``.  No criterion → every item.
        """
        return self.faults.add(Fault("items", requests=requests, skip=skip,
                                     probability=probability, seed=seed, status=status,
                                     every=every, fraction=fraction,
                                     positions=frozenset(positions) if positions is not None
                                     else None, predicate=predicate, reason=reason))

    def mapping_errors(self, predicate: Callable[[BulkItem], bool] | None = None, *,
                       field: str | None = None, value: Any = None, every: int | None = None,
                       positions: Iterable[int] | None = None, requests: int | None = None,
                       reason: str | None = None) -> Fault:
        """Reject matching bulk items with 400 ``document_parsing_exception``.

        ``field``/``value``: items whose source has that value at that dotted path (any value
        if ``value`` is None).  Applies to all bulk requests until removed by default.
        """
        return self.faults.add(Fault("mapping", requests=requests, status=400,
                                     predicate=predicate, match_field=field, match_value=value,
                                     every=every, positions=frozenset(positions)
                                     if positions is not None else None, reason=reason))

    def delay_responses(self, seconds: float, *, requests: int | None = 1, skip: int = 0,
                        probability: float | None = None, seed: int | None = None,
                        endpoints: Iterable[str] = ("bulk",)) -> Fault:
        """Process the request normally (the bulk IS applied) then wait before responding."""
        return self.faults.add(Fault("delay", requests=requests, skip=skip,
                                     probability=probability, seed=seed,
                                     endpoints=frozenset(endpoints), seconds=seconds))

    def reset_connections(self, when: str = "before", *, requests: int | None = 1,
                          skip: int = 0, probability: float | None = None,
                          seed: int | None = None, endpoints: Iterable[str] = ("bulk",)
                          ) -> Fault:
        """Abort the connection with TCP RST and no response.

        ``when="before"``: the request body is read but not applied; ``"after"``: applied.
        """
        return self.faults.add(Fault("reset", requests=requests, skip=skip,
                                     probability=probability, seed=seed,
                                     endpoints=frozenset(endpoints), when=when))

    def down_on_request(self, seconds: float | None, *, requests: int = 1, skip: int = 0,
                        endpoints: Iterable[str] = ("bulk",)) -> Fault:
        """On a matching request: reset it (not applied) and go down for ``seconds``."""
        return self.faults.add(Fault("down", requests=requests, skip=skip,
                                     endpoints=frozenset(endpoints), seconds=seconds or 0.0))

    def clear_faults(self) -> None:
        self.faults.clear()

    def remove_fault(self, fault_id: int) -> bool:
        return self.faults.remove(fault_id)

    # ------------------------------------------------------------------ admin (HTTP)
    def _admin(self, method: str, segs: list[str], params: dict[str, str], data: Any
               ) -> tuple[int, Any, Callable[[], None] | None]:
        what = segs[0] if segs else ""
        if what == "stats":
            if method == "DELETE":
                self.reset_stats()
                return 200, {"acknowledged": True}, None
            return 200, self.stats(), None
        if what == "faults":
            if method == "GET":
                return 200, {"faults": [f.describe() for f in self.faults.list()]}, None
            if method == "DELETE":
                if len(segs) > 1:
                    if not self.remove_fault(int(segs[1])):
                        raise LookupError(f"no fault {segs[1]}")
                else:
                    self.clear_faults()
                return 200, {"acknowledged": True}, None
            if method in ("POST", "PUT"):
                specs = data if isinstance(data, list) else [data]
                ids = [self.faults.add(fault_from_json(s)).id for s in specs]
                return 200, {"ids": ids, "id": ids[0] if ids else None}, None
        if what == "reset" and method == "POST":
            self.reset()
            return 200, {"acknowledged": True}, None
        if what == "down" and method == "POST":
            seconds = data.get("seconds") if isinstance(data, dict) else None
            secs = float(seconds) if seconds is not None else None
            self._up_event.clear()
            return 200, {"acknowledged": True, "seconds": secs}, lambda: self.go_down(secs)
        if what == "docs" and method == "GET" and len(segs) >= 2:
            if len(segs) >= 3:
                doc = self.get_doc(segs[1], segs[2])
                if doc is None:
                    raise LookupError(f"no document [{segs[1]}/{segs[2]}]")
                return 200, doc, None
            return 200, self.docs(segs[1]), None
        if what == "requests" and method == "GET":
            return 200, {"requests": [r.__dict__ for r in list(self.request_log)]}, None
        raise LookupError(f"unknown admin endpoint {method} /_test/{'/'.join(segs)}")
