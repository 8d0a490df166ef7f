"""Training steps and evidence estimates of one VAE: ours, hand-written torch, NumPyro, pythae.

The same VAE on every side: 784-400-50 MLPs with softplus, the encoder giving ``loc`` and
``softplus(.) + 1e-5`` scales, Bernoulli pixels from logits, batch 256, Adam 1e-3, data plate
scaled by 60000/256 (pythae's losses are batch means; Adam is insensitive to the scale).
Objectives (keys of the output):

- ``"elbo"``: one-sample ELBO (Pyro's ``Trace_ELBO``; NumPyro's ``Trace_ELBO``);
- ``"meanfield"``: ELBO with the KL in closed form (``TraceMeanField_ELBO``; pythae's ``VAE``);
- ``"iwae"``, ``"dreg"``: per-datapoint IWAE_K, K = ``--num-particles`` (5), with the
  standard and the doubly reparameterized gradient (pythae's ``IWAE`` for the first);
- ``"evidence"``: IWAE_K with K = ``--evidence-k`` (5000) of ``--images`` test images in
  chunks of ``--chunk-size`` (250) particles, seconds per image.

Sides: ``hand_eager`` (plain PyTorch eager, torch's default Adam: the reference, ratio 1),
``ours`` (:class:`inference.SVIStep` as ``fit`` runs it; ``iwae_bound`` for the evidence),
``ours_compiled`` (:class:`inference.CompiledSVIStep`; ``iwae_bound(..., compile=True)`` for
the evidence), ``numpyro`` (JAX on the CPU; ``SVI.update`` under ``jax.jit`` for the ELBOs, a
jitted step of a user's per-datapoint IWAE/DReG written with ``numpyro.handlers`` and ``vmap``
over particles, and that estimator jitted per chunk for the evidence) and ``pythae`` (its
models' ``forward`` loss in a manual training loop; ``get_nll`` for the evidence). The peers
come from the optional extra ``pip install -e '.[peers]'``; an absent peer is skipped with a
message.

All sides run in this one process on the same ``--threads`` CPU cores: the process is pinned
to that many cores (``os.sched_setaffinity``) before anything starts a thread, torch uses as
many intra-op threads, and XLA is asked for as many (``--xla_cpu_multi_thread_eigen``, set
before JAX is imported). The pinning is what makes the count hold: XLA's CPU runtime runs
its own thread pool whatever the flags say (measured: 1.7 cores busy for a "one-thread"
jitted matmul, November 2026), so without it NumPyro had both cores against torch's one.
With ``--retain-freed-memory`` glibc keeps freed memory for the whole process
(:func:`scaffold.memory.retain_freed_memory`), so no side pays page faults that another's
allocation order happens to avoid. Sides alternate
in blocks of ``--steps`` steps, the order rotating every repetition; each side's number is the
median over ``--repeats`` blocks of its time divided by ``hand_eager``'s in the same
repetition. Every step waits for its result (``.item()``, ``block_until_ready``).

    python benchmarks/peers.py                 # -> benchmarks/results/peers.json (1 thread)
    python benchmarks/peers.py --threads 2 --name peers_2threads
    python benchmarks/peers.py --quick         # tiny sizes, a smoke run (seconds)
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # for scaffold
from scaffold.flags import benchmark_parser  # noqa: E402
from scaffold.memory import retain_freed_memory  # noqa: E402
from scaffold.runs import finish_benchmark  # noqa: E402

SIDES = ("hand_eager", "ours", "ours_compiled", "numpyro", "pythae")
OBJECTIVES = ("elbo", "meanfield", "iwae", "dreg", "evidence")
HERE = Path(__file__).resolve().parent


def _load(name: str):
    """A sibling benchmark script as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- NumPyro side
def numpyro_sides(args, images):
    """``{objective: step()}`` for NumPyro, or raises ImportError when it is absent."""
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as ndist
    from numpyro import handlers
    from numpyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
    from numpyro.optim import Adam as NAdam

    jax.config.update("jax_platform_name", "cpu")
    d, hidden, pixels = args.latent_dim, args.hidden, images.shape[-1]
    scale = args.num_data / args.batch_size
    key = jax.random.PRNGKey(args.seed)

    def linear(key, n_in, n_out):
        bound = 1 / math.sqrt(n_in)  # torch's nn.Linear initialisation
        k1, k2 = jax.random.split(key)
        return (jax.random.uniform(k1, (n_in, n_out), minval=-bound, maxval=bound),
                jax.random.uniform(k2, (n_out,), minval=-bound, maxval=bound))

    keys = jax.random.split(key, 4)
    init = {}
    for name, k, (n_in, n_out) in (("enc1", keys[0], (pixels, hidden)),
                                   ("enc2", keys[1], (hidden, 2 * d)),
                                   ("dec1", keys[2], (d, hidden)),
                                   ("dec2", keys[3], (hidden, pixels))):
        init[f"{name}_w"], init[f"{name}_b"] = linear(k, n_in, n_out)

    def net(p, prefix, h):
        h = jax.nn.softplus(h @ p[f"{prefix}1_w"] + p[f"{prefix}1_b"])
        return h @ p[f"{prefix}2_w"] + p[f"{prefix}2_b"]

    def params_of(prefix):
        return {k: numpyro.param(k, v) for k, v in init.items() if k.startswith(prefix)}

    def model(x):
        p = params_of("dec")
        with numpyro.plate("data", x.shape[0]), handlers.scale(scale=scale):
            z = numpyro.sample("z", ndist.Normal(jnp.zeros(d), 1.0).to_event(1))
            numpyro.sample("x", ndist.Bernoulli(logits=net(p, "dec", z)).to_event(1), obs=x)

    def guide(x):
        p = params_of("enc")
        raw = net(p, "enc", x)
        loc, sigma = raw[..., :d], jax.nn.softplus(raw[..., d:]) + 1e-5
        with numpyro.plate("data", x.shape[0]), handlers.scale(scale=scale):
            numpyro.sample("z", ndist.Normal(loc, sigma).to_event(1))

    batch = jnp.asarray(images[:args.batch_size])
    steps = {}
    for name, elbo in (("elbo", Trace_ELBO()), ("meanfield", TraceMeanField_ELBO())):
        svi = SVI(model, guide, NAdam(args.lr), elbo)
        state = {"s": svi.init(jax.random.PRNGKey(args.seed), batch)}
        update = jax.jit(svi.update)

        def step(svi_state=state, update=update):
            svi_state["s"], loss = update(svi_state["s"], batch)
            return float(loss.block_until_ready())

        steps[name] = step

    def log_weights(p, key, x, fixed_guide=None):
        """``[B]`` log p(x, z) - log q(z | x) for one particle (numpyro handlers)."""
        seeded = handlers.seed(handlers.substitute(guide, data=p), key)
        guide_trace = handlers.trace(seeded).get_trace(x)
        z = guide_trace["z"]["value"]
        model_trace = handlers.trace(handlers.substitute(model, data={**p, "z": z})).get_trace(x)
        log_p = sum(site["fn"].log_prob(site["value"]) for site in model_trace.values()
                    if site["type"] == "sample")
        q = guide_trace["z"]["fn"] if fixed_guide is None else fixed_guide(guide_trace["z"]["fn"])
        return log_p - q.log_prob(z)

    def particles(p, key, x, k, fixed_guide=None):
        return jax.vmap(lambda kk: log_weights(p, kk, x, fixed_guide))(jax.random.split(key, k))

    def iwae_loss(p, key, x, k):
        log_w = particles(p, key, x, k)
        return -scale * (jax.scipy.special.logsumexp(log_w, 0) - math.log(k)).sum()

    def stop(fn):
        base = fn.base_dist
        return ndist.Normal(jax.lax.stop_gradient(base.loc),
                            jax.lax.stop_gradient(base.scale)).to_event(1)

    def dreg_loss(p, key, x, k):
        # model parameters: IWAE gradient; guide parameters: sum w~^2 (d log w / dz)(dz/dphi)
        model_p = {n: (v if n.startswith("dec") else jax.lax.stop_gradient(v))
                   for n, v in p.items()}
        guide_p = {n: (v if n.startswith("enc") else jax.lax.stop_gradient(v))
                   for n, v in p.items()}
        log_w = particles(model_p, key, x, k)
        w = jax.lax.stop_gradient(jax.nn.softmax(log_w, 0))
        log_w_fixed = particles(guide_p, key, x, k, fixed_guide=stop)
        return -scale * ((w * log_w).sum() + (w ** 2 * log_w_fixed).sum())

    optimizer = NAdam(args.lr)
    for name, loss_fn in (("iwae", iwae_loss), ("dreg", dreg_loss)):
        def update(opt_state, key, x, loss_fn=loss_fn):
            key, sub = jax.random.split(key)
            loss, grads = jax.value_and_grad(loss_fn)(optimizer.get_params(opt_state), sub, x,
                                                       args.num_particles)
            return optimizer.update(grads, opt_state), key, loss

        update = jax.jit(update)
        state = {"s": optimizer.init(dict(init)), "key": jax.random.PRNGKey(args.seed)}

        def step(state=state, update=update):
            state["s"], state["key"], loss = update(state["s"], state["key"], batch)
            return float(loss.block_until_ready())

        steps[name] = step

    evidence_x = jnp.asarray(images[:args.images])
    chunk = jax.jit(lambda p, key, x: particles(p, key, x, args.chunk_size))
    params = dict(init)
    evidence_key = {"key": jax.random.PRNGKey(args.seed + 1)}

    def evidence():
        chunks = []
        for _ in range(math.ceil(args.evidence_k / args.chunk_size)):
            evidence_key["key"], sub = jax.random.split(evidence_key["key"])
            chunks.append(chunk(params, sub, evidence_x))
        log_w = jnp.concatenate(chunks)[:args.evidence_k]
        bound = jax.scipy.special.logsumexp(log_w, 0) - math.log(log_w.shape[0])
        return float(bound.block_until_ready().mean())

    steps["evidence"] = evidence
    return steps


# ------------------------------------------------------------------------------ pythae side
def pythae_sides(args, images_torch):
    """``{objective: step()}`` for pythae (``meanfield``, ``iwae``, ``evidence``)."""
    import torch
    from pythae.models import IWAE, VAE, IWAEConfig, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from torch import nn

    from ppl_models.networks import mlp

    d, hidden, shape = args.latent_dim, args.hidden, tuple(images_torch.shape[1:])
    pixels = math.prod(shape)

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = mlp([pixels, hidden, 2 * d])

        def forward(self, x):
            loc, raw = self.net(x.flatten(1)).chunk(2, -1)
            sigma = nn.functional.softplus(raw) + 1e-5
            return ModelOutput(embedding=loc, log_covariance=2 * sigma.log())

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = mlp([d, hidden, pixels])

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)).reshape(-1, *shape))

    torch.manual_seed(args.seed)
    batch = images_torch[:args.batch_size]
    steps = {}
    for name, model in (
            ("meanfield", VAE(VAEConfig(input_dim=shape, latent_dim=d, reconstruction_loss="bce"),
                              encoder=Encoder(), decoder=Decoder())),
            ("iwae", IWAE(IWAEConfig(input_dim=shape, latent_dim=d, reconstruction_loss="bce",
                                     number_samples=args.num_particles),
                          encoder=Encoder(), decoder=Decoder()))):
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

        def step(model=model, optimizer=optimizer):
            loss = model({"data": batch}).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss.item()

        steps[name] = step
    evaluator = VAE(VAEConfig(input_dim=shape, latent_dim=d, reconstruction_loss="bce"),
                    encoder=Encoder(), decoder=Decoder()).eval()
    evidence_x = images_torch[:args.images]

    def evidence():
        with torch.no_grad():
            return float(evaluator.get_nll(evidence_x, n_samples=args.evidence_k,
                                           batch_size=args.chunk_size))

    steps["evidence"] = evidence
    return steps


# ------------------------------------------------------------------------------ torch sides
def torch_sides(args, images, overhead, evidence_module):
    """``{objective: {side: step()}}`` for ``hand_eager``, ``ours``, ``ours_compiled``."""
    import pyro

    from inference import iwae_bound

    scale = args.num_data / args.batch_size
    vae = overhead.make_vae(args.hidden, args.latent_dim, args.seed)
    if args.quick:  # the traced graph only: no minutes of compilation in a smoke run
        import inference.training.compiled_step as compiled_step

        compiled_step.DEFAULT_BACKEND = "eager"
    batch = images[:args.batch_size]
    store = pyro.get_param_store()
    sides = {}
    for objective in ("elbo", "meanfield", "iwae", "dreg"):
        sides[objective] = {}
        for name in ("hand_eager", "ours", "ours_compiled"):
            side = overhead.Side(name, vae, objective, scale, args.lr, args.num_particles)

            def step(side=side):
                with store.scope(side.store_state) as side.store_state:
                    return side.step(batch)

            sides[objective][name] = step
    evidence_x = images[:args.images]

    def hand_evidence():
        return float(evidence_module.plain_iwae(vae, evidence_x, args.evidence_k,
                                                args.chunk_size).mean())

    def ours_evidence(compile=False):
        with pyro.validation_enabled(False):
            return float(iwae_bound(vae.model, vae.guide, evidence_x,
                                    num_samples=args.evidence_k, chunk_size=args.chunk_size,
                                    compile=compile).mean())

    sides["evidence"] = {"hand_eager": hand_evidence, "ours": ours_evidence,
                         "ours_compiled": lambda: ours_evidence("eager" if args.quick else True)}
    return sides


def load_images(args):
    """``[n, 1, 28, 28]`` binary float32 images (Fashion-MNIST test set, or random)."""
    import torch

    n = max(args.batch_size, args.images)
    if args.data == "fashion-mnist":
        try:
            from ppl_models import load_images as load

            return load("fashion-mnist", root=args.data_root).binarized(0).test.images[:n]
        except (OSError, ValueError) as error:
            print(f"Fashion-MNIST unavailable ({error}); using random binary images")
    generator = torch.Generator().manual_seed(args.seed)
    return (torch.rand(n, 1, 28, 28, generator=generator) < 0.3).float()


def time_blocks(steps: dict, block: int, repeats: int, warmup: int = 2) -> dict:
    """Seconds per call of every side, one list per side, blocks rotating."""
    names = list(steps)
    seconds = {name: [] for name in names}
    for name in names:  # warm-up: compilation, first-step checks, allocator
        for _ in range(warmup):
            steps[name]()
    for repeat in range(repeats):
        order = names[repeat % len(names):] + names[:repeat % len(names)]
        for name in order:
            start = time.perf_counter()
            for _ in range(block):
                steps[name]()
            seconds[name].append((time.perf_counter() - start) / block)
    return seconds


def main(args: argparse.Namespace) -> dict:
    if args.quick:
        args.hidden, args.latent_dim, args.batch_size = 32, 4, 16
        args.num_particles, args.evidence_k, args.chunk_size, args.images = 3, 40, 20, 2
        args.steps, args.repeats, args.evidence_repeats = 1, 1, 1
    cores = None  # pinning needs Linux; elsewhere the thread counts alone are set
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))[:args.threads]
        os.sched_setaffinity(0, cores)  # before torch or XLA start their thread pools
    retained = retain_freed_memory() if args.retain_freed_memory else False
    flags = (f"--xla_cpu_multi_thread_eigen={'true' if args.threads > 1 else 'false'} "
             f"intra_op_parallelism_threads={args.threads}")
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()
    import pyro
    import torch

    torch.set_num_threads(args.threads)
    overhead, evidence_module = _load("svi_step_overhead"), _load("evidence_speed")
    images = load_images(args)
    sides = torch_sides(args, images, overhead, evidence_module)
    skipped = {}
    for peer, build in (("numpyro", numpyro_sides), ("pythae", pythae_sides)):
        if peer not in args.sides:
            skipped[peer] = "not requested (--sides)"
            continue
        try:
            peer_steps = build(args, images.flatten(1).numpy() if peer == "numpyro" else images)
        except ImportError as error:
            skipped[peer] = f"not installed ({error}); pip install -e '.[peers]'"
            print(f"skipping {peer}: {skipped[peer]}")
            continue
        for objective, step in peer_steps.items():
            sides[objective][peer] = step
    result = {
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
                   f"pyro {pyro.__version__}, python {sys.version.split()[0]}",
        "threads": args.threads, "cores": cores, "xla_flags": os.environ["XLA_FLAGS"],
        "freed_memory_retained": retained,
        "config": vars(args),
    }
    for objective in args.objectives:
        steps = {name: step for name, step in sides[objective].items() if name in args.sides}
        load_before = os.getloadavg()
        block, repeats = ((1, args.evidence_repeats) if objective == "evidence"
                          else (args.steps, args.repeats))
        seconds = time_blocks(steps, block, repeats, warmup=1 if args.quick else 2)
        per = args.images if objective == "evidence" else 1
        ratios = {name: None for name in SIDES}
        ratios.update({name: statistics.median(s / h for s, h in zip(values,
                                                                     seconds["hand_eager"]))
                       for name, values in seconds.items()})
        why = {name: skipped.get(name, "no such side for this objective")
               for name in SIDES if ratios[name] is None}
        result[objective] = {
            "ratios": ratios,
            "seconds": {name: statistics.median(values) / per for name, values in seconds.items()},
            "unit": "seconds per image" if objective == "evidence" else "seconds per step",
            "skipped": why,
            "threads": args.threads,
            "load_average": [round(x, 2) for x in (*load_before, *os.getloadavg())],
        }
        print(f"{objective:<10} " + "  ".join(
            f"{name} {ratio:.3f}" for name, ratio in ratios.items() if ratio is not None)
            + f"  (hand_eager {1000 * result[objective]['seconds']['hand_eager']:.1f} ms; "
              f"load {result[objective]['load_average'][:3]})")
    out = finish_benchmark(args, result)
    print(f"written: {out}")
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, "peers", device=False)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--data", choices=["fashion-mnist", "random"], default="fashion-mnist")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--objectives", nargs="+", choices=OBJECTIVES, default=list(OBJECTIVES))
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    parser.add_argument("--hidden", type=int, default=400)
    parser.add_argument("--latent-dim", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-data", type=int, default=60000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--num-particles", type=int, default=5, help="K of iwae and dreg")
    parser.add_argument("--evidence-k", type=int, default=5000)
    parser.add_argument("--chunk-size", type=int, default=250)
    parser.add_argument("--images", type=int, default=10, help="images of the evidence block")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=9, help="blocks per side")
    parser.add_argument("--evidence-repeats", type=int, default=5)
    parser.add_argument("--retain-freed-memory", action="store_true",
                        help="glibc keeps freed memory for every side (scaffold.memory)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
