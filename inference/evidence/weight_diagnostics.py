"""When can IWAE_K be trusted? Pareto k-hat and effective sample size of importance weights.

For weights ``w_k = p(x, z_k) / q(z_k | x)``, ``z_k ~ q``, the IWAE bound
``log mean_k w_k`` converges to ``log p(x)`` at a rate set by the *tail* of the weight
distribution. Pareto-smoothed importance sampling [1] fits a generalized Pareto distribution
to the largest ``M = min(K/5, 3 sqrt(K))`` weights; its shape estimate k-hat says how many
moments the weights have (about ``1/k``) and, in practice, how far to trust the estimate:

- ``k < 0.5``: the variance of the weights is finite; the estimate converges quickly (good).
- ``0.5 <= k < 0.7``: infinite variance but a usable estimate; the pre-asymptotic
  convergence is still practical (ok, more samples help).
- ``k >= 0.7``: the estimate is unreliable at any practical K; the guide misses part of
  the posterior (typically it is too narrow). [1] ties the threshold to the sample size as
  ``min(1 - 1/log10(K), 0.7)``; for the K of evidence estimates (hundreds and more) it is 0.7.

The effective sample size ``(sum_k w_k)^2 / sum_k w_k^2`` [2] lies in ``[1, K]`` and equals K
when all weights are equal (the guide is the exact posterior); a datapoint whose weights are
all zero (log weights all ``-inf``) gets 0, as it gets k-hat ``+inf`` and IWAE ``-inf``: values
that flag it, not a refusal. It is a rougher diagnostic:
with heavy tails the sample ESS can look fine while the estimate is poor, which is why k-hat
is reported beside it.

References:
    [1] Vehtari, Simpson, Gelman, Yao, Gabry (2015; JMLR 2024), Pareto smoothed importance
        sampling.
    [2] Kong (1992), A note on importance sampling using standardized weights; Owen (2013),
        Monte Carlo theory, methods and examples, Section 9.3.
    [3] Yao, Vehtari, Simpson, Gelman (2018), Yes, but did it work?: evaluating variational
        inference (k-hat as a diagnostic of variational approximations).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..checks import as_int, check_dense_values, check_pair_call, leaves_buffers
from ..weights import check_num_samples, log_mean_exp, log_weights_for

GOOD_K = 0.5
OK_K = 0.7
# ArviZ fits the tail to the ceil(min(K/5, 3 sqrt(K))) largest weights and needs more than 4.
MIN_PARETO_SAMPLES = 21
# ArviZ and R's loo fit no tail of fewer than 5 draws; a tail of fewer than 5 distinct values
# is atoms, not a tail (pareto_k).
MIN_TAIL_VALUES = 5
# Log weights whose float spacing at the largest exceeds this are not resolved: their ratios
# are rounding (float32 beyond about 1e6 nats, float64 beyond 5e14: unstandardized data).
RESOLUTION_NATS = 0.125


def _check_log_weights(log_w) -> torch.Tensor:
    """``log_w`` checked (a ``[K, batch]`` floating tensor with data, K >= 1, no NaN or
    ``+inf``) and, when it is half precision (float16, bfloat16), as float32: their 3 and 2
    significant digits make ties of distinct weights and overflow the sums, so the
    diagnostics are computed in float32 (results equal those of ``log_w.float()``)."""
    if not torch.is_tensor(log_w):
        raise ValueError(f"log_w must be a torch.Tensor [K, batch], got {type(log_w).__name__}")
    if log_w.dim() != 2:
        raise ValueError(f"log_w must have shape [K, batch], got {list(log_w.shape)}")
    if not log_w.is_floating_point():
        raise ValueError(f"log_w must be a floating-point tensor, got dtype {log_w.dtype}")
    check_dense_values(log_w, "log_w")
    if log_w.shape[0] == 0:
        raise ValueError(f"log_w has no weights (shape {list(log_w.shape)}: K = 0); pass at "
                         "least one weight per column")
    if log_w.dtype.itemsize < 4:
        log_w = log_w.float()
    nan, posinf = torch.isnan(log_w).any(0), torch.isposinf(log_w).any(0)
    if nan.any() or posinf.any():
        raise ValueError(f"log_w (shape {list(log_w.shape)}) contains NaN or +inf entries in "
                         f"columns {(nan | posinf).nonzero().flatten().tolist()[:10]} "
                         f"({int(torch.isnan(log_w).sum())} NaN, "
                         f"{int(torch.isposinf(log_w).sum())} +inf)")
    return log_w


def effective_sample_size(log_w: torch.Tensor) -> torch.Tensor:
    """Kish's effective sample size ``(sum_k w_k)^2 / sum_k w_k^2`` of each column.

    Args:
        log_w: ``[K, batch]`` log importance weights (any additive constant per column).

    Returns:
        ``[batch]`` in ``[1, K]``; K exactly when all weights of a column are equal, and 0 for
        a column whose weights are all zero (``log_w`` all ``-inf``: no usable draw).
        Same dtype as ``log_w``, except float32 for half-precision ``log_w`` (computed in
        float32: float16 holds no ESS above 65504).

    Raises:
        ValueError: ``log_w`` is not a ``[K, batch]`` floating tensor, has K = 0, is a meta
            tensor, or holds NaN or ``+inf``.
    """
    log_w = _check_log_weights(log_w)
    # relative to each column's largest weight, so that float32 keeps the digits
    # (weights of -1e6 nats used to give an ESS above K)
    dead = torch.isneginf(log_w).all(0)
    top = log_w.max(0).values.where(~dead, 0.0)
    relative = log_w - top
    ess = (2 * torch.logsumexp(relative, 0) - torch.logsumexp(2 * relative, 0)).exp()
    return torch.where(dead, 0.0, ess.clamp(max=log_w.shape[0]))


def tail_length(num_samples: int) -> int:
    """M, how many of ``num_samples`` weights make the tail ArviZ fits:
    ``ceil(min(K / 5, 3 sqrt(K)))`` [1]; ``num_samples`` a positive integer."""
    num_samples = as_int(num_samples, "num_samples")
    return math.ceil(min(num_samples / 5.0, 3 * math.sqrt(num_samples)))


def _atomic_tails(log_w: torch.Tensor, finite: torch.Tensor) -> tuple[torch.Tensor,
                                                                      torch.Tensor]:
    """Which columns have an atomic tail, and how often its rarest atom was drawn.

    Atoms are taken from the top down: the largest finite weight left and every weight within
    float rounding below it (64 ulps of the largest, at least of 1; at most a 20th of the
    spread of the M largest where they spread wider than that; no chaining, so that densely
    drawn continuous weights do not merge). A tail is atomic when fewer than
    :data:`MIN_TAIL_VALUES` atoms hold the M largest finite weights (:func:`tail_length`), or
    all finite weights when there are fewer. Returns ``[batch]`` bool, and ``[batch]`` the
    fewest draws among the K that an atom reaching into those M has.
    """
    tail = tail_length(log_w.shape[0])
    left = log_w.where(finite, -math.inf)
    # rounding: 64 ulps of the largest weight; where the M largest spread wider than that, no
    # more than a 20th of their spread (float32 weights near -1e5 nats have ulps of 0.008
    # nats, and 64 of them would merge a resolved continuous tail into a few atoms)
    ordered = left.sort(0, descending=True).values
    last = (finite.sum(0).clamp(max=tail) - 1).clamp(min=0)
    spread = (ordered[0] - ordered.gather(0, last.unsqueeze(0)).squeeze(0)).nan_to_num(0.0)
    rounding = 64 * torch.finfo(log_w.dtype).eps * ordered[0].abs().clamp(min=1.0)
    width = torch.where(spread <= rounding, rounding,
                        torch.minimum(rounding, spread / (4 * MIN_TAIL_VALUES)))
    taken = torch.zeros(log_w.shape[1], dtype=torch.long)
    rarest = torch.full_like(taken, torch.iinfo(torch.long).max)
    for _ in range(MIN_TAIL_VALUES - 1):
        top = left.max(0).values
        member = left.isfinite() & (left >= top - width)
        count = member.sum(0)
        rarest = torch.where((taken < tail) & top.isfinite(), rarest.minimum(count), rarest)
        taken += count
        left = left.where(~member, -math.inf)
    exhausted = (taken >= tail) | ~left.isfinite().any(0)
    return finite.any(0) & exhausted, rarest


def pareto_k(log_w: torch.Tensor) -> torch.Tensor:
    """Pareto-smoothed importance sampling shape estimate k-hat per column [1], via ArviZ.

    Thresholds (module docstring): ``k < 0.5`` good, ``0.5-0.7`` ok, ``> 0.7`` unreliable.

    Weights that take few distinct values at the top (a guide over a few categories, draws
    that are either exact or outside the model's support, equal weights) leave no tail to
    fit. When the M largest finite weights (M = ``ceil(min(K/5, 3 sqrt(K)))``, the tail the
    fit would use) take fewer than 5 distinct values (each up to float rounding),
    a GPD fit is meaningless: ArviZ (like R's ``loo``) gives ``inf`` when one value fills the
    tail and otherwise fits a curve to a few ties, so a guide over 2-10 categories read
    "unreliable" at any K. These weights are atoms: the importance ratio is bounded over
    them and all its moments are finite. The column gets ``-inf`` (no tail: as good as it
    gets) when each of those values was drawn at least 5 times, and ``+inf`` (unreliable)
    when one was drawn fewer times: a large weight seen a handful of times (or a single
    nonzero weight) is a rare atom whose share of the estimate rests on those few draws.
    The effective sample size then says how well the draws cover the atoms.

    Args:
        log_w: ``[K, batch]`` log importance weights with ``K >= 21``.

    Returns:
        ``[batch]`` (same dtype and device as ``log_w``): the GPD fit to the tail; ``-inf``
        or ``+inf`` for an atomic tail as above (all nonzero weights equal up to rounding is
        the case of one atom); ``+inf`` for a column of zero weights only (``log_w`` all
        ``-inf``), a tail fit that fails, or weights too large for their dtype to resolve
        (float spacing above :data:`RESOLUTION_NATS` at the largest: float32 beyond about
        1e6 nats; standardize the data or compute the weights in float64). Half-precision
        ``log_w`` (float16, bfloat16) is read as float32 (its rounding is not taken for
        ties): the k-hats are those of ``pareto_k(log_w.float())``, returned in ``log_w``'s
        dtype.

    Raises:
        ValueError: ``log_w`` is not a ``[K, batch]`` floating tensor, has fewer than 21
            rows, is a meta tensor, or holds NaN or ``+inf``.
    """
    dtype = log_w.dtype if torch.is_tensor(log_w) else None
    log_w = _check_log_weights(log_w)
    if log_w.shape[0] < MIN_PARETO_SAMPLES:
        raise ValueError(
            f"pareto_k needs at least {MIN_PARETO_SAMPLES} weights per column to fit the "
            f"tail, got K={log_w.shape[0]}"
        )
    # (numpy's floating-point errors as numpy's defaults treat them: a caller's
    # np.seterr(all="raise") made the tail fit's harmless underflow in exp an error)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # ArviZ announces its refactor on import
        import arviz

        # ArviZ takes samples along the last axis. Zero weights (-inf) take no part in the
        # tail: a column with fewer nonzero weights than the tail's M is fit on those alone
        # (ArviZ would pad its tail with zeros and flatten the fit: a Pareto tail of k = 0.9
        # with 98% zeros read 0.37, "good"), and with fewer than MIN_PARETO_SAMPLES of them
        # it has no tail to fit (+inf unless atomic, below).
        array = log_w.detach().T.double().cpu().numpy()
        nonzero = np.isfinite(array)
        whole = nonzero.sum(1) >= tail_length(array.shape[1])
        k = np.full(array.shape[0], np.inf)
        if whole.any():
            k[whole] = np.asarray(arviz.psislw(np.ascontiguousarray(array[whole]))[1]).reshape(-1)
        for column in np.flatnonzero(~whole):
            kept = array[column][nonzero[column]]
            if kept.size >= MIN_PARETO_SAMPLES:
                k[column] = float(arviz.psislw(np.ascontiguousarray(kept))[1])
    k = torch.as_tensor(k)
    # the atoms are likewise those of the nonzero weights
    values = log_w.detach().cpu()
    finite = values.isfinite()
    columns = max(1, 2**22 // log_w.shape[0])  # bounds the sorted copies' memory
    parts = [_atomic_tails(values[:, i:i + columns], finite[:, i:i + columns])
             for i in range(0, max(values.shape[1], 1), columns)]
    atomic, rarest = (torch.cat(part) for part in zip(*parts))
    k = torch.where(atomic, torch.where(rarest >= MIN_TAIL_VALUES, -math.inf, math.inf), k)
    # weights whose rounding at the top exceeds RESOLUTION_NATS cannot be compared: their
    # ties and tail are rounding (unstandardized data: log w near -6e10 in float32, spacing
    # 4096 nats, read k-hat -inf with an ESS of 1)
    top = values.where(finite, -math.inf).max(0).values.where(finite.any(0), 0.0)
    spacing = torch.finfo(values.dtype).eps * top.abs()
    k = torch.where(finite.any(0) & (spacing <= RESOLUTION_NATS), k, math.inf)
    return k.to(dtype=dtype, device=log_w.device)


@dataclass
class WeightDiagnostics:
    """Per-datapoint diagnostics of ``K`` importance weights (:func:`weight_diagnostics`).

    Attributes:
        pareto_k: ``[batch]`` k-hat (good < 0.5 <= ok < 0.7 <= unreliable).
        ess: ``[batch]`` effective sample size in ``[1, K]`` (0 where all weights are zero).
        iwae: ``[batch]`` IWAE_K from the same weights, nats.
        num_samples: K.
        subsample: ``[batch]`` indices of the datapoints scored when the model subsamples its
            ``"data"`` plate, else None.
    """

    pareto_k: torch.Tensor
    ess: torch.Tensor
    iwae: torch.Tensor
    num_samples: int
    subsample: torch.Tensor | None = None

    def counts(self) -> dict[str, int]:
        """How many datapoints fall in each k-hat class: ``good``, ``ok``, ``unreliable``."""
        k = self.pareto_k
        return {
            "good": int((k < GOOD_K).sum()),
            "ok": int(((k >= GOOD_K) & (k < OK_K)).sum()),
            "unreliable": int((k >= OK_K).sum()),
        }

    def to_dict(self) -> dict:
        """Summary for strict JSON: the counts, means and the k-hat quantiles over every
        datapoint (nearest rank: a k-hat of ``+inf``, an unreliable datapoint, counts in
        them as it does in ``"unreliable"``); a value that is not finite (such a quantile, the
        IWAE mean of a datapoint of weight zero) is None."""
        k = self.pareto_k.double()
        summary = {
            "num_samples": self.num_samples,
            **self.counts(),
            **{f"pareto_k_q{int(q * 100)}": float(torch.quantile(k, q, interpolation="higher"))
               for q in (0.5, 0.9, 1.0) if k.numel()},
            "ess_mean": float(self.ess.double().mean()),
            "ess_fraction_mean": float(self.ess.double().mean()) / self.num_samples,
            "iwae_mean": float(self.iwae.double().mean()),
        }
        return {key: None if isinstance(value, float) and not math.isfinite(value) else value
                for key, value in summary.items()}


@leaves_buffers
def weight_diagnostics(model: Callable, guide: Callable, *args, num_samples: int = 5000,
                       chunk_size: int | None = 1000, compile: bool | str = False,
                       progress: bool = True, **kwargs) -> WeightDiagnostics:
    """k-hat, effective sample size and IWAE_K of one draw of ``num_samples`` weights.

    Args:
        model, guide: a Pyro pair sharing ``pyro.plate("data", batch)`` (see
            :func:`inference.log_importance_weights`); ``*args``/``**kwargs`` go to both.
        num_samples: K particles per datapoint (at least 21; thousands for a stable k-hat).
        chunk_size: particles per vectorized pass.
        compile: score the chunks through a compiled graph, as in
            :func:`inference.log_importance_weights`.
        progress: False hides the bar a call shows after a second (weights drawn).

    Returns:
        :class:`WeightDiagnostics` with ``[batch]`` tensors.
    """
    check_pair_call(weight_diagnostics, kwargs, args, model=model, guide=guide)
    num_samples, chunk_size = check_num_samples(num_samples, chunk_size)
    if num_samples < MIN_PARETO_SAMPLES:
        raise ValueError(
            f"num_samples must be at least {MIN_PARETO_SAMPLES} for k-hat, got {num_samples}"
        )
    log_w, structure = log_weights_for("weight_diagnostics", model, guide, args, kwargs,
                                       num_samples, chunk_size, compile, progress)
    return WeightDiagnostics(
        pareto_k=pareto_k(log_w),
        ess=effective_sample_size(log_w),
        iwae=log_mean_exp(log_w, 0),
        num_samples=num_samples,
        subsample=structure.data_subsample,
    )
