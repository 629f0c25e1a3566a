"""Typed events -> Elastic Common Schema documents (plain dicts, ready for orjson).

ECS fields keep their ECS meaning; everything the collector adds lives under the one
non-ECS object `audit_collector` (see collector/fields.py for the full list).
"""

from __future__ import annotations

import errno
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from collector import __version__
from collector.capture.families import CLONE_FLAGS, NS_KINDS
from collector.capture.records import (
    BashEvent,
    Event,
    ExecEvent,
    ExitEvent,
    ForkEvent,
    NamespaceEvent,
    Who,
)
from collector.ecs.enrichment import Doc, Enrichment, iso_utc_ns, tty_display_name
from collector.ecs.host import HostInfo
from collector.ecs.processes import Clock, EntityIds, Proc, ProcessTable, ProcSource
from collector.fields import CUSTOM_ROOT, ECS_VERSION

__all__ = ["ACTIONS", "DataStream", "Doc", "DocumentBuilder", "events_lost_document"]

# --------------------------------------------------------------------------- text


def _needs_escape(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def escape_bytes(raw: bytes) -> str:
    """Reversible text for bytes that are not UTF-8: backslash doubled, bad bytes as \\xNN."""
    out: list[str] = []
    view = raw
    while view:
        try:
            out.append(view.decode("utf-8").replace("\\", "\\\\"))
            break
        except UnicodeDecodeError as exc:
            out.append(view[: exc.start].decode("utf-8").replace("\\", "\\\\"))
            out.extend(f"\\x{b:02x}" for b in view[exc.start : exc.end])
            view = view[exc.end :]
    return "".join(out)


def unescape_text(text: str) -> bytes:
    """Inverse of escape_bytes (for consumers and tests)."""
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and text.startswith("\\\\", i):
            out += b"\\"
            i += 2
        elif ch == "\\" and text.startswith("\\x", i):
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        else:
            out += ch.encode("utf-8")
            i += 1
    return bytes(out)


def texts(values: list[bytes]) -> tuple[list[str], bool]:
    """Decode a group of byte strings; if any is not UTF-8, escape all (one rule per doc)."""
    if any(_needs_escape(v) for v in values):
        return [escape_bytes(v) for v in values], True
    return [v.decode("utf-8") for v in values], False


def errno_name(retval: int) -> str:
    return errno.errorcode.get(-retval, f"E{-retval}")


def _prune(value: Any) -> Any:
    """Drop None values and empty objects so documents carry only what is known."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items() if v is not None}
        return {k: v for k, v in pruned.items() if v != {}}
    return value


# --------------------------------------------------------------------------- builder


class DataStream(NamedTuple):
    """Where the documents go (data_stream.*; event.dataset equals the dataset)."""

    dataset: str = "audit_collector"
    namespace: str = "default"
    type: str = "logs"

    def ecs(self) -> Doc:
        return {"type": self.type, "dataset": self.dataset, "namespace": self.namespace}


class Classification(NamedTuple):
    """event.kind, event.category and event.type of an action (ECS allowed values/pairs)."""

    kind: str
    category: tuple[str, ...]
    type: tuple[str, ...]


DEFAULT_STREAM = DataStream()

ACTIONS: dict[str, Classification] = {
    "fork": Classification("event", ("process",), ("start",)),
    "exec": Classification("event", ("process",), ("start",)),
    "end": Classification("event", ("process",), ("end",)),
    "setns": Classification("event", ("process",), ("change",)),
    "unshare": Classification("event", ("process",), ("change",)),
    "clone": Classification("event", ("process",), ("change",)),
    "bash_command": Classification("event", ("process",), ("info",)),
    # A count of the collector's own losses over an interval: a measurement, not activity.
    "events_lost": Classification("metric", ("process",), ("info",)),
}


def _event(action: str, outcome: str, stream: DataStream, created: str) -> Doc:
    what = ACTIONS[action]
    return {
        "kind": what.kind,
        "category": list(what.category),
        "type": list(what.type),
        "action": action,
        "outcome": outcome,
        "module": "audit_collector",
        "dataset": stream.dataset,
        "created": created,
    }


def _static_part(host: HostInfo, stream: DataStream) -> Doc:
    return {
        "ecs": {"version": ECS_VERSION},
        "agent": {"type": "audit-collector", "version": __version__, "name": host.name},
        "data_stream": stream.ecs(),
        "host": host.ecs(),
    }


def host_process_table(host: HostInfo, enrich: Enrichment, max_entries: int = 100_000,
                       on_evict: Callable[[], None] = lambda: None) -> ProcessTable:
    """This host's process table (not seeded yet: `seed()` enters the running processes)."""
    ids = EntityIds(enrich.host_ns.inodes.get("pid", 0), host.boot_uuid or host.boot_id)
    return ProcessTable(ids, Clock.of_host(), ProcSource(), enrich.user, iso_utc_ns,
                        max_entries, on_evict)


@dataclass
class DocumentBuilder:
    """Assembles documents from an event's own values and the enrichment's shared
    sub-objects (see Enrichment: the one cache of the document path)."""

    host: HostInfo
    enrich: Enrichment
    stream: DataStream = DEFAULT_STREAM
    processes: ProcessTable | None = None  # default: this host's, unseeded

    def __post_init__(self) -> None:
        self._static = _static_part(self.host, self.stream)
        self._boot = self.host.boot_id[:12]
        if self.processes is None:
            self.processes = host_process_table(self.host, self.enrich)
        self._table: ProcessTable = self.processes

    def build(self, event: Event) -> Doc:
        if isinstance(event, ExecEvent):
            return self.exec_document(event)
        if isinstance(event, ForkEvent):
            return self.fork_document(event)
        if isinstance(event, ExitEvent):
            return self.end_document(event)
        if isinstance(event, NamespaceEvent):
            return self.namespace_document(event)
        return self.bash_document(event)

    # -- common parts

    def base(self, event: Event, action: str, outcome: str, proc: Proc | None = None) -> Doc:
        """The parts every document has; `proc`: the table's process (found if not given)."""
        who = event.who
        if proc is None:
            proc = self._table.process(who)
        enrich = self.enrich
        cgroup, container = enrich.cgroup(who)
        timestamp = enrich.timestamp(who.ktime_ns)
        custom: Doc = {"timestamp": timestamp, "cgroup": cgroup,
                       "namespaces": enrich.namespaces(who, container)}
        if who.auid is not None:
            custom["login_user"] = enrich.user(who.auid)
        if who.sessionid is not None:
            custom["session_id"] = who.sessionid
        if who.tty:
            custom["tty"] = {"name": tty_display_name(who.tty[0])}
        uts = self._uts_hostname(who)
        if uts:
            custom["uts_hostname"] = uts
        event_doc = _event(action, outcome, self.stream, enrich.created())
        # Unique per event of a boot (a task records one event per kind at a time); Session
        # View tells a process's events apart by it.
        event_doc["id"] = f"{self._boot}-{who.ktime_ns:x}-{who.tid:x}-{event.family.kind}"
        doc: Doc = {
            "@timestamp": timestamp,
            **self._static,
            "event": event_doc,
            "process": self._process(who, proc),
            "user": enrich.users(who),
            "group": enrich.group(who.gid),
            CUSTOM_ROOT: custom,
        }
        if container:
            doc["container"] = container
        return doc

    def _process(self, who: Who, proc: Proc) -> Doc:
        enrich, table = self.enrich, self._table
        process: Doc = {
            "pid": who.pid,
            "vpid": who.vpid,
            "entity_id": table.entity_id(proc),
            "start": table.start(proc),
            "thread": {"id": who.tid},
            "name": who.comm.decode("utf-8", "backslashreplace"),
            "interactive": who.tty is not None,
            "user": enrich.user(who.euid),
            "real_user": enrich.user(who.uid),
            "real_group": enrich.group(who.gid),
            **table.relatives(proc, who),
        }
        if proc.executable is not None:
            process["executable"] = proc.executable
        if proc.args is not None:
            process["args"] = proc.args
            process["args_count"] = len(proc.args)
            process["command_line"] = proc.command_line()
        if proc.cwd is not None:
            process["working_directory"] = proc.cwd
        if who.tty:
            process["tty"] = {"char_device": {"major": who.tty[1], "minor": who.tty[2]}}
        return process

    def _uts_hostname(self, who: Who) -> str | None:
        name = who.uts_name.decode("utf-8", "replace")
        return name if name and name != self.host.hostname else None

    # -- exec

    def exec_document(self, event: ExecEvent) -> Doc:
        outcome = "success" if event.retval == 0 else "failure"
        args, escaped_args = texts(event.args)
        (filename,), escaped_name = texts([event.filename])
        escaped = escaped_args or escaped_name
        # A script's image is its interpreter, named first in the new argv.
        ran = args[0] if event.script and args else filename
        executable = self.enrich.executable(event.who.pid, ran)
        previous = None
        if outcome == "success":
            proc, previous = self._table.on_exec(event.who, executable, args)
        else:
            proc = self._table.process(event.who)
        doc = self.base(event, "exec", outcome, proc)
        process = doc["process"]
        if event.retval != 0:  # the table still has the image that tried
            process["name"] = os.path.basename(filename) or process["name"]
            process["executable"] = executable
            process["args"] = args
            process["args_count"] = len(args)
            process["command_line"] = shlex.join(args)
        if previous:
            process["previous"] = previous
        doc[CUSTOM_ROOT]["exec"] = {
            "syscall": event.syscall,
            "filename": filename,
            "argc": max(event.argc, len(args)),
            "args_truncated": event.args_truncated,
            "args_captured_bytes": event.args_captured_bytes,
            "args_unread": event.args_fault,
            "escaped": escaped,
        }
        if event.script:
            doc[CUSTOM_ROOT]["exec"]["script"] = True
        if event.retval != 0:
            doc["error"] = _error(event.retval)
        doc["message"] = f"exec {process['command_line'] or shlex.quote(filename)}"[:1024]
        return doc

    # -- fork and end

    def fork_document(self, event: ForkEvent) -> Doc:
        proc = self._table.on_fork(event.who)
        doc = self.base(event, "fork", "success", proc)
        doc["message"] = f"fork {doc['process']['name']} {event.who.pid} from {event.who.ppid}"
        return doc

    def end_document(self, event: ExitEvent) -> Doc:
        proc = self._table.on_exit(event.who)
        doc = self.base(event, "end", "success" if event.exit_code == 0 else "failure", proc)
        process = doc["process"]
        process["end"] = doc["@timestamp"]
        process["exit_code"] = event.exit_code
        started = self._table.clock.wall_ns(proc.ticks)
        ended = self.enrich.clock.to_wall_ns(event.who.ktime_ns)
        doc["event"]["duration"] = max(0, ended - started)
        if event.signal:
            doc[CUSTOM_ROOT]["end"] = {"signal": event.signal,
                                       "core_dumped": bool(event.status & 0x80)}
        doc["message"] = f"end {process['name']} {event.who.pid} exit_code {event.exit_code}"
        return doc

    # -- namespaces

    def namespace_document(self, event: NamespaceEvent) -> Doc:
        outcome = "success" if event.retval >= 0 else "failure"
        doc = self.base(event, event.syscall.rstrip("3"), outcome)
        flags = [f for f in CLONE_FLAGS if event.flags & f.bit]
        flag_names = [f.name for f in flags]
        requested = [f.kind for f in flags]
        after = event.after if outcome == "success" else {}
        changed = [k for k in NS_KINDS
                   if after.get(k) and event.before.get(k) and after[k] != event.before[k]]
        kinds = requested or [k for k in changed if k != "pid_for_children"]
        if event.syscall == "setns" and "pid_for_children" in changed and "pid" not in kinds:
            kinds.append("pid")
        ns: Doc = {
            "syscall": event.syscall,
            "flags": flag_names or None,
            "kinds": kinds or None,
            "changed": changed or None,
            "fd": event.fd,
            "child_pid": event.child_pid,
            "before": {k: event.before.get(k) or None for k in NS_KINDS},
            "after": {k: after.get(k) or None for k in NS_KINDS} if after else None,
        }
        if event.syscall == "setns" and after:
            ns["target"] = self.enrich.setns_target(after, changed, event.who.pid)
        doc[CUSTOM_ROOT]["ns"] = _prune(ns)
        if outcome == "failure":
            doc["error"] = _error(event.retval)
        doc["message"] = f"{event.syscall} {','.join(kinds) or '-'} {outcome}"
        return doc

    # -- bash

    def bash_document(self, event: BashEvent) -> Doc:
        doc = self.base(event, "bash_command", "success")
        (line,), escaped = texts([event.line])
        doc[CUSTOM_ROOT]["bash"] = {
            "line": line,
            "line_truncated": event.truncated,
            "line_bytes": len(event.line),
            "escaped": escaped,
        }
        doc["message"] = line
        return doc


def _error(retval: int) -> Doc:
    return {"code": errno_name(retval), "message": os.strerror(-retval)}


def events_lost_document(
    host: HostInfo, counts: dict[str, int], source: str, extra: dict[str, Any] | None = None,
    now_ns: int | None = None, stream: DataStream = DEFAULT_STREAM,
) -> Doc:
    """A document that makes a gap visible: how many events of each kind were lost, where."""
    now = iso_utc_ns(time.time_ns() if now_ns is None else now_ns)
    lost: Doc = {"source": source, **counts, **(extra or {})}
    summary = ", ".join(f"{k}={v}" for k, v in counts.items() if v)
    return {
        "@timestamp": now,
        **_static_part(host, stream),
        "event": _event("events_lost", "failure", stream, now),
        "message": f"events lost ({source}): {summary}",
        CUSTOM_ROOT: {"timestamp": now, "lost": lost},
    }
