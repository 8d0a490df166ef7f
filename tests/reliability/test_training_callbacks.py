"""What fit's callbacks, validation data and loss names may change, and what they may not.

Found wrong by a probe of 2026-11-28, each failing here before its fix: a callback's change of the
parameters was lost on resume, ``valid_data`` moved training's random streams,
``loss="elbo-free-bits"`` trained with no free bits, and KL warm-up with an importance-
weighted loss was refused only at the first step.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

from inference import fit, make_loss
from ppl_models import LinearGaussian


def _fit(model, x, **kwargs):
    pyro.clear_param_store()  # each test trains several instances of one network
    options = dict(epochs=4, batch_size=16, seed=3, lr=0.05, progress=False)
    return fit(model.model, model.guide, x, **{**options, **kwargs})


def _data():
    return LinearGaussian(data_dim=3, latent_dim=1, seed=9).simulate(64, seed=1).detach()


def _params(model):
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _projection(model, stop_at=None):
    """A callback that rescales the decoder's weight rows to norm at most 0.3 (a max-norm
    projection), and stops the run at epoch ``stop_at`` after doing so."""
    weight = dict(model.named_parameters())[next(name for name, p in model.named_parameters()
                                                 if p.dim() == 2)]

    def callback(record):
        with torch.no_grad():
            weight.mul_((0.3 / weight.norm(dim=1, keepdim=True)).clamp(max=1.0))
        if record["epoch"] == stop_at:
            raise KeyboardInterrupt

    return callback


class _StopAfter:
    """A batch transform that passes batches through and raises ``KeyboardInterrupt`` after
    ``steps`` of them (None: never); its count is private, so a resume does not compare it."""

    def __init__(self, steps):
        self._steps = steps

    def __call__(self, batch):
        if self._steps is not None:
            self._steps -= 1
            if self._steps < 0:
                raise KeyboardInterrupt
        return batch


@pytest.mark.parametrize("stop", ["in the callback", "in the next epoch"])
def test_a_callback_that_changes_parameters_resumes_as_an_uninterrupted_run(tmp_path, stop):
    x = _data()
    whole = LinearGaussian(data_dim=3, latent_dim=1, seed=0)
    straight = _fit(whole, x, checkpoint=tmp_path / "whole.pt", callback=_projection(whole))
    stopped = LinearGaussian(data_dim=3, latent_dim=1, seed=0)
    path = tmp_path / "stopped.pt"
    if stop == "in the callback":
        with pytest.raises(KeyboardInterrupt):
            _fit(stopped, x, checkpoint=path, callback=_projection(stopped, stop_at=2))
    else:
        with pytest.raises(KeyboardInterrupt):
            _fit(stopped, x, checkpoint=path, callback=_projection(stopped),
                 batch_transform=_StopAfter(2 * 4 + 1))  # four batches an epoch
    resumed = LinearGaussian(data_dim=3, latent_dim=1, seed=0)
    more = {} if stop == "in the callback" else {"batch_transform": _StopAfter(None)}
    history = _fit(resumed, x, checkpoint=path, resume=True, callback=_projection(resumed),
                   **more)
    # the projection of the interrupted epoch was lost: parameters 0.29 apart, losses apart
    assert [r["train_loss"] for r in history] == [r["train_loss"] for r in straight]
    for name, value in _params(whole).items():
        assert torch.equal(value, _params(resumed)[name]), name


def test_validation_data_do_not_change_what_is_trained():
    x = _data()
    plain, watched = (LinearGaussian(data_dim=3, latent_dim=1, seed=0) for _ in range(2))
    without = _fit(plain, x)
    with_valid = _fit(watched, x, valid_data=x[:20])
    assert "valid_elbo" in with_valid[-1]
    # the validation ELBO's draws came from training's stream: parameters 0.09 apart
    assert [r["train_loss"] for r in with_valid] == [r["train_loss"] for r in without]
    for name, value in _params(plain).items():
        assert torch.equal(value, _params(watched)[name]), name


def test_the_free_bits_loss_needs_its_free_bits(tmp_path):
    model, x = LinearGaussian(data_dim=3, latent_dim=1, seed=0), _data()
    with pytest.raises(ValueError, match=r"'elbo-free-bits' needs its free bits"):
        make_loss("elbo-free-bits")
    path = tmp_path / "run.pt"
    with pytest.raises(ValueError, match=r"FreeBitsELBO\(free_bits\)"):
        _fit(model, x, loss="elbo-free-bits", checkpoint=path)
    assert not path.exists()  # refused before any work
    assert make_loss("elbo-free-bits", free_bits=0.0).free_bits == 0.0  # asked for: given


@pytest.mark.parametrize("loss", ["iwae", "dreg"])
def test_kl_warmup_with_an_importance_weighted_loss_is_refused_up_front(tmp_path, loss):
    model, x = LinearGaussian(data_dim=3, latent_dim=1, seed=0), _data()
    path = tmp_path / "run.pt"
    with pytest.raises(ValueError, match=rf"kl_warmup_epochs=2 .* loss='{loss}'"):
        _fit(model, x, loss=loss, num_particles=3, kl_warmup_epochs=2, checkpoint=path)
    assert not path.exists()


class _DropoutPair(torch.nn.Module):
    """A Gaussian latent per datapoint, its guide's mean from a network with dropout."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.2),
                                           torch.nn.Linear(8, 1))

    def model(self, x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", pyro.distributions.Normal(0.0, 1.0))
            pyro.sample("x", pyro.distributions.Normal(z[:, None].expand(-1, 3), 1.0)
                        .to_event(1), obs=x)

    def guide(self, x):
        pyro.module("pair", self)
        with pyro.plate("data", len(x)):
            pyro.sample("z", pyro.distributions.Normal(self.encoder(x)[:, 0], 1.0))


def test_a_pair_left_in_evaluation_mode_is_named_before_training():
    # .eval() for an estimate, then fit again: dropout off and batch norm frozen, silently
    pyro.clear_param_store()
    pair = _DropoutPair().eval()
    with pytest.warns(UserWarning, match=r"fit: _DropoutPair is in evaluation mode with "
                                         r"Dropout\(p=0.2\) at encoder.1"):
        fit(pair.model, pair.guide, _data(), epochs=1, batch_size=16, progress=False)
    assert not pair.training  # the modes are left as they were


def test_a_callback_that_leaves_nan_parameters_keeps_the_epoch_saved_before_it(tmp_path):
    """A callback that broke the parameters (a projection dividing by a zero norm) had them
    saved over the finite epoch as its "after callback" state; the run stopped at the next
    step saying that the checkpoint kept that epoch, which could not be resumed. It stops
    right after the callback now, and the file keeps the epoch as saved before it."""
    from inference.training.checkpoints import load_checkpoint

    model, x = LinearGaussian(data_dim=3, latent_dim=1, seed=9), _data()
    checkpoint = tmp_path / "run.pt"

    def breaks_at_two(record):
        if record["epoch"] == 2:
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(float("nan"))

    with pytest.raises(FloatingPointError, match=r"callback left parameters .* after epoch 2"
                                                 r".*keeps epoch 2"):
        _fit(model, x, checkpoint=checkpoint, callback=breaks_at_two)
    state = load_checkpoint(checkpoint)
    assert len(state["history"]) == 2 and not state.get("after_callback")
    assert all(bool(torch.isfinite(t).all()) for m in state["modules"] for t in m.values())
    resumed = LinearGaussian(data_dim=3, latent_dim=1, seed=9)
    pyro.clear_param_store()
    history = fit(resumed.model, resumed.guide, x, epochs=4, batch_size=16, seed=3, lr=0.05,
                  progress=False, checkpoint=checkpoint, resume=True)
    assert len(history) == 4


def test_a_callbacks_entry_in_the_record_survives_an_interruption(tmp_path):
    """fit saved the epoch before its callback ran and again only when the callback moved a
    parameter or a setting: a key it wrote into the record (a logged metric) was missing
    from that epoch after a resume, so the history differed from the uninterrupted run's."""
    def logging_callback(stop=None):
        def callback(record):
            record["note"] = record["epoch"]
            if record["epoch"] == stop:
                raise KeyboardInterrupt
        return callback

    x = _data()
    whole = _fit(LinearGaussian(data_dim=3, latent_dim=1, seed=9), x,
                 callback=logging_callback(), checkpoint=tmp_path / "whole.pt")
    with pytest.raises(KeyboardInterrupt):
        _fit(LinearGaussian(data_dim=3, latent_dim=1, seed=9), x, callback=logging_callback(2),
             checkpoint=tmp_path / "cut.pt")
    resumed = _fit(LinearGaussian(data_dim=3, latent_dim=1, seed=9), x,
                   callback=logging_callback(), checkpoint=tmp_path / "cut.pt", resume=True)
    assert [r["note"] for r in resumed] == [r["note"] for r in whole] == [1, 2, 3, 4]
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in whole]


def test_the_validation_elbo_scores_the_data_as_training_sees_them():
    """valid_elbo scored the raw validation data while training saw batch_transform's
    output (-2.3 against -65.8 for a x10 transform)."""
    from inference import elbo

    model, x = LinearGaussian(data_dim=3, latent_dim=1, seed=9), _data()
    history = _fit(model, x[:32], valid_data=x[32:], batch_transform=lambda t: (t * 10,),
                   lr=0.0, epochs=1)
    pyro.set_rng_seed(0)
    reference = float(elbo(model.model, model.guide, x[32:] * 10, num_samples=400).mean())
    raw = float(elbo(model.model, model.guide, x[32:], num_samples=400).mean())
    # one draw per datapoint: within a tenth of the gap between the two data's ELBOs
    assert abs(history[0]["valid_elbo"] - reference) < 0.1 * abs(reference - raw), (
        history, reference, raw)


def test_a_jit_loss_object_used_by_an_earlier_fit_is_refused():
    """Pyro keeps the loss a Jit* object compiled at its first step, with that run's pair and
    shapes as constants; a second fit with it failed in torch's JIT ("Cannot insert a Tensor
    that requires grad as a constant") or scored the earlier pair."""
    loss = pyro.infer.JitTrace_ELBO()
    x = _data()
    _fit(LinearGaussian(data_dim=3, latent_dim=1, seed=9), x, loss=loss, epochs=1)
    with pytest.raises(ValueError, match="already compiled a loss in an earlier run"):
        _fit(LinearGaussian(data_dim=3, latent_dim=1, seed=9), x, loss=loss, epochs=1)


@pytest.mark.parametrize("transform,message", [
    (lambda t: (t.to("meta"),), "output 0 is a meta tensor"),
    (lambda t: (t.to(torch.complex64),), "output 0 is a torch.complex64 tensor"),
    (lambda t: (t.numpy(),), "output 0 is a ndarray, not a tensor"),
    (lambda t: (t, None), "output 1 is a NoneType, not a tensor"),
])
def test_a_batch_transforms_bad_output_is_named(transform, message):
    with pytest.raises(TypeError, match=f"batch_transform's {message}"):
        _fit(LinearGaussian(data_dim=3, latent_dim=1, seed=9), _data(), batch_transform=transform,
             epochs=1)


def _local_pair():
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        loc = pyro.param("loc", torch.zeros(len(x)))
        scale = pyro.param("scale", torch.ones(len(x)), constraint=constraints.positive)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc, scale))
    return model, guide


def test_a_callback_that_clears_the_param_store_is_refused(tmp_path):
    # pyro.clear_param_store() in a callback made the next step start loc and scale again
    # from their initial values: 35 of 40 epochs lost, the run ending as if nothing happened
    model, guide = _local_pair()
    x = torch.randn(20, generator=torch.Generator().manual_seed(0)) + 3.0

    def clear_at_three(record):
        if record["epoch"] == 3:
            pyro.clear_param_store()

    pyro.clear_param_store()
    with pytest.raises(ValueError, match=r"callback removed Pyro's parameters "
                                         r"\['loc', 'scale'\] after epoch 3 .*keeps epoch 3"):
        fit(model, guide, x, epochs=6, batch_size=20, shuffle=False, callback=clear_at_three,
            checkpoint=tmp_path / "run.pt", progress=False)


def test_a_callback_that_changes_a_parameter_in_place_or_clears_networks_trains_on():
    model, guide = _local_pair()
    x = torch.randn(20, generator=torch.Generator().manual_seed(0)) + 3.0

    def clip(record):
        with torch.no_grad():
            pyro.param("loc").clamp_(max=10.0)

    pyro.clear_param_store()
    assert len(fit(model, guide, x, epochs=3, batch_size=20, shuffle=False, callback=clip,
                   progress=False)) == 3

    net = torch.nn.Linear(1, 2)  # a network registered with pyro.module comes back as itself

    def net_guide(x):
        pyro.module("net", net)
        out = net(x[:, None])
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(out[:, 0], out[:, 1].exp()))

    pyro.clear_param_store()
    history = fit(model, net_guide, x, epochs=3, batch_size=20, shuffle=False,
                  callback=lambda record: pyro.clear_param_store(), progress=False)
    assert len(history) == 3


def test_callbacks_that_load_saved_values_or_keep_their_own_entries_train_on(tmp_path):
    # the store check refused (false-refusal probe): a callback restoring the best epoch's
    # saved store (mid-run and at the last epoch), one deleting its own logging entry, and
    # clearing the store under an AutoDiagonalNormal (a PyroModule: its tensors come back)
    from pyro.infer.autoguide import AutoDiagonalNormal

    model, guide = _local_pair()
    x = torch.randn(20, generator=torch.Generator().manual_seed(0)) + 3.0
    saved = tmp_path / "best.store"

    def restore(record):
        store = pyro.get_param_store()
        if record["epoch"] == 1:
            store.save(saved)
        else:
            store.load(saved)
        pyro.param("seen", torch.zeros(()))  # the callback's own entry, deleted again
        del store["seen"]

    pyro.clear_param_store()
    assert len(fit(model, guide, x, epochs=4, batch_size=20, shuffle=False, callback=restore,
                   progress=False)) == 4

    def joint_model(x):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    pyro.clear_param_store()
    auto = AutoDiagonalNormal(joint_model)
    history = fit(joint_model, auto, x, epochs=3, batch_size=20, shuffle=False,
                  callback=lambda record: pyro.clear_param_store(), progress=False)
    assert len(history) == 3
