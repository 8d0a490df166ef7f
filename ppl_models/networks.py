"""Encoder and decoder networks for images: MLPs for any size, a convolutional pair for 28x28.

Encoders map ``x: [batch, C, H, W]`` to the parameters of a diagonal Gaussian
``q(z | x)``; decoders map ``z: [..., latent_dim]`` (any leading particle/batch dims) to
``params_per_pixel`` raw outputs per pixel, ``[..., params_per_pixel, C, H, W]``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .checks import as_int, as_sizes, check_memory


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.Softplus,
        what: str | None = None) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (none at the end).

    ``ValueError`` before allocating when the parameters could not fit in memory, naming
    ``what`` (the arguments that set the sizes; default: the sizes)."""
    check_parameters(sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:])),
                     what or f"layer sizes {list(sizes)}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def check_parameters(count: int, what: str) -> None:
    """``ValueError`` naming ``what`` when ``count`` parameters of the default dtype could not
    fit in the machine's physical memory (:func:`ppl_models.checks.check_memory`)."""
    dtype = torch.get_default_dtype()
    check_memory(count, dtype, f"{what}: {count:,} {str(dtype).removeprefix('torch.')} "
                               f"parameters")


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """``t: [...]`` as float32 when autocast left it in half or bfloat16 precision, else ``t``.

    Every network here returns its outputs through it, so that under mixed precision
    (``inference.fit(..., mixed_precision=True)``) only the networks' matrix products run in
    low precision while the log densities, their sums and the KL stay in float32. Outside
    autocast a network whose parameters are half precision (``vae.to(torch.bfloat16)``) keeps
    its outputs in that dtype: its model scores codes of its own dtype.
    """
    if t.dtype in (torch.float16, torch.bfloat16) and torch.is_autocast_enabled(
            t.device.type):
        return t.float()
    return t


def _gaussian_params(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    loc, raw_scale = full_precision(raw).chunk(2, dim=-1)
    return loc, F.softplus(raw_scale) + 1e-5


class MLPEncoder(nn.Module):
    """``x: [batch, C, H, W] -> (loc, scale)``, each ``[batch, latent_dim]``."""

    def __init__(self, image_shape: Sequence[int], latent_dim: int,
                 hidden: Sequence[int] = (400,)):
        super().__init__()
        image_shape, hidden = as_sizes(image_shape, "image_shape"), as_sizes(hidden, "hidden")
        latent_dim = as_int(latent_dim, "latent_dim")
        self.net = mlp([math.prod(image_shape), *hidden, 2 * latent_dim], what=(
            f"latent_dim={latent_dim}, hidden={hidden}, image_shape={image_shape}: the encoder"))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _gaussian_params(self.net(x.flatten(-3)))


class MLPDecoder(nn.Module):
    """``z: [..., latent_dim] -> [..., params_per_pixel, C, H, W]`` raw pixel parameters."""

    def __init__(self, latent_dim: int, image_shape: Sequence[int], params_per_pixel: int = 1,
                 hidden: Sequence[int] = (400,)):
        super().__init__()
        self.out_shape = (as_int(params_per_pixel, "params_per_pixel"),
                          *as_sizes(image_shape, "image_shape"))
        latent_dim, hidden = as_int(latent_dim, "latent_dim"), as_sizes(hidden, "hidden")
        self.net = mlp([latent_dim, *hidden, math.prod(self.out_shape)], what=(
            f"latent_dim={latent_dim}, hidden={hidden}, image_shape={self.out_shape[1:]}: the "
            f"decoder"))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return full_precision(self.net(z)).unflatten(-1, self.out_shape)


def _check_28(image_shape: Sequence[int], latent_dim: int, channels: int, hidden: int,
              params_per_pixel: int = 2) -> None:
    """The convolutional networks' arguments: positive sizes, images ``[C, 28, 28]``, and
    parameters that fit in memory (those of the larger of the two networks, with
    ``params_per_pixel`` outputs per pixel)."""
    for name, value in (("latent_dim", latent_dim), ("channels", channels), ("hidden", hidden)):
        as_int(value, name)
    if len(as_sizes(image_shape, "image_shape")) != 3 or tuple(image_shape[1:]) != (28, 28):
        raise ValueError(
            f"the convolutional networks expect images [C, 28, 28], got {list(image_shape)}; "
            "use the MLP networks for other sizes"
        )
    conv = 2 * channels * channels * 16 + 3 * channels + 2 * channels * 49 * hidden + hidden
    encoder = conv + image_shape[0] * channels * 16 + (hidden + 1) * 2 * latent_dim
    out = params_per_pixel * image_shape[0]
    decoder = conv + channels * out * 16 + out + latent_dim * hidden + 2 * channels * 48
    count = max(encoder, decoder)
    check_parameters(count, f"latent_dim={latent_dim}, channels={channels}, hidden={hidden}: "
                            f"the convolutional network")


class ConvEncoder(nn.Module):
    """Two stride-2 convolutions (28 -> 14 -> 7) and a dense layer: ``[batch, C, 28, 28]``."""

    def __init__(self, image_shape: Sequence[int], latent_dim: int, channels: int = 32,
                 hidden: int = 256):
        super().__init__()
        _check_28(image_shape, latent_dim, channels, hidden)
        self.net = nn.Sequential(
            nn.Conv2d(image_shape[0], channels, 4, stride=2, padding=1), nn.ReLU(),  # 14x14
            nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1), nn.ReLU(),  # 7x7
            nn.Flatten(), nn.Linear(2 * channels * 49, hidden), nn.ReLU(),
            nn.Linear(hidden, 2 * latent_dim),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _gaussian_params(self.net(x))


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: ``z: [..., d] -> [..., params_per_pixel, C, 28, 28]``."""

    def __init__(self, latent_dim: int, image_shape: Sequence[int], params_per_pixel: int = 1,
                 channels: int = 32, hidden: int = 256):
        super().__init__()
        as_int(params_per_pixel, "params_per_pixel")
        _check_28(image_shape, latent_dim, channels, hidden, params_per_pixel)
        self.out_shape = (params_per_pixel, *image_shape)
        self.dense = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(),
                                   nn.Linear(hidden, 2 * channels * 49), nn.ReLU())
        self.deconv = nn.Sequential(
            nn.Unflatten(1, (2 * channels, 7, 7)),
            nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(channels, params_per_pixel * image_shape[0], 4, stride=2,
                               padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        leading = z.shape[:-1]
        out = self.deconv(self.dense(z.reshape(-1, z.shape[-1])))  # [n, P*C, 28, 28]
        return full_precision(out).reshape(*leading, *self.out_shape)


def check_hidden_for(network: str, hidden) -> None:
    """``ValueError`` for an unknown ``network``, or a ``hidden`` given (not None) with
    ``network="conv"``: the conv networks' layers are fixed, so the widths would be silently
    ignored (``hidden=(10**7,)`` built the same network as ``(16,)``)."""
    if network not in ("mlp", "conv"):
        raise ValueError(f"unknown network {network!r}; choose 'mlp' or 'conv'")
    if network == "conv" and hidden is not None:
        raise ValueError(f"hidden={hidden!r} is for network='mlp' (the MLPs' widths); the "
                         "conv network's layers are fixed: leave hidden unset (None) with "
                         "network='conv'")
