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
symbol at least ``2^-24``), which costs a fraction of a percent on ordinary messages.

References:
    [1] Bamler (2022), Understanding entropy coding with asymmetric numeral systems (ANS): a
        statistician's perspective, arXiv:2201.01741; the ``constriction`` library.
    [2] Witten, Neal, Cleary (1987), Arithmetic coding for data compression, Communications
        of the ACM 30(6), 520-540.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..protocols import MarkovTextModel, require

WORD_BYTES = 4  # constriction emits 32-bit words


def load_constriction():
    """The ``constriction`` module, or an ImportError that says how to install it."""
    try:
        import constriction
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("range coding needs the `constriction` package "
                          "(pip install constriction)") from error
    return constriction


def _check_tables(symbols: torch.Tensor, probs: torch.Tensor) -> None:
    if symbols.dim() != 1 or probs.dim() != 2 or probs.shape[0] != symbols.shape[0]:
        raise ValueError(f"need symbols [n] and probs [n, V], got {list(symbols.shape)} and "
                         f"{list(probs.shape)}")
    if symbols.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"symbols must be integers, got {symbols.dtype}")
    if symbols.numel() and (symbols.min() < 0 or symbols.max() >= probs.shape[1]):
        raise ValueError(f"symbols must lie in 0..{probs.shape[1] - 1}, got range "
                         f"[{int(symbols.min())}, {int(symbols.max())}]")
    _check_probs(probs)


def _check_probs(probs: torch.Tensor) -> None:
    if not probs.is_floating_point() or not torch.isfinite(probs).all() or (probs < 0).any():
        raise ValueError("probability tables must be finite, non-negative floats")


def _as_numpy(probs: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(probs.detach().cpu().double().numpy())


def range_encode(symbols: torch.Tensor, probs: torch.Tensor) -> bytes:
    """Range-code ``symbols: [n]`` (ints in ``0..V-1``), symbol ``t`` with the table
    ``probs[t]: [V]`` (rows are normalized by the coder), into bytes.

    Returns:
        the compressed message, a multiple of 4 bytes.
    """
    _check_tables(symbols, probs)
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
            returns the tables ``[m, V]`` of the next ``m`` symbols, or None when the message
            is complete.

    Returns:
        all decoded symbols, int64 ``[n]``.
    """
    if len(data) % WORD_BYTES:
        raise ValueError(f"compressed data must be a multiple of {WORD_BYTES} bytes, "
                         f"got {len(data)}")
    constriction = load_constriction()
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4")
                                                     .astype(np.uint32))
    family = constriction.stream.model.Categorical(perfect=False)
    chunks: list[torch.Tensor] = []
    while (probs := next_probs(chunks)) is not None:
        if probs.dim() != 2:
            raise ValueError(f"next_probs must return [m, V] tables, got {list(probs.shape)}")
        _check_probs(probs)
        chunks.append(torch.from_numpy(decoder.decode(family, _as_numpy(probs)).astype(np.int64)))
    return torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.long)


def information_bits(symbols: torch.Tensor, probs: torch.Tensor) -> float:
    """The ideal code length ``-sum_t log2 p_t(s_t)`` in bits, tables normalized per row.

    ``symbols: [n]``, ``probs: [n, V]``; what :func:`range_encode` approaches.
    """
    _check_tables(symbols, probs)
    probs = probs.double()
    chosen = probs.gather(1, symbols.long()[:, None])[:, 0] / probs.sum(1)
    return float(-chosen.log().sum() / math.log(2))


HEADER_BYTES = 4  # a little-endian uint32 count in front of the coded symbols


def encode_words(lm, x: torch.Tensor) -> bytes:
    """Code words ``x: [batch, max_len]`` (``Vocabulary.encode``) with a Markov language model.

    ``lm`` needs ``order``, ``vocab``, ``contexts(x)`` and ``conditional(contexts [..., n-1])
    -> [..., V]``, as :class:`ppl_models.ngram.NGramModel` has. The output is a 4-byte word
    count followed by the range-coded symbols, word after word, end symbols included.
    """
    require(lm, MarkovTextModel, "lm")
    targets, contexts, mask = lm.contexts(x)
    with torch.no_grad():
        probs = lm.conditional(contexts)[mask]  # [symbols, V]
    return len(x).to_bytes(HEADER_BYTES, "little") + range_encode(targets[mask], probs)


def decode_words(lm, data: bytes) -> torch.Tensor:
    """Invert :func:`encode_words`: bytes -> ``x: [batch, max_len]`` as ``Vocabulary.encode``
    gives it (padded to the longest decoded word)."""
    require(lm, MarkovTextModel, "lm")
    if len(data) < HEADER_BYTES:
        raise ValueError(f"compressed words need a {HEADER_BYTES}-byte header, got {len(data)} "
                         "bytes")
    num_words = int.from_bytes(data[:HEADER_BYTES], "little")
    vocab, start = lm.vocab, [lm.vocab.bos] * (lm.order - 1)
    state = {"context": list(start), "words": 0, "seen": 0}
    cache: dict[tuple, torch.Tensor] = {}  # one table per distinct context: same numbers

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
            device = lm.powers.device if hasattr(lm, "powers") else None
            with torch.no_grad():
                cache[key] = lm.conditional(torch.tensor([key], dtype=torch.long,
                                                         device=device).reshape(1, -1))
        return cache[key]

    symbols = range_decode(data[HEADER_BYTES:], next_probs).tolist()
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


def _check_pixel_tables(probs: torch.Tensor, symbols: torch.Tensor) -> None:
    if probs.shape[:-1] != symbols.shape:
        raise ValueError(f"pixel_probs must return [batch, C, H, W, V] for symbols "
                         f"{list(symbols.shape)}, got {list(probs.shape)}")


def encode_images(pixel_probs: Callable[[torch.Tensor], torch.Tensor],
                  symbols: torch.Tensor) -> bytes:
    """Code images with an autoregressive model in raster order (rows, columns, channels).

    Args:
        pixel_probs: ``symbols [batch, C, H, W]`` int64 -> ``p(x_i | x_<i)`` for every pixel,
            ``[batch, C, H, W, V]``, where pixel ``i`` may depend only on the pixels before it
            in raster order (a PixelCNN; or no pixel at all, an independent-pixel model).
        symbols: int64 ``[batch, C, H, W]`` in ``0..V-1`` (0/1 for binary images, levels for
            8-bit ones).

    Returns:
        a 4-byte image count, then the range-coded pixels, pixel position by position (all
        images of the batch at each position), the order :func:`decode_images` reads them in.
    """
    if symbols.dim() != 4 or symbols.dtype != torch.long:
        raise ValueError(f"symbols must be int64 [batch, C, H, W], got {symbols.dtype} "
                         f"{list(symbols.shape)}")
    with torch.no_grad():
        probs = pixel_probs(symbols)
    _check_pixel_tables(probs, symbols)
    order = symbols.permute(2, 3, 1, 0).reshape(-1)  # [H * W * C * batch], raster order
    tables = probs.permute(2, 3, 1, 0, 4).reshape(order.shape[0], -1)  # [..., V]
    return len(symbols).to_bytes(HEADER_BYTES, "little") + range_encode(order, tables)


def decode_images(pixel_probs: Callable[[torch.Tensor], torch.Tensor], data: bytes,
                  image_shape: tuple[int, int, int], device=None) -> torch.Tensor:
    """Invert :func:`encode_images`: one ``pixel_probs`` pass per pixel position over the
    partly decoded batch (undecoded pixels are 0 and must not matter).

    Returns:
        int64 symbols ``[batch, C, H, W]`` with ``image_shape = (C, H, W)``.
    """
    if len(data) < HEADER_BYTES:
        raise ValueError(f"compressed images need a {HEADER_BYTES}-byte header, got "
                         f"{len(data)} bytes")
    channels, height, width = image_shape
    batch = int.from_bytes(data[:HEADER_BYTES], "little")
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
            probs = pixel_probs(canvas)
        _check_pixel_tables(probs, canvas)
        return probs[:, c, i, j]  # [batch, V]

    range_decode(data[HEADER_BYTES:], next_probs)
    return canvas
