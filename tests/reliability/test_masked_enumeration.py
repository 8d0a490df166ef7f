"""A discrete latent summed out under ``poutine.mask`` (Pyro's HMM example masks the steps
past each sequence's end): the mask acts on the sites that depend on the latent, not on the
latent's own probabilities, which sum to one. Applied to both, each masked value counted
once, log H per masked step (a length-1 binary sequence came out at log p = +0.9)."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO, config_enumerate
from pyro.ops.indexing import Vindex

from inference import elbo, exact_log_evidence, iwae_bound, log_evidence

WEIGHTS = torch.tensor([0.3, 0.7], dtype=torch.float64)
LOCS = torch.tensor([-1.0, 4.0], dtype=torch.float64)


def mixture(mask_latent: bool):
    """x_i ~ sum_a w_a N(loc_a, 1.5); datapoints where ``mask`` is False are not scored
    (their evidence is log 1 = 0). ``mask_latent``: the mask also covers the assignment."""
    def model(x, mask):
        with pyro.plate("data", x.shape[0]):
            with poutine.mask(mask=mask if mask_latent else True):
                a = pyro.sample("a", dist.Categorical(WEIGHTS))
            with poutine.mask(mask=mask):
                pyro.sample("x", dist.Normal(LOCS[a], 1.5), obs=x)
    return model


def mixture_evidence(x, mask):
    per_component = WEIGHTS.log() + dist.Normal(LOCS, 1.5).log_prob(x[:, None])
    return torch.where(mask, per_component.logsumexp(-1), torch.zeros_like(x))


DATA = torch.tensor([0.0, 3.5, -2.0, 5.0, 1.0, 7.0], dtype=torch.float64)
MASK = torch.tensor([True, False, True, False, False, True])


@pytest.mark.parametrize("mask_latent", [True, False])
def test_masked_datapoints_of_an_enumerated_mixture_score_zero(mask_latent):
    model = config_enumerate(mixture(mask_latent))

    def guide(x, mask):
        pass
    expected = mixture_evidence(DATA, MASK)
    for values in (iwae_bound(model, guide, DATA, MASK, num_samples=2, progress=False),
                   elbo(model, guide, DATA, MASK, progress=False)):
        assert torch.allclose(values, expected, atol=1e-10)
    pyro_sum = -TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, DATA, MASK)
    assert pyro_sum == pytest.approx(float(expected.sum()), abs=1e-9)


@pytest.mark.parametrize("mask_latent", [True, False])
def test_exact_evidence_sums_a_masked_discrete_latent_with_its_probabilities(mask_latent):
    result = exact_log_evidence(mixture(mask_latent), DATA, MASK, site="a")
    assert torch.allclose(result.log_evidence, mixture_evidence(DATA, MASK), atol=1e-10)


def test_variable_length_hmm_matches_the_forward_algorithm_and_pyro():
    """Pyro's examples/hmm.py idiom: every step t >= length masked, states enumerated."""
    torch.manual_seed(0)
    steps = 5
    transition = torch.tensor([[0.8, 0.2], [0.3, 0.7]], dtype=torch.float64)
    emission = torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64)
    sequences = torch.randint(0, 2, (6, steps)).double()
    lengths = torch.tensor([5, 1, 3, 2, 5, 4])

    @config_enumerate
    def model(sequences, lengths):
        with pyro.plate("data", sequences.shape[0]):
            state = 0
            for t in pyro.markov(range(steps)):
                with poutine.mask(mask=t < lengths):
                    state = pyro.sample(f"s_{t}", dist.Categorical(Vindex(transition)[state]))
                    pyro.sample(f"y_{t}", dist.Bernoulli(Vindex(emission)[state, 1]),
                                obs=sequences[:, t])

    def guide(sequences, lengths):
        pass

    expected = []
    for sequence, length in zip(sequences, lengths):
        alpha = transition[0].log() + emission[:, sequence[0].long()].log()
        for t in range(1, int(length)):
            alpha = (alpha[:, None] + transition.log()).logsumexp(0) \
                + emission[:, sequence[t].long()].log()
        expected.append(alpha.logsumexp(0))
    expected = torch.stack(expected)
    values = iwae_bound(model, guide, sequences, lengths, num_samples=2, progress=False)
    assert torch.allclose(values, expected, atol=1e-10)
    pyro_sum = -TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, sequences, lengths)
    assert pyro_sum == pytest.approx(float(expected.sum()), abs=1e-9)
    assert torch.allclose(log_evidence(lambda x: model(x, lengths), lambda x: None, sequences,
                                       progress=False), expected, atol=1e-10)
