"""The golden cases: raw records in, and the fixed world their documents are enriched from.

Every odd case the BPF tests in tests/capture/ provoke on the real kernel is here as the
record those programs write, so document building is checked without root or BPF. The
world (users, cgroups, /proc, clocks, host) is fixed so that documents are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from collector.ecs.host import HostInfo, OsRelease
from tests.ecs.recordbytes import (
    UNSET,
    bash_record,
    exec_record,
    exit_record,
    fork_record,
    kernel_dev,
    ns_record,
)

# --------------------------------------------------------------------------- the world

HOST = HostInfo(name="golden-host", id="5f3c0d2a9b8e4f61a7c2d4e6f8091a2b",
                boot_id="0d9c8b7a65f443e2a1b0c9d8e7f60514", kernel="6.18.0-golden",
                architecture="x86_64", hostname="golden-host",
                boot_uuid="0d9c8b7a-65f4-43e2-a1b0-c9d8e7f60514",
                os=OsRelease(name="Debian GNU/Linux", full="Debian GNU/Linux 12 (bookworm)",
                             version="12", family="debian", platform="debian"))
HOST_NS = {"pid": 4026531836, "pid_for_children": 4026531836, "mnt": 4026531841,
           "net": 4026531840, "uts": 4026531838, "ipc": 4026531839, "user": 4026531837,
           "cgroup": 4026531835}
# A container's own namespaces (it shares the host's user and cgroup namespaces).
CONTAINER_NS = {**HOST_NS, "pid": 4026532301, "pid_for_children": 4026532301,
                "mnt": 4026532299, "net": 4026532304, "uts": 4026532300, "ipc": 4026532302}
CONTAINER_ID = "3f5a0c9e8d7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a10"
PODMAN_ID = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
USERS = {0: "root", 1000: "alice"}
GROUPS = {0: "root", 1000: "alice"}
SESSION_CGROUP = 8123
CRON_CGROUP = 8007
DOCKER_CGROUP = 9001
# cgroup kernfs id -> path below the mount: what a scan of the hierarchy finds.
CGROUP_PATHS = {
    1: "/",
    SESSION_CGROUP: "/user.slice/user-1000.slice/session-3.scope",
    CRON_CGROUP: "/system.slice/cron.service",
    DOCKER_CGROUP: f"/system.slice/docker-{CONTAINER_ID}.scope",
}
# Wall-clock ns at kernel monotonic 0, and the time every document is created at.
BOOT_WALL_NS = 1_732_000_000_000_000_000
CREATED_NS = 1_732_100_000_123_456_789


@dataclass(frozen=True)
class Stat:
    """/proc/PID/stat, status and cmdline of a live process (what the process table reads)."""

    ticks: int  # starttime: clock ticks since boot
    ppid: int
    pgid: int
    sid: int
    args: tuple[bytes, ...]
    tty: tuple[int, int] | None = None
    uid: int = 0
    cwd: str = "/"


@dataclass(frozen=True)
class Proc:
    """What /proc/PID says about a live process."""

    exe: str
    ns: dict[str, int]
    cgroup: str  # the cgroup file's unified line
    stat: Stat | None = None  # None: its stat could not be read (it is exiting)


TICK_NS = 10_000_000  # 100 clock ticks a second
# An ssh login: init, the sshd listener, alice's sshd, her login shell on pts/3 (the
# session's entry leader), and in it process 4242, the one most records come from.
SSHD_PID, USER_SSHD_PID, SHELL_PID = 812, 4150, 4200
SHELL_TICKS, EVENT_TICKS = 860_050, 987_600
SESSION = "0::/user.slice/user-1000.slice/session-3.scope"
CONTAINER_PID = 7100
NSENTER_PID = 4300  # in the container's uts namespace since its setns
PROC = {
    1: Proc("/usr/lib/systemd/systemd", HOST_NS, "0::/init.scope",
            Stat(1, 0, 1, 1, (b"/sbin/init",))),
    SSHD_PID: Proc("/usr/sbin/sshd", HOST_NS, "0::/system.slice/ssh.service",
                   Stat(520, 1, SSHD_PID, SSHD_PID,
                        (b"sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups",))),
    USER_SSHD_PID: Proc("/usr/sbin/sshd", HOST_NS, SESSION,
                        Stat(860_000, SSHD_PID, USER_SSHD_PID, USER_SSHD_PID,
                             (b"sshd: alice [priv]",))),
    SHELL_PID: Proc("/usr/bin/bash", HOST_NS, SESSION,
                    Stat(SHELL_TICKS, USER_SSHD_PID, SHELL_PID, SHELL_PID, (b"-bash",),
                         tty=(136, 3), uid=1000, cwd="/home/alice")),
    NSENTER_PID: Proc("/usr/bin/nsenter", {**HOST_NS, "uts": CONTAINER_NS["uts"]},
                      "0::/user.slice/user-1000.slice/session-3.scope"),
    4242: Proc("/home/alice/src/configure", HOST_NS,
               "0::/user.slice/user-1000.slice/session-3.scope"),
    CONTAINER_PID: Proc("/usr/sbin/nginx", CONTAINER_NS,
                        f"0::/system.slice/docker-{CONTAINER_ID}.scope"),
}


def shell(**overrides: Any) -> dict[str, Any]:
    """alice's login shell itself (bash lines come from it)."""
    return who(**{"pid": SHELL_PID, "tid": SHELL_PID, "vpid": SHELL_PID, "ppid": USER_SSHD_PID,
                  "start_ns": SHELL_TICKS * TICK_NS + 7, "parent_start_ns": 860_000 * TICK_NS,
                  "pgid": SHELL_PID, "pgid_start_ns": SHELL_TICKS * TICK_NS + 7,
                  **overrides})


@dataclass(frozen=True)
class Lost:
    """Ring-buffer loss counters grown since the last report (not a record)."""

    counts: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)


Input = Union[bytes, Lost]

# --------------------------------------------------------------------------- records


def who(**overrides: Any) -> dict[str, Any]:
    """A process of alice's ssh session on pts/3 (a child of her shell), unless overridden."""
    values: dict[str, Any] = {
        "ktime_ns": 98_765_432_101_234, "cgroup_id": SESSION_CGROUP, "pid": 4242,
        "tid": 4242, "ppid": SHELL_PID, "vpid": 4242, "start_ns": EVENT_TICKS * TICK_NS + 5,
        "parent_start_ns": SHELL_TICKS * TICK_NS + 7, "pgid": 4242,
        "pgid_start_ns": EVENT_TICKS * TICK_NS + 5, "sid": SHELL_PID,
        "sid_start_ns": SHELL_TICKS * TICK_NS + 7, "uid": 1000, "euid": 1000, "gid": 1000,
        "egid": 1000, "auid": 1000, "sessionid": 3, "tty_major": 136, "tty_minor": 3,
        "tty_index": 3, "ns": HOST_NS, "comm": b"bash", "tty_name": b"pts3",
        "cgroup_name": b"session-3.scope", "uts_name": b"",
    }
    values.update(overrides)
    return values


def nul_joined(args: list[bytes]) -> bytes:
    return b"".join(a + b"\0" for a in args)


TRUE_EXE = (kernel_dev(254, 1), 1311, 3_735_928_559)


def _exec(args: list[bytes], filename: bytes | None = None, **kw: Any) -> bytes:
    person = kw.pop("who", None) or who(comm=b"true")
    return exec_record(person, filename=args[0] if filename is None else filename,
                       args_blob=nul_joined(args), argc=kw.pop("argc", len(args)), **kw)


def _container_exec() -> bytes:
    person = who(pid=CONTAINER_PID, tid=CONTAINER_PID, ppid=7001, vpid=1, pgid=CONTAINER_PID,
                 sid=CONTAINER_PID, start_ns=700_000 * TICK_NS, pgid_start_ns=700_000 * TICK_NS,
                 sid_start_ns=700_000 * TICK_NS, parent_start_ns=699_990 * TICK_NS, uid=0, euid=0,
                 gid=0, egid=0, auid=UNSET, sessionid=UNSET, tty_index=-1, tty_major=0,
                 tty_minor=0, tty_name=b"", ns=CONTAINER_NS, comm=b"nginx",
                 cgroup_id=DOCKER_CGROUP, cgroup_name=f"docker-{CONTAINER_ID}.scope".encode(),
                 uts_name=b"web-1")
    return _exec([b"/usr/sbin/nginx", b"-g", b"daemon off;"], who=person,
                 exe=(kernel_dev(0, 54), 393_312, 1))


def _byte_limit_blob() -> tuple[list[bytes], bytes]:
    """20 arguments of 1023 bytes after the program and a marker, cut at 16384 bytes."""
    args = [b"/bin/true", b"mark-0123456789ab"] + [bytes([97 + i % 26]) * 1023 for i in range(20)]
    return args, nul_joined(args)[:16384]


def _huge_single_arg_blob() -> bytes:
    """One argument that alone filled the 16 KiB read: cut, no terminating NUL kept."""
    return (b"/bin/echo\0" + b"x" * 16383 + b"\0")[:16384]


def _ns_who(**kw: Any) -> dict[str, Any]:
    return who(comm=kw.pop("comm", b"unshare"), **kw)


def _changed(base: dict[str, int], **new: int) -> dict[str, int]:
    return {**base, **new}


CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
SIGCHLD = 17
SETNS, UNSHARE, CLONE, CLONE3 = 0, 1, 2, 3


def _cases() -> dict[str, list[Input]]:
    byte_args, byte_blob = _byte_limit_blob()
    return {
        # ---- exec
        "exec_success": [_exec([b"/bin/true", b"--version"], exe=TRUE_EXE)],
        "exec_no_tty_no_login": [_exec(
            [b"/usr/bin/run-parts", b"--report", b"/etc/cron.hourly"],
            who=who(uid=0, euid=0, gid=0, egid=0, auid=UNSET, sessionid=UNSET, tty_index=-1,
                    tty_major=0, tty_minor=0, tty_name=b"", comm=b"run-parts",
                    cgroup_id=CRON_CGROUP, cgroup_name=b"cron.service"),
            exe=(kernel_dev(254, 1), 2048, 11))],
        "exec_utf8_args": [_exec(
            [a.encode() for a in ("/bin/echo", "héllo wörld ✓", "", "it's \"quoted\"",
                                  "tab\there", "line1\nline2")], exe=TRUE_EXE)],
        "exec_non_utf8_argv": [_exec(
            [b"/bin/echo", b"caf\xc3\xa9", b"bad\xff\xfebytes\\x41", b"back\\slash", b"  "],
            exe=TRUE_EXE)],
        "exec_non_utf8_filename": [_exec([b"/tmp/\xffname", b"--flag"], exe=TRUE_EXE)],
        "exec_truncated_max_args": [_exec(
            [b"/bin/true", b"mark-max-args"] + [b"a%d" % i for i in range(126)],
            argc=200, args_truncated=1, exe=TRUE_EXE)],
        "exec_truncated_byte_limit": [exec_record(
            who(comm=b"true"), filename=b"/bin/true", args_blob=byte_blob, argc=len(byte_args),
            args_truncated=1, exe=TRUE_EXE)],
        "exec_truncated_single_huge_arg": [exec_record(
            who(comm=b"echo"), filename=b"/bin/echo", args_blob=_huge_single_arg_blob(),
            argc=2, args_truncated=1, exe=(kernel_dev(254, 1), 1297, 5))],
        "exec_failed_enoent": [_exec([b"/nonexistent/cmd", b"x"], retval=-2,
                                     who=who(comm=b"python3"))],
        "exec_failed_eacces": [_exec([b"/tmp/script.sh"], retval=-13, who=who(comm=b"bash"))],
        "exec_execveat_fexecve": [_exec([b"true", b"--help"], filename=b"/dev/fd/3", syscall=1,
                                        exe=TRUE_EXE)],
        "exec_relative_filename": [_exec([b"./configure", b"--prefix=/usr"],
                                         who=who(comm=b"configure"),
                                         exe=(kernel_dev(254, 1), 88_001, 2))],
        "exec_in_container": [_container_exec()],
        # A `#!/bin/sh -e` script: the new image's argv is its interpreter's.
        "exec_script": [_exec([b"/bin/sh", b"-e", b"./deploy.sh", b"--fast"],
                              filename=b"./deploy.sh", script=1, who=who(comm=b"deploy.sh"),
                              exe=(kernel_dev(254, 1), 1290, 9))],
        # fork() then execl() of string literals that are not resident, and the exec
        # failed: no new image to read argv from.
        "exec_failed_args_unread": [exec_record(who(comm=b"forker"), filename=b"/nonexistent",
                                                args_blob=b"", argc=0, retval=-2,
                                                args_fault=1)],
        "exec_unresolved_cgroup": [_exec(
            [b"/bin/sleep", b"60"],
            who=who(cgroup_id=9999, cgroup_name=f"libpod-{PODMAN_ID}.scope".encode(),
                    comm=b"sleep"), exe=TRUE_EXE)],
        "exec_unknown_user": [_exec(
            [b"/usr/bin/id"], who=who(uid=65534, euid=0, gid=65534, egid=65534, auid=65534,
                                      comm=b"id"), exe=TRUE_EXE)],
        # ---- a process's life: forked by the shell, exec, end; a pipeline's members
        "process_fork_exec_end": [
            fork_record(who(comm=b"bash", ktime_ns=EVENT_TICKS * TICK_NS + 5)),
            _exec([b"/usr/bin/make", b"-j2"], who=who(comm=b"make"),
                  exe=(kernel_dev(254, 1), 4001, 1)),
            exit_record(who(comm=b"make", ktime_ns=98_767_000_000_000), status=2 << 8)],
        "process_killed_by_signal": [exit_record(
            who(comm=b"sleep", ktime_ns=98_770_000_000_000), status=9)],
        # `yes | head -1`: head's group leader (yes) has ended: named from the table.
        "pipeline_member_after_its_leader_ended": [
            fork_record(who(comm=b"bash", ktime_ns=EVENT_TICKS * TICK_NS + 5)),
            _exec([b"/usr/bin/yes"], who=who(comm=b"yes"), exe=(kernel_dev(254, 1), 4002, 1)),
            exit_record(who(comm=b"yes", ktime_ns=98_766_000_000_000), status=13),
            _exec([b"/usr/bin/head", b"-1"],
                  who=who(pid=4243, tid=4243, vpid=4243, comm=b"head",
                          start_ns=EVENT_TICKS * TICK_NS + 9, pgid_start_ns=0),
                  exe=(kernel_dev(254, 1), 4003, 1))],
        # ---- namespaces
        "clone_new_uts_ipc": [ns_record(
            _ns_who(comm=b"python3"), syscall=CLONE, retval=5001, child_pid=5001,
            flags=CLONE_NEWUTS | CLONE_NEWIPC | SIGCHLD, before=HOST_NS,
            after=_changed(HOST_NS, uts=4026532410, ipc=4026532411))],
        "clone3_new_pid_mnt": [ns_record(
            _ns_who(comm=b"runc"), syscall=CLONE3, retval=5002, child_pid=5002,
            flags=CLONE_NEWPID | CLONE_NEWNS, before=HOST_NS,
            after=_changed(HOST_NS, pid=4026532420, pid_for_children=4026532420,
                           mnt=4026532421))],
        "unshare_success": [ns_record(
            _ns_who(), syscall=UNSHARE, retval=0,
            flags=CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWPID, before=HOST_NS,
            after=_changed(HOST_NS, mnt=4026532430, uts=4026532431,
                           pid_for_children=4026532432))],
        "unshare_eperm": [ns_record(
            _ns_who(uid=65534, euid=65534, gid=65534, egid=65534), syscall=UNSHARE,
            retval=-1, flags=CLONE_NEWUTS, before=HOST_NS, after=HOST_NS)],
        "setns_with_target": [_container_exec(), ns_record(
            _ns_who(comm=b"nsenter", uid=0, euid=0, gid=0, egid=0), syscall=SETNS, retval=0,
            fd=3, flags=0, before=HOST_NS,
            after=_changed(HOST_NS, mnt=CONTAINER_NS["mnt"], uts=CONTAINER_NS["uts"],
                           pid_for_children=CONTAINER_NS["pid"]))],
        # The caller's identity is read after setns: it is in the entered namespace
        # itself, and must not be named as the one that was there.
        "setns_caller_is_not_its_own_target": [_container_exec(), ns_record(
            _ns_who(comm=b"nsenter", pid=NSENTER_PID, tid=NSENTER_PID, uid=0, euid=0, gid=0,
                    egid=0, ns={**HOST_NS, "uts": CONTAINER_NS["uts"]}),
            syscall=SETNS, retval=0, fd=3, flags=CLONE_NEWUTS, before=HOST_NS,
            after=_changed(HOST_NS, uts=CONTAINER_NS["uts"]))],
        "setns_target_unknown": [ns_record(
            _ns_who(comm=b"ip"), syscall=SETNS, retval=0, fd=5, flags=CLONE_NEWNET,
            before=HOST_NS, after=_changed(HOST_NS, net=4026532500))],
        "setns_einval": [ns_record(_ns_who(comm=b"nsenter"), syscall=SETNS, retval=-22, fd=7,
                                   flags=0, before=HOST_NS, after=HOST_NS)],
        # ---- bash
        "bash_line": [bash_record(shell(), line=b"ls -la /etc")],
        "bash_line_truncated": [bash_record(shell(), line=b"echo " + b"y" * 4091, truncated=1)],
        "bash_line_non_utf8": [bash_record(shell(), line=b"echo caf\xe9 \\x41 \xc3\xa9")],
        "bash_empty_line": [bash_record(shell(), line=b"")],
        # ---- loss
        "events_lost": [Lost({"exec": 12, "namespace": 0, "bash": 3}, {"total": 27})],
    }


CASES = _cases()
