"""Checkpoints of a training run: atomic writes, random-number states, the param store.

A checkpoint file carries a header (magic, payload length, CRC32), is written to a uniquely
named temporary file and renamed into place, and holds fingerprints of the pair, the data and
the settings that :func:`inference.fit` checks on resume (the pair's plain settings:
:mod:`inference.training.resume_settings`; see docs/reliability.md)."""

from __future__ import annotations

import errno
import glob
import hashlib
import io
import os
import pickle
import re
import secrets
import shutil
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions.constraints
import pyro.poutine
import pyro.util
import torch
import torch.distributions.constraints


def rng_state() -> dict:
    """Pyro's (Python, NumPy, torch) and, when present, CUDA random states."""
    state = {"pyro": pyro.util.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned, also when a checkpoint's loading moved its
    tensors to a GPU (generator states are CPU byte tensors)."""
    pyro_state = dict(state["pyro"], torch=state["pyro"]["torch"].cpu())
    pyro.util.set_rng_state(pyro_state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def param_store_state(names) -> dict:
    """Param-store state of the entries ``names`` (the pair's parameters outside its modules,
    see :data:`FORMAT`); a name the store does not hold is left out.

    Module parameters travel in their ``state_dict``; restoring them through the store too
    would leave the store and the module holding different tensors, and the optimizer
    state (keyed by store name) attached to the wrong one.
    """
    state = pyro.get_param_store().get_state()
    return {key: {n: v for n, v in table.items() if n in names} for key, table in state.items()}


def restore_param_store(state: dict, names) -> None:
    """Put back the entries ``names`` of what :func:`param_store_state` saved (a checkpoint
    of format 1 also holds unrelated entries of the store: they stay out).

    A name the store already holds with a tensor of the saved shape and dtype is restored in
    place: that tensor may be a network's parameter that ``pyro.module`` registered, which the
    network keeps using (Pyro does not copy store values into a module by default). Other names
    enter the store as the saved tensors (``ParamStoreDict.set_state``).
    """
    store = pyro.get_param_store()
    live = dict(store.named_parameters())
    rest = {"params": {}, "constraints": {}}
    with torch.no_grad():
        for name, saved in state["params"].items():
            if name not in names:
                continue
            tensor = live.get(name)
            if tensor is not None and tensor.shape == saved.shape and tensor.dtype == saved.dtype:
                tensor.copy_(saved)
            else:
                rest["params"][name] = saved
                if name in state["constraints"]:
                    rest["constraints"][name] = state["constraints"][name]
    store.set_state(rest)


# --- the checkpoint file format, integrity and locking -----------------------------------------
# A checkpoint file is MAGIC, a little-endian uint64 payload length, the payload's CRC32 (uint32)
# and the payload (torch.save of the state). A truncated, extended or altered file fails the
# length or CRC check and is refused with its path; nothing is unpickled before that. The payload
# is unpickled by torch's weights-only unpickler (tensors, Python's plain values) with
# ALLOWED_CLASSES beside: a forged file can describe data, not run code. A state holding any
# other class is refused when it is written.
MAGIC = b"PPLCKPT\x01"
_HEADER = struct.Struct("<8sQI")
# What a checkpoint's "param_store" entries hold (the state's "format"): 2, the Pyro parameters
# the pair uses outside its modules (its param sites, also those first met after the first
# minibatch) and the entries its loss keeps there (TraceGraph_ELBO's baselines); its
# fingerprint names the param sites of the first minibatch; 1 (no "format"), every entry of Pyro's
# global param store that the modules do not own, unrelated ones included. Format 1 loads: its
# unrelated entries are neither compared nor restored.
FORMAT = 2
FORMATS = (1, 2)  # what :func:`check_run_state` accepts


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, corrupt, or of another run."""


def _constraint_classes() -> list[type]:
    """The constraint classes of torch and Pyro: what ``pyro.param(..., constraint=...)``
    stores, saved with the param store's entries."""
    modules = (torch.distributions.constraints, pyro.distributions.constraints)
    return sorted({value for module in modules for value in vars(module).values()
                   if isinstance(value, type)
                   and issubclass(value, torch.distributions.constraints.Constraint)
                   and value is not torch.distributions.constraints._DependentProperty},
                  key=lambda cls: (cls.__module__, cls.__qualname__))


# numpy arrays and scalars of numeric dtypes (NumPy's random state, a callback's numbers), by
# the functions their pickles name, and the constraints of the param store's entries
_NUMERIC_DTYPES = [np.dtype(code) for code in "?bBhHiIlLqQefdgFDG"]
ALLOWED_CLASSES = [np.ndarray, np.dtype, *{type(dtype) for dtype in _NUMERIC_DTYPES},
                   np.zeros(1).__reduce__()[0], np.float64(0).__reduce__()[0],
                   *_constraint_classes()]


def _global_name(value) -> str:
    return f"{value.__module__}.{value.__qualname__}"


def _disallowed_globals(payload) -> list[str]:
    """The classes and functions named in the pickled ``payload`` (bytes of ``torch.save``)
    that the weights-only unpickler would refuse, :data:`ALLOWED_CLASSES` aside."""
    allowed = {_global_name(value) for value in ALLOWED_CLASSES}
    named = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(payload))
    return sorted(set(named) - allowed)


_SPECIAL_FILES = {stat.S_IFDIR: "a folder", stat.S_IFCHR: "a character device",
                  stat.S_IFBLK: "a block device", stat.S_IFIFO: "a named pipe",
                  stat.S_IFSOCK: "a socket"}


def special_file(path: Path) -> str | None:
    """What ``path`` is when it exists and is not a regular file (a device, a named pipe, a
    socket, a folder), else None: writing would replace such a node, reading could block."""
    try:
        return _SPECIAL_FILES.get(stat.S_IFMT(os.stat(path).st_mode))
    except OSError:
        return None


def real_path(path: str | Path) -> Path:
    """The file a checkpoint path names, ``~`` expanded and symlinks resolved
    (``os.path.realpath``): a run through a link and a run through the file share one lock,
    and a write replaces the file the link points at rather than the link."""
    return Path(os.path.realpath(os.path.expanduser(path)))


def _check_path(path) -> None:
    """``TypeError`` naming the argument when ``path`` is no path (pathlib's says neither);
    ``CheckpointError`` for an empty string (pathlib reads it as the current folder)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    if not os.fspath(path):
        raise CheckpointError("checkpoint is an empty string; pass a file name (no "
                              "checkpoint: None)")
    name = os.fspath(path)
    if ("\0" if isinstance(name, str) else b"\0") in name:
        raise CheckpointError(f"checkpoint path {name!r} holds a NUL byte, which no file name "
                              "may hold")


def _unique_partial(path: Path) -> Path:
    """A temporary name next to ``path`` that no other process or thread uses:
    ``<path>.<pid>.<8 hex digits>.partial``."""
    return path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")


def remove_stale_partials(path: str | Path) -> list[Path]:
    """Delete temporary files of ``path`` (named as :func:`_unique_partial` names them) left by
    processes that no longer run (a run killed while writing); returns them. Files of live
    processes, and files of other checkpoints whose names extend ``path``'s (``model.pt.1``
    beside ``model.pt``), are left alone. A symlink's target is meant (:func:`real_path`)."""
    path = real_path(path)
    own = re.compile(re.escape(path.name) + r"\.([0-9]+)\.[0-9a-f]{8}\.partial")
    removed = []
    for partial in path.parent.glob(glob.escape(path.name) + ".*.partial"):
        match = own.fullmatch(partial.name)
        if match is None or int(match[1]) == os.getpid() or not partial.is_file():
            continue  # (a folder of that name is the user's, never a writer's leftover)
        try:
            os.kill(int(match[1]), 0)
        except ProcessLookupError:
            partial.unlink(missing_ok=True)
            removed.append(partial)
        except (OSError, OverflowError):
            pass  # alive and someone else's, or no process id at all
    return removed


def check_writable(path: str | Path) -> Path:
    """Make sure a checkpoint can be written at ``path`` before any training is spent.

    Creates the parent folder if needed and writes (then removes) a probe file there.

    Raises:
        CheckpointError: ``path`` is empty, a folder (or ends in a separator), a device, a named
            pipe, a socket or a loop of symlinks, ``<path>.lock`` or ``<path>.previous`` is a
            folder, ``path`` or ``<path>.previous`` is a file that is not a checkpoint (a
            checkpoint would replace it), its name leaves no room for the temporary file's
            suffix, or the folder cannot be created or written; the message names the path
            and the reason.
        TypeError: ``path`` is no path.
    """
    _check_path(path)
    if str(path).endswith(("/", os.sep)):
        raise CheckpointError(f"checkpoint {path} names a folder (it ends in a separator); "
                              "pass a file name, e.g. run.pt inside it")
    shown, path = Path(path).expanduser(), real_path(path)
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:
            raise CheckpointError(f"checkpoint {shown}: its file name ({len(path.name)} "
                                  "characters) or path is longer than the file system takes; "
                                  "use a shorter one") from error
        if error.errno == errno.ELOOP:
            raise CheckpointError(f"checkpoint {shown} is a loop of symlinks ({path} leads "
                                  "back to itself): no file can be written there; fix the "
                                  "links or pass another path") from error
        if error.errno == errno.EACCES:
            raise CheckpointError(f"cannot reach the checkpoint {shown}: {error.strerror} (a "
                                  "folder on its path does not let this user in); fix the "
                                  "folder's permissions or pass another path") from error
    if path.is_file() and not os.access(path, os.R_OK):
        raise CheckpointError(f"checkpoint {shown} exists but this user cannot read it (mode "
                              f"{stat.S_IMODE(os.stat(path).st_mode):03o}): it could be neither "
                              "checked nor kept as the previous run's; fix its permissions "
                              "(chmod u+rw) or pass another path")
    kind = special_file(path)
    if kind == "a folder":
        raise CheckpointError(f"checkpoint {shown} is a folder; pass a file name")
    if kind is not None:
        raise CheckpointError(f"checkpoint {shown} is {kind}, not a regular file: a checkpoint "
                              "would replace it; pass a file name (no checkpoint: None)")
    parent = next((folder for folder in path.parents if folder.exists()), None)
    if parent is not None and not parent.is_dir():
        raise CheckpointError(f"cannot write the checkpoint {shown}: {parent} is a file, not a "
                              "folder")
    for suffix, role in ((".lock", "its lock file"), (".previous", "the copy of an earlier run")):
        beside = path.with_name(path.name + suffix)
        kind = special_file(beside)
        if kind is not None:
            raise CheckpointError(f"checkpoint {shown} needs {beside} for {role}, but that is "
                                  f"{kind}: move it away or use another checkpoint path")
    previous = path.with_name(path.name + ".previous")
    if not _is_checkpoint_or_empty(path):
        raise CheckpointError(f"checkpoint {shown} is a file that is not a checkpoint (no "
                              f"{MAGIC[:7].decode()} header), which a checkpoint would "
                              "replace; pass another checkpoint path, or delete the file")
    if path.exists() and not _is_checkpoint_or_empty(previous):
        raise CheckpointError(f"checkpoint {shown} would be kept as {previous}, but that is a "
                              f"file that is not a checkpoint (no {MAGIC[:7].decode()} "
                              "header), which the copy would replace; move it away or use "
                              "another checkpoint path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _check_name_length(path, shown)
        probe = _unique_partial(path)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, b"probe")
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as error:
        raise CheckpointError(f"cannot write the checkpoint {shown}: {error.strerror or error} "
                              f"(folder {path.parent})") from error
    return path


# what :func:`_unique_partial` adds to a file name at most (Linux process ids have 7 digits)
_PARTIAL_SUFFIX_BYTES = len(".4194304.01234567.partial")


def _check_name_length(path: Path, shown: Path) -> None:
    """Refuse a file name that fits its folder but whose temporary name (the name and
    :data:`_PARTIAL_SUFFIX_BYTES` more) does not: the first save would fail."""
    try:
        limit = os.pathconf(path.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        return
    length = len(os.fsencode(path.name))
    if length <= limit < length + _PARTIAL_SUFFIX_BYTES:
        raise CheckpointError(
            f"checkpoint {shown}: its file name has {length} bytes, and the temporary file it "
            f"is written to (<name>.<pid>.<8 hex digits>.partial) up to "
            f"{length + _PARTIAL_SUFFIX_BYTES}, more than the {limit} a file name may have "
            f"there; use a file name of at most {limit - _PARTIAL_SUFFIX_BYTES} bytes")


def _is_checkpoint_or_empty(path: Path) -> bool:
    """Whether the file at ``path`` is missing, empty or starts with :data:`MAGIC` (a
    checkpoint, perhaps damaged): only such a file may be replaced by a checkpoint."""
    try:
        with open(path, "rb") as file:
            start = file.read(len(MAGIC))
    except FileNotFoundError:
        return True
    except OSError:
        return True  # unreadable: the write probe below names the problem
    return not start or start == MAGIC


def _serialized(path: Path, state: dict) -> bytes:
    """``torch.save`` of ``state`` in memory; ``TypeError`` naming ``path`` and the first
    top-level key whose value cannot be pickled (a lambda, an open file, a lock), or that
    holds a class that a checkpoint may not hold (:data:`ALLOWED_CLASSES`)."""
    buffer = io.BytesIO()
    try:
        torch.save(state, buffer)
    except (pickle.PicklingError, TypeError, AttributeError) as error:
        def unpicklable(value):
            try:
                torch.save(value, io.BytesIO())
            except (pickle.PicklingError, TypeError, AttributeError):
                return True
            return False
        raise TypeError(f"cannot write the checkpoint {path}: "
                        f"{_first_key(state, unpicklable)} cannot be pickled ({error}); the "
                        "previous checkpoint is unchanged") from error
    payload = buffer.getvalue()
    disallowed = _disallowed_globals(payload)
    if disallowed:
        def foreign(value):
            value_buffer = io.BytesIO()
            torch.save(value, value_buffer)
            return bool(_disallowed_globals(value_buffer.getvalue()))
        raise TypeError(
            f"cannot write the checkpoint {path}: {_first_key(state, foreign)} holds "
            f"{', '.join(disallowed[:5])}, which a checkpoint may not hold (loading it would "
            "run its code; checkpoints hold tensors, Python's plain values, numpy "
            "arrays and torch's or Pyro's constraints): save plain values instead (a "
            "callback's get_state, a constraint of your own); the previous checkpoint is "
            "unchanged")
    if _holds_meta_tensor(state):
        raise TypeError(
            f"cannot write the checkpoint {path}: {_first_key(state, _holds_meta_tensor)} "
            "holds a meta tensor, which has a shape but no values to save; the previous "
            "checkpoint is unchanged")
    if _holds_non_numeric_array(state):  # their dtype classes are no globals of the pickle
        raise TypeError(
            f"cannot write the checkpoint {path}: "
            f"{_first_key(state, _holds_non_numeric_array)} holds a numpy array of strings, "
            "dates, records or objects, which the checkpoint's reader refuses (it reads "
            "numpy arrays of numbers only): save a list of plain values instead; the "
            "previous checkpoint is unchanged")
    return payload


def _holds(value, found, depth: int = 0) -> bool:
    """Whether ``found`` is true of an item that ``value`` holds (itself, or through dicts,
    lists and tuples)."""
    if found(value):
        return True
    if depth > 32:
        return False
    if isinstance(value, dict):
        value = list(value.values())
    return isinstance(value, (list, tuple)) and any(
        _holds(item, found, depth + 1) for item in value)


def _holds_meta_tensor(value) -> bool:
    """Whether ``value`` holds a tensor on the meta device (no values to save)."""
    return _holds(value, lambda item: torch.is_tensor(item) and item.is_meta)


def _holds_non_numeric_array(value) -> bool:
    """Whether ``value`` holds a numpy array or scalar whose dtype is not a bool, integer,
    float or complex one."""
    return _holds(value, lambda item: isinstance(item, (np.ndarray, np.generic))
                  and item.dtype.kind not in "biufc")


def check_savable(path: str | Path, state: dict) -> None:
    """Raise :func:`save_checkpoint`'s ``TypeError`` now if ``state`` could not be saved at
    ``path`` (before training is spent on it)."""
    _serialized(Path(path), state)


def _first_key(state: dict, bad) -> str:
    """``state[key] (type)`` for the first top-level ``key`` whose value ``bad`` accepts,
    else ``state``."""
    for key, value in state.items():
        if bad(value):
            return f"state[{key!r}] ({_ENTRY_ROLES.get(key, type(value).__name__)})"
    return "state"


# what fit keeps under its checkpoints' keys, for the messages naming one
_ENTRY_ROLES = {"modules": "the networks' state dicts, their get_extra_state included",
                "network_buffers": "the buffers and get_extra_state of the networks the pair "
                                   "registers with pyro.module",
                "callback": "the callback's get_state"}


def _locked_by_another_process(target: Path) -> str | None:
    """The process id in ``<target>.lock`` when another process holds that lock (a running
    :func:`inference.fit` writing ``target``: :class:`CheckpointLock`), else None."""
    import fcntl

    try:
        fd = os.open(target.with_name(target.name + ".lock"),
                     os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None  # no lock file (or none this user may read): nobody to ask
    try:
        owner = os.pread(fd, 64, 0).strip().decode(errors="replace")
        if owner == str(os.getpid()):
            return None  # this process's own run
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return owner or "?"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` atomically: the file at ``path`` is either the old one or the new one.

    The state is serialized in memory (``torch.save``), written with a header (magic, length,
    CRC32) to a temporary file of a unique name in the same folder, flushed to disk and renamed
    over ``path``, with the permission bits of the file it replaces. Any failure (full disk,
    read-only folder, a crash) leaves the old file intact; on an error the temporary file is
    removed and an ``OSError`` names ``path``. A state that is not a dict, or that holds a
    value that cannot be pickled or a class outside :data:`ALLOWED_CLASSES`, is a
    ``TypeError`` naming ``path`` (and the key), raised
    before anything is written; so is a ``CheckpointError`` when ``path`` is a folder, a
    special file or a file that is not a checkpoint (another program's file is never
    replaced), and so is one when another process's ``fit`` holds the checkpoint's lock. A
    symlink keeps pointing at the file, which is replaced (:func:`real_path`).
    """
    _check_path(path)
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    path, target = Path(path).expanduser(), real_path(path)
    kind = special_file(target)
    if kind is not None:
        raise CheckpointError(f"cannot write the checkpoint {path}: it is {kind}, which the "
                              "checkpoint would replace; pass a file name")
    if not _is_checkpoint_or_empty(target):
        raise CheckpointError(f"cannot write the checkpoint {path}: it is a file that is not a "
                              f"checkpoint (no {MAGIC[:7].decode()} header), which the "
                              "checkpoint would replace; pass another path, or delete the file")
    owner = _locked_by_another_process(target)
    if owner is not None:
        raise CheckpointError(f"cannot write the checkpoint {path}: a running fit (pid "
                              f"{owner}) holds it (lock {target.name}.lock), and this save "
                              "would replace that run's checkpoint; save to another path")
    payload = _serialized(path, state)
    header = _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload))
    partial = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _check_name_length(target, path)
        partial = _unique_partial(target)
        try:
            # the owner keeps reading it: a mode of 000 copied over would make the run's own
            # checkpoints unreadable to its resume
            mode = stat.S_IMODE(os.stat(target).st_mode) | stat.S_IRUSR
        except FileNotFoundError:
            mode = None
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                if mode is not None:  # the replaced file's permissions, not the default's
                    os.fchmod(f.fileno(), mode)
                f.write(header)
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, target)
        except BaseException:  # Ctrl-C before the rename too: no temporary file left
            partial.unlink(missing_ok=True)
            raise
    except OSError as error:
        if partial is not None:
            partial.unlink(missing_ok=True)
        message = (f"could not write the checkpoint {path} ({error.strerror or error}); "
                   "the previous checkpoint is unchanged")
        raise (OSError(error.errno, message) if error.errno else OSError(message)) from error


def previous_path(path: str | Path) -> Path:
    """Where :func:`keep_previous` keeps the file at ``path``: ``<path>.previous`` (beside a
    symlink's target, :func:`real_path`)."""
    path = real_path(path)
    return path.with_name(path.name + ".previous")


def keep_previous(path: str | Path) -> Path:
    """Make ``<path>.previous`` (:func:`previous_path`) a copy of the file at ``path``
    (replacing an older one) atomically, leaving ``path`` in place; returns the new name. A
    hard link where the file system has them, else a copy flushed to disk, renamed into
    place. A symlink's target is meant (:func:`real_path`). ``CheckpointError`` for a file
    that is no intact checkpoint (:func:`checkpoint_problem`): ``<path>.previous`` stays."""
    path, previous = real_path(path), previous_path(path)
    problem = checkpoint_problem(path)
    if problem is not None:  # it would replace what may be the only intact checkpoint
        raise CheckpointError(f"{problem}: not kept as {previous}")
    partial = _unique_partial(path)
    try:
        try:
            os.link(path, partial)
        except OSError:
            shutil.copyfile(path, partial)
            with open(partial, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(partial, previous)
    except BaseException as error:  # Ctrl-C mid-copy too: no temporary file left
        partial.unlink(missing_ok=True)
        if not isinstance(error, OSError):
            raise
        raise OSError(f"could not keep the checkpoint {path} as {previous} "
                      f"({error.strerror or error}); it is unchanged") from error
    return previous


def _check_map_location(map_location) -> None:
    """Refuse a ``map_location`` of :func:`load_checkpoint` that names no device, or a CUDA
    device that this machine lacks (a dict or a function is torch's to check)."""
    if map_location is None or isinstance(map_location, dict) or callable(map_location):
        return
    if not isinstance(map_location, (str, torch.device)):
        raise TypeError(f"map_location must be a device, a str naming one, a dict or a "
                        f"function, got {type(map_location).__name__}")
    try:
        device = torch.device(map_location)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"map_location={map_location!r} names no device ({error}); pass "
                         "e.g. 'cpu' or 'cuda:0'") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise ValueError(f"map_location={map_location!r} names a CUDA device this "
                             f"machine lacks (it has {count}); pass 'cpu' or one of cuda:0 "
                             f"to cuda:{count - 1}" if count else
                             f"map_location={map_location!r} names a CUDA device, but CUDA "
                             "is not available here; pass 'cpu'")


def _verified_payload(path: Path) -> bytes:
    """The payload of the checkpoint file at ``path`` after checking its header, length and
    CRC32; ``CheckpointError`` naming ``path`` otherwise."""
    kind = special_file(path)
    if kind is not None:
        raise CheckpointError(f"checkpoint {path} is {kind}, not a checkpoint file")
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            header = file.read(_HEADER.size)
            if len(header) < _HEADER.size or not header.startswith(MAGIC):
                raise CheckpointError(
                    f"{path} is not a checkpoint written by inference.fit (no "
                    f"{MAGIC[:7].decode()} header; {size} bytes): corrupt, foreign or from an "
                    "older version; delete it to start afresh")
            _, length, crc = _HEADER.unpack(header)
            if size - _HEADER.size != length:  # before reading what the header announces
                raise CheckpointError(
                    f"checkpoint {path} is truncated or has trailing bytes: header says "
                    f"{length} bytes of payload, the file has {size - _HEADER.size}")
            payload = file.read()
    except OSError as error:
        raise CheckpointError(f"cannot read the checkpoint {path}: "
                              f"{error.strerror or error}") from error
    if len(payload) != length:  # the file changed while it was read
        raise CheckpointError(f"checkpoint {path} is truncated or has trailing bytes: header "
                              f"says {length} bytes of payload, {len(payload)} were read")
    if zlib.crc32(payload) != crc:
        raise CheckpointError(f"checkpoint {path} is corrupt: its CRC32 does not match")
    return payload


def checkpoint_problem(path: str | Path) -> str | None:
    """What is wrong with the checkpoint file at ``path`` (not one, truncated, altered:
    :func:`load_checkpoint`'s checks of its header, length and CRC32, nothing unpickled), or
    None for an intact one."""
    try:
        _verified_payload(Path(path).expanduser())
    except CheckpointError as error:
        return str(error)
    return None


def load_checkpoint(path: str | Path, map_location=None) -> dict:
    """Read what :func:`save_checkpoint` wrote, after checking its header, length and CRC32,
    with torch's weights-only unpickler (:data:`ALLOWED_CLASSES` beside tensors and plain
    values).

    Raises:
        CheckpointError: naming ``path`` for a missing, unreadable, truncated, altered or
            foreign file, or one that names a class outside :data:`ALLOWED_CLASSES`.
        TypeError, ValueError: ``path`` is no path, or ``map_location`` names no device
            (or a CUDA device this machine lacks); checked before the file is read.
    """
    _check_path(path)
    _check_map_location(map_location)
    path = Path(path).expanduser()
    payload = _verified_payload(path)
    try:
        disallowed = _disallowed_globals(payload)
        if disallowed:
            raise CheckpointError(
                f"checkpoint {path} names {', '.join(disallowed[:5])}, which a checkpoint may "
                "not hold: it was written by an older version of inference.fit with a class of "
                "its own in the state, or forged; it is not loaded (that could run code)")
        with torch.serialization.safe_globals(ALLOWED_CLASSES):
            state = torch.load(io.BytesIO(payload), map_location=map_location,
                               weights_only=True)
    except CheckpointError:
        raise
    except Exception as error:  # noqa: BLE001 - any unpickling failure means the same
        raise CheckpointError(f"checkpoint {path} cannot be loaded: {error}") from error
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a dict")
    return state


# what a training run's checkpoint holds, for :func:`check_run_state`: key -> (check, expected)
_RUN_STATE = {
    "modules": (lambda v: isinstance(v, list), "a list of state dicts"),
    "param_store": (lambda v: isinstance(v, dict) and isinstance(v.get("params"), dict)
                    and isinstance(v.get("constraints"), dict),
                    "a dict of 'params' and 'constraints'"),
    "optimizer": (lambda v: isinstance(v, dict), "a dict"),
    "shuffler": (torch.is_tensor, "a generator state tensor"),
    "rng": (lambda v: isinstance(v, dict) and ("pyro" in v or "ranks" in v),  # distributed
            "a dict of random states"),
    "history": (lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v),
                "a list of the epochs' records (dicts)"),
    "fingerprint": (lambda v: isinstance(v, dict), "a dict"),
}


def check_run_state(state: dict, path) -> None:
    """Refuse a loaded checkpoint that :func:`inference.fit` cannot resume: a "format" outside
    :data:`FORMATS` (none: format 1), a missing entry, or one of another kind (a history that
    is no list of records); the :class:`CheckpointError` names ``path`` and the entries."""
    found = state.get("format", 1)
    if type(found) is not int or found not in FORMATS:
        raise CheckpointError(
            f"checkpoint {path} has format {found!r}, which this version cannot resume (it "
            f"reads formats {', '.join(map(str, FORMATS))}): written by another version or "
            "program; resume it with that version, or delete it to start afresh")
    missing = [key for key in _RUN_STATE if key not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} has no {', '.join(missing)} entr"
            f"{'y' if len(missing) == 1 else 'ies'} (written by another version or program, "
            "or not by inference.fit): it cannot be resumed; delete it to start afresh")
    for key, (valid, expected) in _RUN_STATE.items():
        value = state[key]
        if not valid(value):
            odd = next((item for item in value if not isinstance(item, dict)), None) \
                if isinstance(value, list) else None
            kind = type(value).__name__ + (f" holding a {type(odd).__name__}"
                                           if odd is not None else "")
            raise CheckpointError(
                f"checkpoint {path} holds a {kind} as its {key!r}, not "
                f"{expected}: it cannot be resumed; delete it to start afresh")
    problem = _entries_problem(state)
    if problem is not None:
        raise CheckpointError(f"checkpoint {path} {problem}: it cannot be resumed (edited, or "
                              "written by another program); delete it to start afresh")


def _generator_state_problem(value) -> str | None:
    """Why ``value`` is no CPU generator state (a uint8 tensor of its size), or None."""
    size = torch.Generator().get_state().numel()
    if not torch.is_tensor(value) or value.dtype != torch.uint8 or value.numel() != size:
        shown = (f"a {value.dtype} tensor of {value.numel()} elements" if torch.is_tensor(value)
                 else f"a {type(value).__name__}")
        return f"{shown}, not a generator state ({size} bytes)"
    return None


def _rng_problem(rng) -> str | None:
    """Why ``rng`` (:func:`rng_state`'s dict, or a distributed run's ``{"ranks": [...]}``)
    cannot be restored, or None."""
    if "ranks" in rng:
        ranks = rng["ranks"]
        if not isinstance(ranks, list) or not all(isinstance(r, dict) for r in ranks):
            return "holds an 'rng' entry whose 'ranks' are no list of random states"
        return next((p for p in map(_rng_problem, ranks) if p is not None), None)
    states = rng.get("pyro")
    if not isinstance(states, dict) or not {"torch", "random", "numpy"} <= states.keys():
        return "holds an 'rng' entry without the torch, random and numpy states"
    problem = _generator_state_problem(states["torch"])
    return None if problem is None else f"holds as its torch random state {problem}"


def _entries_problem(state: dict) -> str | None:
    """What in a run's entries :func:`check_run_state` finds malformed (a generator state of
    another size, epochs that do not count 1, 2, ...), or None."""
    problem = _generator_state_problem(state["shuffler"])
    if problem is not None:
        return f"holds as its 'shuffler' {problem}"
    problem = _rng_problem(state["rng"])
    if problem is not None:
        return problem
    epochs = [record.get("epoch") for record in state["history"]]
    if epochs != list(range(1, len(epochs) + 1)):
        return (f"holds a history whose epochs are {epochs[:6]}{'...' if len(epochs) > 6 else ''}"
                f", not 1..{len(epochs)}")
    for key in ("settings_values", "network_buffers"):
        if key in state and not isinstance(state[key], dict):
            return f"holds a {type(state[key]).__name__} as its {key!r}, not a dict"
    return None


def check_module_states(states: list, modules, path) -> None:
    """``CheckpointError`` naming ``path`` unless ``states`` (a checkpoint's ``"modules"``)
    holds one state dict per module of ``modules``, with the same entries and shapes (a
    missing one would leave that module as initialized, silently)."""
    if len(states) != len(modules):
        raise CheckpointError(
            f"checkpoint {path} holds {len(states)} module state(s), but the pair has "
            f"{len(modules)} module(s) to restore: resume with the pair of that run, or use "
            "another checkpoint path")
    for index, (module, saved) in enumerate(zip(modules, states)):
        own = module.state_dict()
        if not isinstance(saved, dict) or saved.keys() != own.keys():
            missing = sorted(set(own) - set(saved)) if isinstance(saved, dict) else []
            extra = sorted(set(saved) - set(own)) if isinstance(saved, dict) else []
            raise CheckpointError(
                f"checkpoint {path} holds for module {index} ({type(module).__name__}) a state "
                f"that is not its own (missing {missing[:4]}, not the module's {extra[:4]}): "
                "resume with the pair of that run, or use another checkpoint path")
        for name, tensor in saved.items():
            # a module's extra state (get_extra_state) is its own to read, whatever its shape
            if not torch.is_tensor(own[name]) or name.rsplit(".", 1)[-1] == "_extra_state":
                continue
            if not torch.is_tensor(tensor) or tensor.shape != own[name].shape:
                shape = list(tensor.shape) if torch.is_tensor(tensor) else type(tensor).__name__
                raise CheckpointError(
                    f"checkpoint {path} holds {name} of module {index} "
                    f"({type(module).__name__}) as {shape}, where the module has "
                    f"{list(own[name].shape)}: resume with the pair of that run, or use "
                    "another checkpoint path")


class CheckpointLock:
    """An exclusive lock on a checkpoint path, held by one training run at a time.

    ``with CheckpointLock(path):`` takes an ``fcntl`` lock on ``path + ".lock"`` (released by
    the kernel when the process ends, even by SIGKILL, so no stale lock outlives its run) and
    raises :class:`CheckpointError` at once when another run holds it, or when the lock path
    is a symlink or a file holding anything but a process id. A symlink's target is
    locked (``<target>.lock``, :func:`real_path`), so runs through a link and through the
    file exclude each other.
    """

    def __init__(self, path: str | Path):
        self.path = real_path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._file = None

    def acquire(self) -> None:
        import fcntl

        try:  # not through a symlink: "a+" truncated the user's file that a link named
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0),
                         0o644)
        except OSError as error:
            if error.errno != errno.ELOOP:
                raise
            raise CheckpointError(
                f"the lock file {self.lock_path} of the checkpoint {self.path} is a symlink: "
                "locking would overwrite the file it points at; remove the link or use "
                "another checkpoint path") from error
        held = os.pread(fd, 64, 0)
        if not re.fullmatch(rb"\s*[0-9]*\s*", held):
            size = os.fstat(fd).st_size
            os.close(fd)
            raise CheckpointError(
                f"the lock file {self.lock_path} of the checkpoint {self.path} holds "
                f"{size} bytes that are no process id: it is not a lock of inference.fit, "
                "and locking would overwrite it; move it away or use another checkpoint path")
        lock = os.fdopen(fd, "r+")
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            lock.seek(0)
            owner = lock.read().strip() or "?"
            lock.close()
            raise CheckpointError(
                f"another run (pid {owner}) is writing the checkpoint {self.path} (lock "
                f"{self.lock_path}); wait for it to finish or use another checkpoint path"
            ) from error
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        self._file = lock

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None

    def __enter__(self) -> CheckpointLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# --- fingerprints: what a resumed run must share with the run that wrote the checkpoint ---------
HASH_CHUNK_ELEMENTS = 1 << 24  # copied to the CPU and hashed this many elements at a time


def data_fingerprint(tensors) -> list[dict]:
    """Shape, dtype and a hash of every element of each tensor: any change of a value
    changes it (a strided sample of 4096 values missed 200 changed values between them).
    Hashed in chunks on the CPU, about 0.3 s per 200 MB."""
    prints = []
    for tensor in tensors:
        flat = tensor.detach().reshape(-1)
        digest = hashlib.blake2b(digest_size=8)
        for start in range(0, flat.numel(), HASH_CHUNK_ELEMENTS):
            chunk = flat[start:start + HASH_CHUNK_ELEMENTS].cpu().contiguous()
            if chunk.dtype == torch.bfloat16:  # numpy has no bfloat16: hash its bits
                chunk = chunk.view(torch.int16)
            digest.update(chunk.numpy().tobytes())
        prints.append({"shape": list(tensor.shape), "dtype": str(tensor.dtype),
                       "hash": digest.hexdigest()})
    return prints


def state_shapes(state: dict) -> dict:
    """``{name: shape}`` of the tensors of a module's ``state_dict``; a module's extra state
    (``get_extra_state``, such as an n-gram's concentration; a tensor that grows in training)
    is left out: the module's own to read, as fingerprints written before such entries
    existed left it out."""
    return {name: list(value.shape) for name, value in state.items()
            if torch.is_tensor(value) and name.rsplit(".", 1)[-1] != "_extra_state"}


def params_fingerprint(modules, shapes: dict) -> dict:
    """Parameter and buffer names with shapes of each module, and ``shapes`` (name -> shape)
    of the pair's Pyro parameters outside them (:func:`store_shapes`)."""
    return {"modules": [state_shapes(m.state_dict()) for m in modules],
            "param_store": {name: list(shape) for name, shape in sorted(shapes.items())}}


def store_shapes(names) -> dict:
    """name -> shape of the param-store entries ``names`` (unconstrained, as stored)."""
    store = dict(pyro.get_param_store().named_parameters())
    return {name: list(store[name].shape) for name in names if name in store}


def describe_differences(saved: dict, current: dict, what: str = "") -> list[str]:
    """Human-readable differences between two fingerprints (nested dicts/lists)."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current), key=str):
            where = f"{what}.{key}" if what else str(key)
            if key not in saved:
                out.append(f"{where}: not in the checkpoint, now {current[key]!r}")
            elif key not in current:
                out.append(f"{where}: {saved[key]!r} in the checkpoint, absent now")
            else:
                out.extend(describe_differences(saved[key], current[key], where))
        return out
    if isinstance(saved, list) and isinstance(current, list) and len(saved) == len(current) \
            and any(isinstance(s, (dict, list)) for s in saved):
        out = []
        for i, (s, c) in enumerate(zip(saved, current)):
            out.extend(describe_differences(s, c, f"{what}[{i}]"))
        return out
    return [] if saved == current else [f"{what}: {saved!r} in the checkpoint, {current!r} now"]
