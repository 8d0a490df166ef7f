"""Super-resolution: infer a full-resolution image from its average-pooled, down-sampled version.

Observation channel (exact, noiseless). The image ``x: [batch, C, H, W]`` is seen through
``y = average_pool(x, f)``: every ``f x f`` block ``b`` of a channel becomes one pixel
``y_b = f^-2 sum_{i in b} x_i``, ``y: [batch, C, H / f, W / f]``. ``p(y | x)`` is 1 when
``y`` is the pooled ``x`` and 0 otherwise, so ``p(y | z)`` under a model with conditionally
independent pixels is the law of the block sums, in closed form for two pixel families:

- **Binary pixels**, ``x_i | z ~ Bernoulli(pi_i)``: ``s_b = f^2 y_b`` is the number of ones in
  block ``b`` and ``p(y_b | z) = P(sum_{i in b} x_i = s_b)``, the Poisson-binomial
  probability, computed exactly by the recursion
  ``P_{1..k}(t) = (1 - pi_k) P_{1..k-1}(t) + pi_k P_{1..k-1}(t - 1)`` in log space
  (:func:`bernoulli_pool_log_likelihood`). Given ``z``,
  ``p(x_i = 1 | y_b, z) = pi_i P_{-i}(s_b - 1) / P(s_b)`` with ``P_{-i}`` the law of the sum
  of the other pixels of the block (:func:`bernoulli_pool_posterior`), and the block is drawn
  exactly given its sum pixel by pixel from suffix sums (:func:`bernoulli_pool_sample`).
- **Gaussian pixels**, ``x_i | z ~ N(mu_i, sigma_i^2)`` (a density on dequantized grey
  levels): ``y_b | z ~ N(f^-2 sum mu_i, f^-4 sum sigma_i^2)`` exactly, a density of ``y``
  (:func:`gaussian_pool_log_likelihood`), and ``x_b | y_b, z`` is the Gaussian conditioned on a
  linear constraint: with ``V = sum_b sigma_j^2``, ``S = f^2 y_b`` and ``M = sum_b mu_j``,
  ``E[x_i | y, z] = mu_i + sigma_i^2 (S - M) / V``,
  ``Var[x_i | y, z] = sigma_i^2 (1 - sigma_i^2 / V)`` (:func:`gaussian_pool_posterior`); a
  draw is ``mu + sigma eps`` moved onto the constraint by the same rule
  (:func:`gaussian_pool_sample`).

Inference over a latent-variable model's ``z`` (a VAE; any object with ``encode(x) ->
(loc, scale)`` of ``q(z | x)``, ``decode(z)`` returning a ``torch.distributions.Bernoulli``
or ``Normal`` with batch shape ``[..., C, H, W]``, and ``latent_dim``; prior ``N(0, I)``),
as :mod:`inference.uses.completion` does for per-pixel channels:

- :func:`super_resolve_map`: ``z* = argmax_z log p(y | z) + log p(z)`` by Adam from the
  encoder's mean of the nearest-neighbour up-sampled ``y``; the pixel posterior given ``z*``;
- :func:`super_resolve_mwg`: Metropolis-within-Gibbs on ``(z, x)`` targeting ``p(z, x | y)``
  (Mattei and Frellsen 2018): ``z`` by an independence Metropolis-Hastings step proposing from
  ``q(z' | x)`` (``p(z | x, y) = p(z | x)`` because ``y`` is a function of ``x``), then ``x``
  drawn exactly from ``p(x | y, z)``; Rao-Blackwellized chain averages of the pixel posterior;
- :func:`super_resolve_mh`: random-walk Metropolis on ``z`` alone targeting ``p(z | y)``, the
  pixels summed out by the closed forms above, the step adapted during burn-in; the same
  averages. It mixes where the Gibbs chain, whose ``z`` and ``x`` are tightly coupled, does
  not (Gaussian pixels with small learned scales accept 1-3% of the encoder's proposals).

For an autoregressive model whose conditionals are exact but whose pixels are not
independent given anything (a PixelCNN), :func:`super_resolve_gibbs` runs block Gibbs on
binary images under the hard constraint: it only needs ``log_prob(x) -> [n]``. Each step
takes ``subset_size`` pixels of one pooling block (a fresh random partition of each block
every sweep) and redraws them from their exact conditional ``p(x_S | x_{-S}) ∝ p(x)`` over
all assignments that keep the block's sum, enumerated and scored by ``log_prob``. With
``subset_size >= f^2`` this is the exact conditional of a whole block; smaller subsets (needed
for 4x4 blocks, whose ``C(16, 8) = 12870`` fillings are too many) still reach every feasible
image because the random partitions move ones between any two pixels of a block.

References:
    Mattei, Frellsen (2018), Leveraging the exact likelihood of deep latent variable models,
    NeurIPS. Chen, Dempster, Liu (1994), Weighted finite population sampling to maximize
    entropy, Biometrika (sampling Bernoulli variables given their sum).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..checks import (
    MAX_STEPS,
    as_int,
    as_number,
    autograd_tensor,
    check_at_most,
    check_chain_length,
    check_finite_tensor,
    check_function,
    check_generator,
    check_model_tensor,
    check_nonempty_batch,
    check_tensor_input,
    in_evaluation_mode,
    physical_memory_bytes,
    recording_autograd,
)
from ..progress import bar_range, check_progress
from ..protocols import require_finite_parameters, require_standard_prior
from .completion import (accumulation_dtype, check_finite_result, check_start_likelihood,
                         checked_code, decoded_pixels, encoder_draw, independence_z_step)
from .map_search import adam_map

__all__ = [
    "SuperResolution",
    "average_pool",
    "bernoulli_pool_log_likelihood",
    "bernoulli_pool_posterior",
    "bernoulli_pool_sample",
    "feasible_binary_image",
    "gaussian_pool_log_likelihood",
    "gaussian_pool_posterior",
    "gaussian_pool_sample",
    "pooled_counts",
    "super_resolve_gibbs",
    "super_resolve_map",
    "super_resolve_mh",
    "super_resolve_mwg",
]


@dataclass(frozen=True)
class SuperResolution:
    """An estimate of ``x`` given ``y``, every tensor ``[batch, C, H, W]``.

    Attributes:
        mean: ``E[x_i | y]`` (for binary pixels ``p(x_i = 1 | y)``).
        variance: ``Var[x_i | y]``.
        log_predictive: ``log p(x_i = truth_i | y)`` per pixel when a ``truth`` was given
            (a log probability for binary pixels, a log density for Gaussian ones), else None.
        z: the MAP latent or the chain's last latent ``[batch, d]``; None without a latent.
        acceptance_rate: of the Metropolis-Hastings ``z`` step; None where there is none.
    """

    mean: torch.Tensor
    variance: torch.Tensor
    log_predictive: torch.Tensor | None = None
    z: torch.Tensor | None = None
    acceptance_rate: float | None = None


# ------------------------------------------------------------------------------ blocks
def _check_factor(factor) -> int:
    """The pooling ``factor`` as a Python ``int``; ``ValueError`` unless it is an integer
    ``>= 2`` (numpy integers and 0-dim integer tensors accepted, bools and 2.0 refused)."""
    return as_int(factor, "factor", minimum=2)


def _check_image(x, name: str, factor: int) -> None:
    """``ValueError`` naming ``name`` unless ``x`` is a float tensor ``[..., C, H, W]`` with
    ``H`` and ``W`` multiples of ``factor``."""
    check_tensor_input(x, name)
    if not torch.is_tensor(x) or not x.is_floating_point() or x.dim() < 3:
        raise ValueError(f"{name} must be a float tensor [..., C, H, W], got "
                         f"{getattr(x, 'dtype', type(x).__name__)} "
                         f"{list(getattr(x, 'shape', []))}")
    if x.shape[-1] % factor or x.shape[-2] % factor:
        raise ValueError(f"{name}: height and width {list(x.shape[-2:])} must be multiples of "
                         f"factor={factor}")


def _check_low(y, name: str, high_shape, factor: int) -> None:
    """``y: [batch, C, H / f, W / f]`` matching a high-resolution ``[..., C, H, W]``."""
    C, H, W = high_shape[-3:]
    check_tensor_input(y, name)
    if not torch.is_tensor(y) or not y.is_floating_point() or y.dim() != 4 or \
            tuple(y.shape[1:]) != (C, H // factor, W // factor):
        raise ValueError(f"{name} must be a float tensor [batch, {C}, {H // factor}, "
                         f"{W // factor}] (the image pooled by factor={factor}), got "
                         f"{getattr(y, 'dtype', type(y).__name__)} {list(getattr(y, 'shape', []))}")
    if not torch.isfinite(y).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def _blocks(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``[..., C, H, W]`` -> ``[..., C, H / f, W / f, f * f]`` (raster order inside a block)."""
    *lead, C, H, W = x.shape
    f = factor
    return (x.reshape(*lead, C, H // f, f, W // f, f).transpose(-3, -2)
            .reshape(*lead, C, H // f, W // f, f * f))


def _unblock(b: torch.Tensor, factor: int) -> torch.Tensor:
    """Inverse of :func:`_blocks`: ``[..., C, h, w, f * f]`` -> ``[..., C, h f, w f]``."""
    *lead, C, h, w, _ = b.shape
    f = factor
    return b.reshape(*lead, C, h, w, f, f).transpose(-3, -2).reshape(*lead, C, h * f, w * f)


def average_pool(x: torch.Tensor, factor: int) -> torch.Tensor:
    """The observation: means of ``factor x factor`` blocks, ``[..., C, H, W]`` ->
    ``[..., C, H / f, W / f]``."""
    factor = _check_factor(factor)
    _check_image(x, "x", factor)
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    return _blocks(x, factor).mean(-1)


def pooled_counts(y: torch.Tensor, factor: int) -> torch.Tensor:
    """Number of ones per block of a pooled binary image: ``y: [batch, C, h, w]`` with values
    ``k / f^2`` -> int64 ``[batch, C, h, w]`` in ``0..f^2``."""
    factor = _check_factor(factor)
    check_tensor_input(y, "y")
    if not torch.is_tensor(y) or not y.is_floating_point():
        raise ValueError(f"y must be a float tensor, got {getattr(y, 'dtype', type(y).__name__)}")
    check_finite_tensor(y, "y")
    scaled = y * factor ** 2
    counts = scaled.round()
    bad = ((scaled - counts).abs() > 1e-4) | (counts < 0) | (counts > factor ** 2)
    if bad.any():
        raise ValueError(f"y must be a pooled binary image, values k / {factor ** 2} with k = "
                         f"0..{factor ** 2}; got {int(bad.sum())} other values, e.g. "
                         f"{float(y[bad][0])}")
    return counts.long()


# ------------------------------------------------------------------------ binary pixels
def _count_log_pmf(log_p0: torch.Tensor, log_p1: torch.Tensor) -> torch.Tensor:
    """Log law of the sum of independent Bernoulli variables: ``log P(x_k = 0), log P(x_k = 1)``
    ``[..., m]`` -> ``log P(sum = t)``, ``t = 0..m``, ``[..., m + 1]``. No ``-inf`` enters
    the recursion, so it is differentiable for finite inputs."""
    table = log_p0.new_zeros(*log_p0.shape[:-1], 1)
    for k in range(log_p0.shape[-1]):
        a = table + log_p0[..., k:k + 1]  # sum unchanged: t = 0..k
        b = table + log_p1[..., k:k + 1]  # one more: t = 1..k+1
        table = torch.cat([a[..., :1], torch.logaddexp(a[..., 1:], b[..., :-1]), b[..., -1:]],
                          -1)
    return table


def _bernoulli_terms(logits: torch.Tensor, y: torch.Tensor, factor: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check the arguments, then ``(log P(x_i = 0), log P(x_i = 1))`` by block, each
    ``[..., C, h, w, f * f]``, and the ones per block ``[..., C, h, w]`` (int64)."""
    factor = _check_factor(factor)
    _check_image(logits, "logits", factor)
    _check_low(y, "y", logits.shape, factor)
    blocks = _blocks(logits, factor)  # [..., C, h, w, m]
    counts = pooled_counts(y, factor).expand(blocks.shape[:-1])
    return F.logsigmoid(-blocks), F.logsigmoid(blocks), counts


def bernoulli_pool_log_likelihood(logits: torch.Tensor, y: torch.Tensor, factor: int
                                  ) -> torch.Tensor:
    """``log p(y | z) = sum_b log P(sum_{i in b} x_i = f^2 y_b)`` for independent pixels
    ``x_i ~ Bernoulli(sigmoid(logits_i))`` (module docstring).

    Args:
        logits: ``[..., batch, C, H, W]`` (leading dims, e.g. particles, broadcast over ``y``).
        y: ``[batch, C, H / f, W / f]``, values ``k / f^2``.
        factor: ``f``.

    Returns:
        ``[..., batch]`` in nats; differentiable in ``logits``.
    """
    log_p0, log_p1, counts = _bernoulli_terms(logits, y, factor)
    table = _count_log_pmf(log_p0, log_p1)  # [..., C, h, w, m + 1]
    return table.gather(-1, counts[..., None])[..., 0].flatten(-3).sum(-1)


def bernoulli_pool_posterior(logits: torch.Tensor, y: torch.Tensor, factor: int
                             ) -> torch.Tensor:
    """``p(x_i = 1 | y_b, z) = pi_i P_{-i}(s_b - 1) / P(s_b)``: same arguments as
    :func:`bernoulli_pool_log_likelihood`, returns ``[..., batch, C, H, W]`` (no gradient).

    Computed as ``pi_i + d log P(s_b) / d logit_i``: for ``P(s) = sum_x prod_i pi_i^x_i
    (1 - pi_i)^(1 - x_i) [sum x = s]``, the derivative of ``log P(s)`` in the logit of pixel
    ``i`` is ``E[x_i | s] - pi_i``, so one backward pass through the recursion gives every
    pixel's posterior at once.
    """
    _bernoulli_terms(logits, y, factor)  # checks
    with recording_autograd():  # also under torch.inference_mode()
        leaf = autograd_tensor(logits.detach()).requires_grad_(True)
        total = bernoulli_pool_log_likelihood(leaf, autograd_tensor(y), factor)
        (grad,) = torch.autograd.grad(total.sum(), leaf)
    post = (torch.sigmoid(logits.detach()) + grad).clamp(0, 1)
    counts = _unblock(pooled_counts(y, factor)[..., None].expand(
        *y.shape, factor ** 2), factor).expand(post.shape)
    # blocks of all zeros or all ones are known exactly; keep them free of rounding
    return torch.where(counts == 0, 0.0, torch.where(counts == factor ** 2, 1.0, post))


def bernoulli_pool_sample(logits: torch.Tensor, y: torch.Tensor, factor: int,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """One exact draw of ``x ~ p(x | y, z)``: independent Bernoulli pixels conditioned on
    every block's sum. Same arguments as :func:`bernoulli_pool_log_likelihood` (``generator``
    on the logits' device); returns 0/1 pixels ``[..., batch, C, H, W]`` whose block sums are
    ``f^2 y``."""
    with torch.no_grad():
        log_p0, log_p1, counts = _bernoulli_terms(logits, y, factor)
        m = log_p0.shape[-1]
        # suffix[k][t + 1] = log P(x_k + ... + x_{m-1} = t), t = -1..m (t = -1 and t beyond
        # the pixels left are -inf), so gathers at t - 1 and t never leave the table
        neg = torch.full((*log_p0.shape[:-1], 1), -math.inf, dtype=logits.dtype,
                         device=logits.device)
        suffix = [None] * (m + 1)
        suffix[m] = torch.cat([neg, torch.zeros_like(neg), neg.expand(*neg.shape[:-1], m)], -1)
        for k in range(m - 1, -1, -1):
            later = suffix[k + 1]
            shifted = torch.cat([neg, later[..., :-1]], -1)  # index t + 1 holds t - 1
            suffix[k] = torch.logaddexp(later + log_p0[..., k:k + 1],
                                        shifted + log_p1[..., k:k + 1])
        remaining = counts.clone()  # [..., C, h, w]
        draws = []
        for k in range(m):
            r = remaining[..., None]
            log_one = (log_p1[..., k] + suffix[k + 1].gather(-1, r)[..., 0]
                       - suffix[k].gather(-1, r + 1)[..., 0])
            u = torch.rand(log_one.shape, generator=generator, device=logits.device,
                           dtype=logits.dtype)
            one = (u.log() < log_one) & (remaining > 0)
            draws.append(one)
            remaining = remaining - one.long()
        return _unblock(torch.stack(draws, -1).to(logits.dtype), factor)


def _bernoulli_log_predictive(prob_one: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """``log p(x_i = truth_i)`` for ``p(x_i = 1) = prob_one``; both ``[..., C, H, W]``."""
    return torch.where(truth > 0.5, prob_one, 1 - prob_one).log()


# ---------------------------------------------------------------------- Gaussian pixels
def _gaussian_terms(loc, scale, y, factor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check the arguments, then the pixels' means and variances by block, each
    ``[..., C, h, w, f * f]``, and the block sums ``S = f^2 y`` ``[batch, C, h, w]``."""
    factor = _check_factor(factor)
    _check_image(loc, "loc", factor)
    check_tensor_input(scale, "scale")
    if not torch.is_tensor(scale) or (scale <= 0).any():
        raise ValueError("scale must be a tensor of positive standard deviations")
    loc, scale = torch.broadcast_tensors(loc, scale)
    _check_low(y, "y", loc.shape, factor)
    mu, var = _blocks(loc, factor), _blocks(scale ** 2, factor)  # [..., C, h, w, m]
    limits = torch.finfo(var.dtype)
    if not bool(((var >= limits.tiny) & (var <= limits.max)).all()):
        raise ValueError(
            f"scale (the decoded pixels' standard deviations) runs from {scale.min().item():.3g} "
            f"to {scale.max().item():.3g}, whose squares leave {var.dtype}'s normal range: the "
            f"pooled channel works with the pixels' variances; keep the scales within "
            f"[{limits.tiny ** 0.5:.3g}, {limits.max ** 0.5:.3g}] or decode in float64")
    return mu, var, y * factor ** 2  # the block sums S


def gaussian_pool_log_likelihood(loc: torch.Tensor, scale: torch.Tensor, y: torch.Tensor,
                                 factor: int) -> torch.Tensor:
    """``log p(y | z)`` for independent ``x_i ~ N(loc_i, scale_i^2)``: each pooled pixel is
    ``N(f^-2 sum loc, f^-4 sum scale^2)`` (a density of ``y``).

    Args:
        loc, scale: ``[..., batch, C, H, W]``.
        y: ``[batch, C, H / f, W / f]``.
        factor: ``f``.

    Returns:
        ``[..., batch]`` in nats; differentiable in ``loc`` and ``scale``.
    """
    mu, var, _ = _gaussian_terms(loc, scale, y, factor)
    n = factor ** 2
    pooled = torch.distributions.Normal(mu.sum(-1) / n, var.sum(-1).sqrt() / n)
    return pooled.log_prob(y).flatten(-3).sum(-1)


def gaussian_pool_posterior(loc: torch.Tensor, scale: torch.Tensor, y: torch.Tensor,
                            factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of ``x_i | y_b, z`` (module docstring), each ``[..., batch, C, H, W]``."""
    mu, var, total = _gaussian_terms(loc, scale, y, factor)
    m = var.shape[-1]
    block_var = var.sum(-1, keepdim=True)
    # the other pixels' variance summed directly, not as V - sigma_i^2, which cancels to 0
    # when one pixel's variance dominates its block
    others = var @ (1 - torch.eye(m, dtype=var.dtype, device=var.device))
    mean = mu + var / block_var * (total[..., None] - mu.sum(-1, keepdim=True))
    return _unblock(mean, factor), _unblock(var * others / block_var, factor)


def gaussian_pool_sample(loc: torch.Tensor, scale: torch.Tensor, y: torch.Tensor, factor: int,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """One exact draw of ``x ~ p(x | y, z)``, ``[..., batch, C, H, W]``, whose block means are
    ``y``: ``mu + sigma eps`` plus ``sigma_i^2 / V`` times the block's miss of its sum."""
    with torch.no_grad():
        mu, var, total = _gaussian_terms(loc, scale, y, factor)
        x = mu + var.sqrt() * torch.randn(mu.shape, generator=generator, device=mu.device,
                                          dtype=mu.dtype)
        x = x + var / var.sum(-1, keepdim=True) * (total[..., None] - x.sum(-1, keepdim=True))
        return _unblock(x, factor)


# -------------------------------------------------------------- one interface for both
def _check_binary_truth(truth: torch.Tensor | None, context: str = "") -> None:
    """``ValueError`` unless ``truth`` is None or holds only 0/1 pixels (NaN counted as
    other); ``context`` (e.g. ``" for a Bernoulli model"``) follows "0/1 pixels"."""
    if truth is not None and not ((truth == 0) | (truth == 1)).all():
        raise ValueError(f"truth must hold 0/1 pixels{context}, got "
                         f"{int((~((truth == 0) | (truth == 1))).sum())} other values "
                         "(NaN included)")


class _Channel:
    """The exact pooling channel for one pixel family. Given the decoded pixel distribution
    ``pixels`` with batch shape ``[..., batch, C, H, W]``, a subclass gives
    ``log_likelihood(pixels)``: ``log p(y | z)`` ``[..., batch]``;
    ``posterior(pixels)``: mean and variance of ``x | y, z``, each ``[..., batch, C, H, W]``;
    ``sample(pixels, generator)``: one draw of ``x | y, z``; and
    ``log_predictive(mean, variance, truth)``: per-pixel ``log p(truth_i | y)``."""

    def __init__(self, factor: int, y: torch.Tensor):
        self.factor, self.y = factor, y

    @staticmethod
    def of(pixels, factor: int, y: torch.Tensor, truth: torch.Tensor | None) -> _Channel:
        """The channel of the decoded ``pixels``' family, after checking ``y`` and ``truth``
        against it: pooled binary values and 0/1 truth for Bernoulli pixels, finite truth for
        Gaussian ones."""
        if isinstance(pixels, torch.distributions.Bernoulli):
            pooled_counts(y, factor)
            _check_binary_truth(truth, " for a Bernoulli model")
            _check_truth_pools_to_y(truth, y, factor)
            return _BernoulliChannel(factor, y)
        if isinstance(pixels, torch.distributions.Normal):
            if truth is not None:
                check_finite_tensor(truth, "truth")
            _check_truth_pools_to_y(truth, y, factor)
            return _GaussianChannel(factor, y)
        raise ValueError(f"vae.decode(z) must return a torch.distributions.Bernoulli or Normal "
                         f"over pixels, got {type(pixels).__name__}")


class _BernoulliChannel(_Channel):
    def log_likelihood(self, d):
        return bernoulli_pool_log_likelihood(d.logits, self.y, self.factor)

    def posterior(self, d):
        mean = bernoulli_pool_posterior(d.logits, self.y, self.factor)
        return mean, mean * (1 - mean)

    def sample(self, d, generator):
        return bernoulli_pool_sample(d.logits, self.y, self.factor, generator)

    def log_predictive(self, mean, variance, truth):
        return _bernoulli_log_predictive(mean, truth)


class _GaussianChannel(_Channel):
    def log_likelihood(self, d):
        return gaussian_pool_log_likelihood(d.loc, d.scale, self.y, self.factor)

    def posterior(self, d):
        return gaussian_pool_posterior(d.loc, d.scale, self.y, self.factor)

    def sample(self, d, generator):
        return gaussian_pool_sample(d.loc, d.scale, self.y, self.factor, generator)

    def log_predictive(self, mean, variance, truth):
        return torch.distributions.Normal(mean, variance.sqrt()).log_prob(truth)


def _check_pooled_inputs(y, factor, truth, held: str, bytes_per_pixel: int) -> tuple[int, ...]:
    """``factor``, ``y: [batch >= 1, C, h, w]`` floating and finite, ``truth`` a real tensor of
    the high-resolution shape or None; returns that shape ``(batch, C, h f, w f)``.

    ``ValueError`` naming ``factor`` when the caller's full-size images (``held``, in words;
    ``bytes_per_pixel`` in all) would exceed physical memory, before any is allocated."""
    factor = _check_factor(factor)
    check_tensor_input(y, "y")
    if not torch.is_tensor(y) or not y.is_floating_point() or y.dim() != 4:
        raise ValueError(f"y must be a float tensor [batch, C, h, w], got "
                         f"{getattr(y, 'dtype', type(y).__name__)} {list(getattr(y, 'shape', []))}")
    check_nonempty_batch((), {"y": y})
    check_finite_tensor(y, "y")
    shape = (y.shape[0], y.shape[1], y.shape[2] * factor, y.shape[3] * factor)
    need, total = math.prod(shape) * bytes_per_pixel, physical_memory_bytes()
    if total is not None and need > total:
        raise ValueError(f"factor={factor}: y {list(y.shape)} pooled by it stands for images "
                         f"{list(shape)}; {held} need {need:,} bytes, more than this "
                         f"machine's {total:,} bytes of memory; lower factor")
    if truth is not None:
        check_tensor_input(truth, "truth")
    if truth is not None and (not torch.is_tensor(truth) or truth.is_complex() or
                              tuple(truth.shape) != shape):
        raise ValueError(f"truth must be a real tensor {list(shape)}, got "
                         f"{list(getattr(truth, 'shape', [])) or type(truth).__name__}")
    return shape


def _check_truth_pools_to_y(truth: torch.Tensor | None, y: torch.Tensor, factor: int) -> None:
    """``ValueError`` unless ``truth: [batch, C, H, W]`` (if given) average-pools to
    ``y: [batch, C, h, w]`` within the rounding of a pooling in ``y``'s dtype: the posterior
    is conditioned on ``y`` being ``truth``'s pool, and a truth that is not (images in
    another order, another pooling) would be scored where it could not have been (-inf for
    some pixels, a plausible number for others)."""
    if truth is None:
        return
    blocks = _blocks(truth.double(), factor)  # [batch, C, h, w, f * f]
    # (images are often pooled in float32 and cast up: float32's rounding at least)
    eps = max(torch.finfo(y.dtype).eps, torch.finfo(torch.float32).eps)
    tolerance = 4 * factor ** 2 * eps * (blocks.abs().amax(-1) + 1)
    off = (blocks.mean(-1) - y.double()).abs() > tolerance
    if not bool(off.any()):
        return
    images = off.flatten(1).any(1).nonzero().flatten().tolist()
    raise ValueError(
        f"truth does not average-pool to y by factor={factor}: {int(off.sum())} of "
        f"{off.numel()} pooled pixels differ (images {images[:8]}"
        f"{'...' if len(images) > 8 else ''}): pass the images y was pooled from, in the "
        f"same order and by the same average pooling (y = average_pool(truth, {factor}))")


def _check_vae_inputs(vae, y, factor, truth, generator=None) -> None:
    """The VAE's members, then :func:`_check_pooled_inputs`, ``y`` against the VAE's
    ``image_shape`` (if it has one) and its parameters' dtype and device, and ``generator``."""
    for name in ("encode", "decode", "latent_dim"):
        if not hasattr(vae, name):
            raise ValueError(f"vae must have encode(x), decode(z) and latent_dim; it has no "
                             f"{name!r}")
    require_standard_prior(vae, "vae")
    require_finite_parameters(vae, "vae")
    itemsize = y.dtype.itemsize if torch.is_tensor(y) else 4  # a non-tensor y is refused
    shape = _check_pooled_inputs(y, factor, truth, "the up-sampled y and the pixel posterior's "
                                 "means and variances", 3 * itemsize)
    image_shape = getattr(vae, "image_shape", None)
    if image_shape is not None and tuple(shape[1:]) != tuple(image_shape):
        raise ValueError(f"y {list(y.shape)} pooled by factor={factor} is from "
                         f"{list(shape[1:])} images, but the vae's image_shape is "
                         f"{list(image_shape)}")
    check_model_tensor(vae, y, "y")
    check_generator(generator, y.device)


def _upsampled(y: torch.Tensor, factor: int) -> torch.Tensor:
    """Nearest-neighbour up-sampling ``[batch, C, h, w]`` -> ``[batch, C, h f, w f]``."""
    return y.repeat_interleave(factor, -2).repeat_interleave(factor, -1)


class _ChainMoments:
    """Running pixel-posterior moments over the kept states of a chain: the mixture mean and
    variance of the per-state posteriors, and (with ``truth``) the log of the mean predictive
    density of the true image."""

    def __init__(self, channel, truth: torch.Tensor | None):
        self.channel, self.truth = channel, truth
        self.count, self.mean_sum, self.second_sum, self.scored = 0, None, None, None

    def add(self, mean: torch.Tensor, variance: torch.Tensor) -> None:
        # summed in float32 at least: a bfloat16 sum stops growing past 256 states
        wide = accumulation_dtype(mean.dtype)
        if self.mean_sum is None:
            self.dtype = mean.dtype
            self.mean_sum = torch.zeros_like(mean, dtype=wide)
            self.second_sum = torch.zeros_like(mean, dtype=wide)
        self.count += 1
        self.mean_sum += mean
        self.second_sum += variance.to(wide) + mean.to(wide) ** 2
        if self.truth is not None:
            term = self.channel.log_predictive(mean, variance, self.truth).to(wide)
            self.scored = term if self.scored is None else torch.logaddexp(self.scored, term)

    def result(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(mean, variance, log predictive of truth or None)`` over the states added, in
        the states' dtype."""
        mean = self.mean_sum / self.count
        variance = (self.second_sum / self.count - mean ** 2).clamp(min=0)
        scored = None if self.truth is None else self.scored - math.log(self.count)
        return (mean.to(self.dtype), variance.to(self.dtype),
                None if scored is None else scored.to(self.dtype))


@in_evaluation_mode("vae")
def super_resolve_map(vae, y: torch.Tensor, factor: int, steps: int = 300, lr: float = 0.05,
                      truth: torch.Tensor | None = None, progress: bool = True
                      ) -> SuperResolution:
    """MAP over ``z`` of ``log p(y | z) + log p(z)`` by Adam, then ``x | y, z*`` exactly.

    Args:
        vae: ``encode(x) -> (loc, scale)`` of ``q(z | x)``, ``decode(z: [..., d])`` -> a
            ``torch.distributions.Bernoulli`` or ``Normal`` with batch shape ``[..., C, H, W]``,
            and ``latent_dim`` (prior ``N(0, I)``), e.g. ``ppl_models.VAE``.
        y: ``[batch, C, H / f, W / f]`` pooled images (values ``k / f^2`` for binary pixels),
            ``batch >= 1``, finite, from images of the vae's ``image_shape``, in the dtype
            of its parameters.
        factor: ``f``, an int ``>= 2``.
        steps, lr: Adam from the encoder's mean of the nearest-neighbour up-sampled ``y``;
            ``steps`` an integer in ``0..MAX_STEPS`` (10**7), ``lr`` a finite number ``> 0``
            (a 0-dim tensor counts as its value). ``z*`` is per image the code of the highest
            objective seen (the start included); a ``RuntimeWarning`` names ``lr`` when an
            image's last iterate ends below its start (the search diverged).
        truth: optional ``[batch, C, H, W]`` to score (``log_predictive``): the images ``y``
            was pooled from (``average_pool(truth, factor) == y`` up to rounding, else
            ``ValueError``), 0/1 pixels for a Bernoulli model, finite values for a Gaussian one.
        progress: False hides the bar over the steps (shown after a second).

    Returns:
        :class:`SuperResolution` with the pixel posterior at ``z*`` and ``z*: [batch, d]``.
    """
    factor = _check_factor(factor)
    _check_vae_inputs(vae, y, factor, truth)
    steps = as_int(steps, "steps", 0)
    check_at_most(steps, "steps", MAX_STEPS, "each one decodes the batch for an Adam step, so "
                  "such a run would not end")
    lr = as_number(lr, "lr", positive=True)
    check_progress(progress)
    with torch.no_grad():
        start, _ = checked_code(vae, _upsampled(y, factor))
        channel = _Channel.of(decoded_pixels(vae, start), factor, y, truth)
    z = adam_map(start, lambda z: channel.log_likelihood(decoded_pixels(vae, z))
                 - 0.5 * (z ** 2).sum(-1),
                 steps, lr, "super_resolve_map",
                 "y and the vae's pixel distributions at the encoder's codes for it", progress)
    with torch.no_grad():
        mean, variance = channel.posterior(decoded_pixels(vae, z))
        scored = None if truth is None else channel.log_predictive(mean, variance, truth)
    return SuperResolution(mean, variance, scored, z)


@torch.no_grad()
@in_evaluation_mode("vae")
def super_resolve_mwg(vae, y: torch.Tensor, factor: int, num_steps: int = 200,
                      burn_in: int | None = None, generator: torch.Generator | None = None,
                      truth: torch.Tensor | None = None, progress: bool = True
                      ) -> SuperResolution:
    """Metropolis-within-Gibbs over ``(z, x)`` given ``y`` (module docstring).

    Args:
        vae, y, factor, truth: as in :func:`super_resolve_map`.
        num_steps: sweeps, an integer in ``1..MAX_STEPS`` (10**7).
        burn_in: the first sweeps, not averaged: an integer in ``0..num_steps - 1``, or
            None for half of them.
        generator: a ``torch.Generator`` on ``y``'s device, or None.
        progress: False hides the bar over the sweeps (shown after a second).

    Returns:
        :class:`SuperResolution`: ``mean`` the chain average of ``E[x_i | y, z]``, ``variance``
        by the law of total variance over the kept sweeps, ``log_predictive`` the log of the
        chain average of ``p(truth_i | y, z)`` (a mixture over the kept ``z``), ``z`` the last
        state and the acceptance rate of the ``z`` step.
    """
    factor = _check_factor(factor)
    _check_vae_inputs(vae, y, factor, truth, generator)
    burn_in = check_chain_length(num_steps, burn_in, minimum=1)
    num_steps = int(num_steps)
    check_at_most(num_steps, "num_steps", MAX_STEPS, "each sweep encodes and decodes the "
                  "batch, so such a run would not end")
    check_progress(progress)

    def log_joint(z, x):
        """``z: [batch, d]``, ``x: [batch, C, H, W]`` -> ``log p(x | z) + log p(z)``,
        ``[batch]`` (the prior's constant left out)."""
        return decoded_pixels(vae, z).log_prob(x).flatten(1).sum(1) - 0.5 * (z ** 2).sum(-1)

    start, _ = checked_code(vae, _upsampled(y, factor))
    channel = _Channel.of(decoded_pixels(vae, start), factor, y, truth)
    check_start_likelihood(channel.log_likelihood(decoded_pixels(vae, start)), "super_resolve_mwg")
    x = channel.sample(decoded_pixels(vae, start), generator)
    z, _, _ = encoder_draw(vae, x, generator, y)
    accepted = 0.0
    moments = _ChainMoments(channel, truth)
    for step in bar_range(num_steps, "super_resolve_mwg", progress):
        z, accept = independence_z_step(vae, log_joint, z, x, generator, y)
        accepted += float(accept.float().mean())
        pixels = decoded_pixels(vae, z)
        x = channel.sample(pixels, generator)
        if step < burn_in:
            continue
        mean, variance = channel.posterior(pixels)
        moments.add(mean, variance)
    mean, variance, scored = moments.result()
    check_finite_result(mean, "super_resolve_mwg")
    return SuperResolution(mean, variance, scored, z, accepted / num_steps)


@torch.no_grad()
@in_evaluation_mode("vae")
def super_resolve_mh(vae, y: torch.Tensor, factor: int, num_steps: int = 1600,
                     burn_in: int | None = None, target_acceptance: float = 0.3,
                     generator: torch.Generator | None = None,
                     truth: torch.Tensor | None = None, progress: bool = True
                     ) -> SuperResolution:
    """Random-walk Metropolis on ``z`` alone, targeting ``p(z | y) ∝ p(y | z) p(z)`` with the
    pixels summed out exactly (the channel's closed form), then ``x | y, z`` exactly.

    Proposal ``z' = z + step * eps``, ``eps ~ N(0, I)``, one step size per chain, starting at
    the encoder's mean scale for the nearest-neighbour up-sampled ``y`` and adapted during
    burn-in (Robbins-Monro on ``log step`` toward ``target_acceptance``); it is frozen after
    burn-in, so the kept sweeps are a Metropolis chain with a fixed symmetric proposal.
    Where ``z`` and ``x`` are tightly coupled (Gaussian pixels with small learned scales),
    :func:`super_resolve_mwg` accepts few encoder proposals and barely moves; this chain does
    not need the encoder to fit ``p(z | y)``.

    Args:
        vae, y, factor, truth: as in :func:`super_resolve_map`.
        num_steps: Metropolis steps, an integer in ``2..MAX_STEPS`` (10**7).
        burn_in: the first steps, which adapt the step size and are not averaged: an
            integer in ``0..num_steps - 1``, or None for half of them.
        target_acceptance: in ``(0, 1)``.
        generator: a ``torch.Generator`` on ``y``'s device, or None.
        progress: False hides the bar over the steps (shown after a second).

    Returns:
        :class:`SuperResolution` as from :func:`super_resolve_mwg`; ``acceptance_rate`` over
        the kept steps.
    """
    factor = _check_factor(factor)
    _check_vae_inputs(vae, y, factor, truth, generator)
    burn_in = check_chain_length(num_steps, burn_in, minimum=2)
    num_steps = int(num_steps)
    check_at_most(num_steps, "num_steps", MAX_STEPS, "each step decodes the batch, so such a "
                  "run would not end")
    target_acceptance = as_number(target_acceptance, "target_acceptance", positive=True)
    check_progress(progress)
    if not target_acceptance < 1:
        raise ValueError(f"target_acceptance must lie in (0, 1), got {target_acceptance}")
    like = {"device": y.device, "dtype": y.dtype}
    z, scale = checked_code(vae, _upsampled(y, factor))
    channel = _Channel.of(decoded_pixels(vae, z), factor, y, truth)

    def log_posterior(z):
        """``z: [batch, d]`` -> ``log p(y | z) + log p(z)`` up to a constant, ``[batch]``."""
        return channel.log_likelihood(decoded_pixels(vae, z)) - 0.5 * (z ** 2).sum(-1)

    step = scale.mean(-1, keepdim=True)  # [batch, 1]
    current = log_posterior(z)
    check_start_likelihood(current, "super_resolve_mh")
    accepted, kept = 0.0, num_steps - burn_in
    moments = _ChainMoments(channel, truth)
    for t in bar_range(num_steps, "super_resolve_mh", progress):
        proposal = z + step * torch.randn(z.shape, generator=generator, **like)
        candidate = log_posterior(proposal)
        accept = torch.rand(current.shape, generator=generator, **like).log() < candidate - current
        z = torch.where(accept[:, None], proposal, z)
        current = torch.where(accept, candidate, current)
        if t < burn_in:
            step = step * torch.exp((accept.to(y.dtype)[:, None] - target_acceptance)
                                    / (1 + t) ** 0.6)
            continue
        accepted += float(accept.float().mean())
        mean, variance = channel.posterior(decoded_pixels(vae, z))
        moments.add(mean, variance)
    mean, variance, scored = moments.result()
    check_finite_result(mean, "super_resolve_mh")
    return SuperResolution(mean, variance, scored, z, accepted / kept)


# ------------------------------------------------------------- block Gibbs for any p(x)
def feasible_binary_image(score: torch.Tensor, y: torch.Tensor, factor: int) -> torch.Tensor:
    """A 0/1 image with block sums ``f^2 y``: in every block the ``s_b`` pixels of highest
    ``score: [batch, C, H, W]`` are 1 (ties broken by position). Returns ``[batch, C, H, W]``."""
    factor = _check_factor(factor)
    _check_image(score, "score", factor)
    _check_low(y, "y", score.shape, factor)
    blocks = _blocks(score, factor)
    counts = pooled_counts(y, factor)
    rank = blocks.argsort(dim=-1, descending=True, stable=True).argsort(dim=-1, stable=True)
    return _unblock((rank < counts[..., None]).to(score.dtype), factor)


MAX_SUBSET_SIZE = 16
"""Most pixels :func:`super_resolve_gibbs` redraws together: it enumerates all ``2^k``
assignments of ``k`` pixels (65536 for 16, a whole 4x4 block)."""


def _check_block_scores(lp: torch.Tensor, rows: torch.Tensor, where: str) -> None:
    """``lp: [len(rows), K]`` log probabilities of the fillings of one block (``where``: its
    sweep and place, for the message): no NaN, no ``+inf``, and not ``-inf`` for every
    filling (the current image is one of them)."""
    for bad, what in ((torch.isnan(lp), "NaN"), (lp == math.inf, "+inf")):
        if bad.any():
            raise ValueError(f"log_prob returned {what} {where}, for datapoint(s) "
                             f"{rows[bad.any(-1)].tolist()}")
    dead = (lp == -math.inf).all(-1)
    if dead.any():
        raise ValueError(f"log_prob is -inf for every filling of the block {where} that keeps "
                         f"its sum, for datapoint(s) {rows[dead].tolist()}: the current image "
                         "has probability 0 under the model; pass an init it gives positive "
                         "probability")


def _configurations(m: int, device) -> list[torch.Tensor]:
    """``[K_s, m]`` 0/1 assignments of ``m`` pixels with ``s`` ones, for ``s = 0..m``."""
    every = torch.tensor(list(itertools.product((0.0, 1.0), repeat=m)), device=device)
    return [every[every.sum(1) == s] for s in range(m + 1)]


def _check_gibbs_arguments(log_prob, y, factor, num_sweeps, burn_in, subset_size, max_batch,
                           generator, truth, progress) -> tuple[tuple[int, ...], int, int]:
    """:func:`super_resolve_gibbs`'s checks, before any work; returns the images' shape
    ``(batch, C, H, W)``, the burn-in and ``k``, the pixels redrawn together."""
    check_function(log_prob, "log_prob", "its method, e.g. log_prob=pixelcnn.log_prob")
    shape = _check_pooled_inputs(y, factor, truth, "the chain's start, image and running "
                                 "mean and the int64 ranking of the start's pixels",
                                 4 * y.dtype.itemsize + 16)
    burn_in = check_chain_length(num_sweeps, burn_in, name="num_sweeps")
    check_at_most(int(num_sweeps), "num_sweeps", MAX_STEPS, "each sweep scores every block's "
                  "fillings, so such a run would not end")
    check_progress(progress)
    subset_size = as_int(subset_size, "subset_size", 2)
    max_batch = as_int(max_batch, "max_batch")
    check_generator(generator, y.device)
    m = min(int(subset_size), factor ** 2)
    if m > MAX_SUBSET_SIZE:
        raise ValueError(f"subset_size={subset_size} redraws {m} pixels of a {factor}x{factor} "
                         f"block together, enumerating 2^{m} = {2 ** m:,} configurations, more "
                         f"than the limit 2^{MAX_SUBSET_SIZE} = {2 ** MAX_SUBSET_SIZE:,}; pass "
                         f"subset_size <= {MAX_SUBSET_SIZE}")
    _check_binary_truth(truth)
    _check_truth_pools_to_y(truth, y, factor)
    return shape, burn_in, m


def _gibbs_start_scores(init, y: torch.Tensor, factor: int, shape: tuple[int, ...],
                        generator: torch.Generator | None) -> torch.Tensor:
    """The scores ``[batch, C, H, W]`` that rank each block's pixels for the chain's start
    (:func:`feasible_binary_image`): ``init`` checked and in ``y``'s dtype and device, or by
    default the nearest-neighbour up-sampled ``y`` plus a little noise from ``generator``."""
    if init is None:
        return _upsampled(y, factor) + 1e-3 * torch.rand(shape, generator=generator,
                                                         device=y.device, dtype=y.dtype)
    if not torch.is_tensor(init) or init.is_complex() or tuple(init.shape) != shape:
        raise ValueError(f"init must be a real tensor {list(shape)} of scores, got "
                         f"{getattr(init, 'dtype', type(init).__name__)} "
                         f"{list(getattr(init, 'shape', []))}")
    check_finite_tensor(init, "init")
    return init.to(device=y.device, dtype=y.dtype)  # a 0/1 image (bool, int) ranks alike


def _redraw_subset(flat: torch.Tensor, pos: torch.Tensor, fillings: list[torch.Tensor],
                   image_shape: tuple[int, ...], score, generator: torch.Generator | None,
                   where: str, max_batch: int) -> torch.Tensor:
    """One block Gibbs step: redraw the pixels ``pos: [k]`` (part of one block) of every
    image in ``flat: [batch, C * H * W]``, in place, from their exact conditional given the
    other pixels and their own sum, over the ``fillings[s]: [K_s, k]`` with that sum, each
    scored by ``score: [n, *image_shape] -> [n]``. Returns ``E[x_pos | rest, y]``,
    ``[batch, k]``; ``where`` (sweep and block) names a bad score (:func:`_check_block_scores`).
    The candidate images are made for ``max(1, max_batch // K_s)`` rows at a time, so that at
    most ``max(max_batch, K_s)`` of them are held at once.
    """
    current = flat[:, pos]  # [batch, k]
    expected = current.clone()
    ones = current.sum(1).long()
    for value in range(1, len(pos)):  # all zeros or all ones: a single filling, kept
        configs = fillings[value].to(flat.dtype)  # [K, k]
        K = len(configs)
        matching = (ones == value).nonzero()[:, 0]
        for rows in matching.split(max(1, max_batch // K)):
            candidates = flat[rows][:, None, :].repeat(1, K, 1)  # [rows, K, C * H * W]
            candidates[:, :, pos] = configs
            lp = score(candidates.reshape(-1, *image_shape)).reshape(-1, K)
            _check_block_scores(lp, rows, where)
            gumbel = -torch.log(-torch.log(torch.rand(lp.shape, generator=generator,
                                                      device=flat.device, dtype=lp.dtype)))
            choice = (lp + gumbel).argmax(-1)
            flat[rows[:, None], pos] = configs[choice]
            expected[rows] = lp.softmax(-1).to(flat.dtype) @ configs
    return expected


@torch.no_grad()
@in_evaluation_mode("log_prob")
def super_resolve_gibbs(log_prob: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor,
                        factor: int, num_sweeps: int = 40, burn_in: int | None = None,
                        subset_size: int = 4, init: torch.Tensor | None = None,
                        generator: torch.Generator | None = None, max_batch: int = 4096,
                        truth: torch.Tensor | None = None, progress: bool = True
                        ) -> SuperResolution:
    """Block Gibbs over binary images with the exact pooling constraint (module docstring).

    Args:
        log_prob: ``x: [n, C, H, W]`` 0/1 -> ``[n]``, the model's exact ``log p(x)`` (any
            constant shared by all images may be left out), e.g. ``PixelCNN.log_prob`` in
            evaluation mode. NaN or ``+inf``, or ``-inf`` for every filling of a block, is
            refused (``ValueError`` naming the sweep, block and datapoints).
        y: ``[batch, C, H / f, W / f]`` pooled binary images (values ``k / f^2``),
            ``batch >= 1``.
        factor: ``f``; refused (``ValueError`` naming it) before any work when the
            ``[batch, C, H, W]`` images the chain holds would exceed physical memory.
        num_sweeps: sweeps over every pixel, an integer in ``1..MAX_STEPS`` (10**7).
        burn_in: the first sweeps, not averaged: an integer in ``0..num_sweeps - 1``, or
            None for half of them.
        subset_size: pixels redrawn together, an integer ``>= 2``; ``k = min(subset_size,
            f^2)`` is used, and ``f^2`` makes every step a whole block's exact conditional.
            All ``2^k`` assignments are enumerated, so ``k`` may be at most
            :data:`MAX_SUBSET_SIZE` (16: whole blocks for ``f <= 4``).
        init: ``[batch, C, H, W]`` finite real scores for the starting image, of any real
            dtype (a bool or integer 0/1 image included; :func:`feasible_binary_image`;
            default: the nearest-neighbour up-sampled ``y`` plus a little noise from
            ``generator``).
        generator: a ``torch.Generator`` on ``y``'s device, or None.
        max_batch: most images per call of ``log_prob``, and of candidate images held at
            once (at least one block's ``C(k, k / 2)`` fillings of one image).
        truth: optional ``[batch, C, H, W]`` 0/1 to score (``log_predictive``), pooling to
            ``y`` as in :func:`super_resolve_map`.
        progress: False hides the bar over the sweeps (shown after a second).

    Returns:
        :class:`SuperResolution`: ``mean`` the Rao-Blackwellized ``p(x_i = 1 | y)``, the
        average over kept sweeps of ``E[x_i | x_{-S}, y]`` at the step that redrew ``x_i``.
    """
    factor = _check_factor(factor)
    shape, burn_in, m = _check_gibbs_arguments(log_prob, y, factor, num_sweeps, burn_in,
                                               subset_size, max_batch, generator, truth,
                                               progress)
    start = _gibbs_start_scores(init, y, factor, shape, generator)
    counts = pooled_counts(y, factor)
    x = feasible_binary_image(start, y, factor)

    def score(images: torch.Tensor) -> torch.Tensor:  # [n, C, H, W] -> [n], by max_batch
        parts = [log_prob(images[i:i + max_batch]) for i in range(0, len(images), max_batch)]
        for part, start in zip(parts, range(0, len(images), max_batch)):
            rows = min(max_batch, len(images) - start)
            if not torch.is_tensor(part) or tuple(part.shape) != (rows,):
                raise ValueError(f"log_prob must map [n, C, H, W] to a tensor [n], got "
                                 f"{type(part).__name__} {list(getattr(part, 'shape', []))} "
                                 f"for n = {rows}")
            if not part.is_floating_point():  # torch's sampler failed on it, unnamed
                raise ValueError(f"log_prob must return floating log probabilities [n], got "
                                 f"dtype {part.dtype}: an integer or bool tensor holds no log "
                                 "probability; return e.g. a float tensor (log_p.float())")
        out = torch.cat(parts) if parts else images.new_zeros(0)
        return out

    batch, C, h, w = y.shape
    H, W = shape[-2:]
    m_total = factor ** 2
    fillings = {size: _configurations(size, y.device) for size in {m, m_total % m or m}}
    # flat pixel index of offset k inside block (c, bi, bj)
    offsets = torch.tensor([(k // factor) * W + k % factor for k in range(m_total)],
                           device=y.device)
    total = torch.zeros(batch, C * H * W, device=y.device, dtype=accumulation_dtype(y.dtype))
    flat = x.reshape(batch, -1).clone()
    for sweep in bar_range(int(num_sweeps), "super_resolve_gibbs", progress):
        for c, bi, bj in itertools.product(range(C), range(h), range(w)):
            corner = c * H * W + bi * factor * W + bj * factor
            order = torch.randperm(m_total, generator=generator, device=y.device)
            for first in range(0, m_total, m):
                pos = corner + offsets[order[first:first + m]]  # [k]
                expected = _redraw_subset(flat, pos, fillings[len(pos)], shape[1:], score,
                                          generator, f"at sweep {sweep}, block (channel, "
                                          f"row, column) = {(c, bi, bj)}", max_batch)
                if sweep >= burn_in:
                    total[:, pos] += expected
    kept = num_sweeps - burn_in
    mean = (total / kept).to(y.dtype).reshape(shape)
    if not torch.equal(pooled_counts(average_pool(flat.reshape(shape), factor), factor), counts):
        raise RuntimeError("the chain left the images whose pooled version is y")
    scored = None if truth is None else _bernoulli_log_predictive(mean, truth)
    return SuperResolution(mean, mean * (1 - mean), scored)
