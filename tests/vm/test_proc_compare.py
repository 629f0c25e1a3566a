"""The /proc comparison helper of the VM test, on this machine's own /proc (no VM)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.vm.proc_compare import (
    PROBE_SCRIPT,
    compare,
    expected_fields,
    parse_probe_output,
    tty_device,
    tty_name_from_device,
)


def test_tty_device_decodes_new_encode_dev() -> None:
    assert tty_device(0) is None
    assert tty_device((136 << 8) | 3) == (136, 3)
    # minor 300 = 0x12c: low byte in bits 0-7, the rest from bit 20 (shifted 12)
    assert tty_device((136 << 8) | 0x2C | (0x100 << 12)) == (136, 300)
    assert tty_name_from_device(136, 3) == "pts/3"
    assert tty_name_from_device(137, 4) == "pts/260"
    assert tty_name_from_device(4, 1) == "tty1"
    assert tty_name_from_device(4, 64) == "ttyS0"


def test_probe_reads_a_running_process(tmp_path: Path) -> None:
    exe = tmp_path / "ac-proc-probe-sleep"
    shutil.copy2("/bin/sleep", exe)
    child = subprocess.Popen([str(exe), "30"], stdin=subprocess.DEVNULL)
    try:
        # Wait until the child has exec'd (its exe link names the copy).
        for _ in range(200):
            try:
                if os.readlink(f"/proc/{child.pid}/exe") == str(exe):
                    break
            except OSError:
                pass
            subprocess.run(["sleep", "0.01"], check=True)
        out = subprocess.run([sys.executable, "-c", PROBE_SCRIPT, str(exe)], check=True,
                             capture_output=True, text=True).stdout
    finally:
        child.kill()
        child.wait()
    found = parse_probe_output("sudo: noise\n" + out)
    (proc,) = found[str(exe)]
    want = expected_fields(proc)
    assert want["process.pid"] == child.pid
    assert want["process.parent.pid"] == os.getpid()
    assert want["process.name"] == exe.name[:15]
    assert want["user.id"] == str(os.getuid())
    assert want["audit_collector.namespaces.mnt"] == os.stat("/proc/self/ns/mnt").st_ino
    assert want["process.vpid"] == child.pid  # same pid namespace as this test
    # The controlling terminal is inherited (stdin does not matter): the test runner's.
    own_tty_nr = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[4])
    assert want["process.interactive"] is (own_tty_nr != 0)


def test_compare_names_each_differing_field() -> None:
    proc = {"pid": 10, "ppid": 1, "tty_nr": (136 << 8) | 2, "comm": "sleep", "uid": 1000,
            "euid": 1000, "gid": 1000, "nspid": [10], "loginuid": 1000, "sessionid": 4,
            "ns": {"uts": 4026531838, "mnt": 4026531841}, "fd0": "/dev/pts/2",
            "cgroup": "0::/user.slice\n"}
    doc = {
        "process": {"pid": 10, "vpid": 10, "parent": {"pid": 1}, "name": "sleep",
                    "interactive": True, "tty": {"char_device": {"major": 136, "minor": 2}}},
        "user": {"id": "1000", "effective": {"id": "1000"}},
        "group": {"id": "1000"},
        "audit_collector": {"session_id": 4, "login_user": {"id": "1000"},
                            "tty": {"name": "pts/2"},
                            "namespaces": {"uts": 4026531838, "mnt": 4026531841},
                            "cgroup": {"path": "/user.slice"}},
    }
    assert compare(doc, proc) == {}
    doc["process"]["parent"]["pid"] = 2
    del doc["audit_collector"]["login_user"]
    doc["audit_collector"]["namespaces"]["mnt"] = 1
    assert compare(doc, proc) == {
        "process.parent.pid": (2, 1),
        "audit_collector.login_user.id": (None, "1000"),
        "audit_collector.namespaces.mnt": (1, 4026531841),
    }
    # Unset login uid and session id: the document must omit them.
    doc["audit_collector"]["login_user"] = {"id": "1000"}
    unset = {**proc, "loginuid": 4294967295, "sessionid": 4294967295}
    assert set(compare(doc, unset)) >= {"audit_collector.login_user.id",
                                        "audit_collector.session_id"}


@pytest.mark.parametrize("junk", ["", "no json here\n"])
def test_probe_output_without_json_is_an_error(junk: str) -> None:
    with pytest.raises(ValueError, match="no JSON"):
        parse_probe_output(junk)
