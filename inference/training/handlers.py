"""Effect handlers that reweight a pair's log densities during training."""

from __future__ import annotations

import torch
from pyro.poutine.messenger import Messenger

from ..checks import check_number
from ..pair_check import DATA_PLATE


class scale_data_plate(Messenger):
    """Multiply the log densities of sites inside the ``"data"`` plate by ``factor``.

    With ``factor = N / batch_size`` a minibatch gives an unbiased estimate of the full-data
    objective, while sites outside the plate (global latents) keep their weight of one.
    ``factor`` must be a finite number > 0. A training handler: the estimators
    (:func:`inference.elbo`, :func:`inference.iwae_bound`, ...) score the pair's own
    densities, bounds on ``log p(x)``, and run unaffected inside it.
    """

    value_neutral = True  # never sets a site's value (see inference.training.svi_step)

    def __init__(self, factor: float):
        check_number(factor, "scale_data_plate factor", positive=True, dtype=torch.float32)
        super().__init__()
        self.factor = float(factor)

    def _process_message(self, msg):
        if any(frame.name == DATA_PLATE for frame in msg["cond_indep_stack"]):
            msg["scale"] = msg["scale"] * self.factor


class scale_latents(Messenger):
    """Multiply the log densities of latent (unobserved) sites by ``beta``.

    Applied to model and guide together it turns the ELBO into
    ``E_q[log p(x | z)] - beta KL(q || p)``: KL warm-up (Bowman et al. 2016; Sonderby et al.
    2016) raises ``beta`` from 0 to 1 over the first epochs. ``beta`` must be a finite
    number >= 0. A training handler: the estimators (:func:`inference.elbo`, ...) score the
    unscaled densities, bounds on ``log p(x)``, inside it too (Pyro's ``Trace_ELBO`` under
    this handler gives the beta-weighted objective).
    """

    value_neutral = True  # never sets a site's value (see inference.training.svi_step)

    def __init__(self, beta: float):
        check_number(beta, "scale_latents beta", minimum=0.0, dtype=torch.float32)
        super().__init__()
        self.beta = float(beta)

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = msg["scale"] * self.beta
