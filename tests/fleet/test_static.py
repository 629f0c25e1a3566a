"""Checks that need no host: syntax, metadata against the role's own limits, specs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.fleet.fleetlib import ANSIBLE_BIN, COLLECTION, ROLE, ansible_env

# The system Python of each release the role could list (distributions' own packages).
SYSTEM_PYTHON = {
    "Debian": {"bullseye": "3.9", "bookworm": "3.11", "trixie": "3.13"},
    "Ubuntu": {"focal": "3.8", "jammy": "3.10", "noble": "3.12"},
    "EL": {"8": "3.6", "9": "3.9", "10": "3.12"},
}


def version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def defaults() -> dict:
    return yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def test_syntax_of_the_checkout_playbooks(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(ANSIBLE_BIN / "ansible-playbook"), "--syntax-check", "-i",
         str(COLLECTION / "inventory" / "example" / "hosts.ini"),
         *(str(COLLECTION / p) for p in ("site.yml", "uninstall.yml", "prefetch-wheels.yml"))],
        env=ansible_env(tmp_path, tmp_path / "events"), capture_output=True, text=True,
        check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_listed_platforms_pass_the_python_preflight() -> None:
    """meta/main.yml listed Ubuntu jammy, whose Python 3.10 fails the preflight."""
    minimum = version(defaults()["audit_collector_preflight_min_python"])
    meta = yaml.safe_load((ROLE / "meta" / "main.yml").read_text())
    too_old = [f"{p['name']} {v} ({SYSTEM_PYTHON[p['name']][str(v)]})"
               for p in meta["galaxy_info"]["platforms"] for v in p["versions"]
               if version(SYSTEM_PYTHON[p["name"]][str(v)]) < minimum]
    assert too_old == []


def test_argument_spec_defaults_match_the_defaults() -> None:
    """One place for each default (e.g. the Python minimum): the spec repeats it, so the
    two must agree."""
    values = defaults()
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    wrong = {}
    for entry, spec in specs["argument_specs"].items():
        for name, option in spec["options"].items():
            if name not in values:
                wrong[f"{entry}.{name}"] = "not in defaults/main.yml"
            elif "{{" not in str(values[name]) and option.get("default") != values[name]:
                wrong[f"{entry}.{name}"] = (option.get("default"), values[name])
    assert wrong == {}


def test_role_defaults_are_documented_in_the_spec() -> None:
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    documented = {name for spec in specs["argument_specs"].values() for name in spec["options"]}
    assert set(defaults()) - documented == set()
