"""CompiledSVIStep: the traced (and compiled) step gives the eager step's loss and gradients."""

import copy

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference.training.compiled_step import CompiledSVIStep
from inference.training.svi_step import SVIStep
from inference import fit, scale_data_plate
from ppl_models.vae import VAE


def small_vae_and_images():
    torch.manual_seed(0)
    vae = VAE((1, 4, 4), latent_dim=2, hidden=(3,)).double()
    x = (torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(1)) < 0.4).double()
    return vae, x


def eager_and_compiled(loss, backend, scale=6.0, seed=4, num_particles=1):
    vae, x = small_vae_and_images()
    eager, compiled = copy.deepcopy(vae), copy.deepcopy(vae)
    store = pyro.get_param_store()
    with store.scope(), scale_data_plate(scale):
        step = SVIStep(eager.model, eager.guide, loss=loss, num_particles=num_particles)
        step.loss_and_grads(eager.model, eager.guide, x)  # first call: checks, picks lean
        eager.zero_grad(set_to_none=True)
        pyro.set_rng_seed(seed)
        eager_loss = step.loss_and_grads(eager.model, eager.guide, x)
    with store.scope(), scale_data_plate(scale):
        pyro.set_rng_seed(seed)
        compiled_loss = CompiledSVIStep(compiled.model, compiled.guide, loss=loss,
                                        backend=backend,
                                        num_particles=num_particles).loss_and_grads(x)
    return eager, eager_loss, compiled, compiled_loss


@pytest.mark.parametrize("loss", ["elbo", "meanfield"])
def test_traced_graph_replays_the_eager_step_exactly(loss):
    # backend="eager" runs the traced aten graph as recorded: the same operations on the same
    # draws (normal_ on torch's generator), so equality is exact.
    eager, eager_loss, compiled, compiled_loss = eager_and_compiled(loss, "eager")
    assert compiled_loss == eager_loss
    for p, q in zip(eager.parameters(), compiled.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=0)


@pytest.mark.parametrize("loss", ["iwae", "dreg"])
def test_traced_weighted_graph_replays_the_eager_step(loss):
    # IWAE and DReG with K = 4: the traced graph holds the particle plate's draws and, for
    # DReG, the weighted latent gradients (tensor hooks recorded as multiplications). The
    # eager step is SVIStep's lean path, itself tested against IWAELoss/DReGLoss.
    eager, eager_loss, compiled, compiled_loss = eager_and_compiled(loss, "eager",
                                                                    num_particles=4)
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-12)
    for p, q in zip(eager.parameters(), compiled.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-12, atol=1e-14)


def test_traced_dreg_graph_differs_from_iwae():
    # the same draws: DReG and IWAE share the loss but not the guide's gradients, so a trace
    # that dropped the hooks (giving IWAE-like guide gradients) would fail here
    _, iwae_loss, iwae, _ = eager_and_compiled("iwae", "eager", num_particles=4)
    _, dreg_loss, dreg, _ = eager_and_compiled("dreg", "eager", num_particles=4)
    assert dreg_loss == pytest.approx(iwae_loss, rel=1e-12)
    encoder = [(p, q) for (n, p), q in zip(iwae.named_parameters(), dreg.parameters())
               if n.startswith("encoder")]
    assert max(float((p.grad - q.grad).abs().max()) for p, q in encoder) > 1e-6
    decoder = [(p, q) for (n, p), q in zip(iwae.named_parameters(), dreg.parameters())
               if n.startswith("decoder")]
    for p, q in decoder:
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_inductor_step_matches_the_eager_step():
    # Inductor fuses and reorders float64 sums (measured differences ~3e-16 relative) and,
    # with fallback_random, draws the eager step's noise; 1e-10 would catch a wrong draw.
    eager, eager_loss, compiled, compiled_loss = eager_and_compiled("elbo", "inductor")
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-10)
    for p, q in zip(eager.parameters(), compiled.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-10, atol=1e-12)


def test_a_new_data_scale_traces_again():
    vae, x = small_vae_and_images()
    step = CompiledSVIStep(vae.model, vae.guide, backend="eager")
    with scale_data_plate(2.0):
        first = step.loss_and_grads(x)
    with scale_data_plate(4.0):
        pyro.set_rng_seed(0)
        second = step.loss_and_grads(x)
    pyro.set_rng_seed(0)
    with scale_data_plate(2.0):
        again = step.loss_and_grads(x)
    assert len(step._graphs) == 2
    assert second == pytest.approx(2 * again, rel=1e-12)  # every site is in the data plate
    assert first != again  # fresh draws each call


def test_unsuitable_pairs_are_refused():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(pyro.param("loc", torch.tensor(0.0)), 1.0), obs=x)

    with pytest.raises(ValueError, match="methods of one torch.nn.Module"):
        CompiledSVIStep(model, model)
    vae, _ = small_vae_and_images()
    with pytest.raises(ValueError, match="support the losses"):
        CompiledSVIStep(vae.model, vae.guide, loss="renyi")
    with pytest.raises(ValueError, match="one particle"):
        CompiledSVIStep(vae.model, vae.guide, loss="elbo", num_particles=3)
    with pytest.raises(ValueError, match="num_particles must be a positive integer"):
        CompiledSVIStep(vae.model, vae.guide, loss="iwae", num_particles=0)


@pytest.mark.parametrize("backend, message", [
    (3, "backend must be None or a torch.compile backend name, got 3"),
    (True, "backend must be None or a torch.compile backend name, got True"),
    ("nope", r"backend='nope' is not a torch.compile backend; choose one of .*'inductor'"),
    ("", r"backend='' is not a torch.compile backend; choose one of .*'inductor'"),
])
def test_a_backend_torch_compile_lacks_is_refused_at_construction(backend, message):
    # it used to be accepted and fail deep in dynamo at the first step
    vae, _ = small_vae_and_images()
    with pytest.raises(ValueError, match=message):
        CompiledSVIStep(vae.model, vae.guide, backend=backend)


def test_a_listed_backend_that_fails_here_is_refused_at_construction():
    # torch lists "tvm" whether or not Apache TVM is installed: accepted, it failed with a
    # raw BackendCompilerFailed at the first compiled step of fit or iwae_bound
    import importlib.util

    from inference import iwae_bound

    if importlib.util.find_spec("tvm") is not None:
        pytest.skip("Apache TVM is installed here")
    vae, x = small_vae_and_images()
    with pytest.raises(ValueError, match=r"backend='tvm': torch lists the backend, but it "
                                         r"fails here on a trial function"):
        CompiledSVIStep(vae.model, vae.guide, backend="tvm")
    with pytest.raises(ValueError, match=r"compile='tvm': torch lists the backend, but it "
                                         r"fails here"):
        iwae_bound(vae.model, vae.guide, x, num_samples=2, compile="tvm", progress=False)


def test_a_second_instance_is_refused_naming_the_shadowed_parameter():
    # the store keeps the first instance's tensors under the names pyro.module registers; the
    # message used to call them "a pyro.param outside the module"
    first, x = small_vae_and_images()
    CompiledSVIStep(first.model, first.guide, backend="eager").step(x)
    second, _ = small_vae_and_images()
    with pytest.raises(ValueError, match=r"parameter 'decoder\$\$\$net\.0\.weight' \(and 7 "
                                         r"more\) is a network's own.*clear_param_store"):
        CompiledSVIStep(second.model, second.guide, backend="eager").step(x)


def test_fit_selects_the_compiled_step(monkeypatch):
    # With the uncompiled graph the compiled path performs the default path's operations on
    # the same draws, so two epochs of training end in exactly the same parameters.
    import inference.training.compiled_step

    monkeypatch.setattr(inference.training.compiled_step, "DEFAULT_BACKEND", "eager")
    results = []
    for compile in (False, True):
        pyro.clear_param_store()
        vae, x = small_vae_and_images()
        history = fit(vae.model, vae.guide, x, epochs=2, batch_size=5, seed=1, progress=False,
                      compile=compile)
        results.append((history, [p.detach().clone() for p in vae.parameters()]))
    (plain_history, plain), (compiled_history, compiled) = results
    assert [r["train_loss"] for r in compiled_history] == [r["train_loss"] for r in plain_history]
    for p, q in zip(plain, compiled):
        torch.testing.assert_close(q, p, rtol=0, atol=0)
    with pytest.raises(ValueError, match="num_particles"):
        fit(vae.model, vae.guide, x, epochs=1, num_particles=2, compile=True, progress=False)


@pytest.mark.parametrize("compile, message", [
    (2, "compile must be True, False or a torch.compile backend name"),
    ("EAGER", "not a torch.compile backend.*'eager'"),
])
def test_fit_refuses_a_bad_compile_before_running_the_pair(compile, message):
    vae, x = small_vae_and_images()
    calls = []
    vae.model = lambda *args: calls.append(args)  # never to be called
    with pytest.raises(ValueError, match=message):
        fit(vae.model, vae.guide, x, epochs=1, compile=compile, progress=False)
    assert calls == []


def test_fit_takes_a_backend_name():
    """``compile="eager"`` replays the traced step: the default step's numbers exactly."""
    results = []
    for compile in (False, "eager"):
        pyro.clear_param_store()
        vae, x = small_vae_and_images()
        history = fit(vae.model, vae.guide, x, epochs=1, batch_size=5, seed=2, progress=False,
                      compile=compile)
        results.append(history[-1]["train_loss"])
    assert results[0] == results[1]


def test_new_batches_of_one_shape_are_graph_inputs():
    # the second batch must be scored as itself, not as the batch the graph was traced with
    vae, x = small_vae_and_images()
    other = 1.0 - x
    step = CompiledSVIStep(vae.model, vae.guide, backend="eager")
    eager = SVIStep(vae.model, vae.guide)
    for batch in (x, other):
        pyro.set_rng_seed(2)
        compiled_loss = step.loss_and_grads(batch)
        vae.zero_grad(set_to_none=True)
        pyro.set_rng_seed(2)
        eager_loss = eager.loss_and_grads(vae.model, vae.guide, batch)
        vae.zero_grad(set_to_none=True)
        assert compiled_loss == pytest.approx(eager_loss, rel=1e-12)
    assert len(step._graphs) == 1


class _NumpyJitter(torch.nn.Module):
    """A pair whose model draws a shift from numpy's generator: a trace freezes one draw."""

    def __init__(self):
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(()))

    def model(self, x):
        import numpy

        shift = float(numpy.random.randn()) * 2.0
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(self.loc + shift, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(self, x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(x / 2, 0.7))


def test_a_pair_drawing_outside_torch_is_refused_before_its_first_step():
    # numpy's draw was frozen into the graph: compiled training drifted to 1 - shift
    pyro.clear_param_store()
    pair = _NumpyJitter()
    step = CompiledSVIStep(pair.model, pair.guide, backend="eager")
    with pytest.raises(ValueError, match="differs from the eager step's .* numpy's"):
        step.step(torch.randn(8))
    assert float(pair.loc) == 0.0


def test_tracing_and_checking_leave_batch_norm_statistics_alone():
    class Normed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = torch.nn.BatchNorm1d(2)

        def model(self, x):
            pyro.module("normed", self)
            with pyro.plate("data", len(x)):
                z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(self.norm(z), 1.0).to_event(1), obs=x)

        def guide(self, x):
            with pyro.plate("data", len(x)):
                pyro.sample("z", dist.Normal(x, 0.5).to_event(1))

    pyro.clear_param_store()
    pair, x = Normed(), torch.randn(6, 2)
    step = CompiledSVIStep(pair.model, pair.guide, backend="eager")
    for _ in range(3):
        step.step(x)
    assert int(pair.norm.num_batches_tracked) == 3


class _SharedScalePair(torch.nn.Module):
    """Model and guide share ``log_scale``: DReG's detached guide would drop its guide-side
    gradient, so neither the compiled nor the eager lean DReG path may take the pair."""

    def __init__(self):
        super().__init__()
        self.log_scale = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.loc = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def model(self, x):
        pyro.module("pair", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, self.log_scale.exp()))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(self, x):
        pyro.module("pair", self)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.loc + 0 * x, self.log_scale.exp()))


def test_dreg_with_a_parameter_shared_by_model_and_guide():
    pair, x = _SharedScalePair(), torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    with pyro.get_param_store().scope():
        with pytest.raises(ValueError, match=r"compiled 'dreg' steps need model and guide to "
                                             r"use separate parameters \(register each network "
                                             r"in one of them only.*\); or use fit without"):
            CompiledSVIStep(pair.model, pair.guide, loss="dreg", num_particles=3,
                            backend="eager").loss_and_grads(x)
    with pyro.get_param_store().scope():
        eager = SVIStep(pair.model, pair.guide, loss="dreg", num_particles=3)
        eager.loss_and_grads(pair.model, pair.guide, x)
        assert eager._lean is False  # DReGLoss's own path, which keeps the shared gradient


def test_a_compiled_fit_resumes_where_the_uninterrupted_run_ends(tmp_path, monkeypatch):
    # Adam's moments and step counts stay in the optimizer's state, which the checkpoint
    # holds: two epochs, then two more resumed, end as four straight
    import inference.training.compiled_step

    monkeypatch.setattr(inference.training.compiled_step, "DEFAULT_BACKEND", "eager")

    def train(epochs, resume, path):
        pyro.clear_param_store()
        vae, x = small_vae_and_images()
        history = fit(vae.model, vae.guide, x, epochs=epochs, batch_size=5, seed=2,
                      compile=True, checkpoint=path, resume=resume, progress=False)
        return vae, history

    straight, straight_history = train(4, False, tmp_path / "straight.pt")
    train(2, False, tmp_path / "split.pt")
    resumed, resumed_history = train(4, True, tmp_path / "split.pt")
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, atol=0, rtol=0)
    assert [r["train_loss"] for r in resumed_history] == [r["train_loss"] for r in straight_history]


def test_the_compiled_step_trains_a_pyro_param_read_through_the_param_store(monkeypatch):
    # LinearGaussian's PyroParams (noise_scale, guide_scale_tril) are read under @pyro_method
    # through Pyro's param store, which holds the parameter itself: a trace on copies of the
    # parameters (tried for an Adam update inside the graph) saw no gradient for them and
    # left them at their initial values; compile="eager" follows the uncompiled fit
    import inference.training.compiled_step
    from ppl_models import LinearGaussian

    monkeypatch.setattr(inference.training.compiled_step, "DEFAULT_BACKEND", "eager")
    x = LinearGaussian(5, 2, seed=9).simulate(32, seed=1).detach()
    results = {}
    for compile in (False, True):
        pyro.clear_param_store()
        model = LinearGaussian(5, 2, seed=0)
        history = fit(model.model, model.guide, x, epochs=3, batch_size=8, seed=1, lr=1e-2,
                      compile=compile, progress=False)
        results[compile] = history, {k: v.detach().clone() for k, v in model.named_parameters()}
    (plain, plain_params), (folded, folded_params) = results[False], results[True]
    assert [r["train_loss"] for r in folded] == pytest.approx(
        [r["train_loss"] for r in plain], rel=1e-5)
    initial = LinearGaussian(5, 2, seed=0)
    for name, value in plain_params.items():
        torch.testing.assert_close(folded_params[name], value, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(folded_params["noise_scale_unconstrained"],
                              initial.noise_scale_unconstrained)


def test_the_backend_trial_refuses_a_missing_package_after_many_other_backends():
    # the trial compiled one lambda with torch.compile: after 8 backends dynamo's recompile
    # limit ran it uncompiled, and a missing package's backend passed
    import importlib.util

    from torch._dynamo import list_backends

    from inference.compiling import check_backend

    if importlib.util.find_spec("tvm") is not None:
        pytest.skip("Apache TVM is installed here")
    tried = 0
    for backend in list_backends(exclude_tags=()):
        if backend in ("tvm", "openxla", "openxla_eval"):
            continue
        try:
            check_backend(backend, "compile")
        except ValueError:
            pass
        tried += 1
    assert tried >= 9
    with pytest.raises(ValueError, match=r"compile='tvm': torch lists the backend, but it fails"):
        check_backend("tvm", "compile")


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_a_compiled_step_trains_alike_whatever_the_callers_gradient_mode(mode):
    # Under torch.no_grad() the first step failed in dynamo's trace with torch's raw
    # "element 0 of tensors does not require grad".
    params = {}
    for name, context in (("reference", torch.enable_grad), ("mode", mode)):
        vae, x = small_vae_and_images()
        with pyro.get_param_store().scope():
            step = CompiledSVIStep(vae.model, vae.guide, backend="eager")
            pyro.set_rng_seed(0)
            with context():
                for _ in range(2):
                    step.step(x * 1)
        params[name] = [p.detach().clone() for p in vae.parameters()]
    initial = [p.detach() for p in small_vae_and_images()[0].parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(params["reference"], initial))
    for a, b in zip(params["mode"], params["reference"]):
        assert torch.equal(a, b)
