"""`audit-collector setup` / `check`: ILM policy, index template, data stream."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from elasticsearch import Elasticsearch

from collector.delivery.elasticsearch.index import (
    field_properties,
    setup_cluster,
    template_body,
)
from collector.fields import FIELDS
from collector.preflight import check_cluster
from tests.delivery.helpers import DATA_STREAM, make_config
from tests.esserver import ESTestServer

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(params=[8, 9], ids=["es8", "es9"])
def server(request: pytest.FixtureRequest) -> Iterator[ESTestServer]:
    with ESTestServer(major=request.param) as srv:
        yield srv


def run_setup(cfg: Any) -> tuple[int, list[str]]:
    out = io.StringIO()
    status = setup_cluster(cfg, out, err=out)
    return status, out.getvalue().splitlines()


def lookup(properties: dict[str, Any], path: str) -> dict[str, Any]:
    *parents, leaf = path.split(".")
    node = properties
    for name in parents:
        node = node[name]["properties"]
    return node[leaf]


def test_properties_cover_every_field() -> None:
    properties = field_properties()
    for path, (mapping_type, _) in FIELDS.items():
        assert lookup(properties, path)["type"] == mapping_type
    assert lookup(properties, "@timestamp") == {"type": "date"}  # ECS
    assert lookup(properties, "audit_collector.timestamp") == {"type": "date_nanos"}


def test_setup_installs_everything_once(server: ESTestServer, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, server.url, es={"api_version": server.major})
    status, lines = run_setup(cfg)
    assert status == 0
    assert lines == [
        "ILM policy logs-audit_collector-policy: created",
        "index template logs-audit_collector: created",
        f"data stream {DATA_STREAM}: created",
    ]
    status, lines = run_setup(cfg)
    assert status == 0
    assert lines == [
        "ILM policy logs-audit_collector-policy: already up to date",
        "index template logs-audit_collector: already up to date",
        f"data stream {DATA_STREAM}: already exists",
    ]
    template = server.template("logs-audit_collector")
    assert template is not None
    assert template["index_patterns"] == ["logs-audit_collector-*"]
    assert template["priority"] == 200 and "data_stream" in template
    assert server.data_stream_names() == [DATA_STREAM]
    mapping = server.mapping(DATA_STREAM)
    assert mapping["dynamic"] in (False, "false")
    assert lookup(mapping["properties"], "@timestamp")["type"] == "date"
    assert lookup(mapping["properties"], "process.args")["type"] == "keyword"
    assert lookup(mapping["properties"], "audit_collector.chain.hash")["type"] == "keyword"


def test_changed_config_updates_policy_and_template(server: ESTestServer,
                                                    tmp_path: Path) -> None:
    cfg = make_config(tmp_path, server.url, es={"api_version": server.major})
    run_setup(cfg)
    ilm = msgspec.structs.replace(cfg.elasticsearch.ilm, delete_after="30d")
    changed = msgspec.structs.replace(cfg, elasticsearch=msgspec.structs.replace(cfg.elasticsearch,
                                                                          ilm=ilm))
    status, lines = run_setup(changed)
    assert status == 0
    assert lines[0] == "ILM policy logs-audit_collector-policy: updated"
    assert lines[1] == "index template logs-audit_collector: already up to date"


def test_template_settings() -> None:
    body = template_body(make_config(Path("/tmp"), "http://127.0.0.1:1"))
    settings = body["template"]["settings"]
    assert settings["index.lifecycle.name"] == "logs-audit_collector-policy"
    assert settings["index.mode"] == "standard"  # stored _source: chain hashes verifiable
    assert body["template"]["mappings"]["dynamic"] is False


def test_check_reports_version_and_template_state(server: ESTestServer, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, server.url, es={"api_version": server.major})
    before = check_cluster(cfg)
    assert before[0].ok and f"version {server.major}." in before[0].detail
    assert not before[1].ok and "not installed" in before[1].detail
    run_setup(cfg)
    after = check_cluster(cfg)
    assert all(r.ok for r in after), [r.line() for r in after]
    assert [r.name for r in after] == ["elasticsearch reachable", "index template",
                                       f"data stream {DATA_STREAM}"]


def test_check_fails_on_a_stream_the_collector_did_not_set_up(tmp_path: Path) -> None:
    with ESTestServer(major=9) as server:
        cfg = make_config(tmp_path, server.url, es={"api_version": 9})
        server_client = Elasticsearch(server.url)
        server_client.index(index=DATA_STREAM, document={"@timestamp": "2026-01-01T00:00:00Z"})
        stream = check_cluster(cfg)[2]  # made by the built-in template (logsdb on 9)
        status, lines = run_setup(cfg)  # rolls it over to a write index of ours
        after = check_cluster(cfg)[2]
    assert not stream.ok, stream.line()
    assert "logsdb" in stream.detail or "template" in stream.detail, stream.line()
    assert status == 0 and "rolled over" in lines[-1], lines
    assert after.ok, after.line()


def test_setup_rolls_over_a_stream_from_another_template(tmp_path: Path) -> None:
    """A stream an older collector created before any setup (Elasticsearch's built-in
    logs template): its mappings conflict with ours, so setup rolls it over (the new write
    index takes our template) instead of failing on a mapping error."""
    with ESTestServer(major=8) as server:
        cfg = make_config(tmp_path, server.url)
        client = Elasticsearch(server.url)
        client.index(index=DATA_STREAM, document={"@timestamp": "2026-01-01T00:00:00Z",
                                                  "message": "written before setup"})
        status, lines = run_setup(cfg)
        stream = client.indices.get_data_stream(name=DATA_STREAM).body["data_streams"][0]
        ok = check_cluster(cfg)[2]
        client.close()
    text = "\n".join(lines)
    assert status == 0, text
    assert "built from index template 'logs'" in text and "rolled over to" in text, text
    assert "cannot be changed" not in text, text
    assert len(stream["indices"]) == 2 and stream["template"] == "logs-audit_collector"
    assert ok.ok, ok.line()


def test_setup_rolls_over_when_an_upgrade_changes_a_field_type(tmp_path: Path) -> None:
    """An earlier collector's template mapped @timestamp as date_nanos: a type cannot change
    in place, so setup rolls the stream over; the old backing index keeps its mapping, the
    new one has the template's, and documents go on being accepted."""
    with ESTestServer(major=8) as server:
        cfg = make_config(tmp_path, server.url)
        client = Elasticsearch(server.url)
        older = template_body(cfg)
        older["template"]["mappings"]["properties"]["@timestamp"] = {"type": "date_nanos"}
        older["_meta"] = {**older["_meta"], "content_hash": "an-older-one"}
        client.indices.put_index_template(name="logs-audit_collector", **older)
        client.index(index=DATA_STREAM, document={"@timestamp": "2026-01-01T00:00:00Z"})
        status, lines = run_setup(cfg)
        first, second = (i["index_name"] for i in client.indices.get_data_stream(
            name=DATA_STREAM).body["data_streams"][0]["indices"])
        mappings = client.indices.get_mapping(index=DATA_STREAM).body
        client.index(index=DATA_STREAM, document={"@timestamp": "2026-01-02T00:00:00Z"})
        client.indices.refresh(index=DATA_STREAM)
        count = client.count(index=DATA_STREAM).body["count"]
        again = run_setup(cfg)
        client.close()
    text = "\n".join(lines)
    assert status == 0, text
    assert "the type of @timestamp changed: rolled over to " + second in text, text
    timestamp = {name: m["mappings"]["properties"]["@timestamp"]["type"]
                 for name, m in mappings.items()}
    assert timestamp == {first: "date_nanos", second: "date"}
    assert count == 2
    assert again[0] == 0 and "already exists" in again[1][-1] and "rolled" not in again[1][-1]


def test_unreachable_cluster(tmp_path: Path) -> None:
    port = closed_port()
    cfg = make_config(tmp_path, f"http://127.0.0.1:{port}")
    status, lines = run_setup(cfg)
    assert status == 1
    assert lines[-1] == (f"setup failed: cannot connect to http://127.0.0.1:{port}: "
                         "connection refused")
    [result] = check_cluster(cfg)
    assert not result.ok
    assert result.detail == f"cannot connect to http://127.0.0.1:{port}: connection refused"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens here once closed


def run_cli(tmp_path: Path, *args: str, log_level: str = "info"
            ) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.yaml"
    config.write_text(f"outputs: ['elasticsearch:http://127.0.0.1:{closed_port()}']\n"
                      f"state_dir: {tmp_path / 'state'}\nlog_level: {log_level}\n")
    return subprocess.run([sys.executable, "-m", "collector", *args, "--config", str(config)],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.parametrize("command", ["setup", "verify"])
def test_unreachable_cluster_is_one_line_on_stderr(tmp_path: Path, command: str) -> None:
    """The client's transport logged INFO/WARNING lines before the command's own error."""
    proc = run_cli(tmp_path, command)
    assert proc.returncode != 0
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "127.0.0.1" in proc.stderr and "refused" in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_client_logging_shows_with_log_level_debug(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "setup", log_level="debug")
    assert proc.returncode != 0
    assert "elastic_transport" in proc.stderr
