"""The process table: identity, relatives, sessions and bounds, on a fixed /proc.

Records are the bytes the BPF programs write (tests/ecs/recordbytes.py); /proc is a fixed
world of ProcFacts. The real thing (real BPF, real /proc, real sessions) is in
tests/capture/test_capture.py and test_session_view.py.
"""

from __future__ import annotations

import base64
from typing import Any

from collector.capture.records import Who, decode
from collector.ecs.processes import Clock, EntityIds, ProcessTable, ProcFacts, ProcSource
from tests.ecs.golden_cases import who
from tests.ecs.recordbytes import fork_record

TICK = 10_000_000
IDS = EntityIds(4026531836, "0d9c8b7a-65f4-43e2-a1b0-c9d8e7f60514")
PTS3 = (136 << 8) | 3


class FixedProc(ProcSource):
    def __init__(self, facts: list[ProcFacts]) -> None:
        super().__init__("/nonexistent")
        self.table = {f.pid: f for f in facts}
        self.reads = 0

    def pids(self) -> list[int]:
        return list(self.table)

    def facts(self, pid: int) -> ProcFacts | None:
        self.reads += 1
        return self.table.get(pid)

    def cwd(self, pid: int) -> str | None:
        found = self.table.get(pid)
        return found.cwd if found else None


def fact(pid: int, ticks: int, ppid: int, name: str, *, sid: int | None = None,
         pgid: int | None = None, tty_nr: int = 0) -> ProcFacts:
    return ProcFacts(pid=pid, ticks=ticks, ppid=ppid, pgid=pgid or pid, sid=sid or pid,
                     tty_nr=tty_nr, name=name, args=[name.encode()], exe=f"/usr/bin/{name}",
                     cwd="/")


def table(facts: list[ProcFacts], **kw: Any) -> ProcessTable:
    return ProcessTable(IDS, Clock(boot_wall_ns=1_700_000_000 * 10**9), FixedProc(facts),
                        lambda uid: {"id": str(uid)}, str, **kw)


def record(pid: int, ticks: int, ppid: int, parent_ticks: int, *, sid: int, pgid: int,
           comm: bytes = b"sh", tty: bool = True, sid_ticks: int = 0,
           pgid_ticks: int = 0) -> Who:
    tty_fields = ({"tty_major": 136, "tty_minor": 3, "tty_index": 3, "tty_name": b"pts3"}
                  if tty else {"tty_index": -1, "tty_major": 0, "tty_minor": 0,
                               "tty_name": b""})
    fields = who(pid=pid, tid=pid, vpid=pid, ppid=ppid, comm=comm, start_ns=ticks * TICK + 3,
                 parent_start_ns=parent_ticks * TICK + 1, sid=sid, pgid=pgid,
                 sid_start_ns=sid_ticks * TICK, pgid_start_ns=pgid_ticks * TICK, **tty_fields)
    return decode(fork_record(fields)).who


def test_entity_id_is_the_documented_recipe_in_clock_ticks() -> None:
    raw = base64.b64decode(IDS.of(4242, 987_600)).decode()
    assert raw == "4026531836__0d9c8b7a-65f4-43e2-a1b0-c9d8e7f60514__4242__987600"
    clock = Clock(0, 100)
    # /proc/PID/stat's starttime is start_boottime in whole ticks: the same number.
    for ns in (987_600 * TICK, 987_600 * TICK + TICK - 1):
        assert clock.ticks(ns) == 987_600


def test_a_process_seeded_from_proc_is_the_one_its_records_name() -> None:
    t = table([fact(1, 1, 0, "systemd"), fact(300, 50, 1, "sshd"),
               fact(400, 900, 300, "bash", tty_nr=PTS3)])
    assert t.seed() == 3
    proc = t.process(record(400, 900, 300, 50, sid=400, pgid=400))
    assert (proc.executable, proc.args) == ("/usr/bin/bash", ["bash"])
    assert t.entity_id(proc) == IDS.of(400, 900)
    assert proc.entry is not None and proc.entry.type == "sshd" and proc.entry.proc is proc


def test_pid_reuse_is_a_new_process() -> None:
    t = table([fact(1, 1, 0, "systemd")])
    first = t.on_fork(record(500, 100, 1, 1, sid=500, pgid=500, tty=False))
    t.on_exit(record(500, 100, 1, 1, sid=500, pgid=500, tty=False))
    second = t.on_fork(record(500, 700, 1, 1, sid=500, pgid=500, tty=False))
    assert first is not second and t.entity_id(first) != t.entity_id(second)


def test_entry_types() -> None:
    world = [fact(1, 1, 0, "systemd"), fact(300, 50, 1, "sshd"),
             fact(310, 60, 1, "python3", sid=10), fact(320, 70, 1, "login", sid=10)]
    t = table(world)
    t.seed()
    cases = {
        "sshd": record(401, 900, 300, 50, sid=401, pgid=401),  # a login shell under sshd
        "terminal": record(402, 901, 310, 60, sid=402, pgid=402),  # setsid + a pty
        "init": record(403, 902, 1, 1, sid=403, pgid=403, tty=False),  # a daemon
    }
    for kind, rec in cases.items():
        proc, _ = t.on_exec(rec, "/bin/x", ["x"])
        assert proc.entry is not None and proc.entry.type == kind, kind
        assert proc.entry.doc["entry_meta"] == {"type": kind}
        assert proc.entry.doc_self["same_as_process"] is True
    console = record(404, 903, 320, 70, sid=404, pgid=404)
    console.tty = ("tty1", 4, 1)
    proc, _ = t.on_exec(console, "/bin/bash", ["-bash"])
    assert proc.entry is not None and proc.entry.type == "console"


def test_children_inherit_the_entry_and_a_lone_session_leader_is_its_own() -> None:
    t = table([fact(1, 1, 0, "systemd"), fact(300, 50, 1, "sshd"),
               fact(400, 900, 300, "bash", tty_nr=PTS3)])
    t.seed()
    shell = t.process(record(400, 900, 300, 50, sid=400, pgid=400))
    child = t.on_fork(record(410, 950, 400, 900, sid=400, pgid=400))
    assert child.entry is shell.entry
    # setsid() in the child (a daemon started from the shell), found at its next record:
    # a session of its own, still entered through the shell's ssh login.
    moved = t.process(record(410, 950, 400, 900, sid=410, pgid=410, tty=False))
    assert moved is child and child.sid == 410 and child.entry is shell.entry
    # A session leader nothing is known about (a container's init, its runtime gone): its
    # own entry leader, of no type ECS lists.
    lone = t.on_fork(record(800, 990, 790, 980, sid=800, pgid=800, tty=False))
    assert lone.entry is not None and lone.entry.proc is lone and lone.entry.type is None
    assert "entry_meta" not in lone.entry.doc


def test_relatives_name_an_ended_group_leader_and_the_parent() -> None:
    t = table([fact(1, 1, 0, "systemd"), fact(300, 50, 1, "sshd"),
               fact(400, 900, 300, "bash", tty_nr=PTS3)])
    t.seed()
    leader_rec = record(420, 960, 400, 900, sid=400, pgid=420, sid_ticks=900,
                        pgid_ticks=960)
    t.on_exec(leader_rec, "/usr/bin/yes", ["yes"])
    t.on_exit(leader_rec)
    member_rec = record(421, 961, 400, 900, sid=400, pgid=420, sid_ticks=900)  # gone: 0
    member, _ = t.on_exec(member_rec, "/usr/bin/head", ["head", "-1"])
    rel = t.relatives(member, member_rec)
    assert rel["group_leader"]["entity_id"] == IDS.of(420, 960)
    assert rel["group_leader"]["executable"] == "/usr/bin/yes"
    assert rel["group_leader"]["same_as_process"] is False
    assert rel["parent"]["entity_id"] == IDS.of(400, 900) and "same_as_process" not in rel[
        "parent"]
    assert rel["session_leader"]["executable"] == "/usr/bin/bash"
    assert "args" not in rel["session_leader"]  # leaders by identity: argv on their own docs
    assert rel["entry_leader"]["entity_id"] == IDS.of(400, 900)


def test_exec_reports_the_previous_image_only_when_it_was_known() -> None:
    t = table([fact(1, 1, 0, "systemd")])
    rec = record(600, 100, 1, 1, sid=600, pgid=600, tty=False)
    _, previous = t.on_exec(rec, "/bin/a", ["a"])
    assert previous is None  # never seen: /proc would show the new image already
    _, previous = t.on_exec(rec, "/bin/b", ["b", "1"])
    assert previous == {"executable": "/bin/a", "args": ["a"], "args_count": 1}


def test_the_table_is_bounded_and_counts_what_it_drops() -> None:
    dropped: list[int] = []
    t = table([fact(1, 1, 0, "systemd")], max_entries=3, on_evict=lambda: dropped.append(1))
    t.seed()

    def rec(pid: int) -> Who:  # children of a parent gone from /proc
        return record(pid, pid, 9999, 1, sid=pid, pgid=pid, tty=False)

    for pid in (700, 701, 702):
        t.on_fork(rec(pid))
    assert len(t) == 3 and len(dropped) == 1  # systemd
    # An exec'd process is kept longest: 701 exec'd, then two more arrive.
    t.on_exec(rec(701), "/bin/x", ["x"])
    for pid in (703, 704):
        t.on_fork(rec(pid))
    assert len(t) == 3 and len(dropped) == 3  # 700, then 702
    assert {p.pid for p in t._live.values()} == {701, 703, 704}
    # An evicted process is learned again from its next record (and /proc).
    assert t.process(record(1, 1, 0, 0, sid=1, pgid=1, tty=False)).executable == (
        "/usr/bin/systemd")
