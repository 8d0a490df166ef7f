"""Gaussian log densities with fewer passes over memory than ``Normal.log_prob``.

Scoring a Normal site is most of the arithmetic outside the networks when particles are
vectorized: a guide's ``loc`` and ``scale`` of ``[batch, d]`` are expanded (stride 0) to
``[K, batch, d]`` by the particle plate, and ``torch.distributions.Normal.log_prob`` then
squares the expanded scale and takes its logarithm once per particle, in about eight
full-size passes. :func:`normal_log_density` takes the logarithm once per distinct scale
entry and needs four passes (in place when no gradient is wanted);
:func:`drawn_normal_log_density` scores a value the distribution drew itself from its
standard-normal noise. Both give ``log_prob``'s value (and gradient) up to float rounding
(``tests/inference/test_densities.py``).

Other distributions take part through a protocol: one that defines ``summed_log_prob(value,
event_dims)``, ``log_prob(value)`` summed over the last ``event_dims`` dims (differentiable
when a gradient is wanted), is scored by it (:func:`summed_log_density`).
:class:`ppl_models.likelihoods.BernoulliPixel` computes it a slab at a time without
gradients, so that no buffer of the full ``[particles, batch, *pixels]`` size is made.

:func:`closed_form_kl` is the KL the analytic objectives (``meanfield``, free bits) take
where torch has a formula for the pair of families.
"""

from __future__ import annotations

import math

import pyro.distributions
import torch
from torch.distributions import Independent, Normal, kl_divergence
from torch.distributions.kl import _dispatch_kl, _kl_expfamily_expfamily

HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)
# wrappers whose KL torch and Pyro compute from their base distributions' KL
_WRAPPERS = (Independent, pyro.distributions.Independent, pyro.distributions.MaskedDistribution,
             pyro.distributions.ExpandedDistribution,
             torch.distributions.TransformedDistribution)


def closed_form_kl(q, p) -> torch.Tensor:
    """``kl_divergence(q, p)`` where torch or Pyro registers a formula for the two families
    (through ``Independent``, mask and expand wrappers); ``NotImplementedError`` otherwise,
    and also where the formula would be torch's generic one for two members of an
    exponential family without their own: it sums a Wishart's degrees-of-freedom term over
    the batch (12.8 nats for a KL of 3.7 per datapoint; a guide trained on it ran off to
    df = 1.8e5) and differentiates with ``autograd.grad``, which fails without gradients."""
    if not has_closed_form_kl(q, p):
        raise NotImplementedError(f"no closed-form KL({type(q).__name__} || "
                                  f"{type(p).__name__}) but torch's generic one, or none")
    return kl_divergence(q, p)


def has_closed_form_kl(q, p) -> bool:
    """Whether :func:`closed_form_kl` has a formula for ``q`` and ``p`` (by their types,
    through the wrappers both share; nothing is computed)."""
    while isinstance(q, _WRAPPERS) and isinstance(p, _WRAPPERS):
        q, p = q.base_dist, p.base_dist
    formula = _dispatch_kl(type(q), type(p))
    return formula is not NotImplemented and formula is not _kl_expfamily_expfamily


def plain_normal(fn) -> tuple[Normal | None, int]:
    """``(Normal, event dims)`` when ``fn`` is a Normal, possibly inside Independent wrappers,
    of exactly torch's or Pyro's classes (subclasses may draw or score differently); else
    ``(None, 0)``."""
    event_dims = 0
    while type(fn) in (Independent, pyro.distributions.Independent):
        event_dims += fn.reinterpreted_batch_ndims
        fn = fn.base_dist
    if type(fn) in (Normal, pyro.distributions.Normal):
        return fn, event_dims
    return None, 0


def summed_log_density(fn, value) -> torch.Tensor | None:
    """``fn.log_prob(value)`` through the ``summed_log_prob`` of the distribution inside
    ``fn``'s ``Independent`` wrappers (torch's or Pyro's) when it defines one, else None.
    ``value: [*sample, *batch, *event]`` gives ``[*sample, *batch]``."""
    event_dims, base = 0, fn
    while type(base) in (Independent, pyro.distributions.Independent):
        event_dims += base.reinterpreted_batch_ndims
        base = base.base_dist
    summed = getattr(base, "summed_log_prob", None)
    if summed is None or not torch.is_tensor(value):
        return None
    return summed(value, event_dims)


def distinct_entries(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` with each broadcast (stride-0) dim narrowed to size 1: every distinct entry
    once, and it broadcasts back to ``tensor``'s shape."""
    for dim, (size, stride) in enumerate(zip(tensor.shape, tensor.stride())):
        if stride == 0 and size > 1:
            tensor = tensor.narrow(dim, 0, 1)
    return tensor


def normal_log_density(normal: Normal, value: torch.Tensor, event_dims: int = 0) -> torch.Tensor:
    """``normal.log_prob(value)`` summed over the last ``event_dims`` dims.

    ``value`` broadcasts with ``loc`` and ``scale`` as in ``log_prob``: ``value: [*sample,
    *batch, *event]`` gives ``[*sample, *batch]``. Nothing is checked (``log_prob`` checks
    the value when distribution validation is on).
    """
    loc, scale = normal.loc, normal.scale
    if not torch.is_tensor(value):  # a number observed (log_prob takes those too)
        value = torch.as_tensor(value, dtype=loc.dtype, device=loc.device)
    log_norm = distinct_entries(scale).log() + HALF_LOG_TWO_PI  # log(scale sqrt(2 pi))
    needs_grad = torch.is_grad_enabled() and (
        value.requires_grad or loc.requires_grad or scale.requires_grad)
    if needs_grad:
        density = -0.5 * ((value - loc) / scale).square() - log_norm
    else:
        shape = torch.broadcast_shapes(value.shape, loc.shape, scale.shape)
        density = value - loc
        if density.shape != shape:
            density = density.expand(shape).clone()
        density.div_(scale).square_().mul_(-0.5).sub_(log_norm)
    return density.sum(tuple(range(-event_dims, 0))) if event_dims else density


def drawn_normal_log_density(normal: Normal, value: torch.Tensor,
                             event_dims: int) -> torch.Tensor:
    """``log N(value; loc, scale)`` summed over the last ``event_dims`` dims, for a value that
    ``normal.rsample()`` drew as ``loc + scale * eps``.

    Written ``-eps^2 / 2 - log scale - log(2 pi) / 2`` with ``eps`` held constant: the same
    value, and the same gradient, since the derivative through the draw and the score term
    cancel to ``-grad log scale`` for a reparameterized location-scale draw. It saves the
    backward of ``(value - loc)^2 / scale^2``. ``value: [*sample, *batch, *event]``.
    """
    with torch.no_grad():
        eps = (value - normal.loc) / normal.scale
        constant = -0.5 * eps.square() - HALF_LOG_TWO_PI
    density = constant - normal.scale.log()
    return density.sum(tuple(range(-event_dims, 0))) if event_dims else density
