"""Input checks shared by the models: say what was expected instead of failing deep inside.

:mod:`inference.checks` has twins of ``as_int``, ``check_generator``, ``physical_memory``,
``check_memory``, ``check_not_meta``, ``check_dense`` and ``check_in_range_of`` for the
inference side: the two packages never import each other (docs/architecture.md), and the
twins differ where their callers do (here ``minimum=None`` allows any integer, a generator
of the wrong type is a ``TypeError``, ``device=None`` accepts a generator on any device, and
``check_in_range_of`` says what a value out of range would do).
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import os
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy
import torch
from pyro.infer.util import is_validation_enabled
from tqdm.auto import tqdm


_NOT_FILES = {stat.S_IFDIR: "a folder", stat.S_IFCHR: "a character device",
              stat.S_IFBLK: "a block device", stat.S_IFIFO: "a named pipe",
              stat.S_IFSOCK: "a socket"}


def check_not_special(path, action: str) -> None:
    """``ValueError`` when ``path`` exists and is not a regular file: ``action`` it (``"read"``,
    ``"write"``) would block on a pipe, never end on a device, or replace the node."""
    try:
        kind = _NOT_FILES.get(stat.S_IFMT(os.stat(path).st_mode))
    except OSError:
        return
    if kind is not None:
        raise ValueError(f"cannot {action} {path}: it is {kind}, not a regular file")


def as_path(path, name: str = "path") -> Path:
    """``path`` (a str or an ``os.PathLike`` of a str) as a ``Path``, ``~`` expanded;
    ``TypeError`` naming ``name`` for anything else (bytes, an int: pathlib's own errors did
    not name the argument), ``ValueError`` for a NUL byte in it (no file can have that name;
    ``is_file`` just said False)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or a path, got {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str or a path of a str, got a path of "
                        f"{type(text).__name__}")
    if "\x00" in text:
        raise ValueError(f"{name} {text!r} holds a NUL byte, which no file name can")
    return Path(text).expanduser()


def as_bool(value, name: str) -> bool:
    """``value`` if it is True or False; ``TypeError`` naming ``name`` otherwise (a string
    such as ``"no"``, or 0, would count as a truth value)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def _integer_scalar(value):
    """``int(value)`` for a 0-dim integer tensor whose value can be read (not bool, not meta,
    not sparse) or a 0-dim integer numpy array, else ``value`` unchanged: how the counts and
    seeds accept such a value."""
    if isinstance(value, numpy.ndarray) and value.ndim == 0 and value.dtype.kind in "iu":
        return int(value)
    if (torch.is_tensor(value) and value.dim() == 0 and value.dtype != torch.bool
            and not value.is_floating_point() and not value.is_complex() and not value.is_meta
            and value.layout == torch.strided):
        return int(value)
    return value


def as_int(value, name: str, minimum: int | None = 1) -> int:
    """``value`` as a Python ``int``; ``ValueError`` naming ``name`` unless it is an integer
    (numpy integers and 0-dim integer tensors accepted; bools and floats such as 2.0 refused)
    ``>= minimum`` (None: any)."""
    value = _integer_scalar(value)
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or (minimum is not None and value < minimum)):
        what = ("an integer" if minimum is None else "a positive integer" if minimum == 1
                else f"an integer >= {minimum}")
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def as_sizes(values, name: str, length: int | None = None, meaning: str = "") -> tuple[int, ...]:
    """``values`` (a sequence of positive integers, e.g. layer widths; ``length`` of them when
    given, ``meaning`` such as ``"(C, H, W)"`` saying which) as a tuple of Python ints;
    ``ValueError`` naming ``name`` (and the entry) otherwise."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise ValueError(f"{name} must be a sequence of positive integers, got {values!r}")
    if length is not None and len(values) != length:
        raise ValueError(f"{name} must hold {length} positive integers"
                         f"{' ' + meaning if meaning else ''}, got {tuple(values)}")
    return tuple(as_int(v, f"{name}[{i}]") for i, v in enumerate(values))


def as_number(value, name: str, low: float | None = None, high: float | None = None, *,
              low_open: bool = False, high_open: bool = False,
              dtype: torch.dtype | None = None) -> float:
    """``value`` as a Python ``float``; ``ValueError`` naming ``name`` unless it is a finite
    real number (bools refused) in the interval from ``low`` to ``high`` (each bound inclusive
    unless ``low_open``/``high_open``; None: unbounded). An integer beyond float range
    (``10**400``) is not finite. With ``dtype`` (a floating dtype: the one the number is
    computed in), it must also be finite there (``1e39`` is ``inf`` in float32) and, when not
    0, not round to 0 there (``1e-46`` is ``0`` in float32). A 0-dim real tensor (not bool,
    not complex) stands for its value, as ``x.min()`` does for a bound, and so does a 0-dim
    real numpy array; a tensor or array of another shape or kind is refused as one."""
    if isinstance(value, numpy.ndarray):
        if value.ndim or value.dtype.kind not in "iuf":
            raise ValueError(f"{name} must be one real number (a float or a 0-dim array), got "
                             f"a numpy {value.dtype} array of shape {list(value.shape)}")
        value = value.item()
    if torch.is_tensor(value):
        if (value.dim() or value.dtype == torch.bool or value.is_complex() or value.is_meta
                or value.layout != torch.strided):
            raise ValueError(f"{name} must be one real number (a float or a 0-dim tensor), got "
                             f"a {value.dtype} tensor of shape {list(value.shape)}")
        value = value.item()
    try:
        finite = not isinstance(value, bool) and isinstance(value, numbers.Real) \
            and math.isfinite(value)
    except OverflowError:  # math.isfinite of an int too large for a float
        finite = False
    if not finite:
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if ((low is not None and (value <= low if low_open else value < low))
            or (high is not None and (value >= high if high_open else value > high))):
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if low_open else '>='} {low:g}")
        if high is not None:
            bounds.append(f"{'<' if high_open else '<='} {high:g}")
        raise ValueError(f"{name} must be {' and '.join(bounds)}, got {value!r}")
    if dtype is not None:
        check_in_range_of(value, name, dtype)
    return value


def check_in_range_of(value: float, name: str, dtype: torch.dtype, what: str = "") -> None:
    """``ValueError`` naming ``name`` when the real number ``value`` is infinite in the
    floating ``dtype`` (beyond its largest finite value, ``3.4e38`` for float32) or rounds to
    0 there while it is not 0 (below its smallest subnormal, ``1.4e-45`` for float32):
    numbers finite as a Python float but not in the tensors they are computed in. ``what``
    says what such a value would do (default: the computation's result is inf or NaN)."""
    info = torch.finfo(dtype)
    # on the CPU whatever device a torch.device(...) block makes the default (networks
    # built on "meta" to size them)
    stored = torch.tensor(float(value), dtype=torch.float64, device="cpu").to(dtype)
    if torch.isfinite(stored) and (value == 0 or stored != 0):
        return
    where = "beyond" if not torch.isfinite(stored) else "below"
    raise ValueError(f"{name}={value:g} is {where} the range of {dtype} (magnitudes "
                     f"{info.smallest_normal * info.eps:.3g} to {info.max:.3g}), a dtype it is "
                     f"computed in, where it is {float(stored):g}: "
                     f"{what or 'what is computed with it would be inf or NaN'}")


def check_square_in_range_of(value: float, name: str, dtype: torch.dtype, why: str) -> None:
    """``ValueError`` naming ``name`` when the square of the scale ``value`` (a variance) is
    outside the normal range of ``dtype`` (``1.2e-38`` to ``3.4e38`` for float32: a scale
    about ``1.1e-19`` to ``1.8e19``); ``why`` says what would fail."""
    info = torch.finfo(dtype)
    if not info.tiny ** 0.5 <= abs(value) <= info.max ** 0.5:  # value ** 2 overflows a float
        raise ValueError(f"{name}={value:g}: its square is beyond the range of {dtype} "
                         f"({info.tiny:.3g} to {info.max:.3g}), so {why}; pick a scale "
                         f"between {info.tiny ** 0.5:.3g} and {info.max ** 0.5:.3g}")


SEED_LIMIT = 2**63
"""Seeds of ``ppl_models`` are integers in ``[0, SEED_LIMIT)``: each one seeds a
:class:`torch.Generator` (or ``torch.manual_seed``) with a different state, unlike torch's
own range, where ``-1`` and ``2**64 - 1`` give the same one."""


def as_seed(value, name: str = "seed") -> int:
    """``value`` as a Python ``int``; ``ValueError`` naming ``name`` unless it is an integer
    (numpy integers and 0-dim integer tensors accepted, as by ``inference.fit``; bools and
    floats refused) in ``[0, 2**63)``."""
    value = _integer_scalar(value)
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or not 0 <= int(value) < SEED_LIMIT):
        raise ValueError(f"{name} must be an integer in [0, 2**63), got {value!r}")
    return int(value)


def check_generator(generator, device: torch.device | str | None = None,
                    name: str = "generator") -> None:
    """Raise unless ``generator`` is None or a :class:`torch.Generator` (``TypeError``) on
    ``device``, where the draws are made (``ValueError``; None: any device, for callers that
    draw on the generator's device and move the draws)."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got "
                        f"{type(generator).__name__}")
    if device is None:
        return
    want, have = torch.device(device), torch.device(generator.device)
    if have.type != want.type or (have.index is not None and want.index is not None
                                  and have.index != want.index):
        raise ValueError(f"{name} is on {have} but the draws are made on {want}; pass "
                         f"torch.Generator(device={str(want)!r})")


@functools.cache
def physical_memory() -> int | None:
    """Bytes of physical memory of this machine (``SC_PAGE_SIZE * SC_PHYS_PAGES``), or None
    where the system does not say; read once per process."""
    try:
        size = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    return size if size > 0 else None


def check_memory(numel: int, dtype: torch.dtype, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` (the argument and its value, and what it asks
    for) when ``numel`` values of ``dtype`` would take more bytes than the machine's physical
    memory: a sanity bound, checked before allocating, for a size that could only fail in the
    allocator (or swap the machine to a halt). Pure arithmetic, no allocation."""
    check_bytes(int(numel) * dtype.itemsize, what)


def check_bytes(size: int, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` when ``size`` bytes exceed physical memory:
    :func:`check_memory` for a size in bytes (values of several dtypes summed)."""
    limit = physical_memory()
    if limit is not None and size > limit:
        raise ValueError(f"{what}: {size:,} bytes, more than the {limit:,} bytes of this "
                         f"machine's physical memory")


#: The most blocks (PixelCNN ``num_blocks``, WaveNet ``layers * stacks``) or layers (GRU
#: ``layers``) a bundled network may be built with. Building costs Python objects and time per
#: module that the weight count does not see (measured on a 2-core CPU: about 0.7 ms and
#: 19 KB per PixelCNN block, 0.25 ms and 9.5 KB per WaveNet block; a GRU of n layers about
#: 1.3e-7 n^2 s): a million PixelCNN blocks of one channel hold 164 MB of weights but about
#: 19 GB of modules. 1024 is far beyond the networks these models are used with (5 to 30).
MAX_DEPTH = 1024


def check_depth(count: int, what: str, unit: str, seconds: float, module_bytes: int) -> None:
    """``ValueError`` before building when ``count`` ``unit`` (``"blocks"``, ``"layers"``)
    exceed :data:`MAX_DEPTH`; ``what`` names the argument(s) and value(s), ``seconds`` and
    ``module_bytes`` estimate the build's time and its modules' memory beyond the weights."""
    if count > MAX_DEPTH:
        raise ValueError(f"{what}: {count:,} {unit}, more than the limit of {MAX_DEPTH:,} "
                         f"{unit} (building them would take about {seconds:,.1f} s and "
                         f"{module_bytes / 1e6:,.0f} MB of modules besides the weights)")


def check_word_draws(num, generator, max_length, device: torch.device) -> None:
    """A word sampler's arguments (:func:`ppl_models.text.draw_words`), before any draw:
    ``num`` and ``max_length`` positive integers whose ``[num, max_length]`` symbols fit in
    memory, ``generator`` None or a :class:`torch.Generator` on ``device``."""
    num, max_length = as_int(num, "num"), as_int(max_length, "max_length")
    check_generator(generator, device)
    check_memory(num * max_length, torch.long,
                 f"num={num}, max_length={max_length}: the symbols [num, max_length]")


def being_traced() -> bool:
    """Whether a graph tracer runs this code: ``make_fx`` (``inference``'s compiled paths,
    ``compile=True``) or ``torch.compile``. A tensor's value cannot be read then (one trace
    stands for every call), so checks of the data's values and shapes read from them are
    left to the eager call that precedes the trace."""
    from torch.fx.experimental.proxy_tensor import get_proxy_mode

    return get_proxy_mode() is not None or torch.compiler.is_compiling()


def check_values(x: torch.Tensor, name: str, low: float | None = None,
                 high: float | None = None) -> None:
    """Raise ``ValueError`` naming ``name`` when the float tensor ``x: [...]`` holds NaN
    (counted), infinite values (counted) or, with ``low``/``high``, values outside
    ``[low, high]`` (counted, with their range). NaN fails no comparison, so it is looked
    for first. A tensor on the 'meta' device (no values) is refused by name. Nothing is read
    under a graph tracer (:func:`being_traced`), whose eager call before the trace checks."""
    check_has_values(x, name)
    if being_traced():
        return
    nan = int(torch.isnan(x).sum())
    if nan:
        raise ValueError(f"{name} holds {nan} NaN value(s) of {x.numel()}")
    infinite = int(torch.isinf(x).sum())
    if infinite:
        raise ValueError(f"{name} holds {infinite} infinite value(s) of {x.numel()}")
    if (low is not None or high is not None) and x.numel():
        outside = torch.zeros_like(x, dtype=torch.bool)
        if low is not None:
            outside |= x < low
        if high is not None:
            outside |= x > high
        count = int(outside.sum())
        if count:
            raise ValueError(f"{name} must lie in [{low}, {high}]; {count} of {x.numel()} "
                             f"values do not, range [{float(x.min())}, {float(x.max())}]")


def check_levels(x, name: str, num_levels: int, nonempty: bool = False) -> None:
    """Raise ``TypeError`` naming ``name`` unless ``x: [...]`` is an integer tensor (bool
    refused), and ``ValueError`` unless its values lie in ``0..num_levels - 1`` (and, with
    ``nonempty``, it holds at least one): quantized levels, used as indices, where a negative
    one would count from the end."""
    if not torch.is_tensor(x) or x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    check_has_values(x, name)
    if nonempty and not x.numel():
        raise ValueError(f"{name} holds no levels (shape {list(x.shape)})")
    low, high = (int(x.min()), int(x.max())) if x.numel() else (0, 0)
    if low < 0 or high >= num_levels:  # Python ints: uint8 would wrap num_levels = 256 to 0
        raise ValueError(f"{name} must hold levels in 0..{num_levels - 1}, got range "
                         f"[{low}, {high}]")


def check_like(x: torch.Tensor, name: str, like: torch.nn.Module) -> None:
    """Raise ``TypeError`` naming ``name`` when the tensor ``x`` differs in dtype or device
    from ``like``'s first floating-point parameter (none: nothing to compare)."""
    param = next((p for p in like.parameters() if p.is_floating_point()), None)
    if param is not None and (x.dtype != param.dtype or x.device != param.device):
        raise TypeError(f"{name} is {x.dtype} on {x.device}, the {type(like).__name__}'s "
                        f"parameters {param.dtype} on {param.device}: move one to the other "
                        f"({name}.to(...) or the model's .to(...))")


def check_tensor(x, event_shape: tuple[int, ...], name: str = "x",
                 like: torch.nn.Module | None = None, batch_dims: str = "batch") -> None:
    """Raise ``TypeError``/``ValueError`` naming ``name`` unless ``x`` is a floating-point
    tensor ``[batch, *event_shape]`` (``batch_dims="batch"``) or ``[..., *event_shape]``
    (``batch_dims="..."``: any leading dims, none included), of the dtype and on the device
    of ``like``'s parameters when a module is given.

    Type, shape, and dtype and device against ``like`` (its first parameter) cost no pass
    over the data and are always checked. The values are not looked at.
    """
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    check_has_values(x, name)
    if batch_dims not in ("batch", "..."):
        raise ValueError(f"batch_dims must be 'batch' or '...', got {batch_dims!r}")
    k = len(event_shape)
    if ((x.dim() != k + 1 if batch_dims == "batch" else x.dim() < k)
            or tuple(x.shape[x.dim() - k:]) != tuple(event_shape)):
        expected = "[" + ", ".join([batch_dims, *map(str, event_shape)]) + "]"
        shape, hint = ", ".join(map(str, event_shape)), ""
        if tuple(x.shape) == tuple(event_shape):
            hint = f": one datapoint without its batch dim; pass {name}.unsqueeze(0)"
        elif x.dim() <= k and x.numel() == math.prod(event_shape):
            hint = f": one datapoint without its batch dim; pass {name}.reshape(1, {shape})"
        elif x.dim() == 2 and k > 1 and x.shape[1] == math.prod(event_shape):
            hint = f": flattened datapoints; pass {name}.reshape(-1, {shape})"
        raise ValueError(f"{name} must have shape {expected}, got {list(x.shape)}{hint}")
    if like is not None:
        check_like(x, name, like)


def check_input(x, event_shape: tuple[int, ...], name: str = "x",
                like: torch.nn.Module | None = None, batch_dims: str = "batch") -> None:
    """A network's input (an encoder's images, a decoder's codes): :func:`check_tensor`, and
    NaN or infinite values refused (:func:`check_values`) while Pyro's validation is enabled,
    since a network maps them to NaN outputs without a word."""
    check_tensor(x, event_shape, name, like, batch_dims)
    if is_validation_enabled():
        check_values(x, name)


def check_data(x, event_shape: tuple[int, ...], name: str = "x",
               like: torch.nn.Module | None = None) -> None:
    """Raise ``ValueError``/``TypeError`` unless ``x`` is a finite float tensor
    ``[batch, *event_shape]`` with at least one datapoint, of the dtype and on the device of
    ``like``'s parameters when a module is given.

    Type, shape, dtype and device
    against ``like`` and an empty batch (which a ``pyro.plate`` cannot take) are always
    checked; the values (a pass over the data and, on a GPU, a synchronization) only while
    Pyro's validation is enabled, as it is by default and for the first epoch of a fit.
    """
    check_tensor(x, event_shape, name, like)
    if x.shape[0] == 0:
        raise ValueError(f"{name} has no datapoints (shape {list(x.shape)})")
    if is_validation_enabled():
        check_values(x, name)


def check_image_draws(num, generator, image_shape, like: torch.Tensor) -> int:
    """``num`` as a Python ``int`` after checking it (a positive integer), ``generator``
    (:func:`check_generator`, any device) and that ``[num, *image_shape]`` images of
    ``like``'s dtype fit in memory (:func:`check_memory`): the image samplers' arguments."""
    num = as_int(num, "num")
    check_generator(generator)
    check_memory(num * math.prod(image_shape), like.dtype,
                 f"num={num}: the images [num, {', '.join(map(str, image_shape))}]")
    return num


def check_not_meta(x, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` when ``x`` is a tensor on the ``meta`` device: it
    has a shape and dtype but no values, so nothing that reads them (a range check, a draw)
    can run on it (torch fails with "Tensor.item() cannot be called on meta tensors"). The
    twin of :func:`inference.checks.check_not_meta`, with the same message."""
    if torch.is_tensor(x) and x.is_meta:
        raise ValueError(f"{name} is a meta tensor (shape {list(x.shape)}, {x.dtype}): "
                         "it has a shape but no values; create it on a real device (cpu, "
                         "cuda), e.g. torch.zeros(shape) or tensor.to_empty(device='cpu') and "
                         "fill it")


def check_dense(x, name: str) -> None:
    """Raise ``TypeError`` naming ``name`` when ``x`` is a sparse, nested, quantized or
    masked tensor: the models and the checks read plain strided tensors only (torch failed
    deep inside with "Could not run 'aten::eq.Scalar' ... SparseCPU", or "Internal error:
    NestedTensorImpl doesn't support sizes"). The twin of
    :func:`inference.checks.check_dense`, naming the argument in the fix."""
    if not torch.is_tensor(x):
        return
    if x.is_nested:
        raise TypeError(f"{name} is a nested tensor (rows of different lengths): the models "
                        "take one tensor of equal rows; pad the rows to one length")
    if isinstance(x, torch.masked.MaskedTensor):
        raise TypeError(f"{name} is a torch.masked.MaskedTensor: the models take plain "
                        f"tensors; pass its data ({name}.get_data())")
    if x.is_quantized:
        raise TypeError(f"{name} is a quantized tensor ({x.dtype}): the models take floating "
                        f"or integer tensors; pass {name}.dequantize()")
    if x.layout != torch.strided:
        raise TypeError(f"{name} is a sparse tensor ({x.layout}, shape {list(x.shape)}): the "
                        f"models score dense tensors; pass {name}.to_dense()")


def check_has_values(x, name: str) -> None:
    """Raise naming ``name`` unless the tensor ``x``'s values can be read:
    :func:`check_dense` (``TypeError`` for a sparse tensor) and :func:`check_not_meta`
    (``ValueError`` for a meta tensor)."""
    check_dense(x, name)
    check_not_meta(x, name)


def check_module_not_meta(module: torch.nn.Module, call: str) -> None:
    """Raise ``ValueError`` naming ``call`` when a parameter or buffer of ``module`` is on the
    ``meta`` device (shapes without values: built under ``torch.device("meta")`` or moved
    with ``.to("meta")``): a sampler would fail inside torch at its first draw."""
    meta = next((name for name, t in [*module.named_parameters(), *module.named_buffers()]
                 if t.is_meta), None)
    if meta is not None:
        raise ValueError(f"{call}: {type(module).__name__}'s '{meta}' is on the meta device "
                         "(a shape without values), so nothing can be drawn from it; give it "
                         "values first: module.to_empty(device='cpu') and "
                         "load_state_dict(...) or load_checkpoint(...)")


def name_rows(bad: torch.Tensor) -> str:
    """``bad: [n]`` bool -> ``"rows [i, j, ...] of n"`` (the first 5 named)."""
    rows = bad.nonzero().flatten().tolist()
    shown = ", ".join(map(str, rows[:5])) + (", ..." if len(rows) > 5 else "")
    return f"rows [{shown}] of {bad.numel()}"


CHECK_WEIGHTS_HINT = ("check the model's weights (torch.isfinite(p).all() for p in "
                      "model.parameters()) and its inputs")


def check_finite_rows(values: torch.Tensor, what: str, outputs: str = "the network's outputs",
                      log_probability: bool = False) -> None:
    """Raise ``FloatingPointError`` naming ``what`` (the entry point) and the rows when
    ``values: [n, ...]`` holds NaN or infinite values: a network output that is about to be
    returned or used, or with ``log_probability`` a log-probability, for which ``-inf`` (a
    value of probability zero) is a right answer and only NaN and ``+inf`` are refused. One
    pass and one host read."""
    flat = values.reshape(values.shape[0], -1) if values.numel() else values
    wrong = (torch.isnan(flat) | torch.isposinf(flat)) if log_probability else \
        ~torch.isfinite(flat)
    if values.numel() and bool(wrong.any()):
        kind = "NaN or +inf" if log_probability else "NaN or infinite"
        raise FloatingPointError(f"{what}: {outputs} are {kind} in {name_rows(wrong.any(1))}; "
                                 f"{CHECK_WEIGHTS_HINT}")


def check_finite_parameters(tensors: dict[str, torch.Tensor], what: str) -> None:
    """Raise ``FloatingPointError`` naming ``what`` and the parameters (``name -> tensor``)
    that hold NaN or infinite values: a closed form or a simulation from them would return
    NaN or fail deep inside (e.g. a Cholesky factorization). Skipped under a graph tracer
    (:func:`being_traced`): the eager call before the trace checks them."""
    if not tensors or being_traced():
        return
    finite = torch.stack([torch.isfinite(t).all() for t in tensors.values()]).tolist()
    bad = [name for name, ok in zip(tensors, finite) if not ok]  # one host read for all
    if bad:
        raise FloatingPointError(f"{what}: the parameters {bad} hold NaN or infinite values "
                                 f"(training diverged, or they were set so); reload or "
                                 f"reinitialize them")


class NonFiniteGuard:
    """Watch the network outputs a sampler draws from, one step at a time, so that a network
    whose outputs are NaN or infinite (NaN weights, an overflow) fails with a
    ``FloatingPointError`` naming ``what``, the step (``describe(step)``) and the rows, instead
    of returning what an argmax over NaN gives (all zeros).

    On the CPU (``lazy=False``, the default there) :meth:`update` raises at once (one host
    read per step). On an accelerator (``lazy=True``, the default off the CPU) it records the
    first bad step and its rows on the device, without a synchronization per step, and
    :meth:`finish`, which the sampler calls before returning, raises: either way nothing
    computed from non-finite outputs is returned.
    """

    def __init__(self, what: str, device: torch.device | str,
                 describe: Callable[[int], str], lazy: bool | None = None):
        self.what = what
        self.describe = describe
        self.lazy = torch.device(device).type != "cpu" if lazy is None else lazy
        self._step: torch.Tensor | None = None  # lazy: first bad step, -1 while none
        self._rows: torch.Tensor | None = None  # lazy: the bad rows of that step

    def update(self, step: int, bad: torch.Tensor) -> None:
        """``bad: [n]`` bool: the rows whose outputs at ``step`` are unusable."""
        if not self.lazy:
            if bool(bad.any()):
                self._raise(step, bad, "")
            return
        if self._step is None:
            self._step = torch.full((), -1, dtype=torch.long, device=bad.device)
            self._rows = torch.zeros_like(bad)
        first = bad.any() & (self._step < 0)
        self._step = torch.where(first, step, self._step)
        self._rows = torch.where(first, bad, self._rows)

    def finish(self) -> None:
        """Raise for the first bad step recorded by a lazy guard (one host read)."""
        if self._step is not None:
            step = int(self._step)
            if step >= 0:
                self._raise(step, self._rows, ", found after the run (nothing is returned)")

    def _raise(self, step: int, bad: torch.Tensor, when: str):
        raise FloatingPointError(f"{self.what}: the network's outputs for {self.describe(step)} "
                                 f"are NaN or infinite in {name_rows(bad)}{when}; "
                                 f"{CHECK_WEIGHTS_HINT}")


def sampling_bar(total: int, desc: str, progress: bool) -> tqdm:
    """A progress bar of a sampler's ``total`` draws (pixels, time steps), shown once the call
    has run for a second, as ``inference``'s estimators show theirs, and removed when it ends;
    ``progress=False`` hides it. ``update()`` it per draw and ``close()`` it (or use ``with``)."""
    return tqdm(total=total, desc=desc, unit="draws", delay=1.0, leave=False,
                disable=not progress or not _stderr_writable())


def _stderr_writable() -> bool:
    """Whether ``sys.stderr`` takes a bar: None (a process started without it), closed or
    read-only streams make tqdm fail at its first write."""
    stream = sys.stderr
    if stream is None:
        return False
    try:
        return not stream.closed and stream.writable()
    except (AttributeError, ValueError, OSError):  # a stand-in without those methods
        return hasattr(stream, "write")


NAME_MAX = 255  # bytes in a file name on Linux, macOS and Windows file systems


@contextlib.contextmanager
def atomic_file(path: Path):
    """A binary file to write ``path``'s new content to: a temporary file in the same folder,
    with the permission bits ``open`` would give, flushed to disk and renamed over ``path``
    when the block ends; on any error it is removed and ``path`` keeps its old content. A
    symlink keeps pointing at its file, which is replaced. The temporary name is
    ``.<name>.<8 random characters>.partial`` with ``<name>`` cut to keep it within
    ``NAME_MAX`` bytes (a legal 251-byte name was refused as "File name too long")."""
    if path.is_symlink():  # replace the file the link points at, keep the link
        path = Path(os.path.realpath(path))
    # mkstemp adds 8 random characters; the dots and ".partial" add 10 more bytes
    stem = os.fsdecode(os.fsencode(path.name)[:NAME_MAX - 18])
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{stem}.",
                                             suffix=".partial")
    except OSError as error:
        raise type(error)(error.errno, f"cannot write {path}: {error.strerror}") from error
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # as open() would make it, not mkstemp's 0600
        with os.fdopen(handle, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
