"""Round 8 of a careless or hostile user's inputs to the models, data readers and examples:
each is refused by name before any work (no huge build, no raw torch or pathlib error)."""

import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import ppl_models
from ppl_models import (Autoencoder, GRULanguageModel, LinearGaussian, PixelCNN, PixelVAE,
                        ToyManifoldVAE, VAE, Vocabulary, WaveNet)
from ppl_models.audio import load_signal, read_wav, write_wav
from ppl_models.data import read_idx, write_idx

# the examples of the checkout whose ppl_models is imported (they import ``scaffold``)
EXAMPLES = Path(ppl_models.__file__).resolve().parents[1] / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))


def load(script: str):
    """The example ``script`` as a module."""
    spec = importlib.util.spec_from_file_location(f"round8_{script}", EXAMPLES / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def parse(script: str, argv: list[str]):
    """``parse_args(argv)`` of the example ``script``."""
    return load(script).parse_args(argv)


# ------------------------------------------------------------------ 1. depth of the networks
@pytest.mark.parametrize("build, named", [
    (lambda: PixelCNN((1, 4, 4), channels=1, num_blocks=10**6), "num_blocks=1000000"),
    (lambda: PixelCNN((2, 4, 4), channels=2, num_blocks=10**7), "num_blocks=10000000"),
    (lambda: PixelCNN((1, 4, 4), channels=1, num_blocks=1025), "num_blocks=1025"),
    (lambda: WaveNet(layers=1, stacks=10**6, channels=1, skip_channels=1),
     "layers=1, stacks=1000000"),
    (lambda: WaveNet(layers=8, stacks=200, channels=1, skip_channels=1),
     "layers=8, stacks=200"),
    (lambda: GRULanguageModel(Vocabulary(), embedding=1, hidden=1, layers=10**6),
     "layers=1000000"),
    (lambda: GRULanguageModel(Vocabulary(), embedding=1, hidden=1, layers=1025),
     "layers=1025"),
])
def test_depth_beyond_the_limit_refused_before_building(build, named):
    """The weight count missed the modules' own cost: a million one-channel blocks (164 MB
    of weights) passed and built toward 19 GB; 10**5 GRU layers built for minutes."""
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"more than the limit of 1,024") as info:
        build()
    assert time.perf_counter() - start < 1.0
    message = str(info.value)
    assert named in message and "would take about" in message and "MB of modules" in message


def test_pixelcnn_example_refuses_too_many_blocks_as_usage(tmp_path):
    """The example let the library's ValueError out as a traceback."""
    example = load("pixelcnn")
    args = example.parse_args(["--blocks", "5000", "--epochs", "1", "--threads", "1",
                               "--out-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"^pixelcnn: error: num_blocks=5000: .* limit of 1,024"):
        example.main(args)


def test_depth_at_the_limit_still_builds():
    """The bound is the documented maximum, not below it: small networks are unaffected."""
    assert len(WaveNet(layers=4, stacks=256, channels=1, skip_channels=1).blocks) == 1024
    assert len(PixelCNN((1, 4, 4), channels=1, num_blocks=3).blocks) == 3


# ------------------------------------------------------ 2. hidden widths of a conv network
@pytest.mark.parametrize("build", [
    lambda: VAE((1, 28, 28), 4, network="conv", hidden=(10**7,)),
    lambda: VAE((1, 28, 28), 4, network="conv", hidden=(16,)),
    lambda: Autoencoder((1, 28, 28), 4, network="conv", hidden=(16,)),
    lambda: PixelVAE((1, 28, 28), 4, network="conv", hidden=(16,), channels=2, num_blocks=1),
])
def test_hidden_given_with_the_conv_network_is_refused(build):
    """``hidden`` was silently dropped for ``network="conv"``: (10**7,) built the same
    network as (16,)."""
    with pytest.raises(ValueError, match=r"hidden=\(.*\) is for network='mlp'.*conv"):
        build()


def test_hidden_left_unset_builds_both_networks():
    assert VAE((1, 28, 28), 4, network="conv").latent_dim == 4
    mlp = VAE((1, 4, 4), 2)  # the MLPs' default widths (400,)
    assert mlp.encoder.net[0].out_features == 400
    assert VAE((1, 4, 4), 2, hidden=(3,)).encoder.net[0].out_features == 3
    assert PixelVAE((1, 4, 4), 2, channels=2, num_blocks=1).encoder.net[0].out_features == 200


def test_vae_example_refuses_hidden_with_the_conv_network(capsys):
    with pytest.raises(SystemExit):
        parse("vae", ["--network", "conv", "--hidden", "300"])
    assert "argument --hidden" in capsys.readouterr().err
    assert parse("vae", ["--network", "conv"]).hidden is None
    assert parse("vae", []).hidden == [200]


# ------------------------------------- 5. --data-root / --download with a data set not using them
@pytest.mark.parametrize("script, argv, flag", [
    ("vae", ["--data-root", "does-not-exist"], "--data-root"),
    ("vae", ["--data-root", "x", "--dataset", "digits"], "--data-root"),
    ("vae", ["--download"], "--download"),
    ("vae", ["--download", "--dataset", "fashion-mnist"], "--download"),
    ("outliers", ["--data-root", "does-not-exist"], "--data-root"),
    ("super_resolution", ["--data-root", "does-not-exist"], "--data-root"),
    ("pixelcnn", ["--data-root", "x"], "--data-root"),
    ("pixel_vae", ["--data-root", "x"], "--data-root"),
    ("pixel_likelihoods", ["--data-root", "x"], "--data-root"),
])
def test_data_flags_the_dataset_does_not_use_are_usage_errors(script, argv, flag, capsys):
    """They were silently ignored: a user's MNIST folder without ``--dataset mnist`` ran on
    the built-in digits."""
    with pytest.raises(SystemExit) as info:
        parse(script, argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: " in err and "Traceback" not in err


def test_data_flags_with_a_dataset_that_uses_them_are_accepted():
    args = parse("vae", ["--data-root", "x", "--dataset", "fashion-mnist"])
    assert args.data_root == "x"
    assert parse("vae", ["--dataset", "mnist", "--download"]).download
    assert parse("super_resolution", ["--dataset", "mnist", "--data-root", "x"]).data_root == "x"


# ------------------------------------------------- 4. path arguments of the readers and writers
PATH_CALLS = {
    "read_wav": lambda p: read_wav(p),
    "write_wav": lambda p: write_wav(p, torch.zeros(80), 8000),
    "write_idx": lambda p: write_idx(p, np.zeros((2, 2), np.uint8)),
    "read_idx": lambda p: read_idx(p),
}


@pytest.mark.parametrize("call", list(PATH_CALLS), ids=list(PATH_CALLS))
@pytest.mark.parametrize("path", [b"x.dat", 3, None], ids=["bytes", "int", "None"])
def test_a_path_of_the_wrong_type_is_named(call, path, tmp_path, monkeypatch):
    """bytes or an int failed inside pathlib ("argument should be a str object or an
    os.PathLike object returning str"), not naming the argument."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TypeError, match=rf"^path must be a str or a path, got "
                                        rf"{type(path).__name__}$"):
        PATH_CALLS[call](path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("call", list(PATH_CALLS), ids=list(PATH_CALLS))
def test_a_nul_byte_in_a_path_is_named(call, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"path 'a\\x00b' holds a NUL byte"):
        PATH_CALLS[call]("a\x00b")


@pytest.mark.parametrize("source", [b"x.wav", 3, 2.5, ["a.wav"]],
                         ids=["bytes", "int", "float", "list"])
def test_load_signal_names_a_source_of_the_wrong_type(source):
    with pytest.raises(TypeError, match=r"^source must be None, 'auto', 'speech', 'synthetic' "
                                        r"or the path of a WAV file"):
        load_signal(source)


def test_read_wav_names_a_fifo_and_a_device(tmp_path):
    """A named pipe or /dev/zero was "no WAV file at ..." (the file exists); read_idx says
    what it is."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"cannot read .*fifo: it is a named pipe, not a "
                                         r"regular file"):
        read_wav(fifo)
    with pytest.raises(ValueError, match=r"cannot read /dev/zero: it is a character device"):
        read_wav("/dev/zero")
    with pytest.raises(ValueError, match=r"it is a named pipe"):
        load_signal(fifo)
    assert time.perf_counter() - start < 2


def test_write_idx_names_a_meta_tensor_and_writes_a_cpu_tensor(tmp_path):
    """A meta tensor failed in numpy ("can't convert meta device type tensor to numpy")."""
    with pytest.raises(ValueError, match=r"array is a meta tensor"):
        write_idx(tmp_path / "m.idx", torch.empty(2, 3, dtype=torch.uint8, device="meta"))
    assert not (tmp_path / "m.idx").exists()
    write_idx(tmp_path / "t.idx", torch.arange(6, dtype=torch.uint8).reshape(2, 3))
    assert read_idx(tmp_path / "t.idx").tolist() == [[0, 1, 2], [3, 4, 5]]


# -------------------------------------------- 6. GRULanguageModel.logits and the embedding entries
def small_gru() -> GRULanguageModel:
    torch.manual_seed(0)
    return GRULanguageModel(Vocabulary("abc"), embedding=4, hidden=4)


@pytest.mark.parametrize("targets, error, match", [
    # torch's embedding took CPU weights and meta ids: logits from uninitialized memory
    (torch.zeros(2, 5, dtype=torch.long, device="meta"), ValueError, r"targets is a meta tensor"),
    (torch.zeros(2, 5), TypeError, r"targets must be an int64 tensor .* got torch.float32"),
    (torch.zeros(2, 5, dtype=torch.bool), TypeError, r"got torch.bool"),
    (torch.zeros(2, 5, dtype=torch.uint8), TypeError, r"got torch.uint8"),
    (torch.full((2, 5), -1), ValueError, r"targets must hold ids in 0..3 .* got range \[-1, -1\]"),
    (torch.full((2, 5), 10**6), ValueError, r"got range \[1000000, 1000000\]"),
    (torch.full((2, 5), 4), ValueError, r"no BOS or PAD"),  # BOS
    (torch.zeros(2, 0, dtype=torch.long), ValueError, r"shape \[batch, T\] with T >= 1"),
    (torch.zeros(5, dtype=torch.long), ValueError, r"shape \[batch, T\] with T >= 1"),
    ((i for i in range(3)), TypeError, r"targets must be an int64 tensor .* got generator"),
    ("abc", TypeError, r"got str"),
    (None, TypeError, r"got NoneType"),
])
def test_gru_logits_names_its_bad_targets(targets, error, match):
    with pytest.raises(error, match=match):
        small_gru().logits(targets)


def test_gru_logits_of_valid_targets_match_log_prob():
    lm = small_gru()
    x = lm.vocab.encode(["abc", "ca"])
    targets, mask = lm.prepare(x)
    log_p = lm.logits(targets).log_softmax(-1).gather(-1, targets[..., None])[..., 0]
    assert torch.allclose(torch.where(mask, log_p, 0.0).sum(1), lm.log_prob(x))


@pytest.mark.parametrize("e, match", [
    (torch.empty(2, 5, 4, device="meta"), r"e is a meta tensor"),
    (torch.zeros(2, 5, 3), r"e must have shape \[batch, T, 4\]"),
    (torch.zeros(2, 0, 4), r"with T >= 1"),
    (torch.zeros(2, 5, 4, dtype=torch.float64), r"e is torch.float64 on cpu"),
    (torch.zeros(2, 5, 4, dtype=torch.long), r"e must be a floating-point tensor"),
])
def test_gru_logits_from_embedding_names_a_bad_embedding(e, match):
    with pytest.raises((TypeError, ValueError), match=match):
        small_gru().logits_from_embedding(e)


@pytest.mark.parametrize("e, y, match", [
    (torch.zeros(2, 4, 6), None, r"y must be an int64 tensor \[batch\]"),  # conditional net
    (torch.empty(2, 4, 6, device="meta"), torch.tensor([0, 1]), r"e is a meta tensor"),
    (torch.zeros(2, 4, 6), torch.tensor([0, 3]), r"y must hold class ids in 0..2"),
    (torch.zeros(2, 3, 6), torch.tensor([0, 1]), r"e must have shape \[batch, 4, T\]"),
])
def test_wavenet_logits_from_embedding_names_a_bad_input(e, y, match):
    torch.manual_seed(0)
    wn = WaveNet(layers=2, channels=4, skip_channels=4, num_classes=3)
    with pytest.raises((TypeError, ValueError), match=match):
        wn.logits_from_embedding(e, y)
    assert wn.logits_from_embedding(torch.zeros(2, 4, 6), torch.tensor([0, 2])).shape == (2, 6, 256)


# ----------------------------------------------------- 7. the bundled models' extra guides
@pytest.mark.parametrize("x", [(i for i in range(3)), (torch.zeros(4, 3),),
                               {"x": torch.zeros(4, 3)}, "abc", None],
                         ids=["generator", "tuple", "dict", "str", "None"])
def test_extra_guides_check_x_before_reading_its_shape(x):
    """``exact_guide``/``prior_guide`` read ``x.shape`` first: a raw AttributeError."""
    with pytest.raises(TypeError, match=r"^x must be a torch.Tensor, got "):
        LinearGaussian(3, 2).exact_guide(x)
    with pytest.raises(TypeError, match=r"^x must be a torch.Tensor, got "):
        ToyManifoldVAE(hidden=4).prior_guide(x)


def test_extra_guides_still_draw_for_valid_data():
    import pyro.poutine as poutine
    lg, vae = LinearGaussian(3, 2), ToyManifoldVAE(hidden=4)
    trace = poutine.trace(lg.exact_guide).get_trace(torch.zeros(4, 3))
    assert trace.nodes["z"]["value"].shape == (4, 2)
    trace = poutine.trace(vae.prior_guide).get_trace(torch.zeros(5, 16))
    assert trace.nodes["z"]["value"].shape == (5, 1)


def test_flow_vae_takes_hidden_none_as_the_vae_does():
    """VAE's hidden now defaults to None; FlowVAE (MLP only) reads None as (400,) too."""
    from ppl_models import FlowVAE
    assert FlowVAE((1, 4, 4), 2, hidden=None, num_flows=1).encoder[0].out_features == 400


@pytest.mark.parametrize("argv, flag", [
    (["--data-root", "x"], "--data-root"),  # default --datasets: toy, digits, fashion-mnist
    (["--datasets", "toy", "--fashion-root", "x"], "--fashion-root"),
])
def test_elbo_vs_iwae_refuses_a_root_for_a_dataset_not_run(argv, flag, capsys):
    with pytest.raises(SystemExit):
        parse("elbo_vs_iwae", argv)
    assert f"argument {flag}: " in capsys.readouterr().err
    assert parse("elbo_vs_iwae", ["--datasets", "mnist", "--data-root", "x"]).data_root == "x"


def test_similarity_refuses_a_fashion_root_without_fashion_mnist(capsys):
    with pytest.raises(SystemExit):
        parse("similarity", ["--datasets", "digits", "--fashion-root", "x"])
    assert "argument --fashion-root: " in capsys.readouterr().err
