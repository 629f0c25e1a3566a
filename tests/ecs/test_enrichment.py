"""Pure parts of enrichment and documents: container ids, tty names, escaping, time, and
the sharing of sub-objects between documents."""

from __future__ import annotations

import time

import pytest

from collector.capture.hostns import HostNamespaces
from collector.capture.records import Who, decode
from collector.ecs.documents import errno_name, escape_bytes, texts, unescape_text
from collector.ecs.enrichment import (
    CgroupPaths,
    Enrichment,
    NameCache,
    NamespaceOwners,
    WallClock,
    container_from_cgroup,
    iso_utc_ns,
    tty_display_name,
)
from tests.ecs.golden_cases import HOST_NS, who
from tests.ecs.recordbytes import UNSET, bash_record

CID = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("path", "runtime"),
    [
        (f"/system.slice/docker-{CID}.scope", "docker"),
        (f"/docker/{CID}", "docker"),
        (f"/system.slice/containerd.service/kubepods-besteffort-pod1.slice:cri-containerd:{CID}",
         None),
        (f"/kubepods.slice/kubepods-pod1.slice/cri-containerd-{CID}.scope", "containerd"),
        (f"/kubepods/besteffort/pod1234/{CID}", "containerd"),
        (f"/machine.slice/libpod-{CID}.scope/container", "podman"),
        (f"/kubepods.slice/crio-{CID}.scope", "cri-o"),
        ("/user.slice/user-1000.slice/session-3.scope", None),
        ("/", None),
    ],
)
def test_container_ids_by_runtime(path: str, runtime: str | None) -> None:
    found = container_from_cgroup(path)
    if runtime is None:
        assert found is None or found.id == CID
    else:
        assert found is not None
        assert (found.id, found.runtime) == (CID, runtime)


def test_tty_names() -> None:
    assert tty_display_name("pts12") == "pts/12"
    assert tty_display_name("tty1") == "tty1"
    assert tty_display_name("ttyS0") == "ttyS0"


@pytest.mark.parametrize("raw", [b"plain", b"", b"back\\slash", b"\xff\xfe", b"a\\xffb\x80",
                                 "héllo".encode(), b"\\x41"])
def test_escaping_is_reversible(raw: bytes) -> None:
    assert unescape_text(escape_bytes(raw)) == raw


def test_one_escape_rule_per_document() -> None:
    values, escaped = texts([b"a\\b", b"\xff"])
    assert escaped is True
    assert [unescape_text(v) for v in values] == [b"a\\b", b"\xff"]
    values, escaped = texts([b"a\\b", "é".encode()])
    assert (values, escaped) == (["a\\b", "é"], False)


def test_errno_names() -> None:
    assert errno_name(-2) == "ENOENT"
    assert errno_name(-13) == "EACCES"
    assert errno_name(-1) == "EPERM"


def test_wall_clock_converts_monotonic_to_utc() -> None:
    clock = WallClock()
    now_mono = time.monotonic_ns()
    wall = clock.to_wall_ns(now_mono)
    assert abs(wall - time.time_ns()) < 50_000_000
    assert iso_utc_ns(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"


def test_timestamps_of_many_interleaved_seconds_are_each_right() -> None:
    """The formatted seconds are remembered (a document names several moments), also past
    the number kept."""
    base = 1_700_000_000
    for n in range(700):
        second = base + (n * 7919) % 600  # jumps back and forth over 600 seconds
        expected = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{n:09d}Z"
        assert iso_utc_ns(second * 1_000_000_000 + n) == expected


# --------------------------------------------------------------------------- shared sub-objects


def _enrichment(users: dict[int, str], cgroups: dict[int, str]) -> Enrichment:
    host_ns = HostNamespaces(dict(HOST_NS), "pid 1")
    return Enrichment(host_ns, CgroupPaths("/golden", scan=lambda _m: dict(cgroups)),
                      WallClock(), NameCache(users.__getitem__, users.__getitem__),
                      NamespaceOwners(host_ns))


def _who(**overrides: object) -> Who:
    event = decode(bash_record(who(**overrides), line=b"true"))
    return event.who


def test_final_sub_objects_are_built_once_and_shared() -> None:
    enrich = _enrichment({1000: "alice"}, {8123: "/user.slice"})
    first, second = _who(cgroup_id=8123), _who(cgroup_id=8123, pid=99)
    assert enrich.users(first) is enrich.users(second)
    assert enrich.user(1000) is enrich.user(1000)
    assert enrich.group(1000) is enrich.group(1000)
    assert enrich.cgroup(first) is enrich.cgroup(second)
    assert enrich.namespaces(first, None) is enrich.namespaces(second, None)


def test_a_name_found_later_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """A user doc without a name is provisional: once passwd knows the uid (a user created
    after its first event), documents name it; a named one is final."""
    monkeypatch.setattr(NameCache, "NEGATIVE_TTL_S", 0.0)
    users: dict[int, str] = {}
    enrich = _enrichment(users, {})
    person = _who(uid=1000, euid=1000, auid=UNSET)
    assert enrich.users(person) == {"id": "1000", "effective": {"id": "1000"}}
    assert enrich.group(1000) == {"id": "1000"}
    users[1000] = "alice"
    named = enrich.users(person)
    assert named == {"id": "1000", "name": "alice",
                     "effective": {"id": "1000", "name": "alice"}}
    assert enrich.users(person) is named
    assert enrich.group(1000) == {"id": "1000", "name": "alice"}


def test_a_cgroup_found_later_gets_its_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CgroupPaths, "RESCAN_INTERVAL_S", 0.0)
    tree: dict[int, str] = {1: "/"}
    enrich = _enrichment({}, tree)
    person = _who(cgroup_id=77, cgroup_name=b"new.scope")
    assert enrich.cgroup(person)[0] == {"path": ".../new.scope", "id": 77}
    tree[77] = "/system.slice/new.scope"
    assert enrich.cgroup(person)[0] == {"path": "/system.slice/new.scope", "id": 77}
