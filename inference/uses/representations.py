"""Diagnostics of a trained latent-variable model: posterior collapse and representations.

References:
    [1] Burda, Grosse, Salakhutdinov (2015), Importance Weighted Autoencoders (active units).
    [2] Alain and Bengio (2016), Understanding intermediate layers using linear classifier
        probes.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from pyro import poutine
from pyro.distributions import Independent, Normal
from torch.distributions import kl_divergence

from ..checks import check_finite_tensor, check_int, check_program
from ..pair_check import DATA_PLATE, data_frame
from ..weights import (
    trace_pair,
    check_finite_inputs,
    inspect_pair,
    trace_log_density,
    vectorized_traces,
)


def _latent_pair(model, guide, site, args, kwargs):
    check_finite_inputs(args, kwargs)
    with poutine.block(), torch.no_grad():
        model_trace, guide_trace = trace_pair(model, guide, args, kwargs)
    if site not in guide_trace.nodes or site not in model_trace.nodes:
        raise ValueError(f"no latent site '{site}' in both model and guide")
    return model_trace, guide_trace


def _base_normal(fn) -> Normal:
    while isinstance(fn, Independent):
        fn = fn.base_dist
    if not isinstance(fn, Normal):
        raise NotImplementedError(
            f"per-dimension diagnostics need diagonal Normal distributions, got {type(fn).__name__}"
        )
    return fn


def kl_per_dimension(model: Callable, guide: Callable, *args, site: str = "z",
                     **kwargs) -> torch.Tensor:
    """Analytic ``KL(q(z_j | x) || p(z_j))`` per latent dimension, averaged over the batch.

    Needs diagonal Normal prior and guide at ``site``, whose value is ``[batch, latent_dim]``
    with ``batch`` the dim of ``pyro.plate("data")``, or ``[batch]`` for a latent of one
    dimension (``latent_dim = 1``); other shapes raise ``ValueError``.

    Returns:
        ``[latent_dim]`` in nats; dimensions near zero carry no information (collapsed).
    """
    model_trace, guide_trace = _latent_pair(model, guide, site, args, kwargs)
    node = guide_trace.nodes[site]
    value, frame = node["value"], data_frame(node)
    # position of the data dim in the value (batch dims, then event dims)
    if frame is None or value.dim() not in (1, 2) or \
            value.dim() - node["fn"].event_dim + frame.dim != 0:
        where = "outside" if frame is None else "in"
        raise ValueError(
            f"kl_per_dimension: site '{site}' {where} pyro.plate('{DATA_PLATE}') has value "
            f"shape {list(value.shape)}; expected [batch, latent_dim] (or [batch] for a "
            f"one-dimensional latent) with batch the dim of pyro.plate('{DATA_PLATE}')")
    q = _base_normal(node["fn"])
    p = _base_normal(model_trace.nodes[site]["fn"])
    kl = kl_divergence(q, p).expand(value.shape)  # [batch, latent_dim] or [batch]
    return kl.reshape(value.shape[0], -1).mean(0)


def posterior_means(guide: Callable, *args, site: str = "z", **kwargs) -> torch.Tensor:
    """Mean of the guide's ``q(z | x)`` at ``site`` for every datapoint, ``[batch, latent_dim]``."""
    check_program(guide, "guide")
    check_finite_inputs(args, kwargs)
    with poutine.block(), torch.no_grad():
        trace = poutine.trace(guide).get_trace(*args, **kwargs)
    if site not in trace.nodes:
        raise ValueError(f"the guide has no site '{site}'")
    fn = trace.nodes[site]["fn"]
    return fn.mean.expand(trace.nodes[site]["value"].shape)


def active_units(means: torch.Tensor, threshold: float = 0.01) -> tuple[int, torch.Tensor]:
    """Count latent dimensions whose posterior mean varies across data [1].

    Args:
        means: ``[batch, latent_dim]`` posterior means (see :func:`posterior_means`).
        threshold: a unit is active when ``Var_x(E_q[z_j])`` exceeds it (0.01 as in [1]).

    Returns:
        the number of active units and the per-dimension variances ``[latent_dim]``.
    """
    if not torch.is_tensor(means):
        raise TypeError(f"means must be a tensor [batch, latent_dim] (posterior_means), got "
                        f"{type(means).__name__}")
    if means.dim() != 2 or means.shape[0] < 2:
        raise ValueError(f"means must be [batch >= 2, latent_dim], got {list(means.shape)}")
    check_finite_tensor(means, "means")
    variance = means.var(0)
    return int((variance > threshold).sum()), variance


def expected_log_likelihood(model: Callable, guide: Callable, *args, num_samples: int = 1,
                            **kwargs) -> torch.Tensor:
    """Reconstruction term ``E_q[log p(x | z)]`` per datapoint, ``[batch]`` in nats.

    Computed from the observed sites of the model's trace, averaged over ``num_samples``
    (a positive integer) draws of ``z ~ q(z | x)``; ``-inf`` where a draw gives the data
    density zero, ``ValueError`` naming the datapoints where it is NaN or ``+inf``.
    """
    check_int(num_samples, "num_samples")
    check_finite_inputs(args, kwargs)
    structure = inspect_pair(model, guide, args, kwargs)
    with poutine.block(), torch.no_grad():
        model_trace, _ = vectorized_traces(model, guide, args, kwargs, num_samples,
                                           structure.max_plate_nesting + 1)
        log_lik = trace_log_density(model_trace, structure, num_samples, observed=True)
    if not torch.is_tensor(log_lik):
        raise ValueError("expected_log_likelihood: the model has no observed site")
    log_lik = log_lik.expand(num_samples, structure.batch_size)  # [num_samples, batch]
    for bad, what in ((torch.isnan(log_lik).any(0), "NaN"),
                      (torch.isposinf(log_lik).any(0), "+inf")):
        if bad.any():
            raise ValueError(f"expected_log_likelihood: log p(x | z) is {what} for datapoints "
                             f"{bad.nonzero().flatten().tolist()[:10]}")
    return log_lik.mean(0)


def probe_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor,
                   test_features: torch.Tensor, test_labels: torch.Tensor,
                   max_iter: int = 2000) -> float:
    """Test accuracy of a logistic-regression probe on frozen features [2].

    Args:
        train_features: ``[n_train, k]``; test_features: ``[n_test, k]``; labels ``[n]`` ints.

    Features are standardized with the training statistics first.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def numpy(t):
        return t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)

    if train_features.shape[0] != train_labels.shape[0]:
        raise ValueError("train_features and train_labels disagree on the number of rows")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    probe.fit(numpy(train_features), numpy(train_labels))
    return float(probe.score(numpy(test_features), numpy(test_labels)))
