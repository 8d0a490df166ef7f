"""The models' encoders, decoders, samplers and seeds name a bad input before doing any work:
its shape, dtype or device, a generator of the wrong kind, a seed outside [0, 2**63), a size
whose output could not fit in memory, an empty batch."""

import re

import numpy as np
import pyro
import pytest
import torch

from ppl_models import (
    VAE, Autoencoder, FlowVAE, GRULanguageModel, LinearGaussian, NGramModel, PixelCNN, PixelVAE,
    ToyManifold, ToyManifoldVAE, TwoLayerVAE, Vocabulary, WaveNet,
)
from ppl_models import checks
from ppl_models.checks import as_seed, check_generator, check_memory, check_tensor
from ppl_models.likelihoods import training_representation

VOCAB = Vocabulary("ab")


def vae():
    return VAE((3, 2, 2), latent_dim=2, hidden=(4,))


def flow_vae():
    return FlowVAE((1, 4, 4), latent_dim=2, hidden=(8,))


def two_layer():
    return TwoLayerVAE((1, 2, 2), 3, 2, hidden=(4,), top_hidden=(4,))


def pixelcnn(**kwargs):
    return PixelCNN((1, 3, 3), channels=4, num_blocks=1, first_kernel_size=3, **kwargs)


def pixel_vae():
    return PixelVAE((1, 3, 3), 2, hidden=(4,), channels=4, num_blocks=1)


def wavenet():
    return WaveNet(layers=2, channels=4, skip_channels=4, num_levels=8)


X = torch.rand(1, 3, 2, 2)
Z = torch.zeros(2, 2)

SHAPES = [
    # channels-last images of the same size used to give other codes silently
    (lambda: vae().encode(X.permute(0, 2, 3, 1)),
     r"x must have shape \[batch, 3, 2, 2\], got \[1, 2, 2, 3\]"),
    (lambda: vae().encode(X.flatten(1)), r"x must have shape \[batch, 3, 2, 2\], got \[1, 12\]"),
    (lambda: vae().encode(X[0]), r"x must have shape \[batch, 3, 2, 2\], got \[3, 2, 2\]"),
    (lambda: vae().encode(X.numpy()), "x must be a torch.Tensor, got ndarray"),
    (lambda: vae().encode(X.long()), "x must be a floating-point tensor, got dtype torch.int64"),
    (lambda: vae().decode(torch.zeros(2, 5)), r"z must have shape \[\.\.\., 2\], got \[2, 5\]"),
    (lambda: vae().decode(torch.zeros(2, 2, dtype=torch.long)),
     "z must be a floating-point tensor, got dtype torch.int64"),
    (lambda: vae().decode(torch.tensor(0.0)), r"z must have shape \[\.\.\., 2\], got \[\]"),
    (lambda: Autoencoder((3, 2, 2), 2, hidden=(4,)).encode(X.permute(0, 2, 3, 1)),
     r"x must have shape \[batch, 3, 2, 2\]"),
    (lambda: ToyManifoldVAE(hidden=4).encode(torch.zeros(2, 4, 4)),
     r"x must have shape \[batch, 16\], got \[2, 4, 4\]"),
    (lambda: ToyManifoldVAE(hidden=4).decode(torch.zeros(3, 2)),
     r"z must have shape \[\.\.\., 1\], got \[3, 2\]"),
    (lambda: two_layer().encode(torch.zeros(1, 4)), r"x must have shape \[batch, 1, 2, 2\]"),
    (lambda: two_layer().decode(torch.zeros(1, 2)), r"z1 must have shape \[\.\.\., 3\]"),
    (lambda: two_layer().encode_top(torch.zeros(1, 2)), r"z1 must have shape \[\.\.\., 3\]"),
    (lambda: two_layer().prior_z1(torch.zeros(1, 3)), r"z2 must have shape \[\.\.\., 2\]"),
    (lambda: pixel_vae().encode(torch.zeros(1, 3, 3, 1)), r"x must have shape \[batch, 1, 3, 3\]"),
    # FlowVAE's encoders flattened any 16 values per image, and took an unbatched image
    (lambda: flow_vae().encode(torch.zeros(2, 1, 2, 8)),
     r"x must have shape \[batch, 1, 4, 4\], got \[2, 1, 2, 8\]"),
    (lambda: flow_vae().encode(torch.zeros(1, 4, 4)),
     r"x must have shape \[batch, 1, 4, 4\], got \[1, 4, 4\]"),
    (lambda: flow_vae().encode_all(torch.zeros(2, 16)), r"x must have shape \[batch, 1, 4, 4\]"),
    (lambda: flow_vae().posterior(torch.zeros(2, 16)), r"x must have shape \[batch, 1, 4, 4\]"),
]


@pytest.mark.parametrize("call, message", SHAPES, ids=[m for _, m in SHAPES])
def test_encoders_and_decoders_name_a_wrong_shape(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


DTYPES = [
    (lambda: vae().encode(X.double()), "x is torch.float64 on cpu, the VAE's parameters "
                                       "torch.float32 on cpu"),
    (lambda: vae().decode(Z.double()), "z is torch.float64 on cpu, the VAE's parameters"),
    (lambda: vae().decode(Z.half()), "z is torch.float16 on cpu, the VAE's parameters"),
    (lambda: Autoencoder((3, 2, 2), 2, hidden=(4,)).encode(X.double()), "x is torch.float64"),
    (lambda: ToyManifoldVAE(hidden=4).encode(torch.zeros(2, 16, dtype=torch.float64)),
     "x is torch.float64 on cpu, the ToyManifoldVAE's parameters torch.float32"),
    (lambda: ToyManifoldVAE(hidden=4).decode(torch.zeros(2, 1, dtype=torch.float64)),
     "z is torch.float64 on cpu, the ToyManifoldVAE's parameters torch.float32"),
    (lambda: two_layer().encode(torch.zeros(1, 1, 2, 2, dtype=torch.float64)),
     "x is torch.float64 on cpu, the TwoLayerVAE's parameters"),
    (lambda: two_layer().decode(torch.zeros(1, 3, dtype=torch.float64)), "z1 is torch.float64"),
    (lambda: two_layer().prior_z1(torch.zeros(1, 2, dtype=torch.float64)), "z2 is torch.float64"),
    (lambda: pixel_vae().decode(torch.zeros(1, 1, 3, 3), torch.zeros(1, 2, dtype=torch.float64)),
     "z is torch.float64 on cpu, the PixelVAE's parameters"),
    # FlowVAE: used to fail in torch with "mat1 and mat2 must have the same dtype"
    (lambda: flow_vae().encode(torch.zeros(2, 1, 4, 4, dtype=torch.float64)),
     "x is torch.float64 on cpu, the FlowVAE's parameters torch.float32"),
    (lambda: flow_vae().posterior(torch.zeros(2, 1, 4, 4, dtype=torch.float64)),
     "x is torch.float64 on cpu, the FlowVAE's parameters torch.float32"),
    (lambda: two_layer().encode_top(torch.zeros(1, 3, dtype=torch.float64)), "z1 is torch.float64"),
    # PixelCNN: used to fail in layers.py with "Input type (double) and bias type (float)"
    (lambda: pixelcnn().log_prob(torch.zeros(1, 1, 3, 3, dtype=torch.float64)),
     "x is torch.float64 on cpu, the PixelCNN's parameters torch.float32 on cpu"),
    (lambda: pixelcnn().log_prob(torch.zeros(1, 1, 3, 3, dtype=torch.float16)),
     "x is torch.float16 on cpu, the PixelCNN's parameters torch.float32"),
    (lambda: pixelcnn(cond_dim=2).log_prob(torch.zeros(1, 1, 3, 3),
                                           h=torch.zeros(1, 2, dtype=torch.float64)),
     "h is torch.float64 on cpu, the PixelCNN's parameters torch.float32"),
]


@pytest.mark.parametrize("call, message", DTYPES, ids=[m for _, m in DTYPES])
def test_a_dtype_mismatch_is_named(call, message):
    with pytest.raises(TypeError, match=message):
        call()


def nan(*shape):
    return torch.full(shape, float("nan"))


NAN_INPUTS = [
    # each returned NaN codes, tables or images without a word, where VAE.encode refused
    (lambda: flow_vae().encode(nan(2, 1, 4, 4)), "x holds 32 NaN"),
    (lambda: flow_vae().encode_all(nan(2, 1, 4, 4)), "x holds 32 NaN"),
    (lambda: flow_vae().posterior(nan(2, 1, 4, 4)), "x holds 32 NaN"),
    (lambda: two_layer().encode(nan(2, 1, 2, 2)), "x holds 8 NaN"),
    (lambda: two_layer().encode_top(nan(2, 3)), "z1 holds 6 NaN"),
    (lambda: two_layer().prior_z1(nan(2, 2)), "z2 holds 4 NaN"),
    (lambda: two_layer().decode(nan(2, 3)), "z1 holds 6 NaN"),
    (lambda: ToyManifoldVAE(hidden=4).encode(nan(2, 16)), "x holds 32 NaN"),
    (lambda: ToyManifoldVAE(hidden=4).decode(nan(2, 1)), "z holds 2 NaN"),
    (lambda: ToyManifoldVAE(hidden=4).decode(torch.full((2, 1), float("inf"))),
     "z holds 2 infinite"),
    (lambda: vae().decode(nan(2, 2)), "z holds 4 NaN"),
    (lambda: pixel_vae().decode(torch.zeros(1, 1, 3, 3), nan(1, 2)), "z holds 2 NaN"),
]


@pytest.mark.parametrize("call, message", NAN_INPUTS, ids=[m for _, m in NAN_INPUTS])
def test_encoders_and_decoders_refuse_nan_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_flow_encoders_take_what_they_document():
    f = flow_vae()
    x = torch.rand(3, 1, 4, 4)
    loc, scale = f.encode(x)
    assert loc.shape == scale.shape == (3, 2)
    assert f.encode_all(x)[2].shape == (3, 4)
    assert f.posterior(x).batch_shape == (3,)
    with pyro.validation_enabled(False):  # the values are looked at only with validation on
        assert torch.isnan(f.encode(nan(1, 1, 4, 4))[0]).all()


def test_encode_and_decode_accept_what_they_document():
    m = vae()
    loc, scale = m.encode(X)
    assert loc.shape == scale.shape == (1, 2)
    assert m.decode(torch.zeros(4, 5, 2)).batch_shape == (4, 5, 3, 2, 2)
    assert m.decode(torch.zeros(2)).batch_shape == (3, 2, 2)  # no leading dims
    assert m.encode(X[:0])[0].shape == (0, 2)  # encoding nothing is no error
    m = m.double()
    assert m.encode(X.double())[0].dtype == torch.float64
    assert ToyManifoldVAE(hidden=4).decode(torch.zeros(3, 5, 1)).shape == (3, 5, 16)
    t = two_layer()
    assert t.decode(t.prior_z1(torch.zeros(4, 1, 2))[0]).batch_shape == (4, 1, 1, 2, 2)


def test_the_per_step_checks_skip_the_value_checks_when_validation_is_off(monkeypatch):
    """As check_data: without Pyro's validation (a fit after its first epoch) the model and
    guide check types, shapes, dtype and device only, with no pass over the data."""
    def fail(*args, **kwargs):
        raise AssertionError("checked with validation off")

    m = VAE((1, 2, 2), latent_dim=2, hidden=(4,))
    x = torch.bernoulli(torch.full((3, 1, 2, 2), 0.5))
    monkeypatch.setattr(checks, "check_values", fail)
    with pyro.validation_enabled(False):
        trace = pyro.poutine.trace(m.guide).get_trace(x)
        pyro.poutine.trace(pyro.poutine.replay(m.model, trace=trace)).get_trace(x)
        with pytest.raises(ValueError, match=r"z must have shape \[\.\.\., 2\]"):
            m.decode(torch.zeros(3))  # the shapes are still checked
    with pytest.raises(AssertionError, match="validation off"):
        pyro.poutine.trace(m.model).get_trace(x)  # with validation: the values are checked


def test_a_dtype_mismatch_is_named_with_validation_off():
    # float64 data into a float32 model used to reach torch's "mat1 and mat2 must have the
    # same dtype" when Pyro's validation was off
    with pyro.validation_enabled(False):
        with pytest.raises(TypeError, match="x is torch.float64 on cpu, the VAE's parameters "
                                            "torch.float32"):
            vae().encode(X.double())
        with pytest.raises(TypeError, match="x is torch.float64 on cpu, the PixelCNN's "
                                            "parameters torch.float32"):
            pixelcnn().log_prob(torch.zeros(1, 1, 3, 3, dtype=torch.float64))


GENERATORS = [
    lambda g: vae().sample_images(2, generator=g),
    lambda g: two_layer().sample_images(2, generator=g),
    lambda g: pixelcnn().sample(2, generator=g),
    lambda g: pixelcnn().sample_fast(2, generator=g),
    lambda g: pixel_vae().sample(2, generator=g),
    lambda g: pixel_vae().reconstruct(torch.zeros(1, 1, 3, 3), generator=g),
    lambda g: GRULanguageModel(VOCAB, 4, 4).sample(2, generator=g),
    lambda g: NGramModel(2, VOCAB).sample(2, generator=g),
    lambda g: wavenet().generate(3, generator=g),
]


@pytest.mark.parametrize("call", GENERATORS)
@pytest.mark.parametrize("generator", [0, "cpu", np.random.default_rng(0)])
def test_a_generator_of_the_wrong_kind_is_named(call, generator):
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got "):
        call(generator)


@pytest.mark.parametrize("call", GENERATORS)
def test_a_cpu_generator_is_taken(call):
    call(torch.Generator().manual_seed(1))


def test_wavenet_draws_from_a_given_generator_as_from_its_seed():
    wn = wavenet()
    assert torch.equal(wn.generate(5, generator=torch.Generator().manual_seed(3)),
                       wn.generate(5, seed=3))


def test_a_generator_on_another_device_is_named():
    with pytest.raises(ValueError, match="generator is on cpu but the draws are made on cuda"):
        check_generator(torch.Generator(), torch.device("cuda"))
    check_generator(torch.Generator(), "cpu")
    check_generator(None, "cuda")
    check_generator(torch.Generator())  # anywhere: the caller moves the draws


BAD_SEEDS = [2**64, 2**63, -1, -2**63 - 1, 1.5, True, "0", np.uint64(2**64 - 1)]
SEEDED = [
    lambda s: pixelcnn().sample(1, seed=s),
    lambda s: pixelcnn().sample_fast(1, seed=s),
    lambda s: pixel_vae().sample(1, seed=s),
    lambda s: pixel_vae().reconstruct(torch.zeros(1, 1, 3, 3), seed=s),
    lambda s: wavenet().generate(3, seed=s),
    lambda s: LinearGaussian(4, 2, seed=s),
    lambda s: LinearGaussian(4, 2).simulate(5, seed=s),
    lambda s: ToyManifold().sample(5, seed=s),
    lambda s: training_representation(None, "bernoulli", seed=s),
]


@pytest.mark.parametrize("call", SEEDED)
@pytest.mark.parametrize("seed", BAD_SEEDS, ids=repr)
def test_a_seed_outside_the_range_is_named(call, seed):
    # 2**64 and -2**63 - 1 used to fail with "Overflow when unpacking long long"; -1 and
    # 2**64 - 1 drew the same numbers
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*63\), got "):
        call(seed)


def test_seeds_of_the_range_and_numpy_integers_are_taken():
    model = LinearGaussian(4, 2)
    assert torch.equal(model.simulate(5, seed=np.uint64(7)), model.simulate(5, seed=7))
    assert torch.equal(ToyManifold().sample(3, seed=np.int32(2))[0], ToyManifold().sample(3, 2)[0])
    model.simulate(2, seed=2**63 - 1)
    assert as_seed(np.int64(0)) == 0 and type(as_seed(np.uint64(5))) is int


HUGE = 10**12
TOO_BIG = [
    (lambda: vae().sample_images(HUGE), "num=1000000000000"),
    (lambda: two_layer().sample_images(HUGE), "num=1000000000000"),
    (lambda: vae().reconstruct((X > 0.5).float(), num_samples=HUGE), "num_samples=1000000000000"),
    (lambda: LinearGaussian(4, 2).simulate(HUGE), "num_data=1000000000000"),
    (lambda: ToyManifold().sample(HUGE), "num_data=1000000000000"),
    (lambda: wavenet().generate(HUGE), "num_samples=1000000000000"),
    (lambda: wavenet().generate(3, batch_size=HUGE), "batch_size=1000000000000"),
    (lambda: pixelcnn().sample(HUGE), "num=1000000000000"),
    (lambda: pixel_vae().sample(HUGE), "num=1000000000000"),
    (lambda: GRULanguageModel(VOCAB, 4, 4).sample(HUGE), "num=1000000000000"),
    (lambda: NGramModel(2, VOCAB).sample(2, max_length=HUGE), "max_length=1000000000000"),
    (lambda: VAE((1, 2, 2), latent_dim=HUGE), "latent_dim=1000000000000"),
    (lambda: VAE((1, 2, 2), hidden=(HUGE,)), r"hidden=\(1000000000000,\)"),
    (lambda: VAE((1, 28, 28), latent_dim=HUGE, network="conv"), "latent_dim=1000000000000"),
    (lambda: TwoLayerVAE((1, 2, 2), HUGE, 2), "latent_dim=1000000000000"),
    (lambda: LinearGaussian(4, 10**7), "latent_dim=10000000"),
    (lambda: ToyManifoldVAE(hidden=10**7), "hidden=10000000"),
]


@pytest.mark.parametrize("call, name", TOO_BIG, ids=[m for _, m in TOO_BIG])
def test_a_size_beyond_the_physical_memory_is_named_before_allocating(call, name):
    with pytest.raises(ValueError, match=name + r".* bytes, more than the .* bytes of this "
                                        r"machine's physical memory"):
        call()


def test_check_memory_counts_the_bytes_of_the_dtype(monkeypatch):
    monkeypatch.setattr(checks, "physical_memory", lambda: 1000)
    check_memory(250, torch.float32, "num=250")
    with pytest.raises(ValueError, match=r"num=126: 1,008 bytes, more than the 1,000 bytes"):
        check_memory(126, torch.float64, "num=126")
    monkeypatch.setattr(checks, "physical_memory", lambda: None)  # unknown: no bound
    check_memory(10**15, torch.float64, "num")


EMPTY = [
    lambda: VAE((1, 4, 4), 2, hidden=(4,)).model(torch.zeros(0, 1, 4, 4)),
    lambda: VAE((1, 4, 4), 2, hidden=(4,)).guide(torch.zeros(0, 1, 4, 4)),
    lambda: Autoencoder((1, 4, 4), 2, hidden=(4,)).model(torch.zeros(0, 1, 4, 4)),
    lambda: two_layer().model(torch.zeros(0, 1, 2, 2)),
    lambda: ToyManifoldVAE(hidden=4).model(torch.zeros(0, 16)),
    lambda: ToyManifold().model(torch.zeros(0, 16)),
    lambda: LinearGaussian(4, 2).model(torch.zeros(0, 4)),
    lambda: pixel_vae().model(torch.zeros(0, 1, 3, 3)),
    lambda: pixelcnn().model(torch.zeros(0, 1, 3, 3)),
    lambda: wavenet().model(torch.zeros(0, 3, dtype=torch.long)),
]


@pytest.mark.parametrize("call", EMPTY)
def test_an_empty_batch_is_named(call):
    # used to be a ZeroDivisionError from the plate
    with pytest.raises(ValueError, match=r"x has no datapoints \(shape \[0, "):
        call()


def test_check_tensor_takes_leading_dims_where_asked():
    check_tensor(torch.zeros(2, 3, 4), (4,), "z", batch_dims="...")
    with pytest.raises(ValueError, match=r"z must have shape \[batch, 4\], got \[2, 3, 4\]"):
        check_tensor(torch.zeros(2, 3, 4), (4,), "z")


@pytest.mark.parametrize("draw", [
    lambda: vae().double().sample_images(2),
    lambda: two_layer().double().sample_images(2),
    lambda: pixel_vae().double().eval().sample(2),
], ids=["VAE", "TwoLayerVAE", "PixelVAE"])
def test_a_float64_model_samples_float64_images(draw):
    # the latents were drawn in float32 whatever the model's dtype, and the decoder refused them
    assert draw().dtype == torch.float64


def test_linear_gaussian_refuses_a_noise_scale_whose_square_leaves_float_range():
    # 1e-30 squared is 0 in float32: log_marginal failed in torch's PositiveDefinite check;
    # 1e300 is inf in float32: training "diverged"
    from ppl_models import LinearGaussian

    for scale in (1e-30, 1e300):
        with pytest.raises(ValueError, match=re.escape(f"noise_scale={scale:g}: its square")):
            LinearGaussian(2, 1, noise_scale=scale)
