"""Networks a pair builds anew on every run (``pyro.module("enc", nn.Linear(4, 4))`` inside the
guide): each run computes with freshly initialized weights, while Pyro's param store keeps the
first run's tensors under the same names and hands those to training."""

from __future__ import annotations

import torch
from pyro import poutine
from torch.distributions.transforms import Transform

from ..random_state import forked_rng
from .sites import trace_pair


def _network_parameters(traces) -> dict[str, tuple[str, torch.nn.Parameter, object]]:
    """``name -> (role, the nn.Parameter given to pyro.param, the tensor the store returned)``
    of the param sites of ``(model_trace, guide_trace)`` given a network's own parameter
    (``pyro.module`` and ``PyroModule`` give them so)."""
    found = {}
    for role, trace in zip(("model", "guide"), traces):
        for site in trace.nodes.values():
            if site["type"] == "param" and len(site["args"]) > 1 and \
                    isinstance(site["args"][1], torch.nn.Parameter):
                found.setdefault(site["name"], (role, site["args"][1], site["value"]))
    return found


def _held_tensors(value, depth: int = 0) -> list[torch.Tensor]:
    """The tensors a distribution holds: its arguments, its base distribution's, its
    transforms' (through ``Independent``, masks, ``TransformedDistribution``)."""
    if torch.is_tensor(value):
        return [value]
    if depth > 4:
        return []
    if isinstance(value, (torch.distributions.Distribution, Transform)):
        items = vars(value).values()
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        return []
    return [t for item in items for t in _held_tensors(item, depth + 1)]


def _computes_with(traces, params: list[torch.Tensor]) -> list[bool]:
    """For each of ``params``, whether a sample site's distribution (or value) in ``traces``
    depends on it, read from the autograd graph of the run."""
    held = [t for trace in traces for site in trace.nodes.values() if site["type"] == "sample"
            for t in (*_held_tensors(site["fn"]), site["value"])
            if torch.is_tensor(t) and t.requires_grad]
    if not held:
        return [False] * len(params)
    total = sum(t.sum() for t in held if t.is_floating_point())
    if not torch.is_tensor(total) or not total.requires_grad:
        return [False] * len(params)
    grads = torch.autograd.grad(total, params, allow_unused=True)
    return [g is not None for g in grads]


def _renewed(first: dict, name: str, given, returned) -> bool:
    """Whether a later run's parameter ``name`` is a new ``nn.Parameter`` (``given``) while
    the store holds another tensor than that (the first run's), or holds another tensor
    than in the first run (a ``PyroModule`` submodule reassigned in a ``pyro_method``: Pyro
    drops the old one's parameters from the store and keeps the new ones)."""
    if name not in first or given is first[name][1]:
        return False
    return returned is not given or returned is not first[name][2]


def rebuilt_networks(model, guide, args, kwargs, first_traces) -> list[tuple[str, str]]:
    """``(role, parameter name)`` of network parameters that a second run of the pair gives
    as other ``nn.Parameter`` objects than ``first_traces`` (the survey's run) did, while the
    store returns another tensor for them and the run computes with the new ones: a network
    built inside the model or guide. A network built once keeps its parameters from run to
    run; one rebuilt with ``pyro.module(..., update_module_params=True)`` computes with the
    store's tensors and is fine. The further runs restore the random state and hide their
    effects; a second runs when the first gave network parameters, a third (with gradients)
    when the second gave new ones."""
    first = _network_parameters(first_traces)
    if not first:
        return []
    with forked_rng(), poutine.block(), torch.no_grad():
        second = _network_parameters(trace_pair(model, guide, args, kwargs))
    if not any(_renewed(first, name, given, returned)
               for name, (_, given, returned) in second.items()):
        return []
    # a third run, with gradients, tells whether the run computes with the new parameters
    with forked_rng(), poutine.block(), torch.enable_grad():
        third_traces = trace_pair(model, guide, args, kwargs)
        rebuilt = [(name, role, given) for name, (role, given, returned)
                   in _network_parameters(third_traces).items()
                   if _renewed(first, name, given, returned)]
        used = _computes_with(third_traces, [given for _, _, given in rebuilt])
    return [(role, name) for (name, role, _), use in zip(rebuilt, used) if use]


def rebuilt_network_message(rebuilt: list[tuple[str, str]]) -> str:
    """The refusal of :func:`rebuilt_networks`' findings."""
    role, name = rebuilt[0]
    more = f" (and {len(rebuilt) - 1} more)" if len(rebuilt) > 1 else ""
    if "$$$" in name:  # pyro.module's naming
        module = name.split("$$$")[0]
        example = f"pyro.module('{module}', nn.Linear(...)) inside the {role}"
        register = f"register it in the {role} with pyro.module('{module}', net)"
    else:  # a PyroModule's
        module = name.rsplit(".", 1)[0]
        example = (f"a PyroModule built, or assigned to self.{module.split('.')[-1]}, inside "
                   f"the {role}")
        register = f"use it in the {role}"
    return (
        f"parameter '{name}'{more} belongs to a network the {role} builds anew on every run "
        f"(e.g. {example}): each run computes "
        "with freshly initialized weights, so no two runs draw from the same distribution "
        "(every estimate mixes different pairs), and training would step tensors that the "
        "next run does not use. Build the network once (in the module's __init__, or outside "
        f"the {role}) and {register}")
