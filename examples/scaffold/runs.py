"""Bookkeeping shared by the example and benchmark scripts: a run's set-up and its results file."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import pyro
import torch

from inference import resolve_device

from .memory import retain_freed_memory
from .threads import configure_threads


def start_run(args: argparse.Namespace,
              exclusive: bool = True) -> tuple[Path, torch.device, float]:
    """Set up a run from the common flags of :func:`scaffold.flags.script_parser`.

    Sets torch's CPU threads (``args.threads`` when given, else ``OMP_NUM_THREADS`` when
    set, else as many as the load average leaves idle:
    :func:`scaffold.threads.configure_threads`) and records the count in
    ``args.threads_used`` (the runs' ``metrics.json`` config), asks glibc to keep freed
    memory (:func:`scaffold.memory.retain_freed_memory`: no page faults for every chunk of an
    evidence estimate), seeds Pyro and torch with ``args.seed``, creates ``args.out_dir``
    (held for this run alone when ``exclusive``: :func:`hold_folder`, and refused when it
    holds another example's results: :func:`check_not_another_scripts`; benchmarks, which write
    files of their own names into a shared folder, pass False) and resolves ``args.device``.

    Returns:
        ``(out_dir, device, start)`` with ``start`` from :func:`time.perf_counter`.
    """
    args.threads_used = configure_threads(getattr(args, "threads", None))
    retain_freed_memory()
    start = time.perf_counter()
    out = writable_folder(args.out_dir)
    if exclusive and os.environ.get("RANK", "0") == "0":  # torchrun's ranks share the folder
        hold_folder(out)
        check_not_another_scripts(out, getattr(args, "script", None) or _script_name())
    device = resolve_device(args.device) if hasattr(args, "device") else torch.device("cpu")
    pyro.set_rng_seed(args.seed)
    return out, device, start


def _strict(value):
    """``value`` with every NaN or infinite float (a standard error of one repeat, a k-hat
    of equal weights) as None, which strict JSON readers accept."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(item) for item in value]
    return value


def writable_folder(out: str | Path, flag: str = "--out-dir") -> Path:
    """``out`` created and test-written, so that a run cannot end in a folder it cannot
    write (after its work); ``SystemExit`` naming ``flag`` (the folder's command-line flag,
    such as ``--out-dir`` or ``--cache-dir``) and the folder otherwise."""
    if not str(out).strip():  # Path("") is the working folder: an unset shell variable
        raise SystemExit(f"{flag} is empty; name a folder (the working folder: {flag} .)")
    out = Path(out)
    try:
        is_file = out.exists() and not out.is_dir()
    except OSError as error:  # a name too long for the file system
        raise SystemExit(f"{flag} {str(out)[:80]}... cannot be used: {error.strerror}") from None
    if is_file:
        raise SystemExit(f"{flag} {out} is a file, not a folder")
    if (out / "metrics.json").is_dir():  # found only when the results are written
        raise SystemExit(f"{flag} {out} holds a folder named metrics.json, where the run "
                         "writes its results: move it away")
    created = [folder for folder in (out, *out.parents) if not folder.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise SystemExit(f"{flag} {out} cannot be written: {error.strerror}") from None
    atexit.register(_remove_if_empty, created)
    return out


_HELD_FOLDERS: dict[Path, int] = {}  # folder -> descriptor holding its lock until the end


def hold_folder(out: Path, flag: str = "--out-dir") -> None:
    """Hold ``out`` for this process until it ends (``flock`` on the folder, which the kernel
    drops with the process): a second run writing the same ``metrics.json`` and figures
    there is refused (``SystemExit`` naming ``flag`` and the folder) instead of silently
    replacing them. Holding a folder this process holds already is a no-op."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        return
    folder = out.resolve()
    if folder in _HELD_FOLDERS:
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        raise SystemExit(f"{flag} {out} is in use by another run, whose results this one "
                         "would replace: wait for it to finish or choose another folder") from None
    _HELD_FOLDERS[folder] = descriptor


def _script_name() -> str:
    """The running program's file name (``vae.py``): an example's when the parser did not
    name it (:func:`scaffold.flags.script_parser` does)."""
    return Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"


def check_not_another_scripts(out: Path, script: str, flag: str = "--out-dir") -> None:
    """``SystemExit`` naming ``flag`` when ``out/metrics.json`` holds another example's
    results (its ``"script"``, not ``script``): this run would replace that ``metrics.json``
    and the figures of the same names, leaving a folder of two runs mixed. A rerun of the
    same example replaces its own results; a ``metrics.json`` that names no script (written
    before scripts were recorded) or cannot be read is left to be replaced."""
    try:
        written = json.loads((out / "metrics.json").read_text()).get("script")
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(written, str) and written != script:
        raise SystemExit(f"{flag} {out} holds the results of {written} (metrics.json and its "
                         f"figures), which this run of {script} would replace or mix with "
                         "its own: choose another folder, or delete those results")


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (innermost first) that are still empty as the program ends: those a
    run created and then wrote nothing into (its arguments refused after set-up)."""
    for folder in folders:
        try:
            folder.rmdir()  # only an empty folder
        except OSError:
            return


def write_json(path: str | Path, data: dict) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically (:func:`write_text`). NaN and
    infinite floats are written as null (strict JSON has no such numbers)."""
    return write_text(path, json.dumps(_strict(data), indent=2, allow_nan=False))


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`replaced_atomically`)."""
    with replaced_atomically(path) as temporary:
        with open(temporary, "w", newline="") as file:
            file.write(text)
    return Path(path)


@contextlib.contextmanager
def replaced_atomically(path: str | Path):
    """Yield a temporary path beside ``path`` to write the new file to, then rename it into
    place: a reader (or a run killed half-way, or a disk that fills up) sees the old file or
    the new one, never half of one; the file gets the mode ``open`` would give it. On an
    error the temporary file is removed and the error raised."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # as open() would make it, not mkstemp's 0600
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def run_script(script: str, main, args: argparse.Namespace) -> None:
    """``main(args)`` of an example, a diverged training (``fit``'s ``FloatingPointError``,
    whose message says what the checkpoint holds and what to lower) and Ctrl-C ending in one
    line under the script's name rather than in a traceback from inside torch."""
    try:
        main(args)
    except FloatingPointError as error:
        raise SystemExit(f"{script}: {error}") from None
    except KeyboardInterrupt:
        raise SystemExit(f"{script}: interrupted") from None


def finish_run(out_dir: str | Path, metrics: dict, start: float,
               files: str = "metrics.json and figures") -> dict:
    """Add ``wall_seconds`` (since ``start``) and the example's ``script`` name to
    ``metrics``, write them to
    ``out_dir/metrics.json`` (atomically) and say where the results are.

    Returns:
        ``metrics``, with ``wall_seconds``.
    """
    metrics["wall_seconds"] = time.perf_counter() - start
    config = metrics.get("config")
    metrics.setdefault("script", (config.get("script") if isinstance(config, dict) else None)
                       or _script_name())  # (another example will not write over it)
    try:
        write_json(Path(out_dir) / "metrics.json", metrics)
    except OSError as error:  # a full disk at the end: the results are not lost
        print(json.dumps(_strict(metrics), indent=2, allow_nan=False))
        raise SystemExit(f"could not write {Path(out_dir) / 'metrics.json'} "
                         f"({error.strerror or error}); the metrics are printed above") from None
    print(f"results: {Path(out_dir).resolve()} ({files}), {metrics['wall_seconds']:.0f} s")
    return metrics


def finish_benchmark(args: argparse.Namespace, result: dict) -> Path:
    """Write a benchmark's ``result`` to ``<args.out_dir>/<args.name>.json`` (atomically);
    the flags are those of :func:`scaffold.flags.benchmark_parser`. Returns the path."""
    return write_json(Path(args.out_dir) / f"{args.name}.json", result)
