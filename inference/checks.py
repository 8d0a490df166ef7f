"""Argument checks shared by the public entry points: say which argument and what was expected.

:mod:`ppl_models.checks` holds the models' own checks. Some have a twin here (``as_int``,
``check_generator``, ``physical_memory_bytes``/``physical_memory``,
``check_weights_memory``/``check_memory``, ``check_in_range_of``) because the two packages
never import each other (docs/architecture.md); the twins differ on purpose where their
callers do (here a wrong generator is a ``ValueError``, the memory bound is stated for log
weights, and ``check_in_range_of`` ends with a hint where the models' twin says what fails).
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import functools
import inspect
import math
import numbers
import os
import re
import sys
import threading
import traceback
import types
import warnings

import numpy
import pyro
import torch
from pyro.infer.util import is_validation_enabled
from pyro.poutine.guide import GuideMessenger
from pyro.poutine.runtime import _PYRO_STACK

from .effect_guides import traceable_guide
from .reachable import kept_plate_caches, reachable_modules


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a ``warnings.warn`` in the calling function name the
    first frame outside the ``inference`` package: the user's call, however deep the warning
    is raised."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def integer_tensor(value) -> bool:
    """Whether ``value`` is a 0-dim tensor or numpy array of an integer dtype (not bool):
    ``torch.tensor(10)`` and ``np.array(10)`` count as the integer they hold, as
    ``np.int64(10)`` does."""
    if isinstance(value, numpy.ndarray):
        return value.ndim == 0 and value.dtype.kind in "iu"
    return (torch.is_tensor(value) and value.dim() == 0 and value.dtype != torch.bool
            and not value.is_floating_point() and not value.is_complex() and not value.is_meta)


def held_count(value) -> int | None:
    """``value`` as a Python ``int`` when it is an integer (numpy integers and 0-dim integer
    tensors too; not a bool), else None: a count read from an object the user built (a
    loss's ``num_particles`` from ``np.arange``), judged as the same count given as an int."""
    if integer_tensor(value):
        return int(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return None


def check_int(value, name: str, minimum: int = 1) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer (not a bool, not a float such as
    2.0; numpy integers and 0-dim integer tensors accepted) ``>= minimum``."""
    if integer_tensor(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")


MAX_STEPS = 10 ** 7
"""The most steps (or sweeps) an iterative entry point takes: AIS's annealing steps, the local
guides' optimizer steps, a MAP search's Adam steps, a Markov chain's moves. At a millisecond a
step that is close to three hours (a day of a small model's HMC); a count beyond it is a typo
(``10**12``) that would run for ever."""


def check_at_most(value: int, name: str, most: int, why: str) -> None:
    """Raise ``ValueError`` naming ``name`` when the count ``value`` exceeds ``most``: a run
    that would not end (``why`` says what each unit costs) is refused before any work."""
    if value > most:
        raise ValueError(f"{name} must be at most {most:,}, got {value:,}: {why}")


def as_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as a Python ``int`` after :func:`check_int` (numpy integers and 0-dim integer
    tensors accepted)."""
    check_int(value, name, minimum)
    return int(value)


def as_int_list(values, name: str) -> list[int]:
    """A non-empty sequence or iterable of positive integers (list, tuple, range, generator,
    1-D integer numpy array or tensor), read once, as a list of Python ints; ``ValueError``
    naming ``name`` (and the entry at fault) otherwise."""
    if hasattr(values, "tolist") and hasattr(values, "ndim"):  # numpy array or tensor
        if values.ndim != 1:
            raise ValueError(f"{name} must be a 1-D sequence of positive integers, got "
                             f"{values!r}")
        values = values.tolist()
    elif isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{name} must be a non-empty sequence of positive integers, got "
                         f"{values!r}")
    values = list(values)
    if not values:
        raise ValueError(f"{name} must be a non-empty sequence of positive integers, got "
                         "an empty one")
    return [as_int(v, f"{name}[{i}]") for i, v in enumerate(values)]


def check_chain_length(num_steps, burn_in, minimum: int = 1, name: str = "num_steps") -> int:
    """Check a Markov chain's length ``num_steps`` (an integer ``>= minimum``, reported as
    ``name``) and ``burn_in`` (an integer in ``0 .. num_steps - 1``; None: half the steps;
    bools and floats such as 1.5 refused, numpy integers accepted); returns the burn-in as
    a Python ``int``."""
    check_int(num_steps, name, minimum)
    if burn_in is None:
        return int(num_steps) // 2
    check_int(burn_in, "burn_in", 0)
    if not burn_in < num_steps:
        raise ValueError(f"burn_in must lie in 0..{num_steps - 1} ({name}={num_steps}), "
                         f"got {burn_in}")
    return int(burn_in)


def finite_real(value) -> bool:
    """Whether ``value`` is a real number (not a bool) that a float holds finitely: an
    integer beyond float range (``10**400``) is not, where ``math.isfinite`` raises."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def real_tensor(value) -> bool:
    """Whether ``value`` is a 0-dim dense tensor or numpy array of a real dtype (floating or
    integer, not bool) with a value to read: ``torch.tensor(1e-3)``, ``x.max()`` or
    ``np.array(1e-3)`` counts as the number it holds, as ``np.float64(1e-3)`` does."""
    if isinstance(value, numpy.ndarray):
        return value.ndim == 0 and value.dtype.kind in "fiu"
    return (torch.is_tensor(value) and value.dim() == 0 and value.dtype != torch.bool
            and not value.is_complex() and not value.is_meta
            and value.layout == torch.strided)


def _tensor_as_number_message(value: torch.Tensor, name: str) -> str:
    """Why the tensor ``value`` is not one real number, naming ``name`` and what to pass."""
    if real_tensor(value):
        return (f"{name} must be a Python or NumPy real number here, got the 0-dim tensor "
                f"{value!r}: pass float({name})")
    return (f"{name} must be a single real number, got a tensor of shape {list(value.shape)} "
            f"({value.numel()} elements, {value.dtype}, {value.layout}): pass one number")


def check_number(value, name: str, minimum: float | None = None, positive: bool = False,
                 dtype: torch.dtype | None = None) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite real number (not a bool, not a
    string, not an integer beyond float range, not a tensor: :func:`as_number` takes a 0-dim
    one; a 0-dim numpy array counts as its number), ``> 0`` when ``positive``, ``>= minimum``
    when given, and, with ``dtype`` (the floating dtype it is computed in), within that
    dtype's range (:func:`check_in_range_of`)."""
    if torch.is_tensor(value):
        raise ValueError(_tensor_as_number_message(value, name))
    if isinstance(value, numpy.ndarray) and real_tensor(value):
        value = value.item()  # np.array(0.01): the number it holds (callers take float())
    if not finite_real(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if dtype is not None:
        check_in_range_of(value, name, dtype)


def as_number(value, name: str, minimum: float | None = None, positive: bool = False,
              dtype: torch.dtype | None = None) -> float:
    """``value`` as a Python ``float`` after :func:`check_number`'s checks; a 0-dim real
    tensor or numpy array (:func:`real_tensor`: ``x.max()``, a scheduler's
    ``torch.tensor(1e-3)``, ``np.array(0.1)``) counts as its ``float()``; a tensor of more
    elements is refused, naming ``name``."""
    if real_tensor(value):
        value = float(value)
    check_number(value, name, minimum, positive, dtype)
    return float(value)


def check_in_range_of(value, name: str, dtype: torch.dtype, hint: str = "") -> None:
    """Raise ``ValueError`` naming ``name`` when the finite real number ``value`` is infinite
    in the floating ``dtype`` (beyond its largest number, ``3.4e38`` for float32: ``1e39`` is
    a Python float but ``inf`` in the tensors it is computed with, where torch fails with
    "value cannot be converted to type float without overflow") or rounds to 0 there while
    it is not 0 (below ``1.4e-45`` for float32). ``hint`` ends the message (what to pass)."""
    info = torch.finfo(dtype)
    # on the CPU whatever device a torch.device(...) block makes the default (networks
    # built on "meta" to size them)
    stored = torch.tensor(float(value), dtype=torch.float64, device="cpu").to(dtype)
    if torch.isfinite(stored) and (value == 0 or stored != 0):
        return
    where = "beyond" if not torch.isfinite(stored) else "below"
    raise ValueError(f"{name}={value:g} is {where} the range of {dtype} (magnitudes "
                     f"{info.smallest_normal * info.eps:.3g} to {info.max:.3g}), a dtype it is "
                     f"computed in, where it is {float(stored):g}"
                     f"{'; ' + hint if hint else ''}")


def check_finite_tensor(value, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` and counting its NaN and infinite entries, or
    saying that it is a meta tensor (no values to check: :func:`check_not_meta`);
    ``TypeError`` for a sparse one (:func:`check_dense`)."""
    check_dense_values(value, name)
    if torch.is_tensor(value) and (value.is_floating_point() or value.is_complex()):
        bad = ~torch.isfinite(value)
        if bad.any():
            nan = int(torch.isnan(value).sum())
            raise ValueError(f"{name} (shape {list(value.shape)}) has {int(bad.sum())} "
                             f"non-finite values ({nan} NaN, {int(bad.sum()) - nan} infinite)")


def _named_arguments(args, kwargs=None) -> list[tuple[str, object]]:
    """``("argument 0", value)``, ..., ``("keyword argument 'x'", value)``: a call's arguments
    named as the error messages name them."""
    return [(f"argument {i}", a) for i, a in enumerate(args)] + [
        (f"keyword argument '{k}'", v) for k, v in (kwargs or {}).items()]


def rebuilt(container, items: list):
    """``container`` (a tuple, list or dict, or a subclass: a namedtuple, an ``OrderedDict``)
    with ``items`` in place of its values, of its own type where its constructor takes them
    (a namedtuple field by field), else a plain tuple, list or dict."""
    if isinstance(container, dict):
        pairs = list(zip(container.keys(), items))
        try:
            return type(container)(pairs)
        except (TypeError, ValueError):
            return dict(pairs)
    try:
        if hasattr(container, "_fields"):  # a namedtuple
            return type(container)(*items)
        return type(container)(items)
    except (TypeError, ValueError):
        return (tuple if isinstance(container, tuple) else list)(items)


def copied_arguments(args: tuple, kwargs: dict) -> tuple[tuple, dict, list]:
    """``(args, kwargs, copies)``: the arguments with every tensor cloned (top level and
    inside lists, tuples and dicts), and ``[(name, copy, its _version)]``, named as the error
    messages name arguments: a run on the copies leaves the caller's tensors untouched, and
    :func:`arguments_changed` tells whether it changed one in place."""
    copies = []

    def copy(value, name):
        if torch.is_tensor(value):
            with torch.inference_mode(False):  # an inference tensor keeps no version
                clone = value.clone()
            copies.append((name, clone, clone._version))
            return clone
        if isinstance(value, (tuple, list)):
            return rebuilt(value, [copy(v, f"{name}[{i}]") for i, v in enumerate(value)])
        if isinstance(value, dict):
            return rebuilt(value, [copy(v, f"{name}[{key!r}]") for key, v in value.items()])
        return value

    copied = [copy(value, name) for name, value in _named_arguments(args, kwargs)]
    return tuple(copied[:len(args)]), dict(zip(kwargs, copied[len(args):])), copies


def arguments_changed(copies: list) -> list[str]:
    """The names of :func:`copied_arguments`' copies changed in place since they were made."""
    return [name for name, tensor, version in copies if tensor._version != version]


def check_nonempty_batch(args, kwargs=None) -> None:
    """Raise ``ValueError`` when a tensor argument has a leading (data) dimension of size 0:
    an estimate over no datapoints has no value."""
    for name, value in _named_arguments(args, kwargs):
        if torch.is_tensor(value) and value.dim() >= 1 and value.shape[0] == 0:
            raise ValueError(f"{name} has no datapoints (shape {list(value.shape)}); "
                             "pass a batch of at least one")


def check_program(fn, name: str) -> None:
    """Raise ``TypeError`` unless ``fn`` is a callable Pyro program; a module without a
    ``forward`` (the whole ``PyroModule`` passed for its ``model`` method) is named."""
    if isinstance(fn, GuideMessenger):
        raise TypeError(
            f"{name} is a {type(fn).__name__}, an effect-based guide that runs the model under "
            "itself (its trace holds the model's observed sites): fit, SVIStep and the "
            "estimators take it (they trace its draws only), a compiled step does not (it "
            "traces methods of one module); use SVIStep, or fit without compile")
    if isinstance(fn, type):  # AutoNormal, not AutoNormal(model): calling it builds one
        raise TypeError(f"{name} is the class {fn.__name__}, not a {name}: pass an instance, "
                        f"e.g. {fn.__name__}(model) for an AutoGuide, or a function or "
                        "method")
    check_function(fn, name, f"its method, e.g. {name}=module.{name}")


def check_function(fn, name: str, instead: str) -> None:
    """Raise ``TypeError`` naming ``name`` unless ``fn`` is callable; a module without a
    ``forward`` (a whole ``PixelCNN`` passed for its ``log_prob``: callable, but calling it
    fails inside torch) is refused saying what to pass ``instead``."""
    if isinstance(fn, torch.nn.Module) and \
            type(fn).forward is torch.nn.Module.forward:
        raise TypeError(f"{name} is a {type(fn).__name__} module without forward(); pass "
                        f"{instead}")
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}")


def check_pair_arguments(model, guide, num_particles: int = 1) -> None:
    """``model`` and ``guide`` callable programs, ``num_particles`` a positive integer."""
    check_program(model, "model")
    check_program(guide, "guide")
    check_int(num_particles, "num_particles")


def check_no_inference_tensors(modules, refusal: type[ValueError] = ValueError,
                               buffers: str = "all") -> None:
    """Refuse networks whose parameters are inference tensors (built or loaded under
    ``torch.inference_mode()``): Pyro's param store cannot make them require gradients, and
    autograd cannot save them, so every pass would fail inside torch; ``refusal`` names the
    first such tensor and the fix. ``buffers``: ``"all"`` for the entry points that run
    gradients (autograd cannot save them either); ``"training"`` for passes without them,
    which read a buffer as a constant (a data mean made so passes) but update those of a
    layer in training mode in place (a batch norm's statistics)."""
    for module in modules:
        kinds = [("parameter", module.named_parameters())]
        if buffers == "all":
            kinds.append(("buffer", module.named_buffers()))
        elif buffers == "training":  # the statistics a norm layer updates in place
            kinds.append(("buffer", ((f"{name}.{buffer_name}" if name else buffer_name, b)
                                     for name, sub in module.named_modules()
                                     if sub.training and _tracks_running_stats(sub)
                                     for buffer_name, b in sub.named_buffers(recurse=False))))
        for kind, named in kinds:
            for name, tensor in named:
                if isinstance(tensor, torch.nn.parameter.UninitializedTensorMixin):
                    raise refusal(
                        f"{type(module).__name__}'s {kind} '{name}' is not initialized yet (a "
                        "lazy layer such as LazyLinear, whose shape comes from its first "
                        "input): run the network once on a batch, e.g. net(x[:1]), before "
                        "passing the pair")
                if tensor.is_inference():
                    raise refusal(
                        f"{type(module).__name__}'s {kind} '{name}' is an inference tensor: "
                        "the network was built or loaded inside torch.inference_mode(), and "
                        "such tensors can neither require gradients nor be saved for them. "
                        "Build or load it outside (torch.no_grad() is enough to skip "
                        "gradients), or make plain copies: for p in net.parameters(): "
                        "p.data = p.data.clone() (outside inference_mode)")


def anomaly_found_nan(error: BaseException) -> bool:
    """Whether ``error`` is torch's report, under ``set_detect_anomaly(True)``, of a backward
    function that returned NaN (a divergence the caller names as its own)."""
    return isinstance(error, RuntimeError) and bool(_ANOMALY_NAN.search(str(error)))


_ANOMALY_NAN = re.compile(r"Function '\w+' returned nan values")


def physical_memory_bytes() -> int | None:
    """This machine's total physical memory in bytes (``os.sysconf``), None where the
    platform does not report it. Read afresh at each call (tests patch it by name)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_weights_memory(num_samples: int, batch_size: int, itemsize: int,
                         name: str = "num_samples") -> None:
    """Raise ``ValueError`` when ``[num_samples, batch_size]`` log weights of ``itemsize``
    bytes each would not fit in this machine's total physical memory (unchecked where it is
    not reported), naming the count as ``name``. A sanity bound only: the weights alone, not
    the particles scored beside them, nor a GPU's own memory."""
    total = physical_memory_bytes()
    # in Python ints: a numpy or tensor count (np.int64(2**61)) wrapped around in int64
    num_samples, batch_size, itemsize = int(num_samples), int(batch_size), int(itemsize)
    need = num_samples * batch_size * itemsize
    if total is not None and need > total:
        raise ValueError(
            f"{name}={num_samples} particles for {batch_size} datapoints: the "
            f"[{name}, batch] log weights alone need {need:,} bytes "
            f"({need / 2 ** 30:.3g} GiB, {itemsize} bytes each), more than this machine's "
            f"{total:,} bytes of memory; lower {name} or score fewer datapoints at a time")


def _holds_tensor(value) -> bool:
    """Whether ``value`` is a tensor or a list, tuple or dict holding one (at any depth)."""
    if isinstance(value, (list, tuple)):
        return any(_holds_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_tensor(v) for v in value.values())
    return torch.is_tensor(value)


def check_not_meta(value, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` when ``value`` is a tensor on the ``meta`` device:
    it has a shape and dtype but no values, so nothing can be computed from it (torch fails
    later with "Tensor.item() cannot be called on meta tensors")."""
    if torch.is_tensor(value) and value.is_meta:
        raise ValueError(f"{name} is a meta tensor (shape {list(value.shape)}, {value.dtype}): "
                         "it has a shape but no values; create it on a real device (cpu, "
                         "cuda), e.g. torch.zeros(shape) or tensor.to_empty(device='cpu') and "
                         "fill it")


def check_tensor_input(value, name: str) -> None:
    """Raise for an argument that should be a tensor but is a numpy array (``TypeError``
    saying to pass ``torch.as_tensor(...)``: the dtype-only message read "must be a floating
    tensor, got float32") or a tensor without dense values (:func:`check_dense_values`);
    anything else passes (the caller checks its type, dtype and shape)."""
    if isinstance(value, numpy.ndarray):
        raise TypeError(f"{name} is a numpy array (shape {list(value.shape)}, {value.dtype}); "
                        f"pass a tensor: torch.as_tensor({name})")
    check_dense_values(value, name)


def check_dense_values(value, name: str) -> None:
    """Raise for a tensor ``value`` whose values cannot be read as a dense array: a meta
    tensor (``ValueError``, :func:`check_not_meta`) or a sparse one (``TypeError``,
    :func:`check_dense`), naming ``name``; anything else passes (the caller checks its type)."""
    check_not_meta(value, name)
    check_dense(value, name)


def check_dense(value, name: str) -> None:
    """Raise ``TypeError`` naming ``name`` when ``value`` is a sparse, nested, quantized or
    masked tensor: Pyro's distributions and torch's checks score plain strided tensors only
    (torch fails deep inside with "Could not run 'aten::ne.Scalar' ... SparseCPU", or
    "Internal error: NestedTensorImpl doesn't support sizes")."""
    if not torch.is_tensor(value):
        return
    if value.is_nested:
        raise TypeError(f"{name} is a nested tensor (rows of different lengths): the models "
                        "score one tensor per batch; pad the rows to one length and pass a "
                        "mask (poutine.mask or obs_mask), or score each length apart")
    if isinstance(value, torch.masked.MaskedTensor):
        raise TypeError(f"{name} is a torch.masked.MaskedTensor: the models score plain "
                        "tensors; pass its data (x.get_data()) and its mask to the model "
                        "(poutine.mask or obs_mask)")
    if value.is_quantized:
        raise TypeError(f"{name} is a quantized tensor ({value.dtype}): the models score "
                        "floating or integer tensors; pass x.dequantize()")
    if value.layout != torch.strided:
        raise TypeError(f"{name} is a sparse tensor ({value.layout}, shape "
                        f"{list(value.shape)}): the models score dense tensors; pass "
                        "x.to_dense()")


def tensors_in(value, name: str, depth: int = 0):
    """``(path, tensor)`` for ``value`` itself when a tensor, or for each tensor inside a list,
    tuple or dict, a few levels deep (``"argument 0['x'][1]"``)."""
    if torch.is_tensor(value):
        yield name, value
        return
    if depth > 4:
        return
    if isinstance(value, (list, tuple)):
        items = ((f"{name}[{i}]", v) for i, v in enumerate(value))
    elif isinstance(value, dict):
        items = ((f"{name}[{k!r}]", v) for k, v in value.items())
    else:
        return
    for inner, v in items:
        yield from tensors_in(v, inner, depth + 1)


def check_default_device() -> None:
    """Raise ``ValueError`` while ``torch.set_default_device("meta")`` is in effect: every
    tensor made without a device (the models' constants, the checks' masks) would hold no
    values."""
    if torch.get_default_device().type == "meta":
        raise ValueError("torch.set_default_device('meta') is in effect: the tensors a model "
                         "or the library makes without a device would hold no values; set the "
                         "data's device as the default (or torch.set_default_device(None)) "
                         "before the call")


def check_data_arguments(args, kwargs=None) -> None:
    """Raise ``ValueError`` naming an argument that is (or holds, inside a list, tuple or
    dict) a meta tensor (:func:`check_not_meta`: no values to score), ``TypeError`` for a
    sparse one (:func:`check_dense`), and ``TypeError`` when
    no argument holds a tensor but one is a list, tuple or string: the data the model
    observes must be a tensor (Pyro's distributions score tensors). Numbers, strings and None
    beside tensor data, and calls without arguments (data the model holds itself), pass."""
    check_default_device()
    named = _named_arguments(args, kwargs)
    for name, value in named:
        _check_not_a_container_of_batches(value, name)
        for path, tensor in tensors_in(value, name):
            check_not_meta(tensor, path)
            check_dense(tensor, path)
    if any(_holds_tensor(value) for _, value in named):
        return
    for name, value in named:
        if isinstance(value, (list, tuple, str, bytes)):
            raise TypeError(f"{name} is a {type(value).__name__} and no argument is a tensor: "
                            "the data the model observes must be a tensor, e.g. "
                            "torch.tensor(values, dtype=torch.get_default_dtype())")


def _check_not_a_container_of_batches(value, name: str) -> None:
    """``TypeError`` naming ``name`` for a ``DataLoader``, a ``TensorDataset`` or a pandas
    object: what a PyTorch or pandas user has in hand, which a model cannot score (it failed
    inside the user's code or inside pandas)."""
    from torch.utils.data import DataLoader, TensorDataset

    if isinstance(value, DataLoader):
        raise TypeError(f"{name} is a DataLoader: the pair scores one batch of tensors; pass "
                        "the tensors (loader.dataset.tensors), or call once per batch of the "
                        "loader")
    if isinstance(value, TensorDataset):
        raise TypeError(f"{name} is a TensorDataset: pass its tensors, *dataset.tensors")
    if isinstance(value, types.GeneratorType):
        raise TypeError(f"{name} is a generator: pass a tensor, e.g. torch.stack(list(...))")
    if type(value).__module__.split(".")[0] == "pandas" and \
            type(value).__name__ in ("DataFrame", "Series"):
        raise TypeError(f"{name} is a pandas {type(value).__name__}: pass a tensor, "
                        "torch.tensor(frame.to_numpy(), dtype=torch.get_default_dtype())")


def check_generator(generator, device: torch.device, name: str = "generator") -> None:
    """Raise ``ValueError`` unless ``generator`` is None or a ``torch.Generator`` on
    ``device``'s type (cpu, cuda, ...), where the random draws are made."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"{name} must be a torch.Generator or None, got "
                         f"{type(generator).__name__}")
    if torch.device(generator.device).type != torch.device(device).type:
        raise ValueError(f"{name} is on {generator.device} but the draws are made on {device}; "
                         f"pass torch.Generator(device={str(device)!r})")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None picks CUDA when available, else CPU; else a CPU or CUDA device as
    given (other kinds, e.g. ``"meta"``, are refused)."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device, "
                         f"got {device!r}") from error
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got '{device}': "
                         "only CPU and CUDA devices are supported")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' was requested but torch sees no CUDA device")
    if device.type == "cuda" and device.index is not None and \
            device.index >= torch.cuda.device_count():
        raise RuntimeError(f"device '{device}' was requested but torch sees "
                           f"{torch.cuda.device_count()} CUDA device(s), cuda:0 .. "
                           f"cuda:{torch.cuda.device_count() - 1}")
    return device


def check_model_tensor(model, value: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` when the floating tensor ``value`` and ``model``'s parameters differ
    in dtype or device (naming both); a model without ``parameters()``, or without any, passes."""
    parameters = getattr(model, "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    if first is None:
        return
    if value.dtype != first.dtype:
        raise ValueError(f"{name} is {value.dtype} but the model's parameters are "
                         f"{first.dtype}; convert one to the other (e.g. {name}.to("
                         f"{first.dtype}) or model.to({value.dtype}))")
    if value.device != first.device:
        raise ValueError(f"{name} is on {value.device} but the model's parameters are on "
                         f"{first.device}")


# what other libraries call the estimators' arguments (Pyro's ELBOs: num_particles)
OTHER_NAMES = {"num_particles": "num_samples", "K": "num_samples", "Ks": "num_samples"}


def _keywords_taken(program) -> tuple[set[str], bool] | None:
    """The keyword names ``program`` declares and whether it takes ``**kwargs``; None when
    its signature (:func:`program_signature`) cannot be read."""
    signature = program_signature(program)
    if signature is None:
        return None
    parameters = signature.parameters.values()
    named = {p.name for p in parameters
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return named, any(p.kind == p.VAR_KEYWORD for p in parameters)


def check_positional_call(program, role: str, count: int, called: str, instead: str) -> None:
    """Raise ``TypeError`` when ``program`` (the pair's ``role``) cannot be called with
    ``count`` positional arguments, as ``called`` calls it: a keyword-only ``def model(*,
    x)`` or one that requires more (``def model(x, y)``) failed inside Pyro's trace,
    naming neither. ``instead`` says what to call. Unchecked when the signature cannot be
    read."""
    signature = program_signature(program)
    if signature is None:
        return
    try:
        signature.bind(*range(count))
    except TypeError as error:
        raise TypeError(f"{called} calls the {role} with {count} positional argument"
                        f"{'s' if count != 1 else ''}, which its signature {signature} does "
                        f"not take ({error}): {instead}") from None


def program_signature(program) -> inspect.Signature | None:
    """The signature ``program`` is called with: a wrapper's own (``functools.wraps`` copies
    the wrapped function's, which a decorator that adds or drops arguments does not take),
    except Pyro's ``pyro_method`` wrapper, ``(*args, **kwargs)`` passed on unchanged, read
    through to the method's; None when it cannot be read."""
    try:
        signature = inspect.signature(program, follow_wrapped=False)
        code = getattr(getattr(program, "__func__", program), "__code__", None)
        if code is not None and code.co_name == "cached_fn" and \
                code.co_filename == pyro.nn.module.__file__:
            # one layer: the function pyro_method wraps, itself perhaps another decorator's
            # wrapper that adds or drops arguments (its own signature is the one called)
            wrapped = getattr(program, "__func__", program).__wrapped__
            signature = inspect.signature(wrapped, follow_wrapped=False)
            if hasattr(program, "__self__"):  # bound: without self
                signature = signature.replace(
                    parameters=list(signature.parameters.values())[1:])
    except (TypeError, ValueError):
        return None
    return signature


def check_program_arguments(program, role: str, args: tuple, kwargs: dict, called: str,
                            instead: str) -> None:
    """``TypeError`` naming the data when ``program`` (the pair's ``role``, its signature as
    :func:`program_signature` reads it) cannot take ``args`` and ``kwargs``, as ``called``
    passes them (``posterior_means(vae.guide)`` failed inside Pyro, "missing 1 required
    positional argument"); ``instead`` says what to pass. Unchecked when the signature
    cannot be read."""
    signature = program_signature(program)
    if signature is None:
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as error:
        raise TypeError(f"{called} passes its data to the {role}, whose signature {signature} "
                        f"does not take {len(args)} positional and {len(kwargs)} keyword "
                        f"argument(s) ({error}): {instead}") from None


def check_one_program_call(entry, role: str, args: tuple) -> None:
    """Raise ``TypeError`` when ``entry(program, *args)``, which takes one Pyro program (its
    ``role``: ``"model"`` or ``"guide"``), got a callable as its first data argument: the
    call was written for a pair, ``entry(model, guide, x)``, and the second program would
    otherwise reach the first as its data (failing inside the user's code, or worse)."""
    if args and callable(args[0]) and not torch.is_tensor(args[0]):
        found = getattr(args[0], "__name__", type(args[0]).__name__)
        raise TypeError(f"{entry.__name__}({role}, *args) takes the {role} alone: argument 0 is "
                        f"a callable ({found}), not data; call {entry.__name__}({role}, x)")


def check_site_name(site, entry: str) -> None:
    """``TypeError`` naming ``entry`` unless ``site`` is a site's name (a str): a list or None
    named nothing ("unhashable type", "no latent site 'None'")."""
    if not isinstance(site, str):
        raise TypeError(f"{entry}: site must be the name of a latent site (a str such as "
                        f"'z'), got {site!r}")


def check_pair_keywords(entry, kwargs: dict, **programs) -> None:
    """Raise ``TypeError`` for a keyword argument of ``entry`` (an estimator that passes the
    keywords it does not know on to the pair) that one of ``programs`` (e.g. ``model=...,
    guide=...``) does not take, or that the programs take only through ``**kwargs`` while
    it is close to a name of ``entry``'s own: ``num_sample=100`` would reach the pair and
    leave ``num_samples`` at its default, a silently different estimate."""
    if not kwargs:
        return
    own = [name for name, p in inspect.signature(entry).parameters.items()
           if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in programs]
    taken = {role: _keywords_taken(program) for role, program in programs.items()}
    for key in kwargs:
        close = difflib.get_close_matches(key, own, n=1, cutoff=0.75) or [
            name for name in [OTHER_NAMES.get(key)] if name in own]
        hint = f"; did you mean {close[0]}=?" if close else ""
        refusing = [role for role, t in taken.items()
                    if t is not None and key not in t[0] and not t[1]]
        if refusing:
            raise TypeError(
                f"{entry.__name__}() got keyword argument '{key}', which is not one of its "
                f"own ({', '.join(own)}) and which the {' and '.join(refusing)} does not "
                f"take (keywords {entry.__name__} does not know are passed to the pair)"
                f"{hint}")
        declared = any(t is None or key in t[0] for t in taken.values())
        if close and not declared:
            raise TypeError(
                f"{entry.__name__}() got keyword argument '{key}', which only the pair's "
                f"**kwargs would take{hint} (declare '{key}' in the model's or guide's "
                "signature to pass it to the pair on purpose)")


@contextlib.contextmanager
def validation_enabled(flag: bool = True):
    """``pyro.validation_enabled(flag)`` that leaves torch's default ``validate_args`` as it
    found it: Pyro's block sets both and restores torch's to Pyro's own flag, so a user who
    had turned one off without the other got it changed behind their back by any call."""
    torch_default = torch.distributions.Distribution._validate_args
    try:
        with pyro.validation_enabled(flag):
            yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(torch_default)


def validation_on() -> bool:
    """Whether distributions built now validate their values: Pyro's validation flag and
    torch's default ``validate_args`` both on (a user may turn off either)."""
    return is_validation_enabled() and torch.distributions.Distribution._validate_args


def autograd_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``, or an ordinary copy of one made under ``torch.inference_mode()``, which
    autograd cannot save for backward ("Inference tensors cannot be saved for backward")."""
    if tensor.is_inference():
        with torch.inference_mode(False):
            return tensor.clone()
    return tensor


@contextlib.contextmanager
def recording_autograd():
    """Autograd records inside the block, also under ``torch.inference_mode()``, where
    ``torch.enable_grad()`` alone builds no graph: for the checks that read one (which
    latents a guide's draw depends on), whatever context the caller evaluates in. Pass
    the arguments through :func:`autograd_arguments`."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def autograd_arguments(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """``args`` and ``kwargs`` with every tensor passed through :func:`autograd_tensor`
    (inside tuples, lists and dicts), for entry points that differentiate (AIS's moves, a
    local guide's fit). A container without an inference tensor is passed as it is (a
    namedtuple, a dict subclass keep their type)."""
    def plain(value):
        if torch.is_tensor(value):
            return autograd_tensor(value)
        if isinstance(value, (tuple, list, dict)):
            items = value.values() if isinstance(value, dict) else value
            copies = [plain(v) for v in items]
            if all(a is b for a, b in zip(copies, items)):
                return value
            return rebuilt(value, copies)
        return value

    return plain(tuple(args)), plain(dict(kwargs))


def drops_out(module: torch.nn.Module) -> bool:
    """Whether ``module`` itself draws a dropout mask in training mode: a dropout layer, or a
    recurrent layer with dropout between its layers (``nn.GRU(num_layers=2, dropout=0.5)``)."""
    return (isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p > 0) or (
        isinstance(module, torch.nn.RNNBase) and module.dropout > 0 and module.num_layers > 1)


def training_mode_layers(module: torch.nn.Module, training: bool = True) -> list[str]:
    """``"BatchNorm1d at encoder.1"`` for each submodule of ``module`` in training mode (in
    evaluation mode with ``training=False``) whose output depends on the mode: batch norm
    tracking running statistics, dropout with ``p > 0``, recurrent layers with dropout
    between layers."""
    found = []
    for name, sub in module.named_modules():
        if sub.training != training:
            continue
        if _tracks_running_stats(sub):
            found.append(f"{type(sub).__name__} at {name or 'the top'}")
        elif drops_out(sub):
            rate = f"p={sub.p}" if hasattr(sub, "p") else f"dropout={sub.dropout}"
            found.append(f"{type(sub).__name__}({rate}) at {name or 'the top'}")
    return found


# Pyro handlers around a call of an entry point that leave its runs of the pair alone: a
# block hides the runs' sites from outer handlers, a seed sets the random state, a trace of
# parameters only (param_only=True) records nothing of the samples, a scale
# multiplies the densities (training scales its loss; the estimators score unscaled, as
# their docstrings say); the training handlers of inference.training.handlers say so with
# ``value_neutral``.
_NEUTRAL_HANDLERS = (pyro.poutine.block_messenger.BlockMessenger,
                     pyro.poutine.seed_messenger.SeedMessenger,
                     pyro.poutine.scale_messenger.ScaleMessenger)


def check_outer_handlers(called: str, scales: bool = True) -> None:
    """``ValueError`` naming the first active Pyro handler around a call of ``called`` (a
    ``pyro.plate``, ``poutine.trace``, ``condition``, ``mask``, ...) other than the neutral
    ones: the entry points run the pair many times under handlers of their own, and an outer
    one records, conditions or broadcasts all of those runs together. With ``scales`` False
    a scale is refused too, a user's ``poutine.scale`` or the training handlers
    (``scale_data_plate``, ``scale_latents``): ``fit`` scales the data plate and the latents
    itself and reports nats per datapoint."""
    for handler in _PYRO_STACK:
        scaling = type(handler) is pyro.poutine.scale_messenger.ScaleMessenger \
            or getattr(handler, "value_neutral", False)
        if not scales and scaling:
            raise ValueError(
                f"{called} was called inside {type(handler).__name__}, which scales log "
                "densities: it scales the data plate (N / batch size) and the latents "
                "(kl_warmup_epochs) itself and reports nats per datapoint, which the outer "
                "scale would change; call it outside (for a tempered likelihood, put "
                "poutine.scale inside the model)")
        if isinstance(handler, _NEUTRAL_HANDLERS) or getattr(handler, "value_neutral", False) \
                or getattr(handler, "param_only", False):  # a trace of parameters only
            continue
        kind = type(handler).__name__
        name = getattr(handler, "name", None)
        shown = f"pyro.plate('{name}')" if isinstance(
            handler, pyro.poutine.indep_messenger.IndepMessenger) else kind
        raise ValueError(
            f"{called} was called inside an active Pyro handler ({shown}): it runs the pair "
            "many times under handlers of its own, which the outer one would record, "
            "condition or broadcast together. Call it outside any pyro.plate or poutine "
            "context; to condition or mask the model, wrap the model itself "
            "(poutine.condition(model, data={...}))")


def _is_count(value) -> bool:
    """A plain int (not a bool), or a non-empty list or tuple of them: how a number of
    samples, chains or steps is written."""
    if isinstance(value, (list, tuple)):
        return bool(value) and all(_is_count(v) and not isinstance(v, (list, tuple))
                                   for v in value)
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def warn_count_passed_to_pair(entry, args: tuple, **programs) -> None:
    """Warn when a positional argument after the first (the data) is a count (an int, or a
    list of ints) that lands in a program's parameter with a default: ``elbo(model, guide,
    x, 1000)`` for a ``model(x, scale=0.5)`` meant ``num_samples=1000`` and scored the
    model at ``scale=1000``, silently. ``entry``'s counts are keyword-only, so the warning
    names them; a count meant for the pair is passed by keyword to silence it."""
    counted = [(index, value) for index, value in enumerate(args) if index and _is_count(value)]
    if not counted:
        return
    own = [name for name, parameter in inspect.signature(entry).parameters.items()
           if parameter.kind == parameter.KEYWORD_ONLY and name.startswith("num_")]
    positionals = {}
    for role, program in programs.items():
        signature = program_signature(program)
        if signature is not None:
            positionals[role] = [p for p in signature.parameters.values()
                                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for role, positional in positionals.items():
        for index, value in counted:
            if index >= len(positional) or any(
                    index < len(other) and other[index].default is other[index].empty
                    for other in positionals.values()):
                continue  # a parameter some program requires: the count is meant for it
            name, default = positional[index].name, positional[index].default
            meant = " or ".join(f"{n}={value!r}" for n in own[:2])
            warnings.warn(
                f"{entry.__name__}: argument {index} ({value!r}) is passed to the {role}'s "
                f"parameter '{name}' (default {default!r})"
                + (f"; {entry.__name__}'s own counts are keywords: did you mean {meant}?"
                   if meant else "")
                + f" Pass {name}={value!r} by keyword when it is meant for the {role}",
                stacklevel=user_stacklevel())
            return


def check_pair_call(entry, kwargs: dict, args: tuple = (), **programs) -> None:
    """How ``entry`` (an estimator that passes the keywords it does not know on to the pair)
    is about to call ``programs`` (e.g. ``model=..., guide=...``) with ``args`` and
    ``kwargs``: no Pyro handler around the call (:func:`check_outer_handlers`),
    :func:`check_pair_keywords`, :func:`warn_count_passed_to_pair`, then a warning when a
    module a program reaches (:func:`inference.reachable.reachable_modules`: its owner, or
    networks a plain function registers with ``pyro.module``) is in training mode with
    layers that make the estimate depend on it (:func:`training_mode_layers`)."""
    check_outer_handlers(entry.__name__)
    check_pair_keywords(entry, kwargs, **programs)
    warn_count_passed_to_pair(entry, args, **programs)
    owners = {}  # id -> (module, the roles it owns)
    for role, program in programs.items():
        for owner in reachable_modules(program):
            owners.setdefault(id(owner), (owner, []))[1].append(role)
    for owner, roles in owners.values():
        layers = training_mode_layers(owner)
        if layers:
            shown = ", ".join(layers[:4]) + (" ..." if len(layers) > 4 else "")
            warnings.warn(
                f"{entry.__name__}: {type(owner).__name__} (of the {' and '.join(roles)}) is "
                f"in training mode with {shown}: the estimate then uses batch statistics or "
                "random dropout masks (the running statistics are put back after it); call "
                ".eval() on it first (modules are in training mode until told otherwise, also "
                "after fit)",
                stacklevel=user_stacklevel())


PROGRAM_ARGUMENTS = ("model", "guide", "local_guide")

class _PyroLock:
    """A reentrant lock that its holder can hand over while it waits on the user's code:
    :meth:`released` lets go of every level the thread holds and takes them back after."""

    def __init__(self):
        self._condition = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0

    def __enter__(self):
        me = threading.get_ident()
        with self._condition:
            while self._owner not in (None, me):
                self._condition.wait()
            self._owner, self._depth = me, self._depth + 1
        return self

    def __exit__(self, *exc):
        with self._condition:
            self._depth -= 1
            if not self._depth:
                self._owner = None
                self._condition.notify_all()

    @contextlib.contextmanager
    def released(self):
        """While the body runs (a user's callback), other threads may take the lock: one
        the callback starts and waits for (an estimator in a worker thread) runs then."""
        me = threading.get_ident()
        with self._condition:
            if self._owner != me:  # not held here: nothing to hand over
                depth = 0
            else:
                depth, self._owner, self._depth = self._depth, None, 0
                self._condition.notify_all()
        try:
            yield
        finally:
            if depth:
                with self._condition:
                    while self._owner is not None:
                        self._condition.wait()
                    self._owner, self._depth = me, depth


# Pyro keeps one handler stack for the whole process (pyro.poutine.runtime._PYRO_STACK), so
# two threads running Pyro programs at once interleave their handlers: each sees the other's
# traces and plates, and one may pop the other's handler. The entry points take this lock
# for their whole run (reentrant: a fit callback may call an estimator; fit hands it over
# while its callback runs, whose worker threads may then call estimators), so calls from
# several threads run one after another and each gives what it gives alone.
PYRO_LOCK = _PyroLock()


_HELD_ELSEWHERE_AT_FORK = threading.local()


def _note_lock_before_fork() -> None:
    _HELD_ELSEWHERE_AT_FORK.value = PYRO_LOCK._owner not in (None, threading.get_ident())


def _free_lock_in_child() -> None:
    """A process forked while another thread held the lock starts with it free (the thread
    does not exist in the child, which would wait for good). Pyro's state of that thread's
    run is copied too: the child's entry points refuse its handlers by name."""
    if getattr(_HELD_ELSEWHERE_AT_FORK, "value", False):
        PYRO_LOCK.__init__()


os.register_at_fork(before=_note_lock_before_fork, after_in_child=_free_lock_in_child)


# what Pyro's trace appends to an error raised before the program reached any site
EMPTY_SHAPES_TABLE = "Trace Shapes:\n Param Sites:\nSample Sites:"


@contextlib.contextmanager
def empty_shapes_tables_dropped():
    """Re-raise an error that Pyro's trace re-raised with an empty shapes table appended (the
    program failed before any site, e.g. a model's check of its input: the table adds three
    lines of nothing to the message) as the program's own error."""
    try:
        yield
    except (ValueError, RuntimeError) as error:
        cause = error.__cause__
        if type(cause) is type(error) and str(error) == f"{cause}\n{EMPTY_SHAPES_TABLE}":
            raise cause from None
        raise


def one_thread_at_a_time(entry):
    """``entry`` holding :data:`PYRO_LOCK` while it runs (its errors as
    :func:`empty_shapes_tables_dropped` raises them)."""
    @functools.wraps(entry)
    def locked(*args, **kwargs):
        with PYRO_LOCK, empty_shapes_tables_dropped():
            return entry(*args, **kwargs)
    return locked


def leaves_buffers(entry):
    """``entry`` (an estimator whose programs are its ``model``, ``guide`` or
    ``local_guide`` argument) with the buffers that its runs of the programs move put back
    after it, also when it raises: an estimate reads the networks and must not update a
    training-mode batch norm's running statistics, which a later evaluation-mode use would
    then see (:func:`_buffers_put_back`). An effect-based guide (``AutoNormalMessenger``)
    reaches ``entry`` as a function that traces its draws only
    (:func:`inference.effect_guides.traceable_guide`)."""
    signature = inspect.signature(entry)

    @functools.wraps(entry)
    def keeping(*args, **kwargs):
        try:
            bound = signature.bind_partial(*args, **kwargs)
        except TypeError:  # the call itself is wrong: the estimator says how
            return entry(*args, **kwargs)
        for name in ("guide", "local_guide"):
            if name in bound.arguments:
                bound.arguments[name] = traceable_guide(bound.arguments[name])
        programs = [bound.arguments[name] for name in PROGRAM_ARGUMENTS
                    if name in bound.arguments]
        modules = reachable_modules(*programs)
        with PYRO_LOCK, _buffers_put_back(entry.__name__, modules), \
                kept_plate_caches(modules), empty_shapes_tables_dropped():
            return entry(*bound.args, **bound.kwargs)
    return keeping


def in_evaluation_mode(*names: str):
    """Decorate an entry point so that the networks its arguments ``names`` reach (a VAE, a
    ``log_prob`` method) run in evaluation mode inside it, each module's flag put back
    after it: a coder or a Markov chain needs one fixed density, and dropout left on by
    training drew a new mask at every evaluation (bits-back wrote bytes no decoder could
    read; a Metropolis chain targeted a randomly masked density)."""
    def decorate(entry):
        signature = inspect.signature(entry)

        @functools.wraps(entry)
        def evaluating(*args, **kwargs):
            if _EVALUATING.get():  # inside another such entry point (a chain's steps)
                return entry(*args, **kwargs)
            try:
                bound = signature.bind_partial(*args, **kwargs)
            except TypeError:  # the call itself is wrong: the entry point says how
                return entry(*args, **kwargs)
            given = [bound.arguments[name] for name in names if name in bound.arguments]
            modules = [value for value in given if isinstance(value, torch.nn.Module)]
            modules += reachable_modules(*(value for value in given
                                           if not isinstance(value, torch.nn.Module)))
            token = _EVALUATING.set(True)
            try:
                with PYRO_LOCK, _shared_evaluation_mode(modules), \
                        empty_shapes_tables_dropped():
                    return entry(*args, **kwargs)
            finally:
                _EVALUATING.reset(token)
        return evaluating
    return decorate


# Set inside an entry point of :func:`in_evaluation_mode`: the ones it calls skip the work.
_EVALUATING = contextvars.ContextVar("in_evaluation_mode", default=False)
# id(submodule) -> [calls inside, its training flag before the first, submodule]: calls that
# overlap in threads, on one network or on nested ones, put each flag back once, when the
# last call holding that submodule leaves
_EVALUATED: dict = {}
_EVALUATED_LOCK = threading.Lock()


@contextlib.contextmanager
def _shared_evaluation_mode(modules):
    """:func:`evaluation_mode` for calls that may overlap in threads on one network (or on a
    network and its parts): per submodule, the first call in saves its flag, the last one
    out puts it back."""
    subs = list({id(sub): sub for module in modules for sub in module.modules()}.values())
    with _EVALUATED_LOCK:
        for sub in subs:
            held = _EVALUATED.get(id(sub))
            if held is None:
                _EVALUATED[id(sub)] = [1, sub.training, sub]
                sub.training = False
            else:
                held[0] += 1
    try:
        yield
    finally:
        with _EVALUATED_LOCK:
            for sub in subs:
                held = _EVALUATED[id(sub)]
                held[0] -= 1
                if held[0] == 0:
                    sub.training = held[1]
                    del _EVALUATED[id(sub)]


def _tracks_running_stats(module: torch.nn.Module) -> bool:
    """A norm layer with running statistics: torch's, or Pyro's ``BatchNorm`` flow transform
    (its training-mode log-Jacobian uses the spread of the draws over their leading dim, so
    an estimate depends on the batch and on K, and its inverse moves its statistics)."""
    return ((isinstance(module, torch.nn.modules.batchnorm._NormBase)
             and module.track_running_stats)
            or isinstance(module, pyro.distributions.transforms.BatchNorm))


@contextlib.contextmanager
def _buffers_put_back(entry_name: str, modules):
    """Inside the block an estimator runs ``modules``; after it, the buffers of their
    training-mode submodules are as before: a norm layer's running statistics are copied
    first and put back (they are small); any other buffer is only watched, put back when
    the run replaced it (the old tensor is intact) and warned about, by name, when the run
    changed it in place (its version counter moved): copying every buffer of every module
    in training mode, the default, cost a 400 MB buffer 0.2 s per call."""
    kept, watched = [], []
    for module in modules:
        for sub in module.modules():
            if not sub.training:
                continue
            for name, buffer in sub.named_buffers(recurse=False):
                if buffer is None or buffer.is_inference():
                    continue
                if _tracks_running_stats(sub):
                    kept.append((sub, name, buffer, buffer.detach().clone()))
                else:
                    watched.append((sub, name, buffer, buffer._version))
    try:
        yield
    finally:
        moved = []
        with torch.no_grad():
            for sub, name, buffer, value in kept:
                buffer.copy_(value)
                if getattr(sub, name) is not buffer:
                    setattr(sub, name, buffer)
            for sub, name, buffer, version in watched:
                if getattr(sub, name) is not buffer:
                    setattr(sub, name, buffer)
                elif buffer._version != version:
                    moved.append(f"{type(sub).__name__}.{name}")
        if moved:
            warnings.warn(
                f"{entry_name}: the run changed buffer(s) {', '.join(sorted(set(moved))[:4])} "
                "in place, in modules in training mode; an estimate should not move a "
                "network's state: call .eval() on it first, or keep such updates to training",
                stacklevel=user_stacklevel())


@contextlib.contextmanager
def evaluation_mode(modules):
    """``modules`` (and all their submodules) in evaluation mode inside the block; each
    submodule's own flag is put back after it."""
    flags = [(sub, sub.training) for module in modules for sub in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for sub, flag in flags:
            sub.training = flag


# torch's refusal of mixed dtypes ("mat1 and mat2 must have the same dtype", "Input type
# (double) and bias type (float) should be the same")
_DTYPE_CLASH = re.compile(r"dtype|double|float|half", re.IGNORECASE)
# torch's names of scalar types in its messages ("expected m1 and m2 to have the same dtype,
# but got: long int != float")
_TORCH_TYPE_NAMES = {"Long": torch.int64, "Int": torch.int32, "Short": torch.int16,
                     "Char": torch.int8, "Byte": torch.uint8, "Bool": torch.bool}
# torch's refusal of an index tensor of another dtype (int16, uint8, float)
_INDEX_DTYPE = re.compile(r"Expected dtype int(32|64) or int(32|64) for index|"
                          r"tensors used as indices must be long, int, byte or bool")


def _program_code(program):
    """The code object a call of ``program`` runs (function, bound method, partial, module's
    ``forward`` or callable object's ``__call__``), None when there is none to find."""
    program = getattr(program, "func", program)  # functools.partial
    program = getattr(program, "__func__", program)  # bound method
    code = getattr(program, "__code__", None)
    if code is None:
        call = getattr(type(program), "forward" if isinstance(program, torch.nn.Module)
                       else "__call__", None)
        code = getattr(call, "__code__", None)
    return code


def _failing_program(error: BaseException, programs: dict):
    """``(role, frame summary)`` of the innermost frame of ``error``'s traceback that runs one
    of ``programs`` (role -> program), None when none does."""
    codes = {_program_code(p): role for role, p in programs.items()}
    found, tb = None, error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code in codes:
            found = (codes[tb.tb_frame.f_code], tb)
        tb = tb.tb_next
    if found is None:
        return None
    role, tb = found
    return role, traceback.extract_tb(tb, limit=1)[0]


# Pyro's message for a site whose batch shape disagrees with an enclosing plate.
_PLATE_MISMATCH = re.compile(
    r"Shape mismatch inside plate\('([^']*)'\) at site (\S+) dim -?\d+, (\d+) vs (\d+)")


def _note_stale_rows(error: BaseException) -> bool:
    """Add a note to Pyro's "Shape mismatch inside plate" ``error`` when parameters in Pyro's
    param store have as many rows as the failing site and not the plate's: one row per
    datapoint, created on other data and kept by the store (``pyro.param`` returns the stored
    value whatever initial value is passed). Whether it added one."""
    found = _PLATE_MISMATCH.match(str(error)) if isinstance(error, ValueError) else None
    if found is None:
        return False
    plate, site, size, rows = found.group(1), found.group(2), int(found.group(3)), \
        int(found.group(4))
    stale = [name for name, value in pyro.get_param_store().items()
             if torch.is_tensor(value) and value.dim() and value.shape[0] == rows != size]
    if stale:
        error.add_note(
            f"pyro.param {', '.join(map(repr, stale[:4]))} in Pyro's param store "
            f"{'has' if len(stale) == 1 else 'have'} {rows} rows, as many as site '{site}' "
            f"has along pyro.plate('{plate}') of size {size}: a parameter with one row per "
            "datapoint, created on other data and kept by the store. Pass the datapoints' "
            "indices with the data and index the parameter with them, or call "
            "pyro.clear_param_store() before scoring data of another size")
    return bool(stale)


def _where_failed(error: BaseException, model, guide) -> str:
    """"the model (name, file line N: code)" for the innermost frame of ``error`` in one of
    the programs, "the model or the guide" when none is in the traceback."""
    found = _failing_program(error, {"model": model, "guide": guide})
    if found is None:
        return "the model or the guide"
    role, frame = found
    program = {"model": model, "guide": guide}[role]
    name = getattr(program, "__qualname__", type(program).__name__)
    return (f"the {role} ({name}, {os.path.basename(frame.filename)} line {frame.lineno}: "
            f"{frame.line})")


def explain_index_dtype(error: BaseException, model, guide, args: tuple, kwargs: dict,
                        refusal: type[ValueError] = ValueError) -> None:
    """Raise ``refusal``, chained from ``error``, when torch refused an index tensor's dtype
    (``pyro.plate(..., subsample=idx)`` or ``locs[idx]`` with ``idx`` of ``int16``, ``int8``
    or float), naming the arguments of such dtypes; else return."""
    odd = [f"{path} ({tensor.dtype})" for name, value in _named_arguments(args, kwargs)
           for path, tensor in tensors_in(value, name)
           if not tensor.is_floating_point() and not tensor.is_complex()
           and tensor.dtype not in (torch.int32, torch.int64, torch.bool)]
    # uint8 indices index as a mask (locs[idx] keeps the rows where idx is not 0)
    as_mask = "uint8" in " ".join(odd) and str(error).startswith("The shape of the mask")
    if not (_INDEX_DTYPE.search(str(error)) or as_mask):
        return
    shown = ", ".join(odd[:4]) if odd else "none (float indices?)"
    raise refusal(
        f"{_where_failed(error, model, guide)} indexes with a tensor of a dtype torch cannot "
        "index with: pyro.plate(..., subsample=idx) and tensor indexing take int64 (or int32) "
        f"indices; the arguments of another integer dtype: {shown}. Pass idx.long() "
        f"(torch: {str(error).splitlines()[0]})") from error


def explain_run_failure(error: BaseException, model, guide, args: tuple, kwargs: dict,
                        refusal: type[ValueError] = ValueError) -> None:
    """Called while the first run of a pair fails with ``error``; raises, chained from it:

    - ``TypeError`` naming a floating tensor argument whose dtype differs from the parameters
      of the networks the pair reaches (:func:`inference.reachable.reachable_modules`), when
      torch's message is about dtypes;
    - ``refusal`` (a ``ValueError`` class) naming the program (model or guide) and line for a
      distribution's refusal of its parameters ("Expected parameter scale ... GreaterThan"),
      or of their types (a list where a number or tensor goes).

    - ``refusal`` naming the index arguments of a dtype Pyro cannot index with (``int16``,
      ``uint8``, float) when ``pyro.plate(..., subsample=idx)`` failed on them.

    Else it returns, and the caller re-raises ``error``."""
    explain_index_dtype(error, model, guide, args, kwargs, refusal)
    if _DTYPE_CLASH.search(str(error)):
        dtypes = {p.dtype for m in reachable_modules(model, guide) for p in m.parameters()
                  if p.is_floating_point()}
        if len(dtypes) == 1:
            wanted = dtypes.pop()
            # an integer or bool tensor, when torch's message names its type ("got Long
            # and Float"): images of 0/1 as int64 fed to a float network
            named = {_TORCH_TYPE_NAMES[word] for word in re.findall(r"\b[A-Z][A-Za-z0-9]+\b",
                                                                    str(error))
                     if word in _TORCH_TYPE_NAMES}
            for name, value in _named_arguments(args, kwargs):
                for path, tensor in tensors_in(value, name):
                    if tensor.dtype != wanted and not tensor.is_complex() and (
                            tensor.is_floating_point() or tensor.dtype in named):
                        data = "x.float()" if wanted == torch.float32 else f"x.to({wanted})"
                        nets = ("model.double()" if tensor.dtype == torch.float64
                                else f"model.to({tensor.dtype})")
                        fix = (f"convert the data ({data}) or the networks ({nets})"
                               if tensor.is_floating_point() else
                               f"convert the data ({data}): networks compute in floating point")
                        raise TypeError(
                            f"{path} is {tensor.dtype} but the parameters of the networks the "
                            f"pair uses are {wanted} (torch: {str(error).splitlines()[0]}); "
                            f"{fix}") from error
    mismatch = _PLATE_MISMATCH.match(str(error)) if isinstance(error, ValueError) else None
    if not _note_stale_rows(error) and mismatch is not None and mismatch.group(3) == "1":
        # a plate of size 1 against rows of a site: the data's datapoints on another dim
        plate, site, size, rows = mismatch.groups()
        shapes = ", ".join(f"{name} {list(value.shape)}" for name, value
                           in _named_arguments(args, kwargs) if torch.is_tensor(value))
        raise refusal(
            f"{_where_failed(error, model, guide)} gives site {site} {rows} rows along "
            f"pyro.plate('{plate}'), whose size is {size}; the datapoints lie along the "
            f"plate's dim of every site, and along dim 0 of the data (the arguments: "
            f"{shapes or 'no tensors'}): a data tensor with a leading extra dim (x[None], "
            "x.unsqueeze(0)) makes len(x) 1; or, for one datapoint of several values, the "
            "site's values are one event: declare them with .to_event(1). Pyro: "
            + str(error).splitlines()[0]) from error
    if isinstance(error, ValueError) and str(error).startswith("Expected parameter "):
        where = _where_failed(error, model, guide)
        raise refusal(
            f"{where} built a distribution with a parameter outside its constraint (e.g. a "
            "scale of 0 or below, a probability outside [0, 1]) for some datapoints; look at "
            "what computes it (a network's output, a pyro.param without a constraint). "
            f"torch: {str(error).splitlines()[0]}") from error
    if isinstance(error, ValueError) and str(error).startswith(
            "Input arguments must all be instances of Number, torch.Tensor"):
        kinds = ", ".join(f"{name} ({type(value).__name__})" for name, value
                          in _named_arguments(args, kwargs)
                          if not torch.is_tensor(value) and not isinstance(value, numbers.Number))
        raise refusal(
            f"{_where_failed(error, model, guide)} built a distribution from a value that is "
            f"neither a number nor a tensor (a list, a string, None); the pair's arguments of "
            f"such types: {kinds or 'none'}. torch: {str(error).splitlines()[0]}") from error
