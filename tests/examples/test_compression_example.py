"""examples/compression.py end to end with tiny settings."""

import json
import runpy
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "compression.py"


def test_compression_example_runs(tmp_path, monkeypatch):
    argv = [str(EXAMPLE), "--num-train", "500", "--num-test-words", "300", "--order", "3",
            "--num-test-images", "20", "--epochs", "1", "--channels", "8", "--blocks", "1",
            "--threads", "1", "--out-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    coded = [r for r in metrics["rows"] if "roundtrip" in r]
    assert {r["method"] for r in coded} == {"3-gram + range coder",
                                           "independent pixels + range coder",
                                           "PixelCNN + range coder"}
    for row in coded:
        assert row["roundtrip"] is True, row
        assert row["bits_per_unit"] >= row["nll_bits_per_unit"], row
    text = next(r for r in coded if r["data"] == "text")
    # ~2,700 characters at ~3 bits: the 32-bit header and tail word are ~2% of it
    assert text["overhead"] < 0.03, text
    methods = {r["method"] for r in metrics["rows"]}
    assert {"gzip", "bz2", "lzma", "PNG, all images in one file"} <= methods
    assert (tmp_path / "bits.png").stat().st_size > 1000
