"""A careless user's inputs that a probe of 2026-11-29 (eighth session) found failing raw or
losing work; each test fails on the code before its fix.

- Super-resolution called inside ``torch.inference_mode()``: torch's "element 0 of tensors
  does not require grad" (``enable_grad`` does not lift inference mode).
- A compiled step under ``torch.autograd.set_detect_anomaly(True)``: refused, blaming the
  pair's Python code for reading a tensor's value at the library's own gradient line.
- ``sys.stderr`` None (a process started with stderr closed, ``pythonw``): tqdm's raw
  ``AttributeError`` from ``fit`` and every estimator with a bar.
- ``python -W error``: a fit that replaces an earlier checkpoint trained its first epoch,
  then stopped on its own "replaces the checkpoint" warning; the warning comes first now.
- Nested, quantized and masked tensors as data: torch's raw errors ("Internal error:
  NestedTensorImpl doesn't support sizes. Please file an issue.").
"""

import math
import sys
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

from inference import CompiledSVIStep, elbo, fit, iwae_bound, log_evidence
from inference.uses import average_pool, super_resolve_map, super_resolve_mh, super_resolve_mwg
from ppl_models.vae import VAE

X = torch.tensor([0.3, -1.2, 2.0, 0.7])


def model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros((), dtype=x.dtype), 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def guide(x):
    a = pyro.param("a", torch.tensor(0.5, dtype=x.dtype))
    s = pyro.param("s", torch.tensor(math.sqrt(0.5), dtype=x.dtype),
                   constraint=constraints.positive)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(a * x, s))


def test_super_resolution_inside_inference_mode_gives_the_same_results():
    torch.manual_seed(0)
    vae = VAE((1, 8, 8), latent_dim=2, hidden=(16,)).eval()
    y = average_pool(torch.bernoulli(torch.full((3, 1, 8, 8), 0.3)), 2)
    for call in (lambda: super_resolve_map(vae, y, 2, steps=10, progress=False),
                 lambda: super_resolve_mwg(vae, y, 2, num_steps=3, progress=False),
                 lambda: super_resolve_mh(vae, y, 2, num_steps=3, progress=False)):
        pyro.set_rng_seed(1)
        plain = call()
        pyro.set_rng_seed(1)
        with torch.inference_mode():
            inside = call()
        assert torch.equal(plain.z, inside.z)


@pytest.mark.parametrize("how", ["step", "fit"])
def test_a_compiled_step_under_anomaly_detection_trains_as_without_it(how):
    results = []
    for anomaly in (False, True):
        pyro.clear_param_store()
        torch.manual_seed(0)
        vae = VAE((1, 4, 4), latent_dim=2, hidden=(3,)).double()
        x = (torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(1)) < 0.4).double()
        pyro.set_rng_seed(0)
        with torch.autograd.set_detect_anomaly(anomaly):
            if how == "step":
                results.append(CompiledSVIStep(vae.model, vae.guide, backend="eager").step(x))
            else:
                results.append(fit(vae.model, vae.guide, x, epochs=1, compile="eager",
                                   progress=False)[0]["train_loss"])
    assert results[0] == results[1]


def test_no_stderr_hides_the_bars_instead_of_failing(monkeypatch):
    # bars are shown after a second: these calls run longer than that on a busy machine
    # as on a quiet one only with the delay patched away
    import inference.progress as progress

    monkeypatch.setattr(progress, "DELAY_SECONDS", 0.0)
    monkeypatch.setattr(sys, "stderr", None)
    pyro.clear_param_store()
    assert len(fit(model, guide, X, epochs=2, progress=True)) == 2
    assert iwae_bound(model, guide, X, num_samples=10, progress=True).shape == (4,)


def test_a_replaced_checkpoints_warning_comes_before_any_step(tmp_path):
    path = tmp_path / "run.pt"
    fit(model, guide, X, epochs=1, progress=False, checkpoint=path)
    before = path.read_bytes()
    steps = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="replaces the checkpoint"):
            fit(model, guide, X, epochs=3, progress=False, checkpoint=path,
                callback=lambda record: steps.append(record))
    assert steps == [] and path.read_bytes() == before
    assert not (tmp_path / "run.pt.previous").exists()


@pytest.mark.parametrize("kind, message", [
    ("nested", "is a nested tensor"),
    ("quantized", r"is a quantized tensor \(torch.qint8\).*x.dequantize\(\)"),
    ("masked", r"is a torch.masked.MaskedTensor.*x.get_data\(\)"),
])
def test_tensors_of_other_layouts_are_named(kind, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's prototype warnings for these layouts
        data = {"nested": lambda: torch.nested.nested_tensor([X[:2], X[2:]]),
                "quantized": lambda: torch.quantize_per_tensor(X, 0.01, 0, torch.qint8),
                "masked": lambda: torch.masked.masked_tensor(
                    X.clone(), torch.tensor([True, True, False, True]))}[kind]()
        for call in (lambda: elbo(model, guide, data), lambda: log_evidence(model, guide, data),
                     lambda: fit(model, guide, data, epochs=1, progress=False)):
            with pytest.raises(TypeError, match=message):
                call()


def test_a_meta_default_device_is_named():
    # torch.set_default_device("meta") put the checks' masks on the meta device: torch's
    # raw "aten::equal ... Meta tensors", or "Tensor.item() cannot be called on meta tensors"
    from inference import ais_log_evidence

    with torch.device("meta"):
        for call in (lambda: elbo(model, guide, X), lambda: fit(model, guide, X, epochs=1),
                     lambda: ais_log_evidence(model, guide, X, num_steps=3)):
            with pytest.raises(ValueError, match=r"torch.set_default_device\('meta'\) is in "
                                                 "effect"):
                call()
    assert elbo(model, guide, X, num_samples=2).shape == (4,)


def test_ais_inside_inference_mode_moves_as_outside():
    # Under torch.inference_mode() the chains' gradients were zeros (enable_grad records no
    # graph there): UHA's estimate fell 1.7 nats below log p(x), silently.
    from inference import ais_log_evidence
    from ppl_models import LinearGaussian

    torch.manual_seed(0)
    pair = LinearGaussian(data_dim=3, latent_dim=2)
    x = pair.simulate(4).detach()
    results = []
    for context in (torch.enable_grad, torch.inference_mode):
        pyro.set_rng_seed(2)
        with context():
            results.append(ais_log_evidence(pair.model, pair.guide, x, num_chains=4,
                                            num_steps=10, transition="uha",
                                            progress=False).log_evidence)
    torch.testing.assert_close(results[1], results[0])


def test_kl_per_dimension_refuses_a_hierarchical_site_inside_inference_mode():
    # The refusal reads autograd; inside inference_mode it saw no dependence and returned a
    # one-draw value that changed with every call.
    from inference.uses import kl_per_dimension
    from ppl_models.hierarchical_vae import TwoLayerVAE

    torch.manual_seed(0)
    vae = TwoLayerVAE((1, 4, 4), latent_dim=3).eval()
    x = torch.bernoulli(torch.full((6, 1, 4, 4), 0.4))
    for site in ("z1", "z2"):
        with torch.inference_mode(), pytest.raises(ValueError, match="hierarchical pair"):
            kl_per_dimension(vae.model, vae.guide, x, site=site)


def test_a_callback_that_turns_gradients_off_does_not_stop_training():
    # fit trained inside one enable_grad block; a callback's torch.set_grad_enabled(False)
    # left every later step without gradients, with a normal-looking history.
    def values(callback):
        pyro.clear_param_store()
        fit(model, guide, X, epochs=4, lr=0.1, seed=0, progress=False, callback=callback)
        return pyro.param("a").item()

    def turn_off(record):
        if record["epoch"] == 2:
            torch.set_grad_enabled(False)

    try:
        assert values(turn_off) == values(lambda record: None)
    finally:
        torch.set_grad_enabled(True)


def bernoulli_model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Bernoulli(logits=z), obs=x)


def bernoulli_guide(x):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(0.0, 1.0))


@pytest.mark.parametrize("torch_flag, pyro_flag", [(False, True), (True, False)])
def test_torch_and_pyro_validation_flags_are_left_as_found(torch_flag, pyro_flag):
    # torch's default validate_args off with Pyro's on: the first elbo call scored
    # Bernoulli observations of 3 at log p(x) = +1.4 nats, and reset torch's flag (Pyro's
    # validation_enabled block restores it to Pyro's flag); the reverse turned torch's off.
    from torch.distributions import Distribution

    counts = torch.tensor([3.0, 0.0, 1.0, 3.0])
    before = Distribution._validate_args
    try:
        Distribution.set_default_validate_args(torch_flag)
        with pyro.validation_enabled(pyro_flag):
            Distribution.set_default_validate_args(torch_flag)
            with pytest.raises(ValueError, match="site 'x'"):
                elbo(bernoulli_model, bernoulli_guide, counts)
            assert Distribution._validate_args is torch_flag
            assert elbo(bernoulli_model, bernoulli_guide, counts.clamp(max=1)).shape == (4,)
            assert Distribution._validate_args is torch_flag
    finally:
        Distribution.set_default_validate_args(before)


def test_a_zero_dim_numpy_integer_array_counts_as_its_integer():
    import numpy as np

    pyro.set_rng_seed(0)
    reference = elbo(model, guide, X, num_samples=3)
    pyro.set_rng_seed(0)
    assert torch.equal(elbo(model, guide, X, num_samples=np.array(3)), reference)
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        elbo(model, guide, X, num_samples=np.array(2.5))


def test_fit_names_pyros_module_local_params_setting():
    # fit refused the library's own VAE, blaming a pyro.clear_param_store() inside the pair
    torch.manual_seed(0)
    vae = VAE((1, 4, 4), latent_dim=2, hidden=(3,))
    x = (torch.rand(5, 1, 4, 4) < 0.4).float()
    with pyro.settings.context(module_local_params=True):
        with pytest.raises(ValueError, match=r"set\(module_local_params=True\) is in effect"):
            fit(vae.model, vae.guide, x, epochs=1, progress=False)


def test_a_distributed_fit_without_a_process_group_leaves_no_lock(tmp_path, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="needs a process group"):
        fit(model, guide, X, epochs=1, distributed=True, checkpoint=tmp_path / "sub" / "run.pt")
    assert list(tmp_path.iterdir()) == []
