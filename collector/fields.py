"""Every field the collector writes, with its Elasticsearch mapping type.

This table is the single source for the index template's explicit mappings and for the
README's field list. ECS fields keep their ECS types and multi-fields (ECS 8.11: a test
checks every one against the ECS project's own generated definitions); the collector's own
fields live under the one non-ECS object `audit_collector`.
"""

from __future__ import annotations

ECS_VERSION = "8.11.0"
CUSTOM_ROOT = "audit_collector"
NS_KINDS = ("pid", "pid_for_children", "mnt", "net", "uts", "ipc", "user", "cgroup")

# dotted path -> (mapping type, description)
FIELDS: dict[str, tuple[str, str]] = {
    "@timestamp": ("date", "Kernel time of the event in UTC (the text keeps nanoseconds; "
                           "the index keeps milliseconds)"),
    "message": ("match_only_text", "Human-readable summary (the bash line for bash events)"),
    "ecs.version": ("keyword", "ECS version the document follows"),
    "agent.type": ("keyword", "Always audit-collector"),
    "agent.version": ("keyword", "Collector version"),
    "agent.name": ("keyword", "Host name the collector runs on"),
    "data_stream.type": ("constant_keyword", "Always logs"),
    "data_stream.dataset": ("constant_keyword", "elasticsearch.dataset (equals event.dataset)"),
    "data_stream.namespace": ("constant_keyword", "elasticsearch.namespace"),
    "host.name": ("keyword", "Host name (host.name in the config, else the kernel hostname)"),
    "host.hostname": ("keyword", "Kernel hostname"),
    "host.id": ("keyword", "/etc/machine-id"),
    "host.boot.id": ("keyword", "Boot id of the running kernel, as the kernel writes it"),
    "host.architecture": ("keyword", "Machine architecture"),
    "host.os.kernel": ("keyword", "Kernel release"),
    "host.os.type": ("keyword", "Always linux"),
    "host.os.name": ("keyword", "NAME of /etc/os-release"),
    "host.os.full": ("keyword", "PRETTY_NAME of /etc/os-release"),
    "host.os.version": ("keyword", "VERSION_ID of /etc/os-release"),
    "host.os.family": ("keyword", "First of ID_LIKE of /etc/os-release, else ID"),
    "host.os.platform": ("keyword", "ID of /etc/os-release"),
    "event.id": ("keyword", "<boot id prefix>-<kernel ns, hex>-<thread id, hex>-<record "
                            "kind>: unique per event"),
    "event.kind": ("keyword", "event; metric for events_lost"),
    "event.category": ("keyword", "Always process"),
    "event.type": ("keyword", "start (fork, exec), end (end), change (setns, unshare, "
                              "clone), info (bash lines, events_lost)"),
    "event.action": ("keyword", "fork, exec, end, setns, unshare, clone, bash_command, "
                                "events_lost"),
    "event.outcome": ("keyword", "success or failure (end: a non-zero exit code)"),
    "event.module": ("keyword", "Always audit_collector"),
    "event.dataset": ("keyword", "Equals data_stream.dataset"),
    "event.sequence": ("long", "Per-host sequence number (gap-free unless loss is reported)"),
    "event.created": ("date", "When the collector built the document"),
    "event.duration": ("long", "end: how long the process ran, in ns"),
    "error.code": ("keyword", "errno name of a failed syscall (ENOENT, EPERM...)"),
    "error.message": ("match_only_text", "strerror text of the errno"),
    "process.pid": ("long", "Thread-group id in the initial pid namespace"),
    "process.vpid": ("long", "pid inside the process's own pid namespace"),
    "process.thread.id": ("long", "Thread id in the initial pid namespace"),
    "process.name": ("keyword", "comm of the task"),
    "process.executable": ("keyword", "Path of the executable"),
    "process.args": ("keyword", "argv, each argument one element"),
    "process.args_count": ("long", "Number of elements of process.args"),
    "process.command_line": ("wildcard", "argv joined by spaces, shell-quoted where needed"),
    "process.interactive": ("boolean", "The process has a controlling terminal"),
    "process.tty.char_device.major": ("long", "Controlling tty major number"),
    "process.tty.char_device.minor": ("long", "Controlling tty minor number"),
    "process.entity_id": ("keyword", "base64 of <pid ns inode>__<boot id>__<pid>__<start "
                                     "in clock ticks since boot>: unique per process"),
    "process.start": ("date", "When the process started (clock-tick precision)"),
    "process.working_directory": ("keyword", "Working directory (at its exec)"),
    "process.end": ("date", "end: when the process ended"),
    "process.exit_code": ("long", "end: exit status, or 128 + the signal that killed it"),
    "process.previous.executable": ("keyword", "exec: the image before this exec"),
    "process.previous.args": ("keyword", "exec: the argv before this exec"),
    "process.previous.args_count": ("long", "exec: its length"),
    **{f"process.{rel}.{name}": (kind, f"{what}: {text}")
       for rel, what in (("parent", "The parent"),
                         ("group_leader", "The process group leader"),
                         ("session_leader", "The session leader"),
                         ("entry_leader", "The session's entry leader"))
       for name, kind, text in (
           ("entity_id", "keyword", "its process.entity_id"),
           ("pid", "long", "its pid"),
           ("vpid", "long", "its pid in its own pid namespace"),
           ("start", "date", "when it started"),
           ("name", "keyword", "its name"),
           ("executable", "keyword", "its executable"),
           ("args", "keyword", "its argv"),
           ("args_count", "long", "length of its argv"),
           ("interactive", "boolean", "it has a controlling terminal"),
           ("working_directory", "keyword", "its working directory"),
       ) + ((("same_as_process", "boolean", "it is this process"),) if rel != "parent"
            else ())},
    "process.entry_leader.user.id": ("keyword", "The entry leader's effective uid"),
    "process.entry_leader.user.name": ("keyword", "The entry leader's effective user name"),
    "process.entry_leader.entry_meta.type": (
        "keyword", "How the session came in: init, sshd, ssm, terminal, console (absent: "
                   "unknown)"),
    "process.user.id": ("keyword", "Effective uid"),
    "process.user.name": ("keyword", "Effective user name"),
    "process.real_user.id": ("keyword", "Real uid"),
    "process.real_user.name": ("keyword", "Real user name"),
    "process.real_group.id": ("keyword", "Real gid"),
    "process.real_group.name": ("keyword", "Real group name"),
    "user.id": ("keyword", "Real uid"),
    "user.name": ("keyword", "Real user name (host's passwd)"),
    "user.effective.id": ("keyword", "Effective uid"),
    "user.effective.name": ("keyword", "Effective user name"),
    "group.id": ("keyword", "Real gid"),
    "group.name": ("keyword", "Real group name"),
    "container.id": ("keyword", "Container id derived from the cgroup"),
    "container.runtime": ("keyword", "docker, containerd, cri-o, podman, lxc, systemd-nspawn"),
    "audit_collector.timestamp": ("date_nanos", "@timestamp with nanosecond precision"),
    "audit_collector.login_user.id": ("keyword", "Login uid (auid); omitted when unset"),
    "audit_collector.login_user.name": ("keyword", "Login user name"),
    "audit_collector.session_id": ("long", "Audit session id; omitted when unset"),
    "audit_collector.tty.name": ("keyword", "Controlling tty name, e.g. pts/3"),
    "audit_collector.cgroup.path": ("keyword", "cgroup path (v2, or v1 when v2 is the root)"),
    "audit_collector.cgroup.id": ("long", "cgroup v2 id"),
    "audit_collector.uts_hostname": ("keyword", "UTS hostname when it differs from the host's"),
    "audit_collector.namespaces.pid": ("long", "pid namespace inode"),
    "audit_collector.namespaces.pid_for_children": ("long", "pid_for_children inode"),
    "audit_collector.namespaces.mnt": ("long", "mount namespace inode"),
    "audit_collector.namespaces.net": ("long", "network namespace inode"),
    "audit_collector.namespaces.uts": ("long", "UTS namespace inode"),
    "audit_collector.namespaces.ipc": ("long", "IPC namespace inode"),
    "audit_collector.namespaces.user": ("long", "user namespace inode"),
    "audit_collector.namespaces.cgroup": ("long", "cgroup namespace inode"),
    "audit_collector.namespaces.host": ("boolean", "All namespaces equal PID 1's"),
    "audit_collector.namespaces.differ": ("keyword", "Kinds that differ from PID 1's"),
    "audit_collector.exec.syscall": ("keyword", "execve or execveat"),
    "audit_collector.exec.filename": ("keyword", "Path as passed to the syscall (the script "
                                                 "for a #! script)"),
    "audit_collector.exec.argc": ("long", "Number of arguments the program received (more "
                                          "than process.args_count when argv was cut)"),
    "audit_collector.exec.args_truncated": ("boolean", "argv was cut at the configured bound"),
    "audit_collector.exec.args_captured_bytes": ("long", "Bytes of argv captured"),
    "audit_collector.exec.args_unread": ("boolean", "argv could not be read (a failed exec "
                                                    "whose caller's argv is not resident)"),
    "audit_collector.exec.script": ("boolean", "A #! script ran: process.args and "
                                               "process.executable are its interpreter's"),
    "audit_collector.exec.escaped": ("boolean", "Some argument had non-UTF-8 bytes (escaped)"),
    "audit_collector.ns.syscall": ("keyword", "setns, unshare, clone or clone3"),
    "audit_collector.ns.flags": ("keyword", "CLONE_NEW* flags requested"),
    "audit_collector.ns.kinds": ("keyword", "Namespace kinds requested or entered"),
    "audit_collector.ns.changed": ("keyword", "Namespace kinds whose inode changed"),
    "audit_collector.ns.fd": ("long", "setns file descriptor"),
    "audit_collector.ns.child_pid": ("long", "clone: the new child's pid"),
    **{f"audit_collector.ns.{when}.{kind}": ("long", f"{kind} namespace inode {text}")
       for when, text in (("before", "before the syscall"),
                          ("after", "after it (the child's, for clone)"))
       for kind in NS_KINDS},
    "audit_collector.ns.target.container_id": ("keyword", "Container of the entered namespaces"),
    "audit_collector.ns.target.pid": ("long", "A process already in the entered namespaces"),
    "audit_collector.end.signal": ("long", "end: the signal that killed the process"),
    "audit_collector.end.core_dumped": ("boolean", "end: it dumped core"),
    "audit_collector.bash.line": ("wildcard", "The line readline returned"),
    "audit_collector.bash.line_truncated": ("boolean", "The line was cut at the bound"),
    "audit_collector.bash.line_bytes": ("long", "Bytes captured"),
    "audit_collector.bash.escaped": ("boolean", "The line had non-UTF-8 bytes (escaped)"),
    "audit_collector.lost.source": ("keyword", "ringbuf, spool or dead_letter"),
    "audit_collector.lost.reason": ("keyword", "Why: ring buffer full, spool policy, rejected"),
    "audit_collector.lost.last_chain_hash": (
        "keyword", "Chain hash of the last lost document: the prev of the next one"),
    "audit_collector.lost.exec": ("long", "Exec events lost since the last report"),
    "audit_collector.lost.namespace": ("long", "Namespace events lost since the last report"),
    "audit_collector.lost.bash": ("long", "Bash events lost since the last report"),
    "audit_collector.lost.fork": ("long", "Fork events lost since the last report"),
    "audit_collector.lost.exit": ("long", "End events lost since the last report"),
    "audit_collector.lost.documents": ("long", "Documents dropped by the spool policy"),
    "audit_collector.lost.first_sequence": ("long", "First dropped sequence (spool drops)"),
    "audit_collector.lost.last_sequence": ("long", "Last dropped sequence (spool drops)"),
    "audit_collector.lost.total": ("long", "Cumulative losses of this kind since start"),
    "audit_collector.chain.prev": ("keyword", "Chain value of the previous document"),
    "audit_collector.chain.hash": ("keyword", "SHA-256(prev + canonical document bytes)"),
}

# Multi-fields, as ECS defines them: a field's `.text` sub-field for full-text search.
TEXT_MULTI_FIELD = ("text", "match_only_text")
MULTI_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    path: (TEXT_MULTI_FIELD,) for path in (
        "host.os.name", "host.os.full", "process.command_line", "process.user.name",
        "process.real_user.name", "process.entry_leader.user.name", "user.name",
        "user.effective.name", "process.previous.executable",
        *(f"process.{rel}{name}" for rel in ("", "parent.", "group_leader.",
                                              "session_leader.", "entry_leader.")
          for name in ("name", "executable", "working_directory")),
    )
}


def multi_fields(path: str) -> tuple[tuple[str, str], ...]:
    """(name, mapping type) of the sub-fields of `path`, e.g. (("text", "match_only_text"),)."""
    return MULTI_FIELDS.get(path, ())
