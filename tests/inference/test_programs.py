"""Every entry point that takes a Pyro program names a module passed instead of its method."""

import pytest
import torch

from inference import SVIStep, elbo, fit, iwae_bound, log_importance_weights, posterior_means
from ppl_models.vae import VAE


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return VAE((1, 4, 4), latent_dim=2, hidden=(8,))


CALLS = {
    "iwae_bound": lambda m, x: iwae_bound(m, m.guide, x, num_samples=2),
    "elbo": lambda m, x: elbo(m, m.guide, x),
    "log_importance_weights": lambda m, x: log_importance_weights(m, m.guide, x, num_samples=2),
    "fit": lambda m, x: fit(m, m.guide, x, epochs=1, progress=False),
    "SVIStep": lambda m, x: SVIStep(m, m.guide),
    "posterior_means": lambda m, x: posterior_means(m, x),
}


@pytest.mark.parametrize("call", list(CALLS), ids=list(CALLS))
def test_a_module_without_forward_is_named(vae, call):
    x = torch.bernoulli(torch.full((3, 1, 4, 4), 0.5))
    name = "guide" if call == "posterior_means" else "model"
    with pytest.raises(TypeError, match=f"{name} is a VAE module without forward.*"
                                        f"{name}=module.{name}"):
        CALLS[call](vae, x)


def test_a_module_with_forward_is_a_program():
    """A PyroModule whose forward is the model runs as one."""
    import pyro
    import pyro.distributions as dist
    from pyro.nn import PyroModule

    class Model(PyroModule):
        def forward(self, x):
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(0.0, 1.0))
                pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    assert iwae_bound(Model(), guide, torch.zeros(3), num_samples=4).shape == (3,)
