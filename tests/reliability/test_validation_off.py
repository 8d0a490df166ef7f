"""Data outside the likelihood's support with Pyro's validation turned off (a common habit
for speed): ``elbo(vae.model, vae.guide, 3 * x)`` returned finite numbers and ``fit``
trained on Bernoulli "pixels" of 3, since both the distributions' value checks and the
models' own data checks follow the flag. The survey now scores the observed values once
with validation on whatever the flag, before any work."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import PairError, elbo, fit, iwae_bound
from ppl_models import VAE

X = (torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(0)) > 0.5).float()
COUNTS = torch.tensor([0.0, 0.5, 1.0])  # 0.5 is no Bernoulli value


def _vae():
    torch.manual_seed(0)
    return VAE((1, 4, 4), latent_dim=2, hidden=(8,))


def guide(x):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(0.0, 1.0))


def bernoulli_model(validate_args=None):
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Bernoulli(logits=z, validate_args=validate_args), obs=x)
    return model


@pytest.mark.parametrize("call", [
    lambda vae: elbo(vae.model, vae.guide, 3 * X),
    lambda vae: fit(vae.model, vae.guide, 3 * X, epochs=1, progress=False),
], ids=["elbo", "fit"])
def test_a_model_s_own_data_check_runs_with_validation_off(call):
    vae = _vae()
    with pyro.validation_enabled(False), pytest.raises(ValueError, match=r"binary pixels in "
                                                                         r"\{0, 1\}.* 3\.0"):
        call(vae)


def test_a_distribution_s_support_is_checked_with_validation_off():
    with pyro.validation_enabled(False), pytest.raises(
            PairError, match=r"observed site 'x' \(Bernoulli\): Expected value argument"):
        iwae_bound(bernoulli_model(), guide, COUNTS, num_samples=10)


def test_validate_args_false_keeps_its_choice_and_valid_data_passes():
    # Pyro's VAE tutorial scores grey levels with a Bernoulli built with validate_args=False
    with pyro.validation_enabled(False):
        assert iwae_bound(bernoulli_model(False), guide, COUNTS, num_samples=10).shape == (3,)
        assert elbo(_vae().model, _vae().guide, X).shape == (8,)


def test_a_parameter_validation_would_refuse_leaves_the_check_out():
    # a user who turned validation off because it refuses a distribution's parameters (here a
    # Binomial's fractional total_count, which its log_prob takes) keeps the old behaviour
    def model(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Binomial(2.5, torch.tensor(0.5)), obs=x)

    x = torch.tensor([0.0, 2.0])
    with pyro.validation_enabled(True), pytest.raises(ValueError, match="Expected parameter"):
        iwae_bound(model, guide, x, num_samples=4)
    with pyro.validation_enabled(False):
        bound = iwae_bound(model, guide, x, num_samples=4)
        expected = dist.Binomial(2.5, torch.tensor(0.5)).log_prob(x)
    torch.testing.assert_close(bound, expected)  # guide = prior: every weight is p(x)


def test_fit_screens_every_minibatch_of_its_first_epoch_with_validation_off():
    # the survey looks at the first minibatch only: Bernoulli "pixels" of 3 in rows 36..39
    # (the fifth minibatch of 8) trained silently with validation off
    x = (torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    x[36:] = 3.0
    vae, epochs = _vae(), []
    with pyro.validation_enabled(False), pytest.raises(
            ValueError, match=r"step 5 of epoch 1 was refused before its update: rows "
                              r"\[36, 37, 38, 39\] of data lie outside the support"):
        fit(vae.model, vae.guide, x, epochs=2, batch_size=8, shuffle=False,
            callback=epochs.append, progress=False)
    assert epochs == []
