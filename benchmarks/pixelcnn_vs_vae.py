"""PixelCNN against the VAE on the same statically binarized split: exact NLL vs IWAE_5000.

Trains the VAE of ``examples/vae.py`` (:class:`ppl_models.vae.VAE`, MLP, 16 latents, ELBO)
and the PixelCNN of ``examples/pixelcnn.py`` (:class:`ppl_models.pixelcnn.PixelCNN`, Bernoulli
pixels) on the same binarized training images (``ImageData.binarized(seed)``), each at its
example's default training budget unless overridden, and compares on the same binarized test
images the PixelCNN's exact ``log p(x)`` with the VAE's IWAE_5000 lower bound (Burda et al.
2015), both in nats per image and bits/dim. The literature leads us to expect the
autoregressive model ahead (ANCHORS.md: PixelCNN 81.3 against about 85-86 nats for VAEs on
binarized MNIST). Note that IWAE_5000 is a lower bound on the VAE's log-likelihood, so the
comparison favours the PixelCNN by the (small, ~0.1 nat on digits) remaining gap.

    python benchmarks/pixelcnn_vs_vae.py --out benchmarks/results/pixelcnn_vs_vae.json
    python benchmarks/pixelcnn_vs_vae.py --dataset fashion-mnist --num-train 10000 \\
        --num-test 1000 --vae-epochs 10 --pixelcnn-epochs 2 \\
        --out benchmarks/results/pixelcnn_vs_vae_fashion_mnist.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import pyro
import torch

from inference import bound_sweep, fit, resolve_device
from ppl_models.data import load_images
from ppl_models.likelihoods import bits_per_dim
from ppl_models.pixelcnn import PixelCNN
from ppl_models.vae import VAE


def main(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    data = load_images(args.dataset).binarized(args.seed)
    train = data.train.images[:args.num_train].to(device)
    test = data.test.images[:args.num_test].to(device)
    shape = data.image_shape
    num_dims = test[0].numel()

    pyro.clear_param_store()
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    vae = VAE(shape, args.latent_dim, "bernoulli", hidden=tuple(args.hidden))
    fit(vae.model, vae.guide, train, epochs=args.vae_epochs, batch_size=args.batch_size,
        lr=args.vae_lr, seed=args.seed, device=device)
    vae_train_seconds = time.perf_counter() - start
    table = bound_sweep(vae.model, vae.guide, test, num_samples=(1, args.k), repeats=1,
                        chunk_size=1000, data_batch_size=args.eval_batch_size)
    vae_iwae = table.iwae()[str(args.k)]

    pyro.clear_param_store()
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    m = PixelCNN(shape, "bernoulli", channels=args.channels, num_blocks=args.blocks,
                 first_kernel_size=args.first_kernel_size)
    fit(m.model, m.guide, train, epochs=args.pixelcnn_epochs, batch_size=args.batch_size,
        lr=args.pixelcnn_lr, seed=args.seed, device=device)
    pixelcnn_train_seconds = time.perf_counter() - start
    with torch.no_grad():
        pixelcnn_log_p = torch.cat([m.log_prob(test[i:i + 256])
                                    for i in range(0, len(test), 256)]).mean()

    rows = {
        "vae_elbo": -table.elbo(),
        f"vae_iwae_{args.k}": -vae_iwae,
        "pixelcnn_exact": -float(pixelcnn_log_p),
    }
    result = {
        "dataset": args.dataset,
        "num_train": len(train),
        "num_test": len(test),
        "nll_nats_per_image": rows,
        "nll_bits_per_dim": {k: bits_per_dim(v, num_dims) for k, v in rows.items()},
        "pixelcnn_minus_vae_nats": rows["pixelcnn_exact"] - rows[f"vae_iwae_{args.k}"],
        "train_seconds": {"vae": vae_train_seconds, "pixelcnn": pixelcnn_train_seconds},
        "config": vars(args),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"{args.dataset}, {len(train)} train / {len(test)} test binarized images")
    print(f"{'test NLL':<18}{'nats/image':>12}{'bits/dim':>10}")
    for name, nats in rows.items():
        print(f"{name:<18}{nats:>12.3f}{bits_per_dim(nats, num_dims):>10.4f}")
    print(f"results: {out.resolve()}")
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="digits", choices=["digits", "fashion-mnist", "mnist"])
    parser.add_argument("--num-train", type=int, default=None)
    parser.add_argument("--num-test", type=int, default=None)
    # examples/vae.py defaults
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--hidden", type=int, nargs="+", default=[200])
    parser.add_argument("--vae-epochs", type=int, default=200)
    parser.add_argument("--vae-lr", type=float, default=1e-3)
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--eval-batch-size", type=int, default=100)
    # examples/pixelcnn.py defaults
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--first-kernel-size", type=int, default=5)
    parser.add_argument("--pixelcnn-epochs", type=int, default=20)
    parser.add_argument("--pixelcnn-lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/pixelcnn_vs_vae.json")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
