"""Keep freed memory in the process instead of handing it back to the system (glibc).

``benchmarks/peers.py`` found (docs/performance.md, "Evidence and the allocator") that on
Linux most of the gap between ``iwae_bound`` and the hand-written IWAE at K = 5000 was page
faults, not arithmetic. glibc's ``malloc`` serves blocks of megabytes with fresh pages and
gives freed ones back to the kernel when enough is free at the top of its heap. Each chunk
of particles then touches its ``[chunk, batch, 784]`` buffers anew: about 150,000 minor
faults per estimate against 14,000 for the hand-written loop, whose allocation order
happens to keep its memory. With trimming off and a fixed mmap threshold neither side
faults, and ``iwae_bound`` ran at 1.00x the hand-written estimator (1.09x without; one core,
``benchmarks/results/peers_evidence_*.json``). PyTorch's CPU tuning guide suggests jemalloc
or tcmalloc (``LD_PRELOAD``) for the same reason; this needs neither. The price: the process
keeps up to 1 GiB of freed memory as its own instead of returning it.

A process-wide setting: call it from a run's set-up (``scaffold.runs.start_run``), never
from the library.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest; blocks below come from the heap
TRIM_THRESHOLD_BYTES = 1 << 30  # free memory kept at the top of the heap before trimming


def retain_freed_memory() -> bool:
    """Ask glibc to keep up to 1 GiB of freed memory and to serve blocks under 32 MiB from
    its heap (``mallopt``). Returns whether it applied (False on other C libraries)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
                and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
