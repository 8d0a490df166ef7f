"""WaveNet: causality, normalization, evidence, fast = naive sampling, and learning."""

import itertools
import math
import re

import pytest
import torch

from inference import elbo, fit
from ppl_models import checks
from ppl_models.audio import histogram_bits_per_sample, mu_law_encode, split_segments
from ppl_models.wavenet import WaveNet


def small_wavenet(**kwargs) -> WaveNet:
    torch.manual_seed(0)
    options = dict(layers=3, stacks=2, channels=8, skip_channels=8, num_classes=2)
    return WaveNet(**{**options, **kwargs})


def test_logits_are_causal_with_the_stated_receptive_field():
    wn = small_wavenet()
    field = wn.receptive_field
    assert field == 1 + 2 * (1 + 2 + 4)
    x = torch.randint(0, 256, (2, 40))
    y = torch.tensor([0, 1])
    e = wn.embed(x).transpose(1, 2).detach().requires_grad_()  # [2, channels, 40]
    logits = wn.logits_from_embedding(e, y)
    for t in (0, 1, 9, 20, 39):
        (grad,) = torch.autograd.grad(logits[:, t].sum(), e, retain_graph=True)
        reach = grad.abs().sum((0, 1))  # [40]: influence of x_s on the logits of step t
        # exactly zero, not merely small: the future never enters the computation
        assert (reach[t:] == 0).all(), f"step {t} sees x_s for s >= t: {reach[t:]}"
        assert (reach[:max(0, t - field)] == 0).all(), f"step {t} sees beyond {field} samples"
        assert (reach[max(0, t - field):t] > 0).all(), f"step {t} misses part of its field"


def test_probabilities_of_all_sequences_sum_to_one():
    wn = small_wavenet(layers=2, stacks=1, channels=4, skip_channels=4, num_levels=3).double()
    x = torch.tensor(list(itertools.product(range(3), repeat=4)))  # all 81 sequences
    for label in (0, 1):
        with torch.no_grad():
            log_p = wn.log_prob(x, torch.full((len(x),), label))
        # float64: the sum of 81 probabilities is exact to about 1e-15
        assert abs(float(log_p.logsumexp(0))) < 1e-6, float(log_p.logsumexp(0))


def test_log_prob_is_the_chain_rule_over_prefixes():
    wn = small_wavenet(num_classes=None)
    x = torch.randint(0, 256, (3, 12))
    with torch.no_grad():
        # each conditional from a network that is only shown the prefix x_0..x_t
        steps = [wn.logits(x[:, :t + 1])[:, -1].log_softmax(-1).gather(-1, x[:, t:t + 1])
                 for t in range(x.shape[1])]
        chain = torch.cat(steps, 1).sum(1)
        # float32 sums of 12 terms of size ~5.5: agreement to 1e-4 nats
        assert torch.allclose(wn.log_prob(x), chain, atol=1e-4), (wn.log_prob(x), chain)


def test_elbo_with_the_empty_guide_is_log_prob():
    wn = small_wavenet()
    x = torch.randint(0, 256, (4, 30))
    y = torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        expected = wn.log_prob(x, y)
    # no latent variables: the single log weight is log p(x | y) exactly (float32 rounding)
    assert torch.allclose(elbo(wn.model, wn.guide, x, y), expected, rtol=1e-6, atol=1e-4)


def test_fast_generation_equals_naive_generation():
    wn = small_wavenet()
    y = torch.tensor([0, 1, 1])
    naive = wn.generate(150, y=y, seed=7, method="naive")
    fast = wn.generate(150, y=y, seed=7, method="fast")
    assert naive.shape == (3, 150) and naive.dtype == torch.long
    assert torch.equal(naive, fast), (naive != fast).nonzero()[:5]
    assert not torch.equal(fast, wn.generate(150, y=y, seed=8))
    # the queues reproduce the convolutions; only float32 rounding (~2e-7 measured) differs
    x = torch.randint(0, 256, (2, 50))
    with torch.no_grad():
        difference = (wn.cached_logits(x, y[:2]) - wn.logits(x, y[:2])).abs().max()
    assert difference < 1e-5, difference


def test_input_errors_are_clear():
    wn = small_wavenet()
    x, y = torch.zeros(2, 5, dtype=torch.long), torch.tensor([0, 1])
    with pytest.raises(TypeError, match="int64"):
        wn.log_prob(x.float(), y)
    with pytest.raises(ValueError, match="0..255"):
        wn.log_prob(x + 256, y)
    with pytest.raises(ValueError, match=r"\[batch, T\]"):
        wn.log_prob(x[0], y)
    with pytest.raises(ValueError, match="class ids"):
        wn.log_prob(x)
    with pytest.raises(ValueError, match="class ids"):
        wn.log_prob(x, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="unconditional"):
        small_wavenet(num_classes=None).log_prob(x, y)
    with pytest.raises(ValueError, match="method"):
        wn.generate(3, y=y, method="slow")


def test_maximum_likelihood_training_beats_the_level_histogram():
    # Two tones plus a little noise: the next level is predictable from the last few up to
    # the noise, while the levels spread over the whole range, so the histogram is costly.
    t = torch.arange(12_000, dtype=torch.float64) / 8000
    noise = torch.randn(t.shape, generator=torch.Generator().manual_seed(0), dtype=t.dtype)
    signal = (0.6 * torch.sin(2 * math.pi * 200 * t) + 0.2 * torch.sin(2 * math.pi * 630 * t)
              + 0.02 * noise)
    train, test = split_segments(mu_law_encode(signal.float()), 200)
    wn = WaveNet(layers=4, channels=16, skip_channels=16)
    fit(wn.model, wn.guide, train, epochs=10, batch_size=6, lr=1e-2, seed=0, progress=False)
    with torch.no_grad():
        model_bits = float(-wn.log_prob(test).sum() / test.numel() / math.log(2))
    baseline_bits = histogram_bits_per_sample(train, test)
    # measured over four seeds: 3.8 to 4.2 bits against 6.9; the margin leaves 1 bit spare
    assert model_bits < baseline_bits - 1.5, (model_bits, baseline_bits)


def test_generate_refuses_a_method_that_is_no_name():
    # method=[] raised "unhashable type: 'list'"
    for method in ([], {"fast": 1}, "slow", None):
        with pytest.raises(ValueError, match=r"method must be 'fast' or 'naive', got "):
            small_wavenet().generate(3, batch_size=2, method=method)


@pytest.mark.parametrize("method, held, per_sequence", [
    ("fast", "the fast sampler's queues of every block's last inputs", 14 * 8 + 2 * 256),
    ("naive", "the network's widest layer on the receptive field", (8 + 256) * 10),
])
def test_generate_counts_what_it_holds_beside_the_levels(monkeypatch, method, held,
                                                         per_sequence):
    # only the levels [batch_size, num_samples] were counted: the fast sampler's queues, one
    # [2^i, channels] per block and sequence, were not
    wn = small_wavenet(num_classes=None)
    monkeypatch.setattr(checks, "physical_memory", lambda: 2 * 100 * 10 * 8)
    need = 100 * (10 * 8 + per_sequence * 4)
    with pytest.raises(ValueError, match=re.escape(
            f"num_samples=10, batch_size=100: the levels [100, 10] with {held}, "
            f"{per_sequence:,} values per sequence: {need:,} bytes, more than the 16,000 bytes")):
        wn.generate(10, batch_size=100, method=method)
    monkeypatch.setattr(checks, "physical_memory", lambda: need)
    assert wn.generate(10, batch_size=100, method=method).shape == (100, 10)
    with pytest.raises(ValueError, match=r"x of shape \[1000, 10\]: the levels \[1000, 10\]"):
        wn.cached_logits(torch.zeros(1000, 10, dtype=torch.long))


def test_weights_beyond_memory_are_refused_before_torch_allocates_them():
    """``channels=10**6`` asked torch for 16 TB of convolution weights (a raw allocator
    error); the weights are now counted first."""
    with pytest.raises(ValueError, match=r"channels=1000000, .* weights: .* bytes, more than"):
        WaveNet(channels=10**6)
    with pytest.raises(ValueError, match=r"skip_channels=3000000, .* weights"):
        WaveNet(channels=4, skip_channels=3 * 10**6)  # the head's skip x skip weights
