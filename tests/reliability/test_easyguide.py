"""Pyro's ``easy_guide`` with ``self.group(...)`` (the easyguide tutorial's style). The
estimators' probe on the first rows of the batch made the guide raise, and
``EasyGuide.forward`` clears its plate cache only when the guide returns: the plate of the
probe's size stayed cached and every later call, the estimator's own passes included, failed
with Pyro's "Shape mismatch inside plate('data')"."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.contrib.easyguide import easy_guide
from torch.distributions import constraints

from inference import elbo, iwae_bound, log_evidence

N, D = 20, 3


def model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(D), 1.).to_event(1))
        pyro.sample("x", dist.Normal(z, 1.).to_event(1), obs=x)


@easy_guide(model)
def guide(self, x):
    """The exact posterior N(x / 2, 1/2) through a group's auxiliary site; its parameters
    hold one row per datapoint, so only the whole batch can be scored."""
    group = self.group(match="z")
    loc = pyro.param("eg_loc", torch.zeros(N, D))
    scale = pyro.param("eg_scale", torch.full((N, D), 0.5 ** 0.5),
                       constraint=constraints.positive)
    with self.plate("data", x.shape[0]):
        group.sample("z_aux", dist.Normal(loc + x / 2, scale).to_event(1))


def test_a_group_guide_with_the_exact_posterior_scores_the_exact_evidence():
    pyro.clear_param_store()
    x = torch.randn(N, D, generator=torch.Generator().manual_seed(1)) * 1.5
    exact = dist.Normal(0., 2 ** 0.5).log_prob(x).sum(-1)
    for values in (elbo(model, guide, x, num_samples=3, progress=False),
                   iwae_bound(model, guide, x, num_samples=3, progress=False)):
        assert torch.allclose(values, exact, atol=1e-4)
    # slices cannot be scored (one parameter row per datapoint): refused, and the guide
    # still works afterwards
    with pytest.raises(ValueError, match="fails on their first 9 rows"):
        log_evidence(model, guide, x, num_samples=2, batch_size=8, progress=False)
    assert torch.allclose(elbo(model, guide, x, progress=False), exact, atol=1e-4)
