"""VAE and autoencoders: shapes with every likelihood, gradients, input checks."""

import pyro
import pytest
import torch

from inference import elbo, iwae_bound, log_importance_weights, log_mean_exp, make_loss
from ppl_models import load_images
from ppl_models.likelihoods import LIKELIHOODS, make_likelihood
from ppl_models import FlowVAE, TwoLayerVAE
from ppl_models.vae import VAE, Autoencoder


def images_for(likelihood: str, shape=(1, 8, 8), n=6) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 256, (n, *shape), generator=gen).float() / 255
    if likelihood == "bernoulli":
        return (levels > 0.5).float()
    return levels if make_likelihood(likelihood).discrete else levels * 255 / 256


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_vae_bounds_have_one_value_per_image(likelihood):
    vae = VAE((1, 8, 8), latent_dim=3, likelihood=likelihood, hidden=(32,))
    x = images_for(likelihood)

    def weights_of(images):
        pyro.set_rng_seed(1)
        return log_importance_weights(vae.model, vae.guide, images, num_samples=4)

    weights = weights_of(x)
    assert weights.shape == (4, 6) and bool(torch.isfinite(weights).all())
    # column i is image i's alone: changing image 0 (same seed, so the same noise) leaves the
    # other columns exactly as they were and changes column 0; a plate that mixed images up
    # (a sum or a broadcast over the batch) would move them all
    changed = x.clone()
    changed[0] = x[1]
    moved = weights_of(changed)
    assert torch.equal(moved[:, 1:], weights[:, 1:])
    assert not torch.equal(moved[:, 0], weights[:, 0])
    # the bounds reduce those same weights over particles, per image: exact on the same seed
    pyro.set_rng_seed(1)
    iwae = iwae_bound(vae.model, vae.guide, x, num_samples=4)
    pyro.set_rng_seed(1)
    bound = elbo(vae.model, vae.guide, x, num_samples=4)
    assert iwae.shape == bound.shape == (6,)
    torch.testing.assert_close(iwae, log_mean_exp(weights), rtol=0, atol=1e-6)
    # (the mean accumulated in float64, as elbo does: a float32 sum overflows for huge weights)
    torch.testing.assert_close(bound, weights.double().mean(0).float(), rtol=0, atol=1e-6)
    assert vae.reconstruct(x).shape == x.shape
    assert vae.reconstruct(x, num_samples=2).shape == (2, *x.shape)
    assert vae.sample_images(5).shape == (5, 1, 8, 8)


def test_conv_vae_on_28x28():
    vae = VAE((1, 28, 28), latent_dim=4, network="conv")
    x = images_for("bernoulli", (1, 28, 28), n=3)
    assert elbo(vae.model, vae.guide, x, num_samples=2).shape == (3,)
    with pytest.raises(ValueError, match=r"\[C, 28, 28\]"):
        VAE((1, 8, 8), network="conv")


def test_gradients_flow_through_the_reparameterized_guide():
    vae = VAE((1, 8, 8), latent_dim=3, hidden=(16,))
    x = images_for("bernoulli")
    make_loss("elbo").loss_and_grads(vae.model, vae.guide, x)
    for name, param in vae.encoder.named_parameters():
        assert param.grad is not None and float(param.grad.abs().sum()) > 0, name


def test_bad_input_is_named():
    vae = VAE((1, 8, 8), latent_dim=2, hidden=(8,))
    with pytest.raises(ValueError, match=r"shape \[batch, 1, 8, 8\]"):
        vae.model(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match="binary"):
        vae.model(torch.full((2, 1, 8, 8), 0.3))
    with pytest.raises(TypeError, match="floating-point"):
        vae.model(torch.zeros(2, 1, 8, 8, dtype=torch.long))
    for dtype in (torch.float16, torch.float64):  # not a matmul error deep in the network
        with pytest.raises(TypeError, match=f"x is {dtype} on cpu, the VAE's parameters "
                                            "torch.float32"):
            iwae_bound(vae.model, vae.guide, torch.zeros(2, 1, 8, 8, dtype=dtype), num_samples=2)
    with pytest.raises(ValueError, match="unknown network"):
        VAE((1, 8, 8), network="transformer")
    with pytest.raises(ValueError, match="unknown data set"):
        load_images("cifar")


def test_autoencoders_are_fully_observed():
    x = images_for("bernoulli")
    plain = Autoencoder((1, 8, 8), latent_dim=3, hidden=(16,))
    sparse = Autoencoder((1, 8, 8), latent_dim=3, hidden=(16,), sparsity=2.0)
    sparse.load_state_dict(plain.state_dict())
    trace = pyro.poutine.trace(sparse.model).get_trace(x)
    sites = [n for n, s in trace.nodes.items() if s["type"] == "sample" and n != "data"]
    assert sites == ["l1_activity", "x"]
    # the objective of the sparse model is the plain one minus the L1 penalty
    penalty = 2.0 * plain.encode(x).abs().sum(-1)
    plain_value = elbo(plain.model, plain.guide, x)
    torch.testing.assert_close(elbo(sparse.model, sparse.guide, x), plain_value - penalty)
    with pytest.raises(ValueError, match="sparsity"):
        Autoencoder((1, 8, 8), sparsity=-1.0)


@pytest.mark.parametrize("mean", ["no", 0, 1, None, torch.tensor(False)])
def test_sample_images_takes_mean_as_a_real_bool(mean):
    # mean="no" used to count as True and return pixel means
    vae = VAE((1, 4, 4), latent_dim=2, hidden=(8,))
    with pytest.raises(TypeError, match=r"mean must be True or False, got "):
        vae.sample_images(2, mean=mean)
    assert vae.sample_images(2, mean=False).unique().tolist() in ([0.0], [1.0], [0.0, 1.0])



@pytest.mark.parametrize("make", [
    lambda: VAE((1, 4, 4), 2, hidden=(8,)),
    lambda: Autoencoder((1, 4, 4), 2, hidden=(8,)),
    lambda: TwoLayerVAE((1, 4, 4), 2, 2, hidden=(4,), top_hidden=(4,)),
    lambda: FlowVAE((1, 4, 4), 2, hidden=(4,)),
], ids=["VAE", "Autoencoder", "TwoLayerVAE", "FlowVAE"])
def test_reconstruct_refuses_images_its_likelihood_does_not_score(make):
    # grey 0..255 images given to a Bernoulli model were reconstructed without a word
    model = make()
    grey = torch.randint(0, 256, (2, 1, 4, 4)).float()
    with pytest.raises(ValueError, match="binary"):
        model.reconstruct(grey)
    assert model.reconstruct((grey > 127).float()).shape == (2, 1, 4, 4)


def test_pixel_vae_reconstruct_refuses_images_its_likelihood_does_not_score():
    from ppl_models.pixel_vae import PixelVAE

    model = PixelVAE((1, 4, 4), 2, hidden=(8,), channels=4, num_blocks=1, first_kernel_size=3)
    with pytest.raises(ValueError, match="binary"):
        model.reconstruct(torch.randint(0, 256, (2, 1, 4, 4)).float())
