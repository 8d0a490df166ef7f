"""The gallery example end to end with tiny settings on the 8x8 digits, and its model cache."""

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

from inference.coding.range_coding import STREAM_HEADER_BYTES
from ppl_models import read_wav

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gallery.py"
TINY = ["--dataset", "digits", "--num-train", "200", "--num-test", "200", "--hidden", "32",
        "--vae-epochs", "2", "--pixelcnn-num-train", "64", "--pixelcnn-channels", "8",
        "--pixelcnn-blocks", "1", "--pixelcnn-epochs", "1", "--samples-per-class", "2",
        "--completions", "2", "--outliers-per-side", "2", "--num-compress", "20",
        "--lm-num-train", "300", "--gru-hidden", "16", "--gru-epochs", "1", "--num-words", "3",
        "--audio", "synthetic", "--audio-seconds", "2", "--wavenet-epochs", "1",
        "--generate-seconds", "0.1", "--threads", "1"]
FIGURES = ["vae_reconstructions.png", "vae_latent_space.png", "vae_interpolation.png",
           "vae_samples.png", "pixelcnn_class_samples.png", "pixelcnn_completions.png",
           "outliers.png", "compression.png", "wavenet_waveforms.png"]


def run(out: Path, cache: Path, monkeypatch) -> dict:
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), *TINY, "--out-dir", str(out),
                                      "--cache-dir", str(cache)])
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow  # about 15 s: five models trained, nine figures drawn
def test_gallery_example_runs(tmp_path, monkeypatch):
    first = run(tmp_path / "a", tmp_path / "cache", monkeypatch)
    assert first["dataset"] == "digits"
    for name in FIGURES:  # every picture written, and small enough to commit
        assert 2_000 < (tmp_path / "a" / name).stat().st_size < 200_000, name
    # bounds in order, in nats per 64-pixel image
    vae = first["vae"]
    assert -64 * 5 < vae["elbo"] <= vae["iwae_100"] < 0
    assert 0 < first["pixelcnn"]["test_nll_nats_per_image"] < 64 * 5
    bits = first["pixelcnn"]["compression_bits_per_image"]
    assert bits["raw (1 bit per pixel)"] == 64
    # the range coder's length is the images' NLL in bits (plus the classes), up to the
    # stream header and the last two 32-bit words, spread over the 20 images
    ideal = first["pixelcnn"]["compression_ideal_bits_per_image"]
    overhead = (8 * STREAM_HEADER_BYTES + 64) / 20
    assert 0.99 * ideal <= bits["PixelCNN (range coded, class sent)"] <= ideal + overhead
    table = (tmp_path / "a" / "language_samples.md").read_text().splitlines()
    assert len(table) == 2 + 5 + 1  # header, 4 n-grams and the GRU, held-out words
    assert all(len(row.split("|")[3].split()) == 3 for row in table[2:])  # three words each
    for name, seconds in (("wavenet_data.wav", 0.1), ("wavenet_generated.wav", 0.1)):
        samples, rate = read_wav(tmp_path / "a" / name)
        assert rate == 8000 and samples.shape == (round(seconds * 8000),)
    assert first["audio"]["source"] == "synthetic"
    assert first["audio"]["histogram_bits_per_sample"] < 8
    assert not any(info["cached"] for info in (vae["latent_2"], vae["latent_20"],
                                               first["pixelcnn"], first["language"]["gru"],
                                               first["audio"]["wavenet"]))


def test_cached_trains_once_and_then_loads_the_same_parameters(tmp_path):
    gallery = runpy.run_path(str(EXAMPLE))  # the functions, without running main
    calls = []

    def make(train_value: float):
        module = torch.nn.Linear(3, 2)

        def train():
            calls.append(train_value)
            with torch.no_grad():
                module.weight.fill_(train_value)
        return module, train

    module, train = make(1.5)
    info = gallery["cached"](module, "m", {"size": 3}, tmp_path, train)
    assert not info["cached"] and calls == [1.5] and not module.training
    again, train_again = make(7.0)
    info = gallery["cached"](again, "m", {"size": 3}, tmp_path, train_again)
    assert info["cached"] and calls == [1.5]  # loaded, not trained
    assert torch.equal(again.weight, torch.full((2, 3), 1.5))
    assert torch.equal(again.bias, module.bias)
    other, train_other = make(2.0)
    info = gallery["cached"](other, "m", {"size": 4}, tmp_path, train_other)
    assert not info["cached"] and calls == [1.5, 2.0]  # other settings: trained afresh
    assert len(list(tmp_path.glob("m-*.pt"))) == 2
