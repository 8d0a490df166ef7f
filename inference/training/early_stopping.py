"""Best-epoch selection on held-out data (early stopping without stopping).

Small training sets overfit: the held-out score rises, peaks and falls while the training
loss keeps going down. :class:`KeepBest` is a :func:`inference.fit` ``callback`` that scores
the model after every epoch on a validation split, keeps a copy of the parameters of the best
epoch so far, and puts them back at the end (:meth:`KeepBest.restore`). This is early
stopping with unlimited patience (Prechelt 1998 [1]; Goodfellow, Bengio, Courville 2016 [2],
Section 7.8): the epoch is chosen on validation data only, so the test score stays unbiased.

References:
    [1] Prechelt (1998), Early Stopping - But When?, in Neural Networks: Tricks of the Trade.
    [2] Goodfellow, Bengio, Courville (2016), Deep Learning, MIT Press.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Sequence

import numpy
import pyro
import torch

from ..checks import check_positional_call, evaluation_mode
from ..reachable import reachable_modules
from .checkpoints import state_shapes

__all__ = ["KeepBest"]


class KeepBest:
    """Keep the parameters of the epoch with the highest validation score.

    Args:
        modules: the ``nn.Module`` (or modules) whose parameters and buffers
            :func:`inference.fit` trains (may be empty for a pair whose parameters are all
            ``pyro.param`` sites). The values of the Pyro param store's other parameters (a
            plain-function pair's ``pyro.param`` sites) are kept and restored with them, so the
            restored pair is one that an epoch had. Networks that ``score`` reaches beyond
            them (a plain-function pair's ``pyro.module`` networks, held in a global or a
            closure) are scored in evaluation mode too, and their buffers (batch norm's
            running statistics) are kept and restored with the param store's values.
        score: called after every epoch with no arguments; returns a real number (a Python
            or numpy int or float, a one-element tensor or array; not a bool or a string),
            higher is better (e.g. the mean exact log-likelihood of a validation split, nats per
            datapoint). It runs under ``torch.no_grad()`` with every module in evaluation
            mode (no dropout); each module's training flag is restored afterwards. A NaN
            score is refused (``ValueError`` naming the epoch: a NaN validation score means
            a broken model or score, not a bad epoch), and so is ``+inf`` (no later epoch
            could beat it: a degenerate density, e.g. a Gaussian whose scale collapsed);
            ``-inf`` counts as the worst score.

    One object serves one run of :func:`inference.fit` (and its resumptions from a
    checkpoint): when an epoch number does not follow the last one scored (a new ``fit``,
    whose epochs count from 1 again), what was kept of the earlier run is dropped and the new
    run starts fresh, so :meth:`restore` never loads another run's parameters into this one.

    Use ``keep = KeepBest(m, score); fit(..., callback=keep); keep.restore()``. Each call
    adds ``"valid_score"`` to the epoch's record (so it lands in fit's history); after
    :meth:`restore`, ``best_epoch`` and ``best_score`` say what was kept. With a checkpoint,
    fit saves the best epoch's parameters in it (:meth:`get_state`), so a resumed run
    (``fit(..., checkpoint=path, resume=True, callback=KeepBest(...))``) restores the best
    epoch of the whole run, the interrupted part included.
    """

    def __init__(self, modules: torch.nn.Module | Sequence[torch.nn.Module],
                 score: Callable[[], float]):
        wanted = ("modules must be an nn.Module or a sequence of them (empty for a pair whose "
                  "parameters are all pyro.params)")
        try:
            modules = [modules] if isinstance(modules, torch.nn.Module) else list(modules)
        except TypeError:  # None, a number
            raise ValueError(f"{wanted}, got {type(modules).__name__}") from None
        if not all(isinstance(m, torch.nn.Module) for m in modules):
            raise ValueError(wanted)
        if not callable(score):  # the project answers bad input with ValueError
            raise ValueError(f"score must be callable, got {type(score).__name__}")  # noqa: TRY004
        # (a score taking the record failed after the first epoch, naming nothing)
        check_positional_call(score, "score", 0, "KeepBest",
                              "it is called with no arguments after every epoch; read what "
                              "it needs from the networks or the validation data it holds")
        self.modules = modules
        self.score = score
        self.best_score = -math.inf
        self.best_epoch: int | None = None
        self.scored = 0  # epochs scored
        self._last_epoch: int | None = None  # the epoch number of the last call
        self._best_state: list[dict] | None = None
        self._best_store: dict[str, torch.Tensor] | None = None  # other store parameters
        self._best_buffers: list[list[torch.Tensor]] | None = None  # other networks' buffers

    def _other_networks(self) -> list[torch.nn.Module]:
        """The networks ``score`` reaches that are not (inside) ``modules``, in a fixed
        order."""
        inside = {id(sub) for m in self.modules for sub in m.modules()}
        return [n for n in reachable_modules(self.score) if id(n) not in inside]

    def _forget(self) -> None:
        """Drop what was kept: the state of a fresh object."""
        self.best_score, self.best_epoch, self.scored = -math.inf, None, 0
        self._best_state = self._best_store = self._best_buffers = None

    def __call__(self, record: dict) -> None:
        epoch = record.get("epoch")
        if (isinstance(epoch, numbers.Integral) and self._last_epoch is not None
                and epoch <= self._last_epoch):
            # the epoch count went back: a new fit run, whose parameters are not the kept ones
            self._forget()
        others = self._other_networks()
        with evaluation_mode([*self.modules, *others]), torch.no_grad():
            value = self._as_score(self.score(), epoch)
        if math.isnan(value):
            raise ValueError(f"the validation score of epoch {epoch} is NaN "
                             f"(score={self._name()}); KeepBest refuses NaN scores")
        if value == math.inf:
            raise ValueError(f"the validation score of epoch {epoch} is +inf "
                             f"(score={self._name()}); KeepBest refuses +inf scores (a broken "
                             "model or score, e.g. a density whose scale collapsed: no later "
                             "epoch could beat it)")
        record["valid_score"] = value
        self._last_epoch = epoch if isinstance(epoch, numbers.Integral) else None
        self.scored += 1
        if value > self.best_score:
            self.best_score = value
            self.best_epoch = record.get("epoch")
            self._best_state = [copy.deepcopy(m.state_dict()) for m in self.modules]
            self._best_store = {name: value.detach().clone()
                                for name, value in self._store_parameters()}
            self._best_buffers = [[b.detach().clone() for b in n.buffers()] for n in others]

    def _store_parameters(self) -> list[tuple[str, torch.Tensor]]:
        """``(name, unconstrained tensor)`` of the Pyro param store's parameters that are not
        the modules' own (those come back with the modules' state)."""
        owned = {id(t) for m in self.modules for t in m.state_dict(keep_vars=True).values()}
        return [(name, value) for name, value in pyro.get_param_store().named_parameters()
                if id(value) not in owned]

    def _name(self) -> str:
        return getattr(self.score, "__name__", None) or type(self.score).__name__

    def _as_score(self, value, epoch) -> float:
        """The score callable's return ``value`` as a float; ``ValueError`` (as for the rest of
        KeepBest's input) naming the callable and what it returned unless it is a real
        number."""
        if torch.is_tensor(value) and value.numel() == 1 and not value.is_meta and \
                not value.is_complex() and value.dtype != torch.bool:
            return float(value)
        if isinstance(value, numpy.ndarray) and value.size == 1 and \
                value.dtype.kind in "iuf":  # a 0-d array: elbo(...).mean().numpy()
            return float(value.reshape(()))
        if isinstance(value, numbers.Real) and not isinstance(value, (bool, numpy.bool_)):
            return float(value)
        shown = (f"a tensor of shape {list(value.shape)} and dtype {value.dtype}"
                 if torch.is_tensor(value) else f"{type(value).__name__} {value!r:.60}")
        raise ValueError(f"KeepBest: score {self._name()} returned {shown} after epoch {epoch}; "
                         "it must return a real number (a float, int, one-element tensor or "
                         "array), higher is better")

    def restore(self) -> None:
        """Load the best epoch's parameters into the modules and the param store's other
        parameters (in place, so optimizers and the Pyro param store keep referring to the
        same tensors)."""
        if self._best_state is None:
            if self.scored:
                raise ValueError(f"every score of the {self.scored} epochs scored was -inf, "
                                 "so there is no best epoch to restore; check the score")
            raise ValueError("no epoch was scored yet: pass this object as fit's callback")
        for m, state in zip(self.modules, self._best_state):
            m.load_state_dict(state)
        saved = self._best_store or {}
        with torch.no_grad():
            for name, value in self._store_parameters():
                if name in saved and saved[name].shape == value.shape:
                    value.copy_(saved[name])
            for network, buffers in zip(self._other_networks(), self._best_buffers or []):
                live = list(network.buffers())
                if [b.shape for b in live] == [b.shape for b in buffers]:
                    for target, value in zip(live, buffers):
                        target.copy_(value)

    def get_state(self) -> dict:
        """The best epoch so far, its score and parameters, and the number of epochs scored
        (:func:`inference.fit` saves it in each checkpoint)."""
        return {"best_score": self.best_score, "best_epoch": self.best_epoch,
                "scored": self.scored, "last_epoch": self._last_epoch,
                "best_state": self._best_state,
                "best_store": self._best_store, "best_buffers": self._best_buffers}

    def set_state(self, state: dict) -> None:
        """Continue from :meth:`get_state`'s ``state``, after checking that its parameters
        fit the modules (names and shapes)."""
        best = state["best_state"]
        if best is not None:
            mine = [state_shapes(m.state_dict()) for m in self.modules]
            theirs = [state_shapes(s) for s in best]
            if mine != theirs:
                raise ValueError("KeepBest.set_state: the saved best parameters do not fit the "
                                 f"modules: saved {theirs}, modules {mine}")
        self.best_score, self.best_epoch = state["best_score"], state["best_epoch"]
        self.scored, self._best_state = state["scored"], best
        self._best_store = state.get("best_store")  # absent from older checkpoints
        self._best_buffers = state.get("best_buffers")
        self._last_epoch = state.get("last_epoch")  # absent from older checkpoints
