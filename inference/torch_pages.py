"""Map torch's read-only data into the process once, so that its vector math does not stall.

Measured on this project's machines (AMD EPYC, AVX-512; ``benchmarks/torch_pages.py``): in
a fresh process torch's float32 ``log1p`` took 8.5 ns per element and ``softplus`` 9.6;
with this module's call made, 0.8 and 1.5 (``expm1`` 8.5 -> 1.2, ``logsigmoid`` and
``binary_cross_entropy_with_logits`` 5-6x faster; ``exp``, ``tanh``, ``sigmoid`` unchanged).
Kernels compiled by inductor call the same functions and gain as much. ``perf annotate``
put the time on one instruction of SLEEF's vectorized ``log1p``: a masked load of a
special-case constant whose mask is almost always empty. A load with every lane masked off
raises no page fault, so the page that holds the constant is never mapped, and on these
processors such a load to an unmapped page takes a slow path every time. One ordinary read
of the page ends it (a single ``torch.lgamma`` call happens to); :func:`map_torch_constants`
maps all of ``libtorch_cpu``'s read-only data at once (about 67 MB of shared file pages, in
about 14 ms) with ``madvise(MADV_POPULATE_READ)`` (Linux 5.14 and later). It changes no
result: only which pages are in the process's page table.

``import inference`` calls it; a program that uses torch without this library can call it
too. Elsewhere than Linux, or where the kernel refuses, it does nothing.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

MADV_POPULATE_READ = 22  # linux/mman.h (5.14)
LIBRARY_PREFIX = "libtorch_cpu"
_mapped_bytes: int | None = None  # set by the first call


def read_only_segments(maps_text: str, prefix: str = LIBRARY_PREFIX) -> list[tuple[int, int]]:
    """``(start, end)`` addresses of the read-only, non-executable file mappings of the
    shared library whose file name starts with ``prefix``, from ``/proc/<pid>/maps`` text."""
    segments = []
    for line in maps_text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not Path(fields[5].strip()).name.startswith(prefix):
            continue
        if fields[1][:3] != "r--":  # data only: code pages are read by running them
            continue
        start, end = (int(value, 16) for value in fields[0].split("-"))
        segments.append((start, end))
    return segments


def map_torch_constants() -> int:
    """Map ``libtorch_cpu``'s read-only data into this process's page table (once per
    process). Returns the bytes mapped by this call: 0 on later calls, elsewhere than Linux,
    or where ``madvise`` refuses (kernels before 5.14)."""
    global _mapped_bytes
    if _mapped_bytes is not None:
        return 0
    _mapped_bytes = 0
    if not sys.platform.startswith("linux"):
        return 0
    try:
        maps_text = Path("/proc/self/maps").read_text()
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    madvise.restype = ctypes.c_int
    for start, end in read_only_segments(maps_text):
        if madvise(start, end - start, MADV_POPULATE_READ) == 0:
            _mapped_bytes += end - start
    return _mapped_bytes
