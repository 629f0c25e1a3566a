"""Shared helpers for the delivery tests: a fixed host, synthetic ECS documents, configs."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import msgspec

from collector.config import Config
from collector.delivery.elasticsearch.settings import ElasticsearchConfig, RetryConfig
from collector.delivery.metrics import DeliveryMetrics
from collector.delivery.pipeline import Pipeline
from collector.delivery.settings import BatchConfig, SpoolConfig
from collector.ecs.documents import events_lost_document
from collector.ecs.host import HostInfo

HOST = HostInfo(name="test-host", id="0123456789abcdef0123456789abcdef", boot_id="b00t",
                kernel="6.1.0", architecture="x86_64")


def synthetic_doc(n: int, pad: int = 0) -> dict[str, Any]:
    """An exec-like ECS document; n makes it unique, pad makes it bigger."""
    return {
        "@timestamp": f"2024-11-29T02:00:{n % 60:02d}.{n:09d}Z",
        "ecs": {"version": "8.11.0"},
        "host": HOST.ecs(),
        "event": {"kind": "event", "category": ["process"], "type": ["start"],
                  "action": "exec", "module": "audit_collector",
                  "dataset": "audit_collector.exec"},
        "process": {"pid": 1000 + n, "name": "true", "executable": "/usr/bin/true",
                    "args": ["/usr/bin/true", f"arg-{n}", "x" * pad], "args_count": 3},
        "user": {"id": "0", "name": "root"},
        "message": f"synthetic {n}",
    }


def make_config(
    tmp: Path,
    url: str | None = None,
    *,
    spool: dict[str, Any] | None = None,
    batch: dict[str, Any] | None = None,
    retry: dict[str, Any] | None = None,
    es: dict[str, Any] | None = None,
    outputs: tuple[str, ...] | None = None,
) -> Config:
    spool_cfg = SpoolConfig(**({"dir": str(tmp / "spool"), "max_bytes": 64 << 20,
                                "segment_bytes": 1 << 20} | (spool or {})))
    batch_cfg = BatchConfig(**({"max_docs": 500, "max_wait_s": 0.05} | (batch or {})))
    retry_cfg = RetryConfig(**({"initial_s": 0.02, "max_s": 0.2, "item_attempts": 5}
                               | (retry or {})))
    es_cfg = ElasticsearchConfig(**({"request_timeout_s": 5.0, "retry": retry_cfg,
                                     "dead_letter_file": str(tmp / "dead.ndjson")}
                                    | (es or {})))
    if outputs is None:
        outputs = (f"elasticsearch:{url}",) if url else ("file:" + str(tmp / "out.ndjson"),)
    return Config(outputs=outputs, state_dir=str(tmp / "state"), spool=spool_cfg,
                  batch=batch_cfg, elasticsearch=es_cfg)


def replace_es(cfg: Config, **changes: Any) -> Config:
    return msgspec.structs.replace(cfg, elasticsearch=msgspec.structs.replace(cfg.elasticsearch,
                                                                      **changes))


def new_pipeline(cfg: Config, metrics: DeliveryMetrics | None = None, **kwargs: Any
                 ) -> Pipeline:
    """A pipeline for HOST whose loss reports are the ECS wing's events_lost documents."""
    return Pipeline(cfg, HOST, functools.partial(events_lost_document, HOST), metrics=metrics,
                    **kwargs)


def metric(metrics: DeliveryMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


# --------------------------------------------------------------------------- ES test runs

DATA_STREAM = "logs-audit_collector-default"


def doc_id(seq: int) -> str:
    return f"{HOST.id}-{HOST.boot_id}-{seq}"


@dataclasses.dataclass
class Run:
    """What a pipeline run submitted: the synthetic ids, in order."""

    ids: list[str]
    seqs: list[int]


def submit_docs(pipeline: Any, count: int, start: int = 0, tick_every: int = 100,
                pad: int = 0) -> Run:
    """Submit synthetic documents; their ids come from the sealer's sequence."""
    seqs: list[int] = []
    for n in range(start, start + count):
        pipeline.submit(synthetic_doc(n, pad))
        seqs.append(pipeline.sealer.head.seq)
        if n % tick_every == 0:
            pipeline.tick()
    return Run([doc_id(s) for s in seqs], seqs)


def stored(server: Any) -> dict[str, dict[str, Any]]:
    return server.docs(DATA_STREAM)


def split_stored(server: Any) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(synthetic documents, events_lost documents) stored, by _id."""
    docs = stored(server)
    lost = {i: d for i, d in docs.items() if d["event"]["action"] == "events_lost"}
    return {i: d for i, d in docs.items() if i not in lost}, lost


def dead_letter_ids(cfg: Config) -> list[str]:
    import orjson

    path = Path(cfg.elasticsearch.dead_letter_file or "")
    if not path.exists():
        return []
    return [orjson.loads(line)["_id"] for line in path.read_bytes().splitlines() if line]
