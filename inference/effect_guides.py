"""Effect-based guides: Pyro's ``GuideMessenger`` (``AutoNormalMessenger``,
``AutoHierarchicalNormalMessenger``, ``AutoRegressiveMessenger``) runs the model under
itself, drawing each latent from its posterior where the model samples it. Pyro's ELBOs read
such a guide's two traces from its ``get_traces()``; the estimators and ``fit`` here trace a
guide on its own and replay the model against it, so they take it as a function whose trace
holds its draws only: the model runs inside it with its observed sites hidden."""

from __future__ import annotations

from typing import Callable

from pyro import poutine
from pyro.poutine.guide import GuideMessenger


def traceable_guide(guide: Callable) -> Callable:
    """``guide`` itself, or for a ``GuideMessenger`` a function of the same arguments whose
    trace holds its latent draws and parameters (the model's observed sites, its
    ``pyro.factor`` and ``pyro.deterministic`` sites hidden)."""
    if not isinstance(guide, GuideMessenger):
        return guide
    hidden = poutine.block(guide, hide_fn=_observed)

    def effect_guide(*args, **kwargs):
        return hidden(*args, **kwargs)

    effect_guide.__qualname__ = effect_guide.__name__ = type(guide).__name__
    effect_guide.messenger = guide
    return effect_guide


def effect_messenger(guide: Callable) -> GuideMessenger | None:
    """The ``GuideMessenger`` behind ``guide`` (itself, or the one
    :func:`traceable_guide` wrapped), else None."""
    found = getattr(guide, "messenger", guide)
    return found if isinstance(found, GuideMessenger) else None


def keeps_rows(guide: Callable, plate: str) -> bool:
    """Whether ``guide`` is one of Pyro's AutoGuides that keeps parameters for each
    element of ``plate`` of a model's latents: an ``AutoGuide`` (``AutoNormal``,
    ``AutoDelta``, the joint-vector ones), or an ``AutoMessenger`` (``AutoNormalMessenger``
    and its kin) unless ``plate`` is among its ``amortized_plates`` (parameters shared)."""
    from pyro.infer.autoguide import AutoGuide
    from pyro.infer.autoguide.effect import AutoMessenger

    if isinstance(guide, AutoGuide):
        return True
    messenger = effect_messenger(guide)
    return isinstance(messenger, AutoMessenger) and plate not in messenger.amortized_plates


def _observed(msg: dict) -> bool:
    return msg["type"] == "sample" and msg["is_observed"]
