"""Helpers for the VM test's rolling upgrade from a previous collector version.

The previous version is a git ref of this repository (AC_VM_PREVIOUS: a tag or a commit).
Its whole tree is exported (`git archive`), so the old collector is installed by the old
playbook and role, as on a real fleet; the test's first rollout of the current tree is
then the upgrade. What must hold afterwards:

* markers exec'd while the old version ran (and Elasticsearch refused bulk writes, so they
  waited in the old version's spool) and markers exec'd after the upgrade are each in
  Elasticsearch exactly once: the spool was carried over and nothing was shipped twice;
* event.sequence has neither gaps (other than ranges that loss documents report) nor
  repeats across the restart, and each document's chain.prev is its predecessor's
  chain.hash.
"""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

SEQUENCE_PROBLEMS_FIELDS = ("event.sequence", "audit_collector.chain.prev/hash")


def export_previous(repo: Path, ref: str, dest: Path) -> Path:
    """The tree of `ref` under dest (once; an existing export of the same ref is reused)."""
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", f"{ref}^{{commit}}"],
                            check=True, text=True, capture_output=True).stdout.strip()
    stamp = dest / ".commit"
    if stamp.exists() and stamp.read_text() == commit:
        return dest
    archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit],
                             check=True, capture_output=True).stdout
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest)  # our own repository's tree
    stamp.write_text(commit)
    return dest


def parse_ssh_config(text: str) -> dict[str, dict[str, str]]:
    """`vagrant ssh-config` output: {host: {option (lower case): value}}."""
    hosts: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key.lower() == "host":
            current = hosts.setdefault(value.strip(), {})
        elif current is not None:
            current[key.lower()] = value.strip().strip('"')
    return hosts


def min_python_of(tree: Path) -> tuple[int, ...] | None:
    """The role's preflight minimum Python in an exported tree (None when it has none)."""
    for roles in ("ansible/roles", "roles"):  # the collection's layout, the older one
        defaults = tree / roles / "audit_collector" / "defaults" / "main.yml"
        if not defaults.exists():
            continue
        found = re.search(r'^audit_collector_preflight_min_python:\s*"?([0-9.]+)"?\s*$',
                          defaults.read_text(), re.M)
        if found:
            return tuple(int(part) for part in found.group(1).split("."))
    return None


def inventory_from_ssh_config(text: str, directory: Path, group: str = "audit_collector",
                              only: Iterable[str] | None = None) -> Path:
    """An INI inventory of the VMs (group `group`; the hosts in `only`, if given) for
    ansible-playbook runs that do not go through Vagrant's provisioner (the previous
    version's playbook, the uninstall)."""
    keep = set(only) if only is not None else None
    lines = [f"[{group}]"]
    for host, opts in parse_ssh_config(text).items():
        if keep is not None and host not in keep:
            continue
        lines.append(
            f"{host} ansible_host={opts['hostname']} ansible_port={opts.get('port', '22')} "
            f"ansible_user={opts.get('user', 'vagrant')} "
            f"ansible_ssh_private_key_file={opts['identityfile']} "
            "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'")
    path = directory / "inventory.ini"
    path.write_text("\n".join(lines) + "\n")
    return path


def marker_script(label: str, count: int) -> str:
    """Shell lines that exec /bin/echo ac-LABEL-0 .. ac-LABEL-(count-1), one exec each."""
    return (f"set -e; i=0; while [ $i -lt {count} ]; do /bin/echo ac-{label}-$i >/dev/null; "
            "i=$((i + 1)); done")


def marker_problems(docs: list[Mapping[str, Any]], label: str, count: int) -> list[str]:
    """Markers of `marker_script` without exactly one exec document. Only exec documents
    count: the current collector also writes an end document per process (same argv),
    the previous one may not."""
    found: dict[str, int] = {}
    for doc in docs:
        args = _get(doc, "process.args")
        if _get(doc, "event.action") == "exec" and isinstance(args, list) and len(args) == 2 \
                and args[0] == "/bin/echo":
            found[args[1]] = found.get(args[1], 0) + 1
    names = (f"ac-{label}-{i}" for i in range(count))
    return [f"{name}: {found.get(name, 0)} exec documents" for name in names
            if found.get(name, 0) != 1]


def _get(doc: Mapping[str, Any], dotted: str) -> Any:
    value: Any = doc
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def sequence_problems(docs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Gaps, repeats and chain breaks in one host's documents (empty when all is well)."""
    by_seq: dict[int, list[Mapping[str, Any]]] = {}
    problems: list[str] = []
    reported_lost: list[tuple[int, int]] = []
    for doc in docs:
        seq = _get(doc, "event.sequence")
        if seq is None:
            problems.append(f"document without event.sequence: {_get(doc, 'event.action')}")
            continue
        by_seq.setdefault(int(seq), []).append(doc)
        first = _get(doc, "audit_collector.lost.first_sequence")
        last = _get(doc, "audit_collector.lost.last_sequence")
        if first is not None and last is not None:
            reported_lost.append((int(first), int(last)))
    if not by_seq:
        return [*problems, "no documents"]
    for seq, same in sorted(by_seq.items()):
        if len(same) > 1:
            problems.append(f"event.sequence {seq} appears {len(same)} times")
    ordered = sorted(by_seq)
    for before, after in zip(ordered, ordered[1:]):
        if after == before + 1:
            prev_hash = _get(by_seq[before][0], "audit_collector.chain.hash")
            if _get(by_seq[after][0], "audit_collector.chain.prev") != prev_hash:
                problems.append(f"chain break between {before} and {after}")
            continue
        gap = (before + 1, after - 1)
        if not any(lo <= gap[0] and gap[1] <= hi for lo, hi in reported_lost):
            problems.append(f"event.sequence gap {gap[0]}..{gap[1]} without a loss document")
    return problems
