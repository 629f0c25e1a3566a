"""Helpers of the Elasticsearch shipping tests."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from collector.delivery.elasticsearch.index import setup_cluster
from tests.delivery.helpers import make_config


def install_template(server: Any, tmp_path: Path, **es: Any) -> None:
    """`audit-collector setup` against the server (default dataset unless es says)."""
    out = io.StringIO()
    cfg = make_config(tmp_path / "setup", server.url, es=es or None)
    assert setup_cluster(cfg, out) == 0, out.getvalue()


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition"
             ) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
