"""Units of log-likelihoods: nats per datapoint, bits, bits/dim, and dequantization.

Every estimator in :mod:`inference` returns natural-log values per datapoint (nats). Image
and audio results are usually quoted as a *negative* log-likelihood in bits per dimension,

    bits/dim = -log p(x) / (D ln 2),

for ``D`` pixels (times channels) or samples per datapoint, which makes numbers comparable
across image sizes.

Comparing a density with a probability mass. A continuous density p on ``[0, 1]^D`` and a
discrete model P on the integer levels ``k in {0, ..., L-1}^D`` are not measured in the same
units: ``log p`` can be arbitrarily large. With uniform dequantization,
``y = (k + u) / L`` with ``u ~ U[0, 1)^D`` lies in the cell of volume ``L^-D`` that ``k``
owns, so ``P(k) := integral over the cell of p = L^-D E_u[p(y)]`` is a proper mass, and by
Jensen's inequality

    log P(k) >= E_u[log p((k + u) / L)] - D log L            [1, Section 3.1], [2],

with equality when p is constant on each cell. The ``D log L`` term is
:func:`dequantization_correction_nats`; :func:`discrete_log_likelihood_bound` applies it.

References:
    [1] Theis, van den Oord, Bethge (2016), A note on the evaluation of generative models.
    [2] Ho, Chen, Srinivas, Duan, Abbeel (2019), Flow++: improving flow-based generative
        models with variational dequantization and architecture design.
"""

from __future__ import annotations

import math
import numbers

import torch

from .checks import as_int, check_dense_values

LN2 = math.log(2.0)


def _check_log_value(value, name: str, allow: tuple[str, ...] = ()) -> None:
    """Raise ``TypeError`` naming ``name`` unless ``value`` is a real number or a real
    (integer or floating-point) tensor, bools refused, and ``ValueError`` when it holds NaN
    or an infinity that ``allow`` (``"+inf"``, ``"-inf"``: those that mean something there)
    does not name."""
    if torch.is_tensor(value):
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
        check_dense_values(value, name)
        values = value
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            values = torch.tensor(float(value))
        except OverflowError:  # an integer beyond float range
            raise ValueError(f"{name} is {value!r}, beyond float range") from None
    else:
        raise TypeError(f"{name} must be a real number or a tensor, got {type(value).__name__}")
    if not values.is_floating_point():
        return
    for bad, what in ((torch.isnan(values), "NaN"), (torch.isposinf(values), "+inf"),
                      (torch.isneginf(values), "-inf")):
        if what not in allow and bool(bad.any()):
            where = "" if values.dim() == 0 else \
                f" in {int(bad.sum())} of {values.numel()} entries (shape {list(values.shape)})"
            raise ValueError(f"{name} is {what}{where}; it must be finite"
                             f"{' or ' + ' or '.join(allow) if allow else ''}")


def _check_num_dims(value, name: str = "num_dims", minimum: int = 1) -> int:
    """A count of dimensions (or levels): an integer from ``minimum`` below ``2**63``, the
    size no tensor reaches (``10**400`` overflowed the float arithmetic unnamed); returned
    as a Python ``int``: compared as a 0-dim int64 tensor, ``torch.tensor(784) >= 2**63``
    wrapped around to True."""
    value = as_int(value, name, minimum)
    if value >= 2**63:
        raise ValueError(f"{name}={value} is beyond any tensor's size (at most 2**63 - 1)")
    return value


def nats_to_bits(nats: float | torch.Tensor) -> float | torch.Tensor:
    """``nats / ln 2``: the same quantity in base-2 logarithms (real number or tensor
    ``[...]``; infinities convert, NaN is refused). A float16 or bfloat16 tensor comes back
    in float32: 45,000 nats are more bits than float16 holds."""
    _check_log_value(nats, "nats", ("+inf", "-inf"))
    return _widened(nats) / LN2


def _widened(value):
    """``value`` in float32 when it is a float16 or bfloat16 tensor (whose range, 65,504 for
    float16, a conversion of tens of thousands of nats leaves), else as it is."""
    if torch.is_tensor(value) and value.dtype in (torch.float16, torch.bfloat16):
        return value.float()
    return value


def bits_to_nats(bits: float | torch.Tensor) -> float | torch.Tensor:
    """``bits * ln 2`` (real number or tensor ``[...]``; infinities convert, NaN is refused)."""
    _check_log_value(bits, "bits", ("+inf", "-inf"))
    return bits * LN2


def bits_per_dim(nats_per_datapoint: float | torch.Tensor, num_dims: int):
    """Negative log-likelihood in bits per dimension: ``nats_per_datapoint / (D ln 2)``.

    Args:
        nats_per_datapoint: negative log-likelihood ``-log p(x)`` in nats, real number or
            tensor ``[...]`` (pass ``-iwae`` or ``-log_evidence``: a positive number for
            discrete data); ``+inf`` (probability zero) is allowed, NaN and ``-inf`` are not.
        num_dims: D, the number of dimensions of one datapoint (e.g. 784 for a 28x28 image,
            3072 for 32x32x3).

    Returns:
        the same type and shape, in bits/dim (float32 for a half-precision tensor).
    """
    _check_log_value(nats_per_datapoint, "nats_per_datapoint", ("+inf",))
    num_dims = _check_num_dims(num_dims)
    return _widened(nats_per_datapoint) / (num_dims * LN2)


def dequantization_correction_nats(num_dims: int, levels: int = 256) -> float:
    """``D log(levels)``: the nats between a density on ``(k + u) / levels`` and a mass on k.

    ``-log P(k) <= E_u[-log p((k + u) / levels)] + dequantization_correction_nats(D)``
    (module docstring, [1], [2]). For a 28x28 8-bit image: ``784 log 256 = 4347.4`` nats.
    """
    num_dims = _check_num_dims(num_dims)
    levels = _check_num_dims(levels, "levels", 2)
    return num_dims * math.log(levels)


def discrete_log_likelihood_bound(log_density_nats: float | torch.Tensor, num_dims: int,
                                  levels: int = 256):
    """Lower bound on ``log P(k)`` from a continuous density on dequantized data.

    Args:
        log_density_nats: ``E_u[log p((k + u) / levels)]`` (or an estimate or lower bound of
            it, such as an ELBO) per datapoint in nats, real number or tensor ``[...]``, for a
            density on data scaled to ``[0, 1]^D``; ``-inf`` (density zero) is allowed, NaN
            and ``+inf`` are not.
        num_dims: D.
        levels: number of integer levels per dimension (256 for 8-bit data).

    Returns:
        ``log_density_nats - D log(levels)``, the same type and shape (float32 for a
        half-precision tensor): a lower bound on the log-probability of the integer data
        (equality when p is constant on every cell).

    A lower bound on a log-probability cannot exceed 0: by Jensen, ``E_u[log p] <= D
    log(levels)`` for every density on ``[0, 1]^D``. A result above 0 (by more than
    :data:`BOUND_SLACK_NATS_PER_DIM` nats per dimension, room for the Monte Carlo noise of an
    estimate, plus the rounding of the input's dtype) therefore means that ``num_dims``,
    ``levels`` or the data's scaling do not match the density (the channels left out of D,
    data on ``[0, 255]`` instead of ``[0, 1]``), and raises ``ValueError`` saying which
    entries.
    """
    _check_log_value(log_density_nats, "log_density_nats", ("-inf",))
    num_dims, levels = _check_num_dims(num_dims), _check_num_dims(levels, "levels", 2)
    bound = _widened(log_density_nats) - dequantization_correction_nats(num_dims, levels)
    _check_bound_not_positive(bound, log_density_nats, num_dims, levels)
    return bound


BOUND_SLACK_NATS_PER_DIM = 0.01
"""How far above 0 (nats per dimension, 0.0144 bits/dim) :func:`discrete_log_likelihood_bound`
lets a bound go before refusing it: Monte Carlo noise of an estimated ``E_u[log p]``."""


def _check_bound_not_positive(bound, log_density_nats, num_dims: int, levels: int) -> None:
    """``ValueError`` naming ``num_dims``, ``levels`` and the data's scaling when ``bound``
    (a real number or tensor) is above 0 by more than the slack."""
    values = bound if torch.is_tensor(bound) else torch.tensor(float(bound), dtype=torch.float64)
    if not values.is_floating_point() or not values.numel():
        return
    dtype = log_density_nats.dtype if torch.is_tensor(log_density_nats) and \
        log_density_nats.is_floating_point() else torch.float64
    rounding = torch.finfo(dtype).eps * (values.abs() + num_dims * math.log(levels))
    over = values > BOUND_SLACK_NATS_PER_DIM * num_dims + rounding
    if bool(over.any()):
        worst = float(values.max())
        where = "" if values.dim() == 0 else \
            f" in {int(over.sum())} of {values.numel()} entries (shape {list(values.shape)})"
        raise ValueError(
            f"discrete_log_likelihood_bound: the bound on log P(k) is {worst:.6g} nats{where}, "
            f"above 0 ({-worst / (num_dims * LN2):.4g} bits/dim), which no probability has: "
            f"E_u[log p] <= D log(levels) = {num_dims} * log({levels}) for every density on "
            f"[0, 1]^D, so num_dims={num_dims} or levels={levels} does not match the density "
            f"(all dimensions counted, channels included? the density's data scaled to "
            f"[0, 1], as (k + u) / levels?)")
