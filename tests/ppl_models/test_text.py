"""Word lists, splits and the character vocabulary."""

import logging
import re

import numpy as np
import pytest
import torch

from ppl_models import checks, text
from ppl_models.text import Vocabulary, clean_word_list, draw_words, load_words, split_words


def test_clean_word_list_keeps_distinct_lowercase_ascii_words():
    lines = ["A", "AA's", "aardvark", "aardvark's", "Aachen", "\u00e9clair", "cat", "cat",
             " dog \n", "x-ray", "mp3", ""]
    assert clean_word_list(lines) == ["aardvark", "cat", "dog"]


def test_bundled_list_is_small_clean_and_a_few_thousand_words():
    raw = text.BUNDLED_PATH.read_text().splitlines()
    assert text.BUNDLED_PATH.stat().st_size < 100_000
    assert clean_word_list(raw) == raw, "the bundled list should need no filtering"
    assert len(raw) > 3000


def test_default_source_is_wamerican_when_present(tmp_path, monkeypatch):
    words = tmp_path / "words"
    words.write_text("A\nAachen\nabacus\nabacus's\nabbey\nabbey's\nabbot\n\u00e9clair\n"
                     "ability\nable\nabout\nabove\n")
    monkeypatch.setattr(text, "WAMERICAN_PATH", words)
    data = load_words(valid_fraction=0.2, test_fraction=0.2)
    assert data.source == f"wamerican:{words}"
    assert sorted(data.words) == ["abacus", "abbey", "abbot", "ability", "able", "about",
                                  "above"]


def test_missing_wamerican_falls_back_to_the_bundled_list_and_says_so(tmp_path, monkeypatch,
                                                                      caplog):
    monkeypatch.setattr(text, "WAMERICAN_PATH", tmp_path / "missing")
    with caplog.at_level(logging.WARNING, logger="ppl_models.text"):
        data = load_words()
    assert data.source == f"bundled:{text.BUNDLED_PATH}"
    assert "bundled" in caplog.text and "wamerican" in caplog.text
    assert len(data.words) == len(text.BUNDLED_PATH.read_text().splitlines())


def test_a_named_file_is_read_line_by_line_without_the_word_filter(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("Anna\n\n  bob's  \nx-ray\r\nanna\nc\n")
    data = load_words(path, valid_fraction=0.2, test_fraction=0.2)
    assert data.source == f"file:{path}"
    assert sorted(data.words) == ["Anna", "anna", "bob's", "c", "x-ray"]


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no word list"):
        load_words(tmp_path / "absent.txt")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match="holds no words"):
        load_words(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="too few"):
        split_words(["a", "b"])


def test_split_is_fixed_by_the_seed_and_partitions_the_words():
    words = [f"w{i}" for i in range(100)]
    train, valid, test = split_words(words, 0.1, 0.2, seed=3)
    assert (len(train), len(valid), len(test)) == (70, 10, 20)
    assert sorted(train + valid + test) == sorted(words)
    assert split_words(words, 0.1, 0.2, seed=3) == (train, valid, test)
    assert split_words(words, 0.1, 0.2, seed=4)[2] != test


def test_encode_pads_after_the_end_symbol_and_decodes_back():
    vocab = Vocabulary("cab")
    assert vocab.characters == ("a", "b", "c") and vocab.num_outputs == 4
    assert (vocab.bos, vocab.pad, vocab.num_symbols) == (4, 5, 5)
    x = vocab.encode(["cab", "a", ""])
    assert torch.equal(x, torch.tensor([[3, 1, 2, 0], [1, 0, 5, 5], [0, 5, 5, 5]]))
    assert vocab.lengths(x).tolist() == [4, 2, 1]
    assert vocab.decode(x) == ["cab", "a", ""]
    assert vocab.encode(["ab"], max_len=6).shape == (1, 6)
    vocab.check(x)


def test_vocabulary_from_words_and_encoding_errors():
    vocab = Vocabulary.from_words(["hi there", "yo"])
    assert "".join(vocab.characters) == " ehiorty"
    with pytest.raises(ValueError, match=re.escape("'hello' has characters outside the "
                                                   "vocabulary: ['l']")):
        vocab.encode(["hey", "hello"])
    with pytest.raises(ValueError, match="max_len"):
        vocab.encode(["there"], max_len=5)
    with pytest.raises(ValueError, match="non-empty"):
        vocab.encode([])
    # ints, bytes or a tensor of ids are not words (len(3) or set(3) failed inside)
    for bad in ([3, 4], ["hi", b"yo"], [None]):
        with pytest.raises(TypeError, match=r"words must be strings, got .* \((int|bytes|"
                                            r"NoneType)\)"):
            vocab.encode(bad)
    with pytest.raises(ValueError, match="non-empty sequence of strings, got 7"):
        vocab.encode(7)


def test_check_rejects_malformed_tensors():
    vocab = Vocabulary("ab")  # EOS 0, a 1, b 2, BOS 3, PAD 4
    with pytest.raises(ValueError, match="int64"):
        vocab.check(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"\[batch, max_len\]"):
        vocab.check(torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="0..4"):
        vocab.check(torch.tensor([[1, 5, 0]]))
    with pytest.raises(ValueError, match="BOS"):
        vocab.check(torch.tensor([[3, 1, 0]]))
    with pytest.raises(ValueError, match="exactly one end symbol"):
        vocab.check(torch.tensor([[1, 2, 4], [1, 0, 0]]))
    with pytest.raises(ValueError, match="padded"):
        vocab.check(torch.tensor([[1, 4, 0]]))


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    # UnicodeDecodeError used to say neither which file nor where
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"cat\ncaf\xe9\n")
    with pytest.raises(ValueError, match=re.escape(f"{path} is not UTF-8 text: byte 0xe9 at "
                                                   "offset 7")):
        load_words(path)


@pytest.mark.parametrize("x, error, match", [
    (torch.tensor([1, 0]), ValueError, r"x must have shape \[batch, length\], got \[2\]"),
    (torch.tensor([[1.0, 0.0]]), TypeError, r"integer ids.*got torch.float32"),
    (torch.tensor([[True]]), TypeError, r"integer ids.*got torch.bool"),
    ([[1, 0]], TypeError, r"torch.Tensor.*got list"),
    (torch.tensor([[1, -1, 0]]), ValueError, r"ids in 0..4 other than BOS=3 .*got range \[-1, 1\]"),
    (torch.tensor([[1, 5, 0]]), ValueError, r"ids in 0..4 other than BOS=3 .*got range \[0, 5\]"),
    # read as some word, where log_prob and encode_words refuse them
    (torch.tensor([[1, 4, 2, 0]]), ValueError, r"rows \[0\] of x are not padded with PAD=4 "
     r"exactly after their end symbol"),
    (torch.tensor([[2, 0, 1, 1]]), ValueError, r"rows \[0\] of x are not padded with PAD=4"),
    (torch.tensor([[1, 2, 1]]), ValueError, r"needs exactly one end symbol \(id 0\); rows \[0\]"),
    (torch.tensor([[3, 1, 0]]), ValueError, r"other than BOS=3"),
], ids=["1-d", "float", "bool", "list", "negative", "beyond PAD", "PAD inside", "after the end",
        "no end", "BOS"])
def test_decode_refuses_what_it_cannot_read(x, error, match):
    # negative ids and ids beyond PAD were silently skipped, a 1-d tensor or float ids raised
    # TypeError from inside the loop
    with pytest.raises(error, match=match):
        Vocabulary("ab").decode(x)


def test_decode_reads_what_encode_gives():
    vocab = Vocabulary("ab")  # EOS 0, a 1, b 2, BOS 3, PAD 4
    assert vocab.decode(torch.tensor([[1, 2, 0], [2, 0, 4]])) == ["ab", "b"]
    assert vocab.decode(vocab.encode(["", "ba", "a"]).int()) == ["", "ba", "a"]
    assert vocab.decode(torch.zeros(0, 3, dtype=torch.long)) == []


def test_a_byte_order_mark_is_no_character(tmp_path):
    # the first word kept U+FEFF, a character of the vocabulary
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfcat\ndog\nemu\nfox\nant\n")
    data = load_words(path)
    words = data.train + data.valid + data.test
    assert sorted(words) == ["ant", "cat", "dog", "emu", "fox"]
    assert "\ufeff" not in Vocabulary.from_words(words).characters
    # offsets of bytes that are not UTF-8 still count from the file's start
    path.write_bytes(b"\xef\xbb\xbfcat\ncaf\xe9\n")
    with pytest.raises(ValueError, match=re.escape(f"{path} is not UTF-8 text: byte 0xe9 at "
                                                   "offset 10")):
        load_words(path)


def test_a_line_longer_than_max_length_is_refused_by_number(tmp_path, monkeypatch):
    # every batch is padded to its longest word: one 40,000-character line among 300 words
    # peaked at 746 MB, a line of a million characters would have needed ~160 GB
    path = tmp_path / "long.txt"
    path.write_text("cat\n\ndog\n" + "x" * 40_000 + "\nemu\nfox\n")
    with pytest.raises(ValueError, match=re.escape(
            f"{path} line 4: a word of 40,000 characters, more than max_length=100")):
        load_words(path)
    assert text.MAX_WORD_LENGTH == 100
    assert "x" * 40_000 in load_words(path, max_length=40_000).words
    path.write_text("cat\ndog\n" + "y" * 100 + "\nemu\nfox\n")  # the limit itself is fine
    assert "y" * 100 in load_words(path).words
    with pytest.raises(ValueError, match="max_length must be a positive integer"):
        load_words(path, max_length=0)
    # the default sources are checked after their filter, by line number too
    words = tmp_path / "words"
    words.write_text("Ab" + "c" * 200 + "\nable\nabout\nabove\n" + "d" * 101 + "\nbat\n")
    monkeypatch.setattr(text, "WAMERICAN_PATH", words)
    with pytest.raises(ValueError, match=re.escape(f"{words} line 5: a word of 101 characters")):
        load_words()


def test_copies_of_a_word_stay_in_one_split(tmp_path):
    """A user's list with repeated lines put copies of one word in train and in test, so the
    held-out score measured memorized words; every copy now goes where the word goes, and a
    list of distinct words splits as before (a plain shuffle)."""
    path = tmp_path / "words.txt"
    words = ["same"] * 50 + [f"w{i}" for i in range(30)] + ["other"] * 3
    path.write_text("\n".join(words) + "\nline\u2028sep\n")
    data = load_words(path, valid_fraction=0.1, test_fraction=0.2, seed=1)
    splits = (data.train, data.valid, data.test)
    assert sorted(data.train + data.valid + data.test) == sorted(words + ["line\u2028sep"])
    for i, first in enumerate(splits):
        for second in splits[i + 1:]:
            assert not set(first) & set(second)
    assert (len(set(data.valid)), len(set(data.test))) == (3, 7)  # of 33 distinct words
    distinct = [f"d{i}" for i in range(40)]
    order = np.random.default_rng(5).permutation(40)
    shuffled = [distinct[i] for i in order]
    assert split_words(distinct, 0.1, 0.2, seed=5) == (shuffled[12:], shuffled[:4],
                                                        shuffled[4:12])


@pytest.mark.parametrize("call, error, match", [
    (lambda: Vocabulary.from_words(["cat", 3]), TypeError, "words must hold strings, got int 3"),
    (lambda: Vocabulary.from_words(None), TypeError, "words must be an iterable of strings"),
    (lambda: Vocabulary.from_words(["", ""]), ValueError, "words hold no character"),
    (lambda: Vocabulary([1, 2]), TypeError, "characters must hold strings, got int 1"),
    (lambda: Vocabulary(5), TypeError, "characters must be an iterable of strings, got int"),
])
def test_a_vocabulary_of_non_strings_is_named(call, error, match):
    # from_words(["cat", 3]) failed with Python's "'int' object is not iterable"
    with pytest.raises(error, match=match):
        call()


def test_a_gru_language_model_too_large_for_memory_is_counted_first(monkeypatch):
    # hidden=10**6 asked torch for 12 TB of weights and failed in its allocator
    import ppl_models.checks as model_checks
    from ppl_models import GRULanguageModel

    monkeypatch.setattr(model_checks, "physical_memory", lambda: 24 * 2**30)
    with pytest.raises(ValueError, match=r"hidden=1000000, layers=1: the GRU's "
                                         r"3,000,106,000,164 weights"):
        GRULanguageModel(Vocabulary("abc"), hidden=10**6)


def test_one_string_where_words_are_expected_is_refused():
    # iterated, "cat\ndog" gave single letters as words and b"cat" an AttributeError on an int
    for call in (clean_word_list, split_words, Vocabulary.from_words, Vocabulary("cat").encode):
        for bad in ("cat\ndog\nbird", b"cat\ndog", bytearray(b"cat")):
            with pytest.raises(TypeError, match=r"must be a sequence of words, got one "
                                                r"(str|bytes|bytearray).*splitlines\(\)"):
                call(bad)
    with pytest.raises(TypeError, match="lines must hold strings, got bytes"):
        clean_word_list([b"cat"])
    assert clean_word_list("cat\ndog".splitlines()) == ["cat", "dog"]


def test_draw_words_counts_the_draws_before_allocating():
    # num=10**12 ended in the allocator's "can't allocate memory" for [num] ids
    vocab = Vocabulary.from_words(["cat", "dog"])

    def uniform(x):
        return torch.full((x.shape[0], vocab.num_outputs), 1 / vocab.num_outputs)

    with pytest.raises(ValueError, match=r"num=1000000000000, max_length=100.*physical memory"):
        draw_words(vocab, uniform, 10**12)
    with pytest.raises(ValueError, match="num must be a positive integer"):
        draw_words(vocab, uniform, 0)
    assert len(draw_words(vocab, uniform, 3, generator=torch.Generator().manual_seed(0))) == 3


def test_load_words_refuses_a_list_too_large_for_memory_before_reading(tmp_path, monkeypatch):
    # a 210 MB list of short lines ended in a bare MemoryError (~20-36x the file in strings)
    path = tmp_path / "words.txt"
    path.write_text("ab\nbc\ncd\nde\n" * 25)  # 300 bytes
    monkeypatch.setattr(checks, "physical_memory", lambda: 300 * text.WORD_LIST_MEMORY_FACTOR - 1)
    with pytest.raises(ValueError, match=re.escape(f"{path}: a word list of 300 bytes") +
                       r".*more than the .* bytes of this machine's physical memory"):
        load_words(path)
    monkeypatch.setattr(checks, "physical_memory", lambda: 300 * text.WORD_LIST_MEMORY_FACTOR)
    assert len(load_words(path).words) == 100


def test_load_words_names_a_path_that_is_no_regular_file(tmp_path):
    # a folder or /dev/zero were reported as "no word list at ..."
    with pytest.raises(ValueError, match=rf"cannot read the word list {tmp_path}: it is a "
                                         r"folder, not a regular file"):
        load_words(tmp_path)
    with pytest.raises(ValueError, match="/dev/zero: it is a character device"):
        load_words("/dev/zero")


def test_load_words_names_the_file_when_a_memory_limit_runs_out(tmp_path, monkeypatch):
    # under a limit below physical memory (ulimit -v) the split ended in a bare MemoryError
    class Huge(str):
        def split(self, sep=None):
            raise MemoryError

    path = tmp_path / "words.txt"
    path.write_text("ab\nbc\n")
    monkeypatch.setattr(text, "_read_utf8", lambda p: Huge(p.read_text()))
    with pytest.raises(MemoryError, match=re.escape(f"{path}: out of memory splitting a word "
                                                    "list of 6 bytes")):
        load_words(path)
