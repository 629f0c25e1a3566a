"""The `spool:` and `batch:` sections of the configuration, and the output list."""

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

DEFAULT_STATE_DIR = "/var/lib/audit-collector"
NonEmptyPath = Annotated[str, Meta(min_length=1)]


class SpoolConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    dir: NonEmptyPath = f"{DEFAULT_STATE_DIR}/spool"
    max_bytes: Annotated[int, Meta(ge=1 << 16)] = 1 << 30
    segment_bytes: Annotated[int, Meta(ge=1 << 12)] = 16 << 20
    full_policy: Literal["drop-oldest", "drop-newest"] = "drop-oldest"
    # fsync policy: "batch" fsyncs every appended batch, "none" leaves it to the kernel.
    fsync: Literal["batch", "none"] = "batch"

    def __post_init__(self) -> None:
        if self.segment_bytes > self.max_bytes:
            raise ValueError("segment_bytes: larger than spool.max_bytes")


class BatchConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_docs: Annotated[int, Meta(ge=1, le=100_000)] = 1000
    max_bytes: Annotated[int, Meta(ge=1024, le=100 << 20)] = 5 << 20
    max_wait_s: Annotated[float, Meta(gt=0, le=60)] = 1.0


class CheckpointConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Signed chain checkpoints (see delivery/signing.py)."""

    enabled: bool = True
    # A checkpoint every this many sealed documents or seconds, whichever comes first (only
    # when documents were sealed since the last). 60 s matches the heartbeat: an attacker
    # with write access to the index can forge at most the last minute of a host's chain
    # undetected, at the cost of ~1,440 small documents and signatures (~60 us each) a day.
    # 10,000 documents bounds the unsigned stretch during a storm (~0.5 s at 20,000/s).
    every_docs: Annotated[int, Meta(ge=1, le=10_000_000)] = 10_000
    every_s: Annotated[float, Meta(ge=1, le=3600)] = 60.0
    # The host's Ed25519 private key; "" = host.key in state_dir. Created when missing.
    key_file: str = ""


class OutputError(ValueError):
    """An output specification that is not stdout, file:PATH or elasticsearch:URL."""


@dataclass(frozen=True)
class Output:
    kind: Literal["stdout", "file", "elasticsearch"]
    target: str = ""


OUTPUT_HELP = "expected stdout, file:PATH or elasticsearch:URL"


def redacted(url: str) -> str:
    """The URL with any user:password replaced, for messages."""
    return re.sub(r"(?<=://)[^/@]*@", "***@", url)


def cluster_url(url: str, key: str, service: str = "Elasticsearch",
                credential_options: str = "elasticsearch.api_key_file, or username and "
                                          "password_file") -> str:
    """An Elasticsearch node URL (or another ``service``'s), checked before any client sees
    it (a bad port made the client raise with the whole URL, credentials included, in the
    traceback)."""
    shown = redacted(url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OutputError(f"{key}: {shown!r}: the {service} URL must start with http:// "
                          "or https:// and name a host")
    if "@" in parts.netloc:
        raise OutputError(f"{key}: {shown!r}: credentials in the URL are not accepted; use "
                          f"{credential_options}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 0 < port <= 65535:
        raise OutputError(f"{key}: {shown!r}: the port must be a number in 1..65535")
    if parts.query or parts.fragment or re.search(r"\s", url):
        raise OutputError(f"{key}: {shown!r}: no query, fragment or spaces in the URL")
    return url.rstrip("/")


def parse_output(spec: str, key: str = "outputs") -> Output:
    if spec == "stdout":
        return Output("stdout")
    kind, sep, target = spec.partition(":")
    if not sep or not target:
        raise OutputError(f"{key}: {redacted(spec)!r} is not an output ({OUTPUT_HELP})")
    if kind == "file":
        return Output("file", target)
    if kind == "elasticsearch":
        return Output("elasticsearch", cluster_url(target, key))
    raise OutputError(f"{key}: {redacted(spec)!r} is not an output ({OUTPUT_HELP})")


def parse_outputs(specs: tuple[str, ...]) -> list[Output]:
    return [parse_output(spec, f"outputs[{i}]") for i, spec in enumerate(specs)]


class DeliverySettings(Protocol):
    """What the delivery wing reads of the whole configuration (its sections and the
    outputs); the root's Config satisfies it."""

    @property
    def outputs(self) -> Any: ...

    @property
    def state_dir(self) -> str: ...

    @property
    def spool(self) -> SpoolConfig: ...

    @property
    def batch(self) -> BatchConfig: ...

    @property
    def elasticsearch(self) -> Any: ...  # elasticsearch.settings.ElasticsearchConfig

    @property
    def checkpoint(self) -> CheckpointConfig: ...
