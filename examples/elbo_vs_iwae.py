"""ELBO against IWAE: how loose is each bound, and what does training with K particles buy?

Trains one model per objective (ELBO; IWAE with K = 5 and 50; DReG with K = 5) on each data
set (the toy manifold, where quadrature gives the exact evidence; statically binarized 8x8
digits; statically binarized Fashion-MNIST), then evaluates every model on held-out data with
the ELBO, IWAE_K for K = 1, 5, 50, 500, 5000 (mean over the test points, standard error over
repeats), annealed importance sampling (AIS) and, on the toy, the exact log evidence. For each
model it also reports the Pareto k-hat of the importance weights (Vehtari et al. 2015) and the
amortization and approximation gaps (Cremer et al. 2018).

Three model/guide pairs (``--pairs``): the VAE with its Gaussian guide; the same model with a
flow guide (``ppl_models.FlowVAE``: the Gaussian followed by two inverse autoregressive flow
steps, Kingma et al. 2016); and a model with two stochastic layers
(``ppl_models.TwoLayerVAE``, Burda et al.'s second architecture). The toy, whose latent is
one-dimensional, has the Gaussian guide only (an IAF step is affine there). The gaps of the
flow and two-layer pairs are measured within their own families (their ``local_guide``).

Expected for the Gaussian guide (``--pairs gaussian``; toy and digits in one process,
Fashion-MNIST in another; 20 and 15 minutes on our 2 CPU cores shared with other jobs;
Fashion-MNIST is trained on a 2000-image subset for 5 epochs): in every row ELBO = IWAE_1 <
IWAE_5 < ... < IWAE_5000; on the toy AIS within 0.01 nats of the exact evidence. Training with
IWAE_50 instead of the ELBO raises the evidence (toy exact 10.77 -> 11.20, digits IWAE_5000
-25.31 -> -23.77, Fashion-MNIST -288.41 -> -280.21 nats) and lowers the ELBO; DReG_5 beats
IWAE_5 on all three. After 5 epochs most Fashion-MNIST test points have k-hat above 0.7
(IWAE_5000 unreliable). With all three pairs (the default) and ``--compare`` (18 and 16
minutes of CPU time for digits and Fashion-MNIST): on digits IWAE_5000 matches AIS to 0.02
nats for all 12 models; the flow guide shrinks the ELBO's gap (0.53 -> 0.30 nats trained
with the ELBO, 1.35 -> 0.47 with DReG) without raising the evidence; the two-layer model
raises the evidence when trained with K > 1 (digits IWAE_50: AIS -23.67 -> -23.18;
Fashion-MNIST -280.99 -> -265.81) and has the loosest bounds.
The tables and their reading are in docs/elbo-vs-iwae.md. ``--tiny`` takes about 15 seconds
of CPU time per data set and pair (the test suite's setting).

    python examples/elbo_vs_iwae.py --datasets toy,digits --pairs gaussian --threads 1 \
        --out-dir runs/elbo_vs_iwae
    python examples/elbo_vs_iwae.py --datasets fashion-mnist --pairs gaussian --threads 1 \
        --out-dir runs/fm
    python examples/elbo_vs_iwae.py --compare --datasets digits --threads 1 --out-dir runs/cmp
    python examples/elbo_vs_iwae.py --tiny --datasets toy --threads 1 --out-dir runs/tiny
    # --write-docs also rewrites the matching tables (and figures) of docs/elbo-vs-iwae.md;
    # --tables-from runs/.../metrics.json redoes tables and figures without training

References:
    [1] Burda, Grosse, Salakhutdinov (2015), Importance Weighted Autoencoders.
    [2] Rainforth et al. (2018), Tighter Variational Bounds are Not Necessarily Better.
    [3] Tucker, Lawson, Gu, Maddison (2018), Doubly Reparameterized Gradient Estimators.
    [4] Cremer, Li, Duvenaud (2018), Inference Suboptimality in Variational Autoencoders.
    [5] Vehtari, Gelman, Gabry (2015), Pareto Smoothed Importance Sampling.
    [6] Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling (2016), Improving Variational
        Inference with Inverse Autoregressive Flow.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
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

from inference import (  # noqa: E402
    ais_log_evidence,
    amortization_gap,
    bound_sweep,
    exact_log_evidence,
    fit,
    fit_local_guide,
    log_importance_weights,
    weight_diagnostics,
)
from inference.evidence.weight_diagnostics import MIN_PARETO_SAMPLES  # noqa: E402
from inference.training.checkpoints import CheckpointError  # noqa: E402
from ppl_models import (  # noqa: E402
    DATASETS,
    VAE,
    FlowVAE,
    ToyManifold,
    ToyManifoldVAE,
    TwoLayerVAE,
    load_images,
    training_representation,
)
from scaffold.flags import (  # noqa: E402
    check_some_data,
    integer_in,
    numbers,
    positive_int,
    script_parser,
)
from scaffold.plots import save_figure  # noqa: E402
from scaffold.runs import finish_run, start_run, write_text  # noqa: E402

DOCS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "elbo-vs-iwae.md"
EVAL_KS = (1, 5, 50, 500, 5000)
#: objective name -> (loss of :func:`inference.fit`, particles per datapoint)
OBJECTIVES = {"elbo": ("elbo", 1), "iwae-5": ("iwae", 5), "iwae-50": ("iwae", 50),
              "dreg-5": ("dreg", 5), "dreg-50": ("dreg", 50)}
LABELS = {"elbo": "ELBO", "iwae-5": "IWAE, K=5", "iwae-50": "IWAE, K=50",
          "dreg-5": "DReG, K=5", "dreg-50": "DReG, K=50"}
KHAT_RELIABLE = 0.7  # above it importance sampling is unreliable (Vehtari et al. [5])
#: model/guide pairs: the VAE with its Gaussian guide, the same model with a flow guide, and
#: the model with two stochastic layers (its own Gaussian guides, bottom-up)
PAIRS = {"gaussian": "Gaussian guide", "flow": "IAF flow guide",
         "two-layer": "two stochastic layers"}
#: why a pair has no rows on a data set
PAIR_UNAVAILABLE = {
    ("toy", "flow"): ("the toy's latent is one-dimensional, and on one dimension an IAF step "
                      "is an affine map of z (given x): the flow guide's family is the "
                      "Gaussian guide's"),
    ("toy", "two-layer"): ("the toy's rows check every estimate against the exact evidence, "
                           "a quadrature over its single one-dimensional latent; a second "
                           "stochastic layer would leave nothing exact to compare with"),
}


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
    depth: int = 1  # deterministic layers of ``hidden`` units between x and z (Burda: 2)


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
# The three pairs side by side (--compare): the full training budgets, and on digits a third
# of the test points and 300 AIS steps instead of 1000, since AIS with the flow guide, whose
# density at the chains' points needs the IAF's sequential inverse, costs about seven times
# the Gaussian guide's (18 minutes of CPU time for the 12 models on digits, 16 on
# Fashion-MNIST).
COMPARE = {**FULL, "digits": replace(FULL["digits"], num_test=100, ais_steps=300)}
PRESETS = {"full": FULL, "tiny": TINY, "compare": COMPARE}


def load_dataset(name: str, budget: Budget, args) -> tuple:
    """``(train, test, make_pair)`` for a data set; ``make_pair(pair)`` builds a fresh model.

    Toy: ``[n, 16]`` points from :class:`ppl_models.ToyManifold`. Images: statically
    binarized ``[n, 1, H, W]``, Bernoulli pixels, MLP encoders and decoders with
    ``budget.depth`` layers of ``budget.hidden`` units (softplus): ``"gaussian"`` a
    :class:`ppl_models.VAE` with ``budget.latent_dim`` latents; ``"flow"`` the same model (the
    same initial decoder) with ``args.num_flows`` IAF steps after the Gaussian
    (:class:`ppl_models.FlowVAE`); ``"two-layer"`` a :class:`ppl_models.TwoLayerVAE` with the
    VAE's networks as its first stage (z1 of ``latent_dim`` units) and a second stage of
    ``hidden // 2`` units and ``latent_dim // 2`` latents.
    """
    if name == "toy":
        truth = ToyManifold(noise_scale=0.1)
        train, _ = truth.sample(budget.num_train, seed=args.seed)
        test, _ = truth.sample(budget.num_test, seed=args.seed + 1)
        return train, test, lambda pair: ToyManifoldVAE(hidden=budget.hidden)
    root = args.fashion_root if name == "fashion-mnist" else args.data_root
    data = load_images(name, root=root)
    train, test, _ = training_representation(data, "bernoulli", "static", args.seed)
    shape, d = data.image_shape, budget.latent_dim
    hidden = (budget.hidden,) * budget.depth
    top_hidden = (max(budget.hidden // 2, 1),) * budget.depth

    def make_pair(pair: str):
        if pair == "flow":
            return FlowVAE(shape, d, "bernoulli", hidden, num_flows=args.num_flows)
        if pair == "two-layer":
            return TwoLayerVAE(shape, d, max(d // 2, 1), "bernoulli", hidden=hidden,
                               top_hidden=top_hidden, activation="softplus")
        return VAE(shape, d, "bernoulli", "mlp", hidden)

    return train[:budget.num_train], test[:budget.num_test], make_pair


def dataset_available(name: str, args) -> str | None:
    """None when ``name`` can be loaded, else why not (the loader's message)."""
    if name in ("toy", "digits"):
        return None
    try:
        load_images(name, root=args.fashion_root if name == "fashion-mnist" else args.data_root)
    except (FileNotFoundError, OSError, ValueError) as error:
        return str(error)
    return None


def local_family_gaps(model, guide, local_guide, x: torch.Tensor, log_evidence: torch.Tensor,
                      num_steps: int, chunk_size: int, num_eval_samples: int = 1000,
                      progress: bool = True) -> dict:
    """Cremer et al.'s gaps [4] within the family of a pair's own local guide.

    ``local_guide`` (a pair's ``local_guide(x)``, a :class:`ppl_models.LocalGuide`: the
    guide with its x-dependent outputs freed per datapoint) starts at the amortized guide and
    is optimized by :func:`inference.fit_local_guide`, as :func:`inference.amortization_gap`
    optimizes its local Gaussians (same steps, learning rate and particles); both ELBOs from
    ``num_eval_samples`` draws. ``x: [n, ...]``, ``log_evidence: [n]``; returns tensors
    ``[n]`` in nats. ``progress``: the estimators' bars.
    """
    amortized = log_importance_weights(model, guide, x, num_samples=num_eval_samples,
                                       chunk_size=chunk_size, progress=progress).mean(0)
    fit_local_guide(model, local_guide, x, num_steps=num_steps, progress=progress)
    local = log_importance_weights(model, local_guide, x, num_samples=num_eval_samples,
                                   chunk_size=chunk_size, progress=progress).mean(0)
    return {"elbo_amortized": amortized, "elbo_local": local,
            "amortization_gap": local - amortized, "approximation_gap": log_evidence - local}


def evaluate(pair, test: torch.Tensor, budget: Budget, args,
             exact: torch.Tensor | None) -> dict:
    """Every estimate of ``log p(x)`` for one trained pair on ``test: [n, ...]``.

    Returns:
        JSON-ready dict: ``bounds`` (rows of :class:`inference.BoundTable`), ``ais`` and
        ``exact`` (mean and standard error over test points of per-point estimates, nats),
        ``k_hat`` and ``ess`` per test point, and the mean gaps over ``gap_points`` points:
        with :func:`inference.amortization_gap` (local Gaussians) for a pair without a
        ``local_guide`` method, else within the family of that local guide.
    """
    model, guide = pair.model, pair.guide
    ks = [k for k in EVAL_KS if k <= budget.max_k]
    pyro.set_rng_seed(args.seed)
    progress = not args.quiet  # the estimators' bars, as fit's
    table = bound_sweep(model, guide, test, num_samples=ks, repeats=args.repeats,
                        chunk_size=args.chunk_size, data_batch_size=args.eval_batch_size,
                        progress=progress)
    pyro.set_rng_seed(args.seed)
    ais = ais_log_evidence(model, guide, test, num_chains=budget.ais_chains,
                           num_steps=budget.ais_steps, progress=progress)
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
                                 chunk_size=args.chunk_size, progress=progress)
    result["k_hat"] = weights.pareto_k.tolist()
    result["ess_fraction"] = (weights.ess / budget.khat_k).tolist()
    best = exact if exact is not None else ais.log_evidence
    points = slice(0, budget.gap_points)
    pyro.set_rng_seed(args.seed)
    if hasattr(pair, "local_guide"):
        gaps = local_family_gaps(model, guide, pair.local_guide(test[points]), test[points],
                                 best[points], budget.gap_steps, args.chunk_size,
                                 progress=progress)
        family = "local"
    else:
        result_gaps = amortization_gap(model, guide, test[points], log_evidence=best[points],
                                       num_steps=budget.gap_steps, chunk_size=args.chunk_size,
                                       progress=progress)
        gaps = {k: getattr(result_gaps, k) for k in ("elbo_amortized", "elbo_local",
                                                     "amortization_gap", "approximation_gap")}
        family = "gaussian"
    result["gaps"] = {
        "num_points": int(gaps["amortization_gap"].shape[0]),
        "local_family": family,
        "log_evidence": float(best[points].mean()),
        "amortization": float(gaps["amortization_gap"].mean()),
        "approximation": float(gaps["approximation_gap"].mean()),
        "elbo_amortized": float(gaps["elbo_amortized"].mean()),
        "elbo_local": float(gaps["elbo_local"].mean()),
    }
    return result


def run_dataset(name: str, budget: Budget, args, device, out: Path) -> dict:
    """Train every requested pair with every objective on one data set and evaluate each.

    Each model's training checkpoint goes to ``out``; ``--resume`` reuses finished ones.
    """
    train, test, make_pair = load_dataset(name, budget, args)
    test = test.to(device)
    results = {"budget": asdict(budget), "pairs": {}, "skipped_pairs": {}}
    for pair_name in args.pairs:
        reason = PAIR_UNAVAILABLE.get((name, pair_name))
        if reason:
            print(f"{name}: no {pair_name} rows: {reason}")
            results["skipped_pairs"][pair_name] = reason
            continue
        models = {}
        for objective in args.objectives:
            loss, particles = OBJECTIVES[objective]
            pyro.clear_param_store()
            torch.manual_seed(args.seed)  # the same initial networks for every objective
            pair = make_pair(pair_name)
            tag = objective if pair_name == "gaussian" else f"{pair_name}_{objective}"
            history = fit(pair.model, pair.guide, train, loss=loss, num_particles=particles,
                          epochs=budget.epochs, batch_size=budget.batch_size, lr=budget.lr,
                          seed=args.seed, device=device, progress=not args.quiet,
                          checkpoint=out / f"checkpoint_{name}_{tag}.pt", resume=args.resume)
            pair.eval()
            exact = (exact_log_evidence(pair.model, test, progress=not args.quiet).log_evidence
                     if name == "toy" else None)
            metrics = evaluate(pair, test, budget, args, exact)
            metrics["train_seconds"] = sum(r["seconds"] for r in history)
            metrics["final_train_loss"] = history[-1]["train_loss"] if history else None
            models[objective] = metrics
        results["pairs"][pair_name] = {"label": PAIRS[pair_name], "models": models}
    return results


def pairs_of(results: dict) -> dict:
    """``{pair: {"models": ...}}`` of one data set's results (older files: the VAE only)."""
    if "pairs" in results:
        return results["pairs"]
    return {"gaussian": {"label": PAIRS["gaussian"], "models": results["models"]}}


# ---------------------------------------------------------------------------- tables


def _cell(entry: dict | None) -> str:
    if entry is None:
        return "n/a"
    if not entry["stderr"] or math.isnan(entry["stderr"]):  # exact, or a single repeat
        return f"{entry['mean']:.2f}"
    return f"{entry['mean']:.2f} ± {entry['stderr']:.2f}"


def _rows(pairs: dict):
    """``(first cells, objective, metrics)`` per model: the pair's name leads when a run
    holds more than one pair."""
    for pair, entry in pairs.items():
        for objective, m in entry["models"].items():
            lead = [PAIRS[pair]] if len(pairs) > 1 else []
            yield [*lead, LABELS[objective]], m


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


def _lead(pairs: dict) -> list[str]:
    return (["model and guide"] if len(pairs) > 1 else []) + ["trained with"]


def bounds_table(pairs: dict, budget: dict) -> str:
    """Markdown: one row per model, one column per estimate (nats per point)."""
    ks = [k for k in EVAL_KS if k <= budget["max_k"]]
    header = [*_lead(pairs), "ELBO", *[f"IWAE_{k}" for k in ks], "AIS", "exact"]
    rows = []
    for lead, m in _rows(pairs):
        bounds = {("elbo" if r["bound"] == "elbo" else f"iwae_{r['num_samples']}"): r
                  for r in m["bounds"]}
        rows.append([*lead, _cell(bounds["elbo"]), *[_cell(bounds[f"iwae_{k}"]) for k in ks],
                     _cell(m["ais"]), _cell(m.get("exact"))])
    return _markdown(header, rows)


def diagnostics_table(pairs: dict, budget: dict) -> str:
    """Markdown: k-hat and weight ESS of each model, and its gaps where the run holds a
    single pair (else :func:`gaps_table` has them)."""
    khat_k, points = budget["khat_k"], budget["gap_points"]
    header = [*_lead(pairs), "median k-hat", f"share k-hat > {KHAT_RELIABLE}",
              f"median ESS / {khat_k}"]
    single = len(pairs) == 1
    if single:
        header += [f"amortization gap (first {points})", f"approximation gap (first {points})"]
    rows = []
    for lead, m in _rows(pairs):
        k_hat = torch.tensor(m["k_hat"])
        ess = torch.tensor(m["ess_fraction"])
        cells = [*lead, f"{float(k_hat.median()):.2f}",
                 f"{float((k_hat > KHAT_RELIABLE).float().mean()):.2f}",
                 f"{float(ess.median()):.3f}"]
        if single:
            cells += [f"{m['gaps']['amortization']:.2f}", f"{m['gaps']['approximation']:.2f}"]
        rows.append(cells)
    return _markdown(header, rows)


def gaps_table(pairs: dict, budget: dict) -> str:
    """Markdown: Cremer et al.'s split of ``log p(x) - ELBO`` [4] for every model.

    Means over the first ``gap_points`` test points: ``log p(x)`` (exact or AIS), the
    amortized ELBO, the ELBO of the best local guide of the pair's family, and the two gaps,
    which add up to ``log p(x) - ELBO``.
    """
    points = budget["gap_points"]
    header = [*_lead(pairs), f"log p(x) (first {points})", "ELBO", "ELBO, local guide",
              "approximation gap", "amortization gap"]
    rows = []
    for lead, m in _rows(pairs):
        g = m["gaps"]
        rows.append([*lead, f"{g['log_evidence']:.2f}", f"{g['elbo_amortized']:.2f}",
                     f"{g['elbo_local']:.2f}", f"{g['approximation']:.2f}",
                     f"{g['amortization']:.2f}"])
    return _markdown(header, rows)


def render_tables(metrics: dict, tag: str) -> dict[str, str]:
    """Markdown tables by name, per data set: ``<dataset>-<tag>-bounds`` and
    ``-diagnostics`` (a row per pair and objective), and ``-gaps`` where the run holds more
    than one pair."""
    tables = {}
    for name, results in metrics["datasets"].items():
        pairs = pairs_of(results)
        tables[f"{name}-{tag}-bounds"] = bounds_table(pairs, results["budget"])
        tables[f"{name}-{tag}-diagnostics"] = diagnostics_table(pairs, results["budget"])
        if len(pairs) > 1:
            tables[f"{name}-{tag}-gaps"] = gaps_table(pairs, results["budget"])
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
    write_text(path, text)
    return sorted(tables)


def check_docs_page(page: Path, tag: str, datasets) -> None:
    """Before any work: ``SystemExit`` naming ``--docs-page`` unless ``page`` is a UTF-8 file
    with the markers of each data set's bounds and diagnostics tables (``--write-docs``
    replaced them only after the whole run, and a folder failed with a traceback)."""
    if not page.is_file():
        raise SystemExit(f"--docs-page {page}: {'a folder' if page.is_dir() else 'no such file'}"
                         "; --write-docs replaces the marked tables of a page")
    try:
        present = read_doc_tables(page.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise SystemExit(f"--docs-page {page} cannot be read: {error}") from None
    missing = [f"{name}-{tag}-{kind}" for name in datasets for kind in ("bounds", "diagnostics")
               if f"{name}-{tag}-{kind}" not in present]
    if missing:
        raise SystemExit(f"--docs-page {page} has no '<!-- table:NAME -->' markers for "
                         f"{missing}; --write-docs would fail after the run")


def write_csv(metrics: dict, path: Path) -> None:
    """One row per data set, objective and estimate: mean and standard error in nats
    (written atomically)."""
    with io.StringIO(newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dataset", "pair", "trained_with", "estimate", "mean_nats",
                         "stderr_nats"])
        for name, results in metrics["datasets"].items():
            for pair, entry in pairs_of(results).items():
                for objective, m in entry["models"].items():
                    for r in m["bounds"]:
                        label = "elbo" if r["bound"] == "elbo" else f"iwae_{r['num_samples']}"
                        writer.writerow([name, pair, objective, label, r["mean"], r["stderr"]])
                    for label in ("ais", "exact"):
                        if label in m:
                            writer.writerow([name, pair, objective, label, m[label]["mean"],
                                             m[label]["stderr"]])
        write_text(path, handle.getvalue())


# ---------------------------------------------------------------------------- figures


def _grid(pairs: dict, sharey: bool, width: float = 3.2, height: float = 2.8):
    """One row of panels per pair, one panel per objective; yields ``(ax, title, metrics)``
    and returns the figure and the first column's axes."""
    columns = max(len(e["models"]) for e in pairs.values())
    fig, axes = plt.subplots(len(pairs), columns, figsize=(width * columns, height * len(pairs)),
                             squeeze=False, sharey=sharey)
    if len(pairs) > 1:
        fig.subplots_adjust(hspace=0.55, wspace=0.3)
    panels = []
    for row, (pair, entry) in zip(axes, pairs.items()):
        for ax, (objective, m) in zip(row, entry["models"].items()):
            title = f"trained with {LABELS[objective]}"
            panels.append((ax, title if len(pairs) == 1 else f"{PAIRS[pair]}\n{title}", m))
        for ax in row[len(entry["models"]):]:
            ax.set_visible(False)
    return fig, axes[:, 0], panels


def plot_bounds(name: str, pairs: dict, path: Path) -> None:
    """IWAE_K (±2 s.e.) against K per model, ELBO dotted, exact or AIS dashed."""
    fig, first, panels = _grid(pairs, sharey=False)  # the ELBOs can lie tens of nats apart
    for ax, title, m in panels:
        rows = [r for r in m["bounds"] if r["bound"] == "iwae"]
        ax.errorbar([r["num_samples"] for r in rows], [r["mean"] for r in rows],
                    yerr=[2 * r["stderr"] for r in rows], marker="o", capsize=3,
                    label="IWAE_K")
        reference, label = (m["exact"], "exact") if "exact" in m else (m["ais"], "AIS")
        ax.axhline(reference["mean"], color="k", linestyle="--", label=label)
        ax.axhline(m["bounds"][0]["mean"], color="C3", linestyle=":", label="ELBO")
        ax.set_xscale("log")
        ax.set_xlabel("K (evaluation)")
        ax.set_title(title, fontsize=9)
    for ax in first:
        ax.set_ylabel("nats per test point")
    first[0].legend(fontsize=7)
    fig.suptitle(name, y=1.04 if len(first) == 1 else 0.96)
    save_figure(fig, path)


def plot_khat(name: str, pairs: dict, path: Path) -> None:
    """Histogram of the test points' k-hat per model, with the 0.7 reliability line."""
    values = torch.tensor([k for e in pairs.values() for m in e["models"].values()
                           for k in m["k_hat"]])
    finite = values[torch.isfinite(values)]
    low = min(float(finite.min()), 0.0) if finite.numel() else 0.0
    high = max(float(finite.max()), 1.0) if finite.numel() else 1.0
    bins = torch.linspace(low, high, 31).tolist()  # shared, so the panels compare
    fig, first, panels = _grid(pairs, sharey=True)
    for ax, title, m in panels:
        ax.hist(m["k_hat"], bins=bins, color="C0")
        ax.axvline(KHAT_RELIABLE, color="k", linestyle="--")
        ax.set_xlabel("Pareto k-hat")
        ax.set_title(title, fontsize=9)
    for ax in first:
        ax.set_ylabel("test points")
    fig.suptitle(f"{name}: k-hat of the importance weights (> {KHAT_RELIABLE}: unreliable)",
                 y=1.04 if len(first) == 1 else 0.96)
    save_figure(fig, path)


def plot_gaps(name: str, pairs: dict, path: Path) -> None:
    """Stacked bars: approximation gap below, amortization gap on top (= log p - ELBO)."""
    bars = {(LABELS[o] if len(pairs) == 1 else f"{PAIRS[p]}\n{LABELS[o]}"): m
            for p, e in pairs.items() for o, m in e["models"].items()}
    labels = list(bars)
    approximation = [m["gaps"]["approximation"] for m in bars.values()]
    amortization = [m["gaps"]["amortization"] for m in bars.values()]
    fig, ax = plt.subplots(figsize=(1.4 * len(bars) + 2, 3))
    ax.bar(labels, approximation, label="approximation gap")
    ax.bar(labels, amortization, bottom=approximation, label="amortization gap")
    ax.set_ylabel("nats per test point")
    ax.set_title(f"{name}: log p(x) - ELBO split as in Cremer et al. (2018)", fontsize=9)
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelsize=8 if len(pairs) == 1 else 6)
    save_figure(fig, path)


# ---------------------------------------------------------------------------- main


def report(metrics: dict, out: Path, args) -> dict[str, str]:
    """Write figures, ``tables.md`` and ``results.csv`` (and the docs tables if asked).

    With ``--write-docs`` the full and the compare runs also copy their figures next to the
    page, as ``figures/elbo_vs_iwae_[compare_]<kind>_<dataset>.png``.
    """
    for name, results in metrics["datasets"].items():
        pairs = pairs_of(results)
        if not pairs:  # every pair asked for is unavailable here (the toy's flow)
            continue
        plot_bounds(name, pairs, out / f"bounds_vs_k_{name}.png")
        plot_khat(name, pairs, out / f"khat_{name}.png")
        plot_gaps(name, pairs, out / f"gaps_{name}.png")
    tables = render_tables(metrics, metrics["preset"])
    write_text(out / "tables.md",
               "\n\n".join(f"{name}\n\n{table}" for name, table in tables.items()) + "\n")
    write_csv(metrics, out / "results.csv")
    if args.write_docs:
        page = Path(args.docs_page)
        written = write_doc_tables(page, tables)
        print(f"updated {len(written)} tables in {page}")
        if metrics["preset"] != "tiny":  # the page shows the full and compare runs' figures
            folder = page.parent / "figures"
            folder.mkdir(exist_ok=True)
            prefix = "elbo_vs_iwae_" + ("" if metrics["preset"] == "full" else "compare_")
            for name, results in metrics["datasets"].items():
                for kind in ("bounds_vs_k", "khat", "gaps") if pairs_of(results) else ():
                    shutil.copyfile(out / f"{kind}_{name}.png",
                                    folder / f"{prefix}{kind}_{name}.png")
    return tables


def _finished_run(path: Path) -> dict:
    """The metrics of a finished run for ``--tables-from``; ``ValueError`` naming the file
    when it is a folder, not JSON, or not this example's ``metrics.json``."""
    if path.is_dir():
        raise ValueError(f"--tables-from {path} is a folder; pass its metrics.json")
    try:
        metrics = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"--tables-from {path} is not JSON ({error})") from None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("datasets"), dict):
        raise ValueError(f"--tables-from {path} is not the metrics.json of an elbo_vs_iwae "
                         "run (no 'datasets')")
    return metrics


def main(args: argparse.Namespace) -> dict:
    out, device, start = start_run(args)
    if args.tables_from:
        # Re-render figures and tables of a finished run without training anything.
        metrics = _finished_run(Path(args.tables_from))
        if args.write_docs:
            check_docs_page(Path(args.docs_page), metrics.get("preset", ""), metrics["datasets"])
        tables = report(metrics, out, args)
        for name, table in tables.items():
            print(f"\n{name}\n{table}")
        return metrics
    preset = "tiny" if args.tiny else "compare" if args.compare else "full"
    reasons = {name: dataset_available(name, args) for name in args.datasets}
    check_some_data("elbo_vs_iwae", reasons,  # none can load: an error now, not empty results
                    {"fashion-mnist": ("--fashion-root", args.fashion_root),
                     "mnist": ("--data-root", args.data_root)})
    if args.write_docs:
        check_docs_page(Path(args.docs_page), preset,
                        [name for name, reason in reasons.items() if not reason])
    presets = PRESETS[preset]
    metrics = {"units": "nats per test point, mean over test points; standard error over "
                        "repeats (bounds) or over test points (AIS)",
               "preset": preset, "datasets": {}, "skipped": {},
               "config": vars(args), "device": str(device)}
    for name in tqdm(args.datasets, desc="data sets", disable=args.quiet):
        reason = reasons[name]
        if reason:
            print(f"{name} skipped: {reason}")
            metrics["skipped"][name] = f"{name} skipped: {reason}"
            continue
        budget = dataset_budget(presets[name], args)
        metrics["datasets"][name] = run_dataset(name, budget, args, device, out)
    finish_run(out, metrics, start, "metrics.json, tables.md, results.csv, figures")
    tables = report(metrics, out, args)
    for name, table in tables.items():
        print(f"\n{name}\n{table}")
    return metrics


def dataset_budget(preset: Budget, args) -> Budget:
    """A data set's ``preset`` budget with the flags that override it; ``--max-k`` caps the
    particles of k-hat too (it evaluates at most that many importance weights anywhere)."""
    overrides = {k: getattr(args, k) for k in ("num_train", "num_test", "epochs", "max_k",
                                               "hidden", "latent_dim", "depth", "ais_steps")
                 if getattr(args, k) is not None}
    if args.max_k is not None:
        overrides["khat_k"] = min(preset.khat_k, args.max_k)
    return replace(preset, **overrides)


def _names(choices):
    def parse(text: str) -> list[str]:
        names = [n for n in text.split(",") if n]
        unknown = [n for n in names if n not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {unknown or 'empty list'}; choose from {', '.join(choices)}")
        repeated = [n for i, n in enumerate(names) if n in names[:i]]
        if repeated:  # a repeat ran again and replaced the first run's checkpoints
            raise argparse.ArgumentTypeError(
                f"{', '.join(dict.fromkeys(repeated))} given more than once; each value is run "
                "once, its results keyed by it")
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
    parser.add_argument("--pairs", type=_names(tuple(PAIRS)), default=list(PAIRS),
                        help="comma-separated model/guide pairs: gaussian (the VAE), flow "
                             "(the VAE's model with an IAF flow guide), two-layer (two "
                             "stochastic layers); the toy has the gaussian pair only")
    parser.add_argument("--num-flows", type=positive_int, default=2,
                        help="IAF steps of the flow guide")
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--tiny", action="store_true",
                        help="tiny sizes for every data set (seconds; the test suite's setting)")
    preset.add_argument("--compare", action="store_true",
                        help="the budgets of the pairs' comparison on the page (tables "
                             "tagged 'compare')")
    for name in ("num-train", "num-test", "epochs", "ais-steps"):
        parser.add_argument(f"--{name}", type=positive_int, default=None,
                            help="override every data set")
    parser.add_argument("--max-k", type=integer_in(MIN_PARETO_SAMPLES, EVAL_KS[-1]),
                        default=None,
                        help=f"largest evaluation K (default: the preset's); k-hat then uses "
                             f"at most as many importance weights, and needs "
                             f"{MIN_PARETO_SAMPLES}")
    parser.add_argument("--hidden", type=positive_int, default=None,
                        help="units of the hidden layers (every data set; the two-layer "
                             "pair's upper stage has half as many)")
    parser.add_argument("--latent-dim", type=positive_int, default=None,
                        help="latents of the VAE and of z1 (image data sets; z2 has half)")
    parser.add_argument("--depth", type=positive_int, default=None,
                        help="deterministic layers per stage (image data sets; Burda et al.: 2)")
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
    args = parser.parse_args(argv)
    if not args.tables_from and all((name, pair) in PAIR_UNAVAILABLE
                                    for name in args.datasets for pair in args.pairs):
        parser.error(f"argument --pairs: none of {','.join(args.pairs)} runs on "
                     f"{','.join(args.datasets)} (the toy has the gaussian pair only)")
    # a root for a data set the run does not load was silently ignored (a user's MNIST
    # folder with the default --datasets, which hold no mnist)
    for flag, root, name in (("--data-root", args.data_root, "mnist"),
                             ("--fashion-root", args.fashion_root, "fashion-mnist")):
        if root is not None and name not in args.datasets and not args.tables_from:
            parser.error(f"argument {flag}: the folder of the {name} files, but --datasets "
                         f"({','.join(args.datasets)}) holds no {name}: add {name} to "
                         f"--datasets, or leave out {flag}")
    return args


if __name__ == "__main__":
    try:
        main(parse_args())
    except CheckpointError as error:  # --resume met a checkpoint of another run
        raise SystemExit(f"elbo_vs_iwae: {error}") from None
    except (FileNotFoundError, ValueError, FloatingPointError) as error:  # no data; diverged
        raise SystemExit(f"elbo_vs_iwae: {error}") from None
    except KeyboardInterrupt:
        raise SystemExit("elbo_vs_iwae: interrupted; finished models are in --out-dir's "
                         "checkpoints: run again with --resume to continue") from None
