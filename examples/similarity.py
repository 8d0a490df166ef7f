"""Finding similar items: nearest neighbours in a VAE's posterior-mean space and in other
representations, scored by precision@10 of the class labels, on digits and Fashion-MNIST.

Every representation is a callable ``embed(x: [batch, C, H, W]) -> [batch, d]`` built from the
training images (the list ``REPRESENTATIONS``; adding one is one line there):

- ``vae``: posterior means ``E_q[z | x]`` of a Bernoulli VAE (:func:`inference.posterior_means`);
- ``flow guide``: ``z_T(mu(x))`` of a VAE whose guide adds two inverse autoregressive flow
  steps to the Gaussian (:class:`ppl_models.FlowVAE`, its ``representation``);
- ``autoencoder``: codes of a deterministic autoencoder with the same networks;
- ``pca``: the first ``--latent-dim`` principal components of the training pixels;
- ``pixels``: the raw pixels.

All see the same statically binarized images. The gallery is the training split (the first
``--num-train`` images), the queries the test split (the first ``--num-test``). For each query
the ``k = --k`` nearest gallery items by **Euclidean distance** (features as they come, not
standardized; the VAE's prior already puts its means on a unit scale) are retrieved, and
precision@k is the fraction with the query's label, averaged over queries; the same with
cosine similarity is reported beside it. Chance is ``sum_c p_c^2``, about 0.1 for these
balanced ten-class sets. Fashion-MNIST is read from ``--fashion-root`` (default
``/usr/share/datasets/fashion-mnist``, ``make data``); when its files are missing the data set
is skipped with a message (kept in ``metrics.json``), unless no data set asked for can be
loaded: then the run stops with an error before any training.

Figures ``similarity_<dataset>.png``: a few queries (one per class) and their ``--k`` nearest
neighbours in every representation, wrong labels framed in red.

Expected with the defaults (about a minute of CPU time, 4 minutes on our busy 2-core
machine): precision@10 (Euclidean) on digits 0.70 / 0.68 / 0.72 / 0.74 / 0.71 for VAE / flow
guide / autoencoder / PCA / pixels, all within about four standard errors (0.016-0.018); on
Fashion-MNIST 0.72 / 0.72 / 0.74 / 0.71 / 0.66, the 16-number codes clearly ahead of the 784
pixels. See docs/similarity.md.

    python examples/similarity.py --out-dir runs/similarity
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pyro
import torch
from tqdm.auto import tqdm

from inference import fit, posterior_means
from scaffold.plots import save_figure
from scaffold.features import fit_pca
from scaffold.flags import (
    check_count,
    check_distinct,
    check_network_sizes,
    check_some_data,
    flag_error,
    nonnegative_int,
    positive_float,
    positive_int,
    script_parser,
    step_count,
)
from scaffold.runs import finish_run, run_script, start_run
from ppl_models.data import load_images
from ppl_models import FlowVAE
from ppl_models.vae import VAE, Autoencoder

Embed = Callable[[torch.Tensor], torch.Tensor]
# builder(train_x: [n, C, H, W], args, device) -> embed
Builder = Callable[[torch.Tensor, argparse.Namespace, torch.device], Embed]

# Sizes and training epochs per data set, used where the flags leave them unset.
DEFAULTS = {"digits": {"num_train": 1297, "num_test": 300, "epochs": 100},
            "fashion-mnist": {"num_train": 10000, "num_test": 1000, "epochs": 10}}


def trained(make_model: Callable, embed_with: Callable) -> Builder:
    """A builder that trains ``make_model(image_shape, args)`` (a model/guide pair) with
    :func:`inference.fit` and embeds with ``embed_with(model, x) -> [batch, d]``."""
    def build(train_x: torch.Tensor, args, device) -> Embed:
        model = make_model(tuple(train_x.shape[1:]), args)
        pyro.clear_param_store()
        fit(model.model, model.guide, train_x, epochs=args.epochs, batch_size=args.batch_size,
            lr=args.lr, seed=args.seed, device=device)
        model.eval()
        return lambda x: embed_with(model, x.to(device))
    return build


def pca_projection(train_x: torch.Tensor, args, device) -> Embed:
    """Projection on the first ``args.latent_dim`` principal axes of the pixels of
    ``train_x: [n, C, H, W]`` (at
    most as many as pixels and training images: the ``dim`` of its results)."""
    pca = fit_pca(train_x.flatten(1).numpy(), args.latent_dim, args.seed)
    return lambda x: torch.from_numpy(pca.transform(x.flatten(1).cpu().numpy())).float()


def raw_pixels(train_x: torch.Tensor, args, device) -> Embed:
    """The pixels themselves, ``[batch, C H W]``."""
    return lambda x: x.flatten(1)


# (name, builder): the representations compared, in the order of the tables and figures.
# Adding one is one line, e.g. a VAE with a flow guide that has ``representation(x)``:
#   ("flow_vae", trained(lambda shape, a: FlowVAE(shape, a.latent_dim, hidden=(a.hidden,)),
#                        lambda m, x: m.representation(x))),
# make(image_shape, args) of each trained representation's model
MODELS = {
    "vae": lambda shape, a: VAE(shape, a.latent_dim, hidden=(a.hidden,)),
    "flow guide": lambda shape, a: FlowVAE(shape, a.latent_dim, hidden=(a.hidden,)),
    "autoencoder": lambda shape, a: Autoencoder(shape, a.latent_dim, hidden=(a.hidden,)),
}
REPRESENTATIONS: list[tuple[str, Builder]] = [
    ("vae", trained(MODELS["vae"], lambda m, x: posterior_means(m.guide, x))),
    ("flow guide", trained(MODELS["flow guide"], lambda m, x: m.representation(x))),
    ("autoencoder", trained(MODELS["autoencoder"], lambda m, x: m.encode(x))),
    ("pca", pca_projection),
    ("pixels", raw_pixels),
]


@torch.no_grad()
def embed_all(embed: Embed, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """``embed`` over ``x: [n, C, H, W]`` in batches -> float ``[n, d]`` on the CPU."""
    parts = [embed(x[i:i + batch_size]).detach().float().cpu()
             for i in range(0, len(x), batch_size)]
    features = torch.cat(parts)
    if features.dim() != 2 or len(features) != len(x):
        raise ValueError(f"an embedding must map [n, ...] to [n, d], got {list(features.shape)}")
    return features


def nearest_neighbours(queries: torch.Tensor, gallery: torch.Tensor, k: int,
                       metric: str = "euclidean") -> torch.Tensor:
    """Indices ``[m, k]`` of the ``k`` gallery rows (``gallery: [n, d]``) nearest to each of
    ``queries: [m, d]``, nearest first; ``metric`` ``"euclidean"`` or ``"cosine"``."""
    if queries.dim() != 2 or gallery.dim() != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"queries [m, d] and gallery [n, d] must share d, got "
                         f"{list(queries.shape)} and {list(gallery.shape)}")
    if not 1 <= k <= len(gallery):
        raise ValueError(f"k must lie in 1..{len(gallery)} (the gallery size), got {k}")
    if metric == "euclidean":
        score = -torch.cdist(queries.double(), gallery.double())
    elif metric == "cosine":
        unit = torch.nn.functional.normalize
        score = unit(queries.double(), dim=1) @ unit(gallery.double(), dim=1).T
    else:
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
    return score.topk(k, dim=1).indices


def precision_at_k(neighbours: torch.Tensor, query_labels: torch.Tensor,
                   gallery_labels: torch.Tensor) -> tuple[float, float, dict]:
    """Mean fraction of the neighbours ``[m, k]`` (gallery indices) whose label is the
    query's, its standard error over the ``m`` queries, and the mean per query class
    ``{class: value}``."""
    if neighbours.dim() != 2 or len(neighbours) != len(query_labels):
        raise ValueError(f"neighbours must be [m, k] with m = {len(query_labels)} queries, got "
                         f"{list(neighbours.shape)}")
    hits = (gallery_labels[neighbours] == query_labels[:, None]).double().mean(1)  # [m]
    per_class = {int(c): float(hits[query_labels == c].mean()) for c in query_labels.unique()}
    stderr = float(hits.std() / len(hits) ** 0.5) if len(hits) > 1 else float("nan")
    return float(hits.mean()), stderr, per_class


def plot(neighbours: dict, query_x, query_y, gallery_x, gallery_y, path: Path,
         num_queries: int) -> None:
    """Rows: for each of ``num_queries`` queries (the first of each class), the query and its
    neighbours in every representation; wrong labels framed in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = query_y.unique()[:num_queries]
    chosen = [int((query_y == c).nonzero()[0, 0]) for c in classes]
    names = list(neighbours)
    k = next(iter(neighbours.values())).shape[1]
    rows = len(chosen) * len(names)
    fig, axes = plt.subplots(rows, k + 1, figsize=(0.6 * (k + 1), 0.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for q, query in enumerate(chosen):
        for r, name in enumerate(names):
            row = axes[q * len(names) + r]
            row[0].imshow(query_x[query, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            row[0].set_ylabel(name, fontsize=6, rotation=0, ha="right", va="center")
            for ax, index in zip(row[1:], neighbours[name][query]):
                ax.imshow(gallery_x[index, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
                wrong = int(gallery_y[index]) != int(query_y[query])
                for side in ax.spines.values():
                    side.set_edgecolor("red" if wrong else "white")
                    side.set_linewidth(2 if wrong else 0.5)
    fig.suptitle(f"query | {k} nearest training images (Euclidean); red: another class",
                 fontsize=8)
    save_figure(fig, path)


def gallery_and_queries(name: str, args) -> dict:
    """One data set's gallery and queries (module docstring), its sizes and epochs, with
    ``--k`` checked against the gallery: ``SystemExit`` naming it (and ``--num-train``)
    before anything is trained. Raises ``FileNotFoundError`` when the data are missing."""
    root = args.fashion_root if name == "fashion-mnist" else None
    data = load_images(name, root=root).binarized(args.seed)
    check_count("similarity", "--num-train", args.num_train, len(data.train),
                f"the {name} training split")
    check_count("similarity", "--num-test", args.num_test, len(data.test), f"the {name} test split")
    # an unset flag (None) takes the data set's default; --num-train/--num-test 0 mean the
    # whole split, as in the other examples, and --epochs 0 leaves the networks untrained
    sizes = {key: value if getattr(args, key) is None else getattr(args, key)
             for key, value in DEFAULTS[name].items()}
    sizes["num_train"] = sizes["num_train"] or len(data.train)
    sizes["num_test"] = sizes["num_test"] or len(data.test)
    split = {"num_classes": data.num_classes, "epochs": sizes["epochs"],
             # copies, so that the rest of a large data set is not kept in memory
             "gallery": (data.train.images[:sizes["num_train"]].clone(),
                         data.train.labels[:sizes["num_train"]].clone()),
             "queries": (data.test.images[:sizes["num_test"]].clone(),
                         data.test.labels[:sizes["num_test"]].clone())}
    gallery_size = len(split["gallery"][0])
    if args.k > gallery_size:
        raise flag_error("similarity", "--k", f"must lie in 1..{gallery_size}, the {name} "
                         f"gallery's size (--num-train), got {args.k}")
    return split


def run_dataset(name: str, split: dict, args, device, out: Path) -> dict:
    """Precision@k of every representation on one data set (module docstring), ``split``
    from :func:`gallery_and_queries`."""
    run_args = argparse.Namespace(**{**vars(args), "epochs": split["epochs"]})
    (gallery_x, gallery_y), (query_x, query_y) = split["gallery"], split["queries"]
    results, neighbours = {}, {}
    for rep_name, build in tqdm(REPRESENTATIONS, desc=name):
        tic = time.perf_counter()
        embed = build(gallery_x, run_args, device)
        gallery_f, query_f = embed_all(embed, gallery_x), embed_all(embed, query_x)
        row = {"dim": int(gallery_f.shape[1])}
        for metric in ("euclidean", "cosine"):
            found = nearest_neighbours(query_f, gallery_f, args.k, metric)
            (row[f"precision_at_{args.k}_{metric}"], row[f"stderr_{metric}"],
             row[f"per_class_{metric}"]) = precision_at_k(found, query_y, gallery_y)
            if metric == "euclidean":
                neighbours[rep_name] = found
        row["seconds"] = time.perf_counter() - tic
        results[rep_name] = row
    frequencies = (torch.bincount(gallery_y, minlength=split["num_classes"]).double()
                   / len(gallery_y))
    plot(neighbours, query_x, query_y, gallery_x, gallery_y, out / f"similarity_{name}.png",
         args.num_queries)
    return {"num_gallery": len(gallery_x), "num_queries": len(query_x),
            "epochs": split["epochs"],
            "chance_precision": float((frequencies ** 2).sum()), "results": results}


def main(args: argparse.Namespace) -> dict:
    out, device, start = start_run(args)
    splits, datasets, skipped = {}, {}, {}
    for name in args.datasets:  # every data set loaded and checked before any training
        try:
            splits[name] = gallery_and_queries(name, args)
        except (OSError, ValueError) as error:  # missing files, a root that is a file
            skipped[name] = str(error)
    check_some_data("similarity", {name: skipped.get(name) for name in args.datasets},
                    {"fashion-mnist": ("--fashion-root", args.fashion_root)})
    for name, reason in skipped.items():
        print(f"skipping {name}: {reason}")
    for split in splits.values():  # networks too large for memory: a usage error, now
        shape = tuple(split["gallery"][0].shape[1:])
        check_network_sizes("similarity", *(partial(make, shape, args) for make in MODELS.values()))
    for name, split in splits.items():
        datasets[name] = run_dataset(name, split, args, device, out)
    metrics = {
        "k": args.k, "distance": "euclidean (cosine beside it)",
        "units": f"precision_at_{args.k}: mean over test queries of the fraction of the "
                 f"{args.k} nearest training images with the query's label; stderr: its "
                 f"standard error over the queries",
        "datasets": datasets, "skipped": skipped,
        "config": vars(args), "device": str(device),
    }
    finish_run(out, metrics, start)
    for name, entry in datasets.items():
        print(f"{name}: precision@{args.k} ({entry['num_queries']} queries, "
              f"{entry['num_gallery']} gallery images, chance {entry['chance_precision']:.3f})")
        print(f"{'representation':<16}{'dim':>6}{'euclidean':>11}{'(s.e.)':>8}{'cosine':>9}")
        for rep, row in entry["results"].items():
            print(f"{rep:<16}{row['dim']:>6}{row[f'precision_at_{args.k}_euclidean']:>11.3f}"
                  f"{row['stderr_euclidean']:>8.3f}{row[f'precision_at_{args.k}_cosine']:>9.3f}")
    return metrics


def parse_args(argv=None) -> argparse.Namespace:
    parser = script_parser(__doc__, "runs/similarity")
    parser.add_argument("--datasets", nargs="+", choices=list(DEFAULTS),
                        default=list(DEFAULTS))
    parser.add_argument("--fashion-root", default=None,
                        help="folder of the Fashion-MNIST IDX files (default: the Debian one)")
    parser.add_argument("--num-train", type=nonnegative_int, default=None,
                        help="gallery = first N training images (0: all; default: 1297 "
                             "digits, 10000 Fashion-MNIST)")
    parser.add_argument("--num-test", type=nonnegative_int, default=None,
                        help="queries = first N test images (0: all; default: 300 digits, "
                             "1000 Fashion-MNIST)")
    parser.add_argument("--epochs", type=step_count, default=None,
                        help="VAE and autoencoder epochs (0: untrained networks; default: 100 "
                             "digits, 10 Fashion-MNIST)")
    parser.add_argument("--latent-dim", type=positive_int, default=16)
    parser.add_argument("--hidden", type=positive_int, default=200)
    parser.add_argument("--k", type=positive_int, default=10, help="neighbours per query")
    parser.add_argument("--num-queries", type=positive_int, default=4,
                        help="queries in the figures")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--lr", type=positive_float, default=1e-3)
    args = parser.parse_args(argv)
    if args.fashion_root is not None and "fashion-mnist" not in args.datasets:
        # silently ignored before: the run had no fashion-mnist to read it for
        parser.error(f"argument --fashion-root: the folder of the fashion-mnist files, but "
                     f"--datasets ({' '.join(args.datasets)}) holds no fashion-mnist: add it "
                     f"to --datasets, or leave out --fashion-root")
    check_distinct(parser, args, "datasets")
    return args


if __name__ == "__main__":
    run_script("similarity", main, parse_args())
