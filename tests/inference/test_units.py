"""Unit conversions against hand-computed numbers."""

import math

import pytest
import torch

from inference.units import (
    bits_per_dim,
    bits_to_nats,
    dequantization_correction_nats,
    discrete_log_likelihood_bound,
    nats_to_bits,
)


def test_nats_and_bits():
    assert nats_to_bits(math.log(2.0)) == pytest.approx(1.0, abs=1e-15)
    assert nats_to_bits(math.log(8.0)) == pytest.approx(3.0, abs=1e-15)
    assert bits_to_nats(nats_to_bits(1.2345)) == pytest.approx(1.2345, abs=1e-15)
    t = torch.tensor([0.0, math.log(4.0)], dtype=torch.float64)
    torch.testing.assert_close(nats_to_bits(t), torch.tensor([0.0, 2.0], dtype=torch.float64))


def test_bits_per_dim_by_hand():
    # 86.76 nats on 784 binarized pixels (Burda et al. 2015): 86.76 / (784 ln 2) = 0.159653
    assert bits_per_dim(86.76, 784) == pytest.approx(0.159653, abs=1e-6)
    # D ln 2 nats over D dims is exactly one bit per dim
    assert bits_per_dim(10 * math.log(2.0), 10) == pytest.approx(1.0, abs=1e-15)
    nll = torch.tensor([[3072 * math.log(2.0) * 3.0]])
    torch.testing.assert_close(bits_per_dim(nll, 3072), torch.tensor([[3.0]]))


def test_dequantization_correction_by_hand():
    # 784 log 256 = 784 * 8 ln 2 = 6272 ln 2
    assert dequantization_correction_nats(784) == pytest.approx(6272 * math.log(2.0), rel=1e-15)
    assert dequantization_correction_nats(784) == pytest.approx(4347.4191, abs=1e-4)
    assert dequantization_correction_nats(3, levels=2) == pytest.approx(3 * math.log(2.0))
    # in bits/dim the correction is exactly log2(levels)
    assert bits_per_dim(dequantization_correction_nats(100), 100) == pytest.approx(8.0)


def test_uniform_density_gives_uniform_mass():
    # p = 1 on [0, 1]^D has log density 0 everywhere; it is constant on every cell, so the
    # bound is tight: P(k) = 256^-D, i.e. exactly 8 bits/dim.
    bound = discrete_log_likelihood_bound(torch.zeros(2), num_dims=5)
    torch.testing.assert_close(bound, torch.full((2,), -5 * math.log(256.0)))
    assert bits_per_dim(-float(bound[0]), 5) == pytest.approx(8.0)


def test_bound_holds_for_a_nonuniform_density():
    # 1-D, 2 levels, density p(y) = 2y on [0, 1]: P(k=1) = integral_{1/2}^1 2y dy = 3/4 and
    # E_u[log p((1 + u)/2)] = integral_{1/2}^1 2 log(2y) dy = 2 log 2 - 1 (by hand), so the
    # bound is log 2 - 1 = -0.307 <= log(3/4) = -0.288.
    bound = discrete_log_likelihood_bound(2 * math.log(2.0) - 1.0, num_dims=1, levels=2)
    assert bound == pytest.approx(math.log(2.0) - 1.0, abs=1e-12)
    assert bound <= math.log(0.75)


@pytest.mark.parametrize("num_dims", [0, -1, 2.5, True])
def test_bad_num_dims(num_dims):
    with pytest.raises(ValueError, match="num_dims must be a positive integer"):
        bits_per_dim(1.0, num_dims)
    with pytest.raises(ValueError, match="num_dims"):
        dequantization_correction_nats(num_dims)


def test_bad_levels():
    with pytest.raises(ValueError, match="levels must be an integer >= 2"):
        discrete_log_likelihood_bound(0.0, 4, levels=1)


def test_nats_to_bits_of_half_precision_comes_back_in_float32():
    # 60,000 nats in float16 became +inf bits (float16 tops out at 65,504)
    import torch

    from inference import nats_to_bits

    bits = nats_to_bits(torch.tensor([60000.0], dtype=torch.float16))
    assert bits.dtype == torch.float32 and torch.isfinite(bits).all()
    assert float(bits) == pytest.approx(60000 / math.log(2), rel=1e-3)


def test_bits_per_dim_and_the_discrete_bound_of_half_precision_come_back_in_float32():
    # both overflowed float16: bits_per_dim(60000) gave inf (86561.4 bits), the bound of
    # -1000 nats over 12288 8-bit dims gave -inf (-69136.6)
    import torch

    from inference import bits_per_dim, discrete_log_likelihood_bound

    per_dim = bits_per_dim(torch.tensor([60000.0], dtype=torch.float16), 1)
    assert per_dim.dtype == torch.float32
    assert float(per_dim) == pytest.approx(60000 / math.log(2), rel=1e-6)
    bound = discrete_log_likelihood_bound(torch.tensor([-1000.0], dtype=torch.bfloat16), 12288)
    assert bound.dtype == torch.float32
    assert float(bound) == pytest.approx(-1000 - 12288 * math.log(256), rel=1e-6)


def test_a_bound_above_zero_names_num_dims_and_levels():
    """A 3x32x32 model's log-density with the channels left out of num_dims used to give a
    'log-probability' of +3891.7 nats (-5.48 bits/dim) without a word."""
    with pytest.raises(ValueError, match=r"bound on log P\(k\) is 3891.74 nats, above 0 .*"
                                         r"num_dims=1024 or levels=256 does not match"):
        discrete_log_likelihood_bound(9570.0, 1024)
    # a tensor: the entries above 0 are counted; levels=2 for 8-bit data is named too
    with pytest.raises(ValueError, match=r"in 1 of 2 entries .* levels=2 does not match"):
        discrete_log_likelihood_bound(torch.tensor([-10.0, 100.0]), 64, levels=2)
    # the right D is taken, and so is a bound at 0 plus a little Monte Carlo noise
    assert discrete_log_likelihood_bound(9570.0, 3072) == pytest.approx(9570 - 3072 * math.log(256))
    over = 64 * math.log(256) + 0.5  # 0.5 nats above 0 over 64 dims: within the slack
    assert discrete_log_likelihood_bound(over, 64) == pytest.approx(0.5)
    assert discrete_log_likelihood_bound(torch.tensor([-math.inf, 0.0]), 4)[0] == -math.inf
