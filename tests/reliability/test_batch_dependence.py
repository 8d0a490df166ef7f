"""Per-datapoint numbers that depend on the other datapoints of the batch.

Before 2026-11-29 (probes): a model standardizing its input with ``x.mean(0)``, one
choosing its scale by ``if x.sum() > 0``, or a BatchNorm in training mode gave per-datapoint
evidence that moved with the batch (``log_evidence`` of one point -4.21 with
``batch_size=9``, -4.00 with 3), silently. The per-datapoint estimators now score the first
datapoints alone on the same draws and refuse when their weights change.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import PairError, elbo, iwae_bound, log_evidence

X = torch.tensor([-2.0, -0.5, 0.0, 0.7, 1.5, 3.0])
BATCH = "depends on the other datapoints"


def guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(0.5 * x, 0.8))


def branching_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 0.5 if x.sum() > 0 else 1.5), obs=x)


def standardizing_model(x):
    xs = (x - x.mean(0)) / x.std(0)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=xs)


@pytest.mark.parametrize("model", [branching_model, standardizing_model])
@pytest.mark.parametrize("estimate", [
    lambda m: iwae_bound(m, guide, X, num_samples=10, progress=False),
    lambda m: log_evidence(m, guide, X, num_samples=10, batch_size=6, progress=False),
])
def test_a_density_that_depends_on_the_batch_is_refused(model, estimate):
    with pytest.raises(PairError, match=BATCH):
        estimate(model)


def test_batch_norm_in_training_mode_is_refused_and_eval_mode_scores():
    torch.manual_seed(0)
    decoder = torch.nn.Sequential(torch.nn.Linear(1, 3), torch.nn.BatchNorm1d(3))

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(decoder(z.reshape(-1, 1)).reshape(z.shape + (3,)),
                                         1.0).to_event(1), obs=x)

    def vae_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.mean(-1), 1.0))

    x = torch.randn(5, 3)
    with pytest.warns(UserWarning, match="training mode"), pytest.raises(PairError, match=BATCH):
        elbo(model, vae_guide, x, num_samples=4, progress=False)
    decoder.eval()
    pyro.set_rng_seed(0)
    assert torch.isfinite(elbo(model, vae_guide, x, num_samples=4, progress=False)).all()


def test_a_network_pair_of_independent_rows_is_not_refused():
    # float32 networks give the rows' weights alone and in the batch within rounding
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Tanh(),
                                  torch.nn.Linear(32, 2))
    decoder = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.Tanh(),
                                  torch.nn.Linear(32, 4))

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(decoder(z), 1.0).to_event(1), obs=x)

    def net_guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(encoder(x), 1.0).to_event(1))

    pyro.set_rng_seed(0)
    x = torch.randn(64, 4)
    assert torch.isfinite(iwae_bound(model, net_guide, x, num_samples=8,
                                     progress=False)).all()


def test_a_setting_with_as_many_rows_as_the_batch_is_not_cut():
    # a mixture's 4 component means beside 4 datapoints: cut with the data, the first rows
    # would be scored under a 2-component model and the pair refused for nothing
    def mixture(x, locs):
        components = dist.Normal(locs, torch.ones_like(locs))
        mixed = dist.MixtureSameFamily(dist.Categorical(logits=torch.zeros_like(locs)),
                                       components)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", mixed.expand([x.shape[0]]), obs=x - z)

    def mixture_guide(x, locs):
        guide(x)

    pyro.set_rng_seed(0)
    x, locs = torch.tensor([0.3, -1.2, 2.0, 0.7]), torch.tensor([-3.0, -1.0, 1.0, 3.0])
    assert torch.isfinite(iwae_bound(mixture, mixture_guide, x, locs, num_samples=10,
                                     progress=False)).all()


def test_settings_with_as_many_rows_as_the_batch_are_not_cut():
    # a mixture's log weights and means (K == N == 4), and per-feature statistics of the
    # whole data scored in a batch of 2: both were refused as batch-dependent
    means = torch.tensor([[0.0, 0.0], [10.0, 10.0], [20.0, 20.0], [30.0, 30.0]])
    logw = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    x = torch.tensor([[0.1, -0.2], [10.2, 9.9], [0.3, 0.0], [30.1, 29.8]])

    def mixture(x, logw, means):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(logits=logw))
            pyro.sample("x", dist.Normal(means[c], 1.0).to_event(1), obs=x)

    def posterior(x, logw, means):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Categorical(
                logits=logw + dist.Normal(means, 1.0).to_event(1).log_prob(x[:, None])))

    exact = torch.logsumexp(logw + dist.Normal(means, 1.0).to_event(1).log_prob(x[:, None]), -1)
    torch.testing.assert_close(
        iwae_bound(mixture, posterior, x, logw, means, num_samples=2, progress=False), exact)

    mu, sigma = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.5])

    def standardized(x, mu, sigma):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1),
                        obs=(x - mu) / sigma)

    def nothing(x, mu, sigma):
        pass

    pair = torch.tensor([[4.0, -2.5], [-1.0, -1.0]])
    torch.testing.assert_close(
        iwae_bound(standardized, nothing, pair, mu, sigma, num_samples=1, progress=False),
        dist.Normal(0.0, 1.0).log_prob((pair - mu) / sigma).sum(-1))
