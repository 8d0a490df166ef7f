"""Data-parallel SVI over ``torch.distributed``: ``fit(..., distributed=True)`` under torchrun.

Every process holds the whole data set and the same model, draws the same permutation each
epoch, and trains on its strided shard of each global minibatch (``index[rank::world]``, as
``torch.utils.data.DistributedSampler`` strides a data set). Rank ``r`` scales its
``"data"`` plate by ``N / B_r``, so its loss ``L_r`` estimates the full-data objective from
its ``B_r`` datapoints; the gradients are then averaged with the weights ``B_r / B``:

    sum_r (B_r / B) grad L_r = (N / B) sum_{i in batch} grad l_i,

the gradient that one process computes on the concatenated minibatch of ``B`` datapoints
(exactly, also for a last minibatch that does not split evenly). Sites outside the plate
(global latents, priors on parameters) carry weight one on every rank, and the weights sum
to one, so they too count once. Because every process then applies the same averaged
gradient with the same optimizer state, the parameters stay identical everywhere; rank 0's
parameters are broadcast once before the first step.

Why not ``DistributedDataParallel``: DDP reduces gradients from hooks that it arms in its own
``forward``; Pyro's SVI never calls ``forward`` (it runs ``model``/``guide`` methods and
computes the gradients itself in ``loss_and_grads``), and Pyro parameters that live in the
param store rather than in a module would not be seen at all. So the step here is Pyro's
``SVI.step`` with one coalesced ``all_reduce`` inserted between the backward pass and the
optimizer, which covers module and param-store parameters alike.

References:
    [1] Li et al. (2020), PyTorch Distributed: Experiences on Accelerating Data Parallel
        Training (the gradient-averaging scheme DDP implements).
    [2] Goyal et al. (2017), Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour
        (a global batch of B over W workers, per-worker losses averaged).
"""

from __future__ import annotations

import os

import numpy as np
import pyro
import pyro.infer.util
import torch
import torch.distributed as dist
from pyro import poutine

from ..checks import validation_enabled
from ..evidence.estimators import elbo
from ..random_state import forked_rng
from ..pair_check import trace_pair
from .checkpoints import rng_state, save_checkpoint, set_rng_state
from .handlers import scale_data_plate
from .minibatches import copies

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def check_process_group() -> None:
    """``ValueError`` unless a process group exists or torchrun's variables (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) are set to make one."""
    if not dist.is_initialized() and any(name not in os.environ for name in TORCHRUN_VARIABLES):
        raise ValueError(
            f"distributed training needs a process group: launch with torchrun "
            f"({_missing_variables()}) or call torch.distributed.init_process_group first")


def process_rank() -> int:
    """This process's rank: the process group's when one exists (a user's
    ``init_process_group(rank=...)`` sets no environment variable), else torchrun's ``RANK``
    (0 when unset)."""
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def init_process_group(device: torch.device) -> torch.device:
    """Join the default process group (creating it from torchrun's environment); this rank's device.

    The backend is NCCL for CUDA and gloo otherwise. A CUDA rank uses ``cuda:LOCAL_RANK`` (one
    GPU per process, whatever index ``device`` names); a CPU rank uses the CPU.

    Raises:
        ValueError: no process group exists and torchrun's variables (``RANK``,
            ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) are not set.
    """
    check_process_group()
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def _missing_variables() -> str:
    """Which of torchrun's environment variables are not set, in words."""
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    return f"missing environment variables {', '.join(missing)}" if missing else \
        "its environment variables are set"


def _coalesced_all_reduce(tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Sum ``tensors`` over all ranks with one ``all_reduce`` per dtype; returns new tensors."""
    out: list[torch.Tensor | None] = [None] * len(tensors)
    # dtypes in order of first appearance: a set's order could differ between processes
    for dtype in dict.fromkeys(t.dtype for t in tensors):
        members = [i for i, t in enumerate(tensors) if t.dtype == dtype]
        flat = torch.cat([tensors[i].reshape(-1).to(device) for i in members])
        dist.all_reduce(flat)
        for i, piece in zip(members, flat.split([tensors[i].numel() for i in members])):
            out[i] = piece.view_as(tensors[i]).to(tensors[i].device)
    return out


class DataParallel:
    """The training strategy :func:`inference.fit` uses with ``distributed=True``.

    Holds the SVI object, the ordered list of parameters that every rank reduces, and this
    rank's place in the default process group. Methods mirror
    :class:`inference.training.fit.OneProcess`.
    """

    def __init__(self, device: torch.device):
        if not dist.is_initialized():
            raise ValueError(
                "DataParallel needs the default process group, which does not exist: build "
                "it with DataParallel.from_env(device), under torchrun "
                f"({_missing_variables()}), or call torch.distributed.init_process_group first")
        self.device = device
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.params: list[torch.Tensor] = []

    @classmethod
    def from_env(cls, device: torch.device) -> "DataParallel":
        """Join (or create, from torchrun's environment) the default process group and
        wrap it: :func:`init_process_group` with this rank's ``device``."""
        return cls(init_process_group(device))

    def attach(self, svi) -> None:
        """Keep the step object (:class:`inference.SVIStep` or its compiled kin) whose
        gradients each step averages over the ranks."""
        self.svi = svi

    def process_seed(self, seed: int) -> int:
        """``seed`` on rank 0 (so one process reproduces :func:`fit`), independent elsewhere."""
        if self.rank == 0:
            return seed
        return int(np.random.SeedSequence([seed, self.rank]).generate_state(1)[0])

    def prepare(self, modules, example: tuple, batch_transform) -> None:
        """Create every parameter, check all ranks agree on them, broadcast rank 0's values.

        Args:
            modules: the ``nn.Module`` owners of ``model``/``guide``, whose parameters and
                buffers are synchronized even if a step does not touch them.
            example: the data tensors' first datapoint, ``[1, ...]`` each, run through the
                pair once (random state restored, effects hidden) so lazily created
                ``pyro.param`` sites exist before the first step.
        """
        with forked_rng(), poutine.block(), \
                validation_enabled(False):
            if batch_transform is not None:
                example = tuple(batch_transform(*copies(example)))
            trace_pair(self.svi.model, self.svi.guide, example, {})
        named = dict(sorted(pyro.get_param_store().named_parameters()))
        seen = {id(p) for p in named.values()}
        for m, module in enumerate(modules):
            for name, param in module.named_parameters():
                if id(param) not in seen:
                    named[f"module{m}.{name}"] = param
                    seen.add(id(param))
        layout = [(name, tuple(p.shape), str(p.dtype)) for name, p in named.items()]
        layouts = [None] * self.world_size
        dist.all_gather_object(layouts, layout)
        for rank, other in enumerate(layouts):
            if other != layout:
                raise ValueError(
                    f"rank {rank} has parameters {other}, rank {self.rank} has {layout}: every "
                    "process must build the same model"
                )
        self.params = list(named.values())
        self._index = {id(p): i for i, p in enumerate(self.params)}
        buffers = [b for module in modules for b in module.buffers()]
        with torch.no_grad():
            for tensor in [*self.params, *buffers]:
                staged = tensor.detach().to(self.device)
                dist.broadcast(staged, src=0)
                tensor.copy_(staged)

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """This rank's strided share ``index[rank::world]`` of a global minibatch ``[batch]``."""
        return index[self.rank::self.world_size]

    def step(self, batch: tuple, num_data: int, global_size: int,
             model_scales: bool = False) -> float:
        """One data-parallel SVI step; returns the loss of the whole global minibatch.

        Args:
            batch: this rank's tensors, ``[B_r, ...]`` each (``B_r`` may be zero).
            num_data: N, datapoints in the data set (times ``fit``'s factor for a model that
                scales its plate itself, :func:`inference.training.fit`'s row weight).
            global_size: B, the global minibatch size ``sum_r B_r``.
            model_scales: the model scales its ``"data"`` plate by ``N / B_r`` itself
                (``pyro.plate("data", N, subsample=idx)``); this rank's factor is then
                ``num_data / B``, so that with the gradients' weight ``B_r / B`` each row
                weighs as in one process (``num_data / B_r`` made it a world size too much).
        """
        local = batch[0].shape[0]
        flags = [0.0] * (len(self.params) + 1)  # which parameters this rank used; its loss
        if local:
            with poutine.trace(param_only=True) as capture, \
                    scale_data_plate(num_data / (global_size if model_scales else local)):
                loss = self.svi.loss_and_grads(self.svi.model, self.svi.guide, *batch)
            for site in capture.trace.nodes.values():
                index = self._index.get(id(site["value"].unconstrained()))
                if index is None:
                    raise ValueError(
                        f"parameter '{site['name']}' appeared after the first step; create "
                        "every parameter in the model's or guide's first call"
                    )
                flags[index] = 1.0
            flags[-1] = float(loss) * local / global_size
        touched = torch.tensor(flags, dtype=torch.float64, device=self.device)
        weight = local / global_size
        grads = [p.grad * weight if p.grad is not None and local else torch.zeros_like(p)
                 for p in self.params]
        *grads, touched = _coalesced_all_reduce([*grads, touched], self.device)
        *hits, total_loss = touched.tolist()  # the step's one host synchronization
        stepped = []
        for param, grad, hit in zip(self.params, grads, hits):
            if hit:
                param.grad = grad
                stepped.append(param)
        self.svi.optim(stepped)
        pyro.infer.util.zero_grads(set(self.params))
        return total_loss

    def valid_elbo(self, model, guide, valid: tuple) -> float:
        """Single-sample ELBO per datapoint of ``valid``, each rank scoring its strided shard."""
        shard = tuple(t[self.rank::self.world_size] for t in valid)
        total = torch.zeros(2, dtype=torch.float64, device=self.device)
        if shard[0].shape[0]:
            total[0] = elbo(model, guide, *shard).sum().double()
            total[1] = shard[0].shape[0]
        dist.all_reduce(total)
        return float(total[0] / total[1])

    def from_first_rank(self, value):
        """Rank 0's ``value`` (a picklable object), on every rank: what rank 0 decides, all
        ranks do (ranks may differ in what rank 0's broadcast overwrites)."""
        held = [value]
        dist.broadcast_object_list(held, src=0)
        return held[0]

    def save(self, path, state) -> None:
        """Rank 0 writes ``state(random states of all ranks)`` atomically; all ranks wait for it.

        A collective: every rank calls it. The wait lets any rank read the file right after
        (on several nodes, ``path`` must be on a file system that they share).
        """
        states = [None] * self.world_size
        dist.all_gather_object(states, rng_state())
        if self.rank == 0:
            save_checkpoint(path, state({"world_size": self.world_size, "ranks": states}))
        dist.barrier()

    def set_rng_state(self, state: dict) -> None:
        """Restore this rank's random state from a checkpoint's ``state`` (every rank's,
        as :meth:`save` gathered them); ``ValueError`` for another world size."""
        if state.get("world_size") != self.world_size:
            raise ValueError(
                f"the checkpoint was written by {state.get('world_size', 1)} process(es); "
                f"resume it with the same number, not {self.world_size}"
            )
        set_rng_state(state["ranks"][self.rank])
