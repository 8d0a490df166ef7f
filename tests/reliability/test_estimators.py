"""Estimator arguments: each bad value gets an error naming it, before any work.

Before issue 14: an empty batch raised ZeroDivisionError inside pyro.plate, repeats=0 blamed
num_samples, data_batch_size=0 gave range() errors, a discrete latent was integrated as if
continuous when Pyro's validation was off (wrong by more than a nat), num_points 0/1 or
reversed bounds gave IndexError / NaN messages.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import bound_sweep, elbo, exact_log_evidence, iwae_bound, log_evidence
from inference.evidence.estimators import iwae_from_weights
from ppl_models import LinearGaussian


@pytest.fixture
def lg():
    return LinearGaussian(data_dim=2, latent_dim=1, seed=0)


@pytest.mark.parametrize("estimator", [elbo, iwae_bound, bound_sweep])
def test_empty_batch(lg, estimator):
    kwargs = {"num_samples": 2} if estimator is iwae_bound else {}
    with pytest.raises(ValueError, match=r"argument 0 has no datapoints \(shape \[0, 2\]\)"):
        estimator(lg.model, lg.guide, torch.zeros(0, 2), **kwargs)


def test_log_evidence_empty_and_bad_batch_size(lg):
    with pytest.raises(ValueError, match="n >= 1"):
        log_evidence(lg.model, lg.guide, torch.zeros(0, 2))
    for bad in (0, True, 2.5):
        with pytest.raises(ValueError, match="batch_size"):
            log_evidence(lg.model, lg.guide, torch.zeros(3, 2), batch_size=bad)


@pytest.mark.parametrize("name,value", [("repeats", 0), ("repeats", 1.5), ("repeats", True),
                                        ("data_batch_size", 0), ("data_batch_size", -3),
                                        ("num_samples", 10), ("num_samples", ())])
def test_bound_sweep_names_the_argument(lg, name, value):
    with pytest.raises(ValueError, match=name):
        bound_sweep(lg.model, lg.guide, torch.zeros(4, 2), **{name: value})


def test_iwae_from_weights_k(lg):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        iwae_from_weights(torch.zeros(4, 3), 0)
    with pytest.raises(ValueError, match=r"log_w must be a \[K, batch\]"):
        iwae_from_weights(torch.zeros(4), 2)


def discrete_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Bernoulli(0.5))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def test_exact_refuses_a_discrete_latent_with_validation_off():
    with pyro.validation_enabled(False):
        with pytest.raises(ValueError, match="site 'z' is discrete"):
            exact_log_evidence(discrete_model, torch.zeros(3))


def continuous_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


@pytest.mark.parametrize("kwargs,match", [
    ({"num_points": 0}, "num_points"), ({"num_points": 1}, "num_points"),
    ({"num_points": 100.0}, "num_points"), ({"bounds": (5.0, -5.0)}, "low < high"),
    ({"bounds": (0.0, 0.0)}, "low < high"), ({"bounds": (float("-inf"), 5.0)}, r"bounds\[0\]"),
    ({"bounds": (0.0, float("nan"))}, r"bounds\[1\]"), ({"bounds": 3.0}, "pair"),
    ({"chunk_size": 0}, "chunk_size"),
])
def test_exact_quadrature_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        exact_log_evidence(continuous_model, torch.zeros(3), **kwargs)


def test_exact_empty_batch():
    with pytest.raises(ValueError, match="no datapoints"):
        exact_log_evidence(continuous_model, torch.zeros(0))


def test_exact_still_correct():
    # N(0, 1) prior, N(z, 1) likelihood: p(x) = N(x; 0, 2) exactly
    x = torch.tensor([0.0, 1.5, -2.0], dtype=torch.float64)
    got = exact_log_evidence(continuous_model, x, num_points=2001).log_evidence
    torch.testing.assert_close(got, dist.Normal(0.0, 2.0**0.5).log_prob(x), atol=1e-6, rtol=0)
