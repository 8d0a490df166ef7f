"""Super-resolution: infer the full image from its 2x or 4x average-pooled version, by model.

The observation is ``y = average_pool(x, f)`` (``--factors``, default 2 and 4: an 8x8 digit
becomes 4x4 or 2x2), an exact, noiseless channel (:mod:`inference.uses.super_resolution`):

- **binary images** (statically binarized digits): ``f^2 y_b`` is the number of ones in each
  ``f x f`` block. A Bernoulli VAE scores it exactly, ``p(y_b | z)`` being the Poisson-binomial
  probability of that count, and infers ``x`` by ``VAE MAP`` (Adam on ``z``), ``VAE MwG``
  (Metropolis-within-Gibbs over ``z`` and ``x`` with exact draws of ``x | y, z``, as
  ``inference.uses.completion`` does for masks) and ``VAE MH`` (random-walk Metropolis on ``z``
  alone, the pixels summed out exactly; step adapted during burn-in). A PixelCNN,
  whose pixels are dependent under every conditioning, infers ``x`` by ``PixelCNN Gibbs``:
  block Gibbs over the binary image restricted to fillings with the observed counts, each step
  an exact conditional enumerated with the PixelCNN's exact ``log p(x)``;
- **grey levels** (uniformly dequantized digits): a VAE with Gaussian pixels (learned
  per-pixel scale) scores ``y`` exactly, the pooled pixels being Gaussian given ``z``, and the
  pixels given ``y`` and ``z`` are the Gaussian conditioned on the block means; the same three
  VAE methods. (No grey-level PixelCNN: an exact step would enumerate up to 256 values per
  pixel pair under the sum constraint, hundreds of network passes per step.)

Baselines: ``nearest`` (each pixel gets its block's mean), ``bilinear`` and ``bicubic`` up-
sampling (``torch.nn.functional.interpolate``, clamped to [0, 1]). Reported against the true
image: for binary images the ``error_rate`` of the estimate thresholded at 0.5, over all pixels
and over the ``undetermined`` pixels (blocks with neither 0 nor ``f^2`` ones; the others are
fixed by ``y``), and the per-pixel negative log-likelihood of the truth, ``-log p(x_i | y)``
in nats (the baselines' values taken as probabilities, clamped to [1e-6, 1 - 1e-6]); for grey
levels the ``psnr`` in dB (per image, peak 1, averaged) and, for the models, the per-pixel log
density of the truth, ``log p(x_i | y)`` in nats. The PixelCNN chain runs on the first
``--pixelcnn-test`` images only; every method is also scored on that subset
(``--gibbs-check`` runs it a second time from the true images, a convergence check). Figures
``super_resolution_<binary|grey>_<f>x.png``: truth, input (up-sampled by nearest), estimates.

Expected with the defaults (8x8 digits, 300 test images, the PixelCNN chain on 50; about 4
minutes of CPU time): on the undetermined binary pixels the VAE methods err 0.19 (2x) and
0.18 (4x) against 0.30-0.34 and 0.31-0.32 for the up-samplings; grey-level PSNR 15.9 (2x) and
12.4 (4x) dB for VAE MAP against at most 13.4 and 8.9; the PixelCNN chain matches the VAE at
2x and is not converged at 4x after 60 sweeps (``--gibbs-sweeps 240 --gibbs-check``). See
docs/super-resolution.md.

    python examples/super_resolution.py --out-dir runs/super_resolution
"""

from __future__ import annotations

import argparse
import math
import time

import pyro
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from inference import KeepBest, fit
from scaffold.plots import image_grid
from scaffold.flags import (
    check_count,
    check_dataset_flags,
    check_distinct,
    check_network_sizes,
    flag_error,
    integer_in,
    MAX_STEPS,
    nonnegative_int,
    positive_float,
    positive_int,
    positive_step_count,
    refused_as_usage,
    script_parser,
    step_count,
)
from scaffold.runs import finish_run, run_script, start_run
from inference.uses.super_resolution import (
    MAX_SUBSET_SIZE,
    average_pool,
    super_resolve_gibbs,
    super_resolve_map,
    super_resolve_mh,
    super_resolve_mwg,
)
from ppl_models.data import DATASETS, binarize_dynamic, load_images
from ppl_models.likelihoods import training_representation
from ppl_models.pixelcnn import PixelCNN, default_depth
from ppl_models.vae import VAE


def upsample(y: torch.Tensor, factor: int, mode: str) -> torch.Tensor:
    """``y: [n, C, h, w]`` -> ``[n, C, h f, w f]`` by ``mode`` (nearest, bilinear, bicubic),
    clamped to [0, 1]."""
    options = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(y, scale_factor=factor, mode=mode, **options).clamp(0, 1)


def pool_miss(estimate: torch.Tensor, truth: torch.Tensor, factor: int) -> float:
    """Largest ``|average_pool(estimate) - average_pool(truth)|`` over ``estimate, truth:
    [n, C, H, W]``: 0 (up to rounding) for an
    estimate that agrees with the observation, as the exact posterior means do."""
    return float((average_pool(estimate, factor) - average_pool(truth, factor)).abs().max())


def binary_scores(prob: torch.Tensor, truth: torch.Tensor, undetermined: torch.Tensor,
                  factor: int) -> dict:
    """Error rates of ``prob > 0.5`` (all pixels, undetermined pixels), the mean
    ``-log p(truth_i)`` in nats, and :func:`pool_miss`, for ``prob, truth: [n, C, H, W]``."""
    wrong = ((prob > 0.5).to(truth.dtype) != truth).float()
    p = prob.clamp(1e-6, 1 - 1e-6)
    nll = -torch.where(truth > 0.5, p, 1 - p).log()
    return {"error_rate": float(wrong.mean()),
            "error_rate_undetermined": float(wrong[undetermined].mean()),
            "nll_nats_per_pixel": float(nll.mean()),
            "pool_miss": pool_miss(prob, truth, factor)}


def grey_scores(mean: torch.Tensor, truth: torch.Tensor,
                log_predictive: torch.Tensor | None, factor: int) -> dict:
    """PSNR in dB (peak 1, per image, averaged) of ``mean: [n, C, H, W]``, :func:`pool_miss`,
    and the mean log density of the truth per pixel when the method gives one."""
    mse = ((mean - truth) ** 2).flatten(1).mean(1)
    scores = {"psnr_db": float((10 * torch.log10(1 / mse.clamp(min=1e-12))).mean()),
              "pool_miss": pool_miss(mean, truth, factor)}
    if log_predictive is not None:
        scores["log_likelihood_nats_per_pixel"] = float(log_predictive.mean())
    return scores


def train(model, x: torch.Tensor, args, epochs: int, device, lr: float, **options) -> list:
    """``fit`` ``model``'s pair on ``x: [n, C, H, W]``; the history."""
    pyro.clear_param_store()
    history = fit(model.model, model.guide, x, epochs=epochs, batch_size=args.batch_size,
                  lr=lr, seed=args.seed, device=device, **options)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return history


def train_pixelcnn(data, args, device) -> PixelCNN:
    """As examples/pixelcnn.py trains it: training images binarized afresh every minibatch,
    the epoch with the best exact NLL on the statically binarized validation split kept."""
    blocks, kernel = default_depth(data.image_shape, args.blocks)
    model = PixelCNN(data.image_shape, "bernoulli", channels=args.channels, num_blocks=blocks,
                     first_kernel_size=kernel).to(device)
    grey = data.train.images[:args.num_train] if args.num_train else data.train.images
    valid = data.binarized(args.seed).valid.images.to(device)
    keep = KeepBest(model, lambda: float(model.log_prob(valid).mean()))
    pyro.clear_param_store()
    fit(model.model, model.guide, grey, epochs=args.pixelcnn_epochs, batch_size=args.batch_size,
        lr=args.lr, seed=args.seed, device=device, callback=keep,
        batch_transform=binarize_dynamic)
    keep.restore()
    model.eval()
    return model


def figure(rows: dict, path, title: str, available: int, columns: int = 10) -> None:
    """The first ``min(columns, available)`` images of every row, one row each."""
    columns = min(columns, available)
    image_grid(torch.cat([r[:columns].cpu() for r in rows.values()]), path, title,
               columns=columns, row_labels=list(rows))


def main(args: argparse.Namespace) -> dict:
    out, device, start = start_run(args)
    with refused_as_usage("super_resolution", "--data-root"):  # missing, or a file as root
        grey_data = load_images(args.dataset, root=args.data_root)
    binary = grey_data.binarized(args.seed)
    shape = grey_data.image_shape
    for f in args.factors:
        if shape[-1] % f or shape[-2] % f:
            raise flag_error("super_resolution", "--factors", f"{f} does not divide the "
                             f"{args.dataset} images' size {list(shape[-2:])}")
    check_count("super_resolution", "--num-train", args.num_train, len(binary.train),
                f"the {args.dataset} training split")
    check_count("super_resolution", "--num-test", args.num_test, len(binary.test),
                f"the {args.dataset} test split")
    n_test = args.num_test or len(binary.test)
    n_chain = min(args.pixelcnn_test, n_test)
    generator = torch.Generator(device).manual_seed(args.seed)
    seconds = {}

    # ---- models
    train_bin = binary.train.images[:args.num_train] if args.num_train else binary.train.images
    blocks, kernel = default_depth(shape, args.blocks)
    check_network_sizes(  # every network, before the first is trained
        "super_resolution", lambda: VAE(shape, args.latent_dim, hidden=(args.hidden,)),
        lambda: VAE(shape, args.latent_dim, "gaussian-learned", hidden=(args.hidden,)),
        lambda: PixelCNN(shape, "bernoulli", channels=args.channels, num_blocks=blocks,
                         first_kernel_size=kernel))
    vae = VAE(shape, args.latent_dim, hidden=(args.hidden,))
    tic = time.perf_counter()
    train(vae, train_bin, args, args.vae_epochs, device, args.lr)
    seconds["training binary VAE"] = time.perf_counter() - tic
    grey_train, grey_test, dequantize = training_representation(grey_data, "gaussian-learned",
                                                                "static", args.seed)
    if args.num_train:
        grey_train = grey_train[:args.num_train]
    grey_vae = VAE(shape, args.latent_dim, "gaussian-learned", hidden=(args.hidden,))
    tic = time.perf_counter()
    train(grey_vae, grey_train, args, args.vae_epochs, device, args.grey_lr,
          batch_transform=dequantize)
    seconds["training grey VAE"] = time.perf_counter() - tic
    tic = time.perf_counter()
    pixelcnn = train_pixelcnn(grey_data, args, device) if args.pixelcnn_epochs > 0 else None
    seconds["training PixelCNN"] = time.perf_counter() - tic

    results = {"binary": {}, "grey": {}}
    chain_subset = {"binary": {}, "grey": {}}
    acceptance = {}
    truth_bin = binary.test.images[:n_test].to(device)
    truth_grey = grey_test[:n_test].to(device)
    for f in tqdm(args.factors, desc="factors"):
        key = f"{f}x"
        # ---- binary images
        y = average_pool(truth_bin, f)
        counts = (y * f * f).round()
        undetermined = ((counts > 0) & (counts < f * f)).repeat_interleave(f, -2) \
            .repeat_interleave(f, -1)
        estimates = {mode: upsample(y, f, mode) for mode in ("nearest", "bilinear", "bicubic")}
        tic = time.perf_counter()
        estimates["VAE MAP"] = super_resolve_map(vae, y, f, steps=args.map_steps).mean
        seconds[f"binary {key} VAE MAP"] = time.perf_counter() - tic
        tic = time.perf_counter()
        chain = super_resolve_mwg(vae, y, f, num_steps=args.mwg_steps, generator=generator)
        seconds[f"binary {key} VAE MwG"] = time.perf_counter() - tic
        estimates["VAE MwG"], acceptance[f"binary {key} MwG"] = chain.mean, chain.acceptance_rate
        tic = time.perf_counter()
        chain = super_resolve_mh(vae, y, f, num_steps=args.mh_steps, generator=generator)
        seconds[f"binary {key} VAE MH"] = time.perf_counter() - tic
        estimates["VAE MH"], acceptance[f"binary {key} MH"] = chain.mean, chain.acceptance_rate
        results["binary"][key] = {name: binary_scores(e, truth_bin, undetermined, f)
                                  for name, e in estimates.items()}
        sub = slice(0, n_chain)
        starts = {"PixelCNN Gibbs": estimates["bilinear"]}
        if args.gibbs_check:  # a diagnostic, not a method: it starts at the answer
            starts["PixelCNN Gibbs from truth"] = truth_bin
        for name, start_image in starts.items() if pixelcnn is not None else ():
            tic = time.perf_counter()
            gibbs = super_resolve_gibbs(
                lambda x: pixelcnn.log_prob(x), y[sub], f, num_sweeps=args.gibbs_sweeps,
                subset_size=args.subset_size, init=start_image[sub], generator=generator,
                max_batch=args.max_batch)
            seconds[f"binary {key} {name}"] = time.perf_counter() - tic
            estimates[name] = torch.cat([gibbs.mean, torch.full_like(
                estimates["bilinear"][n_chain:], math.nan)])
        chain_subset["binary"][key] = {
            name: binary_scores(e[sub], truth_bin[sub], undetermined[sub], f)
            for name, e in estimates.items()}
        figure({"truth": truth_bin, "input (nearest)": estimates["nearest"],
                **{k: v for k, v in estimates.items()
                   if k not in ("nearest", "PixelCNN Gibbs from truth")}},
               out / f"super_resolution_binary_{key}.png",
               f"binary digits, {f}x average pooling: truth, input, estimates", n_chain)

        # ---- grey levels
        y = average_pool(truth_grey, f)
        means = {mode: upsample(y, f, mode) for mode in ("nearest", "bilinear", "bicubic")}
        scored = dict.fromkeys(means)
        tic = time.perf_counter()
        estimate = super_resolve_map(grey_vae, y, f, steps=args.map_steps, truth=truth_grey)
        seconds[f"grey {key} VAE MAP"] = time.perf_counter() - tic
        means["VAE MAP"], scored["VAE MAP"] = estimate.mean, estimate.log_predictive
        tic = time.perf_counter()
        estimate = super_resolve_mwg(grey_vae, y, f, num_steps=args.mwg_steps,
                                     generator=generator, truth=truth_grey)
        seconds[f"grey {key} VAE MwG"] = time.perf_counter() - tic
        means["VAE MwG"], scored["VAE MwG"] = estimate.mean, estimate.log_predictive
        acceptance[f"grey {key} MwG"] = estimate.acceptance_rate
        tic = time.perf_counter()
        estimate = super_resolve_mh(grey_vae, y, f, num_steps=args.mh_steps,
                                    generator=generator, truth=truth_grey)
        seconds[f"grey {key} VAE MH"] = time.perf_counter() - tic
        means["VAE MH"], scored["VAE MH"] = estimate.mean, estimate.log_predictive
        acceptance[f"grey {key} MH"] = estimate.acceptance_rate
        results["grey"][key] = {name: grey_scores(m, truth_grey, scored[name], f)
                                for name, m in means.items()}
        chain_subset["grey"][key] = {
            name: grey_scores(m[sub], truth_grey[sub],
                              None if scored[name] is None else scored[name][sub], f)
            for name, m in means.items()}
        figure({"truth": truth_grey, "input (nearest)": means["nearest"],
                **{k: v for k, v in means.items() if k != "nearest"}},
               out / f"super_resolution_grey_{key}.png",
               f"grey digits, {f}x average pooling: truth, input, estimates", n_chain)

    metrics = {
        "dataset": args.dataset, "num_test": n_test, "pixelcnn_test": n_chain,
        "units": "binary: error_rate of the estimate thresholded at 0.5 over all pixels and "
                 "over the undetermined pixels (blocks with neither 0 nor f^2 ones), "
                 "nll_nats_per_pixel = mean -log p(x_i | y) (baselines clamped to [1e-6, "
                 "1 - 1e-6]); grey: psnr_db per image with peak 1, averaged; "
                 "log_likelihood_nats_per_pixel = mean log density of the true dequantized "
                 "pixel under the model's p(x_i | y); pool_miss: largest |average_pool("
                 "estimate) - y|, 0 for estimates that agree with the observation",
        "results": results,
        f"first_{n_chain}_test_images": chain_subset,
        "pixelcnn_note": f"the PixelCNN chain ran on the first {n_chain} test images only: "
                         f"it is scored in first_{n_chain}_test_images, beside every method",
        "acceptance_rate": acceptance, "seconds": seconds,
        "config": vars(args), "device": str(device),
    }
    finish_run(out, metrics, start)
    for kind, metric in (("binary", "error_rate_undetermined"), ("grey", "psnr_db")):
        table = chain_subset if kind == "binary" and pixelcnn is not None else results
        count = n_chain if table is chain_subset else n_test
        methods = list(dict.fromkeys(m for r in table[kind].values() for m in r))
        width = max(len(m) for m in methods) + 2
        print(f"{kind}: {metric} ({count} test images)")
        print(f"{'factor':<8}" + "".join(f"{m:>{width}}" for m in methods))
        for key, row in table[kind].items():
            print(f"{key:<8}" + "".join(f"{row[m][metric]:>{width}.3f}" for m in methods))
    print("acceptance: " + ", ".join(f"{k} {v:.2f}" for k, v in acceptance.items()))
    return metrics


def parse_args(argv=None) -> argparse.Namespace:
    parser = script_parser(__doc__, "runs/super_resolution")
    parser.add_argument("--dataset", choices=DATASETS, default="digits")
    parser.add_argument("--data-root", default=None, help="folder of the IDX files")
    parser.after_parse.append(check_dataset_flags)  # --data-root with digits: refused
    parser.add_argument("--factors", type=integer_in(2), nargs="+", default=[2, 4],
                        help="pooling factors f >= 2 (each must divide the image size)")
    parser.add_argument("--num-train", type=nonnegative_int, default=0, help="0: all")
    parser.add_argument("--num-test", type=nonnegative_int, default=300, help="0: all")
    parser.add_argument("--pixelcnn-test", type=positive_int, default=50,
                        help="first test images for the PixelCNN chain")
    parser.add_argument("--latent-dim", type=positive_int, default=16)
    parser.add_argument("--hidden", type=positive_int, default=200)
    parser.add_argument("--vae-epochs", type=step_count, default=150)
    parser.add_argument("--map-steps", type=step_count, default=300)
    parser.add_argument("--mwg-steps", type=positive_step_count, default=400,
                        help="Metropolis-within-Gibbs sweeps, the first half burn-in")
    parser.add_argument("--mh-steps", type=integer_in(2, MAX_STEPS), default=1600,
                        help="random-walk Metropolis steps on z (at least 2), the first half "
                             "adapting")
    parser.add_argument("--channels", type=positive_int, default=32, help="PixelCNN channels")
    parser.add_argument("--blocks", type=positive_int, default=None,
                        help="PixelCNN residual blocks (default: by image size)")
    parser.add_argument("--pixelcnn-epochs", type=step_count, default=60,
                        help="0: no PixelCNN")
    parser.add_argument("--gibbs-sweeps", type=positive_step_count, default=60,
                        help="PixelCNN Gibbs sweeps, the first half burn-in")
    parser.add_argument("--gibbs-check", action="store_true",
                        help="also run the PixelCNN chain from the true images: a chain that "
                             "has forgotten its start gives the same estimate from both")
    parser.add_argument("--subset-size", type=integer_in(2), default=4,
                        help="pixels of a block redrawn together by the PixelCNN Gibbs step "
                             f"(at least 2; at most {MAX_SUBSET_SIZE} are enumerated)")
    parser.add_argument("--max-batch", type=positive_int, default=2048,
                        help="most images per PixelCNN call")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--lr", type=positive_float, default=3e-3,
                        help="learning rate of the binary VAE and the PixelCNN")
    parser.add_argument("--grey-lr", type=positive_float, default=1e-3,
                        help="learning rate of the Gaussian VAE (learned scales spike at 3e-3)")
    args = parser.parse_args(argv)
    check_distinct(parser, args, "factors")
    redrawn = max(min(args.subset_size, f * f) for f in args.factors)
    if args.pixelcnn_epochs > 0 and redrawn > MAX_SUBSET_SIZE:
        parser.error(f"argument --subset-size: the PixelCNN Gibbs step would enumerate "
                     f"2^{redrawn} fillings of a block (--factors {max(args.factors)}), more "
                     f"than 2^{MAX_SUBSET_SIZE}; use --subset-size {MAX_SUBSET_SIZE} or less")
    return args


if __name__ == "__main__":
    run_script("super_resolution", main, parse_args())
