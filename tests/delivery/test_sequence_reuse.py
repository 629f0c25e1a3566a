"""Sequence numbers are never issued twice (issue 10, item 21): after a crash that lost the
spool's tail together with a fresh-enough state file, re-issued numbers collided with
stored _ids, were answered 409, counted as duplicates and lost."""

from __future__ import annotations

import signal
from pathlib import Path

import orjson

from collector.delivery.chain import ChainPoint, Sealer
from collector.delivery.elasticsearch.verify import verify_documents
from tests.delivery.elasticsearch.support import install_template
from tests.delivery.elasticsearch.test_faults import (
    assert_verify_clean,
    start_driver,
    wait_for,
    wait_line,
)
from tests.delivery.helpers import HOST, make_config, split_stored, synthetic_doc
from tests.esserver import ESTestServer


def test_crash_with_lost_spool_tail_and_stale_state_loses_nothing(
    es_server: ESTestServer, tmp_path: Path
) -> None:
    server = es_server
    install_template(server, tmp_path)  # as `setup` leaves a cluster: the shipper needs it
    proc = start_driver(tmp_path, server.url, "--count", "300", "--hold")
    _, first, last = (int(x) if x.isdigit() else x for x in wait_line(proc, "READY").split())
    wait_for(lambda: server.counter("bulk.items.created") >= 300)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    # The spool loses its tail (here: all of it) and the state file is an older one,
    # written when the head was 50 documents in.
    for path in (tmp_path / "spool").iterdir():
        path.unlink()
    state_path = tmp_path / "state" / "chain.state"
    state = orjson.loads(state_path.read_bytes())
    synthetic, _ = split_stored(server)
    old_head = next(d for d in synthetic.values() if d["event"]["sequence"] == first + 49)
    state.update(seq=first + 49, hash=old_head["audit_collector"]["chain"]["hash"])
    state_path.write_bytes(orjson.dumps(state))

    restart = start_driver(tmp_path, server.url, "--count", "100", "--start", "1000",
                           "--close", "60")
    _, again_first, _ = wait_line(restart, "READY").split()
    wait_line(restart, "CLOSED")
    restart.wait(10)

    synthetic, _ = split_stored(server)
    assert server.counter("bulk.items.conflict") == 0  # no _id was issued twice
    assert len(synthetic) == 400  # every document of both runs is stored
    assert int(again_first) > last
    out = assert_verify_clean(make_config(tmp_path, server.url))
    assert f"fork seq {again_first}: the chain continues from seq {first + 49}" in out, out


def test_verify_names_sequence_numbers_skipped_after_an_unclean_stop(tmp_path: Path) -> None:
    sealer = Sealer(tmp_path, HOST, (ChainPoint(100, "5" * 64),))
    before = [sealer.seal(synthetic_doc(i)) for i in range(5)]  # 101..105; then SIGKILL
    again = Sealer(tmp_path, HOST, (ChainPoint(before[-1].seq, orjson.loads(
        before[-1].data)["audit_collector"]["chain"]["hash"]),))
    after = [again.seal(synthetic_doc(i)) for i in range(5)]
    docs = [(d.id, orjson.loads(d.data)) for d in before + after]
    result = verify_documents(docs, [])
    assert result.clean, [f.line() for f in result.findings]
    [finding] = result.findings
    assert finding.kind == "skipped"
    assert (finding.first_seq, finding.last_seq) == (106, after[0].seq - 1)


def test_verify_still_fails_a_deletion_that_looks_like_a_skip(tmp_path: Path) -> None:
    """Deleted documents leave a gap whose next document links to the deleted one."""
    sealer = Sealer(tmp_path, HOST, (ChainPoint(100, "5" * 64),))
    sealed = [sealer.seal(synthetic_doc(i)) for i in range(10)]
    docs = [(d.id, orjson.loads(d.data)) for i, d in enumerate(sealed) if i not in (4, 5)]
    result = verify_documents(docs, [])
    assert not result.clean
    assert [f.kind for f in result.findings] == ["gap"]
