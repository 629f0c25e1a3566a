"""The rolling-upgrade helpers of the VM test (no VM: sequences, inventory, git export)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.vm.upgrade import (
    export_previous,
    inventory_from_ssh_config,
    marker_problems,
    marker_script,
    min_python_of,
    parse_ssh_config,
    sequence_problems,
)

REPO = Path(__file__).resolve().parents[2]


def _docs(*seqs: int) -> list[dict]:
    return [{"event": {"sequence": s, "action": "exec"},
             "audit_collector": {"chain": {"prev": f"h{s - 1}", "hash": f"h{s}"}}}
            for s in seqs]


def test_continuous_sequence_has_no_problems() -> None:
    assert sequence_problems(_docs(5, 6, 7, 8)) == []


def test_gap_repeat_and_chain_break_are_reported() -> None:
    docs = _docs(1, 2, 2, 5)
    docs[1]["audit_collector"]["chain"]["prev"] = "other"
    problems = sequence_problems(docs)
    assert "event.sequence 2 appears 2 times" in problems
    assert "chain break between 1 and 2" in problems
    assert "event.sequence gap 3..4 without a loss document" in problems


def test_gap_covered_by_a_loss_document_is_accepted() -> None:
    docs = _docs(1, 2, 6)
    docs.append({"event": {"sequence": 7, "action": "lost"},
                 "audit_collector": {"lost": {"first_sequence": 3, "last_sequence": 5},
                                     "chain": {"prev": "h6", "hash": "h7"}}})
    assert sequence_problems(docs) == []
    assert sequence_problems([{"event": {"action": "exec"}}])[0].startswith("document without")


SSH_CONFIG = """Host ac-bookworm-1
  HostName 192.168.121.23
  User vagrant
  Port 22
  UserKnownHostsFile /dev/null
  IdentityFile "/x/dotvagrant/machines/ac-bookworm-1/libvirt/private_key"

Host ac-trixie-1
  HostName 192.168.121.24
  User vagrant
  Port 2222
  IdentityFile /y/key
"""


def test_inventory_from_vagrant_ssh_config(tmp_path: Path) -> None:
    hosts = parse_ssh_config(SSH_CONFIG)
    assert hosts["ac-trixie-1"]["port"] == "2222"
    text = inventory_from_ssh_config(SSH_CONFIG, tmp_path).read_text().splitlines()
    assert text[0] == "[audit_collector]"
    assert text[1].startswith("ac-bookworm-1 ansible_host=192.168.121.23 ansible_port=22 "
                              "ansible_user=vagrant ansible_ssh_private_key_file=/x/dotvagrant/")
    assert "ansible_port=2222" in text[2] and "private_key_file=/y/key " in text[2]

    only = inventory_from_ssh_config(SSH_CONFIG, tmp_path, only=["ac-trixie-1"]).read_text()
    assert "ac-trixie-1 " in only and "ac-bookworm-1" not in only


def test_min_python_of_an_exported_tree(tmp_path: Path) -> None:
    assert min_python_of(REPO) == (3, 9)  # this tree: ansible/roles/...
    old = tmp_path / "roles" / "audit_collector" / "defaults"  # older trees: roles/...
    old.mkdir(parents=True)
    (old / "main.yml").write_text('x: 1\naudit_collector_preflight_min_python: "3.11"\n')
    assert min_python_of(tmp_path) == (3, 11)
    assert min_python_of(tmp_path / "roles" / "audit_collector" / "defaults") is None


def test_export_previous_is_the_ref_tree(tmp_path: Path) -> None:
    dest = export_previous(REPO, "HEAD", tmp_path / "prev")
    head = subprocess.run(["git", "-C", str(REPO), "show", "HEAD:pyproject.toml"],
                          check=True, capture_output=True, text=True).stdout
    assert (dest / "pyproject.toml").read_text() == head
    assert (dest / ".commit").read_text() == subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], check=True, capture_output=True,
        text=True).stdout.strip()
    assert export_previous(REPO, "HEAD", tmp_path / "prev") == dest  # reused


def test_marker_script_execs_each_marker(tmp_path: Path) -> None:
    script = marker_script("t-1", 3).replace("/bin/echo", "echo").replace(">/dev/null", "")
    out = subprocess.run(["/bin/sh", "-c", script], check=True, capture_output=True,
                         text=True).stdout
    assert out.split() == ["ac-t-1-0", "ac-t-1-1", "ac-t-1-2"]


def test_markers_count_exec_documents_only() -> None:
    """The current collector writes exec and end documents with the same argv: a marker is
    in once when it has one exec document; the end document does not double it."""
    def doc(action: str, i: int) -> dict:
        return {"event": {"action": action}, "process": {"args": ["/bin/echo", f"ac-x-{i}"]}}

    docs = [doc("exec", 0), doc("end", 0), doc("exec", 1), doc("exec", 1), doc("end", 2)]
    assert marker_problems(docs, "x", 3) == ["ac-x-1: 2 exec documents",
                                             "ac-x-2: 0 exec documents"]
    assert marker_problems(docs[:2], "x", 1) == []
