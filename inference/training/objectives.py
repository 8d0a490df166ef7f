"""Training objectives for :class:`pyro.infer.SVI`.

``"elbo"`` and ``"meanfield"`` are Pyro's ``Trace_ELBO`` and ``TraceMeanField_ELBO`` (as
:class:`MeanFieldELBO`, which scores a ``Delta`` guide site with its ``log_density``). The
importance-weighted objectives are written here because Pyro's ``RenyiELBO(alpha=0)`` takes
one log-sum-exp over the whole minibatch (a looser bound than the per-datapoint IWAE bound
whenever the batch holds more than one datapoint) and mixes the subsample scale into it.

References:
    [1] Burda, Grosse, Salakhutdinov (2015), Importance Weighted Autoencoders.
    [2] Tucker, Lawson, Gu, Maddison (2018), Doubly Reparameterized Gradient Estimators for
        Monte Carlo Objectives.
"""

from __future__ import annotations

import copy
import inspect
import warnings

import pyro
import torch
from pyro import poutine
from pyro.distributions import TransformedDistribution
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.distributions.transforms import (AffineTransform, CatTransform, ComposeTransform,
                                           IndependentTransform, StackTransform)

from ..checks import as_int, check_number, check_weights_memory
from ..densities import has_closed_form_kl
from ..pair_check import (
    PARTICLE_PLATE,
    check_pair,
    conditional_sites_in_trace,
    is_delta,
    late_parent_message,
    biased_late_parents,
    PairError,
    sample_sites,
    survey_pair,
)
from ..weights import (log_mean_exp, trace_log_density, uniform_scale, vectorized_traces,
                       weight_itemsize)


class _NoRegisteredKL(torch.distributions.Distribution):
    """Stands in for a guide site's distribution once its trace is scored: no KL divergence
    is registered for it, so ``TraceMeanField_ELBO`` takes ``log q(v) - log p(v)`` from the
    trace. For a ``Delta``, where Pyro's registered ``KL(Delta || p) = -log p(v)`` drops its
    ``log_density`` (a hand-built guide ``Delta(v, log_density=log q(v))``), and for a pair
    of families whose only KL is torch's generic exponential-family one (Wishart's, wrong
    over a batch: :func:`inference.densities.closed_form_kl`)."""

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, fn):
        super().__init__(fn.batch_shape, fn.event_shape, validate_args=False)


class MeanFieldELBO(TraceMeanField_ELBO):
    """Pyro's ``TraceMeanField_ELBO`` (analytic KL where registered), but a ``Delta`` guide
    site is scored as sampled: ``log q(v) - log p(v)``, its ``log_density`` included, and so
    is a site whose only KL would be torch's generic exponential-family one (a Wishart).

    A pair whose guide samples a latent's model parent after it (``q(z1 | x) q(z2 | z1)``
    for ``p(z2) p(z1 | z2)``) is refused naming the site, where Pyro only warns: the closed
    form ``KL(q(z1) || p(z1 | z2))`` at a ``z2`` drawn from ``z1`` does not have the
    expectation of ``log p(z1 | z2) - log q(z1)``, and the objective would not be the ELBO
    (:func:`inference.pair_check.biased_late_parents`: kept where the model's distribution of
    the site depends on the parent and the guide's draw of the parent depends on the site's;
    two independent latents sampled in another order, or a structured guide ``q(sigma)
    q(mu | sigma)`` for independent priors ``p(mu) p(sigma)``, pass)."""

    def _get_trace(self, model, guide, args, kwargs):
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        # the closed form is biased only where the model's p(site | parent) reads the parent
        # and the guide's parent is drawn from the site: the step's own graph tells, or,
        # without one (a step scored under no_grad), a rerun of the pair
        late = biased_late_parents(model_trace, guide_trace, (model, guide, args, kwargs),
                                   registered_only=True)
        if late:
            raise PairError(late_parent_message(*late[0], "loss='meanfield'"))
        for site in sample_sites(guide_trace, observed=False):
            prior = model_trace.nodes.get(site["name"], {}).get("fn")
            if is_delta(site["fn"]) or (
                    prior is not None and not has_closed_form_kl(site["fn"], prior)):
                site["fn"] = _NoRegisteredKL(site["fn"])  # its score parts are computed
        return model_trace, guide_trace


class IWAELoss:
    """Negative per-datapoint IWAE_K bound, summed over the minibatch and data-plate scaled.

    The loss equals ``-scale * sum_b log mean_k w_kb``; its gradient is the standard IWAE
    gradient [1], a softmax-weighted sum of the particles' ``grad log w``. Use it as
    ``SVI(model, guide, optim, loss=obj.loss, loss_and_grads=obj.loss_and_grads)``.
    """

    def __init__(self, num_particles: int = 5):
        self.num_particles = as_int(num_particles, "num_particles")

    def _traces(self, model, guide, args, kwargs):
        use = "fit:dreg" if isinstance(self, DReGLoss) else "fit:iwae"
        called = f"{type(self).__name__}(num_particles={self.num_particles})"
        structure = check_pair(survey_pair(model, guide, args, kwargs, probe_vectorized=False,
                                           probe_randomness=False), use, called=called)
        bad = [n for n in structure.non_reparameterized if n not in structure.auxiliary]
        if bad:
            raise PairError(
                f"{type(self).__name__}: guide site '{bad[0]}' "
                f"({structure.guide_families[bad[0]]}) is not reparameterized; the "
                "importance-weighted objectives here follow pathwise gradients only and would "
                "miss its score-function term. Use loss='elbo' (Trace_ELBO's score-function "
                "estimator) for such guides")
        # the [K, batch] weights alone must fit (a cheap bound, no pass of its own)
        check_weights_memory(self.num_particles, structure.batch_size,
                             weight_itemsize(args, kwargs), "num_particles")
        model_trace, guide_trace = vectorized_traces(
            model, guide, args, kwargs, self.num_particles, structure.max_plate_nesting + 1
        )
        return structure, model_trace, guide_trace

    def _scaled_bound(self, model, guide, args, kwargs) -> torch.Tensor:
        structure, model_trace, guide_trace = self._traces(model, guide, args, kwargs)
        k = self.num_particles
        log_w = (trace_log_density(model_trace, structure)
                 - trace_log_density(guide_trace, structure, observed=False))
        log_w = log_w.expand(k, structure.batch_size)
        scale = uniform_scale(model_trace, guide_trace, f"{type(self).__name__}")
        return scale * log_mean_exp(log_w).sum()

    def loss(self, model, guide, *args, **kwargs) -> float:
        """The loss, ``-scale * sum_b IWAE_K(x_b)``, without gradients (Pyro's ELBO
        interface)."""
        with torch.no_grad():
            return -float(self._scaled_bound(model, guide, args, kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """The loss, its gradient written to the parameters' ``.grad`` (Pyro's ELBO
        interface)."""
        loss = -self._scaled_bound(model, guide, args, kwargs)
        loss.backward()
        return float(loss.detach())


def _detached_transform(transform):
    """``transform`` with its tensor parameters cut from the graph and no cache (a cached
    inverse would hand back the draw's path to the parameters)."""
    if isinstance(transform, ComposeTransform):
        return ComposeTransform([_detached_transform(t) for t in transform.parts])
    if isinstance(transform, IndependentTransform):
        return IndependentTransform(_detached_transform(transform.base_transform),
                                    transform.reinterpreted_batch_ndims)
    if isinstance(transform, AffineTransform):
        loc, scale = (v.detach() if torch.is_tensor(v) else v
                      for v in (transform.loc, transform.scale))
        return AffineTransform(loc, scale, event_dim=transform.event_dim)
    if type(transform) is CatTransform:  # parts along a dim: each detached (their
        # parameters kept their gradient path, a biased guide gradient)
        return CatTransform([_detached_transform(t) for t in transform.transforms],
                            transform.dim, transform.lengths)
    if type(transform) is StackTransform:
        return StackTransform([_detached_transform(t) for t in transform.transforms],
                              transform.dim)
    nested = [k for k, v in vars(transform).items() if isinstance(v, (list, tuple)) and any(
        isinstance(t, torch.distributions.transforms.Transform) for t in v)]
    # tensors on the graph (a constant exponent of PowerTransform is no parameter)
    held = nested + [k for k, v in vars(transform).items()
                     if torch.is_tensor(v) and v.requires_grad and k not in ("_cached_x_y",)]
    if isinstance(transform, torch.nn.Module):  # a learned transform: its parameters live
        held += [name for name, p in transform.named_parameters() if p.requires_grad]
    if held:
        raise NotImplementedError(
            f"DReG cannot detach the parameters of a {type(transform).__name__} in a "
            "TransformedDistribution guide")
    return transform.with_cache(0)


def detach_parameters(fn):
    """The same distribution with its parameters cut from the graph (values keep their path).

    Torch's, Pyro's and this project's classes built again from their detached
    ``arg_constraints`` values (a distribution that derives transforms from its parameters,
    such as ``IAFNormal``); any other, a shallow copy of ``fn`` whose tensors (its parameters
    and what it cached from them) are detached, so that a user's subclass that transforms its
    arguments (a scale widened in ``__init__``) keeps the parameters it holds. Through
    ``Independent``, ``dist.mask`` (the mask kept) and ``expand``; a ``LogNormal`` or a
    ``TransformedDistribution`` of such a distribution through parameter-free or affine
    transforms (what ``biject_to`` builds). ``NotImplementedError`` for a distribution that
    holds other distributions or transforms (a mixture, a subclass of
    ``TransformedDistribution``) or no tensors at all.
    """
    if isinstance(fn, torch.distributions.Independent):  # Pyro's, or torch's own (a
        # TransformedDistribution of a vector transform wraps its base in it)
        return type(fn)(detach_parameters(fn.base_dist), fn.reinterpreted_batch_ndims)
    if isinstance(fn, MaskedDistribution):
        return MaskedDistribution(detach_parameters(fn.base_dist), fn._mask)
    if isinstance(fn, ExpandedDistribution):
        return ExpandedDistribution(detach_parameters(fn.base_dist), fn.batch_shape)
    known = _known_constructor(fn)
    if known and isinstance(fn, torch.distributions.LogNormal):
        return type(fn)(fn.loc.detach(), fn.scale.detach())
    if type(fn) in (TransformedDistribution, torch.distributions.TransformedDistribution):
        return type(fn)(detach_parameters(fn.base_dist),
                        [_detached_transform(t) for t in fn.transforms])
    if known and _constructor_arguments(type(fn)) == ["base_dist"]:  # FoldedDistribution
        return type(fn)(detach_parameters(fn.base_dist))
    if known and isinstance(fn, torch.distributions.MultivariateNormal):  # (from whichever
        # of its three matrices it was built: each is cached once read, it takes one)
        return type(fn)(fn.loc.detach(), scale_tril=fn.scale_tril.detach())
    rebuilt = _rebuilt(fn) if known else None
    if rebuilt is not None:
        return rebuilt
    held = vars(fn)
    # only tensors beside plain settings: parameters held in anything else (another
    # distribution, a transform, a network) would keep their gradient path
    nested = [k for k, v in held.items() if not torch.is_tensor(v) and not _plain_setting(v)]
    tensors = [k for k, v in held.items() if torch.is_tensor(v)]
    if nested or not tensors:
        raise NotImplementedError(
            f"DReG cannot detach the parameters of a {type(fn).__name__} guide distribution")
    detached = copy.copy(fn)
    for name in tensors:
        detached.__dict__[name] = held[name].detach()
    return detached


def _plain_setting(value) -> bool:
    """Whether an attribute holds no parameters: a number, string, flag, shape, dtype,
    device, None, or a tuple or list of those."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Size, torch.dtype,
                                           torch.device)):
        return True
    return isinstance(value, (tuple, list)) and all(_plain_setting(item) for item in value)


def _known_constructor(fn) -> bool:
    """Whether the constructor that builds ``fn`` is torch's, Pyro's or this project's,
    which store the parameters they are given: a user's subclass that keeps one (``class
    MyT(dist.StudentT): pass``) is built as that one is; one with its own may transform its
    arguments (a scale widened in ``__init__`` was widened twice)."""
    builder = next(klass for klass in type(fn).__mro__ if "__init__" in vars(klass))
    return builder.__module__.startswith(_KNOWN_CONSTRUCTORS)


def _rebuilt(fn):
    """``type(fn)``, whose constructor is a known one (:func:`_known_constructor`), built
    again from the detached values of its ``arg_constraints`` parameters (``IAFNormal``
    derives its transforms from them); None for one without such parameters or whose
    constructor takes other names."""
    held = vars(fn)
    params = {k: held[k].detach() for k in fn.arg_constraints if torch.is_tensor(held.get(k))}
    if not params:
        # parameters read through properties: of a base (HalfNormal, InverseGamma,
        # LogisticNormal), of an inner Dirichlet (Beta); with the constructor's other
        # tensors (RelaxedBernoulli's temperature)
        names = dict.fromkeys([*fn.arg_constraints, *_constructor_arguments(type(fn))])
        params = {k: getattr(fn, k).detach() for k in names
                  if torch.is_tensor(getattr(fn, k, None))}
    if "logits" in params:  # both are cached once read; the constructor takes one
        params.pop("probs", None)
    if not params:
        return None
    # the constructor's settings held under their names (Stable's coords, a relaxed
    # family's temperature as a number)
    for name in _constructor_arguments(type(fn)):
        if name in params:
            continue
        try:
            value = held[name] if name in held else getattr(fn, name, None)
        except (AttributeError, NotImplementedError, RuntimeError, ValueError):
            continue  # a property that cannot be read here
        if value is not None and not torch.is_tensor(value) and _plain_setting(value):
            params[name] = value
    try:
        return type(fn)(**params)
    except (TypeError, ValueError):  # a constructor that takes other names: not this way
        return None


def _constructor_arguments(klass) -> list[str]:
    """The names ``klass``'s constructor takes, but ``validate_args`` (``[]`` when its
    signature cannot be read)."""
    try:
        signature = inspect.signature(klass.__init__)
    except (TypeError, ValueError):
        return []
    return [name for name, parameter in list(signature.parameters.items())[1:]
            if name != "validate_args" and parameter.kind in (
                parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)]


# Modules whose distribution classes store the parameters their constructors take.
_KNOWN_CONSTRUCTORS = ("torch.distributions.", "pyro.distributions.", "ppl_models.")


def _check_same_density(log_q: torch.Tensor, log_q_fixed: torch.Tensor, guide_trace) -> None:
    """``PairError`` naming the guide's families when ``log_q_fixed`` (scored with the
    parameters held fixed, :func:`detach_parameters`) differs from ``log_q`` at the same
    draws beyond rounding: a rebuilt distribution that is another density. Rounding is taken
    generously (1% of ``|log q|`` in float32, 0.1% in float64: an ill-conditioned low-rank
    Gaussian's two evaluations differed by 0.13 nats of 76); a lost setting moved it by
    nats."""
    gap = (log_q.detach() - log_q_fixed.detach()).abs()
    relative = 1e-3 if log_q.dtype == torch.float64 else 1e-2
    scale = relative * (1 + log_q.detach().abs())
    if bool((gap > scale).any()):
        families = sorted({type(site["fn"]).__name__
                           for site in sample_sites(guide_trace, observed=False)})
        raise PairError(
            f"DReGLoss: the guide's density rebuilt with its parameters held fixed differs "
            f"from its own by up to {float(gap.max()):.3g} nats at the same draws (a "
            f"distribution whose constructor takes settings it does not keep under their "
            f"names; the guide's families: {', '.join(families)}); use IWAELoss")


def _detachable(fn) -> bool:
    """Whether :func:`detach_parameters` rebuilds ``fn``."""
    try:
        detach_parameters(fn)
    except NotImplementedError:
        return False
    return True


def _log_q_at_fixed_values(guide, guide_trace, structure, args, kwargs, k):
    """``log q(z)`` per particle and datapoint with the drawn ``z`` detached: its gradient is
    the explicit one by the guide's parameters alone."""
    fixed = guide_trace.copy()
    for site in sample_sites(fixed, observed=False):
        site["value"] = site["value"].detach()

    def vectorized(*a, **kw):
        with pyro.plate(PARTICLE_PLATE, k, dim=-(structure.max_plate_nesting + 1)):
            return guide(*a, **kw)

    replayed = poutine.trace(poutine.replay(vectorized, trace=fixed)).get_trace(*args, **kwargs)
    return trace_log_density(replayed, structure, observed=False)


def _param_leaves(trace) -> list[torch.Tensor]:
    leaves = []
    for site in trace.nodes.values():
        if site["type"] == "param":
            value = site["value"]
            leaf = value.unconstrained() if hasattr(value, "unconstrained") else value
            if leaf.requires_grad and all(leaf is not p for p in leaves):
                leaves.append(leaf)
    return leaves


class DReGLoss(IWAELoss):
    """IWAE_K objective with the doubly reparameterized guide gradient of Tucker et al. [2].

    Model parameters get the usual IWAE gradient ``sum_k w~_k grad log w_k``; guide parameters
    get ``sum_k w~_k^2 (d log w_k / d z_k)(d z_k / d phi)``, where ``w~`` are the normalized
    weights and ``log q`` inside ``log w`` is scored with its parameters held fixed. This removes
    the score-function term whose signal-to-noise ratio decays with K (Rainforth et al. 2018).
    The guide must be reparameterized. The reported loss is the same IWAE bound. A parameter
    both model and guide register is treated as a model parameter (the IWAE gradient, still
    unbiased), with a warning.
    """

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """The IWAE loss, with the doubly reparameterized gradient written to the
        parameters' ``.grad`` (Pyro's ELBO interface)."""
        structure, model_trace, guide_trace = self._traces(model, guide, args, kwargs)
        k = self.num_particles
        log_p = trace_log_density(model_trace, structure)
        log_q = trace_log_density(guide_trace, structure, observed=False)
        if conditional_sites_in_trace(guide_trace):
            # q(z2 | z1): hold the parameters fixed but keep z1's path, as the total gradient
            # of log q minus its explicit gradient by the parameters
            at_fixed = _log_q_at_fixed_values(guide, guide_trace, structure, args, kwargs, k)
            log_q_fixed = log_q - at_fixed + at_fixed.detach()
        else:
            try:
                log_q_fixed = trace_log_density(guide_trace, structure, observed=False,
                                                transform=detach_parameters)
            except NotImplementedError as error:
                failing = next(site["name"] for site in sample_sites(guide_trace, observed=False)
                               if not _detachable(site["fn"]))
                raise PairError(
                    f"DReGLoss: guide site '{failing}' is a "
                    f"{type(guide_trace.nodes[failing]['fn']).__name__}, whose parameters DReG "
                    f"cannot hold fixed ({error}); use IWAELoss") from None
            if not getattr(self, "_rebuilt_checked", False):
                # the density held fixed must be the guide's own at the same values: a
                # rebuild that dropped a setting (Stable's coords) was 13 nats off, silently
                _check_same_density(log_q, log_q_fixed, guide_trace)
                self._rebuilt_checked = True
        scale = uniform_scale(model_trace, guide_trace, "DReGLoss")
        log_w = (log_p - log_q).expand(k, structure.batch_size)
        normalized = torch.softmax(log_w.detach(), 0)
        model_surrogate = -scale * (normalized * log_w).sum()
        guide_surrogate = -scale * (normalized.pow(2) * (log_p - log_q_fixed)).sum()
        model_params = _param_leaves(model_trace)
        guide_params = [p for p in _param_leaves(guide_trace)
                        if all(p is not q for q in model_params)]
        if len(guide_params) < len(_param_leaves(guide_trace)):
            warnings.warn(
                "DReGLoss: parameters that model and guide both register (e.g. "
                "pyro.module('vae', self) in both) get the IWAE gradient, not the doubly "
                "reparameterized one; register the guide's networks in the guide only "
                "(pyro.module('encoder', self.encoder)) to give them DReG's", stacklevel=2)
        for params, surrogate in ((model_params, model_surrogate),
                                  (guide_params, guide_surrogate)):
            if not params:
                continue
            grads = torch.autograd.grad(surrogate, params, retain_graph=True, allow_unused=True)
            for param, grad in zip(params, grads):
                if grad is not None:
                    param.grad = grad if param.grad is None else param.grad + grad
        return -scale * float(log_mean_exp(log_w.detach()).sum())


LOSS_NAMES = ("elbo", "meanfield", "iwae", "dreg", "elbo-free-bits")


def make_loss(name, num_particles: int = 1, free_bits: float | None = None):
    """The SVI loss object for ``name`` in ``"elbo" | "meanfield" | "iwae" | "dreg" |
    "elbo-free-bits"`` (the free-bits ELBO with ``free_bits`` nats per latent dimension, see
    :mod:`inference.training.free_bits`). An object with ``loss`` and ``loss_and_grads`` methods is
    returned as it is; its class is refused (``Trace_ELBO`` for ``Trace_ELBO()``).

    No argument is ignored, and none is made up: ``"elbo-free-bits"`` needs its
    ``free_bits`` (with none it would be ``"meanfield"``: ``fit(loss="elbo-free-bits")``
    trained with no free bits at all), ``free_bits`` other than 0 is refused for every other
    name, and for a loss object ``num_particles`` (other than 1 or the object's own
    ``num_particles``) and ``free_bits`` (other than 0 or the object's own) are refused (the
    object's settings are the ones used); ``ValueError`` naming the argument."""
    if isinstance(name, type):
        raise TypeError(f"loss must be a loss name or a loss object, got the class "
                        f"{name.__qualname__}: pass an instance, e.g. {name.__qualname__}()")
    num_particles = as_int(num_particles, "num_particles")
    if name == "elbo-free-bits" and free_bits is None:
        raise ValueError("loss 'elbo-free-bits' needs its free bits per latent dimension "
                         "(without them it is 'meanfield'): pass loss=FreeBitsELBO(free_bits) "
                         "to fit, or make_loss('elbo-free-bits', free_bits=...)")
    free_bits = 0.0 if free_bits is None else free_bits
    check_number(free_bits, "free_bits", minimum=0.0, dtype=torch.float32)
    if hasattr(name, "loss") and hasattr(name, "loss_and_grads"):
        held = getattr(name, "num_particles", None)
        if num_particles not in (1, held):
            raise ValueError(
                f"make_loss: num_particles={num_particles} given with the loss object "
                f"{type(name).__name__}, whose own num_particles ({held}) is the one used; "
                "set it on the object and leave num_particles out")
        held_bits = getattr(name, "free_bits", None)
        if free_bits != 0 and free_bits != held_bits:
            raise ValueError(
                f"make_loss: free_bits={free_bits} given with the loss object "
                f"{type(name).__name__}, which "
                + ("takes no free bits" if held_bits is None
                   else f"holds its own free_bits ({held_bits})")
                + "; use FreeBitsELBO(free_bits) or loss='elbo-free-bits'")
        return name
    if free_bits != 0 and name != "elbo-free-bits":
        raise ValueError(f"make_loss: free_bits={free_bits} applies only to loss "
                         f"'elbo-free-bits', not {name!r}; use make_loss('elbo-free-bits', "
                         f"free_bits={free_bits}) or leave free_bits out")
    if name == "elbo-free-bits":
        from .free_bits import FreeBitsELBO

        return FreeBitsELBO(free_bits, num_particles)
    if name == "elbo":
        return Trace_ELBO(num_particles=num_particles, vectorize_particles=num_particles > 1)
    if name == "meanfield":
        return MeanFieldELBO(num_particles=num_particles, vectorize_particles=num_particles > 1)
    if name == "iwae":
        return IWAELoss(num_particles)
    if name == "dreg":
        return DReGLoss(num_particles)
    raise ValueError(f"unknown loss {name!r}{_did_you_mean(name)}; choose one of 'elbo', "
                     "'meanfield', 'iwae', 'dreg', or a loss object such as FreeBitsELBO(0.25) "
                     "(free bits; make_loss('elbo-free-bits', free_bits=0.25) builds it)")


def _did_you_mean(name) -> str:
    """`` (did you mean 'iwae'?)`` for a loss name that differs from one only in case or
    surrounding blanks, else nothing."""
    if not isinstance(name, str):
        return ""
    near = [known for known in LOSS_NAMES if known == name.strip().lower().replace("_", "-")]
    return f" (did you mean {near[0]!r}?)" if near else ""
