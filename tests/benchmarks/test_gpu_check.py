"""The GPU check (benchmarks/gpu_check.sh) end to end on the CPU, so that it cannot rot.

The dry run is the GPU check with tiny sizes, random images and torch.compile off; it must
work from the installed environment without the wheel kit (CI has neither a GPU nor
gpu-kit/). The helpers it relies on are checked on their own: the hand-written loss equals
ours on the same draws, and the Fashion-MNIST loader reads a kit-like folder of IDX files.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
SIDES = {"hand_eager", "ours", "pyro_svi", "hand_compiled", "ours_compiled"}


def load_module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_dry_run_records_every_part(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "GPU_KIT": str(tmp_path / "no-kit"), "TMPDIR": str(tmp_path)}
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    # what the device tool would bring back: few files, none in sub-folders
    assert {p.name for p in out.iterdir()} <= {"gpu_check.json", "gpu_check.log",
                                                "nvidia_smi.txt", "pytest_cuda.log",
                                                "pytest_short.log"}
    data = json.loads((out / "gpu_check.json").read_text())
    parts = ("device", "svi_step", "epoch", "iwae", "pixelcnn", "mixed_precision",
             "tests_cuda", "tests_short")
    for part in parts:
        assert data[part]["status"] == "ok", (part, data[part])
    assert data["device"]["dry_run"] is True and data["device"]["device"] == "cpu"

    svi = data["svi_step"]
    assert svi["same_as_hand_written"]["rel_loss_diff"] < 1e-5
    assert svi["same_as_hand_written"]["rel_grad_diff"] < 1e-3
    assert set(svi["batches"]) == {"16", "64"}
    for batch, record in svi["batches"].items():
        expected = SIDES | ({"hand_cudagraphs", "ours_cudagraphs"} if batch == "16" else set())
        assert set(record["ms_per_step"]) == expected and not record["errors"], record
        assert all(math.isfinite(ms) and ms > 0 for ms in record["ms_per_step"].values())
        assert record["ratio_to_hand_eager"]["hand_eager"] == 1.0
        assert record["syncs_per_step"]["ours"] == 0  # nothing to count on the CPU

    for name in ("eager", "compiled"):
        run = data["epoch"][name]
        assert len(run["seconds_per_epoch"]) == 3 and run["timed_epoch_seconds"] > 0
        assert all(math.isfinite(loss) for loss in run["train_loss"])
    # without torch.compile the compiled step replays its traced graph: the same training
    eager, compiled = data["epoch"]["eager"]["train_loss"], data["epoch"]["compiled"]["train_loss"]
    assert compiled == pytest.approx(eager, rel=1e-4)

    iwae = data["iwae"]
    assert iwae["model"].startswith("trained")  # the epoch part's VAE reached it
    assert -800 < iwae["mean"] < 0 and iwae["seconds"] > 0
    assert iwae["mean"] > iwae["elbo_mean"], "IWAE_K must exceed the ELBO"

    pixel = data["pixelcnn"]
    assert pixel["num_blocks"] == 4 and pixel["image_shape"] == [1, 8, 8]
    assert set(pixel["ms_per_step"]) == {"4", "8"}
    assert pixel["fast_equals_naive"] == 1.0  # same seed, same images

    mixed = data["mixed_precision"]
    assert math.isfinite(mixed["float32"]["test_iwae"])
    assert abs(mixed["bound_difference"]) < 5.0, mixed

    targets = data["summary"]["targets"]
    assert set(targets) == {"iwae_seconds", "epoch_eager_seconds", "epoch_compiled_seconds",
                            "compiled_over_hand_compiled", "no_sync_per_step"}
    assert all(row["met"] is None for row in targets.values())  # a CPU run judges nothing


def test_hand_written_loss_equals_ours_in_float64():
    gpu_check = load_module()
    from ppl_models import VAE

    torch.manual_seed(0)
    vae = VAE((1, 28, 28), latent_dim=3, hidden=(16,)).double()
    x = (torch.rand(8, 1, 28, 28, dtype=torch.float64) < 0.3).double()
    same = gpu_check.compare_with_hand_written(vae, x, scale=7.5, seed=1)
    assert same["rel_loss_diff"] < 1e-10 and same["rel_grad_diff"] < 1e-10, same
    # the comparison can fail: other decoder weights change loss and gradients
    other = copy.deepcopy(vae)
    with torch.no_grad():
        next(other.decoder.parameters()).add_(0.1)
    differ = gpu_check.compare_with_hand_written(vae, x, scale=7.5, seed=1, hand_vae=other)
    assert differ["rel_loss_diff"] > 1e-4 and differ["rel_grad_diff"] > 1e-3, differ


def test_fashion_mnist_is_read_from_a_kit_folder_and_cached(tmp_path):
    gpu_check = load_module()
    args = kit_args(tmp_path)
    first = gpu_check.load_data(args, torch, torch.device("cpu"))
    assert first["source"].startswith("Fashion-MNIST")
    assert first["train"].shape == (12, 1, 28, 28) and first["test"].shape == (6, 1, 28, 28)
    assert set(first["train"].unique().tolist()) == {0.0, 1.0}
    cached = gpu_check.load_data(args, torch, torch.device("cpu"))  # from the work folder
    assert torch.equal(cached["train"], first["train"]) and cached["source"] == first["source"]


def test_judge_reads_the_targets_of_a_gpu_run():
    gpu_check = load_module()
    data = {
        "device": {"status": "ok", "dry_run": False},
        "svi_step": {"batches": {"256": {"ratio_to_hand_compiled": {"ours_compiled": 1.05},
                                         "syncs_per_step": {"ours": 0.0, "ours_compiled": 0.0}},
                                 "4096": {"ratio_to_hand_compiled": {"ours_compiled": 2.0}}}},
        "epoch": {"eager": {"timed_epoch_seconds": 0.7, "syncs_in_third_epoch": 2},
                  "compiled": {"timed_epoch_seconds": 0.08, "syncs_in_third_epoch": 2}},
        "iwae": {"seconds": 4.0},
    }
    verdict = gpu_check.judge(data)
    assert verdict["iwae_seconds"]["met"] is True
    assert verdict["epoch_eager_seconds"]["met"] is False
    assert verdict["epoch_compiled_seconds"]["met"] is True
    assert verdict["compiled_over_hand_compiled"]["met"] is True  # batch 256, not 4096
    assert verdict["no_sync_per_step"]["met"] is True
    data["epoch"]["eager"]["syncs_in_third_epoch"] = 235  # one per step
    assert gpu_check.judge(data)["no_sync_per_step"]["met"] is False


def kit_args(tmp_path):
    from ppl_models import write_idx

    rng = np.random.default_rng(0)
    kit = tmp_path / "kit"
    kit.mkdir()
    for stem, n in (("train", 12), ("t10k", 6)):
        write_idx(kit / f"{stem}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), np.uint8))
        write_idx(kit / f"{stem}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8))
    return argparse.Namespace(dry_run=False, data_root=str(kit), work_dir=str(tmp_path / "w"),
                              seed=0)


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def legacy(path):  # what the check wrote before: a plain torch.save, half of it
    torch.save({"train": torch.zeros(2, 1, 28, 28, dtype=torch.uint8)}, path)
    truncate(path)


def other_shape(path):
    gpu_check = load_module()
    gpu_check.save_cache(path, {"train": torch.zeros(2, 784, dtype=torch.uint8),
                                "test": torch.zeros(2, 784, dtype=torch.uint8), "source": "x"})


@pytest.mark.parametrize("spoil", [truncate, legacy, other_shape])
def test_an_unusable_data_cache_is_named_and_rebuilt(spoil, tmp_path, capsys):
    # a cache half-written by a killed part used to fail every later part inside torch.load
    gpu_check = load_module()
    args = kit_args(tmp_path)
    first = gpu_check.load_data(args, torch, torch.device("cpu"))
    cache = tmp_path / "w" / "fashion_mnist_binarized.pt"
    spoil(cache)
    capsys.readouterr()
    again = gpu_check.load_data(args, torch, torch.device("cpu"))
    assert f"cannot use the cached file {cache}" in capsys.readouterr().out
    assert again["source"] == first["source"] and torch.equal(again["train"], first["train"])
    cached = gpu_check.load_data(args, torch, torch.device("cpu"))  # rebuilt: read quietly
    assert torch.equal(cached["test"], first["test"]) and not capsys.readouterr().out
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # no temporary files


def test_the_iwae_part_names_an_unusable_vae_state_and_bounds_an_untrained_vae(
        tmp_path, monkeypatch, capsys):
    # a corrupt vae_state.pt (the epoch part killed while writing it) failed the part
    gpu_check = load_module()
    monkeypatch.setattr(gpu_check, "_setup", lambda args: (torch, torch.device("cpu")))
    monkeypatch.setitem(gpu_check.DRY, "num_test", 8)
    monkeypatch.setitem(gpu_check.DRY, "iwae_k", 4)
    args = argparse.Namespace(dry_run=True, data_root=None, work_dir=str(tmp_path / "w"),
                              seed=0)
    results = gpu_check.Results(tmp_path / "out")
    state = tmp_path / "w" / "vae_state.pt"
    gpu_check.save_cache(state, {"state": gpu_check.make_vae(gpu_check.DRY, 1).state_dict()})
    gpu_check.part_iwae(args, results, gpu_check.Clock(None))
    assert results.load()["iwae"]["model"].startswith("trained")
    whole = state.read_bytes()
    for spoil in (lambda: state.write_bytes(whole[:100]),
                  lambda: state.write_bytes(b"not a checkpoint"),
                  lambda: gpu_check.save_cache(state, {"state": torch.nn.Linear(2, 2)
                                                        .state_dict()})):  # another network
        spoil()
        capsys.readouterr()
        gpu_check.part_iwae(args, results, gpu_check.Clock(None))
        assert results.load()["iwae"]["model"] == "untrained"
        assert f"cannot use the cached file {state}" in capsys.readouterr().out
