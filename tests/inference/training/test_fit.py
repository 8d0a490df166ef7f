"""fit checks every datapoint once and says what a stopped run left on disk.

Before: only the first minibatch was validated, so rows outside the likelihood's support later
in the data trained silently (a Bernoulli scored at 37 drove the loss to -34787 nats), and a
diverged run claimed "the checkpoint keeps epoch 0" of a file it never wrote.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, pyro_method

from inference import fit
from inference.training.checkpoints import load_checkpoint
from ppl_models.vae import VAE


def _images(bad_value=None):
    """40 binary 4x4 images; with ``bad_value``, rows 36..39 (the fifth minibatch of 8) hold
    it, the first minibatch (which fit surveys before training) does not."""
    x = (torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    if bad_value is not None:
        x[36:] = bad_value
    return x


def _vae():
    torch.manual_seed(0)
    return VAE((1, 4, 4), latent_dim=2, hidden=(3,))


class _Coins(PyroModule):
    """Four coins ``x: [batch, 4]`` from a 1-d latent, scored by Pyro's own Bernoulli (which
    validates its value unless ``validate_args=False``)."""

    def __init__(self, validate_args=None):
        super().__init__()
        torch.manual_seed(0)
        self.decoder, self.encoder = torch.nn.Linear(1, 4), torch.nn.Linear(4, 2)
        self.validate_args = validate_args

    @pyro_method
    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z),
                                            validate_args=self.validate_args).to_event(1), obs=x)

    @pyro_method
    def guide(self, x):
        h = self.encoder(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(h[..., :1], h[..., 1:].exp()).to_event(1))


@pytest.mark.parametrize("compile", [False, "eager"])
def test_rows_outside_the_support_after_the_first_minibatch_are_refused(compile):
    # The VAE's own check (on while Pyro's validation is) names the pixels; fit names the
    # step, the rows of the data and the site. A compiled step validates nothing itself:
    # fit scores each minibatch's observed values once in the first epoch.
    vae, epochs = _vae(), []
    with pytest.raises(ValueError, match=r"step 5 of epoch 1 was refused before its update: "
                                         r"rows \[36, 37, 38, 39\] of data lie outside the "
                                         r"support Boolean\(\) of the observed site 'x'"):
        fit(vae.model, vae.guide, _images(37.0), epochs=3, batch_size=8, shuffle=False,
            compile=compile, callback=epochs.append, progress=False)
    assert epochs == []


def test_pyro_s_own_validation_names_the_rows_too():
    coins, epochs = _Coins(), []
    x = _images(3.0).reshape(40, 16)[:, :4]
    with pytest.raises(ValueError, match=r"step 5 of epoch 1 .* rows \[36, 37, 38, 39\] of data "
                                         r".* site 'x' \(Bernoulli\).* validation said: "
                                         r"Expected value argument"):
        fit(coins.model, coins.guide, x, epochs=2, batch_size=8, shuffle=False,
            callback=epochs.append, progress=False)
    assert epochs == []


def test_a_likelihood_that_opts_out_of_validation_keeps_its_choice():
    # Pyro's VAE tutorial scores grey levels with a Bernoulli built with validate_args=False:
    # checking every step of the first epoch must not refuse what the likelihood accepts
    coins = _Coins(validate_args=False)
    x = _images(0.5).reshape(40, 16)[:, :4]
    assert len(fit(coins.model, coins.guide, x, epochs=2, batch_size=8, shuffle=False,
                   progress=False)) == 2


def test_divergence_within_the_first_epoch_is_still_a_divergence():
    # with lr=1e12 the first update overflows the decoder's logits; Pyro's validation, now on
    # for the whole first epoch, refuses them at step 2: that is a divergence, not bad data
    vae = _vae()
    with pytest.raises(FloatingPointError, match=r"training diverged: .* at step \d+ of epoch 1"):
        fit(vae.model, vae.guide, _images(), epochs=2, batch_size=8, lr=1e12, progress=False)


def test_a_diverged_run_says_what_the_checkpoint_file_holds(tmp_path):
    def diverge(path, lr=1e12, **kwargs):
        pyro.clear_param_store()
        vae = _vae()
        return fit(vae.model, vae.guide, _images(), epochs=2, batch_size=8, lr=lr, seed=1,
                   checkpoint=path, progress=False, **kwargs)

    path = tmp_path / "run.pt"
    with pytest.raises(FloatingPointError, match=rf"no checkpoint was written \({path} does "
                                                 r"not exist\)") as error:
        diverge(path)
    assert "resume the checkpoint" not in str(error.value)
    assert not path.exists()
    diverge(path, lr=1e-3)  # an earlier run's two epochs
    with pytest.raises(FloatingPointError, match=rf"this run wrote no checkpoint: {path} is "
                                                 r"still the earlier run's file"):
        diverge(path)
    assert len(load_checkpoint(path)["history"]) == 2
    assert not (tmp_path / "run.pt.previous").exists()


@pytest.mark.parametrize("validate", [True, False])
def test_a_last_update_that_breaks_the_pair_is_a_divergence(tmp_path, validate):
    # one step per epoch: with lr=1e10 the only update leaves finite parameters whose decoder
    # gives NaN, which no step's loss (read before its update) shows; fit used to return a
    # normal history and write the broken model's checkpoint
    torch.manual_seed(0)
    x = (torch.rand(20, 1, 4, 4) > 0.5).float()
    vae, path = VAE((1, 4, 4), latent_dim=2, hidden=(8,)), tmp_path / "run.pt"
    with pyro.validation_enabled(validate), pytest.raises(
            FloatingPointError, match=r"the loss on the parameters left by the last step of "
                                      r"epoch 1 is nan.*no checkpoint was written"):
        fit(vae.model, vae.guide, x, epochs=1, lr=1e10, checkpoint=path, progress=False)
    assert not path.exists()



def test_a_fraction_or_numpy_learning_rate_trains_as_its_float():
    # fractions.Fraction passed the check (a numbers.Real) and failed at the first step in
    # torch's fused Adam with a raw TypeError, after the checkpoint's lock was made.
    import fractions

    import numpy as np

    def model(x):
        shift = pyro.sample("shift", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(shift, 1.0), obs=x)

    def guide(x):
        pyro.sample("shift", dist.Normal(pyro.param("mean", torch.tensor(0.0)), 0.5))

    x = torch.tensor([0.3, -1.2, 2.0, 0.7])
    means = []
    for lr in (0.25, fractions.Fraction(1, 4), np.float32(0.25)):
        pyro.clear_param_store()
        history = fit(model, guide, x, epochs=3, lr=lr, seed=0, progress=False)
        means.append((pyro.param("mean").item(), [h["train_loss"] for h in history]))
    assert means[0][0] != 0.0 and means[1] == means[0] and means[2] == means[0]


def test_a_loss_that_cannot_rescore_the_pair_after_the_last_epoch_loses_nothing(tmp_path):
    # The check after the last epoch scores the pair with the run's Pyro loss; Pyro's
    # TraceMeanField_ELBO asserts on a guide's pyro.deterministic (which the steps take), and
    # its empty AssertionError ended the run after training: no history, the last epoch
    # never saved, and every resume failed the same way.
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 2.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        scale = pyro.param("a", torch.tensor(0.3))
        with pyro.plate("data", len(x)):
            loc = pyro.deterministic("enc_loc", scale * x)
            pyro.sample("z", dist.Normal(loc, 0.8 ** 0.5))

    x = torch.linspace(-3.0, 3.0, 6)
    path = tmp_path / "m.pt"
    history = fit(model, guide, x, loss="meanfield", epochs=40, lr=0.05, batch_size=3,
                  seed=0, progress=False, checkpoint=path)
    assert len(history) == 40 and len(load_checkpoint(path)["history"]) == 40
    # trained towards the exact posterior mean, 4 / 5 x
    assert abs(pyro.param("a").item() - 0.8) < 0.2 < abs(0.3 - 0.8)
