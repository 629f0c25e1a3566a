"""Golden documents: raw ring-buffer records in, ECS JSON out, compared byte for byte.

No root, no BPF: the records are the bytes the programs write (tests/ecs/golden_cases.py),
the world they are enriched from is fixed, and the documents are serialised the way the
collector sends them (orjson, sorted keys; indented here for readable diffs).

Regenerate after an intended change of the documents, then review the diff:

    UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/ecs/test_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.capture.hostns import HostNamespaces
from collector.capture.records import decode
from collector.ecs.documents import DocumentBuilder, events_lost_document
from collector.ecs.enrichment import (
    CgroupPaths,
    Container,
    Enrichment,
    NameCache,
    NamespaceOwners,
    ProcView,
    container_from_cgroup,
    iso_utc_ns,
)
from collector.ecs.processes import Clock, EntityIds, ProcessTable, ProcFacts, ProcSource
from tests.ecs.golden_cases import (
    BOOT_WALL_NS,
    CASES,
    CGROUP_PATHS,
    CREATED_NS,
    GROUPS,
    HOST,
    HOST_NS,
    PROC,
    USERS,
    Input,
    Lost,
)

GOLDEN_DIR = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


class FixedClock:
    def to_wall_ns(self, ktime_ns: int) -> int:
        return BOOT_WALL_NS + ktime_ns

    def now_ns(self) -> int:
        return CREATED_NS


class GoldenProc(ProcView):
    """The fixed /proc of golden_cases.PROC."""

    def exe(self, pid: int) -> str | None:
        proc = PROC.get(pid)
        return proc.exe if proc else None

    def in_namespace(self, pid: int, kind: str, inode: int) -> bool:
        proc = PROC.get(pid)
        return proc is not None and proc.ns.get(kind) == inode

    def find_in_namespace(self, kind: str, inode: int,
                          besides: int = 0) -> tuple[int, Container | None] | None:
        for pid, proc in PROC.items():
            if pid != besides and proc.ns.get(kind) == inode:
                return pid, container_from_cgroup(proc.cgroup.split(":", 2)[-1])
        return None


class GoldenProcSource(ProcSource):
    """The process table's view of the fixed /proc of golden_cases.PROC."""

    def pids(self) -> list[int]:
        return [pid for pid, proc in PROC.items() if proc.stat]

    def facts(self, pid: int) -> ProcFacts | None:
        proc = PROC.get(pid)
        if proc is None or proc.stat is None:
            return None
        st = proc.stat
        tty_nr = (st.tty[0] << 8 | st.tty[1]) if st.tty else 0
        return ProcFacts(pid=pid, ticks=st.ticks, ppid=st.ppid, pgid=st.pgid, sid=st.sid,
                         tty_nr=tty_nr, name=os.path.basename(proc.exe)[:15], uid=st.uid,
                         euid=st.uid, gid=st.uid, vpid=pid, args=list(st.args), exe=proc.exe,
                         cwd=st.cwd)

    def cwd(self, pid: int) -> str | None:
        proc = PROC.get(pid)
        return proc.stat.cwd if proc and proc.stat else None


def golden_builder() -> DocumentBuilder:
    """The document builder of the collector, in the fixed world of golden_cases."""
    host_ns = HostNamespaces(dict(HOST_NS), "pid 1")
    proc = GoldenProc()
    enrich = Enrichment(
        host_ns, CgroupPaths("/golden", scan=lambda _mount: dict(CGROUP_PATHS)),
        FixedClock(), NameCache(USERS.__getitem__, GROUPS.__getitem__),
        NamespaceOwners(host_ns, proc), proc)
    table = ProcessTable(EntityIds(HOST_NS["pid"], HOST.boot_uuid), Clock(BOOT_WALL_NS),
                         GoldenProcSource(), enrich.user, iso_utc_ns)
    return DocumentBuilder(HOST, enrich, processes=table)


def _document(builder: DocumentBuilder, item: Input) -> dict[str, Any]:
    if isinstance(item, Lost):
        return events_lost_document(HOST, item.counts, "ringbuf", item.extra, now_ns=CREATED_NS)
    return builder.build(decode(item))


def _render(docs: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(docs, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_document(name: str) -> None:
    builder = golden_builder()
    rendered = _render([_document(builder, item) for item in CASES[name]])
    path = GOLDEN_DIR / f"{name}.json"
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(rendered)
    assert path.exists(), f"no golden file {path}: run with UPDATE_GOLDEN=1 and review it"
    assert rendered.decode() == path.read_text()


def test_every_golden_file_has_a_case() -> None:
    assert sorted(p.stem for p in GOLDEN_DIR.glob("*.json")) == sorted(CASES)
