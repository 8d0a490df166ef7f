"""Entropy-coded streams: corrupt, truncated or implausible input always raises ValueError.

Before issue 14 a flipped byte or a truncated stream decoded to garbage without an error, a
header claiming 10^9 words tried to allocate hundreds of GB and one claiming 10^6 images hung.
"""

import time

import numpy as np
import pytest
import torch

from inference.coding.bits_back import (
    _PREFIX,
    MAX_INITIAL_WORDS,
    bits_back_decode,
    bits_back_encode,
)
from inference.coding.range_coding import (
    KIND_BITS_BACK,
    KIND_IMAGES,
    KIND_WORDS,
    STREAM_HEADER_BYTES,
    decode_images,
    decode_words,
    encode_images,
    encode_words,
    pack_stream,
    range_decode,
    range_encode,
    unpack_stream,
)
from ppl_models import VAE
from ppl_models.ngram import NGramModel
from ppl_models.text import Vocabulary

WORDS = ["cat", "cats", "dog", "dogs", "dot", "cog", "act", "god", "good", "coat", "goat"]


def _tables(n=200, v=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(n, v, generator=g, dtype=torch.float64) + 0.05
    return torch.multinomial(probs, 1, generator=g)[:, 0], probs


def _damaged(data: bytes):
    """(name, stream) pairs: every byte position class flipped, truncations, extensions."""
    cases = [("flip magic", 0), ("flip version", 4), ("flip kind", 5), ("flip count", 8),
             ("flip symbols", 16), ("flip length", 24), ("flip crc", 28),
             ("flip payload start", STREAM_HEADER_BYTES), ("flip payload end", len(data) - 1)]
    out = [(name, data[:i] + bytes([data[i] ^ 0x04]) + data[i + 1:]) for name, i in cases]
    out += [("truncated to header", data[:STREAM_HEADER_BYTES]),
            ("truncated by a word", data[:-4]), ("truncated mid-header", data[:10]),
            ("empty", b""), ("extra word", data + b"\0\0\0\0"), ("extra byte", data + b"\1")]
    return out


RANGE_SYMBOLS, RANGE_PROBS = _tables()
RANGE_DATA = range_encode(RANGE_SYMBOLS, RANGE_PROBS)


@pytest.mark.parametrize("name,data", _damaged(RANGE_DATA),
                         ids=[n for n, _ in _damaged(RANGE_DATA)])
def test_range_decode_detects(name, data):
    with pytest.raises(ValueError, match="compressed range-coded symbols"):
        range_decode(data, lambda chunks: None if chunks else RANGE_PROBS)


def test_range_decode_with_other_tables():
    other = torch.flip(RANGE_PROBS, [1])
    with pytest.raises(ValueError, match="did not consume exactly"):
        range_decode(RANGE_DATA, lambda chunks: None if chunks else other)


def test_range_decode_asks_for_too_many_or_too_few():
    with pytest.raises(ValueError, match="asked for more"):
        range_decode(RANGE_DATA, lambda chunks: None if len(chunks) > 1 else RANGE_PROBS)
    with pytest.raises(ValueError, match="stopped after 100 of the stream's 200"):
        range_decode(RANGE_DATA, lambda chunks: None if chunks else RANGE_PROBS[:100])


def test_range_round_trip_still_exact():
    assert torch.equal(range_decode(RANGE_DATA, lambda c: None if c else RANGE_PROBS),
                       RANGE_SYMBOLS)


def test_not_bytes():
    with pytest.raises(TypeError, match="must be bytes"):
        range_decode("abc", lambda chunks: None)


@pytest.fixture(scope="module")
def lm():
    vocab = Vocabulary.from_words(WORDS)
    return NGramModel(2, vocab).fit_counts(vocab.encode(WORDS))


def test_words_damaged(lm):
    data = encode_words(lm, lm.vocab.encode(WORDS * 3))
    for name, bad in _damaged(data):
        with pytest.raises(ValueError, match="compressed words"):
            decode_words(lm, bad)
    assert torch.equal(decode_words(lm, data), lm.vocab.encode(WORDS * 3))


def test_words_header_claiming_a_billion(lm):
    # a well-formed header (valid CRC) that claims 10^9 words in 10^9 symbols: refused at once
    data = encode_words(lm, lm.vocab.encode(WORDS))
    payload = data[STREAM_HEADER_BYTES:]
    start = time.perf_counter()
    with pytest.raises(ValueError, match="more than"):
        decode_words(lm, pack_stream(KIND_WORDS, 10**9, 10**9, payload))
    assert time.perf_counter() - start < 5


def _pixel_probs(symbols):
    # independent pixels, p(on) = 0.3: [batch, C, H, W] -> [batch, C, H, W, 2]
    on = torch.full(symbols.shape, 0.3, dtype=torch.float64)
    return torch.stack([1 - on, on], -1)


IMAGES = (torch.rand(4, 1, 3, 3, generator=torch.Generator().manual_seed(0)) < 0.3).long()


def test_images_damaged():
    data = encode_images(_pixel_probs, IMAGES)
    for name, bad in _damaged(data):
        with pytest.raises(ValueError, match="compressed images"):
            decode_images(_pixel_probs, bad, (1, 3, 3))
    assert torch.equal(decode_images(_pixel_probs, data, (1, 3, 3)), IMAGES)


def test_images_wrong_shape_and_implausible_count():
    data = encode_images(_pixel_probs, IMAGES)
    with pytest.raises(ValueError, match="wrong image_shape"):
        decode_images(_pixel_probs, data, (1, 3, 4))
    with pytest.raises(ValueError, match="image_shape must be"):
        decode_images(_pixel_probs, data, (1, 0, 3))
    payload = data[STREAM_HEADER_BYTES:]
    start = time.perf_counter()
    with pytest.raises(ValueError, match="more than"):  # 10^6 28x28 images: no allocation
        decode_images(_pixel_probs, pack_stream(KIND_IMAGES, 10**6, 784 * 10**6, payload),
                      (1, 28, 28))
    with pytest.raises(ValueError, match="decoder failed|did not consume"):  # 10^6 tiny ones
        decode_images(_pixel_probs, pack_stream(KIND_IMAGES, 10**6, 9 * 10**6, payload),
                      (1, 3, 3))
    assert time.perf_counter() - start < 10


def test_stream_of_another_kind():
    data = encode_images(_pixel_probs, IMAGES)
    with pytest.raises(ValueError, match="holds images"):
        unpack_stream(data, KIND_WORDS)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return VAE((1, 3, 3), latent_dim=2, hidden=(8,)).eval()


def test_bits_back_damaged(vae):
    images = IMAGES.float()
    data = bits_back_encode(vae, images, latent_bits=6)
    for name, bad in _damaged(data):
        with pytest.raises(ValueError, match="bits-back|compressed"):
            bits_back_decode(vae, bad, latent_bits=6)
    decoded, _ = bits_back_decode(vae, data, latent_bits=6)
    assert torch.equal(decoded, images)


def test_bits_back_wrong_settings_or_model(vae):
    data = bits_back_encode(vae, IMAGES.float(), latent_bits=6)
    with pytest.raises(ValueError, match="latent_bits=6"):
        bits_back_decode(vae, data, latent_bits=8)
    torch.manual_seed(1)
    other = VAE((1, 3, 3), latent_dim=2, hidden=(8,)).eval()
    with pytest.raises(ValueError, match="another VAE"):
        bits_back_decode(other, data, latent_bits=6)


def test_bits_back_header_with_huge_initial_words_is_refused_before_allocating(vae):
    # a 52-byte stream with a valid CRC claiming 2^32-1 initial words made the decoder draw
    # them (16 GiB) before comparing
    start = time.perf_counter()
    payload = _PREFIX.pack(2**32 - 1, 0) + np.array([1, 2], "<u4").tobytes()
    with pytest.raises(ValueError, match="initial_words"):
        bits_back_decode(vae, pack_stream(KIND_BITS_BACK, 0, 0, payload, extra=12))
    payload = _PREFIX.pack(1000, 0) + np.array([1, 2], "<u4").tobytes()  # under the bound
    with pytest.raises(ValueError, match="initial_words=1000.*2 words"):
        bits_back_decode(vae, pack_stream(KIND_BITS_BACK, 0, 0, payload, extra=12))
    assert time.perf_counter() - start < 5


def test_bits_back_encode_refuses_initial_words_beyond_the_bound(vae):
    start = time.perf_counter()
    for words in (2**31, MAX_INITIAL_WORDS + 1):
        with pytest.raises(ValueError, match=f"initial_words must be.*{MAX_INITIAL_WORDS}"):
            bits_back_encode(vae, IMAGES.float(), initial_words=words)
    assert time.perf_counter() - start < 5


def test_bits_back_with_a_nan_model_names_the_image(vae):
    data = bits_back_encode(vae, IMAGES.float(), latent_bits=6)
    broken = VAE((1, 3, 3), latent_dim=2, hidden=(8,)).eval()
    with torch.no_grad():
        for parameter in broken.parameters():
            parameter.fill_(float("nan"))
    with pytest.raises(ValueError, match="image 0: the VAE's .*probabilities are not finite"):
        bits_back_encode(broken, IMAGES.float(), latent_bits=6)
    with pytest.raises(ValueError, match="image 3: the VAE's .*probabilities are not finite"):
        bits_back_decode(broken, data, latent_bits=6)  # decoded last to first


def _loops_guard(next_probs, limit=1000):
    """``next_probs`` that raises RuntimeError after ``limit`` calls: a hang fails the test."""
    calls = []

    def guarded(chunks):
        calls.append(None)
        if len(calls) > limit:
            raise RuntimeError("range_decode called next_probs forever")
        return next_probs(chunks)
    return guarded


def test_range_decode_refuses_a_table_with_no_rows():
    # after the last symbol the slice is [0, V] instead of None: the decoder looped forever
    rest = _loops_guard(lambda chunks: RANGE_PROBS[sum(map(len, chunks)):])
    with pytest.raises(ValueError, match="next_probs returned a table with no rows"):
        range_decode(RANGE_DATA, rest)
    empty = _loops_guard(lambda chunks: RANGE_PROBS[:0])
    with pytest.raises(ValueError, match="next_probs returned a table with no rows"):
        range_decode(RANGE_DATA, empty)


def _bad_rows():
    """(name, probs [3, V], match): tables the coder cannot normalize, refused by name."""
    ones = torch.ones(3, 4, dtype=torch.float64)
    denormal, tiny, huge = ones.clone(), ones.clone(), ones.clone()
    denormal[2] = 1e-320
    tiny[1] = 1e-305  # normal, but 2^24 / its sum overflows: constriction panicked
    huge[1] = 1e308  # the sum overflows
    return [("one symbol", torch.ones(3, 1), r"V=1 symbols .*needs 2\.\.16777214"),
            ("2^24+1 symbols", torch.ones(1, 1).expand(3, 2**24 + 1),
             r"V=16777217 symbols .*needs 2\.\.16777214"),
            ("denormal row", denormal, r"row 2 sums to 4e-320.*less than 1e-290"),
            ("tiny row", tiny, r"row 1 sums to 4e-305.*less than 1e-290"),
            ("overflowing row", huge, r"row 1 sums to inf.*more than 1e\+300")]


@pytest.mark.parametrize("name,probs,match", _bad_rows(), ids=[c[0] for c in _bad_rows()])
def test_tables_the_coder_cannot_normalize_are_named(name, probs, match):
    symbols = torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match=match):
        range_encode(symbols, probs)
    data = range_encode(symbols, torch.ones(3, 2))
    with pytest.raises(ValueError, match="next_probs.*" + match):
        range_decode(data, lambda chunks: None if chunks else probs)
