"""Bookkeeping shared by the example scripts: setting up a run from their common flags."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pyro
import torch

from inference import resolve_device


def start_run(args: argparse.Namespace) -> tuple[Path, torch.device, float]:
    """Set up a run from the examples' common flags.

    Sets torch's CPU threads (``args.threads``, when given and non-zero), seeds Pyro and torch
    with ``args.seed``, creates ``args.out_dir`` and resolves ``args.device``.

    Returns:
        ``(out_dir, device, start)`` with ``start`` from :func:`time.perf_counter`.
    """
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    pyro.set_rng_seed(args.seed)
    return out, device, start
