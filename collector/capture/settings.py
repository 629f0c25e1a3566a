"""The `capture:` section of the configuration: which probe families run, and their bounds.

Types and ranges are declared here (msgspec checks them when the file is loaded); checks
that involve more than one value run in ``__post_init__``.
"""

from typing import Annotated

import msgspec
from msgspec import Meta

NonEmptyPath = Annotated[str, Meta(min_length=1)]


class CaptureConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    exec: bool = True
    namespaces: bool = True
    bash: bool = True
    # New processes (fork/clone without CLONE_THREAD) and process ends (the last thread's
    # exit): the process tree for Kibana's Session View. Costs: see README, Performance.
    fork: bool = True
    exit: bool = True
    # Live processes the process table keeps (entity ids, relatives, sessions); at the
    # bound the one not exec'd for the longest time is dropped (counted) and learned again
    # from its next record. About 1 KiB each.
    max_processes: Annotated[int, Meta(ge=1024, le=4_000_000)] = 100_000
    # Argument capture bounds; hitting either marks the event truncated.
    max_args: Annotated[int, Meta(ge=1, le=1024)] = 128
    # Each pending exec holds 2x the (power-of-two) bound in a BPF map slot.
    max_args_bytes: Annotated[int, Meta(ge=256, le=1 << 17)] = 16384
    # Longest bash line kept; the bash record is built in a per-CPU slot (32 KiB at most).
    max_bash_line: Annotated[int, Meta(ge=16, le=1 << 14)] = 4096
    # Ring buffer size in KiB (a power of two, at least one page).
    ringbuf_kib: Annotated[int, Meta(ge=4, le=1 << 20)] = 16384
    # Extra bash binaries (or libreadline.so paths) to probe at start-up.
    bash_paths: tuple[NonEmptyPath, ...] = ()
    # Watch exec events for bash binaries not yet probed and attach to them.
    follow_new_bash: bool = True
    # User space is woken after this many events (or by the poll timer).
    wakeup_batch: Annotated[int, Meta(ge=1, le=1 << 16)] = 64
    poll_interval_ms: Annotated[int, Meta(ge=1, le=10_000)] = 100

    def __post_init__(self) -> None:
        if self.ringbuf_kib & (self.ringbuf_kib - 1):
            raise ValueError(f"ringbuf_kib: {self.ringbuf_kib} is not a power of two")
