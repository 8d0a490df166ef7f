"""Data-parallel SVI on CPU: 2 processes x 1 thread against 1 process x 2 threads.

Trains the example's VAE (digits, 16 latents, MLP 200) with ``fit`` in both layouts, the
same seed, global batch and epochs, alternating the two launches over several repetitions
(seed = repetition). Reports the median ratio of seconds per epoch (the first epoch, with its
start-up and validation, left out), the ratio of CPU seconds per epoch summed over the
processes (fairer than wall time on a machine shared with other jobs), and the final
training loss and test ELBO of each layout:
data-parallel training follows the same minibatches and differs only in the random draws, so
the losses must agree within the seed-to-seed spread.

    python benchmarks/distributed_scaling.py  # writes benchmarks/results/distributed_scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # for scaffold
from scaffold.flags import benchmark_parser  # noqa: E402
from scaffold.runs import finish_benchmark  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    """One training run; under torchrun every rank trains and rank 0 writes ``args.result``."""
    import pyro
    import torch

    from inference.evidence.estimators import elbo
    from inference import fit
    from ppl_models.data import load_images
    from ppl_models.vae import VAE

    torch.set_num_threads(args.threads)
    distributed = "WORLD_SIZE" in os.environ
    data = load_images("digits").binarized(0)
    pyro.clear_param_store()
    vae = VAE((1, 8, 8), 16, "bernoulli", hidden=(200,))
    cpu_start = time.process_time()
    history = fit(vae.model, vae.guide, data.train.images, epochs=args.epochs,
                  batch_size=args.batch_size, lr=1e-3, seed=args.seed, device="cpu",
                  progress=False, distributed=distributed)
    cpu_seconds = torch.tensor(time.process_time() - cpu_start, dtype=torch.float64)
    if distributed:
        torch.distributed.all_reduce(cpu_seconds)  # CPU time of all processes together
    if distributed and torch.distributed.get_rank() != 0:
        torch.distributed.destroy_process_group()
        return
    pyro.set_rng_seed(args.seed)
    test_elbo = float(elbo(vae.model, vae.guide, data.test.images).mean())
    Path(args.result).write_text(json.dumps({"history": history, "test_elbo": test_elbo,
                                               "cpu_seconds": float(cpu_seconds)}))
    if distributed:
        torch.distributed.destroy_process_group()


def launch(layout: str, seed: int, args: argparse.Namespace, result: Path) -> dict:
    common = [str(Path(__file__).resolve()), "--worker", "--result", str(result),
              "--seed", str(seed), "--epochs", str(args.epochs),
              "--batch-size", str(args.batch_size)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if layout == "2 processes x 1 thread":
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                   "--master-addr", "127.0.0.1", "--master-port", str(port), *common,
                   "--threads", "1"]
        env["OMP_NUM_THREADS"] = "1"
    else:
        command = [sys.executable, *common, "--threads", "2"]
        env["OMP_NUM_THREADS"] = "2"
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{layout} failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
    return json.loads(result.read_text())


def main(args: argparse.Namespace) -> dict:
    layouts = ("1 process x 2 threads", "2 processes x 1 thread")
    runs = {layout: [] for layout in layouts}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            order = layouts if repeat % 2 == 0 else layouts[::-1]  # alternate who goes first
            for layout in order:
                run = launch(layout, repeat, args, Path(folder) / "result.json")
                epoch_seconds = [r["seconds"] for r in run["history"][1:]]
                runs[layout].append({"seed": repeat,
                                     "seconds_per_epoch": statistics.median(epoch_seconds),
                                     "cpu_seconds_per_epoch": run["cpu_seconds"] / args.epochs,
                                     "final_train_loss": run["history"][-1]["train_loss"],
                                     "test_elbo": run["test_elbo"]})
                print(f"seed {repeat} {layout}: {runs[layout][-1]}")
    single, double = (runs[layout] for layout in layouts)
    ratios = [d["seconds_per_epoch"] / s["seconds_per_epoch"] for s, d in zip(single, double)]
    cpu_ratios = [d["cpu_seconds_per_epoch"] / s["cpu_seconds_per_epoch"]
                  for s, d in zip(single, double)]
    summary = {layout: {key: (statistics.mean(r[key] for r in rows),
                              statistics.stdev(r[key] for r in rows) if len(rows) > 1 else 0.0)
                        for key in ("seconds_per_epoch", "cpu_seconds_per_epoch",
                                    "final_train_loss", "test_elbo")}
               for layout, rows in runs.items()}
    result = {"config": vars(args), "runs": runs, "summary (mean, std over seeds)": summary,
              "median_time_ratio_2proc_over_1proc": statistics.median(ratios),
              "median_cpu_time_ratio_2proc_over_1proc": statistics.median(cpu_ratios),
              "machine": f"{os.cpu_count()} CPU cores, shared with other jobs",
              "units": "seconds per epoch; losses in nats per image (negative ELBO for "
                       "training, ELBO for the 300 test digits)"}
    print(f"written: {finish_benchmark(args, result)}")
    print(f"{'layout':<24}{'s/epoch':>9}{'cpu s/epoch':>12}{'train loss':>18}{'test ELBO':>18}")
    for layout, row in summary.items():
        (wall, _), (cpu, _), (loss, loss_sd), (test, test_sd) = row.values()
        print(f"{layout:<24}{wall:>9.3f}{cpu:>12.3f}{loss:>11.3f} +- {loss_sd:.3f}"
              f"{test:>11.3f} +- {test_sd:.3f}")
    print(f"median ratios, 2 processes / 1 process: wall time per epoch "
          f"{result['median_time_ratio_2proc_over_1proc']:.3f}, CPU time per epoch "
          f"{result['median_cpu_time_ratio_2proc_over_1proc']:.3f}")
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, "distributed_scaling", device=False)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64, help="global minibatch")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    worker(arguments) if arguments.worker else main(arguments)
