"""Shape checks of a pair's sites: batch dims no plate declares, plates at different dims in
model and guide, observed values without a data dim, masks, tempering, and whether the pair
broadcasts over a leading particle dim.
"""

from __future__ import annotations

import math
from itertools import zip_longest

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from ..checks import evaluation_mode
from ..reachable import reachable_modules
from .sites import (
    DATA_PLATE,
    PARTICLE_PLATE,
    PairError,
    data_frame,
    family,
    is_delta,
    is_factor,
    sample_sites,
    site_mask,
    trace_pair,
    validation_off,
)


def row_mismatches(model_sites):
    for site in model_sites:
        frame = data_frame(site)
        if not site["is_observed"] or frame is None or frame.size < 0:
            continue
        value = site["value"]
        batch = value.shape[:value.dim() - site["fn"].event_dim]
        if len(batch) >= -frame.dim and batch[frame.dim] not in (1, frame.size):
            yield site["name"], batch[frame.dim], frame.size


def mask_mismatches(model_sites, guide_latents) -> tuple:
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


def tempered_sites(sites):
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


def _density_batch_shape(site) -> torch.Size | None:
    """The batch shape of ``site``'s log density (its distribution's batch shape broadcast
    with its value's batch part); None for a value that is no tensor or shapes that do not
    broadcast (scoring fails then and names the shapes itself)."""
    fn, value = site["fn"], site["value"]
    if not torch.is_tensor(value):
        return None
    try:
        return torch.broadcast_shapes(fn.batch_shape,
                                      value.shape[:max(0, value.dim() - fn.event_dim)])
    except RuntimeError:
        return None


def check_batch_dims(sites, nesting: int) -> None:
    """Refuse a site whose log density has more batch dims than the pair's plates declare.

    The common cause is an observation of shape ``[N, 1]`` scored by a distribution of batch
    shape ``[N]``: broadcasting makes an ``[N, N]`` log density, every datapoint scored
    against every latent, which Pyro's own shape check (it looks only at the rightmost
    ``max_plate_nesting`` dims) lets through into a wrong ELBO.
    """
    for site in sites:
        fn, value, batch = site["fn"], site["value"], _density_batch_shape(site)
        if batch is None:
            continue
        if len(batch) <= nesting or all(size == 1 for size in batch[:len(batch) - nesting]):
            continue  # extra leading dims of size 1 broadcast nothing
        what = "observed value" if site["is_observed"] else "value"
        raise PairError(
            f"site '{site['name']}': its {what} of shape {tuple(value.shape)} and its "
            f"{family(fn)} of batch shape {tuple(fn.batch_shape)} (event dims "
            f"{fn.event_dim}) score a log density of batch shape {tuple(batch)}, more dims "
            f"than the pair's plates declare ({nesting}): every datapoint would be scored "
            "against every other's distribution. Give the value the plate's shape (e.g. "
            "x.squeeze(-1) for [N, 1] data), or declare extra dims as events with "
            ".to_event(n) or as an inner pyro.plate")


def check_mask_shapes(sites) -> None:
    """Refuse a site whose ``poutine.mask`` does not fit the batch shape of its log density:
    the mask multiplies the density after its event dims are summed, so a mask ``[N, L]``
    on a site ``[N]`` with ``.to_event(1)`` fails in torch at the first score ("The size of
    tensor a must match ..."), naming no site, or, where the sizes happen to broadcast,
    spreads each datapoint's density over an undeclared dim."""
    for site in sites:
        mask, fn, batch = site["mask"], site["fn"], _density_batch_shape(site)
        if not torch.is_tensor(mask) or batch is None:
            continue
        try:
            joint = torch.broadcast_shapes(mask.shape, batch)
            extra = len(joint) - len(batch)  # leading dims of size 1 broadcast nothing
            fits = joint[extra:] == batch and all(size == 1 for size in joint[:extra])
        except RuntimeError:
            fits = False
        if fits:
            continue
        raise PairError(
            f"site '{site['name']}': its mask (poutine.mask) of shape {list(mask.shape)} does "
            f"not fit the batch shape {list(batch)} of its {family(fn)}'s log density (event "
            f"shape {list(fn.event_shape)}, summed before the mask applies). Give the mask "
            "the batch shape (e.g. mask.all(-1) to drop a datapoint with any missing "
            "feature), or mask features inside the event: dist.Normal(...).mask(mask)"
            ".to_event(1)")


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


def check_plate_dims(sites, model_sites) -> None:
    """Refuse a site whose log density has a batch dim of size > 1 that no plate it lies in
    declares, as Pyro's ``check_site_shape`` does for the dims left of its plates (run here
    whatever Pyro's validation flag, for model and guide sites): ``pyro.plate("data", N,
    dim=-2)`` with a latent ``[N, 1]`` and 1-D data ``[N]`` scores an ``[N, N]`` density,
    every datapoint against every other's latent, within the pair's plate nesting."""
    model_by_name = {site["name"]: site for site in model_sites}
    for role, site in sites:
        fn, value, batch = site["fn"], site["value"], _density_batch_shape(site)
        if batch is None:
            continue
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
                f"its {family(fn)} of batch shape {tuple(fn.batch_shape)} (event dims "
                f"{fn.event_dim}) score a log density of batch shape {tuple(batch)}, whose "
                f"dim {dim} (size {batch[dim]}) is no dim of a plate the site lies in "
                f"(plates: {_plate_text(frames)}): every batch dim that no plate declares "
                "must have size 1 here (stricter than Pyro's shape check, which leaves the "
                "dims right of the innermost plate to the user), because such a dim cannot "
                "be told apart from values broadcast against each other (with "
                "pyro.plate('data', N, dim=-2) and 1-D data [N], each datapoint is scored "
                "against every other's latent). If the dim holds independent values of each "
                "datapoint, say so with .to_event(1); else give the value the "
                "plate's layout (x.unsqueeze(-1) for data in a dim=-2 plate, or the plate at "
                "dim=-1), or put the dim in a pyro.plate")


def check_observed_data_dims(model_sites) -> None:
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
            f"has no dim for that plate: its {family(fn)} has batch shape "
            f"{tuple(fn.batch_shape)} and event shape {tuple(fn.event_shape)}, so the value's "
            f"{tuple(event)} are all event dims and every datapoint's term scores all of them "
            f"(with .to_event(1) on 1-D data [N], each of the N terms holds all N "
            "observations). Keep the datapoints out of the event: drop the .to_event(n) for "
            "data of one value per datapoint, or move it so it covers only the features "
            f"(x of shape [N, D] with .to_event(1)), or observe the whole vector outside the "
            f"plate")


def check_observed_broadcast(model_sites, nesting: int) -> None:
    """Refuse an observed value that torch broadcasts up to its distribution within a
    datapoint: a dim of size 1 (or missing) where the distribution's batch and event shape
    is larger, in its event dims or at a plate other than ``"data"`` (grayscale ``x: [B, 1,
    4, 4]`` scored by ``Bernoulli(logits: [B, 3, 4, 4]).to_event(3)`` counts every pixel 3
    times). A value shared along the ``"data"`` plate or dims left of the pair's plates
    (particles), and a distribution that broadcasts up to the value, are left alone."""
    for site in model_sites:
        fn, value = site["fn"], site["value"]
        if not site["is_observed"] or is_factor(site) or not torch.is_tensor(value):
            continue
        events = len(fn.event_shape)
        shape = tuple(fn.batch_shape + fn.event_shape)
        frame = data_frame(site)
        plates = {f.dim: f.name for f in site["cond_indep_stack"] if f.vectorized}
        for dim in range(-len(shape), 0):
            size = value.shape[dim] if -dim <= value.dim() else 1
            if shape[dim] == 1 or size != 1:
                continue
            batch_dim = dim + events
            if batch_dim >= 0:
                where = f"event dim {dim}"
            elif (frame is not None and batch_dim == frame.dim) or -batch_dim > nesting:
                continue
            else:
                # (check_plate_dims has refused batch dims that no plate of the site declares)
                where = f"pyro.plate('{plates[batch_dim]}') at dim {batch_dim}"
            raise PairError(
                f"observed site '{site['name']}': its value of shape {tuple(value.shape)} is "
                f"broadcast to its {family(fn)}'s shape {shape} (batch "
                f"{tuple(fn.batch_shape)}, event {tuple(fn.event_shape)}) along {where} "
                f"(size {shape[dim]} against the value's "
                f"{'1' if -dim <= value.dim() else 'missing dim'}): each observation would "
                f"count {shape[dim]} times in log p(x | z) (and in bits per dim). Give the "
                "value the distribution's shape (the data's channels and features as the "
                "decoder writes them), or the distribution the value's (a decoder of as many "
                "outputs)")


def _varies_along(site, frame) -> bool:
    """Whether the site's log density differs between datapoints: a distribution of its own
    per datapoint scoring one shared value (a vector observed as a regularizer,
    ``Normal(z, 10).to_event(1)`` with ``z: [N, D]`` and ``obs: [D]``) is one term per
    datapoint, right; one distribution expanded over the plate (``.to_event(1)`` on 1-D data)
    gives ``N`` equal copies of a term that holds all observations."""
    try:
        with torch.no_grad(), validation_off(site["fn"]):
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


def check_plate_order(model_sites, guide_latents) -> None:
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


def sequential_data_plate(sites) -> str | None:
    """The name of a site inside ``pyro.plate("data")`` used as a Python loop, or None."""
    for site in sites:
        frame = data_frame(site)
        if frame is not None and frame.dim is None:
            return site["name"]
    return None


def shape_mismatch(model_site, guide_site, nesting: int) -> str:
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


def check_latents_agree(model_sites, guide_latents, nesting: int) -> None:
    """Refuse a latent whose model and guide distributions disagree on its shape or event
    dims: the model then scores the guide's draw broadcast against other datapoints'."""
    model_latents = {s["name"]: s for s in model_sites if not s["is_observed"]}
    for guide_site in guide_latents:
        model_site = model_latents.get(guide_site["name"])
        if model_site is None or is_delta(guide_site["fn"]):
            continue
        found = shape_mismatch(model_site, guide_site, nesting)
        if found:
            moved = _moved_plates(model_site, guide_site)
            where = (f" (it lies in {_moved_text(moved)}: nest the plates in one order, or "
                     "give them explicit dims)" if moved else "")
            raise PairError(
                f"latent site '{guide_site['name']}' has {found}, a "
                f"{family(guide_site['fn'])} in the guide and a {family(model_site['fn'])} "
                f"in the model{where}: the guide must draw the "
                "value the model scores, in the same plates at the same dims and with the "
                "same .to_event(n); otherwise the model scores it broadcast against other "
                "datapoints")


def subsampled_plates(sites) -> tuple:
    """``(plate, subsample size, full size)`` of the plates other than ``"data"`` that draw a
    subsample (their scale ``full / size`` is the subsample's)."""
    found = {}
    for site in sites:
        for frame in site["cond_indep_stack"]:
            if frame.name != DATA_PLATE and frame.full_size is not None \
                    and 0 < frame.size < frame.full_size:
                found.setdefault(frame.name, (frame.name, frame.size, frame.full_size))
    return tuple(found.values())


def try_vectorized(model, guide, args, kwargs, nesting: int) -> str:
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
                stray = _dim_without_plate(site, log_p)
                if stray:
                    return stray
        with evaluation_mode(reachable_modules(model, guide)):
            mismatch = _particle_mismatch(model, guide, args, kwargs, nesting)
    except Exception as error:  # the user's code failed on a leading particle dim
        if missing_inverse(error):
            return (f"{NO_INVERSE}: a guide transform without an inverse (Pyro's planar, "
                    "radial and neural autoregressive flows) scores only the draw it just "
                    f"made ({type(error).__name__}: {error})")
        return f"{type(error).__name__}: {error}"
    return mismatch


NO_INVERSE = "a guide site cannot score a value again"
"""How :func:`try_vectorized` begins its error when the particle comparison had to score a
guide draw again and a transform has no inverse: the draws' own weights are right (each is
scored from the transform's cache), while a check or an objective that re-scores a value
(DReG's stopped-gradient copy, AIS's moves) cannot run."""


def missing_inverse(error: Exception) -> bool:
    """Whether ``error`` came from a transform's ``_inverse`` that has none (torch's default
    ``NotImplementedError``, or Pyro's ``KeyError`` of a value not in its cache)."""
    if not isinstance(error, (KeyError, NotImplementedError)):
        return False
    frame = error.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_name == "_inverse":
            return True
        frame = frame.tb_next
    return False


def _dim_without_plate(site, log_p: torch.Tensor) -> str:
    """'' when every dim of ``log_p`` of size above one is a dim of one of the site's plates
    with that size (the particle plate included), else what is wrong: a site outside the
    ``"data"`` plate computed by reducing over it (``z.sum(-1)``) puts the particles on the
    data's dim, where every particle's density would be summed into each weight."""
    sizes = {f.dim: f.size for f in site["cond_indep_stack"] if f.vectorized}
    for dim in range(-log_p.dim(), 0):
        # (a sizeless plate, of size -1, takes its size from the data)
        if log_p.shape[dim] != 1 and sizes.get(dim, 1) not in (-1, None, log_p.shape[dim]):
            return (f"site '{site['name']}' has log_prob shape {tuple(log_p.shape)} with 2 "
                    f"particles in a plate at dim {min(sizes, default=-1)}: dim {dim} of size "
                    f"{log_p.shape[dim]} is no plate of the site's (a reduction over another "
                    "dim, z.sum(-1), moves the particles there)")
    return ""


def _particle_mismatch(model, guide, args, kwargs, nesting: int) -> str:
    """'' when two guide draws score, site by site, the same in one run with 2 particles in a
    leftmost plate as each in a run of its own, else the first site that differs. Code that
    indexes a latent by position (``z[:, 0]`` for the first latent coordinate) picks another
    dim under the particle plate, and a reduction over all of a latent's dims (``z.sum()``)
    adds the particles together: valid shapes with wrong numbers. The caller runs the
    networks in evaluation mode (dropout, also inside a GRU or attention layer, draws masks
    of another shape among particles); the random state is the same for every run
    (randomness outside ``pyro.sample`` then draws alike). A guide's ``Delta`` is
    recomputed from the replayed draws, not replayed."""
    state = pyro.util.get_rng_state()
    drawn = [poutine.trace(guide).get_trace(*args, **kwargs) for _ in range(2)]
    plain = []
    for trace in drawn:
        pyro.util.set_rng_state(state)
        plain.append(trace_pair(model, poutine.replay(guide, trace=trace), args, kwargs))
    # each run's log density per site, read before stacking (a trace's copy shares its sites)
    scores = [[{site["name"]: float(site["fn"].log_prob(site["value"]).sum())
                for site in sample_sites(trace)} for trace in traces] for traces in plain]

    def stacked(role: int):
        """Both runs' latent values of the model's (0) or guide's (1) trace, stacked in a
        leftmost particle dim: the model's own draws (a latent the guide leaves to the
        prior) are replayed too."""
        out = plain[0][role].copy()
        for site in list(sample_sites(out, observed=False)):
            if role == 1 and is_delta(site["fn"]):  # recomputed from the replayed draws: its
                out.remove_node(site["name"])      # value in batched kernels moves by ulps
                continue
            values = [traces[role].nodes[site["name"]]["value"] for traces in plain]
            missing = nesting - (values[0].dim() - site["fn"].event_dim)
            site["value"] = torch.cat([v.reshape((1,) * missing + tuple(v.shape))
                                       for v in values])
        return out

    def two_particles(fn):
        def run(*a, **k):
            with pyro.plate(PARTICLE_PLATE, 2, dim=-nesting):
                return fn(*a, **k)

        return run

    pyro.util.set_rng_state(state)
    guide_trace = poutine.trace(poutine.replay(two_particles(guide), trace=stacked(1))
                                ).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(two_particles(model), trace=stacked(0))
                                ).get_trace(*args, **kwargs)
    vectorized = (prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace))
    for role, joint in enumerate(vectorized):
        for site in sample_sites(joint):
            log_p = site["fn"].log_prob(site["value"])
            log_p = log_p.reshape((1,) * (nesting - log_p.dim()) + tuple(log_p.shape))
            for particle, scored_runs in enumerate(scores):
                together = float(log_p[particle if log_p.shape[0] == 2 else 0].sum())
                scored = scored_runs[role].get(site["name"], math.nan)
                if abs(scored - together) <= 1e-4 * (1.0 + abs(scored)) or scored == together \
                        or math.isnan(scored) and math.isnan(together):
                    continue
                return (f"site '{site['name']}' scores {scored:.6g} for one draw run alone and "
                        f"{together:.6g} for the same draw among 2 particles (code that indexes "
                        "a latent by position, z[:, 0], picks another dim under a leading "
                        "particle dim, and a reduction over all its dims, z.sum(), adds the "
                        "particles together: index and reduce from the right, z[..., 0], "
                        "z.sum(-1))")
    return ""