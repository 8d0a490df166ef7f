"""A network built inside the model or guide (``pyro.module("enc", nn.Linear(4, 4))`` in the
guide's body) computes with freshly initialized weights on every run while Pyro's param store
keeps the first run's: every chunk of an estimate drew from another q (AIS came out above
log p(x)), and fit stepped tensors the network never used. The survey now refuses it."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, pyro_method

from inference import PairError, elbo, fit, iwae_bound, log_importance_weights

X = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))


def model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True).expand(x.shape), 1.0)
                    .to_event(1), obs=x)


def guide_from(network):
    """A guide whose ``q(z | x)`` comes from ``network()`` (an ``nn.Module`` of 4 -> 4)."""
    def guide(x):
        h = network()(x)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(h[:, :2], torch.nn.functional.softplus(h[:, 2:])
                                         + 0.3).to_event(1))
    return guide


@pytest.fixture(autouse=True)
def _fresh_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


CALLS = [
    lambda g: log_importance_weights(model, g, X, num_samples=10),
    lambda g: elbo(model, g, X),
    lambda g: iwae_bound(model, g, X, num_samples=10),
    lambda g: fit(model, g, X, epochs=1, progress=False),
]


@pytest.mark.parametrize("call", CALLS, ids=["weights", "elbo", "iwae_bound", "fit"])
def test_a_network_built_inside_the_guide_is_refused(call):
    guide = guide_from(lambda: pyro.module("enc", torch.nn.Linear(4, 4)))
    with pytest.raises(PairError, match=r"parameter 'enc\$\$\$weight' \(and 1 more\) belongs "
                                        r"to a network the guide builds anew on every run"):
        call(guide)


def test_a_network_built_inside_the_model_is_refused():
    def rebuilt_model(x):
        dec = pyro.module("dec", torch.nn.Linear(2, 4))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(dec(z), 1.0).to_event(1), obs=x)

    net = torch.nn.Linear(4, 4)
    guide = guide_from(lambda: pyro.module("enc", net))
    with pytest.raises(PairError, match=r"'dec\$\$\$weight' .* the model builds anew"):
        elbo(rebuilt_model, guide, X)


def test_a_pyro_module_built_inside_the_guide_is_refused_too():
    # a fresh PyroModule initializes its own weights on every run as well
    def pyro_module():
        net = PyroModule[torch.nn.Linear](4, 4)
        net._pyro_name = "enc"
        return net

    with pytest.raises(PairError, match=r"'enc.weight' .* the guide builds anew"):
        elbo(model, guide_from(pyro_module), X)


class _ReassignedEncoder(PyroModule):
    """A PyroModule pair whose guide assigns a new submodule on every call: Pyro drops the
    old submodule's parameters from the store and keeps the new ones, so the store returns
    each run's own tensors (the first version of the check looked for a store that
    returns another tensor, and took this pair: two elbo calls gave -41.4 and -36.7)."""

    @pyro_method
    def model(self, x):
        model(x)

    @pyro_method
    def guide(self, x):
        self.enc = PyroModule[torch.nn.Linear](4, 4)
        guide_from(lambda: self.enc)(x)


def test_a_pyro_module_submodule_reassigned_in_the_guide_is_refused():
    pair = _ReassignedEncoder()
    with pytest.raises(PairError, match=r"'enc.weight' .* the guide builds anew .* assigned "
                                        r"to self.enc"):
        elbo(pair.model, pair.guide, X)


def test_a_network_given_the_store_s_tensors_is_taken():
    # update_module_params=True puts the store's tensors into each new network: every run
    # computes with the first run's weights, the same q as a network built once
    torch.manual_seed(1)
    once = torch.nn.Linear(4, 4)
    state = {k: v.clone() for k, v in once.state_dict().items()}
    expected = iwae_bound(model, guide_from(lambda: pyro.module("enc", once)), X,
                          num_samples=4000)
    pyro.clear_param_store()

    def updated():
        net = torch.nn.Linear(4, 4)
        net.load_state_dict(state)  # the first run registers these; later runs get them back
        return pyro.module("enc", net, update_module_params=True)

    got = iwae_bound(model, guide_from(updated), X, num_samples=4000)
    assert torch.allclose(got, expected, atol=0.1)  # IWAE_4000 of one q: Monte Carlo only
