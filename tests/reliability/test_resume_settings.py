"""Resume compares the settings of every part of the pair, and only settings.

Each case reproduces a gap of the settings check (``resume_settings.settings_fingerprint``):
resumes that went on silently with a changed model (networks of plain-function pairs, pairs
passed as plain callables, attribute kinds the fingerprint did not follow) and resumes that
were refused for what is not a model setting (a training length in a config dict, a run's
start time, an attribute a callback moved after the last save).
"""

import enum
import functools
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoNormal, init_to_mean, init_to_median
from pyro.nn import PyroModule, PyroParam, pyro_method

from inference import fit
from inference.training import checkpoints, resume_settings
from inference.training.checkpoints import CheckpointError

REFUSED = "other settings of the model or guide: "


def _x():
    return torch.randn(24, 3, generator=torch.Generator().manual_seed(3))


def _fit(model, guide, path, epochs, resume=False, **options):
    return fit(model, guide, _x(), epochs=epochs, batch_size=12, seed=2, checkpoint=path,
               resume=resume, progress=False, **options)


# --- 1a: networks that a pair of plain functions registers with pyro.module --------------------
def _function_pair(activation=torch.nn.ReLU, p=0.1, scale=0.5):
    torch.manual_seed(0)
    decoder = torch.nn.Sequential(torch.nn.Linear(1, 4), activation(), torch.nn.Dropout(p),
                                  torch.nn.Linear(4, 3))

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([x.shape[0], 1]).to_event(1))
            pyro.sample("x", dist.Normal(decoder(z), scale).to_event(1), obs=x)

    def guide(x):
        loc = pyro.param("loc", torch.zeros(x.shape[0], 1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))

    return model, guide


@pytest.mark.parametrize("changed, named", [
    ({"activation": torch.nn.Tanh}, r"decoder\.1\.__class__: 'ReLU' in the checkpoint, "
                                     r"'Tanh' now"),
    ({"p": 0.3}, r"decoder\.2\.p: 0\.1 in the checkpoint, 0\.3 now"),
    ({"scale": 2.0}, r"model\.scale: 0\.5 in the checkpoint, 2\.0 now"),
])
def test_networks_of_plain_function_pairs(tmp_path, changed, named):
    path = tmp_path / "run.pt"
    _fit(*_function_pair(), path, 1)
    pyro.clear_param_store()  # as in a new process
    with pytest.raises(CheckpointError, match=REFUSED + ".*" + named):
        _fit(*_function_pair(**changed), path, 2, resume=True)
    pyro.clear_param_store()
    assert len(_fit(*_function_pair(), path, 2, resume=True)) == 2


_SOURCE = """
def model(x):
    pyro.module("decoder", decoder)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([x.shape[0], 1]).to_event(1))
        pyro.sample("x", dist.Normal(decoder(z) * GAIN, {literal}).to_event(1), obs=x)
"""


def _script_pair(literal=0.5, gain=1.0):
    """A model as a script defines it: a literal in its code, a global constant."""
    torch.manual_seed(0)
    namespace = {"__name__": "user_script", "pyro": pyro, "dist": dist, "GAIN": gain,
                 "decoder": torch.nn.Linear(1, 3)}
    exec(_SOURCE.format(literal=literal), namespace)
    return namespace["model"], _function_pair()[1]


@pytest.mark.parametrize("changed, named", [
    ({"literal": 0.25}, r"model\.constants: \[[^]]*0\.5\] in the checkpoint, "
                        r"\[[^]]*0\.25\] now"),
    ({"gain": 3.0}, r"model\.GAIN: 1\.0 in the checkpoint, 3\.0 now"),
])
def test_constants_a_plain_model_uses(tmp_path, changed, named):
    path = tmp_path / "run.pt"
    _fit(*_script_pair(), path, 1)
    pyro.clear_param_store()
    with pytest.raises(CheckpointError, match=REFUSED + ".*" + named):
        _fit(*_script_pair(**changed), path, 2, resume=True)
    pyro.clear_param_store()
    assert len(_fit(*_script_pair(), path, 2, resume=True)) == 2


# --- 1b: pairs passed as plain callables: a PyroModule model and an AutoGuide -----------------
class _Regression(PyroModule):
    def __init__(self, noise=1.0):
        super().__init__()
        self.weight = PyroParam(torch.zeros(3))
        self.noise = noise

    def forward(self, x):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(self.weight * z, self.noise).to_event(1), obs=x)


def _callable_pair(noise=1.0, **guide_options):
    model = _Regression(noise)
    return model, AutoNormal(model, **guide_options)


@pytest.mark.parametrize("changed, named", [
    ({"noise": 2.0}, r"model\.noise: 1\.0 in the checkpoint, 2\.0 now"),
    ({"init_scale": 0.05}, r"guide\._init_scale: 0\.1 in the checkpoint, 0\.05 now"),
    ({"init_loc_fn": init_to_mean}, r"guide\.init_loc_fn: '.*init_to_median' in the "
                                    r"checkpoint, '.*init_to_mean' now"),
    ({"init_loc_fn": functools.partial(init_to_median, num_samples=30)},
     r"guide\.init_loc_fn"),
])
def test_pairs_passed_as_plain_callables(tmp_path, changed, named):
    path = tmp_path / "run.pt"
    first = {"init_loc_fn": init_to_median}
    _fit(*_callable_pair(**first), path, 1)
    pyro.clear_param_store()
    with pytest.raises(CheckpointError, match=REFUSED + ".*" + named):
        _fit(*_callable_pair(**{**first, **changed}), path, 2, resume=True)
    pyro.clear_param_store()
    assert len(_fit(*_callable_pair(**first), path, 2, resume=True)) == 2


def test_an_autoguides_partial_is_compared_by_its_arguments(tmp_path):
    path = tmp_path / "run.pt"
    _fit(*_callable_pair(init_loc_fn=functools.partial(init_to_median, num_samples=15)),
         path, 1)
    pyro.clear_param_store()
    with pytest.raises(CheckpointError, match=r"guide\.init_loc_fn\.keywords\['num_samples'\]:"
                                              r" 15 in the checkpoint, 30 now"):
        _fit(*_callable_pair(init_loc_fn=functools.partial(init_to_median, num_samples=30)),
             path, 2, resume=True)


# --- 1c: attribute kinds the fingerprint did not follow ----------------------------------------
class Mode(enum.Enum):
    FAST = 1
    EXACT = 2


class _Held(PyroModule):
    """A pair on a module whose settings are of the kinds the fingerprint used to skip."""

    def __init__(self, layers=None, weights=(1.0, 2.0), link=None, mode=Mode.FAST,
                 spec=(torch.nn.ReLU, 0.1), config=None, started=None):
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(()))
        self.layers = layers or {"act": torch.nn.ReLU, "p": 0.1}  # mixed, holds a class
        self.weights = np.asarray(weights)
        self.link = link or functools.partial(torch.mul, other=1.0)
        self.mode = mode
        self.spec = spec  # a tuple of mixed values
        self.config = config or {"epochs": 10, "hidden": 4}
        if started is not None:
            self.started = started

    @pyro_method
    def model(self, x):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(self.link(z), 1.0).expand([x.shape[0], 3])
                        .to_event(1), obs=x)

    @pyro_method
    def guide(self, x):
        pyro.sample("z", dist.Normal(self.loc, 1.0))


def _held_run(path, epochs=1, resume=False, ignore=None, **options):
    pyro.clear_param_store()
    held = _Held(**options)
    return _fit(held.model, held.guide, path, epochs, resume=resume,
                **({} if ignore is None else {"resume_ignore": ignore}))


@pytest.mark.parametrize("changed, named", [
    ({"layers": {"act": torch.nn.Tanh, "p": 0.1}},
     r"0\.layers\['act'\]: 'torch\.nn\.modules\.activation\.ReLU' in the checkpoint, "
     r"'torch\.nn\.modules\.activation\.Tanh' now"),
    ({"layers": {"act": torch.nn.ReLU, "p": 0.3}}, r"0\.layers\['p'\]: 0\.1 in the checkpoint"),
    ({"layers": {"act": torch.nn.ReLU, "p": 0.1, "q": 1}}, r"0\.layers: "),
    ({"weights": (1.0, 3.0)}, r"0\.weights: 'ndarray \[2\] float64 \(hash"),
    ({"link": functools.partial(torch.mul, other=2.0)},
     r"0\.link\.keywords\['other'\]: 1\.0 in the checkpoint, 2\.0 now"),
    ({"mode": Mode.EXACT}, r"0\.mode: '.*Mode\.FAST' in the checkpoint, '.*Mode\.EXACT' now"),
    ({"spec": (torch.nn.Tanh, 0.1)}, r"0\.spec\[0\]: .*ReLU' in the checkpoint, .*Tanh' now"),
    ({"spec": (torch.nn.ReLU, 0.2)}, r"0\.spec\[1\]: 0\.1 in the checkpoint, 0\.2 now"),
])
def test_attribute_kinds_are_followed(tmp_path, changed, named):
    path = tmp_path / "run.pt"
    _held_run(path)
    with pytest.raises(CheckpointError, match=REFUSED + ".*" + named):
        _held_run(path, epochs=2, resume=True, **changed)
    assert len(_held_run(path, epochs=2, resume=True)) == 2


# --- 2: what is not a model setting ------------------------------------------------------------
def test_a_config_entry_is_named_and_can_be_left_out(tmp_path):
    # a training length in a config dict: no rule tells it from a model setting, so it is
    # refused, naming the key and how to go on
    path = tmp_path / "run.pt"
    _held_run(path, config={"epochs": 10, "hidden": 4})
    with pytest.raises(CheckpointError, match=r"0\.config\['epochs'\]: 10 in the checkpoint, "
                                              r"20 now\..*resume_ignore=\[\"0\.config\['epochs'\]"
                                              r"\"\]"):
        _held_run(path, epochs=2, resume=True, config={"epochs": 20, "hidden": 4})
    ignore = ["0.config['epochs']"]
    assert len(_held_run(path, epochs=2, resume=True, config={"epochs": 20, "hidden": 4},
                         ignore=ignore)) == 2
    # what is not left out is still compared
    with pytest.raises(CheckpointError, match=r"0\.config\['hidden'\]: 4 in the checkpoint"):
        _held_run(path, epochs=3, resume=True, config={"epochs": 30, "hidden": 8},
                  ignore=ignore)


def test_a_run_identity_is_named_and_can_be_left_out(tmp_path):
    path = tmp_path / "run.pt"
    _held_run(path, started=time.time())
    with pytest.raises(CheckpointError, match=r"0\.started: .* in the checkpoint.*"
                                              r"resume_ignore=\[\"0\.started\"\].*\"_\""):
        _held_run(path, epochs=2, resume=True, started=time.time() + 1)
    assert len(_held_run(path, epochs=2, resume=True, started=float(os.getpid()),
                         ignore=["0.started"])) == 2
    assert len(_held_run(path, epochs=3, resume=True, started=1.0, ignore="0.started")) == 3


def test_private_attributes_are_not_settings(tmp_path):
    path = tmp_path / "run.pt"
    pyro.clear_param_store()
    held = _Held()
    held._run_started = time.time()
    _fit(held.model, held.guide, path, 1)
    pyro.clear_param_store()
    held = _Held()
    held._run_started = time.time() + 5
    assert len(_fit(held.model, held.guide, path, 2, resume=True)) == 2


def test_resume_ignore_is_checked(tmp_path):
    held = _Held()
    with pytest.raises(TypeError, match="resume_ignore"):
        _fit(held.model, held.guide, tmp_path / "run.pt", 1, resume_ignore=[1])


class _Annealed(PyroModule):
    def __init__(self, beta=1.0):
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(()))
        self.beta = beta

    @pyro_method
    def model(self, x):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(z, self.beta).expand([x.shape[0], 3]).to_event(1),
                        obs=x)

    @pyro_method
    def guide(self, x):
        pyro.sample("z", dist.Normal(self.loc, 1.0))


def test_an_attribute_a_callback_moved_after_the_last_save(tmp_path):
    # the callback runs after each save: what it moves at the last epoch reaches no
    # checkpoint, and a resume in the same process was refused
    path = tmp_path / "run.pt"
    pair = _Annealed()

    def anneal(record):
        pair.beta = 1.0 / (1 + record["epoch"])

    _fit(pair.model, pair.guide, path, 1, callback=anneal)
    assert pair.beta == 0.5
    assert len(_fit(pair.model, pair.guide, path, 2, resume=True, callback=anneal)) == 2
    assert len(_fit(pair.model, pair.guide, path, 3, resume=True, callback=anneal)) == 3
    # beta is a setting that training moves: left out of the checkpoints from then on, so
    # a fresh object (beta as constructed) resumes too, in this process or another
    pair_print = checkpoints.load_checkpoint(path)["fingerprint"]["pair"]
    assert "0.beta" not in pair_print["settings"] and "0.beta" in pair_print["settings_moved"]
    pyro.clear_param_store()
    fresh = _Annealed()
    assert len(_fit(fresh.model, fresh.guide, path, 4, resume=True)) == 4


def test_an_interrupted_run_whose_callback_moved_an_attribute(tmp_path):
    path = tmp_path / "run.pt"
    pair = _Annealed()

    class Stop(Exception):
        pass

    def anneal_then_stop(record):
        pair.beta = 0.25
        raise Stop  # Ctrl-C after the callback moved beta, before the next save

    with pytest.raises(Stop):
        _fit(pair.model, pair.guide, path, 3, callback=anneal_then_stop)
    assert len(checkpoints.load_checkpoint(path)["history"]) == 1
    # only the value training reached is accepted
    pair.beta = 7.0
    with pytest.raises(CheckpointError, match=r"0\.beta: 1\.0 in the checkpoint, 7\.0 now"):
        _fit(pair.model, pair.guide, path, 3, resume=True)
    pair.beta = 0.25
    assert len(_fit(pair.model, pair.guide, path, 3, resume=True)) == 3
    # the moved value stays out of the checkpoints this resume wrote: a new process resumes
    assert "0.beta" not in checkpoints.load_checkpoint(path)["fingerprint"]["pair"]["settings"]
    pyro.clear_param_store()
    fresh = _Annealed()
    assert len(_fit(fresh.model, fresh.guide, path, 4, resume=True)) == 4


# --- old checkpoints, determinism, cost --------------------------------------------------------
def test_a_checkpoint_without_the_new_kinds_of_entries_still_resumes(tmp_path):
    # written before networks, pair functions and the new attribute kinds were recorded
    path = tmp_path / "run.pt"
    _fit(*_function_pair(), path, 1)
    state = checkpoints.load_checkpoint(path)
    settings = state["fingerprint"]["pair"]["settings"]
    assert "decoder.2.p" in settings and "model.scale" in settings
    state["fingerprint"]["pair"]["settings"] = {
        key: value for key, value in settings.items()
        if not key.startswith(("decoder.", "model", "guide"))}
    checkpoints.save_checkpoint(path, state)
    pyro.clear_param_store()
    assert len(_fit(*_function_pair(p=0.3, scale=2.0), path, 2, resume=True)) == 2


_PRINT = """
import enum, functools, sys
import numpy as np, torch
sys.path.insert(0, {root!r})
from inference.training import resume_settings

class Mode(enum.Enum):
    FAST = 1

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = {{"act": torch.nn.ReLU, "p": 0.1, 3: "three"}}
        self.kinds = {{"b", "a", "c", Mode.FAST}}
        self.weights = np.arange(5.0)
        self.link = functools.partial(torch.mul, other=2.0)
        self.mode = Mode.FAST
        self.spec = (torch.nn.Tanh, 0.1, np.float32(0.5), np.bool_(True))
        self.holder = type("Holder", (), {{}})()
        self.fn = lambda v, s=3.0: v * s

def model(x):
    return x * 0.5

print(repr(sorted(resume_settings.settings_fingerprint([Net()], {{"model": model}}).items())))
"""


def test_the_fingerprint_is_the_same_in_every_process():
    root = str(Path(__file__).resolve().parents[2])
    script = _PRINT.format(root=root)
    prints = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "PYTHONHASHSEED": seed})
              for seed in ("1", "2")]
    for done in prints:
        assert done.returncode == 0, done.stderr
    assert prints[0].stdout == prints[1].stdout
    assert "0x" not in prints[0].stdout
    assert "('0.kinds', \"set ['__main__.Mode.FAST', 'a', 'b', 'c']\")" in prints[0].stdout


def test_fingerprinting_the_vae_is_cheap():
    from ppl_models import VAE

    vae = VAE()
    functions = {"model": vae.model, "guide": vae.guide}
    resume_settings.settings_fingerprint([vae], functions)  # warm
    start = time.perf_counter()
    for _ in range(20):
        resume_settings.settings_fingerprint([vae], functions)
    assert (time.perf_counter() - start) / 20 < 0.05
