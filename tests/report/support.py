"""A host's history in the test server, made by the real delivery pipeline and lifecycle
on a fake wall clock (a day of heartbeats takes seconds), and the report command run
against it."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import msgspec
import orjson

from collector.config import Config
from collector.delivery.pipeline import Pipeline
from collector.ecs.documents import events_lost_document
from collector.ecs.host import HostInfo
from collector.ecs.lifecycle import checkpoint_document
from collector.lifecycle import Lifecycle
from collector.metrics import Metrics
from tests.delivery.helpers import make_config, synthetic_doc

DAY = "2024-01-10"
DAY_START = 1704844800  # 2024-01-10T00:00:00Z
FAMILIES = ["exec", "namespaces", "bash"]


def host(n: int = 0) -> HostInfo:
    return HostInfo(name=f"web-{n}", id=f"{n:032x}", boot_id=f"b00t{n}", kernel="6.1.0",
                    architecture="x86_64")


class Wall:
    """Fake wall clock (ns) shared by the documents and the heartbeat schedule."""

    def __init__(self, start_s: float = DAY_START) -> None:
        self.ns = int(start_s * 1e9)

    def __call__(self) -> int:
        return self.ns

    def seconds(self) -> float:
        return self.ns / 1e9

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * 1e9)


def stamp(ns: int) -> str:
    secs, nanos = divmod(ns, 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{nanos:09d}Z"


class FakeCollector:
    """Lifecycle + Pipeline of one host, shipping to the test server."""

    def __init__(self, tmp: Path, url: str, wall: Wall, who: HostInfo, heartbeat_s: int = 60,
                 **config: Any) -> None:
        self.wall = wall
        self.host = who
        cfg = make_config(tmp / who.name, url, **config)
        self.cfg: Config = msgspec.structs.replace(
            cfg, lifecycle=msgspec.structs.replace(cfg.lifecycle, heartbeat_s=heartbeat_s))
        self.events = 0

    def start(self, families: list[str] | None = None) -> FakeCollector:
        who, wall = self.host, self.wall
        self.metrics = Metrics("d1g3st")
        self.pipeline = Pipeline(
            self.cfg, who,
            lambda counts, source, extra: events_lost_document(who, counts, source, extra,
                                                               now_ns=wall()),
            metrics=self.metrics.delivery,
            build_checkpoint=lambda cp: checkpoint_document(who, cp, now_ns=wall()),
            clock=wall.seconds)
        self.life = Lifecycle(self.cfg, who, self.pipeline, self.metrics, "d1g3st",
                              clock=wall.seconds, wall_ns=wall)
        self.life.started(FAMILIES if families is None else families)
        return self

    def run(self, seconds: float, every_s: float = 10.0, user: str = "0") -> None:
        """Events every every_s seconds, ticking (heartbeats) as time goes by."""
        end = self.wall.seconds() + seconds
        while self.wall.seconds() + every_s <= end:
            self.wall.advance(every_s)
            self.event(user)
            self.life.tick()
        self.wall.advance(end - self.wall.seconds())
        self.life.tick()

    def event(self, user: str = "0") -> None:
        doc = synthetic_doc(self.events)
        doc["@timestamp"] = stamp(self.wall())
        doc["host"] = self.host.ecs()
        doc["process"]["command_line"] = f"systemctl restart app-{self.events}"
        doc["user"] = {"id": user, "name": "root" if user == "0" else f"user{user}",
                       "effective": {"id": user}}
        doc["audit_collector"] = {**doc.get("audit_collector", {}),
                                  "login_user": {"id": "1000", "name": "alice"}}
        self.events += 1
        self.metrics.capture.events_captured.labels(kind="exec").inc()
        self.life.submit(doc)

    def stop(self, reason: str = "signal SIGTERM") -> None:
        self.life.stopped(reason)


def report(cfg: Config, *args: str) -> tuple[int, str, str]:
    """`audit-collector report ...` in process: (status, stdout, stderr)."""
    from collector.cli import build_parser
    from collector.report.main import run_report

    parsed = build_parser().parse_args(["report", *args])
    out, err = io.StringIO(), io.StringIO()
    status = run_report(cfg, parsed, ["audit-collector", "report", *args], out, err)
    return status, out.getvalue(), err.getvalue()


def ndjson_rows(text: str) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    lines = [orjson.loads(line) for line in text.splitlines() if line]
    return lines[0]["header"], lines[1:-1], lines[-1]
