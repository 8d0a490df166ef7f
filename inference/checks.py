"""Argument checks shared by the public entry points: say which argument and what was expected."""

from __future__ import annotations

import math
import numbers

import torch


def check_int(value, name: str, minimum: int = 1) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer (not a bool, not a float such as
    2.0) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")


def check_chain_length(num_steps, burn_in, minimum: int = 1) -> int:
    """Check a Markov chain's ``num_steps`` (an integer ``>= minimum``) and ``burn_in`` (in
    ``0 .. num_steps - 1``; None: half the steps); returns the burn-in."""
    check_int(num_steps, "num_steps", minimum)
    burn_in = num_steps // 2 if burn_in is None else burn_in
    if not 0 <= burn_in < num_steps:
        raise ValueError(f"burn_in must lie in 0..{num_steps - 1}, got {burn_in}")
    return burn_in


def check_number(value, name: str, minimum: float | None = None, positive: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite real number (not a bool, not a
    string), ``> 0`` when ``positive``, ``>= minimum`` when given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def check_finite_tensor(value, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` and counting its NaN and infinite entries."""
    if torch.is_tensor(value) and (value.is_floating_point() or value.is_complex()):
        bad = ~torch.isfinite(value)
        if bad.any():
            nan = int(torch.isnan(value).sum())
            raise ValueError(f"{name} (shape {list(value.shape)}) has {int(bad.sum())} "
                             f"non-finite values ({nan} NaN, {int(bad.sum()) - nan} infinite)")


def check_nonempty_batch(args, kwargs=None) -> None:
    """Raise ``ValueError`` when a tensor argument has a leading (data) dimension of size 0:
    an estimate over no datapoints has no value."""
    named = [(f"argument {i}", a) for i, a in enumerate(args)] + [
        (f"keyword argument '{k}'", v) for k, v in (kwargs or {}).items()]
    for name, value in named:
        if torch.is_tensor(value) and value.dim() >= 1 and value.shape[0] == 0:
            raise ValueError(f"{name} has no datapoints (shape {list(value.shape)}); "
                             "pass a batch of at least one")


def check_program(fn, name: str) -> None:
    """Raise ``TypeError`` unless ``fn`` is a callable Pyro program; a module without a
    ``forward`` (the whole ``PyroModule`` passed for its ``model`` method) is named."""
    if isinstance(fn, torch.nn.Module) and \
            type(fn).forward is torch.nn.Module.forward:
        raise TypeError(f"{name} is a {type(fn).__name__} module without forward(); pass its "
                        f"method, e.g. {name}=module.{name}")
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}")


def check_pair_arguments(model, guide, num_particles: int = 1) -> None:
    """``model`` and ``guide`` callable programs, ``num_particles`` a positive integer."""
    check_program(model, "model")
    check_program(guide, "guide")
    check_int(num_particles, "num_particles")
