"""KeepBest: best-epoch selection on a validation split."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import fit
from inference.training.early_stopping import KeepBest
from ppl_models.data import load_images
from ppl_models.pixelcnn import PixelCNN


def test_restores_the_parameters_of_the_best_scored_epoch_and_the_training_flags():
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Dropout(0.5))
    scores = iter([1.0, 3.0, 2.0, 3.0])  # a tie later does not replace the first best
    modes = []

    def score():
        modes.append(net.training)
        return next(scores)

    keep = KeepBest(net, score)
    snapshots = []
    for epoch in range(1, 5):
        with torch.no_grad():
            net[0].weight.add_(1.0)  # stands for an epoch of training
        snapshots.append(net[0].weight.clone())
        record = {"epoch": epoch}
        keep(record)
        assert record["valid_score"] == [1.0, 3.0, 2.0, 3.0][epoch - 1]
    assert modes == [False] * 4, "scored in evaluation mode (dropout off)"
    assert net.training and net[1].training, "training flags restored after scoring"
    keep.restore()
    assert keep.best_epoch == 2 and keep.best_score == 3.0
    assert torch.equal(net[0].weight, snapshots[1])


def test_with_fit_the_restored_model_scores_the_best_recorded_value():
    data = load_images("digits").binarized(0)
    train, valid = data.train.images[:128], data.valid.images[:64]
    torch.manual_seed(0)
    m = PixelCNN((1, 8, 8), channels=8, num_blocks=1, first_kernel_size=3, dropout=0.2)
    keep = KeepBest(m, lambda: float(m.log_prob(valid).mean()))
    history = fit(m.model, m.guide, train, epochs=3, batch_size=32, lr=3e-3, progress=False,
                  callback=keep)
    recorded = [r["valid_score"] for r in history]
    assert keep.best_score == max(recorded) and keep.best_epoch == 1 + recorded.index(max(recorded))
    keep.restore()
    m.eval()
    with torch.no_grad():
        # the same weights on the same images in evaluation mode: equal to float rounding
        assert abs(float(m.log_prob(valid).mean()) - keep.best_score) < 1e-5


def test_bad_use_raises_clear_errors():
    net = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="no epoch was scored"):
        KeepBest(net, lambda: 0.0).restore()
    with pytest.raises(ValueError, match="is NaN"):
        KeepBest(net, lambda: float("nan"))({"epoch": 1})
    with pytest.raises(ValueError, match="nn.Module"):
        KeepBest([net, "decoder"], lambda: 0.0)
    with pytest.raises(ValueError, match="callable"):
        KeepBest(net, 3.0)
    keep = KeepBest(net, lambda: float("-inf"))
    keep({"epoch": 1})
    keep({"epoch": 2})
    with pytest.raises(ValueError, match="every score of the 2 epochs scored was -inf"):
        keep.restore()


def test_state_round_trip_and_a_state_of_other_modules():
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 2)
    keep = KeepBest(net, lambda: 1.0)
    keep({"epoch": 1})
    best = net.weight.detach().clone()
    other = KeepBest(torch.nn.Linear(2, 2), lambda: 0.0)
    other.set_state(keep.get_state())
    other({"epoch": 2})  # scores lower: epoch 1 stays the best
    other.restore()
    assert (other.best_epoch, other.best_score, other.scored) == (1, 1.0, 2)
    assert torch.equal(other.modules[0].weight, best)
    with pytest.raises(ValueError, match="do not fit the modules"):
        KeepBest(torch.nn.Linear(2, 3), lambda: 0.0).set_state(keep.get_state())


def test_restore_brings_back_the_pairs_pyro_params_with_the_networks():
    # a plain-function pair: a pyro.module network plus pyro.params outside it; restore()
    # used to bring back the best epoch's network beside the last epoch's pyro.params, a
    # pair no epoch had. A pair of pyro.params only needs no module at all.
    torch.manual_seed(0)
    x = torch.randn(60, 4)
    decoder = torch.nn.Linear(1, 4)

    def model(x):
        pyro.module("decoder", decoder)
        scale = pyro.param("obs_scale", torch.ones(4), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(decoder(z[:, None]), scale).to_event(1), obs=x)

    def guide(x):
        weights = pyro.param("weights", torch.zeros(4))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ weights, 0.5))

    snapshots = {}

    def record(keep):
        def callback(entry):
            snapshots[entry["epoch"]] = {k: v.detach().clone()
                                         for k, v in pyro.get_param_store().items()}
            keep(entry)
        return callback

    for modules in ([decoder], []):
        pyro.clear_param_store()
        scores = iter([3.0, 1.0, 2.0, 0.0])  # best: epoch 1
        keep = KeepBest(modules, lambda: next(scores))
        fit(model, guide, x, epochs=4, batch_size=20, lr=0.1, callback=record(keep),
            progress=False)
        keep.restore()
        assert keep.best_epoch == 1
        for name, value in pyro.get_param_store().items():
            assert torch.equal(value.detach(), snapshots[1][name]), name
            assert not torch.equal(value.detach(), snapshots[4][name]), name


ENCODER = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8),
                              torch.nn.Dropout(0.5), torch.nn.Linear(8, 2))


def _plain_pair():
    """A plain-function pair whose guide network (batch norm, dropout) lives in a global."""
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.expand(-1, 4), 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", ENCODER)
        loc, log_scale = ENCODER(x).split(1, -1)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))
    return model, guide


def test_a_plain_function_pairs_networks_are_scored_in_evaluation_mode_and_restored_whole():
    # KeepBest([]) scored a pyro.module network in training mode (dropout on, batch norm
    # moving its running statistics) and restored its weights without its running
    # statistics: the restored pair was one no epoch had
    from inference import elbo

    pyro.clear_param_store()
    torch.manual_seed(0)
    model, guide = _plain_pair()
    x = torch.randn(64, 4) * 3 + 1
    modes = []

    def score():
        modes.append(ENCODER.training)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return float(elbo(model, guide, x[:16], num_samples=1).mean())

    keep = KeepBest([], score)
    snapshots = []

    def callback(record):
        keep(record)
        snapshots.append([t.detach().clone() for t in (*ENCODER.parameters(), *ENCODER.buffers())])

    fit(model, guide, x, epochs=4, batch_size=16, lr=0.05, progress=False, callback=callback)
    assert modes == [False] * 4 and ENCODER.training
    with torch.no_grad():
        ENCODER[1].running_mean.add_(5.0)  # stands for more training
        for p in ENCODER.parameters():
            p.add_(1.0)
    keep.restore()
    kept = snapshots[keep.best_epoch - 1]
    assert all(torch.equal(a, b) for a, b in zip(kept, (*ENCODER.parameters(), *ENCODER.buffers())))
    ENCODER.eval()
    assert score() == pytest.approx(keep.best_score, abs=1e-5)
    ENCODER.train()


def test_a_second_fit_run_starts_fresh_instead_of_restoring_the_first_runs_parameters():
    """Reused across two fit runs, KeepBest used to keep run 1's best score, so run 2's
    (worse) epochs were never kept and restore() loaded run 1's weights into run 2's model."""
    pyro.clear_param_store()
    net = torch.nn.Linear(1, 1, bias=False)
    x = torch.zeros(16, 1)

    def model(x):
        pyro.module("net", net)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(net(x) + net.weight.squeeze(), 1.0).to_event(1), obs=x)

    def guide(x):
        pass

    scores = iter([5.0, 6.0, 1.0, 2.0, 0.5])  # run 2 scores below run 1's best
    keep = KeepBest(net, lambda: next(scores))
    fit(model, guide, x, epochs=2, batch_size=16, lr=1e-2, progress=False, callback=keep)
    assert keep.best_epoch == 2 and keep.best_score == 6.0
    with torch.no_grad():
        net.weight.fill_(3.0)  # a second, separate run from other weights
    history = fit(model, guide, x, epochs=3, batch_size=16, lr=1e-2, progress=False,
                  callback=keep)
    assert [r["valid_score"] for r in history] == [1.0, 2.0, 0.5]
    assert keep.best_epoch == 2 and keep.best_score == 2.0 and keep.scored == 3
    after_epoch_2 = keep.get_state()["best_state"][0]["weight"]
    keep.restore()
    assert torch.equal(net.weight, after_epoch_2)
    assert abs(float(net.weight.detach()) - 3.0) < 0.1, "run 2's weights, not run 1's"


def test_a_score_of_plus_infinity_is_refused_naming_the_score_and_epoch():
    def degenerate():
        return float("inf")

    keep = KeepBest(torch.nn.Linear(2, 2), degenerate)
    with pytest.raises(ValueError, match=r"epoch 3 is \+inf \(score=degenerate\)"):
        keep({"epoch": 3})
    assert keep.best_epoch is None and keep.scored == 0
    keep = KeepBest(torch.nn.Linear(2, 2), lambda: torch.tensor(-float("inf")))
    keep({"epoch": 1})  # -inf is the worst score, not an error
    assert keep.scored == 1 and keep.best_epoch is None
