"""Compile, load and run the collector's BPF programs with a guest's own BCC.

The collector itself may not run on a release yet (Debian 11's Python 3.9); its BPF side
can still be tried there: the program text and the -D constants (struct offsets from that
release's kernel BTF, as `release_facts.py` extracts it) are built here, on the
controller, and GUEST_SCRIPT (Python 3.9+, standard library and the guest's `bcc`)
compiles them with the guest's BCC and LLVM, lets the verifier load them, attaches the
tracepoints and bash's readline uretprobe, opens the ring buffer, execs /bin/true a few
times and counts the records that come back. It then runs the two processes of the fleet
test's /proc comparison (a plain one and one in new namespaces), reads /proc for them
(proc_compare.PROBE_SCRIPT) and returns the raw records; `compare_records` decodes them
with the collector's decoder here and compares with /proc, as the VM test does with the
documents.

    .venv/bin/python -m tests.vm.bcc_smoke spec SUITE >spec.json   # on the controller
    sudo python3 smoke.py spec.json probe.py >report.json          # in the guest, as root
    .venv/bin/python -m tests.vm.bcc_smoke compare report.json     # on the controller
"""

from __future__ import annotations

import base64
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from collector.capture.probes import build_program
from collector.capture.records import ExecEvent, Who, decode
from collector.capture.settings import CaptureConfig
from collector.ecs.enrichment import tty_display_name
from tests.vm.proc_compare import compare
from tests.vm.release_facts import CACHE, btf_section, deb_members, vmlinux_from_vmlinuz

GUEST_SCRIPT = r'''
import base64, ctypes, json, os, shutil, subprocess, sys, time
spec = json.load(open(sys.argv[1]))
probe = sys.argv[2]
report = {"stage": "import"}
try:
    import bcc
    report["bcc"] = getattr(bcc, "__version__", "?")
    report["stage"] = "compile+load"
    started = time.monotonic()
    b = bcc.BPF(text=spec["text"].encode(), cflags=spec["cflags"])
    report["load_s"] = round(time.monotonic() - started, 1)
    report["stage"] = "uretprobe"
    b.attach_uretprobe(name=b"/bin/bash", sym=b"readline", fn_name=b"on_readline_return")
    records = []
    def on_record(_ctx, data, size):
        records.append(ctypes.string_at(data, size))
        return 0
    report["stage"] = "ring buffer"
    b[b"events"].open_ring_buffer(on_record)
    for _ in range(5):
        subprocess.run(["/bin/true"])
    deadline = time.monotonic() + 10
    while len(records) < 5 and time.monotonic() < deadline:
        b.ring_buffer_poll(100)
        b.ring_buffer_consume()
    report["records"] = len(records)
    report["stage"] = "/proc comparison"
    plain, nsed = "/tmp/ac-smoke-%d" % os.getpid(), "/tmp/ac-smokens-%d" % os.getpid()
    for path in (plain, nsed):
        shutil.copy("/bin/sleep", path)
    procs = [subprocess.Popen([plain, "20"]),
             subprocess.Popen(["unshare", "--uts", "--ipc", "--net", "--mount", "--pid",
                               "--cgroup", "--user", "--map-root-user", "--fork",
                               "--kill-child", nsed, "20"])]
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        b.ring_buffer_poll(100)
        b.ring_buffer_consume()
    report["proc"] = json.loads(subprocess.run([sys.executable, probe, plain, nsed],
                                               stdout=subprocess.PIPE).stdout)
    for p in procs:
        p.kill()
    report["raw"] = [base64.b64encode(r).decode() for r in records]
    lost = b[b"lost"]
    report["lost"] = [int(sum(lost[ctypes.c_int(i)])) for i in range(3)]
    report["stage"] = "done"
except Exception as exc:
    report["error"] = "%s: %s" % (type(exc).__name__, str(exc)[-3000:])
print(json.dumps(report))
'''


def kernel_btf_file(suite: str, directory: Path) -> Path:
    """The .BTF of the suite's kernel image (downloaded by release_facts.py)."""
    debs = sorted((CACHE / suite / "debs").glob("linux-image-*.deb"))
    if not debs:
        raise SystemExit(f"no kernel image of {suite}: run python -m tests.vm.release_facts "
                         f"{suite} first")
    files = deb_members(debs[-1])
    vmlinuz = next(v for k, v in files.items() if k.startswith("boot/vmlinuz-"))
    path = directory / f"{suite}.btf"
    path.write_bytes(btf_section(vmlinux_from_vmlinuz(vmlinuz)))
    return path


def program_spec(suite: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        spec = build_program(CaptureConfig(), btf_path=str(kernel_btf_file(suite, Path(tmp))))
    return {"text": spec.text, "cflags": spec.cflags, "families": list(spec.families)}


def who_fields(who: Who) -> dict[str, Any]:
    """The identity fields of a decoded record under their document names (the part of
    the documents that the BPF side alone determines)."""
    doc: dict[str, Any] = {
        "process": {"pid": who.pid, "parent": {"pid": who.ppid},
                    "name": who.comm.decode("utf-8", "backslashreplace"),
                    "interactive": who.tty is not None, "vpid": who.vpid},
        "user": {"id": str(who.uid), "effective": {"id": str(who.euid)}},
        "group": {"id": str(who.gid)},
        "audit_collector": {"namespaces": {k: v for k, v in who.namespaces.items() if v}},
    }
    if who.auid is not None:
        doc["audit_collector"]["login_user"] = {"id": str(who.auid)}
    if who.sessionid is not None:
        doc["audit_collector"]["session_id"] = who.sessionid
    if who.tty:
        doc["process"]["tty"] = {"char_device": {"major": who.tty[1], "minor": who.tty[2]}}
        doc["audit_collector"]["tty"] = {"name": tty_display_name(who.tty[0])}
    return doc


def compare_records(report: dict[str, Any]) -> dict[str, Any]:
    """{path: differences} for each probed process's exec record ({} = all equal)."""
    events = [decode(base64.b64decode(r)) for r in report.get("raw", [])]
    execs = [e for e in events if isinstance(e, ExecEvent) and e.retval == 0]
    result: dict[str, Any] = {}
    for path, procs in report.get("proc", {}).items():
        mine = [e for e in execs if e.args[:1] == [path.encode()]]
        if len(mine) != 1 or len(procs) != 1:
            result[path] = f"{len(mine)} exec records, {len(procs)} processes"
            continue
        diff = compare(who_fields(mine[0].who), procs[0])
        diff.pop("audit_collector.cgroup.path", None)  # resolved in user space, not here
        result[path] = diff
    return result


def main(argv: list[str]) -> int:
    if argv[:1] == ["spec"] and len(argv) == 2:
        json.dump(program_spec(argv[1]), sys.stdout)
        return 0
    if argv[:1] == ["compare"] and len(argv) == 2:
        report = json.loads(Path(argv[1]).read_text())
        result = compare_records(report)
        summary = {k: v for k, v in report.items() if k not in ("raw", "proc")}
        print(json.dumps({"summary": summary, "differences": result}, indent=1))
        return 0 if all(v == {} for v in result.values()) and result else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
