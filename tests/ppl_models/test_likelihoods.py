"""Pixel likelihoods: normalization, closed forms, shapes, sampling, gradients, bad input."""

import math

import pyro
import pytest
import torch
from torch.nn import functional as F

from inference import bits_per_dim, dequantization_correction_nats, discrete_log_likelihood_bound
from ppl_models.likelihoods import (
    LEVELS,
    LIKELIHOODS,
    LOG_SCALE_MIN,
    BernoulliPixel,
    Categorical256,
    DiscretizedLogisticMixture,
    GaussianPixel,
    make_likelihood,
    uniform_dequantize,
)

F64 = torch.float64
LEVEL_VALUES = torch.arange(LEVELS, dtype=F64) / 255  # every level k / 255


def log_probs_over_levels(distribution) -> torch.Tensor:
    """``log P(k)`` for every level through the public ``log_prob``: ``[256, *batch_shape]``."""
    values = LEVEL_VALUES.to(distribution.mean.dtype)
    values = values.reshape(LEVELS, *(1,) * len(distribution.batch_shape))
    return distribution.log_prob(values.expand(LEVELS, *distribution.batch_shape))


def random_mixture(shape, log_scale_range, seed, dtype=F64):
    gen = torch.Generator().manual_seed(seed)
    low, high = log_scale_range
    return DiscretizedLogisticMixture(
        3 * torch.randn(shape, generator=gen, dtype=dtype),
        torch.rand(shape, generator=gen, dtype=dtype) * 3 - 1.5,  # some centres off the range
        torch.rand(shape, generator=gen, dtype=dtype) * (high - low) + low)


@pytest.mark.parametrize("spread", [1e-3, 1.0, 50.0])
def test_categorical256_sums_to_one(spread):
    logits = spread * torch.randn(2, 1, 3, 3, 256, generator=torch.Generator().manual_seed(0),
                                  dtype=F64)
    mass = log_probs_over_levels(Categorical256(logits)).logsumexp(0).exp()
    # exact normalization: only float64 rounding of a 256-term logsumexp remains (~1e-15)
    torch.testing.assert_close(mass, torch.ones_like(mass), atol=1e-12, rtol=0)


@pytest.mark.parametrize("log_scale_range", [(-30.0, -6.0), (-7.0, 3.0), (2.0, 30.0)])
def test_logistic_mixture_sums_to_one_including_extreme_scales(log_scale_range):
    # log-scales beyond [-7, 3] are clamped; the bins telescope exactly, so only float64
    # rounding of 256 log-space terms remains (~1e-14)
    mixture = random_mixture((2, 1, 3, 3, 4), log_scale_range, seed=1)
    mass = log_probs_over_levels(mixture).logsumexp(0).exp()
    torch.testing.assert_close(mass, torch.ones_like(mass), atol=1e-10, rtol=0)


def test_logistic_mixture_sums_to_one_in_float32_with_sharp_components_on_bin_edges():
    """Components of the smallest scale (log-scale -7) at the edges of the data range and on
    the edge between levels 127 and 128: the shared edge of two bins was computed twice,
    and float32 rounding (~6e-8, times 1/s = e^7) lost 1.5e-5 of the mass."""
    means = torch.tensor([[-1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1 / 255, -3 / 255, 0.5]])
    mixture = DiscretizedLogisticMixture(torch.zeros(3, 3), means, torch.full((3, 3), -7.0))
    levels = (torch.arange(256.0) / 255)[:, None].expand(256, 3)
    total = mixture.log_prob(levels).logsumexp(0)
    assert total.dtype == torch.float32
    assert float(total.abs().max()) < 1e-6  # float32 rounding of 256 terms


def test_logistic_mixture_matches_the_plain_cdf_difference():
    # where the bin masses are far from underflow, log(sigmoid(u) - sigmoid(l)) in float64 is
    # accurate to ~1e-13 relative: an independent closed form of the factorized log-space one
    mixture = random_mixture((5, 3), (-3.0, 1.0), seed=2)
    k = torch.arange(LEVELS, dtype=F64)[:, None, None]  # [256, 1, 1]
    y = 2 * k / 255 - 1
    scale = mixture.log_scales.exp()
    cdf = lambda edge: torch.sigmoid((edge - mixture.means) / scale)  # noqa: E731
    upper = torch.where(k == 255, torch.ones_like(y), y + 1 / 255)
    lower = torch.where(k == 0, -torch.ones_like(y), y - 1 / 255)
    mass = torch.where(k == 255, 1.0, cdf(upper)) - torch.where(k == 0, 0.0, cdf(lower))
    expected = (mixture.logit_weights.softmax(-1) * mass).sum(-1).log()
    torch.testing.assert_close(log_probs_over_levels(mixture), expected, rtol=1e-9, atol=0)


def test_logistic_tail_log_probs_are_exact_in_float32():
    # centre on level 0 with the smallest scale, observe level 200: the bin mass is ~e^-1680,
    # far below float32's range, yet the log is a moderate number that float32 gets to its
    # ~1e-7 relative precision (1e-5 leaves room for the exp/log of the scale)
    args = (torch.zeros(1, 1), torch.full((1, 1), -1.0), torch.full((1, 1), LOG_SCALE_MIN))
    x = torch.tensor([200 / 255])
    low = DiscretizedLogisticMixture(*args).log_prob(x)
    high = DiscretizedLogisticMixture(*(a.double() for a in args)).log_prob(x.double())
    assert bool(torch.isfinite(low).all()) and float(high) < -1000
    torch.testing.assert_close(low.double(), high, rtol=1e-5, atol=0)


@pytest.mark.parametrize("offset", [0.0, 0.3])
def test_logistic_with_one_tiny_component_puts_its_mass_on_the_nearest_level(offset):
    # the mean sits `offset` bins above level 100's centre; log-scale -50 is clamped to -7
    loc = 2 * (100 + offset) / 255 - 1
    mixture = DiscretizedLogisticMixture(torch.zeros(1, 1, dtype=F64),
                                         torch.full((1, 1), loc, dtype=F64),
                                         torch.full((1, 1), -50.0, dtype=F64))
    log_p = log_probs_over_levels(mixture)[:, 0]
    assert int(log_p.argmax()) == 100 and float(mixture.mode) == pytest.approx(100 / 255)
    # bin edges at 0.5 - offset and -0.5 - offset bins from the mean, one bin = (2/255) / s
    bin_in_scales = (2 / 255) / math.exp(LOG_SCALE_MIN)  # 8.6
    share = (torch.sigmoid(torch.tensor((0.5 - offset) * bin_in_scales, dtype=F64))
             - torch.sigmoid(torch.tensor((-0.5 - offset) * bin_in_scales, dtype=F64)))
    # float64 closed form of the same quantity: agreement to rounding
    assert float(log_p[100].exp()) == pytest.approx(float(share), rel=1e-10)
    if offset == 0:
        # the smallest scale, e^-7, keeps 2 sigmoid(4.3) - 1 = 0.973 on the level itself and
        # all but 2 sigmoid(-12.9) = 5e-6 on it and its two neighbours
        assert float(log_p[100].exp()) > 0.97
        assert float(log_p[99:102].exp().sum()) > 1 - 1e-5


def test_bernoulli_sums_to_one_and_is_stable_for_extreme_logits():
    logits = torch.tensor([-200.0, -3.0, 0.0, 2.5, 200.0])
    pixel = BernoulliPixel(logits=logits)
    mass = pixel.log_prob(torch.zeros(5)).exp() + pixel.log_prob(torch.ones(5)).exp()
    torch.testing.assert_close(mass, torch.ones(5))  # float32 default tolerance, 1e-5
    # log sigmoid(l) for x = 1: exactly -200 at l = -200 (a naive log(sigmoid) gives -inf)
    expected = F.logsigmoid(logits)
    torch.testing.assert_close(pixel.log_prob(torch.ones(5)), expected)
    assert float(pixel.log_prob(torch.ones(5))[0]) == pytest.approx(-200.0)
    torch.testing.assert_close(pixel.mean, torch.sigmoid(logits))


@pytest.mark.parametrize("logits_shape, value_shape", [
    ((3, 4, 5), (4, 5)),  # particles broadcast over data: scored in place
    ((5,), (3, 4, 5)),  # one set of logits for every datapoint: a new buffer
    ((4, 1), (4, 5)),  # logits broadcast inside the pixels
])
def test_bernoulli_log_prob_and_gradient_match_the_cross_entropy(logits_shape, value_shape):
    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(logits_shape, generator=gen, dtype=F64)).requires_grad_()
    # intensities in [0, 1] (validation off): the cross-entropy, as Pyro's Bernoulli scores it
    value = torch.rand(value_shape, generator=gen, dtype=F64)
    ours = BernoulliPixel(logits=logits, validate_args=False).log_prob(value)
    reference = -F.binary_cross_entropy_with_logits(
        logits.expand(ours.shape), value.expand(ours.shape), reduction="none")
    torch.testing.assert_close(ours, reference)  # float64: agreement to rounding
    weights = torch.randn(ours.shape, generator=gen, dtype=F64)
    (grad,) = torch.autograd.grad((weights * ours).sum(), logits)
    (expected,) = torch.autograd.grad((weights * reference).sum(), logits)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("logits_shape, value_shape", [((3, 4, 5), (4, 5)), ((4, 5), (4, 5))])
def test_bernoulli_s_own_backward_passes_gradcheck_to_second_order(logits_shape, value_shape):
    # the scoring's one-pass backward (grad * (x - sigmoid(logits))), the data's gradient
    # (grad * logits) and the differentiable form used under create_graph
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(logits_shape, generator=gen, dtype=F64, requires_grad=True)
    value = torch.rand(value_shape, generator=gen, dtype=F64, requires_grad=True)

    def score(logits, value):
        return BernoulliPixel(logits=logits, validate_args=False).log_prob(value)

    assert torch.autograd.gradcheck(score, (logits, value))
    assert torch.autograd.gradgradcheck(score, (logits, value))


@pytest.mark.parametrize("logits_shape, value_shape, event_dims", [
    ((7, 4, 1, 3, 5), (4, 1, 3, 5), 3),  # particles broadcast over data (the estimators')
    ((7, 4, 1, 3, 5), (7, 4, 1, 3, 5), 3),  # one value per particle
    ((7, 4, 1, 3, 5), (1, 4, 1, 3, 5), 2),  # a leading dim of one; not all pixel dims
    ((4, 15), (4, 15), 1),  # no particle dim (one-sample ELBO)
    ((4, 15), (15,), 1),  # the value broadcast over the rows
])
@pytest.mark.parametrize("slab_bytes", [1, 100, 1 << 20])  # 1 row, a few rows, all rows
def test_bernoulli_summed_log_prob_is_log_prob_summed(monkeypatch, logits_shape, value_shape,
                                                      event_dims, slab_bytes):
    """The slab-wise sum (no full-size buffer) against ``log_prob(...).sum``, across slab
    boundaries that do and do not divide the leading dim (float64: agreement to rounding)."""
    import ppl_models.likelihoods as likelihoods

    monkeypatch.setattr(likelihoods, "SLAB_BYTES", slab_bytes)
    gen = torch.Generator().manual_seed(2)
    logits = 4 * torch.randn(logits_shape, generator=gen, dtype=F64)
    value = (torch.rand(value_shape, generator=gen, dtype=F64) < 0.4).to(F64)
    pixel = BernoulliPixel(logits=logits, validate_args=False)
    with torch.no_grad():
        summed = pixel.summed_log_prob(value, event_dims)
    expected = pixel.log_prob(value).sum(tuple(range(-event_dims, 0)))
    assert summed.shape == expected.shape
    torch.testing.assert_close(summed, expected)


def test_bernoulli_summed_log_prob_keeps_gradients_and_mixed_dtypes_of_log_prob():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 4, 5, generator=gen, dtype=F64, requires_grad=True)
    value = (torch.rand(4, 5, generator=gen, dtype=F64) < 0.5).to(F64)
    pixel = BernoulliPixel(logits=logits, validate_args=False)
    summed = pixel.summed_log_prob(value, 1)
    (grad,) = torch.autograd.grad(summed.sum(), logits)
    (expected,) = torch.autograd.grad(pixel.log_prob(value).sum(), logits)
    torch.testing.assert_close(grad, expected)
    # float32 logits with float64 data: what log_prob gives, in its dtype
    pixel32 = BernoulliPixel(logits=logits.detach().float(), validate_args=False)
    with torch.no_grad():
        mixed = pixel32.summed_log_prob(value, 1)
    reference = pixel32.log_prob(value).sum(-1)
    assert mixed.dtype == reference.dtype
    torch.testing.assert_close(mixed, reference)


def test_bernoulli_weights_are_the_same_summed_a_slab_at_a_time_or_by_log_prob(monkeypatch):
    """The estimators score a VAE's pixels through ``summed_log_prob`` (``inference.densities``):
    its log weights on the same draws as with that protocol switched off."""
    import inference.weights
    from inference import log_importance_weights
    from ppl_models import VAE

    torch.manual_seed(0)
    vae = VAE((1, 6, 5), latent_dim=3, hidden=(8,))
    x = (torch.rand(4, 1, 6, 5) < 0.5).float()
    scored = []
    for summed in (True, False):
        if not summed:
            monkeypatch.setattr(inference.weights, "summed_log_density", lambda fn, value: None)
        pyro.set_rng_seed(3)
        with pyro.validation_enabled(False):
            scored.append(log_importance_weights(vae.model, vae.guide, x, num_samples=30,
                                                 chunk_size=7))
    torch.testing.assert_close(scored[0], scored[1], rtol=1e-5, atol=1e-5)


def test_gaussian_log_prob_matches_the_closed_form():
    gen = torch.Generator().manual_seed(3)
    loc, log_scale = torch.randn(2, 4, 1, 3, 3, generator=gen, dtype=F64)
    x = torch.rand(4, 1, 3, 3, generator=gen, dtype=F64)

    def closed_form(sigma):
        return -0.5 * ((x - loc) / sigma) ** 2 - torch.log(sigma) - 0.5 * math.log(2 * math.pi)

    # float64 and the same arithmetic: agreement to rounding (assert_close float64 default)
    torch.testing.assert_close(GaussianPixel(loc, 0.2).log_prob(x),
                               closed_form(torch.tensor(0.2, dtype=F64)))
    learned = GaussianPixel.from_log_scale(loc, log_scale)
    torch.testing.assert_close(learned.log_prob(x), closed_form(log_scale.exp()))
    clamped = GaussianPixel.from_log_scale(loc, torch.full_like(loc, -100.0))
    torch.testing.assert_close(clamped.scale, torch.full_like(loc, math.exp(LOG_SCALE_MIN)))
    assert learned.has_rsample and learned.rsample((7,)).shape == (7, 4, 1, 3, 3)


def test_means_are_expectations_over_levels():
    gen = torch.Generator().manual_seed(4)
    logits = 3 * torch.randn(3, 256, generator=gen, dtype=F64)
    categorical = Categorical256(logits)
    # same float64 sums in a different order: agreement to rounding
    torch.testing.assert_close(categorical.mean, (logits.softmax(-1) * LEVEL_VALUES).sum(-1))
    torch.testing.assert_close(categorical.mode, logits.argmax(-1).to(F64) / 255)
    mixture = random_mixture((3, 2), (-5.0, 0.0), seed=5)
    probs = log_probs_over_levels(mixture).exp()  # [256, 3]
    torch.testing.assert_close(mixture.mean, (probs * LEVEL_VALUES[:, None]).sum(0))
    torch.testing.assert_close(mixture.mode, probs.argmax(0).to(F64) / 255)


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_shapes_samples_and_gradients_with_a_particle_dim(name):
    likelihood = make_likelihood(name, **({"num_mixtures": 3} if name == "logistic-mixture"
                                          else {}))
    raw = torch.randn(4, 6, likelihood.params_per_pixel, 1, 5, 5, requires_grad=True)
    pixels = likelihood.distribution(raw)  # [particles, batch, P, C, H, W] -> [4, 6, 1, 5, 5]
    assert pixels.batch_shape == (4, 6, 1, 5, 5) and pixels.event_shape == ()
    assert type(pixels.expand((2, 4, 6, 1, 5, 5))) is type(pixels)
    assert pixels.mean.shape == (4, 6, 1, 5, 5)
    draws = pixels.sample((3,))
    assert draws.shape == (3, 4, 6, 1, 5, 5)
    if likelihood.discrete:
        likelihood.check(draws)  # samples are valid data: binary pixels or levels k/255
        likelihood.check(pixels.mode)  # so is the mode, and the mean lies in [0, 1]
        mean = pixels.mean.detach()
        assert 0 <= float(mean.min()) and float(mean.max()) <= 1
    data = draws[0, 0].clamp(0, 1)  # [batch, C, H, W]: no particle dim, broadcasts
    log_p = pixels.to_event(3).log_prob(data)
    assert log_p.shape == (4, 6) and bool(torch.isfinite(log_p).all())
    log_p.sum().backward()
    # every raw parameter slot (mean, log-scale, each mixture logit/mean/log-scale, ...)
    # receives gradient
    per_slot = raw.grad.abs().sum(dim=(0, 1, 3, 4, 5))
    assert bool((per_slot > 0).all()), per_slot


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_flat_decoder_output_for_vector_data(name):
    likelihood = make_likelihood(name)
    flat = torch.randn(3, 2, likelihood.params_per_pixel * 7)  # [K, batch, P * D]
    pixels = likelihood.distribution_from_flat(flat, (7,))
    structured = likelihood.distribution(flat.unflatten(-1, (likelihood.params_per_pixel, 7)),
                                         pixel_ndim=1)
    assert pixels.batch_shape == (3, 2, 7)
    x = structured.sample()[0].clamp(0, 1)  # [batch, D]
    torch.testing.assert_close(pixels.to_event(1).log_prob(x),
                               structured.to_event(1).log_prob(x))  # identical arithmetic


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_inside_pyro_sample_with_a_plate(name):
    likelihood = make_likelihood(name)
    raw = torch.randn(5, likelihood.params_per_pixel, 1, 2, 2)
    x = likelihood.distribution(raw).sample()
    if not likelihood.discrete:
        x = uniform_dequantize(torch.randint(0, 256, x.shape).float() / 255)

    def model():
        with pyro.plate("data", 5):
            pyro.sample("x", likelihood.distribution(raw).to_event(3), obs=x)

    trace = pyro.poutine.trace(model).get_trace()
    trace.compute_log_prob()
    assert trace.nodes["x"]["log_prob"].shape == (5,)


def test_dequantization_bound_is_exact_for_a_piecewise_constant_density():
    # p(y) = 256 P(k) on each cell [k/256, (k+1)/256) is constant there, so Jensen is tight:
    # -log P(k) = E_u[-log p((k+u)/256)] + D log 256, here with D = 3 pixels
    gen = torch.Generator().manual_seed(6)
    probs = torch.softmax(2 * torch.randn(3, 256, generator=gen, dtype=F64), -1)
    k = torch.tensor([0, 17, 255])
    y = uniform_dequantize(k.to(F64)[None].expand(200, 3) / 255, gen)  # [200 draws, 3 pixels]
    assert bool(((y >= k / 256) & (y < (k + 1) / 256)).all())
    cell = torch.floor(y * 256).long()
    log_density = torch.log(256 * probs.gather(1, cell.T)).T.sum(-1)  # [200], log p(y)
    nll = -probs[torch.arange(3), k].log().sum()
    # the density is constant on the cells, so every draw gives the same value: equality to
    # float64 rounding
    torch.testing.assert_close(nll, (-log_density).mean() + dequantization_correction_nats(3))
    torch.testing.assert_close(-nll, discrete_log_likelihood_bound(log_density.mean(), 3))


def test_dequantization_bound_holds_for_a_gaussian_density():
    # P(k) = integral of N(0.4, 0.05^2) over cell k; E_u[log p] in closed form from the cell's
    # centre c and width h: E[(y - mu)^2] = (c - mu)^2 + h^2 / 12. Jensen: log P(k) >= bound.
    mu, sigma, h = 0.4, 0.05, 1 / 256
    normal = torch.distributions.Normal(torch.tensor(mu, dtype=F64), sigma)
    k = torch.arange(60, 150, dtype=F64)  # cells within 3 sigma, where P(k) is far from 0
    log_mass = torch.log(normal.cdf((k + 1) * h) - normal.cdf(k * h))
    centre = (k + 0.5) * h
    mean_log_density = (-((centre - mu) ** 2 + h**2 / 12) / (2 * sigma**2)
                        - math.log(sigma) - 0.5 * math.log(2 * math.pi))
    gap = log_mass - discrete_log_likelihood_bound(mean_log_density, 1)
    assert bool((gap > 0).all())
    # the Jensen gap is Var_u[log p] / 2 + O(Var^2) with Var ~ (slope h)^2 / 12, slope =
    # |c - mu| / sigma^2: at most 3.4e-3 nats here; the neglected terms are < 1% of it (or
    # < 1e-6 nats near the mode where the slope vanishes)
    predicted = ((centre - mu) / sigma**2 * h) ** 2 / 24
    torch.testing.assert_close(gap, predicted, rtol=0.01, atol=1e-6)


def test_units():
    assert dequantization_correction_nats(784) == pytest.approx(784 * math.log(256))
    assert dequantization_correction_nats(10, levels=2) == pytest.approx(10 * math.log(2))
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    # a uniform density on [0, 1] is 8 bits/dim as an 8-bit model
    assert bits_per_dim(-discrete_log_likelihood_bound(0.0, 64), 64) == pytest.approx(8.0)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="unknown likelihood"):
        make_likelihood("poisson")
    with pytest.raises(ValueError, match="takes no option"):
        make_likelihood("categorical256", scale=0.1)
    with pytest.raises(ValueError, match="gaussian-fixed.s scale must be > 0"):
        make_likelihood("gaussian-fixed", scale=0.0)
    with pytest.raises(ValueError, match="num_mixtures"):
        make_likelihood("logistic-mixture", num_mixtures=0)
    with pytest.raises(ValueError, match=r"\[\.\.\., 256, C, H, W\]"):
        make_likelihood("categorical256").distribution(torch.zeros(2, 3, 1, 4, 4))
    with pytest.raises(ValueError, match=r"flat decoder output \[\.\.\., 30\]"):
        make_likelihood("logistic-mixture", num_mixtures=2).distribution_from_flat(
            torch.zeros(2, 31), (5,))
    with pytest.raises(ValueError, match="last, got"):
        Categorical256(torch.zeros(2, 255))
    with pytest.raises(ValueError, match="same last"):
        DiscretizedLogisticMixture(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 4))
    levels = torch.randint(0, 256, (2, 1, 4, 4), generator=torch.Generator().manual_seed(7))
    dequantized = uniform_dequantize(levels.float() / 255)
    for cls, args in [(Categorical256, (torch.zeros(1, 4, 4, 256),)),
                      (DiscretizedLogisticMixture, (torch.zeros(1, 4, 4, 2),) * 3)]:
        pixels = cls(*args, validate_args=True)
        with pytest.raises(ValueError, match="k/255"):
            pixels.log_prob(dequantized)
        with pytest.raises(ValueError, match="k/255.*e.g. 1.5"):
            pixels.log_prob(torch.full((2, 1, 4, 4), 1.5))
        with pytest.raises(ValueError, match="do not broadcast"):
            pixels.log_prob(torch.zeros(2, 1, 3, 3))
        pixels.log_prob(levels.float() / 255)  # the right data pass
    with pytest.raises(ValueError, match="binary"):
        BernoulliPixel(logits=torch.zeros(4), validate_args=True).log_prob(torch.full((4,), 0.5))
    with pytest.raises(ValueError, match="binary"):
        make_likelihood("bernoulli").check(torch.full((2, 1, 4, 4), 0.5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        make_likelihood("gaussian-learned").check(torch.full((2, 1, 4, 4), 3.0))
    with pytest.raises(ValueError, match="not dequantized"):
        make_likelihood("categorical256").check(dequantized)


@pytest.mark.parametrize("scale", [1e-30, 1e20])
def test_a_fixed_scale_whose_variance_leaves_float32_is_refused(scale):
    # scale 1e-30 squared underflows to 0 in float32: log_prob was [nan, -inf]
    from ppl_models.likelihoods import make_likelihood

    with pytest.raises(ValueError, match="gaussian-fixed's scale must have a square"):
        make_likelihood("gaussian-fixed", scale=scale)


@pytest.mark.parametrize("likelihood", ["bernoulli", "categorical256", "logistic-mixture"])
def test_an_empty_batch_scores_to_an_empty_result(likelihood):
    # the 8-bit likelihoods failed in torch's argument check ("cannot reshape tensor of 0
    # elements into shape [0, 1, 4, 4, -1]") where Bernoulli pixels gave []
    from ppl_models.pixelcnn import PixelCNN

    model = PixelCNN((1, 4, 4), likelihood, channels=4, num_blocks=1, first_kernel_size=3)
    log_p = model.log_prob(torch.zeros(0, 1, 4, 4))
    assert log_p.shape == (0,)


def test_eight_bit_likelihoods_score_integer_values_as_their_own_values():
    # uint8 levels 2, 100, 255 were multiplied by 255 in uint8, wrapped around 256 and scored
    # as levels 254, 156 and 1 (a raw MNIST tensor), even while validating
    from ppl_models.likelihoods import Categorical256, DiscretizedLogisticMixture

    levels = torch.tensor([2, 100, 255], dtype=torch.uint8)
    categorical = Categorical256(torch.randn(3, 256, generator=torch.Generator().manual_seed(0)))
    mixture = DiscretizedLogisticMixture(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, 2))
    for likelihood in (categorical, mixture):
        with pytest.raises(ValueError, match="8-bit levels k/255"):
            likelihood.log_prob(levels)
    binary = torch.tensor([0, 1, 1], dtype=torch.uint8)  # 0 and 1 are the levels 0 and 255
    for likelihood in (categorical, mixture):
        assert torch.allclose(likelihood.log_prob(binary), likelihood.log_prob(binary.float()))


@pytest.mark.parametrize("likelihood", ["gaussian-fixed", "gaussian-learned"])
def test_a_density_refuses_data_on_the_eight_bit_grid(likelihood):
    # binarized {0, 1} digits under gaussian-learned trained to log p(x) = +22.7 nats per 8x8
    # image (-0.51 bits/dim) without a word: a density on values that take a few levels is
    # unbounded; raw levels k / 255 (never dequantized) are the same mistake
    from ppl_models import VAE, binarize_static

    gen = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 256, (8, 1, 8, 8), generator=gen).float() / 255
    check = make_likelihood(likelihood).check
    with pytest.raises(ValueError, match=r"all 512 values of x are binary.*bernoulli"):
        check(binarize_static(levels, 0))
    with pytest.raises(ValueError, match=r"8-bit levels k / 255, not dequantized.*"
                                         r"uniform_dequantize"):
        check(levels)
    with pytest.raises(ValueError, match="8-bit levels"):  # on the grid past the first values
        check(torch.cat([levels, torch.randint(0, 256, (100, 1, 8, 8), generator=gen) / 255]))
    vae = VAE(image_shape=(1, 8, 8), latent_dim=2, hidden=(8,), likelihood=likelihood)
    with pytest.raises(ValueError, match="binary"):
        pyro.poutine.trace(vae.model).get_trace(binarize_static(levels, 0))


@pytest.mark.parametrize("likelihood", ["gaussian-fixed", "gaussian-learned"])
def test_a_density_takes_continuous_and_dequantized_data(likelihood):
    # no false refusal: dequantized levels (float32 and float64, one image and many), uniform
    # values, off-grid values after the first 4096, and tiny batches (too few values to tell)
    check = make_likelihood(likelihood).check
    for seed in range(20):
        gen = torch.Generator().manual_seed(seed)
        levels = torch.randint(0, 256, (64, 1, 8, 8), generator=gen) / 255
        check(uniform_dequantize(levels, gen))
        check(uniform_dequantize(levels[:1, :, :4, :8].double(), gen))  # 32 values
        check(torch.rand(3, 1, 8, 8, generator=gen))
    on_grid = torch.randint(0, 2, (70, 1, 8, 8), generator=gen).float()
    check(torch.cat([on_grid, torch.rand(1, 1, 8, 8, generator=gen)]))  # off grid at the end
    check(torch.zeros(1, 1, 4, 4))  # 16 values: too few to tell a grid from chance
