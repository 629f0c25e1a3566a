"""What `audit-collector setup --kibana URL` is told on its command line: where Kibana is,
the space, and the same credential and TLS options as the `elasticsearch:` section (an API
key or a user and password, from a file or an environment variable; a CA file; certificate
verification on unless turned off)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from collector.delivery.settings import OutputError, cluster_url

_SPACE_RE = re.compile(r"^[a-z0-9_\-]{1,100}$")  # Kibana's rule for space ids
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_WAIT_S = 3600.0


class KibanaSettingsError(ValueError):
    """A flag of `setup --kibana` that cannot work; the message names the flag."""


@dataclass(frozen=True)
class KibanaSettings:
    url: str
    space: str = ""  # "" = Kibana's default space
    api_key_file: str | None = None
    api_key_env: str | None = None
    username: str | None = None
    password_file: str | None = None
    password_env: str | None = None
    ca_file: str | None = None
    verify_certs: bool = True
    timeout_s: float = 30.0  # one request
    wait_s: float = 60.0  # how long Kibana may be unreachable or not ready

    def __post_init__(self) -> None:
        try:
            url = cluster_url(self.url, "--kibana", "Kibana",
                              "--api-key-file, or --username and --password-file")
        except OutputError as exc:
            raise KibanaSettingsError(str(exc)) from None
        object.__setattr__(self, "url", url)
        self._check_space()
        self._check_credentials()
        if self.ca_file is not None and not os.access(self.ca_file, os.R_OK):
            raise KibanaSettingsError(f"--ca-file: cannot read {self.ca_file}")
        if not 0 < self.timeout_s <= MAX_WAIT_S:
            raise KibanaSettingsError(f"--timeout: {self.timeout_s} is not in (0, {MAX_WAIT_S}]")
        if not 0 <= self.wait_s <= MAX_WAIT_S:
            raise KibanaSettingsError(f"--wait: {self.wait_s} is not in [0, {MAX_WAIT_S}]")

    def _check_space(self) -> None:
        if self.space and not _SPACE_RE.match(self.space):
            raise KibanaSettingsError(f"--space: {self.space[:100]!r} is not a Kibana space id "
                                      "(lowercase letters, digits, _ and -)")

    def _check_credentials(self) -> None:
        if self.api_key_file and self.api_key_env:
            raise KibanaSettingsError("--api-key-file: give --api-key-file or --api-key-env, "
                                      "not both")
        if self.password_file and self.password_env:
            raise KibanaSettingsError("--password-file: give --password-file or "
                                      "--password-env, not both")
        if (self.password_file or self.password_env) and not self.username:
            raise KibanaSettingsError("--username: required with a password")
        if self.username and not (self.password_file or self.password_env):
            raise KibanaSettingsError("--password-file: --username needs --password-file or "
                                      "--password-env")
        if (self.api_key_file or self.api_key_env) and self.username:
            raise KibanaSettingsError("--username: give an API key or a user, not both")
        for flag, name in (("--api-key-env", self.api_key_env),
                           ("--password-env", self.password_env)):
            if name is not None and not _ENV_RE.match(name):
                raise KibanaSettingsError(f"{flag}: {name[:100]!r} is not an environment "
                                          "variable name")

    @property
    def space_shown(self) -> str:
        return self.space or "default"

    @property
    def space_prefix(self) -> str:
        """The path prefix of the space's APIs (none for the default space)."""
        return f"/s/{self.space}" if self.space and self.space != "default" else ""
