"""Per-datapoint log importance weights of a Pyro model/guide pair.

Everything in :mod:`inference` that estimates evidence starts here. A model/guide pair
qualifies when its per-datapoint dimension is a ``pyro.plate`` named ``"data"`` and every
sample site lies inside that plate (:func:`inference.joint_log_evidence`, one value for all
the data, also takes global latents); other plates and event dimensions are summed.

Discrete latents the model marks for enumeration and the guide does not sample are summed
out of ``log p(x, z)`` (:mod:`inference.enumeration`).

The weights are computed from *unscaled* log densities: a subsampled ``"data"`` plate
(``size=N`` with a minibatch) or the scaling :func:`inference.fit` applies never leaks into
them, unlike ``pyro.infer.RenyiELBO``, which mixes the scale into its log-sum-exp.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import weakref
from typing import Callable

import numpy
import pyro
import torch
from pyro.infer.util import is_validation_enabled

from .checks import (as_int, check_data_arguments, check_dense_values, check_nonempty_batch,
                     check_pair_call, check_weights_memory, drops_out, evaluation_mode,
                     leaves_buffers, physical_memory_bytes, tensors_in, validation_enabled)
from .compiling import (
    arguments_key,
    check_backend,
    compile_graph,
    handler_key,
    module_key,
    owning_module,
    tensor_leaves,
    trace_with_inputs,
)
from .densities import normal_log_density, plain_normal, summed_log_density
from .effect_guides import effect_messenger
from .enumeration import enumerated_log_density, enumerated_traces
from .progress import check_progress, progress_bar
from .random_state import forked_rng
from .reachable import kept_plate_caches, reachable_modules
from .supports import mask_outside_support
from .pair_check import (
    attach_subsample,
    DATA_PLATE,
    PARTICLE_PLATE,
    PER_DATAPOINT_USES,
    PairError,
    PairStructure,
    check_pair,
    check_sites_as_surveyed,
    data_frame,
    family,
    sample_sites,
    scored_elements,
    site_list,
    survey_pair,
    tensor_text,
    trace_pair,
)

def _scalar_scale(scale) -> float | None:
    """A site's scale as one float; None for a tensor scale whose entries differ."""
    if torch.is_tensor(scale):
        if scale.numel() and bool(scale.min() != scale.max()):
            return None
        return float(scale.reshape(-1)[0]) if scale.numel() else 1.0
    return float(scale)


class UniformScale:
    """The one scale that the sample sites of an importance-weighted objective share.

    The per-datapoint IWAE bound is ``log mean_k w_k`` of *unscaled* densities, times the
    data plate's ``N / batch_size`` (a subsample, or :func:`inference.fit`'s minibatch): a
    site-specific factor (``poutine.scale`` on one site, per-datapoint weights,
    :class:`inference.scale_latents`' KL warm-up) has no place in that bound, and is refused
    naming the site rather than ignored. :meth:`add` each site in turn; :attr:`value` is the
    shared factor (1.0 when no site was added).
    """

    def __init__(self, use: str):
        self.use, self.value, self._first = use, None, None

    def add(self, site) -> None:
        scale = _scalar_scale(site["scale"])
        if scale is not None and self.value is None:
            self.value, self._first = scale, site["name"]
        elif scale is None or not math.isclose(scale, self.value, rel_tol=1e-6):
            found = ("a tensor of differing entries (per-datapoint weights)" if scale is None
                     else f"{scale:g}, site '{self._first}' {self.value:g}")
            raise ValueError(
                f"{self.use}: site '{site['name']}' carries scale {found}; the "
                "importance-weighted bound takes one factor for all sites (the data plate's "
                "N / batch), so a poutine.scale on some sites, per-datapoint weights or "
                "kl_warmup_epochs (which scales the latent sites) cannot enter it: use "
                "loss='elbo' or 'meanfield' for those")

    @property
    def factor(self) -> float:
        return 1.0 if self.value is None else self.value


def uniform_scale(model_trace, guide_trace, use: str) -> float:
    """:class:`UniformScale` of the ``"data"``-plate sample sites of both traces (model sites
    and the guide's latent sites)."""
    shared = UniformScale(use)
    for trace, observed in ((model_trace, None), (guide_trace, False)):
        for site in sample_sites(trace, observed=observed):
            if data_frame(site) is not None:
                shared.add(site)
    return shared.factor


def check_finite_inputs(args, kwargs) -> None:
    """Raise ``ValueError`` naming the first tensor argument with NaN or infinite entries
    (also inside a list, tuple or dict: ``argument 1['shift'][0]``), and ``TypeError`` for a
    numpy array, a complex tensor, or for data that holds no tensor at all but a list, tuple
    or string (Pyro's distributions score tensors: :func:`checks.check_data_arguments`)."""
    check_data_arguments(args, kwargs)
    named = [(f"argument {i}", a) for i, a in enumerate(args)] + [
        (f"keyword argument '{k}'", v) for k, v in kwargs.items()
    ]
    for name, value in named:
        if isinstance(value, numpy.ndarray) and value.ndim:
            raise TypeError(f"{name} is a numpy array (shape {value.shape}); pass a tensor: "
                            "torch.as_tensor(array, dtype=torch.get_default_dtype())")
        for path, tensor in tensors_in(value, name):
            if tensor.is_complex():  # no distribution scores them
                raise TypeError(f"{path} has dtype {tensor.dtype}: the models score real "
                                "data; pass its real part, or real and imaginary parts as two "
                                "channels")
            if tensor.is_floating_point():
                bad = ~torch.isfinite(tensor)
                if bad.any():
                    raise ValueError(
                        f"{path} (shape {tuple(tensor.shape)}) contains {int(bad.sum())} NaN "
                        "or infinite entries: clean the data; for missing values the model "
                        "masks out (poutine.mask, obs_mask), fill them with any finite number "
                        "(x.nan_to_num()) and keep the mask")


def weight_itemsize(args: tuple, kwargs: dict) -> int:
    """Bytes per log weight: the widest of the default dtype and the floating tensor
    arguments' dtypes."""
    return max([torch.get_default_dtype().itemsize] + [
        v.dtype.itemsize for v in (*args, *kwargs.values())
        if torch.is_tensor(v) and v.is_floating_point()])


def plate_dims(log_p: torch.Tensor, site, nesting: int) -> torch.Tensor | None:
    """A site's elementwise log density with its mask applied (``poutine.mask``,
    ``obs_mask``: zero where masked out) and exactly ``nesting`` batch dims (particles
    leftmost, dims of size 1 added on the left or squeezed); None for a site masked out
    whole (``mask=False``). ``ValueError`` naming the site when it has more batch dims than
    its plates declare."""
    mask = site["mask"]
    if mask is False:
        return None
    if torch.is_tensor(mask):
        log_p = torch.where(mask, log_p, log_p.new_zeros(()))
    while log_p.dim() > nesting and log_p.shape[0] == 1:  # leading dims of size 1
        log_p = log_p.squeeze(0)
    if log_p.dim() > nesting:
        raise ValueError(
            f"site '{site['name']}' has log_prob shape {tuple(log_p.shape)} with more batch "
            "dims than its plates declare; use .to_event() for event dimensions"
        )
    return log_p.reshape((1,) * (nesting - log_p.dim()) + log_p.shape)


def per_datapoint(log_p: torch.Tensor, site, nesting: int, batch_size: int) -> torch.Tensor:
    """Sum a site's log density over everything but particles and datapoints.

    Args:
        log_p: unscaled log density with batch shape broadcastable to the plate dims.
        nesting: number of plate dims including the particle dim (particles leftmost).

    Returns:
        ``[particles or 1, batch_size]``.
    """
    shaped = plate_dims(log_p, site, nesting)
    if shaped is None:
        return log_p.new_zeros(1, batch_size)
    log_p = shaped
    data_dim = nesting + data_frame(site).dim
    log_p = log_p.movedim(data_dim, 1)
    if log_p.dim() > 2:
        log_p = log_p.flatten(2).sum(-1)
    return log_p


def vectorized_traces(model, guide, args, kwargs, num_particles: int, nesting: int):
    """Model and guide traces with ``num_particles`` drawn inside a leftmost plate."""

    def vectorized(fn):
        def run(*a, **k):
            with pyro.plate(PARTICLE_PLATE, num_particles, dim=-nesting):
                return fn(*a, **k)

        return run

    return trace_pair(vectorized(model), vectorized(guide), args, kwargs)


def trace_log_density(trace, structure: PairStructure, observed: bool | None = None,
                      transform=None, reduce=None) -> torch.Tensor:
    """Unscaled log density of a vectorized trace, per particle and datapoint.

    Args:
        observed: score only observed (True) or only latent (False, the guide's view)
            sites; None scores all.
        transform: optional map applied to each site's distribution before scoring
            (e.g. detaching its parameters).
        reduce: ``reduce(log_p, site, nesting)``, how each site's elementwise log density
            is summed (``nesting``: its plate dims with the particles'); None:
            :func:`per_datapoint`, to ``[particles or 1, batch]``.

    Returns:
        ``[num_particles or 1, batch]`` (broadcastable to ``[num_particles, batch]``; with
        ``reduce``, the shape it gives), or 0.0 when no site qualifies. Where a latent's
        value lies outside its support the total is ``-inf``, whatever the other sites say.
    """
    nesting = structure.max_plate_nesting + 1
    lean = not is_validation_enabled()  # else log_prob, with its checks of the value
    total = 0.0  # stays a float for a trace without such sites (an empty guide)
    impossible = None  # [particles or 1, batch]: a latent where its density is zero
    for site in sample_sites(trace, observed):
        if site["name"] in structure.model_enumerated:
            raise PairError(f"trace_log_density: site '{site['name']}' is a latent the "
                            "model enumerates, and this trace holds a sampled value of it: "
                            "score the pair with particle_log_weights, which sums it out")
        fn = transform(site["fn"]) if transform else site["fn"]
        lean_site = lean and not site["args"] and not site["kwargs"]
        normal, event_dims = plain_normal(fn) if lean_site else (None, 0)
        if normal is not None:
            log_p = normal_log_density(normal, site["value"], event_dims)
        else:
            log_p = summed_log_density(fn, site["value"]) if lean_site else None
            if log_p is None:
                log_p = fn.log_prob(site["value"], *site["args"], **site["kwargs"])
            # the survey checked the observed values, but for a support that moves with the
            # draw (x ~ Uniform(0, z)), outside which a value has density zero
            if not site["is_observed"] or site["name"] in structure.dependent_support:
                log_p = mask_outside_support(fn, site["value"], log_p, scored_elements(site))
        term = (per_datapoint(log_p, site, nesting, structure.batch_size) if reduce is None
                else reduce(log_p, site, nesting))
        if not site["is_observed"]:
            zero = torch.isneginf(term)
            impossible = zero if impossible is None else impossible | zero
        total = total + term
    if impossible is not None and torch.is_tensor(total):
        # density zero whatever the later sites say: a guide's draw outside the model's
        # support (a negative scale) makes the sites that use it NaN, and NaN + -inf is NaN.
        # On the real line too: a Gumbel's exp(-z - exp(-z)) is 0 in floats below z = -88,
        # where the likelihood that reads exp(-z) is NaN, and a draw of 1e20 under a
        # Normal (parameters a diverged step left huge) has a density below exp(-1e40):
        # weight zero either way, as no likelihood of the data makes up for it
        total = torch.where(impossible, total.new_tensor(-math.inf), total)
    return total


def vectorized_log_weights(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    num_particles: int,
    structure: PairStructure,
) -> torch.Tensor:
    """Differentiable ``log p(x, z) - log q(z | x)`` for one vectorized draw of particles
    (``log sum_a p(x, a, z)`` for the model's enumerated latents ``a``).

    Returns:
        ``[num_particles, batch]``; gradients flow to model and guide parameters and, through
        reparameterized samples, along the sampling path.
    """
    if structure.model_enumerated:
        model_trace, guide_trace = enumerated_traces(model, guide, args, kwargs, num_particles,
                                                     structure)
    else:
        model_trace, guide_trace = vectorized_traces(
            model, guide, args, kwargs, num_particles, structure.max_plate_nesting + 1
        )
    check_sites_as_surveyed(model_trace, guide_trace, structure.site_names)
    log_w = (_model_log_density(model_trace, structure)
             - trace_log_density(guide_trace, structure, observed=False))
    return log_w.expand(num_particles, structure.batch_size)


def check_num_samples(num_samples, chunk_size) -> tuple[int, int | None]:
    """Both as Python ints (numpy integers accepted; ``chunk_size`` may be None); raise
    ``ValueError`` naming the one that is not a positive integer (a bool or 2.5 is not)."""
    return (as_int(num_samples, "num_samples"),
            None if chunk_size is None else as_int(chunk_size, "chunk_size"))


def _unvectorized_traces(model, guide, args, kwargs, structure: PairStructure):
    """``(model_trace, guide_trace)`` of one unvectorized pass, the model's enumerated latents
    enumerated (:func:`inference.enumeration.enumerated_traces`) when it has any."""
    if structure.model_enumerated:
        return enumerated_traces(model, guide, args, kwargs, None, structure)
    return trace_pair(model, guide, args, kwargs)


def _model_log_density(model_trace, structure: PairStructure):
    """``log p(x, z)`` of a model trace, its enumerated latents summed out when it has any."""
    if structure.model_enumerated:
        return enumerated_log_density(model_trace, structure)
    return trace_log_density(model_trace, structure)


def particle_log_weights(model: Callable, guide: Callable, args: tuple, kwargs: dict,
                         num_particles: int, structure: PairStructure) -> torch.Tensor:
    """``log p(x, z) - log q(z | x)`` ``[num_particles, batch]`` for a surveyed pair, the
    model's enumerated latents summed out (:mod:`inference.enumeration`).

    Vectorized (:func:`vectorized_log_weights`) when the survey found that the pair
    broadcasts over a leading particle dim, else one unvectorized pass per particle.
    Gradients flow as in :func:`vectorized_log_weights`.
    """
    if structure.vectorizable:
        return vectorized_log_weights(model, guide, args, kwargs, num_particles, structure)
    rows = []
    for _ in range(num_particles):
        model_trace, guide_trace = _unvectorized_traces(model, guide, args, kwargs, structure)
        check_sites_as_surveyed(model_trace, guide_trace, structure.site_names)
        log_w = (_model_log_density(model_trace, structure)
                 - trace_log_density(guide_trace, structure, observed=False))
        rows.append(log_w.expand(1, structure.batch_size))
    return torch.cat(rows)


def checked_pair(model: Callable, guide: Callable, args: tuple, kwargs: dict, use: str,
                 reference: PairStructure | None = None):
    """Survey and check a pair for entry point ``use`` (:func:`inference.pair_check.check_pair`;
    for a per-datapoint estimator also :func:`check_rows_independent`).

    ``reference``: the structure this returned for other rows of the same data in the same
    call; a slice whose run traces the same program path takes from it what the survey's
    further runs reveal (``survey_pair``'s ``reference``); the rows' values, and whether the
    rows depend on each other, are judged anew.

    Returns:
        ``(model, guide, structure)`` with model and guide replaying the subsample the survey
        drew (when the model subsamples its own plates), so that every later pass of one call
        scores the same datapoints.
    """
    structure = check_pair(survey_pair(model, guide, args, kwargs, reference=reference), use)
    model, guide = structure.fix_subsample(model), structure.fix_subsample(guide)
    # on a reference's slice too: whether rows depend on each other can turn on their values
    # (a branch on the batch's largest value)
    if structure.model_enumerated:
        _check_enumerated_pass(model, guide, args, kwargs, structure, use)
    if use in PER_DATAPOINT_USES:
        check_rows_independent(model, guide, args, kwargs, structure, use)
    return model, guide, structure


def _check_enumerated_pass(model, guide, args, kwargs, structure: PairStructure,
                           use: str) -> None:
    """Run one pass of 2 particles with the model's enumerated sites enumerated (random state
    restored, effects hidden, without Pyro's validation, as the passes that follow run: a
    guide's draw outside the model's support has weight zero there); a failure raises
    ``PairError`` naming the sites."""
    particles = 2 if structure.vectorizable else None
    with forked_rng(), torch.no_grad(), pyro.poutine.block(), validation_enabled(False):
        guide_trace = pyro.poutine.trace(guide).get_trace(*args, **kwargs)
        drawn = pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs)
    infinite = [f"'{name}' ({family(drawn.nodes[name]['fn'])})"
                for name in structure.model_enumerated if name in drawn.nodes
                and not getattr(drawn.nodes[name]["fn"], "has_enumerate_support", False)]
    sampled = [f"'{name}' (num_samples={drawn.nodes[name]['infer']['num_samples']})"
               for name in structure.model_enumerated if name in drawn.nodes
               and drawn.nodes[name]["infer"].get("num_samples")]
    if sampled:
        raise PairError(
            f"{use}: the model marks {', '.join(sampled)} for Pyro's Monte Carlo enumeration, "
            "which draws some of the values instead of summing all of them: the estimators "
            "sum a marked site exactly or sample it in the guide. Drop num_samples from its "
            "infer dict (exact enumeration), or sample the site in the guide")
    if infinite:
        raise PairError(
            f"{use}: the model marks {', '.join(infinite)} for enumeration, but its "
            "distribution has no finite support to sum over (a Poisson, Geometric or "
            "continuous latent): sample it in the guide instead, or truncate it to a "
            "Categorical over the values that matter")
    try:
        with forked_rng(), torch.no_grad(), pyro.poutine.block(), \
                validation_enabled(False):
            model_trace, _ = enumerated_traces(model, guide, args, kwargs, particles,
                                               structure)
            enumerated_log_density(model_trace, structure)
    except (ValueError, RuntimeError, IndexError, NotImplementedError) as error:
        raise PairError(
            f"{use}: the model fails with its enumerated site(s) "
            f"{site_list(structure.model_enumerated)} taking all their values along dims "
            "left of its plates (" + str(error).splitlines()[0][:300] + "). A model that "
            "enumerates must broadcast over those dims: index with pyro.ops.indexing.Vindex, "
            "never by position from the left (z[0], x.shape[0])") from error


def cut_rows(args: tuple, kwargs: dict, start: int, stop: int,
             length: int | None = None) -> tuple[tuple, dict]:
    """``args`` and ``kwargs`` with every tensor of at least one dim (of ``length`` rows
    along dim 0 when given) cut to rows ``start:stop`` of its dim 0 (other values, scalar
    tensors included, as they are)."""
    def cut(value):
        if torch.is_tensor(value) and value.dim() and length in (None, value.shape[0]):
            return value[start:stop]
        return value

    return tuple(cut(a) for a in args), {k: cut(v) for k, v in kwargs.items()}


def _rows_of(trace, index: torch.Tensor):
    """A copy of a guide's trace with each ``"data"``-plate latent taken at the datapoints
    ``index`` (``[rows]``, along the plate's dim of the value; a value broadcast along it is
    kept), without the plate's own indices."""
    taken = trace.copy()
    taken.nodes.pop(DATA_PLATE, None)
    for site in sample_sites(trace, observed=False):
        frame, value = data_frame(site), site["value"]
        if frame is None or not torch.is_tensor(value):
            continue
        dim = frame.dim - len(site["fn"].event_shape)
        if value.dim() >= -dim and value.shape[dim] > 1:
            taken.nodes[site["name"]] = dict(site, value=value.index_select(
                dim, index.to(value.device)))
    return taken


def _row_among_copies_error(model, guide, recorded, args: tuple, kwargs: dict,
                            structure: PairStructure, row: int, whole: torch.Tensor,
                            use: str, data: list[bool] | None = None) -> PairError | None:
    """The :class:`PairError` to raise when datapoint ``row``, scored in a batch of its own
    copies (every tensor argument of ``batch_size`` rows, or those ``data`` flags among
    ``(*args, *kwargs.values())``, and every ``"data"``-plate latent of the guide's trace
    ``recorded``, made of that row repeated: every row keeps its position), gets another
    model density than ``whole: [1, 1]``, its density in the batch; None when it gets the
    same, or when that batch fails. Row 0 for pairs that cannot score fewer rows than the
    batch's (a BatchNorm in training mode fails on one row); the last row for a density that
    reads the rows before it (a running sum over the data plate, ``z.cumsum(-1)``), which
    the first rows scored alone do not show. A density that reads a row's position is
    unchanged."""
    batch = structure.batch_size
    index = torch.full((batch,), row, dtype=torch.long)

    flags = [True] * (len(args) + len(kwargs)) if data is None else data

    def copied(value, flag):
        if flag and torch.is_tensor(value) and value.dim() and value.shape[0] == batch:
            return value.index_select(0, index.to(value.device))
        return value

    try:
        alone, _ = _replayed_model_density(
            model, guide, _rows_of(recorded, index), tuple(map(copied, args, flags)),
            {k: copied(v, f) for (k, v), f in zip(kwargs.items(), flags[len(args):])},
            structure)
    except Exception:  # noqa: BLE001 - nothing to compare
        return None
    alone = alone[:, row:row + 1]
    if torch.allclose(whole, alone, rtol=1e-4, atol=1e-4, equal_nan=True):
        return None
    which = "first datapoint" if row == 0 else f"last datapoint (row {row})"
    return PairError(
        f"{use}: the {which}, scored in a batch of {batch} copies of itself on the same draws "
        f"(every row at its position), gets log p(x, z) = {tensor_text(alone)} instead of "
        f"{tensor_text(whole)}: the model's density of one datapoint depends on the other "
        "datapoints (batch statistics: BatchNorm in training mode, call .eval(); "
        "standardizing with the batch's mean or std, x.mean(0); a running sum over the "
        "rows, z.cumsum(-1)), so every per-datapoint number would change with the batch it is "
        "scored in. Compute such statistics once on the whole data and pass them in, or "
        "score the whole data as one with joint_log_evidence"
        f"{_other_dims_hint((*args, *kwargs.values()), batch)}")


def check_rows_keep_density_when_moved(model: Callable, guide: Callable, args: tuple,
                                       kwargs: dict, structure: PairStructure, use: str,
                                       remedy: str, perturb: bool = False) -> None:
    """Raise :class:`PairError` when the first datapoint, scored at every position of a
    batch made of copies of it (every tensor argument of ``batch_size`` rows, and the
    guide's draws, taken at row 0), gets another model density than at position 0: the
    model reads a row's position in the batch (``t = torch.arange(len(x))``), which whole
    batches score as written but slices of the data move (a row scored at position 0 of
    its slice instead of its place in the data). For the entry points that cut or reorder
    the data (``remedy``: how to keep the rows in place); skipped for a batch of one, for
    subsamples, and for a model whose densities change between two runs on one batch
    (randomness outside ``pyro.sample``). With ``perturb`` (training, which moves the
    parameters), also at parameters moved slightly off their values (a trend whose slope
    starts at 0 reads the position only once it moves), which are put back exactly."""
    batch = structure.batch_size
    if batch < 2 or structure.data_subsample is not None:
        return
    index = torch.zeros(batch, dtype=torch.long)

    def copied(value):
        if torch.is_tensor(value) and value.dim() and value.shape[0] == batch:
            return value.index_select(0, index.to(value.device))
        return value

    modules = reachable_modules(model, guide)
    dropout = [sub for module in modules for sub in module.modules() if drops_out(sub)]
    copied_args = tuple(map(copied, args))
    copied_kwargs = {k: copied(v) for k, v in kwargs.items()}

    def densities(seed: int) -> torch.Tensor:  # [1, batch] on the copies, one set of draws
        with forked_rng(), torch.no_grad(), pyro.poutine.block(), evaluation_mode(dropout), \
                validation_enabled(False), kept_plate_caches(modules):
            pyro.set_rng_seed(seed)  # (for randomness outside pyro.sample)
            return _replayed_model_density(model, guide, copies, copied_args, copied_kwargs,
                                           structure)[0]

    try:
        with forked_rng(), torch.no_grad(), pyro.poutine.block(), evaluation_mode(dropout), \
                validation_enabled(False), kept_plate_caches(modules):
            copies = _rows_of(pyro.poutine.trace(guide).get_trace(*args, **kwargs), index)
        density = densities(0)
        if not torch.allclose(density, densities(1), rtol=1e-4, atol=1e-4, equal_nan=True):
            return  # randomness the pair does not record: positions cannot be compared
        where = ""
        if _same_at_every_position(density) and perturb:
            with _parameters_moved(modules):
                density, where = densities(0), " at parameters moved slightly off their values"
    except Exception:  # noqa: BLE001 - a pair that cannot score copies: nothing to compare
        return
    if _same_at_every_position(density):
        return
    moved = int((density - density[:, :1]).abs().nan_to_num(math.inf).argmax())
    raise PairError(
        f"{use}: the first datapoint, scored at position {moved} of a batch of copies of "
        f"itself on the same draws{where}, gets log p(x, z) = "
        f"{float(density[0, moved]):.6g} instead of {float(density[0, 0]):.6g} at "
        "position 0: the model's density reads a row's position in the batch (e.g. t = "
        "torch.arange(len(x))), and cutting or reordering the data moves rows to other "
        f"positions. Pass the positions in as data (a tensor of n rows, cut with x), or {remedy}")


def _same_at_every_position(density: torch.Tensor) -> bool:
    """Whether ``density: [1, batch]`` is position 0's at every position, up to 1e-4."""
    return torch.allclose(density, density[:, :1].expand_as(density), rtol=1e-4, atol=1e-4,
                          equal_nan=True)


@contextlib.contextmanager
def _parameters_moved(modules):
    """The parameters (Pyro's store, unconstrained, and the networks') each moved by a tenth
    of its typical size (0.1 at least) in a fixed random direction, and put back exactly."""
    leaves = [p for _, p in pyro.get_param_store().named_parameters()]
    leaves += [p for module in modules for p in module.parameters()]
    leaves = [p for p in {id(p): p for p in leaves}.values()
              if p.is_floating_point() and p.numel()]
    saved = [p.detach().clone() for p in leaves]
    generator = torch.Generator().manual_seed(0)
    try:
        with torch.no_grad():
            for p in leaves:
                size = float(p.detach().abs().mean()) + 0.1
                p.add_(torch.randn(p.shape, generator=generator).to(p) * (0.1 * size))
        yield
    finally:
        with torch.no_grad():
            for p, value in zip(leaves, saved):
                p.copy_(value)


def _replayed_model_density(model, guide, recorded, args, kwargs, structure) -> tuple:
    """``(log p(x, z) [1, batch], site names)`` of one pass: the guide replayed on
    ``recorded`` (its trace), the model on the guide's draws; the names as
    :attr:`PairStructure.site_names`."""
    model_trace, guide_trace = _unvectorized_traces(
        model, pyro.poutine.replay(guide, trace=recorded), args, kwargs, structure)
    names = (frozenset(s["name"] for s in sample_sites(model_trace)),
             frozenset(s["name"] for s in sample_sites(guide_trace, observed=False)))
    log_p = torch.as_tensor(_model_log_density(model_trace, structure))
    return log_p.expand(1, structure.batch_size), names


# Batch-sized arguments up to which the rows check tries every set of them to cut (2**n - 1
# runs of two rows); beyond, each left whole and each cut alone.
MAX_CUT_TRIALS_FROM = 4


def check_rows_independent(model: Callable, guide: Callable, args: tuple, kwargs: dict,
                           structure: PairStructure, use: str) -> None:
    """Raise :class:`PairError` when the first datapoints of the batch (two, one for a batch
    of two), scored alone (the tensor arguments of ``batch_size`` rows cut to them, the
    guide's draws for them replayed), get another model density ``log p(x_i, z_i)`` than in
    the whole batch, beyond float rounding: a model whose density of one datapoint depends
    on the others (batch statistics, control flow on the batch's values) makes every
    per-datapoint number depend on the batch it was scored in. (A guide that depends on the
    batch only proposes differently: its weights still estimate log p(x_i).) One pass of
    the whole batch and one of the cut rows, random state restored, dropout layers in
    evaluation mode (training-mode dropout is warned about by
    :func:`inference.checks.check_pair_call`). Skipped for a batch of one, a subsample the
    model draws, and arguments without ``batch_size`` rows."""
    batch = structure.batch_size
    if batch < 2 or structure.data_subsample is not None:
        return
    rows = 2 if batch > 2 else 1
    cut_args, cut_kwargs = cut_rows(args, kwargs, 0, rows, length=batch)
    if all(a is b for a, b in zip((*args, *kwargs.values()),
                                  (*cut_args, *cut_kwargs.values()))):
        return  # the data do not come in as arguments of batch_size rows
    modules = reachable_modules(model, guide)
    dropout = [sub for module in modules for sub in module.modules() if drops_out(sub)]
    given = (*args, *kwargs.values())
    cut = (*cut_args, *cut_kwargs.values())
    # a setting with as many rows as the batch (a mixture's component means, weights) is not
    # the data: the sets of tensors of batch_size rows to cut, all of them first; every set
    # for up to MAX_CUT_TRIALS_FROM tensors, else each left whole and each cut alone
    cut_keys = [k for k, (a, b) in enumerate(zip(given, cut)) if a is not b]
    if len(cut_keys) <= MAX_CUT_TRIALS_FROM:
        trials = [set(keys) for size in range(len(cut_keys), 0, -1)
                  for keys in itertools.combinations(cut_keys, size)]
    else:
        trials = ([set(cut_keys)] + [set(cut_keys) - {k} for k in cut_keys]
                  + [{k} for k in cut_keys])
    with forked_rng(), torch.no_grad(), pyro.poutine.block(), evaluation_mode(dropout), \
            validation_enabled(False), kept_plate_caches(modules):
        recorded = pyro.poutine.trace(guide).get_trace(*args, **kwargs)
        whole, names = _replayed_model_density(model, guide, recorded, args, kwargs, structure)
        last = whole[:, -1:]
        whole = whole[:, :rows]
        found = None  # what the first trial that ran found
        refusals = []  # the copies check's, for each trial whose cut rows scored alike
        for cut_now in trials:
            values = [b if k in cut_now else a for k, (a, b) in enumerate(zip(given, cut))]
            try:
                alone, cut_names = _replayed_model_density(
                    model, guide, _rows_of(recorded, torch.arange(rows)), tuple(values[:len(args)]),
                    dict(zip(kwargs, values[len(args):])),
                    dataclasses.replace(structure, batch_size=rows))
            except Exception:  # noqa: BLE001 - cut wrongly (a setting of batch_size rows
                continue  # cut with the data), or a pair that needs the whole batch
            # the cut rows may trace fewer sites (a loop to the batch's longest sequence,
            # pyro.markov(range(lengths.max())), whose steps past theirs the whole batch masks)
            fewer = cut_names[0] <= names[0] and cut_names[1] <= names[1]
            if fewer and torch.allclose(whole, alone, rtol=1e-4, atol=1e-4, equal_nan=True):
                # the arguments this trial cut are the data (or match them by chance, as
                # indices into a setting can): copied alike; one trial that holds suffices
                refusal = _row_among_copies_error(
                    model, guide, recorded, args, kwargs, structure, batch - 1, last, use,
                    [v is c and c is not g for v, c, g in zip(values, cut, given)])
                if refusal is None:
                    return
                refusals.append(refusal)
                continue
            if found is None:
                found = (f"trace the sites {sorted(cut_names[0] | cut_names[1])} instead "
                         f"of {sorted(names[0] | names[1])}" if cut_names != names else
                         f"get log p(x, z) = {tensor_text(alone)} instead of "
                         f"{tensor_text(whole)}")
        if refusals:
            raise refusals[0]
        if found is None:  # no trial ran (BatchNorm fails on one row): the batch's rows
            for row, density in ((0, whole[:, :1]), (batch - 1, last)):
                refusal = _row_among_copies_error(model, guide, recorded, args, kwargs,
                                                  structure, row, density, use)
                if refusal is not None:
                    raise refusal
            return
    raise PairError(
        f"{use}: the first {rows} datapoint(s), scored without the rest of the batch of "
        f"{batch} on the same draws, {found}: the model's density of one datapoint "
        "depends on the other datapoints (batch statistics: BatchNorm in training "
        "mode, call .eval(); standardizing with the batch's mean or std, x.mean(0); control "
        "flow on the batch's values, if x.sum() > 0; sites that depend on the batch size), "
        "so every per-datapoint number would change with the batch it is scored in. Compute "
        f"such statistics once on the whole data and pass them in{_other_dims_hint(given, batch)}")


def _other_dims_hint(given: tuple, batch: int) -> str:
    """A note for arguments with another dim of ``batch`` entries besides dim 0 (time-major
    ``[T, N]`` data with ``T == N``): the check cut dim 0, which may not be the data's."""
    square = [k for k, value in enumerate(given) if torch.is_tensor(value) and value.dim() > 1
              and value.shape[0] == batch and batch in value.shape[1:]]
    if not square:
        return ""
    return (f". (Arguments {square} (counting keywords after the positional ones) have "
            f"{batch} entries along dim 0 and along another dim: this check takes the "
            "datapoints along dim 0. Data laid out time-major, [T, N] with T equal to the "
            "batch, is cut wrongly here: pass it batch-first, [N, T], with the data plate "
            "on the datapoints' dim)")


def check_compile(compile, model: Callable | None = None, guide: Callable | None = None,
                  args: tuple = (), kwargs: dict | None = None) -> str | None:
    """The ``torch.compile`` backend asked for by an estimator's ``compile`` argument: False
    (None, eager), True (``"inductor"``) or a backend name (``"eager"`` replays the traced
    graph uncompiled); ``ValueError`` otherwise, or when a compiled path is asked for and
    ``model`` and ``guide`` (if given) are not methods of one ``nn.Module`` or the arguments
    hold values a trace cannot key (:func:`inference.compiling.arguments_key`)."""
    if compile is False or compile is None:
        return None
    if compile is True:
        backend = "inductor"
    elif isinstance(compile, str) and compile:
        check_backend(compile, "compile")
        backend = compile
    else:
        raise ValueError(f"compile must be True, False or a torch.compile backend name, "
                         f"got {compile!r}")
    messenger = effect_messenger(guide) if guide is not None else None
    if messenger is not None:
        raise ValueError(
            f"compile={compile!r}: the guide is a {type(messenger).__name__}, an effect-based "
            "guide that runs the model under itself; a compiled path traces methods of one "
            "module (a PyroModule's model and guide), so use the eager path (compile=False)")
    if model is not None:
        owning_module(model, guide, "compile=True")
    arguments_key(args, kwargs or {})
    return backend


# Compiled weight graphs of each module (dropped with it), keyed by what a trace bakes in.
_GRAPHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compiled_graph_count(module: torch.nn.Module) -> int:
    """How many compiled weight graphs ``module``'s pair holds (one per particle count,
    argument shapes and handler setting it was scored with)."""
    return len(_GRAPHS.get(module, {}))


def compiled_log_weights(model: Callable, guide: Callable, args: tuple, kwargs: dict,
                         num_particles: int, structure: PairStructure,
                         backend: str) -> torch.Tensor:
    """:func:`vectorized_log_weights` through a compiled graph (:mod:`inference.compiling`),
    without gradients: ``[num_particles, batch]``.

    One graph per pair, particle count, argument shapes, Pyro handler setting, backend and
    module state (:func:`inference.compiling.module_key`: its plain settings, and tensor
    attributes by identity and version), traced and compiled at its first use and kept for
    later calls while the module lives. A new graph is checked once against the eager weights on the
    same random draws; a difference beyond float rounding (the pair's control flow depends
    on tensor values, or it reads tensors its module does not hold, such as a global)
    raises ``ValueError`` instead of returning numbers that eager code would not give.
    """
    module = owning_module(model, guide, "compile=True")
    if structure.subsample or not structure.vectorizable:
        why = ("subsamples its own plates" if structure.subsample
               else "does not broadcast over a particle dimension")
        raise ValueError(f"compile=True: the pair {why}; call without compile")
    named = list(module.named_parameters()) + list(module.named_buffers())
    names, tensors = [n for n, _ in named], [t for _, t in named]
    key = (model.__func__, guide.__func__, num_particles, arguments_key(args, kwargs),
           handler_key(), module_key(module), backend)
    graphs = _GRAPHS.setdefault(module, {})
    graph = graphs.get(key)
    inputs = tensor_leaves(args, kwargs)
    if graph is not None:
        return graph(tensors, inputs)

    def weights(_, arguments, keywords):
        return vectorized_log_weights(model, guide, arguments, keywords, num_particles,
                                      structure)

    _check_params_owned(module, model, guide, args, kwargs)
    graph = compile_graph(trace_with_inputs(module, names, weights, tensors, args, kwargs),
                          backend)
    with forked_rng():  # the graph then draws the same particles
        eager = vectorized_log_weights(model, guide, args, kwargs, num_particles, structure)
    compiled = graph(tensors, inputs)
    gap, tolerance = gap_to_eager(compiled, eager)
    if not gap <= tolerance:
        raise ValueError(
            f"compile=True: the compiled log weights differ from the eager ones by {gap:.3g} "
            f"nats (tolerance {tolerance:.3g}) on the same draws: the trace froze something "
            f"that changes between calls ({type(module).__name__}'s pair uses numpy's or "
            "Python's random numbers, values read outside torch, tensors that are neither "
            "arguments nor its parameters or buffers, such as a global, or Python control "
            "flow that depends on tensor values); call without compile")
    graphs[key] = graph
    return compiled


def gap_to_eager(compiled, eager: torch.Tensor) -> tuple[float, float]:
    """Largest difference of a compiled graph's finite outputs from the eager ones on the same
    draws, and its tolerance (1e-3 relative to the largest); infinite when shapes or the
    infinite entries (draws outside the model's support) differ."""
    if not torch.is_tensor(compiled) or compiled.shape != eager.shape:
        return math.inf, 0.0
    finite = torch.isfinite(eager)
    if not (torch.equal(finite, torch.isfinite(compiled))
            and torch.equal(eager[~finite].nan_to_num(), compiled[~finite].nan_to_num())):
        return math.inf, 0.0
    if not finite.any():
        return 0.0, 1e-3
    return (float((compiled - eager)[finite].abs().max()),
            1e-3 * (1.0 + float(eager[finite].abs().max())))


def _check_params_owned(module, model, guide, args, kwargs) -> None:
    """``ValueError`` for a ``pyro.param`` of the pair that ``module`` does not own (a trace
    would freeze its current value)."""
    owned = {id(t) for t in list(module.parameters()) + list(module.buffers())}
    with forked_rng(), pyro.poutine.block():
        traces = trace_pair(model, guide, args, kwargs)
    for trace in traces:
        for site in trace.nodes.values():
            if site["type"] != "param":
                continue
            value = site["value"]
            leaf = value.unconstrained() if hasattr(value, "unconstrained") else value
            # pyro.module("decoder", self.decoder) passes the module's own parameter, which
            # the network computes with, whatever an older entry of the store holds
            registered = any(torch.is_tensor(a) and id(a) in owned for a in site["args"])
            if id(leaf) not in owned and id(value) not in owned and not registered:
                raise ValueError(f"compile=True: parameter '{site['name']}' is not owned by "
                                 f"{type(module).__name__} (a pyro.param outside the module); "
                                 "its value would be frozen into the compiled graph: call "
                                 "without compile")


# Passes of fewer particles than this are not measured by check_particle_memory: a pass of
# one particle (the survey's) ran, and a few of them at once take a few times its memory.
MEASURED_FROM = 64


def _site_bytes_per_particle(site, nesting: int, particles: int) -> int:
    """Bytes per particle of a site's value (or, for an observed site, the distribution's
    parameters it is scored with) in a vectorized trace of ``particles`` particles: the
    broadcast of the value and the distribution's shape, where it holds the particle dim."""
    fn, value = site["fn"], site["value"]
    if not torch.is_tensor(value):
        return 0
    event = tuple(getattr(fn, "event_shape", ()))
    try:
        shape = torch.broadcast_shapes(tuple(getattr(fn, "batch_shape", ())) + event,
                                       tuple(value.shape))
    except RuntimeError:
        shape = value.shape
    dim = len(shape) - len(event) - nesting  # the particle plate's dim
    if dim < 0 or shape[dim] != particles:
        return 0  # broadcast over the particles: shared, not per particle
    itemsize = value.dtype.itemsize if value.is_floating_point() else \
        torch.get_default_dtype().itemsize
    return math.prod(shape) // particles * itemsize


def particle_bytes(model: Callable, guide: Callable, args: tuple, kwargs: dict,
                   structure: PairStructure) -> int | None:
    """A lower estimate of the memory one particle takes in a vectorized pass of a surveyed
    pair: for every sample site of model and guide, its values and their elementwise log
    densities (twice the bytes of the site's value, or for an observed site of the
    distribution it is scored with), measured on a pass of 2 particles (no gradients, the
    random state put back afterwards; the model's enumerated sites take all their values).
    The networks' intermediate activations are not counted. None when that pass fails (the
    real pass will say why)."""
    nesting = structure.max_plate_nesting + 1
    try:
        with forked_rng(), torch.no_grad(), validation_enabled(False), \
                pyro.poutine.block():
            if structure.model_enumerated:  # the values the model enumerates count too
                traces = enumerated_traces(model, guide, args, kwargs, 2, structure)
            else:
                traces = vectorized_traces(model, guide, args, kwargs, 2, nesting)
    except Exception:  # noqa: BLE001 - the estimate is optional; the real pass reports
        return None
    return sum(2 * _site_bytes_per_particle(site, nesting, 2)
               for trace in traces for site in sample_sites(trace))


def _leading_digit(count: int) -> int:
    """``count`` rounded down to its leading digit's power of ten (1234 -> 1000), at least
    1: a suggested count that fits with room to spare."""
    count = max(1, int(count))
    return 10 ** int(math.log10(count)) if count >= 10 else count


def check_particle_memory(model: Callable, guide: Callable, args: tuple, kwargs: dict,
                          structure: PairStructure, num_samples: int, chunk_size: int | None,
                          name: str = "num_samples", gradients: bool = False,
                          chunkable: bool = True) -> None:
    """Raise ``ValueError`` naming ``name`` (and suggesting a ``chunk_size``) when the
    particles of one vectorized pass (``chunk_size``, or all ``num_samples`` when None) would
    need more memory than this machine has: :func:`particle_bytes` per particle (a lower
    estimate, twice that with ``gradients``) times the particles of a pass, plus the
    ``[num_samples, batch]`` weights. Checked before anything is drawn; passes of fewer than
    :data:`MEASURED_FROM` particles, pairs that are not vectorized (one particle per pass)
    and machines that do not report their memory are not checked. ``chunkable`` False: the
    caller has no ``chunk_size`` (all particles in one pass), and the message says to lower
    ``name``."""
    total = physical_memory_bytes()
    num_samples = int(num_samples)  # a numpy or 0-d tensor count would overflow int64 below
    chunk = min(int(chunk_size or num_samples), num_samples)
    if total is None or chunk < MEASURED_FROM or not structure.vectorizable:
        return
    per_particle = particle_bytes(model, guide, args, kwargs, structure)
    if not per_particle:
        return
    per_particle *= 2 if gradients else 1
    weight_row = structure.batch_size * weight_itemsize(args, kwargs)  # bytes per particle
    weights = num_samples * weight_row
    need = chunk * per_particle + weights
    if need <= total:
        return
    how = ("all in one pass" if not chunkable else
           "chunk_size=None draws them all in one pass" if chunk_size is None
           else f"chunk_size={chunk_size} draws that many per pass")
    if chunkable and 2 * weights < total:  # smaller passes fit (in a quarter of the memory)
        remedy = (f"pass chunk_size={_leading_digit((total - weights) // (4 * per_particle))} "
                  f"(particles per pass), or lower {name}")
    else:  # the weights of every particle are kept: fewer particles
        remedy = (f"lower {name} (at most about "
                  f"{_leading_digit(total // (4 * (per_particle + weight_row)))} fit)")
    raise ValueError(
        f"{name}={num_samples} particles for {structure.batch_size} datapoints: {how}, "
        f"which needs at least {need:,} bytes ({need / 2 ** 30:.3g} GiB: {per_particle:,} "
        f"bytes per particle for the sites' values and densities, measured on 2 particles, "
        f"before any network activations), more than this machine's {total:,} bytes of "
        f"memory; {remedy}")


def checked_log_weights(model: Callable, guide: Callable, args: tuple, kwargs: dict,
                        num_samples: int, chunk_size: int | None,
                        structure: PairStructure, compile=False,
                        name: str = "num_samples", bar=None, first_row: int = 0) -> torch.Tensor:
    """Log weights ``[num_samples, batch]`` of a pair returned by :func:`checked_pair`, without
    gradients, ``chunk_size`` particles at a time; raises on NaN or ``+inf`` weights.

    ``compile``: as :func:`check_compile` reads it; compiled chunks come from
    :func:`compiled_log_weights`. Before anything is drawn, :func:`check_particle_memory`
    refuses a pass that would not fit in memory, naming the count as ``name``. ``bar``: a
    progress bar (:func:`inference.progress.progress_bar`) advanced by the weights of each
    chunk (particles times datapoints). ``first_row``: the row of the caller's data that
    column 0 scores (a slice's offset), for the datapoints an error names.
    """
    backend = check_compile(compile)
    if backend is not None and structure.model_enumerated:
        raise PairError(f"compile={compile!r}: the model enumerates "
                        f"{site_list(structure.model_enumerated)}, which the compiled path "
                        "does not sum out; call without compile")
    check_particle_memory(model, guide, args, kwargs, structure, num_samples, chunk_size, name)
    chunk = chunk_size or num_samples
    chunks = []
    # The survey ran the pair once with Pyro's validation as configured; the passes here
    # skip it, since its checks cost more than the passes themselves.
    with torch.no_grad(), validation_enabled(False):
        for start in range(0, num_samples, chunk):
            size = min(chunk, num_samples - start)
            if backend is None:
                chunks.append(particle_log_weights(model, guide, args, kwargs, size, structure))
            else:
                chunks.append(compiled_log_weights(model, guide, args, kwargs, size, structure,
                                                   backend))
            if bar is not None:
                bar.update(size * structure.batch_size)
    weights = torch.cat(chunks)
    check_log_weights(weights, first_row=first_row)
    return weights


def check_log_weights(log_w: torch.Tensor, what: str = "importance weights",
                      first_row: int = 0) -> None:
    """Raise ``ValueError`` naming the datapoints (columns of ``log_w: [K, batch]``, counted
    from ``first_row``) with a NaN or ``+inf`` log weight; ``-inf`` (a draw outside the
    model's support) is weight zero."""
    for bad, value, why in (
            (torch.isnan(log_w).any(0), "NaN", "check the model's parameters, the guide's and "
                                               "the data range"),
            (torch.isposinf(log_w).any(0), "+inf", "the model's density is infinite, or the "
                                                   "guide's underflows to zero, at a draw")):
        if bad.any():
            raise ValueError(f"{what} are {value} for datapoints "
                             f"{(bad.nonzero().flatten() + first_row).tolist()[:10]} ({why})")


def check_data(args: tuple, kwargs: dict) -> None:
    """Refuse data a Pyro model cannot score (:func:`check_finite_inputs`: numpy arrays, lists,
    NaN or infinite entries) and an empty batch, naming the argument."""
    check_finite_inputs(args, kwargs)
    check_nonempty_batch(args, kwargs)


def log_weights_for(use: str, model: Callable, guide: Callable, args: tuple, kwargs: dict,
                    num_samples: int, chunk_size: int | None,
                    compile: bool | str = False,
                    progress: bool = True) -> tuple[torch.Tensor, PairStructure]:
    """Every check of an importance-weighted entry point ``use``, then its log weights.

    Checks, in order and before any particle is drawn: ``num_samples`` and ``chunk_size``,
    ``compile``, ``progress``, the data (:func:`check_data`), the pair
    (:func:`checked_pair`) and the memory the weights take. A call that runs for more than a
    second shows a bar of the weights drawn unless ``progress`` is False.

    Returns:
        ``(log_w, structure)``: ``log_w: [num_samples, batch]`` from
        :func:`checked_log_weights`, and the pair's :class:`PairStructure`.
    """
    num_samples, chunk_size = check_num_samples(num_samples, chunk_size)
    check_compile(compile, model, guide, args, kwargs)
    check_progress(progress)
    check_data(args, kwargs)
    model, guide, structure = checked_pair(model, guide, args, kwargs, use)
    check_weights_memory(num_samples, structure.batch_size, weight_itemsize(args, kwargs))
    with progress_bar(num_samples * structure.batch_size, use, progress, "weights") as bar:
        log_w = checked_log_weights(model, guide, args, kwargs, num_samples, chunk_size,
                                    structure, compile, bar=bar)
    return log_w, structure


@leaves_buffers
def log_importance_weights(
    model: Callable,
    guide: Callable,
    *args,
    num_samples: int,
    chunk_size: int | None = None,
    compile: bool | str = False,
    progress: bool = True,
    **kwargs,
) -> torch.Tensor:
    """Log importance weights ``log p(x, z_k) - log q(z_k | x)`` with ``z_k ~ q(z | x)``.

    Particles are drawn vectorized inside an outermost plate (one pass per particle for a
    model that does not broadcast over it); ``chunk_size`` bounds how many are in memory at
    once (the results match the unchunked ones up to the random draws). Runs without
    gradients and leaves every parameter as it is. The pair is checked first
    (:mod:`inference.pair_check`): what it cannot handle raises a ``PairError`` naming it.

    Args:
        model, guide: a Pyro pair sharing a ``pyro.plate("data", batch)``; ``*args`` and
            ``**kwargs`` are passed to both (tensors and device come from them).
        num_samples: K, the number of particles per datapoint.
        chunk_size: at most this many particles per vectorized pass (None: all at once).
        compile: trace each chunk's arithmetic once and compile it (``torch.compile``;
            :func:`compiled_log_weights`): for a pair of methods of one ``nn.Module``, worth
            it when the same shapes are scored many times (seconds to a minute per new shape
            on a CPU). ``"eager"`` runs the traced graph uncompiled.
        progress: False hides the bar a call shows after a second (weights drawn).

    Returns:
        ``[num_samples, batch]`` tensor, one column per datapoint, in nats. When the model
        subsamples its ``"data"`` plate (``pyro.plate("data", N, subsample_size=B)``), one
        subsample is drawn and used for every particle and chunk, and its ``[B]`` indices
        are the tensor's ``subsample`` attribute (column ``b`` is datapoint
        ``result.subsample[b]``).
    """
    check_pair_call(log_importance_weights, kwargs, args, model=model, guide=guide)
    log_w, structure = log_weights_for("log_importance_weights", model, guide, args, kwargs,
                                       num_samples, chunk_size, compile, progress)
    return attach_subsample(log_w, structure)


def wide_mean(values: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``values.mean(dim)`` accumulated in float64 and returned in ``values``' dtype: the
    float32 sum of K log weights of -4e37 each is -inf where their mean is finite
    (``values: [..., K, ...]`` -> the shape without ``dim``)."""
    if not values.is_floating_point() or values.dtype == torch.float64 \
            or values.device.type == "mps":  # (MPS has no float64)
        return values.mean(dim)
    return values.mean(dim, dtype=torch.float64).to(values.dtype)


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Stable ``log(mean(exp(log_w)))`` along ``dim``: ``log_w: [..., K, ...]`` -> the shape
    without ``dim``.

    While Pyro's validation is enabled (the default; in :func:`inference.fit`, its first
    epoch) NaN and ``+inf`` log weights are refused (:func:`check_log_weights`, naming the
    positions of the result, flattened, where they occur); ``-inf`` is weight zero."""
    if not torch.is_tensor(log_w):
        raise TypeError(f"log_w must be a tensor, got {type(log_w).__name__}")
    check_dense_values(log_w, "log_w")
    if isinstance(dim, numpy.integer) or (torch.is_tensor(dim) and dim.dim() == 0 and not (
            dim.is_floating_point() or dim.is_complex() or dim.dtype == torch.bool)):
        dim = int(dim)  # a NumPy or 0-dim tensor integer
    if isinstance(dim, bool) or not isinstance(dim, int) or \
            not -log_w.dim() <= dim < log_w.dim():
        raise ValueError(f"dim must be an int in [{-log_w.dim()}, {log_w.dim()}) for log_w of "
                         f"shape {list(log_w.shape)}, got {dim!r}")
    if not log_w.is_floating_point():
        raise TypeError(f"log_w must be a real floating-point tensor, got dtype {log_w.dtype}")
    if log_w.shape[dim] == 0:
        raise ValueError(f"log_w has no weights along dim {dim} (shape {list(log_w.shape)})")
    if is_validation_enabled():
        check_log_weights(log_w.detach().movedim(dim, 0).reshape(log_w.shape[dim], -1),
                          f"log_w (shape {list(log_w.shape)}, dim {dim})")
    # float16's sum of exp overflows past 65504 weights (+inf where the answer was 0): in
    # float32, the result back in the weights' dtype
    low = log_w.dtype in (torch.float16, torch.bfloat16)
    mean = torch.logsumexp(log_w.float() if low else log_w, dim) - math.log(log_w.shape[dim])
    return mean.to(log_w.dtype) if low else mean
