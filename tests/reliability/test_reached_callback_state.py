"""A callback written as a plain function around a stateful object (a ``KeepBest`` called
from a closure, a logger's method holding one): fit saves the states of the objects the
callback reaches, so a resumed run ends as an uninterrupted one."""

import pyro
import pytest
import torch

from inference import KeepBest, fit
from inference.training.checkpoints import CheckpointError
from ppl_models.linear_gaussian import LinearGaussian

X = LinearGaussian(data_dim=3, latent_dim=1, seed=9).simulate(64, seed=1).detach()


def _train(path, epochs, resume, wrap):
    pyro.clear_param_store()
    model = LinearGaussian(data_dim=3, latent_dim=1, seed=0)
    scores = iter([-5.0, -1.0, -3.0, -4.0, -2.0, -6.0])  # epoch 2 is the best
    keep = KeepBest(model, lambda: next(scores))
    callback = wrap(keep)
    history = fit(model.model, model.guide, X, epochs=epochs, batch_size=32, seed=4, lr=0.05,
                  checkpoint=path, resume=resume, progress=False, callback=callback)
    return keep, history, model


class Logger:
    def __init__(self, keep):
        self.keep, self.lines = keep, []

    def on_epoch(self, record):
        self.lines.append(record["epoch"])
        self.keep(record)


WRAPS = {
    "closure": lambda keep: (lambda record: keep(record)),
    "method of an object holding it": lambda keep: Logger(keep).on_epoch,
}


@pytest.mark.parametrize("wrap", WRAPS.values(), ids=WRAPS)
def test_a_keep_best_behind_a_plain_callback_resumes_with_its_best_epoch(tmp_path, wrap):
    straight, _, straight_model = _train(tmp_path / "a.pt", 4, False, wrap)
    _train(tmp_path / "b.pt", 2, False, wrap)
    # the resumed run's score iterator starts afresh; its epochs 3-4 draw -5.0 and -1.0,
    # worse than epoch 2's -1.0 only when the state was kept: epoch 4 ties, the first stays
    resumed, history, resumed_model = _train(tmp_path / "b.pt", 4, True, wrap)
    assert len(history) == 4
    assert straight.best_epoch == 2 and straight.best_score == -1.0
    assert (resumed.best_epoch, resumed.best_score) == (2, -1.0)
    straight.restore()
    resumed.restore()  # epoch 2's parameters, as in the uninterrupted run
    assert torch.equal(resumed_model.weight, straight_model.weight)


def test_a_checkpoint_of_another_callback_kind_is_refused(tmp_path):
    path = tmp_path / "c.pt"
    _train(path, 2, False, lambda keep: keep)  # the KeepBest itself
    with pytest.raises(CheckpointError, match="holds the state of a callback object, but this "
                                              r"callback reaches 1 \(KeepBest\)"):
        _train(path, 3, True, WRAPS["closure"])
    path = tmp_path / "d.pt"
    _train(path, 2, False, WRAPS["closure"])
    with pytest.raises(CheckpointError, match="states of objects a plain callback reached"):
        _train(path, 3, True, lambda keep: keep)
    # a checkpoint without their state (written before fit saved what a plain callback
    # reaches, or by a run whose callback reached none) resumes with a warning, as it did
    path = tmp_path / "e.pt"
    _train(path, 2, False, lambda keep: (lambda record: None))  # reaches nothing stateful
    with pytest.warns(UserWarning, match=r"holds no state of the KeepBest the callback "
                                         "reaches"):
        keep, history, _ = _train(path, 3, True, WRAPS["closure"])
    assert len(history) == 3 and keep.scored == 1


def test_a_plain_callback_without_state_and_a_generator_are_left_alone(tmp_path):
    generator = torch.Generator().manual_seed(0)
    seen = []

    def callback(record):
        seen.append(float(torch.rand((), generator=generator)))

    pyro.clear_param_store()
    model = LinearGaussian(data_dim=3, latent_dim=1, seed=0)
    fit(model.model, model.guide, X, epochs=2, batch_size=32, checkpoint=tmp_path / "f.pt",
        progress=False, callback=callback)
    assert len(seen) == 2
