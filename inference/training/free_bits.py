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

KL terms are analytic where :func:`inference.densities.closed_form_kl` knows the pair of
(base) distributions, and else the single-sample estimate ``log q(z) - log p(z)`` at the
guide's draw, per dimension. The analytic term of a site is used only when the guide draws
every latent that the model samples before the site (its possible parents) before the site
too: for a guide ``q(z1 | x) q(z2 | z1)`` of a model ``p(z2) p(z1 | z2)`` the closed form
``KL(q(z1 | x) || p(z1 | z2))`` at a ``z2`` drawn from ``z1`` is not the expectation of
``log q(z1 | x) - log p(z1 | z2)``, so ``z1`` is scored as sampled (still unbiased). The
order only flags the site: it is scored as sampled when the model's ``p(z1 | ...)`` reads
``z2`` and the guide's draw of ``z2`` depends on ``z1``'s (read from the draws' autograd
graph, or a rerun with the draws as leaves; without either, as sampled), so independent
latents sampled in another order keep their closed form (the floor of a sampled KL,
``E[max(lambda, KL^)] > max(lambda, KL)``, would change the objective). With
``lambda = 0`` no floor is applied at all, so ``L_0`` is the ELBO in expectation also where
a ``KL_j`` is a sampled estimate (which can be negative). Per-dimension terms need a
guide and a prior that both factorize per dimension: an elementwise base
(``Normal(...).to_event(1)``), or for the prior a ``MultivariateNormal`` with a diagonal
covariance (``MVN(0, I)``). A guide whose density does not factorize (an IAF guide, any
``MultivariateNormal`` guide, whose covariance is learned, a Dirichlet) is split per
dimension by its ``log_prob_elements`` where it has one (the IAF's ``log N(z0_i; mu_i,
sigma_i) - sum_t log s_{t,i}``, as in [1]); without one,
``group="dimension"`` with ``lambda > 0`` refuses the site (its KL is one term for the whole
site) and ``group="site"`` floors the site's total. Latent sites outside the ``"data"`` plate keep
their full, unfloored KL. Data-plate scaling (minibatches in :func:`inference.fit`) and KL warm-up
(:class:`inference.training.scale_latents`) multiply the terms through the sites' scale.

References:
    [1] Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling (2016), Improved Variational
        Inference with Inverse Autoregressive Flow, NeurIPS.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pyro.distributions import Independent, Normal
from pyro.distributions.torch_distribution import MaskedDistribution

from ..checks import as_int, check_number
from ..densities import closed_form_kl
from ..pair_check import (biased_late_parents, data_frame, is_delta, sample_sites, site_mask,
                          trace_pair)

__all__ = ["FreeBitsELBO", "FreeBitsTerms", "free_bits_terms"]

GROUPS = ("dimension", "site")


def _base(fn):
    """``fn`` without its ``Independent`` and ``dist.mask`` wrappers (the masks are applied
    to the KL elements apart: :func:`_both_masked`)."""
    while isinstance(fn, (Independent, MaskedDistribution)):
        fn = fn.base_dist
    return fn


def _scaled(value: torch.Tensor, site) -> torch.Tensor:
    scale = site["scale"]
    return value if isinstance(scale, (int, float)) and scale == 1 else value * scale


def _both_masked(kl: torch.Tensor, model_site, guide_site) -> tuple:
    """``(kl, mask)``: the KL elements ``kl: [*batch, *elements]`` (a prefix of the guide
    value's shape) zeroed where either side's mask is off, each site's ``poutine.mask`` and
    ``dist.mask`` wrappers (:func:`inference.pair_check.site_mask`; the survey refuses masks
    that differ between model and guide), and that mask in ``kl``'s shape (None: nothing
    masked). A value's event dims past ``elements`` count as masked when any of their
    entries is (a mask covers such an event whole)."""
    value = guide_site["value"]
    mask = site_mask(model_site) & site_mask(guide_site)
    if bool(mask.all()):
        return kl, None
    mask = mask.reshape((1,) * (value.dim() - mask.dim()) + tuple(mask.shape)).expand(
        value.shape)
    mask = mask.reshape(tuple(kl.shape) + (-1,)).all(-1) if value.dim() > kl.dim() else mask
    return torch.where(mask, kl, kl.new_zeros(())), mask


def _floored_penalty(kl: torch.Tensor, mask, data_dim: int, free_bits: float,
                     group: str) -> tuple:
    """``(penalty, KL_j)`` of one data-plate site: ``KL_j`` the mean over the data plate's
    scored rows of ``kl: [*batch, *elements]`` (masked elements zero, ``mask`` in its shape
    or None) at each element, and the penalty ``rows * max(lambda, KL_j)`` summed (per
    dimension), or ``rows * max(lambda, sum_j KL_j)`` (per site), with ``rows`` the rows
    whose KL counts: a masked row (padding) is neither averaged in as KL 0 nor charged the
    floor."""
    if mask is None:
        batch = kl.shape[data_dim]
        mean_kl = kl.mean(data_dim)  # KL_j: [*other plates, *event]
        if free_bits == 0:  # L_0 is the ELBO: no floor on a sampled (possibly < 0) KL_j
            return batch * mean_kl.sum(), mean_kl
        if group == "dimension":
            return batch * mean_kl.clamp(min=free_bits).sum(), mean_kl
        return batch * mean_kl.sum().clamp(min=free_bits), mean_kl
    rows = mask.sum(data_dim)  # scored rows at each element
    mean_kl = kl.sum(data_dim) / rows.clamp(min=1)
    if free_bits == 0:
        return kl.sum(), mean_kl
    if group == "dimension":
        return (rows * mean_kl.clamp(min=free_bits)).sum(), mean_kl
    scored = mask.movedim(data_dim, 0).reshape(mask.shape[data_dim], -1).any(1).sum()
    total = kl.sum() / scored.clamp(min=1)  # the site's mean KL over its scored rows
    return scored * total.clamp(min=free_bits), mean_kl


def _masked(value: torch.Tensor, site, trailing: int = 0) -> torch.Tensor:
    """Zero ``value`` where the site's batch-shaped mask is False (``trailing`` dims after
    the batch dims are event dims the mask does not cover)."""
    mask = site["mask"]
    if mask is None or mask is True:
        return value
    if mask is False:
        return torch.zeros_like(value)
    return torch.where(mask.reshape(mask.shape + (1,) * trailing), value, value.new_zeros(()))


def _elementwise_prior(fn):
    """The model's distribution ``fn`` as one with an elementwise base (event shape ``()``
    under ``Independent``) when it factorizes per dimension, else ``None``: an elementwise
    base as it is, and a ``MultivariateNormal`` whose covariance is diagonal at this
    evaluation (``MVN(0, I)``) as the ``Normal`` of its diagonal."""
    base = _base(fn)
    if base.event_shape == ():
        return base
    if isinstance(base, torch.distributions.MultivariateNormal):
        tril = base.scale_tril
        diagonal = tril.diagonal(dim1=-2, dim2=-1)
        if bool((tril == torch.diag_embed(diagonal)).all()):
            return Normal(base.loc, diagonal)
    return None


def _kl_elements(model_site, guide_site, analytic: bool = True,
                 group: str = "dimension") -> tuple[torch.Tensor, int]:
    """KL of a latent site per element: analytic between the base distributions (under
    ``Independent``) when registered and ``analytic``, else ``log q(z) - log p(z)`` at the
    guide's draw. Per-dimension terms exist when the guide's base is elementwise (a
    ``Normal(...).to_event(1)``) and the prior factorizes per dimension (an elementwise base,
    or a ``MultivariateNormal`` with a diagonal covariance such as ``MVN(0, I)``, taken as the
    ``Normal`` of its diagonal). A guide whose density does not factorize per dimension (an
    IAF guide, a ``MultivariateNormal`` guide, whose covariance is learned whatever it starts
    at, a Dirichlet) is split per dimension by its ``log_prob_elements(z)`` (per-coordinate
    terms that sum to ``log_prob(z)``, as :class:`ppl_models.flow_guide.IAFNormal` has)
    against a prior that factorizes; without one, a site of more than one element is refused
    under ``group="dimension"`` (its KL would be one term for the whole site) and compared per
    batch element of the site under ``group="site"`` (which ``free_bits_terms`` passes at
    ``lambda = 0``: no floor).

    Returns:
        the KL with the site's batch shape followed by its event dims that the base
        distributions keep apart (``[batch, d]`` for a diagonal Normal), and the number of
        those event dims.
    """
    q_fn, p_fn = guide_site["fn"], model_site["fn"]
    q, p = _base(q_fn), _elementwise_prior(p_fn)
    value = guide_site["value"]
    if (p is None or q.event_shape != () or q_fn.event_shape != p_fn.event_shape
            or len(q.batch_shape) != len(p.batch_shape)):
        elements = getattr(q_fn, "log_prob_elements", None)
        if (elements is not None and p is not None
                and p_fn.event_shape == q_fn.event_shape):
            kl = elements(value) - p.log_prob(value)
            return kl.expand(value.shape), len(q_fn.event_shape)
        if group == "dimension" and q_fn.event_shape.numel() > 1:
            raise ValueError(
                f"FreeBitsELBO(group='dimension'): the guide's {type(q_fn).__name__} at "
                f"latent site '{guide_site['name']}' has no per-dimension density that lines "
                f"up with the model's {type(_base(p_fn)).__name__} (both must factorize per "
                "dimension: an elementwise base such as Normal(...).to_event(1), a prior "
                "MultivariateNormal with a diagonal covariance, or a guide with "
                "log_prob_elements), so its KL is one term for the site's "
                f"{q_fn.event_shape.numel()} dimensions and a floor of lambda nats per "
                "dimension cannot be applied. Pass group='site' to floor the site's total KL "
                "at lambda (the floor then applies to the site as a whole)")
        q, p = q_fn, p_fn
    try:
        if not analytic or is_delta(q):  # Pyro's KL(Delta || p) = -log p(v) drops the
            raise NotImplementedError    # Delta's log_density
        kl = closed_form_kl(q, p)
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
                    group: str = "dimension", pair=None) -> FreeBitsTerms:
    """Evaluate ``L_lambda`` (module docstring) on a model trace replayed from a guide trace.

    Args:
        model_trace, guide_trace: from ``poutine.trace(poutine.replay(model, guide_trace))``
            and ``poutine.trace(guide)``, one draw of every latent.
        free_bits: lambda, nats per dimension (``group="dimension"``) or per site
            (``group="site"``); 0 floors nothing: the ELBO (analytic KL where valid).
        group: ``"dimension"`` or ``"site"``.
        pair: ``(model, guide, args, kwargs)``, rerun to read the latents' dependencies
            when a site is sampled after one of its model parents in the guide and the
            traces' draws carry no gradient graph (a step under ``no_grad``); without it
            such sites are scored as sampled (:func:`inference.pair_check.biased_late_parents`).
    """
    if group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
    if not free_bits >= 0:
        raise ValueError(f"free_bits must be a number of nats >= 0, got {free_bits!r}")
    guide_latents = list(sample_sites(guide_trace, observed=False))
    guide_sites = {s["name"]: s for s in guide_latents}
    model_sites = list(sample_sites(model_trace))
    late = {site for site, _ in biased_late_parents(model_trace, guide_trace, pair)}
    log_likelihood, penalty, kls = 0.0, 0.0, {}
    for site in model_sites:
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
        # with lambda = 0 nothing is floored: a site without per-dimension terms is one group
        kl, split = _kl_elements(site, guide_sites[name], name not in late,
                                 group if free_bits > 0 else "site")
        kl, mask = _both_masked(kl, site, guide_sites[name])
        frame = data_frame(site)
        if frame is None:
            penalty = penalty + _scaled(kl.sum(), site)
            continue
        data_dim = frame.dim - split  # frame.dim counts from the end of the batch dims
        floored, kls[name] = _floored_penalty(kl, mask, data_dim, free_bits, group)
        penalty = penalty + _scaled(floored, site)
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

    The floor of ``group="dimension"`` is per element of a latent site's value. A guide whose
    density does not factorize over those elements is split per dimension by its
    ``log_prob_elements`` (``ppl_models``' IAF guide, ``FlowVAE``, has one: each coordinate's
    ``log N(z0_i) - sum_t log s_{t,i}``, Kingma et al.'s per-dimension free bits for IAF
    posteriors); a guide without one (a ``MultivariateNormal``, against any prior) or a prior
    that does not factorize (a full-covariance ``MultivariateNormal``; ``MVN(0, I)`` does) is
    refused naming the site when ``free_bits > 0``, and ``group="site"``
    floors that site's total KL instead. Sites whose model parents the guide samples after
    them (a top-down model with a bottom-up guide, ``TwoLayerVAE``) are scored as sampled,
    ``log q - log p``, not with the closed-form KL, which would be biased there;
    ``free_bits=0`` floors nothing and is the ELBO.

    Args:
        free_bits: lambda in nats per latent dimension (or per site, see ``group``).
        num_particles: draws of the latents per step.
        group: ``"dimension"`` (each element of a latent site's value is a group) or
            ``"site"``.
    """

    def __init__(self, free_bits: float, num_particles: int = 1, group: str = "dimension"):
        # the floor is clamped against the KL in float32 (at least): 1e39 failed there, in
        # torch, at the first step
        check_number(free_bits, "free_bits", minimum=0.0, dtype=torch.float32)
        num_particles = as_int(num_particles, "num_particles")
        if group not in GROUPS:
            raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
        self.free_bits, self.num_particles, self.group = float(free_bits), num_particles, group

    def __repr__(self) -> str:
        return f"elbo-free-bits({self.free_bits:g} nats per {self.group})"

    def terms(self, model, guide, *args, **kwargs) -> FreeBitsTerms:
        """One draw of every latent: the objective's pieces, differentiable."""
        model_trace, guide_trace = trace_pair(model, guide, args, kwargs)
        return free_bits_terms(model_trace, guide_trace, self.free_bits, self.group,
                               pair=(model, guide, args, kwargs))

    def loss(self, model, guide, *args, **kwargs) -> float:
        """The negative free-bits objective, averaged over ``num_particles`` draws, without
        gradients (Pyro's ELBO interface)."""
        with torch.no_grad():
            return -sum(float(self.terms(model, guide, *args, **kwargs).objective)
                        for _ in range(self.num_particles)) / self.num_particles

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """:meth:`loss`, its gradient written to the parameters' ``.grad`` (Pyro's ELBO
        interface)."""
        total = 0.0
        for _ in range(self.num_particles):
            surrogate = -self.terms(model, guide, *args, **kwargs).objective / self.num_particles
            if surrogate.requires_grad:
                surrogate.backward()
            total += float(surrogate.detach())
        return total
