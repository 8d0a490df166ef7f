"""Minibatch SVI for any model/guide pair with a ``"data"`` plate."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pyro
import torch
from pyro.infer.util import is_validation_enabled
from tqdm.auto import tqdm

from ..evidence.estimators import elbo
from ..weights import check_finite_inputs
from . import checkpoints
from .handlers import scale_data_plate, scale_latents
from .minibatches import plan_minibatches
from .svi_step import Adam, SVIStep


def _as_tensors(data) -> tuple[torch.Tensor, ...]:
    tensors = tuple(data) if isinstance(data, (tuple, list)) else (data,)
    if not tensors or not all(torch.is_tensor(t) for t in tensors):
        raise TypeError("data must be a tensor or a tuple of tensors with a leading data dim")
    sizes = {t.shape[0] for t in tensors}
    if len(sizes) != 1:
        raise ValueError(f"data tensors disagree on the number of datapoints: {sizes}")
    return tensors


def _module_of(fn):
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, torch.nn.Module) else None


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None picks CUDA when available, else CPU; anything else is used as given."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but torch sees no CUDA device")
    return device


class OneProcess:
    """How :func:`fit` trains on a single process; :class:`inference.distributed.DataParallel`
    implements the same methods over a process group."""

    rank, world_size = 0, 1

    def attach(self, svi) -> None:
        """The stepper: :class:`SVIStep`, :class:`inference.CompiledSVIStep` or any object
        with ``pyro.infer.SVI``'s ``step``."""
        self.svi = svi

    def process_seed(self, seed: int) -> int:
        return seed

    def prepare(self, modules, example: tuple, batch_transform) -> None:
        """Nothing to agree on with other processes."""

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """The part of a global minibatch ``index: [batch]`` that this process trains on."""
        return index

    def step(self, batch: tuple, num_data: int, global_size: int) -> torch.Tensor | float:
        """One SVI step on ``batch`` (this process's shard of a ``global_size`` minibatch);
        the loss as a 0-dim tensor left on the device (no host synchronization) when the
        stepper has ``tensor_step``, else as ``step``'s float."""
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
    progress: bool = True,
    callback: Callable[[dict], None] | None = None,
    distributed: bool = False,
    compile: bool = False,
    mixed_precision: bool = False,
    shuffle: bool = True,
) -> list[dict]:
    """Train a model/guide pair by SVI (:class:`inference.SVIStep`, a drop-in for
    :class:`pyro.infer.SVI` with the same objectives) over shuffled minibatches.

    Each minibatch ``batch`` (a tuple of slices of ``data``) is passed as
    ``model(*batch)`` and ``guide(*batch)``; sites in the ``"data"`` plate are scaled by
    ``N / len(batch)`` so every step estimates the full-data objective, unless the model
    declares the full size itself (``pyro.plate("data", N, subsample=idx)``) and so scales
    its own minibatch (:mod:`inference.training.minibatches`). Before the first step the pair
    is checked on the first minibatch (:mod:`inference.pair_check`): a loss the pair does not
    support is refused with the site's name.

    Args:
        data: ``[N, ...]`` tensor or tuple of such tensors (e.g. images and labels).
        loss: ``"elbo"`` (Trace_ELBO), ``"meanfield"`` (analytic KL where available),
            ``"iwae"`` (IWAE_K with K = ``num_particles``), ``"dreg"`` (IWAE_K with
            doubly reparameterized guide gradients), or a loss object with ``loss`` and
            ``loss_and_grads`` methods, e.g. ``inference.FreeBitsELBO(0.25)`` (free bits,
            nats per latent dimension).
        device: where data and, when ``model`` is a bound method of an ``nn.Module``, that
            module live; ``"auto"`` picks CUDA when present.
        kl_warmup_epochs: scale the latent terms by ``epoch / kl_warmup_epochs`` (capped at
            one) during the first epochs; the recorded ``train_loss`` is of that objective.
        batch_transform: maps a minibatch's tensors to new ones before each step, e.g.
            dynamic binarization or uniform dequantization drawn afresh every epoch (its
            random draws come from torch's generator, which checkpoints save).
        valid_data: optional held-out data; its single-sample ELBO per datapoint is recorded
            every epoch, without gradients and without touching parameters.
        checkpoint: file to write after every epoch (atomically): module and Pyro parameters,
            optimizer and random-number states, history.
        resume: continue from ``checkpoint`` when it exists; the result equals that of an
            uninterrupted run with the same seed.
        callback: called with each epoch's record after it is appended (on every process
            when ``distributed``).
        distributed: data-parallel training over the default ``torch.distributed`` process
            group, created from ``torchrun``'s environment when needed: ``batch_size`` is
            the global batch, split across processes, each on its own device (see
            :mod:`inference.distributed`). The result equals single-process training on the
            same batches up to the random draws and float rounding.
        compile: trace the step once per batch shape and compile it with ``torch.compile``
            (:class:`inference.compiled_step.CompiledSVIStep`): ``"elbo"``/``"meanfield"``
            pairs whose model and guide are methods of one module owning their parameters;
            the same losses and gradients as the default step, faster once compiled.
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

    Pyro's validation (argument checks of distributions and models) runs on the first step
    only, when it is enabled; the data are checked for NaN up front.

    Returns:
        one record per epoch: ``epoch``, ``train_loss`` (the objective minimized, nats per
        datapoint, averaged over the epoch), ``seconds``, and ``valid_elbo`` when asked.
    """
    device = resolve_device(device)
    if mixed_precision and compile:
        raise ValueError("mixed_precision=True does not combine with compile=True")
    if mixed_precision and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("mixed_precision=True needs bfloat16 support on the CUDA device "
                         "(compute capability 8.0 or newer)")
    if distributed:
        from .distributed import DataParallel

        parallel = DataParallel.from_env(device)
        device = parallel.device
    else:
        parallel = OneProcess()
    tensors = tuple(t.to(device) for t in _as_tensors(data))
    check_finite_inputs(tensors, {})
    valid = tuple(t.to(device) for t in _as_tensors(valid_data)) if valid_data is not None else None
    modules = [m for m in {id(m): m for m in map(_module_of, (model, guide)) if m}.values()]
    for module in modules:
        module.to(device)
    num_data = tensors[0].shape[0]
    if batch_size < 1 or epochs < 0:
        raise ValueError(f"need batch_size >= 1 and epochs >= 0, got {batch_size}, {epochs}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    pyro.set_rng_seed(parallel.process_seed(seed))
    # the pair checked on a first minibatch (random state restored) before any step
    plan = plan_minibatches(model, guide, tensors, batch_size=batch_size, loss=loss,
                            num_particles=num_particles, shuffle=shuffle,
                            batch_transform=batch_transform)
    shuffler = torch.Generator().manual_seed(seed)  # the same permutation on every process
    # SVIStep: SVI with Pyro's ELBOs scored as the sites are sampled and one torch Adam
    # (docs/performance.md: the same loss and gradients at less overhead per step).
    optimizer = Adam(lr)
    if compile:
        if distributed or num_particles != 1:
            raise ValueError("compile=True needs one process and num_particles=1")
        from .compiled_step import CompiledSVIStep

        parallel.attach(CompiledSVIStep(model, guide, optimizer, loss=loss))
    else:
        parallel.attach(SVIStep(model, guide, optimizer, loss=loss, num_particles=num_particles))
    history = []
    if resume and Path(checkpoint).exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        for module, module_state in zip(modules, state["modules"]):
            module.load_state_dict(module_state)
        pyro.get_param_store().set_state(state["param_store"])
        optimizer.set_state(state["optimizer"])
        shuffler.set_state(state["shuffler"])
        parallel.set_rng_state(state["rng"])
        history = state["history"]
    parallel.prepare(modules, tuple(t[:1] for t in tensors), batch_transform)
    validate, validated = is_validation_enabled(), False
    bar = tqdm(range(len(history), epochs), desc=f"fit ({loss})",
               disable=not progress or parallel.rank != 0, leave=False)
    for epoch in bar:
        start = time.perf_counter()
        order = (torch.randperm(num_data, generator=shuffler) if shuffle
                 else torch.arange(num_data)).to(device)
        beta = min(1.0, epoch / kl_warmup_epochs) if kl_warmup_epochs else 1.0
        total = 0.0
        with scale_latents(beta):
            for begin in range(0, num_data, batch_size):
                index = order[begin:begin + batch_size]
                local = parallel.shard(index)
                batch = tuple(t[local] for t in tensors)
                if batch_transform is not None and len(local):
                    batch = _as_tensors(batch_transform(*batch))
                # Validate the first step's shapes and values; later steps skip the checks.
                with pyro.validation_enabled(validate and not validated), torch.autocast(
                        device.type, dtype=torch.bfloat16, enabled=mixed_precision):
                    # a model that scales its own plate gets factor 1 (num_data == size)
                    total += parallel.step(batch, num_data if not plan.model_scales
                                           else len(index), len(index))
                validated = True
        # the epoch's one read of the step losses (tensors on the device, or floats)
        record = {"epoch": epoch + 1,
                  "train_loss": float(total) / num_data / _num_batches(num_data, batch_size)}
        if kl_warmup_epochs:
            record["kl_weight"] = beta
        if valid is not None:
            record["valid_elbo"] = parallel.valid_elbo(model, guide, valid)
        record["seconds"] = time.perf_counter() - start
        history.append(record)
        bar.set_postfix(loss=f"{record['train_loss']:.3f}")
        if checkpoint is not None:
            parallel.save(checkpoint, lambda rng: {
                "modules": [m.state_dict() for m in modules],
                "param_store": checkpoints.foreign_param_store_state(modules),
                "optimizer": optimizer.get_state(),
                "shuffler": shuffler.get_state(),
                "rng": rng,
                "history": history,
            })
        if callback is not None:
            callback(record)
    return history


def _num_batches(num_data: int, batch_size: int) -> int:
    return -(-num_data // batch_size)
