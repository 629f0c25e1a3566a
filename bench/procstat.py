"""Readings from /proc: CPU time of processes, their memory, kernel threads, machine load."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
KIB = 1024
MIB = 1024 * 1024


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds; 0.0 once it is gone."""
    return _stat_cpu_seconds(f"/proc/{pid}/stat")


def thread_cpu_seconds(pid: int, tid: int) -> float:
    """utime + stime of one thread of a process; 0.0 once it is gone."""
    return _stat_cpu_seconds(f"/proc/{pid}/task/{tid}/stat")


def _stat_cpu_seconds(stat_path: str) -> float:
    try:
        stat = Path(stat_path).read_text()
    except OSError:
        return 0.0
    # Fields after the parenthesised comm (which may itself contain spaces or parens).
    fields = stat[stat.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def total_cpu_seconds(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


@dataclass(frozen=True)
class Memory:
    peak_rss_bytes: int  # VmHWM
    rss_bytes: int  # VmRSS
    anon_bytes: int  # RssAnon

    def as_mib(self) -> dict[str, float]:
        return {"peak_rss_mib": round(self.peak_rss_bytes / MIB, 1),
                "rss_mib": round(self.rss_bytes / MIB, 1),
                "anon_mib": round(self.anon_bytes / MIB, 1)}


def memory(pid: int) -> Memory | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmHWM", "VmRSS", "RssAnon"):
            values[name] = int(rest.split()[0]) * KIB
    return Memory(values.get("VmHWM", 0), values.get("VmRSS", 0), values.get("RssAnon", 0))


def pids_by_comm(comm: str) -> list[int]:
    """Processes (or kernel threads) whose /proc/PID/comm is exactly comm."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if Path(entry.path, "comm").read_text().strip() == comm:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def machine_busy_fraction(seconds: float = 1.0) -> float:
    """Share of all CPUs busy over a short window (what else is running on the machine)."""
    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    spent = total1 - total0
    return round(1.0 - (idle1 - idle0) / spent, 3) if spent > 0 else 0.0


@dataclass(frozen=True)
class BpfUsage:
    """What a process's BPF objects cost in the kernel (from /proc/PID/fdinfo)."""

    run_time_ns: int  # with kernel.bpf_stats_enabled=1 only
    run_count: int
    map_memlock_bytes: int
    programs: int


def bpf_usage(pid: int) -> BpfUsage:
    run_time = runs = memlock = programs = 0
    try:
        entries = list(os.scandir(f"/proc/{pid}/fdinfo"))
    except OSError:
        return BpfUsage(0, 0, 0, 0)
    for entry in entries:
        try:
            info = _fdinfo_fields(Path(entry.path).read_text())
        except OSError:
            continue
        if "prog_id" in info:
            programs += 1
            run_time += info.get("run_time_ns", 0)
            runs += info.get("run_cnt", 0)
        elif "map_id" in info:
            memlock += info.get("memlock", 0)
    return BpfUsage(run_time, runs, memlock, programs)


def _fdinfo_fields(text: str) -> dict[str, int]:
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        value = value.strip()
        if value.isdigit():
            fields[name.strip()] = int(value)
    return fields


BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def set_bpf_stats(enabled: bool) -> bool | None:
    """Turn BPF run-time statistics on or off; the previous setting (None if unavailable)."""
    try:
        previous = BPF_STATS.read_text().strip() == "1"
        BPF_STATS.write_text("1" if enabled else "0")
        return previous
    except OSError:
        return None


def machine_cpu_seconds() -> float:
    """CPU time spent by everything on the machine (all CPUs, idle and iowait excluded)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user..steal minus idle and iowait
    return busy / CLOCK_TICKS


def children_cpu_seconds() -> float:
    """CPU time of this process's reaped children (the load generator and its execs)."""
    times = os.times()
    return times.children_user + times.children_system
