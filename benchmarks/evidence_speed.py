"""IWAE_K evidence estimates of the 784-400-50 VAE: ours against Pyro and plain PyTorch.

Three ways to compute ``log (1/K) sum_k p(x, z_k) / q(z_k | x)`` with K = ``--k`` (5000)
particles for binarized Fashion-MNIST test images (Burda et al. 2015):

- ``ours``: :func:`inference.iwae_bound`, many images per call, ``chunk_size`` particles per
  vectorized pass;
- ``pyro_renyi``: ``pyro.infer.RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True)``,
  one image per call (its log-mean-exp runs over the whole batch, so only a single image
  gives the per-image bound), on the same pair;
- ``pyro_renyi_probs``: the same, with the decoder's output scored as Pyro's VAE example
  does, ``Bernoulli(probs=sigmoid(logits))`` (the same model; :class:`ProbsPair`);
- ``plain``: the same quantity as batched PyTorch (:func:`plain_iwae`), chunked like ours.

Sides alternate per repetition (rotating order); reported are median seconds per image and
the median per-repetition ratio to ``pyro_renyi``, plus the three estimates' mean (they
agree within Monte Carlo error). Peak memory of one call per side is measured in a fresh
process each (growth of the resident-set high-water mark on CPU,
``torch.cuda.max_memory_allocated`` on CUDA).
The network is untrained (timing does not depend on the weights).

    python benchmarks/evidence_speed.py  # -> benchmarks/results/evidence_speed.json
"""

from __future__ import annotations

import argparse
import math
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import RenyiELBO
from torch.nn import functional as F

from inference import iwae_bound, resolve_device
from ppl_models.vae import VAE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # for scaffold
from scaffold.flags import benchmark_parser, numbers  # noqa: E402
from scaffold.runs import finish_benchmark  # noqa: E402

SIDES = ("ours", "pyro_renyi", "pyro_renyi_probs", "plain")
HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


@torch.no_grad()
def plain_iwae(vae: VAE, x: torch.Tensor, num_samples: int, chunk_size: int) -> torch.Tensor:
    """IWAE_K per image in plain PyTorch: ``x: [batch, 1, 28, 28]`` binary -> ``[batch]`` nats."""
    loc, sigma = vae.encoder(x)  # [batch, d]
    flat = x.flatten(1)  # [batch, 784]
    log_w = []
    for start in range(0, num_samples, chunk_size):
        size = min(chunk_size, num_samples - start)
        eps = torch.randn(size, *loc.shape, dtype=loc.dtype, device=loc.device)
        z = loc + eps * sigma  # [chunk, batch, d]
        logits = vae.decoder(z).flatten(2)  # [chunk, batch, 784]
        log_lik = -F.binary_cross_entropy_with_logits(
            logits, flat.expand_as(logits), reduction="none").sum(-1)
        log_prior = (-0.5 * z.pow(2) - HALF_LOG_TWO_PI).sum(-1)
        log_q = (-0.5 * eps.pow(2) - sigma.log() - HALF_LOG_TWO_PI).sum(-1)
        log_w.append(log_lik + log_prior - log_q)
    log_w = torch.cat(log_w)  # [K, batch]
    return torch.logsumexp(log_w, 0) - math.log(num_samples)


class ProbsPair:
    """Our VAE's networks with pixels scored as in Pyro's VAE example: ``Bernoulli(probs)``."""

    def __init__(self, vae: VAE):
        self.vae = vae

    def model(self, x: torch.Tensor) -> None:
        """``x: [batch, 1, 28, 28]`` binary."""
        pyro.module("decoder", self.vae.decoder)
        prior = dist.Normal(x.new_zeros(self.vae.latent_dim), 1.0).to_event(1)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", prior)
            probs = torch.sigmoid(self.vae.decoder(z).flatten(-4))  # [..., batch, 784]
            pyro.sample("x", dist.Bernoulli(probs).to_event(1), obs=x.flatten(-3))

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("encoder", self.vae.encoder)
        loc, sigma = self.vae.encoder(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, sigma).to_event(1))


def pyro_renyi_iwae(vae, x: torch.Tensor, num_samples: int) -> torch.Tensor:
    """RenyiELBO(alpha=0) with K vectorized particles, one image per call -> ``[batch]``."""
    renyi = RenyiELBO(alpha=0.0, num_particles=num_samples, vectorize_particles=True,
                      max_plate_nesting=1)
    with torch.no_grad():
        return torch.tensor([-renyi.loss(vae.model, vae.guide, image[None]) for image in x],
                            dtype=torch.float64)


def run_side(side: str, vae: VAE, x: torch.Tensor, args) -> torch.Tensor:
    """IWAE_K of every image in ``x: [n, 1, 28, 28]``, ``images_per_call`` at a time."""
    if side == "pyro_renyi":
        return pyro_renyi_iwae(vae, x, args.k)
    if side == "pyro_renyi_probs":
        return pyro_renyi_iwae(ProbsPair(vae), x, args.k)
    out = []
    for start in range(0, x.shape[0], args.images_per_call):
        batch = x[start:start + args.images_per_call]
        if side == "ours":
            out.append(iwae_bound(vae.model, vae.guide, batch, num_samples=args.k,
                                  chunk_size=args.chunk_size))
        else:
            out.append(plain_iwae(vae, batch, args.k, args.chunk_size))
    return torch.cat(out).cpu()


def setup(args):
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    vae = VAE((1, 28, 28), latent_dim=50, likelihood="bernoulli", hidden=(400,)).to(device)
    if args.data == "random":
        generator = torch.Generator().manual_seed(args.seed)
        x = (torch.rand(args.num_images, 1, 28, 28, generator=generator) < 0.3).float()
    else:
        from ppl_models import load_images

        x = load_images("fashion-mnist", root=args.data_root).binarized(0).test.images
        x = x[:args.num_images]
    return vae, x.to(device), device


def peak_memory_mib(side: str, args) -> float:
    """Peak memory of one call of ``side`` on ``images_per_call`` images, in a fresh process."""
    argv = [sys.executable, __file__, "--memory-of", side]
    for key, value in vars(args).items():
        if key not in ("memory_of", "out") and value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    output = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return float(output.strip().splitlines()[-1])


def _peak_rss_kib() -> int:
    """This process's resident-set high-water mark in KiB.

    ``VmHWM`` belongs to the address space the process got at ``exec``; ``ru_maxrss`` (the
    fallback off Linux) also keeps the parent's peak from before the ``fork``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure_memory(args) -> None:
    """Print the memory growth (MiB) of one call of ``args.memory_of`` (child process)."""
    args.num_images, args.data = args.images_per_call, "random"  # shapes, not values, matter
    vae, x, device = setup(args)
    pyro.set_rng_seed(args.seed)
    with pyro.validation_enabled(False):
        # warm-up (allocator, lazy imports) at a small K: at full K, Pyro's one-image warm-up
        # would already reach the peak of the measured call
        run_side(args.memory_of, vae, x[:1], argparse.Namespace(**{**vars(args), "k": 10}))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        else:
            base = _peak_rss_kib()
        run_side(args.memory_of, vae, x, args)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
    else:
        peak = (_peak_rss_kib() - base) / 1024
    print(peak)


def main(args: argparse.Namespace) -> dict:
    vae, x, device = setup(args)
    seconds = {side: [] for side in SIDES}
    estimates = {}
    with pyro.validation_enabled(False):
        for side in SIDES:  # warm-up
            run_side(side, vae, x[:2], args)
        for repeat in range(args.repeats):
            order = SIDES[repeat % len(SIDES):] + SIDES[:repeat % len(SIDES)]
            for side in order:
                pyro.set_rng_seed(args.seed + repeat)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                values = run_side(side, vae, x, args)
                seconds[side].append((time.perf_counter() - start) / x.shape[0])
                estimates.setdefault(side, []).append(float(values.mean()))
    ratios = {side: statistics.median(s / p for s, p in zip(seconds[side], seconds["pyro_renyi"]))
              for side in SIDES}
    memory = {side: peak_memory_mib(side, args) for side in SIDES} if args.memory else {}
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} thread(s), "
                   f"torch {torch.__version__}, pyro {pyro.__version__}, {device}",
        "config": vars(args),
        "median_seconds_per_image": {s: statistics.median(v) for s, v in seconds.items()},
        "median_ratio_to_pyro_renyi": ratios,
        "mean_iwae_nats": {s: statistics.fmean(v) for s, v in estimates.items()},
        "peak_memory_mib_one_call": memory,
        "seconds_per_image": seconds,
    }
    out = finish_benchmark(args, result)
    print(f"K={args.k}, {args.images_per_call} images per call (Pyro: 1), chunk {args.chunk_size}")
    print(f"{'side':<18}{'s/image':>10}{'ratio to pyro':>15}{'IWAE (nats)':>13}{'peak MiB':>10}")
    for side in SIDES:
        mem = memory.get(side, float("nan"))
        print(f"{side:<18}{result['median_seconds_per_image'][side]:>10.4f}{ratios[side]:>15.3f}"
              f"{result['mean_iwae_nats'][side]:>13.2f}{mem:>10.0f}")
    print(f"written: {out}")
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, "evidence_speed")
    parser.add_argument("--data", choices=["fashion-mnist", "random"], default="fashion-mnist")
    parser.add_argument("--data-root", default=None, help="Fashion-MNIST IDX folder")
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--num-images", type=int, default=10,
                        help="images per timed block (blocks alternate between the sides)")
    numbers(parser, images_per_call=10, chunk_size=250, repeats=15)
    parser.add_argument("--memory", type=int, default=1, help="1: measure peak memory")
    parser.add_argument("--memory-of", choices=SIDES, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    parsed = parse_args()
    if parsed.memory_of:
        measure_memory(parsed)
    else:
        main(parsed)
