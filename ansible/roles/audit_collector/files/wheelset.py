"""Controller-side helper of the role's wheel sets (run with the controller's Python).

  fingerprint SRC PATH... [--extra FILE...]   sha256 over what goes into the wheel
  build SRC DEST PATH... --python PY          reproducible wheel of SRC into DEST
  lock LOCK WHEEL OUT                         LOCK with the collector pinned to WHEEL's hash
  deps LOCK OUT                               LOCK without the collector (its dependencies)
  select LOCK TAG OUT                         the entries of LOCK that a host of TAG
                                              ("cp39-x86_64") installs

The lock is universal (one file for every supported Python): an entry may carry an
environment marker (`orjson==3.11.5 ; python_full_version < '3.10'`). The host's pip
evaluates those itself, but the controller's `pip download --python-version` evaluates
them against the controller's own Python, so the controller selects each host type's
entries first (select: the markers evaluated for that host type and dropped) and
downloads exactly those.

A build copies only PATHs (never README.md: the wheel gets a one-line stub instead, so a
README edit neither changes the wheel nor restarts a fleet), normalises file modes, fixes
every timestamp with SOURCE_DATE_EPOCH and builds with the pinned backend of PY: two
controllers building the same source get byte-identical wheels.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Any fixed instant works; zip timestamps cannot predate 1980.
SOURCE_DATE_EPOCH = "315532800"
PACKAGE = "audit-collector"
README_STUB = "audit-collector: eBPF host audit agent.\n"
SKIPPED_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache", "build"}


def source_files(src: Path, paths: list[str]) -> list[Path]:
    """Regular files under PATHs, relative to SRC, in a stable order."""
    found: list[Path] = []
    for name in paths:
        top = src / name
        if top.is_file():
            found.append(Path(name))
        elif top.is_dir():
            for root, dirs, files in os.walk(top):
                dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and
                                 not d.endswith(".egg-info"))
                found += [Path(root, f).relative_to(src) for f in files
                          if not f.endswith((".pyc", ".pyo"))]
    return sorted(set(found))


def fingerprint(src: Path, paths: list[str], extra: list[Path]) -> str:
    digest = hashlib.sha256()
    for rel in source_files(src, paths):
        digest.update(f"{rel.as_posix()}\0".encode())
        digest.update(hashlib.sha256((src / rel).read_bytes()).digest())
    for path in extra:
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def copy_sources(src: Path, dest: Path, paths: list[str]) -> None:
    """Copy with fixed modes: the wheel records them."""
    for rel in source_files(src, paths):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, target)
        target.chmod(0o644)
    for root, dirs, _ in os.walk(dest):
        for d in dirs:
            Path(root, d).chmod(0o755)
    (dest / "README.md").write_text(README_STUB)


def build(src: Path, dest: Path, paths: list[str], python: str) -> Path:
    """Build into DEST, which appears only once the wheel is complete."""
    # pip runs from a temporary directory; a venv's python must stay a path into the venv.
    python = os.path.abspath(python) if os.sep in python else python
    with tempfile.TemporaryDirectory(prefix="audit-collector-build-") as tmp:
        tree, out = Path(tmp, "src"), Path(tmp, "out")
        tree.mkdir()
        copy_sources(src, tree, paths)
        env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "PYTHONHASHSEED": "0",
               "TZ": "UTC", "LC_ALL": "C.UTF-8", "PIP_NO_INPUT": "1"}
        subprocess.run(
            [python, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--no-build-isolation", "--no-cache-dir", "--wheel-dir", str(out),
             str(tree)],
            check=True, env=env, cwd=tmp, stdout=sys.stderr)
        (wheel,) = out.glob("*.whl")
        dest.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
        shutil.move(str(wheel), staged / wheel.name)
        staged.chmod(0o755)
        if dest.exists():
            shutil.rmtree(dest)
        staged.rename(dest)
    return dest / wheel.name


def wheel_version(wheel: Path) -> str:
    match = re.match(r"^audit_collector-([^-]+)-", wheel.name)
    if not match:
        raise SystemExit(f"wheelset: {wheel.name} is not an audit-collector wheel")
    return match.group(1)


def without_collector(lock_text: str) -> str:
    """The lock without its audit-collector entry."""
    kept: list[str] = []
    skipping = False
    for line in lock_text.splitlines():
        starts_entry = bool(line) and not line[0].isspace() and not line.startswith("#")
        if starts_entry:
            skipping = re.match(r"^audit[-_]collector\s*==", line, re.I) is not None
        elif not line.strip():
            skipping = False
        if not skipping:
            kept.append(line)
    return "\n".join(kept).rstrip("\n") + "\n"


def pin_collector(lock_text: str, wheel: Path) -> str:
    """The lock without its audit-collector entry, plus one pinned to WHEEL."""
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    entry = f"{PACKAGE}=={wheel_version(wheel)} \\\n    --hash=sha256:{sha}\n"
    return without_collector(lock_text) + entry


def lock_entries(lock_text: str) -> list[list[str]]:
    """The lock's lines grouped: a requirement with its indented hash and comment lines,
    or a top-level comment or blank line alone."""
    groups: list[list[str]] = []
    for line in lock_text.splitlines():
        if groups and line[:1].isspace():
            groups[-1].append(line)
        else:
            groups.append([line])
    return groups


def marker_environment(tag: str) -> dict[str, str]:
    """PEP 508 marker values of a Linux CPython host of TAG (cpXY-ARCH). The patch
    level is unknown (one set serves every X.Y host): a current one, X.Y.99, since a lock
    may split inside a minor version (cryptography: 3.9.0 and 3.9.1 get an older release;
    the distributions ship later patch levels, Debian 11 3.9.2)."""
    match = re.fullmatch(r"cp(\d)(\d+)-(\w+)", tag)
    if not match:
        raise SystemExit(f"wheelset: {tag!r} is not a host type like cp39-x86_64")
    major, minor, arch = match.groups()
    return {"python_version": f"{major}.{minor}", "python_full_version": f"{major}.{minor}.99",
            "implementation_name": "cpython", "implementation_version": f"{major}.{minor}.99",
            "platform_python_implementation": "CPython", "platform_system": "Linux",
            "sys_platform": "linux", "os_name": "posix", "platform_machine": arch,
            "platform_release": "", "platform_version": "", "extra": ""}


def select_for(lock_text: str, tag: str) -> str:
    """The entries of the lock that a TAG host installs, without their markers (pip
    download would evaluate them against the controller's Python)."""
    try:
        from packaging.markers import Marker
    except ImportError:  # a controller Python without packaging still has pip's copy
        from pip._vendor.packaging.markers import Marker
    env = marker_environment(tag)
    kept: list[str] = []
    for group in lock_entries(lock_text):
        first = group[0]
        requirement, sep, marker = first.rstrip("\\ ").partition(";")
        if sep and not first.startswith("#"):
            if not Marker(marker).evaluate(env):
                continue
            first = requirement.rstrip() + (" \\" if first.endswith("\\") else "")
        kept += [first, *group[1:]]
    return "\n".join(kept).rstrip("\n") + "\n"


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wheelset")
    sub = parser.add_subparsers(dest="command", required=True)
    fp = sub.add_parser("fingerprint")
    fp.add_argument("src", type=Path)
    fp.add_argument("paths", nargs="+")
    fp.add_argument("--extra", type=Path, action="append", default=[])
    bd = sub.add_parser("build")
    bd.add_argument("src", type=Path)
    bd.add_argument("dest", type=Path)
    bd.add_argument("paths", nargs="+")
    bd.add_argument("--python", required=True)
    lk = sub.add_parser("lock")
    lk.add_argument("lock", type=Path)
    lk.add_argument("wheel", type=Path)
    lk.add_argument("out", type=Path)
    dp = sub.add_parser("deps")
    dp.add_argument("lock", type=Path)
    dp.add_argument("out", type=Path)
    sl = sub.add_parser("select")
    sl.add_argument("lock", type=Path)
    sl.add_argument("tag")
    sl.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "fingerprint":
        print(fingerprint(args.src, args.paths, args.extra))
    elif args.command == "build":
        print(build(args.src, args.dest, args.paths, args.python))
    elif args.command == "lock":
        write_atomically(args.out, pin_collector(args.lock.read_text(), args.wheel))
    elif args.command == "select":
        write_atomically(args.out, select_for(args.lock.read_text(), args.tag))
    else:
        write_atomically(args.out, without_collector(args.lock.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
