"""examples/pixel_vae.py end to end with tiny settings."""

import json
import runpy
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pixel_vae.py"
TINY = ["--epochs", "2", "--num-train", "128", "--num-test", "20", "--max-k", "10",
        "--repeats", "2", "--hidden", "16", "--channels", "8", "--latent-dim", "3",
        "--kl-warmup", "2", "--free-bits", "0.5", "--num-samples", "4", "--threads", "1"]


def test_pixel_vae_example_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), *TINY, "--out-dir", str(tmp_path)])
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    models = metrics["models"]
    assert list(models) == ["vae", "pixelcnn", "pixelvae_elbo", "pixelvae_warmup",
                            "pixelvae_free_bits"]
    assert models["pixelcnn"]["exact"] and models["pixelcnn"]["kl_nats"] == 0
    for name in ("vae", "pixelvae_elbo", "pixelvae_warmup", "pixelvae_free_bits"):
        r = models[name]
        assert set(r["iwae"]) == {"1", "10"}
        # ELBO <= IWAE_10 holds in expectation; 2 repeats over 20 images keep the noise small
        # against the gap a 2-epoch model leaves (about a nat)
        assert r["elbo"] <= r["iwae"]["10"] + 0.05, (name, r["elbo"], r["iwae"])
        assert len(r["kl_per_dimension"]) == 3 and r["kl_nats"] >= 0
        assert 0 <= r["active_units"] <= 3
        # every number is nats per image of 64 binary pixels: between 0 and -64 log 2 - 20
        assert -64 * 0.6931 - 20 < r["log_likelihood"] < 0
    table = (tmp_path / "results.md").read_text().splitlines()
    assert len(table) == 2 + 5 and "IWAE_10" in table[0]
    assert (tmp_path / "results.csv").read_text().count("\n") == 6
    for name in ("samples", "reconstructions", "kl_per_dimension", "training_curves"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000, name


def test_fewer_test_images_than_samples_per_row(tmp_path, monkeypatch):
    # --num-test below --num-samples ended in an IndexError in the figures, after training
    argv = [str(EXAMPLE), "--epochs", "1", "--num-train", "20", "--num-test", "3",
            "--max-k", "1", "--repeats", "1", "--hidden", "8", "--channels", "4",
            "--num-blocks", "1", "--latent-dim", "2", "--threads", "1",
            "--out-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    assert json.loads((tmp_path / "metrics.json").read_text())["num_test"] == 3
    assert (tmp_path / "reconstructions.png").stat().st_size > 1000
