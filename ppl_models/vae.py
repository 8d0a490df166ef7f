"""The variational autoencoder (Kingma and Welling 2014; Rezende et al. 2014) as a Pyro pair.

    z ~ N(0, I_d),    x | z ~ p_theta(x | z)  (one of the pixel likelihoods),
    q_phi(z | x) = N(mu_phi(x), diag sigma_phi(x)^2)  (amortized, reparameterized)

and the deterministic and sparse autoencoders of the lecture as fully observed Pyro models
(empty guides), so :func:`inference.fit` trains all three the same way.
"""

from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.util import is_validation_enabled
from pyro.nn import PyroModule, pyro_method

from .checks import (as_bool, as_int, as_number, as_sizes, check_data,
                     check_finite_parameters, check_image_draws, check_input, check_memory,
                     check_module_not_meta)
from .likelihoods import likelihood_with_options, sample_from
from .networks import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, check_hidden_for


def _networks(network: str, image_shape, latent_dim, params_per_pixel, hidden,
              default_hidden: tuple[int, ...] = (400,)):
    """Encoder and decoder of ``network``; ``hidden`` (the MLPs' widths, ``default_hidden``
    when None) must be left None for ``"conv"``, whose layers are fixed."""
    check_hidden_for(network, hidden)
    if network == "mlp":
        hidden = default_hidden if hidden is None else hidden
        return (MLPEncoder(image_shape, latent_dim, hidden),
                MLPDecoder(latent_dim, image_shape, params_per_pixel, hidden))
    return (ConvEncoder(image_shape, latent_dim),
            ConvDecoder(latent_dim, image_shape, params_per_pixel))


class _ImageModel(PyroModule):
    """Shared input checks and likelihood wiring for the image models."""

    def __init__(self, image_shape: Sequence[int], likelihood: str, likelihood_options):
        super().__init__()
        self.image_shape = as_sizes(image_shape, "image_shape", 3, "(C, H, W)")
        self.likelihood = likelihood_with_options(likelihood, likelihood_options)

    def _check(self, x: torch.Tensor) -> None:
        check_data(x, self.image_shape, "x", like=self)
        if is_validation_enabled():
            self.likelihood.check(x)

    def _check_input(self, x: torch.Tensor) -> None:
        """An encoder's input: type, shape, dtype and device, and finite values while Pyro's
        validation is enabled (any values the likelihood could not score are still encoded)."""
        check_input(x, self.image_shape, "x", like=self)

    def _check_parameters(self, what: str, prefix: str = "") -> None:
        """``FloatingPointError`` naming ``what`` (the method) and the model's parameters
        whose names start with ``prefix`` that hold NaN or infinite values (a diverged fit),
        which made NaN codes blamed on ``z`` or raw torch errors."""
        check_finite_parameters({name: p for name, p in self.named_parameters()
                                 if name.startswith(prefix)}, f"{type(self).__name__}.{what}")

    def pixel_distribution(self, raw: torch.Tensor):
        """Per-pixel distribution from decoder output ``raw: [..., P, C, H, W]``.

        Batch shape ``[..., C, H, W]``; wrap with ``.to_event(3)`` for one image.
        """
        return self.likelihood.distribution(raw)


def decoded_posterior(encode, decode, x: torch.Tensor, num_samples: int = 0) -> torch.Tensor:
    """Pixel means decoded from a Gaussian encoder's mean (``num_samples=0``) or from draws.

    ``encode(x) -> (loc, scale)`` each ``[batch, d]``; ``decode(z)`` a pixel distribution.
    Returns ``[batch, C, H, W]``, or ``[num_samples, batch, C, H, W]``; no gradients.
    ``ValueError`` before any work when that output could not fit in memory.
    """
    num_samples = as_int(num_samples, "num_samples", minimum=0)
    shape = ", ".join(map(str, x.shape))
    check_memory(max(num_samples, 1) * x.numel(), x.dtype,
                 f"num_samples={num_samples}: the images [num_samples, {shape}]")
    with torch.no_grad():
        loc, scale = encode(x)
        if num_samples:
            loc = loc + scale * torch.randn((num_samples, *loc.shape), device=loc.device,
                                            dtype=loc.dtype)
        return decode(loc).mean


class VAE(_ImageModel):
    """VAE for images ``x: [batch, C, H, W]`` with values as the likelihood expects.

    Args:
        image_shape: ``(C, H, W)``.
        latent_dim: d.
        likelihood: ``"bernoulli"``, ``"gaussian-fixed"``, ``"gaussian-learned"``,
            ``"categorical256"`` or ``"logistic-mixture"`` (see :mod:`ppl_models.likelihoods`).
        network: ``"mlp"`` (any size) or ``"conv"`` (28x28).
        hidden: hidden widths of the MLPs (depth = number of entries); None means ``(400,)``.
            Only for ``network="mlp"``: given with ``"conv"`` (fixed layers) it is refused
            (``ValueError``) rather than silently ignored.
        likelihood_options: keyword arguments of the likelihood (e.g. ``{"scale": 0.1}``).
    """

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), latent_dim: int = 50,
                 likelihood: str = "bernoulli", network: str = "mlp",
                 hidden: Sequence[int] | None = None, likelihood_options: dict | None = None):
        latent_dim = as_int(latent_dim, "latent_dim")
        hidden = None if hidden is None else as_sizes(hidden, "hidden")
        super().__init__(image_shape, likelihood, likelihood_options)
        self.latent_dim = latent_dim
        self.encoder, self.decoder = _networks(
            network, self.image_shape, latent_dim, self.likelihood.params_per_pixel, hidden)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x: [batch, C, H, W]`` -> loc, scale of ``q(z | x)``, each ``[batch, d]``.

        ``x`` is a float tensor of the model's dtype and device (named otherwise, as in
        :meth:`reconstruct`); NaN or infinite values are refused while Pyro's validation is
        enabled (they made NaN codes), and so are an encoder's NaN or infinite parameters
        (``FloatingPointError`` naming them)."""
        self._check_input(x)
        self._check_parameters("encode", "encoder.")
        return self.encoder(x)

    def decode(self, z: torch.Tensor):
        """``z: [..., d]`` -> pixel distribution with batch shape ``[..., C, H, W]``.

        ``z`` is a float tensor of the model's dtype and device, any leading dims (named
        otherwise); NaN or infinite codes are refused while Pyro's validation is enabled."""
        check_input(z, (self.latent_dim,), "z", like=self, batch_dims="...")
        return self.pixel_distribution(self.decoder(z))

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        """``x: [batch, C, H, W]`` images the likelihood scores; ``z: [..., batch, d]`` ~ N(0, I)
        and the observed ``x`` inside ``pyro.plate("data", batch)``."""
        self._check(x)
        zeros = x.new_zeros(self.latent_dim)
        prior = dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", prior)  # [..., batch, d]
            pyro.sample("x", self.decode(z).to_event(3), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        """``q(z | x) = N(encoder(x))``: ``z: [..., batch, d]`` for ``x: [batch, C, H, W]``, inside
        ``pyro.plate("data", batch)``."""
        self._check(x)
        loc, scale = self.encoder(x)  # no parameter check: a diverged fit reports them itself
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def reconstruct(self, x: torch.Tensor, num_samples: int = 0) -> torch.Tensor:
        """Mean images decoded from the posterior mean (``num_samples=0``) or from samples.

        ``x: [batch, C, H, W]`` of the model's dtype and device, values the likelihood
        scores (binary pixels for Bernoulli; refused otherwise while Pyro's validation is
        enabled, as the model refuses them).

        Returns:
            ``[batch, C, H, W]``, or ``[num_samples, batch, C, H, W]`` from ``z ~ q(z | x)``.

        Raises ``FloatingPointError`` naming the model's parameters that hold NaN or infinite
        values (a diverged fit).
        """
        self._check(x)
        self._check_parameters("reconstruct")
        return decoded_posterior(self.encode, self.decode, x, num_samples)

    def sample_images(self, num: int, generator: torch.Generator | None = None,
                      mean: bool = True) -> torch.Tensor:
        """Images from the prior, ``[num, C, H, W]``: pixel means, or pixel samples.

        The latents are drawn in float32 (the same for a model in any dtype) on
        ``generator``'s device (a CPU generator gives the same means on every device) or,
        without one, on the model's device; the pixel samples
        (``mean=False``) from a seed drawn from ``generator``, on the model's device, leaving
        the global random state as it was. ``generator`` is a
        :class:`torch.Generator` or None; ``num`` a positive integer whose images fit in
        memory; ``mean`` True or False (``TypeError`` otherwise: a string such as ``"no"``
        would count as True).
        """
        check_module_not_meta(self, "VAE.sample_images")
        self._check_parameters("sample_images", "decoder.")
        param = next(self.parameters())
        num = check_image_draws(num, generator, self.image_shape, param)
        mean = as_bool(mean, "mean")
        device = param.device
        source = generator.device if generator is not None else device
        with torch.no_grad():
            z = torch.randn(num, self.latent_dim, generator=generator, device=source,
                            dtype=torch.float32).to(device, param.dtype)
            pixels = self.decode(z)
            return pixels.mean if mean else sample_from(pixels, generator)


class Autoencoder(_ImageModel):
    """Deterministic autoencoder as a fully observed Pyro model with an empty guide.

    ``model`` scores ``log p(x | z = encoder(x))`` (the reconstruction likelihood), minus
    ``sparsity * |z|_1`` per image when ``sparsity > 0``: the sparse autoencoder of the
    lecture, whose L1 penalty on the code activity drives most units to zero. SVI with
    Trace_ELBO then maximizes the (penalized) reconstruction likelihood; the returned
    numbers are not evidence bounds: the observed site is marked ``infer={"not_a_density":
    True}``, and the evidence estimators refuse it (``elbo`` gives the objective).

    The arguments are :class:`VAE`'s (``hidden``: the MLPs' widths, None for ``(400,)``,
    refused with ``network="conv"``) and ``sparsity >= 0``.
    """

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), latent_dim: int = 50,
                 likelihood: str = "bernoulli", network: str = "mlp",
                 hidden: Sequence[int] | None = None, sparsity: float = 0.0,
                 likelihood_options: dict | None = None):
        latent_dim = as_int(latent_dim, "latent_dim")
        hidden = None if hidden is None else as_sizes(hidden, "hidden")
        # the penalty -sparsity * |code| is computed in float32 (at least): 1e39 is inf there,
        # and fit only said "training diverged ... Lower lr"
        sparsity = as_number(sparsity, "sparsity", 0, dtype=torch.float32)
        super().__init__(image_shape, likelihood, likelihood_options)
        self.latent_dim, self.sparsity = latent_dim, sparsity
        self.encoder, self.decoder = _networks(
            network, self.image_shape, latent_dim, self.likelihood.params_per_pixel, hidden)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code ``[batch, d]`` (the mean head of the shared encoder network) of
        ``x: [batch, C, H, W]``, a float tensor of the model's dtype and device (NaN or
        infinite values refused while Pyro's validation is enabled)."""
        self._check_input(x)
        return self.encoder(x)[0]

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        """``x: [batch, C, H, W]`` scored given its code ``encoder(x): [batch, d]`` (and the L1
        penalty on the code), inside ``pyro.plate("data", batch)``."""
        self._check(x)
        code = self.encode(x)
        with pyro.plate("data", x.shape[0]):
            if self.sparsity:
                pyro.factor("l1_activity", -self.sparsity * code.abs().sum(-1))
            # x scored given a code read from x: no density of x, which the estimators
            # refuse by this mark (inference.pair_check.NOT_A_DENSITY)
            pyro.sample("x", self.pixel_distribution(self.decoder(code)).to_event(3), obs=x,
                        infer={"not_a_density": True})

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        """Nothing is latent."""

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean reconstruction ``[batch, C, H, W]`` of ``x: [batch, C, H, W]`` (values the
        likelihood scores, as for :meth:`VAE.reconstruct`)."""
        self._check(x)
        with torch.no_grad():
            return self.pixel_distribution(self.decoder(self.encode(x))).mean
