"""Probabilistic PCA: a latent-variable model whose evidence and posterior are closed-form.

    z ~ N(0, I_d),    x | z ~ N(W z + b, s^2 I_D)

so ``p(x) = N(x; b, W W^T + s^2 I)`` and ``p(z | x) = N(M^-1 W^T (x - b) / s^2, M^-1)`` with
``M = I + W^T W / s^2`` (Tipping and Bishop 1999).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam, pyro_method
from torch.distributions import constraints

from .checks import (as_int, as_number, as_seed, being_traced, check_data,
                     check_finite_parameters, check_memory, check_square_in_range_of)


class LinearGaussian(PyroModule):
    """Linear-Gaussian model with an amortized guide and the exact posterior as a second guide.

    Args:
        data_dim: D, pixels or features per datapoint.
        latent_dim: d.
        noise_scale: initial s.
        seed: fixes the initial parameters (``W`` has ``N(0, 1/d)`` entries), an integer in
            ``[0, 2**63)``.

    All methods take ``x: [batch, D]``.
    """

    def __init__(self, data_dim: int, latent_dim: int, noise_scale: float = 0.5, seed: int = 0):
        super().__init__()
        data_dim, latent_dim = as_int(data_dim, "data_dim"), as_int(latent_dim, "latent_dim")
        noise_scale = as_number(noise_scale, "noise_scale", 0, low_open=True)
        check_square_in_range_of(noise_scale, "noise_scale", torch.get_default_dtype(),
                                 "the closed forms would divide by 0 or inf")
        seed = as_seed(seed)
        check_memory(2 * data_dim * latent_dim + latent_dim**2 + 2 * data_dim + latent_dim,
                     torch.get_default_dtype(), f"data_dim={data_dim}, latent_dim={latent_dim}: "
                     f"the parameters (W, the encoder and the guide's [d, d] scale)")
        self.data_dim, self.latent_dim = data_dim, latent_dim
        dtype = torch.get_default_dtype()
        with torch.random.fork_rng(devices=[]):  # initialization fixed by `seed` alone, drawn
            torch.manual_seed(seed)  # in float32 whatever the default dtype (torch's float64
            # draws of 16 or more values follow another stream): the same model in any dtype
            weight = torch.randn(data_dim, latent_dim, dtype=torch.float32) / latent_dim**0.5
            self.weight = torch.nn.Parameter(weight.to(dtype))
            # Amortized guide: a linear map to the mean and a shared full-covariance factor,
            # a family that contains the exact posterior.
            self.encoder = torch.nn.Linear(data_dim, latent_dim, dtype=torch.float32).to(dtype)
        self.bias = torch.nn.Parameter(torch.zeros(data_dim))
        self.noise_scale = PyroParam(torch.tensor(noise_scale), constraints.positive)
        self.guide_scale_tril = PyroParam(torch.eye(latent_dim), constraints.lower_cholesky)

    def _check(self, x):
        check_data(x, (self.data_dim,), "x", like=self)

    def _check_parameters(self, what: str) -> None:
        """``FloatingPointError`` naming ``what`` and the generative parameters (``weight``,
        ``bias``, ``noise_scale``) that hold NaN or infinite values: the closed forms and
        :meth:`simulate` would return NaN or fail inside a Cholesky factorization."""
        check_finite_parameters({"weight": self.weight, "bias": self.bias,
                                 "noise_scale": self.noise_scale},
                                f"{type(self).__name__}.{what}")

    def _check_finite(self, matrix: torch.Tensor, what: str, name: str) -> None:
        if not being_traced() and not bool(torch.isfinite(matrix).all()):
            raise FloatingPointError(
                f"{type(self).__name__}.{what}: the {name} overflows {matrix.dtype} (finite "
                f"parameters, largest |weight| {float(self.weight.detach().abs().max()):.3g}, "
                f"noise_scale {float(self.noise_scale.detach()):.3g}); rescale the parameters "
                f"or use float64 (model.double())")

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        """``x: [batch, D]``; ``z: [..., batch, d]`` ~ N(0, I), ``x | z ~ N(W z + b, s^2 I)``,
        inside ``pyro.plate("data", batch)``."""
        self._check(x)
        zeros = x.new_zeros(self.latent_dim)
        prior = dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", prior)  # [..., batch, d]
            loc = z @ self.weight.T + self.bias  # [..., batch, D]
            pyro.sample("x", dist.Normal(loc, self.noise_scale).to_event(1), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        """``q(z | x)``, a full-covariance Gaussian with a mean linear in ``x: [batch, D]``:
        ``z: [..., batch, d]`` inside ``pyro.plate("data", batch)``."""
        self._check(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(self.encoder(x),
                                                     scale_tril=self.guide_scale_tril))

    def posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        """Exact ``p(z | x)``: batch shape ``[batch]``, event shape ``[d]``;
        ``FloatingPointError`` naming the parameters when they are NaN or infinite, or when
        the precision ``I + W^T W / s^2`` overflows."""
        self._check(x)
        self._check_parameters("posterior")
        precision = torch.eye(self.latent_dim, dtype=x.dtype, device=x.device) + (
            self.weight.T @ self.weight / self.noise_scale**2
        )
        self._check_finite(precision, "posterior", "precision I + W^T W / s^2")
        covariance = torch.cholesky_inverse(torch.linalg.cholesky(precision))
        mean = (x - self.bias) @ self.weight @ covariance / self.noise_scale**2  # [batch, d]
        return dist.MultivariateNormal(mean, covariance_matrix=covariance)

    @pyro_method
    def exact_guide(self, x: torch.Tensor) -> None:
        """Guide that samples the exact posterior: every importance weight equals log p(x).
        ``x: [batch, D]`` (checked first, as :meth:`guide` does: a generator, tuple or dict
        is named, not an ``AttributeError`` on ``x.shape``); ``z: [..., batch, d]`` inside
        ``pyro.plate("data", batch)``."""
        self._check(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.posterior(x))

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Closed-form ``log p(x)`` of ``x: [batch, D]``, ``[batch]`` in nats (in ``x``'s
        dtype, computed in float64); ``FloatingPointError`` as :meth:`posterior`.

        ``C = W W^T + s^2 I`` is never formed: with ``M = W^T W + s^2 I_d`` (positive
        definite for any ``W``, so its Cholesky factor and the gradients stay finite at a
        rank-deficient ``W``), ``log det C = (D - d) log s^2 + log det M`` and, for ``r = x -
        b`` and ``a = M^{-1} W^T r``, ``r^T C^{-1} r = |r - W a|^2 / s^2 + |a|^2``: two sums
        of squares, so a small noise scale (``s^2`` below the rounding of ``W W^T``'s
        entries, where ``C``'s Cholesky factor lost nats in float32, then failed) stays
        exact. Data so large that the distance overflows get ``-inf``, not NaN: it is
        computed on ``x`` and ``b`` divided by a power of two (exact) and scaled back."""
        self._check(x)
        self._check_parameters("log_marginal")
        wide = torch.float64
        weight, bias = self.weight.to(wide), self.bias.to(wide)
        variance = self.noise_scale.to(wide) ** 2
        inner = weight.T @ weight + variance * torch.eye(self.latent_dim, dtype=wide,
                                                         device=x.device)  # [d, d]
        self._check_finite(inner, "log_marginal", "covariance W W^T + s^2 I")
        scale_tril, info = torch.linalg.cholesky_ex(inner)
        if not being_traced() and int(info):
            raise FloatingPointError(
                f"{type(self).__name__}.log_marginal: W^T W + s^2 I is not positive definite "
                f"in float64 (noise_scale {float(self.noise_scale.detach()):.3g}); raise "
                "noise_scale")
        x_wide = x.to(wide)
        largest = torch.maximum(x_wide.detach().abs().amax(-1), bias.detach().abs().max())
        # the power of two in (largest / 2, largest] (1 for small data), finite in float64:
        # dividing by it is exact
        exponent = torch.frexp(largest.clamp_min(1)).exponent - 1
        scale = torch.ldexp(torch.ones_like(largest), exponent)[:, None]  # [batch, 1]
        diff = x_wide / scale - bias / scale  # [batch, D], entries in [-4, 4]
        along = torch.cholesky_solve((diff @ weight)[..., None], scale_tril)[..., 0]  # [batch, d]
        across = diff - along @ weight.T  # [batch, D]
        squares = across.pow(2).sum(-1) / variance + along.pow(2).sum(-1)  # [batch]
        # scaled back (inf for far data); 0 * inf would be NaN
        scale = scale[:, 0]
        distance = torch.where(squares > 0, squares * scale * scale, squares)
        half_log_det = (scale_tril.diagonal().log().sum()
                        + 0.5 * (self.data_dim - self.latent_dim) * variance.log())
        log_p = -0.5 * (self.data_dim * math.log(2 * math.pi) + distance) - half_log_det
        return log_p.to(x.dtype)

    def simulate(self, num_data: int, seed: int = 0) -> torch.Tensor:
        """Draw ``[num_data, D]`` datapoints (``num_data >= 1``, fitting in memory) from the
        model's current parameters, fixed by ``seed`` in ``[0, 2**63)`` (the same draws,
        made in float32, whatever the parameters' dtype);
        ``FloatingPointError`` naming the parameters that are NaN or infinite."""
        num_data, seed = as_int(num_data, "num_data"), as_seed(seed)
        self._check_parameters("simulate")
        check_memory(num_data * (self.data_dim + self.latent_dim), self.weight.dtype,
                     f"num_data={num_data}: the data [num_data, {self.data_dim}] and latents "
                     f"[num_data, {self.latent_dim}]")
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # drawn on the CPU generator: the same data on any device
            w, bias, scale = self.weight.cpu(), self.bias.cpu(), self.noise_scale.cpu()
            z = torch.randn(num_data, self.latent_dim, generator=gen,
                            dtype=torch.float32).to(w.dtype)
            noise = torch.randn(num_data, self.data_dim, generator=gen,
                                dtype=torch.float32).to(w.dtype)
            return (z @ w.T + bias + scale * noise).to(self.weight.device)
