"""Input checks shared by the models: say what was expected instead of failing deep inside."""

from __future__ import annotations

import math
import numbers

import torch
from pyro.infer.util import is_validation_enabled


def as_int(value, name: str, minimum: int | None = 1) -> int:
    """``value`` as a Python ``int``; ``ValueError`` naming ``name`` unless it is an integer
    (numpy integers accepted; bools and floats such as 2.0 refused) ``>= minimum`` (None: any)."""
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
              low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a Python ``float``; ``ValueError`` naming ``name`` unless it is a finite
    real number (bools refused) in the interval from ``low`` to ``high`` (each bound inclusive
    unless ``low_open``/``high_open``; None: unbounded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
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
    return value


def check_values(x: torch.Tensor, name: str, low: float | None = None,
                 high: float | None = None) -> None:
    """Raise ``ValueError`` naming ``name`` when the float tensor ``x: [...]`` holds NaN
    (counted), infinite values (counted) or, with ``low``/``high``, values outside
    ``[low, high]`` (counted, with their range). NaN fails no comparison, so it is looked
    for first."""
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


def check_data(x, event_shape: tuple[int, ...], name: str = "x",
               low: float | None = None, high: float | None = None,
               like: torch.nn.Module | None = None) -> None:
    """Raise ``ValueError``/``TypeError`` unless ``x`` is a finite float tensor
    ``[batch, *event_shape]``, of the dtype and on the device of ``like``'s parameters when
    a module is given.

    ``low``/``high``, when given, bound the allowed values. Type and shape are always
    checked; dtype and device against ``like`` and the values (which cost a walk over the
    module and a pass over the data and, on a GPU, a synchronization) only while Pyro's
    validation is enabled, as it is by default and for the first step of a fit.
    """
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    expected = "[batch, " + ", ".join(map(str, event_shape)) + "]"
    if x.dim() != len(event_shape) + 1 or tuple(x.shape[1:]) != tuple(event_shape):
        raise ValueError(f"{name} must have shape {expected}, got {list(x.shape)}")
    if not is_validation_enabled():
        return
    param = None if like is None else next(
        (p for p in like.parameters() if p.is_floating_point()), None)
    if param is not None and (x.dtype != param.dtype or x.device != param.device):
        raise TypeError(f"{name} is {x.dtype} on {x.device}, the {type(like).__name__}'s "
                        f"parameters {param.dtype} on {param.device}: move one to the other "
                        f"({name}.to(...) or the model's .to(...))")
    check_values(x, name, low, high)
