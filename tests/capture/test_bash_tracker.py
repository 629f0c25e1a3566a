"""Bash following from exec records alone, without root: a fake /proc and fake probes.

The real thing (BPF, real copies of bash, an orphan of PID 1) is in test_capture.py.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

import pytest

from collector.capture.bash_tracker import BashTracker, PinnedFile
from collector.capture.records import ExecEvent, ExeId, decode
from tests.ecs.golden_cases import who
from tests.ecs.recordbytes import exec_record, kernel_dev

PID, PPID = 4242, 1
DEV = kernel_dev(254, 1)
ST_DEV = os.makedev(254, 1)


class FakeProbes:
    def __init__(self, world: World, attach_ok: bool = True) -> None:
        self.world = world
        self.bash_probes: dict[tuple[int, int], Any] = {}
        self.attached: list[tuple[str, int | None]] = []
        self.attach_ok = attach_ok

    @property
    def has_library_probes(self) -> bool:
        return False

    def attach_bash(self, path: str, hint_pid: int | None = None, name: str | None = None,
                    found: Any = None) -> object | None:
        self.attached.append((path, hint_pid))
        if not self.attach_ok:
            return None
        st = self.world.files[path]
        self.bash_probes[(st.st_dev, st.st_ino)] = object()
        return self.bash_probes[(st.st_dev, st.st_ino)]


def _st(ino: int) -> os.stat_result:
    return os.stat_result((0o100755, ino, ST_DEV, 1, 0, 0, 1000, 0, 0, 0))


class FakePinned:
    """A file 'held open': checked and probed by its own path here."""

    def __init__(self, path: str, key: tuple[int, int]) -> None:
        self.path = path
        self.key = key
        self.closed = False

    def close(self) -> None:
        self.closed = True


class World:
    """A fake /proc: what stat() finds per path, and which files are bash."""

    def __init__(self, files: dict[str, Any], bash: set[str]) -> None:
        self.files = files  # path -> stat result, or an errno to raise
        self.bash = bash
        self.opened: list[str] = []
        self.pinned: list[FakePinned] = []
        self.unreadable = 0

    def pin(self, path: str) -> FakePinned:
        self.opened.append(path)
        found = self.files.get(path, errno.ENOENT)
        if isinstance(found, int):
            raise OSError(found, os.strerror(found), path)
        pinned = FakePinned(path, (found.st_dev, found.st_ino))
        self.pinned.append(pinned)
        return pinned

    def count_unreadable(self) -> None:
        self.unreadable += 1

    def probes(self, attach_ok: bool = True) -> FakeProbes:
        return FakeProbes(self, attach_ok)

    def tracker(self, probes: FakeProbes, follow_new: bool = True) -> BashTracker:
        return BashTracker(probes, follow_new, on_unreadable=self.count_unreadable,
                           pin=self.pin, inspect=self.inspect, background=False)

    def inspect(self, path: str, pid: int) -> Any:
        return (self.files[path], path, False) if path in self.bash else None


def exec_event(filename: bytes = b"/usr/local/bin/tool", ino: int = 500,
               generation: int = 1) -> ExecEvent:
    record = exec_record(who(pid=PID, tid=PID, ppid=PPID), filename=filename,
                         args_blob=filename + b"\0", argc=1, exe=(DEV, ino, generation))
    event = decode(record)
    assert isinstance(event, ExecEvent)
    return event


def test_a_known_file_costs_a_dict_lookup() -> None:
    world = World({f"/proc/{PID}/exe": _st(500)}, bash=set())
    tracker = world.tracker(world.probes())
    assert tracker.on_exec(exec_event()) is False
    assert tracker.verdicts == {ExeId(ST_DEV, 500, 1): False}
    checked = len(world.opened)
    for _ in range(3):
        assert tracker.on_exec(exec_event()) is False
    assert len(world.opened) == checked


def test_verdicts_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(BashTracker, "MAX_VERDICTS", 3)
    world = World({f"/proc/{PID}/exe": _st(500)}, bash=set())
    tracker = world.tracker(world.probes())
    for generation in range(1, 6):
        tracker.on_exec(exec_event(generation=generation))
    assert tracker.verdicts == {ExeId(ST_DEV, 500, 4): False, ExeId(ST_DEV, 500, 5): False}


def test_a_new_bash_is_probed_once() -> None:
    world = World({f"/proc/{PID}/exe": _st(600)}, bash={f"/proc/{PID}/exe"})
    probes = world.probes()
    tracker = world.tracker(probes)
    assert tracker.on_exec(exec_event(ino=600)) is True
    assert probes.attached == [(f"/proc/{PID}/exe", PID)]
    assert tracker.on_exec(exec_event(ino=600)) is False
    assert len(probes.attached) == 1


def test_a_reused_inode_number_with_another_generation_is_checked_again() -> None:
    world = World({f"/proc/{PID}/exe": _st(700)}, bash=set())
    probes = world.probes()
    tracker = world.tracker(probes)
    tracker.on_exec(exec_event(ino=700, generation=1))
    world.bash.add(f"/proc/{PID}/exe")  # the number now names a copy of bash
    assert tracker.on_exec(exec_event(ino=700, generation=2)) is True
    assert tracker.verdicts == {ExeId(ST_DEV, 700, 1): False, ExeId(ST_DEV, 700, 2): True}


def test_an_already_probed_bash_needs_no_attach() -> None:
    world = World({f"/proc/{PID}/exe": _st(800)}, bash={f"/proc/{PID}/exe"})
    probes = world.probes()
    probes.bash_probes[(ST_DEV, 800)] = object()
    assert world.tracker(probes).on_exec(exec_event(ino=800)) is True
    assert probes.attached == []


def test_a_bash_that_could_not_be_probed_is_tried_again() -> None:
    world = World({f"/proc/{PID}/exe": _st(900)}, bash={f"/proc/{PID}/exe"})
    probes = world.probes(attach_ok=False)
    tracker = world.tracker(probes)
    assert tracker.on_exec(exec_event(ino=900)) is False
    assert tracker.verdicts == {}
    probes.attach_ok = True
    assert tracker.on_exec(exec_event(ino=900)) is True
    assert len(probes.attached) == 2
    assert all(p.closed for p in world.pinned)


def test_unreadable_paths_are_counted_not_raised() -> None:
    """Regression: PID 1's root can be unreadable even to root (a sandbox's init): the
    stat raised PermissionError inside the ring-buffer callback ("Exception ignored")."""
    world = World({f"/proc/{PPID}/root/usr/local/bin/tool": errno.EACCES}, bash=set())
    tracker = world.tracker(world.probes())
    assert tracker.on_exec(exec_event()) is False
    assert world.opened == [f"/proc/{PID}/exe", f"/proc/{PID}/root/usr/local/bin/tool",
                           f"/proc/{PPID}/root/usr/local/bin/tool"]
    assert world.unreadable == 1
    assert tracker.verdicts == {}  # undecided: the next exec of it tries again


def test_a_process_gone_is_not_an_error() -> None:
    world = World({}, bash=set())
    tracker = world.tracker(world.probes())
    assert tracker.on_exec(exec_event()) is False
    assert (world.unreadable, tracker.verdicts) == (0, {})


def test_a_path_now_naming_another_file_is_skipped() -> None:
    world = World({f"/proc/{PID}/exe": _st(1), f"/proc/{PID}/root/usr/local/bin/tool": _st(500)},
                  bash={f"/proc/{PID}/root/usr/local/bin/tool"})
    probes = world.probes()
    assert world.tracker(probes).on_exec(exec_event(ino=500)) is True
    assert probes.attached == [(f"/proc/{PID}/root/usr/local/bin/tool", PID)]


def test_a_relative_filename_is_reached_through_proc_exe_only() -> None:
    world = World({}, bash=set())
    world.tracker(world.probes()).on_exec(exec_event(filename=b"./configure"))
    assert world.opened == [f"/proc/{PID}/exe"]


def test_a_non_utf8_filename_is_looked_up_as_bytes() -> None:
    path = os.fsdecode(b"/tmp/\xffname")
    world = World({f"/proc/{PID}/root{path}": _st(500)}, bash=set())
    tracker = world.tracker(world.probes())
    tracker.on_exec(exec_event(filename=b"/tmp/\xffname"))
    assert os.fsencode(world.opened[1]) == f"/proc/{PID}/root".encode() + b"/tmp/\xffname"
    assert tracker.verdicts == {ExeId(ST_DEV, 500, 1): False}


def test_following_can_be_switched_off() -> None:
    world = World({f"/proc/{PID}/exe": _st(600)}, bash={f"/proc/{PID}/exe"})
    probes = world.probes()
    assert world.tracker(probes, follow_new=False).on_exec(exec_event(ino=600)) is False
    assert (world.opened, probes.attached) == ([], [])


def test_a_pinned_file_outlives_its_path(tmp_path: Path) -> None:
    """The file is held open while it is checked and probed: the process that ran it may
    exit (and its /proc paths vanish) in between."""
    program = tmp_path / "short-lived"
    program.write_bytes(b"\x7fELF-not-really")
    st = os.stat(program)
    pinned = PinnedFile(str(program))
    try:
        program.unlink()
        assert pinned.key == (st.st_dev, st.st_ino)
        assert Path(pinned.path).read_bytes() == b"\x7fELF-not-really"
    finally:
        pinned.close()


# --------------------------------------------------------------------------- hostile files


class CountingFile:
    """A file object that counts the bytes read through it."""

    def __init__(self, path: Path) -> None:
        self._fh = open(path, "rb")  # noqa: SIM115 - closed by the test
        self.read_bytes = 0

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self.read_bytes += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def close(self) -> None:
        self._fh.close()


def sparse_copy(source: str, target: Path, size: int) -> Path:
    target.write_bytes(Path(source).read_bytes())
    os.truncate(target, size)  # a hole: no disk used, but every byte readable (zeros)
    return target


def test_a_16_gib_sparse_binary_is_checked_with_bounded_reads(tmp_path: Path) -> None:
    """Regression: detection memory-mapped and scanned the whole file: 58 CPU-seconds for a
    16 GiB sparse copy of a binary, on the capture thread, for every new such file."""
    from collector.capture import bashfind

    huge = sparse_copy("/bin/true", tmp_path / "huge-true", 16 << 30)
    counting = CountingFile(huge)
    try:
        strings = bashfind.dynamic_strings(counting)  # type: ignore[arg-type]
    finally:
        counting.close()
    assert strings is not None and b"__libc_start_main" in strings
    assert counting.read_bytes < 64 << 10
    assert bashfind.looks_like_bash(str(huge)) is False
    huge_bash = sparse_copy("/bin/bash", tmp_path / "huge-bash", 16 << 30)
    assert bashfind.looks_like_bash(str(huge_bash)) is True


@pytest.mark.parametrize("garbage", [
    b"\x7fELF" + b"\xff" * 60,  # bad class/order bytes
    b"\x7fELF\x02\x01\x01" + b"\0" * 57,  # no section headers
    b"\x7fELF\x02\x01\x01" + b"\0" * 33 + (1 << 62).to_bytes(8, "little") + b"\0" * 16,
])
def test_malformed_elf_headers_are_not_bash(tmp_path: Path, garbage: bytes) -> None:
    from collector.capture import bashfind

    path = tmp_path / "odd"
    path.write_bytes(garbage)
    assert bashfind.looks_like_bash(str(path)) is False


def test_checks_run_off_the_capture_thread_and_attach_on_it() -> None:
    import threading

    world = World({f"/proc/{PID}/exe": _st(600)}, bash={f"/proc/{PID}/exe"})
    probes = world.probes()
    release = threading.Event()
    threads: list[str] = []

    def slow_inspect(path: str, pid: int) -> Any:
        threads.append(threading.current_thread().name)
        release.wait(10)  # a file that takes long to read
        return world.inspect(path, pid)

    tracker = BashTracker(probes, pin=world.pin, inspect=slow_inspect)
    assert tracker.on_exec(exec_event(ino=600)) is False  # returns at once
    assert tracker.checking and probes.attached == []
    assert tracker.on_exec(exec_event(ino=600)) is False  # already queued: not twice
    release.set()
    deadline = time.monotonic() + 10
    probed = False
    while not probed and time.monotonic() < deadline:
        probed = tracker.poll()
    assert probed and probes.attached == [(f"/proc/{PID}/exe", PID)]
    assert threads == ["bash-check"] and not tracker.checking
    assert all(p.closed for p in world.pinned)


def test_initial_bash_files_are_read_once_each(tmp_path: Path) -> None:
    """Two names of one bash file (usrmerge's /bin/bash and /usr/bin/bash, here two hard
    links) give one readline target; a copy is another file and gets its own."""
    from collector.capture import bashfind

    first = tmp_path / "bash"
    first.write_bytes(Path("/bin/bash").read_bytes())
    os.link(first, tmp_path / "bash-link")
    copy = tmp_path / "bash-copy"
    copy.write_bytes(first.read_bytes())
    found = bashfind.initial_bash_targets((str(first), str(tmp_path / "bash-link"), str(copy)))
    targets = [(path, target) for path, target in found if target is not None]
    ours = [(path, key) for path, (key, _target, _lib) in targets
            if path.startswith(str(tmp_path))]
    assert ours == [(str(first), bashfind.file_key(str(first))),
                    (str(copy), bashfind.file_key(str(copy)))]
    keys = [key for _path, (key, _target, _lib) in targets]
    assert len(keys) == len(set(keys))


def test_check_names_each_bash_file_once_and_one_without_readline(tmp_path: Path) -> None:
    """`audit-collector check` reads the same list: one line per file, a failing (non-fatal)
    line for a file with no readline."""
    from collector.config import config_from_mapping
    from collector.preflight import check_bash

    bash = tmp_path / "bash"
    bash.write_bytes(Path("/bin/bash").read_bytes())
    os.link(bash, tmp_path / "bash-link")
    true = tmp_path / "true"
    true.write_bytes(Path("/bin/true").read_bytes())
    cfg = config_from_mapping({"capture": {"bash_paths": [str(bash), str(tmp_path / "bash-link"),
                                                          str(true)]}})
    ours = {r.name: r for r in check_bash(cfg) if str(tmp_path) in r.name}
    assert set(ours) == {f"bash {bash}", f"bash {true}"}
    assert ours[f"bash {bash}"].ok and not ours[f"bash {true}"].ok
    assert not ours[f"bash {true}"].fatal
