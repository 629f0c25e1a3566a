"""The collector's YAML configuration: typed, validated, with errors that name the key.

Each wing declares its own section (capture/settings.py, ecs/settings.py,
delivery/settings.py, delivery/elasticsearch/settings.py) as a msgspec Struct with its
types, ranges and defaults; this module composes them into `Config`, reads the YAML file
within bounds (size, nesting, aliases), and turns msgspec's validation errors into one line
that names the dotted key (`capture.max_args: -1 is out of range [1, 1024]`).
"""

import hashlib
import os
import re
from typing import Annotated, Any, Literal, Optional, Union

import msgspec
import yaml
from msgspec import Meta

from collector.capture.settings import CaptureConfig
from collector.delivery.elasticsearch.settings import ElasticsearchConfig, cluster_urls
from collector.delivery.settings import (
    DEFAULT_STATE_DIR,
    BatchConfig,
    CheckpointConfig,
    Output,
    OutputError,
    SpoolConfig,
    parse_output,
    parse_outputs,
)
from collector.delivery.statefiles import TextFileError, read_bounded_text
from collector.ecs.settings import HostConfig

MAX_FILE_BYTES = 1 << 20  # a configuration is a few KiB; anything bigger is a mistake
MAX_DEPTH = 16  # the schema nests 3 levels deep
MAX_ALIASES = 64
VALUE_SHOWN = 60  # characters of a bad value quoted in a message


class ConfigError(ValueError):
    """A configuration problem, with the dotted key it concerns."""


class MetricsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    enabled: bool = True
    listen: str = "127.0.0.1:9477"

    def __post_init__(self) -> None:
        parse_listen(self.listen, "listen")


class LifecycleConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The collector's own documents (start, heartbeat, stop): see collector/lifecycle.py."""

    # A heartbeat document every heartbeat_s seconds: silence longer than twice this means
    # "collector down", not "host quiet" (`report gaps`). 60 s: a minute's resolution for
    # outage durations at 1,440 small documents a day per host.
    heartbeat_s: Annotated[int, Meta(ge=1, le=3600)] = 60


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # Outputs: "stdout", "file:PATH", "elasticsearch:URL" (one string or a list).
    outputs: Union[str, tuple[str, ...]] = ("stdout",)
    state_dir: str = DEFAULT_STATE_DIR
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    capture: CaptureConfig = msgspec.field(default_factory=CaptureConfig)
    host: HostConfig = msgspec.field(default_factory=HostConfig)
    spool: SpoolConfig = msgspec.field(default_factory=SpoolConfig)
    batch: BatchConfig = msgspec.field(default_factory=BatchConfig)
    elasticsearch: ElasticsearchConfig = msgspec.field(default_factory=ElasticsearchConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    lifecycle: LifecycleConfig = msgspec.field(default_factory=LifecycleConfig)
    checkpoint: CheckpointConfig = msgspec.field(default_factory=CheckpointConfig)

    def __post_init__(self) -> None:
        if isinstance(self.outputs, str):
            msgspec.structs.force_setattr(self, "outputs", (self.outputs,))
        if not self.outputs:
            raise ValueError("outputs: at least one output is needed")
        if not self.state_dir:
            raise ValueError("state_dir: must not be empty")
        parse_outputs(self.outputs)


# --------------------------------------------------------------------------- addresses


def parse_listen(spec: str, key: str = "metrics.listen") -> tuple[str, int]:
    """HOST:PORT or [IPV6]:PORT; the host without brackets."""
    match = re.match(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\[\]:\s]+)):(?P<port>\d{1,5})$",
                     spec)
    if not match or int(match.group("port")) > 65535:
        raise ValueError(f"{key}: {_shown(spec)} is not HOST:PORT or [IPV6]:PORT")
    return match.group("v6") or match.group("host"), int(match.group("port"))


# --------------------------------------------------------------------------- errors


_TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "a string",
               "bool": "a boolean", "null": "nothing (null)", "array": "a list",
               "object": "a mapping"}
_EXPECTED_WORDS = {**_TYPE_WORDS, "bool": "true or false"}
_AT_RE = re.compile(r"^(?P<message>.*?)(?: - at `(?P<path>[^`]*)`(?: in `(?P<parent>[^`]*)`)?)?$",
                    re.S)
_TYPE_RE = re.compile(r"^Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`$")
_BOUND_RE = re.compile(r"^Expected `(?P<type>int|float)` (?P<op>>=|>|<=|<) ")
_LENGTH_RE = re.compile(r"^Expected `str` of length (?P<op>>=|<=) (?P<n>\d+)$")
_OWN_CHECK_RE = re.compile(r"^(?P<field>[A-Za-z_][\w\[\]]*): (?P<why>.*)$", re.S)
_TOKEN_RE = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= VALUE_SHOWN else text[:VALUE_SHOWN] + "..."


def _tokens(path: str) -> list[Union[str, int]]:
    """`$.capture.max_args` -> ["capture", "max_args"]; `$.outputs[0]` -> ["outputs", 0]."""
    return [name if name is not None and name != "" else int(index)
            for name, index in _TOKEN_RE.findall(path[1:])]


def _dotted(tokens: list[Union[str, int]]) -> str:
    out = ""
    for token in tokens:
        out += f"[{token}]" if isinstance(token, int) else (f".{token}" if out else token)
    return out


def _value_at(data: Any, tokens: list[Union[str, int]]) -> Any:
    for token in tokens:
        data = data[token]
    return data


def _bounds_of(tokens: list[Union[str, int]]) -> Optional[msgspec.inspect.Type]:
    """The declared type (with its ge/le/...) of the field at tokens."""
    info: Any = msgspec.inspect.type_info(Config)
    for token in tokens:
        while isinstance(info, (msgspec.inspect.UnionType,)):
            info = next((t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)),
                        info)
        if isinstance(token, int):
            info = getattr(info, "item_type", None)
            continue
        fields = {f.name: f.type for f in getattr(info, "fields", ())}
        info = fields.get(token)
        if info is None:
            return None
    while isinstance(info, msgspec.inspect.UnionType):
        info = next((t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)), info)
    return info


def _range_text(info: Any) -> str:
    low = f"[{info.ge}" if info.ge is not None else (f"({info.gt}" if info.gt is not None
                                                         else "(-inf")
    high = f"{info.le}]" if info.le is not None else (f"{info.lt})" if info.lt is not None
                                                        else "inf)")
    return f"{low}, {high}"


def explain(error: msgspec.ValidationError, data: Any) -> str:
    """One line naming the dotted key, from msgspec's error and the data it rejected."""
    parts = _AT_RE.match(str(error))
    assert parts is not None  # the pattern matches any text
    message, path = parts.group("message"), parts.group("path") or "$"
    if path == "key":  # a mapping key that is not a string
        parent = _dotted(_tokens(parts.group("parent") or "$")) or "config"
        return f"{parent}: keys must be strings"
    tokens = _tokens(path)
    key = _dotted(tokens)
    unknown = re.match(r"^Object contains unknown field `(?P<name>[^`]*)`$", message)
    if unknown:
        known = ", ".join(f.name for f in getattr(_bounds_of(tokens), "fields", ()))
        where = f"{key}.{unknown['name']}" if key else unknown["name"]
        return f"{where}: unknown key (known keys here: {known})"
    own = _OWN_CHECK_RE.match(message)
    if own and not message.startswith("Expected"):  # a __post_init__ check: "field: why"
        return f"{key}.{own['field']}: {own['why']}" if key else message
    return f"{key or 'config'}: {_describe(message, tokens, data)}"


def _describe(message: str, tokens: list[Union[str, int]], data: Any) -> str:
    typed = _TYPE_RE.match(message)
    if typed:
        wants = " or ".join(_EXPECTED_WORDS.get(t.strip(), t.strip())
                            for t in typed["want"].split("|"))
        return f"expected {wants}, got {_TYPE_WORDS.get(typed['got'], typed['got'])}"
    value = _value_at(data, tokens) if tokens else data
    if _BOUND_RE.match(message):
        return f"{_shown(value)} is out of range {_range_text(_bounds_of(tokens))}"
    if message.startswith("Invalid enum value"):
        allowed = ", ".join(repr(v) for v in _allowed_values(tokens))
        return f"{_shown(value)} is not one of {allowed}"
    length = _LENGTH_RE.match(message)
    if length:
        return "must not be empty" if length["op"] == ">=" and length["n"] == "1" else \
            f"{_shown(value)} is too long (at most {length['n']} characters)"
    if message.startswith("Expected `str` matching regex"):
        return f"{_shown(value)} is not a valid name"
    return message


def _allowed_values(tokens: list[Union[str, int]]) -> tuple[Any, ...]:
    info = _bounds_of(tokens)
    return tuple(getattr(info, "values", ()))


# --------------------------------------------------------------------------- reading


class _BoundedLoader(yaml.SafeLoader):
    """safe_load with a cap on aliases and on nesting: a hostile or broken file (an alias
    bomb, 20,000 nested lists) gets a one-line error, not gigabytes or a traceback."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        # YAML lets a repeated key silently win; in an audit agent's config it is a mistake.
        seen: set[Any] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)):
                continue
            if key in seen:
                line = key_node.start_mark.line + 1
                raise ConfigError(f"duplicate key {_shown(key)} (line {line})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise ConfigError(f"more than {MAX_ALIASES} YAML aliases")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ConfigError(f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _parse_yaml(text: str) -> Any:
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def config_from_mapping(data: Any) -> Config:
    """Validate parsed data (YAML's) against the schema; ConfigError names the key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        got = _TYPE_WORDS.get(_kind(data), "a value")
        raise ConfigError(f"config: expected a mapping, got {got}")
    try:
        return msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(explain(exc, data)) from None


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "str", bool: "bool", int: "int",
            float: "float", type(None): "null"}.get(type(value), "value")


def load_config(path: Union[str, os.PathLike[str], None]) -> Config:
    """Load and validate a config file; None gives the embedded defaults."""
    if path is None:
        return config_from_mapping({})
    try:
        text = read_bounded_text(path, MAX_FILE_BYTES, f"config file {path}")
    except TextFileError as exc:
        raise ConfigError(str(exc)) from None
    try:
        data = _parse_yaml(text)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_first_line(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply") from None
    try:
        return config_from_mapping(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _first_line(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem} (line {mark.line + 1})" if mark else str(problem)


def config_digest(path: Union[str, os.PathLike[str], None]) -> str:
    """SHA-256 (hex) of the configuration file's bytes, as deployment tooling computes it
    for the file it wrote; "defaults" for the embedded defaults."""
    if path is None:
        return "defaults"
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read(MAX_FILE_BYTES + 1)).hexdigest()


def with_overrides(cfg: Config, outputs: Optional[list[str]] = None,
                   spool_dir: Optional[str] = None) -> Config:
    """Apply command-line flags on top of the file."""
    if outputs:
        for i, spec in enumerate(outputs):
            try:
                parse_output(spec, f"--output[{i}]")
            except OutputError as exc:
                raise ConfigError(str(exc)) from None
        cfg = msgspec.structs.replace(cfg, outputs=tuple(outputs))
    if spool_dir:
        cfg = msgspec.structs.replace(cfg, spool=msgspec.structs.replace(cfg.spool, dir=spool_dir))
    return cfg


def outputs_of(cfg: Config) -> list[Output]:
    return parse_outputs(cfg.outputs)  # type: ignore[arg-type]  # a tuple after __post_init__


def elasticsearch_urls(cfg: Config) -> list[str]:
    return cluster_urls(cfg)
