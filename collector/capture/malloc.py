"""Memory tuning for a long-running agent (no-ops elsewhere).

Bulk bodies, gzip buffers and responses are allocated and freed every batch (megabytes
each). glibc raises its mmap threshold after the first large free, so later buffers come
from the heap and stay in the RSS. A fixed threshold keeps them mmapped: freed, returned.

Compiling the probes touches about 120 MiB of BCC's and LLVM's code, which then stays
resident though it is not run again (at most a few pages, to attach a uprobe): those
pages are handed back to the kernel with MADV_PAGEOUT (5.4+). They are clean file pages
of read-only mappings: nothing is lost, a page used again is read back in.
"""

from __future__ import annotations

import contextlib
import ctypes
from pathlib import Path
from typing import Any

M_MMAP_THRESHOLD = -3  # mallopt parameter, <malloc.h>
LARGE_BUFFER_BYTES = 256 << 10
MADV_PAGEOUT = 21  # <linux/mman.h>, 5.4+
COMPILER_LIBRARIES = ("libbcc", "libLLVM", "libclang")


def _glibc_call(name: str, *args: Any) -> None:
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tune
        getattr(ctypes.CDLL("libc.so.6"), name)(*args)


def keep_large_buffers_mmapped() -> None:
    _glibc_call("mallopt", M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES)


def release_free_heap() -> None:
    """Give freed heap pages back to the kernel (LLVM's compile-time heap: tens of MiB)."""
    _glibc_call("malloc_trim", 0)


def compiler_mappings(maps: str, libraries: tuple[str, ...] = COMPILER_LIBRARIES
                      ) -> list[tuple[int, int]]:
    """(start, length) of the read-only mappings of the compiler's libraries in a
    /proc/PID/maps text."""
    found = []
    for line in maps.splitlines():
        fields = line.split()
        if len(fields) < 6 or "w" in fields[1]:
            continue
        if not any(Path(fields[5]).name.startswith(lib) for lib in libraries):
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        found.append((start, end - start))
    return found


def release_compiler_pages() -> int:
    """Page out the compiler's code once the probes are loaded; the bytes advised."""
    try:
        madvise = ctypes.CDLL("libc.so.6", use_errno=True).madvise
        maps = Path("/proc/self/maps").read_text()
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    advised = 0
    for start, length in compiler_mappings(maps):
        if madvise(start, length, MADV_PAGEOUT) == 0:  # EINVAL before 5.4: keep them
            advised += length
    return advised
