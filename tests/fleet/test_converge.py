"""Real converges of site.yml into temporary prefixes on this machine.

Two local hosts, the first of which fails preflight; the collection is installed from
a git URL (requirements.yml) and run from outside the checkout with the released,
hash-pinned wheel set; an Elasticsearch-API test server takes `audit-collector setup`.
The tests run in order and share the hosts: first converge (with -vvv and secrets), second
converge (changed=0), --tags, a build from source that equals the release, a code change
in check mode, a README change, a venv from another Python, a failure after a config
change (force_handlers), the header link record, and the uninstall (prefix left empty).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.esserver.server import ESTestServer
from tests.fleet.fleetlib import (
    CACHE,
    HERE,
    SOURCE_PATHS,
    Fleet,
    InstalledCollection,
    Release,
    Run,
    snapshot_source,
    tree_state,
    wheelset,
)

PASSWORD = "basic-auth-secret-42"
INDEX_TOKEN = "index-token-secret-99"
INSTALLED = ("h2",)
WHEEL_CACHE = CACHE / "wheels"
PYTHON_312 = Path.home() / ".pyenv" / "versions" / "3.12.1" / "bin" / "python3"


@dataclass
class Site:
    fleet: Fleet
    collection: InstalledCollection
    release: Release
    es: ESTestServer

    def converge(self, *args: str, extra: dict[str, Any] | None = None) -> Run:
        """site.yml of the installed collection, run from outside the checkout (all hosts
        in one batch: the canary batches are tested in check mode)."""
        return self.fleet.play("audit_collector.fleet.site", *args,
                               extra={"audit_collector_rollout_serial": "100%", **(extra or {})},
                               env=self.collection.env())

    def venv(self, host: str) -> Path:
        return self.fleet.prefix(host) / "opt" / "audit-collector" / "venv"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, installed_collection: InstalledCollection,
         release: Release, prefetched: None) -> Iterator[Site]:
    with ESTestServer(major=8) as es:
        fleet = Fleet(tmp_path_factory.mktemp("converge"))
        # The first inventory host fails preflight (bug 1: setup then ran in no batch).
        fleet.add_host("h1", audit_collector_preflight_min_kernel="99.0")
        fleet.add_host("h2", audit_collector_elasticsearch_username="shipper",
                       audit_collector_elasticsearch_password=PASSWORD)
        for name in ("h1", "h2"):
            (fleet.prefix(name) / "lib" / "modules").mkdir(parents=True)
        fleet.group_vars.update(release.role_vars)
        fleet.group_vars["audit_collector_elasticsearch_hosts"] = [es.url]
        fleet.group_vars["audit_collector_public_keys_file"] = str(fleet.root / "keys.txt")
        yield Site(fleet, installed_collection, release, es)


def assert_converged(run: Run, hosts: tuple[str, ...] = INSTALLED) -> None:
    recap = run.recap()
    for host in hosts:
        assert recap[host]["failed"] == 0 and recap[host]["unreachable"] == 0, run.explain()


def test_first_converge(site: Site) -> None:
    """Bug 1: setup runs although the first inventory host failed preflight; secrets
    never reach the output (-vvv: test_check_mode); the role works from the installed
    collection."""
    run = site.converge("--diff", extra={
        "audit_collector_pip_index_url": f"https://fleet:{INDEX_TOKEN}@127.0.0.1:9/simple"})
    recap = run.recap()
    assert recap["h1"]["failed"] == 1, run.explain()
    assert_converged(run)
    for secret in (PASSWORD, INDEX_TOKEN):
        assert secret not in run.output, f"secret {secret[:6]}... in the output"
    setup = run.results(task="Service | Set up Elasticsearch (index "
                             "template, data stream, ILM policy) once per rollout")
    assert [r["status"] for r in setup if r["host"] == "h2"] == ["changed"], setup
    with urllib.request.urlopen(f"{site.es.url}/_data_stream/logs-audit_collector-default",
                                timeout=10) as resp:
        assert json.loads(resp.read())["data_streams"], "setup did not run"
    for host in INSTALLED:
        check = subprocess.run(
            [str(site.venv(host) / "bin" / "audit-collector"), "check", "--config-only",
             "--config", str(site.fleet.prefix(host) / "etc/audit-collector/config.yml")],
            capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
    assert not (site.fleet.prefix("h1") / "opt").exists()
    assert_public_keys_collected(site)


def assert_public_keys_collected(site: Site) -> None:
    """tasks/keys.yml: the controller's file holds each installed host's own key line."""
    lines = [line for line in (site.fleet.root / "keys.txt").read_text().splitlines()
             if line and not line.startswith("#")]
    own = [subprocess.run(
        [str(site.venv(host) / "bin" / "audit-collector"), "key", "--config",
         str(site.fleet.prefix(host) / "etc/audit-collector/config.yml")],
        capture_output=True, text=True, check=True).stdout.strip() for host in INSTALLED]
    assert lines == own and all(" ed25519 " in line for line in lines)


def test_second_converge_changes_nothing(site: Site) -> None:
    run = site.converge()
    assert_converged(run)
    for host in INSTALLED:
        assert run.recap()[host]["changed"] == 0, run.changed_tasks(host)


def source_vars(source: Path) -> dict[str, Any]:
    return {"audit_collector_source_dir": str(source)}


def test_tags_install_with_a_build_from_source(site: Site, tmp_path: Path) -> None:
    """Bug 5: --tags audit_collector_install failed on an undefined variable.
    Reproducible builds: the controller's build of the same source is the released wheel,
    byte for byte, so switching to it changes nothing on the hosts."""
    run = site.converge("--tags", "audit_collector_install",
                        extra=source_vars(snapshot_source(tmp_path / "src")))
    assert_converged(run)
    assert run.recap()["h1"]["failed"] == 1  # preflight still guards the host
    on_hosts = [e for e in run.results() if e["status"] == "changed"
                and "Wheels |" not in e["task"]]  # the controller's cache may fill
    assert on_hosts == [], run.explain()
    built = list(WHEEL_CACHE.glob("source-*/wheel/*.whl"))
    assert any(w.read_bytes() == site.release.wheel.read_bytes() for w in built)


def test_readme_change_keeps_the_fingerprint(tmp_path: Path) -> None:
    source = snapshot_source(tmp_path / "src")
    before = wheelset("fingerprint", str(source), *SOURCE_PATHS)
    (source / "README.md").write_text("a typo fixed\n")
    assert wheelset("fingerprint", str(source), *SOURCE_PATHS) == before
    (source / "collector" / "__init__.py").write_text(
        (source / "collector" / "__init__.py").read_text() + "\n# changed\n")
    assert wheelset("fingerprint", str(source), *SOURCE_PATHS) != before


def test_check_mode_after_a_code_change(site: Site, tmp_path: Path) -> None:
    """Bug 4: after a new commit, --check failed (no wheel built in check mode)."""
    source = snapshot_source(tmp_path / "src")
    init = source / "collector" / "__init__.py"
    # A change no earlier run has cached a build of.
    init.write_text(init.read_text() + f"\n# a code change {uuid.uuid4()}\n")
    before = {h: tree_state(site.fleet.prefix(h)) for h in INSTALLED}
    run = site.converge("--check", "--diff", extra=source_vars(source))
    assert_converged(run)
    copy = "Install | Copy the wheel set to the host"
    assert {r["host"] for r in run.results(task=copy) if r["status"] == "changed"} == \
        set(INSTALLED), run.explain()
    assert {h: tree_state(site.fleet.prefix(h)) for h in INSTALLED} == before


@pytest.fixture(scope="module")
def failing_run(site: Site) -> Run:
    """A run that changes the configuration, then fails at setup (Elasticsearch
    unreachable); h2's venv was made by another Python before it."""
    if PYTHON_312.exists():
        venv = site.venv("h2")
        shutil.rmtree(venv)
        subprocess.run([str(PYTHON_312), "-m", "venv", "--system-site-packages", str(venv)],
                       check=True)
    return site.converge(extra={"audit_collector_capture_bash": False,
                                "audit_collector_elasticsearch_hosts": ["http://127.0.0.1:9"]})


def test_restart_is_not_lost_when_a_later_task_fails(failing_run: Run) -> None:
    """The configuration changed, then setup failed: the hosts fail, but only after the
    restart handler ran (a failed host loses its handlers when max_fail_percentage ends
    the play)."""
    failed = [r for r in failing_run.results() if r["status"] == "failed" and r["host"] != "h1"]
    assert {r["host"] for r in failed} == set(INSTALLED), failing_run.explain()
    for result in failed:
        assert result["task"].endswith("Service | Fail when Elasticsearch could not be set up")
        # The reason, from setup's stderr, not only that it failed.
        assert "setup failed: cannot connect to http://127.0.0.1:9" in result["msg"], \
            result["msg"]
        handler = failing_run.results(task="Restart audit-collector", host=result["host"])
        assert handler and handler[0]["start"] < result["start"], failing_run.explain()


def test_venv_of_another_python_is_rebuilt(site: Site, failing_run: Run) -> None:
    """A Python upgrade leaves bin/python in place but the packages under the old
    version: the role rebuilds the venv for the system Python."""
    if not PYTHON_312.exists():
        pytest.skip(f"needs a second Python ({PYTHON_312})")
    venv = site.venv("h2")
    assert "version = 3.11" in (venv / "pyvenv.cfg").read_text(), failing_run.explain()
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import bcc, collector"],
                           capture_output=True, text=True, check=False)
    assert probe.returncode == 0, probe.stderr


def test_header_link_is_recorded_and_removed(site: Site, tmp_path: Path) -> None:
    """The generic header tree link the role makes is recorded for the uninstall."""
    src = tmp_path / "usr-src"
    (src / "linux-headers-6.1.0-1-amd64").mkdir(parents=True)
    run = site.fleet.play(HERE / "playbooks" / "headers_link.yml", "--limit", "h2",
                          extra={"audit_collector_headers_src_dir": str(src)})
    assert run.returncode == 0, run.explain()
    links = list((site.fleet.prefix("h2") / "lib" / "modules").glob("*/build"))
    assert len(links) == 1 and links[0].is_symlink(), run.explain()


def test_uninstall_leaves_the_prefix_empty(site: Site) -> None:
    """Bug 3: -e audit_collector_uninstall_keep_spool=false kept the spool, then aborted
    half-way on a string in a condition."""
    for host in INSTALLED:
        spool = site.fleet.prefix(host) / "var/lib/audit-collector/spool"
        assert spool.is_dir()
        (spool / "segment-0").write_bytes(b"x" * 10)
    run = site.fleet.play("audit_collector.fleet.uninstall", "-e",
                          "audit_collector_uninstall_keep_spool=false",
                          env=site.collection.env())
    assert run.returncode == 0, run.explain()
    for host in INSTALLED:
        left = {k: v for k, v in tree_state(site.fleet.prefix(host)).items() if v != "dir"}
        assert left == {}, left
        assert not (site.fleet.prefix(host) / "opt" / "audit-collector").exists()
        assert list((site.fleet.prefix(host) / "lib" / "modules").iterdir()) == []

