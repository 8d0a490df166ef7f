"""A careless user's inputs that a probe of 2026-11-29 (tenth session) found failing raw or
misnamed; each test fails on the code before its fix.

- Two threads calling estimators (or ``fit``) at once interleaved their handlers on Pyro's
  process-wide stack: Pyro's "This Messenger is not on the bottom of the stack", refusals
  blaming a handler the user never entered, and a seeded ``fit`` whose history changed
  with another thread's run.
- ``fit`` under ``torch.autograd.set_detect_anomaly(True)`` ended a divergence in torch's
  raw "Function 'PowBackward0' returned nan values" instead of its divergence message.
- Subsample indices of dtype ``int16``/``uint8``/float failed inside Pyro's subsample
  messenger ("index_select(): Expected dtype int32 or int64"), and ``fit`` said to pass the
  indices that were passed.
- ``SVIStep``'s first-call check of observed values failed with a size mismatch on an
  observed site with event dims under ``poutine.mask`` (found beside the probe: the mask
  was combined with the value's last dims).
- Networks built or loaded under ``torch.inference_mode()`` failed in every entry point with
  torch's "Setting requires_grad=True on inference tensor" from Pyro's param store.
- ``encode_images`` refused ``channels_last`` symbols as non-causal tables (another
  convolution kernel, 4e-8 apart), and with ``verify=False`` wrote undecodable bytes.
- A loss built with too small a ``max_plate_nesting`` ended in Pyro's raw shape error inside
  ``fit``; a guide reading a full-data tensor by position under minibatches got a note on
  per-row parameters only.
"""

import threading

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoNormal

from inference import SVIStep, fit, iwae_bound
from inference.pair_check import PairError

SCALE = 0.5


def exact_pair(shift: float):
    """z ~ N(0, I_3), x ~ N(z + shift, SCALE^2 I) with the exact posterior as guide: every
    importance weight equals log p(x)."""
    posterior_scale = (SCALE ** 2 / (1 + SCALE ** 2)) ** 0.5

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z + shift, SCALE).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            loc = (x - shift) / (1 + SCALE ** 2)
            pyro.sample("z", dist.Normal(loc, posterior_scale).to_event(1))

    def evidence(x):
        return dist.Normal(shift, (1 + SCALE ** 2) ** 0.5).log_prob(x).sum(-1)

    return model, guide, evidence


def test_estimators_in_two_threads_each_give_what_they_give_alone():
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    errors, results = [], {}

    def run(name, shift):
        model, guide, evidence = exact_pair(shift)
        try:
            for _ in range(8):
                value = iwae_bound(model, guide, x, num_samples=20, progress=False)
                results.setdefault(name, []).append(float((value - evidence(x)).abs().max()))
        except Exception as error:  # noqa: BLE001 - collected for the assertion
            errors.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=run, args=(name, shift))
               for name, shift in (("a", 0.0), ("b", 2.0))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:2]
    assert max(max(values) for values in results.values()) < 1e-4
    assert not pyro.poutine.runtime._PYRO_STACK


def amortized_pair(seed: int, name: str):
    torch.manual_seed(seed)
    net = torch.nn.Linear(3, 6)

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, SCALE).to_event(1), obs=x)

    def guide(x):
        pyro.module(name, net)
        loc, raw = net(x).chunk(2, -1)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc, torch.nn.functional.softplus(raw)).to_event(1))

    return model, guide


def test_seeded_fits_in_two_threads_train_as_they_do_alone():
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(1))

    def history(pair_seed, name):
        model, guide = amortized_pair(pair_seed, name)
        return [r["train_loss"] for r in fit(model, guide, x, epochs=3, batch_size=8,
                                              lr=0.01, seed=0, progress=False)]

    alone = {}
    for name, pair_seed in (("a", 0), ("b", 1)):
        pyro.clear_param_store()
        alone[name] = history(pair_seed, f"encoder_{name}")
    found, errors = {}, []
    pyro.clear_param_store()
    pairs = {name: amortized_pair(pair_seed, f"encoder_{name}")  # built before the threads
             for name, pair_seed in (("a", 0), ("b", 1))}  # (torch.manual_seed is global)

    def run(name):
        try:
            found[name] = [r["train_loss"] for r in fit(*pairs[name], x, epochs=3, batch_size=8,
                                                        lr=0.01, seed=0, progress=False)]
        except Exception as error:  # noqa: BLE001 - collected for the assertion
            errors.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=run, args=(name,)) for name in pairs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:2]
    assert found == alone


def test_fit_names_a_divergence_found_by_anomaly_detection(tmp_path):
    calls = {"n": 0, "bad_from": None}

    def model(x):
        w = pyro.param("w", torch.tensor(1.0))
        calls["n"] += 1
        bad = calls["bad_from"] is not None and calls["n"] >= calls["bad_from"]
        scale = torch.tensor(float("nan")) if bad else torch.tensor(1.0)
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(w * scale.pow(2), 1.0), obs=x)

    def guide(x):
        pass

    x = torch.randn(16)
    pyro.clear_param_store()
    fit(model, guide, x, epochs=1, batch_size=8, lr=0.01, progress=False)
    calls["bad_from"] = calls["n"] + 3  # a user's numerical bug, once the checks are done
    calls["n"] = 0
    pyro.clear_param_store()
    with torch.autograd.set_detect_anomaly(True), pyro.validation_enabled(False):
        with pytest.raises(FloatingPointError, match=r"anomaly detection.*step \d+ of epoch \d+"):
            fit(model, guide, x, epochs=5, batch_size=8, lr=0.01,
                checkpoint=tmp_path / "run.pt", progress=False)


N = 12


def indexed_model(x, idx):
    with pyro.plate("data", N, subsample=idx):
        z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, SCALE).to_event(1), obs=x)


def hand_indexed_guide(x, idx):
    locs = pyro.param("locs", torch.zeros(N, 3))
    with pyro.plate("data", N, subsample=idx) as rows:
        pyro.sample("z", dist.Normal(locs[rows], 1.0).to_event(1))


@pytest.mark.parametrize("dtype", [torch.int16, torch.uint8, torch.float32])
@pytest.mark.parametrize("which", ["auto", "hand"])
def test_indices_of_another_dtype_are_named(dtype, which):
    pyro.clear_param_store()
    x = torch.randn(N, 3)
    guide = AutoNormal(indexed_model, create_plates=lambda x, idx: pyro.plate(
        "data", N, subsample=idx)) if which == "auto" else hand_indexed_guide
    idx = torch.arange(4).to(dtype)
    with pytest.raises(PairError, match=r"int64 \(or int32\) indices.*idx.long\(\)"):
        iwae_bound(indexed_model, guide, x[:4], idx, num_samples=3, progress=False)


def test_fit_names_int16_indices_instead_of_asking_for_them():
    pyro.clear_param_store()
    x = torch.randn(N, 3)
    guide = AutoNormal(indexed_model, create_plates=lambda x, idx: pyro.plate(
        "data", N, subsample=idx))
    with pytest.raises(PairError, match=r"argument 1 \(torch.int16\)"):
        fit(indexed_model, guide, (x, torch.arange(N, dtype=torch.int16)), epochs=1,
            batch_size=4, progress=False)


def test_svi_step_checks_masked_observations_with_event_dims():
    x = (torch.rand(5, 3, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    keep = torch.tensor([True, True, False, True, True])

    def model(x):
        w = pyro.param("w", torch.zeros(3))
        with pyro.plate("data", 5), pyro.poutine.mask(mask=keep):
            pyro.sample("x", dist.Bernoulli(logits=w.expand(5, 3)).to_event(1), obs=x)

    def guide(x):
        pass

    pyro.clear_param_store()
    with pyro.validation_enabled(False):
        loss = SVIStep(model, guide).step(x)
    expected = -dist.Bernoulli(logits=torch.zeros(3)).log_prob(x[keep]).sum()
    assert abs(loss - float(expected)) < 1e-5


def test_networks_built_under_inference_mode_are_named():
    from inference import ais_log_evidence

    with torch.inference_mode():
        net = torch.nn.Linear(3, 6)
    model, _ = amortized_pair(0, "encoder_inference")

    def inference_guide(x):
        pyro.module("encoder_inference", net)
        loc, raw = net(x).chunk(2, -1)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc, torch.nn.functional.softplus(raw)).to_event(1))

    x = torch.randn(4, 3)
    pyro.clear_param_store()
    with pytest.raises(PairError, match=r"Linear's parameter 'weight' is an inference tensor"):
        iwae_bound(model, inference_guide, x, num_samples=3, progress=False)
    with pytest.raises(PairError, match="inference tensor"):
        fit(model, inference_guide, x, epochs=1, progress=False)
    with pytest.raises(PairError, match="inference tensor"):
        SVIStep(model, inference_guide)
    with pytest.raises(ValueError, match="inference tensor"):
        ais_log_evidence(model, inference_guide, x, num_chains=2, num_steps=2, progress=False)
    with torch.inference_mode():  # a pass without gradients inside it still runs
        assert iwae_bound(model, inference_guide, x, num_samples=3, progress=False).shape == (4,)


def test_channels_last_symbols_are_coded_as_contiguous_ones():
    from inference import decode_images, encode_images
    from ppl_models import PixelCNN

    torch.manual_seed(0)
    net = PixelCNN((3, 4, 4), channels=6, num_blocks=1, kernel_size=3,
                   first_kernel_size=3).eval()

    def pixel_probs(symbols):  # [batch, C, H, W] -> [batch, C, H, W, 2]
        levels = net.levels
        pixels = net.distribution(levels[symbols])
        shape = (len(levels), *symbols.shape)
        return pixels.log_prob(levels.view(-1, 1, 1, 1, 1).expand(shape)).double().exp() \
            .movedim(0, -1)

    symbols = (torch.rand(5, 3, 4, 4, generator=torch.Generator().manual_seed(1)) > 0.5).long()
    layout = symbols.to(memory_format=torch.channels_last)
    with torch.no_grad():
        assert not torch.equal(pixel_probs(symbols), pixel_probs(layout))  # what made it fail
    coded = encode_images(pixel_probs, layout)
    assert coded == encode_images(pixel_probs, symbols)
    assert torch.equal(decode_images(pixel_probs, coded, (3, 4, 4)), symbols)


def test_a_loss_with_too_small_a_plate_nesting_is_named():
    def model(x):
        with pyro.plate("features", x.shape[1], dim=-1), pyro.plate("data", len(x), dim=-2):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, pyro.param("s", torch.tensor(1.0),
                                                       constraint=dist.constraints.positive)),
                        obs=x)

    def guide(x):
        with pyro.plate("features", x.shape[1], dim=-1), pyro.plate("data", len(x), dim=-2):
            pyro.sample("z", dist.Normal(x / 2, 0.7))

    pyro.clear_param_store()
    loss = pyro.infer.Trace_ELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=1)
    with pytest.raises(PairError, match="max_plate_nesting=1, but the pair nests 2 plates"):
        fit(model, guide, torch.randn(8, 3), loss=loss, epochs=1, progress=False)
    enumerated = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
    with pytest.raises(PairError, match="max_plate_nesting=1, but the pair nests 2 plates"):
        fit(model, guide, torch.randn(8, 3), loss=enumerated, epochs=1, progress=False)


def test_fit_names_a_full_data_tensor_used_by_position_in_minibatches():
    x = torch.randn(6)
    posterior_loc = x / 2  # precomputed on the whole data, read by position

    def model(x):
        scale = pyro.param("s", torch.tensor(1.0), constraint=dist.constraints.positive)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, scale), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(posterior_loc, 0.7))

    pyro.clear_param_store()
    with pytest.raises(ValueError, match="Shape mismatch") as error:
        fit(model, guide, x, epochs=1, batch_size=4, progress=False)
    assert "a tensor of such rows that the pair reads by position" in " ".join(
        error.value.__notes__)
