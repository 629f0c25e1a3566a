"""Fleet rollout on real Debian VMs, one fleet per release and a mixed one (make vm-test).

The test boots VMs with vagrant/Vagrantfile (libvirt provider, software-emulated CPU)
inside a network namespace it creates (tests/vm/sandbox.sh), rolls the collector out with
ansible/site.yml through Vagrant's Ansible provisioner, runs it a second time and expects
no change, makes each VM exec a distinctive command, enter namespaces and type a command
into an interactive bash, expects those documents in the Elasticsearch-API test server
(tests.esserver, listening on the namespace's bridge) with the VM's host.name, compares
what the documents say about processes with /proc in the guest, then runs
ansible/uninstall.yml and expects the hosts clean.

Fleets: one per Debian release in AC_VM_DISTROS (each with its own cached box, see
build-box.sh), then, with several releases, a mixed fleet of one VM per release provisioned
by one site.yml run. Fleets run one after the other; each is destroyed before the next
boots. Every fleet's tests carry its name (test_first_rollout[bullseye]).

Every packet stays inside the namespace: the management network is isolated (no forward,
no NAT, no uplink) and exists only there. The only steps outside it are the image builds
(Debian's mirror) and the controller's wheel prefetch (PyPI), both cached.

Environment:
  AC_VM_TEST=1        run at all (make vm-test sets it); otherwise every test is skipped
  AC_VM_DISTROS       Debian suites, e.g. "bullseye bookworm trixie" (default bookworm)
  AC_VM_PER_RELEASE   VMs in each single-release fleet (default 2 for one release, else 1)
  AC_VM_MIXED         1: add the mixed fleet (default with several releases), 0: leave it
                      out, only: run the mixed fleet alone
  AC_VM_PREVIOUS      a git ref of an earlier collector: each fleet first gets that version
                      (with that ref's playbook), the first rollout is then an upgrade that
                      must lose nothing (tests named *previous* / *upgrade*)
  AC_VM_VERIFY=0      infrastructure only: no /health wait, no document assertions
  AC_VM_SERIAL        rollout batch size (default 100%; the role's default is 30%)
  AC_VM_KEEP=1        leave the sandbox and the last fleet running (tests/vm/sandbox.sh stop)
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fleet.test_unit_security import SCORE_LIMIT
from tests.vm.proc_compare import PROBE_SCRIPT, compare, parse_probe_output
from tests.vm.upgrade import (
    SEQUENCE_PROBLEMS_FIELDS,
    export_previous,
    inventory_from_ssh_config,
    marker_problems,
    marker_script,
    min_python_of,
    sequence_problems,
)

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CACHE = REPO / ".cache" / "vm"
RUN = CACHE / "run"
ANSIBLE_BIN = REPO / ".cache" / "ansible-venv" / "bin"
PYTHON = REPO / ".venv" / "bin" / "python"
SANDBOX = HERE / "sandbox.sh"
NET_PREFIX = "192.168.121"
ES_URL = f"http://{NET_PREFIX}.1:9200"
DATA_STREAM = "logs-audit_collector-default"
SOURCE_PATHS = ("pyproject.toml", "README.md", "LICENSE", "collector", "bpf")


@dataclass(frozen=True)
class Release:
    suite: str
    version: int
    python: str  # the system Python, the only one BCC's binding exists for

    @property
    def wheel_tag(self) -> str:
        return f"cp{self.python.replace('.', '')}-x86_64"


RELEASES = {r.suite: r for r in (Release("bullseye", 11, "3.9"), Release("bookworm", 12, "3.11"),
                                  Release("trixie", 13, "3.13"))}


@dataclass(frozen=True)
class FleetSpec:
    name: str
    suites: tuple[str, ...]  # one per VM

    @property
    def vms(self) -> tuple[str, ...]:
        return tuple(f"ac-{self.name}-{i}" for i in range(1, len(self.suites) + 1))


def fleet_specs(env: dict[str, str]) -> list[FleetSpec]:
    distros = env.get("AC_VM_DISTROS", "bookworm").split() or ["bookworm"]
    per_release = int(env.get("AC_VM_PER_RELEASE", "2" if len(distros) == 1 else "1"))
    mixed = env.get("AC_VM_MIXED", "1" if len(distros) > 1 else "0")
    specs = [] if mixed == "only" else [FleetSpec(d, (d,) * per_release) for d in distros]
    if mixed in ("1", "only"):
        specs.append(FleetSpec("mixed", tuple(distros)))
    return specs


FLEETS = fleet_specs(dict(os.environ))
VERIFY = os.environ.get("AC_VM_VERIFY", "1") != "0"
PREVIOUS = os.environ.get("AC_VM_PREVIOUS", "")
KEEP = os.environ.get("AC_VM_KEEP") == "1"

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(os.environ.get("AC_VM_TEST") != "1",
                       reason="boots VMs: run with `make vm-test`"),
]


def log(msg: str) -> None:
    print(f"[vm-test {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, text=True, check=True, cwd=REPO, **kw)


def play_recap(output: str) -> dict[str, dict[str, int]]:
    """Per-host counters of the last PLAY RECAP in an ansible-playbook output."""
    text = output.rsplit("PLAY RECAP", 1)[-1]
    recap: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(\S+)\s+:\s+(.*)$", line)
        if m and "ok=" in m.group(2):
            recap[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return recap


def failure_messages(output: str) -> dict[str, list[str]]:
    """Per host, the message of each failed task ("fatal: [host]: FAILED! => {...}", or
    "failed: [host] (item=...) => {...}" in a loop); for a failed command, the last lines
    of its stderr."""
    found: dict[str, list[str]] = {}
    pattern = r"^(?:fatal: \[([^\]]+)\]: [A-Z!]+|failed: \[([^\]]+)\] \(item=[^)]*\)) => (\{.*\})$"
    for m in re.finditer(pattern, output, re.M):
        host = m.group(1) or m.group(2)
        try:
            result = json.loads(m.group(3))
        except json.JSONDecodeError:
            found.setdefault(host, []).append(m.group(3)[:2000])
            continue
        msg = str(result.get("msg", ""))
        stderr = [line for line in str(result.get("stderr", "")).splitlines()
                  if line.strip() and not line.startswith("WARNING: Location")]
        if stderr:
            msg += ": " + " | ".join(stderr[-5:])
        found.setdefault(host, []).append(msg[:2000])
    return found


@dataclass
class Sandbox:
    """The network namespace with libvirt and the ES test server, shared by the fleets."""

    env: dict[str, str]
    source: Path
    timings: dict[str, Any] = field(default_factory=dict)
    prefetch_failures: dict[str, str] = field(default_factory=dict)
    previous_prefetch_failures: dict[str, str] = field(default_factory=dict)

    def exec(self, *cmd: str, env: dict[str, str] | None = None, timeout: float = 900,
             check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SANDBOX), "exec", str(RUN), *cmd], env=env or self.env,
                              cwd=REPO, text=True, capture_output=True, timeout=timeout,
                              check=check, input=input)

    def es(self, method: str, path: str, body: Any = None) -> Any:
        cmd = ["curl", "-s", "-X", method, "-H", "Content-Type: application/json",
               f"{ES_URL}{path}"]
        if body is not None:
            cmd += ["--data-binary", "@-"]
        proc = self.exec(*cmd, timeout=60, input=json.dumps(body) if body else None)
        return json.loads(proc.stdout)

    def search(self, host: str, *filters: dict[str, Any]) -> list[dict[str, Any]]:
        self.es("POST", f"/{DATA_STREAM}/_refresh")
        result = self.es("POST", f"/{DATA_STREAM}/_search", {
            "size": 10000,
            "query": {"bool": {"filter": [{"term": {"host.name": host}}, *filters]}},
        })
        return [h["_source"] for h in result.get("hits", {}).get("hits", [])]

    def search_all(self, host: str) -> list[dict[str, Any]]:
        """Every document of a host, in event.sequence order (pages of 5000)."""
        self.es("POST", f"/{DATA_STREAM}/_refresh")
        docs: list[dict[str, Any]] = []
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {
                "size": 5000, "sort": [{"event.sequence": "asc"}],
                "query": {"bool": {"filter": [{"term": {"host.name": host}}]}}}
            if after is not None:
                body["search_after"] = after
            hits = self.es("POST", f"/{DATA_STREAM}/_search", body).get("hits", {}).get("hits", [])
            docs += [h["_source"] for h in hits]
            if len(hits) < 5000:
                return docs
            after = hits[-1]["sort"]


@dataclass
class Fleet:
    spec: FleetSpec
    sandbox: Sandbox
    env: dict[str, str]
    run_dir: Path
    extra_vars: dict[str, Any]
    timings: dict[str, Any] = field(default_factory=dict)
    recaps: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    failures: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    # VMs on which a rollout failed, with why: the checks that need the collector leave
    # them out (the failed rollout test has reported them already).
    broken: dict[str, str] = field(default_factory=dict)

    def working_vms(self) -> list[str]:
        vms = [vm for vm in self.spec.vms if vm not in self.broken]
        if not vms:
            pytest.skip(f"no VM of fleet {self.spec.name} has the collector: {self.broken}")
        return vms

    @property
    def ssh_config(self) -> Path:
        return self.run_dir / "ssh-config"

    def release_of(self, vm: str) -> str:
        return self.spec.suites[self.spec.vms.index(vm)]

    def vagrant(self, *args: str, timeout: float = 1800,
                logname: str | None = None) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        proc = self.sandbox.exec("vagrant", *args, env=self.env, timeout=timeout, check=False)
        if logname:
            self.save_log(logname, proc, started)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-60:])
            raise AssertionError(f"vagrant {' '.join(args)} failed ({proc.returncode}):\n{tail}")
        return proc

    def playbook(self, playbook: Path, logname: str, extra_vars: dict[str, Any],
                 inventory: Path, config: Path) -> subprocess.CompletedProcess[str]:
        """ansible-playbook run directly (not through Vagrant), inside the sandbox."""
        env = {**self.env, "ANSIBLE_CONFIG": str(config), "ANSIBLE_HOST_KEY_CHECKING": "false"}
        started = time.monotonic()
        proc = self.sandbox.exec(str(ANSIBLE_BIN / "ansible-playbook"), "-i", str(inventory),
                                 str(playbook), "-e", json.dumps(extra_vars), env=env,
                                 timeout=3600, check=False)
        self.save_log(logname, proc, started)
        return proc

    def save_log(self, logname: str, proc: subprocess.CompletedProcess[str],
                 started: float) -> None:
        (self.run_dir / f"{logname}.log").write_text(proc.stdout + proc.stderr)
        self.timings[logname] = round(time.monotonic() - started, 1)
        if "PLAY RECAP" in proc.stdout:
            self.recaps[logname] = play_recap(proc.stdout)
            failed = failure_messages(proc.stdout)
            if failed:
                self.failures[logname] = failed

    def ssh(self, vm: str, script: str, timeout: float = 300, tty: bool = False,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        opts = ["-F", str(self.ssh_config)] + (["-tt"] if tty else [])
        return self.sandbox.exec("ssh", *opts, vm, script, env=self.env, timeout=timeout,
                                 check=False, input=input)

    def save(self) -> None:
        (self.run_dir / "timings.json").write_text(json.dumps(
            {"fleet": self.spec.name,
             "vms": dict(zip(self.spec.vms, self.spec.suites)),
             "timings_s": self.timings, "recaps": self.recaps, "failures": self.failures,
             "broken": self.broken, "results": self.results}, indent=2))


def _snapshot_source(dest: Path) -> None:
    """The role builds the wheel from this copy: edits made to the checkout while the test
    runs cannot change the fingerprint between the two playbook runs."""
    dest.mkdir(parents=True)
    for name in SOURCE_PATHS:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)


def _base_extra_vars(source: Path) -> dict[str, Any]:
    return {
        "audit_collector_source_dir": str(source),
        "audit_collector_controller_cache_dir": str(CACHE / "wheels"),
        "audit_collector_rollout_serial": os.environ.get("AC_VM_SERIAL", "100%"),
        "audit_collector_verify": VERIFY,
        # BCC compiles its programs at start-up; on an emulated CPU that takes minutes.
        "audit_collector_verify_retries": 120,
        # The hosts' public keys go to the run directory, not into the checkout.
        "audit_collector_public_keys_file": str(RUN / "public-keys.txt"),
    }


def _prefetch(env: dict[str, str], extra_vars: dict[str, Any], tags: list[str],
              tree: Path = REPO, label: str = "") -> tuple[dict[str, float], dict[str, str]]:
    """The controller's wheels come from PyPI: fetch them outside the namespace (cached,
    keyed by the source fingerprint) with TREE's own prefetch playbook; inside, the role
    finds them in the cache. One run per wheel set, so that a release whose Python the
    collector does not support fails alone (its rollout then says why)."""
    timings: dict[str, float] = {}
    failures: dict[str, str] = {}
    for tag in tags:
        started = time.monotonic()
        proc = subprocess.run(
            [str(ANSIBLE_BIN / "ansible-playbook"), "ansible/prefetch-wheels.yml",
             "-e", json.dumps({**extra_vars, "audit_collector_wheel_tags": [tag]})],
            env={**env, "ANSIBLE_CONFIG": str(tree / "ansible" / "ansible.cfg")},
            cwd=tree, text=True, capture_output=True, check=False)
        timings[f"prefetch_wheels_{label}{tag}"] = round(time.monotonic() - started, 1)
        (RUN / f"prefetch_{label}{tag}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            msgs = failure_messages(proc.stdout)
            failures[tag] = "; ".join(m for ms in msgs.values() for m in ms) or proc.stdout[-2000:]
            log(f"prefetch {tag} failed: {failures[tag][:500]}")
    return timings, failures


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, on_term)
    subprocess.run([str(SANDBOX), "stop", str(RUN)], check=False)
    shutil.rmtree(RUN, ignore_errors=True)
    RUN.mkdir(parents=True)
    source = RUN / "src"
    _snapshot_source(source)
    env = {
        **os.environ,
        "PATH": f"{ANSIBLE_BIN}:{os.environ['PATH']}",
        "VAGRANT_HOME": str(CACHE / "vagrant-home"),
        "VAGRANT_CWD": str(REPO / "vagrant"),
        "VAGRANT_CHECKPOINT_DISABLE": "1",
        "AC_VM_MEMORY": "1024",
        "AC_VM_CPUS": "1",
        "AC_VM_DRIVER": "qemu",
        "AC_VM_CPU_MODE": "custom",
        "AC_VM_CPU_MODEL": "qemu64",
        "AC_VM_MGMT_NET_NAME": "acvm-mgmt",
        "AC_VM_MGMT_NET_ADDRESS": f"{NET_PREFIX}.0/24",
        "AC_VM_MGMT_NET_MODE": "none",
        "AC_ES_URL": ES_URL,
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
    }
    box = Sandbox(env=env, source=source)
    tags = sorted({RELEASES[s].wheel_tag for f in FLEETS for s in f.suites if s in RELEASES})
    prefetch_timings, box.prefetch_failures = _prefetch(env, _base_extra_vars(source), tags)
    box.timings.update(prefetch_timings)
    if PREVIOUS:
        # Its failures are expected for releases that version did not support (its
        # rollout's preflight then says so); the others show in that rollout.
        tree = export_previous(REPO, PREVIOUS, RUN / "previous")
        previous_timings, box.previous_prefetch_failures = _prefetch(
            env, {**_base_extra_vars(source), "audit_collector_source_dir": str(tree)}, tags,
            tree=tree, label="previous_")
        box.timings.update(previous_timings)

    es_server = None
    try:
        started = time.monotonic()
        run([str(SANDBOX), "start", str(RUN)], capture_output=True,
            env={**env, "AC_VM_MGMT_NET_PREFIX": NET_PREFIX})
        box.timings["sandbox"] = round(time.monotonic() - started, 1)
        es_log = (RUN / "esserver.log").open("w")
        es_server = subprocess.Popen(
            [str(SANDBOX), "exec", str(RUN), str(PYTHON), "-m", "tests.esserver",
             "--host", f"{NET_PREFIX}.1", "--port", "9200", "--major", "8"],
            cwd=REPO, stdout=es_log, stderr=subprocess.STDOUT)
        for _ in range(100):
            if box.exec("curl", "-sf", ES_URL, check=False, timeout=10).returncode == 0:
                break
            time.sleep(0.3)
        else:
            raise AssertionError("the Elasticsearch test server did not come up")
        yield box
    finally:
        fleets = {p.parent.name: json.loads(p.read_text()) for p in RUN.glob("*/timings.json")}
        (RUN / "timings.json").write_text(json.dumps(
            {"timings_s": box.timings, "prefetch_failures": box.prefetch_failures,
             "previous_prefetch_failures": box.previous_prefetch_failures,
             "fleets": fleets}, indent=2))
        log(f"timings: {json.dumps(box.timings)}")
        if es_server is not None:
            es_server.terminate()
        if not KEEP:
            subprocess.run([str(SANDBOX), "stop", str(RUN)], check=False)
        signal.signal(signal.SIGTERM, previous)


def _box_for(suite: str, sandbox: Sandbox, timings: dict[str, Any]) -> str:
    """Build (cached) and register the suite's box; returns its Vagrant name."""
    if suite not in RELEASES:
        raise AssertionError(f"unknown distribution {suite!r} in AC_VM_DISTROS "
                             f"(known: {' '.join(RELEASES)})")
    started = time.monotonic()
    box = run([str(HERE / "build-box.sh"), str(CACHE), suite],
              capture_output=True).stdout.strip()
    timings[f"box_{suite}"] = round(time.monotonic() - started, 1)
    build_log = Path(box + ".log")
    if build_log.exists():
        timings[f"box_{suite}_build"] = build_log.read_text().strip()
    name = "ac-test/" + Path(box).stem
    if name not in sandbox.exec("vagrant", "box", "list").stdout:
        sandbox.exec("vagrant", "box", "add", "--name", name, box)
    return name


@pytest.fixture(scope="module", params=FLEETS, ids=[f.name for f in FLEETS])
def fleet(request: pytest.FixtureRequest, sandbox: Sandbox) -> Iterator[Fleet]:
    spec: FleetSpec = request.param
    run_dir = RUN / spec.name
    (run_dir / "serial").mkdir(parents=True)
    timings: dict[str, Any] = {}
    # One build per release (the timing of a second call would be the cache hit's).
    box_of = {suite: _box_for(suite, sandbox, timings) for suite in dict.fromkeys(spec.suites)}
    boxes = [box_of[suite] for suite in spec.suites]
    extra_vars = _base_extra_vars(sandbox.source)
    env = {
        **sandbox.env,
        "VAGRANT_DOTFILE_PATH": str(run_dir / "dotvagrant"),
        "AC_VM_COUNT": str(len(spec.suites)),
        "AC_VM_BOXES": " ".join(boxes),
        "AC_VM_BOX": boxes[0],
        "AC_VM_NAME_PREFIX": f"ac-{spec.name}-",
        "AC_VM_PREFIX": f"acvm_{spec.name}_",
        "AC_VM_SERIAL_LOG_DIR": str(run_dir / "serial"),
        "AC_ANSIBLE_EXTRA_VARS": json.dumps(extra_vars),
    }
    fleet = Fleet(spec=spec, sandbox=sandbox, env=env, run_dir=run_dir,
                  extra_vars=extra_vars, timings=timings)
    missing_wheels = {s: sandbox.prefetch_failures[RELEASES[s].wheel_tag] for s in spec.suites
                      if RELEASES[s].wheel_tag in sandbox.prefetch_failures}
    if missing_wheels:
        fleet.results["prefetch_failures"] = missing_wheels
    try:
        members = ", ".join(f"{v} ({s})" for v, s in zip(spec.vms, spec.suites))
        log(f"fleet {spec.name}: booting {members}")
        fleet.vagrant("up", "--no-provision", logname="vagrant_up")
        log(f"fleet {spec.name}: up in {fleet.timings['vagrant_up']} s")
        fleet.ssh_config.write_text(fleet.sandbox.exec("vagrant", "ssh-config", env=env).stdout)
        fleet.results["guests"] = _guest_facts(fleet)
        yield fleet
    finally:
        fleet.save()
        log(f"fleet {spec.name}: timings {json.dumps(fleet.timings)}")
        if not KEEP:
            sandbox.exec("vagrant", "destroy", "-f", env=env, check=False, timeout=600)


# What the role and the collector depend on, as the booted guest has it (timings.json).
GUEST_FACTS = (
    "uname -r; . /etc/os-release; echo \"$PRETTY_NAME\"; python3 -V; "
    "bash --version | head -n1; test -e /sys/kernel/btf/vmlinux && echo btf=yes || echo btf=no; "
    "sudo test -d /sys/kernel/tracing/events && echo tracefs=yes || echo tracefs=no; "
    "echo cgroup=$(stat -fc %T /sys/fs/cgroup); "
    "echo perf_event_paranoid=$(cat /proc/sys/kernel/perf_event_paranoid); "
    "echo unprivileged_bpf_disabled=$(cat /proc/sys/kernel/unprivileged_bpf_disabled); "
    "systemctl --version | head -n1; "
    "sudo systemd-run --quiet --wait -p 'CapabilityBoundingSet=CAP_BPF CAP_PERFMON' /bin/true "
    "&& echo unit_cap_bpf=ok || echo unit_cap_bpf=refused; "
    "echo loginuid=$(cat /proc/self/loginuid) sessionid=$(cat /proc/self/sessionid); "
    "systemd-analyze time | head -n1"
)


def _guest_facts(fleet: Fleet) -> dict[str, list[str]]:
    facts = {}
    for vm in fleet.spec.vms:
        proc = fleet.ssh(vm, GUEST_FACTS)
        facts[vm] = proc.stdout.splitlines()
        log(f"{vm}: {' | '.join(facts[vm])}")
    return facts


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def previous_unsupported(failures: dict[str, list[str]]) -> dict[str, str]:
    """The VMs whose release the previous version did not support: its preflight stopped
    them for their Python (they get the current version fresh in the first rollout)."""
    return {vm: msg for vm, msgs in failures.items() for msg in msgs
            if "the collector needs Python" in msg}


def _provision(fleet: Fleet, name: str) -> dict[str, dict[str, int]]:
    log(f"fleet {fleet.spec.name}: ansible-playbook ansible/site.yml ({name})")
    started = time.monotonic()
    proc = fleet.sandbox.exec("vagrant", "provision", env=fleet.env, timeout=3600, check=False)
    fleet.save_log(name, proc, started)
    recap = fleet.recaps.get(name, {})
    log(f"fleet {fleet.spec.name}: {name}: {fleet.timings[name]} s, recap {recap}")
    problems = fleet.failures.get(name, {})
    for vm in fleet.spec.vms:
        counters = recap.get(vm)
        if counters is None or counters.get("failed") or counters.get("unreachable"):
            why = "; ".join(problems.get(vm, [])) or f"recap {counters}"
            fleet.broken.setdefault(vm, f"{name}: {why[:300]}")
    failed_now = [vm for vm in fleet.spec.vms if fleet.broken.get(vm, "").startswith(name)]
    if proc.returncode != 0 or set(recap) != set(fleet.spec.vms) or failed_now:
        raise AssertionError(
            f"{name} failed (exit {proc.returncode}); recap {recap}; failed tasks: "
            f"{json.dumps(problems, indent=1)[:6000]}")
    return recap


# ---------------------------------------------------------------- upgrade from a previous version


def test_rollout_previous_version(fleet: Fleet) -> None:
    """AC_VM_PREVIOUS: install that version with its own playbook; ES refuses bulk writes
    from now until after the upgrade, so that what the old collector captures waits in its
    spool and must be shipped by the new one."""
    if not PREVIOUS:
        pytest.skip("AC_VM_PREVIOUS is not set (a git ref of the version to upgrade from)")
    tree = export_previous(REPO, PREVIOUS, RUN / "previous")
    # Hosts whose Python that version refuses are left out of its play: its role ran the
    # Elasticsearch setup only when the inventory's first host passed its preflight, so a
    # refused first host let the old collector's bulk create the data stream from the
    # built-in logs template (which the current guard then rightly refuses).
    minimum = min_python_of(tree)
    refused = {vm: f"{PREVIOUS}'s preflight needs Python >= "
                   f"{'.'.join(map(str, minimum or ()))}, {vm} has "
                   f"{RELEASES[fleet.release_of(vm)].python}"
               for vm in fleet.spec.vms
               if minimum and _version(RELEASES[fleet.release_of(vm)].python) < minimum}
    candidates = [vm for vm in fleet.spec.vms if vm not in refused]
    if not candidates:
        fleet.results["upgrade"] = {"previous": PREVIOUS, "unsupported": refused, "tokens": {}}
        pytest.skip(f"{PREVIOUS} runs on no VM of this fleet: {refused}")
    inventory = inventory_from_ssh_config(fleet.ssh_config.read_text(), fleet.run_dir,
                                          only=candidates)
    extra = {**fleet.extra_vars, "audit_collector_source_dir": str(tree),
             "audit_collector_elasticsearch_hosts": [ES_URL]}
    proc = fleet.playbook(tree / "ansible" / "site.yml", "site_previous", extra, inventory,
                          tree / "ansible" / "ansible.cfg")
    unsupported = {**refused,
                   **previous_unsupported(fleet.failures.get("site_previous", {}))}
    fleet.results["upgrade"] = {"previous": PREVIOUS, "unsupported": unsupported, "tokens": {}}
    failed = set(fleet.failures.get("site_previous", {})) - set(unsupported)
    if proc.returncode != 0 and (failed or not fleet.failures.get("site_previous")):
        # Only the upgrade test depends on it: the current version's rollout still runs
        # (over whatever the old one left) and the other checks judge it.
        fleet.results["upgrade"]["failed"] = sorted(failed) or list(fleet.spec.vms)
        pytest.fail(f"previous version ({PREVIOUS}) rollout failed: "
                    f"{json.dumps(fleet.failures.get('site_previous', {}))[:4000]}")
    upgraded = [vm for vm in fleet.working_vms() if vm not in unsupported]
    if not upgraded:
        pytest.skip(f"{PREVIOUS} does not run on {', '.join(unsupported)} (its preflight: "
                    f"{'; '.join(unsupported.values())[:300]}): the first rollout installs")
    fault = fleet.sandbox.es("POST", "/_test/faults", {
        "kind": "status", "status": 503, "requests": None, "endpoints": ["bulk"]})
    fleet.results["upgrade"]["fault_id"] = fault["id"]
    for vm in upgraded:
        tok = secrets.token_hex(4)
        fleet.results["upgrade"]["tokens"][vm] = tok
        proc = fleet.ssh(vm, marker_script(f"before-{tok}", count=20))
        assert proc.returncode == 0, (vm, proc.stdout, proc.stderr)


def test_first_rollout(fleet: Fleet) -> None:
    recap = _provision(fleet, "site_run1")
    assert all(c["changed"] > 0 for c in recap.values()), recap


def test_upgrade_lost_nothing(fleet: Fleet) -> None:
    """After the upgrade: the markers the old version spooled and those the new one sees
    are all in ES once, and event.sequence runs on without a gap or a repeat."""
    if not PREVIOUS:
        pytest.skip("AC_VM_PREVIOUS is not set (a git ref of the version to upgrade from)")
    working = fleet.working_vms()
    upgrade = fleet.results.get("upgrade")
    assert upgrade, "the previous version was not installed (see test_rollout_previous_version)"
    if upgrade.get("failed"):
        pytest.fail(f"the previous version's rollout failed on {upgrade['failed']} "
                    "(see test_rollout_previous_version)")
    if not upgrade["tokens"]:
        pytest.skip(f"{PREVIOUS} ran on no VM of this fleet: {upgrade['unsupported']}")
    fleet.sandbox.es("DELETE", f"/_test/faults/{upgrade['fault_id']}")
    for vm, tok in upgrade["tokens"].items():
        proc = fleet.ssh(vm, marker_script(f"after-{tok}", count=20))
        assert proc.returncode == 0, (vm, proc.stdout, proc.stderr)
    problems: dict[str, Any] = {}
    deadline = time.monotonic() + 300
    while True:
        problems = {}
        for vm, tok in upgrade["tokens"].items():
            if vm not in working:
                continue
            docs = fleet.sandbox.search_all(vm)
            for phase in ("before", "after"):
                missing = marker_problems(docs, f"{phase}-{tok}", 20)
                if missing:
                    problems.setdefault(vm, []).extend(missing)
            seq = sequence_problems(docs)
            if seq:
                problems.setdefault(vm, []).extend(seq)
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(10)
    fleet.results["upgrade"]["problems"] = problems
    assert not problems, (f"upgrade from {PREVIOUS} lost or repeated events "
                          f"(checked: markers, {', '.join(SEQUENCE_PROBLEMS_FIELDS)}): {problems}")


# ---------------------------------------------------------------- the rollout itself


def test_second_rollout_changes_nothing(fleet: Fleet) -> None:
    working = fleet.working_vms()
    recap = _provision(fleet, "site_run2")
    changed = {host: c["changed"] for host, c in recap.items() if host in working}
    if any(changed.values()):
        log_text = (fleet.run_dir / "site_run2.log").read_text()
        tasks = re.findall(r"TASK \[([^\]]+)\][^\n]*\n(?:[^\n]*\n)*?changed: \[([^\]]+)\]",
                           log_text)
        pytest.fail(f"second run changed something: {changed}; tasks: {tasks}")


def test_collector_healthy(fleet: Fleet) -> None:
    if not VERIFY:
        pytest.skip("AC_VM_VERIFY=0")
    for vm in fleet.working_vms():
        proc = fleet.ssh(vm, "systemctl is-active audit-collector && python3 -c "
                             "\"import urllib.request as u; "
                             "print(u.urlopen('http://127.0.0.1:9477/health').read().decode())\"")
        assert proc.returncode == 0, (vm, proc.stdout, proc.stderr)
        health = json.loads(proc.stdout.splitlines()[-1])
        assert health.get("probes_attached") is True, (vm, health)


def exposure_of(output: str) -> float | None:
    """The overall exposure in `systemd-analyze security UNIT` output (None if absent)."""
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", output)
    return float(found.group(1)) if found else None


def test_installed_unit_exposure(fleet: Fleet) -> None:
    """The unit as installed and loaded by the guest's own systemd (each release's scoring):
    no more exposed than the role test's limit for the rendered unit; the collector runs
    under it (test_collector_healthy: probes attached)."""
    scores: dict[str, Any] = {}
    for vm in fleet.working_vms():
        proc = fleet.ssh(vm, "sudo systemd-analyze security --no-pager audit-collector.service")
        (fleet.run_dir / f"security_{vm}.txt").write_text(proc.stdout + proc.stderr)
        score = exposure_of(proc.stdout + proc.stderr)
        assert score is not None, (vm, proc.stdout[-2000:], proc.stderr[-2000:])
        scores[vm] = {"release": fleet.release_of(vm), "exposure": score}
    fleet.results["unit_exposure"] = scores
    log(f"fleet {fleet.spec.name}: systemd-analyze security: {scores}")
    too_high = {vm: s for vm, s in scores.items() if s["exposure"] > SCORE_LIMIT}
    assert not too_high, f"exposure above {SCORE_LIMIT}: {too_high}"


ACTIONS = r"""
set -e
/bin/echo ac-exec-{tok}
sudo unshare --uts --fork /bin/sh -c 'hostname acns{tok}; /bin/echo ac-ns-{tok}'
sudo unshare --uts --fork sleep 30 </dev/null >/dev/null 2>&1 &
sleep 2
target="$(pgrep -n -x sleep)"
sudo nsenter --target "$target" --uts /bin/echo ac-nsenter-{tok}
sudo kill "$target"
(sleep 3; echo 'echo ac-bash-{tok}'; sleep 2; echo exit) | script -qfc 'bash -i' /dev/null
"""


def _find(docs: list[dict[str, Any]], **want: Any) -> list[dict[str, Any]]:
    def get(doc: Any, path: str) -> Any:
        for part in path.split("."):
            doc = doc.get(part) if isinstance(doc, dict) else None
        return doc

    return [d for d in docs
            if all(v(get(d, k.replace("__", "."))) if callable(v)
                   else get(d, k.replace("__", ".")) == v for k, v in want.items())]


def test_documents_reach_elasticsearch(fleet: Fleet) -> None:
    if not VERIFY:
        pytest.skip("AC_VM_VERIFY=0")
    tokens = {vm: secrets.token_hex(4) for vm in fleet.working_vms()}
    for vm, tok in tokens.items():
        proc = fleet.ssh(vm, ACTIONS.format(tok=tok))
        assert proc.returncode == 0, (vm, proc.stdout, proc.stderr)

    missing: dict[str, list[str]] = {}
    deadline = time.monotonic() + 180
    while True:
        missing = {}
        for vm, tok in tokens.items():
            docs = fleet.sandbox.search(
                vm, {"terms": {"event.action": ["exec", "unshare", "setns", "bash_command"]}})
            checks = {
                "exec": _find(docs, event__action="exec",
                              process__args=["/bin/echo", f"ac-exec-{tok}"]),
                "unshare uts": _find(docs, event__action="unshare", process__name="unshare",
                                     audit_collector__ns__kinds=lambda k: k and "uts" in k),
                "exec in the new uts namespace": _find(
                    docs, event__action="exec", process__args=["/bin/echo", f"ac-ns-{tok}"],
                    audit_collector__uts_hostname=f"acns{tok}"),
                "setns (nsenter)": _find(docs, event__action="setns", process__name="nsenter"),
                "exec after nsenter": _find(
                    docs, event__action="exec", process__args=["/bin/echo", f"ac-nsenter-{tok}"]),
                "interactive bash": _find(docs, event__action="bash_command",
                                          audit_collector__bash__line=f"echo ac-bash-{tok}"),
            }
            for name, found in checks.items():
                if not found:
                    missing.setdefault(vm, []).append(name)
                elif name.startswith("exec") or name == "interactive bash":
                    assert len(found) == 1, f"{vm}: {name}: {len(found)} copies"
                for doc in found:
                    assert doc["host"]["name"] == vm, doc["host"]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert not missing, f"documents not found in Elasticsearch: {missing}"


# A plain process on the ssh session's pty (login uid and audit session from pam_loginuid)
# and one in new uts/ipc/net/mnt/pid/cgroup/user namespaces (pid 1 there), both copies of
# sleep under names of their own; /proc is read while they run, before the shell exits.
PROC_ACTIONS = r"""
set -e
plain=/tmp/ac-proc-{tok}; nsed=/tmp/ac-procns-{tok}
cp /bin/sleep "$plain"; cp /bin/sleep "$nsed"
"$plain" 20 </dev/null >/dev/null 2>&1 &
sudo unshare --uts --ipc --net --mount --pid --cgroup --user --map-root-user --fork \
    --kill-child "$nsed" 20 </dev/null >/dev/null 2>&1 &
sleep 3
sudo /usr/bin/python3 /tmp/ac-proc-probe.py "$plain" "$nsed"
"""


def test_documents_match_proc(fleet: Fleet) -> None:
    """The BTF offsets on this kernel: process.parent.pid, login uid, session id, tty,
    vpid and namespace inodes of two exec documents equal what /proc says in the guest."""
    if not VERIFY:
        pytest.skip("AC_VM_VERIFY=0")
    seen: dict[str, dict[str, Any]] = {}
    for vm in fleet.working_vms():
        copied = fleet.ssh(vm, "cat >/tmp/ac-proc-probe.py", input=PROBE_SCRIPT)
        assert copied.returncode == 0, (vm, copied.stderr)
        tok = secrets.token_hex(4)
        proc = fleet.ssh(vm, PROC_ACTIONS.format(tok=tok), tty=True)
        assert proc.returncode == 0, (vm, proc.stdout, proc.stderr)
        found = parse_probe_output(proc.stdout)
        for path, procs in found.items():
            assert len(procs) == 1, f"{vm}: {len(procs)} processes run {path}"
            seen[f"{vm}:{path}"] = {"vm": vm, "path": path, "proc": procs[0]}

    mismatches: dict[str, Any] = {}
    deadline = time.monotonic() + 180
    while True:
        mismatches = {}
        for key, item in seen.items():
            docs = [d for d in fleet.sandbox.search(item["vm"],
                                                    {"term": {"event.action": "exec"}},
                                                    {"term": {"process.args": item["path"]}})
                    if d.get("process", {}).get("args") == [item["path"], "20"]]
            if len(docs) != 1:
                mismatches[key] = f"{len(docs)} exec documents"
                continue
            diff = compare(docs[0], item["proc"])
            item["compared"] = {"release": fleet.release_of(item["vm"]), "differences": diff}
            if diff:
                mismatches[key] = diff
        if not any(isinstance(v, str) for v in mismatches.values()) \
                or time.monotonic() > deadline:
            break
        time.sleep(5)
    fleet.results["proc_compare"] = {k: {"release": fleet.release_of(v["vm"]),
                                         "proc": v["proc"], **v.get("compared", {})}
                                     for k, v in seen.items()}
    assert not mismatches, f"documents differ from /proc: {json.dumps(mismatches, indent=1)}"


def test_uninstall_leaves_hosts_clean(fleet: Fleet) -> None:
    inventory = fleet.run_dir / "dotvagrant" / "provisioners" / "ansible" / "inventory"
    if not inventory.exists():
        inventory = inventory_from_ssh_config(fleet.ssh_config.read_text(), fleet.run_dir)
    proc = fleet.playbook(REPO / "ansible" / "uninstall.yml", "uninstall", {}, inventory,
                          REPO / "ansible" / "ansible.cfg")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    for vm in fleet.spec.vms:
        check = fleet.ssh(vm, (
            "set -e; "
            "sudo test ! -e /etc/systemd/system/audit-collector.service; "
            "sudo test ! -e /opt/audit-collector; "
            "sudo test ! -e /etc/audit-collector; "
            "sudo test ! -e /var/log/audit-collector; "
            "! systemctl list-unit-files audit-collector.service | grep -q audit-collector; "
            "! pgrep -x audit-collector >/dev/null; "
            "echo clean"))
        assert check.returncode == 0 and "clean" in check.stdout, (vm, check.stdout, check.stderr)
        if vm not in fleet.broken:  # a host that never got the collector has no spool
            kept = fleet.ssh(vm, "sudo test -d /var/lib/audit-collector/spool && "
                                 "sudo test ! -e /var/lib/audit-collector/chain.state && echo kept")
            assert "kept" in kept.stdout, (vm, kept.stdout, kept.stderr)
