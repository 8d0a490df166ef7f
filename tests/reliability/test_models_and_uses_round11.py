"""Built-in models, examples and uses that the probes of 2026-11-30 (eleventh session) found
wrong or failing raw; each test fails on the code before its fix.

- ``exact_log_evidence`` of a posterior far narrower than its grid (x ~ N(z, 1e-9)) returned
  -7.6e9 nats against an exact -0.96: the float32 log joint (-1e10) absorbed the nodes'
  weights, and the resolution check saw 0.0025 of the mass on the node that held all of it.
- A user's encoder whose ``exp(0.5 * logvar)`` overflowed made the completion and
  super-resolution chains return NaN means silently; an observation the decoder gives
  probability 0 came out NaN or as a confident 1.0 for every pixel.
- A decoder returning ``Independent(Bernoulli, 3)`` was refused (completion,
  super-resolution) or failed raw (bits-back); flat pixels failed in a size mismatch.
- ``bits_back_encode`` wrote a stream its own VAE could not decode when ``latent_dim`` was
  not the encoder's code size.
"""

import math
from types import SimpleNamespace

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import exact_log_evidence


def narrow_model(x, noise):
    """z ~ N(0, 1), x | z ~ N(z, noise^2): p(x) = N(x; 0, 1 + noise^2)."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros((), dtype=x.dtype), 1.0))
        pyro.sample("x", dist.Normal(z, noise), obs=x)


@pytest.mark.parametrize("dtype, noise", [(torch.float32, 1e-9), (torch.float32, 1e-7),
                                          (torch.float64, 1e-13)])
def test_a_posterior_narrower_than_the_grid_is_refused(dtype, noise):
    x = torch.tensor([0.3001234, -1.2345678], dtype=dtype)  # off the nodes
    with pytest.raises(ValueError, match=r"puts 1\.00 of its mass on one grid node"):
        exact_log_evidence(narrow_model, x, noise, progress=False)


def test_a_narrow_posterior_the_grid_resolves_is_exact():
    x = torch.tensor([0.3, -1.2], dtype=torch.float64)
    noise = 0.01
    result = exact_log_evidence(narrow_model, x, noise, progress=False)
    exact = torch.distributions.Normal(0.0, math.sqrt(1 + noise ** 2)).log_prob(x)
    assert torch.allclose(result.log_evidence, exact, atol=1e-6), (result.log_evidence, exact)
    # the posterior is a density on the nodes: it integrates to one with the grid's weights
    assert result.log_posterior.exp().max() > 1  # a density of scale 0.01 peaks near 40


class LinearCoder(torch.nn.Module):
    """A user's encoder/decoder written the common way: ``scale = exp(0.5 * logvar)``,
    Bernoulli pixels ``sigmoid(W z + b)`` over a 2x2 image, one latent."""

    image_shape = (1, 2, 2)
    latent_dim = 1
    likelihood = SimpleNamespace(name="bernoulli")  # as bits-back asks

    def __init__(self, log_var=0.0, flat=False, event=False, bias=None):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor([[2.0], [-1.0], [0.5], [1.5]]))
        if bias is None:
            self.bias = torch.nn.Parameter(torch.zeros(4))
        else:  # a fixed offset (-inf: a pixel the decoder never turns on), not trained
            self.register_buffer("bias", bias)
        self.log_var, self.flat, self.event = log_var, flat, event

    def encode(self, x):
        loc = (x.flatten(1) - 0.5) @ self.weight
        return loc, torch.exp(0.5 * torch.full_like(loc, self.log_var))

    def decode(self, z):
        logits = z @ self.weight.T + self.bias
        pixels = torch.distributions.Bernoulli(
            logits=logits if self.flat else logits.unflatten(-1, self.image_shape))
        return torch.distributions.Independent(pixels, 3) if self.event else pixels


def completion_inputs():
    from inference.uses import observed_channel

    y = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    return observed_channel(y, torch.tensor([[[[False, True], [False, True]]]]))


def test_an_encoder_scale_that_overflowed_is_named_not_averaged_into_nan():
    from inference.uses import metropolis_within_gibbs, super_resolve_mh, super_resolve_mwg

    coder = LinearCoder(log_var=400.0)  # exp(200) is inf in float32
    with pytest.raises(ValueError, match=r"vae.encode returned .* scale that is not finite "
                                         r"and positive, for images \[0\]"):
        metropolis_within_gibbs(coder, completion_inputs(), 20, progress=False)
    for sampler in (super_resolve_mwg, super_resolve_mh):
        with pytest.raises(ValueError, match="vae.encode returned"):
            sampler(coder, torch.ones(1, 1, 1, 1), 2, 20, progress=False)


def test_an_observation_of_probability_zero_has_no_posterior():
    """Pixel 0 has logit -inf for every code and is observed as 1: p(y) = 0. The samplers
    returned NaN (completion) or a confident 1.0 for every pixel (super-resolution)."""
    from inference.uses import metropolis_within_gibbs, super_resolve_mh, super_resolve_mwg

    coder = LinearCoder(bias=torch.tensor([-math.inf, 0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match=r"log p\(y \| z\) is -inf .* images \[0\]"):
        metropolis_within_gibbs(coder, completion_inputs(), 20, progress=False)
    for sampler in (super_resolve_mwg, super_resolve_mh):
        with pytest.raises(ValueError, match=r"log p\(y \| z\) is -inf"):
            sampler(coder, torch.ones(1, 1, 1, 1), 2, 20, progress=False)


def test_a_decoder_with_event_dims_or_flat_pixels():
    """``Bernoulli(...).to_event(3)`` is the same pixels (refused by completion and
    super-resolution, an AttributeError in bits-back); flat ``[..., 4]`` pixels are named
    (a raw size mismatch)."""
    from inference.coding import bits_back_decode, bits_back_encode
    from inference.uses import map_complete, super_resolve_mh

    plain, wrapped = LinearCoder(), LinearCoder(event=True)
    channel = completion_inputs()
    probs, _ = map_complete(plain, channel, steps=20, progress=False)
    assert torch.allclose(map_complete(wrapped, channel, steps=20, progress=False)[0], probs)
    y = torch.full((1, 1, 1, 1), 0.5)
    torch.manual_seed(0)
    expected = super_resolve_mh(plain, y, 2, 40, progress=False).mean
    torch.manual_seed(0)
    assert torch.allclose(super_resolve_mh(wrapped, y, 2, 40, progress=False).mean, expected)
    images = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]], [[[0.0, 0.0], [1.0, 1.0]]]])
    decoded, _ = bits_back_decode(wrapped, bits_back_encode(wrapped, images))
    assert torch.equal(decoded, images)
    with pytest.raises(ValueError, match=r"returned pixels of shape \[1, 4\], which do not end "
                                         r"in image_shape \(1, 2, 2\)"):
        map_complete(LinearCoder(flat=True), channel, steps=20, progress=False)


def test_bits_back_refuses_a_latent_dim_its_encoder_does_not_have():
    """latent_dim 2 with a 1-latent encoder: the stream was written, and the same VAE could
    not read it back ("corrupt stream or another VAE")."""
    from inference.coding import bits_back_encode

    coder = LinearCoder()
    coder.latent_dim = 2
    images = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    with pytest.raises(ValueError, match=r"vae.encode returned \[\[1, 1\], \[1, 1\]\] for one "
                                         r"image, not \(loc, scale\) of shape \[1, 2\]"):
        bits_back_encode(coder, images)


def test_adam_map_checks_its_arguments_and_the_objectives_shape():
    """Exported from inference.uses, it checked nothing: an objective of shape [batch, 1]
    returned codes of the wrong shape silently, steps=-5 ran."""
    from inference.uses import adam_map

    start = torch.zeros(2, 2)

    def quadratic(z):  # maximum at (1, -1) for every row: [batch]
        return -((z - torch.tensor([1.0, -1.0])) ** 2).sum(-1)

    found = adam_map(start, quadratic, 300, 0.05, "test", "the start", progress=False)
    assert found.shape == (2, 2) and torch.allclose(found, torch.tensor([[1.0, -1.0]] * 2),
                                                    atol=0.05)
    for objective, match in ((lambda z: quadratic(z)[:, None], r"must return \[batch\] = \[2\]"),
                             (lambda z: quadratic(z.detach()), "not differentiable")):
        with pytest.raises(ValueError, match=match):
            adam_map(start, objective, 5, 0.05, "test", "the start", progress=False)
    for steps, lr in ((-5, 0.05), (2.5, 0.05), (5, -0.1), (5, math.nan)):
        with pytest.raises(ValueError, match="steps|lr"):
            adam_map(start, quadratic, steps, lr, "test", "the start", progress=False)
    with pytest.raises(TypeError, match=r"start must be a floating tensor \[batch, d\]"):
        adam_map(torch.zeros(2), quadratic, 5, 0.05, "test", "the start", progress=False)


def test_observed_channel_reads_no_filler_under_missing():
    """NaN or 0.5 standing at pixels marked missing (never read) was refused, by a message
    that named only the dtype and shape."""
    from inference.uses import observed_channel

    y = torch.tensor([[[[1.0, math.nan], [0.0, 0.5]]]])
    missing = torch.tensor([[[[False, True], [False, True]]]])
    filled = observed_channel(torch.where(missing, 0.0, y), missing)
    assert torch.equal(observed_channel(y, missing), filled)
    with pytest.raises(ValueError, match=r"0/1 pixels where it is observed: 2 observed "
                                         r"pixel\(s\) are not, e.g. nan"):
        observed_channel(y)


def test_bits_back_decodes_in_the_vaes_dtype():
    """A float64 VAE's images came back float32 (an empty batch in the default dtype)."""
    from inference.coding import bits_back_decode, bits_back_encode

    coder = LinearCoder().double()
    images = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]], dtype=torch.float64)
    for batch in (images, images[:0]):
        decoded, _ = bits_back_decode(coder, bits_back_encode(coder, batch))
        assert decoded.dtype == torch.float64 and torch.equal(decoded, batch)


def test_bits_back_reads_the_dtype_of_a_buffers_only_vae_from_its_floating_buffers():
    """A VAE whose weights are buffers, the first an integer step counter: its codes and
    images were cast to int64 (codes of 0.37 decoded as 0)."""
    from inference.coding import bits_back_decode, bits_back_encode

    coder = LinearCoder()
    weight, bias = coder.weight.detach(), coder.bias.detach()
    del coder.weight, coder.bias
    coder.register_buffer("steps", torch.tensor(7))
    coder.register_buffer("weight", weight)
    coder.register_buffer("bias", bias)
    images = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]], [[[0.0, 1.0], [1.0, 1.0]]]])
    decoded, _ = bits_back_decode(coder, bits_back_encode(coder, images))
    assert decoded.dtype == torch.float32 and torch.equal(decoded, images)
