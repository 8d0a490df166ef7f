"""Hostile inputs, round 7, the models' side: each entry point computes the right thing or
refuses by name.

- F1: a sparse tensor to a model method or data utility (``VAE.encode``, ``PixelCNN.log_prob``,
  ``binarize_static``, ``Vocabulary.decode``, ...) was torch's "Could not run 'aten::eq.Scalar'
  ... SparseCPU"; the shared value checks refuse it naming the argument and ``.to_dense()``.
- F3: a real setting given as a 0-d tensor (``LinearGaussian(noise_scale=torch.tensor(0.5))``)
  was refused as "must be a finite number"; it stands for its value, and a tensor of several
  elements is refused without calling it non-finite.
- F9: ``examples/similarity.py --epochs 0`` trained 100 epochs, ``--num-train 0`` took the
  default size (``or`` read 0 as unset); 0 epochs are honoured and 0 images mean the split.
- F11: ``LinearGaussian.log_marginal`` returned NaN for finite data near float32's maximum;
  it returns ``-inf``, the rounded value.
- F12: seeds as 0-d integer tensors were refused by ``binarize_static``, ``LinearGaussian``,
  ``ToyManifold.sample`` and ``PixelVAE.sample`` (``fit`` takes them); ``Vocabulary.lengths``
  counted rows that ``decode`` refuses; ``Signal(rate=0)`` failed later in ``.seconds``;
  ``training_representation`` ignored a dynamic binarization for a Gaussian likelihood;
  ``load_signal("Synthetic")`` blamed a missing WAV file without naming the sources.
- T5: the samplers (``PixelCNN.sample``/``sample_fast``, ``PixelVAE.sample``,
  ``WaveNet.generate``) showed no progress bar; they show one after a second, and
  ``progress=False`` hides it.
"""

import pyro.distributions as dist
import pytest
import torch

import ppl_models.checks
from ppl_models import (LinearGaussian, NGramModel, PixelCNN, PixelVAE, Signal, ToyManifold,
                        ToyManifoldVAE, VAE, Vocabulary, WaveNet, binarize_dynamic,
                        binarize_static, load_images, load_signal, manifold_mean, mu_law_encode,
                        to_levels, training_representation)

torch.manual_seed(0)
IMAGES = (torch.rand(3, 1, 4, 4) < 0.5).float()
GREY = torch.rand(3, 1, 4, 4)
VOCAB = Vocabulary("abc")
WORDS = VOCAB.encode(["ab", "c", "cab"])


def small_pixelcnn() -> PixelCNN:
    return PixelCNN((1, 4, 4), channels=4, num_blocks=1, first_kernel_size=3)


def small_pixel_vae() -> PixelVAE:
    return PixelVAE((1, 4, 4), 2, channels=4, num_blocks=1, first_kernel_size=3)


def small_wavenet() -> WaveNet:
    return WaveNet(layers=2, stacks=1, channels=4)


# ------------------------------------------------------------------------------ F1 sparse
SPARSE_CALLS = {
    "VAE.encode": (lambda: VAE((1, 4, 4), 2, hidden=(8,)).encode(IMAGES.to_sparse()), "x"),
    "VAE.reconstruct": (lambda: VAE((1, 4, 4), 2, hidden=(8,)).reconstruct(IMAGES.to_sparse()),
                        "x"),
    "PixelCNN.log_prob": (lambda: small_pixelcnn().log_prob(IMAGES.to_sparse()), "x"),
    "PixelCNN.sample(given=)": (lambda: small_pixelcnn().sample(
        3, given=IMAGES.to_sparse(), mask=torch.ones(3, 1, 4, 4, dtype=torch.bool),
        progress=False), "given"),
    "LinearGaussian.log_marginal": (
        lambda: LinearGaussian(3, 1).log_marginal(torch.randn(4, 3).to_sparse()), "x"),
    "ToyManifoldVAE.encode": (lambda: ToyManifoldVAE(8).encode(torch.randn(2, 16).to_sparse()),
                              "x"),
    "NGramModel.log_prob": (lambda: NGramModel(2, VOCAB).fit_counts(WORDS).log_prob(
        WORDS.to_sparse()), "x"),
    "WaveNet.log_prob": (lambda: small_wavenet().log_prob(
        torch.zeros(2, 5, dtype=torch.long).to_sparse()), "x"),
    "Vocabulary.decode": (lambda: VOCAB.decode(WORDS.to_sparse()), "x"),
    "Vocabulary.lengths": (lambda: VOCAB.lengths(WORDS.to_sparse()), "x"),
    "binarize_static": (lambda: binarize_static(GREY.to_sparse(), 0), "images"),
    "binarize_dynamic": (lambda: binarize_dynamic(GREY.to_sparse()), "images"),
    "to_levels": (lambda: to_levels(GREY.to_sparse()), "images"),
    "mu_law_encode": (lambda: mu_law_encode(torch.linspace(-1, 1, 5).to_sparse()), "x"),
    "manifold_mean": (lambda: manifold_mean(torch.randn(3, 1).to_sparse()), "z"),
}


@pytest.mark.parametrize("call, name", SPARSE_CALLS.values(), ids=list(SPARSE_CALLS))
def test_sparse_tensors_are_refused_by_name(call, name):
    with pytest.raises(TypeError, match=rf"^{name} is a sparse tensor .*pass "
                                        rf"{name}\.to_dense\(\)"):
        call()


# ------------------------------------------------------------------------- F3 0-d reals
def test_a_real_setting_as_a_0d_tensor_stands_for_its_value():
    from_tensor = LinearGaussian(3, 1, noise_scale=torch.tensor(0.5))
    from_float = LinearGaussian(3, 1, noise_scale=0.5)
    assert float(from_tensor.noise_scale.detach()) == float(from_float.noise_scale.detach()) == 0.5
    assert ToyManifold(noise_scale=torch.tensor(0.2, dtype=torch.float64)).noise_scale == 0.2
    vae = VAE((1, 4, 4), 2, likelihood="gaussian-fixed",
              likelihood_options={"scale": torch.tensor(0.1)})
    assert vae.likelihood is not None


@pytest.mark.parametrize("value", [torch.tensor([0.5, 0.5]), torch.tensor(True),
                                   torch.tensor(0.5).to_sparse()])
def test_a_tensor_that_is_not_one_real_number_is_refused_as_such(value):
    with pytest.raises(ValueError, match="noise_scale must be one real number") as error:
        LinearGaussian(3, 1, noise_scale=value)
    assert "finite" not in str(error.value)


def test_a_non_finite_0d_tensor_is_still_called_non_finite():
    with pytest.raises(ValueError, match="noise_scale must be a finite number, got inf"):
        LinearGaussian(3, 1, noise_scale=torch.tensor(float("inf")))


# ---------------------------------------------------------------------- F12 tensor seeds
SEEDED = {
    "binarize_static": lambda seed: binarize_static(GREY, seed),
    "LinearGaussian": lambda seed: LinearGaussian(3, 1, seed=seed).weight.detach(),
    "LinearGaussian.simulate": lambda seed: LinearGaussian(3, 1).simulate(4, seed=seed),
    "ToyManifold.sample": lambda seed: ToyManifold().sample(4, seed=seed)[0],
    "PixelVAE.sample": lambda seed: small_pixel_vae().eval().sample(2, seed=seed,
                                                                    progress=False),
}


@pytest.mark.parametrize("draw", SEEDED.values(), ids=list(SEEDED))
def test_a_seed_as_a_0d_integer_tensor_is_its_value(draw):
    torch.manual_seed(1)  # the PixelVAE's initial weights
    from_int = draw(3)
    torch.manual_seed(1)
    assert torch.equal(draw(torch.tensor(3)), from_int)


def test_a_float_or_bool_tensor_seed_is_still_refused():
    for seed in (torch.tensor(3.0), torch.tensor(True), torch.tensor([3])):
        with pytest.raises(ValueError, match="seed must be an integer in"):
            ToyManifold().sample(4, seed=seed)


# --------------------------------------------------------------------- F11 log_marginal
def test_log_marginal_of_data_beyond_float32_is_minus_inf_not_nan():
    model = LinearGaussian(3, 1)
    for value in (1e19, 1e38, 3e38, 3.4e38):
        log_p = model.log_marginal(torch.full((2, 3), value))
        assert torch.equal(log_p, torch.full((2,), float("-inf"))), (value, log_p)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_log_marginal_equals_the_multivariate_normal_in_range(dtype, tolerance):
    torch.manual_seed(0)
    model = LinearGaussian(5, 2).to(dtype)
    with torch.no_grad():
        model.bias.normal_()
        model.weight.normal_()
    x = 3 * torch.randn(50, 5, dtype=dtype)
    covariance = model.weight @ model.weight.T + model.noise_scale**2 * torch.eye(5, dtype=dtype)
    expected = dist.MultivariateNormal(model.bias, covariance_matrix=covariance).log_prob(x)
    got = model.log_marginal(x)
    assert torch.allclose(got, expected, rtol=tolerance, atol=0)
    got.sum().backward()  # differentiable in the parameters, as before
    assert torch.isfinite(model.weight.grad).all()


# ------------------------------------------------------------------------ F12 the rest
def test_vocabulary_lengths_refuses_what_decode_refuses():
    assert VOCAB.lengths(WORDS).tolist() == [3, 2, 4]
    with pytest.raises(ValueError, match="exactly one end symbol"):
        VOCAB.lengths(torch.tensor([[0, 0, 0]]))
    with pytest.raises(ValueError, match="must hold ids in"):
        VOCAB.lengths(torch.tensor([[7, 9, 1]]))


def test_signal_refuses_a_rate_of_zero_and_2d_samples_at_construction():
    with pytest.raises(ValueError, match="rate must be a positive integer, got 0"):
        Signal(torch.zeros(10), 0, "x")
    with pytest.raises(ValueError, match=r"samples must be a floating tensor \[num_samples\]"):
        Signal(torch.zeros(2, 10), 100, "x")
    assert Signal(torch.zeros(10), 5, "x").seconds == 2.0


def test_training_representation_refuses_dynamic_binarization_of_a_gaussian():
    data = load_images("digits")
    with pytest.raises(ValueError, match="dynamic binarization is for the bernoulli"):
        training_representation(data, "gaussian-fixed", binarization="dynamic")
    # "static" (the default, which the examples pass for every likelihood) is accepted
    assert training_representation(data, "gaussian-fixed", "static")[2] is not None


def test_load_signal_with_a_misspelt_source_names_the_sources():
    with pytest.raises(FileNotFoundError, match="source must be 'synthetic', 'speech'"):
        load_signal("Synthetic")


# -------------------------------------------------------------------------- F9 example
def test_similarity_honours_zero_epochs_and_reads_zero_images_as_the_whole_split():
    import similarity

    args = similarity.parse_args(["--datasets", "digits", "--epochs", "0", "--num-train", "0",
                                  "--num-test", "0"])
    split = similarity.gallery_and_queries("digits", args)
    data = load_images("digits")
    assert split["epochs"] == 0
    assert len(split["gallery"][0]) == len(data.train)
    assert len(split["queries"][0]) == len(data.test)
    unset = similarity.gallery_and_queries("digits", similarity.parse_args(
        ["--datasets", "digits", "--num-train", "20"]))
    assert unset["epochs"] == similarity.DEFAULTS["digits"]["epochs"]
    assert len(unset["gallery"][0]) == 20


# ------------------------------------------------------------------------ T5 progress
SAMPLERS = {
    "PixelCNN.sample": lambda progress: small_pixelcnn().sample(2, progress=progress),
    "PixelCNN.sample_fast": lambda progress: small_pixelcnn().sample_fast(2, progress=progress),
    "PixelVAE.sample": lambda progress: small_pixel_vae().sample(2, progress=progress),
    "PixelVAE.reconstruct": lambda progress: small_pixel_vae().reconstruct(IMAGES,
                                                                           progress=progress),
    "WaveNet.generate": lambda progress: small_wavenet().generate(5, progress=progress),
    "WaveNet.generate(naive)": lambda progress: small_wavenet().generate(
        5, method="naive", progress=progress),
}


@pytest.fixture
def bar_at_once(monkeypatch):
    """The samplers' bar without its one-second delay, so a short call shows it."""
    make = ppl_models.checks.tqdm

    def at_once(*args, **kwargs):
        return make(*args, **{**kwargs, "delay": 0})

    monkeypatch.setattr(ppl_models.checks, "tqdm", at_once)


@pytest.mark.parametrize("sample", SAMPLERS.values(), ids=list(SAMPLERS))
def test_samplers_show_a_bar_unless_progress_is_false(sample, bar_at_once, capsys):
    sample(True)
    assert "draws" in capsys.readouterr().err
    sample(False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("sample", SAMPLERS.values(), ids=list(SAMPLERS))
@pytest.mark.parametrize("value", ["no", 0, None])
def test_samplers_refuse_a_progress_that_is_not_a_bool(sample, value):
    with pytest.raises(TypeError, match=f"progress must be True or False, got {value!r}"):
        sample(value)


def test_the_bar_waits_a_second_and_counts_every_pixel_and_channel(monkeypatch):
    totals = []
    make = ppl_models.checks.tqdm

    def record(*args, **kwargs):
        bar = make(*args, **kwargs)
        totals.append(bar)
        return bar

    monkeypatch.setattr(ppl_models.checks, "tqdm", record)
    small_pixelcnn().sample_fast(2)  # too short to show the bar, but it counts
    small_wavenet().generate(7)
    assert [(bar.total, bar.n, bar.delay) for bar in totals] == [(16, 16, 1.0), (7, 7, 1.0)]
