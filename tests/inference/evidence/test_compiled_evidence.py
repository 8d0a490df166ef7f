"""compile=True of the evidence estimators: the compiled graph gives the eager weights on the
same draws, follows the module's parameters, and refuses what one trace cannot stand for."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, PyroParam

from inference import bound_sweep, elbo, iwae_bound, log_evidence, log_importance_weights
from inference.weights import compiled_graph_count
from ppl_models.vae import VAE


def small_vae_and_images(seed=0):
    torch.manual_seed(seed)
    vae = VAE((1, 4, 4), latent_dim=2, hidden=(3,)).double()
    x = (torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(1)) < 0.4).double()
    return vae, x


def eager_then_traced(estimator, vae, *args, **kwargs):
    pyro.set_rng_seed(3)
    eager = estimator(vae.model, vae.guide, *args, **kwargs)
    pyro.set_rng_seed(3)
    traced = estimator(vae.model, vae.guide, *args, compile="eager", **kwargs)
    return eager, traced


def test_traced_weights_are_the_eager_weights_chunk_by_chunk():
    # backend "eager" replays the traced aten graph: the same operations on the same draws
    # (normal_ on torch's generator), so the weights are equal to the last bit, including the
    # last, partial chunk (7 = 3 + 3 + 1: two graphs)
    vae, x = small_vae_and_images()
    eager, traced = eager_then_traced(log_importance_weights, vae, x, num_samples=7,
                                      chunk_size=3)
    assert traced.shape == (7, 5)
    torch.testing.assert_close(traced, eager, rtol=0, atol=0)
    assert compiled_graph_count(vae) == 2


@pytest.mark.parametrize("estimator, kwargs", [
    (elbo, {"num_samples": 4, "chunk_size": 2}),
    (iwae_bound, {"num_samples": 9, "chunk_size": 4}),
    (log_evidence, {"num_samples": 6, "batch_size": 2, "chunk_size": 6}),
])
def test_every_estimator_takes_the_compiled_path(estimator, kwargs):
    vae, x = small_vae_and_images()
    eager, traced = eager_then_traced(estimator, vae, x, **kwargs)
    torch.testing.assert_close(traced, eager, rtol=0, atol=0)


def test_bound_sweep_takes_the_compiled_path():
    vae, x = small_vae_and_images()
    eager, traced = eager_then_traced(bound_sweep, vae, x, num_samples=(1, 4), repeats=2,
                                      chunk_size=4)
    assert [r["mean"] for r in traced.rows] == [r["mean"] for r in eager.rows]


def test_the_graph_follows_the_parameters_of_the_module():
    # a graph traced before a change of the parameters (in place, as an optimizer does, and
    # by load_state_dict) scores with the new values, not the ones seen at tracing
    vae, x = small_vae_and_images()
    pyro.set_rng_seed(0)
    before = iwae_bound(vae.model, vae.guide, x, num_samples=4, compile="eager")
    with torch.no_grad():
        for p in vae.decoder.parameters():
            p.add_(0.5)
    eager, traced = eager_then_traced(iwae_bound, vae, x, num_samples=4)
    torch.testing.assert_close(traced, eager, rtol=0, atol=0)
    assert float((traced - before).abs().max()) > 0.1
    other, _ = small_vae_and_images(seed=5)
    vae.load_state_dict(other.state_dict())
    eager, traced = eager_then_traced(iwae_bound, vae, x, num_samples=4)
    torch.testing.assert_close(traced, eager, rtol=0, atol=0)
    assert compiled_graph_count(vae) == 1


@pytest.mark.slow
def test_inductor_weights_match_the_eager_weights():
    # inductor fuses and reorders the float64 sums (differences ~1e-15 relative) and, with
    # fallback_random, draws the eager noise: 1e-10 would catch one wrong draw
    vae, x = small_vae_and_images()
    pyro.set_rng_seed(3)
    eager = log_importance_weights(vae.model, vae.guide, x, num_samples=6)
    pyro.set_rng_seed(3)
    compiled = log_importance_weights(vae.model, vae.guide, x, num_samples=6, compile=True)
    torch.testing.assert_close(compiled, eager, rtol=1e-10, atol=1e-10)


class ValueBranchingPair(PyroModule):
    """Normal-Normal pair whose model branches on the data: one trace cannot stand for it."""

    def __init__(self):
        super().__init__()
        self.loc = PyroParam(torch.zeros(()))

    def model(self, x):
        shift = 1.0 if float(x.sum()) > 0 else -1.0
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z + shift, 1.0), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.loc + 0.5 * x, 1.0))


def test_python_reading_tensor_values_is_refused():
    pair = ValueBranchingPair()
    # the message names the function and the line that read the value
    with pytest.raises(ValueError, match=r"reads the value of a tensor .* in model "
                       r"\(.*test_compiled_evidence\.py:\d+: `shift = 1\.0 if "
                       r"float\(x\.sum\(\)\) > 0 else -1\.0`\)"):
        iwae_bound(pair.model, pair.guide, torch.ones(3), num_samples=2, compile="eager")
    # the eager path scores it
    assert iwae_bound(pair.model, pair.guide, torch.ones(3), num_samples=2).shape == (3,)


def test_pairs_a_trace_would_freeze_wrongly_are_refused():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(pyro.param("loc", torch.tensor(0.0)), 1.0), obs=x)

    def guide(x):
        pass

    x = torch.randn(3)
    with pytest.raises(ValueError, match="methods of one torch.nn.Module"):
        iwae_bound(model, guide, x, num_samples=2, compile=True)

    class StoreParamPair(PyroModule):  # a pyro.param outside the module would be frozen
        def model(self, x):
            model(x)

        def guide(self, x):
            pass

    pair = StoreParamPair()
    with pyro.get_param_store().scope():
        with pytest.raises(ValueError, match="parameter 'loc' is not owned"):
            iwae_bound(pair.model, pair.guide, x, num_samples=2, compile="eager")

    class DrawsOutsideTorch(PyroModule):  # numpy noise would be one constant in a trace
        def model(self, x):
            import numpy as np

            noise = torch.as_tensor(np.random.randn(), dtype=x.dtype)
            with pyro.plate("data", x.shape[0]):
                pyro.sample("x", dist.Normal(noise, 1.0), obs=x)

        def guide(self, x):
            pass

    pair = DrawsOutsideTorch()  # refused by the survey before any trace (its density moves)
    with pytest.raises(ValueError, match="two runs of the model on the same draws gave"):
        iwae_bound(pair.model, pair.guide, x, num_samples=2, compile="eager")


@pytest.mark.parametrize("bad, message", [(1, "compile must be"), ("", "compile must be"),
                                          (0.5, "compile must be"), ([True], "compile must be"),
                                          ("inductr", "not a torch.compile backend")])
def test_a_bad_compile_argument_is_named(bad, message):
    vae, x = small_vae_and_images()
    with pytest.raises(ValueError, match=message):
        iwae_bound(vae.model, vae.guide, x, num_samples=2, compile=bad)


class SupportPair(PyroModule):
    """Uniform(0, 1) observations around a Normal latent: particles outside the support have
    weight -inf, which the compiled graph must reproduce, not call a mismatch."""

    def __init__(self):
        super().__init__()
        self.loc = PyroParam(torch.tensor(0.3))

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Uniform(z - 0.5, z + 0.5, validate_args=False), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.loc + 0 * x, 1.0))


def test_minus_infinite_weights_agree_with_the_eager_ones():
    pair = SupportPair()
    x = torch.tensor([0.1, 0.5, 0.9])
    pyro.set_rng_seed(2)
    eager = log_importance_weights(pair.model, pair.guide, x, num_samples=50)
    pyro.set_rng_seed(2)
    traced = log_importance_weights(pair.model, pair.guide, x, num_samples=50, compile="eager")
    assert torch.isinf(eager).any() and torch.isfinite(eager).any()
    torch.testing.assert_close(traced, eager, rtol=0, atol=0)


class ShiftedPair(PyroModule):
    """Normal latent, observations shifted by a tensor keyword and scaled by a number."""

    def __init__(self):
        super().__init__()
        self.loc = PyroParam(torch.zeros(()))

    def model(self, x, shift=None, noise=1.0):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z + shift, noise), obs=x)

    def guide(self, x, shift=None, noise=1.0):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.loc + 0.5 * (x - shift), 1.0))


def test_every_argument_reaches_the_graph():
    # one graph serves new data and new tensor keywords of the same shapes (they are graph
    # inputs, not constants frozen at tracing); a new number traces a new graph
    pair = ShiftedPair()
    calls = [(torch.zeros(3), torch.zeros(3), 1.0), (torch.ones(3), torch.full((3,), 5.0), 1.0),
             (torch.ones(3), torch.full((3,), 5.0), 2.0)]
    results = []
    for x, shift, noise in calls:
        pyro.set_rng_seed(0)
        eager = iwae_bound(pair.model, pair.guide, x, shift=shift, noise=noise, num_samples=4)
        pyro.set_rng_seed(0)
        traced = iwae_bound(pair.model, pair.guide, x, shift=shift, noise=noise, num_samples=4,
                            compile="eager")
        torch.testing.assert_close(traced, eager, rtol=0, atol=0)
        results.append(traced)
    assert not torch.equal(results[0], results[1]) and not torch.equal(results[1], results[2])
    assert compiled_graph_count(pair) == 2


@pytest.mark.filterwarnings("ignore:iwae_bound.*training mode")  # scored in it on purpose
def test_train_and_eval_modes_get_their_own_graphs():
    # dropout is traced as drawn masks in training mode and as nothing in eval mode: a graph
    # traced in one mode must not score the other
    class DropoutPair(PyroModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Dropout(0.5),
                                           torch.nn.Linear(8, 1))

        def model(self, x):
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(0.0, 1.0))
                pyro.sample("x", dist.Normal(self.net(z.unsqueeze(-1)).squeeze(-1), 1.0), obs=x)

        def guide(self, x):
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.Normal(0.5 * x, 1.0))

    torch.manual_seed(0)
    pair, x = DropoutPair(), torch.randn(4)
    for mode in (True, False, True):
        pair.train(mode)
        pyro.set_rng_seed(1)
        eager = iwae_bound(pair.model, pair.guide, x, num_samples=3)
        pyro.set_rng_seed(1)
        traced = iwae_bound(pair.model, pair.guide, x, num_samples=3, compile="eager")
        torch.testing.assert_close(traced, eager, rtol=0, atol=0)
    assert compiled_graph_count(pair) == 2


def test_arguments_one_trace_cannot_key_are_refused():
    import numpy as np

    pair = ShiftedPair()
    with pytest.raises(ValueError, match="got a ndarray"):
        iwae_bound(pair.model, pair.guide, torch.zeros(3), shift=np.zeros(3), num_samples=2,
                   compile="eager")


class _NoisyDecoder(torch.nn.Module):
    """A pair reading a plain float of its module (``noise``) and registering its networks
    with ``pyro.module``, as Pyro's VAE tutorial does."""

    def __init__(self, noise):
        super().__init__()
        self.decoder, self.noise = torch.nn.Linear(2, 4), noise

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), self.noise).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x[..., :2], 1.0).to_event(1))


def _compiled_and_eager(pair, x):
    results = []
    for compile in ("eager", False):
        torch.manual_seed(1)
        results.append(iwae_bound(pair.model, pair.guide, x, num_samples=20, compile=compile))
    return results


def test_a_changed_float_attribute_traces_again():
    # the graph used to keep the traced noise scale after `pair.noise = 2.0`
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    pair = _NoisyDecoder(0.5)
    _compiled_and_eager(pair, x)
    pair.noise = 2.0
    compiled, eager = _compiled_and_eager(pair, x)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def test_a_second_instance_registered_by_pyro_module_compiles():
    # the param store still held the first instance's tensors under the same names, which
    # the compiled path took for a pyro.param outside the module
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    _compiled_and_eager(_NoisyDecoder(0.5), x)
    compiled, eager = _compiled_and_eager(_NoisyDecoder(0.5), x)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


class _Settings:
    """A plain object of settings, as a likelihood object or a config namespace."""

    def __init__(self, mult):
        self.mult = mult


class _HeldSettings(torch.nn.Module):
    """A pair reading a private float, a list entry and a plain object's attribute of its
    module: a graph used to key public numbers only, and kept the traced values of these
    (IWAE 0.6 to 5 nats from the exact evidence after a change)."""

    def __init__(self):
        super().__init__()
        self.decoder = torch.nn.Linear(2, 4)
        self._noise, self.shift, self.settings = 0.5, [0.0], _Settings(1.0)

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            loc = self.settings.mult * self.decoder(z) + self.shift[0]
            pyro.sample("x", dist.Normal(loc, self._noise).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x[..., :2], 1.0).to_event(1))


@pytest.mark.parametrize("change", [
    lambda pair: setattr(pair, "_noise", 1.5),
    lambda pair: pair.shift.__setitem__(0, 3.0),
    lambda pair: setattr(pair.settings, "mult", 2.0),
], ids=["private float", "list entry", "plain object attribute"])
def test_any_changed_setting_of_the_module_traces_again(change):
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    pair = _HeldSettings()
    _compiled_and_eager(pair, x)
    change(pair)
    compiled, eager = _compiled_and_eager(pair, x)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    assert compiled_graph_count(pair) == 2  # and an unchanged module keeps its graph
    _compiled_and_eager(pair, x)
    assert compiled_graph_count(pair) == 2


def _logistic_mixture_vae():
    from ppl_models.likelihoods import LEVELS
    torch.manual_seed(0)
    vae = VAE((1, 4, 4), latent_dim=2, hidden=(5,), likelihood="logistic-mixture").double()
    levels = torch.randint(0, LEVELS, (4, 1, 4, 4), generator=torch.Generator().manual_seed(2))
    return vae, vae.model, vae.guide, levels.double() / (LEVELS - 1)


def _pixel_vae():
    from ppl_models.pixel_vae import PixelVAE
    torch.manual_seed(0)
    vae = PixelVAE((1, 4, 4), latent_dim=2, channels=4, num_blocks=1).double()
    x = (torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(2)) < 0.5).double()
    return vae, vae.model, vae.guide, x


def _linear_gaussian_exact_guide():
    from ppl_models.linear_gaussian import LinearGaussian
    lg = LinearGaussian(4, 2).double()
    return lg, lg.model, lg.exact_guide, lg.simulate(5).double()


@pytest.mark.parametrize("build", [_logistic_mixture_vae, _pixel_vae,
                                   _linear_gaussian_exact_guide])
def test_the_library_models_whose_checks_read_values_compile(build):
    # their value checks (a mixture's logits, NaN codes, a precision's overflow) are skipped
    # under the tracer and run in the eager call before it: the traced weights equal the
    # eager ones, and a NaN parameter is still named on the compiled path
    module, model, guide, x = build()
    pyro.set_rng_seed(3)
    eager = log_importance_weights(model, guide, x, num_samples=6, progress=False)
    pyro.set_rng_seed(3)
    traced = log_importance_weights(model, guide, x, num_samples=6, compile="eager",
                                    progress=False)
    torch.testing.assert_close(traced, eager, rtol=0, atol=0)
    assert compiled_graph_count(module) == 1
    with torch.no_grad():
        next(module.parameters()).view(-1)[0] = float("nan")
    with pytest.raises((ValueError, FloatingPointError), match="NaN"):
        log_importance_weights(model, guide, x, num_samples=6, compile="eager", progress=False)
