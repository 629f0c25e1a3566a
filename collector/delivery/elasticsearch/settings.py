"""The `elasticsearch:` section of the configuration: cluster, credentials, retries, ILM."""

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Protocol

import msgspec
from msgspec import Meta

from collector.delivery.settings import cluster_url, parse_outputs

NonEmptyPath = Annotated[str, Meta(min_length=1)]
EnvName = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
# Waits are bounded: an infinite timeout or delay would silently stop shipping.
Seconds = Annotated[float, Meta(gt=0, le=86_400)]

_NAME_RE = re.compile(r"^[a-z0-9_]{1,100}$")
_AGE_RE = re.compile(r"^\d+(ms|s|m|h|d)$")
_SIZE_RE = re.compile(r"^\d+(b|kb|mb|gb|tb)$")


class RetryConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    initial_s: Seconds = 0.5
    max_s: Seconds = 30.0
    # Per-item rejections (429) are retried up to this many times per document before the
    # whole batch is retried again from the spool; 400s are dead-lettered at once.
    item_attempts: Annotated[int, Meta(ge=1, le=1000)] = 10

    def __post_init__(self) -> None:
        if self.max_s < self.initial_s:
            raise ValueError("max_s: smaller than initial_s")


class IlmConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    rollover_max_age: str = "1d"
    rollover_max_primary_shard_size: str = "50gb"
    delete_after: str = "90d"

    def __post_init__(self) -> None:
        for name in ("rollover_max_age", "delete_after"):
            if not _AGE_RE.match(getattr(self, name)):
                raise ValueError(f"{name}: expected a duration like 30d or 12h")
        if not _SIZE_RE.match(self.rollover_max_primary_shard_size):
            raise ValueError("rollover_max_primary_shard_size: expected a size like 50gb")


class ElasticsearchConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    hosts: tuple[str, ...] = ()
    # Major version of the server: the client announces compatible-with=<api_version>.
    api_version: Literal[8, 9] = 8
    dataset: str = "audit_collector"
    namespace: str = "default"
    api_key_file: Optional[NonEmptyPath] = None
    api_key_env: Optional[EnvName] = None
    username: Optional[Annotated[str, Meta(min_length=1)]] = None
    password_file: Optional[NonEmptyPath] = None
    password_env: Optional[EnvName] = None
    ca_file: Optional[NonEmptyPath] = None
    verify_certs: bool = True
    request_timeout_s: Seconds = 30.0
    gzip: bool = True
    gzip_level: Annotated[int, Meta(ge=1, le=9)] = 1  # ISA-L's 1-3; 3..9 all mean its 3
    dead_letter_file: Optional[NonEmptyPath] = None
    retry: RetryConfig = msgspec.field(default_factory=RetryConfig)
    ilm: IlmConfig = msgspec.field(default_factory=IlmConfig)

    def __post_init__(self) -> None:
        for i, host in enumerate(self.hosts):
            cluster_url(host, f"hosts[{i}]")
        for name in ("dataset", "namespace"):
            value = getattr(self, name)
            if not _NAME_RE.match(value):
                raise ValueError(f"{name}: {value[:100]!r} must be 1 to 100 lowercase letters, "
                                 "digits and _")
        if self.api_key_file and self.api_key_env:
            raise ValueError("api_key_file: give api_key_file or api_key_env, not both")
        if self.password_file and self.password_env:
            raise ValueError("password_file: give password_file or password_env, not both")
        if (self.password_file or self.password_env) and not self.username:
            raise ValueError("username: required with a password")

    @property
    def data_stream(self) -> str:
        return f"logs-{self.dataset}-{self.namespace}"


class ClusterConfigError(ValueError):
    """The cluster cannot be addressed as configured (no URL, a secret that cannot be
    read); the message names the key and never holds a secret."""


class ClusterSettings(Protocol):
    """What the Elasticsearch side reads of the whole configuration."""

    @property
    def outputs(self) -> Any: ...  # the output specs (a tuple of strings once validated)

    @property
    def elasticsearch(self) -> ElasticsearchConfig: ...


def cluster_urls(cfg: ClusterSettings) -> list[str]:
    """Cluster URLs from the elasticsearch:URL outputs and elasticsearch.hosts, de-duplicated."""
    urls = [o.target for o in parse_outputs(cfg.outputs) if o.kind == "elasticsearch"]
    for host in cfg.elasticsearch.hosts:
        if host.rstrip("/") not in urls:
            urls.append(host.rstrip("/"))
    return urls


class DeadLetterSettings(Protocol):
    @property
    def state_dir(self) -> str: ...

    @property
    def elasticsearch(self) -> ElasticsearchConfig: ...


def dead_letter_path(cfg: DeadLetterSettings) -> Path:
    """Where rejected documents go: elasticsearch.dead_letter_file, else in state_dir."""
    return Path(cfg.elasticsearch.dead_letter_file or Path(cfg.state_dir) / "dead-letter.ndjson")
