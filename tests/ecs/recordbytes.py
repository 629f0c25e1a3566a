"""Raw ring-buffer records, as the BPF programs write them, for tests that need no BPF.

Each helper takes field values by name and packs them with the record layouts of the
families table (the layouts a BPF test checks against the compiled C structs), trimmed the
way the programs trim them (exec: up to the captured argv bytes; bash: up to the line's NUL).
"""

from __future__ import annotations

from typing import Any

from collector.capture.families import BASH, EXEC, EXIT, FORK, NAMESPACES

UNSET = 0xFFFFFFFF  # (u32)-1: login uid / session id never set


def kernel_dev(major: int, minor: int) -> int:
    """The kernel's internal dev_t (what super_block.s_dev holds)."""
    return major << 20 | minor


def exec_record(who: dict[str, Any], *, filename: bytes, args_blob: bytes, argc: int,
                syscall: int = 0, retval: int = 0, args_truncated: int = 0,
                args_fault: int = 0, exe: tuple[int, int, int] = (0, 0, 0),
                script: int = 0) -> bytes:
    """`who`: IDENTITY's fields; `exe`: (kernel dev_t, inode, i_generation), zero when the
    exec failed."""
    dev, ino, generation = exe
    return EXEC.layout.pack({
        "kind": EXEC.kind, "syscall": syscall, "retval": retval, "argc": argc,
        "args_len": len(args_blob), "args_truncated": args_truncated, "args_fault": args_fault,
        "exe_dev": dev, "exe_ino": ino, "exe_gen": generation, "script": script, "id": who,
        "filename": filename,
    }, tail_bytes=args_blob)


def ns_record(who: dict[str, Any], *, syscall: int, retval: int, flags: int,
              before: dict[str, int], after: dict[str, int], fd: int = -1,
              child_pid: int = 0) -> bytes:
    return NAMESPACES.layout.pack({
        "kind": NAMESPACES.kind, "syscall": syscall, "retval": retval, "fd": fd,
        "flags": flags, "child_pid": child_pid, "before": before, "after": after, "id": who,
    })


def bash_record(who: dict[str, Any], *, line: bytes, truncated: int = 0) -> bytes:
    return BASH.layout.pack({"kind": BASH.kind, "line_len": len(line), "truncated": truncated,
                             "id": who}, tail_bytes=line + b"\0")


def fork_record(child: dict[str, Any]) -> bytes:
    """`child`: the new process's IDENTITY fields."""
    return FORK.layout.pack({"kind": FORK.kind, "id": child})


def exit_record(who: dict[str, Any], *, status: int) -> bytes:
    """`status`: the wait(2) status (exit code << 8, or the signal number)."""
    return EXIT.layout.pack({"kind": EXIT.kind, "exit_code": status, "id": who})
