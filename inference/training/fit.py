"""Minibatch SVI for any model/guide pair with a ``"data"`` plate."""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import time
import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pyro
import torch
from pyro.infer.util import is_validation_enabled
from tqdm.auto import tqdm

from ..checks import (PYRO_LOCK, anomaly_found_nan, autograd_tensor, check_default_device,
                      check_dense, check_finite_tensor, check_no_inference_tensors,
                      check_int, check_number, check_outer_handlers, check_pair_arguments,
                      check_positional_call, evaluation_mode, held_count,
                      one_thread_at_a_time, resolve_device,
                      training_mode_layers, user_stacklevel, validation_enabled)
from ..effect_guides import traceable_guide
from ..evidence.estimators import elbo
from ..pair_check import PairError, check_observed_values_validated, check_pair, check_store_shapes
from ..progress import shows_bars
from ..random_state import forked_rng
from ..reachable import kept_buffers, reachable_modules
from ..supports import describe_support
from ..weights import check_compile
from . import checkpoints, resume_settings
from .first_batch import (check_first_run, check_one_row_batches, check_short_last_batch,
                          check_valid_data, unscored_site, validate_observed)
from .handlers import scale_data_plate, scale_latents
from .minibatches import (check_valid_data_guide, copies, plan_minibatches, reports_no_loss,
                          transformed_batch)
from .registered_modules import (buffers_state, evaluating_submodules, frozen_parameters,
                                restore_buffers, restore_evaluating, restore_frozen)
from .resume import (align_store_aliases, callback_name, callback_state, check_resumable,
                     check_same_settings, checkpointed_tensors, copied_tensors,
                     pair_store_shapes, restore_callback, run_store_names, same_tensors)
from .objectives import DReGLoss, IWAELoss, make_loss
from .svi_step import WEIGHTED_LOSSES, Adam, SVIStep, check_param_store


def _as_tensors(data, name: str = "data") -> tuple[torch.Tensor, ...]:
    """``data`` (a tensor, a tuple or list of tensors, or a ``TensorDataset``) as a tuple of
    ``[N, ...]`` tensors; ``TypeError`` naming what else was passed."""
    if isinstance(data, torch.utils.data.TensorDataset):
        data = data.tensors
    tensors = tuple(data) if isinstance(data, (tuple, list)) else (data,)
    if not tensors or not all(torch.is_tensor(t) for t in tensors):
        raise TypeError(f"{name} must be a tensor, a tuple of tensors with a leading data dim "
                        f"or a TensorDataset, got {_describe(data)}")
    check_default_device()
    for i, tensor in enumerate(tensors):  # (a nested tensor has no shape to read)
        check_dense(tensor, name if len(tensors) == 1 else f"{name}[{i}]")
    if any(t.dim() == 0 for t in tensors):
        raise ValueError(f"{name} tensors need a leading data dim, got shapes "
                         f"{[list(t.shape) for t in tensors]}")
    sizes = {t.shape[0] for t in tensors}
    if len(sizes) != 1:
        raise ValueError(f"{name} tensors disagree on the number of datapoints: {sizes}")
    # detached: fit filled the user's x.grad
    return tuple(autograd_tensor(t).detach() for t in tensors)


def _describe(data) -> str:
    """What a user passed as data, with how to pass it instead."""
    kind = type(data).__name__
    if isinstance(data, torch.utils.data.DataLoader):
        return (f"a DataLoader: fit batches and shuffles the tensors itself, pass "
                f"loader.dataset's tensors and batch_size={data.batch_size}")
    if isinstance(data, torch.utils.data.Dataset):
        return (f"a {kind} (a Dataset): stack its items into tensors, e.g. "
                "torch.stack([dataset[i][0] for i in range(len(dataset))])")
    if type(data).__module__ == "numpy":
        return f"a numpy {kind}: torch.as_tensor(array, dtype=torch.get_default_dtype())"
    if isinstance(data, (tuple, list)):
        held = f"a {kind} of {', '.join(type(t).__name__ for t in data) or 'nothing'}"
        if any(torch.is_tensor(t) for t in data) and not all(torch.is_tensor(t) for t in data):
            # a setting beside the data (fit(model, guide, (x, 0.5))): fit cuts every entry
            # into minibatches, so settings are bound to the pair instead
            held += (": fit cuts each entry into minibatches, so pass settings bound to the "
                     "pair, e.g. fit(functools.partial(model, t=0.5), "
                     "functools.partial(guide, t=0.5), x)")
        return held
    if isinstance(data, dict):
        keys = ", ".join(map(repr, list(data)[:4])) + (", ..." if len(data) > 4 else "")
        return (f"a dict (keys {keys or 'none'}): pass a tuple of its tensors, e.g. "
                "tuple(data.values()), which fit passes positionally as model(*batch) and "
                "guide(*batch)")
    return f"a {kind}"


def _check_layout_kept(plan, batch: tuple, batch_transform, error: BaseException, step: int,
                       epoch: int) -> None:
    """Name ``batch_transform`` when a failed step's ``batch`` differs in per-row shapes or
    dtypes from the minibatch the pair was checked on (torch's matmul error named no
    transform). A size-agnostic network may take other shapes: only a failure is named."""
    change = plan.layout_change(batch) if batch_transform is not None else None
    if change is not None:
        raise ValueError(f"fit: step {step} of epoch {epoch} failed "
                         f"({str(error).strip().splitlines()[0][:200]}): {change}") from error


def _intact_previous(checkpoint) -> Path | None:
    """``<checkpoint>.previous`` when it holds an intact checkpoint, else None."""
    previous = checkpoints.previous_path(checkpoint)
    if previous.exists() and checkpoints.checkpoint_problem(previous) is None:
        return previous
    return None


def _check_data(tensors: tuple, name: str, like: tuple | None = None) -> None:
    """Sparse tensors (``TypeError``), no datapoints, NaN/inf values, or (``like``: the
    training data) other shapes or dtypes: raise ``ValueError`` naming ``name`` before any
    work."""
    for i, tensor in enumerate(tensors):
        check_dense(tensor, name if len(tensors) == 1 else f"{name}[{i}]")
    if tensors[0].shape[0] == 0:
        raise ValueError(f"{name} has no datapoints (shapes {[list(t.shape) for t in tensors]})")
    for i, tensor in enumerate(tensors):
        which = name if len(tensors) == 1 else f"{name}[{i}]"
        if tensor.is_complex():  # no distribution scores them (torch failed inside a check)
            raise TypeError(f"{which} has dtype {tensor.dtype}: the models score real data; "
                            "pass its real part, or real and imaginary parts as two channels")
        check_finite_tensor(tensor, which)
    if like is not None:
        mine = [list(t.shape[1:]) for t in tensors]
        theirs = [list(t.shape[1:]) for t in like]
        if mine != theirs:
            padded = all(len(a) == len(b) and a[:-1] == b[:-1] and not t.is_floating_point()
                         for a, b, t in zip(mine, theirs, tensors))
            hint = (f"; for padded sequences (words, tokens) encode {name} to the training "
                    f"width, e.g. Vocabulary.encode(words, max_len={theirs[0][-1]})"
                    if padded and theirs[0] else "")
            raise ValueError(f"{name} tensors have datapoint shapes {mine}, the training data "
                             f"{theirs}{hint}")
        mine, theirs = [t.dtype for t in tensors], [t.dtype for t in like]
        if mine != theirs:
            raise ValueError(f"{name} tensors have dtypes {mine}, the training data {theirs}; "
                             f"convert {name} to the training data's dtype")


# fit seeds NumPy's global generator too (pyro.set_rng_seed), which takes seeds below 2**32
MAX_SEED = 2**32 - 1
# More epochs than a progress bar or a range can count (a C ssize_t).
MAX_EPOCHS = 2 ** 62


def _loss_label(loss) -> str:
    """A loss as a message names it: the name given, or the loss object's class."""
    return repr(loss) if isinstance(loss, str) else type(loss).__name__


def _check_arguments(model, guide, loss, num_particles, epochs, batch_size, lr, seed,
                     kl_warmup_epochs, batch_transform, callback, checkpoint, flags: dict) -> None:
    """Every argument of :func:`fit` that is not data, checked before any work; ``flags``:
    name -> value of the arguments that must be True or False."""
    if pyro.settings.get("module_local_params") and any(
            isinstance(module, pyro.nn.PyroModule) for module in reachable_modules(model, guide)):
        raise ValueError(
            "fit: pyro.settings.set(module_local_params=True) is in effect: PyroModules then "
            "keep their parameters out of Pyro's param store, which fit reads to train, "
            "checkpoint and resume them. Turn it off (pyro.settings.set("
            "module_local_params=False)) for fit, or train with inference.SVIStep")
    check_pair_arguments(model, guide, num_particles)
    for name, fn in (("batch_transform", batch_transform), ("callback", callback)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable or None, got {type(fn).__name__}")
    if callback is not None:  # (failed after the first epoch's work, naming nothing)
        check_positional_call(callback, "callback", 1, "fit",
                              "it is called with the epoch's record, callback(record)")
    if not isinstance(loss, str) and not (hasattr(loss, "loss")
                                          and hasattr(loss, "loss_and_grads")):
        raise TypeError(f"loss must be a loss name or an object with loss and loss_and_grads, "
                        f"got {loss!r}")
    held = held_count(getattr(loss, "num_particles", None))
    if not isinstance(loss, str) and held is not None and num_particles not in (1, held):
        raise ValueError(f"fit(num_particles={num_particles}) disagrees with the loss object "
                         f"{type(loss).__name__}, which draws {held}: the object's count is "
                         "the one used; set it there and leave num_particles out")
    check_int(epochs, "epochs", 0)
    if epochs > MAX_EPOCHS:  # tqdm and range() index epochs with a C ssize_t
        raise ValueError(f"epochs must be at most {MAX_EPOCHS:,} (2**62), got {epochs}")
    check_int(batch_size, "batch_size")
    if isinstance(lr, (dict, pyro.optim.PyroOptim, pyro.optim.lr_scheduler.PyroLRScheduler)):
        shown = f"the dict {lr!r}" if isinstance(lr, dict) else f"a {type(lr).__name__}"
        raise ValueError(f"lr must be a number, got {shown}: fit trains with "
                         "Adam(lr) and no schedule; for another optimizer, a schedule or "
                         "clipping, step your own loop with inference.SVIStep(model, guide, "
                         "pyro.optim....)")
    check_number(lr, "lr", minimum=0.0, dtype=torch.float32)  # applied in float32 at least
    check_int(seed, "seed", 0)
    if seed > MAX_SEED:
        raise ValueError(f"seed must be an integer in 0..2**32 - 1 (NumPy's generator, which fit "
                         f"seeds, takes no larger one), got {seed!r}")
    check_int(kl_warmup_epochs, "kl_warmup_epochs", 0)
    if isinstance(loss, str):
        make_loss(loss, num_particles)  # an unknown name; 'elbo-free-bits' without free bits
    if kl_warmup_epochs and (loss in WEIGHTED_LOSSES or isinstance(loss, (IWAELoss, DReGLoss))):
        raise ValueError(
            f"kl_warmup_epochs={kl_warmup_epochs} scales the latent sites' log densities, "
            f"which the importance-weighted bound of loss={_loss_label(loss)} cannot take (one "
            "factor for all sites): use loss='elbo' or 'meanfield' for a KL warm-up, or "
            "kl_warmup_epochs=0")
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a path or None, got {type(checkpoint).__name__}")
    if checkpoint is not None and "\0" in str(checkpoint):
        raise ValueError(f"checkpoint {str(checkpoint)!r} holds a NUL byte, which no file name "
                         "may hold")
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    if flags["resume"] and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")


def _is_jit_loss(loss) -> bool:
    """Whether ``loss`` is one of Pyro's JIT-compiled ELBOs (``JitTrace_ELBO``,
    ``JitTraceEnum_ELBO``, ``JitTraceGraph_ELBO``, ``JitTraceMeanField_ELBO``, a subclass)."""
    jit = tuple(value for name, value in vars(pyro.infer).items()
                if name.startswith("Jit") and isinstance(value, type))
    return isinstance(loss, jit)


# Where Pyro's Jit* losses keep the loss they compiled at their first step.
_JIT_CLOSURES = ("_loss_and_surrogate_loss", "_differentiable_loss",
                 "_jit_loss_and_surrogate_loss")


def _check_jit_loss(loss, num_data: int, batch_size: int, kl_warmup_epochs: int) -> None:
    """Refuse a JIT-compiled Pyro loss where the scales ``fit`` puts around the loss change
    during training. Pyro compiles the loss once, on the first step, and keys its cache on
    the number of arguments only (not their shapes, nor the handlers around it): the first
    step's minibatch size and scales are constants of every later step. A KL warm-up kept
    the latents' weight at 0 for the whole run (a -ELBO of 0.38 below -log p(x) = 2.31), and
    a short last minibatch of 10 rows was scaled as the first one of 50. With one batch
    size (``N % batch_size == 0``, or all data at once) and no warm-up every step has the
    first one's shapes and scales, and the compiled loss is Pyro's loss."""
    if not _is_jit_loss(loss):
        return
    name = type(loss).__name__
    mro = type(loss).__mro__  # the plain loss: the first base after Pyro's Jit class
    first_jit = next(i for i, base in enumerate(mro) if base.__name__.startswith("Jit")
                     and base.__module__.startswith("pyro."))
    plain = next(base.__name__ for base in mro[first_jit:] if not base.__name__.startswith("Jit"))
    if any(vars(loss).get(closure) is not None for closure in _JIT_CLOSURES):
        raise ValueError(
            f"fit: this {name} object already compiled a loss in an earlier run (Pyro keeps it "
            "in the object, with that run's pair, shapes and scales as constants; reused, it "
            "failed in torch's JIT or scored the old pair). Pass a new one, "
            f"loss=pyro.infer.{name}(), to each fit")
    if kl_warmup_epochs:
        raise ValueError(
            f"fit: loss={name} compiles the loss on the first step, with that step's scales "
            f"as constants (Pyro's JIT cache ignores the handlers around the loss), but "
            f"kl_warmup_epochs={kl_warmup_epochs} changes the latents' scale every epoch: "
            "the warm-up would stay at its first value (weight 0) for the whole run. Use "
            f"pyro.infer.{plain} (the same loss, not compiled), or kl_warmup_epochs=0")
    if batch_size < num_data and num_data % batch_size:
        raise ValueError(
            f"fit: loss={name} compiles the loss on the first step, with that step's "
            f"minibatch size and scale as constants (Pyro's JIT cache ignores shapes), but "
            f"batch_size={batch_size} leaves a last minibatch of {num_data % batch_size} of "
            f"the {num_data} rows: it would be scored as a minibatch of {batch_size}. Use "
            f"pyro.infer.{plain} (the same loss, not compiled), or a batch_size that divides "
            f"{num_data} (or >= {num_data})")


# The data order's stream id beside the seed (the ranks of a distributed run use 1, 2, ...).
ORDER_STREAM = 0x6F72646572


def order_seed(seed: int) -> int:
    """The seed of the minibatch order's generator, drawn from ``seed`` apart from the global
    generator's: seeded with ``seed`` itself, both were one Mersenne-Twister sequence at two
    offsets, so the orders replayed the numbers the pair drew (epoch 1's order was the global
    stream's first ``randperm``): a trained IWAE slope of a self-subsampling pair spread with
    sd 0.059 over 316 seeds, against 0.068 for independent streams and a hand-written loop."""
    state = np.random.SeedSequence([seed, ORDER_STREAM]).generate_state(1, np.uint64)[0]
    return int(state) % 2 ** 63


@contextlib.contextmanager
def _checkpoint_lock(checkpoint, distributed: bool):
    """Check that ``checkpoint`` can be written and lock it for the whole run (rank 0 of a
    distributed run), so that two runs on one checkpoint refuse rather than interleave."""
    if distributed:
        from .distributed import process_rank  # torch.distributed only when asked for

        if process_rank() != 0:
            checkpoint = None
    if checkpoint is None:
        yield
        return
    checkpoints.check_writable(checkpoint)
    with checkpoints.CheckpointLock(checkpoint):
        checkpoints.remove_stale_partials(checkpoint)
        yield


def _settings(loss, num_particles, batch_size, lr, seed, kl_warmup_epochs, compile,
              mixed_precision, batch_transform, shuffle, num_data=None) -> dict:
    """The settings a resumed run must share with the run that wrote the checkpoint.

    A loss object enters by its class and plain settings (``num_particles``, ...).
    ``batch_transform`` and ``shuffle`` enter only when not at their defaults, so that
    checkpoints written before they were recorded still resume.
    """
    settings = {"loss": loss if isinstance(loss, str) else resume_settings.object_fingerprint(loss),
                "num_particles": num_particles, "batch_size": batch_size, "lr": float(lr),
                "seed": seed, "kl_warmup_epochs": kl_warmup_epochs, "compile": bool(compile),
                "mixed_precision": bool(mixed_precision)}
    if batch_transform is not None:
        settings["batch_transform"] = resume_settings.callable_fingerprint(batch_transform)
    if not shuffle:
        settings["shuffle"] = False
        if num_data is not None and batch_size < num_data and num_data % batch_size:
            # a fixed order's rows weigh ceil(N / batch_size) each; checkpoints written when
            # the short last minibatch's rows weighed N / B_last (another objective) lack it
            settings["fixed_order_row_weight"] = "steps"
    return settings


def _nonfinite_names(params) -> list[str]:
    """Names of the parameters holding NaN or infinite values: one read per device (on a GPU
    one host synchronization per epoch, not one per parameter)."""
    flags = {}
    for name, p in params:
        flags.setdefault(p.device, []).append((name, torch.isfinite(p).all()))
    bad = []
    for named in flags.values():
        finite = torch.stack([flag for _, flag in named]).tolist()
        bad += [name for (name, _), ok in zip(named, finite) if not ok]
    return bad


def _on_disk(checkpoint, saved: int, earlier: bool) -> str:
    """What the file ``checkpoint`` holds when a run stops: ``saved`` epochs of this run
    (written or resumed), or, with none, an ``earlier`` run's file or nothing."""
    if checkpoint is None:
        return ""
    if saved:
        return f"; the checkpoint {checkpoint} keeps epoch {saved}"
    if earlier:
        return (f"; this run wrote no checkpoint: {checkpoint} is still the earlier run's file "
                "it would have replaced")
    return f"; no checkpoint was written ({checkpoint} does not exist)"


def _diverged(problem: str, checkpoint, saved: int, earlier: bool) -> FloatingPointError:
    again = ", or resume the checkpoint" if checkpoint is not None and saved else ""
    return FloatingPointError(
        f"training diverged: {problem}{_on_disk(checkpoint, saved, earlier)}. The parameters "
        f"now hold the diverged values (start again from pyro.clear_param_store() and fresh "
        f"modules{again}). Lower lr, check the data and the model's parameter ranges")


def _check_finite_epoch(record: dict, step_losses: list, params, epoch: int, checkpoint,
                        saved: int, earlier: bool, loss=None) -> None:
    """Stop when the epoch's loss, a step's loss, the validation ELBO or a parameter is NaN
    or infinite, before anything of this epoch is saved (:func:`_on_disk` for the rest).
    A ``loss`` object that reports ``inf`` by design (Pyro's ``TraceTailAdaptive_ELBO``,
    :func:`.minibatches.reports_no_loss`) has only a NaN loss taken for a divergence; its
    gradients are checked through the parameters, which Adam makes NaN from a NaN or
    infinite gradient."""
    problem = None
    no_loss = reports_no_loss(loss)
    if no_loss and math.isnan(record["train_loss"]):
        problem = (f"the loss of {type(loss).__name__} (inf by design) is NaN in epoch "
                   f"{epoch}")
    elif not no_loss and not math.isfinite(record["train_loss"]):  # find the first bad step
        values = [float(v) for v in step_losses]
        bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
        problem = (f"the loss is {values[bad]} at step {bad + 1} of epoch {epoch}"
                   if bad is not None else f"the loss is {record['train_loss']} in epoch {epoch}")
        if bad == 0 and epoch == 1:  # no update has run: the initial parameters score so
            raise FloatingPointError(
                f"fit: {problem}, before any update (no learning rate caused it): on the "
                "initial parameters some draw has log p(x, z) = -inf or log q(z) = inf. "
                "Likely a value rounded onto the end of a support (a float32 tanh or sigmoid "
                "of the guide saturates to exactly 1 beyond |b| ~ 9, where the model's "
                "density is 0; compute in float64, or keep the guide's draws off the end), or "
                "a probability of exactly 0 or 1 (Bernoulli(probs=torch.sigmoid(...)): pass "
                f"logits=){_on_disk(checkpoint, saved, earlier)}")
    elif math.isnan(record.get("valid_elbo", 0.0)):
        problem = f"the validation ELBO is NaN after epoch {epoch}"
    else:
        bad = _nonfinite_names(params)
        if bad:
            problem = f"parameters {bad[:5]} hold NaN or infinite values after epoch {epoch}"
    if problem is not None:
        raise _diverged(problem, checkpoint, saved, earlier)


# An error about NaN or infinite values ("probability tensor contains either inf, nan").
_NON_FINITE = re.compile(r"\b(nan|inf)\b|infinite|non-finite", re.IGNORECASE)


def _last_update_problem(model, guide, batch: tuple, modules, epoch: int,
                         objective=None) -> str | None:
    """What the last step's update broke, or None. Each step's loss is that of the
    parameters before its update, so an update that breaks the pair (a learning rate far too
    large: finite parameters whose decoder then gives NaN) shows in no loss of the run; the
    pair is scored once more on ``batch`` by the run's ``objective`` (Pyro's ``Trace_ELBO``
    when it has no loss value of its own), effects hidden, random streams and buffers kept,
    no gradients, Pyro's validation off (a NaN argument is a NaN loss), before the last
    checkpoint is written. A failure that is not about NaN or infinite values is no
    verdict on the update: nothing is said then."""
    if not batch or batch[0].shape[0] == 0:
        return None
    if objective is None or reports_no_loss(objective) or not hasattr(objective, "loss"):
        objective = pyro.infer.Trace_ELBO()
    try:
        with forked_rng(), pyro.poutine.block(), torch.no_grad(), kept_buffers(modules), \
                validation_enabled(False), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pyro's "Encountered NaN: loss", said below
            value = float(objective.loss(model, guide, *batch))
    except Exception as error:  # noqa: BLE001 - a loss that cannot score the pair (Pyro's
        # TraceMeanField_ELBO asserts on a guide's pyro.deterministic, which the steps take)
        # is no verdict, and must not lose the run the steps trained
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        if not isinstance(error, FloatingPointError) and not _NON_FINITE.search(first):
            return None
        return (f"the pair fails on the parameters left by the last step of epoch {epoch} "
                f"({type(error).__name__}: {first})")
    if not math.isfinite(value):
        return (f"the loss on the parameters left by the last step of epoch {epoch} is "
                f"{value} (the steps' losses are read before their updates)")
    return None


def _refused_step(error: ValueError, model, guide, batch: tuple, rows: torch.Tensor, modules,
                  where: str, transformed: bool, disk: tuple) -> Exception:
    """What to raise for a step of the first epoch that Pyro's validation (or the model's own
    checks) refused with ``error``: ``FloatingPointError`` when the parameters or a log
    density turned NaN or infinite, a ``ValueError`` naming the rows of the data (``rows``:
    the minibatch's positions in it) outside an observed site's support, else ``error``
    with a note of ``where`` it was raised."""
    checkpoint, saved, earlier = disk
    reason = str(error).splitlines()[0].rstrip(":") if str(error) else type(error).__name__
    bad = _nonfinite_names(_named_params(modules))
    if bad:
        return _diverged(f"parameters {bad[:5]} hold NaN or infinite values at {where}, "
                         f"where Pyro's validation refused them ({reason})",
                         checkpoint, saved, earlier)
    try:
        found = unscored_site(model, guide, batch, modules)
    except Exception as secondary:  # noqa: BLE001 - the step's own error is the one to raise
        found = None
        if hasattr(error, "add_note"):
            error.add_note(f"fit: looking for the site that refused the step, the pair failed "
                           f"again without validation: {type(secondary).__name__}: "
                           f"{str(secondary).splitlines()[0] if str(secondary) else ''}")
    if found is None:
        if hasattr(error, "add_note"):
            error.add_note(f"fit: raised at {where}, on rows {_rows_text(rows)} of data; fit "
                           "runs every step of its first epoch with Pyro's validation on")
        return error
    if found[0] == "density":
        return _diverged(f"the log density of site '{found[1]}' is NaN or infinite at "
                         f"{where}, where Pyro's validation refused the step ({reason})",
                         checkpoint, saved, earlier)
    _, site, family, support, positions = found
    named = ("rows {} of data".format(_rows_text(rows[positions.to(rows.device)]))
             if positions is not None else "the minibatch")
    after = " (after batch_transform)" if transformed else ""
    return ValueError(
        f"fit: {where} was refused before its update: {named}{after} lie outside the "
        f"support {describe_support(support)} of the observed site '{site}' ({family}). The "
        "checks before training look at the first minibatch only; drop or fix these rows. "
        "The parameters "
        f"hold the steps before this one{_on_disk(checkpoint, saved, earlier)}. The "
        f"validation said: {reason}")


def _rows_text(rows: torch.Tensor) -> str:
    """``rows`` (positions in the data) as a short list."""
    listed = rows.tolist()
    shown = ", ".join(map(str, listed[:8]))
    return f"[{shown}]" if len(listed) <= 8 else f"[{shown}, ...] ({len(listed)} rows)"


def _module_of(fn):
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, torch.nn.Module) else None


def _device_of(tensors: tuple, modules: list) -> torch.device:
    """``fit``'s default device: where the user put the pair, the device of its modules'
    parameters (a pair of bound methods), else of the data."""
    for module in modules:
        for parameter in module.parameters():
            return parameter.device
    return tensors[0].device


class OneProcess:
    """How :func:`fit` trains on a single process;
    :class:`inference.training.distributed.DataParallel` implements the same methods over a
    process group."""

    rank, world_size = 0, 1

    def attach(self, svi) -> None:
        """The stepper: :class:`SVIStep`, :class:`inference.CompiledSVIStep` or any object
        with ``pyro.infer.SVI``'s ``step``."""
        self.svi = svi

    def process_seed(self, seed: int) -> int:
        return seed

    def prepare(self, modules, example: tuple, batch_transform) -> None:
        """Nothing to agree on with other processes."""

    def from_first_rank(self, value):
        """``value``: there are no other ranks."""
        return value

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """The part of a global minibatch ``index: [batch]`` that this process trains on."""
        return index

    def step(self, batch: tuple, num_data: int, global_size: int,
             model_scales: bool = False) -> torch.Tensor | float:
        """One SVI step on ``batch`` (this process's shard of a ``global_size`` minibatch);
        the loss as a 0-dim tensor left on the device (no host synchronization) when the
        stepper has ``tensor_step``, else as ``step``'s float. ``model_scales`` changes
        nothing here: the shard is the whole minibatch."""
        with scale_data_plate(num_data / global_size):
            return getattr(self.svi, "tensor_step", self.svi.step)(*batch)

    def valid_elbo(self, model, guide, valid: tuple) -> float:
        """Single-sample ELBO per datapoint of ``valid``, nats."""
        return float(elbo(model, guide, *valid).mean())

    def save(self, path: Path, state: Callable[[dict], dict]) -> None:
        """Write the checkpoint ``state(random state)`` atomically."""
        checkpoints.save_checkpoint(path, state(checkpoints.rng_state()))

    def set_rng_state(self, state: dict) -> None:
        checkpoints.set_rng_state(state)


def _save_over_own(parallel, checkpoint, state, saved_epoch: int, epoch: int) -> None:
    """``parallel.save(checkpoint, state)`` after ``epoch``; when this run saved there
    before (after ``saved_epoch`` > 0) and the file is no longer a checkpoint, another writer
    replaced it (a callback's ``torch.save(model.state_dict(), checkpoint)``): the state is
    saved beside it, at ``<checkpoint>.epoch<N>``, and ``CheckpointError`` says so."""
    try:
        parallel.save(checkpoint, state)
    except checkpoints.CheckpointError as error:
        if not saved_epoch or checkpoints.checkpoint_problem(checkpoint) is None:
            raise
        beside = Path(checkpoint).with_name(f"{Path(checkpoint).name}.epoch{epoch}")
        parallel.save(beside, state)
        raise checkpoints.CheckpointError(
            f"the checkpoint fit wrote at {checkpoint} after epoch {saved_epoch} was "
            f"replaced since by another writer (a callback or another program saving to that "
            f"path, e.g. torch.save(model.state_dict(), ...)): epoch {epoch}'s state is saved "
            f"at {beside} instead (resume from it with checkpoint={str(beside)!r}). Save "
            "models to another path than fit's checkpoint") from error


@one_thread_at_a_time
def fit(
    model: Callable,
    guide: Callable,
    data,
    *,
    loss: str = "elbo",
    num_particles: int = 1,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device | None = None,
    kl_warmup_epochs: int = 0,
    batch_transform: Callable[..., tuple] | None = None,
    valid_data=None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    resume_ignore: Iterable[str] = (),
    progress: bool = True,
    callback: Callable[[dict], None] | None = None,
    distributed: bool = False,
    compile: bool | str = False,
    mixed_precision: bool = False,
    shuffle: bool = True,
) -> list[dict]:
    """Train a model/guide pair by SVI (:class:`inference.SVIStep`, a drop-in for
    :class:`pyro.infer.SVI` with the same objectives) over shuffled minibatches.

    Each minibatch ``batch`` (a tuple of slices of ``data``) is passed as
    ``model(*batch)`` and ``guide(*batch)``; sites in the ``"data"`` plate are scaled by
    ``N / len(batch)`` so every step estimates the full-data objective (with
    ``shuffle=False`` by the number of steps ``ceil(N / batch_size)`` instead, so that the
    fixed short last minibatch's rows count as much as the others in every epoch), unless the model
    declares the full size itself (``pyro.plate("data", N, subsample=idx)``) and so scales
    its own minibatch (:mod:`inference.training.minibatches`). Before the first step the pair
    is checked on the first minibatch (:mod:`inference.pair_check`): a loss the pair does not
    support is refused with the site's name.

    The optimizer is always Adam (``torch.optim.Adam`` with ``lr`` and torch's other
    defaults), with no learning-rate schedule and no gradient clipping. For another
    optimizer, a scheduler or clipping, write the loop with :class:`inference.SVIStep`
    and a ``pyro.optim`` optimizer, e.g. ``SVIStep(model, guide,
    pyro.optim.ClippedAdam({"lr": 1e-3, "clip_norm": 10.0}))`` (the same steps as
    ``pyro.infer.SVI`` with that optimizer).

    Args:
        model, guide: a Pyro pair of callables, each called with a minibatch's tensors.
        data: ``[N, ...]`` tensor or tuple of such tensors (e.g. images and labels).
        loss: ``"elbo"`` (Trace_ELBO), ``"meanfield"`` (analytic KL where available),
            ``"iwae"`` (IWAE_K with K = ``num_particles``), ``"dreg"`` (IWAE_K with
            doubly reparameterized guide gradients), or a loss object with ``loss`` and
            ``loss_and_grads`` methods, e.g. ``inference.FreeBitsELBO(0.25)`` (free bits,
            nats per latent dimension), or ``pyro.infer.TraceEnum_ELBO(max_plate_nesting=...)``
            for a model that marks discrete latents the guide does not sample for
            enumeration (the only loss that sums them out; the others refuse such a pair;
            no ``kl_warmup_epochs`` then). Pyro's ``Jit*`` losses compile the first step,
            scales included, so they are refused with ``kl_warmup_epochs`` or a
            ``batch_size`` that leaves a shorter last minibatch (a resumed call compiles
            on a forked random stream, drawing as the uninterrupted run). So is
            ``TraceGraph_ELBO`` with a guide site's decaying-average baseline in the
            ``"data"`` plate (kept per row of the first minibatch), and a ``pyro.param``
            sized by the minibatch that the shorter last one cannot use.
        num_particles: particles per step (K of ``"iwae"``/``"dreg"``; averaged by the
            ELBOs); a loss object draws its own count (leave this at 1 or equal to it).
        epochs: passes over the data (a resumed run counts the checkpoint's epochs in).
        batch_size: datapoints per step (the global batch with ``distributed``); a value
            ``>= N`` trains on all data at once.
        lr: Adam's learning rate, a finite number ``>= 0`` (see above for other optimizers).
        seed: an integer in 0..2**32 - 1 (NumPy's range; numpy integers accepted) for
            torch's, NumPy's and Python's generators and the order of the minibatches.
        device: where data and, when ``model`` is a bound method of an ``nn.Module``, that
            module live: a CPU or CUDA device; ``"auto"`` picks CUDA when present. None
            (default): where the pair already is, the device of the module's parameters,
            else of the data (a plain-function pair with CPU ``pyro.param`` values and CPU
            data trains on the CPU, also on a GPU machine).
        kl_warmup_epochs: scale the latent terms by ``epoch / kl_warmup_epochs`` (capped at
            one) during the first epochs; the recorded ``train_loss`` is of that objective.
        batch_transform: maps a minibatch's tensors to new ones before each step, e.g.
            dynamic binarization or uniform dequantization drawn afresh every epoch (its
            random draws come from torch's generator, which checkpoints save).
        valid_data: optional held-out data of the training data's datapoint shapes and
            dtypes; its single-sample ELBO per datapoint is recorded every epoch, without
            gradients, without touching parameters and on random streams of its own (a run
            with ``valid_data`` trains the same model as one without), of the data as
            ``batch_transform`` passes them to training (drawn afresh every epoch). A pair
            for which that is undefined (e.g. with a global latent, or a guide with
            parameters for each training datapoint, such as an AutoNormal) is refused before
            training.
        checkpoint: file to write after every epoch (atomically, with a CRC32): module
            parameters, the Pyro parameters the pair uses outside its modules (its param
            sites, also those first met in a later minibatch, and the entries its loss keeps
            in the store, such as ``TraceGraph_ELBO``'s decaying-average baselines; entries
            of Pyro's param store made before the run and not trained by it are neither
            saved nor compared),
            optimizer and random-number states, history, and fingerprints of the pair, the
            data and the settings. Its folder must be writable (checked before
            training); one run at a time may use it (a lock file ``checkpoint + ".lock"``).
            A run that does not resume keeps a file it replaces as ``checkpoint +
            ".previous"`` (replacing an older one) on its first save, with a warning; an
            existing file that is not a checkpoint (no header) is refused, never replaced.
        resume: continue from ``checkpoint`` when it exists; the result equals that of an
            uninterrupted run with the same seed. A checkpoint of another pair (parameter
            names and shapes), other data (shape, dtype, a strided hash), other settings
            (loss, a loss object's class and plain settings, num_particles, batch_size, lr,
            seed, kl_warmup_epochs, compile, mixed_precision; two batch sizes ``>= N`` are
            alike) or of more epochs than ``epochs`` is refused with what differs. So is one
            written with other plain settings of the pair
            (:func:`.resume_settings.settings_fingerprint`: attributes of its modules, of the
            networks a pair of plain functions registers with ``pyro.module``, of a model or
            guide passed as a module or callable, and the constants its functions use),
            each named by its path (``0.sparsity``, ``decoder.2.p``, ``guide._init_scale``).
            Every loss resumes bit for bit except ``"dreg"`` with a network shared by model
            and guide, and the loss objects :class:`inference.IWAELoss` and
            :class:`inference.DReGLoss` (pass the names ``"iwae"``/``"dreg"`` for that),
            which resume equal up to float rounding (the last bit of a parameter).
        progress: show a progress bar of the epochs (on rank 0 only when ``distributed``).
        resume_ignore: setting paths, as such a refusal names them (``"0.started"``,
            ``"0.config['epochs']"``), that a resume does not compare (with what is inside
            them): settings that do not change the model, such as a run's start time or a
            training length held in a config dict. Attributes whose names start with ``_``
            are never compared.
        callback: called with each epoch's record after it is appended and the checkpoint
            written (on every process when ``distributed``); when it changes the pair's
            parameters or buffers (a max-norm projection), even by raising
            ``KeyboardInterrupt`` afterwards, the checkpoint is written again with them, so a
            resumed run goes on from what it did. A callback with ``get_state``
            and ``set_state`` (e.g. :class:`inference.KeepBest`), or a plain function that
            reaches such objects (a ``KeepBest`` in its closure or a global), has the states
            saved in each checkpoint as they were before that epoch's call; a resumed run
            restores them and
            calls the callback again with the last saved record, so that it ends as in an
            uninterrupted run (a checkpoint without such a state is refused).
        distributed: data-parallel training over the default ``torch.distributed`` process
            group, created from ``torchrun``'s environment when needed: ``batch_size`` is
            the global batch, split across processes, each on its own device (see
            :mod:`inference.training.distributed`). The result equals single-process training on the
            same batches up to the random draws and float rounding.
        compile: True (or a ``torch.compile`` backend name, e.g. ``"eager"`` to run the
            traced graph uncompiled): trace the step once per batch shape and compile it
            (:class:`inference.training.compiled_step.CompiledSVIStep`): ``"elbo"``,
            ``"meanfield"``, and ``"iwae"``/``"dreg"`` with K = ``num_particles``, for pairs
            whose model and guide are methods of one module owning their parameters; the same
            losses and gradients as the default step, faster once compiled.
        mixed_precision: run each step under ``torch.autocast`` with bfloat16, so that the
            networks' matrix products and convolutions run in bfloat16 while parameters,
            gradients, the optimizer and (for the models of :mod:`ppl_models`, whose networks
            return float32 through :func:`ppl_models.networks.full_precision`) every log
            density stay in float32. bfloat16 keeps float32's exponent range, so no loss
            scaling is needed. Pays off on GPUs with bfloat16 units (CUDA compute capability
            8.0 and newer) and CPUs with AVX-512 BF16 or AMX; elsewhere it is slower.
        shuffle: draw a new order of the datapoints every epoch (False: the order of
            ``data``). Guides with a parameter per datapoint *by position* (AutoGuides on a
            model with local latents) need ``shuffle=False`` and one batch of all data, or
            the minibatch's indices passed as data (``fit(model, guide, (x, torch.arange(N)))``
            with ``pyro.plate("data", N, subsample=idx)`` in the model and guide).

    The arguments, and the data for NaN/inf and empty sets, are checked up front, before the
    checkpoint is locked. Pyro's validation (argument and support checks of distributions and
    models), when enabled, runs on every step of the first epoch a call trains, so that each
    datapoint is checked once before a step uses it (with ``compile``, each minibatch's
    observed values are scored once more, eagerly): a value outside its site's support stops
    the run with a ``ValueError`` naming the step, the rows of ``data`` and the site. Later
    epochs skip it (a ``batch_transform``'s later draws are not checked). A loss, validation
    ELBO or parameter that becomes NaN or infinite stops the run with ``FloatingPointError``
    naming the epoch (and step) before that epoch is saved, and what the checkpoint file
    holds (the last finite epoch, an earlier run's file, or nothing).

    Returns:
        one record per epoch: ``epoch``, ``train_loss`` (the objective minimized, nats per
        datapoint, averaged over the epoch, each datapoint counted once), ``seconds``, and
        ``valid_elbo`` when asked.
    """
    check_outer_handlers("fit", scales=False)
    guide = traceable_guide(guide)  # an effect-based guide: its draws only
    _check_arguments(model, guide, loss, num_particles, epochs, batch_size, lr, seed,
                     kl_warmup_epochs, batch_transform, callback, checkpoint,
                     {"resume": resume, "progress": progress, "distributed": distributed,
                      "mixed_precision": mixed_precision, "shuffle": shuffle})
    num_particles, epochs, batch_size, seed, kl_warmup_epochs = map(
        int, (num_particles, epochs, batch_size, seed, kl_warmup_epochs))
    lr = float(lr)  # (np.array(1e-3) would make float64 steps)
    if checkpoint is not None:  # "~/run.pt" is in the home folder, not in a folder named "~";
        # and a relative path is resolved once: a callback's os.chdir must not move the saves
        checkpoint = os.path.expanduser(checkpoint)
        if isinstance(checkpoint, str) and checkpoint and not checkpoint.endswith(
                ("/", os.sep)):  # (an empty name and a folder's are refused below)
            checkpoint = os.path.abspath(checkpoint)
    tensors = _as_tensors(data, "data")
    for role, program in (("model", model), ("guide", guide)) if batch_transform is None else ():
        check_positional_call(program, role, len(tensors), "fit", "fit passes each minibatch "
                              "positionally, model(*batch) and guide(*batch): take the data "
                              "tensors as positional parameters, in the order of data")
    _check_data(tensors, "data")
    _check_jit_loss(loss, tensors[0].shape[0], batch_size, kl_warmup_epochs)
    if valid_data is not None:
        _check_data(_as_tensors(valid_data, "valid_data"), "valid_data", like=tensors)
    # SVIStep: SVI with Pyro's ELBOs scored as the sites are sampled and one torch Adam
    # (docs/performance.md: the same loss and gradients at less overhead per step). Built
    # here so that what it refuses is refused before any work.
    optimizer = Adam(lr)
    compiled = check_compile(compile, model, guide) is not None
    if not compiled:
        stepper = SVIStep(model, guide, optimizer, loss=loss, num_particles=num_particles,
                          check=False)  # the plan surveyed the pair on the first minibatch
    else:
        if mixed_precision:
            raise ValueError("mixed_precision=True does not combine with compile=True")
        if distributed:
            raise ValueError("compile=True needs one process (distributed=False)")
        from .compiled_step import CompiledSVIStep

        stepper = CompiledSVIStep(model, guide, optimizer, loss=loss,
                                  num_particles=num_particles,
                                  backend=compile if isinstance(compile, str) else None)
    modules = [m for m in {id(m): m for m in map(_module_of, (model, guide)) if m}.values()]
    device = resolve_device(_device_of(tensors, modules) if device is None else device)
    if mixed_precision and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("mixed_precision=True needs bfloat16 support on the CUDA device "
                         "(compute capability 8.0 or newer)")
    if distributed:  # before the checkpoint's folder and lock are made
        from .distributed import check_process_group

        check_process_group()
    settings_record = resume_settings.SettingsRecord(checkpoint, resume_ignore)
    # gradients on whatever the caller's context (a fit under torch.no_grad() or
    # inference_mode() trained nothing and returned a normal history)
    with _checkpoint_lock(checkpoint, distributed), settings_record, \
            torch.inference_mode(False), torch.enable_grad():
        return _train(
            model, guide, tensors, valid_data, stepper, optimizer, modules, device, compiled,
            loss=loss, num_particles=num_particles, epochs=epochs, batch_size=batch_size,
            lr=lr, seed=seed, kl_warmup_epochs=kl_warmup_epochs,
            batch_transform=batch_transform, checkpoint=checkpoint, resume=resume,
            progress=progress, callback=callback, distributed=distributed, compile=compile,
            mixed_precision=mixed_precision, shuffle=shuffle, settings_record=settings_record)


def _train(model, guide, tensors: tuple, valid_data, stepper, optimizer, modules: list,
           device: torch.device, compiled: bool, *, loss, num_particles: int, epochs: int,
           batch_size: int, lr: float, seed: int, kl_warmup_epochs: int, batch_transform,
           checkpoint, resume: bool, progress: bool, callback, distributed: bool, compile,
           mixed_precision: bool, shuffle: bool,
           settings_record: resume_settings.SettingsRecord) -> list[dict]:
    """:func:`fit` after its arguments were checked (and the checkpoint locked)."""
    if distributed:
        from .distributed import DataParallel

        parallel = DataParallel.from_env(device)
        device = parallel.device
    else:
        parallel = OneProcess()
    tensors = tuple(t.to(device) for t in tensors)
    valid = tuple(t.to(device) for t in _as_tensors(valid_data)) if valid_data is not None else None
    for module in modules:
        module.to(device)
    num_data = tensors[0].shape[0]
    first_rows = tuple(t[:batch_size] for t in tensors)
    fingerprint = {"data": checkpoints.data_fingerprint(tensors),
                   "valid_data": checkpoints.data_fingerprint(valid) if valid else None,
                   "settings": _settings(loss, num_particles, batch_size, lr, seed,
                                         kl_warmup_epochs, compile, mixed_precision,
                                         batch_transform, shuffle, num_data)}
    # the indices idiom (an integer tensor of the data holding 0..N-1, passed to
    # pyro.plate("data", N, subsample=idx)): one batch of all the data keeps its order, as
    # Pyro selects per-row parameters (AutoNormal's, pyro.param(..., event_dim=...)) by idx
    # only when it holds fewer than N rows; all N in another order trained each row's
    # parameters on another datapoint
    shuffle = shuffle and (batch_size < num_data or not any(
        not t.is_floating_point() and t.dim() == 1
        and torch.equal(t.cpu(), torch.arange(num_data)) for t in tensors))
    # plain settings of the modules and the pair's callables (and, once the pair has run,
    # of the networks it registers): compared on resume, recorded in each checkpoint
    settings_record.watch(modules, {"model": model, "guide": guide})
    # networks that plain functions register with pyro.module: kept still by the checks and
    # validation, as the modules are, and their buffers saved with checkpoints
    networks = [n for n in reachable_modules(model, guide)
                if not any(n is sub for m in modules for sub in m.modules())]
    still = [*modules, *networks]
    _warn_evaluation_mode(still)
    saved_callback = callback_state(callback, optimizer)
    # entries created from here on (restored, or made by the pair or its loss while it
    # trains) are the run's: each checkpoint holds them (:func:`run_store_names`)
    held_before = set(pyro.get_param_store().keys())
    state, store_names, registered = None, None, {}
    kept = None if checkpoint is None else _intact_previous(checkpoint)
    if resume and not Path(checkpoint).exists() and parallel.rank == 0:
        warnings.warn(f"fit: resume=True, but there is no checkpoint at {checkpoint}: "
                      "training starts afresh (a mistyped path would cost a whole run)"
                      + (f"; {kept} holds an earlier run's checkpoint: rename it to "
                         f"{checkpoint} to resume that run" if kept else ""),
                      stacklevel=user_stacklevel())
    if resume and Path(checkpoint).exists():
        try:
            state = checkpoints.load_checkpoint(checkpoint, map_location=device)
        except checkpoints.CheckpointError as error:
            if kept is None:
                raise
            raise checkpoints.CheckpointError(
                f"{error}; {kept} holds the checkpoint before it, intact: rename it to "
                f"{checkpoint} to resume from there") from None
        checkpoints.check_run_state(state, checkpoint)
        # modules first, before anything runs the pair; the pair's Pyro parameters below
        pair_print = checkpoints.params_fingerprint(modules, {})
        check_resumable(state, checkpoint, epochs, {
            "pair": {"modules": pair_print["modules"]}, **fingerprint})
        check_store_shapes(model, guide, "fit")  # before the pair runs
        pair_print["param_store"], registered = pair_store_shapes(
            model, guide, first_rows, modules, batch_transform, networks)
        store_names = list(pair_print["param_store"])
        check_resumable(state, checkpoint, epochs, {"pair": pair_print, **fingerprint})
        # the same structure: now its settings (and those of the networks it registers)
        settings_record.add_networks(registered)
        check_same_settings(state, checkpoint, settings_record, parallel)
        if callback is not None and saved_callback is callback and "callback" not in state:
            raise checkpoints.CheckpointError(
                f"checkpoint {checkpoint} holds no state of the callback "
                f"{callback_name(saved_callback)} (the run that wrote it had another "
                "callback), so what it kept of the earlier epochs is lost; resume with that "
                "run's callback or use another checkpoint path")
        if saved_callback is not None and "callback" not in state:
            # the objects a plain callback reaches, which checkpoints hold since the sixth
            # session of 2026-11-29: an older checkpoint resumes as it did then
            warnings.warn(
                f"fit: checkpoint {checkpoint} holds no state of the "
                f"{saved_callback.names()} the callback reaches (written before fit saved "
                "what a plain callback reaches): it goes on from its state now, without what "
                "it kept of the earlier epochs",
                stacklevel=user_stacklevel())
    # a fresh run keeps a checkpoint it will replace as <checkpoint>.previous (first save)
    earlier = checkpoint is not None and state is None and Path(checkpoint).exists()
    replaces = earlier and parallel.rank == 0
    problem = checkpoints.checkpoint_problem(checkpoint) if replaces else None
    if problem is not None:  # kept, it would replace an intact <checkpoint>.previous
        replaces = False
        warnings.warn(f"fit: this run (resume={resume}) replaces the checkpoint {checkpoint}, "
                      f"which is not intact ({problem}): it is not kept"
                      + (f"; {kept} is left as it is" if kept else ""),
                      stacklevel=user_stacklevel())
    if replaces:  # said before any step: under `-W error` it stops the run before work
        warnings.warn(f"fit: this run (resume={resume}) replaces the checkpoint {checkpoint}; "
                      f"the old one is kept as {checkpoints.previous_path(checkpoint)} (at "
                      "the run's first save)", stacklevel=user_stacklevel())
    pyro.set_rng_seed(parallel.process_seed(seed))
    check_store_shapes(model, guide, "fit")
    check_no_inference_tensors(still, PairError)
    _check_dense_gradients(still)
    check_one_row_batches(model, guide, tensors, batch_size, batch_transform, still)
    # the pair checked on a first minibatch (random state restored) before any step
    with kept_buffers(still):  # the survey runs the pair in training mode
        plan = plan_minibatches(model, guide, tensors, batch_size=batch_size, loss=loss,
                                num_particles=num_particles, shuffle=shuffle,
                                batch_transform=batch_transform)
    check_short_last_batch(model, guide, tensors, batch_size, batch_transform, still, loss)
    if kl_warmup_epochs and plan.structure.model_enumerated:
        names = ", ".join(f"'{name}'" for name in plan.structure.model_enumerated)
        raise PairError(
            f"fit: kl_warmup_epochs={kl_warmup_epochs} scales the latent sites' log densities "
            f"(the prior and guide terms of the KL), but the model's site(s) {names} are "
            f"enumerated by {_loss_label(loss)}: summed out of log p(x) = log sum_c p(c) "
            "p(x | c), with no guide term, so there is no KL of theirs to warm up (a scaled "
            "p(c) would temper the prior inside the sum, and Pyro's enumeration takes one "
            "scale for every enumerated site and the observations that depend on them). "
            "Train without warm-up (kl_warmup_epochs=0), or sample the site(s) in the guide")
    if valid is not None:
        probe = first_rows
        if batch_transform is not None:
            with forked_rng():  # training draws as it would without valid_data
                probe = transformed_batch(batch_transform(*copies(first_rows)),
                                          len(first_rows[0]), screen=False)
        check_valid_data_guide(model, guide, probe, plan.structure, num_data, tensors)
        try:
            check_pair(plan.structure, "elbo")
        except PairError as error:
            raise PairError(f"fit(valid_data=...): the validation ELBO per datapoint is not "
                            f"defined for this pair, so valid_data cannot be scored (train "
                            f"without it): {error}") from None
    if valid is not None and is_validation_enabled():
        check_valid_data(model, guide, valid, batch_size, still)
    if checkpoint is not None and store_names is None:
        shapes, registered = pair_store_shapes(model, guide, first_rows, modules,
                                               batch_transform, networks)
        store_names = list(shapes)
        settings_record.add_networks(registered)
    # the pair's parameters on the first minibatch: the fingerprint a resume compares
    surveyed_names = list(store_names or ())
    if checkpoint is not None:  # a constraint, extra or callback state no checkpoint can hold
        checkpoints.check_savable(checkpoint, {
            "modules": [m.state_dict() for m in modules],
            "network_buffers": buffers_state(registered),
            "param_store": checkpoints.param_store_state(store_names),
            **({"callback": saved_callback.get_state()} if saved_callback else {})})
    shuffler = torch.Generator().manual_seed(order_seed(seed))  # the same on every process
    parallel.attach(stepper)
    history = []
    if state is not None:
        checkpoints.check_module_states(state["modules"], modules, checkpoint)
        for module, module_state in zip(modules, state["modules"]):
            module.load_state_dict(module_state)
        if state.get("format", 1) > 1:  # every entry it holds is the run's (format 1: not)
            store_names += [name for name in state["param_store"]["params"]
                            if name not in store_names]
        checkpoints.restore_param_store(state["param_store"], store_names)
        moved_flags = (restore_frozen(modules, registered, state.get("frozen", {}))
                       + restore_evaluating(modules, registered, state.get("evaluating", {})))
        if moved_flags:
            warnings.warn(
                f"fit: the checkpoint {checkpoint} records which parameters were frozen "
                "(requires_grad False) and which layers in evaluation mode, set by a callback "
                "or before the interrupted run, and the resumed run sets them so to train as "
                f"that run did: {moved_flags[:5]}; to change them now, do it in a callback, "
                "or start a new fit from the checkpoint's values",
                stacklevel=user_stacklevel())
        problems = restore_buffers(registered, state.get("network_buffers", {}))
        if problems:
            raise checkpoints.CheckpointError(
                f"checkpoint {checkpoint} holds buffers of pyro.module networks that this pair "
                f"does not have: {'; '.join(problems[:8])}. Resume with the same pair, or "
                "use another checkpoint path")
        align_store_aliases(state["optimizer"])
        optimizer.set_state(state["optimizer"])
        shuffler.set_state(state["shuffler"].cpu())
        parallel.set_rng_state(state["rng"])
        history = state["history"]
        problems = settings_record.restore(state.get("settings_values", {}))
        if problems:
            raise checkpoints.CheckpointError(
                f"checkpoint {checkpoint} holds settings that training moved (an annealed "
                f"weight) which this pair cannot take back: {'; '.join(problems[:8])}. Resume "
                "with the pair of that run, or use another checkpoint path")
        if saved_callback is not None and "callback" in state:
            restore_callback(saved_callback, state["callback"], checkpoint)
    check_first_run(model, guide, first_rows, batch_transform, still, plan.layout_change)
    parallel.prepare(modules, tuple(t[:1] for t in tensors), batch_transform)
    if state is not None and saved_callback is not None and "callback" in state and history \
            and not state.get("after_callback"):
        # the checkpoint was written before its last epoch's callback ran: run it again, as
        # the interrupted run did, on the same parameters and random state
        with _callback_streams(seed, len(history) - 1), PYRO_LOCK.released():
            callback(history[-1])
    # Pyro's validation (when on) checks every step of the first epoch run here, so that each
    # datapoint is checked once; later epochs skip it
    validate, first_epoch, saved = is_validation_enabled(), len(history), len(history)
    warned_modes = False  # (a callback leaving layers in evaluation mode: once a run)
    bar = tqdm(range(len(history), epochs), desc=f"fit ({loss})",
               disable=not shows_bars(progress) or parallel.rank != 0, leave=False)
    # a resumed call compiles a Jit loss apart, as the uninterrupted run compiled it before
    with _compiled_apart(loss, resumed=bool(history)):
        for epoch in bar:
            start = time.perf_counter()
            order = (torch.randperm(num_data, generator=shuffler) if shuffle
                     else torch.arange(num_data)).to(device)
            beta = min(1.0, epoch / kl_warmup_epochs) if kl_warmup_epochs else 1.0
            checking = validate and epoch == first_epoch
            # with Pyro's validation off, the first epoch's minibatches still have their observed
            # values scored once on a validated run (no gradients), as the survey's is
            screening = not validate and epoch == first_epoch
            total, step_losses = 0.0, []
            with scale_latents(beta):
                for begin in range(0, num_data, batch_size):
                    index = order[begin:begin + batch_size]
                    local = parallel.shard(index)
                    batch = tuple(t[local] for t in tensors)
                    if batch_transform is not None and len(local):
                        batch = transformed_batch(batch_transform(*batch), len(local),
                                                  screen=epoch == first_epoch)
                    with validation_enabled(checking), torch.autocast(
                            device.type, dtype=torch.bfloat16, enabled=mixed_precision):
                        try:
                            if checking and compiled:
                                validate_observed(model, guide, batch, still)
                            if screening and len(local):
                                with kept_buffers(still):
                                    check_observed_values_validated(
                                        model, guide, batch, {},
                                        skip=plan.structure.dependent_support)
                            step_loss = parallel.step(
                                batch, _row_weight(num_data, batch_size, len(index), shuffle,
                                                   plan.model_scales) * len(index), len(index),
                                plan.model_scales)
                        except ValueError as error:
                            _check_layout_kept(plan, batch, batch_transform, error,
                                               len(step_losses) + 1, epoch + 1)
                            if not (checking or screening):
                                raise
                            refused = _refused_step(
                                error, model, guide, batch, local, still,
                                f"step {len(step_losses) + 1} of epoch {epoch + 1}",
                                batch_transform is not None, (checkpoint, saved, earlier))
                            if refused is error:
                                raise
                            raise refused from error
                        except TypeError as error:
                            _check_layout_kept(plan, batch, batch_transform, error,
                                               len(step_losses) + 1, epoch + 1)
                            raise
                        except RuntimeError as error:  # set_detect_anomaly(True) of the user's
                            _check_layout_kept(plan, batch, batch_transform, error,
                                               len(step_losses) + 1, epoch + 1)
                            if not anomaly_found_nan(error):
                                raise
                            raise _diverged(
                                "torch's anomaly detection (set_detect_anomaly) found NaN in "
                                f"the gradient at step {len(step_losses) + 1} of epoch "
                                f"{epoch + 1} ({str(error).strip().splitlines()[0]})",
                                checkpoint, saved, earlier) from error
                    # the step's loss counts each of its rows once in the record
                    total += step_loss / _row_weight(num_data, batch_size, len(index), shuffle)
                    step_losses.append(step_loss)
            # the epoch's one read of the step losses (tensors on the device, or floats)
            record = {"epoch": epoch + 1,
                      "train_loss": float(total) / num_data}
            if kl_warmup_epochs:
                record["kl_weight"] = beta
            if valid is not None:
                # no dropout masks, no moved batch-norm statistics, and its draws leave training's
                # streams alone: a run with valid_data trains the same model as one without
                with evaluation_mode(still), forked_rng():
                    scored = valid if batch_transform is None else transformed_batch(
                        batch_transform(*copies(valid)), len(valid[0]), screen=False)
                    record["valid_elbo"] = parallel.valid_elbo(model, guide, scored)
            record["seconds"] = time.perf_counter() - start
            _check_finite_epoch(record, step_losses, _named_params(modules), epoch + 1, checkpoint,
                                saved, earlier, loss)
            if epoch == epochs - 1:
                problem = _last_update_problem(model, guide, batch, still, epoch + 1,
                                               getattr(stepper, "objective", None))
                if problem is not None:
                    raise _diverged(problem, checkpoint, saved, earlier)
            history.append(record)
            bar.set_postfix(loss=f"{record['train_loss']:.3f}")
            if checkpoint is not None:
                if replaces:
                    checkpoints.keep_previous(checkpoint)
                    replaces = False
                store_names = run_store_names(store_names, held_before, optimizer, modules)

                def state_of(rng, after_callback=False):
                    return {
                        "format": checkpoints.FORMAT,
                        "modules": [m.state_dict() for m in modules],
                        "param_store": checkpoints.param_store_state(store_names),
                        "network_buffers": buffers_state(registered),
                        "frozen": frozen_parameters(modules, registered),
                        "evaluating": evaluating_submodules(modules, registered),
                        "optimizer": optimizer.get_state(),
                        "shuffler": shuffler.get_state(),
                        "rng": rng,
                        "history": history,
                        "fingerprint": {"pair": {
                            **checkpoints.params_fingerprint(
                                modules, checkpoints.store_shapes(surveyed_names)),
                            **settings_record.for_checkpoint()},
                            **fingerprint},
                        "settings_values": settings_record.moved_values(),
                        **({"callback": saved_callback.get_state()} if saved_callback else {}),
                        **({"after_callback": True} if after_callback else {}),
                    }

                _save_over_own(parallel, checkpoint, state_of, saved, epoch + 1)
                saved = epoch + 1
            if callback is not None:
                before = None if checkpoint is None else copied_tensors(
                    checkpointed_tensors(modules, store_names, registered))
                logged = dict(record)
                # what a next step would make again if the callback removed it
                held = (_trained_store_names(optimizer, [*still, model, guide])
                        if epoch + 1 < epochs else [])
                layouts = _store_layouts()
                evaluating = {id(m): set(training_mode_layers(m, training=False)) for m in still}
                flags = (frozen_parameters(modules, registered),
                         evaluating_submodules(modules, registered))
                networks = _network_identities(model, guide)
                # its draws (a logged sample) leave training's random streams where they were,
                # so a resumed run draws as the uninterrupted one; numpy's and Python's,
                # which training does not move, start from the run's seed and the epoch
                interrupted = None
                try:
                    with _callback_streams(seed, epoch), PYRO_LOCK.released():  # (its
                        callback(record)  # threads may call estimators meanwhile)
                except KeyboardInterrupt as error:  # a callback that stops the run: what it did
                    interrupted = error             # before stopping is kept, as it would be
                if interrupted is None:
                    _check_store_kept(held, epoch, checkpoint, saved, earlier)
                broken = _nonfinite_names(_named_params(modules))
                if broken:  # (a projection dividing by a zero norm): not saved over the epoch
                    raise FloatingPointError(
                        f"the callback left parameters {broken[:5]} NaN or infinite after epoch "
                        f"{epoch + 1}{_on_disk(checkpoint, saved, earlier)}, as saved before the "
                        "callback ran. The parameters now hold the callback's values: fix the "
                        "callback, then resume the checkpoint or start again from "
                        "pyro.clear_param_store() and fresh modules")
                if not warned_modes and epoch + 1 < epochs:
                    warned_modes = _warn_modes_left(still, evaluating, epoch)
                if interrupted is None:  # (before the epoch's checkpoint is written again)
                    _check_callback_kept_layouts(layouts, epoch, checkpoint, saved, earlier)
                if interrupted is None and epoch + 1 < epochs \
                        and networks != _network_identities(model, guide):  # (a network or a
                    # store entry replaced; after the last epoch it trains no more, and a
                    # resume's first step would say)
                    with kept_buffers(still):
                        _check_callback_kept_networks(model, guide, batch, epoch, checkpoint,
                                                      saved, earlier)
                flags_moved = flags != (frozen_parameters(modules, registered),
                                        evaluating_submodules(modules, registered))
                if checkpoint is not None and parallel.from_first_rank(
                        settings_record.moved_since_save() or _record_changed(logged, record)
                        or flags_moved or not same_tensors(
                            before, checkpointed_tensors(modules, store_names, registered))):
                    # it moved a setting (an annealed weight), changed a parameter (a max-norm
                    # projection), froze one or put a layer in evaluation mode, or wrote into
                    # the epoch's record (a logged metric): the
                    # checkpoint holds the values the next epoch trains with, the callback's
                    # state after it ran, its record
                    _save_over_own(parallel, checkpoint,
                                   lambda rng: state_of(rng, after_callback=True), saved,
                                   epoch + 1)
                if interrupted is not None:
                    raise interrupted
    return history


@contextlib.contextmanager
def _compiled_apart(loss, resumed: bool):
    """Inside the block, a resumed call's first step with a Pyro ``Jit*`` loss compiles it on
    a forked random stream. Pyro's JIT runs the loss twice more on its first call (capturing
    the parameters, then ``torch.jit.trace``), each run drawing from torch's generator: the
    uninterrupted run paid those draws at its first step, a resumed call would pay them again
    at its own and draw differently from then on (parameters 0.015 off). The compile's
    gradients are dropped; the step then calls the compiled loss, as the uninterrupted run's
    later steps do. Other losses and fresh calls are left as they are."""
    if not resumed or not _is_jit_loss(loss):
        yield
        return
    original = loss.loss_and_grads

    def compile_then_step(model, guide, *args, **kwargs):
        del loss.loss_and_grads  # the class's method from now on
        named = pyro.get_param_store().named_parameters
        grads = {param: param.grad for _, param in named()}
        with forked_rng():
            original(model, guide, *args, **kwargs)
        for _, param in named():
            param.grad = grads.get(param)
        return original(model, guide, *args, **kwargs)

    loss.loss_and_grads = compile_then_step
    try:
        yield
    finally:
        vars(loss).pop("loss_and_grads", None)


def _check_dense_gradients(modules) -> None:
    """Refuse an embedding with ``sparse=True`` among the networks: its gradients are sparse
    tensors, which fit's Adam (torch's) refuses at the first step."""
    for module in modules:
        for name, sub in module.named_modules():
            if isinstance(sub, (torch.nn.Embedding, torch.nn.EmbeddingBag)) and sub.sparse \
                    and sub.weight.requires_grad:  # (a frozen one has no gradients)
                where = f" at {type(module).__name__}.{name}" if name else ""
                raise PairError(
                    f"fit: {type(sub).__name__}({sub.num_embeddings}, {sub.embedding_dim})"
                    f"{where} has sparse=True: its gradients are sparse "
                    "tensors, which fit's Adam does not take; build it with sparse=False (or "
                    "train with your own loop and torch.optim.SparseAdam)")


def _record_changed(before: dict, record: dict) -> bool:
    """Whether a callback added, removed or replaced an entry of the epoch's ``record``
    (``before``: a shallow copy from before it ran)."""
    return before.keys() != record.keys() or any(record[k] is not before[k] for k in record)


def _warn_evaluation_mode(modules) -> None:
    """Warn about a module left in evaluation mode with layers that train differently (dropout
    off, batch-norm statistics frozen): ``.eval()`` before an estimate, then ``fit`` again,
    trains another model than the one asked for, as Pyro's SVI would, silently."""
    for module in modules:
        layers = training_mode_layers(module, training=False)
        if layers:
            shown = ", ".join(layers[:4]) + (" ..." if len(layers) > 4 else "")
            warnings.warn(
                f"fit: {type(module).__name__} is in evaluation mode with {shown}: it trains "
                "without dropout and with frozen batch-norm statistics; call .train() on it "
                "first unless that is meant (fit leaves the modes as it finds them)",
                stacklevel=user_stacklevel())


def _trained_store_names(optimizer, owners) -> list[str]:
    """The names of Pyro's param store entries that the run's ``optimizer`` trains, less the
    parameters of ``owners`` (modules; other objects are skipped), which come back as
    themselves after a clear (``pyro.module``, a PyroModule or AutoGuide re-registers its
    own tensors)."""
    owned = {id(p) for m in owners if isinstance(m, torch.nn.Module) for p in m.parameters()}
    trained = set(optimizer.get_state())
    return [name for name, value in pyro.get_param_store().named_parameters()
            if name in trained and id(value) not in owned]


def _check_store_kept(held: list, epoch: int, checkpoint, saved: int, earlier: bool) -> None:
    """``ValueError`` when a callback removed entries of Pyro's param store that ``held``
    (:func:`_trained_store_names` before it ran) lists: after ``pyro.clear_param_store()``
    the next step would make them again from their initial values, discarding the epochs
    before. Entries set anew (a ``store.load`` of saved values) train on from those values."""
    store = pyro.get_param_store()
    lost = [name for name in held if name not in store]
    if lost:
        raise ValueError(
            f"the callback removed Pyro's parameters {lost[:5]} after epoch {epoch + 1} "
            "(pyro.clear_param_store()): the next step would make them again from their "
            f"initial values, losing the epochs trained{_on_disk(checkpoint, saved, earlier)}."
            " Change a parameter in place instead (with torch.no_grad(): "
            "pyro.param(name).copy_(...)), load saved values (a network's with "
            "net.load_state_dict(saved), a pyro.param's with pyro.get_param_store().load), "
            "or start a new fit to begin again")


def _warn_modes_left(modules, evaluating: dict, epoch: int) -> bool:
    """Warn when a callback left layers that train differently (dropout, batch norm) in
    evaluation mode that were not before it ran (``evaluating``: id of each module to its
    layers in evaluation mode then): ``.eval()`` to score something without ``.train()``
    after makes every later epoch train without dropout and with frozen batch-norm
    statistics. Whether it warned (once a run is enough)."""
    for module in modules:
        left = [layer for layer in training_mode_layers(module, training=False)
                if layer not in evaluating.get(id(module), ())]
        if left:
            shown = ", ".join(left[:4]) + (" ..." if len(left) > 4 else "")
            warnings.warn(
                f"fit: the callback of epoch {epoch + 1} left {type(module).__name__}'s {shown} "
                "in evaluation mode (.eval() without .train() after it): the later epochs "
                "train without dropout and with frozen batch-norm statistics; call .train() "
                "at the end of the callback unless that is meant", stacklevel=user_stacklevel())
            return True
    return False


# Seeds the numpy and Python streams a callback draws from (with the run's seed and epoch).
CALLBACK_STREAM = 0x63616C6C


@contextlib.contextmanager
def _callback_streams(seed: int, epoch: int):
    """Inside the block, draws from torch's, numpy's and Python's generators leave training's
    streams where they were (:func:`inference.random_state.forked_rng`); numpy's and
    Python's, which training does not move, start from ``(seed, epoch)``: a callback's random
    subset or logged sample differs from epoch to epoch (each epoch drew the same before)
    and is the same in a resumed run."""
    state = np.random.SeedSequence([seed, epoch, CALLBACK_STREAM]).generate_state(1)[0]
    with forked_rng():
        np.random.seed(int(state))
        random.seed(int(state))
        yield


def _network_identities(model, guide) -> tuple:
    """The identity of each submodule the pair reaches, of each of their parameters and of
    each tensor in Pyro's param store, by name: a callback that put another network or
    parameter in place (``vae.decoder = new``, ``layer.weight = nn.Parameter(...)``) or
    loaded other tensors into the store (``store.load``) changes it."""
    modules = reachable_modules(model, guide)
    return (tuple(id(sub) for module in modules for sub in module.modules()),
            tuple(id(p) for module in modules for p in module.parameters()),
            tuple((name, id(p)) for name, p in pyro.get_param_store().named_parameters()))


def _store_layouts() -> dict[str, tuple]:
    """``(shape, dtype)`` of each entry of Pyro's param store (its unconstrained tensor)."""
    return {name: (tuple(p.shape), p.dtype)
            for name, p in pyro.get_param_store().named_parameters()}


def _check_callback_kept_layouts(before: dict, epoch: int, checkpoint, saved: int,
                                 earlier: bool) -> None:
    """``ValueError`` when a callback put a tensor of another shape or dtype under a name
    Pyro's param store held before it ran (:func:`_store_layouts`): the next step would fail
    in torch on it, or train another model, and the checkpoint keep it."""
    now = _store_layouts()
    changed = [f"'{name}' {list(before[name][0])} {str(before[name][1]).replace('torch.', '')}"
               f" -> {list(now[name][0])} {str(now[name][1]).replace('torch.', '')}"
               for name in before if name in now and now[name] != before[name]]
    if changed:
        raise ValueError(
            f"the callback replaced Pyro's parameter(s) {', '.join(changed[:5])} after epoch "
            f"{epoch + 1} with tensors of another shape or dtype: the next step would fail on "
            f"them or train another model{_on_disk(checkpoint, saved, earlier)}, as saved "
            "before the callback ran. Change a parameter in place with values of its shape "
            "(with torch.no_grad(): pyro.param(name).copy_(...)), then resume the checkpoint, "
            "or start a new fit for a model of other sizes")


def _check_callback_kept_networks(model, guide, batch: tuple, epoch: int, checkpoint,
                                  saved: int, earlier: bool) -> None:
    """``ValueError`` when after a callback Pyro's param store shadows a network parameter
    (:func:`inference.training.svi_step.check_param_store`, two passes of the pair on the
    epoch's last minibatch ``batch``): a callback that put a fresh network in place
    (``vae.decoder = new_decoder``) leaves the store holding the old one's tensors under its
    names, and every later step would train those while the new network never moves."""
    try:
        check_param_store(model, guide, batch, {})
    except ValueError as error:
        raise ValueError(
            f"after the callback of epoch {epoch + 1}: {error} (a callback that replaced a "
            "network, e.g. vae.decoder = new_decoder: copy the new values into the old "
            "network's parameters instead, old.load_state_dict(new.state_dict()))"
            f"{_on_disk(checkpoint, saved, earlier)}, as saved before the callback ran") \
            from None


def _named_params(modules) -> list[tuple[str, torch.Tensor]]:
    """Module parameters and the Pyro parameters outside them, by name."""
    named = [(f"{type(m).__name__}.{n}", p) for m in modules for n, p in m.named_parameters()]
    owned = {id(p) for _, p in named}
    return named + [(n, p) for n, p in pyro.get_param_store().named_parameters()
                    if id(p) not in owned]


def _num_batches(num_data: int, batch_size: int) -> int:
    return -(-num_data // batch_size)


def _row_weight(num_data: int, batch_size: int, size: int, shuffle: bool,
                model_scales: bool = False) -> float:
    """How many times each of the ``size`` rows of a step counts in its loss, and (with
    ``model_scales``: a model that scales its ``"data"`` plate by ``num_data / size`` itself)
    the factor ``fit`` adds to the model's own.

    Shuffled: ``num_data / size``, so that every step estimates the full-data objective (a
    row lands in the short last minibatch, of weight ``N / B_last``, by chance, and over an
    epoch each row weighs ``ceil(N / B)`` in expectation). In a fixed order (``shuffle=False``)
    the short last minibatch holds the same rows every epoch: weighted ``N / B_last`` they
    counted ``B / B_last`` times as much as every other row in every epoch, and training
    converged to that reweighted objective. There every row weighs the number of steps,
    ``ceil(N / B)``, so that an epoch's steps add up to that many times the full-data
    objective, each datapoint and each global site counted alike.
    """
    weight = num_data / size if shuffle else float(_num_batches(num_data, batch_size))
    return weight * size / num_data if model_scales else weight

