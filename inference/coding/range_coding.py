"""Lossless coding driven by model probabilities: range coding with ``constriction`` [1].

A model that gives every symbol a probability ``p(s_t | s_<t)`` compresses a message to about
its negative log-likelihood: an arithmetic (range) coder spends ``-log2 p(s_t | s_<t)`` bits on
each symbol up to a small constant for the whole message [2], so

    code length (bits) ~= -sum_t log2 p(s_t | s_<t) = NLL / ln 2.

:func:`range_encode` writes the symbols with their probability tables into bytes;
:func:`range_decode` reads them back, asking the caller for the next probability tables from
the symbols decoded so far, which is how an autoregressive model decodes: the decoder must see
bit for bit the same tables as the encoder, so compute them with the same code on tensors of
the same shape. The coder quantizes each table to fixed point (24 bits of precision, every
symbol at least ``2^-24``), which costs a fraction of a percent on ordinary messages; a
float-rounding difference between the encoder's and the decoder's tables (1e-8) is enough to
make a stream undecodable, so :func:`encode_words` and :func:`encode_images` decode their
stream once before returning it (``verify=True``) and raise ``ValueError`` instead of
returning bytes their decoder cannot read.

References:
    [1] Bamler (2022), Understanding entropy coding with asymmetric numeral systems (ANS): a
        statistician's perspective, arXiv:2201.01741; the ``constriction`` library.
    [2] Witten, Neal, Cleary (1987), Arithmetic coding for data compression, Communications
        of the ACM 30(6), 520-540.
"""

from __future__ import annotations

import hashlib
import math
import struct
import zlib
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from ..checks import (as_int_list, check_dense_values, check_function, check_tensor_input,
                      resolve_device)
from ..protocols import MarkovTextModel, require

WORD_BYTES = 4  # constriction emits 32-bit words

# Every stream written here starts with a header: magic, format version, kind of content, a
# kind-specific small field, the item count (symbols, words, images), the number of coded
# symbols, the payload length, a 64-bit digest of the coded symbols and a CRC32 of header and
# payload. Decoders check all of it before decoding, so a truncated, extended or altered stream
# raises ValueError; and they check the digest of what they decoded, so decoding with another
# model (tables) than the encoder's raises ValueError instead of returning other content.
# Version 1 (no digest) is refused: its content could not be verified.
STREAM_MAGIC = b"PPLC"
STREAM_VERSION = 2
# magic, version, kind, extra, count, symbols, length, digest; counts are 32-bit (version 1
# had 64-bit ones): encoders refuse more than MAX_SYMBOLS coded symbols, and items are fewer
_STREAM = struct.Struct("<4sBBHIIIQ")
STREAM_HEADER_BYTES = _STREAM.size + 4  # + CRC32: 32 bytes
STREAM_KINDS = {1: "range-coded symbols", 2: "words", 3: "images", 4: "bits-back images"}
KIND_RANGE, KIND_WORDS, KIND_IMAGES, KIND_BITS_BACK = 1, 2, 3, 4
# Plausibility limit checked before anything is allocated: a header claiming more coded
# symbols (pixels, word symbols) is refused, and encoders refuse to write such a message.
# Raise it for larger messages, below 2^32 (the header's counts are 32-bit).
MAX_SYMBOLS = 2**26
# The coder's tables give every symbol at least 2^-24 (24-bit precision), so a symbol costs at
# least -log2(1 - 2^-24) bits: a payload of B bits holds at most (B + 64) / that many symbols.
_MIN_BITS_PER_SYMBOL = -math.log2(1 - 2.0**-24)
# What the coder (constriction's leaky categorical model, 24-bit precision) can normalize: a
# table of 2 to 2^24 - 2 symbols whose float64 row sums s are normal and keep its scale
# (2^24 - V) / s finite (1e-302 overflowed it). Rows outside [MIN_ROW_SUM, MAX_ROW_SUM] are
# refused before coding, naming the row.
MAX_ALPHABET = 2**24 - 2
MIN_ROW_SUM, MAX_ROW_SUM = 1e-290, 1e300


# the integer dtypes symbols may have (uint8 is the natural one of 8-bit image levels); they are
# coded as int64
SYMBOL_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_SYMBOL_DTYPE_NAMES = ", ".join(str(t).removeprefix("torch.") for t in SYMBOL_DTYPES)


def symbol_digest(symbols) -> int:
    """64-bit BLAKE2b digest of coded symbols ``[n]`` (a tensor or array of ints in
    ``0..MAX_ALPHABET``, in coding order), as the stream header records it."""
    if torch.is_tensor(symbols):
        symbols = symbols.detach().cpu().numpy()
    array = np.ascontiguousarray(symbols, dtype="<i4")
    digest = hashlib.blake2b(array.tobytes(), digest_size=8, person=b"PPLC symbols")
    return int.from_bytes(digest.digest(), "little")


class Stream(NamedTuple):
    """A checked stream: item ``count``, coded ``symbols``, the kind's ``extra`` field, the
    ``digest`` of the coded symbols and the ``payload`` bytes."""

    count: int
    symbols: int
    extra: int
    digest: int
    payload: bytes


def pack_stream(kind: int, count: int, symbols: int, payload: bytes, digest: int,
                extra: int = 0) -> bytes:
    """Header (see :data:`STREAM_MAGIC`) + ``payload``: the framing every encoder here uses.
    ``digest`` is :func:`symbol_digest` of what the payload codes."""
    head = _STREAM.pack(STREAM_MAGIC, STREAM_VERSION, kind, extra, count, symbols, len(payload),
                        digest)
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def unpack_stream(data, kind: int) -> Stream:
    """Check the header and CRC32 of a stream of ``kind`` and return it as a :class:`Stream`.

    Raises:
        TypeError: ``data`` is not bytes-like.
        ValueError: truncated or extended stream, another format, version (1 included) or
            kind, a CRC32 mismatch, or a count beyond the plausibility limits.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"compressed data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    want = STREAM_KINDS[kind]
    magic, version = data[:len(STREAM_MAGIC)], data[len(STREAM_MAGIC):len(STREAM_MAGIC) + 1]
    if magic == STREAM_MAGIC and version == b"\x01":  # before the header had the digest
        raise ValueError(f"compressed {want}: stream format version 1, which carries no "
                         "checksum of the coded symbols (decoding it with another model could "
                         "return other content unnoticed); this library reads version "
                         f"{STREAM_VERSION}: encode the data again")
    if len(data) < STREAM_HEADER_BYTES:
        raise ValueError(f"compressed {want}: stream truncated, {len(data)} bytes is less than "
                         f"its {STREAM_HEADER_BYTES}-byte header")
    _, version, found, extra, count, symbols, length, digest = _STREAM.unpack_from(data)
    if magic != STREAM_MAGIC:
        raise ValueError(f"compressed {want}: not a stream of inference.coding (starts with "
                         f"{magic!r}, expected {STREAM_MAGIC!r})")
    if version != STREAM_VERSION:
        raise ValueError(f"compressed {want}: stream format version {version}, this library "
                         f"reads version {STREAM_VERSION}")
    if found != kind:
        raise ValueError(f"compressed {want}: the stream holds "
                         f"{STREAM_KINDS.get(found, f'unknown kind {found}')}")
    payload = data[STREAM_HEADER_BYTES:]
    if len(payload) != length:
        problem = "truncated" if len(payload) < length else "followed by extra bytes"
        raise ValueError(f"compressed {want}: stream {problem}: header says {length} payload "
                         f"bytes, got {len(payload)}")
    (crc,) = struct.unpack_from("<I", data, _STREAM.size)
    if zlib.crc32(payload, zlib.crc32(data[:_STREAM.size])) != crc:
        raise ValueError(f"compressed {want}: stream corrupt (CRC32 mismatch)")
    limit = min(MAX_SYMBOLS, (8 * len(payload) + 64) / _MIN_BITS_PER_SYMBOL)
    if symbols > limit:
        raise ValueError(f"compressed {want}: header claims {symbols} coded symbols, more than "
                         f"{int(limit)} (MAX_SYMBOLS or what {len(payload)} bytes can hold)")
    return Stream(count, symbols, extra, digest, payload)


def load_constriction():
    """The ``constriction`` module, or an ImportError that says how to install it."""
    try:
        import constriction
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("range coding needs the `constriction` package "
                          "(pip install constriction)") from error
    return constriction


# what to pass for a table callback given a whole model module (TypeError, check_function)
PIXEL_PROBS_INSTEAD = ("a function of the symbols [batch, C, H, W] that returns the model's "
                       "tables [batch, C, H, W, V] (as examples/compression.py's pixel_probs "
                       "wraps a PixelCNN)")
NEXT_PROBS_INSTEAD = ("a function of the decoded chunks that returns the next symbols' tables "
                      "[m, V], or None when the message is complete")


def _check_tables(symbols: torch.Tensor, probs: torch.Tensor, coding: bool = True) -> None:
    for name, value in (("symbols", symbols), ("probs", probs)):
        if not torch.is_tensor(value):
            raise TypeError(f"{name} must be a tensor, got {type(value).__name__}")
        check_dense_values(value, name)
    if symbols.dim() != 1 or probs.dim() != 2 or probs.shape[0] != symbols.shape[0]:
        raise ValueError(f"need symbols [n] and probs [n, V], got {list(symbols.shape)} and "
                         f"{list(probs.shape)}")
    if symbols.dtype not in SYMBOL_DTYPES:
        raise ValueError(f"symbols must be integers ({_SYMBOL_DTYPE_NAMES}), got {symbols.dtype}")
    if coding:
        _check_symbol_count(symbols.numel(), "symbols")
    if symbols.numel() and (symbols.min() < 0 or symbols.max() >= probs.shape[1]):
        raise ValueError(f"symbols must lie in 0..{probs.shape[1] - 1}, got range "
                         f"[{int(symbols.min())}, {int(symbols.max())}]")
    check_probs(probs, coding=coding)


def _check_symbol_count(count: int, what: str) -> None:
    """Refuse to code more than :data:`MAX_SYMBOLS` symbols: no decoder would read them."""
    if count > MAX_SYMBOLS:
        raise ValueError(f"{what}: {count} coded symbols, more than MAX_SYMBOLS ({MAX_SYMBOLS}), "
                         "which the decoders refuse")


def check_probs(probs: torch.Tensor, source: str = "probability table",
                 coding: bool = True) -> None:
    """Refuse tables ``[n, V]`` that are not finite non-negative floats, or (``coding``) that
    the coder cannot normalize: ``V`` outside ``2..MAX_ALPHABET``, a row whose float64 sum
    lies outside ``[MIN_ROW_SUM, MAX_ROW_SUM]``. The error names ``source`` and the row."""
    if not probs.is_floating_point():
        raise ValueError(f"{source} must hold finite, non-negative floats, got {probs.dtype}")
    check_dense_values(probs, source)
    size = probs.shape[1]
    if coding and not 2 <= size <= MAX_ALPHABET:
        raise ValueError(f"{source} has V={size} symbols (columns), the coder needs "
                         f"2..{MAX_ALPHABET}")
    if not probs.shape[0]:
        return
    table = probs.detach().double()  # what the coder sees
    low, high = (MIN_ROW_SUM, MAX_ROW_SUM) if coding else (0.0, math.inf)
    sums = table.sum(-1)
    problems = (
        ((~torch.isfinite(table)).any(-1), "holds NaN or infinite values: tables must be "
         "finite, non-negative floats"),
        ((table < 0).any(-1), "holds negative values: tables must be finite, non-negative "
         "floats"),
        (sums == 0, "sums to zero: every symbol needs some probability"),
        ((sums > high) | torch.isinf(sums), f"sums to {{sum:.3g}}, more than "
         f"{high if coding else 'float64 holds'}: scale the row down"),
        ((sums > 0) & (sums < low), f"sums to {{sum:.3g}}, less than {low}: the coder "
         "cannot normalize it, scale the row up"),
    )
    for rows, reason in problems:
        bad = rows.nonzero()
        if len(bad):
            row = int(bad[0, 0])
            raise ValueError(f"{source} row {row} {reason.format(sum=float(sums[row]))} "
                             f"({len(bad)} such row(s))")


def _as_numpy(probs: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(probs.detach().cpu().double().numpy())


def range_encode(symbols: torch.Tensor, probs: torch.Tensor) -> bytes:
    """Range-code ``symbols: [n]`` (ints in ``0..V-1``), symbol ``t`` with the table
    ``probs[t]: [V]`` (rows are normalized by the coder), into bytes.

    Returns:
        the compressed message: a header (:data:`STREAM_HEADER_BYTES` bytes: magic, version,
        symbol count, digest of the symbols, CRC32) and the coder's 32-bit words.

    Raises:
        ValueError: symbols out of range or more than :data:`MAX_SYMBOLS` of them, or tables
            the coder cannot take, naming the row: non-finite or negative values, ``V``
            outside ``2..MAX_ALPHABET``, a row sum of zero or outside
            ``[MIN_ROW_SUM, MAX_ROW_SUM]``.
    """
    _check_tables(symbols, probs)
    return pack_stream(KIND_RANGE, symbols.numel(), symbols.numel(), _encode_raw(symbols, probs),
                       symbol_digest(symbols))


def _encode_raw(symbols: torch.Tensor, probs: torch.Tensor) -> bytes:
    """The coder's words for ``symbols: [n]`` with ``probs: [n, V]``, checked by the caller."""
    constriction = load_constriction()
    encoder = constriction.stream.queue.RangeEncoder()
    if symbols.numel():
        encoder.encode(symbols.cpu().numpy().astype(np.int32),
                       constriction.stream.model.Categorical(perfect=False), _as_numpy(probs))
    return encoder.get_compressed().astype("<u4").tobytes()


def range_decode(data: bytes,
                 next_probs: Callable[[list[torch.Tensor]], torch.Tensor | None]) -> torch.Tensor:
    """Decode what :func:`range_encode` wrote, an autoregressive step at a time.

    Args:
        data: the compressed bytes.
        next_probs: called with the list of decoded chunks (int64 tensors, oldest first);
            returns the tables ``[m, V]`` of the next ``m >= 1`` symbols (checked as
            :func:`range_encode` checks its tables), or None when the message is complete.

    Returns:
        all decoded symbols, int64 ``[n]``.

    Raises:
        TypeError: ``next_probs`` is not callable.
        ValueError: a corrupt or truncated stream (header, length, CRC32), a stream of format
            version 1 (no digest), ``next_probs`` asking for more or fewer symbols than the
            stream holds, returning something other than a tensor ``[m, V]``, a table with no
            rows or one the coder cannot take, or
            decoded symbols that do not consume exactly the stream or do not match its
            digest (other tables than the encoder's).
    """
    check_function(next_probs, "next_probs", NEXT_PROBS_INSTEAD)
    stream = unpack_stream(data, KIND_RANGE)
    if stream.count != stream.symbols:
        raise ValueError(f"compressed range-coded symbols: header counts disagree "
                         f"({stream.count}, {stream.symbols})")
    return _decode_raw(stream, next_probs, "range-coded symbols")


# Why decoded symbols can differ from the encoded ones when the stream itself is intact.
OTHER_TABLES = ("decoded with another model (tables) than it was written with, or with the same "
                "model computing its tables a few ulps apart (another torch version or build, "
                "convolution backend such as oneDNN on or off, CPU type or device): decode "
                "with the model and machine setup that encoded")

def _decode_raw(stream: Stream, next_probs, what: str) -> torch.Tensor:
    """Decode exactly ``stream.symbols`` symbols ``[n]`` from the coder words of ``stream``
    and check them against its digest."""
    data, expected = stream.payload, stream.symbols
    if len(data) % WORD_BYTES:
        raise ValueError(f"compressed {what}: payload must be a multiple of {WORD_BYTES} bytes, "
                         f"got {len(data)}")
    constriction = load_constriction()
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4")
                                                     .astype(np.uint32))
    family = constriction.stream.model.Categorical(perfect=False)
    chunks: list[torch.Tensor] = []
    done = 0
    while (probs := next_probs(chunks)) is not None:
        if not torch.is_tensor(probs) or probs.dim() != 2:
            got = list(probs.shape) if torch.is_tensor(probs) else type(probs).__name__
            raise ValueError(f"next_probs must return [m, V] tables, got {got}")
        if not probs.shape[0]:  # no progress: the loop would never end
            raise ValueError(f"next_probs returned a table with no rows ({list(probs.shape)}) "
                             f"after {done} symbols: return None when the message is complete")
        check_probs(probs, f"next_probs's table after {done} symbols,")
        if done + probs.shape[0] > expected:
            raise ValueError(f"compressed {what}: the stream holds {expected} symbols, decoding "
                             f"asked for more ({done + probs.shape[0]}): corrupt stream or "
                             "another model than the encoder's")
        try:
            decoded = decoder.decode(family, _as_numpy(probs))
        except (ValueError, RuntimeError, AssertionError) as error:
            raise ValueError(f"compressed {what}: the decoder failed after {done} symbols "
                             f"({error}): corrupt stream or another model") from error
        chunks.append(torch.from_numpy(decoded.astype(np.int64)))
        done += probs.shape[0]
    if done != expected:
        raise ValueError(f"compressed {what}: decoding stopped after {done} of the stream's "
                         f"{expected} symbols: {OTHER_TABLES}")
    if not decoder.maybe_exhausted():
        raise ValueError(f"compressed {what}: the decoder did not consume exactly the stream: "
                         f"{OTHER_TABLES}")
    symbols = torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.long)
    if symbol_digest(symbols) != stream.digest:
        raise ValueError(f"compressed {what}: the decoded symbols do not match the stream's "
                         f"digest: {OTHER_TABLES}")
    return symbols


def information_bits(symbols: torch.Tensor, probs: torch.Tensor) -> float:
    """The ideal code length ``-sum_t log2 p_t(s_t)`` in bits, tables normalized per row.

    ``symbols: [n]``, ``probs: [n, V]``; what :func:`range_encode` approaches.
    """
    _check_tables(symbols, probs, coding=False)
    probs = probs.detach().double()  # a number, not a graph
    chosen = probs.gather(1, symbols.long()[:, None])[:, 0] / probs.sum(1)
    return float(-chosen.log().sum() / math.log(2))


# why a trial decode failed, for the encoders' errors (the coder needs bit-identical tables)
_ROUND_TRIP_HELP = ("the coder quantizes every table to 24-bit fixed point, so a table that "
                    "differs by float rounding (1e-8) already moves symbols. Compute the tables "
                    "in float64 with a deterministic model (eval mode; on a GPU "
                    "torch.use_deterministic_algorithms(True)) whose numbers do not depend on "
                    "the batch shape")


def _lm_device(lm) -> torch.device:
    """Where decoding puts a Markov model's contexts: its ``powers`` buffer's device (as
    :class:`ppl_models.ngram.NGramModel`), else its first parameter's or buffer's, else the
    CPU."""
    if torch.is_tensor(getattr(lm, "powers", None)):
        return lm.powers.device
    if isinstance(lm, torch.nn.Module):
        for tensor in (*lm.parameters(), *lm.buffers()):
            return tensor.device
    return torch.device("cpu")


def _context_table(lm, key: tuple, device: torch.device) -> torch.Tensor:
    """``lm.conditional`` of one context ``key`` (``n - 1`` ids) as ``[1, n - 1]``: the call
    both :func:`encode_words` and :func:`decode_words` make, so that a deterministic model
    gives them bit-identical tables ``[1, V]`` (a batched call may round otherwise)."""
    with torch.no_grad():
        return lm.conditional(torch.tensor([key], dtype=torch.long, device=device)
                              .reshape(1, -1))


def encode_words(lm, x: torch.Tensor, verify: bool = True) -> bytes:
    """Code words ``x: [batch, max_len]`` (``Vocabulary.encode``) with a Markov language model.

    ``lm`` needs ``order``, ``vocab``, ``contexts(x)`` and ``conditional(contexts [..., n-1])
    -> [..., V]``, as :class:`ppl_models.ngram.NGramModel` has. The output is a stream
    header (word count, symbol count, digest of the symbols, CRC32) followed by the
    range-coded symbols, word after word, end symbols included.

    The tables are computed as :func:`decode_words` computes them: one ``conditional`` call
    per distinct context, of shape ``[1, n - 1]``, on the model's device (a batched call over
    all symbols rounds otherwise in float32, by 4e-8, which the coder's 24-bit tables do not
    absorb). With ``verify`` the stream is then decoded once, as :func:`decode_words` would,
    and compared with ``x``'s symbols, so bytes that cannot be decoded are never returned.
    Cost, about one :func:`decode_words` more (``examples/compression.py``'s 5-gram on the
    bundled word list, 543 test words, one busy CPU core): encoding takes 0.2 s without
    ``verify`` (0.03 s when all tables came from one batched call), 1.8 s with it; decoding
    0.7-1.4 s.

    Args:
        lm: the Markov model (:class:`~inference.protocols.MarkovTextModel`).
        x: ``[batch, max_len]`` ids as ``Vocabulary.encode`` gives them.
        verify: decode the stream before returning it (default). False skips that pass and
            risks bytes that :func:`decode_words` refuses (the words lost) when ``lm`` is
            not deterministic, gives other tables from call to call, or its ``contexts``
            disagree with decoding's (``BOS`` padding, the last ``n - 1`` symbols).

    Raises:
        TypeError: ``verify`` not a bool.
        ValueError: ``x`` not as ``Vocabulary.encode`` gives it, more than :data:`MAX_SYMBOLS`
            symbols, tables the coder cannot take, or (``verify``) a
            trial decode that fails or returns other symbols: the model's tables differ
            between the encoder's calls and the decoder's.
    """
    require(lm, MarkovTextModel, "lm")
    check_tensor_input(x, "x")
    _check_verify(verify)
    targets, contexts, mask = lm.contexts(x)
    _check_symbol_count(int(mask.sum()), "words")
    device = _lm_device(lm)
    cache: dict[tuple, torch.Tensor] = {}
    keys = [tuple(context) for context in contexts[mask].tolist()]  # [symbols] of n - 1 ids
    for key in keys:
        if key not in cache:
            cache[key] = _context_table(lm, key, device)
    symbols = targets[mask]
    if keys:
        tables = [cache[key] for key in keys]
        for table in cache.values():
            if not torch.is_tensor(table) or table.dim() != 2 or table.shape[0] != 1:
                got = list(table.shape) if torch.is_tensor(table) else type(table).__name__
                raise ValueError(f"lm.conditional must return [1, V] for one context "
                                 f"[1, {lm.order - 1}], got {got}")
        probs = torch.cat(tables)  # [symbols, V]
    else:
        probs = torch.ones(0, lm.vocab.num_outputs, dtype=torch.float64)
    _check_tables(symbols, probs)
    data = pack_stream(KIND_WORDS, len(x), symbols.numel(), _encode_raw(symbols, probs),
                       symbol_digest(symbols))
    if verify:
        try:
            decoded = _decode_word_symbols(lm, unpack_stream(data, KIND_WORDS))
            problem = None if decoded == symbols.tolist() else "it returned other symbols"
        except ValueError as error:
            problem = f"{error}"
        if problem is not None:
            raise ValueError(
                f"encode_words: a trial decode of the stream failed ({problem}): lm's tables "
                "differ between encoding's calls and decoding's (one context [1, n - 1] at a "
                "time, on the model's device), so decode_words could not read these bytes: "
                "lm.conditional is not deterministic, or its contexts() are not decoding's; "
                f"{_ROUND_TRIP_HELP}")
    return data


def _check_verify(verify) -> None:
    if not isinstance(verify, bool):
        raise TypeError(f"verify must be True or False, got {verify!r}")


def decode_words(lm, data: bytes) -> torch.Tensor:
    """Invert :func:`encode_words`: bytes -> ``x: [batch, max_len]`` as ``Vocabulary.encode``
    gives it (padded to the longest decoded word).

    Raises:
        ValueError: as :func:`range_decode`, for another ``lm`` (vocabulary, counts) than the
            encoder's too.
    """
    require(lm, MarkovTextModel, "lm")
    stream = unpack_stream(data, KIND_WORDS)
    symbols = _decode_word_symbols(lm, stream)
    vocab = lm.vocab
    words, current = [], []
    for symbol in symbols:
        if symbol == vocab.EOS:
            words.append(current)
            current = []
        else:
            current.append(symbol)
    if not words:
        raise ValueError("the compressed message holds no words")
    max_len = max(map(len, words)) + 1
    return torch.tensor([w + [vocab.EOS] + [vocab.pad] * (max_len - len(w) - 1) for w in words],
                        dtype=torch.long)


def _decode_word_symbols(lm, stream: Stream) -> list[int]:
    """The coded symbols (end symbols included) of a checked words ``stream``, one
    :func:`_context_table` call per distinct context."""
    num_words, num_symbols = stream.count, stream.symbols
    if num_words > num_symbols:
        raise ValueError(f"compressed words: {num_words} words cannot fit in {num_symbols} "
                         "symbols (each ends with an end symbol)")
    vocab, start = lm.vocab, [lm.vocab.bos] * (lm.order - 1)
    state = {"context": list(start), "words": 0, "seen": 0}
    cache: dict[tuple, torch.Tensor] = {}  # one table per distinct context: same numbers
    device = _lm_device(lm)

    def next_probs(chunks):
        if chunks and len(chunks) > state["seen"]:
            symbol = int(chunks[-1][0])
            state["seen"] = len(chunks)
            if symbol == vocab.EOS:
                state["words"] += 1
                state["context"] = list(start)
            elif lm.order > 1:
                state["context"] = state["context"][1:] + [symbol]
        if state["words"] == num_words:
            return None
        key = tuple(state["context"])
        if key not in cache:
            cache[key] = _context_table(lm, key, device)
        return cache[key]

    return _decode_raw(stream, next_probs, "words").tolist()


def _check_pixel_tables(probs, symbols: torch.Tensor) -> None:
    """Refuse what ``pixel_probs`` returned unless it is a tensor ``[batch, C, H, W, V]`` for
    ``symbols: [batch, C, H, W]`` (its values are checked with the tables)."""
    if not torch.is_tensor(probs):
        raise ValueError(f"pixel_probs must return a tensor [batch, C, H, W, V] for symbols "
                         f"{list(symbols.shape)}, got {type(probs).__name__}")
    if probs.dim() != 5 or probs.shape[:-1] != symbols.shape:
        raise ValueError(f"pixel_probs must return [batch, C, H, W, V] for symbols "
                         f"{list(symbols.shape)}, got {list(probs.shape)}")


def encode_images(pixel_probs: Callable[[torch.Tensor], torch.Tensor],
                  symbols: torch.Tensor, verify: bool = True) -> bytes:
    """Code images with an autoregressive model in raster order (rows, columns, channels).

    The tables are computed in one ``pixel_probs`` call on the whole images; decoding
    computes them position by position on partly decoded images (the earlier pixels, zeros
    from the decoded one on), and the coder needs them bit-identical. Three more calls check
    for the common mistakes first, with a message that names them (dropout in training mode,
    a table that sees its own pixel or a later one); with ``verify`` (the default) the
    stream is then decoded once, exactly as :func:`decode_images` does on ``symbols``'s
    device, and compared with ``symbols``, so bytes that cannot be decoded are never
    returned. That decode costs what :func:`decode_images` costs, one ``pixel_probs`` call
    per pixel position: on the 300 binarized 8x8 test digits of ``examples/compression.py``
    (one busy CPU core) encoding takes 0.7-1.4 s without it and 10 s with it with the
    example's PixelCNN (32 channels, 4 blocks; decoding 7-11 s), 0.01 s and 0.03 s with
    independent pixels.

    Args:
        pixel_probs: ``symbols [batch, C, H, W]`` int64 -> ``p(x_i | x_<i)`` for every pixel,
            ``[batch, C, H, W, V]``, where pixel ``i`` may depend only on the pixels before it
            in raster order (a PixelCNN; or no pixel at all, an independent-pixel model).
        symbols: integers ``[batch, C, H, W]`` in ``0..V-1`` (0/1 for binary images, levels
            for 8-bit ones) of a dtype in :data:`SYMBOL_DTYPES`, passed on as int64.
        verify: decode the stream before returning it (default). False skips that pass and
            risks bytes that :func:`decode_images` refuses (the images lost) when the tables
            on decoding's partial images differ from the whole images' by as little as float
            rounding (a non-deterministic GPU kernel, a convolution algorithm that does not
            cancel masked terms exactly, a dependence on later pixels the three checks do not
            see).

    Returns:
        a stream header (image count, pixel count, shape tag, digest of the pixels, CRC32),
        then the range-coded pixels, pixel position by position (all images of the batch at
        each position), the order :func:`decode_images` reads them in.

    Raises:
        TypeError: ``pixel_probs`` is not callable, ``symbols`` not a tensor, or ``verify``
            not a bool.
        ValueError: symbols that are not integers ``[batch, C, H, W]`` or hold more than
            :data:`MAX_SYMBOLS` pixels, ``pixel_probs`` returning
            something other than a tensor ``[batch, C, H, W, V]``, tables that the coder
            cannot take, or tables that decoding could not rebuild: other tables on a second
            call, a model that is not causal, or (``verify``) a trial decode that fails or
            returns other images (the tables differ between the encoder's batched call and
            the decoder's position-by-position calls: not causal, not deterministic, or
            float rounding that depends on the later pixels).
    """
    check_function(pixel_probs, "pixel_probs", PIXEL_PROBS_INSTEAD)
    if not torch.is_tensor(symbols):
        raise TypeError(f"symbols must be an int64 tensor [batch, C, H, W] (or another of "
                        f"{_SYMBOL_DTYPE_NAMES}), got {type(symbols).__name__}")
    if symbols.dim() != 4 or symbols.dtype not in SYMBOL_DTYPES or not all(symbols.shape):
        raise ValueError(f"symbols must be integers ({_SYMBOL_DTYPE_NAMES}) [batch, C, H, W] "
                         f"with no empty dim, got {symbols.dtype} {list(symbols.shape)}")
    check_dense_values(symbols, "symbols")
    _check_symbol_count(symbols.numel(), "images")
    _check_verify(verify)
    # in torch's default layout, which decoding builds its partial images in: a
    # channels_last batch takes other convolution kernels, whose tables differ in the last bits
    symbols = symbols.long().contiguous()
    with torch.no_grad():  # a copy: a pixel_probs that changes its input in place must not
        probs = pixel_probs(symbols.clone())  # change the pixels coded (or the caller's)
    _check_pixel_tables(probs, symbols)
    order = symbols.permute(2, 3, 1, 0).reshape(-1)  # [H * W * C * batch], raster order
    tables = probs.permute(2, 3, 1, 0, 4).reshape(order.shape[0], -1)  # [..., V]
    # the values first: NaN tables differ from themselves, and were blamed on dropout
    _check_tables(order, tables)
    _check_decodable(pixel_probs, symbols, probs)
    data = pack_stream(KIND_IMAGES, len(symbols), order.numel(), _encode_raw(order, tables),
                       symbol_digest(order), extra=_shape_tag(symbols.shape[1:]))
    if verify:
        try:
            decoded = _decode_image_stream(pixel_probs, unpack_stream(data, KIND_IMAGES),
                                           tuple(symbols.shape[1:]), symbols.device)
            problem = None if torch.equal(decoded, symbols) else "it returned other images"
        except ValueError as error:
            problem = f"{error}"
        if problem is not None:
            raise ValueError(
                f"encode_images: a trial decode of the stream failed ({problem}): "
                "pixel_probs gives other tables on decoding's partly decoded images (the "
                "earlier pixels, zeros from the decoded one on; one call per position) than "
                "on the whole images in one call, so decode_images could not read these "
                "bytes: it is not causal (a pixel's table reads a later pixel), not "
                "deterministic, or its float rounding depends on the later pixels; "
                f"{_ROUND_TRIP_HELP}")
    return data


def _check_decodable(pixel_probs, symbols: torch.Tensor, probs: torch.Tensor) -> None:
    """``ValueError`` naming the common reasons why :func:`decode_images` could not rebuild
    the tables ``probs`` (``[batch, C, H, W, V]``) that code ``symbols``: ``pixel_probs``
    gives other tables on a second call with the same images (dropout in training mode:
    call ``.eval()``), or a pixel's table changes when only that pixel and later ones in
    raster order change, in any image of the batch (the model is not causal, so decoding,
    whose canvas holds only the earlier pixels of every image and zeros from the pixel being
    decoded on, gets other tables): a table that sees its own pixel (a PixelCNN whose first
    layer has a type-'B' mask) or another image's pixel at the same position (statistics
    over the batch). The pixels are changed, in every image at once as decoding has them,
    from the middle position of the image on and from its first one.

    A diagnosis, not a proof: the tables are compared up to a tolerance (rtol 1e-4, atol
    1e-6) so that these messages name gross mistakes, and a dependence on one later pixel
    between the two positions, or one that adding 1 to every later pixel leaves unchanged,
    is not seen. The coder needs bit-identical tables: only :func:`encode_images`'s trial
    decode (``verify``) proves that a stream decodes."""
    num_values = probs.shape[-1]
    flat = symbols.permute(0, 2, 3, 1).reshape(len(symbols), -1)  # raster order per image
    with torch.no_grad():
        again = pixel_probs(symbols.clone())
        if not torch.allclose(again, probs, rtol=1e-4, atol=1e-6):
            raise ValueError(
                "pixel_probs gave other tables on a second call with the same images (dropout "
                "or another random layer in training mode? call .eval() on the model): "
                "decoding could not rebuild them, so the stream could not be decoded")
        for position in sorted({0, flat.shape[1] // 2}):
            changed = flat.clone()
            changed[:, position:] = (changed[:, position:] + 1) % num_values
            images = changed.reshape(len(symbols), *symbols.shape[2:], symbols.shape[1])
            moved = pixel_probs(images.permute(0, 3, 1, 2).contiguous())
            before = probs.permute(0, 2, 3, 1, 4).reshape(len(symbols), -1, num_values)
            after = moved.permute(0, 2, 3, 1, 4).reshape(len(symbols), -1, num_values)
            if not torch.allclose(before[:, :position + 1], after[:, :position + 1],
                                  rtol=1e-4, atol=1e-6):
                raise ValueError(
                    "pixel_probs is not causal: a pixel's table changes when only that pixel "
                    "and those after it in raster order (rows, columns, channels) change, in "
                    f"any image of the batch (from position {position + 1} of {flat.shape[1]} "
                    "on); decoding, which knows only the earlier pixels of each image, would "
                    "get other tables and the stream could not be decoded. Use a masked "
                    "(autoregressive) model whose first layer does not see the pixel itself "
                    "(mask type 'A'), with no statistics across the batch")


def _shape_tag(image_shape) -> int:
    """A 16-bit tag of ``(C, H, W)``, in the images stream's header so that decoding with
    another shape of the same pixel count is refused."""
    return zlib.crc32(struct.pack("<3Q", *image_shape)) & 0xFFFF


def decode_images(pixel_probs: Callable[[torch.Tensor], torch.Tensor], data: bytes,
                  image_shape: tuple[int, int, int], device=None) -> torch.Tensor:
    """Invert :func:`encode_images`: one ``pixel_probs`` pass per pixel position over the
    partly decoded batch (undecoded pixels are 0 and must not matter).

    Args:
        pixel_probs: the same function :func:`encode_images` was given (the same model and
            tables): ``symbols [batch, C, H, W]`` int64 -> ``[batch, C, H, W, V]``.
        data: the bytes :func:`encode_images` returned.
        image_shape: ``(C, H, W)``, three positive integers: a tuple or list (numpy integers
            accepted) or a 1-D integer array.
        device: where the images are decoded: None (the CPU), or a CPU or CUDA device as
            :func:`inference.resolve_device` takes it (checked first).

    Returns:
        int64 symbols ``[batch, C, H, W]`` with ``image_shape = (C, H, W)``.

    Raises:
        TypeError: ``pixel_probs`` is not callable.
        ValueError: as :func:`range_decode` (another model: the pixels do not match the
            stream's digest; ``pixel_probs`` returning something other than a tensor
            ``[batch, C, H, W, V]``), or an ``image_shape`` other than the encoder's.
    """
    check_function(pixel_probs, "pixel_probs", PIXEL_PROBS_INSTEAD)
    device = torch.device("cpu") if device is None else resolve_device(device)
    try:
        shape = as_int_list(image_shape, "image_shape")
    except ValueError:
        shape = None
    if shape is None or len(shape) != 3:
        raise ValueError(f"image_shape must be three positive ints (C, H, W), got {image_shape!r}")
    image_shape = tuple(shape)
    return _decode_image_stream(pixel_probs, unpack_stream(data, KIND_IMAGES), image_shape,
                                device)


def _decode_image_stream(pixel_probs, stream: Stream, image_shape: tuple[int, int, int],
                         device: torch.device) -> torch.Tensor:
    """The images ``[batch, C, H, W]`` (int64, on ``device``) of a checked images
    ``stream``: one ``pixel_probs`` call per pixel position on the partly decoded batch."""
    batch, num_symbols = stream.count, stream.symbols
    channels, height, width = image_shape
    if (batch * channels * height * width != num_symbols
            or stream.extra != _shape_tag(image_shape)):
        raise ValueError(f"compressed images: the stream holds {batch} images of "
                         f"{num_symbols // max(batch, 1)} pixels coded with another shape than "
                         f"{tuple(image_shape)}: wrong image_shape?")
    canvas = torch.zeros(batch, channels, height, width, dtype=torch.long, device=device)
    positions = [(i, j, c) for i in range(height) for j in range(width) for c in range(channels)]

    def next_probs(chunks):
        if chunks:
            i, j, c = positions[len(chunks) - 1]
            canvas[:, c, i, j] = chunks[-1].to(canvas.device)
        if len(chunks) == len(positions):
            return None
        i, j, c = positions[len(chunks)]
        with torch.no_grad():
            probs = pixel_probs(canvas.clone())  # as encode_images: its own copy
        _check_pixel_tables(probs, canvas)
        return probs[:, c, i, j]  # [batch, V]

    _decode_raw(stream, next_probs, "images")
    return canvas
