"""A latent's log density of ``-inf`` made the whole weight ``-inf`` ("density zero, whatever
the other sites say"), which is right for a draw outside the model's support but also hid
a NaN when the ``-inf`` was an overflow on the real line (a draw of 1e20 under a Normal
prior, from parameters a diverged step left huge): ``elbo`` returned ``-inf`` for most
datapoints. Now the NaN is refused, naming the datapoints."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import elbo, iwae_bound


def pair(guide_loc: float):
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0., 1.))
            # z * z overflows to inf for a huge draw: inf - inf is NaN
            pyro.sample("x", dist.Normal(z * z - z * z, 1.), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.full_like(x, guide_loc), 1.))
    return model, guide


def test_an_overflowing_prior_does_not_hide_a_nan_likelihood():
    x = torch.zeros(4)
    model, guide = pair(1e20)
    with pyro.validation_enabled(False):
        for call in (lambda: elbo(model, guide, x, num_samples=3, progress=False),
                     lambda: iwae_bound(model, guide, x, num_samples=3, progress=False)):
            with pytest.raises(ValueError, match=r"NaN for datapoints \[0, 1, 2, 3\]"):
                call()


def test_a_draw_outside_a_bounded_support_still_has_weight_zero():
    """The guide's Normal reaches below 0, where the model's Exponential has no density: a
    particle there is weight zero even though the likelihood's log(z) is NaN."""
    x = torch.ones(3)

    def model(x):
        with pyro.plate("data", 3):
            z = pyro.sample("z", dist.Exponential(1.))
            pyro.sample("x", dist.Normal(torch.log(z), 1.), obs=x)

    def guide(x):
        with pyro.plate("data", 3):
            pyro.sample("z", dist.Normal(torch.full((3,), -5.), 0.1))
    with pyro.validation_enabled(False):
        values = iwae_bound(model, guide, x, num_samples=4, progress=False)
    assert torch.isneginf(values).all()
