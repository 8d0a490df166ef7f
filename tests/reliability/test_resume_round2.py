"""A resumed run equals the uninterrupted one bit for bit, also where the pair or its loss
keeps state that the first minibatch does not show (round 2 of the training probe)."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import fit
from inference.training import checkpoints
from inference.training.checkpoints import CheckpointError

NUM_DATA = 30


def _store() -> dict:
    """The param store's values (constrained), copied."""
    return {name: value.detach().clone() for name, value in pyro.get_param_store().items()}


def _resumed_equals_uninterrupted(model, guide, data, path, epochs=4, stop=2, **kwargs):
    """Train ``epochs`` at once, then ``stop`` epochs into ``path`` and the rest after a
    cleared param store (a new process): the stores and histories, and the checkpoint."""
    settings = dict(seed=3, progress=False, **kwargs)
    pyro.clear_param_store()
    whole = fit(model, guide, data, epochs=epochs, **settings)
    uninterrupted = _store()
    pyro.clear_param_store()
    fit(model, guide, data, epochs=stop, checkpoint=path, **settings)
    written = checkpoints.load_checkpoint(path)
    pyro.clear_param_store()
    resumed = fit(model, guide, data, epochs=epochs, checkpoint=path, resume=True, **settings)
    after = _store()
    assert after.keys() == uninterrupted.keys()
    for name, value in uninterrupted.items():
        assert torch.equal(after[name], value), name
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in whole]
    return written


def test_a_parameter_first_met_in_a_later_minibatch_is_checkpointed(tmp_path):
    # one pyro.param per datapoint, by its index (own-pair.md's index-aware idiom): the first
    # minibatch shows 10 of them; the checkpoint held those 10 and a resume restarted the
    # other 20 from zeros (max difference 0.149)
    x = torch.randn(NUM_DATA)
    index = torch.arange(NUM_DATA)

    def model(x, idx):
        with pyro.plate("data", NUM_DATA, subsample=idx):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(x, idx):
        locs = torch.stack([pyro.param(f"loc_{int(i)}", torch.zeros(())) for i in idx])
        with pyro.plate("data", NUM_DATA, subsample=idx):
            pyro.sample("z", dist.Normal(locs, 0.5))

    written = _resumed_equals_uninterrupted(model, guide, (x, index), tmp_path / "run.pt",
                                            batch_size=10, lr=0.05)
    assert set(written["param_store"]["params"]) == {f"loc_{i}" for i in range(NUM_DATA)}
    # the fingerprint is still the pair's on the first minibatch, as a resume surveys it
    assert set(written["fingerprint"]["pair"]["param_store"]) == {f"loc_{i}"
                                                                  for i in range(10)}


def test_a_parameter_per_group_met_later_is_checkpointed(tmp_path):
    # data sorted by group: the first minibatch holds group 0 only, "off_1" was lost
    group = torch.cat([torch.zeros(20), torch.ones(20)]).long()
    x = torch.randn(40) + 2.0 * group

    def model(x, g):
        offsets = torch.stack([pyro.param(f"off_{k}", torch.zeros(()))
                               for k in range(int(g.max()) + 1)])
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z + offsets[g], 0.5), obs=x)

    def guide(x, g):
        scale = pyro.param("a", torch.tensor(0.1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(scale * x, 0.7))

    written = _resumed_equals_uninterrupted(model, guide, (x, group), tmp_path / "run.pt",
                                            batch_size=10, lr=0.05, shuffle=False)
    assert set(written["param_store"]["params"]) == {"a", "off_0", "off_1"}


def _baseline_pair():
    """A Bernoulli latent scored by TraceGraph_ELBO with a decaying-average baseline."""
    def model(x):
        p = pyro.param("p", torch.tensor(0.5), constraint=dist.constraints.unit_interval)
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Bernoulli(p))
            pyro.sample("x", dist.Normal(2.0 * c, 1.0), obs=x)

    def guide(x):
        w = pyro.param("w", torch.tensor(0.5), constraint=dist.constraints.unit_interval)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Bernoulli(w), infer={
                "baseline": {"use_decaying_avg_baseline": True}})

    return model, guide


def test_trace_graph_decaying_average_baselines_are_checkpointed(tmp_path):
    # Pyro keeps the average in the param store ("__baseline_avg_downstream_cost_c"); it
    # restarted from zeros on resume (parameters 0.015 off)
    model, guide = _baseline_pair()
    x = torch.cat([torch.randn(10), torch.randn(10) + 2.0])
    written = _resumed_equals_uninterrupted(
        model, guide, x, tmp_path / "run.pt", batch_size=5, lr=0.05,
        loss=pyro.infer.TraceGraph_ELBO())
    assert "__baseline_avg_downstream_cost_c" in written["param_store"]["params"]


def test_unrelated_entries_made_before_the_run_stay_out(tmp_path):
    # what the run creates is saved; an entry made earlier that the run never trains is not
    x = torch.randn(20)

    def model(x):
        loc = pyro.param("loc", torch.zeros(()))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    def guide(x):
        pass

    pyro.param("unrelated", torch.ones(2))
    path = tmp_path / "run.pt"
    fit(model, guide, x, epochs=2, batch_size=5, checkpoint=path, progress=False)
    assert set(checkpoints.load_checkpoint(path)["param_store"]["params"]) == {"loc"}


def _normal_pair():
    """A latent per datapoint under a learned global mean, a guide of two parameters."""
    def model(x):
        mean = pyro.param("mean", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(mean, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(x):
        weight = pyro.param("weight", torch.tensor(0.1))
        scale = pyro.param("scale", torch.tensor(0.7), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(weight * x, scale))

    return model, guide


def test_a_jit_loss_resumes_bit_identically(tmp_path):
    # Pyro's JIT runs the loss twice more when it compiles, at the first step of each call:
    # a resumed call drew those numbers again at its first step (parameters 0.015 off)
    model, guide = _normal_pair()
    x = torch.randn(NUM_DATA) + 1.0
    settings = dict(seed=3, progress=False, batch_size=5, lr=0.05)
    # a new loss object for every call, as fit asks
    whole = fit(model, guide, x, epochs=4, loss=pyro.infer.JitTrace_ELBO(), **settings)
    uninterrupted = _store()
    path = tmp_path / "run.pt"
    pyro.clear_param_store()
    fit(model, guide, x, epochs=2, checkpoint=path, loss=pyro.infer.JitTrace_ELBO(),
        **settings)
    pyro.clear_param_store()
    loss = pyro.infer.JitTrace_ELBO()
    resumed = fit(model, guide, x, epochs=4, checkpoint=path, resume=True, loss=loss,
                  **settings)
    assert "loss_and_grads" not in vars(loss)  # the object is Pyro's again
    for name, value in uninterrupted.items():
        assert torch.equal(_store()[name], value), name
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in whole]


def test_a_batch_size_of_all_data_resumes_one_written_with_a_larger_one(tmp_path):
    # batch_size=128 (the default) and batch_size=N on N datapoints are one full batch each
    # and train alike; the resume was refused ("batch_size: 128 in the checkpoint, 20 now")
    model, guide = _normal_pair()
    x = torch.randn(NUM_DATA)
    path = tmp_path / "run.pt"
    settings = dict(seed=3, progress=False, lr=0.05)
    whole = fit(model, guide, x, epochs=3, batch_size=NUM_DATA, **settings)
    uninterrupted = _store()
    pyro.clear_param_store()
    fit(model, guide, x, epochs=2, checkpoint=path, **settings)  # batch_size=128
    pyro.clear_param_store()
    resumed = fit(model, guide, x, epochs=3, batch_size=NUM_DATA, checkpoint=path,
                  resume=True, **settings)
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in whole]
    for name, value in uninterrupted.items():
        assert torch.equal(_store()[name], value), name
    pyro.clear_param_store()
    # the resumed run wrote batch_size=30; a true minibatch size is still refused
    with pytest.raises(CheckpointError, match=r"settings\.batch_size: 30 in the checkpoint, "
                                              r"10 now"):
        fit(model, guide, x, epochs=4, batch_size=10, checkpoint=path, resume=True,
            **settings)


def test_a_refusal_names_a_default_setting_by_its_value(tmp_path):
    # "settings.shuffle: False in the checkpoint, absent now": the user wrote nothing absent
    model, guide = _normal_pair()
    x = torch.randn(NUM_DATA)
    path = tmp_path / "run.pt"
    fit(model, guide, x, epochs=1, batch_size=5, shuffle=False, checkpoint=path,
        progress=False)
    pyro.clear_param_store()
    with pytest.raises(CheckpointError, match=r"settings\.shuffle: False in the checkpoint, "
                                              r"True now\."):
        fit(model, guide, x, epochs=2, batch_size=5, checkpoint=path, resume=True,
            progress=False)


def test_an_empty_checkpoint_path_is_named_as_such():
    # "checkpoint . is a folder; pass a file name" for checkpoint=""
    model, guide = _normal_pair()
    with pytest.raises(CheckpointError, match=r"checkpoint is an empty string; pass a file "
                                              r"name"):
        fit(model, guide, torch.randn(NUM_DATA), epochs=1, checkpoint="", progress=False)
