"""The role's universal lock gives every supported Python a resolvable, hash-pinned set.

The lock is made by `make ansible-lock` (uv, --universal, from the preflight's minimum
Python up): an entry may hold for some Pythons only (`orjson==3.11.5 ; python_full_version
< '3.10'`: the last orjson with cp39 wheels). The controller selects each host type's
entries (wheelset.py select) and downloads them; a host installs the set offline with
--require-hashes. Here the prefetch playbook makes the sets of Debian 11, 12 and 13
(cp39, cp311, cp313) and each is installed into a venv of that Python (pyenv), with the
pip Debian 11's venv has (20.3.4) for 3.9.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fleet.fleetlib import CACHE, COLLECTION, ROLE, Release, ansible_playbook, wheelset

LOCK = ROLE / "files" / "requirements.lock"
PYENV = Path.home() / ".pyenv" / "versions"
# Host type -> the pip its distribution's venv starts with ("" = the interpreter's own).
SUPPORTED = {"cp39-x86_64": "20.3.4", "cp311-x86_64": "", "cp313-x86_64": ""}


def pins(lock_text: str) -> list[tuple[str, str, str]]:
    """(name, version, marker) of each entry."""
    found = []
    for line in lock_text.splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+?)\s*(?:;\s*(.*?))?\s*\\?$", line)
        if m:
            found.append((m.group(1).lower(), m.group(2), m.group(3) or ""))
    return found


def pyenv_python(tag: str) -> Path | None:
    minor = tag.split("-")[0][3:]
    found = sorted(PYENV.glob(f"3.{minor}.*/bin/python3.{minor}"))
    return found[-1] if found else None


@pytest.mark.parametrize("tag", ["cp39-x86_64", "cp310-x86_64", "cp311-x86_64",
                                 "cp312-x86_64", "cp313-x86_64"])
def test_select_gives_one_pin_per_package(tag: str, tmp_path: Path) -> None:
    out = tmp_path / "selected.lock"
    wheelset("select", str(LOCK), tag, str(out))
    selected = pins(out.read_text())
    names = [name for name, _, _ in selected]
    assert len(names) == len(set(names)), selected
    assert all(marker == "" for _, _, marker in selected), "markers left for pip download"
    every = {name for name, _, _ in pins(LOCK.read_text())}
    unconditional = {name for name, _, marker in pins(LOCK.read_text()) if not marker}
    assert unconditional <= set(names) <= every
    # Every hash line of a kept entry stays with it.
    assert out.read_text().count("--hash=sha256:") >= len(names)


def test_the_lock_splits_where_a_dependency_left_python_39() -> None:
    """Not one pin for all: the 3.9 entries differ from the 3.13 ones (else the lock was
    made for a newer Python than the preflight's minimum)."""
    lock = LOCK.read_text()
    assert "python_full_version < '3.10'" in lock


@pytest.fixture(scope="module")
def wheelsets(release: Release, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The release's sets for the three host types, made by the prefetch playbook."""
    run = ansible_playbook(COLLECTION / "prefetch-wheels.yml",
                           workdir=tmp_path_factory.mktemp("prefetch3"), extra={
                               **release.role_vars,
                               "audit_collector_controller_cache_dir": str(CACHE / "wheels"),
                               "audit_collector_wheel_tags": list(SUPPORTED)})
    assert run.returncode == 0, run.explain()
    sets = [d for d in (CACHE / "wheels").glob("release-*")
            if (d / "requirements.lock").exists()
            and (d / "requirements.lock").read_text() == release.lock.read_text()]
    assert sets, "the prefetch made no set with the release's lock"
    return sets[0]


@pytest.mark.parametrize("tag", list(SUPPORTED))
def test_each_supported_python_installs_its_set(tag: str, wheelsets: Path,
                                                tmp_path: Path) -> None:
    python = pyenv_python(tag)
    if python is None:
        pytest.skip(f"no pyenv interpreter for {tag} under {PYENV}")
    venv = tmp_path / "venv"
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    if SUPPORTED[tag]:
        # Debian 11's pip, put in by this process's pip (quicker than ensurepip + downgrade).
        subprocess.run([str(python), "-m", "venv", "--without-pip", str(venv)], check=True)
        subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--python",
                        str(venv / "bin" / "python"), "install", "-q",
                        f"pip=={SUPPORTED[tag]}"], check=True, capture_output=True)
    else:
        subprocess.run([str(python), "-m", "venv", str(venv)], check=True)
    wheels = wheelsets / tag
    proc = subprocess.run([*pip, "install", "--no-index", "--require-hashes", "--find-links",
                           str(wheels), "--requirement", str(wheels / "requirements.lock")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Successfully installed" in proc.stdout
    installed = subprocess.run([str(venv / "bin" / "audit-collector"), "--version"],
                               capture_output=True, text=True, check=False)
    assert installed.returncode == 0 and "0.1.0" in installed.stdout + installed.stderr, \
        installed
    probe = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import orjson, msgspec, elasticsearch, yaml, tenacity, "
                            "prometheus_client, elftools, collector.cli"],
                           capture_output=True, text=True, check=False)
    assert probe.returncode == 0, probe.stderr
