"""Defects found in the thirteenth session (2026-11-30) by probing helpers and by review;
each test fails on the code before its fix, unless it guards a valid neighbour."""
import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import exact_log_evidence, iwae_bound


def _enumerated_mixture(x):
    locs = torch.tensor([-2.0, 0.0, 2.0])
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Categorical(torch.ones(3) / 3),
                        infer={"enumerate": "parallel"})
        pyro.sample("x", dist.Normal(locs[c], 1.0), obs=x)


def test_exact_evidence_of_an_all_enumerated_model_does_not_call_the_default_site_its_own():
    x = torch.tensor([0.3, -1.0])
    with pytest.raises(ValueError) as caught:
        exact_log_evidence(_enumerated_mixture, x, progress=False)
    message = str(caught.value)
    assert "site='z', which this model does not have" in message
    assert "the single latent site 'z'" not in message
    # the remedy it names is exact: an empty guide, one weight
    exact = torch.logsumexp(dist.Normal(torch.tensor([-2.0, 0.0, 2.0]), 1.0).log_prob(
        x[:, None]) - torch.tensor(3.0).log(), -1)
    bound = iwae_bound(_enumerated_mixture, lambda x: None, x, num_samples=1, progress=False)
    assert torch.allclose(bound, exact, atol=1e-5)


@pytest.mark.parametrize("script, shown", [
    ("elbo_vs_iwae.py", "(default: toy,digits,fashion-mnist)"),  # one value, comma-separated
    ("outliers.py", "(default: 0 1 2 3 4)"),  # nargs="+": as many values as typed
])
def test_examples_help_shows_list_defaults_as_they_are_typed(script, shown):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    text = subprocess.run([sys.executable, str(root / "examples" / script), "--help"],
                          capture_output=True, text=True, check=True,
                          env={**os.environ, "COLUMNS": "400"}).stdout
    assert shown in text
    assert "(default: [" not in text


@pytest.fixture
def float64_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def test_a_seeded_linear_gaussian_is_the_same_model_whatever_the_default_dtype(float64_default):
    from ppl_models import LinearGaussian

    wide = LinearGaussian(20, 4, seed=0)  # (16 or more values: torch's float64 stream differs)
    torch.set_default_dtype(torch.float32)
    narrow = LinearGaussian(20, 4, seed=0)
    for name, value in narrow.state_dict().items():
        assert torch.allclose(wide.state_dict()[name].float(), value, atol=1e-6), name
    # the same data from the same seed, whatever the parameters' dtype
    assert torch.allclose(wide.simulate(100, seed=1).float(), narrow.simulate(100, seed=1),
                          atol=1e-5)


def test_sampled_images_of_the_same_weights_agree_in_float32_and_float64():
    from ppl_models import VAE

    torch.manual_seed(0)
    vae = VAE((1, 8, 8), latent_dim=20, likelihood="bernoulli", hidden=(16,))
    narrow = vae.sample_images(50, generator=torch.Generator().manual_seed(3))
    wide = vae.double().sample_images(50, generator=torch.Generator().manual_seed(3))
    assert wide.dtype == torch.float64
    assert torch.allclose(wide.float(), narrow, atol=1e-5)
