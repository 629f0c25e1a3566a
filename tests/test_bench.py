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


def test_table_formats_missing_values() -> None:
    text = table(["a", "b"], [["x", None], ["y", 1234.5]])
    assert "-" in text.splitlines()[2]
    assert "1,234" in text or "1,235" in text
