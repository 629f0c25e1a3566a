"""The `spool:` and `batch:` sections of the configuration, and the output list."""

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

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


class OutputError(ValueError):
    """An output specification that is not stdout, file:PATH or elasticsearch:URL."""


@dataclass(frozen=True)
class Output:
    kind: Literal["stdout", "file", "elasticsearch"]
    target: str = ""


OUTPUT_HELP = "expected stdout, file:PATH or elasticsearch:URL"
_URL_RE = re.compile(r"^https?://[^/\s]+")


def parse_output(spec: str, key: str = "outputs") -> Output:
    if spec == "stdout":
        return Output("stdout")
    kind, sep, target = spec.partition(":")
    if not sep or not target:
        raise OutputError(f"{key}: {spec!r} is not an output ({OUTPUT_HELP})")
    if kind == "file":
        return Output("file", target)
    if kind == "elasticsearch":
        if not _URL_RE.match(target):
            raise OutputError(
                f"{key}: {spec!r}: the Elasticsearch URL must start with http:// or https://"
            )
        return Output("elasticsearch", target.rstrip("/"))
    raise OutputError(f"{key}: {spec!r} is not an output ({OUTPUT_HELP})")


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
