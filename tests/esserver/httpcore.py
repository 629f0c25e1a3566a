"""HTTP plumbing shared by the Elasticsearch and Kibana test servers.

:class:`BaseTestServer` runs a ``ThreadingHTTPServer`` (one thread per connection, HTTP/1.1
keep-alive) in a background thread, tracks connections, counts requests and responses, keeps
a request log, and can go down (stop listening, drop connections) and come back on the same
port.  Subclasses implement :meth:`BaseTestServer.handle`, which gets one parsed
:class:`Request` and answers it through its :class:`Exchange`.

:class:`Router` maps method + path pattern (``/{index}/_doc/{id}``) to a handler.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import http
import os
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

REASONS = {s.value: s.phrase for s in http.HTTPStatus}
_T = TypeVar("_T", bound="BaseTestServer")


@dataclass
class RequestRecord:
    """One entry of :attr:`BaseTestServer.request_log`."""

    time: float
    method: str
    path: str
    endpoint: str
    status: int | None  # None: no response was sent (reset / down)
    bytes_in: int
    fault: str | None
    items: int = 0
    content_encoding: str | None = None


@dataclass
class Request:
    method: str
    path: str  # as sent, with the query string
    segs: list[str]  # decoded path segments
    params: dict[str, str]  # query parameters (last value wins)
    headers: Message
    body: bytes  # as received (still compressed when Content-Encoding says so)
    size: int = 0  # the body's full length (``body`` stops after the server's limit)
    path_params: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False  # close the connection after this response


def json_response(status: int, payload: Any, content_type: str = "application/json",
                  headers: Iterable[tuple[str, str]] = ()) -> Response:
    return Response(status, orjson.dumps(payload), content_type, list(headers))


# ============================================================================ routing
Handler = Callable[..., Any]  # (request-like) -> response; each server its own


@dataclass(frozen=True)
class Route:
    """``methods`` like ``"GET,HEAD"``; ``path`` like ``/{index}/_doc/{id}``."""

    methods: str
    path: str
    endpoint: str  # name used by counters, the request log and fault filters
    handler: Handler

    @property
    def method_set(self) -> frozenset[str]:
        return frozenset(m.strip() for m in self.methods.split(","))

    @property
    def pattern(self) -> tuple[str, ...]:
        return tuple(s for s in self.path.split("/") if s)


def route_table(specs: Iterable[tuple[str, str, str, Handler]]) -> list[Route]:
    """Routes from ``(methods, path, endpoint, handler)`` rows."""
    return [Route(*spec) for spec in specs]


class Router:
    """Method + path pattern -> handler.  ``{name}`` matches one segment that does not start
    with ``_`` (those are API names); literal segments must match exactly."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)
        self._compiled = [(r, r.pattern, r.method_set) for r in self.routes]

    def match(self, method: str, segs: list[str]
              ) -> tuple[Route | None, dict[str, str], list[str]]:
        """(route, path params, allowed methods of the path when the method does not fit)."""
        allowed: list[str] = []
        for route, pattern, methods in self._compiled:
            params = _match_path(pattern, segs)
            if params is None:
                continue
            if method in methods:
                return route, params, []
            allowed += [m for m in sorted(methods) if m not in allowed]
        return None, {}, allowed

    def endpoint_of(self, segs: list[str]) -> str:
        for route, pattern, _methods in self._compiled:
            if _match_path(pattern, segs) is not None:
                return route.endpoint
        return "other"


def _match_path(pattern: tuple[str, ...], segs: list[str]) -> dict[str, str] | None:
    if len(pattern) != len(segs):
        return None
    params: dict[str, str] = {}
    for want, got in zip(pattern, segs):
        if want.startswith("{"):
            if not got or got.startswith("_"):
                return None
            params[want[1:-1]] = got
        elif want != got:
            return None
    return params


# ============================================================================ HTTP server
class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], owner: BaseTestServer) -> None:
        self.owner = owner
        super().__init__(addr, Exchange)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.owner.ssl_context is not None:  # the handshake runs in the connection's thread
            sock = self.owner.ssl_context.wrap_socket(sock, server_side=True,
                                                      do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, OSError, ValueError)):
            return
        super().handle_error(request, client_address)


class Exchange(BaseHTTPRequestHandler):
    """One connection; each request on it is read whole and handed to the owner."""

    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()  # a failed handshake ends the connection here
        super().setup()
        self.server.owner._track(self.connection, True)

    def finish(self) -> None:
        self.server.owner._track(self.connection, False)
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

    # ------------------------------------------------------------------ reading
    def _read_body(self, keep: int) -> tuple[bytes, int]:
        """(body, its full length); bytes beyond ``keep`` are read and dropped."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            kept = total = 0
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                data = self.rfile.read(size)
                total += len(data)
                if kept < keep:
                    chunks.append(data[: keep - kept])
                    kept += len(chunks[-1])
                self.rfile.readline(65537)
            return b"".join(chunks), total
        n = int(self.headers.get("Content-Length") or 0)
        if n <= keep:
            return (self.rfile.read(n) if n > 0 else b""), n
        body = self.rfile.read(keep)
        left = n - keep
        while left > 0:
            got = self.rfile.read(min(left, 1 << 20))
            if not got:
                break
            left -= len(got)
        return body, n

    def _handle(self, method: str) -> None:
        owner = self.server.owner
        self.status: int | None = None
        self.record: RequestRecord | None = None
        try:
            body, size = self._read_body(owner.max_body_bytes + 1)
        except (OSError, ValueError):
            self.close_connection = True
            return
        url = urlsplit(self.path)
        segs = [unquote(s) for s in url.path.split("/") if s]
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        request = Request(method, self.path, segs, params, self.headers, body, size)
        try:
            owner.handle(self, request)
        finally:
            self._finalize()

    # ------------------------------------------------------------------ answering
    def begin(self, record: RequestRecord) -> None:
        """Account this request in the log once it is answered (or reset)."""
        self.record = record

    def send(self, resp: Response, head: bool = False) -> None:
        data = resp.body
        lines = [f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Unknown')}"]
        lines += [f"{k}: {v}" for k, v in resp.headers]
        if (data or head) and resp.content_type:
            lines.append(f"content-type: {resp.content_type}")
        accept_enc = (self.headers.get("Accept-Encoding") or "").lower()
        if (data and not head and self.server.owner.gzip_responses and "gzip" in accept_enc
                and len(data) >= 1024):
            data = gzip.compress(data, compresslevel=1)
            lines.append("content-encoding: gzip")
        lines.append(f"content-length: {len(data)}")
        if resp.close:
            self.close_connection = True
        if self.close_connection:
            lines.append("connection: close")
        blob = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if not head:
            blob += data
        self.status = resp.status
        self._finalize()
        try:
            self.wfile.write(blob)
        except OSError:
            self.close_connection = True

    def reset(self) -> None:
        """Abort the connection with a TCP RST and no response."""
        self._finalize()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        self.server.owner._track(self.connection, False)
        with contextlib.suppress(OSError):
            self.rfile.close()
        with contextlib.suppress(OSError):
            self.connection.close()

    def shutdown_write(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)

    def _finalize(self) -> None:
        """Account for the request (before the client can observe the outcome)."""
        record = self.record
        if record is None:
            return
        self.record = None
        owner = self.server.owner
        record.status = self.status
        if self.status is not None:
            owner._count(f"responses.{self.status}")
        owner.request_log.append(record)


class BaseTestServer:
    """Lifecycle, connections, counters and up/down of a test HTTP server."""

    name = "testserver"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 gzip_responses: bool = True, request_log_size: int = 2000,
                 max_body_bytes: int = 1 << 30, ssl_context: ssl.SSLContext | None = None
                 ) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context  # serve HTTPS with this server-side context
        self.gzip_responses = gzip_responses
        self.max_body_bytes = max_body_bytes  # bodies beyond are read and dropped
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

    def handle(self, exchange: Exchange, request: Request) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    def start(self: _T) -> _T:
        with self._life_lock:
            if self._running:
                return self
            self._serve()
            self._running = True
        self._started()
        return self

    def _started(self) -> None:
        """Hook: called once the server listens."""

    def _stopping(self) -> None:
        """Hook: called when the server stops."""

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
        self._stopping()

    def __enter__(self: _T) -> _T:
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
                                        name=f"{self.name}-{self.port}", daemon=True)
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

    def go_down(self, seconds: float | None = None) -> None:
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
        self._close_connections(None)

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

    def stats(self) -> dict[str, int]:
        """Snapshot of all counters."""
        with self._counter_lock:
            return dict(self._counters)

    def counter(self, key: str) -> int:
        with self._counter_lock:
            return self._counters.get(key, 0)

    def reset_stats(self) -> None:
        with self._counter_lock:
            self._counters.clear()
        self.request_log.clear()


def run_standalone(server: BaseTestServer, port_file: str | None, banner: str) -> int:
    """Serve until SIGTERM/SIGINT; the bound port goes to ``port_file`` (atomically)."""
    server.start()
    if port_file:
        tmp = f"{port_file}.tmp.{os.getpid()}"
        with open(tmp, "w") as fh:
            fh.write(f"{server.port}\n")
        os.replace(tmp, port_file)
    print(f"{banner} listening on {server.url}", file=sys.stderr, flush=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop.wait(0.5):
        pass
    server.stop()
    return 0
