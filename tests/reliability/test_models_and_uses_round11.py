"""Built-in models, examples and uses that the probes of 2026-11-30 (eleventh session) found
wrong or failing raw; each test fails on the code before its fix.

- ``exact_log_evidence`` of a posterior far narrower than its grid (x ~ N(z, 1e-9)) returned
  -7.6e9 nats against an exact -0.96: the float32 log joint (-1e10) absorbed the nodes'
  weights, and the resolution check saw 0.0025 of the mass on the node that held all of it.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import exact_log_evidence


def narrow_model(x, noise):
    """z ~ N(0, 1), x | z ~ N(z, noise^2): p(x) = N(x; 0, 1 + noise^2)."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros((), dtype=x.dtype), 1.0))
        pyro.sample("x", dist.Normal(z, noise), obs=x)


@pytest.mark.parametrize("dtype, noise", [(torch.float32, 1e-9), (torch.float32, 1e-7),
                                          (torch.float64, 1e-13)])
def test_a_posterior_narrower_than_the_grid_is_refused(dtype, noise):
    x = torch.tensor([0.3001234, -1.2345678], dtype=dtype)  # off the nodes
    with pytest.raises(ValueError, match=r"puts 1\.00 of its mass on one grid node"):
        exact_log_evidence(narrow_model, x, noise, progress=False)


def test_a_narrow_posterior_the_grid_resolves_is_exact():
    x = torch.tensor([0.3, -1.2], dtype=torch.float64)
    noise = 0.01
    result = exact_log_evidence(narrow_model, x, noise, progress=False)
    exact = torch.distributions.Normal(0.0, math.sqrt(1 + noise ** 2)).log_prob(x)
    assert torch.allclose(result.log_evidence, exact, atol=1e-6), (result.log_evidence, exact)
    # the posterior is a density on the nodes: it integrates to one with the grid's weights
    assert result.log_posterior.exp().max() > 1  # a density of scale 0.01 peaks near 40
