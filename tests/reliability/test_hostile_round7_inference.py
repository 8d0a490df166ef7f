"""Hostile inputs, round 7 (inference side): each entry point computes the right thing or
refuses by name.

- F1: a sparse tensor given to the uses, coders and AIS and gap settings (``active_units``,
  ``observed_channel``, ``average_pool``, ``map_complete``, ``pixel_posterior``,
  ``super_resolve_map``, ``auroc``, ``probe_accuracy``, ``nll_scores``, ``bits_back_encode``,
  ``range_encode``, ``information_bits``, ``encode_images``, AIS's ``schedule`` and
  ``step_size``, ``amortization_gap``'s ``log_evidence``) failed in torch ("Could not run
  'aten::eq.Scalar' ... SparseCPU"); it is refused naming the argument and ``.to_dense()``,
  as the estimators do.
- F3: a real setting given as a 0-dim tensor (``flip_rate``, ``threshold``, ``sharpness``,
  ``lr``, ``step_jitter``, ``target_acceptance``) was refused as "must be a finite number,
  got tensor(0.1)"; it counts as its ``float()``. Where a tensor is still refused (a tensor
  of more elements, ``check_number``'s callers) the message no longer calls it non-finite.
- M1: ``bits_back_encode(seed=torch.tensor(3))`` was refused; seeds, like counts, may be
  0-dim integer tensors. M2: a numpy array to ``map_complete`` / ``super_resolve_*`` read
  "must be a floating tensor, got float32"; it is named as a numpy array.
- F4: a module passed for a function (``super_resolve_gibbs(pixelcnn, ...)``,
  ``encode_images(pixelcnn, ...)``, ``range_decode(data, pixelcnn)``) failed inside torch
  ("missing the required forward function"); it is refused naming the argument.
- F5: ``require(vae, int, "vae")`` passed (``int`` asks for no member); it is refused.
- F6, T5: ``map_complete(steps=)``, ``metropolis_within_gibbs(num_steps=)`` and
  ``super_resolve_map/mwg/mh/gibbs`` took ``10**12`` and ran silently for ever; they are
  capped at ``MAX_STEPS`` as AIS is, and show a progress bar (``progress=False`` hides it).
- F7: ``kl_per_dimension`` / ``posterior_means`` with a missing ``site`` list the guide's
  latent sites. F8: ``annealing_schedule(device=...)`` goes through ``resolve_device``.
- T7: ``AISResult.standard_error`` and ``GapResult.*_standard_error`` are the names every
  estimator uses; the former ``stderr`` names still read.
"""

import math

import numpy as np
import pytest
import torch

import inference
import inference.progress as progress
from inference import (active_units, amortization_gap, annealing_schedule, auroc, average_pool,
                       bits_back_encode, decode_images, encode_images, information_bits,
                       kl_per_dimension, map_complete, metropolis_within_gibbs, nll_scores,
                       observed_channel, posterior_means, probe_accuracy, range_decode,
                       range_encode, require, super_resolve_gibbs, super_resolve_map,
                       super_resolve_mh, super_resolve_mwg)
from inference.checks import MAX_STEPS, as_number, check_number
from inference.evidence.ais import ais_log_evidence
from inference.protocols import EncoderDecoder
from inference.uses.completion import pixel_posterior
from ppl_models import VAE, LinearGaussian, PixelCNN, TwoLayerVAE

BIG = 10 ** 12


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return VAE((1, 4, 4), 2, hidden=(8,)).eval()


@pytest.fixture(scope="module")
def pixelcnn():
    torch.manual_seed(0)
    return PixelCNN((1, 4, 4), channels=4, num_blocks=1, first_kernel_size=3).eval()


@pytest.fixture(scope="module")
def images():
    return (torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1)) < 0.5).float()


# ------------------------------------------------------------------------------ F1 sparse
SPARSE_CALLS = {
    "active_units": lambda vae, x: active_units(torch.randn(6, 2).to_sparse()),
    "observed_channel": lambda vae, x: observed_channel(x.to_sparse()),
    "average_pool": lambda vae, x: average_pool(x.to_sparse(), 2),
    "map_complete": lambda vae, x: map_complete(vae, observed_channel(x).to_sparse(), steps=1),
    "super_resolve_map": lambda vae, x: super_resolve_map(
        vae, average_pool(x, 2).to_sparse(), 2, steps=1),
    "nll_scores": lambda vae, x: nll_scores(torch.randn(5).to_sparse()),
    "auroc": lambda vae, x: auroc(torch.randn(5).to_sparse(), torch.randn(4)),
    "probe_accuracy": lambda vae, x: probe_accuracy(
        torch.randn(6, 2).to_sparse(), torch.arange(6) % 2, torch.randn(2, 2),
        torch.tensor([0, 1])),
    "bits_back_encode": lambda vae, x: bits_back_encode(vae, x.to_sparse()),
    "range_encode": lambda vae, x: range_encode(torch.tensor([0, 1]),
                                                torch.full((2, 2), 0.5).to_sparse()),
    "information_bits": lambda vae, x: information_bits(torch.tensor([0, 1]).to_sparse(),
                                                        torch.full((2, 2), 0.5)),
    "encode_images": lambda vae, x: encode_images(lambda s: None, x.long().to_sparse()),
    "pixel_posterior": lambda vae, x: pixel_posterior(vae, torch.zeros(3, 2).to_sparse(),
                                                      observed_channel(x)),
    "ais_log_evidence schedule": lambda vae, x: ais_log_evidence(
        vae.model, vae.guide, x, schedule=torch.linspace(0, 1, 4).to_sparse(), progress=False),
    "ais_log_evidence step_size": lambda vae, x: ais_log_evidence(
        vae.model, vae.guide, x, step_size=torch.full((3,), 0.1).to_sparse(), progress=False),
    "amortization_gap log_evidence": lambda vae, x: amortization_gap(
        vae.model, vae.guide, x, log_evidence=torch.zeros(3).to_sparse(), num_steps=1,
        progress=False),
}


@pytest.mark.parametrize("name", SPARSE_CALLS)
def test_sparse_tensors_are_refused_by_name(name, vae, images):
    with pytest.raises(TypeError, match=r"is a sparse tensor .*to_dense\(\)"):
        SPARSE_CALLS[name](vae, images)


# ------------------------------------------------------------- F3 settings as 0-dim tensors
def test_real_settings_take_a_zero_dim_tensor_as_its_value(vae, images):
    channel = observed_channel(images, flip_rate=torch.tensor(0.1))
    assert torch.equal(channel, observed_channel(images, flip_rate=0.1))
    means = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    assert active_units(means, threshold=torch.tensor(0.5))[0] == active_units(means, 0.5)[0]
    assert torch.equal(annealing_schedule(5, sharpness=torch.tensor(4.0)),
                       annealing_schedule(5, sharpness=4.0))
    completed = [map_complete(vae, channel, steps=3, lr=lr)[1]
                 for lr in (torch.tensor(0.05), 0.05)]
    assert torch.equal(*completed)
    y = average_pool(images, 2)
    resolved = [super_resolve_mh(vae, y, 2, num_steps=4, target_acceptance=target,
                                 generator=torch.Generator().manual_seed(0)).mean
                for target in (torch.tensor(0.3), 0.3)]
    assert torch.equal(*resolved)


def test_ais_takes_step_jitter_as_a_zero_dim_tensor():
    model = LinearGaussian(3, 1, seed=0)
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    runs = []
    for jitter in (torch.tensor(0.2), 0.2):
        torch.manual_seed(0)
        runs.append(ais_log_evidence(model.model, model.guide, x, num_chains=2, num_steps=3,
                                     step_jitter=jitter, progress=False).log_evidence)
    assert torch.equal(*runs)


def test_a_tensor_refused_as_a_number_is_not_called_non_finite():
    with pytest.raises(ValueError, match=r"lr must be a Python or NumPy real number here, got "
                                         r"the 0-dim tensor .*: pass float\(lr\)") as caught:
        check_number(torch.tensor(1e-3), "lr")
    assert "finite" not in str(caught.value)
    with pytest.raises(ValueError, match=r"flip_rate must be a single real number, got a "
                                         r"tensor of shape \[2\]") as caught:
        observed_channel(torch.zeros(1, 1, 2, 2), flip_rate=torch.tensor([0.1, 0.2]))
    assert "finite" not in str(caught.value)
    assert as_number(np.float32(0.5), "x") == 0.5
    with pytest.raises(ValueError, match="x must be a finite number, got nan"):
        as_number(torch.tensor(math.nan), "x")


# ------------------------------------------------------------- M1 seeds, M2 numpy arrays
def test_bits_back_takes_a_seed_as_a_zero_dim_integer_tensor(vae, images):
    assert bits_back_encode(vae, images, seed=torch.tensor(3), initial_words=torch.tensor(8)) \
        == bits_back_encode(vae, images, seed=3, initial_words=8)


NUMPY_CALLS = {
    "map_complete": (lambda vae, x: map_complete(vae, observed_channel(x).numpy(), steps=1),
                     "log_channel"),
    "metropolis_within_gibbs": (lambda vae, x: metropolis_within_gibbs(
        vae, observed_channel(x).numpy(), num_steps=2), "log_channel"),
    "observed_channel": (lambda vae, x: observed_channel(x.numpy()), "y"),
    "super_resolve_map": (lambda vae, x: super_resolve_map(
        vae, average_pool(x, 2).numpy(), 2, steps=1), "y"),
    "super_resolve_mwg": (lambda vae, x: super_resolve_mwg(
        vae, average_pool(x, 2).numpy(), 2, num_steps=2), "y"),
    "average_pool": (lambda vae, x: average_pool(x.numpy(), 2), "x"),
}


@pytest.mark.parametrize("name", NUMPY_CALLS)
def test_numpy_arrays_are_named_as_such(name, vae, images):
    call, argument = NUMPY_CALLS[name]
    with pytest.raises(TypeError, match=rf"{argument} is a numpy array .*torch\.as_tensor"):
        call(vae, images)


# ------------------------------------------------------------------ F4 a module for a function
def test_a_module_passed_for_a_function_is_refused_by_name(pixelcnn, images):
    stream = range_encode(torch.tensor([0, 1]), torch.full((2, 2), 0.5))
    calls = {
        "log_prob": lambda: super_resolve_gibbs(pixelcnn, average_pool(images, 2), 2,
                                                num_sweeps=1),
        "pixel_probs": lambda: encode_images(pixelcnn, images.long()),
        "next_probs": lambda: range_decode(stream, pixelcnn),
    }
    for argument, call in calls.items():
        with pytest.raises(TypeError, match=f"{argument} is a PixelCNN module without "
                                            r"forward\(\); pass "):
            call()
    with pytest.raises(TypeError, match="pixel_probs is a PixelCNN module"):
        decode_images(pixelcnn, stream, (1, 4, 4))


def test_require_refuses_a_protocol_that_is_not_one(vae):
    require(vae, EncoderDecoder, "vae")
    for protocol in (int, object, VAE):
        with pytest.raises(TypeError, match="protocol must be a typing.Protocol class"):
            require(vae, protocol, "vae")


# ---------------------------------------------------------------- F6, T5 caps and progress
def uses(vae, pixelcnn, x):
    """name -> (call taking the count and keywords, the count's argument name)."""
    channel, y = observed_channel(x), average_pool(x, 2)
    return {
        "map_complete": (lambda n, **k: map_complete(vae, channel, steps=n, **k), "steps"),
        "metropolis_within_gibbs": (lambda n, **k: metropolis_within_gibbs(
            vae, channel, num_steps=n, **k), "num_steps"),
        "super_resolve_map": (lambda n, **k: super_resolve_map(vae, y, 2, steps=n, **k),
                              "steps"),
        "super_resolve_mwg": (lambda n, **k: super_resolve_mwg(vae, y, 2, num_steps=n, **k),
                              "num_steps"),
        "super_resolve_mh": (lambda n, **k: super_resolve_mh(vae, y, 2, num_steps=n, **k),
                             "num_steps"),
        "super_resolve_gibbs": (lambda n, **k: super_resolve_gibbs(
            pixelcnn.log_prob, y, 2, num_sweeps=n, **k), "num_sweeps"),
    }


USES = ["map_complete", "metropolis_within_gibbs", "super_resolve_map", "super_resolve_mwg",
        "super_resolve_mh", "super_resolve_gibbs"]


@pytest.mark.parametrize("name", USES)
def test_step_counts_of_the_uses_are_capped(name, vae, pixelcnn, images):
    call, argument = uses(vae, pixelcnn, images)[name]
    with pytest.raises(ValueError, match=f"{argument} must be at most {MAX_STEPS:,}, got "
                                         f"{BIG:,}: .*would not end"):
        call(BIG)
    with pytest.raises(ValueError, match=f"{argument} must be at most"):
        call(torch.tensor(MAX_STEPS + 1))


class RecordedBar(progress.tqdm):
    """tqdm remembering ``(desc, total, disabled, updates)`` of each bar it closes."""

    bars: list = []

    def __init__(self, *args, **kwargs):
        self.asked, self.updates = (kwargs["desc"], kwargs["total"], kwargs["disable"]), 0
        super().__init__(*args, **kwargs)

    def update(self, n=1):
        self.updates += n
        return super().update(n)

    def close(self):
        if not getattr(self, "recorded", False):
            self.recorded = True
            RecordedBar.bars.append((*self.asked, self.updates))
        super().close()


@pytest.mark.parametrize("name", USES)
def test_the_uses_show_a_progress_bar_over_their_steps(name, vae, pixelcnn, images,
                                                       monkeypatch):
    monkeypatch.setattr(progress, "DELAY_SECONDS", 0.0)
    monkeypatch.setattr(progress, "tqdm", RecordedBar)
    call, _ = uses(vae, pixelcnn, images)[name]
    for shown in (True, False):
        RecordedBar.bars = []
        call(4, progress=shown)
        assert RecordedBar.bars == [(name, 4, not shown, 4)]
    with pytest.raises(TypeError, match="progress must be True or False"):
        call(4, progress="no")


# ------------------------------------------------------------------ F7 sites, F8 device
def test_a_missing_site_lists_the_guides_latent_sites(images):
    two_layer = TwoLayerVAE((1, 4, 4), 2, 2, hidden=(8,), top_hidden=(8,))
    hint = r"the guide's latent sites are \['z1', 'z2'\]: pass site='z1'"
    with pytest.raises(ValueError, match="kl_per_dimension: no latent site 'z' in both model "
                                         f"and guide; {hint}"):
        kl_per_dimension(two_layer.model, two_layer.guide, images)
    with pytest.raises(ValueError, match=f"the guide has no sample site 'z'; {hint}"):
        posterior_means(two_layer.guide, images)


def test_annealing_schedule_checks_its_device():
    assert annealing_schedule(3, device="cpu").device == torch.device("cpu")
    assert annealing_schedule(3).device == torch.device("cpu")
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'cuda'.*got 'gpu'"):
        annealing_schedule(3, device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="torch sees no CUDA device"):
            annealing_schedule(3, device="cuda")


def test_resolve_device_lives_in_checks_and_keeps_its_names():
    assert inference.resolve_device is inference.checks.resolve_device
    assert inference.training.resolve_device is inference.checks.resolve_device


# ------------------------------------------------------------------------- T7 standard error
def test_standard_error_is_the_name_of_every_estimate():
    model = LinearGaussian(3, 1, seed=0)
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    ais = ais_log_evidence(model.model, model.guide, x, num_chains=4, num_steps=3,
                           progress=False)
    assert ais.standard_error.shape == (2,) and ais.stderr is ais.standard_error
    gaps = amortization_gap(model.model, model.guide, x, num_steps=2, num_eval_samples=8,
                            progress=False)
    assert gaps.elbo_amortized_stderr is gaps.elbo_amortized_standard_error
    assert gaps.elbo_local_stderr is gaps.elbo_local_standard_error
    assert gaps.elbo_local_standard_error.shape == (2,)


def test_sparse_weights_and_values_are_named_by_the_weight_helpers():
    # torch's "Could not run 'aten::...' with arguments from the 'SparseCPU' backend", and
    # bits_per_dim returned a sparse tensor without a word
    from inference import (bits_per_dim, effective_sample_size, iwae_from_weights,
                           log_mean_exp, pareto_k)

    log_w = torch.randn(30, 2).to_sparse()
    for call in (lambda: pareto_k(log_w), lambda: effective_sample_size(log_w),
                 lambda: iwae_from_weights(log_w, 5), lambda: log_mean_exp(log_w, 0)):
        with pytest.raises(TypeError, match=r"log_w is a sparse tensor.*to_dense\(\)"):
            call()
    with pytest.raises(TypeError, match=r"nats_per_datapoint is a sparse tensor"):
        bits_per_dim(torch.tensor([80.0, 90.0]).to_sparse(), 784)
