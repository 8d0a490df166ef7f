"""What a resumed run must share with the run that wrote its checkpoint: the pair's plain
settings.

:func:`settings_fingerprint` flattens the settings of a pair's modules, networks and
functions into ``"path" -> value`` (attributes, constants, closure values, globals, priors,
buffers by value, what Pyro's handlers around a function hold); :func:`changed_settings`
names what differs; :class:`SettingsRecord` follows one run: what training moved is left out
of the comparison, saved with each checkpoint and put back on resume
(:func:`locate_setting`). :func:`object_fingerprint` and :func:`callable_fingerprint`
describe a loss object and a ``batch_transform``. :func:`inference.fit` uses all of them
(see docs/reliability.md).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import enum
import functools
import hashlib
import inspect
import logging
import numbers
import random
import re
import types
from pathlib import Path

import numpy as np
import pyro
import pyro.poutine
import pyro.util
import torch
from pyro.poutine.messenger import Messenger

from .checkpoints import data_fingerprint

# set by Pyro's ELBOs during their first step (a guess), not by the user
_DERIVED_LOSS_SETTINGS = ("max_plate_nesting",)
# run-time state rather than settings: command-line arguments (they hold --epochs and
# --resume), progress bars, and devices (a run may move from CPU to GPU)
_RUN_STATE_NAMES = ("device", "args")


def object_fingerprint(obj) -> dict:
    """Class name and plain settings of an object (e.g. a loss object): its public attributes
    that are numbers, strings, bools or None, or lists, tuples and dicts of them."""

    settings = {"class": type(obj).__qualname__}
    for name, value in sorted(getattr(obj, "__dict__", {}).items()):
        if name in _DERIVED_LOSS_SETTINGS:
            continue
        if not name.startswith("_") and _plain(value):
            settings[name] = value
    return settings


_MAX_LISTED = 64  # longer plain lists (a vocabulary) enter by a digest of their repr
_MAX_DEPTH = 3  # owned objects are followed this many attributes deep
# attributes of every nn.Module (its parameters, hooks, ...): never settings
_MODULE_INTERNALS = frozenset(vars(torch.nn.Module()))


def settings_fingerprint(modules, functions: dict | None = None,
                         networks: dict | None = None) -> dict:
    """The plain settings of ``modules`` and of what they own, flat: ``"path" -> value``.

    For each module (indexed ``0.``, ``1.``, ...) and each of its submodules, its class
    (``0.__class__``: a ``VAE`` checkpoint does not resume an ``Autoencoder`` of the same
    parameter shapes) and the public attributes, plus the private ones named after a parameter
    of its class's constructor (an AutoGuide's ``_init_scale``): numbers, strings, bools and
    None, and lists, tuples, sets and dicts of anything recorded here (a mixed dict entry by
    entry, ``0.layers['act']``); classes and enum members by name; NumPy arrays and tensors
    that are not parameters or buffers by shape, dtype and a hash; functions by name, the
    numbers in their code, their default arguments, the values their closures capture (a
    likelihood's fixed scale) and the values of the globals they use (a script's
    ``NOISE = 0.1``, a ``PRIOR = dist.Normal(0., 2.)`` or config object whose attributes are
    such values; functions of the same module, also inside Pyro handlers, are followed), not
    by the rest of their code (an edit that leaves those alone, or a library upgrade, still
    resumes); ``functools.partial`` objects by function, arguments and keywords; other owned
    objects by their own attributes, up to three levels deep. A Pyro handler around a
    function (``poutine.reparam``, ``condition``, ``block``, nested) is no level: its
    messenger's settings (``model.msngr.config['z'].centered``, ``model.args[0].data['mu']``,
    ``model.args[0].hide_fn.args``) and the function it wraps are followed as deep as the
    handler itself.

    ``functions`` (name -> the pair's model and guide) adds each callable under its name:
    an ``nn.Module`` called as the model (a ``PyroModule``, an ``AutoNormal`` guide) as a
    module (``guide.init_loc_fn``), a function as above (``model.scale``). ``networks``
    (``pyro.module`` name -> network) adds the networks a plain-function pair registers
    (``decoder.2.p``). Modules already recorded are not recorded again.

    Left out as run-time state: modules' ``training`` flags, attributes named ``device`` or
    ``args``, command-line ``argparse.Namespace`` objects, Pyro traces (an AutoGuide's
    prototype trace), progress bars, loggers and ``random.Random`` generators. All of it is
    deterministic across processes (no memory addresses, sets sorted).
    """
    out: dict = {}
    seen: set = set()
    for index, module in enumerate(modules):
        _record_module(module, f"{index}.", out, seen)
    done = {id(sub) for module in modules for sub in module.modules()}
    others = [(name, fn) for name, fn in (functions or {}).items()]
    others += sorted((networks or {}).items())
    for name, value in others:
        if isinstance(value, torch.nn.Module):
            if id(value) not in done:
                done.update(id(sub) for sub in value.modules())
                _record_module(value, f"{name}.", out, seen)
        elif value is not None:
            _record_setting(value, name, out, seen, 1)
    return out


def _record_module(module, prefix: str, out: dict, seen: set) -> None:
    for name, sub in module.named_modules():
        path = f"{prefix}{name}." if name else prefix
        seen.add(id(sub))
        out[path + "__class__"] = type(sub).__qualname__
        arguments = _init_parameters(type(sub))
        # public attributes first: what they hold is recorded under their names
        for key, value in sorted(vars(sub).items(), key=lambda kv: (kv[0][:1] == "_", kv[0])):
            if key.startswith("_") and not (key[1:] in arguments and
                                            key not in _MODULE_INTERNALS):
                continue
            if key != "training" and key not in _RUN_STATE_NAMES:
                _record_setting(value, path + key, out, seen, 1)
        # a PyroSample's prior (held in _pyro_samples): a distribution by class, shapes and
        # the values of its parameters, a callable prior as a function
        for key, prior in sorted(getattr(sub, "_pyro_samples", {}).items()):
            if not key.startswith("_"):
                _record_prior(prior, path + key, out, seen)
        # buffers by value: a constant (a fixed observation scale) is a setting; those that
        # training moves (batch norm's statistics) leave the record as other moved settings
        for key, buffer in sorted(getattr(sub, "_buffers", {}).items()):
            if buffer is not None and not key.startswith("_") and path + key not in out:
                out[path + key] = _tensor_text(buffer)


def _tensor_text(tensor: torch.Tensor) -> str:
    """A buffer's or a prior's tensor: its values when it has at most 4 (``tensor [] float32
    = [1.0]``), else shape, dtype and a hash (:func:`data_fingerprint`)."""
    held = data_fingerprint([tensor])[0]
    if tensor.numel() <= 4 and not tensor.is_complex():
        values = tensor.detach().reshape(-1).cpu().tolist()
        return f"tensor {held['shape']} {held['dtype']} = {values}"
    return f"tensor {held['shape']} {held['dtype']} (hash {held['hash']})"


_PRIOR_DEPTH = 6  # nested distributions (Independent(Expanded(Normal))) followed this deep


def _record_prior(prior, path: str, out: dict, seen: set, depth: int = 0) -> None:
    """A ``PyroSample`` prior at ``path``: a distribution by its class, batch and event shapes
    and its attributes (tensors by a hash, nested distributions in turn); a callable prior
    (``lambda self: ...``) as a function (:func:`_record_function`)."""
    if not isinstance(prior, torch.distributions.Distribution) or depth > _PRIOR_DEPTH:
        _record_setting(prior, path, out, seen, 1)
        if isinstance(out.get(path), str):  # PyroSample renames the function on each use
            out[path] = out[path].replace("_pyro_prior_", "")
        return
    out[path] = f"{type(prior).__module__}.{type(prior).__qualname__}"
    out[path + ".batch_shape"] = list(prior.batch_shape)
    out[path + ".event_shape"] = list(prior.event_shape)
    for key, value in sorted(vars(prior).items()):
        if key.startswith("_"):
            continue
        if isinstance(value, torch.distributions.Distribution):
            _record_prior(value, f"{path}.{key}", out, seen, depth + 1)
        elif torch.is_tensor(value):
            out[f"{path}.{key}"] = _tensor_text(value)
        else:
            _record_setting(value, f"{path}.{key}", out, seen, 1)


_INIT_PARAMETERS: dict = {}


def _init_parameters(cls) -> frozenset:
    """Names of the parameters of ``cls.__init__`` (cached per class)."""
    if cls not in _INIT_PARAMETERS:
        try:
            names = frozenset(inspect.signature(cls.__init__).parameters) - {"self"}
        except (TypeError, ValueError):
            names = frozenset()
        _INIT_PARAMETERS[cls] = names
    return _INIT_PARAMETERS[cls]


def _record_setting(value, path: str, out: dict, seen: set, depth: int) -> None:
    """Put what identifies ``value`` at ``path`` in ``out`` (see settings_fingerprint)."""
    if _plain(value):
        listed = isinstance(value, (list, tuple, dict)) and len(value) > _MAX_LISTED
        out[path] = (f"{type(value).__name__} of {len(value)}, digest "
                     f"{hashlib.blake2b(repr(value).encode(), digest_size=8).hexdigest()}"
                     if listed else value)
    elif isinstance(value, np.generic) and not isinstance(value, np.void):
        out[path] = value.item()  # np.bool_, np.str_ (NumPy's numbers are plain)
    elif isinstance(value, enum.Enum):
        out[path] = _name_of(value)
    elif isinstance(value, (torch.device, torch.dtype)):
        out[path] = str(value)
    elif torch.is_tensor(value):
        held = data_fingerprint([value])[0]
        out[path] = f"tensor {held['shape']} {held['dtype']} (hash {held['hash']})"
    elif isinstance(value, np.ndarray):
        out[path] = _array_text(value)
    elif (isinstance(value, (torch.nn.Module, argparse.Namespace)) or id(value) in seen
          or depth > _MAX_DEPTH or _is_run_state(value)):
        return  # submodules have their own paths; cycles and deep objects are not followed
    elif isinstance(value, type):
        out[path] = f"{value.__module__}.{value.__qualname__}"
    elif isinstance(value, functools.partial):
        seen.add(id(value))
        _record_setting(value.func, path, out, seen, depth)
        if path in out:  # not the bare function: a partial of it
            out[path] = f"functools.partial({out[path]})"
        # a Pyro handler's messenger and the function it wraps (args[0], args[1]) are as
        # deep as the handler: its arguments tuple is no level
        args_depth = depth - 1 if _is_handler(value) else depth + 1
        for key, item in (("args", value.args), ("keywords", value.keywords)):
            if item:
                _record_setting(item, f"{path}.{key}", out, seen, args_depth)
    elif isinstance(value, (list, tuple, dict, set, frozenset)):
        _record_container(value, path, out, seen, depth)
    elif callable(value) and hasattr(getattr(value, "__func__", value), "__code__"):
        _record_function(value, path, out, seen, depth)
    elif callable(value) and not hasattr(value, "__dict__") and hasattr(value, "__qualname__"):
        out[path] = f"{getattr(value, '__module__', None)}.{value.__qualname__}"  # a builtin
    elif hasattr(value, "__dict__") or _is_dataclass(value):
        seen.add(id(value))
        out[path + ".class"] = type(value).__qualname__
        # a Pyro handler (poutine.reparam's) and its messenger are no level: the settings
        # they hold (a reparam config's objects, condition's data) are the wrapped pair's
        inner = depth if _is_handler(value) or isinstance(value, Messenger) else depth + 1
        for key, item in sorted(_public_fields(value).items()):
            _record_setting(item, f"{path}.{key}", out, seen, inner)


def _record_container(value, path: str, out: dict, seen: set, depth: int) -> None:
    """A list, tuple, set or dict that is not plain: its length (and keys) at ``path``, each
    item at ``path[key]``; a set, sorted, at ``path`` when its items are described by name;
    more than _MAX_LISTED items by a digest of what they record."""
    seen.add(id(value))
    kind = type(value).__name__
    if isinstance(value, (set, frozenset)):
        items = []
        for item in value:
            inner: dict = {}
            _record_setting(item, "", inner, seen, depth + 1)
            items.append(repr(inner.get("", sorted(inner.items()))))
        items.sort()
        out[path] = (f"{kind} [{', '.join(items)}]" if len(items) <= _MAX_LISTED
                     else f"{kind} of {len(items)}, digest {_digest(items)}")
        return
    pairs = (sorted(((_key_text(k), v) for k, v in value.items()), key=lambda kv: kv[0])
             if isinstance(value, dict) else [(str(i), v) for i, v in enumerate(value)])
    inner = {}
    for key, item in pairs:
        _record_setting(item, f"{path}[{key}]", inner, seen, depth + 1)
    if len(pairs) > _MAX_LISTED:
        out[path] = f"{kind} of {len(pairs)}, digest {_digest(sorted(inner.items()))}"
        return
    out[path] = (f"{kind} of {len(pairs)}" if not isinstance(value, dict)
                 else f"{kind} of keys [{', '.join(key for key, _ in pairs)}]")
    out.update(inner)


def _record_function(value, path: str, out: dict, seen: set, depth: int) -> None:
    """A function (or bound method) by name, the numbers in its code, its default arguments,
    what its closure captures and the plain values of the globals it names."""
    seen.add(id(value))
    function = getattr(value, "__func__", value)
    seen.add(id(function))
    out[path] = f"{function.__module__}.{function.__qualname__}"
    code = function.__code__
    numbers_in_code = [c for c in code.co_consts
                       if isinstance(c, numbers.Number) and not isinstance(c, bool)]
    if numbers_in_code:  # a literal such as the 0.1 of lambda p: Normal(p, 0.1)
        out[path + ".constants"] = numbers_in_code
    defaults = {**dict(zip(code.co_varnames[code.co_argcount - len(function.__defaults__ or ()):
                                            code.co_argcount], function.__defaults__ or ())),
                **(function.__kwdefaults__ or {})}
    for name, default in sorted(defaults.items()):
        _record_setting(default, f"{path}.defaults.{name}", out, seen, depth + 1)
    for cell_name, cell in zip(code.co_freevars, function.__closure__ or ()):
        try:
            captured = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        _record_setting(captured, f"{path}.{cell_name}", out, seen, depth + 1)
    names = getattr(function, "__globals__", {})
    for name in sorted(_global_names(code)):
        if (name not in names or name.startswith("_") or name in _RUN_STATE_NAMES
                or name in code.co_freevars):
            continue  # private module state (a library's flags) is not a setting
        held = names[name]
        wrapped = _unwrap_handlers(held)  # a function of the module, or one wrapped by handlers
        if _value_like(held) or (isinstance(wrapped, types.FunctionType)
                                 and wrapped.__module__ == function.__module__):
            _record_setting(held, f"{path}.{name}", out, seen, depth + 1)


def _global_names(code) -> set:
    """The global names ``code`` and the code nested in it (lambdas, comprehensions) use."""
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _global_names(constant)
    return names


def _value_like(value, depth: int = 1) -> bool:
    """A value a global constant may hold: a plain value, array, tensor, enum member, device
    or dtype, a container of them, or an object that holds only such values in its public
    attributes (a distribution, a config namespace; objects ``_MAX_DEPTH`` levels deep).
    Not a module, class, function, network or other object."""
    if isinstance(value, (list, tuple, set, frozenset)):
        return len(value) <= _MAX_LISTED and all(_value_like(v, depth) for v in value)
    if isinstance(value, dict):
        return len(value) <= _MAX_LISTED and all(_value_like(v, depth) for v in value.values())
    if (_plain(value) or isinstance(value, (np.generic, np.ndarray, enum.Enum,
                                            torch.device, torch.dtype))
            or torch.is_tensor(value)):
        return True
    if (depth > _MAX_DEPTH or _is_run_state(value) or _is_handler(value)
            or isinstance(value, (type, types.ModuleType, types.FunctionType, types.MethodType,
                                  functools.partial, torch.nn.Module, argparse.Namespace))
            or not (hasattr(value, "__dict__") or _is_dataclass(value))):
        return False
    fields = _public_fields(value)  # a global object with no public attribute is no setting
    return (bool(fields) or depth > 1) and all(_value_like(item, depth + 1)
                                               for item in fields.values())


def _public_fields(value) -> dict:
    """``name -> value`` of an object's public attributes (a dataclass's fields)."""
    fields = (vars(value) if hasattr(value, "__dict__")
              else {f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    return {key: item for key, item in fields.items() if not key.startswith("_")}


def _is_handler(value) -> bool:
    """Whether ``value`` is a Pyro handler applied to a function: ``partial(_context_wrap,
    messenger, fn)`` (``poutine.condition(model, data=...)``, ``poutine.block``) or an object
    holding ``msngr`` and ``fn`` (``poutine.reparam``'s ``ReparamHandler``)."""
    if isinstance(value, functools.partial):
        return (len(value.args) == 2 and not value.keywords
                and isinstance(value.args[0], Messenger) and callable(value.args[1]))
    held = getattr(value, "__dict__", None)  # not getattr: a proxy may answer any name
    return (isinstance(held, dict) and isinstance(held.get("msngr"), Messenger)
            and callable(held.get("fn")))


def _unwrap_handlers(value):
    """The function inside the Pyro handlers wrapping ``value`` (``value`` itself when none
    does)."""
    for _ in range(64):  # handlers nest a few deep (bounded: an object may hold itself)
        if isinstance(value, functools.partial) and _is_handler(value):
            value = value.args[1]
        elif isinstance(value, functools.partial) and not value.args and not value.keywords:
            value = value.func  # the bound partial poutine's handlers return around it
        elif _is_handler(value):
            value = value.fn
        else:
            break
    return value


def _is_run_state(value) -> bool:
    """Progress bars, loggers, random generators and Pyro traces: state of a run, not
    settings."""
    module = type(value).__module__ or ""
    return (module.split(".")[0] == "tqdm"
            or isinstance(value, (pyro.poutine.Trace, logging.Logger, logging.LoggerAdapter,
                                  random.Random)))


def _name_of(member: enum.Enum) -> str:
    return f"{type(member).__module__}.{type(member).__qualname__}.{member.name}"


def _key_text(key) -> str:
    """A dict key as it appears in a path: ``'act'``, ``3``, a class or enum member by name
    (never a repr holding a memory address)."""
    if isinstance(key, enum.Enum):
        return _name_of(key)
    if isinstance(key, type):
        return f"{key.__module__}.{key.__qualname__}"
    if key is None or isinstance(key, (str, numbers.Number)):
        return repr(key)
    return type(key).__qualname__


def _digest(items) -> str:
    return hashlib.blake2b(repr(items).encode(), digest_size=8).hexdigest()


def _array_text(array: np.ndarray) -> str:
    """Shape, dtype and a hash of up to 4096 evenly strided elements of a NumPy array (of an
    object array, of the repr of its items when they are plain)."""
    flat = array.reshape(-1)
    if flat.size > 4096:
        flat = flat[np.arange(4096, dtype=np.int64) * (flat.size - 1) // 4095]
    if array.dtype.hasobject:
        items = flat.tolist()
        data = repr(items).encode() if all(_plain(v) for v in items) else b""
    else:
        data = np.ascontiguousarray(flat).tobytes()
    return (f"ndarray {list(array.shape)} {array.dtype} "
            f"(hash {hashlib.blake2b(data, digest_size=8).hexdigest()})")


def _plain(value) -> bool:
    """A number, string, bool or None, or a list, tuple or dict (string keys) of them."""
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return value is None or isinstance(value, (str, numbers.Number))


def _is_dataclass(value) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


_ABSENT = object()


def _leaf_differences(path: str, saved, current):
    """``(path, saved, current)`` of each entry of two plain values that differs, dict
    entries by their own paths (``0.config['epochs']``)."""
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in sorted(set(saved) | set(current), key=repr):
            yield from _leaf_differences(f"{path}[{key!r}]", saved.get(key, _ABSENT),
                                         current.get(key, _ABSENT))
    elif saved != current:
        yield path, saved, current


def _ignored(path: str, ignore) -> bool:
    """Whether ``path`` is one of ``ignore`` or inside one (``0.config`` holds
    ``0.config['epochs']`` and ``0.config.x``)."""
    return any(path == name or path.startswith((name + ".", name + "[")) for name in ignore)


def changed_settings(saved: dict, current: dict, ignore=()) -> list[str]:
    """The settings that both fingerprints hold with different values, described (an entry of
    a dict by its own path). Settings only one side holds are not compared: the
    modules' structure is checked by their parameter fingerprint, a run leaves out what it
    saw change while it trained, and a checkpoint written before a kind of setting was
    recorded still resumes. Paths in ``ignore``, and what is inside them, are not compared."""
    described = []
    for top in sorted(set(saved) & set(current)):
        if saved[top] == current[top] or _ignored(top, ignore):
            continue
        for path, old, new in _leaf_differences(top, saved[top], current[top]):
            if not _ignored(path, ignore):
                described.append(f"{path}: {_shown(old, 'in the checkpoint')}, "
                                 f"{_shown(new, 'now')}")
    return described


def _shown(value, when: str) -> str:
    return f"absent {when}" if value is _ABSENT else f"{value!r} {when}"


# checkpoint (resolved path) -> {setting path: (value saved, value after)}: what a run in
# this process moved after it last wrote that checkpoint (a callback of the last epoch, an
# interrupted epoch), so that resuming it here is not refused for that
_MOVED_AFTER_SAVE: dict = {}


class SettingsRecord:
    """The plain settings of one run's pair (:func:`settings_fingerprint`): compared with a
    checkpoint's on resume and recorded in each checkpoint the run writes.

    A setting that training moves (a call counter, a weight a callback anneals) is left out
    of the record from then on: each checkpoint lists such paths (``settings_moved``), and a
    resumed run leaves them out too. Use as a context manager around the run: on leaving
    (also by an exception or Ctrl-C) it notes what moved after the last checkpoint was
    written (by the last epoch's callback), so that a resume of it in the same process
    accepts those values; any other difference is still refused.

    Args:
        checkpoint: the run's checkpoint path (None: nothing is recorded).
        ignore: setting paths, as a refusal names them (``"0.started"``,
            ``"0.config['epochs']"``), that a resume does not compare, with what is inside
            them: settings that do not change the model.
    """

    def __init__(self, checkpoint, ignore=()):
        ignore = [ignore] if isinstance(ignore, str) else ignore
        try:
            ignore = tuple(ignore)
        except TypeError:
            raise TypeError(f"fit(resume_ignore=...) takes a list of setting paths, as a "
                            f"refusal names them (\"0.config['epochs']\"); got "
                            f"{type(ignore).__name__}") from None
        for name in ignore:
            if not isinstance(name, str) or not name:
                raise TypeError(f"fit(resume_ignore=...) takes setting paths, as a refusal "
                                f"names them (\"0.started\", \"0.config['epochs']\"); got "
                                f"{name!r}")
        self.ignore = ignore
        try:
            self.key = None if checkpoint is None else str(Path(checkpoint).resolve())
        except (OSError, RuntimeError):  # a symlink loop: refused later, when written
            self.key = str(checkpoint)
        self.modules: list = []
        self.functions: dict = {}
        self.networks: dict = {}
        self.start: dict = {}
        self.moved: set = set()  # moved by training, in this run or an earlier one
        self.saved: dict | None = None
        self.at_save: dict | None = None  # every setting when the last checkpoint was made

    def current(self) -> dict:
        return settings_fingerprint(self.modules, self.functions, self.networks)

    def watch(self, modules, functions: dict) -> None:
        """Record the settings of ``modules`` and the pair's callables (name -> callable) at
        the start of the run."""
        self.modules, self.functions = list(modules), dict(functions)
        self.start = self.current()

    def add_networks(self, networks: dict) -> None:
        """Add the ``pyro.module`` networks (name -> network) found by running the pair."""
        if networks:
            self.networks = dict(networks)
            self.start = {**self.current(), **self.start}

    def differences(self, saved: dict, moved=()) -> list[str]:
        """What differs from the checkpoint's ``saved`` settings, described, leaving out
        ``ignore`` and what a run in this process moved after it wrote the checkpoint.
        ``moved``: the checkpoint's paths that training moved (left out from now on)."""
        self.moved.update(path for path in moved if isinstance(path, str))
        after_save = _MOVED_AFTER_SAVE.get(self.key, {})
        current = {}
        for path, value in self.start.items():
            if path in saved and after_save.get(path) == (saved[path], value):
                self.moved.add(path)
            else:
                current[path] = value
        return changed_settings(saved, current, self.ignore)

    def for_checkpoint(self) -> dict:
        """What a checkpoint written now records: ``settings``, those of the start that still
        hold and that training never moved, and ``settings_moved``, the paths training
        moved."""
        now = self.current()
        self.moved.update(path for path, value in self.start.items()
                          if path not in now or now[path] != value)
        record = {path: value for path, value in self.start.items() if path not in self.moved}
        self.saved, self.at_save = record, now
        return {"settings": record, "settings_moved": sorted(self.moved)}

    def moved_since_save(self) -> bool:
        """Whether a setting changed since the last :meth:`for_checkpoint` (a callback that
        anneals a weight after the checkpoint was written)."""
        return self.at_save is not None and self.current() != self.at_save

    def locate(self, path: str):
        """Where the setting ``path`` lives (:class:`SettingPlace`), or None when it cannot be
        told from the path."""
        return locate_setting(path, self.modules, self.functions, self.networks)

    def moved_values(self) -> dict:
        """``path -> value`` of the moved settings that are plain values (numbers, bools,
        strings, None) or tensors (up to a million elements, not parameters) held where
        :meth:`locate` finds them: saved with each checkpoint, so that a resume continues
        with the values training reached (an annealed weight)."""
        values = {}
        for path in sorted(self.moved):
            place = self.locate(path)
            if place is None or not place.settable:
                continue
            try:
                value = place.get()
            except Exception:  # noqa: BLE001 - an attribute that cannot be read is not saved
                continue
            if _scalar(value):
                values[path] = value.item() if isinstance(value, np.generic) else value
            elif _savable_tensor(value):
                values[path] = value.detach().cpu().clone()
        return values

    def restore(self, values: dict) -> list[str]:
        """Put the moved settings ``values`` (from :meth:`moved_values`) back where they live;
        nothing is set unless every one can be (paths in ``ignore`` are left alone). Returns
        descriptions of those that cannot: a path this pair does not have, or a value of
        another kind than the pair holds now."""
        problems, places = [], []
        for path, value in sorted(values.items()):
            if _ignored(path, self.ignore):
                continue
            place = self.locate(path)
            current = _ABSENT
            if place is not None and place.settable:
                try:
                    current = place.get()
                except Exception:  # noqa: BLE001 - reported below
                    pass
            if current is _ABSENT:
                problems.append(f"{path}: {value!r} in the checkpoint, no such setting now")
            elif not _same_kind(value, current):
                problems.append(f"{path}: {value!r} in the checkpoint, a "
                                f"{type(current).__name__} now ({current!r:.40})")
            else:
                places.append((place, value))
        if not problems:
            for place, value in places:
                current = place.get()
                if torch.is_tensor(current):  # in place: whoever holds the tensor sees it
                    with torch.no_grad():
                        current.copy_(value)
                else:
                    place.set(value)
        return problems

    def __enter__(self) -> SettingsRecord:
        return self

    def __exit__(self, *exc) -> None:
        if self.key is None or self.saved is None:
            return
        try:
            now = self.current()
        except Exception:  # noqa: BLE001 - never mask the run's own outcome
            _MOVED_AFTER_SAVE.pop(self.key, None)
            return
        moved = {path: (value, now[path]) for path, value in self.saved.items()
                 if path in now and now[path] != value}
        if moved:
            _MOVED_AFTER_SAVE[self.key] = moved
        else:
            _MOVED_AFTER_SAVE.pop(self.key, None)


def _scalar(value) -> bool:
    """A number, bool, string or None (a setting whose value a checkpoint can hold)."""
    return value is None or (isinstance(value, (str, numbers.Number, np.bool_))
                             and not torch.is_tensor(value) and not isinstance(value, np.ndarray))


def _kind(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    return "str" if isinstance(value, str) else "number"


# moved tensor settings up to this many elements are saved with a checkpoint (an annealed
# weight kept as a tensor); parameters and buffers come back with the modules' state
_MAX_SAVED_TENSOR = 1 << 20


def _savable_tensor(value) -> bool:
    return (torch.is_tensor(value) and not isinstance(value, torch.nn.Parameter)
            and not value.is_meta and value.numel() <= _MAX_SAVED_TENSOR)


def _same_kind(saved, current) -> bool:
    """Whether ``saved`` may replace ``current``: both plain values of one kind (numbers of
    any type), either None (a setting set later), or tensors of one shape (copied into
    ``current``, keeping its dtype and device)."""
    if torch.is_tensor(saved) or torch.is_tensor(current):
        return (torch.is_tensor(saved) and torch.is_tensor(current)
                and saved.shape == current.shape and not current.requires_grad)
    if not _scalar(current):
        return False
    return saved is None or current is None or _kind(saved) == _kind(current)


@dataclasses.dataclass
class SettingPlace:
    """Where a setting lives: ``holder``'s attribute ``key`` (``how="attr"``), item ``key``
    (``"item"``), a closure cell (``"cell"``) or a function's default argument ``key``
    (``"default"``)."""

    holder: object
    how: str
    key: object = None

    @property
    def settable(self) -> bool:
        return not (self.how == "item" and isinstance(self.holder, tuple))

    def get(self):
        if self.how == "attr":
            return getattr(self.holder, self.key)
        if self.how == "item":
            return self.holder[self.key]
        if self.how == "cell":
            return self.holder.cell_contents
        return _defaults(self.holder)[self.key]

    def set(self, value) -> None:
        if self.how == "attr":
            setattr(self.holder, self.key, value)
        elif self.how == "item":
            self.holder[self.key] = value
        elif self.how == "cell":
            self.holder.cell_contents = value
        else:
            function, name = self.holder, self.key
            if name in (function.__kwdefaults__ or {}):
                function.__kwdefaults__[name] = value
            else:
                code = function.__code__
                names = code.co_varnames[code.co_argcount - len(function.__defaults__):
                                         code.co_argcount]
                function.__defaults__ = tuple(value if n == name else d
                                              for n, d in zip(names, function.__defaults__))


def _defaults(function) -> dict:
    code = function.__code__
    return {**dict(zip(code.co_varnames[code.co_argcount - len(function.__defaults__ or ()):
                                        code.co_argcount], function.__defaults__ or ())),
            **(function.__kwdefaults__ or {})}


_TOKEN = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[([^\]]*)\]")


def _tokens(text: str) -> list | None:
    """``.name`` and ``[key]`` parts of a setting path's tail: ``("attr", name)`` or
    ``("item", key)``; None when the text is not made of them."""
    tokens, at = [], 0
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None or match.end() == at:
            return None
        if match[1] is not None:
            tokens.append(("attr", match[1]))
        else:
            try:
                tokens.append(("item", ast.literal_eval(match[2])))
            except (ValueError, SyntaxError):
                return None
        at = match.end()
    return tokens


def _follow(holder, tokens: list) -> SettingPlace | None:
    """The place ``tokens`` lead to from ``holder``."""
    if not tokens:
        return None
    try:
        for how, key in tokens[:-1]:
            holder = getattr(holder, key) if how == "attr" else holder[key]
        how, key = tokens[-1]
        place = SettingPlace(holder, how, key)
        place.get()
    except Exception:  # noqa: BLE001 - a path that does not lead anywhere
        return None
    return place


def locate_setting(path: str, modules, functions: dict | None = None,
                   networks: dict | None = None) -> SettingPlace | None:
    """Where the setting that :func:`settings_fingerprint` records at ``path`` lives in
    ``modules``, the pair's callables ``functions`` and ``networks`` (the same arguments):
    a module's or owned object's attribute, a dict or list entry, a function's closure
    variable, default argument or module global. None when ``path`` leads nowhere."""
    roots = [(f"{index}.", module) for index, module in enumerate(modules)]
    roots += [(f"{name}.", value) for name, value in (functions or {}).items()]
    roots += [(f"{name}.", value) for name, value in sorted((networks or {}).items())]
    for prefix, root in roots:
        if not path.startswith(prefix) or root is None:
            continue
        rest = path[len(prefix):]
        if isinstance(root, torch.nn.Module):
            holder, tail = root, rest
            for name, sub in root.named_modules():
                if name and rest.startswith(name + ".") and \
                        len(name) + 1 > len(rest) - len(tail):
                    holder, tail = sub, rest[len(name) + 1:]
            tokens = _tokens(tail)
            place = _follow(holder, tokens) if tokens else None
        else:
            place = _locate_in_function(root, rest)
        if place is not None:
            return place
    return None


def _locate_in_function(fn, rest: str) -> SettingPlace | None:
    """A setting of a function (``model.scale``): a closure variable, a default argument
    (``model.defaults.x``) or a global of its module, then what is inside it."""
    tokens = _tokens(rest)
    if not tokens or tokens[0][0] != "attr":
        return None
    function = getattr(fn, "__func__", fn)
    if not isinstance(function, types.FunctionType):
        return _follow(fn, tokens)  # a callable object: its attributes
    name, code = tokens[0][1], function.__code__
    if name == "defaults" and len(tokens) > 1 and tokens[1][1] in _defaults(function):
        first, tokens = SettingPlace(function, "default", tokens[1][1]), tokens[2:]
    elif name in code.co_freevars:
        cell = function.__closure__[code.co_freevars.index(name)]
        first, tokens = SettingPlace(cell, "cell"), tokens[1:]
    elif name in function.__globals__:
        first, tokens = SettingPlace(function.__globals__, "item", name), tokens[1:]
    else:
        return None
    if not tokens:
        return first
    try:
        return _follow(first.get(), tokens)
    except Exception:  # noqa: BLE001 - an empty cell
        return None


def callable_fingerprint(fn) -> str:
    """Name of a function, method or callable object, with a digest of a function's code
    (its byte code and constants), so that another function, or the same one edited, tells
    itself apart in a resume check. Values a closure captures are not covered."""
    target = getattr(fn, "__func__", fn)
    name = getattr(target, "__qualname__", None) or type(target).__qualname__
    text = f"{getattr(target, '__module__', None) or type(target).__module__}.{name}"
    code = getattr(target, "__code__", None)
    if code is not None:
        text += f" (code {_code_digest(code)[:12]})"
    return text


def _code_digest(code) -> str:
    """sha256 of byte code and constants, nested code objects by their own digest (their
    repr holds a memory address, which differs between processes)."""
    consts = [_code_digest(c) if hasattr(c, "co_code") else repr(c) for c in code.co_consts]
    return hashlib.sha256(code.co_code + repr(consts).encode()).hexdigest()
