"""`report gaps` and `report coverage` name each planted cause: a clean restart, a silent
collector, a deleted document, documents the spool dropped, dead letters, hosts of the
inventory that sent nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from collector.config import Config
from tests.delivery.elasticsearch.support import wait_for
from tests.delivery.helpers import DATA_STREAM
from tests.esserver import ESTestServer
from tests.report.support import DAY, FakeCollector, Wall, host, ndjson_rows, report

PERIOD = ("--from", DAY, "--to", "2024-01-11")


def gaps(cfg: Config, *extra: str) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    status, out, err = report(cfg, "gaps", *PERIOD, "--format", "ndjson", *extra)
    assert status in (0, 1), err
    _header, rows, end = ndjson_rows(out)
    return status, rows, end


def coverage(cfg: Config, *extra: str) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    status, out, err = report(cfg, "coverage", *PERIOD, "--format", "ndjson", *extra)
    assert status in (0, 1), err
    _header, rows, end = ndjson_rows(out)
    return status, rows, end


def history(server: ESTestServer, tmp_path: Path, **config: Any) -> FakeCollector:
    """An hour of a host, a clean restart, 30 minutes, a 15-minute silence, 30 minutes."""
    wall = Wall()
    collector = FakeCollector(tmp_path, server.url, wall, host(1), **config).start()
    collector.run(3600)
    collector.stop()
    wall.advance(600)
    collector.start()
    collector.run(1800)
    wall.advance(900)  # the collector was frozen: no tick, no heartbeat
    collector.run(1800)
    collector.stop()
    server.refresh()
    return collector


def test_a_clean_restart_and_a_silence_are_named_with_their_durations(
    server: ESTestServer, tmp_path: Path
) -> None:
    collector = history(server, tmp_path)
    status, rows, end = gaps(collector.cfg)
    assert status == 1
    assert [(r["cause"], r["start"], r["end"], r["duration_s"]) for r in rows] == [
        ("collector restart", "2024-01-10T01:00:00.000Z", "2024-01-10T01:10:00.000Z", 600),
        ("unexplained", "2024-01-10T01:40:00.000Z", "2024-01-10T01:55:10.000Z", 910),
        ("collector stopped", "2024-01-10T02:25:00.000Z", None, None)]
    assert rows[0]["duration"] == "10m 00s"
    assert rows[2]["duration"] == "ongoing"
    assert end["totals"]["by_cause"] == {"collector restart": 1, "unexplained": 1,
                                         "collector stopped": 1}
    status, [day], _ = coverage(collector.cfg)
    assert day["missing"] == 0 and day["starts"] == 2
    assert day["documents"] == day["last_sequence"] - day["first_sequence"] + 1
    assert day["heartbeats"] == 120  # two hours of one a minute


def test_a_deleted_document_is_an_unexplained_sequence_gap(
    server: ESTestServer, tmp_path: Path
) -> None:
    collector = history(server, tmp_path)
    docs = server.docs(DATA_STREAM)
    victim_id, victim = next((i, d) for i, d in docs.items()
                             if d["event"]["action"] == "exec" and d["message"] == "synthetic 100")
    backing = server.backing_indices(DATA_STREAM)[0]
    from elasticsearch import Elasticsearch

    Elasticsearch(server.url).delete(index=backing, id=victim_id, refresh=True)
    seq = victim["event"]["sequence"]
    _, rows, _ = gaps(collector.cfg)
    [deleted] = [r for r in rows if r["sequences"] == str(seq)]
    assert deleted["cause"] == "unexplained"
    assert deleted["missing"] == 1
    _, [day], _ = coverage(collector.cfg)
    assert day["missing"] == 1
    assert "missing 1" in day["status"]


def test_documents_the_spool_dropped_are_a_spool_drop(server: ESTestServer,
                                                      tmp_path: Path) -> None:
    wall = Wall()
    collector = FakeCollector(tmp_path, server.url, wall, host(2),
                              spool={"max_bytes": 1 << 16, "segment_bytes": 1 << 12}).start()
    collector.run(600, every_s=10)
    collector.pipeline.tick()
    server.fail_requests(503, requests=None)  # the cluster refuses every bulk request
    collector.run(1800, every_s=2)  # ~900 documents of ~700 bytes: far beyond 64 KiB
    server.clear_faults()
    spool = collector.pipeline.spool
    assert spool is not None
    wait_for(lambda: (collector.pipeline.tick(), spool.pending()[0] == 0)[1],
             what="the spool to drain after the outage")
    collector.run(600, every_s=10)
    collector.stop()
    server.refresh()
    _, rows, _ = gaps(collector.cfg)
    dropped = [r for r in rows if r["cause"] == "spool drop"]
    assert dropped, rows
    assert all("reported lost by events_lost (spool: " in r["detail"] for r in dropped)
    assert sum(r["missing"] for r in dropped) > 300
    assert not [r for r in rows if r["cause"] == "unexplained" and r["sequences"]]
    _, [day], _ = coverage(collector.cfg)
    # reports may overlap (a report the spool dropped is made again, merged): at least
    assert day["documents_lost"] >= sum(r["missing"] for r in dropped)


def test_dead_letters_are_named(server: ESTestServer, tmp_path: Path) -> None:
    server.mapping_errors(predicate=lambda item: item.source is not None and item.source.get(
        "process", {}).get("pid") in (1010, 1011))
    wall = Wall()
    collector = FakeCollector(tmp_path, server.url, wall, host(3)).start()
    collector.run(600)
    collector.stop()
    server.refresh()
    _, rows, _ = gaps(collector.cfg)
    [dead] = [r for r in rows if r["cause"] == "dead letter"]
    assert dead["missing"] == 2
    assert "dead_letter: rejected" in dead["detail"]


def test_inventory_hosts_that_sent_nothing(server: ESTestServer, tmp_path: Path) -> None:
    collector = FakeCollector(tmp_path, server.url, Wall(), host(1)).start()
    collector.run(300)
    collector.stop()
    server.refresh()
    ini = tmp_path / "hosts.ini"
    ini.write_text("[web]\nweb-1.example.org ansible_host=10.0.0.1\nweb-[2:3]\n"
                   "[web:vars]\nx=1\n[all:children]\nweb\n")
    yml = tmp_path / "hosts.yml"
    yml.write_text("all:\n  children:\n    web:\n      hosts:\n        web-1:\n"
                   "        web-[2:3]:\n          ansible_host: 10.0.0.2\n")
    for inventory in (ini, yml):
        status, rows, end = coverage(collector.cfg, "--inventory", str(inventory))
        assert status == 1
        assert [(r["host"], r["status"]) for r in rows][1:] == [
            ("web-2", "no documents (in the inventory)"),
            ("web-3", "no documents (in the inventory)")]
        assert end["totals"]["inventory_hosts_silent"] == 2
        _, gap_rows, _ = gaps(collector.cfg, "--inventory", str(inventory))
        assert [(r["host"], r["cause"]) for r in gap_rows if r["cause"] == "no data"] == [
            ("web-2", "no data"), ("web-3", "no data")]
    bad = tmp_path / "bad.yml"
    bad.write_text("all:\n  hosts: [web-1, web-2]\n")
    status, out, err = report(collector.cfg, "coverage", *PERIOD, "--inventory", str(bad))
    assert status == 2 and out == ""
    assert err == f"report: {bad}: all.hosts: must be a mapping of host names\n"
