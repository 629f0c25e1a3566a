"""Typed events -> Elastic Common Schema documents (plain dicts, ready for orjson).

ECS fields keep their ECS meaning; everything the collector adds lives under the one
non-ECS object `audit_collector` (see collector/fields.py for the full list).
"""

from __future__ import annotations

import errno
import os
import shlex
import time
from dataclasses import dataclass
from typing import Any

from collector import __version__
from collector.capture.families import CLONE_FLAGS, LOSS_DATASET, NS_KINDS
from collector.capture.hostns import HostNamespaces
from collector.capture.records import BashEvent, Event, ExecEvent, NamespaceEvent, Who
from collector.ecs.enrichment import (
    CgroupPaths,
    Container,
    NameCache,
    NamespaceOwners,
    WallClock,
    container_from_cgroup,
    executable_path,
    iso_utc_ns,
    tty_display_name,
)
from collector.ecs.host import HostInfo
from collector.fields import CUSTOM_ROOT, ECS_VERSION

Doc = dict[str, Any]

NS_KINDS_REPORTED = NS_KINDS


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


CACHE_LIMIT = 4096


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= CACHE_LIMIT:
        cache.clear()  # simple and bounded; refilling is cheap
    cache[key] = value


def _named(ident: int, name: str | None) -> Doc:
    return {"id": str(ident), "name": name} if name is not None else {"id": str(ident)}


def _prune(value: Any) -> Any:
    """Drop None values and empty objects so documents carry only what is known."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items() if v is not None}
        return {k: v for k, v in pruned.items() if v != {}}
    return value


# --------------------------------------------------------------------------- builder


@dataclass
class DocumentBuilder:
    host: HostInfo
    host_ns: HostNamespaces
    cgroups: CgroupPaths
    clock: WallClock
    names: NameCache
    owners: NamespaceOwners

    def build(self, event: Event) -> Doc:
        if isinstance(event, ExecEvent):
            return self.exec_document(event)
        if isinstance(event, NamespaceEvent):
            return self.namespace_document(event)
        return self.bash_document(event)

    # -- common parts
    #
    # An exec storm repeats the same users, cgroups and namespaces thousands of times a
    # second, so those sub-objects are built once and shared by the documents (read-only).

    def __post_init__(self) -> None:
        self._static = {
            "ecs": {"version": ECS_VERSION},
            "agent": {"type": "audit-collector", "version": __version__, "name": self.host.name},
            "host": self.host.ecs(),
        }
        self._cgroup_cache: dict[int, tuple[Doc, Doc | None]] = {}
        self._ns_cache: dict[tuple[int, ...], Doc] = {}
        self._user_cache: dict[tuple[int, int, int | None], Doc] = {}
        self._group_cache: dict[int, Doc] = {}

    def base(self, event: Event, action: str, category: str, etype: str, outcome: str) -> Doc:
        who = event.who
        cgroup, container = self._cgroup(who)
        custom: Doc = {"cgroup": cgroup, "vpid": who.vpid, "namespaces": self._namespaces(
            who, container)}
        if who.sessionid is not None:
            custom["session_id"] = who.sessionid
        if who.tty:
            custom["tty"] = {"name": tty_display_name(who.tty[0])}
        uts = self._uts_hostname(who)
        if uts:
            custom["uts_hostname"] = uts
        doc: Doc = {
            "@timestamp": iso_utc_ns(self.clock.to_wall_ns(who.ktime_ns)),
            **self._static,
            "event": {
                "kind": "event",
                "category": [category],
                "type": [etype],
                "action": action,
                "outcome": outcome,
                "module": "audit_collector",
                "dataset": event.family.dataset,
                "created": iso_utc_ns(time.time_ns()),
            },
            "process": self._process(who),
            "user": self._user(who),
            "group": self._group(who.gid),
            CUSTOM_ROOT: custom,
        }
        if container:
            doc["container"] = container
        return doc

    def _cgroup(self, who: Who) -> tuple[Doc, Doc | None]:
        hit = self._cgroup_cache.get(who.cgroup_id)
        if hit is not None:
            return hit
        leaf = who.cgroup_name.decode("utf-8", "replace")
        path = self.cgroups.path(who.cgroup_id, leaf)
        found = container_from_cgroup(path) or container_from_cgroup("/" + leaf)
        result = ({"path": path, "id": who.cgroup_id}, _container(found))
        if not path.startswith("..."):  # only resolved paths are final
            _remember(self._cgroup_cache, who.cgroup_id, result)
        return result

    def _namespaces(self, who: Who, container: Doc | None) -> Doc:
        key = tuple(who.namespaces[k] for k in NS_KINDS_REPORTED)
        hit = self._ns_cache.get(key)
        if hit is not None:
            return hit
        differ = self.host_ns.differing(who.namespaces)
        ns: Doc = {k: v for k, v in zip(NS_KINDS_REPORTED, key, strict=True) if v}
        ns["host"] = not differ
        if differ:
            ns["differ"] = differ
        found = Container(container["id"], container["runtime"]) if container else None
        for kind in ("mnt", "pid", "net", "uts", "ipc"):
            self.owners.learn(kind, who.namespaces.get(kind, 0), who.pid, found)
        _remember(self._ns_cache, key, ns)
        return ns

    def _process(self, who: Who) -> Doc:
        process: Doc = {
            "pid": who.pid,
            "thread": {"id": who.tid},
            "name": who.comm.decode("utf-8", "backslashreplace"),
            "parent": {"pid": who.ppid},
            "interactive": who.tty is not None,
        }
        if who.tty:
            process["tty"] = {"char_device": {"major": who.tty[1], "minor": who.tty[2]}}
        return process

    def _user(self, who: Who) -> Doc:
        key = (who.uid, who.euid, who.auid)
        hit = self._user_cache.get(key)
        if hit is not None:
            return hit
        user: Doc = _named(who.uid, self.names.user(who.uid))
        user["effective"] = _named(who.euid, self.names.user(who.euid))
        if who.auid is not None:
            user["audit"] = _named(who.auid, self.names.user(who.auid))
        _remember(self._user_cache, key, user)
        return user

    def _group(self, gid: int) -> Doc:
        hit = self._group_cache.get(gid)
        if hit is None:
            hit = _named(gid, self.names.group(gid))
            _remember(self._group_cache, gid, hit)
        return hit

    def _uts_hostname(self, who: Who) -> str | None:
        name = who.uts_name.decode("utf-8", "replace")
        return name if name and name != self.host.name else None

    # -- exec

    def exec_document(self, event: ExecEvent) -> Doc:
        outcome = "success" if event.retval == 0 else "failure"
        doc = self.base(event, "exec", "process", "start", outcome)
        args, escaped_args = texts(event.args)
        (filename,), escaped_name = texts([event.filename])
        escaped = escaped_args or escaped_name
        process = doc["process"]
        process["executable"] = executable_path(event.who.pid, filename)
        if event.retval != 0:
            process["name"] = os.path.basename(filename) or process["name"]
        process["args"] = args
        process["args_count"] = max(event.argc, len(args))
        process["command_line"] = shlex.join(args)
        process["exit_code"] = event.retval
        doc[CUSTOM_ROOT]["exec"] = {
            "syscall": event.syscall,
            "filename": filename,
            "args_truncated": event.args_truncated,
            "args_captured_bytes": event.args_captured_bytes,
            "escaped": escaped,
        }
        if event.retval != 0:
            doc["error"] = {"code": errno_name(event.retval), "message": os.strerror(-event.retval)}
        doc["message"] = f"exec {process['command_line']}"[:1024]
        return doc

    # -- namespaces

    def namespace_document(self, event: NamespaceEvent) -> Doc:
        outcome = "success" if event.retval >= 0 else "failure"
        doc = self.base(event, event.syscall.rstrip("3"), "process", "change", outcome)
        flags = [f for f in CLONE_FLAGS if event.flags & f.bit]
        flag_names = [f.name for f in flags]
        requested = [f.kind for f in flags]
        after = event.after if outcome == "success" else {}
        changed = [k for k in NS_KINDS_REPORTED
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
            "before": {k: event.before.get(k) or None for k in NS_KINDS_REPORTED},
            "after": {k: after.get(k) or None for k in NS_KINDS_REPORTED} if after else None,
        }
        if event.syscall == "setns" and after:
            ns["target"] = self._setns_target(after, changed)
        doc[CUSTOM_ROOT]["ns"] = _prune(ns)
        if outcome == "failure":
            doc["error"] = {"code": errno_name(event.retval), "message": os.strerror(-event.retval)}
        doc["process"]["exit_code"] = event.retval
        doc["message"] = f"{event.syscall} {','.join(kinds) or '-'} {outcome}"
        return doc

    def _setns_target(self, after: dict[str, int], changed: list[str]) -> Doc | None:
        for kind in ("mnt", "pid_for_children", "net", "uts", "ipc"):
            if kind not in changed:
                continue
            owner = self.owners.owner("pid" if kind == "pid_for_children" else kind, after[kind])
            if owner:
                pid, container = owner
                return {"pid": pid, "container_id": container.id if container else None}
        return None

    # -- bash

    def bash_document(self, event: BashEvent) -> Doc:
        doc = self.base(event, "bash_command", "process", "info", "success")
        (line,), escaped = texts([event.line])
        doc[CUSTOM_ROOT]["bash"] = {
            "line": line,
            "line_truncated": event.truncated,
            "line_bytes": len(event.line),
            "escaped": escaped,
        }
        doc["message"] = line
        return doc


def _container(container: Container | None) -> Doc | None:
    if container is None:
        return None
    return {"id": container.id, "runtime": container.runtime}


def events_lost_document(
    host: HostInfo, counts: dict[str, int], source: str, extra: dict[str, Any] | None = None
) -> Doc:
    """A document that makes a gap visible: how many events of each kind were lost, where."""
    now = time.time_ns()
    lost: Doc = {"source": source, **counts, **(extra or {})}
    summary = ", ".join(f"{k}={v}" for k, v in counts.items() if v)
    return {
        "@timestamp": iso_utc_ns(now),
        "ecs": {"version": ECS_VERSION},
        "agent": {"type": "audit-collector", "version": __version__, "name": host.name},
        "host": host.ecs(),
        "event": {
            "kind": "event",
            "category": ["process"],
            "type": ["info"],
            "action": "events_lost",
            "outcome": "failure",
            "module": "audit_collector",
            "dataset": LOSS_DATASET,
            "created": iso_utc_ns(now),
        },
        "message": f"events lost ({source}): {summary}",
        CUSTOM_ROOT: {"lost": lost},
    }
