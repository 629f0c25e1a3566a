"""Bash following: probe bash binaries as they start running, and keep bash lines only.

Every successful exec record says which file ran (device, inode, i_generation, filename).
A file seen before costs one dict lookup; a new one is reached through /proc (the process's
own view of its file, which also works inside containers), checked for bash once, and
probed if it is one. Nothing here reads documents: the record is the only input.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from collector.capture import bashfind
from collector.capture.records import ExecEvent, ExeId

log = logging.getLogger(__name__)

# Errors that mean "not there (any more)": the process exited, the file was replaced.
_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ESRCH)


class BashProbes(Protocol):
    """What the tracker needs from the loaded probes (collector.capture.probes.Probes)."""

    bash_probes: dict[tuple[int, int], object]

    @property
    def has_library_probes(self) -> bool: ...

    def attach_bash(self, path: str, hint_pid: int | None = None, name: str | None = None,
                    found: bashfind.ReadlineTarget | None = None) -> object | None: ...


class PinnedFile:
    """A file held open, so checking and probing it still work once its process exits:
    `path` (/proc/self/fd/N) names exactly the file opened; `key` is its (st_dev, st_ino)."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        st = os.fstat(self._fd)
        self.path = f"/proc/self/fd/{self._fd}"
        self.key = (st.st_dev, st.st_ino)

    def close(self) -> None:
        os.close(self._fd)


@dataclass
class _Check:
    """A new executable, held open, to be checked for bash off the capture thread."""

    exe: ExeId | None
    pinned: PinnedFile
    name: str
    pid: int
    found: bashfind.ReadlineTarget | None = None  # set by the check: bash, and where


class BashTracker:
    """Decides, once per executable, whether it is bash, and has new ones probed.

    The capture thread only pins the file (one open) and queues it; reading its ELF
    headers runs on a worker thread, so the ring buffer is drained whatever the file is
    (a huge or slow one). The verdict comes back through `poll`, on the capture thread,
    which attaches the probe: BCC is only ever called from that one thread.
    """

    # Verdicts kept at most (a build farm runs ever new binaries); past it, start over.
    MAX_VERDICTS = 16384
    # Files held open while queued: past it, a new executable is checked at its next exec.
    MAX_PENDING = 64

    def __init__(self, probes: BashProbes, follow_new: bool = True,
                 on_unreadable: Callable[[], None] = lambda: None,
                 pin: Callable[[str], PinnedFile] = PinnedFile,
                 inspect: Callable[[str, int], bashfind.ReadlineTarget | None]
                 = bashfind.inspect_bash,
                 background: bool = True,
                 on_deferred: Callable[[], None] = lambda: None) -> None:
        self._probes = probes
        self._follow_new = follow_new
        self._on_unreadable = on_unreadable  # counts execs whose file could not be checked
        self._on_deferred = on_deferred  # counts checks put off because the queue was full
        self._pin = pin
        self._inspect = inspect
        # Executables decided on, by (dev, inode, i_generation): True when bash is probed
        # there. The generation, because a freed inode number soon names another file.
        self.verdicts: dict[ExeId, bool] = {}
        self._pending: set[ExeId | None] = set()
        self._done: queue.SimpleQueue[_Check] = queue.SimpleQueue()
        self._todo: queue.Queue[_Check] | None = None
        if background:
            self._todo = queue.Queue(self.MAX_PENDING)
            threading.Thread(target=self._work, name="bash-check", daemon=True).start()

    def on_exec(self, event: ExecEvent) -> bool:
        """Look at a successful exec; True when a bash not seen before is now probed (at
        once only without a worker thread: else `poll` says so later)."""
        exe = event.exe
        if not self._follow_new or (exe is not None and (exe in self.verdicts
                                                         or exe in self._pending)):
            return False
        check = self._pin_candidate(event)
        if check is None:
            return False
        if check.pinned.key in self._probes.bash_probes:  # the same file under a new name
            check.pinned.close()
            self._remember(exe, True)
            return True
        if self._todo is None:
            check.found = self._inspect(check.pinned.path, check.pid)
            self._done.put(check)
            return self.poll()
        try:
            self._todo.put_nowait(check)
        except queue.Full:
            check.pinned.close()
            self._on_deferred()
            return False
        self._pending.add(exe)
        return False

    @property
    def checking(self) -> bool:
        """Checks are queued or running (their results are for `poll`)."""
        return bool(self._pending)

    def poll(self) -> bool:
        """Apply finished checks (on the capture thread); True when a new bash was probed."""
        probed = False
        while True:
            try:
                check = self._done.get_nowait()
            except queue.Empty:
                return probed
            self._pending.discard(check.exe)
            try:
                verdict = self._attach(check)
            finally:
                check.pinned.close()
            if verdict is not None:
                self._remember(check.exe, verdict)
                probed = probed or verdict

    def keeps_line(self, pid: int) -> bool:
        """Readline probes on a shared libreadline also fire in python, gdb...: keep bash.
        A process gone before we look is given the benefit of the doubt: better an extra
        line than a lost bash command."""
        if not self._probes.has_library_probes:
            return True
        exe = f"/proc/{pid}/exe"
        return not os.path.exists(exe) or bashfind.looks_like_bash(exe)

    def _work(self) -> None:
        assert self._todo is not None
        while True:
            check = self._todo.get()
            try:
                check.found = self._inspect(check.pinned.path, check.pid)
            except Exception:  # a file that breaks the reader must not end the thread
                log.exception("cannot check %s for bash", check.name)
            self._done.put(check)

    def _attach(self, check: _Check) -> bool | None:
        """True: probed; False: not bash; None: bash whose readline could not be probed
        (try again at its next exec)."""
        if check.found is None:
            return False
        probe = self._probes.attach_bash(check.pinned.path, hint_pid=check.pid,
                                         name=check.name, found=check.found)
        return True if probe is not None else None

    def _remember(self, exe: ExeId | None, verdict: bool) -> None:
        if exe is None:
            return
        if len(self.verdicts) >= self.MAX_VERDICTS:
            self.verdicts.clear()
        self.verdicts[exe] = verdict

    def _pin_candidate(self, event: ExecEvent) -> _Check | None:
        """The file the record names, held open through the first /proc path that still
        leads to it; None when none does."""
        unreadable = False
        for path in _candidates(event):
            try:
                pinned = self._pin(path)
            except OSError as exc:
                if exc.errno not in _GONE:
                    unreadable = True  # e.g. EACCES on /proc/1/root in some sandboxes
                    log.debug("cannot check %s for bash: %s", path, exc)
                continue
            if event.exe is None or pinned.key == event.exe[:2]:
                return _Check(event.exe, pinned, path, event.who.pid)
            pinned.close()
        if unreadable:
            self._on_unreadable()
        return None


def _candidates(event: ExecEvent) -> Iterator[str]:
    """Paths that reach the file a process exec'd, from inside its mount namespace."""
    who = event.who
    yield f"/proc/{who.pid}/exe"
    filename = os.fsdecode(event.filename)
    if filename.startswith("/"):
        yield f"/proc/{who.pid}/root{filename}"
        yield f"/proc/{who.ppid}/root{filename}"
