"""A whole test set's evidence a slice at a time: ``log_evidence`` against plain PyTorch.

``inference.log_evidence(model, guide, x, num_samples=K, batch_size=B)`` checks the pair
before it scores: a full survey (about a dozen runs of the pair) of the first slice, and for
every other slice of the same shape one or two runs whose traces must match it
(``survey_pair(..., reference=...)``). At small K those checks, not the weights, are most of
the time; this measures them against :func:`evidence_speed.plain_iwae` on the same slices.
Sides alternate per repetition (rotating order); reported are median seconds per call and
the median per-repetition ratio to the plain loop, for each K.

    python benchmarks/test_set_evidence.py  # -> benchmarks/results/test_set_evidence.json
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch

from inference import log_evidence
from ppl_models.vae import VAE

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # for scaffold
from evidence_speed import plain_iwae  # noqa: E402
from scaffold.flags import benchmark_parser, numbers  # noqa: E402
from scaffold.runs import finish_benchmark, start_run  # noqa: E402


def main(args) -> dict:
    start_run(args, exclusive=False)  # threads, allocator, seeds
    vae = VAE((1, 28, 28), args.latent_dim, "bernoulli", "mlp", (args.hidden,)).eval()
    x = (torch.rand(args.images, 1, 28, 28, generator=torch.Generator().manual_seed(args.seed))
         < 0.3).float()  # [images, 1, 28, 28]; timing does not depend on the values

    def ours(k):
        return log_evidence(vae.model, vae.guide, x, num_samples=k, batch_size=args.batch_size,
                            chunk_size=args.chunk_size, progress=False)

    def plain(k):
        return torch.cat([plain_iwae(vae, part, k, args.chunk_size)
                          for part in x.split(args.batch_size)])

    sides = {"ours": ours, "plain": plain}
    results = {}
    with pyro.validation_enabled(False):
        for k in args.k:
            seconds = {name: [] for name in sides}
            for name, side in sides.items():  # warm-up
                side(k)
            for repeat in range(args.repeats):
                names = list(sides)[repeat % 2:] + list(sides)[:repeat % 2]
                for name in names:
                    start = time.perf_counter()
                    sides[name](k)
                    seconds[name].append(time.perf_counter() - start)
            ratio = statistics.median(o / p for o, p in zip(seconds["ours"], seconds["plain"]))
            results[str(k)] = {"median_seconds": {n: statistics.median(s)
                                                  for n, s in seconds.items()},
                               "median_ratio_ours_to_plain": ratio, "seconds": seconds}
            print(f"K={k}: ours {results[str(k)]['median_seconds']['ours']:.3f} s, plain "
                  f"{results[str(k)]['median_seconds']['plain']:.3f} s, ratio {ratio:.2f}")
    result = {"machine": f"{platform.processor() or platform.machine()}, {args.threads} "
                         f"thread(s), torch {torch.__version__}, pyro {pyro.__version__}",
              "config": vars(args), "per_k": results}
    print(f"written: {finish_benchmark(args, result)}")
    return result


def parse_args(argv=None):
    parser = benchmark_parser(__doc__, "test_set_evidence", device=False)
    numbers(parser, images=2000, batch_size=256, chunk_size=500, hidden=400, latent_dim=50,
            repeats=5, k=[1, 10, 100])
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
