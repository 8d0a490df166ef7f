"""Representations: latent codes as features (probe accuracy) and as clusters (ARI), on digits.

Trains on the statically binarized 8x8 digits, all with ``--latent-dim`` units: a Bernoulli VAE
(features: posterior means), a deterministic autoencoder and a sparse autoencoder (L1 weight
``--sparsity`` on the code; features: codes), and PCA of the pixels (at most as many
components as pixels and training images; each representation's ``dim`` is in metrics.json);
the raw 64 pixels are the baseline. For each representation it reports on the test split

- ``probe_accuracy``: a logistic-regression probe trained on the training features
  (:func:`inference.probe_accuracy`), how linearly the classes can be read out;
- ``kmeans_ari``: k-means with ``k = 10`` (``--restarts`` of them) fitted to the training
  features and applied to the test features, scored by the adjusted Rand index against the labels
  (Hubert and Arabie 1985; 0 for chance, 1 for the labels' partition up to renaming);
- ``gmm_ari``: the same with a full-covariance Gaussian mixture of 10 components.

Features are standardized (training mean and scale) before clustering so no unit dominates.
Figure: each representation's test features projected on their first two principal axes,
coloured by label, and a bar chart of the three numbers.

Expected with the defaults (ten minutes on our busy 2-core machine, about three idle): probes
0.80-0.84 for every representation, raw pixels best (8x8 digits are nearly linearly
separable); k-means ARI 0.27 on the VAE means against 0.54-0.56 for the autoencoders and PCA,
GMM ARI 0.49-0.58. See docs/representations.md.

    python examples/representations.py --out-dir runs/representations
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyro
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from inference import fit, posterior_means, probe_accuracy
from scaffold.plots import save_figure
from scaffold.features import fit_pca
from scaffold.flags import (
    check_count,
    nonnegative_float,
    nonnegative_int,
    numbers,
    positive_int,
    refused_as_usage,
    script_parser,
    training_flags,
)
from scaffold.runs import finish_run, run_script, start_run
from ppl_models.data import load_images
from ppl_models.vae import VAE, Autoencoder

NUM_CLUSTERS = 10  # the digits' classes


def cluster_scores(train: np.ndarray, test: np.ndarray, test_labels: np.ndarray,
                   num_clusters: int, seed: int, restarts: int = 10) -> dict:
    """ARI of k-means and of a Gaussian mixture fitted on ``train: [n, k]``, applied to
    ``test: [m, k]``, against ``test_labels: [m]``."""
    scaler = StandardScaler().fit(train)
    train, test = scaler.transform(train), scaler.transform(test)
    kmeans = KMeans(num_clusters, n_init=restarts, random_state=seed).fit(train)
    gmm = GaussianMixture(num_clusters, n_init=max(1, restarts // 3), random_state=seed,
                          reg_covar=1e-4).fit(train)
    return {"kmeans_ari": float(adjusted_rand_score(test_labels, kmeans.predict(test))),
            "gmm_ari": float(adjusted_rand_score(test_labels, gmm.predict(test)))}


def representations(args, train_x: torch.Tensor, test_x: torch.Tensor, device) -> tuple:
    """``{name: (train features [n, k], test features [m, k])}`` and the training histories."""
    shape = tuple(train_x.shape[1:])
    features, histories = {}, {}
    with refused_as_usage("representations"):  # networks too large for memory
        models = {
            "vae": VAE(shape, args.latent_dim, hidden=(args.hidden,)),
            "autoencoder": Autoencoder(shape, args.latent_dim, hidden=(args.hidden,)),
            "sparse_autoencoder": Autoencoder(shape, args.latent_dim, hidden=(args.hidden,),
                                              sparsity=args.sparsity),
        }
    for name, model in tqdm(models.items(), desc="models"):
        pyro.clear_param_store()
        histories[name] = fit(model.model, model.guide, train_x, epochs=args.epochs,
                              batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                              device=device)
        model.eval()
        with torch.no_grad():
            if name == "vae":
                pair = (posterior_means(model.guide, train_x.to(device)),
                        posterior_means(model.guide, test_x.to(device)))
            else:
                pair = (model.encode(train_x.to(device)), model.encode(test_x.to(device)))
        features[name] = tuple(f.cpu().numpy() for f in pair)
    pixels_train, pixels_test = train_x.flatten(1).numpy(), test_x.flatten(1).numpy()
    pca = fit_pca(pixels_train, args.latent_dim, args.seed)  # at most 64 components
    features["pca"] = (pca.transform(pixels_train), pca.transform(pixels_test))
    features["pixels"] = (pixels_train, pixels_test)
    return features, histories


def plot(features: dict, test_labels: np.ndarray, results: dict, path: Path) -> None:
    """Test features on their first two principal axes, and the scores as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(features) + 1, figsize=(3.2 * (len(features) + 1), 3.2))
    for ax, (name, (_, test)) in zip(axes, features.items()):
        scaled = StandardScaler().fit_transform(test)
        flat = fit_pca(scaled, 2, seed=0).transform(scaled)  # one axis for 1-d features
        ax.scatter(flat[:, 0], flat[:, -1] if flat.shape[1] > 1 else np.zeros(len(flat)),
                   c=test_labels, cmap="tab10", s=5)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = axes[-1]
    names, keys = list(results), ["probe_accuracy", "kmeans_ari", "gmm_ari"]
    width = 0.8 / len(keys)
    for k, key in enumerate(keys):
        ax.bar(np.arange(len(names)) + k * width, [results[n][key] for n in names], width,
               label=key)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2)
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def main(args: argparse.Namespace) -> dict:
    out, device, start = start_run(args)

    data = load_images("digits").binarized(args.seed)
    check_count("representations", "--num-train", args.num_train, len(data.train),
                "the digits training split")
    n_train = args.num_train or len(data.train)
    train_x, train_y = data.train.images[:n_train], data.train.labels[:n_train]
    test_x, test_y = data.test.images, data.test.labels
    features, histories = representations(args, train_x, test_x, device)
    results = {}
    for name, (train_f, test_f) in features.items():
        results[name] = {"dim": int(train_f.shape[1]),
                         "probe_accuracy": probe_accuracy(torch.from_numpy(train_f), train_y,
                                                          torch.from_numpy(test_f), test_y),
                         **cluster_scores(train_f, test_f, test_y.numpy(), NUM_CLUSTERS, args.seed,
                                          args.restarts)}
    plot(features, test_y.numpy(), results, out / "representations.png")
    metrics = {
        "num_train": n_train, "num_test": len(test_x),
        "units": "probe_accuracy: test accuracy; *_ari: adjusted Rand index of 10 clusters "
                 "against the test labels",
        "results": results, "histories": histories,
        "config": vars(args), "device": str(device),
    }
    print(f"{'features':<20}{'dim':>5}{'probe':>8}{'k-means ARI':>13}{'GMM ARI':>9}")
    for name, row in results.items():
        print(f"{name:<20}{row['dim']:>5}{row['probe_accuracy']:>8.3f}"
              f"{row['kmeans_ari']:>13.3f}{row['gmm_ari']:>9.3f}")
    return finish_run(out, metrics, start, "metrics.json, representations.png")


def parse_args(argv=None) -> argparse.Namespace:
    parser = script_parser(__doc__, "runs/representations")
    parser.add_argument("--num-train", type=nonnegative_int, default=0,
                        help=f"0: all 1297; else at least {NUM_CLUSTERS}, the clusters fitted")
    numbers(parser, latent_dim=16, hidden=200)
    parser.add_argument("--sparsity", type=nonnegative_float, default=0.1,
                        help="L1 weight on the sparse autoencoder's code")
    parser.add_argument("--restarts", type=positive_int, default=10,
                        help="k-means restarts (the Gaussian mixture gets a third)")
    training_flags(parser, epochs=150, batch_size=64, lr=1e-3)
    args = parser.parse_args(argv)
    if 0 < args.num_train < NUM_CLUSTERS:
        parser.error(f"argument --num-train: k-means and the Gaussian mixture fit "
                     f"{NUM_CLUSTERS} clusters to the training features, so at least "
                     f"{NUM_CLUSTERS} training images, got {args.num_train}")
    return args


if __name__ == "__main__":
    run_script("representations", main, parse_args())
