"""bench.soak's audit of what the test server stored after the run.

Every document is read back once (point in time, ``_shard_doc`` order, only the fields the
audit needs) and counted:

* by ``_id``: each ``_id`` once, and each one ``<host.id>-...-<event.sequence>`` of its own
  document (a document re-sealed under a new sequence would show as a marker counted twice);
* by sequence: per host, every sequence between the first and the last once, gaps only
  where an ``events_lost`` report names the dropped range;
* by marker: every numbered exec (``/bin/true RUN-e-N``), every typed bash line
  (``: RUN-b-N``) and every namespace entry (``unshare``/``nsenter ... /bin/true RUN-n-N``:
  the tool's exec, its unshare/setns event and the exec of /bin/true) exactly once.
"""

from __future__ import annotations

import calendar
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.esserver import DATA_STREAM
from bench.loadgen import PROGRAM

PAGE_SIZE = 10_000
KEEP_ALIVE = "10m"
NS_ACTIONS = ("unshare", "setns")
NS_WINDOW_NS = 10 * 10**9  # how long after its tool's exec a namespace event may come
EXAMPLES = 10  # how many missing/duplicated numbers a result lists


def exec_marker(run: str) -> str:
    """The loadgen's marker; each exec carries it numbered: RUN-e-N."""
    return f"{run}-e"


def bash_line(run: str, number: int) -> str:
    return f": {run}-b-{number}"


def ns_marker(run: str, number: int) -> str:
    return f"{run}-n-{number}"


@dataclass
class Issued:
    """What the soak's load did: the numbers that must each be stored exactly once."""

    run: str
    execs: int = 0  # loadgen numbers 0 .. execs-1 (successful or not)
    bash_lines: int = 0
    ns_entries: dict[int, str] = field(default_factory=dict)  # number -> tool (argv[0])


def stored_documents(url: str, index: str = DATA_STREAM) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every stored document of the index as (_id, _source). Whole sources: the test server
    filters ``_source`` more slowly than it sends it whole (15 s against 6 s for 50,000)."""
    from elasticsearch import Elasticsearch

    client = Elasticsearch(url, request_timeout=600)
    client.indices.refresh(index=index)
    pit = client.open_point_in_time(index=index, keep_alive=KEEP_ALIVE).body["id"]
    try:
        after: list[Any] | None = None
        while True:
            body = client.search(pit={"id": pit, "keep_alive": KEEP_ALIVE}, sort=["_shard_doc"],
                                 size=PAGE_SIZE, search_after=after,
                                 track_total_hits=False).body
            pit = body.get("pit_id", pit)
            hits = body["hits"]["hits"]
            for hit in hits:
                yield hit["_id"], hit["_source"]
            if len(hits) < PAGE_SIZE:
                return
            after = hits[-1]["sort"]
    finally:
        client.close_point_in_time(id=pit)
        client.close()


def timestamp_ns(text: str) -> int:
    """RFC 3339 UTC with up to nanoseconds ("2024-01-02T03:04:05.123456789Z") -> ns."""
    whole, _, frac = text.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return seconds * 10**9 + int((frac + "000000000")[:9])


@dataclass
class _Host:
    sequences: list[int] = field(default_factory=list)
    reported: list[tuple[int, int]] = field(default_factory=list)  # dropped ranges


class Audit:
    """Fed every stored document once; `result()` says what was lost or doubled."""

    def __init__(self, issued: Issued) -> None:
        self.issued = issued
        self._exec_prefix = exec_marker(issued.run) + "-"
        self._bash_prefix = f": {issued.run}-b-"
        self._ns_prefix = f"{issued.run}-n-"
        self.documents = 0
        self._ids: set[str] = set()
        self.duplicate_ids = 0
        self.ids_not_matching = 0
        self._hosts: dict[str, _Host] = defaultdict(_Host)
        self.ringbuf_lost: Counter[str] = Counter()
        self.loss_reports = 0
        self.execs: Counter[int] = Counter()
        self.exec_times: dict[int, int] = {}  # marker number -> its document's @timestamp (ns)
        self.bash: Counter[int] = Counter()
        self._ns_tools: dict[int, list[tuple[int, int]]] = defaultdict(list)  # n -> (pid, ts)
        self._ns_true: dict[int, list[tuple[int, int]]] = defaultdict(list)
        self._ns_events: dict[int, list[int]] = defaultdict(list)  # pid -> timestamps

    def feed_all(self, docs: Iterable[tuple[str, dict[str, Any]]]) -> Audit:
        for doc_id, source in docs:
            self.feed(doc_id, source)
        return self

    def feed(self, doc_id: str, source: dict[str, Any]) -> None:
        self.documents += 1
        if doc_id in self._ids:
            self.duplicate_ids += 1
        self._ids.add(doc_id)
        event = source.get("event") or {}
        host = (source.get("host") or {}).get("id", "")
        seq = event.get("sequence")
        if not isinstance(seq, int) or not doc_id.startswith(f"{host}-") \
                or not doc_id.endswith(f"-{seq}"):
            self.ids_not_matching += 1
        if isinstance(seq, int):
            self._hosts[host].sequences.append(seq)
        action = event.get("action")
        if action == "exec":
            self._feed_exec(source)
        elif action == "bash_command":
            self._feed_bash(source)
        elif action in NS_ACTIONS:
            pid = (source.get("process") or {}).get("pid")
            if isinstance(pid, int):
                self._ns_events[pid].append(timestamp_ns(source["@timestamp"]))
        elif action == "events_lost":
            self._feed_loss(host, (source.get("audit_collector") or {}).get("lost") or {})

    def _feed_exec(self, source: dict[str, Any]) -> None:
        process = source.get("process") or {}
        args = process.get("args") or []
        if len(args) < 2:
            return
        if (source.get("event") or {}).get("outcome") != "success":
            return  # e.g. a PATH lookup's failed tries: no exec happened
        if args[0] == PROGRAM and args[1].startswith(self._exec_prefix):
            number = _number(args[1], self._exec_prefix)
            if number is not None:
                self.execs[number] += 1
                self.exec_times.setdefault(number, timestamp_ns(source["@timestamp"]))
            return
        mark = args[-1]
        if not mark.startswith(self._ns_prefix):
            return
        number = _number(mark, self._ns_prefix)
        if number is None:
            return
        entry = (process.get("pid", -1), timestamp_ns(source["@timestamp"]))
        if args[0] == PROGRAM:
            self._ns_true[number].append(entry)
        else:
            self._ns_tools[number].append(entry)

    def _feed_bash(self, source: dict[str, Any]) -> None:
        line = ((source.get("audit_collector") or {}).get("bash") or {}).get("line", "")
        if line.startswith(self._bash_prefix):
            number = _number(line, self._bash_prefix)
            if number is not None:
                self.bash[number] += 1

    def _feed_loss(self, host: str, lost: dict[str, Any]) -> None:
        self.loss_reports += 1
        if lost.get("source") == "ringbuf":
            for kind in ("exec", "namespace", "bash"):
                self.ringbuf_lost[kind] += int(lost.get(kind) or 0)
        first, last = lost.get("first_sequence"), lost.get("last_sequence")
        if isinstance(first, int) and isinstance(last, int):
            self._hosts[host].reported.append((first, last))

    # ------------------------------------------------------------------ result

    def result(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "unique_ids": len(self._ids),
            "duplicate_ids": self.duplicate_ids,
            "ids_not_matching_sequence": self.ids_not_matching,
            "hosts": {host: _sequence_check(h) for host, h in self._hosts.items()},
            "events_lost_reports": {"count": self.loss_reports,
                                    "ringbuf": dict(self.ringbuf_lost)},
            "exec": {**_numbered_check(self.execs, self.issued.execs),
                     **_missing_runs(self.execs, self.issued.execs, self.exec_times)},
            "bash": _numbered_check(self.bash, self.issued.bash_lines),
            "namespace": self._namespace_check(),
        }

    def _namespace_check(self) -> dict[str, Any]:
        parts = {"tool_exec": Counter(), "ns_event": Counter(), "true_exec": Counter()}
        by_tool: Counter[str] = Counter()
        for number, tool in self.issued.ns_entries.items():
            by_tool[tool] += 1
            tools, trues = self._ns_tools.get(number, []), self._ns_true.get(number, [])
            parts["tool_exec"][number] = len(tools)
            parts["true_exec"][number] = len(trues)
            parts["ns_event"][number] = sum(self._ns_events_of(pid, ts, trues)
                                            for pid, ts in tools)
        entries = self.issued.ns_entries
        return {
            "expected": len(entries),
            "by_tool": dict(by_tool),
            "once": sum(1 for n in entries if all(p[n] == 1 for p in parts.values())),
            "missing": sum(1 for n in entries if any(p[n] == 0 for p in parts.values())),
            "duplicated": sum(1 for n in entries if any(p[n] > 1 for p in parts.values())),
            "missing_parts": {name: sum(1 for n in entries if c[n] == 0)
                              for name, c in parts.items()},
            "duplicated_parts": {name: sum(1 for n in entries if c[n] > 1)
                                 for name, c in parts.items()},
            "first_incomplete": sorted(n for n in self.issued.ns_entries
                                       if any(p[n] != 1 for p in parts.values()))[:EXAMPLES],
        }

    def _ns_events_of(self, pid: int, started: int, trues: list[tuple[int, int]]) -> int:
        """Namespace events of the tool's process after its exec and before it exec'd
        /bin/true (pids are reused: the window is what ties them together)."""
        ends = [ts for p, ts in trues if p == pid and ts >= started]
        end = min(ends) if ends else started + NS_WINDOW_NS
        return sum(1 for ts in self._ns_events.get(pid, []) if started <= ts <= end)


def _number(text: str, prefix: str) -> int | None:
    tail = text[len(prefix):]
    return int(tail) if tail.isdigit() else None


def _numbered_check(found: Counter[int], expected: int) -> dict[str, Any]:
    missing = [n for n in range(expected) if found[n] == 0]
    duplicated = sorted(n for n, c in found.items() if c > 1)
    unexpected = sorted(n for n in found if n >= expected)
    return {
        "expected": expected,
        "once": sum(1 for n in range(expected) if found[n] == 1),
        "missing": len(missing),
        "duplicated": len(duplicated),
        "unexpected": len(unexpected),
        "first_missing": missing[:EXAMPLES],
        "first_duplicated": duplicated[:EXAMPLES],
    }


def _missing_runs(found: Counter[int], expected: int, times: dict[int, int]) -> dict[str, Any]:
    """Runs of consecutive missing numbers, the largest first, each with the @timestamps of
    the nearest numbers found before and after it: when the lost events happened (the
    numbers alone do not say, since a paced load falls behind its schedule unevenly)."""
    runs: list[tuple[int, int]] = []
    for n in range(expected):
        if found[n]:
            continue
        if runs and runs[-1][1] == n - 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    largest = sorted(runs, key=lambda r: (r[0] - r[1], r[0]))[:EXAMPLES]
    return {"missing_runs": len(runs),
            "largest_missing_runs": [
                {"first": lo, "last": hi, "count": hi - lo + 1,
                 "after_ns": times.get(lo - 1), "before_ns": times.get(hi + 1)}
                for lo, hi in largest]}


def _sequence_check(host: _Host) -> dict[str, Any]:
    seqs = sorted(host.sequences)
    duplicates = sum(1 for a, b in zip(seqs, seqs[1:]) if a == b)
    gaps = [(a + 1, b - 1) for a, b in zip(seqs, seqs[1:]) if b > a + 1]
    unexplained = [(lo, hi) for lo, hi in gaps
                   if not _covered(lo, hi, host.reported)]
    return {
        "documents": len(seqs),
        "first_sequence": seqs[0] if seqs else None,
        "last_sequence": seqs[-1] if seqs else None,
        "duplicate_sequences": duplicates,
        "gaps": len(gaps),
        "missing_sequences": sum(hi - lo + 1 for lo, hi in gaps),
        "unexplained_gaps": len(unexplained),
        "unexplained_missing_sequences": sum(hi - lo + 1 for lo, hi in unexplained),
        "first_unexplained_gaps": unexplained[:EXAMPLES],
        "reported_ranges": len(host.reported),
    }


def _covered(lo: int, hi: int, reported: list[tuple[int, int]]) -> bool:
    """Whether the reported dropped ranges cover every sequence lo..hi."""
    at = lo
    for first, last in sorted(reported):
        if first <= at <= last:
            at = last + 1
        if at > hi:
            return True
    return at > hi
