"""Local sinks: every byte of every document reaches the stream.

A collector's stdout is often an unbuffered raw file (PYTHONUNBUFFERED=1 makes
sys.stdout.buffer a FileIO), and a raw write to a full pipe that a signal interrupts
returns a short count: the rest must still be written.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from collector.delivery.sinks import StdoutSink


@pytest.fixture
def sigterm_ignored_by_handler() -> Iterator[None]:
    """A handler that only notes the signal, like the collector's own SIGTERM handler."""
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _drain_after(fd: int, delay_s: float, into: bytearray) -> threading.Thread:
    def run() -> None:
        time.sleep(delay_s)  # the writer blocks on the full pipe meanwhile
        while chunk := os.read(fd, 1 << 16):
            into.extend(chunk)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _interrupt_main_thread_after(delay_s: float) -> threading.Thread:
    main = threading.main_thread().ident
    assert main is not None

    def run() -> None:
        time.sleep(delay_s)
        signal.pthread_kill(main, signal.SIGTERM)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_signal_during_a_blocked_raw_write_loses_nothing(
    sigterm_ignored_by_handler: None,
) -> None:
    read_fd, write_fd = os.pipe()
    received = bytearray()
    reader = _drain_after(read_fd, 0.5, received)
    interrupter = _interrupt_main_thread_after(0.2)
    lines = [b'{"seq":%d,"pad":"%s"}' % (i, b"x" * (i % 2000)) for i in range(3000)]
    with open(write_fd, "wb", buffering=0) as raw:  # what PYTHONUNBUFFERED=1 gives
        sink = StdoutSink(raw)
        for start in range(0, len(lines), 250):  # flushes far above the 64 KiB pipe
            for line in lines[start:start + 250]:
                sink.write(line)
            sink.flush()
        sink.close()
    interrupter.join()
    reader.join()
    os.close(read_fd)
    assert bytes(received) == b"".join(line + b"\n" for line in lines)
