"""Shared fixtures: a fresh Pyro parameter store and fixed seeds for every test."""

import sys
from pathlib import Path

import pyro
import pytest
import torch

# Example scripts import their shared scaffolding as `scaffold` from the examples folder,
# which Python puts on sys.path when a script runs; runpy.run_path in the tests does not.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))


@pytest.fixture(autouse=True)
def fresh_pyro_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    yield
    pyro.clear_param_store()


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)
