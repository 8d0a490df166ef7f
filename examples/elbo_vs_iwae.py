"""ELBO against IWAE: how loose is each bound, and what does training with K particles buy?

Trains one model per objective (ELBO; IWAE with K = 5 and 50; DReG with K = 5) on each data
set (the toy manifold, where quadrature gives the exact evidence; statically binarized 8x8
digits; statically binarized Fashion-MNIST), then evaluates every model on held-out data with
the ELBO, IWAE_K for K = 1, 5, 50, 500, 5000 (mean over the test points, standard error over
repeats), annealed importance sampling (AIS) and, on the toy, the exact log evidence. For each
model it also reports the Pareto k-hat of the importance weights (Vehtari et al. 2015) and the
amortization and approximation gaps (Cremer et al. 2018).

Expected with the defaults (toy and digits in one process, Fashion-MNIST in another; 20 and
15 minutes on our 2 CPU cores shared with other jobs; Fashion-MNIST is trained on a
2000-image subset for 5 epochs): in every row ELBO = IWAE_1 < IWAE_5 < ... < IWAE_5000; on
the toy AIS within 0.01 nats of the exact evidence. Training with IWAE_50 instead of the ELBO
raises the evidence (toy exact 10.72 -> 11.11, digits IWAE_5000 -25.37 -> -23.83,
Fashion-MNIST -288.85 -> -281.07 nats) and lowers the ELBO; DReG_5 beats IWAE_5 on all three.
After 5 epochs most Fashion-MNIST test points have k-hat above 0.7 (IWAE_5000 unreliable).
The tables and their reading are in docs/elbo-vs-iwae.md. ``--tiny`` takes about 15 seconds
of CPU time per data set (the test suite's setting).

    python examples/elbo_vs_iwae.py --datasets toy,digits --threads 1 --out-dir runs/elbo_vs_iwae
    python examples/elbo_vs_iwae.py --datasets fashion-mnist --threads 1 --out-dir runs/fm
    python examples/elbo_vs_iwae.py --tiny --datasets toy --threads 1 --out-dir runs/tiny
    # --write-docs also rewrites the matching tables (and figures) of docs/elbo-vs-iwae.md;
    # --tables-from runs/.../metrics.json redoes tables and figures without training

References:
    [1] Burda, Grosse, Salakhutdinov (2015), Importance Weighted Autoencoders.
    [2] Rainforth et al. (2018), Tighter Variational Bounds are Not Necessarily Better.
    [3] Tucker, Lawson, Gu, Maddison (2018), Doubly Reparameterized Gradient Estimators.
    [4] Cremer, Li, Duvenaud (2018), Inference Suboptimality in Variational Autoencoders.
    [5] Vehtari, Gelman, Gabry (2015), Pareto Smoothed Importance Sampling.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from inference.evidence.ais import ais_log_evidence  # noqa: E402
from inference.evidence.estimators import bound_sweep  # noqa: E402
from inference.evidence.exact import exact_log_evidence  # noqa: E402
from inference.evidence.gaps import amortization_gap  # noqa: E402
from scaffold.flags import numbers, positive_int, script_parser  # noqa: E402
from scaffold.plots import save_figure  # noqa: E402
from scaffold.runs import finish_run, start_run  # noqa: E402
from inference import fit  # noqa: E402
from inference.evidence.weight_diagnostics import weight_diagnostics  # noqa: E402
from ppl_models.data import DATASETS, load_images  # noqa: E402
from ppl_models.likelihoods import training_representation  # noqa: E402
from ppl_models.toy_manifold import ToyManifold, ToyManifoldVAE  # noqa: E402
from ppl_models.vae import VAE  # noqa: E402

DOCS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "elbo-vs-iwae.md"
EVAL_KS = (1, 5, 50, 500, 5000)
#: objective name -> (loss of :func:`inference.fit`, particles per datapoint)
OBJECTIVES = {"elbo": ("elbo", 1), "iwae-5": ("iwae", 5), "iwae-50": ("iwae", 50),
              "dreg-5": ("dreg", 5), "dreg-50": ("dreg", 50)}
LABELS = {"elbo": "ELBO", "iwae-5": "IWAE, K=5", "iwae-50": "IWAE, K=50",
          "dreg-5": "DReG, K=5", "dreg-50": "DReG, K=50"}
KHAT_RELIABLE = 0.7  # above it importance sampling is unreliable (Vehtari et al. [5])


@dataclass(frozen=True)
class Budget:
    """Data, network and training sizes of one data set, and the evaluation effort."""

    num_train: int
    num_test: int
    epochs: int
    batch_size: int
    lr: float
    hidden: int
    latent_dim: int
    max_k: int = 5000
    ais_chains: int = 16
    ais_steps: int = 200
    khat_k: int = 5000
    gap_points: int = 50
    gap_steps: int = 200


# Budgets sized for 2 shared CPU cores (minutes per data set, not hours): far below the
# 3,280 passes of Burda et al. [1]; see docs/elbo-vs-iwae.md.
FULL = {
    "toy": Budget(2000, 200, 50, 100, 3e-3, 64, 1, ais_steps=300, gap_steps=500),
    "digits": Budget(1297, 300, 30, 64, 1e-3, 200, 16, ais_steps=1000, gap_steps=300),
    "fashion-mnist": Budget(2000, 30, 5, 100, 1e-3, 200, 20, ais_steps=300,
                            khat_k=1000, gap_points=30, gap_steps=200),
    "mnist": Budget(2000, 30, 5, 100, 1e-3, 200, 20, ais_steps=300,
                    khat_k=1000, gap_points=30, gap_steps=200),
}
TINY = {
    "toy": Budget(200, 20, 3, 50, 3e-3, 16, 1, max_k=500, ais_chains=4, ais_steps=20,
                  khat_k=500, gap_points=10, gap_steps=20),
    "digits": Budget(200, 20, 2, 50, 1e-3, 16, 4, max_k=500, ais_chains=4, ais_steps=20,
                     khat_k=500, gap_points=10, gap_steps=20),
}
TINY = {**TINY, "fashion-mnist": replace(TINY["digits"], num_train=500),
        "mnist": replace(TINY["digits"], num_train=500)}


def load_dataset(name: str, budget: Budget, args) -> tuple:
    """``(train, test, make_pair)`` for a data set; ``make_pair()`` builds a fresh model.

    Toy: ``[n, 16]`` points from :class:`ppl_models.ToyManifold`. Images: statically
    binarized ``[n, 1, H, W]``, Bernoulli pixels, MLP encoder and decoder.
    """
    if name == "toy":
        truth = ToyManifold(noise_scale=0.1)
        train, _ = truth.sample(budget.num_train, seed=args.seed)
        test, _ = truth.sample(budget.num_test, seed=args.seed + 1)
        return train, test, lambda: ToyManifoldVAE(hidden=budget.hidden)
    root = args.fashion_root if name == "fashion-mnist" else args.data_root
    data = load_images(name, root=root)
    train, test, _ = training_representation(data, "bernoulli", "static", args.seed)
    shape = data.image_shape
    return (train[:budget.num_train], test[:budget.num_test],
            lambda: VAE(shape, budget.latent_dim, "bernoulli", "mlp", (budget.hidden,)))


def dataset_available(name: str, args) -> str | None:
    """None when ``name`` can be loaded, else the reason it is skipped."""
    if name in ("toy", "digits"):
        return None
    try:
        load_images(name, root=args.fashion_root if name == "fashion-mnist" else args.data_root)
    except (FileNotFoundError, OSError, ValueError) as error:
        return f"{name} skipped: {error}"
    return None


def evaluate(model, guide, test: torch.Tensor, budget: Budget, args,
             exact: torch.Tensor | None) -> dict:
    """Every estimate of ``log p(x)`` for one trained pair on ``test: [n, ...]``.

    Returns:
        JSON-ready dict: ``bounds`` (rows of :class:`inference.BoundTable`), ``ais`` and
        ``exact`` (mean and standard error over test points of per-point estimates, nats),
        ``k_hat`` and ``ess`` per test point, and the mean gaps over ``gap_points`` points.
    """
    ks = [k for k in EVAL_KS if k <= budget.max_k]
    pyro.set_rng_seed(args.seed)
    table = bound_sweep(model, guide, test, num_samples=ks, repeats=args.repeats,
                        chunk_size=args.chunk_size, data_batch_size=args.eval_batch_size)
    pyro.set_rng_seed(args.seed)
    ais = ais_log_evidence(model, guide, test, num_chains=budget.ais_chains,
                           num_steps=budget.ais_steps)
    n = test.shape[0]
    result = {
        "bounds": table.rows,
        # the test points are independent, so per-point variances add
        "ais": {"mean": float(ais.log_evidence.mean()),
                "stderr": float(ais.stderr.pow(2).sum().sqrt() / n)},
    }
    if exact is not None:
        result["exact"] = {"mean": float(exact.mean()), "stderr": 0.0}
    pyro.set_rng_seed(args.seed)
    weights = weight_diagnostics(model, guide, test, num_samples=budget.khat_k,
                                 chunk_size=args.chunk_size)
    result["k_hat"] = weights.pareto_k.tolist()
    result["ess_fraction"] = (weights.ess / budget.khat_k).tolist()
    best = exact if exact is not None else ais.log_evidence
    points = slice(0, budget.gap_points)
    pyro.set_rng_seed(args.seed)
    gaps = amortization_gap(model, guide, test[points], log_evidence=best[points],
                            num_steps=budget.gap_steps, chunk_size=args.chunk_size)
    result["gaps"] = {
        "num_points": int(gaps.amortization_gap.shape[0]),
        "amortization": float(gaps.amortization_gap.mean()),
        "approximation": float(gaps.approximation_gap.mean()),
        "elbo_amortized": float(gaps.elbo_amortized.mean()),
        "elbo_local": float(gaps.elbo_local.mean()),
    }
    return result


def run_dataset(name: str, budget: Budget, args, device, out: Path) -> dict:
    """Train every objective on one data set and evaluate each model.

    Each model's training checkpoint goes to ``out``; ``--resume`` reuses finished ones.
    """
    train, test, make_pair = load_dataset(name, budget, args)
    test = test.to(device)
    results = {"budget": asdict(budget), "models": {}}
    for objective in args.objectives:
        loss, particles = OBJECTIVES[objective]
        pyro.clear_param_store()
        torch.manual_seed(args.seed)  # the same initial networks for every objective
        pair = make_pair()
        history = fit(pair.model, pair.guide, train, loss=loss, num_particles=particles,
                      epochs=budget.epochs, batch_size=budget.batch_size, lr=budget.lr,
                      seed=args.seed, device=device, progress=not args.quiet,
                      checkpoint=out / f"checkpoint_{name}_{objective}.pt", resume=args.resume)
        pair.eval()
        exact = exact_log_evidence(pair.model, test).log_evidence if name == "toy" else None
        metrics = evaluate(pair.model, pair.guide, test, budget, args, exact)
        metrics["train_seconds"] = sum(r["seconds"] for r in history)
        metrics["final_train_loss"] = history[-1]["train_loss"] if history else None
        results["models"][objective] = metrics
    return results


# ---------------------------------------------------------------------------- tables


def _cell(entry: dict | None) -> str:
    if entry is None:
        return "n/a"
    if not entry["stderr"]:
        return f"{entry['mean']:.2f}"
    return f"{entry['mean']:.2f} ± {entry['stderr']:.2f}"


def bounds_table(results: dict) -> str:
    """Markdown: one row per training objective, one column per estimate (nats per point)."""
    ks = [k for k in EVAL_KS if k <= results["budget"]["max_k"]]
    header = ["trained with", "ELBO", *[f"IWAE_{k}" for k in ks], "AIS", "exact"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for objective, m in results["models"].items():
        rows = {("elbo" if r["bound"] == "elbo" else f"iwae_{r['num_samples']}"): r
                for r in m["bounds"]}
        cells = [LABELS[objective], _cell(rows["elbo"]),
                 *[_cell(rows[f"iwae_{k}"]) for k in ks], _cell(m["ais"]),
                 _cell(m.get("exact"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def diagnostics_table(results: dict) -> str:
    """Markdown: k-hat, weight ESS and the gaps of each model."""
    khat_k, points = results["budget"]["khat_k"], results["budget"]["gap_points"]
    header = ["trained with", "median k-hat", f"share k-hat > {KHAT_RELIABLE}",
              f"median ESS / {khat_k}", f"amortization gap (first {points})",
              f"approximation gap (first {points})"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for objective, m in results["models"].items():
        k_hat = torch.tensor(m["k_hat"])
        ess = torch.tensor(m["ess_fraction"])
        cells = [LABELS[objective], f"{float(k_hat.median()):.2f}",
                 f"{float((k_hat > KHAT_RELIABLE).float().mean()):.2f}",
                 f"{float(ess.median()):.3f}", f"{m['gaps']['amortization']:.2f}",
                 f"{m['gaps']['approximation']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_tables(metrics: dict, tag: str) -> dict[str, str]:
    """``{"<dataset>-<tag>-bounds": markdown, "<dataset>-<tag>-diagnostics": ...}``."""
    tables = {}
    for name, results in metrics["datasets"].items():
        tables[f"{name}-{tag}-bounds"] = bounds_table(results)
        tables[f"{name}-{tag}-diagnostics"] = diagnostics_table(results)
    return tables


TABLE_BLOCK = re.compile(r"(<!-- table:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /table -->)",
                         re.DOTALL)


def read_doc_tables(text: str) -> dict[str, str]:
    """The tables between ``<!-- table:NAME -->`` and ``<!-- /table -->`` markers of a page."""
    return {m["name"]: m["body"].strip() for m in TABLE_BLOCK.finditer(text)}


def write_doc_tables(path: Path, tables: dict[str, str]) -> list[str]:
    """Replace the marked blocks of ``path`` named in ``tables``; returns the names replaced.

    Raises:
        ValueError: the page has no marker for one of the tables.
    """
    text = path.read_text()
    missing = sorted(set(tables) - set(read_doc_tables(text)))
    if missing:
        raise ValueError(f"{path} has no '<!-- table:NAME -->' markers for {missing}")
    text = TABLE_BLOCK.sub(
        lambda m: m[1] + (tables[m["name"]] + "\n" if m["name"] in tables else m["body"]) + m[4],
        text)
    path.write_text(text)
    return sorted(tables)


def write_csv(metrics: dict, path: Path) -> None:
    """One row per data set, objective and estimate: mean and standard error in nats."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dataset", "trained_with", "estimate", "mean_nats", "stderr_nats"])
        for name, results in metrics["datasets"].items():
            for objective, m in results["models"].items():
                for r in m["bounds"]:
                    label = "elbo" if r["bound"] == "elbo" else f"iwae_{r['num_samples']}"
                    writer.writerow([name, objective, label, r["mean"], r["stderr"]])
                for label in ("ais", "exact"):
                    if label in m:
                        writer.writerow([name, objective, label, m[label]["mean"],
                                         m[label]["stderr"]])


# ---------------------------------------------------------------------------- figures


def _panels(count: int, sharey: bool, width: float = 3.2, height: float = 2.8):
    fig, axes = plt.subplots(1, count, figsize=(width * count, height), squeeze=False,
                             sharey=sharey)
    return fig, axes[0]


def plot_bounds(name: str, results: dict, path: Path) -> None:
    """IWAE_K (±2 s.e.) against K per model, ELBO dotted, exact or AIS dashed."""
    models = results["models"]
    fig, axes = _panels(len(models), sharey=False)  # the ELBOs can lie tens of nats apart
    for ax, (objective, m) in zip(axes, models.items()):
        rows = [r for r in m["bounds"] if r["bound"] == "iwae"]
        ax.errorbar([r["num_samples"] for r in rows], [r["mean"] for r in rows],
                    yerr=[2 * r["stderr"] for r in rows], marker="o", capsize=3,
                    label="IWAE_K")
        reference, label = (m["exact"], "exact") if "exact" in m else (m["ais"], "AIS")
        ax.axhline(reference["mean"], color="k", linestyle="--", label=label)
        ax.axhline(m["bounds"][0]["mean"], color="C3", linestyle=":", label="ELBO")
        ax.set_xscale("log")
        ax.set_xlabel("K (evaluation)")
        ax.set_title(f"trained with {LABELS[objective]}", fontsize=9)
    axes[0].set_ylabel("nats per test point")
    axes[0].legend(fontsize=7)
    fig.suptitle(name, y=1.04)
    save_figure(fig, path)


def plot_khat(name: str, results: dict, path: Path) -> None:
    """Histogram of the test points' k-hat per model, with the 0.7 reliability line."""
    models = results["models"]
    values = torch.tensor([k for m in models.values() for k in m["k_hat"]])
    finite = values[torch.isfinite(values)]
    low = min(float(finite.min()), 0.0) if finite.numel() else 0.0
    high = max(float(finite.max()), 1.0) if finite.numel() else 1.0
    bins = torch.linspace(low, high, 31).tolist()  # shared, so the panels compare
    fig, axes = _panels(len(models), sharey=True)
    for ax, (objective, m) in zip(axes, models.items()):
        ax.hist(m["k_hat"], bins=bins, color="C0")
        ax.axvline(KHAT_RELIABLE, color="k", linestyle="--")
        ax.set_xlabel("Pareto k-hat")
        ax.set_title(f"trained with {LABELS[objective]}", fontsize=9)
    axes[0].set_ylabel("test points")
    fig.suptitle(f"{name}: k-hat of the importance weights (> {KHAT_RELIABLE}: unreliable)",
                 y=1.04)
    save_figure(fig, path)


def plot_gaps(name: str, results: dict, path: Path) -> None:
    """Stacked bars: approximation gap below, amortization gap on top (= log p - ELBO)."""
    models = results["models"]
    labels = [LABELS[o] for o in models]
    approximation = [m["gaps"]["approximation"] for m in models.values()]
    amortization = [m["gaps"]["amortization"] for m in models.values()]
    fig, ax = plt.subplots(figsize=(1.4 * len(models) + 2, 3))
    ax.bar(labels, approximation, label="approximation gap")
    ax.bar(labels, amortization, bottom=approximation, label="amortization gap")
    ax.set_ylabel("nats per test point")
    ax.set_title(f"{name}: log p(x) - ELBO split as in Cremer et al. (2018)", fontsize=9)
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    save_figure(fig, path)


# ---------------------------------------------------------------------------- main


def report(metrics: dict, out: Path, args) -> dict[str, str]:
    """Write figures, ``tables.md`` and ``results.csv`` (and the docs tables if asked)."""
    for name, results in metrics["datasets"].items():
        plot_bounds(name, results, out / f"bounds_vs_k_{name}.png")
        plot_khat(name, results, out / f"khat_{name}.png")
        plot_gaps(name, results, out / f"gaps_{name}.png")
    tables = render_tables(metrics, metrics["preset"])
    (out / "tables.md").write_text(
        "\n\n".join(f"{name}\n\n{table}" for name, table in tables.items()) + "\n")
    write_csv(metrics, out / "results.csv")
    if args.write_docs:
        page = Path(args.docs_page)
        written = write_doc_tables(page, tables)
        print(f"updated {len(written)} tables in {page}")
        if metrics["preset"] == "full":  # the page shows the full run's figures
            figures = page.parent / "figures"
            figures.mkdir(exist_ok=True)
            for name in metrics["datasets"]:
                for kind in ("bounds_vs_k", "khat", "gaps"):
                    shutil.copyfile(out / f"{kind}_{name}.png",
                                    figures / f"elbo_vs_iwae_{kind}_{name}.png")
    return tables


def main(args: argparse.Namespace) -> dict:
    out, device, start = start_run(args)
    if args.tables_from:
        # Re-render figures and tables of a finished run without training anything.
        metrics = json.loads(Path(args.tables_from).read_text())
        tables = report(metrics, out, args)
        for name, table in tables.items():
            print(f"\n{name}\n{table}")
        return metrics
    presets = TINY if args.tiny else FULL
    metrics = {"units": "nats per test point, mean over test points; standard error over "
                        "repeats (bounds) or over test points (AIS)",
               "preset": "tiny" if args.tiny else "full", "datasets": {}, "skipped": {},
               "config": vars(args), "device": str(device)}
    for name in tqdm(args.datasets, desc="data sets", disable=args.quiet):
        reason = dataset_available(name, args)
        if reason:
            print(reason)
            metrics["skipped"][name] = reason
            continue
        overrides = {k: getattr(args, k) for k in ("num_train", "num_test", "epochs", "max_k")
                     if getattr(args, k) is not None}
        budget = replace(presets[name], **overrides)
        if budget.max_k < 21 or budget.khat_k < 21:
            raise ValueError(f"max_k and khat_k must be at least 21 for k-hat, got {budget}")
        metrics["datasets"][name] = run_dataset(name, budget, args, device, out)
    finish_run(out, metrics, start, "metrics.json, tables.md, results.csv, figures")
    tables = report(metrics, out, args)
    for name, table in tables.items():
        print(f"\n{name}\n{table}")
    return metrics


def _names(choices):
    def parse(text: str) -> list[str]:
        names = [n for n in text.split(",") if n]
        unknown = [n for n in names if n not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {unknown or 'empty list'}; choose from {', '.join(choices)}")
        return names
    return parse


def parse_args(argv=None) -> argparse.Namespace:
    parser = script_parser(__doc__, "runs/elbo_vs_iwae")
    parser.add_argument("--datasets", type=_names(("toy", *DATASETS)),
                        default=["toy", "digits", "fashion-mnist"],
                        help="comma-separated: toy, digits, fashion-mnist, mnist")
    parser.add_argument("--objectives", type=_names(tuple(OBJECTIVES)),
                        default=["elbo", "iwae-5", "iwae-50", "dreg-5"],
                        help=f"comma-separated training objectives: {', '.join(OBJECTIVES)}")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny sizes for every data set (seconds; the test suite's setting)")
    for name in ("num-train", "num-test", "epochs"):
        parser.add_argument(f"--{name}", type=positive_int, default=None,
                            help="override every data set")
    parser.add_argument("--max-k", type=positive_int, default=None, help="largest evaluation K")
    numbers(parser, repeats=3, chunk_size=500, eval_batch_size=100)
    parser.add_argument("--fashion-root", default=None,
                        help="folder of the Fashion-MNIST IDX files "
                             "(default /usr/share/datasets/fashion-mnist)")
    parser.add_argument("--data-root", default=None, help="folder of the MNIST IDX files")
    parser.add_argument("--write-docs", action="store_true",
                        help="replace the matching marked tables of --docs-page")
    parser.add_argument("--docs-page", default=str(DOCS_PAGE))
    parser.add_argument("--tables-from", default=None,
                        help="metrics.json of a finished run: only redo figures and tables")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the training checkpoints in --out-dir")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
