"""The report command's contract: formats, commands streamed, evidence folders and their
offline check, and one line with exit status 2 for what cannot be reported."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from elasticsearch import Elasticsearch

from collector.config import Config
from collector.report.source import SEARCH_PAGE
from tests.delivery.helpers import DATA_STREAM, make_config
from tests.esserver import ESTestServer
from tests.report.support import DAY, FakeCollector, Wall, host, ndjson_rows, report

PERIOD = ("--from", DAY, "--to", "2024-01-11")


def one_host(server: ESTestServer, tmp_path: Path, seconds: int = 600,
             every_s: float = 10.0) -> FakeCollector:
    collector = FakeCollector(tmp_path, server.url, Wall(), host(1)).start()
    collector.run(seconds, every_s=every_s)
    collector.event(user="1000")  # not privileged: not a command row
    collector.stop()
    server.refresh()
    return collector


def test_formats_carry_the_requirements_and_the_same_rows(server: ESTestServer,
                                                          tmp_path: Path) -> None:
    cfg = one_host(server, tmp_path).cfg
    _, table, _ = report(cfg, "coverage", *PERIOD)
    assert "PCI DSS v4.0 10.7.2-10.7.3: failures of logging detected" in table
    assert "SOC 2 CC7.2: monitoring ran through the whole period" in table
    _, text, _ = report(cfg, "coverage", *PERIOD, "--format", "csv")
    assert "# requirements:" in text
    rows = list(csv.DictReader(line for line in io.StringIO(text) if not line.startswith("#")))
    _, nd, _ = report(cfg, "coverage", *PERIOD, "--format", "ndjson")
    header, nd_rows, end = ndjson_rows(nd)
    assert header["report"] == "coverage" and "NIST SP 800-53 AU-5: response to logging " \
        "failures" in header["requirements"]
    assert [r["documents"] for r in rows] == [str(r["documents"]) for r in nd_rows]
    assert end["totals"]["host_days"] == 1
    _, page, _ = report(cfg, "commands", *PERIOD, "--format", "html")
    assert page.startswith("<!DOCTYPE html>") and "http" not in page.split("<body>")[1][:0]
    assert "AU-3(1): full text of privileged commands" in page


def test_commands_stream_every_row_across_pages(server: ESTestServer, tmp_path: Path) -> None:
    collector = one_host(server, tmp_path, seconds=2 * SEARCH_PAGE + 100, every_s=1)
    status, out, err = report(collector.cfg, "commands", *PERIOD, "--format", "ndjson")
    _, rows, end = ndjson_rows(out)
    assert status == 0, err
    assert len(rows) == 2 * SEARCH_PAGE + 100  # the uid-1000 one is left out
    assert {r["user"] for r in rows} == {"root"}
    times = [r["time"] for r in rows]
    assert times == sorted(times)
    status, out, _ = report(collector.cfg, "commands", *PERIOD, "--user", "alice",
                            "--format", "ndjson")
    assert len(ndjson_rows(out)[1]) == 2 * SEARCH_PAGE + 101  # alice's login: all of them
    assert end["totals"]["rows"] == len(rows)


def test_evidence_folder_verifies_and_tampering_is_found(server: ESTestServer,
                                                         tmp_path: Path) -> None:
    cfg = one_host(server, tmp_path).cfg
    folder = tmp_path / "evidence-2024-01-10"
    status, out, err = report(cfg, "gaps", *PERIOD, "--format", "csv", "--evidence",
                              str(folder))
    assert status == 1 and out == ""
    assert "evidence written to" in err
    assert sorted(p.name for p in folder.iterdir()) == [
        "cluster.json", "gaps.csv", "manifest.json", "manifest.sig", "queries.json",
        "tool.json"]
    cluster = json.loads((folder / "cluster.json").read_text())
    assert cluster["cluster_uuid"] == Elasticsearch(server.url).info()["cluster_uuid"]
    queries = json.loads((folder / "queries.json").read_text())
    assert any("composite" in json.dumps(q["body"]) for q in queries)
    assert Path(f"{folder}.pub").exists()
    status, out, err = report(cfg, "verify-evidence", str(folder))
    assert status == 0 and "6 files" not in out and "verified: 4 files unchanged" in out
    text = (folder / "gaps.csv").read_text()
    assert "collector stopped" in text
    (folder / "gaps.csv").write_text(text.replace("collector stopped", "collector upgraded"))
    status, out, err = report(cfg, "verify-evidence", str(folder))
    assert status == 2
    assert err == f"report: {folder}: gaps.csv: SHA-256 does not match the manifest " \
        "(altered)\n"


def test_evidence_signed_with_the_auditors_key(server: ESTestServer, tmp_path: Path) -> None:
    from collector.delivery.signing import generate_key

    cfg = one_host(server, tmp_path).cfg
    key = generate_key()
    (tmp_path / "auditor.pem").write_bytes(key.pem())
    (tmp_path / "auditor.pub").write_text(key.public_b64 + "\n")
    folder = tmp_path / "ev"
    status, _, err = report(cfg, "coverage", *PERIOD, "--evidence", str(folder),
                            "--signing-key", str(tmp_path / "auditor.pem"))
    assert status in (0, 1), err
    assert not Path(f"{folder}.pub").exists()
    status, out, _ = report(cfg, "verify-evidence", str(folder), "--key",
                            str(tmp_path / "auditor.pub"))
    assert status == 0 and f"key id {key.id}" in out
    (folder / "extra.txt").write_text("x")
    status, _, err = report(cfg, "verify-evidence", str(folder), "--key",
                            str(tmp_path / "auditor.pub"))
    assert (status, err) == (2, f"report: {folder}: extra.txt is not in the manifest "
                                "(added)\n")
    status, _, err = report(cfg, "coverage", *PERIOD, "--evidence", str(folder))
    assert status == 2 and "already exists" in err


def test_a_failure_leaves_no_evidence_folder(server: ESTestServer, tmp_path: Path) -> None:
    cfg = one_host(server, tmp_path).cfg
    server.fail_requests(500, requests=None, endpoints=("search",), skip=3)
    folder = tmp_path / "ev"
    status, _out, err = report(cfg, "gaps", *PERIOD, "--evidence", str(folder))
    assert status == 2
    assert err.startswith("report: cannot read logs-audit_collector-default: HTTP 500")
    assert err.count("\n") == 1
    assert list(tmp_path.glob("*ev*")) == []  # neither the folder nor its partial copy


def test_bad_input_is_one_line_and_status_2(server: ESTestServer, tmp_path: Path) -> None:
    cfg = one_host(server, tmp_path).cfg
    cases = [
        (("coverage", *PERIOD, "--host", "nosuchhost"),
         "report: unknown host 'nosuchhost': no document of logs-audit_collector-default "
         "has it as host.name or host.id\n"),
        (("gaps", "--from", "2024-01-11", "--to", "2024-01-10"),
         "report: empty period: --to 2024-01-10T00:00:00Z is not after --from "
         "2024-01-11T00:00:00Z\n"),
        (("gaps", "--from", "yesterday"),
         "report: --from: 'yesterday' is not a date (YYYY-MM-DD) or a UTC time "
         "(YYYY-MM-DDTHH:MM:SSZ)\n"),
        (("integrity", *PERIOD, "--keys", str(tmp_path / "missing")),
         f"report: --keys: cannot read {tmp_path / 'missing'}: No such file or directory\n"),
        (("coverage", *PERIOD, "--inventory", str(tmp_path / "none.ini")),
         f"report: cannot read inventory {tmp_path / 'none.ini'}: No such file or "
         "directory\n"),
        (("verify-evidence", str(tmp_path)),
         f"report: {tmp_path}: No such file or directory: manifest.json (incomplete "
         "evidence)\n"),
    ]
    for args, message in cases:
        status, out, err = report(cfg, *args)
        assert (status, out, err) == (2, "", message), args


def test_a_period_without_data_says_what_it_cannot_establish(server: ESTestServer,
                                                             tmp_path: Path) -> None:
    cfg = one_host(server, tmp_path).cfg
    status, out, _ = report(cfg, "coverage", "--from", "2024-02-01")
    assert status == 1
    assert "not established: no documents in 2024-02-01T00:00:00Z to 2024-02-02T00:00:00Z" \
        in out


def test_unreachable_cluster_is_one_line(tmp_path: Path) -> None:
    cfg: Config = make_config(tmp_path, "http://127.0.0.1:9")
    status, out, err = report(cfg, "coverage", "--from", DAY)
    assert status == 2 and out == ""
    assert err.startswith("report: cannot read logs-audit_collector-default: cannot connect "
                          "to http://127.0.0.1:9")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_coverage_pages_the_composite_to_the_end(server: ESTestServer, tmp_path: Path) -> None:
    """2,400 host-days (three composite pages of 1,000 buckets): every one is a row."""
    def docs():
        for n in range(1200):
            for day, second in ((10, 3600), (11, 7200)):
                yield f"h{n}-{day}", {
                    "@timestamp": f"2024-01-{day}T0{second // 3600}:00:00.000000000Z",
                    "host": {"id": f"{n:032x}", "name": f"web-{n:04d}"},
                    "event": {"sequence": 100 + day, "action": "exec"}}

    server.load_docs(DATA_STREAM, docs())
    cfg = make_config(tmp_path, server.url)
    status, out, _ = report(cfg, "coverage", "--from", DAY, "--to", "2024-01-12",
                            "--format", "ndjson")
    _, rows, end = ndjson_rows(out)
    assert len(rows) == 2400 and end["totals"]["hosts"] == 1200
    assert rows[-1]["host"] == "web-1199" and rows[-1]["day"] == "2024-01-11"
    assert status == 1  # no heartbeats: coverage cannot be shown
