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


def run_as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
         sys.executable, "-m", "collector", *args],
        capture_output=True, text=True, timeout=120, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)})


def test_without_root_run_and_check_say_what_is_missing_in_one_line() -> None:
    import tempfile

    with tempfile.TemporaryDirectory(dir="/tmp") as shared:  # readable by uid 65534
        Path(shared).chmod(0o755)
        cfg = Path(shared) / "c.yaml"
        cfg.write_text(f"state_dir: {shared}/state\nmetrics: {{enabled: false}}\n")
        cfg.chmod(0o644)
        run = run_as_nobody("run", "--config", str(cfg))
        check = run_as_nobody("check", "--config", str(cfg))
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "audit-collector: cannot run here: privileges: needs root, or CAP_BPF + CAP_PERFMON "
        "(+ CAP_SYS_ADMIN under kernel.perf_event_paranoid > 2); run as root "
        "(`audit-collector check` lists every requirement)"]
    assert check.returncode == 1
    assert "Traceback" not in check.stdout + check.stderr
    assert "[FAIL] privileges: needs root" in check.stdout


def in_private_mounts(script: str) -> subprocess.CompletedProcess[str]:
    """Run a shell script in a private mount namespace (its mounts vanish with it)."""
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-ec", script],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_run_without_tracefs_names_tracefs_not_clang(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"state_dir: {tmp_path}/state\nmetrics: {{enabled: false}}\n")
    result = in_private_mounts(
        "umount -l /sys/kernel/debug/tracing 2>/dev/null || true; "
        "umount -l /sys/kernel/tracing 2>/dev/null || true; "
        "umount -l /sys/kernel/debug 2>/dev/null || true; "
        f"exec {sys.executable} -m collector run --config {cfg}")
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "cannot run here: tracefs: not mounted: mount -t tracefs" in lines[0]


def test_run_refuses_a_read_only_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"state_dir: {state}\nmetrics: {{enabled: false}}\n")
    result = in_private_mounts(
        f"mount -t tmpfs -o ro tmpfs {state}; "
        f"exec {sys.executable} -m collector run --config {cfg}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"audit-collector: cannot run here: state_dir: {state} is not writable "
        "(`audit-collector check` lists every requirement)"]


def test_check_fails_when_the_metrics_port_is_taken(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"state_dir: {tmp_path}/state\nmetrics: {{listen: 127.0.0.1:{port}}}\n")
        result = run_cli("check", "--config", str(cfg))
    assert result.returncode == 1
    assert f"[FAIL] metrics.listen: 127.0.0.1:{port}: Address already in use" in result.stdout


SECRET = "c2VjcmV0LWtleS1kby1ub3Qtc2hvdw=="


@pytest.mark.parametrize(("content", "problem"), [
    (SECRET[:10] + "\n" + SECRET[10:], "holds a line break (at offset 10)"),
    ("\x00\xff" + SECRET, "holds a character that is not printable ASCII (at offset 0)"),
])
def test_a_bad_key_file_fails_in_one_line_that_never_shows_the_key(
    tmp_path: Path, content: str, problem: str
) -> None:
    key = tmp_path / "key"
    key.write_bytes(content.encode("latin-1"))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"state_dir: {tmp_path}/state\nmetrics: {{enabled: false}}\n"
                   f"outputs: ['elasticsearch:http://127.0.0.1:9']\n"
                   f"spool: {{dir: {tmp_path}/spool}}\n"
                   f"elasticsearch: {{api_key_file: {key}}}\n")
    for command in (["run"], ["setup"], ["verify"], ["check"]):
        result = run_cli(*command, "--config", str(cfg))
        out = result.stdout + result.stderr
        assert result.returncode != 0, (command, out)
        assert f"the API key file {key} {problem}" in out, (command, out)
        assert SECRET[:10] not in out and SECRET[10:] not in out, (command, out)
        assert "Traceback" not in out, (command, out)


def test_a_url_with_credentials_is_refused_without_echoing_them(tmp_path: Path) -> None:
    result = run_cli("run", "--output", "elasticsearch:http://elastic:hunter2@127.0.0.1:99999")
    assert result.returncode == 2
    assert "hunter2" not in result.stdout + result.stderr
    assert "credentials in the URL are not accepted" in result.stderr


def test_check_fails_when_dead_letters_could_not_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"state_dir: {tmp_path}/state\nmetrics: {{enabled: false}}\n"
                   f"outputs: ['elasticsearch:http://127.0.0.1:9']\n"
                   f"spool: {{dir: {tmp_path}/spool}}\n"
                   f"elasticsearch: {{dead_letter_file: {blocker}/dl.ndjson}}\n")
    result = run_cli("check", "--config", str(cfg))
    assert result.returncode == 1
    assert f"[FAIL] elasticsearch.dead_letter_file: {blocker} is not a directory" \
        in result.stdout, result.stdout
