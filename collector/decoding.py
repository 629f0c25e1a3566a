"""Raw ring-buffer records -> typed events.

The ctypes layouts below mirror the structs in bpf/*.c field for field (same order, natural
alignment); `tests/test_decoding.py` checks their sizes against the C side. Records arrive
trimmed to what was captured, so variable tails (argv, the bash line) are sliced from bytes.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

KIND_EXEC = 1
KIND_NS = 2
KIND_BASH = 3

EXEC_SYSCALLS = ("execve", "execveat")
NS_SYSCALLS = ("setns", "unshare", "clone", "clone3")
UNSET_ID = 0xFFFFFFFF  # (u32)-1: login uid / session id never set

NS_FIELDS = ("pid", "pid_for_children", "mnt", "net", "uts", "ipc", "user", "cgroup")


class NsSet(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in NS_FIELDS]


class Identity(ctypes.Structure):
    _fields_ = [
        ("ktime_ns", ctypes.c_uint64),
        ("cgroup_id", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("ppid", ctypes.c_uint32),
        ("vpid", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("euid", ctypes.c_uint32),
        ("gid", ctypes.c_uint32),
        ("egid", ctypes.c_uint32),
        ("auid", ctypes.c_uint32),
        ("sessionid", ctypes.c_uint32),
        ("tty_major", ctypes.c_uint32),
        ("tty_minor", ctypes.c_uint32),
        ("tty_index", ctypes.c_int32),
        ("pad0", ctypes.c_uint32),
        ("ns", NsSet),
        ("comm", ctypes.c_char * 16),
        ("tty_name", ctypes.c_char * 32),
        ("cgroup_name", ctypes.c_char * 128),
        ("uts_name", ctypes.c_char * 65),
        ("pad1", ctypes.c_char * 7),
    ]


class ExecHeader(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_uint32),
        ("syscall", ctypes.c_uint32),
        ("retval", ctypes.c_int32),
        ("argc", ctypes.c_uint32),
        ("args_len", ctypes.c_uint32),
        ("args_truncated", ctypes.c_uint32),
        ("args_fault", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("id", Identity),
        ("filename", ctypes.c_char * 512),
    ]


class NsRecord(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_uint32),
        ("syscall", ctypes.c_uint32),
        ("retval", ctypes.c_int32),
        ("fd", ctypes.c_int32),
        ("flags", ctypes.c_uint64),
        ("child_pid", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("before", NsSet),
        ("after", NsSet),
        ("id", Identity),
    ]


class BashHeader(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_uint32),
        ("line_len", ctypes.c_uint32),
        ("truncated", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("id", Identity),
    ]


class DecodeError(ValueError):
    """A record that does not fit any known layout (counted, never fatal)."""


@dataclass(frozen=True)
class Who:
    """Identity of the task an event happened in (see struct identity)."""

    ktime_ns: int
    pid: int
    tid: int
    ppid: int
    vpid: int
    uid: int
    euid: int
    gid: int
    egid: int
    auid: int | None
    sessionid: int | None
    tty: tuple[str, int, int] | None  # (kernel name, major, minor)
    namespaces: dict[str, int]
    comm: bytes
    cgroup_id: int
    cgroup_name: bytes
    uts_name: bytes


@dataclass(frozen=True)
class ExecEvent:
    who: Who
    syscall: str
    retval: int
    filename: bytes
    args: list[bytes]
    argc: int
    args_truncated: bool
    args_captured_bytes: int
    args_fault: bool


@dataclass(frozen=True)
class NamespaceEvent:
    who: Who
    syscall: str
    retval: int
    fd: int | None
    flags: int
    child_pid: int | None
    before: dict[str, int]
    after: dict[str, int]


@dataclass(frozen=True)
class BashEvent:
    who: Who
    line: bytes
    truncated: bool


Event = ExecEvent | NamespaceEvent | BashEvent


def _ns_dict(ns: NsSet) -> dict[str, int]:
    return {name: getattr(ns, name) for name in NS_FIELDS}


def _who(raw: Identity) -> Who:
    tty = None
    if raw.tty_index >= 0:
        tty = (raw.tty_name.decode("ascii", "replace"), raw.tty_major, raw.tty_minor)
    return Who(
        ktime_ns=raw.ktime_ns,
        pid=raw.pid,
        tid=raw.tid,
        ppid=raw.ppid,
        vpid=raw.vpid,
        uid=raw.uid,
        euid=raw.euid,
        gid=raw.gid,
        egid=raw.egid,
        auid=None if raw.auid == UNSET_ID else raw.auid,
        sessionid=None if raw.sessionid == UNSET_ID else raw.sessionid,
        tty=tty,
        namespaces=_ns_dict(raw.ns),
        comm=raw.comm,
        cgroup_id=raw.cgroup_id,
        cgroup_name=raw.cgroup_name,
        uts_name=raw.uts_name,
    )


def _header(cls: type[ctypes.Structure], data: bytes) -> ctypes.Structure:
    if len(data) < ctypes.sizeof(cls):
        raise DecodeError(f"{cls.__name__}: record of {len(data)} bytes is too short")
    return cls.from_buffer_copy(data[: ctypes.sizeof(cls)])


def split_args(blob: bytes) -> list[bytes]:
    """NUL-separated argv; the last argument may lack its NUL when it was cut."""
    if not blob:
        return []
    if blob.endswith(b"\0"):
        blob = blob[:-1]
    return blob.split(b"\0")


def decode_exec(data: bytes) -> ExecEvent:
    head = _header(ExecHeader, data)
    tail = data[ctypes.sizeof(ExecHeader):][: head.args_len]
    return ExecEvent(
        who=_who(head.id),
        syscall=EXEC_SYSCALLS[head.syscall] if head.syscall < 2 else str(head.syscall),
        retval=head.retval,
        filename=head.filename,
        args=split_args(tail),
        argc=head.argc,
        args_truncated=bool(head.args_truncated),
        args_captured_bytes=len(tail),
        args_fault=bool(head.args_fault),
    )


def decode_namespace(data: bytes) -> NamespaceEvent:
    rec = _header(NsRecord, data)
    syscall = NS_SYSCALLS[rec.syscall] if rec.syscall < len(NS_SYSCALLS) else str(rec.syscall)
    return NamespaceEvent(
        who=_who(rec.id),
        syscall=syscall,
        retval=rec.retval,
        fd=rec.fd if syscall == "setns" else None,
        flags=rec.flags,
        child_pid=rec.child_pid or None,
        before=_ns_dict(rec.before),
        after=_ns_dict(rec.after),
    )


def decode_bash(data: bytes) -> BashEvent:
    head = _header(BashHeader, data)
    line = data[ctypes.sizeof(BashHeader):][: head.line_len]
    return BashEvent(who=_who(head.id), line=line, truncated=bool(head.truncated))


DECODERS = {KIND_EXEC: decode_exec, KIND_NS: decode_namespace, KIND_BASH: decode_bash}


def decode(data: bytes) -> Event:
    if len(data) < 4:
        raise DecodeError(f"record of {len(data)} bytes has no kind")
    kind = int.from_bytes(data[:4], "little")
    decoder = DECODERS.get(kind)
    if decoder is None:
        raise DecodeError(f"unknown record kind {kind}")
    return decoder(data)
