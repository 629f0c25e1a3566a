"""bench.soak's figures: per-window costs, RSS growth, spool drain after each outage, the
targets, and the plot (RSS, spool, CPU over time, outages shaded)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procstat import MIB
from bench.report import Target, median, rounded, table

RSS_GROWTH_LIMIT_MIB = 5.0
DRAIN_LIMIT_S = 30.0
CPU_FLAT_LIMIT = 1.10  # last third of the windows vs the first third (medians)


@dataclass(frozen=True)
class Outage:
    down_at: float  # seconds since the load started
    up_at: float | None  # when the server answered again (None: it never did)

    def as_dict(self) -> dict[str, Any]:
        return {"down_at_s": round(self.down_at, 1),
                "up_at_s": None if self.up_at is None else round(self.up_at, 1)}


# --------------------------------------------------------------------------- windows


def windows(samples: list[dict[str, Any]], window_s: float, outages: list[Outage]
            ) -> list[dict[str, Any]]:
    """Per window of window_s: events captured, collector CPU per event, machine load."""
    rows = []
    cpus = os.cpu_count() or 1
    end = samples[-1]["t"] if samples else 0.0
    start = 0.0
    while start + window_s <= end + 1e-6:
        first, last = _at(samples, start), _at(samples, start + window_s)
        if first is None or last is None or last["t"] <= first["t"]:
            break
        span = last["t"] - first["t"]
        events = last["captured"] - first["captured"]
        cpu = last["cpu_s"] - first["cpu_s"]
        rows.append({
            "from_s": round(start),
            "events_per_s": round(events / span, 1),
            "execs_per_s": round((last["captured_exec"] - first["captured_exec"]) / span, 1),
            "shipped_per_s": round((last["shipped"] - first["shipped"]) / span, 1),
            "cpu_us_per_event": round(cpu * 1e6 / events, 1) if events > 0 else None,
            "collector_cpu_share": round(cpu / span, 3),
            "server_cpu_share": round((last["server_cpu_s"] - first["server_cpu_s"]) / span, 3),
            "machine_busy_share": round(
                (last["machine_cpu_s"] - first["machine_cpu_s"]) / (span * cpus), 3),
            "loadavg1": last["loadavg1"],
            "rss_mib": last["rss_mib"],
            "spool_records_max": max(s["spool_records"] for s in samples
                                     if first["t"] <= s["t"] <= last["t"]),
            "outage": any(o.down_at < start + window_s and (o.up_at or end) > start
                          for o in outages),
        })
        start += window_s
    return rows


def _at(samples: list[dict[str, Any]], t: float) -> dict[str, Any] | None:
    """The sample closest to time t."""
    return min(samples, key=lambda s: abs(s["t"] - t)) if samples else None


# --------------------------------------------------------------------------- figures


def rss_figures(samples: list[dict[str, Any]], warmup_s: float, window_s: float
                ) -> dict[str, Any]:
    after = [s for s in samples if s["t"] >= warmup_s]
    if not after:
        return {"baseline_mib": None, "growth_mib": None, "peak_above_baseline_mib": None}
    baseline = after[0]
    tail = [s["rss_mib"] for s in after if s["t"] >= after[-1]["t"] - window_s]
    end = median(tail)
    return {
        "baseline_at_s": round(baseline["t"], 1),
        "baseline_mib": baseline["rss_mib"],
        "end_mib": rounded(end, 1),
        "growth_mib": rounded(end - baseline["rss_mib"], 1) if end is not None else None,
        "peak_above_baseline_mib": round(max(s["rss_mib"] for s in after)
                                         - baseline["rss_mib"], 1),
        "anon_growth_mib": round(after[-1]["anon_mib"] - baseline["anon_mib"], 1),
    }


def drains(samples: list[dict[str, Any]], outages: list[Outage], steady_s: float
           ) -> list[dict[str, Any]]:
    """Per outage: the spool's peak, and how long after the server came back the spool was
    back at its steady level (the most it held in the steady_s before the outage: under
    load a batch or two is always on its way)."""
    out = []
    for outage in outages:
        before = [s for s in samples if outage.down_at - steady_s <= s["t"] < outage.down_at]
        steady = max((s["spool_records"] for s in before), default=0.0)
        during = [s for s in samples if s["t"] >= outage.down_at]
        peak = max(during, key=lambda s: s["spool_records"], default=None)
        drained_s = None
        if outage.up_at is not None:
            done = next((s for s in during if s["t"] >= outage.up_at
                         and s["spool_records"] <= steady), None)
            drained_s = None if done is None else round(done["t"] - outage.up_at, 1)
        out.append({
            **outage.as_dict(),
            "steady_records": steady,
            "peak_records": peak["spool_records"] if peak else None,
            "peak_spool_mib": round(max((s["spool_bytes"] for s in during), default=0)
                                    / MIB, 1),
            "drained_after_up_s": drained_s,
        })
    return out


def cpu_flatness(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median CPU per event of the last third of the windows over the first third's,
    leaving out the first window (start-up)."""
    values = [r["cpu_us_per_event"] for r in rows[1:] if r["cpu_us_per_event"] is not None]
    if len(values) < 2:
        return {"first_us": None, "last_us": None, "ratio": None}
    third = max(1, len(values) // 3)
    first, last = median(values[:third]), median(values[-third:])
    return {"first_us": rounded(first, 1), "last_us": rounded(last, 1),
            "ratio": rounded(last / first, 3) if first else None}


# --------------------------------------------------------------------------- targets


def evaluate(audit: dict[str, Any], rss: dict[str, Any], drained: list[dict[str, Any]],
             flat: dict[str, Any], warmup_s: float) -> list[Target]:
    execs, bash, ns = audit["exec"], audit["bash"], audit["namespace"]
    lost = execs["missing"] + bash["missing"] + ns["missing"]
    doubled = execs["duplicated"] + bash["duplicated"] + ns["duplicated"]
    by_id = audit["duplicate_ids"] + audit["ids_not_matching_sequence"] + sum(
        h["duplicate_sequences"] for h in audit["hosts"].values())
    gaps = sum(h["unexplained_missing_sequences"] for h in audit["hosts"].values())
    counted = (f"of {execs['expected']:,} execs, {bash['expected']:,} bash lines, "
               f"{ns['expected']:,} ns entries")
    growth = rss.get("growth_mib")
    waits = [d["drained_after_up_s"] for d in drained]
    drain_ok = bool(waits) and all(w is not None and w <= DRAIN_LIMIT_S for w in waits)
    ratio = flat.get("ratio")
    return [
        Target("events lost (by marker)", "0", f"{lost} {counted}", lost == 0),
        Target("events duplicated (by marker)", "0", f"{doubled}", doubled == 0),
        Target("documents duplicated (by _id, sequence)", "0", f"{by_id} of "
               f"{audit['documents']:,} documents", by_id == 0),
        Target("sequence gaps not reported as lost", "0", f"{gaps}", gaps == 0),
        Target(f"RSS growth after {warmup_s:g} s", f"< {RSS_GROWTH_LIMIT_MIB:g} MiB",
               "-" if growth is None else f"{growth:+.1f} MiB (peak "
               f"{rss['peak_above_baseline_mib']:+.1f})",
               None if growth is None else growth < RSS_GROWTH_LIMIT_MIB),
        Target("spool back to steady after recovery", f"<= {DRAIN_LIMIT_S:g} s",
               ", ".join("never" if w is None else f"{w:g} s" for w in waits) or "no outage",
               drain_ok if waits else None),
        Target("CPU per event, last third / first third", f"<= {CPU_FLAT_LIMIT:g}",
               "-" if ratio is None else f"{ratio:.2f} ({flat['first_us']} -> "
               f"{flat['last_us']} us)", None if ratio is None else ratio <= CPU_FLAT_LIMIT),
    ]


def windows_table(rows: list[dict[str, Any]]) -> str:
    return table(["from s", "events/s", "host execs/s", "shipped/s", "cpu us/event", "rss MiB",
                  "spool max", "machine busy", "load1", "outage"],
                 [[r["from_s"], r["events_per_s"], r["execs_per_s"], r["shipped_per_s"],
                   r["cpu_us_per_event"], r["rss_mib"], int(r["spool_records_max"]),
                   f"{r['machine_busy_share']:.0%}", r["loadavg1"],
                   "down" if r["outage"] else ""] for r in rows])


# --------------------------------------------------------------------------- plot


def plot(samples: list[dict[str, Any]], rows: list[dict[str, Any]], window_s: float,
         outages: list[Outage], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s["t"] / 60 for s in samples]
    fig, (ax_rss, ax_spool, ax_cpu) = plt.subplots(3, 1, sharex=True, figsize=(11, 9))
    ax_rss.plot(minutes, [s["rss_mib"] for s in samples], label="RSS")
    ax_rss.plot(minutes, [s["anon_mib"] for s in samples], label="anonymous")
    ax_rss.set_ylabel("collector MiB")
    # Bytes of segment files: a segment is deleted only once it is full and all acknowledged,
    # so under load the bytes climb to a segment's size even when the records are few.
    ax_spool.plot(minutes, [s["spool_bytes"] / MIB for s in samples],
                  label="spool MiB (segment files)", color="tab:purple")
    ax_spool.set_ylabel("spool MiB")
    records = ax_spool.twinx()
    records.plot(minutes, [s["spool_records"] for s in samples], color="tab:orange",
                 linewidth=0.8, label="records")
    records.set_ylabel("spool records")
    share = [(b["cpu_s"] - a["cpu_s"]) / (b["t"] - a["t"]) * 100
             for a, b in zip(samples, samples[1:]) if b["t"] > a["t"]]
    ax_cpu.plot(minutes[1:len(share) + 1], share, color="tab:gray", linewidth=0.6,
                label="collector CPU % of a core")
    ax_cpu.set_ylabel("CPU %")
    per_event = ax_cpu.twinx()
    # Each window's value drawn across the whole window (the last one too).
    edges = [r["from_s"] / 60 for r in rows] + [(rows[-1]["from_s"] + window_s) / 60] \
        if rows else []
    values = [r["cpu_us_per_event"] for r in rows] + [rows[-1]["cpu_us_per_event"]] \
        if rows else []
    per_event.step(edges, values, where="post", color="tab:red",
                   label="us per event (window)")
    per_event.set_ylabel("CPU us per event")
    per_event.set_ylim(bottom=0)
    ax_cpu.set_xlabel("minutes since the load started")
    for ax in (ax_rss, ax_spool, ax_cpu):
        for outage in outages:
            end = outage.up_at if outage.up_at is not None else minutes[-1] * 60
            ax.axvspan(outage.down_at / 60, end / 60, color="tab:red", alpha=0.12)
        ax.grid(alpha=0.3)
    ax_rss.legend(loc="upper left")
    _legend_both(ax_spool, records)
    _legend_both(ax_cpu, per_event)
    ax_rss.set_title(title + "  (shaded: Elasticsearch down)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _legend_both(left: Any, right: Any) -> None:
    lines = left.get_lines() + right.get_lines()
    left.legend(lines, [line.get_label() for line in lines], loc="upper left")


def summary_lines(info: dict[str, Any]) -> list[str]:
    """What ran, in a few lines above the tables."""
    load, audit = info["load"], info["audit"]
    verified = info.get("verify") or {}
    lines = [
        f"load: {load['execs']:,} execs at {load['rate']:,.0f}/s (paced), "
        f"{audit['bash']['expected']:,} bash lines, {audit['namespace']['expected']:,} "
        f"namespace entries ({info['ns_failures']} failed); collector start-up "
        f"{info['startup_s']:.1f} s",
        f"stored: {audit['documents']:,} documents (read back in {audit['read_back_s']} s); "
        f"loss reports {audit['events_lost_reports']['count']}; replays answered 409: "
        f"{info['server_stats'].get('bulk.items.conflict', 0)}; spool empty "
        f"{info['final_drain_s']} s after the load",
    ]
    lines += missing_run_lines(audit["exec"], info.get("started_unix_ns"))
    if verified:
        tail = verified["output"][-1].strip() if verified.get("output") else ""
        lines.append(f"audit-collector verify: exit {verified['exit_code']} ({tail})")
    return lines


def missing_run_lines(execs: dict[str, Any], started_unix_ns: int | None) -> list[str]:
    """Where the missing exec markers were, in seconds since the load started (from the
    documents on either side of each run of missing numbers)."""
    runs = execs.get("largest_missing_runs") or []
    if not runs:
        return []

    def at(ns: int | None) -> str:
        if ns is None or started_unix_ns is None:
            return "?"
        return f"{(ns - started_unix_ns) / 1e9:.1f}"

    shown = "; ".join(f"{r['first']}-{r['last']} ({r['count']:,}) between t = {at(r['after_ns'])}"
                      f" and {at(r['before_ns'])} s" for r in runs[:3])
    return [f"exec markers missing in {execs['missing_runs']:,} runs; largest: {shown}"]
