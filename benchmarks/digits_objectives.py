"""ELBO-, IWAE- and DReG-trained VAEs on binarized digits, compared by test IWAE_5000.

Burda et al. (2015) found IWAE training (K = 5, 50) better than ELBO training on the
IWAE_5000 estimate of test log-likelihood; Tucker et al. (2018) found DReG gradients better
still. This benchmark checks the same ordering on the embedded 8x8 digits with the example's
default VAE, several seeds, and reports means with standard errors.

    python benchmarks/digits_objectives.py  # writes benchmarks/results/digits_objectives.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import pyro

from inference import bound_sweep, fit
from ppl_models import load_images
from ppl_models.vae import VAE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # for scaffold
from scaffold.flags import benchmark_parser, numbers  # noqa: E402
from scaffold.runs import finish_benchmark, start_run  # noqa: E402

OBJECTIVES = (("elbo", 1), ("iwae", 5), ("dreg", 5))


def main(args: argparse.Namespace) -> dict:
    _, device, _ = start_run(args, exclusive=False)
    data = load_images("digits").binarized(0)
    test = data.test.images.to(device)
    runs = {f"{name}-{k}": [] for name, k in OBJECTIVES}
    for seed in range(args.seeds):
        for name, k in OBJECTIVES:
            pyro.clear_param_store()
            vae = VAE((1, 8, 8), args.latent_dim, "bernoulli", hidden=tuple(args.hidden))
            fit(vae.model, vae.guide, data.train.images, loss=name, num_particles=k,
                epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed,
                device=device, progress=False)
            table = bound_sweep(vae.model, vae.guide, test, num_samples=(1, args.k), repeats=1,
                                chunk_size=1000)
            runs[f"{name}-{k}"].append({"seed": seed, "elbo": table.elbo(),
                                        f"iwae_{args.k}": table.iwae()[str(args.k)]})
            last = runs[f"{name}-{k}"][-1][f"iwae_{args.k}"]
            print(f"seed {seed} {name:<5} K={k}: IWAE_{args.k} {last:.3f}")
    summary = {}
    for label, rows in runs.items():
        values = [r[f"iwae_{args.k}"] for r in rows]
        stderr = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
        summary[label] = {"iwae_mean": statistics.mean(values), "iwae_stderr": stderr,
                          "elbo_mean": statistics.mean(r["elbo"] for r in rows)}
    result = {"config": vars(args), "summary": summary, "runs": runs,
              "units": "nats per test image (300 statically binarized digits)"}
    print(f"written: {finish_benchmark(args, result)}")
    print(f"{'training':<10}{'ELBO':>10}{f'IWAE_{args.k}':>12}{'s.e.':>8}")
    for label, row in summary.items():
        print(f"{label:<10}{row['elbo_mean']:>10.3f}{row['iwae_mean']:>12.3f}"
              f"{row['iwae_stderr']:>8.3f}")
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, "digits_objectives", threads=None)
    numbers(parser, epochs=200, seeds=3, latent_dim=16, hidden=[200], batch_size=64, lr=1e-3,
            k=5000)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
