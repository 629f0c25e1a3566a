"""The command line on this machine: `check` tells what is there and what is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="preflight needs root")


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_check_passes_on_this_machine_and_loads_the_probes() -> None:
    result = run_cli("check", "--load")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    names = [ln.split("]")[1].split(":")[0].strip() for ln in lines if ln.startswith("[")]
    for expected in ("privileges", "BCC", "kernel BTF", "header tree", "tracefs",
                     "tracepoints (exec)", "tracepoints (namespaces)", "bash /bin/bash",
                     "probes"):
        assert expected in names, (expected, lines)
    assert all(ln.startswith("[ok  ]") for ln in lines if ln.startswith("[")), lines
    assert "offsets resolved from /sys/kernel/btf/vmlinux" in result.stdout
    assert lines[-1] == "all checks passed"


def test_check_fails_clearly_when_a_directory_is_unusable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"state_dir: {blocker}/state\noutputs: ['file:{blocker}/x/events.ndjson']\n")
    result = run_cli("check", "--config", str(cfg))
    assert result.returncode == 1
    assert f"[FAIL] state_dir: {blocker} is not a directory" in result.stdout
    assert f"[FAIL] output file:{blocker}/x/events.ndjson: {blocker} is not a directory" \
        in result.stdout
    assert "2 check(s) failed" in result.stdout
