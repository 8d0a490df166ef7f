"""argparse types that refuse nonsensical sizes at the command line (docs/reliability.md).

``parser.add_argument("--latent-dim", type=positive_int)`` makes ``--latent-dim 0`` exit with
argparse's usage message and ``argument --latent-dim: must be a positive integer, got '0'``
instead of building a degenerate network or training nothing.
"""

from __future__ import annotations

import argparse
import math


def _integer(text: str, minimum: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (sizes, counts of particles, samples, repeats)."""
    return _integer(text, 1, "a positive integer")


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (epochs, where 0 skips training; counts where 0 means all)."""
    return _integer(text, 0, "an integer >= 0")


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates, scales)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite positive number, got {text!r}")
    return value
