"""Keep freed large buffers in the process's heap (glibc), for file transfers.

Every chunk of a transfer (256 KiB) passes through several Python buffers on each side:
the socket read, paho's packet, the message's payload. glibc's malloc serves blocks above
its mmap threshold (128 KiB by default, raised only as such blocks are freed) with fresh
``mmap`` calls, and returns freed heap memory above its trim threshold to the kernel at
once: each chunk then costs page faults and the kernel zeroing fresh pages several times
over, which on loopback takes more time than moving the bytes. Raising both thresholds, and
padding the heap's growth, lets those buffers be reused from the heap instead (measured by
``benchmarks/artifacts.py``). The price: a process keeps up to the trim threshold of freed
memory instead of giving it back.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
"""mallopt's parameter numbers (malloc.h)."""

MMAP_THRESHOLD_BYTES = 32 << 20
"""Blocks above this still get their own mapping (glibc's largest allowed threshold)."""

TRIM_THRESHOLD_BYTES = 128 << 20
"""Freed memory at the heap's top is kept up to this much."""

TOP_PAD_BYTES = 64 << 20
"""The heap grows by this much more than asked, so it grows (``brk``) rarely."""


def keep_large_buffers() -> bool:
    """Tune glibc's malloc as above; False where there is no glibc (nothing changes)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    with contextlib.suppress(OSError, AttributeError):
        mallopt = ctypes.CDLL(name).mallopt
        return all(mallopt(param, value) == 1 for param, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
            (M_TOP_PAD, TOP_PAD_BYTES)))
    return False
