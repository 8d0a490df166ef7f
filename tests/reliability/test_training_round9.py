"""Training checked statistically by a probe of 2026-11-29 (ninth session); each test fails on
the code before its fix.

- ``fit`` seeded the minibatch order's generator with the seed of torch's global generator:
  the orders were the numbers the pair drew (epoch 1's order was the global stream's first
  ``randperm``), and a trained IWAE slope spread with sd 0.059 over 316 seeds against 0.068
  for independent streams (Levene p = 0.04).
"""

import pyro
import pyro.distributions as dist
import torch

from inference import fit
from inference.training.fit import order_seed


def test_the_minibatch_order_does_not_replay_the_pairs_draws():
    rows_seen = []

    def model(x):
        rows_seen.append(x.detach().clone())
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    def guide(x):
        pass

    pyro.clear_param_store()
    data = torch.arange(50.0)
    fit(model, guide, data, epochs=1, batch_size=10, seed=3, shuffle=True, progress=False)
    # the checks before training run on the first rows in order; then the first step's rows
    # (and the position check's batch of copies of the first row)
    first_rows = next(r for r in rows_seen if not torch.equal(r, data[:10])
                      and len(r.unique()) > 1).long()
    torch.manual_seed(3)
    global_first = torch.randperm(50)[:10]
    assert not torch.equal(first_rows, global_first)
    order = torch.randperm(50, generator=torch.Generator().manual_seed(order_seed(3)))
    assert torch.equal(first_rows, order[:10])
    assert len({order_seed(s) for s in range(100)}) == 100
    assert all(0 <= order_seed(s) < 2 ** 63 for s in (0, 1, 2 ** 63 - 1))
    pyro.clear_param_store()


def test_the_first_step_density_check_leaves_summed_out_zeros_and_names_shared_values():
    # a probe of this session's own changes: a model-enumerated state with structural zeros
    # was refused (the check scored a sampled state); a value shared along the data plate
    # failed with an IndexError while the refusal was built
    import pytest
    from pyro.infer import TraceEnum_ELBO, config_enumerate

    table = torch.tensor([[0.0, 0.0, -float("inf")], [-float("inf"), 0.0, 0.0]])

    @config_enumerate
    def mixture(y):
        w = pyro.param("w", torch.tensor([0.5, 0.5]), constraint=dist.constraints.simplex)
        with pyro.plate("data", len(y)):
            state = pyro.sample("state", dist.Categorical(w))
            pyro.sample("y", dist.Categorical(logits=table[state]), obs=y)

    pyro.clear_param_store()
    y = torch.tensor([0, 1, 2, 2, 0, 1, 2, 0] * 5)
    fit(mixture, lambda y: None, y, loss=TraceEnum_ELBO(max_plate_nesting=1), epochs=2,
        progress=False)
    assert torch.isfinite(pyro.param("w")).all()

    def shared(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)
            rate = torch.where(torch.arange(len(x)) >= 5, 0.5, 1.0) + 0 * z
            pyro.sample("s", dist.Beta(rate, 2.0), obs=torch.zeros(1))

    def guide(x):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc.expand(len(x)), 1.0))

    pyro.clear_param_store()
    with pytest.raises(ValueError, match=r"site 's' \(Beta\) has log density \+inf .* at "
                                         r"datapoint 5 of the first minibatch \(value 0\)"):
        fit(shared, guide, torch.rand(12), epochs=1, shuffle=False, batch_size=12,
            progress=False)  # (in place: the rate reads the row's position)
    pyro.clear_param_store()
