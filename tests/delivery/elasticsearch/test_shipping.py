"""The shipper against the Elasticsearch-API test server: ids, outcomes, headers, speed."""

from __future__ import annotations

import gzip as stdlib_gzip
import io
import os
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from elasticsearch import BadRequestError

from collector.delivery.elasticsearch.client import _tls_options, build_client, gzip_body
from collector.delivery.elasticsearch.index import setup_cluster
from collector.delivery.elasticsearch.outcomes import classify_item
from collector.delivery.elasticsearch.settings import ClusterConfigError
from collector.delivery.elasticsearch.shipper import BULK_FILTER_PATH
from collector.delivery.metrics import DeliveryMetrics
from collector.delivery.spool import Spool
from tests.delivery.elasticsearch.support import install_template
from tests.delivery.helpers import (
    DATA_STREAM,
    dead_letter_ids,
    doc_id,
    make_config,
    metric,
    new_pipeline,
    split_stored,
    stored,
    submit_docs,
)
from tests.esserver import ESTestServer


def test_every_document_stored_once_under_its_deterministic_id(
    server: ESTestServer, tmp_path: Path
) -> None:
    cfg = make_config(tmp_path, server.url)
    assert setup_cluster(cfg) == 0
    metrics = DeliveryMetrics()
    pipeline = new_pipeline(cfg, metrics)
    run = submit_docs(pipeline, 2500)
    pipeline.close(30)
    docs = stored(server)
    assert sorted(docs) == sorted(run.ids)
    assert [docs[i]["event"]["sequence"] for i in run.ids] == run.seqs
    assert run.seqs == list(range(run.seqs[0], run.seqs[0] + 2500))
    assert metric(metrics, "audit_collector_shipped_documents_total") == 2500
    assert metric(metrics, "audit_collector_documents_total", output="elasticsearch") == 2500
    assert server.counter("bulk.items.created") == 2500
    # Handed to the shipper in memory (the spool's fast path), not read back from disk.
    assert metric(metrics, "audit_collector_spool_read_records_total", source="memory") == 2500
    assert metric(metrics, "audit_collector_spool_read_records_total", source="disk") == 0
    assert metrics.es_reachable_state is True
    assert Spool(cfg.spool).pending() == (0, 0)


def test_replayed_records_are_409_duplicates_not_copies(
    server: ESTestServer, tmp_path: Path
) -> None:
    cfg = make_config(tmp_path, server.url)
    pipeline = new_pipeline(cfg)
    run = submit_docs(pipeline, 300)
    pipeline.close(30)
    # Forget every acknowledgement, as if the collector died before writing the ack file.
    (Path(cfg.spool.dir) / "ack.json").unlink()
    metrics = DeliveryMetrics()
    replay = new_pipeline(cfg, metrics)
    replay.close(30)
    # The spool keeps its newest segment, so all 300 records are sent again: all 409.
    assert metric(metrics, "audit_collector_shipped_duplicates_total") == 300
    assert metric(metrics, "audit_collector_spool_read_records_total", source="disk") == 300
    assert sorted(stored(server)) == sorted(run.ids)


def test_mapping_errors_go_to_the_dead_letter_file_and_are_reported(
    server: ESTestServer, tmp_path: Path
) -> None:
    cfg = make_config(tmp_path, server.url)
    setup_cluster(cfg)
    server.mapping_errors(predicate=lambda item: item.source is not None
                          and item.source.get("process", {}).get("pid", 1) % 50 == 7,
                          reason="failed to parse field [process.pid]")
    metrics = DeliveryMetrics()
    pipeline = new_pipeline(cfg, metrics)
    run = submit_docs(pipeline, 1000)
    pipeline.close(30)
    rejected = [i for n, i in enumerate(run.ids) if (1000 + n) % 50 == 7]
    synthetic, lost = split_stored(server)
    assert len(rejected) == 20
    assert sorted(synthetic) == sorted(set(run.ids) - set(rejected))
    assert sorted(dead_letter_ids(cfg)) == sorted(rejected)
    assert metric(metrics, "audit_collector_dead_letters_total") == 20
    dead_letters = Path(cfg.elasticsearch.dead_letter_file or "")
    assert dead_letters.stat().st_mode & 0o777 == 0o600  # typed lines: owner-only
    assert metric(metrics, "audit_collector_events_lost_total", kind="document",
                  where="dead_letter") == 20
    line = orjson.loads(Path(cfg.elasticsearch.dead_letter_file or "").read_bytes()
                        .splitlines()[0])
    assert line["status"] == 400 and "process.pid" in orjson.dumps(line["error"]).decode()
    assert line["document"]["event"]["sequence"] == line["sequence"]
    reported = sum(d["audit_collector"]["lost"]["documents"] for d in lost.values())
    assert reported == 20
    assert {d["audit_collector"]["lost"]["source"] for d in lost.values()} == {"dead_letter"}


def test_bulk_body_uses_create_and_the_data_stream(server: ESTestServer, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, server.url)
    pipeline = new_pipeline(cfg)
    submit_docs(pipeline, 10)
    pipeline.close(30)
    bulks = [r for r in server.request_log if r.endpoint == "bulk"]
    assert bulks and all(r.path.startswith(f"/{DATA_STREAM}/_bulk") for r in bulks)
    # Only errors and each item's status/error come back, not ~250 bytes per stored item.
    queries = [urllib.parse.parse_qs(urllib.parse.urlsplit(r.path).query) for r in bulks]
    assert all(q["filter_path"] == [BULK_FILTER_PATH] for q in queries), queries
    assert server.counter("bulk.items.created") == 10  # create, not index


@pytest.mark.parametrize(("server_major", "api_version", "accepted"),
                         [(8, 8, True), (8, 9, False), (9, 8, True), (9, 9, True)])
def test_client_announces_the_configured_api_version(
    tmp_path: Path, server_major: int, api_version: int, accepted: bool
) -> None:
    # A server of major N accepts compatible-with N or N-1: an 8 server refusing the
    # api_version 9 client proves the client really sends 9.
    with ESTestServer(major=server_major) as srv:
        client = build_client(make_config(tmp_path, srv.url, es={"api_version": api_version}))
        if accepted:
            assert client.info().body["version"]["number"].startswith(f"{server_major}.")
        else:
            with pytest.raises(BadRequestError, match="media_type_header_exception"):
                client.info()


def test_gzip_bodies_are_sent_when_configured(server: ESTestServer, tmp_path: Path) -> None:
    sizes = {}
    for gzip in (True, False):
        server.reset()
        install_template(server, tmp_path)
        cfg = make_config(tmp_path / str(gzip), server.url, es={"gzip": gzip})
        pipeline = new_pipeline(cfg)
        submit_docs(pipeline, 500)
        pipeline.close(30)
        sizes[gzip] = sum(r.bytes_in for r in server.request_log if r.endpoint == "bulk")
        assert len(stored(server)) == 500
    assert sizes[True] * 3 < sizes[False]


def test_gzip_bodies_are_standard_gzip_streams() -> None:
    body = b'{"create":{"_id":"h-b-1"}}\n{"event":{"sequence":1}}\n' * 500
    packed = gzip_body(body, 1)
    assert packed[:2] == b"\x1f\x8b" and len(packed) < len(body) // 10
    assert stdlib_gzip.decompress(packed) == body  # the header and CRC-32 trailer readers expect


def test_gzip_levels_above_isal_best_use_its_best() -> None:
    """ISA-L has levels 0-3: gzip_level 4-9 (zlib's range, still accepted) mean its 3 (which
    compresses this repetitive body better than its 1)."""
    body = b"".join(b'{"create":{"_id":"h-b-%d"}}\n{"process":{"args":["x%d"]}}\n' % (n, n % 7)
                    for n in range(2000))
    best = gzip_body(body, 3)
    assert all(gzip_body(body, level) == best for level in range(4, 10))
    assert len(best) < len(gzip_body(body, 1))
    assert stdlib_gzip.decompress(best) == body


def test_gzip_level_is_applied_once_by_the_collector(server: ESTestServer, tmp_path: Path) -> None:
    """The transport's own gzip (always level 9) is bypassed: bodies are compressed once, at
    elasticsearch.gzip_level, and responses are asked for gzipped."""
    sizes = {}
    for level in (1, 9):
        server.reset()
        install_template(server, tmp_path)
        cfg = make_config(tmp_path / str(level), server.url, es={"gzip_level": level})
        pipeline = new_pipeline(cfg)
        submit_docs(pipeline, 500, pad=300)
        pipeline.close(30)
        bulks = [r for r in server.request_log if r.endpoint == "bulk"]
        assert {r.content_encoding for r in bulks} == {"gzip"}
        assert len(stored(server)) == 500  # one decompression gives the NDJSON back
        sizes[level] = sum(r.bytes_in for r in bulks)
    assert sizes[9] < sizes[1]


@pytest.fixture(scope="module")
def external_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The test server in its own process, so it does not share our GIL (as a real one)."""
    port_file = tmp_path_factory.mktemp("esserver") / "port"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    proc = subprocess.Popen([sys.executable, "-m", "tests.esserver", "--port", "0",
                             "--port-file", str(port_file)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port_file.read_text().strip()}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("gzip", [True, False], ids=["gzip", "plain"])
def test_throughput(external_server: str, tmp_path: Path, gzip: bool) -> None:
    """Docs/s from submit to acknowledged by the test server, one process (printed)."""
    count = 30000
    cfg = make_config(tmp_path, external_server, es={"gzip": gzip, "dataset": f"tp{int(gzip)}"},
                      batch={"max_docs": 1000, "max_wait_s": 1.0})
    assert setup_cluster(cfg, io.StringIO()) == 0
    pipeline = new_pipeline(cfg)
    started = time.monotonic()
    submit_docs(pipeline, count, tick_every=500)
    submitted = time.monotonic() - started
    pipeline.close(120)
    elapsed = time.monotonic() - started
    client = build_client(cfg)
    client.indices.refresh(index=cfg.elasticsearch.data_stream)
    assert client.count(index=cfg.elasticsearch.data_stream).body["count"] == count
    print(f"\nthroughput gzip={'on' if gzip else 'off'}: {count / elapsed:,.0f} docs/s shipped "
          f"({count} docs in {elapsed:.2f}s; submit alone {count / submitted:,.0f} docs/s)")


def test_credentials_come_from_file_or_environment_and_are_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "api_key"
    key_file.write_text("c2VjcmV0LWtleQ==\n")
    client = build_client(make_config(tmp_path, "http://127.0.0.1:9", es={
        "api_key_file": str(key_file)}))
    assert client._headers["authorization"] == "ApiKey c2VjcmV0LWtleQ=="
    assert "c2VjcmV0" not in repr(client)
    monkeypatch.setenv("ES_PW", "hunter2")
    client = build_client(make_config(tmp_path, "http://127.0.0.1:9", es={
        "username": "collector", "password_env": "ES_PW"}))
    assert client._headers["authorization"].startswith("Basic ")
    assert "hunter2" not in repr(client)
    monkeypatch.delenv("ES_PW")
    with pytest.raises(ClusterConfigError, match="ES_PW") as info:
        build_client(make_config(tmp_path, "http://127.0.0.1:9", es={
            "username": "collector", "password_env": "ES_PW"}))
    assert "hunter2" not in str(info.value)


def test_tls_options_apply_to_https(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, "https://127.0.0.1:9", es={"ca_file": "/etc/ssl/ca.pem"})
    assert _tls_options(cfg.elasticsearch, ["https://127.0.0.1:9"]) == {
        "verify_certs": True, "ca_certs": "/etc/ssl/ca.pem"}
    assert _tls_options(cfg.elasticsearch, ["http://127.0.0.1:9"]) == {}


def test_item_errors_about_the_cluster_are_retried_not_dead_lettered(
    server: ESTestServer, tmp_path: Path
) -> None:
    server.fail_items(503, every=2, requests=3)  # unavailable_shards_exception per item
    cfg = make_config(tmp_path, server.url)
    pipeline = new_pipeline(cfg)
    run = submit_docs(pipeline, 300)
    pipeline.close(30)
    assert sorted(stored(server)) == sorted(run.ids)
    assert dead_letter_ids(cfg) == []
    assert server.counter("bulk.items.status.503") > 0


@pytest.mark.parametrize(("status", "error", "retried"), [
    (429, {"type": "es_rejected_execution_exception"}, True),
    (503, {"type": "unavailable_shards_exception"}, True),
    (403, {"type": "cluster_block_exception"}, True),  # a write block
    (429, {"type": "cluster_block_exception"}, True),  # flood stage
    (404, {"type": "index_not_found_exception"}, True),
    (400, {"type": "index_closed_exception"}, True),  # a cluster state, not the document
    (400, {"type": "something_new_exception"}, True),  # unknown: held, never lost
    (400, {"type": "illegal_argument_exception", "reason": "only write ops with an op_type "
           "of create are allowed in data streams"}, True),
    (400, {"type": "document_parsing_exception", "reason": "failed to parse field [a]"}, False),
    (400, {"type": "mapper_parsing_exception", "reason": "failed to parse"}, False),
    (400, {"type": "strict_dynamic_mapping_exception", "reason": "mapping set to strict"},
     False),
    (400, {"type": "illegal_argument_exception", "reason": "Document contains at least one "
           "immense term in field=\"message\""}, False),
    # A wrapper whose cause is a cluster condition is held.
    (400, {"type": "document_parsing_exception", "reason": "x",
           "caused_by": {"type": "circuit_breaking_exception", "reason": "[parent] Data too "
                         "large"}}, True),
    (500, {"type": "mapper_parsing_exception", "reason": "x"}, True),  # a 5xx is transient
])
def test_item_outcome_classification(status: int, error: dict[str, str], retried: bool
                                     ) -> None:
    assert classify_item(status, {"reason": "x", **error}).document is not retried


def test_rejected_documents_stay_spooled_until_their_dead_letter_is_written(
    server: ESTestServer, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("the dead letter directory cannot be created under a file")
    cfg = make_config(tmp_path, server.url, es={"dead_letter_file": str(blocker / "dl.ndjson")},
                      retry={"item_attempts": 2, "max_s": 0.05})
    setup_cluster(cfg)
    server.mapping_errors(predicate=lambda item: item.source is not None
                          and item.source.get("process", {}).get("pid", 1) % 10 == 3)
    metrics = DeliveryMetrics()
    pipeline = new_pipeline(cfg, metrics)
    run = submit_docs(pipeline, 100)
    pipeline.close(2)
    rejected = [i for n, i in enumerate(run.ids) if (1000 + n) % 10 == 3]
    assert metric(metrics, "audit_collector_dead_letters_total") == 0
    assert Spool(cfg.spool).pending()[0] >= len(rejected)  # not acknowledged: not lost

    blocker.unlink()
    blocker.mkdir()
    again = new_pipeline(cfg)
    again.close(30)
    assert sorted(dead_letter_ids(cfg)) == sorted(rejected)
    synthetic, lost = split_stored(server)
    assert sorted(synthetic) == sorted(set(run.ids) - set(rejected))
    reported = {s for d in lost.values() for s in range(
        d["audit_collector"]["lost"]["first_sequence"],
        d["audit_collector"]["lost"]["last_sequence"] + 1)}
    assert {doc_id(s) for s in reported} == set(rejected)
