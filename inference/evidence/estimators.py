"""Evidence bounds per datapoint: ELBO, IWAE_K and a sweep over K.

For weights ``w_k = p(x, z_k) / q(z_k | x)`` with ``z_k ~ q``, Jensen's inequality gives
``E[log w] <= E[log mean_k w_k] <= log p(x)`` and the IWAE bound rises monotonically in
expectation with K (Burda et al. 2015, Theorem 1).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import pyro
import torch

from ..checks import (
    as_int,
    as_int_list,
    check_at_most,
    check_data_arguments,
    check_dense,
    check_dense_values,
    check_pair_call,
    check_positional_call,
    check_weights_memory,
    leaves_buffers,
    user_stacklevel,
)
from ..effect_guides import effect_messenger, keeps_rows
from ..pair_check import (DATA_PLATE, PairStructure, attach_subsample, conditioned_rows,
                          forget_params, survey_pair)
from ..progress import check_progress, progress_bar
from ..reachable import kept_plate_caches, reachable_modules
from ..random_state import forked_rng
from ..weights import (
    check_compile,
    check_data,
    check_finite_inputs,
    check_log_weights,
    check_num_samples,
    check_rows_keep_density_when_moved,
    checked_log_weights,
    checked_pair,
    cut_rows,
    log_importance_weights,
    log_mean_exp,
    log_weights_for,
    weight_itemsize,
    wide_mean,
)


def _check_rows_scored(structure: PairStructure, rows: int, use: str, sliced: str,
                       remedy: str, args: tuple = (), kwargs: dict | None = None) -> None:
    """Raise ``ValueError`` unless the pair, given ``rows`` rows of ``sliced`` (cut along
    dim 0, ``args`` and ``kwargs`` as passed), scored exactly those rows: no subsample the
    model draws itself (one it is given, :meth:`PairStructure.subsample_passed`, keeps the
    rows), one datapoint per row."""
    if structure.data_subsample is not None and \
            not structure.subsample_passed(args, kwargs or {}):
        raise ValueError(
            f"{use}: the model subsamples its own '{DATA_PLATE}' plate "
            f"({structure.batch_size} of {structure.data_size} datapoints), so the rows scored "
            f"would not be the rows of {sliced} in order; {remedy}")
    if structure.batch_size != rows:
        raise ValueError(
            f"{use}: a slice of {rows} rows along dim 0 of {sliced} holds "
            f"{structure.batch_size} datapoints of the '{DATA_PLATE}' plate: the datapoints do "
            f"not lie along dim 0 (an inner '{DATA_PLATE}' plate, or one the model resizes); "
            f"{remedy}")


def _check_rows_are_datapoints(model, guide, args: tuple, kwargs: dict, n: int, size: int,
                               use: str, sliced: str, remedy: str,
                               argument: str = "data_batch_size") -> None:
    """Before cutting ``n`` rows into slices of ``size``, survey the first ``size + 1`` rows
    (``size`` when that would be all ``n``; nothing when ``n <= size``): slices of one
    length can match an inner plate's size by chance, two lengths cannot
    (:func:`_check_rows_scored`). When the pair fails on
    the cut rows but not on the whole data, the refusal names ``argument``: the slices
    would not be scored as slices (an argument that is not cut, such as the plate's size
    passed as an int, decides the plate)."""
    if n > size:
        held = conditioned_rows(model, n)
        if held:
            raise ValueError(
                f"{use}: {argument}={size} cuts {sliced} into slices along dim 0, but the "
                f"model is conditioned by a handler holding site(s) {held} of {n} rows "
                "(pyro.condition(model, data={...})), which slicing the arguments cannot "
                f"reach: each slice would be scored against all {n} observed rows. Pass the "
                "data as an argument the model observes (pyro.sample(name, ..., obs=x)), "
                f"or score all {n} rows in one call ({argument} >= {n})")
        rows = size + 1 if size + 1 < n else size  # fewer rows than the whole data
        cut_args, cut_kwargs = cut_rows(args, kwargs, 0, rows)
        per_row = (f"the guide ({type(effect_messenger(guide) or guide).__name__}) keeps "
                   "parameters for each "
                   "datapoint by position" if keeps_rows(guide, DATA_PLATE) else
                   "the guide keeps a parameter with a row per datapoint (a pyro.param "
                   "of shape [n, ...]), by position")
        store = pyro.get_param_store()
        before = set(store.keys())
        built = [(module, dict(vars(module)), dict(module._modules))
                 for module in reachable_modules(guide) if keeps_rows(module, DATA_PLATE)]
        try:
            with kept_plate_caches(reachable_modules(model, guide)):
                probe = survey_pair(model, guide, cut_args, cut_kwargs, probe_vectorized=False)
        except Exception as error:
            # the probe's parameters go (sized by its rows); the pair's own failure, on the
            # whole data too, propagates as it is
            forget_params(store, set(store.keys()) - before)
            try:
                survey_pair(model, guide, args, kwargs, probe_vectorized=False)
            finally:
                forget_params(store, set(store.keys()) - before)
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ValueError(
                f"{use}: {argument}={size} cuts {sliced} into slices along dim 0, and the "
                f"pair, which runs on the whole data, fails on their first {rows} rows "
                f"({type(error).__name__}: {first[:300]}): the slices would not be scored as "
                f"slices. Either {per_row}, which a slice cannot index: score all {n} rows "
                f"in one call ({argument} >= {n}); or an argument that is not cut (an int, "
                f"e.g. the plate's size in pyro.plate('{DATA_PLATE}', n), or a tensor inside "
                "a list or dict) decides the plate: size the plate from the data "
                f"(pyro.plate('{DATA_PLATE}', len(x))). Or {remedy}") from error
        made = _made_per_row(model, guide, args, kwargs, rows, before, built)
        if made:
            # an untrained guide made them on this first call, one row per row it was given:
            # each slice would get parameters of its own
            raise ValueError(
                f"{use}: {argument}={size} cuts {sliced} into slices along dim 0, but "
                f"{per_row}, made on its first call with one row per datapoint it is given "
                f"({', '.join(sorted(made)[:4])}): each slice would get rows of its own. "
                f"Score all {n} rows in one call ({argument} >= {n}), after training the "
                "guide on them")
        _check_rows_scored(probe, rows, use, sliced, remedy, cut_args, cut_kwargs)
        check_rows_keep_density_when_moved(model, guide, cut_args, cut_kwargs, probe, use,
                                           f"score all {n} rows in one call ({argument} >= "
                                           f"{n}), whose positions are those of the data")


def _made_per_row(model, guide, args: tuple, kwargs: dict, rows: int, before: set,
                  built: list) -> list[str]:
    """The param-store entries (not in ``before``) that the probe of ``rows`` rows made
    with ``rows`` leading rows and that a probe of one row fewer makes with one row fewer:
    an untrained guide's parameters per datapoint (a network whose size equals ``rows`` by
    chance is not one). The probes' entries are forgotten, and when any had ``rows`` rows,
    the AutoGuides in ``built`` (``(module, vars, submodules)`` from before the probe) are
    set back unbuilt."""
    store = pyro.get_param_store()
    made = [name for name in set(store.keys()) - before
            if _leading_size(store[name]) == rows]
    forget_params(store, set(store.keys()) - before)
    if not made:
        return []
    for module, attributes, submodules in built:
        _set_back(module, attributes, submodules)
    fewer_args, fewer_kwargs = cut_rows(args, kwargs, 0, rows - 1)
    try:
        with kept_plate_caches(reachable_modules(model, guide)):
            survey_pair(model, guide, fewer_args, fewer_kwargs, probe_vectorized=False)
        return [name for name in made
                if name in store and _leading_size(store[name]) == rows - 1]
    except Exception:  # noqa: BLE001 - fewer rows fail: the rows' sizes stand
        return made
    finally:
        forget_params(store, set(store.keys()) - before)
        for module, attributes, submodules in built:
            _set_back(module, attributes, submodules)


def _set_back(module: torch.nn.Module, attributes: dict, submodules: dict) -> None:
    """``module``'s attributes and submodules as they were (``attributes``: its ``vars``,
    ``submodules``: its ``_modules``, shallow copies): what an AutoGuide's first call built
    (its prototype trace, its ``locs`` and ``scales``) is undone."""
    for key in list(vars(module)):
        if key not in attributes:
            del module.__dict__[key]
        elif key != "_modules":
            module.__dict__[key] = attributes[key]
    module._modules.clear()
    module._modules.update(submodules)


def _leading_size(value) -> int | None:
    """The leading size of a param-store entry (its unconstrained tensor), None for a
    scalar."""
    value = value.unconstrained() if hasattr(value, "unconstrained") else value
    return value.shape[0] if torch.is_tensor(value) and value.dim() else None


# Draws of the probe that tells a cut setting from cut data (its own seed, state restored).
SETTING_PROBE_DRAWS, SETTING_PROBE_SEED = 4, 20261129


def _check_cut_tensors_hold_data(model, guide, args: tuple, kwargs: dict, n: int, size: int,
                                 use: str) -> None:
    """Before cutting every tensor argument of ``n`` rows into slices of ``size``, refuse one
    that is not per datapoint: given whole beside the first or the last slice of the others,
    the pair still scores that slice's datapoints, but with other weights on the same draws.
    A model's setting with ``n`` rows by chance (a mixture's ``n`` component means) would
    otherwise be cut with the data, and each slice scored under another model, silently."""
    if n <= size:
        return
    candidates = [(f"argument {i}", i) for i, value in enumerate(args)
                  if torch.is_tensor(value) and value.dim() and value.shape[0] == n]
    candidates += [(f"keyword argument '{key}'", key) for key, value in kwargs.items()
                   if torch.is_tensor(value) and value.dim() and value.shape[0] == n]
    if len(candidates) < 2:  # the data alone are cut
        return
    # the first slice and the last: a lookup table indexed by small labels reads the same
    # rows whole or cut in the first, other rows in the others
    for start in sorted({0, (n - 1) // size * size}):
        _check_slice_keeps_settings(model, guide, args, kwargs, candidates, start,
                                    min(start + size, n), n, size, use)


def _check_slice_keeps_settings(model, guide, args, kwargs, candidates, start: int, stop: int,
                                n: int, size: int, use: str) -> None:
    """:func:`_check_cut_tensors_hold_data` on the slice of rows ``start:stop``."""
    cut_args, cut_kwargs = cut_rows(args, kwargs, start, stop)

    def weights(part_args, part_kwargs):
        with forked_rng():
            torch.manual_seed(SETTING_PROBE_SEED)
            return log_importance_weights(model, guide, *part_args, progress=False,
                                          num_samples=SETTING_PROBE_DRAWS, **part_kwargs)

    reference = weights(cut_args, cut_kwargs)
    if not torch.equal(reference, weights(cut_args, cut_kwargs)):
        return  # draws that do not repeat: nothing to compare
    for label, key in candidates:
        part_args, part_kwargs = list(cut_args), dict(cut_kwargs)
        if isinstance(key, int):
            part_args[key] = args[key]
        else:
            part_kwargs[key] = kwargs[key]
        try:
            whole = weights(tuple(part_args), part_kwargs)
        except Exception:  # noqa: BLE001 - the pair needs it cut: it holds datapoints
            continue
        if whole.shape != reference.shape or torch.allclose(whole, reference, rtol=1e-5,
                                                            atol=1e-6, equal_nan=True):
            continue  # it sizes the plate (data), or cutting it changes nothing
        value = args[key] if isinstance(key, int) else kwargs[key]
        raise ValueError(
            f"{use}: data_batch_size={size} cuts every tensor argument of {n} rows along dim "
            f"0, and {label} (shape {list(value.shape)}) does not hold datapoints: given whole "
            f"beside the slice of rows {start}:{stop} of the others, the pair scores the same "
            "datapoints with other weights, so each slice would be scored under another "
            "model (a setting such as a mixture's component means, of as many rows as the "
            "data by chance). Pass it to the pair another way (model=lambda x: model(x, "
            "setting), or inside a list or dict, which is not cut), or call without "
            "data_batch_size")


@leaves_buffers
def elbo(model: Callable, guide: Callable, *args, num_samples: int = 1,
         chunk_size: int | None = None, compile: bool | str = False, progress: bool = True,
         **kwargs) -> torch.Tensor:
    """Monte Carlo ELBO ``mean_k log w_k`` per datapoint; a draw of weight zero (``log p(x, z)
    = -inf``, e.g. rounded onto the end of a support) makes it ``-inf``, with a
    ``RuntimeWarning`` naming the datapoints.

    ``compile``: score the chunks through a compiled graph, as in
    :func:`inference.log_importance_weights`. ``progress``: False hides the bar a call
    shows after a second.

    Returns:
        ``[batch]`` in nats; for a model that subsamples its ``"data"`` plate, the
        subsample's indices are the result's ``subsample`` attribute
        (:func:`inference.log_importance_weights`).
    """
    check_pair_call(elbo, kwargs, args, model=model, guide=guide)
    log_w, structure = log_weights_for("elbo", model, guide, args, kwargs, num_samples,
                                       chunk_size, compile, progress)
    _warn_zero_weights(log_w)
    return attach_subsample(wide_mean(log_w), structure)


def _warn_zero_weights(log_w: torch.Tensor) -> None:
    """Warn, naming the datapoints (columns of ``log_w: [K, batch]``), when a draw has
    weight zero: where the survey found the guide's support inside the model's, such a draw
    is one that rounding put on the end of a support, or a density that underflowed, and
    the ELBO is -inf where the exact one is finite."""
    zero = torch.isneginf(log_w).any(0)
    if bool(zero.any()):
        rows = zero.nonzero().flatten().tolist()
        warnings.warn(
            f"elbo: {int(torch.isneginf(log_w).sum())} of {log_w.numel()} draws have "
            f"log p(x, z) = -inf (datapoints {rows[:10]}{' ...' if len(rows) > 10 else ''}), "
            "so their ELBO is -inf. Where the guide's support lies inside the model's, a "
            "draw rounded onto the end of a support (a float32 tanh or sigmoid saturates to "
            "exactly 1 beyond |b| ~ 9) or a probability of exactly 0 or 1 "
            "(Bernoulli(probs=...): use logits=) makes it. Score in float64, or keep the "
            "guide off the end; iwae_bound gives such draws weight zero", RuntimeWarning,
            stacklevel=user_stacklevel())


@leaves_buffers
def iwae_bound(model: Callable, guide: Callable, *args, num_samples: int,
               chunk_size: int | None = None, compile: bool | str = False,
               progress: bool = True, **kwargs) -> torch.Tensor:
    """Importance-weighted bound ``log mean_k w_k`` per datapoint (Burda et al. 2015).

    All ``num_samples`` particles (over all chunks) score the same datapoints: an in-model
    subsample is drawn once, and its indices are the result's ``subsample`` attribute.
    ``compile``: score the chunks through a compiled graph, as in
    :func:`inference.log_importance_weights` (for K in the thousands on a CPU, once the
    graph is compiled, about 0.85 of the eager time: ``docs/performance.md``).
    ``progress``: False hides the bar a call shows after a second.

    Returns:
        ``[batch]`` in nats.
    """
    check_pair_call(iwae_bound, kwargs, args, model=model, guide=guide)
    log_w, structure = log_weights_for("iwae_bound", model, guide, args, kwargs, num_samples,
                                       chunk_size, compile, progress)
    return attach_subsample(log_mean_exp(log_w, 0), structure)


@leaves_buffers
def log_evidence(model: Callable, guide: Callable, x: torch.Tensor, *,
                 num_samples: int | None = None, batch_size: int = 256,
                 chunk_size: int | None = None, compile: bool | str = False,
                 progress: bool = True) -> torch.Tensor:
    """``log p(x)`` per datapoint in nats: IWAE_K with ``K = num_samples`` (a lower bound that
    tightens with K), exact at ``K = 1`` for a pair without sampled latents (fully observed,
    or every latent a discrete one the model sums out: ``config_enumerate``, empty guide).

    Args:
        x: ``[n, ...]``, scored ``batch_size`` datapoints at a time.
        num_samples: K. None (the default) is 1 for a pair without sampled latents, whose
            one weight is ``log p(x)``; a pair with latent sites to sample must name its K
            (``ValueError`` naming the sites otherwise: one weight would be a one-sample
            ELBO, noisy and biased low).
        compile: score through compiled graphs (:func:`inference.log_importance_weights`).
        progress: False hides the bar (weights drawn) a call shows after a second.

    Returns:
        ``[n]`` nats. Refused: a model that subsamples its own ``"data"`` plate, or whose
        datapoints do not lie along dim 0 of ``x`` (the rows scored would not be the rows of
        ``x`` in order).
    """
    check_pair_call(log_evidence, {}, model=model, guide=guide)
    for role, program in (("model", model), ("guide", guide)):
        check_positional_call(
            program, role, 1, "log_evidence(model, guide, x)",
            "score such a pair with iwae_bound(model, guide, <its arguments>, num_samples=K) "
            "(keywords such as x=x pass through), or bound_sweep(..., data_batch_size=...) "
            "for a large data set")
    if torch.is_tensor(x):
        check_dense(x, "x")  # (a nested tensor has no shape to read)
    else:
        check_data_arguments((x,))  # a DataLoader, a pandas object: named
        shape = getattr(x, "shape", None)
        raise TypeError(f"x must be a tensor [n, ...], got a {type(x).__name__}"
                        + (f" of shape {tuple(shape)}" if shape is not None else "")
                        + ": pass torch.as_tensor(x, dtype=torch.get_default_dtype())")
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"x must be a tensor [n, ...] with n >= 1, got shape {list(x.shape)}")
    batch_size = as_int(batch_size, "batch_size")
    default_k = num_samples is None
    num_samples, chunk_size = check_num_samples(1 if default_k else num_samples, chunk_size)
    check_compile(compile, model, guide, (x,))
    check_progress(progress)
    check_finite_inputs((x,), {})
    sliced = f"x (shape {list(x.shape)})"
    remedy = ("call iwae_bound, whose result says which datapoints it scored "
              "(result.subsample), or pass x with one datapoint per row")
    _check_rows_are_datapoints(model, guide, (x,), {}, x.shape[0], batch_size, "log_evidence",
                               sliced, remedy, argument="batch_size")
    itemsize = weight_itemsize((x,), {})
    out, first = [], None
    with torch.no_grad(), progress_bar(num_samples * x.shape[0], "log_evidence", progress,
                                       "weights") as bar:
        for i in range(0, x.shape[0], batch_size):
            part = x[i:i + batch_size]
            fixed_model, fixed_guide, structure = checked_pair(model, guide, (part,), {},
                                                               "log_evidence", first)
            first = first or structure
            _check_rows_scored(structure, part.shape[0], "log_evidence", sliced, remedy)
            sampled = [name for name in structure.model_latents
                       if name not in structure.model_enumerated]
            if default_k and sampled:
                raise ValueError(
                    f"log_evidence: the pair has latent site(s) "
                    f"{', '.join(map(repr, sampled))}, so its log p(x) is "
                    "estimated by IWAE_K, a lower bound that tightens with K: pass "
                    "num_samples=K (e.g. 1000; bound_sweep shows how the bound moves with K). "
                    "num_samples defaults to 1 only for a pair without sampled latents "
                    "(fully observed, or every latent summed out by the model's "
                    "enumeration), whose one weight is exact")
            check_weights_memory(num_samples, structure.batch_size, itemsize)
            weights = checked_log_weights(fixed_model, fixed_guide, (part,), {}, num_samples,
                                          chunk_size, structure, compile, bar=bar, first_row=i)
            out.append(log_mean_exp(weights, 0))
    return torch.cat(out)


def iwae_from_weights(log_w: torch.Tensor, k: int) -> torch.Tensor:
    """Average IWAE_k over the disjoint groups of ``k`` particles in ``log_w``.

    Each group gives an unbiased estimate of ``E[IWAE_k]``; averaging them lowers the variance.
    The ``K mod k`` weights after the last whole group take no part (an unbiased estimate
    needs groups of exactly ``k``).

    Args:
        log_w: ``[K, batch]`` log weights with ``K >= k``; NaN and ``+inf`` are refused,
            naming the datapoints (columns); ``-inf`` is weight zero.

    Returns:
        ``[batch]`` in nats.
    """
    k = as_int(k, "k")
    if not torch.is_tensor(log_w) or log_w.dim() != 2:
        raise ValueError(f"log_w must be a [K, batch] tensor, got "
                         f"{list(log_w.shape) if torch.is_tensor(log_w) else type(log_w).__name__}")
    if not log_w.is_floating_point():
        raise TypeError(f"log_w must be a real floating-point tensor, got dtype {log_w.dtype}")
    check_dense_values(log_w, "log_w")
    groups = log_w.shape[0] // k
    if groups < 1:
        raise ValueError(f"need at least k={k} weights, got {log_w.shape[0]}")
    check_log_weights(log_w.detach(), "log_w")
    blocks = log_w[: groups * k].reshape(groups, k, -1)
    # each group's bound divided before the sum: near the dtype's largest value the sum
    # itself overflows (float32 weights of 3e38 averaged to inf)
    return (log_mean_exp(blocks, 1) / groups).sum(0)


@dataclass
class BoundTable:
    """Mean over datapoints, then mean and standard error over repeats, of each bound (nats).

    ``rows`` holds dicts with keys ``bound`` ("elbo" or "iwae"), ``num_samples``, ``mean``,
    ``stderr`` (NaN for a single repeat: no spread to measure); ``per_repeat`` the raw
    dataset means, one list per row; ``subsample`` the ``[B]`` indices of the datapoints
    scored when the model subsamples its ``"data"`` plate (one subsample for all repeats and
    K), else None.
    """

    rows: list[dict] = field(default_factory=list)
    per_repeat: list[list[float]] = field(default_factory=list)
    subsample: torch.Tensor | None = None

    def iwae(self) -> dict[str, float]:
        """``{"K": mean}`` for the IWAE rows, keys as strings (JSON-ready)."""
        return {str(r["num_samples"]): r["mean"] for r in self.rows if r["bound"] == "iwae"}

    def elbo(self) -> float:
        """The ELBO row's mean; ``ValueError`` for a table without one (an empty table)."""
        found = [r["mean"] for r in self.rows if r["bound"] == "elbo"]
        if not found:
            raise ValueError("this BoundTable has no ELBO row (bound_sweep fills one in)")
        return found[0]

    def to_dict(self) -> dict:
        """``{"rows": [...]}`` for strict JSON: a NaN or infinite number (the standard error of
        one repeat) is None."""
        return {"rows": [{key: None if isinstance(value, float) and not math.isfinite(value)
                          else value for key, value in row.items()} for row in self.rows]}

    def __str__(self) -> str:
        lines = [f"{'bound':<12}{'mean (nats)':>14}{'std. error':>12}"]
        for r in self.rows:
            name = "ELBO" if r["bound"] == "elbo" else f"IWAE_{r['num_samples']}"
            lines.append(f"{name:<12}{r['mean']:>14.4f}{r['stderr']:>12.4f}")
        return "\n".join(lines)


MAX_REPEATS = 10 ** 6  # repeats of a sweep: each draws max(num_samples) weights per datapoint


def _data_rows(args: tuple, kwargs: dict) -> int:
    """The one length of dim 0 of the tensor arguments, positional and keyword, that
    ``data_batch_size`` cuts; ``ValueError`` naming their shapes when there is none or they
    differ."""
    shapes = [(f"argument {i}", a) for i, a in enumerate(args)] + [
        (f"keyword argument '{k}'", v) for k, v in kwargs.items()]
    shapes = [(name, list(v.shape)) for name, v in shapes if torch.is_tensor(v) and v.dim()]
    lengths = {shape[0] for _, shape in shapes}
    if len(lengths) != 1:
        found = ", ".join(f"{name} {shape}" for name, shape in shapes) or "none"
        raise ValueError(
            "data_batch_size cuts every tensor argument along dim 0, so they must share its "
            f"length (tensors inside lists, tuples or dicts are not cut); tensor arguments: "
            f"{found}. Call without data_batch_size")
    return lengths.pop()


def _sweep(slices: list, ks: list[int], repeats: int, chunk_size: int | None, compile,
           per_repeat: list[list[float]], bar) -> None:
    """Append to ``per_repeat[0]`` the ELBO and to ``per_repeat[i + 1]`` IWAE_``ks[i]`` of each
    repeat, averaged over the datapoints of all ``slices`` (``(args, kwargs, model, guide,
    structure)`` of a checked pair): ``max(ks)`` particles per datapoint a repeat."""
    for _ in range(repeats):
        sums = [0.0] * (len(ks) + 1)
        count = 0
        for part_args, part_kwargs, fixed_model, fixed_guide, structure in slices:
            log_w = checked_log_weights(fixed_model, fixed_guide, part_args, part_kwargs,
                                        ks[-1], chunk_size, structure, compile, bar=bar,
                                        first_row=count)
            count += log_w.shape[1]
            sums[0] += float(wide_mean(log_w).double().sum())
            for i, k in enumerate(ks):
                sums[i + 1] += float(iwae_from_weights(log_w, k).sum())
        for i, total in enumerate(sums):
            per_repeat[i].append(total / count)


@leaves_buffers
def bound_sweep(model: Callable, guide: Callable, *args,
                num_samples: Sequence[int] = (1, 10, 100, 1000, 5000), repeats: int = 3,
                chunk_size: int | None = 500, data_batch_size: int | None = None,
                compile: bool | str = False, progress: bool = True, **kwargs) -> BoundTable:
    """Table of ELBO and IWAE_K for several K, averaged over the datapoints.

    Each repeat draws ``max(num_samples)`` particles per datapoint; IWAE_K for smaller K
    averages over disjoint groups of those particles, and the ELBO is the mean log weight.
    ``num_samples``: the Ks, any sequence or iterable of positive integers (a 1-D integer
    array or tensor too). ``data_batch_size`` cuts every tensor argument, positional or
    keyword, ``[n, ...]`` into slices of that many rows along dim 0, so that large test sets
    are evaluated a slice at a time; each row must be one datapoint of the ``"data"`` plate,
    else the call is refused (an inner ``"data"`` plate: call without it). ``compile``: score
    through compiled graphs (:func:`inference.log_importance_weights`). ``progress``: False
    hides the bar (weights drawn, over all repeats and slices) a call shows after a second.

    Returns:
        a :class:`BoundTable`; standard errors come from the spread over ``repeats`` (NaN for
        ``repeats=1``), with ``repeats - 1`` degrees of freedom: a 95% interval is ``mean +-
        t * stderr`` with Student's ``t`` = 4.30 for the default 3 repeats, 2.26 for 10
        (1.96 holds only for many; ``mean +- 1.96 stderr`` covered 78-82% at 3 repeats).
        A model that subsamples its own ``"data"`` plate is scored on one subsample for every
        repeat and K (``BoundTable.subsample``); it cannot be combined with
        ``data_batch_size``.
    """
    check_pair_call(bound_sweep, kwargs, args, model=model, guide=guide)
    ks = sorted(set(as_int_list(num_samples, "num_samples")))
    chunk_size = None if chunk_size is None else as_int(chunk_size, "chunk_size")
    repeats = as_int(repeats, "repeats")
    check_at_most(repeats, "repeats", MAX_REPEATS, "each repeat draws max(num_samples) "
                  "particles per datapoint anew, so such a sweep would not end")
    check_compile(compile, model, guide, args, kwargs)
    check_progress(progress)
    check_data(args, kwargs)
    if data_batch_size is None:
        parts = [(args, kwargs, None)]
    else:
        data_batch_size = as_int(data_batch_size, "data_batch_size")
        n = _data_rows(args, kwargs)
        parts = [(*cut_rows(args, kwargs, start, start + data_batch_size),
                  min(data_batch_size, n - start)) for start in range(0, n, data_batch_size)]
        sliced = "the tensor arguments (" + ", ".join(
            str(list(v.shape)) for v in (*args, *kwargs.values())
            if torch.is_tensor(v) and v.dim()) + ")"
        remedy = "call without data_batch_size"
        _check_rows_are_datapoints(model, guide, args, kwargs, n, data_batch_size,
                                   "bound_sweep", sliced, remedy)
        _check_cut_tensors_hold_data(model, guide, args, kwargs, n, data_batch_size,
                                     "bound_sweep")
    slices = []
    for part_args, part_kwargs, rows in parts:
        fixed_model, fixed_guide, structure = checked_pair(
            model, guide, part_args, part_kwargs, "bound_sweep",
            slices[0][-1] if slices else None)
        if rows is not None:
            _check_rows_scored(structure, rows, "bound_sweep", sliced, remedy, part_args,
                               part_kwargs)
        slices.append((part_args, part_kwargs, fixed_model, fixed_guide, structure))
    check_weights_memory(ks[-1], max(s.batch_size for *_, s in slices),
                         weight_itemsize(args, kwargs))
    per_repeat = [[] for _ in range(len(ks) + 1)]
    total = repeats * ks[-1] * sum(s.batch_size for *_, s in slices)
    with progress_bar(total, "bound_sweep", progress, "weights") as bar:
        _sweep(slices, ks, repeats, chunk_size, compile, per_repeat, bar)
    subsamples = [structure.data_subsample for *_, structure in slices]
    table = BoundTable(per_repeat=per_repeat,  # a given subsample: every slice's, in order
                       subsample=None if subsamples[0] is None else torch.cat(subsamples))
    for (bound, k), values in zip([("elbo", 1)] + [("iwae", k) for k in ks], per_repeat):
        mean = sum(values) / repeats
        stderr = math.nan
        if repeats > 1 and not math.isfinite(mean):
            # an ELBO of -inf (a guide reaching beyond the model's support): no spread when
            # every repeat gave it, unbounded when only some did (not the NaN of inf - inf)
            stderr = 0.0 if all(v == values[0] for v in values) else math.inf
        elif repeats > 1:
            stderr = math.sqrt(sum((v - mean) ** 2 for v in values) / (repeats - 1) / repeats)
        table.rows.append({"bound": bound, "num_samples": k, "mean": mean, "stderr": stderr})
    return table
