"""Per-datapoint log importance weights of a Pyro model/guide pair.

Everything in :mod:`inference` that estimates evidence starts here. A model/guide pair
qualifies when its per-datapoint dimension is a ``pyro.plate`` named ``"data"`` and every
sample site lies inside that plate; other plates and event dimensions are summed.

The weights are computed from *unscaled* log densities: a subsampled ``"data"`` plate
(``size=N`` with a minibatch) or the scaling :func:`inference.fit` applies never leaks into
them, unlike ``pyro.infer.RenyiELBO``, which mixes the scale into its log-sum-exp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites, site_is_subsample

DATA_PLATE = "data"
PARTICLE_PLATE = "particles"


@dataclass(frozen=True)
class PairStructure:
    """What one unvectorized run of a model/guide pair reveals.

    Attributes:
        max_plate_nesting: number of batch dims used by plates (the particle plate goes left).
        batch_size: size of the ``"data"`` plate in this call (the minibatch size).
    """

    max_plate_nesting: int
    batch_size: int


def data_plate_scale(trace) -> float:
    """The multiplier on the ``"data"`` plate's log densities in ``trace``.

    ``N / batch_size`` when the plate is subsampled or :func:`inference.fit` scales a
    minibatch, else 1. Training objectives use it; evidence estimates never do.
    """
    for site in sample_sites(trace):
        if data_frame(site) is not None:
            scale = site["scale"]
            return float(scale.reshape(-1)[0]) if torch.is_tensor(scale) else float(scale)
    return 1.0


def data_frame(site):
    """The ``"data"`` plate's frame in a trace site's plate stack, or None."""
    for frame in site["cond_indep_stack"]:
        if frame.name == DATA_PLATE:
            return frame
    return None


def sample_sites(trace, observed: bool | None = None):
    """The sample sites of ``trace`` (no subsample sites), only observed or latent ones when
    ``observed`` is True or False."""
    for site in trace.nodes.values():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if observed is not None and site["is_observed"] != observed:
            continue
        yield site


def trace_pair(model, guide, args, kwargs):
    """``(model_trace, guide_trace)``: one guide draw and the model replayed against it."""
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
        *args, **kwargs
    )
    return prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)


def check_finite_inputs(args, kwargs) -> None:
    """Raise ``ValueError`` naming the first tensor argument with NaN or infinite entries."""
    named = [(f"argument {i}", a) for i, a in enumerate(args)] + [
        (f"keyword argument '{k}'", v) for k, v in kwargs.items()
    ]
    for name, value in named:
        if torch.is_tensor(value) and value.is_floating_point():
            bad = ~torch.isfinite(value)
            if bad.any():
                raise ValueError(
                    f"{name} (shape {tuple(value.shape)}) contains {int(bad.sum())} NaN or "
                    "infinite entries; clean the data before estimating the evidence"
                )


def inspect_pair(model: Callable, guide: Callable, args=(), kwargs=None) -> PairStructure:
    """Run the pair once (hidden from outer handlers) and check it suits per-datapoint estimates.

    Raises:
        ValueError: no ``"data"`` plate, a sample site outside it, model and guide disagreeing
            on the batch size, or a latent site of the model that the guide does not sample.
    """
    kwargs = kwargs or {}
    # Fork the generators so inspecting does not shift the draws of the run that follows.
    devices = sorted({a.device.index or 0 for a in (*args, *kwargs.values())
                      if torch.is_tensor(a) and a.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), poutine.block(), torch.no_grad():
        model_trace, guide_trace = trace_pair(model, guide, args, kwargs)
    sites = {}
    for role, trace in (("model", model_trace), ("guide", guide_trace)):
        for site in sample_sites(trace):
            if role == "guide" and site["is_observed"]:
                continue
            frame = data_frame(site)
            if frame is None:
                raise ValueError(
                    f"{role} site '{site['name']}' is not inside a pyro.plate named "
                    f"'{DATA_PLATE}': per-datapoint estimates need every sample site inside "
                    f"`with pyro.plate('{DATA_PLATE}', batch_size):`"
                )
            sites.setdefault(role, []).append((site, frame))
    if "model" not in sites:
        raise ValueError("the model has no sample sites: nothing to estimate")
    guide_latents = {site["name"] for site, _ in sites.get("guide", [])}
    for site, _ in sites["model"]:
        if not site["is_observed"] and site["name"] not in guide_latents:
            raise ValueError(
                f"latent site '{site['name']}' of the model is not sampled by the guide; "
                "importance weights need the guide to propose every latent variable"
            )
    batch_sizes = {frame.size for role in sites.values() for _, frame in role}
    if len(batch_sizes) != 1:
        raise ValueError(
            f"model and guide disagree on the size of the '{DATA_PLATE}' plate: {batch_sizes}"
        )
    dims = [
        -frame.dim
        for role in sites.values()
        for site, _ in role
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    return PairStructure(max(dims), batch_sizes.pop())


def per_datapoint(log_p: torch.Tensor, site, nesting: int, batch_size: int) -> torch.Tensor:
    """Sum a site's log density over everything but particles and datapoints.

    Args:
        log_p: unscaled log density with batch shape broadcastable to the plate dims.
        nesting: number of plate dims including the particle dim (particles leftmost).

    Returns:
        ``[particles or 1, batch_size]``.
    """
    mask = site["mask"]
    if mask is False:
        return log_p.new_zeros(1, batch_size)
    if torch.is_tensor(mask):
        log_p = torch.where(mask, log_p, log_p.new_zeros(()))
    if log_p.dim() > nesting:
        raise ValueError(
            f"site '{site['name']}' has log_prob shape {tuple(log_p.shape)} with more batch "
            "dims than its plates declare; use .to_event() for event dimensions"
        )
    log_p = log_p.reshape((1,) * (nesting - log_p.dim()) + log_p.shape)
    data_dim = nesting + data_frame(site).dim
    log_p = log_p.movedim(data_dim, 1)
    if log_p.dim() > 2:
        log_p = log_p.flatten(2).sum(-1)
    return log_p


def vectorized_traces(model, guide, args, kwargs, num_particles: int, nesting: int):
    """Model and guide traces with ``num_particles`` drawn inside a leftmost plate."""

    def vectorized(fn):
        def run(*a, **k):
            with pyro.plate(PARTICLE_PLATE, num_particles, dim=-nesting):
                return fn(*a, **k)

        return run

    return trace_pair(vectorized(model), vectorized(guide), args, kwargs)


def trace_log_density(trace, structure: PairStructure, num_particles: int,
                      observed: bool | None = None, transform=None) -> torch.Tensor:
    """Unscaled log density of a vectorized trace, per particle and datapoint.

    Args:
        observed: score only observed (True) or only latent (False, the guide's view)
            sites; None scores all.
        transform: optional map applied to each site's distribution before scoring
            (e.g. detaching its parameters).

    Returns:
        ``[num_particles or 1, batch]`` (broadcastable to ``[num_particles, batch]``), or
        0.0 when no site qualifies.
    """
    nesting = structure.max_plate_nesting + 1
    total = 0.0  # stays a float for a trace without such sites (an empty guide)
    for site in sample_sites(trace, observed):
        fn = transform(site["fn"]) if transform else site["fn"]
        log_p = fn.log_prob(site["value"], *site["args"], **site["kwargs"])
        total = total + per_datapoint(log_p, site, nesting, structure.batch_size)
    return total


def vectorized_log_weights(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    num_particles: int,
    structure: PairStructure,
) -> torch.Tensor:
    """Differentiable ``log p(x, z) - log q(z | x)`` for one vectorized draw of particles.

    Returns:
        ``[num_particles, batch]``; gradients flow to model and guide parameters and, through
        reparameterized samples, along the sampling path.
    """
    model_trace, guide_trace = vectorized_traces(
        model, guide, args, kwargs, num_particles, structure.max_plate_nesting + 1
    )
    log_w = trace_log_density(model_trace, structure, num_particles) - trace_log_density(
        guide_trace, structure, num_particles, observed=False
    )
    return log_w.expand(num_particles, structure.batch_size)


def check_num_samples(num_samples, chunk_size) -> None:
    """Raise ``ValueError`` unless both are positive integers (``chunk_size`` may be None)."""
    for name, value in (("num_samples", num_samples), ("chunk_size", chunk_size)):
        if value is None and name == "chunk_size":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def log_importance_weights(
    model: Callable,
    guide: Callable,
    *args,
    num_samples: int,
    chunk_size: int | None = None,
    **kwargs,
) -> torch.Tensor:
    """Log importance weights ``log p(x, z_k) - log q(z_k | x)`` with ``z_k ~ q(z | x)``.

    Particles are drawn vectorized inside an outermost plate; ``chunk_size`` bounds how many
    are in memory at once (the results match the unchunked ones up to the random draws).
    Runs without gradients and leaves every parameter as it is.

    Args:
        model, guide: a Pyro pair sharing a ``pyro.plate("data", batch)``; ``*args`` and
            ``**kwargs`` are passed to both (tensors and device come from them).
        num_samples: K, the number of particles per datapoint.
        chunk_size: at most this many particles per vectorized pass (None: all at once).

    Returns:
        ``[num_samples, batch]`` tensor, one column per datapoint, in nats.
    """
    check_num_samples(num_samples, chunk_size)
    check_finite_inputs(args, kwargs)
    structure = inspect_pair(model, guide, args, kwargs)
    chunk = chunk_size or num_samples
    chunks = []
    # inspect_pair ran the pair once with Pyro's validation as configured; the vectorized
    # passes skip it, since its checks cost more than the passes themselves here.
    with torch.no_grad(), pyro.validation_enabled(False):
        for start in range(0, num_samples, chunk):
            size = min(chunk, num_samples - start)
            chunks.append(
                vectorized_log_weights(model, guide, args, kwargs, size, structure)
            )
    weights = torch.cat(chunks)
    bad = torch.isnan(weights).any(0)
    if bad.any():
        raise ValueError(
            f"importance weights are NaN for datapoints {bad.nonzero().flatten().tolist()[:10]}"
            " (check the model's parameters and the data range)"
        )
    return weights


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Stable ``log(mean(exp(log_w)))`` along ``dim``."""
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])
