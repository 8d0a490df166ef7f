"""fit refuses seeds it cannot use and flags that are not bools, naming them before any work.

Before: seed=2**32 or 2**64 failed inside NumPy or torch after torch's and Python's
generators were already reseeded, numpy.int64(5) failed in Python's ``random.seed``;
shuffle="no" shuffled, progress="x" trained, mixed_precision="yes" failed at the first step
in torch; and a refused call with checkpoint="new/dir/a.pt" still made the folders and the
lock file.
"""

import random

import numpy as np
import pyro
import pytest
import torch

from inference import fit
from ppl_models import LinearGaussian


def _fit(pair, **kwargs):
    model, x = pair
    kwargs.setdefault("epochs", 1)
    return fit(model.model, model.guide, x, batch_size=32, progress=kwargs.pop("progress", False),
               **kwargs)


@pytest.mark.parametrize("seed", [2**32, 2**63, 2**64, np.uint64(2**63)])
def test_a_seed_numpy_cannot_take_is_refused_before_any_seeding(pair, seed):
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    calls = []
    with pytest.raises(ValueError, match=r"seed must be an integer in 0\.\.2\*\*32 - 1"):
        _fit(pair, seed=seed, callback=calls.append)
    assert calls == []
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == python_state


@pytest.mark.parametrize("seed", [5, 2**32 - 1])
def test_numpy_integer_seeds_are_accepted(pair, seed):
    x = pair[1]
    losses = []
    for given in (np.int64(seed), seed):
        pyro.clear_param_store()
        model = LinearGaussian(data_dim=3, latent_dim=1, seed=0)
        losses.append([r["train_loss"] for r in _fit((model, x), epochs=2, seed=given)])
    assert losses[0] == losses[1]


@pytest.mark.parametrize("name,value", [("shuffle", "no"), ("shuffle", None),
                                        ("mixed_precision", "yes"), ("progress", "x"),
                                        ("distributed", "x"), ("resume", 1)])
def test_a_flag_must_be_a_bool(pair, name, value):
    calls = []
    with pytest.raises(TypeError, match=rf"{name} must be True or False, got {value!r}"):
        _fit(pair, callback=calls.append, **{name: value})
    assert calls == []


@pytest.mark.parametrize("bad", [{"epochs": -1}, {"epochs": 10**30}, {"epochs": 2**63},
                                 {"loss": "elbow"}, {"shuffle": "no"},
                                 {"data": torch.full((4, 3), float("nan"))}])
def test_a_refused_call_leaves_no_folder_or_lock(pair, tmp_path, bad):
    path = tmp_path / "new" / "dir" / "a.pt"
    model, x = pair
    data = bad.pop("data", x)
    with pytest.raises((ValueError, TypeError)):
        fit(model.model, model.guide, data, checkpoint=path, progress=False, **bad)
    assert list(tmp_path.iterdir()) == []


def test_per_datapoint_params_under_minibatches_are_explained():
    # a guide with one pyro.param row per datapoint, sized on all 6, fails on fit's first
    # minibatch of 3 inside Pyro ("Shape mismatch inside plate('data') ... 3 vs 6"); the
    # note says why and how to pass the indices
    import pyro.distributions as dist
    from torch.distributions import constraints

    x = torch.tensor([0.0, 1.0, 3.0, 7.0, 2.0, 12.0])

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Gamma(torch.full((len(x),), 2.0), 0.5))
            pyro.sample("x", dist.Poisson(z), obs=x)

    def guide(x):
        loc = pyro.param("loc", torch.zeros(6))
        scale = pyro.param("scale", torch.full((6,), 0.5), constraint=constraints.positive)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.LogNormal(loc, scale))

    pyro.clear_param_store()
    with pytest.raises(ValueError, match="Shape mismatch") as error:
        fit(model, guide, x, batch_size=3, epochs=1, progress=False)
    notes = " ".join(getattr(error.value, "__notes__", []))
    assert "the first 3 of 6 datapoints" in notes
    assert "pyro.param with one row per datapoint (6 rows" in notes
    assert "torch.arange(N)" in notes


# --- Pyro idioms that fit's own minibatch scaling turned into another objective --------------
def _conjugate_pair():
    """z ~ N(0, 1), x | z ~ N(z, 0.5); guide N(a x, c)."""
    import pyro.distributions as dist
    from torch.distributions import constraints

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(x)), 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(x):
        a = pyro.param("a", torch.tensor(0.0))
        c = pyro.param("c", torch.tensor(1.0), constraint=constraints.positive)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(a * x, c))

    return model, guide


def test_renyi_elbo_under_minibatches_is_refused():
    # its log-mean-exp over particles of the whole minibatch's weight, scaled by N / B, bounds
    # nothing: it trained a posterior 4 times too wide, its loss below -log p(x)
    from inference import PairError

    model, guide = _conjugate_pair()
    x = torch.randn(40)
    pyro.clear_param_store()
    with pytest.raises(PairError, match=r"RenyiELBO takes the log-mean-exp.*loss='iwae'"):
        fit(model, guide, x, batch_size=10, epochs=1, progress=False,
            loss=pyro.infer.RenyiELBO(alpha=0.0, num_particles=4))
    pyro.clear_param_store()  # the whole data in one batch: no scaling, Pyro's own objective
    fit(model, guide, x, batch_size=40, epochs=1, progress=False,
        loss=pyro.infer.RenyiELBO(alpha=0.0, num_particles=4))


def test_free_bits_with_an_autoguide_is_refused():
    # the AutoGuide's auxiliary draw carries log q: left out, the posterior collapsed (scale
    # 0.017 against 0.447)
    from pyro.infer.autoguide import AutoNormal

    from inference import FreeBitsELBO, PairError

    model, _ = _conjugate_pair()
    pyro.clear_param_store()
    with pytest.raises(PairError, match=r"auxiliary site\(s\) 'z_unconstrained'.*FreeBitsELBO"):
        fit(model, AutoNormal(model), torch.randn(8), loss=FreeBitsELBO(0.0), epochs=1,
            shuffle=False, progress=False)


def test_a_hand_written_minibatch_scale_is_warned_about():
    # Pyro's idiom poutine.scale(scale=N / B) under fit's own N / B: counted twice
    import pyro.distributions as dist

    x = torch.randn(40)

    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)), pyro.poutine.scale(scale=40 / len(x)):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(x):
        loc = pyro.param("loc", torch.tensor(0.0))
        pyro.sample("mu", dist.Normal(loc, 0.1))

    pyro.clear_param_store()
    with pytest.warns(UserWarning, match=r"site\(s\) 'x' carry a scale of their own equal "
                                         r"to N / batch_size = 4"):
        fit(model, guide, x, batch_size=10, epochs=1, progress=False)


def test_rows_indexed_by_a_minibatch_plates_own_subsample_are_warned_about():
    # plate("data", len(x), subsample_size=B) as i: i counts positions in fit's minibatch, so
    # locs[i] trained rows 0..19 on every datapoint and never rows 20..39
    import pyro.distributions as dist

    x = torch.randn(40)

    def model(x):
        with pyro.plate("data", len(x), subsample_size=10) as i:
            z = pyro.sample("z", dist.Normal(torch.zeros(len(i)), 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x[i])

    def guide(x):
        locs = pyro.param("locs", torch.zeros(40))
        with pyro.plate("data", len(x), subsample_size=10) as i:
            pyro.sample("z", dist.Normal(locs[i], 0.5))

    pyro.clear_param_store()
    with pytest.warns(UserWarning, match=r"the guide's 'locs' have 40 rows, one per datapoint"):
        fit(model, guide, x, batch_size=20, epochs=1, progress=False)


def test_a_pyro_module_without_pyro_method_is_told_why_nothing_trains():
    # "neither the model nor the guide uses a parameter" while the guide plainly used self.a
    import pyro.distributions as dist
    from pyro.nn import PyroModule, PyroParam

    from inference import PairError

    class Pair(PyroModule):
        def __init__(self):
            super().__init__()
            self.a = PyroParam(torch.tensor(0.5))

        def model(self, x):
            with pyro.plate("data", len(x)):
                z = pyro.sample("z", dist.Normal(torch.zeros(len(x)), 1.0))
                pyro.sample("x", dist.Normal(z, 1.0), obs=x)

        def guide(self, x):
            with pyro.plate("data", len(x)):
                pyro.sample("z", dist.Normal(self.a * x, 1.0))

    pair = Pair()
    pyro.clear_param_store()
    with pytest.raises(PairError, match=r"nothing to train; the model and guide are methods of a "
                                        r"PyroModule .* @pyro_method"):
        fit(pair.model, pair.guide, torch.randn(6), epochs=1, progress=False)
