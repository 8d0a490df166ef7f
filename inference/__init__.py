"""What you can do to any Pyro model/guide pair, one sub-package per verb.

- :mod:`inference.evidence`: estimate ``log p(x)`` per datapoint (ELBO, IWAE_K, AIS, exact
  quadrature), or ``log p(x_1..N)`` of the whole data for pairs with global latents
  (:func:`joint_log_evidence`), and judge the estimates (weight diagnostics, amortization
  gaps);
- :mod:`inference.training`: train the pair by SVI (:func:`fit`, steppers, objectives);
- :mod:`inference.uses`: use a trained model (completion, outlier scores, representations);
- :mod:`inference.coding`: compress with it (range coding, bits-back coding).

Shared by all of them: :mod:`inference.pair_check` (one survey of a pair decides what each
entry point may do with it, or refuses naming the construct), :mod:`inference.weights`
(importance weights), :mod:`inference.units` (nats, bits, bits per dimension),
:mod:`inference.checks` and :mod:`inference.protocols` (what the uses and coders need
from a model beyond a pair), :mod:`inference.torch_pages` (torch's constant tables mapped
once at import, for its vector math's speed).
Every estimator returns one value per datapoint of the ``pyro.plate("data", ...)``, except
:func:`joint_log_evidence`, one value for all the data.
"""

from .coding import (
    bits_back_decode,
    bits_back_encode,
    decode_images,
    decode_words,
    encode_images,
    encode_words,
    information_bits,
    range_decode,
    range_encode,
)
from .evidence import (
    AISResult,
    BoundTable,
    ExactEvidence,
    GapResult,
    JointEvidence,
    LocalGaussianGuide,
    WeightDiagnostics,
    ais_log_evidence,
    amortization_gap,
    annealing_schedule,
    bound_sweep,
    effective_sample_size,
    elbo,
    exact_log_evidence,
    fit_local_guide,
    iwae_bound,
    iwae_from_weights,
    joint_log_evidence,
    log_evidence,
    pareto_k,
    weight_diagnostics,
)
from .pair_check import (
    AdoptedParamWarning,
    PairError,
    PairStructure,
    TemperedPairWarning,
    check_pair,
    survey_pair,
)
from .protocols import BernoulliLatentModel, EncoderDecoder, MarkovTextModel, require
from .training import (
    Adam,
    CheckpointError,
    CompiledSVIStep,
    DataParallel,
    DReGLoss,
    FreeBitsELBO,
    IWAELoss,
    KeepBest,
    MeanFieldELBO,
    MinibatchPlan,
    SVIStep,
    fit,
    free_bits_terms,
    init_process_group,
    make_loss,
    plan_minibatches,
    resolve_device,
    save_checkpoint,
    scale_data_plate,
    scale_latents,
)
from .units import (
    bits_per_dim,
    bits_to_nats,
    dequantization_correction_nats,
    discrete_log_likelihood_bound,
    nats_to_bits,
)
from .uses import (
    SuperResolution,
    active_units,
    adam_map,
    auroc,
    average_pool,
    expected_log_likelihood,
    kl_per_dimension,
    likelihood_ratio_scores,
    map_complete,
    metropolis_within_gibbs,
    nll_scores,
    observed_channel,
    posterior_means,
    probe_accuracy,
    super_resolve_gibbs,
    super_resolve_map,
    super_resolve_mh,
    super_resolve_mwg,
    typicality_scores,
)
from .torch_pages import map_torch_constants
from .weights import log_importance_weights, log_mean_exp

# torch's vector log1p, softplus and expm1 run 6-10x faster once their constants' pages are
# mapped (AMD processors; inference/torch_pages.py). Once per process, no result changes.
map_torch_constants()

__all__ = [
    "AdoptedParamWarning",
    "Adam",
    "AISResult",
    "BernoulliLatentModel",
    "BoundTable",
    "CheckpointError",
    "CompiledSVIStep",
    "DataParallel",
    "DReGLoss",
    "EncoderDecoder",
    "ExactEvidence",
    "FreeBitsELBO",
    "GapResult",
    "JointEvidence",
    "KeepBest",
    "IWAELoss",
    "LocalGaussianGuide",
    "MarkovTextModel",
    "MeanFieldELBO",
    "MinibatchPlan",
    "PairError",
    "PairStructure",
    "SVIStep",
    "SuperResolution",
    "TemperedPairWarning",
    "WeightDiagnostics",
    "active_units",
    "adam_map",
    "average_pool",
    "ais_log_evidence",
    "amortization_gap",
    "annealing_schedule",
    "auroc",
    "bits_back_decode",
    "bits_back_encode",
    "bits_per_dim",
    "bits_to_nats",
    "bound_sweep",
    "check_pair",
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
    "joint_log_evidence",
    "kl_per_dimension",
    "likelihood_ratio_scores",
    "log_evidence",
    "log_importance_weights",
    "log_mean_exp",
    "make_loss",
    "map_complete",
    "map_torch_constants",
    "metropolis_within_gibbs",
    "nats_to_bits",
    "nll_scores",
    "observed_channel",
    "plan_minibatches",
    "pareto_k",
    "posterior_means",
    "probe_accuracy",
    "require",
    "range_decode",
    "range_encode",
    "resolve_device",
    "save_checkpoint",
    "scale_data_plate",
    "scale_latents",
    "super_resolve_gibbs",
    "super_resolve_map",
    "super_resolve_mh",
    "super_resolve_mwg",
    "survey_pair",
    "typicality_scores",
    "weight_diagnostics",
]
