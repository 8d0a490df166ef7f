"""4x4 images on a one-dimensional latent manifold, and a VAE that learns it.

The true generative process (from our lecture notes' toy example): a scalar
``z ~ N(0, 1)`` sets the phase of a sine wave across each row, row ``r`` with frequency
``1 + r/3`` in ``z``, so neighbouring rows are strongly correlated and one number draws all
16 pixels; Gaussian noise of scale ``noise_scale`` is added::

    x[r, c] = 0.5 + 0.4 sin((1 + r/3) z + pi c / 2) + noise_scale * eps

Because ``z`` is one-dimensional, the evidence of the true model and of any learned
decoder is exact by quadrature (:func:`inference.exact_log_evidence`). Different ``z`` can
give similar images, so posteriors are skewed or multimodal: a Gaussian guide cannot match
them, which is what makes the gap between ELBO and IWAE_K visible.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam, pyro_method
from torch import nn
from torch.distributions import constraints

from .checks import (as_int, as_number, as_seed, check_data, check_input, check_memory,
                     check_square_in_range_of, check_values)
from .networks import check_parameters, full_precision

IMAGE_SIDE = 4
NUM_PIXELS = IMAGE_SIDE * IMAGE_SIDE


def manifold_mean(z: torch.Tensor) -> torch.Tensor:
    """Noise-free image at latent ``z: [...]`` -> ``[..., 16]`` (row-major 4x4).

    ``TypeError``/``ValueError`` naming ``z`` unless it is a floating-point tensor of finite
    values (a NaN or infinite ``z`` made NaN pixels)."""
    if not torch.is_tensor(z) or not z.is_floating_point():
        raise TypeError(f"z must be a floating-point tensor, got "
                        f"{getattr(z, 'dtype', type(z).__name__)}")
    check_values(z, "z")
    rows = torch.arange(IMAGE_SIDE, dtype=z.dtype, device=z.device).repeat_interleave(IMAGE_SIDE)
    cols = torch.arange(IMAGE_SIDE, dtype=z.dtype, device=z.device).repeat(IMAGE_SIDE)
    phase = (1 + rows / 3) * z[..., None] + math.pi * cols / 2
    return 0.5 + 0.4 * torch.sin(phase)


class ToyManifold(PyroModule):
    """The true model: ``z ~ N(0, 1)``, ``x | z ~ N(manifold_mean(z), noise_scale^2 I_16)``.

    No learnable parameters; ``model(x)`` with ``x: [batch, 16]`` scores data under the truth.
    ``noise_scale`` is a finite number > 0 whose square lies within the default dtype's
    normal range (about 1.1e-19 to 1.8e19 in float32).
    """

    def __init__(self, noise_scale: float = 0.1):
        super().__init__()
        self.noise_scale = as_number(noise_scale, "noise_scale", 0, low_open=True)
        # the model scores x with the variance noise_scale**2 in the default dtype: 1e39 drew
        # infinite data, 1e-46 (0 in float32) noise-free data that the model then refused
        check_square_in_range_of(self.noise_scale, "noise_scale", torch.get_default_dtype(),
                                 "sample() would draw infinite or noise-free data and the "
                                 "model's log density would be NaN")

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        """The true model on ``x: [batch, 16]``: ``z: [..., batch]`` ~ N(0, 1) inside
        ``pyro.plate("data", batch)``."""
        check_data(x, (NUM_PIXELS,), "x", like=self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))  # [..., batch]
            pyro.sample("x", dist.Normal(manifold_mean(z), self.noise_scale).to_event(1), obs=x)

    def sample(self, num_data: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw data from the truth: ``x: [num_data, 16]`` and its latents ``z: [num_data]``
        (``num_data >= 1``, both fitting in memory), fixed by ``seed`` in ``[0, 2**63)``
        whatever the default dtype (the draws are float32, then in the default dtype)."""
        num_data, seed = as_int(num_data, "num_data"), as_seed(seed)
        dtype = torch.get_default_dtype()
        check_memory(num_data * (NUM_PIXELS + 1), dtype,
                     f"num_data={num_data}: x [num_data, {NUM_PIXELS}] and z [num_data]")
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(num_data, generator=gen, dtype=torch.float32).to(dtype)
        noise = torch.randn(num_data, NUM_PIXELS, generator=gen, dtype=torch.float32).to(dtype)
        return manifold_mean(z) + self.noise_scale * noise, z


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class ToyManifoldVAE(PyroModule):
    """VAE with a 1-D latent for 16-pixel data.

    Model: ``z ~ N(0, 1)``, ``x | z ~ N(decoder(z), diag(sigma^2))`` with a learned per-pixel
    ``sigma``. Guide: ``q(z | x) = N(mu(x), s(x)^2)`` from an MLP encoder, reparameterized.

    Args:
        hidden: width of the two hidden layers of encoder and decoder.
    """

    def __init__(self, hidden: int = 64):
        super().__init__()
        hidden = as_int(hidden, "hidden")
        sizes = ([1, hidden, hidden, NUM_PIXELS], [NUM_PIXELS, hidden, hidden, 2])
        check_parameters(sum((a + 1) * b for s in sizes for a, b in zip(s[:-1], s[1:])),
                         f"hidden={hidden}: the encoder and decoder")
        self.decoder, self.encoder = map(_mlp, sizes)
        self.pixel_scale = PyroParam(torch.full((NUM_PIXELS,), 0.3), constraints.positive)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean image for ``z: [..., 1]`` -> ``[..., 16]``; ``z`` a float tensor of the
        model's dtype and device (named otherwise), NaN or infinite values refused while
        Pyro's validation is enabled."""
        check_input(z, (1,), "z", like=self, batch_dims="...")
        return full_precision(self.decoder(z))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Guide parameters for ``x: [batch, 16]`` -> loc, scale each ``[batch, 1]``; ``x`` a
        float tensor of the model's dtype and device (named otherwise), NaN or infinite values
        refused while Pyro's validation is enabled."""
        check_input(x, (NUM_PIXELS,), "x", like=self)
        loc, raw_scale = full_precision(self.encoder(x)).chunk(2, dim=-1)
        return loc, nn.functional.softplus(raw_scale) + 1e-4

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        """``x: [batch, 16]``; ``z: [..., batch, 1]`` ~ N(0, 1) and the observed ``x`` inside
        ``pyro.plate("data", batch)``."""
        check_data(x, (NUM_PIXELS,), "x", like=self)
        with pyro.plate("data", x.shape[0]):
            prior = dist.Normal(x.new_zeros(1), x.new_ones(1)).to_event(1)
            z = pyro.sample("z", prior)  # [..., batch, 1]
            pyro.sample("x", dist.Normal(self.decode(z), self.pixel_scale).to_event(1), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        """``q(z | x) = N(mu(x), s(x)^2)`` for ``x: [batch, 16]``: ``z: [..., batch, 1]`` inside
        ``pyro.plate("data", batch)``."""
        check_data(x, (NUM_PIXELS,), "x", like=self)
        loc, scale = self.encode(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    @pyro_method
    def prior_guide(self, x: torch.Tensor) -> None:
        """The prior as proposal: IWAE_K with it is plain importance sampling from p(z), the
        baseline the trained guide's bounds are compared with; for ``x: [batch, 16]`` it
        draws ``z: [..., batch, 1]``. ``x`` is checked first, as :meth:`guide` does (a
        generator, tuple or dict is named, not an ``AttributeError`` on ``x.shape``)."""
        check_data(x, (NUM_PIXELS,), "x", like=self)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(1), x.new_ones(1)).to_event(1))
