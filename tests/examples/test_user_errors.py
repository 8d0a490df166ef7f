"""The examples refuse a user's mistakes at the command line, before any training: flags out
of range, an output folder that cannot be written. And their JSON is readable by others."""

import argparse
import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ppl_models.text import BUNDLED_PATH
from scaffold.runs import start_run, write_json

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(script: str):
    """The example ``script`` as a module (registered, as dataclasses need)."""
    name = f"example_{script}"
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def parse(script: str, argv: list[str]):
    return load(script).parse_args(argv)


@pytest.mark.parametrize("script, argv, message", [
    ("own_pair", ["--num-test", "0"], "--num-test: must be a positive integer"),
    ("toy_manifold", ["--num-train", "0"], "--num-train: must be a positive integer"),
    ("own_pair", ["--max-k", "10"], "--max-k: k-hat needs at least 21 weights"),
    # a bound sweep of 1e9 repeats ran for ever
    ("toy_manifold", ["--repeats", "1000000000"], "--repeats: must be an integer in 1..1000"),
    ("vae", ["--num-test", "1"], "--num-test: the active-unit count needs at least 2"),
    ("vae", ["--objective", "iwae", "--kl-warmup", "3"], "--kl-warmup: the iwae bound"),
    # ignored without a word: only the bernoulli likelihood's images are binarized
    ("vae", ["--likelihood", "gaussian-learned", "--binarization", "dynamic"],
     "--binarization: dynamic binarization is for the bernoulli likelihood"),
    # a traceback from fit (before training)
    ("vae", ["--compile", "--mixed-precision"],
     "--mixed-precision: not allowed with argument --compile"),
    ("vae", ["--compile", "--distributed"], "--compile: the compiled step trains in one"),
    ("vae", ["--seed", "-1"], "--seed: must be an integer >= 0"),
    ("outliers", ["--inlier-classes", "3", "11"], "--inlier-classes: invalid choice: 11"),
    # numpy seeds only below 2**32: start_run's pyro.set_rng_seed failed in a traceback
    ("vae", ["--seed", str(2**32)], "--seed: must be an integer in 0..2**32 - 1"),
    ("gallery", ["--seed", str(2**32)], "--seed: must be an integer in 0..2**32 - 1"),
    # the gallery's stages failed after the VAEs trained, not naming the flag
    ("gallery", ["--lm-num-train", "0"], "--lm-num-train: must be a positive integer"),
    ("gallery", ["--pixelcnn-num-train", "0"], "--pixelcnn-num-train: must be a positive"),
    ("gallery", ["--num-train", "0"], "--num-train: must be a positive integer"),
    ("gallery", ["--num-test", "0"], "--num-test: must be a positive integer"),
    # ignored without a word for the 8-bit and continuous likelihoods
    ("pixelcnn", ["--likelihood", "categorical256", "--binarization", "static"],
     "--binarization: binarization is for the bernoulli likelihood"),
    ("gallery", ["--num-test", "19"], "--num-test: the figures need at least 100 test images"),
    ("gallery", ["--outliers-per-side", "150"],
     ("--num-test: the figures need at least 3000 test images (300 of each of the 10 classes "
      "with --outliers-per-side 150), got 2000")),
    ("gallery", ["--audio-seconds", "0.2"],
     "--audio-seconds: the synthetic signal must hold two WaveNet segments"),
    ("gallery", ["--generate-seconds", "1e-5"],
     "--generate-seconds: must be at least one sample, 1/8000 s, got 1e-05"),
    ("toy_manifold", ["--noise-scale", "0"], "--noise-scale: must be a finite positive number"),
    ("toy_manifold", ["--noise-scale", "10"], "--noise-scale: must be at most 1, got 10"),
    # a variance beyond float32: a traceback from ToyManifold's constructor
    ("toy_manifold", ["--noise-scale", "1e-19"],
     "--noise-scale: noise_scale=1e-19: its square is beyond the range of torch.float32"),
    # 10**12 steps ran for ever after training the VAE
    ("completion", ["--map-steps", "1000000000000"],
     "--map-steps: must be an integer in 0..1000000"),
    ("super_resolution", ["--mh-steps", "1000000000000"],
     "--mh-steps: must be an integer in 2..1000000"),
    ("vae", ["--epochs", "1000000000000"], "--epochs: must be an integer in 0..1000000"),
    # each of these failed in the library after training (or after training and AIS)
    ("own_pair", ["--gap-steps", "0"], "--gap-steps: must be an integer in 1..1000000"),
    ("own_pair", ["--ais-chains", "1"], "--ais-chains: must be an integer >= 2"),
    ("own_pair", ["--ais-steps", "0"], "--ais-steps: must be an integer in 1..1000000"),
    ("super_resolution", ["--factors", "2", "1"], "--factors: must be an integer >= 2"),
    ("super_resolution", ["--mwg-steps", "0"], "--mwg-steps: must be an integer in 1..1000000"),
    ("super_resolution", ["--mh-steps", "1"], "--mh-steps: must be an integer in 2..1000000"),
    ("super_resolution", ["--gibbs-sweeps", "0"],
     "--gibbs-sweeps: must be an integer in 1..1000000"),
    ("super_resolution", ["--subset-size", "1"], "--subset-size: must be an integer >= 2"),
    ("super_resolution", ["--factors", "8", "--subset-size", "17"],
     "--subset-size: the PixelCNN Gibbs step would enumerate 2^17 fillings"),
    ("completion", ["--mwg-steps", "0"], "--mwg-steps: must be an integer in 1..1000000"),
    ("compression", ["--latent-bits", "17"], "--latent-bits: must be an integer in 1..16"),
    ("compression", ["--latent-bits", "0"], "--latent-bits: must be an integer in 1..16"),
    ("compression", ["--num-train", "0"], "--num-train: must be a positive integer"),
    ("language_model", ["--dropout", "1.5"], "--dropout: must be a number in [0, 1)"),
    ("language_model", ["--dropout", "1"], "--dropout: must be a number in [0, 1)"),
    ("language_model", ["--dropout", "nan"], "--dropout: must be a number in [0, 1)"),
    ("language_model", ["--num-train", "0"], "--num-train: must be a positive integer"),
    ("pixelcnn", ["--dropout", "1"], "--dropout: must be a number in [0, 1)"),
    ("pixelcnn", ["--kernel-size", "4"], "--kernel-size: must be an odd positive integer"),
    ("pixelcnn", ["--first-kernel-size", "6"],
     "--first-kernel-size: must be an odd positive integer"),
    ("pixel_vae", ["--kernel-size", "2"], "--kernel-size: must be an odd positive integer"),
    ("pixel_vae", ["--first-kernel-size", "4"],
     "--first-kernel-size: must be an odd positive integer"),
    ("pixel_vae", ["--num-test", "1"], "--num-test: the active-unit count needs at least 2"),
    ("representations", ["--num-train", "5"],
     ("--num-train: k-means and the Gaussian mixture fit 10 clusters to the training "
      "features, so at least 10 training images, got 5")),
    # a rate of 7 trained the background model on inverted images
    ("outliers", ["--flip-rate", "7"], "--flip-rate: must be a probability, a number in [0, 1]"),
    ("outliers", ["--inlier-classes", *"0123456789"], "--inlier-classes: leave one class out"),
    # elbo_vs_iwae refused these in main, after the first data set had trained
    ("elbo_vs_iwae", ["--max-k", "20"], "--max-k: must be an integer in 21..5000, got '20'"),
    ("elbo_vs_iwae", ["--max-k", "5001"], "--max-k: must be an integer in 21..5000"),
    # tracebacks from resolve_device, a MemoryError in an unrelated import, an allocation
    # of 8 GB after training (night of 2026-11-28)
    ("vae", ["--device", "banana"], "argument --device: device must be 'auto', 'cpu'"),
    ("vae", ["--device", "mps"], "argument --device: device must be 'auto', 'cpu', 'cuda'"),
    ("vae", ["--device", "cuda:7"], "argument --device: device 'cuda:7' was requested"),
    ("vae", ["--threads", "100000"], "argument --threads: must be at most the"),
    ("wavenet", ["--num-generate", "1000000000"],
     "argument --num-generate: must be an integer in 1..1000000"),
    # a repeated value ran again and replaced the first run's results without a word
    ("super_resolution", ["--factors", "2", "4", "2"], "argument --factors: 2 given more than"),
    ("similarity", ["--datasets", "digits", "digits"], "argument --datasets: digits given"),
    ("pixel_likelihoods", ["--likelihoods", "bernoulli", "bernoulli"],
     "argument --likelihoods: bernoulli given more than once"),
    # finite floats that are inf in float32: --free-bits failed in torch's clamp and
    # --sparsity in a NaN factor, each with a traceback after the models before had trained
    ("pixel_vae", ["--free-bits", "1e39"], "argument --free-bits: must be at most 3.4e+38"),
    ("vae", ["--sparsity", "1e300"], "argument --sparsity: must be at most 3.4e+38"),
    ("vae", ["--lr", "1e39"], "argument --lr: must be at most 3.4e+38"),
    # 0 in float32: fit's own refusal surfaced as a traceback
    ("vae", ["--lr", "1e-50"], "argument --lr: rounds to 0 in float32, where the models compute "
     "(its smallest positive number is 1.4e-45); give 0 or a larger number, got '1e-50'"),
    ("pixel_vae", ["--free-bits", "1e-60"], "argument --free-bits: rounds to 0 in float32"),
    # a repeated data set trained again and replaced the first pass's checkpoints
    ("elbo_vs_iwae", ["--datasets", "toy,toy"], "argument --datasets: toy given more than "
     "once; each value is run once, its results keyed by it"),
    ("elbo_vs_iwae", ["--objectives", "elbo,iwae-5,elbo"], "argument --objectives: elbo given"),
    ("outliers", ["--models", "vae", "vae"], "argument --models: vae given more than once"),
])
def test_flags_out_of_range_are_refused_by_argparse(script, argv, message, capsys):
    # each used to pass argparse and fail later, some after training, inside torch or numpy
    with pytest.raises(SystemExit):
        parse(script, argv)
    assert message in capsys.readouterr().err


def no_training(*args, **kwargs):
    raise AssertionError("trained before refusing the flag")


@pytest.fixture
def long_line(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("cat\ndog\n" + "x" * 40_000 + "\nemu\nfox\n")
    return path


@pytest.mark.parametrize("script, argv, message", [
    # failed after training: the k nearest of a gallery of 5 images
    ("similarity", ["--datasets", "digits", "--num-train", "5", "--k", "10"],
     "similarity: error: argument --k: must lie in 1..5, the digits gallery's size"),
    # the logistic-regression probes failed after training on one class
    ("vae", ["--num-train", "1"], "vae: error: argument --num-train: the probes need"),
    # a ValueError traceback
    ("super_resolution", ["--factors", "3"],
     "super_resolution: error: argument --factors: 3 does not divide the digits images' size"),
    # one 40,000-character line padded every batch to it (hundreds of MB)
    ("compression", ["--words", "LONG"],
     ("compression: error: argument --words: LONG line 3: a word of 40,000 characters, "
      "more than max_length=100")),
    ("language_model", ["--data", "LONG"],
     "language_model: error: argument --data: LONG line 3: a word of 40,000 characters"),
    ("language_model", ["--data", "MISSING"], "argument --data: no word list at MISSING"),
    # tracebacks naming neither the flag nor the value (night of 2026-11-28)
    ("language_model", ["--max-order", "1000"],
     "language_model: error: argument --max-order: order 1000 with"),
    ("compression", ["--order", "40", "--num-train", "20"],
     "compression: error: argument --order: order 40 with"),
    ("wavenet", ["--source", "synthetic", "--seconds", "0.5", "--rate", "1"],
     "wavenet: error: "),
    ("wavenet", ["--source", "synthetic", "--seconds", "0.5", "--test-fraction", "1"],
     "wavenet: error: "),
    ("wavenet", ["--wav", "MISSING"], "wavenet: error: "),
    ("wavenet", ["--channels", "1000000"], "wavenet: error: channels=1000000"),
    # more images than the data hold: the slice [:N] cut them short without a word
    *[(script, ["--num-train", "5000"], f"{script}: error: argument --num-train: 5000 asked "
       f"for, but the digits training split holds 1297")
      for script in ("vae", "pixel_vae", "pixel_likelihoods", "pixelcnn", "completion",
                     "representations", "super_resolution", "similarity")],
    ("vae", ["--num-test", "301"], "--num-test: 301 asked for, but the digits test split holds"),
    ("pixelcnn", ["--num-valid", "201"],
     "--num-valid: 201 asked for, but the digits validation split holds 200"),
    # networks too large for memory: a traceback, or a refusal after training the ones
    # built before them; now a usage error before any training
    ("vae", ["--hidden", "100000000"], "vae: error: latent_dim=16, hidden=(100000000,)"),
    ("completion", ["--hidden", "100000000"], "completion: error: latent_dim=16"),
    ("outliers", ["--hidden", "100000000"], "outliers: error: latent_dim=16"),
    ("super_resolution", ["--hidden", "100000000"], "super_resolution: error: latent_dim=16"),
    ("pixel_vae", ["--hidden", "100000000"], "pixel_vae: error: latent_dim=16"),
    ("representations", ["--hidden", "100000000"], "representations: error: latent_dim=16"),
    ("pixel_likelihoods", ["--hidden", "100000000"], "pixel_likelihoods: error: latent_dim=16"),
    ("toy_manifold", ["--hidden", "100000000"], "argument --hidden: hidden=100000000"),
    ("language_model", ["--hidden", "100000000"], "language_model: error: embedding=32"),
    ("similarity", ["--hidden", "100000000"], "similarity: error: latent_dim=16"),
    # the allocator's raw error, after the data were half simulated
    ("own_pair", ["--num-factors", "100000000"], "own_pair: error: --num-train + --num-test"),
    ("own_pair", ["--data-dim", "100000000"], "more than the"),
    # trained, then the closed form's 10^5 x 10^5 covariance failed in the allocator
    ("own_pair", ["--data-dim", "100000", "--epochs", "1"],
     "own_pair: error: --num-train + --num-test = 2200 rows of --data-dim 100000"),
    # 10**9 test words were cut to the split's 6388 without a word
    ("compression", ["--num-test-words", "1000000000"],
     "--num-test-words: 1000000000 asked for, but the test split of"),
    ("outliers", ["--num-train", "1000"], "--num-train: 1000 asked for, but the inlier part "
     "(classes [0, 1, 2, 3, 4]) of the digits training split holds"),
    # all the words were used and compression's config recorded the number asked for
    ("compression", ["--words", str(BUNDLED_PATH), "--num-train", "100000000"],
     f"compression: error: argument --num-train: 100000000 asked for, but the training split "
     f"of file:{BUNDLED_PATH} holds 4343"),
    ("language_model", ["--data", str(BUNDLED_PATH), "--num-train", "100000000"],
     f"language_model: error: argument --num-train: 100000000 asked for, but the training "
     f"split of file:{BUNDLED_PATH} holds 4343"),
    # particles whose log weights outgrow the machine's memory: refused by the library's
    # memory check inside the evaluation, after all training, every trained model lost
    *[(script, [*argv, "1000000000000"],
       f"{script}: error: argument {argv[-1]}: {argv[-1]}=1000000000000 particles for")
      for script, argv in (
          ("toy_manifold", ["--num-train", "50", "--num-test", "20", "--max-k"]),
          ("own_pair", ["--num-train", "50", "--num-test", "20", "--max-k"]),
          ("own_pair", ["--num-train", "50", "--num-test", "20", "--ais-chains"]),
          ("vae", ["--num-train", "100", "--num-test", "10", "--max-k"]),
          ("pixel_vae", ["--num-train", "100", "--num-test", "10", "--max-k"]),
          ("pixel_likelihoods", ["--num-train", "100", "--num-test", "10", "--k"]),
          ("outliers", ["--num-train", "100", "--num-test", "10", "--num-samples"]),
          ("completion", ["--num-train", "100", "--num-test", "10", "--nll-k"]))],
    # the test images were cut to the split's 300 without a word (the config said 5000)
    ("compression", ["--num-train", "100", "--num-test-words", "10", "--num-test-images",
                     "5000"], "compression: error: argument --num-test-images: 5000 asked for, "
     "but the digits test split holds"),
    # the gallery cut its training sets to the data without a word
    ("gallery", ["--dataset", "digits", "--num-train", "100000"],
     "gallery: error: argument --num-train: 100000 asked for, but the digits training split "
     "holds"),
    ("gallery", ["--dataset", "digits", "--pixelcnn-num-train", "100000"],
     "argument --pixelcnn-num-train: 100000 asked for, but the digits training split holds"),
    ("gallery", ["--dataset", "digits", "--lm-num-train", "100000000"],
     "argument --lm-num-train: 100000000 asked for, but the word list's training split"),
    # the default 300 test images, 100 at a time: 1.2 TB of log weights at K = 3 * 10**9
    ("vae", ["--max-k", "3000000000"], "vae: error: argument --max-k: --max-k=3000000000 "
     "particles for 100 datapoints"),
    # the probes on a code of 100000 dims stalled for minutes after training
    ("vae", ["--latent-dim", "100000"], "vae: error: argument --latent-dim: 100000 is more "
     "than 4 latents per pixel of the 64-pixel digits images (at most 256)"),
    # a root that is a file: a NotADirectoryError traceback
    ("super_resolution", ["--dataset", "mnist", "--data-root", "AFILE"],
     "super_resolution: error: argument --data-root: mnist: root AFILE is a file"),
    ("similarity", ["--datasets", "fashion-mnist", "--fashion-root", "AFILE"],
     "similarity: error: argument --fashion-root: fashion-mnist: root AFILE is a file"),
    # the only data set asked for, missing: skipped, and the run exited 0 with no results
    # (with others that load, it is skipped with a message)
    ("similarity", ["--datasets", "fashion-mnist", "--fashion-root", "MISSING"],
     "similarity: error: argument --fashion-root: fashion-mnist: missing"),
    ("elbo_vs_iwae", ["--datasets", "mnist", "--tiny", "--data-root", "MISSING"],
     "elbo_vs_iwae: error: argument --data-root: mnist: the four IDX files are not in MISSING"),
    ("elbo_vs_iwae", ["--datasets", "fashion-mnist", "--tiny", "--fashion-root", "AFILE"],
     "elbo_vs_iwae: error: argument --fashion-root: fashion-mnist: root AFILE is a file"),
    ("elbo_vs_iwae", ["--datasets", "fashion-mnist,mnist", "--tiny", "--fashion-root", "AFILE",
                      "--data-root", "MISSING"], "elbo_vs_iwae: error: argument --datasets: "
     "none of the data sets can be loaded: fashion-mnist: root AFILE is a file"),
])
def test_flags_refused_once_the_data_are_loaded_before_any_training(
        script, argv, message, tmp_path, long_line, monkeypatch, keep_threads):
    module = load(script)
    if hasattr(module, "fit"):
        monkeypatch.setattr(module, "fit", no_training)
    (tmp_path / "afile").write_text("not a folder")
    paths = {"LONG": str(long_line), "MISSING": str(tmp_path / "missing.txt"),
             "AFILE": str(tmp_path / "afile")}
    argv = [paths.get(a, a) for a in argv]
    args = module.parse_args([*argv, "--threads", "1", "--out-dir", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as refused:
        module.main(args)
    for name, path in paths.items():
        message = message.replace(name, path)
    assert message in str(refused.value)


@pytest.mark.parametrize("script", ["own_pair", "toy_manifold", "vae"])
def test_fits_refusal_is_a_usage_error(script, tmp_path, keep_threads):
    # fit refuses particles beyond memory before its first step; the refusal came as a
    # traceback through the example
    module = load(script)
    args = module.parse_args(["--num-particles", "100000000", "--epochs", "1", "--threads", "1",
                              "--out-dir", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match=f"{script}: error: num_particles=100000000 particles "
                                         "for .* lower num_particles"):
        module.main(args)


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_an_out_dir_that_is_a_file_or_not_writable_is_refused_up_front(tmp_path, keep_threads):
    file = tmp_path / "a_file"
    file.write_text("")
    args = argparse.Namespace(out_dir=str(file), seed=0, threads=1)
    with pytest.raises(SystemExit, match="is a file, not a folder"):
        start_run(args)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
        try:
            with pytest.raises(SystemExit, match="cannot be written"):
                start_run(argparse.Namespace(out_dir=str(locked), seed=0, threads=1))
        finally:
            locked.chmod(stat.S_IRWXU)


def test_json_is_written_with_the_umasks_mode_and_strict(tmp_path):
    # mkstemp's private mode 0600 used to stay on metrics.json
    previous = os.umask(0o022)
    try:
        path = write_json(tmp_path / "metrics.json", {"stderr": float("nan"), "k": [1.0]})
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert json.loads(path.read_text()) == {"stderr": None, "k": [1.0]}


@pytest.mark.parametrize("content, message", [
    (None, r"is a folder; pass its metrics.json"),
    ("not json", r"is not JSON"),
    ('{"not": 1}', r"is not the metrics.json of an elbo_vs_iwae run"),
])
def test_tables_from_a_file_that_is_no_finished_run_is_named(tmp_path, content, message):
    # full tracebacks before (JSONDecodeError, KeyError 'datasets', IsADirectoryError)
    path = tmp_path / "metrics.json"
    if content is None:
        path = tmp_path
    else:
        path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load("elbo_vs_iwae")._finished_run(path)


def test_a_refused_run_leaves_no_empty_folders_behind(tmp_path):
    """The flag refused after set-up (the digits gallery has 5 images): the folders the run
    created for its results are removed as it exits; one that existed before stays."""
    script = Path(__file__).resolve().parents[2] / "examples" / "similarity.py"
    existing = tmp_path / "existing"
    existing.mkdir()
    for out, kept in ((tmp_path / "new" / "run", tmp_path), (existing, existing)):
        done = subprocess.run(
            [sys.executable, str(script), "--datasets", "digits", "--num-train", "5", "--k",
             "10", "--threads", "1", "--out-dir", str(out)],
            capture_output=True, text=True, timeout=300)
        assert done.returncode == 1 and "argument --k: must lie in 1..5" in done.stderr
        assert kept.is_dir() and not (tmp_path / "new").exists()
        assert list(existing.iterdir()) == []


def test_an_empty_out_dir_is_refused_not_taken_for_the_working_folder(keep_threads):
    for empty in ("", "  "):
        with pytest.raises(SystemExit, match="--out-dir is empty; name a folder"):
            start_run(argparse.Namespace(out_dir=empty, seed=0, threads=1))


def test_a_folder_another_run_writes_into_is_refused(tmp_path, keep_threads):
    """Two runs of an example on one --out-dir replaced each other's metrics.json and
    figures, both exiting 0; the second is now refused. A run holding the folder may start
    again in its own process (an example calling another's main), and benchmarks, which
    write files named after themselves into a shared folder, do not hold it."""
    import fcntl

    args = argparse.Namespace(out_dir=str(tmp_path / "run"), seed=0, threads=1)
    start_run(args)
    start_run(args)  # this process holds it already
    (tmp_path / "other").mkdir()
    other = os.open(tmp_path / "other", os.O_RDONLY)  # another run's hold
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        busy = argparse.Namespace(out_dir=str(tmp_path / "other"), seed=0, threads=1)
        with pytest.raises(SystemExit, match=r"--out-dir .*other is in use by another run"):
            start_run(busy)
        start_run(busy, exclusive=False)
    finally:
        os.close(other)


def test_a_max_k_off_the_ladder_is_evaluated_itself():
    # --max-k 7 evaluated K = 1 only and --max-k 20000 stopped at 5000, both silently
    from scaffold.flags import evaluation_ks
    assert evaluation_ks(7) == [1, 7]
    assert evaluation_ks(20000) == [1, 10, 100, 1000, 5000, 20000]
    assert evaluation_ks(5000) == [1, 10, 100, 1000, 5000]
    assert evaluation_ks(1) == [1]


def test_an_input_file_the_run_would_write_over_is_refused(tmp_path, keep_threads):
    # wavenet.py --wav D/data.wav --out-dir D replaced the user's 16 kHz recording with the
    # run's 8 kHz mu-law copy, exit 0
    from ppl_models.audio import synthetic_signal, write_wav

    out = tmp_path / "run"
    out.mkdir()
    write_wav(out / "data.wav", synthetic_signal(0.2, 16000, seed=0), 16000)
    before = (out / "data.wav").read_bytes()
    module = load("wavenet")
    args = module.parse_args(["--wav", str(out / "data.wav"), "--out-dir", str(out),
                              "--threads", "1"])
    with pytest.raises(SystemExit, match=r"argument --wav: .*data.wav is the file this run "
                                          r"writes its own data.wav to"):
        module.main(args)
    assert (out / "data.wav").read_bytes() == before


def test_the_evaluation_memory_check_is_the_librarys(monkeypatch):
    # [count, batch] log weights of float32: 100 particles for 2 rows at a time are 800 bytes
    import inference.checks
    from scaffold.flags import check_evaluation_memory

    monkeypatch.setattr(inference.checks, "physical_memory_bytes", lambda: 800)
    data = torch.zeros(5, 3)
    check_evaluation_memory("x", "--max-k", 100, data, batch_size=2)
    with pytest.raises(SystemExit, match=r"^x: error: argument --max-k: --max-k=101 "):
        check_evaluation_memory("x", "--max-k", 101, data, batch_size=2)
    with pytest.raises(SystemExit, match="for 5 datapoints"):  # all at once
        check_evaluation_memory("x", "--max-k", 100, data)
    with pytest.raises(SystemExit, match="8 bytes each"):  # float64 data, float64 weights
        check_evaluation_memory("x", "--max-k", 100, data.double(), batch_size=2)


def test_a_count_left_unset_takes_its_default_cut_to_the_data():
    # compression's and language_model's default of 20000 words, on the bundled 4343
    from scaffold.flags import count_used

    assert count_used("x", "--num-train", None, 4343, "the split", 20000) == 4343
    assert count_used("x", "--num-train", None, 51099, "the split", 20000) == 20000
    assert count_used("x", "--num-train", 500, 4343, "the split", 20000) == 500
    with pytest.raises(SystemExit, match="--num-train: 4344 asked for, but the split holds"):
        count_used("x", "--num-train", 4344, 4343, "the split", 20000)


@pytest.mark.parametrize("script, flag, what", [("wavenet", "--wav", "a WAV file"),
                                                 ("language_model", "--data", "a word list"),
                                                 ("compression", "--words", "a word list")])
def test_an_input_file_that_is_a_folder_or_a_broken_link_is_named(script, flag, what, tmp_path,
                                                                  capsys):
    # "no WAV file at <folder>" for a folder that exists, and for a link to nothing
    link = tmp_path / "link.wav"
    link.symlink_to(tmp_path / "gone.wav")
    for path, message in ((tmp_path, f"{tmp_path} is a folder; pass {what} in it"),
                          (link, f"{link} is a broken link (to {tmp_path / 'gone.wav'}, "
                                 "which does not exist)")):
        with pytest.raises(SystemExit):
            parse(script, [flag, str(path)])
        assert f"argument {flag}: {message}" in capsys.readouterr().err
    assert parse(script, [flag, str(tmp_path / "missing")]).__dict__[flag[2:]] == \
        str(tmp_path / "missing")  # left to the reader, which names it


@pytest.mark.parametrize("script", ["toy_manifold"])
def test_a_diverged_training_ends_in_one_line(script, tmp_path):
    # --lr 1e30 ended in a 121-line chain of two tracebacks from inside torch and pyro
    import subprocess
    import sys

    example = Path(__file__).resolve().parents[2] / "examples" / f"{script}.py"
    done = subprocess.run(
        [sys.executable, str(example), "--lr", "1e30", "--epochs", "2", "--threads", "1",
         "--num-train", "64", "--num-test", "21", "--max-k", "21",
         "--out-dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(
            Path(__file__).resolve().parents[2])})
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"{script}: training diverged" in done.stderr.replace("\r", "\n").splitlines()[-1]


def test_out_dir_names_and_folders_refused_before_any_work(tmp_path, keep_threads):
    # a name over the file system's limit ended in pathlib's raw "File name too long"; a
    # folder named metrics.json was found only when the results were written, after the work
    from scaffold.runs import writable_folder

    with pytest.raises(SystemExit, match="--out-dir .* cannot be used: File name too long"):
        writable_folder(tmp_path / ("x" * 300))
    (tmp_path / "run" / "metrics.json").mkdir(parents=True)
    with pytest.raises(SystemExit, match="holds a folder named metrics.json"):
        writable_folder(tmp_path / "run")


def test_metrics_that_cannot_be_written_are_printed(tmp_path, monkeypatch, capsys):
    import errno

    import scaffold.runs as runs

    def full_disk(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs, "write_json", full_disk)
    with pytest.raises(SystemExit, match="could not write .*metrics.json \\(No space left on "
                                         "device\\); the metrics are printed above"):
        runs.finish_run(tmp_path, {"elbo": -1.5}, 0.0)
    assert json.loads(capsys.readouterr().out)["elbo"] == -1.5


def test_a_folder_holding_another_examples_results_is_refused(tmp_path, monkeypatch):
    # vae.py --out-dir <own_pair.py's folder> replaced its metrics.json and bounds_vs_k.png
    # silently, leaving a folder of two runs mixed
    from scaffold.runs import finish_run

    first = tmp_path / "first"
    monkeypatch.setattr(sys, "argv", ["own_pair.py"])
    out, _, start = start_run(argparse.Namespace(out_dir=str(first), seed=0, threads=1))
    assert finish_run(out, {"loss": 1.0}, start)["script"] == "own_pair.py"
    monkeypatch.setattr(sys, "argv", ["vae.py"])
    with pytest.raises(SystemExit, match=r"holds the results of own_pair.py .* this run of "
                                         r"vae.py would replace"):
        start_run(argparse.Namespace(out_dir=str(first), seed=0, threads=1))
    monkeypatch.setattr(sys, "argv", ["own_pair.py"])  # a rerun replaces its own results
    start_run(argparse.Namespace(out_dir=str(first), seed=0, threads=1))
    unnamed = tmp_path / "unnamed"  # results of a version that did not record the script
    unnamed.mkdir()
    write_json(unnamed / "metrics.json", {"loss": 1.0})
    monkeypatch.setattr(sys, "argv", ["vae.py"])
    start_run(argparse.Namespace(out_dir=str(unnamed), seed=0, threads=1))


def test_an_example_run_from_a_notebook_is_named_by_its_parser_not_by_the_kernel(tmp_path,
                                                                                   monkeypatch):
    # the folder check named the script by sys.argv[0]: from a notebook, every example was
    # "ipykernel_launcher.py" (two examples mixed silently, a rerun into its CLI folder refused)
    from scaffold.runs import finish_run

    path = Path(__file__).resolve().parents[2] / "examples" / "toy_manifold.py"
    spec = importlib.util.spec_from_file_location("toy_manifold_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py"])
    args = example.parse_args(["--out-dir", str(tmp_path / "toy"), "--threads", "1"])
    assert args.script == "toy_manifold.py"
    out, _, start = start_run(args)
    finish_run(out, {"config": vars(args)}, start)
    assert json.loads((out / "metrics.json").read_text())["script"] == "toy_manifold.py"
    other = argparse.Namespace(out_dir=str(out), seed=0, threads=1, script="vae.py")
    with pytest.raises(SystemExit, match="results of toy_manifold.py"):
        start_run(other)
