"""SVI training: data-plate scaling, convergence to the exact maximum likelihood, DReG."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import DReGLoss, IWAELoss, fit, make_loss, scale_data_plate, scale_latents
from ppl_models import LinearGaussian


def ppca_max_log_likelihood(x: torch.Tensor, latent_dim: int) -> float:
    """Mean log-likelihood at the closed-form PPCA maximum (Tipping and Bishop 1999)."""
    mean = x.mean(0)
    cov = torch.cov(x.T, correction=0)
    eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending
    noise_var = eigvals[:-latent_dim].mean()
    top_vals, top_vecs = eigvals[-latent_dim:], eigvecs[:, -latent_dim:]
    weight = top_vecs * (top_vals - noise_var).sqrt()
    model_cov = weight @ weight.T + noise_var * torch.eye(x.shape[1], dtype=x.dtype)
    return float(dist.MultivariateNormal(mean, model_cov).log_prob(x).mean())


@pytest.mark.parametrize("loss", ["elbo", "meanfield", "iwae"])
def test_fit_reaches_ppca_maximum_likelihood(loss):
    # The amortized guide family contains the exact posterior, so maximizing the ELBO also
    # maximizes the likelihood. 60 epochs of Adam get within 0.03 nats per datapoint of the
    # closed-form optimum (measured gap about 0.005; SGD noise sets the tolerance).
    truth = LinearGaussian(data_dim=5, latent_dim=2, noise_scale=0.3, seed=3).double()
    x = truth.simulate(1000, seed=4).detach()
    best = ppca_max_log_likelihood(x, 2)
    learner = LinearGaussian(data_dim=5, latent_dim=2, noise_scale=1.0, seed=5).double()
    history = fit(learner.model, learner.guide, x, loss=loss,
                  num_particles=1 if loss != "iwae" else 5, epochs=60, batch_size=100,
                  lr=0.02, seed=0, progress=False)
    reached = float(learner.log_marginal(x).mean().detach())
    assert reached <= best + 1e-6, "no model can exceed the maximum likelihood"
    assert best - reached < 0.03, (best, reached)
    assert len(history) == 60 and history[-1]["train_loss"] < history[0]["train_loss"]
    # the objective reported is per datapoint: -ELBO is a bit above -log p(x)
    assert -reached - 0.2 < history[-1]["train_loss"] < -reached + 0.5


def test_scale_data_plate_scales_only_local_sites():
    def model(x):
        g = pyro.sample("global", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(g, 1.0), obs=x)

    with scale_data_plate(7.5):
        trace = pyro.poutine.trace(model).get_trace(torch.zeros(4))
    assert trace.nodes["global"]["scale"] == 1.0
    assert trace.nodes["x"]["scale"] == 7.5


@pytest.mark.parametrize("handler, value, message", [
    (scale_data_plate, 0, "factor must be > 0"), (scale_data_plate, -1.0, "factor must be > 0"),
    (scale_data_plate, float("nan"), "factor must be a finite number"),
    (scale_data_plate, float("inf"), "factor must be a finite number"),
    (scale_data_plate, "2", "factor must be a finite number"),
    (scale_latents, -1.0, "beta must be >= 0"),
    (scale_latents, float("nan"), "beta must be a finite number"),
])
def test_reweighting_handlers_refuse_bad_factors(handler, value, message):
    with pytest.raises(ValueError, match=f"{handler.__name__} {message}"):
        handler(value)


def test_valid_evaluation_does_not_touch_parameters():
    model = LinearGaussian(data_dim=3, latent_dim=1, seed=0)
    x = model.simulate(50).detach()
    history = fit(model.model, model.guide, x, epochs=0, valid_data=x, progress=False)
    assert history == []
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = fit(model.model, model.guide, x, epochs=1, lr=0.0, valid_data=x, progress=False)
    assert "valid_elbo" in history[0]
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_fit_is_reproducible_with_a_seed():
    results = []
    for _ in range(2):
        pyro.clear_param_store()
        model = LinearGaussian(data_dim=3, latent_dim=1, seed=0)
        x = model.simulate(64, seed=1).detach()
        fit(model.model, model.guide, x, epochs=2, batch_size=16, seed=11, progress=False)
        results.append(model.weight.detach().clone())
    torch.testing.assert_close(results[0], results[1], atol=0, rtol=0)


def test_fit_rejects_bad_data():
    model = LinearGaussian(data_dim=3, latent_dim=1)
    with pytest.raises(ValueError, match="NaN"):
        fit(model.model, model.guide, torch.full((4, 3), float("nan")), epochs=1, progress=False)
    with pytest.raises(ValueError, match="disagree"):
        fit(model.model, model.guide, (torch.zeros(4, 3), torch.zeros(5)), epochs=1,
            progress=False)
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("kl")
    # the class where its instance belongs used to fail inside Pyro on the first step
    with pytest.raises(TypeError, match=r"pass an instance, e.g. Trace_ELBO\(\)"):
        fit(model.model, model.guide, torch.zeros(4, 3), loss=pyro.infer.Trace_ELBO,
            epochs=1, progress=False)


def test_fit_refuses_an_unknown_loss_before_running_the_pair():
    calls = []

    def model(x):
        calls.append("model")

    with pytest.raises(ValueError, match="unknown loss 'elbow'; choose one of 'elbo'"):
        fit(model, model, torch.zeros(4, 3), epochs=1, loss="elbow", progress=False)
    assert calls == []


def _rows_picking_pair(num_data: int):
    """A model that draws its own minibatch of the whole data (Pyro's SVI tutorial idiom)."""

    def model(x):
        loc = pyro.sample("loc", dist.Normal(torch.zeros(()), 10.0))
        with pyro.plate("data", num_data, subsample_size=10) as rows:
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x[rows])

    def guide(x):
        pyro.sample("loc", dist.Normal(pyro.param("loc_mean", torch.tensor(0.0)), 0.1))

    return model, guide


@pytest.mark.skipif(not hasattr(Exception, "add_note"), reason="exception notes: Python 3.11+")
def test_a_pair_failing_on_the_first_minibatch_is_told_how_fit_called_it():
    pyro.clear_param_store()
    x = torch.randn(40) + 3.0
    model, guide = _rows_picking_pair(len(x))
    with pytest.raises(IndexError) as raised:
        fit(model, guide, x, epochs=1, batch_size=8, progress=False)
    note = " ".join(getattr(raised.value, "__notes__", []))
    assert "first minibatch: 1 tensor(s) of shapes [8]" in note
    assert "batch_size >= 40" in note
    # as the note says: the whole data each step, the model scales its own subsample
    history = fit(model, guide, x, epochs=30, batch_size=40, lr=0.1, shuffle=False,
                  progress=False)
    assert abs(float(pyro.param("loc_mean")) - float(x.mean())) < 0.5
    assert len(history) == 30


def test_a_diverged_fit_says_what_it_left_behind():
    model = LinearGaussian(data_dim=3, latent_dim=1)
    with pytest.raises(FloatingPointError, match="diverged.*clear_param_store"):
        fit(model.model, model.guide, torch.full((8, 3), 1e3), epochs=2, lr=1e10,
            progress=False)
    # data whose density underflows at the start, at every draw: refused before the first step
    pyro.clear_param_store()
    model = LinearGaussian(data_dim=3, latent_dim=1)
    with pytest.raises(ValueError, match=r"observed site 'x' \(Normal\) has log density "
                                         r"-inf .*underflows in the dtype"):
        fit(model.model, model.guide, torch.full((8, 3), 1e30), epochs=2, progress=False)


def _mean_gradients(objective, model, x, groups):
    """Per-group gradients of ``objective`` (each a sum over many datapoint copies)."""
    rows = []
    for _ in range(groups):
        model.zero_grad(set_to_none=True)
        objective.loss_and_grads(model.model, model.guide, x)
        rows.append(torch.cat([p.grad.flatten() for _, p in sorted(model.named_parameters())]))
    return torch.stack(rows)


def test_dreg_gradient_matches_iwae_gradient_in_expectation():
    # Both estimators are unbiased for the gradient of IWAE_K. Replicating three datapoints
    # 400 times makes each call a sum of 400 independent estimates; 12 calls per estimator
    # give a standard error for each coordinate, and the difference must stay within 4.
    torch.manual_seed(0)
    model = LinearGaussian(data_dim=2, latent_dim=1, noise_scale=0.5, seed=2).double()
    x = model.simulate(3, seed=1).detach().repeat(400, 1)
    iwae = _mean_gradients(IWAELoss(5), model, x, 12)
    dreg = _mean_gradients(DReGLoss(5), model, x, 12)
    stderr = ((iwae.var(0) + dreg.var(0)) / 12).sqrt()
    z = (iwae.mean(0) - dreg.mean(0)) / stderr
    assert bool((z.abs() < 4).all()), z
    # and DReG is the lower-variance estimator for the guide (encoder and scale) parameters
    names = [n for n, _ in sorted(model.named_parameters())]
    sizes = [p.numel() for _, p in sorted(model.named_parameters())]
    offsets = torch.tensor([0] + sizes).cumsum(0)
    guide = [i for i, n in enumerate(names) if n.startswith(("encoder", "guide"))]
    cols = torch.cat([torch.arange(offsets[i], offsets[i + 1]) for i in guide])
    assert float(dreg.var(0)[cols].sum()) < float(iwae.var(0)[cols].sum())


def test_resume_equals_uninterrupted_run(tmp_path):
    def train(epochs, resume, path):
        pyro.clear_param_store()
        model = LinearGaussian(data_dim=3, latent_dim=1, seed=0)
        x = LinearGaussian(data_dim=3, latent_dim=1, seed=9).simulate(96, seed=1).detach()
        history = fit(model.model, model.guide, x, epochs=epochs, batch_size=32, seed=4,
                      checkpoint=path, resume=resume, progress=False)
        return model, history

    straight, straight_history = train(4, False, tmp_path / "straight.pt")
    train(2, False, tmp_path / "split.pt")  # "interrupted" after two epochs
    assert not (tmp_path / "split.pt.partial").exists()
    resumed, resumed_history = train(4, True, tmp_path / "split.pt")
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, atol=0, rtol=0)
    assert [r["train_loss"] for r in resumed_history] == [r["train_loss"] for r in straight_history]


def test_kl_warmup_scales_latent_terms():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    from inference import scale_latents

    with scale_latents(0.25):
        trace = pyro.poutine.trace(model).get_trace(torch.zeros(3))
    assert trace.nodes["z"]["scale"] == 0.25 and trace.nodes["x"]["scale"] == 1.0
    m = LinearGaussian(data_dim=3, latent_dim=1)
    history = fit(m.model, m.guide, m.simulate(40).detach(), epochs=3, kl_warmup_epochs=2,
                  progress=False)
    assert [r["kl_weight"] for r in history] == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("transform, error, message", [
    (lambda x: None, TypeError, "batch_transform must return a tensor or a tuple of tensors, "
                                "got NoneType"),
    (lambda x: x[:2], ValueError, r"keep the minibatch's 8 rows along dim 0, returned shapes "
                                  r"\[\[2, 3\]\]"),
])
def test_a_batch_transform_that_breaks_the_minibatch_is_named(transform, error, message):
    model = LinearGaussian(data_dim=3, latent_dim=1)
    with pytest.raises(error, match=message):
        fit(model.model, model.guide, torch.randn(20, 3), batch_size=8, epochs=1,
            batch_transform=transform, progress=False)
