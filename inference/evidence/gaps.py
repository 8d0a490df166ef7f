"""Inference suboptimality: the amortization gap and the approximation gap (Cremer et al. 2018).

For an amortized guide ``q_phi(z | x)`` (an encoder that outputs variational parameters) the
distance from the ELBO to the evidence splits into two parts [1]:

    log p(x) - ELBO[q_phi]  =  (log p(x) - ELBO[q*_x])  +  (ELBO[q*_x] - ELBO[q_phi])
       inference gap             approximation gap          amortization gap

where ``q*_x`` is the best member of the guide's family *for this datapoint alone*. The
approximation gap is ``KL(q*_x || p(z | x))``, the price of the family; the amortization gap
is the price of sharing one encoder across the data. Both are >= 0 (the second up to how well
``q*_x`` is found).

We find ``q*_x`` as [1] does: a separate :class:`LocalGaussianGuide` per test datapoint, with
the amortized guide's site names, shapes and family (a diagonal Normal per site, or a full
``MultivariateNormal`` where the amortized guide has one), initialized at the encoder's output
and trained by maximizing its own ELBO with reparameterized gradients and Adam, all datapoints
in one vectorized pass (each datapoint's parameters only see its own ELBO). ``log p(x)`` is
supplied by the caller: exact where available, else the tightest estimate at hand (AIS or
IWAE_5000, both lower bounds, so the approximation gap is then an upper bound's estimate).

For a linear-Gaussian model with posterior precision ``Lambda`` the best diagonal Gaussian has
variances ``1 / Lambda_ii`` and approximation gap ``(sum_i log Lambda_ii - log det Lambda) / 2``
(the tests use this closed form).

References:
    [1] Cremer, Li, Duvenaud (2018), Inference suboptimality in variational autoencoders.
    [2] Krishnan, Liang, Hoffman (2018), On the challenges of learning with inference networks
        on sparse, high-dimensional data (refining encoder outputs per datapoint).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import torch
from pyro import poutine
from pyro.distributions import Independent, MultivariateNormal, Normal
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution

from ..checks import (MAX_STEPS, anomaly_found_nan, as_number, autograd_arguments,
                      check_at_most, check_int, check_no_inference_tensors, check_nonempty_batch,
                      check_pair_call, check_program, check_program_arguments,
                      check_tensor_input, check_weights_memory, leaves_buffers,
                      validation_enabled)
from ..pair_check import (
    DATA_PLATE,
    check_pair,
    data_frame,
    conditional_sites_of_guide,
    PairError,
    PairStructure,
    sample_sites,
    site_mask,
    survey_pair,
)
from ..progress import bar_range, check_progress
from ..reachable import reachable_modules
from ..random_state import forked_rng
from ..weights import (
    check_data,
    check_num_samples,
    check_particle_memory,
    checked_log_weights,
    checked_pair,
    log_mean_exp,
    particle_log_weights,
    weight_itemsize,
)


@dataclass
class _LocalSite:
    name: str
    family: str  # "normal" or "mvn"
    event_dim: int  # of the site (an MVN's 1 plus any Independent dims around it)
    data_dim: int  # the "data" plate's dim, negative
    loc: torch.Tensor  # value shape (no particle dim)
    raw_scale: torch.Tensor  # log scale (normal) or tril with log diagonal (mvn)
    mask: torch.Tensor | None  # the amortized site's mask (poutine.mask, dist.mask): value-
    # shaped for "normal", one flag per vector for "mvn"
    dtype: torch.dtype  # of the amortized site's value, which the model is given

    def distribution(self):
        # the parameters are float32 at least (Adam's eps and squared gradients vanish in
        # float16); the draws have the amortized guide's dtype, as the model expects
        if self.family == "normal":
            fn = Normal(self.loc.to(self.dtype), self.raw_scale.exp().to(self.dtype))
            fn = fn if self.mask is None else fn.mask(self.mask)
            return fn.to_event(self.event_dim)
        diagonal = self.raw_scale.diagonal(dim1=-2, dim2=-1).exp()
        scale_tril = (self.raw_scale.tril(-1) + torch.diag_embed(diagonal)).to(self.dtype)
        fn = MultivariateNormal(self.loc.to(self.dtype), scale_tril=scale_tril)
        fn = fn if self.mask is None else fn.mask(self.mask)
        return fn.to_event(self.event_dim - 1)


class LocalGaussianGuide:
    """A guide with free Gaussian parameters per datapoint, mirroring an amortized guide.

    Built from one run of ``guide(*args, **kwargs)``: for each latent site, a diagonal
    ``Normal(loc, scale).to_event(e)`` (where the guide has a Normal, ``e`` its event dims) or a
    ``MultivariateNormal(loc, scale_tril)`` (where it has one, also inside ``.to_event``), with
    ``loc`` and scale initialized to the guide's values, so the local guide starts exactly
    where the encoder put it. Parameters have the shape of the site's value, e.g.
    ``loc: [batch, latent_dim]``, and its dtype, or float32 for a half-precision site (whose
    draws keep the site's dtype).

    Call it with the same arguments as the amortized guide (the same datapoints): it only
    reads the ``"data"`` plate's size. When the guide subsamples that plate
    (``pyro.plate("data", N, subsample_size=B)``), the local guide keeps the ``[B]`` indices
    drawn here (:attr:`subsample`) and replays them on every call, so a model replayed
    against it scores the datapoints its parameters belong to. :meth:`parameters` lists the
    free tensors.
    """

    def __init__(self, guide: Callable, *args, **kwargs):
        check_program(guide, "guide")
        check_program_arguments(guide, "guide", args, kwargs, "LocalGaussianGuide(guide, "
                                "*args, **kwargs)", "pass the data the guide takes, e.g. "
                                "LocalGaussianGuide(guide, x)")
        check_data(args, kwargs)
        with poutine.block(), torch.no_grad():
            trace = poutine.trace(guide).get_trace(*args, **kwargs)
        self.sites: list[_LocalSite] = []
        self.batch_size = None
        self.data_size = None  # the plate's declared N, kept only when it is subsampled
        self.subsample: torch.Tensor | None = None
        for node in sample_sites(trace, observed=False):
            frame = data_frame(node)
            if frame is None:
                raise ValueError(
                    f"guide site '{node['name']}' is not inside the '{DATA_PLATE}' plate: "
                    "local parameters are per datapoint"
                )
            # a sizeless plate records size -1: the datapoints are the value's data dim
            # a sizeless plate's size: the site's batch shape along the plate's dim (the
            # value's dims to the right of the batch are event dims)
            self.batch_size = frame.size if frame.size > 0 else node["fn"].batch_shape[frame.dim]
            if frame.full_size is not None and frame.full_size > frame.size:
                self.data_size = frame.full_size
                self.subsample = trace.nodes[DATA_PLATE]["value"]
            self.sites.append(self._local_site(node, frame.dim))
        if not self.sites:
            raise ValueError("the guide samples no latent site: nothing to optimize")

    @staticmethod
    def _local_site(node, data_dim: int) -> _LocalSite:
        fn, value = node["fn"], node["value"]
        base = fn
        while isinstance(base, (Independent, MaskedDistribution, ExpandedDistribution)):
            base = base.base_dist  # (the mask is kept below; the value has the expanded shape)
        if isinstance(base, Normal):
            loc = base.mean.expand(value.shape)
            raw = base.stddev.expand(value.shape).log()
            family = "normal"
        elif isinstance(base, MultivariateNormal):
            loc = base.mean.expand(value.shape)
            tril = base.scale_tril.expand(value.shape + value.shape[-1:])
            raw = tril.tril(-1) + torch.diag_embed(tril.diagonal(dim1=-2, dim2=-1).log())
            family = "mvn"
        else:
            raise ValueError(
                f"guide site '{node['name']}' has a {type(base).__name__} distribution; the "
                "local guide supports Normal (diagonal) and MultivariateNormal sites"
            )
        # the site's mask on the values the local guide's Normal draws: each value for a
        # diagonal Normal (a partly masked event, as the amortized guide masks it), each
        # vector for a MultivariateNormal
        mask = site_mask(node).expand(value.shape)
        if family == "mvn":
            mask = mask.all(-1)
        # free parameters in float32 at least: half-precision ones (a guide computing from
        # float16 data) diverge at Adam's second step
        wide = torch.promote_types(loc.dtype, torch.float32)
        with torch.inference_mode(False):  # leaves that can require gradients, whatever mode
            loc, raw = (t.detach().to(wide).clone().requires_grad_(True) for t in (loc, raw))
        return _LocalSite(
            name=node["name"], family=family, event_dim=fn.event_dim, data_dim=data_dim,
            loc=loc, raw_scale=raw, mask=None if bool(mask.all()) else mask, dtype=value.dtype,
        )

    def parameters(self) -> list[torch.Tensor]:
        """The free tensors, two per latent site in the sites' order: ``loc`` with the
        shape of the site's value (``[batch, latent_dim]``) and the raw scale, of the same
        shape for a Normal site (its log scale) or ``[batch, d, d]`` for a
        MultivariateNormal one (its Cholesky factor with the log of its diagonal)."""
        return [t for s in self.sites for t in (s.loc, s.raw_scale)]

    def __call__(self, *args, **kwargs) -> None:
        # one "data" plate for all sites (a plate opened per site would record its
        # subsample site once per latent); sites keep their order
        dims = {s.data_dim for s in self.sites}
        if len(dims) != 1:
            raise ValueError(f"the guide's latent sites put the '{DATA_PLATE}' plate at "
                             f"different dims {sorted(dims)}")
        size = self.batch_size if self.subsample is None else self.data_size
        with pyro.plate(DATA_PLATE, size, subsample=self.subsample, dim=dims.pop()):
            for s in self.sites:
                pyro.sample(s.name, s.distribution())


def _check_fit_arguments(num_steps, lr, num_particles) -> tuple[int, float, int]:
    """The local guides' fit options, checked; returned as Python numbers (a numpy or tensor
    count would overflow int64 in the memory checks' products)."""
    check_int(num_steps, "num_steps")
    check_at_most(num_steps, "num_steps", MAX_STEPS, "each step fits every local guide "
                  "once, so such a run would not end")
    # Adam computes lr in the local parameters' dtype, float32 at least: 1e39 failed there,
    # in torch ("value cannot be converted to type float without overflow")
    lr = as_number(lr, "lr", positive=True, dtype=torch.float32)
    check_int(num_particles, "num_particles")
    return int(num_steps), lr, int(num_particles)


def _check_step(loss: float, grads, step: int, num_steps: int, lr: float) -> None:
    """Raise ``FloatingPointError`` when a step's loss or gradients are NaN or infinite."""
    if math.isfinite(loss) and all(bool(torch.isfinite(g).all()) for g in grads):
        return
    what = (f"the loss is {loss}" if not math.isfinite(loss)
            else "the gradients hold NaN or infinite values")
    raise FloatingPointError(
        f"fit_local_guide diverged: {what} at step {step + 1} of {num_steps} (lr={lr}); the "
        f"local parameters keep the values after step {step}. Lower lr, or check the model "
        "and the data")


def _local_parameters(local_guide) -> list[torch.Tensor]:
    """``local_guide.parameters()`` as a list of leaf tensors that require gradients;
    ``TypeError`` naming ``local_guide`` otherwise."""
    method = getattr(local_guide, "parameters", None)
    params = list(method()) if callable(method) else None
    if not params or not all(torch.is_tensor(p) and p.is_leaf and p.requires_grad
                             for p in params):
        raise TypeError(
            f"local_guide ({type(local_guide).__name__}) must have parameters() returning its "
            "free tensors, leaves with requires_grad: a LocalGaussianGuide or a pair's "
            "local_guide(x)")
    return params


@leaves_buffers
def fit_local_guide(model: Callable, local_guide: LocalGaussianGuide | Callable, *args,
                    num_steps: int = 500, lr: float = 0.02, num_particles: int = 16,
                    progress: bool = True, **kwargs) -> list[float]:
    """Maximize each datapoint's ELBO over its own local parameters (in place).

    ``local_guide``: a :class:`LocalGaussianGuide`, or a pair's own local guide (a
    ``ppl_models.LocalGuide`` such as ``FlowVAE.local_guide(x)``: a guide called with the
    model's ``*args``/``**kwargs`` whose ``parameters()`` are the free tensors).

    Adam on ``-sum_i ELBO_i`` estimated with ``num_particles`` reparameterized draws per
    datapoint, the learning rate decaying linearly from ``lr`` to ``lr / 10`` so the final
    parameters are not dominated by gradient noise. Gradients reach only the local guide's
    parameters; the model's stay untouched. The model is replayed on the local guide's
    datapoints (its :attr:`~LocalGaussianGuide.subsample` when the guide subsampled them).

    ``progress``: False hides the bar over the steps that a call shows after a second.

    Raises:
        FloatingPointError: a step's loss or gradients are NaN or infinite (the step is named,
            and not applied).

    Returns:
        the mean negative ELBO over the datapoints that each step computed before it moved
            the parameters (nats), ``num_steps`` floats: the first is the start's value.
    """
    check_pair_call(fit_local_guide, kwargs, args, model=model, local_guide=local_guide)
    num_steps, lr, num_particles = _check_fit_arguments(num_steps, lr, num_particles)
    check_progress(progress)
    _local_parameters(local_guide)
    check_nonempty_batch(args, kwargs)
    args, kwargs = autograd_arguments(args, kwargs)
    structure = check_pair(survey_pair(model, local_guide, args, kwargs), "elbo")
    fixed = [n for n in structure.non_reparameterized if n not in structure.auxiliary]
    if fixed:
        raise PairError(f"fit_local_guide: local guide site '{fixed[0]}' has no "
                        "reparameterized sampler (rsample); its parameters get no gradient "
                        "through the draws")
    check_weights_memory(num_particles, structure.batch_size, weight_itemsize(args, kwargs),
                         "num_particles")
    check_particle_memory(model, local_guide, args, kwargs, structure, num_particles, None,
                          "num_particles", gradients=True, chunkable=False)
    params = _local_parameters(local_guide)
    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1.0 - 0.9 * step / max(num_steps - 1, 1)
    )
    history = []
    # gradients are the point here, also when called under no_grad or inference_mode
    with validation_enabled(False), torch.inference_mode(False):
        for step in bar_range(num_steps, "fit_local_guide", progress):
            with poutine.block(), torch.enable_grad():
                log_w = particle_log_weights(model, local_guide, args, kwargs,
                                             num_particles, structure)
                loss = -log_w.mean(0).sum()
                try:
                    grads = torch.autograd.grad(loss, params)
                except RuntimeError as error:  # the user's set_detect_anomaly(True)
                    if not anomaly_found_nan(error):
                        raise
                    raise FloatingPointError(
                        f"fit_local_guide diverged: torch's anomaly detection found NaN in the "
                        f"gradient at step {step + 1} of {num_steps} (lr={lr}); the local "
                        f"parameters keep the values after step {step}. Lower lr, or check "
                        "the model and the data") from error
            loss = float(loss.detach())
            _check_step(loss, grads, step, num_steps, lr)
            for p, g in zip(params, grads):
                p.grad = g
            optimizer.step()
            schedule.step()
            history.append(loss / structure.batch_size)
    for p in params:
        p.grad = None
    return history


@dataclass
class GapResult:
    """Per-datapoint ELBOs and gaps in nats (:func:`amortization_gap`).

    Attributes:
        elbo_amortized, elbo_local: ``[batch]`` ELBO of the amortized and the optimized local
            guide; ``*_standard_error`` their Monte Carlo standard errors ``[batch]`` (also
            read as ``*_stderr``, their former names).
        amortization_gap: ``[batch]`` ``elbo_local - elbo_amortized`` (>= 0 up to MC error).
        log_evidence: ``[batch]`` the caller's best ``log p(x)`` (at ``subsample``), or None.
        approximation_gap: ``[batch]`` ``log_evidence - elbo_local``, or None.
        inference_gap: ``[batch]`` ``log_evidence - elbo_amortized`` (the sum), or None.
        history: mean negative ELBO per optimization step, each before its step.
        local_guide: the optimized :class:`LocalGaussianGuide`.
        subsample: ``[batch]`` indices of the datapoints scored when the model subsamples its
            ``"data"`` plate (one subsample for every estimate of the call), else None.
    """

    elbo_amortized: torch.Tensor
    elbo_amortized_standard_error: torch.Tensor
    elbo_local: torch.Tensor
    elbo_local_standard_error: torch.Tensor
    amortization_gap: torch.Tensor
    log_evidence: torch.Tensor | None = None
    approximation_gap: torch.Tensor | None = None
    inference_gap: torch.Tensor | None = None
    history: list[float] = field(default_factory=list)
    local_guide: LocalGaussianGuide | None = None
    subsample: torch.Tensor | None = None

    @property
    def elbo_amortized_stderr(self) -> torch.Tensor:
        """``[batch]``: :attr:`elbo_amortized_standard_error` under its former name."""
        return self.elbo_amortized_standard_error

    @property
    def elbo_local_stderr(self) -> torch.Tensor:
        """``[batch]``: :attr:`elbo_local_standard_error` under its former name."""
        return self.elbo_local_standard_error

    def to_dict(self) -> dict:
        """JSON-ready means over the datapoints (None where ``log_evidence`` was not given)."""
        def mean(t):
            return None if t is None else float(t.double().mean())

        return {
            "elbo_amortized": mean(self.elbo_amortized),
            "elbo_local": mean(self.elbo_local),
            "log_evidence": mean(self.log_evidence),
            "amortization_gap": mean(self.amortization_gap),
            "approximation_gap": mean(self.approximation_gap),
            "inference_gap": mean(self.inference_gap),
        }


def _elbo_with_stderr(model, guide, args, kwargs, num_samples, chunk_size):
    """``(ELBO, its standard error, IWAE_K)`` per datapoint from ``num_samples`` draws,
    each ``[batch]``."""
    structure = survey_pair(model, guide, args, kwargs)
    log_w = checked_log_weights(model, guide, args, kwargs, num_samples, chunk_size, structure,
                                name="num_eval_samples")
    return log_w.mean(0), log_w.std(0) / math.sqrt(num_samples), log_mean_exp(log_w, 0)


def _check_rows_in_order(model, args, kwargs, structure: PairStructure) -> None:
    """``ValueError`` when the caller passes all N datapoints' indices in another order
    (``pyro.plate("data", N, subsample=idx)``, ``idx`` a permutation): a ``log_evidence`` of
    N values could then follow the indices or the datapoints."""
    if structure.data_subsample is not None:  # fewer rows than N: [N] is read at the indices
        return
    with forked_rng(), poutine.block(), torch.no_grad():
        plate = poutine.trace(model).get_trace(*args, **kwargs).nodes.get(DATA_PLATE)
    indices = plate["value"] if plate is not None else None
    if torch.is_tensor(indices) and indices.numel() == structure.batch_size > 1 and \
            not torch.equal(indices.cpu(), torch.arange(structure.batch_size)):
        raise ValueError(
            f"amortization_gap: the indices passed to pyro.plate('{DATA_PLATE}', "
            f"{structure.batch_size}, subsample=...) are all {structure.batch_size} datapoints "
            f"in another order ({indices[:6].tolist()}...), so a log_evidence of "
            f"{structure.batch_size} values could follow the indices or the datapoints: pass "
            "the indices in order (torch.arange(N)), or fewer than all of them")


def _log_evidence_per_datapoint(log_evidence, structure: PairStructure,
                                passed: bool) -> torch.Tensor:
    """The caller's ``log_evidence`` for the datapoints this call scores, ``[batch]``: as given,
    or, when the model subsamples its ``"data"`` plate, the ``[N]`` of the full data read at
    the subsample's indices (only those entries need be finite), or, when the caller passed
    the subsample (``passed``), also ``[batch]`` in the order of the indices passed."""
    subsample, batch = structure.data_subsample, structure.batch_size
    check_tensor_input(log_evidence, "log_evidence")
    if not torch.is_tensor(log_evidence):
        result = torch.is_tensor(getattr(log_evidence, "log_evidence", None))
        raise TypeError(f"log_evidence must be a tensor [batch], got "
                        f"{type(log_evidence).__name__}"
                        + ("; pass its .log_evidence" if result else ""))
    shape = tuple(log_evidence.shape)
    if subsample is None:
        if shape != (batch,):
            raise ValueError(f"log_evidence must be a tensor of shape [batch] = [{batch}], "
                             f"got {shape}")
    elif shape == (structure.data_size,):
        log_evidence = log_evidence[subsample.to(log_evidence.device)]
    elif not (passed and shape == (batch,)):
        raise ValueError(
            f"log_evidence must be a tensor of shape [N] = [{structure.data_size}], one per "
            f"datapoint of the full data: the model subsamples its '{DATA_PLATE}' plate "
            f"({batch} of {structure.data_size} datapoints, "
            + ("the indices passed, in their order; or [batch]" if passed else
               "drawn by this call and listed in result.subsample") +
            f"), so log_evidence is read at those indices; got {shape}")
    bad = ~torch.isfinite(log_evidence)
    if bad.any():
        rows = bad.nonzero().flatten()
        where = (rows if subsample is None else subsample.to(rows.device)[rows]).tolist()[:10]
        raise ValueError(f"log_evidence holds NaN or infinite values at indices {where}; "
                         "pass finite log p(x)")
    return log_evidence.detach()


# How many Monte Carlo standard errors an ELBO estimate may lie above the caller's log p(x)
# before log_evidence is refused (log p(x) >= ELBO; 6 is missed by chance ~1e-9 of the time).
# a correct log_evidence is refused with probability below this (Markov's inequality)
FALSE_REFUSAL = 1e-6


def _check_evidence_above(log_evidence: torch.Tensor, iwae: torch.Tensor, which: str,
                          subsample, dtypes: list[torch.dtype]) -> None:
    """``ValueError`` naming the datapoints where the caller's ``log_evidence`` lies below the
    ``which`` guide's ``IWAE_K`` estimate ``log mean_k w_k`` by more than
    ``log(batch / FALSE_REFUSAL)`` nats plus float rounding (64 ulps, relative to
    ``1 + |IWAE|``, of the narrowest of its and ``dtypes``: the data's and the latents').

    ``mean_k w_k`` is an unbiased estimate of ``p(x)`` made of nonnegative terms, so by
    Markov's inequality it exceeds ``c p(x)`` with probability at most ``1 / c``; with
    ``c = batch / FALSE_REFUSAL``, a correct ``log_evidence`` is refused at any datapoint with
    probability below :data:`FALSE_REFUSAL`, whatever the weights' tails and however few the
    draws. (A test on the ELBO's standard error refused correct input at small K: log
    weights have heavy left tails.)"""
    rounding = 64 * max(torch.finfo(d).eps for d in [iwae.dtype, *dtypes])
    iwae = iwae.double()
    above = iwae - log_evidence.double()
    margin = math.log(iwae.shape[0] / FALSE_REFUSAL)
    bad = above > margin + rounding * (1.0 + iwae.abs())
    if not bad.any():
        return
    rows = bad.nonzero().flatten()
    where = ("datapoints" if subsample is None else
             "datapoints (columns of this call; full-data indices "
             f"{subsample[rows[:10]].tolist()})")
    shown = ", ".join(f"{int(i)}: {float(above[i]):.3g} nats" for i in rows[:5])
    raise ValueError(
        f"amortization_gap: log_evidence lies below the {which} guide's importance-weighted "
        f"estimate of log p(x) at {len(rows)} {where} {rows.tolist()[:10]}, by more than "
        f"{margin:.3g} nats ({shown}); a correct log p(x) is exceeded by that much with "
        f"probability below {FALSE_REFUSAL:g} (Markov's inequality), so this log_evidence is "
        "wrong for these datapoints (other datapoints or order, another unit such as bits or "
        "per dimension, or an estimate looser than the ELBO) and the gaps would be too; pass "
        "exact log p(x) or a tighter estimate (AIS, IWAE_5000) of the same datapoints")


@leaves_buffers
def amortization_gap(model: Callable, guide: Callable, *args,
                     log_evidence: torch.Tensor | None = None, num_steps: int = 500,
                     lr: float = 0.02, num_particles: int = 16, num_eval_samples: int = 1000,
                     chunk_size: int | None = None, progress: bool = True,
                     **kwargs) -> GapResult:
    """Amortization and approximation gaps of ``guide`` on the datapoints in ``args`` [1].

    Args:
        model, guide: a Pyro pair sharing ``pyro.plate("data", batch)``; the guide's latent
            sites must be Normal or MultivariateNormal (module docstring).
        log_evidence: ``[batch]`` best available ``log p(x)`` (exact, AIS or IWAE_5000), or
            None to report the amortization gap only. When the model subsamples its
            ``"data"`` plate (``pyro.plate("data", N, subsample_size=B)``), ``[N]``: one per
            datapoint of the full data, read at the indices this call draws.
        num_steps, lr, num_particles: optimization of the local guides
            (:func:`fit_local_guide`).
        num_eval_samples: draws for each final ELBO estimate (standard error
            ``sd(log w) / sqrt(num_eval_samples)``).
        chunk_size: draws scored at a time in those estimates (as :func:`iwae_bound`'s),
            None for all at once.
        progress: False hides the bar of the local guides' steps (shown after a second).

    Returns:
        :class:`GapResult` with ``[batch]`` tensors in nats.

    Raises:
        ValueError: besides bad arguments, a ``log_evidence`` that the evaluation draws prove
            too low: below the amortized (checked before the local guides are fitted) or the
            local guide's ``IWAE_K`` by more than ``log(batch / 1e-6)`` nats, which a correct
            ``log p(x)`` is with probability below 1e-6 (:func:`_check_evidence_above`),
            naming the datapoints.
    """
    check_pair_call(amortization_gap, kwargs, args, model=model, guide=guide)
    check_no_inference_tensors(reachable_modules(model, guide))  # (gradients are run)
    check_int(num_eval_samples, "num_eval_samples", 2)  # two at least, for a standard error
    num_eval_samples, chunk_size = check_num_samples(num_eval_samples, chunk_size)
    num_steps, lr, num_particles = _check_fit_arguments(num_steps, lr, num_particles)
    check_progress(progress)
    check_data(args, kwargs)
    args, kwargs = autograd_arguments(args, kwargs)  # the local guides are fitted by gradient
    # one subsample (when the model draws one) for every estimate below
    model, guide, structure = checked_pair(model, guide, args, kwargs, "amortization_gap")
    conditional = conditional_sites_of_guide(guide, args, kwargs)
    if conditional:
        raise PairError(
            f"amortization_gap: guide site '{conditional[0]}' depends on another latent the "
            "guide draws (its distribution reads that draw); the local guides here are "
            "independent Gaussians per site, not the guide's own family, so the split would "
            "mismeasure both gaps (the amortization gap can come out negative). Free what the "
            "encoder computes from x and keep the rest of the guide, as "
            "ppl_models.TwoLayerVAE.local_guide does")
    if log_evidence is not None:
        _check_rows_in_order(model, args, kwargs, structure)
        log_evidence = _log_evidence_per_datapoint(log_evidence, structure,
                                                   structure.subsample_passed(args, kwargs))
    for count, name in ((num_eval_samples, "num_eval_samples"),
                        (num_particles, "num_particles")):
        check_weights_memory(count, structure.batch_size, weight_itemsize(args, kwargs), name)
    # the local guides' particles (with gradients) and the evaluations', before any work
    check_particle_memory(model, guide, args, kwargs, structure, num_particles, None,
                          "num_particles", gradients=True, chunkable=False)
    check_particle_memory(model, guide, args, kwargs, structure, num_eval_samples, chunk_size,
                          "num_eval_samples")
    local = LocalGaussianGuide(guide, *args, **kwargs)
    amortized, amortized_se, amortized_iwae = _elbo_with_stderr(
        model, guide, args, kwargs, num_eval_samples, chunk_size)
    # the precision the log densities are computed in: the data's and the latents'
    dtypes = [s.dtype for s in local.sites] + [
        v.dtype for v in (*args, *kwargs.values())
        if torch.is_tensor(v) and v.is_floating_point()]
    if log_evidence is not None:
        _check_evidence_above(log_evidence, amortized_iwae, "amortized",
                              structure.data_subsample, dtypes)
    history = fit_local_guide(model, local, *args, num_steps=num_steps, lr=lr,
                              num_particles=num_particles, progress=progress, **kwargs)
    optimized, optimized_se, optimized_iwae = _elbo_with_stderr(
        model, local, args, kwargs, num_eval_samples, chunk_size)
    if log_evidence is not None:
        _check_evidence_above(log_evidence, optimized_iwae, "local (optimized)",
                              structure.data_subsample, dtypes)
    return GapResult(
        elbo_amortized=amortized,
        elbo_amortized_standard_error=amortized_se,
        elbo_local=optimized,
        elbo_local_standard_error=optimized_se,
        amortization_gap=optimized - amortized,
        log_evidence=log_evidence,
        approximation_gap=None if log_evidence is None else log_evidence - optimized,
        inference_gap=None if log_evidence is None else log_evidence - amortized,
        history=history,
        local_guide=local,
        subsample=structure.data_subsample,
    )
