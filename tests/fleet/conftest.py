"""Fixtures of the role tests; they run only under `make ansible-test` (AC_FLEET_TEST=1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fleet.fleetlib import (
    CACHE,
    COLLECTION,
    HERE,
    InstalledCollection,
    Release,
    ansible_playbook,
    install_from_git,
    make_release,
    snapshot_source,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("AC_FLEET_TEST") == "1":
        return
    skip = pytest.mark.skip(reason="role tests: run with `make ansible-test` (pinned Ansible venv)")
    for item in items:
        if Path(str(item.fspath)).is_relative_to(HERE):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    root = tmp_path_factory.mktemp("release")
    return make_release(snapshot_source(root / "src"), root)




@pytest.fixture(scope="session")
def installed_collection(tmp_path_factory: pytest.TempPathFactory) -> InstalledCollection:
    """The collection installed the way the README says: requirements.yml naming the
    project's git repository (here a local one holding this checkout's ansible/)."""
    return install_from_git(tmp_path_factory.mktemp("collection"))


@pytest.fixture(scope="session")
def prefetched(release: Release, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The release's wheel set in the controller's cache, filled by the prefetch playbook
    (later runs may then point pip at an index that does not exist, as with a token)."""
    workdir = tmp_path_factory.mktemp("prefetch")
    run = ansible_playbook(COLLECTION / "prefetch-wheels.yml", workdir=workdir, extra={
        **release.role_vars, "audit_collector_controller_cache_dir": str(CACHE / "wheels"),
        "audit_collector_wheel_tags": ["cp311-x86_64"]})
    assert run.returncode == 0, run.explain()
    sets = list((CACHE / "wheels").glob("release-*/cp311-x86_64/requirements.lock"))
    assert any(s.read_text() == release.lock.read_text() for s in sets)
