"""Time WaveNet generation: naive (rerun the network on the receptive field) against fast.

For each depth in ``--layers`` an untrained :class:`ppl_models.wavenet.WaveNet` draws
``--num-samples`` samples with each method, alternating naive and fast for ``--repeats``
rounds so that drifts in machine load hit both alike; the table gives median seconds, samples
per second and the ratio naive / fast, and checks that both methods drew the same samples.
The naive cost per step grows with the receptive field ``2^layers``, the fast one with
``layers`` (Paine et al. 2016), so the ratio grows with depth.

    python benchmarks/wavenet_sampling.py  # writes benchmarks/results/wavenet_sampling.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from ppl_models.wavenet import WaveNet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # for scaffold
from scaffold.flags import benchmark_parser, numbers  # noqa: E402
from scaffold.runs import finish_benchmark, start_run  # noqa: E402


def time_generation(wn: WaveNet, num_samples: int, seed: int, method: str
                    ) -> tuple[float, torch.Tensor]:
    """Seconds to draw ``[1, num_samples]`` levels with ``method``, and the levels."""
    start = time.perf_counter()
    levels = wn.generate(num_samples, seed=seed, method=method)
    return time.perf_counter() - start, levels


def main(args: argparse.Namespace) -> dict:
    start_run(args, exclusive=False)  # threads and seeds
    rows = []
    for layers in args.layers:
        wn = WaveNet(layers=layers, channels=args.channels, skip_channels=args.skip_channels)
        time_generation(wn, 10, args.seed, "naive")  # warm-up: allocator, first-call overheads
        time_generation(wn, 10, args.seed, "fast")
        seconds = {"naive": [], "fast": []}
        identical = True
        for _ in range(args.repeats):
            naive_s, naive = time_generation(wn, args.num_samples, args.seed, "naive")
            fast_s, fast = time_generation(wn, args.num_samples, args.seed, "fast")
            seconds["naive"].append(naive_s)
            seconds["fast"].append(fast_s)
            identical &= bool(torch.equal(naive, fast))
        naive_median = statistics.median(seconds["naive"])
        fast_median = statistics.median(seconds["fast"])
        rows.append({
            "layers": layers,
            "receptive_field": wn.receptive_field,
            "naive_median_seconds": naive_median,
            "fast_median_seconds": fast_median,
            "naive_samples_per_second": args.num_samples / naive_median,
            "fast_samples_per_second": args.num_samples / fast_median,
            "naive_over_fast": naive_median / fast_median,
            "identical_samples": identical,
            "seconds": seconds,
        })
    result = {
        "num_samples": args.num_samples,
        "repeats": args.repeats,
        "channels": args.channels,
        "skip_channels": args.skip_channels,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "rows": rows,
    }
    out = finish_benchmark(args, result)

    print(f"{args.num_samples} samples, median of {args.repeats}, {args.channels} channels, "
          f"{torch.get_num_threads()} threads")
    print(f"{'layers':>6}{'field':>7}{'naive (s)':>11}{'fast (s)':>10}{'ratio':>8}"
          f"{'fast samples/s':>16}{'identical':>11}")
    for r in rows:
        print(f"{r['layers']:>6}{r['receptive_field']:>7}{r['naive_median_seconds']:>11.2f}"
              f"{r['fast_median_seconds']:>10.2f}{r['naive_over_fast']:>8.1f}"
              f"{r['fast_samples_per_second']:>16.0f}{str(r['identical_samples']):>11}")
    print(f"results: {out.resolve()}")
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, "wavenet_sampling", device=False)
    numbers(parser, layers=[6, 8, 10], num_samples=2000, repeats=3, channels=32, skip_channels=64)
    parser.set_defaults(threads=1)  # generation is a chain of small operations that more
    # threads do not speed up, and on a busy machine slow
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
