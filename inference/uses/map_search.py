"""MAP search over a latent code by Adam, shared by completion and super-resolution."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..checks import check_in_range_of
from ..progress import bar_range


def adam_map(start: torch.Tensor, log_joint: Callable[[torch.Tensor], torch.Tensor],
             steps: int, lr: float, entry: str, inputs: str,
             progress: bool = True) -> torch.Tensor:
    """``argmax_z log_joint(z)`` by ``steps`` Adam steps from ``start``.

    Args:
        start: ``[batch, d]`` initial codes (copied, not changed).
        log_joint: maps ``z: [batch, d]`` to ``[batch]`` log densities to maximize.
        steps: Adam steps, an integer ``>= 0`` (checked by the caller).
        lr: Adam's learning rate, a finite number ``> 0`` (checked by the caller).
        entry: the public function's name, for the errors.
        inputs: what sets the objective at ``start`` (the caller's arguments, in words),
            named when it is not finite there.
        progress: False hides the bar over the steps (shown after a second, named
            ``entry``; checked by the caller).

    Returns:
        ``z*: [batch, d]``, detached.

    Raises:
        ValueError: ``lr`` beyond the range of ``start``'s dtype.
        ValueError: the objective is NaN or infinite at ``start``, before any step (so no
            fault of ``lr``), naming ``inputs``.
        FloatingPointError: the objective or the codes turn NaN or infinite after a step
            (``lr`` too large), naming the step.
    """
    check_in_range_of(lr, f"{entry}: lr", start.dtype,
                      "use a learning rate such as 0.05 (Adam computes it in the codes' dtype)")
    # the search needs gradients whatever the caller's mode (torch.no_grad, inference_mode)
    with torch.inference_mode(False), torch.enable_grad():
        z = start.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=lr)
        for index in bar_range(steps, entry, progress):
            optimizer.zero_grad()
            loss = -log_joint(z).sum()
            if not torch.isfinite(loss):
                if index == 0:
                    raise ValueError(f"{entry}: the objective is {float(loss.detach())} at the "
                                     f"start, before any step (lr plays no part yet): {inputs} "
                                     "make it non-finite")
                raise FloatingPointError(f"{entry}: the objective is {float(loss.detach())} at "
                                         f"step {index + 1} of {steps} (lr={lr}); lower lr")
            loss.backward()
            optimizer.step()
            if not torch.isfinite(z).all():
                raise FloatingPointError(f"{entry}: the codes diverged at step {index + 1} of "
                                         f"{steps} (lr={lr}); lower lr")
    return z.detach()
