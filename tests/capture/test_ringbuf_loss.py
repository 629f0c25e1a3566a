"""Loss is never silent: a full ring buffer becomes counted events_lost documents."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from tests.capture.support import RunningAgent

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="BPF needs root")


def test_full_ring_buffer_is_reported_with_counts() -> None:
    running = RunningAgent(capture={"ringbuf_kib": 16, "bash": False})
    agent = running.agent
    agent.start()  # probes attached, but nobody reads the ring buffer yet
    try:
        mark = f"loss-{uuid.uuid4().hex[:8]}"
        n = 200
        for i in range(n):
            subprocess.run(["/bin/true", mark, str(i), "x" * 200], check=True)
        lost_in_kernel = agent.probes.lost_counts()
        assert lost_in_kernel["exec"] > 0
        agent.probes.drain()
        agent._report_losses()
        running.sink.tick()  # the ledger's first round of reports
    finally:
        agent.probes.close()
    docs = running.sink.docs
    captured = [d for d in docs if d["event"]["action"] == "exec"
                and mark in d["process"].get("args", [])]
    lost_docs = [d for d in docs if d["event"]["action"] == "events_lost"]
    assert len(lost_docs) == 1
    lost = lost_docs[0]["audit_collector"]["lost"]
    assert lost["source"] == "ringbuf"
    # Other processes may exec between the two reads of the kernel's counter: never fewer.
    assert lost["exec"] >= lost_in_kernel["exec"]
    counted = running.sink.losses_metric("exec")
    assert counted == lost["exec"]
    assert lost_docs[0]["event"]["kind"] == "metric"  # a count, not an observed activity
    # Every exec we made is either a document or counted as lost (other processes on the
    # machine may add to the lost count, never to our marked documents).
    assert len(captured) < n
    assert len(captured) + lost["exec"] >= n
