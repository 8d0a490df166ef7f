"""The evidence of the whole data, ``log p(x_1..N)``, for pairs with global latents.

The per-datapoint estimators (:mod:`.estimators`) need every site inside
``pyro.plate("data", N)``. A pair with latents shared by all datapoints (a coin's fairness,
the weights of a Bayesian regression, a hierarchical model's global mean) has no
per-datapoint evidence, but it has the joint one, the number Bayes factors compare:

    log p(x_1..N) = log E_q(z)[p(x_1..N, z) / q(z)],

with ``z`` every latent of the model, global and local. :func:`joint_log_evidence` draws K
whole latent vectors ``z_k ~ q`` and weighs each by ``log w_k = log p(x, z_k) - log q(z_k)``,
the unscaled log densities summed over every site and every dim but the particles'. Then
``log mean_k w_k`` (IWAE_K) is a lower bound in expectation that rises with K towards
``log p(x)`` (Burda et al. 2015), and ``mean_k log w_k`` (the ELBO) lies below it.

Standard error: the delta method on the weights, ``sd(w) / (sqrt(K) mean(w))``, as
:func:`inference.evidence.ais.ais_log_evidence` states it: the spread of ``log mean_k w_k``
over independent runs, valid when the weights have a finite variance (Pareto k-hat below
0.5; above 0.7 neither the estimate nor its standard error can be trusted). It says nothing
of the bias of IWAE_K below ``log p(x)``, which the ESS and k-hat hint at.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Callable, NamedTuple

import pyro
import torch

from ..checks import (check_pair_call, check_weights_memory, leaves_buffers,
                      user_stacklevel, validation_enabled)
from ..enumeration import enumerated_log_density, enumerated_traces
from ..pair_check import (JOINT_USE, PairStructure, check_sites_as_surveyed, sample_sites,
                          trace_pair)
from ..progress import check_progress, progress_bar
from ..random_state import forked_rng
from ..weights import (check_data, check_num_samples, check_particle_memory, checked_pair,
                       log_mean_exp, plate_dims, trace_log_density, vectorized_traces,
                       weight_itemsize, wide_mean)
from .ais import delta_method_stderr
from .weight_diagnostics import MIN_PARETO_SAMPLES, effective_sample_size, pareto_k

# Particles per vectorized pass unless told: the passes' memory grows with it, the weights'
# ([K] floats) do not.
DEFAULT_CHUNK = 1000


class JointEvidence(NamedTuple):
    """:func:`joint_log_evidence`'s result; every tensor is 0-dim except ``log_weights``.

    Attributes:
        log_evidence: IWAE_K, ``log mean_k w_k`` over all K draws, in nats: an estimate of
            ``log p(x_1..N)``, below it in expectation (by less as K grows).
        elbo: ``mean_k log w_k``, nats: a Monte Carlo estimate of the ELBO, below
            ``log_evidence`` in expectation.
        standard_error: delta-method standard error of ``log_evidence``,
            ``sd(w) / (sqrt(K) mean(w))`` (0 when every weight is equal, ``inf`` when all
            are zero, NaN for K = 1).
        ess: Kish's effective sample size of the K weights, in ``[1, K]`` (0 when all are
            zero).
        pareto_k: Pareto k-hat of the weights (:func:`inference.evidence.pareto_k`; NaN for
            K < 21): below 0.5 the standard error holds, above 0.7 no number here does.
        num_samples: K.
        log_weights: ``[K]`` the log weights ``log p(x, z_k) - log q(z_k)``, nats.
    """

    log_evidence: torch.Tensor
    elbo: torch.Tensor
    standard_error: torch.Tensor
    ess: torch.Tensor
    pareto_k: torch.Tensor
    num_samples: int
    log_weights: torch.Tensor


def per_particle(log_p: torch.Tensor, site, nesting: int) -> torch.Tensor:
    """A site's elementwise log density summed over every dim but the particles' (the
    leftmost of ``nesting`` batch dims), its mask applied
    (:func:`inference.weights.plate_dims`, as the per-datapoint weights apply it).

    Returns:
        ``[particles or 1]``.
    """
    shaped = plate_dims(log_p, site, nesting)
    if shaped is None:
        return log_p.new_zeros(1)
    return shaped.reshape(shaped.shape[0], -1).sum(-1)


def joint_log_weights(model: Callable, guide: Callable, args: tuple, kwargs: dict,
                      num_particles: int, structure: PairStructure) -> torch.Tensor:
    """``log p(x, z) - log q(z)`` ``[num_particles]`` of a pair checked for
    :data:`inference.pair_check.JOINT_USE`: one vectorized pass with the particles in a plate
    at dim ``-(max_plate_nesting + 1)`` when the pair broadcasts over it, else one pass per
    particle."""
    passes = [(num_particles, True)] if structure.vectorizable else [(1, False)] * num_particles
    rows = []
    for particles, vectorized in passes:
        if structure.model_enumerated:  # the model's enumerated latents summed out
            model_trace, guide_trace = enumerated_traces(
                model, guide, args, kwargs, particles if vectorized else None, structure)
        elif vectorized:
            model_trace, guide_trace = vectorized_traces(
                model, guide, args, kwargs, particles, structure.max_plate_nesting + 1)
        else:
            model_trace, guide_trace = trace_pair(model, guide, args, kwargs)
        check_sites_as_surveyed(model_trace, guide_trace, structure.site_names)
        model_part = (enumerated_log_density(model_trace, structure, per_datapoint=False)[:, 0]
                      if structure.model_enumerated
                      else trace_log_density(model_trace, structure, reduce=per_particle))
        log_w = model_part - trace_log_density(guide_trace, structure, observed=False,
                                               reduce=per_particle)
        rows.append(torch.as_tensor(log_w).expand(particles))
    return torch.cat(rows)


def _check_sites_precision(model, guide, args: tuple, kwargs: dict,
                           structure: PairStructure) -> None:
    """Refuse a pair whose sites draw or score half-precision values (a model that builds
    its tensors in a float16 default dtype, a decoder computing integer labels' logits in
    float16), naming the first: what the pair computes in, not the default dtype, decides
    (a float32 pair under a float16 default is fine). One run of the pair (no gradients,
    random state restored) scores each site."""
    half = (torch.float16, torch.bfloat16)
    for role, name, *_, value, _plates, _infer, _mask in structure.signature:
        if isinstance(value, tuple) and value[1] in half:
            raise ValueError(
                f"{JOINT_USE}: the {role}'s site '{name}' has values of dtype {value[1]}; "
                "the evidence of the whole data sums many log densities, which half "
                "precision rounds away: build the pair in float32 or float64 (its tensors "
                "follow torch.get_default_dtype() unless given a dtype)")
    with forked_rng(), torch.no_grad(), pyro.poutine.block():
        traces = trace_pair(model, guide, args, kwargs)
    for role, trace in zip(("model", "guide"), traces):
        for site in sample_sites(trace):
            scored = site["fn"].log_prob(site["value"]).dtype
            if scored in half:
                raise ValueError(
                    f"{JOINT_USE}: the {role}'s site '{site['name']}' scores its values in "
                    f"{scored} (its distribution's parameters are half precision); the "
                    "evidence of the whole data sums many log densities, which half "
                    "precision rounds away: compute them in float32 (e.g. logits.float())")


@leaves_buffers
def joint_log_evidence(model: Callable, guide: Callable, *args, num_samples: int,
                       chunk_size: int | None = DEFAULT_CHUNK, progress: bool = True,
                       **kwargs) -> JointEvidence:
    """Importance-sampled ``log p(x_1..N)`` of all the data, global latents included.

    Each of the K draws ``z_k ~ q`` is a whole latent vector (every site of the guide, global
    and per datapoint); its log weight ``log p(x, z_k) - log q(z_k)`` sums the unscaled log
    densities of every site over every dim (masks applied as the per-datapoint estimators
    apply them), so a sequential plate (``for i in pyro.plate(...)``) is scored as well as a
    vectorized one. Runs without gradients and leaves every parameter as it is.

    Args:
        model, guide: a Pyro pair; ``*args`` and ``**kwargs`` are passed to both. Every
            plate must be whole: a subsample (of any plate, ``"data"`` included), a
            ``poutine.scale``, a latent one side lacks, an observed site in the guide, a
            guide site reaching outside the model's support or a point mass (``Delta``,
            AutoDelta) is refused, naming the site or plate (``PairError``), before anything
            is drawn. Discrete latents the model enumerates (``config_enumerate``, not drawn
            by the guide) are summed out over all the data, inside the data plate or not
            (the Gaussian-mixture tutorial's assignments, a model-selection switch).
        num_samples: K, the number of joint draws.
        chunk_size: at most this many draws per vectorized pass (None: all K at once); the
            pass's memory grows with it. A pair that does not broadcast over a leading
            particle dim runs one draw per pass whatever it is.
        progress: False hides the bar (draws scored) a call shows after a second.

    Returns:
        :class:`JointEvidence`: ``log_evidence``, ``elbo``, ``standard_error``, ``ess`` and
        ``pareto_k`` 0-dim tensors in the weights' dtype, ``num_samples`` an int,
        ``log_weights`` ``[K]``.
    """
    check_pair_call(joint_log_evidence, kwargs, args, model=model, guide=guide)
    num_samples, chunk_size = check_num_samples(num_samples, chunk_size)
    check_progress(progress)
    check_data(args, kwargs)
    model, guide, structure = checked_pair(model, guide, args, kwargs, JOINT_USE)
    _check_sites_precision(model, guide, args, kwargs, structure)
    # the memory checks count [K, batch] weights: here one column
    check_weights_memory(num_samples, 1, weight_itemsize(args, kwargs))
    check_particle_memory(model, guide, args, kwargs,
                          dataclasses.replace(structure, batch_size=1), num_samples,
                          chunk_size)
    chunk = chunk_size or num_samples
    chunks = []
    with torch.no_grad(), validation_enabled(False), \
            progress_bar(num_samples, JOINT_USE, progress, "draws") as bar:
        for start in range(0, num_samples, chunk):
            size = min(chunk, num_samples - start)
            chunks.append(joint_log_weights(model, guide, args, kwargs, size, structure))
            bar.update(size)
    log_w = torch.cat(chunks)
    if log_w.dtype in (torch.float16, torch.bfloat16):
        raise ValueError(f"{JOINT_USE}: the pair's log densities come out in {log_w.dtype} "
                         "(its parameters' dtype): pass float32 or float64 parameters")
    bad = torch.isnan(log_w) | torch.isposinf(log_w)
    if bad.any():
        raise ValueError(
            f"{JOINT_USE}: {int(bad.sum())} of {num_samples} log weights are NaN or +inf "
            "(check the model's parameters, the guide's and the data range; +inf: the "
            "model's density is infinite, or the guide's underflows to zero, at a draw)")
    column = log_w[:, None]
    k_hat = (pareto_k(column)[0] if num_samples >= MIN_PARETO_SAMPLES
             else log_w.new_tensor(math.nan))
    ess = effective_sample_size(column)[0]
    if float(k_hat) > 0.7 and float(log_w[torch.isfinite(log_w)].std()) > 0.5:
        # (nearly equal weights carry no tail: their k-hat is noise)
        warnings.warn(
            f"{JOINT_USE}: the weights' Pareto k-hat is {float(k_hat):.2f} (effective sample "
            f"size {float(ess):.0f} of {num_samples}): a few draws carry the estimate, which "
            "may lie far from log p(x) with a standard error that does not show it; use a "
            "guide closer to the posterior (wider in its tails), or more num_samples",
            RuntimeWarning, stacklevel=user_stacklevel())
    return JointEvidence(
        log_evidence=log_mean_exp(log_w, 0),
        elbo=wide_mean(log_w.flatten()),
        standard_error=(delta_method_stderr(column)[0] if num_samples > 1
                        else log_w.new_tensor(math.nan)),  # no spread from one weight
        ess=ess,
        pareto_k=k_hat,
        num_samples=num_samples,
        log_weights=log_w,
    )
