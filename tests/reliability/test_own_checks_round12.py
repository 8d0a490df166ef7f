"""Gaps of the twelfth session (2026-11-30) that earlier probes left open; each test fails
on the code before its fix.

- ``GaussianPixel.log_prob`` divided by ``scale ** 2``, which underflows to 0 in float32
  below a scale of about 1e-19: NaN where the density is finite (torch's ``Normal`` too).
- Gaussian super-resolution with such scales failed inside torch's ``Normal`` (or returned
  NaN means) instead of naming the scale.
- A network passed as ``optim`` was accepted and failed after the first backward pass; an
  uninitialized lazy layer (``nn.LazyLinear``) failed inside torch.
- A plain-function pair's ``pyro.module`` networks lost their extra state
  (``get_extra_state``) on resume, silently: the checkpoint held only their buffers.
- Super-resolution scored a ``truth`` that does not pool to ``y`` (images in another order):
  -inf for some images, a plausible number for others.
- A model's own refusal of its input (a VAE given one image without its batch dim, or
  flattened images) came with Pyro's empty "Trace Shapes" table appended and no hint.
- ``elbo(model, guide, x, 1000)`` for a ``model(x, scale=0.5)`` scored the model at
  ``scale=1000`` without a word (a count meant for ``num_samples``); a list there failed
  inside torch.
- ``WeightDiagnostics.to_dict`` gave k-hat quantiles over the finite k-hats only (a median
  of -1.57 beside "unreliable: 7" of 10) and an IWAE mean of -inf (not strict JSON).
- ``exact_log_evidence`` told a posterior far outside its grid (which piled on the edge
  node) to "raise num_points or narrow bounds", the opposite of the fix.
- ``fit`` with minibatches advised moving an observed site or ``pyro.factor`` outside the
  data plate into the plate (counting it once per datapoint); it points to a prior with a
  point-mass guide now.
- ``loss="meanfield"`` and ``FreeBitsELBO`` took torch's generic exponential-family KL for a
  per-datapoint Wishart guide (wrong over a batch: a guide ran off to df = 1.8e5), and
  ``SVIStep.evaluate_loss`` failed inside it.
- ``elbo``, ``expected_log_likelihood``, ``kl_per_dimension`` and the ELBO row of
  ``bound_sweep`` summed float32 values of -4e37 to -inf where every log weight was finite.
- A diverged decoder (one NaN weight) failed inside torch in completion, super-resolution,
  ``kl_per_dimension`` and ``VAE.sample_images`` instead of being named.
- A callback saving the model to fit's checkpoint path made the next save stop the run and
  lose the epoch; a folder named like a writer's leftover file, a checkpoint this user
  cannot read and a folder it cannot enter failed with bare OS errors or were replaced.
- No example's ``--help`` showed its defaults (``--epochs``, ``--lr``, ``--max-k``...).
- The public ``save_checkpoint`` replaced the checkpoint a running ``fit`` in another
  process holds (its lock was not asked).
- ``CompiledSVIStep`` did not check an observed argument whose site was partly masked in
  the first batch of its shape: a later batch of that shape trained on impossible values.
"""

import math
import os
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from inference import Adam, SVIStep, elbo, fit
from inference.pair_check import PairError
from inference.training import checkpoints
from inference.uses.super_resolution import gaussian_pool_log_likelihood
from ppl_models.likelihoods import GaussianPixel


def test_gaussian_pixel_density_is_finite_for_scales_whose_square_underflows():
    scale = torch.tensor(1e-30)  # float32: scale ** 2 == 0
    x = torch.tensor([0.0, 1e-30, -2e-30])
    got = GaussianPixel(torch.zeros(3), scale).log_prob(x)
    # the closed form in float64: -z^2 / 2 - log(scale) - log(2 pi) / 2, z = x / scale
    z = x.double() / 1e-30
    exact = -0.5 * z ** 2 - math.log(1e-30) - 0.5 * math.log(2 * math.pi)
    assert torch.isfinite(got).all()
    assert torch.allclose(got.double(), exact, rtol=1e-6), (got, exact)


def test_gaussian_pixel_density_equals_torch_normal_for_ordinary_scales():
    generator = torch.Generator().manual_seed(0)
    loc, x = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64).unbind(0)
    scale = torch.rand(3, 4, 4, generator=generator, dtype=torch.float64) + 0.05
    assert torch.allclose(GaussianPixel(loc, scale).log_prob(x),
                          torch.distributions.Normal(loc, scale).log_prob(x), atol=1e-12)


@pytest.mark.parametrize("scale", [1e-20, 1e-30, 1e25])
def test_gaussian_super_resolution_names_scales_whose_squares_leave_the_dtype(scale):
    loc = torch.zeros(1, 1, 4, 4)
    y = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match=r"scale .* runs from .*float64"):
        gaussian_pool_log_likelihood(loc, torch.full_like(loc, scale), y, 2)
    # in float64 the same scales are representable and the density is finite
    if scale < 1e20:
        got = gaussian_pool_log_likelihood(loc.double(), torch.full_like(loc, scale).double(),
                                           y.double(), 2)
        # each pooled pixel ~ N(0, (scale / 2)^2) at 0: -log(scale / 2) - log(2 pi) / 2
        exact = 4 * (-math.log(scale / 2) - 0.5 * math.log(2 * math.pi))
        assert torch.allclose(got, torch.tensor([exact], dtype=torch.float64), rtol=1e-9)


def functional_pair(encoder: nn.Module, decoder: nn.Module):
    """A plain-function VAE pair over ``x: [N, 3]`` with a 1-dim code."""

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([1]).to_event(1))
            pyro.sample("x", dist.Normal(decoder(z), 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            h = encoder(x)
            pyro.sample("z", dist.Normal(h[:, :1], nn.functional.softplus(h[:, 1:]) + 0.1)
                        .to_event(1))

    return model, guide


def test_a_network_in_the_optimizers_place_is_refused_by_name():
    model, guide = functional_pair(nn.Linear(3, 2), nn.Linear(1, 3))
    with pytest.raises(TypeError, match=r"optim is a network \(Linear"):
        SVIStep(model, guide, nn.Linear(1, 3))


def test_an_uninitialized_lazy_layer_is_named_before_anything_runs():
    pyro.clear_param_store()
    model, guide = functional_pair(nn.Sequential(nn.LazyLinear(2)), nn.Linear(1, 3))
    x = torch.randn(8, 3)
    for call in (lambda: elbo(model, guide, x, num_samples=2, progress=False),
                 lambda: SVIStep(model, guide, Adam(1e-3)).step(x),
                 lambda: fit(model, guide, x, epochs=1, batch_size=4, progress=False)):
        with pytest.raises(PairError, match=r"'0\.weight' is not initialized yet .*LazyLinear"):
            call()


class CountingEncoder(nn.Module):
    """``nn.Linear(3, 2)`` that counts its training-mode forward passes in extra state (a
    dict, as a user's module keeps a step count or a schedule)."""

    def __init__(self):
        super().__init__()
        self.linear, self.calls = nn.Linear(3, 2), 0

    def get_extra_state(self):
        return {"calls": self.calls}

    def set_extra_state(self, state):
        self.calls = state["calls"]

    def forward(self, x):
        if torch.is_grad_enabled():
            self.calls += 1
        return self.linear(x)


def test_a_plain_function_pairs_network_extra_state_survives_resume(tmp_path):
    path = tmp_path / "run.pt"
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(1))
    pyro.clear_param_store()
    encoder = CountingEncoder()
    fit(*functional_pair(encoder, nn.Linear(1, 3)), x, epochs=3, batch_size=8,
        checkpoint=path, progress=False)
    after_three_epochs = encoder.calls  # 12 steps and the checks' passes
    saved = checkpoints.load_checkpoint(path)["network_buffers"]["encoder"]
    assert saved["_extra_state"] == {"calls": after_three_epochs}

    pyro.clear_param_store()
    fresh = CountingEncoder()
    fit(*functional_pair(fresh, nn.Linear(1, 3)), x, epochs=4, batch_size=8,
        checkpoint=path, resume=True, progress=False)
    # the saved count carried on by the fourth epoch's 4 steps (before the fix: the fresh
    # module's count of those alone)
    assert fresh.calls >= after_three_epochs + 4, (fresh.calls, after_three_epochs)


def test_extra_state_no_checkpoint_can_hold_is_refused_before_training(tmp_path):
    class Unsavable(CountingEncoder):
        def get_extra_state(self):
            return {"calls": self.calls, "hook": lambda: None}

    pyro.clear_param_store()
    encoder = Unsavable()
    with pytest.raises(TypeError, match=r"network_buffers'\] \(the buffers and "
                                        r"get_extra_state of the networks"):
        fit(*functional_pair(encoder, nn.Linear(1, 3)), torch.randn(8, 3), epochs=1,
            batch_size=4, checkpoint=tmp_path / "run.pt", progress=False)
    assert encoder.calls <= 2  # the checks' passes, no training step


class MaskedBernoulliPair(nn.Module):
    """Binary ``x: [N, 3]`` with per-row mask ``m: [N]`` (rows missing from a batch), or
    ``m=False`` (a site switched off); one latent per row."""

    def __init__(self):
        super().__init__()
        self.decoder, self.loc = nn.Linear(1, 3), nn.Parameter(torch.zeros(()))

    def model(self, x, m):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([1]).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1).mask(m), obs=x)

    def guide(self, x, m):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.loc.expand(x.shape[0], 1), 1.0).to_event(1))


def test_a_compiled_step_checks_a_site_the_first_batch_of_its_shape_masked():
    from inference import CompiledSVIStep

    pair = MaskedBernoulliPair()
    step = CompiledSVIStep(pair.model, pair.guide, backend="eager")
    x = torch.bernoulli(torch.full((6, 3), 0.5, dtype=torch.float32),
                        generator=torch.Generator().manual_seed(0))
    first_mask = torch.ones(6, dtype=torch.bool)
    first_mask[0] = False
    step.step(x, first_mask)
    impossible = x.clone()
    impossible[2, 1] = 2.0  # not a Bernoulli value, in a row the mask scores
    before = [p.detach().clone() for p in pair.parameters()]
    with pytest.raises(ValueError, match=r"site 'x' has 1 value\(s\) outside its support"):
        step.step(impossible, torch.ones(6, dtype=torch.bool))
    assert all(torch.equal(b, p) for b, p in zip(before, pair.parameters()))


def test_a_compiled_step_reads_nothing_of_a_site_masked_off():
    from inference import CompiledSVIStep

    x = torch.full((4, 3), -1.0)  # a filler no Bernoulli takes, never scored
    for make in (lambda p: SVIStep(p.model, p.guide),
                 lambda p: CompiledSVIStep(p.model, p.guide, backend="eager")):
        pair = MaskedBernoulliPair()
        step = make(pair)
        for _ in range(2):
            assert math.isfinite(step.step(x, False))


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian-learned"])
def test_super_resolution_refuses_a_truth_that_does_not_pool_to_y(likelihood):
    from inference.uses.super_resolution import (average_pool, super_resolve_gibbs,
                                                 super_resolve_map, super_resolve_mh,
                                                 super_resolve_mwg)
    from ppl_models.vae import VAE

    torch.manual_seed(0)
    vae = VAE((1, 4, 4), latent_dim=2, hidden=(8,), likelihood=likelihood)
    generator = torch.Generator().manual_seed(3)
    truth = torch.rand(3, 1, 4, 4, generator=generator)
    if likelihood == "bernoulli":
        truth = (truth < 0.5).float()
    y = average_pool(truth, 2)
    shuffled = truth[[1, 2, 0]]  # the images in another order than y's
    calls = [lambda t: super_resolve_map(vae, y, 2, steps=2, truth=t, progress=False),
             lambda t: super_resolve_mwg(vae, y, 2, num_steps=4, truth=t, progress=False),
             lambda t: super_resolve_mh(vae, y, 2, num_steps=4, truth=t, progress=False)]
    if likelihood == "bernoulli":
        calls.append(lambda t: super_resolve_gibbs(lambda x: x.flatten(1).sum(1), y, 2,
                                                   num_sweeps=2, truth=t, progress=False))
    for call in calls:
        assert torch.isfinite(call(truth).log_predictive).all()
        with pytest.raises(ValueError,
                           match=r"truth does not average-pool to y .*images \[0, 1, 2\]"):
            call(shuffled)


@pytest.mark.parametrize("entry", ["elbo", "iwae_bound", "fit", "SVIStep", "kl_per_dimension"])
def test_a_models_own_input_refusal_comes_without_pyros_empty_shapes_table(entry):
    import inference
    from ppl_models import VAE

    vae = VAE(image_shape=(1, 8, 8), latent_dim=2)
    calls = {
        "elbo": lambda b: inference.elbo(vae.model, vae.guide, b, num_samples=2,
                                         progress=False),
        "iwae_bound": lambda b: inference.iwae_bound(vae.model, vae.guide, b, num_samples=2,
                                                     progress=False),
        "fit": lambda b: inference.fit(vae.model, vae.guide, b, epochs=1, progress=False),
        "SVIStep": lambda b: inference.SVIStep(vae.model, vae.guide).step(b),
        "kl_per_dimension": lambda b: inference.kl_per_dimension(vae.model, vae.guide, b)}
    images = torch.bernoulli(torch.full((5, 1, 8, 8), 0.5))
    for bad, hint in ((images[0], r"one datapoint without its batch dim; pass x.unsqueeze\(0\)"),
                      (images[0, 0], r"pass x.reshape\(1, 1, 8, 8\)"),
                      (images.reshape(5, 64), r"flattened datapoints; pass "
                                              r"x.reshape\(-1, 1, 8, 8\)"),
                      (images * 255, r"binary pixels")):
        with pytest.raises(ValueError, match=hint) as caught:
            calls[entry](bad)
        assert "Trace Shapes" not in str(caught.value)


def test_a_count_given_positionally_to_a_pair_with_a_defaulted_setting_is_warned_about():
    import inference

    def model(x, scale=0.5):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, scale), obs=x)

    def guide(x, scale=0.5):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x * 0.8, math.sqrt(0.2)))

    x = torch.tensor([0.3, -1.0, 2.5])
    for call, meant in (
            (lambda: inference.elbo(model, guide, x, 1000, progress=False), "num_samples=1000"),
            (lambda: inference.weight_diagnostics(model, guide, x, 100, progress=False),
             "num_samples=100"),
            (lambda: inference.expected_log_likelihood(model, guide, x, 10), "num_samples=10")):
        with pytest.warns(UserWarning, match=rf"argument 1 \(\d+\) is passed to the model's "
                                             rf"parameter 'scale' .*did you mean {meant}\?"):
            call()
    # a list of counts reaches the model: named, with the warning
    with pytest.warns(UserWarning, match=r"num_samples=\[1, 10\]"), \
            pytest.raises(PairError, match=r"neither a number nor a tensor .*argument 1 \(list\)"):
        inference.bound_sweep(model, guide, x, [1, 10], progress=False)
    # by keyword, or a tensor or float setting: no warning, and the setting is used
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inference.elbo(model, guide, x, scale=2.0, num_samples=4, progress=False)
        inference.elbo(model, guide, x, 2.0, num_samples=4, progress=False)
        inference.elbo(model, guide, x, torch.tensor(2.0), num_samples=4, progress=False)


def test_weight_diagnostics_summary_counts_infinite_k_hats_and_is_strict_json():
    import json

    from inference import WeightDiagnostics

    inf = math.inf
    result = WeightDiagnostics(pareto_k=torch.tensor([inf] * 7 + [-1.57, -1.83, -1.56]),
                               ess=torch.tensor([0.0] * 7 + [1445.5, 1435.1, 1337.5]),
                               iwae=torch.tensor([-inf] * 7 + [-3.0, -3.1, -2.9]),
                               num_samples=2000, subsample=None)
    summary = result.to_dict()
    # 7 of 10 unreliable: the median and the largest k-hat are +inf (None in JSON), not the
    # finite -1.57 of the other three (before: -1.57 and -1.56 beside "unreliable: 7")
    assert summary["unreliable"] == 7
    assert summary["pareto_k_q50"] is None and summary["pareto_k_q100"] is None
    assert summary["iwae_mean"] is None
    json.dumps(summary, allow_nan=False)
    good = WeightDiagnostics(pareto_k=torch.tensor([0.1, 0.2, 0.3]), ess=torch.ones(3),
                             iwae=torch.zeros(3), num_samples=10, subsample=None).to_dict()
    assert good["pareto_k_q50"] == pytest.approx(0.2) and good["pareto_k_q100"] == \
        pytest.approx(0.3)


def test_exact_evidence_of_a_posterior_beyond_the_grid_says_to_move_the_grid():
    from inference import exact_log_evidence

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    # x = 1000: the posterior sits at z = 800 (sd 0.45), far outside the default (-10, 10);
    # it was told to "raise num_points or narrow bounds", which cannot help
    with pytest.raises(ValueError, match=r"high end.*cuts the posterior off.*center the bounds"):
        exact_log_evidence(model, torch.tensor([0.5, 1000.0]), progress=False)
    centred = exact_log_evidence(model, torch.tensor([1000.0]), bounds=(780.0, 820.0),
                                 progress=False).log_evidence
    exact = torch.distributions.Normal(0.0, math.sqrt(1.25)).log_prob(torch.tensor(1000.0))
    assert torch.allclose(centred, exact, rtol=1e-5), (centred, exact)


def test_fit_under_minibatches_refuses_global_terms_and_the_remedy_trains_to_the_map():
    """An observed site or pyro.factor outside the data plate is refused under minibatches
    (whether it reads the batch's rows, latents or length cannot be told apart: a probe
    found each slipping past a comparison of two batches), and the message no longer
    advises moving it into the plate (counted once per datapoint there); its remedy for a
    log prior on a parameter, a latent with a point-mass guide, trains to the MAP of
    x_i ~ N(mu, 1) with log prior -lam mu^2 / 2: sum(x) / (N + lam)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(210, generator=generator, dtype=torch.float64) + 1.0
    lam = 30.0

    def ridge_model(x):
        mu = pyro.param("mu", torch.tensor(0.0, dtype=torch.float64))
        pyro.factor("ridge", -0.5 * lam * mu ** 2)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def no_guide(x):
        pass

    pyro.clear_param_store()
    with pytest.raises(PairError, match=r"'ridge' lies outside .*cannot tell whether it "
                                        r"depends on the minibatch.*point-mass guide"):
        fit(ridge_model, no_guide, x, epochs=1, batch_size=50, progress=False)

    def prior_model(x):
        mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=torch.float64),
                                           1.0 / math.sqrt(lam)))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def point_mass(x):
        pyro.sample("mu", dist.Delta(pyro.param("mu_map", torch.tensor(0.0,
                                                                       dtype=torch.float64))))

    pyro.clear_param_store()
    fit(prior_model, point_mass, x, epochs=100, batch_size=50, lr=0.01, seed=0, progress=False)
    # Adam's steps on minibatch gradients jitter by about lr; the wrong optima are 0.12 away
    # (the prior left out: mean(x) = 0.97) and 0.82 away (counted N times: 0.03)
    mu = float(pyro.param("mu_map").detach())
    assert abs(mu - float(x.sum() / (len(x) + lam))) < 0.03, mu

def test_meanfield_and_free_bits_do_not_take_torchs_generic_wishart_kl():
    """A per-datapoint Wishart precision, x ~ MVN(0, precision=Lam); the exact posterior
    guide Wishart(nu + 1, (V^-1 + x x^T)^-1) makes log p(x, z) - log q(z) = log p(x) at every
    draw, so the loss of every objective is -sum log p(x) (multivariate t) exactly. torch has
    no Wishart KL but its generic exponential-family one, which sums the degrees-of-freedom
    term over the batch (12.8 nats for a KL of 3.7) and fails without gradients."""
    from inference import FreeBitsELBO
    from inference.densities import closed_form_kl

    d, nu = 2, torch.tensor(4.0, dtype=torch.float64)
    v = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    x = torch.tensor([[0.5, 0.4], [1.2, -1.0], [-0.3, 0.8], [2.0, 1.0]], dtype=torch.float64)
    df = nu - d + 1
    exact = dist.MultivariateStudentT(df, torch.zeros(d, dtype=torch.float64),
                                      torch.linalg.cholesky(torch.linalg.inv(v) / df)).log_prob(x)
    posterior_cov = torch.linalg.inv(torch.linalg.inv(v) + x[:, :, None] * x[:, None, :])

    def model(x):
        with pyro.plate("data", x.shape[0]):
            lam = pyro.sample("Lam", dist.Wishart(nu, covariance_matrix=v))
            pyro.sample("x", dist.MultivariateNormal(torch.zeros(d, dtype=torch.float64),
                                                     precision_matrix=lam), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("Lam", dist.Wishart(nu + 1, covariance_matrix=posterior_cov))

    with pytest.raises(NotImplementedError):
        closed_form_kl(dist.Wishart(nu + 1, covariance_matrix=posterior_cov),
                       dist.Wishart(nu, covariance_matrix=v))
    for loss in ("meanfield", FreeBitsELBO(0.0)):
        pyro.clear_param_store()
        step = SVIStep(model, guide, Adam(0.0), loss=loss)
        for value in (step.step(x), step.evaluate_loss(x)):
            assert value == pytest.approx(-float(exact.sum()), abs=1e-6), (loss, value)


def test_mean_based_estimates_do_not_overflow_on_finite_float32_log_weights():
    from inference import bound_sweep, elbo, expected_log_likelihood, iwae_bound

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(x):  # the exact posterior: every log weight is log p(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.8 * x, math.sqrt(0.2)))

    x = torch.tensor([0.3, 1e19])  # log p(x) = -4e37: K = 10 of them sum past float32's range
    exact = torch.distributions.Normal(0.0, math.sqrt(1.25)).log_prob(x.double())
    estimate = elbo(model, guide, x, num_samples=10, progress=False)
    assert torch.isfinite(estimate).all()
    assert torch.allclose(estimate.double(), exact, rtol=1e-5), (estimate, exact)
    assert torch.allclose(estimate, iwae_bound(model, guide, x, num_samples=10,
                                               progress=False), rtol=1e-5)
    assert math.isfinite(bound_sweep(model, guide, x, num_samples=[1, 10], repeats=2,
                                     progress=False).rows[0]["mean"])
    # E_q log p(x | z) = -(x - 0.8 x)^2 / (2 0.25) - ... ~ -8e36 for x = 1e19: 100 draws
    assert torch.isfinite(expected_log_likelihood(model, guide, x, num_samples=100)).all()


def test_a_diverged_decoder_is_named_by_the_uses_kl_per_dimension_and_sample_images():
    from inference import kl_per_dimension
    from inference.uses.completion import map_complete, observed_channel
    from inference.uses.super_resolution import super_resolve_map
    from ppl_models import VAE

    torch.manual_seed(0)
    vae = VAE(image_shape=(1, 4, 4), latent_dim=2, hidden=(8,))
    with torch.no_grad():
        vae.decoder.net[0].weight[0, 0] = math.nan  # what a diverged fit leaves
    x = torch.bernoulli(torch.full((3, 1, 4, 4), 0.5))
    missing = torch.zeros_like(x, dtype=torch.bool)
    missing[..., 2:, :] = True
    for call in (lambda: map_complete(vae, observed_channel(x, missing), steps=2,
                                      progress=False),
                 lambda: super_resolve_map(vae, x[..., ::2, ::2] * 0 + 0.5, 2, steps=2,
                                           progress=False),
                 lambda: vae.sample_images(2)):
        with pytest.raises(FloatingPointError, match=r"decoder\.net\.0\.weight.*NaN or infinite"):
            call()
    with pytest.raises(PairError, match=r"kl_per_dimension: .*decoder\.net\.0\.weight"):
        kl_per_dimension(vae.model, vae.guide, x)


def _small_vae_run():
    from ppl_models import VAE

    torch.manual_seed(0)
    return VAE(image_shape=(1, 4, 4), latent_dim=2, hidden=(8,)), \
        torch.bernoulli(torch.full((32, 1, 4, 4), 0.5))


def test_a_callback_that_overwrites_the_checkpoint_costs_no_epoch(tmp_path):
    path = tmp_path / "model.pt"
    pyro.clear_param_store()
    vae, x = _small_vae_run()

    def save_model(record):  # "save the model every epoch", to the path the user has in mind
        torch.save(vae.state_dict(), path)

    with pytest.raises(checkpoints.CheckpointError,
                       match=r"after epoch 1 was replaced since by another writer.*epoch 2's "
                             r"state is saved at .*model\.pt\.epoch2"):
        fit(vae.model, vae.guide, x, epochs=4, batch_size=16, checkpoint=path,
            callback=save_model, progress=False)
    pyro.clear_param_store()
    vae2, _ = _small_vae_run()
    history = fit(vae2.model, vae2.guide, x, epochs=4, batch_size=16,
                  checkpoint=tmp_path / "model.pt.epoch2", resume=True, progress=False)
    assert [record["epoch"] for record in history] == [1, 2, 3, 4]


def test_a_folder_named_like_a_writers_leftover_is_left_alone(tmp_path):
    (tmp_path / "c.pt.12345678.deadbeef.partial").mkdir()
    pyro.clear_param_store()
    vae, x = _small_vae_run()
    fit(vae.model, vae.guide, x, epochs=1, batch_size=16, checkpoint=tmp_path / "c.pt",
        progress=False)
    assert (tmp_path / "c.pt.12345678.deadbeef.partial").is_dir()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads and enters any file or folder")
def test_unreadable_checkpoints_and_folders_are_refused_before_training(tmp_path):
    pyro.clear_param_store()
    vae, x = _small_vae_run()
    path = tmp_path / "run.pt"
    fit(vae.model, vae.guide, x, epochs=1, batch_size=16, checkpoint=path, progress=False)
    path.chmod(0)
    closed = tmp_path / "closed"
    closed.mkdir()
    closed.chmod(0)
    try:
        with pytest.raises(checkpoints.CheckpointError, match="cannot read it .*chmod u\\+rw"):
            fit(vae.model, vae.guide, x, epochs=1, batch_size=16, checkpoint=path,
                progress=False)
        with pytest.raises(checkpoints.CheckpointError, match="cannot reach the checkpoint"):
            fit(vae.model, vae.guide, x, epochs=1, batch_size=16,
                checkpoint=closed / "c.pt", progress=False)
    finally:
        path.chmod(0o600)
        closed.chmod(0o700)


def test_every_examples_help_names_its_flags_defaults():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    shown = subprocess.run([sys.executable, str(root / "examples" / "vae.py"), "--help"],
                           capture_output=True, text=True, check=True,
                           env={**os.environ, "COLUMNS": "200"}).stdout
    for line in ("--epochs EPOCHS", "--lr LR", "--batch-size BATCH_SIZE", "--max-k MAX_K",
                 "--latent-dim LATENT_DIM", "--out-dir OUT_DIR"):
        entry = shown.split(f"  {line}", 1)[1].split("\n  -", 1)[0]  # its help, wrapped
        assert "(default: " in entry, (line, entry)
    assert "(default: None)" not in shown and "(default: False)" not in shown


def test_save_checkpoint_does_not_replace_the_checkpoint_a_running_fit_holds(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "run.pt"
    checkpoints.save_checkpoint(path, {"epoch": 1})
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from inference.training.checkpoints import CheckpointLock\n"
         f"lock = CheckpointLock({str(path)!r}); lock.acquire(); print('held', flush=True)\n"
         "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=str(Path(__file__).resolve().parents[2]))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(checkpoints.CheckpointError,
                           match=rf"a running fit \(pid {holder.pid}\) holds it"):
            checkpoints.save_checkpoint(path, {"epoch": 99})
        assert checkpoints.load_checkpoint(path)["epoch"] == 1
    finally:
        holder.communicate("")
    checkpoints.save_checkpoint(path, {"epoch": 2})  # the lock is free again
    assert checkpoints.load_checkpoint(path)["epoch"] == 2


def test_probe_of_the_sessions_own_changes():
    """Holes a probe found in this session's changes: a count the model requires is not
    warned about; a TransformedDistribution of a Wishart does not reach torch's generic KL;
    a truth pooled in float32 and cast to float64 is taken."""
    from inference import elbo
    from inference.densities import closed_form_kl
    from inference.uses.super_resolution import _check_truth_pools_to_y, average_pool

    def model(x, steps):  # an int setting the model requires
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z * steps / steps, 1.0), obs=x)

    def guide(x, steps=3):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        elbo(model, guide, torch.tensor([0.1, 0.2]), 5, num_samples=2, progress=False)

    v = torch.eye(2, dtype=torch.float64)
    shift = torch.distributions.transforms.AffineTransform(0.0, 2.0)
    q = torch.distributions.TransformedDistribution(
        dist.Wishart(torch.tensor([5.0, 6.0], dtype=torch.float64), covariance_matrix=v), shift)
    p = torch.distributions.TransformedDistribution(
        dist.Wishart(torch.tensor(4.0, dtype=torch.float64), covariance_matrix=v), shift)
    with pytest.raises(NotImplementedError):
        closed_form_kl(q, p)

    truth = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    _check_truth_pools_to_y(truth.double(), average_pool(truth, 2).double(), 2)
