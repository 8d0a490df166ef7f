"""A latent's log density of ``-inf`` makes the whole weight ``-inf`` ("density zero, whatever
the other sites say"): for a draw outside the model's support, and on the real line where a
density is 0 in floats (a Gumbel's ``exp(-z - exp(-z))`` below z = -88, where the likelihood
that reads ``exp(-z)`` is NaN). Such particles are weight zero, not a NaN refusal."""

import pyro
import pyro.distributions as dist
import torch

from inference import exact_log_evidence, iwae_bound


def test_a_gumbel_prior_that_underflows_gives_weight_zero_not_nan():
    x = torch.tensor([0.5, 1.0, 2.0])

    def model(x):
        with pyro.plate("data", 3):
            z = pyro.sample("z", dist.Gumbel(0., 1.))
            pyro.sample("x", dist.Exponential(torch.exp(-z)), obs=x)

    def guide(x):  # wide: about 1.3% of its draws lie below z = -88.7
        with pyro.plate("data", 3):
            pyro.sample("z", dist.Normal(torch.zeros(3), 40.))
    pyro.set_rng_seed(0)
    with pyro.validation_enabled(False):
        bound = iwae_bound(model, guide, x, num_samples=20000, progress=False)
    exact = exact_log_evidence(model, x, bounds=(-60., 60.), progress=False).log_evidence
    assert torch.isfinite(bound).all()
    assert (bound - exact).abs().max() < 0.1  # a guide this wide: IWAE_20000 within 0.03


def test_a_draw_outside_a_bounded_support_has_weight_zero():
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
