"""Outlier scores from density models, and how well they separate outliers (AUROC).

Every score here is an *anomaly score*: higher means more unusual. Given a model's
``log p(x)`` (exact for autoregressive models, the IWAE bound for a VAE,
:func:`inference.log_evidence`):

- ``nll``: ``-log p(x)``, the obvious score, which fails when outliers are *simpler* than the
  training data: a model of Fashion-MNIST gives MNIST digits (or blank images) a higher
  likelihood than its own test set [1];
- ``likelihood ratio``: ``-(log p(x) - log p_0(x))`` for a background model ``p_0`` that
  shares the low-level statistics that inflate the likelihood of simple inputs (a model trained
  on perturbed data [2], a local model of low capacity, or a general-purpose compressor [3]);
  the ratio keeps what the full model explains beyond them;
- ``typicality``: ``| -(1/M) sum_m log p(x_m) - H |`` over groups of ``M`` inputs, with ``H``
  the mean ``-log p`` of held-out inliers [4]: inputs far too likely are flagged as well as
  inputs far too unlikely.

:func:`auroc` is the area under the ROC curve of a score, outliers as positives: 1 separates
perfectly, 0.5 is chance and below 0.5 means the score ranks outliers as *more* normal.

References:
    [1] Nalisnick, Matsukawa, Teh, Gorur, Lakshminarayanan (2019), Do deep generative models
        know what they don't know?, ICLR.
    [2] Ren, Liu, Fertig, Snoek, Poplin, DePristo, Dillon, Lakshminarayanan (2019),
        Likelihood ratios for out-of-distribution detection, NeurIPS.
    [3] Serra, Alvarez, Gomez, Slizovskaia, Nunez, Luque (2020), Input complexity and
        out-of-distribution detection with likelihood-based generative models, ICLR.
    [4] Nalisnick, Matsukawa, Teh, Lakshminarayanan (2019), Detecting out-of-distribution
        inputs to deep generative models using typicality, arXiv:1906.02994.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from ..checks import as_int, check_dense_values


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _scores(values, name: str) -> np.ndarray:
    """``values`` (tensor, array or list) as a non-empty 1-D array of real numbers without NaN
    (``+inf`` and ``-inf`` are scores: ``nll_scores`` gives ``+inf`` to an input of density
    zero, the clearest outlier; infinities of one sign tie). Floating tensors become float64
    and integers keep their dtype; a list holding integers that numpy would round into
    float64 (beyond ``2**53``, or beyond int64 beside negative values) or cannot hold (beyond
    64 bits) becomes an object array of the Python numbers themselves."""
    check_dense_values(values, name)
    if torch.is_tensor(values):
        if values.dtype == torch.bool or values.is_complex():
            raise TypeError(f"{name} must hold real scores, got dtype {values.dtype}")
        values = values.detach().cpu()
        values = (values.double() if values.is_floating_point() else values).numpy()
    array = np.asarray(values)
    if (not isinstance(values, np.ndarray) and array.ndim == 1 and array.dtype.kind in "fO"
            and any(isinstance(v, numbers.Integral) and abs(v) > 2**53 for v in values)):
        array = np.array(list(values), dtype=object)
    if array.dtype.kind not in "iufO" or (array.dtype.kind == "O" and
                                          not all(map(_is_real, array.flat))):
        raise TypeError(f"{name} must hold real scores, got dtype {array.dtype}")
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of scores, got shape "
                         f"{list(array.shape)}")
    nan = (np.isnan(array) if array.dtype.kind == "f" else
           np.array([not isinstance(v, numbers.Integral) and math.isnan(v) for v in array])
           if array.dtype.kind == "O" else np.zeros(array.shape, bool))
    if nan.any():
        raise ValueError(f"{name} holds {int(nan.sum())} NaN score(s) (first at index "
                         f"{int(nan.nonzero()[0][0])}): NaN has no rank")
    return array


def _exactly_comparable(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b`` (from :func:`_scores`) in one dtype that orders them as the real numbers
    they hold: numpy's common dtype, exact for every promotion but 64-bit integers into
    float64 (which rounds beyond ``2**53``, and is numpy's choice for int64 with uint64);
    then, and for object arrays, arrays of Python ints and floats, which Python compares
    exactly."""
    dtype = np.result_type(a, b)
    if dtype.kind == "f" and any(x.dtype.kind in "iu" and x.dtype.itemsize == 8 and
                                 (x.min() < -2**53 or x.max() > 2**53) for x in (a, b)):
        dtype = np.dtype(object)
    if dtype.kind == "O":
        return np.array(a.tolist(), dtype=object), np.array(b.tolist(), dtype=object)
    return a.astype(dtype), b.astype(dtype)


def auroc(inlier_scores, outlier_scores) -> float:
    """Area under the ROC curve of anomaly scores, outliers as the positive class.

    Args:
        inlier_scores: ``[n_in]``, a tensor, array or list of real numbers, no NaN. Scores
            are compared as the numbers they are: integers of any size (Python ints beyond 64
            bits included) exactly, also against floats; ``+inf`` ranks above every finite
            score (``nll_scores`` of an input of density zero) and ``-inf`` below, equal
            infinities tie.
        outlier_scores: ``[n_out]``, as ``inlier_scores``.

    Returns:
        the probability that a random outlier scores above a random inlier (ties count half).

    Raises:
        TypeError: scores that are not real numbers (complex, bool, text).
        ValueError: empty or not 1-D scores, or a NaN score (naming the argument and index).
    """
    inliers, outliers = _exactly_comparable(_scores(inlier_scores, "inlier_scores"),
                                            _scores(outlier_scores, "outlier_scores"))
    inliers = np.sort(inliers)
    outliers = np.sort(outliers)  # sorted queries: searchsorted walks the inliers once, in
    # cache order (unsorted, 4 million took 19 s against 1.5 s)
    below = np.searchsorted(inliers, outliers, side="left")  # inliers < each outlier
    not_above = np.searchsorted(inliers, outliers, side="right")  # inliers <= each outlier
    twice_wins = int(below.sum()) + int(not_above.sum())  # a tie counts half
    return twice_wins / (2 * len(inliers) * len(outliers))


def _log_densities(log_p, name: str, zero_density_allowed: bool = False) -> torch.Tensor:
    """``log_p`` checked: a 1-D real tensor without NaN or ``+inf`` (nor ``-inf``, density
    zero, unless ``zero_density_allowed``); integers are converted to the default float
    dtype."""
    if not torch.is_tensor(log_p):
        raise TypeError(f"{name} must be a tensor [n] of log densities, got "
                        f"{type(log_p).__name__}")
    if log_p.dtype == torch.bool or log_p.is_complex():
        raise TypeError(f"{name} must hold real log densities, got dtype {log_p.dtype}")
    if log_p.dim() != 1:
        raise ValueError(f"{name} must be [n], got shape {list(log_p.shape)}")
    check_dense_values(log_p, name)
    if not log_p.is_floating_point():
        log_p = log_p.to(torch.get_default_dtype())
    bad = torch.isnan(log_p) | (log_p == math.inf)
    if not zero_density_allowed:
        bad |= log_p == -math.inf
    if bad.any():
        what = "NaN or +inf" if zero_density_allowed else "NaN or infinite"
        raise ValueError(f"{name} holds {int(bad.sum())} {what} log densities (first at "
                         f"index {int(bad.nonzero()[0])})")
    return log_p


def nll_scores(log_p: torch.Tensor) -> torch.Tensor:
    """``-log p(x)``: ``[n]`` -> ``[n]`` (``+inf`` where the model gives density zero)."""
    return -_log_densities(log_p, "log_p", zero_density_allowed=True)


def likelihood_ratio_scores(log_p: torch.Tensor, background_log_p: torch.Tensor) -> torch.Tensor:
    """``-(log p(x) - log p_0(x))`` of a model and its background model [2]: ``[n]``, ``[n]``
    -> ``[n]``, in the two inputs' dtype promoted together, float32 at least: the difference
    of two finite float16 log densities can overflow float16 (60000 - -60000).

    A log density of ``-inf`` (density zero) is a value: ``log_p = -inf`` beside a finite
    background gives ``+inf`` (the model rules out what the background allows: the clearest
    outlier), a finite ``log_p`` beside ``background_log_p = -inf`` gives ``-inf``. Both
    ``-inf`` at one input (a ratio 0/0, whose score would be NaN), NaN or ``+inf`` raise
    ``ValueError`` naming the index."""
    log_p = _log_densities(log_p, "log_p", zero_density_allowed=True)
    background_log_p = _log_densities(background_log_p, "background_log_p",
                                      zero_density_allowed=True)
    if log_p.shape != background_log_p.shape:
        raise ValueError(f"log_p {list(log_p.shape)} and background_log_p "
                         f"{list(background_log_p.shape)} must have the same shape")
    both = (log_p == -math.inf) & (background_log_p == -math.inf)
    if both.any():
        raise ValueError(f"log_p and background_log_p are both -inf at {int(both.sum())} "
                         f"input(s) (first at index {int(both.nonzero()[0])}): the ratio 0/0 "
                         "has no score")
    dtype = torch.promote_types(torch.promote_types(log_p.dtype, background_log_p.dtype),
                                torch.float32)
    return background_log_p.to(dtype) - log_p.to(dtype)


def typicality_scores(log_p: torch.Tensor, reference_log_p: torch.Tensor,
                      group_size: int = 1) -> torch.Tensor:
    """Distance of the mean ``-log p`` of each group of inputs from the inliers' entropy [4].

    Args:
        log_p: ``[n]``, scored in consecutive groups of ``group_size`` (a trailing partial
            group is dropped); ``-inf`` (density zero) makes its group's score ``+inf``.
        reference_log_p: ``[m]`` of held-out inliers, ``m >= 1``, finite (``-inf`` would
            make ``H`` and every score infinite); ``H = -mean(reference_log_p)``.
        group_size: a positive integer ``<= n``.

    Returns:
        ``[n // group_size]``: ``| -mean(log_p of the group) - H |``, in the dtype of
        ``log_p`` and ``reference_log_p`` promoted together. Computed in float64, with means
        summed from ``value / count`` so that no finite input overflows them; a score beyond
        the returned dtype's range is ``inf``, never NaN.
    """
    log_p = _log_densities(log_p, "log_p", zero_density_allowed=True)
    reference_log_p = _log_densities(reference_log_p, "reference_log_p")
    if reference_log_p.shape[0] == 0:
        raise ValueError("reference_log_p is empty: the inliers' entropy H needs at least one "
                         "held-out log density")
    group_size = as_int(group_size, "group_size")
    if log_p.shape[0] < group_size:
        raise ValueError(f"need log_p [n] with n >= group_size >= 1, got {list(log_p.shape)} "
                         f"and group_size={group_size}")
    dtype = torch.promote_types(log_p.dtype, reference_log_p.dtype)
    entropy = -(reference_log_p.double() / reference_log_p.shape[0]).sum()
    groups = log_p.shape[0] // group_size
    means = (log_p[:groups * group_size].double() / group_size).reshape(groups, group_size).sum(1)
    return (-means - entropy).abs().to(dtype)
