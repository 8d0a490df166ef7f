"""Representation diagnostics on pairs that subsample their own data plate
(``pyro.plate("data", N, subsample_size=B)``), and kl_per_dimension's site hints."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoDelta, AutoNormal

from inference import expected_log_likelihood, kl_per_dimension, posterior_means

N, B = 10, 4
X = torch.linspace(-3.0, 3.0, N)  # distinct datapoints: a row's value tells which it is
GUIDE_SCALE = 0.5


def subsampling_pair(broadcasts=True, subsample_size=B, subsample=None, latent_dim=None):
    """z_i ~ N(0, 1) (``[latent_dim]`` per datapoint when given), x_i ~ N(z_i (first
    coordinate), 1), in a data plate of N datapoints keeping ``subsample_size`` (or the given
    ``subsample``); guide q(z_i | x_i) = N(x_i / 2, 0.5) per coordinate. ``broadcasts``
    False: the model reshapes z to the subsample, so it cannot run with particles in a
    leftmost plate (one pass per draw)."""

    def plate():
        if subsample is not None:
            return pyro.plate("data", N, subsample=subsample)
        return pyro.plate("data", N, subsample_size=subsample_size)

    def model(x):
        with plate() as idx:
            prior = dist.Normal(torch.zeros(()), 1.0)
            if latent_dim is None:
                z = pyro.sample("z", prior)
            else:
                z = pyro.sample("z", prior.expand([latent_dim]).to_event(1))[..., 0]
            if not broadcasts:
                z = z.reshape(len(idx))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x[idx])

    def guide(x):
        with plate() as idx:
            loc = x[idx] / 2
            if latent_dim is None:
                pyro.sample("z", dist.Normal(loc, GUIDE_SCALE))
            else:
                loc = loc.unsqueeze(-1).expand(len(idx), latent_dim)
                pyro.sample("z", dist.Normal(loc, GUIDE_SCALE).to_event(1))

    return model, guide


def expected_log_likelihood_closed_form(x):
    """E_q[log N(x; z, 1)] with z ~ N(x / 2, 0.5^2)."""
    return -0.5 * math.log(2 * math.pi) - 0.5 * ((x / 2) ** 2 + GUIDE_SCALE ** 2)


def kl_closed_form(x):
    """KL(N(x / 2, 0.5^2) || N(0, 1)) per coordinate."""
    return 0.5 * (GUIDE_SCALE ** 2 + (x / 2) ** 2 - 1) - math.log(GUIDE_SCALE)


@pytest.mark.parametrize("broadcasts", [True, False], ids=["vectorized", "one-pass-per-draw"])
@pytest.mark.parametrize("latent_dim", [None, 3])
def test_expected_log_likelihood_scores_one_subsample_and_names_it(broadcasts, latent_dim):
    # every draw scores the same B datapoints (the fallback drew a new subsample per draw,
    # mixing datapoints), and the result says which (it had no .subsample)
    pyro.set_rng_seed(0)
    model, guide = subsampling_pair(broadcasts, latent_dim=latent_dim)
    result = expected_log_likelihood(model, guide, X, num_samples=2000)
    assert result.shape == (B,)
    rows = result.subsample
    assert rows.shape == (B,) and len(set(rows.tolist())) == B
    # per draw log p(x|z) has sd below 0.55 here: 5 standard errors of 2000 draws < 0.065
    torch.testing.assert_close(result, expected_log_likelihood_closed_form(X[rows]),
                               atol=0.065, rtol=0)


def test_expected_log_likelihood_without_subsample_has_no_subsample_attribute():
    pyro.set_rng_seed(0)
    model, guide = subsampling_pair(subsample_size=None)
    result = expected_log_likelihood(model, guide, X, num_samples=2000)
    assert result.shape == (N,) and not hasattr(result, "subsample")
    torch.testing.assert_close(result, expected_log_likelihood_closed_form(X), atol=0.065,
                               rtol=0)


@pytest.mark.parametrize("latent_dim", [None, 3])
def test_posterior_means_of_a_subsampling_guide_name_their_rows(latent_dim):
    pyro.set_rng_seed(0)
    _, guide = subsampling_pair(latent_dim=latent_dim)
    means = posterior_means(guide, X)
    rows = means.subsample
    assert rows.shape == (B,) and len(set(rows.tolist())) == B
    expected = X[rows] / 2
    if latent_dim is not None:
        expected = expected.unsqueeze(-1).expand(B, latent_dim)
    torch.testing.assert_close(means, expected)


def test_posterior_means_with_given_subsample_and_without_one():
    rows = torch.tensor([7, 2, 5])
    _, guide = subsampling_pair(subsample=rows)
    means = posterior_means(guide, X)
    assert means.subsample.tolist() == rows.tolist()
    torch.testing.assert_close(means, X[rows] / 2)
    _, guide = subsampling_pair(subsample_size=None)
    means = posterior_means(guide, X)
    assert not hasattr(means, "subsample")
    torch.testing.assert_close(means, X / 2)


@pytest.mark.parametrize("subsample_size", [2, 4, 9], ids=["divides-N", "overlap", "N-1"])
@pytest.mark.parametrize("latent_dim", [None, 3])
def test_kl_per_dimension_of_a_subsampling_pair_averages_every_datapoint(subsample_size,
                                                                          latent_dim):
    # it averaged one random subsample, another on every call
    model, guide = subsampling_pair(subsample_size=subsample_size, latent_dim=latent_dim)
    expected = kl_closed_form(X).mean().expand(latent_dim or 1)
    for seed in range(3):
        pyro.set_rng_seed(seed)
        torch.testing.assert_close(kl_per_dimension(model, guide, X), expected)


def test_kl_per_dimension_with_given_subsample_averages_those_rows():
    rows = torch.tensor([7, 2, 5])
    model, guide = subsampling_pair(subsample=rows)
    torch.testing.assert_close(kl_per_dimension(model, guide, X),
                               kl_closed_form(X[rows]).mean().reshape(1))


def inner_subsampling_pair():
    """z [batch, 4] in pyro.plate("feat", 6, subsample_size=4) inside the data plate."""

    def model(x):
        with pyro.plate("data", len(x), dim=-2):
            with pyro.plate("feat", 6, subsample_size=4, dim=-1):
                z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 1.0), obs=x.unsqueeze(-1))

    def guide(x):
        with pyro.plate("data", len(x), dim=-2):
            with pyro.plate("feat", 6, subsample_size=4, dim=-1) as features:
                pyro.sample("z", dist.Normal(x.unsqueeze(-1) * features, 1.0))

    return model, guide


def test_a_random_inner_subsample_at_the_site_is_refused_by_name():
    model, guide = inner_subsampling_pair()
    with pytest.raises(ValueError, match=r"pyro.plate\('feat'\), which draws a random "
                                         r"subsample \(4 of its 6"):
        posterior_means(guide, X)
    with pytest.raises(ValueError, match=r"pyro.plate\('feat', 6\)"):
        kl_per_dimension(model, guide, X)


def autonormal_pair():
    def model(x):
        with pyro.plate("data", len(x)):
            w = pyro.sample("w", dist.Normal(0.0, 2.0))
            pyro.sample("x", dist.Normal(w, 1.0), obs=x)

    pyro.clear_param_store()
    guide = AutoNormal(model)
    guide(X)
    return model, guide


@pytest.mark.parametrize("site", ["z", "w_unconstrained"])
def test_kl_per_dimension_hint_never_names_an_auxiliary_site(site):
    # it suggested site='w_unconstrained', which it then refused with the same hint
    model, guide = autonormal_pair()
    with pytest.raises(ValueError) as refusal:
        kl_per_dimension(model, guide, X, site=site)
    message = str(refusal.value)
    assert "latent sites are ['w'] (leaving out ['w_unconstrained']" in message
    assert message.endswith("pass site='w'")
    if site == "w_unconstrained":
        assert "(it is an AutoGuide's auxiliary site)" in message


def test_kl_per_dimension_hint_names_only_sites_the_model_samples():
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("extra", dist.Normal(0.0, 1.0))
            pyro.sample("z", dist.Normal(x / 2, 0.5))

    with pytest.raises(ValueError, match=r"latent sites are \['z'\] \(leaving out \['extra'\], "
                                         r"which the model does not sample\): pass site='z'"):
        kl_per_dimension(model, guide, X, site="h")


def test_kl_per_dimension_says_an_autoguide_delta_needs_a_normal_guide_site():
    model, guide = autonormal_pair()
    with pytest.raises(NotImplementedError, match=r"'w' is a Delta.*needs a diagonal Normal "
                                                  r"guide site"):
        kl_per_dimension(model, guide, X, site="w")


def test_posterior_means_of_an_autoguides_delta_is_refused_not_a_draw():
    # it returned AutoNormal's transformed draw at 'w' as the mean, another on every call
    _, guide = autonormal_pair()
    with pytest.raises(NotImplementedError, match=r"site 'w' is a Delta at a value computed "
                                                  r"from the draw.*\['w_unconstrained'\].*"
                                                  r"average draws"):
        posterior_means(guide, X, site="w")
    unconstrained = posterior_means(guide, X, site="w_unconstrained")  # a Normal's mean
    torch.testing.assert_close(unconstrained, guide.locs.w.detach())


def test_posterior_means_of_a_point_mass_delta_is_its_value():
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    pyro.clear_param_store()
    guide = AutoDelta(model)
    guide(X)
    torch.testing.assert_close(posterior_means(guide, X), guide.z.detach())

    def data_delta_guide(x):  # a point mass computed from the data alone
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Delta(x / 2))

    torch.testing.assert_close(posterior_means(data_delta_guide, X), X / 2)
