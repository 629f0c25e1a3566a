"""`report integrity`: an edited document, a deleted one, and a chain tail forged by someone
who can write the index but has no key, each named for its host and day."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from elasticsearch import Elasticsearch

from collector.delivery.chain import chain_hash, content_bytes
from collector.delivery.signing import key_line
from tests.delivery.helpers import DATA_STREAM
from tests.esserver import ESTestServer
from tests.report.support import DAY, FakeCollector, Wall, host, ndjson_rows, report, stamp

PERIOD = ("--from", DAY, "--to", "2024-01-11")


def signed_history(server: ESTestServer, tmp_path: Path) -> tuple[FakeCollector, Path]:
    wall = Wall()
    collector = FakeCollector(tmp_path, server.url, wall, host(1)).start()
    collector.run(1800)
    collector.stop()
    server.refresh()
    keys = tmp_path / "keys.txt"
    public = collector.pipeline.checkpoints.key.public_b64
    keys.write_text(key_line(collector.host.id, public, collector.host.name) + "\n")
    return collector, keys


def integrity(collector: FakeCollector, *extra: str) -> tuple[int, list[dict[str, Any]]]:
    status, out, err = report(collector.cfg, "integrity", *PERIOD, "--format", "ndjson",
                              *extra)
    assert status in (0, 1), err
    return status, ndjson_rows(out)[1]


def stored(server: ESTestServer) -> list[tuple[str, dict[str, Any]]]:
    docs = server.docs(DATA_STREAM)
    return sorted(docs.items(), key=lambda item: item[1]["event"]["sequence"])


def test_an_honest_signed_day_is_ok(server: ESTestServer, tmp_path: Path) -> None:
    collector, keys = signed_history(server, tmp_path)
    status, [row] = integrity(collector, "--keys", str(keys))
    assert status == 0, row
    assert row["signature"] == "signed" and row["status"] == "ok"
    assert row["checkpoints_valid"] >= 30  # one a minute, and one at the stop
    last = stored(server)[-1][1]
    assert row["last_sequence"] == last["event"]["sequence"]
    assert row["head_hash"] == last["audit_collector"]["chain"]["hash"]
    status, [row] = integrity(collector)
    assert status == 0 and row["signature"] == "not checked (no --keys)"


def test_an_edited_document_is_found(server: ESTestServer, tmp_path: Path) -> None:
    collector, keys = signed_history(server, tmp_path)
    doc_id, doc = stored(server)[40]
    es = Elasticsearch(server.url)
    es.update(index=server.backing_indices(DATA_STREAM)[0], id=doc_id,
              doc={"message": "nothing to see"}, refresh=True)
    status, [row] = integrity(collector, "--keys", str(keys))
    assert status == 1
    assert row["status"] == "FAILED"
    assert row["first_broken_sequence"] == doc["event"]["sequence"]
    assert "edited" in row["problems"]


def test_a_deleted_document_is_found(server: ESTestServer, tmp_path: Path) -> None:
    collector, keys = signed_history(server, tmp_path)
    doc_id, doc = stored(server)[70]
    Elasticsearch(server.url).delete(index=server.backing_indices(DATA_STREAM)[0], id=doc_id,
                                     refresh=True)
    status, [row] = integrity(collector, "--keys", str(keys))
    assert status == 1
    assert row["first_broken_sequence"] == doc["event"]["sequence"]
    assert row["problems"].split(", ")[0] == "gap"


def test_rewritten_and_rehashed_documents_contradict_the_signatures(
    server: ESTestServer, tmp_path: Path
) -> None:
    collector, keys = signed_history(server, tmp_path)
    docs = stored(server)
    es = Elasticsearch(server.url)
    backing = server.backing_indices(DATA_STREAM)[0]
    prev = docs[49][1]["audit_collector"]["chain"]["hash"]
    for doc_id, doc in docs[50:]:  # edit one, recompute every hash after it
        if doc_id == docs[50][0]:
            doc["message"] = "rewritten"
        doc["audit_collector"]["chain"] = {"prev": prev, "hash": chain_hash(
            prev, content_bytes(doc))}
        prev = doc["audit_collector"]["chain"]["hash"]
        es.index(index=backing, id=doc_id, document=doc)
    es.indices.refresh(index=DATA_STREAM)
    status, [row] = integrity(collector)  # the chain alone looks fine...
    assert "edited" not in row["problems"]
    status, [row] = integrity(collector, "--keys", str(keys))  # ...the signatures do not
    assert status == 1 and row["status"] == "FAILED"
    assert "checkpoint_mismatch" in row["problems"]


def test_a_forged_chain_tail_without_the_key(server: ESTestServer, tmp_path: Path) -> None:
    collector, keys = signed_history(server, tmp_path)
    last = stored(server)[-1][1]
    es = Elasticsearch(server.url)
    prev, seq = last["audit_collector"]["chain"]["hash"], last["event"]["sequence"]
    for n in range(3):
        seq += 1
        forged = dict(last, message=f"forged {n}", event=dict(last["event"], sequence=seq,
                                                                action="exec"))
        forged["@timestamp"] = stamp(int((1704844800 + 1900 + n) * 1e9))
        forged["audit_collector"] = {"chain": {"prev": prev, "hash": ""}}
        forged["audit_collector"]["chain"]["hash"] = chain_hash(prev, content_bytes(forged))
        prev = forged["audit_collector"]["chain"]["hash"]
        es.create(index=DATA_STREAM, id=f"forged-{n}", document=forged)
    es.indices.refresh(index=DATA_STREAM)
    status, [row] = integrity(collector)
    assert status == 0  # without keys nothing contradicts the forged tail
    status, [row] = integrity(collector, "--keys", str(keys))
    assert status == 1
    assert row["status"] == "FAILED" and row["signature"] == "unsigned"
    assert row["problems"] == "unsigned_tail"
    assert row["first_broken_sequence"] == last["event"]["sequence"] + 1
    other = tmp_path / "other-keys.txt"  # a key file without this host
    other.write_text("# no keys\n")
    status, [row] = integrity(collector, "--keys", str(other))
    assert row["signature"] == "no key for this host" and row["status"] == "not established"
