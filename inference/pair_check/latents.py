"""Checks of each latent's guide against the model: supports (kinds, reach), whether the
model's distribution can score the guide's draw, and ``Delta`` guide sites (point masses, an
AutoGuide's transforms of its auxiliary draw and their Jacobians).
"""

from __future__ import annotations

import math
import warnings

import torch
from pyro import poutine
from pyro.distributions import MaskedDistribution
from pyro.infer.autoguide import AutoGuide
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import constraints

from ..checks import autograd_arguments, recording_autograd, user_stacklevel, validation_enabled
from ..densities import closed_form_kl
from ..random_state import forked_rng
from ..supports import (
    describe_support,
    measure_zero,
    support_bounds,
    support_kinds_differ,
    support_of,
    support_within,
)
from .shapes import missing_inverse, shape_mismatch
from .sites import (
    DATA_PLATE,
    PairError,
    data_frame,
    family,
    is_delta,
    latent_dependencies_of_pair,
    latent_dependencies_of_traces,
    sample_sites,
    site_mask,
    tensor_text,
    trace_pair,
    unwrapped,
    validation_off,
    value_kind,
)

# The seed of the second draw that tells a support moving with the latents from a fixed one.
OTHER_DRAW_SEED = 20261129


def check_observed_values(model_sites, skip=()) -> None:
    """Score each observed site's value once, as Pyro's ELBOs do on every step, so that a
    distribution validating its arguments (Pyro's validation, on by default) refuses a value
    outside its support here: the estimators' later passes skip validation and would score
    it silently (a Bernoulli at 3, a Poisson at 2.5). Sites named in ``skip`` (a support that
    moves with the guide's draw: :func:`draw_dependent_supports`) are not judged."""
    for site in model_sites:
        if not site["is_observed"] or site["name"] in skip:
            continue
        if not torch.is_tensor(site["value"]):
            raise PairError(f"observed site '{site['name']}' observes a "
                            f"{type(site['value']).__name__}; Pyro's distributions score "
                            "tensors: pass the data as a tensor")
        value = site["value"]
        try:
            log_p = site["fn"].log_prob(value)
        except ValueError as error:
            raise PairError(f"observed site '{site['name']}' ({family(site['fn'])}): {error}"
                            f"{_plate_size_hint(site)}") from None
        except (RuntimeError, TypeError, NotImplementedError) as error:  # torch's own
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            remedy = ("" if value.is_floating_point() or value.is_complex() else
                      ": pass the data as floats (x.float())")
            raise PairError(
                f"observed site '{site['name']}' ({family(site['fn'])}) cannot score its "
                f"value of dtype {value.dtype} and shape {list(value.shape)} "
                f"({type(error).__name__}: {first}){remedy}{_plate_size_hint(site)}") from None
        _check_whole_counts(site)
        _warn_point_mass_observation(site, log_p)


def _check_whole_counts(site) -> None:
    """``PairError`` for an observed value of a multinomial support (``Multinomial``,
    ``DirichletMultinomial``) that is not whole counts: torch's constraint checks only the
    signs and the total, and ``log_prob`` (Gamma functions of the values) scores proportions
    such as ``[0.5, 0.3, 0.2]`` at a finite number where the model gives them probability 0."""
    try:
        support = site["fn"].support
    except NotImplementedError:  # a user's distribution without one
        return
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    value = site["value"]
    if not isinstance(support, constraints._Multinomial) or not value.is_floating_point():
        return
    fractional = value != value.round()
    # masked values go unscored: poutine.mask's, and those of Distribution.mask(m) at any
    # level of the distribution (each mask over that level's batch dims)
    masks = [(site["mask"], site["fn"].event_dim)]
    fn = site["fn"]
    while fn is not None:
        if isinstance(fn, MaskedDistribution):
            masks.append((fn._mask, len(fn.event_shape)))
        fn = getattr(fn, "base_dist", None)
    for mask, event_dims in masks:
        if mask is not None and mask is not True:
            mask = torch.as_tensor(mask, device=value.device)
            fractional = fractional & mask.reshape(mask.shape + (1,) * event_dims)
    if fractional.any():
        row = value[fractional.any(-1)][0] if value.dim() > 1 else value
        raise PairError(
            f"observed site '{site['name']}' ({family(site['fn'])}) observes values that are not "
            f"whole counts, e.g. {row.tolist()[:8]}: the model gives them probability 0 "
            "(torch's multinomial constraint checks only signs and totals, and log_prob would "
            "score them at a finite number). Pass counts (non-negative integers), or a "
            "continuous likelihood of proportions (dist.Dirichlet)")


def _warn_point_mass_observation(site, log_p: torch.Tensor) -> None:
    """Warn when an observed ``Delta`` (not masked out: ``pyro.deterministic`` is) puts the
    data at density zero on this draw: a point mass at a continuous latent is met by no draw,
    so every weight is zero and the estimates are ``-inf``."""
    if not is_delta(site["fn"]) or site["mask"] is False or not torch.is_tensor(log_p):
        return
    missed = torch.isneginf(log_p)
    if missed.any():
        warnings.warn(
            f"observed site '{site['name']}' is a Delta (a point mass) whose value misses the "
            f"data in {int(missed.sum())} of {missed.numel()} entries at this draw: a point "
            "mass at a continuous latent is met by no draw, so the weights are zero and the "
            "estimates -inf. Observe through a noise distribution (dist.Normal(z, scale)), "
            f"or observe the latent itself (pyro.sample('z', ..., obs=x))",
            stacklevel=user_stacklevel())


def draw_dependent_supports(model, guide, args, kwargs, model_sites) -> tuple[str, ...]:
    """Observed sites whose support moves with the latents: ``x ~ Uniform(0, z)``, ``k ~
    Binomial(n, p)`` with ``n`` latent. Found by running the pair on another draw (its own
    seed, random state restored, effects hidden) and comparing the supports' bounds
    (:func:`inference.supports.support_bounds`) with ``model_sites``' run. A value outside
    such a support at one draw has density zero there (that particle's weight is zero),
    which is no fault of the data."""
    bounded = [site for site in model_sites if site["is_observed"] and support_bounds(site["fn"])]
    if not bounded:
        return ()
    try:
        with forked_rng(), poutine.block(), torch.no_grad(), validation_enabled(False):
            torch.manual_seed(OTHER_DRAW_SEED)
            other, _ = trace_pair(model, guide, args, kwargs)
    except Exception:  # noqa: BLE001 - the caller's refusal stands when this run fails
        return ()
    moved = []
    for site in bounded:
        node = other.nodes.get(site["name"])
        if node is None or node["type"] != "sample":
            continue
        first, second = support_bounds(site["fn"]), support_bounds(node["fn"])
        if len(first) != len(second) or any(
                a.shape != b.shape or not torch.equal(a, b) for a, b in zip(first, second)):
            moved.append(site["name"])
    return tuple(moved)


def _plate_size_hint(site) -> str:
    """Why an observed value may not fit: its rows against the size of the ``"data"``
    plate, which the model takes from the guide's plate when it is replayed."""
    frame = data_frame(site)
    value = site["value"]
    dim = None if frame is None else value.dim() + frame.dim - len(site["fn"].event_shape)
    if dim is None or not 0 <= dim < value.dim() or value.shape[dim] == frame.size:
        return ""
    return (f" The value has {value.shape[dim]} rows along pyro.plate('{DATA_PLATE}'), whose "
            f"size is {frame.size}: the model's plate takes its size (and indices) from the "
            "guide's when the guide's draws are replayed, so a guide that sizes "
            f"pyro.plate('{DATA_PLATE}', ...) otherwise than the data (len(x)) gives the model "
            "that size")


def check_observed_values_validated(model, guide, args, kwargs, skip=()) -> None:
    """:func:`check_observed_values` on a run with Pyro's validation on, for a caller that
    turned it off (a common habit for speed, under which a Bernoulli scores 3 and a model's
    own data checks are skipped): random state restored, effects hidden. A distribution
    whose parameters that validation refuses ("Expected parameter ...") may be why it was
    turned off: then nothing is judged. A distribution built with ``validate_args=False``
    keeps its choice."""
    try:
        with forked_rng(), poutine.block(), torch.no_grad(), validation_enabled(True):
            model_trace, _ = trace_pair(model, guide, args, kwargs)
            check_observed_values(list(sample_sites(model_trace, observed=True)), skip)
    except PairError:
        raise
    except ValueError as error:
        if "Expected parameter" not in str(error):
            raise


def check_support_kinds(model_sites, guide_latents) -> None:
    """Refuse a guide latent whose support is continuous where the model site's is discrete
    (a ``RelaxedBernoulli``, ``RelaxedBernoulliStraightThrough`` or
    ``RelaxedOneHotCategorical`` guide for a ``Bernoulli``, ``Categorical`` or
    ``OneHotCategorical`` latent), or the reverse: a density and a mass function have no
    ratio that is an importance weight (the ELBO came out ``-inf``, or finite and wrong)."""
    for guide_site, model_site in _support_pairs(model_sites, guide_latents):
        guide_support = support_of(guide_site["fn"])[0]
        model_support = support_of(model_site["fn"])[0]
        if not support_kinds_differ(guide_support, model_support):
            continue
        guide_kind = "discrete" if guide_support.is_discrete else "continuous"
        model_kind = "discrete" if model_support.is_discrete else "continuous"
        remedy = ("Draw it from a discrete guide on the model's support (a Bernoulli or "
                  "Categorical guide with learned probabilities); a relaxed distribution "
                  "trains a relaxed model, whose latent is continuous too"
                  if model_kind == "discrete" else
                  "Draw it from a continuous guide on the model's support (e.g. a Normal, or "
                  "AutoNormal)")
        raise PairError(
            f"latent site '{guide_site['name']}': the guide's {family(guide_site['fn'])} "
            f"is {guide_kind} (support {describe_support(guide_support)}) and the model's "
            f"{family(model_site['fn'])} is {model_kind} (support "
            f"{describe_support(model_support)}): p(x, z) / q(z) of a mass function and a "
            f"density is no importance weight, so the ELBO and the bounds are meaningless "
            f"(-inf where the draws miss the model's support, finite and wrong where they "
            f"are rounded onto it). {remedy}")


class _AuxiliaryAsLeaves(Messenger):
    """Make every auxiliary guide draw a leaf that requires gradients and record the
    ``Delta`` sites drawn after them (their messages)."""

    def __init__(self):
        super().__init__()
        self.leaves, self.deltas = {}, {}

    def _pyro_post_sample(self, msg):
        value = msg["value"]
        if msg["is_observed"] or not torch.is_tensor(value):
            return
        if msg["infer"].get("is_auxiliary"):
            if value.is_floating_point():
                msg["value"] = value.detach().requires_grad_(True)
                self.leaves[msg["name"]] = msg["value"]
        elif is_delta(msg["fn"]):
            self.deltas[msg["name"]] = msg


def _jacobian_mismatch(msg, aux_name: str, leaf: torch.Tensor,
                       trusted: bool) -> tuple | None:
    """``(site, auxiliary site, log_density given, log Jacobian term expected)`` when the
    ``Delta`` of ``msg`` is a map of the auxiliary draw ``leaf`` of the same shape whose
    ``log_density`` is not ``-log|det d value / d aux|`` per batch element (summed over its
    event dims), the change of variables that makes it a density; None otherwise, or when
    nothing can be judged: a map that couples batch elements or is too large for its full
    Jacobian (:func:`_log_jacobian`), or a ``log_density`` given by a ``trusted`` guide (an
    AutoGuide's: the slope read here is that of the map in the value's precision, which near
    a support's end, a sigmoid at 1 - 2e-6 in float32, is off by more than any tolerance,
    while AutoNormal's own term is right). A hand-written guide's given term is judged with
    a tolerance of 1%: a forgotten Jacobian of ``m + L eps``, or a ``log_density`` that counts
    q a second time, put every bound above ``log p(x)``."""
    value = msg["value"]
    if value.shape != leaf.shape or not bool(site_mask(msg).all()):
        return None
    fn = unwrapped(msg["fn"])
    given = torch.as_tensor(fn.log_density, dtype=value.dtype).detach()
    judged = bool((given != 0).any())
    if judged and trusted:
        return None
    found = _log_jacobian(value, leaf, msg["fn"].event_dim)
    if found is None:
        return None
    log_det, smallest = found
    try:
        given = given.expand(log_det.shape)
    except RuntimeError:
        return None
    # a given term is judged where the map's slope is read to float precision: not near a
    # bounded support's end, where it is tiny (a sigmoid at 1 - 3e-7 in float32 has no digit
    # of its slope u (1 - u) left)
    floor = math.log(torch.finfo(value.dtype).eps) / 3 if judged else -math.inf
    readable = torch.isfinite(log_det) & (smallest > floor)
    expected = -log_det.detach()
    tolerance = (1e-2 if judged else 1e-3) * (1.0 + expected.abs())
    if bool(((given - expected).abs() <= tolerance)[readable].all()):
        return None
    return msg["name"], aux_name, given, expected


# The most elements of a Delta whose full Jacobian is computed (one batched backward pass).
MAX_JACOBIAN_ELEMENTS = 1024


def _log_jacobian(value: torch.Tensor, leaf: torch.Tensor, event_dim: int):
    """``(log|det d value / d leaf|, smallest log|slope|)`` per batch element of ``value``
    (same shape as ``leaf``: ``batch_shape + event_shape``; ``-inf`` where a slope is zero,
    NaN where one is not finite), or None: an elementwise map is read from two backward
    passes (its slope, checked against a randomly weighted one); any other from its full
    Jacobian, when of at most :data:`MAX_JACOBIAN_ELEMENTS` elements and free of terms
    between batch elements (its smallest slope taken as the block's mean log|det|)."""
    (slope,) = torch.autograd.grad(value.sum(), leaf, retain_graph=True, allow_unused=True)
    if slope is None:
        return None
    weights = torch.rand_like(value) + 0.5
    (weighted,) = torch.autograd.grad((value * weights).sum(), leaf, retain_graph=True)
    finite = torch.isfinite(slope) & torch.isfinite(weighted)
    scale = float(slope[finite].abs().max()) if bool(finite.any()) else 0.0
    if bool(finite.any()) and torch.allclose(weighted[finite], (weights * slope)[finite],
                                             rtol=1e-4, atol=1e-6 * scale):
        log_slope = slope.abs().log().where(finite, math.nan)
        batch = log_slope.shape[:log_slope.dim() - event_dim] + (-1,)
        flat = log_slope.reshape(batch)
        return flat.sum(-1), flat.min(-1).values.where(~flat.isnan().any(-1), math.nan)
    size = value.numel()
    if size > MAX_JACOBIAN_ELEMENTS or not bool(finite.all()):
        return None
    batch = value.shape[:value.dim() - event_dim]
    rows = math.prod(batch)
    try:
        (jacobian,) = torch.autograd.grad(
            value, leaf, grad_outputs=torch.eye(size, dtype=value.dtype,
                                                device=value.device).reshape(size, *value.shape),
            retain_graph=True, is_grads_batched=True)
    except RuntimeError:  # an operation without a batched backward
        return None
    jacobian = jacobian.reshape(rows, size // rows, rows, size // rows).double()
    blocks = jacobian.diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # [rows, event, event]
    total = jacobian.abs().sum()
    if not bool(torch.isfinite(total)) or \
            float(total - blocks.abs().sum()) > 1e-6 * float(total):
        return None  # couples batch elements (or not finite): nothing judged
    log_det = torch.linalg.slogdet(blocks)[1].to(value.dtype).reshape(batch)
    return log_det, log_det / (size // rows)


def delta_dependence(guide, args, kwargs, guide_latents, auxiliary) -> tuple:
    """``(free, jacobian, feeding)``: the ``Delta`` guide sites whose value does not depend
    on any auxiliary draw (point masses: AutoDelta, ``Delta(pyro.param(...))``), told apart
    from an AutoGuide's transform of its auxiliary latent (AutoNormal's ``z_unconstrained``,
    AutoDiagonalNormal's ``_AutoDiagonalNormal_latent``) by the autograd graph of one draw
    whose auxiliary values are made gradient leaves; the :func:`_jacobian_mismatch`
    records of the dependent ones; and the auxiliary sites some ``Delta`` depends on."""
    deltas = [s["name"] for s in guide_latents
              if is_delta(s["fn"]) and s["name"] not in auxiliary]
    if not deltas or not auxiliary:
        return tuple(deltas), (), frozenset()
    recorder = _AuxiliaryAsLeaves()
    free, jacobian, feeding = [], [], set()
    trusted = isinstance(guide, AutoGuide)  # Pyro's own change-of-variables terms
    with poutine.block(), forked_rng(), recording_autograd():
        args, kwargs = autograd_arguments(args, kwargs)
        with recorder:
            guide(*args, **kwargs)
        names, leaves = list(recorder.leaves), list(recorder.leaves.values())
        for name in deltas:
            msg = recorder.deltas.get(name)
            value = None if msg is None else msg["value"]
            if value is None or not leaves or not value.requires_grad:
                free.append(name)
                continue
            grads = torch.autograd.grad(value.sum(), leaves, retain_graph=True,
                                        allow_unused=True)
            used = [i for i, g in enumerate(grads) if g is not None]
            feeding.update(names[i] for i in used)
            if not used:
                free.append(name)
            elif len(used) == 1:
                found = _jacobian_mismatch(msg, names[used[0]], leaves[used[0]], trusted)
                if found is not None:
                    jacobian.append(found)
    return tuple(free), tuple(jacobian), frozenset(feeding)


def jacobian_error(record) -> PairError:
    name, aux, given, expected = record
    shown = tensor_text(given), tensor_text(expected)
    return PairError(
        f"guide site '{name}' is a Delta computed from auxiliary site '{aux}', and its "
        f"log_density ({shown[0]}) is not the change of variables -log|det d {name} / d "
        f"{aux}| ({shown[1]}): q({name}) = q({aux}) |det d {name} / d {aux}|^-1, so every log "
        "weight would be off by the difference (a forgotten Jacobian, or a log_density that "
        f"counts q({name}) itself). Pass the Jacobian term alone: pyro.sample('{name}', "
        f"dist.Delta(value, log_density=...)) with log_density = -log|det d {name} / d {aux}| "
        "(summed over the event dims for an elementwise map), as Pyro's AutoNormal does")


def _support_pairs(model_sites, guide_latents):
    """``(guide site, model site)`` of the latents both sample, the guide's not a Delta (an
    AutoGuide's latents are functions of its auxiliary site; a point has no support to
    compare)."""
    model_latents = {s["name"]: s for s in model_sites if not s["is_observed"]}
    for guide_site in guide_latents:
        model_site = model_latents.get(guide_site["name"])
        if model_site is None or is_delta(guide_site["fn"]) or is_delta(model_site["fn"]):
            continue
        yield guide_site, model_site


def _support_record(guide_site, model_site, guide_support, model_support) -> tuple:
    return (guide_site["name"], family(guide_site["fn"]), describe_support(guide_support),
            family(model_site["fn"]), describe_support(model_support))


def support_mismatches(model_sites, guide_latents):
    """``(site, guide family, guide support, model family, model support)`` for each guide
    latent whose support is known not to lie inside the model's: the guide's support exact
    (:func:`inference.supports.support_of`), the model's holding its own."""
    for guide_site, model_site in _support_pairs(model_sites, guide_latents):
        guide_support, exact = support_of(guide_site["fn"])
        model_support = support_of(model_site["fn"])[0]
        if exact and support_within(guide_support, model_support) is False:
            yield _support_record(guide_site, model_site, guide_support, model_support)


def measure_zero_supports(model_sites, guide_latents) -> tuple:
    """The latent sites whose guide support reaches beyond a model support of measure zero
    (:func:`inference.supports.measure_zero`: a Normal guide for a Dirichlet latent): the
    guide never proposes a value of positive density, so every importance weight is zero."""
    names = []
    for guide_site, model_site in _support_pairs(model_sites, guide_latents):
        guide_support, exact = support_of(guide_site["fn"])
        model_support = support_of(model_site["fn"])[0]
        if exact and measure_zero(model_support) and \
                support_within(guide_support, model_support) is False:
            names.append(guide_site["name"])
    return tuple(names)


def support_gaps(model_sites, guide_latents):
    """The same records for each latent whose model support is known to reach beyond the
    guide's: the model's support exact, the guide's holding its own; or, for a guide with
    finitely many values, one of them it gives probability 0 (``probs`` 0, ``logits``
    -inf) where the model's is positive (:func:`value_without_mass`)."""
    for guide_site, model_site in _support_pairs(model_sites, guide_latents):
        model_support, exact = support_of(model_site["fn"])
        guide_support = support_of(guide_site["fn"])[0]
        if exact and support_within(model_support, guide_support) is False:
            yield _support_record(guide_site, model_site, guide_support, model_support)
            continue
        missed = value_without_mass(guide_site["fn"], model_site)
        if missed is not None:
            name, guide_family, guide_text, model_family, model_text = _support_record(
                guide_site, model_site, guide_support, model_support)
            yield (name, guide_family, f"{guide_text} less the values it gives probability 0 "
                   f"(e.g. {missed}, of positive probability in the model)",
                   model_family, model_text)


# Runs of the model on its prior's draws that look into a support gap for posterior mass.
GAP_PROBE_RUNS = 32


def _per_datapoint_all(mask: torch.Tensor, site) -> torch.Tensor:
    """``[batch]``: where ``mask`` (of ``site``'s batch shape) holds for every entry of a
    datapoint of the ``"data"`` plate."""
    dim = mask.dim() + data_frame(site).dim
    return mask.movedim(dim, 0).reshape(mask.shape[dim], -1).all(1)


def gaps_the_data_rule_out(model, guide_latents, args, kwargs, gap_names,
                           dependent_support) -> tuple[str, ...]:
    """Latent sites of a support gap (the guide's support narrower than the model's) that
    the data rule out: in :data:`GAP_PROBE_RUNS` runs of the model on its prior's own draws,
    every draw in the gap puts an observed value outside its support (the sites of
    ``dependent_support``: ``x ~ Uniform(0, z)`` with a guide on ``z > x``). The gap then
    holds no posterior mass, and the weights estimate the evidence, not a part of it. A gap
    no prior draw fell in is not ruled out."""
    if not dependent_support or not gap_names:
        return ()
    guide_fns = {site["name"]: site["fn"] for site in guide_latents}
    seen = dict.fromkeys(gap_names, False)  # a prior draw in the gap
    open_ = dict.fromkeys(gap_names, False)  # ... with the data inside their support
    try:
        with forked_rng(), poutine.block(), torch.no_grad(), validation_enabled(False):
            torch.manual_seed(OTHER_DRAW_SEED)
            for _ in range(GAP_PROBE_RUNS):
                trace = poutine.trace(model).get_trace(*args, **kwargs)
                inside = None  # [batch]: every dependent observation inside its support
                for name in dependent_support:
                    node = trace.nodes[name]
                    here = _per_datapoint_all(support_of(node["fn"])[0].check(node["value"]),
                                              node)
                    inside = here if inside is None else inside & here
                for name in gap_names:
                    node = trace.nodes[name]
                    guide_support = support_of(guide_fns[name])[0]
                    gap = ~_per_datapoint_all(guide_support.check(node["value"]), node)
                    seen[name] |= bool(gap.any())
                    open_[name] |= bool((gap & inside).any())
    except Exception:  # noqa: BLE001 - a pair this probe cannot run keeps its refusal
        return ()
    return tuple(name for name in gap_names if seen[name] and not open_[name])


def _never_drawn(fn, values: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """``[n, *batch]``: where ``fn`` cannot draw ``values`` (``[n, *batch, *event]``, its
    listed values): log-probability -inf, or, for the families that sample from ``probs``
    (given, or computed from their logits), probability exactly 0. torch's ``log_prob``
    clamps such probabilities to a tiny one, but it samples from them as they are: a
    ``Bernoulli(probs=0.)`` scores 1 at -16.6 and never draws it. Left alone: a probability
    of exactly 1 (a confident encoder's ``sigmoid(17.)`` rounds to 1 in float32) and a 0
    that finite logits underflowed to."""
    never = torch.isneginf(log_p)
    if not isinstance(fn, (torch.distributions.OneHotCategorical, torch.distributions.Categorical,
                           torch.distributions.Bernoulli, torch.distributions.Binomial)):
        return never
    probs = fn.probs  # what it samples from: given, or computed from its logits
    if isinstance(fn, torch.distributions.OneHotCategorical):
        mass = (probs * values).sum(-1)
    elif isinstance(fn, torch.distributions.Categorical):
        mass = probs.expand(*values.shape, probs.shape[-1]).gather(
            -1, values.long().unsqueeze(-1)).squeeze(-1)
    elif isinstance(fn, torch.distributions.Bernoulli):
        mass = torch.where(values == 1, probs, 1.0)
    else:  # Binomial
        mass = torch.where((probs == 0) & (values > 0), 0.0, 1.0)
    # a zero written as such scores log(eps) (-15.9 in float32) through torch's clamp; one
    # that finite logits underflowed to (a confident network's -200) scores those logits,
    # far below: that guide keeps its say
    written = log_p > math.log(torch.finfo(probs.dtype).eps) - 10
    return never | ((mass == 0) & written)


MAX_ENUMERATED = 10 ** 7  # values x batch elements scored by value_without_mass, at most


def value_without_mass(guide_fn, model_site) -> str | None:
    """One value (as text) that the guide's distribution gives probability 0 and the model's
    site (as traced: given the latents drawn before it) a positive one, or None. Only for
    guides whose values can be listed (``enumerate_support``; through ``Independent``
    wrappers, element by element) and up to :data:`MAX_ENUMERATED` scores: such a guide
    never proposes that value, so its importance weights miss its posterior mass (a
    ``Categorical(logits=[0, 0, -inf])`` guide put IWAE_20000 7 nats below log p(x))."""
    guide_base, model_fn = guide_fn, model_site["fn"]
    while isinstance(guide_base, torch.distributions.Independent):
        guide_base = guide_base.base_dist
    while isinstance(model_fn, torch.distributions.Independent):
        model_fn = model_fn.base_dist
    if not getattr(guide_base, "has_enumerate_support", False) or model_site["args"] \
            or model_site["kwargs"]:
        return None
    try:
        count = guide_base.support.upper_bound - guide_base.support.lower_bound + 1 \
            if hasattr(guide_base.support, "upper_bound") else None
        if count is not None and int(torch.as_tensor(count).max()) * max(
                guide_base.batch_shape.numel(), 1) > MAX_ENUMERATED:
            return None
        values = guide_base.enumerate_support(expand=True)  # [n, *batch, *event]
        if values.numel() > MAX_ENUMERATED:
            return None
        with validation_off(guide_base), validation_off(model_fn), torch.no_grad():
            guide_log_p = guide_base.log_prob(values)
            model_log_p = model_fn.log_prob(values)
            missed = _never_drawn(guide_base, values, guide_log_p) & (model_log_p > -math.inf)
    except (NotImplementedError, ValueError, RuntimeError, TypeError, IndexError):
        return None  # values it cannot list, or that the model cannot score as they are
    if missed.shape != guide_log_p.shape or not bool(missed.any()):
        return None  # (a model site of more batch dims than the guide's: not compared)
    return tensor_text(values[tuple(missed.nonzero()[0])])  # the value, its event dims whole


def unscorable_sites(model_sites, mismatches) -> tuple:
    """Sites of ``mismatches`` whose model distribution is a ``Categorical``: its log_prob
    indexes the probabilities with the value, so a class past its last one fails in torch
    (an out-of-bounds index, on a GPU a device-side assert) instead of scoring ``-inf``."""
    mismatched = {record[0] for record in mismatches}
    return tuple(site["name"] for site in model_sites if site["name"] in mismatched
                 and isinstance(unwrapped(site["fn"]), torch.distributions.Categorical))


def check_latents_scorable(model_sites, guide_latents, skip=()) -> None:
    """Refuse a latent whose guide draw the model's distribution cannot score at all (torch
    fails, whatever the value): a ``Categorical`` guide draws integers, and
    torch's ``Bernoulli.log_prob`` takes floating-point values only ("result type Float
    can't be cast to the desired output type Long", in every estimator and at fit's first
    step). Sites in ``skip`` (a ``Categorical`` model's out-of-range classes, refused per
    entry point) and values outside the model's support (a matter of the support checks)
    are left to the other checks."""
    for guide_site, model_site in _support_pairs(model_sites, guide_latents):
        if guide_site["name"] in skip:
            continue
        value = guide_site["value"]
        try:
            with validation_off(model_site["fn"]):
                model_site["fn"].log_prob(value, *model_site["args"], **model_site["kwargs"])
        except ValueError:  # a distribution's own check of the value: the support checks'
            continue
        except (KeyError, NotImplementedError) as error:
            if not missing_inverse(error):
                raise
            raise PairError(
                f"latent site '{guide_site['name']}': the model's prior "
                f"({family(model_site['fn'])}) is a transform without an inverse (Pyro's "
                "planar, radial and neural autoregressive flows score only the draw they just "
                "made), so it cannot score the guide's draw, which every weight and loss "
                "needs: give the prior an invertible flow (T.spline, T.affine_autoregressive, "
                "T.affine_coupling)") from None
        except (RuntimeError, TypeError, IndexError, AssertionError) as error:
            # (an assert inside the distribution: GaussianScaleMixture scores one vector)
            first = str(error).strip().splitlines()[0] if str(error).strip() else \
                "(no message: a failed check inside its log_prob)"
            guide_family, model_family = family(guide_site["fn"]), family(model_site["fn"])
            hint = (" Give the guide a family whose draws the model's distribution scores "
                    "(the model's own family, on its support).")
            if model_family == "Bernoulli" and torch.is_tensor(value) and \
                    not value.is_floating_point():
                hint = (" torch's Bernoulli scores floating-point values only, and a "
                        f"{guide_family} draws {value.dtype} values (even where the supports "
                        "agree, as a Categorical over 2 classes does with {0, 1}). Use a "
                        "Bernoulli guide (or any guide drawing floating-point 0/1 values) "
                        "for a Bernoulli latent.")
            raise PairError(
                f"latent site '{guide_site['name']}': the model's {model_family} (support "
                f"{describe_support(support_of(model_site['fn'])[0])}) cannot score the "
                f"guide's {guide_family} draw (support "
                f"{describe_support(support_of(guide_site['fn'])[0])}, "
                f"{value_kind(value)}): {type(error).__name__}: {first}.{hint}") from error


def replay_model(model, guide_trace, args, kwargs):
    """The model's trace replayed on the guide's draws. When the model fails there, the
    latent sites it reached are compared with the guide's: a guide whose support reaches
    beyond the model's has its draw moved inside (:func:`_moved_inside`) and the model is
    run again, so that the survey does not depend on where the draw fell (its draws outside
    have weight zero in the estimators); one the guide draws in another shape, event dims or
    kind of support (a ``OneHotCategorical`` guide for a ``Categorical`` latent) is named in
    a :class:`PairError`, the model's error chained to it; any other failure is the model's
    own and propagates as it is."""
    guide_latents = list(sample_sites(prune_subsample_sites(guide_trace), observed=False))
    for _ in range(len(guide_latents) + 1):
        handler = poutine.trace(poutine.replay(model, trace=guide_trace))
        try:
            return handler.get_trace(*args, **kwargs)
        except Exception as error:
            reached = list(sample_sites(prune_subsample_sites(handler.msngr.trace)))
            found = _replay_disagreement(reached, guide_latents)
            if found is None:
                raise
            name, what, model_site = found
            if model_site is not None and _moved_inside(guide_trace, model_site):
                continue
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise PairError(
                f"latent site '{name}' has {what}: the guide must draw the value the model "
                "scores (same shape, same .to_event(n), same support, same dtype); the model "
                "failed when "
                f"it was run on the guide's draw ({type(error).__name__}: {first_line})"
            ) from error
    raise AssertionError("unreachable: each retry moves one more latent inside")


def _moved_inside(guide_trace, model_site) -> bool:
    """Whether the guide's draw of ``model_site``'s latent had entries outside the model's
    support, now replaced by a point inside (torch's ``transform_to(support)`` of 0) for the
    survey's run; False when there were none or no such point is known (a discrete
    support)."""
    node = guide_trace.nodes[model_site["name"]]
    value = node["value"]
    support = support_of(model_site["fn"])[0]
    try:
        inside = support.check(value)
        point = torch.distributions.transform_to(support)(torch.zeros_like(value))
    except (NotImplementedError, ValueError, RuntimeError):
        return False
    if bool(inside.all()):
        return False
    node["value"] = torch.where(inside.reshape(inside.shape + (1,) * (value.dim()
                                                                     - inside.dim())),
                                value, point)
    return True


def _replay_disagreement(model_sites, guide_latents) -> tuple | None:
    """``(site, what differs, model site or None)`` for the first latent the model reached
    whose guide draw disagrees with it in shape, event dims or support, else None; the
    model site is given when the guide's support reaches beyond the model's."""
    dims = [-frame.dim for site in (*model_sites, *guide_latents)
            for frame in site["cond_indep_stack"] if frame.vectorized]
    nesting = max(dims, default=0)
    for guide_site, model_site in _support_pairs(model_sites, guide_latents):
        found = shape_mismatch(model_site, guide_site, nesting)
        if found:
            return guide_site["name"], (f"{found}, a {family(guide_site['fn'])} in the guide "
                                        f"and a {family(model_site['fn'])} in the model"), None
        guide_support, exact = support_of(guide_site["fn"])
        model_support = support_of(model_site["fn"])[0]
        within = support_within(guide_support, model_support)
        reaches = within is False and exact
        if reaches or within is None and _support_kinds_differ(guide_support, model_support):
            return guide_site["name"], (
                f"support {describe_support(guide_support)} in the guide "
                f"({family(guide_site['fn'])}) and {describe_support(model_support)} in the "
                f"model ({family(model_site['fn'])})"), model_site if reaches else None
        value, drawn = guide_site["value"], _drawn_dtype(model_site["fn"])
        if drawn is not None and torch.is_tensor(value) and value.dtype != drawn:
            # a Binomial guide's float draw where the model indexes with a Categorical's
            return guide_site["name"], (
                f"{value.dtype} values in the guide ({family(guide_site['fn'])}) where the "
                f"model's {family(model_site['fn'])} draws {drawn}"), None
    return None


def _drawn_dtype(fn) -> torch.dtype | None:
    """The dtype of ``fn``'s draws (one draw without gradients), None when it cannot draw."""
    try:
        with torch.no_grad(), forked_rng():
            return fn.sample().dtype
    except Exception:  # noqa: BLE001 - only a hint for a message; the model's error stands
        return None


def _support_kinds_differ(first, second) -> bool:
    """Whether one support is discrete and the other continuous, or both discrete of
    different kinds (``one_hot`` and ``integer_interval``; for two supports that
    :func:`inference.supports.support_within` cannot compare)."""
    try:
        kinds = [support_base.is_discrete for support_base in map(_support_base, (first, second))]
    except NotImplementedError:
        return False
    if kinds[0] != kinds[1]:
        return True
    return kinds[0] and type(_support_base(first)) is not type(_support_base(second))


def _support_base(constraint):
    while isinstance(constraint, torch.distributions.constraints.independent):
        constraint = constraint.base_constraint
    return constraint


def late_parents(model_sites, guide_latents, registered_only: bool = False) -> tuple:
    """``(site, parent)`` for each model latent whose closed-form KL term would be biased.

    The analytic term ``-KL(q(z | ...) || p(z | pa))`` has the expectation of the sampled
    ``log p(z | pa) - log q(z | ...)`` only when the model's parents ``pa`` of ``z`` are fixed
    once ``z`` is drawn, i.e. drawn by the guide before ``z``. ``parent`` is a latent that the
    model samples before ``site`` (so ``p(site | ...)`` may depend on it) and the guide samples
    after ``site`` (so its draw may depend on ``site``'s): a guide ``q(z1 | x) q(z2 | z1)`` for
    a model ``p(z2) p(z1 | z2)``. The order of the sites stands in for their dependencies
    (Pyro's mean-field restriction: model and guide sample the latents in one order).

    Args:
        model_sites, guide_latents: sample sites of one replayed run, in the order sampled.
        registered_only: keep only sites for which ``kl_divergence(q, p)`` is registered and
            the guide site is not a ``Delta`` (those ``TraceMeanField_ELBO`` scores in closed
            form; the others are scored as sampled, which needs no order).
    """
    found, seen = [], set()
    for name, parent in _late_parent_pairs(model_sites, guide_latents, registered_only):
        if name not in seen:  # the first such parent per site
            seen.add(name)
            found.append((name, parent))
    return tuple(found)


def _late_parent_pairs(model_sites, guide_latents, registered_only: bool):
    """Every ``(site, parent)`` of :func:`late_parents` (all late parents of each site)."""
    guide_at = {site["name"]: (i, site) for i, site in enumerate(guide_latents)}
    before = []
    for site in model_sites:
        if site["is_observed"]:
            continue
        name = site["name"]
        if name in guide_at:
            position, guide_site = guide_at[name]
            parents = [p for p in before if guide_at.get(p, (-1,))[0] > position]
            if parents and (not registered_only
                            or _kl_registered(guide_site["fn"], site["fn"])):
                yield from ((name, parent) for parent in parents)
        before.append(name)


def _descendants_reach(guide_dependencies: dict, parent: str, site: str) -> bool:
    """Whether the guide's draw of ``parent`` depends on ``site``'s, directly or through
    other latents (the transitive closure of ``guide_dependencies``)."""
    stack, visited = [parent], {parent}
    while stack:
        for upstream in guide_dependencies.get(stack.pop(), ()):
            if upstream == site:
                return True
            if upstream not in visited:
                visited.add(upstream)
                stack.append(upstream)
    return False


def dependent_late_parents(model_sites, guide_latents, model_dependencies,
                           guide_dependencies, registered_only: bool = False) -> tuple:
    """The :func:`late_parents` whose closed-form KL is biased by dependence, not only by
    order: ``(site, parent)`` is kept when the model's distribution of ``site`` depends on
    ``parent``'s value (``parent in model_dependencies[site]``) and the guide's draw of
    ``parent`` depends on ``site``'s, directly or through other latents
    (``guide_dependencies``). Then ``site`` and ``parent`` are not independent under the
    guide given what ``site`` is drawn from, and ``KL(q(site) || p(site | parent))`` at the
    drawn ``parent`` has not the expectation of ``log q(site) - log p(site | parent)``; in
    every other case it has (independent priors ``p(mu) p(sigma)`` with a guide ``q(sigma)
    q(mu | sigma)``, two independent latents in another order).

    Args:
        model_dependencies, guide_dependencies: :func:`.sites.latent_dependencies_in_trace`
            of the model's trace replayed on the guide's draws and of the guide's, or
            ``None`` when unknown. A pair whose site or parent is missing from a side's dict
            (a draw that carries no gradient: discrete, or taken under ``no_grad``) is kept
            (nothing known about it).
    """
    found, seen = [], set()
    for name, parent in _late_parent_pairs(model_sites, guide_latents, registered_only):
        if name in seen:
            continue
        model_known = (model_dependencies is not None and name in model_dependencies
                       and parent in model_dependencies)
        if model_known and parent not in model_dependencies[name]:
            continue
        guide_known = (guide_dependencies is not None and name in guide_dependencies
                       and parent in guide_dependencies)
        if guide_known and not _descendants_reach(guide_dependencies, parent, name):
            continue
        seen.add(name)
        found.append((name, parent))
    return tuple(found)


def biased_late_parents(model_trace, guide_trace, pair=None,
                        registered_only: bool = False) -> tuple:
    """:func:`dependent_late_parents` of a step's traces (the model's replayed on the
    guide's draws): the dependencies are read from the traces' own graph when the guide's
    draws require gradients, else from a rerun of ``pair`` (``(model, guide, args,
    kwargs)``, :func:`.sites.latent_dependencies_of_pair`); without either every
    order-flagged pair is kept (the conservative side)."""
    model_sites = list(sample_sites(model_trace))
    guide_latents = list(sample_sites(guide_trace, observed=False))
    if not late_parents(model_sites, guide_latents, registered_only):
        return ()
    dependencies = latent_dependencies_of_traces(model_trace, guide_trace)
    if dependencies is None and pair is not None:
        dependencies = latent_dependencies_of_pair(*pair)
    return dependent_late_parents(model_sites, guide_latents,
                                  *(dependencies or (None, None)), registered_only)


def _kl_registered(guide_fn, model_fn) -> bool:
    if is_delta(guide_fn):
        return False
    try:
        with torch.no_grad():
            closed_form_kl(guide_fn, model_fn)
    except Exception:  # noqa: BLE001 - not registered, or failing: not a closed form used
        return False
    return True


def late_parent_message(site: str, parent: str, called: str) -> str:
    """Why ``called`` refuses the closed-form KL of ``site`` (:func:`late_parents`)."""
    return (f"{called}: the model's distribution of latent '{site}' is sampled after "
            f"latent '{parent}' (it may depend on it), but the guide samples '{parent}' after "
            f"'{site}' (its draw may depend on '{site}'s). The closed-form "
            f"KL(q({site}) || p({site} | {parent})) then does not have the expectation of "
            f"log p({site} | {parent}) - log q({site}), so the objective is not the ELBO "
            "(Pyro's TraceMeanField_ELBO requires the guide to sample the latents in the "
            "model's order). Use loss='elbo' (Trace_ELBO, scored as sampled), or sample the "
            "latents in the guide in the model's order")
