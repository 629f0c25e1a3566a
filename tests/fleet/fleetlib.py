"""Helpers of the role tests (tests/fleet), run by `make ansible-test`.

Real `ansible-playbook` runs against "hosts" that are this machine itself (connection
local), each with its own prefix directory for everything the role writes (install,
config, state, logs, unit), so several hosts converge side by side without touching the
system. No systemd runs here: a host either keeps `audit_collector_service_manage` false
(unit file only) or runs in check mode, where the role must not ask systemd about a unit
it has not written. Results are read from a recording callback (callback_plugins/).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
COLLECTION = REPO / "ansible"
ROLE = COLLECTION / "roles" / "audit_collector"
ANSIBLE_BIN = REPO / ".cache" / "ansible-venv" / "bin"
PROJECT_VENV = REPO / ".venv"
# One per pytest process that runs beside another (make ansible-test runs two).
CACHE = REPO / ".cache" / "fleet-test" / os.environ.get("AC_FLEET_CACHE", "main")
WHEELSET = ROLE / "files" / "wheelset.py"
SOURCE_PATHS = ("pyproject.toml", "LICENSE", "collector", "bpf")
SYSTEM_PYTHON = "/usr/bin/python3"



@dataclass
class Run:
    """One ansible-playbook run: its output and the recorded events."""

    returncode: int
    output: str
    events: list[dict[str, Any]]

    def results(self, task: str | None = None, host: str | None = None,
                play: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == "result"
                and (task is None or e["task"].endswith(task))
                and (host is None or e["host"] == host)
                and (play is None or e["play"] == play)]

    def recap(self) -> dict[str, dict[str, int]]:
        """Per host: how many task results were changed, failed, unreachable (as Ansible's
        PLAY RECAP counts them)."""
        recap: dict[str, dict[str, int]] = {}
        for e in self.results():
            counts = recap.setdefault(e["host"], {"changed": 0, "failed": 0, "unreachable": 0})
            if e["status"] in counts:
                counts[e["status"]] += 1
            elif e["changed"] and e["status"] != "skipped":
                counts["changed"] += 1
        return recap

    def changed_tasks(self, host: str) -> list[str]:
        return [e["task"] for e in self.results(host=host) if e["status"] == "changed"]

    def explain(self) -> str:
        return self.output[-6000:]


@dataclass
class Fleet:
    """Local hosts, each with a prefix under `root`, and how to run playbooks on them."""

    root: Path
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    group_vars: dict[str, Any] = field(default_factory=dict)

    def add_host(self, name: str, **host_vars: Any) -> Path:
        prefix = self.root / name
        (prefix / "etc" / "systemd" / "system").mkdir(parents=True, exist_ok=True)
        self.hosts[name] = {**prefix_vars(prefix), **host_vars}
        return prefix

    def prefix(self, name: str) -> Path:
        return self.root / name

    def inventory(self) -> Path:
        path = self.root / "inventory.yml"
        data = {"all": {"children": {"audit_collector": {
            "hosts": self.hosts, "vars": {**LOCAL_HOST_VARS, **self.group_vars}}}}}
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def play(self, playbook: str | Path, *args: str, extra: dict[str, Any] | None = None,
             env: dict[str, str] | None = None, timeout: float = 600) -> Run:
        return ansible_playbook(playbook, "-i", str(self.inventory()), *args, extra=extra,
                                env=env, workdir=self.root, timeout=timeout)


LOCAL_HOST_VARS: dict[str, Any] = {
    "ansible_connection": "local",
    "ansible_python_interpreter": SYSTEM_PYTHON,
    "ansible_become": False,
    # No apt here, no systemd: the tests that need them say so.
    "audit_collector_install_packages": False,
    "audit_collector_service_manage": False,
    "audit_collector_verify": False,
    "audit_collector_controller_cache_dir": str(CACHE / "wheels"),
}


def prefix_vars(prefix: Path) -> dict[str, Any]:
    return {
        "audit_collector_install_dir": f"{prefix}/opt/audit-collector",
        "audit_collector_config_dir": f"{prefix}/etc/audit-collector",
        "audit_collector_state_dir": f"{prefix}/var/lib/audit-collector",
        "audit_collector_log_dir": f"{prefix}/var/log/audit-collector",
        "audit_collector_unit_dir": f"{prefix}/etc/systemd/system",
        "audit_collector_modules_dir": f"{prefix}/lib/modules",
    }


def ansible_env(workdir: Path, record: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{ANSIBLE_BIN}:{os.environ['PATH']}",
        "ANSIBLE_CONFIG": str(COLLECTION / "ansible.cfg"),
        "ANSIBLE_CALLBACK_PLUGINS": str(HERE / "callback_plugins"),
        "ANSIBLE_CALLBACKS_ENABLED": "fleet_recorder",
        "FLEET_RECORDER_FILE": str(record),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_HOME": str(workdir / ".ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(workdir / ".ansible-tmp"),
        "ANSIBLE_REMOTE_TEMP": str(workdir / ".ansible-remote-tmp"),
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "ANSIBLE_PIPELINING": "True",
    }


def ansible_playbook(playbook: str | Path, *args: str, extra: dict[str, Any] | None = None,
                     env: dict[str, str] | None = None, workdir: Path,
                     timeout: float = 600) -> Run:
    record = workdir / f"events-{os.getpid()}-{len(list(workdir.glob('events-*')))}.jsonl"
    cmd = [str(ANSIBLE_BIN / "ansible-playbook"), str(playbook), *args]
    if extra:
        cmd += ["-e", json.dumps(extra)]
    proc = subprocess.run(cmd, env={**ansible_env(workdir, record), **(env or {})}, cwd=workdir,
                          text=True, capture_output=True, timeout=timeout, check=False)
    events = [json.loads(line) for line in record.read_text().splitlines()] \
        if record.exists() else []
    record.with_suffix(".log").write_text(proc.stdout + proc.stderr)
    return Run(proc.returncode, proc.stdout + proc.stderr, events)


def snapshot_source(dest: Path) -> Path:
    """A copy of what goes into the wheel (plus the README), to edit without touching the
    checkout."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in (*SOURCE_PATHS, "README.md"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def build_env() -> Path:
    """The pinned build backend, as the role makes it (cached per build lock)."""
    lock = ROLE / "files" / "build-requirements.lock"
    import hashlib

    # Where the role makes it in the tests' controller cache (vars/main.yml).
    env = CACHE / "wheels" / f"build-env-{hashlib.sha256(lock.read_bytes()).hexdigest()[:16]}"
    if not (env / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        subprocess.run([str(env / "bin" / "pip"), "install", "--quiet",
                        "--disable-pip-version-check", "--no-deps", "--require-hashes",
                        "-r", str(lock)], check=True)
    return env


def wheelset(*args: str) -> str:
    proc = subprocess.run([sys.executable, str(WHEELSET), *args], check=True, text=True,
                          capture_output=True)
    return proc.stdout.strip()


@dataclass
class Release:
    """A release made the way `make ansible-release` makes one: the wheel in `dir`
    (served to pip with --find-links) and the role's lock pinning its hash."""

    dir: Path
    lock: Path
    wheel: Path

    @property
    def role_vars(self) -> dict[str, Any]:
        return {"audit_collector_lock_file": str(self.lock),
                "audit_collector_controller_pip_args": ["--find-links", str(self.dir)]}


def make_release(source: Path, dest: Path) -> Release:
    python = build_env() / "bin" / "python"
    wheel = Path(wheelset("build", str(source), str(dest / "dist"), *SOURCE_PATHS,
                          "--python", str(python)))
    lock = dest / "requirements.lock"
    wheelset("lock", str(ROLE / "files" / "requirements.lock"), str(wheel), str(lock))
    return Release(dest / "dist", lock, wheel)


def tree_state(path: Path) -> dict[str, str]:
    """Every file and link under path with its content hash or target (to compare)."""
    import hashlib

    state: dict[str, str] = {}
    for item in sorted(path.rglob("*")):
        rel = str(item.relative_to(path))
        if item.is_symlink():
            state[rel] = "-> " + os.readlink(item)
        elif item.is_file():
            state[rel] = hashlib.sha256(item.read_bytes()).hexdigest()
        else:
            state[rel] = "dir"
    return state


@dataclass
class InstalledCollection:
    path: Path  # a collections path (holding ansible_collections/)
    config: Path  # an ansible.cfg that knows nothing of the checkout

    def env(self) -> dict[str, str]:
        return {"ANSIBLE_CONFIG": str(self.config), "ANSIBLE_COLLECTIONS_PATH": str(self.path)}


def install_from_git(root: Path) -> InstalledCollection:
    repo = root / "repo"
    shutil.copytree(COLLECTION, repo / "ansible", symlinks=True,
                    ignore=shutil.ignore_patterns(".ansible", "__pycache__", "*.tar.gz"))
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@invalid", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "collection"], check=True)
    subprocess.run([*git, "tag", "v0.1.0"], check=True)
    requirements = root / "requirements.yml"
    requirements.write_text(yaml.safe_dump({"collections": [
        {"name": f"git+file://{repo}#/ansible/", "type": "git", "version": "v0.1.0"}]}))
    config = root / "ansible.cfg"
    config.write_text("[defaults]\ninterpreter_python = auto_silent\n")
    collections = root / "collections"
    subprocess.run([str(ANSIBLE_BIN / "ansible-galaxy"), "collection", "install", "-r",
                    str(requirements), "-p", str(collections)],
                   check=True, capture_output=True, text=True, cwd=root,
                   env={**os.environ, "ANSIBLE_CONFIG": str(config),
                        "ANSIBLE_HOME": str(root / ".ansible-home")})
    return InstalledCollection(collections, config)


def slowest(run: Run, count: int = 10) -> list[tuple[float, str]]:
    """The tasks that took longest (from one task start to the next), for tuning."""
    starts = [e for e in run.events if e["event"] == "start"]
    spans = [(round(b["time"] - a["time"], 1), a["task"]) for a, b in itertools.pairwise(starts)]
    return sorted(spans, reverse=True)[:count]
