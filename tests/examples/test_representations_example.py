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
