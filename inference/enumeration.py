"""``log p(x, z)`` with the model's enumerated discrete latents summed out, per datapoint.

A model site marked ``infer={"enumerate": "parallel"}`` (or by ``config_enumerate``) that
the guide does not sample (:attr:`inference.pair_check.PairStructure.model_enumerated`) is
not drawn: the model runs under ``pyro.poutine.enum`` against the guide's draws, each such
site takes all its values along a dim left of every plate, and the log densities of all
model sites are combined by variable elimination over the plates
(``pyro.ops.contract.contract_to_tensor`` with a log-sum-exp ring): per particle and
datapoint, ``log sum_a p(x, a, z)``. Chains of enumerated sites, enumerated sites inside
plates nested in ``"data"`` (summed per plate member) and ``pyro.markov`` chains (a forward
algorithm) are eliminated alike.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from typing import Callable

import pyro
import torch
from pyro import poutine
from pyro.ops.contract import contract_to_tensor
from pyro.ops.packed import pack
from pyro.ops.rings import LogRing
from pyro.poutine.util import prune_subsample_sites

from .pair_check import DATA_PLATE, PARTICLE_PLATE, PairError, PairStructure, sample_sites
from .supports import mask_outside_support


def enumerated_traces(model: Callable, guide: Callable, args: tuple, kwargs: dict,
                      num_particles: int | None, structure: PairStructure):
    """``(model_trace, guide_trace)``: the guide's draws (``num_particles`` of them in a
    leftmost plate at dim ``-(max_plate_nesting + 1)``, or one unvectorized draw for None)
    and the model replayed on them with its enumerated sites enumerated left of that."""
    nesting = structure.max_plate_nesting + (num_particles is not None)

    def particles(fn):
        if num_particles is None:
            return fn

        def run(*a, **k):
            with pyro.plate(PARTICLE_PLATE, num_particles, dim=-nesting):
                return fn(*a, **k)
        return run

    guide_trace = poutine.trace(particles(guide)).get_trace(*args, **kwargs)
    drawn = {name for name, site in guide_trace.nodes.items() if site["type"] == "sample"}
    # as in Pyro's TraceEnum_ELBO, the enumeration sees every site before the replay, so that
    # a site the guide draws records the enumerated dims its distribution depends on (a -> z
    # with z drawn by the guide); its mark is lifted first, so it keeps the guide's draw
    unmarked = poutine.infer_config(
        particles(model), lambda msg: {"enumerate": None} if msg["name"] in drawn else {})
    enumerating = poutine.replay(poutine.enum(unmarked, first_available_dim=-nesting - 1),
                                 trace=guide_trace)
    model_trace = poutine.trace(enumerating).get_trace(*args, **kwargs)
    return prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)


def log_density_dtypes(model_trace) -> dict[str, torch.dtype]:
    """``{site: dtype}`` of the log densities of a model trace from
    :func:`enumerated_traces` (sites masked out entirely left out)."""
    return {site["name"]: log_p.dtype for site in sample_sites(model_trace)
            if (log_p := _masked_log_prob(site)) is not None}


def _masked_log_prob(site) -> torch.Tensor | None:
    """A site's unscaled log density (``-inf`` for a latent outside its support), zero where
    masked; None when masked out entirely. An enumerated site's own ``poutine.mask`` is not
    applied, as in Pyro's ``TraceEnum_ELBO``: its values are summed over with their
    probabilities, which add up to one, and the mask applies to the sites that depend on them
    (masked as zero there, one the sum would otherwise count once per value)."""
    enumerated = site["infer"].get("_enumerate_symbol") is not None
    if site["mask"] is False and not enumerated:
        return None
    fn, value = site["fn"], site["value"]
    log_p = fn.log_prob(value, *site["args"], **site["kwargs"])
    if not site["is_observed"]:
        log_p = mask_outside_support(fn, value, log_p)
    if torch.is_tensor(site["mask"]) and not enumerated:
        log_p = torch.where(site["mask"], log_p, log_p.new_zeros(()))
    return log_p


def enumerated_log_density(model_trace, structure: PairStructure,
                           per_datapoint: bool = True) -> torch.Tensor:
    """``log p(x, z)`` of a model trace from :func:`enumerated_traces`, its enumerated sites
    summed out: unscaled densities, masks applied as elsewhere in :mod:`inference.weights`.
    ``per_datapoint`` False: of all the data together (the ``"data"`` plate contracted too,
    latents outside it included once), for :func:`inference.joint_log_evidence`.

    Returns:
        ``[num_particles or 1, batch]``, or ``[num_particles or 1, 1]`` when not
        ``per_datapoint``.
    """
    model_trace.symbolize_dims()
    symbols = model_trace.plate_to_symbol
    tree, dead_tree, sum_dims = OrderedDict(), OrderedDict(), set()
    scored = [(site, log_p) for site in sample_sites(model_trace)
              if (log_p := _masked_log_prob(site)) is not None]
    # float64 data beside float32 parameters give terms of both precisions: the contraction
    # needs one, the widest (as a sum of the terms would promote)
    dtype = functools.reduce(torch.promote_types, (log_p.dtype for _, log_p in scored),
                             torch.get_default_dtype())
    for site, log_p in scored:
        log_p = log_p.to(dtype)
        dim_to_symbol = site["infer"]["_dim_to_symbol"]
        enum_symbol = site["infer"].get("_enumerate_symbol")
        if enum_symbol is not None:
            sum_dims.add(enum_symbol)
        try:
            term = pack(log_p, dim_to_symbol)
        except ValueError as error:
            raise PairError(f"site '{site['name']}' has log_prob shape {tuple(log_p.shape)} "
                            "under enumeration, with a dim that is neither a plate's nor an "
                            "enumerated site's: use .to_event() for event dimensions and "
                            "index with Vindex so that enumerated values broadcast "
                            f"({error})") from error
        ordinal = frozenset(symbols[f.name] for f in site["cond_indep_stack"] if f.vectorized)
        tree.setdefault(ordinal, []).append(term)
        if not site["is_observed"] and enum_symbol is None:
            # 0, or -inf where a sampled latent lies outside its support
            dead = torch.where(torch.isneginf(log_p), log_p, torch.zeros_like(log_p))
            dead_tree.setdefault(ordinal, []).append(pack(dead, dim_to_symbol))
    sizes = ({symbols[DATA_PLATE]: structure.batch_size}
             if per_datapoint and DATA_PLATE in symbols else {})
    if PARTICLE_PLATE in symbols:
        sizes[symbols[PARTICLE_PLATE]] = next(
            f.size for site in sample_sites(model_trace) for f in site["cond_indep_stack"]
            if f.name == PARTICLE_PLATE)
    target = frozenset(sizes)
    total = _unpack_target(contract_to_tensor(tree, sum_dims, target,
                                              ring=LogRing(dim_to_size=sizes)), symbols)
    if dead_tree:
        # -inf for every assignment of the enumerated values: weight zero, whatever NaN the
        # sites that use such a latent compute
        dead = contract_to_tensor(dead_tree, sum_dims, target, ring=LogRing(dim_to_size=sizes))
        total = torch.where(torch.isneginf(_unpack_target(dead, symbols)), -math.inf, total)
    return total


def _unpack_target(term: torch.Tensor, symbols: dict) -> torch.Tensor:
    """A contracted term over the particle and data plates as ``[particles or 1, batch or
    1]``."""
    order = [symbols.get(name) for name in (PARTICLE_PLATE, DATA_PLATE)]
    dims = term._pyro_dims
    present = [s for s in order if s is not None and s in dims]
    out = term.permute([dims.index(s) for s in present]) if present else term
    shape = [out.shape[present.index(s)] if s in present else 1 for s in order]
    return out.reshape(shape)
