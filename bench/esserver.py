"""The Elasticsearch-API test server (tests/esserver) in its own process, on loopback.

Its own process, so that it does not share the benchmark's (or the shipper's) GIL, as a real
cluster would not; it still shares this machine's CPUs, which the results say.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA_STREAM = "logs-audit_collector-default"
START_TIMEOUT_S = 30.0


class ESServer:
    def __init__(self, major: int = 8, port: int = 0) -> None:
        self._major = major
        self._port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self.url = ""

    def __enter__(self) -> ESServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="acb-es-"))
        port_file = self._tmp / "port"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.esserver", "--host", "127.0.0.1",
             "--port", str(self._port), "--major", str(self._major),
             "--port-file", str(port_file)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not port_file.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"the ES test server did not start: {err.strip()}")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{port_file.read_text().strip()}"

    def stop(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(20)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        self._proc = None

    # ------------------------------------------------------------------ requests

    def stats(self) -> dict[str, Any]:
        return dict(self.request("GET", "/_test/stats"))

    def request(self, method: str, path: str, body: Any = None, timeout: float = 60) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())

    def reset(self) -> None:
        """Forget every index and document (frees the server's memory between cases)."""
        self.request("POST", "/_test/reset")

    def count(self, query: dict[str, Any] | None = None, index: str = DATA_STREAM) -> int:
        try:
            self.request("POST", f"/{index}/_refresh")
            body = {"query": query} if query else None
            return int(self.request("POST", f"/{index}/_count", body)["count"])
        except urllib.error.HTTPError as exc:
            if exc.code == 404:  # nothing shipped yet: the data stream does not exist
                return 0
            raise

    def count_marker(self, marker: str) -> int:
        """Exec documents of the load (end documents carry the process's args too)."""
        return self.count({"bool": {"filter": [{"term": {"process.args": marker}},
                                               {"term": {"event.action": "exec"}}]}})
