"""Fixtures of the test server's own tests: a fresh major-8 server and a client per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from elasticsearch import Elasticsearch

from tests.esserver import ESTestServer


@pytest.fixture
def srv() -> Iterator[ESTestServer]:
    with ESTestServer(major=8) as server:
        yield server


@pytest.fixture
def es(srv: ESTestServer) -> Iterator[Elasticsearch]:
    client = Elasticsearch(srv.url, max_retries=0, request_timeout=10)
    yield client
    client.close()
