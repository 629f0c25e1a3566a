"""Soak: the collector shipping to the ES test server for a long time, through outages.

    python -m bench.soak [--duration S] [--rate N] [--quick] [--output PATH]

For --duration seconds (default 1200): bench/loadgen.c paced to --rate execs/s (default
1000, two workers, every exec numbered: /bin/true RUN-e-N), a real `bash -i` under a pty
typing `: RUN-b-N` lines (--bash-rate per second), and namespace entries (--ns-rate per
second, alternately `unshare --uts` and `nsenter --target T --uts`, each running
/bin/true RUN-n-N). The collector (`audit-collector run`, every probe family) ships to the
ES test server (its own process, `audit-collector setup` first), which goes down for
--outage-s seconds every --outage-every seconds (`/_test/down`: same port, data kept).

Sampled every --sample-s: the collector's RSS and CPU, /metrics (spool bytes and records,
events captured, shipped), the server's CPU and the machine's load. After the load stops
and the spool has drained, the collector is stopped and every stored document is read back
(bench.soak_audit): each marked exec, bash line and namespace entry exactly once, each
_id once, the host's sequences contiguous except for ranges events_lost reports name;
`audit-collector verify` checks the chain too. Targets (bench.soak_report): nothing lost or
duplicated, RSS growth after --warmup-s under 5 MiB, spool back to its steady level within
30 s of each recovery, CPU per event flat. Results: tables on stdout,
bench/results/soak.json and the plot bench/results/soak.png beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.deps import bcc_available, ensure_extra, ensure_tools
from bench.loadgen import CLoadgen, Load, build_c_loadgen, new_marker
from bench.procstat import MIB, cpu_seconds, machine_cpu_seconds, memory
from bench.report import RESULTS_DIR, announce_machine, now_iso, targets_table, write_result
from bench.soak_audit import Audit, Issued, exec_marker, stored_documents
from bench.soak_load import BashTyper, NamespaceEntries
from bench.soak_report import (
    Outage,
    cpu_flatness,
    drains,
    evaluate,
    plot,
    rss_figures,
    summary_lines,
    windows,
    windows_table,
)
from bench.tracers import COLLECTOR, CollectorToES, Unavailable

LOAD = Load("soak", workers=2, nargs=4, arg_bytes=16)  # /bin/true RUN-e-N + 2 args
BASH_WARMUP_S = 20.0
FINAL_DRAIN_S = 180.0
VERIFY_TIMEOUT_S = 1800.0


class Sampler(threading.Thread):
    """Every `interval` seconds: the collector's memory and CPU, its /metrics, the server's
    CPU, the machine's CPU time and load; times are seconds since `t0`."""

    def __init__(self, tracer: CollectorToES, t0: float, interval: float) -> None:
        super().__init__(name="sampler", daemon=True)
        self._tracer = tracer
        self._t0 = t0
        self._interval = interval
        self._halt = threading.Event()
        self.samples: list[dict[str, Any]] = []

    def run(self) -> None:
        due = time.monotonic()
        while not self._halt.wait(max(0.0, due - time.monotonic())):
            self.samples.append(self.sample())
            due += self._interval

    def sample(self) -> dict[str, Any]:
        pid = self._tracer.memory_pid()
        mem = memory(pid) if pid else None
        metrics = self._tracer.metrics()
        return {
            "t": round(time.monotonic() - self._t0, 2),
            "rss_mib": round(mem.rss_bytes / MIB, 2) if mem else 0.0,
            "anon_mib": round(mem.anon_bytes / MIB, 2) if mem else 0.0,
            "cpu_s": cpu_seconds(pid) if pid else 0.0,
            "server_cpu_s": cpu_seconds(self._tracer.server.pid),
            "machine_cpu_s": machine_cpu_seconds(),
            "loadavg1": os.getloadavg()[0],
            "spool_bytes": metrics.get("audit_collector_spool_bytes", 0.0),
            "spool_records": metrics.get("audit_collector_spool_records", 0.0),
            "captured": metrics.get("audit_collector_events_captured_total", 0.0),
            "captured_exec": metrics.get('audit_collector_events_captured_total{kind="exec"}',
                                         0.0),
            "shipped": metrics.get("audit_collector_shipped_documents_total", 0.0),
            "lost": metrics.get("audit_collector_events_lost_total", 0.0),
            "replayed_409": metrics.get("audit_collector_shipped_duplicates_total", 0.0),
            "metrics_ok": bool(metrics),
        }

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


# --------------------------------------------------------------------------- the run


def outage_starts(duration: float, every: float, down_s: float, drain_s: float) -> list[float]:
    """Outages every `every` seconds, each leaving time to recover and drain before the end."""
    starts, at = [], every
    while every > 0 and at + down_s + drain_s <= duration:
        starts.append(at)
        at += every
    return starts


def warm_up_bash(bash: BashTyper, tracer: CollectorToES, run: str) -> float | None:
    """Type unmarked lines until the collector counts a bash event (its probe on this bash
    is attached); the seconds it took, None if it never did."""
    key = 'audit_collector_events_captured_total{kind="bash"}'
    before = tracer.metrics().get(key, 0.0)
    started = time.monotonic()
    number = 0
    while time.monotonic() - started < BASH_WARMUP_S:
        bash.type(f": {run}-warmup-{number}")
        number += 1
        time.sleep(0.5)
        if tracer.metrics().get(key, 0.0) > before:
            return round(time.monotonic() - started, 2)
    return None


def run_outages(tracer: CollectorToES, t0: float, starts: list[float], down_s: float,
                end: float) -> list[Outage]:
    """Take the server down at each start (it comes back by itself); note when it answered."""
    outages = []
    for start in starts:
        _sleep_until(t0 + start)
        down_at = time.monotonic() - t0
        tracer.server.down(down_s)
        time.sleep(down_s * 0.9)
        up_at = None
        while time.monotonic() - t0 < end + down_s:
            if tracer.server.is_up():
                up_at = time.monotonic() - t0
                break
            time.sleep(0.1)
        outages.append(Outage(down_at, up_at))
        print(f"  outage: down at {down_at:.0f} s, up at "
              f"{'never' if up_at is None else f'{up_at:.0f} s'}", flush=True)
    return outages


def _sleep_until(when: float) -> None:
    time.sleep(max(0.0, when - time.monotonic()))


def wait_drained(tracer: CollectorToES, timeout: float) -> float | None:
    """After the load: seconds until the spool holds nothing; None if it still does."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if tracer.metrics().get("audit_collector_spool_records", 1.0) == 0:
            return round(time.monotonic() - started, 1)
        time.sleep(0.5)
    return None


def verify(url: str, workdir: Path) -> dict[str, Any]:
    """`audit-collector verify`: the collector's own check of sequence and chain. Its
    requests may wait as long as the whole check: the test server's first sorted page over
    millions of documents takes longer than the default 30 s request timeout."""
    config = workdir / "verify.yaml"
    config.write_text(f"elasticsearch: {{request_timeout_s: {VERIFY_TIMEOUT_S:g}}}\n")
    started = time.monotonic()
    try:
        proc = subprocess.run([str(COLLECTOR), "verify", "--config", str(config),
                               "--output", f"elasticsearch:{url}"],
                              capture_output=True, text=True, timeout=VERIFY_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"exit_code": None, "output": f"timed out after {VERIFY_TIMEOUT_S:g} s"}
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return {"exit_code": proc.returncode, "seconds": round(time.monotonic() - started, 1),
            "output": lines[-12:]}


def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    loadgen = CLoadgen(build_c_loadgen(workdir))
    issued = Issued(new_marker())
    tracer = CollectorToES(workdir)
    bash = BashTyper(issued, args.bash_rate)
    entries = NamespaceEntries(issued, args.ns_rate, args.duration + 600)
    info: dict[str, Any] = {"run_marker": issued.run}
    with contextlib.ExitStack() as cleanup:
        tracer.start()
        cleanup.callback(tracer.server.stop)
        stop_collector = cleanup.enter_context(_once(tracer.stop_collector))
        info["startup_s"] = tracer.startup_s
        bash.start()
        stop_bash = cleanup.enter_context(_once(bash.stop))
        info["bash_warmup_s"] = warm_up_bash(bash, tracer, issued.run)
        stop_entries = cleanup.enter_context(_once(entries.stop))
        info.update(_load_phase(args, loadgen, tracer, bash, entries, issued,
                                stop_bash, stop_entries))
        stop_collector()
        info["collector_exit_code"] = tracer.exit_code
        info["server_stats"] = tracer.server.stats()
        started = time.monotonic()
        info["audit"] = Audit(issued).feed_all(stored_documents(tracer.server.url)).result()
        info["audit"]["read_back_s"] = round(time.monotonic() - started, 1)
        info["verify"] = verify(tracer.server.url, workdir) if args.verify else None
    return info


def _load_phase(args: argparse.Namespace, loadgen: CLoadgen, tracer: CollectorToES,
                bash: BashTyper, entries: NamespaceEntries, issued: Issued,
                stop_bash: Callable[[], str | None], stop_entries: Callable[[], str | None]
                ) -> dict[str, Any]:
    """The load, the outages and the samples, until the spool has drained after the load."""
    info: dict[str, Any] = {}
    t0 = time.monotonic()
    info["started_unix_ns"] = time.time_ns()  # t0 on the wall clock documents are stamped with
    sampler = Sampler(tracer, t0, args.sample_s)
    sampler.start()
    try:
        load = loadgen.start(LOAD, args.duration, exec_marker(issued.run), args.rate,
                             numbered=True)
        bash.start_typing()
        entries.start()
        starts = outage_starts(args.duration, args.outage_every, args.outage_s,
                               args.drain_within)
        info["outages"] = run_outages(tracer, t0, starts, args.outage_s, args.duration)
        result = loadgen.finish(load, args.duration)
        issued.execs = result.execs + result.failures
        info["load"] = {"execs": result.execs, "failures": result.failures,
                        "elapsed_s": round(result.elapsed_s, 1), "rate": round(result.rate, 1)}
        info["bash_error"] = stop_bash()
        info["ns_error"] = stop_entries()
        info["ns_failures"] = entries.failures
        info["final_drain_s"] = wait_drained(tracer, FINAL_DRAIN_S)
    finally:
        sampler.stop()
    info["samples"] = sampler.samples
    return info


@contextlib.contextmanager
def _once(stop: Callable[[], Any]) -> Iterator[Callable[[], Any]]:
    """`stop` for the caller to call when it is time, and called on the way out if not."""
    done: list[Any] = []

    def call() -> Any:
        if not done:
            done.append(stop())
        return done[0]

    try:
        yield call
    finally:
        call()


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=1200.0, help="seconds of load")
    parser.add_argument("--rate", type=float, default=1000.0, help="loadgen execs/s")
    parser.add_argument("--bash-rate", type=float, default=4.0, help="bash lines/s")
    parser.add_argument("--ns-rate", type=float, default=4.0, help="namespace entries/s")
    parser.add_argument("--outage-every", type=float, default=300.0,
                        help="seconds between outages of the server (0: none)")
    parser.add_argument("--outage-s", type=float, default=60.0, help="length of an outage")
    parser.add_argument("--drain-within", type=float, default=30.0,
                        help="seconds the spool has to drain after a recovery (the target; "
                             "an outage is scheduled only if this much load follows it)")
    parser.add_argument("--warmup-s", type=float, default=60.0,
                        help="RSS growth is measured from this point")
    parser.add_argument("--sample-s", type=float, default=2.0, help="sampling period")
    parser.add_argument("--window-s", type=float, default=60.0,
                        help="window of the CPU-per-event figures")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip audit-collector verify on the stored documents")
    parser.add_argument("--quick", action="store_true",
                        help="30 s at 500 execs/s, one 5 s outage (for tests)")
    parser.add_argument("--output", type=Path, default=None, help="result JSON path "
                        "(the plot is written beside it, .png)")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rate, args.outage_every, args.outage_s = 30.0, 500.0, 8.0, 5.0
        args.drain_within, args.warmup_s, args.sample_s, args.window_s = 12.0, 6.0, 1.0, 10.0
    return args


def preflight() -> None:
    missing = ensure_tools({"gcc": "gcc"})
    reasons = list(missing.values())
    reasons += [f"{t} missing (util-linux)" for t in NamespaceEntries.missing_tools()]
    bcc = bcc_available()
    if bcc:
        reasons.append(bcc)
    plotting = ensure_extra("bench", ["matplotlib"])
    if plotting:
        reasons.append(plotting)
    if os.geteuid() != 0:
        reasons.append("must run as root (BPF, namespaces)")
    if reasons:
        raise SystemExit(f"soak: cannot run: {'; '.join(reasons)}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    preflight()
    host = announce_machine()
    workdir = Path(tempfile.mkdtemp(prefix="acb-soak-"))
    try:
        info = soak(args, workdir)
    except Unavailable as exc:
        raise SystemExit(f"soak: {exc}") from exc
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return finish(args, host, info)


def finish(args: argparse.Namespace, host: dict[str, Any], info: dict[str, Any]) -> int:
    samples, outages = info.pop("samples"), info.pop("outages")
    rows = windows(samples, args.window_s, outages)
    rss = rss_figures(samples, args.warmup_s, args.window_s)
    drained = drains(samples, outages, args.window_s)
    flat = cpu_flatness(rows)
    targets = evaluate(info["audit"], rss, drained, flat, args.warmup_s)
    json_path = args.output or RESULTS_DIR / "soak.json"
    title = (f"bench.soak {now_iso()}: {args.rate:g} execs/s, {len(outages)} outage(s) of "
             f"{args.outage_s:g} s, load average {host['loadavg'][0]:.1f}")
    png = plot(samples, rows, args.window_s, outages, title, json_path.with_suffix(".png"))
    print()
    print("\n".join(summary_lines(info)))
    print()
    print(windows_table(rows))
    print()
    print(targets_table(targets))
    result = {
        "benchmark": "soak",
        "finished": now_iso(),
        "machine": {**host, "loadavg_after": list(os.getloadavg())},
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        **info,
        "outages": drained,
        "rss": rss,
        "cpu_flatness": flat,
        "windows": rows,
        "targets": [t.as_dict() for t in targets],
        "plot": str(png),
        "samples": samples,
    }
    path = write_result("soak", result, json_path)
    print(f"\nresults: {path}\nplot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
