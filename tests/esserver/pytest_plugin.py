"""pytest fixtures for the Elasticsearch-API test server.

Enable with ``pytest_plugins = ["tests.esserver.pytest_plugin"]`` in ``tests/conftest.py``
(needs the repository root on ``sys.path``, e.g. ``pythonpath = ["."]`` in the pytest ini
options).

Fixtures:

* ``es_server`` - a fresh major-8 :class:`ESTestServer` per test.
* ``es_server_factory`` - ``factory(**ESTestServer kwargs) -> ESTestServer`` (all stopped at
  teardown), e.g. ``es_server_factory(major=9)``.
* ``es_client`` - an ``elasticsearch.Elasticsearch`` for ``es_server`` (``max_retries=0``,
  ``request_timeout=10``) so injected faults surface directly.
* ``es_server_process`` - a standalone ``python -m tests.esserver`` subprocess; yields an
  :class:`ServerProcess` with ``.url``, ``.admin`` (HTTP admin API client) and ``.proc``.
* ``kibana_server`` - a fresh :class:`KibanaTestServer` (default space only) per test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from .kibana import KibanaTestServer
from .server import ESTestServer

REPO_ROOT = Path(__file__).resolve().parents[2]


class AdminClient:
    """Tiny urllib client for the ``/_test/...`` admin API of an out-of-process server."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = orjson.dumps(body) if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return orjson.loads(resp.read())

    def add_fault(self, **spec: Any) -> int:
        """``add_fault(kind="status", status=429, requests=2)`` → fault id."""
        return int(self._call("POST", "/_test/faults", spec)["id"])

    def faults(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_test/faults")["faults"])

    def clear_faults(self) -> None:
        self._call("DELETE", "/_test/faults")

    def stats(self) -> dict[str, int]:
        return dict(self._call("GET", "/_test/stats"))

    def reset(self) -> None:
        self._call("POST", "/_test/reset")

    def down(self, seconds: float | None) -> None:
        self._call("POST", "/_test/down", {"seconds": seconds})

    def docs(self, target: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/_test/docs/{target}"))

    def doc(self, target: str, doc_id: str) -> dict[str, Any] | None:
        try:
            return dict(self._call("GET", f"/_test/docs/{target}/{doc_id}"))
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise


class ServerProcess:
    """A standalone server subprocess (``python -m tests.esserver``)."""

    def __init__(self, workdir: Path, host: str = "127.0.0.1", major: int = 8,
                 extra_args: list[str] | None = None, startup_timeout: float = 15.0,
                 module: str = "tests.esserver") -> None:
        port_file = workdir / f"esserver-{os.getpid()}-{time.monotonic_ns()}.port"
        version = ["--major", str(major)] if module == "tests.esserver" else []
        cmd = [sys.executable, "-m", module, "--host", host, "--port", "0", *version,
               "--port-file", str(port_file), *(extra_args or [])]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE)
        deadline = time.monotonic() + startup_timeout
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"esserver process did not start: {err}")
            time.sleep(0.02)
        self.port = int(port_file.read_text().strip())
        self.host = host
        self.url = f"http://{host}:{self.port}"
        self.admin = AdminClient(self.url)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return int(self.proc.returncode)


@pytest.fixture
def es_server() -> Iterator[ESTestServer]:
    with ESTestServer(major=8) as srv:
        yield srv


@pytest.fixture
def es_server_factory() -> Iterator[Callable[..., ESTestServer]]:
    servers: list[ESTestServer] = []

    def make(**kwargs: Any) -> ESTestServer:
        srv = ESTestServer(**kwargs).start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


@pytest.fixture
def es_client(es_server: ESTestServer) -> Iterator[Any]:
    from elasticsearch import Elasticsearch

    client = Elasticsearch(es_server.url, max_retries=0, request_timeout=10)
    yield client
    client.close()


@pytest.fixture
def es_server_process(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path)
    yield proc
    proc.stop()


@pytest.fixture
def kibana_server() -> Iterator[KibanaTestServer]:
    with KibanaTestServer() as srv:
        yield srv
