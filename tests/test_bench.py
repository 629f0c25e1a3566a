"""The benchmarks run (briefly, --quick) and write well-formed results; no timing asserts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.outputs import LineCounter
from bench.profile import summarize
from bench.report import table
from bench.soak import outage_starts
from bench.soak_audit import Audit, Issued, bash_line, ns_marker
from bench.soak_report import Outage, drains, missing_run_lines
from bench.storm_report import es_targets
from bench.tracers import parse_metrics

ROOT = Path(__file__).resolve().parent.parent
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="BPF and auditd need root")


def run_bench(module: str, out: Path, *extra: str, timeout: float = 600) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", module, "--quick", "--output", str(out),
                           *extra], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return dict(json.loads(out.read_text()))


@needs_root
def test_exec_storm_quick_writes_a_complete_result(tmp_path: Path) -> None:
    result = run_bench("bench.exec_storm", tmp_path / "exec_storm.json")
    assert result["benchmark"] == "exec_storm"
    assert {"machine", "options", "loadgen", "loads", "tracers", "summary", "targets",
            "cases", "collector_startup_s"} <= set(result)
    assert result["options"]["quick"] is True
    assert result["loadgen"]["used"] in ("c", "python")
    loads = {load["name"] for load in result["loads"]}
    assert len(loads) == 2
    tracers = result["tracers"]
    assert set(tracers) == {"baseline", "auditd", "bcc", "collector_file", "collector_es"}
    for name, info in tracers.items():
        if not info["available"]:
            assert info["reason"], f"{name} unavailable without a reason"
            assert name != "baseline"
    for case in result["cases"]:
        check_case(case)
    ran = {c["tracer"] for c in result["cases"]}
    assert "baseline" in ran
    assert {c["load"] for c in result["cases"] if c["tracer"] == "baseline"} == loads
    for row in result["summary"]:
        assert row["rate_median"] > 0
        if row["tracer"] == "baseline":
            assert row["ratio_to_baseline"] == 1.0
        else:
            assert row["ratio_to_baseline"] > 0
    for target in result["targets"]:
        assert set(target) == {"target", "goal", "value", "met"}
    if tracers["collector_file"]["available"]:
        assert all(0 < s < 90 for s in result["collector_startup_s"])
        session = tracers["collector_file"]["sessions"][0]
        assert session["memory"]["peak_rss_mib"] >= session["memory"]["anon_mib"] > 0
        assert session["exit_code"] == 0
        shares = [c["capture_thread_share"] for c in result["cases"]
                  if c["tracer"].startswith("collector_") and c["cpu_s"] > 0]
        assert shares and all(0 < s <= 1 for s in shares)


def check_case(case: dict[str, Any]) -> None:
    assert case["execs"] > 0 and case["rate"] > 0 and case["elapsed_s"] > 0
    assert case["cpu_s"] >= 0
    if case["tracer"] == "baseline":
        assert case["recorded"] is None
        return
    assert 0 <= case["recorded"] <= case["execs"]
    assert case["missing"] == case["execs"] - case["recorded"]
    if case["recorded"]:
        assert case["cpu_s_per_1000"] >= 0


def test_ship_quick_writes_a_complete_result(tmp_path: Path) -> None:
    result = run_bench("bench.ship", tmp_path / "ship.json", "--docs", "1500",
                       "--drain-docs", "3000")
    assert result["benchmark"] == "ship"
    assert {"machine", "options", "cases", "serialize_docs_per_s", "gzip", "drain",
            "targets"} <= set(result)
    assert result["cases"]
    for case in result["cases"]:
        assert case["drained"] is True
        assert case["stored"] == case["docs"] == 1500
        assert case["docs_per_s"] > 0 and case["fill_docs_per_s"] > 0
        assert case["docs_per_request"] <= case["batch"]
    drain = result["drain"]
    assert drain["drained"] is True and drain["stored"] == drain["docs"] == 3000
    assert drain["drain_s"] > 0
    assert result["serialize_docs_per_s"]["orjson"] > 0
    assert result["serialize_docs_per_s"]["json"] > 0
    assert result["gzip"]["level9_ratio"] > 1
    assert result["gzip"]["isal1_ratio"] > 1 and result["gzip"]["isal3_ratio"] > 1


@needs_root
def test_soak_quick_finds_every_marked_event_once_through_an_outage(tmp_path: Path) -> None:
    result = run_bench("bench.soak", tmp_path / "soak.json", timeout=170)
    assert result["benchmark"] == "soak"
    audit = result["audit"]
    load = result["load"]
    assert load["execs"] > 0
    assert audit["exec"]["expected"] == load["execs"] + load["failures"]
    for kind in ("exec", "bash", "namespace"):
        assert audit[kind]["expected"] > 0, kind
        assert audit[kind]["once"] == audit[kind]["expected"], (kind, audit[kind])
    assert audit["duplicate_ids"] == audit["ids_not_matching_sequence"] == 0
    (host,) = audit["hosts"].values()
    assert host["documents"] == audit["documents"] >= load["execs"]
    assert host["duplicate_sequences"] == host["unexplained_missing_sequences"] == 0
    assert result["verify"]["exit_code"] == 0
    (outage,) = result["outages"]
    assert outage["up_at_s"] > outage["down_at_s"]
    assert outage["peak_records"] > outage["steady_records"]  # the outage held documents back
    assert outage["drained_after_up_s"] is not None
    assert len(result["samples"]) >= 20 and all(s["metrics_ok"] for s in result["samples"])
    assert result["rss"]["baseline_mib"] > 0
    targets = {t["target"]: t["met"] for t in result["targets"]}
    assert targets["events lost (by marker)"] is targets["events duplicated (by marker)"] is True
    assert Path(result["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- soak audit


def _exec(doc_id: str, seq: int, args: list[str], pid: int = 1, ts: str = "00",
          outcome: str = "success") -> tuple[str, dict[str, Any]]:
    return f"h-b-{doc_id}", {"host": {"id": "h"}, "@timestamp": f"2024-01-01T00:00:{ts}.0Z",
                             "event": {"sequence": seq, "action": "exec", "outcome": outcome},
                             "process": {"pid": pid, "args": args}}


def _doc(seq: int, action: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    ts = extra.pop("ts", "00")
    return f"h-b-{seq}", {"host": {"id": "h"}, "@timestamp": f"2024-01-01T00:00:{ts}.0Z",
                          "event": {"sequence": seq, "action": action}, **extra}


def test_soak_audit_counts_missing_and_doubled_markers() -> None:
    issued = Issued("R", execs=3, bash_lines=2)
    docs = [_exec("1", 1, ["/bin/true", "R-e-0"]), _exec("2", 2, ["/bin/true", "R-e-2"]),
            _exec("3", 3, ["/bin/true", "R-e-2"]),
            _exec("4", 4, ["/bin/true", "R-e-1"], outcome="failure"),  # not an exec
            _doc(5, "bash_command", audit_collector={"bash": {"line": bash_line("R", 1)}}),
            _doc(6, "bash_command", audit_collector={"bash": {"line": ": R-warmup-0"}})]
    result = Audit(issued).feed_all(docs).result()
    execs = result["exec"]
    assert (execs["once"], execs["missing"], execs["duplicated"]) == (1, 1, 1)
    assert (execs["first_missing"], execs["first_duplicated"]) == ([1], [2])
    assert (result["bash"]["once"], result["bash"]["missing"]) == (1, 1)


def test_soak_audit_dates_each_run_of_missing_markers_by_its_neighbours() -> None:
    found = [0, 1, 4, 5, 9]  # missing: 2-3 and 6-8 (and nothing after 9)
    docs = [_exec(str(n), n, ["/bin/true", f"R-e-{n}"], ts=f"{10 + n:02d}") for n in found]
    execs = Audit(Issued("R", execs=10)).feed_all(docs).result()["exec"]
    assert execs["missing"] == 5 and execs["missing_runs"] == 2
    big, small = execs["largest_missing_runs"]
    assert (big["first"], big["last"], big["count"]) == (6, 8, 3)
    second = 1_000_000_000
    assert (big["before_ns"] - big["after_ns"]) == 4 * second  # 00:00:15 .. 00:00:19
    assert (small["first"], small["last"]) == (2, 3)
    (line,) = missing_run_lines(execs, started_unix_ns=big["after_ns"] - 5 * second)
    assert "in 2 runs" in line and "6-8 (3) between t = 5.0 and 9.0 s" in line
    assert missing_run_lines({"largest_missing_runs": []}, None) == []


def test_soak_audit_ties_namespace_events_to_their_tool_by_pid_and_time() -> None:
    issued = Issued("R", ns_entries={0: "unshare", 1: "nsenter"})
    mark0, mark1 = ns_marker("R", 0), ns_marker("R", 1)
    docs = [_exec("1", 1, ["/usr/bin/unshare", "--uts", "/bin/true", mark0], pid=7, ts="01"),
            _doc(2, "unshare", process={"pid": 7}, ts="02"),
            _exec("3", 3, ["/bin/true", mark0], pid=7, ts="03"),
            # pid 7 reused: its later setns belongs to entry 1, not entry 0
            _exec("4", 4, ["/usr/bin/nsenter", "-t", "9", "/bin/true", mark1], pid=7, ts="05"),
            _doc(5, "setns", process={"pid": 7}, ts="06"),
            _doc(6, "setns", process={"pid": 7}, ts="06")]  # doubled; its /bin/true missing
    ns = Audit(issued).feed_all(docs).result()["namespace"]
    assert (ns["once"], ns["missing"], ns["duplicated"]) == (1, 1, 1)
    assert ns["missing_parts"]["true_exec"] == 1 and ns["duplicated_parts"]["ns_event"] == 1


def test_soak_audit_sequences_ids_and_reported_gaps() -> None:
    docs = [_doc(1, "x"), _doc(2, "x"), _doc(5, "x"), _doc(9, "x"),
            _doc(10, "events_lost", audit_collector={"lost": {
                "source": "spool", "documents": 2, "first_sequence": 3, "last_sequence": 4}}),
            ("h-b-2", {"host": {"id": "h"}, "event": {"sequence": 2, "action": "x"}}),
            ("h-b-77", {"host": {"id": "h"}, "event": {"sequence": 11, "action": "x"}})]
    result = Audit(Issued("R")).feed_all(docs).result()
    assert (result["duplicate_ids"], result["ids_not_matching_sequence"]) == (1, 1)
    host = result["hosts"]["h"]
    assert host["duplicate_sequences"] == 1
    assert (host["gaps"], host["unexplained_gaps"]) == (2, 1)  # 3..4 reported, 6..8 not
    assert host["first_unexplained_gaps"] == [(6, 8)]


def test_soak_outages_leave_time_to_drain_and_drains_are_measured() -> None:
    assert outage_starts(1200, 300, 60, 30) == [300, 600, 900]
    assert outage_starts(180, 90, 60, 30) == [90]
    assert outage_starts(100, 0, 60, 30) == []
    samples = [{"t": t, "spool_records": r, "spool_bytes": 0}
               for t, r in [(0, 5), (1, 9), (2, 50), (3, 80), (4, 30), (5, 8), (6, 9)]]
    (drain,) = drains(samples, [Outage(2.0, 3.5)], steady_s=2.0)
    assert (drain["steady_records"], drain["peak_records"]) == (9, 80)
    assert drain["drained_after_up_s"] == 1.5  # at t=5, 8 <= 9


# --------------------------------------------------------------------------- helpers


def test_line_counter_reads_only_complete_new_lines(tmp_path: Path) -> None:
    path = tmp_path / "out"
    path.write_bytes(b"old MARK\n")
    counter = LineCounter(path, {"m": b"MARK"})
    with open(path, "ab") as handle:
        handle.write(b"x MARK\ny\nz MAR")
    assert counter.poll() == {"m": 1}
    with open(path, "ab") as handle:
        handle.write(b"K\n")
    assert counter.poll() == {"m": 2}


def test_parse_metrics_sums_label_sets() -> None:
    text = ("# HELP x y\nfoo_total{kind=\"exec\"} 3\nfoo_total{kind=\"bash\"} 2\n"
            "bar 1.5\n")
    values = parse_metrics(text)
    assert values["foo_total"] == 5
    assert values['foo_total{kind="exec"}'] == 3
    assert values["bar"] == 1.5


def test_profile_summary_shares() -> None:
    collapsed = ("run (agent.py:1);submit (pipeline.py:2);seal (chain.py:3) 6\n"
                 "run (agent.py:1);poll (probes.py:9) 4\n")
    summary = summarize(collapsed)
    assert summary["samples"] == 10
    assert summary["self"][0] == {"function": "seal (chain.py)", "share": 0.6}
    assert {"function": "run (agent.py)", "share": 1.0} in summary["inclusive"]
    threaded = summarize("thread (0x1a): MainThread;run (agent.py:1) 3\n"
                         "thread (77): shipper;run (threading.py:9);send (shipper.py:4) 1\n")
    assert threaded["threads"] == [{"function": "MainThread", "share": 0.75},
                                   {"function": "shipper", "share": 0.25}]
    assert threaded["self"][0] == {"function": "run (agent.py)", "share": 0.75}


def test_es_targets_hold_in_every_load() -> None:
    def row(tracer: str, load: str, cpu: float, **extra: Any) -> dict[str, Any]:
        return {"tracer": tracer, "load": load, "cpu_s_per_1000_median": cpu,
                "exec_cost_ratio": extra.get("cost"), "ratio_to_baseline": extra.get("ratio"),
                "ratio_side_cpu_excluded": extra.get("excluded")}

    file = [row("collector_file", "a", 0.080), row("collector_file", "b", 0.100)]
    audit = [row("auditd", "a", 0.200), row("auditd", "b", 0.150)]
    es = [row("collector_es", "a", 0.095, cost=1.01, ratio=0.93, excluded=0.96),
          row("collector_es", "b", 0.125, cost=1.05, ratio=0.90, excluded=0.94)]
    extra, half, cost, ratio = es_targets(file, es, audit)
    assert (extra.met, extra.value) == (False, "a +15.0, b +25.0 us")
    assert (half.met, half.value) == (False, "a 0.47x, b 0.83x")
    assert (cost.met, ratio.met) == (False, False)
    assert ratio.value == "a 0.960 (0.930), b 0.940 (0.900)"
    assert es_targets(file, [], audit) == []


def test_table_formats_missing_values() -> None:
    text = table(["a", "b"], [["x", None], ["y", 1234.5]])
    assert "-" in text.splitlines()[2]
    assert "1,234" in text or "1,235" in text
