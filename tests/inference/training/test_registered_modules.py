"""Finding the networks of plain-function pairs (inference/reachable.py) and keeping their
buffers (inference/reachable.py, inference/training/registered_modules.py)."""

import functools

import pyro
import torch

from inference.reachable import kept_buffers, reachable_modules
from inference.training.registered_modules import buffers_state, registered_prefix, restore_buffers

GLOBAL_NET = torch.nn.Linear(2, 2)


def _uses_global(x):
    return GLOBAL_NET(x)


class _Holder:  # a plain object holding networks, its methods the pair
    def __init__(self):
        self.nets = {"encoder": torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())}

    def guide(self, x):
        return self.nets["encoder"](x)


def test_networks_are_found_through_every_kind_of_reference():
    closed = torch.nn.Linear(2, 1)
    default = torch.nn.Linear(1, 1)
    partial_net = torch.nn.Linear(3, 1)

    def model(x, net=default):
        return _uses_global(x) + closed(x) + net(x[..., :1])

    holder = _Holder()
    found = reachable_modules(model, holder.guide,
                              functools.partial(lambda x, n: n(x), n=partial_net))
    ids = {id(m) for m in found}
    assert ids == {id(GLOBAL_NET), id(closed), id(default), id(partial_net),
                   id(holder.nets["encoder"])}
    # top-level networks only: the Sequential, not its Linear
    assert id(holder.nets["encoder"][0]) not in ids


def test_registered_prefix_matches_the_parameter_pyro_module_passed():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2))
    pyro.clear_param_store()

    def model():
        pyro.module("enc", net)

    trace = pyro.poutine.trace(model).get_trace()
    sites = [(name, site) for name, site in trace.nodes.items() if site["type"] == "param"]
    assert [registered_prefix(name, site["args"], net) for name, site in sites] == ["enc"] * 2
    other = torch.nn.Sequential(torch.nn.Linear(2, 2))  # same names, other tensors
    assert {registered_prefix(name, site["args"], other) for name, site in sites} == {None}
    pyro.clear_param_store()


def test_buffers_round_trip_and_mismatches_are_named():
    net = torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        net.running_mean.fill_(2.0)
    state = buffers_state({"bn": net, "plain": torch.nn.Linear(1, 1)})
    assert set(state) == {"bn"}  # networks without buffers are left out
    fresh = torch.nn.BatchNorm1d(3)
    assert restore_buffers({"bn": fresh}, state) == []
    assert torch.equal(fresh.running_mean, torch.full((3,), 2.0))
    problems = restore_buffers({"bn": torch.nn.BatchNorm1d(4)}, state)
    assert any("bn.running_mean: [3] in the checkpoint, [4] now" in p for p in problems)
    assert restore_buffers({}, state) == ["network 'bn': in the checkpoint, not registered now"]


def test_kept_buffers_undo_a_training_mode_pass():
    net = torch.nn.BatchNorm1d(2)
    with kept_buffers([net]):
        net(torch.randn(8, 2) + 5.0)
        assert net.running_mean.abs().sum() > 0.1  # the pass moved them inside the block
    assert torch.equal(net.running_mean, torch.zeros(2))
    assert int(net.num_batches_tracked) == 0


def test_kept_buffers_put_back_a_buffer_the_run_replaced():
    net = torch.nn.BatchNorm1d(2)
    original = net.running_mean
    with kept_buffers([net]):
        net.running_mean = torch.full((2,), 7.0)  # reassigned, not updated in place
    assert net.running_mean is original and torch.equal(original, torch.zeros(2))
