"""Pairs mixing float32 parameters with float64 data. DReG's lean step multiplied each draw's
gradient by weights computed in float64, and torch refused the hook's change of dtype ("hook
'hook' has changed the type of value") at fit's first step; the weights now take the draw's
dtype, and the gradients equal DReGLoss's (Pyro traces, two surrogates) on the same draws."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

from inference import SVIStep, fit

X = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.tensor(0.0), 1.5))
        pyro.sample("x", dist.Normal(z.unsqueeze(-1), 0.7).to_event(1), obs=x)


def guide(x):
    loc = pyro.param("loc", torch.linspace(-1, 1, 5))  # float32, the default dtype
    scale = pyro.param("scale", torch.ones(5), constraint=constraints.positive)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(loc, scale))


def gradients(lean: bool) -> dict:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    step = SVIStep(model, guide, loss="dreg", num_particles=4, lean=lean)
    step.loss_and_grads(model, guide, X)
    store = pyro.get_param_store()
    grads = {name: store.get_param(name).unconstrained().grad.clone() for name in store}
    assert step.lean == lean
    return grads


def test_dreg_s_lean_step_takes_float64_data_with_float32_parameters():
    lean, traced = gradients(True), gradients(False)
    for name in lean:
        assert lean[name].dtype == torch.float32
        torch.testing.assert_close(lean[name], traced[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("loss", ["iwae", "dreg"])
def test_fit_trains_the_mixed_pair(loss):
    pyro.clear_param_store()
    before = torch.linspace(-1, 1, 5)
    history = fit(model, guide, X, loss=loss, num_particles=4, epochs=2, batch_size=5,
                  lr=0.1, progress=False)
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in history)
    assert not torch.equal(pyro.param("loc").detach(), before)
