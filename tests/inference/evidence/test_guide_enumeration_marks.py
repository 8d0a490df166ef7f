"""A guide whose discrete sites are marked for enumeration (Pyro's ss-VAE idiom,
``config_enumerate(guide)`` trained with ``TraceEnum_ELBO``; ``AutoDiscreteParallel``): the
estimators draw those sites from the guide as any other, so the weights stay importance
weights ``p(x, y, z) / q(y, z | x)`` with the guide as proposal. ``fit`` still refuses the
mark (it would train by sampling what the user meant to sum)."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate
from pyro.infer.autoguide import AutoDiscreteParallel

from inference import PairError, bound_sweep, elbo, fit, iwae_bound, log_importance_weights

PRIOR = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
MEANS = torch.tensor([-2.0, 0.0, 2.5], dtype=torch.float64)
NOISE = 0.5  # x | y, z ~ N(MEANS[y] + z, NOISE), z ~ N(0, 1)
X = torch.tensor([-2.6, -0.4, 0.3, 1.4, 2.2, 3.9], dtype=torch.float64)
SPREAD = math.sqrt(1.0 + NOISE ** 2)  # x | y ~ N(MEANS[y], SPREAD)


def log_evidence_exact(x: torch.Tensor) -> torch.Tensor:
    """``x: [n]`` -> ``[n]``: log sum_y p(y) N(x; MEANS[y], SPREAD)."""
    return torch.logsumexp(PRIOR.log() + dist.Normal(MEANS, SPREAD).log_prob(x[:, None]), -1)


def model(x):
    with pyro.plate("data", len(x)):
        y = pyro.sample("y", dist.Categorical(PRIOR))
        z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
        pyro.sample("x", dist.Normal(MEANS[y] + z, NOISE), obs=x)


def posterior_logits(x: torch.Tensor) -> torch.Tensor:
    """``x: [n]`` -> ``[n, 3]``: log p(y | x) up to a constant per row."""
    return PRIOR.log() + dist.Normal(MEANS, SPREAD).log_prob(x[:, None])


def exact_guide(x, mark=True):
    """The exact posterior: y | x, then z | x, y ~ N(0.8 (x - MEANS[y]), sqrt(0.2))."""
    infer = {"enumerate": "parallel"} if mark else {}
    with pyro.plate("data", len(x)):
        y = pyro.sample("y", dist.Categorical(logits=posterior_logits(x)), infer=infer)
        pyro.sample("z", dist.Normal(0.8 * (x - MEANS[y]), math.sqrt(0.2)))


def rough_guide(x):
    """A proposal off the posterior, so that the weights vary."""
    with pyro.plate("data", len(x)):
        y = pyro.sample("y", dist.Categorical(logits=-(x[:, None] - MEANS) ** 2))
        pyro.sample("z", dist.Normal(0.5 * (x - MEANS[y]), 0.8))


def test_an_exact_enumerating_guide_gives_the_exact_evidence_at_every_k():
    # with q the posterior, every weight is p(x) (up to rounding): the marked site is drawn
    # and scored with its own log q, not summed, not left out
    truth = log_evidence_exact(X)
    for bound in (elbo(model, exact_guide, X, num_samples=5, progress=False),
                  iwae_bound(model, exact_guide, X, num_samples=3, progress=False)):
        torch.testing.assert_close(bound, truth, rtol=0, atol=1e-10)


@pytest.mark.parametrize("marked", [config_enumerate(rough_guide),
                                    config_enumerate(rough_guide, "sequential")],
                         ids=["parallel", "sequential"])
def test_the_mark_changes_no_weight(marked):
    pyro.set_rng_seed(3)
    plain = log_importance_weights(model, rough_guide, X, num_samples=50, progress=False)
    pyro.set_rng_seed(3)
    torch.testing.assert_close(
        log_importance_weights(model, marked, X, num_samples=50, progress=False), plain,
        rtol=0, atol=0)


def test_an_enumerating_guide_off_the_posterior_bounds_the_evidence_in_order():
    # mean over 4 repeats; the IWAE bound rises with K towards log p(x) (Burda et al. 2015);
    # the standard errors of these means are below 0.01 nats (measured spread of repeats)
    pyro.set_rng_seed(0)
    table = bound_sweep(model, config_enumerate(rough_guide), X, num_samples=(1, 10, 2000),
                        repeats=4, progress=False)
    truth = float(log_evidence_exact(X).mean())
    rows = table.iwae()
    assert table.elbo() < rows["10"] < rows["2000"] <= truth + 0.02
    assert rows["2000"] > truth - 0.05


def test_auto_discrete_parallel_weights_average_to_the_evidence():
    # a pure mixture guided by AutoDiscreteParallel (its sites marked parallel): the weights
    # p(x, y) / q(y) are unbiased for p(x); their mean over K draws within 4 standard errors
    def mixture(x):
        with pyro.plate("data", len(x)):
            y = pyro.sample("y", dist.Categorical(PRIOR))
            pyro.sample("x", dist.Normal(MEANS[y], SPREAD), obs=x)

    pyro.clear_param_store()
    guide = AutoDiscreteParallel(config_enumerate(mixture))
    pyro.set_rng_seed(1)
    log_w = log_importance_weights(mixture, guide, X, num_samples=20000, progress=False)
    w = (log_w - log_evidence_exact(X)).exp()  # [K, n], mean 1 in expectation
    stderr = w.std(0) / math.sqrt(w.shape[0])
    assert ((w.mean(0) - 1).abs() < 4 * stderr + 1e-12).all(), (w.mean(0), stderr)
    pyro.clear_param_store()


def test_fit_still_refuses_the_mark():
    with pytest.raises(PairError, match=r"^fit\(loss=TraceEnum_ELBO\(\)\): guide site\(s\) "
                                        r"'y' are marked for enumeration"):
        fit(model, config_enumerate(rough_guide), X, loss=TraceEnum_ELBO(max_plate_nesting=1),
            epochs=1, progress=False)
