"""A guide's ``pyro.param`` of one row per datapoint, created on all N datapoints, then met
by a minibatch (the param store keeps the first value): Pyro's bare "Shape mismatch inside
plate('data') at site f dim -1, 5 vs 20" came out of the estimators with no word on the
cause (fit's note spoke of minibatches in general). The survey's first run names the
parameter now, comparing the store's shape with the initial value's."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

from inference import elbo, fit
from inference.pair_check import PairError


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
        # named before any run computes with them (13th session; was Pyro's "Shape mismatch"
        # with a note naming the parameters)
        with pytest.raises(PairError) as error:
            call()
        message = str(error.value)
        assert ("pyro.param('alpha_q') with an initial value of shape [5], but Pyro's param "
                "store already holds a tensor of shape [20]") in message
        assert "index the parameter with them" in message
        assert "clear_param_store" in message
