"""`audit-collector setup` / `check`: ILM policy, index template, data stream."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from collector.delivery.elasticsearch.index import (
    field_properties,
    setup_cluster,
    template_body,
)
from collector.fields import FIELDS
from collector.preflight import check_cluster
from tests.delivery.helpers import DATA_STREAM, make_config
from tests.esserver import ESTestServer


@pytest.fixture(params=[8, 9], ids=["es8", "es9"])
def server(request: pytest.FixtureRequest) -> Iterator[ESTestServer]:
    with ESTestServer(major=request.param) as srv:
        yield srv


def run_setup(cfg: Any) -> tuple[int, list[str]]:
    out = io.StringIO()
    status = setup_cluster(cfg, out)
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


def test_unreachable_cluster(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    cfg = make_config(tmp_path, f"http://127.0.0.1:{port}")
    status, lines = run_setup(cfg)
    assert status == 1 and lines[-1].startswith("setup failed: ConnectionError")
    [result] = check_cluster(cfg)
    assert not result.ok
