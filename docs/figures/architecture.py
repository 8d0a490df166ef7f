"""Draw docs/figures/architecture.svg, the package picture of docs/architecture.md.

    python docs/figures/architecture.py [--out FILE]
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().with_suffix(".svg")


def box(ax, x, y, w, h, title, body="", color="#dfe9f5", size=9):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                facecolor=color, edgecolor="#44546a", linewidth=1))
    ax.text(x + w / 2, y + h - 0.22, title, ha="center", va="top", fontsize=size,
            fontweight="bold", family="monospace")
    if body:
        ax.text(x + w / 2, y + h - 0.6, body, ha="center", va="top", fontsize=7.5,
                linespacing=1.4)


def arrow(ax, start, end, label="", color="#44546a"):
    ax.annotate("", xy=end, xytext=start,
                arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1.2,
                            "shrinkA": 0, "shrinkB": 0})
    if label:
        ax.text((start[0] + end[0]) / 2 + 0.08, (start[1] + end[1]) / 2, label, fontsize=7,
                color=color, va="center")


def main(out: Path) -> None:
    """Draw the picture and save it as ``out`` (SVG, reproducible: no date, fixed ids)."""
    plt.rcParams["svg.fonttype"] = "none"
    plt.rcParams["svg.hashsalt"] = "architecture"
    fig, ax = plt.subplots(figsize=(10, 6.4))
    ax.set_xlim(0, 12.2)
    ax.set_ylim(0.3, 8.3)
    ax.axis("off")

    box(ax, 0.2, 6.9, 3.6, 1.2, "examples/", "one story per script", "#fbe5d6")
    box(ax, 4.3, 6.9, 3.4, 1.2, "benchmarks/", "quality and speed, JSON", "#fbe5d6")
    box(ax, 8.3, 6.9, 3.7, 1.2, "tests/", "mirror the packages", "#fbe5d6")
    box(ax, 0.2, 5.45, 2.6, 1.05, "examples/scaffold/", "flags, runs, plots", "#fff2cc")
    arrow(ax, (1.5, 6.9), (1.5, 6.5))
    arrow(ax, (4.6, 6.9), (2.8, 6.1))

    # inference: wings over the shared root
    box(ax, 0.2, 0.5, 7.5, 4.6, "inference/", "", "#eef3fa", size=10)
    wings = [("evidence/", "ELBO, IWAE, AIS,\nexact, diagnostics,\ngaps"),
             ("training/", "fit, objectives,\nSVI steps,\ncheckpoints,\ndata-parallel"),
             ("uses/", "completion,\nsuper-resolution,\noutliers,\nrepresentations,\nMAP search"),
             ("coding/", "range coding,\nbits-back")]
    for k, (name, body) in enumerate(wings):
        box(ax, 0.4 + 1.82 * k, 2.75, 1.7, 1.8, name, body)
    roots = [("pair_check", "one survey\nof a pair"),
             ("weights", "importance\nweights,\ncompiling"),
             ("supports", "supports\nthrough\ntransforms"),
             ("units", "nats, bits,\nbits/dim"), ("checks", "argument\nchecks"),
             ("protocols", "what a use\nneeds of\na model")]
    for k, (name, body) in enumerate(roots):
        box(ax, 0.4 + 1.21 * k, 0.7, 1.13, 1.4, name, body, "#d9ead3", size=7.5)
    ax.text(3.9, 2.43, "wings import the root, never the reverse; no cycles\n"
            "(one wing uses another: training imports evidence)", ha="center", va="center",
            fontsize=7.5, style="italic")

    box(ax, 8.3, 0.5, 3.7, 4.6, "ppl_models/", "", "#eef3fa", size=10)
    box(ax, 8.5, 2.75, 3.3, 1.8, "model/guide pairs",
        "vae, pixelcnn, pixel_vae,\nwavenet, ngram, neural_lm,\n"
        "flow_guide, hierarchical_vae,\ntoy_manifold, linear_gaussian")
    box(ax, 8.5, 1.45, 3.3, 1.1, "building blocks", "layers, networks,\nlikelihoods, checks")
    box(ax, 8.5, 0.7, 3.3, 0.6, "data, text, audio", "", "#d9ead3", size=8)

    ax.plot([8.0, 8.0], [0.5, 5.1], color="#c00000", linestyle="--", linewidth=1.5)
    ax.text(7.88, 2.8, "no imports either way", color="#c00000", ha="center", va="center",
            fontsize=8, rotation=90)

    # only scripts and tests put the two packages together
    for x0 in (3.3, 6.6, 10.1):
        arrow(ax, (x0, 6.9), (4.6 + (x0 - 6.6) * 0.15, 5.1), color="#8497b0")
        arrow(ax, (x0, 6.9), (10.15 + (x0 - 6.6) * 0.1, 5.1), color="#8497b0")
    fig.savefig(out, bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    print(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT,
                        help=f"the SVG file to write (default: {OUT.name} beside this script)")
    main(parser.parse_args().out)
