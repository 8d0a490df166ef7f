"""Resume compares the settings that Pyro's handlers and module globals hold for the pair.

Each refusal reproduces a resume that went on silently with another model: the
``poutine.reparam`` config's objects (``LocScaleReparam(centered=...)``), ``poutine.condition``'s
data (the docs' recipe for a fixed global latent), ``poutine.block``'s hide and expose lists,
and a module-global distribution or config object the model uses were not in the settings
fingerprint (``resume_settings.settings_fingerprint``). Each wrapper resumed unchanged is
still accepted, and the record stays the same in every process.
"""

import ast
import dataclasses
import logging
import os
import random
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import config_enumerate
from pyro.infer.autoguide import AutoNormal
from pyro.infer.reparam import AutoReparam, LocScaleReparam

from inference import fit
from inference.training import resume_settings
from inference.training.checkpoints import CheckpointError

REFUSED = "other settings of the model or guide: "
_DATA = torch.randn(16, generator=torch.Generator().manual_seed(5)) + 2.0


def _hierarchical(x):
    """mu, tau global; z per datapoint (the eight-schools shape)."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(mu, tau))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def _fit(model, path, epochs, resume=False):
    """fit ``model`` with a fresh AutoNormal, as a new process would build the pair."""
    pyro.clear_param_store()
    return fit(model, AutoNormal(model), _DATA, epochs=epochs, batch_size=16, shuffle=False,
               seed=1, lr=0.01, checkpoint=path, resume=resume, progress=False)


def _refused_then_resumed(tmp_path, build, first, changed, named):
    """A checkpoint of ``build(first)`` is refused for ``build(changed)``, naming ``named``,
    and resumed by a new ``build(first)``."""
    path = tmp_path / "run.pt"
    _fit(build(first), path, 1)
    with pytest.raises(CheckpointError, match=REFUSED + ".*" + named):
        _fit(build(changed), path, 2, resume=True)
    assert len(_fit(build(first), path, 2, resume=True)) == 2


# --- handlers around the model ------------------------------------------------------------------
def _reparam(centered):
    return poutine.reparam(_hierarchical, config={"z": LocScaleReparam(centered=centered)})


@pytest.mark.parametrize("first, changed", [(0.0, 0.5), (0.25, 0.75), (0.5, 0.0)])
def test_a_reparam_configs_objects(tmp_path, first, changed):
    named = (rf"model\.msngr\.config\['z'\]\.centered: {first} in the checkpoint, "
             rf"{changed} now")
    _refused_then_resumed(tmp_path, _reparam, first, changed, named)


def _condition(tau):
    return poutine.condition(_hierarchical, data={"tau": torch.tensor(tau)})


@pytest.mark.parametrize("first, changed", [(1.0, 2.0), (1.0, 1.0 + 1e-6)])
def test_conditioned_values(tmp_path, first, changed):
    _refused_then_resumed(tmp_path, _condition, first, changed,
                          r"model\.args\[0\]\.data\['tau'\]: 'tensor \[\] torch.float32")


def _condition_several(last):
    values = torch.linspace(0.0, 1.0, 16)
    values[-1] = last
    return poutine.condition(_hierarchical, data={"z": values})


def test_one_changed_value_of_a_conditioned_vector(tmp_path):
    _refused_then_resumed(tmp_path, _condition_several, 1.0, 0.5,
                          r"model\.args\[0\]\.data\['z'\]: 'tensor \[16\]")


def _fixed_global(mu):
    """The docs' recipe for a fixed global latent: condition it, then hide it."""
    return poutine.block(poutine.condition(_hierarchical, data={"mu": torch.tensor(mu)}),
                         hide=["mu"])


def test_a_fixed_global_latent(tmp_path):
    _refused_then_resumed(tmp_path, _fixed_global, 0.0, 3.0,
                          r"model\.args\[1\]\.args\[0\]\.data\['mu'\]")


def _block(hide_or_expose):
    kind, sites = hide_or_expose
    conditioned = poutine.condition(_hierarchical, data={"mu": torch.tensor(0.0),
                                                          "tau": torch.tensor(1.0)})
    return poutine.block(conditioned, **{kind: sites})


@pytest.mark.parametrize("first, changed", [
    (("hide", ["mu"]), ("hide", ["tau"])),
    (("hide", ["mu"]), ("hide", ["mu", "tau"])),
    (("expose", ["z", "x", "data"]), ("expose", ["z", "x", "data", "mu"])),
])
def test_blocked_sites(tmp_path, first, changed):
    _refused_then_resumed(tmp_path, _block, first, changed, r"model\.args\[0\]\.hide_fn\.args")


def _nested(centered):
    """reparam(block(condition(model))): three handlers deep."""
    return poutine.reparam(_fixed_global(0.0), config={"z": LocScaleReparam(centered=centered)})


def test_handlers_nested_three_deep(tmp_path):
    _refused_then_resumed(tmp_path, _nested, 0.0, 0.5,
                          r"model\.msngr\.config\['z'\]\.centered: 0\.0 in the checkpoint")


def _record(model):
    return resume_settings.settings_fingerprint([], {"model": model})


@pytest.mark.parametrize("wrap, first, changed, named", [
    (lambda default: config_enumerate(_hierarchical, default=default), "parallel",
     "sequential", r"model\.args\[0\]\.config_fn\.args: \('parallel'"),
    (lambda mu: poutine.do(_hierarchical, data={"mu": torch.tensor(mu)}), 0.0, 1.0,
     r"model\.args\[0\]\.data\['mu'\]: 'tensor \[\] "),
    (lambda mu: poutine.substitute(_hierarchical, data={"mu": torch.tensor(mu)}), 0.0, 1.0,
     r"model\.args\[0\]\.data\['mu'\]: 'tensor \[\] "),
    (lambda s: poutine.lift(_hierarchical, prior={"w": dist.Normal(torch.zeros(2), s)
                                                  .to_event(1)}), 1.0, 2.0,
     r"model\.args\[0\]\.prior\['w'\]\.base_dist\.scale: 'tensor \[2\] "),
])
def test_other_handlers_settings(wrap, first, changed, named):
    described = resume_settings.changed_settings(_record(wrap(first)), _record(wrap(changed)))
    assert len(described) == 1 and re.match(named, described[0]), described
    assert resume_settings.changed_settings(_record(wrap(first)), _record(wrap(first))) == []


def _auto_reparam(_):
    return poutine.reparam(_hierarchical, config=AutoReparam())


def _config_function(centered):
    return poutine.reparam(_hierarchical, config=lambda site: (
        LocScaleReparam(centered=centered) if site["name"] == "z" else None))


@pytest.mark.parametrize("build, setting", [
    (_reparam, 0.5), (_condition, 1.0), (_fixed_global, 0.0), (_block, ("hide", ["mu"])),
    (_nested, 0.5), (_auto_reparam, None), (_config_function, 0.5),
])
def test_the_same_wrapped_pair_resumes(tmp_path, build, setting):
    path = tmp_path / "run.pt"
    model = build(setting)
    _fit(model, path, 1)
    assert len(_fit(model, path, 2, resume=True)) == 2  # the same objects, after they ran
    assert len(_fit(build(setting), path, 3, resume=True)) == 3  # built anew


# --- objects in module globals ------------------------------------------------------------------
PRIOR = dist.Normal(0.0, 2.0)


@dataclasses.dataclass
class _Settings:
    prior_scale: float = 2.0
    noise: torch.Tensor = dataclasses.field(default_factory=lambda: torch.tensor(1.0))


SETTINGS = _Settings()
LOG = logging.getLogger("test_resume_pair_settings")
RANDOM = random.Random(0)


def _model_with_global_prior(x):
    LOG.debug("model called")  # a logger is no setting
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", PRIOR)
        pyro.sample("x", dist.Normal(z, SETTINGS.noise * SETTINGS.prior_scale), obs=x)


def _with_globals(prior=None, settings=None):
    """The model, with the globals it uses set as a new process of the script sets them."""
    globals()["PRIOR"] = prior if prior is not None else dist.Normal(0.0, 2.0)
    globals()["SETTINGS"] = settings if settings is not None else _Settings()
    return _model_with_global_prior


@pytest.fixture
def restore_globals():
    yield
    _with_globals()


@pytest.mark.parametrize("changed, named", [
    ({"prior": dist.Normal(0.0, 5.0)}, r"model\.PRIOR\.scale: 'tensor \[\]"),
    ({"prior": dist.Normal(1.0, 2.0)}, r"model\.PRIOR\.loc: 'tensor \[\]"),
    ({"prior": dist.Laplace(0.0, 2.0)}, r"model\.PRIOR\.class: 'Normal' in the checkpoint, "
                                        r"'Laplace' now"),
    ({"prior": dist.Normal(0.0, 2.0).expand([16])}, r"model\.PRIOR"),
    ({"settings": _Settings(prior_scale=3.0)},
     r"model\.SETTINGS\.prior_scale: 2\.0 in the checkpoint, 3\.0 now"),
    ({"settings": _Settings(noise=torch.tensor(0.5))}, r"model\.SETTINGS\.noise"),
])
def test_objects_in_module_globals(tmp_path, restore_globals, changed, named):
    path = tmp_path / "run.pt"
    _fit(_with_globals(), path, 1)
    with pytest.raises(CheckpointError, match=REFUSED + ".*" + named):
        _fit(_with_globals(**changed), path, 2, resume=True)
    assert len(_fit(_with_globals(), path, 2, resume=True)) == 2


def _global_record(prior):
    globals()["PRIOR"] = prior
    return resume_settings.settings_fingerprint([], {"model": _model_with_global_prior})


@pytest.mark.parametrize("prior", [
    lambda scale: dist.LogNormal(0.0, scale),  # a transformed distribution: base_dist.scale
    lambda scale: dist.Normal(0.0, scale).mask(False),  # a MaskedDistribution: base_dist
    lambda scale: dist.Normal(torch.zeros(2), scale).to_event(1),  # Independent: base_dist
])
def test_nested_distributions_in_module_globals(restore_globals, prior):
    changed = resume_settings.changed_settings(_global_record(prior(2.0)),
                                               _global_record(prior(5.0)))
    assert changed and all(".base_dist.scale: 'tensor" in line for line in changed)
    assert resume_settings.changed_settings(_global_record(prior(2.0)),
                                            _global_record(prior(2.0))) == []


def _model_logging_through(log, generator):
    def model(x):
        log.debug("jitter %s", generator.random())
        pyro.sample("z", dist.Normal(0.0, 1.0))

    return model


def test_loggers_and_random_generators_are_run_state(restore_globals):
    record = _global_record(dist.Normal(0.0, 2.0))
    assert not any(path.startswith(("model.LOG", "model.RANDOM")) for path in record)
    closure_model = _model_logging_through(LOG, RANDOM)
    in_closure = resume_settings.settings_fingerprint([], {"model": closure_model})
    LOG.setLevel(logging.DEBUG)  # a script run with --verbose
    closure_model(_DATA)
    try:
        assert _global_record(dist.Normal(0.0, 2.0)) == record
        assert resume_settings.settings_fingerprint([], {"model": closure_model}) == in_closure
    finally:
        LOG.setLevel(logging.NOTSET)


def _sub_model(x, scale):
    pyro.sample("x", dist.Normal(0.0, scale), obs=x)


SUB_MODEL = poutine.scale(_sub_model, scale=0.5)


def _model_calling_a_global_handler(x):
    with pyro.plate("data", x.shape[0]):
        SUB_MODEL(x, 2.0)


def test_a_global_handler_around_a_function_of_the_module():
    def record(scale):
        globals()["SUB_MODEL"] = poutine.scale(_sub_model, scale=scale)
        return resume_settings.settings_fingerprint([], {"model": _model_calling_a_global_handler})

    try:
        assert resume_settings.changed_settings(record(0.5), record(0.25)) == [
            "model.SUB_MODEL.args[0].scale: 0.5 in the checkpoint, 0.25 now"]
        assert resume_settings.changed_settings(record(0.5), record(0.5)) == []
    finally:
        globals()["SUB_MODEL"] = poutine.scale(_sub_model, scale=0.5)


# --- the record stays cheap and the same in every process ---------------------------------------
_PRINT = """
import sys
import torch, pyro, pyro.distributions as dist
from pyro import poutine
from pyro.infer import config_enumerate
from pyro.infer.autoguide import AutoNormal
from pyro.infer.reparam import AutoReparam, LocScaleReparam
sys.path.insert(0, {root!r})
from inference.training import resume_settings

PRIOR = dist.Normal(0.0, 2.0)

def model(x):
    mu = pyro.sample("mu", PRIOR)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(mu, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)

wrapped = poutine.reparam(
    poutine.block(poutine.condition(model, data={{"mu": torch.tensor(0.5)}}), hide=["mu"]),
    config={{"z": LocScaleReparam(centered=0.5)}})
guide = AutoNormal(wrapped)
record = resume_settings.settings_fingerprint([guide], {{"model": wrapped, "guide": guide}})
print(repr(sorted(record.items())))
"""


def test_the_handlers_record_is_the_same_in_every_process():
    root = str(Path(__file__).resolve().parents[2])
    prints = [subprocess.run([sys.executable, "-c", _PRINT.format(root=root)],
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PYTHONHASHSEED": seed})
              for seed in ("1", "2")]
    for done in prints:
        assert done.returncode == 0, done.stderr
    assert prints[0].stdout == prints[1].stdout
    assert "0x" not in prints[0].stdout and " at " not in prints[0].stdout
    record = dict(ast.literal_eval(prints[0].stdout))
    reparam = "0._model[0].args[1]."  # the AutoNormal's model: InitMessenger(reparam(...))
    assert record[reparam + "msngr.config['z'].centered"] == 0.5
    assert record[reparam + "fn.args[0].hide_fn.args"] == ([], [], ["mu"], [], False)
    assert record[reparam + "fn.args[1].args[0].data['mu']"].startswith("tensor [] ")
    assert record[reparam + "fn.args[1].args[1].PRIOR.scale"].startswith("tensor [] ")


def test_fingerprinting_wrapped_pairs_is_cheap():
    wrapped = _nested(0.5)
    guide = AutoNormal(wrapped)
    functions = {"model": wrapped, "guide": guide}
    resume_settings.settings_fingerprint([guide], functions)  # warm
    start = time.perf_counter()
    for _ in range(20):
        resume_settings.settings_fingerprint([guide], functions)
    assert (time.perf_counter() - start) / 20 < 0.05


def test_a_namespace_in_a_module_global():
    def record(scale):
        namespace = {"__name__": "user_script", "pyro": pyro, "dist": dist,
                     "CONFIG": types.SimpleNamespace(prior_scale=scale, name="run")}
        exec("def model(x):\n"
             "    pyro.sample('z', dist.Normal(0.0, CONFIG.prior_scale))\n", namespace)
        return resume_settings.settings_fingerprint([], {"model": namespace["model"]})

    assert resume_settings.changed_settings(record(2.0), record(5.0)) == [
        "model.CONFIG.prior_scale: 2.0 in the checkpoint, 5.0 now"]
