"""Mixed precision: networks in bfloat16 under autocast, every log density in float32."""

import pyro
import pytest
import torch

from inference import fit
from inference.evidence.estimators import iwae_bound
from ppl_models import load_images
from ppl_models.pixelcnn import PixelCNN
from ppl_models.toy_manifold import ToyManifoldVAE
from ppl_models.vae import VAE


def scored_sites(model, guide, *args):
    """``{name: log_prob tensor}`` of every sample site of ``model`` replayed on ``guide``."""
    guide_trace = pyro.poutine.trace(guide).get_trace(*args)
    trace = pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_trace)).get_trace(*args)
    return {name: site["fn"].log_prob(site["value"])
            for name, site in trace.nodes.items()
            if site["type"] == "sample" and not name.startswith("data")}


def pairs():
    torch.manual_seed(0)
    images = (torch.rand(5, 1, 28, 28) < 0.4).float()
    levels = torch.rand(5, 1, 28, 28).mul(255).round() / 255
    return [
        pytest.param(VAE(hidden=(64,), latent_dim=4), images, id="vae-mlp"),
        pytest.param(VAE(network="conv", likelihood="logistic-mixture", latent_dim=4), levels,
                     id="vae-conv-logistic"),
        pytest.param(PixelCNN((1, 8, 8), channels=8, num_blocks=1), images[:, :, :8, :8],
                     id="pixelcnn"),
        pytest.param(ToyManifoldVAE(hidden=8), torch.rand(5, 16), id="toy"),
    ]


@pytest.mark.parametrize("pair,x", pairs())
def test_log_densities_stay_float32_under_bfloat16_autocast(pair, x):
    # The networks' products run in bfloat16 (8 bits of mantissa), their outputs come back as
    # float32: log densities agree with full precision to the networks' rounding, about 1%.
    pyro.set_rng_seed(0)
    full = scored_sites(pair.model, pair.guide, x)
    pyro.set_rng_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = scored_sites(pair.model, pair.guide, x)
    assert full.keys() == mixed.keys() and full
    for site, value in mixed.items():
        assert value.dtype == torch.float32, site
        torch.testing.assert_close(value, full[site], rtol=0.02, atol=0.05)


def test_fit_with_mixed_precision_trains_like_float32():
    # Same seed, same batches: bfloat16 networks reach the float32 run's test IWAE_100 within
    # 1 nat per image (of about 60) after 10 epochs on 500 binarized digits.
    data = load_images("digits").binarized(0)
    train, test = data.train.images[:500], data.test.images[:200]
    results = {}
    for mixed in (False, True):
        pyro.clear_param_store()
        torch.manual_seed(0)
        vae = VAE(data.image_shape, latent_dim=8, hidden=(64,))
        history = fit(vae.model, vae.guide, train, epochs=10, batch_size=50, lr=3e-3,
                      progress=False, mixed_precision=mixed)
        assert history[-1]["train_loss"] < history[0]["train_loss"]
        pyro.set_rng_seed(1)
        on_device = test.to(next(vae.parameters()).device)  # fit picks CUDA when present
        results[mixed] = iwae_bound(vae.model, vae.guide, on_device, num_samples=100).mean().item()
    assert abs(results[True] - results[False]) < 1.0, results


def test_mixed_precision_refuses_compile():
    vae = VAE((1, 4, 4), latent_dim=2, hidden=(4,))
    with pytest.raises(ValueError, match="mixed_precision"):
        fit(vae.model, vae.guide, torch.zeros(4, 1, 4, 4), epochs=1, compile=True,
            mixed_precision=True, progress=False)
