"""MAP search over a latent code by Adam, shared by completion and super-resolution."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from ..checks import (MAX_STEPS, as_int, as_number, check_at_most, check_finite_tensor,
                      check_in_range_of, check_tensor_input)
from ..progress import bar_range, check_progress


# an objective below the start's by more than this (relative to 1 + |start|) after the search
# is a divergence, not Adam's jitter about a start already at the optimum (its first steps
# move every coordinate by about lr, however small the gradient: 1e-4 nats below there)
DIVERGED_RTOL = 1e-3


def adam_map(start: torch.Tensor, log_joint: Callable[[torch.Tensor], torch.Tensor],
             steps: int, lr: float, entry: str, inputs: str,
             progress: bool = True) -> torch.Tensor:
    """``argmax_z log_joint(z)`` by ``steps`` Adam steps from ``start``, keeping per row the
    best code seen.

    Every row (image) is its own search (Adam's moments are elementwise and the loss is the
    sum over rows). The objective of each row is evaluated at every iterate, the start and
    the last one included, and the row's best code is returned: so the returned objective is
    never below the start's. A too-large ``lr`` can jump far downhill and stay there with a
    finite objective (Bernoulli logits); when the last iterate of some row is worse than its
    start by more than Adam's jitter (``DIVERGED_RTOL * (1 + |start's objective|)``), a
    ``RuntimeWarning`` names ``lr`` and the rows, and the best codes seen are returned.

    Args:
        start: ``[batch, d]`` initial codes (copied, not changed).
        log_joint: maps ``z: [batch, d]`` to ``[batch]`` log densities to maximize.
        steps: Adam steps, an integer in ``0..MAX_STEPS``.
        lr: Adam's learning rate, a finite number ``> 0``.
        entry: the public function's name, for the errors.
        inputs: what sets the objective at ``start`` (the caller's arguments, in words),
            named when it is not finite there.
        progress: False hides the bar over the steps (shown after a second, named
            ``entry``).

    Returns:
        ``z*: [batch, d]``, detached: per row the code of the highest objective seen
        (``start`` itself for ``steps = 0``).

    Raises:
        TypeError, ValueError: ``start`` no floating tensor ``[batch, d]``, ``steps``, ``lr``
            or ``progress`` out of range, or ``log_joint(start)`` not of shape ``[batch]``.
        ValueError: ``lr`` beyond the range of ``start``'s dtype.
        ValueError: the objective is NaN or infinite at ``start``, before any step (so no
            fault of ``lr``), naming ``inputs``.
        FloatingPointError: the objective or the codes turn NaN or infinite after a step
            (``lr`` too large), naming the step.
    """
    check_tensor_input(start, "start")
    if not torch.is_tensor(start) or start.dim() != 2 or not start.is_floating_point():
        raise TypeError(f"{entry}: start must be a floating tensor [batch, d], got "
                        f"{getattr(start, 'dtype', type(start).__name__)} "
                        f"{list(getattr(start, 'shape', []))}")
    check_finite_tensor(start, "start")
    if not start.shape[0]:
        raise ValueError(f"{entry}: start holds no codes (shape {list(start.shape)})")
    if not callable(log_joint):
        raise TypeError(f"{entry}: log_joint must be callable, got "
                        f"{type(log_joint).__name__}")
    steps = as_int(steps, "steps", minimum=0)
    check_at_most(steps, "steps", MAX_STEPS, "each step evaluates the objective and its "
                  "gradient, so such a search would not end")
    lr = as_number(lr, "lr", positive=True)
    check_progress(progress)
    check_in_range_of(lr, f"{entry}: lr", start.dtype,
                      "use a learning rate such as 0.05 (Adam computes it in the codes' dtype)")
    if not steps:
        return start.detach().clone()
    # the search needs gradients whatever the caller's mode (torch.no_grad, inference_mode)
    with torch.inference_mode(False), torch.enable_grad():
        z = start.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=lr)
        best_z = z.detach().clone()  # [batch, d]
        first = best = None  # [batch] objectives: at the start, the best so far

        def score(done: int) -> torch.Tensor:
            """The objective ``[batch]`` after ``done`` steps (a graph), kept if better."""
            nonlocal best, best_z, first
            objective = log_joint(z)
            if not torch.is_tensor(objective) or tuple(objective.shape) != (z.shape[0],):
                raise ValueError(f"{entry}: the objective must return [batch] = "
                                 f"[{z.shape[0]}] log densities for codes {list(z.shape)}, got "
                                 f"{list(getattr(objective, 'shape', [type(objective)]))}")
            if not objective.requires_grad:
                raise ValueError(f"{entry}: the objective is not differentiable in the codes "
                                 "(computed under torch.no_grad, or from detached codes)")
            if not bool(torch.isfinite(objective).all()):
                bad = float(objective.detach()[~torch.isfinite(objective.detach())][0])
                if done == 0:
                    raise ValueError(f"{entry}: the objective is {bad} at the start, before "
                                     f"any step (lr plays no part yet): {inputs} make it "
                                     "non-finite")
                raise FloatingPointError(f"{entry}: the objective is {bad} at step {done} of "
                                         f"{steps} (lr={lr}); lower lr")
            value = objective.detach()
            if best is None:
                first, best = value.clone(), value.clone()
            else:
                better = value > best
                best = torch.where(better, value, best)
                best_z = torch.where(better[:, None], z.detach(), best_z)
            return objective

        for index in bar_range(steps, entry, progress):
            optimizer.zero_grad()
            (-score(index).sum()).backward()
            optimizer.step()
            if not torch.isfinite(z).all():
                raise FloatingPointError(f"{entry}: the codes diverged at step {index + 1} of "
                                         f"{steps} (lr={lr}); lower lr")
        value = score(steps).detach()  # the last iterate
    worse = value < first - DIVERGED_RTOL * (1 + first.abs())
    if bool(worse.any()):
        rows = worse.nonzero()[:, 0].tolist()
        warnings.warn(f"{entry}: the search diverged (lr={lr} too large?): after {steps} steps "
                      f"the objective of {len(rows)} of {len(worse)} row(s) (first {rows[:5]}) "
                      f"is below its start's (row {rows[0]}: {float(value[rows[0]]):.6g} < "
                      f"{float(first[rows[0]]):.6g}); returning each row's best code seen. "
                      "Lower lr", RuntimeWarning, stacklevel=3)
    return best_z
