"""examples/similarity.py end to end with tiny settings, and its retrieval metric by hand."""

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "similarity.py"


def test_precision_at_k_by_hand():
    example = runpy.run_path(str(EXAMPLE))
    gallery = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    queries = torch.tensor([[0.4], [10.6]])
    found = example["nearest_neighbours"](queries, gallery, 3)
    assert found.tolist() == [[0, 1, 2], [4, 3, 2]]
    precision, stderr, per_class = example["precision_at_k"](found, torch.tensor([0, 1]),
                                                             labels)
    assert precision == pytest.approx((2 / 3 + 1) / 2) and per_class == {0: 2 / 3, 1: 1.0}
    assert stderr == pytest.approx(torch.tensor([2 / 3, 1.0]).std().item() / 2 ** 0.5)
    # cosine ignores the length: [1, 0] is as close to [5, 0] as to [0.1, 0]
    cosine = example["nearest_neighbours"](torch.tensor([[1.0, 0.1]]),
                                           torch.tensor([[5.0, 0.0], [0.0, 1.0], [0.1, 0.0]]),
                                           2, "cosine")
    assert sorted(cosine[0].tolist()) == [0, 2]
    with pytest.raises(ValueError, match="k must lie"):
        example["nearest_neighbours"](queries, gallery, 6)


def test_similarity_example_runs(tmp_path, monkeypatch):
    argv = [str(EXAMPLE), "--epochs", "2", "--num-train", "300", "--num-test", "100",
            "--hidden", "32", "--latent-dim", "4", "--threads", "1",
            "--fashion-root", str(tmp_path / "no-such-folder"), "--out-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # Fashion-MNIST is not in the empty folder: skipped with the loader's message
    assert set(metrics["skipped"]) == {"fashion-mnist"}
    assert "missing" in metrics["skipped"]["fashion-mnist"]
    digits = metrics["datasets"]["digits"]
    results = digits["results"]
    assert list(results) == ["vae", "flow guide", "autoencoder", "pca", "pixels"]
    assert results["flow guide"]["dim"] == 4
    assert results["pixels"]["dim"] == 64 and results["vae"]["dim"] == 4
    assert 0.08 < digits["chance_precision"] < 0.12
    # 10 nearest of 300 binarized training digits by raw pixels share the query's class far
    # more often than chance (0.1): we measured 0.59; a mix-up of queries and labels or of
    # indices and distances would fall to chance
    assert results["pixels"]["precision_at_10_euclidean"] > 0.4
    for row in results.values():
        for metric in ("euclidean", "cosine"):
            assert 0 <= row[f"precision_at_10_{metric}"] <= 1
    assert (tmp_path / "similarity_digits.png").stat().st_size > 1000


def test_pca_keeps_at_most_as_many_components_as_there_can_be():
    # PCA(--latent-dim) failed after training above the pixels or the gallery's images
    import argparse

    example = runpy.run_path(str(EXAMPLE))
    gallery = (torch.rand(12, 1, 8, 8) < 0.5).float()
    args = argparse.Namespace(latent_dim=70, seed=0)
    embed = example["pca_projection"](gallery, args, torch.device("cpu"))
    assert embed(gallery[:3]).shape == (3, 12)
    assert example["pca_projection"](torch.rand(100, 1, 8, 8), args, None)(gallery).shape \
        == (12, 64)
