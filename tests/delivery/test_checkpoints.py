"""Signed checkpoints: the host key, when checkpoints are sealed, and what verify --keys
finds when the index is rewritten without the key."""

from __future__ import annotations

import functools
import os
import stat
from pathlib import Path
from typing import Any

import msgspec
import orjson

from collector.config import Config
from collector.delivery.chain import chain_hash, content_bytes
from collector.delivery.elasticsearch.verify import verify_documents
from collector.delivery.pipeline import Pipeline
from collector.delivery.signing import (
    checkpoint_payload,
    generate_key,
    host_key,
    key_line,
    parse_public_keys,
    signature_valid,
)
from collector.ecs.documents import events_lost_document
from collector.ecs.lifecycle import checkpoint_document
from tests.delivery.helpers import HOST, make_config, synthetic_doc


def file_config(tmp_path: Path, every_docs: int = 100, every_s: float = 3600) -> Config:
    cfg = make_config(tmp_path)
    return msgspec.structs.replace(cfg, checkpoint=msgspec.structs.replace(
        cfg.checkpoint, every_docs=every_docs, every_s=every_s))


def signed_pipeline(cfg: Config) -> Pipeline:
    return Pipeline(cfg, HOST, functools.partial(events_lost_document, HOST),
                    build_checkpoint=functools.partial(checkpoint_document, HOST))


def written(tmp_path: Path) -> list[dict[str, Any]]:
    out = tmp_path / "out.ndjson"
    return [orjson.loads(line) for line in out.read_bytes().splitlines() if line]


def as_pairs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"id-{d['event']['sequence']}", d) for d in docs]


def run_pipeline(tmp_path: Path, count: int, every_docs: int = 100) -> tuple[Pipeline,
                                                                             list[dict]]:
    pipeline = signed_pipeline(file_config(tmp_path, every_docs))
    for n in range(count):
        pipeline.submit(synthetic_doc(n))
    pipeline.close()
    return pipeline, written(tmp_path)


def test_host_key_is_created_once_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "state" / "host.key"
    key, created = host_key(path)
    assert created
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again, created_again = host_key(path)
    assert not created_again
    assert again.public_b64 == key.public_b64


def test_checkpoints_every_n_documents_and_at_close(tmp_path: Path) -> None:
    pipeline, docs = run_pipeline(tmp_path, 250, every_docs=100)
    checkpoints = [d for d in docs if d["event"]["action"] == "checkpoint"]
    # after 100 and 200 documents (the first checkpoint counts towards the second), at close
    assert len(checkpoints) == 3
    assert docs[-1]["event"]["action"] == "checkpoint"
    key = pipeline.checkpoints.key
    by_seq = {d["event"]["sequence"]: d for d in docs}
    for cp in checkpoints:
        body = cp["audit_collector"]["checkpoint"]
        assert body["sequence"] == cp["event"]["sequence"] - 1  # signs the one before it
        assert body["hash"] == by_seq[body["sequence"]]["audit_collector"]["chain"]["hash"]
        payload = checkpoint_payload(HOST.id, HOST.boot_id, body["sequence"], body["hash"])
        assert signature_valid(key.public_b64, payload, body["signature"])
        assert body["key_id"] == key.id


def test_verify_with_keys_is_clean_for_an_honest_chain(tmp_path: Path) -> None:
    pipeline, docs = run_pipeline(tmp_path, 250)
    result = verify_documents(as_pairs(docs), [], keys=[pipeline.checkpoints.key.public_b64])
    assert result.clean, [f.line() for f in result.findings]
    assert result.signatures.valid == 3
    assert result.signatures.covered_seq == docs[-2]["event"]["sequence"]


def rehash_from(docs: list[dict[str, Any]], index: int) -> None:
    """What someone who can rewrite the index (but has no key) does to hide an edit."""
    prev = docs[index - 1]["audit_collector"]["chain"]["hash"]
    for doc in docs[index:]:
        doc.setdefault("audit_collector", {})["chain"] = {"prev": prev, "hash": chain_hash(
            prev, content_bytes(doc))}
        prev = doc["audit_collector"]["chain"]["hash"]


def test_rewritten_and_rehashed_chain_is_caught_by_the_signatures(tmp_path: Path) -> None:
    pipeline, docs = run_pipeline(tmp_path, 250)
    docs[20]["process"]["args"] = ["/bin/true", "innocent"]
    rehash_from(docs, 20)
    assert verify_documents(as_pairs(docs), []).clean is False  # mismatch even without keys
    result = verify_documents(as_pairs(docs), [], keys=[pipeline.checkpoints.key.public_b64])
    kinds = {f.kind for f in result.findings}
    assert "checkpoint_mismatch" in kinds
    assert not result.clean


def test_forged_tail_without_the_key_is_an_unsigned_tail_or_a_bad_signature(
    tmp_path: Path
) -> None:
    pipeline, docs = run_pipeline(tmp_path, 150)
    key = pipeline.checkpoints.key.public_b64
    last = docs[-1]
    forged = []
    for n in range(5):
        doc = synthetic_doc(1000 + n)
        doc["@timestamp"] = "2020-01-01T00:00:00.000000000Z"  # long past: should be signed
        doc["event"]["sequence"] = last["event"]["sequence"] + 1 + n
        forged.append(doc)
    chain_tail = [*docs, *forged]
    rehash_from(chain_tail, len(docs))
    result = verify_documents(as_pairs(chain_tail), [], keys=[key])
    assert [f.kind for f in result.findings] == ["unsigned_tail"]
    assert result.findings[0].first_seq == forged[0]["event"]["sequence"]
    # ...and a checkpoint signed with another key does not cover it
    other = generate_key()
    head = forged[-1]
    fake = checkpoint_document(HOST, {
        "sequence": head["event"]["sequence"], "boot_id": HOST.boot_id,
        "hash": head["audit_collector"]["chain"]["hash"], "key_id": other.id, "every_s": 60,
        "signature": other.sign(checkpoint_payload(
            HOST.id, HOST.boot_id, head["event"]["sequence"],
            head["audit_collector"]["chain"]["hash"]))})
    fake["event"]["sequence"] = head["event"]["sequence"] + 1
    with_fake = [*chain_tail, fake]
    rehash_from(with_fake, len(with_fake) - 1)
    kinds = [f.kind for f in verify_documents(as_pairs(with_fake), [], keys=[key]).findings]
    assert kinds == ["bad_signature", "unsigned_tail"]


def test_a_recent_unsigned_tail_is_pending(tmp_path: Path) -> None:
    pipeline = signed_pipeline(file_config(tmp_path, every_docs=100))
    for n in range(30):
        doc = synthetic_doc(n)
        doc["@timestamp"] = "2030-01-01T00:00:00.000000000Z"
        pipeline.submit(doc)
    pipeline.tick()
    key = pipeline.checkpoints.key.public_b64
    docs = written(tmp_path)  # read before close: no checkpoint yet
    result = verify_documents(as_pairs(docs), [], keys=[key],
                              now_s=1893456000 + 30)  # 30 s after the documents
    assert [f.kind for f in result.findings] == ["pending"]
    assert result.clean
    pipeline.close()


def test_an_unusable_key_file_turns_signing_off_with_the_reason(tmp_path: Path) -> None:
    cfg = file_config(tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "host.key").write_text("not a key\n")
    pipeline = signed_pipeline(cfg)
    assert pipeline.checkpoints.key is None
    assert pipeline.checkpoints.signing.startswith("off: ")
    assert "not an unencrypted PEM private key" in pipeline.checkpoints.signing
    for n in range(150):
        pipeline.submit(synthetic_doc(n))
    pipeline.close()
    assert not [d for d in written(tmp_path) if d["event"]["action"] == "checkpoint"]


def test_public_key_file_lines_round_trip_and_bad_lines_name_the_line() -> None:
    key = generate_key()
    text = f"# fleet keys\n{key_line('abc', key.public_b64, 'web-1')}\n\n"
    assert parse_public_keys(text, "keys") == {"abc": [key.public_b64]}
    try:
        parse_public_keys(text + "abc rsa AAAA\n", "keys")
    except ValueError as exc:
        assert str(exc).startswith("keys line 4: expected")
    else:
        raise AssertionError("a bad line was accepted")


def test_verify_keys_that_cannot_be_read_is_one_line(tmp_path: Path, capsys: Any) -> None:
    from collector.cli import main

    bad = tmp_path / "keys.txt"
    bad.write_text("host-1 ed25519 not-a-key\n")
    assert main(["verify", "--keys", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == f"verify: --keys: {bad} line 1: expected '<host.id> ed25519 <base64 public " \
        "key> [host name]'\n"
