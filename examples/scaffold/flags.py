"""The flags the example and benchmark scripts share, added to a parser one group per call.

Every script starts from :func:`script_parser` (examples) or :func:`benchmark_parser`
(benchmarks), which add ``--seed --device --threads`` and the output folder ``--out-dir``;
the groups below add the flags that several scripts share with the same meaning. Only a
script's own flags stay in the script. Plain numeric sizes go in one :func:`numbers` call.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from pathlib import Path

import torch

def _integer(text: str, minimum: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (sizes, counts of particles, samples, repeats)."""
    return _integer(text, 1, "a positive integer")


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (epochs, where 0 skips training; counts where 0 means all)."""
    return _integer(text, 0, "an integer >= 0")


def thread_count(text: str) -> int:
    """An integer in ``1..`` the CPUs this process may run on (``--threads``; a count of
    100000 failed with a ``MemoryError`` in an unrelated import)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    value = _integer(text, 1, "a positive integer")
    if value > (cpus or 1):
        raise argparse.ArgumentTypeError(f"must be at most the {cpus} CPUs this process may "
                                         f"use, got {text!r}")
    return value


def device_name(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` that this machine has (``--device``),
    checked by :func:`inference.resolve_device` when the flags are read."""
    from inference import resolve_device

    try:
        resolve_device(text)
    except (ValueError, RuntimeError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


MAX_SEED = 2**32 - 1
"""The largest ``--seed``: ``pyro.set_rng_seed`` (in :func:`scaffold.runs.start_run`) and
:func:`inference.fit` also seed NumPy's global generator, which takes no larger seed."""


def seed_int(text: str) -> int:
    """An integer in ``0..MAX_SEED`` (``--seed``; a larger one failed in NumPy's seeding)."""
    value = _integer(text, 0, "an integer >= 0")
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer in 0..2**32 - 1 = {MAX_SEED} "
                                         f"(NumPy's seeds), got {text!r}")
    return value


FLOAT32_MAX = float(torch.finfo(torch.float32).max)
FLOAT32_TINY = 2.0**-149  # float32's smallest positive (subnormal) number, about 1.4e-45
"""The largest number a float flag takes: the models compute in float32, where a larger one
(``--free-bits 1e39``, ``--sparsity 1e300``) is ``inf`` and failed in torch after the models
before it had trained."""


def _real(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {what} (finite), got {text!r}")
    if abs(value) > FLOAT32_MAX:
        raise argparse.ArgumentTypeError(f"must be at most {FLOAT32_MAX:.3g} (float32's "
                                         f"largest number, where the models compute), got "
                                         f"{text!r}")
    if value and abs(value) < FLOAT32_TINY / 2:  # rounds to 0 in float32: fit refused it
        raise argparse.ArgumentTypeError(f"rounds to 0 in float32, where the models compute "
                                         f"(its smallest positive number is "
                                         f"{FLOAT32_TINY:.2g}); give 0 or a larger number, got "
                                         f"{text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates, scales), at most float32's largest."""
    value = _real(text, "a positive number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite positive number, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0 (rates, dropout, free bits), at most float32's largest."""
    value = _real(text, "a number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def integer_in(minimum: int, maximum: int | None = None):
    """The argparse type of an integer in ``minimum..maximum`` (``>= minimum`` when
    ``maximum`` is None), for a flag whose library call refuses other values."""
    what = (f"an integer >= {minimum}" if maximum is None
            else f"an integer in {minimum}..{maximum}")

    def parse(text: str) -> int:
        value = _integer(text, minimum, what)
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value
    return parse


# The most steps, sweeps or epochs a flag takes: the examples' defaults are tens to
# thousands, and 10**12 would run for ever without a word.
MAX_STEPS = 10**6
step_count = integer_in(0, MAX_STEPS)
"""The argparse type of a count of epochs, steps or sweeps that may be 0."""
positive_step_count = integer_in(1, MAX_STEPS)
"""The argparse type of a count of steps or sweeps of at least 1."""


def input_file(what: str):
    """The argparse type of a flag naming an input file, ``what`` it holds ("a WAV file"):
    a folder or a link to nothing is refused, saying which (the readers said "no WAV file at"
    a folder that exists); a path with nothing there is left to the reader, which names it."""
    def parse(text: str) -> str:
        path = Path(text).expanduser()
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a folder; pass {what} in it")
        if path.is_symlink() and not path.exists():
            raise argparse.ArgumentTypeError(f"{text} is a broken link (to "
                                             f"{os.readlink(path)}, which does not exist); "
                                             f"pass {what}")
        return text
    return parse


def odd_positive_int(text: str) -> int:
    """An odd integer >= 1 (the kernel sizes of a PixelCNN's masked convolutions)."""
    value = _integer(text, 1, "an odd positive integer")
    if value % 2 == 0:
        raise argparse.ArgumentTypeError(f"must be an odd positive integer, got {text!r}")
    return value


def _fraction(text: str, below_one: bool) -> float:
    what = "a number in [0, 1)" if below_one else "a probability, a number in [0, 1]"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not (0 <= value < 1 if below_one else 0 <= value <= 1):  # NaN fails both
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def probability(text: str) -> float:
    """A number in [0, 1] (rates of random pixel flips)."""
    return _fraction(text, below_one=False)


def fraction_below_one(text: str) -> float:
    """A number in [0, 1) (dropout: a rate of 1 would drop every unit)."""
    return _fraction(text, below_one=True)


def flag_error(script: str, flag: str, message: str) -> SystemExit:
    """The ``SystemExit`` that refuses ``flag`` for a reason only the loaded data show (so
    after parsing, but before any training), worded as argparse words its errors."""
    return SystemExit(f"{script}: error: argument {flag}: {message}")


def check_some_data(script: str, reasons: dict[str, str | None],
                    roots: dict[str, tuple[str, str | None]]) -> None:
    """``SystemExit`` (:func:`flag_error`) when none of the data sets a run asked for can be
    loaded (``reasons``: data set -> why not, None when it can): the run skipped each with a
    message and exited 0 with no results. The flag blamed is the data set's root flag when
    given (``roots``: data set -> (flag, value)) and there is one data set, else
    ``--datasets``. A run with some data sets skips the others."""
    if not reasons or not all(reasons.values()):
        return
    if len(reasons) == 1:
        name, reason = next(iter(reasons.items()))
        flag, root = roots.get(name, (None, None))
        raise flag_error(script, flag if root is not None else "--datasets", reason)
    raise flag_error(script, "--datasets", "none of the data sets can be loaded: "
                     + "; ".join(reasons.values()))


def check_distinct(parser: argparse.ArgumentParser, args: argparse.Namespace,
                   *names: str) -> None:
    """Refuse a value given twice to the list flags ``names`` (``args``' attribute names):
    each value is one run whose results are keyed by it, so a repeat ran again and replaced
    the first run's results without a word (``super_resolution.py --factors 2 2``)."""
    for name in names:
        values = getattr(args, name)
        repeated = [v for i, v in enumerate(values) if v in values[:i]]
        if repeated:
            flag = "--" + name.replace("_", "-")
            parser.error(f"argument {flag}: {', '.join(map(str, dict.fromkeys(repeated)))} "
                         "given more than once; each value is run once, its results keyed "
                         "by it")


def check_count(script: str, flag: str, count: int | None, available: int, what: str) -> None:
    """Refuse ``flag``'s ``count`` (0 or None: all) beyond the ``available`` items of
    ``what`` (e.g. "the digits training split"), which a slice ``[:count]`` would cut short
    without a word."""
    if count and count > available:
        raise flag_error(script, flag, f"{count} asked for, but {what} holds {available}")


def count_used(script: str, flag: str, count: int | None, available: int, what: str,
               default: int) -> int:
    """How many items ``flag`` takes: its ``count`` when given, refused beyond the
    ``available`` items of ``what`` (:func:`check_count`); unset (None), ``default`` cut to
    ``available`` (a default sized for a large file, on a smaller one). Record the number
    returned, not the flag."""
    check_count(script, flag, count, available, what)
    return count if count else min(default, available)


def check_evaluation_memory(script: str, flag: str, count: int, data: torch.Tensor,
                            batch_size: int | None = None) -> None:
    """Refuse ``flag``'s ``count`` of particles (or chains) per datapoint when the
    ``[count, batch]`` log weights of an evaluation of ``data`` (``[n, ...]``, scored
    ``batch_size`` rows at a time; None: all at once) would not fit in this machine's memory.

    The library's own check (:func:`inference.checks.check_weights_memory`, the one that
    ``bound_sweep``, ``iwae_bound``, ``log_evidence`` and ``ais_log_evidence`` make when
    called), made once the data are loaded and before any training: called after it, it
    refused a ``--max-k 10**12`` with a traceback and lost the trained models."""
    from inference.checks import check_weights_memory

    rows = len(data) if batch_size is None else min(batch_size, len(data))
    itemsize = max(torch.get_default_dtype().itemsize,
                   data.dtype.itemsize if data.is_floating_point() else 0)
    try:
        check_weights_memory(count, rows, itemsize, name=flag)
    except ValueError as error:
        raise flag_error(script, flag, str(error)) from None


def check_not_an_output(script: str, flag: str, path: str | None, out_dir: Path,
                        outputs: tuple[str, ...]) -> None:
    """Refuse ``flag``'s input file ``path`` when it is one of the ``outputs`` the run writes
    into ``out_dir`` (links and relative paths resolved): the run would replace the user's
    file with its own."""
    if path is None:
        return
    given = Path(path).resolve()
    for name in outputs:
        if given == (Path(out_dir) / name).resolve():
            raise flag_error(script, flag, f"{path} is the file this run writes its own {name} "
                                           f"to in --out-dir {out_dir}, which would replace it: "
                                           "pass another --out-dir, or move the file")


def evaluation_ks(max_k: int, ladder: tuple[int, ...] = (1, 10, 100, 1000, 5000)) -> list[int]:
    """The K of a bound sweep: the ``ladder``'s values below ``--max-k``, and ``max_k``
    itself (``--max-k 20000`` evaluates K = 20000, ``--max-k 7`` K = 7, not the ladder's
    nearest value below)."""
    return sorted({k for k in ladder if k < max_k} | {max_k})


MAX_REPEATS = 1000
"""The most ``--repeats`` of a bound sweep: 1000 already estimate a standard error to 2%."""


@contextlib.contextmanager
def refused_as_usage(script: str, flag: str | None = None):
    """Turn a library's ``ValueError``, ``TypeError`` or ``OSError`` raised in a script's
    set-up (before any training, or by ``fit``, which checks everything before its first
    step) into the ``SystemExit`` of :func:`flag_error` (or, with no
    single flag to blame, ``"<script>: error: <message>"``): a refusal, not a traceback."""
    try:
        yield
    except (ValueError, TypeError, OSError) as error:
        if flag is None:
            raise SystemExit(f"{script}: error: {error}") from None
        raise flag_error(script, flag, str(error)) from None


def check_network_sizes(script: str, *builders) -> None:
    """Build each network of ``builders`` (functions of no argument) on the meta device, where
    parameters take no memory, so that a size the machine cannot hold is refused as a usage
    error before any training, not after hours of training the networks built before it."""
    with refused_as_usage(script), torch.device("meta"):
        for build in builders:
            build()


# Flags (in ``numbers``) whose zero means "none" or "all" rather than a degenerate size.
ZERO_ALLOWED = ("epochs", "warmup", "num_train", "num_test", "steps")


def size_type(name: str, default: int | float):
    """The argparse type of a numeric flag: sizes and counts must be positive; epochs, step
    counts and ``--num-train/--num-test`` (0: all) may be zero; epochs, steps and sweeps are
    at most :data:`MAX_STEPS`; floats must be finite and non-negative, learning rates
    positive."""
    if isinstance(default, float):
        return positive_float if "lr" in name.split("_") else nonnegative_float
    if any(word in name.split("_") for word in ("epochs", "steps", "sweeps")):
        return step_count if default == 0 or any(w in name for w in ZERO_ALLOWED) \
            else positive_step_count
    if default == 0 or any(word in name for word in ZERO_ALLOWED):
        return nonnegative_int
    return positive_int


OBJECTIVES = ("elbo", "meanfield", "iwae", "dreg")
"""The training objectives (of :func:`inference.training.objectives.make_loss`) offered."""


_ONLY_DEFAULT = "(default: %(default)s)"


class DefaultsShown(argparse.HelpFormatter):
    """``--help`` lines that end in each flag's default, ``(default: 200)``, also for flags
    without a help text (argparse's own formatter shows defaults only beside a text)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not _shows_default(action):
            # (a default set to None after the flag was added: no line of its own)
            return "" if text == _ONLY_DEFAULT else text
        if "%(default)" not in text:
            text = f"{text} {_ONLY_DEFAULT}".strip()
        if isinstance(action.default, (list, tuple)):  # as typed, not ['a', 'b']: --flag a b,
            # or --flag a,b for a flag of one value its type splits
            joint = " " if action.nargs is not None else ","
            text = text.replace("%(default)s", joint.join(map(str, action.default))
                                .replace("%", "%%"))
        return text


def _shows_default(action: argparse.Action) -> bool:
    """Whether ``--help`` names the flag's default (not for a switch, None or a
    positional argument)."""
    return bool(action.option_strings) and not (
        action.default is None or action.default is False or action.default is True
        or action.default == argparse.SUPPRESS)


class ScriptParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that runs ``after_parse`` checks (functions of the parser and the
    parsed namespace, which call ``parser.error``) once all flags are read: checks of
    combinations of flags given in any order (``--data-root`` before ``--dataset``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.after_parse = []

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        if action.help is None and _shows_default(action):  # argparse skips a flag without
            action.help = _ONLY_DEFAULT                      # help when it lists defaults
        return action

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        for check in self.after_parse:
            check(self, namespace)
        return namespace, extras


def check_dataset_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``parser.error`` when ``--data-root`` or ``--download`` is given with a ``--dataset``
    that does not use it (they were silently ignored: a user who passed their MNIST folder
    but not ``--dataset mnist`` got a run on the built-in digits that looked like theirs).
    ``--data-root`` is read by mnist and fashion-mnist, ``--download`` by mnist only."""
    dataset = getattr(args, "dataset", None)
    if dataset is None:
        return
    if getattr(args, "data_root", None) is not None and dataset == "digits":
        parser.error("argument --data-root: not used by --dataset digits (built in, from "
                     "scikit-learn); it is the folder of the mnist or fashion-mnist IDX "
                     "files: pass --dataset mnist (or fashion-mnist), or leave out --data-root")
    if getattr(args, "download", False) and dataset != "mnist":
        parser.error(f"argument --download: only --dataset mnist is downloaded, not "
                     f"{dataset}: pass --dataset mnist, or leave out --download")


def script_parser(doc: str | None, out_dir: str, device: bool = True) -> argparse.ArgumentParser:
    """A parser described by the first line of ``doc``, with the common flags.

    ``--seed`` (0), ``--device`` (``auto``: CUDA when available; left out when ``device`` is
    False, for scripts that run on the CPU only), ``--threads`` (torch's CPU threads; default
    ``OMP_NUM_THREADS``, else the idle cores: :func:`scaffold.threads.configure_threads`)
    and ``--out-dir`` (default ``out_dir``). The parsed namespace's ``script`` is the file
    name of the module that called this (``vae.py``), whether run as a script or imported
    (from a notebook): what its ``metrics.json`` records.
    """
    parser = ScriptParser(description=(doc or "").strip().split("\n")[0],
                          formatter_class=DefaultsShown)
    caller = sys._getframe(1).f_globals.get("__file__")
    parser.set_defaults(script=Path(caller).name if caller else None)
    parser.add_argument("--seed", type=seed_int, default=0,
                        help="Pyro's and torch's seed (an integer in 0..2**32 - 1)")
    if device:
        parser.add_argument("--device", type=device_name, default="auto",
                            help="auto (CUDA when available), cpu, cuda:0, ...")
    parser.add_argument("--threads", type=thread_count, default=None,
                        help="torch CPU threads (default: OMP_NUM_THREADS when set, else the "
                        "cores the load average leaves idle)")
    parser.add_argument("--out-dir", default=out_dir, help="folder of metrics.json and figures")
    return parser


def benchmark_parser(doc: str | None, name: str, threads: int | None = 1,
                     device: bool = True) -> argparse.ArgumentParser:
    """:func:`script_parser` for a benchmark: results go to ``<out-dir>/<name>.json``.

    ``--out-dir`` defaults to ``benchmarks/results`` and ``--name`` to ``name`` (give another
    name to keep a variant beside the default run); ``--threads`` defaults to ``threads``
    (1: timings on a shared machine are steadier on one thread).
    """
    parser = script_parser(doc, "benchmarks/results", device)
    parser.set_defaults(threads=threads)
    parser.add_argument("--name", default=name, help="the result file's name, without .json")
    return parser


def numbers(parser: argparse.ArgumentParser, **defaults: int | float | list) -> None:
    """Add one ``--kebab-case`` flag per keyword, typed by its default.

    An int or float default gives a flag of that type; a list default (``hidden=[200]``) a
    flag taking one or more values of its first element's type.
    """
    for name, default in defaults.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(default, list):
            if not default or not isinstance(default[0], (int, float)):
                raise TypeError(f"numbers: {name} needs a non-empty list of numbers, "
                                f"got {default!r}")
            parser.add_argument(flag, type=size_type(name, default[0]), nargs="+",
                                default=default)
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            parser.add_argument(flag, type=size_type(name, default), default=default)
        else:
            raise TypeError(f"numbers: {name} needs an int, float or list default, "
                            f"got {default!r}")


def training_flags(parser: argparse.ArgumentParser, *, epochs: int | None, batch_size: int,
                   lr: float) -> None:
    """``--epochs`` (left out when ``epochs`` is None), ``--batch-size`` and ``--lr`` (Adam)."""
    if epochs is not None:
        parser.add_argument("--epochs", type=step_count, default=epochs,
                            help="training epochs")
    parser.add_argument("--batch-size", type=positive_int, default=batch_size,
                        help="training minibatch")
    parser.add_argument("--lr", type=positive_float, default=lr, help="Adam's learning rate")


def data_flags(parser: argparse.ArgumentParser, *, num_train: int | None, num_test: int | None,
               datasets: tuple[str, ...] | None = None, dataset: str = "digits",
               download: bool = False, simulated: bool = False) -> None:
    """``--num-train`` and ``--num-test`` (the first N images; 0 or None: all of them; with
    ``simulated``, the number of points drawn, at least 1).

    With ``datasets``: also ``--dataset`` (one of them, default ``dataset``) and
    ``--data-root`` (the folder of the IDX files); with ``download``: ``--download``. On a
    :class:`ScriptParser` the two are refused with a data set that does not use them
    (:func:`check_dataset_flags`).
    """
    if datasets is not None:
        parser.add_argument("--dataset", choices=list(datasets), default=dataset)
        parser.add_argument("--data-root", default=None, help="folder of the IDX files")
        if isinstance(parser, ScriptParser):  # refused with a data set that does not use them
            parser.after_parse.append(check_dataset_flags)
    if download:
        parser.add_argument("--download", action="store_true",
                            help="let torchvision fetch MNIST")
    for split, default in (("train", num_train), ("test", num_test)):
        if simulated:
            parser.add_argument(f"--num-{split}", type=positive_int, default=default,
                                help=f"{split} points simulated")
        else:
            parser.add_argument(f"--num-{split}", type=nonnegative_int, default=default,
                                help=f"the first N {split} images (0 or unset: all)")


def evidence_flags(parser: argparse.ArgumentParser, *, max_k: int, repeats: int,
                   chunk_size: int | None = None, eval_batch_size: int | None = None) -> None:
    """The evidence sweep's ``--max-k`` (largest IWAE K) and ``--repeats``; when given,
    ``--chunk-size`` (particles per vectorized call) and ``--eval-batch-size``."""
    parser.add_argument("--max-k", type=positive_int, default=max_k,
                        help="largest IWAE K evaluated")
    parser.add_argument("--repeats", type=integer_in(1, MAX_REPEATS), default=repeats,
                        help="independent repeats of each bound (for its standard error)")
    if chunk_size is not None:
        parser.add_argument("--chunk-size", type=positive_int, default=chunk_size,
                            help="particles per vectorized evaluation")
    if eval_batch_size is not None:
        parser.add_argument("--eval-batch-size", type=positive_int, default=eval_batch_size,
                            help="images per evaluation batch")


def objective_flags(parser: argparse.ArgumentParser, *, objective: str,
                    num_particles: int) -> None:
    """``--objective`` (one of :data:`OBJECTIVES`) and ``--num-particles`` (its K)."""
    parser.add_argument("--objective", choices=list(OBJECTIVES), default=objective)
    parser.add_argument("--num-particles", type=positive_int, default=num_particles,
                        help="particles per datapoint in training (K of the IWAE objective)")


def pixelcnn_flags(parser: argparse.ArgumentParser, *, channels: int, blocks: int | None) -> None:
    """A PixelCNN's ``--channels`` and ``--blocks``, for scripts where it is one model among
    others."""
    parser.add_argument("--channels", type=positive_int, default=channels, help="PixelCNN channels")
    parser.add_argument("--blocks", type=positive_int, default=blocks, help="PixelCNN gated blocks")
