"""Lossless compression with a model: range coding of exact likelihoods and bits-back coding.

:mod:`.range_coding` turns the per-symbol probabilities of an autoregressive model (an n-gram,
a PixelCNN) into a byte stream and back; :mod:`.bits_back` codes images with a latent-variable
model at about its negative ELBO (BB-ANS). What they need from a model is stated in
:mod:`inference.protocols`: a :class:`MarkovTextModel` for words, a
:class:`BernoulliLatentModel` for bits-back.
"""

from ..protocols import BernoulliLatentModel, MarkovTextModel
from .bits_back import bits_back_decode, bits_back_encode
from .range_coding import (
    decode_images,
    decode_words,
    encode_images,
    encode_words,
    information_bits,
    range_decode,
    range_encode,
)

__all__ = [
    "BernoulliLatentModel", "MarkovTextModel",
    "bits_back_decode", "bits_back_encode", "decode_images", "decode_words", "encode_images",
    "encode_words", "information_bits", "range_decode", "range_encode",
]
