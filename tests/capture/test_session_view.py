"""Kibana's Session View opens our sessions: a login-like session, captured by the real
probes, indexed in the Elasticsearch test server with the collector's own index template,
read back with Session View's own query, and rebuilt into a process tree the way Session
View builds it (x-pack/.../session_view: process_events_route.ts, process_tree/helpers.ts
and hooks.ts).

The session: a new pty and session (setsid, controlling terminal), an interactive bash on
it, a pipeline, a subshell with a child, a uid change (setpriv, what sudo does to a
process), an unshare into a new UTS namespace. Each process of interest writes its own
/proc/PID/stat to a truth file while it runs: the tree, every group and session leader and
every entity id are checked against what the kernel said there, not against the collector.
"""

from __future__ import annotations

import base64
import io
import os
import pty
import select
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch, helpers

from collector.config import config_from_mapping
from collector.delivery.elasticsearch.index import setup_cluster
from tests.capture.support import Doc, RunningAgent
from tests.esserver.server import ESTestServer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="BPF needs root")

DATA_STREAM = "logs-audit_collector-default"
# Session View's process_events_route: the page size and the fields it asks for.
PROCESS_EVENTS_PER_PAGE = 500
PROCESS_EVENT_FIELDS = [
    "@timestamp", "event.id", "event.kind", "event.type", "event.action", "event.category",
    "user.id", "user.name", "group.id", "group.name", "host.architecture", "host.hostname",
    "host.id", "host.name", "host.os.family", "host.os.full", "host.os.kernel", "host.os.name",
    "host.boot.id", "process.entity_id", "process.args", "process.command_line",
    "process.executable", "process.name", "process.interactive", "process.working_directory",
    "process.pid", "process.start", "process.end", "process.user.id", "process.user.name",
    "process.exit_code", "process.tty.*", "process.entry_leader.*",
    "process.session_leader.*", "process.group_leader.*", "process.parent.*",
    "process.previous", "container.id",
]
STAT_REPORT = 'read -r s < /proc/{pid}/stat; echo "{label} $s" >> {truth}'


def session_lines(truth: Path, mark: str) -> list[str]:
    """What the user types; each process of interest reports its own /proc stat."""
    sh_report = STAT_REPORT.format(pid="$$", label="{}", truth=truth)
    return [
        "report() { " + STAT_REPORT.format(pid="$BASHPID", label="$1", truth=truth) + "; }",
        "report shell",
        f"/bin/sh -c '{sh_report.format('pipe1')}' | "
        f"/bin/sh -c '{sh_report.format('pipe2')}; cat >/dev/null'",
        f"( report subshell; /bin/sh -c '{sh_report.format('subchild')}'; true )",
        "setpriv --reuid=65534 --regid=65534 --clear-groups "
        f"/bin/sh -c '{sh_report.format('uid')}'",
        f"unshare --uts /bin/sh -c 'hostname sv-{mark[-8:]}; {sh_report.format('ns')}'",
        "exit",
    ]


def run_session(lines: list[str], timeout: float = 30) -> int:
    """A login-like session: pty.fork() makes a new session whose controlling terminal is
    a new pty; bash -i runs there and the lines are typed one by one."""
    pid, master = pty.fork()
    if pid == 0:
        os.execv("/bin/bash", ["bash", "--norc", "--noprofile", "-i"])
    pending = list(lines)
    deadline = time.monotonic() + timeout
    last = 0.0
    prompted = False
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    if not os.read(master, 65536):
                        break
                except OSError:
                    break
                prompted = True  # bash has put the terminal in raw mode: type
            if pending and prompted and time.monotonic() - last > 0.4:
                os.write(master, pending.pop(0).encode() + b"\n")
                last = time.monotonic()
    finally:
        os.close(master)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return pid


# --------------------------------------------------------------------------- truth


def entity_id(pid: int, ticks: int) -> str:
    """The documented recipe, computed here from what /proc said (the pids are numbers of
    the host's pid namespace, which this test runs in)."""
    pid_ns = os.stat("/proc/self/ns/pid").st_ino
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return base64.b64encode(f"{pid_ns}__{boot_id}__{pid}__{ticks}".encode()).decode()


def read_truth(path: Path) -> dict[str, dict[str, int]]:
    """label -> pid, ppid, pgid, sid, ticks (proc(5): stat fields 1, 4, 5, 6, 22)."""
    truth: dict[str, dict[str, int]] = {}
    for line in path.read_text().splitlines():
        label, stat = line.split(" ", 1)
        pid = int(stat.split(" ", 1)[0])
        fields = stat.rsplit(")", 1)[1].split()
        truth[label] = {"pid": pid, "ppid": int(fields[1]), "pgid": int(fields[2]),
                        "sid": int(fields[3]), "ticks": int(fields[19])}
        truth[label]["entity_id"] = entity_id(pid, truth[label]["ticks"])
    return truth


# --------------------------------------------------------------------------- Session View


def session_view_events(client: Elasticsearch, session: str, start: str) -> list[Doc]:
    """process_events_route's query, paged forward the way its client pages (cursor: the
    last page's last @timestamp, minus a millisecond; events are told apart by event.id)."""
    events: list[Doc] = []
    seen: set[str] = set()
    cursor_ms: int | None = None
    while True:
        body: dict[str, Any] = {
            "query": {"bool": {"must": [
                {"term": {"process.entry_leader.entity_id": session}},
                {"bool": {"should": [{"term": {"event.action": a}}
                                     for a in ("fork", "exec", "executed", "end")]}},
                {"range": {"@timestamp": {"gte": start}}},
            ]}},
            "size": PROCESS_EVENTS_PER_PAGE,
            "sort": [{"@timestamp": "asc"}],
            "fields": PROCESS_EVENT_FIELDS,
        }
        if cursor_ms is not None:
            body["search_after"] = [cursor_ms]
        hits = client.search(index=DATA_STREAM, body=body)["hits"]["hits"]
        page = [h["_source"] for h in hits]
        events += [e for e in page if e["event"]["id"] not in seen]
        seen |= {e["event"]["id"] for e in page}
        if len(page) < PROCESS_EVENTS_PER_PAGE:
            return events
        last = page[-1]["@timestamp"]
        cursor_ms = int(time.mktime(time.strptime(last[:19], "%Y-%m-%dT%H:%M:%S"))
                        - time.timezone) * 1000 + int(last[20:23]) - 1


class Node:
    """Session View's ProcessImpl, as far as the tree goes."""

    def __init__(self, entity: str) -> None:
        self.id = entity
        self.events: list[Doc] = []
        self.children: list[Node] = []
        self.parent: Node | None = None

    def details(self) -> Doc:
        """getDetails(): the last fork, exec or end event."""
        return [e for e in self.events
                if e["event"]["action"] in ("fork", "exec", "end")][-1]

    def is_verbose(self) -> bool:
        p = self.details()["process"]
        group, session = p.get("group_leader"), p.get("session_leader")
        return (self.id != p.get("entry_leader", {}).get("entity_id")
                and (not group or not session or group["pid"] == session["pid"]))


def build_tree(events: list[Doc], session: str) -> tuple[dict[str, Node], list[Node]]:
    """updateProcessMap + buildProcessTree: nodes by process.entity_id (events of kind
    event), parents by process.parent.entity_id; returns the map and the orphans."""
    nodes: dict[str, Node] = {session: Node(session)}
    for event in events:
        entity = event["process"].get("entity_id")
        if entity and event["event"]["kind"] == "event":
            nodes.setdefault(entity, Node(entity)).events.append(event)
    orphans: list[Node] = []
    for event in events:
        p = event["process"]
        node = nodes[p["entity_id"]]
        if node.parent is not None or node.id == session or "parent" not in p:
            continue
        parent = nodes.get(p["parent"].get("entity_id", ""))
        if parent is None:
            if node not in orphans:
                orphans.append(node)
            continue
        node.parent = parent
        parent.children.append(node)
    return nodes, orphans


def render(node: Node, depth: int = 0) -> Iterator[str]:
    d = node.details()["process"]
    actions = ",".join(e["event"]["action"] for e in node.events)
    yield (f"{'  ' * depth}{d['pid']} {d.get('name')} {d.get('args')} [{actions}]"
           f"{' verbose' if node.is_verbose() else ''}")
    for child in node.children:
        yield from render(child, depth + 1)


# --------------------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def session_docs() -> Iterator[tuple[list[Doc], dict, int]]:
    # Not under pytest's 0700 base: the uid-changed process reports here too.
    work = Path(tempfile.mkdtemp(prefix="session-view-", dir="/tmp"))
    truth = work / "truth"
    truth.touch()
    truth.chmod(0o666)
    work.chmod(0o755)
    mark = uuid.uuid4().hex
    try:
        with RunningAgent() as agent:
            shell_pid = run_session(session_lines(truth, mark))
            agent.sink.wait_for(lambda d: d["event"]["action"] == "end"
                                and d["process"]["pid"] == shell_pid)
            docs = list(agent.sink.docs)
        yield docs, read_truth(truth), shell_pid
    finally:
        shutil.rmtree(work)


def test_session_view_rebuilds_the_session(session_docs: tuple[list[Doc], dict, int],
                                           tmp_path: Path) -> None:
    docs, truth, shell_pid = session_docs
    assert set(truth) == {"shell", "pipe1", "pipe2", "subshell", "subchild", "uid", "ns"}
    shell = truth["shell"]
    assert shell["pid"] == shell["sid"] == shell_pid  # its own session, from pty.fork()
    session = shell["entity_id"]

    server = ESTestServer()
    server.start()
    try:
        cfg = config_from_mapping({"outputs": [f"elasticsearch:{server.url}"],
                                   "metrics": {"enabled": False}})
        assert setup_cluster(cfg, io.StringIO()) == 0
        client = Elasticsearch(server.url, request_timeout=30)
        indexed, errors = helpers.bulk(
            client, ({"_op_type": "create", "_index": DATA_STREAM, "_source": d} for d in docs),
            raise_on_error=False, refresh="true")
        assert errors == [] and indexed == len(docs)
        entry = next(d for d in docs if d["process"].get("entity_id") == session
                     and d["event"]["action"] == "exec")["process"]["entry_leader"]
        events = session_view_events(client, session, entry["start"])
        client.close()
    finally:
        server.stop()

    # The entry leader: the shell itself, a terminal session, as Session View expects it.
    assert entry["entity_id"] == session and entry["pid"] == shell_pid
    assert entry["entry_meta"]["type"] == "terminal" and entry["same_as_process"] is True
    nodes, orphans = build_tree(events, session)
    tree = "\n".join(render(nodes[session]))
    (tmp_path / "tree.txt").write_text(tree)
    print(f"\n{len(events)} Session View events of {len(docs)} documents:\n{tree}")
    assert orphans == [], tree
    assert {e["event"]["action"] for e in events} == {"exec", "fork", "end"}

    # Every reporting process: in the tree under the parent the kernel named, with the
    # group and session leaders the kernel named, on every one of its events.
    for label, t in truth.items():
        node = nodes.get(t["entity_id"])
        assert node is not None, f"{label} {t} is not in the session's tree\n{tree}"
        for event in node.events:
            p = event["process"]
            # A fork is recorded before the shell's setpgid() puts the child in its job's
            # group: then it is still in its parent's group, as the kernel said.
            groups = {t["pgid"]}
            if event["event"]["action"] == "fork":
                groups.add(p["parent"]["pid"] if t["pgid"] == t["pid"] else t["pgid"])
                groups.add(shell_pid)
            assert p["pid"] == t["pid"] and p["session_leader"]["pid"] == t["sid"], label
            assert p["group_leader"]["pid"] in groups, (label, event["event"]["action"])
            assert p["entry_leader"]["entity_id"] == session
            if event["event"]["action"] != "fork" and t["pgid"] in (t["pid"], shell_pid):
                want = entity_id(t["pgid"], truth["shell" if t["pgid"] == shell_pid
                                                   else label]["ticks"])
                assert p["group_leader"]["entity_id"] == want, label
            assert p["session_leader"]["entity_id"] == session
        if label != "shell":
            assert node.parent is not None and node.parent.details()["process"]["pid"] == t[
                "ppid"], label
        assert node.events[-1]["event"]["action"] == "end", label
    for label in ("pipe1", "pipe2", "subshell", "uid", "ns"):
        assert nodes[truth[label]["entity_id"]].parent.id == session, label
    # And the two programs those started: cat in pipe2's sh, hostname in the new namespace.
    reported = {t["entity_id"] for t in truth.values()}
    others = sorted((n.details()["process"]["name"], n.parent.details()["process"]["pid"])
                    for n in nodes.values() if n.id not in reported)
    assert others == sorted([("cat", truth["pipe2"]["pid"]),
                             ("hostname", truth["ns"]["pid"])]), tree
    assert nodes[truth["subchild"]["entity_id"]].parent.id == truth["subshell"]["entity_id"]
    # The pipeline is one job: pipe1 leads the group pipe2 is in; neither is "verbose".
    assert truth["pipe2"]["pgid"] == truth["pipe1"]["pid"] != shell_pid
    for label in ("pipe1", "pipe2", "subshell", "subchild", "uid", "ns"):
        assert not nodes[truth[label]["entity_id"]].is_verbose(), label

    # The uid change: setpriv's exec, then sh's as uid 65534, one process.
    uid_execs = [e for e in nodes[truth["uid"]["entity_id"]].events
                 if e["event"]["action"] == "exec"]
    assert [e["process"]["name"] for e in uid_execs] == ["setpriv", "sh"]
    assert [e["process"]["user"]["id"] for e in uid_execs] == ["0", "65534"]
    assert uid_execs[1]["process"]["previous"]["executable"].endswith("setpriv")

    # The unshare and the typed lines carry the identity of their process.
    ns_docs = [d for d in docs if d["event"]["action"] == "unshare"
               and d["process"].get("entity_id") == truth["ns"]["entity_id"]]
    assert len(ns_docs) == 1 and ns_docs[0]["audit_collector"]["ns"]["kinds"] == ["uts"]
    assert ns_docs[0]["process"]["entry_leader"]["entity_id"] == session
    typed = [d for d in docs if d["event"]["action"] == "bash_command"
             and d["process"].get("entity_id") == session]
    lines = session_lines(Path("x"), "y")
    assert len(typed) == len(lines)
    assert typed[1]["audit_collector"]["bash"]["line"] == "report shell"
    assert typed[-1]["audit_collector"]["bash"]["line"] == "exit"
    shell_exec = nodes[session].events
    for line in typed:
        assert line["process"]["session_leader"]["entity_id"] == session
        assert line["process"]["entry_leader"] == [e for e in shell_exec if e["event"][
            "action"] == "exec"][-1]["process"]["entry_leader"]
