"""A guide's ``pyro.param`` of one row per datapoint, created on all N datapoints, then met
by a minibatch (the param store keeps the first value): Pyro's bare "Shape mismatch inside
plate('data') at site f dim -1, 5 vs 20" came out of the estimators with no word on the
cause (fit's note spoke of minibatches in general). A note names the parameters now."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

from inference import elbo, fit


def model(flips):
    with pyro.plate("data", flips.shape[0]):
        f = pyro.sample("f", dist.Beta(10., 10.))
        pyro.sample("obs", dist.Bernoulli(f.unsqueeze(-1)).to_event(1), obs=flips)


def guide(flips):
    a = pyro.param("alpha_q", torch.full((flips.shape[0],), 15.0),
                   constraint=constraints.positive)
    b = pyro.param("beta_q", torch.full((flips.shape[0],), 15.0),
                   constraint=constraints.positive)
    with pyro.plate("data", flips.shape[0]):
        pyro.sample("f", dist.Beta(a, b))


def test_per_datapoint_params_kept_from_the_whole_data_are_named_on_a_minibatch():
    pyro.clear_param_store()
    flips = torch.bernoulli(torch.full((20, 8), 0.5))
    elbo(model, guide, flips)  # creates the 20-row parameters
    for call in (lambda: fit(model, guide, flips, epochs=1, batch_size=5, progress=False),
                 lambda: elbo(model, guide, flips[:5])):
        with pytest.raises(ValueError, match="Shape mismatch") as error:
            call()
        notes = " ".join(getattr(error.value, "__notes__", []))
        assert ("pyro.param 'alpha_q', 'beta_q' in Pyro's param store have 20 rows, as many "
                "as site 'f' has along pyro.plate('data') of size 5") in notes
        assert "clear_param_store" in notes
