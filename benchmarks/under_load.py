"""Epoch time of the demo VAE when the cores are shared: thread counts and OpenMP wait policy.

The demo (``make demo``: ``examples/vae.py``'s VAE on statically binarized 8x8 digits,
64-200-16 MLPs, batch 64, Bernoulli pixels, ``fit``'s default step) is trained for
``--epochs`` epochs in a fresh child process per configuration, while this script keeps N
CPU-bound processes (``while True: pass``) running beside it, N in ``--busy`` (0 2 4).
Configurations: torch intra-op threads in ``--thread-counts`` (1 2) crossed with the OpenMP wait
policy in ``--policies``: ``default`` (libgomp's: spin a while, then sleep), ``passive``
(``OMP_WAIT_POLICY=PASSIVE``: waiting threads sleep at once) and ``active``; and, as the
reference, the same networks trained by a plain PyTorch loop (``hand``, ``--reference-threads``).
The policy is an environment variable read when the OpenMP runtime loads, hence one process
per configuration. Children alternate (order rotating every repetition); each reports the
median of its epoch times after the first epoch (the first holds the first step's checks),
in wall seconds and in the process's CPU seconds (all its threads).

Reported per N and configuration: the median over repetitions, its ratio to the same
configuration with N = 0, the cores it used (CPU over wall seconds), and its CPU seconds'
ratio to N = 0. Wall time grows in proportion to the share of the cores a process gets when
its CPU seconds per epoch stay the same; a one-thread process's fair share is
``cores / (N + 1)`` of a core. The machine's own load (other users) is recorded beside them.

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
BATCH = 64


def hand_epochs(train, vae, epochs: int, callback) -> None:
    """The reference: the same networks trained in plain PyTorch (the one-sample ELBO of
    Bernoulli pixels written out, ``torch.optim.Adam`` lr 1e-3), shuffled batches of 64 as
    ``fit`` draws them, the data term scaled by ``N / batch``; ``callback()`` after each epoch.

    ``train: [N, 1, 8, 8]`` binary images.
    """
    import torch
    import torch.nn.functional as F

    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
    num = train.shape[0]
    for _ in range(epochs):
        for index in torch.randperm(num).split(BATCH):
            x = train[index]
            loc, sigma = vae.encoder(x)  # [batch, 16]
            eps = torch.randn_like(loc)
            z = loc + eps * sigma
            logits = vae.decoder(z).flatten(1)  # [batch, 64]
            log_lik = -F.binary_cross_entropy_with_logits(logits, x.flatten(1),
                                                          reduction="none").sum(1)
            log_ratio = (0.5 * eps.square() + sigma.log() - 0.5 * z.square()).sum(1)
            loss = -(num / x.shape[0]) * (log_lik + log_ratio).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        callback()


def child(args: argparse.Namespace) -> None:
    """Train the demo VAE (``fit``, or by hand for ``--workload hand``) and print the median
    epoch time after the first, in wall and in process CPU seconds."""
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

    def stamp(*_):
        stamps.append((time.perf_counter(), time.process_time()))

    if args.workload == "hand":
        torch.manual_seed(args.seed)
        stamp()
        hand_epochs(train, vae, args.epochs, stamp)
    else:
        with pyro.validation_enabled(False):
            fit(vae.model, vae.guide, train, epochs=args.epochs, batch_size=BATCH,
                seed=args.seed, progress=False, callback=stamp)
    wall = [b[0] - a[0] for a, b in zip(stamps[:-1], stamps[1:])][-(args.epochs - 1):]
    cpu = [b[1] - a[1] for a, b in zip(stamps[:-1], stamps[1:])][-(args.epochs - 1):]
    print(json.dumps({"median_epoch_s": statistics.median(wall), "epochs_s": wall,
                      "median_epoch_cpu_s": statistics.median(cpu),
                      "threads": torch.get_num_threads()}))


def config_name(workload: str, threads: int, policy: str) -> str:
    return f"{workload}, {threads} thread(s), {policy}"


def run_child(workload: str, threads: int, policy: str, args) -> dict:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if POLICIES[policy]:
        env["OMP_WAIT_POLICY"] = POLICIES[policy]
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    argv = [sys.executable, __file__, "--child-threads", str(threads), "--epochs",
            str(args.epochs), "--seed", str(args.seed), "--workload", workload]
    output = subprocess.run(argv, check=True, capture_output=True, text=True, env=env,
                            cwd=HERE.parent).stdout
    return json.loads(output.strip().splitlines()[-1])


def main(args: argparse.Namespace) -> dict:
    configs = [("ours", t, p) for t in args.thread_counts for p in args.policies]
    configs += [("hand", t, "default") for t in args.reference_threads]
    cores = len(os.sched_getaffinity(0))
    result = {"machine": f"{platform.processor() or platform.machine()}, "
                         f"{os.cpu_count()} logical CPUs",
              "config": vars(args), "by_busy": {}}
    for busy in args.busy:
        procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                 for _ in range(busy)]
        try:
            time.sleep(1.0)
            seconds = {config_name(*config): [] for config in configs}
            cpu_seconds = {key: [] for key in seconds}
            loads = []
            for repeat in range(args.repeats):
                order = configs[repeat % len(configs):] + configs[:repeat % len(configs)]
                for workload, threads, policy in order:
                    loads.append(os.getloadavg()[0])
                    report = run_child(workload, threads, policy, args)
                    key = config_name(workload, threads, policy)
                    seconds[key].append(report["median_epoch_s"])
                    cpu_seconds[key].append(report["median_epoch_cpu_s"])
                    print(f"busy {busy}, {key}: {report['median_epoch_s']:.3f} s/epoch, "
                          f"{report['median_epoch_cpu_s']:.3f} CPU s/epoch", flush=True)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
        result["by_busy"][str(busy)] = {
            "median_epoch_s": {k: statistics.median(v) for k, v in seconds.items()},
            "median_epoch_cpu_s": {k: statistics.median(v) for k, v in cpu_seconds.items()},
            "cores_used": {k: statistics.median(c / w for c, w in zip(cpu_seconds[k], v))
                           for k, v in seconds.items()},
            "epoch_s": seconds,
            "epoch_cpu_s": cpu_seconds,
            "load_average_1min": [round(x, 2) for x in loads],
            # a one-thread process's growth at a fair share of the cores: (N + 1) / cores
            "fair_share_ratio_one_thread": max(1.0, (busy + 1) / cores),
        }
    base = result["by_busy"].get("0")
    if base:
        result["ratio_to_no_busy"] = {
            busy: {k: v / base["median_epoch_s"][k] for k, v in entry["median_epoch_s"].items()}
            for busy, entry in result["by_busy"].items()}
        result["cpu_ratio_to_no_busy"] = {
            busy: {k: v / base["median_epoch_cpu_s"][k]
                   for k, v in entry["median_epoch_cpu_s"].items()}
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
    parser.add_argument("--reference-threads", type=int, nargs="*", default=[1],
                        help="thread counts of the hand-written reference training")
    parser.add_argument("--epochs", type=int, default=6, help="per child (first not counted)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child-threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--workload", choices=["ours", "hand"], default="ours",
                        help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    parsed = parse_args()
    if parsed.child_threads:
        child(parsed)
    else:
        main(parsed)
