"""Amortization and approximation gaps against the closed forms of the linear-Gaussian model."""

import math

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
    with pytest.raises(ValueError, match="lr must be > 0"):
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


# A scalar conjugate model x = A z + B + noise(S), z ~ N(0, 1): p(x) = N(B, sqrt(A^2 + S^2)),
# posterior N(var * A (x - B) / S^2, var) with var = 1 / (1 + A^2 / S^2).
A, B, S, N = 2.0, 0.5, 0.7, 10
X = torch.linspace(-4, 5, N)
POST_VAR = 1 / (1 + A**2 / S**2)


def log_p(x):
    return dist.Normal(B, math.sqrt(A**2 + S**2)).log_prob(x)


def post_mean(x):
    return POST_VAR * A * (x - B) / S**2


def scalar_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(A * z + B, S), obs=x)


def scalar_guide(x, loc_shift=0.0):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(post_mean(x) + loc_shift, math.sqrt(POST_VAR)))


def subsampling_model(X):
    with pyro.plate("data", N, subsample_size=3) as i:
        z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0))
        pyro.sample("x", dist.Normal(A * z + B, S), obs=X[i])


def subsampling_guide(X, exact=True):
    with pyro.plate("data", N, subsample_size=3) as i:
        loc = post_mean(X[i]) if exact else torch.zeros(3)
        pyro.sample("z", dist.Normal(loc, math.sqrt(POST_VAR)))


def test_subsampling_model_reads_log_evidence_at_its_subsample():
    # The exact guide: every weight is log p(x), so with log_evidence read at the call's own
    # subsample both gaps are ~0 (the local guide can only drift by optimizer noise).
    torch.manual_seed(0)
    result = amortization_gap(subsampling_model, subsampling_guide, X, log_evidence=log_p(X),
                              num_steps=20, lr=0.01, num_eval_samples=200)
    assert result.subsample.shape == (3,)
    torch.testing.assert_close(result.log_evidence, log_p(X)[result.subsample])
    assert float(result.inference_gap.abs().max()) < 1e-4, result.inference_gap
    assert float(result.approximation_gap.abs().max()) < 0.01, result.approximation_gap
    # a [B] tensor cannot say which datapoints it belongs to: refused, asking for [N]
    with pytest.raises(ValueError, match=r"shape \[N\] = \[10\].*3 of 10 datapoints"):
        amortization_gap(subsampling_model, subsampling_guide, X, log_evidence=log_p(X[:3]))


def test_non_finite_log_evidence_is_refused_by_index():
    x = torch.tensor([-1.0, 0.3, 2.5])
    bad = log_p(x)
    bad[1] = float("nan")
    bad[2] = float("-inf")
    with pytest.raises(ValueError, match=r"log_evidence holds NaN or infinite values at "
                                         r"indices \[1, 2\]"):
        amortization_gap(scalar_model, scalar_guide, x, log_evidence=bad)


def test_fit_local_guide_replays_the_guides_subsample():
    # The guide starts at loc 0 on its own random subsample; fitted against the model replayed
    # on that subsample, each loc reaches its datapoint's posterior mean (sd 0.33; 300 steps
    # of 16 particles leave < 0.05), not the mean of rows 0..2.
    torch.manual_seed(0)
    local = LocalGaussianGuide(subsampling_guide, X, exact=False)
    assert local.data_size == N and local.subsample.shape == (3,)
    assert not torch.equal(local.subsample, torch.arange(3))
    fit_local_guide(subsampling_model, local, X, num_steps=300, lr=0.05)
    target = post_mean(X[local.subsample])
    assert float((local.sites[0].loc.detach() - target).abs().max()) < 0.05, (
        local.sites[0].loc, target)
    # the fitted scale is the posterior's
    scale = local.sites[0].raw_scale.detach().exp()
    assert float((scale - math.sqrt(POST_VAR)).abs().max()) < 0.05, scale


@pytest.mark.parametrize("lr", [float("inf"), float("nan"), 0.0, -0.1, "0.1", None, True])
def test_lr_is_checked_before_any_work(lr):
    calls = []

    def counting_model(x):
        calls.append(1)
        scalar_model(x)

    x = torch.tensor([-1.0, 0.3, 2.5])
    with pytest.raises(ValueError, match=r"lr must be (a finite number|> 0), got"):
        amortization_gap(counting_model, scalar_guide, x, lr=lr)
    with pytest.raises(ValueError, match=r"lr must be (a finite number|> 0), got"):
        fit_local_guide(counting_model, LocalGaussianGuide(scalar_guide, x), x, lr=lr)
    assert not calls


def test_a_diverging_local_fit_names_its_step():
    # lr=1e4 moves the log scales by ~1e4 in the first step: exp overflows and the second
    # step's loss is not finite. The step is not applied, so the parameters stay finite.
    torch.manual_seed(0)
    x = torch.tensor([-1.0, 0.3, 2.5])
    local = LocalGaussianGuide(scalar_guide, x, loc_shift=1.0)
    with pytest.raises(FloatingPointError, match=r"diverged: .* at step 2 of 3 \(lr=10000"):
        fit_local_guide(scalar_model, local, x, num_steps=3, lr=1e4)
    assert all(bool(torch.isfinite(p).all()) for p in local.parameters())


def test_too_many_samples_for_memory_are_refused():
    x = torch.tensor([-1.0, 0.3, 2.5])
    with pytest.raises(ValueError, match="num_eval_samples=10+ particles .* log weights alone"):
        amortization_gap(scalar_model, scalar_guide, x, num_eval_samples=10**15)
    with pytest.raises(ValueError, match="num_particles=10+ particles .* log weights alone"):
        fit_local_guide(scalar_model, LocalGaussianGuide(scalar_guide, x), x,
                        num_particles=10**15)


def test_empty_batch_is_refused():
    x = torch.zeros(0)
    with pytest.raises(ValueError, match=r"argument 0 has no datapoints"):
        amortization_gap(scalar_model, scalar_guide, x)
    with pytest.raises(ValueError, match=r"argument 0 has no datapoints"):
        LocalGaussianGuide(scalar_guide, x)
    local = LocalGaussianGuide(scalar_guide, torch.ones(2))
    with pytest.raises(ValueError, match=r"argument 0 has no datapoints"):
        fit_local_guide(scalar_model, local, x)


def test_independent_multivariate_normal_sites():
    # z: [batch, 3, 2] standard normal, x_j ~ N(z_j1 + z_j2, 1) for j < 3: each pair z_j has
    # posterior mean x_j / 3 * (1, 1) and covariance I - 11^T / 3, and p(x_j) = N(0, sqrt 3).
    # The guide, MultivariateNormal(0, I).to_event(1), holds the exact posterior, so the
    # local guides close the gap to ~0 (3 standard errors of 1000 draws plus the residual of
    # 300 Adam steps: 0.05 nats).
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 3, 2), 1.0).to_event(2))
            pyro.sample("x", dist.Normal(z.sum(-1), 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(torch.zeros(x.shape[0], 3, 2),
                                                     torch.eye(2)).to_event(1))

    torch.manual_seed(1)
    x = 3 * torch.randn(4, 3)
    site = LocalGaussianGuide(guide, x).sites[0]
    assert site.family == "mvn" and site.event_dim == 2
    assert site.distribution().event_shape == (3, 2)
    exact = dist.Normal(0.0, math.sqrt(3.0)).log_prob(x).sum(-1)
    result = amortization_gap(model, guide, x, log_evidence=exact, num_steps=300, lr=0.05,
                              num_eval_samples=1000)
    assert float(result.approximation_gap.abs().max()) < 0.05, result.approximation_gap
    loc = result.local_guide.sites[0].loc.detach()
    torch.testing.assert_close(loc, (x / 3).unsqueeze(-1).expand(4, 3, 2), atol=0.1, rtol=0)


class _ScoreOnlyNormal(dist.Normal):
    """A Normal whose draws carry no gradient (as a guide without rsample)."""

    has_rsample = False


class _ScoreOnlyLocalGuide:
    """A local guide whose site has no reparameterized sampler."""

    def __init__(self, x):
        self.loc = torch.zeros(x.shape[0], requires_grad=True)

    def parameters(self):
        return [self.loc]

    def __call__(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", _ScoreOnlyNormal(self.loc, 1.0))


def test_fit_local_guide_refuses_a_site_without_rsample():
    # the loss is minus the mean log weight: a draw without rsample passes no gradient to the
    # local parameters, so the fit would silently follow only the guide's entropy term
    x = torch.tensor([-1.0, 0.3, 2.5])
    with pytest.raises(ValueError, match="fit_local_guide: local guide site 'z' has no "
                                         "reparameterized sampler"):
        fit_local_guide(scalar_model, _ScoreOnlyLocalGuide(x), x, num_steps=2)


def test_fit_local_guide_names_a_guide_without_free_parameters():
    x = torch.tensor([-1.0, 0.3, 2.5])
    with pytest.raises(TypeError, match=r"local_guide \(function\) must have parameters\(\)"):
        fit_local_guide(scalar_model, scalar_guide, x, num_steps=2)
    frozen = LocalGaussianGuide(scalar_guide, x)
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(TypeError, match="leaves with requires_grad"):
        fit_local_guide(scalar_model, frozen, x, num_steps=2)
