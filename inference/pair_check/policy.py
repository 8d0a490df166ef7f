"""Which entry point may use which pair: :func:`check_pair` judges a :class:`PairStructure`
for one use, or raises a :class:`PairError` in words about the user's own call.
"""

from __future__ import annotations

import warnings
from typing import Callable

from ..checks import user_stacklevel
from .latents import late_parent_message
from .networks import ShadowedParamWarning
from .sites import DATA_PLATE, PairError, site_list
from .survey import PairStructure, survey_pair

# Entry points (``use`` of :func:`check_pair`) that need one log weight per datapoint.
PER_DATAPOINT_USES = ("elbo", "iwae_bound", "bound_sweep", "log_importance_weights",
                      "weight_diagnostics", "log_evidence", "ais_log_evidence",
                      "amortization_gap", "fit:iwae", "fit:dreg")


FIT_LOSSES = ("elbo", "meanfield", "iwae", "dreg")


# Entry points whose weights sum out the model's enumerated latents that the guide does not
# sample (:attr:`PairStructure.model_enumerated`); every other use refuses such a pair.
SUMMING_USES = ("elbo", "iwae_bound", "bound_sweep", "log_importance_weights",
                "weight_diagnostics", "log_evidence")

# ``fit`` with a ``pyro.infer.TraceEnum_ELBO`` object: Pyro's loss sums those latents out.
TRACE_ENUM_FIT = "fit:TraceEnum_ELBO"


# The entry point that estimates the evidence of the whole data, log p(x_1..N), with one
# importance weight per draw of every latent (global ones included): the pair is judged as
# one probability model, unscaled and unsubsampled (:func:`_check_joint`).
JOINT_USE = "joint_log_evidence"


# Entry points whose number needs the guide to cover the model's support (and each
# datapoint whole): importance weights, whose average converges to log p(x) only then.
COVERAGE_USES = ("iwae_bound", "bound_sweep", "log_importance_weights", "weight_diagnostics",
                 "log_evidence", "ais_log_evidence", "fit:iwae", "fit:dreg", JOINT_USE)


# The estimators' names that :func:`check_pair` judges a pair for (``"fit:<loss>"`` besides).
ESTIMATOR_USES = ("log_importance_weights", "elbo", "iwae_bound", "bound_sweep",
                  "weight_diagnostics", "log_evidence", "ais_log_evidence", "amortization_gap",
                  JOINT_USE)


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
            f"{called}: latent site '{name}' is masked differently in the model and the guide "
            "(poutine.mask, or obs_mask, whose '<name>_unobserved' site the model masks where "
            "the data are observed): where one side's density is masked out and the other's "
            "is not, p(x, z) / q(z) is not a density ratio. Sample it in the guide under the "
            f"same mask: `with pyro.poutine.mask(mask=...): pyro.sample('{name}', ...)`; an "
            "AutoGuide cannot mask its sites: mask only the model's observed sites instead (a "
            "padded latent then keeps its prior, and log p(x) is unchanged), or write the "
            "guide's site yourself")
    if s.row_mismatch:
        name, rows, size = s.row_mismatch[0]
        raise PairError(
            f"{called}: observed site '{name}' has {rows} rows along the '{DATA_PLATE}' dim "
            f"but the plate has {size}: the data and the plate disagree (a guide's plate, e.g. an "
            "AutoGuide's sized on other data, replays its indices into the model)")
    if s.missing_in_guide or s.missing_in_model:
        parts = []
        if s.missing_in_guide:
            parts.append(f"the model's latent site(s) {site_list(s.missing_in_guide)} are not "
                         "sampled by the guide")
            done = [name for name in s.missing_in_guide if name in s.intervened]
            if done:  # what Pyro's do leaves behind
                parts.append(
                    f"{site_list(done)} is a pyro.poutine.do intervention's own draw, which "
                    "do keeps in the model as a latent (the sites after it read the "
                    "intervened value): sample it in the guide from its prior (it is cut from "
                    "the data), or hide it, poutine.block(poutine.do(model, data=...), "
                    f"hide={list(done)})")
        if s.missing_in_model:
            parts.append(f"the guide samples {site_list(s.missing_in_model)}, which the model "
                         "does not have (mark a guide-only variable with "
                         "infer={'is_auxiliary': True} if it is one)")
        enumeration = (
            f"{called} does not sum out discrete latents the model does not mark for "
            "enumeration; to sum one out, mark it in the model (infer={'enumerate': "
            "'parallel'}, or config_enumerate) and train with "
            "loss=pyro.infer.TraceEnum_ELBO(max_plate_nesting=...)"
            if training else
            f"{called} draws every latent from the guide, except the discrete ones the model "
            "marks for enumeration (infer={'enumerate': 'parallel'}, or config_enumerate on "
            "the model), which it sums out; only a finite support can be summed (Bernoulli, "
            "Categorical, Binomial: config_enumerate skips a Poisson or Geometric, which the "
            "guide must sample)")
        raise PairError(f"{called}: " + "; ".join(parts) + ": the guide must propose exactly "
                        f"the model's latent sites ({enumeration})")
    marked = [name for name in s.unused_auxiliary if name in s.model_latents]
    if marked:
        raise PairError(
            f"{called}: the guide marks the model's latent site(s) {site_list(marked)} "
            "infer={'is_auxiliary': True}, which makes a draw the model does not score; the "
            "guide must propose the model's latents as latents: drop the mark")
    if s.unused_auxiliary:
        raise PairError(
            f"{called}: the guide's auxiliary site(s) {site_list(s.unused_auxiliary)} "
            "(infer={'is_auxiliary': True}) feed no other guide site: their log q would enter "
            "every importance weight with nothing in the model to match it (the ELBO comes out "
            "above log p(x) by their entropy, IWAE grows with K). Remove the site(s), or hide "
            "a draw kept for another purpose with poutine.mask(mask=False)")
    if s.auxiliary:
        others = [n for n, family in s.guide_families.items()
                  if n not in s.auxiliary and family != "Delta" and n not in s.beside_auxiliary]
        if others:
            needs = ("the ELBO it trains needs" if training and use not in COVERAGE_USES
                     else "its importance weights need" if training else
                     "importance weights need")
            raise PairError(
                f"{called}: the guide has auxiliary site(s) {site_list(s.auxiliary)} and also "
                f"samples {site_list(others)} from a non-Delta distribution: {needs} the "
                "guide's density q(z) of the model's latents, known only when they are "
                "deterministic functions (Delta sites) of the auxiliary ones, as in Pyro's "
                "AutoGuides, or drawn independently of them (these depend on another draw)")
    if s.enumerated and training:
        # the estimators draw such a site as any other: its guide distribution is the
        # proposal, and the weights p(x, y, z) / q(y, z | x) stay exact importance weights
        raise PairError(
            f"{called}: guide site(s) {site_list(s.enumerated)} are marked for enumeration "
            "(infer={'enumerate': ...}, or config_enumerate); fit trains with one sampled "
            "value per guide site and does not enumerate guide sites, whatever loss is passed "
            "(TraceEnum_ELBO included): its pair checks, minibatch scaling and particles "
            "assume sampled draws. Remove the mark to train the site by sampling "
            "(loss='elbo' gives a discrete site Trace_ELBO's score-function gradient), or "
            "train the enumerating guide with pyro.infer.SVI(model, guide, optim, "
            "TraceEnum_ELBO(...)) directly")


def _check_model_enumerated(s: PairStructure, use: str, called: str) -> None:
    """Refuse model-enumerated latents (:attr:`PairStructure.model_enumerated`) where ``use``
    cannot sum them out: a sequential mark, a site outside ``"data"``, another entry point."""
    if not s.model_enumerated:
        return
    marked = (f"the model's latent site(s) {site_list(s.model_enumerated)} are marked for "
              "enumeration and not sampled by the guide")
    if s.sequential_enumerated:
        raise PairError(
            f"{called}: the model's site '{s.sequential_enumerated[0]}' is marked "
            "infer={'enumerate': 'sequential'}; the weights sum out the model's discrete "
            "latents in parallel only: mark it 'parallel' (config_enumerate's default)")
    if use == JOINT_USE:  # summed out over all the data together, wherever they lie
        return
    outside = [name for role, name in s.global_sites
               if role == "model" and name in s.model_enumerated]
    if outside:
        raise PairError(
            f"{called}: the model's enumerated site '{outside[0]}' lies outside "
            f"pyro.plate('{DATA_PLATE}'): summed out there it couples all datapoints, so "
            "log p(x_1..N) does not split into per-datapoint terms. Draw it inside `with "
            f"pyro.plate('{DATA_PLATE}', batch):`, one per datapoint; {JOINT_USE}(model, "
            "guide, ...) sums it out for the evidence of the whole data")
    if use in SUMMING_USES or use == TRACE_ENUM_FIT:
        return
    if use.startswith("fit:"):
        raise PairError(
            f"{called}: {marked}; this loss scores sampled draws and does not sum out "
            "discrete latents the model enumerates: train with "
            "fit(..., loss=pyro.infer.TraceEnum_ELBO(max_plate_nesting=...)), Pyro's loss "
            f"that sums them out. {', '.join(SUMMING_USES)} sum them out too")
    why = ("AIS moves the guide's latents and would draw the enumerated ones as well"
           if use == "ais_log_evidence" else
           "its local Gaussian guides score the model's latents as sampled draws"
           if use == "amortization_gap" else "it scores every latent as a sampled draw")
    raise PairError(f"{called}: {marked}; {called} does not sum them out ({why}). "
                    f"{', '.join(SUMMING_USES)} do")


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
        "a tempered likelihood or a weighted prior in the model, a scaled term in the guide); "
        "the estimators score the unscaled densities, log p(x, z) - log q(z | x) of the "
        "probability models, where Pyro's Trace_ELBO multiplies the site's log density by the "
        "scale. Remove the scale from the pair you evaluate to silence this",
        TemperedPairWarning, stacklevel=user_stacklevel())


def renamed_plate_error(s: PairStructure, called: str) -> PairError:
    """The refusal of a site inside a plate named otherwise than the other program's
    ``"data"`` for it (:attr:`PairStructure.renamed_data_plates`)."""
    role, name, plate = s.renamed_data_plates[0]
    other = "guide" if role == "model" else "model"
    return PairError(
        f"{called}: {role} site '{name}' lies in pyro.plate('{plate}'), where the {other}'s "
        f"'{name}' lies in pyro.plate('{DATA_PLATE}') of the same dim and size: Pyro matches "
        "the plates of model and guide by name, so for it they are two plates (minibatches "
        f"would scale one and not the other, and '{name}' counts as shared by all "
        f"datapoints). Name the plate '{DATA_PLATE}' in both model and guide")


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
            f"does every other site, and none is scored per datapoint{rename}. For the "
            f"evidence of the whole data, log p(x_1..N), with latents shared by all "
            f"datapoints, call {JOINT_USE}(model, guide, ...)")
    if s.renamed_data_plates:
        return renamed_plate_error(s, called)
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
            f"batch):`, one per datapoint (an AutoGuide that draws it, such as "
            "AutoStructured, has no per-datapoint form: use pyro.infer.autoguide.AutoNormal "
            f"for per-datapoint estimates); {training}")
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
        f"value}}), hide=['{name}']) (and the same for the guide); {training}; "
        f"{JOINT_USE}(model, guide, ...) estimates log p(x_1..N) of the whole data")


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
                  f"{site_list(s.auxiliary)}, so it is no AutoGuide's transform of them but "
                  "a point mass on a parameter (AutoDelta inside an AutoGuideList, or "
                  "Delta(pyro.param(...))), scored as log q = 0, which put IWAE and AIS "
                  "above log p(x)." if s.auxiliary else "")
        raise PairError(
            f"{called}: guide site '{deltas[0]}' is a Delta (a point estimate, e.g. "
            "AutoDelta): its particles are all one point (and without a log_density it has no "
            "density), so importance weights and bounds are undefined." + beside +
            " Use a guide that draws "
            f"from a distribution with a density (e.g. AutoNormal) {purpose}")
    trusted = [n for n in s.free_deltas if n not in s.auxiliary and n in s.weighted_deltas]
    if use == "elbo" and trusted:
        warnings.warn(
            f"{called}: guide site '{trusted[0]}' is a Delta with a log_density, taken as log q "
            "of its value (as Pyro's Trace_ELBO takes it): the ELBO is a lower bound on log "
            "p(x) only if that is the density of a draw made outside the guide (noise passed "
            "in as data); any other number shifts it, above log p(x) too. Importance-weighted "
            "estimates refuse such a site", stacklevel=user_stacklevel())
    if s.shared_in_sizeless:
        raise PairError(
            f"{called}: site(s) {site_list(s.shared_in_sizeless)} inside the sizeless "
            f"pyro.plate('{DATA_PLATE}') have no data dimension (size 1 where the data have "
            f"{s.batch_size}): one value is shared by all datapoints. Give the plate its size, "
            f"pyro.plate('{DATA_PLATE}', len(x)), so Pyro expands the site per datapoint")


def _check_joint(s: PairStructure, called: str) -> None:
    """What makes :data:`JOINT_USE`'s number other than ``log p(x_1..N)``: a subsample of any
    plate (the evidence of the members drawn), a scaled site (a tempered density), a point
    mass without density in the guide."""
    if s.subsample:
        plate, indices = next(iter(s.subsample.items()))
        # the declared size: the "data" plate's own, or another plate's full size
        full = (s.data_size if plate == DATA_PLATE else
                next((size for name, _, size in s.subsampled_plates if name == plate), None))
        of = f" of its {full} members" if full is not None and full > 0 else ""
        raise PairError(
            f"{called}: pyro.plate('{plate}') draws a subsample ({indices.shape[0]}{of}), so "
            "the number would be the evidence of the members drawn (Pyro scales their "
            "densities to stand for the rest), not log p(x) of all the data. Evaluate with "
            f"the full plate (pyro.plate('{plate}', size) without subsample_size or "
            "subsample) and the whole data")
    if s.tempered:
        name, scale = s.tempered[0]
        found = ("per-datapoint weights (a tensor scale)" if scale is None
                 else f"scale {scale:g}")
        raise PairError(
            f"{called}: site '{name}' carries {found} (a poutine.scale: a tempered "
            "likelihood, a weighted prior), so p(x, z) is not the density of a probability "
            "model and its integral no evidence. Remove the scale from the pair you "
            "evaluate")
    deltas = [n for n in s.free_deltas if n not in s.auxiliary]
    if deltas:
        raise PairError(
            f"{called}: guide site '{deltas[0]}' is a Delta (a point estimate, e.g. "
            "AutoDelta): all its draws are one point, with no density q, so the importance "
            "weights are undefined. Use a guide that draws from a distribution with a "
            "density (e.g. AutoNormal, or AutoMultivariateNormal for correlated globals)")


def _mismatch(structure: PairStructure, name: str) -> tuple:
    """The :attr:`PairStructure.support_mismatch` record of site ``name``."""
    return next(r for r in structure.support_mismatch if r[0] == name)


def check_pair(structure: PairStructure, use: str, called: str | None = None) -> PairStructure:
    """Raise :class:`PairError` unless entry point ``use`` is defined for the surveyed pair.

    Args:
        structure: from :func:`survey_pair`.
        use: the entry point: ``"log_importance_weights"``, ``"elbo"``, ``"iwae_bound"``,
            ``"bound_sweep"``, ``"weight_diagnostics"``, ``"log_evidence"``,
            ``"ais_log_evidence"``, ``"amortization_gap"``, ``"joint_log_evidence"`` (the
            evidence of the whole data: global latents and model-enumerated ones, inside the
            data plate or not, allowed; every subsample and scale refused), or
            ``"fit:<loss>"`` with a loss of :data:`FIT_LOSSES` (any other ``fit:`` loss only gets
            the site checks).
        called: how the messages name the user's call (``fit(loss=IWAELoss(num_particles=5))``
            for a loss object); :func:`entry_label` of ``use`` by default.

    Returns:
        ``structure``, for chaining.
    """
    if not isinstance(structure, PairStructure):  # check_pair(model, guide) failed in Python
        raise TypeError(f"check_pair(structure, use): structure must be the PairStructure that "
                        f"survey_pair returns, got {type(structure).__name__}; to check a "
                        "pair, call check_pair(survey_pair(model, guide, args), use)")
    if not isinstance(use, str):
        raise TypeError(f"check_pair(structure, use): use must be an entry point's name such as "
                        f"'iwae_bound' or 'fit:elbo', got {type(use).__name__}")
    if use not in ESTIMATOR_USES and not (use.startswith("fit:") and len(use) > 4):
        raise ValueError(f"check_pair(structure, use): use must name an entry point, one of "
                         f"{list(ESTIMATOR_USES)} or 'fit:<loss>' with a loss of "
                         f"{list(FIT_LOSSES)}; got {use!r}")
    s = structure
    called = called or entry_label(use)
    training = use.startswith("fit:")
    _check_sites_match(s, use, called)
    _check_model_enumerated(s, use, called)
    if s.unscorable:
        name, guide_family, guide_support, model_family, model_support = _mismatch(
            s, s.unscorable[0])
        raise PairError(
            f"{called}: guide site '{name}' draws from a {guide_family} with support "
            f"{guide_support}, beyond the model's {model_family} support {model_support}: the "
            f"model's {model_family} "
            "cannot score a draw outside its classes (torch indexes its probabilities with "
            "the value: an out-of-bounds error, on a GPU a device-side assert). Give the "
            "guide the model's classes (as many categories)")
    if s.shadowed and not training:  # (training refuses it at its first step, with advice
        # for training: inference.training.svi_step.check_param_store)
        more = f" (and {len(s.shadowed) - 1} more)" if len(s.shadowed) > 1 else ""
        warnings.warn(
            f"{called}: parameter '{s.shadowed[0]}'{more} is a network's own, but Pyro's "
            "param store holds another tensor under that name, which the network does not "
            "compute with: the estimates are of the network as it computes (its own "
            "parameters). If you loaded trained parameters (pyro.get_param_store().load), "
            "put them into the network with pyro.module(name, net, "
            "update_module_params=True) or load its state_dict; for a second instance of a "
            "model, pyro.clear_param_store() silences this", ShadowedParamWarning,
            stacklevel=user_stacklevel())
    if s.unrecorded_randomness and not training:
        program, finding = s.unrecorded_randomness
        raise PairError(
            f"{called}: {finding}: {program} uses randomness that Pyro does not "
            "record (torch.rand, torch.randn or another draw in its body, torch.manual_seed "
            "in its body, numpy's or Python's random numbers, a value drawn by hand into a "
            "Delta, a pyro.sample hidden by poutine.block, dropout in a network it calls in "
            "training mode), so its density is not a function of the latents and no "
            "estimate of log p(x) means anything. Make every random choice a pyro.sample "
            "site (the guide's latents proposed to the model), or call .eval() on the "
            "network")
    point_auxiliary = [n for n in s.auxiliary if s.guide_families.get(n) == "Delta"]
    if point_auxiliary and not training:
        raise PairError(
            f"{called}: the guide's auxiliary site '{point_auxiliary[0]}' is a Delta, so every "
            "latent the guide derives from it is one point (AutoLaplaceApproximation before "
            "its Laplace step, which is a MAP estimate like AutoDelta): its particles are "
            "all that point, scored as log q = 0, so importance weights, bounds and AIS "
            "would give log p(x, z_MAP) (above log p(x) in a run of Pyro's coin tutorial). "
            "Score guide.laplace_approximation(*args) instead, the Gaussian centred on that "
            "point, or a guide with a density (AutoNormal, AutoMultivariateNormal)")
    if s.collapsed_deltas and not training:
        raise PairError(
            f"{called}: the guide computes the Delta site(s) {site_list(s.collapsed_deltas)} "
            f"from its auxiliary draw(s) {site_list(s.auxiliary)}, which have fewer "
            "elements than those sites have free coordinates together (AutoStructured with "
            "a 'delta' conditional, a point estimate): q puts all its mass on a "
            "lower-dimensional set, with no "
            "density on the latents' space, so importance weights, bounds and AIS are "
            "undefined (they came out above log p(x)). Give every latent a distribution "
            "('normal' or 'mvn' conditionals, AutoNormal)")
    if s.not_densities and not training and use != "elbo":
        # elbo stays: it is the training objective fit reports on validation data
        raise PairError(
            f"{called}: the model marks observed site(s) {site_list(s.not_densities)} as no "
            "density of the data (infer={'not_a_density': True}: an autoencoder's "
            "reconstruction term p(x | z = encoder(x)) reads x to score x), so its numbers "
            "are no log-probabilities of x and no evidence or bound exists (over all 2x2 "
            "binary images they summed to 15). fit trains it and elbo gives its objective; "
            "for evidence, use a model with a latent prior (VAE)")
    if s.improper and not training:
        raise PairError(
            f"{called}: the model's latent site(s) {site_list(s.improper)} have an improper "
            "prior (ImproperUniform, log density 0 everywhere): p(z) is no density, so "
            "neither is p(x) = integral p(x | z) p(z) dz, and no evidence or bound exists "
            "(every estimate read 0.0). "
            "Give the latent a proper prior (fit trains with an improper one, as MAP or "
            "variational fits do)")
    if s.surplus_auxiliary and not training:
        raise PairError(
            f"{called}: the guide's auxiliary draw(s) {site_list(s.surplus_auxiliary)} hold "
            "more values than the Delta site(s) computed from them have free coordinates (a "
            "chain of auxiliary draws, a mixture's component drawn beside its member): q of "
            "the latents is the auxiliary density integrated over the values left over, "
            "which no weight computes, and the estimates would not bound log p(x) (they came "
            "out above it). Compute each latent by an invertible map of auxiliary draws of "
            "its own size (AutoNormal, AutoMultivariateNormal), or sample it directly")
    if use in PER_DATAPOINT_USES:
        _check_per_datapoint(s, use, called)
    if use == JOINT_USE:
        _check_joint(s, called)
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
    if s.measure_zero_support:
        name, guide_family, guide_support, model_family, model_support = _mismatch(
            s, s.measure_zero_support[0])
        raise PairError(
            f"{called}: guide site '{name}' draws from a {guide_family} with support "
            f"{guide_support}, but the model's {model_family} lives on {model_support}, a set "
            "of measure zero there: "
            "no guide draw ever lands on it, so every importance weight is zero and every "
            "estimate -inf (the ELBO too, and training has no gradient). Give the guide the "
            f"model's support: dist.TransformedDistribution(dist.Normal(loc, scale)"
            ".to_event(1), biject_to(support)) (for a simplex, StickBreakingTransform), a "
            f"{model_family} guide, or an AutoNormal guide")
    if s.support_mismatch and (use in ("elbo", "amortization_gap", JOINT_USE)
                               or use.startswith("fit:")):
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
            raise PairError(f"ais_log_evidence: guide site(s) {site_list(discrete)} are "
                            "discrete; AIS moves continuous latents (use iwae_bound, whose "
                            "weights need no gradient)")
        if s.lacks_inverse:
            raise PairError(
                f"ais_log_evidence: {s.vectorize_error}; AIS scores the guide at the "
                "chains' moves, which needs the inverse: use an invertible flow (T.spline, "
                "T.affine_autoregressive, T.affine_coupling), or iwae_bound")
        if not s.vectorizable:
            raise PairError("ais_log_evidence: the pair fails with chains in a leftmost "
                            f"pyro.plate ({s.vectorize_error}); AIS runs all chains at once, "
                            "so the model and guide must broadcast over leading batch dims "
                            "(see docs/own-pair.md)")
    if use == "amortization_gap":
        bad = [n for n, family in s.guide_families.items()
               if family not in ("Normal", "MultivariateNormal")]
        if bad:
            name = bad[0]
            why = ("an AutoGuide's auxiliary site or transform, or a discrete site, has no "
                   "Gaussian to refit per datapoint" if name in s.auxiliary or name in s.discrete
                   or s.guide_families[name] == "Delta" else
                   "the gap is measured against a Gaussian refitted per datapoint, which "
                   f"for a {s.guide_families[name]} guide would mix the change of family into "
                   "the amortization gap")
            raise PairError(
                f"amortization_gap: guide site '{name}' is a {s.guide_families[name]}; the "
                "local guides that measure the gap are Normal or MultivariateNormal per site "
                f"({why}). Measure the gap of a Normal guide, or compare elbo of the amortized "
                "guide with that of a guide you fit per datapoint yourself")
    if use in ("fit:iwae", "fit:dreg"):
        bad = [n for n in s.non_reparameterized if n not in s.auxiliary]
        if bad:
            raise PairError(
                f"{called}: guide site '{bad[0]}' ({s.guide_families[bad[0]]}) is not "
                "reparameterized; the importance-weighted objectives here follow pathwise "
                "gradients only and would miss its score-function term. Use loss='elbo' "
                "(Trace_ELBO's score-function estimator) for such guides")
        if s.lacks_inverse and use == "fit:dreg":
            raise PairError(
                f"{called}: {s.vectorize_error}; DReG scores each draw again under a copy of "
                "the guide with its parameters held fixed, which needs the inverse: use an "
                "invertible flow (T.spline, T.affine_autoregressive, T.affine_coupling) or "
                "loss='iwae'")
        if not s.vectorizable and not s.lacks_inverse:
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
        if s.late_parents:
            raise PairError(late_parent_message(*s.late_parents[0], called))
    return s


def inspect_pair(model: Callable, guide: Callable, args=(), kwargs=None,
                 use: str = "log_importance_weights",
                 probe_randomness: bool | None = None, called: str | None = None) -> PairStructure:
    """:func:`survey_pair` (without the vectorization probe) then :func:`check_pair` for
    ``use`` (per-datapoint weights by default; ``called`` names the user's call in its
    messages): the structure of a pair fit for per-datapoint estimates, or a ``PairError``.
    ``probe_randomness`` as in :func:`survey_pair` (None: for every ``use`` but training's
    ``"fit:..."``)."""
    if probe_randomness is None:
        probe_randomness = not use.startswith("fit:")
    return check_pair(survey_pair(model, guide, args, kwargs, probe_vectorized=False,
                                  probe_randomness=probe_randomness), use, called)


def attach_subsample(result, structure: PairStructure):
    """Set ``result.subsample`` to the ``"data"`` plate's subsample indices ``[batch]`` when the
    model subsampled its own plate (a tensor result gets the attribute too); returns it."""
    indices = structure.data_subsample
    if indices is not None:
        result.subsample = indices
    return result
