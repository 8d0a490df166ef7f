"""Figures shared by the examples (matplotlib, Agg backend, saved to files; never shown)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def save_figure(fig, path: str | Path) -> None:
    """Write a matplotlib figure at 120 dpi, trimmed, and close it."""
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def image_grid(images: torch.Tensor, path: str | Path, title: str = "", columns: int = 10,
               row_labels: list[str] | None = None) -> None:
    """Save ``images: [n, C, H, W]`` (values in [0, 1]) as a grid, ``columns`` per row."""
    images = images.detach().float().cpu().clamp(0, 1)
    n = images.shape[0]
    rows = math.ceil(n / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 0.8, rows * 0.8), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    for ax, image in zip(axes.flat, images):
        shown = image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)
        ax.imshow(shown, cmap="gray", vmin=0, vmax=1)
    for row, label in enumerate(row_labels or []):
        axes[row, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title)
    save_figure(fig, path)


def training_curves(histories: dict[str, list[dict]], path: str | Path,
                    key: str = "train_loss", ylabel: str = "objective (nats per image)") -> None:
    """Plot ``key`` against epoch for several fit histories, one line each."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, history in histories.items():
        if history:
            ax.plot([r["epoch"] for r in history], [r[key] for r in history], label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def bounds_against_k(table, path: str | Path, reference: float | None = None,
                     reference_label: str = "exact log p(x)") -> None:
    """IWAE_K (±2 standard errors) against K, with the ELBO and an optional reference line."""
    rows = [r for r in table.rows if r["bound"] == "iwae"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar([r["num_samples"] for r in rows], [r["mean"] for r in rows],
                yerr=[2 * r["stderr"] for r in rows], marker="o", capsize=3,
                label="IWAE_K (±2 s.e.)")
    if reference is not None:
        ax.axhline(reference, color="k", linestyle="--", label=reference_label)
    ax.axhline(table.elbo(), color="C3", linestyle=":", label="ELBO")
    ax.set_xscale("log")
    ax.set_xlabel("K")
    ax.set_ylabel("nats per datapoint (mean)")
    ax.legend(fontsize=8)
    save_figure(fig, path)
