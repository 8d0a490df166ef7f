"""The gallery of the documentation: what the models do on real data, as pictures, text and sound.

Trains small versions of the models on Fashion-MNIST (the scikit-learn 8x8 digits where
``make data`` has not installed it), English words and espeak-ng speech, and writes what
``docs/gallery.md`` shows:

- ``vae_reconstructions.png``: a 20-D VAE reconstructing one test image per class, from the
  latent mean and from three samples of ``q(z | x)``;
- ``vae_latent_space.png``: a 2-D VAE's test latent means coloured by class, beside the
  images it decodes on a grid over the prior's quantiles;
- ``vae_interpolation.png``: decoded straight lines between the latent means of two test
  images; ``vae_samples.png``: pixel means of ``p(x | z)`` for ``z ~ N(0, I)`` (20-D latent);
- ``pixelcnn_class_samples.png``: a class-conditional PixelCNN, one row of samples per class;
- ``pixelcnn_completions.png``: the bottom half of test images drawn given the top half and
  the class, beside the VAE's MAP completion;
- ``outliers.png``: per class, the test images the PixelCNN finds most and least likely;
- ``compression.png``: bits per binarized test image, PixelCNN range coding against PNG,
  gzip and lzma;
- ``language_samples.md``: a table of held-out bits per character and sampled words of
  n-gram and GRU language models (included as text by the page);
- ``wavenet_data.wav``, ``wavenet_generated.wav``, ``wavenet_waveforms.png``: held-out speech
  and two seconds that a WaveNet generates;
- ``metrics.json``: the numbers quoted on the page and the settings.

Trained models are cached in ``--cache-dir`` under a hash of their settings, so a second run
only evaluates and draws, and draws the same files. The cache files are written atomically
with a CRC; one that cannot be used (corrupt, of an older format or other settings) is named
and trained afresh. Flags out of range are refused before any model is trained.

Expected with the defaults on Fashion-MNIST, seed 0 (about five minutes of CPU time on one
thread the first time: 313 s measured, 22 minutes of wall time on a heavily shared 2-core
machine; 43 s of CPU time once cached): on 2000 binarized test images the VAE's ELBO -248.0
and IWAE_100 -245.1 nats per image, the PixelCNN's exact NLL 261 nats (two epochs on 4000
images: its samples have the coarse shapes of the classes under ragged texture), PixelCNN
range coding 373 bits per image against 1321 for PNG and 500 for lzma, test bits per
character 4.24 / 3.13 / 2.80 / 2.66 for the 1-, 3-, 5-gram and the 5-gram with the
hierarchical prior and 2.91 for the GRU, and the WaveNet 4.93 bits per sample on held-out
espeak-ng speech against 7.20 for the histogram.

    python examples/gallery.py --out-dir runs/gallery
    make gallery   # the same into docs/figures/gallery, models cached in runs/gallery-models
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import lzma
import math
import textwrap
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402

from inference import (  # noqa: E402
    elbo,
    encode_images,
    fit,
    iwae_bound,
    map_complete,
    observed_channel,
    posterior_means,
)
from inference.training.checkpoints import (  # noqa: E402
    CheckpointError,
    load_checkpoint,
    remove_stale_partials,
    save_checkpoint,
)
from ppl_models import (  # noqa: E402
    VAE,
    GRULanguageModel,
    NGramModel,
    PixelCNN,
    Vocabulary,
    WaveNet,
    binarize_dynamic,
    binarize_static,
    load_images,
    load_signal,
    load_words,
    mu_law_decode,
    mu_law_encode,
    write_wav,
)
from ppl_models.audio import DEFAULT_RATE  # noqa: E402
from scaffold.flags import (  # noqa: E402
    count_used,
    positive_float,
    positive_int,
    script_parser,
    step_count,
)
from scaffold.runs import (finish_run, run_script, start_run, writable_folder,  # noqa: E402
                           write_text)

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
# Bumped whenever the training code changes, so that cached models are not reused.
CACHE_VERSION = 1
NUM_CLASSES = 10  # of both data sets
SEGMENT = 1024  # samples per WaveNet training segment


# ---------------------------------------------------------------------------------- helpers
def load_cached(module: torch.nn.Module, path: Path, key: str) -> float | None:
    """Load ``module``'s parameters from the cache file ``path`` (written by :func:`cached`
    for the settings ``key``) and return its training seconds; None, after saying why and
    naming the file, when the file is unreadable, corrupt (truncated, altered: the CRC of
    :func:`inference.training.checkpoints.load_checkpoint`), of an older format, or of
    other settings or another network. ``module`` is then unchanged, and the file removed."""
    try:
        saved = load_checkpoint(path, map_location="cpu")
        if saved.get("settings") != key:
            raise CheckpointError("it holds a model of other settings")
        seconds = float(saved["train_seconds"])
        state = module.state_dict()
        if ({k: tuple(v.shape) for k, v in saved["state"].items()}
                != {k: tuple(v.shape) for k, v in state.items()}):
            raise CheckpointError("its parameters do not fit the network")
    except (CheckpointError, KeyError, TypeError, ValueError, AttributeError) as error:
        print(f"gallery: cannot use the cached model {path} ({error}); training it afresh "
              f"to replace it", flush=True)
        path.unlink()  # (save_checkpoint replaces no file of another format: this is ours)
        return None
    module.load_state_dict(saved["state"])
    return seconds


def cached(module: torch.nn.Module, name: str, settings: dict, cache_dir: Path, train) -> dict:
    """Load ``module``'s parameters from ``cache_dir`` or train them with ``train()`` and save.

    The file name holds a hash of ``settings`` (and :data:`CACHE_VERSION`), so a change of
    data, size or budget trains afresh; so does a file that cannot be used (corrupt, of
    another format or settings: :func:`load_cached` says so, naming it), which the new one
    replaces. The file is written atomically (a run killed while writing leaves the old file
    or none, never half of one); a failed write is said and the run goes on with the trained
    model. Returns ``{"cached", "train_seconds", "file"}``.
    """
    key = json.dumps({"version": CACHE_VERSION, **settings}, sort_keys=True, default=str)
    path = cache_dir / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.pt"
    if path.is_dir():
        raise SystemExit(f"gallery: the cache file {path} (in --cache-dir) is a folder; "
                         "move it away")
    if path.exists():
        seconds = load_cached(module, path, key)
        if seconds is not None:
            module.eval()
            return {"cached": True, "train_seconds": seconds, "file": str(path)}
    writable_folder(cache_dir, "--cache-dir")  # before the training, not after it
    pyro.clear_param_store()
    start = time.perf_counter()
    train()
    seconds = time.perf_counter() - start
    module.eval()
    remove_stale_partials(path)  # of runs killed while writing it
    try:
        save_checkpoint(path, {"state": module.state_dict(), "train_seconds": seconds,
                               "settings": key})
    except OSError as error:  # a full disk: the trained model is still here, the run goes on
        print(f"gallery: {error}; the model is not cached", flush=True)
    return {"cached": False, "train_seconds": seconds, "file": str(path)}


def save_small_png(fig, path: Path) -> None:
    """Save ``fig`` as a PNG with a reduced palette (the figures are mostly grey levels)."""
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, bbox_inches="tight")
    plt.close(fig)
    buffer.seek(0)
    image = Image.open(buffer).convert("RGB")
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def show_grid(ax, images: torch.Tensor, columns: int, gap: int = 1) -> None:
    """Tile ``images: [n, 1, H, W]`` in [0, 1] into ``ax`` (white on black, as the data sets
    are usually shown) with white gaps, no axes."""
    n, _, h, w = images.shape
    rows = math.ceil(n / columns)
    canvas = np.ones((rows * (h + gap) - gap, columns * (w + gap) - gap))
    for k, image in enumerate(images[:, 0].detach().cpu().numpy()):
        r, c = divmod(k, columns)
        canvas[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = image
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def grid_figure(rows: list[torch.Tensor], path: Path, title: str, row_labels: list[str],
                column_labels: list[str] | None = None, scale: float = 0.7) -> None:
    """One labelled row per tensor ``[columns, 1, H, W]`` (all rows the same length)."""
    columns = rows[0].shape[0]
    width = scale * columns + 1.4
    fig, axes = plt.subplots(len(rows), 1, figsize=(width, scale * len(rows) + 0.5), dpi=100,
                             squeeze=False)
    title = "\n".join(textwrap.wrap(title, width=max(40, int(13 * width))))
    for k, (ax, row, label) in enumerate(zip(axes[:, 0], rows, row_labels)):
        show_grid(ax, row, columns)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        if k == 0 and column_labels:
            width = row.shape[-1] + 1
            ax.set_xticks([width * c + row.shape[-1] / 2 - 0.5 for c in range(columns)])
            ax.set_xticklabels(column_labels, fontsize=7, rotation=30, ha="left")
            ax.xaxis.tick_top()
            ax.tick_params(length=0)
    axes[0, 0].set_title(title, fontsize=9, pad=34 if column_labels else 6)
    fig.subplots_adjust(hspace=0.08)
    save_small_png(fig, path)


def per_class_needed(args: argparse.Namespace) -> int:
    """Test images of each class the figures need: the second of each class is completed
    (the first reconstructed), and the outlier figure shows ``--outliers-per-side`` most and
    as many least likely ones, which must be different images."""
    return max(2, 2 * args.outliers_per_side)


def check_test_classes(labels: torch.Tensor, num_classes: int, args) -> None:
    """``SystemExit`` naming ``--num-test`` (and ``--outliers-per-side``) unless the test
    images ``labels: [n]`` hold :func:`per_class_needed` of every class: checked when the
    data are loaded, before any model is trained."""
    need = per_class_needed(args)
    counts = torch.bincount(labels, minlength=num_classes)
    short = [c for c in range(num_classes) if counts[c] < need]
    if short:
        raise SystemExit(f"gallery: the {len(labels)} test images (--num-test) hold fewer than "
                         f"{need} image(s) of class(es) {short} (fewest: {int(counts.min())}), "
                         f"which the figures need with --outliers-per-side "
                         f"{args.outliers_per_side}; raise --num-test or lower "
                         f"--outliers-per-side")


def one_per_class(labels: torch.Tensor, num_classes: int, offset: int = 0) -> torch.Tensor:
    """Index of the ``offset``-th image of each class: ``[num_classes]``."""
    counts = torch.bincount(labels, minlength=num_classes)
    short = [c for c in range(num_classes) if counts[c] <= offset]
    if short:
        raise SystemExit(f"gallery: the {len(labels)} test images hold fewer than "
                         f"{offset + 1} image(s) of class(es) {short}; raise --num-test")
    return torch.stack([torch.nonzero(labels == c)[offset, 0] for c in range(num_classes)])


def with_labels(transform):
    """A ``batch_transform`` applying ``transform`` to the images of (images, labels)."""
    return lambda images, labels: (transform(images), labels)


# ------------------------------------------------------------------------------------- VAE
def train_vae(latent_dim: int, data, args, device, cache_dir: Path) -> tuple[VAE, dict]:
    """An MLP VAE with Bernoulli pixels on dynamically binarized training images."""
    pyro.set_rng_seed(args.seed)  # the same initial networks, whatever ran before
    vae = VAE(data.image_shape, latent_dim, "bernoulli", "mlp", (args.hidden,))
    train_x = data.train.images[:args.num_train]
    settings = {"data": data.name, "latent_dim": latent_dim, "hidden": args.hidden,
                "num_train": len(train_x), "epochs": args.vae_epochs, "seed": args.seed}
    info = cached(vae, f"vae{latent_dim}", settings, cache_dir, lambda: fit(
        vae.model, vae.guide, train_x, epochs=args.vae_epochs, batch_size=128, lr=1e-3,
        seed=args.seed, device=device, batch_transform=binarize_dynamic))
    return vae.to(device), info


def vae_figures(vae2: VAE, vae20: VAE, test_grey, test_x, test_y, names, out: Path,
                seed: int) -> dict:
    """Reconstructions, latent space, interpolations and samples (module docstring)."""
    device = test_x.device
    picked = one_per_class(test_y, len(names))
    x = test_x[picked]
    torch.manual_seed(seed)
    rows = [test_grey[picked], x, vae20.reconstruct(x), *vae20.reconstruct(x, num_samples=3)]
    grid_figure(rows, out / "vae_reconstructions.png",
                "VAE (20-D latent): test images, reconstructed from the latent mean and from "
                "samples z ~ q(z | x)", ["data", "binarized", "mean z", "z ~ q", "z ~ q",
                                         "z ~ q"], list(names))

    # the 2-D latent space: test means by class, and the decoder over the prior's quantiles
    means = posterior_means(vae2.guide, test_x).cpu()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.6), dpi=100,
                                      gridspec_kw={"width_ratios": [1, 1]})
    for c, name in enumerate(names):
        points = means[test_y.cpu() == c]
        left.scatter(points[:, 0], points[:, 1], s=4, color=plt.cm.tab10(c), label=name)
    left.legend(fontsize=7, markerscale=3, loc="best", framealpha=0.8)
    left.set_xlabel("$z_1$")
    left.set_ylabel("$z_2$")
    left.set_title("test images' latent means, by class", fontsize=9)
    steps = 12
    values = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.03, 0.97, steps))
    z = torch.stack(torch.meshgrid(values, values.flip(0), indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        decoded = vae2.decode(z.to(device)).mean
    show_grid(right, decoded, steps, gap=1)
    right.set_title("decoded means on a grid of prior quantiles 0.03..0.97", fontsize=9)
    save_small_png(fig, out / "vae_latent_space.png")

    # interpolations in the 20-D latent space between pairs of test images of other classes
    pairs = [(0, 9), (1, 3), (5, 7), (2, 8)] if len(names) == 10 else [(0, 1)]
    rows, labels = [], []
    with torch.no_grad():
        for a, b in pairs:
            ends = posterior_means(vae20.guide, x[[a, b]])
            t = torch.linspace(0, 1, 10, device=device)[:, None]
            path = vae20.decode(ends[0] * (1 - t) + ends[1] * t).mean
            ends_shown = test_grey[picked[[a, b]]]
            rows.append(torch.cat([ends_shown[:1], path, ends_shown[1:]]))
            labels.append(f"{names[a]} to {names[b]}")
    grid_figure(rows, out / "vae_interpolation.png",
                "decoded straight lines between two test images' latent means "
                "(the test images at both ends)", labels)

    generator = torch.Generator().manual_seed(seed)
    samples = vae20.sample_images(64, generator)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    show_grid(ax, samples, 8)
    ax.set_title("pixel means of p(x | z), z ~ N(0, I), 20-D latent", fontsize=9)
    save_small_png(fig, out / "vae_samples.png")

    pyro.set_rng_seed(seed)
    bounds = {"elbo": float(elbo(vae20.model, vae20.guide, test_x).mean()),
              "iwae_100": float(iwae_bound(vae20.model, vae20.guide, test_x, num_samples=100,
                                           chunk_size=50).mean()),
              "elbo_2d": float(elbo(vae2.model, vae2.guide, test_x).mean())}
    return bounds


# -------------------------------------------------------------------------------- PixelCNN
def train_pixelcnn(data, args, device, cache_dir: Path) -> tuple[PixelCNN, dict]:
    """A class-conditional PixelCNN, maximum likelihood on dynamically binarized images."""
    first = 7 if data.image_shape[-1] > 16 else 5
    pyro.set_rng_seed(args.seed)
    m = PixelCNN(data.image_shape, "bernoulli", channels=args.pixelcnn_channels,
                 num_blocks=args.pixelcnn_blocks, first_kernel_size=first,
                 num_classes=data.num_classes)
    n = args.pixelcnn_num_train
    images, labels = data.train.images[:n], data.train.labels[:n]
    settings = {"data": data.name, "channels": args.pixelcnn_channels, "first": first,
                "blocks": args.pixelcnn_blocks, "num_train": len(images),
                "epochs": args.pixelcnn_epochs, "seed": args.seed}
    info = cached(m, "pixelcnn", settings, cache_dir, lambda: fit(
        m.model, m.guide, (images, labels), epochs=args.pixelcnn_epochs, batch_size=64,
        lr=2e-3, seed=args.seed, device=device, batch_transform=with_labels(binarize_dynamic)))
    return m.to(device), info


def pixelcnn_figures(m: PixelCNN, vae20: VAE, test_x, test_y, names, out: Path, args) -> dict:
    """Class samples, completions, per-class outliers and compression (module docstring)."""
    device = test_x.device
    num_classes = len(names)
    per_class = args.samples_per_class
    classes = torch.arange(num_classes, device=device).repeat_interleave(per_class)
    samples = m.sample_fast(len(classes), classes, seed=args.seed)
    grid_figure(list(samples.split(per_class)), out / "pixelcnn_class_samples.png",
                "class-conditional PixelCNN: samples x ~ p(x | class), one row per class",
                list(names))

    # completions: bottom half drawn given the top half and the class
    picked = one_per_class(test_y, num_classes, offset=1)
    x, y = test_x[picked], test_y[picked]
    _, _, H, W = x.shape
    missing = torch.zeros_like(x, dtype=torch.bool)
    missing[..., H // 2:, :] = True
    draws = args.completions
    drawn = m.sample_fast(len(x) * draws, y.repeat_interleave(draws),
                          given=x.repeat_interleave(draws, 0), mask=~missing.repeat_interleave(
                              draws, 0), seed=args.seed).reshape(len(x), draws, 1, H, W)
    vae_fill, _ = map_complete(vae20, observed_channel(x, missing), steps=200)
    shown = torch.where(missing, 0.5, x)
    columns = [x, shown, *drawn.unbind(1), torch.where(missing, vae_fill, x)]
    rows = [torch.stack([col[k] for col in columns]) for k in range(len(x))]
    grid_figure(rows, out / "pixelcnn_completions.png",
                "the bottom half drawn given the top half: PixelCNN samples, and the VAE's "
                "MAP completion (pixel probabilities)", list(names),
                ["test image", "given", *[f"PixelCNN {k + 1}" for k in range(draws)],
                 "VAE MAP"])

    # most and least likely test images of each class under p(x | class)
    with torch.no_grad():
        log_p = torch.cat([m.log_prob(x_b, y_b) for x_b, y_b in
                           zip(test_x.split(250), test_y.split(250))])
    shown_n = args.outliers_per_side
    rows, labels = [], []
    for c in range(num_classes):
        index = torch.nonzero(test_y == c)[:, 0]
        order = index[log_p[index].argsort(descending=True)]
        rows.append(torch.cat([test_x[order[:shown_n]], torch.ones_like(test_x[:1]),  # a gap
                               test_x[order[-shown_n:]]]))
        labels.append(f"{names[c]}\n{-float(log_p[order[0]]):.0f} .. "
                      f"{-float(log_p[order[-1]]):.0f} nats")
    grid_figure(rows, out / "outliers.png",
                f"per class: the {shown_n} most likely test images under the PixelCNN | the "
                f"{shown_n} least likely (-log p(x | class) range on the left)", labels)

    # compression of binarized test images: PixelCNN range coding against generic coders
    n = min(args.num_compress, len(test_x))
    images, labels = test_x[:n], test_y[:n]

    def pixel_probs(symbols: torch.Tensor) -> torch.Tensor:
        p1 = m.distribution(symbols.float(), labels).mean  # [n, 1, H, W]
        return torch.stack([1 - p1, p1], -1).clamp_min(1e-7)

    code = encode_images(pixel_probs, images.long(), verify=False)  # its length only
    bits = {"PixelCNN (range coded, class sent)": (8 * len(code)
                                                   + n * math.log2(num_classes)) / n}
    bits.update(generic_code_lengths(images))
    fig, ax = plt.subplots(figsize=(6.5, 2.6), dpi=100)
    names_sorted = sorted(bits, key=bits.get)
    ax.barh(names_sorted, [bits[k] for k in names_sorted],
            color=["C2" if k.startswith("PixelCNN") else "C7" for k in names_sorted])
    for k, name in enumerate(names_sorted):
        ax.text(bits[name], k, f" {bits[name]:.0f}", va="center", fontsize=8)
    ax.set_xlabel(f"bits per binarized test image ({H}x{W} pixels, {n} images)")
    ax.set_xlim(0, 1.15 * max(bits.values()))
    save_small_png(fig, out / "compression.png")
    ideal = float(-log_p[:n].sum() / math.log(2) / n + math.log2(num_classes))
    return {"test_nll_nats_per_image": -float(log_p.mean()),
            "compression_bits_per_image": bits, "num_compressed": n,
            "compression_ideal_bits_per_image": ideal}


def generic_code_lengths(images: torch.Tensor) -> dict[str, float]:
    """Bits per image of ``images: [n, 1, H, W]`` 0/1: raw bits, 1-bit PNG files, and gzip
    and lzma of all images' packed bits together."""
    from PIL import Image

    n = len(images)
    array = images[:, 0].cpu().numpy().astype(bool)
    png = 0
    for image in array:
        buffer = io.BytesIO()
        Image.fromarray(image).convert("1").save(buffer, format="PNG", optimize=True)
        png += len(buffer.getvalue())
    packed = np.packbits(array).tobytes()
    return {"raw (1 bit per pixel)": float(array[0].size),
            "PNG, one file per image": 8 * png / n,
            "gzip -9, all images": 8 * len(gzip.compress(packed, 9)) / n,
            "lzma, all images": 8 * len(lzma.compress(packed, preset=9)) / n}


# ---------------------------------------------------------------------------- language
@torch.no_grad()
def bits_per_char(lm, x: torch.Tensor, vocab: Vocabulary) -> float:
    """Mean ``-log2 p`` per symbol of ``x: [n, max_len]``, end symbols included."""
    nats = sum(float(lm.log_prob(b).sum()) for b in x.split(4096))
    return -nats / float(vocab.lengths(x).sum()) / math.log(2)


def language_samples(data, args, device, cache_dir: Path, out: Path) -> dict:
    """n-grams and a GRU on English words (``data``: :func:`ppl_models.load_words`'s split):
    a Markdown table of bits/char and samples."""
    vocab = Vocabulary.from_words(data.words)
    train = vocab.encode(data.train[:args.lm_num_train])
    test = vocab.encode(data.test)
    rows = []
    for k, (order, backoff) in enumerate(((1, False), (3, False), (5, False), (5, True))):
        ngram = NGramModel(order, vocab, backoff=backoff).fit_counts(train)
        ngram.fit_concentration()
        generator = torch.Generator().manual_seed(args.seed + k)
        rows.append({"model": f"{order}-gram" + (", hierarchical prior" if backoff else ""),
                     "bits": bits_per_char(ngram, test, vocab),
                     "samples": ngram.sample(args.num_words, generator)})
    pyro.set_rng_seed(args.seed)
    gru = GRULanguageModel(vocab, embedding=32, hidden=args.gru_hidden, dropout=0.2)
    settings = {"data": data.source, "num_train": len(train), "hidden": args.gru_hidden,
                "epochs": args.gru_epochs, "seed": args.seed}
    info = cached(gru, "gru", settings, cache_dir, lambda: fit(
        gru.model, gru.guide, train, epochs=args.gru_epochs, batch_size=128, lr=3e-3,
        seed=args.seed, device=device))
    gru.to(device)
    generator = torch.Generator(device).manual_seed(args.seed)
    rows.append({"model": "GRU", "bits": bits_per_char(gru, test.to(device), vocab),
                 "samples": gru.sample(args.num_words, generator)})
    held_out = [data.test[int(i)] for i in
                torch.randperm(len(data.test), generator=torch.Generator().manual_seed(
                    args.seed))[:args.num_words]]
    def shown(words: list[str]) -> str:  # letter salad cut short, empty words visible
        return " ".join((w if len(w) <= 24 else w[:22] + "…") or "∅" for w in words)

    lines = ["| model | test bits per character | sampled words |", "|---|---|---|"]
    lines += [f"| {r['model']} | {r['bits']:.2f} | {shown(r['samples'])} |" for r in rows]
    lines.append(f"| held-out words (for comparison) | | {shown(held_out)} |")
    write_text(out / "language_samples.md", "\n".join(lines) + "\n")
    return {"source": data.source, "num_train_words": len(train), "gru": info,
            "models": rows, "held_out_words": held_out}


# ----------------------------------------------------------------------------------- audio
def wavenet_audio(args, device, cache_dir: Path, out: Path) -> dict:
    """A WaveNet on 8 kHz mu-law speech; held-out and generated audio and their waveforms."""
    signal = load_signal(args.audio, seconds=args.audio_seconds, seed=args.seed)
    levels = mu_law_encode(signal.samples)
    length = SEGMENT
    segments = levels[: len(levels) // length * length].reshape(-1, length)
    num_test = max(1, len(segments) // 10)
    train, test = segments[:-num_test], segments[-num_test:]
    pyro.set_rng_seed(args.seed)
    wn = WaveNet(layers=8, stacks=1, channels=32, skip_channels=64)
    settings = {"source": signal.source, "rate": signal.rate, "num_samples": len(levels),
                "epochs": args.wavenet_epochs, "seed": args.seed}
    info = cached(wn, "wavenet", settings, cache_dir, lambda: fit(
        wn.model, wn.guide, train, epochs=args.wavenet_epochs, batch_size=8, lr=3e-3,
        seed=args.seed, device=device))
    wn.to(device)
    with torch.no_grad():
        test_bits = -float(wn.log_prob(test.to(device)).sum()) / test.numel() / math.log(2)
    counts = torch.bincount(train.reshape(-1), minlength=256).double() + 1
    histogram_bits = float(-(counts / counts.sum()).log2()[test.reshape(-1)].mean())
    num = round(args.generate_seconds * signal.rate)
    generated = mu_law_decode(wn.generate(num, seed=args.seed)[0].cpu())
    real = mu_law_decode(test.reshape(-1)[:num])
    write_wav(out / "wavenet_data.wav", real, signal.rate)
    write_wav(out / "wavenet_generated.wav", generated, signal.rate)
    fig, axes = plt.subplots(2, 1, figsize=(9, 3.2), dpi=100, sharex=True, sharey=True)
    for ax, wave, label in zip(axes, (real, generated), ("held-out speech", "WaveNet sample")):
        ax.plot(np.arange(len(wave)) / signal.rate, wave.numpy(), lw=0.3, color="C0")
        ax.set_ylabel(label, fontsize=8)
    axes[1].set_xlabel("seconds")
    save_small_png(fig, out / "wavenet_waveforms.png")
    return {"source": signal.source, "rate_hz": signal.rate, "wavenet": info,
            "receptive_field": wn.receptive_field, "test_bits_per_sample": test_bits,
            "histogram_bits_per_sample": histogram_bits, "generated_seconds": num / signal.rate}


# ------------------------------------------------------------------------------------ main
def main(args: argparse.Namespace) -> dict:
    out, device, start = start_run(args)
    cache_dir = writable_folder(args.cache_dir, "--cache-dir")

    name = args.dataset
    if name == "auto":
        try:
            data = load_images("fashion-mnist")
        except FileNotFoundError as error:
            print(f"Fashion-MNIST not found ({error}); using the 8x8 digits (`make data` "
                  f"installs Fashion-MNIST)")
            data = load_images("digits")
    else:
        data = load_images(name)
    names = FASHION_CLASSES if data.name == "fashion-mnist" else tuple(map(str, range(10)))
    args.num_train, args.pixelcnn_num_train = (
        count_used("gallery", flag, count, len(data.train), f"the {data.name} training split",
                   default)
        for flag, count, default in (("--num-train", args.num_train, 20000),
                                     ("--pixelcnn-num-train", args.pixelcnn_num_train, 4000)))
    words = load_words(seed=args.seed)
    args.lm_num_train = count_used("gallery", "--lm-num-train", args.lm_num_train,
                                   len(words.train), "the word list's training split", 20000)
    test_grey = data.test.images[:args.num_test].to(device)
    test_x = binarize_static(data.test.images[:args.num_test], args.seed).to(device)
    test_y = data.test.labels[:args.num_test].to(device)
    check_test_classes(test_y, len(names), args)  # before any training, not after the VAEs
    print(f"{data.name}: {len(data.train)} training images, {len(test_x)} test images shown")

    metrics = {"dataset": data.name, "config": vars(args), "device": str(device)}
    vae2, info2 = train_vae(2, data, args, device, cache_dir)
    vae20, info20 = train_vae(20, data, args, device, cache_dir)
    metrics["vae"] = {"latent_2": info2, "latent_20": info20, "units": "nats per binarized "
                      "test image", **vae_figures(vae2, vae20, test_grey, test_x, test_y, names,
                                                  out, args.seed)}
    print(f"VAE: test ELBO {metrics['vae']['elbo']:.2f}, IWAE_100 "
          f"{metrics['vae']['iwae_100']:.2f} nats per image")
    pixelcnn, info = train_pixelcnn(data, args, device, cache_dir)
    metrics["pixelcnn"] = {**info, **pixelcnn_figures(pixelcnn, vae20, test_x, test_y, names,
                                                      out, args)}
    print(f"PixelCNN: test NLL {metrics['pixelcnn']['test_nll_nats_per_image']:.2f} nats per "
          f"image; bits per image "
          + ", ".join(f"{k} {v:.0f}" for k, v in
                      metrics["pixelcnn"]["compression_bits_per_image"].items()))
    metrics["language"] = language_samples(words, args, device, cache_dir, out)
    print("bits per character: " + ", ".join(f"{r['model']} {r['bits']:.2f}"
                                             for r in metrics["language"]["models"]))
    metrics["audio"] = wavenet_audio(args, device, cache_dir, out)
    print(f"WaveNet ({metrics['audio']['source']}): {metrics['audio']['test_bits_per_sample']:.2f}"
          f" test bits per sample, histogram {metrics['audio']['histogram_bits_per_sample']:.2f}")
    return finish_run(out, metrics, start, "figures, audio, words and metrics.json")


def parse_args(argv=None) -> argparse.Namespace:
    parser = script_parser(__doc__, "runs/gallery")
    parser.add_argument("--dataset", choices=["auto", "fashion-mnist", "digits"], default="auto",
                        help="auto: Fashion-MNIST when installed, else the 8x8 digits")
    parser.add_argument("--num-train", type=positive_int, default=None,
                        help="VAE training images (the first N; default 20000, or the whole "
                             "split when smaller)")
    parser.add_argument("--num-test", type=positive_int, default=2000,
                        help="test images used (the first N; at least 2 of each class, and "
                             "twice --outliers-per-side)")
    parser.add_argument("--hidden", type=positive_int, default=500, help="VAE MLP hidden units")
    parser.add_argument("--vae-epochs", type=step_count, default=15)
    parser.add_argument("--pixelcnn-num-train", type=positive_int, default=None,
                        help="PixelCNN training images (the first N; default 4000, or the "
                             "whole split when smaller)")
    parser.add_argument("--pixelcnn-channels", type=positive_int, default=24)
    parser.add_argument("--pixelcnn-blocks", type=positive_int, default=3)
    parser.add_argument("--pixelcnn-epochs", type=step_count, default=2)
    parser.add_argument("--samples-per-class", type=positive_int, default=10)
    parser.add_argument("--completions", type=positive_int, default=4,
                        help="PixelCNN draws per image")
    parser.add_argument("--outliers-per-side", type=positive_int, default=5)
    parser.add_argument("--num-compress", type=positive_int, default=200)
    parser.add_argument("--lm-num-train", type=positive_int, default=None,
                        help="language models' training words (the first N; default 20000, "
                             "or all when fewer)")
    parser.add_argument("--gru-hidden", type=positive_int, default=128)
    parser.add_argument("--gru-epochs", type=step_count, default=3)
    parser.add_argument("--num-words", type=positive_int, default=8, help="sampled words per model")
    parser.add_argument("--audio", choices=["auto", "speech", "synthetic"], default="auto",
                        help="auto: espeak-ng speech when installed, else the synthetic voice")
    parser.add_argument("--audio-seconds", type=positive_float, default=30.0,
                        help="length of the synthetic signal (at least two WaveNet segments, "
                             f"{2 * SEGMENT / DEFAULT_RATE:g} s)")
    parser.add_argument("--wavenet-epochs", type=step_count, default=15)
    parser.add_argument("--generate-seconds", type=positive_float, default=2.0,
                        help=f"audio the WaveNet generates (at least one sample, "
                             f"1/{DEFAULT_RATE} s)")
    parser.add_argument("--cache-dir", default="runs/gallery-models",
                        help="trained models, reused when their settings are unchanged")
    args = parser.parse_args(argv)
    # the ranges that depend on other flags or on the data's sizes: refused here, before any
    # model is trained, rather than by the stage that needs them after the others trained
    need = NUM_CLASSES * per_class_needed(args)
    if args.num_test < need:
        parser.error(f"argument --num-test: the figures need at least {need} test images "
                     f"({per_class_needed(args)} of each of the {NUM_CLASSES} classes with "
                     f"--outliers-per-side {args.outliers_per_side}), got {args.num_test}")
    if round(args.audio_seconds * DEFAULT_RATE) < 2 * SEGMENT:
        parser.error(f"argument --audio-seconds: the synthetic signal must hold two WaveNet "
                     f"segments of {SEGMENT} samples at {DEFAULT_RATE} Hz (one to train on, "
                     f"one to test), at least {2 * SEGMENT / DEFAULT_RATE:g} s; got "
                     f"{args.audio_seconds:g}")
    if round(args.generate_seconds * DEFAULT_RATE) < 1:
        parser.error(f"argument --generate-seconds: must be at least one sample, "
                     f"1/{DEFAULT_RATE} s, got {args.generate_seconds:g}")
    return args


if __name__ == "__main__":
    run_script("gallery", main, parse_args())
