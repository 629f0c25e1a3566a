"""Realistic exec documents, built by the collector's own DocumentBuilder and Sealer.

The events imitate what the probes deliver on this host (its namespaces, its cgroup, its
hostname) for a handful of everyday command lines; the builder adds names, paths and ECS
structure exactly as in production, and the sealer numbers and hash-chains them.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from collector.capture.families import NS_KINDS
from collector.capture.hostns import HostNamespaces, detect_host_namespaces
from collector.capture.records import ExecEvent, ExeId, Who
from collector.delivery.chain import SealedDoc, Sealer
from collector.ecs.documents import Doc, DocumentBuilder
from collector.ecs.enrichment import Enrichment
from collector.ecs.host import HostInfo, detect_host

CGROUP_MOUNT = "/sys/fs/cgroup"
COMMANDS: tuple[tuple[str, ...], ...] = (
    ("/usr/bin/git", "status", "--porcelain=v1", "--untracked-files=no"),
    ("/bin/sh", "-c", "systemctl is-active --quiet nginx && echo running"),
    ("/usr/bin/python3", "/srv/app/manage.py", "migrate", "--noinput", "--database=default"),
    ("/usr/bin/curl", "-fsS", "-m", "5", "-o", "/dev/null", "http://127.0.0.1:8080/health"),
    ("/usr/bin/ls", "-la", "--color=auto", "/var/log/nginx"),
    ("/usr/bin/apt-get", "install", "-y", "--no-install-recommends", "libssl3", "ca-certificates"),
    ("/usr/bin/ssh", "-o", "BatchMode=yes", "deploy@10.0.0.12", "uptime"),
    ("/usr/bin/tar", "-czf", "/var/backups/etc-2024-11-29.tar.gz", "/etc"),
)
POOL_SIZE = 512


def cgroup_hierarchy() -> tuple[str, str]:
    """(mount, our path in it) of the hierarchy the collector reports: v2, else v1 memory."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    wanted = ("0", "") if Path(CGROUP_MOUNT, "cgroup.controllers").exists() else ("", "memory")
    for line in lines:
        number, controllers, rel = line.split(":", 2)
        if (wanted[0] and number == wanted[0]) or (wanted[1] and wanted[1] in controllers):
            mount = CGROUP_MOUNT if wanted[0] else f"{CGROUP_MOUNT}/{wanted[1]}"
            return mount, rel
    return CGROUP_MOUNT, "/"


def _own_cgroup(mount: str, rel: str) -> tuple[int, bytes]:
    try:
        return os.stat(mount + rel).st_ino, Path(rel).name.encode()
    except OSError:
        return 1, b""


def _who(n: int, namespaces: dict[str, int], cgroup: tuple[int, bytes], comm: bytes) -> Who:
    ns = tuple(namespaces.get(kind, 0) for kind in NS_KINDS)
    interactive = n % 3 == 0
    uid = 1000 if interactive else 0
    start_ns = 10_000_000 * (100_000 + n)
    return Who(
        ktime_ns=time.monotonic_ns(), pid=20000 + n, tid=20000 + n, ppid=1500 + n % 7,
        vpid=20000 + n, start_ns=start_ns, parent_start_ns=10_000_000 * (1000 + n % 7),
        pgid=20000 + n, pgid_start_ns=start_ns, sid=1500 + n % 7,
        sid_start_ns=10_000_000 * (1000 + n % 7), uid=uid, euid=uid, gid=uid, egid=uid,
        auid=1000 if interactive else None, sessionid=3 if interactive else None,
        tty=("pts0", 136, 0) if interactive else None, ns=ns,
        comm=comm, cgroup_id=cgroup[0], cgroup_name=cgroup[1],
        uts_name=socket.gethostname().encode(),
    )


def exec_event(n: int, namespaces: dict[str, int], cgroup: tuple[int, bytes]) -> ExecEvent:
    argv = COMMANDS[n % len(COMMANDS)]
    args = [a.encode() for a in argv]
    return ExecEvent(
        who=_who(n, namespaces, cgroup, b"bash" if n % 3 == 0 else b"cron"),
        syscall="execve", retval=0, filename=args[0], args=args, argc=len(args),
        args_truncated=False, args_captured_bytes=sum(len(a) + 1 for a in args),
        args_fault=False, exe=_file_identity(argv[0]), script=False,
    )


def _file_identity(path: str) -> ExeId | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return ExeId(st.st_dev, st.st_ino, 0)


def _builder(host: HostInfo) -> tuple[DocumentBuilder, HostNamespaces, tuple[int, bytes]]:
    """The capture loop's document builder on this machine, its host namespaces and the
    cgroup events are attributed to."""
    host_ns = detect_host_namespaces()
    mount, rel = cgroup_hierarchy()
    builder = DocumentBuilder(host, Enrichment.of_host(host_ns, mount))
    return builder, host_ns, _own_cgroup(mount, rel)


def document_pool(host: HostInfo, size: int = POOL_SIZE) -> list[Doc]:
    builder, host_ns, cgroup = _builder(host)
    return [builder.build(exec_event(n, dict(host_ns.inodes), cgroup)) for n in range(size)]


class DocumentSource:
    """Sealed documents without end: the pool, cycled, each with its own sequence and _id."""

    def __init__(self, state_dir: Path, host: HostInfo | None = None) -> None:
        self.host = host or detect_host()
        self.pool = document_pool(self.host)
        self.sealer = Sealer(state_dir, self.host)
        self._next = 0

    def next(self) -> SealedDoc:
        doc = self.pool[self._next % len(self.pool)]
        self._next += 1
        return self.sealer.seal(doc)


def stage_costs(workdir: Path, count: int = 5000) -> dict[str, float]:
    """Microseconds per exec event spent in each user-space stage after decoding, measured
    in-process on realistic events (no BPF, no other load): what the capture loop pays."""
    from collector.delivery.pipeline import SPOOL_RUN_DOCS
    from collector.delivery.settings import SpoolConfig
    from collector.delivery.sinks import FileSink
    from collector.delivery.spool import Spool

    host = detect_host()
    builder, host_ns, cgroup = _builder(host)
    events = [exec_event(n, dict(host_ns.inodes), cgroup) for n in range(count)]
    sealer = Sealer(workdir / "stage-state", host)
    sink = FileSink(workdir / "stage.ndjson")
    spool = Spool(SpoolConfig(dir=str(workdir / "stage-spool")))
    timings: dict[str, float] = {}
    docs = _timed(timings, "build", lambda: [builder.build(e) for e in events])
    sealed = _timed(timings, "seal", lambda: [sealer.seal(d) for d in docs])
    _timed(timings, "file_sink_write", lambda: [sink.write(s.data) for s in sealed])
    _timed(timings, "file_sink_flush", sink.flush)
    _timed(timings, "spool_append", lambda: [spool.append(s.seq, s.id, s.data) for s in sealed])
    _timed(timings, "spool_flush_fsync", spool.flush)
    # As the pipeline hands them over: in runs of SPOOL_RUN_DOCS, one write(2) each.
    runs = Spool(SpoolConfig(dir=str(workdir / "stage-spool-runs")))
    items = [(s.seq, s.id, s.data) for s in sealed]
    _timed(timings, "spool_append_in_runs",
           lambda: [runs.append_many(items[i:i + SPOOL_RUN_DOCS])
                    for i in range(0, len(items), SPOOL_RUN_DOCS)])
    sink.close()
    spool.close()
    runs.close()
    return {stage: round(seconds * 1e6 / count, 2) for stage, seconds in timings.items()}


def _timed(timings: dict[str, float], name: str, work: Any) -> Any:
    started = time.perf_counter()
    result = work()
    timings[name] = time.perf_counter() - started
    return result
