"""Context that the kernel record does not carry: names, paths, containers, wall-clock time.

`Enrichment` hands documents ready-made ECS sub-objects and is the one cache of the
document path: an exec storm repeats the same users, cgroups and namespaces thousands of
times a second, so each sub-object is built once and shared. The lookups beneath it
(NameCache, CgroupPaths, ProcView, NamespaceOwners) answer its misses; each takes its
source as a parameter (passwd, the cgroup tree, /proc, the clocks), so tests can fix them.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.capture.hostns import HostNamespaces
from collector.capture.records import Who

Doc = dict[str, Any]

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

    def now_ns(self) -> int:
        return time.time_ns()


# Formatted seconds: a document names several moments (now, its process's start, its
# relatives'), so one remembered second would be formatted again at every other call.
_SECONDS_KEPT = 256
_formatted_seconds: dict[int, str] = {}


def iso_utc_ns(wall_ns: int) -> str:
    """RFC 3339 with nanoseconds, the precision Elasticsearch's date_nanos keeps."""
    seconds, nanos = divmod(wall_ns, 1_000_000_000)
    prefix = _formatted_seconds.get(seconds)
    if prefix is None:
        if len(_formatted_seconds) >= _SECONDS_KEPT:
            _formatted_seconds.clear()
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _formatted_seconds[seconds] = prefix
    return f"{prefix}.{nanos:09d}Z"


# --------------------------------------------------------------------------- names


def _passwd_name(uid: int) -> str:
    return pwd.getpwuid(uid).pw_name


def _group_name(gid: int) -> str:
    return grp.getgrgid(gid).gr_name


class NameCache:
    """uid/gid -> name from the host's passwd/group (or the lookups given, which raise
    KeyError for an unknown id); negative results are asked again after a while."""

    NEGATIVE_TTL_S = 30.0

    def __init__(self, user_lookup: Callable[[int], str] = _passwd_name,
                 group_lookup: Callable[[int], str] = _group_name) -> None:
        self._users: dict[int, tuple[str | None, float]] = {}
        self._groups: dict[int, tuple[str | None, float]] = {}
        self._user_lookup = user_lookup
        self._group_lookup = group_lookup

    def user(self, uid: int) -> str | None:
        return self._lookup(self._users, uid, self._user_lookup)

    def group(self, gid: int) -> str | None:
        return self._lookup(self._groups, gid, self._group_lookup)

    def _lookup(self, cache: dict[int, tuple[str | None, float]], key: int,
                fetch: Callable[[int], str]) -> str | None:
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

    def __init__(self, mount: str, scan: Callable[[str], dict[int, str]] | None = None) -> None:
        self.mount = mount
        self._scan_tree = scan or scan_cgroup_tree
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
        self._paths.update(self._scan_tree(self.mount))

    @staticmethod
    def resolved(path: str) -> bool:
        """False for the ".../leaf" stand-in of a cgroup not found (yet)."""
        return not path.startswith("...")


def scan_cgroup_tree(mount: str) -> dict[int, str]:
    """kernfs id (a directory's inode number) -> path below the mount, for every cgroup."""
    root = Path(mount)
    try:
        paths = {root.stat().st_ino: "/"}
    except OSError:
        return {}
    for dirpath, dirnames, _files in os.walk(root):
        for name in dirnames:
            full = os.path.join(dirpath, name)
            try:
                paths[os.stat(full).st_ino] = "/" + os.path.relpath(full, root)
            except OSError:
                continue
    return paths


# --------------------------------------------------------------------------- /proc


def _container_of_cgroup_file(text: str) -> Container | None:
    for line in text.splitlines():
        container = container_from_cgroup(line.split(":", 2)[-1])
        if container:
            return container
    return None


class ProcView:
    """What /proc says about live processes: the only place enrichment reads it."""

    def __init__(self, root: str = "/proc") -> None:
        self.root = root

    def exe(self, pid: int) -> str | None:
        try:
            return os.readlink(f"{self.root}/{pid}/exe")
        except OSError:
            return None

    def in_namespace(self, pid: int, kind: str, inode: int) -> bool:
        try:
            return os.stat(f"{self.root}/{pid}/ns/{kind}").st_ino == inode
        except OSError:
            return False

    def find_in_namespace(self, kind: str, inode: int,
                          besides: int = 0) -> tuple[int, Container | None] | None:
        """A live process in that namespace other than `besides`, and the container its
        cgroup names."""
        for entry in os.scandir(self.root):
            if not entry.name.isdigit() or int(entry.name) == besides:
                continue
            try:
                if os.stat(f"{self.root}/{entry.name}/ns/{kind}").st_ino != inode:
                    continue
                cgroups = Path(f"{self.root}/{entry.name}/cgroup").read_text()
            except OSError:
                continue
            return int(entry.name), _container_of_cgroup_file(cgroups)
        return None


# --------------------------------------------------------------------------- namespaces


class NamespaceOwners:
    """Which container owns a namespace inode, learned from events and, on a miss, /proc."""

    def __init__(self, host: HostNamespaces, proc: ProcView | None = None) -> None:
        self.host = host
        self.proc = proc or ProcView()
        self._owner: dict[tuple[str, int], tuple[int, Container | None]] = {}

    def learn(self, kind: str, inode: int, pid: int, container: Container | None) -> None:
        if inode and inode != self.host.inodes.get(kind):
            self._owner[(kind, inode)] = (pid, container)

    def owner(self, kind: str, inode: int,
              besides: int = 0) -> tuple[int, Container | None] | None:
        """A process in that namespace (other than `besides`, the one asking: a setns
        caller is in the namespace it entered by the time its event is built)."""
        if not inode or inode == self.host.inodes.get(kind):
            return None
        hit = self._owner.get((kind, inode))
        if hit is not None and hit[0] == besides:
            hit = None
        if hit is not None and self.proc.in_namespace(hit[0], kind, inode):
            return hit
        # Unknown, or the process we learned it from is gone: find a live one.
        found = self.proc.find_in_namespace(kind, inode, besides)
        if found is not None:
            container = found[1] or (hit[1] if hit else None)
            found = (found[0], container)
            self._owner[(kind, inode)] = found
        return found or hit


# --------------------------------------------------------------------------- sub-objects

CACHE_LIMIT = 4096
# Namespace kinds whose owner (a pid, a container) setns targets are named by.
OWNED_KINDS = ("mnt", "pid", "net", "uts", "ipc")


def _named(ident: int, name: str | None) -> Doc:
    return {"id": str(ident), "name": name} if name is not None else {"id": str(ident)}


def _container_doc(container: Container | None) -> Doc | None:
    if container is None:
        return None
    return {"id": container.id, "runtime": container.runtime}


class _Shared:
    """Sub-objects by key. Final ones are kept (bounded); provisional ones (a name or a
    cgroup path not found yet) are reused for `retry_s`, then built again, so a user or a
    cgroup that appears later gets its name."""

    def __init__(self, retry_s: float = 0.0) -> None:
        self.retry_s = retry_s
        self._final: dict[Any, Any] = {}
        self._provisional: dict[Any, tuple[Any, float]] = {}

    def get(self, key: Any) -> Any:
        hit = self._final.get(key)
        if hit is not None or not self._provisional:
            return hit
        maybe = self._provisional.get(key)
        if maybe is not None and time.monotonic() < maybe[1]:
            return maybe[0]
        return None

    def put(self, key: Any, value: Any, final: bool = True) -> None:
        if final:
            _remember(self._final, key, value)
        else:
            _remember(self._provisional, key, (value, time.monotonic() + self.retry_s))


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= CACHE_LIMIT:
        cache.clear()  # simple and bounded; refilling is cheap
    cache[key] = value


@dataclass
class Enrichment:
    """ECS sub-objects for what the record does not carry, built once and shared
    (read-only) by documents once final; provisional ones are rebuilt after a while."""

    host_ns: HostNamespaces
    cgroups: CgroupPaths
    clock: WallClock
    names: NameCache
    owners: NamespaceOwners
    proc: ProcView = field(default_factory=ProcView)

    @classmethod
    def of_host(cls, host_ns: HostNamespaces, cgroup_mount: str) -> Enrichment:
        """This host's own sources: passwd, the cgroup tree at `cgroup_mount`, /proc."""
        proc = ProcView()
        return cls(host_ns, CgroupPaths(cgroup_mount), WallClock(), NameCache(),
                   NamespaceOwners(host_ns, proc), proc)

    def __post_init__(self) -> None:
        self._cgroups = _Shared(CgroupPaths.RESCAN_INTERVAL_S)
        self._namespaces = _Shared()
        self._users = _Shared(NameCache.NEGATIVE_TTL_S)
        self._user_pairs = _Shared(NameCache.NEGATIVE_TTL_S)
        self._groups = _Shared(NameCache.NEGATIVE_TTL_S)

    # -- time

    def timestamp(self, ktime_ns: int) -> str:
        return iso_utc_ns(self.clock.to_wall_ns(ktime_ns))

    def created(self) -> str:
        return iso_utc_ns(self.clock.now_ns())

    # -- who and where

    def cgroup(self, who: Who) -> tuple[Doc, Doc | None]:
        """(audit_collector.cgroup, container) of the event's cgroup."""
        hit = self._cgroups.get(who.cgroup_id)
        if hit is not None:
            return hit
        leaf = who.cgroup_name.decode("utf-8", "replace")
        path = self.cgroups.path(who.cgroup_id, leaf)
        found = container_from_cgroup(path) or container_from_cgroup("/" + leaf)
        result = ({"path": path, "id": who.cgroup_id}, _container_doc(found))
        self._cgroups.put(who.cgroup_id, result, final=CgroupPaths.resolved(path))
        return result

    def namespaces(self, who: Who, container: Doc | None) -> Doc:
        """audit_collector.namespaces; a first sight also teaches the owners who is there."""
        hit = self._namespaces.get(who.ns)
        if hit is not None:
            return hit
        inodes = who.namespaces
        differ = self.host_ns.differing(inodes)
        ns: Doc = {k: v for k, v in inodes.items() if v}
        ns["host"] = not differ
        if differ:
            ns["differ"] = differ
        found = Container(container["id"], container["runtime"]) if container else None
        for kind in OWNED_KINDS:
            self.owners.learn(kind, inodes.get(kind, 0), who.pid, found)
        self._namespaces.put(who.ns, ns)
        return ns

    def user(self, uid: int) -> Doc:
        """{id, name} of a uid (shared; the name is looked up again while unknown)."""
        hit = self._users.get(uid)
        if hit is None:
            hit = _named(uid, self.names.user(uid))
            self._users.put(uid, hit, final="name" in hit)
        return hit

    def users(self, who: Who) -> Doc:
        """ECS `user`: the real user with the effective one beside it."""
        key = (who.uid, who.euid)
        hit = self._user_pairs.get(key)
        if hit is None:
            real, effective = self.user(who.uid), self.user(who.euid)
            hit = {**real, "effective": effective}
            self._user_pairs.put(key, hit, final="name" in real and "name" in effective)
        return hit

    def group(self, gid: int) -> Doc:
        hit = self._groups.get(gid)
        if hit is None:
            hit = _named(gid, self.names.group(gid))
            self._groups.put(gid, hit, final="name" in hit)
        return hit

    # -- what ran, what was entered

    def executable(self, pid: int, filename: str) -> str:
        """An absolute path for the program: the syscall's own when absolute, else /proc."""
        if filename.startswith("/"):
            return filename
        return self.proc.exe(pid) or filename

    def setns_target(self, after: dict[str, int], changed: list[str],
                     caller: int) -> Doc | None:
        """Who was already in the namespaces a setns entered: {pid, container_id}."""
        for kind in ("mnt", "pid_for_children", "net", "uts", "ipc"):
            if kind not in changed:
                continue
            owner = self.owners.owner("pid" if kind == "pid_for_children" else kind,
                                      after[kind], besides=caller)
            if owner:
                pid, container = owner
                return {"pid": pid, "container_id": container.id if container else None}
        return None
