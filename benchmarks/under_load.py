"""Epoch time of the demo VAE when the cores are shared: thread counts and OpenMP wait policy.

The demo (``make demo``: ``examples/vae.py``'s VAE on statically binarized 8x8 digits,
64-200-16 MLPs, batch 64, Bernoulli pixels, ``fit``'s default step) is trained for
``--epochs`` epochs in a fresh child process per configuration, while this script keeps N
CPU-bound processes (``while True: pass``) running beside it, N in ``--busy`` (0 2 4).
Configurations: torch intra-op threads in ``--thread-counts`` (1 2) crossed with the OpenMP wait
policy in ``--policies``: ``default`` (libgomp's: spin a while, then sleep), ``passive``
(``OMP_WAIT_POLICY=PASSIVE``: waiting threads sleep at once) and ``active``. The policy is
an environment variable read when the OpenMP runtime loads, hence one process per
configuration. Children alternate (order rotating every repetition); each reports the
median of its epoch times after the first epoch (the first holds the first step's checks).
Reported per N and configuration: the median over repetitions, and its ratio to the same
configuration with N = 0. The machine's own load (other users) is recorded beside them.

    python benchmarks/under_load.py  # -> benchmarks/results/under_load.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # for scaffold
from scaffold.flags import benchmark_parser  # noqa: E402
from scaffold.runs import finish_benchmark  # noqa: E402

HERE = Path(__file__).resolve().parent
POLICIES = {"default": None, "passive": "PASSIVE", "active": "ACTIVE"}


def child(args: argparse.Namespace) -> None:
    """Train the demo VAE and print the median epoch time (seconds, after the first)."""
    import pyro
    import torch

    torch.set_num_threads(args.child_threads)
    from inference import fit
    from ppl_models import load_images
    from ppl_models.vae import VAE

    data = load_images("digits").binarized(args.seed)
    train = data.train.images
    vae = VAE(tuple(train.shape[1:]), latent_dim=16, hidden=(200,))
    stamps = []
    with pyro.validation_enabled(False):
        fit(vae.model, vae.guide, train, epochs=args.epochs, batch_size=64, seed=args.seed,
            progress=False, callback=lambda record: stamps.append(time.perf_counter()))
    epochs = [b - a for a, b in zip(stamps[:-1], stamps[1:])]
    print(json.dumps({"median_epoch_s": statistics.median(epochs), "epochs_s": epochs,
                      "threads": torch.get_num_threads()}))


def run_child(threads: int, policy: str, args) -> dict:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if POLICIES[policy]:
        env["OMP_WAIT_POLICY"] = POLICIES[policy]
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    argv = [sys.executable, __file__, "--child-threads", str(threads), "--epochs",
            str(args.epochs), "--seed", str(args.seed)]
    output = subprocess.run(argv, check=True, capture_output=True, text=True, env=env,
                            cwd=HERE.parent).stdout
    return json.loads(output.strip().splitlines()[-1])


def main(args: argparse.Namespace) -> dict:
    configs = [(t, p) for t in args.thread_counts for p in args.policies]
    result = {"machine": f"{platform.processor() or platform.machine()}, "
                         f"{os.cpu_count()} logical CPUs",
              "config": vars(args), "by_busy": {}}
    for busy in args.busy:
        procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                 for _ in range(busy)]
        try:
            time.sleep(1.0)
            seconds = {f"{t} thread(s), {p}": [] for t, p in configs}
            loads = []
            for repeat in range(args.repeats):
                order = configs[repeat % len(configs):] + configs[:repeat % len(configs)]
                for threads, policy in order:
                    loads.append(os.getloadavg()[0])
                    report = run_child(threads, policy, args)
                    seconds[f"{threads} thread(s), {policy}"].append(report["median_epoch_s"])
                    print(f"busy {busy}, {threads} thread(s), {policy}: "
                          f"{report['median_epoch_s']:.3f} s/epoch", flush=True)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
        result["by_busy"][str(busy)] = {
            "median_epoch_s": {k: statistics.median(v) for k, v in seconds.items()},
            "epoch_s": seconds,
            "load_average_1min": [round(x, 2) for x in loads],
        }
    base = result["by_busy"].get("0")
    if base:
        result["ratio_to_no_busy"] = {
            busy: {k: v / base["median_epoch_s"][k] for k, v in entry["median_epoch_s"].items()}
            for busy, entry in result["by_busy"].items()}
    out = finish_benchmark(args, result)
    print(f"written: {out}")
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, "under_load", threads=None, device=False)
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 2, 4],
                        help="CPU-bound processes started beside the training")
    parser.add_argument("--thread-counts", type=int, nargs="+", default=[1, 2],
                        help="torch intra-op threads of the timed training")
    parser.add_argument("--policies", nargs="+", choices=list(POLICIES),
                        default=["default", "passive"])
    parser.add_argument("--epochs", type=int, default=4, help="per child (first not counted)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child-threads", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    parsed = parse_args()
    if parsed.child_threads:
        child(parsed)
    else:
        main(parsed)
