"""413 Request Entity Too Large: split, back off, and dead-letter only a document that is too
large on its own (issue 10, item 2)."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from collector.delivery.metrics import DeliveryMetrics
from tests.delivery.elasticsearch.support import install_template
from tests.delivery.elasticsearch.test_faults import assert_exactly_once, assert_verify_clean
from tests.delivery.helpers import (
    dead_letter_ids,
    make_config,
    metric,
    new_pipeline,
    split_stored,
    submit_docs,
    synthetic_doc,
)
from tests.esserver import ESTestServer


def test_413_for_every_request_only_delays(server: ESTestServer, tmp_path: Path) -> None:
    """A proxy answering 413 to everything (its limit flapping) dead-lettered every document,
    loss reports included, without a pause: after it recovered, most never reached ES."""
    server.fail_requests(413, requests=None)
    cfg = make_config(tmp_path, server.url, retry={"initial_s": 0.05, "max_s": 0.3})
    metrics = DeliveryMetrics()
    pipeline = new_pipeline(cfg, metrics)
    run = submit_docs(pipeline, 40)
    pipeline.tick()
    time.sleep(2.0)
    answered_413 = server.counter("responses.413")
    assert dead_letter_ids(cfg) == []
    assert metric(metrics, "audit_collector_dead_letters_total") == 0
    # Backed off (at most one batch and one small control request per pause), not split
    # into a request per document.
    assert 2 <= answered_413 <= 24, answered_413
    server.clear_faults()
    pipeline.close(30)
    assert_exactly_once(server, run)
    assert dead_letter_ids(cfg) == []
    _, lost = split_stored(server)
    assert lost == {}  # nothing was lost, so nothing is reported lost


def test_a_lone_document_answered_413_while_the_proxy_flaps_is_retried(
    server: ESTestServer, tmp_path: Path
) -> None:
    server.fail_requests(413, requests=3)
    cfg = make_config(tmp_path, server.url, batch={"max_docs": 1})
    pipeline = new_pipeline(cfg)
    run = submit_docs(pipeline, 5)
    pipeline.close(30)
    assert_exactly_once(server, run)
    assert dead_letter_ids(cfg) == []
    assert server.counter("responses.413") == 3


def test_only_a_document_over_the_servers_limit_is_dead_lettered(tmp_path: Path) -> None:
    """http.max_content_length below a batch: batches are split until they fit; the one
    document larger than the limit on its own is dead-lettered with the reason."""
    with ESTestServer(major=8, max_content_length=24 << 10) as srv:
        install_template(srv, tmp_path)
        cfg = make_config(tmp_path, srv.url)
        metrics = DeliveryMetrics()
        pipeline = new_pipeline(cfg, metrics)
        seqs, big = [], None
        for n in range(300):
            pipeline.submit(synthetic_doc(n, pad=40_000 if n == 150 else 200))
            seqs.append(pipeline.sealer.head.seq)
            if n == 150:
                big = pipeline.sealer.head.seq
        pipeline.close(60)
        synthetic, lost = split_stored(srv)
        assert len(synthetic) == 299
        [letter] = [orjson.loads(line) for line in
                    Path(cfg.elasticsearch.dead_letter_file or "").read_bytes().splitlines()]
        assert letter["sequence"] == big and letter["status"] == 413
        assert letter["error"]["type"] == "request_too_large"
        assert "alone" in letter["error"]["reason"]
        assert letter["error"]["document_bytes"] > letter["error"]["largest_accepted_bytes"]
        [report] = [d["audit_collector"]["lost"] for d in lost.values()]
        assert (report["first_sequence"], report["last_sequence"]) == (big, big)
        assert report["source"] == "dead_letter"
        assert metric(metrics, "audit_collector_dead_letters_total") == 1
        assert srv.counter("responses.413") > 0
        assert_verify_clean(cfg)
