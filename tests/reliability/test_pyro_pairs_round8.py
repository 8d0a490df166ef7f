"""Pairs a Pyro user writes that probes of 2026-11-29 (tenth session) found scored wrong,
refused falsely or failing raw; each test fails on the code before its fix.

- A Logistic latent as torch's ``TransformedDistribution`` docstring writes it (a Uniform
  through the inverse sigmoid and an affine map) got the support (-708, 36) from the
  clamped logit of the Uniform's ends: a narrower logistic guide was refused by every
  importance-weighted estimator, a wider one by ``elbo`` and ``fit``.
- A latent whose distribution declares no support (Pyro's ``GaussianScaleMixture``)
  failed with torch's empty ``NotImplementedError``; ``exact_log_evidence`` failed in its
  own message (``IndexError``) and would have blamed an improper prior.
- ``exact_log_evidence`` integrated a prior masked by ``dist.mask`` as a flat one (0.0 for
  the masked rows) where ``poutine.mask`` was refused.
- ``kl_per_dimension`` averaged masked-out values (a variable-length sequence's absent
  steps) as if present, and refused a ``Normal(...).mask(m)`` site.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.transforms import AffineTransform, SigmoidTransform
from scipy import integrate, stats
from torch.distributions import constraints

from inference import elbo, exact_log_evidence, iwae_bound, kl_per_dimension
from inference.pair_check import PairError
from inference.supports import support_of

X = torch.tensor([0.3, 1.5, 2.5], dtype=torch.float64)
NOISE = 0.7


def logistic(loc, scale):
    """The logistic distribution as torch's TransformedDistribution docstring builds it."""
    return dist.TransformedDistribution(
        dist.Uniform(torch.zeros_like(loc), torch.ones_like(loc)),
        [SigmoidTransform().inv, AffineTransform(loc, scale)])


def logistic_pair(guide_scale: float):
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", logistic(torch.zeros_like(x), torch.ones_like(x)))
            pyro.sample("x", dist.Normal(z, NOISE), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", logistic(0.5 * x, torch.full_like(x, guide_scale)))

    return model, guide


def logistic_evidence(x: float) -> float:
    """log p(x) = log integral Logistic(z; 0, 1) N(x; z, NOISE) dz by quadrature."""
    value, _ = integrate.quad(lambda z: stats.logistic.pdf(z) * stats.norm.pdf(x, z, NOISE),
                              -40, 40, points=[x], limit=200)
    return math.log(value)


def test_a_bijection_sends_its_domains_ends_to_its_codomains_ends():
    support, _ = support_of(logistic(torch.zeros(3), torch.ones(3)))
    assert isinstance(support, type(constraints.real))
    # a sigmoid of a real latent still reaches (0, 1), not (1e-308, 1)
    squashed = dist.TransformedDistribution(dist.Normal(0.0, 1.0), [SigmoidTransform()])
    low, high = support_of(squashed)[0].lower_bound, support_of(squashed)[0].upper_bound
    assert (float(low), float(high)) == (0.0, 1.0)


@pytest.mark.parametrize("guide_scale", [0.6, 1.5])
def test_logistic_latents_are_scored_against_quadrature(guide_scale):
    pyro.set_rng_seed(0)
    model, guide = logistic_pair(guide_scale)
    exact = torch.tensor([logistic_evidence(float(x)) for x in X], dtype=torch.float64)
    bound = iwae_bound(model, guide, X, num_samples=4000, progress=False)
    # IWAE_4000 of a guide this close is within a few hundredths of log p(x) (below it)
    assert torch.allclose(bound, exact, atol=0.05), (bound, exact)
    lower = elbo(model, guide, X, num_samples=4000, progress=False)
    assert bool((lower <= exact + 0.02).all())


def gaussian_scale_mixture_pair():
    coord = torch.tensor([1.0, 0.5])
    logits, scales = torch.zeros(3), torch.tensor([0.5, 1.0, 2.0])

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.GaussianScaleMixture(coord, logits, scales))
            pyro.sample("x", dist.Normal(z, 0.6).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.7 * x, 1.0).to_event(1))

    return model, guide


def test_a_distribution_without_a_support_is_named_not_a_bare_error():
    model, guide = gaussian_scale_mixture_pair()
    x = torch.randn(4, 2)
    assert support_of(dist.GaussianScaleMixture(torch.ones(2), torch.zeros(3),
                                                torch.ones(3)))[0] is constraints.dependent
    with pytest.raises(PairError, match=r"site 'z'.*GaussianScaleMixture.*AssertionError"):
        elbo(model, guide, x, num_samples=10, progress=False)
    with pytest.raises(ValueError, match="GaussianScaleMixture cannot") as refused:
        exact_log_evidence(model, x, progress=False)
    assert "improper" not in str(refused.value)


def test_exact_log_evidence_refuses_a_prior_masked_by_dist_mask():
    rows = torch.tensor([False, True, False])

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0).mask(rows))
            pyro.sample("x", dist.Normal(z, NOISE), obs=x)

    with pytest.raises(ValueError, match=r"masked out \(poutine.mask or dist.mask\) for "
                                         r"datapoints \[0, 2\]"):
        exact_log_evidence(model, X, progress=False)

    def unmasked(x):  # .mask(True) scores every row: no refusal
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0).mask(True))
            pyro.sample("x", dist.Normal(z, NOISE), obs=x)

    result = exact_log_evidence(unmasked, X, progress=False).log_evidence
    closed = dist.Normal(0.0, math.sqrt(1 + NOISE ** 2)).log_prob(X)
    assert torch.allclose(result.double(), closed, atol=1e-4)


LENGTHS = torch.tensor([1, 3, 2, 3, 1, 3])
STEPS = 3


def sequence_pair(masking: str):
    """Per-step latents of sequences of per-datapoint lengths, masked with ``poutine.mask``
    or with ``dist.mask`` (``masking``), as variable-length models are written."""

    def masked(fn, t):
        on = t < LENGTHS
        return fn.mask(on) if masking == "dist" else fn

    def model(x):
        with pyro.plate("data", len(x)):
            for t in range(STEPS):
                with pyro.poutine.mask(mask=t < LENGTHS) if masking == "poutine" else \
                        pyro.poutine.mask(mask=True):
                    z = pyro.sample(f"z_{t}", masked(dist.Normal(0.0, 1.0).expand([len(x)]), t))
                    pyro.sample(f"x_{t}", masked(dist.Normal(z, 0.7), t), obs=x[:, t])

    def guide(x):
        with pyro.plate("data", len(x)):
            for t in range(STEPS):
                with pyro.poutine.mask(mask=t < LENGTHS) if masking == "poutine" else \
                        pyro.poutine.mask(mask=True):
                    pyro.sample(f"z_{t}", masked(dist.Normal(0.5 * x[:, t] + 0.3, 0.9), t))

    return model, guide


@pytest.mark.parametrize("masking", ["poutine", "dist"])
def test_kl_per_dimension_counts_masked_values_as_the_elbo_does(masking):
    x = torch.randn(6, STEPS, generator=torch.Generator().manual_seed(0))
    model, guide = sequence_pair(masking)
    for t in range(STEPS):
        kl = torch.distributions.kl_divergence(dist.Normal(0.5 * x[:, t] + 0.3, 0.9),
                                               dist.Normal(0.0, 1.0))
        expected = (kl * (t < LENGTHS)).sum() / len(x)  # absent steps: no KL in the ELBO
        value = kl_per_dimension(model, guide, x, site=f"z_{t}")
        assert torch.allclose(value, expected.reshape(1), atol=1e-6), (t, value, expected)


def test_kl_per_dimension_refuses_masks_that_differ():
    x = torch.randn(4, 2)

    def model(x):
        with pyro.plate("data", len(x)), pyro.poutine.mask(mask=torch.tensor([1, 0, 1, 1]).bool()):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([len(x), 2]).to_event(1))
        with pyro.plate("data2", len(x)):
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(x, 1.0).to_event(1))

    with pytest.raises(ValueError, match="masked differently in the model and the guide"):
        kl_per_dimension(model, guide, x, site="z")
