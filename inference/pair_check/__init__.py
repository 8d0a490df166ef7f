"""One place that inspects a Pyro model/guide pair and decides what each entry point may do.

Every estimator of :mod:`inference.evidence` and :func:`inference.fit` starts by running the
pair once (random state restored, effects hidden from outer handlers, no gradients) through
:func:`survey_pair`, and then asks :func:`check_pair` whether its use of the pair is defined.
Either the pair qualifies, or a ``PairError`` (a ``ValueError``) names the site or plate at
fault and says what the user can do. The survey records:

- the ``"data"`` plate: its size in this call (resolved from the tensors for a sizeless
  ``pyro.plate("data")``), the size it declares (``N`` for ``pyro.plate("data", N,
  subsample_size=B)``) and the indices of an in-model subsample, which every later pass of the
  same call replays (:meth:`PairStructure.fix_subsample`), so that one call uses one subsample;
- sites scaled beyond their plates' subsample scale ``N / B`` (a ``poutine.scale``), which
  the estimators score unscaled and warn about (:class:`TemperedPairWarning`);
- plates other than ``"data"`` that draw a subsample (``pyro.plate("feat", D,
  subsample_size=B)``): a datapoint's evidence would cover only the members drawn;
- latents whose guide and model supports differ (:mod:`inference.supports`): the guide's
  reaching beyond the model's, or the model's beyond the guide's;
- sites outside the ``"data"`` plate (global latents: per-datapoint evidence is undefined);
- latent sites of the model the guide does not sample and guide sites the model lacks;
- auxiliary guide sites (AutoGuides' ``*_unconstrained`` or ``_Auto*_latent``), accepted when
  every other guide site is a ``Delta`` determined by them, as Pyro's AutoGuides build them
  (read from the autograd graph of one draw: a ``Delta`` whose value depends on no auxiliary
  draw is a point mass, and an elementwise one needs its Jacobian as its ``log_density``);
- shapes: every batch dim of a site's density that no plate of the site declares must have
  size 1 (Pyro's ``check_site_shape``, whatever its validation flag), an observed value
  inside ``"data"`` needs a dim for the plate when its event holds several values and is
  not broadcast up to its distribution within a datapoint, plates
  of one name sit at one dim in model and guide, and a guide's support is of the model's
  kind (discrete or continuous);
- guide sites that are not reparameterized (discrete, or ``has_rsample`` False) or enumerated;
- networks built anew on every run (``pyro.module("enc", nn.Linear(4, 4))`` inside the
  guide), refused: each run would draw from another distribution;
- whether the pair runs with particles in a leftmost ``pyro.plate`` (models that do not
  broadcast over a leading dimension get a sequential loop over particles instead).

The checks live in six modules, read in this order:

- :mod:`.sites`: reading a pair's traces (plate names, :class:`PairError`, sample sites, a
  site's family and mask, which guide sites depend on other draws);
- :mod:`.shapes`: shape and plate checks of the sites, and the particle-plate trial run;
- :mod:`.latents`: each latent's guide against the model (supports, scorability, ``Delta``
  sites and their Jacobians);
- :mod:`.networks`: networks the model or guide builds anew on every run, and
  ``PyroParam``s that take an earlier instance's values from Pyro's param store;
- :mod:`.survey`: :func:`survey_pair`, which runs the pair once and applies them, recording
  a :class:`PairStructure`;
- :mod:`.policy`: :func:`check_pair`, which judges a structure for one entry point.

Other modules import from this package, not from its modules.
"""

from .latents import (biased_late_parents, check_observed_values_validated,
                      late_parent_message, late_parents)
from .networks import (AdoptedParamWarning, ShadowedParamWarning, check_store_shapes,
                       forget_params, nonfinite_parameters, shadowed_parameters)
from .policy import (
    COVERAGE_USES,
    FIT_LOSSES,
    JOINT_USE,
    PER_DATAPOINT_USES,
    TRACE_ENUM_FIT,
    TemperedPairWarning,
    attach_subsample,
    check_pair,
    check_subsampled_plates,
    entry_label,
    inspect_pair,
    renamed_plate_error,
    warn_if_tempered,
)
from .sites import (
    DATA_PLATE,
    NOT_A_DENSITY,
    PARTICLE_PLATE,
    DrawsAsLeaves,
    PairError,
    check_sites_as_surveyed,
    conditional_sites_in_trace,
    conditional_sites_of_guide,
    conditioned_rows,
    data_frame,
    distribution_masked,
    family,
    is_delta,
    masked_off,
    own_mask,
    per_batch_element,
    sample_sites,
    scored_elements,
    site_list,
    site_mask,
    tensor_text,
    trace_pair,
)
from .survey import (
    PairStructure,
    stale_parameters_error,
    stored_shapes_checked,
    survey_pair,
)

__all__ = [
    "AdoptedParamWarning",
    "ShadowedParamWarning",
    "check_store_shapes",
    "forget_params",
    "COVERAGE_USES",
    "DATA_PLATE",
    "DrawsAsLeaves",
    "FIT_LOSSES",
    "JOINT_USE",
    "NOT_A_DENSITY",
    "PARTICLE_PLATE",
    "PER_DATAPOINT_USES",
    "PairError",
    "PairStructure",
    "TRACE_ENUM_FIT",
    "TemperedPairWarning",
    "attach_subsample",
    "biased_late_parents",
    "check_observed_values_validated",
    "check_pair",
    "renamed_plate_error",
    "check_sites_as_surveyed",
    "check_subsampled_plates",
    "conditional_sites_in_trace",
    "conditional_sites_of_guide",
    "conditioned_rows",
    "data_frame",
    "distribution_masked",
    "family",
    "entry_label",
    "inspect_pair",
    "is_delta",
    "masked_off",
    "nonfinite_parameters",
    "own_mask",
    "per_batch_element",
    "late_parent_message",
    "late_parents",
    "sample_sites",
    "site_list",
    "shadowed_parameters",
    "scored_elements",
    "site_mask",
    "stale_parameters_error",
    "stored_shapes_checked",
    "survey_pair",
    "tensor_text",
    "trace_pair",
    "warn_if_tempered",
]
