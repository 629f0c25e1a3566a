"""glibc malloc tuning for a long-running agent (no-ops elsewhere).

Bulk bodies, gzip buffers and responses are allocated and freed every batch (megabytes
each). glibc raises its mmap threshold after the first large free, so later buffers come
from the heap and stay in the RSS. A fixed threshold keeps them mmapped: freed, returned.
"""

from __future__ import annotations

import contextlib
import ctypes
from typing import Any

M_MMAP_THRESHOLD = -3  # mallopt parameter, <malloc.h>
LARGE_BUFFER_BYTES = 256 << 10


def _glibc_call(name: str, *args: Any) -> None:
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tune
        getattr(ctypes.CDLL("libc.so.6"), name)(*args)


def keep_large_buffers_mmapped() -> None:
    _glibc_call("mallopt", M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES)


def release_free_heap() -> None:
    """Give freed heap pages back to the kernel (LLVM's compile-time heap: tens of MiB)."""
    _glibc_call("malloc_trim", 0)
