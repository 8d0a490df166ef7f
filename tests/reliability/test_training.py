"""Training entry points refuse bad arguments up front and stop on NaN without losing work.

Each case failed before issue 14: an obscure error from deep inside torch/Pyro, a silent
no-op (num_particles=0 trained nothing and reported loss 0.0), or a NaN checkpoint.
"""

import runpy
import sys

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import Adam, CompiledSVIStep, SVIStep, fit
from inference.training.checkpoints import load_checkpoint

from .conftest import ROOT, finite_state


def _fit(pair, **kwargs):
    model, x = pair
    kwargs.setdefault("epochs", 1)
    return fit(model.model, model.guide, kwargs.pop("data", x), progress=False, **kwargs)


BAD_ARGUMENTS = [
    ("num_particles", 0), ("num_particles", -1), ("num_particles", 2.5),
    ("num_particles", True), ("lr", "0.01"), ("lr", float("inf")), ("lr", float("nan")),
    ("lr", -1e-3), ("batch_size", 2.5), ("batch_size", 0), ("batch_size", True),
    ("epochs", 1.5), ("epochs", -1), ("seed", "1"), ("kl_warmup_epochs", -2),
    ("loss", 3), ("resume", "yes"), ("callback", 5), ("device", "gpu"), ("device", "meta"),
]


@pytest.mark.parametrize("name,value", BAD_ARGUMENTS, ids=[f"{n}={v!r}" for n, v in BAD_ARGUMENTS])
def test_bad_argument_is_named(pair, name, value):
    calls = []
    kwargs = {name: value}
    if name != "callback":
        kwargs["callback"] = calls.append
    with pytest.raises((ValueError, TypeError), match=name if name != "device" else "device"):
        _fit(pair, **kwargs)
    assert calls == [], "nothing may be trained before the arguments are checked"


def test_zero_datapoints(pair):
    with pytest.raises(ValueError, match="data has no datapoints"):
        _fit(pair, data=torch.zeros(0, 3))


def test_data_as_a_tensor_dataset_and_what_is_refused(pair):
    # a TensorDataset is its tensors; a DataLoader, a numpy array or another Dataset is
    # refused naming what was passed and how to pass it
    from torch.utils.data import DataLoader, TensorDataset

    model, x = pair
    histories = []
    for data in (x, TensorDataset(x)):
        pyro.clear_param_store()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        histories.append(_fit(pair, data=data, seed=2))
        model.load_state_dict(state)
    assert histories[0][-1]["train_loss"] == histories[1][-1]["train_loss"]
    for data, match in [(DataLoader(TensorDataset(x), batch_size=16), "DataLoader.*batch_size=16"),
                        (x.numpy(), "numpy ndarray: torch.as_tensor"),
                        ([x.numpy()], "list of ndarray"), (None, "got a NoneType")]:
        with pytest.raises(TypeError, match=match):
            _fit(pair, data=data)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_data_is_counted(pair, bad):
    x = pair[1].clone()
    x[[1, 5, 7], 0] = bad
    with pytest.raises(ValueError, match=r"data \(shape \[64, 3\]\) has 3 non-finite"):
        _fit(pair, data=x)


def test_nonfinite_valid_data_found_before_training(pair):
    valid = pair[1][:10].clone()
    valid[2, 1] = float("nan")
    calls = []
    with pytest.raises(ValueError, match=r"valid_data .* has 1 non-finite values \(1 NaN"):
        _fit(pair, valid_data=valid, callback=calls.append)
    assert calls == []


def test_valid_data_of_another_shape(pair):
    with pytest.raises(ValueError, match="valid_data tensors have datapoint shapes"):
        _fit(pair, valid_data=torch.zeros(5, 4))


@pytest.mark.parametrize("dtype", [torch.float64, torch.int64])
def test_valid_data_of_another_dtype(pair, dtype):
    # used to fail in a matrix product after a whole epoch of training
    calls = []
    with pytest.raises(ValueError, match=rf"valid_data tensors have dtypes \[{dtype}\], the "
                                         r"training data \[torch.float32\]"):
        _fit(pair, valid_data=pair[1][:10].to(dtype), callback=calls.append)
    assert calls == []


@pytest.mark.parametrize("kind", ["library", "pyro"])
def test_valid_data_outside_the_likelihoods_support_found_before_training(kind):
    # grey levels for a Bernoulli VAE failed after the first epoch, in a message that did
    # not say valid_data (it read as one about the training data)
    calls = []
    if kind == "library":
        from ppl_models import VAE

        pair = VAE(image_shape=(1, 4, 4), latent_dim=2, hidden=(8,))
        data = (torch.rand(32, 1, 4, 4, generator=torch.Generator().manual_seed(0)) > 0.5)
        data, valid = data.float(), torch.full((12, 1, 4, 4), 0.5)
        named = r"valid_data cannot be scored by the pair \(rows 0 to 11 of 12\)"
    else:  # a plain Pyro pair: Pyro's own validation names the site
        def model(x):
            rate = pyro.param("rate", torch.tensor(1.0), constraint=dist.constraints.positive)
            with pyro.plate("data", x.shape[0]):
                pyro.sample("x", dist.Poisson(rate), obs=x)

        pair = type("Pair", (), {"model": staticmethod(model),
                                 "guide": staticmethod(lambda x: None)})()
        data, valid = torch.ones(32), torch.tensor([1.0] * 20 + [-1.0])
        named = r"rows 16 to 20 of 21.*x"
    with pytest.raises(ValueError, match=named):
        fit(pair.model, pair.guide, data, valid_data=valid, epochs=1, batch_size=16,
            progress=False, callback=calls.append)
    assert calls == []


def test_valid_data_of_a_pair_with_a_global_latent(tmp_path):
    # fit trains such a pair with "elbo", but its validation ELBO per datapoint is undefined:
    # refused before the first step (it used to be after epoch 1), naming valid_data
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(x):
        pyro.sample("mu", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))

    pyro.clear_param_store()
    x = torch.randn(40, generator=torch.Generator().manual_seed(0)) + 3.0
    calls, path = [], tmp_path / "run.pt"
    with pytest.raises(ValueError, match=r"valid_data.*model site 'mu' lies outside"):
        fit(model, guide, x, valid_data=x[:10], epochs=2, batch_size=10, lr=0.1,
            checkpoint=path, progress=False, callback=calls.append)
    assert calls == [] and not path.exists()
    assert float(pyro.param("m").detach()) == 0.0, "no step was taken"
    assert len(fit(model, guide, x, epochs=2, batch_size=10, progress=False)) == 2


def test_svi_step_and_adam_check_arguments():
    model, guide = (lambda x: None), (lambda x: None)
    with pytest.raises(ValueError, match="num_particles"):
        SVIStep(model, guide, num_particles=0)
    with pytest.raises(ValueError, match="num_particles"):
        SVIStep(model, guide, num_particles=2.5)
    with pytest.raises(TypeError, match="guide must be callable"):
        SVIStep(model, "guide")
    with pytest.raises(ValueError, match="lr"):
        Adam("0.01")
    with pytest.raises(ValueError, match="lr"):
        Adam(float("inf"))
    with pytest.raises(TypeError, match="model must be callable"):
        CompiledSVIStep(None, guide)


def test_nan_mid_training_stops_and_keeps_last_good_checkpoint(pair, tmp_path):
    # A batch transform that starts producing NaN in epoch 3 (a broken augmentation): the run
    # must stop naming epoch 3 and the first bad step, and the checkpoint keep epoch 2.
    finished = []  # epochs done, from the callback (fit may also call the transform once to
    # check the pair before training)

    def transform(x):
        return x + float("nan") if len(finished) >= 2 else x

    path = tmp_path / "run.pt"
    with pytest.raises(FloatingPointError, match=r"step 1 of epoch 3.*keeps epoch 2"):
        _fit(pair, epochs=5, batch_size=32, batch_transform=transform, checkpoint=path,
             callback=finished.append)
    state = load_checkpoint(path)
    assert len(state["history"]) == 2
    assert all(torch.isfinite(v).all() for v in state["modules"][0].values())


def test_nonfinite_parameters_stop_the_run(pair, tmp_path):
    # A NaN gradient in the first step of epoch 2 (the loss of that step is still finite: it is
    # computed before the update) turns the weights NaN; the epoch's loss looks fine, yet the
    # epoch must not be saved.
    model, x = pair
    backward = {"n": 0}

    def nan_grad(grad):
        backward["n"] += 1
        return grad * float("nan") if backward["n"] == 2 else grad

    model.weight.register_hook(nan_grad)
    path = tmp_path / "run.pt"
    with pytest.raises(FloatingPointError, match=r"weight.*after epoch 2.*keeps epoch 1"):
        fit(model.model, model.guide, x, epochs=3, batch_size=64, checkpoint=path,
            progress=False)
    assert not finite_state(model)
    state = load_checkpoint(path)
    assert len(state["history"]) == 1
    assert all(torch.isfinite(v).all() for v in state["modules"][0].values())


@pytest.mark.parametrize("flag", ["--num-particles", "--latent-dim", "--hidden", "--epochs",
                                  "--batch-size", "--lr"])
def test_example_flags_refuse_nonsense(flag, monkeypatch, capsys, tmp_path):
    value = "-1" if flag == "--epochs" else "0"
    monkeypatch.setattr(sys, "argv", ["vae.py", flag, value, "--out-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / "examples" / "vae.py"), run_name="__main__")
    assert exit_info.value.code == 2
    assert f"argument {flag}: must be" in capsys.readouterr().err
    assert not (tmp_path / "metrics.json").exists()


def test_the_validation_elbo_is_scored_in_evaluation_mode():
    # valid_data scored in training mode would use the validation batch's statistics and
    # move batch norm's running ones with it
    from .test_estimators import _NormedPair

    torch.manual_seed(0)
    pair = _NormedPair()
    calls = []
    pair.encoder[1].register_forward_hook(
        lambda module, inputs, output: calls.append((inputs[0].shape[0], module.training)))
    history = fit(pair.model, pair.guide, torch.randn(16, 2), epochs=2, batch_size=8,
                  valid_data=torch.randn(5, 2) + 5.0, progress=False)
    assert "valid_elbo" in history[-1]
    assert {training for size, training in calls if size == 5} == {False}
    # fit's checks before the first step may run the guide in evaluation mode (the row
    # probe); the 4 steps (2 epochs of 2 minibatches) come last, in training mode
    steps = [training for size, training in calls if size == 8]
    assert steps[-4:] == [True] * 4, steps
    assert pair.training and pair.encoder[1].training, "training mode is given back"
