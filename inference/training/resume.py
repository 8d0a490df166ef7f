"""What :func:`inference.fit` saves of a run beyond the checkpoint file's format
(:mod:`.checkpoints`) and checks when it resumes one: the pair's entries in Pyro's param
store, the checkpoint's fingerprint against this run's pair, data and settings, and the
callback's state (its own, or that of the objects a plain callback reaches)."""

from __future__ import annotations

import json

import pyro
import torch

from ..checks import evaluation_mode
from ..pair_check import forget_params, stored_shapes_checked, trace_pair
from ..random_state import forked_rng
from ..reachable import reachable_with_state
from . import checkpoints, resume_settings
from .minibatches import copies, transformed_batch
from .registered_modules import registered_prefix
from .svi_step import Adam


def pair_store_shapes(model, guide, batch: tuple, modules, batch_transform,
                      networks=()) -> tuple[dict, dict]:
    """name -> shape (as stored, unconstrained) of the pair's Pyro parameters outside
    ``modules``, and name -> network of those of ``networks`` (plain-function pairs'
    networks, :func:`inference.reachable.reachable_modules`) that ``pyro.module`` registered
    under that name: from the param sites of one pass on ``batch`` (through
    ``batch_transform``), which leaves the param store, every random state and the buffers
    as they were. A site whose value, or the
    initial value that ``pyro.module`` passed, is a parameter of ``modules`` is theirs (their
    ``state_dict`` holds it), also where an earlier run left another tensor in the store
    under its name."""
    store = pyro.get_param_store()
    before = set(store.keys())
    rng = pyro.util.get_rng_state()
    owned = {id(p) for m in modules for p in m.parameters()}
    try:
        with forked_rng(), pyro.poutine.block(), evaluation_mode([*modules, *networks]):
            if batch_transform is not None:
                batch = transformed_batch(batch_transform(*copies(batch)), batch[0].shape[0])
            traces = trace_pair(*stored_shapes_checked(model, guide), batch, {})
        names, registered = set(), {}
        for trace in traces:
            for name, site in trace.nodes.items():
                if site["type"] != "param":
                    continue
                value = site["value"]
                value = value.unconstrained() if hasattr(value, "unconstrained") else value
                if id(value) not in owned and not any(id(a) in owned for a in site["args"][1:]):
                    names.add(name)
                for network in networks:
                    prefix = registered_prefix(name, site["args"], network)
                    if prefix is not None:
                        registered[prefix] = network
        return checkpoints.store_shapes(sorted(names)), registered
    finally:
        pyro.util.set_rng_state(rng)
        forget_params(store, set(store.keys()) - before)


def align_store_aliases(saved_optimizer) -> None:
    """A tensor the param store holds under several names (an AutoIAFNormal's first network
    weight is also its ``_prototype_tensor``) is known to the optimizer by one of them, the
    one Pyro's tensor -> name table gives; which one depends on the order the names were
    registered, which a resumed run's checks change. Point the table at the name under which
    the checkpoint holds the tensor's optimizer state, so that the state is restored."""
    store = pyro.get_param_store()
    to_name = getattr(store, "_param_to_name", None)
    if not isinstance(to_name, dict) or not isinstance(saved_optimizer, dict):
        return
    held: dict = {}
    for name, value in store.named_parameters():
        held.setdefault(id(value), (value, []))[1].append(name)
    for value, names in held.values():
        with_state = [name for name in names if name in saved_optimizer]
        if len(names) > 1 and with_state and to_name.get(value) not in with_state:
            to_name[value] = with_state[0]


def check_resumable(state: dict, path, epochs: int, current: dict) -> None:
    """Refuse a checkpoint of another pair, other data or other settings, or of more epochs
    than asked for; say what differs."""
    saved = state.get("fingerprint")
    if not isinstance(saved, dict) or "history" not in state:
        raise checkpoints.CheckpointError(
            f"checkpoint {path} has no fingerprint (written by an older version or another "
            "program); delete it to start afresh")
    # compare what ``current`` holds (its "pair" part may hold the modules only)
    compared = {key: saved.get(key) for key in current}
    if isinstance(compared.get("pair"), dict) and isinstance(current.get("pair"), dict):
        compared["pair"] = {key: compared["pair"].get(key) for key in current["pair"]}
        store = compared["pair"].get("param_store")
        if state.get("format", 1) == 1 and isinstance(store, dict) and \
                "param_store" in current["pair"]:
            # format 1 saved every store entry outside the modules: compare the pair's own
            compared["pair"]["param_store"] = {
                name: shape for name, shape in store.items()
                if name in current["pair"]["param_store"]}
    loss = (compared.get("settings") or {}).get("loss")
    if isinstance(loss, dict) and "max_plate_nesting" in loss:
        # older checkpoints held Pyro's guess, which the loss object changes as it trains
        compared["settings"] = {**compared["settings"], "loss": {
            key: value for key, value in loss.items() if key != "max_plate_nesting"}}
    compared["settings"] = _effective_batch_size(compared.get("settings"), current)
    compared, current = _defaults_shown(compared, current)
    differences = checkpoints.describe_differences(compared, current)
    if differences:
        shown = "; ".join(differences[:8]) + (" ..." if len(differences) > 8 else "")
        why = (" (it was written when a fixed order weighed its short last minibatch's rows "
               "by N / B_last, more than the others: another objective, so start afresh)"
               if any(d.startswith("settings.fixed_order_row_weight") for d in differences)
               else "")
        raise checkpoints.CheckpointError(
            f"checkpoint {path} was written by another run, it differs in: {shown}{why}. "
            "Resume with the same pair, data and settings, or use another checkpoint path")
    done = len(state["history"])
    if done > epochs:
        raise checkpoints.CheckpointError(
            f"checkpoint {path} holds {done} epochs, more than epochs={epochs}; ask for "
            f"epochs >= {done} to continue it or use another checkpoint path")


# Settings a checkpoint records only when not at their defaults (``fit``'s settings fingerprint).
_RECORDED_UNLESS_DEFAULT = {"shuffle": True, "batch_transform": None}


def _defaults_shown(compared: dict, current: dict) -> tuple[dict, dict]:
    """``compared`` (the checkpoint's) and ``current`` fingerprints with a setting that one
    of them records and the other leaves at its default filled in with that default, so
    that a refusal reads "shuffle: False in the checkpoint, True now", not "absent now"."""
    saved, now = compared.get("settings"), current.get("settings")
    if not isinstance(saved, dict) or not isinstance(now, dict):
        return compared, current
    saved, now = dict(saved), dict(now)
    for name, default in _RECORDED_UNLESS_DEFAULT.items():
        if (name in saved) != (name in now):
            saved.setdefault(name, default)
            now.setdefault(name, default)
    return {**compared, "settings": saved}, {**current, "settings": now}


def _effective_batch_size(saved, current: dict):
    """The saved ``settings`` with the run's ``batch_size`` where both take all data at once
    (``batch_size >= N`` of ``current``'s data): they train alike, so a checkpoint written
    with the default 128 on 20 datapoints resumes with ``batch_size=20``."""
    now = current.get("settings") or {}
    data = current.get("data") or [{}]
    num_data = (data[0].get("shape") or [None])[0]
    if not isinstance(saved, dict) or not isinstance(num_data, int) or not all(
            type(settings.get("batch_size")) is int for settings in (saved, now)):
        return saved
    if min(saved["batch_size"], num_data) != min(now["batch_size"], num_data):
        return saved
    return {**saved, "batch_size": now["batch_size"]}


def check_same_settings(state: dict, path, record: resume_settings.SettingsRecord,
                        parallel) -> None:
    """Refuse a checkpoint written with other plain settings of the pair (its modules, the
    networks it registers, its model and guide callables: a sparsity weight, a likelihood's
    fixed scale, a dropout rate), naming each: resuming would mix two objectives in one
    history. ``record.ignore`` (``fit(resume_ignore=...)``) is not compared, nor what a run in
    this process moved after writing the checkpoint (:class:`.resume_settings.SettingsRecord`).
    Checkpoints written before settings were recorded are not checked. With several
    processes, rank 0's settings decide (they are the ones its checkpoints record)."""
    pair = state["fingerprint"].get("pair", {})
    saved, moved = pair.get("settings"), pair.get("settings_moved", [])
    differences = (record.differences(saved, moved if isinstance(moved, list) else [])
                   if isinstance(saved, dict) else [])
    differences = parallel.from_first_rank(differences)
    if differences:
        shown = "; ".join(differences[:8]) + (" ..." if len(differences) > 8 else "")
        named = differences[0].split(": ", 1)[0]
        raise checkpoints.CheckpointError(
            f"checkpoint {path} was written with other settings of the model or guide: "
            f"{shown}. Resume with the settings of that run, or use another checkpoint path. "
            f"A setting that does not change the model (a training length, a run id or "
            f"start time) can be left out of this check: fit(..., resume_ignore="
            f"[{json.dumps(named)}]), or keep it in an attribute whose name starts with \"_\" "
            "(and does not name a constructor argument)")


def run_store_names(names: list, held_before: set, optimizer, modules) -> list[str]:
    """``names`` and the param-store entries outside ``modules`` that the run made its own
    since :func:`fit` started (``held_before``: the store's names then): those the pair or
    its loss created (a ``pyro.param`` first met in a later minibatch, one per group or
    datapoint; ``TraceGraph_ELBO``'s decaying-average baselines), restored, or stepped by
    ``optimizer``. Unrelated entries made before the run stay out."""
    owned = {id(p) for m in modules for p in m.parameters()}
    stepped = set(optimizer.get_state())
    known = set(names)
    added = sorted(name for name, value in pyro.get_param_store().named_parameters()
                   if name not in known and id(value) not in owned
                   and (name not in held_before or name in stepped))
    return names + added


def checkpointed_tensors(modules, store_names, registered: dict) -> dict:
    """``{name: tensor}`` of what a checkpoint holds of the pair (the tensors themselves):
    the modules' parameters and buffers, the param store's entries ``store_names``, the
    buffers of networks registered with ``pyro.module``."""
    tensors = {f"module {i}: {key}": value for i, module in enumerate(modules)
               for key, value in module.state_dict().items() if torch.is_tensor(value)}
    tensors.update({f"param {name}": value for name, value
                    in pyro.get_param_store().named_parameters() if name in store_names})
    tensors.update({f"network {name}: {key}": value for name, network in registered.items()
                    for key, value in network.named_buffers()})
    return tensors


def copied_tensors(tensors: dict) -> dict:
    """Detached copies of ``{name: tensor}``."""
    return {name: value.detach().clone() for name, value in tensors.items()}


def same_tensors(before: dict, after: dict) -> bool:
    """Whether ``after`` holds the same names with bitwise the same values as ``before``."""
    return before.keys() == after.keys() and all(
        before[name].shape == value.shape and before[name].dtype == value.dtype
        and torch.equal(before[name], value.detach()) for name, value in after.items())


def callback_state(callback, optimizer):
    """What of ``callback`` each checkpoint saves: the callback itself when it has
    ``get_state``/``set_state`` (:class:`inference.KeepBest`), else the objects with a state
    that a plain callback reaches (a ``KeepBest`` it calls from a closure or a global:
    :func:`inference.reachable.reachable_with_state`; optimizers left out, fit saves them),
    or None."""
    if callback is None:
        return None
    if hasattr(callback, "get_state") and hasattr(callback, "set_state"):
        return callback
    reached = [found for found in reachable_with_state(callback)
               if found is not optimizer and not isinstance(found, (Adam, pyro.optim.PyroOptim))]
    return _ReachedStates(reached) if reached else None


class _ReachedStates:
    """The states of the objects a plain callback reaches, saved as one callback state
    ``{"reached": [state, ...]}`` in the order found."""

    def __init__(self, objects: list):
        self.objects = objects

    def get_state(self) -> dict:
        return {"reached": [found.get_state() for found in self.objects]}

    def set_state(self, state: dict) -> None:
        for found, found_state in zip(self.objects, state["reached"]):
            found.set_state(found_state)

    def names(self) -> str:
        return ", ".join(type(found).__name__ for found in self.objects)


def callback_name(saved_callback) -> str:
    if isinstance(saved_callback, _ReachedStates):
        return f"(the {saved_callback.names()} it reaches)"
    return type(saved_callback).__name__


def restore_callback(saved_callback, state, checkpoint) -> None:
    """Give the callback (or the objects it reaches) its checkpointed ``state``;
    ``CheckpointError`` when the state was saved for another kind of callback."""
    reached = isinstance(state, dict) and set(state) == {"reached"}
    if isinstance(saved_callback, _ReachedStates):
        if not reached or len(state["reached"]) != len(saved_callback.objects):
            had = (f"{len(state['reached'])} object(s) a callback reached" if reached
                   else "the state of a callback object")
            raise checkpoints.CheckpointError(
                f"checkpoint {checkpoint} holds {had}, but this callback reaches "
                f"{len(saved_callback.objects)} ({saved_callback.names()}): resume with the "
                "callback of the run that wrote it, or use another checkpoint path")
    elif reached:
        raise checkpoints.CheckpointError(
            f"checkpoint {checkpoint} holds the states of objects a plain callback reached, "
            f"not of the callback {type(saved_callback).__name__}: resume with the callback "
            "of the run that wrote it, or use another checkpoint path")
    saved_callback.set_state(state)
