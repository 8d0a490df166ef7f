"""Character language models of English words: Dirichlet-smoothed n-grams against a GRU.

Loads a word list (``--data``, one word per line; else ``/usr/share/dict/words`` from the
Debian package ``wamerican``, filtered to lowercase a-z words; else the 5,429 words bundled in
``ppl_models/corpora``), splits it 80/10/10 with ``--seed`` and trains on the first
``--num-train`` training words:

- :class:`ppl_models.ngram.NGramModel` for ``n = 1 .. --max-order``, fitted by counting, each with
  the Dirichlet concentration ``alpha`` that maximizes the exact evidence of the training
  words (MacKay and Peto 1995); no held-out data is used to choose it. Each order twice:
  with the symmetric prior (additive smoothing) and with the hierarchical prior whose mean is
  the next lower order's predictive (``backoff=True``, rows ``n-gram backoff``);
- :class:`ppl_models.neural_lm.GRULanguageModel` by maximum likelihood with :func:`inference.fit`
  (empty guide), keeping the epoch with the best validation bits per character.

It prints one table of held-out (test) bits per character and perplexity ``2^bits`` per
model, where each word's end symbol counts as one character (a word of ``m`` letters is
``m + 1`` predictions), with the chosen ``alpha`` per ``n``, then five sampled words per model.

Expected (defaults, 2 CPU cores). With the bundled list (what runs where ``wamerican`` is not
installed; about 15 s): test bits per character 4.23, 3.59, 3.23, 3.19, 3.41, 3.66 for
n = 1..6 (best n = 4; longer contexts are mostly unseen in 4,343 words and fall back to
near-uniform guesses) and 2.97 for the GRU. With ``wamerican`` (20,000 of its 51,099
training words; about two and a half minutes): 4.24, 3.57, 3.13, 2.87, 2.80, 2.96 and 2.66
for the GRU. Samples from the larger symmetric n-grams mix real words with letter salad:
once a sample reaches a context never seen in training, additive smoothing guesses nearly
uniformly. The hierarchical prior backs off instead: on the bundled list 4.23, 3.59, 3.22,
3.03, 3.03, 3.03 for n = 1..6 (from n = 5 the evidence sends alpha to its bound, 1e5: the
longer contexts are left to the 4-gram); with ``wamerican`` 4.24, 3.57, 3.13, 2.84, 2.66,
2.66, the 5-gram level with the GRU; word-like samples at every order. The GRU's samples
are mostly pronounceable, English-like words ("forthe", "thidstrips").

    python examples/language_model.py --out-dir runs/language_model
"""

from __future__ import annotations

import argparse
import copy
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402

from inference import fit  # noqa: E402
from scaffold.plots import save_figure  # noqa: E402
from scaffold.flags import (  # noqa: E402
    count_used,
    flag_error,
    fraction_below_one,
    input_file,
    positive_int,
    refused_as_usage,
    script_parser,
    training_flags,
)
from scaffold.runs import finish_run, run_script, start_run  # noqa: E402
from ppl_models.neural_lm import GRULanguageModel  # noqa: E402
from ppl_models.ngram import NGramModel  # noqa: E402
from ppl_models.text import Vocabulary, load_words  # noqa: E402

NUM_TRAIN = 20000  # training words unless --num-train says otherwise


@torch.no_grad()
def bits_per_char(lm, x: torch.Tensor, vocab: Vocabulary, batch_size: int = 4096) -> float:
    """Mean ``-log2 p(s_t | s_{<t})`` over every symbol (end symbols included) of ``x: [n,
    max_len]``."""
    nats = sum(float(lm.log_prob(x[i:i + batch_size]).sum())
               for i in range(0, len(x), batch_size))
    return -nats / float(vocab.lengths(x).sum()) / math.log(2)


def train_gru(vocab: Vocabulary, train: torch.Tensor, valid: torch.Tensor,
              args: argparse.Namespace, device: torch.device
              ) -> tuple[GRULanguageModel, list[dict]]:
    """Maximum likelihood on ``train, valid: [n, max_len]`` word ids with
    :func:`inference.fit`; returns the model at its best validation
    epoch (in eval mode) and the history with ``valid_bits_per_char`` per epoch."""
    with refused_as_usage("language_model"):  # a network too large for memory
        lm = GRULanguageModel(vocab, embedding=args.embedding, hidden=args.hidden,
                              dropout=args.dropout)
    valid = valid.to(device)
    best = {"bits": math.inf, "state": None}

    def keep_best(record: dict) -> None:
        lm.eval()
        record["valid_bits_per_char"] = bits_per_char(lm, valid, vocab)
        lm.train()
        if record["valid_bits_per_char"] < best["bits"]:
            best.update(bits=record["valid_bits_per_char"], state=copy.deepcopy(lm.state_dict()))

    history = fit(lm.model, lm.guide, train, epochs=args.epochs, batch_size=args.batch_size,
                  lr=args.lr, seed=args.seed, device=device, callback=keep_best)
    if best["state"] is not None:
        lm.load_state_dict(best["state"])
    return lm.eval(), history


def plot_bits(orders: list[int], ngram_bits: list[float], ngram_train_bits: list[float],
              backoff_bits: list[float], gru_bits: float, path: Path) -> None:
    """Test (and training) bits per character against ``n``, the GRU as a horizontal line."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(orders, ngram_bits, "o-", label="n-gram, test")
    ax.plot(orders, ngram_train_bits, "o--", color="gray", alpha=0.6, label="n-gram, train")
    ax.plot(orders, backoff_bits, "s-", color="C2", label="n-gram backoff, test")
    ax.axhline(gru_bits, color="C3", label="GRU, test")
    ax.set_xlabel("n-gram order n")
    ax.set_ylabel("bits per character (end symbol included)")
    ax.set_xticks(orders)
    ax.legend()
    save_figure(fig, path)


def main(args: argparse.Namespace) -> dict:
    out, device, start = start_run(args)
    pyro.clear_param_store()

    try:
        data = load_words(args.data, seed=args.seed)
    except (FileNotFoundError, ValueError) as error:  # before any training
        raise flag_error("language_model", "--data", str(error)) from None
    vocab = Vocabulary.from_words(data.words)
    args.num_train = count_used("language_model", "--num-train", args.num_train,
                                len(data.train), f"the training split of {data.source}",
                                NUM_TRAIN)  # the number used, in the config
    train_words = data.train[:args.num_train]
    train, valid, test = (vocab.encode(w) for w in (train_words, data.valid, data.test))
    print(f"words: {data.source}; {len(train_words)} of {len(data.train)} training words used, "
          f"{len(data.valid)} valid, {len(data.test)} test ({int(vocab.lengths(test).sum())} "
          f"symbols incl. end symbols); {len(vocab)} characters")

    with refused_as_usage("language_model", "--max-order"):  # an order beyond int64 indices
        NGramModel(args.max_order, vocab)
    symmetric = [NGramModel(order, vocab).fit_counts(train)
                 for order in range(1, args.max_order + 1)]
    backoff = [NGramModel(args.max_order, vocab, backoff=True).fit_counts(train)]
    while backoff[0].lower is not None:  # the lower orders live inside the highest one
        backoff.insert(0, backoff[0].lower)
    backoff[-1].fit_concentration()  # every order's alpha, lowest first
    rows = []
    for ngram in symmetric + backoff:
        alpha = ngram.concentration if ngram.backoff else ngram.fit_concentration()
        generator = torch.Generator().manual_seed(args.seed)
        rows.append({
            "model": f"{ngram.order}-gram" + (" backoff" if ngram.backoff else ""),
            "order": ngram.order, "backoff": ngram.backoff, "alpha": alpha,
            "log_evidence_nats": ngram.log_evidence(),
            "num_contexts": ngram.num_contexts,
            "train_bits_per_char": bits_per_char(ngram, train, vocab),
            "test_bits_per_char": bits_per_char(ngram, test, vocab),
            "samples": ngram.sample(args.num_samples, generator),
        })

    gru, history = train_gru(vocab, train, valid, args, device)
    generator = torch.Generator(device).manual_seed(args.seed)
    rows.append({
        "model": "GRU", "order": None, "backoff": None, "alpha": None,
        "train_bits_per_char": bits_per_char(gru, train.to(device), vocab),
        "test_bits_per_char": bits_per_char(gru, test.to(device), vocab),
        "samples": gru.sample(args.num_samples, generator),
    })
    for row in rows:
        row["test_perplexity"] = 2 ** row["test_bits_per_char"]

    plain = [r for r in rows if r["order"] and not r["backoff"]]
    plot_bits([r["order"] for r in plain], [r["test_bits_per_char"] for r in plain],
              [r["train_bits_per_char"] for r in plain],
              [r["test_bits_per_char"] for r in rows if r.get("backoff")],
              rows[-1]["test_bits_per_char"], out / "bits_per_char.png")
    metrics = {
        "source": data.source,
        "num_train_words": len(train_words),
        "num_valid_words": len(data.valid),
        "num_test_words": len(data.test),
        "num_test_symbols": int(vocab.lengths(test).sum()),
        "characters": "".join(vocab.characters),
        "units": "bits per character, the end symbol of each word counted as a character",
        "models": rows,
        "gru_history": history,
        "config": vars(args),
        "device": str(device),
    }
    print("test set; bits per character with the end symbol counted as a character")
    print(f"{'model':<16}{'alpha':>12}{'bits/char':>11}{'perplexity':>12}")
    for row in rows:
        alpha = f"{row['alpha']:.4f}" if row["alpha"] is not None else "-"
        print(f"{row['model']:<16}{alpha:>12}{row['test_bits_per_char']:>11.3f}"
              f"{row['test_perplexity']:>12.2f}")
    for row in rows:
        print(f"samples {row['model']:<16} " + " ".join(row["samples"]))
    return finish_run(out, metrics, start, "metrics.json, bits_per_char.png")


def parse_args(argv=None) -> argparse.Namespace:
    parser = script_parser(__doc__, "runs/language_model")
    parser.add_argument("--data", type=input_file("a word list"), default=None,
                        help="text file, one word per line (default: wamerican, else bundled)")
    parser.add_argument("--num-train", type=positive_int, default=None,
                        help=f"training words used, at most the training split's (default: "
                             f"{NUM_TRAIN}, or the whole split when smaller)")
    parser.add_argument("--max-order", type=positive_int, default=6, help="largest n-gram order n")
    parser.add_argument("--num-samples", type=positive_int, default=5,
                        help="words sampled per model")
    parser.add_argument("--embedding", type=positive_int, default=32)
    parser.add_argument("--hidden", type=positive_int, default=256, help="GRU state size")
    parser.add_argument("--dropout", type=fraction_below_one, default=0.3,
                        help="on the GRU's outputs in training, in [0, 1)")
    training_flags(parser, epochs=15, batch_size=128, lr=3e-3)
    return parser.parse_args(argv)


if __name__ == "__main__":
    run_script("language_model", main, parse_args())
