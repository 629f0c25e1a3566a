"""Raw ring-buffer records -> typed events.

The struct formats below mirror the structs in bpf/*.c field for field (same order, natural
alignment); tests compare their sizes with the types BCC builds from the C. Records arrive
trimmed to what was captured, so variable tails (argv, the bash line) are sliced from bytes.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

KIND_EXEC = 1
KIND_NS = 2
KIND_BASH = 3

EXEC_SYSCALLS = ("execve", "execveat")
NS_SYSCALLS = ("setns", "unshare", "clone", "clone3")
UNSET_ID = 0xFFFFFFFF  # (u32)-1: login uid / session id never set

NS_FIELDS = ("pid", "pid_for_children", "mnt", "net", "uts", "ipc", "user", "cgroup")


# struct identity: ktime_ns, cgroup_id, then pid..pad0 (14 x u32/s32), struct ns_set
# (8 x u32), comm[16], tty_name[32], cgroup_name[128], uts_name[65], pad1[7].
IDENTITY = struct.Struct("<QQ12Ii4x8I16s32s128s65s7x")
# struct exec_event header: kind, syscall, retval, argc, args_len, args_truncated,
# args_fault, exe_dev, exe_ino, exe_gen, pad; identity; filename[512]; then args[] follows.
EXEC_HEADER = struct.Struct("<IIiIIIIIQI4x")
FILENAME_LEN = 512
EXEC_ARGS_OFFSET = EXEC_HEADER.size + IDENTITY.size + FILENAME_LEN
# struct ns_event: kind, syscall, retval, fd, flags, child_pid, pad, before, after; identity.
NS_HEADER = struct.Struct("<IIiiQI4x8I8I")
NS_RECORD_SIZE = NS_HEADER.size + IDENTITY.size
# struct bash_event: kind, line_len, truncated, pad; identity; then line[].
BASH_HEADER = struct.Struct("<III4x")
BASH_LINE_OFFSET = BASH_HEADER.size + IDENTITY.size


class DecodeError(ValueError):
    """A record that does not fit any known layout (counted, never fatal)."""


@dataclass(slots=True)
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


@dataclass(slots=True)
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
    exe: tuple[int, int] | None  # (st_dev, st_ino) of the executable, on success
    # The inode's i_generation: a freed inode number comes back with another one.
    exe_generation: int = 0


@dataclass(slots=True)
class NamespaceEvent:
    who: Who
    syscall: str
    retval: int
    fd: int | None
    flags: int
    child_pid: int | None
    before: dict[str, int]
    after: dict[str, int]


@dataclass(slots=True)
class BashEvent:
    who: Who
    line: bytes
    truncated: bool


Event = ExecEvent | NamespaceEvent | BashEvent


def _cstr(raw: bytes) -> bytes:
    return raw.split(b"\0", 1)[0]


def _who(data: bytes, offset: int) -> Who:
    if len(data) < offset + IDENTITY.size:
        raise DecodeError(f"record of {len(data)} bytes is too short for its identity")
    (ktime, cgroup_id, pid, tid, ppid, vpid, uid, euid, gid, egid, auid, sessionid,
     tty_major, tty_minor, tty_index, *rest) = IDENTITY.unpack_from(data, offset)
    ns_values, (comm, tty_name, cgroup_name, uts_name) = rest[:8], rest[8:]
    tty = None
    if tty_index >= 0:
        tty = (_cstr(tty_name).decode("ascii", "replace"), tty_major, tty_minor)
    return Who(
        ktime_ns=ktime, pid=pid, tid=tid, ppid=ppid, vpid=vpid, uid=uid, euid=euid,
        gid=gid, egid=egid,
        auid=None if auid == UNSET_ID else auid,
        sessionid=None if sessionid == UNSET_ID else sessionid,
        tty=tty,
        namespaces=dict(zip(NS_FIELDS, ns_values, strict=True)),
        comm=_cstr(comm),
        cgroup_id=cgroup_id,
        cgroup_name=_cstr(cgroup_name),
        uts_name=_cstr(uts_name),
    )


def split_args(blob: bytes) -> list[bytes]:
    """NUL-separated argv; the last argument may lack its NUL when it was cut."""
    if not blob:
        return []
    if blob.endswith(b"\0"):
        blob = blob[:-1]
    return blob.split(b"\0")


def decode_exec(data: bytes) -> ExecEvent:
    if len(data) < EXEC_ARGS_OFFSET:
        raise DecodeError(f"exec record of {len(data)} bytes is too short")
    (_kind, syscall, retval, argc, args_len, truncated, fault, kdev, ino, generation) = \
        EXEC_HEADER.unpack_from(data)
    who = _who(data, EXEC_HEADER.size)
    filename = _cstr(data[EXEC_ARGS_OFFSET - FILENAME_LEN:EXEC_ARGS_OFFSET])
    tail = data[EXEC_ARGS_OFFSET:EXEC_ARGS_OFFSET + args_len]
    return ExecEvent(
        who=who,
        syscall=EXEC_SYSCALLS[syscall] if syscall < 2 else str(syscall),
        retval=retval,
        filename=filename,
        args=split_args(tail),
        argc=argc,
        args_truncated=bool(truncated),
        args_captured_bytes=len(tail),
        args_fault=bool(fault),
        # The kernel's dev_t is major << 20 | minor; st_dev uses the user-space encoding.
        exe=(os.makedev(kdev >> 20, kdev & 0xFFFFF), ino) if ino else None,
        exe_generation=generation,
    )


def decode_namespace(data: bytes) -> NamespaceEvent:
    if len(data) < NS_RECORD_SIZE:
        raise DecodeError(f"namespace record of {len(data)} bytes is too short")
    (_kind, syscall_no, retval, fd, flags, child_pid, *inodes) = NS_HEADER.unpack_from(data)
    syscall = NS_SYSCALLS[syscall_no] if syscall_no < len(NS_SYSCALLS) else str(syscall_no)
    return NamespaceEvent(
        who=_who(data, NS_HEADER.size),
        syscall=syscall,
        retval=retval,
        fd=fd if syscall == "setns" else None,
        flags=flags,
        child_pid=child_pid or None,
        before=dict(zip(NS_FIELDS, inodes[:8], strict=True)),
        after=dict(zip(NS_FIELDS, inodes[8:], strict=True)),
    )


def decode_bash(data: bytes) -> BashEvent:
    if len(data) < BASH_LINE_OFFSET:
        raise DecodeError(f"bash record of {len(data)} bytes is too short")
    (_kind, line_len, truncated) = BASH_HEADER.unpack_from(data)
    line = data[BASH_LINE_OFFSET:BASH_LINE_OFFSET + line_len]
    return BashEvent(who=_who(data, BASH_HEADER.size), line=line, truncated=bool(truncated))


DECODERS = {KIND_EXEC: decode_exec, KIND_NS: decode_namespace, KIND_BASH: decode_bash}


def decode(data: bytes) -> Event:
    if len(data) < 4:
        raise DecodeError(f"record of {len(data)} bytes has no kind")
    kind = int.from_bytes(data[:4], "little")
    decoder = DECODERS.get(kind)
    if decoder is None:
        raise DecodeError(f"unknown record kind {kind}")
    return decoder(data)
