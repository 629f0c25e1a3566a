"""The process table: who each process is, who its relatives are and which session it is in.

Kibana's Session View draws a session from `process.entry_leader.entity_id` (the session's
documents), `process.entity_id` and `process.parent.entity_id` (the tree), and
`process.group_leader.pid`/`process.session_leader.pid` (it hides processes whose group
leader is their session leader as "verbose"). The kernel record names a process, its
parent and its leaders by pid and start time; this table adds what a record does not carry
(the executable and argv of relatives, the entry leader) and keeps it across events.

* Identity. `process.entity_id` is Auditbeat's recipe (add_session_metadata): base64 of
  "<pid namespace inode>__<boot id>__<pid>__<start>", with the start in clock ticks since
  boot instead of Unix seconds: /proc's starttime and the kernel's start_boottime agree
  exactly in ticks (so ids seeded from /proc equal ids from BPF records), a pid reused
  within the same second gets another id, and no wall clock enters it (btime shifts).
  The id is stable across pid reuse and collector restarts within a boot.
* Entry leaders (`process.entry_leader`: where a session came in). A session leader
  (pid == sid) starts one when it has a controlling terminal (`sshd` under sshd, `ssm`
  under ssm-session-worker, `console` on a virtual console, else `terminal`), or is a
  child of init (`init`), or a child of sshd without a terminal (`sshd`). Any other
  process inherits its parent's (else its session leader's, else its group leader's); a
  session leader that inherits nothing is its own entry leader of no known type. The types
  are the values ECS lists for process.entry_leader.entry_meta.type.
* Bounds. At most `max_entries` live processes are kept; at the bound the entry not
  exec'd for the longest time is dropped (counted: a process seen again is learned again
  from its next record and /proc). Ended processes stay named for their relatives in a
  small FIFO (`DEPARTED_MAX`): a pipeline's group leader often ends before its members.
* Seeding. At start-up every process in /proc is entered (oldest first, so parents and
  leaders come before their children): processes that were already running are attributed
  to their sessions too.
"""

from __future__ import annotations

import base64
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from collector.capture.records import Who

Doc = dict[str, Any]

ENTRY_TYPES = ("init", "sshd", "ssm", "kubelet", "teleport", "terminal", "console")
PTS_MAJORS = range(136, 144)
TTY_MAJOR = 4  # minors 0-63: virtual consoles, 64-255: serial lines
DEPARTED_MAX = 4096


def boot_wall_ns() -> int:
    """Wall-clock ns of CLOCK_BOOTTIME 0 (process start times count from there)."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


@dataclass(frozen=True)
class Clock:
    """How start times are turned into ticks (entity ids) and wall-clock times."""

    boot_wall_ns: int
    ticks_per_s: int = 100  # sysconf(_SC_CLK_TCK): /proc's unit

    @classmethod
    def of_host(cls) -> Clock:
        return cls(boot_wall_ns(), os.sysconf("SC_CLK_TCK"))

    def ticks(self, start_ns: int) -> int:
        return start_ns * self.ticks_per_s // 1_000_000_000

    def wall_ns(self, ticks: int) -> int:
        return self.boot_wall_ns + ticks * (1_000_000_000 // self.ticks_per_s)


@dataclass(frozen=True)
class EntityIds:
    pid_ns: int  # the pid namespace the pids are numbers of (the host's)
    boot_id: str  # as the kernel writes it

    def of(self, pid: int, ticks: int) -> str:
        raw = f"{self.pid_ns}__{self.boot_id}__{pid}__{ticks}"
        return base64.b64encode(raw.encode()).decode()


@dataclass
class ProcFacts:
    """What /proc says about a live process."""

    pid: int
    ticks: int  # starttime, clock ticks since boot
    ppid: int
    pgid: int
    sid: int
    tty_nr: int
    name: str
    uid: int = 0
    euid: int = 0
    gid: int = 0
    vpid: int = 0
    args: list[bytes] | None = None
    exe: str | None = None
    cwd: str | None = None

    @property
    def tty(self) -> tuple[int, int] | None:
        if not self.tty_nr:
            return None
        major = (self.tty_nr >> 8) & 0xFFF
        minor = (self.tty_nr & 0xFF) | ((self.tty_nr >> 12) & 0xFFF00)
        return major, minor


class ProcSource:
    """/proc, read: the only place the table looks at live processes."""

    def __init__(self, root: str = "/proc") -> None:
        self.root = root

    def pids(self) -> list[int]:
        return [int(e) for e in os.listdir(self.root) if e.isdigit()]

    def facts(self, pid: int) -> ProcFacts | None:
        base = f"{self.root}/{pid}"
        try:
            with open(f"{base}/stat", "rb") as fh:
                stat = fh.read()
            with open(f"{base}/status", "rb") as fh:
                status = fh.read()
        except OSError:
            return None
        head, _, rest = stat.rpartition(b")")
        fields = rest.split()
        name = head.split(b"(", 1)[1].decode("utf-8", "backslashreplace")
        facts = ProcFacts(pid=pid, ticks=int(fields[19]), ppid=int(fields[1]),
                          pgid=int(fields[2]), sid=int(fields[3]), tty_nr=int(fields[4]),
                          name=name)
        for line in status.splitlines():
            key, _, value = line.partition(b":")
            if key == b"Uid":
                facts.uid, facts.euid = (int(v) for v in value.split()[:2])
            elif key == b"Gid":
                facts.gid = int(value.split()[0])
            elif key == b"NSpid":
                facts.vpid = int(value.split()[-1])
        facts.args = self._cmdline(base)
        facts.exe = self._link(f"{base}/exe")
        facts.cwd = self._link(f"{base}/cwd")
        return facts

    def cwd(self, pid: int) -> str | None:
        return self._link(f"{self.root}/{pid}/cwd")

    @staticmethod
    def _cmdline(base: str) -> list[bytes] | None:
        try:
            with open(f"{base}/cmdline", "rb") as fh:
                raw = fh.read()
        except OSError:
            return None
        return raw[:-1].split(b"\0") if raw else []

    @staticmethod
    def _link(path: str) -> str | None:
        try:
            return os.readlink(path)
        except OSError:
            return None


class Proc:
    """One process as the table knows it (its current image)."""

    __slots__ = ("_as_leader", "_as_parent", "_as_self", "_entity_id", "args", "cwd", "entry",
                 "euid", "executable", "name", "pgid", "pid", "ppid", "sid", "ticks", "tty",
                 "vpid")

    def __init__(self, pid: int, ticks: int, ppid: int, pgid: int, sid: int, vpid: int,
                 name: str, euid: int, tty: tuple[int, int] | None) -> None:
        self.pid = pid
        self.ticks = ticks
        self.ppid = ppid
        self.pgid = pgid
        self.sid = sid
        self.vpid = vpid
        self.name = name
        self.euid = euid
        self.tty = tty
        self.executable: str | None = None
        self.args: list[str] | None = None
        self.cwd: str | None = None
        self.entry: EntryLeader | None = None
        # What documents show of it as a relative, built once per image (shared, read-only;
        # only processes that are relatives of others get them).
        self._entity_id: str | None = None
        self._as_parent: Doc | None = None
        self._as_leader: Doc | None = None
        self._as_self: Doc | None = None

    def changed_image(self) -> None:
        self._as_parent = self._as_leader = self._as_self = None

    def command_line(self) -> str | None:
        return shlex.join(self.args) if self.args is not None else None


class EntryLeader:
    """A session's entry: its leader process (kept while members refer to it) and type."""

    __slots__ = ("doc", "doc_self", "proc", "type")

    def __init__(self, proc: Proc, entry_type: str | None, doc: Doc) -> None:
        self.proc = proc
        self.type = entry_type
        self.doc = {**doc, "same_as_process": False}
        self.doc_self = {**doc, "same_as_process": True}


def _texts(args: list[bytes]) -> list[str]:
    from collector.ecs.documents import texts  # documents builds on this module

    return texts(args)[0]


class ProcessTable:
    """Processes by pid, with what documents say about them and their relatives."""

    def __init__(self, ids: EntityIds, clock: Clock, source: ProcSource,
                 user: Callable[[int], Doc], iso: Callable[[int], str],
                 max_entries: int = 100_000,
                 on_evict: Callable[[], None] = lambda: None) -> None:
        """`user`: uid -> ECS {id, name}; `iso`: wall-clock ns -> the documents' date text;
        `on_evict`: called for each live process dropped at the bound."""
        self.ids = ids
        self.clock = clock
        self.source = source
        self._user = user
        self._iso = iso
        self.max_entries = max_entries
        self._on_evict = on_evict
        self._live: dict[int, Proc] = {}
        self._departed: dict[int, Proc] = {}
        # (pid, ticks) not found in /proc: gone for good (a start time never comes back).
        self._absent: set[tuple[int, int]] = set()

    def __len__(self) -> int:
        return len(self._live)

    # -- start-up

    def seed(self) -> int:
        """Enter every live process (oldest first: parents and leaders before children)."""
        found = [f for f in map(self.source.facts, self.source.pids()) if f is not None]
        found.sort(key=lambda f: (f.ticks, f.pid))
        for facts in found:
            self._remember(self._from_facts(facts))
        return len(found)

    # -- events

    def on_fork(self, who: Who) -> Proc:
        """A new process: the child of `who.ppid`, with its parent's image and session."""
        proc = self._new(who)
        parent = self._known(who.ppid, who.parent_start_ns)
        if parent is not None:
            proc.executable, proc.args, proc.cwd = parent.executable, parent.args, parent.cwd
        self._settle(proc, parent)
        self._remember(proc)
        return proc

    def on_exec(self, who: Who, executable: str, args: list[str]) -> tuple[Proc, Doc | None]:
        """A new image; returns the process and the image before (`process.previous`),
        when it was known (/proc shows the new image by now: no use asking it)."""
        proc = self._live.get(who.pid)
        if proc is not None and proc.ticks == self.clock.ticks(who.start_ns):
            self._refresh(proc, who)
        else:
            proc = self._new(who)
        previous: Doc | None = None
        if proc.executable is not None:
            previous = {"executable": proc.executable}
            if proc.args is not None:
                previous["args"] = proc.args
                previous["args_count"] = len(proc.args)
        proc.executable, proc.args = shared(executable), _shared_args(args)
        proc.name = _name(who)
        proc.cwd = self.source.cwd(who.pid) or proc.cwd
        proc.changed_image()
        self._settle(proc, self._known(who.ppid, who.parent_start_ns), evaluate=True)
        self._live.pop(proc.pid, None)  # most recently exec'd last: evicted last
        self._remember(proc)
        return proc, previous

    def on_exit(self, who: Who) -> Proc:
        """The process ended: it leaves the table, named for its relatives a while longer."""
        proc = self.process(who)
        if self._live.get(proc.pid) is proc:
            del self._live[proc.pid]
        self._departed.pop(proc.pid, None)
        if len(self._departed) >= DEPARTED_MAX:
            del self._departed[next(iter(self._departed))]
        self._departed[proc.pid] = proc
        return proc

    def process(self, who: Who) -> Proc:
        """The process an event happened in (learned now if it was not known)."""
        ticks = self.clock.ticks(who.start_ns)
        proc = self._live.get(who.pid)
        if proc is None or proc.ticks != ticks:
            proc = self._learn(who, ticks)
            self._remember(proc)
            return proc
        self._refresh(proc, who)
        return proc

    # -- what documents say

    def entity_id(self, proc: Proc) -> str:
        if proc._entity_id is None:
            proc._entity_id = self.ids.of(proc.pid, proc.ticks)
        return proc._entity_id

    def start(self, proc: Proc) -> str:
        return self._iso(self.clock.wall_ns(proc.ticks))

    def relatives(self, proc: Proc, who: Who) -> Doc:
        """process.parent, group_leader, session_leader and entry_leader of an event."""
        out: Doc = {"parent": self._relative(who.ppid, who.parent_start_ns, proc, False)}
        for key, pid, start_ns in (("group_leader", who.pgid, who.pgid_start_ns),
                                   ("session_leader", who.sid, who.sid_start_ns)):
            if pid:
                out[key] = self._relative(pid, start_ns, proc, True)
        if proc.entry is not None:
            same = proc.entry.proc is proc
            out["entry_leader"] = proc.entry.doc_self if same else proc.entry.doc
        return out

    def _relative(self, pid: int, start_ns: int, proc: Proc, leader: bool) -> Doc:
        if pid == proc.pid and (not start_ns or self.clock.ticks(start_ns) == proc.ticks):
            if proc._as_self is None:
                proc._as_self = {**self._image(proc, leader), "same_as_process": True}
            return proc._as_self
        rel = self._known(pid, start_ns)
        if rel is None:
            doc: Doc = {"pid": pid}
            if start_ns:
                ticks = self.clock.ticks(start_ns)
                doc["entity_id"] = self.ids.of(pid, ticks)
                doc["start"] = self._iso(self.clock.wall_ns(ticks))
            if leader:
                doc["same_as_process"] = False
            return doc
        return self._image(rel, leader)

    def _image(self, proc: Proc, leader: bool) -> Doc:
        """A relative as documents show it. The parent and the entry leader in full; a
        group or session leader by identity, name and executable (every document of a
        session repeats them: their argv is on their own documents)."""
        cached = proc._as_leader if leader else proc._as_parent
        if cached is not None:
            return cached
        doc: Doc = {"entity_id": self.entity_id(proc), "pid": proc.pid,
                    "start": self.start(proc), "name": proc.name}
        if proc.executable is not None:
            doc["executable"] = proc.executable
        if leader:
            doc["same_as_process"] = False
            proc._as_leader = doc
            return doc
        doc["interactive"] = proc.tty is not None
        if proc.vpid:
            doc["vpid"] = proc.vpid
        if proc.args is not None:
            doc["args"] = proc.args
            doc["args_count"] = len(proc.args)
        if proc.cwd is not None:
            doc["working_directory"] = proc.cwd
        proc._as_parent = doc
        return doc

    # -- bookkeeping

    def _known(self, pid: int, start_ns: int) -> Proc | None:
        """A relative by pid and start (0: it is gone, the last one of that pid that ended)."""
        if not pid:
            return None
        if not start_ns:
            return self._departed.get(pid)
        ticks = self.clock.ticks(start_ns)
        for found in (self._live.get(pid), self._departed.get(pid)):
            if found is not None and found.ticks == ticks:
                return found
        if (pid, ticks) in self._absent:
            return None
        facts = self.source.facts(pid)
        if facts is None or facts.ticks != ticks:
            if len(self._absent) >= DEPARTED_MAX:
                self._absent.clear()
            self._absent.add((pid, ticks))
            return None
        proc = self._from_facts(facts)
        self._remember(proc)
        return proc

    def _new(self, who: Who) -> Proc:
        return Proc(who.pid, self.clock.ticks(who.start_ns), who.ppid, who.pgid, who.sid,
                    who.vpid, _name(who), who.euid, _tty(who))

    def _learn(self, who: Who, ticks: int) -> Proc:
        """A process first seen in a record other than its fork: from /proc if it is still
        the same process there, else from the record alone."""
        facts = self.source.facts(who.pid)
        if facts is not None and facts.ticks == ticks:
            proc = self._from_facts(facts)
            self._refresh(proc, who)
            return proc
        proc = self._new(who)
        self._settle(proc, self._known(who.ppid, who.parent_start_ns))
        return proc

    def _refresh(self, proc: Proc, who: Who) -> None:
        """What may change without an exec: parent (reparenting), group, session, tty."""
        moved = proc.sid != who.sid
        proc.ppid, proc.pgid, proc.sid = who.ppid, who.pgid, who.sid
        proc.tty = _tty(who)
        if moved:  # setsid() since we last looked: maybe a new entry
            self._settle(proc, self._known(who.ppid, who.parent_start_ns), evaluate=True)

    def _from_facts(self, facts: ProcFacts) -> Proc:
        proc = _proc_of(facts)
        self._settle(proc, self._parent_from_proc(facts.ppid), evaluate=True)
        return proc

    def _parent_from_proc(self, ppid: int, depth: int = 0) -> Proc | None:
        """A parent named by /proc (by pid alone: /proc does not give its start)."""
        found = self._live.get(ppid)
        if found is not None or not ppid or depth > 64:
            return found
        facts = self.source.facts(ppid)
        if facts is None:
            return None
        proc = _proc_of(facts)
        self._settle(proc, self._parent_from_proc(facts.ppid, depth + 1), evaluate=True)
        self._remember(proc)
        return proc

    def _remember(self, proc: Proc) -> None:
        if proc.pid not in self._live and len(self._live) >= self.max_entries:
            del self._live[next(iter(self._live))]
            self._on_evict()
        self._live[proc.pid] = proc

    # -- sessions

    def _settle(self, proc: Proc, parent: Proc | None, evaluate: bool = False) -> None:
        """The entry leader: inherited at fork, decided again at exec and setsid."""
        if not evaluate and parent is not None and parent.sid == proc.sid:
            proc.entry = parent.entry
            return
        proc.entry = self._entry_of(proc, parent)

    def _entry_of(self, proc: Proc, parent: Proc | None) -> EntryLeader | None:
        if proc.pid in (1, 2) or proc.ppid == 2:  # init and kernel threads: no session
            return None
        leads = proc.pid == proc.sid
        if leads:
            if proc.entry is not None and proc.entry.proc is proc:
                # An exec in the entry leader: the same session, its new image.
                return self._new_entry(proc, proc.entry.type)
            kind = _entry_type(proc, parent)
            if kind is not None:
                return self._new_entry(proc, kind)
        for relative in self._relatives_for_entry(proc, parent):
            if relative.entry is not None:
                return relative.entry
        return self._new_entry(proc, None) if leads else None

    def _relatives_for_entry(self, proc: Proc, parent: Proc | None) -> Iterator[Proc]:
        if parent is not None:
            yield parent
        for pid in (proc.sid, proc.pgid):
            found = self._live.get(pid)
            if found is not None and found is not proc:
                yield found

    def _new_entry(self, proc: Proc, kind: str | None) -> EntryLeader:
        doc: Doc = {**self._image(proc, False), "user": self._user(proc.euid)}
        if kind is not None:
            doc["entry_meta"] = {"type": kind}
        return EntryLeader(proc, kind, doc)


def _proc_of(facts: ProcFacts) -> Proc:
    proc = Proc(facts.pid, facts.ticks, facts.ppid, facts.pgid, facts.sid, facts.vpid,
                facts.name, facts.euid, facts.tty)
    proc.executable = shared(facts.exe) if facts.exe is not None else None
    proc.args = _shared_args(_texts(facts.args)) if facts.args is not None else None
    proc.cwd = facts.cwd
    return proc


def _name(who: Who) -> str:
    return shared(who.comm.decode("utf-8", "backslashreplace"))


def shared(text: str) -> str:
    """One string object for equal names, paths and arguments across the table: a host
    runs the same programs with the same arguments over and over (memory, at 100,000
    processes, is mostly these strings)."""
    return sys.intern(text) if len(text) <= 256 else text


def _shared_args(args: list[str]) -> list[str]:
    return [shared(a) for a in args]


def _tty(who: Who) -> tuple[int, int] | None:
    return (who.tty[1], who.tty[2]) if who.tty else None


def _entry_type(proc: Proc, parent: Proc | None) -> str | None:
    """How a session leader's session came in (None: no entry of its own, inherit)."""
    parent_name = parent.name if parent is not None else ""
    if proc.tty is not None:
        major, minor = proc.tty
        if parent_name.startswith("sshd"):
            return "sshd"
        if parent_name == "ssm-session-wor":  # comm of ssm-session-worker, 15 bytes
            return "ssm"
        if major == TTY_MAJOR and minor < 64:
            return "console"
        if major == TTY_MAJOR or major in PTS_MAJORS:
            return "terminal"
    if proc.ppid == 1:
        return "init"
    if parent_name.startswith("sshd") and not proc.name.startswith("sshd"):
        return "sshd"
    return None
