"""Hostile inputs to public entry points: each computes the right thing or refuses by name.

- H1: ``pareto_k`` on float16/bfloat16 log weights gave ``inf``/``-inf`` k-hats (float
  rounding read as atoms); ``effective_sample_size`` of ``[0, batch]`` weights raised a raw
  ``IndexError``.
- H2: ``make_loss("elbo", free_bits=1.0)`` ignored ``free_bits``; a loss object ignored
  ``num_particles`` and ``free_bits``.
- H3: ``annealing_schedule(5, dtype=torch.int64)`` returned ``[0, 0, 0, 0, 0, 1]``.
- H4: ``amortization_gap(log_evidence=...)`` with a log evidence 100 nats below the ELBO
  returned negative approximation gaps; ``LocalGaussianGuide(0)`` failed inside Pyro.
- H5: ``active_units`` on float16 means of +-60000 reported the variance ``inf``.
- H6: ``KeepBest`` with a score returning None failed in ``float()``; one returning the
  string ``"1.0"`` was accepted.
- H7: meta tensors (shape, no values) failed deep inside with "Tensor.item() cannot be
  called on meta tensors".
- H8: ``elbo(num_samples=10**8)`` passed the memory check (the weights only) and then tried
  to allocate 16 GB for the particles.
"""

import math
import re

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import inference.checks as checks
import inference.weights as weights
from inference import (
    FreeBitsELBO,
    IWAELoss,
    KeepBest,
    LocalGaussianGuide,
    active_units,
    ais_log_evidence,
    amortization_gap,
    annealing_schedule,
    auroc,
    average_pool,
    bits_back_encode,
    effective_sample_size,
    elbo,
    fit,
    information_bits,
    iwae_from_weights,
    likelihood_ratio_scores,
    log_importance_weights,
    log_mean_exp,
    make_loss,
    map_complete,
    nll_scores,
    observed_channel,
    pareto_k,
    range_encode,
    super_resolve_map,
    typicality_scores,
)
from inference.evidence.weight_diagnostics import tail_length
from ppl_models import LinearGaussian
from ppl_models.vae import VAE


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# H1. weight diagnostics --------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_pareto_k_of_half_precision_weights_is_that_of_float32(dtype):
    torch.manual_seed(0)
    log_w = (torch.randn(30, 4) * 3).to(dtype)
    k = pareto_k(log_w)
    assert k.dtype == dtype
    assert bool(torch.isfinite(k).all()), k
    torch.testing.assert_close(k, pareto_k(log_w.float()).to(dtype))
    # and close to the k-hats of the unrounded weights
    torch.manual_seed(0)
    exact = pareto_k(torch.randn(30, 4) * 3)
    assert float((k.float() - exact).abs().max()) < 0.05


def test_effective_sample_size_of_half_precision_weights_is_float32():
    torch.manual_seed(1)
    log_w = torch.randn(70000, 2) * 0.01  # ESS near 70000, beyond float16's 65504
    ess = effective_sample_size(log_w.half())
    assert ess.dtype == torch.float32
    torch.testing.assert_close(ess, effective_sample_size(log_w.half().float()))
    assert bool((ess > 65504).all()), ess


def test_weight_diagnostics_refuse_empty_meta_and_nan_weights_by_name():
    for fn in (effective_sample_size, pareto_k):
        with pytest.raises(ValueError, match=r"log_w has no weights \(shape \[0, 3\]"):
            fn(torch.zeros(0, 3))
        with pytest.raises(ValueError, match="log_w is a meta tensor"):
            fn(torch.zeros(30, 3, device="meta"))
        bad = torch.zeros(30, 3, dtype=torch.float16)
        bad[4, 1] = math.nan
        with pytest.raises(ValueError, match=r"log_w .* NaN or \+inf entries in columns \[1\]"):
            fn(bad)
    # an empty batch is no error: one (empty) value per column
    assert effective_sample_size(torch.zeros(30, 0)).shape == (0,)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="num_samples must be a positive integer"):
            tail_length(bad)


# H2. make_loss -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["elbo", "meanfield", "iwae", "dreg"])
def test_make_loss_refuses_free_bits_it_would_ignore(name):
    with pytest.raises(ValueError, match=rf"free_bits=1.0 applies only to loss "
                                         rf"'elbo-free-bits', not '{name}'"):
        make_loss(name, free_bits=1.0)
    make_loss(name, free_bits=0.0)  # the default: nothing ignored


def test_make_loss_honours_or_refuses_every_argument():
    assert make_loss("elbo-free-bits", free_bits=1.0).free_bits == 1.0
    for bad in (2.5, 0, True, "3"):
        with pytest.raises(ValueError, match="num_particles must be a positive integer"):
            make_loss("iwae", num_particles=bad)
    with pytest.raises(ValueError, match="free_bits must be"):
        make_loss("elbo-free-bits", free_bits=-1.0)
    objective = IWAELoss(3)
    assert make_loss(objective) is objective
    assert make_loss(objective, num_particles=3) is objective  # as fit passes it
    with pytest.raises(ValueError, match=r"num_particles=5 given with the loss object "
                                         r"IWAELoss, whose own num_particles \(3\)"):
        make_loss(objective, num_particles=5)
    with pytest.raises(ValueError, match="free_bits=0.5 given with the loss object IWAELoss"):
        make_loss(objective, free_bits=0.5)
    free = FreeBitsELBO(0.5)
    assert make_loss(free, free_bits=0.5) is free
    with pytest.raises(ValueError, match=r"holds its own free_bits \(0.5\)"):
        make_loss(free, free_bits=1.0)
    with pytest.raises(ValueError, match="num_particles must be a positive integer"):
        IWAELoss(2.5)


# H3. annealing_schedule --------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, "float32", None])
def test_annealing_schedule_refuses_dtypes_that_are_not_floating(dtype):
    with pytest.raises(ValueError, match="dtype must be a floating-point torch.dtype"):
        annealing_schedule(5, dtype=dtype)


def test_annealing_schedule_refuses_a_dtype_that_ties_its_steps():
    with pytest.raises(ValueError, match="dtype=torch.float16 cannot hold 5000 strictly"):
        annealing_schedule(5000, dtype=torch.float16)
    betas = annealing_schedule(50, dtype=torch.float16)
    assert bool((betas[1:] > betas[:-1]).all())
    torch.testing.assert_close(annealing_schedule(5, dtype=torch.float32),
                               annealing_schedule(5).float())


# H4. amortization_gap ----------------------------------------------------------------------
def test_amortization_gap_refuses_a_log_evidence_below_the_elbo():
    torch.manual_seed(0)
    model = LinearGaussian(3, 1, seed=0)
    x = model.simulate(4, seed=1).detach()
    exact = model.log_marginal(x).detach()
    with pytest.raises(ValueError, match=r"log_evidence lies below the amortized guide's "
                                         r"importance-weighted estimate of log p\(x\) at \d "
                                         r"datapoints \[.*\], by more than 15.2 nats"):
        amortization_gap(model.model, model.guide, x, num_steps=5, num_eval_samples=10,
                         log_evidence=exact - 100)


def test_amortization_gap_takes_the_exact_evidence_at_any_number_of_draws():
    # the check is Markov's inequality on the unbiased mean of the weights: a correct
    # log p(x) is refused with probability below 1e-6 however few the draws. A test on the
    # ELBO's standard error refused it for 30 of 30 seeds at 2 draws, 3-5 of 30 at 5
    model = LinearGaussian(5, 2, noise_scale=0.5, seed=3)
    x = model.simulate(20, seed=4).detach()
    exact = model.log_marginal(x).detach()
    for seed in range(30):
        torch.manual_seed(seed)
        for draws in (2, 5):
            result = amortization_gap(model.model, model.guide, x, num_steps=2,
                                      num_eval_samples=draws, log_evidence=exact)
            assert result.log_evidence is not None


def test_local_gaussian_guide_names_a_guide_that_is_not_callable():
    with pytest.raises(TypeError, match="guide must be callable, got int"):
        LocalGaussianGuide(0, torch.zeros(3, 2))


# H5. active_units --------------------------------------------------------------------------
def test_active_units_of_half_precision_means_computes_the_variance_wide():
    means = torch.tensor([[60000.0, 1.0], [-60000.0, 1.0]]).half()
    count, variance = active_units(means)
    assert count == 1
    assert variance.dtype == torch.float32
    torch.testing.assert_close(variance, torch.tensor([7.2e9, 0.0]))
    count, variance = active_units(torch.tensor([[0.0], [0.25]], dtype=torch.bfloat16))
    assert count == 1 and variance.dtype == torch.float32
    with pytest.raises(ValueError, match="means is a meta tensor"):
        active_units(torch.zeros(4, 2, device="meta"))


# H6. KeepBest ------------------------------------------------------------------------------
@pytest.mark.parametrize("returned, shown", [
    (None, "NoneType None"), ("1.0", "str '1.0'"), (True, "bool True"),
    (torch.tensor([1.0, 2.0]), r"a tensor of shape \[2\] and dtype torch.float32"),
    (torch.tensor(True), r"a tensor of shape \[\] and dtype torch.bool"),
    (np.array([1.0, 2.0]), r"ndarray array\(\[1\., 2\.\]\)"),
    (np.array(True), r"ndarray array\(True\)"),
])
def test_keep_best_refuses_a_score_that_is_not_a_real_number(returned, shown):
    def validation_score():
        return returned

    keep = KeepBest(torch.nn.Linear(1, 1), validation_score)
    with pytest.raises(ValueError, match=rf"score validation_score returned {shown} after "
                                         r"epoch 3; it must return a real number"):
        keep({"epoch": 3})
    assert keep.scored == 0


@pytest.mark.parametrize("returned", [2, 2.0, np.float32(2.0), np.int64(2), torch.tensor(2.0),
                                      torch.tensor([2.0]), torch.tensor(2), np.array(2.0),
                                      np.array([2.0]), np.array(2)])
def test_keep_best_takes_real_numbers(returned):
    keep = KeepBest(torch.nn.Linear(1, 1), lambda: returned)
    record = {"epoch": 1}
    keep(record)
    assert record["valid_score"] == 2.0 and isinstance(record["valid_score"], float)
    assert keep.best_epoch == 1


def test_keep_best_refuses_nan_and_ranks_minus_inf_last():
    with pytest.raises(ValueError, match="epoch 1 is NaN .*refuses NaN scores"):
        KeepBest(torch.nn.Linear(1, 1), lambda: torch.tensor(math.nan))({"epoch": 1})
    scores = iter([-math.inf, -3.0])
    keep = KeepBest(torch.nn.Linear(1, 1), lambda: next(scores))
    keep({"epoch": 1})
    keep({"epoch": 2})
    assert keep.best_epoch == 2


# H7. meta tensors --------------------------------------------------------------------------
def _vae():
    return VAE((1, 4, 4), 2, hidden=(8,))


def test_estimators_refuse_meta_data_by_name():
    vae = _vae()
    x = torch.zeros(3, 1, 4, 4, device="meta")
    with pytest.raises(ValueError, match=r"argument 0 is a meta tensor \(shape \[3, 1, 4, 4\]"):
        elbo(vae.model, vae.guide, x)
    with pytest.raises(ValueError, match=r"argument 0\[1\] is a meta tensor"):
        log_importance_weights(vae.model, vae.guide, (torch.zeros(3), x), num_samples=2)
    with pytest.raises(ValueError, match=r"keyword argument 'x'\['a'\] is a meta tensor"):
        checks.check_data_arguments((), {"x": {"a": x}})


def test_fit_refuses_meta_data_by_name():
    vae = _vae()
    with pytest.raises(ValueError, match="data is a meta tensor"):
        fit(vae.model, vae.guide, torch.zeros(3, 1, 4, 4, device="meta"), epochs=1,
            progress=False)


def test_coders_refuse_meta_tensors_by_name():
    symbols = torch.zeros(2, dtype=torch.long)
    probs = torch.ones(2, 2)
    with pytest.raises(ValueError, match="symbols is a meta tensor"):
        range_encode(symbols.to("meta"), probs)
    with pytest.raises(ValueError, match="probs is a meta tensor"):
        range_encode(symbols, probs.to("meta"))
    with pytest.raises(ValueError, match="symbols is a meta tensor"):
        information_bits(symbols.to("meta"), probs)


@pytest.mark.parametrize("call, name", [
    (lambda m: iwae_from_weights(m, 2), "log_w"),
    (lambda m: log_mean_exp(m, 0), "log_w"),
    (lambda m: auroc(m[:, 0], torch.zeros(3)), "inlier_scores"),
    (lambda m: nll_scores(m[:, 0]), "log_p"),
    (lambda m: likelihood_ratio_scores(torch.zeros(4), m[:, 0]), "background_log_p"),
    (lambda m: typicality_scores(m[:, 0], torch.zeros(4)), "log_p"),
    (lambda m: average_pool(m.reshape(1, 1, 4, 2), 2), "x"),
    (lambda m: observed_channel(m.reshape(1, 1, 4, 2)), "y"),
], ids=["iwae_from_weights", "log_mean_exp", "auroc", "nll_scores", "likelihood_ratio_scores",
        "typicality_scores", "average_pool", "observed_channel"])
def test_weight_and_score_functions_refuse_meta_tensors_by_name(call, name):
    # the late-session fuzzer: torch's "Tensor.item() cannot be called on meta tensors"
    with pytest.raises(ValueError, match=f"{name} is a meta tensor"):
        call(torch.zeros(4, 2, device="meta"))


def test_average_pool_refuses_non_finite_images():
    # NaN pixels pooled into NaN observations without a word
    image = torch.zeros(1, 1, 4, 4)
    image[0, 0, 1, 2] = math.nan
    with pytest.raises(ValueError, match="x contains NaN or infinite values"):
        average_pool(image, 2)
    with pytest.raises(ValueError, match=r"dim must be an int in \[-2, 2\)"):
        log_mean_exp(torch.zeros(3, 2), True)


def test_uses_and_coders_take_or_name_careless_tensors():
    # a log_channel that requires grad failed in map_complete with autograd's "backward
    # through the graph a second time"; y as a list failed with "'list' object has no
    # attribute 'dtype'"; complex images were bits-back coded as their real parts
    torch.manual_seed(0)
    vae = _vae().eval()
    x = (torch.rand(3, 1, 4, 4) < 0.5).float()
    channel = observed_channel(x)
    expected, _ = map_complete(vae, channel, steps=3)
    got, _ = map_complete(vae, channel.clone().requires_grad_(), steps=3)
    assert torch.equal(got, expected)
    with pytest.raises(ValueError, match=r"y must be a float tensor \[batch, C, h, w\], got list"):
        super_resolve_map(vae, average_pool(x, 2).tolist(), 2, steps=3)
    with pytest.raises(TypeError, match="images must be real 0/1 pixels, got dtype "
                                        "torch.complex64"):
        bits_back_encode(vae, x.to(torch.complex64))


# H8. memory of the particles ---------------------------------------------------------------
def _small_memory(monkeypatch, total):
    monkeypatch.setattr(weights, "physical_memory_bytes", lambda: total)
    monkeypatch.setattr(checks, "physical_memory_bytes", lambda: total)


def test_elbo_refuses_particles_that_do_not_fit_before_drawing(monkeypatch):
    vae = _vae()
    x = (torch.rand(20, 1, 4, 4) > 0.5).float()
    # weights: 10^4 x 20 x 4 bytes = 0.8 MB; the particles' values ~3 kB each: ~32 MB
    _small_memory(monkeypatch, 16 * 2**20)
    state = torch.get_rng_state()
    with pytest.raises(ValueError, match=r"num_samples=10000 particles for 20 datapoints: "
                                         r"chunk_size=None draws them all in one pass.*"
                                         r"pass chunk_size=\d+"):
        elbo(vae.model, vae.guide, x, num_samples=10**4)
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn
    with pytest.raises(ValueError, match="num_samples=10000 .*chunk_size=5000 draws that many"):
        elbo(vae.model, vae.guide, x, num_samples=10**4, chunk_size=5000)
    assert elbo(vae.model, vae.guide, x, num_samples=10**4, chunk_size=1000).shape == (20,)


@pytest.mark.parametrize("num_particles", [10**5, 10**7])
def test_fits_particle_refusal_suggests_a_count_that_fits(monkeypatch, num_particles):
    # When the [K, batch] weights alone exceeded the memory the suggestion read "at most
    # about 1 fit" (the weights' bytes were taken off the memory before dividing).
    vae = _vae()
    x = (torch.rand(20, 1, 4, 4) > 0.5).float()
    total = 64 * 2**20
    _small_memory(monkeypatch, total)
    with pytest.raises(ValueError, match=r"lower num_particles \(at most about \d+ fit\)") as info:
        fit(vae.model, vae.guide, x, loss="iwae", num_particles=num_particles, epochs=1,
            progress=False)
    suggested = int(re.search(r"at most about (\d+) fit", str(info.value)).group(1))
    per_particle = int(re.search(r"([\d,]+) bytes per particle", str(info.value))
                       .group(1).replace(",", ""))
    assert suggested > 1
    assert suggested * (per_particle + 20 * 4) <= total / 4 < 10 * suggested * (per_particle + 80)


def test_the_memory_check_does_not_change_the_draws(monkeypatch):
    vae = _vae()
    x = (torch.rand(5, 1, 4, 4) > 0.5).float()
    torch.manual_seed(3)
    measured = log_importance_weights(vae.model, vae.guide, x, num_samples=100)
    _small_memory(monkeypatch, None)  # unknown memory: nothing measured
    torch.manual_seed(3)
    unmeasured = log_importance_weights(vae.model, vae.guide, x, num_samples=100)
    torch.testing.assert_close(measured, unmeasured)


def test_other_estimators_name_their_own_particle_counts(monkeypatch):
    vae = _vae()
    x = (torch.rand(20, 1, 4, 4) > 0.5).float()
    _small_memory(monkeypatch, 16 * 2**20)
    with pytest.raises(ValueError, match="num_chains=10000 particles"):
        ais_log_evidence(vae.model, vae.guide, x, num_chains=10**4, num_steps=2)
    with pytest.raises(ValueError, match=r"num_particles=10000 particles .*all in one pass.*"
                                         r"lower num_particles"):
        amortization_gap(vae.model, vae.guide, x, num_particles=10**4, num_steps=1,
                         num_eval_samples=10)
    with pytest.raises(ValueError, match="num_eval_samples=10000 particles"):
        amortization_gap(vae.model, vae.guide, x, num_steps=1, num_eval_samples=10**4)


def test_iwae_loss_refuses_weights_that_do_not_fit(monkeypatch):
    model = LinearGaussian(3, 1, seed=0)
    x = model.simulate(10, seed=1).detach()
    _small_memory(monkeypatch, 2**20)  # 10^5 x 10 weights: 4 MB
    with pytest.raises(ValueError, match="num_particles=100000 particles for 10 datapoints"):
        IWAELoss(10**5).loss(model.model, model.guide, x)
    assert math.isfinite(IWAELoss(5).loss(model.model, model.guide, x))


def test_training_representation_names_a_tensor_passed_for_image_data():
    from ppl_models import training_representation

    with pytest.raises(TypeError, match="data must be an ImageData .* got Tensor"):
        training_representation(torch.zeros(2, 1, 8, 8), "bernoulli")


def test_amortization_gap_under_inference_mode():
    # its local parameters were inference tensors, without gradients: a raw RuntimeError
    model = LinearGaussian(3, 1, seed=0)
    with torch.inference_mode():
        x = model.simulate(4, seed=1) * 1.0
        result = amortization_gap(model.model, model.guide, x, num_steps=3,
                                  num_eval_samples=10)
    assert len(result.history) == 3 and bool(torch.isfinite(result.amortization_gap).all())


def test_fit_checks_the_memory_of_its_particles_before_training():
    # the lean IWAE step draws K particles with gradients at once; 10**7 of them tried to
    # allocate terabytes at the first step
    x = torch.randn(64, 500)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(500), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x):
        a = pyro.param("a", torch.tensor(0.5))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(a * x, 1.0).to_event(1))

    with pyro.get_param_store().scope():
        with pytest.raises(ValueError, match=r"num_particles=10000000 particles for 64 "
                                             r"datapoints: all in one pass"):
            fit(model, guide, x, loss="iwae", num_particles=10**7, epochs=1, progress=False)
