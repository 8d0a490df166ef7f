"""Amortization and approximation gaps against the closed forms of the linear-Gaussian model."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference.evidence.gaps import GapResult, LocalGaussianGuide, amortization_gap, fit_local_guide
from ppl_models.linear_gaussian import LinearGaussian


@pytest.fixture
def linear_gaussian():
    model = LinearGaussian(data_dim=5, latent_dim=2, noise_scale=0.5, seed=3).double()
    return model, model.simulate(8, seed=4)


def mean_field_guide(model, shrink=0.5):
    """A mis-amortized diagonal guide: posterior means shrunk towards 0, unit scales."""

    def guide(x):
        with torch.no_grad():
            mean = model.posterior(x).loc
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(shrink * mean, 1.0).to_event(1))

    return guide


@pytest.mark.slow
def test_full_covariance_local_guides_close_the_gap(linear_gaussian):
    # The amortized guide (untrained linear encoder, shared covariance) is a full-covariance
    # Gaussian, and so is the exact posterior: optimized per datapoint, the local guides reach
    # log p(x), leaving an approximation gap of ~0 (within 0.02 nats: 3 Monte Carlo standard
    # errors of 2000 draws, ~0.003 here, plus what 300 noisy Adam steps leave).
    model, x = linear_gaussian
    exact = model.log_marginal(x).detach()
    result = amortization_gap(model.model, model.guide, x, log_evidence=exact, num_steps=300,
                              lr=0.05, num_eval_samples=2000)
    assert isinstance(result, GapResult)
    for t in (result.elbo_amortized, result.elbo_local, result.amortization_gap,
              result.approximation_gap, result.inference_gap):
        assert t.shape == (8,)
    assert float(result.approximation_gap.abs().max()) < 0.02, result.approximation_gap
    assert bool((result.elbo_local <= exact + 3 * result.elbo_local_stderr).all())
    # the random encoder is far off: the amortization gap is many standard errors above 0
    se = (result.elbo_amortized_stderr**2 + result.elbo_local_stderr**2).sqrt()
    assert bool((result.amortization_gap > 10 * se).all()), (result.amortization_gap, se)
    torch.testing.assert_close(result.inference_gap,
                               result.amortization_gap + result.approximation_gap)
    assert result.history[-1] < result.history[0]
    summary = result.to_dict()
    assert summary["amortization_gap"] == pytest.approx(float(result.amortization_gap.mean()))


def test_diagonal_local_guides_reach_the_mean_field_optimum(linear_gaussian):
    # The best diagonal Gaussian for a Gaussian posterior with precision L has variances
    # 1 / L_ii and KL = (sum_i log L_ii - log det L) / 2 (0.035 nats here; the same for every
    # datapoint, since L does not depend on x). Tolerance 0.03: 3 standard errors of the
    # local ELBO (~0.006) plus the optimizer's residual.
    model, x = linear_gaussian
    exact = model.log_marginal(x).detach()
    precision = torch.linalg.inv(model.posterior(x).covariance_matrix[0]).detach()
    optimum_gap = 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision))
    result = amortization_gap(model.model, mean_field_guide(model), x, log_evidence=exact,
                              num_steps=300, lr=0.05, num_eval_samples=2000)
    assert float((result.approximation_gap - optimum_gap).abs().max()) < 0.03, (
        result.approximation_gap, optimum_gap)
    se = (result.elbo_amortized_stderr**2 + result.elbo_local_stderr**2).sqrt()
    assert bool((result.amortization_gap > -3 * se).all())
    assert float(result.amortization_gap.mean()) > 0.5  # shrunk means, unit scales: far off


def test_a_perfect_guide_has_no_amortization_gap(linear_gaussian):
    # Starting at the exact posterior the local guides can only lose to optimizer noise:
    # every weight of the amortized guide is log p(x), and the local ELBO stays within 0.01.
    model, x = linear_gaussian
    result = amortization_gap(model.model, model.exact_guide, x, num_steps=50, lr=0.01,
                              num_eval_samples=500)
    assert result.approximation_gap is None and result.log_evidence is None
    assert float(result.amortization_gap.abs().max()) < 0.01, result.amortization_gap
    assert result.to_dict()["approximation_gap"] is None


def test_local_guide_starts_at_the_encoder_output(linear_gaussian):
    model, x = linear_gaussian
    local = LocalGaussianGuide(model.guide, x)
    site = local.sites[0]
    assert site.name == "z" and site.family == "mvn" and site.loc.shape == (8, 2)
    torch.testing.assert_close(site.loc.detach(), model.encoder(x).detach())
    diag = LocalGaussianGuide(mean_field_guide(model), x).sites[0]
    assert diag.family == "normal" and diag.event_dim == 1
    torch.testing.assert_close(diag.raw_scale.detach(), torch.zeros(8, 2, dtype=x.dtype))


def test_model_parameters_get_no_gradient(linear_gaussian):
    model, x = linear_gaussian
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    local = LocalGaussianGuide(model.guide, x)
    history = fit_local_guide(model.model, local, x, num_steps=5)
    assert len(history) == 5
    for name, param in model.named_parameters():
        assert param.grad is None, name
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_bad_input(linear_gaussian):
    model, x = linear_gaussian
    with pytest.raises(ValueError, match=r"log_evidence must be a tensor of shape \[batch\]"):
        amortization_gap(model.model, model.guide, x, log_evidence=torch.zeros(3))
    with pytest.raises(ValueError, match="lr must be positive"):
        amortization_gap(model.model, model.guide, x, lr=0.0, num_eval_samples=2)
    with pytest.raises(ValueError, match="num_steps must be a positive integer"):
        fit_local_guide(model.model, LocalGaussianGuide(model.guide, x), x, num_steps=0)

    def lognormal_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.LogNormal(x.new_zeros(2), 1.0).to_event(1))

    with pytest.raises(ValueError, match="supports Normal"):
        LocalGaussianGuide(lognormal_guide, x)

    def global_guide(x):
        pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))

    with pytest.raises(ValueError, match="not inside the 'data' plate"):
        LocalGaussianGuide(global_guide, x)
