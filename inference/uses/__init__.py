"""Using a trained model: completing and super-resolving images, scoring outliers, reading its
representations.

Each use states what it needs from a model beyond a model/guide pair as a
:class:`typing.Protocol` (:mod:`inference.protocols`; completion needs an
:class:`EncoderDecoder`) and checks it at the call.
"""

from ..protocols import EncoderDecoder
from .completion import map_complete, metropolis_within_gibbs, observed_channel
from .outliers import auroc, likelihood_ratio_scores, nll_scores, typicality_scores
from .map_search import adam_map
from .representations import (
    active_units,
    expected_log_likelihood,
    kl_per_dimension,
    posterior_means,
    probe_accuracy,
)
from .super_resolution import (
    SuperResolution,
    average_pool,
    super_resolve_gibbs,
    super_resolve_map,
    super_resolve_mh,
    super_resolve_mwg,
)

__all__ = [
    "EncoderDecoder", "SuperResolution", "active_units", "adam_map", "auroc",
    "expected_log_likelihood", "kl_per_dimension",
    "likelihood_ratio_scores", "map_complete", "metropolis_within_gibbs", "nll_scores",
    "observed_channel", "posterior_means", "probe_accuracy", "typicality_scores",
    "average_pool", "super_resolve_gibbs", "super_resolve_map", "super_resolve_mh",
    "super_resolve_mwg",
]
