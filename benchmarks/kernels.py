"""The kernels under the peers' steps: torch's matrix products and element-wise functions
against XLA's (JAX on the CPU), on the shapes of the 784-400-50 VAE.

``benchmarks/peers.py`` compares whole steps; this script asks which kernels make the
difference that is left. Two families, each timed in both libraries in one process, blocks
of calls alternating:

- ``matmul``: the eleven products of one SVI step of the VAE at batch 256 (forward
  ``x @ W.T``, weight gradient ``g.T @ x``, input gradient ``g @ W`` of each layer, as
  autograd and XLA's transpose rules lay them out);
- ``elementwise``: ``softplus``, ``exp``, ``log1p`` and an addition (memory traffic only) on
  an evidence chunk's logits, ``[250 * 20, 784]``, in nanoseconds per element.

Both sides run on the same ``--threads`` pinned cores (torch's intra-op threads; XLA's
``--xla_cpu_multi_thread_eigen`` and ``intra_op_parallelism_threads``). Each number is the
median over ``--repeats`` blocks; ``ratio`` is torch's time over JAX's (below 1: torch is
faster). Without JAX (``pip install -e '.[peers]'``) only torch's times are written.

    python benchmarks/kernels.py          # -> benchmarks/results/kernels.json and .png
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # for scaffold
from scaffold.flags import benchmark_parser  # noqa: E402
from scaffold.runs import finish_benchmark  # noqa: E402

# (batch, fan_in, fan_out) of each linear layer of the VAE: encoder 784-400-(50+50),
# decoder 50-400-784
LAYERS = {"encoder.hidden": (784, 400), "encoder.out": (400, 100),
          "decoder.hidden": (50, 400), "decoder.out": (400, 784)}
# the encoder's first layer needs no input gradient (its input is the data)
PRODUCTS = [(layer, kind) for layer in LAYERS for kind in ("forward", "weight_grad", "input_grad")
            if (layer, kind) != ("encoder.hidden", "input_grad")]
ELEMENTWISE = ("softplus", "exp", "log1p", "add")


def operands(batch: int, fan_in: int, fan_out: int, kind: str, generator):
    """The two float32 operands ``(a, b)`` of ``a @ b`` as numpy arrays, laid out as autograd
    sees them: ``x: [batch, fan_in]``, ``W: [fan_out, fan_in]``, ``g: [batch, fan_out]``."""
    x = generator.standard_normal((batch, fan_in), dtype="float32")
    weight = generator.standard_normal((fan_out, fan_in), dtype="float32")
    grad = generator.standard_normal((batch, fan_out), dtype="float32")
    return {"forward": (x, weight), "weight_grad": (grad, x), "input_grad": (grad, weight)}[kind]


def torch_kernels(args, generator) -> dict:
    """``{name: call()}`` of torch's kernels."""
    import torch
    import torch.nn.functional as F

    calls = {}
    for layer, kind in PRODUCTS:
        a, b = (torch.from_numpy(v) for v in operands(args.batch_size, *LAYERS[layer], kind,
                                                      generator))
        calls[f"matmul {layer} {kind}"] = {
            "forward": lambda a=a, b=b: a @ b.t(),
            "weight_grad": lambda a=a, b=b: a.t() @ b,
            "input_grad": lambda a=a, b=b: a @ b}[kind]
    logits = torch.from_numpy(generator.standard_normal(args.elements, dtype="float32") * 3)
    magnitudes = logits.abs()  # log1p's domain, made once outside the timing
    calls.update({"elementwise softplus": lambda: F.softplus(logits),
                  "elementwise exp": lambda: torch.exp(logits),
                  "elementwise log1p": lambda: torch.log1p(magnitudes),
                  "elementwise add": lambda: logits + 1.0})
    return calls


def jax_kernels(args, generator) -> dict:
    """``{name: call()}`` of XLA's kernels (jitted, waiting for the result); ImportError
    when JAX is absent."""
    import jax
    import jax.numpy as jnp

    def waiting(fn, *inputs):
        jitted = jax.jit(fn)
        return lambda: jitted(*inputs).block_until_ready()

    calls = {}
    for layer, kind in PRODUCTS:
        a, b = (jnp.asarray(v) for v in operands(args.batch_size, *LAYERS[layer], kind,
                                                 generator))
        calls[f"matmul {layer} {kind}"] = waiting({
            "forward": lambda a, b: a @ b.T,
            "weight_grad": lambda a, b: a.T @ b,
            "input_grad": lambda a, b: a @ b}[kind], a, b)
    logits = jnp.asarray(generator.standard_normal(args.elements, dtype="float32") * 3)
    calls.update({"elementwise softplus": waiting(jax.nn.softplus, logits),
                  "elementwise exp": waiting(jnp.exp, logits),
                  "elementwise log1p": waiting(jnp.log1p, jnp.abs(logits)),
                  "elementwise add": waiting(lambda v: v + 1.0, logits)})
    return calls


def time_blocks(sides: dict, block: int, repeats: int) -> dict:
    """Median seconds per call of every ``(side, kernel)``, sides alternating per block."""
    seconds = {side: {name: [] for name in calls} for side, calls in sides.items()}
    for calls in sides.values():
        for call in calls.values():  # warm-up: compilation, allocator
            call(), call()
    names = list(next(iter(sides.values())))
    order = list(sides)
    for repeat in range(repeats):
        for name in names:
            for side in order[repeat % len(order):] + order[:repeat % len(order)]:
                start = time.perf_counter()
                for _ in range(block):
                    sides[side][name]()
                seconds[side][name].append((time.perf_counter() - start) / block)
    return {side: {name: statistics.median(values) for name, values in per.items()}
            for side, per in seconds.items()}


def summarize(seconds: dict, elements: int) -> dict:
    """Per kernel: each side's time (ms for products, ns per element otherwise) and torch
    over JAX; the products' total per step."""
    kernels = {}
    for name, torch_seconds in seconds["torch"].items():
        scale, unit = (1e3, "ms") if name.startswith("matmul") else (1e9 / elements, "ns/element")
        entry = {"unit": unit, "torch": round(torch_seconds * scale, 4)}
        if "jax" in seconds:
            entry["jax"] = round(seconds["jax"][name] * scale, 4)
            entry["ratio"] = round(torch_seconds / seconds["jax"][name], 3)
        kernels[name] = entry
    totals = {side: round(1e3 * sum(s for name, s in per.items() if name.startswith("matmul")),
                          3) for side, per in seconds.items()}
    return {"kernels": kernels, "matmul_ms_per_step": totals}


def plot(summary: dict, path: Path) -> None:
    """Bars of torch's time over JAX's per kernel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scaffold.plots import save_figure

    names = [n for n, e in summary["kernels"].items() if "ratio" in e]
    ratios = [summary["kernels"][n]["ratio"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(names) + 1))
    ax.barh(names, ratios, color=["tab:red" if r > 1 else "tab:blue" for r in ratios])
    ax.axvline(1.0, color="black", lw=1)
    ax.invert_yaxis()
    ax.set_xlabel("torch time / XLA time (above 1: XLA faster)")
    ax.set_title(f"784-400-50 VAE kernels, {summary['threads']} thread(s)")
    save_figure(fig, path)


def main(args: argparse.Namespace) -> dict:
    import numpy as np

    if args.quick:
        args.batch_size, args.elements, args.block, args.repeats = 8, 4096, 1, 1
    cores = None
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))[:args.threads]
        os.sched_setaffinity(0, cores)  # before torch or XLA start their thread pools
    flags = (f"--xla_cpu_multi_thread_eigen={'true' if args.threads > 1 else 'false'} "
             f"intra_op_parallelism_threads={args.threads}")
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()
    import torch

    torch.set_num_threads(args.threads)
    sides = {"torch": torch_kernels(args, np.random.default_rng(args.seed))}
    skipped = None
    try:
        sides["jax"] = jax_kernels(args, np.random.default_rng(args.seed))
    except ImportError as error:
        skipped = f"JAX not installed ({error}); pip install -e '.[peers]'"
        print(f"skipping jax: {skipped}")
    load_before = os.getloadavg()
    seconds = time_blocks(sides, args.block, args.repeats)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "threads": args.threads, "cores": cores, "xla_flags": os.environ["XLA_FLAGS"],
        "jax_skipped": skipped, "elements": args.elements, "batch_size": args.batch_size,
        "load_average": [round(x, 2) for x in (*load_before, *os.getloadavg())],
        **summarize(seconds, args.elements), "config": vars(args),
    }
    for name, entry in result["kernels"].items():
        print(f"{name:<36} torch {entry['torch']:8.3f}"
              + (f"  jax {entry['jax']:8.3f}  ratio {entry['ratio']:.2f}" if "jax" in entry
                 else "") + f" {entry['unit']}")
    print(f"matmul per step (ms): {result['matmul_ms_per_step']}")
    out = finish_benchmark(args, result)
    if "jax" in sides:
        plot(result, out.with_suffix(".png"))
    print(f"written: {out}")
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, "kernels", device=False)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--elements", type=int, default=250 * 20 * 784,
                        help="length of the element-wise kernels' input")
    parser.add_argument("--block", type=int, default=10, help="calls per timed block")
    parser.add_argument("--repeats", type=int, default=9, help="blocks per kernel and side")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
