"""Local guides: an amortized guide's family with the encoder's outputs freed per datapoint.

Cremer et al. (2018) split ``log p(x) - ELBO`` into an approximation gap (the price of the
guide's family) and an amortization gap (the price of one encoder for all data), which needs
the best member of the family for each datapoint alone. A local guide holds, for a fixed
batch of datapoints, free tensors in place of what the encoder computes from x, starts at the
encoder's output and is optimized by :meth:`LocalGuide.fit`. ``FlowVAE.local_guide`` and
``TwoLayerVAE.local_guide`` build them.

References:
    Cremer, Li, Duvenaud (2018), Inference Suboptimality in Variational Autoencoders.
"""

from __future__ import annotations

from typing import Callable

import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO


class LocalGuide:
    """Base class: per-datapoint tensors (:meth:`parameters`) for ``batch_size`` datapoints.

    Subclasses sample the amortized guide's sites inside ``pyro.plate("data", batch_size)``
    when called like it, ``local(x)`` with the same ``x: [batch_size, ...]``.
    """

    batch_size: int

    def parameters(self) -> list[torch.Tensor]:
        """The free tensors, each ``[batch_size, ...]`` (leaves with ``requires_grad``)."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, *args, **kwargs) -> None:
        raise NotImplementedError

    def _check_batch(self, x: torch.Tensor) -> None:
        if x.shape[0] != self.batch_size:
            raise ValueError(f"the local guide holds {self.batch_size} datapoints, got a batch "
                             f"of {x.shape[0]}")

    def fit(self, model: Callable, x: torch.Tensor, num_steps: int = 500, lr: float = 0.02,
            num_particles: int = 16) -> list[float]:
        """Maximize each datapoint's ELBO over its own local parameters (in place).

        The optimization of ``inference.fit_local_guide`` (which takes local guides of Normal
        sites only): Adam on ``-sum_i ELBO_i``, estimated from ``num_particles``
        reparameterized draws per datapoint (Pyro's ``Trace_ELBO`` with vectorized
        particles), the learning rate decaying linearly from ``lr`` to ``lr / 10``. Only the
        local parameters move; the model's and the trained networks' stay as they are.

        Args:
            model: the pair's model, called as ``model(x)``.
            x: ``[batch_size, ...]`` the datapoints the local guide was built for.

        Returns:
            the mean negative ELBO over the datapoints after each step (nats), ``num_steps``
            floats.
        """
        for name, value in (("num_steps", num_steps), ("num_particles", num_particles)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr!r}")
        self._check_batch(x)
        loss_fn = Trace_ELBO(num_particles=num_particles, vectorize_particles=True,
                             max_plate_nesting=1)
        params = self.parameters()
        optimizer = torch.optim.Adam(params, lr=lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 1.0 - 0.9 * step / max(num_steps - 1, 1))
        history = []
        with pyro.validation_enabled(False), poutine.block(), torch.enable_grad():
            for _ in range(num_steps):
                loss = loss_fn.differentiable_loss(model, self, x)
                grads = torch.autograd.grad(loss, params)
                for p, g in zip(params, grads):
                    p.grad = g
                optimizer.step()
                schedule.step()
                history.append(float(loss.detach()) / self.batch_size)
        for p in params:
            p.grad = None
        return history
