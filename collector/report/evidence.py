"""`--evidence DIR`: the report as evidence an auditor can keep and check offline.

The folder holds the report file, ``queries.json`` (every distinct query sent, with how
many requests it took), ``cluster.json`` (the cluster's name, UUID and version),
``tool.json`` (the tool's version, the command line, start and end times) and
``manifest.json`` (the SHA-256 and size of each of those files), signed: ``manifest.sig``
is the Ed25519 signature (base64) of manifest.json's bytes. The key is the auditor's
(``--signing-key FILE``, PEM) or one generated for this folder, whose public half is
written beside the folder (``DIR.pub``) and whose private half is discarded.

The folder is built under a temporary name next to DIR and renamed to DIR only when every
file is written and synced: a folder named DIR is always complete.

`verify-evidence DIR [--key PUBFILE]` checks it offline: the signature (against the given
public key, else DIR.pub beside the folder, else the key the manifest names, which proves
only that nothing changed since someone signed it), every file's hash and size, and that
no file was added or removed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import orjson

from collector import __version__
from collector.delivery.signing import (
    SigningKey,
    SigningKeyError,
    generate_key,
    key_id,
    load_key_file,
    public_key_of,
    signature_valid,
)

MANIFEST, SIGNATURE = "manifest.json", "manifest.sig"
READ_LIMIT = 1 << 30


class EvidenceError(ValueError):
    """Evidence that cannot be written or does not verify; one line."""


def _sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class EvidenceFolder:
    """A folder being built; `seal` signs it and gives it its name."""

    def __init__(self, target: str, signing_key: str | None) -> None:
        self.target = Path(target)
        if self.target.exists() or self.target.is_symlink():
            raise EvidenceError(f"--evidence {target}: already exists (evidence is never "
                                "overwritten; choose a new folder)")
        if not self.target.parent.is_dir():
            raise EvidenceError(f"--evidence {target}: {self.target.parent} is not a directory")
        try:
            self.key: SigningKey = load_key_file(signing_key) if signing_key else generate_key()
        except SigningKeyError as exc:
            raise EvidenceError(f"--signing-key: {exc}") from None
        self.generated = signing_key is None
        self.work = self.target.parent / f".{self.target.name}.{secrets.token_hex(6)}.partial"
        self.work.mkdir(mode=0o700)
        self.started = time.time()

    def path(self, name: str) -> Path:
        return self.work / name

    def write_json(self, name: str, data: Any) -> None:
        self.path(name).write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2
                                                 | orjson.OPT_SORT_KEYS) + b"\n")

    def discard(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)

    def seal(self, argv: list[str]) -> str:
        """Write tool.json and the signed manifest, sync, rename; the key's description."""
        self.write_json("tool.json", {"tool": "audit-collector", "version": __version__,
                                      "command": argv, "started": _iso(self.started),
                                      "finished": _iso(time.time())})
        files = []
        for entry in sorted(self.work.iterdir()):
            digest, size = _sha256(entry)
            files.append({"name": entry.name, "sha256": digest, "bytes": size})
        manifest = orjson.dumps({"files": files, "created": _iso(time.time()),
                                 "tool_version": __version__, "key_id": self.key.id,
                                 "public_key": self.key.public_b64},
                                option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        self.path(MANIFEST).write_bytes(manifest)
        self.path(SIGNATURE).write_text(self.key.sign(manifest) + "\n")
        for entry in self.work.iterdir():
            with open(entry, "rb") as handle:
                os.fsync(handle.fileno())
        if self.target.exists():
            self.discard()
            raise EvidenceError(f"--evidence {self.target}: appeared while the report ran")
        os.rename(self.work, self.target)
        _fsync_dir(self.target.parent)
        if self.generated:
            pub = Path(f"{self.target}.pub")
            pub.write_text(f"ed25519 {self.key.public_b64} evidence {self.target.name}\n")
            return (f"signed with a generated key (id {self.key.id}); its public half is in "
                    f"{pub}: keep it apart from the folder")
        return f"signed with the key of --signing-key (id {self.key.id})"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


# --------------------------------------------------------------------------- verify


def _public_key_text(path: Path) -> str:
    try:
        words = path.read_text().split()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvidenceError(f"cannot read the public key {path}: {exc}") from None
    key = next((w for w in words if public_key_of(w) is not None and len(w) == 44), None)
    if key is None:
        raise EvidenceError(f"{path} holds no Ed25519 public key")
    return key


def verify_evidence(folder: str, key_file: str | None = None) -> str:
    """One line saying what was verified; EvidenceError (one line) when anything fails."""
    root = Path(folder)
    if not root.is_dir():
        raise EvidenceError(f"{folder}: not a folder")
    try:
        manifest_bytes = (root / MANIFEST).read_bytes()[:READ_LIMIT]
        signature = (root / SIGNATURE).read_text().strip()
    except OSError as exc:
        raise EvidenceError(f"{folder}: {exc.strerror}: "
                            f"{Path(exc.filename or '').name} (incomplete evidence)") from None
    try:
        manifest = orjson.loads(manifest_bytes)
        files = {f["name"]: f for f in manifest["files"]}
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise EvidenceError(f"{folder}: {MANIFEST} is not a manifest") from None
    beside = Path(f"{root}.pub")
    if key_file:
        public, whose = _public_key_text(Path(key_file)), f"the key in {key_file}"
    elif beside.exists():
        public, whose = _public_key_text(beside), f"the key in {beside}"
    else:
        public = str(manifest.get("public_key", ""))
        whose = ("the key named in the manifest itself (not independent: compare its id with "
                 "the one recorded when the evidence was made)")
    if not signature_valid(public, manifest_bytes, signature):
        raise EvidenceError(f"{folder}: the manifest's signature does not verify with {whose}"
                            " (manifest altered, or signed with another key)")
    present = {p.name for p in root.iterdir()} - {MANIFEST, SIGNATURE}
    for name in sorted(present - set(files)):
        raise EvidenceError(f"{folder}: {name} is not in the manifest (added)")
    for name, entry in sorted(files.items()):
        path = root / name
        if not path.is_file():
            raise EvidenceError(f"{folder}: {name} is missing (removed)")
        digest, size = _sha256(path)
        if digest != entry.get("sha256") or size != entry.get("bytes"):
            raise EvidenceError(f"{folder}: {name}: SHA-256 does not match the manifest "
                                "(altered)")
    raw = base64.b64decode(public)
    return (f"evidence {folder} verified: {len(files)} files unchanged, manifest signed by "
            f"key id {key_id(raw)} ({whose})")


