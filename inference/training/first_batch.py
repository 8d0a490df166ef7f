"""Checks :func:`inference.fit` runs on the pair and the data before its first step, each
on a probe that leaves the random state, the param store and the buffers as they were: the
observed values against their supports, a first run of the pair on the first minibatch
(parameters it removes, non-finite densities, data where the likelihood is infinite or zero),
minibatches of one row that batch norm cannot normalize, and a short last minibatch that
meets state shaped by the first (a loss's baseline, a guide parameter sized by the batch)."""

from __future__ import annotations

import contextlib

import pyro
import torch

from ..checks import evaluation_mode, validation_enabled
from ..pair_check import data_frame, family, forget_params, trace_pair
from ..random_state import forked_rng
from ..reachable import kept_buffers, reachable_modules
from .minibatches import copies, transformed_batch


def validate_observed(model, guide, batch: tuple, modules) -> None:
    """Run the pair once on ``batch`` (effects hidden, random state and modules' buffers
    kept) and score each observed value, so that Pyro's validation, when on, refuses a value
    outside its site's support as an eager step would; a compiled step validates nothing."""
    with forked_rng(), pyro.poutine.block(), torch.no_grad(), evaluation_mode(modules):
        model_trace, _ = trace_pair(model, guide, batch, {})
        for site in model_trace.nodes.values():
            if site["type"] == "sample" and site["is_observed"]:
                site["fn"].log_prob(site["value"])


def check_valid_data(model, guide, valid: tuple, batch_size: int, modules) -> None:
    """Refuse ``valid_data`` (tensors ``[M, ...]``) that the pair cannot score (a value outside
    its likelihood's support) before any training, naming ``valid_data`` and the rows; it
    used to fail after the first epoch, in a message that read as one about the data."""
    num_valid = valid[0].shape[0]
    for begin in range(0, num_valid, batch_size):
        stop = min(begin + batch_size, num_valid)
        try:
            validate_observed(model, guide, tuple(t[begin:stop] for t in valid), modules)
        except ValueError as error:
            raise ValueError(f"fit: valid_data cannot be scored by the pair (rows {begin} to "
                             f"{stop - 1} of {num_valid}): {error}") from error


def unscored_site(model, guide, batch: tuple, modules):
    """Why a validated step on ``batch`` could not be scored, from one pass of the pair
    without validation (effects hidden, random state and modules' buffers kept):
    ``("support", site, distribution, support, positions)`` for the first observed value
    outside its distribution's support, ``positions`` the offending places along the
    ``"data"`` plate (None when the site has no data dim); ``("density", site)`` for the
    first site whose log density is NaN or infinite; None when neither."""
    with forked_rng(), pyro.poutine.block(), torch.no_grad(), evaluation_mode(modules), \
            validation_enabled(False):
        model_trace, guide_trace = trace_pair(model, guide, batch, {})
        sites = [(name, site) for trace in (guide_trace, model_trace)
                 for name, site in trace.nodes.items() if site["type"] == "sample"]
        for name, site in sites:
            fn = site["fn"]
            if not site["is_observed"]:
                continue
            try:
                outside = ~fn.support.check(site["value"])  # the value's batch shape
            except NotImplementedError:  # a support that depends on the parameters
                continue
            if not outside.any():
                continue
            while isinstance(fn, torch.distributions.Independent):
                fn = fn.base_dist
            frame, positions = data_frame(site), None
            if frame is not None and outside.dim() >= -frame.dim and \
                    outside.shape[frame.dim] > 1:
                rows = outside.movedim(frame.dim, 0)
                positions = rows.reshape(rows.shape[0], -1).any(1).nonzero().flatten()
            return "support", name, type(fn).__name__, fn.support, positions
        for name, site in sites:
            if not torch.isfinite(site["fn"].log_prob(site["value"])).all():
                return "density", name
    return None


def check_first_run(model, guide, batch: tuple, batch_transform, modules,
                    layout_change=None) -> None:
    """``ValueError`` before any update when one run of the pair on the first minibatch
    removes parameters from Pyro's param store (``pyro.clear_param_store()`` inside the
    model or guide: each step would start from fresh values and fit would return them lost),
    or a guide site's log density at its own draw is NaN or infinite (a scale that
    overflowed to inf or underflowed to 0) or a model site's is NaN: the first step would put
    NaN into every parameter. One pass, effects hidden, random state and buffers kept.
    ``layout_change(batch)``: how a transformed batch differs from the one the pair was
    checked on (:meth:`inference.training.minibatches.MinibatchPlan.layout_change`), named
    when the run fails."""
    store = pyro.get_param_store()
    before = set(store.keys())
    with forked_rng(), pyro.poutine.block(), torch.no_grad(), kept_buffers(modules), \
            validation_enabled(False):
        if batch_transform is not None:
            batch = transformed_batch(batch_transform(*copies(batch)), len(batch[0]), screen=False)
        try:
            model_trace, guide_trace = trace_pair(model, guide, batch, {})
        except (ValueError, RuntimeError, TypeError) as error:
            change = layout_change(batch) if layout_change and batch_transform else None
            if change is None:
                raise
            raise ValueError(f"fit: the pair failed on the first minibatch "
                             f"({str(error).strip().splitlines()[0][:200]}): {change}") from error
        used = {name for trace in (guide_trace, model_trace)
                for name, site in trace.nodes.items() if site["type"] == "param"}
        lost = sorted((before | used) - set(store.keys()))
        if lost:
            raise ValueError(
                f"fit: one run of the pair removed parameters {lost[:5]} from Pyro's param "
                "store (a pyro.clear_param_store() or del inside the model or guide?): every "
                "step would start them afresh and the trained values would be lost. Clear the "
                "store once before fit, never inside the pair")
        for role, trace in (("guide", guide_trace), ("model", model_trace)):
            for name, site in trace.nodes.items():
                if site["type"] != "sample":
                    continue
                log_p = site["fn"].log_prob(site["value"])
                bad = ~torch.isfinite(log_p) if role == "guide" else torch.isnan(log_p)
                if bad.any():
                    raise ValueError(
                        f"fit: at the parameters training starts from, the {role}'s site "
                        f"'{name}' has a {'NaN or infinite' if role == 'guide' else 'NaN'} "
                        "log density on the first minibatch (e.g. a scale that overflows to inf or "
                        "underflows to 0 for these data), so the first step would make every "
                        "parameter NaN; nothing was trained, the parameters are untouched. "
                        "Bound the scale (softplus, clamp) or normalize the data")
        _check_data_densities(model, guide, batch, model_trace)


def _check_data_densities(model, guide, batch: tuple, model_trace) -> None:
    """``ValueError`` naming the observed site and its first datapoint whose log density is
    ``+inf`` (data at a Beta's edge, 0 under ``concentration1 < 1``; an exact 0 under a
    ``Gamma(0.5)``), or ``-inf`` at a site whose log density is the same on two draws of the
    guide (it does not depend on them: zero whatever the guide draws; one that moves with the
    draws, a truncation by ``pyro.factor``, is left to the weights, which give such particles
    weight zero). The loss is infinite there, and the first step would put NaN into the
    parameters, then read as a learning rate too large. Called inside
    :func:`check_first_run`'s protected block."""
    if any(site["type"] == "sample" and not site["is_observed"]
           and site["infer"].get("enumerate") for site in model_trace.nodes.values()):
        return  # the trace samples what the loss sums out: a zero at one value is no zero
    other = None
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or not site["is_observed"] or site["mask"] is False:
            continue
        log_p = site["fn"].log_prob(site["value"])
        if site["mask"] is not None:
            log_p = torch.where(torch.as_tensor(site["mask"]), log_p, 0.0)
        infinite = torch.isposinf(log_p)
        if not infinite.any() and torch.isneginf(log_p).any():
            if other is None:
                other, _ = trace_pair(model, guide, batch, {})
            node = other.nodes.get(name)
            if node is None or node["type"] != "sample":
                continue  # the other draw took another path: no verdict
            again = node["fn"].log_prob(node["value"])
            if site["mask"] is not None:
                again = torch.where(torch.as_tensor(site["mask"]), again, 0.0)
            if again.shape != log_p.shape or not torch.equal(again, log_p):
                continue  # it moves with the draws: a zero at some draws is the weights' own
            infinite = torch.isneginf(log_p)
        if not infinite.any():
            continue
        frame = data_frame(site)
        where = ""
        if frame is not None and infinite.dim() >= -frame.dim:
            rows = infinite.movedim(frame.dim, 0).reshape(infinite.shape[frame.dim], -1).any(1)
            first = int(rows.nonzero()[0])
            value = site["value"]
            if value.dim() >= -frame.dim + site["fn"].event_dim:
                value = value.movedim(frame.dim - site["fn"].event_dim, 0)
                value = value[first if value.shape[0] > 1 else 0]  # or shared by the rows
            where = f" at datapoint {first} of the first minibatch (value {_short(value)})"
        sign = "+inf (an infinite density)" if torch.isposinf(log_p).any() else \
            "-inf (density zero, whatever the guide draws)"
        raise ValueError(
            f"fit: the observed site '{name}' ({family(site['fn'])}) has log density "
            f"{sign}{where} at the parameters training starts from: the loss is infinite "
            "there and the first step would make the parameters NaN (no learning rate helps). "
            "Data on the edge of a support (a Beta at exactly 0 or 1, a Gamma at 0) need "
            "moving inside it, e.g. (x * (n - 1) + 0.5) / n, or another likelihood; data so "
            "far from the model's start that the density underflows in the dtype need "
            "normalizing; nothing was trained")


def _short(value: torch.Tensor) -> str:
    """A datapoint's value in a few characters."""
    flat = value.reshape(-1)[:4].tolist()
    return (f"{flat[0]:.4g}" if value.numel() == 1 else
            "[" + ", ".join(f"{v:.4g}" for v in flat) + (", ...]" if value.numel() > 4 else "]"))


def check_one_row_batches(model, guide, tensors: tuple, batch_size: int, batch_transform,
                          modules) -> None:
    """Refuse, before any step, a minibatch of one row (the ragged last one) for a pair with
    batch norm in training mode that cannot normalize one row (torch's "Expected more than 1
    value per channel" at that step): the pair is tried on that row (effects hidden, random
    state, param store and buffers kept)."""
    num_data = tensors[0].shape[0]
    if min(batch_size, num_data) != 1 and num_data % batch_size != 1:
        return
    layers = [f"{type(sub).__name__} at {name or 'the top'}" for module in modules
              for name, sub in module.named_modules()
              if isinstance(sub, torch.nn.modules.batchnorm._BatchNorm) and sub.training]
    if not layers:
        return
    row = tuple(t[-1:] for t in tensors)
    try:
        with _probe(modules):
            if batch_transform is not None:
                row = transformed_batch(batch_transform(*copies(row)), 1)
            trace_pair(model, guide, row, {})
    except Exception as error:  # noqa: BLE001 - only batch norm's refusal is this check's
        if "more than 1 value per channel" not in str(error):
            return
        last = "every minibatch" if min(batch_size, num_data) == 1 else "the last minibatch"
        raise ValueError(
            f"fit: {last} has one row (batch_size={batch_size}, N={num_data}), and the pair's "
            f"batch norm in training mode ({', '.join(layers[:4])}) cannot normalize one row "
            f"(torch: {str(error).splitlines()[0]}). Choose a batch_size that leaves no "
            f"minibatch of one row{_other_batch_size(num_data, batch_size)}, or drop a "
            "datapoint") from error


@contextlib.contextmanager
def _probe(modules):
    """A check's runs of the pair: effects hidden, no gradients, and the random state, the
    buffers of ``modules`` and the param store's names kept (entries made inside are
    forgotten)."""
    store = pyro.get_param_store()
    before, rng = set(store.keys()), pyro.util.get_rng_state()
    try:
        with forked_rng(), pyro.poutine.block(), torch.no_grad(), kept_buffers(modules):
            yield
    finally:
        pyro.util.set_rng_state(rng)
        forget_params(store, set(store.keys()) - before)


def check_short_last_batch(model, guide, tensors: tuple, batch_size: int, batch_transform,
                           modules, loss) -> None:
    """Refuse, before any step, a pair that keeps state shaped by the first minibatch when
    ``tensors`` (``[N, ...]`` each) leave a shorter last one: a decaying-average baseline of
    ``TraceGraph_ELBO`` on a guide site in the ``"data"`` plate (Pyro keeps the average per
    row, ``[batch_size]``), or a ``pyro.param`` sized by the minibatch (``zeros(len(x), 1)``)
    on which the pair then fails for the short one. Both failed at the last step of the
    first epoch with torch's or Pyro's shape error, naming neither. The pair runs on the
    first and last minibatches (effects hidden, random state, param store and buffers kept);
    a parameter is blamed only when the last minibatch runs with it made afresh."""
    num_data = tensors[0].shape[0]
    if batch_size >= num_data or not num_data % batch_size:
        return
    last = num_data % batch_size
    advice = (f"Choose a batch_size that divides {num_data}{_divisor_near(num_data, batch_size)} "
              f"(or >= {num_data}, one batch of all data)")
    with _probe(modules):
        first, short = (tuple(t[begin:begin + batch_size] for t in tensors)
                        for begin in (0, num_data - last))
        if batch_transform is not None:
            first, short = (transformed_batch(batch_transform(*copies(rows)), len(rows[0]))
                            for rows in (first, short))
        try:
            traces = trace_pair(model, guide, first, {})
        except Exception:  # noqa: BLE001 - fit's survey says how the first one failed
            return
        if isinstance(loss, pyro.infer.TraceGraph_ELBO):
            averaged = [name for name, site in traces[1].nodes.items()
                        if site["type"] == "sample" and data_frame(site) is not None
                        and (site["infer"].get("baseline") or {}).get(
                            "use_decaying_avg_baseline")]
            if averaged:
                raise ValueError(
                    f"fit: guide site '{averaged[0]}' has a decaying-average baseline, "
                    f"which {type(loss).__name__} keeps per row of the first minibatch "
                    f"({batch_size} rows), but batch_size={batch_size} leaves a last "
                    f"minibatch of {last} of the {num_data} rows: its step would fail "
                    f"on the shapes. {advice}, or drop the baseline's "
                    "use_decaying_avg_baseline")
        try:
            trace_pair(model, guide, short, {})
        except Exception as error:  # noqa: BLE001 - only a minibatch-sized param is judged
            networks = {id(p) for module in reachable_modules(model, guide)
                        for p in module.parameters()}
            sized = list(dict.fromkeys(
                name for trace in traces for name, site in trace.nodes.items()
                if site["type"] == "param" and torch.is_tensor(site["value"])
                and batch_size in site["value"].shape and id(site["value"]) not in networks))
            if not sized:
                return
            try:
                with _FreshParams(sized):
                    trace_pair(model, guide, short, {})
            except Exception:  # noqa: BLE001 - not (only) the first minibatch's params
                return
            raise ValueError(
                f"fit: the pair's parameter(s) {sized[:4]} take their shape from the first "
                f"minibatch ({batch_size} rows), and the pair fails on the last one, of "
                f"{last} rows, that batch_size={batch_size} leaves of the {num_data} "
                f"(Pyro: {str(error).splitlines()[0] if str(error) else type(error).__name__})."
                f" {advice}; for a parameter per datapoint, size it by N and pass the "
                "indices with the data (pyro.plate('data', N, subsample=idx))") from error


class _FreshParams(pyro.poutine.messenger.Messenger):
    """Inside, the param sites ``names`` take the initial value their statement gives (as
    for a new name) instead of the stored one; the store is left as it is."""

    def __init__(self, names):
        super().__init__()
        self.names = set(names)

    def _pyro_param(self, msg) -> None:
        if msg["name"] not in self.names or len(msg["args"]) < 2:
            return
        init = msg["args"][1]
        msg["value"] = init() if callable(init) else init
        msg["done"] = True


def _divisor_near(num_data: int, batch_size: int) -> str:
    """``, e.g. batch_size=B`` for the divisor of ``num_data`` nearest ``batch_size``."""
    divisors = [d for d in range(2, num_data) if not num_data % d]
    if not divisors:
        return ""
    return f", e.g. batch_size={min(divisors, key=lambda d: (abs(d - batch_size), -d))}"


def _other_batch_size(num_data: int, batch_size: int) -> str:
    """``, e.g. batch_size=B`` for the nearest size above 1 that leaves no one-row batch."""
    for offset in range(1, max(batch_size, 2)):
        for candidate in (batch_size + offset, batch_size - offset):
            if 1 < candidate < num_data and num_data % candidate != 1:
                return f", e.g. batch_size={candidate}"
    return ""
