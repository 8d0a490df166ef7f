"""Lossless compression with model probabilities: range coding against gzip, bz2, lzma and PNG.

A model that predicts each symbol from those before it turns into a compressor: the range
coder of ``constriction`` (:mod:`inference.coding.range_coding`) spends
``-log2 p(s_t | s_<t)`` bits per symbol, so the compressed size is the model's negative
log-likelihood in bits plus a few bytes. Two messages are coded, and every codec in the
printed table sees the same data:

- **text**: the test split of the word list (one word per line), coded by the Dirichlet
  n-gram :class:`ppl_models.ngram.NGramModel` fitted to ``--num-train`` training words, against
  gzip, bz2 and lzma of the same text file (UTF-8: ``raw_bits_per_unit``, its size in bits
  per character, is 8 for ASCII words and more with accented letters); bits per character
  count the newline (the end symbol) as a character;
- **images**: the statically binarized 8x8 digits of the test split, coded pixel by pixel with
  an independent-pixel Bernoulli model (per-pixel frequencies of the training images, the
  simplest model) and, when ``ppl_models.pixelcnn`` is present, a PixelCNN trained for
  ``--epochs``; against gzip, bz2 and lzma of the packed bits and PNG (one 1-bit PNG per image,
  and all test images tiled into one PNG).

The digits are also coded by bits-back with the VAE of ``examples/vae.py`` trained for
``--vae-epochs`` (:mod:`inference.coding.bits_back`, ``constriction``'s ANS stack): a
latent-variable model has no tractable ``p(x)``, and bits-back coding reaches its ``-ELBO`` instead.

Each model's bytes are decoded again and compared with the input (``roundtrip`` is True only
for a bit-exact match), and its code length is set beside the model's NLL (``overhead``,
code bits / NLL bits - 1, under 3% for the range coders; for bits-back the reference is
``-ELBO``, and ``net_bits_per_unit`` leaves out the header and the 256 initial random bits).

Expected with the defaults (wamerican words, 20,000 training words, n = 5; six minutes on our
busy 2-core machine; decoding is a Python loop over symbols): the 5-gram codes the 6,388 test
words at 2.80 bits per character, 0.17% above its NLL, where bz2 needs 3.39, lzma 3.61 and
gzip 3.81; the PixelCNN codes a test digit in 36.1 bits, 2.6% above its NLL (gzip 42.9, one
PNG of all images 57.3), and the VAE with bits-back in 37.3 bits (net of the header and the
initial bits 34.9, 0.4% above its -ELBO). See docs/compression.md.

    python examples/compression.py --out-dir runs/compression
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import io
import lzma
import math
import time
from pathlib import Path

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from inference import elbo, fit
from inference.coding.bits_back import (
    MAX_LATENT_BITS,
    bits_back_decode,
    bits_back_encode,
    net_bits,
)
from inference.coding.range_coding import decode_images, decode_words, encode_images, encode_words
from scaffold.flags import (
    check_count,
    count_used,
    flag_error,
    input_file,
    integer_in,
    nonnegative_int,
    pixelcnn_flags,
    positive_int,
    refused_as_usage,
    script_parser,
    step_count,
    training_flags,
)
from scaffold.plots import save_figure
from scaffold.runs import finish_run, run_script, start_run
from ppl_models.data import load_images
from ppl_models.ngram import NGramModel
from ppl_models.pixelcnn import PixelCNN
from ppl_models.text import Vocabulary, load_words
from ppl_models.vae import VAE

NUM_TRAIN = 20000  # training words of the n-gram unless --num-train says otherwise
BYTE_CODECS = {
    "gzip": lambda b: gzip.compress(b, compresslevel=9, mtime=0),
    "bz2": lambda b: bz2.compress(b, compresslevel=9),
    "lzma": lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME),
}


def png_bytes(image: np.ndarray) -> int:
    """Size in bytes of ``image: [H, W]`` (0/1 or 0..255 uint8) saved as an optimized PNG."""
    from PIL import Image

    binary = image.max() <= 1
    picture = Image.fromarray((image * 255).astype(np.uint8) if binary else image.astype(np.uint8))
    buffer = io.BytesIO()
    picture.convert("1" if binary else "L").save(buffer, format="PNG", optimize=True)
    return len(buffer.getvalue())


def tile(images: np.ndarray, columns: int = 20) -> np.ndarray:
    """``images: [n, H, W]`` -> one ``[rows * H, columns * W]`` mosaic (zeros pad the end)."""
    n, height, width = images.shape
    rows = math.ceil(n / columns)
    padded = np.zeros((rows * columns, height, width), images.dtype)
    padded[:n] = images
    return padded.reshape(rows, columns, height, width).swapaxes(1, 2).reshape(
        rows * height, columns * width)


def model_row(data: str, method: str, payload: bytes, nll_bits: float, units: float,
              roundtrip: bool, seconds: dict) -> dict:
    bits = 8 * len(payload)
    return {"data": data, "method": method, "bytes": len(payload), "bits_per_unit": bits / units,
            "nll_bits_per_unit": nll_bits / units, "overhead": bits / nll_bits - 1,
            "roundtrip": roundtrip, **seconds}


def byte_rows(data: str, raw: bytes, units: float) -> list[dict]:
    return [{"data": data, "method": name, "bytes": len(codec(raw)),
             "bits_per_unit": 8 * len(codec(raw)) / units} for name, codec in BYTE_CODECS.items()]


def compress_text(args) -> tuple[list[dict], dict]:
    try:
        words = load_words(args.words, seed=args.seed)
    except (FileNotFoundError, ValueError) as error:  # before any training
        raise flag_error("compression", "--words", str(error)) from None
    vocab = Vocabulary.from_words(words.words)
    check_count("compression", "--num-test-words", args.num_test_words, len(words.test),
                f"the test split of {words.source}")
    test_words = words.test[:args.num_test_words] if args.num_test_words else words.test
    args.num_train = count_used("compression", "--num-train", args.num_train, len(words.train),
                                f"the training split of {words.source}",
                                NUM_TRAIN)  # the number used, in the config
    with refused_as_usage("compression", "--order"):  # an order beyond int64 indices
        lm = NGramModel(args.order, vocab)
    lm.fit_counts(vocab.encode(words.train[:args.num_train]))
    lm.fit_concentration()
    x = vocab.encode(test_words)
    num_chars = int(vocab.lengths(x).sum())  # letters plus one end symbol (newline) per word
    start = time.perf_counter()
    payload = encode_words(lm, x)
    encode_seconds = time.perf_counter() - start
    decoded = decode_words(lm, payload)
    decode_seconds = time.perf_counter() - start - encode_seconds
    nll_bits = -float(lm.log_prob(x).sum()) / math.log(2)
    roundtrip = decoded.shape == x.shape and torch.equal(decoded, x)
    rows = [model_row("text", f"{args.order}-gram + range coder", payload, nll_bits, num_chars,
                      roundtrip, {"encode_seconds": encode_seconds,
                                  "decode_seconds": decode_seconds})]
    # the text file the byte codecs see: UTF-8, so a character may take several bytes
    text = ("\n".join(test_words) + "\n").encode("utf-8")
    rows += byte_rows("text", text, num_chars)
    info = {"source": words.source, "num_train_words": args.num_train,
            "num_test_words": len(test_words), "num_chars": num_chars,
            "num_bytes": len(text), "alpha": lm.concentration,
            "raw_bits_per_unit": 8 * len(text) / num_chars}
    return rows, info


class IndependentPixels:
    """``p(x) = prod_i Bernoulli(x_i | f_i)`` with ``f_i`` the smoothed training frequency of
    pixel ``i`` (add-one): the model without any context, for ``x: [batch, C, H, W]`` 0/1."""

    def __init__(self, train: torch.Tensor):
        self.on = (train.sum(0) + 1) / (train.shape[0] + 2)  # [C, H, W]

    def pixel_probs(self, symbols: torch.Tensor) -> torch.Tensor:
        """``symbols: [batch, C, H, W]`` -> ``[batch, C, H, W, 2]`` (no dependence on them)."""
        on = self.on.to(symbols.device).double().expand(symbols.shape)
        return torch.stack([1 - on, on], -1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [batch, C, H, W]`` -> ``[batch]`` nats."""
        probs = self.pixel_probs(x.long())
        return probs.gather(-1, x.long()[..., None])[..., 0].log().flatten(1).sum(1)


def train_pixelcnn(args, train: torch.Tensor, device):
    """A Bernoulli PixelCNN fitted to ``train: [n, C, H, W]`` (binary); the model (in eval
    mode) and its history."""
    pyro.clear_param_store()
    model = PixelCNN(tuple(train.shape[1:]), likelihood="bernoulli", **pixelcnn_sizes(args))
    history = fit(model.model, model.guide, train, epochs=args.epochs,
                  batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=device)
    return model.eval(), history


def pixelcnn_sizes(args) -> dict:
    return {"channels": args.channels, "num_blocks": args.blocks, "first_kernel_size": 5}


def train_vae(args, train: torch.Tensor, device) -> VAE:
    """The VAE of ``examples/vae.py`` (16 latents, MLP 200, ELBO) on the static draw
    ``train: [n, C, H, W]``."""
    pyro.clear_param_store()
    torch.manual_seed(args.seed)
    vae = VAE(tuple(train.shape[1:]), latent_dim=16, hidden=(200,))
    fit(vae.model, vae.guide, train, epochs=args.vae_epochs, batch_size=args.batch_size,
        lr=1e-3, seed=args.seed, device=device)
    return vae.eval()


def bits_back_row(args, vae: VAE, test: torch.Tensor, device) -> dict:
    """Code ``test: [n, C, H, W]`` (binary) by bits-back with ``vae``; set the code length
    beside its -ELBO."""
    start = time.perf_counter()
    payload = bits_back_encode(vae, test, latent_bits=args.latent_bits, seed=args.seed)
    encode_seconds = time.perf_counter() - start
    decoded, _ = bits_back_decode(vae, payload, latent_bits=args.latent_bits)
    decode_seconds = time.perf_counter() - start - encode_seconds
    pyro.set_rng_seed(args.seed)
    with torch.no_grad():  # -ELBO in bits, 20 draws per image to make its noise negligible
        neg_elbo = -sum(float(elbo(vae.model, vae.guide, test.to(device)).sum())
                        for _ in range(20)) / 20 / math.log(2)
    row = model_row("binarized digits", "VAE + bits-back (ANS)", payload, neg_elbo, len(test),
                    torch.equal(decoded.cpu(), test.cpu()),
                    {"encode_seconds": encode_seconds, "decode_seconds": decode_seconds})
    row["nll_is"] = "-ELBO"
    row["net_bits_per_unit"] = net_bits(payload) / len(test)
    return row


def compress_images(args, device) -> tuple[list[dict], dict]:
    data = load_images("digits").binarized(args.seed)
    train, test = data.train.images, data.test.images
    check_count("compression", "--num-test-images", args.num_test_images, len(test),
                "the digits test split")
    if args.num_test_images:
        test = test[:args.num_test_images]
    symbols = test.long()  # [n, 1, 8, 8], 0/1
    num_images = len(test)
    models = {"independent pixels": IndependentPixels(train)}
    info = {"num_test_images": num_images, "image_shape": list(test.shape[1:]),
            "raw_bits_per_unit": float(test[0].numel())}
    if args.epochs > 0:
        pixelcnn, history = train_pixelcnn(args, train, device)
        models["PixelCNN"] = PixelCNNProbs(pixelcnn)
        info["pixelcnn_history"] = history
    rows = []
    for name, model in tqdm(models.items(), desc="image models"):
        start = time.perf_counter()
        payload = encode_images(model.pixel_probs, symbols.to(device))
        encode_seconds = time.perf_counter() - start
        decoded = decode_images(model.pixel_probs, payload, tuple(test.shape[1:]), device)
        decode_seconds = time.perf_counter() - start - encode_seconds
        with torch.no_grad():
            nll_bits = -float(model.log_prob(test.to(device)).sum()) / math.log(2)
        rows.append(model_row("binarized digits", f"{name} + range coder", payload, nll_bits,
                              num_images, torch.equal(decoded.cpu(), symbols),
                              {"encode_seconds": encode_seconds,
                               "decode_seconds": decode_seconds}))
    if args.vae_epochs > 0:
        rows.append(bits_back_row(args, train_vae(args, train, device), test, device))
    arrays = symbols[:, 0].numpy().astype(np.uint8)  # [n, H, W]
    rows += byte_rows("binarized digits", np.packbits(arrays.reshape(num_images, -1)).tobytes(),
                      num_images)
    rows.append({"data": "binarized digits", "method": "PNG, one file per image",
                 "bytes": sum(png_bytes(a) for a in arrays),
                 "bits_per_unit": 8 * sum(png_bytes(a) for a in arrays) / num_images})
    mosaic = png_bytes(tile(arrays))
    rows.append({"data": "binarized digits", "method": "PNG, all images in one file",
                 "bytes": mosaic, "bits_per_unit": 8 * mosaic / num_images})
    return rows, info


class PixelCNNProbs:
    """Adapter: a PixelCNN's per-pixel level tables for :func:`inference.coding.encode_images`.

    Symbols are level indices (0/1 for binary pixels, ``k`` for the value ``k / 255``).
    """

    def __init__(self, model):
        self.model = model

    def pixel_probs(self, symbols: torch.Tensor) -> torch.Tensor:
        """``symbols: [batch, C, H, W]`` -> ``[batch, C, H, W, K]`` over the K levels."""
        levels = self.model.levels  # [K] on the data scale
        pixels = self.model.distribution(levels[symbols])  # batch shape [batch, C, H, W]
        shape = (len(levels), *symbols.shape)
        log_p = pixels.log_prob(levels.view(-1, 1, 1, 1, 1).expand(shape))  # [K, batch, ...]
        return log_p.double().exp().movedim(0, -1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [batch, C, H, W]`` -> ``[batch]`` nats, the PixelCNN's exact ``log p(x)``."""
        return self.model.log_prob(x)


def main(args: argparse.Namespace) -> dict:
    out, device, start = start_run(args)

    text_rows, text_info = compress_text(args)
    image_rows, image_info = compress_images(args, device)
    rows = text_rows + image_rows
    metrics = {
        "units": "bits per character (text, newline counted) or per image (images); "
                 "overhead = code bits / model NLL bits - 1 (for bits-back, -ELBO bits)",
        "rows": rows, "text": text_info, "images": image_info,
        "config": vars(args), "device": str(device),
    }
    plot_rates(rows, out / "bits.png")

    print(f"{'data':<18}{'method':<32}{'bits/unit':>10}{'NLL':>9}{'overhead':>10}{'exact':>7}")
    for row in rows:
        nll = f"{row['nll_bits_per_unit']:.3f}" if "nll_bits_per_unit" in row else "-"
        over = f"{100 * row['overhead']:.3f}%" if "overhead" in row else "-"
        exact = str(row["roundtrip"]) if "roundtrip" in row else "-"
        print(f"{row['data']:<18}{row['method']:<32}{row['bits_per_unit']:>10.3f}{nll:>9}"
              f"{over:>10}{exact:>7}")
    return finish_run(out, metrics, start, "metrics.json, bits.png")


def plot_rates(rows: list[dict], path: Path) -> None:
    """One horizontal bar chart per data set of bits per unit, lowest first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["data"] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.2), squeeze=False)
    for ax, name in zip(axes[0], datasets):
        chosen = sorted((r for r in rows if r["data"] == name), key=lambda r: r["bits_per_unit"])
        ax.barh([r["method"] for r in chosen], [r["bits_per_unit"] for r in chosen],
                color=["C0" if "range" in r["method"] else "C7" for r in chosen])
        ax.invert_yaxis()
        ax.set_title(name)
        ax.set_xlabel("bits per character" if name == "text" else "bits per image")
    save_figure(fig, path)


def parse_args(argv=None) -> argparse.Namespace:
    parser = script_parser(__doc__, "runs/compression")
    parser.add_argument("--words", type=input_file("a word list"), default=None,
                        help="text file, one word per line (default: wamerican, else bundled)")
    parser.add_argument("--num-train", type=positive_int, default=None,
                        help=f"training words of the n-gram, at most the training split's "
                             f"(default: {NUM_TRAIN}, or the whole split when smaller)")
    parser.add_argument("--num-test-words", type=nonnegative_int, default=0,
                        help="0: the whole test split")
    parser.add_argument("--order", type=positive_int, default=5, help="n of the n-gram")
    parser.add_argument("--num-test-images", type=nonnegative_int, default=0, help="0: all 300")
    parser.add_argument("--epochs", type=step_count, default=10,
                        help="PixelCNN epochs (0: skip it)")
    pixelcnn_flags(parser, channels=32, blocks=4)
    parser.add_argument("--vae-epochs", type=step_count, default=100,
                        help="VAE epochs for bits-back coding (0: skip it)")
    parser.add_argument("--latent-bits", type=integer_in(1, MAX_LATENT_BITS), default=8,
                        help=f"bits-back: 2^b buckets per latent dimension, b in "
                             f"1..{MAX_LATENT_BITS}")
    training_flags(parser, epochs=None, batch_size=64, lr=3e-3)
    return parser.parse_args(argv)


if __name__ == "__main__":
    run_script("compression", main, parse_args())
