"""host.*: the kernel's names and boot id as other agents report them, the OS from os-release."""

from __future__ import annotations

import socket
from pathlib import Path

from collector.ecs.host import HostInfo, OsRelease, detect_host, parse_os_release

DEBIAN = '''PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
ID=debian
# a comment
HOME_URL="https://www.debian.org/"
'''
UBUNTU = ('NAME="Ubuntu"\nVERSION_ID="24.04"\nID=ubuntu\nID_LIKE=debian\n'
          'PRETTY_NAME="Ubuntu 24.04 LTS"\n')
ROCKY = 'NAME="Rocky Linux"\nVERSION_ID="9.4"\nID="rocky"\nID_LIKE="rhel centos fedora"\n'


def test_os_release_fields() -> None:
    assert parse_os_release(DEBIAN) == OsRelease(
        name="Debian GNU/Linux", full="Debian GNU/Linux 12 (bookworm)", version="12",
        family="debian", platform="debian")
    assert parse_os_release(UBUNTU).family == "debian"
    assert parse_os_release(UBUNTU).platform == "ubuntu"
    rocky = parse_os_release(ROCKY)
    assert (rocky.family, rocky.platform, rocky.full) == ("rhel", "rocky", "")
    assert "full" not in rocky.ecs()  # unknown values are left out, not empty


def test_configured_name_does_not_replace_the_kernel_hostname() -> None:
    host = detect_host("configured-name")
    ecs = host.ecs()
    assert ecs["name"] == "configured-name"
    assert ecs["hostname"] == socket.gethostname()


def test_boot_id_as_the_kernel_writes_it() -> None:
    kernel = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    host = detect_host()
    assert host.ecs()["boot"] == {"id": kernel}
    assert host.boot_id == kernel.replace("-", "")  # document ids keep the compact form
    older = HostInfo(name="h", id="m", boot_id="b00t", kernel="k", architecture="a")
    assert older.ecs()["boot"] == {"id": "b00t"} and older.ecs()["hostname"] == "h"
