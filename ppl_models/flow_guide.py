"""Flow guides: an amortized Gaussian followed by inverse autoregressive flow steps.

Kingma et al. (2016) [1] make the encoder output, besides the Gaussian's ``mu(x)`` and
``sigma(x)``, a context vector ``h(x)``, and push the Gaussian draw through T steps

    z_0 = mu(x) + sigma(x) * eps,    eps ~ N(0, I)
    z_t = s_t * z_{t-1} + (1 - s_t) * m_t,    (m_t, logit s_t) = MADE_t(z_{t-1}, h(x))
    s_t = sigmoid(logit s_t + 2)

(their numerically stable update, eq. 14), where ``MADE_t`` is a masked network [2] in which
output ``i`` sees only the coordinates of ``z_{t-1}`` that come before ``i`` in the step's
order (the order is reversed from one step to the next) and the whole context. Each step's
Jacobian is triangular with diagonal ``s_t``, so the density of the final ``z_T`` is exact:

    log q(z_T | x) = log N(z_0; mu, sigma^2) - sum_t sum_i log s_{t,i}.

Each step is Pyro's :class:`~pyro.distributions.transforms.AffineAutoregressive` (the
``stable`` variant), and the steps are combined by a
:class:`~pyro.distributions.TransformedDistribution`, whose ``log_prob`` is the formula
above: cheap for a value the distribution drew itself (the transforms cache their input),
and for any other value through the transforms' exact sequential inverse (one network pass
per latent coordinate). Pyro's conditional transforms
(``ConditionalAffineAutoregressive`` with a ``ConditionalAutoRegressiveNN``) compute the same
map, but keep the flow's weights inside an ``nn.Module``. The doubly reparameterized gradient
(``inference.fit(..., loss="dreg")``) scores the guide with all of its parameters held
fixed, and ``inference`` does that by rebuilding the site's distribution from its detached
tensor parameters. :class:`IAFNormal` is therefore a distribution whose parameters are plain
tensors: the base Gaussian, the context and the stacked weights of the T masked networks,
each step's network applied functionally (:class:`_ConditionalMADE`). That makes the flow
guide usable with every estimator: ELBO, IWAE, DReG, AIS, importance-weight diagnostics.

References:
    [1] Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling (2016), Improving Variational
        Inference with Inverse Autoregressive Flow.
    [2] Germain, Gregor, Murray, Larochelle (2015), MADE: Masked Autoencoder for Distribution
        Estimation.
"""

from __future__ import annotations

import math
import weakref
from functools import lru_cache
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import AffineAutoregressive
from pyro.nn import pyro_method
from torch import nn
from torch.distributions import constraints
from torch.nn import functional as F

from .checks import as_int, as_sizes, check_memory
from .local_guides import LocalGuide
from .networks import check_parameters, full_precision, mlp
from .vae import VAE

#: the stable IAF update adds this to the network's logit, so a fresh step keeps most of z
SIGMOID_BIAS = 2.0


@lru_cache(maxsize=64)
def _made_masks(latent_dim: int, hidden: int, reverse: bool):
    """Masks of one conditional MADE step (CPU, float32) and its order of the coordinates.

    Coordinate ``order[j]`` has degree ``j + 1``; hidden unit ``k`` has degree ``k mod d`` in
    ``0..d-1`` (degree 0: it sees only the context). Hidden unit ``k`` sees coordinate ``i``
    when ``deg(k) >= deg(i)``; output ``i`` sees hidden unit ``k`` when ``deg(i) > deg(k)``.
    So output ``i`` depends on coordinate ``j`` only when ``deg(j) < deg(i)``.

    Returns:
        ``(in_mask [H, d], out_mask [d, H], order [d])``.
    """
    order = torch.arange(latent_dim)
    if reverse:
        order = order.flip(0)
    degree = torch.empty(latent_dim, dtype=torch.long)
    degree[order] = torch.arange(1, latent_dim + 1)
    hidden_degree = torch.arange(hidden) % latent_dim
    in_mask = (hidden_degree[:, None] >= degree[None, :]).float()
    out_mask = (degree[:, None] > hidden_degree[None, :]).float()
    return in_mask, out_mask, order


class _StableAffineAutoregressive(AffineAutoregressive):
    """Pyro's ``AffineAutoregressive(arn, stable=True)`` without reference cycles.

    A transform in a reference cycle is freed only by the cyclic garbage collector, and with
    it the cached input and output that keep a whole autograd graph alive; under AIS
    (thousands of guide evaluations) the memory then grows by gigabytes before it runs. Two
    cycles are avoided here: Pyro's ``stable=True`` stores the stable variants as bound
    methods on the instance (``self._call = self._call_stable``), and torch's
    ``Transform.inv`` keeps the inverse, which points back at the transform. The same methods
    at class level, and a weak reference to the inverse (which reads the forward transform's
    cache), compute the same map.
    """

    _call = AffineAutoregressive._call_stable
    _inverse = AffineAutoregressive._inverse_stable

    def __init__(self, autoregressive_nn, sigmoid_bias: float):
        super().__init__(autoregressive_nn, sigmoid_bias=sigmoid_bias, stable=False)
        self.stable = True

    @property
    def inv(self):
        inverse = self._inv() if isinstance(self._inv, weakref.ref) else None
        if inverse is None:
            self._inv = None
            inverse = super().inv  # torch's, which keeps it in self._inv ...
            self._inv = weakref.ref(inverse)  # ... replaced by a weak reference
        return inverse


class _ConditionalMADE:
    """One step's autoregressive network ``z: [..., d] -> (m, logit s)``, each ``[..., d]``.

    ``hidden = elu(W_in (masked) z + W_c h + b_in)``, ``out = W_out (masked) hidden + b_out``.
    The context term ``W_c h + b_in: [..., H]`` is computed once and broadcast against ``z``'s
    leading dims. ``permutation`` is the order in which the inverse solves the coordinates
    (read by :class:`~pyro.distributions.transforms.AffineAutoregressive`).
    """

    def __init__(self, in_weight, out_weight, out_bias, context_term, in_mask, out_mask, order):
        self.in_weight = in_weight * in_mask  # [H, d]
        d = in_weight.shape[-1]
        self.out_weight = out_weight * out_mask.repeat(2, 1)  # [2d, H]
        self.out_bias = out_bias  # [2d]
        self.context_term = context_term  # [..., H]
        self.permutation = order
        self.latent_dim = d

    def __call__(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Pyro's inverse starts from float32 zeros whatever the dtype; compute in the weights'
        z = z.to(self.in_weight.dtype)
        hidden = F.elu(F.linear(z, self.in_weight) + self.context_term)
        out = F.linear(hidden, self.out_weight, self.out_bias)
        return out[..., :self.latent_dim], out[..., self.latent_dim:]


def _check_tensor(value, name: str, dim: int) -> None:
    if not torch.is_tensor(value) or not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {type(value).__name__}")
    if value.dim() < dim:
        raise ValueError(f"{name} must have at least {dim} dims, got shape {list(value.shape)}")


class IAFNormal(dist.TransformedDistribution):
    """``N(loc, diag scale^2)`` pushed through T conditional IAF steps (module docstring).

    Args:
        loc, scale: ``[..., d]`` the base Gaussian (``scale > 0``).
        context: ``[..., c]`` the encoder's context vector ``h(x)``; leading dims broadcast
            with those of ``loc`` and ``scale`` to the batch shape.
        in_weight: ``[T, H, d]``, the weight on ``z`` of the hidden layer of each step's
            masked network (masks applied here).
        context_weight: ``[T, H, c]``, that layer's weight on the context.
        in_bias: ``[T, H]``, that layer's bias.
        out_weight: ``[T, 2d, H]``, the output layer's weight: the shifts ``m`` in the first
            d rows, the logits of ``s`` in the last d.
        out_bias: ``[T, 2d]``, the output layer's bias.
        validate_args: as for any torch distribution (None: Pyro's global setting).

    Batch shape: the broadcast leading dims; event shape ``[d]``. ``rsample`` is
    reparameterized; ``log_prob(z)`` for ``z: [..., d]`` is exact (``[...]``). With
    ``T = 0`` this is the diagonal Gaussian.
    """

    arg_constraints = {
        "loc": constraints.real_vector,
        "scale": constraints.independent(constraints.positive, 1),
        "context": constraints.real_vector,
        "in_weight": constraints.real,
        "context_weight": constraints.real,
        "in_bias": constraints.real,
        "out_weight": constraints.real,
        "out_bias": constraints.real,
    }

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, context: torch.Tensor,
                 in_weight: torch.Tensor, context_weight: torch.Tensor, in_bias: torch.Tensor,
                 out_weight: torch.Tensor, out_bias: torch.Tensor, validate_args=None):
        for name, value, dim in (("loc", loc, 1), ("scale", scale, 1), ("context", context, 1),
                                 ("in_weight", in_weight, 3), ("context_weight", context_weight, 3),
                                 ("in_bias", in_bias, 2), ("out_weight", out_weight, 3),
                                 ("out_bias", out_bias, 2)):
            _check_tensor(value, name, dim)
        d, c = loc.shape[-1], context.shape[-1]
        steps, hidden = in_weight.shape[0], in_weight.shape[1]
        expected = {"scale": (scale, (d,)), "in_weight": (in_weight, (steps, hidden, d)),
                    "context_weight": (context_weight, (steps, hidden, c)),
                    "in_bias": (in_bias, (steps, hidden)),
                    "out_weight": (out_weight, (steps, 2 * d, hidden)),
                    "out_bias": (out_bias, (steps, 2 * d))}
        for name, (value, shape) in expected.items():
            actual = tuple(value.shape[-len(shape):]) if name == "scale" else tuple(value.shape)
            if actual != shape:
                raise ValueError(f"{name} must have shape {'[..., ' if name == 'scale' else '['}"
                                 f"{', '.join(map(str, shape))}] for latent dim {d}, context "
                                 f"dim {c}, {steps} steps of {hidden} hidden units; got "
                                 f"{list(value.shape)}")
        try:
            batch_shape = torch.broadcast_shapes(loc.shape[:-1], scale.shape[:-1],
                                                 context.shape[:-1])
        except RuntimeError:
            raise ValueError(f"the leading dims of loc {list(loc.shape)}, scale "
                             f"{list(scale.shape)} and context {list(context.shape)} do not "
                             "broadcast") from None
        self.loc = loc.expand(batch_shape + (d,))
        self.scale = scale.expand(batch_shape + (d,))
        self.context = context.expand(batch_shape + (c,))
        self.in_weight, self.context_weight, self.in_bias = in_weight, context_weight, in_bias
        self.out_weight, self.out_bias = out_weight, out_bias
        transforms = []
        for step in range(steps):
            in_mask, out_mask, order = _made_masks(d, hidden, step % 2 == 1)
            in_mask = in_mask.to(device=loc.device, dtype=loc.dtype)
            out_mask = out_mask.to(device=loc.device, dtype=loc.dtype)
            context_term = F.linear(self.context, context_weight[step], in_bias[step])
            made = _ConditionalMADE(in_weight[step], out_weight[step], out_bias[step],
                                    context_term, in_mask, out_mask, order.to(loc.device))
            transforms.append(_StableAffineAutoregressive(made, SIGMOID_BIAS))
        base = dist.Normal(self.loc, self.scale).to_event(1)
        super().__init__(base, transforms, validate_args=validate_args)

    @property
    def num_steps(self) -> int:
        """The number of autoregressive steps (IAF layers)."""
        return self.in_weight.shape[0]

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        d, c = self.loc.shape[-1], self.context.shape[-1]
        return type(self)(self.loc.expand(batch_shape + (d,)),
                          self.scale.expand(batch_shape + (d,)),
                          self.context.expand(batch_shape + (c,)), self.in_weight,
                          self.context_weight, self.in_bias, self.out_weight, self.out_bias,
                          validate_args=self.__dict__.get("_validate_args"))

    def flow(self, z0: torch.Tensor) -> torch.Tensor:
        """Push base points ``z0: [..., d]`` (broadcast with the batch shape) through the steps."""
        for transform in self.transforms:
            z0 = transform(z0)
        return z0

    def _broadcast(self, value: torch.Tensor) -> torch.Tensor:
        """``value: [..., d]`` expanded to ``broadcast(..., batch shape) + [d]`` (the
        autoregressive inverse needs the context's shape); itself when already that shape,
        so that a draw of this distribution is scored from the transforms' caches."""
        _check_tensor(value, "value", 1)
        try:
            shape = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        except RuntimeError:
            raise ValueError(f"value of shape {list(value.shape)} does not broadcast with the "
                             f"batch shape {list(self.batch_shape)} (event shape "
                             f"{list(self.event_shape)})") from None
        shape = shape + value.shape[-1:]
        return value if value.shape == shape else value.expand(shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log q(z)`` of ``value: [..., d]`` (leading dims broadcast with the batch shape)
        -> ``[...]``, exact: the base density at the inverse flow, less the log volume
        change."""
        return super().log_prob(self._broadcast(value))

    def log_prob_elements(self, value: torch.Tensor) -> torch.Tensor:
        """``log q(z)`` split per coordinate: ``[..., d]`` terms ``log N(z0_i; loc_i,
        scale_i) - sum_t log s_{t,i}`` that sum to ``log_prob(value)`` (Kingma et al.'s
        per-dimension terms of an IAF posterior, used by free bits). ``z0`` and the steps'
        inputs come from the transforms' caches for a value this distribution drew, and
        from their exact inverse otherwise."""
        inputs = [self._broadcast(value)]
        for transform in reversed(self.transforms):
            inputs.append(transform.inv(inputs[-1]))
        inputs.reverse()  # z_0 .. z_T
        terms = dist.Normal(self.loc, self.scale).log_prob(inputs[0])
        for transform, z in zip(self.transforms, inputs[:-1]):
            _, logit = transform.arn(z)
            terms = terms - F.logsigmoid(logit + transform.sigmoid_bias)
        return terms

    def log_det_jacobian(self, z0: torch.Tensor) -> torch.Tensor:
        """``log |det d z_T / d z0|`` at base points ``z0: [..., d]`` -> ``[...]``: the flow's
        volume change alone, for checking ``log_prob`` against the change of variables."""
        total = 0.0
        for transform in self.transforms:
            z1 = transform(z0)
            total = total + transform.log_abs_det_jacobian(z0, z1)
            z0 = z1
        return total


class ConditionalIAF(nn.Module):
    """The weights of T conditional IAF steps for a ``d``-dim latent and a ``c``-dim context.

    Args:
        latent_dim: d.
        context_dim: c, the size of the encoder's context vector ``h(x)``.
        num_flows: T (0 gives the plain Gaussian guide).
        hidden: H, hidden units of each step's masked network.

    Initialization: the hidden layer as ``nn.Linear`` (uniform, bound ``1/sqrt(d + c)``), the
    output layer 10 times smaller, so the fresh flow is close to ``z_T = sigmoid(2)^T z_0``.
    """

    def __init__(self, latent_dim: int, context_dim: int, num_flows: int = 2, hidden: int = 64):
        super().__init__()
        latent_dim, context_dim = as_int(latent_dim, "latent_dim"), as_int(context_dim,
                                                                           "context_dim")
        num_flows, hidden = as_int(num_flows, "num_flows", minimum=0), as_int(hidden, "hidden")
        self.latent_dim, self.context_dim = latent_dim, context_dim
        self.num_flows, self.hidden = num_flows, hidden
        # in, context and out weights and the biases of every step, before torch allocates them
        check_parameters(num_flows * (hidden * (latent_dim + context_dim + 1)
                                      + 2 * latent_dim * (hidden + 1)),
                         f"num_flows={num_flows}, hidden={hidden}, latent_dim={latent_dim}, "
                         f"context_dim={context_dim}: the flow's weights")
        bound_in = 1 / math.sqrt(latent_dim + context_dim)
        bound_out = 0.1 / math.sqrt(hidden)

        def uniform(*shape, bound):
            return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))

        self.in_weight = uniform(num_flows, hidden, latent_dim, bound=bound_in)
        self.context_weight = uniform(num_flows, hidden, context_dim, bound=bound_in)
        self.in_bias = uniform(num_flows, hidden, bound=bound_in)
        self.out_weight = uniform(num_flows, 2 * latent_dim, hidden, bound=bound_out)
        self.out_bias = nn.Parameter(torch.zeros(num_flows, 2 * latent_dim))

    def weights(self) -> dict[str, torch.Tensor]:
        """The keyword arguments of :class:`IAFNormal` other than loc, scale and context, for
        ``T = num_flows``: ``in_weight: [T, hidden, d]``, ``context_weight: [T, hidden, c]``,
        ``in_bias: [T, hidden]``, ``out_weight: [T, 2d, hidden]``, ``out_bias: [T, 2d]``."""
        return {"in_weight": self.in_weight, "context_weight": self.context_weight,
                "in_bias": self.in_bias, "out_weight": self.out_weight,
                "out_bias": self.out_bias}

    def forward(self, loc: torch.Tensor, scale: torch.Tensor,
                context: torch.Tensor) -> IAFNormal:
        """``q(z | x)`` from the encoder's ``loc, scale: [batch, d]``, ``context: [batch, c]``."""
        return IAFNormal(loc, scale, context, **self.weights())


class FlowVAE(VAE):
    """The :class:`~ppl_models.VAE` model with a flow guide: Gaussian + T conditional IAF steps.

    Model: as :class:`~ppl_models.VAE` (``z ~ N(0, I_d)``, ``x | z`` from an MLP decoder), site
    ``"z"``. Guide: an MLP encoder ``x -> (mu, sigma, h)`` and ``q(z | x) = IAFNormal(mu,
    sigma, h)`` (:class:`IAFNormal`), whose ``log_prob`` is exact, inside the same
    ``pyro.plate("data", batch)``.

    Args:
        image_shape, latent_dim, likelihood, hidden, likelihood_options: as for
            :class:`~ppl_models.VAE` (MLP networks only).
        num_flows: T, IAF steps after the Gaussian (0: the Gaussian guide of the VAE).
        flow_hidden: hidden units of each step's masked network (default ``4 d``).
        context_dim: size of the context ``h(x)`` (default ``2 d``).

    The decoder is initialized exactly as a :class:`~ppl_models.VAE`'s with the same
    arguments and torch seed (its encoder differs: it has ``c`` more outputs).
    """

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), latent_dim: int = 50,
                 likelihood: str = "bernoulli", hidden: Sequence[int] | None = None,
                 num_flows: int = 2, flow_hidden: int | None = None,
                 context_dim: int | None = None, likelihood_options: dict | None = None):
        num_flows = as_int(num_flows, "num_flows", minimum=0)
        hidden = (400,) if hidden is None else as_sizes(hidden, "hidden")  # as VAE's None
        super().__init__(image_shape, latent_dim, likelihood, "mlp", hidden, likelihood_options)
        latent_dim = self.latent_dim
        context_dim = 2 * latent_dim if context_dim is None else as_int(context_dim, "context_dim")
        flow_hidden = 4 * latent_dim if flow_hidden is None else as_int(flow_hidden, "flow_hidden")
        self.context_dim = context_dim
        # replaces the VAE's Gaussian encoder: loc, raw scale and context from one MLP
        self.encoder = mlp([math.prod(self.image_shape), *hidden, 2 * latent_dim + context_dim])
        self.flow = ConditionalIAF(latent_dim, context_dim, num_flows, flow_hidden)

    @property
    def num_flows(self) -> int:
        """The number of IAF steps of the guide's flow."""
        return self.flow.num_flows

    def encode_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x: [batch, C, H, W]`` -> base ``loc, scale: [batch, d]`` and context ``[batch, c]``.

        ``x`` is checked as by :meth:`~ppl_models.VAE.encode` (shape, the model's dtype and
        device, and NaN or infinite values while Pyro's validation is enabled), and so by
        :meth:`encode` and :meth:`posterior`, which call this."""
        self._check_input(x)
        raw = full_precision(self.encoder(x.flatten(-3)))
        d = self.latent_dim
        loc, raw_scale, context = raw.split([d, d, self.context_dim], dim=-1)
        return loc, F.softplus(raw_scale) + 1e-5, context

    #: ``encode`` gives the base of the flow, not ``q(z | x)``: bits-back coding, which codes
    #: with ``N(encode(x))``, refuses this model (inference.protocols.require_encoded_posterior)
    encoded_posterior = "an IAF flow of the Gaussian encode(x) gives"

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The base Gaussian's ``loc, scale``, each ``[batch, d]`` (before the flow)."""
        loc, scale, _ = self.encode_all(x)
        return loc, scale

    def posterior(self, x: torch.Tensor) -> IAFNormal:
        """``q(z | x)`` for ``x: [batch, C, H, W]``: batch shape ``[batch]``, event ``[d]``."""
        return self.flow(*self.encode_all(x))

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        """``q(z | x)`` the IAF posterior (:meth:`posterior`) of ``x: [batch, C, H, W]``:
        ``z: [..., batch, d]`` inside ``pyro.plate("data", batch)``."""
        self._check(x)
        q = self.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", q)

    def representation(self, x: torch.Tensor, num_samples: int = 0) -> torch.Tensor:
        """A point summary of ``q(z | x)``, ``[batch, d]``.

        ``num_samples=0`` (default): the flow applied to the base Gaussian's mean,
        ``z_T(mu(x))``, deterministic (for T = 0 the posterior mean). ``num_samples > 0``:
        the Monte Carlo mean of that many draws from ``q(z | x)`` (an estimate of its mean).
        """
        num_samples = as_int(num_samples, "num_samples", minimum=0)
        self._check(x)
        with torch.no_grad():
            q = self.posterior(x)
            if num_samples:
                return q.sample((num_samples,)).mean(0)
            return q.flow(q.loc)

    def reconstruct(self, x: torch.Tensor, num_samples: int = 0) -> torch.Tensor:
        """Mean images decoded from :meth:`representation` (``num_samples=0``) or from draws.

        Returns:
            ``[batch, C, H, W]``, or ``[num_samples, batch, C, H, W]`` from ``z ~ q(z | x)``.
        """
        self._check(x)  # the likelihood's support too, as the model checks it
        num_samples = as_int(num_samples, "num_samples", minimum=0)
        shape = ", ".join(map(str, x.shape))
        check_memory(max(num_samples, 1) * x.numel(), x.dtype,
                     f"num_samples={num_samples}: the images [num_samples, {shape}]")
        with torch.no_grad():
            if num_samples:
                return self.decode(self.posterior(x).sample((num_samples,))).mean
            return self.decode(self.representation(x)).mean

    def local_guide(self, x: torch.Tensor) -> LocalFlowGuide:
        """A guide with free ``loc, scale, context`` per datapoint of ``x``, the flow fixed.

        For the amortization gap (Cremer et al. 2018): see :class:`LocalFlowGuide`.
        """
        self._check(x)
        with torch.no_grad():
            loc, scale, context = self.encode_all(x)
        weights = {k: v.detach() for k, v in self.flow.weights().items()}
        return LocalFlowGuide(loc, scale, context, weights)


class LocalFlowGuide(LocalGuide):
    """The flow family with its encoder outputs freed: one ``(loc, scale, context)`` per datapoint.

    ``q_lambda(z) = IAFNormal(loc, scale, context; W)`` with the trained flow weights ``W``
    held fixed, so it is the family the amortized guide chooses from, and the amortized guide
    is the member ``lambda = encoder(x)``. Optimizing ``lambda`` per datapoint
    (``inference.fit_local_guide(model, local_guide, x)``) gives the best member for each datapoint
    alone: the amortization gap is ``ELBO[local] - ELBO[amortized]``. (Freeing ``W`` as well
    would be a larger family than the amortized guide's.)

    Args:
        loc, scale: ``[batch, d]`` initial base Gaussian; context: ``[batch, c]``.
        weights: the :meth:`ConditionalIAF.weights` tensors (not optimized).

    Call it like the amortized guide, ``local(x)`` with the same ``batch`` datapoints.
    """

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, context: torch.Tensor,
                 weights: dict[str, torch.Tensor]):
        if loc.dim() != 2 or scale.shape != loc.shape or context.dim() != 2 or (
                context.shape[0] != loc.shape[0]):
            raise ValueError(f"loc and scale must be [batch, d] and context [batch, c], got "
                             f"{list(loc.shape)}, {list(scale.shape)}, {list(context.shape)}")
        self.loc = loc.detach().clone().requires_grad_(True)
        self.log_scale = scale.detach().log().requires_grad_(True)
        self.context = context.detach().clone().requires_grad_(True)
        self.weights = weights
        self.batch_size = loc.shape[0]

    def parameters(self) -> list[torch.Tensor]:
        """``[loc, log_scale, context]``: ``[batch, d]``, ``[batch, d]``, ``[batch, c]``, the free
        tensors an optimizer updates."""
        return [self.loc, self.log_scale, self.context]

    def distribution(self) -> IAFNormal:
        """The current ``q(z)`` per datapoint: batch shape ``[batch]``, event ``[d]``."""
        return IAFNormal(self.loc, self.log_scale.exp(), self.context, **self.weights)

    def __call__(self, x: torch.Tensor, *args, **kwargs) -> None:
        """``z: [..., batch, d]`` from :meth:`distribution` inside ``pyro.plate("data", batch)``,
        for the same ``x: [batch, C, H, W]`` the guide was made from (only its batch size is
        read)."""
        self._check_batch(x)
        with pyro.plate("data", self.batch_size):
            pyro.sample("z", self.distribution())
