"""Cold and warm compile time of ``fit(compile=True)``'s step, across processes.

Each measurement is a fresh Python process that builds the 784-400-50 VAE and times its
first :class:`inference.CompiledSVIStep` step (tracing with ``make_fx`` plus inductor's
compilation) and the median of the next steps. Inductor keeps compiled kernels and whole
FX graphs on disk (its FX graph cache, on by default in torch 2.x) under
``TORCHINDUCTOR_CACHE_DIR`` (default: ``/tmp/torchinductor_<user>``): the first process with
an empty folder pays the full compilation (cold), later processes with the same folder load
it (warm). The script points ``TORCHINDUCTOR_CACHE_DIR`` at a fresh folder, runs ``--runs``
processes in a row per loss, and reports the first-step seconds of each.

    python benchmarks/compile_time.py  # -> benchmarks/results/compile_time.json

To keep the warm case across reboots, set ``TORCHINDUCTOR_CACHE_DIR`` to a persistent folder
(e.g. ``~/.cache/torchinductor``) in the environment of training runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # for scaffold
from scaffold.flags import benchmark_parser  # noqa: E402
from scaffold.runs import finish_benchmark  # noqa: E402

HERE = Path(__file__).resolve().parent


def child(args) -> None:
    import pyro
    import torch

    torch.set_num_threads(args.threads)
    from inference import CompiledSVIStep, scale_data_plate
    from ppl_models.vae import VAE

    torch.manual_seed(0)
    vae = VAE((1, 28, 28), latent_dim=50, hidden=(400,))
    x = (torch.rand(args.batch_size, 1, 28, 28) < 0.3).float()
    k = args.num_particles if args.loss in ("iwae", "dreg") else 1
    step = CompiledSVIStep(vae.model, vae.guide, loss=args.loss, num_particles=k)
    times = []
    with scale_data_plate(60000 / args.batch_size), pyro.validation_enabled(False):
        for _ in range(args.steps):
            start = time.perf_counter()
            step.step(x)
            times.append(time.perf_counter() - start)
    print(json.dumps({"first_step_s": times[0], "step_s": statistics.median(times[1:])}))


def main(args) -> dict:
    result = {"config": vars(args), "load_average": [], "losses": {}}
    with tempfile.TemporaryDirectory(prefix="inductor-cache-") as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache,
               "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
        for loss in args.losses:
            runs = []
            for _ in range(args.runs):
                result["load_average"].append(round(os.getloadavg()[0], 2))
                start = time.perf_counter()
                out = subprocess.run([sys.executable, __file__, "--child", "--loss", loss,
                                      "--threads", str(args.threads),
                                      "--num-particles", str(args.num_particles),
                                      "--batch-size", str(args.batch_size),
                                      "--steps", str(args.steps)],
                                     check=True, capture_output=True, text=True, env=env).stdout
                report = json.loads(out.strip().splitlines()[-1])
                report["process_s"] = time.perf_counter() - start
                runs.append(report)
                print(f"{loss}: first step {report['first_step_s']:.1f} s, then "
                      f"{1000 * report['step_s']:.1f} ms/step "
                      f"(process {report['process_s']:.1f} s)", flush=True)
            result["losses"][loss] = {"cold_first_step_s": runs[0]["first_step_s"],
                                      "warm_first_step_s": [r["first_step_s"] for r in runs[1:]],
                                      "runs": runs}
    out = finish_benchmark(args, result)
    print(f"written: {out}")
    return result


def parse_args(argv=None):
    parser = benchmark_parser(__doc__, "compile_time", device=False)
    parser.add_argument("--losses", nargs="+", default=["elbo", "iwae"],
                        choices=["elbo", "meanfield", "iwae", "dreg"])
    parser.add_argument("--runs", type=int, default=2, help="processes per loss (1st cold)")
    parser.add_argument("--num-particles", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--loss", default="elbo", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    parsed = parse_args()
    child(parsed) if parsed.child else main(parsed)
