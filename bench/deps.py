"""Tools the benchmarks need, installed from Debian's packages when missing (idempotent)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

# command -> Debian package providing it
TOOLS = {"gcc": "gcc", "auditd": "auditd", "auditctl": "auditd"}


def missing_tools(tools: dict[str, str] | None = None) -> dict[str, str]:
    wanted = tools or TOOLS
    return {cmd: pkg for cmd, pkg in wanted.items() if shutil.which(cmd) is None}


def ensure_tools(tools: dict[str, str] | None = None) -> dict[str, str]:
    """Install the packages of missing commands; {command: why it is still missing}."""
    missing = missing_tools(tools)
    if not missing:
        return {}
    packages = sorted(set(missing.values()))
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return {cmd: f"not installed (apt-get install -y {pkg})" for cmd, pkg in missing.items()}
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        subprocess.run(install, env=env, capture_output=True, check=False)
    return {cmd: f"could not install {pkg} with apt-get"
            for cmd, pkg in missing_tools(tools).items()}


def bcc_available() -> str | None:
    """None when BCC's Python binding imports, else the reason."""
    try:
        import bcc  # noqa: F401
    except ImportError as exc:
        return f"python3-bpfcc missing ({exc}); apt-get install -y python3-bpfcc"
    return None


def extra_requirements(extra: str, pyproject: Path = PYPROJECT) -> list[str]:
    """The requirements of one optional-dependency group of pyproject.toml."""
    import tomllib  # the bench runs on the system's Python 3.11 (BCC's), which has it

    with open(pyproject, "rb") as handle:
        project = tomllib.load(handle)["project"]
    return list(project.get("optional-dependencies", {}).get(extra, []))


def ensure_extra(extra: str, modules: list[str]) -> str | None:
    """pip-install pyproject's `extra` group into this interpreter when one of `modules`
    does not import; None when they all import (afterwards), else why not."""
    if all(importlib.util.find_spec(m) is not None for m in modules):
        return None
    wanted = extra_requirements(extra)
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                           "--disable-pip-version-check", *wanted],
                          capture_output=True, text=True, check=False)
    importlib.invalidate_caches()
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return f"{', '.join(missing)} missing and pip install {' '.join(wanted)} failed: {detail[0]}"
