"""PixelCNN on images: exact test NLL, samples, completions, and naive against fast sampling.

Trains :class:`ppl_models.pixelcnn.PixelCNN` by maximum likelihood (:func:`inference.fit`
with its empty guide) on binarized images (``--likelihood bernoulli``, the default; training
images redrawn every minibatch with ``--binarization dynamic``, the default, while the
validation and test images are the one static draw the VAE examples use) or on the 256 levels
(``categorical256``, ``logistic-mixture``), optionally conditioned on the class
(``--class-conditional``), keeping the epoch with the best exact validation NLL
(:class:`inference.training.early_stopping.KeepBest`; ``--last-epoch`` keeps the last). Reports the
exact test NLL in nats per image and bits/dim (no bound: the likelihood of an autoregressive
model is a product of normalized conditionals), draws samples, completes the bottom half of
test images given the top half (several completions per image), draws one row of samples per
class for a class-conditional model, and times the naive sampler (the network rerun for every
pixel) against the cached one on the same seed, checking that they draw identical images.

Expected with the defaults (binarized 8x8 digits, 32 channels, 4 blocks, dynamic
binarization, 100 epochs, best epoch on the 200 validation images; 5 to 10 minutes on one
loaded CPU core): test NLL about 22.7 nats per image (0.51 bits/dim), below the VAE of
``examples/vae.py`` on the same test split (IWAE_5000 23.2; ``benchmarks/pixelcnn_vs_vae.py``,
``docs/pixelcnn.md``). Trained on the one static draw instead, the PixelCNN overfits these
1297 images (test 33.2 against train 16.8 after 60 epochs). The two samplers draw identical
images; the cached one is faster, the more so for larger images (72x at 28x28:
``benchmarks/pixelcnn_sampling.py``). For 28x28 images the network defaults to 8 blocks
after a 7x7 layer (:func:`ppl_models.pixelcnn.default_depth`), which on 4000 Fashion-MNIST
images beats the VAE where 4 blocks did not (``docs/pixelcnn.md``).

MNIST recipe (GPU, not run here; compare with 81.30 nats, van den Oord et al. 2016):
``docs/pixelcnn.md``.

    python examples/pixelcnn.py --out-dir runs/pixelcnn
    python examples/pixelcnn.py --class-conditional --out-dir runs/pixelcnn_classes
    python examples/pixelcnn.py --dataset fashion-mnist --epochs 2 --num-train 10000 \\
        --out-dir runs/pixelcnn_fm
"""

from __future__ import annotations

import argparse
import time

import pyro
import torch

from inference import fit
from inference.training.early_stopping import KeepBest
from scaffold.plots import image_grid
from scaffold.flags import (
    check_count,
    data_flags,
    fraction_below_one,
    odd_positive_int,
    positive_int,
    refused_as_usage,
    script_parser,
    training_flags,
)
from scaffold.runs import finish_run, run_script, start_run
from ppl_models.data import DATASETS, load_images
from inference import bits_per_dim
from ppl_models.likelihoods import training_representation
from ppl_models.pixelcnn import PixelCNN, default_depth


@torch.no_grad()
def nll_nats(m: PixelCNN, x: torch.Tensor, y: torch.Tensor | None, batch_size: int = 256
             ) -> float:
    """Mean ``-log p(x | y)`` in nats per image over ``x: [n, C, H, W]``."""
    total = 0.0
    for i in range(0, len(x), batch_size):
        total -= float(m.log_prob(x[i:i + batch_size],
                                  None if y is None else y[i:i + batch_size]).sum())
    return total / len(x)


def _first_only(transform):
    """Apply ``transform`` to the images of a minibatch and pass the labels through."""
    return lambda images, *rest: (transform(images), *rest)


def timed(sampler, *args, **kwargs) -> tuple[torch.Tensor, float]:
    """Run a sampler; its images and the seconds it took."""
    start = time.perf_counter()
    images = sampler(*args, **kwargs)
    return images, time.perf_counter() - start


def completions(m: PixelCNN, x: torch.Tensor, y: torch.Tensor | None, per_image: int,
                seed: int) -> torch.Tensor:
    """For ``x: [n, C, H, W]``: rows of (original, top half, ``per_image`` completions) as
    ``[n * (2 + per_image), C, H, W]``; the hidden half is shown grey."""
    n, (C, H, W) = len(x), m.image_shape
    mask = torch.zeros(1, 1, H, W, dtype=torch.bool, device=x.device)
    mask[..., :H // 2, :] = True
    given = x.repeat_interleave(per_image, 0)  # [n * per_image, C, H, W]
    labels = None if y is None else y.repeat_interleave(per_image, 0)
    drawn = m.sample_fast(len(given), labels, given=given, mask=mask, seed=seed)
    shown = torch.where(mask, x, torch.full_like(x, 0.5))
    rows = torch.cat([x[:, None], shown[:, None], drawn.reshape(n, per_image, C, H, W)], 1)
    return rows.reshape(-1, C, H, W)


def main(args: argparse.Namespace) -> dict:
    out, device, start = start_run(args)
    pyro.clear_param_store()

    with refused_as_usage("pixelcnn", "--data-root"):  # a missing or corrupt data file
        data = load_images(args.dataset, args.data_root, args.download)
    train, test, transform = training_representation(data, args.likelihood, args.binarization,
                                                     args.seed)
    for flag, count, split, word in (("--num-train", args.num_train, data.train, "training"),
                                     ("--num-test", args.num_test, data.test, "test"),
                                     ("--num-valid", args.num_valid, data.valid, "validation")):
        check_count("pixelcnn", flag, count, len(split), f"the {data.name} {word} split")
    num_train, num_test = args.num_train or None, args.num_test or None  # 0 or unset: all
    train, test = train[:num_train].to(device), test[:num_test].to(device)
    fixed = data.binarized(args.seed) if args.likelihood == "bernoulli" else data
    valid, valid_y = (fixed.valid.images[:args.num_valid].to(device),
                      fixed.valid.labels[:args.num_valid])
    train_y = data.train.labels[:num_train].to(device)
    test_y = data.test.labels[:num_test].to(device)
    num_classes = data.num_classes if args.class_conditional else None
    cond = (lambda labels: labels) if args.class_conditional else (lambda labels: None)
    print(f"{args.dataset}: {len(train)} train / {len(valid)} valid / {len(test)} test images of "
          f"{list(data.image_shape)}, {args.likelihood} pixels")

    # fill the options left unset (recorded in the config)
    args.blocks, args.first_kernel_size = default_depth(data.image_shape, args.blocks,
                                                       args.first_kernel_size)
    torch.manual_seed(args.seed)
    with refused_as_usage("pixelcnn"):  # a network beyond memory, or too deep (--blocks)
        m = PixelCNN(data.image_shape, args.likelihood, channels=args.channels,
                     num_blocks=args.blocks, kernel_size=args.kernel_size,
                     first_kernel_size=args.first_kernel_size, num_classes=num_classes,
                     dropout=args.dropout)
    fit_data = (train, train_y) if args.class_conditional else train
    valid_y = cond(valid_y.to(device))
    # keep the epoch with the best exact validation NLL (evaluation mode, no dropout); with
    # --epochs 0 the untrained network is kept
    keep = (None if args.last_epoch or args.epochs == 0
            else KeepBest(m, lambda: -nll_nats(m, valid, valid_y)))
    history = fit(m.model, m.guide, fit_data, epochs=args.epochs, batch_size=args.batch_size,
                  lr=args.lr, seed=args.seed, device=device, callback=keep,
                  batch_transform=None if transform is None else _first_only(transform))
    if keep is not None:
        keep.restore()
    m.eval()
    num_dims = test[0].numel()
    test_nats = nll_nats(m, test, cond(test_y))
    # training NLL on the one static draw (dynamic training images are grey levels)
    train_nats = nll_nats(m, fixed.train.images[:num_train].to(device), cond(train_y))

    n_show = args.num_samples
    sample_y = cond(torch.arange(n_show, device=device) % data.num_classes)
    samples = m.sample_fast(n_show, sample_y, seed=args.seed)
    image_grid(samples, out / "samples.png", "PixelCNN samples (cached sampler)")
    image_grid(test[:n_show], out / "data.png", "test images")
    picked = slice(0, args.num_complete)
    image_grid(completions(m, test[picked], cond(test_y[picked]), args.completions_per_image,
                           args.seed), out / "completions.png",
               "original | given top half | completions", columns=2 + args.completions_per_image)
    if args.class_conditional:
        per_class = args.samples_per_class
        classes = torch.arange(data.num_classes, device=device).repeat_interleave(per_class)
        image_grid(m.sample_fast(len(classes), classes, seed=args.seed),
                   out / "class_samples.png", "one row per class", columns=per_class,
                   row_labels=[str(c) for c in range(data.num_classes)])

    # test labels, reused in turn when --num-timing exceeds the test images
    timing_y = cond(test_y[torch.arange(args.num_timing, device=device) % len(test_y)])
    naive, naive_seconds = timed(m.sample, args.num_timing, timing_y, seed=args.seed + 1)
    fast, fast_seconds = timed(m.sample_fast, args.num_timing, timing_y, seed=args.seed + 1)

    metrics = {
        "dataset": args.dataset,
        "likelihood": args.likelihood,
        "class_conditional": args.class_conditional,
        "image_shape": list(data.image_shape),
        "num_train": len(train),
        "num_valid": len(valid),
        "num_test": len(test),
        "best_epoch": None if keep is None else keep.best_epoch,
        "valid_nll_nats_per_image": None if keep is None else -keep.best_score,
        "num_parameters": sum(p.numel() for p in m.parameters()),
        "test_nll_nats_per_image": test_nats,
        "test_bits_per_dim": bits_per_dim(test_nats, num_dims),
        "train_nll_nats_per_image": train_nats,
        "train_bits_per_dim": bits_per_dim(train_nats, num_dims),
        "num_timing_images": args.num_timing,
        "naive_sampling_seconds": naive_seconds,
        "fast_sampling_seconds": fast_seconds,
        "naive_over_fast": naive_seconds / fast_seconds,
        "samples_identical": bool(torch.equal(naive, fast)),
        "history": history,
        "config": vars(args),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    print(f"{'':<8}{'NLL nats/image':>16}{'bits/dim':>10}")
    print(f"{'test':<8}{test_nats:>16.3f}{metrics['test_bits_per_dim']:>10.4f}")
    print(f"{'train':<8}{train_nats:>16.3f}{metrics['train_bits_per_dim']:>10.4f}")
    print(f"sampling {args.num_timing} images: naive {naive_seconds:.2f} s, fast "
          f"{fast_seconds:.2f} s, ratio {metrics['naive_over_fast']:.1f}, identical: "
          f"{metrics['samples_identical']}")
    return finish_run(out, metrics, start, "metrics.json, samples.png, completions.png"
                      f"{', class_samples.png' if args.class_conditional else ''}, data.png")


def parse_args(argv=None) -> argparse.Namespace:
    parser = script_parser(__doc__, "runs/pixelcnn")
    data_flags(parser, num_train=None, num_test=None, datasets=DATASETS, download=True)
    parser.add_argument("--num-valid", type=positive_int, default=None,
                        help="first N validation images (best-epoch selection)")
    parser.add_argument("--likelihood", default="bernoulli",
                        choices=["bernoulli", "categorical256", "logistic-mixture"])
    parser.add_argument("--class-conditional", action="store_true",
                        help="model p(x | class) with a class embedding in every block")
    parser.add_argument("--binarization", choices=["static", "dynamic"], default=None,
                        help="of the training images, bernoulli only (default dynamic); "
                             "valid/test stay static")
    parser.add_argument("--dropout", type=fraction_below_one, default=0.0,
                        help="on the gated activations of every block, in training only; in "
                             "[0, 1)")
    parser.add_argument("--last-epoch", action="store_true",
                        help="keep the last epoch instead of the best on the valid split")
    parser.add_argument("--channels", type=positive_int, default=32)
    parser.add_argument("--blocks", type=positive_int, default=None,
                        help="gated blocks (default: 4 for images up to 16 pixels high, else 8)")
    parser.add_argument("--kernel-size", type=odd_positive_int, default=3,
                        help="the blocks' kernel (odd)")
    parser.add_argument("--first-kernel-size", type=odd_positive_int, default=None,
                        help="first layer's kernel, odd (default: 5 up to 16 pixels high, "
                             "else 7)")
    training_flags(parser, epochs=100, batch_size=64, lr=2e-3)
    parser.add_argument("--num-samples", type=positive_int, default=40,
                        help="images in samples.png")
    parser.add_argument("--samples-per-class", type=positive_int, default=10,
                        help="columns of class_samples.png (with --class-conditional)")
    parser.add_argument("--num-complete", type=positive_int, default=8,
                        help="test images completed")
    parser.add_argument("--completions-per-image", type=positive_int, default=5)
    parser.add_argument("--num-timing", type=positive_int, default=4,
                        help="images drawn by each sampler for the timing")
    args = parser.parse_args(argv)
    if args.binarization is not None and args.likelihood != "bernoulli":
        parser.error(f"argument --binarization: binarization is for the bernoulli likelihood; "
                     f"the {args.likelihood} likelihood's training images are dequantized "
                     "(continuous) or kept as 8-bit levels (discrete), never binarized")
    # (training_representation takes "static" for the 8-bit likelihoods: images as they are)
    args.binarization = args.binarization or (
        "dynamic" if args.likelihood == "bernoulli" else "static")
    return args


if __name__ == "__main__":
    run_script("pixelcnn", main, parse_args())
