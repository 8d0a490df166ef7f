"""Does a VAE with an autoregressive decoder use its latent? PixelVAE against VAE and PixelCNN.

Trains on the same binarized images (a) the plain VAE (MLP decoder, factorized pixels),
(b) the unconditional PixelCNN (exact likelihood), and the PixelVAE (a PixelCNN decoder
conditioned on z) three ways: (c) the plain ELBO, (d) the ELBO with KL warm-up
(``fit``'s ``kl_warmup_epochs``), (e) the free-bits ELBO of Kingma et al. 2016
(``inference.training.free_bits.FreeBitsELBO``, lambda nats per latent dimension). It reports one
table on the test split: ELBO and IWAE_K (nats per image, the PixelCNN's exact log p(x) in
their place), bits/dim of the tightest number, KL(q(z | x) || p(z)) (the rate), the
reconstruction term E_q[log p(x | z)], and the active units (Burda et al. 2015): a
PixelVAE whose KL is near zero and with no active units has collapsed to a PixelCNN.
Figures: samples of every model, PixelVAE reconstructions (pixels sampled given the
posterior-mean z: they resemble the input only if z carries it), KL per latent dimension,
training curves. ``metrics.json``, ``results.md`` and ``results.csv`` hold the numbers.

Expected with the defaults (8x8 digits, training images binarized afresh every minibatch,
test images once; 16 latents; 40 epochs; about 4 minutes of CPU time on one core): all five
models within half a nat of -24.4 nats per image; the plain-ELBO PixelVAE collapses (KL
below 0.1 nats, no active units), KL warm-up leaves a fraction of a nat of KL, free bits
(0.25 nats per dimension) keep about 4 nats of KL with all 16 units active and give the best
IWAE_1000 of the three PixelVAEs. ``docs/pixel-vae.md`` has the measured table.

    python examples/pixel_vae.py --threads 1 --out-dir runs/pixel_vae
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from pathlib import Path

import pyro
import torch

from inference import (
    active_units,
    bound_sweep,
    expected_log_likelihood,
    fit,
    kl_per_dimension,
    posterior_means,
)
from inference.training.free_bits import FreeBitsELBO
from scaffold.flags import (
    check_count,
    check_evaluation_memory,
    check_network_sizes,
    data_flags,
    evaluation_ks,
    evidence_flags,
    nonnegative_float,
    nonnegative_int,
    odd_positive_int,
    positive_int,
    refused_as_usage,
    script_parser,
    training_flags,
)
from scaffold.plots import image_grid, save_figure, training_curves
from scaffold.runs import finish_run, run_script, start_run, write_text
from ppl_models import DATASETS, load_images
from inference import bits_per_dim
from ppl_models.likelihoods import training_representation
from ppl_models.pixel_vae import PixelVAE
from ppl_models.pixelcnn import PixelCNN
from ppl_models.vae import VAE

LATENT_MODELS = ("vae", "pixelvae_elbo", "pixelvae_warmup", "pixelvae_free_bits")


def build(name: str, args, shape):
    """A fresh model/guide pair for ``name``."""
    decoder = {"channels": args.channels, "num_blocks": args.num_blocks,
               "kernel_size": args.kernel_size, "first_kernel_size": args.first_kernel_size}
    if name == "vae":
        return VAE(shape, args.latent_dim, "bernoulli", "mlp", tuple(args.hidden))
    if name == "pixelcnn":
        return PixelCNN(shape, "bernoulli", **decoder)
    return PixelVAE(shape, args.latent_dim, "bernoulli", "mlp", tuple(args.hidden), **decoder)


def training_options(name: str, args) -> dict:
    """What differs between the runs: the objective and the warm-up."""
    if name == "pixelvae_warmup":
        return {"kl_warmup_epochs": args.kl_warmup}
    if name == "pixelvae_free_bits":
        return {"loss": FreeBitsELBO(args.free_bits)}
    return {}


def describe(name: str, args) -> str:
    return {"vae": "ELBO", "pixelcnn": "max. likelihood", "pixelvae_elbo": "ELBO",
            "pixelvae_warmup": f"ELBO, KL warm-up {args.kl_warmup} epochs",
            "pixelvae_free_bits": f"free bits {args.free_bits:g} nats/dim"}[name]


def evaluate(name: str, model, test: torch.Tensor, args, num_dims: int) -> dict:
    """Test-set bounds (nats per image), KL, reconstruction term and active units of
    ``model`` on ``test: [n, C, H, W]``."""
    if name == "pixelcnn":
        with torch.no_grad():
            log_p = torch.cat([model.log_prob(x) for x in test.split(args.eval_batch_size)])
        exact = float(log_p.mean())
        return {"elbo": exact, "iwae": {}, "log_likelihood": exact, "exact": True,
                "kl_nats": 0.0, "reconstruction_nats": exact, "active_units": None,
                "kl_per_dimension": [], "bits_per_dim": bits_per_dim(-exact, num_dims)}
    ks = evaluation_ks(args.max_k)
    table = bound_sweep(model.model, model.guide, test, num_samples=ks, repeats=args.repeats,
                        chunk_size=args.chunk_size, data_batch_size=args.eval_batch_size)
    kl = kl_per_dimension(model.model, model.guide, test)
    num_active, variances = active_units(posterior_means(model.guide, test))
    reconstruction = expected_log_likelihood(model.model, model.guide, test, num_samples=10)
    best = table.iwae()[str(ks[-1])]
    return {"elbo": table.elbo(), "iwae": table.iwae(), "log_likelihood": best, "exact": False,
            "stderr": {("elbo" if r["bound"] == "elbo" else f"iwae_{r['num_samples']}"):
                       r["stderr"] for r in table.rows},
            "kl_nats": float(kl.sum()), "reconstruction_nats": float(reconstruction.mean()),
            "active_units": num_active, "kl_per_dimension": kl.tolist(),
            "posterior_mean_variance": variances.tolist(),
            "bits_per_dim": bits_per_dim(-best, num_dims)}


def table_rows(results: dict, args) -> list[dict]:
    """One row per model, numbers rounded for the markdown/CSV tables."""
    top = f"IWAE_{args.max_k}"
    rows = []
    for name, r in results.items():
        iwae = r["log_likelihood"]
        rows.append({
            "model": name, "training": describe(name, args),
            "ELBO": f"{r['elbo']:.2f}",
            top: "exact" if r["exact"] else f"{iwae:.2f}",
            "log p(x) (best)": f"{iwae:.2f}", "bits/dim": f"{r['bits_per_dim']:.4f}",
            "KL (nats)": f"{r['kl_nats']:.2f}",
            "reconstruction (nats)": f"{r['reconstruction_nats']:.2f}",
            "active units": "-" if r["active_units"] is None
            else f"{r['active_units']}/{args.latent_dim}",
            "train s": f"{r['train_seconds']:.0f}",
        })
    return rows


def write_tables(rows: list[dict], out: Path) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row[h] for h in header) + " |" for row in rows]
    markdown = "\n".join(lines)
    write_text(out / "results.md", markdown + "\n")  # atomically, as metrics.json
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=header)
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / "results.csv", table.getvalue())
    return markdown


def plot_kl_bars(results: dict, path: Path) -> None:
    """KL(q(z_j | x) || p(z_j)) per latent dimension, one bar per model."""
    import matplotlib.pyplot as plt

    names = [n for n in LATENT_MODELS if n in results]
    dims = len(results[names[0]]["kl_per_dimension"])
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * dims), 3.5))
    for i, name in enumerate(names):
        ax.bar([j + (i - (len(names) - 1) / 2) * width for j in range(dims)],
               results[name]["kl_per_dimension"], width, label=name)
    ax.set_xticks(range(dims))
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("KL (nats, test mean)")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def main(args: argparse.Namespace) -> dict:
    out, device, start = start_run(args)

    with refused_as_usage("pixel_vae", "--data-root"):  # a missing or corrupt data file
        data = load_images(args.dataset, root=args.data_root)
    train, test, batch_transform = training_representation(data, "bernoulli",
                                                           args.binarization, args.seed)
    check_count("pixel_vae", "--num-train", args.num_train, len(train),
                f"the {data.name} training split")
    check_count("pixel_vae", "--num-test", args.num_test, len(test), f"the {data.name} test split")
    train, test = train[:args.num_train or None], test[:args.num_test or None]  # 0: all
    check_evaluation_memory("pixel_vae", "--max-k", args.max_k, test, args.eval_batch_size)
    shape = data.image_shape
    num_dims = math.prod(shape)
    test = test.to(device)

    models, histories, results = {}, {}, {}
    names = ("vae", "pixelcnn", "pixelvae_elbo", "pixelvae_warmup", "pixelvae_free_bits")
    check_network_sizes("pixel_vae", *[lambda name=name: build(name, args, shape)
                                       for name in names])
    for name in names:
        pyro.clear_param_store()
        pyro.set_rng_seed(args.seed)
        model = build(name, args, shape)
        options = {"loss": "elbo", **training_options(name, args)}
        history = fit(model.model, model.guide, train, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=device,
                      batch_transform=batch_transform, **options)
        model.eval()
        pyro.set_rng_seed(args.seed)
        result = evaluate(name, model, test, args, num_dims)
        result["train_seconds"] = sum(r["seconds"] for r in history)
        models[name], histories[name], results[name] = model, history, result
        print(f"{name}: log p(x) >= {result['log_likelihood']:.2f} nats, KL "
              f"{result['kl_nats']:.2f}, active units {result['active_units']}", flush=True)

    rows = table_rows(results, args)
    markdown = write_tables(rows, out)

    generator = torch.Generator(device).manual_seed(args.seed)
    n = args.num_samples
    samples = [models["vae"].sample_images(n, generator, mean=False).to(device),
               models["pixelcnn"].sample_fast(n, generator=generator)]
    samples += [models[k].sample(n, generator=generator) for k in LATENT_MODELS[1:]]
    image_grid(samples, out / "samples.png", "samples (pixels drawn) from each model",
               row_labels=["VAE", "PixelCNN", "PixelVAE", "+ warm-up", "+ free bits"])
    originals = test[:n]
    rows_ = [originals, models["vae"].reconstruct(originals)]
    rows_ += [models[k].reconstruct(originals, generator=generator) for k in LATENT_MODELS[1:]]
    image_grid(rows_, out / "reconstructions.png",
               "test images; VAE pixel means and PixelVAE pixels sampled given the mean z",
               row_labels=["data", "VAE", "PixelVAE", "+ warm-up", "+ free bits"])
    plot_kl_bars(results, out / "kl_per_dimension.png")
    training_curves(histories, out / "training_curves.png")

    metrics = {
        "dataset": args.dataset,
        "units": "nats per test image (higher is better); bits_per_dim of the binary data "
                 "(lower is better); KL in nats per image",
        "num_train": int(train.shape[0]), "num_test": int(test.shape[0]),
        "models": results,
        "table": rows,
        "history": histories,
        "config": vars(args),
        "device": str(device),
    }
    print(markdown)
    return finish_run(out, metrics, start, "metrics.json, results.md/csv and figures")


def parse_args(argv=None) -> argparse.Namespace:
    parser = script_parser(__doc__, "runs/pixel_vae")
    data_flags(parser, num_train=0, num_test=0, datasets=DATASETS)
    parser.add_argument("--binarization", choices=["static", "dynamic"], default="dynamic",
                        help="of the training images (test: one fixed draw)")
    parser.add_argument("--latent-dim", type=positive_int, default=16)
    parser.add_argument("--hidden", type=positive_int, nargs="+", default=[200],
                        help="MLP widths of the VAE and of the PixelVAE encoder")
    parser.add_argument("--channels", type=positive_int, default=16, help="PixelCNN channels")
    parser.add_argument("--num-blocks", type=positive_int, default=2, help="PixelCNN gated blocks")
    parser.add_argument("--kernel-size", type=odd_positive_int, default=3,
                        help="PixelCNN blocks' kernel (odd)")
    parser.add_argument("--first-kernel-size", type=odd_positive_int, default=5,
                        help="PixelCNN first layer's kernel (odd)")
    parser.add_argument("--kl-warmup", type=nonnegative_int, default=20,
                        help="epochs of KL warm-up")
    parser.add_argument("--free-bits", type=nonnegative_float, default=0.25,
                        help="lambda, nats per latent dimension")
    training_flags(parser, epochs=40, batch_size=64, lr=2e-3)
    evidence_flags(parser, max_k=1000, repeats=1, chunk_size=500, eval_batch_size=50)
    parser.add_argument("--num-samples", type=positive_int, default=10,
                        help="images per figure row")
    args = parser.parse_args(argv)
    if args.num_test == 1:
        parser.error("argument --num-test: the active-unit count needs at least 2 test images")
    return args


if __name__ == "__main__":
    run_script("pixel_vae", main, parse_args())
