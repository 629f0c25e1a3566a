"""Host names from an Ansible inventory (INI or YAML), for hosts that sent nothing.

INI: ``[group]`` sections list hosts (the first word of a line; ``key=value`` host
variables ignored); ``[group:vars]`` hold variables and ``[group:children]`` group names,
neither hosts. YAML: groups with ``hosts:`` mappings and ``children:``, nested to any
depth. Both expand Ansible's ranges: ``web[01:10].example``, ``db-[a:c]``, with a stride
``[0:20:5]``. Anything else is an error naming the line or key.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any

import yaml

from collector.delivery.statefiles import TextFileError, read_bounded_text

MAX_BYTES = 16 << 20
MAX_HOSTS = 1_000_000
_RANGE_RE = re.compile(r"\[([^\[\]:]+):([^\[\]:]+)(?::(\d+))?\]")
_SECTION_RE = re.compile(r"^\[([^\]\s]+)\]$")
_HOST_RE = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+$")


class InventoryError(ValueError):
    """An inventory that cannot be read; one line."""


def expand(pattern: str, where: str) -> list[str]:
    """web[01:03] -> web01, web02, web03 (leading zeros kept); letters a:c too."""
    match = _RANGE_RE.search(pattern)
    if match is None:
        return [pattern]
    first, last, stride = match.group(1), match.group(2), int(match.group(3) or 1)
    head, tail = pattern[: match.start()], pattern[match.end():]
    if first.isdigit() and last.isdigit():
        width = len(first) if first.startswith("0") else 0
        values = [str(n).zfill(width) for n in range(int(first), int(last) + 1, stride)]
    elif len(first) == len(last) == 1 and first in string.ascii_letters \
            and last in string.ascii_letters:
        values = [chr(c) for c in range(ord(first), ord(last) + 1, stride)]
    else:
        raise InventoryError(f"{where}: range [{first}:{last}] is neither numbers nor letters")
    if not values:
        raise InventoryError(f"{where}: range [{first}:{last}] is empty")
    hosts: list[str] = []
    for value in values:
        hosts.extend(expand(head + value + tail, where))
        if len(hosts) > MAX_HOSTS:
            raise InventoryError(f"{where}: more than {MAX_HOSTS} hosts")
    return hosts


def parse_ini(text: str, name: str) -> list[str]:
    hosts: list[str] = []
    kind = "hosts"  # the section's kind: hosts, vars or children
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        section = _SECTION_RE.match(line)
        if section:
            _group, _sep, suffix = section.group(1).partition(":")
            if suffix not in ("", "vars", "children"):
                raise InventoryError(f"{name} line {number}: unknown section kind :{suffix}")
            kind = suffix or "hosts"
            continue
        if line.startswith("["):
            raise InventoryError(f"{name} line {number}: not a section header: {line[:60]!r}")
        if kind != "hosts":
            continue
        host = line.split()[0]
        if not _HOST_RE.match(host) or "=" in host:
            raise InventoryError(f"{name} line {number}: not a host name: {host[:60]!r}")
        hosts.extend(expand(host, f"{name} line {number}"))
    return hosts


def _yaml_group(node: Any, path: str, hosts: list[str], depth: int = 0) -> None:
    if depth > 32:
        raise InventoryError(f"{path}: groups nested deeper than 32")
    if node is None:
        return
    if not isinstance(node, dict):
        raise InventoryError(f"{path}: a group must be a mapping")
    unknown = set(node) - {"hosts", "children", "vars"}
    if unknown:
        raise InventoryError(f"{path}: unknown key {sorted(map(str, unknown))[0]!r} (a group "
                             "has hosts, children, vars)")
    members = node.get("hosts")
    if members is not None:
        if not isinstance(members, dict):
            raise InventoryError(f"{path}.hosts: must be a mapping of host names")
        for host in members:
            if not isinstance(host, str) or not _HOST_RE.match(host):
                raise InventoryError(f"{path}.hosts: not a host name: {str(host)[:60]!r}")
            hosts.extend(expand(host, f"{path}.hosts"))
    children = node.get("children")
    if children is not None:
        if not isinstance(children, dict):
            raise InventoryError(f"{path}.children: must be a mapping of groups")
        for group, child in children.items():
            _yaml_group(child, f"{path}.children.{group}", hosts, depth + 1)


def parse_yaml(text: str, name: str) -> list[str]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise InventoryError(f"{name}: not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise InventoryError(f"{name}: a YAML inventory is a mapping of groups")
    hosts: list[str] = []
    for group, node in data.items():
        _yaml_group(node, f"{name}: {group}", hosts)
    return hosts


def load_inventory(path: str) -> list[str]:
    """The inventory's host names, each once, in order of first appearance."""
    file = Path(path)
    try:
        text = read_bounded_text(file, MAX_BYTES, f"inventory {path}")
    except TextFileError as exc:
        raise InventoryError(str(exc)) from None
    is_yaml = file.suffix in (".yml", ".yaml") or text.lstrip().startswith(("---", "all:"))
    hosts = parse_yaml(text, path) if is_yaml else parse_ini(text, path)
    if not hosts:
        raise InventoryError(f"inventory {path}: no hosts")
    return list(dict.fromkeys(hosts))


def matches(inventory_name: str, host_name: str) -> bool:
    """An inventory name names a host when equal, or when one is the other's short name
    (web1 and web1.example.org)."""
    if inventory_name == host_name:
        return True
    return inventory_name.split(".", 1)[0] == host_name.split(".", 1)[0] and (
        "." not in inventory_name or "." not in host_name)
