"""Compare what the collector reported for a process with what /proc says about it.

The struct offsets come from each kernel's BTF; this is the end-to-end proof that they are
right on that kernel: a process is started in the guest, /proc is read while it runs
(PROBE_SCRIPT, run by the guest's own python3 as root), and the exec document of that
process must carry the same values.

PROBE_SCRIPT runs on every supported guest: Python 3.9+, standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

# Namespace kinds the documents report, as named under /proc/PID/ns/ and in
# audit_collector.namespaces.* (collector/fields.py).
NS_KINDS = ("pid", "pid_for_children", "mnt", "net", "uts", "ipc", "user", "cgroup")
UNSET_ID = 4294967295  # (u32)-1: loginuid/sessionid never set

# Reads /proc for every process whose executable is one of the paths in argv[1:] and
# prints one JSON object: {path: [facts, ...]}.
PROBE_SCRIPT = r'''
import json, os, sys

def read(path):
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None

def facts(pid):
    stat = read("/proc/%d/stat" % pid)
    if stat is None:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    status = dict(line.split(":", 1) for line in read("/proc/%d/status" % pid).splitlines()
                  if ":" in line)
    ns = {}
    for kind in os.listdir("/proc/%d/ns" % pid):
        try:
            ns[kind] = os.stat("/proc/%d/ns/%s" % (pid, kind)).st_ino
        except OSError:
            pass
    try:
        fd0 = os.readlink("/proc/%d/fd/0" % pid)
    except OSError:
        fd0 = None
    return {
        "pid": pid,
        "ppid": int(fields[1]),
        "tty_nr": int(fields[4]),
        "comm": read("/proc/%d/comm" % pid).rstrip("\n"),
        "uid": int(status["Uid"].split()[0]),
        "euid": int(status["Uid"].split()[1]),
        "gid": int(status["Gid"].split()[0]),
        "nspid": [int(x) for x in status.get("NSpid", "").split()],
        "loginuid": int(read("/proc/%d/loginuid" % pid) or UNSET),
        "sessionid": int(read("/proc/%d/sessionid" % pid) or UNSET),
        "ns": ns,
        "fd0": fd0,
        "cgroup": read("/proc/%d/cgroup" % pid),
    }

UNSET = 4294967295
wanted = set(sys.argv[1:])
found = {path: [] for path in wanted}
for entry in os.listdir("/proc"):
    if not entry.isdigit():
        continue
    try:
        exe = os.readlink("/proc/%s/exe" % entry)
    except OSError:
        continue
    if exe in wanted:
        info = facts(int(entry))
        if info is not None:
            found[exe].append(info)
print(json.dumps(found))
'''


def tty_device(tty_nr: int) -> tuple[int, int] | None:
    """(major, minor) of stat's tty_nr (the kernel's new_encode_dev); None for no tty."""
    if tty_nr == 0:
        return None
    major = (tty_nr >> 8) & 0xFFF
    minor = (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)
    return major, minor


def tty_name_from_device(major: int, minor: int) -> str | None:
    """The name the kernel gives a pty slave or a virtual console (the usual two)."""
    if 136 <= major <= 143:  # UNIX98 pty slaves
        return f"pts/{(major - 136) * 256 + minor}"
    if major == 4 and minor < 64:
        return f"tty{minor}"
    if major == 4:
        return f"ttyS{minor - 64}"
    return None


def cgroup_v2_path(cgroup_file: str | None) -> str | None:
    for line in (cgroup_file or "").splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def expected_fields(proc: Mapping[str, Any]) -> dict[str, Any]:
    """The document fields (dotted paths) /proc determines, with their expected values.

    A field the collector omits when unset (login uid, session id, tty) is expected absent
    (None) when /proc says unset."""
    expected: dict[str, Any] = {
        "process.pid": proc["pid"],
        "process.parent.pid": proc["ppid"],
        "process.name": proc["comm"],
        "user.id": str(proc["uid"]),
        "user.effective.id": str(proc["euid"]),
        "group.id": str(proc["gid"]),
        "audit_collector.login_user.id": None if proc["loginuid"] == UNSET_ID
        else str(proc["loginuid"]),
        "audit_collector.session_id": None if proc["sessionid"] == UNSET_ID
        else proc["sessionid"],
    }
    if proc.get("nspid"):
        expected["process.vpid"] = proc["nspid"][-1]
    device = tty_device(proc["tty_nr"])
    expected["process.interactive"] = device is not None
    expected["process.tty.char_device.major"] = device[0] if device else None
    expected["process.tty.char_device.minor"] = device[1] if device else None
    name = tty_name_from_device(*device) if device else None
    if name is not None:
        expected["audit_collector.tty.name"] = name
    for kind in NS_KINDS:
        if kind in proc["ns"]:
            expected[f"audit_collector.namespaces.{kind}"] = proc["ns"][kind]
    path = cgroup_v2_path(proc.get("cgroup"))
    if path is not None:
        expected["audit_collector.cgroup.path"] = path
    return expected


def get_path(doc: Mapping[str, Any], dotted: str) -> Any:
    value: Any = doc
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def compare(doc: Mapping[str, Any], proc: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Fields whose document value differs from /proc: {field: (document, /proc)}."""
    return {name: (get_path(doc, name), want) for name, want in expected_fields(proc).items()
            if get_path(doc, name) != want}


def parse_probe_output(stdout: str) -> dict[str, list[dict[str, Any]]]:
    """The probe's JSON line (the last line: sudo or a pty may print before it)."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise ValueError(f"no JSON in the probe's output: {stdout[-500:]!r}")
    result: dict[str, list[dict[str, Any]]] = json.loads(lines[-1])
    return result
