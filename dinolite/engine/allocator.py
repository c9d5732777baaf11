"""glibc's allocator set for a training process: big blocks reused instead of mapped and unmapped every step.

By default glibc serves each block above a (moving) threshold with its own ``mmap`` and gives freed memory at
the top of the heap back to the system. A CPU training step allocates and frees the same few-hundred-KB
activation blocks every step, so the kernel maps and zeroes them again each time: on the quickstart that was
1.3 million page faults in 200 steps and 20 % of the step once the start's evaluations had moved the
threshold (docs/performance.md, "The allocator"). Raising the thresholds keeps the blocks in the heap; the
process keeps up to ``TRIM`` bytes of freed memory instead of returning it at once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's malloc.h
MMAP = 32 << 20  # glibc's largest allowed mmap threshold on 64-bit systems (HEAP_MAX_SIZE / 2)
TRIM = 1 << 30
TOP_PAD = 1 << 30

_done: bool | None = None


def keep_blocks() -> bool:
    """Set the thresholds once per process (glibc on Linux only); True when they are set. ``DINOLITE_MALLOC=default``
    in the environment leaves glibc's defaults (benchmarks/allocator.py compares the two)."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux") or os.environ.get("DINOLITE_MALLOC") == "default":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt: nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = all(mallopt(p, v) == 1 for p, v in ((M_MMAP_THRESHOLD, MMAP), (M_TRIM_THRESHOLD, TRIM),
                                                 (M_TOP_PAD, TOP_PAD)))
    return _done
