"""The collection as users get it: built with ansible-galaxy, installed from the artifact
or from a git URL, and run from outside the checkout."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.fleet.fleetlib import ANSIBLE_BIN, COLLECTION, InstalledCollection, ansible_env

INVENTORY = "[audit_collector]\nweb1 ansible_host=127.0.0.1\n"


def galaxy(workdir: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([str(ANSIBLE_BIN / "ansible-galaxy"), "collection", *args],
                          cwd=workdir, text=True, capture_output=True, check=False,
                          env={**ansible_env(workdir, workdir / "events"), **(env or {})})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("artifact")
    galaxy(out, "build", "--output-path", str(out), str(COLLECTION))
    (tarball,) = out.glob("audit_collector-fleet-*.tar.gz")
    return tarball


def test_artifact_holds_the_collection_and_no_checkout_files(artifact: Path) -> None:
    with tarfile.open(artifact) as tar:
        names = set(tar.getnames())
    for needed in ("MANIFEST.json", "LICENSE", "CHANGELOG.md", "README.md", "meta/runtime.yml",
                   "playbooks/site.yml", "playbooks/uninstall.yml",
                   "playbooks/prefetch_wheels.yml", "roles/audit_collector/tasks/main.yml",
                   "roles/audit_collector/files/requirements.lock",
                   "roles/audit_collector/files/wheelset.py",
                   "inventory/example/group_vars/audit_collector/main.yml"):
        assert needed in names, needed
    for checkout_only in ("site.yml", "ansible.cfg", "requirements.txt", ".ansible-lint"):
        assert checkout_only not in names, checkout_only
    assert not [n for n in names if n.startswith(".ansible/") or "__pycache__" in n]


def syntax_check(workdir: Path, env: dict[str, str]) -> None:
    (workdir / "hosts.ini").write_text(INVENTORY)
    playbooks = [f"audit_collector.fleet.{p}" for p in ("site", "uninstall", "prefetch_wheels")]
    proc = subprocess.run(
        [str(ANSIBLE_BIN / "ansible-playbook"), *playbooks, "--syntax-check", "-i", "hosts.ini"],
        cwd=workdir, text=True, capture_output=True, check=False,
        env={**ansible_env(workdir, workdir / "events"), **env})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("playbook: ") == 3, proc.stdout


def test_artifact_installs_and_runs_outside_the_checkout(artifact: Path, tmp_path: Path) -> None:
    config = tmp_path / "ansible.cfg"
    config.write_text("[defaults]\n")
    env = {"ANSIBLE_CONFIG": str(config), "ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "c")}
    galaxy(tmp_path, "install", "-p", str(tmp_path / "c"), str(artifact), env=env)
    syntax_check(tmp_path, env)


def test_git_url_install_runs_outside_the_checkout(installed_collection: InstalledCollection,
                                                   tmp_path: Path) -> None:
    manifest = (installed_collection.path / "ansible_collections" / "audit_collector" / "fleet"
                / "MANIFEST.json")
    assert manifest.exists()
    syntax_check(tmp_path, installed_collection.env())
