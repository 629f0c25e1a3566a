"""The host's namespace inodes: PID 1's, which every event is compared with.

Some sandboxes forbid reading /proc/1/ns (ptrace access checks); then the collector's own
namespaces stand in, which is right when it runs on the host as it should.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from collector.capture.families import NS_KINDS


@dataclass(frozen=True)
class HostNamespaces:
    inodes: dict[str, int]
    source: str  # "pid 1" or "collector (pid 1 unreadable)"

    def differing(self, inodes: dict[str, int]) -> list[str]:
        """Kinds (except pid_for_children) whose inode is not the host's."""
        return [k for k in NS_KINDS if k != "pid_for_children"
                and inodes.get(k) and self.inodes.get(k) and inodes[k] != self.inodes[k]]


def _read(pid: int | str) -> dict[str, int]:
    inodes = {}
    for kind in NS_KINDS:
        try:
            inodes[kind] = os.stat(f"/proc/{pid}/ns/{kind}").st_ino
        except FileNotFoundError:
            continue  # e.g. no cgroup namespaces on this kernel
    return inodes


def detect_host_namespaces() -> HostNamespaces:
    try:
        return HostNamespaces(_read(1), "pid 1")
    except PermissionError:
        return HostNamespaces(_read("self"), "collector (pid 1 unreadable)")
