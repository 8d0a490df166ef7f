"""examples/outliers.py end to end with tiny settings."""

import json
import runpy
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "outliers.py"


def test_outliers_example_runs(tmp_path, monkeypatch):
    argv = [str(EXAMPLE), "--vae-epochs", "3", "--pixelcnn-epochs", "1", "--num-train", "150",
            "--num-test", "30", "--num-samples", "5", "--channels", "8", "--blocks", "1",
            "--hidden", "32", "--threads", "1", "--out-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    sets = {"held-out classes", "gaussian noise", "10% flips", "inversion", "blank", "bar",
            "coin flips"}
    for model in ("vae", "pixelcnn"):
        assert set(metrics["auroc"][model]) == sets
        for row in metrics["auroc"][model].values():
            assert set(row) == {"nll", "ratio", "typicality"}
            assert all(0 <= v <= 1 for v in row.values())
    # inverted digits turn ~70% of the pixels on: even a VAE after 3 epochs, which has
    # learned the pixel frequencies, finds every one of them less likely than any digit
    assert metrics["auroc"]["vae"]["inversion"]["nll"] > 0.95
    assert metrics["set_sizes"]["inliers"] == 30
    for name in ("outlier_sets", "log_p_histograms"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
