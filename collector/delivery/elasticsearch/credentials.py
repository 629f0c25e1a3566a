"""Elasticsearch credentials: an API key, or a user and password, read from a file or an
environment variable. The values are handed only to the client; nothing
here logs or formats them. Free of client imports, so that `run` can check them before it
loads the probes and the client (which it imports only afterwards, to keep its peak memory
down).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from collector.delivery.elasticsearch.settings import ClusterConfigError, ElasticsearchConfig


def read_secret(file_path: str | None, env_name: str | None, what: str) -> str | None:
    """A credential from a file (surrounding whitespace stripped) or an environment variable;
    never echoed."""
    if file_path:
        try:
            value = Path(file_path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ClusterConfigError(f"elasticsearch: cannot read the {what} file {file_path}: "
                              f"{exc.strerror}") from None
        if not value:
            raise ClusterConfigError(f"elasticsearch: the {what} file {file_path} is empty")
        return value
    if env_name:
        value = os.environ.get(env_name, "").strip()
        if not value:
            raise ClusterConfigError(f"elasticsearch: environment variable {env_name} ({what}) is "
                              "not set")
        return value
    return None


def auth_options(es: ElasticsearchConfig) -> dict[str, Any]:
    api_key = read_secret(es.api_key_file, es.api_key_env, "API key")
    if api_key:
        return {"api_key": api_key}
    password = read_secret(es.password_file, es.password_env, "password")
    if es.username and password:
        return {"basic_auth": (es.username, password)}
    return {}
