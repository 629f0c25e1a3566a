"""Memory hand-back after the probes are compiled (collector/capture/malloc.py)."""

from __future__ import annotations

from collector.capture.malloc import compiler_mappings

MAPS = """\
7f0000000000-7f0000100000 r--p 00000000 fe:00 1 /usr/lib/x86_64-linux-gnu/libbcc.so.0.26.0
7f0000100000-7f0004000000 r-xp 00100000 fe:00 1 /usr/lib/x86_64-linux-gnu/libbcc.so.0.26.0
7f0004000000-7f0004200000 rw-p 04000000 fe:00 1 /usr/lib/x86_64-linux-gnu/libbcc.so.0.26.0
7f0005000000-7f0005800000 r-xp 00000000 fe:00 2 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
7f0006000000-7f0006100000 r-xp 00000000 fe:00 3 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0007000000-7f0007001000 rw-p 00000000 00:00 0
"""


def test_only_read_only_mappings_of_the_compiler_are_paged_out() -> None:
    assert compiler_mappings(MAPS) == [
        (0x7F0000000000, 0x100000),  # libbcc r--p
        (0x7F0000100000, 0x3F00000),  # libbcc r-xp
        (0x7F0005000000, 0x800000),  # libLLVM r-xp
    ]  # libbcc's rw-p data, libc and anonymous memory are left alone
