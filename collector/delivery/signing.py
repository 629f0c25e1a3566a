"""The host's Ed25519 key and what it signs: chain checkpoints (NIST SP 800-53 AU-9(3)).

Anyone who can rewrite the index can also recompute every chain hash; a checkpoint signed
with a key that never leaves the host cannot be recomputed. Each host has one private key,
created on first start (or by the role) in the state directory, mode 0600 in a root-only
directory; its public half goes into every start document, and the role collects all hosts'
public keys into one file that `verify --keys` and `report integrity --keys` trust instead
of the index.

Key file (PEM, PKCS#8, as `openssl genpkey -algorithm ed25519` writes it). Public keys
travel as base64 of the 32 raw bytes; a key's id is the first 16 hex digits of the SHA-256
of those bytes. The public key file the role collects has one line per host::

    <host.id> ed25519 <base64 public key> [<host.name>]

(`#` starts a comment; a host may have several lines after a key change.)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from collector.delivery.statefiles import (
    TextFileError,
    open_private_dir,
    read_bounded_text,
    read_file,
    replace_file,
)

KEY_FILE = "host.key"
KEY_MAX_BYTES = 4096
PUBLIC_KEYS_MAX_BYTES = 64 << 20  # 1,000,000 hosts' lines
CHECKPOINT_PAYLOAD_VERSION = "audit-collector-checkpoint-v1"
_LINE_RE = re.compile(r"^(?P<host>\S+)\s+ed25519\s+(?P<key>[A-Za-z0-9+/=]{40,48})"
                      r"(?:\s+(?P<name>\S+))?$")


class SigningKeyError(ValueError):
    """A key file that cannot be used; the message is one line."""


def key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key and its public half (base64) and id."""

    private: Ed25519PrivateKey

    @property
    def public_raw(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.Raw,
                                                      serialization.PublicFormat.Raw)

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.public_raw).decode()

    @property
    def id(self) -> str:
        return key_id(self.public_raw)

    def sign(self, payload: bytes) -> str:
        return base64.b64encode(self.private.sign(payload)).decode()

    def pem(self) -> bytes:
        return self.private.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())


def generate_key() -> SigningKey:
    return SigningKey(Ed25519PrivateKey.generate())


def key_from_pem(body: bytes, where: str) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(body, password=None)
    except (ValueError, TypeError):
        raise SigningKeyError(f"{where} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{where} holds a {type(key).__name__.replace('_', '')}, "
                        "not an Ed25519 key") from None
    return SigningKey(key)


def load_key_file(path: str | os.PathLike[str]) -> SigningKey:
    """A private key file given by a user (e.g. an auditor's evidence key)."""
    try:
        with open(path, "rb") as handle:
            body = handle.read(KEY_MAX_BYTES + 1)
    except OSError as exc:
        raise SigningKeyError(f"cannot read {path}: {exc.strerror}") from None
    return key_from_pem(body, str(path))


def host_key(path: str | os.PathLike[str]) -> tuple[SigningKey, bool]:
    """The host's key at path, created (0600, in a 0700 directory of this user) when there
    is none; (key, created). SigningKeyError when the file exists but is not a usable key, or the
    directory is unsafe (a symlink, another user's): the collector then signs nothing and
    says why, rather than replace a key whose public half the controller already holds."""
    target = Path(path)
    try:
        dir_fd = open_private_dir(target.parent, "checkpoint key directory")
    except OSError as exc:
        raise SigningKeyError(str(exc)) from None
    try:
        try:
            body = read_file(dir_fd, target.name, KEY_MAX_BYTES + 1)
        except FileNotFoundError:
            key = generate_key()
            try:
                replace_file(dir_fd, target.name, key.pem(), durable=True)
            except OSError as exc:
                raise SigningKeyError(f"cannot create {target}: {exc.strerror or exc}") from None
            return key, True
        except OSError as exc:
            raise SigningKeyError(f"cannot read {target}: {exc.strerror or exc}") from None
    finally:
        os.close(dir_fd)
    return key_from_pem(body, str(target)), False


# --------------------------------------------------------------------------- checkpoints


def checkpoint_payload(host_id: str, boot_id: str, seq: int, chain_hash: str) -> bytes:
    """The exact bytes a checkpoint signs: the chain position of one host's boot."""
    return "\n".join((CHECKPOINT_PAYLOAD_VERSION, host_id, boot_id, str(seq),
                      chain_hash)).encode()


def public_key_of(b64: str) -> Ed25519PublicKey | None:
    try:
        raw = base64.b64decode(b64, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error):
        return None


def signature_valid(public_b64: str, payload: bytes, signature_b64: str) -> bool:
    key = public_key_of(public_b64)
    if key is None:
        return False
    try:
        key.verify(base64.b64decode(signature_b64, validate=True), payload)
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


def key_line(host_id: str, public_b64: str, host_name: str = "") -> str:
    return f"{host_id} ed25519 {public_b64}" + (f" {host_name}" if host_name else "")


def parse_public_keys(text: str, where: str) -> dict[str, list[str]]:
    """host.id -> its public keys (base64), from the collected key file's text."""
    keys: dict[str, list[str]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _LINE_RE.match(line)
        if not match or public_key_of(match["key"]) is None:
            raise SigningKeyError(f"{where} line {number}: expected '<host.id> ed25519 <base64 "
                            "public key> [host name]'")
        keys.setdefault(match["host"], []).append(match["key"])
    return keys


def load_public_keys(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    try:
        text = read_bounded_text(path, PUBLIC_KEYS_MAX_BYTES)
    except TextFileError as exc:
        raise SigningKeyError(str(exc)) from None
    return parse_public_keys(text, str(path))
