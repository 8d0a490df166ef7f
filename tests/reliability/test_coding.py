"""Entropy-coded streams: corrupt, truncated or implausible input always raises ValueError.

Before issue 14 a flipped byte or a truncated stream decoded to garbage without an error, a
header claiming 10^9 words tried to allocate hundreds of GB and one claiming 10^6 images hung.
Format 2 adds a digest of the coded symbols, checked after decoding; format 1 is refused.
"""

import struct
import time
import zlib

import numpy as np
import pytest
import torch

from inference.coding import bits_back, range_coding
from inference.coding.bits_back import (
    _PREFIX,
    HEADER_BYTES,
    MAX_INITIAL_WORDS,
    bits_back_decode,
    bits_back_encode,
    net_bits,
)
from inference.coding.range_coding import (
    KIND_BITS_BACK,
    KIND_IMAGES,
    KIND_RANGE,
    KIND_WORDS,
    STREAM_HEADER_BYTES,
    _shape_tag,
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
    # header: magic 0-3, version 4, kind 5, extra 6-7, count 8-11, symbols 12-15, length
    # 16-19, digest 20-27, CRC32 28-31
    cases = [("flip magic", 0), ("flip version", 4), ("flip kind", 5), ("flip extra", 6),
             ("flip count", 8), ("flip symbols", 12), ("flip length", 16),
             ("flip digest", 20), ("flip digest end", 27), ("flip crc", 28),
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
        decode_words(lm, pack_stream(KIND_WORDS, 10**9, 10**9, payload, 0))
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
        decode_images(_pixel_probs, pack_stream(KIND_IMAGES, 10**6, 784 * 10**6, payload, 0,
                                                extra=_shape_tag((1, 28, 28))), (1, 28, 28))
    with pytest.raises(ValueError, match="decoder failed|did not consume"):  # 10^6 tiny ones
        decode_images(_pixel_probs, pack_stream(KIND_IMAGES, 10**6, 9 * 10**6, payload, 0,
                                                extra=_shape_tag((1, 3, 3))), (1, 3, 3))
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
    payload = _PREFIX.pack(2**32 - 1, 0, 2, 1, 3, 3) + np.array([1, 2], "<u4").tobytes()
    with pytest.raises(ValueError, match="initial_words"):
        bits_back_decode(vae, pack_stream(KIND_BITS_BACK, 0, 0, payload, 0, extra=12))
    payload = _PREFIX.pack(1000, 0, 2, 1, 3, 3) + np.array([1, 2], "<u4").tobytes()
    with pytest.raises(ValueError, match="initial_words=1000.*2 words"):  # under the bound
        bits_back_decode(vae, pack_stream(KIND_BITS_BACK, 0, 0, payload, 0, extra=12))
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
    # the VAE's NaN parameters are named before any image is coded or decoded
    for call in (lambda: bits_back_encode(broken, IMAGES.float(), latent_bits=6),
                 lambda: bits_back_decode(broken, data, latent_bits=6)):
        with pytest.raises(FloatingPointError,
                           match=r"vae: VAE's parameters \['encoder.*NaN or infinite"):
            call()


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


def _with_digest(data: bytes, kind: int, digest: int) -> bytes:
    """``data`` (a stream of ``kind``) with another digest in a header of valid CRC32."""
    stream = unpack_stream(data, kind)
    return pack_stream(kind, stream.count, stream.symbols, stream.payload, digest,
                       extra=stream.extra)


def test_a_digest_other_than_the_decoded_symbols_is_refused(lm, vae):
    # the decoders check what they decoded against the header's digest: with a digest that
    # does not match (valid CRC32), they raise instead of returning the symbols
    data = _with_digest(RANGE_DATA, KIND_RANGE, 12345)
    with pytest.raises(ValueError, match="range-coded symbols: the decoded symbols do not "
                                         "match the stream's digest: .*another model"):
        range_decode(data, lambda chunks: None if chunks else RANGE_PROBS)
    words = _with_digest(encode_words(lm, lm.vocab.encode(WORDS)), KIND_WORDS, 0)
    with pytest.raises(ValueError, match="words: the decoded symbols do not match"):
        decode_words(lm, words)
    images = _with_digest(encode_images(_pixel_probs, IMAGES), KIND_IMAGES, 2**64 - 1)
    with pytest.raises(ValueError, match="images: the decoded symbols do not match"):
        decode_images(_pixel_probs, images, (1, 3, 3))
    coded = _with_digest(bits_back_encode(vae, IMAGES.float(), latent_bits=6), KIND_BITS_BACK, 7)
    with pytest.raises(ValueError, match="decoded images do not match the stream's digest: "
                                         "decoded with another VAE"):
        bits_back_decode(vae, coded, latent_bits=6)


def _version_1(data: bytes, kind: int) -> bytes:
    """``data`` in the format-1 framing: a 32-byte header without the digest, and for
    bits-back a prefix of initial_words and seed only."""
    stream = unpack_stream(data, kind)
    payload = stream.payload
    if kind == KIND_BITS_BACK:
        payload = payload[:12] + payload[_PREFIX.size:]
    head = struct.pack("<4sBBHQQI", b"PPLC", 1, kind, stream.extra, stream.count,
                       stream.symbols, len(payload))
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def test_format_1_streams_are_refused_with_the_reason(lm, vae):
    # format 1 carried no digest: what it decodes to cannot be verified, so it is refused
    cases = [
        (_version_1(RANGE_DATA, KIND_RANGE),
         lambda d: range_decode(d, lambda chunks: None if chunks else RANGE_PROBS)),
        (_version_1(encode_words(lm, lm.vocab.encode(WORDS)), KIND_WORDS),
         lambda d: decode_words(lm, d)),
        (_version_1(encode_images(_pixel_probs, IMAGES), KIND_IMAGES),
         lambda d: decode_images(_pixel_probs, d, (1, 3, 3))),
        (_version_1(bits_back_encode(vae, IMAGES.float(), latent_bits=6), KIND_BITS_BACK),
         lambda d: bits_back_decode(vae, d, latent_bits=6)),
        (_version_1(bits_back_encode(vae, IMAGES.float(), latent_bits=6), KIND_BITS_BACK),
         net_bits),
    ]
    for old, decode in cases:
        with pytest.raises(ValueError, match="stream format version 1, which carries no "
                                             "checksum .* encode the data again"):
            decode(old)
    with pytest.raises(ValueError, match="format version 1"):  # a format-1 header alone
        range_decode(_version_1(range_encode(torch.zeros(0, dtype=torch.long),
                                             torch.ones(0, 2)), KIND_RANGE),
                     lambda chunks: None)


def test_net_bits_checks_initial_words(vae):
    data = bits_back_encode(vae, IMAGES.float(), latent_bits=6, initial_words=3)
    assert net_bits(data) == net_bits(data, 3) == 8 * (len(data) - HEADER_BYTES) - 96
    assert net_bits(data, np.int64(0)) == 8 * (len(data) - HEADER_BYTES)
    # -5 gave 544 and 10^6 gave -31999616 bits
    most = (len(data) - HEADER_BYTES) // 4 + len(IMAGES) * vae.latent_dim + 2
    for words in (-5, 10**6, most + 1, True, 2.0, "3"):
        with pytest.raises(ValueError, match=rf"initial_words must be an int in 0\.\.{most}"):
            net_bits(data, words)
    # more words than the stream holds (the stream records 3) gave a negative code length
    fits = (len(data) - HEADER_BYTES) // 4
    assert net_bits(data, fits) == 8 * (len(data) - HEADER_BYTES) - 32 * fits >= 0
    for words in (fits + 1, most):
        with pytest.raises(ValueError, match=rf"initial_words={words} takes off more bits than "
                                             r"the stream's .* records 3 initial words"):
            net_bits(data, words)
    with pytest.raises(ValueError, match="CRC32"):  # the stream is checked, too
        net_bits(data[:-1] + bytes([data[-1] ^ 1]), 3)


def test_encoders_refuse_more_symbols_than_the_decoders_read(monkeypatch, lm, vae):
    # a message over MAX_SYMBOLS was coded, then refused by its decoder; now the encoders
    # refuse it before calling the model
    monkeypatch.setattr(range_coding, "MAX_SYMBOLS", 30)
    monkeypatch.setattr(bits_back, "MAX_SYMBOLS", 30)
    with pytest.raises(ValueError, match="symbols: 31 coded symbols, more than MAX_SYMBOLS"):
        range_encode(*_tables(n=31))
    range_encode(*_tables(n=30))
    with pytest.raises(ValueError, match="words: 34 coded symbols, more than MAX_SYMBOLS"):
        encode_words(lm, lm.vocab.encode(WORDS[:8]))  # 26 characters and 8 end symbols

    def no_model(symbols):
        raise AssertionError("the model was called")
    with pytest.raises(ValueError, match="images: 36 coded symbols, more than MAX_SYMBOLS"):
        encode_images(no_model, IMAGES)
    with pytest.raises(ValueError, match=r"4 images of \(1, 3, 3\) pixels, more than MAX_SYMB"):
        bits_back_encode(vae, IMAGES.float())
    assert torch.equal(bits_back_decode(vae, bits_back_encode(vae, IMAGES[:3].float()))[0],
                       IMAGES[:3].float())
