"""Progress bars of the estimators: shown for long calls (here: at once), never when asked not
to, counting every weight drawn; a flag that is not a bool is refused by name."""

import pytest
import torch

import inference.progress as progress
from inference import bound_sweep, elbo, iwae_bound, log_evidence, log_importance_weights
from ppl_models import LinearGaussian


@pytest.fixture
def lg():
    return LinearGaussian(data_dim=2, latent_dim=1, seed=0)


class Recorded(progress.tqdm):
    """tqdm that remembers each bar: ``(desc, count at close, total, disabled)``."""

    bars: list = []

    def __init__(self, *args, **kwargs):
        self.asked = (kwargs["desc"], kwargs["total"], kwargs["disable"])
        super().__init__(*args, **kwargs)

    def update(self, n=1):
        self.counted = getattr(self, "counted", 0) + n
        return super().update(n)

    def close(self):
        if not getattr(self, "recorded", False):  # tqdm closes again when collected
            self.recorded = True
            desc, total, disable = self.asked
            Recorded.bars.append((desc, getattr(self, "counted", 0), total, disable))
        super().close()


@pytest.fixture
def recorded(monkeypatch):
    monkeypatch.setattr(progress, "DELAY_SECONDS", 0.0)
    monkeypatch.setattr(progress, "tqdm", Recorded)
    Recorded.bars = []
    return Recorded.bars


CALLS = {
    "iwae_bound": lambda lg, x, **k: iwae_bound(lg.model, lg.guide, x, num_samples=30,
                                                chunk_size=7, **k),
    "elbo": lambda lg, x, **k: elbo(lg.model, lg.guide, x, num_samples=30, chunk_size=7, **k),
    "log_importance_weights": lambda lg, x, **k: log_importance_weights(
        lg.model, lg.guide, x, num_samples=30, chunk_size=7, **k),
    "log_evidence": lambda lg, x, **k: log_evidence(lg.model, lg.guide, x, num_samples=30,
                                                    batch_size=2, chunk_size=7, **k),
    "bound_sweep": lambda lg, x, **k: bound_sweep(lg.model, lg.guide, x, num_samples=[1, 30],
                                                  repeats=2, chunk_size=7,
                                                  data_batch_size=2, **k),
}


@pytest.mark.parametrize("name", CALLS)
def test_a_long_call_shows_its_bar_and_progress_false_hides_it(lg, recorded, capsys, name):
    x = torch.randn(5, 2)
    CALLS[name](lg, x)
    assert name in capsys.readouterr().err  # drawn (at once: no delay here)
    # every weight counted: 30 particles x 5 datapoints (x 2 repeats for the sweep)
    total = 300 if name == "bound_sweep" else 150
    assert recorded == [(name, total, total, False)]
    CALLS[name](lg, x, progress=False)
    assert capsys.readouterr().err == ""
    assert recorded[1:] == [(name, total, total, True)]


@pytest.mark.parametrize("name", CALLS)
def test_a_short_call_stays_quiet(lg, capsys, name):
    CALLS[name](lg, torch.randn(5, 2))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("bad", [0, 1, "no", None])
def test_progress_must_be_a_bool(lg, bad):
    for call in CALLS.values():
        with pytest.raises(TypeError, match=f"progress must be True or False, got {bad!r}"):
            call(lg, torch.randn(5, 2), progress=bad)


def test_the_annealing_and_local_fits_count_their_steps(lg, recorded):
    from inference import ais_log_evidence, amortization_gap, fit_local_guide
    from inference.evidence import LocalGaussianGuide

    x = torch.randn(3, 2)
    ais_log_evidence(lg.model, lg.guide, x, num_chains=4, num_steps=6)
    fit_local_guide(lg.model, LocalGaussianGuide(lg.guide, x), x, num_steps=5)
    amortization_gap(lg.model, lg.guide, x, num_steps=4, num_eval_samples=10)
    names = [bar[0] for bar in recorded]
    assert names[0] == "ais_log_evidence" and names[1:] == ["fit_local_guide"] * 2, recorded
    assert all(count == total and not off for _, count, total, off in recorded), recorded
    assert [total for _, _, total, _ in recorded[1:]] == [5, 4]
    for call in (lambda: ais_log_evidence(lg.model, lg.guide, x, progress="yes"),
                 lambda: fit_local_guide(lg.model, LocalGaussianGuide(lg.guide, x), x,
                                         progress=1),
                 lambda: amortization_gap(lg.model, lg.guide, x, progress=None)):
        with pytest.raises(TypeError, match="progress must be True or False"):
            call()
