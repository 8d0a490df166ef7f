"""inference.densities: the lean Gaussian log densities equal Normal.log_prob (value, gradient)."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import Independent, Normal

from inference import log_importance_weights
from inference.densities import (
    distinct_entries,
    drawn_normal_log_density,
    normal_log_density,
    plain_normal,
)
from ppl_models import LinearGaussian

# (value shape, loc shape, scale shape, loc/scale expanded to, event dims)
CASES = [
    ((7,), (7,), (7,), None, 0),
    ((5, 3, 4), (3, 4), (3, 4), None, 1),           # sample dim in front of the batch
    ((6, 3, 4), (3, 4), (3, 4), (6, 3, 4), 1),      # parameters expanded by a particle plate
    ((3, 4), (4,), (2, 3, 4), None, 1),             # scale broader than the value
    ((2, 3, 4, 5), (4, 5), (1, 5), (2, 3, 4, 5), 2),
    ((4,), (), (), None, 0),                        # scalar parameters
]


def _parameters(loc_shape, scale_shape, expand, dtype, requires_grad):
    generator = torch.Generator().manual_seed(0)
    loc = torch.randn(loc_shape, generator=generator, dtype=dtype)
    scale = torch.rand(scale_shape, generator=generator, dtype=dtype) + 0.2
    loc.requires_grad_(requires_grad)
    scale.requires_grad_(requires_grad)
    if expand is None:
        return loc, scale, loc, scale
    return loc, scale, loc.expand(expand), scale.expand(expand)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("value_shape, loc_shape, scale_shape, expand, event_dims", CASES)
def test_normal_log_density_is_log_prob_with_and_without_gradients(
        value_shape, loc_shape, scale_shape, expand, event_dims, dtype):
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    for wants_grad in (False, True):
        loc0, scale0, loc, scale = _parameters(loc_shape, scale_shape, expand, dtype, wants_grad)
        value = torch.randn(value_shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
        value.requires_grad_(wants_grad)
        normal = Normal(loc, scale)
        expected = normal.log_prob(value)
        if event_dims:
            expected = expected.sum(tuple(range(-event_dims, 0)))
        got = normal_log_density(normal, value, event_dims)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance)
        if wants_grad:
            grads = torch.autograd.grad(got.sum(), (loc0, scale0, value))
            expected_grads = torch.autograd.grad(expected.sum(), (loc0, scale0, value))
            for g, e in zip(grads, expected_grads):
                torch.testing.assert_close(g, e, rtol=10 * tolerance, atol=10 * tolerance)
        else:
            with torch.no_grad():  # the in-place path
                torch.testing.assert_close(normal_log_density(normal, value, event_dims),
                                           expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("value", [1.5, 2, torch.tensor([1, 2, 3])])
def test_numbers_and_integer_values_are_scored_as_log_prob_scores_them(value):
    normal = Normal(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64),
                    torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64))
    expected = normal.log_prob(torch.as_tensor(value, dtype=torch.float64))
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            torch.testing.assert_close(normal_log_density(normal, value), expected)


def test_the_in_place_path_leaves_its_inputs_alone():
    loc, scale = torch.zeros(3, 2), torch.ones(3, 2)
    value = torch.full((4, 3, 2), 2.0)
    with torch.no_grad():
        normal_log_density(Normal(loc, scale), value, 1)
    assert value.eq(2.0).all() and loc.eq(0.0).all() and scale.eq(1.0).all()


def test_drawn_density_matches_log_prob_of_the_draw():
    loc = torch.randn(4, 3, requires_grad=True)
    scale = (torch.rand(4, 3) + 0.3).requires_grad_()
    normal = Normal(loc, scale)
    value = normal.rsample((5,))
    got = drawn_normal_log_density(normal, value, 1)
    expected = Independent(normal, 1).log_prob(value)
    torch.testing.assert_close(got, expected)
    # total derivatives through the draw: for loc the path and the score cancel exactly
    grads = torch.autograd.grad(got.sum(), (loc, scale), allow_unused=True)
    expected_grads = torch.autograd.grad(expected.sum(), (loc, scale))
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(torch.zeros_like(e) if g is None else g, e,
                                   rtol=1e-4, atol=1e-5)


def test_plain_normal_counts_event_dims_and_refuses_subclasses():
    base = dist.Normal(torch.zeros(2, 3, 4), 1.0)
    normal, event_dims = plain_normal(base.to_event(1).to_event(1))
    assert normal is base and event_dims == 2

    class Shifted(Normal):
        def log_prob(self, value):
            return super().log_prob(value - 1.0)

    assert plain_normal(Shifted(0.0, 1.0)) == (None, 0)
    assert plain_normal(dist.Laplace(0.0, 1.0)) == (None, 0)


def test_distinct_entries_keeps_one_copy_of_each_broadcast_dim():
    base = torch.arange(6.0).reshape(2, 1, 3)
    expanded = base.expand(4, 2, 5, 3)
    compact = distinct_entries(expanded)
    assert compact.shape == (1, 2, 1, 3)
    assert torch.equal(compact.expand(4, 2, 5, 3), expanded)


def test_log_weights_are_the_same_scored_lean_or_by_log_prob(monkeypatch):
    """The weights' lean scoring against ``log_prob`` (the lean path switched off) on the same
    draws, on a linear-Gaussian pair (Normal prior, likelihood and amortized guide)."""
    import inference.weights

    model = LinearGaussian(data_dim=3, latent_dim=2, noise_scale=0.5, seed=4)
    x = model.simulate(6, seed=5)
    scored = []
    for lean in (True, False):
        if not lean:
            monkeypatch.setattr(inference.weights, "plain_normal", lambda fn: (None, 0))
        pyro.set_rng_seed(3)
        scored.append(log_importance_weights(model.model, model.guide, x, num_samples=40,
                                             chunk_size=7))
    torch.testing.assert_close(scored[0], scored[1], rtol=1e-5, atol=1e-5)
    assert not torch.equal(scored[0], scored[1])  # different arithmetic, so not bit-equal
