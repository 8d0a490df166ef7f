"""Every tensor argument of the public functions, given what careless callers pass (a meta
tensor, a complex, bool, 0-d or empty tensor, a list, None), either works or is refused by
the library itself: a ``ValueError``/``TypeError`` raised in ``inference`` or ``ppl_models``,
never an error from deep inside torch, numpy or Pyro (a fuzzer of the late session of
2026-11-28 found ten such calls; each is fixed and this keeps the class closed)."""

import traceback
from pathlib import Path

import pytest
import torch

import inference as I
from ppl_models import (GRULanguageModel, LinearGaussian, NGramModel, PixelCNN, Vocabulary,
                        WaveNet, binarize_dynamic, binarize_static, mu_law_decode,
                        mu_law_encode, to_levels, uniform_dequantize)
from ppl_models.vae import VAE

ROOT = Path(__file__).resolve().parents[2]
OURS = (str(ROOT / "inference"), str(ROOT / "ppl_models"))


def _cases():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    vae = VAE((1, 4, 4), 2, hidden=(8,)).eval()
    x = (torch.rand(3, 1, 4, 4, generator=g) < 0.5).float()
    log_w = torch.randn(20, 3, generator=g)
    scores = torch.randn(6, generator=g)
    probs = torch.softmax(torch.randn(5, 3, generator=g), -1)
    symbols = torch.randint(0, 3, (5,), generator=g)
    vocab = Vocabulary("abc")
    pixelcnn = PixelCNN((1, 4, 4), channels=4, num_blocks=1, first_kernel_size=3).eval()
    words = vocab.encode(["ab", "c", "cab"])
    ngram = NGramModel(2, vocab).fit_counts(words)
    gru = GRULanguageModel(vocab, hidden=4).eval()
    wavenet = WaveNet(layers=2, channels=4, skip_channels=4).eval()
    linear = LinearGaussian(3, 2)
    grey = torch.randint(0, 256, (2, 1, 4, 4), generator=g).float() / 255
    return {
        "pixelcnn.log_prob": (pixelcnn.log_prob, [x]),
        "ngram.log_prob": (ngram.log_prob, [words]),
        "gru.log_prob": (gru.log_prob, [words]),
        "wavenet.log_prob": (wavenet.log_prob, [torch.randint(0, 256, (2, 20), generator=g)]),
        "linear.log_marginal": (linear.log_marginal, [torch.randn(4, 3, generator=g)]),
        "uniform_dequantize": (uniform_dequantize, [grey]),
        "binarize_dynamic": (binarize_dynamic, [grey]),
        "kl_per_dimension": (lambda data: I.kl_per_dimension(vae.model, vae.guide, data), [x]),
        "weight_diagnostics": (lambda data: I.weight_diagnostics(vae.model, vae.guide, data,
                                                                 num_samples=25), [x]),
        "log_evidence": (lambda data: I.log_evidence(vae.model, vae.guide, data,
                                                     num_samples=2), [x]),
        "super_resolve_map": (lambda y: I.super_resolve_map(vae, y, 2, steps=2),
                              [I.average_pool(x, 2)]),
        "bits_back_encode": (lambda images: I.bits_back_encode(vae, images), [x]),
        "encode_images": (lambda images: I.encode_images(
            lambda s: torch.full((*s.shape, 2), 0.5), images), [x.long()]),
        "bits_per_dim": (I.bits_per_dim, [torch.tensor([100.0]), 16]),
        "effective_sample_size": (I.effective_sample_size, [log_w]),
        "pareto_k": (I.pareto_k, [log_w]),
        "iwae_from_weights": (I.iwae_from_weights, [log_w, 4]),
        "log_mean_exp": (I.log_mean_exp, [log_w, 0]),
        "auroc": (I.auroc, [scores, scores + 1]),
        "nll_scores": (I.nll_scores, [scores]),
        "likelihood_ratio_scores": (I.likelihood_ratio_scores, [scores, scores]),
        "typicality_scores": (I.typicality_scores, [scores, scores, 2]),
        "active_units": (I.active_units, [torch.randn(6, 2, generator=g)]),
        "average_pool": (I.average_pool, [x, 2]),
        "observed_channel": (I.observed_channel, [x]),
        "information_bits": (I.information_bits, [symbols, probs]),
        "range_encode": (I.range_encode, [symbols, probs]),
        "mu_law_encode": (mu_law_encode, [torch.linspace(-1, 1, 7)]),
        "mu_law_decode": (mu_law_decode, [torch.arange(7)]),
        "binarize_static": (lambda images: binarize_static(images, 0), [x]),
        "to_levels": (to_levels, [x]),
        "vocab.decode": (vocab.decode, [vocab.encode(["ab", "c"])]),
        "elbo": (lambda data: I.elbo(vae.model, vae.guide, data, num_samples=2), [x]),
        "iwae_bound": (lambda data: I.iwae_bound(vae.model, vae.guide, data, num_samples=4),
                       [x]),
        "posterior_means": (lambda data: I.posterior_means(vae.guide, data), [x]),
        "vae.reconstruct": (vae.reconstruct, [x]),
        "vae.encode": (vae.encode, [x]),
        "map_complete": (lambda channel: I.map_complete(vae, channel, steps=2),
                         [I.observed_channel(x)]),
    }


CASES = _cases()
CARELESS = {
    "meta": lambda t: t.to("meta"),
    "complex": lambda t: t.to(torch.complex64),
    "bool": lambda t: t.bool(),
    "0-d": lambda t: t.reshape(-1)[0].clone(),
    "empty": lambda t: t.reshape(-1)[:0],
    "list": lambda t: t.tolist(),
    "None": lambda t: None,
    "requires_grad": lambda t: t.double().float().requires_grad_() if t.is_floating_point()
    else t,
}


@pytest.mark.parametrize("careless", sorted(CARELESS))
@pytest.mark.parametrize("name", sorted(CASES))
def test_careless_tensor_arguments_work_or_are_refused_by_the_library(name, careless):
    call, args = CASES[name]
    for slot, valid in enumerate(args):
        if not torch.is_tensor(valid):
            continue
        given = list(args)
        given[slot] = CARELESS[careless](valid)
        try:
            call(*given)
        except (ValueError, TypeError) as error:
            frame = traceback.extract_tb(error.__traceback__)[-1]
            assert frame.filename.startswith(OURS), (
                f"{name}(argument {slot} {careless}) failed in {frame.filename}:"
                f"{frame.lineno}, not refused by the library: {error}")


def _count_cases():
    torch.manual_seed(0)
    vae = VAE((1, 4, 4), 2, hidden=(8,)).eval()
    x = (torch.rand(3, 1, 4, 4) < 0.5).float()
    log_w = torch.randn(20, 3)
    pair = (vae.model, vae.guide, x)
    return {
        "elbo(num_samples)": lambda v: I.elbo(*pair, num_samples=v),
        "iwae_bound(num_samples)": lambda v: I.iwae_bound(*pair, num_samples=v),
        "iwae_bound(chunk_size)": lambda v: I.iwae_bound(*pair, num_samples=4, chunk_size=v),
        "log_evidence(batch_size)": lambda v: I.log_evidence(*pair, num_samples=2,
                                                              batch_size=v),
        "bound_sweep(repeats)": lambda v: I.bound_sweep(*pair, num_samples=(1, 2), repeats=v),
        "ais_log_evidence(num_steps)": lambda v: I.ais_log_evidence(*pair, num_chains=2,
                                                                    num_steps=v),
        "fit(epochs)": lambda v: I.fit(*pair, epochs=v, progress=False),
        "fit(lr)": lambda v: I.fit(*pair, epochs=1, lr=v, progress=False),
        "iwae_from_weights(k)": lambda v: I.iwae_from_weights(log_w, v),
        "annealing_schedule(num_steps)": lambda v: I.annealing_schedule(v),
        "average_pool(factor)": lambda v: I.average_pool(x, v),
        "map_complete(steps)": lambda v: I.map_complete(vae, I.observed_channel(x), steps=v),
        "vae.reconstruct(num_samples)": lambda v: vae.reconstruct(x, num_samples=v),
    }


COUNT_CASES = _count_cases()


@pytest.mark.parametrize("value", [-1, 1.5, True, "3", None, float("nan"), float("inf")],
                         ids=["-1", "1.5", "True", "'3'", "None", "nan", "inf"])
@pytest.mark.parametrize("name", sorted(COUNT_CASES))
def test_careless_counts_work_or_are_refused_by_the_library(name, value):
    try:
        COUNT_CASES[name](value)
    except (ValueError, TypeError) as error:
        frame = traceback.extract_tb(error.__traceback__)[-1]
        assert frame.filename.startswith(OURS), (
            f"{name}={value!r} failed in {frame.filename}:{frame.lineno}, not refused by "
            f"the library: {error}")
