"""The collector's own documents: start (how the previous run ended), heartbeat (counters
since the last), probe failures, detaches and stop, in the sealed sequence."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import orjson

from collector.capture.families import FAMILIES
from collector.config import Config
from collector.delivery.pipeline import Pipeline
from collector.ecs.documents import events_lost_document
from collector.lifecycle import Lifecycle, checkpoint_builder, host_boot_time
from collector.metrics import Metrics
from tests.delivery.helpers import HOST, make_config, synthetic_doc


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def open_lifecycle(cfg: Config, clock: Clock | None = None) -> tuple[Lifecycle, Metrics]:
    metrics = Metrics("d1g3st")
    pipeline = Pipeline(cfg, HOST, functools.partial(events_lost_document, HOST),
                        metrics=metrics.delivery, build_checkpoint=checkpoint_builder(HOST))
    return Lifecycle(cfg, HOST, pipeline, metrics, "d1g3st", clock=clock or Clock()), metrics


def documents(tmp_path: Path) -> list[dict[str, Any]]:
    out = tmp_path / "out.ndjson"
    return [orjson.loads(line) for line in out.read_bytes().splitlines() if line]


def actions(docs: list[dict[str, Any]]) -> list[str]:
    return [d["event"]["action"] for d in docs]


def test_a_clean_run_then_a_restart(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    clock = Clock()
    life, metrics = open_lifecycle(cfg, clock)
    life.started(["exec", "bash"])
    for n in range(3):
        metrics.capture.events_captured.labels(kind="exec").inc()
        life.submit(synthetic_doc(n))
    clock.now += cfg.lifecycle.heartbeat_s
    life.tick()
    life.stopped("signal SIGTERM")
    docs = documents(tmp_path)
    assert actions(docs) == ["collector_start", "exec", "exec", "exec", "heartbeat",
                             "probe_detached", "probe_detached", "collector_stop", "checkpoint"]
    start = docs[0]["audit_collector"]["collector"]
    assert start["previous"] == {"end": "none"}
    assert start["families"] == ["exec", "bash"]
    assert start["config_digest"] == "d1g3st"
    assert start["heartbeat_s"] == 60
    assert start["signing"] == "on" and len(start["public_key"]) == 44
    assert start["host_boot_time"] == host_boot_time()
    beat = docs[4]["audit_collector"]["heartbeat"]
    assert beat["captured"] == {**{f.label: 0 for f in FAMILIES}, "exec": 3}
    assert set(beat["captured"]) == {"exec", "namespace", "bash", "fork", "exit"}
    assert beat["spooled"] == 0 and beat["lost"] == 0  # no Elasticsearch output here
    assert docs[4]["event"]["kind"] == "metric"
    stop = docs[7]
    assert stop["audit_collector"]["collector"]["reason"] == "signal SIGTERM"
    seqs = [d["event"]["sequence"] for d in docs]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))

    again, _ = open_lifecycle(cfg)
    again.started(["exec"])
    again.stopped("signal SIGINT")
    second = documents(tmp_path)[len(docs):]
    previous = second[0]["audit_collector"]["collector"]["previous"]
    assert previous == {"end": "clean", "last_sequence": seqs[-1]}
    assert second[0]["event"]["sequence"] == seqs[-1] + 1  # no skip after a clean stop
    assert second[0]["audit_collector"]["collector"]["public_key"] == start["public_key"]


def test_an_unclean_stop_is_named_by_the_next_start(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    life, _ = open_lifecycle(cfg)
    life.started(["exec"])
    life.submit(synthetic_doc(1))
    life.tick()  # written out, then the process "dies": no stop, no reservation given back
    last = documents(tmp_path)[-1]["event"]["sequence"]
    again, _ = open_lifecycle(cfg)
    again.started(["exec"])
    again.close()
    start = documents(tmp_path)[2]
    previous = start["audit_collector"]["collector"]["previous"]
    assert previous["end"] == "unclean"
    assert previous["last_sequence"] == last
    assert previous["skipped_first"] == last + 1
    assert previous["skipped_last"] == start["event"]["sequence"] - 1


def test_probe_failures_before_the_start_follow_it(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    life, _ = open_lifecycle(cfg)
    life.probe_failed("bash", "/usr/local/bin/bash", "cannot attach uretprobe")
    life.started(["exec", "bash"])
    life.close()
    docs = documents(tmp_path)
    assert actions(docs)[:2] == ["collector_start", "probe_attach_failed"]
    failed = docs[1]
    assert failed["audit_collector"]["probe"] == {"family": "bash",
                                                  "target": "/usr/local/bin/bash"}
    assert failed["error"]["message"] == "cannot attach uretprobe"
    assert failed["event"]["outcome"] == "failure"


def test_host_boot_time_reads_btime(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n")
    assert host_boot_time(str(stat)) == "2023-11-14T22:13:20Z"
    assert host_boot_time(str(tmp_path / "missing")) is None
