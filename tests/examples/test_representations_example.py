"""examples/representations.py end to end with tiny settings."""

import json
import runpy
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "representations.py"


def test_representations_example_runs(tmp_path, monkeypatch):
    argv = [str(EXAMPLE), "--epochs", "2", "--num-train", "200", "--hidden", "16",
            "--latent-dim", "4", "--restarts", "1", "--threads", "1", "--out-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    results = json.loads((tmp_path / "metrics.json").read_text())["results"]
    assert set(results) == {"vae", "autoencoder", "sparse_autoencoder", "pca", "pixels"}
    assert results["pixels"]["dim"] == 64 and results["vae"]["dim"] == 4
    # a linear probe on the 64 raw pixels of 200 digits reads 10 classes far above chance
    # (0.1); we measured 0.75
    assert results["pixels"]["probe_accuracy"] > 0.5
    # every representation, even a VAE or autoencoder after 2 epochs, carries class
    # information a linear probe reads at twice chance or more (weakest measured: 0.28)
    for name, row in results.items():
        assert row["probe_accuracy"] > 0.2, (name, row)
        assert -1 <= row["kmeans_ari"] <= 1 and -1 <= row["gmm_ari"] <= 1
    # k-means on 4 principal components or on the pixels finds the digit classes well above
    # the 0 of random clusters (measured ARI 0.35 and 0.28)
    assert results["pca"]["kmeans_ari"] > 0.15 and results["pixels"]["kmeans_ari"] > 0.15
    assert (tmp_path / "representations.png").stat().st_size > 1000


def test_pca_and_the_figure_adapt_to_the_features(tmp_path):
    # PCA(--latent-dim) failed after training above 64 pixels or --num-train images, and the
    # figure's PCA(2) on 1-d features; PCA now keeps as many components as there can be
    import numpy as np
    import torch

    from ppl_models.data import load_images

    example = runpy.run_path(str(EXAMPLE))
    args = example["parse_args"](["--latent-dim", "70", "--num-train", "10", "--epochs", "0",
                                  "--hidden", "4"])
    data = load_images("digits").binarized(0)
    features, _ = example["representations"](args, data.train.images[:10],
                                             data.test.images[:20], torch.device("cpu"))
    assert features["pca"][0].shape == (10, 10) and features["pca"][1].shape == (20, 10)
    assert features["vae"][0].shape == (10, 70)
    rng = np.random.default_rng(0)
    one_dim = {"a": (rng.normal(size=(10, 1)), rng.normal(size=(20, 1)))}
    scores = {"a": {"probe_accuracy": 0.5, "kmeans_ari": 0.1, "gmm_ari": 0.1}}
    example["plot"](one_dim, np.arange(20) % 10, scores, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").stat().st_size > 1000
