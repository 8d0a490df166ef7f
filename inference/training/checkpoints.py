"""Checkpoints of a training run: atomic writes, random-number states, the param store."""

from __future__ import annotations

import os
from pathlib import Path

import pyro
import pyro.util
import torch


def rng_state() -> dict:
    """Pyro's (Python, NumPy, torch) and, when present, CUDA random states."""
    state = {"pyro": pyro.util.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    pyro.util.set_rng_state(state["pyro"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def foreign_param_store_state(modules) -> dict:
    """Param-store state without the parameters that ``modules`` own.

    Module parameters travel in their ``state_dict``; restoring them through the store too
    would leave the store and the module holding different tensors, and the optimizer
    state (keyed by store name) attached to the wrong one.
    """
    owned = {id(p) for m in modules for p in m.parameters()}
    store = pyro.get_param_store()
    keep = {name for name, p in store.named_parameters() if id(p) not in owned}
    state = store.get_state()
    return {key: {n: v for n, v in table.items() if n in keep} for key, table in state.items()}


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` with ``torch.save`` atomically: a crash leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)
