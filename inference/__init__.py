"""What you can do to any Pyro model/guide pair: train it, bound its evidence, diagnose it.

Every estimator returns one value per datapoint of the ``pyro.plate("data", ...)``.
"""

from .diagnostics import (
    active_units,
    expected_log_likelihood,
    kl_per_dimension,
    posterior_means,
    probe_accuracy,
)
from .estimators import BoundTable, bound_sweep, elbo, iwae_bound, iwae_from_weights
from .exact import ExactEvidence, exact_log_evidence
from .objectives import DReGLoss, IWAELoss, make_loss
from .training import fit, resolve_device, save_checkpoint, scale_data_plate, scale_latents
from .weights import log_importance_weights, log_mean_exp

__all__ = [
    "active_units",
    "expected_log_likelihood",
    "kl_per_dimension",
    "posterior_means",
    "probe_accuracy",
    "BoundTable",
    "DReGLoss",
    "ExactEvidence",
    "IWAELoss",
    "bound_sweep",
    "elbo",
    "exact_log_evidence",
    "fit",
    "iwae_bound",
    "iwae_from_weights",
    "log_importance_weights",
    "log_mean_exp",
    "make_loss",
    "resolve_device",
    "save_checkpoint",
    "scale_data_plate",
    "scale_latents",
]
