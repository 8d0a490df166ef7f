"""A VAE with two stochastic layers (Burda et al. 2015, Table 1's second architecture).

Model (top-down):

    z2 ~ N(0, I_{d2}),    z1 | z2 ~ N(mu_p(z2), diag sigma_p(z2)^2),    x | z1 ~ p_theta(x | z1)

Guide (bottom-up, amortized and reparameterized):

    q(z1 | x) = N(mu_1(x), diag sigma_1(x)^2),    q(z2 | z1) = N(mu_2(z1), diag sigma_2(z1)^2)

Burda et al. [1] use, for 28x28 MNIST, ``d1 = 100`` and ``d2 = 50`` with two deterministic
tanh layers of 200 units between x and z1 and two of 100 units between z1 and z2, in both
directions: the defaults here. Every size is an argument, so the 8x8 digits and the tests use
small ones.

References:
    [1] Burda, Grosse, Salakhutdinov (2015), Importance Weighted Autoencoders, section 5.
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.util import is_validation_enabled
from pyro.nn import PyroModule, pyro_method
from torch import nn
from torch.nn import functional as F

from .checks import (as_bool, as_int, as_sizes, check_data, check_image_draws, check_input,
                     check_module_not_meta)
from .likelihoods import likelihood_with_options, sample_from
from .local_guides import LocalGuide
from .networks import full_precision, mlp
from .vae import decoded_posterior

ACTIVATIONS = {"tanh": nn.Tanh, "softplus": nn.Softplus, "relu": nn.ReLU}


class _GaussianLayer(nn.Module):
    """MLP ``[..., n_in] -> (loc, scale)``, each ``[..., n_out]`` (scale = softplus + 1e-5)."""

    def __init__(self, n_in: int, hidden: Sequence[int], n_out: int, activation,
                 what: str | None = None):
        super().__init__()
        self.net = mlp([n_in, *hidden, 2 * n_out], activation, what)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw_scale = full_precision(self.net(h)).chunk(2, dim=-1)
        return loc, F.softplus(raw_scale) + 1e-5


class TwoLayerVAE(PyroModule):
    """Two-stochastic-layer VAE for images ``x: [batch, C, H, W]``; latent sites ``"z1"``, ``"z2"``.

    ``latent_prior`` says that ``z1``'s prior is not ``N(0, I)`` (the uses that assume it,
    completion, super-resolution and bits-back coding, refuse this model).

    Args:
        image_shape: ``(C, H, W)``.
        latent_dim: d1, units of the lower stochastic layer z1 (the one next to x).
        top_latent_dim: d2, units of the upper stochastic layer z2.
        likelihood: a pixel likelihood of :mod:`ppl_models.likelihoods`.
        hidden: deterministic layers between x and z1 (both directions).
        top_hidden: deterministic layers between z1 and z2 (both directions).
        activation: ``"tanh"`` (Burda et al.), ``"softplus"`` or ``"relu"``.
        likelihood_options: keyword arguments of the likelihood.

    Both sites sit in ``pyro.plate("data", batch)`` and accept leading particle dims, so every
    estimator of :mod:`inference` and ``inference.fit`` with ``"elbo"``, ``"iwae"`` and
    ``"dreg"`` apply.
    """

    latent_prior = "hierarchical, p(z1 | z2) p(z2)"

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), latent_dim: int = 100,
                 top_latent_dim: int = 50, likelihood: str = "bernoulli",
                 hidden: Sequence[int] = (200, 200), top_hidden: Sequence[int] = (100, 100),
                 activation: str = "tanh", likelihood_options: dict | None = None):
        super().__init__()
        image_shape = as_sizes(image_shape, "image_shape", 3, "(C, H, W)")
        latent_dim = as_int(latent_dim, "latent_dim")
        top_latent_dim = as_int(top_latent_dim, "top_latent_dim")
        hidden, top_hidden = as_sizes(hidden, "hidden"), as_sizes(top_hidden, "top_hidden")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from "
                             f"{', '.join(ACTIVATIONS)}")
        self.image_shape = image_shape
        self.latent_dim, self.top_latent_dim = latent_dim, top_latent_dim
        self.likelihood = likelihood_with_options(likelihood, likelihood_options)
        act = ACTIVATIONS[activation]
        pixels = math.prod(self.image_shape)
        self.out_shape = (self.likelihood.params_per_pixel, *self.image_shape)
        # guide, bottom-up
        sizes = (f"latent_dim={latent_dim}, top_latent_dim={top_latent_dim}, hidden={hidden}, "
                 f"top_hidden={top_hidden}")
        self.encoder = _GaussianLayer(pixels, hidden, latent_dim, act, f"{sizes}: q(z1 | x)")
        self.top_encoder = _GaussianLayer(latent_dim, top_hidden, top_latent_dim, act,
                                          f"{sizes}: q(z2 | z1)")
        # model, top-down
        self.top_decoder = _GaussianLayer(top_latent_dim, tuple(reversed(top_hidden)),
                                          latent_dim, act, f"{sizes}: p(z1 | z2)")
        self.decoder = mlp([latent_dim, *reversed(hidden), math.prod(self.out_shape)], act,
                           f"{sizes}: p(x | z1)")

    def _check(self, x: torch.Tensor) -> None:
        check_data(x, self.image_shape, "x", like=self)
        if is_validation_enabled():
            self.likelihood.check(x)

    # Each of these takes float tensors of the model's dtype and device and names any other
    # (dtype and device always, as check_data), and refuses NaN or infinite values while
    # Pyro's validation is enabled (check_input, as VAE.encode and VAE.decode).
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x: [batch, C, H, W]`` -> loc, scale of ``q(z1 | x)``, each ``[batch, d1]``."""
        check_input(x, self.image_shape, "x", like=self)
        return self.encoder(x.flatten(-3))

    def encode_top(self, z1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z1: [..., d1]`` -> loc, scale of ``q(z2 | z1)``, each ``[..., d2]``."""
        check_input(z1, (self.latent_dim,), "z1", like=self, batch_dims="...")
        return self.top_encoder(z1)

    def prior_z1(self, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z2: [..., d2]`` -> loc, scale of ``p(z1 | z2)``, each ``[..., d1]``."""
        check_input(z2, (self.top_latent_dim,), "z2", like=self, batch_dims="...")
        return self.top_decoder(z2)

    def decode(self, z1: torch.Tensor):
        """``z1: [..., d1]`` -> pixel distribution with batch shape ``[..., C, H, W]``."""
        check_input(z1, (self.latent_dim,), "z1", like=self, batch_dims="...")
        raw = full_precision(self.decoder(z1)).unflatten(-1, self.out_shape)
        return self.likelihood.distribution(raw)

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        """``x: [batch, C, H, W]``; ``z2: [..., batch, d2]`` ~ N(0, I), ``z1: [..., batch, d1]``
        given ``z2``, then ``x`` given ``z1``, inside ``pyro.plate("data", batch)``."""
        self._check(x)
        zeros = x.new_zeros(self.top_latent_dim)
        prior = dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", prior)  # [..., batch, d2]
            z1 = pyro.sample("z1", dist.Normal(*self.prior_z1(z2)).to_event(1))  # [..., batch, d1]
            pyro.sample("x", self.decode(z1).to_event(3), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        """``q(z1 | x) q(z2 | z1)`` for ``x: [batch, C, H, W]``: ``z1: [..., batch, d1]`` and
        ``z2: [..., batch, d2]`` inside ``pyro.plate("data", batch)``."""
        self._check(x)
        loc, scale = self.encode(x)
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(loc, scale).to_event(1))  # [..., batch, d1]
            pyro.sample("z2", dist.Normal(*self.encode_top(z1)).to_event(1))

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean of the lower layer, ``E_q[z1 | x] = mu_1(x)``: ``[batch, d1]``."""
        self._check(x)
        with torch.no_grad():
            return self.encode(x)[0]

    def reconstruct(self, x: torch.Tensor, num_samples: int = 0) -> torch.Tensor:
        """Mean images decoded from ``E_q[z1 | x]`` (``num_samples=0``) or from ``q(z1 | x)``.

        Returns:
            ``[batch, C, H, W]``, or ``[num_samples, batch, C, H, W]``.
        """
        self._check(x)  # the likelihood's support too, as the model checks it
        return decoded_posterior(self.encode, self.decode, x, num_samples)

    def sample_images(self, num: int, generator: torch.Generator | None = None,
                      mean: bool = True) -> torch.Tensor:
        """Images from the model, ``[num, C, H, W]``: ``z2 ~ p``, ``z1 ~ p(z1 | z2)``, then the
        pixel means (``mean=True``) or pixel samples. Latent noise from ``generator`` (a
        :class:`torch.Generator` on any device, the draws moved to the model's) or None; the
        pixel samples from a seed drawn from it (the global random state left as it was).
        ``num`` is a positive integer whose images fit in memory; ``mean`` True or False
        (``TypeError`` otherwise)."""
        check_module_not_meta(self, "TwoLayerVAE.sample_images")
        param = next(self.parameters())
        num = check_image_draws(num, generator, self.image_shape, param)
        mean = as_bool(mean, "mean")
        device = param.device
        source = generator.device if generator is not None else device
        with torch.no_grad():
            # drawn in float32 and cast: the same images for the model in any dtype
            z2 = torch.randn(num, self.top_latent_dim, generator=generator, device=source,
                             dtype=torch.float32).to(device, param.dtype)
            loc, scale = self.prior_z1(z2)
            eps = torch.randn(num, self.latent_dim, generator=generator, device=source,
                              dtype=torch.float32)
            pixels = self.decode(loc + scale * eps.to(device, param.dtype))
            return pixels.mean if mean else sample_from(pixels, generator)

    def local_guide(self, x: torch.Tensor) -> LocalTwoLayerGuide:
        """A guide with free ``q(z1)`` parameters per datapoint of ``x`` and ``q(z2 | z1)`` fixed.

        For the amortization gap (Cremer et al. 2018): see :class:`LocalTwoLayerGuide`.
        """
        self._check(x)
        with torch.no_grad():
            loc, scale = self.encode(x)
        return LocalTwoLayerGuide(loc, scale, self.top_encoder)


class LocalTwoLayerGuide(LocalGuide):
    """The two-layer guide with its x-dependent part freed: ``q(z1) = N(loc_i, scale_i)`` per
    datapoint, ``q(z2 | z1)`` the trained (and here fixed) network.

    Only ``q(z1 | x)`` sees x, so this is the family the amortized guide chooses from, and the
    amortized guide is its member ``(loc_i, scale_i) = encoder(x_i)``; optimizing the local
    parameters (``inference.fit_local_guide(model, local_guide, x)``) measures the amortization
    gap within that family. (``inference.amortization_gap`` would instead fit independent
    local Gaussians to z1 and z2, dropping the guide's z2-on-z1 dependence.)

    Args:
        loc, scale: ``[batch, d1]`` initial ``q(z1)``.
        top_encoder: ``z1 -> (loc, scale)`` of ``q(z2 | z1)``; copied, its weights frozen.
    """

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, top_encoder: nn.Module):
        if loc.dim() != 2 or scale.shape != loc.shape:
            raise ValueError(f"loc and scale must both be [batch, d1], got {list(loc.shape)} "
                             f"and {list(scale.shape)}")
        self.loc = loc.detach().clone().requires_grad_(True)
        self.log_scale = scale.detach().log().requires_grad_(True)
        self.top_encoder = copy.deepcopy(top_encoder).requires_grad_(False)
        self.batch_size = loc.shape[0]

    def parameters(self) -> list[torch.Tensor]:
        """``[loc, log_scale]``, each ``[batch, d1]``: the free tensors an optimizer updates."""
        return [self.loc, self.log_scale]

    def __call__(self, x: torch.Tensor, *args, **kwargs) -> None:
        """``z1: [..., batch, d1]`` from the free ``q(z1)``, ``z2`` from the fixed ``q(z2 | z1)``,
        for the same ``x: [batch, C, H, W]`` the guide was made from (only its batch size is
        read)."""
        self._check_batch(x)
        with pyro.plate("data", self.batch_size):
            z1 = pyro.sample("z1", dist.Normal(self.loc, self.log_scale.exp()).to_event(1))
            pyro.sample("z2", dist.Normal(*self.top_encoder(z1)).to_event(1))
