"""Outlier detection with density models: log p(x), likelihood ratios and typicality, by AUROC.

Trains on the digit classes ``--inlier-classes`` (binarized images) a VAE and a PixelCNN,
and for each a *background* model for the likelihood-ratio test: the same VAE trained on
inputs with a fraction ``--flip-rate`` of pixels flipped (Ren et al. 2019), and a *local*
PixelCNN that sees only the pixels adjacent above and to the left (its 3x3 mask-A kernel, no
residual blocks). Test inputs are scored by

- ``nll``: ``-log p(x)``, the IWAE_K bound for the VAE, exact for the PixelCNN;
- ``ratio``: ``-(log p(x) - log p_background(x))``;
- ``typicality``: ``| -log p(x) - H |``, ``H`` the mean ``-log p`` of the validation inliers
  (Nalisnick et al. 2019b, one input at a time);

and each score's AUROC (outliers positive) is reported against the held-out inlier test
images for these outlier sets: test images of the other classes; inlier test images corrupted
by Gaussian noise before binarization, by flipping 10% of the pixels, by inversion; and
simple images: blank, a single horizontal or vertical bar, and coin-flip noise. With
``--dataset fashion-mnist`` (28x28; Fashion-MNIST from ``make data``) the simple images also
include the scikit-learn digits upsampled to 28x28, an MNIST-like set.

Expected with the defaults (digits 0-4 against 5-9; about four minutes on 2 idle CPU cores):
``nll`` flags corruptions (AUROC 0.95-1.0) and held-out classes (0.77 VAE, 0.72 PixelCNN);
on 8x8 digits blank and bar images are still *less* likely than real digits (AUROC 0.86-1.0).
The failure of Nalisnick et al. (2019) shows with ``--dataset fashion-mnist``: blank images
and MNIST-like digits are *more* likely than Fashion-MNIST test images (nll AUROC 0.00 and
0.2-0.3), the ratio to the local PixelCNN mends both (0.93 and 0.97) but loses the noise
images, and typicality mends blank images only. Numbers in docs/outliers.md.

    python examples/outliers.py --out-dir runs/outliers
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from inference import fit
from scaffold.plots import image_grid, save_figure
from scaffold.flags import (
    check_count,
    check_distinct,
    check_evaluation_memory,
    check_network_sizes,
    data_flags,
    numbers,
    pixelcnn_flags,
    positive_int,
    probability,
    refused_as_usage,
    script_parser,
    step_count,
    training_flags,
)
from scaffold.runs import finish_run, run_script, start_run
from inference import (
    auroc,
    likelihood_ratio_scores,
    log_evidence,
    nll_scores,
    typicality_scores,
)
from ppl_models.data import binarize_static, load_images
from ppl_models.pixelcnn import PixelCNN
from ppl_models.vae import VAE

LOG_EVIDENCE_BATCH = 256  # images scored at a time by log_evidence (its default)


def flip(x: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Flip each 0/1 pixel of ``x: [n, C, H, W]`` with probability ``rate``."""
    return (x + (torch.rand(x.shape, generator=generator) < rate).to(x.dtype)) % 2


def simple_images(n: int, shape: tuple[int, int, int], generator: torch.Generator
                  ) -> dict[str, torch.Tensor]:
    """Images far simpler (or noisier) than the data, each ``[n, C, H, W]`` 0/1."""
    height = shape[1]
    bars = torch.zeros(n, *shape)
    thickness = max(1, height // 8)
    for k in range(n):
        pos = int(torch.randint(height - thickness + 1, (1,), generator=generator))
        if k % 2:
            bars[k, :, pos:pos + thickness, :] = 1
        else:
            bars[k, :, :, pos:pos + thickness] = 1
    return {"blank": torch.zeros(n, *shape), "bar": bars,
            "coin flips": (torch.rand(n, *shape, generator=generator) < 0.5).float()}


def outlier_sets(data, inliers_test: torch.Tensor, test_gray: torch.Tensor,
                 outlier_test: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """The named outlier sets, each ``[m, C, H, W]`` binary (see the module docstring)."""
    generator = torch.Generator().manual_seed(seed + 1)
    n, shape = len(inliers_test), tuple(inliers_test.shape[1:])
    noisy = (test_gray + 0.3 * torch.randn(test_gray.shape, generator=generator)).clamp(0, 1)
    sets = {
        "held-out classes": outlier_test,
        "gaussian noise": binarize_static(noisy, seed + 2),
        "10% flips": flip(inliers_test, 0.1, generator),
        "inversion": 1 - inliers_test,
        **simple_images(n, shape, generator),
    }
    if data.name == "fashion-mnist":
        sets["mnist-like digits"] = upsampled_digits(shape, n, seed)
    return sets


def upsampled_digits(shape: tuple[int, int, int], n: int, seed: int) -> torch.Tensor:
    """scikit-learn's 8x8 digits bilinearly upsampled (20x20 in a 28x28 frame, as MNIST
    centers its digits), binarized: ``[n, 1, 28, 28]``."""
    digits = load_images("digits").test.images[:n]
    big = F.interpolate(digits, size=(20, 20), mode="bilinear", align_corners=False)
    frame = F.pad(big, (4, 4, 4, 4)).clamp(0, 1)
    return binarize_static(frame[:, :, :shape[1], :shape[2]], seed + 3)


def train(model, x: torch.Tensor, args, epochs: int, device, batch_transform=None) -> list:
    """``fit`` ``model``'s pair on ``x: [n, C, H, W]`` with the flags' budget; the history."""
    pyro.clear_param_store()
    history = fit(model.model, model.guide, x, epochs=epochs, batch_size=args.batch_size,
                  lr=args.lr, seed=args.seed, device=device, batch_transform=batch_transform)
    model.eval()
    return history


def build_models(args, shape, train_x: torch.Tensor, device) -> dict:
    """Pairs of (model, background model) trained on ``train_x: [n, *shape]``, with the
    number of IWAE samples to score them."""
    pairs = {}
    sizes = []  # every network, checked before the first is trained
    if "vae" in args.models:
        sizes.append(lambda: VAE(shape, args.latent_dim, hidden=(args.hidden,)))
    if "pixelcnn" in args.models:
        sizes += [lambda blocks=blocks, kernel=kernel: PixelCNN(
            shape, "bernoulli", channels=args.channels, num_blocks=blocks,
            first_kernel_size=kernel) for blocks, kernel in ((args.blocks, 5), (0, 3))]
    check_network_sizes("outliers", *sizes)
    if "vae" in args.models:
        vae = VAE(shape, args.latent_dim, hidden=(args.hidden,))
        train(vae, train_x, args, args.vae_epochs, device)
        background = VAE(shape, args.latent_dim, hidden=(args.hidden,))
        generator = torch.Generator().manual_seed(args.seed)
        perturbed = flip(train_x, args.flip_rate, generator)
        train(background, perturbed, args, args.vae_epochs, device)
        pairs["vae"] = (vae, background, args.num_samples)
    if "pixelcnn" in args.models:
        pixelcnn = PixelCNN(shape, "bernoulli", channels=args.channels, num_blocks=args.blocks,
                            first_kernel_size=5)
        train(pixelcnn, train_x, args, args.pixelcnn_epochs, device)
        local = PixelCNN(shape, "bernoulli", channels=args.channels, num_blocks=0,
                         first_kernel_size=3)
        train(local, train_x, args, args.pixelcnn_epochs, device)
        pairs["pixelcnn"] = (pixelcnn, local, 1)
    return pairs


def scored_log_p(model, x: torch.Tensor, k: int, device) -> torch.Tensor:
    """``log p(x)`` per image of ``x: [n, C, H, W]`` (IWAE_k for a VAE), ``[n]`` on the CPU.
    A model and its background share parameter names: each is scored from a param store of
    its own tensors, not one the other's shadow."""
    pyro.clear_param_store()
    return log_evidence(model.model, model.guide, x.to(device), num_samples=k,
                        batch_size=LOG_EVIDENCE_BATCH).cpu()


def score_all(pairs: dict, sets: dict[str, torch.Tensor], valid: torch.Tensor,
              device) -> tuple[dict, dict]:
    """AUROC of every score for every outlier set (each ``[n, C, H, W]``, against the inliers
    ``valid: [m, C, H, W]``), and the mean ``log p`` per set."""
    aurocs, mean_log_p = {}, {}
    for name, (model, background, k) in tqdm(pairs.items(), desc="scoring"):
        def evidence(m, x, k=k):
            return scored_log_p(m, x, k, device)

        reference = evidence(model, valid)
        scored = {s: (evidence(model, x), evidence(background, x)) for s, x in sets.items()}
        inlier, inlier_bg = scored["inliers"]
        scores_in = {"nll": nll_scores(inlier),
                     "ratio": likelihood_ratio_scores(inlier, inlier_bg),
                     "typicality": typicality_scores(inlier, reference)}
        aurocs[name], mean_log_p[name] = {}, {}
        for set_name, (log_p, log_p_bg) in scored.items():
            mean_log_p[name][set_name] = {"model": float(log_p.mean()),
                                          "background": float(log_p_bg.mean())}
            if set_name == "inliers":
                continue
            scores_out = {"nll": nll_scores(log_p),
                          "ratio": likelihood_ratio_scores(log_p, log_p_bg),
                          "typicality": typicality_scores(log_p, reference)}
            aurocs[name][set_name] = {s: auroc(scores_in[s], scores_out[s]) for s in scores_in}
    return aurocs, mean_log_p


def plot_histograms(pairs: dict, sets: dict, device, path: Path) -> None:
    """Histograms of ``log p(x)`` per set, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs), 3.6), squeeze=False)
    for ax, (name, (model, _, k)) in zip(axes[0], pairs.items()):
        for set_name, x in sets.items():
            log_p = scored_log_p(model, x, k, device)
            ax.hist(log_p.clamp(min=-400).numpy(), bins=30, alpha=0.5, label=set_name,
                    density=True)
        ax.set_title(f"{name}: log p(x), nats")
        ax.set_xlabel("log p(x) (clamped at -400)")
    axes[0, -1].legend(fontsize=7)
    save_figure(fig, path)


def main(args: argparse.Namespace) -> dict:
    out, device, start = start_run(args)

    with refused_as_usage("outliers", "--data-root"):  # a missing or corrupt data file
        data = load_images(args.dataset, root=args.data_root)
    binary = data.binarized(args.seed)
    inlier = torch.tensor(args.inlier_classes)

    def pick(split, gray_split, inside: bool, limit: int):
        keep = torch.isin(split.labels, inlier) == inside
        return split.images[keep][:limit], gray_split.images[keep][:limit]

    for flag, count, split, word in (("--num-train", args.num_train, data.train, "training"),
                                     ("--num-test", args.num_test, data.valid, "validation"),
                                     ("--num-test", args.num_test, data.test, "test")):
        check_count("outliers", flag, count, int(torch.isin(split.labels, inlier).sum()),
                    f"the inlier part (classes {args.inlier_classes}) of the {data.name} "
                    f"{word} split")
    train_x, _ = pick(binary.train, data.train, True, args.num_train)
    valid_x, _ = pick(binary.valid, data.valid, True, args.num_test)
    test_x, test_gray = pick(binary.test, data.test, True, args.num_test)
    outlier_x, _ = pick(binary.test, data.test, False, args.num_test)
    shape = data.image_shape
    sets = {"inliers": test_x, **outlier_sets(data, test_x, test_gray, outlier_x, args.seed)}
    check_evaluation_memory("outliers", "--num-samples", args.num_samples,
                            max((valid_x, *sets.values()), key=len), LOG_EVIDENCE_BATCH)

    pairs = build_models(args, shape, train_x, device)
    aurocs, mean_log_p = score_all(pairs, sets, valid_x, device)

    image_grid([x[:8] for x in sets.values()], out / "outlier_sets.png",
               "rows: " + ", ".join(sets))
    plot_histograms(pairs, sets, device, out / "log_p_histograms.png")
    metrics = {
        "dataset": args.dataset, "inlier_classes": args.inlier_classes,
        "num_train": len(train_x), "set_sizes": {k: len(v) for k, v in sets.items()},
        "units": "AUROC with outliers as positives (1 perfect, 0.5 chance, < 0.5 inverted); "
                 "log p in nats per image",
        "auroc": aurocs, "mean_log_p": mean_log_p,
        "config": vars(args), "device": str(device),
    }
    for name, table in aurocs.items():
        print(f"{name}: AUROC against {len(test_x)} inlier test images "
              f"(mean log p of inliers {mean_log_p[name]['inliers']['model']:.1f} nats)")
        print(f"  {'outliers':<20}{'mean log p':>11}{'nll':>8}{'ratio':>8}{'typicality':>12}")
        for set_name, row in table.items():
            print(f"  {set_name:<20}{mean_log_p[name][set_name]['model']:>11.1f}"
                  f"{row['nll']:>8.3f}{row['ratio']:>8.3f}{row['typicality']:>12.3f}")
    return finish_run(out, metrics, start)


def parse_args(argv=None) -> argparse.Namespace:
    parser = script_parser(__doc__, "runs/outliers")
    data_flags(parser, num_train=0, num_test=0, datasets=("digits", "fashion-mnist", "mnist"))
    parser.add_argument("--inlier-classes", type=int, nargs="+", choices=range(10),
                        default=[0, 1, 2, 3, 4], metavar="{0..9}")
    parser.add_argument("--models", nargs="+", choices=["vae", "pixelcnn"],
                        default=["vae", "pixelcnn"])
    numbers(parser, latent_dim=16, hidden=200, vae_epochs=150)
    parser.add_argument("--num-samples", type=positive_int, default=100, help="IWAE K for the VAE")
    parser.add_argument("--flip-rate", type=probability, default=0.15,
                        help="probability that a pixel of the VAE background's training data "
                             "is flipped")
    pixelcnn_flags(parser, channels=32, blocks=4)
    parser.add_argument("--pixelcnn-epochs", type=step_count, default=30)
    training_flags(parser, epochs=None, batch_size=64, lr=3e-3)
    args = parser.parse_args(argv)
    check_distinct(parser, args, "models")
    if len(set(args.inlier_classes)) == 10:
        parser.error("argument --inlier-classes: leave one class out at least, for the "
                     "held-out-classes outlier set")
    args.num_train = args.num_train or None  # 0: all (a slice [:None])
    args.num_test = args.num_test or None
    return args


if __name__ == "__main__":
    run_script("outliers", main, parse_args())
