"""A plain BCC exec tracer, the reference point for what a minimal eBPF tracer costs.

    python -m bench.bcc_tracer [--pages N]

Syscall tracepoints only (enter: copy up to 20 argv strings into a pending map; exit: add
the return value and send the record through a perf buffer), and only tracepoint arguments
and helper calls: no kernel struct is read, so no offsets or headers are needed. User space
prints one line per exec on stdout (``pid comm retval args...``) and ``LOST n`` when the perf
buffer overflowed. "READY" goes to stderr once the probes are attached.
"""

from __future__ import annotations

import argparse
import ctypes
import signal
import sys
from typing import Any

ARG_SLOTS = 20
ARG_LEN = 128

BPF_PROGRAM = r"""
#define ARG_SLOTS %(slots)d
#define ARG_LEN %(arglen)d

struct exec_record {
    u32 pid;
    u32 tid;
    s32 retval;
    u32 argc;
    char comm[16];
    char args[ARG_SLOTS][ARG_LEN];
};

BPF_PERCPU_ARRAY(scratch, struct exec_record, 1);
BPF_HASH(pending, u64, struct exec_record, 8192);
BPF_PERF_OUTPUT(events);

static int remember_args(const char *const *argv)
{
    u32 zero = 0;
    struct exec_record *rec = scratch.lookup(&zero);
    if (rec == NULL)
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    rec->pid = id >> 32;
    rec->tid = (u32)id;
    rec->retval = 0;
    rec->argc = 0;
    bpf_get_current_comm(&rec->comm, sizeof(rec->comm));
#pragma unroll
    for (int i = 0; i < ARG_SLOTS; i++) {
        const char *arg = NULL;
        if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) != 0 || arg == NULL)
            break;
        bpf_probe_read_user_str(rec->args[i], ARG_LEN, arg);
        rec->argc = i + 1;
    }
    pending.update(&id, rec);
    return 0;
}

static int send_record(void *ctx, long ret)
{
    u64 id = bpf_get_current_pid_tgid();
    struct exec_record *rec = pending.lookup(&id);
    if (rec == NULL)
        return 0;
    rec->retval = ret;
    events.perf_submit(ctx, rec, sizeof(*rec));
    pending.delete(&id);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_execve)
{
    return remember_args((const char *const *)args->argv);
}

TRACEPOINT_PROBE(syscalls, sys_enter_execveat)
{
    return remember_args((const char *const *)args->argv);
}

TRACEPOINT_PROBE(syscalls, sys_exit_execve)
{
    return send_record(args, args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_exit_execveat)
{
    return send_record(args, args->ret);
}
"""


class ExecRecord(ctypes.Structure):
    """struct exec_record (BCC cannot build a ctypes type for the 2-D args array)."""

    _fields_ = (
        ("pid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("retval", ctypes.c_int32),
        ("argc", ctypes.c_uint32),
        ("comm", ctypes.c_char * 16),
        ("args", (ctypes.c_char * ARG_LEN) * ARG_SLOTS),
    )


class Printer:
    """Turns perf buffer records into output lines."""

    def __init__(self) -> None:
        self.lost = 0

    def on_event(self, _cpu: int, data: Any, _size: int) -> None:
        rec = ctypes.cast(data, ctypes.POINTER(ExecRecord)).contents
        args = [rec.args[i].value.decode("utf-8", "replace")
                for i in range(min(rec.argc, ARG_SLOTS))]
        comm = rec.comm.decode("utf-8", "replace")
        sys.stdout.write(f"{rec.pid} {comm} {rec.retval} {' '.join(args)}\n")

    def on_lost(self, count: int) -> None:
        self.lost += count
        sys.stdout.write(f"LOST {count}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=64, help="perf buffer pages per CPU")
    options = parser.parse_args()
    from bcc import BPF  # Debian's python3-bpfcc

    bpf = BPF(text=BPF_PROGRAM % {"slots": ARG_SLOTS, "arglen": ARG_LEN})
    printer = Printer()
    bpf["events"].open_perf_buffer(printer.on_event, page_cnt=options.pages,
                                   lost_cb=printer.on_lost)
    stopping: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    print("READY", file=sys.stderr, flush=True)
    while not stopping:
        bpf.perf_buffer_poll(timeout=100)
        sys.stdout.flush()
    bpf.perf_buffer_poll(timeout=0)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
