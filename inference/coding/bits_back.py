"""Bits-back coding with a VAE on ``constriction``'s ANS stack (BB-ANS [1, 2]).

A latent-variable model has no ``p(x)`` to feed a range coder, only ``p(x | z) p(z)`` and a
guide ``q(z | x)``. Bits-back coding spends ``-log p(x | z) - log p(z)`` bits to send ``x`` with
a ``z`` of its choice, and gets ``-log q(z | x)`` bits back by choosing ``z`` with bits taken
from the message already on the stack: the net code length of an image is a single-sample
estimate of ``-ELBO`` in bits, and over many images it comes to ``-ELBO``.

The latent is discretized so that every probability is a table: each of the ``d`` dimensions
is cut into ``2^latent_bits`` buckets of equal prior mass (edges at standard-normal
quantiles), so ``p(z)`` is uniform over buckets, ``q`` gives each bucket its mass under
``N(loc, scale)``, and the decoder sees the bucket's prior median. Images are coded one after
another on one last-in-first-out ANS stack [3]:

    encode x:  pop z with q(z | x)      push x with p(x | z)      push z with p(z)
    decode:    pop z with p(z)          pop x with p(x | z)       push z with q(z | x)

Decoding undoes the steps in reverse order and returns the images last to first (put back in
order here). The first image pops bits that are not there yet: the stack starts with
``initial_words`` seeded random 32-bit words (the "initial bits" of [1]), which the decoder
recovers at the end; :func:`net_bits` leaves them out of the code length.

The encoder and the decoder must compute identical tables: both run the networks on one
image at a time, with the same shapes, in the same order.

References:
    [1] Townsend, Bird, Barber (2019), Practical lossless compression with latent variables
        using bits back coding, ICLR.
    [2] Frey, Hinton (1997), Efficient stochastic source coding and an application to a
        Bayesian network source model, The Computer Journal 40(2/3).
    [3] Bamler (2022), Understanding entropy coding with asymmetric numeral systems (ANS),
        arXiv:2201.01741; the ``constriction`` library.
"""

from __future__ import annotations

import numpy as np
import torch

from .range_coding import WORD_BYTES, load_constriction
from ..protocols import BernoulliLatentModel, require

HEADER_BYTES = 4  # image count
MAX_LATENT_BITS = 16


def _check_latent_bits(latent_bits: int) -> None:
    if not isinstance(latent_bits, int) or not 1 <= latent_bits <= MAX_LATENT_BITS:
        raise ValueError(f"latent_bits must be an int in 1..{MAX_LATENT_BITS}, got {latent_bits!r}")


def bucket_edges(latent_bits: int) -> torch.Tensor:
    """``[2^b + 1]`` float64 edges of the equal-prior-mass buckets, ``-inf`` ... ``inf``."""
    _check_latent_bits(latent_bits)
    quantiles = torch.arange(2**latent_bits + 1, dtype=torch.float64) / 2**latent_bits
    return torch.special.ndtri(quantiles)


def bucket_centres(latent_bits: int) -> torch.Tensor:
    """``[2^b]`` float64 prior medians of the buckets: the latent value each one decodes to."""
    _check_latent_bits(latent_bits)
    return torch.special.ndtri((torch.arange(2**latent_bits, dtype=torch.float64) + 0.5)
                               / 2**latent_bits)


class _Tables:
    """The probability tables of one VAE at one discretization, as float64 numpy arrays."""

    def __init__(self, vae, latent_bits: int):
        if getattr(vae.likelihood, "name", None) != "bernoulli":
            raise ValueError("bits-back coding here needs a VAE with Bernoulli pixels (binary "
                             f"images), got likelihood {getattr(vae.likelihood, 'name', '?')!r}")
        self.vae = vae
        self.edges = bucket_edges(latent_bits)
        self.centres = bucket_centres(latent_bits)
        self.num_buckets = 2**latent_bits
        self.device = next(vae.parameters()).device
        self.dtype = next(vae.parameters()).dtype

    def posterior(self, image: torch.Tensor) -> np.ndarray:
        """``q`` of every bucket, ``[d, 2^b]``, for one ``image: [C, H, W]`` (0/1)."""
        loc, scale = self.vae.encode(image[None].to(self.device, self.dtype))  # [1, d] each
        loc, scale = loc[0].double().cpu()[:, None], scale[0].double().cpu()[:, None]
        cdf = torch.special.ndtr((self.edges - loc) / scale)  # [d, 2^b + 1]
        return np.ascontiguousarray((cdf[:, 1:] - cdf[:, :-1]).numpy())

    def pixels(self, buckets: np.ndarray) -> np.ndarray:
        """``p(x_i | z)`` as ``[P, 2]`` tables (pixel off, on) for bucket indices ``[d]``."""
        z = self.centres[torch.as_tensor(buckets, dtype=torch.long)].to(self.device, self.dtype)
        on = self.vae.decode(z[None]).probs.reshape(-1).double().cpu()  # [P]
        return np.ascontiguousarray(torch.stack([1 - on, on], 1).numpy())


def _check_images(images: torch.Tensor, image_shape) -> None:
    if images.dim() != 4 or tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(f"images must be [batch, {', '.join(map(str, image_shape))}], got "
                         f"{list(images.shape)}")
    if images.numel() and not ((images == 0) | (images == 1)).all():
        raise ValueError("bits-back coding codes binary images: values must be 0 or 1")


def bits_back_encode(vae, images: torch.Tensor, latent_bits: int = 12,
                     initial_words: int = 8, seed: int = 0) -> bytes:
    """Code binary ``images: [n, C, H, W]`` with ``vae`` (a :class:`ppl_models.vae.VAE` with
    Bernoulli pixels) by bits-back coding.

    Args:
        latent_bits: buckets per latent dimension, ``2^latent_bits``.
        initial_words: random 32-bit words on the stack before the first image (drawn with
            ``seed``); the decoder gets them back.

    Returns:
        a 4-byte image count, then the stack's 32-bit words.
    """
    require(vae, BernoulliLatentModel, "vae")
    _check_images(images, vae.image_shape)
    if initial_words < 1:
        raise ValueError(f"initial_words must be >= 1, got {initial_words}")
    constriction = load_constriction()
    tables = _Tables(vae, latent_bits)
    categorical = constriction.stream.model.Categorical(perfect=False)
    prior = constriction.stream.model.Uniform(tables.num_buckets)
    words = np.random.default_rng(seed).integers(1, 2**32, size=initial_words, dtype=np.uint32)
    coder = constriction.stream.stack.AnsCoder(words, seal=False)
    with torch.no_grad():
        for image in images:
            buckets = coder.decode(categorical, tables.posterior(image))  # bits back
            pixels = image.reshape(-1).to(torch.int32).cpu().numpy()
            coder.encode_reverse(pixels, categorical, tables.pixels(buckets))
            coder.encode_reverse(buckets.astype(np.int32), prior)
    return len(images).to_bytes(HEADER_BYTES, "little") + \
        coder.get_compressed().astype("<u4").tobytes()


def bits_back_decode(vae, data: bytes, latent_bits: int = 12) -> tuple[torch.Tensor, np.ndarray]:
    """Invert :func:`bits_back_encode` (same ``vae`` and ``latent_bits``).

    Returns:
        ``(images, initial words)``: float ``[n, C, H, W]`` of 0/1 on the VAE's device, in
        the order they were encoded, and the stack's words left after the last image.
    """
    require(vae, BernoulliLatentModel, "vae")
    if len(data) < HEADER_BYTES or (len(data) - HEADER_BYTES) % WORD_BYTES:
        raise ValueError(f"bits-back data must be a {HEADER_BYTES}-byte header and 32-bit "
                         f"words, got {len(data)} bytes")
    constriction = load_constriction()
    tables = _Tables(vae, latent_bits)
    categorical = constriction.stream.model.Categorical(perfect=False)
    prior = constriction.stream.model.Uniform(tables.num_buckets)
    count = int.from_bytes(data[:HEADER_BYTES], "little")
    words = np.frombuffer(data[HEADER_BYTES:], dtype="<u4").astype(np.uint32)
    coder = constriction.stream.stack.AnsCoder(words, seal=False)
    image_shape = tuple(vae.image_shape)
    images = []
    with torch.no_grad():
        for _ in range(count):
            buckets = coder.decode(prior, vae.latent_dim)
            pixels = coder.decode(categorical, tables.pixels(buckets))
            image = torch.as_tensor(pixels.astype(np.float32)).reshape(image_shape)
            coder.encode_reverse(buckets.astype(np.int32), categorical, tables.posterior(image))
            images.append(image)
    stacked = torch.stack(images[::-1]) if images else torch.zeros(0, *image_shape)
    return stacked.to(tables.device), coder.get_compressed()


def net_bits(data: bytes, initial_words: int = 8) -> int:
    """Code length of :func:`bits_back_encode`'s output without the header and the initial
    words: what the images themselves cost."""
    return 8 * (len(data) - HEADER_BYTES) - 32 * initial_words
