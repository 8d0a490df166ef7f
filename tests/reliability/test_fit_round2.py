"""fit's arguments and its first-minibatch checks, round 2 of the training probe: what used
to fail mid-epoch inside Pyro or torch is refused before training, naming the cause."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference import fit

from .test_resume_round2 import _baseline_pair

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
