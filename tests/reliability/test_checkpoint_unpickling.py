"""A checkpoint describes data; loading one runs no code of the file's choosing.

Before 2026-11-28 (night) checkpoints were read with ``torch.load(weights_only=False)``: a
forged file with a valid header and CRC32 ran any function it named while being loaded.
They are now read by torch's weights-only unpickler, with numpy arrays and torch's and
Pyro's constraint classes allowed beside tensors; a state naming anything else is refused
when it is written (and by ``fit`` before training), and a file naming anything else is
refused unread.
"""

import io
import zlib

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

from inference import fit
from inference.training import checkpoints
from inference.training.checkpoints import CheckpointError, load_checkpoint, save_checkpoint

RAN = []


def _record_call(tag):
    RAN.append(tag)
    return tag


class Payload:
    """Unpickles as a call of :func:`_record_call`: what a forged checkpoint would do."""

    def __reduce__(self):
        return _record_call, ("ran",)


class OwnConstraint(constraints.Constraint):
    """A user's constraint (positive values), with the transform Pyro's param store needs."""

    def check(self, value):
        return value > 0


torch.distributions.transform_to.register(OwnConstraint,
                                          lambda _: torch.distributions.ExpTransform())


def _forged(path, state):
    """Write ``state`` with a valid header and CRC32, as an attacker would."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = checkpoints._HEADER.pack(checkpoints.MAGIC, len(payload), zlib.crc32(payload))
    path.write_bytes(header + payload)


def test_a_forged_checkpoint_runs_nothing_and_is_named(tmp_path):
    path = tmp_path / "forged.pt"
    _forged(path, {"history": [], "x": Payload()})
    RAN.clear()
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} names "
                                              r".*_record_call, which a checkpoint may not"):
        load_checkpoint(path)
    assert RAN == []


def test_a_forged_checkpoint_is_refused_by_resume_before_anything_runs(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(40, 2)

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z.unsqueeze(-1), 1.0).to_event(1), obs=x)

    def guide(x):
        loc = pyro.param("loc", torch.zeros(()))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc, 1.0))

    path = tmp_path / "run.pt"
    _forged(path, {"format": checkpoints.FORMAT, "x": Payload()})
    RAN.clear()
    pyro.clear_param_store()
    with pytest.raises(CheckpointError, match="may not hold"):
        fit(model, guide, x, epochs=2, batch_size=20, checkpoint=path, resume=True,
            progress=False)
    assert RAN == []


def test_what_checkpoints_hold_loads_back_equal(tmp_path):
    """numpy arrays and scalars, plain values, sizes and torch's and Pyro's constraints."""
    path = tmp_path / "run.pt"
    state = {
        "rng": np.random.get_state(), "array": np.arange(6.0).reshape(2, 3),
        "scalars": [np.float32(2.5), np.int64(-3), np.bool_(True)],
        "plain": (1, "s", None, 2.5, {1: b"x"}, [True]), "size": torch.Size([2, 3]),
        "constraints": {"a": constraints.interval(0.01, torch.tensor(10.0)),
                        "b": constraints.independent(constraints.positive, 1),
                        "c": pyro.distributions.constraints.softplus_positive,
                        "d": constraints.lower_cholesky},
    }
    save_checkpoint(path, state)
    back = load_checkpoint(path)
    assert back["rng"][0] == "MT19937" and np.array_equal(back["rng"][1], state["rng"][1])
    assert np.array_equal(back["array"], state["array"])
    assert back["scalars"] == state["scalars"] and back["plain"] == state["plain"]
    assert back["size"] == torch.Size([2, 3])
    interval = back["constraints"]["a"]
    assert isinstance(interval, type(constraints.interval(0.0, 1.0)))
    assert interval.lower_bound == 0.01 and float(interval.upper_bound) == 10.0
    assert back["constraints"]["b"].reinterpreted_batch_ndims == 1
    assert back["constraints"]["b"].base_constraint is not None
    assert type(back["constraints"]["c"]) is type(pyro.distributions.constraints.softplus_positive)


@pytest.mark.parametrize("bad, named", [
    (Payload(), "_record_call"),
    (OwnConstraint(), "OwnConstraint"),
    (np.array([object()], dtype=object), "object"),
])
def test_a_state_no_checkpoint_may_hold_is_refused_before_writing(tmp_path, bad, named):
    path = tmp_path / "run.pt"
    save_checkpoint(path, {"v": 1})
    before = path.read_bytes()
    RAN.clear()
    with pytest.raises(TypeError, match=rf"cannot write the checkpoint {path}: "
                                        rf"state\['extra'\] .*{named}.*may not hold"):
        save_checkpoint(path, {"v": 2, "extra": bad})
    assert path.read_bytes() == before and RAN == []
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]


def test_fit_refuses_a_constraint_of_its_own_before_training(tmp_path):
    """The first checkpoint is written after an epoch: refusing then would lose it."""
    x = torch.randn(40, 2)

    def model(x):
        scale = pyro.param("scale", torch.ones(()), constraint=OwnConstraint())
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(0.0, scale.abs() + 0.1).expand([2]).to_event(1),
                        obs=x)

    def guide(x):
        pass

    steps = []
    pyro.clear_param_store()
    with pytest.raises(TypeError, match=r"state\['param_store'\].*OwnConstraint"):
        fit(model, guide, x, epochs=2, batch_size=20, checkpoint=tmp_path / "run.pt",
            progress=False, callback=steps.append)
    assert steps == [] and not (tmp_path / "run.pt").exists()


class StatefulCallback:
    """A callback whose saved state holds an object of its own class."""

    def __call__(self, record):
        pass

    def get_state(self):
        return {"kept": self}

    def set_state(self, state):
        pass


def test_fit_refuses_a_callback_state_no_checkpoint_may_hold_before_training(tmp_path):
    x = torch.randn(40, 2)

    def model(x):
        loc = pyro.param("loc", torch.zeros(2))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def guide(x):
        pass

    pyro.clear_param_store()
    with pytest.raises(TypeError, match=r"state\['callback'\].*StatefulCallback"):
        fit(model, guide, x, epochs=2, batch_size=20, checkpoint=tmp_path / "run.pt",
            progress=False, callback=StatefulCallback())
    assert not (tmp_path / "run.pt").exists()


@pytest.mark.parametrize("array", [np.array(["start", "stop"]),
                                   np.array(["2026-11-28"], dtype="datetime64[D]"),
                                   np.zeros(2, dtype=[("a", "f4")])],
                         ids=["strings", "dates", "records"])
def test_numpy_arrays_the_reader_refuses_are_not_written(tmp_path, array):
    # they pickle without a global name the check saw, so the file was written and every
    # later load (fit's resume included) refused it: the run's checkpoints were lost
    path = tmp_path / "c.pt"
    with pytest.raises(TypeError, match=r"state\['names'\] \(ndarray\) holds a numpy array of "
                                        r"strings, dates, records or objects"):
        save_checkpoint(path, {"names": array})
    assert not path.exists()
    save_checkpoint(path, {"names": np.arange(3.0)})
    assert load_checkpoint(path)["names"].tolist() == [0.0, 1.0, 2.0]


def test_a_meta_tensor_is_not_written(tmp_path):
    # it was saved and loaded back as a meta tensor: a shape without values
    path = tmp_path / "c.pt"
    with pytest.raises(TypeError, match=r"state\['weights'\] \(list\) holds a meta tensor"):
        save_checkpoint(path, {"weights": [torch.zeros(2), torch.zeros(3, device="meta")]})
    assert not path.exists()
