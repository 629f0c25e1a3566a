"""`audit-collector run` as a user runs it: a real process, real probes, real signals."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

import collector

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="BPF needs root")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                health = json.loads(r.read())
                if health.get("probes_attached"):
                    return health
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("collector never reported probes_attached")


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_run_writes_documents_and_stops_cleanly(tmp_path: Path, stop_signal: int) -> None:
    port = free_port()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"state_dir: {tmp_path}/state\nmetrics: {{listen: 127.0.0.1:{port}}}\n")
    out = tmp_path / "events.ndjson"
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector", "run", "--config", str(cfg),
         "--output", f"file:{out}", "--output", "stdout"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        health = wait_healthy(port, proc)
        assert health["families"] == ["exec", "namespaces", "bash", "fork", "exit"]
        # What the Ansible role compares with the file it installed (tasks/verify.yml).
        assert health["config_digest"] == hashlib.sha256(cfg.read_bytes()).hexdigest()
        assert health["version"] == collector.__version__
        mark = f"run-{uuid.uuid4().hex[:10]}"
        subprocess.run(["/bin/true", mark], check=True)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert "audit_collector_events_captured_total" in metrics
        time.sleep(0.5)
    finally:
        proc.send_signal(stop_signal)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode()
    file_docs = [json.loads(line) for line in out.read_text().split("\n") if line]
    stdout_docs = [json.loads(line) for line in stdout.decode().split("\n") if line]
    assert [d["event"]["sequence"] for d in file_docs] == \
        [d["event"]["sequence"] for d in stdout_docs]
    mine = [d for d in file_docs if d["process"].get("args") == ["/bin/true", mark]]
    assert [d["event"]["action"] for d in mine] == ["exec", "end"]  # end carries the argv
    assert mine[0]["process"]["entity_id"] == mine[1]["process"]["entity_id"]
    seqs = [d["event"]["sequence"] for d in file_docs]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert b"Traceback" not in stderr
