"""The command line on this machine: `check` tells what is there and what is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

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


def _privileges_as_nobody(*caps: str) -> str:
    """check_privileges() in a real process as uid 65534 holding only the given caps."""
    wanted = ",".join(["-all", *(f"+{c}" for c in caps)])
    code = "from collector.preflight import check_privileges; print(check_privileges().line())"
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         f"--inh-caps={wanted}", f"--ambient-caps={wanted}", sys.executable, "-c", code],
        capture_output=True, text=True, check=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    return proc.stdout.strip()


def test_privileges_are_judged_from_real_capabilities_and_perf_event_paranoid() -> None:
    from collector.preflight import CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, check_privileges

    assert _privileges_as_nobody().startswith("[FAIL] privileges: needs root")
    paranoid = int(Path("/proc/sys/kernel/perf_event_paranoid").read_text())
    bpf_only = _privileges_as_nobody("bpf", "perfmon")
    if paranoid > 2:
        assert "also requires CAP_SYS_ADMIN" in bpf_only
    else:
        assert bpf_only.startswith("[ok  ]") and f"perf_event_paranoid={paranoid}" in bpf_only
    # Debian's level 3, whatever this kernel is set to:
    debian = check_privileges(caps=1 << CAP_BPF | 1 << CAP_PERFMON, paranoid=3)
    assert not debian.ok and "kernel.perf_event_paranoid=3" in debian.detail
    assert check_privileges(caps=1 << CAP_SYS_ADMIN, paranoid=3).ok
