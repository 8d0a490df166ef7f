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
  inside ``"data"`` needs a dim for the plate when its event holds several values, plates
  of one name sit at one dim in model and guide, and a guide's support is of the model's
  kind (discrete or continuous);
- guide sites that are not reparameterized (discrete, or ``has_rsample`` False) or enumerated;
- whether the pair runs with particles in a leftmost ``pyro.plate`` (models that do not
  broadcast over a leading dimension get a sequential loop over particles instead).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import Callable

import pyro
import torch
from pyro import poutine
from pyro.distributions.torch_distribution import MaskedDistribution
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites, site_is_subsample

from .checks import check_pair_arguments, user_stacklevel
from .random_state import forked_rng
from .supports import describe_support, support_kinds_differ, support_of, support_within

DATA_PLATE = "data"
PARTICLE_PLATE = "particles"

# Entry points (``use`` of :func:`check_pair`) that need one log weight per datapoint.
PER_DATAPOINT_USES = ("elbo", "iwae_bound", "bound_sweep", "log_importance_weights",
                      "weight_diagnostics", "log_evidence", "ais_log_evidence",
                      "amortization_gap", "fit:iwae", "fit:dreg")
FIT_LOSSES = ("elbo", "meanfield", "iwae", "dreg")
# Entry points whose number needs the guide to cover the model's support (and each
# datapoint whole): importance weights, whose average converges to log p(x) only then.
COVERAGE_USES = ("iwae_bound", "bound_sweep", "log_importance_weights", "weight_diagnostics",
                 "log_evidence", "ais_log_evidence", "fit:iwae", "fit:dreg")


class PairError(ValueError):
    """A model/guide pair an entry point cannot handle; the message names the construct."""


@dataclass(frozen=True)
class PairStructure:
    """What one unvectorized run of a model/guide pair reveals (:func:`survey_pair`).

    Attributes:
        max_plate_nesting: number of batch dims used by plates (the particle plate goes left).
        batch_size: number of datapoints of the ``"data"`` plate in this call (the minibatch
            or subsample size; resolved from the tensors for a sizeless plate).
        data_size: the size the ``"data"`` plate declares (``N`` of ``pyro.plate("data", N,
            subsample_size=B)``), None for a sizeless plate.
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
        unscorable: latent sites of :attr:`support_mismatch` whose model distribution cannot
            score a value outside its support at all (a ``Categorical`` indexes its
            probabilities with the value).
        subsampled_plates: ``(plate, subsample size, full size)`` of plates other than
            ``"data"`` that draw a subsample.
        factors: model sites that are a ``pyro.factor``.
        global_sites: ``("model" | "guide", name)`` of sample sites outside ``"data"``.
        global_observed: observed model sites outside ``"data"``.
        non_reparameterized: guide latent sites without a reparameterized sampler.
        discrete: guide latent sites with discrete support.
        enumerated: guide sites marked for enumeration.
        auxiliary: guide-only sites marked ``infer={"is_auxiliary": True}``.
        missing_in_guide, missing_in_model: latent site names one side lacks.
        vectorizable: whether the pair runs with particles in a leftmost plate.
        vectorize_error: the error of the vectorized trial run when it failed.
        shared_in_sizeless: sites of a sizeless ``"data"`` plate without a data dimension.
        guide_families: ``{latent site: distribution class name}`` of the guide.
        model_latents: latent site names of the model.
        point_masses: guide sites that are a ``Delta`` (AutoDelta; an AutoGuide's latents,
            functions of its auxiliary sites).
        weighted_deltas: those of them with a nonzero ``log_density`` (an AutoGuide's
            Jacobian term, or a user's ``log q`` of a draw made outside the guide).
        trainable: whether model or guide touch a parameter that requires a gradient.
        row_mismatch: ``(site, rows of its observed value, plate size)`` for observed sites
            whose data dim disagrees with the ``"data"`` plate (e.g. an AutoGuide built on
            other data replaying its plate's indices into the model).
        mask_mismatch: latent sites that model and guide mask differently (``poutine.mask``,
            ``obs_mask``'s ``<name>_unobserved`` site).
        free_deltas: those of :attr:`point_masses` whose value does not depend on any
            auxiliary site's draw: point masses on a parameter (AutoDelta, a hand-written
            ``Delta(pyro.param(...))``), not an AutoGuide's transform of its auxiliary latent.
        plates: ``(name, dim, size)`` of the vectorized plates of model and guide.
        beside_auxiliary: guide sites of a guide with auxiliary sites that are neither
            auxiliary nor ``Delta`` and whose distribution depends on no other draw: their
            density is their own, beside the auxiliary transform's.
    """

    max_plate_nesting: int
    batch_size: int
    data_size: int | None = None
    subsample: dict = field(default_factory=dict, compare=False)
    tempered: tuple = ()
    support_mismatch: tuple = ()
    support_gap: tuple = ()
    unscorable: tuple = ()
    subsampled_plates: tuple = ()
    factors: tuple = ()
    global_sites: tuple = ()
    global_observed: tuple = ()
    non_reparameterized: tuple = ()
    discrete: tuple = ()
    enumerated: tuple = ()
    auxiliary: tuple = ()
    missing_in_guide: tuple = ()
    missing_in_model: tuple = ()
    vectorizable: bool = True
    vectorize_error: str = ""
    shared_in_sizeless: tuple = ()
    guide_families: dict = field(default_factory=dict, compare=False)
    model_latents: tuple = ()
    point_masses: tuple = ()
    weighted_deltas: tuple = ()
    trainable: bool = True
    row_mismatch: tuple = ()
    mask_mismatch: tuple = ()
    free_deltas: tuple = ()
    beside_auxiliary: tuple = ()
    plates: tuple = ()

    @property
    def data_subsample(self) -> torch.Tensor | None:
        """``[batch_size]`` indices of the datapoints of an in-model subsample, or None."""
        return self.subsample.get(DATA_PLATE)

    def fix_subsample(self, fn: Callable) -> Callable:
        """``fn`` replaying this run's subsample indices (``fn`` itself when none was drawn)."""
        if not self.subsample:
            return fn
        return poutine.condition(fn, data=dict(self.subsample))


def data_frame(site):
    """The ``"data"`` plate's frame in a trace site's plate stack, or None."""
    for frame in site["cond_indep_stack"]:
        if frame.name == DATA_PLATE:
            return frame
    return None


def sample_sites(trace, observed: bool | None = None):
    """The sample sites of ``trace`` (no subsample sites, no ``pyro.deterministic`` records,
    which carry no density), only observed or latent ones when ``observed`` is True or
    False."""
    for site in trace.nodes.values():
        if site["type"] != "sample" or site_is_subsample(site) or \
                site["infer"].get("_deterministic"):
            continue
        if observed is not None and site["is_observed"] != observed:
            continue
        yield site


def trace_pair(model, guide, args, kwargs):
    """``(model_trace, guide_trace)``: one guide draw and the model replayed against it."""
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
        *args, **kwargs
    )
    return prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)


def _unwrapped(fn):
    """A distribution without its ``Independent`` and ``dist.mask`` wrappers."""
    while isinstance(fn, (torch.distributions.Independent, MaskedDistribution)):
        fn = fn.base_dist
    return fn


def _distribution_arguments(fn) -> list[torch.Tensor]:
    """The tensor arguments of a distribution (through ``Independent``/``mask`` wrappers)."""
    fn = _unwrapped(fn)
    return [v for k, v in vars(fn).items()
            if k in getattr(fn, "arg_constraints", {}) and torch.is_tensor(v)]


def conditional_sites_in_trace(guide_trace) -> list[str]:
    """Names of the latent sites of a guide's *trace* whose distribution depends on another
    latent the guide drew (``q(z2 | z1)``), read from the trace's autograd graph: it needs a
    trace whose drawn values require gradients (the IWAE losses' own traces, or
    :func:`conditional_sites_of_guide`'s). Runs nothing."""
    latents = [site for site in sample_sites(guide_trace, observed=False)
               if torch.is_tensor(site["value"]) and site["value"].requires_grad]
    found = []
    for site in latents:
        arguments = [a for a in _distribution_arguments(site["fn"]) if a.requires_grad]
        others = [o["value"] for o in latents if o is not site]
        if not arguments or not others:
            continue
        total = sum(a.sum() for a in arguments)
        if not total.requires_grad:  # summed where gradients are off: no graph to read
            continue
        grads = torch.autograd.grad(total, others, retain_graph=True, allow_unused=True)
        if any(g is not None for g in grads):
            found.append(site["name"])
    return found


class _DrawsAsLeaves(Messenger):
    """Make every floating latent draw a leaf that requires gradients (after the draw)."""

    def _pyro_post_sample(self, msg):
        value = msg["value"]
        if not msg["is_observed"] and torch.is_tensor(value) and value.is_floating_point():
            msg["value"] = value.detach().requires_grad_(True)


def conditional_sites_of_guide(guide, args, kwargs) -> list[str]:
    """The latent sites of the *guide* (a callable, run here once on ``args``/``kwargs``)
    whose distribution depends on another latent it draws (:func:`conditional_sites_in_trace`
    of that draw), with the random state restored and effects hidden; the draws are made
    gradient leaves, so the answer does not depend on whether the guide's parameters require
    gradients."""
    with poutine.block(), forked_rng(), torch.enable_grad():
        with _DrawsAsLeaves():
            trace = poutine.trace(guide).get_trace(*args, **kwargs)
        return conditional_sites_in_trace(trace)


def _site_data_size(site, frame) -> int:
    """The length of ``site``'s log density along the ``"data"`` dim (1 when it broadcasts)."""
    shape = site["fn"].batch_shape
    return shape[frame.dim] if len(shape) >= -frame.dim else 1


def _family(fn) -> str:
    """The class name of a distribution, through ``Independent`` and ``dist.mask`` wrappers."""
    return type(_unwrapped(fn)).__name__


def _is_delta(fn) -> bool:
    return _family(fn) == "Delta"


def _row_mismatches(model_sites):
    for site in model_sites:
        frame = data_frame(site)
        if not site["is_observed"] or frame is None or frame.size < 0:
            continue
        value = site["value"]
        batch = value.shape[:value.dim() - site["fn"].event_dim]
        if len(batch) >= -frame.dim and batch[frame.dim] not in (1, frame.size):
            yield site["name"], batch[frame.dim], frame.size


def _check_observed_values(model_sites) -> None:
    """Score each observed site's value once, as Pyro's ELBOs do on every step, so that a
    distribution validating its arguments (Pyro's validation, on by default) refuses a value
    outside its support here: the estimators' later passes skip validation and would score
    it silently (a Bernoulli at 3, a Poisson at 2.5)."""
    for site in model_sites:
        if not site["is_observed"]:
            continue
        if not torch.is_tensor(site["value"]):
            raise PairError(f"observed site '{site['name']}' observes a "
                            f"{type(site['value']).__name__}; Pyro's distributions score "
                            "tensors: pass the data as a tensor")
        try:
            site["fn"].log_prob(site["value"])
        except ValueError as error:
            raise PairError(f"observed site '{site['name']}' ({_family(site['fn'])}): {error}"
                            ) from None


def site_mask(site) -> torch.Tensor:
    """The site's mask as a bool tensor: its ``poutine.mask`` (``obs_mask``'s latent half is
    one) and the masks of ``dist.mask(...)`` wrappers of its distribution, combined."""
    mask = torch.as_tensor(True if site["mask"] is None else site["mask"], dtype=torch.bool)
    fn = site["fn"]
    while isinstance(fn, (MaskedDistribution, torch.distributions.Independent)):
        if isinstance(fn, MaskedDistribution):
            mask = mask & torch.as_tensor(fn._mask, dtype=torch.bool)
        fn = fn.base_dist
    return mask


def _mask_mismatches(model_sites, guide_latents) -> tuple:
    """Latent sites whose model and guide masks differ: where the model's density is masked
    and the guide's is not (or the reverse), ``p(x, z) / q(z)`` is not a density ratio."""
    guide_masks = {site["name"]: site_mask(site) for site in guide_latents}
    mismatched = []
    for site in model_sites:
        if site["is_observed"] or site["name"] not in guide_masks:
            continue
        model_mask, guide_mask = site_mask(site), guide_masks[site["name"]]
        try:
            shape = torch.broadcast_shapes(model_mask.shape, guide_mask.shape)
        except RuntimeError:
            mismatched.append(site["name"])
            continue
        if not torch.equal(model_mask.expand(shape), guide_mask.expand(shape)):
            mismatched.append(site["name"])
    return tuple(mismatched)


def _tempered(sites):
    """``(name, scale)`` of sites scaled beyond their plates' ``N / B`` (scale None: a tensor
    of differing entries)."""
    for site in sites:
        plates = math.prod(frame.full_size / frame.size for frame in site["cond_indep_stack"]
                           if frame.full_size is not None and frame.size > 0)
        scale = site["scale"]
        if torch.is_tensor(scale):
            if scale.numel() > 1 and bool(scale.min() != scale.max()):
                yield site["name"], None
                continue
            scale = float(scale.reshape(-1)[0]) if scale.numel() else 1.0
        if not math.isclose(float(scale), plates, rel_tol=1e-6):
            yield site["name"], float(scale) / plates


def _check_batch_dims(sites, nesting: int) -> None:
    """Refuse a site whose log density has more batch dims than the pair's plates declare.

    The common cause is an observation of shape ``[N, 1]`` scored by a distribution of batch
    shape ``[N]``: broadcasting makes an ``[N, N]`` log density, every datapoint scored
    against every latent, which Pyro's own shape check (it looks only at the rightmost
    ``max_plate_nesting`` dims) lets through into a wrong ELBO.
    """
    for site in sites:
        fn, value = site["fn"], site["value"]
        value_batch = value.shape[:max(0, value.dim() - fn.event_dim)]
        try:
            batch = torch.broadcast_shapes(fn.batch_shape, value_batch)
        except RuntimeError:
            continue  # scoring fails and names the shapes itself
        if len(batch) <= nesting or all(size == 1 for size in batch[:len(batch) - nesting]):
            continue  # extra leading dims of size 1 broadcast nothing
        what = "observed value" if site["is_observed"] else "value"
        raise PairError(
            f"site '{site['name']}': its {what} of shape {tuple(value.shape)} and its "
            f"{_family(fn)} of batch shape {tuple(fn.batch_shape)} (event dims "
            f"{fn.event_dim}) score a log density of batch shape {tuple(batch)}, more dims "
            f"than the pair's plates declare ({nesting}): every datapoint would be scored "
            "against every other's distribution. Give the value the plate's shape (e.g. "
            "x.squeeze(-1) for [N, 1] data), or declare extra dims as events with "
            ".to_event(n) or as an inner pyro.plate")


def _plate_text(frames) -> str:
    return ", ".join(f"'{f.name}' at dim {f.dim}" for f in frames) or "none"


def _unplated_guide_message(name: str, shape, model_frame) -> str:
    """The refusal of a guide latent drawn outside any plate whose model site lies in the
    ``"data"`` plate (a guide written without its plate, its batch of datapoints along a
    dim no plate declares)."""
    return (f"guide site '{name}' lies outside any pyro.plate (batch shape {tuple(shape)}) "
            f"while the model's site '{name}' lies in pyro.plate('{DATA_PLATE}') at dim "
            f"{model_frame.dim}: the guide's values are not declared per datapoint (Pyro's "
            "shape check refuses this site too). Wrap the guide's site in `with "
            f"pyro.plate('{DATA_PLATE}', len(x)):` as in the model")


def _check_plate_dims(sites, model_sites) -> None:
    """Refuse a site whose log density has a batch dim of size > 1 that no plate it lies in
    declares, as Pyro's ``check_site_shape`` does for the dims left of its plates (run here
    whatever Pyro's validation flag, for model and guide sites): ``pyro.plate("data", N,
    dim=-2)`` with a latent ``[N, 1]`` and 1-D data ``[N]`` scores an ``[N, N]`` density,
    every datapoint against every other's latent, within the pair's plate nesting."""
    model_by_name = {site["name"]: site for site in model_sites}
    for role, site in sites:
        fn, value = site["fn"], site["value"]
        if not torch.is_tensor(value):
            continue
        value_batch = value.shape[:max(0, value.dim() - fn.event_dim)]
        try:
            batch = torch.broadcast_shapes(fn.batch_shape, value_batch)
        except RuntimeError:
            continue  # scoring fails and names the shapes itself
        frames = [f for f in site["cond_indep_stack"] if f.vectorized]
        plate_dims = {f.dim for f in frames}
        model_site = model_by_name.get(site["name"]) if role == "guide" else None
        model_frame = None if model_site is None else data_frame(model_site)
        if model_site is not None and frames:
            # a guide site may leave to the model's plates the dims they declare (a local
            # guide that opens only the "data" plate of a nested pair): the model scores
            # the draw along them, and the guide's density is summed per datapoint
            plate_dims |= {f.dim for f in model_site["cond_indep_stack"] if f.vectorized}
        for dim in range(-len(batch), 0):
            if batch[dim] == 1 or dim in plate_dims:
                continue
            if model_frame is not None and not frames:
                raise PairError(_unplated_guide_message(site["name"], batch, model_frame))
            what = "observed value" if site["is_observed"] else "value"
            raise PairError(
                f"{role} site '{site['name']}': its {what} of shape {tuple(value.shape)} and "
                f"its {_family(fn)} of batch shape {tuple(fn.batch_shape)} (event dims "
                f"{fn.event_dim}) score a log density of batch shape {tuple(batch)}, whose "
                f"dim {dim} (size {batch[dim]}) is no dim of a plate the site lies in "
                f"(plates: {_plate_text(frames)}): every batch dim that no plate declares "
                "must have size 1, as in Pyro's shape check, else values are broadcast "
                "against each other (with pyro.plate('data', N, dim=-2) and 1-D data [N], "
                "each datapoint is scored against every other's latent). Give the value the "
                "plate's layout (x.unsqueeze(-1) for data in a dim=-2 plate, or the plate at "
                "dim=-1), declare the dim an event with .to_event(1), or put it in a "
                "pyro.plate at that dim")


def _check_observed_data_dims(model_sites) -> None:
    """Refuse an observed site inside the ``"data"`` plate whose value has no dim for the
    plate (absent or size 1) while its event part holds more than one value: the plate then
    expands the distribution over the datapoints and each datapoint's term scores the whole
    value (``.to_event(1)`` on 1-D data ``[N]``: batch ``[N]`` x event ``[N]``, every
    datapoint's term holding all ``N`` observations). A scalar observed constant stays
    allowed."""
    for site in model_sites:
        frame = data_frame(site)
        if not site["is_observed"] or frame is None or frame.dim is None or frame.size <= 1:
            continue
        value, fn = site["value"], site["fn"]
        if not torch.is_tensor(value):
            continue
        split = max(0, value.dim() - fn.event_dim)
        batch, event = value.shape[:split], value.shape[split:]
        if len(batch) >= -frame.dim and batch[frame.dim] != 1:
            continue
        if math.prod(event) <= 1 or _varies_along(site, frame):
            continue
        raise PairError(
            f"observed site '{site['name']}' lies in pyro.plate('{DATA_PLATE}', "
            f"{frame.size}) at dim {frame.dim}, but its value of shape {tuple(value.shape)} "
            f"has no dim for that plate: its {_family(fn)} has batch shape "
            f"{tuple(fn.batch_shape)} and event shape {tuple(fn.event_shape)}, so the value's "
            f"{tuple(event)} are all event dims and every datapoint's term scores all of them "
            f"(with .to_event(1) on 1-D data [N], each of the N terms holds all N "
            "observations). Keep the datapoints out of the event: drop the .to_event(n) for "
            "data of one value per datapoint, or move it so it covers only the features "
            f"(x of shape [N, D] with .to_event(1)), or observe the whole vector outside the "
            f"plate")


def _varies_along(site, frame) -> bool:
    """Whether the site's log density differs between datapoints: a distribution of its own
    per datapoint scoring one shared value (a vector observed as a regularizer,
    ``Normal(z, 10).to_event(1)`` with ``z: [N, D]`` and ``obs: [D]``) is one term per
    datapoint, right; one distribution expanded over the plate (``.to_event(1)`` on 1-D data)
    gives ``N`` equal copies of a term that holds all observations."""
    try:
        with torch.no_grad(), _validation_off(site["fn"]):
            log_p = site["fn"].log_prob(site["value"])
    except Exception:  # noqa: BLE001 - a site that cannot be scored is judged elsewhere
        return False
    if log_p.dim() < -frame.dim or log_p.shape[frame.dim] <= 1:
        return False
    rows = log_p.movedim(frame.dim, 0).reshape(log_p.shape[frame.dim], -1)
    return not bool((rows == rows[:1]).all())


def _moved_plates(model_site, guide_site) -> list:
    """``(plate, model dim, guide dim)`` of the plates of one name that a latent's model and
    guide sites put at different dims."""
    model_dims = {f.name: f.dim for f in model_site["cond_indep_stack"] if f.vectorized}
    return [(frame.name, model_dims[frame.name], frame.dim)
            for frame in reversed(guide_site["cond_indep_stack"])
            if frame.vectorized and frame.name in model_dims
            and model_dims[frame.name] != frame.dim]


def _moved_text(moved) -> str:
    return "; ".join(f"pyro.plate('{plate}') at dim {model_dim} in the model and at dim "
                     f"{guide_dim} in the guide" for plate, model_dim, guide_dim in moved)


def _check_plate_order(model_sites, guide_latents) -> None:
    """Refuse a latent whose model and guide put a plate of one name at different dims:
    plates without an explicit dim are placed from the right in the order they are entered,
    so nesting ``"data"`` and ``"feat"`` in opposite orders swaps their dims, and with
    square data the shapes coincide while the model scores the guide's draw transposed."""
    model_latents = {s["name"]: s for s in model_sites if not s["is_observed"]}
    for guide_site in guide_latents:
        model_site = model_latents.get(guide_site["name"])
        if model_site is None:
            continue
        moved = _moved_plates(model_site, guide_site)
        if not moved:
            continue
        found = _moved_text(moved)
        explicit = ", ".join(f"pyro.plate('{plate}', size, dim={model_dim})"
                             for plate, model_dim, _ in moved)
        raise PairError(
            f"latent site '{guide_site['name']}' lies in {found}: the model scores the "
            "guide's draw with those plates' values along other dims (transposed when the "
            "sizes coincide, e.g. square data). Plates without an explicit dim are placed "
            "from the right in the order they are entered, so nest the plates in the same "
            f"order in model and guide, or give each an explicit dim in both ({explicit})")


def _check_support_kinds(model_sites, guide_latents) -> None:
    """Refuse a guide latent whose support is continuous where the model site's is discrete
    (a ``RelaxedBernoulli``, ``RelaxedBernoulliStraightThrough`` or
    ``RelaxedOneHotCategorical`` guide for a ``Bernoulli``, ``Categorical`` or
    ``OneHotCategorical`` latent), or the reverse: a density and a mass function have no
    ratio that is an importance weight (the ELBO came out ``-inf``, or finite and wrong)."""
    for guide_site, model_site in _support_pairs(model_sites, guide_latents):
        guide_support = support_of(guide_site["fn"])[0]
        model_support = support_of(model_site["fn"])[0]
        if not support_kinds_differ(guide_support, model_support):
            continue
        guide_kind = "discrete" if guide_support.is_discrete else "continuous"
        model_kind = "discrete" if model_support.is_discrete else "continuous"
        remedy = ("Draw it from a discrete guide on the model's support (a Bernoulli or "
                  "Categorical guide with learned probabilities); a relaxed distribution "
                  "trains a relaxed model, whose latent is continuous too"
                  if model_kind == "discrete" else
                  "Draw it from a continuous guide on the model's support (e.g. a Normal, or "
                  "AutoNormal)")
        raise PairError(
            f"latent site '{guide_site['name']}': the guide's {_family(guide_site['fn'])} "
            f"is {guide_kind} (support {describe_support(guide_support)}) and the model's "
            f"{_family(model_site['fn'])} is {model_kind} (support "
            f"{describe_support(model_support)}): p(x, z) / q(z) of a mass function and a "
            f"density is no importance weight, so the ELBO and the bounds are meaningless "
            f"(-inf where the draws miss the model's support, finite and wrong where they "
            f"are rounded onto it). {remedy}")


class _AuxiliaryAsLeaves(Messenger):
    """Make every auxiliary guide draw a leaf that requires gradients and record the
    ``Delta`` sites drawn after them (their messages)."""

    def __init__(self):
        super().__init__()
        self.leaves, self.deltas = {}, {}

    def _pyro_post_sample(self, msg):
        value = msg["value"]
        if msg["is_observed"] or not torch.is_tensor(value):
            return
        if msg["infer"].get("is_auxiliary"):
            if value.is_floating_point():
                msg["value"] = value.detach().requires_grad_(True)
                self.leaves[msg["name"]] = msg["value"]
        elif _is_delta(msg["fn"]):
            self.deltas[msg["name"]] = msg


def _jacobian_mismatch(msg, aux_name: str, leaf: torch.Tensor) -> tuple | None:
    """``(site, auxiliary site, log_density given, log Jacobian term expected)`` when the
    ``Delta`` of ``msg`` is an elementwise map of the auxiliary draw ``leaf`` (same shape;
    checked with a second, randomly weighted backward pass) whose ``log_density`` is left at 0
    while ``-log|d value / d aux|`` summed over its event dims, the change of variables that
    makes it a density (AutoNormal passes it), is not; None otherwise: a map that preserves
    volume, a ``log_density`` that was given (trusted), or a map that is not elementwise
    (nothing is judged then)."""
    value = msg["value"]
    if value.shape != leaf.shape or not bool(site_mask(msg).all()):
        return None
    (slope,) = torch.autograd.grad(value.sum(), leaf, retain_graph=True, allow_unused=True)
    weights = torch.rand_like(value) + 0.5
    (weighted,) = torch.autograd.grad((value * weights).sum(), leaf, retain_graph=True,
                                      allow_unused=True)
    if slope is None or weighted is None or not bool(torch.isfinite(slope).all()) or \
            bool((slope == 0).any()):
        return None
    scale = slope.abs().max()
    if not torch.allclose(weighted, weights * slope, rtol=1e-4, atol=1e-6 * float(scale)):
        return None  # not elementwise: the change of variables needs the full Jacobian
    fn = _unwrapped(msg["fn"])
    event_dim = msg["fn"].event_dim
    expected = -slope.abs().log()
    if event_dim:
        expected = expected.reshape(expected.shape[:expected.dim() - event_dim] + (-1,)).sum(-1)
    given = torch.as_tensor(fn.log_density, dtype=expected.dtype).detach()
    if bool((given != 0).any()):
        # a log_density was given: trusted. The slope read here is that of the map in the
        # value's precision, which near a support's end (a sigmoid at 1 - 2e-6 in float32)
        # is off by more than any tolerance, while AutoNormal's own term is right
        return None
    try:
        given = given.expand(expected.shape)
    except RuntimeError:
        return None
    expected = expected.detach()
    tolerance = 1e-3 * (1.0 + expected.abs())
    if bool(((given - expected).abs() <= tolerance).all()):
        return None
    return msg["name"], aux_name, given, expected


def _delta_dependence(guide, args, kwargs, guide_latents, auxiliary) -> tuple:
    """``(free, jacobian)``: the ``Delta`` guide sites whose value does not depend on any
    auxiliary draw (point masses: AutoDelta, ``Delta(pyro.param(...))``), told apart from an
    AutoGuide's transform of its auxiliary latent (AutoNormal's ``z_unconstrained``,
    AutoDiagonalNormal's ``_AutoDiagonalNormal_latent``) by the autograd graph of one draw
    whose auxiliary values are made gradient leaves; and the :func:`_jacobian_mismatch`
    records of the dependent ones."""
    deltas = [s["name"] for s in guide_latents
              if _is_delta(s["fn"]) and s["name"] not in auxiliary]
    if not deltas or not auxiliary:
        return tuple(deltas), ()
    recorder = _AuxiliaryAsLeaves()
    free, jacobian = [], []
    with poutine.block(), forked_rng(), torch.enable_grad():
        with recorder:
            guide(*args, **kwargs)
        names, leaves = list(recorder.leaves), list(recorder.leaves.values())
        for name in deltas:
            msg = recorder.deltas.get(name)
            value = None if msg is None else msg["value"]
            if value is None or not leaves or not value.requires_grad:
                free.append(name)
                continue
            grads = torch.autograd.grad(value.sum(), leaves, retain_graph=True,
                                        allow_unused=True)
            used = [i for i, g in enumerate(grads) if g is not None]
            if not used:
                free.append(name)
            elif len(used) == 1:
                found = _jacobian_mismatch(msg, names[used[0]], leaves[used[0]])
                if found is not None:
                    jacobian.append(found)
    return tuple(free), tuple(jacobian)


def _jacobian_error(record) -> PairError:
    name, aux, given, expected = record
    shown = _end_text_pair(given, expected)
    return PairError(
        f"guide site '{name}' is a Delta computed elementwise from auxiliary site '{aux}', "
        f"and its log_density ({shown[0]}) is not the change of variables "
        f"-log|d {name} / d {aux}| ({shown[1]}): q({name}) = q({aux}) |d {name} / d "
        f"{aux}|^-1, so every log weight would be off by the difference (a forgotten "
        f"Jacobian). Pass it: pyro.sample('{name}', dist.Delta(value, log_density=...)) "
        f"with log_density = -log|d {name} / d {aux}| summed over the event dims, as Pyro's "
        "AutoNormal does")


def _end_text_pair(given, expected) -> tuple:
    def text(t):
        t = t.reshape(-1)
        first = ", ".join(f"{float(v):.4g}" for v in t[:3])
        return f"[{first}{', ...' if t.numel() > 3 else ''}]"
    return text(given), text(expected)


def _requires_grad(param_site) -> bool:
    value = param_site["value"]
    value = value.unconstrained() if hasattr(value, "unconstrained") else value
    return bool(getattr(value, "requires_grad", False))


def _is_weighted_delta(fn) -> bool:
    """A ``Delta`` with a nonzero ``log_density``."""
    fn = _unwrapped(fn)
    return _family(fn) == "Delta" and bool(torch.as_tensor(fn.log_density).ne(0).any())


def _sequential_data_plate(sites) -> str | None:
    """The name of a site inside ``pyro.plate("data")`` used as a Python loop, or None."""
    for site in sites:
        frame = data_frame(site)
        if frame is not None and frame.dim is None:
            return site["name"]
    return None


def _shape_mismatch(model_site, guide_site, nesting: int) -> str:
    """'' when a latent site's distributions agree on event dims and on the shape within the
    pair's plates (Pyro's ``check_model_guide_match`` rule), else what differs."""
    model_fn, guide_fn = model_site["fn"], guide_site["fn"]
    if model_fn.event_dim != guide_fn.event_dim:
        return f"event dims {model_fn.event_dim} (model) and {guide_fn.event_dim} (guide)"
    keep = nesting + model_fn.event_dim
    shapes = [tuple(fn.batch_shape + fn.event_shape)[-keep:] if keep else ()
              for fn in (model_fn, guide_fn)]
    for model_size, guide_size in zip_longest(reversed(shapes[0]), reversed(shapes[1]),
                                              fillvalue=1):
        if model_size != guide_size:
            return f"shapes {shapes[0]} (model) and {shapes[1]} (guide)"
    return ""


def _check_latents_agree(model_sites, guide_latents, nesting: int) -> None:
    """Refuse a latent whose model and guide distributions disagree on its shape or event
    dims: the model then scores the guide's draw broadcast against other datapoints'."""
    model_latents = {s["name"]: s for s in model_sites if not s["is_observed"]}
    for guide_site in guide_latents:
        model_site = model_latents.get(guide_site["name"])
        if model_site is None or _is_delta(guide_site["fn"]):
            continue
        found = _shape_mismatch(model_site, guide_site, nesting)
        if found:
            moved = _moved_plates(model_site, guide_site)
            where = (f" (it lies in {_moved_text(moved)}: nest the plates in one order, or "
                     "give them explicit dims)" if moved else "")
            raise PairError(
                f"latent site '{guide_site['name']}' has {found}, a "
                f"{_family(guide_site['fn'])} in the guide and a {_family(model_site['fn'])} "
                f"in the model{where}: the guide must draw the "
                "value the model scores, in the same plates at the same dims and with the "
                "same .to_event(n); otherwise the model scores it broadcast against other "
                "datapoints")


def _support_pairs(model_sites, guide_latents):
    """``(guide site, model site)`` of the latents both sample, the guide's not a Delta (an
    AutoGuide's latents are functions of its auxiliary site; a point has no support to
    compare)."""
    model_latents = {s["name"]: s for s in model_sites if not s["is_observed"]}
    for guide_site in guide_latents:
        model_site = model_latents.get(guide_site["name"])
        if model_site is None or _is_delta(guide_site["fn"]) or _is_delta(model_site["fn"]):
            continue
        yield guide_site, model_site


def _support_record(guide_site, model_site, guide_support, model_support) -> tuple:
    return (guide_site["name"], _family(guide_site["fn"]), describe_support(guide_support),
            _family(model_site["fn"]), describe_support(model_support))


def _support_mismatches(model_sites, guide_latents):
    """``(site, guide family, guide support, model family, model support)`` for each guide
    latent whose support is known not to lie inside the model's: the guide's support exact
    (:func:`inference.supports.support_of`), the model's holding its own."""
    for guide_site, model_site in _support_pairs(model_sites, guide_latents):
        guide_support, exact = support_of(guide_site["fn"])
        model_support = support_of(model_site["fn"])[0]
        if exact and support_within(guide_support, model_support) is False:
            yield _support_record(guide_site, model_site, guide_support, model_support)


def _support_gaps(model_sites, guide_latents):
    """The same records for each latent whose model support is known to reach beyond the
    guide's: the model's support exact, the guide's holding its own."""
    for guide_site, model_site in _support_pairs(model_sites, guide_latents):
        model_support, exact = support_of(model_site["fn"])
        guide_support = support_of(guide_site["fn"])[0]
        if exact and support_within(model_support, guide_support) is False:
            yield _support_record(guide_site, model_site, guide_support, model_support)


def _unscorable(model_sites, mismatches) -> tuple:
    """Sites of ``mismatches`` whose model distribution is a ``Categorical``: its log_prob
    indexes the probabilities with the value, so a class past its last one fails in torch
    (an out-of-bounds index, on a GPU a device-side assert) instead of scoring ``-inf``."""
    mismatched = {record[0] for record in mismatches}
    return tuple(site["name"] for site in model_sites if site["name"] in mismatched
                 and isinstance(_unwrapped(site["fn"]), torch.distributions.Categorical))


def _check_latents_scorable(model_sites, guide_latents, skip=()) -> None:
    """Refuse a latent whose guide draw the model's distribution cannot score at all (torch
    fails, whatever the value): a ``Categorical`` guide draws integers, and
    torch's ``Bernoulli.log_prob`` takes floating-point values only ("result type Float
    can't be cast to the desired output type Long", in every estimator and at fit's first
    step). Sites in ``skip`` (a ``Categorical`` model's out-of-range classes, refused per
    entry point) and values outside the model's support (a matter of the support checks)
    are left to the other checks."""
    for guide_site, model_site in _support_pairs(model_sites, guide_latents):
        if guide_site["name"] in skip:
            continue
        value = guide_site["value"]
        try:
            with _validation_off(model_site["fn"]):
                model_site["fn"].log_prob(value, *model_site["args"], **model_site["kwargs"])
        except ValueError:  # a distribution's own check of the value: the support checks'
            continue
        except (RuntimeError, TypeError, IndexError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            guide_family, model_family = _family(guide_site["fn"]), _family(model_site["fn"])
            hint = (" Give the guide a family whose draws the model's distribution scores "
                    "(the model's own family, on its support).")
            if model_family == "Bernoulli" and torch.is_tensor(value) and \
                    not value.is_floating_point():
                hint = (" torch's Bernoulli scores floating-point values only, and a "
                        f"{guide_family} draws {value.dtype} values (even where the supports "
                        "agree, as a Categorical over 2 classes does with {0, 1}). Use a "
                        "Bernoulli guide (or any guide drawing floating-point 0/1 values) "
                        "for a Bernoulli latent.")
            raise PairError(
                f"latent site '{guide_site['name']}': the model's {model_family} (support "
                f"{describe_support(support_of(model_site['fn'])[0])}) cannot score the "
                f"guide's {guide_family} draw (support "
                f"{describe_support(support_of(guide_site['fn'])[0])}, "
                f"{_value_kind(value)}): {type(error).__name__}: {first}.{hint}") from error


@contextlib.contextmanager
def _validation_off(fn):
    """``fn`` and the distributions it wraps without their argument validation for a while:
    a draw outside the support (a matter of the support checks) must not hide whether the
    distribution can score the draw's dtype at all."""
    chain = [fn]
    while hasattr(chain[-1], "base_dist"):
        chain.append(chain[-1].base_dist)
    saved = [(d, d.__dict__.get("_validate_args")) for d in chain]
    try:
        for d in chain:
            d._validate_args = False
        yield
    finally:
        for d, flag in saved:
            if flag is None:
                d.__dict__.pop("_validate_args", None)
            else:
                d._validate_args = flag


def _value_kind(value) -> str:
    if not torch.is_tensor(value):
        return type(value).__name__
    return f"{value.dtype} values of shape {tuple(value.shape)}"


def _subsampled_plates(sites) -> tuple:
    """``(plate, subsample size, full size)`` of the plates other than ``"data"`` that draw a
    subsample (their scale ``full / size`` is the subsample's)."""
    found = {}
    for site in sites:
        for frame in site["cond_indep_stack"]:
            if frame.name != DATA_PLATE and frame.full_size is not None \
                    and 0 < frame.size < frame.full_size:
                found.setdefault(frame.name, (frame.name, frame.size, frame.full_size))
    return tuple(found.values())


def _is_factor(site) -> bool:
    """A ``pyro.factor``: an observed ``Unit`` site."""
    return site["is_observed"] and _family(site["fn"]) == "Unit"


def _try_vectorized(model, guide, args, kwargs, nesting: int) -> str:
    """Run the pair with 2 particles in a leftmost plate; '' on success, else the error."""

    def vectorized(fn):
        def run(*a, **k):
            with pyro.plate(PARTICLE_PLATE, 2, dim=-nesting):
                return fn(*a, **k)

        return run

    try:
        model_trace, guide_trace = trace_pair(vectorized(model), vectorized(guide), args, kwargs)
        for trace in (model_trace, guide_trace):
            for site in sample_sites(trace):
                log_p = site["fn"].log_prob(site["value"])
                if log_p.dim() > nesting:
                    return (f"site '{site['name']}' has log_prob shape {tuple(log_p.shape)} "
                            f"with more batch dims than its plates declare")
                if log_p.dim() == nesting and log_p.shape[0] not in (1, 2):
                    return (f"site '{site['name']}' has log_prob shape {tuple(log_p.shape)}: "
                            "its leftmost dim is not the particle dim")
        mismatch = _one_particle_mismatch(model, guide, args, kwargs, nesting)
    except Exception as error:  # the user's code failed on a leading particle dim
        return f"{type(error).__name__}: {error}"
    return mismatch


def _one_particle_mismatch(model, guide, args, kwargs, nesting: int) -> str:
    """'' when the pair scores one draw the same with and without a particle plate of size 1,
    else what differs: code that indexes a latent by position (``z[:, 0]`` for the first
    latent coordinate) picks another dim under the particle plate and broadcasts one
    datapoint's latent over all of them, a valid shape with wrong numbers."""
    drawn = poutine.trace(guide).get_trace(*args, **kwargs)
    # both passes replay these draws; randomness outside pyro.sample (dropout, numpy) draws
    # the same numbers in both from the same state
    state = pyro.util.get_rng_state()
    model_trace, guide_trace = trace_pair(model, poutine.replay(guide, trace=drawn), args,
                                          kwargs)
    padded = drawn.copy()
    for site in sample_sites(padded, observed=False):
        value = site["value"]
        missing = nesting - (value.dim() - site["fn"].event_dim)
        if missing > 0:
            site["value"] = value.reshape((1,) * missing + tuple(value.shape))

    def one_particle(fn):
        def run(*a, **k):
            with pyro.plate(PARTICLE_PLATE, 1, dim=-nesting):
                return fn(*a, **k)

        return run

    pyro.util.set_rng_state(state)
    replayed_guide = poutine.replay(one_particle(guide), trace=padded)
    model_one, guide_one = trace_pair(one_particle(model), replayed_guide, args, kwargs)
    plain = float(model_trace.log_prob_sum() - guide_trace.log_prob_sum())
    particle = float(model_one.log_prob_sum() - guide_one.log_prob_sum())
    if abs(plain - particle) <= 1e-4 * (1.0 + abs(plain)) or not math.isfinite(plain):
        return ""
    return (f"one draw scores {plain:.6g} without a particle plate and {particle:.6g} with one "
            "(code that indexes a latent by position, z[:, 0], picks another dim under a "
            "leading particle dim: index from the right, z[..., 0])")


def _replay_model(model, guide_trace, args, kwargs):
    """The model's trace replayed on the guide's draws. When the model fails there, the
    latent sites it reached are compared with the guide's: one the guide draws in another
    shape, event dims or support (a ``OneHotCategorical`` guide for a ``Categorical``
    latent) is named in a :class:`PairError`, the model's error chained to it; any other
    failure is the model's own and propagates as it is."""
    handler = poutine.trace(poutine.replay(model, trace=guide_trace))
    try:
        return handler.get_trace(*args, **kwargs)
    except Exception as error:
        reached = list(sample_sites(prune_subsample_sites(handler.msngr.trace)))
        guide_latents = list(sample_sites(prune_subsample_sites(guide_trace), observed=False))
        found = _replay_disagreement(reached, guide_latents)
        if found is None:
            raise
        name, what = found
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise PairError(
            f"latent site '{name}' has {what}: the guide must draw the value the model "
            "scores (same shape, same .to_event(n), same support); the model failed when it "
            f"was run on the guide's draw ({type(error).__name__}: {first_line})") from error


def _replay_disagreement(model_sites, guide_latents) -> tuple | None:
    """``(site, what differs)`` for the first latent the model reached whose guide draw
    disagrees with it in shape, event dims or support, else None."""
    dims = [-frame.dim for site in (*model_sites, *guide_latents)
            for frame in site["cond_indep_stack"] if frame.vectorized]
    nesting = max(dims, default=0)
    for guide_site, model_site in _support_pairs(model_sites, guide_latents):
        found = _shape_mismatch(model_site, guide_site, nesting)
        if found:
            return guide_site["name"], (f"{found}, a {_family(guide_site['fn'])} in the guide "
                                        f"and a {_family(model_site['fn'])} in the model")
        guide_support, exact = support_of(guide_site["fn"])
        model_support = support_of(model_site["fn"])[0]
        within = support_within(guide_support, model_support)
        if within is False and exact or within is None and _support_kinds_differ(
                guide_support, model_support):
            return guide_site["name"], (
                f"support {describe_support(guide_support)} in the guide "
                f"({_family(guide_site['fn'])}) and {describe_support(model_support)} in the "
                f"model ({_family(model_site['fn'])})")
    return None


def _support_kinds_differ(first, second) -> bool:
    """Whether one support is discrete and the other continuous, or both discrete of
    different kinds (``one_hot`` and ``integer_interval``; for two supports that
    :func:`inference.supports.support_within` cannot compare)."""
    try:
        kinds = [support_base.is_discrete for support_base in map(_support_base, (first, second))]
    except NotImplementedError:
        return False
    if kinds[0] != kinds[1]:
        return True
    return kinds[0] and type(_support_base(first)) is not type(_support_base(second))


def _support_base(constraint):
    while isinstance(constraint, torch.distributions.constraints.independent):
        constraint = constraint.base_constraint
    return constraint


def survey_pair(model: Callable, guide: Callable, args=(), kwargs=None,
                probe_vectorized: bool = True) -> PairStructure:
    """Run the pair once (hidden from outer handlers, random state restored) and describe it.

    Args:
        probe_vectorized: also run it once with 2 particles in a leftmost plate to learn
            whether it broadcasts (False: assume it does, one pass saved).

    Raises only when the pair cannot be described at all (no sample site, plates of
    different sizes); every other finding is recorded for :func:`check_pair` to judge per
    entry point.
    """
    check_pair_arguments(model, guide)
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
    with forked_rng(), poutine.block(), \
            torch.no_grad():
        guide_full = poutine.trace(guide).get_trace(*args, **kwargs)
        model_full = _replay_model(model, guide_full, args, kwargs)
    subsample = {}
    for trace in (guide_full, model_full):
        for site in trace.nodes.values():
            # a plate records its indices even when it keeps every datapoint: only a
            # proper subsample needs replaying
            if (site["type"] == "sample" and site_is_subsample(site)
                    and site["value"].shape[0] < getattr(site["fn"], "size", -1)):
                subsample.setdefault(site["name"], site["value"])
    model_trace = prune_subsample_sites(model_full)
    guide_trace = prune_subsample_sites(guide_full)
    model_sites = list(sample_sites(model_trace))
    guide_latents = list(sample_sites(guide_trace, observed=False))
    if not model_sites:
        raise PairError("the model has no sample sites: nothing to estimate or train")
    sequential = _sequential_data_plate(model_sites + guide_latents)
    if sequential is not None:
        raise PairError(
            f"site '{sequential}' lies in pyro.plate('{DATA_PLATE}') used as a Python loop "
            f"(`for i in pyro.plate('{DATA_PLATE}', N)`, a sequential plate); the estimators "
            "and trainers score the datapoints along one vectorized dim: write `with "
            f"pyro.plate('{DATA_PLATE}', len(x)):` and give each site the batch's values")
    guide_observed = [s["name"] for s in sample_sites(guide_trace, observed=True)]
    if guide_observed:
        raise PairError(
            f"the guide has observed site(s) {_site_list(guide_observed)} (pyro.factor or "
            "obs=): a guide's density is that of its latent draws, so such a term has no "
            "place in q(z | x); move it to the model")
    _check_observed_values(model_sites)

    global_sites, frames = [], []
    for role, sites in (("model", model_sites), ("guide", guide_latents)):
        for site in sites:
            frame = data_frame(site)
            if frame is None:
                global_sites.append((role, site["name"]))
            else:
                frames.append((site, frame))
    declared = {frame.full_size if frame.full_size is not None else frame.size
                for _, frame in frames}
    sizes = {frame.size for _, frame in frames}
    sizeless = -1 in sizes
    shared = []
    if sizeless:
        lengths = {site["name"]: _site_data_size(site, frame) for site, frame in frames}
        batch_size = max(lengths.values())
        shared = tuple(name for name, n in lengths.items() if n != batch_size)
    else:
        if len(sizes) > 1:
            raise PairError(f"model and guide disagree on the size of the '{DATA_PLATE}' "
                            f"plate: {sorted(sizes)}")
        batch_size = sizes.pop() if sizes else 0

    model_latent_names = [s["name"] for s in model_sites if not s["is_observed"]]
    auxiliary = tuple(s["name"] for s in guide_latents if s["infer"].get("is_auxiliary"))
    guide_names = {s["name"] for s in guide_latents}
    missing_in_guide = tuple(n for n in model_latent_names if n not in guide_names)
    missing_in_model = tuple(s["name"] for s in guide_latents if s["name"] not in auxiliary
                             and s["name"] not in model_latent_names)
    non_reparam = tuple(s["name"] for s in guide_latents
                        if not getattr(s["fn"], "has_rsample", False) and not _is_delta(s["fn"]))
    discrete = tuple(s["name"] for s in guide_latents if s["fn"].support.is_discrete)
    enumerated = tuple(s["name"] for s in guide_latents if s["infer"].get("enumerate"))
    dims = [-frame.dim for site in (*model_sites, *guide_latents)
            for frame in site["cond_indep_stack"] if frame.vectorized]
    nesting = max(dims, default=0)
    _check_batch_dims(model_sites + guide_latents, nesting)
    _check_latents_agree(model_sites, guide_latents, nesting)
    _check_plate_order(model_sites, guide_latents)
    # the guide's sites first: a guide draw of a wrong shape is the guide's fault, which the
    # model's site replaying it would otherwise be named for
    _check_plate_dims([("guide", site) for site in guide_latents]
                      + [("model", site) for site in model_sites], model_sites)
    _check_observed_data_dims(model_sites)
    _check_support_kinds(model_sites, guide_latents)
    support_mismatch = tuple(_support_mismatches(model_sites, guide_latents))
    unscorable = _unscorable(model_sites, support_mismatch)
    with torch.no_grad():
        _check_latents_scorable(model_sites, guide_latents, skip=unscorable)
    free_deltas, jacobian = _delta_dependence(guide, args, kwargs, guide_latents, auxiliary)
    if jacobian:
        raise _jacobian_error(jacobian[0])
    beside_auxiliary = ()
    if auxiliary:
        ordinary = [site["name"] for site in guide_latents if site["name"] not in auxiliary
                    and _family(site["fn"]) != "Delta"]
        if ordinary:
            dependent = set(conditional_sites_of_guide(guide, args, kwargs))
            beside_auxiliary = tuple(n for n in ordinary if n not in dependent)
    error = ""
    if probe_vectorized:
        fixed = PairStructure(nesting, batch_size, subsample=subsample)
        with forked_rng(), poutine.block(), \
                torch.no_grad(), pyro.validation_enabled(False):
            error = _try_vectorized(fixed.fix_subsample(model), fixed.fix_subsample(guide),
                                    args, kwargs, nesting + 1)
    return PairStructure(
        max_plate_nesting=nesting,
        batch_size=batch_size,
        data_size=None if sizeless or not declared else max(declared),
        subsample=subsample,
        tempered=tuple(_tempered(model_sites + guide_latents)),
        support_mismatch=support_mismatch,
        support_gap=tuple(_support_gaps(model_sites, guide_latents)),
        unscorable=unscorable,
        subsampled_plates=_subsampled_plates(model_sites + guide_latents),
        factors=tuple(s["name"] for s in model_sites if _is_factor(s)),
        global_sites=tuple(global_sites),
        global_observed=tuple(s["name"] for s in model_sites
                              if s["is_observed"] and data_frame(s) is None),
        non_reparameterized=non_reparam,
        discrete=discrete,
        enumerated=enumerated,
        auxiliary=auxiliary,
        missing_in_guide=missing_in_guide,
        missing_in_model=missing_in_model,
        vectorizable=not error,
        vectorize_error=error,
        shared_in_sizeless=shared,
        guide_families={s["name"]: _family(s["fn"]) for s in guide_latents},
        model_latents=tuple(model_latent_names),
        point_masses=tuple(s["name"] for s in guide_latents if _is_delta(s["fn"])),
        weighted_deltas=tuple(s["name"] for s in guide_latents if _is_weighted_delta(s["fn"])),
        row_mismatch=tuple(_row_mismatches(model_sites)),
        mask_mismatch=_mask_mismatches(model_sites, guide_latents),
        free_deltas=free_deltas,
        beside_auxiliary=beside_auxiliary,
        plates=tuple({(f.name, f.dim, f.size): None for site in (*model_sites, *guide_latents)
                      for f in site["cond_indep_stack"] if f.vectorized}),
        trainable=any(_requires_grad(site) for trace in (guide_full, model_full)
                      for site in trace.nodes.values() if site["type"] == "param"),
    )


def _site_list(names) -> str:
    return ", ".join(f"'{n}'" for n in names)


def entry_label(use: str) -> str:
    """How a message names entry point ``use`` when its caller gives no fuller call: the
    estimator's name, ``fit(loss='iwae')`` for ``"fit:iwae"``, ``fit`` for another loss."""
    if use.startswith("fit:"):
        loss = use.split(":", 1)[1]
        return f"fit(loss='{loss}')" if loss in FIT_LOSSES else "fit"
    return use


def _check_sites_match(s: PairStructure, use: str = "log_importance_weights",
                       called: str | None = None) -> None:
    called = called or entry_label(use)
    training = use.startswith("fit:")
    if s.mask_mismatch:
        name = s.mask_mismatch[0]
        raise PairError(
            f"latent site '{name}' is masked differently in the model and the guide "
            "(poutine.mask, or obs_mask, whose '<name>_unobserved' site the model masks where "
            "the data are observed): where one side's density is masked out and the other's "
            "is not, p(x, z) / q(z) is not a density ratio. Sample it in the guide under the "
            f"same mask: `with pyro.poutine.mask(mask=...): pyro.sample('{name}', ...)`")
    if s.row_mismatch:
        name, rows, size = s.row_mismatch[0]
        raise PairError(
            f"observed site '{name}' has {rows} rows along the '{DATA_PLATE}' dim but the "
            f"plate has {size}: the data and the plate disagree (a guide's plate, e.g. an "
            "AutoGuide's sized on other data, replays its indices into the model)")
    if s.missing_in_guide or s.missing_in_model:
        parts = []
        if s.missing_in_guide:
            parts.append(f"the model's latent site(s) {_site_list(s.missing_in_guide)} are not "
                         "sampled by the guide")
        if s.missing_in_model:
            parts.append(f"the guide samples {_site_list(s.missing_in_model)}, which the model "
                         "does not have (mark a guide-only variable with "
                         "infer={'is_auxiliary': True} if it is one)")
        enumeration = (
            f"{called} trains a guide that samples every latent: it does not sum out "
            "discrete latents the model enumerates (pyro.infer.TraceEnum_ELBO's "
            "marginalization), whatever loss is passed; train such a pair with "
            "pyro.infer.SVI(model, guide, optim, TraceEnum_ELBO(...)) directly"
            if training else
            f"discrete latents the model enumerates need pyro.infer.TraceEnum_ELBO, which "
            f"{called} does not run: it draws every latent from the guide")
        raise PairError(f"{called}: " + "; ".join(parts) + ": the guide must propose exactly "
                        f"the model's latent sites ({enumeration})")
    if s.auxiliary:
        others = [n for n, family in s.guide_families.items()
                  if n not in s.auxiliary and family != "Delta" and n not in s.beside_auxiliary]
        if others:
            needs = ("the ELBO it trains needs" if training and use not in COVERAGE_USES
                     else "its importance weights need" if training else
                     "importance weights need")
            raise PairError(
                f"{called}: the guide has auxiliary site(s) {_site_list(s.auxiliary)} and also "
                f"samples {_site_list(others)} from a non-Delta distribution: {needs} the "
                "guide's density q(z) of the model's latents, known only when they are "
                "deterministic functions (Delta sites) of the auxiliary ones, as in Pyro's "
                "AutoGuides, or drawn independently of them (these depend on another draw)")
    if s.enumerated:
        marked = (f"guide site(s) {_site_list(s.enumerated)} are marked for enumeration "
                  "(infer={'enumerate': ...}, or config_enumerate)")
        if training:
            raise PairError(
                f"{called}: {marked}; fit trains with one sampled value per guide site and "
                "does not enumerate guide sites, whatever loss is passed (TraceEnum_ELBO "
                "included): its pair checks, minibatch scaling and particles assume sampled "
                "draws. Remove the mark to train the site by sampling (loss='elbo' gives a "
                "discrete site Trace_ELBO's score-function gradient), or train the "
                "enumerating guide with pyro.infer.SVI(model, guide, optim, "
                "TraceEnum_ELBO(...)) directly")
        raise PairError(f"{called}: {marked}; {called} draws the guide's values as samples "
                        "(importance sampling), it does not enumerate them: remove the mark")


def check_subsampled_plates(s: PairStructure, use: str, called: str | None = None) -> None:
    """Raise :class:`PairError` when a plate other than ``"data"`` draws a subsample and
    ``use`` is a per-datapoint estimate or an importance-weighted loss; ``fit`` with
    ``loss="elbo"``/``"meanfield"`` (any other ``fit:`` use) trains with it. ``called``
    names the user's call in the message (:func:`entry_label` of ``use`` by default)."""
    if not s.subsampled_plates or (use.startswith("fit:") and use not in COVERAGE_USES):
        return
    plate, size, full = s.subsampled_plates[0]
    raise PairError(
        f"{called or entry_label(use)}: pyro.plate('{plate}') draws a subsample ({size} of "
        f"its {full} members) "
        f"inside the datapoints of pyro.plate('{DATA_PLATE}'), so each datapoint would be "
        f"scored on the {size} members drawn: log p(x) of a part of it, not of the "
        f"datapoint. Only the '{DATA_PLATE}' plate may subsample here; evaluate with "
        f"pyro.plate('{plate}', {full}) (no subsample_size or subsample). fit() trains with "
        f"such a plate under loss='elbo' or 'meanfield': its scale {full}/{size} makes the "
        "minibatch ELBO unbiased, which it does not make the log-mean-exp of an "
        "importance-weighted bound")


class TemperedPairWarning(UserWarning):
    """An estimator scores a pair with scaled sites by its unscaled densities."""


def warn_if_tempered(s: PairStructure, use: str) -> None:
    """:class:`TemperedPairWarning` naming the first site of ``s.tempered``, if any, for
    estimator ``use``."""
    if not s.tempered:
        return
    name, scale = s.tempered[0]
    found = "per-datapoint weights (a tensor scale)" if scale is None else f"scale {scale:g}"
    warnings.warn(
        f"{use}: site '{name}' carries {found} beyond its plates' N / batch (a poutine.scale: "
        "a tempered likelihood, a weighted prior); the estimators score the model's unscaled "
        "densities, log p(x, z) of the probability model, where Pyro's Trace_ELBO multiplies "
        "the site's log density by the scale. Remove the scale from the pair you evaluate to "
        "silence this", TemperedPairWarning, stacklevel=user_stacklevel())


def _global_site_error(s: PairStructure, use: str, called: str | None = None) -> PairError:
    """The refusal of the first site outside ``"data"``, with the remedy for its kind: a
    global latent is conditioned on a value, an AutoGuide's joint vector is replaced by a
    per-site guide, a factor or an observation moves into the plate."""
    role, name = s.global_sites[0]
    called = called or entry_label(use)
    if not any(plate == DATA_PLATE for plate, _, _ in s.plates):
        found = ", ".join(f"'{plate}' (size {size}, dim {dim})" for plate, dim, size in s.plates)
        rename = (f"; if one of them holds the datapoints, name it '{DATA_PLATE}' in model "
                  f"and guide (`with pyro.plate('{DATA_PLATE}', len(x)):`)" if found else
                  f"; put the per-datapoint sites of model and guide inside `with "
                  f"pyro.plate('{DATA_PLATE}', len(x)):`")
        return PairError(
            f"{called}: the pair has no plate named '{DATA_PLATE}' (plates found: "
            f"{found or 'none'}), and {called} takes the datapoints from the plate of that "
            f"name, so {role} site '{name}' lies outside pyro.plate('{DATA_PLATE}'), as "
            f"does every other site, and none is scored per datapoint{rename}")
    where = (f"{called}: {role} site '{name}' lies outside pyro.plate('{DATA_PLATE}'), so it "
             "is shared by all datapoints")
    split = "log p(x_1..N) does not split into per-datapoint terms"
    training = "fit() trains such pairs with loss='elbo' or 'meanfield'"
    if role == "guide" and name in s.auxiliary:
        if name.startswith("_Auto") and name.endswith("_latent"):
            auto = name[1:-len("_latent")]
            return PairError(
                f"{where}: it is {auto}'s vector of every latent value of the model, one "
                f"joint draw for all datapoints, so q does not factor over datapoints and "
                f"{split}. For per-datapoint estimates use pyro.infer.autoguide.AutoNormal "
                "(one distribution per latent site, inside the model's plates) or a guide "
                f"that samples each latent inside `with pyro.plate('{DATA_PLATE}', batch):`; "
                f"{training}")
        return PairError(
            f"{where}: an auxiliary guide variable drawn once for all datapoints makes q "
            f"couple them, so {split}. Draw it inside `with pyro.plate('{DATA_PLATE}', "
            f"batch):`, one per datapoint; {training}")
    if name in s.factors:
        return PairError(
            f"{where}: a pyro.factor outside the plate adds one log factor for all "
            f"datapoints together, so {split}. Compute it per datapoint inside `with "
            f"pyro.plate('{DATA_PLATE}', batch):`, a log factor of shape [batch] (the "
            f"plate's dim); {training}")
    if name in s.global_observed:
        return PairError(
            f"{where}: an observation outside the plate scores all datapoints together, so "
            f"{split}. Observe the data inside `with pyro.plate('{DATA_PLATE}', batch):`, "
            f"one row per datapoint along the plate's dim (.to_event(n) for the features); "
            f"{training}")
    return PairError(
        f"{where} and {split}; {called} needs every sample site inside `with "
        f"pyro.plate('{DATA_PLATE}', batch):`. To score the datapoints given a value of it, "
        f"fix it with pyro.poutine.block(pyro.poutine.condition(model, data={{'{name}': "
        f"value}}), hide=['{name}']) (and the same for the guide); {training}")


def _check_per_datapoint(s: PairStructure, use: str, called: str | None = None) -> None:
    called = called or entry_label(use)
    if s.global_sites:
        raise _global_site_error(s, use, called)
    if s.batch_size == 0:
        raise PairError(f"{called}: no sample site lies inside pyro.plate('{DATA_PLATE}')")
    # A Delta whose log_density is log q of a draw made outside the guide (noise passed in
    # as data) gives one ELBO term per datapoint, as in Pyro's Trace_ELBO; its K particles
    # are one point, no importance sample. Without a log_density it has no density at all.
    # A Delta that is a function of an auxiliary draw (an AutoGuide's latent) has the
    # auxiliary site's density; one that is not (AutoDelta, also inside an AutoGuideList next
    # to AutoNormal's auxiliary sites) is a point mass scored as log q = 0.
    deltas = [n for n in s.free_deltas if n not in s.auxiliary
              and (use != "elbo" or n not in s.weighted_deltas)]
    if deltas:
        purpose = ("to train with an importance-weighted loss (or train the point estimate "
                   "with loss='elbo')" if use.startswith("fit:") else "to estimate the evidence")
        beside = (f" Its value does not depend on the guide's auxiliary site(s) "
                  f"{_site_list(s.auxiliary)}, so it is no AutoGuide's transform of them but "
                  "a point mass on a parameter (AutoDelta inside an AutoGuideList, or "
                  "Delta(pyro.param(...))), scored as log q = 0, which put IWAE and AIS "
                  "above log p(x)." if s.auxiliary else "")
        raise PairError(
            f"{called}: guide site '{deltas[0]}' is a Delta (a point estimate, e.g. "
            "AutoDelta): its particles are all one point (and without a log_density it has no "
            "density), so importance weights and bounds are undefined." + beside +
            " Use a guide that draws "
            f"from a distribution with a density (e.g. AutoNormal) {purpose}")
    if s.shared_in_sizeless:
        raise PairError(
            f"{called}: site(s) {_site_list(s.shared_in_sizeless)} inside the sizeless "
            f"pyro.plate('{DATA_PLATE}') have no data dimension (size 1 where the data have "
            f"{s.batch_size}): one value is shared by all datapoints. Give the plate its size, "
            f"pyro.plate('{DATA_PLATE}', len(x)), so Pyro expands the site per datapoint")


def check_pair(structure: PairStructure, use: str, called: str | None = None) -> PairStructure:
    """Raise :class:`PairError` unless entry point ``use`` is defined for the surveyed pair.

    Args:
        structure: from :func:`survey_pair`.
        use: the entry point: ``"log_importance_weights"``, ``"elbo"``, ``"iwae_bound"``,
            ``"bound_sweep"``, ``"weight_diagnostics"``, ``"log_evidence"``,
            ``"ais_log_evidence"``, ``"amortization_gap"``, or ``"fit:<loss>"`` with a loss of
            :data:`FIT_LOSSES` (any other ``fit:`` loss only gets the site checks).
        called: how the messages name the user's call (``fit(loss=IWAELoss(num_particles=5))``
            for a loss object); :func:`entry_label` of ``use`` by default.

    Returns:
        ``structure``, for chaining.
    """
    s = structure
    called = called or entry_label(use)
    training = use.startswith("fit:")
    _check_sites_match(s, use, called)
    if s.unscorable:
        name = s.unscorable[0]
        record = next(r for r in s.support_mismatch if r[0] == name)
        raise PairError(
            f"{called}: guide site '{name}' draws from a {record[1]} with support {record[2]}, "
            f"beyond the model's {record[3]} support {record[4]}: the model's {record[3]} "
            "cannot score a draw outside its classes (torch indexes its probabilities with "
            "the value: an out-of-bounds error, on a GPU a device-side assert). Give the "
            "guide the model's classes (as many categories)")
    if use in PER_DATAPOINT_USES:
        _check_per_datapoint(s, use, called)
    check_subsampled_plates(s, use, called)
    if not training:
        warn_if_tempered(s, use)
    if s.support_gap and use in COVERAGE_USES:
        name, guide_family, guide_support, model_family, model_support = s.support_gap[0]
        converge = ("the importance-weighted loss trains toward it, not toward log p(x)"
                    if training else "IWAE_K and AIS converge to it, not to log p(x), and "
                    "k-hat cannot tell")
        raise PairError(
            f"{called}: latent site '{name}' has support {model_support} in the model "
            f"({model_family}), beyond the support {guide_support} of the guide's "
            f"{guide_family}: the guide never proposes the rest, so its importance weights "
            f"estimate log p(x, '{name}' in the guide's support), a partial evidence below "
            f"log p(x): {converge}. "
            "Give the guide the model's support (a Normal for a real latent, as many "
            "categories as the model's). elbo (and fit with loss='elbo' or 'meanfield') "
            "still take this pair: the ELBO stays a lower bound on log p(x), its gap "
            "including the posterior mass the guide never proposes")
    if s.support_mismatch and (use in ("elbo", "amortization_gap") or use.startswith("fit:")):
        name, guide_family, guide_support, model_family, model_support = s.support_mismatch[0]
        value = ("the loss is infinite for such draws and its gradients undefined"
                 if training else "the ELBO is -inf")
        raise PairError(
            f"{called}: guide site '{name}' draws from a {guide_family} with support "
            f"{guide_support}, beyond the model's {model_family} support {model_support}: "
            f"draws outside it have p(x, z) = 0, so {value} (Pyro's Trace_ELBO "
            "refuses them at log_prob). Give the guide the model's support, e.g. "
            "dist.TransformedDistribution(dist.Normal(loc, scale), biject_to(support)), a "
            "LogNormal for a positive latent, or an AutoNormal guide; the importance-weighted "
            "estimators give such draws weight zero")
    if use == "ais_log_evidence":
        discrete = [n for n in s.discrete if n not in s.auxiliary]
        if discrete:
            raise PairError(f"ais_log_evidence: guide site(s) {_site_list(discrete)} are "
                            "discrete; AIS moves continuous latents (use iwae_bound, whose "
                            "weights need no gradient)")
        if not s.vectorizable:
            raise PairError("ais_log_evidence: the pair fails with chains in a leftmost "
                            f"pyro.plate ({s.vectorize_error}); AIS runs all chains at once, "
                            "so the model and guide must broadcast over leading batch dims "
                            "(see docs/own-pair.md)")
    if use == "amortization_gap":
        bad = [n for n, family in s.guide_families.items()
               if family not in ("Normal", "MultivariateNormal")]
        if bad:
            raise PairError(
                f"amortization_gap: guide site '{bad[0]}' is a {s.guide_families[bad[0]]}; the "
                "local guides that measure the gap are Normal or MultivariateNormal per site "
                "(a guide with discrete or auxiliary sites, e.g. an AutoGuide, has no "
                "amortization to measure)")
    if use in ("fit:iwae", "fit:dreg"):
        bad = [n for n in s.non_reparameterized if n not in s.auxiliary]
        if bad:
            raise PairError(
                f"{called}: guide site '{bad[0]}' ({s.guide_families[bad[0]]}) is not "
                "reparameterized; the importance-weighted objectives here follow pathwise "
                "gradients only and would miss its score-function term. Use loss='elbo' "
                "(Trace_ELBO's score-function estimator) for such guides")
        if not s.vectorizable:
            raise PairError(
                f"{called}: the pair fails with particles in a leftmost pyro.plate "
                f"({s.vectorize_error}); the importance-weighted losses draw the particles at "
                "once, so the model must broadcast over leading batch dims (see "
                "docs/own-pair.md), or use loss='elbo'")
    if use == "fit:meanfield":
        bad = [n for n in s.non_reparameterized if n not in s.auxiliary]
        if bad:
            raise PairError(
                f"{called}: guide site '{bad[0]}' ({s.guide_families[bad[0]]}) is "
                "not reparameterized and TraceMeanField_ELBO has no score-function term; use "
                "loss='elbo'")
    return s


def inspect_pair(model: Callable, guide: Callable, args=(), kwargs=None,
                 use: str = "log_importance_weights") -> PairStructure:
    """:func:`survey_pair` (without the vectorization probe) then :func:`check_pair` for
    ``use`` (per-datapoint weights by default): the structure of a pair fit for per-datapoint
    estimates, or a ``PairError``."""
    return check_pair(survey_pair(model, guide, args, kwargs, probe_vectorized=False), use)


def attach_subsample(result, structure: PairStructure):
    """Set ``result.subsample`` to the ``"data"`` plate's subsample indices ``[batch]`` when the
    model subsampled its own plate (a tensor result gets the attribute too); returns it."""
    indices = structure.data_subsample
    if indices is not None:
        result.subsample = indices
    return result
