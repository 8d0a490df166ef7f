"""Every public constructor and sampler names a bad argument before doing any work."""

import numpy as np
import pytest
import torch

from ppl_models import (
    VAE, Autoencoder, ConvEncoder, FlowVAE, GatedResidualBlock, GRULanguageModel,
    LinearGaussian, MaskedConv2d, MLPDecoder, MLPEncoder, PixelCNN, PixelVAE, ToyManifold,
    ToyManifoldVAE, TwoLayerVAE, Vocabulary, WaveNet, make_likelihood, synthetic_signal,
    write_wav,
)
from ppl_models.audio import histogram_bits_per_sample, split_segments
from ppl_models.checks import as_int, as_number, as_sizes, check_values
from ppl_models.text import split_words

VOCAB = Vocabulary("ab")


def vae():
    return VAE((1, 2, 2), latent_dim=2, hidden=(4,))


def pixelcnn():
    return PixelCNN((1, 3, 3), channels=4, num_blocks=1, first_kernel_size=3)


def wavenet():
    return WaveNet(layers=2, channels=4, skip_channels=4, num_levels=8)


BAD = [
    # VAE and autoencoders
    (lambda: VAE((1, 2, 2), latent_dim=0), "latent_dim must be a positive integer, got 0"),
    (lambda: VAE((1, 2, 2), latent_dim=True), "latent_dim must be a positive integer, got True"),
    (lambda: VAE((1, 2, 2), latent_dim=2.5), "latent_dim must be a positive integer, got 2.5"),
    (lambda: VAE((1, 2, 2), latent_dim=-1), "latent_dim must be a positive integer, got -1"),
    (lambda: VAE((1, 2, 2), hidden=(0,)), r"hidden\[0\] must be a positive integer, got 0"),
    (lambda: VAE((1, 2, 2), hidden=4), "hidden must be a sequence of positive integers"),
    (lambda: VAE((1, 2.5, 2)), r"image_shape\[1\] must be a positive integer, got 2.5"),
    (lambda: VAE((2, 2)), r"image_shape must hold 3 positive integers \(C, H, W\), got \(2, 2\)"),
    (lambda: Autoencoder((1, 2, 2), sparsity=float("nan")), "sparsity must be a finite number"),
    (lambda: Autoencoder((1, 2, 2), sparsity=float("inf")), "sparsity must be a finite number"),
    (lambda: Autoencoder((1, 2, 2), sparsity=-0.1), "sparsity must be >= 0, got -0.1"),
    (lambda: vae().sample_images(2.5), "num must be a positive integer, got 2.5"),
    (lambda: vae().sample_images(0), "num must be a positive integer, got 0"),
    (lambda: vae().reconstruct(torch.ones(1, 1, 2, 2), num_samples=-1),
     "num_samples must be an integer >= 0, got -1"),
    (lambda: vae().reconstruct(torch.ones(1, 1, 2, 3)), r"x must have shape \[batch, 1, 2, 2\]"),
    (lambda: TwoLayerVAE((1, 2, 2), 2, 2, hidden=(4,), top_hidden=(2.0,)),
     r"top_hidden\[0\] must be a positive integer, got 2.0"),
    (lambda: TwoLayerVAE((1, 2, 2), 2, 2, hidden=(4,), top_hidden=(4,)).reconstruct(
        torch.ones(1, 1, 2, 2), num_samples=1.5), "num_samples must be an integer >= 0"),
    (lambda: FlowVAE((1, 2, 2), 2, hidden=(4,), context_dim=2.5),
     "context_dim must be a positive integer, got 2.5"),
    (lambda: FlowVAE((1, 2, 2), 2, hidden=(4,), num_flows=-1),
     "num_flows must be an integer >= 0, got -1"),
    (lambda: FlowVAE((1, 2, 2), 2, hidden=(4,)).reconstruct(torch.ones(1, 1, 2, 2), -2),
     "num_samples must be an integer >= 0, got -2"),
    # networks and layers
    (lambda: MLPEncoder((1, 2, 2), 0), "latent_dim must be a positive integer, got 0"),
    (lambda: MLPDecoder(2, (1, 2, 2), hidden=(3, -1)), r"hidden\[1\] must be a positive"),
    (lambda: ConvEncoder((1, 28, 28), 2, channels=0), "channels must be a positive integer"),
    (lambda: MaskedConv2d(1, 4, 2.5, "A"), "kernel_size must be a positive integer, got 2.5"),
    (lambda: MaskedConv2d(1, 4.0, 3, "A"), "out_channels must be a positive integer, got 4.0"),
    (lambda: GatedResidualBlock(4, dropout=float("nan")), "dropout must be a finite number"),
    (lambda: GatedResidualBlock(4, num_classes=True), "num_classes must be a positive integer"),
    (lambda: make_likelihood("gaussian-fixed", scale=float("inf")),
     "gaussian-fixed's scale must be a finite number, got inf"),
    (lambda: make_likelihood("logistic-mixture", num_mixtures=True),
     "num_mixtures must be a positive integer, got True"),
    # PixelCNN and PixelVAE
    (lambda: PixelCNN((1, 3.5, 3)), r"image_shape\[1\] must be a positive integer, got 3.5"),
    (lambda: PixelCNN((1, 3, 3), num_blocks=2.5), "num_blocks must be an integer >= 0, got 2.5"),
    (lambda: PixelCNN((1, 3, 3), kernel_size=4), "kernel_size must be odd, got 4"),
    (lambda: PixelCNN((1, 3, 3), first_kernel_size=0),
     "first_kernel_size must be a positive integer, got 0"),
    (lambda: PixelCNN((1, 3, 3), channels=6.0), "channels must be a positive integer, got 6.0"),
    (lambda: PixelCNN((1, 3, 3), num_classes=0), "num_classes must be a positive integer"),
    (lambda: PixelCNN((1, 3, 3), cond_dim=2.5), "cond_dim must be a positive integer"),
    (lambda: PixelCNN((1, 3, 3), dropout=1.0), "dropout must be >= 0 and < 1, got 1.0"),
    (lambda: pixelcnn().sample(True), "num must be a positive integer, got True"),
    (lambda: pixelcnn().sample_fast(2, seed=0.5),
     r"seed must be an integer in \[0, 2\*\*63\), got 0.5"),
    (lambda: PixelVAE((1, 3, 3), latent_dim=2.5), "latent_dim must be a positive integer"),
    (lambda: PixelVAE((1, 3, 3), 2, hidden=(4,), channels=4, num_blocks=1).sample(True),
     "num must be a positive integer, got True"),
    (lambda: PixelVAE((1, 3, 3), 2, hidden=(4,), channels=4, num_blocks=1).reconstruct(
        torch.ones(1, 1, 3, 3), num_samples=-1), "num_samples must be an integer >= 0"),
    # WaveNet
    (lambda: WaveNet(layers=2.5), "layers must be a positive integer, got 2.5"),
    (lambda: WaveNet(stacks=0), "stacks must be a positive integer, got 0"),
    (lambda: WaveNet(num_levels=1), "num_levels must be an integer >= 2, got 1"),
    (lambda: WaveNet(gate_channels=0), "gate_channels must be a positive integer, got 0"),
    (lambda: wavenet().generate(3, batch_size=0), "batch_size must be a positive integer, got 0"),
    (lambda: wavenet().generate(2.5), "num_samples must be a positive integer, got 2.5"),
    (lambda: wavenet().generate(3, seed=1.5),
     r"seed must be an integer in \[0, 2\*\*63\), got 1.5"),
    (lambda: WaveNet(2, channels=4, skip_channels=4, num_levels=8, num_classes=2).generate(
        3, y=1), r"y must be an int64 tensor \[batch_size\]"),
    # language models and words
    (lambda: GRULanguageModel(VOCAB, 4, 4).sample(2, max_length=0),
     "max_length must be a positive integer, got 0"),
    (lambda: GRULanguageModel(VOCAB, 4, 4).sample(-1), "num must be a positive integer"),
    (lambda: GRULanguageModel(VOCAB, 4, hidden=0), "hidden must be a positive integer, got 0"),
    (lambda: GRULanguageModel(VOCAB, dropout=float("nan")), "dropout must be a finite number"),
    (lambda: GRULanguageModel("ab"), "vocab must be a Vocabulary, got str"),
    (lambda: VOCAB.encode(["ab"], max_len=3.5), "max_len must be a positive integer, got 3.5"),
    (lambda: split_words(["a", "b", "c"], valid_fraction=float("nan")),
     "valid_fraction must be a finite number"),
    # small models and audio
    (lambda: LinearGaussian(4, 0), "latent_dim must be a positive integer, got 0"),
    (lambda: LinearGaussian(4, 2, noise_scale=0.0), "noise_scale must be > 0, got 0.0"),
    (lambda: LinearGaussian(4, 2).simulate(2.5), "num_data must be a positive integer, got 2.5"),
    (lambda: ToyManifold(noise_scale=float("inf")), "noise_scale must be a finite number"),
    # finite as Python floats, but their squares (the variance) are inf or 0 in float32:
    # sample() drew +-inf data, or noise-free data the model then refused
    (lambda: ToyManifold(noise_scale=1e39), r"noise_scale=1e\+39: its square is beyond"),
    (lambda: ToyManifold(noise_scale=1e-46), "noise_scale=1e-46: its square is beyond"),
    (lambda: ToyManifold(noise_scale=1e300), r"noise_scale=1e\+300: its square is beyond"),
    (lambda: ToyManifold().sample(0), "num_data must be a positive integer, got 0"),
    (lambda: ToyManifoldVAE(hidden=2.5), "hidden must be a positive integer, got 2.5"),
    (lambda: synthetic_signal(float("nan")), "seconds must be a finite number, got nan"),
    (lambda: synthetic_signal(1.0, rate=5), "rate must be an integer >= 20, got 5"),
    (lambda: synthetic_signal(1e-6), "gives no samples"),
    (lambda: write_wav("/nonexistent/never-written.wav", torch.zeros(4), 8000.5),
     "rate must be a positive integer, got 8000.5"),
    (lambda: split_segments(torch.arange(10), 2.5), "segment_length must be a positive integer"),
    (lambda: histogram_bits_per_sample(torch.arange(4), torch.arange(4), pseudocount=0),
     "pseudocount must be > 0, got 0.0"),
]


@pytest.mark.parametrize("call, message", BAD, ids=[m for _, m in BAD])
def test_bad_argument_is_named(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


@pytest.mark.parametrize("model", [vae, lambda: Autoencoder((1, 2, 2), 2, hidden=(4,))])
def test_reconstruct_names_a_dtype_mismatch(model):
    m = model()
    with pytest.raises(TypeError, match="x is torch.float64 on cpu, the .*'s parameters "
                                        "torch.float32"):
        m.reconstruct(torch.ones(1, 1, 2, 2, dtype=torch.float64))
    assert m.double().reconstruct(torch.ones(1, 1, 2, 2, dtype=torch.float64)).dtype == \
        torch.float64


def test_wavenet_draws_as_many_sequences_as_asked():
    # batch_size=0 used to draw one sequence (batch_size or 1)
    wn = wavenet()
    assert wn.generate(3, batch_size=2).shape == (2, 3)
    assert wn.generate(3, batch_size=np.int64(3)).shape == (3, 3)
    assert wn.generate(4).shape == (1, 4)
    conditional = WaveNet(layers=2, channels=4, skip_channels=4, num_levels=8, num_classes=2)
    assert conditional.generate(3, y=torch.tensor([0, 1, 1])).shape == (3, 3)


def test_accepted_sizes_are_stored_as_python_ints():
    m = VAE(np.array([1, 2, 2]), latent_dim=np.int64(2), hidden=[4])
    assert m.image_shape == (1, 2, 2) and type(m.latent_dim) is int
    assert all(type(s) is int for s in m.image_shape)


@pytest.mark.parametrize("call, message", [
    (lambda: as_int(2.0, "n"), "n must be a positive integer, got 2.0"),
    (lambda: as_int(False, "n", minimum=0), "n must be an integer >= 0, got False"),
    (lambda: as_int("3", "n", minimum=None), "n must be an integer, got '3'"),
    (lambda: as_sizes("ab", "hidden"), "hidden must be a sequence of positive integers"),
    (lambda: as_sizes((1, 2), "shape", 3), r"shape must hold 3 positive integers"),
    (lambda: as_number(float("-inf"), "lr"), "lr must be a finite number, got -inf"),
    (lambda: as_number(1, "p", 0, 1, high_open=True), "p must be >= 0 and < 1, got 1.0"),
    (lambda: as_number(0, "s", 0, low_open=True), "s must be > 0, got 0.0"),
    (lambda: check_values(torch.tensor([1.0, float("nan")]), "x"), r"x holds 1 NaN value\(s\)"),
    (lambda: check_values(torch.tensor([-float("inf"), 0.0, float("inf")]), "x"),
     r"x holds 2 infinite value\(s\) of 3"),
    (lambda: check_values(torch.tensor([0.0, 3.0, 4.0]), "x", high=3),
     r"x must lie in \[None, 3\]; 1 of 3 values do not, range \[0.0, 4.0\]"),
])
def test_shared_checks(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_shared_checks_return_what_they_accept():
    assert as_int(np.int32(3), "n") == 3 and as_int(-2, "seed", minimum=None) == -2
    assert as_sizes(torch.Size([1, 28, 28]), "image_shape", 3) == (1, 28, 28)
    assert as_sizes((), "hidden") == ()
    assert as_number(np.float32(0.5), "p", 0, 1) == 0.5
    check_values(torch.tensor([0.0, 1.0]), "x", 0, 1)  # the ends of the range pass
