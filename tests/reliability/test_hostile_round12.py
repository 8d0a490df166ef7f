"""A careless user's inputs that the probes of 2026-11-30 (eleventh session) found failing
silently or raw; each test fails on the code before its fix.

- ``CompiledSVIStep.step`` after its first call stepped on NaN data (every parameter NaN
  from then on) and trained on impossible observed values (grey pixels under a Bernoulli):
  the graph validates nothing. Each call checks its batch now while Pyro's validation is
  on, as ``SVIStep`` does, and a non-finite loss is not applied.
- ``SVIStep(guide, model)``, model and guide swapped, trained on nothing (loss about 0).
- Completion and super-resolution chains in bfloat16 stopped summing past 256 states.
- A fresh run rotated a truncated checkpoint over the intact ``<path>.previous``; a
  checkpoint edited and saved again resumed a freshly initialized network (``modules=[]``)
  or failed inside torch after restoring parameters.
- A DataLoader, TensorDataset, generator or pandas object passed as data reached the pair;
  an AutoGuide class passed for an instance failed inside Pyro; a ``batch_transform`` whose
  datapoints changed shape failed in a raw matmul error; ``amortization_gap`` given an
  ``ExactEvidence`` failed in torch; callbacks of the wrong arity failed after an epoch; a
  NUL byte in a checkpoint path was "embedded null byte".
"""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import CompiledSVIStep, SVIStep
from inference.pair_check import PairError
from ppl_models import VAE


def small_vae():
    pyro.clear_param_store()
    torch.manual_seed(0)
    return VAE((1, 4, 4), latent_dim=2, hidden=[8])


def binary_images(n=8):
    return (torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(1)) > 0.5).float()


def parameters(vae):
    return [p.detach().clone() for p in vae.parameters()]


@pytest.mark.parametrize("bad, match", [
    ("nan", "NaN or infinite"),
    ("grey", r"observed site 'x' has 128 value\(s\) outside its support \(Boolean\(\)\)"),
])
def test_a_compiled_step_checks_every_batch(bad, match):
    vae = small_vae()
    step = CompiledSVIStep(vae.model, vae.guide, backend="eager")
    x = binary_images()
    step.step(x)  # traced and checked here; the next batches replay the graph
    before = parameters(vae)
    batch = x.clone()
    if bad == "nan":
        batch[3, 0, 1, 2] = math.nan
    else:
        batch = torch.full_like(x, 0.5)
    with pytest.raises(ValueError, match=match):
        step.step(batch)
    with pytest.raises(ValueError, match=match):
        step.loss_and_grads(batch)
    assert all(torch.equal(a, b) for a, b in zip(parameters(vae), before))
    assert math.isfinite(step.step(x))


def test_a_compiled_step_does_not_apply_a_non_finite_loss():
    vae = small_vae()
    step = CompiledSVIStep(vae.model, vae.guide, backend="eager")
    x = binary_images()
    step.step(x)
    before = parameters(vae)
    with torch.no_grad():
        vae.decoder.net[-1].bias.fill_(math.inf)  # a diverged parameter: the loss is NaN
    broken = parameters(vae)
    with pytest.raises(FloatingPointError, match="the loss is nan, not applied"):
        step.step(x)
    after = parameters(vae)
    # nothing moved: the finite parameters are as they were, the broken one as it was set
    assert all(torch.equal(a, b) for a, b in zip(after, broken))
    assert sum(not torch.equal(a, b) for a, b in zip(after, before)) == 1


def test_a_supported_but_draw_dependent_support_is_not_checked_against_a_stale_end():
    """x ~ Uniform(0, z) with z drawn: its support moves with the draw, so later batches must
    not be held to the first call's ends (only supports fixed by the family are checked)."""
    class Pair(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.loc = torch.nn.Parameter(torch.tensor(2.0))

        def model(self, x):
            with pyro.plate("data", len(x)):
                z = pyro.sample("z", dist.LogNormal(self.loc, 0.1))
                pyro.sample("x", dist.Uniform(torch.zeros_like(x), z), obs=x)

        def guide(self, x):
            with pyro.plate("data", len(x)):
                pyro.sample("z", dist.LogNormal(self.loc.detach() + 0.5, 0.1))

    pair = Pair()
    step = CompiledSVIStep(pair.model, pair.guide, backend="eager")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            step.step(torch.tensor([1.0, 2.0]))
        except ValueError as error:  # a pair the compiled path refuses is no test here
            pytest.skip(f"not compiled: {error}")
        step.step(torch.tensor([9.0, 10.0]))  # beyond the first draws' ends, inside later


def swapped_pair():
    def model(x):
        loc = pyro.param("loc", torch.zeros(3))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z.unsqueeze(-1) + loc, 1.0).to_event(1), obs=x)

    def guide(x):
        a = pyro.param("a", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(a * x.mean(-1), 1.0))

    return model, guide


def test_svi_step_refuses_model_and_guide_swapped():
    model, guide = swapped_pair()
    pyro.clear_param_store()
    with pytest.raises(PairError, match=r"The guide observes 'x': are model and guide "
                                        r"swapped\?"):
        SVIStep(guide, model).step(torch.randn(16, 3) + 5)


def test_a_compiled_step_refuses_model_and_guide_swapped():
    vae = small_vae()
    with pytest.raises(PairError, match="are model and guide swapped"):
        CompiledSVIStep(vae.guide, vae.model, backend="eager").step(binary_images())


def test_a_model_of_latents_alone_still_trains():
    """Pyro's NeuTra idiom: a model that observes nothing, fitted to a target density by a
    guide that observes nothing either, is no swapped pair."""
    def model():
        pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    def guide():
        loc = pyro.param("loc", torch.ones(2))
        pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))

    pyro.clear_param_store()
    step = SVIStep(model, guide)
    for _ in range(3):
        assert math.isfinite(step.step())


def test_chains_in_half_precision_average_their_states_exactly():
    """A pixel observed as 1 (or a pooled block of all ones) has posterior mean exactly 1;
    the chains summed their states in the input's dtype, where a bfloat16 sum stops growing
    past 256 (float16: 2048): means of 0.51 and 0.68 came out. (A bfloat16 VAE's encoder
    also returned float32 codes that its decoder refused.)"""
    dtype, steps = torch.bfloat16, 400  # 300 kept states
    from inference.uses import (metropolis_within_gibbs, observed_channel, super_resolve_mh,
                                super_resolve_mwg)

    torch.manual_seed(0)
    vae = VAE((1, 2, 2), latent_dim=1, hidden=[4]).to(dtype)
    y = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]], dtype=dtype)
    channel = observed_channel(y, torch.tensor([[[[False, False], [True, True]]]]))
    mean, _ = metropolis_within_gibbs(vae, channel, steps, burn_in=100,
                                      generator=torch.Generator().manual_seed(0),
                                      progress=False)
    assert mean.dtype == dtype and mean.flatten()[0].item() == 1.0
    ones = torch.ones(1, 1, 1, 1, dtype=dtype)  # every pixel of the block must be 1
    for sampler in (super_resolve_mh, super_resolve_mwg):
        result = sampler(vae, ones, 2, steps, burn_in=100,
                         generator=torch.Generator().manual_seed(0), progress=False)
        assert result.mean.dtype == dtype and bool((result.mean == 1).all()), sampler.__name__


def test_a_corrupt_checkpoint_is_never_kept_over_an_intact_previous_one(tmp_path):
    """Run A, then a fresh run B (A kept as run.pt.previous); run.pt cut short outside fit
    (a copy interrupted): resuming is refused and points to the intact previous file, and a
    fresh run C does not rotate the broken file over it (it did: the only readable
    checkpoint of run A was lost)."""
    from inference import fit
    from inference.training.checkpoints import CheckpointError, load_checkpoint

    def model(x):
        loc = pyro.param("loc", torch.zeros(2))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def guide(x):
        pass

    x, path = torch.randn(8, 2), tmp_path / "run.pt"
    previous = tmp_path / "run.pt.previous"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epochs in (3, 1):  # run A, then run B
            pyro.clear_param_store()
            fit(model, guide, x, epochs=epochs, checkpoint=path, progress=False)
    assert len(load_checkpoint(previous)["history"]) == 3
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    pyro.clear_param_store()
    with pytest.raises(CheckpointError, match=r"truncated.*run\.pt\.previous holds the "
                                              r"checkpoint before it, intact: rename it"):
        fit(model, guide, x, epochs=2, checkpoint=path, resume=True, progress=False)
    pyro.clear_param_store()
    with pytest.warns(UserWarning, match=r"which is not intact .*it is not kept; .*previous is "
                                         r"left as it is"):
        fit(model, guide, x, epochs=1, checkpoint=path, progress=False)
    assert len(load_checkpoint(previous)["history"]) == 3  # run A's, still readable
    assert len(load_checkpoint(path)["history"]) == 1  # run C's


@pytest.mark.parametrize("entry, edit, match", [
    ("modules", lambda state: [], r"holds 0 module state\(s\), but the pair has 1"),
    ("modules", lambda state: [{k: v[:1] for k, v in state.items()} for state in state],
     r"as \[1(, \d+)?\], where the module has"),
    ("shuffler", lambda value: value[:3], r"'shuffler' a torch.uint8 tensor of 3 elements"),
    ("rng", lambda value: {"pyro": {}}, r"'rng' entry without the torch, random and numpy"),
    ("history", lambda value: value[1:], r"history whose epochs are \[2\], not 1..1"),
    ("settings_values", lambda value: [1], r"list as its 'settings_values'"),
])
def test_an_edited_checkpoint_is_refused_by_entry_before_anything_is_restored(
        tmp_path, entry, edit, match):
    """A checkpoint edited by hand and saved again (a valid CRC): with modules=[] fit resumed
    'epoch 3' from a freshly initialized VAE, silently; other entries failed inside torch
    after the parameters were restored."""
    from inference import fit
    from inference.training.checkpoints import (CheckpointError, load_checkpoint,
                                                save_checkpoint)

    vae, x, path = small_vae(), binary_images(), tmp_path / "run.pt"
    fit(vae.model, vae.guide, x, epochs=2, checkpoint=path, progress=False)
    state = load_checkpoint(path)
    state[entry] = edit(state.get(entry, {}))
    save_checkpoint(path, state)
    trained = parameters(vae)
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(1.0)  # so that a restore would show
    moved = parameters(vae)
    with pytest.raises(CheckpointError, match=match):
        fit(vae.model, vae.guide, x, epochs=3, checkpoint=path, resume=True, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(parameters(vae), moved)), "nothing restored"
    assert not all(torch.equal(a, b) for a, b in zip(moved, trained))


def normal_pair():
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[-1]), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(x / 2, 0.7).to_event(1))

    return model, guide


@pytest.mark.parametrize("kind, match", [
    ("loader", "argument 0 is a DataLoader: the pair scores one batch of tensors"),
    ("dataset", r"argument 0 is a TensorDataset: pass its tensors, \*dataset.tensors"),
    ("generator", "argument 0 is a generator: pass a tensor"),
    ("pandas", "argument 0 is a pandas DataFrame: pass a tensor"),
])
def test_containers_of_batches_are_named_by_the_estimators(kind, match):
    """They reached the pair and failed in the user's code or inside pandas."""
    from torch.utils.data import DataLoader, TensorDataset

    from inference import elbo, iwae_bound, log_evidence

    x = torch.randn(6, 3)
    if kind == "pandas":
        pandas = pytest.importorskip("pandas")
        data = pandas.DataFrame(x.numpy())
    else:
        data = {"loader": lambda: DataLoader(TensorDataset(x), batch_size=2),
                "dataset": lambda: TensorDataset(x),
                "generator": lambda: (row for row in x)}[kind]()
    model, guide = normal_pair()
    with pytest.raises(TypeError, match=match):
        iwae_bound(model, guide, data, num_samples=4, progress=False)
    with pytest.raises(TypeError, match=match):
        elbo(model, guide, data, progress=False)
    with pytest.raises(TypeError, match=match):
        SVIStep(model, guide).step(data)
    with pytest.raises(TypeError, match=match):
        log_evidence(model, guide, data, progress=False)


def test_log_evidence_names_a_numpy_array_as_such():
    import numpy as np

    from inference import log_evidence

    model, guide = normal_pair()
    with pytest.raises(TypeError, match=r"x must be a tensor \[n, ...\], got a ndarray of shape "
                                        r"\(6, 3\): pass torch.as_tensor"):
        log_evidence(model, guide, np.zeros((6, 3)), progress=False)


@pytest.mark.parametrize("changed_from_call", [3, 9])
@pytest.mark.parametrize("change, shown", [
    (lambda b: b[:, :2], r"\(\[2\], float32\) where the minibatch the pair was checked on had "
                         r"\(\[3\], float32\)"),
    (lambda b: b.double(), r"\(\[3\], float64\) where .* had \(\[3\], float32\)"),
])
def test_a_batch_transform_that_changes_the_datapoints_is_named(changed_from_call, change,
                                                                 shown):
    """The transform's output changed shape or dtype after the minibatch the pair was
    checked on: torch's raw matmul error, naming no transform."""
    from inference import fit

    encoder = torch.nn.Linear(3, 2)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z.unsqueeze(-1), 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            out = encoder(x)
            pyro.sample("z", dist.Normal(out[:, 0], torch.nn.functional.softplus(out[:, 1])))

    calls = {"n": 0}

    def transform(batch):
        calls["n"] += 1
        return (batch if calls["n"] < changed_from_call else change(batch),)

    pyro.clear_param_store()
    with pytest.raises(ValueError, match=r"batch_transform returned datapoints of \(shape, "
                                         r"dtype\) " + shown):
        fit(model, guide, torch.randn(40, 3), epochs=2, batch_size=16,
            batch_transform=transform, progress=False)


def test_an_autoguide_class_passed_for_an_instance_is_named():
    """fit(model, AutoNormal, x): Pyro called the class with the data as the model and
    printed the data as "not callable"."""
    from pyro.infer.autoguide import AutoNormal

    from inference import elbo, fit

    model, _ = normal_pair()
    x = torch.randn(4, 3)
    for call in (lambda: fit(model, AutoNormal, x, epochs=1, progress=False),
                 lambda: elbo(model, AutoNormal, x, progress=False),
                 lambda: SVIStep(model, AutoNormal).step(x)):
        with pytest.raises(TypeError, match=r"guide is the class AutoNormal, not a guide: pass "
                                            r"an instance, e.g. AutoNormal\(model\)"):
            call()


def test_amortization_gap_names_an_evidence_result_passed_for_its_tensor():
    from inference import amortization_gap, exact_log_evidence

    model, guide = normal_pair()
    x = torch.randn(3, 1)
    result = exact_log_evidence(model, x, progress=False)
    with pytest.raises(TypeError, match=r"log_evidence must be a tensor \[batch\], got "
                                        r"ExactEvidence; pass its .log_evidence"):
        amortization_gap(model, guide, x, log_evidence=result, progress=False)


def test_callbacks_of_the_wrong_arity_and_nul_paths_are_named_before_work(tmp_path):
    """A score taking the record, a callback taking nothing: both failed after the first
    epoch, naming nothing; a NUL byte in a checkpoint path gave "embedded null byte"."""
    from inference import KeepBest, fit
    from inference.training.checkpoints import (CheckpointError, load_checkpoint,
                                                save_checkpoint)

    with pytest.raises(TypeError, match=r"KeepBest calls the score with 0 positional "
                                        r"arguments, which its signature \(record\)"):
        KeepBest(torch.nn.Linear(1, 1), lambda record: 1.0)
    model, guide = normal_pair()
    x = torch.randn(4, 3)
    with pytest.raises(TypeError, match=r"fit calls the callback with 1 positional argument"):
        fit(model, guide, x, epochs=1, callback=lambda: None, progress=False)
    path = str(tmp_path / "a\0b.pt")
    with pytest.raises(ValueError, match="holds a NUL byte"):
        fit(model, guide, x, epochs=1, checkpoint=path, progress=False)
    for call in (lambda: save_checkpoint(path, {}), lambda: load_checkpoint(path)):
        with pytest.raises(CheckpointError, match="holds a NUL byte"):
            call()


def test_a_setting_passed_beside_the_data_points_to_binding_it():
    """fit(model, guide, (x, 0.5)) was refused without saying how to pass a setting."""
    from inference import fit

    model, guide = normal_pair()
    with pytest.raises(TypeError, match=r"got a tuple of Tensor, float: fit cuts each entry "
                                        r"into minibatches, so pass settings bound to the pair, "
                                        r"e.g. fit\(functools.partial"):
        fit(model, guide, (torch.randn(4, 3), 0.5), epochs=1, progress=False)
