"""Collapse diagnostics and probes against hand-computed values."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import (
    active_units,
    expected_log_likelihood,
    kl_per_dimension,
    posterior_means,
    probe_accuracy,
)


def pair(loc, scale):
    """Model with prior N(0, I_3); guide N(loc, scale) per dimension; x ~ N(z_0, 1)."""

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(3), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z[..., 0], 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc.expand(x.shape[0], 3), scale).to_event(1))

    return model, guide


def test_kl_per_dimension_matches_closed_form():
    loc = torch.tensor([1.0, 0.0, 0.0])
    scale = torch.tensor([0.5, 1.0, 2.0])
    model, guide = pair(loc, scale)
    kl = kl_per_dimension(model, guide, torch.zeros(5))
    expected = 0.5 * (scale**2 + loc**2 - 1) - scale.log()
    torch.testing.assert_close(kl, expected)
    assert float(kl[1]) == 0.0  # a collapsed dimension


def test_kl_per_dimension_of_a_one_dimensional_latent():
    # z [batch] (no event dim) is a latent of one dimension per datapoint: one KL, averaged
    # over the batch, not one per datapoint.
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_tensor(0.0), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x, 0.5))

    x = torch.tensor([0.0, 1.0, -2.0, 3.0])
    kl = kl_per_dimension(model, guide, x)
    expected = (0.5 * (0.25 + x**2 - 1) - math.log(0.5)).mean()
    assert kl.shape == (1,)
    torch.testing.assert_close(kl, expected.reshape(1))


def test_kl_per_dimension_refuses_other_shapes():
    def global_model(x):
        z = pyro.sample("z", dist.Normal(x.new_zeros(3), 1.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(z[0], 1.0), obs=x)

    def global_guide(x):
        pyro.sample("z", dist.Normal(x.new_zeros(3), 2.0).to_event(1))

    with pytest.raises(ValueError, match=r"site 'z' outside pyro.plate\('data'\) has value "
                                         r"shape \[3\]; expected \[batch, latent_dim\]"):
        kl_per_dimension(global_model, global_guide, torch.zeros(5))

    def grid_model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2, 3), 1.0).to_event(2))
            pyro.sample("x", dist.Normal(z[..., 0, 0], 1.0), obs=x)

    def grid_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2, 3), 2.0).to_event(2))

    with pytest.raises(ValueError, match=r"in pyro.plate\('data'\) has value shape "
                                         r"\[5, 2, 3\]; expected \[batch, latent_dim\]"):
        kl_per_dimension(grid_model, grid_guide, torch.zeros(5))


def test_active_units_counts_varying_means():
    means = torch.stack([torch.linspace(-1, 1, 50), torch.full((50,), 0.3),
                         0.01 * torch.randn(50)], dim=1)
    count, variance = active_units(means)
    assert count == 1 and variance.shape == (3,)
    with pytest.raises(ValueError, match="batch >= 2"):
        active_units(means[:1])
    with pytest.raises(ValueError, match="means .* 1 non-finite values"):
        active_units(means.index_put((torch.tensor(3), torch.tensor(0)), torch.tensor(math.nan)))
    with pytest.raises(TypeError, match="posterior_means"):
        active_units(means.numpy())


def test_posterior_means_and_expected_log_likelihood():
    loc = torch.tensor([0.5, 0.0, 0.0])
    model, guide = pair(loc, torch.tensor(1e-4))
    x = torch.tensor([0.5, 1.5])
    torch.testing.assert_close(posterior_means(guide, x), loc.expand(2, 3))
    # with an almost deterministic guide, E_q log N(x; z_0, 1) = log N(x; 0.5, 1)
    expected = -0.5 * (x - 0.5) ** 2 - 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(expected_log_likelihood(model, guide, x, num_samples=3),
                               expected, atol=1e-3, rtol=0)


def test_expected_log_likelihood_checks_num_samples_and_nan():
    model, guide = pair(torch.zeros(3), torch.tensor(1.0))
    x = torch.tensor([0.5, 1.5])
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="num_samples must be a positive integer"):
            expected_log_likelihood(model, guide, x, num_samples=bad)
    with pytest.raises(ValueError, match="num_samples"):  # refused before allocating
        expected_log_likelihood(model, guide, x, num_samples=10**12)
    shift = torch.tensor([0.0, math.nan])

    def nan_model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(3), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z[..., 0] + shift, 1.0), obs=x)

    with pyro.validation_enabled(False), pytest.raises(
            ValueError, match=r"log p\(x \| z\) is NaN for datapoints \[1\]"):
        expected_log_likelihood(nan_model, guide, x, num_samples=2)


def test_probe_separates_linearly_separable_classes():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 2
    features = torch.randn(200, 2, generator=gen) + 4.0 * labels[:, None]
    accuracy = probe_accuracy(features[:100], labels[:100], features[100:], labels[100:])
    # the Bayes rule for these two Gaussians is the line f0 + f1 = 4; a fitted linear probe
    # may lose at most two test points to it
    bayes = float(((features[100:].sum(1) > 4).long() == labels[100:]).float().mean())
    assert accuracy >= bayes - 0.02, (accuracy, bayes)
    noise = torch.randn(200, 2, generator=gen)
    assert probe_accuracy(noise[:100], labels[:100], noise[100:], labels[100:]) < 0.7


def test_empty_batches_are_refused_by_name():
    model, guide = pair(torch.zeros(3), torch.tensor(1.0))
    empty = torch.zeros(0)
    for use in (lambda: posterior_means(guide, empty),
                lambda: kl_per_dimension(model, guide, empty),
                lambda: expected_log_likelihood(model, guide, empty)):
        with pytest.raises(ValueError, match=r"argument 0 has no datapoints \(shape \[0\]\)"):
            use()


def test_posterior_means_of_a_pair_call_is_refused_by_name():
    # posterior_means(model, guide, x) took the model as the guide and ran it on (guide, x):
    # "model() takes 1 positional argument but 2 were given", from inside the user's code
    model, guide = pair(torch.zeros(3), torch.tensor(1.0))
    with pytest.raises(TypeError, match=r"posterior_means\(guide, \*args\) takes the guide "
                                        r"alone: argument 0 is a callable \(guide\)"):
        posterior_means(model, guide, torch.zeros(2))


def test_expected_log_likelihood_counts_its_particles_first():
    # 10**9 draws in one vectorized pass failed inside Pyro with the allocator's error
    from ppl_models import VAE

    vae = VAE((1, 8, 8), 4, "bernoulli", "mlp", (16,)).eval()
    x = (torch.rand(3, 1, 8, 8) > 0.5).float()
    with pytest.raises(ValueError, match=r"num_samples=1000000000 particles for 3 datapoints: "
                                         r"all in one pass.*lower num_samples"):
        expected_log_likelihood(vae.model, vae.guide, x, num_samples=10**9)


def test_posterior_means_of_other_event_shapes():
    loc = torch.arange(6.0).reshape(2, 3)

    def grid_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, 0.5).to_event(2))

    def scalar_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(2.0 * x, 0.5))

    x = torch.tensor([1.0, -1.0, 3.0, 0.0])
    assert torch.equal(posterior_means(grid_guide, x), loc.expand(4, 2, 3))
    assert torch.equal(posterior_means(scalar_guide, x), 2.0 * x)


def test_posterior_means_refuses_observed_sites_and_outer_plates():
    model, guide = pair(torch.zeros(3), torch.tensor(1.0))
    x = torch.tensor([0.5, 1.5])
    # the model passed as guide: its latent 'z' would be read off the prior (zeros)
    for site in ("x", "z"):
        with pytest.raises(ValueError, match="program passed as guide observes site 'x'"):
            posterior_means(model, x, site=site)
    with pytest.raises(ValueError, match="program passed as guide observes site 'x'"):
        kl_per_dimension(guide, model, x)
    with pytest.raises(ValueError, match="program passed as model observes no site"):
        kl_per_dimension(guide, guide, x)
    with pytest.raises(ValueError, match="the guide has no sample site 'w'"):
        posterior_means(guide, x, site="w")

    def particles_guide(x):
        with pyro.plate("particles", 4, dim=-2), pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(x.new_zeros(3), 1.0).to_event(1))

    with pytest.raises(ValueError, match=r"site 'z' has value shape \[4, 2, 3\] \(event dims "
                                         r"1\); expected \[batch, ...\]"):
        posterior_means(particles_guide, x)

    def global_guide(x):
        pyro.sample("z", dist.Normal(x.new_zeros(3), 1.0).to_event(1))

    with pytest.raises(ValueError, match=r"site 'z' has value shape \[3\]"):
        posterior_means(global_guide, x)


def test_active_units_accepts_integers_and_checks_threshold():
    means = torch.tensor([[0, 5, 1], [0, -5, 1], [0, 5, 2], [0, -5, 2]])
    count, variance = active_units(means)
    # unbiased variances by hand: 0, 4 * 25 / 3, 4 * 0.25 / 3
    torch.testing.assert_close(variance, torch.tensor([0.0, 100 / 3, 1 / 3]))
    assert count == 2
    assert active_units(means, threshold=1.0)[0] == 1
    assert active_units(means, threshold=0)[0] == 2
    for bad in (math.nan, math.inf, -0.5, "0.1", True, None):
        with pytest.raises(ValueError, match="threshold must be"):
            active_units(means, threshold=bad)
    with pytest.raises(TypeError, match="means must hold real numbers, got dtype torch.bool"):
        active_units(means > 0)
    with pytest.raises(ValueError, match=r"got \[4\] .*reshape"):
        active_units(means[:, 0].float())


def test_probe_accuracy_checks_its_inputs_by_name():
    features = [[0.0, 0.1], [0.2, 0.0], [3.0, 3.1], [3.2, 2.9]]
    labels = [0, 0, 1, 1]
    # lists and tensors give the same (perfect) probe
    assert probe_accuracy(features, labels, features, labels) == 1.0
    assert probe_accuracy(torch.tensor(features), torch.tensor(labels),
                          torch.tensor(features), torch.tensor(labels)) == 1.0
    with pytest.raises(ValueError, match=r"test_features \[4, 2\] and test_labels \[3\] "
                                         "disagree"):
        probe_accuracy(features, labels, features, labels[:3])
    with pytest.raises(ValueError, match=r"train_features \[3, 2\] and train_labels \[4\]"):
        probe_accuracy(features[:3], labels, features, labels)
    with pytest.raises(ValueError, match=r"train_labels hold a single class \(1\)"):
        probe_accuracy(features, [1, 1, 1, 1], features, labels)
    with pytest.raises(ValueError, match=r"train_features \[4, 2\] and test_features \[4, 1\]"):
        probe_accuracy(features, labels, [[0.0]] * 4, labels)
    with pytest.raises(TypeError, match="train_labels must hold integer class labels"):
        probe_accuracy(features, [0.0, 0.5, 1.0, 1.5], features, labels)
    with pytest.raises(ValueError, match=r"test_features must be \[n_test >= 1, k >= 1\], "
                                         r"got shape \[0, 2\]"):
        probe_accuracy(features, labels, torch.zeros(0, 2), [])
    with pytest.raises(ValueError, match="train_features has 1 non-finite values"):
        probe_accuracy([[math.nan, 0.0]] + features[1:], labels, features, labels)
    with pytest.raises(ValueError, match="max_iter must be a positive integer"):
        probe_accuracy(features, labels, features, labels, max_iter=0)


def test_posterior_means_names_a_guide_without_a_closed_form_mean():
    # FlowVAE's IAF guide raised NotImplementedError() with an empty message
    from ppl_models.flow_guide import FlowVAE

    torch.manual_seed(0)
    vae = FlowVAE((1, 2, 2), latent_dim=2, hidden=(4,), num_flows=1).eval()
    x = torch.ones(3, 1, 2, 2)
    with pytest.raises(NotImplementedError, match=r"posterior_means: the guide's distribution "
                                                  r"at site 'z' \(IAFNormal\) has no "
                                                  r"closed-form mean; average draws"):
        posterior_means(vae.guide, x)


def test_posterior_means_refuses_an_undefined_mean():
    # a Cauchy's mean is NaN in torch, and active_units of it used to be the first to notice
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Cauchy(x.new_zeros(x.shape[0], 3), 1.0).to_event(1))

    with pytest.raises(ValueError, match=r"posterior_means: the mean of the guide's Independent "
                                         r"at site 'z' is not finite in 6 of 6 values"):
        posterior_means(guide, torch.zeros(2))


def test_probe_accuracy_standardizes_huge_features_without_overflow():
    # features around 1e200 gave sklearn's "Input X contains NaN" (the scaler's squares)
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 2
    features = torch.randn(200, 2, generator=gen, dtype=torch.float64) + 4.0 * labels[:, None]
    plain = probe_accuracy(features[:100], labels[:100], features[100:], labels[100:])
    for scale in (1e200, 1e-200, 2.0**1000):
        scaled = features * scale
        assert probe_accuracy(scaled[:100], labels[:100], scaled[100:], labels[100:]) == plain
    test = features[100:].clone()
    test[7] = torch.tensor([1.7e308, 1.7e308], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"test_features: 1 of 100 rows \(first 7\) get a "
                                         r"non-finite probe score"):
        probe_accuracy(features[:100], labels[:100], test, labels[100:])


def test_kl_per_dimension_names_a_full_covariance_guide():
    # LinearGaussian's guide is a MultivariateNormal: "per-dimension diagnostics need diagonal
    # Normal distributions", naming neither the call nor the site
    from ppl_models import LinearGaussian

    lg = LinearGaussian(data_dim=3, latent_dim=2, seed=0)
    with pytest.raises(NotImplementedError, match=r"kl_per_dimension: the guide's site 'z' is "
                                                  r"a MultivariateNormal"):
        kl_per_dimension(lg.model, lg.guide, torch.randn(4, 3))


def test_kl_per_dimension_refuses_a_hierarchical_pair_whose_kl_is_one_draw():
    """TwoLayerVAE's p(z1 | z2) is the Normal at a drawn z2 and q(z2 | z1) the Normal at a
    drawn z1: the "analytic" KL used to change on every call (a one-draw Monte Carlo value)."""
    from ppl_models import VAE, TwoLayerVAE

    torch.manual_seed(0)
    t = TwoLayerVAE((1, 4, 4), latent_dim=2, top_latent_dim=2, hidden=(8,), top_hidden=(8,))
    x = (torch.rand(3, 1, 4, 4) > 0.5).float()
    with pytest.raises(ValueError, match=r"prior p\(z1 \| \.\.\.\) at site 'z1' is computed "
                                         r"from the draw of latent site 'z2'"):
        kl_per_dimension(t.model, t.guide, x, site="z1")
    with pytest.raises(ValueError, match=r"guide's q\(z2 \| \.\.\.\) at site 'z2' is computed "
                                         r"from the draw of latent site 'z1'"):
        kl_per_dimension(t.model, t.guide, x, site="z2")
    # a plain VAE: q(z | x) and p(z) depend on the data alone, so the KL is the same every call
    v = VAE((1, 4, 4), latent_dim=2, hidden=(8,))
    first = kl_per_dimension(v.model, v.guide, x)
    assert first.shape == (2,) and torch.equal(first, kl_per_dimension(v.model, v.guide, x))
    loc, scale = v.encode(x)
    expected = (0.5 * (loc**2 + scale**2 - 1) - scale.log()).mean(0)
    assert torch.allclose(first, expected.detach(), atol=1e-6)


def test_expected_log_likelihood_of_a_pair_whose_shapes_broadcast_by_accident():
    # the model reads z as [N, 2] (z.sum(-1, keepdim=True).expand(-1, D)): the survey's two
    # draws broadcast, four failed inside torch (a raw RuntimeError); the draws are now
    # scored one pass each. Closed form with the guide's N(0, I) over z: z1 + z2 ~ N(0, 2),
    # E log p(x | z) = sum_d -log(2 pi)/2 - (x_d^2 + 2)/2; 4000 draws, standard error
    # below 0.1 nats per datapoint here, tolerance 0.4
    import math

    import pyro
    import pyro.distributions as dist

    from inference import expected_log_likelihood

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
            mean = z.sum(-1, keepdim=True).expand(-1, x.shape[-1])
            pyro.sample("x", dist.Normal(mean, 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.0, 1.0).expand([len(x), 2]).to_event(1))

    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    pyro.set_rng_seed(0)
    result = expected_log_likelihood(model, guide, x, num_samples=4000)
    exact = (-0.5 * math.log(2 * math.pi) - 0.5 * (x ** 2 + 2)).sum(-1)
    torch.testing.assert_close(result, exact, atol=0.4, rtol=0)
