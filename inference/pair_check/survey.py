"""The survey of a pair: one run of model and guide recorded as a :class:`PairStructure`
(what :func:`inference.pair_check.check_pair` judges per entry point).
"""

from __future__ import annotations

import functools
import math
import os
import re
import traceback
import warnings

from dataclasses import dataclass, field, replace
from typing import Callable

import pyro
import torch
from pyro import poutine
from pyro.distributions import ImproperUniform, Unit, constraints
from pyro.distributions.torch_distribution import TorchDistributionMixin
from pyro.infer.autoguide import AutoGuideList
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites, site_is_subsample
from torch.distributions import biject_to

from ..checks import (arguments_changed, check_no_inference_tensors, check_pair_arguments,
                      check_program_arguments, copied_arguments, explain_index_dtype,
                      explain_run_failure, validation_enabled, validation_on)
from ..effect_guides import traceable_guide
from ..supports import declared_support, discrete_support
from ..random_state import forked_rng
from ..reachable import reachable_modules
from .latents import (
    check_latents_scorable,
    check_observed_values,
    check_observed_values_validated,
    check_support_kinds,
    delta_dependence,
    dependent_late_parents,
    draw_dependent_supports,
    gaps_the_data_rule_out,
    jacobian_error,
    late_parents,
    measure_zero_supports,
    replay_model,
    support_gaps,
    support_mismatches,
    unscorable_sites,
)
from .networks import (
    check_store_shapes,
    confirmed_shadowed,
    forget_params,
    nonfinite_param_sites,
    nonfinite_parameters,
    pyro_params_held,
    rebuilt_network_message,
    rebuilt_networks,
    warn_adopted,
)
from .shapes import (
    NO_INVERSE,
    check_batch_dims,
    check_latents_agree,
    check_mask_shapes,
    check_observed_broadcast,
    check_observed_data_dims,
    check_plate_dims,
    check_plate_order,
    mask_mismatches,
    row_mismatches,
    sequential_data_plate,
    subsampled_plates,
    tempered_sites,
    try_vectorized,
)
from .sites import (
    DATA_PLATE,
    NOT_A_DENSITY,
    PairError,
    conditional_sites_of_guide,
    data_frame,
    distribution_masked,
    family,
    is_delta,
    is_factor,
    is_weighted_delta,
    latent_dependencies_of_pair,
    param_requires_grad,
    sample_sites,
    site_data_size,
    site_list,
    site_mask,
    sites_moved_by_auxiliary,
    trace_signature,
    unrecorded_randomness,
    unused_auxiliary_sites,
    unwrapped,
)


@dataclass(frozen=True)
class PairStructure:
    """What one unvectorized run of a model/guide pair reveals (:func:`survey_pair`).

    Attributes:
        max_plate_nesting: number of batch dims used by plates (the particle plate goes left).
        batch_size: number of datapoints of the ``"data"`` plate in this call (the minibatch
            or subsample size; resolved from the tensors for a sizeless plate).
        data_size: the size the ``"data"`` plate declares (``N`` of ``pyro.plate("data", N,
            subsample_size=B)``), None for a sizeless plate.
        data_sizes: ``(role, size)``: the size each of model and guide declares for its
            ``"data"`` plate (this call's rows for a sizeless one); Pyro scales each side's
            sites by its own ``size / rows``.
        subsample: ``{plate name: [size] indices}`` drawn by subsampled plates in this run
            (empty when nothing is subsampled); :meth:`fix_subsample` replays them.
        tempered: ``(site, scale)`` of sample sites whose scale is more than their plates'
            subsample scale (``N / B``): a ``poutine.scale`` (a tempered likelihood, a
            beta-VAE's weighted prior) or per-datapoint weights (``scale`` is None for a
            tensor of differing entries).
        support_mismatch: ``(site, guide family, guide support, model family, model
            support)`` of guide latents whose support is known to reach outside the model's
            (:func:`inference.supports.support_within`).
        support_gap: the same for latents whose model support is known to reach beyond the
            guide's (a ``LogNormal`` guide for a ``Normal`` latent): the guide never proposes
            part of the posterior's mass.
        measure_zero_support: latent sites of :attr:`support_mismatch` whose model support
            has measure zero (a simplex, a Cholesky factor): no guide draw has a weight.
        unscorable: latent sites of :attr:`support_mismatch` whose model distribution cannot
            score a value outside its support at all (a ``Categorical`` indexes its
            probabilities with the value).
        subsampled_plates: ``(plate, subsample size, full size)`` of plates other than
            ``"data"`` that draw a subsample.
        factors: model sites that are a ``pyro.factor``.
        global_sites: ``("model" | "guide", name)`` of sample sites outside ``"data"``.
        renamed_data_plates: ``("model" | "guide", name, plate)`` of those among them inside
            a plate with the dim and size of the other program's ``"data"`` for the same
            site: a plate named otherwise (Pyro matches plates by name).
        global_observed: observed model sites outside ``"data"``.
        non_reparameterized: guide latent sites without a reparameterized sampler.
        discrete: guide latent sites with discrete support.
        enumerated: guide sites marked for enumeration.
        auxiliary: guide-only sites marked ``infer={"is_auxiliary": True}``.
        missing_in_guide, missing_in_model: latent site names one side lacks (the model's
            enumerated sites of :attr:`model_enumerated` are not missing).
        intervened: model latent sites that a ``pyro.poutine.do`` intervention keeps as
            draws of their own (the sites after them read the intervened value).
        model_enumerated: latent sites of the model marked for enumeration
            (``infer={"enumerate": ...}``, ``config_enumerate``) that the guide does not
            sample: the weights sum them out (:mod:`inference.enumeration`).
        sequential_enumerated: those of them marked ``"sequential"``, not ``"parallel"``.
        vectorizable: whether the pair runs with particles in a leftmost plate.
        vectorize_error: the error of the vectorized trial run when it failed.
        shared_in_sizeless: sites of a sizeless ``"data"`` plate without a data dimension.
        guide_families: ``{latent site: distribution class name}`` of the guide.
        model_latents: latent site names of the model.
        late_parents: ``(site, parent)`` of latents with a registered closed-form KL whose
            model parent ``parent`` the guide samples after them
            (:func:`.latents.late_parents`): ``"meanfield"``'s analytic KL would be biased.
        point_masses: guide sites that are a ``Delta`` (AutoDelta; an AutoGuide's latents,
            functions of its auxiliary sites).
        weighted_deltas: those of them with a nonzero ``log_density`` (an AutoGuide's
            Jacobian term, or a user's ``log q`` of a draw made outside the guide).
        trainable: whether model or guide touch a parameter that requires a gradient.
        shadowed: param sites of a network parameter that Pyro's param store shadows (a
            loaded store beside a fresh network: the network computes with its own).
        row_mismatch: ``(site, rows of its observed value, plate size)`` for observed sites
            whose data dim disagrees with the ``"data"`` plate (e.g. an AutoGuide built on
            other data replaying its plate's indices into the model).
        mask_mismatch: latent sites that model and guide mask differently (``poutine.mask``,
            ``obs_mask``'s ``<name>_unobserved`` site).
        free_deltas: those of :attr:`point_masses` whose value does not depend on any
            auxiliary site's draw: point masses on a parameter (AutoDelta, a hand-written
            ``Delta(pyro.param(...))``), not an AutoGuide's transform of its auxiliary latent.
        collapsed_deltas: ``Delta`` guide sites computed from the auxiliary draws when
            those have fewer elements than the sites' free coordinates together
            (AutoStructured with a ``"delta"`` conditional beside a ``"normal"`` one): q has
            no density on the latents' space, whatever each site's ``log_density``.
        surplus_auxiliary: the auxiliary sites, when their draws have more elements than the
            free coordinates of the ``Delta`` sites computed from them (a chain of auxiliary
            draws, a mixture's component): q of the latents integrates over the rest.
        plates: ``(name, dim, size)`` of the vectorized plates of model and guide.
        beside_auxiliary: guide sites of a guide with auxiliary sites that are neither
            auxiliary nor ``Delta`` and whose distribution depends on no other draw: their
            density is their own, beside the auxiliary transform's.
        improper: latent sites of the model with an improper prior (``ImproperUniform``,
            whose log density is 0 everywhere): ``log p(x)`` is not defined.
        not_densities: observed sites the model marks as no density of their value
            (:data:`.sites.NOT_A_DENSITY`).
        unused_auxiliary: auxiliary guide sites that no other guide site depends on: their
            ``log q`` would enter every weight with nothing in ``p`` to match it.
        dependent_support: observed sites whose support moves with the latents (``x ~
            Uniform(0, z)``, :func:`.latents.draw_dependent_supports`): scored ``-inf``, weight
            zero, where a draw puts the value outside it.
        site_names: ``(model's sample sites, guide's latent sites)``, two frozensets of
            names: every pass of the estimators traces these
            (:func:`.sites.check_sites_as_surveyed`).
        unrecorded_randomness: ``(program, finding)`` when the guide or the model draws
            random numbers Pyro does not record (:func:`.sites.unrecorded_randomness`).
        signature: the run's :func:`.sites.trace_signature`.
    """

    max_plate_nesting: int
    batch_size: int
    data_size: int | None = None
    subsample: dict = field(default_factory=dict, compare=False)
    tempered: tuple = ()
    support_mismatch: tuple = ()
    measure_zero_support: tuple = ()
    support_gap: tuple = ()
    unscorable: tuple = ()
    subsampled_plates: tuple = ()
    factors: tuple = ()
    global_sites: tuple = ()
    renamed_data_plates: tuple = ()
    global_observed: tuple = ()
    non_reparameterized: tuple = ()
    discrete: tuple = ()
    enumerated: tuple = ()
    auxiliary: tuple = ()
    missing_in_guide: tuple = ()
    intervened: tuple = ()
    missing_in_model: tuple = ()
    model_enumerated: tuple = ()
    sequential_enumerated: tuple = ()
    vectorizable: bool = True
    vectorize_error: str = ""
    shared_in_sizeless: tuple = ()
    guide_families: dict = field(default_factory=dict, compare=False)
    model_latents: tuple = ()
    point_masses: tuple = ()
    weighted_deltas: tuple = ()
    trainable: bool = True
    shadowed: tuple = ()
    row_mismatch: tuple = ()
    mask_mismatch: tuple = ()
    free_deltas: tuple = ()
    collapsed_deltas: tuple = ()
    surplus_auxiliary: tuple = ()
    beside_auxiliary: tuple = ()
    unused_auxiliary: tuple = ()
    improper: tuple = ()
    not_densities: tuple = ()
    plates: tuple = ()
    dependent_support: tuple = ()
    unrecorded_randomness: tuple = ()
    data_sizes: tuple = ()
    site_names: tuple = field(default=(), compare=False)
    late_parents: tuple = ()
    signature: tuple = field(default=(), compare=False, repr=False)

    @property
    def lacks_inverse(self) -> bool:
        """Whether the particle trial failed only because a guide transform has no inverse
        (:data:`.shapes.NO_INVERSE`): each draw is scored from the transform's cache, so the
        weights of fresh draws are right, and only a re-scoring of a value is impossible."""
        return self.vectorize_error.startswith(NO_INVERSE)

    @property
    def data_subsample(self) -> torch.Tensor | None:
        """``[batch_size]`` indices of the datapoints of an in-model subsample, or None."""
        return self.subsample.get(DATA_PLATE)

    def subsample_passed(self, args: tuple, kwargs: dict) -> bool:
        """Whether the ``"data"`` plate's subsample is one of the pair's own integer tensor
        arguments (``pyro.plate("data", N, subsample=idx)`` with ``idx`` passed): its rows
        are then the caller's, in the caller's order, not drawn by the call."""
        indices = self.data_subsample
        return indices is not None and any(
            torch.is_tensor(value) and not value.is_floating_point()
            and value.shape == indices.shape and torch.equal(value.to(indices.device), indices)
            for value in (*args, *kwargs.values()))

    def fix_subsample(self, fn: Callable) -> Callable:
        """``fn`` replaying this run's subsample indices (``fn`` itself when none was drawn)."""
        if not self.subsample:
            return fn
        return poutine.condition(fn, data=dict(self.subsample))


def stale_parameters_error(stale: list, whose: str) -> PairError:
    """The refusal of a pair whose ``whose`` (e.g. \"the pair's\") parameters ``stale``
    (:func:`inference.pair_check.nonfinite_parameters`) hold NaN or infinite values."""
    shown = ", ".join(stale[:4]) + (f" and {len(stale) - 4} more" if len(stale) > 4 else "")
    return PairError(f"{whose} parameters hold NaN or infinite values: {shown}. A diverged fit "
                     "leaves its last values in place: start again from "
                     "pyro.clear_param_store() and freshly built networks (a lower lr)")


def _check_arguments_unchanged(copies: list, program: str) -> None:
    changed = arguments_changed(copies)
    if changed:
        raise PairError(
            f"{program} changes its {changed[0]} in place (an in-place "
            "operation such as x.mul_(2), x += 1 or x[...] = ...; found on a copy, the "
            "caller's tensor is untouched): every run would see other data, so training and "
            "the estimates would score data that move under them. Compute on a new tensor "
            "(x = x * 2) instead")


def _twice_named(error: Exception) -> str | None:
    """The name in Pyro's refusal of a second site of one name in a run, else None."""
    match = re.match(r"Multiple (?:sample )?sites named '([^']+)'", str(error))
    return None if match is None else match.group(1)


def _check_same_subsample_sizes(error: Exception) -> None:
    """A :class:`PairError` for Pyro's refusal of a plate the model subsamples and the guide
    does not (or with another ``subsample_size``): the guide's run draws the subsample the
    model's plate then meets with its own size."""
    match = re.match(r"subsample_size does not match len\(subsample\), (\d+) vs (\d+)",
                     str(error))
    if match is None:
        return
    model_size, guide_size = match.groups()
    raise PairError(
        f"the model's and the guide's pyro.plate of the same name subsample differently: the "
        f"model's takes {model_size} datapoints at a time (subsample_size={model_size}), the "
        f"guide's {guide_size} (Pyro: {_first_line(str(error))}). The guide runs first and "
        "draws the subsample the model's plate then scores: give both plates the same "
        "subsample_size (the guide's pyro.plate('data', len(x), subsample_size=...)), or "
        "subsample in neither") from error


def _check_obs_mask_shape(error: Exception) -> None:
    """A :class:`PairError` for Pyro's refusal of an ``obs_mask`` that covers a site's event
    dims: Pyro masks whole events only (its missing entries become a latent site of the
    batch's shape)."""
    match = re.match(r"Invalid obs_mask shape (\([^)]*\)); should be broadcastable to "
                     r"batch_shape = (\([^)]*\))", str(error))
    if match is None:
        return
    raise PairError(
        f"an obs_mask of shape {match.group(1)} covers the event dims of its site, whose "
        f"batch shape is {match.group(2)} (Pyro: {_first_line(str(error))}): Pyro's obs_mask "
        "marks whole events observed or missing. To mask single entries of a vector, make "
        "its dims batch dims, pyro.plate('features', D, dim=-1) inside the data plate "
        "(pyro.plate('data', N, dim=-2)) with an elementwise distribution and a mask of "
        "shape [N, D]; or drop the missing entries from the likelihood with "
        "poutine.mask / .mask(m) instead of imputing them") from error


def _first_line(text: str, most: int = 200) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= most else line[:most - 3] + "..."


class _RunRefused(Exception):
    """:class:`_FirstRunChecks`'s finding, made a :class:`PairError` by the survey
    (not a ``ValueError`` inside the run: Pyro's trace would append its shape table)."""


class _FirstRunChecks(Messenger):
    """Stop the survey's first run at a site it cannot run past: a sample site whose
    distribution is a ``torch.distributions`` object rather than Pyro's (before Pyro draws
    from it or replays a value into it: Pyro cannot call it to draw, "'Normal' object is
    not callable", and a replayed one breaks every Pyro-specific step after: event dims,
    masks, enumeration), or a parameter the store holds in another shape
    (:func:`_check_stored_shape`)."""

    def __init__(self, role: str, stored: set, networks: set):
        super().__init__()
        self.role = role
        self.stored = stored  # the param store's names before the survey's runs
        self.networks = networks  # ids of the parameters of the networks the pair reaches

    def _process_message(self, msg):
        if msg["type"] == "param":
            _check_stored_shape(msg, self.role, self.stored, self.networks)
            return
        fn = msg["fn"]
        if msg["type"] == "sample" and isinstance(fn, torch.distributions.Distribution) \
                and not isinstance(fn, TorchDistributionMixin):
            name = type(fn).__name__
            raise _RunRefused(
                f"{self.role} site '{msg['name']}' is a torch.distributions.{name}, which "
                f"Pyro cannot draw from or score; use pyro.distributions.{name} (import "
                "pyro.distributions as dist), which takes the same arguments")


def _check_stored_shape(msg, role: str, stored: set, networks: set) -> None:
    """Stop the run at ``pyro.param(name, init)`` when Pyro's param store held a tensor of
    another shape under ``name`` before the survey (``stored``: its names then): Pyro returns
    the stored tensor and ignores ``init``, so the pair would compute with an earlier
    model's tensor where it broadcasts (one shared ``loc`` for every datapoint), or fail with
    a bare size mismatch where it does not; a name read twice in one run with initial values
    of two shapes is refused too. A lazy ``init`` (a callable, Pyro's idiom for a large
    tensor) is called to compare (skipped when it fails). Not for shapes that differ by
    leading dims of size one only (``[]`` and ``[1]``: the same values), nor for a network's
    own ``nn.Parameter`` (registered by ``pyro.module``, whose names hold ``"$$$"``, or a
    ``PyroModule``: ``networks`` holds the ids of the parameters of the networks the pair
    reaches): the network computes with its own,
    whatever the store holds (two models of other sizes whose networks share names are
    fine; a store entry that shadows one is warned about or refused by
    :func:`.networks.shadowed_parameters`' callers)."""
    args = msg["args"]
    if len(args) < 2 or not isinstance(args[0], str) or "$$$" in args[0] \
            or id(args[1]) in networks:
        return  # no initial value, or a network's (pyro.module's names hold "$$$")
    name, initial = args[0], args[1]
    store = pyro.get_param_store()
    if name not in store:
        return  # made by this read
    if callable(initial) and not torch.is_tensor(initial):
        try:
            initial = initial()
        except Exception:  # noqa: BLE001 - an init that cannot run now: nothing to compare
            return
    if not torch.is_tensor(initial):
        return
    held = store[name]
    if _without_leading_ones(held.shape) == _without_leading_ones(initial.shape):
        return
    if name not in stored:  # made by an earlier read of this run, with another shape
        raise _RunRefused(
            f"pyro.param('{name}') is read with initial values of shapes {list(held.shape)} "
            f"(first) and {list(initial.shape)} (the {role}'s): Pyro keeps the first, so "
            "the second read computes with a tensor of another shape than it was written "
            "for. Give both reads one shape, or the parameters two names")
    read = (f"the {role} reads pyro.param('{name}') with an initial value of shape "
            f"{list(initial.shape)}")
    plates = [f"pyro.plate('{f.name}') of size {f.size}" for f in msg["cond_indep_stack"]
              if f.vectorized]
    if plates:
        read += f" inside {' and '.join(plates)}"
    rows = (f" (If it has one row per datapoint: {held.shape[0]} rows, created on other "
            f"data, cannot score these {initial.shape[0]}. Pass the datapoints' indices with "
            "the data and index the parameter with them, as a minibatch must, or use a guide "
            "with an encoder network, which scores any data.)"
            if held.dim() and initial.dim()
            and min(held.shape[0], initial.shape[0]) > 1
            and held.shape[1:] == initial.shape[1:] else "")
    raise _RunRefused(
        f"{read}, but Pyro's param store already holds a tensor of shape "
        f"{list(held.shape)} under that name, left by an earlier model or run: Pyro returns "
        "the stored tensor and ignores the new one, so the pair would compute with the "
        "other tensor (one value shared by every row where it broadcasts) or fail with a bare "
        "size mismatch. Call pyro.clear_param_store() before running a new model, or give "
        f"the parameter another name.{rows}")


def stored_shapes_checked(model, guide) -> tuple:
    """``(model, guide)`` wrapped so that a run of either stops with a :class:`PairError` at
    a ``pyro.param`` whose tensor in Pyro's param store (held before the wrapping) has
    another shape than its initial value (:func:`_check_stored_shape`): for entry points
    that run a pair without :func:`survey_pair` (the uses' ``kl_per_dimension`` and
    ``posterior_means``, a resume's parameter inventory)."""
    stored = set(pyro.get_param_store().keys())
    networks = {id(p) for module in reachable_modules(model, guide) for p in module.parameters()}

    def checked(program, role):
        @functools.wraps(program)
        def run(*args, **kwargs):
            try:
                return _FirstRunChecks(role, stored, networks)(program)(*args, **kwargs)
            except _RunRefused as found:
                _forget_made(stored)
                raise PairError(str(found)) from None
        return run

    return checked(model, "model"), checked(guide, "guide")


def _forget_made(stored: set) -> None:
    """Remove from Pyro's param store what a refused run made (names not in ``stored``):
    its parameters of the refused shapes would otherwise refuse the mended pair again."""
    store = pyro.get_param_store()
    forget_params(store, set(store.keys()) - stored)


def _without_leading_ones(shape) -> tuple:
    """``shape`` without its leading dims of size one: ``[]``, ``[1]`` and ``[1, 1]`` hold
    the same values, ``[N]`` and ``[N, 1]`` do not."""
    shape = tuple(shape)
    while shape and shape[0] == 1:
        shape = shape[1:]
    return shape


def _dependent_late_parents(model, guide, args, kwargs, model_sites, guide_latents) -> tuple:
    """:func:`.latents.late_parents` (closed-form KL terms only) whose bias is real
    (:func:`.latents.dependent_late_parents`): the model's distribution of the site depends on
    the parent and the guide's draw of the parent depends on the site's, read from one rerun
    of the pair with the guide's draws as gradient leaves
    (:func:`.sites.latent_dependencies_of_pair`). Independent latents in another order, or a
    structured guide ``q(sigma) q(mu | sigma)`` for independent priors ``p(mu) p(sigma)``,
    leave the closed form unbiased."""
    if not late_parents(model_sites, guide_latents, registered_only=True):
        return ()
    model_dependencies, guide_dependencies = latent_dependencies_of_pair(model, guide, args,
                                                                         kwargs)
    return dependent_late_parents(model_sites, guide_latents, model_dependencies,
                                  guide_dependencies, registered_only=True)


# Pyro's refusal of a stored parameter whose rows disagree with the plate it is read in
_STORE_ROWS = re.compile(r"Inside pyro\.plate\((\w+), (\d+), dim=-?\d+\) invalid shape of "
                         r"pyro\.param\(([^,]+), ")


def _check_store_rows(error: Exception, stored: set) -> None:
    """``PairError`` for Pyro's "invalid shape of pyro.param(...)" when the parameter was in
    the param store before the run (``stored``): rows per datapoint left by an earlier guide
    of the same names (a second ``AutoNormal`` on other data) that this run read instead of
    making its own. One the run made with the wrong rows is the program's own error."""
    found = _STORE_ROWS.search(str(error))
    if found is None or found.group(3) not in stored:
        return
    plate, size, name = found.groups()
    held = pyro.get_param_store()[name]
    raise PairError(
        f"Pyro's param store holds pyro.param('{name}') of shape {list(held.shape)}, left by "
        f"an earlier run (a guide of the same names on another number of datapoints), and "
        f"this run read it inside pyro.plate('{plate}') of size {size}: call "
        "pyro.clear_param_store() before building the new guide") from error


def _check_guide_list_parts(guide) -> None:
    """``PairError`` for an ``AutoGuideList`` part given ``create_plates``: the list makes
    the plates for its parts, and Pyro stops such a part with a bare ``AssertionError``
    ("Cannot pass create_plates() to non-master guide") at its first run."""
    if not isinstance(guide, AutoGuideList):
        return
    for index, part in enumerate(guide):
        if getattr(part, "create_plates", None) is not None:
            raise PairError(
                f"the guide's AutoGuideList part {index} ({type(part).__name__}) was given "
                "create_plates: pass create_plates to the AutoGuideList only "
                "(AutoGuideList(model, create_plates=...)); its parts run inside the list's "
                "plates")


def survey_pair(model: Callable, guide: Callable, args=(), kwargs=None,
                probe_vectorized: bool = True, probe_randomness: bool = True,
                reference: PairStructure | None = None,
                rows_run_whole: bool = True) -> PairStructure:
    """Run the pair once (hidden from outer handlers, random state restored) and describe it.

    Args:
        probe_vectorized: also run it once with 2 particles in a leftmost plate to learn
            whether it broadcasts (False: assume it does, one pass saved).
        probe_randomness: also run guide and model again on the recorded draws
            (:attr:`PairStructure.unrecorded_randomness`; False for training, whose
            stochastic objective may use unrecorded noise: three passes saved).
        reference: the survey of the same pair on other rows of the same data, in the same
            call (slices of a test set). When this run's traces have its
            :attr:`PairStructure.signature` (the same sites, distributions, shapes and
            plates), what only further runs of the program reveal (broadcasting, networks
            built per run, unrecorded randomness, the dependencies of the latents) is taken
            from it, and only what these rows' values decide (supports, masks, scales) is
            judged anew: one or two runs of the pair instead of about a dozen. A pair whose
            supports move with its draws, or that subsamples, is surveyed in full.
        rows_run_whole: whether the pair will run on these rows as they are (False: only
            on fewer of them at a time, fit's minibatches, where all N subsample indices in
            another order, ``(x[perm], perm)``, never reach ``pyro.plate`` at once).

    Raises only when the pair cannot be described at all (no sample site, plates of
    different sizes); every other finding is recorded for :func:`check_pair` to judge per
    entry point.
    """
    guide = traceable_guide(guide)
    check_pair_arguments(model, guide)
    if isinstance(args, (tuple, list)) and isinstance(kwargs or {}, dict):
        for role, program in (("model", model), ("guide", guide)):
            check_program_arguments(
                program, role, tuple(args), kwargs or {}, "this call",
                "pass the pair's data after the model and guide, as many arguments as they "
                "take, e.g. iwae_bound(model, guide, x, num_samples=K)")
    if not isinstance(args, (tuple, list)):
        raise PairError(
            f"survey_pair: args must be a tuple (or list) of the pair's positional arguments, "
            f"got a {type(args).__name__}"
            + (f" of shape {list(args.shape)}" if torch.is_tensor(args) else "")
            + ", which would be unpacked element by element (row by row for a tensor): "
            "pass args=(x,)")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise PairError(f"survey_pair: kwargs must be a dict of the pair's keyword arguments "
                        f"(or None), got a {type(kwargs).__name__}")
    args = tuple(args)
    kwargs = kwargs or {}
    check_store_shapes(model, guide)
    if not torch.is_inference_mode_enabled():  # (inside it, the passes without gradients
        # run; the entry points that need gradients check for themselves)
        check_no_inference_tensors(reachable_modules(model, guide), PairError, "training")
    _check_guide_list_parts(guide)
    held = pyro_params_held(model, guide)
    # the first run, on copies of the tensor arguments: a program that changes one in
    # place is refused before it touches the caller's
    copy_args, copy_kwargs, copies = copied_arguments(args, kwargs)
    stored = set(pyro.get_param_store().keys())  # before the runs: an earlier run's names
    networks = {id(p) for module in reachable_modules(model, guide) for p in module.parameters()}
    with forked_rng(), poutine.block(), \
            torch.no_grad():
        try:
            guide_full = poutine.trace(_FirstRunChecks("guide", stored, networks)(guide)).get_trace(
                *copy_args, **copy_kwargs)
            _check_arguments_unchanged(copies, "the guide")
            _check_guide_not_reparameterized(guide_full)
            model_full = replay_model(_FirstRunChecks("model", stored, networks)(model), guide_full,
                                      copy_args, copy_kwargs)
            _check_arguments_unchanged(copies, "the model")
        except _RunRefused as found:
            _forget_made(stored)
            raise PairError(str(found)) from None
        except KeyError as error:  # pyro.param(name) read before any run stored it
            name = error.args[0] if len(error.args) == 1 else None
            if isinstance(name, str) and name not in pyro.get_param_store() \
                    and _raised_by_param_store(error):
                raise PairError(
                    f"the pair reads pyro.param('{name}') without an initial value, and no "
                    f"earlier run stored one (Pyro: KeyError '{name}'): the guide runs "
                    "before the model, so a parameter the guide reads needs its initial "
                    f"value there, pyro.param('{name}', <initial tensor>)") from error
            raise
        except NotImplementedError as error:
            if "Cannot transform" in str(error):  # an AutoGuide's biject_to(support)
                _check_latents_unconstrainable(model, args, kwargs, error)
            raise
        except (ValueError, RuntimeError) as error:  # e.g. a distribution's NaN argument
            if not isinstance(error, PairError):  # this check's own, or the replay's
                _check_arguments_unchanged(copies, "the model or the guide")
            stale = nonfinite_parameters(model, guide)
            if stale:
                raise stale_parameters_error(
                    stale, f"the pair failed to run ({type(error).__name__}: "
                    f"{_first_line(str(error))}); its") from error
            _check_store_rows(error, stored)
            _check_same_subsample_sizes(error)
            _check_obs_mask_shape(error)
            name = _twice_named(error)
            if name is not None:
                raise PairError(
                    f"one run of the pair has two sites named '{name}' (Pyro: "
                    f"{_first_line(str(error))}). A plate is one site: build it once and "
                    f"enter it as often as needed, {name} = pyro.plate('{name}', len(x)), then "
                    f"`with {name}:` around each group of sites (two pyro.plate('{name}', "
                    "...) calls make two). Two sample statements need two names") from error
            explain_run_failure(error, model, guide, args, kwargs, PairError)
            raise
        except IndexError as error:  # a guide's locs[idx] with idx of int16
            explain_index_dtype(error, model, guide, args, kwargs, PairError)
            raise
    stale = nonfinite_param_sites((guide_full, model_full))
    if stale:  # it ran: the pair's own parameters, by their site names
        raise stale_parameters_error(stale, "the pair's")
    shadowed = confirmed_shadowed(model, guide, args, kwargs, (guide_full, model_full))
    if rows_run_whole:
        _check_rows_follow_the_indices(guide_full)
    subsample = {}
    for trace in (guide_full, model_full):
        for site in trace.nodes.values():
            # a plate records its indices even when it keeps every datapoint: only a
            # proper subsample needs replaying
            if (site["type"] == "sample" and site_is_subsample(site)
                    and site["value"].shape[0] < getattr(site["fn"], "size", -1)):
                subsample.setdefault(site["name"], site["value"])
    warn_adopted(held)
    model_trace = prune_subsample_sites(model_full)
    guide_trace = prune_subsample_sites(guide_full)
    model_sites = list(sample_sites(model_trace))
    guide_latents = list(sample_sites(guide_trace, observed=False))
    if not model_sites:
        raise PairError("the model has no sample sites: nothing to estimate or train")
    if not any(site["is_observed"] for site in model_sites):
        units = [site["name"] for site in model_sites if family(site["fn"]) == "Unit"]
        hint = (f" The model samples {site_list(units)} from dist.Unit without obs=, a "
                "latent of no values that nothing scores: write pyro.factor(name, "
                "log_factor), which observes such a site"
                if units else " Is the guide passed as the model? The model samples x with "
                "obs=x")
        raise PairError(
            "the model observes no site (no obs= and no pyro.factor), so the data are never "
            "scored: every estimate of log p(x) would be 0 and training would fit "
            f"nothing.{hint}")
    sequential = sequential_data_plate(model_sites + guide_latents)
    if sequential is not None:
        raise PairError(
            f"site '{sequential}' lies in pyro.plate('{DATA_PLATE}') used as a Python loop "
            f"(`for i in pyro.plate('{DATA_PLATE}', N)`, a sequential plate); the estimators "
            "and trainers score the datapoints along one vectorized dim: write `with "
            f"pyro.plate('{DATA_PLATE}', len(x)):` and give each site the batch's values "
            "(joint_log_evidence, the evidence of the whole data, scores a loop over a plate "
            f"of another name, pyro.plate('data_loop', N))")
    _check_observations_not_reparameterized(model_sites)
    _check_scorable(guide_latents)
    guide_observed = [s["name"] for s in sample_sites(guide_trace, observed=True)]
    if guide_observed:
        runs_model = {s["name"] for s in sample_sites(model_trace, observed=True)} >= set(
            guide_observed)
        factors = [s["name"] for s in sample_sites(guide_trace, observed=True)
                   if isinstance(s["fn"], Unit)]
        if factors and (len(factors) == len(guide_observed) or not runs_model):
            # pyro.factor in a guide (Pyro's way to write a transform's Jacobian, with
            # has_rsample): a term of log q, which the estimators read from latent sites
            raise PairError(
                f"the guide has factor(s) {site_list(factors)} (pyro.factor): a term of log "
                "q, such as a transform's Jacobian, which these estimators and trainers read "
                "from the guide's latent sites only. Put it on the transformed draw, "
                "pyro.sample(name, dist.Delta(value, log_density=<the factor>)) -- the same "
                "q -- and do not move it to the model, which would change p(x)")
        raise PairError(
            f"the guide has observed site(s) {site_list(guide_observed)} (pyro.factor or "
            "obs=): a guide's density is that of its latent draws, so such a term has no "
            "place in q(z | x); move it to the model" + (
                ". They are the model's own: a guide that runs the model (an effect-based "
                "AutoNormalMessenger inside a function, a call of the model inside the guide) "
                "is not scored here; pass the AutoNormalMessenger itself as the guide (its "
                "draws are traced alone then), or use pyro.infer.autoguide.AutoNormal"
                if runs_model else ""))
    global_sites, frames, role_sizes = [], [], {}
    for role, sites in (("model", model_sites), ("guide", guide_latents)):
        for site in sites:
            frame = data_frame(site)
            if frame is None:
                global_sites.append((role, site["name"]))
            else:
                frames.append((site, frame))
                role_sizes.setdefault(role, frame.full_size if frame.full_size is not None
                                      else frame.size)
    # a site outside "data" but inside a plate of its dim and size where the same site of the
    # other program is in "data": plates of another name (Pyro matches them by name)
    data_frames = {site["name"]: (frame.dim, frame.size) for site, frame in frames}
    renamed = tuple((role, site["name"], frame.name)
                    for role, sites in (("model", model_sites), ("guide", guide_latents))
                    for site in sites if data_frame(site) is None
                    for frame in site["cond_indep_stack"]
                    if frame.vectorized and data_frames.get(site["name"]) == (frame.dim,
                                                                             frame.size))
    declared = {frame.full_size if frame.full_size is not None else frame.size
                for _, frame in frames}
    sizes = {frame.size for _, frame in frames}
    sizeless = -1 in sizes
    shared = []
    if sizeless:
        lengths = {site["name"]: site_data_size(site, frame) for site, frame in frames}
        batch_size = max(lengths.values())
        shared = tuple(name for name, n in lengths.items() if n != batch_size)
    else:
        if len(sizes) > 1:
            where = {}
            for site, frame in frames:
                role = "guide" if site in guide_latents else "model"
                where.setdefault(frame.size, f"the {role}'s site '{site['name']}'")
            raise PairError(f"model and guide disagree on the size of the '{DATA_PLATE}' "
                            "plate: " + ", ".join(f"{size} at {text}" for size, text in
                                                  sorted(where.items()))
                            + "; both must size it from the same data (len(x))")
        batch_size = sizes.pop() if sizes else 0
    data_sizes = tuple((role, size if size > 0 else batch_size)  # sizeless: this call's
                       for role, size in role_sizes.items())
    signature = trace_signature(model_trace, guide_trace)
    reuse = (reference is not None and reference.signature == signature and not subsample
             and not reference.subsample and not reference.dependent_support)
    # data outside a support that moves with the draw (x ~ Uniform(0, z)) have density zero
    # at that draw, weight zero: no fault of the data, which only a fixed support judges
    dependent_support = () if reuse else draw_dependent_supports(model, guide, args, kwargs,
                                                                 model_sites)
    check_observed_values(model_sites, skip=dependent_support)
    if not validation_on():  # Pyro's flag or torch's default validate_args off
        check_observed_values_validated(model, guide, args, kwargs, skip=dependent_support)

    model_latent_names = [s["name"] for s in model_sites if not s["is_observed"]]
    auxiliary = tuple(s["name"] for s in guide_latents if s["infer"].get("is_auxiliary"))
    guide_names = {s["name"] for s in guide_latents}
    marked = {s["name"]: s["infer"].get("enumerate") for s in model_sites
              if not s["is_observed"] and s["name"] not in guide_names
              and s["infer"].get("enumerate")}
    masked_sums = [s["name"] for s in model_sites
                   if s["name"] in marked and distribution_masked(s["fn"])]
    if masked_sums:
        raise PairError(
            f"the model's enumerated site '{masked_sums[0]}' masks its own distribution "
            "(dist.mask(m) / .mask(m)): summed out, each of its values then weighs one where "
            "the mask is off, which adds log K to log p(x) for every masked position (Pyro's "
            "TraceEnum_ELBO sums it so too). Mask the site with `with "
            "pyro.poutine.mask(mask=m):` around it, which leaves those positions out")
    missing_in_guide = tuple(n for n in model_latent_names
                             if n not in guide_names and n not in marked)
    missing_in_model = tuple(s["name"] for s in guide_latents if s["name"] not in auxiliary
                             and s["name"] not in model_latent_names)
    non_reparam = tuple(s["name"] for s in guide_latents
                        if not getattr(s["fn"], "has_rsample", False) and not is_delta(s["fn"]))
    discrete = tuple(s["name"] for s in guide_latents if discrete_support(s["fn"]))
    enumerated = tuple(s["name"] for s in guide_latents if s["infer"].get("enumerate"))
    dims = [-frame.dim for site in (*model_sites, *guide_latents)
            for frame in site["cond_indep_stack"] if frame.vectorized]
    nesting = max(dims, default=0)
    check_batch_dims(model_sites + guide_latents, nesting)
    check_mask_shapes(model_sites + guide_latents)
    check_latents_agree(model_sites, guide_latents, nesting)
    check_plate_order(model_sites, guide_latents)
    # the guide's sites first: a guide draw of a wrong shape is the guide's fault, which the
    # model's site replaying it would otherwise be named for
    check_plate_dims([("guide", site) for site in guide_latents]
                      + [("model", site) for site in model_sites], model_sites)
    check_observed_data_dims(model_sites)
    check_observed_broadcast(model_sites, nesting)
    check_support_kinds(model_sites, guide_latents)
    support_mismatch = tuple(support_mismatches(model_sites, guide_latents))
    support_gap = tuple(support_gaps(model_sites, guide_latents))
    ruled_out = gaps_the_data_rule_out(model, guide_latents, args, kwargs,
                                       [record[0] for record in support_gap], dependent_support)
    support_gap = tuple(record for record in support_gap if record[0] not in ruled_out)
    unscorable = unscorable_sites(model_sites, support_mismatch)
    with torch.no_grad():
        check_latents_scorable(model_sites, guide_latents, skip=unscorable)
    # what these rows' values decide, judged on every run, a reference's or not
    judged = dict(
        batch_size=batch_size,
        data_sizes=data_sizes,
        signature=signature,
        tempered=tuple(tempered_sites(model_sites + guide_latents)),
        support_mismatch=support_mismatch,
        support_gap=support_gap,
        unscorable=unscorable,
        measure_zero_support=measure_zero_supports(model_sites, guide_latents),
        mask_mismatch=mask_mismatches(model_sites, guide_latents),
        row_mismatch=tuple(row_mismatches(model_sites)),
        weighted_deltas=tuple(s["name"] for s in guide_latents if is_weighted_delta(s["fn"])),
        shadowed=shadowed,
        trainable=any(param_requires_grad(site) for trace in (guide_full, model_full)
                      for site in trace.nodes.values() if site["type"] == "param"),
    )
    if reuse:  # what further runs of the same program path found on the reference's rows
        return replace(reference, **judged)
    free_deltas, jacobian, feeding = delta_dependence(guide, args, kwargs, guide_latents,
                                                      auxiliary)
    if jacobian:
        raise jacobian_error(jacobian[0])
    rebuilt = rebuilt_networks(model, guide, args, kwargs, (model_full, guide_full))
    if rebuilt:
        raise PairError(rebuilt_network_message(rebuilt))
    beside_auxiliary = unused_auxiliary = ()
    if auxiliary:
        scored = [s["name"] for s in guide_latents
                  if s["name"] in auxiliary and s["mask"] is not False]  # (mask=False: no log q)
        unused_auxiliary = unused_auxiliary_sites(
            guide, args, kwargs, scored, [s["name"] for s in guide_latents], feeding)
        ordinary = [site["name"] for site in guide_latents if site["name"] not in auxiliary
                    and family(site["fn"]) != "Delta"]
        if ordinary:
            dependent = set(conditional_sites_of_guide(guide, args, kwargs))
            dependent |= sites_moved_by_auxiliary(guide, args, kwargs, auxiliary,
                                                  [n for n in ordinary if n not in dependent])
            beside_auxiliary = tuple(n for n in ordinary if n not in dependent)
    balance = _auxiliary_balance(model_sites, guide_latents, auxiliary, free_deltas)
    error = ""
    if probe_vectorized:
        fixed = PairStructure(nesting, batch_size, subsample=subsample)
        with forked_rng(), poutine.block(), \
                torch.no_grad(), validation_enabled(False):
            error = try_vectorized(fixed.fix_subsample(model), fixed.fix_subsample(guide),
                                    args, kwargs, nesting + 1)
    return PairStructure(
        max_plate_nesting=nesting,
        data_size=None if sizeless or not declared else max(declared),
        subsample=subsample,
        subsampled_plates=subsampled_plates(model_sites + guide_latents),
        factors=tuple(s["name"] for s in model_sites if is_factor(s)),
        global_sites=tuple(global_sites),
        renamed_data_plates=renamed,
        global_observed=tuple(s["name"] for s in model_sites
                              if s["is_observed"] and data_frame(s) is None),
        non_reparameterized=non_reparam,
        discrete=discrete,
        enumerated=enumerated,
        auxiliary=auxiliary,
        missing_in_guide=missing_in_guide,
        missing_in_model=missing_in_model,
        intervened=tuple(site["name"] for site in model_sites if "_intervener_id" in site),
        model_enumerated=tuple(marked),
        sequential_enumerated=tuple(n for n, how in marked.items() if how != "parallel"),
        vectorizable=not error,
        vectorize_error=error,
        shared_in_sizeless=shared,
        guide_families={s["name"]: family(s["fn"]) for s in guide_latents},
        model_latents=tuple(model_latent_names),
        late_parents=_dependent_late_parents(model, guide, args, kwargs, model_sites,
                                             guide_latents),
        point_masses=tuple(s["name"] for s in guide_latents if is_delta(s["fn"])),
        free_deltas=free_deltas,
        collapsed_deltas=balance[0],
        surplus_auxiliary=balance[1],
        beside_auxiliary=beside_auxiliary,
        unused_auxiliary=unused_auxiliary,
not_densities=tuple(s["name"] for s in model_sites
                            if s["is_observed"] and s["infer"].get(NOT_A_DENSITY)),
                improper=tuple(s["name"] for s in model_sites if not s["is_observed"]
                       and isinstance(unwrapped(s["fn"]), ImproperUniform)),
        unrecorded_randomness=(unrecorded_randomness(model, guide, args, kwargs)
                               if probe_randomness else ()),
        dependent_support=dependent_support,
        site_names=(frozenset(s["name"] for s in model_sites),
                    frozenset(s["name"] for s in guide_latents)),
        plates=tuple({(f.name, f.dim, f.size): None for site in (*model_sites, *guide_latents)
                      for f in site["cond_indep_stack"] if f.vectorized}),
        **judged,
    )


def _raised_by_param_store(error: BaseException) -> bool:
    """Whether ``error`` was raised inside Pyro's param store (a ``pyro.param`` lookup), not
    by the user's own code (a config dict's missing key)."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and frames[-1].filename.endswith(os.path.join("params",
                                                                         "param_store.py"))


def _check_rows_follow_the_indices(guide_trace) -> None:
    """Refuse all N indices passed in another order to ``pyro.plate("data", N,
    subsample=idx)`` when the guide keeps parameters per row (an AutoGuide's, a
    ``pyro.param(..., event_dim=...)``): Pyro index-selects such parameters only for fewer
    than N indices, so each row would use another datapoint's (ELBO 10 nats per row low)."""
    plate = guide_trace.nodes.get(DATA_PLATE)
    if plate is None or plate["type"] != "sample":
        return
    indices, size = plate["value"], getattr(plate["fn"], "size", None)
    if not torch.is_tensor(indices) or not isinstance(size, int) or size < 2 \
            or indices.numel() != size or torch.equal(indices.cpu(), torch.arange(size)):
        return
    per_row = [site["name"] for site in guide_trace.nodes.values()
               if site["type"] == "param" and site["kwargs"].get("event_dim") is not None
               and torch.is_tensor(site["value"]) and size in site["value"].shape]
    if per_row:
        raise PairError(
            f"the indices passed to pyro.plate('{DATA_PLATE}', {size}, subsample=...) are all "
            f"{size} datapoints in another order ({indices[:6].tolist()}...), and the guide "
            f"keeps parameters per row ({site_list(per_row)}): Pyro selects them by the "
            f"indices only for fewer than {size} of them, so each row would be scored with "
            "another datapoint's parameters. Pass the rows in index order (sort idx, and the "
            "rows with it), or fewer than all of them")


def _reparam_records(sites) -> list[str]:
    """The names of the ``sites`` that ``poutine.reparam`` made: observed, masked ``Delta``
    records of a transformed value, other than ``pyro.deterministic``'s."""
    return [site["name"] for site in sites
            if site["is_observed"] and is_delta(site["fn"])
            and not site["infer"].get("_deterministic") and not site_mask(site).any()]


def _check_guide_not_reparameterized(guide_trace) -> None:
    """Refuse a guide wrapped in ``poutine.reparam``: its site becomes a record of a value
    drawn at another site, which no model site can replay (Pyro: "site z must be sampled
    in trace")."""
    records = _reparam_records(sample_sites(guide_trace, observed=True))
    if records:
        raise PairError(
            f"the guide's site '{records[0]}' was replaced by a reparameterizer "
            "(poutine.reparam around the guide): the guide then draws at another site and "
            f"only records '{records[0]}', so the model's '{records[0]}' has no draw to "
            "replay. Reparameterize the model instead (a guide written for the model's new "
            "sites, or an AutoGuide built on the reparameterized model), or draw the "
            "guide's site from its distribution directly")


def _check_latents_unconstrainable(model, args, kwargs, error: Exception) -> None:
    """Called while a guide fails with torch's "Cannot transform <constraint>" (an AutoGuide
    asking ``biject_to`` for a support torch has no bijection onto): raise ``PairError``
    naming the model's latent site of that support; return when none is found."""
    try:
        with forked_rng(), poutine.block(), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the prior's draws ("Singular sample detected")
            trace = poutine.trace(model).get_trace(*args, **kwargs)
    except Exception:  # noqa: BLE001 - the model alone fails too: the error stands
        return
    for site in sample_sites(trace, observed=False):
        try:
            biject_to(site["fn"].support)
        except NotImplementedError:
            raise PairError(
                f"the guide fails on latent site '{site['name']}', whose "
                f"{family(site['fn'])} has support {site['fn'].support}, onto which torch has "
                f"no bijection from unconstrained space (torch: {_first_line(str(error))}): "
                "an AutoGuide (AutoNormal and its kin) cannot be built for it. Write the "
                f"guide's '{site['name']}' yourself, from a distribution on that support (a "
                "Wishart for a positive definite matrix) or a TransformedDistribution onto "
                "it") from error


def _check_observations_not_reparameterized(model_sites) -> None:
    """Refuse an observed site that ``poutine.reparam`` replaced: its record is a masked
    ``Delta`` (not a ``pyro.deterministic``) beside an observed ``<name>_...`` site that holds
    the transformed data (``TransformReparam``'s ``x_base``, ``LocScaleReparam``'s
    ``x_decentered``). That site's density lacks the transform's Jacobian, so every estimate
    would be off by ``log |J|`` (Pyro's reparameterizers are for latent sites)."""
    observed = [s["name"] for s in model_sites if s["is_observed"] and not is_delta(s["fn"])]
    latent = [s["name"] for s in model_sites if not s["is_observed"]]
    for name in _reparam_records(model_sites):
        bases = [other for other in observed if other.startswith(name + "_")]
        # a reparameterized latent draws its base (z_decentered) beside the record: an
        # observed 'z_obs' next to it is the user's own site
        if bases and not any(other.startswith(name + "_") for other in latent):
            raise PairError(
                f"the model's observed site '{name}' was replaced by a reparameterizer "
                f"(poutine.reparam): its data are scored at site '{bases[0]}' after the "
                "transform, whose density lacks the transform's Jacobian, so every estimate "
                "of log p(x) would be off by log|J| (Pyro's TransformReparam, LocScaleReparam "
                f"and their kin are for latent sites only). Leave '{name}' out of the "
                "reparam config")


def _check_scorable(guide_latents) -> None:
    """Refuse a guide site whose ``TransformedDistribution`` has no log density for its own
    draw (a transform without a Jacobian, such as ``SoftmaxTransform``: torch raises a bare
    ``NotImplementedError``)."""
    for site in guide_latents:
        if not isinstance(unwrapped(site["fn"]), torch.distributions.TransformedDistribution):
            continue
        try:
            site["fn"].log_prob(site["value"])
        except NotImplementedError as error:
            raise PairError(
                f"guide site '{site['name']}' draws from a {family(site['fn'])} that has no "
                f"log density (torch: NotImplementedError{': ' + str(error) if str(error) else ''}"
                "; a transform without a Jacobian, such as SoftmaxTransform): the weights and "
                "the ELBO need every site's density. Use a bijective transform "
                "(StickBreakingTransform onto a simplex)") from error
        except (ValueError, RuntimeError, TypeError, IndexError):
            continue  # a value outside the support and the like: the survey's checks name it


def _auxiliary_balance(model_sites, guide_latents, auxiliary, free_deltas) -> tuple:
    """``(collapsed, surplus)``: :attr:`PairStructure.collapsed_deltas`, the ``Delta`` sites
    that depend on auxiliary draws when these have more free coordinates than the auxiliary
    draws; :attr:`PairStructure.surplus_auxiliary`, the auxiliary sites when their draws
    have more elements than those ``Delta`` sites' free coordinates (one run's values). A
    site's free coordinates are those of its model support's unconstrained space
    (``biject_to(support)``: a simplex of K values has K - 1, a 3 x 3 correlation Cholesky
    factor 3); a support without a known bijection leaves the check out."""
    supports = {s["name"]: declared_support(s["fn"]) for s in model_sites}
    derived = [s for s in guide_latents if is_delta(s["fn"]) and s["name"] not in auxiliary
               and s["name"] not in free_deltas]
    drawn = sum(s["value"].numel() for s in guide_latents
                if s["name"] in auxiliary and s["mask"] is not False)
    needed = 0
    for site in derived:
        try:
            shape = biject_to(supports.get(site["name"], constraints.real)).inverse_shape(
                site["value"].shape)
        except (NotImplementedError, TypeError, ValueError):
            return (), ()
        needed += math.prod(shape)
    collapsed = tuple(s["name"] for s in derived) if needed > drawn else ()
    surplus = tuple(auxiliary) if derived and needed < drawn else ()
    return collapsed, surplus
