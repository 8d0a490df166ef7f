"""Parameters and Pyro's param store: networks a pair builds anew on every run
(``pyro.module("enc", nn.Linear(4, 4))`` inside the guide), which compute with freshly
initialized weights on each run while the store keeps one run's tensors; and ``PyroParam``s
that take an earlier instance's values from the store under their names."""

from __future__ import annotations

import contextlib
import warnings

import pyro
import torch
from pyro import poutine
from torch.distributions.transforms import Transform

from ..checks import autograd_arguments, recording_autograd, user_stacklevel
from ..random_state import forked_rng
from ..reachable import reachable_modules
from .sites import PairError, tensor_text, trace_pair


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
    with forked_rng(), poutine.block(), recording_autograd():
        args, kwargs = autograd_arguments(args, kwargs)
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


class AdoptedParamWarning(UserWarning):
    """A ``PyroModule``'s ``PyroParam`` took another value from Pyro's param store."""


class ShadowedParamWarning(UserWarning):
    """Pyro's param store holds another tensor under a network parameter's name (a loaded
    store, another instance's): the network computes with its own."""


def pyro_params_held(model, guide) -> list[tuple[torch.nn.Module, str, torch.Tensor]]:
    """``(module, name, unconstrained tensor)`` of the ``PyroParam``s of the ``PyroModule``s
    whose methods ``model`` and ``guide`` are, or that they are themselves (a module called
    as the guide), and of their submodules, before a run."""
    owners = {id(o): o for o in (getattr(model, "__self__", None),
                                 getattr(guide, "__self__", None), model, guide)
              if isinstance(o, torch.nn.Module)}
    return [(sub, name, sub._parameters[name + "_unconstrained"])
            for owner in owners.values() for sub in owner.modules()
            for name in getattr(sub, "_pyro_params", {})
            if sub._parameters.get(name + "_unconstrained") is not None]


def warn_adopted(held) -> None:
    """Warn (:class:`AdoptedParamWarning`) for each ``PyroParam`` of ``held``
    (:func:`pyro_params_held`) that a run replaced by another value from Pyro's param store:
    ``PyroModule`` adopts the store's tensor under the parameter's name, so an instance built
    after another of its class in one process continues from the earlier one's values (an
    estimate of the new model is then one of the old), as it does, on purpose, after
    ``pyro.get_param_store().load``."""
    for module, name, before in held:
        now = module._parameters.get(name + "_unconstrained")
        if now is None or now is before or (now.shape == before.shape
                                             and torch.equal(now.detach(), before.detach())):
            continue
        constraint = module._pyro_params[name][0]
        shown = [_value_text(constraint, t) for t in (before, now)]
        warnings.warn(
            f"{type(module).__name__}'s PyroParam '{name}' ({shown[0]} when built) took "
            f"the value Pyro's param store holds under its name ({shown[1]}): PyroModule "
            "adopts the store's tensors, so an instance built after another of its class "
            "(or after pyro.get_param_store().load) continues from those. If this is a new "
            "model, call pyro.clear_param_store() before building it",
            AdoptedParamWarning, stacklevel=user_stacklevel())


def check_store_shapes(model, guide, called: str | None = None) -> None:
    """Refuse, before any run, a ``PyroParam`` of the ``PyroModule``s whose methods ``model``
    and ``guide`` are when Pyro's param store holds a tensor of another shape or dtype under
    its name: the module would adopt it at its first use (an instance of another size built
    after an earlier one in one process), and the pair fail in torch with a bare shape error.
    """
    store = pyro.get_param_store()
    found = []
    for module, name, tensor in pyro_params_held(model, guide):
        prefix = module.__dict__.get("_pyro_name", "")
        full = f"{prefix}.{name}" if prefix else name  # PyroModule's name in the store
        if full not in store:
            continue
        with torch.no_grad():
            built = torch.distributions.transform_to(module._pyro_params[name][0])(tensor)
        held = store.get_param(full)
        if held.shape != built.shape or held.dtype != built.dtype:
            typed = held.dtype != built.dtype
            found.append(f"'{full}' of {type(module).__name__}: {_shown(built, typed)} built, "
                         f"{_shown(held, typed)} in the store")
    if found:
        raise PairError(
            (f"{called}: " if called else "") + "Pyro's param store holds tensors of another "
            f"shape or dtype under the names of the PyroParam(s) {', '.join(found)}, left by "
            "an earlier model of another size or precision (or by this one before .double() "
            "or .float()): PyroModule adopts the store's "
            "tensor at its first use, and the pair would fail with a bare shape or dtype "
            "error, or compute with the other model's tensor where it broadcasts. Call "
            "pyro.clear_param_store() before building a new model")


def _shown(tensor: torch.Tensor, typed: bool) -> str:
    """``[2, 2]``, or with ``typed`` ``[2, 2] float64``."""
    return f"{list(tensor.shape)}" + (f" {str(tensor.dtype).replace('torch.', '')}"
                                      if typed else "")


def _value_text(constraint, unconstrained: torch.Tensor) -> str:
    """A parameter's constrained value, short (:func:`.sites.tensor_text`)."""
    with torch.no_grad():
        return tensor_text(torch.distributions.transform_to(constraint)(unconstrained.detach()))


def shadowed_parameters(traces) -> dict[str, torch.nn.Parameter]:
    """Site name -> parameter, for each param site of ``traces`` given a network's own
    ``nn.Parameter`` (as ``pyro.module`` and a ``PyroModule`` give them) that got another
    tensor back from Pyro's param store: the store shadows it, and the network computes with
    its own (a second instance's, or a fresh network's beside a loaded store)."""
    return {site["name"]: site["args"][1] for trace in traces for site in trace.nodes.values()
            if site["type"] == "param" and len(site["args"]) > 1
            and isinstance(site["args"][1], torch.nn.Parameter)
            and site["kwargs"].get("constraint") is torch.distributions.constraints.real
            and site["value"] is not site["args"][1]}


def confirmed_shadowed(model, guide, args, kwargs, first_traces) -> tuple[str, ...]:
    """The param sites of ``first_traces`` (the pair's traces) whose network parameter Pyro's
    param store shadows (:func:`shadowed_parameters`), and again in a second run: the first
    call of ``pyro.module(..., update_module_params=True)`` puts the store's tensors into the
    network, which then computes with them."""
    first = shadowed_parameters(first_traces)
    if not first:
        return ()
    with poutine.block(), torch.no_grad(), forked_rng():
        again = shadowed_parameters(trace_pair(model, guide, args, kwargs))
    return tuple(name for name, param in again.items() if first.get(name) is param)


def nonfinite_parameters(model, guide) -> list[str]:
    """Descriptions of the parameters with NaN or infinite values among those of the networks
    ``model`` and ``guide`` reach and of Pyro's param store (left by a diverged run, which
    keeps its last values): ``"Encoder.net.0.weight (128 of 128)"``. Empty when all are
    finite."""
    named = [(f"{type(module).__name__}.{name}", value)
             for module in reachable_modules(model, guide)
             for name, value in module.named_parameters()]
    named += [(f"param store '{name}'", value)
              for name, value in pyro.get_param_store().named_parameters()]
    found, seen = [], set()
    for name, value in named:
        if id(value) in seen:  # a network's parameter, also in the store
            continue
        seen.add(id(value))
        bad = int((~torch.isfinite(value.detach())).sum())
        if bad:
            found.append(f"{name} ({bad} of {value.numel()})")
    return found


def nonfinite_param_sites(traces) -> tuple[str, ...]:
    """``"name (bad of n)"`` of the param sites of ``traces`` whose values hold NaN or
    infinite entries, each once."""
    found = {}
    for trace in traces:
        for site in trace.nodes.values():
            if site["type"] == "param" and site["name"] not in found:
                value = site["value"]
                bad = int((~torch.isfinite(value.detach())).sum()) if torch.is_tensor(value) \
                    and value.is_floating_point() else 0
                found[site["name"]] = f"{site['name']} ({bad} of {value.numel()})" if bad else ""
    return tuple(text for text in found.values() if text)


def forget_params(store, names) -> None:
    """Remove the entries ``names`` from Pyro's param store ``store``, by name only.

    ``del store[name]`` also pops the tensor from the store's tensor -> name table, which
    holds one name per tensor: a tensor registered under two names (an AutoIAFNormal's
    network, as a PyroModule's parameter and through ``pyro.module``) raised ``KeyError`` for
    the second. Here a tensor's entry in that table goes only with the name it holds."""
    params = getattr(store, "_params", None)
    to_name = getattr(store, "_param_to_name", None)
    held = getattr(store, "_constraints", None)
    if not (isinstance(params, dict) and isinstance(to_name, dict) and isinstance(held, dict)):
        for name in names:  # another layout of Pyro's store: its own deletion
            with contextlib.suppress(KeyError):
                del store[name]
        return
    for name in names:
        value = params.pop(name, None)
        held.pop(name, None)
        if value is not None and to_name.get(value) == name:
            del to_name[value]
    # a tensor still stored under another name maps to that one
    for name, value in params.items():
        to_name.setdefault(value, name)
