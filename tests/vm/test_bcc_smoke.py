"""bcc_smoke.py on this machine's own kernel and BCC (make vm-test runs it first: the
guest-side script and the record comparison it relies on must work here)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from collector.capture.probes import build_program
from collector.capture.settings import CaptureConfig
from tests.vm.bcc_smoke import GUEST_SCRIPT, compare_records
from tests.vm.proc_compare import PROBE_SCRIPT

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(os.environ.get("AC_VM_TEST") != "1",
                       reason="loads BPF programs for the VM test: run with `make vm-test`"),
    pytest.mark.skipif(os.geteuid() != 0, reason="loading BPF programs needs root"),
]


def test_smoke_script_matches_proc_on_this_kernel(tmp_path: Path) -> None:
    spec = build_program(CaptureConfig())
    (tmp_path / "spec.json").write_text(json.dumps({"text": spec.text, "cflags": spec.cflags}))
    (tmp_path / "smoke.py").write_text(GUEST_SCRIPT)
    (tmp_path / "probe.py").write_text(PROBE_SCRIPT)
    out = subprocess.run(["/usr/bin/python3", str(tmp_path / "smoke.py"),
                          str(tmp_path / "spec.json"), str(tmp_path / "probe.py")],
                         check=True, capture_output=True, text=True, timeout=300).stdout
    report = json.loads(out.splitlines()[-1])
    assert report["stage"] == "done", report.get("error")
    assert report["records"] >= 5
    result = compare_records(report)
    assert len(result) == 2 and all(v == {} for v in result.values()), result
