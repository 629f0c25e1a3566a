"""The collector's YAML configuration: typed, validated, with errors that name the key.

Every section is a frozen dataclass. `load_config` reads a YAML file, rejects unknown keys,
wrong types and impossible values with a `ConfigError` naming the dotted key, and never lets
a traceback reach the user.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

DEFAULT_STATE_DIR = Path("/var/lib/audit-collector")


class ConfigError(ValueError):
    """A configuration problem, with the dotted key it concerns."""


@dataclass(frozen=True)
class CaptureConfig:
    exec: bool = True
    namespaces: bool = True
    bash: bool = True
    # Argument capture bounds; hitting either marks the event truncated.
    max_args: int = 128
    max_args_bytes: int = 16384
    # Longest bash line kept; longer lines are cut and flagged.
    max_bash_line: int = 4096
    # Ring buffer size in KiB (a power of two, at least one page).
    ringbuf_kib: int = 16384
    # Extra bash binaries (or libreadline.so paths) to probe at start-up.
    bash_paths: tuple[str, ...] = ()
    # Watch exec events for bash binaries not yet probed and attach to them.
    follow_new_bash: bool = True
    # User space is woken after this many events (or by the poll timer).
    wakeup_batch: int = 64
    poll_interval_ms: int = 100


@dataclass(frozen=True)
class HostConfig:
    # Overrides for host.name; None means the kernel's hostname.
    name: str | None = None


@dataclass(frozen=True)
class SpoolConfig:
    dir: str = str(DEFAULT_STATE_DIR / "spool")
    max_bytes: int = 1 << 30
    segment_bytes: int = 16 << 20
    full_policy: Literal["drop-oldest", "drop-newest"] = "drop-oldest"
    # fsync policy: "batch" fsyncs every appended batch, "none" leaves it to the kernel.
    fsync: Literal["batch", "none"] = "batch"


@dataclass(frozen=True)
class BatchConfig:
    max_docs: int = 1000
    max_bytes: int = 5 << 20
    max_wait_s: float = 1.0


@dataclass(frozen=True)
class RetryConfig:
    initial_s: float = 0.5
    max_s: float = 30.0
    # Per-item rejections (429) are retried up to this many times per document before the
    # whole batch is retried again from the spool; 400s are dead-lettered at once.
    item_attempts: int = 10


@dataclass(frozen=True)
class IlmConfig:
    rollover_max_age: str = "1d"
    rollover_max_primary_shard_size: str = "50gb"
    delete_after: str = "90d"


@dataclass(frozen=True)
class ElasticsearchConfig:
    hosts: tuple[str, ...] = ()
    # Major version of the server: the client announces compatible-with=<api_version>.
    api_version: Literal[8, 9] = 8
    dataset: str = "audit_collector"
    namespace: str = "default"
    api_key_file: str | None = None
    api_key_env: str | None = None
    username: str | None = None
    password_file: str | None = None
    password_env: str | None = None
    ca_file: str | None = None
    verify_certs: bool = True
    request_timeout_s: float = 30.0
    gzip: bool = True
    gzip_level: int = 1  # 1: ~5x less CPU than zlib's default 9 on bulk bodies
    dead_letter_file: str | None = None
    retry: RetryConfig = field(default_factory=RetryConfig)
    ilm: IlmConfig = field(default_factory=IlmConfig)

    @property
    def data_stream(self) -> str:
        return f"logs-{self.dataset}-{self.namespace}"


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    listen: str = "127.0.0.1:9477"


@dataclass(frozen=True)
class Config:
    # Outputs: "stdout", "file:PATH", "elasticsearch:URL".
    outputs: tuple[str, ...] = ("stdout",)
    state_dir: str = str(DEFAULT_STATE_DIR)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    host: HostConfig = field(default_factory=HostConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    elasticsearch: ElasticsearchConfig = field(default_factory=ElasticsearchConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


# ---------------------------------------------------------------------------
# Outputs


@dataclass(frozen=True)
class Output:
    kind: Literal["stdout", "file", "elasticsearch"]
    target: str = ""


OUTPUT_HELP = "expected stdout, file:PATH or elasticsearch:URL"


def parse_output(spec: str, key: str = "outputs") -> Output:
    if spec == "stdout":
        return Output("stdout")
    kind, sep, target = spec.partition(":")
    if not sep or not target:
        raise ConfigError(f"{key}: {spec!r} is not an output ({OUTPUT_HELP})")
    if kind == "file":
        return Output("file", target)
    if kind == "elasticsearch":
        if not re.match(r"^https?://[^/\s]+", target):
            raise ConfigError(
                f"{key}: {spec!r}: the Elasticsearch URL must start with http:// or https://"
            )
        return Output("elasticsearch", target.rstrip("/"))
    raise ConfigError(f"{key}: {spec!r} is not an output ({OUTPUT_HELP})")


# ---------------------------------------------------------------------------
# Validation of individual values (beyond types)


_SIZE_RE = re.compile(r"^\d+(b|kb|mb|gb|tb)$")
_AGE_RE = re.compile(r"^\d+(ms|s|m|h|d)$")


def _check_values(cfg: Config) -> None:
    cap = cfg.capture
    _positive("capture.max_args", cap.max_args, upper=1024)
    # Each pending exec holds 2x the (power-of-two) bound in a BPF map slot.
    _positive("capture.max_args_bytes", cap.max_args_bytes, lower=256, upper=1 << 17)
    # The bash record is built in a per-CPU slot, which the kernel caps at 32 KiB.
    _positive("capture.max_bash_line", cap.max_bash_line, lower=16, upper=1 << 14)
    _positive("capture.ringbuf_kib", cap.ringbuf_kib, lower=4, upper=1 << 20)
    if cap.ringbuf_kib & (cap.ringbuf_kib - 1):
        raise ConfigError(f"capture.ringbuf_kib: {cap.ringbuf_kib} is not a power of two")
    _positive("capture.wakeup_batch", cap.wakeup_batch, upper=1 << 16)
    _positive("capture.poll_interval_ms", cap.poll_interval_ms, upper=10_000)
    _positive("spool.max_bytes", cfg.spool.max_bytes, lower=1 << 16)
    _positive("spool.segment_bytes", cfg.spool.segment_bytes, lower=1 << 12)
    if cfg.spool.segment_bytes > cfg.spool.max_bytes:
        raise ConfigError("spool.segment_bytes: larger than spool.max_bytes")
    _positive("batch.max_docs", cfg.batch.max_docs, upper=100_000)
    _positive("batch.max_bytes", cfg.batch.max_bytes, lower=1024, upper=100 << 20)
    if not 0 < cfg.batch.max_wait_s <= 60:
        raise ConfigError(f"batch.max_wait_s: {cfg.batch.max_wait_s} is not in (0, 60]")
    es = cfg.elasticsearch
    if es.request_timeout_s <= 0:
        raise ConfigError("elasticsearch.request_timeout_s: must be positive")
    if not 1 <= es.gzip_level <= 9:
        raise ConfigError(f"elasticsearch.gzip_level: {es.gzip_level} is not in 1..9")
    if es.retry.initial_s <= 0 or es.retry.max_s < es.retry.initial_s:
        raise ConfigError("elasticsearch.retry: need 0 < initial_s <= max_s")
    _positive("elasticsearch.retry.item_attempts", es.retry.item_attempts, upper=1000)
    for name in ("dataset", "namespace"):
        value = getattr(es, name)
        if not re.match(r"^[a-z0-9_]+$", value) or len(value) > 100:
            raise ConfigError(
                f"elasticsearch.{name}: {value!r} must be lowercase letters, digits and _"
            )
    if es.api_key_file and es.api_key_env:
        raise ConfigError("elasticsearch: give api_key_file or api_key_env, not both")
    if es.password_file and es.password_env:
        raise ConfigError("elasticsearch: give password_file or password_env, not both")
    if (es.password_file or es.password_env) and not es.username:
        raise ConfigError("elasticsearch.username: required with a password")
    for name in ("rollover_max_age", "delete_after"):
        if not _AGE_RE.match(getattr(es.ilm, name)):
            raise ConfigError(f"elasticsearch.ilm.{name}: expected a duration like 30d or 12h")
    if not _SIZE_RE.match(es.ilm.rollover_max_primary_shard_size):
        raise ConfigError(
            "elasticsearch.ilm.rollover_max_primary_shard_size: expected a size like 50gb"
        )
    for i, spec in enumerate(cfg.outputs):
        parse_output(spec, f"outputs[{i}]")
    if not cfg.outputs:
        raise ConfigError("outputs: at least one output is needed")
    parse_listen(cfg.metrics.listen, "metrics.listen")


def _positive(key: str, value: int, lower: int = 1, upper: int | None = None) -> None:
    if value < lower or (upper is not None and value > upper):
        bound = f"[{lower}, {upper}]" if upper is not None else f">= {lower}"
        raise ConfigError(f"{key}: {value} is out of range {bound}")


def parse_listen(spec: str, key: str = "metrics.listen") -> tuple[str, int]:
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ConfigError(f"{key}: {spec!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


# ---------------------------------------------------------------------------
# Generic dataclass construction from YAML mappings


def _build(cls: type, data: Any, key: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{key or 'config'}: expected a mapping, got {_type_name(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        dotted = f"{key}.{name}" if key else str(name)
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{dotted}: unknown key (known keys here: {known})")
        kwargs[name] = _coerce(hints[name], value, dotted)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{key}: {value!r} is not one of {allowed}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {_type_name(value)}")
        return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {_type_name(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_type_name(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {_type_name(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_type_name(value)}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # a bug, not user error


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


# ---------------------------------------------------------------------------
# Public entry points


def config_from_mapping(data: Any) -> Config:
    cfg = _build(Config, data, "")
    _check_values(cfg)
    return cfg


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Load and validate a config file; None gives the embedded defaults."""
    if path is None:
        return config_from_mapping({})
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return config_from_mapping(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def with_overrides(
    cfg: Config, outputs: list[str] | None = None, spool_dir: str | None = None
) -> Config:
    """Apply command-line flags on top of the file."""
    if outputs:
        for i, spec in enumerate(outputs):
            parse_output(spec, f"--output[{i}]")
        cfg = dataclasses.replace(cfg, outputs=tuple(outputs))
    if spool_dir:
        cfg = dataclasses.replace(cfg, spool=dataclasses.replace(cfg.spool, dir=spool_dir))
    return cfg


def outputs_of(cfg: Config) -> list[Output]:
    return [parse_output(spec) for spec in cfg.outputs]


def elasticsearch_urls(cfg: Config) -> list[str]:
    """Cluster URLs from the outputs and from elasticsearch.hosts, de-duplicated."""
    urls = [o.target for o in outputs_of(cfg) if o.kind == "elasticsearch"]
    for host in cfg.elasticsearch.hosts:
        if host.rstrip("/") not in urls:
            urls.append(host.rstrip("/"))
    return urls
