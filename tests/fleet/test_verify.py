"""The role's /health check: the collector must run the version and the configuration
(sha256 of config.yml) that the role has just installed.

A small HTTP server stands in for the collector's /health here (this machine runs no
systemd to start the real one): what is tested is the role's side. That the collector
reports the same digest of its configuration file is tested in tests/test_run.py.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.fleet.fleetlib import HERE, PROJECT_VENV, Fleet, Run

VERSION = "0.1.0"


class Health(ThreadingHTTPServer):
    answer: dict[str, Any] = {}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(self.server.answer).encode()  # type: ignore[attr-defined]
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


CASES: dict[str, dict[str, Any]] = {
    "running_what_was_installed": {"probes_attached": True, "version": VERSION,
                                   "config_digest": "DIGEST"},
    # A restart that did not happen: the collector still runs the old configuration.
    "stale_configuration": {"probes_attached": True, "version": VERSION,
                            "config_digest": "0" * 64},
    "other_version": {"probes_attached": True, "version": "0.0.9", "config_digest": "DIGEST"},
    "without_identity": {"probes_attached": True},
}


@pytest.fixture(scope="module")
def verified(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """One run, one host per case, each with its own /health; all through a proxy that
    does not exist (the loopback check went through $http_proxy when one was set)."""
    fleet = Fleet(tmp_path_factory.mktemp("verify"))
    servers = []
    for name, answer in CASES.items():
        server = Health(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        prefix = fleet.add_host(name, audit_collector_venv_dir=str(PROJECT_VENV),
                                audit_collector_service_manage=True,
                                audit_collector_verify=True, audit_collector_verify_retries=2,
                                audit_collector_verify_delay=0,
                                audit_collector_metrics_listen=f"127.0.0.1:{server.server_port}")
        config = prefix / "etc" / "audit-collector" / "config.yml"
        config.parent.mkdir(parents=True)
        config.write_text(f"outputs: [stdout]\n# {name}\n")
        digest = hashlib.sha256(config.read_bytes()).hexdigest()
        server.answer = {k: (digest if v == "DIGEST" else v) for k, v in answer.items()}
    dead_proxy = "http://127.0.0.1:9"
    yield fleet.play(HERE / "playbooks" / "verify.yml",
                     env={"http_proxy": dead_proxy, "HTTP_PROXY": dead_proxy, "no_proxy": ""})
    for server in servers:
        server.shutdown()
        server.server_close()


def failure(run: Run, host: str) -> str:
    failed = [r for r in run.results(host=host) if r["status"] == "failed"]
    return failed[0]["msg"] if failed else ""


def test_collector_running_what_was_installed(verified: Run) -> None:
    assert verified.recap()["running_what_was_installed"]["failed"] == 0, verified.explain()


def test_stale_configuration_fails_the_host(verified: Run) -> None:
    assert "runs the configuration with sha256 " + "0" * 64 in \
        failure(verified, "stale_configuration"), verified.explain()


def test_other_version_fails_the_host(verified: Run) -> None:
    assert f"runs version 0.0.9, installed is {VERSION}" in failure(verified, "other_version")


def test_collector_without_identity_fails_the_host(verified: Run) -> None:
    assert "its /health reports no version and config_digest" in \
        failure(verified, "without_identity"), verified.explain()
