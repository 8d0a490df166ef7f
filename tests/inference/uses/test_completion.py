"""VAE completion: channel tables by hand; MAP and Metropolis-within-Gibbs against quadrature."""

import math
import warnings

import numpy as np
import pytest
import torch

from inference.uses.completion import (
    map_complete,
    marginal_log_likelihood,
    metropolis_within_gibbs,
    observed_channel,
    pixel_posterior,
)
from ppl_models.vae import VAE


def test_observed_channel_by_hand():
    y = torch.tensor([0.0, 1.0, 1.0]).reshape(1, 1, 1, 3)
    missing = torch.tensor([False, False, True]).reshape(1, 1, 1, 3)
    table = observed_channel(y, missing, flip_rate=0.2)[0, 0, 0]
    expected = torch.tensor([[math.log(0.8), math.log(0.2)], [math.log(0.2), math.log(0.8)],
                             [0.0, 0.0]])
    assert torch.allclose(table, expected)
    exact = observed_channel(y)[0, 0, 0]
    assert exact[0, 0] == 0 and exact[0, 1] == -math.inf and exact[1, 1] == 0


def test_observed_channel_rejects_bad_input():
    with pytest.raises(ValueError, match="0/1"):
        observed_channel(torch.full((1, 1, 2, 2), 0.5))
    with pytest.raises(ValueError, match="flip_rate"):
        observed_channel(torch.zeros(1, 1, 2, 2), flip_rate=0.5)
    with pytest.raises(ValueError, match="bool"):
        observed_channel(torch.zeros(1, 1, 2, 2), missing=torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match=r"missing \[1, 1, 2, 1, 2\] does not broadcast"):
        observed_channel(torch.zeros(1, 1, 2, 2), missing=torch.ones(1, 1, 2, 1, 2, dtype=bool))
    with pytest.raises(ValueError, match=r"missing \[1, 1, 3, 2\] does not broadcast"):
        observed_channel(torch.zeros(1, 1, 2, 2), missing=torch.ones(1, 1, 3, 2, dtype=bool))


@pytest.fixture
def tiny_vae():
    """A random 1-latent VAE over 4 binary pixels: posteriors by quadrature are exact."""
    torch.manual_seed(3)
    vae = VAE((1, 1, 4), latent_dim=1, hidden=(8,)).double()
    with torch.no_grad():  # make the pixels depend strongly on z
        for p in vae.decoder.parameters():
            p.mul_(4)
    for p in vae.parameters():
        p.requires_grad_(False)
    return vae


def quadrature(vae, channel):
    """``p(x_i = 1 | y)`` and the posterior mode of z on a grid of 4001 points in [-8, 8]."""
    z = torch.linspace(-8, 8, 4001, dtype=torch.float64)[:, None, None]  # [G, 1, 1]
    log_post = marginal_log_likelihood(vae, z, channel)[:, 0] - 0.5 * z[:, 0, 0] ** 2
    weights = log_post.softmax(0)  # [G]
    probs = pixel_posterior(vae, z, channel)[:, 0]  # [G, 1, 1, 4]
    return (weights[:, None, None, None] * probs).sum(0), z[log_post.argmax(), 0, 0]


def test_pixel_posterior_is_bayes_rule(tiny_vae):
    y = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64).reshape(1, 1, 1, 4)
    channel = observed_channel(y, flip_rate=0.1)
    z = torch.tensor([[0.3]], dtype=torch.float64)
    pi = tiny_vae.decode(z).mean
    like_one = torch.where(y == 1, 0.9, 0.1)
    expected = pi * like_one / (pi * like_one + (1 - pi) * (1 - like_one))
    assert torch.allclose(pixel_posterior(tiny_vae, z, channel), expected, atol=1e-6)


def test_map_finds_the_posterior_mode(tiny_vae):
    y = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64).reshape(1, 1, 1, 4)
    channel = observed_channel(y, torch.tensor([False, False, True, True]).reshape(1, 1, 1, 4))
    _, z = map_complete(tiny_vae, channel, steps=200, lr=0.05)
    _, mode = quadrature(tiny_vae, channel)
    # grid spacing 0.004; Adam's last steps jitter by a fraction of lr = 0.05
    assert abs(float(z) - float(mode)) < 0.03, (float(z), float(mode))


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_map_search_runs_inside_a_caller_s_no_grad_block(tiny_vae, mode):
    # the search used to fail there: "element 0 of tensors does not require grad"
    y = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64).reshape(1, 1, 1, 4)
    channel = observed_channel(y, torch.tensor([False, False, True, True]).reshape(1, 1, 1, 4))
    _, expected = map_complete(tiny_vae, channel, steps=50, lr=0.05)
    with mode():
        _, z = map_complete(tiny_vae, channel, steps=50, lr=0.05)
    torch.testing.assert_close(z, expected)


@pytest.mark.parametrize("flip_rate", [0.0, 0.2])
def test_metropolis_within_gibbs_matches_quadrature(tiny_vae, flip_rate):
    y = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64).reshape(1, 1, 1, 4)
    missing = torch.tensor([False, True, False, True]).reshape(1, 1, 1, 4)
    channel = observed_channel(y, missing, flip_rate)
    exact, _ = quadrature(tiny_vae, channel)
    chains = 400  # independent chains of the same observation, averaged
    estimate, acceptance = metropolis_within_gibbs(
        tiny_vae, channel.expand(chains, -1, -1, -1, -1), num_steps=80, burn_in=30,
        generator=torch.Generator().manual_seed(0))
    assert 0.05 < acceptance <= 1
    # 400 chains x 50 correlated sweeps of Rao-Blackwellized probabilities: Monte Carlo
    # standard error about 0.01 per pixel; 0.03 allows 3 of them
    error = (estimate.mean(0) - exact[0]).abs().max()
    assert error < 0.03, (estimate.mean(0), exact)


def test_channel_shape_is_checked(tiny_vae):
    with pytest.raises(ValueError, match="log_channel"):
        map_complete(tiny_vae, torch.zeros(1, 1, 2, 2, 2))
    channel = observed_channel(torch.zeros(1, *tiny_vae.image_shape, dtype=torch.float64))
    for bad in (math.nan, math.inf):  # +inf is no log-likelihood either
        with pytest.raises(ValueError, match="log_channel must hold log-likelihoods"):
            map_complete(tiny_vae, channel.index_put((torch.tensor(0),),
                                                     torch.tensor(bad, dtype=torch.float64)))


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool, torch.float64])
def test_observed_channel_of_any_real_dtype_is_a_floating_table(dtype):
    y = torch.tensor([0.0, 1.0, 1.0, 0.0]).reshape(1, 1, 1, 4)
    table = observed_channel(y.to(dtype), flip_rate=0.1)
    assert table.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    expected = torch.tensor([[math.log(0.9), math.log(0.1)], [math.log(0.1), math.log(0.9)],
                             [math.log(0.1), math.log(0.9)], [math.log(0.9), math.log(0.1)]],
                            dtype=table.dtype)
    assert torch.allclose(table[0, 0, 0], expected)
    exact = observed_channel(y.to(dtype))[0, 0, 0]
    assert torch.equal(exact, torch.tensor([[0.0, -math.inf], [-math.inf, 0.0]] * 2,
                                           dtype=table.dtype)[[0, 1, 1, 0]])
    with pytest.raises(ValueError, match="flip_rate must be a finite number"):
        observed_channel(y, flip_rate="0.1")


def test_an_integer_channel_table_is_refused(tiny_vae):
    table = observed_channel(torch.zeros(1, *tiny_vae.image_shape, dtype=torch.float64))
    with pytest.raises(ValueError, match="log_channel must be a floating tensor.*int64"):
        map_complete(tiny_vae, table.clamp(min=-9).long(), steps=1)
    with pytest.raises(ValueError, match="log_channel must be a floating tensor"):
        metropolis_within_gibbs(tiny_vae, table.clamp(min=-9).long(), num_steps=1)


@pytest.mark.parametrize("likelihood,name", [("gaussian-fixed", "GaussianPixel"),
                                              ("categorical256", "Categorical256"),
                                              ("logistic-mixture", "DiscretizedLogisticMixture")])
def test_completion_refuses_a_vae_without_bernoulli_pixels(likelihood, name):
    torch.manual_seed(0)
    vae = VAE((1, 2, 2), latent_dim=1, hidden=(4,), likelihood=likelihood)
    channel = observed_channel(torch.ones(1, 1, 2, 2))
    for call in (lambda: map_complete(vae, channel, steps=1),
                 lambda: metropolis_within_gibbs(vae, channel, num_steps=1)):
        with pytest.raises(ValueError, match=f"must return a torch.distributions.Bernoulli.*"
                                             f"got {name}$"):
            call()


def test_chain_length_must_be_integers_and_numpy_integers_count_exactly(tiny_vae):
    y = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64).reshape(1, 1, 1, 4)
    channel = observed_channel(y)  # every pixel seen: p(x_i = 1 | y_i, z) = y_i exactly
    for bad in (1.5, True, 2.0):
        with pytest.raises(ValueError, match="burn_in must be an integer >= 0"):
            metropolis_within_gibbs(tiny_vae, channel, num_steps=4, burn_in=bad)
    with pytest.raises(ValueError, match="num_steps must be a positive integer"):
        metropolis_within_gibbs(tiny_vae, channel, num_steps=4.0)
    with pytest.raises(ValueError, match=r"burn_in must lie in 0..3"):
        metropolis_within_gibbs(tiny_vae, channel, num_steps=4, burn_in=4)
    mean, _ = metropolis_within_gibbs(tiny_vae, channel, num_steps=np.int64(4),
                                      burn_in=np.int32(1),
                                      generator=torch.Generator().manual_seed(0))
    assert torch.equal(mean, y)  # the average of 3 kept sweeps of y, divided by 3


def test_completion_checks_arguments_before_running_the_model(tiny_vae):
    channel = observed_channel(torch.ones(1, *tiny_vae.image_shape, dtype=torch.float64))
    for steps in (-5, 2.5, True):
        with pytest.raises(ValueError, match="steps must be an integer >= 0"):
            map_complete(tiny_vae, channel, steps=steps)
    for lr in ("0.1", math.inf, math.nan):
        with pytest.raises(ValueError, match="lr must be a finite number"):
            map_complete(tiny_vae, channel, steps=1, lr=lr)
    with pytest.raises(ValueError, match="lr must be > 0"):
        map_complete(tiny_vae, channel, steps=1, lr=0.0)
    with pytest.raises(ValueError, match="generator must be a torch.Generator or None, got int"):
        metropolis_within_gibbs(tiny_vae, channel, num_steps=2, generator=1)
    with pytest.raises(ValueError, match=r"'log_channel' has no datapoints \(shape \[0, 1, 1, 4, "):
        metropolis_within_gibbs(tiny_vae, channel[:0], num_steps=2)
    with pytest.raises(ValueError, match="log_channel is torch.float32 but the model's "
                                         "parameters are torch.float64"):
        map_complete(tiny_vae, channel.float(), steps=1)
    # steps=0 is the encoder's mean of the channel's most likely image (all ones here)
    _, z = map_complete(tiny_vae, channel, steps=0)
    assert torch.equal(z, tiny_vae.encode(torch.ones(1, *tiny_vae.image_shape,
                                                     dtype=torch.float64))[0])


def test_map_complete_names_a_diverging_lr_and_an_empty_batch(tiny_vae):
    y = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64).reshape(1, 1, 1, 4)
    channel = observed_channel(y)
    with pytest.raises(FloatingPointError, match=r"map_complete: .* at step \d+ of 5 "
                                                 r"\(lr=1e\+300\); lower lr"):
        map_complete(tiny_vae, channel, steps=5, lr=1e300)
    with pytest.raises(ValueError, match="log_channel"):
        map_complete(tiny_vae, channel[:0], steps=5)


def test_map_complete_never_returns_a_code_worse_than_its_start():
    # probe C finding 3: lr=1000 jumped to codes whose objective was ~5e4 nats below the
    # encoder's mean's (finite, Bernoulli logits) and returned them silently
    torch.manual_seed(0)
    vae = VAE((1, 4, 4), latent_dim=2, hidden=(16,)).eval()
    y = (torch.rand(3, 1, 4, 4) < 0.5).float()
    channel = observed_channel(y)

    def objective(z):  # log p(y | z) + log p(z), up to a constant, [batch]
        with torch.no_grad():
            log_lik = -torch.nn.functional.binary_cross_entropy_with_logits(
                vae.decode(z).logits.flatten(1), y.flatten(1), reduction="none").sum(1)
            return log_lik - 0.5 * (z ** 2).sum(1)

    _, start = map_complete(vae, channel, steps=0, progress=False)
    with pytest.warns(RuntimeWarning, match=r"map_complete: the search diverged \(lr=1000"):
        probs, z = map_complete(vae, channel, steps=20, lr=1000, progress=False)
    # float32 objectives of ~10 nats: 1e-5 is rounding
    assert bool((objective(z) >= objective(start) - 1e-5).all())
    assert torch.allclose(probs, pixel_posterior(vae, z, channel))
    with warnings.catch_warnings():  # a good lr: no warning, and an improvement
        warnings.simplefilter("error")
        _, z = map_complete(vae, channel, steps=20, lr=0.05, progress=False)
    assert bool((objective(z) > objective(start)).all())


def test_a_channel_offset_changes_nothing(tiny_vae):
    # a finite table of -3e38 for both values of the missing pixels (they tell nothing, as 0
    # does) made map_complete fail "at step 1" blaming lr, and the float32 pixel posterior
    # 0.5 there, the decoder's log-probabilities drowned in it
    vae = tiny_vae.float()
    y = torch.tensor([1.0, 0.0, 0.0, 1.0]).reshape(1, 1, 1, 4)
    missing = torch.tensor([False, True, False, True]).reshape(1, 1, 1, 4)
    channel = observed_channel(y, missing, flip_rate=0.1)
    shifted = torch.where(missing[..., None], -3e38, channel)
    z = torch.tensor([[0.7]])
    assert torch.allclose(pixel_posterior(vae, z, shifted), pixel_posterior(vae, z, channel))
    assert not torch.allclose(pixel_posterior(vae, z, channel), torch.tensor(0.5))
    probs, z_map = map_complete(vae, shifted, steps=50)
    expected_probs, expected_z = map_complete(vae, channel, steps=50)
    assert torch.allclose(z_map, expected_z) and torch.allclose(probs, expected_probs)
    chains = [metropolis_within_gibbs(vae, table, num_steps=4,
                                      generator=torch.Generator().manual_seed(0))
              for table in (shifted, channel)]
    assert torch.allclose(chains[0][0], chains[1][0]) and chains[0][1] == chains[1][1]


def test_map_complete_names_an_objective_not_finite_at_the_start(tiny_vae):
    # it was blamed on lr "at step 1", before any step had been taken
    with torch.no_grad():
        # every pixel's logit 1e308: finite parameters (infinite ones are refused by name),
        # an objective whose sum over the pixels overflows to -inf
        list(tiny_vae.decoder.parameters())[-1].fill_(1e308)
    channel = observed_channel(torch.zeros(1, *tiny_vae.image_shape, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"map_complete: the objective is .* at the start, "
                                         r"before any step \(lr plays no part yet\): the vae's "
                                         r"log-probabilities at the encoder's codes"):
        map_complete(tiny_vae, channel, steps=5)


def test_map_complete_started_at_the_optimum_does_not_warn_of_a_divergence():
    # Adam's first steps move every coordinate by about lr however small the gradient: a
    # search started at (or near) the MAP ends 1e-4 nats below its start, which was warned
    # about as a divergence ("-10.2944 < -10.2944"); a divergence is a drop beyond
    # DIVERGED_RTOL * (1 + |start|)
    import warnings

    from inference.uses.map_search import adam_map

    def objective(z):  # [rows, 2] -> [rows], maximum 0 at z = 0
        return -(z ** 2).sum(-1)

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        best = adam_map(torch.zeros(3, 2), objective, steps=5, lr=0.05, entry="test",
                        inputs="z", progress=False)
    assert float(best.abs().max()) == 0.0  # the start was the best code seen
