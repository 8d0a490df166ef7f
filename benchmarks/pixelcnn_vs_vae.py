"""PixelCNN against the VAE on the same binarized split: exact NLL vs IWAE_5000.

Trains the VAE of ``examples/vae.py`` (:class:`ppl_models.vae.VAE`, MLP, 16 latents, ELBO)
and the PixelCNN of ``examples/pixelcnn.py`` (:class:`ppl_models.pixelcnn.PixelCNN`, Bernoulli
pixels) on the same training images, and compares on the same statically binarized test
images (``ImageData.binarized(data_seed)``, the VAE issue's split with 0) the PixelCNN's exact
``log p(x)`` with the VAE's IWAE_K lower bound (Burda et al. 2015), in nats per image and
bits/dim. The literature leads us to expect the autoregressive model ahead (ANCHORS.md:
PixelCNN 81.3 against about 85-86 nats for VAEs on binarized MNIST). IWAE_K is a lower bound
on the VAE's log-likelihood, so the comparison favours the PixelCNN by the remaining gap
(about 0.1 nat on digits).

Both models are trained the same way: ``--binarization dynamic`` (the default) draws fresh
binary training images every minibatch from the grey levels (Salakhutdinov & Murray 2008;
Burda et al. 2015), ``static`` uses the one fixed draw; each model keeps the parameters of
its best epoch on the statically binarized validation split
(:class:`inference.training.early_stopping.KeepBest`: exact NLL for the PixelCNN,
``--valid-k``-sample IWAE for the VAE). The VAE issue's own VAE (static binarization, 200
epochs, last epoch) is trained too with ``--vae-as-issued``.

Expected with the defaults (digits, 1297 train / 200 valid / 300 test; docs/pixelcnn.md has
the three-seed table): PixelCNN about 22.7 nats per image against the VAE's IWAE_5000 of
about 23.2, both with dynamic binarization and the as-issued static VAE.

    python benchmarks/pixelcnn_vs_vae.py --vae-as-issued

Fashion-MNIST at a budget 2 CPU cores allow (4000 training images; the PixelCNN at its
28x28 default of 8 blocks and a 7x7 first layer, 25 epochs): PixelCNN 240.7 against the
VAE's IWAE_5000 of 241.9 nats per image (seed 0, about 35 minutes on one core):

    python benchmarks/pixelcnn_vs_vae.py --dataset fashion-mnist --num-train 4000 \\
        --num-valid 500 --num-test 1000 --pixelcnn-epochs 25 --vae-epochs 100 \\
        --name pixelcnn_vs_vae_fashion_mnist_8blocks
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import pyro
import torch

from inference import bound_sweep, fit, iwae_bound
from inference.training.early_stopping import KeepBest
from ppl_models.data import load_images
from inference import bits_per_dim
from ppl_models.pixelcnn import PixelCNN, default_depth
from ppl_models.vae import VAE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # for scaffold
from scaffold.flags import benchmark_parser, numbers  # noqa: E402
from scaffold.runs import finish_benchmark, start_run  # noqa: E402


def mean_in_chunks(score, x: torch.Tensor, size: int) -> float:
    """Mean over ``x: [n, ...]`` of ``score(chunk) -> [chunk]``, a chunk at a time."""
    return float(torch.cat([score(x[i:i + size]) for i in range(0, len(x), size)]).mean())


def train_vae(args, shape, train, valid, transform, epochs: int, select: bool, device) -> tuple:
    """The VAE of examples/vae.py; returns ``(vae, seconds, best epoch or None)``."""
    pyro.clear_param_store()
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    vae = VAE(shape, args.latent_dim, "bernoulli", hidden=tuple(args.hidden))
    keep = KeepBest(vae, lambda: mean_in_chunks(
        lambda x: iwae_bound(vae.model, vae.guide, x, num_samples=args.valid_k), valid,
        args.eval_batch_size)) if select else None
    fit(vae.model, vae.guide, train, epochs=epochs, batch_size=args.batch_size, lr=args.vae_lr,
        seed=args.seed, device=device, batch_transform=transform, callback=keep,
        progress=False)
    if keep is not None:
        keep.restore()
    return vae, time.perf_counter() - start, keep and keep.best_epoch


def vae_nll(args, vae, test) -> dict:
    """Test ELBO and IWAE_K of a VAE, as nats per image (negated)."""
    table = bound_sweep(vae.model, vae.guide, test, num_samples=(1, args.k), repeats=1,
                        chunk_size=1000, data_batch_size=args.eval_batch_size)
    return {"elbo": -table.elbo(), f"iwae_{args.k}": -table.iwae()[str(args.k)]}


def main(args: argparse.Namespace) -> dict:
    _, device, _ = start_run(args, exclusive=False)
    data = load_images(args.dataset)
    fixed = data.binarized(args.data_seed)
    dynamic = args.binarization == "dynamic"
    train = (data if dynamic else fixed).train.images[:args.num_train].to(device)
    transform = torch.bernoulli if dynamic else None
    valid = fixed.valid.images[:args.num_valid].to(device)
    test = fixed.test.images[:args.num_test].to(device)
    shape = data.image_shape
    num_dims = test[0].numel()
    # fill the options left unset (recorded in the config)
    args.blocks, args.first_kernel_size = default_depth(shape, args.blocks,
                                                       args.first_kernel_size)
    select = not args.last_epoch

    vae, vae_seconds, vae_best = train_vae(args, shape, train, valid, transform,
                                           args.vae_epochs, select, device)
    vae_rows = vae_nll(args, vae, test)

    pyro.clear_param_store()
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    m = PixelCNN(shape, "bernoulli", channels=args.channels, num_blocks=args.blocks,
                 first_kernel_size=args.first_kernel_size, dropout=args.dropout)
    keep = KeepBest(m, lambda: mean_in_chunks(m.log_prob, valid, 256)) if select else None
    history = fit(m.model, m.guide, train, epochs=args.pixelcnn_epochs,
                  batch_size=args.batch_size, lr=args.pixelcnn_lr, seed=args.seed,
                  device=device, batch_transform=transform, callback=keep, progress=False)
    if keep is not None:
        keep.restore()
    pixelcnn_seconds = time.perf_counter() - start
    m.eval()
    with torch.no_grad():
        pixelcnn_nats = -mean_in_chunks(m.log_prob, test, 256)

    rows = {f"vae_{name}": nats for name, nats in vae_rows.items()}
    rows["pixelcnn_exact"] = pixelcnn_nats
    seconds = {"vae": vae_seconds, "pixelcnn": pixelcnn_seconds}
    best = {"vae": vae_best, "pixelcnn": keep and keep.best_epoch}
    if args.vae_as_issued:  # static binarization, fixed epochs, last epoch: examples/vae.py
        static_train = fixed.train.images[:args.num_train].to(device)
        issued, seconds["vae_as_issued"], _ = train_vae(
            args, shape, static_train, valid, None, args.issued_vae_epochs, False, device)
        rows.update({f"vae_as_issued_{name}": nats
                     for name, nats in vae_nll(args, issued, test).items()})

    result = {
        "dataset": args.dataset,
        "binarization": args.binarization,
        "num_train": len(train),
        "num_valid": len(valid),
        "num_test": len(test),
        "nll_nats_per_image": rows,
        "nll_bits_per_dim": {k: bits_per_dim(v, num_dims) for k, v in rows.items()},
        "pixelcnn_minus_vae_nats": rows["pixelcnn_exact"] - rows[f"vae_iwae_{args.k}"],
        "best_epoch": best,
        "pixelcnn_history": [{k: r[k] for k in ("epoch", "train_loss", "valid_score") if k in r}
                             for r in history],
        "train_seconds": seconds,
        "config": vars(args),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
    }
    out = finish_benchmark(args, result)
    print(f"{args.dataset}, {len(train)} train ({args.binarization} binarization) / "
          f"{len(valid)} valid / {len(test)} test binarized images; best epochs {best}")
    print(f"{'test NLL':<26}{'nats/image':>12}{'bits/dim':>10}")
    for name, nats in rows.items():
        print(f"{name:<26}{nats:>12.3f}{bits_per_dim(nats, num_dims):>10.4f}")
    print(f"results: {out.resolve()}")
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, "pixelcnn_vs_vae")
    parser.add_argument("--dataset", default="digits", choices=["digits", "fashion-mnist", "mnist"])
    parser.add_argument("--num-train", type=int, default=None)
    parser.add_argument("--num-valid", type=int, default=None)
    parser.add_argument("--num-test", type=int, default=None)
    parser.add_argument("--binarization", choices=["static", "dynamic"], default="dynamic",
                        help="of the training images, for both models (valid/test: static)")
    parser.add_argument("--last-epoch", action="store_true",
                        help="keep the last epoch instead of the best one on the valid split")
    # examples/vae.py defaults
    numbers(parser, latent_dim=16, hidden=[200], vae_epochs=200, vae_lr=1e-3)
    parser.add_argument("--vae-as-issued", action="store_true",
                        help="also train the VAE issue's VAE: static, --issued-vae-epochs, last")
    parser.add_argument("--issued-vae-epochs", type=int, default=200)
    parser.add_argument("--k", type=int, default=5000, help="IWAE_K on the test split")
    parser.add_argument("--valid-k", type=int, default=100,
                        help="IWAE_K that selects the VAE's best epoch on the valid split")
    parser.add_argument("--eval-batch-size", type=int, default=100)
    # examples/pixelcnn.py defaults
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=None,
                        help="gated blocks (default: 4 for images up to 16 pixels high, else 8)")
    parser.add_argument("--first-kernel-size", type=int, default=None,
                        help="first layer's kernel (default: 5 up to 16 pixels high, else 7)")
    numbers(parser, dropout=0.0, pixelcnn_epochs=100, pixelcnn_lr=2e-3, batch_size=64)
    parser.add_argument("--data-seed", type=int, default=0,
                        help="static binarization of valid/test (0: the VAE issue's split)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
