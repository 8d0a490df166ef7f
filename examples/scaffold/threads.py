"""CPU thread defaults for example runs on shared machines (never set by the library itself).

``benchmarks/under_load.py`` measured what the demo VAE's epoch costs when other CPU-bound
processes share the cores (docs/performance.md, "Under load"): torch's default of one
intra-op thread per core is fine on an idle machine, but when the cores are already busy its
OpenMP team waits on threads that are not scheduled: on a machine at load 7-9 an epoch took
3.3 s with torch's default 2 threads against 0.30 s with one (11x), 20-26x with 2-4 more
busy processes; with ``OMP_WAIT_POLICY=PASSIVE`` two threads took 0.36 s. So an example run
uses all cores only when the load average leaves them idle, one thread otherwise; an explicit
``--threads`` wins. The passive wait policy is not set: it is 2.5x slower on a quiet
machine (docs/performance.md). ``OMP_NUM_THREADS`` set to a positive count counts as
an explicit choice too (a job scheduler's, or the user's on a shared machine).

This module imports torch only inside :func:`configure_threads`.
"""

from __future__ import annotations

import math
import os


def default_threads(cores: int | None = None, load: float | None = None) -> int:
    """Threads that the machine has idle: ``floor(cores - load)``, between 1 and ``cores``.

    Args:
        cores: logical CPUs this process may use (None: its CPU affinity, else
            ``os.cpu_count()``).
        load: the 1-minute load average (None: ``os.getloadavg()[0]``; 0 where unknown).
    """
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
    if cores < 1:
        raise ValueError(f"cores must be at least 1, got {cores}")
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    if load < 0 or math.isnan(load):
        raise ValueError(f"load must be a non-negative number, got {load}")
    return max(1, min(cores, math.floor(cores - load)))


def threads_from_environment() -> int | None:
    """``OMP_NUM_THREADS`` when it holds a positive count, else None (unset, 0 or not a
    number: OpenMP ignores those too)."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads for a run: ``threads`` when given (positive), else
    ``OMP_NUM_THREADS`` when set (:func:`threads_from_environment`), else
    :func:`default_threads`. Returns the number set.

    Call it from the run set-up (``scaffold.runs.start_run``), never from the library.
    """
    import torch

    if threads is not None and threads < 0:
        raise ValueError(f"threads must be positive (or 0/None for the default), got {threads}")
    chosen = threads or threads_from_environment() or default_threads()
    torch.set_num_threads(chosen)
    return chosen
