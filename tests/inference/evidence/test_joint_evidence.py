"""joint_log_evidence: log p(x_1..N) of pairs with global latents, against closed forms.

Tolerances: an estimate with a guide that is not the posterior must lie within 4 of its
stated standard errors of the closed form (and within a few hundredths of a nat); with the
exact posterior as guide every weight is log p(x) up to float rounding. Seeds are fixed, so
each assertion is one draw that could fail.
"""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoDelta, AutoMultivariateNormal, AutoNormal
from pyro.ops.indexing import Vindex
from torch.distributions import constraints

from inference import JointEvidence, PairError, iwae_bound, joint_log_evidence, survey_pair

COIN = torch.tensor([1., 1., 1., 0., 1., 0., 1., 1., 0., 1.])
A0, B0 = 10.0, 10.0


def coin_model(data):
    f = pyro.sample("latent_fairness", dist.Beta(A0, B0))
    for i in pyro.plate("data_loop", len(data)):  # sequential plate: no plate dim
        pyro.sample(f"obs_{i}", dist.Bernoulli(f), obs=data[i])


def coin_guide(data):
    a = pyro.param("alpha_q", torch.tensor(15.0), constraint=constraints.positive)
    b = pyro.param("beta_q", torch.tensor(15.0), constraint=constraints.positive)
    pyro.sample("latent_fairness", dist.Beta(a, b))


def wide_coin_guide(data):
    pyro.sample("latent_fairness", dist.Beta(4.0, 4.0))


def exact_coin_guide(data):
    heads = float(data.sum())
    pyro.sample("latent_fairness", dist.Beta(A0 + heads, B0 + len(data) - heads))


def log_beta(a, b):
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def coin_log_evidence(data):
    heads, n = float(data.sum()), len(data)
    return log_beta(A0 + heads, B0 + n - heads) - log_beta(A0, B0)


def test_coin_sequential_plate_matches_lgamma_closed_form():
    exact = coin_log_evidence(COIN)
    result = joint_log_evidence(coin_model, coin_guide, COIN, num_samples=5000)
    assert isinstance(result, JointEvidence)
    assert result.log_evidence.shape == result.elbo.shape == result.standard_error.shape == ()
    assert result.ess.shape == result.pareto_k.shape == ()
    assert result.log_weights.shape == (5000,) and result.num_samples == 5000
    diff = float(result.log_evidence) - exact
    se = float(result.standard_error)
    assert 0 < se < 0.02, se
    assert abs(diff) < 4 * se and abs(diff) < 0.05, (diff, se)
    assert float(result.elbo) < float(result.log_evidence)
    assert 1000 < float(result.ess) <= 5000 and float(result.pareto_k) < 0.5


def test_coin_exact_posterior_guide_gives_log_evidence_in_every_weight():
    exact = coin_log_evidence(COIN)
    result = joint_log_evidence(coin_model, exact_coin_guide, COIN, num_samples=200)
    assert float((result.log_weights - exact).abs().max()) < 1e-4  # float32 densities
    assert float(result.standard_error) < 1e-5
    assert abs(float(result.elbo) - exact) < 1e-4
    assert float(result.ess) == pytest.approx(200, rel=1e-4)


def blr_problem(n=20, d=3, prior_scale=1.5, noise=0.7, seed=3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    w = prior_scale * torch.randn(d, generator=gen, dtype=torch.float64)
    y = x @ w + noise * torch.randn(n, generator=gen, dtype=torch.float64)
    return x, y, prior_scale, noise


def blr_model(x, y, prior_scale, noise):
    d = x.shape[1]
    w = pyro.sample("w", dist.Normal(x.new_zeros(d), prior_scale).to_event(1))
    with pyro.plate("data", x.shape[0]):
        # w: [d], or [particles, 1, d] in the particle plate left of the data's: x * w
        # broadcasts either way
        pyro.sample("y", dist.Normal((x * w).sum(-1), noise), obs=y)


def blr_posterior(x, y, prior_scale, noise):
    precision = x.T @ x / noise ** 2 + torch.eye(x.shape[1], dtype=x.dtype) / prior_scale ** 2
    cov = torch.linalg.inv(precision)
    return cov @ x.T @ y / noise ** 2, cov


def blr_log_evidence(x, y, prior_scale, noise):
    cov = prior_scale ** 2 * x @ x.T + noise ** 2 * torch.eye(x.shape[0], dtype=x.dtype)
    return float(dist.MultivariateNormal(x.new_zeros(x.shape[0]), cov).log_prob(y))


def test_bayesian_linear_regression_matches_gaussian_marginal_float64():
    x, y, prior_scale, noise = blr_problem()
    exact = blr_log_evidence(x, y, prior_scale, noise)
    mean, cov = blr_posterior(x, y, prior_scale, noise)

    def diagonal_guide(x, y, prior_scale, noise):  # wider than the posterior, no correlations
        pyro.sample("w", dist.Normal(mean, 1.5 * cov.diagonal().sqrt()).to_event(1))

    def exact_guide(x, y, prior_scale, noise):
        pyro.sample("w", dist.MultivariateNormal(mean, cov))

    assert survey_pair(blr_model, diagonal_guide, (x, y, prior_scale, noise)).vectorizable
    result = joint_log_evidence(blr_model, diagonal_guide, x, y, prior_scale, noise,
                                num_samples=4000, chunk_size=500)
    assert result.log_evidence.dtype == torch.float64
    diff, se = float(result.log_evidence) - exact, float(result.standard_error)
    assert abs(diff) < 4 * se and abs(diff) < 0.05, (diff, se)
    exact_run = joint_log_evidence(blr_model, exact_guide, x, y, prior_scale, noise,
                                   num_samples=100)
    assert float((exact_run.log_weights - exact).abs().max()) < 1e-9
    assert float(exact_run.standard_error) < 1e-9


@pytest.mark.parametrize("autoguide", [AutoNormal, AutoMultivariateNormal])
def test_trained_autoguides_estimate_the_regression_evidence(autoguide):
    # AutoMultivariateNormal draws one joint vector (an auxiliary site outside every plate)
    # that its Delta sites transform: the per-datapoint estimators refuse it, this takes it
    x, y, prior_scale, noise = blr_problem()
    exact = blr_log_evidence(x, y, prior_scale, noise)
    guide = autoguide(blr_model)
    svi = SVI(blr_model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(400):
        svi.step(x, y, prior_scale, noise)
    result = joint_log_evidence(blr_model, guide, x, y, prior_scale, noise, num_samples=3000)
    diff, se = float(result.log_evidence) - exact, float(result.standard_error)
    assert abs(diff) < 4 * se and abs(diff) < 0.1, (diff, se)
    assert float(result.elbo) < float(result.log_evidence) and float(result.pareto_k) < 0.7


def test_fully_observed_pair_gives_its_log_likelihood_in_every_weight():
    def observed_model(data):
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Bernoulli(0.6), obs=data)

    result = joint_log_evidence(observed_model, lambda data: None, COIN, num_samples=5)
    exact = float(dist.Bernoulli(0.6).log_prob(COIN).sum())
    assert float((result.log_weights - exact).abs().max()) < 1e-5
    assert float(result.standard_error) == 0.0 and float(result.ess) == 5.0
    assert math.isnan(float(result.pareto_k))  # K < 21: no tail to fit


def test_one_weight_has_no_standard_error_and_no_warning():
    # torch's "degrees of freedom is <= 0" warning leaked from the standard error of K = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = joint_log_evidence(coin_model, coin_guide, COIN, num_samples=1,
                                    progress=False)
    assert math.isnan(float(result.standard_error)) and float(result.ess) == 1.0


def test_per_datapoint_estimators_point_to_joint_log_evidence():
    x, y, prior_scale, noise = blr_problem()
    with pytest.raises(PairError, match="joint_log_evidence"):
        iwae_bound(blr_model, lambda *a: pyro.sample("w", dist.Normal(
            torch.zeros(3, dtype=torch.float64), 1.).to_event(1)), x, y, prior_scale, noise,
            num_samples=10)


TAU, S, SIGMA = 2.0, 0.8, 0.5  # global mean's prior scale, locals' spread, noise


def hierarchical_model(x):
    mu = pyro.sample("mu", dist.Normal(0.0, TAU))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(mu, S))
        pyro.sample("x", dist.Normal(z, SIGMA), obs=x)


def hierarchical_guide(widen):
    """The exact posterior q(mu) q(z_i | mu, x_i), its scales times ``widen``."""
    def guide(x):
        prec_mu = 1 / TAU ** 2 + len(x) / (S ** 2 + SIGMA ** 2)
        loc_mu = float(x.sum()) / (S ** 2 + SIGMA ** 2) / prec_mu
        mu = pyro.sample("mu", dist.Normal(loc_mu, widen * prec_mu ** -0.5))
        prec_z = 1 / S ** 2 + 1 / SIGMA ** 2
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal((mu / S ** 2 + x / SIGMA ** 2) / prec_z,
                                         widen * prec_z ** -0.5))
    return guide


def hierarchical_log_evidence(x):
    n = len(x)
    cov = TAU ** 2 * torch.ones(n, n, dtype=torch.float64) + (S ** 2 + SIGMA ** 2) * torch.eye(
        n, dtype=torch.float64)
    return float(dist.MultivariateNormal(torch.zeros(n, dtype=torch.float64), cov).log_prob(
        x.double()))


def test_hierarchical_global_mean_and_locals_match_gaussian_marginal():
    x = 1.3 + torch.tensor([0.4, -0.9, 1.1, 0.2, -0.3, 0.8, -1.4, 0.5])
    exact = hierarchical_log_evidence(x)
    exact_run = joint_log_evidence(hierarchical_model, hierarchical_guide(1.0), x,
                                   num_samples=300, chunk_size=64)
    assert float((exact_run.log_weights - exact).abs().max()) < 2e-4  # float32
    result = joint_log_evidence(hierarchical_model, hierarchical_guide(1.15), x,
                                num_samples=5000)
    diff, se = float(result.log_evidence) - exact, float(result.standard_error)
    assert abs(diff) < 4 * se + 1e-4 and abs(diff) < 0.05, (diff, se)
    assert float(result.pareto_k) < 0.7


def test_elbo_below_iwae_below_exact_in_expectation_and_iwae_tightens_with_k():
    # 100 seeds of the wide Beta(4, 4) guide: the mean ELBO (1.04 nats short), IWAE_5 (0.07)
    # and IWAE_500 (within 0.004) rise in that order towards log p(x), each gap beyond 4
    # standard errors of the means. IWAE_5 has a spread of 0.45 nats, so its mean over the
    # 100 calls of K = 5 is checked against IWAE_5 of the 10000 disjoint groups of 5 of the
    # K = 500 runs' weights, whose mean has a standard error of 0.005
    exact = coin_log_evidence(COIN)
    runs = {5: [], 500: []}
    for seed in range(100):
        for k in runs:
            pyro.set_rng_seed(1000 + seed)
            runs[k].append(joint_log_evidence(coin_model, wide_coin_guide, COIN,
                                              num_samples=k))
    elbo = torch.stack([r.elbo for r in runs[500]])
    iwae5 = torch.stack([r.log_evidence for r in runs[5]])
    iwae500 = torch.stack([r.log_evidence for r in runs[500]])
    groups = torch.logsumexp(torch.stack([r.log_weights for r in runs[500]]).reshape(-1, 5),
                             1) - math.log(5)

    def se(values):
        return float(values.std() / math.sqrt(len(values)))

    assert abs(float(iwae5.mean() - groups.mean())) < 4 * math.hypot(se(iwae5), se(groups))
    assert float(groups.mean() - elbo.mean()) > 4 * math.hypot(se(groups), se(elbo))
    assert float(iwae500.mean() - groups.mean()) > 4 * math.hypot(se(groups), se(iwae500))
    assert exact - float(groups.mean()) > 4 * se(groups)
    # IWAE_500's bias (about 1/(2K) of the weights' relative variance) is below its noise
    assert abs(exact - float(iwae500.mean())) < 4 * se(iwae500) + 2e-3
    assert exact - float(iwae500.mean()) < (exact - float(groups.mean())) / 20


def test_standard_error_matches_spread_over_seeds():
    # the delta-method standard error of one run against the standard deviation of the
    # estimates over 30 seeds: their ratio within 0.6-1.6
    estimates, stated = [], []
    for seed in range(30):
        pyro.set_rng_seed(2000 + seed)
        result = joint_log_evidence(coin_model, wide_coin_guide, COIN, num_samples=400)
        estimates.append(float(result.log_evidence))
        stated.append(float(result.standard_error))
    spread = float(torch.tensor(estimates, dtype=torch.float64).std())
    ratio = (sum(stated) / len(stated)) / spread
    assert 0.6 < ratio < 1.6, (ratio, spread)


def test_chunking_gives_identical_weights_for_one_seed():
    chunked, whole = [], []
    for chunk_size, out in ((7, chunked), (None, whole)):
        pyro.set_rng_seed(5)
        out.append(joint_log_evidence(hierarchical_model, hierarchical_guide(1.2),
                                      torch.tensor([0.3, -0.2, 1.0]), num_samples=50,
                                      chunk_size=chunk_size))
    # Normal draws of chunks of 7 consume torch's generator as one draw of 50 does not
    # (vectorized Box-Muller in blocks of 16): equal in distribution, not identical, so
    # compare the estimates within their standard errors and the exact guide's exactly
    a, b = chunked[0], whole[0]
    gap = abs(float(a.log_evidence - b.log_evidence))
    assert gap < 4 * math.hypot(float(a.standard_error), float(b.standard_error)), gap
    for chunk_size in (7, None):
        pyro.set_rng_seed(5)
        exact_run = joint_log_evidence(coin_model, exact_coin_guide, COIN, num_samples=30,
                                       chunk_size=chunk_size)
        assert float((exact_run.log_weights - coin_log_evidence(COIN)).abs().max()) < 1e-4
    # the Beta guide's gamma draws take the generator one value at a time: identical
    coin = []
    for chunk_size in (7, None):
        pyro.set_rng_seed(5)
        coin.append(joint_log_evidence(coin_model, coin_guide, COIN, num_samples=50,
                                       chunk_size=chunk_size).log_weights)
    assert torch.equal(coin[0], coin[1])


def test_pair_that_does_not_vectorize_runs_one_draw_per_pass():
    def scalar_model(data):
        f = pyro.sample("latent_fairness", dist.Beta(A0, B0))
        p = float(f)  # fails for a batch of particles: one draw per pass
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Bernoulli(torch.tensor(p)), obs=data)

    exact = coin_log_evidence(COIN)
    result = joint_log_evidence(scalar_model, coin_guide, COIN, num_samples=1500,
                                chunk_size=100)
    diff, se = float(result.log_evidence) - exact, float(result.standard_error)
    assert result.log_weights.shape == (1500,)
    assert abs(diff) < 4 * se and abs(diff) < 0.1, (diff, se)


def test_per_datapoint_estimators_point_a_global_latent_pair_to_joint_log_evidence():
    # Pyro's SVI tutorial pair: the per-datapoint estimators refuse it, and say where to go
    with pytest.raises(PairError, match=r"no plate named 'data'.*call joint_log_evidence"):
        iwae_bound(coin_model, coin_guide, COIN, num_samples=3)


def test_a_loop_over_the_data_plate_is_refused_pointing_to_another_name():
    def looped(data):
        f = pyro.sample("latent_fairness", dist.Beta(A0, B0))
        for i in pyro.plate("data", len(data)):
            pyro.sample(f"obs_{i}", dist.Bernoulli(f), obs=data[i])

    with pytest.raises(PairError, match=r"a plate of another name, pyro.plate\('data_loop'"):
        joint_log_evidence(looped, coin_guide, COIN, num_samples=10)


def test_masked_observations_are_left_out_of_the_evidence():
    mask = torch.tensor([True, True, False, True, False, True, True, True, True, False])

    def masked_model(data):
        f = pyro.sample("latent_fairness", dist.Beta(A0, B0))
        with pyro.plate("data", len(data)), poutine.mask(mask=mask):
            pyro.sample("obs", dist.Bernoulli(f.unsqueeze(-1)), obs=data)

    def exact_guide(data):
        exact_coin_guide(data[mask])

    result = joint_log_evidence(masked_model, exact_guide, COIN, num_samples=50)
    assert float((result.log_weights - coin_log_evidence(COIN[mask])).abs().max()) < 1e-4


# --- refusals, each naming the problem -------------------------------------------------


def subsampled_model(data):
    f = pyro.sample("latent_fairness", dist.Beta(A0, B0))
    with pyro.plate("data", len(data), subsample_size=4) as idx:
        pyro.sample("obs", dist.Bernoulli(f.unsqueeze(-1)), obs=data[idx])


def test_refuses_a_subsampled_plate():
    # the plate's declared size (it said "4 of its 4 members")
    with pytest.raises(PairError, match=rf"pyro.plate\('data'\) draws a subsample \(4 of its "
                                        rf"{len(COIN)} members\)"):
        joint_log_evidence(subsampled_model, coin_guide, COIN, num_samples=10)


def test_refuses_a_scaled_site():
    scaled = poutine.scale(coin_model, scale=0.5)
    with pytest.raises(PairError, match=r"site 'latent_fairness' carries scale 0.5"):
        joint_log_evidence(scaled, coin_guide, COIN, num_samples=10)


def test_refuses_a_guide_that_lacks_a_latent():
    x = torch.tensor([0.3, -0.2, 1.0])

    def guide_without_z(x):
        pyro.sample("mu", dist.Normal(0.0, 1.0))

    with pytest.raises(PairError, match=r"'z'.* not sampled by the guide"):
        joint_log_evidence(hierarchical_model, guide_without_z, x, num_samples=10)


def test_refuses_a_guide_with_an_observed_site():
    def observing_guide(data):
        coin_guide(data)
        pyro.sample("extra", dist.Normal(0.0, 1.0), obs=torch.tensor(0.0))

    with pytest.raises(PairError, match=r"guide has observed site\(s\) 'extra'"):
        joint_log_evidence(coin_model, observing_guide, COIN, num_samples=10)


def test_sums_out_a_global_switch_the_model_enumerates():
    """Model selection: a global switch c picks the data's mean; summed out, log p(x) =
    logsumexp_c (log 1/2 + sum_i log N(x_i; mean_c, 1)), exactly, with an empty guide. (It
    was refused until the fourth session of 2026-11-29.)"""
    means = torch.tensor([-1.0, 1.0])

    @pyro.infer.config_enumerate
    def mixture(data):
        c = pyro.sample("c", dist.Categorical(torch.tensor([0.5, 0.5])))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(Vindex(means)[c], 1.0), obs=data)

    exact = torch.logsumexp(math.log(0.5) + dist.Normal(means[:, None], 1.0).log_prob(COIN)
                            .sum(-1), 0)
    result = joint_log_evidence(mixture, lambda data: None, COIN, num_samples=10)
    assert torch.allclose(result.log_weights, exact.expand(10), atol=1e-5)


def test_sums_out_local_assignments_beside_a_drawn_global_mean():
    """The Gaussian-mixture tutorial's shape: a global mean drawn by the guide, each
    datapoint's component summed out. Against 1-D quadrature over the mean."""
    weights, offsets = torch.tensor([0.3, 0.7]), torch.tensor([-2.0, 2.0])
    x = torch.tensor([-2.5, -1.0, 1.5, 2.2, 3.0, 1.8])

    @pyro.infer.config_enumerate
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0., 1.))
        with pyro.plate("data", len(x)):
            a = pyro.sample("a", dist.Categorical(weights))
            pyro.sample("x", dist.Normal(mu + Vindex(offsets)[a], 1.), obs=x)

    def guide(x):
        pyro.sample("mu", dist.Normal(0.2, 0.4))

    grid = torch.linspace(-8, 8, 20001, dtype=torch.float64)
    log_joint = dist.Normal(0., 1.).log_prob(grid) + torch.logsumexp(
        weights.double().log() + dist.Normal(grid[:, None, None] + offsets.double(), 1.)
        .log_prob(x.double()[None, :, None]), -1).sum(-1)
    exact = float(torch.logsumexp(log_joint, 0) + math.log(grid[1] - grid[0]))
    pyro.set_rng_seed(0)
    result = joint_log_evidence(model, guide, x, num_samples=20000)
    assert abs(float(result.log_evidence) - exact) < 4 * float(result.standard_error) + 0.002

    # the same model written so that it does not broadcast over a particle dim (the mean
    # reshaped to a scalar): one draw per pass, the assignments still summed out
    @pyro.infer.config_enumerate
    def scalar_mean_model(x):
        mu = pyro.sample("mu", dist.Normal(0., 1.))
        with pyro.plate("data", len(x)):
            a = pyro.sample("a", dist.Categorical(weights))
            pyro.sample("x", dist.Normal(mu.reshape(()) + Vindex(offsets)[a], 1.), obs=x)

    pyro.set_rng_seed(0)
    result = joint_log_evidence(scalar_mean_model, guide, x, num_samples=1000)
    assert abs(float(result.log_evidence) - exact) < 4 * float(result.standard_error) + 0.002


def test_refuses_a_point_mass_guide_and_a_guide_beyond_the_support():
    with pytest.raises(PairError, match=r"'latent_fairness' is a Delta"):
        joint_log_evidence(coin_model, AutoDelta(coin_model), COIN, num_samples=10)

    def normal_guide(data):
        pyro.sample("latent_fairness", dist.Normal(0.5, 0.1))

    with pytest.raises(PairError, match=r"'latent_fairness' draws from a Normal"):
        joint_log_evidence(coin_model, normal_guide, COIN, num_samples=10)


@pytest.mark.parametrize("num_samples", [0, -3, 2.5, True])
def test_refuses_a_bad_num_samples(num_samples):
    with pytest.raises((ValueError, TypeError), match="num_samples"):
        joint_log_evidence(coin_model, coin_guide, COIN, num_samples=num_samples)


def test_refuses_a_bad_chunk_size_and_a_misspelt_keyword():
    with pytest.raises((ValueError, TypeError), match="chunk_size"):
        joint_log_evidence(coin_model, coin_guide, COIN, num_samples=10, chunk_size=0)
    with pytest.raises(TypeError, match="num_sample"):
        joint_log_evidence(coin_model, coin_guide, COIN, num_sample=10)


def test_refuses_nan_empty_and_half_precision_data():
    bad = COIN.clone()
    bad[3] = math.nan
    with pytest.raises(ValueError, match=r"argument 0 .* NaN"):
        joint_log_evidence(coin_model, coin_guide, bad, num_samples=10)
    with pytest.raises(ValueError, match="argument 0 has no datapoints"):
        joint_log_evidence(coin_model, coin_guide, COIN[:0], num_samples=10)
    with pytest.raises(ValueError, match=r"site 'obs_0' has values of dtype torch.float16"):
        joint_log_evidence(coin_model, coin_guide, COIN.half(), num_samples=10)
