"""Which pixel model works best? One VAE, five likelihoods, one table in bits/dim.

Trains the same MLP VAE on the same 8-bit images with each pixel likelihood of
:mod:`ppl_models.likelihoods` and ranks them by test IWAE_K in bits/dim of the 8-bit data.
Binary data differ from 8-bit data, so the Bernoulli row (on binarized images) is listed
apart; the Gaussian rows are densities on dequantized data, turned into bounds on the
discrete likelihood by the dequantization correction (``- D log 256`` nats).

Expected with the defaults (8x8 digits, 100 epochs each, about three minutes on 2 CPU
cores): the discretized logistic mixture and the 256-way softmax give the lowest bits/dim
among the 8-bit likelihoods, the Gaussian with a fixed sigma the highest.

    python examples/pixel_likelihoods.py --out-dir runs/likelihoods
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import pyro
import torch

from inference import (
    bits_per_dim,
    bound_sweep,
    discrete_log_likelihood_bound,
    fit,
    resolve_device,
)
from scaffold.flags_types import nonnegative_int, positive_float, positive_int
from scaffold.plots import image_grid
from ppl_models import DATASETS, load_images
from ppl_models.likelihoods import LIKELIHOODS, make_likelihood, training_representation
from ppl_models.vae import VAE


def main(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    data = load_images(args.dataset, root=args.data_root)
    num_dims = math.prod(data.image_shape)
    results = {}
    for name in args.likelihoods:
        pyro.clear_param_store()
        pyro.set_rng_seed(args.seed)
        train, test, transform = training_representation(data, name, "static", args.seed)
        if args.num_train:
            train = train[:args.num_train]
        if args.num_test:
            test = test[:args.num_test]
        vae = VAE(data.image_shape, args.latent_dim, name, hidden=tuple(args.hidden))
        history = fit(vae.model, vae.guide, train, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=device,
                      batch_transform=transform)
        table = bound_sweep(vae.model, vae.guide, test.to(device), num_samples=(args.k,),
                            repeats=args.repeats, chunk_size=args.chunk_size,
                            data_batch_size=100)
        discrete = make_likelihood(name).discrete

        def as_discrete(nats):
            return nats if discrete else discrete_log_likelihood_bound(nats, num_dims)

        elbo, iwae = as_discrete(table.elbo()), as_discrete(table.iwae()[str(args.k)])
        results[name] = {
            "data": "binary" if name == "bernoulli" else "8-bit",
            "elbo_nats": elbo, f"iwae_{args.k}_nats": iwae,
            "elbo_bits_per_dim": bits_per_dim(-elbo, num_dims),
            f"iwae_{args.k}_bits_per_dim": bits_per_dim(-iwae, num_dims),
            "iwae_stderr_nats": table.rows[-1]["stderr"],
            "seconds_per_epoch": sum(r["seconds"] for r in history) / max(len(history), 1),
        }
        generator = torch.Generator().manual_seed(args.seed)
        image_grid(vae.sample_images(30, generator, mean=False), out / f"samples_{name}.png",
                   f"samples of p(x | z), z ~ p(z): {name}")

    metrics = {"dataset": args.dataset, "k": args.k, "results": results, "config": vars(args),
               "units": "nats per image of the discrete (8-bit or binary) data; bits/dim",
               "wall_seconds": time.perf_counter() - start}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    key = f"iwae_{args.k}_bits_per_dim"
    print(f"{'likelihood':<20}{'data':>8}{'ELBO b/d':>10}{f'IWAE_{args.k} b/d':>14}")
    for name, row in sorted(results.items(), key=lambda item: (item[1]["data"], item[1][key])):
        print(f"{name:<20}{row['data']:>8}{row['elbo_bits_per_dim']:>10.4f}{row[key]:>14.4f}")
    print(f"results: {out.resolve()} (metrics.json, samples_*.png)")
    return metrics


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=DATASETS, default="digits")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--likelihoods", nargs="+", choices=LIKELIHOODS, default=list(LIKELIHOODS))
    parser.add_argument("--latent-dim", type=positive_int, default=16)
    parser.add_argument("--hidden", type=positive_int, nargs="+", default=[200])
    parser.add_argument("--epochs", type=nonnegative_int, default=100)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--lr", type=positive_float, default=1e-3)
    parser.add_argument("--num-train", type=nonnegative_int, default=0)
    parser.add_argument("--num-test", type=nonnegative_int, default=0)
    parser.add_argument("--k", type=positive_int, default=1000, help="particles of the IWAE bound")
    parser.add_argument("--repeats", type=positive_int, default=2)
    parser.add_argument("--chunk-size", type=positive_int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out-dir", default="runs/pixel_likelihoods")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
