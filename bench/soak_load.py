"""bench.soak's load besides the loadgen's execs: a real interactive bash typing marked lines
under a pty, and marked namespace entries (unshare --uts, nsenter --uts), each at a steady
rate in its own thread.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Callable

from bench.loadgen import PROGRAM
from bench.soak_audit import Issued, bash_line, ns_marker

BASH = "/bin/bash"
STOP_TIMEOUT_S = 10.0


class Paced(threading.Thread):
    """Calls `step(n)` for n = 0, 1, ... at `rate` per second on a fixed schedule until
    stopped (a step more than a second late resumes the schedule instead of bursting)."""

    def __init__(self, name: str, rate: float, step: Callable[[int], None]) -> None:
        super().__init__(name=name, daemon=True)
        self._interval = 1.0 / rate
        self._step = step
        self._halt = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        number, due = 0, time.monotonic()
        try:
            while not self._halt.wait(max(0.0, due - time.monotonic())):
                self._step(number)
                number += 1
                due += self._interval
                if time.monotonic() - due > 1.0:
                    due = time.monotonic()
        except Exception as exc:  # reported in the result, not lost with the thread
            self.error = f"{type(exc).__name__}: {exc}"

    def stop(self) -> None:
        self._halt.set()
        self.join(STOP_TIMEOUT_S)


class BashTyper:
    """`bash -i` with a new pty as its controlling terminal (setsid --ctty); lines are
    written to the pty's master as a user would type them, its output is drained."""

    def __init__(self, issued: Issued, rate: float) -> None:
        self.issued = issued
        self.rate = rate
        self._master = -1
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._typist: Paced | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self) -> None:
        master, slave = os.openpty()
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TERM": "dumb", "PS1": "$ ",
               "HISTFILE": "", "HOME": "/tmp"}
        self._proc = subprocess.Popen(["setsid", "--ctty", BASH, "--norc", "--noprofile", "-i"],
                                      stdin=slave, stdout=slave, stderr=slave, env=env,
                                      close_fds=True)
        os.close(slave)
        self._master = master
        self._reader = threading.Thread(target=self._drain, name="bash-output", daemon=True)
        self._reader.start()

    def type(self, line: str) -> None:
        with self._lock:
            os.write(self._master, line.encode() + b"\n")

    def start_typing(self) -> None:
        self._typist = Paced("bash-typist", self.rate, self._type_marked)
        self._typist.start()

    def _type_marked(self, number: int) -> None:
        self.type(bash_line(self.issued.run, number))
        self.issued.bash_lines = number + 1

    def _drain(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self._master], [], [], 0.5)
                if ready and not os.read(self._master, 65536):
                    return
            except OSError:  # the master was closed, or bash exited (EIO)
                return

    def stop(self) -> str | None:
        """Stop typing, exit bash; the typist's error, if it had one."""
        error = None
        if self._typist is not None:
            self._typist.stop()
            error = self._typist.error
        if self._proc is not None:
            with contextlib.suppress(OSError):
                self.type("exit")
            try:
                self._proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        if self._master >= 0:
            os.close(self._master)
            self._master = -1
        return error


class NamespaceEntries:
    """Alternately `unshare --uts /bin/true MARK` and `nsenter --target T --uts /bin/true
    MARK` (T: a sleeping process in its own UTS namespace), `rate` entries per second."""

    def __init__(self, issued: Issued, rate: float, lifetime_s: float) -> None:
        self.issued = issued
        self.rate = rate
        self._lifetime_s = lifetime_s
        self._target: subprocess.Popen[bytes] | None = None
        # Absolute paths: a PATH lookup would add failed exec tries to the tool's events.
        self._unshare = shutil.which("unshare") or "unshare"
        self._nsenter = shutil.which("nsenter") or "nsenter"
        self._driver: Paced | None = None
        self.failures = 0

    @staticmethod
    def missing_tools() -> list[str]:
        return [t for t in ("unshare", "nsenter", "setsid") if shutil.which(t) is None]

    def start(self) -> None:
        # unshare without --fork execs sleep in place: the target is this very pid.
        self._target = subprocess.Popen([self._unshare, "--uts", "/bin/sleep",
                                         f"{self._lifetime_s}"],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        self._driver = Paced("namespace-entries", self.rate, self._enter)
        self._driver.start()

    def _enter(self, number: int) -> None:
        assert self._target is not None
        mark = ns_marker(self.issued.run, number)
        if number % 2 == 0:
            argv = [self._unshare, "--uts", PROGRAM, mark]
        else:
            argv = [self._nsenter, "--target", str(self._target.pid), "--uts", PROGRAM, mark]
        self.issued.ns_entries[number] = os.path.basename(argv[0])
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              check=False)
        if done.returncode != 0:
            self.failures += 1

    def stop(self) -> str | None:
        error = None
        if self._driver is not None:
            self._driver.stop()
            error = self._driver.error
        if self._target is not None:
            self._target.kill()
            self._target.wait(5)
        return error
