"""Pure parts of enrichment and documents: container ids, tty names, escaping, time."""

from __future__ import annotations

import time

import pytest

from collector.ecs.documents import errno_name, escape_bytes, texts, unescape_text
from collector.ecs.enrichment import (
    WallClock,
    container_from_cgroup,
    iso_utc_ns,
    tty_display_name,
)

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
