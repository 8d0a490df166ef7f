"""examples/vae.py end to end with tiny settings."""

import json
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "vae.py"
TINY = ["--epochs", "2", "--max-k", "10", "--repeats", "2", "--num-train", "200",
        "--num-test", "50", "--hidden", "16"]


def run(argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), *argv])
    runpy.run_path(str(EXAMPLE), run_name="__main__")


@pytest.mark.parametrize("extra", [[], ["--likelihood", "logistic-mixture", "--latent-dim", "2",
                                        "--objective", "dreg", "--num-particles", "3"]])
def test_vae_example_runs(tmp_path, monkeypatch, extra):
    run([*TINY, *extra, "--out-dir", str(tmp_path)], monkeypatch)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["iwae"]) == {"1", "10"}
    assert metrics["elbo"] <= metrics["iwae"]["10"]
    assert set(metrics["probe_accuracy"]) == {"vae", "autoencoder", "sparse_autoencoder", "pca"}
    figures = ["data", "reconstructions", "prior_samples", "interpolation", "training_curves",
               "bounds_vs_k"]
    if "--latent-dim" in extra:
        figures += ["latent_space", "latent_grid"]
    for name in figures:
        assert (tmp_path / f"{name}.png").stat().st_size > 1000, name
    # resuming a finished run trains nothing more and gives the same bounds' inputs
    run([*TINY, *extra, "--out-dir", str(tmp_path), "--resume"], monkeypatch)
    again = json.loads((tmp_path / "metrics.json").read_text())
    assert again["history"] == metrics["history"]


def test_more_latents_than_pixels_and_fewer_test_images_than_a_figure_row(tmp_path,
                                                                          monkeypatch):
    # --latent-dim 70 on 64 pixels (or above --num-train) failed in PCA, and --num-test 5
    # in the reconstructions' figure, both after training
    run(["--epochs", "1", "--max-k", "1", "--repeats", "1", "--num-train", "30", "--num-test",
         "5", "--hidden", "8", "--latent-dim", "70", "--threads", "1",
         "--out-dir", str(tmp_path)], monkeypatch)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["pca_components"] == 30 and len(metrics["kl_per_dimension"]) == 70
    assert (tmp_path / "reconstructions.png").stat().st_size > 1000


def test_pixel_likelihoods_example_runs(tmp_path, monkeypatch):
    example = EXAMPLE.parent / "pixel_likelihoods.py"
    argv = [str(example), "--epochs", "1", "--k", "5", "--repeats", "1", "--num-train", "100",
            "--num-test", "20", "--hidden", "8", "--out-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(example), run_name="__main__")
    results = json.loads((tmp_path / "metrics.json").read_text())["results"]
    assert len(results) == 5
    for name, row in results.items():
        assert row["elbo_bits_per_dim"] >= row["iwae_5_bits_per_dim"] - 0.05, name
        assert (tmp_path / f"samples_{name}.png").exists()


def test_vae_example_compiled_step(tmp_path, monkeypatch):
    import inference.training.compiled_step

    # the traced graph replayed uncompiled: no compiler wait
    monkeypatch.setattr(inference.training.compiled_step, "DEFAULT_BACKEND", "eager")
    run([*TINY, "--compile", "--out-dir", str(tmp_path)], monkeypatch)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["elbo"] <= metrics["iwae"]["10"]


def test_dynamic_binarization_runs_to_its_metrics(tmp_path, monkeypatch):
    # --binarization dynamic failed after all training: the probes' training features were
    # taken from the grey images that each minibatch redraws, which the Bernoulli guide
    # refuses; no metrics.json, no figures
    run([*TINY, "--binarization", "dynamic", "--threads", "1", "--out-dir", str(tmp_path)],
        monkeypatch)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["binarization"] == "dynamic"
    assert set(metrics["probe_accuracy"]) == {"vae", "autoencoder", "sparse_autoencoder", "pca"}
    assert (tmp_path / "reconstructions.png").stat().st_size > 1000
