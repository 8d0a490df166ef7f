"""The encoders never return bytes their decoder cannot decode (probe C findings 1, 5, 6).

``encode_images`` and ``encode_words`` decode their stream once before returning it (``verify``,
the default); ``encode_words`` computes its tables as ``decode_words`` does (one context
``[1, n - 1]`` per call), so a float32 model whose batched and single-row calls round apart
still round-trips.
"""

import random

import pytest
import torch

from inference.coding.range_coding import (
    decode_images,
    decode_words,
    encode_images,
    encode_words,
)
from ppl_models.ngram import NGramModel
from ppl_models.text import Vocabulary

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _images(batch, side, seed, on=0.5):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 1, side, side, generator=generator) < on).long()


def _one_later_pixel(s):
    """Pixel (0, 1) reads pixel (0, 2), a later one; every other pixel is a fair coin."""
    p = torch.full(s.shape, 0.5, dtype=torch.float64)
    p[:, 0, 0, 1] = torch.where(s[:, 0, 0, 2] == 1, 0.9, 0.1).double()
    return torch.stack([1 - p, p], -1)


def _parity_of_later_pixels(s):
    """Pixel 0 reads the parity of pixels 1 and 2: adding 1 to every later pixel keeps it."""
    p = torch.full(s.shape, 0.5, dtype=torch.float64)
    parity = (s[:, 0, 0, 1] + s[:, 0, 0, 2]) % 2
    p[:, 0, 0, 0] = torch.where(parity == 1, 0.95, 0.05).double()
    return torch.stack([1 - p, p], -1)


def _rounding_leak(s):
    """Causal but for a relative leak of at most 1e-7 from the later pixels (float32
    rounding's size: a convolution that does not cancel masked terms exactly)."""
    flat = s.reshape(len(s), -1).double()
    n = flat.shape[1]
    earlier = torch.cat([torch.zeros(len(s), 1, dtype=flat.dtype), flat.cumsum(1)[:, :-1]], 1)
    later = flat.flip(1).cumsum(1).flip(1) - flat
    p = torch.sigmoid(0.05 * earlier - 0.3 + 0.01 * torch.arange(n)) * (1 + 1e-7 * later / n)
    return torch.stack([1 - p, p], -1).reshape(*s.shape, 2)


def _jittery(seed, relative=1e-7):
    """A causal model with ``relative`` run-to-run noise (a non-deterministic GPU kernel)."""
    noise = torch.Generator().manual_seed(seed)

    def pixel_probs(s):
        flat = s.reshape(len(s), -1).float()
        earlier = torch.cat([torch.zeros(len(s), 1), flat.cumsum(1)[:, :-1]], 1)
        p = torch.sigmoid(0.05 * earlier - 0.3 + 0.01 * torch.arange(flat.shape[1]))
        p = p * (1 + relative * torch.randn(p.shape, generator=noise))
        return torch.stack([1 - p, p], -1).reshape(*s.shape, 2)
    return pixel_probs


@pytest.mark.parametrize("pixel_probs, images", [
    (_one_later_pixel, _images(3, 4, seed=0)),
    (_parity_of_later_pixels, _images(3, 4, seed=0)),
    (_rounding_leak, _images(16, 16, seed=0, on=0.4)),
    (_jittery(1), _images(16, 16, seed=0, on=0.4)),
], ids=["one-later-pixel", "parity-of-later-pixels", "rounding-leak-1e-7", "jitter-1e-7"])
def test_encode_images_refuses_what_decoding_could_not_read(pixel_probs, images):
    # each passed the three checking calls (a dependence between the checked positions, one
    # the +1 shift leaves unchanged, differences below their tolerance) and was encoded into
    # bytes decode_images refused: the images lost
    with pytest.raises(ValueError, match=r"encode_images: a trial decode of the stream failed "
                                         r"\(.*\): pixel_probs gives other tables .*not causal"
                                         r".*not deterministic.*float64"):
        encode_images(pixel_probs, images)
    stream = encode_images(pixel_probs, images, verify=False)  # what verify spares
    with pytest.raises(ValueError, match="compressed images"):
        assert not torch.equal(decode_images(pixel_probs, stream, tuple(images.shape[1:])),
                               images)  # (other images would fail the digest first)


def test_verified_encoding_still_round_trips_and_writes_the_same_bytes():
    images = _images(5, 4, seed=3)

    def causal(s):  # pixel i from the count of earlier ones
        flat = s.reshape(len(s), -1).double()
        earlier = torch.cat([torch.zeros(len(s), 1, dtype=flat.dtype), flat.cumsum(1)[:, :-1]], 1)
        p = torch.sigmoid(0.3 * earlier - 0.5).reshape(s.shape)
        return torch.stack([1 - p, p], -1)

    stream = encode_images(causal, images)
    assert stream == encode_images(causal, images, verify=False)
    assert torch.equal(decode_images(causal, stream, (1, 4, 4)), images)
    for bad in (1, None, "yes"):
        with pytest.raises(TypeError, match="verify must be True or False"):
            encode_images(causal, images, verify=bad)


class FeedForwardLM(torch.nn.Module):
    """A float32 neural n-gram (Bengio et al. 2003): a valid ``MarkovTextModel`` whose
    batched and single-context tables differ by float rounding (4e-8 on a CPU)."""

    def __init__(self, order, vocab, hidden=256, jitter=0.0):
        super().__init__()
        self.order, self.vocab, self.jitter = order, vocab, jitter
        self.helper = NGramModel(order, vocab)  # its contexts()
        self.embed = torch.nn.Embedding(vocab.num_symbols, 32)
        self.net = torch.nn.Sequential(torch.nn.Linear(32 * (order - 1), hidden), torch.nn.Tanh(),
                                       torch.nn.Linear(hidden, vocab.num_outputs))
        self.noise = torch.Generator().manual_seed(7)

    def contexts(self, x):
        return self.helper.contexts(x)

    def conditional(self, contexts):
        probs = self.net(self.embed(contexts).flatten(-2)).softmax(-1)  # [..., V]
        if self.jitter:  # a non-deterministic kernel's run-to-run noise
            probs = probs * (1 + self.jitter * torch.randn(probs.shape, generator=self.noise))
        return probs


def _words(num, seed):
    rng = random.Random(seed)
    return ["".join(rng.choice(LETTERS) for _ in range(rng.randint(1, 12))) for _ in range(num)]


def test_encode_words_codes_a_float32_neural_ngram_decodably():
    # the encoder computed every table in one batch, the decoder one context at a time; the
    # two differed by 3.7e-8 and decode_words refused the 1772 bytes ("asked for more")
    torch.manual_seed(0)
    vocab = Vocabulary(LETTERS)
    lm = FeedForwardLM(4, vocab)
    x = vocab.encode(_words(400, seed=0))
    stream = encode_words(lm, x)
    assert torch.equal(decode_words(lm, stream), x)
    assert stream == encode_words(lm, x, verify=False)


def test_encode_words_refuses_a_model_that_decoding_could_not_follow():
    torch.manual_seed(0)
    vocab = Vocabulary(LETTERS)
    lm = FeedForwardLM(3, vocab, jitter=1e-6)
    x = vocab.encode(_words(200, seed=1))
    with pytest.raises(ValueError, match=r"encode_words: a trial decode of the stream failed "
                                         r"\(.*\): lm's tables differ .*not deterministic"
                                         r".*float64"):
        encode_words(lm, x)
    stream = encode_words(lm, x, verify=False)  # what verify spares
    with pytest.raises(ValueError, match="compressed words"):
        decode_words(lm, stream)
    with pytest.raises(TypeError, match="verify must be True or False"):
        encode_words(lm, x, verify=0)
