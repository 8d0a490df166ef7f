"""DReG with a guide whose second latent depends on the first, q(z1) q(z2 | z1).

Holding the guide's parameters fixed in ``log q`` must keep ``z1``'s path through
``q(z2 | z1)``; detaching each site's distribution arguments cut it, and gave the gradient of
``m1`` the wrong sign (found by a probe against a hand-written DReG surrogate).
"""

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import DReGLoss
from inference.training.svi_step import SVIStep

K = 5
NAMES = ["m1", "lt1", "a", "c", "lt2"]
X = torch.tensor([0.3, -1.2, 0.8, 2.0])


def model(x):
    with pyro.plate("data", x.shape[0]):
        z1 = pyro.sample("z1", dist.Normal(0.0, 1.0))
        z2 = pyro.sample("z2", dist.Normal(0.5 * z1, 1.0))
        pyro.sample("x", dist.Normal(z1 + z2, 0.5), obs=x)


def guide(x):
    m1, lt1 = pyro.param("m1", torch.tensor(0.3)), pyro.param("lt1", torch.tensor(-0.2))
    a, c = pyro.param("a", torch.tensor(0.4)), pyro.param("c", torch.tensor(0.1))
    lt2 = pyro.param("lt2", torch.tensor(-0.3))
    with pyro.plate("data", x.shape[0]):
        z1 = pyro.sample("z1", dist.Normal(m1 + 0.2 * x, lt1.exp()))
        pyro.sample("z2", dist.Normal(a * z1 + c, lt2.exp()))


def hand_written_dreg_grads(seed: int) -> dict:
    """Tucker et al.'s surrogate on the draws Pyro makes (z1's K x 4 noise, then z2's)."""
    pyro.clear_param_store()
    guide(X)
    p = {n: pyro.param(n) for n in NAMES}
    fixed = {n: v.detach() for n, v in p.items()}
    torch.manual_seed(seed)
    eps1, eps2 = torch.randn(K, 4), torch.randn(K, 4)
    z1 = p["m1"] + 0.2 * X + p["lt1"].exp() * eps1
    z2 = p["a"] * z1 + p["c"] + p["lt2"].exp() * eps2
    log_q = (dist.Normal(fixed["m1"] + 0.2 * X, fixed["lt1"].exp()).log_prob(z1)
             + dist.Normal(fixed["a"] * z1 + fixed["c"], fixed["lt2"].exp()).log_prob(z2))
    log_p = (dist.Normal(0.0, 1.0).log_prob(z1) + dist.Normal(0.5 * z1, 1.0).log_prob(z2)
             + dist.Normal(z1 + z2, 0.5).log_prob(X))
    log_w = log_p - log_q
    surrogate = -(torch.softmax(log_w.detach(), 0) ** 2 * log_w).sum()
    return dict(zip(NAMES, torch.autograd.grad(surrogate, list(p.values()))))


def library_grads(seed: int, run) -> dict:
    pyro.clear_param_store()
    guide(X)
    torch.manual_seed(seed)
    run()
    return {n: pyro.param(n).unconstrained().grad for n in NAMES}


@pytest.mark.parametrize("seed", [1, 2])
def test_dreg_keeps_the_path_of_an_earlier_latent(seed):
    expected = hand_written_dreg_grads(seed)
    for run in (lambda: DReGLoss(K).loss_and_grads(model, guide, X),
                lambda: SVIStep(model, guide, loss="dreg", num_particles=K)
                .loss_and_grads(model, guide, X)):
        got = library_grads(seed, run)
        for name in NAMES:
            torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss", ["iwae", "dreg"])
def test_weighted_fit_of_a_model_that_subsamples_its_own_plate(loss):
    # the model draws 20 of 200 rows itself: the guide's z must be scored against the same
    # rows (the lean scorer used to let the model draw other rows, and the guide learned to
    # ignore the data: slope 0.0 instead of the posterior's 0.671)
    def sub_model(x):
        with pyro.plate("data", len(x), subsample_size=20) as i:
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 0.7), obs=x[i])

    def sub_guide(x):
        slope = pyro.param("slope", torch.tensor(0.0))
        scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
        with pyro.plate("data", len(x), subsample_size=20) as i:
            pyro.sample("z", dist.Normal(slope * x[i], scale))

    from inference import fit

    pyro.clear_param_store()
    torch.manual_seed(0)
    x = torch.randn(200) * 1.49 ** 0.5
    fit(sub_model, sub_guide, x, loss=loss, num_particles=5, epochs=150, batch_size=200,
        lr=0.05, seed=0, progress=False)
    # exact posterior N(x / 1.49, 0.573^2), in the guide's family and so the optimum of both
    # objectives. DReG's gradient vanishes there and it converges (sd of the final slope over
    # seeds below 3e-4); IWAE's final iterate keeps Adam's noise (sd 0.068 over 316 seeds, a
    # probe of 2026-11-29): 0.25 is 3.7 sd, and the failure this guards against gave 0.0
    slope, scale = float(pyro.param("slope").detach()), float(pyro.param("scale").detach())
    if loss == "dreg":
        assert abs(slope - 1 / 1.49) < 0.01 and abs(scale - (0.49 / 1.49) ** 0.5) < 0.01
    else:
        assert abs(slope - 1 / 1.49) < 0.25
