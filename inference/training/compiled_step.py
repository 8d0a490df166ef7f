"""A compiled SVI step for pairs whose trace structure is fixed: trace once, compile, replay.

For each new batch shape (and handler setting, e.g. the data-plate scale) it traces the lean
ELBO of :class:`inference.training.svi_step.SVIStep` *and its gradient* once
(:mod:`inference.compiling`: ``make_fx`` with the owning module's parameters as graph inputs,
random draws included) and compiles that graph of tensor operations from ``(parameters,
batch)`` to ``(loss, gradients)``. The draws are those of the eager step, so loss and
gradients equal the eager ones up to float rounding.

The importance-weighted objectives ``"iwae"`` and ``"dreg"`` with K particles are traced the
same way from :class:`inference.training.svi_step.ImportanceScorer` (the per-datapoint log
weights of K vectorized particles; DReG's weighted latent gradients are tensor hooks, which
the trace records as ordinary multiplications).

Requirements (checked, ``ValueError`` otherwise): ``model`` and ``guide`` are methods of one
``torch.nn.Module`` that owns every parameter they use (as every model in
:mod:`ppl_models`), and the pair suits the lean path (``"elbo"`` or ``"meanfield"`` with one
particle, or ``"iwae"``/``"dreg"`` with any number, and a guide that reparameterizes exactly
the model's latents; for ``"dreg"`` no parameter shared by model and guide). The pair's
Python control flow is frozen at tracing: it must not depend on the values of the data or of
the draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import torch
from pyro.infer.util import is_validation_enabled

from ..checks import check_outer_handlers, check_pair_arguments
from .. import compiling
from ..pair_check import masked_off, trace_pair
from ..random_state import forked_rng, forked_torch_rng
from ..supports import describe_support
from ..weights import check_data, gap_to_eager
from .objectives import make_loss
from .svi_step import (
    LEAN_LOSSES,
    WEIGHTED_LOSSES,
    Adam,
    check_model_observes,
    check_optimizer,
    check_param_store,
    importance_loss,
    lean_eligible,
    score_pair,
    scorer_dreg_obstacle,
    score_weights,
    unique_tensors,
    weights_eligible,
    with_gradients,
)

# Supports that a distribution's family fixes, whatever its parameters: the only ones a
# compiled step checks later batches' observed arguments against.
FIXED_SUPPORTS = tuple(getattr(pyro.distributions.constraints, name) for name in (
    "boolean", "real", "positive", "nonnegative", "unit_interval", "nonnegative_integer",
    "positive_integer", "simplex", "real_vector", "corr_cholesky", "positive_definite"))

# torch.compile backend; "eager" replays the traced graph uncompiled (tests, debugging).
DEFAULT_BACKEND = "inductor"


def _check_backend(backend) -> str:
    """``backend``, or :data:`DEFAULT_BACKEND` for None; ``ValueError`` naming it unless it is
    the name of a ``torch.compile`` backend."""
    if backend is None:
        return DEFAULT_BACKEND
    if not isinstance(backend, str):
        raise ValueError(f"backend must be None or a torch.compile backend name, got "
                         f"{backend!r}")
    compiling.check_backend(backend, "backend")
    return backend


class CompiledSVIStep:
    """``step(*args) -> float`` like :class:`inference.training.svi_step.SVIStep`, through a
    compiled graph.

    Args:
        model, guide: bound methods of one ``nn.Module`` that owns all their parameters.
        optim: :class:`inference.training.svi_step.Adam` (default lr 1e-3).
        loss: ``"elbo"``, ``"meanfield"``, ``"iwae"`` or ``"dreg"``.
        num_particles: K of ``"iwae"``/``"dreg"`` (1 for the ELBOs).
        backend: ``torch.compile`` backend name (None: :data:`DEFAULT_BACKEND`,
            ``"inductor"``; ``"eager"`` only replays the traced graph), checked here.

    Each new batch shape or handler setting traces and compiles again (seconds to a minute on
    a CPU); a training run sees two shapes, the full batches and the last partial one.
    """

    def __init__(self, model: Callable, guide: Callable, optim=None, loss: str = "elbo",
                 backend: str | None = None, num_particles: int = 1):
        check_pair_arguments(model, guide, num_particles)
        if optim is not None:
            check_optimizer(optim)
        backend = _check_backend(backend)
        owner = compiling.owning_module(model, guide, "a compiled step")
        if loss not in LEAN_LOSSES + WEIGHTED_LOSSES:
            raise ValueError(f"compiled steps support the losses "
                             f"{LEAN_LOSSES + WEIGHTED_LOSSES}, got {loss!r}")
        if loss in LEAN_LOSSES and num_particles != 1:
            raise ValueError(f"compiled {loss!r} steps take one particle, got "
                             f"num_particles={num_particles} (use 'iwae' or 'dreg' for K > 1)")
        self.num_particles = num_particles
        self._nesting: int | None = None  # plate nesting + 1 (weighted losses)
        self.model, self.guide, self.module = model, guide, owner
        self.optim = optim if optim is not None else Adam()
        self.loss_name, self.backend = loss, backend
        self._graphs: dict[tuple, Callable] = {}
        self._checked = False
        # per arguments key (their structure and shapes, as graphs are keyed): (argument leaf,
        # site, support) of observed sites whose value is an argument
        self._observed_arguments: dict[tuple, list[tuple[int, str, object]]] = {}

    def _named_params(self):
        return [(n, p) for n, p in self.module.named_parameters() if p.requires_grad]

    def _check(self, args, kwargs, model_trace, guide_trace) -> None:
        check_param_store(self.model, self.guide, args, kwargs)
        if self.loss_name in WEIGHTED_LOSSES:
            self._nesting = weights_eligible(self.model, self.guide, args, kwargs,
                                             f"CompiledSVIStep(loss='{self.loss_name}')")
            eligible = self._nesting is not None
        else:
            eligible = lean_eligible(make_loss(self.loss_name), self.model, self.guide, args,
                                     kwargs)
        if not eligible:
            raise ValueError("compiled steps need a guide that reparameterizes exactly the "
                             "model's latent sites (use fit without compile)")
        owned = {id(p) for _, p in self._named_params()}
        with pyro.poutine.block(), torch.no_grad(), forked_rng():
            scorer = self._score(args, kwargs)
        if self.loss_name == "dreg":
            obstacle = scorer_dreg_obstacle(scorer, self.guide, args, kwargs)
            if obstacle is not None:
                raise ValueError(
                    f"compiled 'dreg' steps need {obstacle}; or use fit without compile, "
                    "which takes DReGLoss's path for such pairs (for a parameter that model "
                    "and guide share, the IWAE gradient, as DReGLoss warns)")
        check_model_observes(model_trace, guide_trace, False, "CompiledSVIStep")
        foreign = [p for p in unique_tensors(scorer.params)
                   if id(p) not in owned and p.requires_grad]
        if foreign:
            raise ValueError(f"{len(foreign)} parameter(s) of the pair are not owned by "
                             f"{type(self.module).__name__} (pyro.param outside the module); "
                             "compiled steps optimize the module's parameters only")
        self._checked = True

    def _record_observed_arguments(self, args, kwargs, model_trace) -> None:
        """Note, for this structure of arguments, the observed sites whose value is one of
        the arguments (``obs=x``) and whose family fixes their support (Bernoulli's 0/1,
        Poisson's counts, a Normal's reals; not ends read from parameters, draws or arguments,
        such as a Multinomial's ``total_count``): a graph scores later batches without Pyro's
        checks, so :meth:`_check_batch` checks those arguments. Masked sites too, values
        under the mask included, as Pyro checks them (a batch whose mask is on where the
        first batch's was off would train on them); not a site under ``.mask(False)``,
        whose values Pyro never reads."""
        leaves = compiling.tensor_leaves(args, kwargs)
        found = []
        for site in model_trace.nodes.values():
            if site["type"] != "sample" or not site["is_observed"] \
                    or masked_off(site["fn"]):
                continue
            position = next((i for i, leaf in enumerate(leaves) if leaf is site["value"]),
                            None)
            support = site["fn"].support
            while hasattr(support, "base_constraint"):  # the per-element support
                support = support.base_constraint
            if position is not None and any(support is fixed for fixed in FIXED_SUPPORTS):
                found.append((position, site["name"], support))
        self._observed_arguments[compiling.arguments_key(args, kwargs)] = found

    def _check_batch(self, args, kwargs) -> None:
        """While Pyro's validation is on (as :class:`SVIStep` checks every batch): NaN or
        infinite data, and observed arguments outside their site's support, ``ValueError``
        naming them (the graph would step on a NaN loss, or train on impossible data)."""
        if not is_validation_enabled():
            return
        check_data(args, kwargs)
        leaves = compiling.tensor_leaves(args, kwargs)
        # (arguments of a structure not seen yet: their graph is traced with Pyro's checks)
        for position, name, support in self._observed_arguments.get(
                compiling.arguments_key(args, kwargs), ()):
            value = leaves[position]
            inside = support.check(value)
            if not bool(inside.all()):
                raise ValueError(
                    f"CompiledSVIStep: observed site '{name}' has "
                    f"{int((~inside).sum())} value(s) outside its support "
                    f"({describe_support(support)}) in this batch (argument leaf {position}, "
                    f"shape {list(value.shape)}): fix the data or the likelihood")

    def _score(self, args, kwargs):
        """The eager scorer of one step (``.params``: parameters touched)."""
        if self.loss_name in WEIGHTED_LOSSES:
            return score_weights(self.model, self.guide, args, kwargs, self.num_particles,
                                 self._nesting, dreg=self.loss_name == "dreg")
        return score_pair(self.model, self.guide, args, kwargs, self.loss_name == "meanfield")

    def _loss_and_grads(self, params, args, kwargs):
        """Loss and gradients by ``params``, the module's parameters bound to them."""
        scorer = self._score(args, kwargs)
        if self.loss_name in WEIGHTED_LOSSES:
            surrogate, loss = importance_loss(scorer)
        else:
            surrogate = loss = -scorer.elbo
        grads = torch.autograd.grad(surrogate, params, allow_unused=True)
        grads = tuple(torch.zeros_like(p) if g is None else g for p, g in zip(params, grads))
        return loss.detach(), grads

    def _graph(self, params, args, kwargs) -> Callable:
        """The batch's graph; a new one is traced, compiled and checked against the eager
        step. The passes that check the pair, trace and compare it run the pair without
        training it: the module's buffers (batch-norm statistics) are put back after them."""
        check_outer_handlers("CompiledSVIStep")
        key = (compiling.arguments_key(args, kwargs), compiling.handler_key(),
               compiling.module_key(self.module))
        graph = self._graphs.get(key)
        if graph is None:
            buffers = {name: b.clone() for name, b in self.module.named_buffers()}
            try:
                # one eager run of the pair on this batch, for the checks of a new graph
                with pyro.poutine.block(), torch.no_grad(), forked_rng():
                    model_trace, guide_trace = trace_pair(self.model, self.guide, args, kwargs)
                if not self._checked:
                    self._check(args, kwargs, model_trace, guide_trace)
                self._record_observed_arguments(args, kwargs, model_trace)
                names = [n for n, _ in self._named_params()]
                traced = compiling.trace_with_inputs(self.module, names, self._loss_and_grads,
                                                     params, args, kwargs)
                graph = compiling.compile_graph(traced, self.backend)
                self._check_against_eager(graph, params, args, kwargs)
            finally:  # a refused batch too: its check passes trained nothing
                with torch.no_grad():
                    for name, buffer in self.module.named_buffers():
                        buffer.copy_(buffers[name])
            self._graphs[key] = graph
        return graph

    def _check_against_eager(self, graph, params, args, kwargs) -> None:
        """Run a new graph and the eager step twice on the same torch draws (torch's random
        state restored after each; numpy's and Python's move between the eager runs and are
        put back afterwards); a loss beyond float rounding from the first eager one means the
        trace froze something that changes between calls (numpy's or Python's random
        numbers, a value read outside torch): ``ValueError``."""
        with forked_rng():
            with forked_torch_rng():
                eager, _ = self._loss_and_grads(params, args, kwargs)
            with forked_torch_rng():
                again, _ = self._loss_and_grads(params, args, kwargs)
        with forked_rng(), torch.no_grad():
            compiled, _ = graph(params, compiling.tensor_leaves(args, kwargs))
        gap, tolerance = max(gap_to_eager(loss.reshape(1), eager.reshape(1))
                             for loss in (compiled, again))
        if not gap <= tolerance:
            raise ValueError(
                f"a compiled step's loss differs from the eager step's by {gap:.3g} nats "
                f"(tolerance {tolerance:.3g}) on the same draws: the trace froze something "
                f"that changes between calls ({type(self.module).__name__}'s pair uses "
                "numpy's or Python's random numbers, or values read outside torch); train "
                "without compile")

    @with_gradients
    def loss_and_grads(self, *args, **kwargs) -> float:
        """The loss, with its gradient written to ``.grad`` of the module's parameters."""
        self._check_batch(args, kwargs)
        return float(self._replay(args, kwargs))

    def _replay(self, args, kwargs) -> torch.Tensor:
        """Run the batch's graph: the loss (0-dim tensor), gradients written to ``.grad``."""
        params = [p for _, p in self._named_params()]
        graph = self._graph(params, args, kwargs)
        with torch.no_grad():
            loss, grads = graph(params, compiling.tensor_leaves(args, kwargs))
        for param, grad in zip(params, grads):
            param.grad = grad
        return loss

    @with_gradients
    def step(self, *args, **kwargs) -> float:
        """One optimizer step on the batch; returns the loss before the step.

        Raises:
            ValueError: while Pyro's validation is on, NaN or infinite data, or observed
                arguments outside their site's support (:meth:`_check_batch`).
            FloatingPointError: the loss is NaN or infinite (the step is not applied).
        """
        self._check_batch(args, kwargs)
        loss = self._replay(args, kwargs)
        params = [p for _, p in self._named_params()]
        value = float(loss)
        if not math.isfinite(value):
            for param in params:
                param.grad = None
            raise FloatingPointError(
                f"CompiledSVIStep.step: the loss is {value}, not applied: check the "
                "parameters (NaN after a diverged step) and the data")
        self.optim(params)
        for param in params:
            param.grad = None
        return value

    @with_gradients
    def tensor_step(self, *args, **kwargs) -> torch.Tensor:
        """:meth:`step` with the loss as a 0-dim tensor, read by nobody yet (no host
        synchronization; see :meth:`inference.training.svi_step.SVIStep.tensor_step`), for a
        caller that checked its data beforehand and reads the losses for NaN itself, as
        :func:`inference.fit` does: the batch is not checked and a non-finite loss is
        applied."""
        loss = self._replay(args, kwargs)
        params = [p for _, p in self._named_params()]
        self.optim(params)
        for param in params:
            param.grad = None
        return loss

    __call__ = step
