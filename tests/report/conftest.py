"""The test server as `audit-collector setup` leaves a cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.delivery.elasticsearch.support import install_template
from tests.esserver import ESTestServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ESTestServer]:
    with ESTestServer(major=8) as srv:
        install_template(srv, tmp_path)
        yield srv
