"""The exec load generators: bench/loadgen.c (compiled at run time) and a Python one.

Both spawn /bin/true from WORKERS processes for a fixed time with argv
``[/bin/true, MARKER, ...]``; the marker identifies this run's execs in every tracer's output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

C_SOURCE = Path(__file__).with_name("loadgen.c")
PROGRAM = "/bin/true"


@dataclass(frozen=True)
class Load:
    """One load shape: how many argv entries (marker included) of how many bytes."""

    name: str
    workers: int
    nargs: int
    arg_bytes: int


@dataclass(frozen=True)
class LoadResult:
    execs: int
    failures: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        return self.execs / self.elapsed_s if self.elapsed_s > 0 else 0.0


def new_marker() -> str:
    return f"acb{uuid.uuid4().hex[:12]}"


def build_c_loadgen(workdir: Path) -> Path:
    """Compile loadgen.c into workdir; RuntimeError with the reason when it cannot."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise RuntimeError("no C compiler (apt-get install -y gcc)")
    binary = workdir / "loadgen"
    proc = subprocess.run([gcc, "-O2", "-Wall", "-o", str(binary), str(C_SOURCE)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"gcc failed: {proc.stderr.strip()}")
    return binary


class CLoadgen:
    kind = "c"

    def __init__(self, binary: Path) -> None:
        self.binary = binary

    def run(self, load: Load, seconds: float, marker: str) -> LoadResult:
        return self.finish(self.start(load, seconds, marker), seconds)

    def start(self, load: Load, seconds: float, marker: str, rate: float = 0.0,
              numbered: bool = False) -> subprocess.Popen[str]:
        """The load in the background. rate > 0: paced to that many execs/s in all;
        numbered: each exec's marker is MARKER-N (N = 0, 1, ... across the workers)."""
        env = {"ACB_MARKER": marker, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        if numbered:
            env["ACB_NUMBERED"] = "1"
        argv = [str(self.binary), f"{seconds}", str(load.workers), str(load.nargs),
                str(load.arg_bytes), f"{rate}"]
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    @staticmethod
    def finish(proc: subprocess.Popen[str], seconds: float) -> LoadResult:
        out, err = proc.communicate(timeout=seconds + 60)
        if proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, proc.args, out, err)
        execs, failures, elapsed = out.split()
        return LoadResult(int(execs), int(failures), float(elapsed))


class PythonLoadgen:
    """The same load from Python (os.posix_spawn), one interpreter per worker."""

    kind = "python"

    def run(self, load: Load, seconds: float, marker: str) -> LoadResult:
        argv = [sys.executable, "-m", "bench.loadgen", f"{seconds}", str(load.nargs),
                str(load.arg_bytes), marker]
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": root}
        started = time.monotonic()
        procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
                 for _ in range(load.workers)]
        execs = failures = 0
        for proc in procs:
            out, _ = proc.communicate(timeout=seconds + 60)
            done, failed = out.split()
            execs += int(done)
            failures += int(failed)
        return LoadResult(execs, failures, time.monotonic() - started)


def python_worker(seconds: float, nargs: int, arg_bytes: int, marker: str) -> tuple[int, int]:
    extra = [(f"py-a{i}-" + "x" * arg_bytes)[:arg_bytes] for i in range(2, nargs)]
    argv = [PROGRAM, marker, *extra]
    deadline = time.monotonic() + seconds
    execs = failures = 0
    while time.monotonic() < deadline:
        pid = os.posix_spawn(PROGRAM, argv, {})
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) == 0:
            execs += 1
        else:
            failures += 1
    return execs, failures


if __name__ == "__main__":
    secs, n, size, mark = sys.argv[1:5]
    done, failed = python_worker(float(secs), int(n), int(size), mark)
    print(done, failed)
