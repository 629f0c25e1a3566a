"""Build, load and attach the BPF programs; find bash binaries and probe their readline().

The C sources in bpf/ are concatenated and compiled by BCC with every kernel struct offset
passed in as a -D constant read from the kernel's BTF (collector/offsets.py). Only syscall
tracepoints, raw tracepoints and uprobes are used: kprobes, fentry and LSM hooks are not
available on every kernel we run on.
"""

from __future__ import annotations

import ctypes
import logging
import os
import resource
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from collector.capture import bashfind
from collector.capture.btf import Btf
from collector.capture.families import BASH, FAMILIES, Family, c_constants
from collector.capture.hostns import detect_host_namespaces
from collector.capture.malloc import release_compiler_pages, release_free_heap
from collector.capture.offsets import explain_missing, offsets_as_cflags, resolve_offsets
from collector.capture.settings import CaptureConfig

log = logging.getLogger(__name__)

# The capture loop's housekeeping (flushes, fsync, loss counts, heartbeats, the stop
# request) runs between polls: a poll hands records over for this long at most, however
# fast they keep coming (libbpf's own loop only ends when the ring buffer is empty).
POLL_BUDGET_S = 0.1
STOP_POLLING = -1  # a ring-buffer callback's answer that ends libbpf's poll
DRAIN_S = 2.0  # at stop: what the kernel wrote before, for this long at most


class ProbeError(RuntimeError):
    """The BPF programs could not be built, loaded or attached."""


def bpf_source(name: str) -> str:
    return resources.files("collector.bpf").joinpath(name).read_text()


def args_buffer_size(limit: int) -> int:
    """The argv buffer is the byte limit rounded up to a power of two (offsets are masked)."""
    size = 1
    while size < limit:
        size <<= 1
    return size


def cgroup_hierarchy(offsets: dict[str, int]) -> tuple[int, str]:
    """Which cgroup hierarchy to report: (-1, cgroup2 mount) on v2, else a v1 subsystem."""
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return -1, "/sys/fs/cgroup"
    for macro, name in (("CGRP_ID_MEMORY", "memory"), ("CGRP_ID_PIDS", "pids"),
                        ("CGRP_ID_CPU", "cpu")):
        mount = Path("/sys/fs/cgroup") / name
        if macro in offsets and mount.is_dir():
            return offsets[macro], str(mount)
    if Path("/sys/fs/cgroup/unified").is_dir():
        return -1, "/sys/fs/cgroup/unified"
    return -1, "/sys/fs/cgroup"


@dataclass
class ProgramSpec:
    text: str
    cflags: list[str]
    families: tuple[Family, ...]
    cgroup_mount: str
    constants: dict[str, int]  # every -D constant but the kernel offsets

    @property
    def family_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.families)


def enabled_families(capture: CaptureConfig) -> tuple[Family, ...]:
    return tuple(f for f in FAMILIES if getattr(capture, f.name))


def build_program(capture: CaptureConfig, btf_path: str = "/sys/kernel/btf/vmlinux") -> ProgramSpec:
    families = enabled_families(capture)
    if not families:
        raise ProbeError("capture: every probe family is disabled; nothing to do")
    report = resolve_offsets(Btf.load(btf_path))
    if not report.ok:
        missing = "; ".join(explain_missing(report, required_only=True))
        raise ProbeError(f"kernel BTF lacks members the probes need: {missing}")
    subsys, mount = cgroup_hierarchy(report.values)
    constants = {
        "SELF_TGID": os.getpid(),
        "HOST_UTS_INUM": detect_host_namespaces().inodes.get("uts", 0),
        "CGROUP_SUBSYS": subsys,
        "RINGBUF_PAGES": capture.ringbuf_kib * 1024 // resource.getpagesize(),
        "WAKEUP_EVENTS": capture.wakeup_batch,
        "ARGS_LIMIT": capture.max_args_bytes,
        "ARGS_BUF": args_buffer_size(capture.max_args_bytes),
        "MAX_ARGS": capture.max_args,
        "LINE_MAX_BYTES": capture.max_bash_line,
        **c_constants(),
        **{f"FAMILY_{f.macro}": int(f in families) for f in FAMILIES},
    }
    cflags = offsets_as_cflags(report.values) + [f"-D{k}={v}" for k, v in constants.items()]
    cflags.append("-Wno-macro-redefined")
    text = "\n".join([bpf_source("common.h")] + [bpf_source(f.source) for f in families])
    return ProgramSpec(text, cflags, families, mount, constants)


def check_attached(families: tuple[Family, ...], attached: set[bytes]) -> None:
    """The programs must attach to exactly the tracepoints the families table declares
    (those are what `check` verifies before a start)."""
    declared = {tp.bcc_name for f in families for tp in f.tracepoints}
    if attached != declared:
        extra = sorted(n.decode() for n in attached - declared)
        missing = sorted(n.decode() for n in declared - attached)
        raise ProbeError(f"BPF programs and the families table disagree on tracepoints: "
                         f"attached but not declared {extra}, declared but not attached "
                         f"{missing}")


@dataclass
class BashProbe:
    path: str
    target: str  # the file the uretprobe sits on: the bash binary or its libreadline
    library: bool


@dataclass
class Probes:
    """The loaded BPF object plus the bash binaries it watches."""

    capture: CaptureConfig
    spec: ProgramSpec | None = None
    bpf: Any = None
    # The files readline() is probed in, by (st_dev, st_ino): bash, or its libreadline.
    bash_probes: dict[tuple[int, int], BashProbe] = field(default_factory=dict)
    load_seconds: float = 0.0
    # Told (family, target, error) when a probe cannot be attached (it is also logged).
    on_attach_failure: Callable[[str, str, str], None] | None = None
    _handled: int = 0
    _poll_budget: float = 0.0
    _poll_deadline: float = 0.0
    _poll_stopped: bool = False

    def load(self) -> None:
        started = time.monotonic()
        self.spec = build_program(self.capture)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bash-find") as pool:
            # Reading bash's symbols (Python) overlaps the compile (C, without the GIL).
            bash_targets = (pool.submit(bashfind.initial_bash_targets, self.capture.bash_paths)
                            if BASH in self.spec.families else None)
            self._compile_and_load()
            for path, found in bash_targets.result() if bash_targets else ():
                if found is not None:
                    self.attach_bash(path, found=found)
        self.load_seconds = time.monotonic() - started
        release_free_heap()  # LLVM's compile-time heap: tens of MiB
        release_compiler_pages()  # and its code: about 120 MiB of clean file pages

    def _compile_and_load(self) -> None:
        from bcc import BPF  # Debian's python3-bpfcc; imported late so `check` can explain

        assert self.spec is not None
        try:
            self.bpf = BPF(text=self.spec.text.encode(), cflags=self.spec.cflags)
        except Exception as exc:  # BCC raises bare Exception on compile/load errors
            raise ProbeError(f"BCC could not compile or load the probes: {exc}") from exc
        try:
            check_attached(self.spec.families,
                           set(self.bpf.tracepoint_fds) | set(self.bpf.raw_tracepoint_fds))
        except ProbeError:
            self.close()
            raise

    @property
    def families(self) -> tuple[str, ...]:
        """Names of the enabled families (their config switches)."""
        return self.spec.family_names if self.spec else ()

    @property
    def has_library_probes(self) -> bool:
        return any(p.library for p in self.bash_probes.values())

    def open(self, on_record: Callable[[bytes], None]) -> None:
        def callback(_ctx: Any, data: Any, size: int) -> int:
            on_record(ctypes.string_at(data, size))
            self._handled += 1
            now = time.monotonic()
            if not self._poll_deadline:  # the budget runs from the first record, not the wait
                self._poll_deadline = now + self._poll_budget
            if now < self._poll_deadline:
                return 0
            # libbpf consumes for as long as records keep coming; a negative answer ends
            # the poll after this record (which counts as consumed).
            self._poll_stopped = True
            return STOP_POLLING

        self._callback = callback  # keep a reference: BCC holds only a C pointer
        self.bpf[b"events"].open_ring_buffer(callback)

    def poll(self, timeout_ms: int, budget_s: float = POLL_BUDGET_S) -> int:
        """Wait up to timeout_ms for records and handle them for about budget_s at most;
        how many were handled."""
        if self._poll_stopped:  # the last poll left records behind: no waiting for them
            timeout_ms = 0
        self._handled = 0
        self._poll_budget = budget_s
        self._poll_deadline = 0.0
        self._poll_stopped = False
        self.bpf.ring_buffer_poll(timeout_ms)
        # Records written without a wake-up are only seen by an explicit consume (within
        # the same budget; when it ran out, the next poll comes at once).
        if not self._poll_stopped:
            self.bpf.ring_buffer_consume()
        return self._handled

    def drain(self, within_s: float = DRAIN_S) -> int:
        """Handle what the ring buffer holds now (at stop), for within_s at most."""
        deadline = time.monotonic() + within_s
        handled = 0
        while time.monotonic() < deadline:
            got = self.poll(0, max(0.0, deadline - time.monotonic()))
            if not got:
                break
            handled += got
        return handled

    def lost_counts(self) -> dict[str, int]:
        table = self.bpf[b"lost"]
        return {f.label: int(sum(table[ctypes.c_int(f.lost_index)])) for f in FAMILIES}

    def attach_bash(self, path: str, hint_pid: int | None = None, name: str | None = None,
                    found: bashfind.ReadlineTarget | None = None) -> BashProbe | None:
        """Probe readline() of a bash binary (or of the libreadline it links); `name` is
        how logs call a bash reached through a held file descriptor (/proc/self/fd/N);
        `found` is its readline target when already worked out (off this thread)."""
        found = found or bashfind.readline_target(path, hint_pid)
        if found is None:
            return None
        key, target, library = found
        if key in self.bash_probes:
            return self.bash_probes[key]
        try:
            self.bpf.attach_uretprobe(
                name=target.encode(), sym=b"readline", fn_name=b"on_readline_return"
            )
        except Exception as exc:
            log.warning("cannot probe readline in %s: %s", target, exc)
            if self.on_attach_failure is not None:
                self.on_attach_failure(BASH.name, target, str(exc))
            return None
        shown = name or path
        probe = BashProbe(path=shown, target=target if library else shown, library=library)
        self.bash_probes[key] = probe
        log.info("probing readline() in %s%s", probe.target, " (libreadline)" if library else "")
        return probe

    def close(self) -> None:
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None
