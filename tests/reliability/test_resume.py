"""Resume only from a checkpoint of this pair, these data and these settings; say what differs.

Before issue 14 each of these was accepted silently (another model's checkpoint, more epochs,
other data) or failed with ``OSError: Invalid argument`` / ``UnpicklingError`` and no path.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, pyro_method

from inference import fit
from inference.training import checkpoints
from inference.training.checkpoints import CheckpointError
from ppl_models import LinearGaussian


def _run(model, x, path, epochs=2, resume=False, **kwargs):
    return fit(model.model, model.guide, x, epochs=epochs, batch_size=32, seed=4,
               checkpoint=path, resume=resume, progress=False, **kwargs)


@pytest.fixture
def written(pair, tmp_path):
    """A checkpoint of two epochs of ``pair``."""
    model, x = pair
    path = tmp_path / "run.pt"
    _run(model, x, path)
    return path, x


def test_checkpoint_of_another_model(written):
    path, x = written
    other = LinearGaussian(data_dim=3, latent_dim=2, seed=0)
    with pytest.raises(CheckpointError, match=r"differs in: pair\.modules.*\[3, 1\].*\[3, 2\]"):
        _run(other, x, path, epochs=3, resume=True)


def _param_pair(name, size):
    def model(x):
        loc = pyro.param(name, torch.zeros(size))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc.sum(), 1.0), obs=x)

    def guide(x):
        pass

    return model, guide


def test_param_store_pair_of_another_shape(tmp_path):
    # pure pyro.param pairs (no nn.Module): found by running the pair once before loading
    x = torch.randn(20)
    path = tmp_path / "run.pt"
    model, guide = _param_pair("loc", 2)
    fit(model, guide, x, epochs=1, checkpoint=path, progress=False)
    pyro.clear_param_store()
    model, guide = _param_pair("loc", 3)
    with pytest.raises(CheckpointError, match=r"pair\.param_store\.loc: \[2\].*\[3\]"):
        fit(model, guide, x, epochs=2, checkpoint=path, resume=True, progress=False)
    assert "loc" not in pyro.get_param_store(), "the check must not leave parameters behind"
    pyro.clear_param_store()
    model, guide = _param_pair("scale", 2)
    with pytest.raises(CheckpointError, match=r"param_store\.loc.*absent now"):
        fit(model, guide, x, epochs=2, checkpoint=path, resume=True, progress=False)


def test_more_epochs_than_asked(pair, written):
    path, x = written
    with pytest.raises(CheckpointError, match="holds 2 epochs, more than epochs=1"):
        _run(pair[0], x, path, epochs=1, resume=True)


def test_other_data(pair, written):
    path, x = written
    changed = x.clone()
    changed[0, 0] += 1.0
    with pytest.raises(CheckpointError, match=r"data\[0\]\.hash"):
        _run(pair[0], changed, path, epochs=3, resume=True)
    with pytest.raises(CheckpointError, match=r"data\[0\]\.shape"):
        _run(pair[0], x[:60], path, epochs=3, resume=True)
    with pytest.raises(CheckpointError, match=r"data\[0\]\.dtype"):
        _run(pair[0].double(), x.double(), path, epochs=3, resume=True)


@pytest.mark.parametrize("numel", [4097, 60000 * 784, 2**24 + 3])
def test_data_fingerprint_of_large_data(numel):
    # past 2**24 elements a float32 grid rounded numel - 1 up to numel: an index out of range
    # (an IndexError here, a device-side assert on CUDA) for Fashion-MNIST's training images
    data = torch.zeros(numel, dtype=torch.uint8)
    fingerprint = checkpoints.data_fingerprint([data])
    data[-1] = 1  # the last element is in the sample, and so is the first
    assert checkpoints.data_fingerprint([data]) != fingerprint
    data[-1], data[0] = 0, 1
    assert checkpoints.data_fingerprint([data]) != fingerprint
    data[0], data[numel // 3 + 1] = 0, 1  # between any strided sample's points: still seen
    assert checkpoints.data_fingerprint([data]) != fingerprint


@pytest.mark.parametrize("setting,value", [("lr", 0.5), ("loss", "meanfield"),
                                           ("kl_warmup_epochs", 2), ("num_particles", 2)])
def test_other_settings(pair, written, setting, value):
    path, x = written
    with pytest.raises(CheckpointError, match=rf"settings\.{setting}: .* in the checkpoint"):
        _run(pair[0], x, path, epochs=3, resume=True, **{setting: value})


def test_other_batch_size_and_seed(pair, written):
    path, x = written
    model = pair[0]
    with pytest.raises(CheckpointError, match=r"settings\.batch_size.*settings\.seed"):
        fit(model.model, model.guide, x, epochs=3, batch_size=16, seed=5, checkpoint=path,
            resume=True, progress=False)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "flipped byte", "empty",
                                    "plain torch.save", "trailing bytes"])
def test_damaged_checkpoint_is_named(pair, written, damage):
    path, x = written
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x93NUMPY" + bytes(range(256)) * 10)
    elif damage == "flipped byte":
        path.write_bytes(data[:500] + bytes([data[500] ^ 0x10]) + data[501:])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "plain torch.save":
        torch.save({"history": []}, path)
    else:
        path.write_bytes(data + b"\0")
    with pytest.raises(CheckpointError, match=str(path)):
        _run(pair[0], x, path, epochs=3, resume=True)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_resume_after_check_equals_uninterrupted(tmp_path, device):
    # The fingerprint check runs the pair once; it must not move any random state. On a GPU
    # the loaded checkpoint's generator states (CPU byte tensors) land there first: once,
    # restoring them raised "RNG state must be a torch.ByteTensor".
    def train(epochs, resume, path):
        pyro.clear_param_store()
        model = LinearGaussian(data_dim=3, latent_dim=1, seed=0)
        x = LinearGaussian(data_dim=3, latent_dim=1, seed=9).simulate(96, seed=1).detach()
        history = _run(model, x, path, epochs=epochs, resume=resume, device=device)
        return model, history

    straight, straight_history = train(4, False, tmp_path / "a.pt")
    train(2, False, tmp_path / "b.pt")
    resumed, resumed_history = train(4, True, tmp_path / "b.pt")
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    assert [r["train_loss"] for r in resumed_history] == \
        [r["train_loss"] for r in straight_history]


def _flip(x):
    return (1.0 - x,)


def _negate(x):
    return (-x,)


def test_another_batch_transform_or_order_is_refused(pair, tmp_path):
    # the transform and the shuffling decide which data each step sees: a resumed run with
    # another transform (or none), an edited one, or another order would not continue the
    # checkpoint's run
    model, x = pair
    path = tmp_path / "run.pt"
    _run(model, x, path, batch_transform=_flip)
    with pytest.raises(CheckpointError, match=r"settings\.batch_transform.*_flip.*_negate"):
        _run(model, x, path, epochs=3, resume=True, batch_transform=_negate)
    with pytest.raises(CheckpointError,
                       match=r"settings\.batch_transform.*in the checkpoint, None now"):
        _run(model, x, path, epochs=3, resume=True)
    with pytest.raises(CheckpointError, match=r"settings\.batch_transform"):
        _run(model, x, path, epochs=3, resume=True, batch_transform=lambda x: (1.0 - x,))
    with pytest.raises(CheckpointError,
                       match=r"settings\.shuffle: True in the checkpoint, False now"):
        _run(model, x, path, epochs=3, resume=True, batch_transform=_flip, shuffle=False)
    history = _run(model, x, path, epochs=3, resume=True, batch_transform=_flip)
    assert len(history) == 3


def _plain_function_pair():
    """Model and guide as plain functions registering two networks with ``pyro.module``."""
    torch.manual_seed(0)
    encoder, decoder = torch.nn.Linear(3, 4), torch.nn.Linear(2, 3)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(decoder(z), 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        h = encoder(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(h[:, :2], h[:, 2:].exp()).to_event(1))

    return model, guide, (encoder, decoder)


def test_resume_of_plain_functions_with_pyro_module_networks(tmp_path):
    # The checkpoint's values must reach the networks the pair uses: they used to enter the
    # param store as new tensors, which the optimizer stepped while the fresh networks ran
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(1)) * 2 + 1

    def train(epochs, resume, path):
        pyro.clear_param_store()  # a new process: fresh store, fresh networks
        model, guide, nets = _plain_function_pair()
        history = fit(model, guide, x, epochs=epochs, batch_size=8, lr=0.05, seed=2,
                      checkpoint=path, resume=resume, progress=False)
        return nets, history

    straight, straight_history = train(5, False, tmp_path / "straight.pt")
    train(2, False, tmp_path / "split.pt")
    resumed, resumed_history = train(5, True, tmp_path / "split.pt")
    assert [r["train_loss"] for r in resumed_history] == \
        [r["train_loss"] for r in straight_history]
    for net, other in zip(resumed, straight):
        for key, value in other.state_dict().items():
            assert torch.equal(net.state_dict()[key], value), key
    assert pyro.get_param_store()["decoder$$$bias"] is resumed[1].bias


def test_loss_object_settings_are_fingerprinted(pair, tmp_path):
    from pyro.infer import Trace_ELBO

    from inference import FreeBitsELBO

    model, x = pair
    path = tmp_path / "run.pt"
    _run(model, x, path, loss=FreeBitsELBO(0.0))
    with pytest.raises(CheckpointError, match=r"settings\.loss\.free_bits: 0\.0 in the "
                                              r"checkpoint, 5\.0 now; settings\.loss\.group"):
        _run(model, x, path, epochs=3, resume=True, loss=FreeBitsELBO(5.0, group="site"))
    with pytest.raises(CheckpointError, match=r"settings\.loss\.class: 'FreeBitsELBO'"):
        _run(model, x, path, epochs=3, resume=True, loss=Trace_ELBO())
    assert len(_run(model, x, path, epochs=3, resume=True, loss=FreeBitsELBO(0.0))) == 3
    path = tmp_path / "elbo.pt"
    _run(model, x, path, loss=Trace_ELBO(num_particles=1))
    with pytest.raises(CheckpointError, match=r"settings\.loss\.num_particles: 1 in the "
                                              r"checkpoint, 20 now"):
        _run(model, x, path, epochs=3, resume=True, loss=Trace_ELBO(num_particles=20))


def test_keep_best_survives_a_resume(tmp_path):
    # The best epoch (1) lies in the interrupted part: after the resume, restore() must give
    # its parameters, and the run must equal an uninterrupted one bit for bit. The score
    # draws a random number (as a sampled validation estimate would), which a resumed run
    # must draw again where the interrupted one did.
    from inference import KeepBest

    x = LinearGaussian(data_dim=3, latent_dim=1, seed=9).simulate(96, seed=1).detach()

    def train(epochs, resume, path, target=None):
        pyro.clear_param_store()
        model = LinearGaussian(data_dim=3, latent_dim=1, seed=0)
        snapshots = []

        def score():
            snapshots.append(model.weight.detach().clone())
            distance = 0.0 if target is None else float((model.weight - target).abs().sum())
            return -distance + 0.0 * float(torch.rand(()))

        keep = KeepBest(model, score)
        history = fit(model.model, model.guide, x, epochs=epochs, batch_size=32, seed=4,
                      lr=0.05, checkpoint=path, resume=resume, progress=False, callback=keep)
        return model, keep, history, snapshots

    target = train(1, False, tmp_path / "first.pt")[3][0]  # the weight after epoch 1
    straight, straight_keep, straight_history, _ = train(4, False, tmp_path / "a.pt", target)
    train(2, False, tmp_path / "b.pt", target)
    resumed, keep, history, snapshots = train(4, True, tmp_path / "b.pt", target)
    # KeepBest writes its score into epoch 2's record, which is saved after it ran: the
    # resume scores epochs 3 and 4 only
    assert len(snapshots) == 2, "epoch 2's score is in the checkpoint, then epochs 3 and 4"
    assert history == [{**r, "seconds": h["seconds"]} for r, h in zip(straight_history,
                                                                       history)]
    assert (keep.best_epoch, keep.best_score) == (1, 0.0) == \
        (straight_keep.best_epoch, straight_keep.best_score)
    assert torch.equal(resumed.weight, straight.weight)
    keep.restore()
    assert torch.equal(resumed.weight, target)


def test_keep_best_refuses_a_checkpoint_without_its_state(pair, written):
    from inference import KeepBest

    path, x = written  # written without a callback
    model = pair[0]
    with pytest.raises(CheckpointError, match="holds no state of the callback KeepBest"):
        _run(model, x, path, epochs=3, resume=True, callback=KeepBest(model, lambda: 0.0))


@pytest.mark.parametrize("resume", [False, True])
def test_a_fresh_run_keeps_the_checkpoint_it_replaces(pair, tmp_path, resume):
    # a rerun without resume=True (or resuming another run's file under a new name) used
    # to overwrite a longer run's checkpoint silently
    from inference.training.checkpoints import load_checkpoint

    model, x = pair
    path, previous = tmp_path / "run.pt", tmp_path / "run.pt.previous"
    _run(model, x, path, epochs=3)
    assert not previous.exists()
    if resume:  # resume=True with no file starts afresh too, and replaces nothing
        _run(model, x, tmp_path / "new.pt", epochs=1, resume=True)
        assert not (tmp_path / "new.pt.previous").exists()
        return
    with pytest.warns(UserWarning, match=rf"replaces the checkpoint {path}; the old one is "
                                         rf"kept as {previous}"):
        _run(model, x, path, epochs=1)
    assert len(load_checkpoint(path)["history"]) == 1
    assert len(load_checkpoint(previous)["history"]) == 3
    with pytest.warns(UserWarning, match="kept as"):
        _run(model, x, path, epochs=2)  # replaces the older .previous
    assert len(load_checkpoint(path)["history"]) == 2
    assert len(load_checkpoint(previous)["history"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt", "run.pt.lock",
                                                          "run.pt.previous"]


def test_unrelated_param_store_entries_stay_out_of_the_checkpoint(pair, tmp_path):
    # An unrelated pyro.param("loc") made earlier in the process used to be saved and
    # fingerprinted with the pair, so the checkpoint could only resume where "loc" existed
    model, x = pair
    path = tmp_path / "run.pt"
    pyro.param("loc", torch.zeros(()))
    _run(model, x, path)
    state = checkpoints.load_checkpoint(path)
    assert "loc" not in state["param_store"]["params"]
    assert state["fingerprint"]["pair"]["param_store"] == {}
    pyro.clear_param_store()  # as in a new process
    assert len(_run(model, x, path, epochs=3, resume=True)) == 3
    pyro.param("loc", torch.ones(3))  # another unrelated "loc" at resume time
    assert len(_run(model, x, path, epochs=4, resume=True)) == 4
    assert torch.equal(pyro.param("loc"), torch.ones(3))


def test_a_format_1_checkpoint_resumes_without_its_unrelated_entries(tmp_path):
    # Format 1 saved every store entry outside the modules: a pure pyro.param pair's own
    # parameter, and an unrelated "other". It still resumes; "other" is neither compared nor
    # restored over the live parameter of that name.
    x = torch.randn(20)
    path = tmp_path / "run.pt"
    model, guide = _param_pair("loc", 2)
    fit(model, guide, x, epochs=1, checkpoint=path, progress=False)
    state = checkpoints.load_checkpoint(path)
    assert state.pop("format") == checkpoints.FORMAT == 2
    state["param_store"]["params"]["other"] = torch.zeros(1)
    state["fingerprint"]["pair"]["param_store"]["other"] = [1]
    checkpoints.save_checkpoint(path, state)
    pyro.clear_param_store()
    live = pyro.param("other", torch.full((1,), 5.0))
    assert len(fit(model, guide, x, epochs=2, checkpoint=path, resume=True,
                   progress=False)) == 2
    assert torch.equal(live, torch.full((1,), 5.0))
    assert "other" not in checkpoints.load_checkpoint(path)["param_store"]["params"]


def test_stale_partials_are_matched_exactly(tmp_path):
    # Only <path>.<pid>.<8 hex>.partial of a dead pid is stale: the live temporary file of a
    # sibling checkpoint "model.pt.<pid>" and, for "run[1].pt", files of "run1.pt" (a glob
    # pattern once) are not
    import os
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    dead, me = child.pid, os.getpid()
    names = {"stale": f"model.pt.{dead}.deadbeef.partial",
             "sibling": f"model.pt.{dead}.{me}.deadbeef.partial",
             "other format": f"model.pt.{dead}.partial",
             "bracket stale": f"run[1].pt.{dead}.cafebabe.partial",
             "run1's": f"run1.pt.{dead}.cafebabe.partial"}
    for name in names.values():
        (tmp_path / name).write_bytes(b"x")
    assert checkpoints.remove_stale_partials(tmp_path / "model.pt") == [
        tmp_path / names["stale"]]
    assert checkpoints.remove_stale_partials(tmp_path / "run[1].pt") == [
        tmp_path / names["bracket stale"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        names[key] for key in ("sibling", "other format", "run1's"))


# --- plain settings of the pair's modules (found by the models probe: a resume with
# Autoencoder(sparsity=100) returned the sparsity-0 model and its history) ---------------------
def _autoencoder_run(path, resume=False, epochs=1, **options):
    from ppl_models import Autoencoder

    pyro.clear_param_store()  # as in a new process
    model = Autoencoder(image_shape=(1, 4, 4), latent_dim=2, hidden=(8,), **options)
    x = torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    if not model.likelihood.name.startswith("gaussian"):  # a density takes continuous values
        x = (x > 0.5).float()
    return fit(model.model, model.guide, x, epochs=epochs, batch_size=20, seed=1,
               checkpoint=path, resume=resume, progress=False)


@pytest.mark.parametrize("first, second, named", [
    ({"sparsity": 0.0}, {"sparsity": 100.0}, r"0\.sparsity: 0\.0 in the checkpoint, 100\.0 now"),
    # the scale lives in the closure of the likelihood's builder, not in an attribute
    ({"likelihood": "gaussian-fixed", "likelihood_options": {"scale": 0.1}},
     {"likelihood": "gaussian-fixed", "likelihood_options": {"scale": 0.3}},
     r"0\.likelihood\.build\.scale: 0\.1 in the checkpoint, 0\.3 now"),
])
def test_changed_model_settings_are_refused(tmp_path, first, second, named):
    path = tmp_path / "run.pt"
    _autoencoder_run(path, **first)
    with pytest.raises(CheckpointError, match="other settings of the model or guide: " + named):
        _autoencoder_run(path, resume=True, epochs=2, **second)
    assert len(_autoencoder_run(path, resume=True, epochs=2, **first)) == 2


class _ScaledNoise(PyroModule):
    """A user's pair on a module: a plain attribute, a tensor attribute (not a buffer), a
    lambda with a literal in it, and a counter that the model itself moves."""

    def __init__(self, noise=1.0, prior=0.0, literal=False):
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(()))
        self.noise = noise
        self.prior_loc = torch.tensor([prior])
        self.link = (lambda v: v * 2.0) if literal else (lambda v: v * 1.0)
        self.calls = 0

    @pyro_method
    def model(self, x):
        self.calls += 1
        z = pyro.sample("z", dist.Normal(self.prior_loc[0], 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(self.link(z), self.noise), obs=x)

    @pyro_method
    def guide(self, x):
        pyro.sample("z", dist.Normal(self.loc, 1.0))


@pytest.mark.parametrize("changed, named", [
    ({"noise": 2.0}, r"0\.noise: 1\.0 in the checkpoint, 2\.0 now"),
    ({"prior": 3.0}, r"0\.prior_loc: 'tensor \[1\] torch\.float32 \(hash"),
    ({"literal": True}, r"0\.link\.constants: \[1\.0\] in the checkpoint, \[2\.0\] now"),
])
def test_a_user_modules_settings_are_fingerprinted(tmp_path, changed, named):
    x = torch.randn(30)
    path = tmp_path / "run.pt"
    pair = _ScaledNoise()
    fit(pair.model, pair.guide, x, epochs=1, checkpoint=path, progress=False)
    pyro.clear_param_store()
    other = _ScaledNoise(**changed)
    with pytest.raises(CheckpointError, match=named):
        fit(other.model, other.guide, x, epochs=2, checkpoint=path, resume=True, progress=False)


def test_settings_that_training_moves_do_not_block_a_resume(tmp_path):
    # ``calls`` grows with every step: left out of the checkpoint, so the same object (moved)
    # and a fresh one (at 0) both resume
    x = torch.randn(30)
    path = tmp_path / "run.pt"
    pair = _ScaledNoise()
    fit(pair.model, pair.guide, x, epochs=1, checkpoint=path, progress=False)
    assert pair.calls > 0
    assert "0.calls" not in checkpoints.load_checkpoint(path)["fingerprint"]["pair"]["settings"]
    assert len(fit(pair.model, pair.guide, x, epochs=2, checkpoint=path, resume=True,
                   progress=False)) == 2
    pyro.clear_param_store()
    fresh = _ScaledNoise()
    assert len(fit(fresh.model, fresh.guide, x, epochs=3, checkpoint=path, resume=True,
                   progress=False)) == 3


def test_a_checkpoint_without_settings_still_resumes(tmp_path):
    # written before the settings were recorded: resumes, unchecked
    path = tmp_path / "run.pt"
    _autoencoder_run(path, sparsity=0.0)
    state = checkpoints.load_checkpoint(path)
    del state["fingerprint"]["pair"]["settings"]
    checkpoints.save_checkpoint(path, state)
    assert len(_autoencoder_run(path, resume=True, epochs=2, sparsity=5.0)) == 2


# --- batch norm in pair networks: plain functions with pyro.module, and PyroModule pairs -------
def _batch_norm_pair():
    """Plain functions registering a global-style encoder with batch norm (held in a closure)."""
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.BatchNorm1d(8),
                                  torch.nn.ReLU(), torch.nn.Linear(8, 2))
    decoder = torch.nn.Linear(1, 3)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([x.shape[0], 1]).to_event(1))
            pyro.sample("x", dist.Normal(decoder(z), 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = encoder(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return encoder[1], model, guide


def _batch_norm_data():
    return torch.randn(64, 3, generator=torch.Generator().manual_seed(5)) * 3 + 1


def test_pyro_module_batch_norm_resumes_as_the_uninterrupted_run(tmp_path):
    # the running statistics were not saved: a resumed run kept the fresh ones
    x, path = _batch_norm_data(), tmp_path / "run.pt"
    pyro.clear_param_store()
    norm, model, guide = _batch_norm_pair()
    fit(model, guide, x, epochs=2, batch_size=16, seed=1, progress=False)
    whole = norm.running_mean.clone(), norm.running_var.clone()
    assert int(norm.num_batches_tracked) == 8, "only the 8 steps move the statistics"
    pyro.clear_param_store()
    norm, model, guide = _batch_norm_pair()
    fit(model, guide, x, epochs=1, batch_size=16, seed=1, progress=False, checkpoint=path)
    pyro.clear_param_store()  # as in a new process
    norm, model, guide = _batch_norm_pair()
    fit(model, guide, x, epochs=2, batch_size=16, seed=1, progress=False, checkpoint=path,
        resume=True)
    assert torch.equal(norm.running_mean, whole[0]) and torch.equal(norm.running_var, whole[1])
    assert int(norm.num_batches_tracked) == 8


def test_validation_and_checks_leave_batch_norm_statistics_alone(tmp_path):
    x = _batch_norm_data()
    results = []
    for valid in (None, x[:20]):
        pyro.clear_param_store()
        norm, model, guide = _batch_norm_pair()
        fit(model, guide, x, epochs=1, batch_size=16, seed=1, progress=False, valid_data=valid)
        results.append(norm.running_mean.clone())
        assert int(norm.num_batches_tracked) == 4
    assert torch.equal(*results)


class _NormedPair(PyroModule):
    """A PyroModule pair whose encoder has batch norm."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.BatchNorm1d(8),
                                           torch.nn.ReLU(), torch.nn.Linear(8, 2))
        self.decoder = torch.nn.Linear(1, 3)

    @pyro_method
    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([x.shape[0], 1]).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 1.0).to_event(1), obs=x)

    @pyro_method
    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.encoder(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


@pytest.mark.parametrize("loss", ["elbo", "iwae"])
def test_a_pyro_module_pairs_statistics_move_once_per_step(loss):
    # fit's survey and the first step's checks ran the pair in training mode (2 extra moves)
    pyro.clear_param_store()
    pair = _NormedPair()
    fit(pair.model, pair.guide, _batch_norm_data(), loss=loss, num_particles=2, epochs=1,
        batch_size=16, seed=1, progress=False)
    assert int(pair.encoder[1].num_batches_tracked) == 4


def test_network_buffers_of_another_shape_are_refused(tmp_path):
    x, path = _batch_norm_data(), tmp_path / "run.pt"
    pyro.clear_param_store()
    _, model, guide = _batch_norm_pair()
    fit(model, guide, x, epochs=1, batch_size=16, seed=1, progress=False, checkpoint=path)
    state = checkpoints.load_checkpoint(path)
    assert set(state["network_buffers"]) == {"encoder"}
    state["network_buffers"]["encoder"]["1.running_mean"] = torch.zeros(9)
    checkpoints.save_checkpoint(path, state)
    pyro.clear_param_store()
    _, model, guide = _batch_norm_pair()
    with pytest.raises(CheckpointError, match=r"encoder\.1\.running_mean: \[9\] in the "
                                              r"checkpoint, \[8\] now"):
        fit(model, guide, x, epochs=2, batch_size=16, seed=1, progress=False, checkpoint=path,
            resume=True)


def test_a_checkpoint_of_another_model_class_with_the_same_shapes_is_refused(tmp_path):
    # a VAE's history (-ELBO) used to continue as an Autoencoder's (reconstruction NLL)
    from ppl_models import VAE, Autoencoder

    x = (torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    path = tmp_path / "run.pt"
    for make, epochs in ((VAE, 1), (Autoencoder, 2)):
        pyro.clear_param_store()
        model = make(image_shape=(1, 4, 4), latent_dim=2, hidden=(8,))
        if make is VAE:
            fit(model.model, model.guide, x, epochs=epochs, batch_size=20, checkpoint=path,
                progress=False)
            continue
        with pytest.raises(CheckpointError, match=r"0\.__class__: 'VAE' in the checkpoint, "
                                                  r"'Autoencoder' now"):
            fit(model.model, model.guide, x, epochs=epochs, batch_size=20, checkpoint=path,
                resume=True, progress=False)


@pytest.mark.parametrize("loss_name", ["iwae", "dreg"])
def test_a_loss_object_gets_the_checks_of_its_name(loss_name):
    # fit(loss=IWAELoss(5)) skipped the particle-plate probe that fit(loss="iwae",
    # num_particles=5) runs, and trained a model indexing z[:, 0] on wrong numbers
    from inference import DReGLoss, IWAELoss

    x = torch.randn(16)

    def model(x):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([x.shape[0], 1]).to_event(1))
            pyro.sample("x", dist.Normal(loc + z[:, 0], 1.0), obs=x)

    def guide(x):
        scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 1), scale).to_event(1))

    loss = IWAELoss(5) if loss_name == "iwae" else DReGLoss(5)
    with pytest.raises(Exception, match="particles in a leftmost pyro.plate"):
        fit(model, guide, x, loss=loss, epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"num_particles=7\) disagrees with the loss object"):
        fit(model, guide, x, loss=loss, num_particles=7, epochs=1, progress=False)


def test_the_same_pyro_loss_object_resumes_in_the_same_process(tmp_path):
    # Pyro's ELBO sets max_plate_nesting (inf -> 2) during training: the same object passed
    # again, notebook-style, was refused
    from pyro.infer import Trace_ELBO

    x, path = torch.randn(30), tmp_path / "run.pt"
    pair = _ScaledNoise()
    loss = Trace_ELBO(num_particles=3, vectorize_particles=True)
    fit(pair.model, pair.guide, x, loss=loss, epochs=1, checkpoint=path, progress=False)
    assert len(fit(pair.model, pair.guide, x, loss=loss, epochs=2, checkpoint=path,
                   resume=True, progress=False)) == 2


def test_run_state_attributes_do_not_block_a_resume(tmp_path):
    # a module that keeps its command-line arguments (epochs, resume) or its device string
    # could never be resumed
    import argparse

    x, path = torch.randn(30), tmp_path / "run.pt"
    for epochs, resume in ((1, False), (2, True)):
        pyro.clear_param_store()
        pair = _ScaledNoise()
        pair.args = argparse.Namespace(epochs=epochs, resume=resume)
        pair.device = "cpu" if resume else "cuda"
        fit(pair.model, pair.guide, x, epochs=epochs, checkpoint=path, resume=resume,
            progress=False)


@pytest.mark.parametrize("change, named", [
    (lambda s: s.__setitem__("format", 99), r"has format 99, which this version cannot resume "
                                            r"\(it reads formats 1, 2\)"),
    (lambda s: s.__setitem__("format", "2"), r"has format '2'"),
    (lambda s: s.pop("optimizer"), r"has no optimizer entry"),
    (lambda s: [s.pop(k) for k in ("modules", "rng")], r"has no modules, rng entries"),
    (lambda s: s.pop("shuffler"), r"has no shuffler entry"),
    (lambda s: s.__setitem__("history", "abc"), r"holds a str as its 'history', not a list of "
                                                r"the epochs' records"),
    (lambda s: s.__setitem__("history", [1, 2]), r"holds a list holding a int as its "
                                                 r"'history'"),
    (lambda s: s["param_store"].pop("constraints"), r"holds a dict as its 'param_store', not a "
                                                    r"dict of 'params' and 'constraints'"),
])
def test_a_checkpoint_of_another_layout_is_refused_naming_the_entry(pair, written, change,
                                                                     named):
    # an unknown format resumed silently, history="abc" made fit return "abc", and a missing
    # entry was a bare KeyError after the checks
    path, x = written
    state = checkpoints.load_checkpoint(path)
    change(state)
    checkpoints.save_checkpoint(path, state)
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} {named}"):
        _run(pair[0], x, path, epochs=3, resume=True)


def test_load_checkpoint_names_a_bad_argument_before_reading(written):
    path, _ = written
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        checkpoints.load_checkpoint(5)
    with pytest.raises(ValueError, match=r"map_location='banana' names no device"):
        checkpoints.load_checkpoint(path, map_location="banana")
    with pytest.raises(TypeError, match="map_location must be a device.*got float"):
        checkpoints.load_checkpoint(path, map_location=1.5)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"map_location='cuda:3' names a CUDA device"):
            checkpoints.load_checkpoint(path, map_location="cuda:3")
    assert checkpoints.load_checkpoint(path, map_location=torch.device("cpu"))["history"]
