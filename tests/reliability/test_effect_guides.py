"""Effect-based guides (Pyro's ``GuideMessenger``: ``AutoNormalMessenger``,
``AutoHierarchicalNormalMessenger``, a user's own): they run the model under themselves, and
Pyro's ELBOs read their two traces from ``get_traces()``. Refused by name before the sixth
session of 2026-11-29; now the estimators and ``fit`` trace their draws alone
(:func:`inference.effect_guides.traceable_guide`), checked against the closed-form evidence of
a Gamma-Poisson pair and against Pyro's own ``Trace_ELBO``. Their parameters per datapoint
follow the rows by position, as ``AutoNormal``'s do, so shuffled minibatches are refused
unless the model takes the indices."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoHierarchicalNormalMessenger, AutoNormalMessenger
from pyro.poutine.guide import GuideMessenger
from torch.distributions import constraints

from inference import PairError, elbo, fit, iwae_bound, joint_log_evidence

X = torch.tensor([0.0, 3.0, 7.0, 1.0, 2.0, 5.0])
N = len(X)
# z ~ Gamma(2, 1), x | z ~ Poisson(z): x is negative binomial, p(x) = (x + 1) / 2^(x + 2)
EXACT = torch.log(X + 1) - (X + 2) * math.log(2)


def model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Gamma(2.0, 1.0))
        pyro.sample("x", dist.Poisson(z), obs=x)


def indexed_model(x, idx):
    with pyro.plate("data", N, subsample=idx):
        z = pyro.sample("z", dist.Gamma(2.0, 1.0))
        pyro.sample("x", dist.Poisson(z), obs=x)


class GammaGuide(GuideMessenger):
    """A user's own effect-based guide: one Gamma posterior per datapoint (Pyro params)."""

    def get_posterior(self, name, prior):
        shape = pyro.param("q_shape", lambda: torch.full((N,), 2.0),
                           constraint=constraints.positive)
        rate = pyro.param("q_rate", lambda: torch.ones(N), constraint=constraints.positive)
        return dist.Gamma(shape, rate)


@pytest.mark.parametrize("kind", [AutoNormalMessenger, AutoHierarchicalNormalMessenger])
def test_a_trained_messenger_bounds_the_exact_evidence(kind):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = kind(model)
    fit(model, guide, X, epochs=300, batch_size=N, shuffle=False, lr=0.05, progress=False)
    bound = iwae_bound(model, guide, X, num_samples=20000, progress=False)
    lower = elbo(model, guide, X, num_samples=20000, progress=False)
    # a trained lognormal guide of a Gamma posterior: IWAE_20000 within 0.02 of log p(x),
    # the ELBO below it (its gap, the KL, is 0.01-0.2 nats here)
    assert (bound - EXACT).abs().max() < 0.02, (bound - EXACT)
    assert (lower < bound + 0.005).all() and (lower > EXACT - 0.5).all()


def test_the_elbo_of_a_messenger_is_pyros_trace_elbo_of_it():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoNormalMessenger(model, init_scale=0.5)
    ours = float(elbo(model, guide, X, num_samples=40000, progress=False).sum())
    pyros = -pyro.infer.Trace_ELBO(num_particles=40000, vectorize_particles=True,
                                   max_plate_nesting=1).loss(model, guide, X)
    # both Monte Carlo: the per-draw ELBO's standard deviation here is about 2 nats, so the
    # means of 40000 draws agree within 0.05
    assert abs(ours - pyros) < 0.05, (ours, pyros)
    exact_elbo_free_bound = float(EXACT.sum())
    assert ours < exact_elbo_free_bound


def test_a_users_own_guide_messenger_scores_its_exact_posterior():
    # the exact posterior Gamma(2 + x, 2) as a GuideMessenger: every weight is log p(x)
    pyro.clear_param_store()
    pyro.param("q_shape", 2.0 + X, constraint=constraints.positive)
    pyro.param("q_rate", torch.full((N,), 2.0), constraint=constraints.positive)
    guide = GammaGuide(model)
    bound = iwae_bound(model, guide, X, num_samples=50, progress=False)
    torch.testing.assert_close(bound, EXACT, atol=2e-5, rtol=0)
    joint = joint_log_evidence(model, guide, X, num_samples=50, progress=False)
    assert abs(float(joint.log_evidence) - float(EXACT.sum())) < 1e-4


def test_per_datapoint_parameters_by_position_refuse_shuffled_minibatches():
    # AutoNormalMessenger keeps one loc and scale per datapoint: shuffled, they trained on
    # other rows' data (joint ELBO -13.8 against -11.1 unshuffled, silently)
    pyro.clear_param_store()
    guide = AutoNormalMessenger(model)
    with pytest.raises(PairError, match=r"AutoNormalMessenger keeps parameters for each "
                                        r"datapoint of pyro.plate\('data'\), by position"):
        fit(model, guide, X, epochs=2, batch_size=N, progress=False)  # shuffled by default
    with pytest.raises(PairError, match="AutoNormalMessenger keeps parameters"):
        fit(model, guide, X, epochs=2, batch_size=2, shuffle=False, progress=False)
    with pytest.raises(PairError, match="valid"):
        fit(model, guide, X, epochs=2, batch_size=N, shuffle=False, valid_data=X[:2],
            progress=False)


def test_an_index_aware_model_trains_a_messenger_on_shuffled_minibatches():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoNormalMessenger(indexed_model)
    fit(indexed_model, guide, (X, torch.arange(N)), epochs=1500, batch_size=2, lr=0.05,
        progress=False)
    bound = iwae_bound(indexed_model, guide, X, torch.arange(N), num_samples=20000,
                       progress=False)
    # each row's parameters followed its index: every datapoint's bound is near its own
    # evidence (rows trained on other data were 0.5-3 nats off)
    assert (bound - EXACT).abs().max() < 0.03, (bound - EXACT)


def test_shared_parameters_train_on_shuffled_minibatches():
    pyro.clear_param_store()
    guide = AutoNormalMessenger(model, amortized_plates=("data",))
    history = fit(model, guide, X, epochs=3, batch_size=2, lr=0.05, progress=False)
    assert len(history) == 3 and guide.locs.z.shape == ()


def test_a_messenger_resumes_as_an_uninterrupted_run(tmp_path):
    def train(path, epochs, resume):
        pyro.clear_param_store()
        guide = AutoNormalMessenger(model)
        guide(X)  # its parameters exist before fit
        fit(model, guide, X, epochs=epochs, batch_size=N, shuffle=False, lr=0.05, seed=2,
            checkpoint=path, resume=resume, progress=False)
        return guide

    straight = train(tmp_path / "a.pt", 4, False)
    train(tmp_path / "b.pt", 2, False)
    resumed = train(tmp_path / "b.pt", 4, True)
    assert torch.equal(resumed.locs.z, straight.locs.z)
    assert torch.equal(resumed.scales.z, straight.scales.z)


def test_a_compiled_path_refuses_a_messenger_by_name():
    pyro.clear_param_store()
    guide = AutoNormalMessenger(model)
    for call in (lambda: iwae_bound(model, guide, X, num_samples=4, compile=True,
                                    progress=False),
                 lambda: fit(model, guide, X, epochs=1, batch_size=N, shuffle=False,
                             compile=True, progress=False)):
        with pytest.raises(ValueError, match=r"compile=True: the guide is a "
                                             r"AutoNormalMessenger, an effect-based guide"):
            call()
