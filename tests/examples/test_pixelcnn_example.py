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


def run_main(argv, out):
    """The example's ``main`` on ``argv`` (tiny settings), its metrics."""
    threads = torch.get_num_threads()
    module = runpy.run_path(str(EXAMPLE))
    try:
        return module["main"](module["parse_args"]([*argv, "--channels", "4", "--blocks", "1",
                                                    "--num-samples", "2", "--num-complete",
                                                    "1", "--completions-per-image", "1",
                                                    "--threads", "1", "--out-dir", str(out)]))
    finally:
        torch.set_num_threads(threads)


def test_zero_means_all_images_as_the_help_says(tmp_path):
    # --num-test 0 sliced test[:0] and failed after training (IndexError), --num-train 0
    # trained on no images; --epochs 0 failed in KeepBest.restore, no epoch scored
    metrics = run_main(["--num-train", "0", "--num-test", "0", "--epochs", "0",
                        "--num-timing", "1"], tmp_path)
    assert (metrics["num_train"], metrics["num_test"]) == (1297, 300)
    assert metrics["best_epoch"] is None


def test_more_timing_images_than_test_images(tmp_path):
    # a class-conditional model drew --num-timing images given fewer test labels (after
    # training): the labels are reused in turn
    metrics = run_main(["--class-conditional", "--num-train", "20", "--num-test", "2",
                        "--epochs", "1", "--num-timing", "3"], tmp_path)
    assert metrics["num_timing_images"] == 3 and metrics["samples_identical"] is True


def test_the_8bit_likelihoods_run_without_a_binarization_flag(tmp_path):
    # every likelihood was given "dynamic" binarization, which only the bernoulli takes: a
    # traceback without --binarization, a usage error with the "static" it suggested
    for likelihood in ("categorical256", "logistic-mixture"):
        metrics = run_main(["--likelihood", likelihood, "--num-train", "20", "--num-test", "4",
                            "--epochs", "1", "--num-timing", "1"], tmp_path / likelihood)
        # 8-bit pixels: a uniform model costs 8 bits per dimension, an untrained one more
        assert math.isfinite(metrics["test_bits_per_dim"]) and metrics["test_bits_per_dim"] > 0
