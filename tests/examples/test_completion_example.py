"""examples/completion.py end to end with tiny settings."""

import json
import math
import runpy
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "completion.py"


def test_completion_example_runs(tmp_path, monkeypatch):
    argv = [str(EXAMPLE), "--vae-epochs", "30", "--pixelcnn-epochs", "1", "--num-train", "200",
            "--num-test", "30", "--map-steps", "20", "--mwg-steps", "10", "--num-draws", "1",
            "--channels", "8", "--blocks", "1", "--hidden", "32", "--threads", "1", "--nll-k", "20",
            "--out-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    results = metrics["results"]
    assert set(results) == {"bottom half", "random 50%", "scratch", "10% flips"}
    assert set(results["bottom half"]) == {"pixel mean", "VAE MAP", "VAE MwG", "PixelCNN"}
    assert "PixelCNN" not in results["10% flips"]
    # for flips the "pixel mean" estimate is the damaged image: its error rate is the flip
    # fraction of 30 x 64 pixels, 0.1 with standard deviation 0.007; 0.03 is 4 of them
    assert abs(results["10% flips"]["pixel mean"]["error_rate"] - 0.1) < 0.03
    for row in results.values():
        for values in row.values():
            assert 0 <= values["error_rate"] <= 1 and 0 <= values["mean_absolute_error"] <= 1
    # what the example shows: the VAE removes flips the damaged image keeps. After 30 epochs
    # of a 32-unit VAE both VAE methods get 0.084 of the 1920 pixels wrong against the
    # damaged image's 0.106 (42 pixels fewer); 0.01 is 19 pixels
    flips = results["10% flips"]
    for method in ("VAE MAP", "VAE MwG"):
        assert flips[method]["error_rate"] < flips["pixel mean"]["error_rate"] - 0.01, flips
    assert all(0 < a <= 1 for a in metrics["mwg_acceptance_rate"].values())
    # 32 missing binary pixels cost 32 ln 2 = 22.2 nats by uniform guessing: the VAE predicts
    # them better (measured 14.5); the PixelCNN after one epoch of 8 channels is near uniform
    # (measured 25.5), so for it only a bound against a broken estimate's NaN or hundreds
    nll = metrics["bottom_half_conditional_nll_nats"]
    assert set(nll) == {"VAE", "PixelCNN", "VAE whole image", "PixelCNN whole image"}, nll
    assert 0 < nll["VAE"] < 32 * math.log(2) and 0 < nll["PixelCNN"] < 44, nll
    assert nll["VAE whole image"] > nll["VAE"] and nll["PixelCNN whole image"] > nll["PixelCNN"]
    assert (tmp_path / "completion_bottom_half.png").stat().st_size > 1000


def test_fewer_test_images_than_a_figure_row(tmp_path, monkeypatch):
    # --num-test below 10 ended in an IndexError in the figures, after training
    argv = [str(EXAMPLE), "--vae-epochs", "1", "--pixelcnn-epochs", "0", "--num-train", "20",
            "--num-test", "2", "--map-steps", "1", "--mwg-steps", "1", "--hidden", "8",
            "--latent-dim", "2", "--nll-k", "2", "--threads", "1", "--out-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    assert json.loads((tmp_path / "metrics.json").read_text())["num_test"] == 2
    assert (tmp_path / "completion_bottom_half.png").stat().st_size > 1000
