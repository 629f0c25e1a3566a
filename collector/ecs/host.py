"""Facts about the host that every document carries: names, machine id, boot id, OS."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class OsRelease:
    """What /etc/os-release says (the ECS host.os.* fields other agents fill from it)."""

    name: str = ""  # NAME: "Debian GNU/Linux"
    full: str = ""  # PRETTY_NAME: "Debian GNU/Linux 12 (bookworm)"
    version: str = ""  # VERSION_ID: "12"
    family: str = ""  # first of ID_LIKE, else ID: "debian"
    platform: str = ""  # ID: "debian"

    def ecs(self) -> dict[str, str]:
        values = {"name": self.name, "full": self.full, "version": self.version,
                  "family": self.family, "platform": self.platform}
        return {k: v for k, v in values.items() if v}


@dataclass(frozen=True)
class HostInfo:
    name: str  # host.name: the configured name, else the kernel's hostname
    id: str  # /etc/machine-id
    boot_id: str  # /proc/sys/kernel/random/boot_id, dashes removed (document ids use it)
    kernel: str
    architecture: str
    hostname: str = ""  # the kernel's hostname (host.hostname); "" means `name`
    boot_uuid: str = ""  # the boot id as the kernel writes it (host.boot.id); "" means boot_id
    os: OsRelease = field(default_factory=OsRelease)

    def ecs(self) -> dict[str, object]:
        return {
            "name": self.name,
            "hostname": self.hostname or self.name,
            "id": self.id,
            "boot": {"id": self.boot_uuid or self.boot_id},
            "architecture": self.architecture,
            "os": {"kernel": self.kernel, "type": "linux", **self.os.ecs()},
        }


def _read_first_line(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def parse_os_release(text: str) -> OsRelease:
    """os-release(5): KEY=value lines, values optionally quoted."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    like = values.get("ID_LIKE", "").split()
    return OsRelease(name=values.get("NAME", ""), full=values.get("PRETTY_NAME", ""),
                     version=values.get("VERSION_ID", ""),
                     family=like[0] if like else values.get("ID", ""),
                     platform=values.get("ID", ""))


def read_os_release() -> OsRelease:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            return parse_os_release(Path(path).read_text())
        except OSError:
            continue
    return OsRelease()


def detect_host(name_override: str | None = None) -> HostInfo:
    machine_id = _read_first_line("/etc/machine-id") or _read_first_line(
        "/var/lib/dbus/machine-id"
    )
    boot_uuid = _read_first_line("/proc/sys/kernel/random/boot_id")
    boot_id = boot_uuid.replace("-", "")
    uname = os.uname()
    hostname = socket.gethostname()
    return HostInfo(
        name=name_override or hostname,
        # Without a machine id, fall back to the boot id so documents stay attributable.
        id=machine_id or f"boot-{boot_id}",
        boot_id=boot_id,
        kernel=uname.release,
        architecture=uname.machine,
        hostname=hostname,
        boot_uuid=boot_uuid,
        os=read_os_release(),
    )
