"""Every model, ``fit`` and the evidence estimators on CUDA (skipped without a GPU).

Deterministic quantities (log densities of fully observed models, a decoder's likelihood)
must agree with the CPU to float32 rounding, with TF32 switched off so that cuDNN and cuBLAS
compute in full float32. Monte Carlo quantities use other random streams on the GPU, so
they are compared with their CPU counterparts statistically, or through exact identities.
"""

from __future__ import annotations

import copy

import pyro
import pytest
import torch

from inference import elbo, fit, iwae_bound
from ppl_models import (VAE, Autoencoder, LinearGaussian, ToyManifold, ToyManifoldVAE, WaveNet,
                        uniform_dequantize)
from ppl_models.neural_lm import GRULanguageModel
from ppl_models.pixelcnn import PixelCNN
from ppl_models.text import Vocabulary

pytestmark = pytest.mark.cuda


@pytest.fixture
def device():
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def same_on(device, module, method: str, *args) -> tuple[torch.Tensor, torch.Tensor]:
    """``module.method(*args)`` on the CPU and on a copy of the module on ``device``."""
    with torch.no_grad():
        cpu = getattr(module, method)(*args)
        moved = copy.deepcopy(module).to(device)
        other = getattr(moved, method)(*(a.to(device) for a in args))
    assert other.device.type == device.type, f"{method} returned a tensor on {other.device}"
    return cpu, other.cpu()


def assert_close_statistically(cpu: torch.Tensor, gpu: torch.Tensor, what: str) -> None:
    """Means of independent per-datapoint estimates agree within 5 standard errors."""
    stderr = (cpu.var() / cpu.numel() + gpu.var() / gpu.numel()).sqrt()
    gap = (cpu.mean() - gpu.mean()).abs()
    assert gap < 5 * stderr + 1e-5, f"{what}: CPU {cpu.mean():.4f}, CUDA {gpu.mean():.4f}"


def test_fit_on_cuda_reaches_the_exact_maximum_likelihood(device):
    # as tests/inference/training/test_training.py on the CPU: the guide family holds the exact
    # posterior, so the ELBO's maximum is the likelihood's; 0.05 nats allows for SGD noise.
    truth = LinearGaussian(data_dim=5, latent_dim=2, noise_scale=0.3, seed=3)
    x = truth.simulate(1000, seed=4).detach()
    learner = LinearGaussian(data_dim=5, latent_dim=2, noise_scale=1.0, seed=5)
    history = fit(learner.model, learner.guide, x, epochs=40, batch_size=100, lr=0.02,
                  device=device, progress=False, valid_data=x)
    assert all(p.device.type == "cuda" for p in learner.parameters())
    best = truth.log_marginal(x).mean()  # the truth is a lower bound on the maximum
    reached = learner.log_marginal(x.to(device)).mean().cpu()
    assert reached > best - 0.05, (float(reached), float(best))
    assert history[-1]["valid_elbo"] < float(reached) + 1e-3, "the ELBO bounds log p(x)"


def test_iwae_bound_on_cuda_is_exact_with_the_exact_posterior(device):
    # with q = p(z | x) every importance weight equals p(x): exact to float rounding
    model = LinearGaussian(data_dim=4, latent_dim=2, seed=1).to(device)
    x = model.simulate(50, seed=2).detach()
    bound = iwae_bound(model.model, model.exact_guide, x, num_samples=100, chunk_size=30)
    assert bound.device.type == "cuda" and bound.shape == (50,)
    torch.testing.assert_close(bound, model.log_marginal(x).detach(), atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize("network", ["mlp", "conv"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian-learned", "categorical256",
                                        "logistic-mixture"])
def test_vae_on_cuda(device, network, likelihood):
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    vae = VAE((1, 28, 28), 4, likelihood, network, hidden=(32,) if network == "mlp" else None)
    levels = torch.randint(0, 256, (64, 1, 28, 28), generator=torch.Generator().manual_seed(1))
    x = (levels >= 128).float() if likelihood == "bernoulli" else levels / 255.0
    if likelihood == "gaussian-learned":  # a density scores dequantized levels, not k / 255
        x = uniform_dequantize(x, torch.Generator().manual_seed(3))
    z = torch.randn(64, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        cpu = vae.decode(z).log_prob(x).sum((1, 2, 3))
        moved = copy.deepcopy(vae).to(device)
        gpu = moved.decode(z.to(device)).log_prob(x.to(device)).sum((1, 2, 3)).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-3)
    cpu_elbo = elbo(vae.model, vae.guide, x).detach()
    # the copy is another instance: the CPU one's parameters left in Pyro's store would
    # shadow it (ShadowedParamWarning, and fit refuses)
    pyro.clear_param_store()
    gpu_elbo = elbo(moved.model, moved.guide, x.to(device)).detach()
    assert gpu_elbo.device.type == "cuda"
    assert_close_statistically(cpu_elbo, gpu_elbo.cpu(), f"VAE {network} {likelihood}")
    history = fit(moved.model, moved.guide, x, epochs=2, batch_size=32, device=device,
                  progress=False)
    assert history[-1]["train_loss"] == history[-1]["train_loss"], "NaN loss"
    images = moved.sample_images(5, torch.Generator().manual_seed(0))
    assert images.device.type == "cuda" and images.shape == (5, 1, 28, 28)


def test_autoencoder_and_toy_manifold_on_cuda(device):
    auto = Autoencoder((1, 8, 8), 3, hidden=(16,), sparsity=0.1)
    x = (torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    fit(auto.model, auto.guide, x, epochs=1, batch_size=20, device=device, progress=False)
    assert auto.encode(x.to(device)).device.type == "cuda"
    data, _ = ToyManifold().sample(200, seed=0)
    vae = ToyManifoldVAE(hidden=16)
    cpu = elbo(vae.model, vae.guide, data).detach()
    moved = copy.deepcopy(vae).to(device)
    # a PyroModule takes a parameter of its name from the param store (Pyro's semantics): the
    # CPU model's pixel_scale would replace the copy's
    pyro.clear_param_store()
    gpu = elbo(moved.model, moved.guide, data.to(device)).detach().cpu()
    assert_close_statistically(cpu, gpu, "toy manifold VAE")


def test_wavenet_on_cuda(device):
    net = WaveNet(layers=3, channels=8, skip_channels=8, gate_channels=8)
    x = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(0))
    cpu, gpu = same_on(device, net, "log_prob", x)
    torch.testing.assert_close(gpu, cpu, rtol=1e-5, atol=1e-3)
    moved = copy.deepcopy(net).to(device)
    fast = moved.generate(30, batch_size=2, seed=3, method="fast")
    naive = moved.generate(30, batch_size=2, seed=3, method="naive")
    assert fast.device.type == "cuda" and torch.equal(fast, naive)


def test_fully_observed_models_on_cuda(device):
    lm = GRULanguageModel(Vocabulary("abc"), embedding=8, hidden=16)
    cpu, gpu = same_on(device, lm, "log_prob", lm.vocab.encode(["abcab", "cc", "ba"]))
    torch.testing.assert_close(gpu, cpu, rtol=1e-5, atol=1e-4)
    cnn = PixelCNN((1, 8, 8), "bernoulli", channels=8, num_blocks=2)
    x = (torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    cpu, gpu = same_on(device, cnn, "log_prob", x)
    torch.testing.assert_close(gpu, cpu, rtol=1e-5, atol=1e-3)


def test_mixed_precision_fit_on_cuda(device):
    # bfloat16 networks on the GPU: parameters and log densities stay float32, and training
    # lowers the loss as in full precision
    # (tests/inference/training/test_mixed_precision.py on the CPU).
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16 support")
    torch.manual_seed(0)
    x = (torch.rand(256, 1, 28, 28) < 0.3).float()
    vae = VAE(hidden=(64,), latent_dim=4)
    history = fit(vae.model, vae.guide, x, epochs=3, batch_size=64, lr=3e-3, device=device,
                  progress=False, mixed_precision=True)
    assert all(p.dtype == torch.float32 and p.is_cuda for p in vae.parameters())
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_lean_training_steps_never_wait_for_the_gpu(device):
    # fit adds up SVIStep.tensor_step's losses on the device and reads them once per epoch;
    # after the first (validating) step, a step must not synchronize with the host at all.
    from inference.training.svi_step import SVIStep
    from inference.training import scale_data_plate

    vae = VAE(hidden=(64,), latent_dim=4).to(device)
    x = (torch.rand(64, 1, 28, 28, device=device) < 0.3).float()
    step = SVIStep(vae.model, vae.guide)
    with scale_data_plate(10.0):
        step.tensor_step(x)
        assert step.lean
        with pyro.validation_enabled(False):
            torch.cuda.set_sync_debug_mode("error")
            try:
                losses = [step.tensor_step(x) for _ in range(3)]
            finally:
                torch.cuda.set_sync_debug_mode("default")
    assert all(loss.device.type == "cuda" and loss.dim() == 0 for loss in losses)


def test_compiled_fit_on_cuda_draws_as_the_eager_fit(device):
    # the trace and the check against the eager step run the pair on the GPU; they must put
    # its random stream back, so compile="eager" replays the default step's numbers exactly
    losses = []
    for compile in (False, "eager"):
        pyro.clear_param_store()
        torch.manual_seed(0)
        vae = VAE((1, 8, 8), latent_dim=2, hidden=(16,))
        x = (torch.rand(20, 1, 8, 8) < 0.4).float()
        history = fit(vae.model, vae.guide, x, epochs=2, batch_size=5, seed=2, device=device,
                      compile=compile, progress=False)
        losses.append([r["train_loss"] for r in history])
    assert losses[0] == losses[1]


def test_simulated_data_do_not_depend_on_the_device(device):
    model = LinearGaussian(data_dim=4, latent_dim=2, seed=1)
    cpu = model.simulate(50, seed=2)
    gpu = copy.deepcopy(model).to(device).simulate(50, seed=2)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu)


def test_data_fingerprint_of_fashion_mnist_sized_data_on_cuda(device):
    # a float32 index grid reached one past the end beyond 2**24 elements: a device assert
    from inference.training import checkpoints

    data = torch.zeros(60000, 784, dtype=torch.uint8)
    assert checkpoints.data_fingerprint([data.to(device)]) == checkpoints.data_fingerprint([data])


def test_fit_trains_where_the_user_put_the_pair(device):
    # device=None: a plain-function pair with CPU pyro.param values and CPU data stays on the
    # CPU, as in Pyro's tutorials, and a module on the GPU takes CPU data along
    def model(x):
        loc = pyro.param("loc", torch.zeros(2))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", pyro.distributions.Normal(loc, 1.0).to_event(1), obs=x)

    def guide(x):
        pass

    pyro.clear_param_store()
    x = torch.randn(40, 2) + 3.0
    fit(model, guide, x, epochs=100, batch_size=40, lr=0.1, progress=False)
    assert pyro.param("loc").device.type == "cpu"
    assert (pyro.param("loc") - x.mean(0)).abs().max() < 0.5
    pyro.clear_param_store()
    vae = VAE((1, 8, 8), latent_dim=2, hidden=(16,)).to(device)
    images = (torch.rand(20, 1, 8, 8) < 0.4).float()
    fit(vae.model, vae.guide, images, epochs=1, batch_size=10, progress=False)
    assert all(p.is_cuda for p in vae.parameters())
