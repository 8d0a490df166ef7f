"""Reading a pair's traces: the plate names, :class:`PairError`, tracing a pair, the sample
sites of a trace and what their distributions are (family, mask, conditional dependence).
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch
from pyro import poutine
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.poutine.condition_messenger import ConditionMessenger
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites, site_is_subsample

from ..checks import autograd_arguments, evaluation_mode, recording_autograd
from ..reachable import reachable_modules
from ..random_state import (equal_generators, forked_rng, generator_states,
                            moved_generators, restore_generators, seed_generators)

DATA_PLATE = "data"


PARTICLE_PLATE = "particles"


NOT_A_DENSITY = "not_a_density"
"""The ``infer`` key that marks an observed site whose score is no density of its value
(``infer={"not_a_density": True}``: an autoencoder's reconstruction term ``p(x | z =
encoder(x))``, which reads ``x`` to score ``x``): training takes it, the estimators refuse it."""


class PairError(ValueError):
    """A model/guide pair an entry point cannot handle; the message names the construct."""


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


def _plain_setting(value):
    """An ``infer`` setting as a hashable record: plain values as they are, others by type."""
    return value if isinstance(value, (str, int, float, bool, type(None))) else \
        type(value).__name__


def trace_signature(model_trace, guide_trace) -> tuple:
    """What one run's traces fix of a pair's structure, values aside: for each sample site
    (model's, then guide's) its name, whether observed, its distribution's classes through
    the wrappers, batch and event shapes, the value's shape and dtype, its plates, its
    ``infer`` settings and its mask's shape. Two runs with equal signatures trace the same
    program path (:func:`inference.pair_check.survey_pair`'s ``reference``)."""
    rows = []
    for role, trace in (("model", model_trace), ("guide", guide_trace)):
        for site in sample_sites(trace):
            fn, classes = site["fn"], []
            while fn is not None:
                classes.append(type(fn))
                fn = getattr(fn, "base_dist", None)
            value, mask = site["value"], site["mask"]
            rows.append((
                role, site["name"], site["is_observed"], tuple(classes),
                tuple(site["fn"].batch_shape), tuple(site["fn"].event_shape),
                (tuple(value.shape), value.dtype, value.device) if torch.is_tensor(value)
                else type(value),
                tuple((f.name, f.dim, f.size, getattr(f, "full_size", None))
                      for f in site["cond_indep_stack"]),
                tuple(sorted((key, _plain_setting(v)) for key, v in site["infer"].items())),
                None if mask is None else tuple(torch.as_tensor(mask).shape)))
    return tuple(rows)


def check_sites_as_surveyed(model_trace, guide_trace, site_names: tuple) -> None:
    """Raise :class:`PairError` when a pass's traces hold other sample sites than the
    survey's (``site_names``: :attr:`PairStructure.site_names`; nothing to compare when
    empty): structure that changes between runs (a site behind a coin) is never scored as
    if it were the surveyed one."""
    if not site_names:
        return
    for program, trace, observed, names in (("model", model_trace, None, site_names[0]),
                                            ("guide", guide_trace, False, site_names[1])):
        found = {site["name"] for site in sample_sites(trace, observed)}
        if found != names:
            extra, missing = sorted(found - names), sorted(names - found)
            raise PairError(
                f"a pass of the {program} traced other sample sites than the survey's run"
                + (f": {site_list(extra)} not seen before" if extra else "")
                + (f"; {site_list(missing)} missing" if missing else "")
                + f": the {program}'s sites depend on randomness Pyro does not record (a "
                "site behind torch.rand, numpy or Python random numbers), so its weights "
                "are not importance weights of one pair. Make every random choice a "
                "pyro.sample site (and the same sites in every run)")


def unwrapped(fn):
    """A distribution without its ``Independent`` and ``dist.mask`` wrappers."""
    while isinstance(fn, (torch.distributions.Independent, MaskedDistribution)):
        fn = fn.base_dist
    return fn


def _distribution_arguments(fn) -> list[torch.Tensor]:
    """The tensor arguments of a distribution (through ``Independent``/``mask`` wrappers),
    with those of its base distribution and transforms (a ``LogNormal`` or
    ``TransformedDistribution`` keeps its ``loc`` there) and of a mixture's parts."""
    fn = unwrapped(fn)
    found = [v for k, v in vars(fn).items()
             if k in getattr(fn, "arg_constraints", {}) and torch.is_tensor(v)]
    for part in ("base_dist", "mixture_distribution", "component_distribution"):
        inner = getattr(fn, part, None)
        if isinstance(inner, torch.distributions.Distribution):
            found += _distribution_arguments(inner)
    for transform in getattr(fn, "transforms", ()):
        found += [v for v in vars(transform).values() if torch.is_tensor(v)]
    return found


def latent_dependencies_in_trace(trace) -> dict[str, set[str]]:
    """Per latent site of a trace whose drawn value requires gradients, the names of the
    other such latents its *distribution's arguments* depend on, read from the trace's
    autograd graph (runs nothing). For a guide's trace: ``q(z2 | z1)`` gives ``{"z2":
    {"z1"}}``; for a model's trace replayed on such guide draws: the latents that
    ``p(z | ...)`` reads. With draws made leaves (:class:`DrawsAsLeaves`) the sets are the
    direct dependencies; with draws that are functions of other draws (a training step's
    own graph) they are transitive. A latent whose value does not require gradients (a
    discrete draw, a step under ``no_grad``) is not in the dict: its dependencies are
    unknown."""
    latents = [site for site in sample_sites(trace, observed=False)
               if torch.is_tensor(site["value"]) and site["value"].requires_grad]
    found = {}
    for site in latents:
        found[site["name"]] = set()
        arguments = [a for a in _distribution_arguments(site["fn"]) if a.requires_grad]
        others = [o for o in latents if o is not site]
        if not arguments or not others:
            continue
        total = sum(a.sum() for a in arguments)
        if not total.requires_grad:  # summed where gradients are off: no graph to read
            continue
        grads = torch.autograd.grad(total, [o["value"] for o in others], retain_graph=True,
                                    allow_unused=True)
        found[site["name"]] = {o["name"] for o, g in zip(others, grads) if g is not None}
    return found


def conditional_sites_in_trace(guide_trace) -> list[str]:
    """Names of the latent sites of a guide's *trace* whose distribution depends on another
    latent the guide drew (``q(z2 | z1)``), read from the trace's autograd graph: it needs a
    trace whose drawn values require gradients (the IWAE losses' own traces, or
    :func:`conditional_sites_of_guide`'s). Runs nothing."""
    return [name for name, parents in latent_dependencies_in_trace(guide_trace).items()
            if parents]


class DrawsAsLeaves(Messenger):
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
    with poutine.block(), forked_rng(), recording_autograd():
        args, kwargs = autograd_arguments(args, kwargs)
        with DrawsAsLeaves():
            trace = poutine.trace(guide).get_trace(*args, **kwargs)
        return conditional_sites_in_trace(trace)


def latent_dependencies_of_traces(model_trace, guide_trace):
    """:func:`latent_dependencies_in_trace` of a step's own model and guide traces (the
    model's replayed on the guide's draws), ``(model_dependencies, guide_dependencies)``,
    when every floating latent draw of the guide requires gradients (reparameterized draws
    of a step that records autograd); ``None`` when one does not (a step under
    ``no_grad``: the graph shows nothing, rerun with :func:`latent_dependencies_of_pair`)."""
    for site in sample_sites(guide_trace, observed=False):
        value = site["value"]
        if torch.is_tensor(value) and value.is_floating_point() and not value.requires_grad:
            return None
    return latent_dependencies_in_trace(model_trace), latent_dependencies_in_trace(guide_trace)


def latent_dependencies_of_pair(model, guide, args, kwargs):
    """:func:`latent_dependencies_in_trace` of the guide and of the model replayed on the
    guide's draws, from one run of the pair (random state restored, effects hidden) with the
    guide's draws made gradient leaves: ``(model_dependencies, guide_dependencies)``, direct
    dependencies each. ``None`` for a side whose run fails (nothing known). The networks run
    in evaluation mode (a batch norm's running statistics stay where training put them)."""
    with poutine.block(), forked_rng(), recording_autograd(), \
            evaluation_mode(reachable_modules(model, guide)):
        args, kwargs = autograd_arguments(args, kwargs)
        try:
            with DrawsAsLeaves():
                guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        except Exception:  # noqa: BLE001 - the caller stays conservative
            return None, None
        guide_dependencies = latent_dependencies_in_trace(guide_trace)
        try:
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
                *args, **kwargs)
        except Exception:  # noqa: BLE001 - the caller stays conservative
            return None, guide_dependencies
        return latent_dependencies_in_trace(model_trace), guide_dependencies


def _another_draw(fn, value: torch.Tensor, tries: int = 4) -> torch.Tensor:
    """A fresh draw of ``fn`` that differs from ``value`` where one of ``tries`` does (a
    discrete site repeats its value often), else the last draw."""
    for _ in range(tries):
        draw = fn.sample()
        if not torch.equal(draw, value):
            break
    return draw


def unused_auxiliary_sites(guide, args, kwargs, auxiliary, names, feeding) -> tuple[str, ...]:
    """Those of the guide's ``auxiliary`` sites that no other guide site among ``names``
    depends on: neither in ``feeding`` (the sites a ``Delta``'s autograd graph reaches) nor
    moving another site when only its own value changes (:func:`sites_moved_by_auxiliary`,
    which finds a chain through another auxiliary site or a ``.detach()``). Their ``log q``
    would enter every importance weight with nothing in ``p`` to match it."""
    return tuple(aux for aux in auxiliary if aux not in feeding and not sites_moved_by_auxiliary(
        guide, args, kwargs, [aux], [n for n in names if n != aux]))


def sites_moved_by_auxiliary(guide, args, kwargs, auxiliary, names) -> set[str]:
    """Those of the guide's sites ``names`` whose distribution changes when only the values
    of the ``auxiliary`` sites change: the guide run twice from one random state, its
    auxiliary sites given the first run's values, then fresh draws. Finds what the autograd
    graph cannot show (a ``.detach()``, a trip through numpy); a site that changes with the
    random state alone (dropout) changes in both runs alike and is not counted."""
    def run(values):
        with forked_rng():
            return poutine.trace(poutine.condition(guide, data=values)).get_trace(
                *args, **kwargs)

    with poutine.block(), torch.no_grad():
        with forked_rng():  # the fresh draws follow the first run's (the same state again
            first = poutine.trace(guide).get_trace(*args, **kwargs)  # would repeat them)
            try:
                same = {n: first.nodes[n]["value"] for n in auxiliary if n in first.nodes}
                fresh = {n: _another_draw(first.nodes[n]["fn"], value)
                         for n, value in same.items()}
            except (NotImplementedError, RuntimeError, ValueError):
                return set()  # an auxiliary site that cannot draw again: nothing to compare
        if all(torch.equal(same[n], fresh[n]) for n in same):
            return set()  # no other value drawn (a discrete site's likely one): nothing seen
        kept, moved = run(same), run(fresh)
    changed = set()
    for name in names:
        if name not in kept.nodes or name not in moved.nodes:
            continue
        value = kept.nodes[name]["value"]
        try:
            before = kept.nodes[name]["fn"].log_prob(value)
            after = moved.nodes[name]["fn"].log_prob(value)
        except (ValueError, RuntimeError):
            changed.add(name)  # the value left the other run's support
            continue
        if before.shape != after.shape or not torch.allclose(before, after, rtol=1e-6,
                                                             atol=1e-8, equal_nan=True):
            changed.add(name)
    return changed


# Replays from seeded states that a program whose replay moved a generator must pass.
REPLAY_SEEDS = 8


def _same_density(a: float, b: float) -> bool:
    """Equal log densities up to float32 rounding of a recomputation (1e-3), NaN and NaN
    included."""
    return a == b or (math.isnan(a) and math.isnan(b)) or math.isclose(
        a, b, rel_tol=1e-3, abs_tol=1e-3)


def unrecorded_randomness(model, guide, args, kwargs) -> tuple:
    """``(program, finding)`` when ``"the guide"`` or ``"the model"`` uses randomness Pyro
    does not record, ``()`` otherwise. The guide is run, then replayed on its own draws, and
    the model replayed twice on every site it recorded. A log density that differs between
    the runs (a ``pyro.sample`` hidden by ``poutine.block``) is found. A replay that moves a
    global generator (:func:`inference.random_state.moved_generators`: ``torch.rand`` in a
    program's body, ``torch.manual_seed``, numpy's or Python's ``random``, but also an
    initial value drawn for ``pyro.param`` or a network built in the body) is replayed from
    seeded states and found when its density changes or a generator is reset.
    ``finding`` says which, in words. The modules ``model`` and ``guide``
    reach (their owner, the networks their code names) run in evaluation mode: dropout is
    training-mode randomness, which the estimators warn about. Log densities count as equal
    within float32 rounding of a recomputation (a flow's inverse): 1e-3 relative."""
    owners = reachable_modules(model, guide)

    def rerun(program, recorded):
        before = generator_states()
        trace = poutine.trace(poutine.replay(program, trace=recorded)).get_trace(
            *args, **kwargs)
        return trace, moved_generators(before, generator_states())

    def draws_that_matter(program, run, density, recorded, value) -> str:
        """What the draws of a program whose replay moved a generator do, in words, or "":
        replayed from 8 seeded states, it must neither reset a generator (two states give
        the same one after) nor give another density (pyro.param("loc", torch.randn(...))
        draws an initial value the store ignores: no change)."""
        saved = generator_states()
        runs = []
        try:
            for seed in range(1, 1 + REPLAY_SEEDS):
                seed_generators(seed)
                trace = poutine.trace(poutine.replay(run, trace=recorded)).get_trace(
                    *args, **kwargs)
                runs.append((float(trace.log_prob_sum()), generator_states()))
        finally:
            restore_generators(saved)
        reset = equal_generators(runs[0][1], runs[1][1])
        if reset:
            return (f"{program}, replayed from two random states, left the "
                    f"{' and '.join(reset)} generator in one state (torch.manual_seed or "
                    "the like in its body): its draws repeat from call to call")
        other = next((d for d, _ in runs if not _same_density(d, value)), None)
        if other is not None:
            return (f"{program}, replayed on draws it recorded from {REPLAY_SEEDS} random "
                    f"states, gave {density} = {value:.6g} and {other:.6g}: it draws random "
                    "numbers that change its density")
        return ""

    with poutine.block(), torch.no_grad(), evaluation_mode(owners), forked_rng():
        try:
            drawn = poutine.trace(guide).get_trace(*args, **kwargs)
            first, _ = rerun(model, drawn)  # model-only latents are drawn here
            runs = (("the guide", guide, "log q(z)", drawn, rerun(guide, drawn)),
                    ("the model", model, "log p(x, z)", first, rerun(model, first)))
            for program, run, density, once, (twice, moved) in runs:
                values = float(once.log_prob_sum()), float(twice.log_prob_sum())
                if not _same_density(*values):
                    return (program, f"two runs of {program} on the same draws gave "
                                     f"{density} = {values[0]:.6g} and {values[1]:.6g}")
                found = moved and draws_that_matter(program, run, density, once, values[1])
                if found:
                    return (program, found)
        except (RuntimeError, ValueError, NotImplementedError):
            return ()  # the survey's own runs report what fails
    return ()


def site_data_size(site, frame) -> int:
    """The length of ``site``'s log density along the ``"data"`` dim (1 when it broadcasts)."""
    shape = site["fn"].batch_shape
    return shape[frame.dim] if len(shape) >= -frame.dim else 1


def family(fn) -> str:
    """The class name of a distribution, through ``Independent``, ``dist.mask`` and
    ``expand`` wrappers (a plate expands a distribution without batch dims)."""
    return type(_innermost(fn)).__name__


def _innermost(fn):
    """A distribution without its ``Independent``, ``dist.mask`` and ``expand`` wrappers."""
    fn = unwrapped(fn)
    while isinstance(fn, ExpandedDistribution):
        fn = unwrapped(fn.base_dist)
    return fn


def is_delta(fn) -> bool:
    return family(fn) == "Delta"


def own_mask(fn) -> torch.Tensor | None:
    """Which values ``fn``'s own ``dist.mask(m)`` wrappers score, as a bool tensor that
    broadcasts to its values' shape ``[*batch_shape, *event_shape]`` (a mask outside an
    ``Independent`` covers each event whole), through ``Independent`` and ``expand``
    wrappers; None for a distribution without such a wrapper."""
    if isinstance(fn, MaskedDistribution):
        mask = torch.as_tensor(fn._mask, dtype=torch.bool)
        mask = mask.reshape(mask.shape + (1,) * len(fn.event_shape))
        inner = own_mask(fn.base_dist)
        return mask if inner is None else mask & inner
    if isinstance(fn, (torch.distributions.Independent, ExpandedDistribution)):
        return own_mask(fn.base_dist)
    return None


def masked_off(fn) -> bool:
    """Whether ``fn`` is wrapped in ``dist.mask(False)`` (through ``Independent`` and
    ``expand`` wrappers): Pyro then neither scores nor checks its values."""
    while isinstance(fn, (MaskedDistribution, torch.distributions.Independent,
                          ExpandedDistribution)):
        if isinstance(fn, MaskedDistribution) and fn._mask is False:
            return True
        fn = fn.base_dist
    return False


def distribution_masked(fn) -> bool:
    """Whether ``fn`` masks out some of its own values (a ``dist.mask(m)`` wrapper, through
    ``Independent`` and ``expand`` wrappers, whose mask is not all True: :func:`own_mask`).
    On a discrete latent summed out by enumeration such a mask gives each of the K values
    weight one at the masked positions: ``log K`` added to the evidence, where
    ``poutine.mask`` leaves it out."""
    mask = own_mask(fn)
    return mask is not None and not bool(mask.all())


def site_mask(site) -> torch.Tensor:
    """The site's mask as a bool tensor that broadcasts to its value's shape: its
    ``poutine.mask`` (over the batch dims; ``obs_mask``'s latent half is one) and the masks
    of ``dist.mask(...)`` wrappers of its distribution (:func:`own_mask`), combined."""
    # on the value's device, not the default one (torch.set_default_device)
    device = site["value"].device if torch.is_tensor(site["value"]) else None
    mask = torch.as_tensor(True if site["mask"] is None else site["mask"], dtype=torch.bool,
                           device=device)
    mask = mask.reshape(mask.shape + (1,) * len(site["fn"].event_shape))
    own = own_mask(site["fn"])
    return mask if own is None else mask & own.to(mask.device)


def scored_elements(site) -> torch.Tensor | None:
    """``[*batch_shape]`` flags of the site's batch elements that its masks (``poutine.mask``,
    ``dist.mask``) score whole (:func:`site_mask`, :func:`per_batch_element`); None for a site
    that nothing masks."""
    if site["mask"] is None and own_mask(site["fn"]) is None:
        return None
    return per_batch_element(site_mask(site), site["fn"])


def per_batch_element(mask: torch.Tensor, fn) -> torch.Tensor:
    """A value-shaped ``mask`` (:func:`site_mask`, :func:`own_mask`) as one flag per batch
    element of ``fn`` (``[*fn.batch_shape]``): an element counts as scored when all of its
    event's values are."""
    mask = mask.expand(fn.batch_shape + fn.event_shape)
    return mask.flatten(len(fn.batch_shape)).all(-1) if fn.event_shape else mask


def param_requires_grad(param_site) -> bool:
    value = param_site["value"]
    value = value.unconstrained() if hasattr(value, "unconstrained") else value
    return bool(getattr(value, "requires_grad", False))


def is_weighted_delta(fn) -> bool:
    """A ``Delta`` with a nonzero ``log_density``."""
    fn = _innermost(fn)
    return family(fn) == "Delta" and bool(torch.as_tensor(fn.log_density).ne(0).any())


@contextlib.contextmanager
def validation_off(fn):
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


def value_kind(value) -> str:
    if not torch.is_tensor(value):
        return type(value).__name__
    return f"{value.dtype} values of shape {tuple(value.shape)}"


def is_factor(site) -> bool:
    """A ``pyro.factor``: an observed ``Unit`` site."""
    return site["is_observed"] and family(site["fn"]) == "Unit"


def site_list(names) -> str:
    return ", ".join(f"'{n}'" for n in names)


def tensor_text(values: torch.Tensor) -> str:
    """A tensor for a message, short: its number, or its first three entries."""
    flat = values.detach().reshape(-1)
    shown = ", ".join(f"{float(v):.4g}" for v in flat[:3])
    return shown if flat.numel() == 1 else f"[{shown}{', ...' if flat.numel() > 3 else ''}]"


def conditioned_rows(program, rows: int) -> list[str]:
    """The sites whose values the ``pyro.condition``/``poutine.condition`` handlers wrapping
    ``program`` hold as tensors of ``rows`` rows (``pyro.condition(model, data={"x": x})``,
    Pyro's tutorial idiom): data the handler keeps whole, which slicing the call's arguments
    or drawing minibatches from them cannot reach."""
    found, value = [], program
    for _ in range(64):  # handlers nest a few deep (bounded: an object may hold itself)
        if isinstance(value, functools.partial) and len(value.args) == 2 \
                and isinstance(value.args[0], Messenger) and callable(value.args[1]):
            messenger, value = value.args  # partial(_context_wrap, messenger, fn)
        elif isinstance(value, functools.partial) and not value.args and not value.keywords:
            value, messenger = value.func, None  # the bound partial around a handler
        else:
            break
        data = getattr(messenger, "data", None) if isinstance(messenger,
                                                              ConditionMessenger) else None
        if isinstance(data, dict):
            found += [name for name, held in data.items()
                      if torch.is_tensor(held) and held.dim() and held.shape[0] == rows]
    return found

