"""A second PyroModule built in one process takes the first's PyroParam values from Pyro's
param store (PyroModule adopts the store's tensors under a parameter's name): a new
``LinearGaussian(noise_scale=0.2)`` scored after one of 0.3 was silently a model of 0.3 (its
IWAE 0.8 to 2 nats from its own closed form, its attribute then reading 0.3). The survey
warns when a run replaces a PyroParam by another value from the store."""

import pyro
import pytest
import torch

from inference import AdoptedParamWarning, elbo
from ppl_models import LinearGaussian


@pytest.fixture(autouse=True)
def _fresh_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def test_a_second_instance_taking_the_first_s_values_is_named():
    first, second = LinearGaussian(3, 1, noise_scale=0.3), LinearGaussian(3, 1, noise_scale=0.2)
    x = first.simulate(5)
    elbo(first.model, first.guide, x)
    with pytest.warns(AdoptedParamWarning, match=r"LinearGaussian's PyroParam 'noise_scale' "
                                                 r"\(0.2 when built\) took .* \(0.3\).* "
                                                 r"pyro.clear_param_store\(\)"):
        elbo(second.model, second.guide, x)
    assert float(second.noise_scale) == pytest.approx(0.3)  # Pyro's semantics, now said


def test_no_warning_for_one_instance_or_after_clearing_the_store(recwarn):
    first = LinearGaussian(3, 1, noise_scale=0.3)
    x = first.simulate(5)
    elbo(first.model, first.guide, x)
    elbo(first.model, first.guide, x)
    pyro.clear_param_store()
    second = LinearGaussian(3, 1, noise_scale=0.2)
    elbo(second.model, second.guide, x)
    assert float(second.noise_scale) == pytest.approx(0.2)
    assert not [w for w in recwarn if issubclass(w.category, AdoptedParamWarning)]
    torch.testing.assert_close(second.noise_scale.detach(), torch.tensor(0.2))



def test_a_new_model_of_another_size_is_refused_before_it_runs():
    """A second ``LinearGaussian`` with another latent size adopted the first one's
    ``[1, 1]`` scale factor from the param store and every estimator failed in torch's
    ``MultivariateNormal.rsample`` with a bare shape error (the warning above needs a run
    that succeeds); fit likewise. Refused now, naming the parameter and both shapes."""
    from inference import PairError, fit, iwae_bound

    pyro.clear_param_store()
    first = LinearGaussian(3, 1, seed=1)
    x = first.simulate(4, seed=2)
    iwae_bound(first.model, first.guide, x, num_samples=5, progress=False)
    second = LinearGaussian(3, 2, seed=1)
    for call in (lambda: iwae_bound(second.model, second.guide, x, num_samples=5,
                                    progress=False),
                 lambda: fit(second.model, second.guide, x, epochs=1, progress=False)):
        with pytest.raises(PairError, match=r"'guide_scale_tril' of LinearGaussian: \[2, 2\] "
                                            r"built, \[1, 1\] in the store"):
            call()
    assert list(second.guide_scale_tril.shape) == [2, 2]  # nothing ran
    pyro.clear_param_store()
    assert torch.isfinite(iwae_bound(second.model, second.guide, x, num_samples=5,
                                     progress=False)).all()


def test_a_new_model_of_another_precision_is_refused_before_it_runs():
    """A float64 LinearGaussian built after a float32 one adopted its float32 tensors and
    failed in torch ("expected scalar type Float but found Double")."""
    from inference import PairError, iwae_bound

    first = LinearGaussian(3, 1, seed=1)
    x = first.simulate(4, seed=2)
    iwae_bound(first.model, first.guide, x, num_samples=5, progress=False)
    second = LinearGaussian(3, 1, seed=1).double()
    with pytest.raises(PairError, match=r"'guide_scale_tril' of LinearGaussian: \[1, 1\] "
                                        r"float64 built, \[1, 1\] float32 in the store"):
        iwae_bound(second.model, second.guide, x.double(), num_samples=5, progress=False)
