"""Supports of a model's latent sites: does a guide propose only values the model allows?

A guide that draws a latent outside its model site's support (a ``Normal`` guide for an
``Exponential`` or ``Gamma`` latent, a common mistake) proposes values where
``p(x, z) = 0``. With Pyro's validation on, ``log_prob`` refuses such values; with it off (as
in the estimators' and trainers' passes) many distributions return a finite number there
(``Exponential.log_prob(-1.0) == -1.0``), which would put an importance weight, or an ELBO,
above ``log p(x)``. The reverse, a guide whose support is narrower than the model's (a
``LogNormal`` guide for a ``Normal`` latent), never proposes part of the posterior's mass:
importance weights then estimate ``log p(x, z in the guide's support)``, not ``log p(x)``.
The guards, all here:

- :func:`support_of` reads a distribution's support, deriving that of a
  ``TransformedDistribution`` from its base and transforms (torch reports the last
  transform's codomain, ``Real()`` for ``biject_to(constraints.positive)``'s
  ``ExpTransform, AffineTransform``), and says whether it is exact or only contains the
  support;
- :func:`support_within` compares two supports statically, in either direction;
- :func:`support_kind` and :func:`support_kinds_differ` tell a discrete support from a
  continuous one (a relaxed guide for a discrete latent pairs a density with a mass function);
- :func:`mask_outside_support` gives the log density ``-inf`` (weight zero) at values outside
  the support, which is the right number for importance sampling.
"""

from __future__ import annotations

import math

import pyro.distributions.constraints as pyro_constraints
import torch
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from torch.distributions import constraints
from torch.distributions.transforms import ComposeTransform, IndependentTransform

# Circular distributions: torch declares them on the real line, but their log_prob repeats
# every 2 pi, so over the real line their density would integrate to infinity. They draw in
# [-pi, pi) and their support is taken to be that period: a guide drawing outside it
# proposes values of density zero (weight zero), not a second copy of the posterior.
_CIRCULAR = ("VonMises", "SineBivariateVonMises", "SineSkewed")


def _constraint_types(module, names) -> tuple:
    return tuple(getattr(module, name) for name in names if hasattr(module, name))


# Continuous supports of measure zero among the values of their shape: the simplex, unit
# vectors, triangular, symmetric, Cholesky and correlation matrices. A guide with a density
# on all of that space (a Normal of the same shape) lands on them with probability 0.
_MEASURE_ZERO = (
    _constraint_types(constraints, ("_Simplex", "_CorrCholesky", "_LowerCholesky",
                                    "_LowerTriangular", "_PositiveDefinite",
                                    "_PositiveSemidefinite", "_Symmetric"))
    + _constraint_types(pyro_constraints, ("_CorrMatrix", "_Sphere", "_UnitLowerCholesky",
                                           "_SoftplusLowerCholesky")))
# Proper subsets of the real vectors besides those and the intervals: ordered vectors.
_PROPER_SUBSETS = _MEASURE_ZERO + _constraint_types(
    pyro_constraints, ("_OrderedVector", "_PositiveOrderedVector"))


def _base(constraint):
    """The elementwise constraint under ``independent`` wrappers."""
    while isinstance(constraint, constraints.independent):
        constraint = constraint.base_constraint
    return constraint


def _is_discrete(constraint) -> bool | None:
    try:
        return bool(_base(constraint).is_discrete)
    except NotImplementedError:  # a dependent constraint of unknown kind
        return None


def support_kind(constraint) -> str | None:
    """``"discrete"`` or ``"continuous"`` for a support (through ``independent`` wrappers),
    None for a dependent constraint of unknown kind. A guide whose support is of another kind
    than its model site's (a ``RelaxedBernoulli`` on ``[0, 1]`` for a ``Bernoulli`` latent, a
    ``Categorical`` for a ``Normal`` one) pairs a density with a mass function: their ratio is
    no importance weight, and :func:`support_within` cannot compare them (it gives None)."""
    discrete = _is_discrete(constraint)
    if discrete is None:
        return None
    return "discrete" if discrete else "continuous"


def support_kinds_differ(first, second) -> bool:
    """Whether one support is discrete and the other continuous (False when either kind is
    unknown)."""
    kinds = support_kind(first), support_kind(second)
    return None not in kinds and kinds[0] != kinds[1]


def _range(constraint) -> tuple | None:
    """``(lower, upper)`` of a continuous support that is an interval of the real line (ends
    may be tensors or infinite), None for any other support."""
    constraint = _base(constraint)
    if _is_discrete(constraint) is not False:
        return None
    if isinstance(constraint, type(constraints.real)):
        return -math.inf, math.inf
    if hasattr(constraint, "lower_bound") or hasattr(constraint, "upper_bound"):
        if constraint.event_dim:
            return None
        return (getattr(constraint, "lower_bound", -math.inf),
                getattr(constraint, "upper_bound", math.inf))
    return None


def _integer_range(constraint) -> tuple | None:
    """``(lower, upper)`` of a support that is a set of consecutive integers (``boolean``,
    ``integer_interval``, ``nonnegative_integer``, ...), None for any other support."""
    constraint = _base(constraint)
    if _is_discrete(constraint) is not True:
        return None
    if isinstance(constraint, type(constraints.boolean)):
        return 0, 1
    if isinstance(constraint, (constraints._IntegerInterval, constraints._IntegerGreaterThan,
                               constraints._IntegerLessThan)):
        return (getattr(constraint, "lower_bound", -math.inf),
                getattr(constraint, "upper_bound", math.inf))
    if type(constraint).__name__ == "_Integer":  # pyro's constraints.integer
        return -math.inf, math.inf
    return None


def support_within(inner, outer) -> bool | None:
    """Whether support ``inner`` lies inside support ``outer``: True, False, or None when
    the constraints cannot be compared (supports other than intervals of the real line or
    of the integers, of different kinds, or ends whose shapes do not broadcast). Open and
    closed ends are not told apart (they differ on a set of measure zero), nor ends a
    relative 1e-5 apart (rounding)."""
    discrete = _is_discrete(inner)
    if discrete is None or discrete != _is_discrete(outer):
        return None
    get = _integer_range if discrete else _range
    inner_range, outer_range = get(inner), get(outer)
    if not discrete and isinstance(_base(inner), type(constraints.real)) and \
            isinstance(_base(outer), _PROPER_SUBSETS):
        return False  # all real values (a Normal guide) against a simplex, a Cholesky factor
    if inner_range is None or outer_range is None:
        inner_base, outer_base = _base(inner), _base(outer)
        if type(inner_base) is type(outer_base) and not hasattr(inner_base, "lower_bound") \
                and not hasattr(inner_base, "upper_bound"):
            return True
        return None
    try:
        low = _at_least(inner_range[0], outer_range[0])
        high = _at_least(-torch.as_tensor(inner_range[1], dtype=torch.float64),
                         -torch.as_tensor(outer_range[1], dtype=torch.float64))
        return bool((low & high).all())
    except RuntimeError:
        return None


def measure_zero(constraint) -> bool:
    """Whether a continuous support has measure zero among the values of its shape (the
    simplex, correlation and Cholesky matrices, unit vectors): a guide over all of that space
    never proposes a value in it, and every importance weight is zero."""
    return isinstance(_base(constraint), _MEASURE_ZERO)


def _at_least(end, bound) -> torch.Tensor:
    """``end >= bound`` elementwise, up to a relative 1e-5 of finite ends: the ends of a
    derived support carry rounding (``low + (high - low) * 1`` is ``high`` only to float
    precision), and an interval a rounding error wider has the same mass."""
    end = torch.as_tensor(end, dtype=torch.float64)
    bound = torch.as_tensor(bound, dtype=torch.float64)
    finite = torch.isfinite(end) & torch.isfinite(bound)
    slack = torch.where(finite, 1e-5 * (end.abs() + bound.abs()), torch.zeros(()))
    return end >= bound - slack


def _flat_transforms(transforms) -> list:
    """The transforms of a ``TransformedDistribution`` with ``ComposeTransform`` parts
    spliced in (an empty one, the identity, vanishes)."""
    flat = []
    for t in transforms:
        if isinstance(t, ComposeTransform):
            flat.extend(_flat_transforms(t.parts))
        else:
            flat.append(t)
    return flat


def _mapped_range(transform, low, high) -> tuple | None:
    """The image ``(low, high)`` of the interval ``[low, high]`` under an elementwise
    monotone ``transform`` whose domain holds the interval, None for any other transform."""
    while isinstance(transform, IndependentTransform):
        transform = transform.base_transform
    if isinstance(transform, torch.distributions.ComposeTransform):
        # biject_to(independent(positive, 1)) is Independent(Compose(Exp, Affine)): part by part
        for part in transform.parts:
            mapped = _mapped_range(part, low, high)
            if mapped is None:
                return None
            low, high = mapped
        return low, high
    if not isinstance(transform, torch.distributions.AffineTransform):
        if _base(transform.domain).event_dim or _base(transform.codomain).event_dim:
            return None  # not elementwise (StickBreaking, CorrCholesky, ...)
        domain = _range(transform.domain)
        if domain is None or not support_within(constraints.interval(low, high),
                                                 transform.domain):
            return None
    try:
        _ = transform.sign  # raises for a transform that is not monotone
    except NotImplementedError:
        return None
    affine = isinstance(transform, torch.distributions.AffineTransform)
    bijective = not affine and transform.bijective
    domain = _range(transform.domain) if bijective else None
    codomain = _range(transform.codomain) if bijective else None
    ends = []
    with torch.no_grad():
        for end in (low, high):
            end = torch.as_tensor(end, dtype=torch.float64)
            image = torch.as_tensor(transform(end)).detach()
            if domain is not None and codomain is not None:
                # a bijection sends its domain's ends to its codomain's ends, which floating
                # point misses where it clamps (Sigmoid(-inf) is 1e-308, not 0, and the
                # inverse sigmoid of 0 is -708, not -inf)
                sign = torch.as_tensor(transform.sign)
                lowest = end == torch.as_tensor(domain[0], dtype=end.dtype)
                highest = end == torch.as_tensor(domain[1], dtype=end.dtype)
                below = torch.as_tensor(codomain[0], dtype=image.dtype)
                above = torch.as_tensor(codomain[1], dtype=image.dtype)
                image = torch.where(lowest & (sign > 0) | highest & (sign < 0), below, image)
                image = torch.where(highest & (sign > 0) | lowest & (sign < 0), above, image)
            ends.append(image)
        try:
            new_low, new_high = torch.minimum(*ends), torch.maximum(*ends)
        except RuntimeError:  # ends that do not broadcast
            return None
    if bool(torch.isnan(new_low).any() | torch.isnan(new_high).any()):
        return None
    return _plain(new_low), _plain(new_high)


def _plain(end):
    """A tensor end as a float when it holds one value."""
    if torch.is_tensor(end) and end.numel() == 1:
        return float(end)
    return end


def _interval_constraint(low, high):
    """The constraint of the interval ``(low, high)``, in its simplest form."""
    low_free = bool((torch.as_tensor(low) == -math.inf).all())
    high_free = bool((torch.as_tensor(high) == math.inf).all())
    if low_free and high_free:
        return constraints.real
    if high_free:
        return constraints.greater_than(low)
    if low_free:
        return constraints.less_than(high)
    return constraints.interval(low, high)


def _with_event_dims(constraint, event_dims: int):
    extra = event_dims - constraint.event_dim
    return constraints.independent(constraint, extra) if extra > 0 else constraint


def _declares_support(distribution_type) -> bool:
    """Whether a ``TransformedDistribution`` subclass declares its own support (a
    ``LogNormal``'s ``positive``) rather than torch's last-codomain rule."""
    for klass in distribution_type.__mro__:
        if "support" in klass.__dict__:
            return klass is not torch.distributions.TransformedDistribution
    return False


def _transformed_support(fn) -> tuple:
    """:func:`support_of` a ``TransformedDistribution`` that keeps torch's support rule."""
    support, exact = support_of(fn.base_dist)
    if _is_discrete(support) is not False:
        return fn.support, False
    current = _range(support)
    transforms = _flat_transforms(fn.transforms)
    if not transforms:
        return support, exact
    for transform in transforms:
        mapped = None if current is None else _mapped_range(transform, *current)
        if mapped is None:  # the codomain holds the values: a superset of their support
            support, current, exact = transform.codomain, _range(transform.codomain), False
        else:
            current = mapped
            support = _interval_constraint(*current)
    return _with_event_dims(support, len(fn.event_shape)), exact


def support_of(fn) -> tuple:
    """``(support, exact)`` of a distribution: its constraint, and whether that is the set it
    puts its mass on (True) or only a set that holds it (False).

    Through ``Independent``, ``dist.mask`` and ``expand`` wrappers. A
    ``TransformedDistribution`` (unless its class declares a support, as ``LogNormal``
    does) gets the image of its base's support under its transforms: an affine or
    elementwise monotone transform (``Exp``, ``Sigmoid``, ``Tanh``, ``Softplus``, ...) maps
    the interval's ends, so ``TransformedDistribution(Normal, biject_to(positive))`` has
    support ``GreaterThan(0)`` where torch reports its last transform's codomain
    ``Real()``; past any other transform, its codomain holds the values (not exact).
    A distribution's declared support counts as exact (one that declares none has
    ``constraints.dependent``, not exact); a circular one (``VonMises``,
    ``SineBivariateVonMises``, ``SineSkewed``), declared on the real line, has the period it
    draws in, ``[-pi, pi]`` per angle.
    """
    if isinstance(fn, torch.distributions.Independent):
        support, exact = support_of(fn.base_dist)
        return _with_event_dims(support, support.event_dim + fn.reinterpreted_batch_ndims), exact
    if isinstance(fn, (MaskedDistribution, ExpandedDistribution)):
        return support_of(fn.base_dist)
    if isinstance(fn, torch.distributions.TransformedDistribution) and \
            not _declares_support(type(fn)):
        try:
            return _transformed_support(fn)
        except (NotImplementedError, TypeError, ValueError, RuntimeError):
            return declared_support(fn), False
    if type(fn).__name__ in _CIRCULAR:
        return _with_event_dims(constraints.interval(-math.pi, math.pi), len(fn.event_shape)), True
    support = declared_support(fn)
    return support, support is not constraints.dependent


def discrete_support(fn) -> bool | None:
    """Whether ``fn``'s declared support is discrete; None when it declares none or its kind
    is unknown (a dependent support)."""
    return _is_discrete(declared_support(fn))


def declared_support(fn):
    """``fn.support``, or ``constraints.dependent`` (a support of unknown kind and range,
    which no check compares) for a distribution that declares none (torch's base class
    raises ``NotImplementedError``: Pyro's ``GaussianScaleMixture``, a user's class)."""
    try:
        return fn.support
    except NotImplementedError:
        return constraints.dependent


def support_bounds(fn) -> list[torch.Tensor]:
    """The tensors that a distribution's support (:func:`support_of`) is built from: the ends
    of an ``interval(low, high)``, ``integer_interval(0, n)``, ``greater_than(low)``, ...
    Empty for a support of fixed numbers (the real line, ``boolean``, ``unit_interval``)."""
    support = _base(support_of(fn)[0])
    return [value for value in vars(support).values() if torch.is_tensor(value)]


def outside_range(fn, value: torch.Tensor) -> torch.Tensor | None:
    """Where ``value`` lies outside the range of ``fn``'s support (:func:`support_of`): the
    ends of an integer support (a Bernoulli's 0 and 1, a Binomial's 0 and n) or of a real
    interval. Inside the range but off the support (grey levels under a Bernoulli, the
    relaxed objective Pyro's VAE tutorial trains) is not flagged: such a density stays
    bounded, while one outside the range can grow without bound (a Bernoulli at 3). None
    when the support has no such range (a simplex) or its ends do not broadcast with
    ``value``."""
    support = support_of(fn)[0]
    bounds = _integer_range(support) or _range(support)
    if bounds is None:
        return None
    low, high = bounds
    try:
        return (value < low) | (value > high)
    except (RuntimeError, TypeError):
        return None


def mask_outside_support(fn, value: torch.Tensor, log_p: torch.Tensor,
                         scored: torch.Tensor | None = None) -> torch.Tensor:
    """``log_p`` (the batch-shaped ``fn.log_prob(value)``) with ``-inf`` where ``value`` lies
    outside ``fn``'s support (:func:`support_of`, which for a ``TransformedDistribution`` is
    its transforms' image, not torch's codomain): such a value has density zero, whatever
    formula ``log_prob`` extends past the support. The real line is skipped (nothing lies
    outside it). ``scored``: ``[batch]`` flags (``log_p``'s shape) of the values scored at
    all; masked-out ones keep their ``log_p``."""
    support = support_of(fn)[0]
    if isinstance(_base(support), type(constraints.real)):
        return log_p
    try:
        inside = support.check(value)
    except (NotImplementedError, ValueError):  # a dependent support that cannot check
        return log_p
    if scored is not None:  # masked-out values (padding) are not scored, wherever they lie
        inside = inside | ~scored
    return torch.where(inside, log_p, log_p.new_tensor(-math.inf))


def _end_text(end, integral: bool) -> str:
    """One end of a support as text: a number, or a short list when it differs by element
    (a ``Binomial`` of per-datapoint counts), never a raw tensor."""
    if not torch.is_tensor(end):
        return str(end)
    values = end.detach().reshape(-1).cpu()
    if values.numel() == 0:
        return "[]"

    def number(v: float) -> str:
        if math.isfinite(v) and v == int(v):
            return str(int(v)) if integral else f"{v:.1f}"
        return f"{v:.6g}"

    distinct = torch.unique(values)
    if distinct.numel() == 1:
        return number(float(distinct[0]))
    shown = ", ".join(number(float(v)) for v in values[:4])
    more = f", ... ({values.numel()} values)" if values.numel() > 4 else ""
    return f"[{shown}{more}]"


def describe_support(constraint) -> str:
    """A support as messages print it: torch's name and ends, the ends as numbers (or a
    short list where they differ by element) instead of raw tensors, e.g.
    ``IntegerInterval(lower_bound=0, upper_bound=5)`` for a ``Binomial(5)`` whose
    ``total_count`` is a tensor, ``Interval(lower_bound=0.0, upper_bound=[1.0, 2.0])``."""
    if isinstance(constraint, constraints.independent):
        return (f"IndependentConstraint({describe_support(constraint.base_constraint)}, "
                f"{constraint.reinterpreted_batch_ndims})")
    if constraint is constraints.dependent:
        return "none declared"
    ends = [name for name in ("lower_bound", "upper_bound") if hasattr(constraint, name)]
    if not ends:
        return str(constraint)
    integral = _is_discrete(constraint) is True
    name = type(constraint).__name__.lstrip("_")
    shown = ", ".join(f"{end}={_end_text(getattr(constraint, end), integral)}" for end in ends)
    return f"{name}({shown})"
