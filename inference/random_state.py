"""Draws that leave no trace: the checks and probes run a pair without moving its random
streams, so that training and estimation draw as they would without them."""

from __future__ import annotations

import contextlib
import random

import numpy
import torch


def forked_torch_rng() -> contextlib.AbstractContextManager:
    """``torch.random.fork_rng`` over the CPU generator and every CUDA device in use: torch's
    generators put back when the block ends, numpy's and Python's left where the block's
    draws moved them (a check that two runs draw alike from torch and may differ through
    the others)."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    return torch.random.fork_rng(devices=devices)


@contextlib.contextmanager
def forked_rng():
    """Every global random generator put back as it was when the block ends: torch's CPU
    generator and every CUDA device in use (``torch.random.fork_rng``), numpy's and
    Python's ``random`` (a check that seeds them all with ``pyro.set_rng_seed`` must not
    reset a user's numpy bootstrap around the call). CUDA stays uninitialized when nothing
    has used it (a CPU-only run on a GPU machine)."""
    numpy_state, python_state = numpy.random.get_state(), random.getstate()
    try:
        with forked_torch_rng():
            yield
    finally:
        numpy.random.set_state(numpy_state)
        random.setstate(python_state)


def generator_states() -> dict:
    """The global random generators a program can draw from, by name: torch's CPU generator
    (and CUDA's when initialized), numpy's and Python's ``random``; compare two with
    :func:`moved_generators`."""
    states = {"torch": torch.get_rng_state(), "numpy": numpy.random.get_state(),
              "random": random.getstate()}
    if torch.cuda.is_initialized():
        states["torch.cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_generators(states: dict) -> None:
    """Put the generators of :func:`generator_states` back into ``states``."""
    torch.set_rng_state(states["torch"])
    numpy.random.set_state(states["numpy"])
    random.setstate(states["random"])
    if "torch.cuda" in states:
        torch.cuda.set_rng_state_all(states["torch.cuda"])


def seed_generators(seed: int) -> None:
    """Seed every generator of :func:`generator_states` with ``seed``."""
    torch.manual_seed(seed)
    numpy.random.seed(seed)
    random.seed(seed)


def equal_generators(first: dict, second: dict) -> list[str]:
    """The names of the generators in the same state in two :func:`generator_states`."""
    return [name for name, state in first.items() if name in second
            and _same(state, second[name])]


def _same(a, b) -> bool:
    """Equal generator states: tensors and arrays compared whole, tuples (numpy's state holds
    an array) item by item, anything else (Python's tuple of ints) with ``==``."""
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, numpy.ndarray):
        return isinstance(b, numpy.ndarray) and numpy.array_equal(a, b)
    if isinstance(a, (tuple, list)) and any(torch.is_tensor(v) or isinstance(v, numpy.ndarray)
                                            for v in a):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(map(_same, a, b))
    return a == b


def moved_generators(before: dict, after: dict) -> list[str]:
    """The names of the generators whose state differs between two :func:`generator_states`."""
    return [name for name, state in after.items()
            if name not in before or not _same(before[name], state)]
