"""Estimating evidence: per-datapoint bounds and estimates of ``log p(x)`` for any pair.

ELBO and IWAE_K (:mod:`.estimators`), the evidence of the whole data for pairs with global
latents (:mod:`.joint`), exact evidence by quadrature (:mod:`.exact`), annealed
importance sampling (:mod:`.ais`), how trustworthy importance weights are
(:mod:`.weight_diagnostics`) and the amortization/approximation gaps (:mod:`.gaps`).
"""

from .ais import AISResult, ais_log_evidence, annealing_schedule
from .estimators import BoundTable, bound_sweep, elbo, iwae_bound, iwae_from_weights, log_evidence
from .exact import ExactEvidence, exact_log_evidence
from .joint import JointEvidence, joint_log_evidence
from .gaps import GapResult, LocalGaussianGuide, amortization_gap, fit_local_guide
from .weight_diagnostics import (
    WeightDiagnostics,
    effective_sample_size,
    pareto_k,
    weight_diagnostics,
)

__all__ = [
    "AISResult", "BoundTable", "ExactEvidence", "GapResult", "JointEvidence", "LocalGaussianGuide",
    "WeightDiagnostics", "ais_log_evidence", "amortization_gap", "annealing_schedule",
    "bound_sweep", "effective_sample_size", "elbo", "exact_log_evidence", "fit_local_guide",
    "iwae_bound", "iwae_from_weights", "joint_log_evidence", "log_evidence", "pareto_k",
    "weight_diagnostics",
]
