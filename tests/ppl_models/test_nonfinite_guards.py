"""Samplers, generators and closed forms refuse NaN/infinite network outputs and parameters
with a named error instead of returning all-zero images, sequences or NaN scores; range checks
that guard an embedding's index do not depend on Pyro's validation flag; 'meta' tensors are
refused by name; impossible split fractions are named."""

import functools
import time

import pyro
import pytest
import torch

import ppl_models.pixelcnn as pixelcnn_module
import ppl_models.wavenet as wavenet_module
from ppl_models import checks
from ppl_models.data import binarize_dynamic, binarize_static, to_levels, uniform_dequantize
from ppl_models.linear_gaussian import LinearGaussian
from ppl_models.hierarchical_vae import TwoLayerVAE
from ppl_models.neural_lm import GRULanguageModel
from ppl_models.ngram import NGramModel
from ppl_models.pixel_vae import PixelVAE
from ppl_models.pixelcnn import PixelCNN
from ppl_models.text import Vocabulary, draw_words, load_words, split_words
from ppl_models.vae import VAE
from ppl_models.wavenet import WaveNet

NAN = float("nan")
CHECK_WEIGHTS = r"check the model's weights"


def _poison(module: torch.nn.Module, value: float = NAN) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(value)


def _lazy(monkeypatch, module) -> None:
    """Make a module's samplers check as they do on an accelerator: one flag, read at the end."""
    monkeypatch.setattr(module, "NonFiniteGuard",
                        functools.partial(checks.NonFiniteGuard, lazy=True))


# ------------------------------------------------------------------------------ PixelCNN
def _pixelcnn(**kwargs) -> PixelCNN:
    torch.manual_seed(0)
    return PixelCNN((1, 3, 3), **{"channels": 4, "num_blocks": 1, **kwargs})


@pytest.mark.parametrize("method", ["sample", "sample_fast"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "categorical256", "logistic-mixture"])
@pytest.mark.parametrize("value", [NAN, float("inf")])
def test_pixelcnn_samplers_refuse_nonfinite_network_outputs(method, likelihood, value):
    m = _pixelcnn(likelihood=likelihood)
    with torch.no_grad():
        m.head[1].weight.fill_(value)
    with pytest.raises(FloatingPointError, match=rf"PixelCNN\.{method}: the network's outputs "
                       rf"for pixel \(c=0, i=0, j=0\) are NaN or infinite in rows \[0, 1\] of "
                       rf"2.*{CHECK_WEIGHTS}"):
        getattr(m, method)(2)


@pytest.mark.parametrize("method", ["sample", "sample_fast"])
def test_pixelcnn_lazy_check_still_refuses_and_names_the_first_pixel(method, monkeypatch):
    _lazy(monkeypatch, pixelcnn_module)
    m = _pixelcnn()
    assert getattr(m, method)(2).shape == (2, 1, 3, 3)  # finite: unchanged
    with torch.no_grad():
        m.head[1].bias.fill_(NAN)
    with pytest.raises(FloatingPointError, match=r"pixel \(c=0, i=0, j=0\).*rows \[0, 1\] of 2"
                       r".*found after the run"):
        getattr(m, method)(2)


@pytest.mark.parametrize("method", ["sample", "sample_fast"])
def test_pixelcnn_samplers_refuse_nonfinite_conditioning(method):
    m = _pixelcnn(cond_dim=3)
    for value in (NAN, float("inf")):
        with pytest.raises(ValueError, match=r"^h holds 1 (NaN|infinite) value"):
            getattr(m, method)(2, h=torch.tensor([[0.0, 0.0, 0.0], [0.0, value, 0.0]]))


@pytest.mark.parametrize("method", ["sample", "sample_fast"])
def test_pixelcnn_completion_names_the_first_drawn_pixel(method):
    m = _pixelcnn()
    with torch.no_grad():
        m.head[1].bias.fill_(NAN)
    given = torch.ones(2, 1, 3, 3)
    mask = torch.zeros(2, 1, 3, 3, dtype=torch.bool)
    mask[:, :, 0] = True  # the first row given in both images
    mask[0, :, 1] = True  # the second row given in image 0 only
    with pytest.raises(FloatingPointError, match=r"pixel \(c=0, i=1, j=0\) are NaN or "
                       r"infinite in rows \[1\] of 2"):
        getattr(m, method)(2, given=given, mask=mask)
    # every pixel given: nothing is drawn from the network, nothing to refuse
    full = torch.ones_like(mask)
    assert torch.equal(getattr(m, method)(2, given=given, mask=full), given)


# ------------------------------------------------------------------------------ PixelVAE
def _pixel_vae() -> PixelVAE:
    torch.manual_seed(0)
    return PixelVAE((1, 3, 3), 2, hidden=(4,), channels=4, num_blocks=1)


@pytest.mark.parametrize("fast", [True, False])
def test_pixel_vae_sample_refuses_a_nonfinite_decoder(fast):
    m = _pixel_vae()
    _poison(m.decoder.head)
    method = "sample_fast" if fast else "sample"
    with pytest.raises(FloatingPointError, match=rf"PixelVAE\.sample \(decoder PixelCNN\."
                       rf"{method}\): the network's outputs for pixel \(c=0, i=0, j=0\)"):
        m.sample(2, fast=fast)


@pytest.mark.parametrize("num_samples", [0, 2])
def test_pixel_vae_reconstruct_refuses_a_nonfinite_encoder_or_decoder(num_samples):
    m = _pixel_vae()
    x = torch.ones(2, 1, 3, 3)
    _poison(m.encoder)
    with pytest.raises(FloatingPointError, match=r"PixelVAE\.reconstruct: the encoder's "
                       r"outputs \(loc, scale of q\(z \| x\)\) are NaN or infinite in rows "
                       r"\[0, 1\] of 2"):
        m.reconstruct(x, num_samples)
    m = _pixel_vae()
    _poison(m.decoder.head)
    with pytest.raises(FloatingPointError, match=r"PixelVAE\.reconstruct \(decoder PixelCNN"):
        m.reconstruct(x, num_samples)


# ------------------------------------------------------------------------------- WaveNet
def _wavenet(**kwargs) -> WaveNet:
    torch.manual_seed(0)
    return WaveNet(**{"layers": 2, "channels": 4, "skip_channels": 4, "num_levels": 16,
                      **kwargs})


@pytest.mark.parametrize("method", ["fast", "naive"])
@pytest.mark.parametrize("lazy", [False, True])
def test_wavenet_generate_refuses_nonfinite_logits(method, lazy, monkeypatch):
    if lazy:
        _lazy(monkeypatch, wavenet_module)
    wn = _wavenet()
    assert wn.generate(4, batch_size=2, method=method).shape == (2, 4)
    with torch.no_grad():
        wn.head[-1].weight.fill_(NAN)
    with pytest.raises(FloatingPointError, match=rf"WaveNet\.generate\(method='{method}'\): "
                       rf"the network's outputs for time step 0 are NaN or infinite in rows "
                       rf"\[0, 1\] of 2.*{CHECK_WEIGHTS}"):
        wn.generate(8, batch_size=2, method=method)


def test_wavenet_log_prob_refuses_nonfinite_logits():
    wn = _wavenet()
    x = torch.randint(0, 16, (3, 5))
    assert torch.isfinite(wn.log_prob(x)).all()
    with torch.no_grad():
        wn.head[-1].bias[3] = float("inf")
    with pytest.raises(FloatingPointError, match=r"WaveNet\.log_prob: .*NaN or \+inf in "
                       r"rows \[0, 1, 2\] of 3"):
        wn.log_prob(x)


def test_wavenet_levels_of_probability_zero_are_scored_and_never_drawn():
    # a -inf logit is a level of probability zero, not a broken network: log_prob is -inf
    # for a sequence holding it, and both samplers draw around it
    wn = _wavenet()
    with torch.no_grad():
        wn.head[-1].bias[3] = float("-inf")
    x = torch.tensor([[1, 2, 4, 5, 6], [1, 3, 4, 5, 6]])
    log_p = wn.log_prob(x)
    assert bool(torch.isfinite(log_p[0])) and float(log_p[1]) == float("-inf")
    for method in ("fast", "naive"):
        drawn = wn.generate(16, batch_size=8, method=method, seed=0)
        assert not bool((drawn == 3).any()), method


@pytest.mark.parametrize("validation", [True, False])
def test_wavenet_range_checks_do_not_depend_on_pyro_validation(validation):
    wn = _wavenet(num_classes=2)
    x = torch.randint(0, 16, (2, 5))
    y = torch.tensor([0, 1])
    with pyro.validation_enabled(validation):
        for bad in (16, -1):
            x_bad = x.clone()
            x_bad[1, 3] = bad
            with pytest.raises(ValueError, match=r"x must hold levels in 0\.\.15"):
                wn.log_prob(x_bad, y)
            with pytest.raises(ValueError, match=r"x must hold levels in 0\.\.15"):
                wn.cached_logits(x_bad, y)
        for bad in (2, -1):
            with pytest.raises(ValueError, match=r"y must hold class ids in 0\.\.1"):
                wn.log_prob(x, torch.tensor([0, bad]))
            with pytest.raises(ValueError, match=r"y must hold class ids in 0\.\.1"):
                wn.generate(3, y=torch.tensor([bad, 0]))


def test_wavenet_refuses_a_receptive_field_beyond_memory_at_construction():
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"layers=36.*dilation 2\*\*35.*physical memory"):
        WaveNet(layers=36, channels=2, skip_channels=2, num_levels=4)
    with pytest.raises(ValueError, match=r"layers=2000"):
        WaveNet(layers=2000, channels=2, skip_channels=2, num_levels=4)
    assert time.perf_counter() - start < 5


def test_wavenet_logits_refuse_a_sequence_beyond_memory_before_reading_it():
    wn = _wavenet()
    x = torch.zeros(1, 1, dtype=torch.long).expand(2**20, 2**20)  # a view: no memory
    with pytest.raises(ValueError, match=r"x of shape \[1048576, 1048576\].*physical memory"):
        wn.log_prob(x)


# --------------------------------------------------------------------- GRU language model
def _lm() -> tuple[GRULanguageModel, torch.Tensor]:
    torch.manual_seed(0)
    v = Vocabulary("abc")
    return GRULanguageModel(v, 4, 8), v.encode(["ab", "cab"])


def test_gru_log_prob_refuses_nonfinite_logits():
    lm, x = _lm()
    assert torch.isfinite(lm.log_prob(x)).all()
    with torch.no_grad():
        lm.head.weight.fill_(NAN)
    with pytest.raises(FloatingPointError, match=rf"GRULanguageModel\.log_prob: .*NaN or "
                       rf"\+inf in rows \[0, 1\] of 2.*{CHECK_WEIGHTS}"):
        lm.log_prob(x)


def test_gru_sample_refuses_nonfinite_probabilities():
    lm, _ = _lm()
    with torch.no_grad():
        lm.head.bias.fill_(NAN)
    with pytest.raises(FloatingPointError, match=r"GRULanguageModel\.sample: the next-symbol "
                       r"probabilities for symbol 1 are NaN, infinite, negative or all zero in "
                       r"rows \[0, 1\] of 2"):
        lm.sample(2)


def test_draw_words_names_bad_probabilities():
    v = Vocabulary("ab")
    for bad in (torch.tensor([0.5, -0.1, 0.6]), torch.zeros(3), torch.tensor([NAN, 1, 1])):
        with pytest.raises(FloatingPointError, match=r"the next-symbol probabilities for "
                           r"symbol 1 are NaN, infinite, negative or all zero in rows \[1\]"):
            draw_words(v, lambda prev, b=bad: torch.stack([torch.ones(3), b]), 2)


# ------------------------------------------------------------------------ LinearGaussian
@pytest.mark.parametrize("method", ["simulate", "posterior", "log_marginal"])
def test_linear_gaussian_refuses_nonfinite_parameters(method):
    m = LinearGaussian(3, 1)
    x = m.simulate(4)
    with torch.no_grad():
        m.weight[0, 0] = NAN
    args = (4,) if method == "simulate" else (x,)
    with pytest.raises(FloatingPointError, match=rf"LinearGaussian\.{method}: the parameters "
                       rf"\['weight'\] hold NaN or infinite values"):
        getattr(m, method)(*args)


def test_linear_gaussian_posterior_names_an_overflowing_precision():
    m = LinearGaussian(3, 1)
    x = m.simulate(4)
    with torch.no_grad():
        m.weight.fill_(1e30)  # finite, but W^T W / s^2 overflows float32
    with pytest.raises(FloatingPointError, match=r"LinearGaussian\.posterior: .*overflow"):
        m.posterior(x)


# ------------------------------------------------------------------------- meta tensors
META_CALLS = {
    "binarize_static": lambda x: binarize_static(x, 0),
    "binarize_dynamic": binarize_dynamic,
    "uniform_dequantize": uniform_dequantize,
    "to_levels": to_levels,
}


@pytest.mark.parametrize("name", sorted(META_CALLS))
def test_data_functions_refuse_meta_tensors_by_name(name):
    with pytest.raises(ValueError, match=r"images is a meta tensor"):
        META_CALLS[name](torch.rand(2, 3, device="meta"))


def test_mu_law_encode_refuses_meta_tensors_by_name():
    # it failed in torch's "Tensor.item() cannot be called on meta tensors"
    from ppl_models import mu_law_encode

    with pytest.raises(ValueError, match=r"x is a meta tensor"):
        mu_law_encode(torch.zeros(4, device="meta"))


def test_models_refuse_meta_tensors_by_name():
    meta = torch.zeros(2, 3, dtype=torch.long, device="meta")
    v = Vocabulary("ab")
    with pytest.raises(ValueError, match=r"x is a meta tensor"):
        v.check(meta)
    with pytest.raises(ValueError, match=r"x is a meta tensor"):
        v.decode(meta)
    with pytest.raises(ValueError, match=r"x is a meta tensor"):
        _wavenet().log_prob(meta)
    with pytest.raises(ValueError, match=r"x is a meta tensor"):
        _pixelcnn().log_prob(torch.zeros(2, 1, 3, 3, device="meta"))


META_SAMPLERS = {  # these failed inside torch ("META device type not an accelerator")
    "VAE.sample_images": lambda: VAE((1, 4, 4), 2, hidden=(4,)).to("meta").sample_images(2),
    "TwoLayerVAE.sample_images": lambda: TwoLayerVAE((1, 4, 4)).to("meta").sample_images(2),
    "PixelCNN.sample": lambda: _pixelcnn().to("meta").sample(2),
    "PixelCNN.sample_fast": lambda: _pixelcnn().to("meta").sample_fast(2),
    "PixelVAE.sample": lambda: _pixel_vae().to("meta").sample(2),
    "WaveNet.generate": lambda: _wavenet().to("meta").generate(4),
    "GRULanguageModel.sample": lambda: _lm()[0].to("meta").sample(2),
    "NGramModel.sample": lambda: NGramModel(2, Vocabulary("ab")).to("meta").sample(2),
}


@pytest.mark.parametrize("call", sorted(META_SAMPLERS))
def test_samplers_of_meta_models_are_refused_by_name(call):
    with pytest.raises(ValueError, match=rf"{call}: \w+'s '[\w.]+' is on the meta device"):
        META_SAMPLERS[call]()


# ----------------------------------------------------------------------- split fractions
def test_split_fractions_summing_past_one_are_named(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("\n".join(f"w{i}" for i in range(50)))
    for call in (lambda: load_words(path, valid_fraction=0.6, test_fraction=0.5),
                 lambda: split_words([f"w{i}" for i in range(50)], 0.6, 0.5)):
        with pytest.raises(ValueError, match=r"valid_fraction=0\.6 and test_fraction=0\.5 sum "
                           r"to 1\.1"):
            call()
    with pytest.raises(ValueError, match="too few"):  # a real shortage keeps its message
        split_words(["a", "b"])
