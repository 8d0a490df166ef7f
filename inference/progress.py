"""Progress bars of long calls: a call shows its bar once it has run for a second.

The estimators count the log weights they draw (particles times datapoints), AIS its
annealing steps, the local-guide fits their optimizer steps, the uses (completion,
super-resolution) their MAP steps and Markov chain sweeps. A call that ends within
:data:`DELAY_SECONDS` prints nothing, so tests and quick estimates stay quiet; the bar is
removed when the call ends (``leave=False``), and ``progress=False`` turns it off.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

# Seconds a call runs before its bar appears (tqdm's ``delay``).
DELAY_SECONDS = 1.0


def check_progress(progress) -> bool:
    """``progress`` when it is True or False, else ``TypeError`` saying that the keyword is
    the function's own: a model's keyword of that name cannot be passed through it (and
    ``progress=0`` or ``"no"`` would otherwise be read by truth value)."""
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {progress!r}: it is this "
                        "function's own keyword (its progress bar), so a model's keyword of "
                        "that name cannot be passed through it (bind it: lambda x: model(x, "
                        "progress=...))")
    return progress


def shows_bars(progress: bool) -> bool:
    """Whether a bar is shown: ``progress`` asked for, and a standard error stream to write
    it to (a process started with stderr closed, or ``pythonw``, has ``sys.stderr`` None; a
    stream closed or opened read-only by the program is as good as none: tqdm fails at its
    first write to either)."""
    stream = sys.stderr
    if not progress or stream is None:
        return False
    try:
        return not stream.closed and stream.writable()
    except (AttributeError, ValueError, OSError):  # a stand-in without those methods
        return hasattr(stream, "write")


def progress_bar(total: int, desc: str, progress: bool, unit: str = "it") -> tqdm:
    """A bar of ``total`` units, shown after :data:`DELAY_SECONDS` unless ``progress`` is
    False (or there is no stderr: :func:`shows_bars`); ``update(n)`` it as the work is done,
    and ``close()`` it (or use it in ``with``)."""
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit != "it",
                delay=DELAY_SECONDS, leave=False, disable=not shows_bars(progress))


def bar_range(count: int, desc: str, progress: bool):
    """``range(count)`` advancing a :func:`progress_bar` of ``count`` steps as it goes."""
    with progress_bar(count, desc, progress, "steps") as bar:
        for step in range(count):
            yield step
            bar.update()
