"""Sequence numbers, deterministic ids and the hash chain."""

from __future__ import annotations

import copy
import logging
import os
import stat
import time
from pathlib import Path

import orjson
import pytest

from collector.delivery.chain import (
    GENESIS_PREV,
    RESERVE_BLOCK,
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
    """After SIGKILL the spool's last record is newer than the checkpoint: the chain
    continues from it (numbered above the reserved block, see below)."""
    sealer = Sealer(tmp_path, HOST, (ChainPoint(10, "a"),))
    sealer.checkpoint()
    sealed = [sealer.seal(synthetic_doc(i)) for i in range(3)]  # not checkpointed
    again = Sealer(tmp_path, HOST, (point_of(sealed[-1].data), None))
    assert again.head.hash == point_of(sealed[-1].data).hash
    assert again.head.seq >= 13
    assert chain_of(orjson.loads(again.seal(synthetic_doc(4)).data))[0] == \
        point_of(sealed[-1].data).hash


def test_fresh_state_starts_a_genesis_above_old_sequences(tmp_path: Path) -> None:
    before_us = time.time_ns() // 1000
    sealer = Sealer(tmp_path / "new", HOST)
    doc = orjson.loads(sealer.seal(synthetic_doc(1)).data)
    assert doc["event"]["sequence"] > before_us
    assert chain_of(doc)[0] == GENESIS_PREV


H5 = "5" * 64


@pytest.mark.parametrize("state", [
    b"{not json", b"[1,2]", b"null", b'"text"', b'{"seq": 18446744073709551615, "hash": ""}',
    b'{"seq": 9223372036854775807, "hash": ""}', b'{"seq": -3, "hash": ""}',
    b'{"seq": true, "hash": ""}', b'{"seq": 7, "hash": "not a hash"}', b'{"seq": 7}',
    b'{"seq": 7, "hash": "", "reserved": 3}', b'{"seq": 7, "hash": "", "reserved": "x"}',
    b"\xff\xfe" * 10,
], ids=["not-json", "list", "null", "string", "u64-max", "i64-max", "negative", "bool",
        "bad-hash", "no-hash", "reserved-below", "reserved-type", "binary"])
def test_invalid_state_is_reported_and_sealing_continues_above_every_point(
    tmp_path: Path, state: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "chain.state").write_bytes(state)
    with caplog.at_level(logging.WARNING):
        sealer = Sealer(tmp_path, HOST, (ChainPoint(5, H5), None))
    first = sealer.seal(synthetic_doc(1))
    assert 5 < first.seq < 1 << 62  # above the recovered point, far below the long limit
    assert chain_of(orjson.loads(first.data))[0] == H5  # still linked to it
    assert sealer.state_problem is not None and "chain.state" in sealer.state_problem
    [line] = [r.getMessage() for r in caplog.records if "chain.state" in r.getMessage()]
    assert "\n" not in line and len(line) < 300


def test_recovered_points_out_of_range_are_ignored(tmp_path: Path) -> None:
    sealer = Sealer(tmp_path, HOST, (ChainPoint(1 << 64, H5), ChainPoint(-1, H5),
                                     ChainPoint(9, "short")))
    assert sealer.seal(synthetic_doc(1)).seq < 1 << 62


def test_state_at_the_top_of_the_range_drops_nothing(tmp_path: Path) -> None:
    """Regression: a state of 2^64-1 made every document fail to spool (43 tracebacks)."""
    from collector.delivery.metrics import DeliveryMetrics
    from tests.delivery.helpers import make_config, metric, new_pipeline

    cfg = make_config(tmp_path, "http://127.0.0.1:9")
    Path(cfg.state_dir).mkdir()
    (Path(cfg.state_dir) / "chain.state").write_bytes(
        orjson.dumps({"seq": (1 << 64) - 1, "hash": ""}))
    metrics = DeliveryMetrics()
    pipeline = new_pipeline(cfg, metrics, start_shipping=False)
    for n in range(43):
        pipeline.submit(synthetic_doc(n))
    pipeline.close()
    assert metric(metrics, "audit_collector_events_lost_total", kind="document",
                  where="spool") == 0
    assert pipeline.spool is not None and pipeline.spool.pending()[0] == 43
    assert pipeline.sealer.state_problem is not None


def test_unclean_restart_never_reissues_a_sequence(tmp_path: Path) -> None:
    """Killed with a stale state file and the spool's tail lost: the sequences sealed
    after the recovered point may be stored already (same _id: 409, then lost)."""
    sealer = Sealer(tmp_path, HOST, (ChainPoint(100, H5),))
    shipped = [sealer.seal(synthetic_doc(i)) for i in range(50)]
    sealer.checkpoint()  # the state file says 150
    lost_tail = [sealer.seal(synthetic_doc(i)) for i in range(30)]  # 151..180, then SIGKILL
    again = Sealer(tmp_path, HOST, (point_of(shipped[-1].data),))  # the spool ends at 150
    first = again.seal(synthetic_doc(99))
    assert first.seq > lost_tail[-1].seq
    # Nothing was sealed between: the chain links straight across the skipped numbers.
    assert chain_of(orjson.loads(first.data))[0] == point_of(shipped[-1].data).hash
    assert again.skipped is not None and again.skipped[0] == 151
    assert again.skipped[1] == first.seq - 1


def test_clean_stop_continues_without_a_skip(tmp_path: Path) -> None:
    sealer = Sealer(tmp_path, HOST, (ChainPoint(100, H5),))
    last = [sealer.seal(synthetic_doc(i)) for i in range(5)][-1]
    sealer.checkpoint(durable=True)  # the final checkpoint of a clean stop
    again = Sealer(tmp_path, HOST, (point_of(last.data),))
    assert again.seal(synthetic_doc(9)).seq == last.seq + 1
    assert again.skipped is None and again.state_problem is None


def test_sequences_are_reserved_on_disk_before_they_are_sealed(tmp_path: Path) -> None:
    sealer = Sealer(tmp_path, HOST, (ChainPoint(100, H5),))
    reserved, reads = 0, 0
    for i in range(3 * RESERVE_BLOCK):
        sealed = sealer.seal(synthetic_doc(i))
        if i % 20000 == 0:
            sealer.checkpoint()  # a tick: reserves ahead when half the block is used
        if sealed.seq > reserved:  # the file must say so by now
            reserved = orjson.loads((tmp_path / "chain.state").read_bytes())["reserved"]
            reads += 1
            assert reserved >= sealed.seq
    assert reads >= 3


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


def test_planted_temp_symlink_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    for name in ("chain.tmp", "chain.state.tmp"):
        (state_dir / name).symlink_to(victim)
    sealer = Sealer(state_dir, HOST, (ChainPoint(1, H5),))
    sealer.seal(synthetic_doc(1))
    sealer.checkpoint(durable=True)
    assert victim.read_bytes() == b"precious"
    assert orjson.loads((state_dir / "chain.state").read_bytes())["seq"] == 2


def test_planted_state_symlink_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(orjson.dumps({"seq": 50, "hash": H5}))
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "chain.state").symlink_to(victim)
    sealer = Sealer(tmp_path / "state", HOST, (ChainPoint(1, H5),))
    sealer.seal(synthetic_doc(1))
    sealer.checkpoint(durable=True)
    assert orjson.loads(victim.read_bytes()) == {"seq": 50, "hash": H5}
    assert not (tmp_path / "state" / "chain.state").is_symlink()
    assert sealer.state_problem is not None  # a symlink is not read either


def test_state_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        sealer = Sealer(tmp_path / "state", HOST, (ChainPoint(1, H5),))
        sealer.seal(synthetic_doc(1))
        sealer.checkpoint(durable=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "state" / "chain.state").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700


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
