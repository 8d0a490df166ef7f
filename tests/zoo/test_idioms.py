"""Training idioms of Pyro users that fit must get right, and gradient estimators checked
against exact gradients by enumeration."""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from pyro.infer.autoguide import AutoNormal, init_to_value

from inference import SVIStep, fit, iwae_bound

DTYPE = torch.float64


def _global_mean_pair(n, noise, index_aware):
    """mu ~ N(0, 1), x_i ~ N(mu, noise): posterior sd 1 / sqrt(1 + n / noise^2)."""

    def model(x, idx=None):
        mu = pyro.sample("mu", dist.Normal(x.new_zeros(()), 1.0))
        if index_aware:  # declares the full size: scales its minibatch itself
            with pyro.plate("data", n, subsample=idx):
                pyro.sample("x", dist.Normal(mu, noise), obs=x)
        else:
            with pyro.plate("data", len(x)):
                pyro.sample("x", dist.Normal(mu, noise), obs=x)

    def guide(x, idx=None):
        loc = pyro.param("loc", torch.tensor(0.0, dtype=DTYPE))
        scale = pyro.param("scale", torch.tensor(0.5, dtype=DTYPE),
                           constraint=constraints.positive)
        pyro.sample("mu", dist.Normal(loc, scale))

    return model, guide


@pytest.mark.slow
@pytest.mark.parametrize("index_aware", [False, True])
def test_fit_scales_a_minibatch_once(index_aware):
    # The model either sizes its plate from the minibatch (fit scales by N / b) or declares
    # N and takes the indices (it scales itself, fit adds nothing). Both must reach the
    # exact posterior sd 1 / sqrt(1 + 40 / 0.25) = 0.0788 (within 15%: 800 noisy Adam steps
    # leave the scale a few percent off); scaling twice would shrink it by 1 / sqrt(2) or
    # more.
    n, noise = 40, 0.5
    x = 1.0 + noise * torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    model, guide = _global_mean_pair(n, noise, index_aware)
    history = fit(model, guide, (x, torch.arange(n)), loss="meanfield", epochs=400,
                  batch_size=20, lr=0.05, progress=False)
    exact_sd = 1 / math.sqrt(1 + n / noise ** 2)
    exact_mean = float(x.sum()) / noise ** 2 * exact_sd ** 2
    scale = float(pyro.param("scale").detach())
    assert abs(scale - exact_sd) < 0.15 * exact_sd, (scale, exact_sd)
    assert abs(float(pyro.param("loc").detach()) - exact_mean) < 0.1  # 1.3 posterior sd
    # train_loss is per datapoint: -ELBO / N is about -log p(x) / N ~ 0.5 nats here
    assert 0 < history[-1]["train_loss"] < 2


def _local_pair(n, noise):
    def model(x, idx):
        with pyro.plate("data", n, subsample=idx):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("x", dist.Normal(z, noise), obs=x)
    return model


@pytest.mark.slow
def test_autonormal_learns_per_datapoint_posteriors_with_index_aware_minibatches():
    # AutoNormal keeps one loc per datapoint; with the minibatch's indices passed as data the
    # shuffled minibatches reach each datapoint's own posterior mean x / (1 + noise^2).
    n, noise = 12, 0.5
    x = 2 * torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    model = _local_pair(n, noise)
    guide = AutoNormal(model, init_loc_fn=init_to_value(values={"z": torch.zeros(n, dtype=DTYPE)}),
                       create_plates=lambda x, idx: pyro.plate("data", n, subsample=idx))
    fit(model, guide, (x, torch.arange(n)), loss="elbo", epochs=300, batch_size=4, lr=0.05,
        progress=False)
    posterior_mean = x / (1 + noise ** 2)
    locs = pyro.param("AutoNormal.locs.z").detach()
    # within 0.25 of means that spread over +-4: rows given other rows' data would be off
    # by about 2
    assert float((locs - posterior_mean).abs().max()) < 0.25, (locs, posterior_mean)


@pytest.mark.parametrize("guide_plate", ["len(x)", "sizeless"])
def test_a_guide_plate_of_another_size_than_the_models_is_refused_by_fit(guide_plate):
    # model pyro.plate("data", n, subsample=idx) scales log p by n / b, a guide plate of
    # len(x) (or sizeless) scales log q by 1: fit recorded 21.76 nats per datapoint at lr=0
    # against a -ELBO of 18.97. The estimators score unscaled densities: the same numbers as
    # with the guide declaring the model's plate.
    n, noise = 12, 0.5
    x = 2 * torch.randn(n, generator=torch.Generator().manual_seed(3), dtype=DTYPE)
    model = _local_pair(n, noise)

    def guide(x, idx, own_plate=True):
        plate = pyro.plate("data", n, subsample=idx) if not own_plate else (
            pyro.plate("data", len(x)) if guide_plate == "len(x)" else pyro.plate("data"))
        with plate:
            scale = pyro.param("scale", torch.tensor(0.4, dtype=DTYPE),
                               constraint=constraints.positive)
            pyro.sample("z", dist.Normal(x / (1 + noise ** 2), scale))

    with pytest.raises(ValueError, match=r"the model declares pyro.plate\('data'\) of size 12 "
                                         r"and the guide of size 4, both over the same 4 rows"):
        fit(model, guide, (x, torch.arange(n)), epochs=1, batch_size=4, progress=False)
    bounds = []
    for own_plate in (True, False):
        pyro.set_rng_seed(0)
        bounds.append(iwae_bound(model, lambda x, idx: guide(x, idx, own_plate), x[:4],
                                 torch.arange(4), num_samples=10))
    torch.testing.assert_close(bounds[0], bounds[1], rtol=0, atol=1e-12)


def test_autonormal_without_indices_trains_on_all_data_unshuffled_and_is_refused_shuffled():
    n, noise = 8, 0.5
    x = 2 * torch.randn(n, generator=torch.Generator().manual_seed(2), dtype=DTYPE)

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("x", dist.Normal(z, noise), obs=x)

    guide = AutoNormal(model, init_loc_fn=init_to_value(values={"z": torch.zeros(n, dtype=DTYPE)}))
    with pytest.raises(ValueError, match="keeps parameters for each datapoint"):
        fit(model, guide, x, epochs=1, batch_size=n, progress=False)
    fit(model, guide, x, epochs=400, batch_size=n, lr=0.05, shuffle=False, progress=False)
    locs = pyro.param("AutoNormal.locs.z").detach()
    assert float((locs - x / (1 + noise ** 2)).abs().max()) < 0.15
    # the trained guide now gives an IWAE bound at the exact evidence
    evidence = dist.Normal(0.0, math.sqrt(1 + noise ** 2)).log_prob(x)
    bound = iwae_bound(model, guide, x, num_samples=500)
    assert float((bound - evidence).abs().max()) < 0.05


def test_subsample_is_replayed_across_chunks():
    # One call, one subsample: with chunks of 50 particles, a re-drawn subsample would mix
    # datapoints across chunks and the "bound" would sit far above log p(x) for some columns.
    n, noise = 50, 0.3
    x = 3 * torch.randn(n, generator=torch.Generator().manual_seed(3), dtype=DTYPE)

    def model(x):
        with pyro.plate("data", len(x), subsample_size=5) as idx:
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("x", dist.Normal(z, noise), obs=x[idx])

    def guide(x):
        with pyro.plate("data", len(x), subsample_size=5) as idx:
            pyro.sample("z", dist.Normal(x[idx] / (1 + noise ** 2), 0.5))

    bound = iwae_bound(model, guide, x, num_samples=1000, chunk_size=50)
    evidence = dist.Normal(0.0, math.sqrt(1 + noise ** 2)).log_prob(x[bound.subsample])
    assert bound.subsample.shape == (5,)
    assert float((bound - evidence).abs().max()) < 0.05


# Gradient of the ELBO for a pair with a discrete guide site --------------------------------
LOCS = torch.tensor([-1.5, 0.0, 2.0], dtype=DTYPE)


def _mixture_pair():
    def model(x):
        shift = pyro.param("shift", torch.tensor(0.3, dtype=DTYPE))
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Categorical(torch.full((3,), 1 / 3, dtype=DTYPE)))
            pyro.sample("x", dist.Normal(LOCS[c] + shift, 1.0), obs=x)

    def guide(x):
        sharpness = pyro.param("sharpness", torch.tensor(0.4, dtype=DTYPE))
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Categorical(logits=-sharpness * (x[:, None] - LOCS) ** 2))

    return model, guide


def _exact_elbo(x, shift, sharpness):
    """sum_i sum_c q(c | x_i) (log p(x_i, c) - log q(c | x_i)), by enumeration."""
    log_q = torch.log_softmax(-sharpness * (x[:, None] - LOCS) ** 2, -1)
    log_p = math.log(1 / 3) + dist.Normal(LOCS + shift, 1.0).log_prob(x[:, None])
    return (log_q.exp() * (log_p - log_q)).sum()


@pytest.mark.slow
def test_elbo_gradient_with_a_discrete_guide_site_matches_enumeration():
    # fit(loss="elbo")'s step (SVIStep, here on Trace_ELBO's score-function path since 'c'
    # is not reparameterized): the mean of 800 single-sample gradients must equal the
    # exact gradient within 4 standard errors.
    x = torch.tensor([-1.0, 0.5, 1.8, 2.5], dtype=DTYPE)
    model, guide = _mixture_pair()
    step = SVIStep(model, guide, loss="elbo")
    grads = {"shift": [], "sharpness": []}
    for _ in range(800):
        step.loss_and_grads(model, guide, x)
        for name in grads:
            param = pyro.param(name).unconstrained()
            grads[name].append(float(param.grad))
            param.grad = None
    assert not step.lean  # the lean path has no score-function term: it must not be used
    shift = torch.tensor(0.3, dtype=DTYPE, requires_grad=True)
    sharpness = torch.tensor(0.4, dtype=DTYPE, requires_grad=True)
    exact = torch.autograd.grad(-_exact_elbo(x, shift, sharpness), [shift, sharpness])
    for (name, values), truth in zip(grads.items(), exact):
        values = torch.tensor(values)
        se = float(values.std()) / math.sqrt(len(values))
        assert abs(float(values.mean()) - float(truth)) < 4 * se + 1e-6, (name, values.mean(),
                                                                           truth, se)


def test_importance_weighted_losses_refuse_a_discrete_guide_before_training():
    x = torch.tensor([-1.0, 0.5, 1.8, 2.5], dtype=DTYPE)
    model, guide = _mixture_pair()
    for loss in ("iwae", "dreg", "meanfield"):
        with pytest.raises(ValueError, match="guide site 'c' \\(Categorical\\) is not repar"):
            fit(model, guide, x, loss=loss, num_particles=2, epochs=1, progress=False)
    assert "sharpness" not in pyro.get_param_store()._params or float(
        pyro.param("sharpness")) == pytest.approx(0.4)


def _row_pairs(n):
    def model(x, idx=None):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def positional(x, idx=None):  # one row per datapoint, used by position
        loc = pyro.param("loc", torch.zeros(n, dtype=DTYPE))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc[:len(x)], 0.4))

    def amortized(x, idx=None):
        a = pyro.param("a", torch.tensor(0.5, dtype=DTYPE))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(a * x, 0.4))

    def indexed(x, idx=None):  # the same parameter, indexed by the rows' indices
        loc = pyro.param("loc", torch.zeros(n, dtype=DTYPE))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc[idx], 0.4))
    return model, {"positional": positional, "amortized": amortized, "indexed": indexed}


@pytest.mark.parametrize("guide, shuffle, batch_size, warned", [
    # (with the indices passed, one batch of all 12 rows keeps their order: nothing moves)
    ("positional", True, 12, False), ("positional", True, 4, True),
    ("positional", False, 12, False), ("amortized", True, 4, False),
    ("indexed", True, 4, False)])
def test_a_guide_parameter_used_by_row_position_is_named_when_rows_move(guide, shuffle,
                                                                         batch_size, warned):
    # fit's default shuffle=True gave a per-row pyro.param other rows every epoch: it never
    # trained (loc stayed near 0 against the optimum x / 1.25), without a word (a probe of
    # hand-written Pyro pairs)
    n = 12
    x = 2 * torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    model, guides = _row_pairs(n)
    pyro.clear_param_store()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(model, guides[guide], (x, torch.arange(n)), epochs=1, batch_size=batch_size,
            shuffle=shuffle, progress=False)
    moved = [w for w in caught if "changes when the rows are reordered" in str(w.message)]
    assert bool(moved) == warned, [str(w.message) for w in caught]


@pytest.mark.parametrize("constraint", ["simplex", "unit_interval", "logits"])
@pytest.mark.parametrize("shuffle, batch_size, warned", [(True, 4, True), (False, 12, False)])
def test_a_discrete_guide_parameter_used_by_row_position_is_named(constraint, shuffle,
                                                                  batch_size, warned):
    # The usual start of a per-datapoint discrete guide is uniform, every row alike: the
    # reorder probe compared equal rows and saw nothing (rows were made apart only for real
    # and positive parameters), so shuffled training silently gave rows other datapoints'
    # probabilities. Rows are now made apart in the constraint's unconstrained space.
    n, k = 12, 3
    x = torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=DTYPE)

    def model(x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Categorical(logits=x.new_zeros(k)))
            pyro.sample("x", dist.Normal(c.to(x.dtype) - 1.0, 0.5), obs=x)

    def guide(x):
        if constraint == "simplex":
            probs = pyro.param("q", torch.full((n, k), 1.0 / k, dtype=DTYPE),
                               constraint=constraints.simplex)
            pyro.sample("c", dist.Categorical(probs=probs[:len(x)]).to_event(0))
        elif constraint == "unit_interval":
            probs = pyro.param("q", torch.full((n,), 0.5, dtype=DTYPE),
                               constraint=constraints.unit_interval)
            with pyro.plate("data", len(x)):
                pyro.sample("c", dist.Bernoulli(probs[:len(x)]).to_event(0))
            return
        else:
            logits = pyro.param("q", torch.zeros(n, k, dtype=DTYPE))
            pyro.sample("c", dist.Categorical(logits=logits[:len(x)]).to_event(0))

    def bernoulli_model(x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Bernoulli(x.new_tensor(0.5)))
            pyro.sample("x", dist.Normal(c - 0.5, 0.5), obs=x)

    def guide_in_plate(x):
        with pyro.plate("data", len(x)):
            guide(x)

    pair_model = bernoulli_model if constraint == "unit_interval" else model
    pair_guide = guide if constraint == "unit_interval" else guide_in_plate
    pyro.clear_param_store()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(pair_model, pair_guide, x, epochs=1, batch_size=batch_size, shuffle=shuffle,
            loss=pyro.infer.TraceGraph_ELBO(), progress=False)
    moved = [w for w in caught if "changes when the rows are reordered" in str(w.message)]
    assert bool(moved) == warned, [str(w.message) for w in caught]
