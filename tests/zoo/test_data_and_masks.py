"""Observed values outside a likelihood's support, latents that model and guide mask
differently, and infinite weights: refused by name rather than scored into a wrong number."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import PairError, elbo, fit, iwae_bound, log_evidence

DTYPE = torch.float64


def _latent_logit_pair(likelihood):
    """z ~ N(0, 1) per datapoint, y ~ likelihood(z); the guide is the prior."""

    def model(y):
        with pyro.plate("data", len(y)):
            z = pyro.sample("z", dist.Normal(torch.zeros((), dtype=DTYPE), 1.0))
            pyro.sample("y", likelihood(z), obs=y)

    def guide(y):
        with pyro.plate("data", len(y)):
            pyro.sample("z", dist.Normal(torch.zeros((), dtype=DTYPE), 1.0))

    return model, guide


OUT_OF_SUPPORT = [
    ("Bernoulli", lambda z: dist.Bernoulli(logits=z), [3.0, 1.0]),
    ("Poisson", lambda z: dist.Poisson(z.exp()), [2.5, 1.0]),
    ("Categorical", lambda z: dist.Categorical(logits=torch.stack([z, -z, 0 * z], -1)),
     [5, 1]),
    ("Exponential", lambda z: dist.Exponential(z.exp()), [-1.0, 2.0]),
]


@pytest.mark.parametrize("family, likelihood, values", OUT_OF_SUPPORT,
                         ids=[case[0] for case in OUT_OF_SUPPORT])
@pytest.mark.parametrize("estimator", [iwae_bound, elbo, log_evidence])
def test_an_observed_value_outside_the_support_is_refused(family, likelihood, values,
                                                          estimator):
    # these used to be scored silently (a Bernoulli at 3 gave a log-likelihood above 0) or
    # fail deep in torch (a Categorical index out of range)
    model, guide = _latent_logit_pair(likelihood)
    y = torch.tensor(values, dtype=torch.long if family == "Categorical" else DTYPE)
    with pytest.raises(PairError, match=f"observed site 'y' \\({family}\\)"):
        estimator(model, guide, y, num_samples=10)


def test_an_observed_value_outside_the_support_stops_fit_before_any_step():
    model, guide = _latent_logit_pair(lambda z: dist.Bernoulli(logits=z))
    with pytest.raises(PairError, match="observed site 'y' \\(Bernoulli\\)"):
        fit(model, guide, torch.tensor([3.0, 1.0, 0.0], dtype=DTYPE), epochs=1,
            progress=False)


def test_a_likelihood_told_not_to_validate_scores_soft_targets():
    # Pyro's VAE tutorial scores grey levels with Bernoulli(..., validate_args=False): its
    # choice is kept. With the prior as guide, IWAE_K estimates log E_z[p(y | z)], here by
    # quadrature on a grid of z.
    y = torch.tensor([0.3, 0.9], dtype=DTYPE)
    model, guide = _latent_logit_pair(lambda z: dist.Bernoulli(logits=z, validate_args=False))
    grid = torch.linspace(-12, 12, 24001, dtype=DTYPE)
    log_joint = (dist.Normal(0.0, 1.0).log_prob(grid)[:, None]
                 + dist.Bernoulli(logits=grid[:, None], validate_args=False).log_prob(y))
    exact = torch.logsumexp(log_joint, 0) + math.log(float(grid[1] - grid[0]))
    pyro.set_rng_seed(0)
    estimate = iwae_bound(model, guide, y, num_samples=20000)
    torch.testing.assert_close(estimate, exact, rtol=0, atol=0.01)


def _masked_pair(observed, guide_masks):
    """z ~ N(0, 1), x ~ N(2 z + 0.5, 0.7) with Pyro's obs_mask; the guide is z's exact
    posterior and imputes the missing x, under the model's mask or not."""
    a, b, s = 2.0, 0.5, 0.7

    def posterior(x):
        precision = 1 + a * a / s ** 2
        return (a / s ** 2) * (x - b) / precision, precision ** -0.5

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros((), dtype=DTYPE), 1.0))
            pyro.sample("x", dist.Normal(a * z + b, s), obs=x, obs_mask=observed)

    def guide(x):
        loc, scale = posterior(x)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc, scale))
            with pyro.poutine.mask(mask=~observed if guide_masks else True):
                pyro.sample("x_unobserved", dist.Normal(a * loc + b, 5.0))

    truth = dist.Normal(torch.tensor(b, dtype=DTYPE), math.sqrt(a * a + s * s))
    return model, guide, truth


def test_a_latent_masked_by_the_model_only_is_refused():
    # obs_mask makes 'x_unobserved', masked where x is observed; a guide sampling it unmasked
    # used to put IWAE about 3.7 nats above log p(x) on the observed rows
    observed = torch.tensor([False, True, True, True])
    x = torch.tensor([-1.0, 0.3, 2.5, 4.0], dtype=DTYPE)
    model, guide, _ = _masked_pair(observed, guide_masks=False)
    for estimator in (iwae_bound, elbo):
        with pytest.raises(PairError, match="latent site 'x_unobserved' is masked differently"):
            estimator(model, guide, x, num_samples=10)


def test_a_latent_masked_alike_in_model_and_guide_gives_the_exact_evidence():
    observed = torch.tensor([False, True, True, True])
    x = torch.tensor([-1.0, 0.3, 2.5, 4.0], dtype=DTYPE)
    model, guide, truth = _masked_pair(observed, guide_masks=True)
    # on the observed rows the imputation is masked on both sides and z's guide is exact:
    # every weight equals log p(x_i)
    estimate = iwae_bound(model, guide, x, num_samples=50)
    torch.testing.assert_close(estimate[1:], truth.log_prob(x[1:]), rtol=0, atol=1e-9)


def test_an_infinite_weight_is_refused():
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros((), dtype=DTYPE), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)
            pyro.factor("boost", torch.where(x > 1, math.inf, 0.0))

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(torch.zeros((), dtype=DTYPE), 1.0))

    with pytest.raises(ValueError, match=r"importance weights are \+inf for datapoints \[1\]"):
        iwae_bound(model, guide, torch.tensor([0.0, 2.0, -1.0], dtype=DTYPE), num_samples=10)


def test_an_observed_value_that_is_not_a_tensor_is_named():
    # a list beside tensor data used to fail with an AttributeError inside the survey
    def model(x, y):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros((), dtype=DTYPE), 1.0))
            pyro.sample("y", dist.Normal(z + x, 1.0), obs=y)

    def guide(x, y):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(torch.zeros((), dtype=DTYPE), 1.0))

    with pytest.raises(PairError, match="observed site 'y' observes a list"):
        iwae_bound(model, guide, torch.zeros(2, dtype=DTYPE), [0.1, 0.2], num_samples=5)
