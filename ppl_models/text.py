"""Words as character sequences: word lists, fixed splits, and a character vocabulary.

Sources, as chosen by :func:`load_words`:

- the English word list of the Debian package ``wamerican`` (``/usr/share/dict/words``,
  104,334 lines in version 2020.12.07). :func:`clean_word_list` keeps the lines that are
  lowercase ASCII words, ``[a-z]+``, once each: possessives (``aardvark's``, 29,497 lines),
  capitalized names and acronyms (``Aachen``, ``AMD``) and accented words (``éclair``) are
  dropped, leaving 63,875 words;
- when that file is missing, ``ppl_models/corpora/words_small.txt``: 5,429 common English words
  (base forms, inflections, animals, foods, tools, adjectives, adverbs) written for this
  repository, one per line, every one also in ``wamerican``; the same filter applies;
- any text file named by the user: one sequence per line (lines end at ``\n`` only),
  stripped of surrounding whitespace, blank lines skipped, nothing else filtered or
  deduplicated (inner spaces and punctuation become characters of the vocabulary; a word
  listed several times keeps its copies, all in one split); a line longer than ``max_length``
  characters (default :data:`MAX_WORD_LENGTH`, 100) is refused, since batches are padded to
  their longest word.

Encoding (:class:`Vocabulary`): a word ``c_1 ... c_m`` is scored as the ``m + 1`` symbols
``c_1 ... c_m EOS``, so every model also predicts where the word ends and the probabilities of
all finite words sum to one. A batch is a LongTensor ``x: [batch, max_len]`` padded with
``PAD`` after the end symbol. ``BOS`` never appears in ``x``: models use it to fill the
context before the first character.
"""

from __future__ import annotations

import codecs
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from .checks import (CHECK_WEIGHTS_HINT, as_int, as_number, as_path, check_bytes, check_memory,
                     check_has_values, check_not_special, check_word_draws, name_rows)

logger = logging.getLogger(__name__)

WAMERICAN_PATH = Path("/usr/share/dict/words")
BUNDLED_PATH = Path(__file__).resolve().parent / "corpora" / "words_small.txt"
_LOWERCASE_WORD = re.compile(r"[a-z]+")


def _check_not_text(values, name: str) -> None:
    """``TypeError`` naming ``name`` when ``values``, where a sequence of words (or lines) is
    expected, is one ``str`` or ``bytes``: iterated, it would be single characters (or ints)."""
    if isinstance(values, (str, bytes, bytearray)):
        raise TypeError(f"{name} must be a sequence of words, got one {type(values).__name__} "
                        f"{values[:40]!r}; split it first, e.g. text.split() or "
                        f"text.splitlines() (bytes: decode them first)")


def _strings(values: Iterable[str], name: str) -> list[str]:
    """``values`` as a list, ``TypeError`` naming ``name`` unless it is an iterable of
    strings (a string is one of its characters each)."""
    try:
        items = list(values)
    except TypeError:
        raise TypeError(f"{name} must be an iterable of strings, got "
                        f"{type(values).__name__}") from None
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"{name} must hold strings, got {type(item).__name__} {item!r:.40}")
    return items


class Vocabulary:
    """Characters and the special symbols as integer ids.

    Ids: ``EOS = 0``, the characters ``1..C`` in sorted order, ``BOS = C + 1``,
    ``PAD = C + 2``. The symbols a model predicts are the first ``num_outputs = C + 1`` ids
    (end symbol and characters); ``num_symbols = C + 2`` ids (adding ``BOS``) can occur in a
    context; ``PAD`` only fills ``x`` after the end symbol.

    Args:
        characters: the alphabet (duplicates are ignored); default ``a-z``.
    """

    EOS = 0

    def __init__(self, characters: Iterable[str] = "abcdefghijklmnopqrstuvwxyz"):
        items = _strings(characters, "characters")
        chars = sorted(set(items))
        if not chars or any(len(c) != 1 for c in chars):
            raise ValueError(f"characters must be non-empty single characters, got {chars[:10]}")
        self.characters = tuple(chars)
        self.ids = {c: i + 1 for i, c in enumerate(chars)}
        self.num_outputs = len(chars) + 1
        self.num_symbols = len(chars) + 2
        self.bos = len(chars) + 1
        self.pad = len(chars) + 2

    @classmethod
    def from_words(cls, words: Iterable[str]) -> Vocabulary:
        """The vocabulary of every character that occurs in ``words`` (strings)."""
        _check_not_text(words, "words")
        characters = set().union(*map(set, _strings(words, "words")))
        if not characters:
            raise ValueError("words hold no character: a vocabulary needs one at least")
        return cls(characters)

    def __len__(self) -> int:
        return len(self.characters)

    def __repr__(self) -> str:
        return f"Vocabulary({''.join(self.characters)!r})"

    def encode(self, words: Sequence[str], max_len: int | None = None) -> torch.Tensor:
        """Words -> ``x: [len(words), max_len]`` int64: characters, ``EOS``, then ``PAD``.

        ``max_len`` defaults to the longest word plus one (its end symbol).

        Raises:
            ValueError: a character outside the vocabulary (the first offending word is
                named), no words, or a ``max_len`` too short for the longest word.
            TypeError: ``words`` is one ``str`` or ``bytes`` (split it), or holds non-strings.
        """
        _check_not_text(words, "words")
        if not hasattr(words, "__len__") or len(words) == 0:
            raise ValueError("words must be a non-empty sequence of strings, got "
                             f"{words!r:.60}")
        for word in words:
            if not isinstance(word, str):
                raise TypeError(f"words must be strings, got {word!r:.40} "
                                f"({type(word).__name__}) among them")
        longest = max(map(len, words)) + 1
        if max_len is None:
            max_len = longest
        elif as_int(max_len, "max_len") < longest:
            raise ValueError(f"max_len={max_len} cannot hold a word of {longest - 1} "
                             "characters and its end symbol")
        # the rows are Python lists first: about 8 bytes a symbol more than the tensor
        check_memory(2 * len(words) * max_len, torch.long,
                     f"max_len={max_len}: {len(words)} words padded to it")
        rows = []
        for word in words:
            unknown = set(word) - self.ids.keys()
            if unknown:
                raise ValueError(f"word {word!r} has characters outside the vocabulary: "
                                 f"{sorted(unknown)} (vocabulary: {''.join(self.characters)!r})")
            rows.append([self.ids[c] for c in word] + [self.EOS]
                        + [self.pad] * (max_len - len(word) - 1))
        return torch.tensor(rows, dtype=torch.long)

    def decode(self, x: torch.Tensor) -> list[str]:
        """``x: [batch, max_len]`` integer ids as :meth:`encode` gives them (characters, one
        end symbol, then ``PAD``) -> the words.

        Raises:
            TypeError: ``x`` is not a tensor of integer ids (a float or bool tensor, a list).
            ValueError: ``x`` is not two-dimensional, or not as :meth:`check` wants it (ids
                outside ``0..PAD`` or ``BOS``, a row without its one end symbol, ``PAD`` inside
                a word): such rows were read as some word, where :meth:`check` refuses them.
        """
        if not torch.is_tensor(x):
            raise TypeError(f"x must be a torch.Tensor of integer ids [batch, length], got "
                            f"{type(x).__name__}")
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"x must hold integer ids [batch, length], got {x.dtype}")
        if x.dim() != 2:
            raise ValueError(f"x must have shape [batch, length], got {list(x.shape)}")
        if not x.shape[0]:
            return []
        self.check(x.long())
        return ["".join(self.characters[i - 1] for i in row if 1 <= i <= len(self.characters))
                for row in x.tolist()]

    def lengths(self, x: torch.Tensor) -> torch.Tensor:
        """Scored symbols per word, end symbol included: ``x: [batch, max_len]`` -> ``[batch]``;
        ``x`` as :meth:`encode` returns it (``ValueError`` otherwise, as :meth:`check`)."""
        self.check(x)
        return (x != self.pad).sum(1)

    def check(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise ``ValueError`` unless ``x`` is what :meth:`encode` returns.

        That is an int64 tensor ``[batch, max_len]`` of ids in ``0..PAD`` without ``BOS``,
        where every row holds exactly one end symbol and ``PAD`` at exactly the positions
        after it.
        """
        if not torch.is_tensor(x) or x.dtype != torch.long:
            raise ValueError(f"{name} must be an int64 tensor of symbol ids (Vocabulary.encode), "
                             f"got {getattr(x, 'dtype', type(x).__name__)}")
        if x.dim() != 2 or x.shape[0] < 1 or x.shape[1] < 1:
            raise ValueError(f"{name} must have shape [batch, max_len] with both >= 1, "
                             f"got {list(x.shape)}")
        check_has_values(x, name)
        low, high = int(x.min()), int(x.max())
        if low < 0 or high > self.pad or (x == self.bos).any():
            raise ValueError(f"{name} must hold ids in 0..{self.pad} other than BOS={self.bos} "
                             f"(vocabulary of {len(self)} characters), got range [{low}, {high}]")
        is_end = x == self.EOS
        bad = (is_end.sum(1) != 1).nonzero().flatten()
        if len(bad):
            raise ValueError(f"every row of {name} needs exactly one end symbol (id "
                             f"{self.EOS}); rows {bad.tolist()[:5]} do not")
        end = is_end.long().argmax(1, keepdim=True)  # [batch, 1]
        after = torch.arange(x.shape[1], device=x.device) > end  # [batch, max_len]
        bad = ((x == self.pad) != after).any(1).nonzero().flatten()
        if len(bad):
            raise ValueError(f"rows {bad.tolist()[:5]} of {name} are not padded with PAD="
                             f"{self.pad} exactly after their end symbol")


@torch.no_grad()
def draw_words(vocab: Vocabulary, next_probs: Callable[[torch.Tensor], torch.Tensor], num: int,
               generator: torch.Generator | None = None, max_length: int = 100,
               device: torch.device | None = None, what: str = "draw_words") -> list[str]:
    """Draw ``num`` words symbol by symbol from a sequence model.

    ``next_probs(previous: [num]) -> [num, V]`` gives the next symbol's probabilities; it is
    called first with ``BOS`` and then with each drawn symbol, and may keep state (a context
    or a recurrent state) between calls. A word still unfinished after ``max_length``
    characters is returned cut there. ``num`` and ``max_length`` are positive integers.
    Probabilities that are NaN, infinite, negative or all zero in a row (a network with NaN
    weights) raise ``FloatingPointError`` naming ``what`` (the caller), the symbol and the
    rows, before they reach ``torch.multinomial`` (a device-side assert on CUDA).
    """
    check_word_draws(num, generator, max_length, device)
    num, max_length = as_int(num, "num"), as_int(max_length, "max_length")
    step = torch.full((num,), vocab.bos, device=device)
    symbols = []
    done = torch.zeros(num, dtype=torch.bool, device=device)
    for k in range(max_length):
        probs = next_probs(step)  # [num, V]
        bad = ~(torch.isfinite(probs).all(-1) & (probs >= 0).all(-1) & (probs.sum(-1) > 0))
        if bool(bad.any()):  # one host read per symbol, as `done.all()` below
            raise FloatingPointError(f"{what}: the next-symbol probabilities for symbol {k + 1} "
                                     f"are NaN, infinite, negative or all zero in "
                                     f"{name_rows(bad)}; {CHECK_WEIGHTS_HINT}")
        step = torch.multinomial(probs, 1, generator=generator)[:, 0]
        step = torch.where(done, vocab.EOS, step)  # [num]
        symbols.append(step)
        done |= step == vocab.EOS
        if done.all():
            break
    # an end symbol after the words cut at max_length, PAD after each word's end (as encode)
    x = torch.stack([*symbols, torch.full_like(step, vocab.EOS)], 1)  # [num, length + 1]
    end = (x == vocab.EOS).long().argmax(1, keepdim=True)
    x = torch.where(torch.arange(x.shape[1], device=x.device) > end, vocab.pad, x)
    return vocab.decode(x)


@dataclass(frozen=True)
class WordData:
    """Fixed ``train``/``valid``/``test`` lists of words and where they came from.

    ``source`` is ``"wamerican:<path>"``, ``"bundled:<path>"`` or ``"file:<path>"``.
    """

    train: list[str]
    valid: list[str]
    test: list[str]
    source: str

    def __post_init__(self) -> None:
        """The splits as lists (any sequence of strings is taken); ``TypeError`` for one
        string as a split (it would be read as its characters), a split of other items, or a
        ``source`` that is not a string."""
        for name in ("train", "valid", "test"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise TypeError(f"WordData: {name} must be a list of str, got "
                                f"{type(value).__name__}")
            value = list(value)
            if not all(isinstance(w, str) for w in value):
                raise TypeError(f"WordData: {name} must be a list of str, got other items")
            object.__setattr__(self, name, value)
        if not isinstance(self.source, str):
            raise TypeError(f"WordData: source must be a str, got {type(self.source).__name__}")

    @property
    def words(self) -> list[str]:
        """Every word: the training, validation and test splits, in that order."""
        return self.train + self.valid + self.test


def clean_word_list(lines: Iterable[str]) -> list[str]:
    """Lines of a word list -> the distinct lowercase ASCII words ``[a-z]+``, in file order.

    Surrounding whitespace is stripped; possessives (``"cat's"``) and anything else with a
    character outside ``a-z`` (capitals, accents, digits, hyphens) are dropped. ``lines`` is
    a sequence of strings; one ``str`` or ``bytes`` is refused (``TypeError``): split it.
    """
    _check_not_text(lines, "lines")
    words = (line.strip() for line in _strings(lines, "lines"))
    return list(dict.fromkeys(w for w in words if _LOWERCASE_WORD.fullmatch(w)))


def split_words(words: Sequence[str], valid_fraction: float = 0.1, test_fraction: float = 0.1,
                seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """Shuffle the distinct ``words`` with ``seed`` and cut ``train, valid, test`` lists.

    Of ``n`` distinct words, valid and test get ``max(1, round(fraction * n))`` each for a
    positive fraction, none (an empty list) for a fraction of 0; the rest is train. Every
    copy of a word goes where the word goes, so a held-out word is never also a training
    word (a list of distinct words is split as a plain shuffle of it). ``words`` are strings;
    one ``str`` or ``bytes`` is refused (``TypeError``): split it.
    """
    _check_not_text(words, "words")
    words = _strings(words, "words")
    valid_fraction, test_fraction = _check_fractions(valid_fraction, test_fraction)
    seed = as_int(seed, "seed", minimum=0)
    copies: dict[str, int] = {}
    for word in words:
        copies[word] = copies.get(word, 0) + 1
    distinct = list(copies)
    n = len(distinct)
    num_valid = max(1, round(valid_fraction * n)) if valid_fraction else 0
    num_test = max(1, round(test_fraction * n)) if test_fraction else 0
    if n - num_valid - num_test < 1:
        raise ValueError(f"{n} distinct words are too few for train, valid and test splits")
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [word for i in order for word in [distinct[i]] * copies[distinct[i]]]
    first_test = sum(copies[distinct[i]] for i in order[:num_valid])
    first_train = first_test + sum(copies[distinct[i]] for i in order[num_valid:num_valid +
                                                                           num_test])
    return shuffled[first_train:], shuffled[:first_test], shuffled[first_test:first_train]


def _check_fractions(valid_fraction, test_fraction) -> tuple[float, float]:
    """Both fractions as floats in ``[0, 1)`` whose sum leaves something for train
    (``ValueError`` naming them otherwise)."""
    valid_fraction = as_number(valid_fraction, "valid_fraction", 0, 1, high_open=True)
    test_fraction = as_number(test_fraction, "test_fraction", 0, 1, high_open=True)
    if valid_fraction + test_fraction >= 1:
        raise ValueError(f"valid_fraction={valid_fraction:g} and test_fraction="
                         f"{test_fraction:g} sum to {valid_fraction + test_fraction:g}, which "
                         f"leaves no words for train; their sum must be below 1")
    return valid_fraction, test_fraction


def _read_utf8(path: Path) -> str:
    """The text of ``path`` without a leading UTF-8 byte-order mark (which some editors write;
    it is no character of the first word); ``ValueError`` naming the file and the offset of
    the first byte that is not UTF-8. A file whose words would not fit in physical memory
    (:data:`WORD_LIST_MEMORY_FACTOR` bytes per byte) is refused before reading it."""
    size = path.stat().st_size
    check_bytes(WORD_LIST_MEMORY_FACTOR * size,
                f"{path}: a word list of {size:,} bytes, split into words with up to "
                f"{WORD_LIST_MEMORY_FACTOR}x that (a Python string per line); pass a smaller "
                f"list")
    data = path.read_bytes()
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as error:
        byte = error.object[error.start]
        # a byte-order mark names the encoding (Notepad's "Unicode" is UTF-16)
        utf16 = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        raise ValueError(f"{path} is not UTF-8 text: byte 0x{byte:02x} at offset "
                         f"{start + error.start} ({error.reason}); convert it, e.g. iconv -f "
                         f"{'utf-16' if utf16 else 'latin1'} -t utf-8") from error


MAX_WORD_LENGTH = 100
"""The longest word (line) :func:`load_words` accepts unless told otherwise, in characters:
every batch is padded to its longest word (:meth:`Vocabulary.encode`), so one line of a
million characters among a few hundred words would ask for hundreds of gigabytes. 100 is
more than four times the longest word of ``wamerican`` (22 letters) and the length at which
:func:`draw_words` cuts a sampled word."""


WORD_LIST_MEMORY_FACTOR = 40
"""Bytes of memory :func:`load_words` may take per byte of the file, its bound before reading:
each line becomes a Python string (about 50 bytes) held by several lists (8 bytes each), so
short lines cost most; measured with ``tracemalloc``: 20x for lines ``"a"``, 31x for ``"ab"``,
36x for ``"ab "`` (stripped into a second string), 30x for distinct 4-letter words."""


def load_words(path: str | Path | None = None, *, valid_fraction: float = 0.1,
               test_fraction: float = 0.1, seed: int = 0,
               max_length: int = MAX_WORD_LENGTH) -> WordData:
    """Load a word list and split it into fixed train/valid/test lists (see the module doc).

    Args:
        path: a text file with one word (or sequence) per line; None: ``wamerican``'s
            ``/usr/share/dict/words`` when present, else the bundled list (a warning says so).
        valid_fraction, test_fraction, seed: the split, fixed by ``seed``
            (:func:`split_words`); a fraction of 0 leaves that split empty (an empty list,
            which :meth:`Vocabulary.encode` refuses: do not score it).
        max_length: the most characters a word may have (a positive integer; default
            :data:`MAX_WORD_LENGTH`), since batches are padded to the longest word.

    Raises:
        FileNotFoundError: ``path`` names nothing.
        ValueError: ``path`` is a folder, a device or a pipe (not a regular file), the file
            is larger than physical memory over :data:`WORD_LIST_MEMORY_FACTOR`, the file is
            not UTF-8 text (named, with the offending byte), holds no
            words (after the filter for the default sources), or a word longer than
            ``max_length`` (the file, line number and length named).
    """
    max_length = as_int(max_length, "max_length")
    _check_fractions(valid_fraction, test_fraction)  # before reading any file
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str, a path or None, got {type(path).__name__}")
        path = as_path(path)  # a NUL byte in it named (os.stat said "embedded null byte")
        check_not_special(path, "read the word list")
        if not path.is_file():
            raise FileNotFoundError(f"no word list at {path}")
        try:
            lines = _read_utf8(path).split("\n")  # not splitlines: U+2028 is no line end here
            words = [w for w in (line.strip() for line in lines) if w]
        except MemoryError:  # a memory limit (ulimit -v, a container) below physical memory
            raise MemoryError(f"{path}: out of memory splitting a word list of "
                              f"{path.stat().st_size:,} bytes into words (up to "
                              f"{WORD_LIST_MEMORY_FACTOR}x that); pass a smaller list or raise "
                              f"the memory limit") from None
        source = f"file:{path}"
    else:
        if WAMERICAN_PATH.is_file():
            path, source = WAMERICAN_PATH, f"wamerican:{WAMERICAN_PATH}"
        else:
            path, source = BUNDLED_PATH, f"bundled:{BUNDLED_PATH}"
            logger.warning("%s not found (Debian package wamerican); using the bundled list %s",
                           WAMERICAN_PATH, BUNDLED_PATH)
        lines = _read_utf8(path).splitlines()
        words = clean_word_list(lines)
    longest = max(words, key=len, default="")
    if len(longest) > max_length:
        number = next(n for n, line in enumerate(lines, 1) if line.strip() == longest)
        raise ValueError(f"{path} line {number}: a word of {len(longest):,} characters, more "
                         f"than max_length={max_length} (every batch is padded to its longest "
                         f"word); shorten or drop that line")
    if not words:
        raise ValueError(f"{path} holds no words" + ("" if source.startswith("file:") else
                                                      " matching [a-z]+"))
    logger.info("loaded %d words from %s", len(words), source)
    train, valid, test = split_words(words, valid_fraction, test_fraction, seed)
    return WordData(train, valid, test, source)
