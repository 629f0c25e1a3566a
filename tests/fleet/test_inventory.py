"""Bug 2: the inventory layout the README describes.

Following the old README (edit group_vars/all.yml, then `ansible-vault create
group_vars/all/vault.yml`) made Ansible ignore all.yml, and the playbook-level
group_vars/all.yml outranked the user's inventory group_vars/all.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.fleet.fleetlib import ANSIBLE_BIN, COLLECTION, ansible_env

SECRET = "dmF1bHQ6a2V5LWZyb20tdGhlLXZhdWx0"


def run(workdir: Path, *cmd: str) -> str:
    proc = subprocess.run([str(ANSIBLE_BIN / cmd[0]), *cmd[1:]], cwd=workdir, text=True,
                          capture_output=True, env=ansible_env(workdir, workdir / "events"),
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def readme_inventory(tmp_path: Path) -> tuple[Path, Path]:
    """The example inventory after the README's steps: settings edited, a vault added."""
    inv = tmp_path / "inventory"
    shutil.copytree(COLLECTION / "inventory" / "example", inv)
    main = inv / "group_vars" / "audit_collector" / "main.yml"
    main.write_text(main.read_text().replace(
        "audit_collector_elasticsearch_hosts: []",
        'audit_collector_elasticsearch_hosts: ["https://127.0.0.1:9200"]'))
    password = tmp_path / "vault-password"
    password.write_text("correct horse\n")
    vault = main.with_name("vault.yml")
    vault.write_text(yaml.safe_dump({"vault_audit_collector_elasticsearch_api_key": SECRET}))
    run(tmp_path, "ansible-vault", "encrypt", "--vault-password-file", str(password), str(vault))
    assert SECRET not in vault.read_text()
    return inv, password


def test_vault_file_adds_to_the_settings(tmp_path: Path) -> None:
    inv, password = readme_inventory(tmp_path)
    out = run(tmp_path, "ansible", "web1.example.com", "-i", str(inv / "hosts.ini"),
              "--vault-password-file", str(password), "-m", "ansible.builtin.debug", "-a",
              '{"msg": "{{ audit_collector_elasticsearch_hosts }}'
              ' {{ audit_collector_elasticsearch_api_key }}"}')
    assert "https://127.0.0.1:9200" in out and SECRET in out, out


def test_inventory_group_vars_all_is_not_overridden(tmp_path: Path) -> None:
    inv, password = readme_inventory(tmp_path)
    (inv / "group_vars" / "all.yml").write_text("audit_collector_memory_max: 1G\n")
    for playbook_dir in (COLLECTION, COLLECTION / "playbooks"):
        out = run(tmp_path, "ansible-inventory", "-i", str(inv / "hosts.ini"), "--host",
                  "web1.example.com", "--playbook-dir", str(playbook_dir),
                  "--vault-password-file", str(password), "--yaml")
        assert yaml.safe_load(out)["audit_collector_memory_max"] == "1G", (playbook_dir, out)
