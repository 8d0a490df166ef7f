"""Time PixelCNN generation of 28x28 images: naive (rerun the network per pixel) against cached.

An untrained :class:`ppl_models.pixelcnn.PixelCNN` of the default size (64 channels, 5 gated
blocks, 7x7 first kernel, 3x3 blocks, Bernoulli pixels) draws ``--batch`` images with
:meth:`~ppl_models.pixelcnn.PixelCNN.sample` (one full forward pass per pixel: ``H W`` passes)
and :meth:`~ppl_models.pixelcnn.PixelCNN.sample_fast` (one new position per layer per pixel,
about one pass in total), alternating the two for ``--repeats`` rounds so that drifts in
machine load hit both alike. It reports median seconds, the ratio naive / fast, and whether
the two drew identical images from the same seed. The issue's target is a ratio of at least 10.

    python benchmarks/pixelcnn_sampling.py  # writes benchmarks/results/pixelcnn_sampling.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from ppl_models.pixelcnn import PixelCNN

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # for scaffold
from scaffold.flags import benchmark_parser, numbers  # noqa: E402
from scaffold.runs import finish_benchmark, start_run  # noqa: E402


def time_sampler(sampler, num: int, seed: int) -> tuple[float, torch.Tensor]:
    """Seconds to draw ``[num, C, H, W]`` images with ``sampler``, and the images."""
    start = time.perf_counter()
    images = sampler(num, seed=seed)
    return time.perf_counter() - start, images


def main(args: argparse.Namespace) -> dict:
    start_run(args, exclusive=False)  # threads and seeds
    shape = (1, args.size, args.size)
    m = PixelCNN(shape, args.likelihood, channels=args.channels, num_blocks=args.blocks).eval()
    warm = PixelCNN((1, 4, 4), args.likelihood, channels=args.channels,
                    num_blocks=args.blocks).eval()
    warm.sample(args.batch)  # warm-up: allocator and first-call overheads
    warm.sample_fast(args.batch)
    seconds = {"naive": [], "fast": []}
    identical = True
    for r in range(args.repeats):
        naive_s, naive = time_sampler(m.sample, args.batch, args.seed + r)
        fast_s, fast = time_sampler(m.sample_fast, args.batch, args.seed + r)
        seconds["naive"].append(naive_s)
        seconds["fast"].append(fast_s)
        identical &= bool(torch.equal(naive, fast))
        print(f"round {r + 1}: naive {naive_s:.2f} s, fast {fast_s:.2f} s", flush=True)
    naive_median = statistics.median(seconds["naive"])
    fast_median = statistics.median(seconds["fast"])
    result = {
        "image_shape": list(shape),
        "likelihood": args.likelihood,
        "batch": args.batch,
        "channels": args.channels,
        "blocks": args.blocks,
        "repeats": args.repeats,
        "naive_median_seconds": naive_median,
        "fast_median_seconds": fast_median,
        "naive_over_fast": naive_median / fast_median,
        "identical_samples": identical,
        "seconds": seconds,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
    }
    out = finish_benchmark(args, result)
    print(f"{args.batch} images of {args.size}x{args.size}, median of {args.repeats}: naive "
          f"{naive_median:.2f} s, fast {fast_median:.2f} s, ratio {naive_median / fast_median:.1f}"
          f", identical: {identical}")
    print(f"results: {out.resolve()}")
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, "pixelcnn_sampling", device=False)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--likelihood", default="bernoulli",
                        choices=["bernoulli", "categorical256", "logistic-mixture"])
    numbers(parser, batch=4, channels=64, blocks=5, repeats=3)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
