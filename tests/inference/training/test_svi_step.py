"""SVIStep: the lean path gives Pyro's ELBO losses and gradients, and the hand-written ones."""

import importlib.util
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference.training.objectives import make_loss
from inference.training.svi_step import Adam, SVIStep, score_pair
from inference import fit
from inference.training import scale_data_plate
from ppl_models.vae import VAE

BENCHMARK = Path(__file__).resolve().parents[3] / "benchmarks" / "svi_step_overhead.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("svi_step_overhead", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def small_vae():
    torch.manual_seed(1)
    return VAE((1, 4, 4), latent_dim=3, hidden=(5,)).double()


def binary_images(n=6):
    return (torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(2)) < 0.4).double()


def lean_loss_and_grads(pair, x, loss, scale, seed):
    step = SVIStep(pair.model, pair.guide, loss=loss)
    with scale_data_plate(scale):
        step.loss_and_grads(pair.model, pair.guide, x)  # the first call picks the path
        pair.zero_grad(set_to_none=True)
        pyro.set_rng_seed(seed)
        value = step.loss_and_grads(pair.model, pair.guide, x)
    return step, value, [p.grad.clone() for p in pair.parameters()]


@pytest.mark.parametrize("loss", ["elbo", "meanfield"])
def test_lean_step_equals_pyro_and_hand_written(loss):
    # float64 and the same draws: the three computations differ only by rounding order
    # (measured differences below 1e-13 relative), so 1e-10 would catch any wrong term.
    benchmark = load_benchmark()
    x, scale = binary_images(), 7.5
    ours, hand, reference = small_vae(), small_vae(), small_vae()
    step, ours_loss, ours_grads = lean_loss_and_grads(ours, x, loss, scale, seed=3)
    assert step.lean
    pyro.set_rng_seed(3)
    with scale_data_plate(scale):
        pyro_loss = make_loss(loss).loss_and_grads(reference.model, reference.guide, x)
    pyro.set_rng_seed(3)
    hand_loss = benchmark.hand_written_loss(hand, x, None, scale, analytic_kl=loss == "meanfield")
    hand_loss.backward()
    assert ours_loss == pytest.approx(pyro_loss, rel=1e-10)
    assert ours_loss == pytest.approx(hand_loss.item(), rel=1e-10)
    for g, g_pyro, p_hand in zip(ours_grads, reference.parameters(), hand.parameters()):
        torch.testing.assert_close(g, g_pyro.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g, p_hand.grad, rtol=1e-10, atol=1e-12)


def global_and_local(x):
    g = pyro.param("g_loc", torch.tensor(0.3, dtype=x.dtype))
    mu = pyro.sample("mu", dist.Normal(g, 1.0))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(mu, 1.0))
        pyro.sample("x", dist.Normal(z, 0.5), obs=x)


def global_and_local_guide(x):
    m = pyro.param("m", torch.tensor(0.1, dtype=x.dtype))
    w = pyro.param("w", torch.tensor(0.5, dtype=x.dtype))
    pyro.sample("mu", dist.Normal(m, 0.7))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(w * x, 0.6))


@pytest.mark.parametrize("loss", ["elbo", "meanfield"])
def test_global_latent_is_not_scaled_like_pyro(loss):
    # A global latent outside the data plate keeps weight one under scale_data_plate; the lean
    # scorer must read each site's own scale (exact equality up to float64 rounding).
    x = torch.linspace(-1, 1, 5, dtype=torch.float64)
    step = SVIStep(global_and_local, global_and_local_guide, loss=loss)
    with scale_data_plate(4.0):
        step.loss_and_grads(global_and_local, global_and_local_guide, x)
        assert step.lean
        names = ["g_loc", "m", "w"]
        for name in names:
            pyro.param(name).unconstrained().grad = None
        pyro.set_rng_seed(5)
        ours = step.loss_and_grads(global_and_local, global_and_local_guide, x)
        ours_grads = [pyro.param(n).unconstrained().grad.clone() for n in names]
        for name in names:
            pyro.param(name).unconstrained().grad = None
        pyro.set_rng_seed(5)
        reference = make_loss(loss).loss_and_grads(global_and_local, global_and_local_guide, x)
    assert ours == pytest.approx(reference, rel=1e-12)
    for name, g in zip(names, ours_grads):
        torch.testing.assert_close(g, pyro.param(name).unconstrained().grad, rtol=1e-12, atol=0)


def test_non_reparameterized_guide_keeps_pyros_objective():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            k = pyro.sample("k", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(k, 1.0), obs=x)

    def guide(x):
        p = pyro.param("p", torch.tensor(0.4))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("k", dist.Bernoulli(p))

    step = SVIStep(model, guide)
    step.step(torch.zeros(3))
    assert not step.lean  # the score-function term needs Pyro's surrogate
    assert pyro.param("p").unconstrained() in step.optim.optimizer.param_groups[0]["params"]


def weighted_step_and_reference(model, guide, x, loss, k, scale, seed, params):
    """Ours (SVIStep's weighted lean path) and IWAELoss/DReGLoss on the same draws:
    ``(step, ours loss, ours grads, reference loss, reference grads)``; ``params()`` lists
    the leaves whose gradients are compared."""
    step = SVIStep(model, guide, loss=loss, num_particles=k)
    with scale_data_plate(scale):
        step.loss_and_grads(model, guide, x)  # the first call picks the path
        for p in params():
            p.grad = None
        pyro.set_rng_seed(seed)
        ours = step.loss_and_grads(model, guide, x)
        ours_grads = [p.grad.clone() for p in params()]
        for p in params():
            p.grad = None
        pyro.set_rng_seed(seed)
        reference = make_loss(loss, k).loss_and_grads(model, guide, x)
        reference_grads = [p.grad.clone() for p in params()]
    return step, ours, ours_grads, reference, reference_grads


@pytest.mark.parametrize("k", [1, 5])
@pytest.mark.parametrize("loss", ["iwae", "dreg"])
def test_weighted_lean_path_equals_reference_objective_and_hand_written(loss, k):
    # float64, same draws: IWAELoss/DReGLoss (Pyro traces, log_prob of every site, DReG's two
    # surrogates and two backward passes) and the hand-written step differ from the lean path
    # only by rounding order (measured ~1e-15 relative); a wrong weight or a missing w~ factor
    # in DReG's guide gradient would be off by O(1).
    benchmark = load_benchmark()
    x, scale = binary_images(), 7.5
    ours = small_vae()
    step, value, grads, ref_value, ref_grads = weighted_step_and_reference(
        ours.model, ours.guide, x, loss, k, scale, seed=3, params=ours.parameters)
    assert step.lean
    assert value == pytest.approx(ref_value, rel=1e-10)
    for g, g_ref in zip(grads, ref_grads):
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)
    hand = small_vae()
    pyro.set_rng_seed(3)
    hand_loss = benchmark.hand_loss(hand, x, None, scale, loss, k)
    hand_loss.backward()
    assert value == pytest.approx(hand_loss.item(), rel=1e-10)
    for g, p_hand in zip(grads, hand.parameters()):
        torch.testing.assert_close(g, p_hand.grad, rtol=1e-10, atol=1e-12)


def two_level_model(x):
    # x: [batch, 3]; an inner plate (nesting 2), a masked observation, z2 depends on z1
    w = pyro.param("w_model", torch.tensor([0.5, -0.3, 0.8], dtype=x.dtype))
    with pyro.plate("data", x.shape[0], dim=-2):
        z1 = pyro.sample("z1", dist.Normal(x.new_zeros(()), 1.0).expand([1, 1]))
        with pyro.plate("cols", 3, dim=-1):
            z2 = pyro.sample("z2", dist.Normal(w * z1, 1.0))
            mask = torch.arange(3) != 1
            pyro.sample("x", dist.Normal(z2, 0.4).mask(mask), obs=x)


def two_level_guide(x):
    a = pyro.param("a", torch.tensor(0.7, dtype=x.dtype))
    b = pyro.param("b", torch.tensor([0.2, 0.1, -0.4], dtype=x.dtype))
    s = pyro.param("s", torch.tensor(0.6, dtype=x.dtype), constraint=dist.constraints.positive)
    with pyro.plate("data", x.shape[0], dim=-2):
        z1 = pyro.sample("z1", dist.Normal(a * x.mean(-1, keepdim=True), s))
        with pyro.plate("cols", 3, dim=-1):
            pyro.sample("z2", dist.Normal(x + b * z1, s * 0.5))


@pytest.mark.parametrize("loss", ["iwae", "dreg"])
def test_weighted_lean_path_with_inner_plates_masks_and_dependent_latents(loss):
    # z2's guide depends on z1, a masked site, an inner plate: equal to the reference to
    # 1e-10. DReG with such a guide takes DReGLoss's path, which keeps z1's path through
    # q(z2 | z1) (tests/inference/training/test_dreg_conditional.py checks it by hand).
    x = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(4, 3)
    names = ["w_model", "a", "b", "s"]

    def params():
        return [pyro.param(n).unconstrained() for n in names]

    step, value, grads, ref_value, ref_grads = weighted_step_and_reference(
        two_level_model, two_level_guide, x, loss, 4, 3.0, seed=6, params=params)
    assert step.lean == (loss == "iwae")
    assert value == pytest.approx(ref_value, rel=1e-10)
    for g, g_ref in zip(grads, ref_grads):
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


def test_dreg_with_a_parameter_shared_by_model_and_guide_keeps_dregloss():
    # DReGLoss gives a shared parameter the model's (IWAE) gradient only; the lean path's one
    # backward could not, so it must step aside.
    def model(x):
        c = pyro.param("c", torch.tensor(0.3, dtype=x.dtype))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(c, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(x):
        c = pyro.param("c", torch.tensor(0.3, dtype=x.dtype))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(c * x, 0.8))

    x = torch.linspace(-1, 1, 5, dtype=torch.float64)
    with pytest.warns(UserWarning, match="get the IWAE gradient"):
        step, value, grads, ref_value, ref_grads = weighted_step_and_reference(
            model, guide, x, "dreg", 3, 1.0, seed=2,
            params=lambda: [pyro.param("c").unconstrained()])
    assert not step.lean
    assert value == pytest.approx(ref_value, rel=1e-12)
    torch.testing.assert_close(grads[0], ref_grads[0], rtol=1e-12, atol=0)


@pytest.mark.parametrize("loss", ["iwae", "dreg"])
def test_weighted_losses_refuse_a_non_reparameterized_guide(loss):
    # the importance-weighted objectives follow pathwise gradients only: for a discrete
    # guide site they used to train with the score-function term missing (a gradient of the
    # wrong sign against enumeration), where fit(loss='iwae') already refused
    def model(x):
        with pyro.plate("data", x.shape[0]):
            k = pyro.sample("k", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(k, 1.0), obs=x)

    def guide(x):
        p = pyro.param("p", torch.tensor(0.4))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("k", dist.Bernoulli(p))

    pyro.clear_param_store()
    step = SVIStep(model, guide, loss=loss, num_particles=3)
    with pytest.raises(ValueError, match="guide site 'k' \\(Bernoulli\\) is not reparameterized"):
        step.step(torch.zeros(3))
    assert float(pyro.param("p")) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="guide site 'k'"):
        make_loss(loss, 3).loss_and_grads(model, guide, torch.zeros(3))


def test_optimizer_state_round_trip_equals_uninterrupted_training():
    # Adam's moments travel by param-store name; restored into a fresh stepper, the next steps
    # are those of an uninterrupted run (same draws), to the last bit.
    x = binary_images()
    uninterrupted, resumed = small_vae(), small_vae()
    step = SVIStep(uninterrupted.model, uninterrupted.guide, Adam(0.05))
    for seed in range(4):
        pyro.set_rng_seed(seed)
        step.step(x)
    pyro.clear_param_store()
    first = SVIStep(resumed.model, resumed.guide, Adam(0.05))
    for seed in range(2):
        pyro.set_rng_seed(seed)
        first.step(x)
    state = first.optim.get_state()
    assert len(state) == len(list(resumed.parameters()))
    second = SVIStep(resumed.model, resumed.guide, Adam(0.05))
    second.optim.set_state(state)
    for seed in range(2, 4):
        pyro.set_rng_seed(seed)
        second.step(x)
    for a, b in zip(uninterrupted.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def train_steps(optim, seeds, pair=None):
    pair = pair if pair is not None else small_vae()
    step = SVIStep(pair.model, pair.guide, optim)
    for seed in seeds:
        pyro.set_rng_seed(seed)
        step.step(binary_images())
    return pair, step


def test_fused_adam_is_the_default_and_takes_torchs_steps():
    # The fused kernel computes torch's Adam update in one pass: in float64 the parameters
    # after five steps agree with the per-tensor loop to rounding.
    pyro.clear_param_store()
    fused, fused_step = train_steps(Adam(0.05), range(5))
    pyro.clear_param_store()
    looped, looped_step = train_steps(Adam(0.05, fused=False), range(5))
    assert fused_step.optim.optimizer.defaults["fused"]
    assert not looped_step.optim.optimizer.defaults["fused"]
    for a, b in zip(fused.parameters(), looped.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fused_first", [True, False])
def test_optimizer_state_moves_between_fused_and_looped_adam(fused_first):
    pyro.clear_param_store()
    uninterrupted, _ = train_steps(Adam(0.05, fused=False), range(4))
    pyro.clear_param_store()
    resumed, first = train_steps(Adam(0.05, fused=fused_first), range(2))
    optim = Adam(0.05, fused=not fused_first)
    optim.set_state(first.optim.get_state())
    train_steps(optim, range(2, 4), pair=resumed)
    for a, b in zip(uninterrupted.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_values_set_by_other_handlers_are_scored_by_their_log_prob():
    # A guide draw is scored from its standard-normal noise (the same value and gradient as
    # Normal.log_prob for the distribution's own draw). Under poutine.replay the guide's z is
    # a fixed tensor instead: log q(z) then has a gradient in the encoder's mean head, which
    # the draw-based form would drop, so the scorer must use log_prob; gradients equal Pyro's.
    pair, x = small_vae(), binary_images()
    fixed = pyro.poutine.trace(pair.guide).get_trace(x)
    for site in fixed.nodes.values():
        if site["type"] == "sample":
            site["value"] = site["value"].detach()
    with scale_data_plate(1.0):
        drawn = score_pair(pair.model, pair.guide, (x,), {}, analytic_kl=False)
    assert "z" in drawn.own_draws
    grads = {}
    for name in ("ours", "pyro"):
        pair.zero_grad(set_to_none=True)
        with pyro.poutine.replay(trace=fixed):
            if name == "ours":
                scorer = score_pair(pair.model, pair.guide, (x,), {}, analytic_kl=False)
                assert "z" not in scorer.own_draws
                (-scorer.elbo).backward()
            else:
                make_loss("elbo").loss_and_grads(pair.model, pair.guide, x)
        grads[name] = [p.grad.clone() for p in pair.parameters()]
    assert any(g.abs().max() > 1e-3 for g in grads["ours"])
    for ours, pyros in zip(grads["ours"], grads["pyro"]):
        torch.testing.assert_close(ours, pyros, rtol=1e-10, atol=1e-12)


def test_tensor_step_returns_the_loss_without_reading_it():
    # The same step as step(), the loss left as a detached 0-dim tensor (fit reads the sum of
    # an epoch's losses once).
    losses = {}
    for kind in ("step", "tensor_step"):
        pyro.clear_param_store()
        pair = small_vae()
        stepper = SVIStep(pair.model, pair.guide, Adam(0.05))
        pyro.set_rng_seed(0)
        losses[kind] = [getattr(stepper, kind)(binary_images()) for _ in range(3)]
    assert all(torch.is_tensor(v) and v.dim() == 0 and not v.requires_grad
               for v in losses["tensor_step"])
    assert [float(v) for v in losses["tensor_step"]] == losses["step"]


def _shift_pair():
    def model(x):
        shift = pyro.sample("shift", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(shift, 1.0), obs=x)

    def guide(x):
        pyro.sample("shift", dist.Normal(pyro.param("mean", torch.tensor(0.0)), 0.5))

    return model, guide


@pytest.mark.parametrize("optim, message", [
    (torch.optim.Adam, "got the class torch.optim.adam.Adam"),
    (torch.optim.Adam([torch.zeros(1, requires_grad=True)]), "built on a fixed list"),
    ({"lr": 0.1}, "must be an optimizer, got dict"),
])
def test_an_optimizer_that_cannot_step_the_pair_is_refused(optim, message):
    # torch.optim.Adam (the class) used to be called on each step's parameters, building an
    # optimizer that never stepped: training silently did nothing
    model, guide = _shift_pair()
    with pytest.raises(TypeError, match=message):
        SVIStep(model, guide, optim)


def test_adams_fused_flag_is_checked():
    with pytest.raises(TypeError, match="fused must be True, False or None, got 'yes'"):
        Adam(0.1, fused="yes")


@pytest.mark.parametrize("optim", [Adam(0.1), pyro.optim.Adam({"lr": 0.1}),
                                   pyro.optim.ClippedAdam({"lr": 0.1})])
def test_our_and_pyros_optimizers_move_the_parameters(optim):
    # posterior mean of the shift: sum(x) / (N + 1/100) = 2.0 for 50 datapoints of mean 2.0
    pyro.clear_param_store()
    model, guide = _shift_pair()
    x = torch.randn(50, generator=torch.Generator().manual_seed(0))
    x = x - x.mean() + 2.0
    step = SVIStep(model, guide, optim)
    for _ in range(300):
        step.step(x)
    assert float(pyro.param("mean")) == pytest.approx(2.0 * 50 / 50.01, abs=0.15)


def _weighted_pair(weights, scale_observed=1.0):
    """z ~ N(0, 1), x ~ N(z, 1) per datapoint; ``weights`` scale every site of a datapoint,
    ``scale_observed`` the likelihood alone."""

    def model(x):
        with pyro.plate("data", len(x)), pyro.poutine.scale(scale=weights):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            with pyro.poutine.scale(scale=scale_observed):
                pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        loc = pyro.param("loc", torch.zeros(len(x)))
        with pyro.plate("data", len(x)), pyro.poutine.scale(scale=weights):
            pyro.sample("z", dist.Normal(loc, 0.8))

    return model, guide


def test_per_datapoint_weights_in_the_elbo_equal_pyros():
    # a tensor poutine.scale used to fail in the lean step ("grad can be implicitly created
    # only for scalar outputs")
    weights = torch.tensor([0.5, 1.0, 2.0, 3.0, 0.1])
    model, guide = _weighted_pair(weights)
    x = torch.randn(5, generator=torch.Generator().manual_seed(0))
    results = []
    for run in (lambda: SVIStep(model, guide).loss_and_grads(model, guide, x),
                lambda: pyro.infer.Trace_ELBO().loss_and_grads(model, guide, x)):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        loss = run()
        results.append((loss, pyro.param("loc").grad.clone()))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    torch.testing.assert_close(results[0][1], results[1][1])


@pytest.mark.parametrize("loss", ["iwae", "dreg"])
@pytest.mark.parametrize("weights, scale_observed, site", [
    (1.0, 0.1, "'x' carries scale 0.1"),
    (torch.tensor([0.5, 1.0, 2.0]), 1.0, "a tensor of differing entries"),
])
def test_weighted_losses_refuse_site_specific_scales(loss, weights, scale_observed, site):
    # a tempered likelihood used to be scored untempered, per-datapoint weights as the first
    # datapoint's weight times the unweighted bound
    model, guide = _weighted_pair(weights, scale_observed)
    pyro.clear_param_store()
    for lean in (True, False):
        with pytest.raises(ValueError, match=site):
            SVIStep(model, guide, loss=loss, num_particles=4, lean=lean).step(torch.zeros(3))


def test_kl_warm_up_is_refused_for_the_weighted_losses():
    model, guide = _weighted_pair(1.0)
    pyro.clear_param_store()
    with pytest.raises(ValueError, match="kl_warmup_epochs"):
        fit(model, guide, torch.zeros(3), loss="iwae", num_particles=4, epochs=2,
            kl_warmup_epochs=2, progress=False, device="cpu")  # the pair's params are on CPU
    assert "loc" not in pyro.get_param_store()  # refused with the arguments: the pair never ran


def test_step_refuses_a_nan_loss_without_stepping():
    # with Pyro's validation off nothing else notices NaN parameters: SVI.step would return
    # NaN and step on NaN gradients; SVIStep.step names it and leaves the parameters alone
    def model(x):
        loc = pyro.param("loc", torch.tensor(float("nan")))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    def guide(x):
        pass

    with pyro.get_param_store().scope(), pyro.validation_enabled(False):
        step = SVIStep(model, guide)
        with pytest.raises(FloatingPointError, match="SVIStep.step: the loss is nan, not applied"):
            step.step(torch.zeros(3))
        assert pyro.param("loc").grad is None


def _live_tensors() -> int:
    import gc

    gc.collect()  # what is left is held, not merely waiting for the collector
    return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


@pytest.mark.parametrize("loss, particles", [("elbo", 1), ("meanfield", 1), ("iwae", 4),
                                             ("dreg", 4)])
def test_steps_leave_no_tensors_behind(loss, particles):
    # DReG's gradient hook held the scorer, which held the hooked value: a cycle through the
    # autograd graph that Python's collector cannot free, 8 MB a step on the 784-400-50 VAE
    from ppl_models import LinearGaussian

    pair = LinearGaussian(data_dim=3, latent_dim=2, seed=0)
    x = LinearGaussian(data_dim=3, latent_dim=2, seed=9).simulate(32, seed=1).detach()
    step = SVIStep(pair.model, pair.guide, Adam(1e-3), loss=loss, num_particles=particles)
    counts = []
    for _ in range(3):  # the first window may fill caches once; then no growth
        for _ in range(10):
            step.step(x)
        counts.append(_live_tensors())
    assert counts[2] <= counts[1], counts  # (it grew by 9 tensors a step)


def test_meanfield_keeps_the_log_density_of_a_delta_guide_site():
    """``Delta(v, log_density=q.log_prob(v))`` with ``v = q.rsample()`` (a hand
    reparameterization): the KL Pyro registers for a Delta, ``-log p(v)``, drops the
    log_density, so ``fit(loss="meanfield")`` lost the entropy term and trained the scale
    to 0.12 (the ELBO's optimum is 0.707). With no closed form for a Delta, both losses
    now score the same surrogate: the same history on the same seed."""
    x = torch.randn(400, generator=torch.Generator().manual_seed(0))

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        loc = pyro.param("a", torch.tensor(0.3))
        scale = pyro.param("s", torch.tensor(0.9), constraint=dist.constraints.positive)
        with pyro.plate("data", len(x)):
            q = dist.Normal(loc * x, scale)
            value = q.rsample()
            pyro.sample("z", dist.Delta(value, log_density=q.log_prob(value)))

    results = {}
    for loss in ("elbo", "meanfield"):
        pyro.clear_param_store()
        history = fit(model, guide, x, loss=loss, epochs=3, batch_size=100, lr=0.05, seed=1,
                      progress=False)
        results[loss] = ([r["train_loss"] for r in history],
                         float(pyro.param("s").detach()))
    assert results["meanfield"] == results["elbo"]
    assert results["elbo"][1] > 0.5  # toward 0.707, not collapsing


@pytest.mark.parametrize("event", [False, True], ids=["scalar", "to_event"])
@pytest.mark.parametrize("num_particles", [1, 3])
def test_every_analytic_kl_objective_keeps_a_delta_guide_sites_log_density(event, num_particles):
    # make_loss("meanfield") (Pyro's TraceMeanField_ELBO, which fit's non-lean steps and
    # user SVI loops run) and FreeBitsELBO took KL(Delta || p) = -log p(v): the guide's
    # log_density vanished from the loss. With only a Delta latent, both must equal
    # Trace_ELBO on the same draws.
    from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

    from inference import FreeBitsELBO, make_loss

    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))

    def model(x):
        with pyro.plate("data", len(x)):
            prior = dist.Normal(torch.zeros(2), 1.0)
            z = pyro.sample("z", prior.to_event(1) if event else prior.expand([len(x), 2])
                            .to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            q = dist.Normal(0.5 * x, 0.7).to_event(1)
            value = q.rsample()
            delta = (dist.Delta(value, log_density=q.log_prob(value), event_dim=1) if event
                     else dist.Delta(value, log_density=q.log_prob(value)[..., None] / 2)
                     .to_event(1))
            pyro.sample("z", delta)

    def loss_of(objective):
        pyro.set_rng_seed(3)
        return float(objective.loss(model, guide, x))

    vectorize = {"num_particles": num_particles, "vectorize_particles": num_particles > 1}
    reference = loss_of(Trace_ELBO(**vectorize))
    assert loss_of(make_loss("meanfield", num_particles)) == pytest.approx(reference, rel=1e-6)
    assert abs(loss_of(TraceMeanField_ELBO(**vectorize)) - reference) > 1  # Pyro's drops it
    if num_particles == 1:
        assert loss_of(FreeBitsELBO(0.0)) == pytest.approx(reference, rel=1e-6)


def _steps_under(mode, loss: str, kind: str = "step", particles: int = 1):
    """The parameters of a small VAE after 3 steps taken inside ``mode`` (a context factory,
    or None), the data made inside it too."""
    pyro.clear_param_store()
    pair = small_vae()
    stepper = SVIStep(pair.model, pair.guide, Adam(0.05), loss=loss, num_particles=particles)
    pyro.set_rng_seed(0)
    with mode() if mode else torch.enable_grad():
        x = binary_images() * 1  # an inference tensor under torch.inference_mode()
        for _ in range(3):
            getattr(stepper, kind)(x)
    return [p.detach().clone() for p in pair.parameters()]


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode,
                                  lambda: torch.set_grad_enabled(False)])
@pytest.mark.parametrize("loss, particles, kind", [
    ("elbo", 1, "step"), ("elbo", 1, "tensor_step"), ("iwae", 3, "step"), ("dreg", 3, "step"),
])
def test_steps_train_alike_whatever_the_callers_gradient_mode(mode, loss, particles, kind):
    # A step inside an evaluation block (torch.no_grad, inference_mode) returned normal
    # losses and moved no parameter. It takes the same steps as with gradients on.
    reference = _steps_under(None, loss, kind, particles)
    moved = _steps_under(mode, loss, kind, particles)
    assert any(not torch.equal(a, b) for a, b in zip(reference, _initial_parameters()))
    for a, b in zip(moved, reference):
        assert torch.equal(a, b)


def _initial_parameters():
    return [p.detach().clone() for p in small_vae().parameters()]


@pytest.mark.parametrize("call", ["step", "evaluate_loss"])
def test_data_a_site_cannot_score_is_named_as_fit_names_it(call):
    # Bool data for a Normal site failed inside torch's Normal.log_prob ("Subtraction ... with
    # a bool tensor"); fit and the estimators named the site.
    model, guide = _shift_pair()
    x = torch.tensor([True, False, True])
    with pytest.raises(ValueError, match=r"observed site 'x' \(Normal\) cannot score its value "
                                         r"of dtype torch.bool.*x.float\(\)"):
        getattr(SVIStep(model, guide), call)(x)


def test_data_of_another_dtype_than_the_networks_is_named():
    # A plain pair whose float64 network meets float32 data failed inside F.linear.
    net = torch.nn.Linear(2, 1).double()

    def model(x):
        pyro.module("net", net)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 2, dtype=x.dtype), 1.0)
                            .to_event(1))
            pyro.sample("x", dist.Normal(net(z).squeeze(-1), 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(torch.zeros(len(x), 2, dtype=x.dtype), 1.0)
                        .to_event(1))

    with pytest.raises(TypeError, match=r"argument 0 is torch.float32 but the parameters of "
                                        r"the networks the pair uses are torch.float64"):
        SVIStep(model, guide).step(torch.randn(4))


@pytest.mark.parametrize("call", ["step", "evaluate_loss"])
def test_the_first_call_refuses_a_pair_that_would_train_on_nothing(call):
    # SVIStep ran no survey: the guide passed as the model trained at loss 0.000 for 100
    # steps, and with Pyro's validation off a Bernoulli VAE trained on pixels of 3 to a loss
    # of -2.4e9 nats; fit and every estimator refuse both by name.
    model, guide = _shift_pair()
    x = torch.tensor([0.3, -1.2, 2.0])
    with pytest.raises(ValueError, match=r"the model observes no site .* Is the guide passed "
                                         r"as the model\?"):
        getattr(SVIStep(guide, guide), call)(x)

    def bernoulli_model(x):
        with pyro.plate("data", len(x)):
            p = pyro.sample("p", dist.Beta(1.0, 1.0))
            pyro.sample("x", dist.Bernoulli(p), obs=x)

    def beta_guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("p", dist.Beta(2.0, 2.0))

    counts = torch.tensor([0.0, 3.0, 1.0])
    with pyro.validation_enabled(False):
        with pytest.raises(ValueError, match=r"site 'x'.*3"):
            getattr(SVIStep(bernoulli_model, beta_guide), call)(counts)


def test_fit_does_not_check_twice_and_check_must_be_a_bool(monkeypatch):
    import inference.training.svi_step as svi_step

    calls = []
    monkeypatch.setattr(svi_step.SVIStep, "_check_pair",
                        lambda self, args, kwargs: calls.append(1))
    model, guide = _shift_pair()
    fit(model, guide, torch.tensor([0.3, -1.2, 2.0]), epochs=2, progress=False)
    assert calls == []  # fit's plan surveyed the pair on its first minibatch
    with pytest.raises(TypeError, match="check must be True or False, got 'yes'"):
        SVIStep(model, guide, check="yes")
