"""Estimator arguments: each bad value gets an error naming it, before any work.

Before issue 14: an empty batch raised ZeroDivisionError inside pyro.plate, repeats=0 blamed
num_samples, data_batch_size=0 gave range() errors, a discrete latent was integrated as if
continuous when Pyro's validation was off (wrong by more than a nat), num_points 0/1 or
reversed bounds gave IndexError / NaN messages.
"""

import math
import warnings

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


def test_log_evidence_asks_for_k_when_the_pair_has_latents(lg):
    # num_samples once defaulted to 1 for every pair: log_evidence of a latent-variable pair
    # was one draw of log w, a one-sample ELBO that landed above log p(x) by nats for some
    # datapoints and far below for others, with nothing said
    x = torch.randn(5, 2)
    with pytest.raises(ValueError, match=r"latent site\(s\) 'z'.*pass num_samples=K"):
        log_evidence(lg.model, lg.guide, x)
    truth = lg.log_marginal(x).detach()
    # with the exact posterior as guide every weight is log p(x), whatever K
    assert torch.allclose(log_evidence(lg.model, lg.exact_guide, x, num_samples=3), truth,
                          atol=1e-5)

    def observed(x):  # no latent: the default K = 1 gives the exact log density
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(0.0, 2.0).expand([2]).to_event(1), obs=x)

    exact = dist.Normal(0.0, 2.0).log_prob(x).sum(-1)
    assert torch.allclose(log_evidence(observed, lambda x: None, x), exact, atol=1e-6)


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


@pytest.mark.parametrize("validate", [True, False])
def test_exact_sums_a_discrete_latent_with_validation_on_and_off(validate):
    # with validation off a Bernoulli latent was once integrated by quadrature as if it were
    # continuous (wrong by more than a nat); now its two values are summed, exactly
    x = torch.tensor([0.0, 0.7, -2.0])
    truth = torch.logsumexp(torch.stack([dist.Normal(0.0, 1.0).log_prob(x),
                                         dist.Normal(1.0, 1.0).log_prob(x)]), 0) - math.log(2)
    with pyro.validation_enabled(validate):
        result = exact_log_evidence(discrete_model, x)
    assert torch.allclose(result.log_evidence, truth, atol=1e-6)


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


def _open_pair():
    """A pair that takes extra keywords through ``**kwargs``, as many Pyro users write."""
    def model(x, **kwargs):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, kwargs.get("noise", 1.0)), obs=x)

    def guide(x, **kwargs):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x / 2, 0.7))

    return model, guide


@pytest.mark.parametrize("estimator,typo,meant", [
    (bound_sweep, "Ks", "num_samples"), (bound_sweep, "num_sample", "num_samples"),
    (iwae_bound, "chunksize", "chunk_size"), (elbo, "num_sampels", "num_samples")])
def test_an_estimator_keyword_the_pair_does_not_take_is_named(lg, estimator, typo, meant):
    # the pair's own signature (x) refuses it: the estimator says so, not Python's TypeError
    # from inside Pyro's trace
    extra = {"num_samples": 2} if estimator is iwae_bound else {}
    match = rf"{estimator.__name__}\(\) got keyword argument '{typo}'.*guide does not take"
    if meant:
        match += f".*did you mean {meant}="
    with pytest.raises(TypeError, match=match):
        estimator(lg.model, lg.guide, torch.zeros(3, 2), **extra, **{typo: 5})


def test_a_typo_that_a_pairs_kwargs_would_swallow_is_refused():
    # num_sample=500 would reach the pair's **kwargs and leave num_samples at 1: a silently
    # different estimate; a keyword the pair uses on purpose passes
    model, guide = _open_pair()
    x = torch.tensor([0.5, -1.0, 2.0])
    with pytest.raises(TypeError, match=r"only the pair's \*\*kwargs.*did you mean num_samples="):
        elbo(model, guide, x, num_sample=500)
    with pytest.raises(TypeError, match="did you mean chunk_size="):
        iwae_bound(model, guide, x, num_samples=4, chunk_sizes=2)
    with pytest.raises(TypeError, match="did you mean num_samples="):  # Pyro's ELBOs' name
        elbo(model, guide, x, num_particles=100)
    pyro.set_rng_seed(0)
    wide = elbo(model, guide, x, num_samples=2000, noise=3.0)
    exact = dist.Normal(0.0, (1.0 + 9.0) ** 0.5).log_prob(x)
    assert (wide <= exact + 0.05).all() and (wide > exact - 1.0).all()


def test_a_keyword_declared_by_the_pair_is_passed_even_if_close_to_an_estimator_name():
    def model(x, num_sample=1):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(float(num_sample), 1.0), obs=x)

    def guide(x, num_sample=1):
        pass

    x = torch.tensor([3.0])
    value = elbo(model, guide, x, num_sample=3)
    torch.testing.assert_close(value, dist.Normal(3.0, 1.0).log_prob(x))


@pytest.mark.parametrize("name,typo", [
    ("ais_log_evidence", "num_stepss"), ("exact_log_evidence", "chunksize"),
    ("fit_local_guide", "num_stepss"), ("amortization_gap", "num_stepss"),
    ("weight_diagnostics", "chunksize"), ("kl_per_dimension", "sitee"),
    ("posterior_means", "sitee"), ("expected_log_likelihood", "num_sample"),
    ("log_importance_weights", "chunksize")])
def test_every_entry_that_passes_keywords_to_the_pair_names_a_typo(lg, name, typo):
    import inference
    from inference.evidence.gaps import LocalGaussianGuide

    x = lg.simulate(3, seed=1)
    entry = getattr(inference, name)
    if name == "exact_log_evidence":
        call = lambda **kw: entry(lg.model, x, **kw)  # noqa: E731
    elif name == "posterior_means":
        call = lambda **kw: entry(lg.guide, x, **kw)  # noqa: E731
    elif name == "fit_local_guide":
        local = LocalGaussianGuide(lg.guide, x)
        call = lambda **kw: entry(lg.model, local, x, **kw)  # noqa: E731
    elif name == "log_importance_weights":
        call = lambda **kw: entry(lg.model, lg.guide, x, num_samples=2, **kw)  # noqa: E731
    else:
        call = lambda **kw: entry(lg.model, lg.guide, x, **kw)  # noqa: E731
    with pytest.raises(TypeError, match=rf"{name}\(\) got keyword argument '{typo}'.*did you "
                                        "mean"):
        call(**{typo: 3})


class _NormedPair(torch.nn.Module):
    """A Gaussian latent model whose encoder holds batch norm, as users write them."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.BatchNorm1d(8),
                                           torch.nn.Linear(8, 2))

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("x", dist.Normal(z[:, None], 1.0).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        loc, log_scale = self.encoder(x).unbind(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()))


def test_a_module_in_training_mode_is_warned_about_and_eval_mode_is_quiet():
    # batch norm in training mode: the estimate uses the batch's statistics; the estimators
    # say so, naming the layer (and put the running statistics back: the next test)
    import warnings

    pair = _NormedPair()
    x = torch.randn(6, 2)
    with pytest.warns(UserWarning, match=r"iwae_bound: _NormedPair \(of the model and guide\) "
                                         r"is in training mode with BatchNorm1d at encoder\.1"):
        iwae_bound(pair.model, pair.guide, x, num_samples=3)
    pair.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        iwae_bound(pair.model, pair.guide, x, num_samples=3)
    pair.train()
    pair.encoder[1].track_running_stats = False  # batch statistics by design: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        elbo(pair.model, pair.guide, x)


def _kl_and_means(pair, x):
    from inference import kl_per_dimension, posterior_means

    kl_per_dimension(pair.model, pair.guide, x)
    posterior_means(pair.guide, x)


@pytest.mark.parametrize("estimate", [
    lambda pair, x: elbo(pair.model, pair.guide, x, num_samples=2),
    lambda pair, x: iwae_bound(pair.model, pair.guide, x, num_samples=4),
    lambda pair, x: bound_sweep(pair.model, pair.guide, x, num_samples=[1, 2], repeats=2),
    lambda pair, x: log_evidence(pair.model, pair.guide, x, num_samples=4),
    lambda pair, x: log_evidence(pair.model, pair.guide, x),  # refused: no K for latents
    _kl_and_means,
], ids=["elbo", "iwae_bound", "bound_sweep", "log_evidence", "log_evidence_refused",
        "kl_and_means"])
def test_estimators_leave_training_mode_running_statistics_as_they_were(estimate):
    # every estimator call in training mode moved batch norm's running statistics (16
    # batches tracked by one iwae_bound call of K = 10, also by a call that was then
    # refused), so the networks scored differently in evaluation mode afterwards
    pair = _NormedPair()
    x = torch.randn(6, 2) + 3.0
    norm = pair.encoder[1]
    with torch.no_grad():
        norm.running_mean.fill_(0.5)
    before = {name: value.clone() for name, value in norm.named_buffers()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            estimate(pair, x)
        except ValueError as error:
            assert "pass num_samples=K" in str(error)
    for name, value in norm.named_buffers():
        assert torch.equal(value, before[name]), name
    pair.eval()
    eval_before = iwae_bound(pair.model, pair.guide, x, num_samples=2)
    assert torch.isfinite(eval_before).all()


def test_a_network_of_a_plain_function_pair_in_training_mode_is_warned_about_too():
    # Pyro's tutorial style (plain functions, networks registered with pyro.module) got no
    # warning: the check looked only at a bound method's module
    import warnings

    torch.manual_seed(0)
    decoder = torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.Dropout(0.3),
                                  torch.nn.Linear(4, 2))

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(decoder(z[..., None]), 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x[..., 0], 1.0))

    x = torch.randn(4, 2)
    with pytest.warns(UserWarning, match=r"elbo: Sequential \(of the model\) is in training "
                                         r"mode with Dropout\(p=0\.3\) at 1"):
        elbo(model, guide, x, num_samples=3)
    decoder.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        elbo(model, guide, x, num_samples=3)


def test_exact_grid_beyond_memory_is_refused_before_any_chunk(monkeypatch):
    # a 2-D latent at 8001 points per dimension (the default before 801) is 64M nodes per
    # datapoint
    import inference.evidence.exact as exact

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)

    monkeypatch.setattr(exact, "physical_memory_bytes", lambda: 4 * 2**30)
    calls = []
    counted = lambda x: calls.append(1) or model(x)  # noqa: E731
    with pytest.raises(ValueError, match=r"num_points=8001 gives 64,016,001 grid nodes"):
        exact_log_evidence(counted, torch.randn(40, 2), num_points=8001)
    assert len(calls) < 25, "refused after the checks' few passes, before 31,258 chunks"


def test_pyro_deterministic_records_are_no_sites_of_the_density():
    # pyro.deterministic outside the data plate (bookkeeping) used to be refused as a global
    # site; it adds nothing to log p, so every entry scores the pair as without it
    from inference import fit

    def model(x):
        pyro.deterministic("n", torch.tensor(float(len(x))))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.deterministic("z2", z ** 2)
            pyro.sample("x", dist.Normal(z, 0.7), obs=x)

    def guide(x):
        pyro.deterministic("g", torch.tensor(0.0))
        shrink = pyro.param("shrink", torch.tensor(1 / 1.49))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(shrink * x, (0.49 / 1.49) ** 0.5))

    x = torch.tensor([0.4, -1.1, 2.2, 0.0])
    exact = dist.Normal(0.0, 1.49 ** 0.5).log_prob(x)
    torch.testing.assert_close(iwae_bound(model, guide, x, num_samples=10), exact)
    torch.testing.assert_close(elbo(model, guide, x), exact)
    torch.testing.assert_close(exact_log_evidence(model, x).log_evidence, exact,
                               rtol=0, atol=1e-4)
    fit(model, guide, x, epochs=1, batch_size=2, progress=False)


def test_a_latent_indexed_by_position_is_scored_per_datapoint():
    # z[:, 0] picks the particle dim's first entry under a leading particle dim: a valid
    # shape that scored every datapoint with datapoint 0's latent (IWAE_1000 -8.8 against
    # log p(x) = -2.05); the survey now compares draws run alone and among 2 particles and
    # scores such pairs one particle at a time
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z[:, 0], 0.5), obs=x)

    def guide(x):  # the exact posterior: every weight is p(x)
        shrink = pyro.param("shrink", torch.tensor(0.8))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal((shrink * x)[:, None], 0.2 ** 0.5).to_event(1))

    from inference import fit

    x = torch.tensor([0.3, -1.7, 2.4, 0.9, -0.2, 1.1])
    exact = dist.Normal(0.0, 1.25 ** 0.5).log_prob(x)
    torch.testing.assert_close(iwae_bound(model, guide, x, num_samples=50).detach(), exact)
    torch.testing.assert_close(elbo(model, guide, x, num_samples=3).detach(), exact)
    with pytest.raises(Exception,
                       match=r"num_particles=5.*index and reduce from the right, z\[\.\.\., 0\]"):
        fit(model, guide, x, num_particles=5, epochs=1, progress=False)


def _column_data_pair(observe_latent_as_column: bool):
    """A Gaussian pair whose observation or latent is ``[N, 1]`` while its distribution has
    batch shape ``[N]``: broadcasting scores an ``[N, N]`` density."""

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0]), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            loc = x if observe_latent_as_column else x.squeeze(-1)
            pyro.sample("z", dist.Normal(loc, 1.0).to_event(observe_latent_as_column))

    return model, guide


@pytest.mark.parametrize("entry", ["elbo", "iwae_bound", "log_importance_weights", "fit"])
def test_column_shaped_observations_are_refused_naming_the_site(entry):
    from inference import fit, log_importance_weights

    model, guide = _column_data_pair(observe_latent_as_column=False)
    x = torch.randn(6, 1)
    call = {"elbo": lambda: elbo(model, guide, x),
            "iwae_bound": lambda: iwae_bound(model, guide, x, num_samples=4),
            "log_importance_weights": lambda: log_importance_weights(model, guide, x,
                                                                     num_samples=3),
            "fit": lambda: fit(model, guide, x, epochs=1, batch_size=6, progress=False)}[entry]
    with pytest.raises(ValueError, match=r"site 'x'.*\(6, 1\).*batch shape \(6, 6\).*squeeze"):
        call()


def test_a_latent_broadcast_against_the_data_plate_is_refused():
    model, guide = _column_data_pair(observe_latent_as_column=True)
    # the guide's [6, 1] draw (an event of one) meets the model's [6] prior
    with pytest.raises(ValueError, match=r"site 'z'.*batch shape \(6, 6\)"):
        elbo(model, guide, torch.randn(6, 1))


def _gaussian_pair(scale=None):
    """z ~ N(0, 1), x | z ~ N(z, 1) per datapoint; the guide N(x / 2, 0.7). ``scale``
    multiplies the likelihood (a float or a per-datapoint tensor)."""

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            with pyro.poutine.scale(scale=1.0 if scale is None else scale):
                pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x / 2, 0.7))

    return model, guide


def _closed_form_elbo(x):
    """E_q[log p(x, z) - log q(z)] for :func:`_gaussian_pair` (unscaled), per datapoint."""
    m, s2 = x / 2, 0.49
    log2pi = torch.log(torch.tensor(2 * torch.pi))
    prior = -0.5 * log2pi - 0.5 * (m ** 2 + s2)
    likelihood = -0.5 * log2pi - 0.5 * ((x - m) ** 2 + s2)
    entropy = 0.5 * log2pi + 0.5 + 0.5 * torch.log(torch.tensor(s2))
    return prior + likelihood + entropy


@pytest.mark.parametrize("scale", [0.5, torch.linspace(0.5, 2.0, 8)])
def test_a_tempered_pair_is_scored_unscaled_with_a_warning_naming_the_site(scale):
    from inference import TemperedPairWarning

    x = torch.linspace(-2, 2, 8, dtype=torch.float64)
    model, guide = _gaussian_pair(scale)
    with pytest.warns(TemperedPairWarning, match="site 'x' carries") as caught:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            estimate = elbo(model, guide, x, num_samples=4000)
    assert caught[0].filename == __file__  # the warning points at the user's call
    # Monte Carlo SE of the per-datapoint ELBO at 4000 draws is below 0.02 nats here
    torch.testing.assert_close(estimate, _closed_form_elbo(x), atol=0.06, rtol=0)


def test_subsampled_and_untempered_pairs_give_no_tempering_warning():
    import warnings

    from inference import TemperedPairWarning

    def model(x):
        with pyro.plate("data", 50, subsample_size=10) as rows:
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x[rows])

    def guide(x):
        with pyro.plate("data", 50, subsample_size=10) as rows:
            pyro.sample("z", dist.Normal(x[rows] / 2, 0.7))

    with warnings.catch_warnings():
        warnings.simplefilter("error", TemperedPairWarning)
        elbo(model, guide, torch.randn(50))
        elbo(*_gaussian_pair(), torch.randn(5))


def _exponential_pair(guide_family: str):
    """z ~ Exponential(1), x | z ~ N(z, 0.7^2) per datapoint; a Normal guide (support the
    real line, a common mistake) or a LogNormal one (the model's support)."""

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Exponential(x.new_tensor(1.0)))
            pyro.sample("x", dist.Normal(z, 0.7), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            loc = x.clamp(min=0.1) * 0.7
            if guide_family == "Normal":
                pyro.sample("z", dist.Normal(loc, 0.8))
            else:
                pyro.sample("z", dist.LogNormal(loc.log(), 0.8))

    return model, guide


def test_a_guide_beyond_the_models_support_is_weighted_zero_outside_it():
    # Exponential.log_prob(-1.0) is -1.0 with validation off: scored so, the draws outside
    # the support made IWAE_2000 4.1 nats above log p(x) at x = -1. They have p(x, z) = 0.
    x = torch.tensor([-1.0, 0.3, 2.5, 4.0], dtype=torch.float64)
    model, guide = _exponential_pair("Normal")
    exact = exact_log_evidence(model, x, site="z", bounds=(0.0, 40.0)).log_evidence
    torch.manual_seed(0)
    estimate = iwae_bound(model, guide, x, num_samples=20000)
    # a lower bound in expectation, within 0.1 nats of log p(x) for this guide and K
    assert bool((estimate <= exact + 0.02).all()), (estimate, exact)
    assert bool((estimate >= exact - 0.1).all()), (estimate, exact)


@pytest.mark.parametrize("entry", ["elbo", "fit"])
def test_the_elbo_refuses_a_guide_beyond_the_models_support(entry):
    from inference import fit

    model, guide = _exponential_pair("Normal")
    x = torch.tensor([0.5, 1.0])
    with pytest.raises(ValueError, match=r"guide site 'z' draws from a Normal .*Real.* beyond "
                                         r"the model's Exponential support"):
        if entry == "elbo":
            elbo(model, guide, x)
        else:
            fit(model, guide, x, epochs=1, batch_size=2, progress=False)
    elbo(*_exponential_pair("LogNormal"), x)  # the model's support: accepted


def test_a_discrete_latent_proposed_beyond_its_support_gets_weight_zero():
    # a Bernoulli latent, a Binomial(2) guide: Bernoulli.log_prob(2.) is finite with
    # validation off, which put IWAE 2.4 nats above log p(x) at x = 4
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Bernoulli(x.new_tensor(0.3)))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Binomial(2, x.new_tensor(0.35)))

    x = torch.tensor([-1.0, 0.5, 4.0], dtype=torch.float64)
    exact = torch.logsumexp(torch.stack([
        torch.tensor(0.7).log() + dist.Normal(0.0, 1.0).log_prob(x),
        torch.tensor(0.3).log() + dist.Normal(1.0, 1.0).log_prob(x)]), 0)
    torch.manual_seed(0)
    estimate = iwae_bound(model, guide, x, num_samples=20000)
    torch.testing.assert_close(estimate, exact, atol=0.03, rtol=0)


@pytest.mark.parametrize("mismatch", ["plate dim", "event dims"])
def test_model_and_guide_disagreeing_on_a_latents_shape_are_refused(mismatch):
    def model(x):
        with pyro.plate("data", len(x)):
            if mismatch == "event dims":
                z = pyro.sample("z", dist.Normal(x.new_zeros(len(x), 2), 1.0).to_event(1))
                z = z.sum(-1)
            else:
                z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        if mismatch == "event dims":  # the same values, declared as a plate instead
            with pyro.plate("data", len(x), dim=-2), pyro.plate("feature", 2, dim=-1):
                pyro.sample("z", dist.Normal(x[:, None].expand(len(x), 2) / 2, 1.0))
        else:
            with pyro.plate("data", len(x), dim=-2):
                pyro.sample("z", dist.Normal(x[:, None] / 2, 1.0))

    with pytest.raises(ValueError, match=r"latent site 'z' has (shapes|event dims)"):
        iwae_bound(model, guide, torch.randn(4), num_samples=10)


def test_a_delta_guide_with_a_log_density_is_no_density():
    model, _ = _gaussian_pair()

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Delta(x / 2, log_density=x.new_full((len(x),), -5.0)))

    with pytest.raises(ValueError, match="guide site 'z' is a Delta"):
        iwae_bound(model, guide, torch.randn(4), num_samples=10)
    # elbo takes its log_density as log q, as Pyro does; a made-up one put the "bound" 2.8
    # nats above log p(x) without a word
    with pytest.warns(UserWarning, match="guide site 'z' is a Delta with a log_density, taken "
                                         "as log q.*above log p"):
        elbo(model, guide, torch.randn(4))


def test_a_sequential_data_plate_is_named():
    def model(x):
        for i in pyro.plate("data", len(x)):
            z = pyro.sample(f"z_{i}", dist.Normal(0.0, 1.0))
            pyro.sample(f"x_{i}", dist.Normal(z, 1.0), obs=x[i])

    def guide(x):
        for i in pyro.plate("data", len(x)):
            pyro.sample(f"z_{i}", dist.Normal(x[i] / 2, 1.0))

    with pytest.raises(ValueError, match=r"pyro.plate\('data'\) used as a Python loop"):
        elbo(model, guide, torch.randn(3))


def test_a_factor_in_the_guide_is_refused():
    model, _ = _gaussian_pair()

    def guide(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(x / 2, 1.0))
            pyro.factor("penalty", -z ** 2, has_rsample=True)

    with pytest.raises(ValueError, match=r"guide has factor\(s\) 'penalty' \(pyro.factor\)"):
        iwae_bound(model, guide, torch.randn(3), num_samples=10)


def test_exact_evidence_warns_about_a_tempered_likelihood():
    from inference import TemperedPairWarning

    model, _ = _gaussian_pair(0.5)
    with pytest.warns(TemperedPairWarning, match="exact_log_evidence: site 'x'"):
        exact_log_evidence(model, torch.tensor([0.3, -1.0]))


def _obs_mask_pair(guide_mask: str):
    """z ~ N(0, 1), x | z ~ N(z, 0.7^2) observed where ``OBSERVED`` (Pyro's ``obs_mask``); the
    guide imputes the missing x independently of z, masked by ``poutine.mask`` or by
    ``dist.mask``, so ``log p(x_observed)`` is 0 for a missing datapoint."""

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("x", dist.Normal(z, 0.7), obs=x, obs_mask=OBSERVED)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(torch.where(OBSERVED, x / 1.49, 0.0), 0.8))
            imputed = dist.Normal(x.new_zeros(()), 1.2)
            if guide_mask == "dist.mask":
                pyro.sample("x_unobserved", imputed.mask(~OBSERVED))
            else:
                with pyro.poutine.mask(mask=~OBSERVED):
                    pyro.sample("x_unobserved", imputed)

    return model, guide


OBSERVED = torch.tensor([True, False, True, True])


@pytest.mark.parametrize("guide_mask", ["poutine.mask", "dist.mask"])
def test_an_obs_mask_imputation_masked_either_way_is_accepted(guide_mask):
    from inference import amortization_gap

    x = torch.tensor([-1.0, 0.3, 2.5, 4.0], dtype=torch.float64)
    exact = torch.where(OBSERVED, dist.Normal(0.0, math.sqrt(1.49)).log_prob(x), 0.0)
    model, guide = _obs_mask_pair(guide_mask)
    torch.manual_seed(0)
    torch.testing.assert_close(iwae_bound(model, guide, x, num_samples=20000), exact,
                               atol=0.02, rtol=0)
    # the local guides keep the imputation's mask (they used to drop it, and the pair was
    # refused as masked differently)
    torch.manual_seed(0)
    gaps = amortization_gap(model, guide, x, log_evidence=exact, num_steps=150)
    assert bool((gaps.approximation_gap > -0.05).all()), gaps


def test_a_latent_masked_in_the_model_only_is_refused_also_by_dist_mask():
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0).mask(OBSERVED))
            pyro.sample("x", dist.Normal(z, 0.7), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(x / 2, 0.8))

    with pytest.raises(ValueError, match="latent site 'z' is masked differently"):
        iwae_bound(model, guide, torch.randn(4), num_samples=10)


def test_amortization_gap_refuses_a_conditional_guide():
    # TwoLayerVAE's guide is q(z1 | x) q(z2 | z1): independent local Gaussians for z1 and z2
    # are not its family, and the split they give is wrong (it can be negative)
    from inference import amortization_gap
    from ppl_models import TwoLayerVAE

    pair = TwoLayerVAE((1, 4, 4), latent_dim=2, top_latent_dim=1, hidden=(8,),
                       top_hidden=(4,)).eval()
    x = torch.bernoulli(torch.full((3, 1, 4, 4), 0.5))
    with pytest.raises(ValueError, match=r"amortization_gap: guide site 'z2' depends on "
                                         r"another latent.*TwoLayerVAE.local_guide"):
        amortization_gap(pair.model, pair.guide, x, num_steps=2)


def test_log_evidence_warns_about_training_mode_too():
    # log_evidence skipped the warning: a PixelCNN left in training mode (dropout) summed to
    # 0.970 over all 512 3x3 binary images, 1.000 in evaluation mode
    pair = _NormedPair()
    with pytest.warns(UserWarning, match=r"log_evidence: _NormedPair \(of the model and guide\) "
                                         r"is in training mode with BatchNorm1d"):
        log_evidence(pair.model, pair.guide, torch.randn(6, 2), num_samples=3)


def test_log_evidence_names_a_pair_of_two_data_arguments():
    # a CVAE model(x, y): "guide() missing 1 required positional argument: 'y'" from Pyro
    def model(x, y):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
            pyro.sample("x", dist.Normal(z + y, 1.0), obs=x)

    def guide(x, y):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))

    with pytest.raises(TypeError, match=r"calls the model with 1 positional argument, which "
                                        r"its signature \(x, y\) does not take.*iwae_bound"):
        log_evidence(model, guide, torch.zeros(3), num_samples=2)


def test_keyword_only_pairs_are_named_by_log_evidence_and_fit():
    # def model(*, x): "guide() takes 0 positional arguments but 1 was given" from Pyro's
    # trace; the estimators that take keywords score it
    from inference import fit, iwae_bound

    def model(*, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(*, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.8 * x, 0.45))

    x = torch.tensor([0.3, -1.2, 2.5])
    assert iwae_bound(model, guide, x=x, num_samples=10, progress=False).shape == (3,)
    with pytest.raises(TypeError, match=r"log_evidence\(model, guide, x\) calls the model "
                                        r"with 1 positional argument.*\(\*, x\).*x=x"):
        log_evidence(model, guide, x, num_samples=2)
    with pytest.raises(TypeError, match=r"fit calls the model with 1 positional argument.*"
                                        r"model\(\*batch\)"):
        fit(model, guide, x, epochs=1, progress=False)


def test_bool_observations_are_named_with_their_remedy():
    # torch's "Subtraction, the `-` operator, with two bool tensors is not supported"
    from inference import PairError

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0]), 1.0))
            pyro.sample("x", dist.Bernoulli(logits=z), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(x.shape[0]), 1.0))

    x = torch.tensor([True, False, True])
    for estimator in (elbo, iwae_bound):
        with pytest.raises(PairError, match=r"observed site 'x' \(Bernoulli\) cannot score its "
                                            r"value of dtype torch.bool.*x.float\(\)"):
            estimator(model, guide, x, num_samples=3)
    assert torch.isfinite(iwae_bound(model, guide, x.float(), num_samples=3)).all()


def test_a_plate_built_twice_is_named_with_the_remedy():
    # Pyro's "Multiple sample sites named 'data'" reached the user from inside its tracer
    from inference import PairError

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([len(x)]))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.0, 1.0).expand([len(x)]))

    with pytest.raises(PairError, match=r"two sites named 'data'.*data = pyro.plate\('data', "
                                        r"len\(x\)\), then `with data:`"):
        iwae_bound(model, guide, torch.zeros(3), num_samples=3)


def test_numbers_beyond_float_range_and_odd_site_names_are_named(lg):
    # math.isfinite(10**400) raised OverflowError naming nothing; site=['z'] was "unhashable";
    # an empty BoundTable's elbo() raised a bare StopIteration
    from inference import (BoundTable, annealing_schedule, bits_per_dim, kl_per_dimension,
                           posterior_means)

    with pytest.raises(ValueError, match="sharpness must be a finite number"):
        annealing_schedule(5, sharpness=10**400)
    with pytest.raises(ValueError, match="nats_per_datapoint is .*beyond float range"):
        bits_per_dim(10**400, 3)
    with pytest.raises(ValueError, match="num_dims=1000.* is beyond any tensor's size"):
        bits_per_dim(1.0, 10**400)
    x = torch.randn(3, 2)
    for call in (lambda: posterior_means(lg.guide, x, site=["z"]),
                 lambda: kl_per_dimension(lg.model, lg.guide, x, site=None),
                 lambda: exact_log_evidence(lg.model, x, site=None)):
        with pytest.raises(TypeError, match="site must be the name of"):
            call()
    with pytest.raises(ValueError, match="no ELBO row"):
        BoundTable().elbo()
    table = bound_sweep(lg.model, lg.guide, x, num_samples=[2], repeats=1)
    import json

    json.dumps(table.to_dict(), allow_nan=False)  # one repeat: no spread, None not NaN
    assert table.to_dict()["rows"][0]["stderr"] is None


def test_a_wrapper_made_with_functools_wraps_is_read_by_its_own_signature():
    # inspect.signature follows __wrapped__: a wrapper taking x alone was refused as if it
    # required the wrapped function's (x, prior_scale)
    import functools

    def model_core(x, prior_scale):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), prior_scale))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    @functools.wraps(model_core)
    def model(x):
        return model_core(x, 1.0)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x / 2, 0.5 ** 0.5))

    x = torch.tensor([0.3, -1.2, 2.5])
    torch.testing.assert_close(log_evidence(model, guide, x, num_samples=2, progress=False),
                               dist.Normal(0.0, 2.0 ** 0.5).log_prob(x))


def test_an_observed_point_mass_at_a_continuous_latent_is_warned_about():
    # pyro.sample("x", Delta(z), obs=x): every estimator returned -inf with nothing said
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Delta(z), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.8 * x, 0.45))

    x = torch.tensor([0.3, -1.2, 2.5])
    with pytest.warns(UserWarning, match=r"observed site 'x' is a Delta .* misses the data in "
                                         r"3 of 3 entries.*dist\.Normal\(z, scale\)"):
        assert torch.isneginf(iwae_bound(model, guide, x, num_samples=10,
                                         progress=False)).all()

    def deterministic_model(x):  # pyro.deterministic is a masked-out Delta: not warned about
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.deterministic("twice", 2 * z)
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        iwae_bound(deterministic_model, guide, x, num_samples=10, progress=False)


@pytest.mark.parametrize("side", ["model", "guide"])
def test_a_torch_distribution_given_to_pyro_sample_is_named_with_its_remedy(side):
    # Pyro's raw "TypeError: 'Normal' object is not callable" from every entry point
    from inference import PairError, fit

    normal = {"model": torch.distributions.Normal if side == "model" else dist.Normal,
              "guide": torch.distributions.Normal if side == "guide" else dist.Normal}

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", normal["model"](torch.zeros(len(x)), 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", normal["guide"](0.8 * x, 0.45))

    x = torch.tensor([1.2, -0.3, 2.0])
    # refused before Pyro calls it (the guide's) or replays into it (the model's)
    expected = rf"{side} site 'z' is a torch.distributions.Normal.*use pyro.distributions.Normal"
    for call in (lambda: elbo(model, guide, x), lambda: iwae_bound(model, guide, x, num_samples=3),
                 lambda: fit(model, guide, x, epochs=1, progress=False)):
        with pytest.raises(PairError, match=expected):
            call()


class _Counting(torch.nn.Module):
    """Counts its training-mode calls in a buffer, in place or by replacing it."""

    def __init__(self, in_place: bool):
        super().__init__()
        self.in_place = in_place
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, h):
        if self.training:
            if self.in_place:
                self.calls.add_(1)
            else:
                self.calls = self.calls + 1
        return h


@pytest.mark.parametrize("in_place", [False, True])
def test_other_buffers_are_put_back_when_replaced_and_named_when_changed_in_place(in_place):
    # only norm layers' running statistics are copied before a call (a 400 MB buffer of a
    # module in training mode, the default, cost 0.2 s per call to copy); a buffer the run
    # replaces is put back, one it changes in place is named
    counter = _Counting(in_place)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(counter(z), 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    original = counter.calls
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        iwae_bound(model, guide, torch.randn(5), num_samples=4, progress=False)
    changed = [str(w.message) for w in caught if "in place" in str(w.message)]
    if in_place:
        assert changed and "iwae_bound: the run changed buffer(s) _Counting.calls" in changed[0]
    else:
        assert not changed
        assert counter.calls is original and float(original) == 0.0


def test_fit_local_guide_leaves_the_models_running_statistics():
    from inference import LocalGaussianGuide, fit_local_guide

    pair = _NormedPair()
    norm = pair.encoder[1]
    x = torch.randn(6, 2)
    local = LocalGaussianGuide(pair.guide, x)  # built from one (training-mode) guide run
    before = {name: value.clone() for name, value in norm.named_buffers()}

    def model(x):  # the encoder's batch norm runs in the model here
        pair.encoder(x)
        pair.model(x)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_local_guide(model, local, x, num_steps=5, progress=False)
    for name, value in norm.named_buffers():
        assert torch.equal(value, before[name]), name
