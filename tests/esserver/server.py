"""The Elasticsearch-API test server: HTTP front end, fault injection, Python accessors.

``ESTestServer`` answers the routes of :mod:`.api` (see ``tests/esserver/__init__.py`` for an
overview) and the ``/_test/...`` admin API.
"""

from __future__ import annotations

import copy
import fnmatch
import gc
import sys
import time
import traceback
import zlib
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from .api import Call, ElasticsearchApi
from .cluster import Cluster
from .errors import ESError, error_body
from .faults import ERROR_STATUS, BulkItem, Fault, FaultPlan, fault_from_json, request_error
from .httpcore import (
    REASONS,
    BaseTestServer,
    Exchange,
    Request,
    RequestRecord,
    Response,
    Route,
    Router,
    json_response,
    route_table,
)
from .security import Security

_JSON_TYPES = frozenset({"application/json", "application/x-ndjson",
                         "application/vnd.elasticsearch+json",
                         "application/vnd.elasticsearch+x-ndjson"})
PRODUCT_HEADER = ("X-elastic-product", "Elasticsearch")
DEFAULT_MAX_CONTENT_LENGTH = 100 * 1024 * 1024  # http.max_content_length

__all__ = ["ESTestServer", "RequestRecord"]


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


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """gzip/deflate request bodies, at most ``limit + 1`` bytes of them (so a body over the
    limit is detected without inflating all of it); ValueError when they do not decompress."""
    try:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if "gzip" in encoding
                                      else zlib.MAX_WBITS)
        out = inflater.decompress(body, limit + 1)
        if len(out) <= limit and not inflater.eof:
            raise ValueError("truncated compressed body")
        return out
    except zlib.error as e:
        raise ValueError(str(e)) from None


def _raw_error(status: int, message: str) -> ESError:
    """Errors rendered as ``{"error": "<message>", "status": N}`` (routing failures)."""
    return _HandlerError(status, {"error": message, "status": status})


def _too_large() -> Response:
    """What the HTTP layer answers a body over ``http.max_content_length`` with: an empty
    413, and the connection closed (``Netty4HttpContentSizeHandler``)."""
    return Response(413, b"", None, close=True)


class _HandlerError(ESError):
    """An error whose body is not the standard ``{"error": {...}}`` shape."""

    def __init__(self, status: int, raw_body: dict[str, Any]) -> None:
        super().__init__(status, {"type": "", "reason": str(raw_body.get("error"))})
        self.raw_body = raw_body

    def body(self) -> dict[str, Any]:
        return self.raw_body


# ============================================================================ public server
class ESTestServer(BaseTestServer):
    """An in-process Elasticsearch-API server for tests (see package docstring)."""

    name = "esserver"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, major: int = 8, *,
                 version: str | None = None, cluster_name: str = "es-test-cluster",
                 gzip_responses: bool = True, request_log_size: int = 2000,
                 gc_freeze: bool = False,
                 max_content_length: int = DEFAULT_MAX_CONTENT_LENGTH) -> None:
        super().__init__(host, port, gzip_responses=gzip_responses,
                         request_log_size=request_log_size, max_body_bytes=max_content_length)
        self.major = major
        self.cluster = Cluster(major, version=version, cluster_name=cluster_name)
        self.faults = FaultPlan()
        self.security = Security(major)
        # gc.freeze() after every bulk: stored documents are long-lived, and without it the
        # cyclic GC rescans them over and over (halves ingest throughput at ~100k docs).
        self.gc_freeze = gc_freeze
        self.api = ElasticsearchApi(self)
        self.admin_router = Router(self._admin_routes())

    @property
    def max_content_length(self) -> int:
        """``http.max_content_length``: larger bodies (after decompression) get a 413."""
        return self.max_body_bytes

    @max_content_length.setter
    def max_content_length(self, value: int) -> None:
        self.max_body_bytes = value

    def _started(self) -> None:
        self.cluster.start_refresher()

    def _stopping(self) -> None:
        self.cluster.stop_refresher()

    # ------------------------------------------------------------------ request handling
    def handle(self, ex: Exchange, req: Request) -> None:
        if req.segs and req.segs[0] == "_test":
            self._handle_admin(ex, req)
            return
        route, path_params, allowed = self.api.router.match(req.method, req.segs)
        endpoint = route.endpoint if route else self.api.router.endpoint_of(req.segs)
        record = RequestRecord(time.time(), req.method, req.path, endpoint, None,
                               len(req.body), None,
                               content_encoding=req.header("Content-Encoding"))
        self._count("requests", f"requests.{endpoint}")
        ex.begin(record)
        head = req.method == "HEAD"
        try:
            principal = self.security.authenticate(req.header("Authorization"), req.path)
        except ESError as e:
            challenge = [("WWW-Authenticate", c) for c in e.err["header"]["WWW-Authenticate"]]
            ex.send(self._json(401, e.body(), extra=challenge), head=head)
            return
        body = req.body
        if req.size > self.max_content_length:
            ex.send(_too_large())
            return
        enc = (req.header("Content-Encoding") or "").lower()
        if body and enc in ("gzip", "x-gzip", "deflate"):
            try:
                body = _decompress(body, enc, self.max_content_length)
            except ValueError:
                ex.send(self._json(400, error_body(400, {
                    "type": "illegal_argument_exception",
                    "reason": "failed to decompress request body"})))
                return
            if len(body) > self.max_content_length:
                ex.send(_too_large())
                return
        ctype = req.header("Content-Type")
        try:
            compat = check_media(req.header("Accept"), ctype, bool(body), self.major)
        except ESError as e:
            if e.status == 406:
                ex.send(self._json(406, {"error": f"Content-Type header [{ctype or ''}] is "
                                                  "not supported", "status": 406}))
            else:
                ex.send(self._json(e.status, e.body()))
            return
        resp_type = (f"application/vnd.elasticsearch+json;compatible-with={compat}"
                     if compat is not None else "application/json")

        fault = self.faults.take_request_fault(endpoint)
        if fault is not None:
            record.fault = fault.kind
            self._count(f"faults.{fault.kind}")
            if fault.kind == "status":
                ex.send(self._fault_status(fault, resp_type))
                return
            if fault.kind == "reset" and fault.when == "before":
                self._count("faults.reset.before")
                ex.reset()
                return
            if fault.kind == "down":
                self._up_event.clear()  # is_down/wait_until_up see it before the client does
                ex.reset()
                self.go_down(fault.seconds if fault.seconds > 0 else None)
                return
        call = Call(req, body, path_params, record, principal)
        if endpoint == "bulk" and route is not None:
            call.item_faults = self.faults.take_item_faults(endpoint)
            for f in call.item_faults:
                self._count(f"faults.{f.kind}")
        status, payload = self._dispatch(route, allowed, call)
        if isinstance(payload, dict) and req.params.get("filter_path"):
            payload = apply_filter_path(payload, req.params["filter_path"])
        if fault is not None and fault.kind == "reset" and fault.when == "after":
            self._count("faults.reset.after")
            ex.reset()
            return
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.seconds)
        extra = [("Allow", ",".join(allowed))] if status == 405 else []
        if isinstance(payload, str):
            ex.send(Response(status, payload.encode(), "text/plain; charset=UTF-8",
                             [PRODUCT_HEADER, *extra]), head=head)
        elif payload is None:
            ex.send(Response(status, b"", resp_type, [PRODUCT_HEADER]), head=head)
        else:
            ex.send(self._json(status, payload, resp_type, extra), head=head)

    def _dispatch(self, route: Route | None, allowed: list[str], call: Call
                  ) -> tuple[int, Any]:
        req = call.request
        try:
            if route is None:
                if allowed:
                    raise _raw_error(405, f"Incorrect HTTP method for uri [{req.path}] and "
                                          f"method [{req.method}], allowed: "
                                          f"[{', '.join(allowed)}]")
                raise _raw_error(400, f"no handler found for uri [{req.path}] and method "
                                      f"[{req.method}]")
            result: tuple[int, Any] = route.handler(call)
            return result
        except ESError as e:
            return e.status, e.body()
        except orjson.JSONDecodeError as e:
            return 400, error_body(400, {"type": "x_content_parse_exception",
                                         "reason": f"[1:1] {e}"})
        except Exception as e:  # pragma: no cover - server bug, surface it loudly
            traceback.print_exc(file=sys.stderr)
            return 500, error_body(500, {"type": "exception", "reason": repr(e)})

    @staticmethod
    def _json(status: int, payload: Any, ctype: str = "application/json",
              extra: Iterable[tuple[str, str]] = ()) -> Response:
        return json_response(status, payload, ctype, [PRODUCT_HEADER, *extra])

    def _fault_status(self, fault: Fault, resp_type: str) -> Response:
        status = fault.status
        if fault.body is not None:
            body = fault.body
            if isinstance(body, str):
                return Response(status, body.encode(), "text/plain; charset=UTF-8")
            headers = [PRODUCT_HEADER] if status < 500 else []
            return json_response(status, body, resp_type, headers)
        if status == 413:
            return _too_large()
        if status in (502, 504):
            # these come from a proxy / load balancer in front of Elasticsearch
            phrase = REASONS[status]
            html = (f"<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
                    f"<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>"
                    "\r\n</body>\r\n</html>\r\n")
            return Response(status, html.encode(), "text/html")
        err, headers = request_error(fault, self.major)
        return self._json(status, error_body(status, err), resp_type, headers)

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
            doc = idx.current(doc_id)
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
                return sum(len(i) for i in self.cluster.resolve(target))
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

    def index_settings(self, index: str) -> dict[str, Any]:
        """Flat settings of an index (or the write index of a data stream)."""
        with self.cluster.lock:
            ds = self.cluster.data_streams.get(index)
            idx = ds.write_index if ds else self.cluster.indices[index]
            return dict(idx.settings)

    def load_docs(self, target: str, docs: Iterable[Any], *, refresh: bool = True) -> int:
        """Store many documents fast, without HTTP: ``docs`` yields ``_source`` dicts or
        ``(_id, _source)`` pairs (ids are generated otherwise). The target (index or data
        stream) is created like a bulk ``create`` would; mapping rules apply. Returns the
        number stored; they are searchable at once unless ``refresh=False``."""
        enabled = gc.isenabled()
        gc.disable()  # millions of long-lived objects: no point scanning them mid-load
        try:
            return self.cluster.load(target, docs, refresh)
        finally:
            gc.freeze()
            if enabled:
                gc.enable()

    def refresh(self, target: str = "*") -> None:
        """``POST <target>/_refresh``: make every write searchable now."""
        self.cluster.refresh(target)

    # ------------------------------------------------------------------ cluster conditions
    def flood_stage(self, on: bool = True, target: str = "*") -> None:
        """The disk allocator at the flood-stage watermark: sets (or clears) the
        ``index.blocks.read_only_allow_delete`` block on every index, so writes get per-item
        429 ``cluster_block_exception`` (``TOO_MANY_REQUESTS/12``)."""
        self.cluster.set_blocks("index.blocks.read_only_allow_delete", on, target)

    def cluster_settings(self, **persistent: Any) -> None:
        """``PUT _cluster/settings`` (persistent), e.g. ``action_auto_create_index=False``
        is written ``**{"action.auto_create_index": False}``."""
        self.cluster.put_cluster_settings({"persistent": persistent})

    def add_user(self, name: str, password: str, *, write: Iterable[str] = ("*",),
                 roles: Iterable[str] = ("writer",)) -> None:
        """Turn security on (if it is not) and accept ``Basic`` auth for this user, who may
        write to the index patterns ``write``."""
        self.security.add_user(name, password, roles=tuple(roles), write=tuple(write))

    def add_api_key(self, key_id: str, key: str, *, owner: str = "collector",
                    write: Iterable[str] = ("*",), roles: Iterable[str] = ("writer",)) -> str:
        """Turn security on and accept this API key; returns its encoded form (what clients
        send as ``Authorization: ApiKey <encoded>``)."""
        return self.security.add_api_key(key_id, key, owner=owner, roles=tuple(roles),
                                         write=tuple(write))
    # ------------------------------------------------------------------ faults
    def add_fault(self, fault: Fault) -> Fault:
        return self.faults.add(fault)

    def fail_requests(self, status: int | None = None, *, requests: int | None = 1,
                      skip: int = 0, probability: float | None = None, seed: int | None = None,
                      endpoints: Iterable[str] = ("bulk",), body: Any = None,
                      error_type: str | None = None, durability: str = "TRANSIENT",
                      reason: str | None = None) -> Fault:
        """Whole-request error responses (nothing is applied).

        429 → ``es_rejected_execution_exception`` (``error_type="circuit_breaking_exception"``
        with ``durability``, or ``"cluster_block_exception"``); 503 → ``cluster_block_exception``
        (no master); 401 → ``security_exception`` with ``WWW-Authenticate``; 403 →
        ``security_exception``; 413 → the empty body of ``http.max_content_length``;
        502/504 → an nginx HTML page without ``X-Elastic-Product`` (a proxy in front of ES).
        ``body`` (dict → JSON, str → text/plain) overrides the body.
        """
        if status is None:
            status = ERROR_STATUS.get(error_type or "", 429)
        return self.faults.add(Fault("status", requests=requests, skip=skip,
                                     probability=probability, seed=seed,
                                     endpoints=frozenset(endpoints), status=status, body=body,
                                     error_type=error_type, durability=durability,
                                     reason=reason))

    def fail_items(self, status: int | None = None, *, error_type: str | None = None,
                   durability: str = "TRANSIENT", every: int | None = None,
                   fraction: float | None = None, positions: Iterable[int] | None = None,
                   predicate: Callable[[BulkItem], bool] | None = None,
                   requests: int | None = 1, skip: int = 0, probability: float | None = None,
                   seed: int | None = None, reason: str | None = None) -> Fault:
        """Per-item failures inside bulk responses (selected items are NOT applied).

        ``error_type`` names the Elasticsearch error (``cluster_block_exception`` 429 is the
        flood-stage block, 403 a write block; ``circuit_breaking_exception`` with
        ``durability``; ``security_exception``; ``index_not_found_exception``;
        ``index_closed_exception``; ...); without it the status picks the usual one (429
        ``es_rejected_execution_exception``, 503 ``unavailable_shards_exception``, 409
        version conflict, 403 ``security_exception``, 404 ``index_not_found_exception``).
        Selection criteria combine with AND: ``positions`` (0-based in the request),
        ``every`` (items k-1, 2k-1, ... i.e. every k-th), ``fraction`` (seeded random),
        ``predicate(BulkItem)``.  No criterion → every item.
        """
        if status is None:
            status = ERROR_STATUS.get(error_type or "", 429)
        return self.faults.add(Fault("items", requests=requests, skip=skip,
                                     probability=probability, seed=seed, status=status,
                                     error_type=error_type, durability=durability,
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

    # ------------------------------------------------------------------ admin API (HTTP)
    def _admin_routes(self) -> list[Route]:
        return route_table([
            ("GET", "/_test/stats", "admin", lambda req, data: (200, self.stats(), None)),
            ("DELETE", "/_test/stats", "admin", self._admin_reset_stats),
            ("GET", "/_test/faults", "admin", lambda req, data: (
                200, {"faults": [f.describe() for f in self.faults.list()]}, None)),
            ("POST,PUT", "/_test/faults", "admin", self._admin_add_faults),
            ("DELETE", "/_test/faults", "admin", self._admin_clear_faults),
            ("DELETE", "/_test/faults/{id}", "admin", self._admin_remove_fault),
            ("POST", "/_test/reset", "admin", self._admin_reset),
            ("POST", "/_test/down", "admin", self._admin_down),
            ("GET", "/_test/docs/{target}", "admin", lambda req, data: (
                200, self.docs(req.path_params["target"]), None)),
            ("GET", "/_test/docs/{target}/{id}", "admin", self._admin_doc),
            ("GET", "/_test/requests", "admin", lambda req, data: (
                200, {"requests": [r.__dict__ for r in list(self.request_log)]}, None)),
        ])

    def _handle_admin(self, ex: Exchange, req: Request) -> None:
        route, path_params, _allowed = self.admin_router.match(req.method, req.segs)
        req.path_params = path_params
        try:
            if route is None:
                raise LookupError(f"unknown admin endpoint {req.method} {req.path}")
            data = orjson.loads(req.body) if req.body else {}
            status, payload, after = route.handler(req, data)
        except (ValueError, TypeError, KeyError) as e:
            ex.send(json_response(400, {"error": str(e)}))
            return
        except LookupError as e:
            ex.send(json_response(404, {"error": str(e)}))
            return
        if after is None:
            ex.send(json_response(status, payload))
        else:
            self._send_then(ex, json_response(status, payload), after)

    @staticmethod
    def _send_then(ex: Exchange, resp: Response, after: Callable[[], None]) -> None:
        """Answer, close our side, then act (e.g. go down) once the client has the answer."""
        resp.close = True
        ex.send(resp)
        ex.shutdown_write()
        after()

    def _admin_reset_stats(self, req: Request, data: Any) -> tuple[int, Any, None]:
        self.reset_stats()
        return 200, {"acknowledged": True}, None

    def _admin_add_faults(self, req: Request, data: Any) -> tuple[int, Any, None]:
        specs = data if isinstance(data, list) else [data]
        ids = [self.faults.add(fault_from_json(s)).id for s in specs]
        return 200, {"ids": ids, "id": ids[0] if ids else None}, None

    def _admin_clear_faults(self, req: Request, data: Any) -> tuple[int, Any, None]:
        self.clear_faults()
        return 200, {"acknowledged": True}, None

    def _admin_remove_fault(self, req: Request, data: Any) -> tuple[int, Any, None]:
        fault_id = req.path_params["id"]
        if not self.remove_fault(int(fault_id)):
            raise LookupError(f"no fault {fault_id}")
        return 200, {"acknowledged": True}, None

    def _admin_reset(self, req: Request, data: Any) -> tuple[int, Any, None]:
        self.reset()
        return 200, {"acknowledged": True}, None

    def _admin_down(self, req: Request, data: Any
                    ) -> tuple[int, Any, Callable[[], None]]:
        seconds = data.get("seconds") if isinstance(data, dict) else None
        secs = float(seconds) if seconds is not None else None
        self._up_event.clear()
        return 200, {"acknowledged": True, "seconds": secs}, lambda: self.go_down(secs)

    def _admin_doc(self, req: Request, data: Any) -> tuple[int, Any, None]:
        target, doc_id = req.path_params["target"], req.path_params["id"]
        doc = self.get_doc(target, doc_id)
        if doc is None:
            raise LookupError(f"no document [{target}/{doc_id}]")
        return 200, doc, None
