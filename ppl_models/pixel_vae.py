"""A VAE whose decoder is a PixelCNN conditioned on the latent (a "PixelVAE").

    z ~ N(0, I_d),
    x | z ~ prod_{i, c} p_theta(x_{c,i} | x_{<i}, x_{<c,i}, z)   (a PixelCNN, [1, 2]),
    q_phi(z | x) = N(mu_phi(x), diag sigma_phi(x)^2)              (amortized, as in ppl_models.vae)

The latent enters every gated residual block of the PixelCNN as a per-image bias
``V_h z`` ([2] eq. 4). The likelihood is exact and normalized for every ``z``, so the ELBO,
IWAE_K and every estimator of :mod:`inference` apply unchanged. An autoregressive decoder can
model the data without the latent at all; trained with the plain ELBO, such a VAE often drives
``KL(q(z | x) || p(z))`` to zero ("posterior collapse", [3] Section 2.2, [4]). KL warm-up
(:func:`inference.fit`'s ``kl_warmup_epochs``) and free bits
(:class:`inference.training.free_bits.FreeBitsELBO`, [5] Appendix C.8) are the usual
counter-measures;
``examples/pixel_vae.py`` compares them.

References:
    [1] van den Oord, Kalchbrenner, Kavukcuoglu (2016), Pixel Recurrent Neural Networks.
    [2] van den Oord et al. (2016), Conditional Image Generation with PixelCNN Decoders.
    [3] Bowman, Vilnis, Vinyals, Dai, Jozefowicz, Bengio (2016), Generating Sentences from a
        Continuous Space.
    [4] Gulrajani, Kumar, Ahmed, Taiga, Visin, Vazquez, Courville (2017), PixelVAE: A Latent
        Variable Model for Natural Images; Chen et al. (2017), Variational Lossy Autoencoder.
    [5] Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling (2016), Improved Variational
        Inference with Inverse Autoregressive Flow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.util import is_validation_enabled
from pyro.nn import PyroModule, pyro_method

from .checks import (as_bool, as_int, as_seed, as_sizes, check_data, check_finite_rows,
                     check_generator, check_like, check_memory, check_module_not_meta,
                     check_values)
from .networks import ConvEncoder, MLPEncoder, check_hidden_for
from .pixelcnn import PixelCNN

__all__ = ["PixelVAE"]


class PixelVAE(PyroModule):
    """VAE with a latent-conditioned PixelCNN decoder for ``x: [batch, C, H, W]``.

    ``model(x)`` and ``guide(x)`` share ``pyro.plate("data", batch)`` with the latent site
    ``"z"`` (``[batch, latent_dim]``) and the observed site ``"x"`` (event shape
    ``[C, H, W]``), like :class:`ppl_models.vae.VAE`.

    Args:
        image_shape: ``(C, H, W)``.
        latent_dim: d.
        likelihood: ``"bernoulli"`` (binary pixels), ``"categorical256"`` or
            ``"logistic-mixture"`` (8-bit levels ``k / 255``), as in
            :class:`ppl_models.pixelcnn.PixelCNN`.
        network: encoder, ``"mlp"`` (any size) or ``"conv"`` (28x28).
        hidden: hidden widths of the MLP encoder; None means ``(200,)``. Only for
            ``network="mlp"``: given with ``"conv"`` (fixed layers) it is refused
            (``ValueError``) rather than silently ignored.
        channels, num_blocks, kernel_size, first_kernel_size: the PixelCNN decoder; a small
            receptive field leaves more for the latent to explain.
    """

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), latent_dim: int = 16,
                 likelihood: str = "bernoulli", network: str = "mlp",
                 hidden: Sequence[int] | None = None, channels: int = 32, num_blocks: int = 2,
                 kernel_size: int = 3, first_kernel_size: int = 5):
        super().__init__()
        latent_dim = as_int(latent_dim, "latent_dim")
        hidden = None if hidden is None else as_sizes(hidden, "hidden")
        check_hidden_for(network, hidden)
        self.decoder = PixelCNN(image_shape, likelihood, channels, num_blocks, kernel_size,
                                first_kernel_size, cond_dim=latent_dim)
        self.image_shape = self.decoder.image_shape
        self.latent_dim = latent_dim
        if network == "mlp":
            self.encoder = MLPEncoder(self.image_shape, latent_dim,
                                      (200,) if hidden is None else hidden)
        elif network == "conv":
            self.encoder = ConvEncoder(self.image_shape, latent_dim)
        else:
            raise ValueError(f"unknown network {network!r}; choose 'mlp' or 'conv'")

    def _check(self, x: torch.Tensor) -> None:
        check_data(x, self.image_shape, "x", like=self)
        self.decoder.check_x(x)  # the likelihood's support (binary or 8-bit levels)

    def _check_z(self, z: torch.Tensor, batch: int) -> None:
        if (not torch.is_tensor(z) or not z.is_floating_point() or z.dim() < 2
                or tuple(z.shape[-2:]) != (batch, self.latent_dim)):
            raise ValueError(f"z must be a float tensor [..., batch, latent_dim] = [..., {batch}, "
                             f"{self.latent_dim}], got {getattr(z, 'dtype', type(z).__name__)} "
                             f"{list(getattr(z, 'shape', []))}")
        check_like(z, "z", self)
        if is_validation_enabled():
            check_values(z, "z")  # NaN codes made NaN tables without a word

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x: [batch, C, H, W]`` -> loc, scale of ``q(z | x)``, each ``[batch, d]``; ``x``
        (at least one image) of the model's dtype and device, in the likelihood's support."""
        self._check(x)
        return self.encoder(x)

    def decode(self, x: torch.Tensor, z: torch.Tensor):
        """``p(x_i | x_{<i}, z)`` for every pixel (teacher-forced on ``x: [batch, C, H, W]``).

        Args:
            x: ``[batch, C, H, W]`` the images whose pixels condition the later ones.
            z: ``[*particles, batch, d]``; leading particle dims broadcast over ``x``. Both of
                the model's dtype and device (named otherwise).

        Returns:
            a distribution with batch shape ``[*particles, batch, C, H, W]``; wrap it in
            ``.to_event(3)`` to score whole images.
        """
        self._check_z(z, x.shape[0])
        return self.decoder.distribution(x, h=z)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x | z)`` in nats per image: ``x: [batch, C, H, W]``, ``z: [*particles,
        batch, d]`` -> ``[*particles, batch]``."""
        return self.decode(x, z).log_prob(x).sum((-3, -2, -1))

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        """``x: [batch, C, H, W]``; ``z: [..., batch, d]`` ~ N(0, I), then every pixel of ``x``
        given the pixels before it and ``z`` (:meth:`decode`), inside
        ``pyro.plate("data", batch)``."""
        self._check(x)
        zeros = x.new_zeros(self.latent_dim)
        prior = dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", prior)  # [..., batch, d]
            pyro.sample("x", self.decode(x, z).to_event(3), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        """``q(z | x) = N(encoder(x))`` for ``x: [batch, C, H, W]``: ``z: [..., batch, d]`` inside
        ``pyro.plate("data", batch)``."""
        loc, scale = self.encode(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    # --------------------------------------------------------------------------- sampling
    def _draw(self, z: torch.Tensor, generator: torch.Generator | None, seed: int,
              fast: bool, caller: str, progress: bool) -> torch.Tensor:
        """Pixels given ``z: [n, d]`` by the PixelCNN sampler (its bar with ``progress``):
        ``[n, C, H, W]``; its ``FloatingPointError`` (non-finite decoder outputs) names
        ``caller`` too."""
        sampler = self.decoder.sample_fast if fast else self.decoder.sample
        try:
            return sampler(z.shape[0], h=z, generator=generator, seed=seed, progress=progress)
        except FloatingPointError as error:
            where, _, problem = str(error).partition(": ")
            raise FloatingPointError(f"{type(self).__name__}.{caller} (decoder {where}): "
                                     f"{problem}") from error

    @torch.no_grad()
    def sample(self, num: int, *, generator: torch.Generator | None = None, seed: int = 0,
               fast: bool = True, return_latents: bool = False, progress: bool = True):
        """Ancestral samples: ``z ~ N(0, I)``, then the pixels one by one given ``z``.

        Args:
            num: number of images.
            generator: source of all randomness, a :class:`torch.Generator` on the model's
                device (default: a new one seeded with ``seed``); the same generator state
                gives the same images with ``fast`` True or False (:meth:`PixelCNN.sample_fast`
                and :meth:`PixelCNN.sample` agree).
            seed: an integer in ``[0, 2**63)`` (0-d integer tensors accepted), used only
                without ``generator``.
            fast: use the cached PixelCNN sampler (about one network pass per image).
            return_latents: also return the latents ``z`` the images were drawn from.
            progress: show a bar of the pixels drawn once the call has run for a second
                (True or False; ``TypeError`` naming it otherwise).

        Returns:
            images ``[num, C, H, W]``, and the latents ``[num, d]`` when ``return_latents``.

        Raises:
            FloatingPointError: the decoder's outputs at a drawn pixel are NaN or infinite
                (:meth:`PixelCNN.sample`), naming the pixel.
        """
        check_module_not_meta(self, "PixelVAE.sample")
        num, seed = as_int(num, "num"), as_seed(seed)
        progress = as_bool(progress, "progress")
        device = self.decoder.levels.device
        check_generator(generator, device)
        check_memory(num * (math.prod(self.image_shape) + self.latent_dim),
                     self.decoder.levels.dtype, f"num={num}: the images [num, "
                     f"{', '.join(map(str, self.image_shape))}] and latents [num, "
                     f"{self.latent_dim}]")
        if generator is None:
            generator = torch.Generator(device).manual_seed(seed)
        z = torch.randn(num, self.latent_dim, generator=generator, device=device,
                        dtype=torch.float32).to(self.decoder.levels.dtype)  # (any dtype alike)
        images = self._draw(z, generator, seed, fast, "sample", progress)
        return (images, z) if return_latents else images

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, num_samples: int = 0, *,
                    generator: torch.Generator | None = None, seed: int = 0,
                    progress: bool = True) -> torch.Tensor:
        """Images sampled from ``p(x | z)`` with ``z`` the posterior mean (``num_samples=0``)
        or ``z ~ q(z | x)``; none of the pixels of ``x`` are shown to the decoder.

        ``generator``, ``seed`` and ``progress`` as in :meth:`sample`.

        Returns:
            ``[batch, C, H, W]``, or ``[num_samples, batch, C, H, W]``.

        Raises:
            FloatingPointError: the encoder's outputs for some images, or the decoder's at a
                drawn pixel, are NaN or infinite (rows and pixel named).
        """
        num_samples = as_int(num_samples, "num_samples", minimum=0)
        seed, progress = as_seed(seed), as_bool(progress, "progress")
        self._check(x)  # the likelihood's support too, as the model checks it
        check_generator(generator, self.decoder.levels.device)
        check_memory(max(num_samples, 1) * x.numel(), x.dtype,
                     f"num_samples={num_samples}: the images [num_samples, "
                     f"{', '.join(map(str, x.shape))}]")
        loc, scale = self.encode(x)
        # NaN latents would reach the decoder as NaN conditioning: name the encoder instead
        check_finite_rows(torch.cat([loc, scale], -1), f"{type(self).__name__}.reconstruct",
                          "the encoder's outputs (loc, scale of q(z | x))")
        if generator is None:
            generator = torch.Generator(loc.device).manual_seed(seed)
        if not num_samples:
            return self._draw(loc, generator, seed, True, "reconstruct", progress)
        noise = torch.randn((num_samples, *loc.shape), generator=generator, device=loc.device,
                            dtype=torch.float32).to(loc.dtype)
        z = (loc + scale * noise).reshape(-1, self.latent_dim)  # [num_samples * batch, d]
        return self._draw(z, generator, seed, True, "reconstruct", progress).reshape(
            num_samples, *x.shape)
