"""glibc malloc tuning for a long-running agent (no-ops elsewhere).

Bulk bodies, gzip buffers and responses are allocated and freed every batch (megabytes
each). glibc raises its mmap threshold after the first large free, so later buffers come
from the heap and stay in the RSS. A fixed threshold keeps them mmapped: freed, returned.
"""

from __future__ import annotations

import contextlib
import ctypes

M_MMAP_THRESHOLD = -3  # mallopt parameter, <malloc.h>
LARGE_BUFFER_BYTES = 256 << 10


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def keep_large_buffers_mmapped() -> None:
    libc = _libc()
    with contextlib.suppress(AttributeError):
        if libc is not None:
            libc.mallopt(M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES)


def release_free_heap() -> None:
    """Give freed heap pages back to the kernel (LLVM's compile-time heap: tens of MiB)."""
    libc = _libc()
    with contextlib.suppress(AttributeError):
        if libc is not None:
            libc.malloc_trim(0)
