"""Argument checks shared by the estimators of issue 5: say what was expected."""

from __future__ import annotations


def check_int(value, name: str, minimum: int = 1) -> None:
    """Raise ``ValueError`` unless ``value`` is an ``int`` (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
