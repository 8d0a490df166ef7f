"""Our VAE against the architecture of Pyro's own VAE example, on binarized Fashion-MNIST.

Pyro's example (pyro-ppl ``examples/vae/vae.py``) is a 784-400-50 MLP VAE with softplus
hidden units, a Bernoulli decoder and Adam at lr 1e-3. The reference here is written from
that description as a plain ``pyro.module`` model/guide pair; ours is :class:`ppl_models.VAE`
with the same sizes trained by :func:`inference.fit`. The two train on the same statically
binarized images with the same batch size and epochs; their epochs alternate (the reference
runs one epoch inside our fit's per-epoch callback, outside our timing), so both see the same
machine load. Each seed trains both pairs; the images are binarized once (seed 0).
Pyro's validation is off for the reference's steps, as for all but the first
of ours (with it on, a step costs several times more). Reported: median seconds per epoch
and the median
ratio of back-to-back epochs, and test IWAE_5000 as mean and standard error over seeds.

    python benchmarks/vae_vs_pyro_example.py --epochs 10 --seeds 3
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from torch import nn

from inference import bound_sweep, fit
from ppl_models import load_images
from ppl_models.vae import VAE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # for scaffold
from scaffold.flags import benchmark_parser, numbers  # noqa: E402
from scaffold.runs import finish_benchmark, start_run  # noqa: E402


class ReferenceVAE(nn.Module):
    """The architecture of Pyro's VAE example: 784-400-50, softplus, Bernoulli pixels."""

    def __init__(self, latent_dim: int = 50, hidden: int = 400):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(nn.Linear(784, hidden), nn.Softplus(),
                                     nn.Linear(hidden, 2 * latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.Softplus(),
                                     nn.Linear(hidden, 784), nn.Sigmoid())

    def model(self, x: torch.Tensor) -> None:
        """``x: [batch, 1, 28, 28]`` binary."""
        pyro.module("reference_decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            probs = self.decoder(z)
            pyro.sample("x", dist.Bernoulli(probs, validate_args=False).to_event(1),
                        obs=x.flatten(-3))

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("reference_encoder", self.encoder)
        loc, log_scale = self.encoder(x.flatten(-3)).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def run_seed(args: argparse.Namespace, seed: int, train: torch.Tensor,
             test: torch.Tensor, device: torch.device) -> dict:
    """Train both pairs with one seed, epochs alternating; ``train``/``test``: [n, 1, 28, 28]."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    ours = VAE((1, 28, 28), latent_dim=50, likelihood="bernoulli", hidden=(400,))
    reference = ReferenceVAE().to(device)
    svi = SVI(reference.model, reference.guide, Adam({"lr": args.lr}), Trace_ELBO())
    generator = torch.Generator().manual_seed(seed + 1)
    reference_seconds = []

    def reference_epoch(_record):
        start = time.perf_counter()
        order = torch.randperm(train.shape[0], generator=generator).to(device)
        with pyro.validation_enabled(False):  # as fit runs every step after its first
            for begin in range(0, train.shape[0], args.batch_size):
                svi.step(train[order[begin:begin + args.batch_size]])
        reference_seconds.append(time.perf_counter() - start)

    history = fit(ours.model, ours.guide, train, epochs=args.epochs, batch_size=args.batch_size,
                  lr=args.lr, seed=seed, device=device, callback=reference_epoch)
    our_seconds = [r["seconds"] for r in history]
    bounds = {}
    for name, pair in (("ours", ours), ("pyro_example", reference)):
        table = bound_sweep(pair.model, pair.guide, test, num_samples=(1, args.k),
                            repeats=1, chunk_size=args.chunk_size, data_batch_size=50)
        bounds[name] = {"elbo": table.elbo(), f"iwae_{args.k}": table.iwae()[str(args.k)]}
    return {"seed": seed, "test_nats_per_image": bounds,
            "seconds_per_epoch": {"ours": our_seconds, "pyro_example": reference_seconds}}


def _mean_and_stderr(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else float("nan")
    return mean, spread / len(values) ** 0.5


def main(args: argparse.Namespace) -> dict:
    _, device, _ = start_run(args, exclusive=False)
    data = load_images("fashion-mnist", root=args.data_root).binarized(0)
    train = data.train.images[: args.num_train or None].to(device)
    test = data.test.images[: args.num_test].to(device)
    runs = [run_seed(args, seed, train, test, device) for seed in range(args.seeds)]
    key = f"iwae_{args.k}"
    summary = {}
    for name in ("ours", "pyro_example"):
        elbo_mean, elbo_se = _mean_and_stderr(
            [r["test_nats_per_image"][name]["elbo"] for r in runs])
        iwae_mean, iwae_se = _mean_and_stderr([r["test_nats_per_image"][name][key] for r in runs])
        seconds = [s for r in runs for s in r["seconds_per_epoch"][name]]
        summary[name] = {"elbo": elbo_mean, "elbo_stderr": elbo_se, key: iwae_mean,
                         f"{key}_stderr": iwae_se,
                         "median_seconds_per_epoch": statistics.median(seconds)}
    # Epoch e of ours and of the reference ran back to back: their ratio cancels slow drifts.
    ratios = [o / p for r in runs for o, p in zip(r["seconds_per_epoch"]["ours"],
                                                  r["seconds_per_epoch"]["pyro_example"])]
    difference = _mean_and_stderr([r["test_nats_per_image"]["ours"][key]
                                   - r["test_nats_per_image"]["pyro_example"][key]
                                   for r in runs])
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
                   f"threads, torch {torch.__version__}, pyro {pyro.__version__}, {device}",
        "config": vars(args),
        "summary": summary,
        "median_time_ratio_ours_over_pyro_example": statistics.median(ratios),
        f"{key}_ours_minus_pyro_example": {"mean": difference[0], "stderr": difference[1]},
        "runs": runs,
        "num_test": int(test.shape[0]),
    }
    out = finish_benchmark(args, result)
    print(f"{'':<14}{'s/epoch':>10}{'ELBO':>12}{f'IWAE_{args.k}':>12}{'std. error':>12}")
    for name in ("ours", "pyro_example"):
        row = summary[name]
        print(f"{name:<14}{row['median_seconds_per_epoch']:>10.3f}{row['elbo']:>12.3f}"
              f"{row[key]:>12.3f}{row[f'{key}_stderr']:>12.3f}")
    print(f"IWAE_{args.k} ours - Pyro example: {difference[0]:+.3f} +- {difference[1]:.3f} nats "
          f"over {args.seeds} seeds")
    print(f"median per-epoch time ratio ours / Pyro example: "
          f"{result['median_time_ratio_ours_over_pyro_example']:.3f}")
    print(f"written: {out}")
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, "vae_vs_pyro_example", threads=None)
    parser.add_argument("--data-root", default=None,
                        help="Fashion-MNIST IDX folder "
                             "(default: the Debian package's; `make data`)")
    numbers(parser, epochs=10, batch_size=256, lr=1e-3, num_train=0, num_test=1000, k=5000,
            chunk_size=500)
    parser.add_argument("--seeds", type=int, default=3, help="training seeds 0..seeds-1")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
