"""Diagnostics of a trained latent-variable model: posterior collapse and representations.

References:
    [1] Burda, Grosse, Salakhutdinov (2015), Importance Weighted Autoencoders (active units).
    [2] Alain and Bengio (2016), Understanding intermediate layers using linear classifier
        probes.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import pyro.distributions as dist
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites, site_is_subsample
from pyro.distributions import Independent, Normal
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution

from ..checks import (
    as_int,
    as_number,
    autograd_arguments,
    autograd_tensor,
    check_dense_values,
    check_finite_tensor,
    check_one_program_call,
    check_pair_call,
    check_program,
    check_program_arguments,
    check_site_name,
    check_weights_memory,
    leaves_buffers,
    recording_autograd,
    validation_enabled,
)
from ..pair_check import (DATA_PLATE, PairError, attach_subsample, conditional_sites_of_guide,
                          data_frame, inspect_pair, is_delta, nonfinite_parameters,
                          sample_sites, site_list, site_mask, stale_parameters_error,
                          stored_shapes_checked, trace_pair)
from ..weights import (check_data, check_particle_memory, trace_log_density,
                       vectorized_traces, weight_itemsize, wide_mean)


def _batch_first(node) -> bool:
    """Whether a trace site lies in ``pyro.plate("data")`` with the data dim leftmost in its
    value."""
    frame = data_frame(node)
    return frame is not None and frame.dim is not None and \
        node["value"].dim() - node["fn"].event_dim + frame.dim == 0


def _refuse_swapped_programs(entry: str, guide_trace, model_trace=None) -> None:
    """``ValueError`` when the program passed as guide observes a site (it is a model: its
    latents would be read off the prior) or the one passed as model observes none."""
    observed = [site["name"] for site in sample_sites(guide_trace, observed=True)]
    if observed:
        raise ValueError(f"{entry}: the program passed as guide observes site '{observed[0]}', "
                         "so it is a model (its latents would come from the prior); pass the "
                         "guide, e.g. vae.guide, in its place")
    if model_trace is not None and not any(sample_sites(model_trace, observed=True)):
        raise ValueError(f"{entry}: the program passed as model observes no site (is it the "
                         "guide?); pass the model, which observes the data")


def _latent_sites_hint(trace, site: str, role: str) -> str:
    """``"; the guide's latent sites are ['z1', 'z2']: pass site='z1'"``, the hint after a
    refusal of ``site``, which ``trace`` (the ``role``'s) does not sample; ``""`` when it has
    no latent site at all."""
    names = [node["name"] for node in sample_sites(trace, observed=False)]
    if not names:
        return f"; the {role} has no latent site"
    return f"; the {role}'s latent sites are {names}: pass site={names[0]!r}"


def _shared_latents_hint(model_trace, guide_trace) -> str:
    """``"; the guide's latent sites are ['z']: pass site='z'"``, the hint after a refusal of
    a site that is not latent in both: only the guide's latents the model samples too are
    suggested, never an AutoGuide's auxiliary sites (``w_unconstrained``); the others are
    named as left out."""
    in_model = {node["name"] for node in sample_sites(model_trace, observed=False)}
    names, left_out = [], []
    for node in sample_sites(guide_trace, observed=False):
        shared = node["name"] in in_model and not node["infer"].get("is_auxiliary")
        (names if shared else left_out).append(node["name"])
    left = f" (leaving out {left_out}, which the model does not sample)" if left_out else ""
    if not names:
        return f"; the model samples none of the guide's latent sites{left}"
    return f"; the guide's latent sites are {names}{left}: pass site={names[0]!r}"


def _plate_subsamples(trace) -> dict:
    """``{plate name: (indices [subsample size], full size, drawn)}`` of the plates of an
    unpruned ``trace`` that keep fewer members than they declare; ``drawn``: the plate drew
    them at random (``subsample_size=B``), rather than being given them (``subsample=``)."""
    found = {}
    for node in trace.nodes.values():
        if node["type"] != "sample" or not site_is_subsample(node):
            continue
        fn = node["fn"]
        if node["value"].shape[0] < fn.size:
            drawn = fn.subsample_size is not None and fn.subsample_size < fn.size
            found[node["name"]] = (node["value"], fn.size, drawn)
    return found


def _refuse_drawn_inner_plates(entry: str, node, subsamples: dict) -> None:
    """``ValueError`` naming the plate when a plate of ``node`` other than ``"data"`` draws
    its members at random: the result would cover a random part of them, another each call."""
    for frame in node["cond_indep_stack"]:
        found = subsamples.get(frame.name)
        if frame.name != DATA_PLATE and found is not None and found[2]:
            raise ValueError(
                f"{entry}: site '{node['name']}' lies in pyro.plate('{frame.name}'), which "
                f"draws a random subsample ({len(found[0])} of its {found[1]} members), so "
                f"the result would cover another part of them on every call; call it with "
                f"pyro.plate('{frame.name}', {found[1]}) (no subsample_size)")


def _latent_pair(entry, model, guide, site, args, kwargs):
    """The model's and guide's traces on the data (subsample sites pruned) and the guide's
    plates that keep fewer members than they declare (:func:`_plate_subsamples`), after
    refusing swapped programs and a ``site`` that is not a latent site of both (naming the
    latent sites they share)."""
    check_program(model, "model")
    check_program(guide, "guide")
    check_data(args, kwargs)
    checked_model, checked_guide = stored_shapes_checked(model, guide)
    try:
        with poutine.block(), torch.no_grad():
            guide_full = poutine.trace(checked_guide).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(checked_model, trace=guide_full)
                                        ).get_trace(*args, **kwargs)
    except (ValueError, RuntimeError) as error:  # a diverged fit's NaN parameters: name them
        stale = nonfinite_parameters(model, guide)
        if stale:
            raise stale_parameters_error(stale, f"{entry}: the pair failed to run; its") \
                from error
        raise
    model_trace = prune_subsample_sites(model_trace)
    guide_trace = prune_subsample_sites(guide_full)
    _refuse_swapped_programs(entry, guide_trace, model_trace)
    if site not in guide_trace.nodes or site not in model_trace.nodes:
        node = guide_trace.nodes.get(site)
        auxiliary = " (it is an AutoGuide's auxiliary site)" \
            if node is not None and node["infer"].get("is_auxiliary") else ""
        raise ValueError(f"{entry}: no latent site '{site}' in both model and guide"
                         f"{auxiliary}{_shared_latents_hint(model_trace, guide_trace)}")
    return model_trace, guide_trace, _plate_subsamples(guide_full)


def _base_normal(fn, role: str, site: str) -> Normal:
    """The diagonal Normal inside ``fn``'s ``Independent`` and ``dist.mask`` wrappers (the
    masks are read by :func:`_kl_rows`); ``NotImplementedError`` naming the ``role``
    ("guide", "model"), the site and the family otherwise."""
    while isinstance(fn, (Independent, MaskedDistribution, ExpandedDistribution)):
        # an explicit expand, dist.ExpandedDistribution(Normal(...), shape), is the Normal
        # of the expanded parameters
        fn = (fn.base_dist.expand(fn.batch_shape) if isinstance(fn, ExpandedDistribution)
              else fn.base_dist)
    if role == "guide" and is_delta(fn):
        raise NotImplementedError(
            f"kl_per_dimension: the guide's site '{site}' is a Delta (an AutoGuide such as "
            "AutoNormal samples an auxiliary site, e.g. "
            f"'{site}_unconstrained', and puts a Delta at its transformed draw), so the "
            "guide's distribution at the site is a point, not the Normal the KL is read "
            "from; kl_per_dimension needs a diagonal Normal guide site: a guide of your own with "
            f"pyro.sample('{site}', dist.Normal(loc, scale)) in pyro.plate('{DATA_PLATE}') "
            "(.to_event(1) for a vector latent)")
    if not isinstance(fn, Normal):
        coupled = isinstance(fn, (torch.distributions.MultivariateNormal,
                                  torch.distributions.LowRankMultivariateNormal))
        raise NotImplementedError(
            f"kl_per_dimension: the {role}'s site '{site}' is a {type(fn).__name__}; the KL "
            "per latent dimension needs diagonal Normal distributions in guide and prior"
            + (" (a full-covariance Gaussian couples the dimensions: compare whole KLs, or use "
               "a diagonal guide)" if coupled else
               " (its closed form here): compare whole KLs, e.g. the ELBO's terms")
        )
    return fn


@leaves_buffers
def _draws_read(entry, model, guide, site, args, kwargs, guide_trace) -> None:
    """``ValueError`` naming ``site`` and the other latent when the parameters of the guide's
    or the prior's distribution at ``site`` are computed from another latent site's draw (a
    hierarchical pair: ``p(z1 | z2)`` at a drawn ``z2``, ``q(z2 | z1)`` at a drawn ``z1``):
    the KL between them is then a one-draw Monte Carlo value, not the analytic one.

    Dependence is read off autograd: both programs run once more with the other latents'
    drawn values fixed to leaf tensors that require grad, and a parameter that reaches a leaf
    depends on that draw (whatever the random state, dropout included). Latents with integer
    values (discrete) cannot be leaves and are not looked at."""
    drawn = {name: node["value"] for name, node in guide_trace.nodes.items()
             if node["type"] == "sample" and not node["is_observed"] and name != site
             and torch.is_tensor(node["value"]) and node["value"].is_floating_point()}
    if not drawn:
        return
    # a graph also inside the caller's torch.inference_mode()
    with poutine.block(), recording_autograd():
        args, kwargs = autograd_arguments(args, kwargs)
        leaves = {name: autograd_tensor(value.detach()).clone().requires_grad_(True)
                  for name, value in drawn.items()}
        value = autograd_tensor(guide_trace.nodes[site]["value"].detach())
        traces = (("guide", poutine.trace(poutine.condition(guide, data=leaves)).get_trace(
                      *args, **kwargs)),
                  ("model", poutine.trace(poutine.condition(model, data={**leaves, site: value}))
                   .get_trace(*args, **kwargs)))
        for role, trace in traces:
            fn = _base_normal(trace.nodes[site]["fn"], role, site)
            params = [t for t in (fn.loc, fn.scale) if torch.is_tensor(t) and t.requires_grad]
            if not params:
                continue
            grads = torch.autograd.grad(sum(t.sum() for t in params), list(leaves.values()),
                                        allow_unused=True)
            read = [name for name, grad in zip(leaves, grads) if grad is not None]
            if read:
                which = "guide's q" if role == "guide" else "model's prior p"
                raise ValueError(
                    f"{entry}: the {which}({site} | ...) at site '{site}' is computed from the "
                    f"draw of latent site '{read[0]}' (a hierarchical pair), so the KL at "
                    f"'{site}' would be a one-draw Monte Carlo value that changes from call to "
                    f"call, not the analytic KL per dimension; it is defined here only when "
                    f"both distributions at the site depend on the data alone. Average "
                    f"KL(q || p) over many traces yourself for an estimate, or use "
                    f"active_units(posterior_means(guide, x, site=...)) for collapse")


@leaves_buffers
def kl_per_dimension(model: Callable, guide: Callable, *args, site: str = "z",
                     **kwargs) -> torch.Tensor:
    """Analytic ``KL(q(z_j | x) || p(z_j))`` per latent dimension, averaged over the batch.

    Needs diagonal Normal prior and guide at ``site``, whose value is ``[batch, latent_dim]``
    with ``batch`` the dim of ``pyro.plate("data")``, or ``[batch]`` for a latent of one
    dimension (``latent_dim = 1``); other shapes raise ``ValueError``. Both distributions
    must depend on the data alone: a prior or guide whose parameters are computed from
    another latent's draw (``TwoLayerVAE``'s ``p(z1 | z2)`` and ``q(z2 | z1)``) raises
    ``ValueError`` naming the sites, since the KL would then be a one-draw Monte Carlo value
    that changes from call to call.

    Values masked out (``poutine.mask`` or ``dist.mask``, alike in model and guide: a
    variable-length sequence's absent steps) count 0, as in the ELBO, so the dimensions sum
    to the ELBO's KL term per datapoint; masks that differ raise ``ValueError``.

    A pair whose ``"data"`` plate draws a random subsample (``pyro.plate("data", N,
    subsample_size=B)``) is averaged over all ``N`` datapoints, not over one random ``B``:
    the pair runs once per block of ``B`` consecutive indices, the plate given each block in
    turn, so the value is the same on every call. A plate inside ``"data"`` that draws a
    random subsample at ``site`` raises ``ValueError`` naming it.

    Returns:
        ``[latent_dim]`` in nats; dimensions near zero carry no information (collapsed).
    """
    check_pair_call(kl_per_dimension, kwargs, args, model=model, guide=guide)
    check_site_name(site, "kl_per_dimension")
    model_trace, guide_trace, subsamples = _latent_pair("kl_per_dimension", model, guide,
                                                        site, args, kwargs)
    _refuse_drawn_inner_plates("kl_per_dimension", guide_trace.nodes[site], subsamples)
    indices, size, drawn = subsamples.get(DATA_PLATE, (None, None, False))
    if not drawn:
        kl = _kl_rows(model_trace, guide_trace, site)
        _draws_read("kl_per_dimension", model, guide, site, args, kwargs, guide_trace)
        return wide_mean(kl)
    rows = []
    for block, keep_from in _index_blocks(size, len(indices)):
        block_model, block_guide = (poutine.condition(fn, data={DATA_PLATE: block})
                                    for fn in (model, guide))
        with poutine.block(), torch.no_grad():
            model_trace, guide_trace = trace_pair(block_model, block_guide, args, kwargs)
        rows.append(_kl_rows(model_trace, guide_trace, site)[keep_from:])
        if len(rows) == 1:
            _draws_read("kl_per_dimension", block_model, block_guide, site, args, kwargs,
                        guide_trace)
    return wide_mean(torch.cat(rows))


def _normal_kl(q: Normal, p: Normal) -> torch.Tensor:
    """``KL(q || p)`` of two Normals, elementwise, from the log of the scales' ratio: torch's
    squares the ratio first, which underflows in float32 for a scale of 1e-30 (KL inf where
    it is 69 nats)."""
    log_ratio = q.scale.log() - p.scale.log()
    return 0.5 * (torch.exp(2 * log_ratio) + ((q.loc - p.loc) / p.scale) ** 2 - 1) - log_ratio


def _index_blocks(size: int, block_size: int):
    """``(indices [block_size], keep_from)`` covering ``range(size)`` in blocks of
    ``block_size`` consecutive indices; the last block ends at ``size`` and overlaps the one
    before, whose indices it repeats up to ``keep_from``."""
    for start in range(0, size, block_size):
        stop = min(start + block_size, size)
        yield torch.arange(stop - block_size, stop), block_size - (stop - start)


def _kl_rows(model_trace, guide_trace, site: str) -> torch.Tensor:
    """``KL(q || p)`` at ``site`` of one run, ``[batch, latent_dim]`` (``latent_dim`` 1 for
    a ``[batch]`` value); ``ValueError`` for another shape, ``NotImplementedError`` for a
    distribution that is not a diagonal Normal."""
    node = guide_trace.nodes[site]
    value = node["value"]
    if value.dim() not in (1, 2) or not _batch_first(node):
        where = "outside" if data_frame(node) is None else "in"
        raise ValueError(
            f"kl_per_dimension: site '{site}' {where} pyro.plate('{DATA_PLATE}') has value "
            f"shape {list(value.shape)}; expected [batch, latent_dim] (or [batch] for a "
            f"one-dimensional latent) with batch the dim of pyro.plate('{DATA_PLATE}')")
    q = _base_normal(node["fn"], "guide", site)
    p = _base_normal(model_trace.nodes[site]["fn"], "model", site)
    scored = site_mask(node).expand(value.shape)
    if not torch.equal(scored, site_mask(model_trace.nodes[site]).expand(value.shape)):
        raise ValueError(
            f"kl_per_dimension: site '{site}' is masked differently in the model and the "
            "guide (poutine.mask or dist.mask): where one side's density is masked out and "
            "the other's is not, there is no KL between them; mask both alike")
    kl = _normal_kl(q, p).expand(value.shape)  # [batch, latent_dim] or [batch]
    # a masked value has no KL term in the ELBO (a variable-length sequence's absent steps)
    kl = torch.where(scored, kl, torch.zeros((), dtype=kl.dtype, device=kl.device))
    return kl.reshape(value.shape[0], -1)


@leaves_buffers
def posterior_means(guide: Callable, *args, site: str = "z", **kwargs) -> torch.Tensor:
    """Mean of the guide's ``q(z | x)`` at the latent ``site`` for every datapoint.

    The site's value must be ``[batch, *rest]`` with ``batch`` the dim of
    ``pyro.plate("data")`` and ``rest`` any inner plate dims then the event shape
    (``[batch, latent_dim]`` for a vector latent, ``[batch]`` for a scalar one); a site
    outside that plate or under an outer plate raises ``ValueError``, and so does a program
    that observes a site (a model passed as the guide: its latents would be the prior's) or
    a mean that is not finite (a Cauchy's). The mean is the distribution's closed form; a
    guide without one (a normalizing flow such as ``FlowVAE``'s) raises
    ``NotImplementedError`` naming the site, since an estimate from draws would carry Monte
    Carlo noise into :func:`active_units`: average draws of the site yourself. A guide
    called without the data it takes raises ``TypeError``, one that fails to run with NaN
    or infinite parameters (a diverged fit) ``ValueError`` naming them. A ``Delta`` site
    whose value is computed from another latent's draw (an AutoGuide's, such as
    ``AutoNormal``'s, at the transformed draw of its auxiliary site) raises
    ``NotImplementedError`` too: its mean would be that one draw. A ``Delta`` at parameters
    (``AutoDelta``'s point estimate) is its own mean.

    For a guide whose ``"data"`` plate keeps a subsample (``pyro.plate("data", N,
    subsample_size=B)``) the means are those of the ``B`` datapoints of this call, whose
    indices are the result's ``subsample`` attribute ``[B]`` (as for
    :func:`inference.elbo`): index labels with them, ``labels[means.subsample]``. A plate
    inside ``"data"`` that draws a random subsample at ``site`` raises ``ValueError``
    naming it (the means would cover a random part of its members).

    Returns:
        ``[batch, *rest]``, the shape of the site's value.
    """
    check_pair_call(posterior_means, kwargs, args, guide=guide)
    check_site_name(site, "posterior_means")
    check_program(guide, "guide")
    check_one_program_call(posterior_means, "guide", args)
    check_program_arguments(guide, "guide", args, kwargs, "posterior_means(guide, *args, "
                            "**kwargs)", "pass the data the guide takes, e.g. "
                            "posterior_means(guide, x)")
    check_data(args, kwargs)
    checked_guide = stored_shapes_checked(guide, guide)[1]
    with poutine.block(), torch.no_grad():
        try:
            trace = poutine.trace(checked_guide).get_trace(*args, **kwargs)
        except (ValueError, RuntimeError) as error:  # e.g. a Normal of NaN loc
            stale = nonfinite_parameters(guide, guide)
            if not stale:
                raise
            shown = ", ".join(stale[:4]) + (f" and {len(stale) - 4} more" if len(stale) > 4
                                            else "")
            raise ValueError(f"posterior_means: the guide failed to run "
                             f"({type(error).__name__}); its parameters hold NaN or infinite "
                             f"values: {shown}. A diverged fit leaves its last values in "
                             "place: train again (a lower lr) or load a good checkpoint"
                             ) from error
    _refuse_swapped_programs("posterior_means", trace)
    node = trace.nodes.get(site)
    if node is None or node["type"] != "sample":
        raise ValueError(f"posterior_means: the guide has no sample site '{site}'"
                         f"{_latent_sites_hint(trace, site, 'guide')}")
    subsamples = _plate_subsamples(trace)
    _refuse_drawn_inner_plates("posterior_means", node, subsamples)
    if not _batch_first(node):
        raise ValueError(
            f"posterior_means: site '{site}' has value shape {list(node['value'].shape)} "
            f"(event dims {node['fn'].event_dim}); expected [batch, ...] with batch the "
            f"leftmost dim, that of pyro.plate('{DATA_PLATE}')")
    fn = node["fn"]
    average_draws = (f"average draws of the site instead, e.g. torch.stack([poutine.trace("
                     f"guide).get_trace(x).nodes['{site}']['value'] for _ in range(100)])"
                     ".mean(0)")
    if is_delta(fn) and site in conditional_sites_of_guide(guide, args, kwargs):
        auxiliary = [other["name"] for other in sample_sites(trace, observed=False)
                     if other["infer"].get("is_auxiliary")]
        whose = (f" (an AutoGuide's Delta at the transformed draw of its auxiliary sites "
                 f"{auxiliary})" if auxiliary else "")
        raise NotImplementedError(
            f"posterior_means: the guide's site '{site}' is a Delta at a value computed from "
            f"the draw of another latent{whose}, so its mean would be one random draw, "
            f"another on every call; {average_draws}")
    circular = _circular_family(fn)
    if circular:
        raise NotImplementedError(
            f"posterior_means: the guide's distribution at site '{site}' is a {circular}, "
            "whose .mean is a circular mean (an angle, or a direction on the sphere), not the "
            f"expectation of z that active_units compares; {average_draws}, or read "
            f"{circular}.mean of the site yourself if the circular mean is what you want")
    try:
        mean = fn.mean
    except NotImplementedError:
        raise NotImplementedError(
            f"posterior_means: the guide's distribution at site '{site}' "
            f"({type(fn).__name__}) has no closed-form mean; {average_draws}") from None
    bad = ~torch.isfinite(mean)
    if bad.any():
        raise ValueError(f"posterior_means: the mean of the guide's {type(fn).__name__} at site "
                         f"'{site}' is not finite in {int(bad.sum())} of {mean.numel()} values "
                         "(its mean is undefined, or its parameters are not finite)")
    mean = mean.expand(node["value"].shape)
    if DATA_PLATE in subsamples:
        mean.subsample = subsamples[DATA_PLATE][0]
    return mean


# Families on the circle or the sphere: their .mean is a circular mean, not E[z].
CIRCULAR_FAMILIES = (dist.VonMises, dist.ProjectedNormal, dist.SineBivariateVonMises,
                     dist.SineSkewed)


def _circular_family(fn) -> str | None:
    """The class name of ``fn``'s base distribution (under ``Independent``, expansions and
    masks) when it lives on the circle or the sphere, else None."""
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    try:
        support = fn.support
    except NotImplementedError:  # a user's class without one: judged by its type alone
        support = None
    if isinstance(fn, CIRCULAR_FAMILIES) or support is dist.constraints.sphere:
        return type(fn).__name__
    return None


def active_units(means: torch.Tensor, threshold: float = 0.01) -> tuple[int, torch.Tensor]:
    """Count latent dimensions whose posterior mean varies across data [1].

    Args:
        means: ``[batch, latent_dim]`` posterior means (see :func:`posterior_means`), real
            numbers (integers are converted to the default float dtype).
        threshold: a finite number ``>= 0`` (a 0-dim tensor counts as its value); a unit
            is active when ``Var_x(E_q[z_j])`` exceeds it (0.01 as in [1]).

    Returns:
        the number of active units and the per-dimension variances ``[latent_dim]``. The
        variances are computed in float64 (the count compares those with ``threshold``) and
        returned in ``means``' dtype (the default float dtype for integer ``means``), float32
        at least: float16's largest value is 65504, so the variance of half-precision means
        of +-300 would overflow it. Where a variance would overflow that dtype too (float32
        means of +-1e20 and more) all are returned in float64, finite for means below about
        1e154.
    """
    check_dense_values(means, "means")
    if not torch.is_tensor(means):
        raise TypeError(f"means must be a tensor [batch, latent_dim] (posterior_means), got "
                        f"{type(means).__name__}")
    if means.dtype == torch.bool or means.is_complex():
        raise TypeError(f"means must hold real numbers, got dtype {means.dtype}")
    threshold = as_number(threshold, "threshold", minimum=0)
    if means.dim() != 2 or means.shape[0] < 2:
        hint = "" if means.dim() == 2 else " (a latent of other shape: means.reshape(batch, -1))"
        raise ValueError(f"means must be [batch >= 2, latent_dim], got {list(means.shape)}{hint}")
    check_finite_tensor(means, "means")
    dtype = torch.promote_types(means.dtype, torch.float32) if means.is_floating_point() \
        else torch.promote_types(torch.get_default_dtype(), torch.float32)
    variance = means.double().var(0)
    narrow = variance.to(dtype)
    return int((variance > threshold).sum()), variance if narrow.isinf().any() else narrow


@leaves_buffers
def expected_log_likelihood(model: Callable, guide: Callable, *args, num_samples: int = 1,
                            **kwargs) -> torch.Tensor:
    """Reconstruction term ``E_q[log p(x | z)]`` per datapoint, ``[batch]`` in nats.

    Computed from the observed sites of the model's trace, averaged over ``num_samples``
    (a positive integer) draws of ``z ~ q(z | x)``; ``-inf`` where a draw gives the data
    density zero, ``ValueError`` naming the datapoints where it is NaN or ``+inf``. For a
    model that subsamples its ``"data"`` plate (``pyro.plate("data", N, subsample_size=B)``)
    every draw scores the same ``B`` datapoints, whose indices are the result's
    ``subsample`` attribute, as for :func:`inference.elbo`.
    """
    check_pair_call(expected_log_likelihood, kwargs, args, model=model, guide=guide)
    check_program(model, "model")
    check_program(guide, "guide")
    num_samples = as_int(num_samples, "num_samples")  # a Python int: np.int64(2**61) wrapped
    check_data(args, kwargs)
    structure = inspect_pair(model, guide, args, kwargs, use="elbo",  # an ELBO term
                             called="expected_log_likelihood")
    if structure.model_enumerated:
        raise PairError(f"expected_log_likelihood: the model enumerates "
                        f"{site_list(structure.model_enumerated)}, which the guide does not "
                        "sample: log p(x | z) would score a sampled value of them; elbo and "
                        "iwae_bound sum them out")
    check_weights_memory(num_samples, structure.batch_size, weight_itemsize(args, kwargs))
    # every pass replays the survey's subsample: one call scores one set of datapoints
    model, guide = structure.fix_subsample(model), structure.fix_subsample(guide)
    # all draws in one vectorized pass: refused, naming num_samples, beyond the memory
    check_particle_memory(model, guide, args, kwargs, structure, num_samples, None,
                          chunkable=False)
    # The survey ran the pair once with Pyro's validation as configured; this pass skips it,
    # as the estimators' passes do: a pyro.factor that is NaN at some draws failed inside
    # torch ("Expected parameter log_factor"), naming no datapoint; the NaN is named below
    with poutine.block(), torch.no_grad(), validation_enabled(False):
        log_lik = _observed_log_density(model, guide, args, kwargs, num_samples, structure)
    if not torch.is_tensor(log_lik):
        raise ValueError("expected_log_likelihood: the model has no observed site")
    log_lik = log_lik.expand(num_samples, structure.batch_size)  # [num_samples, batch]
    for bad, what in ((torch.isnan(log_lik).any(0), "NaN"),
                      (torch.isposinf(log_lik).any(0), "+inf")):
        if bad.any():
            raise ValueError(f"expected_log_likelihood: log p(x | z) is {what} for datapoints "
                             f"{bad.nonzero().flatten().tolist()[:10]} (at some draws of z; "
                             "check the model's parameters, the guide's and the data range)")
    return attach_subsample(wide_mean(log_lik), structure)


def _observed_log_density(model, guide, args, kwargs, num_samples: int, structure):
    """``log p(x | z)`` of the model's observed sites, ``[num_samples, batch]`` (or
    broadcastable to it; 0 for a model with none), at ``num_samples`` draws of the guide: all
    at once in a leftmost plate, or one pass per draw for a pair that fails there (a model
    whose shapes broadcast by accident with the survey's two draws, ``z.expand(-1, D)``)."""
    if structure.vectorizable:
        try:
            model_trace, _ = vectorized_traces(model, guide, args, kwargs, num_samples,
                                               structure.max_plate_nesting + 1)
            return trace_log_density(model_trace, structure, observed=True)
        except (RuntimeError, ValueError):
            pass  # the passes one draw at a time below
    rows = [trace_log_density(trace_pair(model, guide, args, kwargs)[0], structure,
                              observed=True) for _ in range(num_samples)]
    if not torch.is_tensor(rows[0]):
        return rows[0]
    return torch.cat([row.expand(1, structure.batch_size) for row in rows])


def _probe_input(value, name: str, shape: str, labels: bool = False) -> np.ndarray:
    """A tensor, array or list checked for :func:`probe_accuracy`: ``[n >= 1]`` integer (or
    bool) labels, or ``[n >= 1, k >= 1]`` finite real features."""
    check_dense_values(value, name)
    if torch.is_tensor(value):
        value = value.detach().cpu()
        value = (value.double() if value.is_floating_point() else value).numpy()
    array = np.asarray(value)
    kinds, what = ("biu", "integer class labels") if labels else ("biuf", "real numbers")
    if array.dtype.kind not in kinds:
        raise TypeError(f"{name} must hold {what}, got dtype {array.dtype}")
    if array.ndim != (1 if labels else 2) or 0 in array.shape:
        raise ValueError(f"{name} must be {shape}, got shape {list(array.shape)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} has {int((~np.isfinite(array)).sum())} non-finite values")
    return array


def probe_accuracy(train_features, train_labels, test_features, test_labels,
                   max_iter: int = 2000) -> float:
    """Test accuracy of a logistic-regression probe on frozen features [2].

    Args:
        train_features: ``[n_train, k]``, tensors, arrays or lists of finite real numbers.
        train_labels: ``[n_train]``, integer classes, at least two distinct.
        test_features: ``[n_test, k]``, as ``train_features``.
        test_labels: ``[n_test]``, as ``train_labels``.
        max_iter: a positive integer, the solver's iteration limit.

    Returns:
        the fraction of ``test_labels`` the probe predicts, in ``[0, 1]``.

    Features are standardized with the training statistics first (in float64, without
    overflow for any finite features); test features so far beyond the training range that
    the probe's score overflows are refused (``ValueError`` naming ``test_features``).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_x = _probe_input(train_features, "train_features", "[n_train >= 1, k >= 1]")
    train_y = _probe_input(train_labels, "train_labels", "[n_train >= 1]", labels=True)
    test_x = _probe_input(test_features, "test_features", "[n_test >= 1, k >= 1]")
    test_y = _probe_input(test_labels, "test_labels", "[n_test >= 1]", labels=True)
    max_iter = as_int(max_iter, "max_iter")
    for x, y, split in ((train_x, train_y, "train"), (test_x, test_y, "test")):
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{split}_features {list(x.shape)} and {split}_labels "
                             f"{list(y.shape)} disagree on the number of rows")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train_features {list(train_x.shape)} and test_features "
                         f"{list(test_x.shape)} disagree on the number of features")
    classes = np.unique(train_y)
    if len(classes) < 2:
        raise ValueError(f"train_labels hold a single class ({classes[0].item()!r}); a probe "
                         "needs at least 2 classes to separate")
    # Standardizing is scale-free per feature: dividing each one first by a power of two
    # near its largest training magnitude (exact) keeps the scaler's squares finite for
    # features up to float64's range, where they overflowed to NaN from about 1e154.
    scale = np.abs(train_x.astype(np.float64)).max(0)
    scale = np.ldexp(1.0, np.frexp(np.where(scale > 0, scale, 1.0))[1])
    train_x, test_x = train_x / scale, test_x / scale
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    probe.fit(train_x, train_y)
    with np.errstate(over="ignore"):  # refused below, by name
        bad = ~np.isfinite(probe.decision_function(test_x)).reshape(len(test_x), -1).all(1)
    if bad.any():
        raise ValueError(f"test_features: {int(bad.sum())} of {len(test_x)} rows (first "
                         f"{int(bad.nonzero()[0][0])}) get a non-finite probe score: they lie "
                         "too far beyond the range of train_features for the standardized "
                         "probe's arithmetic")
    return float(probe.score(test_x, test_y))
