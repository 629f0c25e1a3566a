"""The probe families: everything about one kind of record, declared once.

A family is a BPF program (bpf/<source>) that writes one kind of record to the ring buffer.
Its row below is the single place that says what the record is: its kind id, its slot in
the loss counters, its tracepoints, its config switch and its record layout.
The C programs receive every constant from here as -D flags (`c_constants`), the decoders
(records.py) read the layouts, preflight checks the tracepoints, and a BPF test compares
each layout field by field with the struct BCC compiled. A new family is a new row here,
a program in bpf/, a decoder and a document builder.
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.capture.layout import (
    Layout,
    chars,
    nested,
    padding,
    s32,
    tail,
    u32,
    u64,
)

# --------------------------------------------------------------------------- sizes

TASK_COMM_LEN = 16
TTY_NAME_LEN = 32
CGROUP_NAME_LEN = 128
UTS_LEN = 65  # __NEW_UTS_LEN + 1
FILENAME_LEN = 512

# --------------------------------------------------------------------------- shared structs

# A task's namespace inodes; the field names are also the /proc/PID/ns/* names.
NS_SET = Layout("ns_set", [
    u32("pid"),  # the task's active pid namespace
    u32("pid_for_children"), u32("mnt"), u32("net"), u32("uts"), u32("ipc"), u32("user"),
    u32("cgroup"),
])
NS_KINDS = NS_SET.names

# Who did it and where: read from the current task by every program (fill_identity).
IDENTITY = Layout("identity", [
    u64("ktime_ns"),
    u64("cgroup_id"),  # kernfs id of the reported cgroup
    # Start times (CLOCK_BOOTTIME ns) of this process, its parent, its process group
    # leader and its session leader; 0 when that process is gone.
    u64("start_ns"), u64("parent_start_ns"), u64("pgid_start_ns"), u64("sid_start_ns"),
    u32("pid"),  # tgid, init pid namespace
    u32("tid"), u32("ppid"),
    u32("vpid"),  # pid in the task's own pid namespace
    u32("uid"), u32("euid"), u32("gid"), u32("egid"),
    u32("auid"),  # login uid; (u32)-1 when unset
    u32("sessionid"),  # (u32)-1 when unset
    u32("tty_major"), u32("tty_minor"),
    s32("tty_index"),  # -1: no controlling tty
    u32("pgid"), u32("sid"),  # process group and session ids, init pid namespace
    padding("pad0", "u32"),
    nested("ns", NS_SET),
    chars("comm", TASK_COMM_LEN),
    chars("tty_name", TTY_NAME_LEN),
    chars("cgroup_name", CGROUP_NAME_LEN),
    chars("uts_name", UTS_LEN),
    padding("pad1", "char", 7),
])

# --------------------------------------------------------------------------- namespaces


@dataclass(frozen=True)
class CloneFlag:
    bit: int
    name: str  # the CLONE_NEW* macro, as documents name it
    kind: str  # the namespace it creates


CLONE_FLAGS = (
    CloneFlag(0x00020000, "CLONE_NEWNS", "mnt"),
    CloneFlag(0x02000000, "CLONE_NEWCGROUP", "cgroup"),
    CloneFlag(0x04000000, "CLONE_NEWUTS", "uts"),
    CloneFlag(0x08000000, "CLONE_NEWIPC", "ipc"),
    CloneFlag(0x10000000, "CLONE_NEWUSER", "user"),
    CloneFlag(0x20000000, "CLONE_NEWPID", "pid"),
    CloneFlag(0x40000000, "CLONE_NEWNET", "net"),
    CloneFlag(0x00000080, "CLONE_NEWTIME", "time"),
)
# unshare/clone calls asking for none of these are not namespace events.
NEW_NS_FLAGS = sum(f.bit for f in CLONE_FLAGS)

# --------------------------------------------------------------------------- families


@dataclass(frozen=True)
class Tracepoint:
    category: str
    name: str
    raw: bool = False  # RAW_TRACEPOINT_PROBE: BCC knows it by its bare name

    @property
    def tracefs(self) -> str:
        """Its directory under tracefs' events/ (what `check` looks for)."""
        return f"{self.category}/{self.name}"

    @property
    def bcc_name(self) -> bytes:
        """The key BCC files it under once attached (tracepoint_fds/raw_tracepoint_fds)."""
        return self.name.encode() if self.raw else f"{self.category}:{self.name}".encode()


def _syscall_tracepoints(*syscalls: str) -> tuple[Tracepoint, ...]:
    return tuple(Tracepoint("syscalls", f"sys_{edge}_{name}")
                 for name in syscalls for edge in ("enter", "exit"))


@dataclass(frozen=True)
class Family:
    name: str  # config switch capture.<name>; the `family` label of probes_attached
    kind: int  # record kind id, the first u32 of each record: KIND_<macro> in C
    macro: str  # suffix of its C constants: KIND_<macro>, LOST_<macro>
    lost_index: int  # its slot in the per-CPU `lost` map: LOST_<macro> in C
    label: str  # the kind in events_captured/events_lost and in events_lost documents
    source: str  # its program in bpf/
    layout: Layout  # the record it writes
    record_map: str  # the BPF map whose value type is the record struct
    tracepoints: tuple[Tracepoint, ...] = ()
    syscalls: tuple[str, ...] = ()  # the record's syscall index -> name: SYSCALL_<NAME>
    map_sizes: tuple[tuple[str, int], ...] = ()  # (C constant, entries) of its maps


EXEC = Family(
    name="exec", kind=1, macro="EXEC", lost_index=0, label="exec",
    source="exec.c",
    layout=Layout("exec_event", [
        u32("kind"), u32("syscall"), s32("retval"),
        u32("argc"),  # arguments seen (bprm->argc on success)
        u32("args_len"),  # bytes of args[] used: NUL-separated arguments
        u32("args_truncated"),  # hit MAX_ARGS or ARGS_LIMIT
        u32("args_fault"),  # argv could not be read (counted, flagged on the document)
        u32("exe_dev"),  # kernel dev_t of the executable's filesystem (success only)
        u64("exe_ino"),  # the executable's inode number (success only)
        u32("exe_gen"),  # its i_generation: tells a reused inode number apart
        u32("script"),  # a `#!` script: the image is its interpreter (success only)
        u64("argv_addr"),  # the caller's argv and filename pointers: a failed exec's are
        u64("filename_addr"),  # read again at syscall exit
        nested("id", IDENTITY),
        chars("filename", FILENAME_LEN),
        tail("args", lambda c: 2 * c["ARGS_BUF"]),
    ]),
    record_map="exec_pending",
    tracepoints=(*_syscall_tracepoints("execve", "execveat"),
                 Tracepoint("sched", "sched_process_exec", raw=True)),
    syscalls=("execve", "execveat"),
    # Threads that may be inside execve() at once; each slot holds a whole argv.
    map_sizes=(("PENDING_EXECS", 512),),
)

NAMESPACES = Family(
    name="namespaces", kind=2, macro="NS", lost_index=1, label="namespace",
    source="namespaces.c",
    layout=Layout("ns_event", [
        u32("kind"), u32("syscall"), s32("retval"),
        s32("fd"),  # setns only, else -1
        u64("flags"),  # nstype for setns, flags for unshare/clone
        u32("child_pid"),  # clone only
        padding("pad", "u32"),
        nested("before", NS_SET),
        nested("after", NS_SET),
        nested("id", IDENTITY),
    ]),
    record_map="ns_pending",
    tracepoints=(*_syscall_tracepoints("setns", "unshare", "clone", "clone3"),
                 Tracepoint("sched", "sched_process_fork", raw=True)),
    syscalls=("setns", "unshare", "clone", "clone3"),
    # Threads that may be inside setns/unshare/clone at once.
    map_sizes=(("NS_PENDING", 4096),),
)

BASH = Family(
    name="bash", kind=3, macro="BASH", lost_index=2, label="bash",
    source="bash.c",
    layout=Layout("bash_event", [
        u32("kind"),
        u32("line_len"),  # bytes captured, without the NUL
        u32("truncated"),
        padding("pad", "u32"),
        nested("id", IDENTITY),
        tail("line", lambda c: c["LINE_MAX_BYTES"] + 1),
    ]),
    record_map="bash_scratch",  # a uretprobe on readline(): no tracepoints
)

FORK = Family(
    name="fork", kind=4, macro="FORK", lost_index=3, label="fork", source="fork.c",
    layout=Layout("fork_event", [
        u32("kind"),
        padding("pad", "u32"),
        nested("id", IDENTITY),  # the child's
    ]),
    record_map="fork_scratch",
    tracepoints=(Tracepoint("sched", "sched_process_fork", raw=True),),
)

EXIT = Family(
    name="exit", kind=5, macro="EXIT", lost_index=4, label="exit", source="exit.c",
    layout=Layout("exit_event", [
        u32("kind"),
        s32("exit_code"),  # the wait(2) status
        nested("id", IDENTITY),
    ]),
    record_map="exit_scratch",
    tracepoints=(Tracepoint("sched", "sched_process_exit", raw=True),),
)

FAMILIES: tuple[Family, ...] = (EXEC, NAMESPACES, BASH, FORK, EXIT)
BY_KIND = {f.kind: f for f in FAMILIES}
BY_NAME = {f.name: f for f in FAMILIES}


def _check(families: tuple[Family, ...]) -> None:
    for attr in ("name", "kind", "macro", "label", "lost_index"):
        values = [getattr(f, attr) for f in families]
        if len(set(values)) != len(values):
            raise ValueError(f"probe families: {attr} is not unique: {values}")
    if sorted(f.lost_index for f in families) != list(range(len(families))):
        raise ValueError("probe families: lost_index must number the `lost` map's slots")


_check(FAMILIES)


def c_constants() -> dict[str, int]:
    """Every constant the BPF programs take from this table, for -D flags."""
    constants = {
        "TASK_COMM_LEN": TASK_COMM_LEN, "TTY_NAME_LEN": TTY_NAME_LEN,
        "CGROUP_NAME_LEN": CGROUP_NAME_LEN, "UTS_LEN": UTS_LEN, "FILENAME_LEN": FILENAME_LEN,
        "NEW_NS_FLAGS": NEW_NS_FLAGS, "LOST_SLOTS": len(FAMILIES),
    }
    for f in FAMILIES:
        constants[f"KIND_{f.macro}"] = f.kind
        constants[f"LOST_{f.macro}"] = f.lost_index
        constants.update({f"SYSCALL_{s.upper()}": i for i, s in enumerate(f.syscalls)})
        constants.update(f.map_sizes)
    return constants
