"""Hostile inputs, round 4: each entry point computes the right thing or refuses by name.

- S1: sparse data tensors failed inside torch ("Could not run 'aten::ne.Scalar' ...").
- S2: NaN one level down in a dict/tuple argument failed in a distribution's check.
- S3: a 0-dim integer tensor was refused as a count while ``np.int64`` was accepted.
- S4: ``bound_sweep(repeats=10**12)`` (AIS's ``num_leapfrog``, ``amortization_gap``'s
  ``num_steps``) was accepted and ran for ever.
- S5: ``fit(checkpoint="~/x.pt")`` wrote into a folder literally named ``~``.
- S6: ``effective_sample_size`` of a column of zero weights is 0 (documented as ``[1, K]``
  in places), as ``pareto_k`` gives it ``+inf`` and ``iwae_from_weights`` ``-inf``.
- S7: float64 data for float32 networks failed 13 frames deep in ``nn.Linear``.
- S8: a guide's scale of 0 gave torch's "Expected parameter scale" naming no program.
- S9: ``fit`` with a guide scale of inf at the initial parameters stepped on NaN and blamed lr.
- S10: a model calling ``pyro.clear_param_store()`` trained nothing and fit returned normally.
"""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import inference
from inference.checks import as_int
from inference.training.checkpoints import load_checkpoint, save_checkpoint
from ppl_models import read_wav, write_wav
from ppl_models.checks import as_int as models_as_int
from ppl_models.data import read_idx, write_idx


def model(x, extra=None):
    shift = 0.0 if extra is None else extra["shift"][0]
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(z + shift, 0.5), obs=x)


def guide(x, extra=None):
    a = pyro.param("a", torch.tensor(0.5))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(a * x, 0.8))


# S1. sparse data --------------------------------------------------------------------------
def test_sparse_data_is_refused_by_name_by_estimators_and_fit():
    x = torch.randn(4).to_sparse()
    with pytest.raises(TypeError, match=r"argument 0 is a sparse tensor .*x\.to_dense\(\)"):
        inference.elbo(model, guide, x, progress=False)
    with pytest.raises(TypeError, match=r"argument 1\['s'\] is a sparse tensor"):
        inference.iwae_bound(model, guide, torch.randn(4), {"s": x}, num_samples=2,
                             progress=False)
    with pytest.raises(TypeError, match=r"data is a sparse tensor .*x\.to_dense\(\)"):
        inference.fit(model, guide, x, epochs=1, progress=False)


# S2. NaN inside containers ----------------------------------------------------------------
def test_nan_inside_a_container_argument_is_refused_naming_its_path():
    extra = {"shift": (torch.tensor([float("nan")]),)}
    with pytest.raises(ValueError, match=r"argument 1\['shift'\]\[0\] \(shape \(1,\)\) contains "
                                         r"1 NaN or infinite"):
        inference.iwae_bound(model, guide, torch.randn(5), extra, num_samples=10,
                             progress=False)
    with pytest.raises(ValueError, match=r"keyword argument 'extra'\['shift'\]\[0\]"):
        inference.elbo(model, guide, torch.randn(5), extra=extra, progress=False)


# S3. 0-dim integer tensors as counts ------------------------------------------------------
def test_zero_dim_integer_tensors_count_as_integers():
    for check in (as_int, models_as_int):
        assert check(torch.tensor(10), "n") == 10 and type(check(torch.tensor(10), "n")) is int
        assert check(np.int64(3), "n") == 3
        for bad in (torch.tensor(True), torch.tensor(10.0), torch.tensor([10]),
                    torch.tensor(0)):
            with pytest.raises(ValueError, match="n must be a positive integer"):
                check(bad, "n")
    x = torch.randn(4)
    assert inference.iwae_bound(model, guide, x, num_samples=torch.tensor(10),
                                chunk_size=torch.tensor(3), progress=False).shape == (4,)
    table = inference.bound_sweep(model, guide, x, num_samples=(1, torch.tensor(5)),
                                  repeats=torch.tensor(2), progress=False)
    assert table.rows[-1]["num_samples"] == 5
    history = inference.fit(model, guide, x, epochs=torch.tensor(2), batch_size=torch.tensor(2),
                            progress=False)
    assert [r["epoch"] for r in history] == [1, 2]


# S4. counts that would never end ----------------------------------------------------------
def test_unbounded_counts_of_the_estimators_are_capped_by_name():
    x = torch.randn(4)
    with pytest.raises(ValueError, match=r"repeats must be at most 1,000,000, got "
                                         r"1,000,000,000,000"):
        inference.bound_sweep(model, guide, x, num_samples=(1, 5), repeats=10 ** 12,
                              progress=False)
    with pytest.raises(ValueError, match=r"num_leapfrog must be at most 10,000"):
        inference.ais_log_evidence(model, guide, x, num_steps=2, transition="hmc",
                                   num_leapfrog=10 ** 12, progress=False)
    with pytest.raises(ValueError, match=r"num_steps must be at most 10,000,000"):
        inference.amortization_gap(model, guide, x, num_steps=10 ** 12, progress=False)


# S5. "~" in user paths --------------------------------------------------------------------
def test_tilde_in_user_paths_means_the_home_folder(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    inference.fit(model, guide, torch.randn(8), epochs=1, checkpoint="~/run.pt", progress=False)
    assert (home / "run.pt").is_file() and not (tmp_path / "~").exists()
    assert load_checkpoint("~/run.pt")["history"][0]["epoch"] == 1
    save_checkpoint("~/other.pt", {"a": 1})
    assert (home / "other.pt").is_file()
    write_wav("~/a.wav", torch.zeros(100), 8000)
    assert read_wav("~/a.wav")[1] == 8000
    write_idx("~/a.idx", np.zeros((2, 3), dtype=np.uint8))
    assert read_idx("~/a.idx").shape == (2, 3)
    assert not (tmp_path / "~").exists()


# S6. a column of zero weights -------------------------------------------------------------
def test_all_zero_weights_give_ess_zero_like_khat_inf_and_iwae_minus_inf():
    log_w = torch.cat([torch.full((50, 1), -math.inf), torch.randn(50, 1)], 1)
    ess = inference.effective_sample_size(log_w)
    assert ess[0] == 0 and 1 <= ess[1] <= 50
    assert inference.pareto_k(log_w)[0] == math.inf
    assert inference.iwae_from_weights(log_w, 50)[0] == -math.inf
    documented = inference.effective_sample_size.__doc__ + inference.WeightDiagnostics.__doc__
    assert "0 for\n        a column whose weights are all zero" in documented
    assert "(0 where all weights are zero)" in documented


# S7. float64 data for float32 networks ----------------------------------------------------
def _network_pair(convert: bool = False, latent: int = 2):
    """A VAE-like pair of plain functions on 4-dim data, its scale exp(encoder output); with
    ``convert`` it converts the data to float32 itself."""
    decoder, encoder = torch.nn.Linear(latent, 4), torch.nn.Linear(4, 2 * latent)

    def net_model(x):
        pyro.module("dec", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(latent), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(decoder(z), 0.5).to_event(1),
                        obs=x.float() if convert else x)

    def net_guide(x):
        pyro.module("enc", encoder)
        h = encoder(x.float() if convert else x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(h[..., :latent], h[..., latent:].exp()).to_event(1))

    return net_model, net_guide, decoder, encoder


def test_data_of_another_dtype_than_the_networks_is_named_with_the_fix():
    x = torch.randn(6, 4, dtype=torch.float64)
    net_model, net_guide, _, _ = _network_pair()
    message = (r"argument 0 is torch.float64 but the parameters of the networks the pair uses "
               r"are torch.float32 .*x\.float\(\).*model\.double\(\)")
    with pytest.raises(TypeError, match=message) as caught:
        inference.iwae_bound(net_model, net_guide, x, num_samples=5, progress=False)
    assert isinstance(caught.value.__cause__, RuntimeError)
    with pytest.raises(TypeError, match=message):
        inference.fit(net_model, net_guide, x, epochs=1, progress=False)
    # a pair that converts the data itself runs
    net_model, net_guide, _, _ = _network_pair(convert=True)
    assert inference.iwae_bound(net_model, net_guide, x, num_samples=5,
                                progress=False).shape == (6,)


# S8. a distribution's parameter outside its constraint ------------------------------------
def test_a_scale_of_zero_names_the_program_that_built_it():
    def zero_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.5 * x, torch.zeros_like(x)))

    message = (r"the guide \(.*zero_guide, test_hostile_round4.py line \d+: pyro.sample\(\"z\", "
               r"dist.Normal\(0.5 \* x, torch.zeros_like\(x\)\)\)\) built a distribution with "
               r"a parameter outside its constraint .*scale of 0")
    with pytest.raises(inference.PairError, match=message) as caught:
        inference.iwae_bound(model, zero_guide, torch.randn(4), num_samples=10, progress=False)
    assert "Expected parameter scale" in str(caught.value.__cause__)

    def negative_model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
            pyro.sample("x", dist.Normal(z, -torch.ones_like(x)), obs=x)

    with pytest.raises(inference.PairError, match=r"the model \(.*negative_model, "):
        inference.fit(negative_model, guide, torch.randn(4), epochs=1, progress=False)


# S9. a guide whose scale overflows at the initial parameters ------------------------------
def test_fit_refuses_a_first_step_that_would_be_nan_and_leaves_the_parameters():
    net_model, net_guide, decoder, encoder = _network_pair(latent=1)
    with torch.no_grad():
        encoder.weight.fill_(1.0)  # scale exp(400 + bias) on data of 100s: inf

    before = [p.detach().clone() for p in (*decoder.parameters(), *encoder.parameters())]
    with pytest.raises(ValueError, match=r"the guide's site 'z' has a NaN or infinite log "
                                         r"density on the first minibatch .* untouched"):
        inference.fit(net_model, net_guide, 100 * torch.ones(3, 4), epochs=2, batch_size=3,
                      progress=False)
    after = [*decoder.parameters(), *encoder.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(after, before))


# S10. a pair that clears Pyro's param store -----------------------------------------------
def test_fit_refuses_a_pair_that_clears_the_param_store():
    def clearing_model(x):
        pyro.clear_param_store()
        model(x)

    with pytest.raises(ValueError, match=r"one run of the pair removed parameters \['a'\] "
                                         r"from Pyro's param store .*clear_param_store"):
        inference.fit(clearing_model, guide, torch.randn(20), epochs=2, batch_size=5,
                      progress=False)
