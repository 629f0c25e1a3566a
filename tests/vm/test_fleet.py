"""Fleet rollout on two real Debian 12 VMs (make vm-test).

The test boots the VMs with vagrant/Vagrantfile (libvirt provider, software-emulated CPU)
inside a network namespace it creates (tests/vm/sandbox.sh), rolls the collector out with
ansible/site.yml through Vagrant's Ansible provisioner, runs it a second time and expects
no change, makes each VM exec a distinctive command, enter namespaces and type a command
into an interactive bash, expects those documents in the Elasticsearch-API test server
(tests.esserver, listening on the namespace's bridge) with the VM's host.name, then runs
ansible/uninstall.yml and expects the hosts clean.

Every packet stays inside the namespace: the management network is isolated (no forward,
no NAT, no uplink) and exists only there. The only steps outside it are the image build
(Debian's mirror) and the controller's wheel prefetch (PyPI), both cached.

Environment:
  AC_VM_TEST=1        run at all (make vm-test sets it); otherwise every test is skipped
  AC_VM_VERIFY=0      infrastructure only: no /health wait, no document assertions
  AC_VM_SERIAL        rollout batch size (default 100%; the role's default is 30%)
  AC_VM_KEEP=1        leave the VMs running after the test (tests/vm/sandbox.sh stop ...)
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CACHE = REPO / ".cache" / "vm"
RUN = CACHE / "run"
ANSIBLE_BIN = REPO / ".cache" / "ansible-venv" / "bin"
PYTHON = REPO / ".venv" / "bin" / "python"
SANDBOX = HERE / "sandbox.sh"
NET_PREFIX = "192.168.121"
ES_URL = f"http://{NET_PREFIX}.1:9200"
VMS = ("ac-vm1", "ac-vm2")
DATA_STREAM = "logs-audit_collector-default"
SOURCE_PATHS = ("pyproject.toml", "README.md", "LICENSE", "collector", "bpf")

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(os.environ.get("AC_VM_TEST") != "1",
                       reason="boots VMs: run with `make vm-test`"),
]

VERIFY = os.environ.get("AC_VM_VERIFY", "1") != "0"


def log(msg: str) -> None:
    print(f"[vm-test {time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class Fleet:
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)
    recaps: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    ssh_config: Path = RUN / "ssh-config"

    def sandbox(self, *cmd: str, timeout: float = 900, check: bool = True,
                input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SANDBOX), "exec", str(RUN), *cmd], env=self.env, cwd=REPO,
                              text=True, capture_output=True, timeout=timeout, check=check,
                              input=input)

    def vagrant(self, *args: str, timeout: float = 1800,
                logname: str | None = None) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        proc = self.sandbox("vagrant", *args, timeout=timeout, check=False)
        if logname:
            (RUN / f"{logname}.log").write_text(proc.stdout + proc.stderr)
            self.timings[logname] = round(time.monotonic() - started, 1)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-60:])
            raise AssertionError(f"vagrant {' '.join(args)} failed ({proc.returncode}):\n{tail}")
        return proc

    def ssh(self, vm: str, script: str, timeout: float = 300,
            tty: bool = False) -> subprocess.CompletedProcess[str]:
        opts = ["-F", str(self.ssh_config)] + (["-tt"] if tty else [])
        return self.sandbox("ssh", *opts, vm, script, timeout=timeout, check=False)

    def es(self, method: str, path: str, body: Any = None) -> Any:
        cmd = ["curl", "-s", "-X", method, "-H", "Content-Type: application/json",
               f"{ES_URL}{path}"]
        if body is not None:
            cmd += ["--data-binary", "@-"]
        proc = self.sandbox(*cmd, timeout=60, input=json.dumps(body) if body else None)
        return json.loads(proc.stdout)


def play_recap(output: str) -> dict[str, dict[str, int]]:
    """Per-host counters of the last PLAY RECAP in an ansible-playbook output."""
    text = output.rsplit("PLAY RECAP", 1)[-1]
    recap: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(\S+)\s+:\s+(.*)$", line)
        if m and "ok=" in m.group(2):
            recap[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return recap


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, text=True, check=True, cwd=REPO, **kw)


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


@pytest.fixture(scope="module")
def fleet() -> Any:
    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, on_term)
    subprocess.run([str(SANDBOX), "stop", str(RUN)], check=False)
    shutil.rmtree(RUN, ignore_errors=True)
    RUN.mkdir(parents=True)
    (RUN / "serial").mkdir()
    timings: dict[str, float] = {}

    started = time.monotonic()
    box = run([str(HERE / "build-box.sh"), str(CACHE)], capture_output=True).stdout.strip()
    timings["box"] = round(time.monotonic() - started, 1)
    box_name = "ac-test/" + Path(box).stem
    log(f"box {box} ({timings['box']} s)")

    source = RUN / "src"
    _snapshot_source(source)
    extra_vars: dict[str, Any] = {
        "audit_collector_source_dir": str(source),
        "audit_collector_controller_cache_dir": str(CACHE / "wheels"),
        "audit_collector_rollout_serial": os.environ.get("AC_VM_SERIAL", "100%"),
        "audit_collector_verify": VERIFY,
        # BCC compiles its programs at start-up; on an emulated CPU that takes minutes.
        "audit_collector_verify_retries": 120,
    }
    env = {
        **os.environ,
        "PATH": f"{ANSIBLE_BIN}:{os.environ['PATH']}",
        "VAGRANT_HOME": str(CACHE / "vagrant-home"),
        "VAGRANT_CWD": str(REPO / "vagrant"),
        "VAGRANT_DOTFILE_PATH": str(RUN / "dotvagrant"),
        "VAGRANT_CHECKPOINT_DISABLE": "1",
        "AC_VM_COUNT": str(len(VMS)),
        "AC_VM_BOX": box_name,
        "AC_VM_MEMORY": "1024",
        "AC_VM_CPUS": "1",
        "AC_VM_DRIVER": "qemu",
        "AC_VM_CPU_MODE": "custom",
        "AC_VM_CPU_MODEL": "qemu64",
        "AC_VM_MGMT_NET_NAME": "acvm-mgmt",
        "AC_VM_MGMT_NET_ADDRESS": f"{NET_PREFIX}.0/24",
        "AC_VM_MGMT_NET_MODE": "none",
        "AC_VM_PREFIX": "acvm_",
        "AC_VM_SERIAL_LOG_DIR": str(RUN / "serial"),
        "AC_ES_URL": ES_URL,
        "AC_ANSIBLE_EXTRA_VARS": json.dumps(extra_vars),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
    }
    fleet = Fleet(env=env, timings=timings)

    # The controller's wheels come from PyPI: fetch them here, outside the namespace
    # (cached; keyed by the source fingerprint). Inside, the role finds them in the cache.
    started = time.monotonic()
    run([str(ANSIBLE_BIN / "ansible-playbook"), "ansible/prefetch-wheels.yml",
         "-e", json.dumps({**extra_vars, "audit_collector_wheel_tags": ["cp311-x86_64"]})],
        env={**env, "ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg")},
        capture_output=True)
    timings["prefetch_wheels"] = round(time.monotonic() - started, 1)

    es_server = None
    try:
        started = time.monotonic()
        run([str(SANDBOX), "start", str(RUN)], capture_output=True,
            env={**env, "AC_VM_MGMT_NET_NAME": "acvm-mgmt", "AC_VM_MGMT_NET_PREFIX": NET_PREFIX})
        timings["sandbox"] = round(time.monotonic() - started, 1)
        es_log = (RUN / "esserver.log").open("w")
        es_server = subprocess.Popen(
            [str(SANDBOX), "exec", str(RUN), str(PYTHON), "-m", "tests.esserver",
             "--host", f"{NET_PREFIX}.1", "--port", "9200", "--major", "8"],
            cwd=REPO, stdout=es_log, stderr=subprocess.STDOUT)
        for _ in range(100):
            probe = fleet.sandbox("curl", "-sf", ES_URL, check=False, timeout=10)
            if probe.returncode == 0:
                break
            time.sleep(0.3)
        else:
            raise AssertionError("the Elasticsearch test server did not come up")

        boxes = fleet.sandbox("vagrant", "box", "list").stdout
        if box_name not in boxes:
            fleet.sandbox("vagrant", "box", "add", "--name", box_name, box)
        log("booting the VMs")
        fleet.vagrant("up", "--no-provision", logname="vagrant_up")
        log(f"VMs up in {fleet.timings['vagrant_up']} s")
        fleet.ssh_config.write_text(fleet.sandbox("vagrant", "ssh-config").stdout)
        yield fleet
    finally:
        (RUN / "timings.json").write_text(json.dumps(
            {"timings_s": fleet.timings, "recaps": fleet.recaps}, indent=2))
        log(f"timings: {json.dumps(fleet.timings)}")
        if es_server is not None:
            es_server.terminate()
        if os.environ.get("AC_VM_KEEP") != "1":
            subprocess.run([str(SANDBOX), "stop", str(RUN)], check=False)
        signal.signal(signal.SIGTERM, previous)


def _provision(fleet: Fleet, name: str) -> dict[str, dict[str, int]]:
    log(f"ansible-playbook ansible/site.yml ({name})")
    proc = fleet.vagrant("provision", logname=name, timeout=3600)
    recap = play_recap(proc.stdout)
    fleet.recaps[name] = recap
    log(f"{name}: {fleet.timings[name]} s, recap {recap}")
    assert set(recap) == set(VMS), recap
    for host, counters in recap.items():
        assert counters["failed"] == 0 and counters["unreachable"] == 0, (host, counters)
    return recap


def test_first_rollout(fleet: Fleet) -> None:
    recap = _provision(fleet, "site_run1")
    assert all(c["changed"] > 0 for c in recap.values()), recap


def test_second_rollout_changes_nothing(fleet: Fleet) -> None:
    recap = _provision(fleet, "site_run2")
    changed = {host: c["changed"] for host, c in recap.items()}
    if any(changed.values()):
        log_text = (RUN / "site_run2.log").read_text()
        tasks = re.findall(r"TASK \[([^\]]+)\][^\n]*\n(?:[^\n]*\n)*?changed: \[([^\]]+)\]",
                           log_text)
        pytest.fail(f"second run changed something: {changed}; tasks: {tasks}")


def test_collector_healthy(fleet: Fleet) -> None:
    if not VERIFY:
        pytest.skip("AC_VM_VERIFY=0")
    for vm in VMS:
        proc = fleet.ssh(vm, "systemctl is-active audit-collector && python3 -c "
                             "\"import urllib.request as u; "
                             "print(u.urlopen('http://127.0.0.1:9477/health').read().decode())\"")
        assert proc.returncode == 0, (vm, proc.stdout, proc.stderr)
        health = json.loads(proc.stdout.splitlines()[-1])
        assert health.get("probes_attached") is True, (vm, health)


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
    tokens = {vm: secrets.token_hex(4) for vm in VMS}
    for vm, tok in tokens.items():
        proc = fleet.ssh(vm, ACTIONS.format(tok=tok))
        assert proc.returncode == 0, (vm, proc.stdout, proc.stderr)

    missing: dict[str, list[str]] = {}
    deadline = time.monotonic() + 180
    while True:
        missing = {}
        for vm, tok in tokens.items():
            fleet.es("POST", f"/{DATA_STREAM}/_refresh")
            result = fleet.es("POST", f"/{DATA_STREAM}/_search", {
                "size": 10000,
                "query": {"bool": {"filter": [
                    {"term": {"host.name": vm}},
                    {"terms": {"event.action": ["exec", "unshare", "setns", "bash_command"]}},
                ]}},
            })
            docs = [h["_source"] for h in result.get("hits", {}).get("hits", [])]
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


def test_uninstall_leaves_hosts_clean(fleet: Fleet) -> None:
    inventory = RUN / "dotvagrant" / "provisioners" / "ansible" / "inventory"
    env = {**fleet.env, "ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg"),
           "ANSIBLE_HOST_KEY_CHECKING": "false"}
    started = time.monotonic()
    proc = subprocess.run(
        [str(SANDBOX), "exec", str(RUN), str(ANSIBLE_BIN / "ansible-playbook"),
         "-i", str(inventory), "ansible/uninstall.yml"],
        env=env, cwd=REPO, text=True, capture_output=True, timeout=1800, check=False)
    (RUN / "uninstall.log").write_text(proc.stdout + proc.stderr)
    fleet.timings["uninstall"] = round(time.monotonic() - started, 1)
    fleet.recaps["uninstall"] = play_recap(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    for vm in VMS:
        check = fleet.ssh(vm, (
            "set -e; "
            "sudo test ! -e /etc/systemd/system/audit-collector.service; "
            "sudo test ! -e /opt/audit-collector; "
            "sudo test ! -e /etc/audit-collector; "
            "sudo test ! -e /var/log/audit-collector; "
            "! systemctl list-unit-files audit-collector.service | grep -q audit-collector; "
            "! pgrep -x audit-collector >/dev/null; "
            "sudo test -d /var/lib/audit-collector/spool; "  # kept by default
            "sudo test ! -e /var/lib/audit-collector/chain.state; "
            "echo clean"))
        assert check.returncode == 0 and "clean" in check.stdout, (vm, check.stdout, check.stderr)
