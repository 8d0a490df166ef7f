"""The scales fit puts on a step, against closed forms.

The pair is the conjugate normal-normal model ``z ~ N(0, 1)``, ``x ~ N(z, s)``, whose exact
posterior ``q(z | x) = N(x / (1 + s^2), s / sqrt(1 + s^2))`` makes every single-sample ELBO
and IWAE weight equal ``log p(x)`` (zero variance), so that a loss recorded with ``lr=0`` on
that guide is exactly ``-mean log p(x)``, whatever the draws.

Before: with ``shuffle=False`` and ``N % batch_size != 0`` the rows of the short last
minibatch weighed ``N / B_last`` in every epoch, the others ``N / B``: a fully observed Normal
fitted the reweighted mean (1.28 against the maximum-likelihood 0.34), and ``train_loss`` read
4.70 against an exact 2.31 (shuffled runs over-counted that minibatch's rows in the record
too). Pyro's ``Jit*`` losses froze the first step's scales (a KL warm-up stayed at weight 0:
-ELBO 0.38 below -log p(x) = 2.31); ``valid_data`` was scored with the training rows'
per-datapoint posteriors of an index-aware AutoNormal (-27.5 against -5.31); a KL warm-up
with an enumerated site failed inside Pyro.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import autoguide
from torch.distributions import constraints

from inference import fit
from inference.pair_check import PairError

S = 0.5
N = 210  # batch_size=50 leaves a last minibatch of 10 rows


def _data(n=N, seed=1):
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed)) * math.sqrt(1 + S**2)
    x[-10:] += 6.0  # the short last minibatch's rows stand apart: their weight shows
    return x


def _log_evidence(x):
    return dist.Normal(0.0, math.sqrt(1 + S**2)).log_prob(x)


def model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, S), obs=x)


def guide(x, init=(0.0, 0.5, 1.0)):
    a = pyro.param("a", torch.tensor(init[0]))
    b = pyro.param("b", torch.tensor(init[1]))
    sc = pyro.param("sc", torch.tensor(init[2]), constraint=constraints.positive)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(a * x + b, sc))


def exact_guide(x):
    guide(x, (1 / (1 + S**2), 0.0, S / math.sqrt(1 + S**2)))


# -- shuffle=False with a remainder minibatch -------------------------------------------------

@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("loss", ["elbo", "iwae", "dreg"])
def test_train_loss_is_the_per_datapoint_loss_with_a_short_last_minibatch(loss, shuffle):
    """At the exact posterior every step's loss is its rows' -log p(x) times their weight: the
    record must be -mean log p(x) (before: 4.6995 against 2.3149, both orders)."""
    x = _data()
    pyro.clear_param_store()
    history = fit(model, exact_guide, x, loss=loss, num_particles=2, lr=0.0, epochs=2,
                  batch_size=50, shuffle=shuffle, progress=False)
    exact = -float(_log_evidence(x).mean())
    for record in history:
        assert record["train_loss"] == pytest.approx(exact, abs=1e-4)


def test_fixed_order_weighs_every_datapoint_alike():
    """x_i ~ N(mu, 1), empty guide: the maximum-likelihood mu is mean(x) = 0.344; with the
    short minibatch's 10 rows (shifted by 6) weighed 5 times as much it was 1.282."""
    x = torch.randn(N, generator=torch.Generator().manual_seed(1))
    x[200:] += 6.0

    def fully_observed(x):
        mu = pyro.param("mu", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    pyro.clear_param_store()
    history = fit(fully_observed, lambda x: None, x, epochs=300, batch_size=50, lr=0.01,
                  shuffle=False, progress=False)
    mu = float(pyro.param("mu"))
    assert mu == pytest.approx(float(x.mean()), abs=0.02)  # 0.3437 (reweighted: 1.2845)
    nll = -float(dist.Normal(x.mean(), 1.0).log_prob(x).mean())  # 2.3224
    assert history[-1]["train_loss"] == pytest.approx(nll, abs=0.01)


def test_fixed_order_counts_a_global_latent_once_per_full_data_objective():
    """mu ~ N(0, 1), x_i ~ N(mu, 1), N = 6 in minibatches of 4 and 2, fixed order: the
    posterior is N(sum(x) / 7, 1 / sqrt(7)) = N(1.400, 0.378). Rows weighed N / B_k gave
    mean 2.014 (the last two rows 3 times, the others 1.5); rows weighed N / B = 1.5 against
    a prior counted once per step would give 1.336: only ceil(N / B) = 2 per row (an epoch
    twice the full-data objective) gives 1.400."""
    x = torch.tensor([0.3, -0.8, 1.1, 0.2, 4.0, 5.0])

    def global_model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def global_guide(x):
        m = pyro.param("m", torch.tensor(0.0))
        s = pyro.param("s", torch.tensor(1.0), constraint=constraints.positive)
        pyro.sample("mu", dist.Normal(m, s))

    pyro.clear_param_store()
    fit(global_model, global_guide, x, loss="meanfield", num_particles=64, epochs=1500,
        batch_size=4, lr=0.02, shuffle=False, seed=0, progress=False)
    assert float(pyro.param("m")) == pytest.approx(1.4, abs=0.02)
    assert float(pyro.param("s")) == pytest.approx(1 / math.sqrt(7), abs=0.02)


def index_model(x, idx):
    with pyro.plate("data", N, subsample=idx):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, S), obs=x)


def amortized_index_guide(x, idx):
    a = pyro.param("a", torch.tensor(1 / (1 + S**2)))
    with pyro.plate("data", N, subsample=idx):
        pyro.sample("z", dist.Normal(a * x, S / math.sqrt(1 + S**2)))


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_model_that_scales_its_own_plate_with_a_short_last_minibatch(shuffle):
    """``pyro.plate("data", N, subsample=idx)`` scales by N / B_k itself; fit's factor on top
    gives its rows the same weights as a plain model's."""
    x = _data()
    pyro.clear_param_store()
    history = fit(index_model, amortized_index_guide, (x, torch.arange(N)), lr=0.0, epochs=2,
                  batch_size=50, shuffle=shuffle, progress=False)
    exact = -float(_log_evidence(x).mean())
    assert [r["train_loss"] for r in history] == pytest.approx([exact] * 2, abs=1e-4)


@pyro.infer.config_enumerate
def mixture(x):
    loc = pyro.param("loc", torch.tensor([-1.5, 1.0]))
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Categorical(torch.tensor([0.3, 0.7])))
        pyro.sample("x", dist.Normal(loc[c], 1.0), obs=x)


def test_trace_enum_elbo_with_a_short_last_minibatch_in_a_fixed_order():
    """The enumerated loss is exact: -mean log p(x) of the mixture (before: 1.9429 against
    1.9776 with batch_size=16 on 50 rows)."""
    x = torch.randn(50, generator=torch.Generator().manual_seed(0)) * 1.5
    pyro.clear_param_store()
    history = fit(mixture, lambda x: None, x, loss=pyro.infer.TraceEnum_ELBO(max_plate_nesting=1),
                  lr=0.0, epochs=1, batch_size=16, shuffle=False, progress=False)
    components = dist.Normal(torch.tensor([-1.5, 1.0]), 1.0).log_prob(x[:, None])
    exact = -float(torch.logsumexp(components + torch.tensor([0.3, 0.7]).log(), -1).mean())
    assert history[0]["train_loss"] == pytest.approx(exact, abs=1e-4)


def test_trace_enum_elbo_refuses_a_kl_warm_up_of_an_enumerated_site():
    x = torch.randn(50, generator=torch.Generator().manual_seed(0))
    pyro.clear_param_store()
    with pytest.raises(PairError, match=r"kl_warmup_epochs=3 .* site\(s\) 'c' are enumerated"):
        fit(mixture, lambda x: None, x, loss=pyro.infer.TraceEnum_ELBO(max_plate_nesting=1),
            kl_warmup_epochs=3, epochs=4, batch_size=50, progress=False)


# -- Pyro's JIT-compiled losses -----------------------------------------------------------------

JIT_LOSSES = [pyro.infer.JitTrace_ELBO, pyro.infer.JitTraceGraph_ELBO,
              pyro.infer.JitTraceMeanField_ELBO, pyro.infer.JitTraceEnum_ELBO]


@pytest.mark.parametrize("loss_class", JIT_LOSSES)
def test_jit_losses_refuse_a_kl_warm_up(loss_class):
    pyro.clear_param_store()
    with pytest.raises(ValueError, match=rf"loss={loss_class.__name__} .* kl_warmup_epochs=30 "
                                         rf".*pyro.infer.{loss_class.__name__[3:]}"):
        fit(model, guide, _data(), loss=loss_class(), epochs=2, batch_size=N,
            kl_warmup_epochs=30, progress=False)


@pytest.mark.parametrize("loss_class", JIT_LOSSES)
def test_jit_losses_refuse_a_short_last_minibatch(loss_class):
    pyro.clear_param_store()
    with pytest.raises(ValueError, match=rf"loss={loss_class.__name__} .* batch_size=50 leaves "
                                         "a last minibatch of 10"):
        fit(model, guide, _data(), loss=loss_class(), epochs=1, batch_size=50,
            shuffle=False, progress=False)


@pytest.mark.parametrize("batch_size", [N, 70])
def test_jit_trace_elbo_with_fixed_scales_is_trace_elbo(batch_size):
    """One batch size, no warm-up: the compiled loss records -mean log p(x) at the exact
    posterior, and trains to the ELBO optimum a = 0.8, b = 0, sc = 0.447 as Trace_ELBO does."""
    x = _data()
    pyro.clear_param_store()
    history = fit(model, exact_guide, x, loss=pyro.infer.JitTrace_ELBO(), lr=0.0, epochs=2,
                  batch_size=batch_size, progress=False)
    exact = -float(_log_evidence(x).mean())
    assert [r["train_loss"] for r in history] == pytest.approx([exact] * 2, abs=1e-4)
    trained = {}
    for loss in (pyro.infer.Trace_ELBO(), pyro.infer.JitTrace_ELBO()):
        pyro.clear_param_store()
        history = fit(model, guide, x, loss=loss, lr=0.03, epochs=300, batch_size=batch_size,
                      seed=0, progress=False)
        trained[type(loss).__name__] = [float(pyro.param(k)) for k in ("a", "b", "sc")]
        assert trained[type(loss).__name__] == pytest.approx([0.8, 0.0, 0.447], abs=0.06)
        assert history[-1]["train_loss"] == pytest.approx(exact, abs=0.05)
    assert trained["JitTrace_ELBO"] == pytest.approx(trained["Trace_ELBO"], abs=0.03)


# -- valid_data with per-datapoint guide parameters ---------------------------------------------

def _plates(x, idx):
    return pyro.plate("data", N, subsample=idx)


@pytest.mark.parametrize("offset", [0, N])
def test_valid_data_refused_for_an_index_aware_autonormal(offset):
    """Before: -27.5 nats against an exact -5.31 (indices 0..N-1), or a raw IndexError from
    inside Pyro (indices N..2N-1)."""
    x = _data()
    pyro.clear_param_store()
    with pytest.raises(PairError, match=r"fit\(valid_data=...\): the guide \(AutoNormal\) "
                                        r"keeps parameters for each datapoint.*amortized guide"):
        fit(index_model, autoguide.AutoNormal(index_model, create_plates=_plates),
            (x, torch.arange(N)), valid_data=(x[:40] + 3, torch.arange(offset, offset + 40)),
            epochs=1, batch_size=50, progress=False)


def test_valid_data_refused_for_a_parameter_read_by_index():
    x = _data()

    def by_index(x, idx):
        loc = pyro.param("loc", torch.zeros(N))
        with pyro.plate("data", N, subsample=idx):
            pyro.sample("z", dist.Normal(loc[idx], 0.5))

    pyro.clear_param_store()
    with pytest.raises(PairError, match="by the indices passed with the data; site 'z'"):
        fit(index_model, by_index, (x, torch.arange(N)), valid_data=(x[:7], torch.arange(7)),
            epochs=1, batch_size=50, progress=False)


def test_valid_data_of_an_amortized_guide_is_exact():
    """The same index-aware model with an amortized exact guide: valid_elbo is the exact mean
    log p(x_valid) (a single-sample ELBO of the exact posterior), for more rows than N too."""
    x = _data()
    xv = torch.randn(300, generator=torch.Generator().manual_seed(5)) * 1.2 + 1.0
    pyro.clear_param_store()
    history = fit(index_model, amortized_index_guide, (x, torch.arange(N)),
                  valid_data=(xv, torch.arange(300)), lr=0.0, epochs=1, batch_size=50,
                  progress=False)
    assert history[0]["valid_elbo"] == pytest.approx(float(_log_evidence(xv).mean()), abs=1e-4)


def test_positional_autoguidelist_message_names_its_create_plates():
    """An AutoGuideList of AutoNormals takes create_plates: the message said it did not."""
    def positional(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, S), obs=x)

    pyro.clear_param_store()
    guides = autoguide.AutoGuideList(positional)
    guides.append(autoguide.AutoNormal(pyro.poutine.block(positional, expose=["z"])))
    with pytest.raises(PairError) as error:
        fit(positional, guides, _data(), epochs=1, batch_size=50, progress=False)
    message = str(error.value)
    assert "AutoGuideList(model, create_plates=lambda x, idx:" in message
    assert "whose parts are AutoNormal or AutoDelta" in message
    assert "takes no create_plates" not in message


def test_valid_data_leaves_a_batch_transform_s_draws_to_training():
    """The guide's probe for valid_data runs on a transformed first minibatch; its
    transform's draws must not move training's: the same history as without valid_data."""
    x = _data()

    def jitter(x, idx):
        return x + 0.1 * torch.randn_like(x), idx

    histories = []
    for valid in (None, (x[:20], torch.arange(20))):
        pyro.clear_param_store()
        histories.append([r["train_loss"] for r in fit(
            index_model, amortized_index_guide, (x, torch.arange(N)), valid_data=valid,
            batch_transform=jitter, lr=0.01, epochs=2, batch_size=70, seed=3,
            progress=False)])
    assert histories[0] == histories[1]


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_resumed_run_with_a_short_last_minibatch_is_bit_identical(tmp_path, shuffle):
    x = _data()
    results = []
    for path, stops in ((tmp_path / "straight.pt", (4,)), (tmp_path / "resumed.pt", (2, 4))):
        pyro.clear_param_store()
        for epochs in stops:
            history = fit(model, guide, x, lr=0.02, epochs=epochs, batch_size=50, seed=2,
                          shuffle=shuffle, checkpoint=path, resume=True, progress=False)
        results.append(([r["train_loss"] for r in history],
                        [pyro.param(k).detach().clone() for k in ("a", "b", "sc")]))
    (straight, straight_params), (resumed, resumed_params) = results
    assert straight == resumed
    assert all(torch.equal(p, q) for p, q in zip(straight_params, resumed_params))


class _ExactPair(pyro.nn.PyroModule):
    """The normal-normal pair as one module's methods (what compile=True takes), its guide
    at the exact posterior."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(1 / (1 + S**2)))
        self.log_sc = torch.nn.Parameter(torch.tensor(S / math.sqrt(1 + S**2)).log())

    @pyro.nn.pyro_method
    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
            pyro.sample("x", dist.Normal(z, S), obs=x)

    @pyro.nn.pyro_method
    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.a * x, self.log_sc.exp()))


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("loss", ["elbo", "iwae"])
def test_the_compiled_step_weighs_a_short_last_minibatch_alike(loss, shuffle):
    x = _data()
    exact = -float(_log_evidence(x).mean())
    pyro.clear_param_store()
    pair = _ExactPair()
    history = fit(pair.model, pair.guide, x, loss=loss, num_particles=1 if loss == "elbo" else 2,
                  lr=0.0, epochs=2,
                  batch_size=50, shuffle=shuffle, compile="eager", progress=False)
    assert [r["train_loss"] for r in history] == pytest.approx([exact] * 2, abs=1e-4)


def test_a_checkpoint_of_the_old_fixed_order_weights_is_not_resumed(tmp_path):
    """A checkpoint written while the fixed order's short last minibatch weighed N / B_last
    (before: no such setting in it) trained another objective: its resume is refused."""
    from inference.training import checkpoints
    from inference.training.checkpoints import CheckpointError

    x, path = _data(), tmp_path / "run.pt"
    pyro.clear_param_store()
    fit(model, guide, x, epochs=1, batch_size=50, shuffle=False, checkpoint=path,
        progress=False)
    state = checkpoints.load_checkpoint(path)
    assert state["fingerprint"]["settings"]["fixed_order_row_weight"] == "steps"
    del state["fingerprint"]["settings"]["fixed_order_row_weight"]
    checkpoints.save_checkpoint(path, state)
    with pytest.raises(CheckpointError, match=r"settings\.fixed_order_row_weight.*by N / B_last"):
        fit(model, guide, x, epochs=2, batch_size=50, shuffle=False, checkpoint=path,
            resume=True, progress=False)


@pytest.mark.parametrize("batch_size", [50, 3])  # 3: the first minibatch's labels all differ
def test_valid_data_of_a_guide_of_integer_labels_is_scored(batch_size):
    """Integer labels are no indices: a guide amortized on (x, y) keeps valid_data, its
    valid_elbo exact. x ~ N(z + c_y, s) with c = (-1, 0, 1) and y ~ Categorical(1/3): the
    exact posterior is N((x - c_y) / (1 + s^2), ...), log p(x, y) = log N(x; c_y,
    sqrt(1 + s^2)) - log 3."""
    shift = torch.tensor([-1.0, 0.0, 1.0])
    x = _data()
    y = torch.arange(N) % 3
    xv = torch.randn(30, generator=torch.Generator().manual_seed(5))
    yv = torch.arange(30) % 3

    def labelled(x, y):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z + shift[y], S), obs=x)
            pyro.sample("y", dist.Categorical(torch.ones(3) / 3), obs=y)

    def labelled_guide(x, y):
        a = pyro.param("a", torch.tensor(1 / (1 + S**2)))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(a * (x - shift[y]), S / math.sqrt(1 + S**2)))

    pyro.clear_param_store()
    history = fit(labelled, labelled_guide, (x, y), valid_data=(xv, yv), lr=0.0, epochs=1,
                  batch_size=batch_size, progress=False)
    exact = dist.Normal(shift[yv], math.sqrt(1 + S**2)).log_prob(xv).mean() - math.log(3)
    assert history[0]["valid_elbo"] == pytest.approx(float(exact), abs=1e-4)


def _label_data(num_classes):
    """The first minibatch's labels all differ (2, 0, 1, ...), the whole data's repeat."""
    x = _data()
    y = (torch.arange(N) * 7 + 2) % num_classes
    xv = torch.randn(30, generator=torch.Generator().manual_seed(5))
    yv = torch.arange(30) % num_classes
    return x, y, xv, yv


def _label_model(x, y):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, S), obs=x)


@pytest.mark.parametrize("num_classes, init", [(3, "zeros"), (5, "spread")])
def test_valid_data_of_a_guide_of_a_per_class_table_is_scored(num_classes, init):
    """q(z | y) from a table of a row per class, read by the label only: labels are no
    indices even when the first minibatch's are distinct (batch_size=3 of 3 classes, or 4
    of 5 with a table that starts spread apart). It was refused as keeping parameters for
    each datapoint."""
    x, y, xv, yv = _label_data(num_classes)
    table = (torch.zeros(num_classes) if init == "zeros"
             else torch.linspace(-1.0, 1.0, num_classes))

    def per_class(x, y):
        loc = pyro.param("cls_loc", table.clone())
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc[y], 1.0))

    batch_size = num_classes - (init == "spread")
    assert y[:batch_size].unique().numel() == batch_size  # the case at issue
    pyro.clear_param_store()
    history = fit(_label_model, per_class, (x, y), valid_data=(xv, yv), lr=0.0, epochs=1,
                  batch_size=batch_size, progress=False)
    # a single-draw ELBO per validation row: finite, within its noise of the closed form
    # E_q[log p(x, z) - log q(z)] = -((x - m)^2 + 1) / (2 s^2) - log(s sqrt(2 pi)) - m^2 / 2
    # for q = N(m, 1) (per-row sd about 4, 30 rows: 0.75 standard error, tolerance 3)
    m = table[yv]
    exact = (-0.5 * ((xv - m) ** 2 + 1) / S**2 - math.log(S * math.sqrt(2 * math.pi))
             - 0.5 * m**2).mean()
    assert history[0]["valid_elbo"] == pytest.approx(float(exact), abs=3.0)
