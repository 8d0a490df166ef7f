"""Shared pieces of the reliability suite: a tiny pair and small tmpfs mounts (root only)."""

import subprocess
from pathlib import Path

import pytest
import torch

from ppl_models import LinearGaussian

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pair():
    """A 3-d linear-Gaussian model with a 1-d latent, and 64 datapoints of it."""
    model = LinearGaussian(data_dim=3, latent_dim=1, seed=0)
    x = LinearGaussian(data_dim=3, latent_dim=1, seed=9).simulate(64, seed=1).detach()
    return model, x


def small_tmpfs(folder: Path, size: str, read_only: bool = False) -> bool:
    """Mount a tmpfs of ``size`` on ``folder`` (root only); False when that is not possible."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                              capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def unmount(folder: Path) -> None:
    """Unmount ``folder`` (lazily when something still holds it)."""
    done = subprocess.run(["umount", str(folder)], capture_output=True, timeout=20)
    if done.returncode != 0:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=20)


def finite_state(module: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in module.state_dict().values())
