"""WaveNet on 8 kHz mu-law audio: held-out bits per sample, and naive against fast generation.

Loads a signal (``--wav`` file; else speech from ``espeak-ng`` when installed; else the seeded
synthetic voice-like signal of :func:`ppl_models.audio.synthetic_signal`), quantizes it to
256 mu-law levels, cuts it into segments (the last 10% in time are the test set) and trains
:class:`ppl_models.wavenet.WaveNet` by maximum likelihood with :func:`inference.fit`. It
reports test bits per sample next to the i.i.d. baseline (the level histogram of the training
audio), then draws ``--num-generate`` samples with the naive sampler (the network rerun on
the receptive field every step) and with the fast cached sampler (Paine et al. 2016) from one
seed, checks that they are identical and times both.

Expected (defaults: 40 s of espeak-ng speech of the built-in paragraph, 8 layers, 30 epochs;
under two minutes on 2 CPU cores): 4.8 test bits per sample against 7.2 for the histogram
(4.3 on the training audio); the two samplers draw identical samples, 8000 of them in
11-15 s naive and about 2 s fast (ratio 5-7 for a receptive field of 256 samples; it grows
with depth, see ``benchmarks/wavenet_sampling.py``). Without espeak-ng the 30 s synthetic
signal gives 3.9 against 7.5 bits. The generated waveform has speech-like bursts, pauses
and pitch periods, but no words (``waveforms.png``). On a machine busy with other jobs pass
``--threads 1``: two torch threads competing for busy cores slowed training forty-fold in
our runs.

    python examples/wavenet.py --out-dir runs/wavenet
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402

from inference import fit  # noqa: E402
from scaffold.plots import save_figure  # noqa: E402
from scaffold.flags import (  # noqa: E402
    check_not_an_output,
    input_file,
    integer_in,
    numbers,
    positive_float,
    positive_int,
    refused_as_usage,
    script_parser,
    training_flags,
)
from scaffold.runs import finish_run, run_script, start_run  # noqa: E402
from ppl_models.audio import (  # noqa: E402
    histogram_bits_per_sample,
    load_signal,
    mu_law_decode,
    mu_law_encode,
    split_segments,
    write_wav,
)
from ppl_models.wavenet import WaveNet  # noqa: E402


@torch.no_grad()
def bits_per_sample(wn: WaveNet, x: torch.Tensor, batch_size: int = 16) -> float:
    """Mean ``-log2 p(x_t | x_{<t})`` over all samples of ``x: [n, T]``."""
    nats = sum(float(wn.log_prob(x[i:i + batch_size]).sum()) for i in range(0, len(x), batch_size))
    return -nats / x.numel() / math.log(2)


def timed_generate(wn: WaveNet, num_samples: int, seed: int, method: str
                   ) -> tuple[torch.Tensor, float]:
    """``[num_samples]`` levels from one sequence, and the seconds it took."""
    start = time.perf_counter()
    levels = wn.generate(num_samples, seed=seed, method=method)[0]
    return levels, time.perf_counter() - start


def plot_waveforms(real: torch.Tensor, generated: torch.Tensor, rate: int, path: Path,
                   zoom: int) -> None:
    """Real and generated ``[num_samples]`` signals, whole and their first ``zoom`` samples."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 5), sharey=True,
                             gridspec_kw={"width_ratios": [3, 1]})
    for row, (signal, label) in enumerate(((real, "real (test audio)"),
                                           (generated, "generated (fast sampler)"))):
        t = torch.arange(len(signal)) / rate
        axes[row, 0].plot(t, signal, lw=0.4)
        axes[row, 0].set_ylabel(label, fontsize=8)
        axes[row, 1].plot(1000 * t[:zoom], signal[:zoom], lw=0.8)
    axes[1, 0].set_xlabel("time (s)")
    axes[1, 1].set_xlabel("time (ms)")
    save_figure(fig, path)


# Each sampler draws one sample a step (the naive one runs the whole receptive field each
# time): a million samples, two minutes of audio at 8 kHz, already takes hours.
MAX_GENERATE = 10**6
# The files a run writes into --out-dir.
OUTPUTS = ("metrics.json", "generated.wav", "data.wav", "waveforms.png")


def main(args: argparse.Namespace) -> dict:
    out, device, start = start_run(args)
    pyro.clear_param_store()
    check_not_an_output("wavenet", "--wav", args.wav, out, OUTPUTS)

    with refused_as_usage("wavenet"):  # the signal, its segments and the network's size
        signal = load_signal(args.wav or args.source, rate=args.rate, seconds=args.seconds,
                             seed=args.seed)
        levels = mu_law_encode(signal.samples)
        train, test = split_segments(levels, args.segment_length, args.test_fraction)
        wn = WaveNet(layers=args.layers, stacks=args.stacks, channels=args.channels,
                     skip_channels=args.skip_channels)
    print(f"signal: {signal.source}, {signal.seconds:.2f} s at {signal.rate} Hz; "
          f"{len(train)} train / {len(test)} test segments of {args.segment_length} samples")
    history = fit(wn.model, wn.guide, train, epochs=args.epochs, batch_size=args.batch_size,
                  lr=args.lr, seed=args.seed, device=device)
    test, train = test.to(device), train.to(device)
    model_bits = bits_per_sample(wn, test)
    baseline_bits = histogram_bits_per_sample(train, test)

    naive, naive_seconds = timed_generate(wn, args.num_generate, args.seed, "naive")
    fast, fast_seconds = timed_generate(wn, args.num_generate, args.seed, "fast")
    generated = mu_law_decode(fast.cpu())
    write_wav(out / "generated.wav", generated, signal.rate)
    write_wav(out / "data.wav", mu_law_decode(levels), signal.rate)
    real = mu_law_decode(test.reshape(-1)[:args.num_generate].cpu())
    plot_waveforms(real, generated, signal.rate, out / "waveforms.png",
                   zoom=min(args.num_generate, signal.rate // 20))

    metrics = {
        "source": signal.source,
        "rate_hz": signal.rate,
        "num_train_samples": train.numel(),
        "num_test_samples": test.numel(),
        "receptive_field_samples": wn.receptive_field,
        "test_bits_per_sample": model_bits,
        "train_bits_per_sample": bits_per_sample(wn, train),
        "histogram_test_bits_per_sample": baseline_bits,
        "num_generated": args.num_generate,
        "naive_seconds": naive_seconds,
        "fast_seconds": fast_seconds,
        "naive_over_fast": naive_seconds / fast_seconds,
        "samples_identical": bool(torch.equal(naive, fast)),
        "history": history,
        "config": vars(args),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    print(f"{'test bits/sample':<28}{'WaveNet':>10}{'histogram':>11}")
    print(f"{'':<28}{model_bits:>10.3f}{baseline_bits:>11.3f}")
    print(f"generating {args.num_generate} samples: naive {naive_seconds:.2f} s, fast "
          f"{fast_seconds:.2f} s, ratio {metrics['naive_over_fast']:.1f}, identical samples: "
          f"{metrics['samples_identical']}")
    return finish_run(out, metrics, start, ", ".join(OUTPUTS))


def parse_args(argv=None) -> argparse.Namespace:
    parser = script_parser(__doc__, "runs/wavenet")
    parser.add_argument("--wav", type=input_file("a WAV file"), default=None,
                        help="your own WAV file (overrides --source)")
    parser.add_argument("--source", choices=["auto", "speech", "synthetic"], default="auto",
                        help="auto: espeak-ng speech when installed, else synthetic")
    parser.add_argument("--seconds", type=positive_float, default=30.0,
                        help="length of the synthetic signal")
    numbers(parser, rate=8000, segment_length=1024, test_fraction=0.1)
    parser.add_argument("--layers", type=positive_int, default=8, help="blocks per dilation stack")
    numbers(parser, stacks=1, channels=32, skip_channels=64)
    training_flags(parser, epochs=30, batch_size=8, lr=3e-3)
    parser.add_argument("--num-generate", type=integer_in(1, MAX_GENERATE), default=8000,
                        help="samples drawn by each sampler (and written to generated.wav), "
                             f"at most {MAX_GENERATE:,}")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run_script("wavenet", main, parse_args())
