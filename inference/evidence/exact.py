"""Exact evidence by quadrature for models with a one- or two-dimensional latent."""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import pyro
import torch
from pyro import poutine
from torch.distributions import constraints
from torch.distributions.mixture_same_family import MixtureSameFamilyConstraint

from ..checks import (as_int, as_number, check_one_program_call, check_pair_call, check_site_name,
                      leaves_buffers, physical_memory_bytes, validation_enabled)
from ..pair_check import (
    DATA_PLATE,
    PARTICLE_PLATE,
    check_subsampled_plates,
    data_frame,
    distribution_masked,
    own_mask,
    PairStructure,
    per_batch_element,
    sample_sites,
    scored_elements,
    survey_pair,
    warn_if_tempered,
)
from ..progress import check_progress, progress_bar
from ..supports import (declared_support, describe_support, discrete_support,
                        mask_outside_support, support_of)
from ..weights import check_data, check_rows_independent, per_datapoint


class ExactEvidence(NamedTuple):
    """Result of :func:`exact_log_evidence`.

    Attributes:
        log_evidence: ``[batch]`` log p(x) in nats.
        grid: ``[G, latent_dim]`` the quadrature nodes.
        log_posterior: ``[G, batch]`` log p(z | x) at the nodes (a density in z).
        subsample: ``[batch]`` indices of the datapoints scored when the model subsamples its
            ``"data"`` plate (column ``b`` is datapoint ``subsample[b]``), else None.
    """

    log_evidence: torch.Tensor
    grid: torch.Tensor
    log_posterior: torch.Tensor
    subsample: torch.Tensor | None = None


def _no_guide(*args, **kwargs) -> None:
    """An empty guide: surveyed with it, the model draws its latent from the prior."""


# Power of the substitution that clusters nodes toward an end of the support: near the end
# z - end ~ u**3, so a density like |z - end|**(a - 1) becomes an integrand like u**(3a - 1),
# which the midpoint rule integrates at its usual h**2 rate for a >= 2/3.
END_POWER = 3

# Grid nodes per latent dimension when num_points is not given, by values per datapoint.
DEFAULT_NUM_POINTS = {1: 8001, 2: 801}

# A support end whose nearest node holds less posterior mass than this adds nothing the
# quadrature must resolve (its shape there is not checked).
LOG_NEGLIGIBLE_MASS = math.log(1e-9)


# The most a node may move when it is rounded to the latent's dtype, as a fraction of the
# nodes' spacing: the weights assume the nodes where the rule puts them.
NODE_ROUNDING = 0.1


def _check_node_rounding(low: float, high: float, n: int, dtype) -> None:
    """Refuse a grid the latent's dtype cannot hold: ``n`` nodes on ``[low, high]`` are about
    ``(high - low) / n`` apart, and rounding a node to ``dtype`` moves it by up to ``eps *
    max(|low|, |high|)`` (float32: 1.2e-7 relative), which must stay below
    :data:`NODE_ROUNDING` of that spacing (nodes keep their order and place), and the
    spacing above ``dtype``'s smallest normal number. Otherwise nodes merge (3 distinct
    among 8001 for ``N(1e7, 0.1)`` in float32) and the sum is silently wrong."""
    info = torch.finfo(dtype)
    spacing = (high - low) / n
    rounding = info.eps * max(abs(low), abs(high))
    if rounding > NODE_ROUNDING * spacing or spacing < 100 * info.tiny:
        raise ValueError(
            f"exact_log_evidence: bounds ({low:.10g}, {high:.10g}) with num_points={n} put nodes "
            f"{spacing:.3g} apart, but the latent's dtype {dtype} resolves values there only "
            f"to {max(rounding, info.tiny):.3g}: nodes would merge and the sum would be wrong. "
            "Make the model's latent float64 (its prior's parameters as float64 tensors), "
            "center the latent near 0, or use fewer num_points")


def _quadrature_rule(low: float, high: float, n: int, support_ends: tuple[bool, bool], dtype,
                     device):
    """``n`` nodes on ``[low, high]`` and their log weights, ``[n]`` each.

    Without an end of the latent's support among ``low`` and ``high``: the trapezoidal rule.
    Otherwise the midpoint rule in ``u`` on ``[0, 1]`` after a substitution ``z(u)`` whose
    derivative vanishes like ``u**(END_POWER - 1)`` at each support end (``low + L u**3``,
    its mirror, or the quintic smoothstep ``10u^3 - 15u^4 + 6u^5`` for both ends, ``L = high -
    low``): a density that is not smooth at the end (``|z - end|**(a - 1)``, a Beta or Gamma
    concentration ``a``) then converges as ``h**2`` for ``a >= 2/3``, where the plain midpoint
    rule converges as ``h**a``. The nodes stay inside the support, away from values a density
    may not be defined at.
    """
    _check_node_rounding(low, high, n, dtype)
    if not any(support_ends):
        nodes = torch.linspace(low, high, n, dtype=dtype, device=device)
        weights = torch.full((n,), (high - low) / (n - 1), dtype=dtype, device=device)
        weights[[0, -1]] /= 2
        return nodes, weights.log()
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    length = high - low
    nodes, slope = _substituted(u, low, high, support_ends)
    nodes = nodes.to(dtype)
    # a node that rounds onto an end in ``dtype`` moves to the nearest value inside
    inside_low = torch.nextafter(torch.tensor(low, dtype=dtype), torch.tensor(high, dtype=dtype))
    inside_high = torch.nextafter(torch.tensor(high, dtype=dtype), torch.tensor(low, dtype=dtype))
    nodes = nodes.clamp(float(inside_low), float(inside_high))
    log_weights = (slope * (length / n)).log().to(dtype)
    return nodes.to(device), log_weights.to(device)


def _substituted(u: torch.Tensor, low: float, high: float, support_ends: tuple[bool, bool]):
    """``(z(u), dz/du / (high - low))`` of :func:`_quadrature_rule`'s substitution at
    ``u: [n]`` in ``[0, 1]`` (float64), for a grid with at least one support end."""
    length, m = high - low, END_POWER
    if all(support_ends):
        # distances from the nearer end, by the smoothstep's symmetry S(1 - u) = 1 - S(u)
        near = torch.minimum(u, 1 - u)
        distance = length * near ** 3 * (10 - 15 * near + 6 * near ** 2)
        return torch.where(u < 0.5, low + distance, high - distance), 30 * u ** 2 * (1 - u) ** 2
    if support_ends[0]:
        return low + length * u ** m, m * u ** (m - 1)
    return high - length * (1 - u) ** m, m * (1 - u) ** (m - 1)


def _cell_edges(low: float, high: float, n: int, support_ends: tuple[bool, bool]):
    """``[n + 1]`` float64 edges of the cells whose integrals :func:`_quadrature_rule`'s
    nodes stand for: the midpoints between trapezoid nodes (and the ends), or the images of
    ``u = i / n`` under the substitution."""
    if not any(support_ends):
        nodes = torch.linspace(low, high, n, dtype=torch.float64)
        return torch.cat([nodes[:1], (nodes[1:] + nodes[:-1]) / 2, nodes[-1:]])
    return _substituted(torch.arange(n + 1, dtype=torch.float64) / n, low, high,
                        support_ends)[0]


def _failed_in(error: Exception) -> str:
    """The class of the distribution whose method raised ``error`` (its innermost frame with
    a ``self`` that is a distribution), e.g. ``"ImproperUniform"``, else ``"Pyro"``."""
    found = "Pyro"
    frame = error.__traceback__
    while frame is not None:
        owner = frame.tb_frame.f_locals.get("self")
        if isinstance(owner, torch.distributions.Distribution):
            found = type(owner).__name__
        frame = frame.tb_next
    return found


def _check_structure(structure: PairStructure) -> None:
    """Raise ``ValueError`` unless the surveyed model has one term per datapoint and
    broadcasts over a leading dimension of grid nodes."""
    if structure.global_sites:
        raise ValueError(
            f"site '{structure.global_sites[0][1]}' lies outside pyro.plate('{DATA_PLATE}'); "
            f"exact_log_evidence needs every sample site inside the '{DATA_PLATE}' plate")
    if structure.batch_size == 0:
        raise ValueError(f"no sample site lies inside pyro.plate('{DATA_PLATE}')")
    if structure.unrecorded_randomness:
        _, finding = structure.unrecorded_randomness
        raise ValueError(
            f"{finding}: the model uses randomness that Pyro does not record (torch.randn "
            "in its body, a pyro.sample hidden by poutine.block), so there is no density to "
            "integrate; make every random choice a pyro.sample site")
    if structure.shared_in_sizeless:
        raise ValueError(
            f"site(s) {list(structure.shared_in_sizeless)} inside the sizeless "
            f"pyro.plate('{DATA_PLATE}') have no data dimension, so one value is shared by "
            f"all {structure.batch_size} datapoints; give the plate its size, "
            f"pyro.plate('{DATA_PLATE}', len(x))")
    if structure.row_mismatch:
        name, rows, size = structure.row_mismatch[0]
        raise ValueError(f"observed site '{name}' has {rows} rows along the '{DATA_PLATE}' "
                         f"dim but the plate has {size}")
    if not structure.vectorizable:
        raise ValueError(
            "exact_log_evidence evaluates chunk_size grid nodes at once in a leftmost "
            f"pyro.plate, and the model fails there ({structure.vectorize_error}); make it "
            "broadcast over leading batch dims (see docs/own-pair.md)")


def _latent_layout(site, nesting: int, batch: int,
                   max_values: int | None = 2) -> tuple[tuple, tuple]:
    """Shapes that place a grid node's ``latent_dim`` values in every datapoint of ``site``.

    Args:
        nesting: number of plate dims of the model (without the grid's).
        max_values: the most values per datapoint (None: any, for a discrete latent whose
            event is one value, a ``OneHotCategorical``'s vector).

    Returns:
        ``(per_datapoint, full)``: the value's shape with its batch dims padded to ``nesting``
        and the ``"data"`` dim of size 1, resp. ``batch``; ``per_datapoint`` holds at most
        ``max_values`` elements.
    """
    fn, value = site["fn"], site["value"]
    batch_dims = value.dim() - len(fn.event_shape)
    full = (1,) * (nesting - batch_dims) + tuple(value.shape)
    data_dim = nesting + data_frame(site).dim
    per_point = full[:data_dim] + (1,) + full[data_dim + 1:]
    latent_dim = math.prod(per_point)
    if full[data_dim] != batch or (max_values is not None and latent_dim > max_values):
        raise ValueError(
            f"site '{site['name']}' has value shape {tuple(value.shape)} (batch shape "
            f"{tuple(fn.batch_shape)}, event shape {tuple(fn.event_shape)}), {latent_dim} "
            f"values per datapoint of the '{DATA_PLATE}' plate of size {batch}; quadrature "
            "needs one or two values per datapoint: [batch], [batch, 1] or [batch, 2]")
    return per_point, full


def _support_end(name: str, fn, support, bound) -> float:
    """A bound of an elementwise support as one number (it must be the same everywhere); a
    Python number as it is (not rounded to torch's default dtype)."""
    bound = bound if torch.is_tensor(bound) else torch.tensor(bound, dtype=torch.float64)
    if not bool((bound == bound.reshape(-1)[0]).all()):
        raise ValueError(
            f"site '{name}' ({type(fn).__name__}) has support {support} whose ends differ "
            "across its values (e.g. per datapoint); the quadrature grid is shared by all of "
            "them, so it integrates only latents with one support")
    return float(bound.reshape(-1)[0])


def _integration_range(name: str, fn, bounds) -> tuple[float, float, tuple[bool, bool]]:
    """``bounds`` clipped to the support of the latent's distribution ``fn``.

    Returns:
        ``(low, high, support_ends)``: ``support_ends`` says for each end whether it is an
        end of the support (nothing lies beyond it) rather than a truncation.
    """
    support = support_of(fn)[0]  # a VonMises latent: its period, not torch's real line
    # a mixture's support is its components' (MixtureSameFamily's constraint wraps theirs)
    while isinstance(support, (constraints.independent, MixtureSameFamilyConstraint)):
        support = support.base_constraint
    if support is constraints.dependent:
        raise ValueError(
            f"site '{name}' ({type(fn).__name__}) declares no support: quadrature must know "
            "where the latent's density lives (outside it, log_prob may return any number); "
            "give the class a support (e.g. support = constraints.real), or use iwae_bound")
    if isinstance(support, type(constraints.real)):
        lower, upper = lower_end, upper_end = -math.inf, math.inf
    elif support.event_dim == 0 and (hasattr(support, "lower_bound")
                                     or hasattr(support, "upper_bound")):
        lower_end = getattr(support, "lower_bound", -math.inf)
        upper_end = getattr(support, "upper_bound", math.inf)
        lower = _support_end(name, fn, support, lower_end)
        upper = _support_end(name, fn, support, upper_end)
    else:
        raise ValueError(
            f"site '{name}' ({type(fn).__name__}) has support {support}; quadrature "
            "integrates each latent value over the real line, a half-line or an interval")
    low, high = max(bounds[0], lower), min(bounds[1], upper)
    if not low < high:
        raise ValueError(
            f"bounds {tuple(bounds)} miss the support {support} of site '{name}' "
            f"({type(fn).__name__}): pass bounds that overlap ({lower}, {upper})")
    # a bound within the rounding of the support's end in its dtype reaches the end
    # (bounds=(-math.pi, math.pi) for a float32 VonMises, whose ends round one step outward)
    return low, high, (bounds[0] <= lower + _rounding(lower_end),
                       bounds[1] >= upper - _rounding(upper_end))


def _rounding(end) -> float:
    """How far a support's ``end`` (a number or a tensor) may lie from the number it stands
    for: half a step of its floating dtype at its value (0 for Python numbers)."""
    if not torch.is_tensor(end) or not end.is_floating_point():
        return 0.0
    value = float(end.reshape(-1)[0].abs())
    return 0.5 * torch.finfo(end.dtype).eps * value if math.isfinite(value) else 0.0


@leaves_buffers
def exact_log_evidence(
    model: Callable,
    *args,
    site: str = "z",
    bounds: tuple[float, float] = (-10.0, 10.0),
    num_points: int | None = None,
    chunk_size: int = 2048,
    progress: bool = True,
    **kwargs,
) -> ExactEvidence:
    """``log p(x) = log integral p(x, z) dz`` per datapoint by the trapezoidal rule, or
    ``log sum_z p(x, z)`` over every value of a discrete latent with a finite support
    (``Categorical``, ``Bernoulli``, ``Binomial``: exact, ``bounds`` and ``num_points`` unused).

    On the real line the integrand is smooth and decays in the tails, where the trapezoidal
    rule converges faster than any power of the spacing; the defaults give 1e-3 nats or
    better when the posterior is wider than a few grid spacings, which is checked. A latent
    with a constrained support (Beta, Gamma, Uniform, ...) is integrated over ``bounds``
    clipped to its support by the midpoint rule after a substitution that clusters nodes
    toward the support's ends (:func:`_quadrature_rule`): it converges as the squared spacing
    also for a density that is not smooth there (``|z - end|^(a - 1)`` with ``a >= 2/3``),
    and more slowly down to ``a = 1/3``; a posterior density that grows faster toward an end
    of the support is refused.

    Args:
        model: a Pyro model whose only latent site ``site`` sits in the ``"data"`` plate with
            one or two values per datapoint (value ``[batch]``, ``[batch, 1]``, ``[batch, 2]``,
            or the same spread over other plates, e.g. ``[batch, 2]`` in a feature plate).
            A model that subsamples its own ``"data"`` plate is scored on one subsample.
        bounds: integration range per latent dimension (the prior should put negligible mass
            outside it; clipped to the latent's support).
        num_points: nodes per latent dimension; None: 8001 for one value per datapoint, 801
            for two (a 2-D latent uses ``num_points**2`` nodes: 8001 per dimension took 39 s
            and 5 GB for one datapoint, 801 gives the same evidence to 1e-12 on a smooth
            posterior, and the resolution check still refuses a grid too coarse).
        chunk_size: grid nodes per vectorized pass of the model.
        progress: False hides the bar (grid nodes scored) a call shows after a second.

    Returns:
        :class:`ExactEvidence`, without gradients (a reference value: the model's parameters
        are read, not differentiated). For a discrete latent, ``grid`` holds its values
        (``[S, latent_dim]``, all ``S**2`` pairs for two per datapoint) and
        ``log_posterior`` their posterior log probabilities.

    Raises:
        ValueError: other latent sites or sites outside the ``"data"`` plate, a latent of more
            than two values per datapoint, a support other than an interval of the real line
            (or one that differs between datapoints), bounds outside it, a posterior unbounded
            at an end of it, a grid too coarse or too narrow for the posterior, or a discrete
            latent without a finite support.
    """
    check_pair_call(exact_log_evidence, kwargs, args, model=model)
    check_one_program_call(exact_log_evidence, "model", args)
    check_site_name(site, "exact_log_evidence")
    check_data(args, kwargs)
    if num_points is not None:
        num_points = as_int(num_points, "num_points", 3)
    chunk_size = as_int(chunk_size, "chunk_size")
    check_progress(progress)
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise ValueError(f"bounds must be a pair (low, high), got {bounds!r}")
    # 0-dim tensors (bounds=(x.min(), x.max())) count as their values
    bounds = tuple(as_number(bound, name) for name, bound in zip(("bounds[0]", "bounds[1]"),
                                                                 bounds))
    if not bounds[0] < bounds[1]:
        raise ValueError(f"bounds must satisfy low < high, got {tuple(bounds)}")
    try:
        structure = survey_pair(model, _no_guide, args, kwargs)
    except (NotImplementedError, AssertionError) as error:  # a latent drawn from its
        # prior, which cannot be (an improper prior), or scored in a batch (an assert inside)
        culprit = _failed_in(error)
        if isinstance(error, AssertionError) and culprit == "Pyro":
            raise  # the user's own assert
        detail = str(error).strip().splitlines()[0] if str(error).strip() else "no message"
        remedy = ("an improper prior has no density, so neither has p(x) = integral "
                  "p(x | z) p(z) dz; give the latent a proper prior"
                  if culprit in ("ImproperUniform", "Pyro") else
                  "give the latent a prior that Pyro can draw from in the model's plates")
        raise ValueError(
            "exact_log_evidence draws the model's latents from their priors to survey the "
            f"model, and {culprit} cannot ({type(error).__name__}: {detail}): "
            f"{remedy}") from error
    _check_structure(structure)
    check_subsampled_plates(structure, "exact_log_evidence")
    warn_if_tempered(structure, "exact_log_evidence")
    model = structure.fix_subsample(model)  # every chunk scores the same datapoints
    # a density of one datapoint that depends on the others has no evidence of its own:
    # refused as by the estimators (the latents drawn from the prior, scored alone and in
    # the whole batch)
    check_rows_independent(model, poutine.block(model, hide_fn=lambda msg: msg["is_observed"]),
                           args, kwargs, structure, "exact_log_evidence")
    with poutine.block(), torch.no_grad():
        trace = poutine.trace(model).get_trace(*args, **kwargs)
    latents = list(sample_sites(trace, observed=False))
    names = [s["name"] for s in latents]
    missing = [name for name in names if name.endswith("_unobserved")
               and trace.nodes.get(name[:-len("_unobserved")] + "_observed", {}).get(
                   "is_observed")]
    if missing:
        base = missing[0][:-len("_unobserved")]
        raise ValueError(
            f"exact_log_evidence integrates over one latent site, and '{missing[0]}' holds the "
            f"missing entries of pyro.sample('{base}', ..., obs_mask=...), a second latent "
            "(conditioning it would add its density at the fixed value to the evidence): "
            f"put the mask on the distribution instead, pyro.sample('{base}', d.mask(mask), "
            "obs=...), so that the missing entries drop out of log p(x), or score the pair "
            f"with iwae_bound and a guide that samples '{missing[0]}'")
    enumerated = [s["name"] for s in latents if s["name"] != site and s["infer"].get("enumerate")]
    if names != [site] and enumerated:
        integrated = (f"the single latent site '{site}'" if site in names else
                      f"one latent site (site={site!r}, which this model does not have)")
        raise ValueError(
            f"exact_log_evidence integrates over {integrated} and does not "
            f"sum out the model's enumerated site(s) {enumerated} (config_enumerate): "
            "conditioning them would give log p(x, their values), not log p(x). The "
            "weight-based estimators sum them out: "
            + ("every latent of this model is enumerated, so iwae_bound with a guide that "
               "samples nothing and num_samples=1 is log p(x) exactly"
               if all(s["infer"].get("enumerate") for s in latents) else
               f"iwae_bound or log_evidence with a guide for '{site}' and a large "
               "num_samples"))
    if names != [site]:
        hint = (f"; pass site={names[0]!r}" if len(names) == 1 else
                "; fix the others (pyro.condition) to integrate over one (the result is then "
                "the joint density of the data and their fixed values)" if names else
                "; without a latent, log p(x) is the model's log likelihood")
        raise ValueError(
            f"exact_log_evidence integrates over the single latent site '{site}' (argument "
            f"site), but the model has latent sites {names}{hint}"
        )
    value, fn = latents[0]["value"], latents[0]["fn"]
    batch, nesting = structure.batch_size, structure.max_plate_nesting
    discrete = (discrete_support(fn) or not value.is_floating_point()
                or getattr(fn, "has_enumerate_support", False))
    if discrete and distribution_masked(fn):
        raise ValueError(
            f"exact_log_evidence: the discrete latent site '{site}' masks its own "
            "distribution (dist.mask(m) / .mask(m)): summed over its values, each weighs one "
            "where the mask is off, which adds log K to log p(x) there. Mask the site with "
            "`with pyro.poutine.mask(mask=m):` around it, which leaves those rows out")
    # a discrete latent's mask is not applied (the values' probabilities sum to one, below)
    masked = [] if discrete else _masked_rows(latents[0], nesting, batch)
    if masked:
        raise ValueError(
            f"exact_log_evidence: the latent site '{site}' is masked out (poutine.mask or "
            f"dist.mask) for "
            f"datapoints {masked[:10]}{' ...' if len(masked) > 10 else ''}: a masked latent "
            "has no density to integrate over (the weight-based estimators score such rows "
            "0); pass only the rows whose latent is scored")
    base = fn
    while isinstance(base, torch.distributions.Independent):
        base = base.base_dist
    # a discrete event summed as one value (a OneHotCategorical's vector) may be any length
    one_event = discrete and bool(base.event_shape) and getattr(base, "has_enumerate_support",
                                                               False)
    per_point, full = _latent_layout(latents[0], nesting, batch, None if one_event else 2)
    latent_dim = math.prod(per_point)
    if num_points is None:  # a latent of more values is refused below
        num_points = DEFAULT_NUM_POINTS.get(latent_dim, DEFAULT_NUM_POINTS[1])
    joint_support = None  # [S, latent_dim]: a discrete latent whose event is one value
    if discrete:
        nodes, joint_support = _discrete_support(site, fn, latent_dim)
        num_points = (joint_support if joint_support is not None else nodes).shape[0]
        _check_grid_memory(num_points, 1 if joint_support is not None else latent_dim, batch,
                           value.dtype.itemsize)
        log_w = torch.zeros(num_points, dtype=torch.get_default_dtype(), device=value.device)
    else:
        low, high, support_ends = _integration_range(site, fn, bounds)
        _check_grid_memory(num_points, latent_dim, batch, value.dtype.itemsize)
        nodes, log_w = _quadrature_rule(low, high, num_points, support_ends, value.dtype,
                                        value.device)
    if joint_support is not None:  # a OneHotCategorical's vectors: its support as it is
        grid = joint_support
    elif latent_dim == 2:
        grid = torch.cartesian_prod(nodes, nodes)  # [G, 2]
        axis_log_w = log_w  # [num_points], each axis's
        log_w = (log_w[:, None] + log_w[None, :]).reshape(-1)
    else:
        grid = nodes[:, None]  # [G, 1]

    def score(z: torch.Tensor) -> torch.Tensor:
        """``log p(x, z)`` per datapoint, ``[g, batch]``, at ``z: [g, *full]``."""
        conditioned = poutine.condition(model, data={site: z})
        # no gradients: the densities of a model with parameters would otherwise hold an
        # autograd graph over every node of the grid in the results
        # validation off: the survey checked the data; a support that moves with the latent
        # (x ~ Uniform(0, z)) leaves them outside at some nodes, density zero there
        with poutine.block(), torch.no_grad(), validation_enabled(False):
            with pyro.plate(PARTICLE_PLATE, z.shape[0], dim=-nesting - 1):
                trace = poutine.trace(conditioned).get_trace(*args, **kwargs)
            # a discrete latent's own poutine.mask is not applied, as in Pyro's
            # TraceEnum_ELBO: its probabilities sum to one over the values, and the mask
            # acts on the sites that depend on it (a masked prior would count each value)
            # (masked-out values, padding, keep their masked density wherever they lie)
            total = sum(
                per_datapoint(mask_outside_support(
                    s["fn"], s["value"], s["fn"].log_prob(s["value"]), scored_elements(s)),
                    {**s, "mask": None} if discrete and s["name"] == site else s,
                    nesting + 1, batch)
                for s in sample_sites(trace)
            )
        return total.expand(z.shape[0], batch)

    def score_each(values: torch.Tensor) -> torch.Tensor:
        """``log p(x, z)`` per datapoint, ``[batch]``, each with its own latent value,
        ``values: [batch]`` (one value per datapoint)."""
        data_axis = nesting + data_frame(latents[0]).dim  # the "data" dim of full
        layout = tuple(batch if i == data_axis else 1 for i in range(len(full)))
        return score(values.reshape((1,) + layout).expand((1,) + full))[0]

    log_joint = []
    with progress_bar(grid.shape[0], "exact_log_evidence", progress, "nodes") as bar:
        for start in range(0, grid.shape[0], chunk_size):
            points = grid[start:start + chunk_size]  # [g, latent_dim]
            g = points.shape[0]
            z = points.reshape((g,) + per_point).expand((g,) + full)
            log_joint.append(score(z))
            bar.update(g)
    log_joint = torch.cat(log_joint)  # [G, batch]
    _check_log_joint(log_joint, grid)
    dtype = log_joint.dtype
    wide = _wide(dtype, log_joint.device)
    log_joint, log_w = log_joint.to(wide), log_w.to(wide)
    # Each column relative to its largest node: a log joint of -1e10 (a posterior far
    # narrower than the grid) absorbed the node weights (-6) when added to them, and the
    # resolution check saw 0.0025 of the mass on a node that held all of it (an evidence
    # 1e10 nats off passed)
    top = log_joint.max(0).values  # [batch]
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    shifted = log_joint - top  # 0 at each column's largest node
    log_norm = torch.logsumexp(shifted + log_w[:, None], 0)  # log p(x) - top
    if not discrete and latent_dim == 1:
        # a support that moves with the latent (x ~ Uniform(0, z)) cuts a cell: first-order
        # error (7e-4 nats on the default grid) unless the cut is found
        uncut = top + log_norm
        corrected = _cut_cells_corrected(uncut, log_joint, log_w, nodes,
                                         _cell_edges(low, high, num_points, support_ends),
                                         score_each)
        log_norm = torch.where(corrected != uncut, corrected - top, log_norm)
    log_evidence = top + log_norm
    log_posterior = shifted - log_norm
    if not discrete:  # a sum over a finite support is exact: no grid to resolve
        _check_resolution(log_posterior + log_w[:, None], nodes,
                          axis_log_w if latent_dim == 2 else log_w, latent_dim, support_ends,
                          site, (low, high))
    return ExactEvidence(log_evidence.to(dtype), grid, log_posterior.to(dtype),
                         structure.data_subsample)


def _wide(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """float64 where the device computes in it (not Apple's MPS), else ``dtype``."""
    return dtype if device.type == "mps" else torch.promote_types(dtype, torch.float64)


# Halvings of a cut cell when searching the point where the density turns zero.
CUT_SEARCH_STEPS = 60


def _cut_cells_corrected(log_evidence: torch.Tensor, log_joint: torch.Tensor,
                         log_w: torch.Tensor, nodes: torch.Tensor, edges: torch.Tensor,
                         score_at) -> torch.Tensor:
    """``log_evidence: [batch]`` with the cells that a support moving with the latent cuts
    integrated anew: where the density is zero at one node and positive at its neighbour
    (``log_joint: [G, batch]`` at ``nodes: [G]`` of log weights ``log_w: [G]``, cells
    ``edges: [G + 1]``), the point of the cut is found by halving (``score_at(values:
    [batch]) -> [batch]``, the log joint with each datapoint's latent at its value), and the
    positive node's cell is counted from the cut to its far edge by the midpoint rule,
    instead of whole at its node."""
    inside = log_joint > -math.inf  # [G, batch]
    cut = (inside[1:] != inside[:-1]).nonzero()  # [cuts, 2]: node i (of i, i + 1), datapoint
    if cut.shape[0] == 0:
        return log_evidence
    dtype = nodes.dtype
    grid = nodes.double()
    correction = torch.zeros_like(log_evidence, dtype=torch.float64)
    # one search per round of cuts: the k-th cut of every datapoint that has k cuts
    cut = cut[cut[:, 1].argsort(stable=True)]  # by datapoint, nodes in order within each
    rank = torch.zeros(cut.shape[0], dtype=torch.long)
    for k in range(1, cut.shape[0]):
        rank[k] = rank[k - 1] + 1 if cut[k, 1] == cut[k - 1, 1] else 0

    def scored(points: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
        values = torch.zeros_like(log_evidence, dtype=dtype)
        values[column] = points.to(dtype)
        return score_at(values)[column].double()

    for round_ in range(int(rank.max()) + 1):
        node, column = cut[rank == round_].unbind(1)
        left_inside = inside[node, column]  # the positive side is the lower node's
        positive = torch.where(left_inside, node, node + 1)
        low, high = grid[node], grid[node + 1]
        for _ in range(CUT_SEARCH_STEPS):
            middle = (low + high) / 2
            if bool(((middle.to(dtype) == low.to(dtype)) | (middle.to(dtype) == high.to(dtype))
                     ).all()):
                break
            # keep the half whose ends differ: the cut lies between them
            towards_low = (scored(middle, column) > -math.inf) != left_inside
            high = torch.where(towards_low, middle, high)
            low = torch.where(towards_low, low, middle)
        point = torch.where(left_inside, low, high)  # the last value on the positive side
        far = torch.where(left_inside, edges[node], edges[node + 2])
        length = (far - point).abs()
        middle = (far + point) / 2
        relative = scored(middle, column) - log_evidence[column].double()
        counted = log_joint[positive, column].double() + log_w[positive].double() \
            - log_evidence[column].double()
        correction.index_add_(0, column, relative.exp() * length - counted.exp())
    return (log_evidence.double() + torch.log1p(correction)).to(log_evidence.dtype)


def _masked_rows(latent, nesting: int, batch: int) -> list[int]:
    """The datapoints (of ``batch``) in which ``latent``'s site is masked out, wholly or in
    part, by ``poutine.mask`` (its ``mask``) or by its distribution's own ``dist.mask(m)``
    (``nesting`` plate dims, no particles)."""
    mask, fn = latent["mask"], latent["fn"]
    own = own_mask(fn)
    if own is not None:  # one flag per batch element: masked when any of its values is
        own = per_batch_element(own, fn)
        mask = own if mask is None or mask is True else own & mask
    if mask is None or mask is True:
        return []
    if mask is False:
        return list(range(batch))
    ones = torch.ones(latent["fn"].batch_shape, device=mask.device)
    kept = per_datapoint(ones, {**latent, "mask": mask}, nesting + 1, batch)[0]  # [batch] scored
    whole = per_datapoint(ones, {**latent, "mask": None}, nesting + 1, batch)[0]
    return (kept < whole).nonzero().flatten().tolist()


def _check_rounded_nodes(marginal: torch.Tensor, nodes: torch.Tensor, log_w: torch.Tensor,
                         site: str) -> None:
    """Raise when nodes that the latent's dtype rounded onto one value (near a support end
    far from zero: float32 places no value within 6e-8 below 1.0) may be off by more than
    1e-6 of a datapoint's evidence: they are all scored at that one value, which costs their
    mass times the change of the density between them and the next distinct node (nothing
    for a density flat there; a Beta(10, 0.4) posterior, rising toward 1, was 2e-3 nats
    off). ``marginal: [num_points, batch]`` log masses along one axis, ``nodes`` and the
    nodes' ``log_w``: ``[num_points]``."""
    counts = torch.unique_consecutive(nodes, return_counts=True)[1].tolist()
    if max(counts) == 1:
        return
    log_density = marginal - log_w[:, None].to(marginal.dtype)  # [num_points, batch]
    first = 0
    for count in counts:
        last = first + count - 1  # nodes first..last share one value
        if count > 1:
            neighbour = last + 1 if last + 1 < nodes.shape[0] else first - 1
            mass = marginal[first:last + 1].logsumexp(0).exp()  # [batch]
            change = (log_density[first] - log_density[neighbour]).abs()
            error = mass * -torch.expm1(-change.nan_to_num(math.inf))
            if (error > 1e-6).any():
                worst = int(error.argmax())
                raise ValueError(
                    f"the posterior of datapoint {worst} puts {float(mass[worst]):.1e} of its "
                    f"mass on grid nodes of site '{site}' that {nodes.dtype} rounds onto one "
                    f"value near {float(nodes[first]):.8g} (a support end its precision cannot "
                    "approach), where its density changes fast: the integral there is off by "
                    f"up to {float(error[worst]):.1e}; compute in float64 (model.double(), "
                    "double data and constants)")
        first = last + 1


# Values of a discrete latent summed over at most (per dimension).
MAX_DISCRETE_VALUES = 100_000


def _discrete_support(name: str, fn, latent_dim: int):
    """``(values, joint)``: ``values: [S]`` the values each element of a discrete latent
    takes, the same for every datapoint (``fn.enumerate_support``: a ``Categorical``'s
    categories, a ``Bernoulli``'s 0 and 1; an ``Independent`` (``.to_event``) is read
    through to its elements, whose values combine freely), ``joint`` None; or, for a
    distribution whose event is one value of ``latent_dim`` elements (a
    ``OneHotCategorical``'s vectors, which do not combine freely), ``joint: [S,
    latent_dim]`` its support. ``ValueError`` naming the site for a support without an end
    (``Poisson``, ``Geometric``) or with more than :data:`MAX_DISCRETE_VALUES` values."""
    while isinstance(fn, torch.distributions.Independent):
        fn = fn.base_dist
    if not getattr(fn, "has_enumerate_support", False):
        raise ValueError(
            f"site '{name}' is discrete ({type(fn).__name__}, support "
            f"{describe_support(declared_support(fn))}) without a "
            "finite support to sum over; truncate it (e.g. a Categorical over the values that "
            "matter) or sum over its values yourself")
    try:
        support = fn.enumerate_support(expand=False)
    except NotImplementedError as error:  # a Binomial with a total count per datapoint
        raise ValueError(f"site '{name}' ({type(fn).__name__}) has no support shared by all "
                         f"datapoints to sum over: {error}") from error
    if support.numel() > MAX_DISCRETE_VALUES:
        raise ValueError(f"site '{name}' ({type(fn).__name__}) has {support.numel():,} values "
                         f"to sum over, more than {MAX_DISCRETE_VALUES:,}")
    if fn.event_shape:
        if support[0].numel() != latent_dim:
            raise ValueError(
                f"site '{name}' ({type(fn).__name__}) holds {latent_dim} values per datapoint "
                f"in events of {support[0].numel()}: exact_log_evidence sums over one such "
                "event per datapoint")
        return None, support.reshape(support.shape[0], latent_dim)
    return support.reshape(-1), None


def _check_log_joint(log_joint: torch.Tensor, grid: torch.Tensor) -> None:
    """Raise when the log joint ``[G, batch]`` is NaN or +inf at a node of ``grid``
    ``[G, latent_dim]``, or -inf at every node for some datapoint."""
    bad = torch.isnan(log_joint) | torch.isposinf(log_joint)
    if bad.any():
        node, point = (int(i) for i in bad.nonzero()[0])
        raise ValueError(f"the log joint of datapoint {point} is {float(log_joint[node, point])} "
                         f"at the grid node {grid[node].tolist()}: the model's density is "
                         "undefined or infinite there")
    empty = torch.isneginf(log_joint).all(0)
    if empty.any():
        nodes = grid[:, 0].unique()
        spacing = float((nodes[1:] - nodes[:-1]).max()) if nodes.numel() > 1 else math.inf
        raise ValueError(
            f"the joint density of datapoint(s) {empty.nonzero().flatten().tolist()[:10]} is "
            "zero (or below float range) at every grid node: the posterior lies outside "
            f"bounds, or between nodes as far apart as these (up to {spacing:.3g}: narrow "
            "bounds or raise num_points), or the data have zero probability under the model")


def _check_grid_memory(num_points: int, latent_dim: int, batch: int, itemsize: int) -> None:
    """``ValueError`` naming ``num_points`` when the ``[num_points**latent_dim, batch]`` log
    joints, held about three times (the chunks, their concatenation, the posterior), would not
    fit in this machine's memory: refused before the first chunk, not after minutes."""
    nodes = num_points ** latent_dim
    need, total = 3 * nodes * batch * itemsize, physical_memory_bytes()
    if total is not None and need > total:
        raise ValueError(
            f"exact_log_evidence: num_points={num_points} gives {nodes:,} grid nodes for a "
            f"{latent_dim}-D latent and {batch} datapoints, about {need / 2**30:.3g} GiB, more "
            f"than this machine's {total / 2**30:.3g} GiB; lower num_points (a few hundred "
            "per dimension suffice for a smooth 2-D posterior) or score fewer datapoints")


def _check_grid_edges(log_mass: torch.Tensor, num_points: int, latent_dim: int,
                      support_ends: tuple[bool, bool], site: str,
                      bounds: tuple[float, float]) -> None:
    """Raise when posterior mass reaches an edge of the grid that is not an end of the
    latent's support (the grid cuts the posterior off there); ``log_mass: [G, batch]`` as
    in :func:`_check_resolution`."""
    truncated_ends = [end for end, is_support_end in zip((0, num_points - 1), support_ends)
                      if not is_support_end]
    if not truncated_ends:
        return
    mass = log_mass.exp().reshape((num_points,) * latent_dim + (log_mass.shape[-1],))
    width = max(1, num_points // 100)
    all_dims = tuple(range(latent_dim))
    low, high = (float(bound) for bound in bounds)
    for end in truncated_ends:
        edge_mass = sum(mass.narrow(axis, 0 if end == 0 else num_points - width, width)
                        .sum(all_dims) for axis in all_dims)  # [batch]
        if (edge_mass > 1e-6).any():
            worst = int(edge_mass.argmax())
            span = high - low
            wider = (low - span, high) if end == 0 else (low, high + span)
            beyond = (f" Most of it lies there ({float(edge_mass[worst]):.2f}): the posterior "
                      "may lie far beyond the grid; center the bounds on it (e.g. around the "
                      "guide's mean for that datapoint) rather than widening a little"
                      if float(edge_mass[worst]) > 0.5 else "")
            raise ValueError(
                f"the posterior of datapoint {worst} at site '{site}' puts "
                f"{float(edge_mass[worst]):.2e} of its mass within 1% of the grid's "
                f"{'low' if end == 0 else 'high'} end, {low if end == 0 else high:.6g}: the "
                f"grid ({low:.6g}, {high:.6g}) cuts the posterior off there. Widen it, e.g. "
                f"bounds=({wider[0]:.6g}, {wider[1]:.6g}).{beyond}")


def _check_resolution(log_mass: torch.Tensor, nodes: torch.Tensor, axis_log_w: torch.Tensor,
                      latent_dim: int, support_ends: tuple[bool, bool], site: str,
                      bounds: tuple[float, float]) -> None:
    """Raise when posterior mass piles on a few nodes, reaches an edge of the grid that
    truncates the latent's support, or rests on nodes that the latent's dtype could not
    place apart near a support end.

    Args:
        log_mass: ``[G, batch]`` log posterior mass of each node (sums to one per column).
        nodes: ``[num_points]`` the nodes along each latent dimension (``G = num_points **
            latent_dim``), in the latent's dtype; ``axis_log_w``: their log weights.
        support_ends: whether the low and high ends of the grid are ends of the support.
        bounds: the grid's ``(low, high)``, as the messages name them.
    """
    num_points = nodes.shape[0]
    # first: a posterior beyond the grid piles on its edge node, which is no resolution issue
    _check_grid_edges(log_mass, num_points, latent_dim, support_ends, site, bounds)
    mass = log_mass.exp()
    peak = mass.max(0).values
    # a Gaussian peak of standard deviation s grid spacings puts about 0.4 / s of its mass
    # on its top node, and the trapezoid rule's relative error is about exp(-2 pi^2 s^2):
    # 3e-6 at a peak of 0.5 (s = 0.8); ToyManifold(0.008)'s posteriors (0.22-0.35 on one
    # node of the default grid) are integrated to 4e-11
    if (peak > 0.5).any():
        worst = int(peak.argmax())
        raise ValueError(
            f"posterior of datapoint {worst} puts {min(float(peak[worst]), 1.0):.2f} of its "
            "mass on one "
            "grid node; raise num_points or narrow bounds"
        )
    log_mass = log_mass.reshape((num_points,) * latent_dim + (log_mass.shape[-1],))
    for axis in range(latent_dim):
        others = tuple(d for d in range(latent_dim) if d != axis)
        marginal = log_mass.logsumexp(others) if others else log_mass  # [num_points, batch]
        for end, is_support_end in zip(("low", "high"), support_ends):
            if not is_support_end:
                continue
            nearest = marginal[:3] if end == "low" else marginal.flip(0)[:3]
            # an integrand like u^s (in the substituted variable of _quadrature_rule) falls
            # by s log 3 from the first node to the second and s log(5/3) to the third; a
            # smooth one, about equally: a rise means s < 0, a density that grows toward
            # the end faster than |z - end|^(1/END_POWER - 1)
            rise = (nearest[0] - nearest[1]) - (nearest[1] - nearest[2])
            # where the end node holds next to no mass the end adds nothing to the integral
            # (a probability clamped near 0 by torch, nodes rounded together in float32)
            rise = rise.where(nearest[0] > LOG_NEGLIGIBLE_MASS, -math.inf)
            if (rise > 0.005).any():
                worst = int(rise.nan_to_num(-1.0).argmax())
                raise ValueError(
                    f"the posterior density of datapoint {worst} climbs steeply toward the "
                    f"{end} end of the support of site '{site}': a density that grows there "
                    f"without bound as fast as |z - end|^(a - 1) with a < 1/{END_POWER} (a "
                    "Beta or Gamma concentration below that) cannot be integrated on this "
                    "grid; a bounded one that peaks within a few grid spacings of it needs a "
                    "larger num_points")
        _check_rounded_nodes(marginal, nodes, axis_log_w, site)
