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
