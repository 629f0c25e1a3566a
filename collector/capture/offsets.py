"""Kernel struct offsets for the BPF programs, taken from the running kernel's BTF.

The BPF C code never dereferences kernel structs through header layouts (the installed
headers may belong to another kernel).  Instead it reads ``base + OFF_...`` with
``bpf_probe_read_kernel`` using the constants produced here, passed as ``-D`` cflags.

Macro naming:

* ``OFF_<STRUCT>_<FIELD>``  byte offset of a member within ``struct <struct>``; nested paths
  are flattened (``OFF_CRED_UID`` is ``cred.uid.val``) and namespace inode numbers are
  ``OFF_<STRUCT>_INUM`` whatever their spelling (``ns.inum`` or the older ``proc_inum``).
* ``SIZEOF_<THING>``        byte size of a type or member (array strides, buffer sizes).
* ``COUNT_<THING>``         number of elements of a fixed-size array member.
* ``CGRP_ID_<SUBSYS>``      values of ``enum cgroup_subsys_id``.
* ``HAVE_<FEATURE>``        1/0 so the C code can ``#if`` around fields a kernel config
  may compile out (e.g. ``HAVE_LOGINUID`` is 0 without CONFIG_AUDIT).  When a feature is
  0 its ``OFF_`` macros are left undefined, so unguarded use fails to compile.

Kernel renames are handled by listing alternative member paths; the one that matched is
recorded in :attr:`OffsetReport.used`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from collector.capture.btf import ArrayType, Btf, BtfError


@dataclass(frozen=True)
class FieldSpec:
    """A member offset (``kind="off"``), member size (``"size"``) or array length
    (``"count"``), trying ``paths`` in order."""

    macro: str
    struct: str
    paths: tuple[str, ...]
    feature: str | None = None  # optional: missing only clears this HAVE_ flag
    hint: str = ""
    kind: str = "off"


@dataclass(frozen=True)
class TypeSizeSpec:
    macro: str
    type_name: str


@dataclass(frozen=True)
class EnumSpec:
    macro: str
    enum: str
    enumerator: str
    feature: str


def _f(macro: str, struct: str, *paths: str, feature: str | None = None, hint: str = "",
       kind: str = "off") -> FieldSpec:
    return FieldSpec(macro, struct, paths, feature, hint, kind)


_AUDIT_HINT = "kernel built without CONFIG_AUDIT; login uid/session id not reported"

FIELDS: tuple[FieldSpec, ...] = (
    # task_struct
    _f("OFF_TASK_STRUCT_PID", "task_struct", "pid"),
    _f("OFF_TASK_STRUCT_TGID", "task_struct", "tgid"),
    _f("OFF_TASK_STRUCT_REAL_PARENT", "task_struct", "real_parent"),
    _f("OFF_TASK_STRUCT_CRED", "task_struct", "cred"),
    _f("OFF_TASK_STRUCT_REAL_CRED", "task_struct", "real_cred"),
    _f("OFF_TASK_STRUCT_LOGINUID", "task_struct", "loginuid.val", "loginuid",
       feature="HAVE_LOGINUID", hint=_AUDIT_HINT),
    _f("OFF_TASK_STRUCT_SESSIONID", "task_struct", "sessionid",
       feature="HAVE_SESSIONID", hint=_AUDIT_HINT),
    _f("OFF_TASK_STRUCT_SIGNAL", "task_struct", "signal"),
    _f("OFF_TASK_STRUCT_NSPROXY", "task_struct", "nsproxy"),
    _f("OFF_TASK_STRUCT_COMM", "task_struct", "comm"),
    _f("SIZEOF_TASK_STRUCT_COMM", "task_struct", "comm", kind="size"),
    _f("OFF_TASK_STRUCT_CGROUPS", "task_struct", "cgroups",
       feature="HAVE_CGROUPS", hint="kernel built without CONFIG_CGROUPS"),
    # thread_pid appeared in 4.19; before that the pid hung off pids[PIDTYPE_PID].
    _f("OFF_TASK_STRUCT_THREAD_PID", "task_struct", "thread_pid", "pids[0].pid"),
    _f("OFF_TASK_STRUCT_FLAGS", "task_struct", "flags"),
    _f("OFF_TASK_STRUCT_GROUP_LEADER", "task_struct", "group_leader"),
    # Process identity: the start time /proc/PID/stat reports (CLOCK_BOOTTIME; named
    # real_start_time before 5.5), the wait status at exit, and the task's links to its
    # struct pids (tasks[PIDTYPE_PID] of a struct pid leads back to the task).
    _f("OFF_TASK_STRUCT_START_BOOTTIME", "task_struct", "start_boottime", "real_start_time"),
    _f("OFF_TASK_STRUCT_EXIT_CODE", "task_struct", "exit_code"),
    _f("OFF_TASK_STRUCT_PID_LINKS", "task_struct", "pid_links"),
    _f("OFF_PID_TASKS", "pid", "tasks"),
    # signal_struct: live threads (0 once the last one is in do_exit), the process group
    # and session struct pids (pids[PIDTYPE_PGID], pids[PIDTYPE_SID]; 4.19+).
    _f("OFF_SIGNAL_STRUCT_LIVE", "signal_struct", "live"),
    _f("OFF_SIGNAL_STRUCT_PIDS", "signal_struct", "pids"),
    # linux_binprm.argc: the true argument count of a successful exec (sched_process_exec).
    _f("OFF_LINUX_BINPRM_ARGC", "linux_binprm", "argc"),
    # linux_binprm.filename: the name the kernel opened ("/dev/fd/N" for fexecve).
    _f("OFF_LINUX_BINPRM_FILENAME", "linux_binprm", "filename"),
    # linux_binprm.interp: the filename, or a `#!` script's interpreter once binfmt_script
    # has replaced the image.
    _f("OFF_LINUX_BINPRM_INTERP", "linux_binprm", "interp"),
    # The new image's argv, resident on its stack at sched_process_exec.
    _f("OFF_TASK_STRUCT_MM", "task_struct", "mm"),
    _f("OFF_MM_STRUCT_ARG_START", "mm_struct", "arg_start"),
    _f("OFF_MM_STRUCT_ARG_END", "mm_struct", "arg_end"),
    # The executable's identity (device, inode), so user space can tell binaries apart
    # without a stat per exec.
    _f("OFF_LINUX_BINPRM_FILE", "linux_binprm", "file"),
    _f("OFF_FILE_F_INODE", "file", "f_inode"),
    _f("OFF_INODE_I_INO", "inode", "i_ino"),
    _f("OFF_INODE_I_GENERATION", "inode", "i_generation"),
    _f("OFF_INODE_I_SB", "inode", "i_sb"),
    _f("OFF_SUPER_BLOCK_S_DEV", "super_block", "s_dev"),
    # cred (kuid_t/kgid_t wrap the integer in .val)
    _f("OFF_CRED_UID", "cred", "uid.val", "uid"),
    _f("OFF_CRED_EUID", "cred", "euid.val", "euid"),
    _f("OFF_CRED_GID", "cred", "gid.val", "gid"),
    _f("OFF_CRED_EGID", "cred", "egid.val", "egid"),
    _f("OFF_CRED_SUID", "cred", "suid.val", "suid"),
    _f("OFF_CRED_FSUID", "cred", "fsuid.val", "fsuid"),
    _f("OFF_CRED_USER_NS", "cred", "user_ns"),
    # kernel_cap_t is a u64 wrapper since 6.3 and u32[2] before; both are 8 bytes.
    _f("OFF_CRED_CAP_EFFECTIVE", "cred", "cap_effective"),
    _f("SIZEOF_CRED_CAP_EFFECTIVE", "cred", "cap_effective", kind="size"),
    # controlling terminal
    _f("OFF_SIGNAL_STRUCT_TTY", "signal_struct", "tty"),
    _f("OFF_TTY_STRUCT_INDEX", "tty_struct", "index"),
    _f("OFF_TTY_STRUCT_DRIVER", "tty_struct", "driver"),
    _f("OFF_TTY_STRUCT_NAME", "tty_struct", "name"),
    _f("SIZEOF_TTY_STRUCT_NAME", "tty_struct", "name", kind="size"),
    _f("OFF_TTY_DRIVER_MAJOR", "tty_driver", "major"),
    _f("OFF_TTY_DRIVER_MINOR_START", "tty_driver", "minor_start"),
    _f("OFF_TTY_DRIVER_NAME", "tty_driver", "name"),
    # nsproxy
    _f("OFF_NSPROXY_UTS_NS", "nsproxy", "uts_ns"),
    _f("OFF_NSPROXY_IPC_NS", "nsproxy", "ipc_ns"),
    _f("OFF_NSPROXY_MNT_NS", "nsproxy", "mnt_ns"),
    _f("OFF_NSPROXY_NET_NS", "nsproxy", "net_ns"),
    _f("OFF_NSPROXY_PID_NS_FOR_CHILDREN", "nsproxy", "pid_ns_for_children", "pid_ns"),
    _f("OFF_NSPROXY_CGROUP_NS", "nsproxy", "cgroup_ns",
       feature="HAVE_CGROUP_NS", hint="cgroup namespaces need 4.6+ and CONFIG_CGROUPS"),
    _f("OFF_NSPROXY_TIME_NS", "nsproxy", "time_ns",
       feature="HAVE_TIME_NS", hint="time namespaces need 5.6+ and CONFIG_TIME_NS"),
    # namespace inode numbers (what /proc/PID/ns/* report as st_ino)
    _f("OFF_UTS_NAMESPACE_INUM", "uts_namespace", "ns.inum", "proc_inum"),
    _f("OFF_IPC_NAMESPACE_INUM", "ipc_namespace", "ns.inum", "proc_inum"),
    _f("OFF_MNT_NAMESPACE_INUM", "mnt_namespace", "ns.inum", "proc_inum"),
    _f("OFF_NET_INUM", "net", "ns.inum", "proc_inum"),
    _f("OFF_PID_NAMESPACE_INUM", "pid_namespace", "ns.inum", "proc_inum"),
    _f("OFF_USER_NAMESPACE_INUM", "user_namespace", "ns.inum", "proc_inum"),
    _f("OFF_CGROUP_NAMESPACE_INUM", "cgroup_namespace", "ns.inum",
       feature="HAVE_CGROUP_NS", hint="cgroup namespaces need 4.6+ and CONFIG_CGROUPS"),
    _f("OFF_TIME_NAMESPACE_INUM", "time_namespace", "ns.inum",
       feature="HAVE_TIME_NS", hint="time namespaces need 5.6+ and CONFIG_TIME_NS"),
    _f("OFF_UTS_NAMESPACE_NODENAME", "uts_namespace", "name.nodename"),
    _f("SIZEOF_UTS_NAMESPACE_NODENAME", "uts_namespace", "name.nodename", kind="size"),
    # struct pid -> per-namespace pid numbers
    _f("OFF_PID_LEVEL", "pid", "level"),
    _f("OFF_PID_NUMBERS", "pid", "numbers"),
    _f("OFF_UPID_NR", "upid", "nr"),
    _f("OFF_UPID_NS", "upid", "ns"),
    # cgroups
    _f("OFF_CSS_SET_DFL_CGRP", "css_set", "dfl_cgrp",
       feature="HAVE_CGROUPS", hint="kernel built without CONFIG_CGROUPS"),
    _f("OFF_CSS_SET_SUBSYS", "css_set", "subsys",
       feature="HAVE_CGROUPS", hint="kernel built without CONFIG_CGROUPS"),
    _f("COUNT_CSS_SET_SUBSYS", "css_set", "subsys",
       feature="HAVE_CGROUPS", hint="kernel built without CONFIG_CGROUPS", kind="count"),
    _f("SIZEOF_CSS_SET_SUBSYS_ELEM", "css_set", "subsys[0]",
       feature="HAVE_CGROUPS", hint="kernel built without CONFIG_CGROUPS", kind="size"),
    _f("OFF_CGROUP_SUBSYS_STATE_CGROUP", "cgroup_subsys_state", "cgroup",
       feature="HAVE_CGROUPS", hint="kernel built without CONFIG_CGROUPS"),
    _f("OFF_CGROUP_KN", "cgroup", "kn",
       feature="HAVE_CGROUPS", hint="kernel built without CONFIG_CGROUPS"),
    _f("OFF_CGROUP_LEVEL", "cgroup", "level",
       feature="HAVE_CGROUP_LEVEL", hint="cgroup.level appeared in 4.6"),
    _f("OFF_KERNFS_NODE_NAME", "kernfs_node", "name"),
    # kernfs_node.parent became the RCU-annotated __parent in 6.15.
    _f("OFF_KERNFS_NODE_PARENT", "kernfs_node", "__parent", "parent"),
    # kernfs_node.id was a union kernfs_node_id before 5.5.
    _f("OFF_KERNFS_NODE_ID", "kernfs_node", "id", "id.id"),
)

TYPE_SIZES: tuple[TypeSizeSpec, ...] = (
    TypeSizeSpec("SIZEOF_UPID", "upid"),
)

ENUMS: tuple[EnumSpec, ...] = (
    EnumSpec("PIDTYPE_PGID_ID", "pid_type", "PIDTYPE_PGID", "HAVE_PIDTYPE_PGID"),
    EnumSpec("PIDTYPE_SID_ID", "pid_type", "PIDTYPE_SID", "HAVE_PIDTYPE_SID"),
    EnumSpec("CGRP_ID_MEMORY", "cgroup_subsys_id", "memory_cgrp_id", "HAVE_CGRP_ID_MEMORY"),
    EnumSpec("CGRP_ID_PIDS", "cgroup_subsys_id", "pids_cgrp_id", "HAVE_CGRP_ID_PIDS"),
    EnumSpec("CGRP_ID_CPU", "cgroup_subsys_id", "cpu_cgrp_id", "HAVE_CGRP_ID_CPU"),
)


@dataclass(frozen=True)
class Missing:
    macro: str
    what: str  # e.g. "task_struct.loginuid" or "enum cgroup_subsys_id.cpu_cgrp_id"
    detail: str  # why it was not found / what was tried
    feature: str | None  # None means the item is required
    hint: str = ""

    @property
    def required(self) -> bool:
        return self.feature is None


@dataclass
class OffsetReport:
    values: dict[str, int] = field(default_factory=dict)
    used: dict[str, str] = field(default_factory=dict)  # macro -> "struct.path" that matched
    missing: list[Missing] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(m.required for m in self.missing)


def resolve_offsets(btf: Btf) -> OffsetReport:
    """Resolve every known macro; never raises for missing members (see ``missing``)."""
    report = OffsetReport()
    features: dict[str, bool] = {}
    for spec in FIELDS:
        ok = _resolve_field(btf, spec, report)
        if spec.feature:
            features[spec.feature] = features.get(spec.feature, True) and ok
    for size_spec in TYPE_SIZES:
        _resolve_type_size(btf, size_spec, report)
    for enum_spec in ENUMS:
        features[enum_spec.feature] = _resolve_enum(btf, enum_spec, report)
    _drop_disabled(report, features)
    for name, present in sorted(features.items()):
        report.values[name] = int(present)
    return report


def _field_value(btf: Btf, spec: FieldSpec, path: str) -> int:
    if spec.kind == "off":
        return btf.member_offset(spec.struct, path)
    member = btf.member_type(spec.struct, path)
    if spec.kind == "size":
        return btf.sizeof(member)
    arr = btf.strip(member)
    if not isinstance(arr, ArrayType):
        raise BtfError(f"{spec.struct}.{path} is not an array")
    return arr.nelems


def _resolve_field(btf: Btf, spec: FieldSpec, report: OffsetReport) -> bool:
    if btf.find_struct(spec.struct) is None:
        report.missing.append(Missing(spec.macro, f"struct {spec.struct}",
                                      "struct not in kernel BTF", spec.feature, spec.hint))
        return False
    for path in spec.paths:
        try:
            value = _field_value(btf, spec, path)
        except BtfError:
            continue
        report.values[spec.macro] = value
        report.used[spec.macro] = f"{spec.struct}.{path}"
        return True
    report.missing.append(Missing(spec.macro, f"{spec.struct}.{spec.paths[0]}",
                                  "no member " + " / ".join(spec.paths), spec.feature, spec.hint))
    return False


def _resolve_type_size(btf: Btf, spec: TypeSizeSpec, report: OffsetReport) -> None:
    st = btf.find_struct(spec.type_name)
    if st is None:
        report.missing.append(Missing(spec.macro, f"struct {spec.type_name}",
                                      "struct not in kernel BTF", None))
        return
    report.values[spec.macro] = btf.sizeof(st)
    report.used[spec.macro] = f"sizeof(struct {spec.type_name})"


def _resolve_enum(btf: Btf, spec: EnumSpec, report: OffsetReport) -> bool:
    value = btf.enum_value(spec.enum, spec.enumerator)
    if value is None:
        report.missing.append(Missing(spec.macro, f"enum {spec.enum}.{spec.enumerator}",
                                      "enumerator not in kernel BTF", spec.feature,
                                      "controller not built into this kernel"))
        return False
    report.values[spec.macro] = value
    report.used[spec.macro] = f"enum {spec.enum}.{spec.enumerator}"
    return True


def _drop_disabled(report: OffsetReport, features: dict[str, bool]) -> None:
    # A feature is all-or-nothing: if any of its members is missing, none of its macros
    # are defined, so the C code cannot half-use it outside an #if HAVE_... block.
    for spec in (*FIELDS, *ENUMS):
        if spec.feature and not features.get(spec.feature, False):
            report.values.pop(spec.macro, None)
            report.used.pop(spec.macro, None)


def offsets_as_cflags(offsets: dict[str, int]) -> list[str]:
    return [f"-D{name}={value}" for name, value in sorted(offsets.items())]


def explain_missing(report: OffsetReport, required_only: bool = False) -> list[str]:
    """One human-readable line per missing item (for ``audit-collector check``)."""
    lines = []
    for m in report.missing:
        if required_only and not m.required:
            continue
        effect = "REQUIRED, the collector cannot run" if m.required else f"{m.feature}=0"
        hint = f" ({m.hint})" if m.hint else ""
        lines.append(f"{m.macro}: {m.what}: {m.detail} - {effect}{hint}")
    return lines
