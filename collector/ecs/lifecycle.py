"""The collector's own documents: start, stop, heartbeat, checkpoint, probe failures.

They travel in the same sealed sequence as the events, so an auditor can tell "collector
down" (no heartbeat) from "host quiet" (heartbeats, no events), and a restart from a crash.
Every one has ``event.module: audit_collector`` and ``event.dataset:
audit_collector.collector``; what they carry lives under ``audit_collector.collector``,
``.heartbeat``, ``.checkpoint`` and ``.probe`` (collector/fields.py).
"""

from __future__ import annotations

import time
from typing import Any

from collector import __version__
from collector.ecs.enrichment import Doc, iso_utc_ns
from collector.ecs.host import HostInfo
from collector.fields import CUSTOM_ROOT, ECS_VERSION

LIFECYCLE_DATASET = "audit_collector.collector"
START, STOP, HEARTBEAT, CHECKPOINT = ("collector_start", "collector_stop", "heartbeat",
                                      "checkpoint")
PROBE_FAILED, PROBE_DETACHED = "probe_attach_failed", "probe_detached"
LIFECYCLE_ACTIONS = (START, STOP, HEARTBEAT, CHECKPOINT, PROBE_FAILED, PROBE_DETACHED)


def collector_document(host: HostInfo, action: str, custom: Doc, message: str, *,
                       kind: str = "event", etype: str = "info", outcome: str = "success",
                       now_ns: int | None = None) -> Doc:
    """A document about the collector itself (not about an event it captured)."""
    now = time.time_ns() if now_ns is None else now_ns
    return {
        "@timestamp": iso_utc_ns(now),
        "ecs": {"version": ECS_VERSION},
        "agent": {"type": "audit-collector", "version": __version__, "name": host.name},
        "host": host.ecs(),
        "event": {"kind": kind, "category": ["process"], "type": [etype], "action": action,
                  "outcome": outcome, "module": "audit_collector",
                  "dataset": LIFECYCLE_DATASET, "created": iso_utc_ns(now)},
        "message": message,
        CUSTOM_ROOT: custom,
    }


def start_document(host: HostInfo, collector: dict[str, Any], ok: bool = True,
                   now_ns: int | None = None) -> Doc:
    """collector: config_digest, families, host_boot_time, public_key, key_id, signing,
    previous {end, last_sequence, skipped_first, skipped_last}, heartbeat_s."""
    previous = collector.get("previous") or {}
    families = ", ".join(collector.get("families") or ()) or "none"
    message = (f"audit-collector {__version__} started: probes {families}; previous run "
               f"ended {previous.get('end', 'unknown')}")
    return collector_document(host, START, {"collector": collector}, message, etype="start",
                              outcome="success" if ok else "failure", now_ns=now_ns)


def stop_document(host: HostInfo, reason: str, families: list[str],
                  now_ns: int | None = None) -> Doc:
    return collector_document(host, STOP, {"collector": {"reason": reason,
                                                         "families": families}},
                              f"audit-collector stopped: {reason}", etype="end", now_ns=now_ns)


def heartbeat_document(host: HostInfo, interval_s: int, since_ns: int,
                       counts: dict[str, Any], now_ns: int | None = None) -> Doc:
    """counts: captured {exec, namespace, bash}, lost, spooled, shipped, dead_lettered."""
    heartbeat = {"since": iso_utc_ns(since_ns), **counts}
    captured = sum((counts.get("captured") or {}).values())
    return collector_document(
        host, HEARTBEAT, {"collector": {"heartbeat_s": interval_s}, "heartbeat": heartbeat},
        f"heartbeat: {captured} events captured, {counts.get('lost', 0)} lost",
        kind="metric", now_ns=now_ns)


def checkpoint_document(host: HostInfo, checkpoint: dict[str, Any],
                        now_ns: int | None = None) -> Doc:
    """checkpoint: sequence, hash, boot_id, signature, key_id, every_s."""
    return collector_document(
        host, CHECKPOINT, {"checkpoint": checkpoint},
        f"checkpoint: sequence {checkpoint['sequence']} signed by key {checkpoint['key_id']}",
        now_ns=now_ns)


def probe_document(host: HostInfo, failed: bool, family: str, target: str = "",
                   error: str = "", now_ns: int | None = None) -> Doc:
    probe = {"family": family, **({"target": target} if target else {})}
    what = f"{family} {target}".strip()
    doc = collector_document(
        host, PROBE_FAILED if failed else PROBE_DETACHED, {"probe": probe},
        f"probe {'attach failed' if failed else 'detached'}: {what}"
        + (f": {error}" if error else ""),
        etype="error" if failed else "end", outcome="failure" if failed else "success",
        now_ns=now_ns)
    if error:
        doc["error"] = {"message": error[:1024]}
    return doc
