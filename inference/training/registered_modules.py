"""The networks a plain-function pair registers with ``pyro.module``.

A pair written as methods of an ``nn.Module`` hands :func:`inference.fit` its networks; a pair
of plain functions (``pyro.module("encoder", encoder)`` on a network held in a global or a
closure) does not, and Pyro's param store holds only their parameters. Their buffers (batch
norm's running statistics) and extra state (``get_extra_state``) would then be neither put in
evaluation mode for validation nor saved with a checkpoint.
:func:`inference.reachable.reachable_modules` finds the candidates in what the functions
reference; :func:`registered_prefix` tells which of them a param site
registers.
"""

from __future__ import annotations

import copy

import pyro
import torch

EXTRA_STATE = "_extra_state"  # the suffix under which state_dict keeps a module's extra state


def registered_prefix(site_name: str, site_args: tuple, network: torch.nn.Module) -> str | None:
    """The name under which ``pyro.module`` registered ``network`` when it made the param
    site ``site_name`` (``"encoder$$$0.weight"`` -> ``"encoder"``), judged by the initial
    value it passed being that network's parameter of that name; None otherwise."""
    prefix, divider, parameter_name = site_name.rpartition("$$$")
    if not divider or len(site_args) < 2:
        return None
    parameter = dict(network.named_parameters()).get(parameter_name)
    return prefix if parameter is not None and parameter is site_args[1] else None


def _keeps_extra_state(module: torch.nn.Module) -> bool:
    """Whether ``module`` has state of its own beyond parameters and buffers
    (``get_extra_state`` overridden), which ``state_dict`` keeps as ``<name>._extra_state``."""
    return type(module).get_extra_state is not torch.nn.Module.get_extra_state


def _extra_state_key(submodule_name: str) -> str:
    return f"{submodule_name}.{EXTRA_STATE}" if submodule_name else EXTRA_STATE


def buffers_state(networks: dict) -> dict:
    """``{name: {buffer: tensor}}`` of ``networks`` (name -> module), copies, with each
    submodule's extra state (``get_extra_state()``, copied) under ``"<submodule>._extra_state"``
    as ``state_dict`` names it; networks with neither are left out."""
    state = {}
    for name, network in networks.items():
        entries = {key: value.detach().clone() for key, value in network.named_buffers()}
        entries.update({_extra_state_key(sub_name): copy.deepcopy(sub.get_extra_state())
                        for sub_name, sub in network.named_modules() if _keeps_extra_state(sub)})
        if entries:
            state[name] = entries
    return state


def restore_buffers(networks: dict, state: dict) -> list[str]:
    """Copy the buffers of ``state`` (from :func:`buffers_state`) into ``networks`` in place
    and hand each submodule its extra state (``set_extra_state``); returns descriptions of
    what does not fit (a missing network, buffer or submodule with extra state, another
    shape), in which case nothing is restored."""
    problems = []
    for name, entries in state.items():
        network = networks.get(name)
        if network is None:
            problems.append(f"network {name!r}: in the checkpoint, not registered now")
            continue
        live = dict(network.named_buffers())
        keeping = {_extra_state_key(sub_name) for sub_name, sub in network.named_modules()
                   if _keeps_extra_state(sub)}
        for key, value in entries.items():
            if key.rpartition(".")[2] == EXTRA_STATE:
                if key not in keeping:
                    problems.append(f"{name}.{key}: in the checkpoint, no such extra state now")
            elif key not in live or not torch.is_tensor(value) or live[key].shape != value.shape:
                saved = list(value.shape) if torch.is_tensor(value) else type(value).__name__
                problems.append(f"{name}.{key}: {saved} in the checkpoint, "
                                f"{list(live[key].shape) if key in live else 'absent'} now")
    if not problems:
        with torch.no_grad():
            for name, entries in state.items():
                network = networks[name]
                live = dict(network.named_buffers())
                for key, value in entries.items():
                    if key.rpartition(".")[2] == EXTRA_STATE:
                        sub_name = key[:-len(EXTRA_STATE)].rstrip(".")
                        network.get_submodule(sub_name).set_extra_state(value)
                    else:
                        live[key].copy_(value)
    return problems


def frozen_parameters(modules: list, networks: dict) -> dict:
    """The names of the parameters with ``requires_grad`` False (frozen, by the user or a
    callback: "train the decoder alone from epoch 3"), of each module in ``modules``, of
    each network in ``networks`` (name -> module) and of Pyro's param store (``"store"``: a
    plain ``pyro.param``'s ``unconstrained()`` frozen): what a resumed run must set again to
    train as the interrupted one did."""
    record = _names_per_module(modules, networks, lambda module: [
        name for name, p in module.named_parameters() if not p.requires_grad])
    record["store"] = [name for name, p in pyro.get_param_store().named_parameters()
                       if not p.requires_grad]
    return record


def restore_frozen(modules: list, networks: dict, state: dict) -> list[str]:
    """Set ``requires_grad`` of the parameters of ``modules``, ``networks`` and Pyro's param
    store as :func:`frozen_parameters` recorded them in ``state`` (frozen where it lists
    them, trainable elsewhere; a module, network or record it does not hold is left as it
    is). Returns what it changed, ``"froze <Module>.<parameter>"`` or ``"unfroze ..."``,
    for the caller to report (a resumed run's own freezing is overridden)."""
    changed = []

    def set_flag(label: str, p: torch.Tensor, frozen: bool) -> None:
        if p.requires_grad == frozen:
            changed.append(f"{'froze' if frozen else 'unfroze'} {label}")
            p.requires_grad_(not frozen)

    seen = set()  # (a module's parameter is in the store too, under its Pyro name)
    for module, names in _recorded_pairs(modules, networks, state):
        for name, p in module.named_parameters():
            seen.add(id(p))
            set_flag(f"{type(module).__name__}.{name}", p, name in names)
    if "store" in state:
        for name, p in pyro.get_param_store().named_parameters():
            if id(p) not in seen:
                set_flag(f"pyro.param('{name}')", p, name in state["store"])
    return changed


def evaluating_submodules(modules: list, networks: dict) -> dict:
    """The names of the submodules in evaluation mode (``""`` for the module itself) of each
    module in ``modules`` and each network in ``networks`` (name -> module): a callback's
    ``.eval()`` that the later epochs train under, which a resumed run must repeat."""
    return _names_per_module(modules, networks, lambda module: [
        name for name, sub in module.named_modules() if not sub.training])


def restore_evaluating(modules: list, networks: dict, state: dict) -> list[str]:
    """Set each submodule's mode as :func:`evaluating_submodules` recorded it in ``state``
    (evaluation where it lists the submodule, training elsewhere; each alone, not its
    children; a module or network it does not hold is left as it is). Returns what it
    changed, ``"<Module>.<submodule> to evaluation mode"`` or ``"... to training mode"``."""
    changed = []
    for module, names in _recorded_pairs(modules, networks, state):
        for name, sub in module.named_modules():
            if sub.training == (name in names):
                sub.training = name not in names
                changed.append(f"{type(module).__name__}{'.' + name if name else ''} to "
                               f"{'training' if sub.training else 'evaluation'} mode")
    return changed


def _names_per_module(modules: list, networks: dict, names) -> dict:
    """``{"modules": [names(m) for m in modules], "networks": {name: names(net)}}``."""
    return {"modules": [names(m) for m in modules],
            "networks": {name: names(net) for name, net in networks.items()}}


def _recorded_pairs(modules: list, networks: dict, state: dict) -> list:
    """``(module, recorded names)`` for the modules and the networks (by name, those this
    pair has) of a state of :func:`_names_per_module`'s layout."""
    pairs = list(zip(modules, state.get("modules", [])))
    return pairs + [(networks[name], names) for name, names in state.get("networks", {}).items()
                    if name in networks]
