"""Figures shared by the examples (matplotlib, Agg backend, saved to files; never shown)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .runs import replaced_atomically  # noqa: E402


def save_figure(fig, path: str | Path) -> None:
    """Write a matplotlib figure at 120 dpi, trimmed, atomically, and close it. A figure that
    cannot be written (a full disk) is a warning, not an error: the run goes on to write its
    metrics.json, which a failed figure used to cost after all the work."""
    path = Path(path)
    try:
        with replaced_atomically(path) as temporary:
            fig.savefig(temporary, dpi=120, bbox_inches="tight",
                        format=path.suffix.lstrip(".") or "png")
    except OSError as error:
        warnings.warn(f"could not write the figure {path} ({error}); the run goes on",
                      stacklevel=2)
    finally:
        plt.close(fig)


def image_grid(images: torch.Tensor | Sequence[torch.Tensor], path: str | Path,
               title: str = "", columns: int = 10, row_labels: list[str] | None = None) -> None:
    """Save images (values in [0, 1]) as a grid.

    ``images`` is either one tensor ``[n, C, H, W]``, laid out ``columns`` per row (the last
    row partial when ``columns`` does not divide ``n``), or a sequence of such tensors, one
    row each, of any lengths (the grid is as wide as the longest row; ``columns`` is then
    unused): pass rows as a sequence when ``row_labels`` name them, so that each label stays
    beside its row whatever the rows' lengths. ``row_labels`` label the rows from the top;
    labels beyond the last row are left out, and any number of images (none included) makes
    a figure.
    """
    if torch.is_tensor(images):
        flat = images.detach().float().cpu().clamp(0, 1)
        columns = max(1, min(columns, len(flat)))
        rows = list(flat.split(columns)) if len(flat) else []
    else:
        rows = [row.detach().float().cpu().clamp(0, 1) for row in images]
        columns = max([1, *(len(row) for row in rows)])
    labels = list(row_labels or [])
    num_rows = max(1, len(rows))
    fig, axes = plt.subplots(num_rows, columns, figsize=(columns * 0.8, num_rows * 0.8),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    for axes_row, row in zip(axes, rows):
        for ax, image in zip(axes_row, row):
            shown = image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)
            # as an array: matplotlib's conversion of a tensor warns under NumPy 2
            ax.imshow(shown.detach().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
    for axes_row, label in zip(axes, labels):
        axes_row[0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
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
