"""Pixel likelihoods p(x | z) that any image model can use, and the units to compare them.

Data convention (all five): pixels are floats in [0, 1], ``x: [batch, C, H, W]`` or
``x: [batch, D]``.

- ``BernoulliPixel``: binary pixels in {0, 1}.
- ``GaussianPixel`` (fixed or learned sigma): a density on the reals, meant for uniformly
  dequantized data ``(k + u) / 256`` in [0, 1) (:func:`uniform_dequantize`).
- ``Categorical256``, ``DiscretizedLogisticMixture``: 8-bit levels ``x = k / 255``,
  ``k = 0..255`` (the original images scaled by 1/255, never dequantized). With
  ``validate_args`` on, values farther than ``LEVEL_TOLERANCE`` levels from ``k / 255`` raise
  ``ValueError``.

Decoder outputs may carry extra leading dims (particles ``[K, batch, ...]``) and broadcast
against the data. Every distribution scores one value per pixel (batch shape = pixel shape,
event shape ``()``): wrap it in ``.to_event(3)`` (images) or ``.to_event(1)`` (vectors) to
score whole data points, e.g. ``pyro.sample("x", d.to_event(3), obs=x)``.

Densities (``GaussianPixel``) and probability masses (the 8-bit models) are compared in bits
per dimension after the dequantization correction of :mod:`inference.units`, which states the
bound and its derivation.

References:
    [1] Salimans, Karpathy, Chen, Kingma (2017), PixelCNN++ (discretized logistic mixture).
    [2] van den Oord, Kalchbrenner, Kavukcuoglu (2016), Pixel Recurrent Neural Networks
        (256-way softmax).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.nn import functional as F

from .checks import as_int, as_number, as_seed, being_traced
from .data import LEVEL_TOLERANCE, ImageData, off_level_grid, uniform_dequantize

__all__ = [
    "LEVELS",
    "LEVEL_TOLERANCE",
    "LIKELIHOODS",
    "LOG_SCALE_MAX",
    "LOG_SCALE_MIN",
    "BernoulliPixel",
    "Categorical256",
    "DiscretizedLogisticMixture",
    "GaussianPixel",
    "PixelLikelihood",
    "make_likelihood",
    "training_representation",
    "uniform_dequantize",
]

LEVELS = 256
# Bytes of one slab of a summed log density (BernoulliPixel.summed_log_prob): a fraction of
# a core's L2 cache (512 KiB to 2 MiB on current x86 CPUs), so a slab is summed from cache.
SLAB_BYTES = 256 * 1024
# Learned log-scales are clamped to [-7, 3]. The lower end is PixelCNN++'s [1]: a logistic
# with s = e^-7 still spreads 2.7% of its mass beyond its level's bin (width 2/255 in [-1, 1]),
# and a Gaussian with sigma = e^-7 (~9e-4, a quarter of a dequantization cell of 1/256) has a
# log density bounded by 6.1 nats. The upper end, e^3 = 20, is already flat on the data range.
LOG_SCALE_MIN = -7.0
LOG_SCALE_MAX = 3.0
_HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


class _EightBitLevels(constraints.Constraint):
    """Values ``k / 255``, ``k = 0..255``, up to ``LEVEL_TOLERANCE`` levels."""

    is_discrete = True
    event_dim = 0

    def check(self, value: torch.Tensor) -> torch.Tensor:
        value = value if value.is_floating_point() else value.double()  # uint8 would wrap
        scaled = value * (LEVELS - 1)
        k = scaled.round()
        return (k >= 0) & (k <= LEVELS - 1) & ((scaled - k).abs() <= LEVEL_TOLERANCE)


_EIGHT_BIT_LEVELS = _EightBitLevels()

_BINARY = "binary pixels in {0, 1} (binarize the images first)"
_UNIT = "values in [0, 1] (uniformly dequantized levels (k + u) / 256, see uniform_dequantize)"
_LEVELS = ("8-bit levels k/255 in [0, 1], k = 0..255 (the images scaled by 1/255, not "
           "dequantized or binarized)")


def _require(constraint: constraints.Constraint, x: torch.Tensor, who: str,
             expects: str) -> None:
    """Raise ``ValueError`` naming ``expects`` unless every entry of ``x: [...]`` satisfies it."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{who} scores tensors, got {type(x).__name__}")
    ok = constraint.check(x)
    if not bool(ok.all()):
        bad = x[~ok]
        raise ValueError(f"{who} needs {expects}; {bad.numel()} of {x.numel()} values are not, "
                         f"e.g. {bad[0].item()!r}")


class _PixelValidation:
    """Mixin: ``validate_args`` errors that say which data the likelihood expects."""

    expects: str

    def _validate_sample(self, value: torch.Tensor) -> None:
        if isinstance(value, torch.Tensor):
            try:
                torch.broadcast_shapes(value.shape, self.batch_shape)
            except RuntimeError:
                raise ValueError(
                    f"{type(self).__name__}: data of shape {list(value.shape)} do not broadcast "
                    f"against the pixel shape {list(self.batch_shape)}") from None
        _require(self.support, value, type(self).__name__, self.expects)


def _broadcasts_into(shape: torch.Size, target: torch.Size) -> bool:
    """Whether a tensor of ``shape`` broadcasts to ``target`` without enlarging it (cheaper
    than ``torch.broadcast_shapes`` on the per-chunk path)."""
    return len(shape) <= len(target) and all(
        size in (1, goal) for size, goal in zip(reversed(shape), reversed(target)))


class _BernoulliLogDensity(torch.autograd.Function):
    """``value * logits - softplus(logits)``, ``value`` broadcasting into ``logits:
    [..., *pixels]``: one buffer forward, and one backward, ``grad * (value -
    sigmoid(logits))``, where autograd's chain of softplus, negation and product makes four
    (3-4% of an SVI step of the 784-400-50 VAE on the CPU)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(logits, value)
        # softplus keeps its input for backward, not its output: negated in place
        return F.softplus(logits).neg_().addcmul_(value, logits)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, value = ctx.saved_tensors
        grad_logits = grad_value = None
        if ctx.needs_input_grad[0]:
            if torch.is_grad_enabled():  # create_graph: a differentiable expression
                grad_logits = grad * (value - torch.sigmoid(logits))
            else:
                grad_logits = torch.sigmoid(logits).neg_().add_(value).mul_(grad)
        if ctx.needs_input_grad[1]:
            grad_value = (grad * logits).sum_to_size(value.shape)
        return grad_logits, grad_value


class BernoulliPixel(_PixelValidation, dist.Bernoulli):
    """Independent Bernoulli pixels from logits: ``BernoulliPixel(logits=logits)``.

    ``logits: [..., *pixels]``; data ``x: [batch, *pixels]`` in {0, 1}. ``log_prob`` is
    ``x * logits - softplus(logits)`` (stable for any logit; equal to
    ``-binary_cross_entropy_with_logits``, which takes several more passes over the
    ``[particles, batch, *pixels]`` tensor on the CPU) with one value per pixel: wrap in
    ``.to_event(n)``. ``mean`` is ``sigmoid(logits)``.
    """

    expects = _BINARY

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``value: [..., *pixels]`` in {0, 1} -> ``[..., *pixels]``, one log-probability per
        pixel."""
        if self._validate_args:
            self._validate_sample(value)
        logits = self.logits
        if _broadcasts_into(value.shape, logits.shape):
            return _BernoulliLogDensity.apply(logits, value)
        return torch.addcmul(F.softplus(logits).neg_(), value, logits)

    def summed_log_prob(self, value: torch.Tensor, event_dims: int) -> torch.Tensor:
        """``log_prob(value)`` summed over its last ``event_dims`` dims, ``[..., *pixels] ->
        [...]``, without gradients (the protocol of :mod:`inference.densities`).

        Scored a slab of the leading dim at a time (about ``SLAB_BYTES`` each): no buffer of
        the full ``[particles, batch, *pixels]`` size is made, and each slab is summed while
        it is still in cache. Nothing is checked (``log_prob`` checks while validating).
        """
        logits, summed = self.logits, tuple(range(-event_dims, 0))
        wants_grad = torch.is_grad_enabled() and (logits.requires_grad or value.requires_grad)
        if wants_grad or not 0 < event_dims < logits.dim() or value.dtype != logits.dtype \
                or not _broadcasts_into(value.shape, logits.shape):
            return self.log_prob(value).sum(summed) if event_dims else self.log_prob(value)
        out = logits.new_empty(logits.shape[:-event_dims])
        per_row = logits[0].numel() * logits.element_size()
        rows = max(1, SLAB_BYTES // per_row)
        for start in range(0, logits.shape[0], rows):
            slab = logits[start:start + rows]
            # the value's own leading rows when it has that dim, else all of it
            part = value[start:start + rows] if value.dim() == logits.dim() and \
                value.shape[0] > 1 else value
            density = F.softplus(slab).neg_().addcmul_(part, slab)
            torch.sum(density, summed, out=out[start:start + rows])
        return out


class GaussianPixel(_PixelValidation, dist.Normal):
    """Independent Gaussian pixels ``N(loc, scale^2)``, one log density per pixel.

    ``GaussianPixel(loc, sigma)`` with a fixed float sigma, or
    :meth:`from_log_scale` for a learned per-pixel scale. ``loc, scale: [..., *pixels]``;
    data: dequantized ``x: [batch, *pixels]`` in [0, 1). Wrap in ``.to_event(n)``.
    """

    expects = "real values (no NaN)"

    @classmethod
    def from_log_scale(cls, loc: torch.Tensor, log_scale: torch.Tensor,
                       validate_args=None) -> GaussianPixel:
        """Scale ``exp(log_scale)`` with ``log_scale: [..., *pixels]`` clamped to
        ``[LOG_SCALE_MIN, LOG_SCALE_MAX]`` (no gradient beyond the clamp)."""
        return cls(loc, log_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX).exp(),
                   validate_args=validate_args)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``value: [..., *pixels]`` -> ``[..., *pixels]``. The standardized residual is
        squared, not the scale: torch's ``Normal`` divides by ``scale ** 2``, which underflows
        to 0 in float32 below a scale of about 1e-19 (NaN where a density of 68 nats is
        right, for a scale of 1e-30)."""
        if self._validate_args:
            self._validate_sample(value)
        residual = (value - self.loc) / self.scale
        return -0.5 * residual * residual - self.scale.log() - _HALF_LOG_TWO_PI


def _level_index(x: torch.Tensor) -> torch.Tensor:
    """Integer levels ``k = round(255 x)`` in 0..255 of ``x: [...]``, int64 ``[...]`` (an
    integer ``x`` in float: uint8 would wrap ``255 x`` around 256)."""
    x = x if x.is_floating_point() else x.double()
    return torch.round(x * (LEVELS - 1)).long().clamp(0, LEVELS - 1)


class Categorical256(_PixelValidation, TorchDistribution):
    """A 256-way softmax per pixel over the levels ``k / 255`` [2].

    Args:
        logits: ``[..., *pixels, 256]`` unnormalized log-probabilities of the levels (the
            level dim last); normalized exactly over the 256 levels.

    ``log_prob(x)`` for ``x: [batch, *pixels]`` (levels k/255) is ``[..., batch, *pixels]``,
    one value per pixel: wrap in ``.to_event(n)``.
    """

    arg_constraints = {"logits": constraints.real_vector}
    support = _EIGHT_BIT_LEVELS
    has_rsample = False
    expects = _LEVELS

    def __init__(self, logits: torch.Tensor, validate_args=None):
        if logits.dim() < 1 or logits.shape[-1] != LEVELS:
            raise ValueError(f"Categorical256 needs logits [..., {LEVELS}] with the level dim "
                             f"last, got {list(logits.shape)}")
        self.logits = logits - logits.logsumexp(-1, keepdim=True)
        # torch's check of a vector argument cannot reshape an empty batch: nothing to check
        super().__init__(logits.shape[:-1],
                         validate_args=validate_args if logits.numel() else False)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Categorical256, _instance)
        batch_shape = torch.Size(batch_shape)
        new.logits = self.logits.expand(*batch_shape, LEVELS)
        super(Categorical256, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``value: [..., *pixels]`` levels ``k / 255`` -> ``[..., *pixels]``, one log-probability
        per pixel."""
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(self.batch_shape, value.shape)
        index = _level_index(value).expand(shape)[..., None]
        return self.logits.expand(*shape, LEVELS).gather(-1, index).squeeze(-1)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """Levels ``k / 255``, ``[*sample_shape, ..., *pixels]``."""
        with torch.no_grad():
            k = torch.distributions.Categorical(logits=self.logits).sample(sample_shape)
            return k.to(self.logits.dtype) / (LEVELS - 1)

    @property
    def probs(self) -> torch.Tensor:
        """``[..., *pixels, 256]``."""
        return self.logits.exp()

    @property
    def mean(self) -> torch.Tensor:
        """``sum_k k/255 P(k)``, ``[..., *pixels]``."""
        grid = torch.arange(LEVELS, dtype=self.logits.dtype, device=self.logits.device)
        return self.probs @ grid / (LEVELS - 1)

    @property
    def mode(self) -> torch.Tensor:
        """The most probable level ``k / 255``, ``[..., *pixels]``."""
        return self.logits.argmax(-1).to(self.logits.dtype) / (LEVELS - 1)


def _log1mexp(d: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(-d))`` for ``d > 0``, accurate for small and large d (Maechler 2012)."""
    return torch.where(d < math.log(2), torch.log(-torch.expm1(-d)), torch.log1p(-torch.exp(-d)))


def _check_logit_weights(logit_weights: torch.Tensor) -> None:
    """``ValueError`` where ``logit_weights: [..., M]`` leaves a mixture without weights: a
    row of M ``-inf`` logits (no component to draw) or a ``+inf`` logit (``inf - inf`` in the
    normalization); both made every log-probability NaN."""
    positive = int((logit_weights == math.inf).sum())
    if positive:
        raise ValueError(f"logit_weights holds {positive} +inf value(s) of "
                         f"{logit_weights.numel()}, which normalize to NaN weights; pass "
                         "finite logits (-inf masks a component)")
    empty = (logit_weights == -math.inf).all(-1)
    if empty.any():
        index = [int(i) for i in empty.nonzero()[0]]
        raise ValueError(f"logit_weights is -inf for all {logit_weights.shape[-1]} components "
                         f"in {int(empty.sum())} of {empty.numel()} mixture(s) (the first at "
                         f"index {index}): such a mixture has no weight to normalize; give "
                         "each mixture at least one finite logit")


class DiscretizedLogisticMixture(_PixelValidation, TorchDistribution):
    """A mixture of logistics discretized to the 256 levels, independently per pixel [1].

    In the scaled space ``y = 2x - 1`` level k sits at ``y_k = 2k/255 - 1`` and owns the bin
    ``[y_k - 1/255, y_k + 1/255]``; the bins of k = 0 and k = 255 extend to -inf and +inf, so
    the 256 masses sum to one. With ``F`` the logistic CDF of a component and ``u, l`` the
    standardized bin edges, an interior bin's mass is factorized as

        F(u) - F(l) = sigmoid(u) sigmoid(-l) (1 - exp(-(u - l))),    u - l = (2/255) / s,

    and taken in log space (log-sigmoids and ``log1mexp``). This is exact wherever the plain
    difference of sigmoids underflows, so the paper's fallback to the density at the bin
    centre for bins with mass below 1e-5 is not needed: far-tail log-probabilities and their
    gradients stay exact in float32. Channels are independent (no RGB coupling).

    Args:
        logit_weights, means, log_scales: ``[..., *pixels, M]`` for M components; means in the
            scaled space [-1, 1]; log-scales are clamped to ``[LOG_SCALE_MIN, LOG_SCALE_MAX]``.

    ``log_prob(x)`` for ``x: [batch, *pixels]`` (levels k/255) is ``[..., batch, *pixels]``,
    one value per pixel: wrap in ``.to_event(n)``.
    """

    arg_constraints = {"logit_weights": constraints.real_vector,
                       "means": constraints.real_vector,
                       "log_scales": constraints.real_vector}
    support = _EIGHT_BIT_LEVELS
    has_rsample = False
    expects = _LEVELS

    def __init__(self, logit_weights: torch.Tensor, means: torch.Tensor,
                 log_scales: torch.Tensor, validate_args=None):
        sizes = {t.shape[-1] if t.dim() else None for t in (logit_weights, means, log_scales)}
        if len(sizes) != 1 or None in sizes:
            raise ValueError(
                "logit_weights, means and log_scales need the same last (mixture) dim, got "
                f"{[list(t.shape) for t in (logit_weights, means, log_scales)]}")
        try:
            logit_weights, means, log_scales = torch.broadcast_tensors(
                logit_weights, means, log_scales)
        except RuntimeError:
            raise ValueError(
                "logit_weights, means and log_scales do not broadcast: "
                f"{[list(t.shape) for t in (logit_weights, means, log_scales)]}") from None
        if not being_traced():  # a traced graph stands for every call: checked eagerly
            _check_logit_weights(logit_weights.detach())
        self.logit_weights = logit_weights
        self.means = means
        self.log_scales = log_scales.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
        super().__init__(means.shape[:-1],  # an empty batch: nothing to check (see above)
                         validate_args=validate_args if means.numel() else False)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(DiscretizedLogisticMixture, _instance)
        batch_shape = torch.Size(batch_shape)
        shape = (*batch_shape, self.means.shape[-1])
        new.logit_weights = self.logit_weights.expand(shape)
        new.means = self.means.expand(shape)
        new.log_scales = self.log_scales.expand(shape)
        super(DiscretizedLogisticMixture, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _log_prob_levels(self, k: torch.Tensor) -> torch.Tensor:
        """``log P(k)`` for int64 levels ``k: [...]`` broadcasting with the batch shape."""
        # bin edges (2k +- 1)/255 - 1 from the integers, so that the upper edge of k and the
        # lower edge of k + 1 are the same float (computed apart, float32 rounding moved them
        # by ~6e-8, which a sharp component's 1/s = e^7 turned into 1.5e-5 of lost mass)
        twice = 2 * k.to(self.means.dtype)[..., None]  # [..., 1]
        inv_scale = torch.exp(-self.log_scales)
        upper = inv_scale * ((twice + 1) / (LEVELS - 1) - 1 - self.means)
        lower = inv_scale * ((twice - 1) / (LEVELS - 1) - 1 - self.means)
        log_below_upper = F.logsigmoid(upper)  # log F(u): mass of the bin of k = 0
        log_above_lower = F.logsigmoid(-lower)  # log (1 - F(l)): mass of the bin of k = 255
        log_interior = (log_below_upper + log_above_lower
                        + _log1mexp(inv_scale * (2 / (LEVELS - 1))))
        k = k[..., None]
        component = torch.where(k == 0, log_below_upper,
                                torch.where(k == LEVELS - 1, log_above_lower, log_interior))
        return torch.logsumexp(F.log_softmax(self.logit_weights, -1) + component, -1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``value: [..., *pixels]`` levels ``k / 255`` -> ``[..., *pixels]``, one log-probability
        per pixel (the mixture's mass on the level's bin)."""
        if self._validate_args:
            self._validate_sample(value)
        return self._log_prob_levels(_level_index(value))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """Levels ``k / 255``, ``[*sample_shape, ..., *pixels]``."""
        with torch.no_grad():
            pick = torch.distributions.Categorical(logits=self.logit_weights).sample(
                sample_shape)[..., None]
            shape = (*pick.shape[:-1], self.means.shape[-1])
            loc = self.means.expand(shape).gather(-1, pick).squeeze(-1)
            scale = self.log_scales.expand(shape).gather(-1, pick).squeeze(-1).exp()
            tiny = torch.finfo(loc.dtype).tiny
            u = torch.rand_like(loc).clamp(tiny, 1 - torch.finfo(loc.dtype).eps)
            y = loc + scale * (torch.log(u) - torch.log1p(-u))  # logistic inverse CDF
            k = torch.round((y + 1) / 2 * (LEVELS - 1)).clamp(0, LEVELS - 1)
            return k / (LEVELS - 1)

    def _level_log_probs(self) -> torch.Tensor:
        """``log P(k)`` of every level, ``[..., *pixels, 256]``."""
        k = torch.arange(LEVELS, device=self.means.device)
        k = k.reshape(LEVELS, *(1,) * len(self.batch_shape))  # [256, 1, ...]
        return self._log_prob_levels(k).movedim(0, -1)

    @property
    def mean(self) -> torch.Tensor:
        """``sum_k k/255 P(k)``, ``[..., *pixels]``."""
        grid = torch.arange(LEVELS, dtype=self.means.dtype, device=self.means.device)
        return self._level_log_probs().exp() @ grid / (LEVELS - 1)

    @property
    def mode(self) -> torch.Tensor:
        """The most probable level ``k / 255``, ``[..., *pixels]``."""
        return self._level_log_probs().argmax(-1).to(self.means.dtype) / (LEVELS - 1)


def _pixel_dims_text(pixel_ndim: int) -> str:
    return {1: "D", 3: "C, H, W"}.get(pixel_ndim, f"<{pixel_ndim} pixel dims>")


@dataclass(frozen=True)
class PixelLikelihood:
    """How a decoder's raw output becomes a pixel distribution.

    Attributes:
        name: key in :data:`LIKELIHOODS`.
        params_per_pixel: P, raw decoder outputs per pixel (and channel).
        discrete: scores 8-bit levels or binary pixels (True) or a density on [0, 1] (False).
        build: ``params: [..., *pixels, P]`` (parameter dim last) -> distribution with batch
            shape ``[..., *pixels]``.
        check: ``check(x)`` raises ``ValueError`` unless ``x: [...]`` follows the data
            convention of the likelihood.
    """

    name: str
    params_per_pixel: int
    discrete: bool
    build: Callable[[torch.Tensor], TorchDistribution]
    check: Callable[[torch.Tensor], None]

    def distribution(self, raw: torch.Tensor, pixel_ndim: int = 3) -> TorchDistribution:
        """From ``raw: [..., P, *pixels]``, e.g. ``[K, batch, P, C, H, W]`` (``pixel_ndim=3``)
        or ``[K, batch, P, D]`` (``pixel_ndim=1``), to batch shape ``[..., *pixels]``."""
        if raw.dim() < pixel_ndim + 1 or raw.shape[-pixel_ndim - 1] != self.params_per_pixel:
            raise ValueError(
                f"{self.name} needs decoder output [..., {self.params_per_pixel}, "
                f"{_pixel_dims_text(pixel_ndim)}], got {list(raw.shape)}")
        return self.build(raw.movedim(-pixel_ndim - 1, -1))

    def distribution_from_flat(self, raw: torch.Tensor,
                               pixel_shape: Sequence[int]) -> TorchDistribution:
        """From a flat ``raw: [..., P * prod(pixel_shape)]``, laid out as ``[..., P, *pixels]``
        (parameter-major, what ``unflatten(-1, (P, *pixel_shape))`` inverts): for a decoder of
        your own whose last layer is a ``Linear`` to ``P * prod(pixel_shape)`` outputs."""
        size = self.params_per_pixel * math.prod(pixel_shape)
        if raw.dim() < 1 or raw.shape[-1] != size:
            raise ValueError(
                f"{self.name} needs a flat decoder output [..., {size}] = [..., "
                f"{self.params_per_pixel} x {math.prod(pixel_shape)}] for pixels "
                f"{list(pixel_shape)}, got {list(raw.shape)}")
        return self.distribution(raw.unflatten(-1, (self.params_per_pixel, *pixel_shape)),
                                 len(pixel_shape))


def _check_binary(x: torch.Tensor) -> None:
    _require(constraints.boolean, x, "the Bernoulli likelihood", _BINARY)


# A density scores continuous values: data whose values all lie on the 8-bit grid k / 255
# (binarized {0, 1} images, raw levels never dequantized) are refused from this many values
# on. A dequantized value (k + u) / 256 lands within LEVEL_TOLERANCE (1e-3) levels of a
# level with probability about 2e-3 (float32; at most 1/8 for float16, whose steps near 1
# are 1/2048), so a false refusal of 32 values has probability below 1e-28.
GRID_REFUSAL_MIN_VALUES = 32
# Values read first: dequantized or other continuous data show an off-grid value among them,
# so the whole tensor is read only when the refusal is likely.
_GRID_PROBE = 4096


def _check_unit_interval(x: torch.Tensor) -> None:
    _require(constraints.unit_interval, x, "the Gaussian likelihood", _UNIT)
    _refuse_level_grid(x)


def _refuse_level_grid(x: torch.Tensor) -> None:
    """``ValueError`` when the (at least ``GRID_REFUSAL_MIN_VALUES``) values of ``x: [...]``
    all lie on the 8-bit grid ``k / 255``: a density on ``[0, 1]`` evaluated on a set of
    measure zero is unbounded (its scale shrinks onto the levels and ``log p(x)`` grows
    without limit: +22.7 nats per 8x8 binarized digit, -0.51 bits/dim), not a
    log-likelihood. The first ``_GRID_PROBE`` values are read first, so continuous data cost
    no full pass."""
    if x.numel() < GRID_REFUSAL_MIN_VALUES:
        return
    flat = x.reshape(-1)
    if bool(off_level_grid(flat[:_GRID_PROBE])[0].any()):
        return
    if flat.numel() > _GRID_PROBE and bool(off_level_grid(flat)[0].any()):
        return
    binary = bool(((flat == 0) | (flat == 1)).all())
    what = "binary values in {0, 1}" if binary else "8-bit levels k / 255, not dequantized"
    fix = ("the bernoulli likelihood for binary images" if binary else
           "uniform_dequantize(x) (training_representation does it for fit), or a discrete "
           "likelihood (categorical256, logistic-mixture) for the levels themselves")
    raise ValueError(
        f"the Gaussian likelihood is a density and needs continuous values in [0, 1] "
        f"(uniformly dequantized levels (k + u) / 256, see uniform_dequantize), but all "
        f"{flat.numel()} values of x are {what}: a density on "
        f"values that take a few discrete levels is unbounded (log p(x) grows as the scale "
        f"shrinks onto them) and is no log-likelihood; use {fix}")


def _check_levels(x: torch.Tensor) -> None:
    _require(_EIGHT_BIT_LEVELS, x, "a discrete 8-bit likelihood", _LEVELS)


def _bernoulli() -> PixelLikelihood:
    """P = 1: the logit (squeezed, not selected: a selection's backward fills a zero buffer
    of the whole ``[..., *pixels, 1]`` and copies into it, 4% of a K = 5 DReG step)."""
    return PixelLikelihood("bernoulli", 1, True,
                           lambda p: BernoulliPixel(logits=p.squeeze(-1)), _check_binary)


def _gaussian_fixed(scale: float = 0.1) -> PixelLikelihood:
    """P = 1: the mean; ``scale`` is the fixed sigma."""
    scale = as_number(scale, "gaussian-fixed's scale", 0, low_open=True)
    single = torch.finfo(torch.float32)
    if not single.tiny <= scale ** 2 <= single.max:  # the variance must be a float32 number
        raise ValueError(f"gaussian-fixed's scale must have a square within float32's range "
                         f"[{single.tiny:.3g}, {single.max:.3g}] (scale about 1e-19 to 1.8e19), "
                         f"got {scale!r}: its log density would be NaN")
    return PixelLikelihood("gaussian-fixed", 1, False,
                           lambda p: GaussianPixel(p.squeeze(-1), scale), _check_unit_interval)


def _gaussian_learned() -> PixelLikelihood:
    """P = 2: the mean and the log-scale (clamped, :meth:`GaussianPixel.from_log_scale`)."""
    return PixelLikelihood("gaussian-learned", 2, False,
                           lambda p: GaussianPixel.from_log_scale(*p.unbind(-1)),
                           _check_unit_interval)


def _categorical256() -> PixelLikelihood:
    """P = 256: the logits of the levels."""
    return PixelLikelihood("categorical256", LEVELS, True, Categorical256, _check_levels)


def _logistic_mixture(num_mixtures: int = 5) -> PixelLikelihood:
    """P = 3M: M mixture logits, M means (through tanh, so they stay in [-1, 1]), M log-scales."""
    num_mixtures = as_int(num_mixtures, "logistic-mixture's num_mixtures")

    def build(params):
        weights, means, log_scales = params.chunk(3, dim=-1)
        return DiscretizedLogisticMixture(weights, torch.tanh(means), log_scales)

    return PixelLikelihood("logistic-mixture", 3 * num_mixtures, True, build, _check_levels)


# Name -> constructor of the PixelLikelihood, taking the options listed in make_likelihood.
LIKELIHOODS: dict[str, Callable[..., PixelLikelihood]] = {
    "bernoulli": _bernoulli,
    "gaussian-fixed": _gaussian_fixed,
    "gaussian-learned": _gaussian_learned,
    "categorical256": _categorical256,
    "logistic-mixture": _logistic_mixture,
}


def make_likelihood(name: str, **options) -> PixelLikelihood:
    """The pixel likelihood ``name`` with its options.

    ==================  ==========================  ====================  =============
    name                decoder outputs P / pixel   data                  options
    ==================  ==========================  ====================  =============
    bernoulli           1 (logit)                   {0, 1}                -
    gaussian-fixed      1 (mean)                    (k + u)/256 in [0,1)  scale=0.1
    gaussian-learned    2 (mean, log-scale)         (k + u)/256 in [0,1)  -
    categorical256      256 (level logits)          k/255                 -
    logistic-mixture    3M (logits, means, log-s)   k/255                 num_mixtures=5
    ==================  ==========================  ====================  =============

    Raises:
        ValueError: unknown ``name``, or an option the likelihood does not take.
    """
    if not isinstance(name, str) or name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}; choose one of {', '.join(LIKELIHOODS)} "
                         "(a str)")
    builder = LIKELIHOODS[name]
    accepted = list(inspect.signature(builder).parameters)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"likelihood {name!r} takes no option(s) {unknown}; "
                         f"it takes {accepted or 'none'}")
    return builder(**options)


def sample_from(pixels, generator: torch.Generator | None) -> torch.Tensor:
    """``pixels.sample()`` (a pixel distribution of :func:`make_likelihood`'s) with its noise
    determined by ``generator``: a seed drawn from it seeds a forked random state on the
    draws' device, so the global generators are left as they were; None draws from them."""
    if generator is None:
        return pixels.sample()
    device = pixels.mean.device
    seed = int(torch.randint(0, 2 ** 62, (), generator=generator, device=generator.device))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        else:
            torch.default_generator.manual_seed(seed)
        return pixels.sample()


def likelihood_with_options(name: str, options: dict | None) -> PixelLikelihood:
    """:func:`make_likelihood` of a model's ``likelihood`` and ``likelihood_options`` (a dict,
    or None for none); ``TypeError`` naming ``likelihood_options`` when it is not a mapping."""
    if options is not None and not isinstance(options, Mapping):
        raise TypeError(f"likelihood_options must be a dict of the likelihood's options "
                        f"(e.g. {{'scale': 0.1}}), got {type(options).__name__}")
    return make_likelihood(name, **(options or {}))


def training_representation(data, likelihood: str, binarization: str = "static", seed: int = 0):
    """Training and test images of an :class:`ppl_models.ImageData` as ``likelihood`` needs them.

    Bernoulli: binarized (``"static"``: one fixed draw; ``"dynamic"``: train redrawn every
    minibatch, test fixed). Continuous likelihoods: uniformly dequantized (train redrawn
    every minibatch, test fixed by ``seed``). Discrete 8-bit likelihoods: the levels as they are.
    ``binarization`` applies to Bernoulli only: ``"dynamic"`` with another likelihood is
    refused (``ValueError``), ``"static"`` (the default) is ignored there. ``seed`` is an
    integer in ``[0, 2**63)``.

    Returns:
        ``(train [n, C, H, W], test [m, C, H, W], batch_transform or None)`` for
        :func:`inference.fit`.
    """
    seed = as_seed(seed)
    if not isinstance(data, ImageData):
        raise TypeError(f"data must be an ImageData (from ppl_models.load_images), got "
                        f"{type(data).__name__}; for a tensor of images, binarize or "
                        "dequantize it directly (binarize_static, uniform_dequantize)")
    make_likelihood(likelihood)  # names an unknown likelihood
    if binarization not in ("static", "dynamic"):
        raise ValueError(f"binarization must be 'static' or 'dynamic', got {binarization!r}")
    if binarization == "dynamic" and likelihood != "bernoulli":
        raise ValueError(f"dynamic binarization is for the bernoulli likelihood; {likelihood!r} "
                         "trains on the images as they are (or dequantized): leave "
                         "binarization='static'")
    if likelihood == "bernoulli":
        fixed = data.binarized(seed)
        if binarization == "dynamic":
            return data.train.images, fixed.test.images, torch.bernoulli
        return fixed.train.images, fixed.test.images, None
    if not make_likelihood(likelihood).discrete:
        test = uniform_dequantize(data.test.images, torch.Generator().manual_seed(seed))
        return data.train.images, test, uniform_dequantize
    return data.train.images, data.test.images, None
