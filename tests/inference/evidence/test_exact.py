"""Quadrature evidence against closed forms, and the toy manifold against it."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

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


def test_a_two_value_latent_gets_a_grid_of_801_squared_by_default():
    """8001 nodes per dimension (64 million per datapoint) took 39 s and 5 GB for one
    datapoint; 801 per dimension meets the closed form as well."""
    model = LinearGaussian(data_dim=3, latent_dim=2, noise_scale=0.5, seed=1).double()
    x = model.simulate(1, seed=2).detach()
    result = exact_log_evidence(model.model, x, progress=False)
    assert result.grid.shape == (801 ** 2, 2)
    assert float((result.log_evidence - model.log_marginal(x).detach()).abs().max()) < 1e-9


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
    with pytest.raises(ValueError, match="cuts the posterior off there. Widen it, e.g. bounds="):
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
    with pytest.raises(TypeError, match=r"takes the model alone: argument 0 is a callable .*call "
                                        r"exact_log_evidence\(model, x\)"):
        exact_log_evidence(model.model, model.guide, model.simulate(2).detach())


# A conjugate pair with a closed form: z ~ N(0, 1), x | z ~ N(2 z + 0.5, 0.7), so
# x ~ N(0.5, sqrt(4 + 0.49)) and z | x ~ N(2 (x - 0.5) / 4.49, 0.7 / sqrt(4.49)).
SLOPE, OFFSET, NOISE = 2.0, 0.5, 0.7


def conjugate_log_evidence(x):
    return dist.Normal(x.new_tensor(OFFSET), (SLOPE**2 + NOISE**2) ** 0.5).log_prob(x)


def test_a_subsampled_data_plate_scores_one_subsample_in_every_chunk():
    # 2001 nodes in chunks of 300 are seven passes of the model; each used to draw its own
    # subsample, so a column mixed datapoints. Every column must now be the closed form of
    # the datapoint result.subsample names.
    x = torch.linspace(-1.0, 4.0, 6, dtype=torch.float64)

    def model(x):
        with pyro.plate("data", len(x), subsample_size=3) as index:
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("x", dist.Normal(SLOPE * z + OFFSET, NOISE), obs=x[index])

    pyro.set_rng_seed(0)
    result = exact_log_evidence(model, x, num_points=2001, chunk_size=300)
    assert result.subsample.shape == (3,) and len(set(result.subsample.tolist())) == 3
    assert result.log_evidence.shape == (3,)
    torch.testing.assert_close(result.log_evidence, conjugate_log_evidence(x[result.subsample]),
                               atol=1e-8, rtol=0)


def sizeless_plate(x):
    with pyro.plate("data"):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(SLOPE * z + OFFSET, NOISE), obs=x)


def data_plate_at_dim_minus_two(x):  # x [N, 1]
    with pyro.plate("data", x.shape[0], dim=-2):
        z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
        pyro.sample("x", dist.Normal(SLOPE * z + OFFSET, NOISE), obs=x)


def data_plate_over_features(x):  # x [N, 2]: a latent [N, 2], two values per datapoint
    with pyro.plate("data", x.shape[0], dim=-2), pyro.plate("features", 2, dim=-1):
        z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
        pyro.sample("x", dist.Normal(SLOPE * z + OFFSET, NOISE), obs=x)


@pytest.mark.parametrize("model,shape,latent_dim,num_points", [
    (sizeless_plate, (4,), 1, 801),
    (data_plate_at_dim_minus_two, (4, 1), 1, 801),
    (data_plate_over_features, (2, 2), 2, 401),
])
def test_plate_layouts_match_the_closed_form(model, shape, latent_dim, num_points):
    # The layouts iwae_bound takes: a sizeless plate, the data plate at dim -2, and a data plate
    # over a feature plate, whose two latent values per datapoint are integrated on a 2-D grid.
    x = torch.tensor([-1.0, 0.3, 2.5, 4.0], dtype=torch.float64).reshape(shape)
    result = exact_log_evidence(model, x, num_points=num_points, chunk_size=5000)
    assert result.grid.shape == (num_points**latent_dim, latent_dim)
    exact = conjugate_log_evidence(x).reshape(shape[0], -1).sum(-1)
    torch.testing.assert_close(result.log_evidence, exact, atol=1e-8, rtol=0)
    posterior = dist.Normal(SLOPE * (x.reshape(shape[0], -1) - OFFSET) / (SLOPE**2 + NOISE**2),
                            x.new_tensor(NOISE / (SLOPE**2 + NOISE**2) ** 0.5))
    closed = posterior.log_prob(result.grid[:, None, :]).sum(-1)  # [G, N]
    mass = closed.exp() > 1e-3
    assert float((result.log_posterior - closed)[mass].abs().max()) < 1e-6


def test_a_data_plate_inside_a_feature_plate_pairs_each_datapoint_with_its_features():
    # x [2 features, 3 datapoints]: datapoint n is column n, its two latent values z[:, n]
    def model(x):
        with pyro.plate("features", 2, dim=-2), pyro.plate("data", x.shape[1], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("x", dist.Normal(SLOPE * z + OFFSET, NOISE), obs=x)

    x = torch.tensor([[-1.0, 0.3, 2.5], [4.0, 0.0, -2.0]], dtype=torch.float64)
    result = exact_log_evidence(model, x, num_points=401, chunk_size=5000)
    torch.testing.assert_close(result.log_evidence, conjugate_log_evidence(x).sum(0),
                               atol=1e-8, rtol=0)


def test_an_unsubsampled_model_has_no_subsample():
    x = torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert exact_log_evidence(sizeless_plate, x, num_points=801).subsample is None


def beta_bernoulli(y):
    with pyro.plate("data", len(y)):
        p = pyro.sample("p", dist.Beta(y.new_tensor(2.0), 3.0))
        pyro.sample("y", dist.Bernoulli(p), obs=y)


def beta_half_bernoulli(y):
    with pyro.plate("data", len(y)):
        p = pyro.sample("p", dist.Beta(y.new_tensor(0.5), 2.0))
        pyro.sample("y", dist.Bernoulli(p), obs=y)


def gamma_poisson(y):
    with pyro.plate("data", len(y)):
        rate = pyro.sample("rate", dist.Gamma(y.new_tensor(2.0), 1.0))
        pyro.sample("y", dist.Poisson(rate), obs=y)


def uniform_normal(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Uniform(x.new_tensor(-1.0), 2.0))
        pyro.sample("x", dist.Normal(z, 0.5), obs=x)


def uniform_log_evidence(x):
    # p(x) = (Phi((2 - x) / 0.5) - Phi((-1 - x) / 0.5)) / 3
    standard = dist.Normal(x.new_zeros(()), 1.0)
    return ((standard.cdf((2.0 - x) / 0.5) - standard.cdf((-1.0 - x) / 0.5)) / 3).log()


@pytest.mark.parametrize("model,site,support,data,exact,bounds", [
    # Beta(2, 3) prior, Bernoulli likelihood: p(y = 1) = 2/5
    (beta_bernoulli, "p", constraints.unit_interval, [0.0, 1.0],
     lambda y: (0.4 * y + 0.6 * (1 - y)).log(), (-10.0, 10.0)),
    (beta_bernoulli, "p", constraints.unit_interval, [0.0, 1.0],
     lambda y: (0.4 * y + 0.6 * (1 - y)).log(), (0.0, 1.0)),
    # Gamma(2, 1) prior, Poisson likelihood: y ~ NegativeBinomial(2, probs 1/2); 0 is outside
    # the support of Gamma's density
    (gamma_poisson, "rate", constraints.positive, [0.0, 1.0, 3.0],
     lambda y: dist.NegativeBinomial(2.0, probs=0.5).log_prob(y), (-10.0, 40.0)),
    # Beta(0.5, 2) prior, unbounded at 0, but the posterior Beta(1.5, 2) of y = 1 is bounded:
    # p(y = 1) = 0.5 / 2.5
    (beta_half_bernoulli, "p", constraints.unit_interval, [1.0, 1.0],
     lambda y: (0.2 * y).log(), (-10.0, 10.0)),
    # Uniform(-1, 2) prior: the density is positive at both ends of the support
    (uniform_normal, "z", constraints.interval(-1.0, 2.0), [-1.5, 0.0, 2.2],
     uniform_log_evidence, (-10.0, 10.0)),
])
def test_constrained_latents_are_integrated_over_their_support(model, site, support, data,
                                                               exact, bounds):
    # bounds are clipped to the support, whose ends are not truncations; the midpoint rule
    # then converges as the squared spacing h: its error h^2 (f'(b) - f'(a)) / (24 p(x)) is
    # below 1e-6 here but for y = 0 of the Gamma (h = 0.005, f'(0) / p = 4), 4e-6. Validation
    # is on, so a node outside the support would raise inside the distribution.
    y = torch.tensor(data, dtype=torch.float64)
    with pyro.validation_enabled(True):
        result = exact_log_evidence(model, y, site=site, bounds=bounds)
    assert bool(support.check(result.grid).all())
    torch.testing.assert_close(result.log_evidence, exact(y), atol=1e-5, rtol=0)


def test_a_truncated_half_line_still_asks_to_widen_bounds():
    # Gamma(2, 1) clipped to (0, 10): the posterior Gamma(32, 2) of y = 30 (mean 16) lies
    # mostly beyond 10, where the grid truncates it; its end at 0 is the support's
    with pytest.raises(ValueError, match="cuts the posterior off there. Widen it, e.g. bounds="):
        exact_log_evidence(gamma_poisson, torch.tensor([30.0]), site="rate")


def test_unsupported_supports_and_bounds_are_named():
    y = torch.tensor([0.0, 1.0])
    with pytest.raises(ValueError, match=r"bounds \(2.0, 5.0\) miss the support .* site 'p'"):
        exact_log_evidence(beta_bernoulli, y, site="p", bounds=(2.0, 5.0))

    def dirichlet(x):  # two values per datapoint, but on the simplex
        with pyro.plate("data", len(x)):
            w = pyro.sample("w", dist.Dirichlet(torch.ones(2)))
            pyro.sample("x", dist.Normal(w[..., 0], 1.0), obs=x)

    with pytest.raises(ValueError, match=r"site 'w' \(Dirichlet\) has support Simplex\(\)"):
        exact_log_evidence(dirichlet, y, site="w")

    def uniform_around(x):  # a support that moves with the datapoint
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Uniform(x - 1.0, x + 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    with pytest.raises(ValueError, match="site 'z' .* ends differ"):
        exact_log_evidence(uniform_around, y)


def _beta_binomial(a: float, b: float, trials: int = 1):
    def model(y):
        with pyro.plate("data", len(y)):
            p = pyro.sample("p", dist.Beta(y.new_tensor(a), b))
            pyro.sample("y", dist.Binomial(trials, p), obs=y)

    return model


def _beta_binomial_log_evidence(y, a: float, b: float, trials: int):
    """log p(y) = log C(n, y) + log B(a + y, b + n - y) - log B(a, b)."""
    def log_beta(p, q):
        return torch.lgamma(p) + torch.lgamma(q) - torch.lgamma(p + q)

    a, b, n = (torch.tensor(v, dtype=torch.float64) for v in (a, b, trials))
    choose = torch.lgamma(n + 1) - torch.lgamma(y + 1) - torch.lgamma(n - y + 1)
    return choose + log_beta(a + y, b + n - y) - log_beta(a, b)


@pytest.mark.parametrize("a", [0.4, 0.5, 1.05, 1.5])
def test_a_density_not_smooth_at_the_support_end_is_integrated_accurately(a):
    # Beta(a, 2) prior, 300 Bernoulli trials: the posteriors of y = 0 and y = 300 are
    # Beta(a, 302) and Beta(a + 300, 2), within 1/300 of an end and like p^(a - 1) at 0
    # (unbounded for a < 1, a kink for 1 < a < 2). Evenly spaced midpoint nodes converged as
    # h^a there: 5e-4 nats off for y = 0 at a = 1.05 on the default grid, and a < 1 was
    # refused. The cubic clustering of _quadrature_rule makes it h^2 for a >= 2/3, h^(3a)
    # below.
    y = torch.tensor([0.0, 3.0, 150.0, 300.0], dtype=torch.float64)
    result = exact_log_evidence(_beta_binomial(a, 2.0, 300), y, site="p")
    exact = _beta_binomial_log_evidence(y, a, 2.0, 300)
    # h^(3a) at a = 0.4: 3e-5 nats here
    tolerance = 1e-5 if a >= 2 / 3 else 1e-4
    torch.testing.assert_close(result.log_evidence, exact, atol=tolerance, rtol=0)


def test_a_density_that_grows_too_fast_at_the_support_end_is_refused():
    # Beta(0.2, 0.2): the posterior of y = 0, Beta(0.2, 1.2), grows like p^(-0.8) at 0
    with pytest.raises(ValueError, match="end of the support of site 'p'.*without bound"):
        exact_log_evidence(_beta_binomial(0.2, 0.2), torch.tensor([0.0, 1.0]), site="p")


def test_models_that_do_not_fit_the_grid_are_named():
    def global_scale(x):
        s = pyro.sample("s", dist.HalfNormal(1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(0.0, s), obs=x)

    with pytest.raises(ValueError, match="site 's' lies outside pyro.plate\\('data'\\)"):
        exact_log_evidence(global_scale, torch.zeros(3), site="s")

    def flattens(x):  # z.reshape(-1) breaks with grid nodes in a leading dim
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z.reshape(-1), 1.0), obs=x)

    with pytest.raises(ValueError, match="leftmost pyro.plate, and the model fails there"):
        exact_log_evidence(flattens, torch.zeros(3))


def test_a_grid_finer_than_the_latents_dtype_is_refused():
    # z ~ N(1e7, 0.1) in float32 on bounds 1e7 +- 1: 3 of 8001 nodes were distinct, and the
    # sum came out 2.77 against the closed form 1.04, silently
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.full((len(x),), 1e7), 0.1))
            pyro.sample("x", dist.Normal(z, 0.1), obs=x)

    x = torch.full((2,), 1e7)
    with pytest.raises(ValueError, match=r"put nodes 0.00025 apart, but the latent's dtype "
                                         r"torch.float32 resolves values there only to"):
        exact_log_evidence(model, x, bounds=(1e7 - 1, 1e7 + 1))
    # the same latent centred near 0 (z - 1e7) integrates to the closed form
    def centred(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(x)), 0.1))
            pyro.sample("x", dist.Normal(z, 0.1), obs=x - 1e7)

    closed = dist.Normal(0.0, 0.02 ** 0.5).log_prob(torch.zeros(2))
    result = exact_log_evidence(centred, x, bounds=(-1.0, 1.0))
    assert torch.allclose(result.log_evidence, closed, atol=1e-4)


def _mixture_model(weights, locs):
    def model(x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Categorical(weights))
            pyro.sample("x", dist.Normal(locs[c], 1.0), obs=x)

    return model


def test_a_discrete_latent_is_summed_over_its_support():
    # a mixture's component: log p(x) = logsumexp_c log w_c + log N(x; mu_c, 1), float64;
    # per-datapoint weights too (probs [batch, K]: the support is still 0..K-1)
    x = torch.tensor([0.5, -1.0, 3.0, 7.0], dtype=torch.float64)
    locs = torch.tensor([-2.0, 0.5, 2.0], dtype=torch.float64)
    weights = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8],
                            [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64)
    truth = torch.logsumexp(weights.log().T + dist.Normal(locs[:, None], 1.0).log_prob(x), 0)
    for model in (_mixture_model(weights, locs),
                  pyro.infer.config_enumerate(_mixture_model(weights, locs))):
        result = exact_log_evidence(model, x, site="c")
        assert float((result.log_evidence - truth).abs().max()) < 1e-12
        assert result.grid.flatten().tolist() == [0, 1, 2]
        posterior = weights.log().T + dist.Normal(locs[:, None], 1.0).log_prob(x) - truth
        assert torch.allclose(result.log_posterior, posterior, atol=1e-12)


def test_two_discrete_values_per_datapoint_are_summed_over_all_pairs():
    # two bits per datapoint (.to_event(1)): four combinations, against a loop over them
    x = torch.tensor([0.0, 1.5, -1.0], dtype=torch.float64)
    probs = torch.tensor([0.2, 0.6], dtype=torch.float64)

    def model(x):
        with pyro.plate("data", len(x)):
            b = pyro.sample("b", dist.Bernoulli(probs).to_event(1))
            pyro.sample("x", dist.Normal(2 * b[..., 0] - b[..., 1], 1.0), obs=x)

    terms = []
    for b0 in (0.0, 1.0):
        for b1 in (0.0, 1.0):
            prior = dist.Bernoulli(probs).log_prob(torch.tensor([b0, b1], dtype=x.dtype)).sum()
            terms.append(prior + dist.Normal(2 * b0 - b1, 1.0).log_prob(x))
    result = exact_log_evidence(model, x, site="b")
    assert result.grid.shape == (4, 2)
    assert float((result.log_evidence - torch.logsumexp(torch.stack(terms), 0)).abs().max()) \
        < 1e-12


def test_a_discrete_latent_without_a_finite_shared_support_is_named():
    x = torch.tensor([1.0, 2.0])

    def poisson(x):
        with pyro.plate("data", len(x)):
            n = pyro.sample("n", dist.Poisson(3.0))
            pyro.sample("x", dist.Normal(n, 1.0), obs=x)

    with pytest.raises(ValueError, match=r"site 'n' is discrete \(Poisson.*without a finite "
                                         "support"):
        exact_log_evidence(poisson, x, site="n")

    def binomial(x):  # a total count per datapoint: no support shared by all
        with pyro.plate("data", len(x)):
            n = pyro.sample("n", dist.Binomial(torch.tensor([2.0, 5.0]), 0.5))
            pyro.sample("x", dist.Normal(n, 1.0), obs=x)

    with pytest.raises(ValueError, match="site 'n' \\(Binomial\\) has no support shared"):
        exact_log_evidence(binomial, x, site="n")


def test_a_one_hot_latent_is_summed_over_its_vectors_not_their_elements():
    # a OneHotCategorical of 2 categories was summed over all 4 pairs of elements, [0, 0]
    # and [1, 1] included: +1.39 nats per datapoint against the Categorical form
    x = torch.tensor([0.3, -1.2, 2.0, 0.7], dtype=torch.float64)
    logits = torch.tensor([0.1, -0.5], dtype=torch.float64)
    locs = torch.tensor([-2.0, 0.0], dtype=torch.float64)

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.OneHotCategorical(logits=logits))
            pyro.sample("x", dist.Normal((z * locs).sum(-1), 1.0), obs=x)

    truth = torch.logsumexp(torch.log_softmax(logits, 0)[:, None]
                            + dist.Normal(locs[:, None], 1.0).log_prob(x), 0)
    result = exact_log_evidence(model, x, site="z")
    assert result.grid.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert float((result.log_evidence - truth).abs().max()) < 1e-12


def test_rows_coupled_through_the_batch_are_refused():
    """A model whose datapoints share the batch mean of their latents (``z - z.mean()``) has
    no evidence per datapoint; quadrature gave numbers where ``iwae_bound`` refused (and its
    grid's nodes entered the mean like particles). Refused now, as by the estimators; a
    model that reduces over all the latent's dims (``z.sum()`` of one row) sums the grid's
    nodes together (-11306058 against -1.688) and is refused as not broadcasting."""
    from inference import PairError

    x = torch.tensor([1.3, 0.2, -0.5])

    def coupled(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z - z.mean(), 1.0), obs=x)

    def summed(x):
        with pyro.plate("data", 1):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z.sum(), 1.0).expand([1]), obs=x)

    with pytest.raises(PairError, match="depends on the other datapoints"):
        exact_log_evidence(coupled, x, progress=False)
    with pytest.raises(ValueError, match="among 2 particles"):
        exact_log_evidence(summed, x[:1], progress=False)


def _beta_binomial_truth(k, n, a, b):
    """``log p(k)`` of a Beta(a, b)-Binomial(n): ``[batch]`` float64."""
    k = k.double()
    log_choose = torch.lgamma(torch.tensor(n + 1.0)) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
    log_beta = lambda p, q: torch.lgamma(p) + torch.lgamma(q) - torch.lgamma(p + q)  # noqa: E731
    a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    return log_choose + log_beta(k + a, n - k + b) - log_beta(a, b)


def test_two_beta_latents_in_float32_are_integrated_not_refused():
    # float32 rounds the grid's nodes within 6e-8 of 1.0 together, and torch's Binomial clamps
    # its probability to [1.2e-7, 1 - 1.2e-7]: both bent the log masses at the ends, where the
    # posterior Beta(>= 3, >= 3) holds about e^-140, and the end check refused the pair
    k = torch.tensor([[1.0, 3.0], [6.0, 2.0]])

    def model(k):
        with pyro.plate("data", len(k)):
            z = pyro.sample("z", dist.Beta(torch.full((2,), 2.0), torch.full((2,), 3.0))
                            .to_event(1))
            pyro.sample("k", dist.Binomial(8, z).to_event(1), obs=k)

    result = exact_log_evidence(model, k, progress=False)
    truth = _beta_binomial_truth(k, 8, 2.0, 3.0).sum(-1)
    assert float((result.log_evidence.double() - truth).abs().max()) < 2e-5


def test_mass_on_nodes_float32_rounds_together_is_refused_naming_float64():
    # a posterior Beta(10, 0.4) rises toward 1, and 0.6% of its mass lies on nodes that
    # float32 rounds onto 1 - 6e-8: the integral was 2e-3 nats off without a word; in
    # float64 the same pair is exact
    k = torch.tensor([8.0, 3.0])

    def model(k):
        with pyro.plate("data", len(k)):
            z = pyro.sample("z", dist.Beta(torch.tensor(2.0, dtype=k.dtype),
                                           torch.tensor(0.4, dtype=k.dtype)))
            pyro.sample("k", dist.Binomial(8, z), obs=k)

    with pytest.raises(ValueError, match=r"datapoint 0 puts .* of its mass on grid nodes of "
                                         r"site 'z' that torch.float32 rounds onto one value "
                                         r"near 0.9999.*compute in float64"):
        exact_log_evidence(model, k, progress=False)
    result = exact_log_evidence(model, k.double(), progress=False)
    truth = _beta_binomial_truth(k, 8, 2.0, 0.4)
    assert float((result.log_evidence - truth).abs().max()) < 2e-5
    # a density that stays bounded there (20 of 20 on a flat prior: Beta(21, 1)) puts mass
    # on the same rounded nodes, but scoring them at one value costs nothing: integrated
    heads = torch.tensor([20.0])

    def coin(k):
        with pyro.plate("data", len(k)):
            z = pyro.sample("z", dist.Beta(1.0, 1.0))
            pyro.sample("k", dist.Binomial(20, z), obs=k)

    result = exact_log_evidence(coin, heads, progress=False)
    assert abs(float(result.log_evidence[0]) - math.log(1 / 21)) < 1e-6


def test_the_missing_entries_of_obs_mask_are_named_not_conditioned():
    # the advice to condition the second latent gave log p(x_obs, x_unobserved = 0): -1.27
    # instead of 0 on a row whose value is missing
    x, mask = torch.tensor([-2.0, 0.3, 1.1]), torch.tensor([True, False, True])

    def model(x, mask):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x, obs_mask=mask)

    with pytest.raises(ValueError, match=r"'x_unobserved' holds the missing entries of "
                                         r"pyro.sample\('x', ..., obs_mask=...\).*d.mask\(mask\)"):
        exact_log_evidence(model, x, mask, progress=False)

    def masked(x, mask):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0).mask(mask), obs=x)

    result = exact_log_evidence(masked, x, mask, progress=False)
    truth = torch.where(mask, dist.Normal(0.0, 2.0 ** 0.5).log_prob(x), 0.0)
    assert float((result.log_evidence - truth).abs().max()) < 1e-5


def test_rows_whose_latent_is_masked_out_are_named_not_sent_to_wider_bounds():
    # the flat 'posterior' of a masked latent reached the grid's edges: "widen bounds", which
    # no bounds fix; a masked discrete latent is still summed (its values' mass sums to one)
    x, rows = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([True, False, True])

    def model(x, rows):
        with pyro.plate("data", len(x)), pyro.poutine.mask(mask=rows):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    with pytest.raises(ValueError, match=r"latent site 'z' is masked out \(poutine.mask or "
                                         r"dist.mask\) for datapoints \[1\]"):
        exact_log_evidence(model, x, rows, bounds=(-30.0, 30.0), progress=False)

    def switch(x, rows):
        with pyro.plate("data", len(x)), pyro.poutine.mask(mask=rows):
            c = pyro.sample("c", dist.Bernoulli(0.3))
            pyro.sample("x", dist.Normal(2.0 * c, 1.0), obs=x)

    result = exact_log_evidence(switch, x, rows, site="c", progress=False)
    mixture = torch.logaddexp(torch.log(torch.tensor(0.7)) + dist.Normal(0.0, 1.0).log_prob(x),
                              torch.log(torch.tensor(0.3)) + dist.Normal(2.0, 1.0).log_prob(x))
    torch.testing.assert_close(result.log_evidence, torch.where(rows, mixture, 0.0),
                               atol=1e-5, rtol=0)


def test_a_one_hot_latent_of_three_categories_is_summed_exactly():
    # refused with "quadrature needs one or two values per datapoint" (3 per datapoint),
    # where the Categorical form of the same model was summed exactly
    weights, means = torch.tensor([0.2, 0.5, 0.3]), torch.tensor([-2.0, 0.0, 3.0])
    x = torch.tensor([-1.5, 0.4, 2.0, 5.0])

    def model(x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.OneHotCategorical(weights))
            pyro.sample("x", dist.Normal((c * means).sum(-1), 1.0), obs=x)

    truth = torch.logsumexp(weights.log() + dist.Normal(means, 1.0).log_prob(x[:, None]), -1)
    result = exact_log_evidence(model, x, site="c", progress=False)
    torch.testing.assert_close(result.log_evidence, truth, atol=1e-5, rtol=0)


@pytest.mark.parametrize("num_points", [None, 2001])
def test_a_support_that_moves_with_the_latent_is_integrated_to_second_order(num_points):
    # x ~ Uniform(0, z) cuts a grid cell at z = x: counted whole, it left first-order errors
    # (7e-4 nats on the default grid, 2.7e-3 at 4096 nodes) without a word; the cut is found
    # by halving and the cells counted to it. Two cuts per datapoint (x ~ Uniform(z - 1, z +
    # 1) on a Normal latent: the trapezoid grid) and one at a support end's substitution.
    x = torch.tensor([0.1, 0.7, 1.5, 3.0, 6.0, 2.345], dtype=torch.float64)

    def gamma_uniform(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Gamma(torch.tensor(2.0, dtype=x.dtype), 1.0))
            pyro.sample("x", dist.Uniform(0.0, z), obs=x)

    def normal_window(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.tensor(0.0, dtype=x.dtype), 1.0))
            pyro.sample("x", dist.Uniform(z - 1.0, z + 1.0), obs=x)

    tolerance = 1e-5 if num_points is None else 1e-4  # second order: 2.6e-6 and 4e-5 here
    result = exact_log_evidence(gamma_uniform, x, bounds=(0.0, 40.0), num_points=num_points,
                                progress=False)
    assert float((result.log_evidence + x).abs().max()) < tolerance  # p(x) = exp(-x)
    window = x - 2.0
    standard = dist.Normal(torch.tensor(0.0, dtype=x.dtype), 1.0)
    truth = torch.log((standard.cdf(window + 1) - standard.cdf(window - 1)) / 2)
    result = exact_log_evidence(normal_window, window, num_points=num_points, progress=False)
    assert float((result.log_evidence - truth).abs().max()) < tolerance


def test_bounds_may_be_zero_dim_tensors_and_bad_ones_are_named():
    # bounds=(x.min(), x.max()) was refused as "bounds[0] must be a finite number, got
    # tensor(-8.)", a finite value
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    x = torch.tensor([-1.0, 0.5])
    wide = torch.tensor([-12.0, 12.0])
    result = exact_log_evidence(model, x, bounds=(wide.min(), wide.max()), progress=False)
    truth = dist.Normal(0.0, 2.0 ** 0.5).log_prob(x)
    torch.testing.assert_close(result.log_evidence, truth, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"bounds\[1\]"):
        exact_log_evidence(model, x, bounds=(-12.0, float("nan")), progress=False)
    with pytest.raises(ValueError, match=r"bounds\[0\]"):
        exact_log_evidence(model, x, bounds=(torch.zeros(2), 12.0), progress=False)


def test_a_mixture_prior_on_the_real_line_is_integrated():
    # MixtureSameFamily wraps its components' support in a constraint of its own, which the
    # grid took for an unknown support and refused; a two-component prior against the
    # closed form 0.4 N(x; -1, 1 + 0.5^2) + 0.6 N(x; 1.5, 0.8^2 + 0.5^2)
    x = torch.tensor([-1.5, 0.2, 2.0], dtype=torch.float64)
    weights = torch.tensor([0.4, 0.6], dtype=torch.float64)
    locs = torch.tensor([-1.0, 1.5], dtype=torch.float64)
    scales = torch.tensor([1.0, 0.8], dtype=torch.float64)

    def model(x):
        prior = dist.MixtureSameFamily(dist.Categorical(weights), dist.Normal(locs, scales))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    spread = (scales ** 2 + 0.25).sqrt()
    exact = torch.logsumexp(weights.log() + dist.Normal(locs, spread).log_prob(x[:, None]), -1)
    result = exact_log_evidence(model, x, site="z", progress=False)
    torch.testing.assert_close(result.log_evidence, exact, atol=1e-6, rtol=0)


def test_an_improper_prior_is_refused_by_name():
    # the survey draws the latent from its prior, which Pyro cannot for ImproperUniform:
    # its NotImplementedError reached the user raw
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.ImproperUniform(constraints.real, (), ()).expand([len(x)]))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    with pytest.raises(ValueError, match=r"ImproperUniform does not support sampling\): an "
                                         r"improper prior .* give the latent a proper prior"):
        exact_log_evidence(model, torch.tensor([0.5, 1.0]), progress=False)


def test_float32_support_ends_are_reached_by_the_bounds_a_user_writes():
    # float32 rounds a support's end one step outward (float32(pi) > math.pi): the user's
    # bounds=(-math.pi, math.pi) were read as a cut inside a VonMises latent's support and
    # refused ("widen bounds"), as was (0, 0.1) for Uniform(0, 0.1); closed form of the
    # latter: log of the mean of N(0.05; z, 1) over z uniform on (0, 0.1)
    x = torch.tensor([0.05])

    def uniform_model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Uniform(0.0, 0.1))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    normal = torch.distributions.Normal(torch.tensor(0.05, dtype=torch.float64), 1.0)
    mass = normal.cdf(torch.tensor(0.1, dtype=torch.float64)) - normal.cdf(
        torch.tensor(0.0, dtype=torch.float64))
    exact = float((mass / 0.1).log())
    result = exact_log_evidence(uniform_model, x, bounds=(0.0, 0.1), progress=False)
    assert float(result.log_evidence[0]) == pytest.approx(exact, abs=1e-5)

    def von_mises_model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.VonMises(0.0, 2.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    exact_log_evidence(von_mises_model, torch.tensor([0.3, -1.0]),
                       bounds=(-math.pi, math.pi), progress=False)


def test_a_bound_inside_a_support_far_from_zero_is_still_a_cut():
    # a tolerance relative to the bound's size (1e-6 of 1e6) took a bound half-way through
    # Uniform(1e6, 1e6 + 1) for the support's end and returned -43.6 nats silently (the
    # truth -0.173): the tolerance is the rounding of the support's dtype at its end
    low = torch.tensor(1e6, dtype=torch.float64)

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Uniform(low, low + 1.0))
            pyro.sample("x", dist.Normal(z, 0.05), obs=x)

    x = (low + 0.95).reshape(1)
    with pytest.raises(ValueError, match=r"datapoint 0 at site 'z' .* grid's high end, "
                                         r"1e\+06: the grid \(1e\+06, 1e\+06\) cuts"):
        exact_log_evidence(model, x, bounds=(1e6, 1e6 + 0.5), progress=False)
    whole = exact_log_evidence(model, x, bounds=(1e6, 1e6 + 1.0), progress=False)
    assert float(whole.log_evidence[0]) == pytest.approx(-0.17275378, abs=1e-5)


@pytest.mark.parametrize("num_points, chunk_size", [
    (8001, "uint8:200"), (8001, "int8:100"), (40001, "int16:30000"), ("int16:2001", 300)])
def test_numpy_integer_counts_give_the_python_integers_result(num_points, chunk_size):
    # A numpy int8/uint8/int16 chunk_size kept its dtype in the chunk loop's `start +
    # chunk_size`, which wrapped around (Pyro's ZeroDivisionError, NumPy's OverflowError, or
    # torch's size mismatch).
    import numpy as np

    def numpy_int(value):
        if isinstance(value, str):
            kind, number = value.split(":")
            return getattr(np, kind)(int(number))
        return value

    x = torch.linspace(-1.0, 4.0, 4, dtype=torch.float64)

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("x", dist.Normal(SLOPE * z + OFFSET, NOISE), obs=x)

    result = exact_log_evidence(model, x, num_points=numpy_int(num_points),
                                chunk_size=numpy_int(chunk_size), progress=False)
    torch.testing.assert_close(result.log_evidence, conjugate_log_evidence(x), atol=1e-6, rtol=0)


def test_a_grid_that_cuts_the_posterior_off_names_datapoint_end_and_wider_bounds():
    # the message said only "posterior mass 9.35e-04 lies at the edge of the grid; widen
    # bounds": no site, datapoint, end or bounds= to pass
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 10.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    x = torch.tensor([0.0, 9.0, -1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"the posterior of datapoint 1 at site 'z' puts .* "
                                         r"the grid's high end, 10: the grid \(-10, 10\) cuts "
                                         r"the posterior off there. Widen it, e.g. "
                                         r"bounds=\(-10, 30\)"):
        exact_log_evidence(model, x, progress=False)
    torch.testing.assert_close(exact_log_evidence(model, x, bounds=(-10, 30)).log_evidence,
                               dist.Normal(0.0, math.sqrt(101.0)).log_prob(x))
