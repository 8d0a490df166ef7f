"""examples/outliers.py end to end with tiny settings."""

import json
import runpy
import sys
import warnings
from pathlib import Path

from inference.pair_check import ShadowedParamWarning

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "outliers.py"


def test_outliers_example_runs(tmp_path, monkeypatch):
    argv = [str(EXAMPLE), "--vae-epochs", "3", "--pixelcnn-epochs", "1", "--num-train", "150",
            "--num-test", "30", "--num-samples", "5", "--channels", "8", "--blocks", "1",
            "--hidden", "32", "--threads", "1", "--out-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    with warnings.catch_warnings():  # the model and its background share parameter names:
        # each is scored from its own store (a run under python -W error died at scoring)
        warnings.simplefilter("error", ShadowedParamWarning)
        runpy.run_path(str(EXAMPLE), run_name="__main__")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    sets = {"held-out classes", "gaussian noise", "10% flips", "inversion", "blank", "bar",
            "coin flips"}
    for model in ("vae", "pixelcnn"):
        assert set(metrics["auroc"][model]) == sets
        for row in metrics["auroc"][model].values():
            assert set(row) == {"nll", "ratio", "typicality"}
            assert all(0 <= v <= 1 for v in row.values())
    auroc = metrics["auroc"]
    # inverted digits turn ~70% of the pixels on: even a VAE after 3 epochs, which has
    # learned the pixel frequencies, finds every one of them less likely than any digit
    assert auroc["vae"]["inversion"]["nll"] > 0.95
    # what docs/outliers.md says works on 8x8 digits, the likelihood alone, already works
    # here for images far from any digit: coin-flip images (measured 0.996 and 0.993) and,
    # for the VAE, noisy and flipped digits (0.83 and 0.77; chance is 0.5)
    for model in ("vae", "pixelcnn"):
        assert auroc[model]["coin flips"]["nll"] > 0.9, auroc[model]
    assert auroc["vae"]["gaussian noise"]["nll"] > 0.65, auroc["vae"]
    assert auroc["vae"]["10% flips"]["nll"] > 0.65, auroc["vae"]
    # the barely trained PixelCNN finds blank images *more* likely than digits (nll AUROC
    # measured 0.0, the Fashion-MNIST failure of the docs in miniature); the typicality
    # score, which flags images too likely as well as too unlikely, catches all of them (1.0)
    assert auroc["pixelcnn"]["blank"]["nll"] < 0.5, auroc["pixelcnn"]
    assert auroc["pixelcnn"]["blank"]["typicality"] > 0.9, auroc["pixelcnn"]
    assert metrics["set_sizes"]["inliers"] == 30
    for name in ("outlier_sets", "log_p_histograms"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
