"""Bits-back coding with a VAE on ``constriction``'s ANS stack (BB-ANS [1, 2]).

A latent-variable model has no ``p(x)`` to feed a range coder, only ``p(x | z) p(z)`` and a
guide ``q(z | x)``. Bits-back coding spends ``-log p(x | z) - log p(z)`` bits to send ``x`` with
a ``z`` of its choice, and gets ``-log q(z | x)`` bits back by choosing ``z`` with bits taken
from the message already on the stack: the net code length of an image is a single-sample
estimate of ``-ELBO`` in bits, and over many images it comes to ``-ELBO`` when ``q``
averaged over the data matches the prior (the bits popped are earlier images' latents, which
must look like fresh draws; a trained VAE: 0.21% above ``-ELBO`` on digits, an untrained one
up to 16% above, docs/compression.md).

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

import contextlib
import numbers
import struct

import numpy as np
import torch

from ..checks import check_dense_values, in_evaluation_mode, integer_tensor
from ..protocols import (BernoulliLatentModel, require, require_encoded_posterior,
                         require_finite_parameters, require_standard_prior)
from .range_coding import (
    KIND_BITS_BACK,
    MAX_SYMBOLS,
    STREAM_HEADER_BYTES,
    WORD_BYTES,
    Stream,
    check_probs,
    load_constriction,
    pack_stream,
    symbol_digest,
    unpack_stream,
)

# initial_words, seed (the decoder checks it gets those words back), then the encoder's
# latent_dim and image shape (C, H, W), which the decoder's VAE must have
_PREFIX = struct.Struct("<IQ4I")
HEADER_BYTES = STREAM_HEADER_BYTES + _PREFIX.size
MAX_LATENT_BITS = 16
# The initial words only have to cover the first image's bits-back debt: popping its latent
# takes at most 24 bits (the coder's precision) per latent dimension, so ceil(3 * latent_dim
# / 4) words suffice. 2^20 words (4 MiB) covers a million latent dimensions; both the encoder
# and the decoder (whose stream records the number) refuse more before allocating them.
MAX_INITIAL_WORDS = 2**20


def _integer(value, name: str, low: int, high: int) -> int:
    """``value`` (a Python or numpy integer or a 0-dim integer tensor, not a bool) in
    ``low..high`` as a Python int."""
    if integer_tensor(value):
        value = int(value)
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral)
            or not low <= value <= high):
        raise ValueError(f"{name} must be an int in {low}..{high}, got {value!r}")
    return int(value)


def _check_latent_bits(latent_bits: int) -> int:
    return _integer(latent_bits, "latent_bits", 1, MAX_LATENT_BITS)


def bucket_edges(latent_bits: int) -> torch.Tensor:
    """``[2^b + 1]`` float64 edges of the equal-prior-mass buckets, ``-inf`` ... ``inf``."""
    latent_bits = _check_latent_bits(latent_bits)
    quantiles = torch.arange(2**latent_bits + 1, dtype=torch.float64) / 2**latent_bits
    return torch.special.ndtri(quantiles)


def bucket_centres(latent_bits: int) -> torch.Tensor:
    """``[2^b]`` float64 prior medians of the buckets: the latent value each one decodes to."""
    latent_bits = _check_latent_bits(latent_bits)
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
        # floating parameters, else floating buffers (weights a user keeps as buffers; not
        # an integer counter), else the defaults
        held = next((t for t in [*vae.parameters(), *vae.buffers()] if t.is_floating_point()),
                    None)
        self.device = held.device if held is not None else torch.device("cpu")
        self.dtype = held.dtype if held is not None else torch.get_default_dtype()

    def posterior(self, image: torch.Tensor, index: int) -> np.ndarray:
        """``q`` of every bucket, ``[d, 2^b]``, for one ``image: [C, H, W]`` (0/1), the
        ``index``-th: a ValueError names it when the tables are not finite."""
        with _model_step("posterior (guide)", index):
            code = self.vae.encode(image[None].to(self.device, self.dtype))  # [1, d] each
        expected = [1, int(self.vae.latent_dim)]
        if not (isinstance(code, (tuple, list)) and len(code) == 2 and all(
                torch.is_tensor(part) and list(part.shape) == expected for part in code)):
            shapes = ([list(part.shape) if torch.is_tensor(part) else type(part).__name__
                       for part in code] if isinstance(code, (tuple, list))
                      else type(code).__name__)
            # the decoder reads vae.latent_dim buckets: a stream it could not decode
            raise _ModelError(f"bits-back images: vae.encode returned {shapes} for one image, "
                              f"not (loc, scale) of shape {expected} (vae.latent_dim="
                              f"{self.vae.latent_dim}), so the decoder could not read the "
                              "stream back; make latent_dim the encoder's code size")
        loc, scale = code[0][0].double().cpu()[:, None], code[1][0].double().cpu()[:, None]
        cdf = torch.special.ndtr((self.edges - loc) / scale)  # [d, 2^b + 1]
        return _checked(cdf[:, 1:] - cdf[:, :-1], "posterior (guide)", index)

    def pixels(self, buckets: np.ndarray, index: int) -> np.ndarray:
        """``p(x_i | z)`` as ``[P, 2]`` tables (pixel off, on) for bucket indices ``[d]``, for
        the ``index``-th image: a ValueError names it when the tables are not finite."""
        z = self.centres[torch.as_tensor(buckets, dtype=torch.long)].to(self.device, self.dtype)
        with _model_step("pixel (decoder)", index):
            pixels = self.vae.decode(z[None])
            while isinstance(pixels, torch.distributions.Independent):  # .to_event(3)
                pixels = pixels.base_dist
            on = getattr(pixels, "probs", None)
            size = int(np.prod(self.vae.image_shape))
            if not torch.is_tensor(on) or on.numel() != size:
                held = (f"with probs of shape {list(on.shape)}" if torch.is_tensor(on)
                        else "without probs")
                raise _ModelError(
                    f"bits-back images: vae.decode returned a {type(pixels).__name__} {held} "
                    f"for one code, not Bernoulli pixels of {size} probabilities "
                    f"(image_shape {tuple(self.vae.image_shape)})")
            on = on.reshape(-1).double().cpu()  # [P]
        return _checked(torch.stack([1 - on, on], 1), "pixel (decoder)", index)


class _ModelError(ValueError):
    """The VAE's tables cannot be coded: not the stream's fault, so decoding says so."""


@contextlib.contextmanager
def _model_step(what: str, index: int):
    """Turn a ValueError of the VAE's own checks (torch's validation of NaN logits) into a
    :class:`_ModelError` that names the image."""
    try:
        yield
    except _ModelError:
        raise
    except ValueError as error:
        raise _ModelError(f"bits-back images: image {index}: the VAE's {what} probabilities "
                          f"are not finite or invalid ({error})") from error


def _checked(table: torch.Tensor, what: str, index: int) -> np.ndarray:
    """``table`` as a contiguous float64 array, after the coder's checks."""
    if not torch.isfinite(table).all():
        raise _ModelError(f"bits-back images: image {index}: the VAE's {what} probabilities "
                          "are not finite (NaN or infinite weights or activations?)")
    try:
        check_probs(table, f"bits-back images: image {index}: the VAE's {what} table")
    except ValueError as error:
        raise _ModelError(str(error)) from None
    return np.ascontiguousarray(table.numpy())


def _check_images(images: torch.Tensor, image_shape) -> None:
    if not torch.is_tensor(images):
        raise TypeError(f"images must be a tensor [batch, {', '.join(map(str, image_shape))}], "
                        f"got {type(images).__name__}")
    if images.dim() != 4 or tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(f"images must be [batch, {', '.join(map(str, image_shape))}], got "
                         f"{list(images.shape)}")
    check_dense_values(images, "images")
    if images.is_complex():
        raise TypeError(f"images must be real 0/1 pixels, got dtype {images.dtype}")
    if images.numel() and not ((images == 0) | (images == 1)).all():
        raise ValueError("bits-back coding codes binary images: values must be 0 or 1")


def _prefix(stream: Stream) -> tuple[int, int, int, tuple[int, int, int], int]:
    """``(initial_words, seed, latent_dim, image_shape, most)`` of a checked stream, ``most``
    the largest ``initial_words`` its words and images can give back; a ValueError when the
    payload is not the prefix and 32-bit words or the recorded ``initial_words`` exceeds it."""
    payload = stream.payload
    if len(payload) < _PREFIX.size or (len(payload) - _PREFIX.size) % WORD_BYTES:
        raise ValueError(f"bits-back images: payload of {len(payload)} bytes is not "
                         f"{_PREFIX.size} bytes and 32-bit words")
    initial_words, seed, latent_dim, *image_shape = _PREFIX.unpack_from(payload)
    # An image pops at most 24 bits per latent dimension more than it pushes, so the stack
    # loses less than latent_dim words per image (+ 2 for the coder's 64-bit head).
    num_words = (len(payload) - _PREFIX.size) // WORD_BYTES
    most = min(MAX_INITIAL_WORDS, num_words + stream.count * latent_dim + 2)
    if not 1 <= initial_words <= most:
        raise ValueError(f"bits-back images: the stream records initial_words={initial_words}, "
                         f"outside 1..{MAX_INITIAL_WORDS} (MAX_INITIAL_WORDS) or more than its "
                         f"{num_words} words and {stream.count} images can give back: corrupt "
                         "stream")
    return initial_words, seed, latent_dim, tuple(image_shape), most


@in_evaluation_mode("vae")
def bits_back_encode(vae, images: torch.Tensor, latent_bits: int = 12,
                     initial_words: int = 8, seed: int = 0) -> bytes:
    """Code binary ``images: [n, C, H, W]`` with ``vae`` (a :class:`ppl_models.vae.VAE` with
    Bernoulli pixels) by bits-back coding.

    Args:
        vae: a :class:`~inference.protocols.BernoulliLatentModel` with the standard normal
            prior; the decoder must see the same VAE.
        images: ``[n, C, H, W]`` 0/1 pixels of any real dtype, ``(C, H, W)`` the vae's
            ``image_shape``.
        latent_bits: buckets per latent dimension, ``2^latent_bits`` (an int in 1..16).
        initial_words: random 32-bit words on the stack before the first image (drawn with
            ``seed``); the decoder gets them back. An int in ``1..MAX_INITIAL_WORDS``
            (2^20). The first image pops its latent draw from them; bits it finds missing
            are charged to the images by :func:`net_bits` (1 word instead of 12 added 160
            bits for 16 latents at ``latent_bits=12``), and ``ceil(3 * latent_dim / 4)``
            words always cover it. Past that, :func:`net_bits` moves by a word or two
            with the coder's 64-bit head (16 latents at ``latent_bits=8``: 8 words gave
            34.67 net bits per image, 12 words 34.99).
        seed: an int in ``0..2^64-1``. Numpy integers and 0-dim integer tensors are
            accepted for all three.

    Returns:
        a stream header (image count, ``latent_bits``, digest of the pixels, CRC32),
        ``initial_words``, ``seed``, the VAE's ``latent_dim`` and image shape, then the
        stack's 32-bit words.

    Raises:
        ValueError: an argument out of range, non-binary images, more than
            :data:`MAX_SYMBOLS` pixels, or a VAE whose tables are not finite (the error names
            the image).
    """
    require(vae, BernoulliLatentModel, "vae")
    require_standard_prior(vae, "vae")
    require_finite_parameters(vae, "vae")
    require_encoded_posterior(vae, "vae", "bits-back coding")
    _check_images(images, vae.image_shape)
    if images.numel() > MAX_SYMBOLS or int(np.prod(vae.image_shape)) > MAX_SYMBOLS:
        raise ValueError(f"bits-back images: {len(images)} images of {tuple(vae.image_shape)} "
                         f"pixels, more than MAX_SYMBOLS ({MAX_SYMBOLS}), which the decoder "
                         "refuses")
    latent_bits = _check_latent_bits(latent_bits)
    initial_words = _integer(initial_words, "initial_words", 1, MAX_INITIAL_WORDS)
    seed = _integer(seed, "seed", 0, 2**64 - 1)
    constriction = load_constriction()
    tables = _Tables(vae, latent_bits)
    categorical = constriction.stream.model.Categorical(perfect=False)
    prior = constriction.stream.model.Uniform(tables.num_buckets)
    words = np.random.default_rng(seed).integers(1, 2**32, size=initial_words, dtype=np.uint32)
    coder = constriction.stream.stack.AnsCoder(words, seal=False)
    with torch.no_grad():
        for index, image in enumerate(images):
            buckets = coder.decode(categorical, tables.posterior(image, index))  # bits back
            pixels = image.reshape(-1).to(torch.int32).cpu().numpy()
            coder.encode_reverse(pixels, categorical, tables.pixels(buckets, index))
            coder.encode_reverse(buckets.astype(np.int32), prior)
    prefix = _PREFIX.pack(initial_words, seed, int(vae.latent_dim), *vae.image_shape)
    payload = prefix + coder.get_compressed().astype("<u4").tobytes()
    pixels = images.reshape(-1).to(torch.int32)
    return pack_stream(KIND_BITS_BACK, len(images), len(images), payload, symbol_digest(pixels),
                       extra=latent_bits)


@in_evaluation_mode("vae")
def bits_back_decode(vae, data: bytes, latent_bits: int = 12) -> tuple[torch.Tensor, np.ndarray]:
    """Invert :func:`bits_back_encode` (same ``vae`` and ``latent_bits``).

    Returns:
        ``(images, initial words)``: ``[n, C, H, W]`` of 0/1 on the VAE's device and in its
        dtype, in the order they were encoded, and the stack's words left after the last
        image.

    Raises:
        ValueError: a corrupt or truncated stream (header, length, CRC32), a stream of format
            version 1, another ``latent_bits``, ``latent_dim`` or image shape than the
            encoder's, an implausible image count or ``initial_words`` (beyond
            ``MAX_INITIAL_WORDS`` or what the stream can hold), a VAE whose tables are not
            finite (naming the image), or a decoder that does not end on exactly the
            encoder's initial words or whose images do not match the stream's digest
            (another VAE).
    """
    require(vae, BernoulliLatentModel, "vae")
    require_standard_prior(vae, "vae")
    require_finite_parameters(vae, "vae")
    latent_bits = _check_latent_bits(latent_bits)
    stream = unpack_stream(data, KIND_BITS_BACK)
    count = stream.count
    if stream.extra != latent_bits:
        raise ValueError(f"bits-back images: the stream was coded with latent_bits="
                         f"{stream.extra}, decoding asked for {latent_bits}")
    initial_words, seed, latent_dim, coded_shape, _ = _prefix(stream)
    image_shape = tuple(vae.image_shape)
    if (latent_dim, coded_shape) != (vae.latent_dim, image_shape):
        raise ValueError(f"bits-back images: the stream was coded by a VAE with latent_dim="
                         f"{latent_dim} and images {coded_shape}, decoding with one with "
                         f"latent_dim={vae.latent_dim} and images {image_shape}: another VAE")
    pixels_per_image = int(np.prod(image_shape))
    if count * pixels_per_image > MAX_SYMBOLS:
        raise ValueError(f"bits-back images: header claims {count} images "
                         f"({count * pixels_per_image} pixels), more than MAX_SYMBOLS")
    constriction = load_constriction()
    tables = _Tables(vae, latent_bits)
    categorical = constriction.stream.model.Categorical(perfect=False)
    prior = constriction.stream.model.Uniform(tables.num_buckets)
    words = np.frombuffer(stream.payload[_PREFIX.size:], dtype="<u4").astype(np.uint32)
    coder = constriction.stream.stack.AnsCoder(words, seal=False)
    images = []
    with torch.no_grad():
        for index in range(count):
            try:
                buckets = coder.decode(prior, vae.latent_dim)
                table = tables.pixels(buckets, count - 1 - index)  # decoded last to first
                pixels = coder.decode(categorical, table)
                image = torch.as_tensor(pixels.astype(np.float32)).reshape(image_shape)
                coder.encode_reverse(buckets.astype(np.int32), categorical,
                                     tables.posterior(image, count - 1 - index))
            except _ModelError:
                raise
            except (ValueError, RuntimeError, AssertionError) as error:
                raise ValueError(f"bits-back images: decoding failed at image {index} of "
                                 f"{count} ({error}): corrupt stream or another VAE") from error
            images.append(image)
    left = coder.get_compressed()
    expected = np.random.default_rng(seed).integers(1, 2**32, size=initial_words, dtype=np.uint32)
    if not np.array_equal(left, expected):
        raise ValueError("bits-back images: decoding did not end on the encoder's initial "
                         "words: another VAE than the encoder's, or a corrupt stream")
    stacked = torch.stack(images[::-1]) if images else torch.zeros(0, *image_shape)
    if symbol_digest(stacked.reshape(-1).to(torch.int32)) != stream.digest:
        raise ValueError("bits-back images: the decoded images do not match the stream's "
                         "digest: decoded with another VAE than it was written with")
    return stacked.to(tables.device, tables.dtype), left


def net_bits(data: bytes, initial_words: int | None = None) -> int:
    """Code length of :func:`bits_back_encode`'s output without the header and the initial
    words (by default the number the stream records): what the images themselves cost.

    Raises:
        ValueError: a stream :func:`bits_back_decode` would refuse for its header or prefix,
            or ``initial_words`` that is not an int in ``0..`` what the stream can give back
            (its words plus ``latent_dim`` per image, at most ``MAX_INITIAL_WORDS``).
    """
    recorded, _, _, _, most = _prefix(unpack_stream(data, KIND_BITS_BACK))
    if initial_words is None:
        initial_words = recorded
    initial_words = _integer(initial_words, "initial_words", 0, most)
    net = 8 * (len(data) - HEADER_BYTES) - 32 * initial_words
    if net < 0:  # more words taken off than the stream holds
        raise ValueError(f"initial_words={initial_words} takes off more bits than the stream's "
                         f"{8 * (len(data) - HEADER_BYTES)} (it records {recorded} initial "
                         "words): leave initial_words out to use the recorded count")
    return net
