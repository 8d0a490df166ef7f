"""Input checks shared by the models: say what was expected instead of failing deep inside."""

from __future__ import annotations

import torch
from pyro.infer.util import is_validation_enabled


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
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if low is not None and high is not None:
        lo, hi = float(x.min()), float(x.max())
        if lo < low or hi > high:
            raise ValueError(f"{name} must lie in [{low}, {high}], got values in [{lo}, {hi}]")
