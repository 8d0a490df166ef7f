"""What one SVI step of our VAE costs against the same step written by hand in PyTorch.

One training step of :class:`ppl_models.vae.VAE` (784-400-50 MLP, softplus, Bernoulli pixels
from logits, batch 256, Adam 1e-3, 28x28 images) with ``Trace_ELBO`` (``loss="elbo"``) and
``TraceMeanField_ELBO`` (``"meanfield"``, analytic KL), taken

- ``ours``: what :func:`inference.fit` does per step (:class:`inference.svi_step.SVIStep`
  inside :class:`inference.scale_data_plate`, Pyro's validation off after the first step);
- ``pyro_svi``: stock ``pyro.infer.SVI`` with ``pyro.optim.Adam`` on the same pair;
- ``hand_eager``: the identical networks, batch, optimizer (``torch.optim.Adam``) and loss
  written as plain PyTorch (:func:`hand_written_loss`);
- ``hand_compiled``: the same with the loss and its backward through ``torch.compile``
  (noise drawn outside, so the draws match eager ones);
- ``hand_eager_fused``, ``hand_compiled_fused``: the two hand-written steps with torch's
  fused Adam kernel, the optimizer ours uses by default (:class:`inference.svi_step.Adam`):
  ``ours / hand_eager_fused`` is what the probabilistic program itself costs;
- ``ours_compiled``: ``fit(..., compile=True)``'s step,
  :class:`inference.compiled_step.CompiledSVIStep` (the same loss and gradients, tested in
  ``tests/inference/test_compiled_step.py``).

``--losses iwae dreg --num-particles K`` times the importance-weighted steps the same way:
``ours`` is :class:`inference.svi_step.SVIStep`'s weighted lean path, ``pyro_svi`` stock SVI
driving :class:`inference.IWAELoss`/:class:`inference.DReGLoss`, and the hand-written sides
:func:`hand_written_weighted_loss`.

Before timing, the script asserts that ours and the hand-written step give the same loss and
gradients on the same draws. Sides alternate in blocks of ``--steps`` steps (the order
rotating every repetition) so that load drifts hit all alike; reported are medians over
``--repeats`` blocks of the per-block ratio to ``hand_eager``.

    python benchmarks/svi_step_overhead.py  # -> benchmarks/results/svi_step_overhead.json
    python benchmarks/svi_step_overhead.py --losses iwae dreg --num-particles 5 \
        --sides hand_eager hand_eager_fused ours pyro_svi \
        --name iwae_dreg_step_k5
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import pyro
import pyro.optim
import torch
from pyro.infer import SVI
from torch.nn import functional as F

from inference.training.compiled_step import CompiledSVIStep
from inference.training.objectives import make_loss
from inference.training.svi_step import Adam, SVIStep
from inference.training import scale_data_plate
from ppl_models.vae import VAE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # for scaffold
from scaffold.flags import benchmark_parser, numbers  # noqa: E402
from scaffold.runs import finish_benchmark  # noqa: E402

LOSSES = ("elbo", "meanfield", "iwae", "dreg")
WEIGHTED = ("iwae", "dreg")
# (ours, reference) pairs reported beside the ratios to hand_eager
PAIRS = (("ours", "hand_eager_fused"), ("ours_compiled", "hand_compiled"),
         ("ours_compiled", "hand_compiled_fused"))
SIDES = ("hand_eager", "ours", "pyro_svi", "hand_compiled", "ours_compiled", "hand_eager_fused",
         "hand_compiled_fused")
HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


def hand_written_loss(vae: VAE, x: torch.Tensor, noise: torch.Tensor | None, scale: float,
                      analytic_kl: bool) -> torch.Tensor:
    """``-scale * sum_b ELBO_b`` of the Bernoulli VAE in plain PyTorch.

    Args:
        x: ``[batch, 1, 28, 28]`` binary images.
        noise: ``[batch, d]`` standard normal draws, or None to draw them here (as Pyro does:
            the same generator, the same order).
        analytic_kl: ``E_q[log p(x | z)] - KL(q || N(0, I))`` in closed form (as
            ``TraceMeanField_ELBO``) instead of ``log p(x | z) + log p(z) - log q(z | x)``.

    Returns:
        a scalar tensor with the graph to the networks' parameters.
    """
    loc, sigma = vae.encoder(x)  # [batch, d] each
    eps = torch.randn_like(loc) if noise is None else noise
    z = loc + eps * sigma
    logits = vae.decoder(z).flatten(1)  # [batch, 784]
    log_lik = -F.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="none").sum(1)
    if analytic_kl:
        kl = 0.5 * (sigma.pow(2) + loc.pow(2) - 1.0) - sigma.log()
        elbo = log_lik - kl.sum(1)
    else:
        log_prior = (-0.5 * z.pow(2) - HALF_LOG_TWO_PI).sum(1)
        log_q = (-0.5 * eps.pow(2) - sigma.log() - HALF_LOG_TWO_PI).sum(1)
        elbo = log_lik + log_prior - log_q
    return -scale * elbo.sum()


def hand_written_weighted_loss(vae: VAE, x: torch.Tensor, noise: torch.Tensor | None,
                               scale: float, num_particles: int, dreg: bool,
                               hook: bool = True) -> torch.Tensor:
    """IWAE_K (or DReG) surrogate of the Bernoulli VAE in plain PyTorch, one backward.

    ``-scale * sum_b log mean_k w_kb`` with ``w = p(x, z) / q(z | x)``, ``z = loc + sigma *
    eps``, ``eps: [K, batch, d]`` (drawn here when ``noise`` is None, as Pyro's particle plate
    draws it). With ``dreg`` the returned surrogate has Tucker et al.'s gradients: ``log q``
    with detached parameters, and ``z``'s gradient multiplied by the normalized weights (a
    tensor hook, or with ``hook=False`` the straight-through form ``w z + (1 - w) stop(z)``
    that ``torch.compile`` traces without a graph break). Its value is the negative bound
    either way; the gradient of the IWAE surrogate is the standard IWAE gradient.
    """
    loc, sigma = vae.encoder(x)  # [batch, d]
    shape = (num_particles, *loc.shape)
    eps = torch.randn(shape, dtype=loc.dtype, device=loc.device) if noise is None else noise
    z = loc + eps * sigma  # [K, batch, d]
    flat = x.flatten(1)
    if dreg:
        z_in = z
        if not hook:
            with torch.no_grad():
                w = torch.softmax(_hand_log_w(vae, flat, z, loc.detach(), sigma.detach(),
                                              None), 0)[..., None]
            z_in = w * z + (1 - w) * z.detach()
        log_w = _hand_log_w(vae, flat, z_in, loc.detach(), sigma.detach(), None)
        w = torch.softmax(log_w.detach(), 0)
        if hook and z.requires_grad:
            z.register_hook(lambda g: g * w[..., None])
        bound = torch.logsumexp(log_w.detach(), 0) - math.log(num_particles)
        surrogate = -scale * (w * log_w).sum()
        return surrogate + (-scale * bound.sum() - surrogate).detach()
    log_w = _hand_log_w(vae, flat, z, loc, sigma, eps)
    return -scale * (torch.logsumexp(log_w, 0) - math.log(num_particles)).sum()


def _hand_log_w(vae, flat, z, loc, sigma, eps):
    """``[K, batch]`` log weights; ``log q`` from ``eps`` when given, else from ``z``."""
    logits = vae.decoder(z).flatten(2)  # [K, batch, 784]
    log_lik = (flat * logits - F.softplus(logits)).sum(-1)
    log_prior = (-0.5 * z.pow(2) - HALF_LOG_TWO_PI).sum(-1)
    if eps is None:
        eps = (z - loc) / sigma
    log_q = (-0.5 * eps.pow(2) - sigma.log() - HALF_LOG_TWO_PI).sum(-1)
    return log_lik + log_prior - log_q


def hand_loss(vae, x, noise, scale, loss, num_particles, hook=True):
    """The hand-written loss of ``loss`` (see :func:`hand_written_loss` and
    :func:`hand_written_weighted_loss`)."""
    if loss in WEIGHTED:
        return hand_written_weighted_loss(vae, x, noise, scale, num_particles, loss == "dreg",
                                          hook)
    return hand_written_loss(vae, x, noise, scale, analytic_kl=loss == "meanfield")


def make_vae(hidden: int, latent_dim: int, seed: int) -> VAE:
    torch.manual_seed(seed)
    return VAE((1, 28, 28), latent_dim=latent_dim, likelihood="bernoulli", hidden=(hidden,))


def grads_of(vae: VAE) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            for p in vae.parameters()]


def check_same_loss_and_grads(vae: VAE, x: torch.Tensor, loss: str, scale: float,
                              seed: int, num_particles: int = 1) -> dict:
    """Ours (lean path) against the hand-written loss and the reference objective (Pyro's, or
    :class:`inference.IWAELoss`/:class:`inference.DReGLoss` traced by Pyro) on the same draws.

    Returns the largest relative differences; raises ``AssertionError`` beyond float32
    rounding (relative 1e-4 of the loss, 1e-3 of each gradient's largest entry).
    """
    k = num_particles if loss in WEIGHTED else 1
    ours_vae, hand_vae, pyro_vae = (copy.deepcopy(vae) for _ in range(3))
    step = SVIStep(ours_vae.model, ours_vae.guide, loss=loss, num_particles=k)
    store = pyro.get_param_store()
    # Copies of one PyroModule share param-store names: give each its own store.
    with scale_data_plate(scale), pyro.validation_enabled(False):
        with store.scope():
            step.loss_and_grads(ours_vae.model, ours_vae.guide, x)  # picks the lean path
            assert step.lean, "the VAE should take the lean path"
            ours_vae.zero_grad(set_to_none=True)
            pyro.set_rng_seed(seed)
            ours_loss = step.loss_and_grads(ours_vae.model, ours_vae.guide, x)
        with store.scope():
            pyro.set_rng_seed(seed)
            pyro_loss = make_loss(loss, k).loss_and_grads(pyro_vae.model, pyro_vae.guide, x)
    pyro.set_rng_seed(seed)
    hand = hand_loss(hand_vae, x, None, scale, loss, k)
    hand.backward()
    report = {"loss_ours": ours_loss, "loss_hand": hand.item(), "loss_pyro": float(pyro_loss)}
    report["max_rel_loss_diff"] = max(abs(ours_loss - hand.item()),
                                      abs(ours_loss - float(pyro_loss))) / abs(hand.item())
    worst = 0.0
    for other in (hand_vae, pyro_vae):
        for g_ours, g_other in zip(grads_of(ours_vae), grads_of(other)):
            worst = max(worst, float((g_ours - g_other).abs().max() / g_other.abs().max()))
    report["max_rel_grad_diff"] = worst
    assert report["max_rel_loss_diff"] < 1e-4, report
    assert worst < 1e-3, report
    return report


class Side:
    """One contender: its own copy of the networks, its optimizer, and a ``step(x)``."""

    def __init__(self, name: str, vae: VAE, loss: str, scale: float, lr: float,
                 num_particles: int = 1):
        self.name, self.vae, self.scale = name, copy.deepcopy(vae), scale
        self.store_state = None  # this side's own param store (pyro's ParamStoreDict.scope)
        k = num_particles if loss in WEIGHTED else 1
        if name == "ours":
            self.stepper = SVIStep(self.vae.model, self.vae.guide, Adam(lr), loss=loss,
                                   num_particles=k)
            self.step = self._ours
        elif name == "ours_compiled":
            self.stepper = CompiledSVIStep(self.vae.model, self.vae.guide, Adam(lr), loss=loss,
                                           **({"num_particles": k} if k > 1 else {}))
            self.step = self._ours
        elif name == "pyro_svi":
            objective = make_loss(loss, k)
            extra = ({"loss": objective.loss, "loss_and_grads": objective.loss_and_grads}
                     if loss in WEIGHTED else {"loss": objective})
            self.svi = SVI(self.vae.model, self.vae.guide, pyro.optim.Adam({"lr": lr}), **extra)
            self.step = self._pyro
        else:
            self.optimizer = torch.optim.Adam(self.vae.parameters(), lr=lr,
                                              fused=name.endswith("_fused") or None)
            if name.startswith("hand_eager"):
                self.loss_fn = lambda x: hand_loss(self.vae, x, None, scale, loss, k)
            else:
                compiled = torch.compile(
                    lambda x, eps: hand_loss(self.vae, x, eps, scale, loss, k, hook=False))
                latent = self.vae.latent_dim
                shape = (k,) if loss in WEIGHTED else ()
                self.loss_fn = lambda x: compiled(
                    x, torch.randn(*shape, x.shape[0], latent, dtype=x.dtype, device=x.device))
            self.step = self._hand

    def _ours(self, x):
        with scale_data_plate(self.scale), pyro.validation_enabled(False):
            return self.stepper.step(x)

    def _pyro(self, x):
        with scale_data_plate(self.scale), pyro.validation_enabled(False):
            return self.svi.step(x)

    def _hand(self, x):
        loss = self.loss_fn(x)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()


def load_batches(args) -> torch.Tensor:
    """``[num_batches, batch, 1, 28, 28]`` binary images (Fashion-MNIST or random)."""
    count = args.batch_size * args.num_batches
    if args.data == "random":
        generator = torch.Generator().manual_seed(args.seed)
        images = (torch.rand(count, 1, 28, 28, generator=generator) < 0.3).float()
    else:
        from ppl_models import load_images

        images = load_images("fashion-mnist", root=args.data_root).binarized(0).train.images
        images = images[:count]
    return images.reshape(args.num_batches, args.batch_size, 1, 28, 28)


def time_sides(sides: list[Side], batches: torch.Tensor, steps: int, repeats: int) -> dict:
    """Seconds per step of every side in each of ``repeats`` rotating blocks."""
    seconds = {side.name: [] for side in sides}
    store = pyro.get_param_store()
    for side in sides:  # warm-up: first-step validation, compilation, allocator
        with store.scope(side.store_state) as side.store_state:
            for i in range(3):
                side.step(batches[i % len(batches)])
    for repeat in range(repeats):
        order = sides[repeat % len(sides):] + sides[:repeat % len(sides)]
        for side in order:
            with store.scope(side.store_state) as side.store_state:
                start = time.perf_counter()
                for i in range(steps):
                    side.step(batches[i % len(batches)])
                seconds[side.name].append((time.perf_counter() - start) / steps)
    return seconds


def main(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    batches = load_batches(args)
    scale = args.num_data / args.batch_size
    vae = make_vae(args.hidden, args.latent_dim, args.seed)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} thread(s), "
                   f"torch {torch.__version__}, pyro {pyro.__version__}, cpu",
        "config": vars(args), "checks": {}, "seconds_per_step": {},
        "median_ratio_to_hand_eager": {},
    }
    for loss in args.losses:
        result["checks"][loss] = check_same_loss_and_grads(vae, batches[0], loss, scale,
                                                           args.seed, args.num_particles)
        sides = [Side(name, vae, loss, scale, args.lr, args.num_particles)
                 for name in args.sides]
        seconds = time_sides(sides, batches, args.steps, args.repeats)
        result["seconds_per_step"][loss] = seconds
        result["median_ratio_to_hand_eager"][loss] = {
            name: statistics.median(s / h for s, h in zip(values, seconds["hand_eager"]))
            for name, values in seconds.items()
        }
    result["median_paired_ratios"] = {
        loss: {f"{a} / {b}": statistics.median(x / y for x, y in zip(
            result["seconds_per_step"][loss][a], result["seconds_per_step"][loss][b]))
            for a, b in PAIRS if {a, b} <= set(args.sides)}
        for loss in args.losses}
    out = finish_benchmark(args, result)
    print(f"{'loss':<11}{'side':<21}{'ms/step (median)':>18}{'ratio to hand_eager':>22}")
    for loss in args.losses:
        for name in args.sides:
            ms = 1000 * statistics.median(result["seconds_per_step"][loss][name])
            ratio = result["median_ratio_to_hand_eager"][loss][name]
            print(f"{loss:<11}{name:<21}{ms:>18.2f}{ratio:>22.3f}")
        for pair, ratio in result["median_paired_ratios"][loss].items():
            print(f"{loss:<11}{pair:<40}{ratio:>15.3f}")
        check = result["checks"][loss]
        print(f"{loss:<11}same loss and gradients: rel. loss diff "
              f"{check['max_rel_loss_diff']:.1e}, rel. grad diff {check['max_rel_grad_diff']:.1e}")
    print(f"written: {out}")
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, "svi_step_overhead", device=False)
    parser.add_argument("--data", choices=["fashion-mnist", "random"], default="fashion-mnist")
    parser.add_argument("--data-root", default=None, help="Fashion-MNIST IDX folder")
    parser.add_argument("--losses", nargs="+", choices=LOSSES, default=["elbo", "meanfield"])
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    numbers(parser, hidden=400, latent_dim=50, batch_size=256, num_batches=8)
    parser.add_argument("--num-data", type=int, default=60000,
                        help="training-set size N: the data plate is scaled by N / batch")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--num-particles", type=int, default=5,
                        help="K of the 'iwae' and 'dreg' losses")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=15, help="blocks per side")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
