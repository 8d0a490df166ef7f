"""A careless user's calls that gave silent nonsense or raw torch errors (a probe of the
evening of 2026-11-28), each failing here before its fix."""

import pyro
import pytest
import torch

from inference import (ais_log_evidence, amortization_gap, annealing_schedule, elbo,
                       exact_log_evidence, fit, iwae_bound)
from inference.pair_check import PairError
from ppl_models import LinearGaussian


@pytest.fixture
def pair():
    pyro.clear_param_store()
    model = LinearGaussian(data_dim=3, latent_dim=1, seed=0)
    return model, model.simulate(8, seed=0).detach()


@pytest.mark.parametrize("entry", ["iwae_bound", "elbo", "exact_log_evidence", "fit"])
def test_a_model_that_observes_nothing_is_refused(pair, entry):
    # the guide passed as the model: every estimate was 0 nats and fit "trained" at loss 0
    model, x = pair
    calls = {"iwae_bound": lambda: iwae_bound(model.guide, model.guide, x, num_samples=10),
             "elbo": lambda: elbo(model.guide, model.guide, x),
             "exact_log_evidence": lambda: exact_log_evidence(model.guide, x),
             "fit": lambda: fit(model.guide, model.guide, x, epochs=1, progress=False)}
    with pytest.raises(PairError, match=r"the model observes no site .* guide passed as the "
                                        r"model"):
        calls[entry]()


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_fit_trains_whatever_the_caller_s_gradient_mode(pair, context):
    # under no_grad or inference_mode fit returned a normal history and moved nothing
    model, x = pair
    start = model.weight.detach().clone()
    with context():
        data = x.clone()  # under inference_mode: an inference tensor
        fit(model.model, model.guide, data, epochs=2, batch_size=4, lr=0.1, progress=False)
    assert float((model.weight.detach() - start).abs().max()) > 0.01


def test_fit_leaves_the_user_s_data_without_gradients(pair):
    model, x = pair
    data = x.clone().requires_grad_()
    fit(model.model, model.guide, data, epochs=1, batch_size=4, progress=False)
    assert data.grad is None


def test_data_made_under_inference_mode_feed_the_differentiating_estimators(pair):
    # torch's "Inference tensors cannot be saved for backward", from inside a Linear layer
    model, x = pair
    with torch.inference_mode():
        data = x.clone()
    torch.manual_seed(0)
    ais = ais_log_evidence(model.model, model.guide, data, num_chains=4, num_steps=5)
    assert torch.isfinite(ais.log_evidence).all()
    gap = amortization_gap(model.model, model.guide, data, num_steps=5, num_eval_samples=4)
    assert torch.isfinite(gap.elbo_amortized).all()


def _normal_pair():
    import pyro.distributions as dist

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    return model


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_an_autoguide_is_scored_under_inference_mode_as_under_no_grad(context):
    # under inference_mode every estimator refused AutoNormal as "a point mass" (its latent
    # a Delta that does not depend on the auxiliary draw): the check read an autograd graph
    # that inference mode never builds; a guide whose latent depends on another's draw was
    # likewise missed. Conjugate pair: log p(x) = log N(x; 0, 1 + 0.25)
    import math

    import pyro.distributions as dist
    from pyro.infer.autoguide import AutoNormal

    pyro.clear_param_store()
    model = _normal_pair()
    guide = AutoNormal(model)
    x = torch.tensor([1.2, -0.3, 2.0, 0.1])
    fit(model, guide, x, epochs=200, batch_size=4, shuffle=False, lr=0.05, progress=False)
    exact = dist.Normal(0.0, math.sqrt(1.25)).log_prob(x)
    torch.manual_seed(0)
    with context():
        data = x.clone()  # an inference tensor under inference_mode
        bound = iwae_bound(model, guide, data, num_samples=2000, progress=False)
        lower = elbo(model, guide, data, num_samples=2000)
    assert float((bound - exact).abs().max()) < 0.05
    # a trained guide: the ELBO within 0.1 nats below log p(x) (its noise ~0.01 at K = 2000)
    assert bool(((exact - lower) < 0.1).all()) and float((exact - lower).mean()) > -0.01


def test_an_endless_annealing_run_is_refused_before_its_schedule(pair):
    # 10**12 steps tried to allocate an 8 TB schedule
    model, x = pair
    with pytest.raises(ValueError, match=r"num_steps must be at most 10,000,000"):
        ais_log_evidence(model.model, model.guide, x, num_steps=10**12)
    with pytest.raises(ValueError, match=r"num_steps must be at most"):
        annealing_schedule(10**9)


def test_a_grid_too_coarse_for_the_posterior_says_so(pair):
    model, x = pair
    with pytest.raises(ValueError, match=r"between nodes as far apart as these \(up to "
                                         r"2\.5e\+26: narrow bounds or raise num_points\)"):
        exact_log_evidence(model.model, x, bounds=(-1e30, 1e30), num_points=8001)


def test_half_precision_weights_past_65504_keep_their_value():
    # float16's sum of exp overflowed: +inf where the answer is 0
    from inference import iwae_from_weights, log_mean_exp

    weights = torch.zeros(70000, 2, dtype=torch.float16)
    assert torch.equal(log_mean_exp(weights), torch.zeros(2, dtype=torch.float16))
    assert torch.equal(iwae_from_weights(weights, 70000), torch.zeros(2, dtype=torch.float16))
    with pytest.raises(TypeError, match=r"log_w must be a real floating-point tensor, got "
                                        r"dtype torch.complex64"):
        log_mean_exp(weights.to(torch.complex64))


@pytest.mark.parametrize("entry", ["fit", "elbo"])
def test_complex_data_are_named(pair, entry):
    # torch's '"gt_cpu" not implemented for ComplexFloat', from inside a support check
    model, x = pair
    data = x.to(torch.complex64)
    with pytest.raises(TypeError, match=r"has dtype torch.complex64: the models score real"):
        if entry == "fit":
            fit(model.model, model.guide, data, epochs=1, progress=False)
        else:
            elbo(model.model, model.guide, data)


def test_encoding_nan_images_is_refused_while_validating():
    from ppl_models.vae import VAE, Autoencoder

    images = torch.full((2, 1, 4, 4), float("nan"))
    for network in (VAE((1, 4, 4), latent_dim=2, hidden=(8,)),
                    Autoencoder((1, 4, 4), latent_dim=2, hidden=(8,))):
        with pytest.raises(ValueError, match=r"x holds 32 NaN value\(s\)"):
            network.encode(images)  # NaN codes before


def test_resuming_from_a_missing_checkpoint_says_so(pair, tmp_path):
    model, x = pair
    with pytest.warns(UserWarning, match=r"resume=True, but there is no checkpoint at "):
        fit(model.model, model.guide, x, epochs=1, checkpoint=tmp_path / "typo" / "run.pt",
            resume=True, progress=False)


def test_keep_best_names_modules_that_are_not_modules():
    from inference import KeepBest

    with pytest.raises(ValueError, match=r"modules must be an nn.Module .* got NoneType"):
        KeepBest(None, lambda: 0.0)


def test_a_batch_transform_that_makes_nan_is_named(pair):
    # torch's "Expected parameter loc ... found invalid values", naming no transform
    model, x = pair
    with pytest.raises(ValueError, match=r"batch_transform returned 24 NaN or infinite"):
        fit(model.model, model.guide, x, epochs=1,
            batch_transform=lambda batch: batch * float("nan"), progress=False)


@pytest.mark.parametrize("batch, error, message", [
    (torch.zeros(0, 3), ValueError, r"argument 0 has no datapoints"),
    (torch.full((4, 3), float("nan")), ValueError, r"argument 0 .* contains 12 NaN"),
    ("numpy", TypeError, r"argument 0 is a numpy array"),
])
def test_svi_step_names_a_batch_it_cannot_train_on(pair, batch, error, message):
    # ZeroDivisionError from Pyro's plate, torch's "Expected parameter loc", an AttributeError
    import numpy

    from inference import Adam, SVIStep

    model, _ = pair
    step = SVIStep(model.model, model.guide, Adam(1e-3))
    batch = numpy.zeros((4, 3), dtype=numpy.float32) if isinstance(batch, str) else batch
    with pytest.raises(error, match=message):
        step.step(batch)


def test_check_pair_given_a_pair_says_what_it_takes(pair):
    # "'function' object has no attribute 'startswith'"
    from inference import check_pair

    model, _ = pair
    with pytest.raises(TypeError, match=r"structure must be the PairStructure that "
                                        r"survey_pair returns, got method"):
        check_pair(model.model, model.guide)


def test_data_paths_of_the_wrong_kind_are_named(tmp_path):
    # pathlib's "expected str, bytes or os.PathLike object, not int"; a bare IsADirectoryError
    from ppl_models.data import read_idx
    from ppl_models.text import load_words

    with pytest.raises(IsADirectoryError, match=r"is a folder; pass an IDX file in it"):
        read_idx(tmp_path)
    with pytest.raises(TypeError, match=r"path must be a str or a path, got int"):
        read_idx(5)
    with pytest.raises(TypeError, match=r"path must be a str, a path or None, got int"):
        load_words(5)


def _plain_param_pair():
    import pyro.distributions as dist

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc * x, 0.5))
    return model, guide


@pytest.mark.parametrize("kind", ["networks", "pyro.param"])
@pytest.mark.parametrize("entry", ["fit", "elbo", "iwae_bound"])
def test_parameters_left_nan_by_a_diverged_fit_are_named(kind, entry):
    # after a diverged fit (which says its parameters hold the diverged values) the next fit
    # or estimate failed in torch's "Expected parameter loc ... found invalid values"
    from ppl_models.vae import VAE

    pyro.clear_param_store()
    torch.manual_seed(0)
    if kind == "networks":
        vae = VAE((1, 2, 2), 2, hidden=(4,))
        model, guide, x = vae.model, vae.guide, (torch.rand(4, 1, 2, 2) < 0.5).float()
        with torch.no_grad():
            vae.encoder.net[0].weight.fill_(float("nan"))  # what a diverged run leaves
        named = r"VAE\.encoder\.net\.0\.weight \(16 of 16\)"
    else:
        model, guide = _plain_param_pair()
        x = torch.randn(4)
        guide(x)  # creates the parameter
        with torch.no_grad():
            pyro.param("loc").unconstrained().fill_(float("inf"))  # passes Real(): it runs
        named = r"the pair's parameters hold NaN or infinite values: loc \(1 of 1\)"
    calls = {"fit": lambda: fit(model, guide, x, epochs=1, progress=False),
             "elbo": lambda: elbo(model, guide, x),
             "iwae_bound": lambda: iwae_bound(model, guide, x, num_samples=4)}
    if kind == "networks":  # NaN fails the Normal's check: the survey's run fails
        named = r"the pair failed to run \(ValueError: .*\); its parameters hold NaN or " \
                r"infinite values: " + named
    with pytest.raises(PairError, match=named):
        calls[entry]()


def test_the_uses_refuse_a_model_whose_prior_is_not_the_standard_normal():
    # completion, super-resolution and bits-back coding score z under N(0, I): a two-layer
    # VAE (z1's prior is p(z1 | z2) p(z2)) was taken silently, the MAP and chains aiming at
    # another posterior; PixelVAE's decode(x, z) failed with "missing 1 required argument"
    from inference import (average_pool, bits_back_encode, map_complete, observed_channel,
                           super_resolve_map)
    from ppl_models import PixelVAE, TwoLayerVAE

    x = (torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    for model, match in ((TwoLayerVAE((1, 4, 4), 2, 2, hidden=(4,), top_hidden=(4,)),
                          "TwoLayerVAE's latent prior is hierarchical"),
                         (PixelVAE((1, 4, 4), 2, hidden=(4,), channels=4, num_blocks=1,
                                   first_kernel_size=3), "vae.decode must take z alone")):
        for call in (lambda: map_complete(model, observed_channel(x), steps=1),
                     lambda: super_resolve_map(model, average_pool(x, 2), 2, steps=1)):
            with pytest.raises(TypeError, match=match):
                call()
    with pytest.raises(TypeError, match="TwoLayerVAE's latent prior is hierarchical"):
        bits_back_encode(TwoLayerVAE((1, 4, 4), 2, 2, hidden=(4,), top_hidden=(4,)), x)


@pytest.mark.parametrize("shuffle", [True, False])
def test_a_batch_transform_working_in_place_leaves_the_data_alone(shuffle):
    # fit's checks before training passed views of the data to batch_transform: x.mul_(2)
    # doubled the caller's first rows (and a resume then refused the changed data)
    from ppl_models.vae import VAE

    pyro.clear_param_store()
    vae = VAE((1, 2, 2), 2, hidden=(4,))
    x = 0.5 * (torch.rand(8, 1, 2, 2, generator=torch.Generator().manual_seed(0)) < 0.5)
    before = x.clone()
    fit(vae.model, vae.guide, x, epochs=1, batch_size=4, shuffle=shuffle, progress=False,
        batch_transform=lambda b: b.mul_(2))
    assert torch.equal(x, before)


def test_super_resolve_gibbs_names_a_log_prob_that_returns_no_tensor_of_n():
    # a 0-d tensor failed in torch.cat ("zero-dimensional tensor cannot be concatenated"),
    # a numpy array with "expected Tensor as element 0"
    import numpy as np

    from inference import average_pool, super_resolve_gibbs

    x = (torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    for log_prob in (lambda images: torch.tensor(0.0), lambda images: np.zeros(len(images))):
        with pytest.raises(ValueError, match=r"log_prob must map \[n, C, H, W\] to a tensor \[n\]"):
            super_resolve_gibbs(log_prob, average_pool(x, 2), 2, num_sweeps=1)


def test_vocabulary_encode_counts_a_huge_max_len_before_allocating(monkeypatch):
    # max_len=10**10 ended in a bare MemoryError after filling lists
    import ppl_models.checks as model_checks
    from ppl_models import Vocabulary

    monkeypatch.setattr(model_checks, "physical_memory", lambda: 24 * 2**30)
    with pytest.raises(ValueError, match=r"max_len=10000000000: 1 words padded to it"):
        Vocabulary("ab").encode(["ab"], max_len=10**10)
