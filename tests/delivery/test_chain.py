"""Sequence numbers, deterministic ids and the hash chain."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import orjson

from collector.delivery.chain import (
    GENESIS_PREV,
    ChainPoint,
    Sealer,
    chain_hash,
    chain_of,
    content_bytes,
    point_of,
)
from tests.delivery.helpers import HOST, synthetic_doc


def test_seal_numbers_ids_and_chains(tmp_path: Path) -> None:
    sealer = Sealer(tmp_path, HOST, (ChainPoint(41, "h41"),))
    original = synthetic_doc(1)
    before = copy.deepcopy(original)
    first = sealer.seal(original)
    second = sealer.seal(synthetic_doc(2))
    assert original == before  # the caller's dict is not modified
    assert (first.seq, second.seq) == (42, 43)
    assert first.id == f"{HOST.id}-{HOST.boot_id}-42"
    doc1, doc2 = orjson.loads(first.data), orjson.loads(second.data)
    assert doc1["event"]["sequence"] == 42
    assert chain_of(doc1) == ("h41", chain_hash("h41", content_bytes(doc1)))
    assert chain_of(doc2)[0] == chain_of(doc1)[1]
    assert orjson.loads(first.data) == doc1  # output need not be canonical; verify re-sorts


def test_content_bytes_ignores_only_the_chain(tmp_path: Path) -> None:
    sealed = orjson.loads(Sealer(tmp_path, HOST, (ChainPoint(1, "x"),)).seal(
        synthetic_doc(3)).data)
    prev, digest = chain_of(sealed)
    assert chain_hash(prev, content_bytes(sealed)) == digest
    sealed["process"]["args"][1] = "edited"
    assert chain_hash(prev, content_bytes(sealed)) != digest


def test_existing_custom_fields_are_kept_and_hashed(tmp_path: Path) -> None:
    doc = synthetic_doc(4) | {"audit_collector": {"session_id": 7}}
    sealed = orjson.loads(Sealer(tmp_path, HOST, (ChainPoint(1, "x"),)).seal(doc).data)
    assert sealed["audit_collector"]["session_id"] == 7
    prev, digest = chain_of(sealed)
    assert chain_hash(prev, content_bytes(sealed)) == digest


def test_restart_continues_after_checkpoint(tmp_path: Path) -> None:
    sealer = Sealer(tmp_path, HOST, (ChainPoint(100, "h"),))
    last = [sealer.seal(synthetic_doc(i)) for i in range(5)][-1]
    sealer.checkpoint(durable=True)
    again = Sealer(tmp_path, HOST)
    assert again.head == point_of(last.data)
    assert again.seal(synthetic_doc(9)).seq == last.seq + 1


def test_recovered_point_beats_stale_state(tmp_path: Path) -> None:
    """After SIGKILL the spool's last record is newer than the checkpoint: it wins."""
    sealer = Sealer(tmp_path, HOST, (ChainPoint(10, "a"),))
    sealer.checkpoint()
    sealed = [sealer.seal(synthetic_doc(i)) for i in range(3)]  # not checkpointed
    again = Sealer(tmp_path, HOST, (point_of(sealed[-1].data), None))
    assert again.head.seq == 13
    assert chain_of(orjson.loads(again.seal(synthetic_doc(4)).data))[0] == again_hash(sealed)


def again_hash(sealed: list) -> str:
    return point_of(sealed[-1].data).hash


def test_fresh_state_starts_a_genesis_above_old_sequences(tmp_path: Path) -> None:
    before_us = time.time_ns() // 1000
    sealer = Sealer(tmp_path / "new", HOST)
    doc = orjson.loads(sealer.seal(synthetic_doc(1)).data)
    assert doc["event"]["sequence"] > before_us
    assert chain_of(doc)[0] == GENESIS_PREV


def test_corrupt_state_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "chain.state").write_bytes(b"{not json")
    sealer = Sealer(tmp_path, HOST, (ChainPoint(5, "h5"),))
    assert sealer.seal(synthetic_doc(1)).seq == 6


def test_file_sink_only_pipeline_recovers_from_the_file(tmp_path: Path) -> None:
    """Without a spool, a lost state file is recovered from the sink's last line."""
    from tests.delivery.helpers import make_config, new_pipeline

    cfg = make_config(tmp_path)  # file output only
    pipeline = new_pipeline(cfg)
    for n in range(10):
        pipeline.submit(synthetic_doc(n))
    pipeline.close()
    (Path(cfg.state_dir) / "chain.state").unlink()
    again = new_pipeline(cfg)
    again.submit(synthetic_doc(11))
    again.close()
    lines = [orjson.loads(x) for x in (tmp_path / "out.ndjson").read_bytes().splitlines()]
    seqs = [d["event"]["sequence"] for d in lines]
    assert seqs == list(range(seqs[0], seqs[0] + 11))
    assert chain_of(lines[10])[0] == chain_of(lines[9])[1]


def test_spliced_chain_matches_a_full_serialisation() -> None:
    import orjson

    from collector.delivery.chain import canonical, content_bytes, with_chain

    cases = [
        {"@timestamp": "t", "agent": {"name": 'x"audit_collector":{'},
         "audit_collector": {"vpid": 1}, "event": {"sequence": 1}},
        {"@timestamp": "t", "event": {"sequence": 2}},
        {"@timestamp": "t", "audit_collector": {}, "z": 1},
    ]
    for doc in cases:
        content = canonical(doc)
        data = with_chain(content, "p", "h")
        parsed = orjson.loads(data)
        assert parsed["audit_collector"]["chain"] == {"prev": "p", "hash": "h"}
        assert content_bytes(parsed) == canonical(
            {k: v for k, v in doc.items() if not (k == "audit_collector" and v == {})})
