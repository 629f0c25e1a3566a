"""The HTML page an auditor looks at, rendered by headless Chromium (Debian's chromium):
the host x day grid shows the planted gaps, and a screenshot is kept for a person to look
at (tests/report/output/coverage.png when AC_KEEP_SCREENSHOT is set)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.esserver import ESTestServer
from tests.report.support import DAY_START, FakeCollector, Wall, host, report

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not "
                                "installed (make test installs it: scripts/setup-test-deps.sh)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=120, check=True)


def three_days(server: ESTestServer, tmp_path: Path) -> FakeCollector:
    """web-1 logs three days through; web-2 is silent for 3 hours on the second day;
    web-3 (in the inventory) sends nothing."""
    for n in (1, 2):
        wall = Wall(DAY_START)
        collector = FakeCollector(tmp_path, server.url, wall, host(n), heartbeat_s=600)
        collector.start()
        if n == 2:
            collector.run(86_400 + 36_000, every_s=600)
            wall.advance(3 * 3600)  # no heartbeat: the outage
            collector.run(3 * 86_400 - (wall.seconds() - DAY_START) - 600, every_s=600)
        else:
            collector.run(3 * 86_400 - 600, every_s=600)
        collector.stop()
    server.refresh()
    return collector


def cells(dom: str) -> dict[tuple[str, str], str]:
    found = re.findall(r'<td class="[^"]*" data-host="([^"]+)" data-day="([^"]+)" '
                       r'data-status="([^"]+)"', dom)
    return {(h, d): s for h, d, s in found}


def test_the_grid_shows_the_planted_gaps(server: ESTestServer, tmp_path: Path) -> None:
    collector = three_days(server, tmp_path)
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[web]\nweb-[1:3]\n")
    page = tmp_path / "coverage.html"
    status, _, err = report(collector.cfg, "coverage", "--from", "2024-01-10", "--to",
                            "2024-01-13", "--inventory", str(inventory), "--format", "html",
                            "--out", str(page))
    assert status == 1, err
    assert "http://" not in page.read_text() and "https://" not in page.read_text()
    dom = chromium("--dump-dom", page.as_uri()).stdout
    grid = cells(dom)
    days = ["2024-01-10", "2024-01-11", "2024-01-12"]
    assert [grid[("web-1", d)] for d in days] == ["ok", "ok", "ok"]
    assert [grid[("web-2", d)] for d in days] == ["ok", "gap", "ok"]
    assert [grid[("web-3", d)] for d in days] == ["gap", "gap", "gap"]
    assert "gap 180 min" in dom or "gap 190 min" in dom  # the outage, in the cell's text
    assert "unexplained" in dom and "no data" in dom  # the gap table names both
    shot = tmp_path / "coverage.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,900", page.as_uri())
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("AC_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
