"""Compile, load and run the collector's BPF programs with a guest's own BCC.

The collector itself may not run on a release yet (Debian 11's Python 3.9); its BPF side
can still be tried there: the program text and the -D constants (struct offsets from that
release's kernel BTF, as `release_facts.py` extracts it) are built here, on the
controller, and GUEST_SCRIPT (Python 3.9+, standard library and the guest's `bcc`)
compiles them with the guest's BCC and LLVM, lets the verifier load them, attaches the
tracepoints and bash's readline uretprobe, opens the ring buffer, execs /bin/true a few
times and counts the records that come back.

    .venv/bin/python -m tests.vm.bcc_smoke SUITE >spec.json    # on the controller
    sudo python3 - <GUEST_SCRIPT spec.json                     # in the guest (as root)
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from collector.config import CaptureConfig
from collector.probes import build_program
from tests.vm.release_facts import CACHE, btf_section, deb_members, vmlinux_from_vmlinuz

GUEST_SCRIPT = r'''
import ctypes, json, subprocess, sys, time
spec = json.load(open(sys.argv[1]))
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
        records.append(ctypes.string_at(data, size)[:4])
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


if __name__ == "__main__":
    json.dump(program_spec(sys.argv[1]), sys.stdout)
