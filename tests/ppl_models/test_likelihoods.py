"""Pixel likelihoods: normalization, shapes, closed forms, gradients, bad input."""

import math

import pytest
import torch

from ppl_models.likelihoods import (
    LIKELIHOODS,
    Categorical256,
    DiscretizedLogisticMixture,
    bits_per_dim,
    discrete_log_likelihood_bound,
    make_likelihood,
)

LEVEL_VALUES = torch.arange(256, dtype=torch.float64) / 255


def total_mass(distribution) -> torch.Tensor:
    """Sum of P(k) over all 256 levels, per pixel."""
    log_p = torch.stack([distribution.log_prob(v.expand(distribution.batch_shape))
                         for v in LEVEL_VALUES])
    return log_p.logsumexp(0).exp()


@pytest.mark.parametrize("spread", [0.01, 1.0, 30.0])
def test_categorical_sums_to_one(spread):
    gen = torch.Generator().manual_seed(0)
    logits = spread * torch.randn(2, 1, 3, 3, 256, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(total_mass(Categorical256(logits)),
                               torch.ones(2, 1, 3, 3, dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("log_scale", [-9.0, -4.0, -1.0, 2.0])
def test_logistic_mixture_sums_to_one(log_scale):
    # Bins telescope exactly; only the mid-point fallback for bins under 1e-5 mass departs
    # from the exact CDF difference, by far less than 1e-5 in total.
    gen = torch.Generator().manual_seed(1)
    shape = (2, 1, 3, 3, 4)
    mixture = DiscretizedLogisticMixture(
        torch.randn(shape, generator=gen, dtype=torch.float64),
        torch.rand(shape, generator=gen, dtype=torch.float64) * 2.4 - 1.2,
        torch.full(shape, log_scale, dtype=torch.float64))
    mass = total_mass(mixture)
    assert float((mass - 1).abs().max()) < 1e-5, mass


def test_logistic_with_tiny_scale_picks_nearest_level():
    loc = torch.tensor([[2 * 100 / 255 - 1]], dtype=torch.float64)  # the centre of level 100
    mixture = DiscretizedLogisticMixture(torch.zeros(1, 1), loc, torch.full((1, 1), -7.0))
    mixture = DiscretizedLogisticMixture(mixture.logit_weights[None], mixture.means[None],
                                         mixture.log_scales[None])
    # the smallest scale allowed, e^-7, puts 4.3 scales between the centre and each bin
    # edge: 2 sigmoid(4.3) - 1 = 0.973 of the mass on level 100
    assert float(mixture.log_prob(torch.tensor([[100 / 255]]))) > math.log(0.97)
    assert float(mixture.mode) == pytest.approx(100 / 255)


def test_bernoulli_sums_to_one_and_gaussian_matches_closed_form():
    raw = torch.randn(5, 1, 1, 2, 2)
    bern = make_likelihood("bernoulli").distribution(raw)
    mass = bern.log_prob(torch.zeros(5, 1, 2, 2)).exp() + bern.log_prob(torch.ones(5, 1, 2, 2)).exp()
    torch.testing.assert_close(mass, torch.ones(5, 1, 2, 2))
    raw = torch.randn(5, 2, 1, 2, 2)
    x = torch.rand(5, 1, 2, 2)
    gauss = make_likelihood("gaussian-learned").distribution(raw)
    sigma = raw[:, 1].exp()
    expected = -0.5 * ((x - raw[:, 0]) / sigma) ** 2 - sigma.log() - 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(gauss.log_prob(x), expected)
    fixed = make_likelihood("gaussian-fixed", scale=0.2).distribution(raw[:, :1])
    torch.testing.assert_close(fixed.stddev, torch.full_like(x, 0.2))


@pytest.mark.parametrize("name", LIKELIHOODS)
def test_shapes_samples_and_gradients(name):
    likelihood = make_likelihood(name, num_mixtures=3)
    raw = torch.randn(4, 6, likelihood.params_per_pixel, 1, 5, 5, requires_grad=True)
    distribution = likelihood.distribution(raw)  # particles x batch x pixels
    assert distribution.batch_shape == (4, 6, 1, 5, 5)
    x = distribution.sample()
    assert x.shape == (4, 6, 1, 5, 5)
    if likelihood.discrete:
        likelihood.check(x)  # samples are valid data (levels or binary) for the same likelihood
    assert distribution.mean.shape == (4, 6, 1, 5, 5)
    # observed data without the particle dim broadcasts against the decoder output
    data = x[0].clamp(0, 1)
    log_p = distribution.to_event(3).log_prob(data)
    assert log_p.shape == (4, 6) and bool(torch.isfinite(log_p).all())
    log_p.sum().backward()
    assert raw.grad is not None and float(raw.grad.abs().sum()) > 0


def test_categorical_mean_is_expectation_over_levels():
    logits = torch.randn(3, 256, dtype=torch.float64)
    d = Categorical256(logits)
    expected = (logits.softmax(-1) * LEVEL_VALUES).sum(-1)
    torch.testing.assert_close(d.mean, expected)


def test_dequantization_bound_is_exact_for_piecewise_constant_density():
    # A density constant on each cell [k/256, (k+1)/256) with value 256 P(k) has
    # E_u[log p((k+u)/256)] - log 256 = log P(k): the bound holds with equality.
    probs = torch.softmax(torch.randn(256, dtype=torch.float64), 0)
    k = torch.tensor([0, 17, 255])
    u = torch.rand(1000, 3, dtype=torch.float64)
    cell = torch.floor((k + u) / 256 * 256).long()
    density_log = torch.log(256 * probs[cell])
    bound = discrete_log_likelihood_bound(density_log.mean(0), num_dims=1)
    torch.testing.assert_close(bound, probs[k].log())
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="unknown likelihood"):
        make_likelihood("poisson")
    with pytest.raises(ValueError, match=r"\[\.\.\., 256, C, H, W\]"):
        make_likelihood("categorical256").distribution(torch.zeros(2, 3, 1, 4, 4))
    with pytest.raises(ValueError, match="binary"):
        make_likelihood("bernoulli").check(torch.full((2, 1, 4, 4), 0.5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        make_likelihood("gaussian-fixed").check(torch.full((2, 1, 4, 4), 3.0))
    with pytest.raises(ValueError, match="k/255"):
        make_likelihood("logistic-mixture").check(torch.full((2, 1, 4, 4), 0.5 / 256))
