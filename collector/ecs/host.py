"""Facts about the host that every document carries: name, machine id, boot id."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HostInfo:
    name: str
    id: str  # /etc/machine-id
    boot_id: str  # /proc/sys/kernel/random/boot_id, dashes removed
    kernel: str
    architecture: str

    def ecs(self) -> dict[str, object]:
        return {
            "name": self.name,
            "hostname": self.name,
            "id": self.id,
            "boot": {"id": self.boot_id},
            "architecture": self.architecture,
            "os": {"kernel": self.kernel, "type": "linux"},
        }


def _read_first_line(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def detect_host(name_override: str | None = None) -> HostInfo:
    machine_id = _read_first_line("/etc/machine-id") or _read_first_line(
        "/var/lib/dbus/machine-id"
    )
    boot_id = _read_first_line("/proc/sys/kernel/random/boot_id").replace("-", "")
    uname = os.uname()
    return HostInfo(
        name=name_override or socket.gethostname(),
        # Without a machine id, fall back to the boot id so documents stay attributable.
        id=machine_id or f"boot-{boot_id}",
        boot_id=boot_id,
        kernel=uname.release,
        architecture=uname.machine,
    )
