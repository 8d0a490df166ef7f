"""``log_evidence`` and ``bound_sweep(data_batch_size=...)`` survey the pair in full once per
slice shape and, for the other slices, take the probes that rerun the program from that
survey (``survey_pair(..., reference=...)``): what each slice's rows decide is still judged
on those rows, and a slice whose run takes another program path is surveyed in full."""

import pyro
import pyro.distributions as dist
import pytest
import torch

import inference.pair_check.survey as survey_module
from inference import bound_sweep, log_evidence
from inference.pair_check import PairError


def gaussian_pair(scale=1.0):
    """z ~ N(0, 1), x | z ~ N(z, 1) per datapoint; the guide is the exact posterior
    N(x / 2, 1/2), so every log weight is log p(x) = log N(x; 0, 2)."""
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0., 1.))
            pyro.sample("x", dist.Normal(z, 1.), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x / 2, 0.5 ** 0.5 * scale))
    return model, guide


@pytest.fixture
def full_surveys(monkeypatch):
    """The number of full surveys (those that probe broadcasting) in a call."""
    count = []
    probe = survey_module.try_vectorized

    def counted(*args, **kwargs):
        count.append(1)
        return probe(*args, **kwargs)
    monkeypatch.setattr(survey_module, "try_vectorized", counted)
    return count


def test_slices_of_one_shape_are_surveyed_in_full_once_and_scored_exactly(full_surveys):
    model, guide = gaussian_pair()
    x = torch.linspace(-3, 3, 50)
    values = log_evidence(model, guide, x, num_samples=2, batch_size=10, progress=False)
    exact = dist.Normal(0., 2 ** 0.5).log_prob(x)
    assert torch.allclose(values, exact, atol=1e-5)
    # the first slice's survey probes broadcasting; the four other slices of 10 rows reuse it
    # (before: five probes)
    assert len(full_surveys) == 1


def test_a_short_last_slice_is_surveyed_in_full(full_surveys):
    model, guide = gaussian_pair()
    x = torch.linspace(-3, 3, 45)
    log_evidence(model, guide, x, num_samples=2, batch_size=10, progress=False)
    assert len(full_surveys) == 2


@pytest.mark.parametrize("validate", [True, False])
def test_a_value_outside_the_support_in_a_later_slice_is_refused(validate):
    def model(x):
        with pyro.plate("data", x.shape[0]):
            p = pyro.sample("p", dist.Beta(2., 2.))
            pyro.sample("x", dist.Bernoulli(p), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("p", dist.Beta(2. + x.clamp(0, 1), 3. - x.clamp(0, 1)))
    x = torch.tensor([0., 1.] * 20)
    x[33] = 3.
    with pyro.validation_enabled(validate), pytest.raises(PairError, match="'x'"):
        log_evidence(model, guide, x, num_samples=4, batch_size=10, progress=False)
    with pyro.validation_enabled(validate), pytest.raises(PairError, match="'x'"):
        bound_sweep(model, guide, x, num_samples=[1, 4], repeats=2, data_batch_size=10,
                    progress=False)


def test_a_slice_that_takes_another_program_path_is_judged_on_its_own():
    """A model that draws an extra latent for large values: the later slice's run has a
    site the guide lacks, which its own full survey refuses."""
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0., 1.))
            if bool((x > 10).any()):
                z = z + pyro.sample("shift", dist.Normal(0., 1.))
            pyro.sample("x", dist.Normal(z, 1.), obs=x)

    _, guide = gaussian_pair()
    x = torch.zeros(30)
    assert torch.isfinite(log_evidence(model, guide, x, num_samples=2, batch_size=10,
                                       progress=False)).all()
    x[25] = 20.
    with pytest.raises(PairError, match="shift"):
        log_evidence(model, guide, x, num_samples=2, batch_size=10, progress=False)


def test_a_latent_mask_that_differs_in_a_later_slice_is_judged_on_its_rows():
    """The model masks the latent's density where x is missing (NaN-free marker -1), the
    guide does not: a density ratio of different measures, refused once a slice has such a
    row, however the first slice looked."""
    def model(x):
        with pyro.plate("data", x.shape[0]):
            with pyro.poutine.mask(mask=x > -1):
                z = pyro.sample("z", dist.Normal(0., 1.))
            pyro.sample("x", dist.Normal(z, 1.), obs=x)

    _, guide = gaussian_pair()
    x = torch.zeros(30)
    assert torch.isfinite(log_evidence(model, guide, x, num_samples=2, batch_size=10,
                                       progress=False)).all()
    x[27] = -1.
    with pytest.raises(PairError, match="'z'"):
        log_evidence(model, guide, x, num_samples=2, batch_size=10, progress=False)


def test_sliced_sweep_matches_the_exact_evidence_on_every_slice(full_surveys):
    model, guide = gaussian_pair()
    x = torch.linspace(-2, 2, 40)
    table = bound_sweep(model, guide, x, num_samples=[1, 8], repeats=2, data_batch_size=8,
                        progress=False)
    exact = float(dist.Normal(0., 2 ** 0.5).log_prob(x).mean())
    for row in table.rows:
        assert row["mean"] == pytest.approx(exact, abs=1e-5)
    assert len(full_surveys) == 1


def test_a_non_finite_weight_is_named_by_its_row_of_the_whole_data():
    """The rows named were the slice's (row 3 for row 33)."""
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0., 1.))
            pyro.sample("x", dist.Normal(z, 1.), obs=x)

    def guide(x):  # collapses to a point mass where x is 5
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x / 2, (5. - x).abs()))
    x = torch.zeros(40)
    x[33] = 5.
    with pyro.validation_enabled(False):
        with pytest.raises(ValueError, match=r"datapoints \[33\]"):
            log_evidence(model, guide, x, num_samples=2, batch_size=10, progress=False)
        with pytest.raises(ValueError, match=r"datapoints \[33\]"):
            bound_sweep(model, guide, x, num_samples=[2], repeats=1, data_batch_size=10,
                        progress=False)


def test_rows_that_depend_on_each_other_in_a_later_slice_are_refused():
    """The model rescales by the batch's largest value only when the batch holds one above
    5: the same sites on every slice, but only the second slice's rows depend on each
    other (they were scored, each by the company it kept)."""
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0., 1.))
            scale = x.abs().max() if bool((x.abs() > 5).any()) else torch.tensor(1.)
            pyro.sample("x", dist.Normal(z, 1.), obs=x / scale)

    _, guide = gaussian_pair()
    x = torch.tensor([0.1, -0.3, 0.5, 0.2, 0.4, -0.2, 0.3, 9.0])
    with pytest.raises(PairError, match="depends on the other datapoints"):
        log_evidence(model, guide, x, num_samples=2, batch_size=4, progress=False)
