"""`audit-collector report` at scale against the test server (not run in CI).

    python -m bench.report_scale [--hosts 1000] [--per-host 10000] [--commands 1000000]

Loads hosts x per-host documents of one day (2024-05-01) into `tests.esserver` through
`load_docs` (the collector's index template installed first): per host a start document,
a heartbeat every 60 s, exec events in between, contiguous sequences. Planted: every 100th
host lost 5 documents (an unexplained sequence gap), and every 100th host from the 50th on
was silent for 30 minutes (no heartbeat, sequences contiguous). Then runs `report coverage`
and `report gaps` as separate processes (`python -m collector report ...` to CSV) and
`report commands` over --commands root exec documents of another day, and prints one JSON
object: time per million documents and the peak RSS (ru_maxrss) of each report process, and
whether the planted gaps were all found.
"""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
DAY_START = 1714521600  # 2024-05-01T00:00:00Z
COMMANDS_DAY = 1714608000  # 2024-05-02
STREAM = "logs-audit_collector-default"


def _stamp(seconds: float) -> str:
    whole = int(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + \
        f".{int((seconds - whole) * 1e9):09d}Z"


def host_documents(n: int, per_host: int) -> Iterator[tuple[str, dict[str, Any]]]:
    host = {"id": f"{n:032x}", "name": f"web-{n:04d}"}
    middle = per_host // 2  # planted wherever --per-host puts the day's end
    deleted = range(middle, middle + 5) if n % 100 == 0 else range(0)
    silent = (36_000, 37_800) if n % 100 == 50 else (0, 0)
    beats = {60 * k for k in range(1, 1440)}
    events = per_host - 1 - len(beats)
    step = 86_400 / (events + 1)
    times = sorted([(float(b), "heartbeat") for b in beats]
                   + [(step * (k + 1) + 0.5, "exec") for k in range(events)])
    seq = 1_000_000
    yield f"{host['id']}-b-{seq}", {"@timestamp": _stamp(DAY_START), "host": host,
                                    "event": {"sequence": seq, "action": "collector_start"},
                                    "audit_collector": {"collector": {
                                        "heartbeat_s": 60, "previous": {"end": "none"}}}}
    for offset, action in times:
        if action == "heartbeat" and silent[0] <= offset < silent[1]:
            continue  # the collector was silent: nothing sealed
        seq += 1
        if seq - 1_000_000 in deleted:
            continue
        doc: dict[str, Any] = {"@timestamp": _stamp(DAY_START + offset), "host": host,
                               "event": {"sequence": seq, "action": action}}
        if action == "heartbeat":
            doc["audit_collector"] = {"collector": {"heartbeat_s": 60}}
        else:
            doc["user"] = {"id": "1000"}
        yield f"{host['id']}-b-{seq}", doc


def command_documents(count: int) -> Iterator[tuple[str, dict[str, Any]]]:
    for i in range(count):
        yield f"cmd-{i}", {
            "@timestamp": _stamp(COMMANDS_DAY + i * 86_000 / count),
            "host": {"id": f"{i % 100:032x}", "name": f"db-{i % 100:02d}"},
            "event": {"sequence": 5_000_000 + i, "action": "exec", "outcome": "success"},
            "user": {"id": "0", "name": "root", "effective": {"id": "0", "name": "root"}},
            "audit_collector": {"login_user": {"id": "1000", "name": "alice"}},
            "process": {"pid": 1000 + i % 30000, "executable": "/usr/bin/systemctl",
                        "command_line": f"systemctl restart app-{i}"}}


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 2**20


def _peak_mib(pid: int) -> float | None:
    """VmHWM of a running process (its own peak since exec: ru_maxrss of a child would
    include the pages of this process that it was forked from)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_report(url: str, timeout_s: float, *args: str) -> tuple[float, float, str]:
    """(seconds, peak RSS MiB, output) of one `audit-collector report` process, whose
    requests may take `timeout_s` (the report's own floor is 600 s)."""
    with tempfile.NamedTemporaryFile(suffix=".csv") as out, \
            tempfile.NamedTemporaryFile("w", suffix=".yaml") as config, \
            tempfile.TemporaryFile() as err:
        config.write(f"elasticsearch: {{request_timeout_s: {timeout_s}}}\n")
        config.flush()
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "collector", "report", *args,
                                 "--config", config.name,
                                 "--output", f"elasticsearch:{url}", "--format", "csv",
                                 "--out", out.name], cwd=ROOT, stderr=err)
        peak = 0.0
        while proc.poll() is None:
            peak = max(peak, _peak_mib(proc.pid) or 0.0)
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        if proc.returncode not in (0, 1):
            err.seek(0)
            raise SystemExit(f"report {args[0]} failed ({proc.returncode}): "
                             f"{err.read().decode()}")
        return seconds, peak, Path(out.name).read_text()


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO("".join(
        line for line in text.splitlines(True) if not line.startswith("#")))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report_scale")
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--per-host", type=int, default=10_000)
    parser.add_argument("--commands", type=int, default=1_000_000)
    parser.add_argument("--request-timeout", type=float, default=600.0,
                        help="seconds a report request may take (a slow, shared machine)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from collector.config import config_from_mapping
    from collector.delivery.elasticsearch.index import setup_cluster
    from tests.esserver import ESTestServer

    result: dict[str, Any] = {"hosts": args.hosts, "per_host": args.per_host}
    with ESTestServer(major=8) as srv:
        cfg = config_from_mapping({"outputs": [f"elasticsearch:{srv.url}"]})
        setup_cluster(cfg, io.StringIO())
        base = rss_mib()
        started = time.perf_counter()
        docs = srv.load_docs(STREAM, (d for n in range(args.hosts)
                                      for d in host_documents(n, args.per_host)))
        result.update(documents=docs, load_s=round(time.perf_counter() - started, 1),
                      server_mib=round(rss_mib() - base))
        million = docs / 1e6
        period = ("--from", "2024-05-01", "--to", "2024-05-02")
        for kind in ("coverage", "gaps"):
            seconds, peak, text = run_report(srv.url, args.request_timeout, kind, *period)
            result[f"{kind}_s"] = round(seconds, 1)
            result[f"{kind}_s_per_million"] = round(seconds / million, 1)
            result[f"{kind}_peak_rss_mib"] = round(peak)
            found = rows(text)
            result[f"{kind}_rows"] = len(found)
        gaps = found  # the rows of `report gaps`, the last one run
        planted_gaps = {f"web-{n:04d}" for n in range(0, args.hosts, 100)}
        planted_silences = {f"web-{n:04d}" for n in range(50, args.hosts, 100)}
        result["planted_found"] = (
            {r["host"] for r in gaps if r["cause"] == "unexplained" and r["sequences"]}
            == planted_gaps and
            {r["host"] for r in gaps if r["cause"] == "unexplained" and not r["sequences"]}
            == planted_silences)
        if args.commands:
            srv.load_docs(STREAM, command_documents(args.commands))
            seconds, peak, text = run_report(srv.url, args.request_timeout, "commands",
                                             "--from", "2024-05-02", "--to", "2024-05-03")
            result.update(commands_rows=len(rows(text)), commands_s=round(seconds, 1),
                          commands_peak_rss_mib=round(peak))
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0 if result["planted_found"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
