"""Elasticsearch credentials: an API key, or a user and password, read from a file or an
environment variable. The values are handed only to the client; nothing
here logs or formats them. Free of client imports, so that `run` can check them before it
loads the probes and the client (which it imports only afterwards, to keep its peak memory
down).
"""

from __future__ import annotations

import os
from typing import Any

from collector.delivery.elasticsearch.settings import ClusterConfigError, ElasticsearchConfig

MAX_SECRET_BYTES = 4096
# API keys are base64 (or id:key); passwords may hold any printable character but no
# whitespace at the ends (stripped) and no control characters (they would corrupt the
# Authorization header, and the HTTP library's error would print the header).
_PRINTABLE = frozenset(range(0x20, 0x7F))


def read_secret(file_path: str | None, env_name: str | None, what: str,
                section: str = "elasticsearch") -> str | None:
    """A credential from a file (surrounding whitespace stripped) or an environment variable;
    checked here so that a bad one fails now with a message that never shows it. Messages
    start with ``section`` (the service the credential is for)."""
    if file_path:
        value = _read_secret_file(file_path, what, section)
        where = f"the {what} file {file_path}"
    elif env_name:
        value = os.environ.get(env_name, "").strip()
        where = f"environment variable {env_name} ({what})"
        if not value:
            raise ClusterConfigError(f"{section}: {where} is not set")
    else:
        return None
    _check_secret(value, where, section)
    return value


def _read_secret_file(file_path: str, what: str, section: str) -> str:
    try:
        with open(file_path, "rb") as handle:
            raw = handle.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ClusterConfigError(f"{section}: cannot read the {what} file {file_path}: "
                                 f"{exc.strerror}") from None
    if len(raw) > MAX_SECRET_BYTES:
        raise ClusterConfigError(f"{section}: the {what} file {file_path} is larger than "
                                 f"{MAX_SECRET_BYTES} bytes")
    value = raw.strip()
    if not value:
        raise ClusterConfigError(f"{section}: the {what} file {file_path} is empty")
    return value.decode("latin-1")  # checked to be printable ASCII by _check_secret


def _check_secret(value: str, where: str, section: str) -> None:
    bad = next((i for i, ch in enumerate(value) if ord(ch) not in _PRINTABLE), None)
    if bad is not None:
        kind = "a line break" if value[bad] in "\r\n" else "a character that is not " \
            "printable ASCII"
        raise ClusterConfigError(f"{section}: {where} holds {kind} (at offset {bad}); "
                                 "it must be one line of printable ASCII")


def auth_options(es: ElasticsearchConfig) -> dict[str, Any]:
    api_key = read_secret(es.api_key_file, es.api_key_env, "API key")
    if api_key:
        return {"api_key": api_key}
    password = read_secret(es.password_file, es.password_env, "password")
    if es.username and password:
        return {"basic_auth": (es.username, password)}
    return {}
