"""One SVI step with little more than the cost of the networks: the default path of ``fit``.

``pyro.infer.SVI`` with ``Trace_ELBO`` spends a noticeable share of a small network's step
outside the networks: two :class:`~pyro.poutine.Trace` objects with a replay handler, a
second pass over both traces to score them, an extra handler capturing parameters, one
optimizer per parameter (``pyro.optim``) and gradients zeroed by allocating new tensors.
:class:`SVIStep` computes the same objective with one handler that scores every site as it
is sampled (the guide's values replayed into the model), a single ``torch.optim.Adam`` over
the parameters the pair touches, and gradients reset to ``None``. The loss and gradients are
those of ``Trace_ELBO`` / ``TraceMeanField_ELBO`` [1, 2] (equal up to float rounding, tested
in ``tests/inference/test_svi_step.py``).

The first step always runs Pyro's own objective (with Pyro's validation, when enabled); it
also tells whether the pair suits the lean path: single-particle ``"elbo"``/``"meanfield"``
and every latent site of the guide reparameterized and not enumerated. Other pairs and the
importance-weighted objectives keep Pyro's objective on every step (still with the single
optimizer).

References:
    [1] Kingma, Welling (2014), Auto-Encoding Variational Bayes.
    [2] Ranganath, Gerrish, Blei (2014), Black Box Variational Inference (the ELBO surrogate).
"""

from __future__ import annotations

from typing import Callable

import pyro
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch.distributions import kl_divergence

from .objectives import make_loss

LEAN_LOSSES = ("elbo", "meanfield")


def _scaled_sum(value: torch.Tensor, msg) -> torch.Tensor:
    """``sum(scale * mask * value)`` over one site's batch dims (as Pyro scores a site)."""
    mask = msg["mask"]
    if mask is not None and mask is not True:
        if mask is False:
            return value.new_zeros(())
        value = torch.where(mask, value, value.new_zeros(()))
    total = value.sum()
    scale = msg["scale"]
    return total if isinstance(scale, float) and scale == 1.0 else total * scale


class _ScoreAsSampled(Messenger):
    """Accumulate the ELBO surrogate while the guide, then the model, run.

    Guide pass: record each latent site's message. Model pass: replay the guide's value at
    latent sites (as ``poutine.replay``) and add ``log p`` of every site minus ``log q`` of
    the latent ones, or ``-KL(q || p)`` in closed form when ``analytic_kl`` and registered.
    Param sites are collected so the optimizer sees every parameter touched.
    """

    def __init__(self, analytic_kl: bool):
        super().__init__()
        self.analytic_kl = analytic_kl
        self.guide_sites: dict[str, dict] = {}
        self.in_model = False
        self.elbo: torch.Tensor | float = 0.0
        self.params: list[torch.Tensor] = []

    def _pyro_sample(self, msg) -> None:
        if self.in_model and not msg["is_observed"]:
            guide_msg = self.guide_sites.get(msg["name"])
            if guide_msg is None:
                if site_is_subsample(msg):  # a plate the guide does not open
                    return
                raise RuntimeError(f"model site '{msg['name']}' is not sampled by the guide")
            msg["value"] = guide_msg["value"]
            msg["done"] = True

    def _pyro_post_sample(self, msg) -> None:
        if not self.in_model:
            if not msg["is_observed"]:
                self.guide_sites[msg["name"]] = msg
            return
        if site_is_subsample(msg):
            return
        if msg["is_observed"]:
            self.elbo = self.elbo + _scaled_sum(msg["fn"].log_prob(msg["value"]), msg)
            return
        guide_msg = self.guide_sites[msg["name"]]
        if self.analytic_kl:
            try:
                kl = kl_divergence(guide_msg["fn"], msg["fn"])
            except NotImplementedError:
                pass
            else:
                self.elbo = self.elbo - _scaled_sum(kl, guide_msg)
                return
        log_p = _scaled_sum(msg["fn"].log_prob(msg["value"]), msg)
        log_q = _scaled_sum(guide_msg["fn"].log_prob(guide_msg["value"]), guide_msg)
        self.elbo = self.elbo + log_p - log_q

    def _pyro_post_param(self, msg) -> None:
        value = msg["value"]
        self.params.append(value.unconstrained() if hasattr(value, "unconstrained") else value)


class _ParamCapture(Messenger):
    """Collect the unconstrained leaf of every param site (for steps on Pyro's objectives)."""

    def __init__(self):
        super().__init__()
        self.params: list[torch.Tensor] = []

    def _pyro_post_param(self, msg) -> None:
        value = msg["value"]
        self.params.append(value.unconstrained() if hasattr(value, "unconstrained") else value)


def _latent_sites(trace):
    return [site for site in trace.nodes.values() if site["type"] == "sample"
            and not site["is_observed"] and not site_is_subsample(site)]


def _lean_eligible(model, guide, args, kwargs) -> bool:
    """Whether the guide reparameterizes (and does not enumerate) every latent of the model."""
    with pyro.poutine.block(), torch.no_grad(), torch.random.fork_rng():
        guide_trace = pyro.poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = pyro.poutine.trace(
            pyro.poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    guide_latents = {site["name"] for site in _latent_sites(guide_trace)}
    if any(site["name"] not in guide_latents for site in _latent_sites(model_trace)):
        return False
    return all(getattr(site["fn"], "has_rsample", False) and not site["infer"].get("enumerate")
               for site in _latent_sites(guide_trace))


class SVIStep:
    """``step(*args, **kwargs) -> float``: one gradient step of ``loss`` on a batch.

    A drop-in for ``pyro.infer.SVI(model, guide, Adam({"lr": lr}), loss).step`` (with torch's
    Adam over all parameters instead of one optimizer per parameter). Handlers active around
    :meth:`step` apply as they would to SVI, e.g. :class:`inference.scale_data_plate` for
    minibatches and :class:`inference.scale_latents` for KL warm-up.

    Args:
        model, guide: a Pyro pair; the batch is passed to both.
        loss: ``"elbo"``, ``"meanfield"``, ``"iwae"`` or ``"dreg"`` (:func:`make_loss`).
        num_particles: particles per step (the lean path needs 1).
        lr: Adam's learning rate; the other Adam settings are torch's defaults.
        lean: allow the lean path (False: Pyro's objective on every step, for comparison).

    :meth:`step` returns the step's loss, ``-ELBO`` (or ``-IWAE``) in nats with the scale of
    the gradient.
    """

    def __init__(self, model: Callable, guide: Callable, loss: str = "elbo",
                 num_particles: int = 1, lr: float = 1e-3, lean: bool = True):
        self.model, self.guide = model, guide
        self.loss_name = loss
        self.objective = make_loss(loss, num_particles)
        self.lr = lr
        self._lean_allowed = lean and loss in LEAN_LOSSES and num_particles == 1
        self._lean: bool | None = None  # decided on the first step
        self.optimizer: torch.optim.Adam | None = None
        self._known: set[int] = set()
        self._pending_state: dict[str, dict] = {}

    @property
    def lean(self) -> bool:
        """True once the first step has chosen the lean path."""
        return bool(self._lean)

    def step(self, *args, **kwargs) -> float:
        """One Adam step on the batch; returns the loss before the step."""
        loss = self.loss_and_grads(*args, **kwargs)
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss

    __call__ = step

    def loss_and_grads(self, *args, **kwargs) -> float:
        """The loss, with its gradient accumulated in ``.grad`` of every parameter touched."""
        if self._lean:
            loss, params = self._lean_loss_and_grads(args, kwargs)
        else:
            capture = _ParamCapture()
            with capture:
                loss = self.objective.loss_and_grads(self.model, self.guide, *args, **kwargs)
            loss, params = float(loss), capture.params
            if self._lean is None:
                self._lean = self._lean_allowed and _lean_eligible(
                    self.model, self.guide, args, kwargs)
        self._register(params)
        return loss

    def _lean_loss_and_grads(self, args, kwargs):
        scorer = _ScoreAsSampled(analytic_kl=self.loss_name == "meanfield")
        with scorer:
            self.guide(*args, **kwargs)
            scorer.in_model = True
            self.model(*args, **kwargs)
        loss = -scorer.elbo
        if not torch.is_tensor(loss):
            return float(loss), scorer.params
        if loss.requires_grad:
            loss.backward()
        return loss.detach().item(), scorer.params

    def _register(self, params) -> None:
        new = []
        for param in params:
            if id(param) not in self._known and param.requires_grad:
                self._known.add(id(param))
                new.append(param)
        if not new:
            return
        if self.optimizer is None:
            self.optimizer = torch.optim.Adam(new, lr=self.lr)
        else:
            self.optimizer.add_param_group({"params": new})
        names = pyro.get_param_store()._param_to_name
        for param in new:
            state = self._pending_state.pop(names.get(param, ""), None)
            if state is not None:
                self.optimizer.state[param] = {k: v.to(param.device) if torch.is_tensor(v)
                                               else v for k, v in state.items()}

    def get_state(self) -> dict:
        """Adam's state per parameter, keyed by param-store name (for checkpoints)."""
        if self.optimizer is None:
            return dict(self._pending_state)
        names = pyro.get_param_store()._param_to_name
        state = dict(self._pending_state)
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                if param in self.optimizer.state and param in names:
                    state[names[param]] = dict(self.optimizer.state[param])
        return state

    def set_state(self, state: dict) -> None:
        """Restore :meth:`get_state`; parameters not yet seen get theirs when first touched."""
        self._pending_state = dict(state)
        if self.optimizer is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            self.optimizer = None
            self._known.clear()
            self._register(params)

