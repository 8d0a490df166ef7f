"""A network registered while Pyro's param store holds another tensor under its parameters'
names (a second instance of a model in one process): the steps used to train the store's
tensors, which the network does not compute with, and leave the network as it was. They now
refuse before any step, naming the parameter; legitimate uses of the store still train."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import elbo, fit
from inference.training.svi_step import Adam, SVIStep
from ppl_models import LinearGaussian
from ppl_models.vae import VAE

VAE_STALE = r"parameter 'decoder\$\$\$net\.0\.weight' \(and 7 more\).*pyro\.clear_param_store"


def small_vae(seed):
    torch.manual_seed(seed)
    return VAE((1, 4, 4), latent_dim=2, hidden=(3,))


def images(n=8):
    return (torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(2)) < 0.4).float()


def plain_pair(seed, update_module_params=False):
    """Plain functions registering two networks with ``pyro.module``, as Pyro's VAE tutorial."""
    torch.manual_seed(seed)
    encoder, decoder = torch.nn.Linear(16, 4), torch.nn.Linear(2, 16)

    def model(x):
        pyro.module("decoder", decoder, update_module_params=update_module_params)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder, update_module_params=update_module_params)
        with pyro.plate("data", x.shape[0]):
            h = encoder(x)
            pyro.sample("z", dist.Normal(h[:, :2], h[:, 2:].exp()).to_event(1))

    return torch.nn.ModuleList([encoder, decoder]), model, guide


def train(model, guide, x, epochs=1):
    return fit(model, guide, x, epochs=epochs, batch_size=4, lr=0.01, progress=False)


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def moved(module, before):
    return [not torch.equal(p, b) for p, b in zip(module.parameters(), before)]


@pytest.mark.parametrize("first_use", ["step", "elbo"])
def test_svi_step_refuses_a_second_vae_and_trains_it_after_clearing(first_use):
    x = images()
    first = small_vae(0)
    if first_use == "step":
        SVIStep(first.model, first.guide, Adam(0.01)).step(x)
    else:  # only evaluated: the estimator registers the networks too
        elbo(first.model, first.guide, x)
    second = small_vae(1)
    before = snapshot(second)
    step = SVIStep(second.model, second.guide, Adam(0.01))
    with pytest.raises(ValueError, match=VAE_STALE):
        step.step(x)
    assert not any(moved(second, before))
    pyro.clear_param_store()  # the fix the message names
    step.step(x)
    assert all(moved(second, before))


def test_fit_refuses_a_second_vae_and_trains_the_same_one_again():
    x = images()
    first = small_vae(0)
    train(first.model, first.guide, x)
    before = snapshot(first)
    train(first.model, first.guide, x)
    assert all(moved(first, before)), "training the same instance again must go on"
    second = small_vae(1)
    before = snapshot(second)
    with pytest.raises(ValueError, match=VAE_STALE):
        train(second.model, second.guide, x, epochs=2)
    assert not any(moved(second, before))


def test_fit_refuses_fresh_networks_of_plain_functions():
    x = images().reshape(8, 16)
    networks, model, guide = plain_pair(0)
    train(model, guide, x)
    before = snapshot(networks)
    train(model, guide, x)
    assert all(moved(networks, before))
    networks, model, guide = plain_pair(1)
    with pytest.raises(ValueError, match=r"parameter 'decoder\$\$\$weight' \(and 3 more\)"):
        train(model, guide, x)


def test_a_pyro_module_with_plain_parameters_is_refused():
    # PyroModule registers an nn.Parameter attribute with pyro.param and computes with its own
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    first = LinearGaussian(3, 2, seed=0)
    train(first.model, first.guide, x)
    second = LinearGaussian(3, 2, seed=1)
    with pytest.raises(ValueError, match=r"parameter 'weight' \(and 3 more\)"):
        train(second.model, second.guide, x)


def test_networks_that_take_the_stores_values_train():
    # a loaded param store with pyro.module(..., update_module_params=True): the networks
    # compute with the store's tensors from their first call, and those are trained
    x = images().reshape(8, 16)
    _, model, guide = plain_pair(0)
    train(model, guide, x)
    saved = pyro.get_param_store().get_state()
    pyro.clear_param_store()
    pyro.get_param_store().set_state(saved)
    loaded = pyro.param("decoder$$$weight").detach().clone()
    networks, model, guide = plain_pair(1, update_module_params=True)
    train(model, guide, x)
    decoder = networks[1]
    assert pyro.param("decoder$$$weight") is decoder.weight
    assert not torch.equal(decoder.weight, loaded)


def test_pyro_params_of_plain_tensors_train_again():
    # pyro.param("loc", torch.zeros(...)) passes a new tensor each call: the store's is used
    x = images().reshape(8, 16)

    def model(x):
        loc = pyro.param("loc", torch.zeros(16))
        shift = pyro.param("shift", torch.nn.Parameter(torch.zeros(16)))  # a new one each call
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc + shift, 1.0).to_event(1), obs=x)

    def guide(x):
        pass

    train(model, guide, x)
    before = [pyro.param(name).detach().clone() for name in ("loc", "shift")]
    train(model, guide, x)
    assert all(not torch.equal(pyro.param(name), b) for name, b in zip(("loc", "shift"), before))
