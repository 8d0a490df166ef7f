"""A model or guide that changes its data argument in place.

Before 2026-11-29 (hostile probes): a model ending in ``x.mul_(2)`` was refused by
``iwae_bound`` only after the survey's runs had multiplied the caller's data by 64, with a
message blaming the guide's randomness; ``fit`` failed inside autograd ("modified by an
inplace operation") with the caller's data doubled. The survey's first run now works on
copies of the tensor arguments and refuses a program that changes one, naming it.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import PairError, fit, iwae_bound

X = torch.tensor([-2.0, -0.5, 0.0, 0.7, 1.5, 3.0])


def mutating_model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 0.5), obs=x)
    x.mul_(2)


def guide(x):
    loc = pyro.param("loc", torch.tensor(0.5))
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(loc * x, 0.8))


def mutating_guide(x, scale=None):
    scale["s"] += 1
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(0.5 * x, 0.8))


def model(x, scale=None):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 0.5), obs=x)


@pytest.mark.parametrize("call", [
    lambda x: iwae_bound(mutating_model, guide, x, num_samples=10, progress=False),
    lambda x: fit(mutating_model, guide, x, epochs=1, batch_size=3, progress=False),
])
def test_a_model_changing_its_data_in_place_is_refused_before_the_data_change(call):
    pyro.clear_param_store()
    x = X.clone()
    with pytest.raises(PairError, match=r"the model changes its argument 0 in place"):
        call(x)
    assert torch.equal(x, X)


def test_a_guide_changing_a_tensor_inside_a_dict_is_named():
    settings = {"s": torch.tensor(1.0)}
    with pytest.raises(PairError,
                       match=r"the guide changes its keyword argument 'scale'\['s'\] in place"):
        iwae_bound(model, mutating_guide, X, scale=settings, num_samples=10, progress=False)
    assert float(settings["s"]) == 1.0
