"""Quadrature evidence against closed forms, and the toy manifold against it."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import elbo, exact_log_evidence, iwae_bound
from ppl_models import LinearGaussian, ToyManifold, ToyManifoldVAE


@pytest.mark.parametrize("latent_dim,num_points", [(1, 8001), (2, 401)])
def test_quadrature_matches_closed_form(latent_dim, num_points):
    # The trapezoidal rule on a smooth, fast-decaying integrand: float64 results agree with
    # the closed form to far better than the 1e-3 nats promised.
    model = LinearGaussian(data_dim=4, latent_dim=latent_dim, noise_scale=0.4, seed=7).double()
    x = model.simulate(6, seed=8).detach()
    result = exact_log_evidence(model.model, x, num_points=num_points)
    exact = model.log_marginal(x).detach()
    assert result.log_evidence.shape == (6,)
    assert float((result.log_evidence - exact).abs().max()) < 1e-6
    # the posterior on the grid is the closed-form posterior density
    closed = model.posterior(x).log_prob(result.grid[:, None, :]).detach()  # [G, 6]
    mass = closed.exp() > 1e-3
    assert float((result.log_posterior - closed)[mass].abs().max()) < 1e-6


def test_true_toy_model_evidence_matches_importance_sampling():
    # Independent check of the quadrature on the nonlinear toy model: prior-proposal IWAE
    # with 200000 particles is within 0.02 nats (its bias here is below 0.005) and below it.
    truth = ToyManifold(noise_scale=0.3)
    x, _ = truth.sample(5, seed=0)
    x = x.double()
    exact = exact_log_evidence(truth.model, x).log_evidence

    def prior_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))

    bound = iwae_bound(truth.model, prior_guide, x, num_samples=200000, chunk_size=50000)
    assert float((exact - bound).abs().max()) < 0.02, (exact, bound)
    assert float((exact - bound).mean()) > -0.005


def test_bounds_ordered_below_exact_on_toy_vae():
    # An untrained VAE's guide is poor, so its weights are heavy-tailed and single IWAE
    # estimates can overshoot by a few hundredths; on average over 20 datapoints with
    # K = 20000 the bound must sit at or below the exact value.
    pyro.set_rng_seed(1)
    vae = ToyManifoldVAE(hidden=16).double()
    x, _ = ToyManifold().sample(20, seed=3)
    x = x.double()
    exact = exact_log_evidence(vae.model, x).log_evidence
    lower = elbo(vae.model, vae.guide, x, num_samples=2000)
    upper = iwae_bound(vae.model, vae.guide, x, num_samples=20000, chunk_size=5000)
    assert bool((lower < upper).all())
    assert float((upper - exact).mean()) < 0.01, (upper - exact)
    assert float((lower - exact).mean()) < -0.1


def test_rejects_several_latents_and_coarse_grids():
    model = LinearGaussian(data_dim=3, latent_dim=3)
    x = model.simulate(2).detach()
    with pytest.raises(ValueError, match=r"\[batch, 2\]"):
        exact_log_evidence(model.model, x)
    narrow = LinearGaussian(data_dim=30, latent_dim=1, noise_scale=0.01)
    x = narrow.simulate(2).detach()
    with pytest.raises(ValueError, match="raise num_points"):
        exact_log_evidence(narrow.model, x, num_points=101)
    wide = LinearGaussian(data_dim=2, latent_dim=1, noise_scale=3.0)
    with pytest.raises(ValueError, match="widen bounds"):
        exact_log_evidence(wide.model, wide.simulate(2).detach(), bounds=(-1.0, 1.0))

    def two_latents(x):
        with pyro.plate("data", x.shape[0]):
            a = pyro.sample("a", dist.Normal(0.0, 1.0))
            b = pyro.sample("b", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(a + b, 1.0), obs=x)

    with pytest.raises(ValueError, match="single latent site 'z'"):
        exact_log_evidence(two_latents, torch.zeros(3))


def test_a_guide_passed_as_data_is_named():
    """The estimators take (model, guide, x); the quadrature takes (model, x)."""
    model = LinearGaussian(data_dim=2, latent_dim=1)
    with pytest.raises(TypeError, match="argument 0 is a callable .*pass no guide"):
        exact_log_evidence(model.model, model.guide, model.simulate(2).detach())
