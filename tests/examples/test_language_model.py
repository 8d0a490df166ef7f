"""The language-model example end to end with tiny settings, on the bundled word list."""

import json
import math
import runpy
import sys
from pathlib import Path

from ppl_models.text import BUNDLED_PATH

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "language_model.py"


def test_language_model_example_runs(tmp_path, monkeypatch):
    argv = [str(EXAMPLE), "--data", str(BUNDLED_PATH), "--num-train", "500", "--max-order", "3",
            "--epochs", "2", "--embedding", "8", "--hidden", "16", "--num-samples", "3",
            "--out-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["source"] == f"file:{BUNDLED_PATH}"
    assert metrics["num_train_words"] == 500 and metrics["num_test_words"] == 543
    models = {row["model"]: row for row in metrics["models"]}
    assert list(models) == ["1-gram", "2-gram", "3-gram", "1-gram backoff", "2-gram backoff",
                            "3-gram backoff", "GRU"]
    uniform_bits = math.log2(27)  # 26 letters and the end symbol
    for name, row in models.items():
        assert len(row["samples"]) == 3, name
        assert math.isclose(row["test_perplexity"], 2 ** row["test_bits_per_char"]), name
        # two epochs of a tiny GRU are near uniform; the n-grams must beat uniform guessing
        limit = uniform_bits + 0.5 if name == "GRU" else uniform_bits
        assert 1 < row["test_bits_per_char"] < limit, (name, row["test_bits_per_char"])
    # on 500 words a bigram already beats the unigram (measured 3.7 against 4.2 bits)
    assert models["2-gram"]["test_bits_per_char"] < models["1-gram"]["test_bits_per_char"] - 0.3
    assert all(models[f"{n}-gram{kind}"]["alpha"] > 0 for n in (1, 2, 3)
               for kind in ("", " backoff"))
    # the hierarchical prior does not lose to additive smoothing at the highest order here
    assert models["3-gram backoff"]["test_bits_per_char"] <= \
        models["3-gram"]["test_bits_per_char"] + 0.02
    assert len(metrics["gru_history"]) == 2
    assert (tmp_path / "bits_per_char.png").stat().st_size > 1000
