"""Two-stochastic-layer VAE: exact posterior of a linear-Gaussian instance, bounds, training."""

import math

import pyro
import pytest
import torch

from inference import (
    bound_sweep,
    elbo,
    fit,
    fit_local_guide,
    iwae_bound,
    log_importance_weights,
    make_loss,
)
from ppl_models import TwoLayerVAE, binarize_static, load_images

NOISE = 0.5


def _inverse_softplus(y: float) -> float:
    return math.log(math.expm1(y))


def linear_gaussian_pair(seed=0):
    """A TwoLayerVAE that is linear-Gaussian, with d1 = d2 = 1 and 4 pixels.

    z2 ~ N(0, 1), z1 | z2 ~ N(A z2 + a, s^2), x | z1 ~ N(w z1 + c, NOISE^2 I_4), so
    log p(x) is a Gaussian density, and the exact posterior p(z1 | x) p(z2 | z1) lies in the
    guide's family (a linear encoder with a constant scale). Returns the pair with its guide
    set to that posterior, and a function x -> exact log p(x).
    """
    torch.manual_seed(seed)
    pair = TwoLayerVAE((1, 2, 2), latent_dim=1, top_latent_dim=1, likelihood="gaussian-fixed",
                       hidden=(), top_hidden=(), likelihood_options={"scale": NOISE})
    top, dec = pair.top_decoder.net[0], pair.decoder[0]
    with torch.no_grad():
        top.weight[1] = 0.0  # constant scale of p(z1 | z2)
        A, a = float(top.weight[0, 0]), float(top.bias[0])
        s = float(torch.nn.functional.softplus(top.bias[1])) + 1e-5
        w, c = dec.weight[:, 0].clone(), dec.bias.clone()  # [4], [4]
        # p(z1 | x): prior N(a, A^2 + s^2) times the Gaussian likelihood
        v1 = A**2 + s**2
        post_var = 1 / (1 / v1 + float(w @ w) / NOISE**2)
        enc = pair.encoder.net[0]
        enc.weight[0] = post_var * w / NOISE**2
        enc.bias[0] = post_var * (a / v1 - float(w @ c) / NOISE**2)
        enc.weight[1] = 0.0
        enc.bias[1] = _inverse_softplus(math.sqrt(post_var) - 1e-5)
        # p(z2 | z1) (x adds nothing once z1 is known)
        var2 = 1 / (1 + A**2 / s**2)
        top_enc = pair.top_encoder.net[0]
        top_enc.weight[0, 0] = var2 * A / s**2
        top_enc.bias[0] = -var2 * A * a / s**2
        top_enc.weight[1] = 0.0
        top_enc.bias[1] = _inverse_softplus(math.sqrt(var2) - 1e-5)

    def log_evidence(x):
        covariance = v1 * torch.outer(w, w) + NOISE**2 * torch.eye(4)
        return torch.distributions.MultivariateNormal(w * a + c, covariance).log_prob(
            x.flatten(1))

    return pair, log_evidence


def unit_data(n=5):
    return torch.rand(n, 1, 2, 2, generator=torch.Generator().manual_seed(0))


def test_exact_posterior_guide_gives_every_weight_equal_to_log_evidence():
    pair, log_evidence = linear_gaussian_pair()
    x = unit_data()
    log_w = log_importance_weights(pair.model, pair.guide, x, num_samples=200)
    # q = p(z1, z2 | x): log p(x, z) - log q(z) = log p(x) for every draw (float32 rounding)
    torch.testing.assert_close(log_w, log_evidence(x).expand(200, -1), rtol=0, atol=2e-4)


def test_bounds_rise_with_k_towards_the_closed_form_evidence():
    pair, log_evidence = linear_gaussian_pair()
    with torch.no_grad():  # a guide 1.5 times too wide in both layers (the weights stay bounded)
        for layer in (pair.encoder.net[0], pair.top_encoder.net[0]):
            layer.bias[1] = _inverse_softplus(
                1.5 * float(torch.nn.functional.softplus(layer.bias[1])))
    x = unit_data()
    exact = float(log_evidence(x).mean())
    pyro.set_rng_seed(0)
    table = bound_sweep(pair.model, pair.guide, x, num_samples=[1, 10, 100, 10000], repeats=3,
                        chunk_size=5000)
    rows = [r for r in table.rows if r["bound"] == "iwae"]
    means = [r["mean"] for r in rows]
    # ELBO = IWAE_1 < IWAE_10 < IWAE_100 <= log p(x), separated by many standard errors
    assert means[0] < means[1] - 0.05 and means[1] < means[2] - 0.01, means
    assert means[2] <= exact + 3 * rows[2]["stderr"]
    assert exact - means[0] > 0.1  # the ELBO is visibly loose
    # IWAE_10000 within 0.003 nats of the closed form (bounded weights: gap ~ Var(w)/(2K))
    assert abs(means[3] - exact) < 3e-3, (means, exact)


def digits(n=150):
    return binarize_static(load_images("digits").train.images[:n], seed=0)


def small_pair(**options):
    return TwoLayerVAE((1, 8, 8), latent_dim=4, top_latent_dim=2, hidden=(32,),
                       top_hidden=(16,), **options)


@pytest.mark.parametrize("loss, particles", [("elbo", 1), ("iwae", 3), ("dreg", 3)])
def test_fit_improves_the_bound(loss, particles):
    torch.manual_seed(0)
    pair = small_pair()
    x = digits()
    pyro.set_rng_seed(0)
    before = float(iwae_bound(pair.model, pair.guide, x, num_samples=20).mean())
    history = fit(pair.model, pair.guide, x, loss=loss, num_particles=particles, epochs=4,
                  batch_size=25, lr=3e-3, progress=False)
    pyro.set_rng_seed(0)
    after = float(iwae_bound(pair.model, pair.guide, x, num_samples=20).mean())
    # untrained: about -45 nats per image; 4 epochs gain more than 8
    assert after > before + 8, (before, after)
    assert history[-1]["train_loss"] < history[0]["train_loss"]


@pytest.mark.parametrize("loss", ["elbo", "iwae", "dreg"])
def test_gradients_reach_every_parameter(loss):
    torch.manual_seed(0)
    pair = small_pair()
    make_loss(loss, num_particles=1 if loss == "elbo" else 4).loss_and_grads(
        pair.model, pair.guide, digits(8))
    for name, param in pair.named_parameters():
        assert param.grad is not None and float(param.grad.abs().sum()) > 0, name


def test_burda_architecture_by_default():
    pair = TwoLayerVAE()
    linear_shapes = {name: [tuple(m.weight.shape) for m in module.modules()
                            if isinstance(m, torch.nn.Linear)]
                     for name, module in pair.named_children()}
    assert linear_shapes == {
        "encoder": [(200, 784), (200, 200), (200, 200)],  # 2 x 100 Gaussian parameters
        "top_encoder": [(100, 100), (100, 100), (100, 100)],  # 2 x 50
        "top_decoder": [(100, 50), (100, 100), (200, 100)],
        "decoder": [(200, 100), (200, 200), (784, 200)],
    }
    assert all(isinstance(m, torch.nn.Tanh) for m in pair.encoder.net[1::2])


def test_shapes_and_conveniences():
    torch.manual_seed(0)
    pair = small_pair()
    x = digits(6)
    torch.testing.assert_close(pair.representation(x), pair.encode(x)[0].detach())
    assert pair.representation(x).shape == (6, 4)
    assert pair.reconstruct(x).shape == x.shape
    assert pair.reconstruct(x, num_samples=3).shape == (3, *x.shape)
    images = pair.sample_images(5, generator=torch.Generator().manual_seed(0))
    assert images.shape == (5, 1, 8, 8) and bool(((images > 0) & (images < 1)).all())
    assert pair.sample_images(2, mean=False).unique().tolist() in ([0.0], [1.0], [0.0, 1.0])
    weights = log_importance_weights(pair.model, pair.guide, x, num_samples=7)
    assert weights.shape == (7, 6) and bool(torch.isfinite(weights).all())


def test_local_guide_starts_at_the_encoder_and_only_improves_it():
    torch.manual_seed(0)
    pair = small_pair()
    fit(pair.model, pair.guide, digits(), epochs=3, batch_size=25, progress=False)
    x = digits(6)
    local = pair.local_guide(x)
    pyro.set_rng_seed(0)
    amortized = log_importance_weights(pair.model, pair.guide, x, num_samples=50)
    pyro.set_rng_seed(0)
    start = log_importance_weights(pair.model, local, x, num_samples=50)
    torch.testing.assert_close(start, amortized, rtol=0, atol=1e-4)  # the same q, same draws
    fit_local_guide(pair.model, local, x, num_steps=100)
    pyro.set_rng_seed(1)
    gain = (elbo(pair.model, local, x, num_samples=2000)
            - elbo(pair.model, pair.guide, x, num_samples=2000))
    assert float(gain.mean()) > 0.05 and float(gain.min()) > -0.05, gain


def test_bad_input_is_named():
    pair = small_pair()
    with pytest.raises(ValueError, match=r"shape \[batch, 1, 8, 8\]"):
        pair.model(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match="binary"):
        pair.guide(torch.full((2, 1, 8, 8), 0.3))
    with pytest.raises(ValueError, match="top_latent_dim must be a positive integer"):
        TwoLayerVAE((1, 8, 8), top_latent_dim=0)
    with pytest.raises(ValueError, match="unknown activation"):
        TwoLayerVAE((1, 8, 8), activation="sine")
    with pytest.raises(ValueError, match="holds 6 datapoints"):
        pair.local_guide(digits(6))(digits(4))
    with pytest.raises(ValueError, match="num_steps must be"):
        fit_local_guide(pair.model, pair.local_guide(digits(6)), digits(6), num_steps=0)
