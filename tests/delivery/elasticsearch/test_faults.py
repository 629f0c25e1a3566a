"""Exactly once under faults: N documents in -> exactly N stored, by _id, no duplicates.

Every test submits synthetic documents through a real Pipeline (spool + shipper + the
official client) to the Elasticsearch-API test server with faults injected, and checks the
stored documents by _id.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from collector.config import Config
from collector.delivery.elasticsearch.index import setup_cluster
from collector.delivery.elasticsearch.verify import run_verify
from collector.delivery.metrics import DeliveryMetrics
from tests.delivery.helpers import (
    HOST,
    Run,
    dead_letter_ids,
    doc_id,
    make_config,
    metric,
    new_pipeline,
    replace_es,
    split_stored,
    stored,
    submit_docs,
    synthetic_doc,
)
from tests.delivery.test_spool import small_tmpfs
from tests.esserver import ESTestServer

REPO = Path(__file__).resolve().parents[3]


def deliver(cfg: Config, count: int, during: Callable[[], None] | None = None,
            close_s: float = 60.0, metrics: DeliveryMetrics | None = None) -> Run:
    pipeline = new_pipeline(cfg, metrics)
    run = submit_docs(pipeline, count)
    if during is not None:
        during()
    pipeline.close(close_s)
    return run


def assert_exactly_once(server: ESTestServer, run: Run, rejected: frozenset[str] = frozenset()
                        ) -> None:
    synthetic, _lost = split_stored(server)
    assert sorted(synthetic) == sorted(set(run.ids) - rejected)
    seqs = [d["event"]["sequence"] for d in synthetic.values()]
    assert len(seqs) == len(set(seqs))  # no two stored documents share a sequence


def assert_verify_clean(cfg: Config) -> str:
    # The faults are over: verify reads with an ordinary timeout (some tests ship with 0.4 s,
    # too short for a page of reads on a busy machine).
    out = io.StringIO()
    status = run_verify(replace_es(cfg, request_timeout_s=30.0), HOST.id, out)
    assert status == 0, out.getvalue()
    return out.getvalue()


# --------------------------------------------------------------------------- single faults


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_whole_request_errors_are_retried(server: ESTestServer, tmp_path: Path,
                                          status: int) -> None:
    server.fail_requests(status, requests=4)
    metrics = DeliveryMetrics()
    run = deliver(make_config(tmp_path, server.url), 1200, metrics=metrics)
    assert_exactly_once(server, run)
    assert metric(metrics, "audit_collector_bulk_retries_total", kind="request") == 4
    assert server.counter(f"responses.{status}") == 4


def test_item_429_is_retried_until_stored(server: ESTestServer, tmp_path: Path) -> None:
    server.fail_items(429, every=3, requests=3)
    metrics = DeliveryMetrics()
    run = deliver(make_config(tmp_path, server.url), 1500, metrics=metrics)
    assert_exactly_once(server, run)
    assert metric(metrics, "audit_collector_bulk_retries_total", kind="item") > 0
    assert server.counter("bulk.items.status.429") > 0


def test_item_429_beyond_item_attempts_retries_the_batch_later(
    server: ESTestServer, tmp_path: Path
) -> None:
    server.fail_items(429, positions=[0], requests=8)  # first item refused 8 times running
    cfg = make_config(tmp_path, server.url, retry={"item_attempts": 3, "max_s": 0.1})
    metrics = DeliveryMetrics()
    run = deliver(cfg, 400, metrics=metrics)
    assert_exactly_once(server, run)
    # Released batches are read again; items settled before are not resent.
    assert metric(metrics, "audit_collector_shipped_duplicates_total") == 0
    assert metric(metrics, "audit_collector_shipped_documents_total") == 400


def test_responses_slower_than_the_client_timeout(server: ESTestServer, tmp_path: Path) -> None:
    server.delay_responses(1.5, requests=2)  # applied, answered after the client gave up
    cfg = make_config(tmp_path, server.url, es={"request_timeout_s": 0.5})
    metrics = DeliveryMetrics()
    run = deliver(cfg, 1000, metrics=metrics)
    assert_exactly_once(server, run)
    dups = metric(metrics, "audit_collector_shipped_duplicates_total")
    # The server also answered 409s inside responses that arrived after the timeout.
    assert 0 < dups <= server.counter("bulk.items.conflict")


@pytest.mark.parametrize("when", ["before", "after"])
def test_connection_reset_around_the_bulk(server: ESTestServer, tmp_path: Path,
                                          when: str) -> None:
    server.reset_connections(when, requests=3)
    run = deliver(make_config(tmp_path, server.url), 1200)
    assert_exactly_once(server, run)
    assert server.counter(f"faults.reset.{when}") == 3
    if when == "after":
        assert server.counter("bulk.items.conflict") > 0


def test_server_down_for_seconds(server: ESTestServer, tmp_path: Path) -> None:
    server.down_on_request(2.0)
    metrics = DeliveryMetrics()
    run = deliver(make_config(tmp_path, server.url), 1500, metrics=metrics)
    assert_exactly_once(server, run)
    assert server.counter("server.down") == 1
    assert metrics.es_reachable_state is True


def test_backlog_of_mixed_sizes_in_byte_cut_batches(server: ESTestServer, tmp_path: Path) -> None:
    """Regression (found by bench.exec_storm with 20 long arguments): a backlog spread over
    many segments, documents of mixed sizes and batches cut by bytes. A batch that ended
    inside one segment took a small record from the next one, and its ack skipped the rest."""
    server.down_on_request(1.0)  # the backlog builds up while the server is away
    cfg = make_config(tmp_path, server.url, spool={"segment_bytes": 64 << 10},
                      batch={"max_docs": 1000, "max_bytes": 24 << 10})
    pipeline = new_pipeline(cfg)
    pads = [0, 40, 2500, 300, 6000]
    seqs = []
    for n in range(3000):
        pipeline.submit(synthetic_doc(n, pads[(n * 7) % len(pads)]))
        seqs.append(pipeline.sealer.head.seq)
        if n % 100 == 0:
            pipeline.tick()
    pipeline.close(60)
    assert_exactly_once(server, Run([doc_id(s) for s in seqs], seqs))
    assert server.counter("server.down") == 1


def test_mapping_errors_are_dead_lettered_exactly(server: ESTestServer, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, server.url)
    setup_cluster(cfg)
    server.mapping_errors(predicate=lambda item: item.source is not None
                          and item.source.get("process", {}).get("pid", 1) % 97 == 0)
    run = deliver(cfg, 1000)
    rejected = frozenset(i for n, i in enumerate(run.ids) if (1000 + n) % 97 == 0)
    assert_exactly_once(server, run, rejected)
    assert sorted(dead_letter_ids(cfg)) == sorted(rejected)
    out = assert_verify_clean(cfg)
    assert out.count("explained gap") == len(rejected)


def test_mixed_random_faults(server: ESTestServer, tmp_path: Path) -> None:
    seed = 20241129
    server.fail_requests(429, requests=None, probability=0.15, seed=seed)
    server.fail_requests(503, requests=None, probability=0.1, seed=seed + 1)
    server.fail_items(429, fraction=0.05, requests=None, probability=0.3, seed=seed + 2)
    server.reset_connections("before", requests=None, probability=0.1, seed=seed + 3)
    server.reset_connections("after", requests=None, probability=0.1, seed=seed + 4)
    server.delay_responses(0.6, requests=None, probability=0.1, seed=seed + 5)
    server.mapping_errors(predicate=lambda item: item.source is not None
                          and item.source.get("process", {}).get("pid", 1) % 211 == 0)
    cfg = make_config(tmp_path, server.url, es={"request_timeout_s": 0.4},
                      batch={"max_docs": 100})
    setup_cluster(cfg)
    run = deliver(cfg, 5000, close_s=120)
    server.clear_faults()
    rejected = frozenset(i for n, i in enumerate(run.ids) if (1000 + n) % 211 == 0)
    assert_exactly_once(server, run, rejected)
    assert sorted(dead_letter_ids(cfg)) == sorted(rejected)
    assert_verify_clean(cfg)
    stats = server.stats()
    print(f"\nmixed faults: {len(run.ids)} docs, {len(rejected)} dead-lettered, "
          f"{stats.get('requests.bulk', 0)} bulk requests, "
          f"{stats.get('bulk.items.conflict', 0)} answered 409, "
          + ", ".join(f"{k}={v}" for k, v in sorted(stats.items()) if k.startswith("faults.")))


@pytest.mark.slow
def test_elasticsearch_down_30s_then_up(server: ESTestServer, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, server.url, retry={"initial_s": 0.5, "max_s": 5.0})
    server.go_down(30.0)
    metrics = DeliveryMetrics()
    pipeline = new_pipeline(cfg, metrics)
    run = submit_docs(pipeline, 3000)
    for _ in range(100):  # keep capturing while the cluster is away
        pipeline.tick()
        time.sleep(0.1)
    assert metrics.es_reachable_state is False
    assert server.doc_count("logs-*") == 0
    pipeline.close(60)
    assert_exactly_once(server, run)


# --------------------------------------------------------------------------- crash


def start_driver(tmp: Path, url: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "tests.delivery.pipeline_driver", str(tmp), url,
                             *args], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)


def wait_line(proc: subprocess.Popen[str], prefix: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return line
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"driver did not print {prefix}")


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_sigkill_in_the_middle_of_a_bulk(server: ESTestServer, tmp_path: Path) -> None:
    # Every bulk is applied, then its response is held back: the kill lands after the
    # server stored the batch and before the collector could acknowledge it.
    server.delay_responses(5.0, requests=None)
    proc = start_driver(tmp_path, server.url, "--count", "3000", "--hold")
    _, first, last = wait_line(proc, "READY").split()
    wait_for(lambda: server.counter("bulk.items.created") > 0)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    applied = server.counter("bulk.items.created")
    assert 0 < applied < 3000
    server.clear_faults()

    restart = start_driver(tmp_path, server.url, "--count", "0", "--close", "60")
    wait_line(restart, "CLOSED")
    restart.wait(10)
    expected = [doc_id(s) for s in range(int(first), int(last) + 1)]
    assert sorted(stored(server)) == sorted(expected)
    assert server.counter("bulk.items.conflict") == applied  # replayed, answered 409
    cfg = make_config(tmp_path, server.url)
    assert_verify_clean(cfg)


def test_sigkill_while_capturing_then_restart(server: ESTestServer, tmp_path: Path) -> None:
    """Killed mid-stream (possibly mid-write): the next run continues the chain after the
    last record that reached the spool, numbered above the sequences reserved before the
    kill (never reused); nothing is lost or stored twice."""
    proc = start_driver(tmp_path, server.url, "--count", "100000", "--rate", "5000")
    wait_line(proc, "SUBMITTED")
    wait_for(lambda: server.counter("bulk.items.created") > 500)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)

    restart = start_driver(tmp_path, server.url, "--count", "500", "--close", "60")
    _, first, last = wait_line(restart, "READY").split()
    wait_line(restart, "CLOSED")
    restart.wait(10)
    docs = stored(server)
    seqs = sorted(d["event"]["sequence"] for d in docs.values())
    killed, restarted = seqs[:-500], seqs[-500:]
    assert killed == list(range(killed[0], killed[-1] + 1))  # contiguous: nothing lost
    assert restarted == list(range(int(first), int(last) + 1))
    assert len(docs) == len(seqs)  # nothing twice
    assert int(first) > killed[-1]
    out = assert_verify_clean(make_config(tmp_path, server.url))
    if int(first) > killed[-1] + 1:  # the restart links straight to the spool's end
        assert f"skipped seq {killed[-1] + 1}..{int(first) - 1}" in out, out


# --------------------------------------------------------------------------- full spool


@pytest.mark.parametrize("policy", ["drop-oldest", "drop-newest"])
def test_spool_on_full_tmpfs_reports_exact_losses(server: ESTestServer, tmp_path: Path,
                                                  policy: str) -> None:
    with small_tmpfs(tmp_path / "fs", "2m") as fs:
        cfg = make_config(tmp_path, server.url, spool={
            "dir": str(fs / "spool"), "max_bytes": 64 << 20, "segment_bytes": 128 << 10,
            "full_policy": policy})
        server.go_down()
        metrics = DeliveryMetrics()
        pipeline = new_pipeline(cfg, metrics)
        run = submit_docs(pipeline, 8000, pad=300)  # ~5 MB: more than the file system
        for _ in range(15):
            pipeline.tick()
            time.sleep(0.1)
        server.bring_up()
        pipeline.close(60)

    synthetic, lost_docs = split_stored(server)
    reports = [d["audit_collector"]["lost"] for d in lost_docs.values()]
    reported = {s for r in reports for s in range(r["first_sequence"], r["last_sequence"] + 1)}
    reported_ids = {doc_id(s) for s in reported}
    assert all(r["source"] == "spool" for r in reports)
    assert sum(r["documents"] for r in reports) == len(reported)  # no overlaps
    assert reported, "the spool must have filled"
    # Every submitted document is either stored or inside a reported range, never both.
    assert set(synthetic) | (reported_ids & set(run.ids)) == set(run.ids)
    assert not set(synthetic) & reported_ids
    dropped = metric(metrics, "audit_collector_events_lost_total", kind="document",
                     where="spool")
    assert dropped == len(reported)
    print(f"\n{policy}: {len(synthetic)} stored, {len(reported)} dropped and reported in "
          f"{len(reports)} events_lost documents")
    assert_verify_clean(cfg)
