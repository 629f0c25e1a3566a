"""Fixtures of the role tests; they run only under `make ansible-test` (AC_FLEET_TEST=1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fleet.fleetlib import HERE, Release, make_release, snapshot_source


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


