"""What you can do to any Pyro model/guide pair: train it, bound its evidence, diagnose it.

Every estimator returns one value per datapoint of the ``pyro.plate("data", ...)``.
"""

from .ais import AISResult, ais_log_evidence, annealing_schedule
from .bits_back import bits_back_decode, bits_back_encode
from .coding import (
    decode_images,
    decode_words,
    encode_images,
    encode_words,
    information_bits,
    range_decode,
    range_encode,
)
from .compiled_step import CompiledSVIStep
from .completion import map_complete, metropolis_within_gibbs, observed_channel
from .diagnostics import (
    active_units,
    expected_log_likelihood,
    kl_per_dimension,
    posterior_means,
    probe_accuracy,
)
from .distributed import DataParallel, init_process_group
from .early_stopping import KeepBest
from .estimators import BoundTable, bound_sweep, elbo, iwae_bound, iwae_from_weights
from .exact import ExactEvidence, exact_log_evidence
from .free_bits import FreeBitsELBO, free_bits_terms
from .gaps import GapResult, LocalGaussianGuide, amortization_gap, fit_local_guide
from .objectives import DReGLoss, IWAELoss, make_loss
from .scoring import (
    auroc,
    likelihood_ratio_scores,
    log_evidence,
    nll_scores,
    typicality_scores,
)
from .svi_step import Adam, SVIStep
from .training import fit, resolve_device, save_checkpoint, scale_data_plate, scale_latents
from .units import (
    bits_per_dim,
    bits_to_nats,
    dequantization_correction_nats,
    discrete_log_likelihood_bound,
    nats_to_bits,
)
from .weight_diagnostics import (
    WeightDiagnostics,
    effective_sample_size,
    pareto_k,
    weight_diagnostics,
)
from .weights import log_importance_weights, log_mean_exp

__all__ = [
    "Adam",
    "AISResult",
    "BoundTable",
    "CompiledSVIStep",
    "DataParallel",
    "DReGLoss",
    "ExactEvidence",
    "FreeBitsELBO",
    "GapResult",
    "KeepBest",
    "IWAELoss",
    "LocalGaussianGuide",
    "SVIStep",
    "WeightDiagnostics",
    "active_units",
    "ais_log_evidence",
    "amortization_gap",
    "annealing_schedule",
    "auroc",
    "bits_back_decode",
    "bits_back_encode",
    "bits_per_dim",
    "bits_to_nats",
    "bound_sweep",
    "decode_images",
    "decode_words",
    "dequantization_correction_nats",
    "discrete_log_likelihood_bound",
    "effective_sample_size",
    "elbo",
    "encode_images",
    "encode_words",
    "exact_log_evidence",
    "expected_log_likelihood",
    "fit",
    "fit_local_guide",
    "free_bits_terms",
    "information_bits",
    "init_process_group",
    "iwae_bound",
    "iwae_from_weights",
    "kl_per_dimension",
    "likelihood_ratio_scores",
    "log_evidence",
    "log_importance_weights",
    "log_mean_exp",
    "make_loss",
    "map_complete",
    "metropolis_within_gibbs",
    "nats_to_bits",
    "nll_scores",
    "observed_channel",
    "pareto_k",
    "posterior_means",
    "probe_accuracy",
    "range_decode",
    "range_encode",
    "resolve_device",
    "save_checkpoint",
    "scale_data_plate",
    "scale_latents",
    "typicality_scores",
    "weight_diagnostics",
]
