"""`audit-collector verify`: deleted, edited, duplicated and missing documents."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest
from elasticsearch import Elasticsearch

from collector.config import Config
from collector.delivery.chain import ChainPoint, Sealer, chain_hash, content_bytes
from collector.delivery.elasticsearch.client import build_client
from collector.delivery.elasticsearch.verify import LossReport, run_verify, verify_documents
from tests.delivery.helpers import (
    DATA_STREAM,
    HOST,
    doc_id,
    make_config,
    new_pipeline,
    submit_docs,
)
from tests.esserver import ESTestServer


def verify(cfg: Config) -> tuple[int, str]:
    out = io.StringIO()
    status = run_verify(cfg, HOST.id, out)
    return status, out.getvalue()


def ship(server: ESTestServer, tmp_path: Path, count: int = 50) -> tuple[Config, list[int]]:
    cfg = make_config(tmp_path, server.url)
    pipeline = new_pipeline(cfg)
    run = submit_docs(pipeline, count)
    pipeline.close(30)
    return cfg, run.seqs


def backing(server: ESTestServer) -> str:
    return server.backing_indices(DATA_STREAM)[0]


def client_for(cfg: Config) -> Elasticsearch:
    return build_client(cfg)


def test_clean_history_verifies(server: ESTestServer, tmp_path: Path) -> None:
    cfg, seqs = ship(server, tmp_path, 2500)  # more than one search page
    status, out = verify(cfg)
    assert status == 0, out
    assert f"2500 documents, sequences {seqs[0]}..{seqs[-1]}" in out
    assert "result: clean" in out


def test_deleted_document_is_an_unexplained_gap(server: ESTestServer, tmp_path: Path) -> None:
    cfg, seqs = ship(server, tmp_path)
    es = client_for(cfg)
    es.delete(index=backing(server), id=doc_id(seqs[10]), refresh=True)
    status, out = verify(cfg)
    assert status == 1
    assert f"GAP seq {seqs[10]}: 1 documents missing, not reported lost" in out


def test_several_deleted_documents_are_one_gap(server: ESTestServer, tmp_path: Path) -> None:
    cfg, seqs = ship(server, tmp_path)
    es = client_for(cfg)
    for seq in seqs[20:23]:
        es.delete(index=backing(server), id=doc_id(seq), refresh=True)
    status, out = verify(cfg)
    assert status == 1
    assert f"GAP seq {seqs[20]}..{seqs[22]}: 3 documents missing" in out


def test_edited_document_is_detected(server: ESTestServer, tmp_path: Path) -> None:
    cfg, seqs = ship(server, tmp_path)
    es = client_for(cfg)
    es.update(index=backing(server), id=doc_id(seqs[5]),
              doc={"process": {"args": ["/bin/sh", "-c", "innocent"]}}, refresh=True)
    status, out = verify(cfg)
    assert status == 1
    assert f"EDITED seq {seqs[5]}" in out


def test_edit_with_recomputed_hash_breaks_the_link_to_the_next(
    server: ESTestServer, tmp_path: Path
) -> None:
    cfg, seqs = ship(server, tmp_path)
    es = client_for(cfg)
    target = doc_id(seqs[7])
    source = es.get(index=backing(server), id=target).body["_source"]
    source["user"]["name"] = "nobody"
    chain = source["audit_collector"]["chain"]
    chain["hash"] = chain_hash(chain["prev"], content_bytes(source))
    es.update(index=backing(server), id=target, doc=source, refresh=True)
    status, out = verify(cfg)
    assert status == 1
    assert "EDITED" not in out
    assert f"CHAIN BREAK seq {seqs[8]}" in out


def test_duplicate_sequence_is_detected(server: ESTestServer, tmp_path: Path) -> None:
    cfg, seqs = ship(server, tmp_path)
    es = client_for(cfg)
    source = es.get(index=backing(server), id=doc_id(seqs[3])).body["_source"]
    es.create(index=DATA_STREAM, id="forged-copy", document=source, refresh=True)
    status, out = verify(cfg)
    assert status == 1
    assert f"DUPLICATE seq {seqs[3]}" in out


def test_reported_loss_is_an_explained_gap(server: ESTestServer, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, server.url)
    server.mapping_errors(predicate=lambda item: item.source is not None
                          and item.source.get("process", {}).get("pid") in (1010, 1011))
    pipeline = new_pipeline(cfg)
    run = submit_docs(pipeline, 40)
    pipeline.close(30)
    status, out = verify(cfg)
    assert status == 0, out
    assert f"explained gap seq {run.seqs[10]}..{run.seqs[11]}: 2 documents reported lost" in out


def test_forged_explanation_does_not_hide_a_deletion(tmp_path: Path) -> None:
    """A report whose last_chain_hash does not match the next document's prev."""
    sealer = Sealer(tmp_path, HOST, (ChainPoint(0, ""),))
    docs = [orjson.loads(sealer.seal({"message": f"m{i}"}).data) for i in range(6)]
    kept = [(f"id{i}", d) for i, d in enumerate(docs) if i not in (2, 3)]
    honest = LossReport(seq=99, first=3, last=4, source="spool", reason="drop-oldest",
                        last_chain_hash=docs[3]["audit_collector"]["chain"]["hash"])
    assert verify_documents(kept, [honest]).clean
    forged = LossReport(seq=99, first=3, last=4, source="spool", reason="drop-oldest",
                        last_chain_hash="0" * 64)
    result = verify_documents(kept, [forged])
    assert not result.clean
    assert [f.kind for f in result.findings] == ["explained_gap", "chain_break"]
    partial = LossReport(seq=99, first=4, last=4, source="spool", reason="drop-oldest",
                         last_chain_hash=None)
    assert [f.kind for f in verify_documents(kept, [partial]).findings] == ["gap"]


def test_state_reset_is_noted_not_failed(tmp_path: Path) -> None:
    old = Sealer(tmp_path / "a", HOST, (ChainPoint(0, ""),))
    new = Sealer(tmp_path / "b", HOST, (ChainPoint(1000, ""),))
    docs = [orjson.loads(old.seal({"message": "x"}).data) for _ in range(3)]
    docs += [orjson.loads(new.seal({"message": "y"}).data) for _ in range(3)]
    result = verify_documents([(str(i), d) for i, d in enumerate(docs)], [])
    assert result.clean
    assert [f.kind for f in result.findings] == ["restart"]


@pytest.mark.parametrize("refresh_allowed", [True, False], ids=["refresh", "no-privilege"])
def test_verify_sees_documents_shipped_just_before(server: ESTestServer, tmp_path: Path,
                                                   refresh_allowed: bool) -> None:
    """Search sees a write only after the next refresh (~1 s): verify refreshes, and without
    the privilege to (403) waits until the host's documents stop changing."""
    cfg = make_config(tmp_path, server.url)
    server.refresh()
    client = client_for(cfg)
    client.search(index=DATA_STREAM, size=0)  # not search-idle: refreshes keep their pace
    client.indices.put_settings(index=DATA_STREAM, settings={"index.refresh_interval": "2s"})
    if not refresh_allowed:
        server.fail_requests(403, requests=None, endpoints=("refresh",))
    cfg, seqs = ship(server, tmp_path, 300)
    status, out = verify(cfg)
    assert status == 0, out
    assert f"300 documents, sequences {seqs[0]}..{seqs[-1]}" in out
    assert server.counter("responses.403") == (0 if refresh_allowed else 1)
