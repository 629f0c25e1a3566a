"""The contenders of bench.exec_storm: nothing, auditd, a plain BCC tracer, the collector.

Each tracer starts and stops itself, says which processes its CPU and memory are taken
from, and counts how many of a load's execs (those carrying the load's marker argument)
reached its output.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from bench.esserver import ESServer
from bench.loadgen import PROGRAM
from bench.outputs import LineCounter, tail_text
from bench.procstat import pids_by_comm

ROOT = Path(__file__).resolve().parent.parent
COLLECTOR = ROOT / ".venv" / "bin" / "audit-collector"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 60.0


class Unavailable(RuntimeError):
    """This tracer cannot run here; the message says why."""


class Recorder(ABC):
    """How many execs of one load a tracer has recorded so far."""

    @abstractmethod
    def recorded(self) -> int: ...


class FileRecorder(Recorder):
    def __init__(self, path: Path, pattern: bytes | tuple[bytes, ...],
                 line_prefix: bytes = b"") -> None:
        self._counter = LineCounter(path, {"hit": pattern}, line_prefix=line_prefix)

    def recorded(self) -> int:
        return self._counter.poll()["hit"]


@dataclass
class Tracer(ABC):
    """One contender; `name` is its key in the results."""

    name: str
    label: str
    workdir: Path
    startup_s: float | None = None
    notes: list[str] = field(default_factory=list)
    # How long the output may stay unchanged before we stop waiting for missing events.
    quiet_s: float = 2.0

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    def cpu_pids(self) -> list[int]:
        """Processes whose CPU time is the tracer's cost."""
        return []

    def memory_pid(self) -> int | None:
        return None

    def bpf_pid(self) -> int | None:
        """The process holding the tracer's BPF programs and maps."""
        return None

    def capture_thread_pid(self) -> int | None:
        """A process whose main thread alone handles the records (its CPU is reported
        apart from its other threads': the collector's shipper and spool syncer)."""
        return None

    def side_pids(self) -> dict[str, list[int]]:
        """Other processes the scenario needs whose CPU is reported, not charged."""
        return {}

    def recorder(self, marker: str) -> Recorder | None:
        """None: this contender records nothing (the baseline)."""
        return None

    def counters(self) -> dict[str, float]:
        """Cumulative loss counters the tracer reports about itself."""
        return {}

    def still_pending(self) -> bool:
        """Whether the tracer says it still holds undelivered events (late, not lost)."""
        return False


class OwnProcessTracer(Tracer):
    """A tracer that is one child process of ours: its CPU, memory and BPF programs."""

    _proc: subprocess.Popen[bytes] | None = None

    def cpu_pids(self) -> list[int]:
        return [self._proc.pid] if self._proc else []

    def memory_pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def bpf_pid(self) -> int | None:
        return self.memory_pid()


# --------------------------------------------------------------------------- baseline


class Baseline(Tracer):
    def start(self) -> None:
        return

    def stop(self) -> None:
        return


# --------------------------------------------------------------------------- auditd

DEBIAN_BACKLOG = "8192"  # /etc/audit/rules.d/audit.rules on Debian: -b 8192
DEBIAN_BACKLOG_WAIT = "60000"  # --backlog_wait_time 60000
AUDIT_CONF_OVERRIDES = {
    "max_log_file_action": "IGNORE",  # no rotation in the middle of a case
    "space_left_action": "IGNORE",
    "admin_space_left_action": "IGNORE",
    "disk_full_action": "IGNORE",
}


def auditctl(*args: str) -> str:
    proc = subprocess.run(["auditctl", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise Unavailable(f"auditctl {' '.join(args)}: "
                          f"{(proc.stderr or proc.stdout).strip() or 'failed'}")
    return proc.stdout


def audit_status() -> dict[str, str]:
    status = {}
    for line in auditctl("-s").splitlines():
        key, _, value = line.partition(" ")
        status[key] = value.strip()
    return status


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class Auditd(Tracer):
    """auditd with an execve/execveat rule, as Debian configures it (-b 8192, ENRICHED log).

    If auditd is already running, that daemon and its log are used and left running;
    otherwise one is started with a copy of /etc/audit/auditd.conf that logs into the work
    directory, and stopped afterwards. Audit settings and rules are restored as found.
    """

    def __init__(self, workdir: Path) -> None:
        super().__init__("auditd", "auditd (execve rule)", workdir)
        self._saved: dict[str, str] = {}
        self._started_pid: int | None = None
        self._pid = 0
        self._log = workdir / "audit.log"
        self._rule = ["-F", "arch=b64", "-S", "execve,execveat", "-k", f"acbench{os.getpid()}"]
        self._rule_added = False

    def start(self) -> None:
        for tool in ("auditd", "auditctl"):
            if shutil.which(tool) is None:
                raise Unavailable(f"{tool} not installed (apt-get install -y auditd)")
        self._saved = audit_status()
        running = int(self._saved.get("pid", "0") or 0)
        if running and _alive(running):
            self._pid = running
            self._log = Path(_conf_value(Path("/etc/audit/auditd.conf"), "log_file")
                             or "/var/log/audit/audit.log")
            self.notes.append(f"used the auditd already running (pid {running})")
        else:
            self._start_own()
        auditctl("-b", DEBIAN_BACKLOG, "--backlog_wait_time", DEBIAN_BACKLOG_WAIT)
        auditctl("-a", "always,exit", *self._rule)
        self._rule_added = True

    def _start_own(self) -> None:
        confdir = self.workdir / "auditd-conf"
        confdir.mkdir(mode=0o700, exist_ok=True)
        (confdir / "plugins.d").mkdir(mode=0o700, exist_ok=True)
        conf = _auditd_conf(Path("/etc/audit/auditd.conf"), self._log, confdir / "plugins.d")
        (confdir / "auditd.conf").write_text(conf)
        os.chmod(confdir / "auditd.conf", 0o600)
        started = time.monotonic()
        proc = subprocess.run(["auditd", "-c", str(confdir)], capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            raise Unavailable(f"auditd did not start: {proc.stderr.strip() or proc.returncode}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pid = int(audit_status().get("pid", "0") or 0)
            if pid and _alive(pid):
                self._pid = self._started_pid = pid
                self.startup_s = time.monotonic() - started
                return
            time.sleep(0.05)
        raise Unavailable("auditd started but never registered with the kernel "
                          "(audit netlink restricted?)")

    def stop(self) -> None:
        if self._rule_added:
            subprocess.run(["auditctl", "-d", "always,exit", *self._rule], capture_output=True,
                           check=False)
            self._rule_added = False
        if self._started_pid:
            os.kill(self._started_pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while _alive(self._started_pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            self._started_pid = None
        self._restore_settings()

    def _restore_settings(self) -> None:
        if not self._saved:
            return
        restore = [("-b", "backlog_limit"), ("--backlog_wait_time", "backlog_wait_time"),
                   ("-f", "failure"), ("-e", "enabled")]
        for flag, key in restore:
            if key in self._saved:
                subprocess.run(["auditctl", flag, self._saved[key]], capture_output=True,
                               check=False)

    def cpu_pids(self) -> list[int]:
        return [self._pid, *pids_by_comm("kauditd")]

    def memory_pid(self) -> int | None:
        return self._pid

    def recorder(self, marker: str) -> Recorder:
        return FileRecorder(self._log, f'a0="{PROGRAM}" a1="{marker}"'.encode(),
                            line_prefix=b"type=EXECVE")

    def counters(self) -> dict[str, float]:
        try:
            return {"kernel_lost": float(audit_status().get("lost", "0"))}
        except Unavailable:
            return {}


def _conf_value(path: Path, key: str) -> str | None:
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == key:
            return value.strip()
    return None


def _auditd_conf(system_conf: Path, log_file: Path, plugin_dir: Path) -> str:
    """The system's auditd.conf, logging to log_file, without plugins or log rotation."""
    overrides = {**AUDIT_CONF_OVERRIDES, "log_file": str(log_file), "plugin_dir": str(plugin_dir)}
    lines = []
    try:
        base = system_conf.read_text().splitlines()
    except OSError:
        base = []
    for line in base:
        name = line.partition("=")[0].strip()
        if name not in overrides:
            lines.append(line)
    lines.extend(f"{key} = {value}" for key, value in overrides.items())
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- BCC tracer


class BccTracer(OwnProcessTracer):
    """bench/bcc_tracer.py: execsnoop-style, perf buffer, one printed line per exec."""

    def __init__(self, workdir: Path) -> None:
        super().__init__("bcc", "plain BCC tracer", workdir)
        self._proc: subprocess.Popen[bytes] | None = None
        self._out = workdir / "bcc.out"
        self._err = workdir / "bcc.err"

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        started = time.monotonic()
        # Fresh files per session: a READY left from an earlier session must not count.
        with open(self._out, "wb") as out, open(self._err, "wb") as err:
            self._proc = subprocess.Popen([sys.executable, "-m", "bench.bcc_tracer"],
                                          stdout=out, stderr=err, env=env)
        deadline = started + START_TIMEOUT_S
        while b"READY" not in self._err.read_bytes():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise Unavailable(f"BCC tracer did not start: {tail_text(self._err, 600)}")
            time.sleep(0.05)
        self.startup_s = time.monotonic() - started

    def stop(self) -> None:
        _terminate(self._proc)
        self._proc = None

    def recorder(self, marker: str) -> Recorder:
        return FileRecorder(self._out, f" {PROGRAM} {marker}".encode())

    def counters(self) -> dict[str, float]:
        lost = 0
        for line in self._out.read_bytes().splitlines():
            if line.startswith(b"LOST "):
                lost += int(line.split()[1])
        return {"perf_lost": float(lost)}


def _terminate(proc: subprocess.Popen[bytes] | None) -> int | None:
    if proc is None or proc.poll() is not None:
        return proc.returncode if proc else None
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


# --------------------------------------------------------------------------- collector


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {name: sum over label sets} plus {name{labels}: value}."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name = series.split("{", 1)[0]
        values[series] = float(value)
        if series != name:
            values[name] = values.get(name, 0.0) + float(value)
    return values


READY_RE = re.compile(r"ready in ([0-9.]+) s")


class Collector(OwnProcessTracer):
    """`audit-collector run` writing NDJSON to a file: every probe family on, or the
    `capture` switches given (e.g. {"fork": False, "exit": False})."""

    def __init__(self, workdir: Path, name: str = "collector_file",
                 label: str = "audit-collector -> file",
                 capture: dict[str, bool] | None = None, tree: Path | None = None,
                 elasticsearch: dict[str, bool] | None = None) -> None:
        """tree: run the collector package of another checkout (an earlier commit, for a
        before/after comparison in one run) with this venv. elasticsearch: settings of that
        section (e.g. {"gzip": False})."""
        super().__init__(name, label, workdir)
        self.capture = capture or {}
        self.elasticsearch = elasticsearch or {}
        self.env = {**os.environ, "PYTHONPATH": str(tree)} if tree else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port = 0
        self._out = workdir / f"{name}.ndjson"
        self._err = workdir / f"{name}.err"
        self.ready_logged_s: float | None = None
        self.exit_code: int | None = None

    def outputs(self) -> list[str]:
        return [f"file:{self._out}"]

    def capture_thread_pid(self) -> int | None:
        return self.memory_pid()

    def start(self) -> None:
        if not COLLECTOR.exists():
            raise Unavailable(f"{COLLECTOR} missing (make setup)")
        self._port = free_port()
        config = self.workdir / f"{self.name}.yaml"
        state = self.workdir / f"{self.name}-state"
        config.write_text(f"state_dir: {state}\n"
                          f"spool: {{dir: {state}/spool}}\n"
                          f"capture: {_flow_map(self.capture)}\n"
                          f"elasticsearch: {_flow_map(self.elasticsearch)}\n"
                          f"metrics: {{listen: 127.0.0.1:{self._port}}}\n")
        argv = [str(COLLECTOR), "run", "--config", str(config)]
        for output in self.outputs():
            argv += ["--output", output]
        started = time.monotonic()
        with open(self._err, "wb") as err:
            self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err,
                                          env=self.env)
        self._wait_ready(started)

    def _wait_ready(self, started: float) -> None:
        assert self._proc is not None
        deadline = started + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise Unavailable(f"audit-collector exited with {self._proc.returncode}: "
                                  f"{tail_text(self._err, 800).strip()}")
            if self._health().get("probes_attached"):
                self.startup_s = time.monotonic() - started
                return
            time.sleep(0.02)
        self.stop()
        raise Unavailable("audit-collector never reported probes_attached")

    def _get(self, path: str) -> bytes:
        url = f"http://127.0.0.1:{self._port}{path}"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bytes(resp.read())

    def _health(self) -> dict[str, object]:
        import json

        try:
            return dict(json.loads(self._get("/health")))
        except (OSError, ValueError):
            return {}

    def metrics(self) -> dict[str, float]:
        try:
            return parse_metrics(self._get("/metrics").decode())
        except OSError:
            return {}

    def stop(self) -> None:
        self.exit_code = _terminate(self._proc)
        self._proc = None
        found = READY_RE.findall(tail_text(self._err, 1 << 20))
        if found:
            self.ready_logged_s = float(found[-1])

    def recorder(self, marker: str) -> Recorder:
        # Exec documents only: end documents of the same process carry its args too.
        return FileRecorder(self._out, (b'"action":"exec"',
                                        f'"args":["{PROGRAM}","{marker}"'.encode()))

    def counters(self) -> dict[str, float]:
        values = self.metrics()
        return {"reported_lost": values.get("audit_collector_events_lost_total", 0.0),
                "captured_exec": values.get('audit_collector_events_captured_total'
                                            '{kind="exec"}', 0.0)}


def _flow_map(switches: dict[str, bool]) -> str:
    return "{" + ", ".join(f"{k}: {str(v).lower()}" for k, v in switches.items()) + "}"


class ESRecorder(Recorder):
    """Counts in the test server at most once a second: each refresh + _count scans every
    stored document under the server's lock, and polling faster starves its _bulk handler
    (the collector's shipper), which would then look like loss."""

    MIN_INTERVAL_S = 1.0

    def __init__(self, server: ESServer, marker: str) -> None:
        self._server = server
        self._marker = marker
        self._last = 0
        self._asked_at = -1e9

    def recorded(self) -> int:
        now = time.monotonic()
        if now - self._asked_at >= self.MIN_INTERVAL_S:
            self._asked_at = now
            self._last = self._server.count_marker(self._marker)
        return self._last


class CollectorToES(Collector):
    """The collector shipping through its spool to the ES test server on loopback."""

    def __init__(self, workdir: Path, name: str = "collector_es",
                 label: str = "audit-collector -> ES (loopback)",
                 capture: dict[str, bool] | None = None, tree: Path | None = None,
                 elasticsearch: dict[str, bool] | None = None) -> None:
        super().__init__(workdir, name, label, capture, tree, elasticsearch)
        self.server = ESServer()
        self.quiet_s = 8.0  # batches wait up to batch.max_wait_s, retries back off

    def outputs(self) -> list[str]:
        return [f"elasticsearch:{self.server.url}"]

    def start(self) -> None:
        self.server.start()
        try:
            self._setup()
            super().start()
        except Unavailable:
            self.server.stop()
            raise

    def stop(self) -> None:
        self.stop_collector()
        self.server.stop()

    def stop_collector(self) -> None:
        """Stop the collector only; the server keeps what it stored, to be read back."""
        super().stop()

    def _setup(self) -> None:
        """`audit-collector setup`: the collector refuses a stream without its template."""
        if not COLLECTOR.exists():
            raise Unavailable(f"{COLLECTOR} missing (make setup)")
        proc = subprocess.run([str(COLLECTOR), "setup", "--output", *self.outputs()],
                              capture_output=True, text=True, timeout=60, check=False,
                              env=self.env)
        if proc.returncode != 0:
            raise Unavailable(f"audit-collector setup failed: {proc.stderr.strip()[:400]}")

    def side_pids(self) -> dict[str, list[int]]:
        return {"es_server": [self.server.pid]}

    def recorder(self, marker: str) -> Recorder:
        return ESRecorder(self.server, marker)

    def counters(self) -> dict[str, float]:
        values = super().counters()
        metrics = self.metrics()
        values["shipped"] = metrics.get("audit_collector_shipped_documents_total", 0.0)
        values["spool_records"] = metrics.get("audit_collector_spool_records", 0.0)
        values["bulk_retries"] = metrics.get("audit_collector_bulk_retries_total", 0.0)
        values["bulk_requests"] = metrics.get("audit_collector_bulk_latency_seconds_count", 0.0)
        values["bulk_seconds"] = metrics.get("audit_collector_bulk_latency_seconds_sum", 0.0)
        return values

    def still_pending(self) -> bool:
        return self.metrics().get("audit_collector_spool_records", 0.0) > 0


def all_tracers(workdir: Path, before: Path | None = None) -> dict[str, Tracer]:
    """before: another checkout whose collector runs as collector_file_before and
    collector_es_before (the same loads, interleaved with the others in every round)."""
    tracers: list[Tracer] = [
        Baseline("baseline", "nothing tracing", workdir),
        Auditd(workdir),
        BccTracer(workdir),
        Collector(workdir),
        # The process families' cost, one switch at a time (Collector has both on).
        Collector(workdir, "collector_file_exec_only", "audit-collector -> file, no fork/exit",
                  {"fork": False, "exit": False}),
        Collector(workdir, "collector_file_fork", "audit-collector -> file, fork, no exit",
                  {"exit": False}),
        Collector(workdir, "collector_file_exit", "audit-collector -> file, exit, no fork",
                  {"fork": False}),
        CollectorToES(workdir),
        CollectorToES(workdir, "collector_es_exec_only", "audit-collector -> ES, no fork/exit",
                      {"fork": False, "exit": False}),
        # What gzip (on by default, level 1) costs the collector; the bandwidth it saves
        # is free on loopback only.
        CollectorToES(workdir, "collector_es_no_gzip", "audit-collector -> ES, gzip off",
                      elasticsearch={"gzip": False}),
    ]
    if before is not None:
        tracers += [Collector(workdir, "collector_file_before", f"file, collector of {before}",
                              tree=before),
                    CollectorToES(workdir, "collector_es_before", f"ES, collector of {before}",
                                  tree=before)]
    return {t.name: t for t in tracers}
