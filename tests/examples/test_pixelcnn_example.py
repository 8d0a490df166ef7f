"""The PixelCNN example end to end with tiny settings on the embedded digits."""

import json
import math
import runpy
import sys
from pathlib import Path

import torch

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pixelcnn.py"


def test_pixelcnn_example_runs(tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    out = tmp_path / "out"
    argv = [str(EXAMPLE), "--class-conditional", "--num-train", "200", "--num-test", "50",
            "--channels", "8", "--blocks", "1", "--epochs", "1", "--num-samples", "6",
            "--samples-per-class", "2",
            "--num-complete", "2", "--completions-per-image", "2", "--num-timing", "2",
            "--threads", "1", "--out-dir", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    try:
        runpy.run_path(str(EXAMPLE), run_name="__main__")
    finally:
        torch.set_num_threads(threads)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_train"] == 200 and metrics["num_test"] == 50
    assert metrics["samples_identical"] is True
    # one epoch of a tiny net on 200 images already beats a fair coin per pixel, 64 ln 2 =
    # 44.4 nats per image (measured 40.6: it has learned the pixel frequencies at least)
    assert 0 < metrics["test_nll_nats_per_image"] < 64 * math.log(2)
    assert math.isclose(metrics["test_bits_per_dim"],
                        metrics["test_nll_nats_per_image"] / (64 * math.log(2)))
    for name in ("samples.png", "completions.png", "class_samples.png", "data.png"):
        assert (out / name).stat().st_size > 1000, name
