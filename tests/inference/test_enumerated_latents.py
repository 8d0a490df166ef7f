"""Discrete latents the model enumerates and the guide does not sample: the weights sum them
out, checked against closed forms and a hand-written forward algorithm; what is not summed
out is refused naming the site."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate
from pyro.nn import PyroModule
from pyro.ops.indexing import Vindex

from inference import (PairError, TemperedPairWarning, ais_log_evidence, amortization_gap,
                       bound_sweep, elbo, fit, iwae_bound, log_evidence,
                       log_importance_weights, weight_diagnostics)
from inference.pair_check import survey_pair
from inference.uses.representations import expected_log_likelihood
from inference.weights import particle_bytes, trace_log_density, vectorized_traces

LOCS = torch.tensor([-2.0, 0.0, 3.0], dtype=torch.float64)
MIX = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
X = torch.tensor([0.1, -1.0, 2.5, 4.0, -3.2], dtype=torch.float64)
# sums without a sampled latent are exact: float64 rounding only (1e-5 for float32)
EXACT = 1e-10


@config_enumerate
def mixture(x):
    with pyro.plate("data", len(x)):
        a = pyro.sample("a", dist.Categorical(MIX))
        pyro.sample("x", dist.Normal(LOCS[a], 1.0), obs=x)


def empty_guide(*args):
    pass


def mixture_log_density(x, scale=1.0):
    """log sum_a MIX_a N(x; LOCS_a, scale): ``x: [batch]`` -> ``[batch]``."""
    return torch.logsumexp(MIX.log() + dist.Normal(LOCS, scale).log_prob(x[:, None]), -1)


# pure mixture, empty guide: every weight is the exact log density -----------------------
def test_gaussian_mixture_with_an_empty_guide_is_exact():
    exact = mixture_log_density(X)
    for estimate in (iwae_bound(mixture, empty_guide, X, num_samples=3),
                     elbo(mixture, empty_guide, X, num_samples=2),
                     log_evidence(mixture, empty_guide, X, num_samples=4, batch_size=2)):
        assert estimate.shape == (5,)
        assert torch.allclose(estimate, exact, atol=EXACT, rtol=0)
    log_w = log_importance_weights(mixture, empty_guide, X, num_samples=4)
    assert log_w.shape == (4, 5)
    assert torch.allclose(log_w, exact.expand(4, 5), atol=EXACT, rtol=0)
    # log_evidence's default K = 1 is exact here too: it asked for num_samples, naming 'a'
    assert torch.allclose(log_evidence(mixture, empty_guide, X), exact, atol=EXACT, rtol=0)
    with pytest.raises(ValueError, match=r"latent site\(s\) 'z'.*pass num_samples=K"):
        log_evidence(shifted_mixture, z_guide, X)  # a sampled latent beside: K is needed


def test_bound_sweep_and_diagnostics_of_an_exact_mixture():
    exact = mixture_log_density(X)
    table = bound_sweep(mixture, empty_guide, X, num_samples=[1, 4], repeats=2,
                        progress=False)
    assert abs(table.elbo() - float(exact.mean())) < EXACT
    assert all(abs(mean - float(exact.mean())) < EXACT for mean in table.iwae().values())
    sliced = bound_sweep(mixture, empty_guide, X, num_samples=[1, 4], repeats=2,
                         data_batch_size=2, progress=False)
    assert abs(sliced.elbo() - float(exact.mean())) < EXACT
    report = weight_diagnostics(mixture, empty_guide, X, num_samples=50)
    assert torch.allclose(report.iwae, exact, atol=EXACT, rtol=0)


def test_mixture_in_float32():
    locs, mix, x = LOCS.float(), MIX.float(), X.float()

    @config_enumerate
    def model(x):
        with pyro.plate("data", len(x)):
            a = pyro.sample("a", dist.Categorical(mix))
            pyro.sample("x", dist.Normal(locs[a], 1.0), obs=x)

    estimate = iwae_bound(model, empty_guide, x, num_samples=3)
    assert estimate.dtype == torch.float32
    assert torch.allclose(estimate.double(), mixture_log_density(X), atol=1e-5, rtol=0)


def test_mixture_with_a_single_datapoint():
    x = torch.tensor([0.7], dtype=torch.float64)
    exact = mixture_log_density(x)
    assert torch.allclose(iwae_bound(mixture, empty_guide, x, num_samples=2), exact,
                          atol=EXACT, rtol=0)


# a continuous latent beside the enumerated one ------------------------------------------
@config_enumerate
def shifted_mixture(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
        a = pyro.sample("a", dist.Categorical(MIX))
        pyro.sample("x", dist.Normal(z + LOCS[a], 1.0), obs=x)


def z_guide(x):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(0.25 * x, 1.2))


def test_continuous_latent_beside_an_enumerated_one_converges_to_the_evidence():
    # x | a ~ N(LOCS_a, sqrt 2): the marginal is a Gaussian mixture
    exact = mixture_log_density(X, math.sqrt(2.0))
    k = 20000
    pyro.set_rng_seed(1)
    log_w = log_importance_weights(shifted_mixture, z_guide, X, num_samples=k)
    iwae = torch.logsumexp(log_w, 0) - math.log(k)
    # delta method: sd of log mean w is sd(w) / (sqrt(K) mean(w)); the bias is about half
    # its square, far smaller
    w = (log_w - log_w.max(0).values).exp()
    se = w.std(0) / (math.sqrt(k) * w.mean(0))
    tolerance = 5 * float(se.max())  # about 0.022 at seed 1
    assert tolerance < 0.03
    assert float((iwae - exact).abs().max()) < tolerance
    bound = elbo(shifted_mixture, z_guide, X, num_samples=k)
    iwae_10 = iwae_bound(shifted_mixture, z_guide, X, num_samples=k // 10 * 10)
    assert bool((bound < iwae_10).all()) and bool((iwae_10 < exact + tolerance).all())


# two chained enumerated sites ------------------------------------------------------------
FIRST = torch.tensor([0.3, 0.7], dtype=torch.float64)
GIVEN_FIRST = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]], dtype=torch.float64)


@config_enumerate
def chain(x):
    with pyro.plate("data", len(x)):
        a = pyro.sample("a", dist.Categorical(FIRST))
        b = pyro.sample("b", dist.Categorical(Vindex(GIVEN_FIRST)[a]))
        pyro.sample("x", dist.Normal(LOCS[b], 0.8), obs=x)


def test_two_chained_enumerated_sites():
    joint = FIRST[:, None] * GIVEN_FIRST  # [a, b]
    exact = torch.logsumexp(joint.log().reshape(-1)
                            + dist.Normal(LOCS, 0.8).log_prob(X[:, None]).repeat(1, 2), -1)
    assert torch.allclose(iwae_bound(chain, empty_guide, X, num_samples=3), exact,
                          atol=EXACT, rtol=0)


# an enumerated site per feature, inside a plate nested in "data" --------------------------
FEATURE_ON = torch.tensor([0.2, 0.5, 0.9, 0.4], dtype=torch.float64)


@config_enumerate
def feature_switches(x, observed):
    with pyro.plate("data", x.shape[0], dim=-2):
        with pyro.plate("features", x.shape[1], dim=-1):
            c = pyro.sample("c", dist.Bernoulli(FEATURE_ON))
            with pyro.poutine.mask(mask=observed):
                pyro.sample("x", dist.Normal(2.0 * c - 1.0, 0.7), obs=x)


@config_enumerate
def feature_switches_data_inner(x, observed):
    """:func:`feature_switches` with the features outside the data: ``x: [features, batch]``."""
    with pyro.plate("features", x.shape[0], dim=-2):
        with pyro.plate("data", x.shape[1], dim=-1):
            c = pyro.sample("c", dist.Bernoulli(FEATURE_ON[:, None]))
            with pyro.poutine.mask(mask=observed):
                pyro.sample("x", dist.Normal(2.0 * c - 1.0, 0.7), obs=x)


def test_enumerated_site_per_feature_with_the_data_plate_inner():
    torch.manual_seed(3)
    x = torch.randn(6, 4, dtype=torch.float64)
    observed = torch.rand(6, 4) < 0.7
    expected = iwae_bound(feature_switches, empty_guide, x, observed, num_samples=2)
    inner = iwae_bound(feature_switches_data_inner, empty_guide, x.T, observed.T,
                       num_samples=2)
    assert torch.allclose(inner, expected, atol=1e-10, rtol=0)


def test_enumerated_site_per_feature_sums_inside_each_feature_and_masks():
    torch.manual_seed(3)
    x = torch.randn(6, 4, dtype=torch.float64)
    observed = torch.rand(6, 4) < 0.7
    scale = torch.tensor(0.7, dtype=torch.float64)  # a float 0.7 would be float32's
    on = FEATURE_ON.log() + dist.Normal(1.0, scale).log_prob(x)
    off = (1 - FEATURE_ON).log() + dist.Normal(-1.0, scale).log_prob(x)
    per_feature = torch.logaddexp(on, off)  # [6, 4]
    exact = torch.where(observed, per_feature, torch.zeros(())).sum(-1)
    assert torch.allclose(iwae_bound(feature_switches, empty_guide, x, observed,
                                     num_samples=2), exact, atol=EXACT, rtol=0)


@config_enumerate
def product_mixture(x):
    """One component per datapoint for all its features: ``x: [batch, features]``."""
    with pyro.plate("data", x.shape[0], dim=-2):
        a = pyro.sample("a", dist.Categorical(MIX))
        with pyro.plate("features", x.shape[1], dim=-1):
            pyro.sample("x", dist.Normal(LOCS[a], 1.0), obs=x)


def test_an_enumerated_site_shared_by_an_inner_plate_sums_the_product():
    torch.manual_seed(5)
    x = 2.0 * torch.randn(6, 4, dtype=torch.float64)
    per_component = dist.Normal(LOCS, 1.0).log_prob(x[..., None]).sum(1)  # [batch, 3]
    exact = torch.logsumexp(MIX.log() + per_component, -1)
    assert torch.allclose(iwae_bound(product_mixture, empty_guide, x, num_samples=2), exact,
                          atol=EXACT, rtol=0)


# a hidden Markov model: pyro.markov against a forward algorithm -------------------------
TRANSITION = torch.tensor([[0.8, 0.15, 0.05], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]],
                          dtype=torch.float64)
START = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)


@config_enumerate
def hmm(x):
    with pyro.plate("data", x.shape[0]):
        state = pyro.sample("s_0", dist.Categorical(START))
        pyro.sample("x_0", dist.Normal(LOCS[state], 1.0), obs=x[:, 0])
        for t in pyro.markov(range(1, x.shape[1])):
            state = pyro.sample(f"s_{t}", dist.Categorical(Vindex(TRANSITION)[state]))
            pyro.sample(f"x_{t}", dist.Normal(LOCS[state], 1.0), obs=x[:, t])


def forward_algorithm(x):
    """log p(x) of :func:`hmm`: ``x: [batch, T]`` -> ``[batch]``."""
    emit = dist.Normal(LOCS, 1.0).log_prob(x[..., None])  # [batch, T, S]
    alpha = START.log() + emit[:, 0]
    for t in range(1, x.shape[1]):
        alpha = torch.logsumexp(alpha[:, :, None] + TRANSITION.log(), 1) + emit[:, t]
    return torch.logsumexp(alpha, -1)


def test_hidden_markov_model_matches_the_forward_algorithm():
    torch.manual_seed(4)
    x = 2.0 * torch.randn(3, 7, dtype=torch.float64)
    estimate = iwae_bound(hmm, empty_guide, x, num_samples=2)
    assert torch.allclose(estimate, forward_algorithm(x), atol=EXACT, rtol=0)


# Bernoulli with a probability per datapoint ----------------------------------------------
@config_enumerate
def switch(x, p):
    with pyro.plate("data", len(x)):
        a = pyro.sample("a", dist.Bernoulli(p))
        pyro.sample("x", dist.Normal(3.0 * a, 1.0), obs=x)


def test_bernoulli_with_a_probability_per_datapoint():
    p = torch.tensor([0.1, 0.5, 0.8, 0.95, 0.3], dtype=torch.float64)
    exact = torch.logaddexp(p.log() + dist.Normal(3.0, 1.0).log_prob(X),
                            (1 - p).log() + dist.Normal(0.0, 1.0).log_prob(X))
    assert torch.allclose(elbo(switch, empty_guide, X, p), exact, atol=EXACT, rtol=0)


# categorical probabilities per datapoint, and a guide that samples a marked site ---------
def test_categorical_with_probabilities_per_datapoint():
    probs = torch.softmax(torch.arange(15, dtype=torch.float64).reshape(5, 3).sin(), -1)

    @config_enumerate
    def model(x):
        with pyro.plate("data", len(x)):
            a = pyro.sample("a", dist.Categorical(probs))
            pyro.sample("x", dist.Normal(LOCS[a], 1.0), obs=x)

    exact = torch.logsumexp(probs.log() + dist.Normal(LOCS, 1.0).log_prob(X[:, None]), -1)
    assert torch.allclose(iwae_bound(model, empty_guide, X, num_samples=2), exact,
                          atol=EXACT, rtol=0)


def test_a_marked_site_the_guide_samples_is_importance_sampled_as_before():
    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("a", dist.Categorical(torch.ones(3, dtype=torch.float64) / 3))

    pyro.set_rng_seed(5)
    marked = log_importance_weights(mixture, guide, X, num_samples=8)
    pyro.set_rng_seed(5)
    plain = log_importance_weights(_unmarked_mixture, guide, X, num_samples=8)
    assert torch.equal(marked, plain)


def _unmarked_mixture(x):
    with pyro.plate("data", len(x)):
        a = pyro.sample("a", dist.Categorical(MIX))
        pyro.sample("x", dist.Normal(LOCS[a], 1.0), obs=x)


class ShiftedMixture(PyroModule):
    """:func:`shifted_mixture` and :func:`z_guide` as methods, for the compiled path."""

    def model(self, x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
            a = pyro.sample("a", dist.Categorical(MIX), infer={"enumerate": "parallel"})
            pyro.sample("x", dist.Normal(z + LOCS[a], 1.0), obs=x)

    def guide(self, x):
        return z_guide(x)


def _compiled(pair):
    return iwae_bound(pair.model, pair.guide, X, num_samples=2, compile="eager")


# fit with Pyro's TraceEnum_ELBO ----------------------------------------------------------
@config_enumerate
def learned_mixture(x):
    logits = pyro.param("logits", torch.zeros(2, dtype=torch.float64))
    locs = pyro.param("locs", torch.tensor([-0.5, 0.5], dtype=torch.float64))
    with pyro.plate("data", len(x)):
        a = pyro.sample("a", dist.Categorical(logits=logits))
        pyro.sample("x", dist.Normal(locs[a], 1.0), obs=x)


def learned_log_density(x, logits, locs):
    """log p(x) of :func:`learned_mixture`: ``x: [batch]`` -> ``[batch]``."""
    return torch.logsumexp(torch.log_softmax(logits, -1)
                           + dist.Normal(locs, 1.0).log_prob(x[:, None]), -1)


TWO_CLUSTERS = torch.cat([torch.randn(60, generator=torch.Generator().manual_seed(7)) - 2,
                          torch.randn(40, generator=torch.Generator().manual_seed(8)) + 3]
                         ).double()


def test_fit_with_trace_enum_elbo_records_minus_the_log_evidence_per_datapoint():
    # an empty guide: the loss is -sum log p(x), no draw; a vanishing lr keeps the start
    # the validation ELBO (inference.elbo) sums the latent out of the held-out rows
    train, valid = TWO_CLUSTERS[:80], TWO_CLUSTERS[80:]
    history = fit(learned_mixture, empty_guide, train, valid_data=valid,
                  loss=TraceEnum_ELBO(max_plate_nesting=1), epochs=1, batch_size=20,
                  lr=1e-12, progress=False)
    start = [learned_log_density(rows, torch.zeros(2, dtype=torch.float64),
                                 torch.tensor([-0.5, 0.5], dtype=torch.float64))
             for rows in (train, valid)]
    assert abs(history[0]["train_loss"] + float(start[0].mean())) < 1e-8
    assert abs(history[0]["valid_elbo"] - float(start[1].mean())) < 1e-8


def test_fit_with_trace_enum_elbo_reaches_the_maximum_likelihood():
    fit(learned_mixture, empty_guide, TWO_CLUSTERS, loss=TraceEnum_ELBO(max_plate_nesting=1),
        epochs=300, batch_size=100, lr=0.05, progress=False)
    logits = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    locs = torch.tensor([-0.5, 0.5], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([logits, locs], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = -learned_log_density(TWO_CLUSTERS, logits, locs).mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    # Adam's last steps of lr 0.05 wander within about 0.01 of the optimum
    assert torch.allclose(pyro.param("locs").detach(), locs.detach(), atol=0.02)
    assert torch.allclose(pyro.param("logits").detach().softmax(-1), logits.detach().softmax(-1),
                          atol=0.02)


# refusals ---------------------------------------------------------------------------------
def test_sequential_enumeration_is_refused_naming_the_site():
    def model(x):
        with pyro.plate("data", len(x)):
            a = pyro.sample("a", dist.Categorical(MIX), infer={"enumerate": "sequential"})
            pyro.sample("x", dist.Normal(LOCS[a], 1.0), obs=x)

    with pytest.raises(PairError, match=r"^iwae_bound: the model's site 'a' is marked "
                                        r"infer=\{'enumerate': 'sequential'\}"):
        iwae_bound(model, empty_guide, X, num_samples=2)


def test_an_enumerated_site_outside_the_data_plate_is_refused_naming_it():
    @config_enumerate
    def model(x):
        a = pyro.sample("a", dist.Categorical(MIX))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(LOCS[a], 1.0), obs=x)

    with pytest.raises(PairError, match=r"^elbo: the model's enumerated site 'a' lies outside "
                                        r"pyro.plate\('data'\)"):
        elbo(model, empty_guide, X)


def test_a_latent_missing_in_the_guide_without_the_mark_is_still_refused():
    with pytest.raises(PairError, match=r"latent site\(s\) 'a' are not sampled by the guide"):
        iwae_bound(_unmarked_mixture, empty_guide, X, num_samples=2)

    @config_enumerate
    def model(x):
        with pyro.plate("data", len(x)):
            a = pyro.sample("a", dist.Categorical(MIX))
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
            pyro.sample("x", dist.Normal(z + LOCS[a], 1.0), obs=x)

    with pytest.raises(PairError, match=r"latent site\(s\) 'z' are not sampled by the guide"):
        iwae_bound(model, empty_guide, X, num_samples=2)


@pytest.mark.parametrize("call, expected", [
    (lambda: fit(mixture, empty_guide, X, epochs=1, progress=False),
     r"^fit\(loss='elbo'\): the model's latent site\(s\) 'a' are marked for enumeration.*"
     r"loss=pyro.infer.TraceEnum_ELBO"),
    (lambda: fit(shifted_mixture, z_guide, X, loss="iwae", epochs=1, progress=False),
     r"^fit\(loss='iwae'\): the model's latent site\(s\) 'a' are marked"),
    (lambda: ais_log_evidence(shifted_mixture, z_guide, X, num_chains=2, num_steps=2),
     r"^ais_log_evidence: the model's latent site\(s\) 'a' are marked.*does not sum them"),
    (lambda: amortization_gap(shifted_mixture, z_guide, X, num_steps=2, progress=False),
     r"^amortization_gap: the model's latent site\(s\) 'a' are marked"),
    (lambda: _compiled(ShiftedMixture()),
     r"^compile='eager': the model enumerates 'a'"),
    (lambda: expected_log_likelihood(shifted_mixture, z_guide, X),
     r"^expected_log_likelihood: the model enumerates 'a'"),
], ids=["fit-elbo", "fit-iwae", "ais", "amortization_gap", "compile", "expected_log_lik"])
def test_entry_points_that_do_not_sum_out_refuse_naming_the_site(call, expected):
    with pytest.raises(PairError, match=expected):
        call()


def test_a_model_that_does_not_broadcast_over_enumeration_is_refused_before_any_weight():
    @config_enumerate
    def model(x):
        with pyro.plate("data", len(x)):
            a = pyro.sample("a", dist.Categorical(MIX))
            loc = LOCS[a].reshape(len(x))  # wrong under enumeration: [3, 1, 1] values
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    with pytest.raises(PairError, match=r"^iwae_bound: the model fails with its enumerated "
                                        r"site\(s\) 'a'"):
        iwae_bound(model, empty_guide, X, num_samples=2)


# a pair scored one particle at a time, a subsampling model, draws outside the support ----
def test_a_pair_that_does_not_broadcast_over_particles_is_looped_and_exact():
    @config_enumerate
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
            a = pyro.sample("a", dist.Categorical(MIX))
            # x does not depend on z; reshape fails under a particle plate
            pyro.sample("x", dist.Normal(LOCS[a] + 0.0 * z.reshape(len(x)), 1.0), obs=x)

    def prior_guide(x):  # the prior: log q(z) cancels log p(z) exactly
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))

    log_w = log_importance_weights(model, prior_guide, X, num_samples=3)
    assert torch.allclose(log_w, mixture_log_density(X).expand(3, 5), atol=EXACT, rtol=0)


def test_a_model_that_subsamples_its_data_plate_scores_the_rows_drawn():
    @config_enumerate
    def model(x):
        with pyro.plate("data", len(x), subsample_size=3) as rows:
            a = pyro.sample("a", dist.Categorical(MIX))
            pyro.sample("x", dist.Normal(LOCS[a], 1.0), obs=x[rows])

    estimate = iwae_bound(model, empty_guide, X, num_samples=2)
    assert estimate.shape == (3,)
    assert torch.allclose(estimate, mixture_log_density(X)[estimate.subsample], atol=EXACT,
                          rtol=0)


def test_guide_draws_outside_the_model_support_have_weight_zero_not_nan():
    @config_enumerate
    def model(x):
        with pyro.plate("data", len(x)):
            scale = pyro.sample("scale", dist.HalfNormal(torch.ones_like(x)))
            a = pyro.sample("a", dist.Categorical(MIX))
            pyro.sample("x", dist.Normal(LOCS[a], scale), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("scale", dist.Normal(torch.ones_like(x), 1.0))

    pyro.set_rng_seed(6)
    log_w = log_importance_weights(model, guide, X, num_samples=4000)
    assert not torch.isnan(log_w).any()
    # P(N(1, 1) < 0) = 0.159; the sd of a fraction of 20000 draws is 0.0026
    assert abs(float(torch.isneginf(log_w).double().mean()) - 0.1587) < 0.013


def test_an_enumerating_guide_is_drawn_like_any_guide():
    # the mark is TraceEnum_ELBO's; the estimators draw the site from the guide (the weights
    # are importance weights with it as the proposal): the same weights as without the mark
    def guide(x, mark=True):
        with pyro.plate("data", len(x)):
            pyro.sample("a", dist.Categorical(MIX),
                        infer={"enumerate": "parallel"} if mark else {})

    pyro.set_rng_seed(0)
    marked = iwae_bound(mixture, guide, X, num_samples=20)
    pyro.set_rng_seed(0)
    torch.testing.assert_close(marked, iwae_bound(mixture, lambda x: guide(x, mark=False), X,
                                                  num_samples=20), rtol=0, atol=0)


def test_sums_agree_with_pyro_trace_enum_elbo_for_an_empty_guide():
    # with nothing sampled, TraceEnum_ELBO's loss is -sum_i log p(x_i), deterministic
    torch.manual_seed(4)
    x = 2.0 * torch.randn(3, 7, dtype=torch.float64)
    for model, args, nesting in ((mixture, (X,), 1), (hmm, (x,), 1), (chain, (X,), 1)):
        loss = TraceEnum_ELBO(max_plate_nesting=nesting).loss(model, empty_guide, *args)
        ours = iwae_bound(model, empty_guide, *args, num_samples=2)
        assert abs(loss + float(ours.sum())) < EXACT


def test_scoring_a_sampled_value_of_an_enumerated_site_is_refused():
    structure = survey_pair(mixture, empty_guide, (X,))
    model_trace, _ = vectorized_traces(mixture, empty_guide, (X,), {}, 2, 2)
    with pytest.raises(PairError, match=r"^trace_log_density: site 'a' is a latent the model "
                                        r"enumerates"):
        trace_log_density(model_trace, structure)


def test_the_memory_estimate_counts_the_enumerated_values():
    structure = survey_pair(shifted_mixture, z_guide, (X,))
    # per particle, twice (value and density) the float64 entries of z in model and guide
    # (5 each) and of x's density broadcast over the 3 values of 'a' (15), and a's density
    # over its 3 values (15, counted at the default dtype's 4 bytes: its values are integers)
    expected = 2 * (8 * (5 + 5 + 15) + 4 * 15)
    assert particle_bytes(shifted_mixture, z_guide, (X,), {}, structure) == expected


def test_a_scaled_enumerated_pair_is_scored_unscaled_with_the_warning():
    @config_enumerate
    def model(x):
        with pyro.plate("data", len(x)), pyro.poutine.scale(scale=0.5):
            a = pyro.sample("a", dist.Categorical(MIX))
            pyro.sample("x", dist.Normal(LOCS[a], 1.0), obs=x)

    with pytest.warns(TemperedPairWarning, match="site 'a' carries scale 0.5"):
        estimate = iwae_bound(model, empty_guide, X, num_samples=2)
    assert torch.allclose(estimate, mixture_log_density(X), atol=EXACT, rtol=0)
