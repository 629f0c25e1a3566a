"""Exec storm: how much does each tracer slow down, miss and cost under a flood of execs?

    python -m bench.exec_storm [--duration S] [--rounds N] [--quick] [--tracers a,b]

Loads: /bin/true with a few short arguments and with 20 arguments of 120 bytes, from 1 and
from 2 worker processes, each for a fixed duration. Contenders, in turn within every round
(A B A B ...): nothing (baseline), auditd with an execve rule, a plain BCC tracer
(bench/bcc_tracer.py), audit-collector writing a file, audit-collector shipping to the ES
test server on loopback. Reported per contender and load (medians over rounds): execs/s and
the ratio to the baseline of the same run; execs performed vs events found in the output
(by the load's unique marker argument); CPU seconds per 1000 events (utime+stime deltas;
auditd: auditd plus kauditd); peak RSS and anonymous memory; the collector's start-up time.
Results: a table on stdout and bench/results/exec_storm.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import profile
from bench.deps import bcc_available, ensure_tools
from bench.docs import stage_costs
from bench.loadgen import CLoadgen, Load, PythonLoadgen, build_c_loadgen, new_marker
from bench.procstat import (
    MIB,
    BpfUsage,
    bpf_usage,
    children_cpu_seconds,
    machine_cpu_seconds,
    memory,
    set_bpf_stats,
    thread_cpu_seconds,
    total_cpu_seconds,
)
from bench.report import (
    RESULTS_DIR,
    announce_machine,
    now_iso,
    rounded,
    targets_table,
    write_result,
)
from bench.storm_report import evaluate_targets, profile_table, summarize, summary_table
from bench.tracers import Tracer, Unavailable, all_tracers

FEW_ARGS = ("few", 4, 16)  # /bin/true MARKER + 2 arguments of 16 bytes
MANY_ARGS = ("20x120", 21, 120)  # /bin/true MARKER + 19 arguments of 120 bytes
WAIT_TIMEOUT_S = 120.0
EXPECTED_RATE = {1: 1950, 2: 3800}  # execs/s measured earlier on an idle machine of this kind
# The contenders py-spy samples, when it is installed.
PROFILED = ("collector_file", "collector_es", "collector_es_before")


def loads_for(quick: bool) -> list[Load]:
    shapes = [FEW_ARGS, MANY_ARGS]
    workers = (1, 2)
    loads = [Load(f"{name}/{w}w", w, nargs, size) for name, nargs, size in shapes
             for w in workers]
    if quick:
        return [loads[1], loads[2]]  # few/2w, 20x120/1w
    return loads


# --------------------------------------------------------------------------- one case


@dataclass
class Snapshot:
    at: float
    cpu_s: float
    side_cpu_s: dict[str, float]
    counters: dict[str, float]
    bpf: BpfUsage | None
    load_cpu_s: float
    machine_cpu_s: float
    capture_thread_cpu_s: float | None  # the collector's main (capture) thread


def snapshot(tracer: Tracer) -> Snapshot:
    bpf_pid = tracer.bpf_pid()
    capture_pid = tracer.capture_thread_pid()
    return Snapshot(
        at=time.monotonic(),
        load_cpu_s=children_cpu_seconds(),
        machine_cpu_s=machine_cpu_seconds(),
        cpu_s=total_cpu_seconds(tracer.cpu_pids()),
        side_cpu_s={k: total_cpu_seconds(v) for k, v in tracer.side_pids().items()},
        counters=tracer.counters(),
        bpf=bpf_usage(bpf_pid) if bpf_pid else None,
        capture_thread_cpu_s=thread_cpu_seconds(capture_pid, capture_pid)
        if capture_pid else None,
    )


def wait_recorded(tracer: Tracer, recorder: Any, expected: int) -> tuple[int, float]:
    """Poll the output until every exec is there, or it stopped growing for quiet_s while
    the tracer holds nothing undelivered (a spool still shipping means late, not lost)."""
    started = last_change = time.monotonic()
    last = -1
    while True:
        count = recorder.recorded()
        now = time.monotonic()
        if count >= expected or now - started > WAIT_TIMEOUT_S:
            return count, now - started
        if count != last:
            last, last_change = count, now
        elif now - last_change >= tracer.quiet_s and not tracer.still_pending():
            return count, now - started
        time.sleep(0.1)


def run_case(tracer: Tracer, loadgen: Any, load: Load, seconds: float) -> dict[str, Any]:
    marker = new_marker()
    recorder = tracer.recorder(marker)
    before = snapshot(tracer)
    result = loadgen.run(load, seconds, marker)
    recorded = settle = None
    if recorder is not None:
        recorded, settle = wait_recorded(tracer, recorder, result.execs)
    after = snapshot(tracer)
    case: dict[str, Any] = {
        "tracer": tracer.name,
        "load": load.name,
        "execs": result.execs,
        "failures": result.failures,
        "elapsed_s": round(result.elapsed_s, 3),
        "rate": round(result.rate, 1),
        "recorded": recorded,
        "missing": None if recorded is None else result.execs - recorded,
        "settle_s": rounded(settle),
    }
    case.update(_costs(before, after, result.execs, recorded))
    case.update(_interference(before, after, case))
    return case


def _interference(before: Snapshot, after: Snapshot, case: dict[str, Any]) -> dict[str, Any]:
    """The load's own CPU per exec (robust to other work on the machine) and how much CPU
    went to processes that are neither the load, the tracer nor its side processes."""
    load = after.load_cpu_s - before.load_cpu_s
    window = after.at - before.at
    machine = after.machine_cpu_s - before.machine_cpu_s
    ours = load + case["cpu_s"] + sum(case["side_cpu_s"].values())
    cpus = os.cpu_count() or 1
    return {
        "load_cpu_us_per_exec": round(load * 1e6 / case["execs"], 1) if case["execs"] else None,
        "other_cpu_share": round(max(0.0, machine - ours) / (window * cpus), 3)
        if window > 0 else None,
    }


def _costs(before: Snapshot, after: Snapshot, execs: int, recorded: int | None
           ) -> dict[str, Any]:
    cpu = after.cpu_s - before.cpu_s
    events = recorded if recorded else execs
    costs: dict[str, Any] = {
        "cpu_s": round(cpu, 3),
        "cpu_s_per_1000": round(cpu * 1000 / events, 4) if events and recorded is not None
        else None,
        "side_cpu_s": {k: round(v - before.side_cpu_s.get(k, 0.0), 3)
                       for k, v in after.side_cpu_s.items()},
        "counters": {k: v - before.counters.get(k, 0.0) for k, v in after.counters.items()},
    }
    if after.capture_thread_cpu_s is not None and before.capture_thread_cpu_s is not None \
            and cpu > 0:
        capture = after.capture_thread_cpu_s - before.capture_thread_cpu_s
        costs["capture_thread_share"] = round(min(1.0, capture / cpu), 3)
    if after.bpf and before.bpf and after.bpf.run_count > before.bpf.run_count:
        runs = after.bpf.run_count - before.bpf.run_count
        spent = after.bpf.run_time_ns - before.bpf.run_time_ns
        costs["bpf_ns_per_exec"] = round(spent / execs) if execs else None
        costs["bpf_runs"] = runs
    return costs


# --------------------------------------------------------------------------- sessions


@dataclass
class Session:
    """One contender started once in a round, running every load."""

    tracer: Tracer
    cases: list[dict[str, Any]]
    info: dict[str, Any]


def run_session(tracer: Tracer, loadgen: Any, loads: list[Load], seconds: float,
                round_no: int, profiler: dict[str, Any] | None) -> Session:
    tracer.notes.clear()
    tracer.start()
    cases: list[dict[str, Any]] = []
    info: dict[str, Any] = {"round": round_no, "startup_s": rounded(tracer.startup_s, 3)}
    try:
        for load in loads:
            profiling = _maybe_profile(tracer, load, seconds, profiler)
            case = run_case(tracer, loadgen, load, seconds)
            case["round"] = round_no
            if profiling is not None:
                assert profiler is not None
                profiler["results"][tracer.name] = {
                    "load": load.name, **profile.finish_recording(*profiling)}
            cases.append(case)
            print(_case_line(case), flush=True)
        info.update(_session_resources(tracer))
    finally:
        tracer.stop()
    info["notes"] = list(tracer.notes)
    ready = getattr(tracer, "ready_logged_s", None)
    if ready is not None:
        info["ready_logged_s"] = ready
    exit_code = getattr(tracer, "exit_code", None)
    if exit_code is not None:
        info["exit_code"] = exit_code
    return Session(tracer, cases, info)


def _maybe_profile(tracer: Tracer, load: Load, seconds: float,
                   profiler: dict[str, Any] | None) -> tuple[Any, Path] | None:
    """py-spy on each collector contender during its first full-rate (2 worker, few args)
    case."""
    if (profiler is None or tracer.name not in PROFILED
            or tracer.name in profiler["results"]):
        return None
    if load.workers != 2 or not load.name.startswith(FEW_ARGS[0]):
        return None
    pid = tracer.memory_pid()
    if pid is None:
        return None
    out = Path(profiler["dir"]) / f"exec_storm-{tracer.name}-profile.txt"
    return profile.start_recording(profiler["py_spy"], pid, seconds, out), out


def _session_resources(tracer: Tracer) -> dict[str, Any]:
    info: dict[str, Any] = {}
    pid = tracer.memory_pid()
    mem = memory(pid) if pid else None
    if mem:
        info["memory"] = mem.as_mib()
    bpf_pid = tracer.bpf_pid()
    if bpf_pid:
        usage = bpf_usage(bpf_pid)
        info["bpf_programs"] = usage.programs
        info["bpf_map_memlock_mib"] = round(usage.map_memlock_bytes / MIB, 1)
    return info


def _case_line(case: dict[str, Any]) -> str:
    missing = "" if case["missing"] is None else f", missing {case['missing']}"
    cost = "" if case["cpu_s_per_1000"] is None else f", {case['cpu_s_per_1000']} cpu-s/1000"
    return (f"  round {case['round']} {case['tracer']:<15} {case['load']:<10} "
            f"{case['rate']:>8.0f} execs/s ({case['execs']} execs{missing}{cost}; "
            f"other work {case['other_cpu_share']:.0%} of the CPUs)")


# --------------------------------------------------------------------------- main


def choose_loadgen(kind: str, workdir: Path, calibrate_s: float) -> tuple[Any, dict[str, Any]]:
    """The load generator to use, and what each one reached with 1 and 2 workers."""
    info: dict[str, Any] = {"expected_idle_rate": EXPECTED_RATE}
    c_gen = None
    try:
        c_gen = CLoadgen(build_c_loadgen(workdir))
    except RuntimeError as exc:
        info["c_error"] = str(exc)
    candidates: dict[str, Any] = {"python": PythonLoadgen()}
    if c_gen is not None:
        candidates["c"] = c_gen
    for name, gen in candidates.items():
        for workers in (1, 2):
            load = Load(f"calibrate/{workers}w", workers, *FEW_ARGS[1:])
            info[f"{name}_{workers}w_rate"] = round(gen.run(load, calibrate_s, new_marker()).rate)
    chosen = c_gen if kind in ("auto", "c") and c_gen is not None else candidates["python"]
    if kind == "c" and c_gen is None:
        raise SystemExit(f"exec_storm: the C load generator is unavailable: {info['c_error']}")
    info["used"] = chosen.kind
    return chosen, info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.exec_storm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per case")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="1 round, 1 s per case, two loads (for tests)")
    parser.add_argument("--tracers", default="baseline,auditd,bcc,collector_file,collector_es",
                        help="comma-separated subset, in run order")
    parser.add_argument("--loadgen", choices=("auto", "c", "python"), default="auto")
    parser.add_argument("--before", type=Path, default=None,
                        help="another checkout (e.g. git archive of an earlier commit): its "
                             "collector runs as collector_file_before / collector_es_before")
    parser.add_argument("--py-spy", default=None,
                        help="py-spy binary (default: from PATH); profiles the collector")
    parser.add_argument("--output", type=Path, default=None, help="result JSON path")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rounds = 1.0, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="acb-storm-"))
    stats_before = set_bpf_stats(True)
    try:
        return _run(args, workdir)
    finally:
        if stats_before is not None:
            set_bpf_stats(stats_before)
        shutil.rmtree(workdir, ignore_errors=True)


def _run(args: argparse.Namespace, workdir: Path) -> int:
    host = announce_machine()
    missing = ensure_tools()
    loadgen, loadgen_info = choose_loadgen(args.loadgen, workdir, 0.5 if args.quick else 2.0)
    print(f"load generator: {loadgen_info}", flush=True)
    loads = loads_for(args.quick)
    available = all_tracers(workdir, args.before)
    order = [n.strip() for n in args.tracers.split(",") if n.strip()]
    unknown = [n for n in order if n not in available]
    if unknown:
        raise SystemExit(f"exec_storm: unknown tracer(s) {unknown}; known: {list(available)}")
    unavailable = _preflight(order, missing)
    stages = _stage_costs(workdir, 1000 if args.quick else 5000)
    py_spy = profile.find_py_spy(args.py_spy)
    # The raw stacks are kept beside the result (flame graphs, a before/after diff).
    profile_dir = Path(args.output).parent if args.output else RESULTS_DIR
    profile_dir.mkdir(parents=True, exist_ok=True)
    profiler = {"py_spy": py_spy, "dir": str(profile_dir), "results": {}} if py_spy else None
    cases, sessions = _rounds(args, order, available, loadgen, loads, unavailable, profiler)
    return _finish(args, host, loadgen_info, loads, order, cases, sessions, unavailable,
                   profiler, stages)


def _stage_costs(workdir: Path, count: int) -> dict[str, Any]:
    try:
        return stage_costs(workdir, count)
    except Exception as exc:  # the collector's API moves; the storm results must survive it
        return {"error": f"{type(exc).__name__}: {exc}"}


def _preflight(order: list[str], missing: dict[str, str]) -> dict[str, str]:
    unavailable: dict[str, str] = {}
    if "auditd" in order and ("auditd" in missing or "auditctl" in missing):
        unavailable["auditd"] = missing.get("auditd") or missing["auditctl"]
    bcc_reason = bcc_available()
    if bcc_reason:
        for name in order:
            if name == "bcc" or name.startswith("collector"):
                unavailable[name] = bcc_reason
    return unavailable


def _rounds(args: argparse.Namespace, order: list[str], tracers: dict[str, Tracer],
            loadgen: Any, loads: list[Load], unavailable: dict[str, str],
            profiler: dict[str, Any] | None
            ) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    cases: list[dict[str, Any]] = []
    sessions: dict[str, list[dict[str, Any]]] = {name: [] for name in order}
    for round_no in range(1, args.rounds + 1):
        print(f"round {round_no}/{args.rounds}", flush=True)
        for name in order:
            if name in unavailable:
                continue
            try:
                session = run_session(tracers[name], loadgen, loads, args.duration, round_no,
                                      profiler)
            except Unavailable as exc:
                unavailable[name] = str(exc)
                print(f"  {name}: unavailable: {exc}", flush=True)
                continue
            cases.extend(session.cases)
            sessions[name].append(session.info)
    return cases, sessions


def _finish(args: argparse.Namespace, host: dict[str, Any], loadgen_info: dict[str, Any],
            loads: list[Load], order: list[str], cases: list[dict[str, Any]],
            sessions: dict[str, list[dict[str, Any]]], unavailable: dict[str, str],
            profiler: dict[str, Any] | None, stages: dict[str, Any]) -> int:
    rows = summarize(cases, sessions, order, loads)
    startup = [s["startup_s"] for s in sessions.get("collector_file", []) + sessions.get(
        "collector_es", []) if s.get("startup_s") is not None]
    targets = evaluate_targets(rows, startup)
    print()
    print(summary_table(rows, unavailable))
    print()
    print(targets_table(targets))
    profiles = (profiler or {}).get("results") or {}
    for name, profiled in profiles.items():
        print(profile_table(profiled, name))
    print("\ncollector user-space stages, in-process, us per exec event: "
          + ", ".join(f"{k} {v}" for k, v in stages.items()))
    result = {
        "benchmark": "exec_storm",
        "finished": now_iso(),
        "machine": host,
        "options": {"duration_s": args.duration, "rounds": args.rounds, "quick": args.quick,
                    "tracers": order},
        "loadgen": loadgen_info,
        "loads": [load.__dict__ for load in loads],
        "tracers": {name: {"available": name not in unavailable,
                           "reason": unavailable.get(name), "sessions": sessions.get(name, [])}
                    for name in order},
        "collector_startup_s": startup,
        "collector_stage_us_per_event": stages,
        "summary": rows,
        "targets": [t.as_dict() for t in targets],
        "profiles": profiles or None,
        "cases": cases,
    }
    path = write_result("exec_storm", result, args.output)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
