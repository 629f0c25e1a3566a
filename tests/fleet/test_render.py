"""Template matrix: the role renders config.yml and the unit for each scenario, the
collector's own `check --config-only` accepts the config, `systemd-analyze verify` accepts
the unit, and settings that do not work together are refused with a message naming them.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fleet.fleetlib import HERE, PROJECT_VENV, Fleet, Run

CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
ES = ["https://127.0.0.1:9200", "https://[::1]:9201"]
NO_SETUP = {"audit_collector_elasticsearch_setup": False}

GOOD: dict[str, dict[str, Any]] = {
    "defaults": {},
    "api_key_ca": {**NO_SETUP, "audit_collector_elasticsearch_hosts": ES,
                   "audit_collector_elasticsearch_api_key": "aWQ6a2V5LXNlY3JldA==",
                   "audit_collector_elasticsearch_ca_cert": CA_PEM},
    "basic_auth": {**NO_SETUP, "audit_collector_elasticsearch_hosts": ES[:1],
                   "audit_collector_elasticsearch_username": "shipper",
                   "audit_collector_elasticsearch_password": "pw-secret-1"},
    "config_extra": {**NO_SETUP, "audit_collector_elasticsearch_hosts": ES[:1],
                     "audit_collector_config_extra": {"capture": {"ringbuf_kib": 32768},
                                                      "elasticsearch": {"gzip": False}}},
    "ipv6_listen": {"audit_collector_metrics_listen": "[::1]:9477"},
    # What an INI inventory or -e key=value hands over: strings.
    "string_values": {"audit_collector_capture_bash": "false",
                      "audit_collector_metrics_enabled": "no",
                      "audit_collector_capture_max_args": "64"},
    "space_in_paths": {},
}

REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "password_without_user": ({"audit_collector_elasticsearch_password": "x"},
                              "audit_collector_elasticsearch_password needs"),
    "user_without_password": ({"audit_collector_elasticsearch_username": "x"},
                              "audit_collector_elasticsearch_username needs"),
    "key_and_basic_auth": ({"audit_collector_elasticsearch_api_key": "k",
                            "audit_collector_elasticsearch_username": "u",
                            "audit_collector_elasticsearch_password": "p"}, "not both"),
    "ca_without_verify": ({"audit_collector_elasticsearch_ca_cert": CA_PEM,
                           "audit_collector_elasticsearch_verify_certs": False},
                          "verify_certs is false"),
    "ipv6_without_brackets": ({"audit_collector_metrics_listen": "::1:9477"},
                              "write an IPv6 address in brackets"),
    "url_without_scheme": ({"audit_collector_elasticsearch_hosts": ["127.0.0.1:9200"]},
                           "is not an http:// or https:// URL"),
    "verify_without_metrics": ({"audit_collector_metrics_enabled": False,
                                "audit_collector_verify": True,
                                "audit_collector_service_manage": True},
                               "audit_collector_verify needs audit_collector_metrics_enabled"),
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Fleet, Run]:
    fleet = Fleet(tmp_path_factory.mktemp("render"))
    for name, host_vars in GOOD.items():
        fleet.add_host(name, audit_collector_venv_dir=str(PROJECT_VENV), **host_vars)
    # A venv path with a space (a link to the project's venv): ExecStart must be quoted.
    spaced = fleet.root / "with space"
    spaced.mkdir()
    (spaced / "venv").symlink_to(PROJECT_VENV)
    fleet.hosts["space_in_paths"].update(
        audit_collector_venv_dir=str(spaced / "venv"),
        audit_collector_config_dir=str(spaced / "etc"),
        audit_collector_log_dir=str(spaced / "log"))
    for name, (host_vars, _) in REFUSED.items():
        fleet.add_host(name, audit_collector_venv_dir=str(PROJECT_VENV), **host_vars)
    return fleet, fleet.play(HERE / "playbooks" / "render.yml")


def host_vars(fleet: Fleet, name: str) -> dict[str, Any]:
    return fleet.hosts[name]


def config_of(fleet: Fleet, name: str) -> tuple[Path, dict[str, Any]]:
    path = Path(host_vars(fleet, name)["audit_collector_config_dir"]) / "config.yml"
    return path, yaml.safe_load(path.read_text())


@pytest.mark.parametrize("name", sorted(GOOD))
def test_config_passes_the_collectors_own_check(rendered: tuple[Fleet, Run], name: str) -> None:
    fleet, run = rendered
    assert run.recap()[name]["failed"] == 0, run.explain()
    path, _ = config_of(fleet, name)
    check = subprocess.run([str(PROJECT_VENV / "bin" / "audit-collector"), "check",
                            "--config-only", "--config", str(path)],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("name", sorted(GOOD))
def test_unit_passes_systemd_analyze_verify(rendered: tuple[Fleet, Run], name: str,
                                           tmp_path: Path) -> None:
    fleet, _ = rendered
    unit = Path(host_vars(fleet, name)["audit_collector_unit_dir"]) / "audit-collector.service"
    # verify wants the unit under its own name, and nothing else of this machine's units.
    shutil.copy(unit, tmp_path / "audit-collector.service")
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", "--recursive-errors=no",
                           str(tmp_path / "audit-collector.service")],
                          capture_output=True, text=True, check=False)
    problems = [line for line in (proc.stdout + proc.stderr).splitlines()
                if "audit-collector.service" in line]
    assert proc.returncode == 0 and not problems, proc.stdout + proc.stderr


def test_unit_quotes_paths_with_spaces(rendered: tuple[Fleet, Run]) -> None:
    fleet, _ = rendered
    unit = (Path(host_vars(fleet, "space_in_paths")["audit_collector_unit_dir"])
            / "audit-collector.service").read_text()
    exe = f"{fleet.root}/with space/venv/bin/audit-collector"
    config = f"{fleet.root}/with space/etc/config.yml"
    assert f'ExecStart="{exe}" run --config "{config}"' in unit
    assert f'"-{fleet.root}/with space/log"' in unit


def test_api_key_and_ca_go_to_files(rendered: tuple[Fleet, Run]) -> None:
    fleet, _ = rendered
    path, config = config_of(fleet, "api_key_ca")
    es = config["elasticsearch"]
    assert config["outputs"][-2:] == [f"elasticsearch:{url}" for url in ES]
    key_file = Path(es["api_key_file"])
    assert key_file.read_text() == "aWQ6a2V5LXNlY3JldA==\n"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert Path(es["ca_file"]).read_text() == CA_PEM
    assert "aWQ6a2V5LXNlY3JldA==" not in path.read_text()


def test_basic_auth_password_goes_to_a_file(rendered: tuple[Fleet, Run]) -> None:
    fleet, _ = rendered
    path, config = config_of(fleet, "basic_auth")
    es = config["elasticsearch"]
    assert es["username"] == "shipper"
    assert Path(es["password_file"]).read_text() == "pw-secret-1\n"
    assert stat.S_IMODE(Path(es["password_file"]).stat().st_mode) == 0o600
    assert "pw-secret-1" not in path.read_text()


def test_config_extra_is_merged(rendered: tuple[Fleet, Run]) -> None:
    _, config = config_of(rendered[0], "config_extra")
    assert config["capture"]["ringbuf_kib"] == 32768
    assert config["capture"]["exec"] is True
    assert config["elasticsearch"]["gzip"] is False


def test_ipv6_listen(rendered: tuple[Fleet, Run]) -> None:
    _, config = config_of(rendered[0], "ipv6_listen")
    assert config["metrics"]["listen"] == "[::1]:9477"


def test_string_values_are_converted(rendered: tuple[Fleet, Run]) -> None:
    """Bug 3: "false" from an INI inventory or -e was rendered as a string (the
    collector refused it) or taken as true."""
    _, config = config_of(rendered[0], "string_values")
    assert config["capture"]["bash"] is False
    assert config["metrics"]["enabled"] is False
    assert config["capture"]["max_args"] == 64


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_combinations(rendered: tuple[Fleet, Run], name: str) -> None:
    fleet, run = rendered
    failed = [r for r in run.results(host=name) if r["status"] == "failed"]
    assert len(failed) == 1, run.explain()
    assert failed[0]["task"].endswith("Refuse settings that do not work together")
    assert REFUSED[name][1] in failed[0]["msg"], failed[0]["msg"]
    assert not Path(host_vars(fleet, name)["audit_collector_config_dir"]).exists()

