"""The gallery example end to end with tiny settings on the 8x8 digits, and its model cache."""

import importlib.util
import json
import os
import runpy
import stat
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


def load_gallery():
    """The script as a module (its functions can be replaced with monkeypatch)."""
    spec = importlib.util.spec_from_file_location("gallery", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def linear_and_train(calls: list, value: float):
    module = torch.nn.Linear(3, 2)

    def train():
        calls.append(value)
        with torch.no_grad():
            module.weight.fill_(value)
    return module, train


def spoil_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def spoil_flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))


def spoil_legacy(path: Path) -> None:  # what the gallery wrote before: plain torch.save
    torch.save({"state": torch.nn.Linear(3, 2).state_dict(), "train_seconds": 1.0}, path)


def spoil_other_network(path: Path) -> None:  # the same name, another network's parameters
    from inference.training.checkpoints import load_checkpoint, save_checkpoint
    saved = load_checkpoint(path)
    save_checkpoint(path, {**saved, "state": torch.nn.Linear(4, 2).state_dict()})


def spoil_other_settings(path: Path) -> None:  # a file renamed, or a hash collision
    from inference.training.checkpoints import load_checkpoint, save_checkpoint
    saved = load_checkpoint(path)
    save_checkpoint(path, {**saved, "settings": saved["settings"].replace("3", "4")})


@pytest.mark.parametrize("spoil", [spoil_truncate, spoil_flip, spoil_legacy,
                                   spoil_other_network, spoil_other_settings])
def test_an_unusable_cache_file_is_named_and_trained_afresh(spoil, tmp_path, capsys):
    # a half-written or corrupt cache used to fail every rerun inside torch.load, and another
    # network's parameters inside load_state_dict, without naming the file
    gallery = load_gallery()
    calls = []
    module, train = linear_and_train(calls, 1.5)
    gallery.cached(module, "m", {"size": 3}, tmp_path, train)
    [path] = tmp_path.glob("m-*.pt")
    spoil(path)
    capsys.readouterr()
    module, train = linear_and_train(calls, 2.5)
    info = gallery.cached(module, "m", {"size": 3}, tmp_path, train)
    assert not info["cached"] and info["file"] == str(path) and calls == [1.5, 2.5]
    assert f"cannot use the cached model {path}" in capsys.readouterr().out
    again, train_again = linear_and_train(calls, 9.0)  # the file is whole again
    assert gallery.cached(again, "m", {"size": 3}, tmp_path, train_again)["cached"]
    assert torch.equal(again.weight, torch.full((2, 3), 2.5)) and calls == [1.5, 2.5]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary files left


def test_a_cache_write_that_fails_half_way_leaves_no_file_and_the_run_goes_on(
        tmp_path, monkeypatch, capsys):
    # torch.save straight to the cache file left half a file (a full disk, a killed run),
    # which the next run then failed to load
    gallery = load_gallery()
    save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if isinstance(f, (str, Path)):
            Path(f).write_bytes(b"PK\x03\x04 half a file")
        else:
            f.write(b"PK\x03\x04 half a file")
        raise OSError(28, "No space left on device")

    calls = []
    module, train = linear_and_train(calls, 1.5)
    monkeypatch.setattr(torch, "save", full_disk)
    try:
        info = gallery.cached(module, "m", {"size": 3}, tmp_path, train)
    except OSError:
        info = None
    monkeypatch.setattr(torch, "save", save)
    assert info == {"cached": False, "train_seconds": info["train_seconds"],
                    "file": info["file"]}, "the trained model is lost with the write"
    assert "No space left on device" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())  # nothing half-written
    module, train = linear_and_train(calls, 2.5)
    assert not gallery.cached(module, "m", {"size": 3}, tmp_path, train)["cached"]
    assert calls == [1.5, 2.5] and len(list(tmp_path.glob("m-*.pt"))) == 1


def tiny_args(gallery, tmp_path, *extra):
    return gallery.parse_args([*TINY, "--out-dir", str(tmp_path / "out"),
                               "--cache-dir", str(tmp_path / "cache"), *extra])


@pytest.fixture
def no_training(monkeypatch):
    """The gallery module, whose stages fail the test if they are reached."""
    gallery = load_gallery()

    def trained(*args, **kwargs):
        raise AssertionError("a model was trained before the bad flag was reported")
    monkeypatch.setattr(gallery, "train_vae", trained)
    monkeypatch.setattr(gallery, "fit", trained)
    return gallery


def test_test_images_lacking_a_class_are_refused_before_any_training(no_training, tmp_path):
    # the first 20 digits of the test split hold no 1 or 5 and one 3 and one 7, where the
    # figures need two; the VAEs used to train first
    args = tiny_args(no_training, tmp_path, "--num-test", "20", "--outliers-per-side", "1")
    with pytest.raises(SystemExit, match=r"hold fewer than 2 image\(s\) of class\(es\) "
                                         r"\[1, 3, 5, 7\].*raise --num-test"):
        no_training.main(args)


def test_a_cache_dir_that_cannot_be_written_is_refused_before_any_training(no_training,
                                                                           tmp_path):
    # a file: FileExistsError from mkdir; a read-only folder: torch.save failed after training
    (tmp_path / "file").write_text("")
    args = tiny_args(no_training, tmp_path, "--cache-dir", str(tmp_path / "file"))
    with pytest.raises(SystemExit, match=r"--cache-dir .*file is a file, not a folder"):
        no_training.main(args)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
        try:
            args = tiny_args(no_training, tmp_path, "--cache-dir", str(locked))
            with pytest.raises(SystemExit, match=r"--cache-dir .*locked cannot be written"):
                no_training.main(args)
        finally:
            locked.chmod(stat.S_IRWXU)
