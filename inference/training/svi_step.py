"""One SVI step with little more than the cost of the networks: the default path of ``fit``.

``pyro.infer.SVI`` with ``Trace_ELBO`` spends a noticeable share of a small network's step
outside the networks: two :class:`~pyro.poutine.Trace` objects with a replay handler, a
second pass over both traces to score them, an extra handler capturing parameters, one
optimizer per parameter (``pyro.optim``) and gradients zeroed by allocating new tensors.
:class:`SVIStep` computes the same objective with one handler that scores every site as it
is sampled (the guide's values replayed into the model), a single ``torch.optim.Adam`` over
the parameters the pair touches (torch's fused kernel where the parameters allow it), and
gradients reset to ``None``. A Normal guide site's own reparameterized draw is scored from
its standard-normal noise, which gives ``log q`` and its gradient with fewer operations
(:func:`inference.densities.drawn_normal_log_density`; values set by other handlers are
scored by ``log_prob``). The loss and gradients are those of ``Trace_ELBO`` /
``TraceMeanField_ELBO`` [1, 2] (equal up to float rounding, tested in
``tests/inference/training/test_svi_step.py``).

Before the first step, a pair whose network parameters Pyro's param store shadows (a second
instance of a model in one process, :func:`check_param_store`) is refused, and Pyro's own
tracing of the objective runs once (with its checks of site shapes and model/guide match when
Pyro's validation is enabled) and tells whether the pair suits the lean path:
single-particle ``"elbo"``/``"meanfield"`` and every latent site of the guide
reparameterized and not enumerated. ``"iwae"`` and ``"dreg"`` with K particles
have their own lean path on such pairs (:class:`ImportanceScorer`: the per-datapoint log
weights scored as sampled, one backward, DReG's two surrogates folded into one by weighting
the latents' gradient). Other pairs use Pyro's objective (or :class:`inference.IWAELoss` /
:class:`inference.DReGLoss`) on every step, still with the single optimizer.

References:
    [1] Kingma, Welling (2014), Auto-Encoding Variational Bayes.
    [2] Ranganath, Gerrish, Blei (2014), Black Box Variational Inference (the ELBO surrogate).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable

import pyro
import torch
from pyro.infer.util import is_validation_enabled
from pyro.poutine.broadcast_messenger import BroadcastMessenger
from pyro.poutine.indep_messenger import IndepMessenger
from pyro.poutine.mask_messenger import MaskMessenger
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.scale_messenger import ScaleMessenger
from pyro.poutine.util import site_is_subsample

from ..checks import (PYRO_LOCK, as_number, autograd_arguments, check_no_inference_tensors,
                      check_outer_handlers, check_pair_arguments, explain_run_failure,
                      empty_shapes_tables_dropped, recording_autograd, validation_enabled,
                      validation_on)
from ..effect_guides import traceable_guide
from ..densities import closed_form_kl, drawn_normal_log_density, plain_normal
from ..pair_check import (
    PARTICLE_PLATE,
    PairError,
    check_observed_values_validated,
    conditional_sites_of_guide,
    data_frame,
    inspect_pair,
    is_delta,
    shadowed_parameters,
    site_list,
    site_mask,
    trace_pair,
)
from ..random_state import forked_rng
from ..reachable import kept_buffers, reachable_modules
from ..supports import describe_support, outside_range
from ..weights import UniformScale, check_data, log_mean_exp, per_datapoint
from .minibatches import reports_no_loss
from .objectives import detach_parameters, make_loss

LEAN_LOSSES = ("elbo", "meanfield")
WEIGHTED_LOSSES = ("iwae", "dreg")  # lean path with K vectorized particles (ImportanceScorer)
# Handlers that never give a sample site its value (plates, scales, masks); others may, e.g.
# replay or condition. Our own such handlers say so with a ``value_neutral = True`` attribute.
_VALUE_NEUTRAL = (BroadcastMessenger, IndepMessenger, MaskMessenger, ScaleMessenger)


def _scaled_sum(value: torch.Tensor, msg) -> torch.Tensor:
    """``sum(scale * mask * value)`` over one site's batch dims (as Pyro scores a site)."""
    mask = msg["mask"]
    if mask is not None and mask is not True:
        if mask is False:
            return value.new_zeros(())
        value = torch.where(mask, value, value.new_zeros(()))
    scale = msg["scale"]
    if torch.is_tensor(scale) and scale.numel() > 1:  # per-datapoint weights
        return (value * scale).sum()
    total = value.sum()
    return total if isinstance(scale, float) and scale == 1.0 else total * scale


class _ParamCapture(Messenger):
    """Collect the unconstrained leaf of every param site (for steps on Pyro's objectives)."""

    def __init__(self):
        super().__init__()
        self.params: list[torch.Tensor] = []

    def _pyro_post_param(self, msg) -> None:
        value = msg["value"]
        self.params.append(value.unconstrained() if hasattr(value, "unconstrained") else value)


class _GuideThenModel(_ParamCapture):
    """Run with the guide (``in_model`` False), then the model (True): remembers the guide's
    latent sites and which of them their own distribution drew (every handler on the stack
    value-neutral), and replays each model latent's guide value into the model
    (:meth:`_replayed_value`, which subclasses may wrap)."""

    def __init__(self):
        super().__init__()
        self.guide_sites: dict[str, dict] = {}
        self.own_draws: set[str] = set()  # guide sites whose value its distribution drew
        self.in_model = False

    def _note_guide_draw(self, msg) -> None:
        if (not msg["is_observed"] and msg["value"] is None
                and all(frame is self or isinstance(frame, _VALUE_NEUTRAL)
                        or getattr(frame, "value_neutral", False) for frame in _PYRO_STACK)):
            self.own_draws.add(msg["name"])

    def _pyro_sample(self, msg) -> None:
        if not self.in_model:
            self._note_guide_draw(msg)
            return
        if not msg["is_observed"]:
            guide_msg = self._guide_site_of(msg)
            if guide_msg is None:
                return
            msg["value"] = self._replayed_value(guide_msg)
            msg["done"] = True

    def _replayed_value(self, guide_msg) -> torch.Tensor:
        """The value a model latent takes from its guide site (the guide's draw itself)."""
        return guide_msg["value"]

    def _guide_site_of(self, msg) -> dict | None:
        """The guide's message of model latent ``msg``; None for a subsample site the guide
        did not open (the model's plate draws it)."""
        guide_msg = self.guide_sites.get(msg["name"])
        if guide_msg is None and not site_is_subsample(msg):
            raise RuntimeError(f"model site '{msg['name']}' is not sampled by the guide")
        return guide_msg


class _ScoreAsSampled(_GuideThenModel):
    """Accumulate the ELBO surrogate while the guide, then the model, run.

    Guide pass: record each latent site's message. Model pass: replay the guide's value at
    latent sites (as ``poutine.replay``) and add ``log p`` of every site minus ``log q`` of
    the latent ones, or ``-KL(q || p)`` in closed form when ``analytic_kl`` and registered.
    Param sites are collected (as :class:`_ParamCapture`) for the optimizer.
    """

    def __init__(self, analytic_kl: bool):
        super().__init__()
        self.analytic_kl = analytic_kl
        self.elbo: torch.Tensor | float = 0.0

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
        # no closed form for a Delta: the KL Pyro registers, -log p(v), drops its log_density
        # (a hand reparameterization, an AutoGuide's Jacobian), so the entropy term is lost
        if self.analytic_kl and not is_delta(guide_msg["fn"]):
            try:
                kl = closed_form_kl(guide_msg["fn"], msg["fn"])
            except NotImplementedError:
                pass
            else:
                self.elbo = self.elbo - _scaled_sum(kl, guide_msg)
                return
        log_p = _scaled_sum(msg["fn"].log_prob(msg["value"]), msg)
        log_q = _scaled_sum(self._guide_log_density(guide_msg), guide_msg)
        self.elbo = self.elbo + log_p - log_q

    def _guide_log_density(self, guide_msg) -> torch.Tensor:
        """``log q(z)`` of a guide site; from the standard-normal draw for a Normal's own draw."""
        fn, value = guide_msg["fn"], guide_msg["value"]
        if guide_msg["name"] in self.own_draws:
            normal, event_dims = plain_normal(fn)
            if normal is not None:
                return drawn_normal_log_density(normal, value, event_dims)
        return fn.log_prob(value)


def score_pair(model, guide, args, kwargs, analytic_kl: bool) -> _ScoreAsSampled:
    """Run the guide, then the model on its draws, under one scorer; returns the scorer
    (``.elbo``: the scaled single-sample ELBO surrogate, ``.params``: parameters touched)."""
    scorer = _ScoreAsSampled(analytic_kl)
    with scorer:
        guide(*args, **kwargs)
        scorer.in_model = True
        model(*args, **kwargs)
    return scorer


class ImportanceScorer(_GuideThenModel):
    """Per-datapoint log importance weights of K vectorized particles, scored as sampled.

    The importance-weighted counterpart of :class:`_ScoreAsSampled`, run by
    :func:`score_weights` with a particle plate around guide and model. Guide pass: record
    each latent site. Model pass: replay the guide's value at latent sites and add the
    *unscaled* ``log p`` of every site and ``log q`` of the latent ones, summed per particle
    and datapoint (:func:`inference.weights.per_datapoint`): the quantities of
    :func:`inference.weights.vectorized_log_weights` without building traces.

    ``log q`` of a Normal guide site's own draw is scored from its standard-normal noise (same
    value and gradient, see :func:`drawn_normal_log_density`). With ``dreg``, ``log q`` is
    scored with the guide's parameters detached, on a copy of the value whose gradient is
    multiplied by the normalized weights ``w~`` (:attr:`weights`, set before the backward):
    one backward of ``sum w~ log w`` then gives the model parameters the IWAE gradient and
    the guide parameters Tucker et al.'s ``sum w~^2 d log w / dz dz / dphi``.

    Attributes (after a run): ``log_p``, ``log_q``: ``[K or 1, batch]`` (or 0.0);
    ``scale``: the scale every site shares (:class:`inference.weights.UniformScale`, which
    refuses site-specific ones); ``params`` (the guide's first ``num_guide_params`` of them).
    """

    def __init__(self, nesting: int, num_particles: int, dreg: bool = False):
        super().__init__()
        self.nesting, self.num_particles, self.dreg = nesting, num_particles, dreg
        self.log_p: torch.Tensor | float = 0.0
        self.log_q: torch.Tensor | float = 0.0
        self._scale = UniformScale("loss='dreg'" if dreg else "loss='iwae'")
        self.batch_size: int | None = None
        self.num_guide_params = 0  # params[:num_guide_params] were met in the guide
        # [K, batch], DReG's w~ for the backward, in a box that the gradient hooks hold: a
        # hook holding the scorer closed a cycle through the autograd graph (the scorer
        # holds the hooked value), which Python's collector cannot free (8 MB a step leaked)
        self._weights_box: list = [None]

    @property
    def weights(self) -> torch.Tensor | None:
        """``[K, batch]``: DReG's normalized weights ``w~``, set before the backward."""
        return self._weights_box[0]

    @weights.setter
    def weights(self, value: torch.Tensor | None) -> None:
        self._weights_box[0] = value

    def _replayed_value(self, guide_msg) -> torch.Tensor:
        value = guide_msg["value"]
        if self.dreg and value.requires_grad:
            value = self._weighted_gradient(value, guide_msg)
            guide_msg["dreg_value"] = value
        return value

    def _weighted_gradient(self, value: torch.Tensor, guide_msg) -> torch.Tensor:
        """``value`` unchanged, with its gradient multiplied by ``w~`` of its particle and
        datapoint. ``value: [*batch, *event]``, plates right-aligned in ``batch``."""
        event_dims = len(guide_msg["fn"].event_shape)
        batch_dims = value.dim() - event_dims
        particle_dim = batch_dims - self.nesting
        data_dim = batch_dims + self._frame(guide_msg).dim
        if particle_dim < 0:
            raise ValueError(f"guide site '{guide_msg['name']}' has no particle dimension")
        shape = [1] * value.dim()
        out = value.view_as(value)
        box = self._weights_box

        def hook(grad, shape=shape):
            weights = box[0]
            shape[particle_dim], shape[data_dim] = weights.shape
            # in the draw's dtype: weights from float64 data must not change a float32 grad
            return grad * weights.reshape(shape).to(grad.dtype)

        out.register_hook(hook)
        return out

    def _frame(self, msg):
        frame = data_frame(msg)
        if frame is None:
            raise ValueError(f"site '{msg['name']}' is not inside the 'data' plate")
        return frame

    def _per_datapoint(self, log_p: torch.Tensor, msg) -> torch.Tensor:
        size = self._frame(msg).size
        if self.batch_size is None:
            self.batch_size = size
        elif size != self.batch_size:
            raise ValueError(f"site '{msg['name']}' has a 'data' plate of size {size}, "
                             f"others {self.batch_size}")
        return per_datapoint(log_p, msg, self.nesting, size)

    def _pyro_post_sample(self, msg) -> None:
        if site_is_subsample(msg):
            return
        if not self.in_model:
            if not msg["is_observed"]:
                self.guide_sites[msg["name"]] = msg
            return
        self._scale.add(msg)
        self.log_p = self.log_p + self._per_datapoint(msg["fn"].log_prob(msg["value"]), msg)
        if msg["is_observed"]:
            return
        guide_msg = self.guide_sites[msg["name"]]
        self._scale.add(guide_msg)
        fn, value = guide_msg["fn"], guide_msg["value"]
        if self.dreg:
            try:
                fixed = detach_parameters(fn)
            except NotImplementedError as error:  # e.g. a Beta, a learned flow
                raise PairError(
                    f"loss 'dreg': guide site '{msg['name']}' is a {type(fn).__name__}, whose "
                    f"parameters DReG cannot hold fixed ({error}); use loss='iwae'") from None
            log_q = fixed.log_prob(guide_msg.get("dreg_value", value))
        else:
            normal, event_dims = plain_normal(fn) if msg["name"] in self.own_draws else (None, 0)
            log_q = (fn.log_prob(value) if normal is None
                     else drawn_normal_log_density(normal, value, event_dims))
        self.log_q = self.log_q + self._per_datapoint(log_q, guide_msg)

    @property
    def scale(self) -> float:
        """The factor on the per-datapoint bounds (the data plate's ``N / batch``)."""
        return self._scale.factor

    def log_weights(self) -> torch.Tensor:
        """``[K, batch]``: ``log p(x, z) - log q(z | x)`` per particle and datapoint."""
        log_w = self.log_p - self.log_q
        if not torch.is_tensor(log_w):
            raise ValueError("the pair has no sample sites to score")
        return log_w.expand(self.num_particles, self.batch_size)


def scorer_dreg_obstacle(scorer: ImportanceScorer, guide, args, kwargs) -> str | None:
    """Why DReG cannot take :class:`ImportanceScorer`'s path for this pair, or None.

    The scorer detaches all of the guide's parameters in ``log q``, which is Tucker et al.'s
    estimator only when guide sites do not depend on each other's values (``q(z2 | z1)``
    keeps z1's path, as :class:`inference.DReGLoss` does) and no parameter is shared by model
    and guide (it would lose its guide-side gradient).
    ``scorer``: one run of :func:`score_weights` on the pair.
    """
    conditional = conditional_sites_of_guide(guide, args, kwargs)
    if conditional:
        return (f"guide sites that do not depend on each other's values (the guide draws "
                f"{site_list(conditional)} given another latent it drew)")
    guide_ids = {id(p) for p in scorer.params[:scorer.num_guide_params]}
    if any(id(p) in guide_ids for p in scorer.params[scorer.num_guide_params:]):
        return ("model and guide to use separate parameters (register each network in one "
                "of them only: pyro.module in the guide alone for an encoder)")
    return None


def score_weights(model, guide, args, kwargs, num_particles: int, nesting: int,
                  dreg: bool = False) -> ImportanceScorer:
    """Run the guide, then the model on its draws, with ``num_particles`` particles in a plate
    at ``dim=-nesting`` under one :class:`ImportanceScorer`; returns the scorer.

    ``nesting``: the pair's plate nesting plus one (see :func:`inference.pair_check.inspect_pair`).
    """
    scorer = ImportanceScorer(nesting, num_particles, dreg)
    with scorer:
        with pyro.plate(PARTICLE_PLATE, num_particles, dim=-nesting):
            guide(*args, **kwargs)
        scorer.in_model = True
        scorer.num_guide_params = len(scorer.params)
        with pyro.plate(PARTICLE_PLATE, num_particles, dim=-nesting):
            model(*args, **kwargs)
    return scorer


def weights_eligible(model, guide, args, kwargs, called: str | None = None) -> int | None:
    """``nesting`` (plate nesting plus one) when the importance-weighted lean path suits the
    pair: the guide reparameterizes (and does not enumerate) exactly the model's latents, and
    no plate draws its own subsample. None otherwise. Raises what
    :func:`inference.pair_check.inspect_pair` raises for unsuitable pairs, naming the user's call as
    ``called`` (e.g. ``SVIStep(loss='iwae')``).
    """
    structure = inspect_pair(model, guide, args, kwargs, probe_randomness=False, called=called)
    if structure.subsample:  # the scorer does not replay a plate's own subsample: IWAELoss does
        return None
    with pyro.poutine.block(), torch.no_grad(), forked_rng():
        model_trace, guide_trace = trace_pair(model, guide, args, kwargs)
    guide_latents = {site["name"] for site in _latent_sites(guide_trace)}
    if guide_latents != {site["name"] for site in _latent_sites(model_trace)}:
        return None
    if not all(getattr(site["fn"], "has_rsample", False) and not site["infer"].get("enumerate")
               for site in _latent_sites(guide_trace)):
        return None
    return structure.max_plate_nesting + 1


def importance_loss(scorer: ImportanceScorer) -> tuple[torch.Tensor, torch.Tensor]:
    """``(surrogate, loss)`` of a scored run: backward of ``surrogate`` gives the IWAE (or,
    for a DReG scorer, the DReG) gradients; ``loss`` is ``-scale * sum_b log mean_k w_kb``
    (detached). Sets ``scorer.weights`` for DReG."""
    log_w = scorer.log_weights()
    scale = scorer.scale
    if not scorer.dreg:
        loss = -scale * log_mean_exp(log_w).sum()
        return loss, loss.detach()
    detached = log_w.detach()
    scorer.weights = torch.softmax(detached, 0)
    surrogate = -scale * (scorer.weights * log_w).sum()
    return surrogate, -scale * log_mean_exp(detached).sum()


def _latent_sites(trace):
    return [site for site in trace.nodes.values() if site["type"] == "sample"
            and not site["is_observed"] and not site_is_subsample(site)]


def lean_eligible(objective, model, guide, args, kwargs) -> bool:
    """Whether the guide reparameterizes (and does not enumerate) exactly the model's latents.

    Runs Pyro's own tracing of the objective once (random state restored, effects hidden), so
    its checks (site shapes, model/guide match) apply when Pyro's validation is enabled.
    """
    with pyro.poutine.block(), torch.no_grad(), forked_rng():
        model_trace, guide_trace = next(objective._get_traces(model, guide, args, kwargs))
    guide_latents = {site["name"] for site in _latent_sites(guide_trace)}
    if guide_latents != {site["name"] for site in _latent_sites(model_trace)}:
        return False  # a latent the guide does not propose, or an auxiliary guide variable
    return all(getattr(site["fn"], "has_rsample", False) and not site["infer"].get("enumerate")
               for site in _latent_sites(guide_trace))


def settle_plate_nesting(objective, model, guide, args, kwargs) -> None:
    """Let a Pyro ELBO without ``max_plate_nesting`` guess it now, in a pass whose random
    state is restored (and whose effects are hidden), rather than in its first real step,
    where the guessing pass would move batch-norm statistics once more on every resume."""
    if isinstance(objective, pyro.infer.ELBO) and objective.max_plate_nesting == float("inf"):
        with pyro.poutine.block(), torch.no_grad(), forked_rng():
            next(objective._get_traces(model, guide, args, kwargs))


def _shadowed_parameters(model, guide, args, kwargs) -> dict[str, torch.nn.Parameter]:
    """:func:`inference.pair_check.shadowed_parameters` of one pass of the pair, random
    state restored, effects hidden."""
    with pyro.poutine.block(), torch.no_grad(), forked_rng():
        return shadowed_parameters(trace_pair(model, guide, args, kwargs))


def check_param_store(model, guide, args, kwargs) -> None:
    """``ValueError`` naming a network parameter that Pyro's param store shadows.

    ``pyro.module(name, net)`` keeps a tensor the store already holds under a parameter's name
    (another instance's, or a loaded one) and returns it, while ``net`` computes with its own:
    a step would train the store's tensor and leave the network as it is. A second pass
    confirms, since ``pyro.module(..., update_module_params=True)`` puts the store's tensors
    into the network on its first call (and a fresh ``nn.Parameter`` each call is no
    network's)."""
    first = _shadowed_parameters(model, guide, args, kwargs)
    if not first:
        return
    names = [name for name, param in _shadowed_parameters(model, guide, args, kwargs).items()
             if first.get(name) is param]
    if not names:
        return
    more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
    if first[names[0]].is_contiguous():
        held = ("another tensor under that name (registered by another instance of the network "
                "earlier in this process, or loaded)")
        fix = "Call pyro.clear_param_store() before training a new instance"
    else:
        held = ("a contiguous copy of it (the parameter is not contiguous, e.g. a channels_last "
                "convolution's)")
        fix = "Make the network's parameters contiguous before training"
    raise ValueError(
        f"parameter '{names[0]}'{more} is a network's own, but Pyro's param store holds {held}, "
        "which the network does not compute with: training would step the store's tensor and "
        f"leave the network untrained. {fix}, or put the store's tensors into the network with "
        "pyro.module(name, net, update_module_params=True)")


class Adam:
    """``pyro.optim.Adam``'s interface on one ``torch.optim.Adam`` over every parameter seen.

    ``Adam(lr)(params)`` steps the given parameters (others keep their state, as with Pyro's
    per-parameter optimizers); parameters join the optimizer the first time they are given.
    :meth:`get_state`/:meth:`set_state` key the moments by param-store name (and accept the
    per-parameter state dicts that ``pyro.optim`` checkpoints hold).

    Args:
        lr: learning rate (torch's other Adam defaults).
        fused: use torch's fused Adam kernel (the same update in one pass over each
            parameter; on the 784-400-50 VAE about 4x faster than torch's default
            per-tensor loop on the CPU, ``benchmarks/svi_step_overhead.py``). ``None``: fused
            whenever every parameter is a floating-point tensor on the CPU or a CUDA device.
    """

    def __init__(self, lr: float = 1e-3, fused: bool | None = None):
        if isinstance(lr, dict):  # pyro.optim.Adam's way
            raise TypeError(f"Adam(lr) takes the learning rate itself, got the dict {lr!r} that "
                            "pyro.optim.Adam takes: write Adam(lr=...) (or pass "
                            "pyro.optim.Adam({...}) where an optimizer is asked for)")
        # applied in float32 at least; a Fraction or numpy float taken as a Python float
        lr = as_number(lr, "lr", minimum=0.0, dtype=torch.float32)
        if fused not in (None, True, False):
            raise TypeError(f"fused must be True, False or None, got {fused!r}")
        self.lr = lr
        self.fused = fused
        self.optimizer: torch.optim.Adam | None = None
        self._known: set[int] = set()
        self._pending: dict[str, dict] = {}

    def __call__(self, params) -> None:
        params = list(params)
        self._register(params)
        if self.optimizer is None:
            return
        given = {id(p) for p in params}
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                if id(param) not in given:
                    param.grad = None  # torch's Adam steps every parameter with a gradient
        self.optimizer.step()

    def _register(self, params) -> None:
        new = []
        for param in params:
            if id(param) not in self._known and param.requires_grad:
                self._known.add(id(param))
                new.append(param)
        if not new:
            return
        if self.optimizer is None:
            fused = self.fused if self.fused is not None else all(map(_fusable, new))
            self.optimizer = torch.optim.Adam(new, lr=self.lr, fused=fused or None)
        else:
            self.optimizer.add_param_group({"params": new})
        names = pyro.get_param_store()._param_to_name
        for param in new:
            state = self._pending.pop(names.get(param, ""), None)
            if state is not None:
                self.optimizer.state[param] = {
                    key: self._state_value(key, value, param) for key, value in state.items()}

    def _state_value(self, key: str, value, param: torch.Tensor):
        """A checkpointed state entry placed as this optimizer keeps it (the fused kernel
        wants ``step`` as a float tensor on the parameter's device)."""
        if key == "step" and self.optimizer.defaults["fused"]:
            return torch.as_tensor(value, dtype=torch.float32, device=param.device)
        if torch.is_tensor(value) and value.dim():
            return value.to(param.device)
        return value

    def get_state(self) -> dict:
        """``{param-store name: Adam state}`` (moments and step count)."""
        state = dict(self._pending)
        if self.optimizer is not None:
            names = pyro.get_param_store()._param_to_name
            for param, param_state in self.optimizer.state.items():
                if param in names:
                    state[names[param]] = dict(param_state)
        return state

    def set_state(self, state: dict) -> None:
        """Restore :meth:`get_state`; parameters not yet seen get theirs when first given."""
        self._pending = {name: s["state"][0] if "state" in s else dict(s)
                         for name, s in state.items() if "state" not in s or s["state"]}
        if self.optimizer is not None:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            self.optimizer, self._known = None, set()
            self._register(params)


def check_optimizer(optim) -> None:
    """``TypeError`` naming ``optim`` unless it is an optimizer the steps can call with the
    parameters of each step: :class:`Adam` or a ``pyro.optim`` optimizer (an instance, not
    the factory ``pyro.optim.Adam`` itself)."""
    advice = "pass inference.Adam(lr) or a pyro.optim optimizer such as pyro.optim.Adam({'lr': lr})"
    if isinstance(optim, type):
        raise TypeError(f"optim must be an optimizer instance, got the class "
                        f"{optim.__module__}.{optim.__qualname__}: {advice}")
    factory = getattr(optim, "__name__", None)
    if inspect.isfunction(optim) and getattr(optim, "__module__", "").startswith("pyro.optim"):
        raise TypeError(f"optim is the factory pyro.optim.{factory}, not an optimizer: call it "
                        f"with its arguments, e.g. pyro.optim.{factory}({{'lr': lr}}) (Pyro "
                        "would call it with the step's parameters and fail after the first "
                        "backward pass)")
    if isinstance(optim, torch.nn.Module):
        raise TypeError(f"optim is a network ({type(optim).__name__}, a torch.nn.Module), not an "
                        f"optimizer: the pair's networks are found through the model and guide; "
                        f"{advice}")
    if isinstance(optim, torch.optim.Optimizer):
        raise TypeError(f"optim is a torch.optim.{type(optim).__name__}, built on a fixed list of "
                        f"parameters, but a Pyro pair creates its parameters as it runs: "
                        f"{advice}")
    if not callable(optim):
        raise TypeError(f"optim must be an optimizer, got {type(optim).__name__}: {advice}")


def with_gradients(method: Callable) -> Callable:
    """``method(self, *args, **kwargs)`` run with autograd recording, whatever the caller's
    mode, and the arguments' inference tensors copied: a step called under
    ``torch.no_grad()`` or ``torch.inference_mode()`` (an evaluation block left around a
    training loop) trains, as :func:`inference.fit` does, instead of returning losses and
    moving nothing. The step holds :data:`inference.checks.PYRO_LOCK` (steps in several
    threads run one at a time: Pyro's handler stack is the process's)."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with PYRO_LOCK, recording_autograd(), empty_shapes_tables_dropped():
            args, kwargs = autograd_arguments(args, kwargs)
            return method(self, *args, **kwargs)

    return run


def _clear_grads(params) -> None:
    for param in params:
        param.grad = None


def check_model_observes(model_trace, guide_trace, same_program: bool, called: str) -> None:
    """``PairError`` when the model observes no site while the guide is the model's own
    program (``same_program``) or observes sites itself: model and guide passed swapped,
    where every step would train nothing. A model of latents alone, fitted to a target
    density as Pyro's NeuTra example does, passes."""
    guide_observes = [site["name"] for site in guide_trace.nodes.values()
                      if site["type"] == "sample" and site["is_observed"]]
    if not (same_program or guide_observes) or any(
            site["is_observed"] for site in model_trace.nodes.values()
            if site["type"] == "sample"):
        return
    swapped = (f" The guide observes {site_list(guide_observes)}: are model and guide "
               "swapped? The model comes first, then the guide." if guide_observes
               else " Is the guide passed as the model?")
    raise PairError(f"{called}: the model observes no site (no obs= and no pyro.factor), so "
                    f"the data are never scored and every step would train nothing.{swapped} "
                    "The model samples x with obs=x")


class SVIStep:
    """A drop-in for ``pyro.infer.SVI(model, guide, optim, loss)`` with the lean ELBO path.

    ``step(*args, **kwargs) -> float`` takes one gradient step on a batch and returns the loss
    before it, ``-ELBO`` (or ``-IWAE``) in nats with the scale of the gradient;
    ``evaluate_loss(*args, **kwargs)`` returns the loss alone, as SVI's. Handlers active
    around it apply as they would to SVI, e.g. :class:`inference.scale_data_plate` for
    minibatches and :class:`inference.scale_latents` for KL warm-up.

    Args:
        model, guide: a Pyro pair; the batch is passed to both.
        optim: :class:`Adam` (the default, lr 1e-3) or any ``pyro.optim`` optimizer.
        loss: ``"elbo"``, ``"meanfield"``, ``"iwae"`` or ``"dreg"`` (:func:`make_loss`).
        num_particles: particles per step (K of ``"iwae"``/``"dreg"``; the ELBOs' lean path
            needs 1).
        lean: allow the lean paths (False: Pyro's objective, or :class:`inference.IWAELoss` /
            :class:`inference.DReGLoss`, on every step); True or False, other values are a
            ``TypeError``.
        check: check the pair on the first call for what would train silently on nothing
            (the guide passed as the model) or on data outside a site's support while
            validation is off; False when the caller has checked it (``fit`` surveys it).
            Otherwise the step takes any pair Pyro's ``SVI`` takes.
    """

    def __init__(self, model: Callable, guide: Callable, optim=None, loss: str = "elbo",
                 num_particles: int = 1, lean: bool = True, *, check: bool = True):
        guide = traceable_guide(guide)  # an effect-based guide: its draws only
        check_pair_arguments(model, guide, num_particles)
        check_no_inference_tensors(reachable_modules(model, guide), PairError)
        for name, flag in (("lean", lean), ("check", check)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        if optim is not None:
            check_optimizer(optim)
        self.model, self.guide = model, guide
        self.optim = optim if optim is not None else Adam()
        self.loss_name = loss
        self.objective = make_loss(loss, num_particles)
        self.num_particles = num_particles
        self._weighted = loss in WEIGHTED_LOSSES
        self._lean_allowed = lean and (loss in LEAN_LOSSES and num_particles == 1
                                       or self._weighted)
        self._lean: bool | None = None  # decided on the first step
        self._nesting: int | None = None  # plate nesting + 1, for the weighted lean path
        self._unchecked = check  # the pair is checked on the first call

    def _check_pair(self, args, kwargs) -> None:
        """The first call's checks of the pair on its batch, those whose failure would train
        silently on nothing or on impossible data: the guide passed as the model (it observes
        no site: loss 0 on every step) and, while Pyro's or torch's validation
        is off, observed values outside their site's support (a Bernoulli at 3, which trained
        to -2.4e9 nats). Run with the random state restored, effects hidden and the networks'
        buffers kept; a pair that fails to run here is left to the step, which names why."""
        with kept_buffers(reachable_modules(self.model, self.guide)):
            try:
                with forked_rng(), pyro.poutine.block(), torch.no_grad():
                    model_trace, guide_trace = trace_pair(self.model, self.guide, args, kwargs)
            except Exception:  # noqa: BLE001 - the step runs the pair and names the failure
                return
            check_model_observes(model_trace, guide_trace, self.model == self.guide,
                                 self._called())
            if not validation_on():
                self._check_observed_ranges(model_trace)
        self._unchecked = False

    def _check_observed_ranges(self, model_trace) -> None:
        """While validation is off, ``PairError`` for an observed site with values outside
        the range of its support (:func:`inference.supports.outside_range`), where the loss
        runs to ``-inf`` (a Bernoulli at 3 trained to -2.4e9 nats); values inside it (grey
        levels under a Bernoulli) are the user's relaxed objective, as Pyro's SVI takes it."""
        for site in model_trace.nodes.values():
            if site["type"] != "sample" or not site["is_observed"] \
                    or not torch.is_tensor(site["value"]):
                continue
            bad = outside_range(site["fn"], site["value"])
            if bad is not None:  # masked-out values (padding) are not scored
                bad = bad & site_mask(site).to(bad.device)
            if bad is not None and bool(bad.any()):
                support = site["fn"].support
                while hasattr(support, "base_constraint"):  # the per-element support
                    support = support.base_constraint
                raise PairError(
                    f"{self._called()}: observed site '{site['name']}' has "
                    f"{int(bad.sum())} value(s) outside the range of its support "
                    f"({describe_support(support)}), e.g. "
                    f"{float(site['value'][bad.expand_as(site['value'])][0]):.6g}: with "
                    "validation off each step scores them, and the loss can run to -inf. "
                    "Fix the data or the likelihood")

    def _called(self) -> str:
        """How messages name this step: ``SVIStep(loss='iwae', num_particles=5)``."""
        if not isinstance(self.loss_name, str):
            return f"SVIStep(loss={type(self.loss_name).__name__}(...))"
        particles = f", num_particles={self.num_particles}" if self.num_particles > 1 else ""
        return f"SVIStep(loss='{self.loss_name}'{particles})"

    @property
    def lean(self) -> bool:
        """True once the first step has chosen the lean path."""
        return bool(self._lean)

    @with_gradients
    def step(self, *args, **kwargs) -> float:
        """One optimizer step on the batch; returns the loss before the step (gradients are
        recorded also under ``torch.no_grad()`` or ``torch.inference_mode()``).

        Raises:
            FloatingPointError: the loss is NaN or infinite (the step is not applied; Pyro's
                ``SVI.step`` would return the NaN and step on NaN gradients), except the
                ``inf`` that ``TraceTailAdaptive_ELBO`` reports by design.
        """
        loss, params = self._loss_and_grads(args, kwargs)
        value = float(loss)
        if not math.isfinite(value) and not reports_no_loss(self.objective):
            _clear_grads(params)
            raise FloatingPointError(
                f"SVIStep.step: the loss is {value}, not applied: check the parameters (NaN "
                "after an earlier divergence?), the data and the learning rate")
        self._apply(params)
        return value

    def evaluate_loss(self, *args, **kwargs) -> float:
        """The loss on the batch without a step or gradients, as ``pyro.infer.SVI``'s
        ``evaluate_loss``: the objective's own ``loss`` (Pyro's ELBO for ``"elbo"``/
        ``"meanfield"``, the IWAE bound for ``"iwae"``/``"dreg"``) under ``torch.no_grad``,
        e.g. for held-out data."""
        with PYRO_LOCK, torch.no_grad():
            if self._unchecked:
                self._check_pair(args, kwargs)
            try:
                return float(self.objective.loss(self.model, self.guide, *args, **kwargs))
            except (ValueError, RuntimeError, TypeError, NotImplementedError) as error:
                self._explain(error, args, kwargs)
                raise

    @with_gradients
    def tensor_step(self, *args, **kwargs) -> torch.Tensor:
        """:meth:`step`, returning the loss as a detached 0-dim tensor on the loss's device.

        On the lean path nothing waits for the device: :func:`inference.fit` adds these up
        and reads the sum once per epoch, so a GPU never idles between steps.
        """
        loss, params = self._loss_and_grads(args, kwargs)
        self._apply(params)
        return loss

    def _apply(self, params) -> None:
        """The optimizer's step on ``params``' gradients, which are then dropped."""
        self.optim(params)
        _clear_grads(params)

    @with_gradients
    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """``SVI.loss_and_grads``'s signature: the loss, gradients left in ``.grad``."""
        if (model, guide) != (self.model, self.guide):
            raise ValueError("SVIStep.loss_and_grads scores the pair it was built with")
        return float(self._loss_and_grads(args, kwargs)[0])

    def _loss_and_grads(self, args, kwargs):
        check_outer_handlers("SVIStep")
        if is_validation_enabled():  # as fit checks its data (a numpy batch, an empty one
            check_data(args, kwargs)  # or NaN failed inside Pyro or torch, naming nothing)
        if self._lean is None:  # first step: Pyro's tracing with its checks decides
            # the checks run the pair in training mode: batch-norm statistics stay put
            with kept_buffers(reachable_modules(self.model, self.guide)):
                if self._unchecked:
                    self._check_pair(args, kwargs)
                try:
                    check_param_store(self.model, self.guide, args, kwargs)
                    self._choose_path(args, kwargs)
                except (ValueError, RuntimeError, TypeError, NotImplementedError) as error:
                    self._explain(error, args, kwargs)
                    raise
        if self._lean and self._weighted:
            return self._weighted_loss_and_grads(args, kwargs)
        if self._lean:
            return self._lean_loss_and_grads(args, kwargs)
        capture = _ParamCapture()
        with capture:
            loss = self.objective.loss_and_grads(self.model, self.guide, *args, **kwargs)
        return torch.tensor(float(loss), dtype=torch.float64), unique_tensors(capture.params)

    def _choose_path(self, args, kwargs) -> None:
        """The first step's choice of path (:attr:`lean`), after Pyro's tracing of the pair."""
        if self._weighted and self._lean_allowed:
            self._lean = self._choose_weighted_path(args, kwargs)
        else:
            self._lean = self._lean_allowed and lean_eligible(
                self.objective, self.model, self.guide, args, kwargs)
        if not self._lean:
            settle_plate_nesting(self.objective, self.model, self.guide, args, kwargs)

    def _explain(self, error: Exception, args, kwargs) -> None:
        """Called while the pair's first run fails with ``error`` inside torch or Pyro:
        raises ``PairError`` naming an observed site that cannot score its data (bool data
        for a Normal) or the program and line a distribution refused its parameters at, as
        :func:`inference.fit` would; else returns, and the caller re-raises ``error``."""
        if isinstance(error, PairError):
            return
        try:
            check_observed_values_validated(self.model, self.guide, args, kwargs)
        except PairError as found:
            raise found from error
        except Exception:  # noqa: BLE001 - the pair fails before its data: error stands
            pass
        explain_run_failure(error, self.model, self.guide, args, kwargs, PairError)

    def _choose_weighted_path(self, args, kwargs) -> bool:
        """Whether IWAE/DReG can take :class:`ImportanceScorer`'s path (and remember the
        nesting): a reparameterized guide of exactly the model's latents and, for DReG,
        guide and model parameters apart (a shared parameter gets DReGLoss's treatment)."""
        self._nesting = weights_eligible(self.model, self.guide, args, kwargs,
                                         f"SVIStep(loss='{self.loss_name}')")
        if self._nesting is None:
            return False
        if self.loss_name == "dreg":
            with pyro.poutine.block(), torch.no_grad(), forked_rng(), \
                    validation_enabled(False):
                scorer = score_weights(self.model, self.guide, args, kwargs,
                                       self.num_particles, self._nesting, dreg=True)
            return scorer_dreg_obstacle(scorer, self.guide, args, kwargs) is None
        return True

    def _weighted_loss_and_grads(self, args, kwargs):
        """IWAE/DReG: ``(loss: detached 0-dim tensor, parameters touched)``, one backward."""
        scorer = score_weights(self.model, self.guide, args, kwargs, self.num_particles,
                               self._nesting, dreg=self.loss_name == "dreg")
        surrogate, loss = importance_loss(scorer)
        if surrogate.requires_grad:
            surrogate.backward()
        return loss, unique_tensors(scorer.params)

    def _lean_loss_and_grads(self, args, kwargs):
        """``(loss: detached 0-dim tensor, parameters touched)``, gradients in ``.grad``."""
        scorer = score_pair(self.model, self.guide, args, kwargs, self.loss_name == "meanfield")
        loss = -scorer.elbo
        params = unique_tensors(scorer.params)
        if not torch.is_tensor(loss):  # nothing was scored
            return torch.as_tensor(float(loss)), params
        if loss.requires_grad:
            loss.backward()
        return loss.detach(), params


def _fusable(param: torch.Tensor) -> bool:
    """Whether torch's fused Adam kernel takes this parameter."""
    return param.is_floating_point() and param.device.type in ("cpu", "cuda")


def unique_tensors(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """``params`` without repeats (by identity), in first-seen order."""
    seen, out = set(), []
    for param in params:
        if id(param) not in seen:
            seen.add(id(param))
            out.append(param)
    return out
