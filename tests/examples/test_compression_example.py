"""examples/compression.py end to end with tiny settings."""

import json
import runpy
import sys
from pathlib import Path

from inference.coding.range_coding import STREAM_HEADER_BYTES

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "compression.py"


def test_compression_example_runs(tmp_path, monkeypatch):
    argv = [str(EXAMPLE), "--num-train", "500", "--num-test-words", "300", "--order", "3",
            "--num-test-images", "20", "--epochs", "1", "--channels", "8", "--blocks", "1",
            "--vae-epochs", "3", "--threads", "1", "--out-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    coded = [r for r in metrics["rows"] if "roundtrip" in r]
    assert {r["method"] for r in coded} == {"3-gram + range coder",
                                           "independent pixels + range coder",
                                           "PixelCNN + range coder",
                                           "VAE + bits-back (ANS)"}
    for row in coded:
        assert row["roundtrip"] is True, row
        if "net_bits_per_unit" not in row:  # a range coder never beats its model's NLL
            assert row["bits_per_unit"] >= row["nll_bits_per_unit"], row
    vae = next(r for r in coded if "net_bits_per_unit" in r)
    # bits-back: one draw of z per image, so the net code length of 20 images scatters
    # around -ELBO by a few percent; the 256 initial bits are left out of the net figure
    assert abs(vae["net_bits_per_unit"] / vae["nll_bits_per_unit"] - 1) < 0.15, vae
    text = next(r for r in coded if r["data"] == "text")
    # 300 words, 2,000-3,000 characters at 3-4 bits: beside the stream's header (32 bytes:
    # counts, digest, CRC) and its last 32-bit word, the coded symbols cost their NLL within
    # the 24-bit tables' rounding (a fraction of a percent)
    bits = 8 * text["bytes"]
    nll_bits = bits * text["nll_bits_per_unit"] / text["bits_per_unit"]
    payload_bits = bits - 8 * STREAM_HEADER_BYTES
    assert payload_bits <= 1.005 * nll_bits + 32, text
    methods = {r["method"] for r in metrics["rows"]}
    assert {"gzip", "bz2", "lzma", "PNG, all images in one file"} <= methods
    assert (tmp_path / "bits.png").stat().st_size > 1000


def test_words_with_accented_letters(tmp_path):
    # encode("ascii") failed on UTF-8 words (after the n-gram was fitted), and the raw size
    # was taken as 8 bits per character where an accented letter takes 16
    words = tmp_path / "words.txt"
    words.write_text("".join(f"{w}\n" for w in ["çà", "éa", "aé", "àç", "ab", "ba", "éé", "çç",
                                                 "aa", "bb", "àb", "bà"] * 5))
    example = runpy.run_path(str(EXAMPLE))
    args = example["parse_args"](["--words", str(words), "--order", "2", "--num-test-words",
                                  "0", "--out-dir", str(tmp_path)])
    rows, info = example["compress_text"](args)
    test = "".join(f"{w}\n" for w in example["load_words"](words, seed=0).test)
    assert info["num_chars"] == len(test) and info["num_bytes"] == len(test.encode("utf-8"))
    assert info["raw_bits_per_unit"] == 8 * info["num_bytes"] / info["num_chars"] > 8
    assert rows[0]["roundtrip"] is True
    assert {r["method"] for r in rows[1:]} == {"gzip", "bz2", "lzma"}
