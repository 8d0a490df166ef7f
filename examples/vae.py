"""The VAE in action: train on images, bound the test evidence, and look at what it learned.

Trains :class:`ppl_models.VAE` with SVI (ELBO, analytic-KL ELBO, IWAE or DReG), then reports
on the test split the ELBO and IWAE_K for K up to 5000 (nats per image and bits/dim), the KL
per latent dimension and the number of active units, and the accuracy of a logistic-regression
probe on the latent means next to a deterministic autoencoder, a sparse autoencoder and PCA of
the same size (at most as many components as pixels and training images: ``pca_components``
in metrics.json). Figures: data, reconstructions, prior samples, interpolations, training curves,
and for a 2-D latent the test set in latent space and the decoded latent plane.

Expected with the defaults (statically binarized 8x8 digits, 16 latents, 200 epochs; about
two minutes on 2 CPU cores): test ELBO near -25 nats per image, IWAE_5000 about 0.5 nats
higher, a probe accuracy around 0.9 for every representation.

    python examples/vae.py --out-dir runs/vae
    python examples/vae.py --dataset fashion-mnist --network conv --epochs 20 --out-dir runs/fm
    torchrun --nproc-per-node 2 examples/vae.py --out-dir runs/vae2  # data-parallel training

Under torchrun every process trains on its share of each minibatch (docs/distributed.md);
rank 0 alone evaluates, draws the figures and writes metrics.json.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import pyro
import torch

from inference import (
    active_units,
    bits_per_dim,
    bound_sweep,
    discrete_log_likelihood_bound,
    expected_log_likelihood,
    fit,
    init_process_group,
    kl_per_dimension,
    posterior_means,
    probe_accuracy,
)
from inference.training.checkpoints import CheckpointError
from scaffold.features import fit_pca
from scaffold.flags import (
    check_count,
    check_evaluation_memory,
    data_flags,
    evaluation_ks,
    evidence_flags,
    flag_error,
    nonnegative_float,
    nonnegative_int,
    numbers,
    objective_flags,
    refused_as_usage,
    script_parser,
    training_flags,
)
from scaffold.plots import bounds_against_k, image_grid, save_figure, training_curves
from scaffold.runs import finish_run, start_run
from ppl_models import DATASETS, load_images
from ppl_models.likelihoods import LIKELIHOODS, make_likelihood, training_representation
from ppl_models.vae import VAE, Autoencoder

# --latent-dim's bound: more latents than this per pixel only slow the probes (sklearn on a
# code of 100000 dims stalled for minutes after a one-second training)
LATENTS_PER_PIXEL = 4


def to_report(table, num_dims: int, discrete: bool) -> dict:
    """Bounds in nats per image and bits/dim of the discrete data (see likelihoods docs)."""
    def discrete_nats(value):
        return value if discrete else discrete_log_likelihood_bound(value, num_dims)

    rows = []
    for row in table.rows:
        nats = discrete_nats(row["mean"])
        rows.append({**row, "discrete_nats": nats, "bits_per_dim": bits_per_dim(-nats, num_dims)})
    iwae = {str(r["num_samples"]): r for r in rows if r["bound"] == "iwae"}
    return {"elbo": rows[0], "iwae": iwae}


def plot_latent_space(vae: VAE, x: torch.Tensor, labels: torch.Tensor, out: Path) -> None:
    """For a 2-D latent: the means of ``x: [n, C, H, W]`` coloured by ``labels: [n]``, and
    decoded images on a grid."""
    import matplotlib.pyplot as plt

    means = posterior_means(vae.guide, x).cpu()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    points = ax.scatter(means[:, 0], means[:, 1], c=labels.cpu(), cmap="tab10", s=6)
    fig.colorbar(points, ax=ax, label="label")
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    save_figure(fig, out / "latent_space.png")
    # quantiles of the prior, so the grid covers where the decoder has seen data
    values = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, 10))
    grid = torch.cartesian_prod(values, values.flip(0))[:, [1, 0]]
    with torch.no_grad():
        images = vae.decode(grid.to(x.device)).mean
    image_grid(images, out / "latent_grid.png", "decoded latent plane", columns=10)


def hidden_widths(args) -> tuple[int, ...] | None:
    """``--hidden`` as the models' ``hidden``: None for ``--network conv`` (fixed layers)."""
    return None if args.hidden is None else tuple(args.hidden)


def train_baselines(args, shape, train, batch_transform, device) -> dict:
    """Autoencoder and sparse autoencoder with the same networks and code size."""
    baselines = {}
    for name, sparsity in (("autoencoder", 0.0), ("sparse_autoencoder", args.sparsity)):
        pyro.clear_param_store()
        # initial networks from the seed alone: after the VAE's fit the global generators
        # depend on how long it trained, so a resumed run would start the baselines elsewhere
        pyro.set_rng_seed(args.seed)
        model = Autoencoder(shape, args.latent_dim, args.likelihood, args.network,
                            hidden_widths(args), sparsity=sparsity)
        history = fit(model.model, model.guide, train, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=device,
                      batch_transform=batch_transform,
                      checkpoint=Path(args.out_dir) / f"checkpoint_{name}.pt",
                      resume=args.resume, distributed=args.distributed)
        baselines[name] = (model, history)
    return baselines


def main(args: argparse.Namespace) -> dict:
    out, device, start = start_run(args)
    pyro.clear_param_store()
    if args.distributed:  # on by default whenever WORLD_SIZE is set
        try:
            device = init_process_group(device)
        except ValueError as error:  # not under torchrun: refused before any work
            raise flag_error("vae", "--distributed", f"{error}; or pass --no-distributed to "
                                                     "train in this process alone") from None

    with refused_as_usage("vae", "--data-root"):  # a missing or corrupt data file
        data = load_images(args.dataset, root=args.data_root, download=args.download)
    train, test, batch_transform = training_representation(data, args.likelihood,
                                                           args.binarization, args.seed)
    train_labels, test_labels = data.train.labels, data.test.labels
    check_count("vae", "--num-train", args.num_train, len(train), f"the {data.name} training split")
    check_count("vae", "--num-test", args.num_test, len(test), f"the {data.name} test split")
    if args.num_train:
        train, train_labels = train[:args.num_train], train_labels[:args.num_train]
    if args.num_test:
        test, test_labels = test[:args.num_test], test_labels[:args.num_test]
    if len(train_labels.unique()) < 2:
        raise flag_error("vae", "--num-train", f"the probes need training images of two "
                         f"classes at least; the first {len(train_labels)} hold one")
    shape = data.image_shape
    num_dims = math.prod(shape)
    if args.latent_dim > LATENTS_PER_PIXEL * num_dims:
        raise flag_error("vae", "--latent-dim", f"{args.latent_dim} is more than "
                         f"{LATENTS_PER_PIXEL} latents per pixel of the {num_dims}-pixel "
                         f"{data.name} images (at most {LATENTS_PER_PIXEL * num_dims}): a code "
                         "that large holds nothing more, and the probes on it stall for minutes")
    check_evaluation_memory("vae", "--max-k", args.max_k, test, args.eval_batch_size)

    with refused_as_usage("vae"):  # networks too large for memory, a conv net off 28x28
        vae = VAE(shape, args.latent_dim, args.likelihood, args.network, hidden_widths(args))
    with refused_as_usage("vae"):  # fit's refusals (--num-particles beyond memory, a
        # checkpoint of other settings) come before its first step
        history = fit(vae.model, vae.guide, train, loss=args.objective,
                      num_particles=args.num_particles, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=device,
                      kl_warmup_epochs=args.kl_warmup, batch_transform=batch_transform,
                      checkpoint=out / "checkpoint_vae.pt", resume=args.resume,
                      distributed=args.distributed, compile=args.compile,
                      mixed_precision=args.mixed_precision)
    if args.distributed and torch.distributed.get_rank() != 0:
        train_baselines(args, shape, train, batch_transform, device)  # every rank takes part
        return {"rank": torch.distributed.get_rank(), "history": history}
    train_seconds = sum(r["seconds"] for r in history)
    vae.eval()
    test = test.to(device)

    ks = evaluation_ks(args.max_k)
    table = bound_sweep(vae.model, vae.guide, test, num_samples=ks, repeats=args.repeats,
                        chunk_size=args.chunk_size, data_batch_size=args.eval_batch_size)
    discrete = make_likelihood(args.likelihood).discrete
    bounds = to_report(table, num_dims, discrete)
    kl = kl_per_dimension(vae.model, vae.guide, test)
    num_active, mean_variance = active_units(posterior_means(vae.guide, test))
    reconstruction = expected_log_likelihood(vae.model, vae.guide, test, num_samples=10)

    baselines = train_baselines(args, shape, train, batch_transform, device)
    # the probes' training features: with --binarization dynamic `train` holds the grey
    # images each minibatch redraws, which the Bernoulli guide refuses; features come from
    # one fixed draw by --seed (the static binarization's)
    feature_train = (data.binarized(args.seed).train.images[:len(train)]
                     if args.likelihood == "bernoulli" and args.binarization == "dynamic"
                     else train)
    train_dev = feature_train.to(device)
    train_features = {"vae": posterior_means(vae.guide, train_dev)}
    test_features = {"vae": posterior_means(vae.guide, test)}
    for name, (model, _) in baselines.items():
        with torch.no_grad():
            train_features[name] = model.encode(train_dev)
            test_features[name] = model.encode(test)
    pca = fit_pca(feature_train.flatten(1).numpy(), args.latent_dim, args.seed)
    train_features["pca"] = torch.from_numpy(pca.transform(feature_train.flatten(1).numpy()))
    test_features["pca"] = torch.from_numpy(pca.transform(test.flatten(1).cpu().numpy()))
    probes = {name: probe_accuracy(train_features[name], train_labels,
                                   test_features[name], test_labels)
              for name in train_features}

    metrics = {
        "dataset": args.dataset,
        "likelihood": args.likelihood,
        "objective": args.objective,
        "units": "nats per test image (higher is better); bits_per_dim of the 8-bit or "
                 "binary data (lower is better); continuous likelihoods are converted with "
                 "the dequantization bound",
        "num_test": int(test.shape[0]),
        "elbo": bounds["elbo"]["mean"],
        "iwae": {k: r["mean"] for k, r in bounds["iwae"].items()},
        "bits_per_dim": {"elbo": bounds["elbo"]["bits_per_dim"],
                         **{f"iwae_{k}": r["bits_per_dim"] for k, r in bounds["iwae"].items()}},
        "bounds": [bounds["elbo"], *bounds["iwae"].values()],
        "kl_per_dimension": kl.tolist(),
        "active_units": num_active,
        "posterior_mean_variance": mean_variance.tolist(),
        "reconstruction_log_likelihood": float(reconstruction.mean()),
        "probe_accuracy": probes,
        "pca_components": int(pca.n_components_),
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / max(len(history), 1),
        "history": history,
        "config": vars(args),
        "device": str(device),
        "world_size": torch.distributed.get_world_size() if args.distributed else 1,
    }

    image_grid(test[:50], out / "data.png", f"{args.dataset} test images ({args.likelihood})")
    originals = test[:10]
    rows = [originals, vae.reconstruct(originals), *vae.reconstruct(originals, num_samples=3)]
    image_grid(rows, out / "reconstructions.png",
               "data, reconstruction from the latent mean, from 3 latent samples",
               row_labels=["data", "mean z", "z ~ q", "z ~ q", "z ~ q"])
    generator = torch.Generator().manual_seed(args.seed)
    image_grid(vae.sample_images(50, generator), out / "prior_samples.png",
               "pixel means of p(x | z), z ~ p(z)")
    with torch.no_grad():
        ends = posterior_means(vae.guide, test[:2])
        steps = torch.linspace(0, 1, 10, device=device)[:, None]
        path = ends[0] * (1 - steps) + ends[1] * steps
        image_grid(vae.decode(path).mean, out / "interpolation.png",
                   "decoded interpolation between two test images' latent means")
    curves = {"VAE": history, **{name: h for name, (_, h) in baselines.items()}}
    training_curves(curves, out / "training_curves.png")
    bounds_against_k(table, out / "bounds_vs_k.png")
    if args.latent_dim == 2:
        plot_latent_space(vae, test, test_labels, out)
    print(f"{'bound':<12}{'nats/image':>12}{'bits/dim':>10}{'std. error':>12}")
    for row in metrics["bounds"]:
        name = "ELBO" if row["bound"] == "elbo" else f"IWAE_{row['num_samples']}"
        print(f"{name:<12}{row['mean']:>12.3f}{row['bits_per_dim']:>10.4f}{row['stderr']:>12.4f}")
    print(f"active units {num_active}/{args.latent_dim}; probe accuracy "
          + ", ".join(f"{k} {v:.3f}" for k, v in probes.items()))
    return finish_run(out, metrics, start)


def parse_args(argv=None) -> argparse.Namespace:
    parser = script_parser(__doc__, "runs/vae")
    data_flags(parser, num_train=0, num_test=0, datasets=DATASETS, download=True)
    parser.add_argument("--likelihood", choices=LIKELIHOODS, default="bernoulli")
    parser.add_argument("--binarization", choices=["static", "dynamic"], default="static",
                        help="of the training images for the bernoulli likelihood (static: "
                             "one fixed draw; dynamic: redrawn every minibatch; test: one "
                             "fixed draw)")
    parser.add_argument("--network", choices=["mlp", "conv"], default="mlp")
    numbers(parser, hidden=[200], latent_dim=16)
    parser.set_defaults(hidden=None)  # [200] for the MLPs; given with --network conv: refused
    objective_flags(parser, objective="elbo", num_particles=1)
    parser.add_argument("--kl-warmup", type=nonnegative_int, default=0, help="epochs of KL warm-up")
    parser.add_argument("--sparsity", type=nonnegative_float, default=0.1,
                        help="L1 weight on the sparse autoencoder's code")
    training_flags(parser, epochs=200, batch_size=64, lr=1e-3)
    parser.add_argument("--compile", action="store_true",
                        help="compiled training step (torch.compile; every objective; "
                             "see docs/performance.md)")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="networks in bfloat16 under autocast, log densities in float32 "
                             "(GPUs with bfloat16 units; slower on most CPUs)")
    evidence_flags(parser, max_k=5000, repeats=3, chunk_size=500, eval_batch_size=100)
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoints in --out-dir")
    parser.add_argument("--distributed", action=argparse.BooleanOptionalAction,
                        default="WORLD_SIZE" in os.environ,
                        help="data-parallel training over torch.distributed (on by default "
                             "under torchrun, or wherever WORLD_SIZE is set)")
    args = parser.parse_args(argv)
    if args.network == "conv" and args.hidden is not None:
        parser.error("argument --hidden: the widths of the MLP networks; the conv networks' "
                     "layers are fixed: leave out --hidden with --network conv")
    if args.hidden is None and args.network == "mlp":
        args.hidden = [200]
    if args.num_test == 1:
        parser.error("argument --num-test: the active-unit count needs at least 2 test images")
    if args.kl_warmup and args.objective in ("iwae", "dreg"):
        parser.error(f"argument --kl-warmup: the {args.objective} bound has no KL term to warm "
                     "up (use --objective elbo or meanfield)")
    if args.binarization == "dynamic" and args.likelihood != "bernoulli":
        parser.error(f"argument --binarization: dynamic binarization is for the bernoulli "
                     f"likelihood; the {args.likelihood} likelihood's training images are "
                     "dequantized (continuous) or kept as 8-bit levels (discrete), never "
                     "binarized")
    if args.compile and args.mixed_precision:
        parser.error("argument --mixed-precision: not allowed with argument --compile (the "
                     "compiled step runs in float32); pass one of them")
    if args.compile and args.distributed:
        parser.error("argument --compile: the compiled step trains in one process; pass "
                     "--no-distributed, or leave out --compile")
    return args


if __name__ == "__main__":
    try:
        main(parse_args())
    except CheckpointError as error:  # --resume met a checkpoint of another run
        raise SystemExit(f"vae: {error}") from None
    except (FileNotFoundError, FloatingPointError) as error:  # no data set; a diverged fit
        raise SystemExit(f"vae: {error}") from None
    except KeyboardInterrupt:
        raise SystemExit("vae: interrupted; each finished epoch is in --out-dir's "
                         "checkpoints (none before the first ends): run again with --resume "
                         "to continue") from None
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
