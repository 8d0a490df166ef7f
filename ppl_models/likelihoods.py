"""Pixel likelihoods p(x | z) that any image model can use, and the units to compare them.

Images are tensors ``x: [..., C, H, W]`` with values in [0, 1]. The discrete likelihoods
read them as 8-bit levels ``k / 255``; the continuous ones are meant for uniformly
dequantized data ``(k + u) / 256`` (:func:`ppl_models.uniform_dequantize`). Every
distribution here scores one value per pixel (batch shape ``[..., C, H, W]``, event shape
``()``): wrap it in ``.to_event(3)`` to score whole images.

Comparing a density with a probability mass: for levels k and ``u ~ U[0, 1)^D``,
``log P(k) >= E_u[log p((k + u) / 256)] - D log 256`` (Theis et al. 2016), so
:func:`discrete_log_likelihood_bound` turns a continuous log density on dequantized data
into a lower bound on the discrete log-likelihood, which one table can rank with the
discrete models in bits/dim (:func:`bits_per_dim`).

References:
    [1] Salimans, Karpathy, Chen, Kingma (2017), PixelCNN++ (discretized logistic mixture).
    [2] van den Oord, Kalchbrenner, Kavukcuoglu (2016), Pixel Recurrent Neural Networks
        (256-way softmax).
    [3] Theis, van den Oord, Bethge (2016), A note on the evaluation of generative models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.nn import functional as F

from .data import uniform_dequantize

LEVELS = 256
LOG_SCALE_MIN = -7.0  # keeps learned scales above ~1e-3 so densities stay finite
LOG_SCALE_MAX = 3.0


def bits_per_dim(nats_per_image: float | torch.Tensor, num_dims: int):
    """Convert a negative log-likelihood in nats per image to bits per dimension."""
    return nats_per_image / (num_dims * math.log(2))


def discrete_log_likelihood_bound(log_density_nats, num_dims: int, levels: int = LEVELS):
    """Lower bound on ``log P(levels)`` from a log density on ``(k + u) / levels`` [3].

    The density lives on [0, 1]^D, each level's cell has volume ``levels^-D``, hence the
    subtraction of ``D log(levels)`` nats.
    """
    return log_density_nats - num_dims * math.log(levels)


def _level_index(x: torch.Tensor) -> torch.Tensor:
    """Integer levels ``k = round(255 x)`` of ``x: [...]`` in [0, 1], as int64."""
    return torch.round(x * (LEVELS - 1)).long()


def _check_levels(x: torch.Tensor) -> None:
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise ValueError(
            f"pixel values must lie in [0, 1] as levels k/255, got [{float(x.min())}, "
            f"{float(x.max())}]"
        )
    if float((x * (LEVELS - 1) - _level_index(x)).abs().max()) > 1e-3:
        raise ValueError("pixel values must be 8-bit levels k/255 for a discrete likelihood; "
                         "use the original (not dequantized) images")


class Categorical256(TorchDistribution):
    """A 256-way softmax per pixel over the levels ``k / 255`` [2].

    Args:
        logits: ``[..., C, H, W, 256]``.
    """

    arg_constraints = {"logits": constraints.real_vector}
    support = constraints.interval(0.0, 1.0)
    has_rsample = False

    def __init__(self, logits: torch.Tensor, validate_args=None):
        if logits.shape[-1] != LEVELS:
            raise ValueError(f"logits need a last dim of {LEVELS} levels, got {logits.shape}")
        self.logits = logits - logits.logsumexp(-1, keepdim=True)
        super().__init__(logits.shape[:-1], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return Categorical256(self.logits.expand(*batch_shape, LEVELS))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        index = _level_index(value).clamp(0, LEVELS - 1)
        logits, index = torch.broadcast_tensors(self.logits, index[..., None])
        return logits.gather(-1, index[..., :1]).squeeze(-1)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            levels = dist.Categorical(logits=self.logits).sample(sample_shape)
            return levels.to(self.logits.dtype) / (LEVELS - 1)

    @property
    def _grid(self) -> torch.Tensor:
        return torch.arange(LEVELS, dtype=self.logits.dtype, device=self.logits.device) / (
            LEVELS - 1)

    @property
    def mean(self) -> torch.Tensor:
        return (self.logits.exp() * self._grid).sum(-1)

    @property
    def mode(self) -> torch.Tensor:
        return self.logits.argmax(-1).to(self.logits.dtype) / (LEVELS - 1)


class DiscretizedLogisticMixture(TorchDistribution):
    """Mixture of logistics discretized to the 256 levels, per pixel and channel [1].

    The data are mapped to ``y = 2x - 1`` in [-1, 1]; level k owns the bin
    ``[y_k - 1/255, y_k + 1/255]``, with the first and last bins extended to infinity so the
    256 probabilities sum to one.

    Args:
        logit_weights, means, log_scales: ``[..., C, H, W, M]`` for M components.
    """

    arg_constraints = {"logit_weights": constraints.real_vector,
                       "means": constraints.real_vector,
                       "log_scales": constraints.real_vector}
    support = constraints.interval(0.0, 1.0)
    has_rsample = False

    def __init__(self, logit_weights, means, log_scales, validate_args=None):
        logit_weights, means, log_scales = torch.broadcast_tensors(logit_weights, means,
                                                                   log_scales)
        self.logit_weights = logit_weights
        self.means = means
        self.log_scales = log_scales.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
        super().__init__(means.shape[:-1], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        shape = (*batch_shape, self.means.shape[-1])
        return DiscretizedLogisticMixture(self.logit_weights.expand(shape),
                                          self.means.expand(shape),
                                          self.log_scales.expand(shape))

    def _component_log_probs(self, levels: torch.Tensor) -> torch.Tensor:
        """``log P(k | component)`` for ``levels: [..., C, H, W]`` -> ``[..., C, H, W, M]``."""
        y = (2 * levels.to(self.means.dtype) / (LEVELS - 1) - 1)[..., None]
        centered = y - self.means
        inv_scale = torch.exp(-self.log_scales)
        upper = inv_scale * (centered + 1 / (LEVELS - 1))
        lower = inv_scale * (centered - 1 / (LEVELS - 1))
        log_cdf_upper = F.logsigmoid(upper)  # mass below the bin's upper edge (k = 0)
        log_survival_lower = F.logsigmoid(-lower)  # mass above the lower edge (k = 255)
        mass = torch.sigmoid(upper) - torch.sigmoid(lower)
        # where the bin mass underflows, use the density at the centre times the bin width
        middle = inv_scale * centered
        log_density_mid = middle - self.log_scales - 2 * F.softplus(middle)
        log_mass = torch.where(mass > 1e-5, mass.clamp_min(1e-12).log(),
                               log_density_mid + math.log(2 / (LEVELS - 1)))
        levels = levels[..., None]
        return torch.where(levels == 0, log_cdf_upper,
                           torch.where(levels == LEVELS - 1, log_survival_lower, log_mass))

    def _log_prob_levels(self, levels: torch.Tensor) -> torch.Tensor:
        log_weights = F.log_softmax(self.logit_weights, -1)
        return torch.logsumexp(log_weights + self._component_log_probs(levels), -1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self._log_prob_levels(_level_index(value).clamp(0, LEVELS - 1))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            shape = torch.Size(sample_shape) + self.means.shape
            component = dist.Categorical(logits=self.logit_weights.expand(shape)).sample()
            pick = component[..., None]
            loc = self.means.expand(shape).gather(-1, pick).squeeze(-1)
            log_scale = self.log_scales.expand(shape).gather(-1, pick).squeeze(-1)
            u = torch.rand_like(loc).clamp(1e-5, 1 - 1e-5)
            y = (loc + log_scale.exp() * (u.log() - (-u).log1p())).clamp(-1, 1)
            return torch.round((y + 1) / 2 * (LEVELS - 1)) / (LEVELS - 1)

    def _level_probs(self) -> torch.Tensor:
        """``[..., C, H, W, 256]`` probabilities of every level."""
        levels = torch.arange(LEVELS, device=self.means.device)
        levels = levels.reshape(LEVELS, *(1,) * len(self.batch_shape))  # [256, 1, ...]
        return self._log_prob_levels(levels).movedim(0, -1).exp()

    @property
    def mean(self) -> torch.Tensor:
        grid = torch.arange(LEVELS, dtype=self.means.dtype, device=self.means.device)
        return (self._level_probs() * grid).sum(-1) / (LEVELS - 1)

    @property
    def mode(self) -> torch.Tensor:
        return self._level_probs().argmax(-1).to(self.means.dtype) / (LEVELS - 1)


@dataclass(frozen=True)
class PixelLikelihood:
    """How a decoder's raw output becomes a pixel distribution.

    Attributes:
        name: registry key.
        params_per_pixel: P, raw outputs the decoder emits per pixel and channel.
        discrete: scores 8-bit levels (True) or a density on [0, 1] (False).
        build: maps ``raw: [..., P, C, H, W]`` to a distribution with batch shape
            ``[..., C, H, W]``.
        check: raises ``ValueError`` when data do not suit the likelihood.
    """

    name: str
    params_per_pixel: int
    discrete: bool
    build: Callable[[torch.Tensor], TorchDistribution]
    check: Callable[[torch.Tensor], None]

    def distribution(self, raw: torch.Tensor) -> TorchDistribution:
        if raw.dim() < 4 or raw.shape[-4] != self.params_per_pixel:
            raise ValueError(
                f"{self.name} needs decoder output [..., {self.params_per_pixel}, C, H, W], "
                f"got {list(raw.shape)}"
            )
        return self.build(raw)


def _check_binary(x: torch.Tensor) -> None:
    if not bool(((x == 0) | (x == 1)).all()):
        raise ValueError("the Bernoulli likelihood needs binary pixels in {0, 1}; "
                         "binarize the images first")


def _check_unit_interval(x: torch.Tensor) -> None:
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise ValueError(
            f"pixel values must lie in [0, 1], got [{float(x.min())}, {float(x.max())}]")


def make_likelihood(name: str, scale: float = 0.1, num_mixtures: int = 5) -> PixelLikelihood:
    """The pixel likelihood ``name``.

    Args:
        name: ``"bernoulli"`` (logits), ``"gaussian-fixed"`` (mean; ``scale`` fixed),
            ``"gaussian-learned"`` (mean and log-scale per pixel), ``"categorical256"``
            (256 logits), ``"logistic-mixture"`` (``num_mixtures`` weights, means, log-scales).
        scale: the fixed standard deviation of ``"gaussian-fixed"``.
        num_mixtures: components of ``"logistic-mixture"``.
    """
    if name == "bernoulli":
        return PixelLikelihood(name, 1, True,
                               lambda raw: dist.Bernoulli(logits=raw[..., 0, :, :, :]),
                               _check_binary)
    if name == "gaussian-fixed":
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        return PixelLikelihood(name, 1, False,
                               lambda raw: dist.Normal(raw[..., 0, :, :, :], scale),
                               _check_unit_interval)
    if name == "gaussian-learned":
        def gaussian(raw):
            log_scale = raw[..., 1, :, :, :].clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
            return dist.Normal(raw[..., 0, :, :, :], log_scale.exp())
        return PixelLikelihood(name, 2, False, gaussian, _check_unit_interval)
    if name == "categorical256":
        return PixelLikelihood(name, LEVELS, True,
                               lambda raw: Categorical256(raw.movedim(-4, -1)), _check_levels)
    if name == "logistic-mixture":
        def mixture(raw):
            weights, means, log_scales = raw.movedim(-4, -1).chunk(3, dim=-1)
            return DiscretizedLogisticMixture(weights, torch.tanh(means), log_scales)
        return PixelLikelihood(name, 3 * num_mixtures, True, mixture, _check_levels)
    raise ValueError(f"unknown likelihood {name!r}; choose one of {', '.join(LIKELIHOODS)}")


LIKELIHOODS = ("bernoulli", "gaussian-fixed", "gaussian-learned", "categorical256",
               "logistic-mixture")


def training_representation(data, likelihood: str, binarization: str = "static", seed: int = 0):
    """Training and test images of an :class:`ppl_models.ImageData` as ``likelihood`` needs them.

    Bernoulli: binarized (``"static"``: one fixed draw; ``"dynamic"``: train redrawn every
    minibatch, test fixed). Continuous likelihoods: uniformly dequantized (train redrawn
    every minibatch, test fixed by ``seed``). Discrete 8-bit likelihoods: the levels as they are.

    Returns:
        ``(train [n, C, H, W], test [m, C, H, W], batch_transform or None)`` for
        :func:`inference.fit`.
    """
    if binarization not in ("static", "dynamic"):
        raise ValueError(f"binarization must be 'static' or 'dynamic', got {binarization!r}")
    if likelihood == "bernoulli":
        fixed = data.binarized(seed)
        if binarization == "dynamic":
            return data.train.images, fixed.test.images, torch.bernoulli
        return fixed.train.images, fixed.test.images, None
    if not make_likelihood(likelihood).discrete:
        test = uniform_dequantize(data.test.images, torch.Generator().manual_seed(seed))
        return data.train.images, test, uniform_dequantize
    return data.train.images, data.test.images, None
