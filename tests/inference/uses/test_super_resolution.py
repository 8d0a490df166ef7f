"""Super-resolution channel and samplers against enumeration, closed forms and quadrature."""

import itertools
import math

import numpy as np
import pytest
import torch

from inference.uses.super_resolution import (
    average_pool,
    bernoulli_pool_log_likelihood,
    bernoulli_pool_posterior,
    bernoulli_pool_sample,
    feasible_binary_image,
    gaussian_pool_log_likelihood,
    gaussian_pool_posterior,
    gaussian_pool_sample,
    pooled_counts,
    super_resolve_gibbs,
    super_resolve_map,
    super_resolve_mh,
    super_resolve_mwg,
)
from ppl_models.vae import VAE

DOUBLE = torch.float64


def all_images(num_pixels: int) -> torch.Tensor:
    """Every 0/1 vector of ``num_pixels``, ``[2^n, n]``, in float64."""
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=num_pixels)), dtype=DOUBLE)


def test_average_pool_by_hand():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    expected = torch.tensor([[2.5, 4.5], [10.5, 12.5]])
    assert torch.equal(average_pool(x, 2)[0, 0], expected)
    assert torch.equal(average_pool(x, 4)[0, 0], torch.tensor([[7.5]]))
    y = average_pool((x % 3 == 0).float(), 2)
    # multiples of 3: {0}, {3, 6}, {9, 12}, {15} in the four blocks
    assert torch.equal(pooled_counts(y, 2)[0, 0], torch.tensor([[1, 2], [2, 1]]))


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="factor"):
        average_pool(torch.zeros(1, 1, 4, 4), 1)
    with pytest.raises(ValueError, match="multiples"):
        average_pool(torch.zeros(1, 1, 4, 6), 4)
    with pytest.raises(ValueError, match="pooled binary"):
        pooled_counts(torch.full((1, 1, 2, 2), 0.3), 2)
    with pytest.raises(ValueError, match=r"y must be a float tensor \[batch, 1, 2, 2\]"):
        bernoulli_pool_log_likelihood(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 2, 3), 2)
    with pytest.raises(ValueError, match="scale"):
        gaussian_pool_log_likelihood(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2),
                                     torch.zeros(1, 1, 1, 1), 2)


@pytest.mark.parametrize("factor", [2, 4])
def test_bernoulli_channel_matches_enumeration(factor):
    """One block of f^2 pixels with random logits (some extreme): log P(sum = s) and
    p(x_i = 1 | sum = s) by summing over all 2^(f^2) fillings."""
    torch.manual_seed(0)
    m = factor ** 2
    logits = 3 * torch.randn(1, 1, factor, factor, dtype=DOUBLE)
    logits[0, 0, 0, 0] = 25.0  # nearly always 1
    images = all_images(m)  # [2^m, m], raster order = block order for one block
    log_p = (images * torch.nn.functional.logsigmoid(logits.flatten())
             + (1 - images) * torch.nn.functional.logsigmoid(-logits.flatten())).sum(1)
    for s in range(m + 1):
        y = torch.full((1, 1, 1, 1), s / m, dtype=DOUBLE)
        keep = images.sum(1) == s
        exact = torch.logsumexp(log_p[keep], 0)
        assert torch.allclose(bernoulli_pool_log_likelihood(logits, y, factor)[0], exact,
                              atol=1e-9), s
        posterior = (log_p[keep] - exact).exp() @ images[keep]  # [m]
        assert torch.allclose(bernoulli_pool_posterior(logits, y, factor).flatten(), posterior,
                              atol=1e-9), s


def test_bernoulli_likelihood_sums_over_blocks_and_broadcasts_particles():
    torch.manual_seed(1)
    logits = torch.randn(3, 2, 1, 4, 4, dtype=DOUBLE)  # [particles, batch, C, H, W]
    x = (torch.rand(2, 1, 4, 4) < 0.5).to(DOUBLE)
    y = average_pool(x, 2)
    total = bernoulli_pool_log_likelihood(logits, y, 2)
    assert total.shape == (3, 2)
    by_block = sum(bernoulli_pool_log_likelihood(logits[..., 2 * i:2 * i + 2, 2 * j:2 * j + 2],
                                                 y[..., i:i + 1, j:j + 1], 2)
                   for i in range(2) for j in range(2))
    assert torch.allclose(total, by_block)


def test_bernoulli_sample_has_the_exact_conditional_law():
    """20000 draws of a 2x2 block given two ones: the frequencies of its 6 fillings match the
    enumerated conditional within 5 binomial standard errors, and every draw keeps the sum."""
    logits = torch.tensor([1.5, -0.5, 0.3, -2.0], dtype=DOUBLE).reshape(1, 1, 2, 2)
    n = 20000
    y = torch.full((n, 1, 1, 1), 0.5, dtype=DOUBLE)
    draws = bernoulli_pool_sample(logits.expand(n, -1, -1, -1), y, 2,
                                  torch.Generator().manual_seed(0)).flatten(1)
    assert (draws.sum(1) == 2).all()
    images = all_images(4)
    images = images[images.sum(1) == 2]  # [6, 4]
    log_p = (images * logits.flatten() - torch.nn.functional.softplus(logits.flatten())).sum(1)
    exact = log_p.softmax(0)
    frequency = (draws[:, None, :] == images[None]).all(-1).to(DOUBLE).mean(0)
    se = (exact * (1 - exact) / n).sqrt()
    assert ((frequency - exact).abs() < 5 * se).all(), (frequency, exact)


def test_gaussian_channel_matches_the_linear_gaussian_formulas():
    """y = A x with x ~ N(mu, D): y ~ N(A mu, A D A^T) and x | y has mean
    mu + D A^T (A D A^T)^-1 (y - A mu), covariance D - D A^T (A D A^T)^-1 A D."""
    torch.manual_seed(2)
    loc = torch.rand(1, 1, 4, 4, dtype=DOUBLE)
    scale = 0.05 + 0.2 * torch.rand(1, 1, 4, 4, dtype=DOUBLE)
    truth = torch.rand(1, 1, 4, 4, dtype=DOUBLE)
    y = average_pool(truth, 2)
    A = torch.stack([average_pool(e.reshape(1, 1, 4, 4), 2).flatten()
                     for e in torch.eye(16, dtype=DOUBLE)], 1)  # [4, 16]
    D = torch.diag(scale.flatten() ** 2)
    pooled = torch.distributions.MultivariateNormal(A @ loc.flatten(), A @ D @ A.T)
    assert torch.allclose(gaussian_pool_log_likelihood(loc, scale, y, 2)[0],
                          pooled.log_prob(y.flatten()))
    gain = D @ A.T @ torch.linalg.inv(A @ D @ A.T)
    mean = loc.flatten() + gain @ (y.flatten() - A @ loc.flatten())
    cov = D - gain @ A @ D
    got_mean, got_var = gaussian_pool_posterior(loc, scale, y, 2)
    assert torch.allclose(got_mean.flatten(), mean)
    assert torch.allclose(got_var.flatten(), cov.diagonal())
    n = 40000
    draws = gaussian_pool_sample(loc.expand(n, -1, -1, -1), scale, y.expand(n, -1, -1, -1), 2,
                                 torch.Generator().manual_seed(0)).flatten(1)
    assert torch.allclose(average_pool(draws.reshape(n, 1, 4, 4), 2).flatten(1),
                          y.flatten(1).expand(n, -1), atol=1e-12)
    # sample mean and covariance of 40000 draws: standard errors below 0.25 / 200 = 1.3e-3
    assert (draws.mean(0) - mean).abs().max() < 6e-3
    assert (draws.T.cov() - cov).abs().max() < 2e-3


def test_feasible_binary_image_keeps_the_counts():
    torch.manual_seed(3)
    x = (torch.rand(5, 1, 8, 8) < 0.4).float()
    y = average_pool(x, 4)
    start = feasible_binary_image(torch.rand(5, 1, 8, 8), y, 4)
    assert torch.equal(average_pool(start, 4), y)


# ------------------------------------------------------- VAE inference against quadrature
def tiny_vae(likelihood: str) -> VAE:
    """A random 1-latent VAE over a 2x2 image: one pooling block, quadrature over z exact."""
    torch.manual_seed(4)
    vae = VAE((1, 2, 2), latent_dim=1, hidden=(8,), likelihood=likelihood).double()
    with torch.no_grad():  # make the pixels depend strongly on z
        for p in vae.decoder.parameters():
            p.mul_(4 if likelihood == "bernoulli" else 1.5)
    for p in vae.parameters():
        p.requires_grad_(False)
    return vae


def quadrature(vae, y):
    """Posterior mode of z and E[x_i | y], Var[x_i | y] on a grid of 4001 points in [-8, 8]."""
    z = torch.linspace(-8, 8, 4001, dtype=DOUBLE)[:, None, None]  # [G, 1, 1]
    d = vae.decode(z)
    if isinstance(d, torch.distributions.Bernoulli):
        log_like = bernoulli_pool_log_likelihood(d.logits, y, 2)
        mean = bernoulli_pool_posterior(d.logits, y, 2)
        var = mean * (1 - mean)
    else:
        log_like = gaussian_pool_log_likelihood(d.loc, d.scale, y, 2)
        mean, var = gaussian_pool_posterior(d.loc, d.scale, y, 2)
    log_post = log_like[:, 0] - 0.5 * z[:, 0, 0] ** 2
    w = log_post.softmax(0)[:, None, None, None]
    post_mean = (w * mean[:, 0]).sum(0)
    post_var = (w * (var + mean ** 2)[:, 0]).sum(0) - post_mean ** 2
    return z[log_post.argmax(), 0, 0], post_mean, post_var


@pytest.mark.parametrize("likelihood,y_value", [("bernoulli", 0.5), ("bernoulli", 0.25),
                                                 ("gaussian-learned", 0.4)])
def test_map_mwg_and_mh_match_quadrature(likelihood, y_value):
    vae = tiny_vae(likelihood)
    y = torch.full((1, 1, 1, 1), y_value, dtype=DOUBLE)
    mode, exact_mean, exact_var = quadrature(vae, y)
    result = super_resolve_map(vae, y, 2, steps=300, lr=0.05)
    # grid spacing 0.004; Adam's last steps jitter by a fraction of lr = 0.05
    assert abs(float(result.z) - float(mode)) < 0.03, (float(result.z), float(mode))
    chains = 400  # independent chains of the same observation, averaged
    # an image that pools to y: y * 4 ones for Bernoulli pixels, y everywhere for grey ones
    truth = (torch.arange(4, dtype=DOUBLE) < 4 * y_value).to(DOUBLE).reshape(1, 1, 2, 2) \
        if likelihood == "bernoulli" else torch.full((1, 1, 2, 2), y_value, dtype=DOUBLE)
    truth = truth.expand(chains, -1, -1, -1)
    chain = super_resolve_mwg(vae, y.expand(chains, -1, -1, -1), 2, num_steps=80, burn_in=30,
                              generator=torch.Generator().manual_seed(0), truth=truth)
    assert 0.05 < chain.acceptance_rate <= 1
    # 400 chains x 50 correlated sweeps of Rao-Blackwellized means: Monte Carlo standard
    # error about 0.01 (binary pixels; the grey posteriors are narrower); 0.03 allows 3.
    # (Measured errors 0.001-0.005; the posterior at z = 0 alone is 0.05-0.11 off.)
    assert (chain.mean.mean(0) - exact_mean[0]).abs().max() < 0.03, (chain.mean.mean(0),
                                                                        exact_mean)
    # the block mean is y in every state, so the estimate keeps it
    assert torch.allclose(average_pool(chain.mean, 2), y.expand(chains, -1, -1, -1))
    assert (chain.variance.mean(0) - exact_var[0]).abs().max() < 0.03
    assert chain.log_predictive.shape == truth.shape and torch.isfinite(chain.log_predictive).all()
    if likelihood == "bernoulli":
        assert torch.allclose(chain.log_predictive,
                              torch.where(truth > 0.5, chain.mean, 1 - chain.mean).log())
    # the collapsed random-walk chain: same target, same tolerance (its draws of z are less
    # correlated here, 200 kept steps of 400 chains)
    walk = super_resolve_mh(vae, y.expand(chains, -1, -1, -1), 2, num_steps=400,
                            generator=torch.Generator().manual_seed(1), truth=truth)
    assert 0.15 < walk.acceptance_rate < 0.45, walk.acceptance_rate  # adapted toward 0.3
    assert (walk.mean.mean(0) - exact_mean[0]).abs().max() < 0.03, (walk.mean.mean(0),
                                                                       exact_mean)
    assert (walk.variance.mean(0) - exact_var[0]).abs().max() < 0.03
    assert torch.allclose(average_pool(walk.mean, 2), y.expand(chains, -1, -1, -1))


def test_vae_inference_rejects_other_pixel_families():
    vae = VAE((1, 2, 2), latent_dim=1, hidden=(4,), likelihood="categorical256")
    with pytest.raises(ValueError, match="Bernoulli or Normal"):
        super_resolve_map(vae, torch.zeros(1, 1, 1, 1), 2, steps=1)


# ------------------------------------------------------------ block Gibbs for any model
def ising(seed: int, side: int = 4):
    """A random Ising-type model on a side x side binary image: log p(x) = sum_i h_i s_i +
    sum_{neighbours} J_ij s_i s_j (s = 2x - 1) up to its normalizer, strong enough couplings
    that the pixels are far from independent."""
    g = torch.Generator().manual_seed(seed)
    h = 0.5 * torch.randn(side, side, generator=g, dtype=DOUBLE)
    right = 0.8 * torch.randn(side, side - 1, generator=g, dtype=DOUBLE)
    down = 0.8 * torch.randn(side - 1, side, generator=g, dtype=DOUBLE)

    def log_prob(x):  # [n, 1, side, side] -> [n]
        s = 2 * x[:, 0].to(DOUBLE) - 1
        return ((h * s).sum((1, 2)) + (right * s[:, :, 1:] * s[:, :, :-1]).sum((1, 2))
                + (down * s[:, 1:, :] * s[:, :-1, :]).sum((1, 2)))

    return log_prob


def exact_marginals(log_prob, y, factor, side=4):
    images = all_images(side * side).reshape(-1, 1, side, side)
    keep = (average_pool(images, factor) == y).flatten(1).all(1)
    images = images[keep]
    return (log_prob(images).softmax(0)[:, None, None, None] * images).sum(0)


@pytest.mark.parametrize("factor,subset_size,sweeps", [(2, 4, 40), (2, 2, 40), (4, 4, 130)])
def test_gibbs_matches_enumeration_on_a_dependent_model(factor, subset_size, sweeps):
    """p(x_i = 1 | y) of a 16-pixel Ising model by enumerating its 65536 images, against 300
    chains of block Gibbs (whole 2x2 blocks, pairs, and random quarters of a 4x4 block; the
    quarters, which must trade ones through changing partitions, needed more than 40 sweeps:
    error 0.08 after 40, 0.009 after 200)."""
    log_prob = ising(5)
    truth = torch.tensor([[0, 1, 1, 0], [1, 1, 0, 0], [0, 1, 1, 1], [0, 0, 1, 0]],
                         dtype=DOUBLE).reshape(1, 1, 4, 4)
    y = average_pool(truth, factor)
    exact = exact_marginals(log_prob, y, factor)
    chains = 300
    result = super_resolve_gibbs(log_prob, y.expand(chains, -1, -1, -1), factor,
                                 num_sweeps=sweeps, burn_in=sweeps // 4, subset_size=subset_size,
                                 generator=torch.Generator().manual_seed(1))
    estimate = result.mean.mean(0)
    # 300 chains x 30 or more Rao-Blackwellized sweeps: standard error about 0.01 per pixel
    # (more for the pair updates, which mix more slowly); 0.04 allows 3-4 of them
    assert (estimate - exact).abs().max() < 0.04, (estimate, exact)
    assert torch.allclose(average_pool(result.mean, factor), y.expand(chains, -1, -1, -1))


def test_gibbs_with_independent_pixels_matches_the_closed_form():
    """With log p(x) of independent Bernoulli pixels, Gibbs estimates the same posterior as
    :func:`bernoulli_pool_posterior`."""
    torch.manual_seed(6)
    logits = 2 * torch.randn(1, 1, 4, 4, dtype=DOUBLE)

    def log_prob(x):
        return (x * logits - torch.nn.functional.softplus(logits)).flatten(1).sum(1)

    y = torch.tensor([[0.25, 0.5], [0.75, 0.0]], dtype=DOUBLE).reshape(1, 1, 2, 2)
    exact = bernoulli_pool_posterior(logits, y, 2)[0]
    chains = 300
    truth = feasible_binary_image(torch.rand(chains, 1, 4, 4, dtype=DOUBLE),
                                  y.expand(chains, -1, -1, -1), 2)
    result = super_resolve_gibbs(log_prob, y.expand(chains, -1, -1, -1), 2, num_sweeps=20,
                                 burn_in=5, generator=torch.Generator().manual_seed(2),
                                 truth=truth)
    # whole-block updates of independent pixels draw the exact conditional every sweep and
    # the Rao-Blackwellized means are exact, whatever the state: equal up to rounding
    assert torch.allclose(result.mean, exact.expand(chains, -1, -1, -1), atol=1e-9)
    assert torch.allclose(result.log_predictive,
                          torch.where(truth > 0.5, result.mean, 1 - result.mean).log())


def test_gibbs_holds_at_most_max_batch_candidates():
    # every image's C(k, k/2) fillings of a block were made at once: 200 images of 28x28 at
    # subset_size 16 asked for 8 GB in one allocation, whatever max_batch said
    torch.manual_seed(7)
    logits = torch.randn(1, 1, 4, 4, dtype=DOUBLE)
    sizes = {}

    def scorer(max_batch):
        def log_prob(x):
            sizes.setdefault(max_batch, []).append(len(x))
            return (x * logits - torch.nn.functional.softplus(logits)).flatten(1).sum(1)
        return log_prob

    y = torch.tensor([[0.5, 0.5], [0.25, 0.75]], dtype=DOUBLE).reshape(1, 1, 2, 2)
    y = y.expand(5, -1, -1, -1)
    runs = [super_resolve_gibbs(scorer(size), y, 2, num_sweeps=3, subset_size=4,
                                max_batch=size, generator=torch.Generator().manual_seed(3))
            for size in (4096, 7)]
    assert max(sizes[4096]) > 7  # up to 5 images x C(4, 2) = 6 fillings at once
    assert max(sizes[7]) <= 7  # one image's 6 fillings at a time
    # the same draws in the same order: the same chain
    assert torch.equal(runs[0].mean, runs[1].mean)


def test_gibbs_checks_its_arguments():
    y = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="subset_size"):
        super_resolve_gibbs(lambda x: x.sum((1, 2, 3)), y, 2, subset_size=1)
    with pytest.raises(ValueError, match="log_prob must map"):
        super_resolve_gibbs(lambda x: x.sum((2, 3)), torch.full((1, 1, 2, 2), 0.5), 2,
                            num_sweeps=1, burn_in=0)
    with pytest.raises(ValueError, match="burn_in"):
        super_resolve_gibbs(lambda x: x.sum((1, 2, 3)), y, 2, num_sweeps=2, burn_in=2)
    assert math.isfinite(float(super_resolve_gibbs(lambda x: x.sum((1, 2, 3)), y, 2,
                                                   num_sweeps=1, burn_in=0).mean.sum()))


# ------------------------------------------------------------------ refusals, up front
def test_chain_lengths_must_be_integers_and_numpy_integers_count_exactly():
    vae = tiny_vae("bernoulli")
    y = torch.full((1, 1, 1, 1), 0.5, dtype=DOUBLE)
    for bad in (1.5, True, 2.0):
        with pytest.raises(ValueError, match="burn_in must be an integer >= 0"):
            super_resolve_mwg(vae, y, 2, num_steps=4, burn_in=bad)
        with pytest.raises(ValueError, match="burn_in must be an integer >= 0"):
            super_resolve_mh(vae, y, 2, num_steps=4, burn_in=bad)
        with pytest.raises(ValueError, match="burn_in must be an integer >= 0"):
            super_resolve_gibbs(lambda x: x.flatten(1).sum(1), y, 2, num_sweeps=4, burn_in=bad)
    with pytest.raises(ValueError, match="num_sweeps must be a positive integer"):
        super_resolve_gibbs(lambda x: x.flatten(1).sum(1), y, 2, num_sweeps=4.0)
    # independent pixels with log p(x) = sum x: every 2x2 filling with two ones equally likely,
    # so the Rao-Blackwellized mean is 1/2 exactly, whatever the burn-in's type
    result = super_resolve_gibbs(lambda x: x.flatten(1).sum(1), y, 2, num_sweeps=np.int64(4),
                                 burn_in=np.int32(1), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(result.mean, torch.full((1, 1, 2, 2), 0.5, dtype=DOUBLE), atol=1e-12)


def test_truth_must_be_binary_for_a_bernoulli_model():
    vae = tiny_vae("bernoulli")
    y = torch.full((1, 1, 1, 1), 0.5, dtype=DOUBLE)
    for bad in (0.5, math.nan):
        truth = torch.tensor([[1.0, 0.0], [bad, 1.0]], dtype=DOUBLE).reshape(1, 1, 2, 2)
        for call in (lambda: super_resolve_map(vae, y, 2, steps=1, truth=truth),
                     lambda: super_resolve_mwg(vae, y, 2, num_steps=2, truth=truth),
                     lambda: super_resolve_mh(vae, y, 2, num_steps=2, truth=truth),
                     lambda: super_resolve_gibbs(lambda x: x.flatten(1).sum(1), y, 2,
                                                 num_sweeps=1, truth=truth)):
            with pytest.raises(ValueError, match="truth must hold 0/1 pixels.*1 other values"):
                call()
    grey = tiny_vae("gaussian-learned")
    truth = torch.full((1, 1, 2, 2), 0.5, dtype=DOUBLE)
    assert super_resolve_map(grey, y, 2, steps=1, truth=truth).log_predictive.shape == \
        truth.shape
    truth = truth.clone()
    truth[0, 0, 1, 0] = math.nan
    with pytest.raises(ValueError, match=r"truth \(shape \[1, 1, 2, 2\]\) has 1 non-finite"):
        super_resolve_map(grey, y, 2, steps=1, truth=truth)


def test_vae_inputs_are_checked_before_the_model_runs():
    vae = tiny_vae("bernoulli")

    def never(x):
        raise AssertionError("the encoder ran")

    vae.encode = never
    y = torch.full((1, 1, 1, 1), 0.5, dtype=DOUBLE)
    with pytest.raises(ValueError, match=r"y \(shape \[1, 1, 1, 1\]\) has 1 non-finite values "
                                         r"\(1 NaN"):
        super_resolve_map(vae, torch.full_like(y, math.nan), 2, steps=1)
    with pytest.raises(ValueError, match="y is torch.float32 but the model's parameters are "
                                         "torch.float64"):
        super_resolve_map(vae, y.float(), 2, steps=1)
    with pytest.raises(ValueError, match=r"from \[1, 4, 4\] images, but the vae's image_shape "
                                         r"is \[1, 2, 2\]"):
        super_resolve_mwg(vae, torch.full((1, 1, 2, 2), 0.5, dtype=DOUBLE), 2, num_steps=2)
    for call in (lambda: super_resolve_map(vae, y, 2, steps=2.5),
                 lambda: super_resolve_map(vae, y, 2, steps=-1)):
        with pytest.raises(ValueError, match="steps must be an integer >= 0"):
            call()
    with pytest.raises(ValueError, match="lr must be a finite number, got inf"):
        super_resolve_map(vae, y, 2, steps=2, lr=math.inf)
    with pytest.raises(ValueError, match="generator must be a torch.Generator or None"):
        super_resolve_mh(vae, y, 2, num_steps=2, generator=1)
    with pytest.raises(ValueError, match="target_acceptance must be a finite number"):
        super_resolve_mh(vae, y, 2, num_steps=2, target_acceptance="0.3")
    for call in (lambda: super_resolve_mwg(vae, y[:0], 2, num_steps=2),
                 lambda: super_resolve_mh(vae, y[:0], 2, num_steps=2),
                 lambda: super_resolve_gibbs(lambda x: x.flatten(1).sum(1), y[:0], 2)):
        with pytest.raises(ValueError, match=r"'y' has no datapoints \(shape \[0, 1, 1, 1\]\)"):
            call()


def test_pooled_counts_refuse_nan():
    with pytest.raises(ValueError, match=r"y \(shape \[1, 1, 1, 2\]\) has 1 non-finite "
                                         r"values \(1 NaN"):
        pooled_counts(torch.tensor([0.25, math.nan]).reshape(1, 1, 1, 2), 2)


def test_gibbs_refuses_nan_inf_and_impossible_blocks_by_place():
    # datapoint 0's only block is empty (never scored), datapoint 1's holds two ones
    y = torch.tensor([0.0, 0.5], dtype=DOUBLE).reshape(2, 1, 1, 1)
    for value, what in ((math.nan, "NaN"), (math.inf, r"\+inf")):
        with pytest.raises(ValueError, match=rf"log_prob returned {what} at sweep 0, block "
                                             rf"\(channel, row, column\) = \(0, 0, 0\), for "
                                             rf"datapoint\(s\) \[1\]"):
            super_resolve_gibbs(lambda x, v=value: torch.full((len(x),), v, dtype=DOUBLE),
                                y, 2, num_sweeps=2)
    with pytest.raises(ValueError, match=r"-inf for every filling .* datapoint\(s\) \[1\]"):
        super_resolve_gibbs(lambda x: torch.full((len(x),), -math.inf, dtype=DOUBLE), y, 2,
                            num_sweeps=2)


def test_gibbs_with_some_impossible_fillings_is_exact():
    """log p(x) = 0 except -inf where the first pixel is 1: given two ones in the 2x2 block,
    the other three pixels share them uniformly, p = 2/3 each, and whole-block updates give it
    exactly (from any start, even one the model rules out)."""
    y = torch.full((3, 1, 1, 1), 0.5, dtype=DOUBLE)

    def log_prob(x):
        return torch.where(x[:, 0, 0, 0] == 1, -math.inf, 0.0).to(DOUBLE)

    result = super_resolve_gibbs(log_prob, y, 2, num_sweeps=3, burn_in=0,
                                 init=torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=DOUBLE)
                                 .reshape(1, 1, 2, 2).expand(3, -1, -1, -1),
                                 generator=torch.Generator().manual_seed(0))
    expected = torch.tensor([0.0, 2 / 3, 2 / 3, 2 / 3], dtype=DOUBLE).reshape(1, 1, 2, 2)
    assert torch.allclose(result.mean, expected.expand(3, -1, -1, -1), atol=1e-12)


def test_gibbs_subset_size_is_limited_before_any_work():
    y = torch.full((1, 1, 1, 1), 0.48, dtype=DOUBLE)  # 12 ones in a 5x5 block

    def never(x):
        raise AssertionError("log_prob ran")

    for subset_size, m in ((25, 25), (17, 17), (100, 25)):
        with pytest.raises(ValueError, match=rf"subset_size={subset_size} redraws {m} pixels .* "
                                             rf"2\^{m} = {2 ** m:,} configurations, more than "
                                             r"the limit 2\^16 = 65,536"):
            super_resolve_gibbs(never, y, 5, num_sweeps=1, subset_size=subset_size)


def test_gibbs_whole_4x4_blocks_at_the_limit_match_the_closed_form():
    """subset_size=16 = f^2 for f = 4 (2^16 configurations, the limit): independent pixels,
    every step the exact conditional of the whole block, so the mean is the closed form."""
    torch.manual_seed(7)
    logits = 2 * torch.randn(1, 1, 4, 4, dtype=DOUBLE)

    def log_prob(x):
        return (x * logits - torch.nn.functional.softplus(logits)).flatten(1).sum(1)

    y = torch.full((1, 1, 1, 1), 6 / 16, dtype=DOUBLE)
    result = super_resolve_gibbs(log_prob, y, 4, num_sweeps=1, burn_in=0, subset_size=16,
                                 generator=torch.Generator().manual_seed(0))
    assert torch.allclose(result.mean, bernoulli_pool_posterior(logits, y, 4), atol=1e-9)


def test_super_resolve_map_names_a_diverging_lr():
    # float32 codes: a step of lr = 1e30 makes z^2 overflow; 1e39 is beyond their range
    vae = tiny_vae("bernoulli").float()
    y = torch.full((1, 1, 1, 1), 0.5)
    with pytest.raises(FloatingPointError, match=r"super_resolve_map: .* at step \d+ of 5 "
                                                 r"\(lr=1e\+30\); lower lr"):
        super_resolve_map(vae, y, 2, steps=5, lr=1e30)
    with pytest.raises(ValueError, match=r"lr=1e\+39 is beyond the range .* torch.float32"):
        super_resolve_map(vae, y, 2, steps=5, lr=1e39)


def test_gibbs_refuses_a_factor_beyond_memory_before_allocating():
    # factor=2**16 on a [1, 1, 1, 1] y tried to allocate 17 GB of up-sampled images first
    def never(x):
        raise AssertionError("log_prob ran")

    y = torch.full((1, 1, 1, 1), 0.5)
    with pytest.raises(ValueError, match=r"factor=1048576: y \[1, 1, 1, 1\] pooled by it stands "
                                         r"for images \[1, 1, 1048576, 1048576\]; the chain's "
                                         r"start, .* bytes, more than this machine's"):
        super_resolve_gibbs(never, y, 2**20, num_sweeps=1)


def test_gibbs_takes_a_bool_or_integer_init_and_names_a_bad_one():
    # a bool init was refused as "score must be a float tensor", naming no argument of it
    y = torch.full((2, 1, 1, 1), 0.5, dtype=DOUBLE)
    start = torch.tensor([1, 0, 0, 1]).reshape(1, 1, 2, 2).expand(2, -1, -1, -1)

    def log_prob(x):
        return x[:, 0, 0, 0] * 2.0 - x[:, 0, 1, 1]

    runs = [super_resolve_gibbs(log_prob, y, 2, num_sweeps=2, init=init,
                                generator=torch.Generator().manual_seed(0)).mean
            for init in (start.to(DOUBLE), start.bool(), start)]
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
    for bad, match in ((start.to(DOUBLE).index_put((torch.tensor(0),), torch.tensor(math.nan,
                                                                                    dtype=DOUBLE)),
                        r"init \(shape \[2, 1, 2, 2\]\) has 4 non-finite values \(4 NaN"),
                       (start.to(torch.complex64), r"init must be a real tensor \[2, 1, 2, 2\] "
                                                   r"of scores, got torch.complex64"),
                       (start[:1], r"init must be a real tensor \[2, 1, 2, 2\] of scores, got "
                                   r"torch.int64 \[1, 1, 2, 2\]")):
        with pytest.raises(ValueError, match=match):
            super_resolve_gibbs(log_prob, y, 2, num_sweeps=1, init=bad)


def test_super_resolve_map_names_an_objective_not_finite_at_the_start():
    # it was blamed on lr "at step 1", before any step had been taken
    vae = tiny_vae("bernoulli")
    with torch.no_grad():
        # every pixel's logit 1e308 (infinite parameters are refused by name): probability 1
        list(vae.decoder.parameters())[-1].fill_(1e308)
    y = torch.full((1, 1, 1, 1), 0.5, dtype=DOUBLE)  # two zeros: probability 0 under it
    with pytest.raises(ValueError, match=r"super_resolve_map: the objective is .* at the start, "
                                         r"before any step \(lr plays no part yet\): y and the "
                                         r"vae's pixel distributions"):
        super_resolve_map(vae, y, 2, steps=5)
