"""The free-bits ELBO (Kingma et al. 2016): a KL floor that keeps latent dimensions in use.

For a minibatch ``x_1..x_B`` and a latent site with dimensions ``j = 1..d``, the objective
maximized is ([1] Appendix C.8, eq. 15)::

    L_lambda = sum_b E_q[log p(x_b | z_b)] - B * sum_j max(lambda, KL_j),
    KL_j = (1 / B) sum_b KL(q(z_bj | x_b) || p(z_bj)),

with ``KL_j`` averaged over the minibatch before the floor is applied. While ``KL_j <
lambda`` the term is the constant ``lambda``: its gradient is zero, so nothing pushes
dimension ``j`` back towards the prior and the likelihood term is free to spend up to
``lambda`` nats on it. Above the floor the objective is the ELBO's. With ``lambda = 0``
(KL is non-negative) ``L_0`` is the ELBO with analytic KL (``TraceMeanField_ELBO``).
``group="site"`` floors each latent site's total KL instead (one group per site).
``L_lambda`` is a training objective, not a bound: report the ELBO or IWAE_K of the result.

KL terms are analytic where :func:`torch.distributions.kl_divergence` knows the pair of
(base) distributions, and else the single-sample estimate ``log q(z) - log p(z)`` at the
guide's draw, per dimension. Latent sites outside the ``"data"`` plate keep their full,
unfloored KL. Data-plate scaling (minibatches in :func:`inference.fit`) and KL warm-up
(:class:`inference.training.scale_latents`) multiply the terms through the sites' scale.

References:
    [1] Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling (2016), Improved Variational
        Inference with Inverse Autoregressive Flow, NeurIPS.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pyro.distributions import Independent
from torch.distributions import kl_divergence

from ..checks import check_int, check_number
from ..pair_check import data_frame, is_delta, sample_sites, trace_pair

__all__ = ["FreeBitsELBO", "FreeBitsTerms", "free_bits_terms"]

GROUPS = ("dimension", "site")


def _base(fn):
    while isinstance(fn, Independent):
        fn = fn.base_dist
    return fn


def _scaled(value: torch.Tensor, site) -> torch.Tensor:
    scale = site["scale"]
    return value if isinstance(scale, (int, float)) and scale == 1 else value * scale


def _masked(value: torch.Tensor, site, trailing: int = 0) -> torch.Tensor:
    """Zero ``value`` where the site's batch-shaped mask is False (``trailing`` dims after
    the batch dims are event dims the mask does not cover)."""
    mask = site["mask"]
    if mask is None or mask is True:
        return value
    if mask is False:
        return torch.zeros_like(value)
    return torch.where(mask.reshape(mask.shape + (1,) * trailing), value, value.new_zeros(()))


def _kl_elements(model_site, guide_site) -> tuple[torch.Tensor, int]:
    """KL of a latent site per element: analytic between the base distributions (under
    ``Independent``) when registered, else ``log q(z) - log p(z)`` at the guide's draw. Bases
    whose elements do not line up (a MultivariateNormal guide against a diagonal Normal
    prior) are compared per batch element of the site instead.

    Returns:
        the KL with the site's batch shape followed by its event dims that the base
        distributions keep apart (``[batch, d]`` for a diagonal Normal), and the number of
        those event dims.
    """
    q, p = _base(guide_site["fn"]), _base(model_site["fn"])
    if q.event_shape != p.event_shape or len(q.batch_shape) != len(p.batch_shape):
        q, p = guide_site["fn"], model_site["fn"]
    value = guide_site["value"]
    try:
        if is_delta(q):  # Pyro's KL(Delta || p) = -log p(v) drops the Delta's log_density
            raise NotImplementedError
        kl = kl_divergence(q, p)
    except NotImplementedError:
        kl = q.log_prob(value) - p.log_prob(value)
    shape = value.shape[:value.dim() - len(q.event_shape)]
    split = len(guide_site["fn"].event_shape) - len(q.event_shape)
    return kl.expand(shape), split


@dataclass
class FreeBitsTerms:
    """The pieces of one single-sample evaluation of the free-bits objective.

    Attributes:
        log_likelihood: scaled ``sum_b log p(x_b | z_b)`` over observed sites (scalar).
        penalty: scaled ``B sum_j max(lambda, KL_j)`` plus the full KL of latent sites
            outside the data plate (scalar).
        kl: per data-plate latent site, the minibatch-mean ``KL_j`` before the floor, with
            the site's value shape minus the data dim (``[latent_dim]`` for a VAE), nats.
    """

    log_likelihood: torch.Tensor
    penalty: torch.Tensor
    kl: dict[str, torch.Tensor]

    @property
    def objective(self) -> torch.Tensor:
        """``L_lambda = log_likelihood - penalty`` (to maximize)."""
        return self.log_likelihood - self.penalty


def free_bits_terms(model_trace, guide_trace, free_bits: float,
                    group: str = "dimension") -> FreeBitsTerms:
    """Evaluate ``L_lambda`` (module docstring) on a model trace replayed from a guide trace.

    Args:
        model_trace, guide_trace: from ``poutine.trace(poutine.replay(model, guide_trace))``
            and ``poutine.trace(guide)``, one draw of every latent.
        free_bits: lambda, nats per dimension (``group="dimension"``) or per site
            (``group="site"``); 0 gives the analytic-KL ELBO.
        group: ``"dimension"`` or ``"site"``.
    """
    if group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
    if not free_bits >= 0:
        raise ValueError(f"free_bits must be a number of nats >= 0, got {free_bits!r}")
    guide_sites = {s["name"]: s for s in sample_sites(guide_trace, observed=False)}
    log_likelihood, penalty, kls = 0.0, 0.0, {}
    for site in sample_sites(model_trace):
        if site["is_observed"]:
            log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
            log_likelihood = log_likelihood + _scaled(_masked(log_p, site).sum(), site)
            continue
        name = site["name"]
        if name not in guide_sites:
            raise ValueError(f"latent site '{name}' of the model is not sampled by the guide")
        if not guide_sites[name]["fn"].has_rsample:
            raise NotImplementedError(
                f"free bits need a reparameterized guide; site '{name}' is "
                f"{type(guide_sites[name]['fn']).__name__} without rsample")
        kl, split = _kl_elements(site, guide_sites[name])
        kl = _masked(kl, site, split)
        frame = data_frame(site)
        if frame is None:
            penalty = penalty + _scaled(kl.sum(), site)
            continue
        data_dim = frame.dim - split  # frame.dim counts from the end of the batch dims
        batch = kl.shape[data_dim]
        mean_kl = kl.mean(data_dim)  # KL_j: [*other plates, *event]
        kls[name] = mean_kl
        floored = (mean_kl.clamp(min=free_bits).sum() if group == "dimension"
                   else mean_kl.sum().clamp(min=free_bits))
        penalty = penalty + _scaled(batch * floored, site)
    if not torch.is_tensor(log_likelihood):
        raise ValueError("the model has no observed site to score")
    penalty = penalty if torch.is_tensor(penalty) else log_likelihood.new_zeros(())
    return FreeBitsTerms(log_likelihood, penalty, kls)


class FreeBitsELBO:
    """Negative free-bits ELBO ``-L_lambda`` as an SVI loss (module docstring, [1] C.8).

    ``SVI(model, guide, optim, loss=obj.loss, loss_and_grads=obj.loss_and_grads)``, or
    ``inference.fit(..., loss=FreeBitsELBO(0.25))``; ``make_loss("elbo-free-bits",
    free_bits=...)`` builds one too. Gradients flow through reparameterized guide samples;
    ``num_particles`` draws are averaged one after another.

    Args:
        free_bits: lambda in nats per latent dimension (or per site, see ``group``).
        num_particles: draws of the latents per step.
        group: ``"dimension"`` (each element of a latent site's value is a group) or
            ``"site"``.
    """

    def __init__(self, free_bits: float, num_particles: int = 1, group: str = "dimension"):
        check_number(free_bits, "free_bits", minimum=0.0)
        check_int(num_particles, "num_particles")
        if group not in GROUPS:
            raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
        self.free_bits, self.num_particles, self.group = float(free_bits), num_particles, group

    def __repr__(self) -> str:
        return f"elbo-free-bits({self.free_bits:g} nats per {self.group})"

    def terms(self, model, guide, *args, **kwargs) -> FreeBitsTerms:
        """One draw of every latent: the objective's pieces, differentiable."""
        model_trace, guide_trace = trace_pair(model, guide, args, kwargs)
        return free_bits_terms(model_trace, guide_trace, self.free_bits, self.group)

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return -sum(float(self.terms(model, guide, *args, **kwargs).objective)
                        for _ in range(self.num_particles)) / self.num_particles

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        total = 0.0
        for _ in range(self.num_particles):
            surrogate = -self.terms(model, guide, *args, **kwargs).objective / self.num_particles
            if surrogate.requires_grad:
                surrogate.backward()
            total += float(surrogate.detach())
        return total
