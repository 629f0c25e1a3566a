"""Config validation: every mistake names its key; nothing ends in a traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from collector.config import (
    Config,
    ConfigError,
    config_from_mapping,
    elasticsearch_urls,
    load_config,
    parse_output,
    with_overrides,
)

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_valid() -> None:
    cfg = config_from_mapping({})
    assert cfg.outputs == ("stdout",)
    assert cfg.capture.max_args == 128
    assert cfg.capture.max_args_bytes == 16384
    assert cfg.capture.max_bash_line == 4096
    assert cfg.batch.max_docs == 1000
    assert cfg.batch.max_bytes == 5 << 20
    assert cfg.batch.max_wait_s == 1.0
    assert cfg.elasticsearch.data_stream == "logs-audit_collector-default"
    assert cfg.elasticsearch.verify_certs is True
    assert cfg.metrics.listen == "127.0.0.1:9477"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"capture": {"max_argz": 3}}, "capture.max_argz: unknown key"),
        ({"capture": {"max_args": "many"}}, "capture.max_args: expected an integer, got a string"),
        ({"capture": {"max_args": True}}, "capture.max_args: expected an integer, got a boolean"),
        ({"capture": {"max_args": 0}}, "capture.max_args: 0 is out of range"),
        ({"capture": {"ringbuf_kib": 3000}}, "capture.ringbuf_kib: 3000 is not a power of two"),
        ({"capture": {"exec": "yes"}}, "capture.exec: expected true or false"),
        ({"capture": []}, "capture: expected a mapping, got a list"),
        ({"spool": {"full_policy": "drop-all"}}, "spool.full_policy: 'drop-all' is not one of"),
        ({"spool": {"max_bytes": 1 << 20, "segment_bytes": 2 << 20}},
         "spool.segment_bytes: larger than spool.max_bytes"),
        ({"batch": {"max_wait_s": 0}}, "batch.max_wait_s: 0 is out of range (0, 60]"),
        ({"outputs": ["kafka:x"]}, "outputs[0]: 'kafka:x' is not an output"),
        ({"outputs": ["elasticsearch:localhost:9200"]}, "must start with http:// or https://"),
        ({"outputs": []}, "outputs: at least one output is needed"),
        ({"elasticsearch": {"api_version": 7}}, "elasticsearch.api_version: 7 is not one of 8, 9"),
        ({"elasticsearch": {"dataset": "Audit-Collector"}}, "elasticsearch.dataset"),
        ({"elasticsearch": {"gzip_level": 0}},
         "elasticsearch.gzip_level: 0 is out of range [1, 9]"),
        ({"elasticsearch": {"password_env": "P"}}, "elasticsearch.username: required"),
        ({"elasticsearch": {"api_key_file": "a", "api_key_env": "B"}}, "not both"),
        ({"elasticsearch": {"ilm": {"delete_after": "forever"}}},
         "elasticsearch.ilm.delete_after: expected a duration"),
        ({"metrics": {"listen": "9477"}}, "metrics.listen: '9477' is not HOST:PORT"),
        ({"nonsense": 1}, "nonsense: unknown key"),
        ("just a string", "config: expected a mapping, got a string"),
    ],
)
def test_bad_values_name_their_key(data: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data)
    assert message in str(info.value)


def test_yaml_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("capture:\n  max_args: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")


def test_cli_overrides_outputs_and_spool() -> None:
    cfg = with_overrides(config_from_mapping({}), ["file:/tmp/x.ndjson",
                                                   "elasticsearch:http://127.0.0.1:9200/"],
                         "/tmp/spool")
    assert cfg.outputs == ("file:/tmp/x.ndjson", "elasticsearch:http://127.0.0.1:9200/")
    assert cfg.spool.dir == "/tmp/spool"
    assert elasticsearch_urls(cfg) == ["http://127.0.0.1:9200"]
    assert parse_output("stdout").kind == "stdout"
    with pytest.raises(ConfigError, match=r"--output\[0\]"):
        with_overrides(cfg, ["nope"])


def test_example_config_is_valid() -> None:
    for path in Path(__file__).parent.parent.glob("config/*.yaml"):
        load_config(path)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", *args],
                          capture_output=True, text=True, timeout=60)


def test_cli_reports_config_errors_without_traceback(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("capture:\n  max_args: -1\n")
    result = run_cli("check", "--config-only", "--config", str(cfg))
    assert result.returncode == 2
    assert "capture.max_args: -1 is out of range" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli("run", "--output", "carrier-pigeon")
    assert result.returncode == 2
    assert "--output[0]: 'carrier-pigeon' is not an output" in result.stderr
    result = run_cli("run", "--bogus")
    assert result.returncode == 2
    assert "unrecognized arguments: --bogus" in result.stderr


def test_cli_config_only_check_accepts_a_good_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("outputs: [stdout]\nspool: {full_policy: drop-newest}\n")
    result = run_cli("check", "--config-only", "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"batch": {"max_wait_s": float("nan")}}, "batch.max_wait_s: nan is out of range (0, 60]"),
        ({"elasticsearch": {"retry": {"max_s": float("inf")}}},
         "elasticsearch.retry.max_s: inf is out of range (0, 86400]"),
        ({"elasticsearch": {"request_timeout_s": float("inf")}},
         "elasticsearch.request_timeout_s: inf is out of range"),
        ({"state_dir": ""}, "state_dir: must not be empty"),
        ({"spool": {"dir": ""}}, "spool.dir: must not be empty"),
        ({"capture": {"bash_paths": [""]}}, "capture.bash_paths[0]: must not be empty"),
        ({"elasticsearch": {"api_key_env": "not a name"}},
         "elasticsearch.api_key_env: 'not a name' is not a valid name"),
        ({1: 2}, "config: keys must be strings"),
        ({"capture": {1: 2}}, "capture: keys must be strings"),
        ({"metrics": {"listen": "::1:9477"}}, "metrics.listen: '::1:9477' is not HOST:PORT"),
        ({"metrics": {"listen": "h:70000"}}, "is not HOST:PORT"),
        ({"capture": {"max_args": "x" * 10_000}}, "capture.max_args: expected an integer"),
    ],
)
def test_values_that_would_stall_or_break_a_run_are_refused(data: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data)
    assert message in str(info.value)
    assert len(str(info.value)) < 300


def test_listen_accepts_bracketed_ipv6() -> None:
    assert config_from_mapping({"metrics": {"listen": "[::1]:9477"}}).metrics.listen == \
        "[::1]:9477"


def test_a_long_bad_value_is_quoted_short() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"spool": {"full_policy": "y" * 100_000}})
    assert len(str(info.value)) < 200


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"capture:\n  exec: true\n  exec: false\n", "duplicate key 'exec' (line 3)"),
        (b"\xff\xfe capture: {}\n", "not UTF-8 text"),
        (b"a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
         + b"".join(b"%s: &%s [*%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s]\n"
                    % ((bytes([c + 1]),) * 2 + (bytes([c]),) * 9)
                    for c in range(ord("a"), ord("a") + 20)),
         "YAML aliases"),
        (b"[" * 20_000 + b"]" * 20_000, "nested deeper than"),
        (b"outputs: [stdout]\n" + b"#" * (2 << 20), "larger than"),
    ],
)
def test_hostile_files_get_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        flat: dict[str, object] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: list(value) if isinstance(value, (list, tuple)) else value}


def test_example_config_lists_every_key_with_its_default() -> None:
    import msgspec
    import yaml

    from collector.config import Config

    example = yaml.safe_load((REPO / "config" / "example.yaml").read_text())
    defaults = msgspec.to_builtins(Config())
    assert _flatten(example) == _flatten(defaults)


# --------------------------------------------------------------------------- the role

ROLE = REPO / "ansible" / "roles" / "audit_collector"
SPEC_TYPES = {"int": int, "bool": bool, "float": float, "str": str, "path": str}


def role_to_config_keys() -> dict[str, str]:
    """Role variable -> dotted config key, read from the role's config template (each
    `'key': audit_collector_var` line inside its section's dict)."""
    sections: list[str] = []
    mapping: dict[str, str] = {}
    for line in (ROLE / "templates" / "config.yml.j2").read_text().splitlines():
        if "set es = {" in line:
            sections = ["elasticsearch"]
        elif "set config = {" in line:
            sections = []
        opened = re.search(r"'(\w+)': \{", line)
        if opened:
            sections.append(opened.group(1))
            continue
        leaf = re.search(r"'(\w+)': (audit_collector_\w+)(?: \| (\w+))?,?$", line)
        if leaf and leaf.group(2).endswith(leaf.group(1)):
            mapping[leaf.group(2)] = ".".join([*sections, leaf.group(1)])
        if re.search(r"^\s*\}(,| %\})?$", line) and sections:
            sections.pop()
    return mapping


def schema_field(dotted: str) -> msgspec.inspect.Field:
    info = msgspec.inspect.type_info(Config)
    *parents, name = dotted.split(".")
    for parent in parents:
        info = next(f.type for f in info.fields if f.name == parent)
    return next(f for f in info.fields if f.name == name)


def test_the_role_and_the_schema_agree_on_every_key_type_and_default() -> None:
    import yaml

    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    # Variables the role derives itself (vars/main.yml) are not options of the role.
    mapping = {v: k for v, k in role_to_config_keys().items() if v in options}
    assert len(mapping) >= 20, mapping  # the template parse found the config's variables
    for variable, dotted in mapping.items():
        spec, field = options[variable], schema_field(dotted)
        default = field.default if field.default is not msgspec.NODEFAULT else \
            field.default_factory()
        assert spec["default"] == default, (variable, dotted, spec["default"], default)
        kind = SPEC_TYPES[spec["type"]]
        if isinstance(field.type, msgspec.inspect.LiteralType):
            assert sorted(spec["choices"]) == sorted(field.type.values), (variable, dotted)
        else:
            python_type = {msgspec.inspect.IntType: int, msgspec.inspect.BoolType: bool,
                           msgspec.inspect.FloatType: float,
                           msgspec.inspect.StrType: str}[type(field.type)]
            assert kind is python_type, (variable, dotted, spec["type"], field.type)
