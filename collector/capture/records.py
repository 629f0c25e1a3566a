"""Raw ring-buffer records -> typed events.

The layouts come from the families table (families.py); each decoder reads its record's
fixed part with one unpack and slices the variable tail (argv, the bash line) from the
bytes, since records arrive trimmed to what was captured.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Union

from collector.capture.families import BASH, EXEC, EXIT, FORK, NAMESPACES, NS_KINDS, Family

UNSET_ID = 0xFFFFFFFF  # (u32)-1: login uid / session id never set


class DecodeError(ValueError):
    """A record that does not fit any known layout (counted, never fatal)."""


class ExeId(NamedTuple):
    """The file a successful exec ran, as the kernel saw it: no stat needed."""

    dev: int  # st_dev encoding
    ino: int
    generation: int  # i_generation: a freed inode number comes back with another one


@dataclass
class Who:
    """Identity of the task an event happened in (see IDENTITY in families.py)."""

    __slots__ = ("auid", "cgroup_id", "cgroup_name", "comm", "egid", "euid", "gid",
                 "ktime_ns", "ns", "parent_start_ns", "pgid", "pgid_start_ns", "pid", "ppid",
                 "sessionid", "sid", "sid_start_ns", "start_ns", "tid", "tty", "uid",
                 "uts_name", "vpid")
    ktime_ns: int
    pid: int
    tid: int
    ppid: int
    vpid: int
    # CLOCK_BOOTTIME ns; 0 when that process is gone (see IDENTITY in families.py)
    start_ns: int
    parent_start_ns: int
    pgid: int
    pgid_start_ns: int
    sid: int
    sid_start_ns: int
    uid: int
    euid: int
    gid: int
    egid: int
    auid: int | None
    sessionid: int | None
    tty: tuple[str, int, int] | None  # (kernel name, major, minor)
    ns: tuple[int, ...]  # namespace inodes in NS_KINDS order (hashable: a cache key)
    comm: bytes
    cgroup_id: int
    cgroup_name: bytes
    uts_name: bytes

    @property
    def namespaces(self) -> dict[str, int]:
        return _inodes(self.ns)


@dataclass
class ExecEvent:
    __slots__ = (
        "argc",
        "args",
        "args_captured_bytes",
        "args_fault",
        "args_truncated",
        "exe",
        "filename",
        "retval",
        "script",
        "syscall",
        "who",
    )
    family: ClassVar[Family] = EXEC
    who: Who
    syscall: str
    retval: int
    filename: bytes
    args: list[bytes]
    argc: int
    args_truncated: bool
    args_captured_bytes: int
    args_fault: bool  # argv could not be read
    exe: ExeId | None  # on success only
    script: bool  # a `#!` script ran: args are its interpreter's (success only)


@dataclass
class NamespaceEvent:
    __slots__ = ("after", "before", "child_pid", "fd", "flags", "retval", "syscall", "who")
    family: ClassVar[Family] = NAMESPACES
    who: Who
    syscall: str
    retval: int
    fd: int | None
    flags: int
    child_pid: int | None
    before: dict[str, int]
    after: dict[str, int]


@dataclass
class BashEvent:
    __slots__ = ("line", "truncated", "who")
    family: ClassVar[Family] = BASH
    who: Who
    line: bytes
    truncated: bool


@dataclass
class ForkEvent:
    """A new process; `who` is the child."""

    __slots__ = ("who",)
    family: ClassVar[Family] = FORK
    who: Who


@dataclass
class ExitEvent:
    """The end of a process (its last thread)."""

    __slots__ = ("status", "who")
    family: ClassVar[Family] = EXIT
    who: Who
    status: int  # the wait(2) status: exit code << 8, or the signal (| 0x80: core dumped)

    @property
    def exit_code(self) -> int:
        """The exit code, or 128 + the signal number for a process killed by a signal
        (what a shell's $? says)."""
        signal = self.status & 0x7F
        return 128 + signal if signal else (self.status >> 8) & 0xFF

    @property
    def signal(self) -> int | None:
        return (self.status & 0x7F) or None


Event = Union[ExecEvent, NamespaceEvent, BashEvent, ForkEvent, ExitEvent]


def _cstr(raw: bytes) -> bytes:
    return raw.split(b"\0", 1)[0]


def _inodes(ns_set: tuple[int, ...]) -> dict[str, int]:
    """An NS_SET's values by namespace kind."""
    return dict(zip(NS_KINDS, ns_set))


def _who(i: Any) -> Who:
    """`i`: the identity view of a record (IDENTITY's fields by name)."""
    tty = None
    if i.tty_index >= 0:
        tty = (_cstr(i.tty_name).decode("ascii", "replace"), i.tty_major, i.tty_minor)
    return Who(
        ktime_ns=i.ktime_ns, pid=i.pid, tid=i.tid, ppid=i.ppid, vpid=i.vpid,
        start_ns=i.start_ns, parent_start_ns=i.parent_start_ns, pgid=i.pgid,
        pgid_start_ns=i.pgid_start_ns, sid=i.sid, sid_start_ns=i.sid_start_ns, uid=i.uid,
        euid=i.euid, gid=i.gid, egid=i.egid,
        auid=None if i.auid == UNSET_ID else i.auid,
        sessionid=None if i.sessionid == UNSET_ID else i.sessionid,
        tty=tty,
        ns=i.ns,
        comm=_cstr(i.comm),
        cgroup_id=i.cgroup_id,
        cgroup_name=_cstr(i.cgroup_name),
        uts_name=_cstr(i.uts_name),
    )


def split_args(blob: bytes) -> list[bytes]:
    """NUL-separated argv; the last argument may lack its NUL when it was cut."""
    if not blob:
        return []
    if blob.endswith(b"\0"):
        blob = blob[:-1]
    return blob.split(b"\0")


def _check_length(data: bytes, family: Family) -> None:
    if len(data) < family.layout.fixed_size:
        raise DecodeError(f"{family.label} record of {len(data)} bytes is too short "
                          f"(struct {family.layout.name} needs {family.layout.fixed_size})")


def _syscall(family: Family, index: int) -> str:
    if index >= len(family.syscalls):
        raise DecodeError(f"{family.label} record names syscall index {index}; "
                          f"the families table knows {family.syscalls}")
    return family.syscalls[index]


_ARGS_AT = EXEC.layout.fixed_size


def decode_exec(data: bytes, max_args: int | None = None) -> ExecEvent:
    """`max_args`: arguments kept (the new image's argv is read whole, up to the byte
    bound; more arguments are cut here and the cut flagged)."""
    _check_length(data, EXEC)
    r = EXEC.layout.unpack_from(data)
    tail = data[_ARGS_AT:_ARGS_AT + r.args_len]
    kdev = r.exe_dev
    args = split_args(tail)
    truncated = bool(r.args_truncated)
    if max_args is not None and len(args) > max_args:
        args, truncated = args[:max_args], True
    return ExecEvent(
        who=_who(r.id),
        syscall=_syscall(EXEC, r.syscall),
        retval=r.retval,
        filename=_cstr(r.filename),
        args=args,
        argc=r.argc,
        args_truncated=truncated,
        args_captured_bytes=len(tail),
        args_fault=bool(r.args_fault),
        # The kernel's dev_t is major << 20 | minor; st_dev uses the user-space encoding.
        exe=ExeId(os.makedev(kdev >> 20, kdev & 0xFFFFF), r.exe_ino, r.exe_gen)
        if r.exe_ino else None,
        script=bool(r.script),
    )


def decode_namespace(data: bytes) -> NamespaceEvent:
    _check_length(data, NAMESPACES)
    r = NAMESPACES.layout.unpack_from(data)
    syscall = _syscall(NAMESPACES, r.syscall)
    return NamespaceEvent(
        who=_who(r.id),
        syscall=syscall,
        retval=r.retval,
        fd=r.fd if syscall == "setns" else None,
        flags=r.flags,
        child_pid=r.child_pid or None,
        before=_inodes(r.before),
        after=_inodes(r.after),
    )


_LINE_AT = BASH.layout.fixed_size


def decode_bash(data: bytes) -> BashEvent:
    _check_length(data, BASH)
    r = BASH.layout.unpack_from(data)
    line = data[_LINE_AT:_LINE_AT + r.line_len]
    return BashEvent(who=_who(r.id), line=line, truncated=bool(r.truncated))


def decode_fork(data: bytes) -> ForkEvent:
    _check_length(data, FORK)
    return ForkEvent(who=_who(FORK.layout.unpack_from(data).id))


def decode_exit(data: bytes) -> ExitEvent:
    _check_length(data, EXIT)
    r = EXIT.layout.unpack_from(data)
    return ExitEvent(who=_who(r.id), status=r.exit_code)


DECODERS = {EXEC.kind: decode_exec, NAMESPACES.kind: decode_namespace, BASH.kind: decode_bash,
            FORK.kind: decode_fork, EXIT.kind: decode_exit}


def decode(data: bytes, max_args: int | None = None) -> Event:
    """`max_args`: capture.max_args, the arguments an exec event keeps."""
    if len(data) < 4:
        raise DecodeError(f"record of {len(data)} bytes has no kind")
    kind = int.from_bytes(data[:4], "little")
    if kind == EXEC.kind:
        return decode_exec(data, max_args)
    decoder = DECODERS.get(kind)
    if decoder is None:
        raise DecodeError(f"unknown record kind {kind}")
    return decoder(data)
