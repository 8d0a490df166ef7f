"""How :func:`inference.fit` cuts a pair's data into minibatches and scales them.

:func:`plan_minibatches` surveys the pair on the first minibatch (:mod:`inference.pair_check`)
before any step and decides:

- whether ``loss`` is defined for the pair (a non-reparameterized guide site with
  ``"iwae"``/``"dreg"``/``"meanfield"``, guide and model site sets that differ, ... refuse with
  the site's name);
- the multiplier on the ``"data"`` plate. ``fit`` wants every step to estimate the full-data
  objective, so the ``B`` datapoints a step scores must count ``N / B`` times. A model that
  sizes its plate from its input (``pyro.plate("data", len(x))``, or sizeless) gets
  ``N / len(batch)`` from ``fit``; a model that subsamples it further
  (``pyro.plate("data", len(x), subsample_size=B)``) scales by ``len(x) / B`` itself, and the
  two multiply to ``N / B``. A model that declares the full size itself
  (``pyro.plate("data", N, subsample=idx)``, the index-aware idiom, or
  ``subsample_size=B`` of a plate of size N) already scales by ``N / B``: ``fit`` adds nothing.
  (In a fixed order, ``shuffle=False``, with a short last minibatch every row weighs
  ``ceil(N / B)`` instead, as :func:`inference.fit` describes.)
  A plate of any other declared size is refused (its scale cannot be right for both);
- whether the guide keeps per-datapoint parameters (Pyro's AutoGuides on a model with local
  latents) that shuffled minibatches would mix up.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass

import pyro.infer
import pyro.infer.autoguide
import pyro.nn
import torch
from pyro import poutine
from torch.distributions import biject_to, constraints

from ..checks import (check_int, check_pair_arguments, evaluation_mode, explain_index_dtype,
                      held_count, user_stacklevel, validation_enabled)
from ..effect_guides import effect_messenger, keeps_rows
from ..enumeration import enumerated_traces, log_density_dtypes
from ..pair_check import (DATA_PLATE, FIT_LOSSES, TRACE_ENUM_FIT, PairError,
                          PairStructure, check_pair, conditioned_rows, data_frame,
                          renamed_plate_error, sample_sites, site_list, survey_pair,
                          trace_pair)
from ..random_state import forked_rng
from ..reachable import reachable_modules
from ..weights import (check_particle_memory, check_rows_keep_density_when_moved,
                       particle_log_weights)
from .free_bits import FreeBitsELBO
from .objectives import DReGLoss, IWAELoss, MeanFieldELBO, make_loss


@dataclass(frozen=True)
class MinibatchPlan:
    """What :func:`plan_minibatches` decided.

    Attributes:
        model_scales: the model declares the full data size on its ``"data"`` plate and so
            scales its minibatch itself; ``fit`` must not multiply again.
        structure: the survey of the pair on the first minibatch.
        layout: ``(per-row shape, dtype)`` of each tensor of that minibatch, as the pair
            saw it (after ``batch_transform``).
    """

    model_scales: bool
    structure: PairStructure
    layout: tuple = ()

    def layout_change(self, batch: tuple) -> str | None:
        """How ``batch``'s tensors differ from :attr:`layout` (their number, per-row shapes
        or dtypes), or None: a ``batch_transform`` that changes them after the minibatch
        the pair was checked on."""
        now = layout_of(batch)
        if not self.layout or now == self.layout:
            return None
        return (f"batch_transform returned datapoints of (shape, dtype) {_shown(now)} where "
                f"the minibatch the pair was checked on had {_shown(self.layout)}")

    def factor(self, num_data: int, global_size: int) -> float:
        """The multiplier ``fit`` applies to the ``"data"`` plate of a ``global_size`` batch."""
        return 1.0 if self.model_scales else num_data / global_size


def layout_of(batch: tuple) -> tuple:
    """``((per-row shape, dtype), ...)`` of ``batch``'s tensors ``[rows, ...]``."""
    return tuple((tuple(t.shape[1:]), t.dtype) for t in batch)


def _shown(layout: tuple) -> str:
    return ", ".join(f"({list(shape)}, {str(dtype).replace('torch.', '')})"
                     for shape, dtype in layout)


def _is_autoguide(guide) -> bool:
    """Whether ``guide`` is an AutoGuide with parameters for each datapoint of a model's
    latents inside ``"data"`` (:func:`inference.effect_guides.keeps_rows`)."""
    return keeps_rows(guide, DATA_PLATE)


def _check_dreg_families(structure, first_batch, guide, called: str) -> None:
    """DReG scores ``log q`` with the guide's parameters detached: refuse families it cannot
    rebuild (e.g. Beta, whose parameters live in an inner Dirichlet), naming the site."""
    from pyro import poutine

    from .objectives import detach_parameters

    with forked_rng(), poutine.block(), torch.no_grad():
        trace = poutine.trace(guide).get_trace(*first_batch)
    for site in trace.nodes.values():
        if site["type"] != "sample" or site["is_observed"] or site["name"] in (
                structure.auxiliary) or site["name"] not in structure.guide_families:
            continue
        try:
            detach_parameters(site["fn"])
        except (NotImplementedError, TypeError, KeyError) as error:
            raise PairError(
                f"{called}: guide site '{site['name']}' is a "
                f"{structure.guide_families[site['name']]}, whose parameters DReG cannot hold "
                f"fixed ({error}); use loss='iwae'") from None


def copies(batch: tuple) -> tuple:
    """``batch``'s tensors copied, for a ``batch_transform`` run on rows that view the
    caller's data (fit's checks before training): one that works in place (``x.mul_(2)``)
    would change the data."""
    return tuple(t.clone() for t in batch)


def transformed_batch(out, rows: int, screen: bool = True) -> tuple:
    """``batch_transform``'s output as a tuple of tensors, each with the minibatch's ``rows``
    along dim 0; ``TypeError``/``ValueError`` naming ``batch_transform`` otherwise, and, with
    ``screen`` (fit's first epoch and its survey), for NaN or infinite values."""
    tensors = (out,) if torch.is_tensor(out) else out
    if not isinstance(tensors, (tuple, list)) or not tensors:
        raise TypeError(f"batch_transform must return a tensor or a tuple of tensors, got "
                        f"{type(out).__name__}" + (" (empty)" if isinstance(out, tuple) else ""))
    for i, tensor in enumerate(tensors):
        if not torch.is_tensor(tensor):
            raise TypeError(f"batch_transform's output {i} is a {type(tensor).__name__}, not a "
                            "tensor: return a tensor or a tuple of tensors")
        if tensor.is_meta or tensor.is_complex():
            kind = ("meta tensor (it holds no values)" if tensor.is_meta
                    else f"{tensor.dtype} tensor")
            raise TypeError(f"batch_transform's output {i} is a {kind}; return real tensors on "
                            "the data's device")
    shapes = [list(t.shape) for t in tensors]
    if any(t.dim() == 0 or t.shape[0] != rows for t in tensors):
        raise ValueError(f"batch_transform must keep the minibatch's {rows} rows along dim 0, "
                         f"returned shapes {shapes}")
    if screen:  # torch's error named no transform (later epochs: fit's divergence checks)
        for i, tensor in enumerate(tensors):
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                bad = int((~torch.isfinite(tensor)).sum())
                raise ValueError(f"batch_transform returned {bad} NaN or infinite value(s) in "
                                 f"its output {i} (shape {shapes[i]}); fit checked the data "
                                 "before the transform")
    return tuple(tensors)


def _check_one_density_dtype(model, guide, first_batch: tuple, structure: PairStructure,
                             called: str) -> None:
    """Refuse, naming the sites, a model whose log densities come in more than one float
    dtype (float64 data scored by float32 parameters beside float32 sites): Pyro's
    ``TraceEnum_ELBO`` contracts them in one einsum, which fails at the first step."""
    with forked_rng(), torch.no_grad(), poutine.block(), validation_enabled(False):
        model_trace, _ = enumerated_traces(model, guide, first_batch, {}, None, structure)
        dtypes = log_density_dtypes(model_trace)
    by_dtype: dict[torch.dtype, list[str]] = {}
    for name, dtype in dtypes.items():
        by_dtype.setdefault(dtype, []).append(name)
    if len(by_dtype) > 1:
        groups = "; ".join(f"{str(dtype).replace('torch.', '')}: {site_list(names)}"
                           for dtype, names in by_dtype.items())
        raise PairError(
            f"{called or 'fit'}: the model's log densities come in more than one dtype ({groups}), "
            "and pyro.infer.TraceEnum_ELBO sums out the enumerated site(s) "
            f"{site_list(structure.model_enumerated)} in one contraction of a single dtype "
            "(float64 data scored against float32 parameters, say). Give data and model one "
            "dtype: data.float(), or the parameters in float64 (model.double())")


def _check_plan_arguments(model, guide, data, batch_size, loss, num_particles) -> None:
    """What :func:`inference.fit` checks before it plans, for a direct call of
    :func:`plan_minibatches`: a tensor passed for the tuple was unpacked row by row into
    the model's arguments, ``batch_size=0`` blamed the data, an unknown loss name was
    planned for as a custom loss."""
    check_pair_arguments(model, guide, num_particles)
    if not isinstance(data, tuple) or not data or not all(torch.is_tensor(t) for t in data):
        got = type(data).__name__ + (" (pass (x,), a tuple of it)" if torch.is_tensor(data)
                                     else "")
        raise TypeError(f"plan_minibatches: data must be a tuple (or list) of [N, ...] "
                        f"tensors, as fit passes model(*batch), got a {got}")
    if any(t.dim() == 0 for t in data) or len({t.shape[0] for t in data}) != 1:
        raise ValueError(f"plan_minibatches: data tensors need one leading data dim of the "
                         f"same size, got shapes {[list(t.shape) for t in data]}")
    check_int(batch_size, "batch_size")
    if isinstance(loss, (str, type)):
        make_loss(loss, num_particles)


def plan_minibatches(model, guide, data: tuple, *, batch_size: int, loss, num_particles: int,
                     shuffle: bool, batch_transform=None) -> MinibatchPlan:
    """Survey the pair on ``fit``'s first minibatch (the first ``batch_size`` rows of
    ``data``, tensors ``[N, ...]``) and check ``fit``'s settings against it (module
    docstring). ``batch_transform`` (``fit``'s) is applied to every tuple surveyed, its random
    draws forked off so that training draws as it would without the survey.

    Raises:
        PairError: naming the site, plate or setting ``fit`` cannot train correctly.
        TypeError, ValueError: ``data`` is no tuple or list of tensors, ``batch_size`` or
            ``num_particles`` no positive integer, ``loss`` an unknown name (as ``fit``).
    """
    data = tuple(data) if isinstance(data, list) else data  # a list, as fit takes it
    _check_plan_arguments(model, guide, data, batch_size, loss, num_particles)
    num_data = data[0].shape[0]

    def rows(stop: int) -> tuple:
        """The first ``stop`` rows of ``data`` as a step would see them."""
        part = tuple(t[:stop] for t in data)
        if batch_transform is None:
            return part
        with forked_rng():
            out = batch_transform(*copies(part))
        return transformed_batch(out, part[0].shape[0])

    called = loss_call(loss, num_particles)
    name, num_particles, vectorized = loss_traits(loss, num_particles)
    use = training_use(loss, name)
    minibatched = batch_size < num_data
    _check_tail_adaptive_settings(loss, called)
    held = conditioned_rows(model, num_data) if minibatched or shuffle else []
    if held:
        raise PairError(
            f"{called}: the model is conditioned by a handler holding site(s) {held} of "
            f"{num_data} rows (pyro.condition(model, data={{...}})), which fit's "
            f"{'minibatches' if minibatched else 'shuffled rows'} cannot reach: every step "
            "would pair its rows with the handler's rows in their own order. Pass the data "
            "to fit and observe it in the model (pyro.sample(name, ..., obs=x)), or train on "
            f"all rows in order: batch_size >= {num_data}, shuffle=False")
    if minibatched and isinstance(loss, pyro.infer.RenyiELBO):  # (the model's own: below)
        raise PairError(
            f"{called}: pyro.infer.RenyiELBO takes the log-mean-exp over particles of the "
            f"whole minibatch's weight, which fit scales by N / batch_size: with batch_size="
            f"{batch_size} of {num_data} that bounds nothing (it trained a posterior 4 times "
            "too wide, its loss below -log p(x)). Use loss='iwae' (Renyi's alpha = 0, per "
            f"datapoint, with num_particles), or batch_size >= {num_data}")
    try:
        first_batch = rows(batch_size)
        if _is_autoguide(guide) and (minibatched or shuffle):
            _check_autoguide_rows(model, guide, rows, first_batch, use, num_data, shuffle,
                                  minibatched, called)
        surveyed = survey_pair(model, guide, first_batch, {}, probe_vectorized=vectorized,
                               probe_randomness=num_particles > 1 and vectorized)
        if minibatched and surveyed.renamed_data_plates:
            raise renamed_plate_error(surveyed, called or "fit")
        structure = check_pair(surveyed, use, called)
    except PairError:
        raise
    except Exception as error:  # the user's code failed on fit's minibatch: say how it ran
        length = min(batch_size, num_data)
        if minibatched and f"plate('{DATA_PLATE}') at site" in str(error) and \
                f"{num_data} vs {length}" in str(error):
            raise PairError(
                f"{called or 'fit'}: pyro.plate('{DATA_PLATE}') has the fixed size {num_data}, "
                f"but fit passes minibatches of {length} datapoints (Pyro: "
                f"{str(error).splitlines()[0]}): declare the plate's size as len(x) (fit then "
                f"scales by {num_data} / len(x)), or as {num_data} with the minibatch's indices "
                "(pyro.plate('data', N, subsample=idx), idx passed as data), or train with "
                f"batch_size >= {num_data}") from error
        if "collide at dim" in str(error):  # the particle plate at a pair's plate's dim
            _check_declared_nesting(loss, called, None)
        _note_first_batch(error, data, batch_size, batch_transform)
        raise
    _check_declared_nesting(loss, called, structure.max_plate_nesting)
    if shuffle or minibatched:  # rows at other positions than the data's: a density that
        # reads the position (a trend, t = torch.arange(len(x))) would train on wrong ones
        check_rows_keep_density_when_moved(
            model, guide, first_batch, {}, structure, called or "fit",
            f"train on the rows in place: shuffle=False and batch_size >= {num_data}",
            perturb=True)
    if (shuffle or minibatched) and not _is_autoguide(guide) and structure.batch_size > 1 \
            and structure.data_subsample is None:
        _check_rows_followed(model, guide, first_batch, num_data, shuffle, called)
    if minibatched and structure.data_subsample is not None \
            and structure.data_size != num_data:
        _warn_rows_of_the_whole_data(model, guide, first_batch, num_data, called)
    if structure.model_enumerated and isinstance(loss, pyro.infer.TraceEnum_ELBO):
        _check_one_density_dtype(model, guide, first_batch, structure, called)
    if structure.unrecorded_randomness:  # probed for vectorized particles only
        program, finding = structure.unrecorded_randomness
        warnings.warn(
            f"{called or 'fit'}: {finding}: it uses randomness Pyro does not record "
            "(torch.randn in its body, a value drawn by hand into a Delta), which is drawn "
            f"once for all {num_particles} vectorized particles: they are copies of one "
            "particle, and the gradient has a single particle's variance. Make every random "
            "choice a pyro.sample site (sample from q itself)", stacklevel=user_stacklevel())
    if num_particles > 1 and vectorized:  # K particles of a step, with gradients, at once
        check_particle_memory(model, guide, first_batch, {}, structure, num_particles, None,
                              "num_particles", gradients=True, chunkable=False)
    if not structure.trainable:
        raise PairError("fit: neither the model nor the guide uses a parameter that requires "
                        "a gradient (pyro.param, pyro.module or a PyroModule's): nothing to "
                        "train" + _undecorated_methods_hint(model, guide))
    _warn_untrained_networks(model, guide, first_batch, called)
    if name == "dreg":
        _check_dreg_families(structure, first_batch, guide, called)
    if structure.dependent_support:
        _check_draws_keep_data_inside(model, guide, first_batch, structure, called,
                                      name in ("iwae", "dreg"))
    if isinstance(loss, pyro.infer.RenyiELBO) and structure.data_subsample is not None:
        raise PairError(
            f"{called}: pyro.infer.RenyiELBO takes the log-mean-exp over particles of the whole "
            f"run's weight, which the model's own subsample of pyro.plate('{DATA_PLATE}') "
            f"scales by N / {structure.batch_size}: that bounds nothing. Use loss='iwae' (Renyi's "
            "alpha = 0, per datapoint), or a model that keeps every datapoint")
    if isinstance(loss, FreeBitsELBO) and structure.auxiliary:
        raise PairError(
            f"{called}: the guide has auxiliary site(s) {site_list(structure.auxiliary)} (an "
            "AutoGuide's unconstrained draws), and FreeBitsELBO scores each latent's KL from "
            "the guide's density of the latent's own site, a Delta that transforms the "
            "auxiliary draw: the auxiliary site's log q, the guide's entropy, is left out and "
            "the posterior collapses to a point. Use loss='elbo' or 'meanfield' with an "
            "AutoGuide, or a guide that samples each latent itself (dist.Normal(loc, scale))")
    if minibatched:
        _warn_double_scaling(structure, num_data, batch_size, called)
    if reports_no_loss(loss):
        _check_tail_adaptive_pair(structure, called, batch_size, num_data)
    _check_same_data_size(structure, called)
    length = first_batch[0].shape[0]
    declared = structure.data_size
    if structure.batch_size == 0:  # no site in the "data" plate
        if minibatched:
            raise PairError(
                f"fit: the model has no site inside pyro.plate('{DATA_PLATE}'), so minibatches "
                f"of {batch_size} of the {num_data} datapoints cannot be scaled to the full "
                f"data: put the per-datapoint sites in `with pyro.plate('{DATA_PLATE}', "
                f"len(x)):` or use batch_size >= {num_data}")
        return MinibatchPlan(False, structure, layout_of(first_batch))
    if minibatched and structure.global_observed:
        name = structure.global_observed[0]
        raise PairError(
            f"fit: observed site '{name}' lies outside pyro.plate('{DATA_PLATE}'), and with "
            f"minibatches fit cannot tell whether it depends on the minibatch (its rows, their "
            f"latents or its length: each step would then score another term, not one of the "
            f"whole data). A log prior on a parameter is a prior of a latent with a point-mass "
            f"guide, which fit counts once per step (mu = pyro.sample('mu', dist.Normal(0, "
            f"s)), guided by pyro.sample('mu', dist.Delta(pyro.param('mu_map', ...)))); a "
            f"global measurement, an observed site of a global latent, needs the whole data "
            f"in each step: batch_size >= {num_data}. (Moving the term into the plate would "
            f"count it once per datapoint.)")
    if declared is None or declared == length:
        model_scales = False
        _check_own_subsample(model, guide, rows, structure, num_data, batch_size)
    elif declared == num_data:
        model_scales = True
    else:
        raise PairError(
            f"fit: pyro.plate('{DATA_PLATE}') declares size {declared}, but fit passes "
            f"minibatches of {length} of {num_data} datapoints: declare the plate's size as "
            f"len(x) (fit then scales by {num_data} / len(x)) or as {num_data} with the "
            "minibatch's indices (pyro.plate('data', N, subsample=idx), idx passed as data). "
            "If the datapoints lie along another dim of the data (documents as columns of a "
            "[words, documents] tensor), put them along dim 0, which fit cuts into "
            "minibatches (x.T)")
    if structure.vectorizable is False and vectorized and not structure.lacks_inverse:
        if loss in ("elbo", "meanfield"):
            remedy = (f"use num_particles=1, or loss=pyro.infer.{type(make_loss(loss)).__name__}"
                      f"(num_particles={num_particles}) (vectorize_particles=False: one "
                      "particle at a time)")
        elif isinstance(loss, str):
            remedy = "use num_particles=1"
        else:
            remedy = (f"set vectorize_particles=False on the {type(loss).__name__} (Pyro then "
                      "draws one particle at a time) or num_particles=1 there")
            if reports_no_loss(loss):
                remedy = (f"{type(loss).__name__} needs vectorize_particles=True, so use "
                          "another loss")
        raise PairError(
            f"{called}: the pair fails with particles in a leftmost pyro.plate "
            f"({structure.vectorize_error}); {remedy}, or make the model broadcast over "
            "leading batch dims (docs/own-pair.md)")
    return MinibatchPlan(model_scales, structure, layout_of(first_batch))


def _check_same_data_size(structure: PairStructure, called: str | None) -> None:
    """Refuse model and guide declaring ``"data"`` plates of different sizes: Pyro scales
    each side's log densities by its own plate's ``size / rows``, so a model's
    ``pyro.plate("data", N, subsample=idx)`` beside a guide's ``pyro.plate("data", len(x))``
    weighs ``log p`` by ``N / B`` and ``log q`` by 1, and fit trains (and records) another
    objective than the ELBO. The estimators score unscaled densities: unaffected."""
    sizes = dict(structure.data_sizes)
    if len(set(sizes.values())) < 2:
        return
    rows = structure.batch_size
    raise PairError(
        f"{called or 'fit'}: the model declares pyro.plate('{DATA_PLATE}') of size "
        f"{sizes['model']} and the guide of size {sizes['guide']}, both over the same {rows} "
        f"rows: Pyro scales the model's log densities by {sizes['model']} / {rows} and the "
        f"guide's by {sizes['guide']} / {rows}, so the loss fit trains and records is not the "
        "ELBO. Declare the same size and subsample in both: pyro.plate('data', N, "
        "subsample=idx) in model and guide (idx passed with the data, fit(model, guide, (x, "
        "torch.arange(N)))), or pyro.plate('data', len(x)) in both")


def _check_own_subsample(model, guide, rows, structure, num_data: int, batch_size: int) -> None:
    """A model that subsamples each minibatch further (``pyro.plate("data", len(x),
    subsample_size=B)``) with a fixed ``B`` needs ``B`` rows in every minibatch: the ragged
    last one of ``N % batch_size`` rows may have fewer, and Pyro fails at that step (with a
    message about model and guide disagreeing). When the last minibatch is smaller than the
    first one's subsample, the pair is surveyed on a minibatch of that size (``rows(n)``: the
    first ``n`` rows, as fit builds them): a subsample size that follows the minibatch
    (``min(B, len(x))``) passes, a fixed one is refused before any step, naming the sizes."""
    if structure.data_subsample is None or batch_size >= num_data:
        return
    subsample, last = structure.batch_size, num_data % batch_size
    if not last or last >= subsample:
        return
    try:
        survey_pair(model, guide, rows(last), {}, probe_vectorized=False,
                    probe_randomness=False)
        return
    except Exception as error:  # the pair fails on the last minibatch's size
        failure = error
    fits = [size for size in range(subsample, num_data)
            if num_data % size == 0 or num_data % size >= subsample]
    nearest = min(fits, key=lambda size: (abs(size - batch_size), size), default=None)
    hint = f"batch_size={nearest} (or {num_data}, all at once)" if nearest else \
        f"batch_size >= {num_data}"
    raise PairError(
        f"fit: the model draws subsample_size={subsample} rows of each minibatch "
        f"(pyro.plate('{DATA_PLATE}', len(x), subsample_size={subsample})), but with "
        f"batch_size={batch_size} and N={num_data} datapoints the last minibatch has only "
        f"{last} rows, fewer than {subsample}, and the pair fails on it "
        f"({type(failure).__name__}: {str(failure)[:120]}): use a batch size whose last "
        f"minibatch holds at least {subsample} rows, e.g. {hint}") from failure


def loss_call(loss, num_particles: int) -> str:
    """How messages name the user's call of ``fit`` with ``loss``:
    ``fit(loss='iwae', num_particles=5)`` for a name, ``fit(loss=IWAELoss(num_particles=5))``
    for a loss object (its particle settings, the ones it uses)."""
    if isinstance(loss, str):
        extra = f", num_particles={num_particles}" if num_particles != 1 else ""
        return f"fit(loss='{loss}'{extra})"
    settings = []
    particles = held_count(getattr(loss, "num_particles", None))
    if particles is not None and particles != 1:
        settings.append(f"num_particles={particles}")
    if getattr(loss, "vectorize_particles", False) is True:
        settings.append("vectorize_particles=True")
    return f"fit(loss={type(loss).__name__}({', '.join(settings)}))"


def reports_no_loss(loss) -> bool:
    """Whether ``loss`` is an object whose reported loss is ``inf`` by design while its
    surrogate's gradients are the objective's: Pyro's ``TraceTailAdaptive_ELBO``, which does
    not compute its f-divergence (``loss()`` raises ``NotImplementedError``,
    ``loss_and_grads`` returns ``inf``). ``fit`` then does not take that value for a
    divergence, and checks the parameters instead (Adam turns a NaN or infinite gradient
    into NaN parameters)."""
    return isinstance(loss, pyro.infer.TraceTailAdaptive_ELBO)


def _check_tail_adaptive_settings(loss, called: str) -> None:
    """Refuse, before any work, a ``TraceTailAdaptive_ELBO`` that Pyro only fails on at
    the first step: it is implemented for ``vectorize_particles=True`` only."""
    if reports_no_loss(loss) and not getattr(loss, "vectorize_particles", False):
        raise PairError(
            f"{called}: {type(loss).__name__} is implemented for vectorize_particles=True "
            "only (Pyro raises NotImplementedError at its first step otherwise): pass "
            f"{type(loss).__name__}(num_particles=K, vectorize_particles=True) with K > 1")


def _check_tail_adaptive_pair(structure, called: str, batch_size: int, num_data: int) -> None:
    """``TraceTailAdaptive_ELBO`` ranks its particles by their log weights over the whole
    batch and follows pathwise gradients only: refuse a guide site that is not
    reparameterized (Pyro checks it only while validation is on, and would otherwise miss
    its score-function term) and minibatches (Pyro's documentation: it does not support data
    subsampling; a minibatch's ranks are not the full data's)."""
    bad = [n for n in structure.non_reparameterized if n not in structure.auxiliary]
    if bad:
        raise PairError(
            f"{called}: guide site '{bad[0]}' ({structure.guide_families[bad[0]]}) is not "
            "reparameterized; TraceTailAdaptive_ELBO follows pathwise gradients only and "
            "would miss its score-function term. Use loss='elbo' for such guides")
    if batch_size < num_data or structure.data_subsample is not None:
        raise PairError(
            f"{called}: TraceTailAdaptive_ELBO does not support data subsampling (Pyro's "
            "documentation): it ranks the particles by their log weights summed over the "
            f"batch, and the ranks of a minibatch are not those of all {num_data} datapoints. "
            f"Train on all data at once (batch_size >= {num_data}, a model that does not "
            "subsample its own plate)")


def training_use(loss, name: str) -> str:
    """The entry point :func:`inference.pair_check.check_pair` judges a pair trained with
    ``loss`` for (``name``: its :func:`loss_traits` name): ``"fit:<name>"``, the enumerating
    loss's, or ``"fit:custom"`` (the site checks alone)."""
    return (f"fit:{name}" if name in FIT_LOSSES else
            TRACE_ENUM_FIT if isinstance(loss, pyro.infer.TraceEnum_ELBO) else "fit:custom")


def loss_traits(loss, num_particles: int) -> tuple[str, int, bool]:
    """``(name, particles, vectorized)`` of ``fit``'s ``loss``: a loss name with
    ``num_particles``, or a loss object by what it is. :class:`DReGLoss`, :class:`IWAELoss`
    and Pyro's ``Trace_ELBO``/``TraceMeanField_ELBO`` get the checks of ``"dreg"``,
    ``"iwae"``, ``"elbo"``/``"meanfield"``, with their own particle count, vectorized as
    they vectorize it (the IWAE losses always; Pyro's with ``vectorize_particles``); other
    objects are ``"custom"``, vectorized when they say ``vectorize_particles``."""
    if isinstance(loss, str):
        return loss, num_particles, num_particles > 1
    particles = held_count(getattr(loss, "num_particles", 1))
    particles = particles if particles is not None and particles >= 1 else 1
    if isinstance(loss, (IWAELoss, DReGLoss)):
        return ("dreg" if isinstance(loss, DReGLoss) else "iwae"), particles, particles > 1
    vectorized = bool(getattr(loss, "vectorize_particles", False)) and particles > 1
    kinds = {pyro.infer.Trace_ELBO: "elbo", pyro.infer.TraceMeanField_ELBO: "meanfield",
             MeanFieldELBO: "meanfield"}
    return kinds.get(type(loss), "custom"), particles, vectorized


def _note_first_batch(error: Exception, data: tuple, batch_size: int, batch_transform) -> None:
    """Add to ``error`` (raised by the user's pair or ``batch_transform`` on ``fit``'s first
    minibatch) how ``fit`` called them (Python 3.11+ exception notes; no-op before)."""
    if not hasattr(error, "add_note"):  # pragma: no cover (Python 3.10)
        return
    num_data = data[0].shape[0]
    rows = min(batch_size, num_data)
    shapes = ", ".join(str([rows, *t.shape[1:]]) for t in data)
    called = "batch_transform(*batch), then " if batch_transform is not None else ""
    error.add_note(
        f"fit ran {called}model(*batch) and guide(*batch) on its first minibatch: "
        f"{len(data)} tensor(s) of shapes {shapes}, the first {rows} of {num_data} datapoints "
        f"(batch_size={batch_size}). A model that picks its own rows of the whole data "
        f"(pyro.plate('data', N, subsample_size=B) indexing x) needs batch_size >= {num_data}, "
        f"and so does a pyro.param with one row per datapoint ({num_data} rows, sized on the "
        "whole data) unless the pair takes the minibatch's indices, fit(model, guide, (x, "
        "torch.arange(N))), and indexes the parameter with them; a tensor of such rows that "
        "the pair reads by position (precomputed posterior parameters, a module-level "
        "constant) must come with the data, fit(model, guide, (x, table)), to be cut with "
        "it; a pair written for one tensor gets one per element of a data tuple."
        + _device_hint(data[0].device))


def _device_hint(device: torch.device) -> str:
    if device.type != "cuda":
        return ""
    return (f" The data are on {device}: tensors the pair makes itself (pyro.param's "
            "initial value, torch.zeros(...) without device=) must be created there too "
            "(x.new_zeros, device=x.device), or train with device='cpu'.")


def _check_rows_followed(model, guide, batch: tuple, num_data: int, shuffle: bool,
                         called: str | None) -> None:
    """Warn when the guide's density of a datapoint's latents follows the row's position, not
    its data (a hand-written ``pyro.param`` of one row per datapoint, used by position):
    shuffled or minibatched rows then meet other rows' parameters, which do not train. The
    guide runs on ``batch`` (tensors ``[n, ...]``) and on its rows reversed, replaying the
    first run's draws reversed; the modules it reaches run in evaluation mode. A probe
    only: a guide it cannot run so is left to the survey's checks."""
    try:
        changed = _rows_not_followed(model, guide, batch, num_data)
    except Exception:  # noqa: BLE001 (e.g. a spread parameter another check refuses)
        return
    if changed:
        warnings.warn(
            f"{called or 'fit'}: the guide's density of '{changed}' for a datapoint changes "
            "when the rows are reordered: it follows the row's position, not its data (a "
            "pyro.param with a row per datapoint, used by position). "
            f"{'Shuffled' if shuffle else 'Minibatched'} training gives those rows other "
            "datapoints, and they do not train. Pass the indices and index the parameter "
            "(fit(model, guide, (x, torch.arange(N))) with `def guide(x, idx): loc[idx]`), "
            "or train with shuffle=False and batch_size >= N", stacklevel=user_stacklevel())


def _rows_not_followed(model, guide, batch: tuple, num_data: int) -> str | None:
    """The first guide latent in the data plate whose log density, per datapoint, changes
    when ``batch``'s rows and the draws are reversed; None when all follow their rows."""
    reverse = torch.arange(batch[0].shape[0] - 1, -1, -1, device=batch[0].device)
    flipped = tuple(t.index_select(0, reverse) for t in batch)
    with forked_rng(), poutine.block(), torch.no_grad(), \
            evaluation_mode(reachable_modules(model, guide)):
        # rows of a fresh parameter are often all alike (zeros): made apart first
        rows = {batch[0].shape[0], num_data}
        guide = poutine.substitute(guide, data=_spread_params(guide, batch, rows))
        first = poutine.trace(guide).get_trace(*batch)
        swapped = first.copy()
        latents = [site for site in sample_sites(first, observed=False)
                   if data_frame(site) is not None]
        for site in latents:
            dim = data_frame(site).dim - len(site["fn"].event_shape)
            node = dict(swapped.nodes[site["name"]])
            node["value"] = site["value"].index_select(dim, reverse)
            swapped.nodes[site["name"]] = node
        second = poutine.trace(poutine.replay(guide, trace=swapped)).get_trace(*flipped)
    for site in latents:
        dim = data_frame(site).dim
        before = site["fn"].log_prob(site["value"]).index_select(dim, reverse)
        after_site = second.nodes.get(site["name"])
        if after_site is None or after_site["type"] != "sample":
            continue
        after = after_site["fn"].log_prob(after_site["value"])
        if before.shape == after.shape and not torch.allclose(before, after, rtol=1e-4,
                                                               atol=1e-4, equal_nan=True):
            return site["name"]
    return None


def _spread_params(guide, batch: tuple, rows: set) -> dict:
    """Values for the guide's own ``pyro.param`` sites (not a network's) of a leading size in
    ``rows`` (a row per datapoint of the batch or of the data) with their rows made apart:
    noise added in the unconstrained space of their constraint (``biject_to``: real,
    positive, simplex, unit interval, ...), so that rows made alike (zeros, uniform
    probabilities) differ; others as they are."""
    generator = torch.Generator().manual_seed(0)
    spread = {}
    for site in poutine.trace(guide).get_trace(*batch).nodes.values():
        value = site.get("value")
        if site["type"] != "param" or "$$$" in site["name"] or not torch.is_tensor(value) \
                or not value.is_floating_point() or not value.dim() \
                or value.shape[0] not in rows:
            continue
        try:
            transform = biject_to(site["kwargs"].get("constraint", constraints.real))
        except NotImplementedError:  # a constraint without a bijection: left as it is
            continue
        free = transform.inv(value)
        noise = 0.5 * torch.randn(free.shape, generator=generator, dtype=free.dtype)
        spread[site["name"]] = transform(free + noise.to(free.device))
    return spread


def _undecorated_methods_hint(model, guide) -> str:
    """Why a PyroModule's parameters may not have reached Pyro: its methods used as model or
    guide without ``@pyro_method``, under which alone they issue ``pyro.param`` statements."""
    plain = [role for role, fn in (("model", model), ("guide", guide))
             if isinstance(getattr(fn, "__self__", None), pyro.nn.PyroModule)
             and getattr(fn, "__name__", "") != "forward"
             and not hasattr(getattr(fn, "__func__", None), "__wrapped__")
             and any(True for _ in fn.__self__.parameters())]
    torch_only = [role for role, fn in (("model", model), ("guide", guide))
                  if isinstance(getattr(fn, "__self__", None), torch.nn.Module)
                  and not isinstance(fn.__self__, pyro.nn.PyroModule)
                  and any(True for _ in fn.__self__.parameters())]
    if plain:
        return (f"; the {' and '.join(plain)} {'is a method' if len(plain) == 1 else 'are'} "
                f"{'' if len(plain) == 1 else 'methods '}of a PyroModule with parameters but "
                "not decorated with @pyro_method (pyro.nn.pyro_method), without which its "
                "parameters are not Pyro's")
    if torch_only:
        return (f"; the {' and '.join(torch_only)} "
                f"{'is a method' if len(torch_only) == 1 else 'are methods'} of a "
                "torch.nn.Module with parameters, which reach Pyro through "
                "pyro.module('name', self) called in them (or a PyroModule with @pyro_method)")
    return ""


def _untrained_networks(model, guide, batch: tuple) -> tuple[list[str], list[str]]:
    """``(unregistered, gradless)``: the networks the pair reaches (their submodules that hold
    parameters requiring gradients and ran in one pass of the pair on ``batch``) whose
    parameters the ELBO of that pass depends on but that no param site registers, so no
    optimizer step moves them; and those registered whose parameters all get no gradient
    (computed under ``torch.no_grad()`` or ``.detach()``ed). Random state, buffers and outer
    handlers are left alone."""
    ran, labels, hooks = set(), {}, []
    for network in reachable_modules(model, guide):
        for path, sub in network.named_modules():
            if any(p.requires_grad for p in sub.parameters(recurse=False)):
                labels[sub] = (f"{type(network).__name__}.{path} ({type(sub).__name__})"
                               if path else f"{type(sub).__name__}({sub.extra_repr()})")
                hooks.append(sub.register_forward_hook(lambda m, *_: ran.add(m)))
    try:
        with forked_rng(), poutine.block(), evaluation_mode(reachable_modules(model, guide)), \
                torch.enable_grad():
            traces = trace_pair(model, guide, batch, {})
            loss = traces[1].log_prob_sum() - traces[0].log_prob_sum()
    except (RuntimeError, ValueError):  # a pass with gradients fails: the first step says why
        return [], []
    finally:
        for hook in hooks:
            hook.remove()
    used = [sub for sub in labels if sub in ran]
    if not used or not loss.requires_grad or not torch.isfinite(loss):
        return [], []
    # a parameter passed to pyro.param is registered, also where the store keeps another
    # tensor under its name (the first step refuses that: check_param_store)
    registered_ids, store_names = set(), {}
    for site in (s for trace in traces for s in trace.nodes.values() if s["type"] == "param"):
        value = site["value"]
        stored = value.unconstrained() if hasattr(value, "unconstrained") else value
        registered_ids |= {id(stored), *map(id, site["args"][1:])}
        for tensor in (stored, *site["args"][1:]):
            store_names.setdefault(id(tensor), site["name"])
    params = [[p for p in sub.parameters(recurse=False) if p.requires_grad] for sub in used]
    grads = torch.autograd.grad(loss, [p for group in params for p in group],
                                allow_unused=True)
    unregistered, gradless, start = [], [], 0
    for sub, group in zip(used, params):
        # None: not in the loss's graph at all (no_grad, detach); a zero gradient is still a
        # connection (a layer behind a zero-initialized head moves after the first step)
        found = grads[start:start + len(group)]
        start += len(group)
        moved = [g is not None and bool(g.ne(0).any()) for g in found]
        registered = [id(p) in registered_ids for p in group]
        if any(moved) and not any(registered):
            unregistered.append(labels[sub])
        elif all(registered) and all(g is None for g in found):
            # named as pyro.module registered it ('decoder' of 'decoder$$$net.0.weight')
            name = store_names.get(id(group[0]), "").split("$$$")[0]
            gradless.append(f"'{name}': {labels[sub]}" if name else labels[sub])
    return unregistered, gradless


def _warn_untrained_networks(model, guide, batch: tuple, called: str | None) -> None:
    """Warn about networks the pair computes with that training leaves at their initial
    values (:func:`_untrained_networks`): a plain ``nn.Linear`` in a ``PyroModule`` pair
    whose methods lack ``@pyro_method`` stayed put while the decoder trained (final loss 10.9
    against 7.4). Networks meant to stay fixed go unnamed once their parameters are
    ``requires_grad_(False)``."""
    unregistered, gradless = _untrained_networks(model, guide, batch)
    fixed = "; if it is meant to stay fixed, set requires_grad_(False) on its parameters"
    if unregistered:
        why = _undecorated_methods_hint(model, guide) or (
            "; register it with pyro.module('name', network) in the model or guide")
        warnings.warn(
            f"{called or 'fit'}: the loss depends on the parameters of {', '.join(unregistered)}"
            ", but they are not Pyro parameters, so training leaves them at their initial "
            f"values{why}{fixed}", stacklevel=user_stacklevel())
    if gradless:
        warnings.warn(
            f"{called or 'fit'}: {', '.join(gradless)} ran in the pair and its parameters are "
            "registered with Pyro, but the loss gives them no gradient (computed under "
            "torch.no_grad() or .detach()ed), so training leaves them at their initial "
            "values: compute the network with gradients" + fixed,
            stacklevel=user_stacklevel())


def _warn_rows_of_the_whole_data(model, guide, first_batch: tuple, num_data: int,
                                 called: str | None) -> None:
    """Warn about free ``pyro.param``s of ``num_data`` rows (one per datapoint) in a pair whose
    model subsamples a ``"data"`` plate sized on the minibatch (``pyro.plate("data", len(x),
    subsample_size=B) as i``): ``i`` then counts positions inside fit's minibatch, not
    datapoints, so ``param[i]`` trains the first rows on every datapoint and never the
    others. Also those of the minibatch's rows (``torch.zeros(len(x))``, made on the first
    minibatch), which every later minibatch trains on other datapoints. The networks'
    weights (of the modules the pair reaches) are not counted."""
    networks = {id(p) for module in reachable_modules(model, guide) for p in module.parameters()}
    with forked_rng(), poutine.block(), torch.no_grad():
        trace = poutine.trace(guide).get_trace(*first_batch)
    batch_rows = next((t.shape[0] for t in first_batch if torch.is_tensor(t) and t.dim()), None)
    free = {name: site["value"].shape[0] for name, site in trace.nodes.items()
            if site["type"] == "param" and torch.is_tensor(site["value"])
            and site["value"].dim()
            and id(site["value"].unconstrained() if hasattr(site["value"], "unconstrained")
                   else site["value"]) not in networks}
    of_batch = _sized_by_rows(guide, first_batch, [
        name for name, size in free.items() if size == batch_rows < num_data])
    if of_batch:
        warnings.warn(
            f"{called or 'fit'}: the guide's {site_list(of_batch)} have {batch_rows} rows, as "
            "many as fit's minibatch, and one row fewer when the guide is given one row fewer "
            "(made on the first minibatch, pyro.param(name, torch.zeros(len(x)))), and the "
            "model subsamples a pyro.plate("
            f"'{DATA_PLATE}') sized on the minibatch: if those rows are per datapoint, every "
            "minibatch trains the same rows on other datapoints (a global parameter of as "
            f"many rows is unaffected). Give them {num_data} rows, pass the indices with the "
            "data, fit(model, guide, (x, torch.arange(N))), and subsample with "
            f"pyro.plate('{DATA_PLATE}', N, subsample=idx); or train with batch_size >= "
            f"{num_data}", stacklevel=user_stacklevel())
    rows = [name for name, size in free.items() if size == num_data]
    if rows:
        warnings.warn(
            f"{called or 'fit'}: the guide's {site_list(rows)} have {num_data} rows, one per "
            f"datapoint, and the model subsamples a pyro.plate('{DATA_PLATE}') sized on "
            "the minibatch, whose indices count positions inside fit's minibatch, not "
            "datapoints: if those rows are per datapoint and indexed with them, the first rows "
            "train on every datapoint and the others never (a global parameter of as many "
            "rows is unaffected). Pass the indices with the data, fit(model, guide, (x, "
            f"torch.arange(N))), and subsample with pyro.plate('{DATA_PLATE}', N, "
            f"subsample=idx); or train with batch_size >= {num_data}",
            stacklevel=user_stacklevel())


def _sized_by_rows(guide, batch: tuple, names: list[str]) -> list[str]:
    """Those of the param-store ``names`` that the guide makes with one row fewer when given
    one row fewer of ``batch`` (a run in a param store of its own, random state restored):
    parameters sized by the rows (``torch.zeros(len(x))``), not a global of as many rows by
    chance (16 mixture components beside a minibatch of 16). None of them when the guide fails on
    the fewer rows."""
    rows = next((t.shape[0] for t in batch if torch.is_tensor(t) and t.dim()), 0)
    if not names or rows < 2:
        return []
    fewer = tuple(t[:rows - 1] if torch.is_tensor(t) and t.dim() and t.shape[0] == rows else t
                  for t in batch)
    try:
        with pyro.get_param_store().scope(), forked_rng(), poutine.block(), torch.no_grad():
            trace = poutine.trace(guide).get_trace(*fewer)
    except Exception:  # noqa: BLE001 - a guide that needs the whole minibatch: no finding
        return []
    return [name for name in names if name in trace.nodes
            and torch.is_tensor(trace.nodes[name]["value"])
            and trace.nodes[name]["value"].dim()
            and trace.nodes[name]["value"].shape[0] == rows - 1]


def _warn_double_scaling(structure: PairStructure, num_data: int, batch_size: int,
                         called: str | None) -> None:
    """Warn about sample sites that the model scales by ``N / batch_size`` itself (a
    hand-written ``poutine.scale``, Pyro's idiom for minibatches outside fit): fit scales the
    ``"data"`` plate by that factor too, so their terms would count twice over (a posterior
    ``sqrt(N / batch_size)`` times too narrow)."""
    ratio = num_data / batch_size
    doubled = list(dict.fromkeys(name for name, scale in structure.tempered
                                 if scale is not None and math.isclose(scale, ratio,
                                                                       rel_tol=1e-6)))
    if doubled:
        warnings.warn(
            f"{called or 'fit'}: site(s) {site_list(doubled)} carry a scale of their own equal "
            f"to N / batch_size = {ratio:g}, and fit scales the '{DATA_PLATE}' plate by N / "
            "batch_size as well: if that scale is a minibatch correction (Pyro's "
            "poutine.scale idiom outside fit), those log densities count twice over; remove it "
            "(fit does the scaling). A deliberate weight (a beta-VAE's) that happens to equal "
            "N / batch_size is unaffected", stacklevel=user_stacklevel())


# Guide draws probed for data outside a support that moves with the latents.
SUPPORT_PROBE_DRAWS = 64


def _check_draws_keep_data_inside(model, guide, first_batch: tuple, structure: PairStructure,
                                  called: str | None, weighted: bool) -> None:
    """Refuse a pair whose observed site's support moves with the latents (``x ~ Uniform(0,
    z)``: :attr:`PairStructure.dependent_support`) when some of
    :data:`SUPPORT_PROBE_DRAWS` guide draws on the first minibatch put the data outside it,
    where ``p(x | z) = 0``: an ELBO's loss is infinite at such a draw, whatever the learning
    rate (Pyro's ELBOs fail there too); an importance-weighted loss (``weighted``) where all
    of a step's particles of a datapoint fall there, which a training run of many steps
    meets (measured: 18% of the draws outside, K = 8, the loss infinite at epoch 18 of 150).
    The estimators give such draws weight zero."""
    # the weights of the structure in hand: no estimator's policy (a guide on z > x, the
    # remedy below, has a narrower support than the prior's z > 0, which is fine here)
    with forked_rng(), poutine.block(), torch.no_grad(), validation_enabled(False):
        log_w = particle_log_weights(model, guide, first_batch, {}, SUPPORT_PROBE_DRAWS,
                                     structure)  # [draws, batch]
    outside = torch.isneginf(log_w)
    if outside.any():
        site = structure.dependent_support[0]
        share = outside.double().mean(0)  # [batch]
        raise PairError(
            f"{called or 'fit'}: observed site '{site}' has a support that moves with the "
            f"latents (as x ~ Uniform(0, z) does), and up to {float(share.max()):.0%} of "
            f"{SUPPORT_PROBE_DRAWS} guide draws put a datapoint outside it (datapoints "
            f"{outside.any(0).nonzero().flatten().tolist()[:10]}), where p(x | z) = 0: "
            + ("the training loss would be infinite at such draws" if not weighted else
               "a step whose particles of a datapoint all fall there has an infinite loss, "
               "which a run of many steps meets (the weighted loss is finite only while one "
               "particle stays inside)") + ". Give the "
            "guide only latents that keep the data inside (for z > x: z = x + a positive "
            "draw, e.g. dist.TransformedDistribution(dist.LogNormal(loc, scale), "
            "AffineTransform(x, 1.0))); iwae_bound and the other estimators give such "
            "draws weight zero")


def _positional_error(guide, num_data: int, shuffle: bool) -> PairError:
    messenger = effect_messenger(guide)
    if messenger is not None:
        name = type(messenger).__name__
        return PairError(
            f"fit: {name} keeps parameters for each datapoint of pyro.plate('{DATA_PLATE}'), "
            f"by position; {'shuffled ' if shuffle else ''}minibatches would give them other "
            "datapoints' rows. Pass the indices with the data, fit(model, guide, (x, "
            "torch.arange(N))), and write the model as `def model(x, idx): with "
            f"pyro.plate('{DATA_PLATE}', N, subsample=idx): ...` ({name}'s parameters then "
            f"follow the indices); or train on all data at once: batch_size >= {num_data} "
            "and shuffle=False")
    # AutoNormal and AutoDelta take create_plates; the joint-vector AutoGuides
    # (AutoDiagonalNormal, AutoMultivariateNormal, ...) do not
    per_site = (pyro.infer.autoguide.AutoNormal, pyro.infer.autoguide.AutoDelta)
    plated = isinstance(guide, per_site)
    guide_name = type(guide).__name__ if plated else "AutoNormal"
    joint = ("" if plated else f" ({type(guide).__name__} draws one vector for all datapoints "
             "and takes no create_plates)")
    if isinstance(guide, pyro.infer.autoguide.AutoGuideList):
        # the list takes create_plates; its parts decide whether a datapoint has its own rows
        guide_name = "AutoGuideList"
        joint_parts = sorted({type(part).__name__ for part in guide
                              if not isinstance(part, per_site)})
        joint = (" whose parts are AutoNormal or AutoDelta" + (
            f" ({', '.join(joint_parts)} draws one vector for all datapoints and takes no "
            "create_plates: replace it by an AutoNormal of the same sites)"
            if joint_parts else ""))
    return PairError(
        f"fit: {type(guide).__name__} keeps parameters for each datapoint of "
        f"pyro.plate('{DATA_PLATE}'), by position; {'shuffled ' if shuffle else ''}"
        "minibatches would give them other datapoints' rows. Pass the indices with the "
        "data, fit(model, guide, (x, torch.arange(N))), write the model as "
        "`def model(x, idx): with pyro.plate('data', N, subsample=idx): ...` and build the "
        f"guide with {guide_name}(model, create_plates=lambda x, idx: "
        f"pyro.plate('data', N, subsample=idx)){joint}; or train on all data at once: "
        f"batch_size >= {num_data} and shuffle=False")


def _check_declared_nesting(loss, called: str | None, needed: int | None) -> None:
    """``PairError`` when ``loss`` was built with a ``max_plate_nesting`` below the ``needed``
    plate dims of the pair (None: a run already failed on the particle plate's collision):
    Pyro puts its particle and enumeration dims left of that many, onto the pair's plates."""
    declared = getattr(loss, "max_plate_nesting", math.inf)
    if not isinstance(declared, numbers.Integral):
        return
    # Pyro adds one for its vectorized particles' plate to the number it was given
    declared -= 1 if getattr(loss, "vectorize_particles", False) and \
        getattr(loss, "num_particles", 1) > 1 else 0
    if needed is not None and declared >= needed:
        return
    need = f"the pair nests {needed} plates" if needed is not None else \
        "the pair nests more plates (Pyro's particle plate collided with one of them)"
    raise PairError(
        f"{called or 'fit'}: the loss was built with max_plate_nesting={declared}, but {need}: "
        "Pyro puts its particle and enumeration dims left of that many, where they collide "
        "with the pair's plates. Build it with max_plate_nesting="
        f"{needed if needed is not None else 'the number of plates nested'}, or leave the "
        "argument out (Pyro then finds it)")


def _check_autoguide_rows(model, guide, rows, first_batch, use, num_data, shuffle,
                          minibatched: bool, called: str | None = None) -> None:
    """An AutoGuide on a model with local latents is index-aware only when the model's
    ``"data"`` plate declares the full size (and takes the minibatch's indices). Surveyed on
    all rows (where the guide makes its parameters); ``minibatched``: fit passes fewer at a
    time, so all N indices in another order, ``(x[perm], perm)``, are no fault."""
    whole = check_pair(survey_pair(model, guide, rows(num_data), {}, probe_vectorized=False,
                                   probe_randomness=False, rows_run_whole=not minibatched),
                       use, called)
    global_names = {name for _, name in whole.global_sites}
    if not any(name not in global_names and name not in whole.model_enumerated
               for name in whole.model_latents):
        # only global latents (and local ones the model sums out, which the guide never
        # draws: the Gaussian mixture tutorial's assignments): no parameters follow the rows
        return
    # two rows: an index-aware model still declares all N rows; a positional one declares 2
    probe = rows(2) if num_data > 2 else first_batch
    try:
        first = survey_pair(model, guide, probe, {}, probe_vectorized=False,
                            probe_randomness=False)
    except Exception as error:  # the guide's per-row parameters do not fit a minibatch
        # (indices of int16: the survey's refusal, remade for the pair's arguments here)
        explain_index_dtype(error.__cause__ if isinstance(error, PairError) and
                            error.__cause__ is not None else error,
                            model, guide, probe, {}, PairError)
        raise _positional_error(guide, num_data, shuffle) from None
    if first.row_mismatch or first.data_size != num_data:
        raise _positional_error(guide, num_data, shuffle)


def check_valid_data_guide(model, guide, first_batch: tuple, structure: PairStructure,
                           num_data: int, training: tuple = ()) -> None:
    """Refuse ``fit(valid_data=...)`` for a guide that keeps parameters for each datapoint
    (by position, or by the indices passed with the data: an AutoGuide on a model with
    latents inside ``"data"``, the index-aware ``AutoNormal(create_plates=...)`` pair, a
    ``pyro.param`` of a row per datapoint): the validation rows have none of their own, so
    the validation ELBO scored them with the training rows' posteriors (-27.5 nats per
    datapoint against an exact -5.31), or failed inside Pyro on an index beyond the training
    data's. A hand-written guide is probed on ``first_batch``: its per-datapoint densities
    must follow the rows' data, not their positions or the integer tensors (indices) passed
    with them. ``training``: the whole training tensors (``[N, ...]`` each), which tell an
    index (distinct over all of them) from a label."""
    global_names = {name for role, name in structure.global_sites if role == "model"}
    local = [name for name in structure.model_latents if name not in global_names]
    if not local:
        return
    if _is_autoguide(guide):
        found, how = local[0], "by position or by the indices passed with the data"
    else:
        try:
            found, how = _rows_not_followed(model, guide, first_batch, num_data), "by position"
            if found is None:
                found, how = (_index_followed(model, guide, first_batch, num_data, training),
                              "by the indices passed with the data")
        except Exception:  # noqa: BLE001 - a probe only: a guide it cannot run is not judged
            return
        if found is None:
            return
    named = getattr(guide, "__name__", type(guide).__name__)
    raise PairError(
        f"fit(valid_data=...): the guide ({named}) keeps parameters for each "
        f"datapoint of pyro.plate('{DATA_PLATE}') ({how}; site '{found}'): the validation "
        "rows have no posterior of their own, so their ELBO would be scored with the "
        "training rows' per-datapoint parameters (a meaningless number), or fail on indices "
        "beyond the training data's. Train without valid_data; to score held-out data, use "
        "an amortized guide (a network of x, e.g. AutoNormal replaced by an encoder), or fit "
        "a guide to the validation rows with the model's parameters held fixed and evaluate "
        "that pair")


def _is_index(t: torch.Tensor, num_data: int, whole: torch.Tensor | None) -> bool:
    """Whether ``t`` (a tensor of the first minibatch) can hold the datapoints' indices: 1-d
    integers in ``0..N-1``, distinct in the minibatch and, where the whole training tensor
    ``whole`` (``[N]``, the same column of the training data) is known, over all of it.
    Labels (``y`` of a class-conditional guide ``q(z | y)``) repeat once N exceeds the number
    of classes, whatever the first minibatch shows."""
    if (t.dim() != 1 or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool
            or not t.numel()):
        return False
    if t.unique().numel() != t.numel() or int(t.min()) < 0 or int(t.max()) >= num_data:
        return False
    if whole is None or whole.shape != (num_data,) or whole.dtype != t.dtype:
        return True
    return whole.unique().numel() == whole.numel()


def _index_followed(model, guide, batch: tuple, num_data: int,
                    training: tuple = ()) -> str | None:
    """The first guide latent in the data plate whose log density, per datapoint, changes
    when the index tensors of ``batch`` (:func:`_is_index`: the datapoints' indices, not
    labels) are reversed, the rest of the data and the draws kept, and stays when the rest
    is reversed and the indices kept: the guide reads its parameters by index, not from the
    data. The guide's own parameters with a row per datapoint (``N`` rows, what an index
    reads) are spread apart first; a table of another size (a per-class table that has as
    many rows as the minibatch) is left as it is. None when no tensor is an index, or no
    density is so."""
    wholes = list(training) + [None] * (len(batch) - len(training))
    which = [_is_index(t, num_data, whole) for t, whole in zip(batch, wholes)]
    if not any(which) or batch[0].shape[0] < 2:
        return None
    reverse = torch.arange(batch[0].shape[0] - 1, -1, -1, device=batch[0].device)
    indices, rest = (tuple(t.index_select(0, reverse) if flip == index else t
                           for t, index in zip(batch, which)) for flip in (True, False))
    with forked_rng(), poutine.block(), torch.no_grad(), \
            evaluation_mode(reachable_modules(model, guide)):
        guide = poutine.substitute(guide, data=_spread_params(guide, batch, {num_data}))
        first = poutine.trace(guide).get_trace(*batch)
        by_index, by_rest = (poutine.trace(poutine.replay(guide, trace=first)).get_trace(*args)
                             for args in (indices, rest))
    for site in sample_sites(first, observed=False):
        if data_frame(site) is None:
            continue
        before = site["fn"].log_prob(site["value"])
        changed = []
        for trace in (by_index, by_rest):
            other = trace.nodes.get(site["name"])
            if other is None or other["type"] != "sample":
                break
            after = other["fn"].log_prob(other["value"])
            changed.append(before.shape != after.shape or not torch.allclose(
                before, after, rtol=1e-4, atol=1e-4, equal_nan=True))
        if changed == [True, False]:
            return site["name"]
    return None
