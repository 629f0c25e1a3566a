"""Raw ring-buffer records, as the BPF programs write them, for tests that need no BPF.

Each helper takes field values by name and returns the bytes of one record, trimmed the way
the programs trim them (exec: up to the captured argv bytes; bash: up to the line's NUL).
"""

from __future__ import annotations

from typing import Any

from collector.capture.records import (
    BASH_HEADER,
    EXEC_HEADER,
    IDENTITY,
    KIND_BASH,
    KIND_EXEC,
    KIND_NS,
    NS_FIELDS,
    NS_HEADER,
)

UNSET = 0xFFFFFFFF  # (u32)-1: login uid / session id never set


def kernel_dev(major: int, minor: int) -> int:
    """The kernel's internal dev_t (what super_block.s_dev holds)."""
    return major << 20 | minor


def _identity(who: dict[str, Any]) -> bytes:
    return IDENTITY.pack(
        who["ktime_ns"], who["cgroup_id"], who["pid"], who["tid"], who["ppid"], who["vpid"],
        who["uid"], who["euid"], who["gid"], who["egid"], who["auid"], who["sessionid"],
        who["tty_major"], who["tty_minor"], who["tty_index"],
        *(who["ns"][k] for k in NS_FIELDS),
        who["comm"], who["tty_name"], who["cgroup_name"], who["uts_name"])


def exec_record(who: dict[str, Any], *, filename: bytes, args_blob: bytes, argc: int,
                syscall: int = 0, retval: int = 0, args_truncated: int = 0,
                args_fault: int = 0, exe: tuple[int, int, int] = (0, 0, 0)) -> bytes:
    """`exe` is (kernel dev_t, inode, i_generation): zero when the exec failed."""
    dev, ino, generation = exe
    header = EXEC_HEADER.pack(KIND_EXEC, syscall, retval, argc, len(args_blob),
                              args_truncated, args_fault, dev, ino, generation)
    return header + _identity(who) + filename.ljust(512, b"\0") + args_blob


def ns_record(who: dict[str, Any], *, syscall: int, retval: int, flags: int,
              before: dict[str, int], after: dict[str, int], fd: int = -1,
              child_pid: int = 0) -> bytes:
    header = NS_HEADER.pack(KIND_NS, syscall, retval, fd, flags, child_pid,
                            *(before.get(k, 0) for k in NS_FIELDS),
                            *(after.get(k, 0) for k in NS_FIELDS))
    return header + _identity(who)


def bash_record(who: dict[str, Any], *, line: bytes, truncated: int = 0) -> bytes:
    header = BASH_HEADER.pack(KIND_BASH, len(line), truncated)
    return header + _identity(who) + line + b"\0"
