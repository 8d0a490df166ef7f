"""The evidence-speed benchmark compares like with like: the three computations agree exactly."""

import importlib.util
from pathlib import Path

import pyro
import pytest
import torch

from inference import iwae_bound
from ppl_models.vae import VAE

BENCHMARK = Path(__file__).resolve().parents[3] / "benchmarks" / "evidence_speed.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("evidence_speed", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def small_vae_and_images():
    torch.manual_seed(0)
    vae = VAE((1, 28, 28), latent_dim=3, hidden=(6,)).double()
    x = (torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1)) < 0.3).double()
    return vae, x


def test_iwae_bound_equals_plain_pytorch_on_the_same_draws():
    # Both draw [chunk, batch, d] standard normals per chunk in the same order, so in float64
    # they differ only by summation order (measured ~1e-14 relative).
    benchmark = load_benchmark()
    vae, x = small_vae_and_images()
    pyro.set_rng_seed(2)
    with pyro.validation_enabled(False):
        ours = iwae_bound(vae.model, vae.guide, x, num_samples=30, chunk_size=7)
    pyro.set_rng_seed(2)
    plain = benchmark.plain_iwae(vae, x, 30, 7)
    torch.testing.assert_close(ours, plain, rtol=1e-10, atol=0)


@pytest.mark.parametrize("pair", ["ours", "probs"])
def test_renyi_alpha_zero_per_image_equals_iwae_bound(pair):
    # RenyiELBO(alpha=0) of a one-image batch is IWAE_K of that image; with one chunk of K the
    # draws are those of iwae_bound (float64; the probs scoring differs by rounding only).
    benchmark = load_benchmark()
    vae, x = small_vae_and_images()
    scored = vae if pair == "ours" else benchmark.ProbsPair(vae)
    for i in range(2):
        pyro.set_rng_seed(3 + i)
        with pyro.validation_enabled(False):
            ours = iwae_bound(vae.model, vae.guide, x[i:i + 1], num_samples=20)
        pyro.set_rng_seed(3 + i)
        renyi = benchmark.pyro_renyi_iwae(scored, x[i:i + 1], 20)
        assert float(renyi[0]) == pytest.approx(float(ours[0]), rel=1e-9)
