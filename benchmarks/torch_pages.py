"""torch's element-wise kernels in a fresh process against one that imported ``inference``.

``inference.torch_pages`` maps ``libtorch_cpu``'s read-only data at import (docs/performance.md,
"torch's constant pages"). This script measures what that is worth: each repetition starts
two child processes, one importing torch only and one importing ``inference`` after it, in
alternating order; each child times float32 kernels on ``[256, 784]`` (a training batch's
logits) on one pinned core and reports nanoseconds per element. Per kernel the result holds
both medians and their ratio (fresh over mapped: above 1, the mapping made it faster).

    python benchmarks/torch_pages.py      # -> benchmarks/results/torch_pages.json and .png
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # for scaffold
from scaffold.flags import benchmark_parser, numbers  # noqa: E402
from scaffold.runs import finish_benchmark  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ("exp", "log", "log1p", "expm1", "tanh", "sigmoid", "softplus", "logsigmoid",
           "binary_cross_entropy_with_logits", "erf")

# One child: time every kernel (blocks of calls, median), print one JSON line.
CHILD = textwrap.dedent("""
    import json, os, statistics, sys, time
    core, mapped = int(sys.argv[1]), sys.argv[2] == "mapped"
    calls, blocks = int(sys.argv[3]), int(sys.argv[4])
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, [core])
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(1)
    if mapped:
        sys.path.insert(0, sys.argv[5])
        import inference  # noqa: F401  (maps torch's constant pages)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(256, 784, generator=generator) * 3
    positive = logits.abs() + 0.01
    target = (torch.rand(256, 784, generator=generator) < 0.3).float()
    kernels = {
        "exp": lambda: torch.exp(logits), "log": lambda: torch.log(positive),
        "log1p": lambda: torch.log1p(positive), "expm1": lambda: torch.expm1(logits),
        "tanh": lambda: torch.tanh(logits), "sigmoid": lambda: torch.sigmoid(logits),
        "softplus": lambda: F.softplus(logits), "logsigmoid": lambda: F.logsigmoid(logits),
        "binary_cross_entropy_with_logits": lambda: F.binary_cross_entropy_with_logits(
            logits, target, reduction="none"),
        "erf": lambda: torch.erf(logits)}
    # not lgamma: one call of it reads the page that log1p stalls on, mapping it
    times = {name: [] for name in kernels}
    for name, kernel in kernels.items():  # warm-up
        kernel(), kernel()
    for _ in range(blocks):
        for name, kernel in kernels.items():
            start = time.perf_counter()
            for _ in range(calls):
                kernel()
            times[name].append((time.perf_counter() - start) / calls / logits.numel() * 1e9)
    print(json.dumps({name: statistics.median(values) for name, values in times.items()}))
""")


def child(core: int, mapped: bool, args) -> dict:
    """One child process's ns per element of every kernel."""
    command = [sys.executable, "-c", CHILD, str(core), "mapped" if mapped else "fresh",
               str(args.calls), str(args.blocks), str(ROOT)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def plot(kernels: dict, path: Path) -> None:
    """Paired bars: ns per element, fresh and mapped, per kernel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scaffold.plots import save_figure

    names = list(kernels)
    rows = range(len(names))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2))
    ax.barh([r - 0.2 for r in rows], [kernels[n]["fresh"] for n in names], height=0.4,
            label="torch alone (fresh process)")
    ax.barh([r + 0.2 for r in rows], [kernels[n]["mapped"] for n in names], height=0.4,
            label="after import inference")
    ax.set_yticks(list(rows), names)
    ax.invert_yaxis()
    ax.set_xlabel("ns per float32 element, one core")
    ax.legend(loc="lower right")
    save_figure(fig, path)


def main(args: argparse.Namespace) -> dict:
    if args.quick:
        args.repeats, args.calls, args.blocks = 1, 2, 1
    core = sorted(os.sched_getaffinity(0))[0] if hasattr(os, "sched_getaffinity") else 0
    runs = {"fresh": [], "mapped": []}
    load_before = os.getloadavg()
    for repeat in range(args.repeats):
        order = ("fresh", "mapped") if repeat % 2 == 0 else ("mapped", "fresh")
        for side in order:
            runs[side].append(child(core, side == "mapped", args))
    kernels = {}
    for name in KERNELS:
        fresh = statistics.median(run[name] for run in runs["fresh"])
        mapped = statistics.median(run[name] for run in runs["mapped"])
        kernels[name] = {"fresh": round(fresh, 3), "mapped": round(mapped, 3),
                         "ratio": round(fresh / mapped, 2)}
        print(f"{name:<34} fresh {fresh:6.2f}  mapped {mapped:6.2f} ns/element  "
              f"({fresh / mapped:.1f}x)")
    import torch

    machine = platform.processor() or platform.machine()
    result = {"machine": f"{machine}, torch {torch.__version__}, "
                         f"cpu capability {torch.backends.cpu.get_cpu_capability()}",
              "unit": "ns per float32 element, [256, 784], 1 thread", "core": core,
              "load_average": [round(x, 2) for x in (*load_before, *os.getloadavg())],
              "kernels": kernels, "config": vars(args)}
    out = finish_benchmark(args, result)
    plot(kernels, out.with_suffix(".png"))
    print(f"written: {out}")
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, "torch_pages", device=False)
    numbers(parser, repeats=6, calls=40, blocks=5)
    parser.add_argument("--quick", action="store_true", help="one short child each: a smoke run")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
