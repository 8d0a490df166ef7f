"""Networks a pair computes with that fit's steps would never move: a plain nn.Module in a
PyroModule pair without @pyro_method (it stayed at its initial values while the decoder
trained: final loss 10.9 against 7.4), or an encoder run under torch.no_grad() / .detach()."""

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, pyro_method
from torch.nn import functional as F

from inference import fit

D, L = 4, 2


class _Pair(PyroModule):
    def __init__(self, decorate: bool, frozen: bool = False, cut: str = ""):
        super().__init__()
        torch.manual_seed(0)
        self.dec = PyroModule[torch.nn.Linear](L, D)
        self.enc = torch.nn.Linear(D, 2 * L)
        self.enc.requires_grad_(not frozen)
        self.cut = cut
        if decorate:
            self.model = pyro_method(type(self).model).__get__(self)
            self.guide = pyro_method(type(self).guide).__get__(self)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(L), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z), 0.5).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            if self.cut == "no_grad":
                with torch.no_grad():
                    h = self.enc(x)
            else:
                h = self.enc(x).detach() if self.cut == "detach" else self.enc(x)
            pyro.sample("z", dist.Normal(h[..., :L], h[..., L:].exp()).to_event(1))


def _fit_warnings(pair) -> list[str]:
    x = torch.randn(8, D, generator=torch.Generator().manual_seed(1))
    pyro.clear_param_store()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(pair.model, pair.guide, x, epochs=1, batch_size=4, progress=False)
    return [str(w.message) for w in caught if "initial values" in str(w.message)]


def test_a_plain_network_of_an_undecorated_pyromodule_pair_is_named():
    pair = _Pair(decorate=False)
    before = pair.enc.weight.detach().clone()
    found = _fit_warnings(pair)
    assert len(found) == 1 and "_Pair.enc (Linear)" in found[0], found
    assert "not Pyro parameters" in found[0] and "@pyro_method" in found[0], found
    assert torch.equal(pair.enc.weight, before)  # what the warning is about


@pytest.mark.parametrize("pair", [_Pair(decorate=True), _Pair(decorate=False, frozen=True)],
                         ids=["decorated", "frozen"])
def test_a_decorated_pair_or_a_frozen_network_is_not_named(pair):
    assert _fit_warnings(pair) == []


@pytest.mark.parametrize("cut", ["no_grad", "detach"])
def test_an_encoder_computed_without_gradient_is_named(cut):
    found = _fit_warnings(_Pair(decorate=True, cut=cut))
    assert len(found) == 1 and "_Pair.enc (Linear)" in found[0], found
    assert "gives them no gradient" in found[0], found


def test_an_unregistered_network_of_plain_functions_is_named():
    torch.manual_seed(0)
    encoder, decoder = torch.nn.Linear(D, 2 * L), torch.nn.Linear(L, D)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(L), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(decoder(z), 0.5).to_event(1), obs=x)

    def guide(x):  # forgot pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            h = encoder(x)
            pyro.sample("z", dist.Normal(h[..., :L], h[..., L:].exp()).to_event(1))

    pair = type("Plain", (), {"model": staticmethod(model), "guide": staticmethod(guide)})
    found = _fit_warnings(pair)
    assert len(found) == 1, found
    assert "Linear(in_features=4, out_features=4, bias=True)" in found[0], found
    assert "pyro.module('name', network)" in found[0], found


def test_a_layer_behind_a_zero_initialized_head_is_not_called_gradless():
    # its gradient is exactly 0 at the start only: it was named as computed under no_grad
    torch.manual_seed(0)
    pyro.clear_param_store()
    enc = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 6))
    torch.nn.init.zeros_(enc[2].weight)
    torch.nn.init.zeros_(enc[2].bias)
    dec = torch.nn.Linear(3, 3)

    def model(x):
        pyro.module("dec", dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(dec(z), 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.module("enc", enc)
        h = enc(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(h[:, :3], F.softplus(h[:, 3:]) + 1e-3).to_event(1))

    before = enc[0].weight.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(model, guide, torch.randn(8, 3), epochs=3, batch_size=4, progress=False)
    assert (enc[0].weight - before).abs().max() > 0


def test_a_gradless_network_of_plain_functions_is_named_as_pyro_module_registered_it():
    # named only by class and path ("Sequential.0 (Linear)"), an encoder could not be told
    # from a decoder of the same layers
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Linear(D, 2 * L))
    decoder = torch.nn.Sequential(torch.nn.Linear(L, D))

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(L), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(decoder(z), 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with torch.no_grad():
            loc, raw = encoder(x).chunk(2, -1)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc, F.softplus(raw)).to_event(1))

    pyro.clear_param_store()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(model, guide, torch.randn(8, D), epochs=1, progress=False)
    found = [str(w.message) for w in caught if "no gradient" in str(w.message)]
    assert len(found) == 1 and "'encoder': Sequential.0 (Linear)" in found[0], found
    assert "'decoder'" not in found[0]
