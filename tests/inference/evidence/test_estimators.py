"""Evidence estimators against closed-form answers on the linear-Gaussian model."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import (
    bound_sweep,
    elbo,
    iwae_bound,
    iwae_from_weights,
    log_evidence,
    log_importance_weights,
    log_mean_exp,
)
from ppl_models import LinearGaussian


@pytest.fixture
def linear_gaussian():
    model = LinearGaussian(data_dim=4, latent_dim=2, noise_scale=0.6, seed=1).double()
    return model, model.simulate(12, seed=2)


def prior_guide(model):
    """The prior as proposal for a LinearGaussian (a plain function, not a PyroModule method)."""

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(model.latent_dim), 1.0).to_event(1))

    return guide


def test_exact_posterior_guide_gives_closed_form(linear_gaussian):
    # With q = p(z | x) every weight equals log p(x): only float64 rounding remains.
    model, x = linear_gaussian
    exact = model.log_marginal(x).detach()
    for estimate in (
        elbo(model.model, model.exact_guide, x, num_samples=7),
        iwae_bound(model.model, model.exact_guide, x, num_samples=50),
    ):
        assert estimate.shape == (12,)
        torch.testing.assert_close(estimate, exact, atol=1e-6, rtol=0)
    weights = log_importance_weights(model.model, model.exact_guide, x, num_samples=9)
    assert weights.shape == (9, 12)
    assert float((weights - exact).abs().max()) < 1e-6


def test_iwae_converges_to_evidence_with_prior_guide(linear_gaussian):
    # Prior proposals in 2-D: by K = 20000 the bias of IWAE_K (about var(w)/(2 K p^2))
    # falls well under 0.05 nats per datapoint for this model.
    model, x = linear_gaussian
    exact = model.log_marginal(x).detach()
    bound = iwae_bound(model.model, prior_guide(model), x, num_samples=20000, chunk_size=5000)
    gap = exact - bound
    assert float(gap.abs().max()) < 0.05, f"per-datapoint gaps {gap}"


def test_bounds_are_ordered_on_average(linear_gaussian):
    # ELBO <= IWAE_K <= IWAE_2K <= log p(x) in expectation; 4 repeats of 2000 particles
    # give standard errors far below the gaps measured here (>= 0.05 nats).
    model, x = linear_gaussian
    exact = float(model.log_marginal(x).mean().detach())
    table = bound_sweep(model.model, prior_guide(model), x,
                        num_samples=(1, 2, 10, 100, 1000, 2000), repeats=4, chunk_size=1000)
    means = [table.elbo()] + [r["mean"] for r in table.rows if r["bound"] == "iwae"]
    errors = [r["stderr"] for r in table.rows]
    for lower, upper, err in zip(means[1:-1], means[2:], errors[2:]):
        assert lower <= upper + 3 * err, table
    assert means[-1] <= exact + 3 * errors[-1], (means[-1], exact)
    assert table.elbo() < means[-1] - 1.0, table
    assert set(table.iwae()) == {"1", "2", "10", "100", "1000", "2000"}
    assert "IWAE_2000" in str(table)


def test_chunked_equals_unchunked_with_same_draws(linear_gaussian):
    # CPU normal draws are generated in blocks of 16 numbers; when every chunk holds a
    # multiple of 16 numbers the chunked run consumes the generator exactly like the
    # unchunked one, so the weights must agree to float rounding.
    model, x = linear_gaussian
    x = x[:8]  # 16 particles x 8 datapoints x 2 latents per chunk: a multiple of 16
    torch.manual_seed(3)
    reference = torch.randn(64, 8, 2, dtype=torch.float64)
    torch.manual_seed(3)
    chunked = torch.cat([torch.randn(16, 8, 2, dtype=torch.float64) for _ in range(4)])
    if not torch.equal(reference, chunked):
        pytest.skip("this torch build draws normals differently in chunks")
    pyro.set_rng_seed(5)
    whole = log_importance_weights(model.model, prior_guide(model), x, num_samples=64)
    pyro.set_rng_seed(5)
    parts = log_importance_weights(model.model, prior_guide(model), x, num_samples=64,
                                   chunk_size=16)
    torch.testing.assert_close(parts, whole, atol=1e-12, rtol=0)


def test_chunked_iwae_matches_in_distribution(linear_gaussian):
    # Independent runs with and without chunks: means over 20000 particles agree within
    # 5 standard errors of their difference.
    model, x = linear_gaussian
    a = log_importance_weights(model.model, model.guide, x, num_samples=20000)
    b = log_importance_weights(model.model, model.guide, x, num_samples=20000, chunk_size=777)
    assert b.shape == a.shape
    diff = a.mean(0) - b.mean(0)
    stderr = ((a.var(0) + b.var(0)) / 20000).sqrt()
    assert bool((diff.abs() < 5 * stderr).all()), diff / stderr


def subsampled_pair(weight, noise):
    """1-D linear-Gaussian model/guide with a subsampled data plate of full size N."""

    def model(x, index, size):
        with pyro.plate("data", size=size, subsample=index):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("x", dist.Normal(weight * z, noise), obs=x[index])

    def guide(x, index, size):
        with pyro.plate("data", size=size, subsample=index):
            pyro.sample("z", dist.Normal(0.5 * x[index], 0.45))

    return model, guide


def test_subsampling_never_scales_per_datapoint_estimates():
    x = torch.randn(50, dtype=torch.float64)
    index = torch.arange(10, 20)
    model, guide = subsampled_pair(1.5, 0.5)
    pyro.set_rng_seed(1)
    sub = log_importance_weights(model, guide, x, index, 50, num_samples=30)
    pyro.set_rng_seed(1)
    full = log_importance_weights(model, guide, x, index, 10, num_samples=30)
    torch.testing.assert_close(sub, full, atol=0, rtol=0)
    # and the values are the closed-form weights of each datapoint
    exact = torch.distributions.Normal(0.0, math.sqrt(1.5**2 + 0.5**2)).log_prob(x[index])
    bound = iwae_bound(model, guide, x, index, 50, num_samples=40000)
    assert float((bound - exact).abs().max()) < 0.01


def test_agrees_with_pyro_renyi_elbo_on_single_datapoint(linear_gaussian):
    # For one datapoint without subsampling RenyiELBO(alpha=0) is exactly -IWAE_K; with the
    # same seed both draw the same particles.
    model, x = linear_gaussian
    point = x[:1]
    renyi = pyro.infer.RenyiELBO(alpha=0, num_particles=100, vectorize_particles=True,
                                 max_plate_nesting=1)
    pyro.set_rng_seed(4)
    pyro_value = -renyi.loss(model.model, model.guide, point)
    pyro.set_rng_seed(4)
    ours = float(iwae_bound(model.model, model.guide, point, num_samples=100))
    assert abs(pyro_value - ours) < 1e-9, (pyro_value, ours)


def test_iwae_from_weights_averages_disjoint_groups():
    log_w = torch.tensor([[0.0], [math.log(3.0)], [math.log(5.0)], [math.log(7.0)]])
    expected = (math.log(2.0) + math.log(6.0)) / 2
    assert float(iwae_from_weights(log_w, 2)) == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="at least k=8"):
        iwae_from_weights(log_w, 8)
    # log weights near the dtype's largest value: the groups' sum overflowed to inf
    assert float(iwae_from_weights(torch.full((4, 1), 3e38), 2)) == pytest.approx(3e38)


def test_estimators_leave_parameters_alone(linear_gaussian):
    model, x = linear_gaussian
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    iwae_bound(model.model, model.guide, x, num_samples=10)
    bound_sweep(model.model, model.guide, x, num_samples=(1, 5), repeats=2)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_no_data_plate_is_rejected():
    def model(x):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"outside pyro.plate\('data'\)"):
        iwae_bound(model, guide, torch.tensor(0.5), num_samples=3)


def test_latent_missing_from_guide_is_rejected():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        pass

    with pytest.raises(ValueError, match="not sampled by the guide"):
        elbo(model, guide, torch.zeros(3))


@pytest.mark.parametrize("num_samples", [0, -3, 2.5, True])
def test_bad_num_samples(linear_gaussian, num_samples):
    model, x = linear_gaussian
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        iwae_bound(model.model, model.guide, x, num_samples=num_samples)


def test_bad_chunk_size(linear_gaussian):
    model, x = linear_gaussian
    with pytest.raises(ValueError, match="chunk_size"):
        iwae_bound(model.model, model.guide, x, num_samples=4, chunk_size=0)


def test_nan_data_is_rejected(linear_gaussian):
    model, x = linear_gaussian
    x = x.clone()
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        iwae_bound(model.model, model.guide, x, num_samples=4)


def _user_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 0.5).to_event(1), obs=x)


def _user_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))


@pytest.mark.parametrize("estimate", [
    lambda x: iwae_bound(_user_model, _user_guide, x, num_samples=3),
    lambda x: elbo(_user_model, _user_guide, x),
    lambda x: log_importance_weights(_user_model, _user_guide, x, num_samples=3),
    lambda x: bound_sweep(_user_model, _user_guide, x, num_samples=(1, 2), repeats=1),
])
def test_numpy_data_is_refused_by_name(estimate):
    """A pair of plain functions has no checks of its own: the estimator names the array."""
    with pytest.raises(TypeError, match="argument 0 is a numpy array"):
        estimate(torch.randn(4, 1).numpy())


def test_log_mean_exp_of_no_weights_is_refused():
    with pytest.raises(ValueError, match="no weights along dim 0"):
        log_mean_exp(torch.zeros(0, 3))
    assert torch.equal(log_mean_exp(torch.full((4, 2), -math.inf)), torch.full((2,), -math.inf))
    with pytest.raises(ValueError, match=r"dim must be an int in \[-2, 2\) .* got 2"):
        log_mean_exp(torch.zeros(4, 3), 2)
    with pytest.raises(TypeError, match="log_w must be a tensor, got list"):
        log_mean_exp([0.0, 1.0])
    # dim counts from the end too: the mean of weights (1, 3) along the last dim is 2
    assert float(log_mean_exp(torch.tensor([[0.0, math.log(3.0)]]), -1)) == pytest.approx(
        math.log(2.0))


def test_wrong_data_shape_is_rejected(linear_gaussian):
    model, x = linear_gaussian
    with pytest.raises(ValueError, match=r"shape \[batch, 4\]"):
        elbo(model.model, model.guide, x[:, :3])


def test_bound_sweep_in_data_slices_matches_whole(linear_gaussian):
    # With the exact-posterior guide every weight is log p(x), so slicing the data cannot
    # change any number beyond rounding.
    model, x = linear_gaussian
    whole = bound_sweep(model.model, model.exact_guide, x, num_samples=(1, 4), repeats=1)
    sliced = bound_sweep(model.model, model.exact_guide, x, num_samples=(1, 4), repeats=1,
                         data_batch_size=5)
    for a, b in zip(whole.rows, sliced.rows):
        assert a["mean"] == pytest.approx(b["mean"], abs=1e-9)
    assert whole.elbo() == pytest.approx(float(model.log_marginal(x).mean().detach()), abs=1e-6)


# A conjugate pair with features along dim 0 and datapoints along dim 1 of x: the "data"
# plate is the inner plate. With the exact-posterior guide every weight is log p(x) =
# sum over features of log N(x; b, a^2 + s^2).
A, B, S = 2.0, 0.5, 0.7


def _inner_model(x):
    with pyro.plate("feat", x.shape[0], dim=-2), pyro.plate("data", x.shape[-1], dim=-1):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(A * z + B, S), obs=x)


def _inner_guide(x):
    precision = 1 + A * A / S ** 2
    with pyro.plate("feat", x.shape[0], dim=-2), pyro.plate("data", x.shape[-1], dim=-1):
        pyro.sample("z", dist.Normal(A / S ** 2 * (x - B) / precision, precision ** -0.5))


def _inner_truth(x):
    """``[datapoints]`` closed-form log p(x)."""
    return dist.Normal(B, math.sqrt(A * A + S * S)).log_prob(x).sum(0)


def test_inner_data_plate_is_scored_whole_and_refused_in_slices():
    torch.manual_seed(0)
    x = torch.tensor([[-1.0, 2.5, 0.0], [0.3, 4.0, 1.0]])  # [features=2, datapoints=3]
    whole = bound_sweep(_inner_model, _inner_guide, x, num_samples=[1, 3], repeats=2)
    assert whole.elbo() == pytest.approx(float(_inner_truth(x).mean()), abs=1e-5)
    assert whole.elbo() == pytest.approx(-4.0465, abs=1e-4)
    # slicing dim 0 would cut features (it reported half the evidence, -2.0232)
    for size in (1, 2, 10):
        with pytest.raises(ValueError, match="the datapoints do not lie along dim 0.*call "
                                             "without data_batch_size"):
            bound_sweep(_inner_model, _inner_guide, x, num_samples=[1], repeats=1,
                        data_batch_size=size)
    # 4 features of 2 datapoints in slices of 2 rows: every slice holds 2 datapoints by
    # chance; the probe of 3 rows tells the layouts apart before any weight is drawn
    x = torch.arange(8.0).reshape(4, 2)
    with pytest.raises(ValueError, match="a slice of 3 rows along dim 0 .* holds 2 datapoints"):
        bound_sweep(_inner_model, _inner_guide, x, num_samples=[1], repeats=1,
                    data_batch_size=2)
    with pytest.raises(ValueError, match=r"a slice of 3 rows along dim 0 of x \(shape \[4, 2\]\)"):
        log_evidence(_inner_model, _inner_guide, x, batch_size=2)


def test_bound_sweep_slices_keyword_data(linear_gaussian):
    # With the exact-posterior guide every weight is log p(x): slices of keyword data give
    # the closed form, as positional data do.
    model, x = linear_gaussian
    exact = float(model.log_marginal(x).mean().detach())
    sliced = bound_sweep(model.model, model.exact_guide, x=x, num_samples=(1, 4), repeats=2,
                         data_batch_size=5)
    for row in sliced.rows:
        assert row["mean"] == pytest.approx(exact, abs=1e-6)

    def weighted(x, w):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z * w.sum(), 1.0), obs=x)

    def weighted_guide(x, w):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"argument 0 \[6\], keyword argument 'w' \[2\]"):
        bound_sweep(weighted, weighted_guide, torch.zeros(6), w=torch.ones(2), num_samples=[1],
                    data_batch_size=2)


def _scalar_model(x, scale=1.0, label="a", extra=None):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(A * z + B, S * scale), obs=x)


def _scalar_guide(x, scale=1.0, label="a", extra=None):
    precision = 1 + A * A / (S * scale) ** 2
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(A / (S * scale) ** 2 * (x - B) / precision,
                                     precision ** -0.5))


@pytest.mark.parametrize("data", [[-1.0, 0.3], "abc", ([1.0], [2.0])])
def test_non_tensor_data_is_refused_by_name(data):
    for estimate in (lambda: iwae_bound(_scalar_model, _scalar_guide, data, num_samples=3),
                     lambda: elbo(_scalar_model, _scalar_guide, data),
                     lambda: bound_sweep(_scalar_model, _scalar_guide, data, num_samples=[1])):
        with pytest.raises(TypeError, match=f"argument 0 is a {type(data).__name__} and no "
                                            "argument is a tensor"):
            estimate()


def test_numbers_strings_and_none_beside_tensor_data_are_accepted():
    x = torch.tensor([-1.0, 0.3, 2.5])
    truth = dist.Normal(B, math.sqrt(A * A + (2 * S) ** 2)).log_prob(x)
    for estimate in (iwae_bound(_scalar_model, _scalar_guide, x, 2.0, "b", None, num_samples=3),
                     elbo(_scalar_model, _scalar_guide, x, scale=2.0, label="b", extra=None)):
        torch.testing.assert_close(estimate, truth, atol=1e-5, rtol=0)


def test_weights_beyond_the_machine_memory_are_refused(monkeypatch):
    import inference.checks

    x = torch.tensor([-1.0, 0.3, 2.5, 4.0])
    with pytest.raises(ValueError, match="num_samples=1000000000000 particles for 4 "
                                         r"datapoints: the \[num_samples, batch\] log weights"):
        iwae_bound(_scalar_model, _scalar_guide, x, num_samples=10 ** 12)
    # 100 particles x 4 datapoints x 4 bytes = 1600 bytes fit in 1600, 101 particles do not
    monkeypatch.setattr(inference.checks, "physical_memory_bytes", lambda: 1600)
    assert iwae_bound(_scalar_model, _scalar_guide, x, num_samples=100).shape == (4,)
    for estimate in (lambda: iwae_bound(_scalar_model, _scalar_guide, x, num_samples=101),
                     lambda: log_evidence(_scalar_model, _scalar_guide, x, num_samples=101),
                     lambda: bound_sweep(_scalar_model, _scalar_guide, x, num_samples=[1, 101])):
        with pytest.raises(ValueError, match="num_samples=101 particles for 4 datapoints.* "
                                             r"need 1,616 bytes .* than this machine's 1,600"):
            estimate()


def test_numpy_integers_are_accepted_as_counts(linear_gaussian):
    model, x = linear_gaussian
    results = []
    for count in (int, np.int64):
        torch.manual_seed(3)
        results.append((
            iwae_bound(model.model, model.guide, x, num_samples=count(5), chunk_size=count(2)),
            elbo(model.model, model.guide, x, num_samples=count(3)),
            log_evidence(model.model, model.guide, x, num_samples=count(4),
                         batch_size=count(5)),
            bound_sweep(model.model, model.guide, x, num_samples=[count(1), count(4)],
                        repeats=count(2), data_batch_size=count(5)).per_repeat,
            iwae_from_weights(torch.arange(12.0).reshape(4, 3), count(2))))
    for plain, numpy_counts in zip(*results):
        if torch.is_tensor(plain):
            assert torch.equal(plain, numpy_counts)
        else:
            assert plain == numpy_counts


@pytest.mark.parametrize("num_samples", [np.float64(5.0), np.bool_(True), 5.0, True])
def test_float_and_bool_counts_are_refused(linear_gaussian, num_samples):
    model, x = linear_gaussian
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        iwae_bound(model.model, model.guide, x, num_samples=num_samples)


def test_bound_sweep_reads_any_sequence_of_ks(linear_gaussian):
    model, x = linear_gaussian
    tables = []
    for ks in ([1, 10], (10, 1), range(1, 11, 9), np.array([1, 10]), torch.tensor([10, 1]),
               (k for k in (1, 10))):
        torch.manual_seed(4)
        tables.append(bound_sweep(model.model, model.guide, x, num_samples=ks, repeats=2))
    assert [r["num_samples"] for r in tables[0].rows] == [1, 1, 10]
    assert all(t.rows == tables[0].rows for t in tables[1:])


@pytest.mark.parametrize("ks,match", [
    (10, "num_samples must be a non-empty sequence"), ("10", "non-empty sequence"),
    ([], "an empty one"), ([1, 0], r"num_samples\[1\] must be a positive integer, got 0"),
    (torch.tensor([1.0, 10.0]), r"num_samples\[0\] must be a positive integer, got 1.0"),
    (np.array([[1, 10]]), "must be a 1-D sequence"), (torch.tensor(10), "1-D sequence"),
])
def test_bound_sweep_refuses_bad_ks(linear_gaussian, ks, match):
    model, x = linear_gaussian
    with pytest.raises(ValueError, match=match):
        bound_sweep(model.model, model.guide, x, num_samples=ks)


def test_one_repeat_has_no_standard_error(linear_gaussian):
    model, x = linear_gaussian
    torch.manual_seed(5)
    one = bound_sweep(model.model, model.guide, x, num_samples=(1, 10), repeats=1)
    assert all(math.isnan(r["stderr"]) for r in one.rows)
    assert str(one).splitlines()[1].endswith("nan")
    two = bound_sweep(model.model, model.guide, x, num_samples=(1, 10), repeats=2)
    for row, values in zip(two.rows, two.per_repeat):  # |a - b| / 2 for two repeats
        assert row["stderr"] == pytest.approx(abs(values[0] - values[1]) / 2)
        assert row["stderr"] > 0


def test_slicing_a_model_that_subsamples_its_plate_is_refused():
    def model(x):
        with pyro.plate("data", x.shape[0], subsample_size=2) as rows:
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x[rows])

    def guide(x):
        with pyro.plate("data", x.shape[0], subsample_size=2):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    x = torch.arange(6.0)
    for size, rows in ((3, 4), (6, 6)):  # through the probe of 4 rows; through one slice
        with pytest.raises(ValueError, match=r"bound_sweep: the model subsamples its own "
                                             rf"'data' plate \(2 of {rows} datapoints\)"):
            bound_sweep(model, guide, x, num_samples=[1], data_batch_size=size)
    with pytest.raises(ValueError, match=r"log_evidence: the model subsamples its own 'data' "
                                         r"plate \(2 of 6 datapoints\)"):
        log_evidence(model, guide, x)
    assert bound_sweep(model, guide, x, num_samples=[1], repeats=1).subsample.shape == (2,)


def _offset_model(x, y):
    """x_i = z_i + y_i + noise: y holds one offset per datapoint."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(z + y, 1.0), obs=x)


def _offset_guide(x, y):
    """The exact posterior N((x - y) / 2, 1/2): every weight is log p(x)."""
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal((x - y) / 2, 0.5 ** 0.5))


def test_bound_sweep_cuts_per_datapoint_tensors_but_refuses_a_setting_of_as_many_rows():
    x = torch.tensor([0.3, -1.2, 2.0, 0.7])
    y = torch.tensor([1.0, 0.0, -1.0, 0.5])
    exact = float(dist.Normal(0.0, 2 ** 0.5).log_prob(x - y).mean())
    sliced = bound_sweep(_offset_model, _offset_guide, x, y, num_samples=[1, 3], repeats=1,
                         data_batch_size=2)
    assert all(row["mean"] == pytest.approx(exact, abs=1e-5) for row in sliced.rows)

    # a Gaussian mixture whose 4 component means are passed beside 4 datapoints: cut with the
    # data, each slice was scored under a 2-component model, 0.25 nats above log p(x)
    def mixture(x, locs):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(logits=torch.zeros(len(x), len(locs))))
            pyro.sample("x", dist.Normal(locs[c], 1.0), obs=x)

    def mixture_guide(x, locs):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Categorical(logits=torch.zeros(len(x), len(locs))))

    locs = torch.tensor([-3.0, -1.0, 1.0, 3.0])
    for call in (lambda: bound_sweep(mixture, mixture_guide, x, locs, num_samples=[1, 10],
                                     data_batch_size=2),
                 lambda: bound_sweep(mixture, mixture_guide, x, locs=locs, num_samples=[1, 10],
                                     data_batch_size=2)):
        with pytest.raises(ValueError, match=r"data_batch_size=2 cuts every tensor argument "
                                             r"of 4 rows.*does not hold datapoints"):
            call()

    # a lookup table of as many rows as the data, read at small labels: the first slice reads
    # the same rows whole or cut, the last does not (the ELBO was -7.24 against -2.07)
    def lookup(x, labels, table):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(table[labels], 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def lookup_guide(x, labels, table):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))

    labels, table = torch.tensor([0, 1, 0, 1]), torch.tensor([2.0, -2.0, 5.0, 7.0])
    with pytest.raises(ValueError, match=r"argument 2 \(shape \[4\]\) does not hold datapoints: "
                                         r"given whole beside the slice of rows 2:4"):
        bound_sweep(lookup, lookup_guide, x, labels, table, num_samples=[1], data_batch_size=2)


def test_bound_sweep_slices_a_pair_given_its_subsample_indices():
    # pyro.plate("data", N, subsample=idx) with idx passed, and cut, with x: the rows scored
    # are the slice's, in order; it was refused as "the model subsamples its own plate"
    x = torch.tensor([0.3, -1.2, 2.0, 0.7, -0.4])
    shifts = torch.tensor([1.0, 0.0, -1.0, 0.5, 2.0])

    def model(x, idx):
        with pyro.plate("data", 5, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
            pyro.sample("x", dist.Normal(z + shifts[idx], 1.0), obs=x)

    def guide(x, idx):  # the exact posterior: every weight is log p(x)
        with pyro.plate("data", 5, subsample=idx):
            pyro.sample("z", dist.Normal((x - shifts[idx]) / 2, 0.5 ** 0.5))

    exact = float(dist.Normal(0.0, 2 ** 0.5).log_prob(x - shifts).mean())
    table = bound_sweep(model, guide, x, torch.arange(5), num_samples=[1, 3], repeats=1,
                        data_batch_size=2)
    assert all(row["mean"] == pytest.approx(exact, abs=1e-5) for row in table.rows)
    assert torch.equal(table.subsample, torch.arange(5))


def test_slicing_a_guide_with_a_row_per_datapoint_names_that_cause():
    # the refusal blamed an uncut argument and advised sizing the plate from the data, which
    # both programs already did; AutoNormal on 300 rows failed at log_evidence's default
    # batch_size=256 with a replay message naming neither batch_size nor its parameters
    from pyro.infer.autoguide import AutoNormal

    from inference import bound_sweep, log_evidence

    x = torch.randn(6)

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        scale = pyro.param("scale", torch.full((6,), 0.7),
                           constraint=dist.constraints.positive)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(x / 2, scale))

    pyro.clear_param_store()
    with pytest.raises(ValueError, match=r"data_batch_size=2 .* the guide keeps a parameter "
                                         r"with a row per datapoint .* score all 6 rows in one "
                                         r"call \(data_batch_size >= 6\)"):
        bound_sweep(model, guide, x, num_samples=(1, 4), data_batch_size=2, progress=False)
    pyro.clear_param_store()
    auto = AutoNormal(model)
    many = torch.randn(300)
    auto(many)  # its parameters made for the 300 rows (trained on them, as a user's would be)
    with pytest.raises(ValueError, match=r"batch_size=256 .* the guide \(AutoNormal\) keeps "
                                         r"parameters for each datapoint by position.*"
                                         r"batch_size >= 300"):
        log_evidence(model, auto, many, num_samples=4, progress=False)
    assert log_evidence(model, auto, many, num_samples=4, batch_size=300,
                        progress=False).shape == (300,)


def test_slicing_an_untrained_per_datapoint_guide_is_refused_and_leaves_it_unbuilt():
    # the probe of the first rows built AutoNormal's (and AutoNormalMessenger's) parameters
    # for those rows: the refusal was Pyro's raw shape error, and the next whole-data call
    # failed on the parameters the probe had left
    from pyro.infer.autoguide import AutoNormal, AutoNormalMessenger

    from inference import log_evidence

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    x = torch.randn(6)
    for kind in (AutoNormal, AutoNormalMessenger):
        pyro.clear_param_store()
        guide = kind(model)
        with pytest.raises(ValueError, match=rf"batch_size=2 .* the guide \({kind.__name__}\) "
                                             r"keeps parameters for each datapoint by position, "
                                             r"made on its first call"):
            log_evidence(model, guide, x, num_samples=3, batch_size=2, progress=False)
        assert len(pyro.get_param_store()) == 0
        assert iwae_bound(model, guide, x, num_samples=3, progress=False).shape == (6,)


def test_a_network_whose_size_matches_the_probes_rows_is_no_per_datapoint_parameter():
    # a VAE with 3 hidden units registered its networks on the probe of 3 rows: their
    # leading size 3 read as parameters made one per row, and log_evidence was refused
    from inference import log_evidence
    from ppl_models.vae import VAE

    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = VAE((1, 4, 4), latent_dim=2, hidden=(3,))
    x = (torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    sliced = log_evidence(vae.model, vae.guide, x, num_samples=6, batch_size=2, progress=False)
    assert sliced.shape == (5,) and torch.isfinite(sliced).all()
