"""The networks a plain-function pair registers with ``pyro.module``.

A pair written as methods of an ``nn.Module`` hands :func:`inference.fit` its networks; a pair
of plain functions (``pyro.module("encoder", encoder)`` on a network held in a global or a
closure) does not, and Pyro's param store holds only their parameters. Their buffers (batch
norm's running statistics) would then be neither put in evaluation mode for validation nor
saved with a checkpoint. :func:`inference.reachable.reachable_modules` finds the candidates in
what the functions reference; :func:`registered_prefix` tells which of them a param site
registers.
"""

from __future__ import annotations

import torch


def registered_prefix(site_name: str, site_args: tuple, network: torch.nn.Module) -> str | None:
    """The name under which ``pyro.module`` registered ``network`` when it made the param
    site ``site_name`` (``"encoder$$$0.weight"`` -> ``"encoder"``), judged by the initial
    value it passed being that network's parameter of that name; None otherwise."""
    prefix, divider, parameter_name = site_name.rpartition("$$$")
    if not divider or len(site_args) < 2:
        return None
    parameter = dict(network.named_parameters()).get(parameter_name)
    return prefix if parameter is not None and parameter is site_args[1] else None


def buffers_state(networks: dict) -> dict:
    """``{name: {buffer: tensor}}`` of ``networks`` (name -> module), copies; networks
    without buffers are left out."""
    return {name: {key: value.detach().clone() for key, value in network.named_buffers()}
            for name, network in networks.items() if any(True for _ in network.buffers())}


def restore_buffers(networks: dict, state: dict) -> list[str]:
    """Copy the buffers of ``state`` (from :func:`buffers_state`) into ``networks`` in place;
    returns descriptions of what does not fit (a missing network or buffer, another shape)."""
    problems = []
    for name, buffers in state.items():
        network = networks.get(name)
        if network is None:
            problems.append(f"network {name!r}: in the checkpoint, not registered now")
            continue
        live = dict(network.named_buffers())
        for key, value in buffers.items():
            if key not in live or live[key].shape != value.shape:
                problems.append(f"{name}.{key}: {list(value.shape)} in the checkpoint, "
                                f"{list(live[key].shape) if key in live else 'absent'} now")
    if not problems:
        with torch.no_grad():
            for name, buffers in state.items():
                live = dict(networks[name].named_buffers())
                for key, value in buffers.items():
                    live[key].copy_(value)
    return problems
