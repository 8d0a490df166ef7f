"""Completion and artifact removal: fill masked pixels and remove noise with a VAE and a PixelCNN.

Trains a Bernoulli VAE and a PixelCNN on the binarized 8x8 digits, then damages the
test images four ways and restores them:

- ``bottom half``: rows 4-7 missing;
- ``random 50%``: half of the pixels missing, chosen at random;
- ``scratch``: a random horizontal or vertical line of 1s (place known, so its pixels count as
  missing);
- ``10% flips``: every pixel flipped with probability 0.1 at unknown places (the rate is known).

Methods (:mod:`inference.uses.completion` for the VAE): ``pixel mean`` (training frequency of each
missing pixel; for flips the damaged image itself), ``VAE MAP`` (optimize ``z`` for
``log p(y | z) + log p(z)``), ``VAE MwG`` (Metropolis-within-Gibbs over ``z`` and the damaged
pixels, Mattei and Frellsen 2018), and ``PixelCNN`` (``sample_fast(given=..., mask=...)``,
``--num-draws`` conditional samples averaged; exact for the bottom half, where everything
given precedes everything missing in raster order; for the other masks it conditions only
on the given pixels above and to the left). Not run on flips: their places are unknown.

Each method gives a probability per pixel; reported on the damaged pixels (the missing ones;
every pixel for flips): the ``error rate`` of the thresholded estimate against the clean image
and the ``mean absolute error`` of the probabilities. Figures: clean, damaged (missing pixels
gray) and each restoration, per task.

Expected with the defaults (300 test images; about a minute on 2 idle CPU cores): error rates
on the damaged pixels for bottom half / random 50% / scratch / flips of 0.248 / 0.228 /
0.284 / 0.097 with pixel means, 0.208 / 0.172 / 0.199 / 0.064 with VAE MAP, 0.208 / 0.172 /
0.204 / 0.065 with VAE MwG (acceptance about 0.50) and 0.225 / 0.207 / 0.240 with the
PixelCNN (trained as examples/pixelcnn.py trains it: dynamic binarization, best validation
epoch). ``-log p(bottom half | top half)``: VAE 10.84, PixelCNN 11.31 nats per image
(whole images: 23.13 and 22.93).
See docs/completion.md.

    python examples/completion.py --out-dir runs/completion
"""

from __future__ import annotations

import argparse

import pyro
import pyro.distributions as dist
import torch
from tqdm.auto import tqdm

from inference import KeepBest, fit, iwae_bound
from inference.uses.completion import map_complete, metropolis_within_gibbs, observed_channel
from scaffold.plots import image_grid
from scaffold.flags import (
    check_count,
    check_evaluation_memory,
    check_network_sizes,
    data_flags,
    numbers,
    pixelcnn_flags,
    positive_int,
    positive_step_count,
    script_parser,
    step_count,
    training_flags,
)
from scaffold.runs import finish_run, run_script, start_run
from ppl_models.data import binarize_dynamic, load_images
from ppl_models.pixelcnn import PixelCNN
from ppl_models.vae import VAE


def damage(clean: torch.Tensor, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """The damaged versions of ``clean: [n, C, H, W]`` 0/1.

    Returns:
        ``{task: (y [n, C, H, W], missing bool [n, C, H, W], flip rate)}``.
    """
    generator = torch.Generator().manual_seed(seed)
    n, _, height, width = clean.shape
    rows = torch.arange(height)[:, None].expand(height, width)
    bottom = (rows >= height // 2).expand(clean.shape)
    random_half = torch.rand(clean.shape, generator=generator) < 0.5
    scratch = torch.zeros(clean.shape, dtype=torch.bool)
    places = torch.randint(1, height - 1, (n,), generator=generator)
    for k in range(n):
        if k % 2:
            scratch[k, :, places[k], :] = True
        else:
            scratch[k, :, :, places[k]] = True
    flips = torch.rand(clean.shape, generator=generator) < 0.1
    return {
        "bottom half": (torch.where(bottom, 0.0, clean), bottom, 0.0),
        "random 50%": (torch.where(random_half, 0.0, clean), random_half, 0.0),
        "scratch": (torch.where(scratch, 1.0, clean), scratch, 0.0),
        "10% flips": ((clean + flips.float()) % 2, torch.zeros_like(flips), 0.1),
    }


def errors(estimate: torch.Tensor, clean: torch.Tensor, region: torch.Tensor) -> dict:
    """Error rate of ``estimate > 0.5`` and mean absolute error, over ``region`` pixels;
    ``estimate``, ``clean`` (binary) and the bool ``region`` all ``[n, C, H, W]``."""
    wrong = ((estimate > 0.5).float() != clean).float()
    return {"error_rate": float(wrong[region].mean()),
            "mean_absolute_error": float((estimate - clean).abs()[region].mean())}


def pixelcnn_complete(model: PixelCNN, y: torch.Tensor, missing: torch.Tensor, draws: int,
                      seed: int) -> torch.Tensor:
    """Mean of ``draws`` conditional samples keeping the given pixels: ``[n, C, H, W]``."""
    total = torch.zeros_like(y)
    for k in range(draws):
        total += model.sample_fast(len(y), given=y, mask=~missing, seed=seed + k)
    return total / draws


def given_pixels_model(vae: VAE, given: torch.Tensor):
    """``vae.model`` scoring only the pixels where ``given: [n, C, H, W]`` is True: its
    evidence is ``p(given pixels)``, the missing ones marginalized out."""
    def model(x: torch.Tensor) -> None:
        zeros = x.new_zeros(vae.latent_dim)
        prior = dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", prior)
            pyro.sample("x", vae.decode(z).mask(given).to_event(3), obs=x)
    return model


@torch.no_grad()
def conditional_nll(vae: VAE, pixelcnn: PixelCNN | None, clean: torch.Tensor,
                    missing: torch.Tensor, k: int) -> dict:
    """``-log p(missing pixels | given pixels)`` in nats per image of ``clean: [n, C, H, W]``
    (binary) with the bool ``missing: [n, C, H, W]``, for a mask whose missing
    pixels all follow the given ones in raster order (the bottom half), and each model's
    ``-log p(x)`` of the whole image beside it (the VAE's from IWAE_k).

    PixelCNN: exact, its conditionals summed over the missing pixels. VAE: IWAE_k of the
    whole image minus IWAE_k of the given pixels alone (the guide sees the whole image, a
    valid proposal for both); two tight bounds, their difference not itself a bound.
    """
    pyro.set_rng_seed(0)
    whole = iwae_bound(vae.model, vae.guide, clean, num_samples=k, chunk_size=250)
    given = iwae_bound(given_pixels_model(vae, ~missing), vae.guide, clean, num_samples=k,
                       chunk_size=250)
    result = {"VAE": float((given - whole).mean()), "VAE whole image": -float(whole.mean())}
    if pixelcnn is not None:
        per_pixel = pixelcnn.distribution(clean).log_prob(clean)  # [n, C, H, W]
        result["PixelCNN"] = -float((per_pixel * missing).flatten(1).sum(1).mean())
        result["PixelCNN whole image"] = -float(per_pixel.flatten(1).sum(1).mean())
    return result


def train(model, x: torch.Tensor, args, epochs: int, device, **fit_options) -> list:
    """``fit`` ``model``'s pair on ``x: [n, C, H, W]`` with the flags' budget; the history."""
    pyro.clear_param_store()
    history = fit(model.model, model.guide, x, epochs=epochs, batch_size=args.batch_size,
                  lr=args.lr, seed=args.seed, device=device, **fit_options)
    model.eval()
    return history


def train_pixelcnn(model: PixelCNN, data, args, device) -> list:
    """Train as examples/pixelcnn.py does, since the PixelCNN overfits 1297 static images:
    binarize the grey training images afresh every minibatch and keep the epoch with the best
    exact NLL on the (statically binarized) validation split."""
    grey = data.train.images[:args.num_train] if args.num_train else data.train.images
    valid = data.binarized(args.seed).valid.images.to(device)
    keep = KeepBest(model, lambda: float(model.log_prob(valid).mean()))
    history = train(model, grey, args, args.pixelcnn_epochs, device, callback=keep,
                    batch_transform=binarize_dynamic)
    keep.restore()
    model.eval()
    return history


def main(args: argparse.Namespace) -> dict:
    out, device, start = start_run(args)

    grey = load_images("digits")
    data = grey.binarized(args.seed)
    check_count("completion", "--num-train", args.num_train, len(data.train),
                "the digits training split")
    check_count("completion", "--num-test", args.num_test, len(data.test), "the digits test split")
    train_x = data.train.images[:args.num_train] if args.num_train else data.train.images
    clean = data.test.images[:args.num_test] if args.num_test else data.test.images
    clean = clean.to(device)
    check_evaluation_memory("completion", "--nll-k", args.nll_k, clean)
    shape = data.image_shape
    check_network_sizes(
        "completion", lambda: VAE(shape, args.latent_dim, hidden=(args.hidden,)),
        lambda: PixelCNN(shape, "bernoulli", channels=args.channels, num_blocks=args.blocks,
                         first_kernel_size=5) if args.pixelcnn_epochs > 0 else None)
    vae = VAE(shape, args.latent_dim, hidden=(args.hidden,))
    train(vae, train_x, args, args.vae_epochs, device)
    for p in vae.parameters():
        p.requires_grad_(False)
    pixelcnn = None
    if args.pixelcnn_epochs > 0:
        pixelcnn = PixelCNN(shape, "bernoulli", channels=args.channels, num_blocks=args.blocks,
                            first_kernel_size=5).to(device)
        train_pixelcnn(pixelcnn, grey, args, device)
    pixel_mean = train_x.mean(0).to(device)  # [C, H, W]

    results, acceptance = {}, {}
    generator = torch.Generator(device).manual_seed(args.seed)
    for task, (y, missing, rate) in tqdm(damage(clean.cpu(), args.seed).items(), desc="tasks"):
        y, missing = y.to(device), missing.to(device)
        region = missing if rate == 0 else torch.ones_like(missing)
        channel = observed_channel(y, missing, rate)
        estimates = {"pixel mean": torch.where(missing, pixel_mean, y)}
        estimates["VAE MAP"], _ = map_complete(vae, channel, steps=args.map_steps)
        estimates["VAE MwG"], acceptance[task] = metropolis_within_gibbs(
            vae, channel, num_steps=args.mwg_steps, generator=generator)
        if pixelcnn is not None and rate == 0:
            estimates["PixelCNN"] = pixelcnn_complete(pixelcnn, y, missing, args.num_draws,
                                                      args.seed)
        results[task] = {name: errors(e, clean, region) for name, e in estimates.items()}
        if task == "bottom half":
            nll = conditional_nll(vae, pixelcnn, clean, missing, args.nll_k)
        shown = torch.where(missing, 0.5, y)
        rows = [clean[:10], shown[:10], *(e[:10] for e in estimates.values())]
        image_grid(rows, out / f"completion_{task.replace(' ', '_').replace('%', '')}"
                   ".png", f"{task}: rows clean, damaged, " + ", ".join(estimates),
                   row_labels=["clean", "damaged", *estimates])

    metrics = {
        "num_test": len(clean),
        "units": "error_rate: fraction of damaged pixels wrong after thresholding at 0.5; "
                 "mean_absolute_error: of the pixel probabilities; both against the clean "
                 "binarized image, over missing pixels (all pixels for flips)",
        "results": results, "mwg_acceptance_rate": acceptance,
        "bottom_half_conditional_nll_nats": nll,
        "config": vars(args), "device": str(device),
    }
    methods = list(dict.fromkeys(m for r in results.values() for m in r))
    print(f"error rate on the damaged pixels ({len(clean)} test images)")
    print(f"{'task':<14}" + "".join(f"{m:>12}" for m in methods))
    for task, row in results.items():
        print(f"{task:<14}" + "".join(f"{row[m]['error_rate']:>12.3f}" if m in row else
                                      f"{'-':>12}" for m in methods))
    print("MwG acceptance: " + ", ".join(f"{k} {v:.2f}" for k, v in acceptance.items()))
    print("-log p(bottom half | top half), nats per image: "
          + ", ".join(f"{name} {value:.3f}" for name, value in nll.items()))
    return finish_run(out, metrics, start)


def parse_args(argv=None) -> argparse.Namespace:
    parser = script_parser(__doc__, "runs/completion")
    data_flags(parser, num_train=0, num_test=0)
    numbers(parser, latent_dim=16, hidden=200, vae_epochs=150, map_steps=300)
    parser.add_argument("--mwg-steps", type=positive_step_count, default=400,
                        help="Metropolis-within-Gibbs sweeps, the first half burn-in")
    pixelcnn_flags(parser, channels=32, blocks=4)
    parser.add_argument("--pixelcnn-epochs", type=step_count, default=60,
                        help="0: no PixelCNN")
    parser.add_argument("--num-draws", type=positive_int, default=10,
                        help="PixelCNN samples averaged")
    parser.add_argument("--nll-k", type=positive_int, default=1000,
                        help="IWAE samples for the VAE's conditional NLL of the bottom half")
    training_flags(parser, epochs=None, batch_size=64, lr=3e-3)
    return parser.parse_args(argv)


if __name__ == "__main__":
    run_script("completion", main, parse_args())
