"""The free-bits ELBO: the floor, its zero gradient, lambda = 0 is the ELBO, scaling, fit."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceMeanField_ELBO

from inference import fit, make_loss, scale_data_plate, scale_latents
from inference.training.free_bits import FreeBitsELBO, free_bits_terms

LOC = torch.tensor([0.1, 2.0, -1.0])
LOG_SCALE = torch.tensor([0.0, 0.0, -0.5])


def kl_closed_form(loc, log_scale):
    """KL(N(loc, s^2) || N(0, 1)) per dimension."""
    return 0.5 * (loc ** 2 + torch.exp(2 * log_scale) - 1) - log_scale


def model(x):  # x: [batch, 3]
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(3), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)


def guide(x):
    loc = pyro.param("loc", LOC.clone())
    log_scale = pyro.param("log_scale", LOG_SCALE.clone())
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(loc + 0.1 * x, log_scale.exp()).to_event(1))


def traces(x):
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    return model_trace, guide_trace


def test_floor_is_active_below_lambda_and_its_gradient_is_zero():
    x = torch.zeros(4, 3)  # the guide's loc is the same for every datapoint
    model_trace, guide_trace = traces(x)
    kl = kl_closed_form(LOC, LOG_SCALE)  # [0.005, 2.0, 0.5 * (1 + e^-1 - 1) + 0.5 = 0.684]
    terms = free_bits_terms(model_trace, guide_trace, free_bits=0.6)
    assert torch.allclose(terms.kl["z"], kl, atol=1e-6)
    # dimension 0 sits below the floor: it costs exactly lambda; the others their KL
    expected = 4 * (0.6 + kl[1] + kl[2])
    assert torch.allclose(terms.penalty, expected, atol=1e-5), float(terms.penalty)
    store = pyro.get_param_store()
    loc, log_scale = store["loc"], store["log_scale"]
    grad_loc, grad_scale = torch.autograd.grad(terms.penalty, [loc, log_scale])
    # exactly zero below the floor (clamp passes no gradient); d KL / d loc = loc above it
    assert grad_loc[0] == 0 and grad_scale[0] == 0
    assert torch.allclose(grad_loc[1:], 4 * LOC[1:], atol=1e-5)
    assert torch.allclose(grad_scale[1:], 4 * (torch.exp(2 * LOG_SCALE[1:]) - 1), atol=1e-5)


def test_site_group_floors_the_total():
    model_trace, guide_trace = traces(torch.zeros(4, 3))
    total = float(kl_closed_form(LOC, LOG_SCALE).sum())  # 2.689
    below = free_bits_terms(model_trace, guide_trace, free_bits=3.0, group="site")
    above = free_bits_terms(model_trace, guide_trace, free_bits=1.0, group="site")
    assert abs(below.penalty.detach().item() - 4 * 3.0) < 1e-5
    assert abs(above.penalty.detach().item() - 4 * total) < 1e-5


@pytest.mark.parametrize("factor", [1.0, 7.5])
def test_lambda_zero_is_the_analytic_kl_elbo_with_its_gradients(factor):
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    results = []
    for objective in (FreeBitsELBO(0.0), TraceMeanField_ELBO()):
        pyro.clear_param_store()
        pyro.set_rng_seed(3)
        with scale_data_plate(factor):  # as fit scales a minibatch
            loss = objective.loss_and_grads(model, guide, x)
        store = pyro.get_param_store()
        results.append((loss, store["loc"].unconstrained().grad.clone()))
    (fb_loss, fb_grad), (mf_loss, mf_grad) = results
    # same draw of z, same closed-form KL: equal up to float32 rounding
    assert abs(fb_loss - mf_loss) < 1e-4 * abs(mf_loss), (fb_loss, mf_loss)
    assert torch.allclose(fb_grad, mf_grad, rtol=1e-5, atol=1e-5)


def test_warmup_scales_the_floored_penalty():
    x = torch.zeros(4, 3)
    with scale_latents(0.25):
        model_trace, guide_trace = traces(x)
    full = free_bits_terms(*traces(x), free_bits=0.6).penalty
    scaled = free_bits_terms(model_trace, guide_trace, free_bits=0.6).penalty
    assert torch.allclose(scaled, 0.25 * full, atol=1e-6)


def test_make_loss_and_fit_accept_free_bits():
    assert make_loss("elbo-free-bits", free_bits=0.5).free_bits == 0.5
    objective = FreeBitsELBO(0.5)
    assert make_loss(objective) is objective
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0)) * 1.5
    history = fit(model, guide, x, loss=objective, epochs=30, batch_size=16, lr=0.05,
                  progress=False)
    first, last = history[0]["train_loss"], history[-1]["train_loss"]
    # 120 Adam steps on a 3-d linear-Gaussian pair: the loss falls by several nats
    assert last < first - 1.0, (first, last)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="free_bits"):
        FreeBitsELBO(-1.0)
    with pytest.raises(ValueError, match="group"):
        FreeBitsELBO(0.1, group="layer")
    for value in (True, float("inf"), float("nan"), "0.1"):
        with pytest.raises(ValueError, match="free_bits must be a finite number"):
            FreeBitsELBO(value)
    for value in (2.5, 0, True):
        with pytest.raises(ValueError, match="num_particles must be a positive integer"):
            FreeBitsELBO(0.1, num_particles=value)

    def discrete_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Bernoulli(0.5 * torch.ones(x.shape[0], 3)).to_event(1))

    with pytest.raises(NotImplementedError, match="reparameterized"):
        FreeBitsELBO(0.1).loss(model, discrete_guide, torch.zeros(2, 3))


def test_a_full_covariance_guide_against_a_diagonal_prior_is_compared_per_site():
    # a MultivariateNormal guide and a Normal(...).to_event(1) prior: their elements do not
    # line up, so the KL is one single-sample term per datapoint (it used to broadcast the
    # two log densities to [batch, batch])
    def mvn_guide(x):
        loc = pyro.param("loc", LOC.clone())
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(loc + 0.1 * x, scale_tril=torch.eye(3)))

    pyro.clear_param_store()
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    guide_trace = poutine.trace(mvn_guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    z = guide_trace.nodes["z"]["value"]
    expected = (dist.MultivariateNormal(LOC + 0.1 * x, scale_tril=torch.eye(3)).log_prob(z)
                - dist.Normal(0.0, 1.0).log_prob(z).sum(-1)).mean()
    terms = free_bits_terms(model_trace, guide_trace, 0.0)
    assert terms.kl["z"].shape == ()
    torch.testing.assert_close(terms.kl["z"], expected)
