"""An auxiliary guide site (``infer={"is_auxiliary": True}``) that no other guide site
depends on kept its ``log q`` in every importance weight: with the exact posterior beside a
``Normal(0, 1)`` auxiliary draw, the ELBO came out 1.42 nats (its entropy) above ``log p(x)``
and IWAE grew with K; a ``Bernoulli(0.5)`` one added ``log 2`` with constant weights, seen by
no diagnostic. Refused now, naming the site; auxiliary sites that a ``Delta`` (an
AutoGuide's transform) or another auxiliary site's distribution depends on are scored as
before, exactly."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import elbo, fit, iwae_bound
from inference.pair_check import PairError

X = torch.tensor([0.5, -1.0, 2.0])
EXACT = dist.Normal(0.0, math.sqrt(2.0)).log_prob(X)  # z ~ N(0, 1), x | z ~ N(z, 1)
POSTERIOR_SCALE = math.sqrt(0.5)


def model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def guide_with(auxiliary):
    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("u", auxiliary, infer={"is_auxiliary": True})
            pyro.sample("z", dist.Normal(x / 2, POSTERIOR_SCALE))
    return guide


@pytest.mark.parametrize("auxiliary", [dist.Normal(0.0, 1.0), dist.Bernoulli(0.5)],
                         ids=["normal", "bernoulli"])
@pytest.mark.parametrize("estimator", [elbo, iwae_bound])
def test_an_auxiliary_site_nothing_depends_on_is_refused(auxiliary, estimator):
    with pytest.raises(PairError, match=r"auxiliary site\(s\) 'u' .* feed no other guide site"):
        estimator(model, guide_with(auxiliary), X, num_samples=50, progress=False)


def test_fit_refuses_it_too():
    def guide(x):
        loc = pyro.param("loc", torch.zeros(len(x)))
        with pyro.plate("data", len(x)):
            pyro.sample("u", dist.Normal(0.0, 1.0), infer={"is_auxiliary": True})
            pyro.sample("z", dist.Normal(loc, POSTERIOR_SCALE))

    pyro.clear_param_store()
    with pytest.raises(PairError, match="feed no other guide site"):
        fit(model, guide, X, epochs=1, progress=False)


def _delta_of(x, u):
    """The exact posterior of ``z`` as a Delta of a standard normal draw, with its Jacobian."""
    return dist.Delta(x / 2 + POSTERIOR_SCALE * u,
                      log_density=torch.tensor(-math.log(POSTERIOR_SCALE)))


def test_auxiliary_draws_that_latents_are_computed_from_are_exact():
    """A Delta of the auxiliary draw is scored exactly (IWAE = log p(x) on every draw), also
    beside a second auxiliary site hidden with ``poutine.mask(mask=False)``, or beside an
    ordinary draw after a hidden auxiliary one."""
    def through_delta(x):
        with pyro.plate("data", len(x)):
            with pyro.poutine.mask(mask=False):
                pyro.sample("kept_aside", dist.Normal(0.0, 1.0), infer={"is_auxiliary": True})
            u = pyro.sample("u", dist.Normal(0.0, 1.0), infer={"is_auxiliary": True})
            pyro.sample("z", _delta_of(x, u))

    def hidden_only(x):
        with pyro.plate("data", len(x)):
            with pyro.poutine.mask(mask=False):
                pyro.sample("kept_aside", dist.Normal(0.0, 1.0), infer={"is_auxiliary": True})
            pyro.sample("z", dist.Normal(x / 2, POSTERIOR_SCALE))

    for guide in (through_delta, hidden_only):
        bound = iwae_bound(model, guide, X, num_samples=20, progress=False)
        torch.testing.assert_close(bound, EXACT, atol=1e-5, rtol=0)


def test_auxiliary_draws_beyond_the_latents_coordinates_are_refused():
    """A chain of two auxiliary draws into one latent (``u ~ N(a, 1)``, ``z = f(u)``) and a
    mixture's component drawn beside its member: q(z) integrates over the surplus draws, and
    the weights scored their joint density (IWAE came out above log p(x): 0.35 against
    -1.33 for the first datapoint)."""
    def chain(x):
        with pyro.plate("data", len(x)):
            a = pyro.sample("a", dist.Normal(0.0, 1.0), infer={"is_auxiliary": True})
            u = pyro.sample("u", dist.Normal(a, 1.0), infer={"is_auxiliary": True})
            pyro.sample("z", _delta_of(x, u))

    def mixture(x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Bernoulli(0.5), infer={"is_auxiliary": True})
            u = pyro.sample("u", dist.Normal(2.0 * c - 1.0, 1.0), infer={"is_auxiliary": True})
            pyro.sample("z", _delta_of(x, u))

    for guide in (chain, mixture):
        with pytest.raises(PairError, match="hold more values than the Delta site"):
            iwae_bound(model, guide, X, num_samples=20, progress=False)
