"""k-hat and ESS against the known tails of Gaussian proposals on the linear-Gaussian model."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference.evidence.weight_diagnostics import (
    WeightDiagnostics,
    effective_sample_size,
    pareto_k,
    weight_diagnostics,
)
from ppl_models.linear_gaussian import LinearGaussian


@pytest.fixture
def linear_gaussian():
    model = LinearGaussian(data_dim=5, latent_dim=2, noise_scale=0.5, seed=3).double()
    return model, model.simulate(12, seed=4)


def scaled_posterior_guide(model, factor):
    """q(z | x) = N(m, factor^2 S) for the exact posterior N(m, S)."""

    def guide(x):
        post = model.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(post.loc, scale_tril=factor * post.scale_tril))

    return guide


@pytest.mark.parametrize("factor", [0.3, 0.85])
def test_pareto_k_matches_the_tail_of_a_scaled_posterior(linear_gaussian, factor):
    # Whitened, the weights are w(z) ~ exp(|z|^2 (1/c^2 - 1) / 2) with z ~ N(0, c^2 I), whose
    # tail P(w > t) decays like t^(-1 / (1 - c^2)): the Pareto shape is k = 1 - c^2
    # (0.91 for c = 0.3, far past 0.7; 0.28 for c = 0.85, good). With K = 4000 the k-hat of
    # one datapoint scatters by about 0.1, so the mean over 12 datapoints sits within 0.1.
    model, x = linear_gaussian
    result = weight_diagnostics(model.model, scaled_posterior_guide(model, factor), x,
                                num_samples=4000)
    assert isinstance(result, WeightDiagnostics)
    assert result.pareto_k.shape == result.ess.shape == result.iwae.shape == (12,)
    expected = 1 - factor**2
    mean_k = float(result.pareto_k.mean())
    assert abs(mean_k - expected) < 0.1, (mean_k, expected, result.pareto_k)
    if factor < 0.5:
        # 0.7 is about two scatters below 0.91: most, not necessarily all, datapoints flag
        assert result.counts()["unreliable"] >= 10, result.pareto_k
        # heavy tails: a few weights dominate
        assert float(result.ess.max()) < 0.5 * 4000
    else:
        assert bool((result.pareto_k < 0.5).all()), result.pareto_k
        assert result.counts()["good"] == 12
    summary = result.to_dict()
    assert summary["num_samples"] == 4000 and sum(result.counts().values()) == 12


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_exact_posterior_has_ess_k_and_small_k(dtype):
    # q = p(z | x): every weight equals log p(x) up to rounding, so ESS = K to rounding and
    # k-hat is either -inf (all weights equal) or the fit to rounding noise (bounded: < 0.5).
    model = LinearGaussian(data_dim=5, latent_dim=2, noise_scale=0.5, seed=3).to(dtype)
    x = model.simulate(6, seed=4)
    result = weight_diagnostics(model.model, model.exact_guide, x, num_samples=500)
    tol = 1e-9 if dtype == torch.float64 else 1e-3
    torch.testing.assert_close(result.ess, torch.full_like(result.ess, 500.0), rtol=tol, atol=0)
    assert bool((result.pareto_k < 0.5).all()), result.pareto_k
    torch.testing.assert_close(result.iwae, model.log_marginal(x).detach(),
                               rtol=0, atol=1e-9 if dtype == torch.float64 else 1e-4)


def test_equal_weights_are_exact():
    log_w = torch.full((100, 3), -7.25, dtype=torch.float64)
    assert bool((pareto_k(log_w) == -math.inf).all())
    torch.testing.assert_close(effective_sample_size(log_w),
                               torch.full((3,), 100.0, dtype=torch.float64))


def test_effective_sample_size_by_hand():
    # weights (1, 1, 2): (1 + 1 + 2)^2 / (1 + 1 + 4) = 16 / 6; one weight dominating gives ~1.
    log_w = torch.tensor([[0.0, 0.0], [0.0, -50.0], [math.log(2.0), -50.0]])
    ess = effective_sample_size(log_w)
    assert float(ess[0]) == pytest.approx(16 / 6, rel=1e-6)
    assert float(ess[1]) == pytest.approx(1.0, abs=1e-6)


def test_pareto_k_of_known_pareto_weights():
    # Weights drawn from a Pareto distribution with tail index alpha have shape k = 1/alpha.
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(20000, 4, generator=gen, dtype=torch.float64)
    for alpha in (1.25, 4.0):
        log_w = -torch.log(u) / alpha  # log of Pareto(1, alpha) draws
        k = pareto_k(log_w)
        # the GPD fit on 3 sqrt(K) = 424 tail draws has a standard error of about 0.06
        assert float((k - 1 / alpha).abs().max()) < 0.2, (alpha, k)


def test_zero_weights_take_no_part_in_the_tail():
    # Pareto(1, alpha = 1.25) weights (k = 0.8) with half the draws outside the model's
    # support (weight 0): k-hat is the fit to the nonzero weights' tail, as when the zeros are
    # tiny finite weights instead; equal nonzero weights are exact; no nonzero weight at all
    # is unreliable with no effective sample.
    gen = torch.Generator().manual_seed(1)
    heavy = -torch.log(torch.rand(4000, 1, generator=gen, dtype=torch.float64)) / 1.25
    zeros = torch.full((4000, 1), -math.inf, dtype=torch.float64)
    log_w = torch.cat([torch.cat([heavy, zeros]),
                       torch.cat([torch.full_like(heavy, -3.0), zeros]),
                       torch.cat([zeros, zeros])], 1)
    k = pareto_k(log_w)
    tiny = pareto_k(torch.cat([heavy, torch.full_like(heavy, -1e30)]))
    assert float(k[0]) == pytest.approx(float(tiny[0]), abs=1e-9)
    assert float(k[0]) > 0.6, k
    assert float(k[1]) == -math.inf and float(k[2]) == math.inf
    ess = effective_sample_size(log_w)
    assert float(ess[1]) == pytest.approx(4000.0) and float(ess[2]) == 0.0
    assert 1.0 <= float(ess[0]) < 4000.0


def test_bad_input():
    with pytest.raises(ValueError, match=r"shape \[K, batch\]"):
        pareto_k(torch.zeros(100))
    with pytest.raises(ValueError, match="at least 21"):
        pareto_k(torch.zeros(10, 2))
    with pytest.raises(ValueError, match="NaN"):
        effective_sample_size(torch.tensor([[0.0], [float("nan")]]))
    with pytest.raises(ValueError, match="floating-point"):
        effective_sample_size(torch.zeros(30, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="torch.Tensor"):
        pareto_k([[0.0]] * 30)
    model = LinearGaussian(data_dim=5, latent_dim=2)
    x = model.simulate(3)
    with pytest.raises(ValueError, match="at least 21"):
        weight_diagnostics(model.model, model.guide, x, num_samples=5)
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        weight_diagnostics(model.model, model.guide, x, num_samples=0)


@pytest.mark.parametrize("level", [-1e6, -3e4, -700.0])
def test_equal_float32_weights_far_from_zero_give_ess_k(level):
    # the sums used to cancel in float32: an ESS of 1096.6 of K = 1000 at -1e6
    ess = effective_sample_size(torch.full((1000, 2), level, dtype=torch.float32))
    torch.testing.assert_close(ess, torch.full((2,), 1000.0), rtol=1e-5, atol=0)


def test_weight_diagnostics_refuses_an_empty_batch_and_too_many_weights(linear_gaussian):
    model, x = linear_gaussian
    with pytest.raises(ValueError, match="no datapoints"):
        weight_diagnostics(model.model, model.guide, x[:0], num_samples=100)
    with pytest.raises(ValueError, match="num_samples=1000000000000 particles"):
        weight_diagnostics(model.model, model.guide, x, num_samples=10**12)


def test_takes_compile_and_progress_as_the_other_estimators_do():
    """``progress=False`` was refused as a keyword passed to the pair. The traced graph
    (``compile="eager"``) gives the eager weights on the same draws."""
    model = LinearGaussian(data_dim=5, latent_dim=2, noise_scale=0.5, seed=3).double()
    x = model.simulate(6, seed=4)
    results = []
    for compile in (False, "eager"):
        pyro.set_rng_seed(0)
        results.append(weight_diagnostics(model.model, model.guide, x, num_samples=200,
                                          compile=compile, progress=False))
    torch.testing.assert_close(results[0].iwae, results[1].iwae, rtol=0, atol=1e-9)
    torch.testing.assert_close(results[0].pareto_k, results[1].pareto_k, rtol=0, atol=1e-6)


def test_mostly_zero_weights_do_not_flatten_a_heavy_tail():
    # Pareto weights of k = 0.9 with 98% of the draws outside the model's support: the M-tail
    # of K = 5000 (213 weights) holds only 100 nonzero ones, and a fit padded with the zeros
    # read a median k-hat of 0.37 over these 20 columns, 80% of them "good". Fit on the nonzero
    # weights alone, the median is 0.73 (the fit of 100 draws is noisy: 0.22-1.08 here).
    gen = torch.Generator().manual_seed(3)
    log_w = -0.9 * torch.rand(5000, 20, generator=gen, dtype=torch.float64).log()
    log_w[100:] = -math.inf
    k = pareto_k(log_w)
    assert float(k.median()) > 0.6, k
    assert int((k < 0.5).sum()) <= 5, k
    few = log_w.clone()
    few[15:] = -math.inf  # 15 continuous nonzero weights: no tail to fit
    assert bool((pareto_k(few) == math.inf).all())


@pytest.mark.parametrize("offset", [-1e5, -3e5])
def test_float32_weights_far_from_zero_keep_their_tail(offset):
    # float32 log weights near -3e5 nats (a large image's log joint) have ulps of 0.03 nats;
    # a tie width of 64 of them merged a continuous Pareto tail (k = 0.7, spread over about
    # 4 nats) into a few "atoms" and read -inf, "good". The fit now matches float64's.
    gen = torch.Generator().manual_seed(4)
    log_w = -0.7 * torch.rand(5000, 20, generator=gen, dtype=torch.float64).log()
    exact = pareto_k(log_w)
    rounded = pareto_k((log_w + offset).float()).double()
    assert bool(rounded.isfinite().all()), rounded
    assert float((rounded - exact).abs().max()) < 0.1, (rounded, exact)


def test_weights_too_large_for_their_dtype_are_unreliable():
    # Unstandardized data: a linear-Gaussian pair's float32 log weights near -6e10 nats are
    # spaced 4096 nats apart; rounding made their top values tie, and k-hat read -inf ("as
    # good as it gets") with an ESS of 1 and a bound 4e8 nats below the closed form
    from inference import log_importance_weights
    from ppl_models.linear_gaussian import LinearGaussian

    pair = LinearGaussian(3, 1)
    torch.manual_seed(0)
    for value in (1e5, 1e8):
        x = torch.full((1, 3), value)
        log_w = log_importance_weights(pair.model, pair.guide, x, num_samples=200,
                                       progress=False)
        assert float(pareto_k(log_w)[0]) == math.inf
    # the same shape of weights where the dtype resolves them keeps its fit: an exact guide's
    # equal weights, and a heavy tail, shifted to -1e5 nats in float32 and -1e13 in float64
    gen = torch.Generator().manual_seed(3)
    heavy = -torch.log(torch.rand(2000, 1, generator=gen, dtype=torch.float64)) / 1.25
    unshifted = float(pareto_k(heavy)[0])
    for shift, dtype in ((-1e5, torch.float32), (-1e13, torch.float64)):
        equal = torch.full((2000, 1), shift, dtype=dtype)
        assert float(pareto_k(equal)[0]) == -math.inf
        shifted = float(pareto_k((heavy + shift).to(dtype))[0])
        assert abs(shifted - unshifted) < 0.03, (shift, shifted, unshifted)
