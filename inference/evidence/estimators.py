"""Evidence bounds per datapoint: ELBO, IWAE_K and a sweep over K.

For weights ``w_k = p(x, z_k) / q(z_k | x)`` with ``z_k ~ q``, Jensen's inequality gives
``E[log w] <= E[log mean_k w_k] <= log p(x)`` and the IWAE bound rises monotonically in
expectation with K (Burda et al. 2015, Theorem 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..checks import check_int, check_nonempty_batch
from ..pair_check import DATA_PLATE
from ..weights import (
    attach_subsample,
    check_finite_inputs,
    check_compile,
    check_num_samples,
    checked_log_weights,
    checked_pair,
    log_mean_exp,
)


def _weights(use, model, guide, args, kwargs, num_samples, chunk_size, compile):
    check_num_samples(num_samples, chunk_size)
    check_compile(compile, model, guide, args, kwargs)
    check_finite_inputs(args, kwargs)
    model, guide, structure = checked_pair(model, guide, args, kwargs, use)
    return checked_log_weights(model, guide, args, kwargs, num_samples, chunk_size,
                               structure, compile), structure


def elbo(model: Callable, guide: Callable, *args, num_samples: int = 1,
         chunk_size: int | None = None, compile: bool | str = False,
         **kwargs) -> torch.Tensor:
    """Monte Carlo ELBO ``mean_k log w_k`` per datapoint.

    ``compile``: score the chunks through a compiled graph, as in
    :func:`inference.log_importance_weights`.

    Returns:
        ``[batch]`` in nats; for a model that subsamples its ``"data"`` plate, the
        subsample's indices are the result's ``subsample`` attribute
        (:func:`inference.log_importance_weights`).
    """
    check_nonempty_batch(args, kwargs)
    weights, structure = _weights("elbo", model, guide, args, kwargs, num_samples, chunk_size,
                                  compile)
    return attach_subsample(weights.mean(0), structure)


def iwae_bound(model: Callable, guide: Callable, *args, num_samples: int,
               chunk_size: int | None = None, compile: bool | str = False,
               **kwargs) -> torch.Tensor:
    """Importance-weighted bound ``log mean_k w_k`` per datapoint (Burda et al. 2015).

    All ``num_samples`` particles (over all chunks) score the same datapoints: an in-model
    subsample is drawn once, and its indices are the result's ``subsample`` attribute.
    ``compile``: score the chunks through a compiled graph, as in
    :func:`inference.log_importance_weights` (for K in the thousands on a CPU, once the
    graph is compiled, about 0.85 of the eager time: ``docs/performance.md``).

    Returns:
        ``[batch]`` in nats.
    """
    check_nonempty_batch(args, kwargs)
    weights, structure = _weights("iwae_bound", model, guide, args, kwargs, num_samples,
                                  chunk_size, compile)
    return attach_subsample(log_mean_exp(weights, 0), structure)


def log_evidence(model: Callable, guide: Callable, x: torch.Tensor, *, num_samples: int = 1,
                 batch_size: int = 256, chunk_size: int | None = None,
                 compile: bool | str = False) -> torch.Tensor:
    """``log p(x)`` per datapoint in nats: IWAE_K with ``K = num_samples`` (a lower bound that
    tightens with K), exact for a fully observed pair (empty guide) at ``K = 1``.

    Args:
        x: ``[n, ...]``, scored ``batch_size`` datapoints at a time.
        compile: score through compiled graphs (:func:`inference.log_importance_weights`).

    Returns:
        ``[n]`` nats. A model that subsamples its own ``"data"`` plate is refused: the rows
        scored would not be the rows of ``x`` in order.
    """
    if not torch.is_tensor(x) or x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"x must be a tensor [n, ...] with n >= 1, got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    check_int(batch_size, "batch_size")
    check_num_samples(num_samples, chunk_size)
    check_compile(compile, model, guide, (x,))
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            part = x[i:i + batch_size]
            check_num_samples(num_samples, chunk_size)
            check_finite_inputs((part,), {})
            fixed_model, fixed_guide, structure = checked_pair(model, guide, (part,), {},
                                                               "log_evidence")
            if structure.data_subsample is not None or structure.batch_size != part.shape[0]:
                raise ValueError(
                    f"log_evidence: the '{DATA_PLATE}' plate scores {structure.batch_size} "
                    f"datapoints of a slice of {part.shape[0]} rows (the model subsamples or "
                    "resizes its plate); call iwae_bound, whose result says which rows it "
                    "scored (result.subsample)")
            weights = checked_log_weights(fixed_model, fixed_guide, (part,), {}, num_samples,
                                          chunk_size, structure, compile)
            out.append(log_mean_exp(weights, 0))
    return torch.cat(out)


def iwae_from_weights(log_w: torch.Tensor, k: int) -> torch.Tensor:
    """Average IWAE_k over the disjoint groups of ``k`` particles in ``log_w``.

    Each group gives an unbiased estimate of ``E[IWAE_k]``; averaging them lowers the variance.

    Args:
        log_w: ``[K, batch]`` log weights with ``K >= k``.

    Returns:
        ``[batch]`` in nats.
    """
    check_int(k, "k")
    if not torch.is_tensor(log_w) or log_w.dim() != 2:
        raise ValueError(f"log_w must be a [K, batch] tensor, got "
                         f"{list(log_w.shape) if torch.is_tensor(log_w) else type(log_w).__name__}")
    groups = log_w.shape[0] // k
    if groups < 1:
        raise ValueError(f"need at least k={k} weights, got {log_w.shape[0]}")
    blocks = log_w[: groups * k].reshape(groups, k, -1)
    return log_mean_exp(blocks, 1).mean(0)


@dataclass
class BoundTable:
    """Mean over datapoints, then mean and standard error over repeats, of each bound (nats).

    ``rows`` holds dicts with keys ``bound`` ("elbo" or "iwae"), ``num_samples``, ``mean``,
    ``stderr``; ``per_repeat`` the raw dataset means, one list per row; ``subsample`` the
    ``[B]`` indices of the datapoints scored when the model subsamples its ``"data"`` plate
    (one subsample for all repeats and K), else None.
    """

    rows: list[dict] = field(default_factory=list)
    per_repeat: list[list[float]] = field(default_factory=list)
    subsample: torch.Tensor | None = None

    def iwae(self) -> dict[str, float]:
        """``{"K": mean}`` for the IWAE rows, keys as strings (JSON-ready)."""
        return {str(r["num_samples"]): r["mean"] for r in self.rows if r["bound"] == "iwae"}

    def elbo(self) -> float:
        return next(r["mean"] for r in self.rows if r["bound"] == "elbo")

    def to_dict(self) -> dict:
        return {"rows": self.rows}

    def __str__(self) -> str:
        lines = [f"{'bound':<12}{'mean (nats)':>14}{'std. error':>12}"]
        for r in self.rows:
            name = "ELBO" if r["bound"] == "elbo" else f"IWAE_{r['num_samples']}"
            lines.append(f"{name:<12}{r['mean']:>14.4f}{r['stderr']:>12.4f}")
        return "\n".join(lines)


def _data_slices(args: tuple, batch_size: int | None):
    """Yield ``args`` with every tensor cut to consecutive slices of ``batch_size`` rows."""
    if batch_size is None:
        yield args
        return
    sizes = {a.shape[0] for a in args if torch.is_tensor(a)}
    if len(sizes) != 1:
        raise ValueError(f"data_batch_size needs tensor arguments of one length, got {sizes}")
    n = sizes.pop()
    for start in range(0, n, batch_size):
        yield tuple(a[start:start + batch_size] if torch.is_tensor(a) else a for a in args)


def bound_sweep(model: Callable, guide: Callable, *args,
                num_samples: Sequence[int] = (1, 10, 100, 1000, 5000), repeats: int = 3,
                chunk_size: int | None = 500, data_batch_size: int | None = None,
                compile: bool | str = False, **kwargs) -> BoundTable:
    """Table of ELBO and IWAE_K for several K, averaged over the datapoints.

    Each repeat draws ``max(num_samples)`` particles per datapoint; IWAE_K for smaller K
    averages over disjoint groups of those particles, and the ELBO is the mean log weight.
    ``data_batch_size`` splits every tensor in ``args`` along its first (data) dim so that
    large test sets are evaluated a slice at a time. ``compile``: score through compiled
    graphs (:func:`inference.log_importance_weights`).

    Returns:
        a :class:`BoundTable`; standard errors come from the spread over ``repeats``. A model
        that subsamples its own ``"data"`` plate is scored on one subsample for every repeat
        and K (``BoundTable.subsample``); it cannot be combined with ``data_batch_size``.
    """
    if isinstance(num_samples, int) or not num_samples:
        raise ValueError(f"num_samples must list at least one K, got {num_samples!r}")
    for k in num_samples:
        check_num_samples(k, chunk_size)
    check_int(repeats, "repeats")
    check_compile(compile, model, guide, args, kwargs)
    if data_batch_size is not None:
        check_int(data_batch_size, "data_batch_size")
    check_nonempty_batch(args, kwargs)
    ks = sorted(set(num_samples))
    per_repeat = [[] for _ in range(len(ks) + 1)]
    slices = []
    for batch in _data_slices(args, data_batch_size):
        check_finite_inputs(batch, kwargs)
        slices.append((batch, *checked_pair(model, guide, batch, kwargs, "bound_sweep")))
    subsampled = [s for *_, s in slices if s.data_subsample is not None]
    if subsampled and data_batch_size is not None:
        raise ValueError("bound_sweep: the model subsamples its own 'data' plate; "
                         "data_batch_size would score a different subsample of every slice: "
                         "leave data_batch_size=None")
    for _ in range(repeats):
        sums = [0.0] * (len(ks) + 1)
        count = 0
        for batch, fixed_model, fixed_guide, structure in slices:
            log_w = checked_log_weights(fixed_model, fixed_guide, batch, kwargs, ks[-1],
                                        chunk_size, structure, compile)
            count += log_w.shape[1]
            sums[0] += float(log_w.mean(0).sum())
            for i, k in enumerate(ks):
                sums[i + 1] += float(iwae_from_weights(log_w, k).sum())
        for i, total in enumerate(sums):
            per_repeat[i].append(total / count)
    table = BoundTable(per_repeat=per_repeat,
                       subsample=subsampled[0].data_subsample if subsampled else None)
    for (bound, k), values in zip([("elbo", 1)] + [("iwae", k) for k in ks], per_repeat):
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)
        table.rows.append({"bound": bound, "num_samples": k, "mean": mean,
                           "stderr": math.sqrt(var / len(values))})
    return table
