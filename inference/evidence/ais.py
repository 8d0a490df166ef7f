"""Annealed importance sampling (AIS) of ``log p(x)`` for any pair with continuous latents.

AIS [1] moves chains through a sequence of unnormalized densities from a tractable start
``pi_0(z) = q(z | x)`` (the guide; or the prior ``p(z)``) to the unnormalized posterior
``pi_T(z) = p(x, z)`` along the geometric path

    log pi_t(z) = (1 - beta_t) log q(z | x) + beta_t log p(x, z),    0 = beta_0 < ... < beta_T = 1.

A chain starts at ``z_0 ~ q`` and, for ``t = 1..T``, adds
``(beta_t - beta_{t-1}) (log p(x, z_{t-1}) - log q(z_{t-1} | x))`` to its log weight and then
moves ``z_t ~ T_t(. | z_{t-1})`` with a kernel that leaves ``pi_t`` invariant. Every chain's
weight is an unbiased estimate of ``p(x)`` (an importance weight on the extended space of
whole trajectories), so, like IWAE_K, ``log mean_k w_k`` is a stochastic lower bound whose
gap shrinks as the path gets finer (more steps) and as more chains are averaged [1, 2].

Transitions (per chain and datapoint, on the latents flattened and mapped to an unconstrained
space with :func:`torch.distributions.biject_to`; the Jacobian cancels in the weights):

- ``"hmc"``: Hamiltonian Monte Carlo [3], ``num_leapfrog`` leapfrog steps with unit mass and a
  Metropolis correction; ``"mala"`` is its one-step case (Metropolis-adjusted Langevin).
- ``"uha"`` and ``"ula"``: the same moves without the Metropolis test (uncorrected Hamiltonian
  annealing [4, 5]; ``"ula"`` with one leapfrog step is unadjusted Langevin). The proposal is
  always accepted and its log Metropolis ratio (the change in the Hamiltonian) is added to the
  weight, which keeps the estimate unbiased [4, 5]; poor step sizes cost variance, not bias.

The step size is one scalar per datapoint, jittered per chain and transition by
``step_jitter`` (so that leapfrog trajectories cannot lock onto a period of the target and
return every chain to its start) and adapted after every transition towards a target
acceptance probability (``log eps += adapt_rate (mean acceptance - target)``, the mean over the
chains of nonzero weight), as in the BDMC code of [2]. Adapting from the chains' own history
makes the kernels depend on the past, which strictly speaking invalidates the extended-space
argument; with ``adapt_rate=0`` the estimate is exactly unbiased, and in our tests the adapted
estimates of the Metropolis-adjusted transitions agree with closed forms within their standard
errors. The uncorrected ones (``"uha"``, ``"ula"``), adapted, grew their steps until the
estimates of skewed latents (Weibull, InverseGamma priors) were 1-5 nats below ``log p(x)``
with small standard errors: they keep their step size unless told otherwise (and warn
then). A warning names the datapoints whose chains' weights have Pareto k-hat above 0.7 and
spread by more than 0.5 in log (with few chains k-hat is noisy: it may name a datapoint that
is right).

Standard error: with ``w_k`` the chains' weights, ``Z_hat = mean_k w_k`` and the delta method
gives ``se(log Z_hat) ~ sd(w) / (sqrt(K) Z_hat)`` [6]. It is itself unreliable when the weights
are heavy-tailed (check :func:`inference.evidence.weight_diagnostics.pareto_k` on ``log_weights``).

Support: a chain that starts where the model's density is zero (log weight ``-inf``) keeps
weight zero, never moves and does not steer the step-size adaptation; a datapoint whose chains
all start there gets ``log_evidence = -inf`` with ``standard_error = inf``. A start whose log
weight is NaN or ``+inf`` is an error. Proposals with a NaN or infinite density are rejected
(for the uncorrected moves: the chain's weight becomes zero), as divergences.

References:
    [1] Neal (2001), Annealed importance sampling. Statistics and Computing 11.
    [2] Wu, Burda, Salakhutdinov, Grosse (2017), On the quantitative analysis of decoder-based
        generative models (AIS for VAEs, sigmoid schedule, step-size adaptation).
    [3] Neal (2011), MCMC using Hamiltonian dynamics. Handbook of MCMC.
    [4] Thin, Kotelevskii, Doucet, Durmus, Moulines, Panov (2021), Monte Carlo variational
        auto-encoders.
    [5] Geffner and Domke (2021), MCMC variational inference via uncorrected Hamiltonian
        annealing; Zhang, Tian, Chen (2021), Differentiable annealed importance sampling.
    [6] Grosse, Ghahramani, Adams (2015), Sandwiching the marginal likelihood using
        bidirectional Monte Carlo.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from torch.distributions import biject_to
from torch.distributions import constraints as torch_constraints
from torch.distributions.transforms import ComposeTransform, IndependentTransform

from ..checks import (MAX_STEPS, as_number, autograd_arguments, autograd_tensor, check_at_most,
                      check_default_device, check_dense_values, check_int,
                      check_no_inference_tensors, check_number, check_pair_call,
                      check_weights_memory, leaves_buffers, recording_autograd,
                      resolve_device, user_stacklevel, validation_enabled)
from ..pair_check import PARTICLE_PLATE, PairStructure, data_frame, is_delta, sample_sites
from ..reachable import reachable_modules
from .weight_diagnostics import pareto_k
from ..progress import check_progress, progress_bar
from ..supports import declared_support, discrete_support
from ..weights import (
    check_data,
    check_log_weights,
    check_num_samples,
    check_particle_memory,
    checked_log_weights,
    checked_pair,
    log_mean_exp,
    per_datapoint,
    trace_log_density,
    vectorized_traces,
    weight_itemsize,
)

TRANSITIONS = ("hmc", "mala", "uha", "ula")
SCHEDULES = ("sigmoid", "linear")
MAX_LEAPFROG = 10 ** 4  # leapfrog steps per HMC move (typical: 1 to 100)
# torch's wrapper of a MixtureSameFamily's support (recent torch; absent before, then never)
_MIXTURE_SUPPORT = getattr(torch_constraints, "MixtureSameFamilyConstraint", ())
# Optimal acceptance rates: about 0.65 for HMC (Neal 2011, [3]), 0.574 for MALA (Roberts and
# Rosenthal 1998). The uncorrected moves add their log Metropolis ratio to the weight, so its
# variance grows with every move that a test would have rejected: they aim much higher.
DEFAULT_TARGET_ACCEPT = {"hmc": 0.65, "mala": 0.574, "uha": 0.9, "ula": 0.9}


@dataclass
class AISResult:
    """Result of :func:`ais_log_evidence`.

    Attributes:
        log_evidence: ``[batch]`` ``log mean_k w_k`` in nats, an estimate of ``log p(x)``
            (a stochastic lower bound; exact for a pair without latent sites).
        standard_error: ``[batch]`` delta-method standard error of ``log_evidence`` (also
            read as ``stderr``, its former name); 0 for a pair
            without latent sites, ``inf`` where every chain has weight zero. A large-chain
            approximation that assumes the weights have finite variance: with few chains
            (4) or heavy-tailed weights (a start narrower than the posterior; see
            :func:`inference.weight_diagnostics`' k-hat of the start) it came out 0.5-0.9x
            the spread over seeds; use 16 chains or more and a start at least as wide.
        log_weights: ``[num_chains, batch]`` the chains' log AIS weights.
        acceptance_rate: ``[batch]`` mean Metropolis acceptance probability over transitions
            and chains (for the uncorrected moves: of the ratio they would have been tested on);
            None when no transition was made (``num_steps=1``, or no latent site).
        step_size: ``[batch]`` the adapted leapfrog step sizes at the end of annealing (the
            initial ones when no transition was made).
        subsample: ``[batch]`` indices of the datapoints scored when the model subsamples its
            ``"data"`` plate (one subsample for every chain and step), else None.
    """

    log_evidence: torch.Tensor
    standard_error: torch.Tensor
    log_weights: torch.Tensor
    acceptance_rate: torch.Tensor | None
    step_size: torch.Tensor
    subsample: torch.Tensor | None = None

    @property
    def stderr(self) -> torch.Tensor:
        """``[batch]``: :attr:`standard_error` under its former name."""
        return self.standard_error

    def to_dict(self) -> dict:
        """JSON-ready means over the datapoints (``acceptance_rate_mean`` None when no
        transition was made)."""
        acceptance = self.acceptance_rate
        return {
            "log_evidence_mean": float(self.log_evidence.double().mean()),
            "stderr_mean": float(self.standard_error.double().mean()),
            "num_chains": self.log_weights.shape[0],
            "acceptance_rate_mean": None if acceptance is None else float(
                acceptance.double().mean()),
            "step_size_median": float(self.step_size.double().median()),
        }


def annealing_schedule(num_steps: int, schedule: str | None = None, sharpness: float = 4.0,
                       dtype=torch.float64, device=None, *, kind: str | None = None
                       ) -> torch.Tensor:
    """Inverse temperatures ``beta_0 = 0 < ... < beta_T = 1``, ``[num_steps + 1]``.

    ``schedule`` (as :func:`ais_log_evidence` names it; None: ``"sigmoid"``): ``"linear"``:
    ``beta_t = t / T``.
    ``"sigmoid"`` [2]: ``s_t = sigmoid(sharpness (2 t / T - 1))`` rescaled to run from 0 to
    1, which spends more steps near both ends of the path, where
    the intermediate densities change fastest (``sharpness > 0``, a number or a 0-dim tensor;
    larger is more so).

    ``device``: None (the CPU) or a device as :func:`inference.resolve_device` takes it,
    checked first (``"gpu"``, or ``"cuda"`` where torch sees none, is refused by name).
    ``kind``: the former name of ``schedule``, still taken (with a ``FutureWarning``).
    ``dtype`` must be a floating-point ``torch.dtype`` (an integer one would round every beta
    to 0 or 1); ``ValueError`` naming it otherwise, and when the schedule rounded to it no
    longer increases strictly (float16 or bfloat16 with many steps).
    """
    if kind is not None:  # the parameter's name before 2026-11-30
        if schedule is not None:
            raise TypeError("annealing_schedule got both schedule= and kind= (its former "
                            "name): pass schedule= alone")
        warnings.warn("annealing_schedule(kind=...) is now schedule=...", FutureWarning,
                      stacklevel=2)
        schedule = kind
    schedule = "sigmoid" if schedule is None else schedule
    device = torch.device("cpu") if device is None else resolve_device(device)
    check_int(num_steps, "num_steps")
    # its float64 schedule alone would take 8 bytes a step
    check_at_most(num_steps, "num_steps", MAX_STEPS, "each step moves every chain once (with "
                  "HMC's leapfrog gradients), so such a run would not end")
    sharpness = as_number(sharpness, "sharpness", positive=True)
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype (e.g. torch.float64), "
                         f"got {dtype!r}")
    t = torch.linspace(0.0, 1.0, num_steps + 1, dtype=torch.float64)
    if schedule == "sigmoid" and num_steps > 1:
        s = torch.sigmoid(sharpness * (2 * t - 1))
        t = (s - s[0]) / (s[-1] - s[0])
        t[0], t[-1] = 0.0, 1.0
        if bool((t[1:] <= t[:-1]).any()):
            raise ValueError(
                f"sharpness={sharpness} saturates the 'sigmoid' schedule of {num_steps} steps: "
                "its first and last inverse temperatures round to 0 and 1 even in float64, so "
                "the steps do not increase strictly; lower sharpness (10 or less), or use "
                "schedule='linear'")
    rounded = t.to(dtype=dtype)
    if bool((rounded[1:] <= rounded[:-1]).any()):
        raise ValueError(f"dtype={dtype} cannot hold {num_steps} strictly increasing inverse "
                         f"temperatures of the {schedule!r} schedule (neighbours round to the same "
                         "value); use torch.float32 or torch.float64")
    return rounded.to(device=device)


def _is_identity(transform) -> bool:
    while isinstance(transform, IndependentTransform):
        transform = transform.base_transform
    return isinstance(transform, ComposeTransform) and not transform.parts


@dataclass
class _LatentSite:
    """How one latent site maps to a slice of the flat unconstrained state ``[K, batch, D]``."""

    name: str
    site: dict  # a trace node of the guide: plates and mask, for per_datapoint
    transform: object
    data_index: int  # position of the data dim in the (unconstrained) value
    moved_shape: tuple  # unconstrained value shape with the data dim moved to position 1
    size: int  # number of flat coordinates per chain and datapoint
    extra_event_dims: int  # event dims of the site beyond those of the transform


class _AnnealingPath:
    """Log densities of guide and model at flat unconstrained latents, and their gradients."""

    def __init__(self, model, guide, args, kwargs, structure: PairStructure, guide_trace):
        self.model, self.guide, self.args, self.kwargs = model, guide, args, kwargs
        self.structure = structure
        self.nesting = structure.max_plate_nesting + 1
        self.sites = []
        # The chains move the guide's free latents; Delta sites (an AutoGuide's latents,
        # deterministic functions of its auxiliary sites) follow them.
        for node in sample_sites(guide_trace, observed=False):
            fn = node["fn"]
            if is_delta(fn):
                continue
            if discrete_support(fn):
                raise ValueError(
                    f"latent site '{node['name']}' is discrete ({type(fn).__name__}); AIS "
                    "needs continuous latents"
                )
            # a mixture's support is its components' (torch wraps it); a distribution
            # that declares none has `dependent`, which no bijection reaches (refused below)
            support = declared_support(fn)
            while isinstance(support, _MIXTURE_SUPPORT):
                support = support.base_constraint
            try:
                transform = biject_to(support)
            except NotImplementedError:
                raise ValueError(
                    f"ais_log_evidence: latent site '{node['name']}': AIS moves its chains in "
                    "the unconstrained space of biject_to(support), and torch has no "
                    f"bijection onto the support {support} of its {type(fn).__name__} (a "
                    "sphere, a manifold of lower dimension). Score the pair with iwae_bound "
                    "and check its weights with weight_diagnostics, or write the latent in "
                    "coordinates torch can unconstrain (an angle with a VonMises for a "
                    "direction in the plane)") from None
            value = node["value"]
            u = transform.inv(value)
            batch_dims = value.dim() - fn.event_dim
            if batch_dims != self.nesting:
                raise ValueError(
                    f"site '{node['name']}' has batch shape {tuple(value.shape[:batch_dims])}; "
                    "every batch dim must belong to a plate"
                )
            data_index = self.nesting + data_frame(node).dim
            moved = u.movedim(data_index, 1)
            self.sites.append(_LatentSite(
                name=node["name"], site=node, transform=transform, data_index=data_index,
                moved_shape=tuple(moved.shape[2:]), size=moved[0, 0].numel(),
                extra_event_dims=fn.event_dim - transform.codomain.event_dim,
            ))
        self.names = {s.name for s in self.sites}

    def flatten(self, trace) -> torch.Tensor:
        """Unconstrained latents of a vectorized guide trace as ``[K, batch, D]``."""
        parts = []
        for s in self.sites:
            u = s.transform.inv(trace.nodes[s.name]["value"]).movedim(s.data_index, 1)
            parts.append(u.reshape(u.shape[0], u.shape[1], -1))
        return torch.cat(parts, -1)

    def unflatten(self, flat: torch.Tensor):
        """Constrained values per site from ``flat: [K, batch, D]``, and ``log|det J|``
        ``[K, batch]``."""
        values, log_jac, start = {}, 0.0, 0
        num_chains, batch = flat.shape[:2]
        for s in self.sites:
            u = flat[..., start:start + s.size].reshape((num_chains, batch) + s.moved_shape)
            u = u.movedim(1, s.data_index)
            start += s.size
            z = s.transform(u)
            values[s.name] = z
            if not _is_identity(s.transform):
                ladj = s.transform.log_abs_det_jacobian(u, z)
                if s.extra_event_dims:
                    ladj = ladj.flatten(-s.extra_event_dims).sum(-1)
                log_jac = log_jac + per_datapoint(ladj, s.site, self.nesting, batch)
        return values, log_jac

    def _trace(self, fn, values, num_chains):
        with poutine.block(), pyro.plate(PARTICLE_PLATE, num_chains, dim=-self.nesting):
            return poutine.trace(_SetLatents(values)(fn)).get_trace(*self.args, **self.kwargs)

    def evaluate(self, flat: torch.Tensor) -> dict:
        """Log densities ``[K, batch]`` at ``flat: [K, batch, D]`` and gradients ``[K, batch, D]``.

        Keys: ``log_q`` (guide), ``log_joint`` (model), ``a = log_q + log|J|`` and
        ``b = log_joint + log|J|`` with their gradients ``grad_a``, ``grad_b``, so that the
        annealed log density is ``(1 - beta) a + beta b`` in the unconstrained space.
        """
        num_chains, batch = flat.shape[:2]
        with recording_autograd():  # also inside the caller's torch.inference_mode()
            flat = autograd_tensor(flat.detach()).requires_grad_(True)
            values, log_jac = self.unflatten(flat)
            guide_trace = self._trace(self.guide, values, num_chains)
            log_q_free = 0.0  # the free latents' density: pi_0 in their space
            for node in sample_sites(guide_trace):
                if node["name"] in self.names:
                    log_p = node["fn"].log_prob(node["value"])
                    log_q_free = log_q_free + per_datapoint(log_p, node, self.nesting, batch)
            # log q(z) of the model's latents: the free part plus the Delta sites' log
            # densities (minus log|det dz/du| of an AutoGuide's transform)
            log_q = trace_log_density(guide_trace, self.structure, observed=False)
            with pyro.plate(PARTICLE_PLATE, num_chains, dim=-self.nesting), poutine.block():
                model_trace = poutine.trace(poutine.replay(self.model, trace=guide_trace)
                                            ).get_trace(*self.args, **self.kwargs)
            log_joint = trace_log_density(model_trace, self.structure)
            # target in the free latents' space: p(x, z(u)) |det dz/du|
            a, b = log_q_free + log_jac, log_joint - (log_q - log_q_free) + log_jac
            grad_a = _grad(a, flat, retain=True)
            grad_b = _grad(b, flat, retain=False)
        shape = (num_chains, batch)
        return {
            "u": flat.detach(),
            "log_q": log_q.detach().expand(shape),
            "log_joint": log_joint.detach().expand(shape),
            "a": a.detach().expand(shape),
            "b": b.detach().expand(shape),
            "grad_a": grad_a,
            "grad_b": grad_b,
        }


class _SetLatents(Messenger):
    """Give latent sites the values of ``values`` (they stay latent, unlike ``condition``)."""

    def __init__(self, values: dict):
        super().__init__()
        self.values = values

    def _pyro_sample(self, msg):
        if msg["name"] in self.values and not msg["is_observed"]:
            msg["value"] = self.values[msg["name"]]
            msg["done"] = True


def _grad(output, flat, retain):
    """``d output.sum() / d flat`` (zeros where it does not depend on ``flat``). A leapfrog
    step off a support has density ``-inf`` and a NaN gradient there, which the Metropolis
    step rejects: torch's anomaly mode, which a user debugging other code may have on,
    must not turn that NaN into an error."""
    if not torch.is_tensor(output) or not output.requires_grad:
        return torch.zeros_like(flat)
    with torch.autograd.set_detect_anomaly(False):
        (grad,) = torch.autograd.grad(output.sum(), flat, retain_graph=retain,
                                      allow_unused=True)
    return torch.zeros_like(flat) if grad is None else grad


def _select(accept: torch.Tensor, new: dict, old: dict) -> dict:
    out = {}
    for key, value in new.items():
        mask = accept if value.dim() == accept.dim() else accept[..., None]
        out[key] = torch.where(mask, value, old[key])
    return out


def _transition(path, state, beta, eps, num_leapfrog, adjusted):
    """One HMC (or uncorrected) move at inverse temperature ``beta`` for all chains, with
    leapfrog step sizes ``eps: [K, batch]``.

    Returns:
        the new state, the log Metropolis ratio ``[K, batch]`` and the acceptance
        probability ``[K, batch]``.
    """
    step = eps[..., None]  # [K, batch, 1]

    def log_pi(s):
        return (1 - beta) * s["a"] + beta * s["b"]

    def grad(s):
        return (1 - beta) * s["grad_a"] + beta * s["grad_b"]

    p0 = torch.randn_like(state["u"])
    p = p0 + 0.5 * step * grad(state)
    new = state
    for i in range(num_leapfrog):
        new = path.evaluate(new["u"] + step * p)
        p = p + (step if i < num_leapfrog - 1 else 0.5 * step) * grad(new)
    log_ratio = (log_pi(new) - 0.5 * p.pow(2).sum(-1)) - (log_pi(state) - 0.5 * p0.pow(2).sum(-1))
    finite = torch.isfinite(log_ratio) & torch.isfinite(new["u"]).all(-1)
    log_ratio = torch.where(finite, log_ratio, torch.full_like(log_ratio, -math.inf))
    accept_prob = log_ratio.clamp(max=0.0).exp()
    if adjusted:
        accept = torch.rand_like(accept_prob) < accept_prob
    else:
        accept = finite  # uncorrected: always move, unless the move diverged
    return _select(accept, new, state), log_ratio, accept_prob


def _check_options(num_chains, num_steps, transition, step_size, num_leapfrog, start,
                   target_accept, adapt_rate, chunk_size, schedule) -> torch.Tensor:
    """Check every option before any work; returns the inverse temperatures ``[T + 1]``
    (float64, on the CPU)."""
    check_int(num_chains, "num_chains", 2)  # two chains at least, for a standard error
    check_int(num_steps, "num_steps")
    check_num_samples(num_chains, chunk_size)  # names chunk_size when it is bad
    if transition not in TRANSITIONS:
        raise ValueError(f"transition must be one of {TRANSITIONS}, got {transition!r}")
    if start not in ("guide", "prior"):
        raise ValueError(f"start must be 'guide' or 'prior', got {start!r}")
    check_int(num_leapfrog, "num_leapfrog")
    check_at_most(num_leapfrog, "num_leapfrog", MAX_LEAPFROG, "each leapfrog step takes a "
                  "gradient of every chain, at every annealing step")
    if torch.is_tensor(step_size):
        check_dense_values(step_size, "step_size")
        if not step_size.is_floating_point() or not bool((step_size > 0).all()) or not bool(
                torch.isfinite(step_size).all()):
            raise ValueError(f"step_size must be a tensor of positive finite floats, got "
                             f"{step_size!r}")
    else:
        check_number(step_size, "step_size", positive=True, dtype=torch.float32)
    if target_accept is not None:
        target_accept = as_number(target_accept, "target_accept")
        if not 0 < target_accept < 1:
            raise ValueError(f"target_accept must lie in (0, 1), got {target_accept!r}")
    as_number(adapt_rate, "adapt_rate", minimum=0, dtype=torch.float32)  # scales log eps
    return _betas(schedule, num_steps)


def _betas(schedule, num_steps) -> torch.Tensor:
    """``annealing_schedule(num_steps, schedule)`` or the checked sequence, float64 ``[T + 1]``."""
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES} or a sequence, got "
                             f"{schedule!r}")
        return annealing_schedule(num_steps, schedule)
    message = f"a schedule sequence must increase strictly from 0 to 1, got {schedule!r}"
    check_dense_values(schedule, "schedule")
    if torch.is_tensor(schedule):  # numbers, not a graph (no requires_grad-to-scalar warning)
        schedule = schedule.detach()
    try:
        betas = torch.as_tensor(schedule, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(message) from error
    if betas.dim() != 1:  # a 2-D one was flattened and run, rows end to end
        raise ValueError(f"a schedule sequence must be 1-D and increase strictly from 0 to 1: "
                         f"schedule has shape {list(betas.shape)}, got {schedule!r}")
    if betas.numel() < 2 or not bool(torch.isfinite(betas).all()) or float(betas[0]) != 0.0 \
            or float(betas[-1]) != 1.0 or bool((betas[1:] <= betas[:-1]).any()):
        raise ValueError(message)
    return betas


def _prior_as_guide(model: Callable) -> Callable:
    """The model with its observed sites hidden: a guide that samples the prior."""
    return poutine.block(model, hide_fn=lambda msg: bool(msg.get("is_observed")))


@leaves_buffers
def ais_log_evidence(
    model: Callable,
    guide: Callable | None,
    *args,
    num_chains: int = 16,
    num_steps: int = 200,
    transition: str = "hmc",
    step_size: float | torch.Tensor = 0.1,
    num_leapfrog: int = 5,
    step_jitter: float = 0.2,
    start: str = "guide",
    schedule: str | Sequence[float] = "sigmoid",
    target_accept: float | None = None,
    adapt_rate: float | None = None,
    chunk_size: int | None = None,
    progress: bool = True,
    **kwargs,
) -> AISResult:
    """Annealed importance sampling estimate of ``log p(x)`` per datapoint (module docstring).

    Runs without gradients to any parameter and leaves every parameter as it is; tensors are
    created on the device of the latents the guide draws.

    Args:
        model, guide: a Pyro pair sharing ``pyro.plate("data", batch)``, whose guide samples
            exactly the model's latent sites, all continuous (any shapes and supports;
            constrained ones move in the unconstrained space of ``biject_to``). ``guide`` may be
            None with ``start="prior"``. ``*args``/``**kwargs`` go to both.
        num_chains: K, independent chains per datapoint (the particle dim of the weights).
        num_steps: T, number of intermediate densities; T = 1 is plain importance sampling
            (no transition).
        transition: ``"hmc"``, ``"mala"`` (Metropolis-adjusted), ``"uha"`` or ``"ula"``
            (uncorrected, weights carry the correction).
        step_size: initial leapfrog step size, a positive float or ``[batch]`` tensor.
        num_leapfrog: leapfrog steps per transition for ``"hmc"`` and ``"uha"`` (the Langevin
            variants take one).
        step_jitter: each transition draws every chain's step size uniformly from
            ``step * [1 - step_jitter, 1 + step_jitter]`` (Neal 2011 [3], sec. 5.4.2.2): with
            a fixed size, ``num_leapfrog`` steps can add up to a whole period of the
            posterior's oscillation and bring every chain back where it started. In
            ``[0, 1)``; 0 uses the size as it is. A random size independent of the state
            keeps each transition's target invariant, so the estimate stays unbiased.
        start: ``"guide"`` (``pi_0 = q(z | x)``) or ``"prior"`` (``pi_0 = p(z)``).
        schedule: ``"sigmoid"``, ``"linear"`` or an explicit 1-D sequence ``[T + 1]``
            increasing strictly from 0 to 1 (then ``num_steps`` is ignored; a tensor is
            detached; a 2-D one is refused, naming its shape).
        target_accept: acceptance probability in (0, 1) the step size is adapted to (default
            per transition: 0.65 for HMC, 0.574 for Langevin, 0.9 uncorrected).
        adapt_rate: ``log eps += adapt_rate * (mean acceptance - target)`` after every move,
            the mean over the chains of nonzero weight; a finite number ``>= 0``, 0 keeps
            ``step_size`` fixed (and the estimate exactly unbiased). Default (None): 0.2 for
            ``"hmc"`` and ``"mala"``, 0 for ``"uha"`` and ``"ula"``, whose adapted steps
            grew until the estimate was 1-5 nats low on skewed latents (Weibull and
            InverseGamma priors) with small standard errors; a rate above 0 for them warns.
        chunk_size: at most this many chains at once (chunks adapt their step sizes apart).
        progress: False hides the bar over the annealing steps that a call shows after a
            second.

    Returns:
        :class:`AISResult` with ``log_evidence`` and ``standard_error`` ``[batch]`` and
        ``log_weights`` ``[num_chains, batch]`` in nats. For a pair without latent sites
        every chain's weight is ``log p(x)`` (exact, ``standard_error`` 0, no transition).

    Raises:
        ValueError: a bad option, or chains whose initial log weights are NaN or ``+inf``
            (naming the datapoints).
    """
    check_pair_call(ais_log_evidence, kwargs, args, model=model, guide=guide)
    check_no_inference_tensors(reachable_modules(model, guide))  # (gradients are run)
    check_default_device()  # (the schedule is made below, before the data are checked)
    uncorrected = transition in ("uha", "ula") if isinstance(transition, str) else False
    if adapt_rate is None:
        adapt_rate = 0.0 if uncorrected else 0.2
    schedule_betas = _check_options(num_chains, num_steps, transition, step_size, num_leapfrog,
                                    start, target_accept, adapt_rate, chunk_size, schedule)
    # Python ints from here: a numpy or tensor count (np.int64(2**61)) overflowed int64 in
    # the memory checks' products and failed in torch ("Storage size calculation overflowed")
    num_chains, num_steps, num_leapfrog = int(num_chains), int(num_steps), int(num_leapfrog)
    step_jitter = as_number(step_jitter, "step_jitter", minimum=0.0)
    target_accept = None if target_accept is None else float(target_accept)
    adapt_rate = float(adapt_rate)  # checked, as a 0-dim tensor too
    if target_accept is not None and adapt_rate == 0:
        warnings.warn(
            f"ais_log_evidence: target_accept={target_accept:g} has no effect with "
            f"adapt_rate=0{' (the default for uha and ula)' if uncorrected else ''}: the step "
            "size stays step_size; pass adapt_rate > 0 to adapt it", RuntimeWarning,
            stacklevel=user_stacklevel())
    if uncorrected and adapt_rate > 0:
        warnings.warn(
            f"ais_log_evidence: transition='{transition}' with adapt_rate={adapt_rate:g} adapts "
            "the step size of moves without a Metropolis test, which biases the estimate (1-5 "
            "nats low with small standard errors on skewed latents, in our tests); "
            "adapt_rate=0 keeps it unbiased, transition='hmc' adapts safely",
            RuntimeWarning, stacklevel=user_stacklevel())
    check_progress(progress)
    if not step_jitter < 1:
        raise ValueError(f"step_jitter must lie in [0, 1), got {step_jitter!r}")
    check_data(args, kwargs)
    args, kwargs = autograd_arguments(args, kwargs)  # its moves differentiate the densities
    if start == "prior":
        guide = _prior_as_guide(model)
    elif guide is None:
        raise ValueError("guide is None: pass a guide or use start='prior'")
    # one subsample (when the model draws one) for every chain and annealing step
    model, guide, structure = checked_pair(model, guide, args, kwargs, "ais_log_evidence")
    if torch.is_tensor(step_size) and step_size.dim() > 0 and tuple(step_size.shape) != (
            structure.batch_size,):
        raise ValueError(
            f"step_size must be a number or a tensor of shape [batch] = "
            f"[{structure.batch_size}], got shape {list(step_size.shape)}"
        )
    check_weights_memory(num_chains, structure.batch_size, weight_itemsize(args, kwargs),
                         "num_chains")
    if not structure.model_latents:
        return _no_latents(model, guide, args, kwargs, num_chains, chunk_size, structure,
                           step_size)
    # HMC's moves differentiate the log densities: twice the memory of a plain pass
    check_particle_memory(model, guide, args, kwargs, structure, num_chains, chunk_size,
                          "num_chains", gradients=True)
    target = DEFAULT_TARGET_ACCEPT[transition] if target_accept is None else target_accept
    leapfrogs = num_leapfrog if transition in ("hmc", "uha") else 1
    adjusted = transition in ("hmc", "mala")
    chunk = chunk_size or num_chains
    sizes = [min(chunk, num_chains - i) for i in range(0, num_chains, chunk)]

    log_weights, accept_sums, steps = [], 0.0, []
    bar = None
    # inspect_pair validated the pair once; the many conditioned passes skip the checks.
    with torch.no_grad(), validation_enabled(False):
        for size in sizes:
            _, guide_trace = vectorized_traces(
                model, guide, args, kwargs, size, structure.max_plate_nesting + 1
            )
            path = _AnnealingPath(model, guide, args, kwargs, structure, guide_trace)
            state = path.evaluate(path.flatten(guide_trace))
            flat = state["u"]
            check_log_weights(state["log_joint"] - state["log_q"],
                              "ais_log_evidence: the chains' initial log weights")
            if bar is None:
                betas = schedule_betas.to(dtype=flat.dtype, device=flat.device)
                bar = progress_bar(len(sizes) * (len(betas) - 1), "ais_log_evidence", progress,
                                   "steps")
            eps = torch.as_tensor(step_size, dtype=flat.dtype, device=flat.device)
            eps = eps.expand(structure.batch_size).clone()
            log_w = torch.zeros(flat.shape[:2], dtype=flat.dtype, device=flat.device)
            accept_sum = torch.zeros_like(eps)
            for t in range(1, len(betas)):
                beta, previous = float(betas[t]), float(betas[t - 1])
                log_w = log_w + (beta - previous) * (state["log_joint"] - state["log_q"])
                bar.update()
                if t == len(betas) - 1:
                    break  # a move at beta = 1 would not change the weights
                step = eps.expand(log_w.shape)  # [K, batch]
                if step_jitter:
                    step = step * (1 + step_jitter * (2 * torch.rand_like(step) - 1))
                state, log_ratio, accept_prob = _transition(
                    path, state, beta, step, leapfrogs, adjusted
                )
                if not adjusted:
                    log_w = log_w + log_ratio  # -inf for a diverged move: the chain is lost
                accept_sum = accept_sum + accept_prob.mean(0)  # [batch]
                # adapt to the chains of nonzero weight: the others never move
                live = log_w > -math.inf  # [K, batch]
                num_live = live.sum(0)
                live_rate = (accept_prob * live).sum(0) / num_live.clamp(min=1)
                adapted = eps * torch.exp(adapt_rate * (live_rate - target))
                eps = torch.where(num_live > 0, adapted, eps)
            log_weights.append(log_w)
            accept_sums = accept_sums + accept_sum * size
            steps.append(eps)
    bar.close()
    log_w = torch.cat(log_weights)  # [num_chains, batch]
    _warn_heavy_tails(log_w, transition)
    num_moves = len(betas) - 2
    acceptance = accept_sums / (num_chains * num_moves) if num_moves else None
    return AISResult(
        log_evidence=log_mean_exp(log_w, 0),
        standard_error=delta_method_stderr(log_w),
        log_weights=log_w,
        acceptance_rate=acceptance,
        step_size=torch.stack(steps).mean(0),
        subsample=structure.data_subsample,
    )


def _warn_heavy_tails(log_w: torch.Tensor, transition: str) -> None:
    """Warn, naming the datapoints, when a few of the chains' weights (``log_w: [num_chains,
    batch]``) carry the estimate: one chain holds more than half of the total weight, or
    (21 chains at least) the weights' Pareto k-hat is above 0.7; and the log weights spread by
    more than 0.5 (nearly equal weights carry no tail: k-hat of a few dozen of them is noise).
    Such an estimate and its standard error rest on those chains (uncorrected moves whose
    adapted steps grew too long gave estimates nats below log p(x) with small standard
    errors; 16 chains of a poor start, 22 nats)."""
    weights = log_w.detach()
    finite = weights.masked_fill(~torch.isfinite(weights), float("nan"))
    spread = (finite - finite.nanmean(0)).pow(2).nanmean(0).sqrt()
    top_share = (weights - weights.logsumexp(0)).max(0).values.exp()  # [batch]
    heavy = top_share > 0.5
    if weights.shape[0] >= 21:  # (pareto_k's least)
        heavy = heavy | (pareto_k(weights) > 0.7)
    bad = (heavy & (spread > 0.5)).nonzero().flatten().tolist()
    if not bad:
        return
    shown = ", ".join(f"{float(top_share[i]):.2f}" for i in bad[:5])
    remedy = ("more num_chains, more num_steps or a better start"
              if transition not in ("uha", "ula") else
              "transition='hmc' (Metropolis-adjusted), or more num_steps")
    warnings.warn(
        f"ais_log_evidence: a few chains carry the estimates of datapoints "
        f"{bad[:10]}{' ...' if len(bad) > 10 else ''} (the largest chain's share of the "
        f"weight: {shown}; or a Pareto k-hat above 0.7), which may lie far from log p(x) "
        f"(below it when the rare heavy chains were missed, above it when one chain's weight "
        f"is a fluke of its path) with a standard error that does not show it; try {remedy}",
        RuntimeWarning, stacklevel=user_stacklevel())


def _no_latents(model, guide, args, kwargs, num_chains, chunk_size, structure,
                step_size) -> AISResult:
    """The exact result for a pair without latent sites: every weight is ``log p(x)``."""
    log_w = checked_log_weights(model, guide, args, kwargs, num_chains, chunk_size, structure,
                                name="num_chains")
    log_evidence = log_w[0]  # [batch]
    eps = torch.as_tensor(step_size, dtype=log_w.dtype, device=log_w.device)
    return AISResult(
        log_evidence=log_evidence,
        standard_error=torch.zeros_like(log_evidence),
        log_weights=log_w,
        acceptance_rate=None,
        step_size=eps.expand(structure.batch_size).clone(),
        subsample=structure.data_subsample,
    )


def delta_method_stderr(log_w: torch.Tensor) -> torch.Tensor:
    """Delta-method standard error of ``log mean_k w_k``: ``sd(w) / (sqrt(K) mean(w))`` per
    column of ``log_w: [K, batch]`` -> ``[batch]`` (``sd`` with ``K - 1`` degrees of freedom:
    NaN for ``K = 1``); ``inf`` for a column of zero weights only."""
    top = log_w.max(0).values  # [batch]
    shifted = (log_w - top).exp()  # [K, batch], in [0, 1]; NaN in a column of -inf
    stderr = shifted.std(0) / (math.sqrt(log_w.shape[0]) * shifted.mean(0))
    return torch.where(top > -math.inf, stderr, torch.full_like(stderr, math.inf))
