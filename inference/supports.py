"""Supports of a model's latent sites: does a guide propose only values the model allows?

A guide that draws a latent outside its model site's support (a ``Normal`` guide for an
``Exponential`` or ``Gamma`` latent, a common mistake) proposes values where
``p(x, z) = 0``. With Pyro's validation on, ``log_prob`` refuses such values; with it off (as
in the estimators' and trainers' passes) many distributions return a finite number there
(``Exponential.log_prob(-1.0) == -1.0``), which would put an importance weight, or an ELBO,
above ``log p(x)``. Two guards, both here:

- :func:`support_within` compares the supports statically, for the entries that need the
  guide's support inside the model's (the ELBO is ``-inf`` otherwise);
- :func:`mask_outside_support` gives the log density ``-inf`` (weight zero) at values outside
  the support, which is the right number for importance sampling.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import constraints


def _base(constraint):
    """The elementwise constraint under ``independent`` wrappers."""
    while isinstance(constraint, constraints.independent):
        constraint = constraint.base_constraint
    return constraint


def _range(constraint) -> tuple | None:
    """``(lower, upper)`` of a continuous support that is an interval of the real line (ends
    may be tensors or infinite), None for any other support."""
    constraint = _base(constraint)
    if constraint.is_discrete:
        return None
    if isinstance(constraint, type(constraints.real)):
        return -math.inf, math.inf
    if hasattr(constraint, "lower_bound") or hasattr(constraint, "upper_bound"):
        if constraint.event_dim:
            return None
        return (getattr(constraint, "lower_bound", -math.inf),
                getattr(constraint, "upper_bound", math.inf))
    return None


def support_within(inner, outer) -> bool | None:
    """Whether support ``inner`` lies inside support ``outer``: True, False, or None when
    the constraints cannot be compared (supports other than intervals of the real line,
    of different kinds, or ends whose shapes do not broadcast)."""
    inner_range, outer_range = _range(inner), _range(outer)
    if inner_range is None or outer_range is None:
        if type(_base(inner)) is type(_base(outer)) and not hasattr(_base(inner), "lower_bound"):
            return True
        return None
    try:
        low = torch.as_tensor(inner_range[0]) >= torch.as_tensor(outer_range[0])
        high = torch.as_tensor(inner_range[1]) <= torch.as_tensor(outer_range[1])
        return bool((low & high).all())
    except RuntimeError:
        return None


def mask_outside_support(fn, value: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """``log_p`` (the batch-shaped ``fn.log_prob(value)``) with ``-inf`` where ``value`` lies
    outside ``fn.support``: such a value has density zero, whatever formula ``log_prob``
    extends past the support. The real line is skipped (nothing lies outside it)."""
    support = fn.support
    if isinstance(_base(support), type(constraints.real)):
        return log_p
    try:
        inside = support.check(value)
    except (NotImplementedError, ValueError):  # a dependent support that cannot check
        return log_p
    return torch.where(inside, log_p, log_p.new_tensor(-math.inf))
