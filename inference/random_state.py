"""Draws that leave no trace: the checks and probes run a pair without moving its random
streams, so that training and estimation draw as they would without them."""

from __future__ import annotations

import contextlib

import torch


def forked_rng() -> contextlib.AbstractContextManager:
    """``torch.random.fork_rng`` over the CPU generator and every CUDA device in use: the
    generators are put back as they were when the block ends. CUDA stays uninitialized when
    nothing has used it (a CPU-only run on a GPU machine)."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    return torch.random.fork_rng(devices=devices)
