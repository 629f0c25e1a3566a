"""bench.exec_storm's summary: medians per contender and load, the table, the targets."""

from __future__ import annotations

import os
from typing import Any

from bench.loadgen import Load
from bench.report import Target, median, rounded, table

FULL_RATE_SUFFIX = "/2w"
ES_EXTRA_US_MAX = 20.0  # issue 14: CPU per event shipping to ES <= the file output's + 20 us


def summarize(cases: list[dict[str, Any]], sessions: dict[str, list[dict[str, Any]]],
              tracer_order: list[str], loads: list[Load]) -> list[dict[str, Any]]:
    rows = []
    for name in tracer_order:
        for load in loads:
            mine = [c for c in cases if c["tracer"] == name and c["load"] == load.name]
            if mine:
                rows.append(_summary_row(name, load, mine, cases, sessions.get(name, [])))
    return rows


def _summary_row(name: str, load: Load, mine: list[dict[str, Any]], cases: list[dict[str, Any]],
                 sessions: list[dict[str, Any]]) -> dict[str, Any]:
    base_cases = [c for c in cases if c["tracer"] == "baseline" and c["load"] == load.name]
    rate = median([c["rate"] for c in mine])
    rate_without_side = median([_rate_without_side(c) for c in mine])
    base_rate = median([c["rate"] for c in base_cases])
    load_cpu = median([c["load_cpu_us_per_exec"] for c in mine
                       if c.get("load_cpu_us_per_exec") is not None])
    base_load_cpu = median([c["load_cpu_us_per_exec"] for c in base_cases
                            if c.get("load_cpu_us_per_exec") is not None])
    recorded = [c["recorded"] for c in mine if c["recorded"] is not None]
    peaks = [s["memory"]["peak_rss_mib"] for s in sessions if "memory" in s]
    anon = [s["memory"]["anon_mib"] for s in sessions if "memory" in s]
    rss = [s["memory"]["rss_mib"] for s in sessions if "memory" in s]
    bpf = [c["bpf_ns_per_exec"] for c in mine if c.get("bpf_ns_per_exec") is not None]
    return {
        "tracer": name,
        "load": load.name,
        "rounds": len(mine),
        "rate_median": rounded(rate, 1),
        "ratio_to_baseline": rounded(rate / base_rate, 3) if rate and base_rate else None,
        "ratio_side_cpu_excluded": rounded(rate_without_side / base_rate, 3)
        if rate_without_side and base_rate and any(c["side_cpu_s"] for c in mine) else None,
        "load_cpu_us_per_exec_median": rounded(load_cpu, 1),
        "exec_cost_ratio": rounded(load_cpu / base_load_cpu, 3)
        if load_cpu and base_load_cpu else None,
        "other_cpu_share_median": rounded(median([c["other_cpu_share"] for c in mine
                                                  if c.get("other_cpu_share") is not None]), 3),
        "execs": sum(c["execs"] for c in mine),
        "recorded": sum(recorded) if recorded else None,
        "missing": sum(c["missing"] for c in mine) if recorded else None,
        "cpu_s_per_1000_median": rounded(median([c["cpu_s_per_1000"] for c in mine
                                                 if c["cpu_s_per_1000"] is not None]), 4),
        "capture_thread_share_median": rounded(median(
            [c["capture_thread_share"] for c in mine if "capture_thread_share" in c]), 3),
        "bpf_ns_per_exec_median": rounded(median(bpf), 0),
        "peak_rss_mib_max": max(peaks) if peaks else None,
        "anon_mib_median": rounded(median(anon), 1),
        "rss_mib_median": rounded(median(rss), 1),
        "side_cpu_s": _sum_side(mine),
    }


def _rate_without_side(case: dict[str, Any]) -> float | None:
    """The rate had the side processes' CPU (the ES test server) not been taken from the
    machine: execs over the elapsed time less their CPU time spread over every CPU. An
    estimate for a load that keeps every CPU busy; what pinning the server to a core of
    its own would show on a machine with one to spare."""
    side = sum(case["side_cpu_s"].values())
    usable = case["elapsed_s"] - side / (os.cpu_count() or 1)
    return case["execs"] / usable if case["execs"] and usable > 0 else None


def _sum_side(cases: list[dict[str, Any]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for case in cases:
        for key, value in case["side_cpu_s"].items():
            total[key] = round(total.get(key, 0.0) + value, 3)
    return total


def summary_table(rows: list[dict[str, Any]], unavailable: dict[str, str]) -> str:
    headers = ["tracer", "load", "execs/s", "ratio", "execs", "recorded", "missing",
               "cpu-s/1000", "capture thread", "bpf ns/exec", "load us/exec", "exec cost",
               "peak RSS MiB", "anon MiB", "other cpu"]
    body = [[r["tracer"], r["load"], r["rate_median"], r["ratio_to_baseline"], r["execs"],
             r["recorded"], r["missing"], r["cpu_s_per_1000_median"],
             r["capture_thread_share_median"],
             r["bpf_ns_per_exec_median"], r["load_cpu_us_per_exec_median"],
             r["exec_cost_ratio"], r["peak_rss_mib_max"], r["anon_mib_median"],
             r["other_cpu_share_median"]]
            for r in rows]
    body += [[name, "unavailable: " + why] + [None] * (len(headers) - 2)
             for name, why in unavailable.items()]
    return table(headers, body)


# --------------------------------------------------------------------------- targets

STARTUP_TARGET_S = 2.0  # issue 14: launch to probes attached


def evaluate_targets(rows: list[dict[str, Any]], startup: list[float]) -> list[Target]:
    def pick(tracer: str) -> list[dict[str, Any]]:
        return [r for r in rows if r["tracer"] == tracer]

    coll, audit = pick("collector_file"), pick("auditd")
    targets = [_loss_target(coll), _ratio_target(coll, audit), _cpu_target(coll, audit),
               _rss_target(coll), *es_targets(coll, pick("collector_es"), audit)]
    start = median(startup)
    targets.append(Target("collector start-up (to /health probes_attached)",
                          f"<= {STARTUP_TARGET_S:g} s",
                          f"{start:.2f} s (median of {len(startup)})" if start else "-",
                          None if start is None else start <= STARTUP_TARGET_S))
    return targets


def _loss_target(coll: list[dict[str, Any]]) -> Target:
    full = [r for r in coll if r["load"].endswith(FULL_RATE_SUFFIX) and r["missing"] is not None]
    if not full:
        return Target("0 lost at full rate, 2 workers", "0", "-", None)
    lost = sum(r["missing"] for r in full)
    execs = sum(r["execs"] for r in full)
    return Target("0 lost at full rate, 2 workers", "0", f"{lost} of {execs:,}", lost == 0)


def _ratio_target(coll: list[dict[str, Any]], audit: list[dict[str, Any]]) -> Target:
    pairs = [(r["load"], r["ratio_to_baseline"]) for r in coll
             if r["ratio_to_baseline"] is not None]
    if not pairs:
        return Target("throughput ratio collector/baseline", ">= 0.95 and > auditd", "-", None)
    audit_ratio = {r["load"]: r["ratio_to_baseline"] for r in audit}
    worst_load, worst = min(pairs, key=lambda p: p[1])
    beats = all(audit_ratio.get(load) is None or ratio > audit_ratio[load]
                for load, ratio in pairs)
    text = ", ".join(f"{load} {ratio:.3f} (auditd {audit_ratio.get(load) or '-'})"
                     for load, ratio in pairs)
    return Target("throughput ratio collector/baseline", ">= 0.95 and > auditd",
                  f"worst {worst:.3f} ({worst_load}); {text}", worst >= 0.95 and beats)


def _cpu_target(coll: list[dict[str, Any]], audit: list[dict[str, Any]]) -> Target:
    audit_cpu = {r["load"]: r["cpu_s_per_1000_median"] for r in audit}
    pairs = [(r["load"], r["cpu_s_per_1000_median"], audit_cpu.get(r["load"])) for r in coll
             if r["cpu_s_per_1000_median"] is not None]
    if not pairs or all(a is None for _, _, a in pairs):
        return Target("collector CPU per 1000 execs", "< auditd's", "-", None)
    text = ", ".join(f"{load} {c:.3f} vs {a if a is not None else '-'}" for load, c, a in pairs)
    met = all(a is None or c < a for _, c, a in pairs)
    return Target("collector CPU per 1000 execs", "< auditd's", text + " cpu-s", met)


def es_targets(file: list[dict[str, Any]], es: list[dict[str, Any]],
               audit: list[dict[str, Any]]) -> list[Target]:
    """Issue 14's targets for the Elasticsearch output, every load."""
    if not es:
        return []
    by_load = {r["load"]: r for r in file}
    audit_cpu = {r["load"]: r["cpu_s_per_1000_median"] for r in audit}
    extra = [(r["load"], 1000 * (r["cpu_s_per_1000_median"]
                                 - by_load[r["load"]]["cpu_s_per_1000_median"]))
             for r in es if r["cpu_s_per_1000_median"] is not None
             and by_load.get(r["load"], {}).get("cpu_s_per_1000_median") is not None]
    halves = [(r["load"], r["cpu_s_per_1000_median"], audit_cpu[r["load"]]) for r in es
              if r["cpu_s_per_1000_median"] is not None and audit_cpu.get(r["load"])]
    cost = [(r["load"], r["exec_cost_ratio"]) for r in es if r["exec_cost_ratio"]]
    ratios = [(r["load"], r["ratio_to_baseline"], r["ratio_side_cpu_excluded"]) for r in es
              if r["ratio_to_baseline"] is not None]
    return [
        _each("ES CPU per event - file's", f"<= {ES_EXTRA_US_MAX:g} us",
              [(load, f"{us:+.1f}", us <= ES_EXTRA_US_MAX) for load, us in extra], " us"),
        _each("ES CPU per event vs auditd's", "<= half",
              [(load, f"{c / a:.2f}x", c <= a / 2) for load, c, a in halves], ""),
        _each("ES exec cost (load's CPU per exec / baseline's)", "<= 1.03",
              [(load, f"{c:.3f}", c <= 1.03) for load, c in cost], ""),
        _each("ES throughput ratio, server CPU excluded (as measured)", ">= 0.95",
              [(load, f"{x:.3f} ({r:.3f})" if x is not None else f"- ({r:.3f})",
                x is not None and x >= 0.95) for load, r, x in ratios], ""),
    ]


def _each(name: str, goal: str, per_load: list[tuple[str, str, bool]], unit: str) -> Target:
    """A target that must hold in every load."""
    if not per_load:
        return Target(name, goal, "-", None)
    text = ", ".join(f"{load} {value}" for load, value, _ in per_load) + unit
    return Target(name, goal, text, all(ok for _, _, ok in per_load))


def _rss_target(coll: list[dict[str, Any]]) -> Target:
    peaks = [r["peak_rss_mib_max"] for r in coll if r["peak_rss_mib_max"] is not None]
    anon = [r["anon_mib_median"] for r in coll if r["anon_mib_median"] is not None]
    if not peaks:
        return Target("collector peak RSS", "<= 200 MiB", "-", None)
    return Target("collector peak RSS", "<= 200 MiB",
                  f"{max(peaks):.0f} MiB peak (VmHWM), {median(anon) or 0:.0f} MiB anon",
                  max(peaks) <= 200)



def profile_table(result: dict[str, Any], label: str = "collector") -> str:
    if "error" in result:
        return f"py-spy ({label}): {result['error']}"
    rows = [[f["function"], f["share"]] for f in result["self"][:12]]
    incl = [[f["function"], f["share"]] for f in result["inclusive"][:12]]
    threads = [[f["function"], f["share"]] for f in result.get("threads", [])]
    headers = ["function", "share"]
    text = (f"\n{label} CPU by function (py-spy, self time, {result.get('load')}):\n"
            + table(headers, rows) + "\n\ninclusive:\n" + table(headers, incl))
    if threads:
        text += "\n\nby thread:\n" + table(["thread", "share"], threads)
    return text
