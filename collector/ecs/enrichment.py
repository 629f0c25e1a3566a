"""Context that the kernel record does not carry: names, paths, containers, wall-clock time.

Every lookup is cached, because an exec storm repeats the same uids, cgroups and
namespaces thousands of times a second; misses are rare and may touch /proc or /sys.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import time
from dataclasses import dataclass
from pathlib import Path

from collector.capture.hostns import HostNamespaces

# --------------------------------------------------------------------------- time


class WallClock:
    """Kernel CLOCK_MONOTONIC ns -> wall-clock ns, re-synchronised to follow clock steps."""

    RESYNC_S = 5.0

    def __init__(self) -> None:
        self._offset_ns = 0
        self._synced_at = -1e9
        self.resync()

    def resync(self) -> None:
        # Bracket the realtime read with two monotonic reads to keep the error small.
        before = time.monotonic_ns()
        real = time.time_ns()
        after = time.monotonic_ns()
        self._offset_ns = real - (before + after) // 2
        self._synced_at = time.monotonic()

    def to_wall_ns(self, ktime_ns: int) -> int:
        if time.monotonic() - self._synced_at > self.RESYNC_S:
            self.resync()
        return ktime_ns + self._offset_ns


_last_second: list[object] = [None, ""]  # (second, its formatted prefix): one strftime a second


def iso_utc_ns(wall_ns: int) -> str:
    """RFC 3339 with nanoseconds, the precision Elasticsearch's date_nanos keeps."""
    seconds, nanos = divmod(wall_ns, 1_000_000_000)
    if _last_second[0] != seconds:
        _last_second[0] = seconds
        _last_second[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{_last_second[1]}.{nanos:09d}Z"


# --------------------------------------------------------------------------- names


class NameCache:
    """uid/gid -> name from the host's passwd/group, negative results cached briefly."""

    NEGATIVE_TTL_S = 30.0

    def __init__(self) -> None:
        self._users: dict[int, tuple[str | None, float]] = {}
        self._groups: dict[int, tuple[str | None, float]] = {}

    def user(self, uid: int) -> str | None:
        return self._lookup(self._users, uid, lambda i: pwd.getpwuid(i).pw_name)

    def group(self, gid: int) -> str | None:
        return self._lookup(self._groups, gid, lambda i: grp.getgrgid(i).gr_name)

    def _lookup(self, cache: dict[int, tuple[str | None, float]], key: int, fetch) -> str | None:
        hit = cache.get(key)
        now = time.monotonic()
        if hit and (hit[0] is not None or now - hit[1] < self.NEGATIVE_TTL_S):
            return hit[0]
        try:
            name: str | None = fetch(key)
        except (KeyError, OverflowError):
            name = None
        cache[key] = (name, now)
        return name


# --------------------------------------------------------------------------- tty


_TTY_RE = re.compile(r"^(pts)(\d+)$")


def tty_display_name(kernel_name: str) -> str:
    """The kernel calls /dev/pts/3 "pts3"; users know it as pts/3."""
    match = _TTY_RE.match(kernel_name)
    return f"{match.group(1)}/{match.group(2)}" if match else kernel_name


# --------------------------------------------------------------------------- containers

_HEX64 = r"[0-9a-f]{64}"
CONTAINER_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"docker-({_HEX64})\.scope"), "docker"),
    (re.compile(rf"/docker/({_HEX64})"), "docker"),
    (re.compile(rf"cri-containerd-({_HEX64})\.scope"), "containerd"),
    (re.compile(rf"crio-(?:conmon-)?({_HEX64})\.scope"), "cri-o"),
    (re.compile(rf"libpod-(?:conmon-)?({_HEX64})\.scope"), "podman"),
    (re.compile(rf"/libpod_parent/libpod-({_HEX64})"), "podman"),
    (re.compile(rf"/kubepods[^ ]*?/(?:pod[^/]+/)?({_HEX64})(?:$|/)"), "containerd"),
    (re.compile(rf"/actions_job/({_HEX64})"), "docker"),
    (re.compile(r"/lxc(?:\.payload)?[./]([^/]+)"), "lxc"),
    (re.compile(r"/machine\.slice/machine-([^/]+)\.scope"), "systemd-nspawn"),
)


@dataclass(frozen=True)
class Container:
    id: str
    runtime: str


def container_from_cgroup(path: str) -> Container | None:
    for pattern, runtime in CONTAINER_PATTERNS:
        match = pattern.search(path)
        if match:
            return Container(match.group(1), runtime)
    return None


class CgroupPaths:
    """cgroup kernfs id -> path below the reported hierarchy's mount point.

    The kernel record carries the id and the leaf name; the full path comes from walking
    the cgroup mount once per unknown id (a directory's inode number is its kernfs id).
    """

    RESCAN_INTERVAL_S = 1.0

    def __init__(self, mount: str) -> None:
        self.mount = mount
        self._paths: dict[int, str] = {}
        self._last_scan = 0.0

    def path(self, cgroup_id: int, leaf: str) -> str:
        hit = self._paths.get(cgroup_id)
        if hit is not None:
            return hit
        now = time.monotonic()
        if now - self._last_scan >= self.RESCAN_INTERVAL_S or not self._paths:
            self._last_scan = now
            self._scan()
            hit = self._paths.get(cgroup_id)
            if hit is not None:
                return hit
        # Gone already (or not scanned yet): the leaf name still identifies containers.
        return "/" if leaf in ("", "/") else f".../{leaf}"

    def _scan(self) -> None:
        root = Path(self.mount)
        try:
            self._paths[root.stat().st_ino] = "/"
        except OSError:
            return
        for dirpath, dirnames, _files in os.walk(root):
            for name in dirnames:
                full = os.path.join(dirpath, name)
                try:
                    self._paths[os.stat(full).st_ino] = "/" + os.path.relpath(full, root)
                except OSError:
                    continue


# --------------------------------------------------------------------------- namespaces


class NamespaceOwners:
    """Which container owns a namespace inode, learned from events and, on a miss, /proc."""

    def __init__(self, host: HostNamespaces) -> None:
        self.host = host
        self._owner: dict[tuple[str, int], tuple[int, Container | None]] = {}

    def learn(self, kind: str, inode: int, pid: int, container: Container | None) -> None:
        if inode and inode != self.host.inodes.get(kind):
            self._owner[(kind, inode)] = (pid, container)

    def owner(self, kind: str, inode: int) -> tuple[int, Container | None] | None:
        if not inode or inode == self.host.inodes.get(kind):
            return None
        hit = self._owner.get((kind, inode))
        if hit is not None and _in_namespace(hit[0], kind, inode):
            return hit
        # Unknown, or the process we learned it from is gone: find a live one.
        found = _scan_proc_for_namespace(kind, inode)
        if found is not None:
            container = found[1] or (hit[1] if hit else None)
            found = (found[0], container)
            self._owner[(kind, inode)] = found
        return found or hit


def _in_namespace(pid: int, kind: str, inode: int) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino == inode
    except OSError:
        return False


def _scan_proc_for_namespace(kind: str, inode: int) -> tuple[int, Container | None] | None:
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry.name}/ns/{kind}").st_ino != inode:
                continue
            cgroups = Path(f"/proc/{entry.name}/cgroup").read_text()
        except OSError:
            continue
        container = None
        for line in cgroups.splitlines():
            container = container_from_cgroup(line.split(":", 2)[-1])
            if container:
                break
        return int(entry.name), container
    return None


# --------------------------------------------------------------------------- executables


def executable_path(pid: int, filename: str) -> str:
    """An absolute path for the program: the syscall's own when absolute, else /proc."""
    if filename.startswith("/"):
        return filename
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return filename
