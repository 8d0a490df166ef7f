"""PixelCNN: causality, normalization by enumeration, evidence, samplers, completions, checks."""

import itertools
import re

import pytest
import torch

from inference import elbo, fit
from ppl_models import checks
from ppl_models.data import load_images
from ppl_models.pixelcnn import PixelCNN, default_depth


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: a second torch thread only adds synchronization, and on a busy machine
    it slowed these tests ten-fold (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small(image_shape=(1, 4, 4), likelihood="bernoulli", **kwargs) -> PixelCNN:
    torch.manual_seed(0)
    options = {"channels": 6, "num_blocks": 2, "kernel_size": 3, "first_kernel_size": 3}
    return PixelCNN(image_shape, likelihood, **{**options, **kwargs})


def random_images(m: PixelCNN, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    levels = len(m.levels)
    k = torch.randint(0, levels, (n, *m.image_shape), generator=g)
    return m.levels[k]


@pytest.mark.parametrize("likelihood,image_shape", [("bernoulli", (1, 5, 4)),
                                                     ("categorical256", (3, 4, 4))])
def test_parameters_are_causal_in_pixels_and_channels(likelihood, image_shape):
    m = small(image_shape, likelihood, num_blocks=3, channels=4 * image_shape[0])
    C, H, W = image_shape
    x = random_images(m, 2).requires_grad_()
    params = m.pixel_params(x)  # [2, P, C, H, W]
    order = torch.arange(H * W).reshape(H, W)
    for i, j in [(0, 0), (1, 2), (H - 1, W - 1), (2, 0)]:
        for c in range(C):
            (grad,) = torch.autograd.grad(params[:, :, c, i, j].sum(), x, retain_graph=True)
            reach = grad.abs().sum(0)  # [C, H, W]
            # exactly zero: masked weights never multiply the present or the future
            assert (reach[:, order > order[i, j]] == 0).all(), f"{(c, i, j)} sees later pixels"
            assert (reach[c:, i, j] == 0).all(), f"{(c, i, j)} sees channels >= {c} of itself"
            if c > 0:
                assert (reach[:c, i, j] > 0).all(), f"{(c, i, j)} ignores earlier channels"


@pytest.mark.parametrize("conditioning", ["none", "class", "vector"])
def test_probabilities_of_every_binary_image_sum_to_one(conditioning):
    options = {"class": {"num_classes": 3}, "vector": {"cond_dim": 2}}.get(conditioning, {})
    m = small((1, 3, 3), **options).double()
    x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=9)), dtype=torch.float64)
    x = x.reshape(512, 1, 3, 3)  # all 2^9 images
    conditions = {"none": [{}],
                  "class": [{"y": torch.full((512,), c)} for c in range(3)],
                  "vector": [{"h": v.expand(512, 2)} for v in torch.randn(2, 2).double()]}
    for cond in conditions[conditioning]:
        with torch.no_grad():
            total = m.log_prob(x, **cond).logsumexp(0)
        # float64 sum of 512 probabilities: exact to ~1e-15; 1e-6 is the requirement
        assert abs(float(total)) < 1e-6, float(total)


def test_elbo_with_the_empty_guide_is_log_prob():
    m = small(num_classes=2)
    x = random_images(m, 5)
    y = torch.tensor([0, 1, 1, 0, 1])
    with torch.no_grad():
        expected = m.log_prob(x, y)
    # no latent variables: the single log weight is log p(x | y) itself (float32 rounding)
    assert torch.allclose(elbo(m.model, m.guide, x, y), expected, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("likelihood", ["bernoulli", "categorical256", "logistic-mixture"])
def test_shapes_and_supports_of_the_three_likelihoods(likelihood):
    mixtures = {"num_mixtures": 3} if likelihood == "logistic-mixture" else {}
    m = small((2, 3, 4), likelihood, channels=4, **mixtures)
    x = random_images(m, 3)
    P = {"bernoulli": 1, "categorical256": 256, "logistic-mixture": 9}[likelihood]
    assert m.pixel_params(x).shape == (3, P, 2, 3, 4)
    log_p = m.log_prob(x)
    assert log_p.shape == (3,) and (log_p < 0).all()
    s = m.sample_fast(2, seed=3)
    assert s.shape == (2, 2, 3, 4)
    assert torch.isin(s, m.levels).all(), "samples must be values of the likelihood's levels"


def test_vector_condition_with_particle_dims_broadcasts_over_images():
    m = small(cond_dim=3)
    x = random_images(m, 4)
    h = torch.randn(5, 4, 3)  # [particles, batch, cond_dim], as a VAE decoder would pass it
    with torch.no_grad():
        joint = m.log_prob(x, h=h)
        loop = torch.stack([m.log_prob(x, h=h[k]) for k in range(5)])
    assert joint.shape == (5, 4)
    assert torch.allclose(joint, loop, atol=1e-5)  # same network, same float32 arithmetic


@pytest.mark.parametrize("likelihood,image_shape,options", [
    ("bernoulli", (1, 6, 5), {"num_classes": 3}),
    ("categorical256", (3, 3, 3), {"cond_dim": 2}),
    ("logistic-mixture", (1, 3, 4), {}),
])
def test_fast_sampler_draws_the_same_images_as_the_naive_one(likelihood, image_shape, options):
    m = small(image_shape, likelihood, **options)
    cond = {}
    if "num_classes" in options:
        cond["y"] = torch.tensor([0, 1, 2, 2])
    if "cond_dim" in options:
        cond["h"] = torch.randn(4, 2)
    naive = m.sample(4, **cond, seed=11)
    fast = m.sample_fast(4, **cond, seed=11)
    assert torch.equal(naive, fast), (naive != fast).nonzero()[:5]
    assert not torch.equal(fast, m.sample_fast(4, **cond, seed=12)), "the seed must matter"
    # the caches reproduce the convolutions; only float32 rounding differs
    x = random_images(m, 4)
    difference = (m.cached_params(x, **cond) - m.pixel_params(x, **cond)).abs().max()
    assert difference < 1e-5, float(difference)


def test_completion_keeps_given_pixels_and_samples_the_rest():
    m = small((1, 6, 6), num_blocks=1)
    given = random_images(m, 3, seed=4)
    mask = torch.zeros(1, 1, 6, 6, dtype=torch.bool)
    mask[..., :3, :] = True  # the top half is given
    outs = [m.sample(3, given=given, mask=mask, seed=5),
            m.sample_fast(3, given=given, mask=mask, seed=5),
            m.sample_fast(3, given=given, mask=mask, seed=6)]
    for out in outs:
        assert torch.equal(out[..., :3, :], given[..., :3, :])
    assert torch.equal(outs[0], outs[1])
    # 54 free binary pixels: two seeds agreeing on all of them has probability ~0
    assert not torch.equal(outs[1][..., 3:, :], outs[2][..., 3:, :])


def test_bad_input_raises_clear_errors():
    m = small(num_classes=2)
    x = random_images(m, 2)
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"shape \[batch, 1, 4, 4\]"):
        m.log_prob(x[:, :, :3], y)
    with pytest.raises(ValueError, match="floating-point"):
        m.log_prob(x.long(), y)
    with pytest.raises(ValueError, match="binary"):
        m.log_prob(x * 0.5, y)
    with pytest.raises(ValueError, match=r"class ids in 0..1"):
        m.log_prob(x, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="int64 tensor"):
        m.log_prob(x)
    with pytest.raises(ValueError, match="cond_dim=None"):
        m.log_prob(x, y, h=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="8-bit levels"):
        small(likelihood="categorical256").log_prob(x * 0.3)
    with pytest.raises(ValueError, match="both given"):
        m.sample(2, y, given=x)
    with pytest.raises(ValueError, match="likelihood must be"):
        PixelCNN((1, 4, 4), "gaussian-fixed")
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        PixelCNN((4, 4))


def test_maximum_likelihood_fit_lowers_test_nll():
    data = load_images("digits").binarized(0)
    train, test = data.train.images[:400], data.test.images[:100]
    m = small((1, 8, 8), channels=16, num_blocks=2, first_kernel_size=5)
    with torch.no_grad():
        before = -float(m.log_prob(test).mean())
    history = fit(m.model, m.guide, train, epochs=4, batch_size=32, lr=3e-3, progress=False)
    with torch.no_grad():
        after = -float(m.log_prob(test).mean())
    # untrained: 41.8 nats (near 64 ln 2 = 44.4); four epochs: 27.6 (measured, seed 0). The
    # 8-nat margin is half the measured gain, room for rounding across thread counts
    assert after < before - 8, (before, after)
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_dropout_acts_in_training_only_and_samplers_switch_it_off():
    m = small((1, 5, 5), dropout=0.5)
    plain = small((1, 5, 5))  # the same seed: identical weights without dropout
    x = random_images(m, 6)
    m.train()
    with torch.no_grad():
        # half of the gated units zeroed: two draws differ (equal with probability ~0)
        assert not torch.equal(m.log_prob(x), m.log_prob(x))
    m.eval()
    with torch.no_grad():
        assert torch.equal(m.log_prob(x), plain.log_prob(x))  # evaluation mode: no dropout
    m.train()
    naive = m.sample(3, seed=2)
    fast = m.sample_fast(3, seed=2)
    assert torch.equal(naive, fast) and torch.equal(naive, plain.sample_fast(3, seed=2))
    assert m.training and all(b.dropout.training for b in m.blocks), "training flag restored"
    with pytest.raises(ValueError, match="dropout must be >= 0 and < 1"):
        small(dropout=1.0)


def test_default_depth_grows_with_the_image():
    # 8x8 digits keep the network of the digits results; 28x28 images get 8 blocks after a
    # 7x7 layer, so that a pixel sees 11 rows up (3 + 8) instead of 6 (2 + 4)
    assert default_depth((1, 8, 8)) == (4, 5)
    assert default_depth((1, 28, 28)) == (8, 7)
    assert default_depth((1, 28, 28), num_blocks=3) == (3, 7)
    assert default_depth((1, 8, 8), first_kernel_size=3) == (4, 3)


@pytest.mark.parametrize("method, held, per_image", [
    ("sample_fast", "the padded caches of every layer's input", 442),
    ("sample", "the network's widest layer", 304),
])
def test_samplers_count_what_they_hold_beside_the_images(monkeypatch, method, held, per_image):
    # only the images [num, C, H, W] were counted: sample_fast's caches are 28x larger here
    # (for a 28x28 model of 64 channels 145x, num=2_000_000 died in the allocator at 922 GB)
    m = small()  # per image: 16 pixels; caches 30 + 2 * 180, window 36; widest layer 18 x 16
    monkeypatch.setattr(checks, "physical_memory", lambda: 50 * 16 * 4 * 2)  # twice the images
    with pytest.raises(ValueError, match=re.escape(
            f"num=50: the images [50, 1, 4, 4] with {held}, {per_image:,} values per image: "
            f"{50 * per_image * 4:,} bytes, more than the 6,400 bytes")):
        getattr(m, method)(50)
    monkeypatch.setattr(checks, "physical_memory", lambda: 50 * per_image * 4)
    assert getattr(m, method)(50).shape == (50, 1, 4, 4)


def test_a_28x28_sample_fast_is_refused_naming_num(monkeypatch):
    # 8 GiB hold the 627 MB of images, not the 2 x 44.5 GB of caches
    monkeypatch.setattr(checks, "physical_memory", lambda: 8 * 2**30)
    m = PixelCNN((1, 28, 28), "bernoulli", channels=64, num_blocks=2)
    with pytest.raises(ValueError, match=r"num=200000: the images \[200000, 1, 28, 28\] with "
                                         r"the padded caches .* bytes, more than"):
        m.sample_fast(200_000)


def test_cached_params_counts_its_caches_naming_x(monkeypatch):
    m = small()  # built first: its weights alone need more than the patched memory
    monkeypatch.setattr(checks, "physical_memory", lambda: 50 * 16 * 4 * 2)
    with pytest.raises(ValueError, match=r"x of 50 images: the images \[50, 1, 4, 4\] with the "
                                         r"padded caches"):
        m.cached_params(torch.zeros(50, 1, 4, 4))


def test_channels_not_a_multiple_of_the_image_channels_are_named():
    # it used to fail inside the first masked convolution, naming its out_channels
    with pytest.raises(ValueError, match=re.escape(
            "channels must be a multiple of the images' 3 channels (image_shape=(3, 4, 4)), "
            "got 4")):
        PixelCNN((3, 4, 4), "categorical256", channels=4, num_blocks=1)
    assert PixelCNN((3, 4, 4), "categorical256", channels=6, num_blocks=1).image_shape == (3, 4, 4)


def test_images_of_other_channels_than_the_model_are_named_with_both_shapes():
    m = small((3, 4, 4), "categorical256")
    grey = torch.zeros(2, 1, 4, 4)
    expected = r"shape \[batch, 3, 4, 4\], got \[2, 1, 4, 4\]"
    with pytest.raises(ValueError, match="x must have " + expected):
        m.log_prob(grey)
    with pytest.raises(ValueError, match="x must have " + expected):
        m.cached_params(grey)
    mask = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    for sampler in (m.sample, m.sample_fast):
        with pytest.raises(ValueError, match="given must have " + expected):
            sampler(2, given=grey, mask=mask)


def test_weights_and_masks_are_counted_before_allocating(monkeypatch):
    # channels=10**5 ended in torch's "DefaultCPUAllocator: can't allocate memory", 10**8 ran
    # for minutes: the count is now compared with memory first (WaveNet and the GRU do it)
    for channels in (10**5, 10**8):
        with pytest.raises(ValueError, match=rf"channels={channels}, num_blocks=5, "
                                             r"kernel_size=3.*physical memory"):
            PixelCNN((1, 8, 8), channels=channels)
    options = dict(image_shape=(3, 8, 8), likelihood="logistic-mixture", channels=12,
                   num_blocks=3, num_classes=10, cond_dim=7, kernel_size=5)
    m = PixelCNN(**options)
    count = (sum(p.numel() for p in m.parameters())
             + sum(b.numel() for name, b in m.named_buffers() if name.endswith("mask")))
    monkeypatch.setattr(checks, "physical_memory", lambda: 4 * count - 1)
    with pytest.raises(ValueError, match=f"{count:,} float32 parameters"):
        PixelCNN(**options)
    monkeypatch.setattr(checks, "physical_memory", lambda: 4 * count)
    PixelCNN(**options)
