"""fit's arguments and its first-minibatch checks, round 2 of the training probe: what used
to fail mid-epoch inside Pyro or torch is refused before training, naming the cause."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import SVIStep, fit, plan_minibatches
from inference.training.distributed import TORCHRUN_VARIABLES, DataParallel

from .test_resume_round2 import _baseline_pair, _normal_pair

NUM_DATA = 20


@pytest.mark.parametrize("shuffle", [True, False])
def test_decaying_average_baseline_with_a_short_last_minibatch_is_refused(shuffle):
    # Pyro keeps the average per row of the first minibatch: torch's "size of tensor a (6)
    # must match ... (7)" at the third step, naming nothing
    model, guide = _baseline_pair()
    x = torch.randn(NUM_DATA)
    with pytest.raises(ValueError, match=r"guide site 'c' has a decaying-average baseline.*"
                                         r"batch_size=7 leaves a last minibatch of 6.*"
                                         r"e\.g\. batch_size=5") :
        fit(model, guide, x, loss=pyro.infer.TraceGraph_ELBO(), epochs=1, batch_size=7,
            shuffle=shuffle, progress=False)
    pyro.clear_param_store()
    history = fit(model, guide, x, loss=pyro.infer.TraceGraph_ELBO(), epochs=1,
                  batch_size=5, progress=False)
    assert len(history) == 1


def test_a_parameter_sized_by_the_first_minibatch_is_refused_before_training():
    # pyro.param("locs", zeros(len(x), 1)) met the short last minibatch at step 3: Pyro's
    # "Shape mismatch inside plate('data') at site z dim -1, 6 vs 7"
    x = torch.randn(NUM_DATA, 2)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.expand(*z.shape[:-1], 2), 0.5).to_event(1), obs=x)

    def guide(x):
        locs = pyro.param("locs", torch.zeros(x.shape[0], 1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(locs, 0.5).to_event(1))

    with pytest.raises(ValueError, match=r"parameter\(s\) \['locs'\] take their shape from "
                                         r"the first minibatch \(7 rows\).*last one, of 6 rows"
                                         r".*batch_size=7.*Shape mismatch"):
        fit(model, guide, x, epochs=1, batch_size=7, progress=False)
    pyro.clear_param_store()
    assert len(fit(model, guide, x, epochs=1, batch_size=10, progress=False)) == 1


def test_svi_step_refuses_a_pyro_optim_factory():
    # pyro.optim.Adam itself (not called): Pyro's AssertionError after the first backward
    model, guide = _normal_pair()
    with pytest.raises(TypeError, match=r"the factory pyro\.optim\.Adam, not an optimizer: "
                                        r"call it.*pyro\.optim\.Adam\(\{'lr': lr\}\)"):
        SVIStep(model, guide, pyro.optim.Adam)
    SVIStep(model, guide, pyro.optim.Adam({"lr": 0.01})).step(torch.randn(5))


def test_svi_step_evaluates_a_loss_without_a_step_as_svi_does():
    model, guide = _normal_pair()
    x = torch.randn(NUM_DATA)
    svi = SVIStep(model, guide, pyro.optim.Adam({"lr": 0.1}))
    svi.step(x)
    before = {name: value.detach().clone() for name, value in pyro.get_param_store().items()}
    pyro.set_rng_seed(5)
    ours = svi.evaluate_loss(x)
    pyro.set_rng_seed(5)
    theirs = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.1}),
                            pyro.infer.Trace_ELBO()).evaluate_loss(x)
    assert isinstance(ours, float) and ours == pytest.approx(theirs, rel=1e-6)
    for name, value in pyro.get_param_store().items():
        assert torch.equal(value, before[name]) and value.unconstrained().grad is None


def test_fit_points_an_optimizer_or_a_schedule_given_as_lr_to_svi_step():
    model, guide = _normal_pair()
    for lr in ({"lr": 0.1}, pyro.optim.Adam({"lr": 0.1})):
        with pytest.raises(ValueError, match=r"lr must be a number.*fit trains with Adam\(lr\)"
                                             r".*inference\.SVIStep"):
            fit(model, guide, torch.randn(NUM_DATA), lr=lr, progress=False)


def test_an_unknown_loss_name_offers_what_fit_takes():
    # it offered 'elbo-free-bits', which fit then refused (it needs its free bits)
    model, guide = _normal_pair()
    with pytest.raises(ValueError, match=r"unknown loss 'IWAE' \(did you mean 'iwae'\?\); "
                                         r"choose one of 'elbo', 'meanfield', 'iwae', 'dreg', "
                                         r"or a loss object such as FreeBitsELBO"):
        fit(model, guide, torch.randn(NUM_DATA), loss="IWAE", progress=False)


def test_plan_minibatches_checks_its_arguments_as_fit_does():
    model, guide = _normal_pair()
    x = torch.randn(NUM_DATA)
    settings = dict(batch_size=5, loss="elbo", num_particles=1, shuffle=True)
    with pytest.raises(TypeError, match=r"data must be a tuple \(or list\) of \[N, \.\.\.\] "
                                        r"tensors.*got a Tensor \(pass \(x,\)"):
        plan_minibatches(model, guide, x, **settings)
    with pytest.raises(ValueError, match=r"unknown loss 'elbow'"):
        plan_minibatches(model, guide, (x,), **{**settings, "loss": "elbow"})
    with pytest.raises(ValueError, match=r"batch_size must be a positive integer, got 0"):
        plan_minibatches(model, guide, (x,), **{**settings, "batch_size": 0})
    with pytest.raises(ValueError, match=r"num_particles must be a positive integer, got 0"):
        plan_minibatches(model, guide, (x,), **{**settings, "num_particles": 0})
    assert plan_minibatches(model, guide, (x,), **settings).model_scales is False
    # a list, as fit takes it
    assert plan_minibatches(model, guide, [x], **settings).model_scales is False


def test_data_parallel_outside_torchrun_names_the_missing_environment(monkeypatch):
    # torch's "Default process group has not been initialized" named nothing to do
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match=r"DataParallel needs the default process group.*"
                                         r"missing environment variables RANK, WORLD_SIZE"):
        DataParallel(torch.device("cpu"))
