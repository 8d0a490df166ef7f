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
import math

import pyro
import torch

from inference import (
    bits_per_dim,
    bound_sweep,
    discrete_log_likelihood_bound,
    fit,
)
from scaffold.flags import (
    check_count,
    check_distinct,
    check_evaluation_memory,
    data_flags,
    numbers,
    positive_int,
    refused_as_usage,
    script_parser,
    training_flags,
)
from scaffold.plots import image_grid
from scaffold.runs import finish_run, run_script, start_run
from ppl_models import DATASETS, load_images
from ppl_models.likelihoods import LIKELIHOODS, make_likelihood, training_representation
from ppl_models.vae import VAE

EVAL_BATCH_SIZE = 100  # test images per evaluation batch of the IWAE bound


def main(args: argparse.Namespace) -> dict:
    out, device, start = start_run(args)
    with refused_as_usage("pixel_likelihoods", "--data-root"):  # a missing or corrupt data file
        data = load_images(args.dataset, root=args.data_root)
    num_dims = math.prod(data.image_shape)
    check_count("pixel_likelihoods", "--num-train", args.num_train, len(data.train),
                f"the {data.name} training split")
    check_count("pixel_likelihoods", "--num-test", args.num_test, len(data.test),
                f"the {data.name} test split")
    check_evaluation_memory("pixel_likelihoods", "--k", args.k,
                            data.test.images[:args.num_test or None], EVAL_BATCH_SIZE)
    results = {}
    for name in args.likelihoods:
        pyro.clear_param_store()
        pyro.set_rng_seed(args.seed)
        train, test, transform = training_representation(data, name, "static", args.seed)
        if args.num_train:
            train = train[:args.num_train]
        if args.num_test:
            test = test[:args.num_test]
        with refused_as_usage("pixel_likelihoods"):  # a network too large for memory
            vae = VAE(data.image_shape, args.latent_dim, name, hidden=tuple(args.hidden))
        history = fit(vae.model, vae.guide, train, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=device,
                      batch_transform=transform)
        table = bound_sweep(vae.model, vae.guide, test.to(device), num_samples=(args.k,),
                            repeats=args.repeats, chunk_size=args.chunk_size,
                            data_batch_size=EVAL_BATCH_SIZE)
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
               "device": str(device)}
    key = f"iwae_{args.k}_bits_per_dim"
    print(f"{'likelihood':<20}{'data':>8}{'ELBO b/d':>10}{f'IWAE_{args.k} b/d':>14}")
    for name, row in sorted(results.items(), key=lambda item: (item[1]["data"], item[1][key])):
        print(f"{name:<20}{row['data']:>8}{row['elbo_bits_per_dim']:>10.4f}{row[key]:>14.4f}")
    return finish_run(out, metrics, start, "metrics.json, samples_*.png")


def parse_args(argv=None) -> argparse.Namespace:
    parser = script_parser(__doc__, "runs/pixel_likelihoods")
    data_flags(parser, num_train=0, num_test=0, datasets=DATASETS)
    parser.add_argument("--likelihoods", nargs="+", choices=LIKELIHOODS, default=list(LIKELIHOODS))
    numbers(parser, latent_dim=16, hidden=[200])
    training_flags(parser, epochs=100, batch_size=64, lr=1e-3)
    parser.add_argument("--k", type=positive_int, default=1000, help="particles of the IWAE bound")
    numbers(parser, repeats=2, chunk_size=500)
    args = parser.parse_args(argv)
    check_distinct(parser, args, "likelihoods")
    return args


if __name__ == "__main__":
    run_script("pixel_likelihoods", main, parse_args())
