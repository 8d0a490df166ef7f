"""Range coding: bit-exact round trips and code lengths against the model's information."""

import math
import struct
import zlib

import numpy as np
import pytest
import torch

from inference.coding.range_coding import (
    STREAM_HEADER_BYTES,
    decode_images,
    decode_words,
    encode_images,
    encode_words,
    information_bits,
    range_decode,
    range_encode,
)
from ppl_models.ngram import NGramModel
from ppl_models.pixelcnn import PixelCNN
from ppl_models.text import Vocabulary

WORDS = ["cat", "cats", "dog", "dogs", "catalog", "dot", "cog", "act", "tac", "god", "good",
         "goods", "cot", "coat", "goat", "toad", "road", "roads", "a", "ad"]


def random_tables(n, v, seed):
    generator = torch.Generator().manual_seed(seed)
    probs = torch.distributions.Dirichlet(torch.full((v,), 0.5)).sample((n,))
    symbols = torch.multinomial(probs, 1, generator=generator)[:, 0]
    return symbols, probs


def test_round_trip_and_length_close_to_information():
    symbols, probs = random_tables(5000, 7, seed=1)
    data = range_encode(symbols, probs)
    decoded = range_decode(data, lambda chunks: None if chunks else probs)
    assert torch.equal(decoded, symbols)
    ideal = information_bits(symbols, probs)
    # the range coder adds at most a few 32-bit words plus the 24-bit quantization of the
    # tables (Dirichlet(0.5) draws hold probabilities near 2^-24 only rarely): 1% of ~9000 bits
    coded = 8 * (len(data) - STREAM_HEADER_BYTES)  # the stream header is fixed overhead
    assert coded >= ideal
    assert coded <= 1.01 * ideal, (coded, ideal)


def test_decoding_step_by_step_matches():
    symbols, probs = random_tables(300, 3, seed=2)
    data = range_encode(symbols, probs)
    decoded = range_decode(data, lambda chunks: probs[len(chunks)][None]
                           if len(chunks) < len(probs) else None)
    assert torch.equal(decoded, symbols)


def test_unnormalized_tables_are_normalized():
    symbols, probs = random_tables(2000, 4, seed=3)
    assert information_bits(symbols, 5 * probs) == pytest.approx(information_bits(symbols, probs))
    data = range_encode(symbols, 5 * probs)
    assert torch.equal(range_decode(data, lambda chunks: None if chunks else 5 * probs), symbols)


def test_bad_input():
    symbols, probs = random_tables(10, 4, seed=0)
    with pytest.raises(ValueError, match="symbols must lie"):
        range_encode(symbols + 4, probs)
    with pytest.raises(ValueError, match=r"\[n, V\]"):
        range_encode(symbols, probs[:5])
    with pytest.raises(ValueError, match="non-negative"):
        range_encode(symbols, -probs)
    with pytest.raises(ValueError, match="truncated"):
        range_decode(b"abc", lambda chunks: None)
    with pytest.raises(TypeError, match="symbols must be a tensor, got list"):
        range_encode(symbols.tolist(), probs)
    zeroed = probs.clone()
    zeroed[3] = 0.0
    with pytest.raises(ValueError, match="row 3 sums to zero"):
        range_encode(symbols, zeroed)


@pytest.mark.parametrize("order", [1, 3])
def test_ngram_words_round_trip(order):
    vocab = Vocabulary.from_words(WORDS)
    lm = NGramModel(order, vocab).fit_counts(vocab.encode(WORDS[:12]))
    x = vocab.encode(WORDS * 20)  # unseen words and contexts included
    data = encode_words(lm, x)
    assert torch.equal(decode_words(lm, data), x)
    nll_bits = -float(lm.log_prob(x).sum()) / math.log(2)
    # stream header (fixed) + range-coder tail: within 1% of ~4000 bits of information
    coded = 8 * (len(data) - STREAM_HEADER_BYTES)
    assert nll_bits <= coded <= 1.01 * nll_bits + 32, (coded, nll_bits)


@pytest.mark.parametrize("likelihood", ["bernoulli", "categorical256"])
def test_pixelcnn_images_round_trip(likelihood):
    torch.manual_seed(0)
    model = PixelCNN((1, 4, 4), likelihood, channels=8, num_blocks=1, first_kernel_size=3).eval()
    levels = 2 if likelihood == "bernoulli" else 256
    symbols = torch.randint(levels, (6, 1, 4, 4), generator=torch.Generator().manual_seed(1))

    def pixel_probs(s):  # [batch, 1, 4, 4] -> [batch, 1, 4, 4, K]
        d = model.distribution(model.levels[s])
        grid = model.levels.view(-1, 1, 1, 1, 1).expand(len(model.levels), *s.shape)
        return d.log_prob(grid).double().exp().movedim(0, -1)

    data = encode_images(pixel_probs, symbols)
    assert torch.equal(decode_images(pixel_probs, data, (1, 4, 4)), symbols)
    with torch.no_grad():
        nll_bits = -float(model.log_prob(model.levels[symbols]).sum()) / math.log(2)
    # 96 pixels only: allow one 32-bit tail word, one more word and 1% beyond the header
    assert 8 * (len(data) - STREAM_HEADER_BYTES) <= 1.01 * nll_bits + 64


def test_encode_images_checks_shapes():
    with pytest.raises(ValueError, match="int64"):
        encode_images(lambda s: s, torch.zeros(2, 1, 3, 3))
    with pytest.raises(ValueError, match="pixel_probs must return"):
        encode_images(lambda s: torch.ones(2, 2), torch.zeros(2, 1, 3, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="symbols must be an int64 tensor"):
        encode_images(lambda s: s, [[[[0, 1]]]])
    with pytest.raises(ValueError, match="no empty dim"):
        encode_images(lambda s: s, torch.zeros(0, 1, 3, 3, dtype=torch.long))


def _uniform_pixels(symbols):
    return torch.full((*symbols.shape, 2), 0.5, dtype=torch.float64)


def test_decoding_images_with_another_shape_of_as_many_pixels_is_refused():
    # the header counts pixels; a shape-agnostic model decoded (4, 2, 2) from a (1, 4, 4)
    # stream, moving every pixel
    symbols = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    symbols[0, 0, 0, 1] = 1
    data = encode_images(_uniform_pixels, symbols)
    assert torch.equal(decode_images(_uniform_pixels, data, (1, 4, 4)), symbols)
    for shape in ((4, 2, 2), (1, 2, 8)):
        with pytest.raises(ValueError, match="coded with another shape"):
            decode_images(_uniform_pixels, data, shape)


def test_image_streams_need_the_shape_tag():
    # format 1 read a tag of 0 without the check; format 2 always writes the tag
    symbols = torch.randint(0, 2, (2, 1, 3, 3), generator=torch.Generator().manual_seed(0))
    data = encode_images(_uniform_pixels, symbols)
    # header: magic (4 bytes), version, kind, the 16-bit field at bytes 6-7, ..., CRC32 last
    head = data[:6] + b"\x00\x00" + data[8:STREAM_HEADER_BYTES - 4]
    payload = data[STREAM_HEADER_BYTES:]
    untagged = head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload
    assert untagged != data
    with pytest.raises(ValueError, match="coded with another shape"):
        decode_images(_uniform_pixels, untagged, (1, 3, 3))


def test_decode_images_takes_image_shape_as_numpy_integers():
    symbols = torch.randint(0, 2, (2, 1, 3, 3), generator=torch.Generator().manual_seed(0))
    data = encode_images(_uniform_pixels, symbols)
    for shape in (np.array([1, 3, 3]), (np.int64(1), np.int32(3), 3), [1, 3, 3]):
        assert torch.equal(decode_images(_uniform_pixels, data, shape), symbols)
    for shape in (np.array([[1, 3, 3]]), np.array([1.0, 3.0, 3.0]), (1, 3), "133"):
        with pytest.raises(ValueError, match="image_shape must be three positive ints"):
            decode_images(_uniform_pixels, data, shape)


def test_a_pixel_probs_that_changes_its_input_codes_the_images_given():
    """A model whose forward preprocesses its input in place (here: zeroes it) used to make
    the stream code the changed pixels, decoded without error, and changed the caller's
    images; each call now gets its own copy."""
    def uniform(symbols):
        return torch.full((*symbols.shape, 2), 0.5, dtype=torch.float64)

    def in_place(symbols):
        symbols.mul_(0)
        return uniform(symbols)

    images = torch.randint(0, 2, (3, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    given = images.clone()
    stream = encode_images(in_place, images)
    assert torch.equal(images, given)
    assert torch.equal(decode_images(in_place, stream, (1, 4, 4)), given)


@pytest.mark.parametrize("device, error, message", [
    ("banana", ValueError, "device must be 'auto', 'cpu', 'cuda', 'cuda:N'"),
    ("meta", ValueError, "only CPU and CUDA devices are supported"),
    (3.5, ValueError, "device must be"),
])
def test_decode_images_names_a_device_it_cannot_use(device, error, message):
    """A device name torch does not know failed inside torch.zeros, naming nothing."""
    stream = encode_images(lambda s: torch.full((*s.shape, 2), 0.5, dtype=torch.float64),
                           torch.zeros(1, 1, 2, 2, dtype=torch.long))
    with pytest.raises(error, match=message):
        decode_images(lambda s: s, stream, (1, 2, 2), device=device)
