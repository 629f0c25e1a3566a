"""Memory with a full process table: the collector's RSS while it tracks N processes.

    python -m bench.process_table [--processes 100000] [--output PATH]

A host cannot run 100,000 processes at once here (pid_max, memory), so the processes are
synthetic records: worker processes of a few supervisors (1000 workers each, in their
supervisor's session and process group, as a service manager or a shell job would run
them), each as the fork record and the exec record the BPF programs would write (an argv of
seven arguments, about 60 bytes), fed through the agent's own path (decode, process table,
document builder; the documents go to a sink that drops them). The agent is
the real one, with its probes compiled, loaded and attached, so the RSS includes BCC and
LLVM. Reported: RSS (VmRSS) after start-up and with N processes tracked, the growth per
process, peak RSS (VmHWM). Result: bench/results/process_table.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path
from typing import Any

from collector.agent import Agent
from collector.capture.families import EXEC, FORK
from collector.config import config_from_mapping
from collector.ecs.host import detect_host

MIB = 1 << 20
FIRST_PID = 5_000_000  # above any pid_max: never a real process


class DroppingSink:
    def __init__(self) -> None:
        self.documents = 0

    def submit(self, doc: dict[str, Any]) -> None:
        self.documents += 1

    def ringbuf_lost(self, grown: dict[str, int], total: int) -> None:
        return

    def tick(self) -> None:
        return

    def flush_pending(self) -> None:
        return

    def close(self, timeout_s: float = 10.0) -> None:
        return


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


WORKERS_PER_SUPERVISOR = 1000


def identity(pid: int, start_ns: int, ppid: int, parent_start_ns: int,
             leader: int, leader_start_ns: int) -> dict[str, Any]:
    return {"ktime_ns": time.monotonic_ns(), "pid": pid, "tid": pid, "ppid": ppid,
            "vpid": pid, "start_ns": start_ns, "parent_start_ns": parent_start_ns,
            "pgid": leader, "sid": leader, "pgid_start_ns": leader_start_ns,
            "sid_start_ns": leader_start_ns, "uid": 1000, "euid": 1000, "gid": 1000,
            "egid": 1000, "auid": 0xFFFFFFFF, "sessionid": 0xFFFFFFFF, "tty_index": -1,
            "comm": b"worker", "cgroup_name": b"worker.service"}


def exec_record(who: dict[str, Any], argv: list[bytes]) -> bytes:
    blob = b"".join(a + b"\0" for a in argv)
    return EXEC.layout.pack({"kind": EXEC.kind, "syscall": 0, "retval": 0, "argc": len(argv),
                             "args_len": len(blob), "exe_ino": 77, "exe_dev": 1,
                             "id": {**who, "comm": b"python3"},
                             "filename": argv[0]}, tail_bytes=blob)


def records(n: int) -> Any:
    supervisor = 0
    for i in range(n):
        if i % WORKERS_PER_SUPERVISOR == 0:  # a supervisor of its own session, under init
            supervisor, sup_start = FIRST_PID + i, 10_000_000 * (1000 + i)
            who = identity(supervisor, sup_start, 1, 10_000_000, supervisor, sup_start)
            yield exec_record(who, [b"/usr/bin/supervisord", b"-n"])
            continue
        start_ns = 10_000_000 * (1000 + i)
        who = identity(FIRST_PID + i, start_ns, supervisor, sup_start, supervisor, sup_start)
        yield FORK.layout.pack({"kind": FORK.kind, "id": who})
        yield exec_record(who, [b"/usr/bin/python3", b"-m", b"worker", b"--queue",
                                b"default", b"--id", str(i).encode()])


def measure(n: int) -> dict[str, Any]:
    cfg = config_from_mapping({"metrics": {"enabled": False},
                               "capture": {"max_processes": n, "bash": False}})
    sink = DroppingSink()
    agent = Agent(cfg, detect_host(), sink)
    agent.start()
    try:
        assert agent._processes is not None
        gc.collect()
        started_kib = status_kib("VmRSS")
        seeded = len(agent._processes)
        t0 = time.monotonic()
        for data in records(n):
            agent._on_record(data)
        fed_s = time.monotonic() - t0
        gc.collect()
        full_kib = status_kib("VmRSS")
        tracked = len(agent._processes)
        evicted = agent.metrics.capture.processes_evicted._value.get()
    finally:
        agent.probes.close()
    return {
        "processes_fed": n, "tracked": tracked, "seeded_from_proc": seeded,
        "evicted": evicted, "documents": sink.documents,
        "rss_started_mib": round(started_kib / 1024, 1),
        "rss_tracking_mib": round(full_kib / 1024, 1),
        "peak_rss_mib": round(status_kib("VmHWM") / 1024, 1),
        "bytes_per_process": round((full_kib - started_kib) * 1024 / max(1, tracked)),
        "feed_seconds": round(fed_s, 1),
        "documents_per_s": round(sink.documents / fed_s) if fed_s else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=100_000)
    parser.add_argument("--output", default="bench/results/process_table.json")
    args = parser.parse_args()
    result = measure(args.processes)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        print(f"{key:>20}: {value}")


if __name__ == "__main__":
    main()
