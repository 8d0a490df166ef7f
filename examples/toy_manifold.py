"""Toy latent manifold: how loose are ELBO and IWAE_K when the exact evidence is known?

Trains :class:`ppl_models.ToyManifoldVAE` with SVI on 4x4 images drawn from
:class:`ppl_models.ToyManifold` (one latent number per image), then evaluates on held-out
images the exact log evidence of the learned model (quadrature over its 1-D latent), the
ELBO, and IWAE_K for K up to 5000.

Expected (defaults, seed 0: 30 s on 2 idle CPU cores, under a minute on a busy machine): the
bounds come out ordered ELBO = IWAE_1 < IWAE_10 < ... < IWAE_5000 < exact, with the ELBO
about one nat below the exact evidence (10.26 against 11.34) and IWAE_5000 about half a nat
below it (10.84); docs/estimators.md shows the whole table.

    python examples/toy_manifold.py --out-dir runs/toy_manifold    # or: make toy
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402

from inference import bound_sweep, elbo, exact_log_evidence, fit  # noqa: E402
from scaffold.flags import (  # noqa: E402
    check_evaluation_memory,
    data_flags,
    evaluation_ks,
    evidence_flags,
    numbers,
    objective_flags,
    positive_float,
    refused_as_usage,
    script_parser,
    training_flags,
)
from scaffold.plots import bounds_against_k, save_figure  # noqa: E402
from scaffold.runs import finish_run, run_script, start_run  # noqa: E402
from ppl_models import ToyManifold, ToyManifoldVAE, manifold_mean  # noqa: E402

SIDE = 4
# Above it the data hide the manifold, and the learned model's posteriors ran off the
# quadrature grid of its exact evidence (noise 10 and 30 did, after the training; 3 did not).
MAX_NOISE_SCALE = 1.0


def plot_images(images: torch.Tensor, path: Path, title: str, columns: int = 8) -> None:
    """Save a grid of 4x4 images, ``images: [n, 16]``."""
    n = images.shape[0]
    rows = math.ceil(n / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 0.9, rows * 0.9))
    for ax in axes.flat:
        ax.axis("off")
    for ax, image in zip(axes.flat, images.detach().cpu().numpy()):  # arrays for matplotlib
        ax.imshow(image.reshape(SIDE, SIDE), cmap="gray", vmin=0, vmax=1)
    fig.suptitle(title)
    save_figure(fig, path)


def plot_manifold(vae: ToyManifoldVAE, path: Path) -> None:
    """Decoded means along z next to the true manifold."""
    z = torch.linspace(-2.5, 2.5, 11)
    with torch.no_grad():
        device = next(vae.parameters()).device
        learned = vae.decode(z[:, None].to(device)).cpu()
    true = manifold_mean(z).numpy()
    learned = learned.numpy()
    fig, axes = plt.subplots(2, len(z), figsize=(len(z) * 0.9, 2.2))
    for row, images, label in ((0, true, "truth"), (1, learned, "learned")):
        for ax, image, value in zip(axes[row], images, z):
            ax.imshow(image.reshape(SIDE, SIDE), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 1:
                ax.set_xlabel(f"{value:.1f}", fontsize=7)
        axes[row, 0].set_ylabel(label, fontsize=8)
    fig.suptitle("image along the latent z (learned z may be reparameterized)")
    save_figure(fig, path)


def plot_posterior(vae: ToyManifoldVAE, x: torch.Tensor, path: Path) -> None:
    """Prior, joint and posterior of one datapoint ``x: [1, 16]`` against the guide."""
    exact = exact_log_evidence(vae.model, x)
    z = exact.grid[:, 0].cpu()
    log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(z)
    log_posterior = exact.log_posterior[:, 0].cpu()
    log_joint = log_posterior + exact.log_evidence.cpu()
    with torch.no_grad():
        loc, scale = vae.encode(x)
    guide = torch.distributions.Normal(loc.item(), scale.item()).log_prob(z).exp()
    keep = (log_posterior > log_posterior.max() - 12) | (guide > guide.max() * 1e-5)
    window = float(z[keep].min()) - 0.5, float(z[keep].max()) + 0.5
    z, prior, joint, posterior, guide = (  # arrays for matplotlib
        t.numpy() for t in (z, log_prior.exp(), log_joint.exp(), log_posterior.exp(), guide))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    axes[0].plot(z, prior)
    axes[0].set_title("prior p(z)")
    axes[1].plot(z, joint)
    axes[1].set_title(f"joint p(x, z); area = p(x) = e^{exact.log_evidence.item():.2f}")
    axes[2].plot(z, posterior, label="posterior p(z | x)")
    axes[2].plot(z, guide, "--", label="guide q(z | x)")
    axes[2].legend(fontsize=8)
    axes[2].set_title("posterior against guide")
    for ax in axes[1:]:
        ax.set_xlim(*window)
    for ax in axes:
        ax.set_xlabel("z")
    save_figure(fig, path)


def main(args: argparse.Namespace) -> dict:
    out, device, start = start_run(args)
    pyro.clear_param_store()

    truth = ToyManifold(noise_scale=args.noise_scale)
    train, _ = truth.sample(args.num_train, seed=args.seed)
    test, _ = truth.sample(args.num_test, seed=args.seed + 1)
    # the true model's evidence needs no training: computed first, a noise scale too small
    # for the quadrature grid (posteriors narrower than its nodes) is named before the
    # training rather than after it
    try:
        true_evidence = exact_log_evidence(truth.model, test).log_evidence
    except ValueError as error:
        raise SystemExit(f"toy_manifold: cannot compute the exact evidence of the data-"
                         f"generating model for --noise-scale {args.noise_scale:g} and "
                         f"--num-test {args.num_test} ({error})") from None
    check_evaluation_memory("toy_manifold", "--max-k", args.max_k, test)
    with refused_as_usage("toy_manifold", "--hidden"):  # a network too large for memory
        vae = ToyManifoldVAE(hidden=args.hidden)
    with refused_as_usage("toy_manifold"):  # fit's refusals come before its first step
        history = fit(vae.model, vae.guide, train, loss=args.objective,
                      num_particles=args.num_particles, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=device)
    vae.eval()
    test = test.to(device)

    exact = exact_log_evidence(vae.model, test).log_evidence
    ks = evaluation_ks(args.max_k, ladder=(1, 5, 10, 50, 100, 500, 1000, 5000, 10000))
    table = bound_sweep(vae.model, vae.guide, test, num_samples=ks, repeats=args.repeats,
                        chunk_size=args.chunk_size)

    metrics = {
        "exact_log_evidence": float(exact.mean()),
        "true_model_log_evidence": float(true_evidence.mean()),
        "elbo": table.elbo(),
        "iwae": table.iwae(),
        "bounds": table.rows,
        "units": "nats per image, mean over test images",
        "num_test": args.num_test,
        "history": history,
        "config": vars(args),
        "device": str(device),
    }
    plot_images(test[:32], out / "data.png", "test images (4x4)")
    plot_manifold(vae, out / "manifold.png")
    # A datapoint at the 90th percentile of the ELBO gap shows a typical guide mismatch
    # (the very worst are outliers whose posterior lies far in the prior's tail).
    gaps = exact - elbo(vae.model, vae.guide, test, num_samples=100)
    shown = int(gaps.argsort()[int(0.9 * (len(gaps) - 1))])
    plot_posterior(vae, test[shown:shown + 1], out / "posterior.png")
    bounds_against_k(table, out / "bounds_vs_k.png", reference=metrics["exact_log_evidence"])
    print(table)
    print(f"{'exact':<12}{metrics['exact_log_evidence']:>14.4f}   (quadrature, learned model)")
    print(f"{'true model':<12}{metrics['true_model_log_evidence']:>14.4f}"
          "   (data-generating process)")
    return finish_run(out, metrics, start,
                      "metrics.json, data.png, manifold.png, posterior.png, bounds_vs_k.png")


def parse_args(argv=None) -> argparse.Namespace:
    parser = script_parser(__doc__, "runs/toy_manifold")
    data_flags(parser, num_train=2000, num_test=200, simulated=True)
    parser.add_argument("--noise-scale", type=positive_float, default=0.1,
                        help=f"standard deviation of the pixels' noise in the data, in "
                             f"(0, {MAX_NOISE_SCALE:g}]")
    numbers(parser, hidden=64)
    objective_flags(parser, objective="elbo", num_particles=1)
    training_flags(parser, epochs=150, batch_size=100, lr=3e-3)
    evidence_flags(parser, max_k=5000, repeats=3, chunk_size=1000)
    args = parser.parse_args(argv)
    try:  # a variance beyond float32 (a traceback from ToyManifold's constructor)
        ToyManifold(noise_scale=args.noise_scale)
    except ValueError as error:
        parser.error(f"argument --noise-scale: {error}")
    if args.noise_scale > MAX_NOISE_SCALE:
        parser.error(f"argument --noise-scale: must be at most {MAX_NOISE_SCALE:g}, got "
                     f"{args.noise_scale:g}: the manifold's pixel means span 0.1..0.9, and "
                     f"under a larger noise the learned model's posteriors can leave the "
                     f"exact evidence's quadrature grid, failing after the training")
    return args


if __name__ == "__main__":
    run_script("toy_manifold", main, parse_args())
