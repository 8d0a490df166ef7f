"""Local guides: an amortized guide's family with the encoder's outputs freed per datapoint.

Cremer et al. (2018) split ``log p(x) - ELBO`` into an approximation gap (the price of the
guide's family) and an amortization gap (the price of one encoder for all data), which needs
the best member of the family for each datapoint alone. A local guide holds, for a fixed
batch of datapoints, free tensors in place of what the encoder computes from x, starts at the
encoder's output and is optimized by ``inference.fit_local_guide``. ``FlowVAE.local_guide`` and
``TwoLayerVAE.local_guide`` build them.

References:
    Cremer, Li, Duvenaud (2018), Inference Suboptimality in Variational Autoencoders.
"""

from __future__ import annotations


import torch


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
        """Sample the amortized guide's sites inside ``pyro.plate("data", batch_size)`` for
        ``x: [batch_size, ...]``, the datapoints this guide holds parameters for."""
        raise NotImplementedError

    def _check_batch(self, x: torch.Tensor) -> None:
        if x.shape[0] != self.batch_size:
            raise ValueError(f"the local guide holds {self.batch_size} datapoints, got a batch "
                             f"of {x.shape[0]}")
