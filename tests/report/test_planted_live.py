"""Gap causes planted on the real collector and named by `report gaps`: the collector
killed with SIGKILL (a real `audit-collector run` with real probes), and ring-buffer
records dropped by the kernel (a 16 KiB ring buffer nobody reads)."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from collector.agent import Agent
from collector.config import Config, config_from_mapping
from collector.delivery.pipeline import Pipeline
from collector.ecs.documents import events_lost_document
from collector.ecs.host import detect_host
from collector.lifecycle import Lifecycle, checkpoint_builder
from collector.metrics import Metrics
from tests.esserver import ESTestServer
from tests.report.support import ndjson_rows, report
from tests.test_run import free_port, wait_healthy

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="BPF needs root")


def today() -> tuple[str, str]:
    now = time.time()
    return (time.strftime("%Y-%m-%d", time.gmtime(now)),
            time.strftime("%Y-%m-%d", time.gmtime(now + 86_400)))


def settings(tmp_path: Path, url: str, **extra: Any) -> dict[str, Any]:
    return {"outputs": [f"elasticsearch:{url}"], "state_dir": str(tmp_path / "state"),
            "spool": {"dir": str(tmp_path / "spool")}, "batch": {"max_wait_s": 0.1},
            "lifecycle": {"heartbeat_s": 1}, "checkpoint": {"every_s": 1}, **extra}


def gap_rows(cfg: Config, name: str) -> list[dict[str, Any]]:
    start, end = today()
    status, out, err = report(cfg, "gaps", "--from", start, "--to", end, "--host", name,
                              "--format", "ndjson")
    assert status == 1, err
    return ndjson_rows(out)[1]


def start_collector(config: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "collector", "run", "--config",
                             str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_healthy(port, proc)
    return proc


def test_a_killed_collector_is_an_unclean_stop(server: ESTestServer, tmp_path: Path) -> None:
    import yaml

    port = free_port()
    data = settings(tmp_path, server.url, metrics={"listen": f"127.0.0.1:{port}"},
                    capture={"bash": False})
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data))
    first = start_collector(config, port)
    subprocess.run(["/bin/true", f"before-{uuid.uuid4().hex[:8]}"], check=True)
    time.sleep(2.5)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed_at = time.time()
    time.sleep(3)
    second = start_collector(config, port)
    time.sleep(2)
    second.send_signal(signal.SIGTERM)
    _, stderr = second.communicate(timeout=60)
    assert second.returncode == 0, stderr.decode()
    keys = tmp_path / "keys.txt"
    line = subprocess.run([sys.executable, "-m", "collector", "key", "--config", str(config)],
                          check=True, capture_output=True, text=True).stdout
    keys.write_text(line)
    server.refresh()
    cfg = config_from_mapping(data)
    name = detect_host().name
    [unclean] = [r for r in gap_rows(cfg, name) if r["cause"] == "unclean stop"]
    assert 2.5 < unclean["duration_s"] < 30
    assert "killed, crashed or power lost" in unclean["detail"]
    assert unclean["missing"] and unclean["missing"] >= 1  # the reserved numbers skipped
    ended = time.mktime(time.strptime(unclean["end"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert ended >= killed_at + 2.5
    # the chain links across the skip, and the next run's checkpoints sign it with the key
    # `audit-collector key` prints
    start, end = today()
    status, out, err = report(cfg, "integrity", "--from", start, "--to", end, "--host", name,
                              "--keys", str(keys), "--format", "ndjson")
    [row] = ndjson_rows(out)[1]
    assert (status, row["status"]) == (0, "ok"), (row, err)
    assert row["signature"] == "signed"


def test_records_the_ring_buffer_dropped_are_a_ring_buffer_loss(server: ESTestServer,
                                                                tmp_path: Path) -> None:
    cfg = config_from_mapping(settings(tmp_path, server.url, metrics={"enabled": False},
                                       capture={"ringbuf_kib": 16, "bash": False,
                                                "poll_interval_ms": 20}))
    host = detect_host()
    metrics = Metrics("digest")
    pipeline = Pipeline(cfg, host, functools.partial(events_lost_document, host),
                        metrics=metrics.delivery, build_checkpoint=checkpoint_builder(host))
    life = Lifecycle(cfg, host, pipeline, metrics, "digest")
    agent = Agent(cfg, host, life, metrics=metrics)
    agent.start()  # probes attached, nobody reads the ring buffer yet
    try:
        assert agent.probes is not None
        life.started(list(agent.probes.families))
        mark = f"loss-{uuid.uuid4().hex[:8]}"
        for i in range(200):
            subprocess.run(["/bin/true", mark, str(i), "x" * 200], check=True)
        lost = agent.probes.lost_counts()["exec"]
        assert lost > 0
        agent.probes.drain()
        agent._report_losses()
    finally:
        if agent.probes is not None:
            agent.probes.close()
        life.stopped("test over")
    server.refresh()
    [loss] = [r for r in gap_rows(cfg, host.name) if r["cause"] == "ring-buffer loss"]
    assert loss["missing"] >= lost  # other processes of the machine may add to it
    assert f"exec={loss['missing']}" in loss["detail"]
    assert loss["start"] <= loss["end"]
