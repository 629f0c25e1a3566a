"""`--check --diff` of site.yml on fresh hosts, through the canary batches.

Three local hosts, the first failing preflight, with the service managed as on a real host
(no systemd runs here: the role must not ask systemd about a unit check mode did not
write), secrets of every kind, and -vvv.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.fleet.fleetlib import COLLECTION, Fleet, Release, Run, tree_state

API_KEY = "Y2hlY2s6YXBpLWtleS1zZWNyZXQ="
PASSWORD = "check-password-secret"
INDEX_TOKEN = "check-index-token-secret"
FRESH = ("c2", "c3")


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory, release: Release,
            prefetched: None) -> Iterator[tuple[Fleet, Run, dict[str, dict[str, str]]]]:
    fleet = Fleet(tmp_path_factory.mktemp("check"))
    fleet.add_host("c1", audit_collector_preflight_min_kernel="99.0")
    fleet.add_host("c2", audit_collector_elasticsearch_api_key=API_KEY)
    fleet.add_host("c3", audit_collector_elasticsearch_username="shipper",
                   audit_collector_elasticsearch_password=PASSWORD,
                   audit_collector_install_method="index",
                   audit_collector_pip_index_url=f"https://ci:{INDEX_TOKEN}@127.0.0.1:9/simple")
    fleet.group_vars.update(release.role_vars)
    fleet.group_vars.update(audit_collector_service_manage=True,
                            audit_collector_verify=True,
                            audit_collector_elasticsearch_hosts=["https://127.0.0.1:9"])
    before = {h: tree_state(fleet.prefix(h)) for h in fleet.hosts}
    run = fleet.play(COLLECTION / "site.yml", "--check", "--diff", "-vvv")
    yield fleet, run, before


def test_check_mode_passes_on_fresh_hosts(checked: tuple[Fleet, Run, dict]) -> None:
    """Bug 4: systemd_service failed on a unit that does not exist yet."""
    fleet, run, before = checked
    recap = run.recap()
    assert recap["c1"]["failed"] == 1, run.explain()
    for host in FRESH:
        assert recap[host]["failed"] == 0, run.explain()
    assert {h: tree_state(fleet.prefix(h)) for h in fleet.hosts} == before
    note = run.results(task="Service | Note what a real run would do with the new unit")
    assert {r["host"] for r in note if r["status"] == "ok"} == set(FRESH)


def test_canary_batch_first(checked: tuple[Fleet, Run, dict]) -> None:
    """serial [1, 10%, 30%]: one host alone first (the failed c1 takes no part)."""
    _, run, _ = checked
    first_task = "Refuse settings that do not work together"
    batches = [sorted(r["host"] for r in run.results(task=first_task, play="Roll out the "
                                                     "audit-collector") if r["start"] == s)
               for s in sorted({r["start"] for r in run.results(task=first_task)})]
    assert batches[0] == ["c2"], batches
    assert sorted(h for b in batches for h in b) == list(FRESH)


def test_setup_is_not_skipped_by_a_failed_first_host(checked: tuple[Fleet, Run, dict]) -> None:
    """Bug 1: with the first inventory host failed in preflight, setup ran in no batch.
    In check mode the command itself is skipped, but not by its condition."""
    _, run, _ = checked
    setup = run.results(task="Service | Set up Elasticsearch (index template, data stream, "
                             "ILM policy) once per rollout")
    by_condition = [r["host"] for r in setup if r["false_condition"]]
    reached = [r["host"] for r in setup if not r["false_condition"]]
    assert reached == ["c2"], setup
    assert set(by_condition) == {"c3"}, setup


def test_diff_shows_config_and_unit(checked: tuple[Fleet, Run, dict]) -> None:
    _, run, _ = checked
    config = re.search(r"^\+\+\+ after: \S+/config\.yml\.j2\n(?:[@+].*\n)+", run.output, re.M)
    assert config, run.explain()
    assert "+- elasticsearch:https://127.0.0.1:9\n" in config.group(0)
    assert "/c2/var/lib/audit-collector\n" in config.group(0)
    unit = re.search(r"^\+\+\+ after: \S+/audit-collector\.service\.j2\n(?:[@+].*\n)+",
                     run.output, re.M)
    assert unit and '+ExecStart="' in unit.group(0), run.explain()


def test_secrets_never_in_verbose_output(checked: tuple[Fleet, Run, dict]) -> None:
    _, run, _ = checked
    assert "Install | Write pip's configuration for the package index" in run.output
    for secret in (API_KEY, PASSWORD, INDEX_TOKEN):
        assert secret not in run.output, f"secret {secret[:6]}... in -vvv output"
