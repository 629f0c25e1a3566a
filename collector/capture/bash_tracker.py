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
from collections.abc import Callable, Iterator
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

    def attach_bash(self, path: str, hint_pid: int | None = None,
                    name: str | None = None) -> object | None: ...


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


class BashTracker:
    """Decides, once per executable, whether it is bash, and has new ones probed."""

    # Verdicts kept at most (a build farm runs ever new binaries); past it, start over.
    MAX_VERDICTS = 16384

    def __init__(self, probes: BashProbes, follow_new: bool = True,
                 on_unreadable: Callable[[], None] = lambda: None,
                 pin: Callable[[str], PinnedFile] = PinnedFile,
                 looks_like_bash: Callable[[str], bool] = bashfind.looks_like_bash) -> None:
        self._probes = probes
        self._follow_new = follow_new
        self._on_unreadable = on_unreadable  # counts execs whose file could not be checked
        self._pin = pin
        self._looks_like_bash = looks_like_bash
        # Executables decided on, by (dev, inode, i_generation): True when bash is probed
        # there. The generation, because a freed inode number soon names another file.
        self.verdicts: dict[ExeId, bool] = {}

    def on_exec(self, event: ExecEvent) -> bool:
        """Look at a successful exec; True when it ran a bash not seen before (now probed)."""
        exe = event.exe
        if not self._follow_new or (exe is not None and exe in self.verdicts):
            return False
        is_bash = self._decide(event)
        if is_bash is not None and exe is not None:
            if len(self.verdicts) >= self.MAX_VERDICTS:
                self.verdicts.clear()
            self.verdicts[exe] = is_bash
        return bool(is_bash)

    def keeps_line(self, pid: int) -> bool:
        """Readline probes on a shared libreadline also fire in python, gdb...: keep bash.
        A process gone before we look is given the benefit of the doubt: better an extra
        line than a lost bash command."""
        if not self._probes.has_library_probes:
            return True
        exe = f"/proc/{pid}/exe"
        return not os.path.exists(exe) or self._looks_like_bash(exe)

    def _decide(self, event: ExecEvent) -> bool | None:
        """Whether the file the record names is bash (now probed); None when no path
        through /proc still leads to it, or its readline could not be probed (try again
        at its next exec)."""
        unreadable = False
        for path in _candidates(event):
            try:
                pinned = self._pin(path)
            except OSError as exc:
                if exc.errno not in _GONE:
                    unreadable = True  # e.g. EACCES on /proc/1/root in some sandboxes
                    log.debug("cannot check %s for bash: %s", path, exc)
                continue
            try:
                if event.exe is None or pinned.key == event.exe[:2]:
                    return self._check(pinned, path, event.who.pid)
            finally:
                pinned.close()
        if unreadable:
            self._on_unreadable()
        return None

    def _check(self, pinned: PinnedFile, name: str, pid: int) -> bool | None:
        if pinned.key in self._probes.bash_probes:
            return True
        if not self._looks_like_bash(pinned.path):
            return False
        probe = self._probes.attach_bash(pinned.path, hint_pid=pid, name=name)
        return True if probe is not None else None  # not probed: try at its next exec


def _candidates(event: ExecEvent) -> Iterator[str]:
    """Paths that reach the file a process exec'd, from inside its mount namespace."""
    who = event.who
    yield f"/proc/{who.pid}/exe"
    filename = os.fsdecode(event.filename)
    if filename.startswith("/"):
        yield f"/proc/{who.pid}/root{filename}"
        yield f"/proc/{who.ppid}/root{filename}"
