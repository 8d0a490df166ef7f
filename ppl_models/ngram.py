"""Character n-gram language model with a Dirichlet prior on every context: additive smoothing.

A word is the symbol sequence ``s_1 ... s_T`` with ``s_T = EOS`` (:mod:`ppl_models.text`).
Each symbol depends on the ``n - 1`` before it, the context ``h_t = s_{t-n+1} ... s_{t-1}``,
filled with ``BOS`` before the start of the word. Each context ``h`` has its own distribution
``theta_h`` over the ``V`` predictable symbols (characters and ``EOS``), a priori symmetric
Dirichlet [1, 2]::

    theta_h ~ Dirichlet(alpha, ..., alpha),     s_t | h_t ~ Categorical(theta_{h_t})

Given the counts ``N_hc`` of symbol ``c`` after context ``h`` in the training words
(``N_h = sum_c N_hc``), the posterior of ``theta_h`` is ``Dirichlet(alpha + N_h.)`` and the
posterior predictive is additive (Lidstone) smoothing::

    p(c | h) = (N_hc + alpha) / (N_h + alpha V)

which :meth:`NGramModel.log_prob` scores exactly. Integrating every ``theta_h`` out, the
training sequence has the exact evidence (a product of Dirichlet-multinomials [1])::

    log p(data | alpha) = sum_h [ log G(V alpha) - log G(N_h + V alpha)
                                  + sum_c (log G(N_hc + alpha) - log G(alpha)) ]

(``G`` the Gamma function; unseen contexts and pairs contribute zero), and
:meth:`NGramModel.fit_concentration` picks ``alpha`` by maximizing it, the empirical-Bayes
choice of [1]. Counts are stored sparsely: each (context, symbol) pair is one integer code,
counted with :func:`torch.unique` and looked up with :func:`torch.searchsorted`.

With ``backoff=True`` the prior is the hierarchical one of [1]: ``theta_h ~ Dirichlet(alpha
m(h'))``, its mean ``m(h')`` the posterior predictive of the (n-1)-gram model (itself built
the same way) at the context's last ``n - 2`` symbols ``h'``, and the uniform distribution
for ``n = 1``. The predictive interpolates with the lower order, most where ``h`` is rare::

    p(c | h) = (N_hc + alpha m_c(h')) / (N_h + alpha)

so an unseen context falls back to the lower order instead of to uniform. The evidence is as
above with ``V alpha`` replaced by ``alpha`` and each pair's ``alpha`` by ``alpha m_c(h')``;
each order's ``alpha`` is chosen on it, lowest order first.

References:
    [1] MacKay, Peto (1995), A hierarchical Dirichlet language model, Natural Language
        Engineering 1(3), 289-308.
    [2] Chen, Goodman (1999), An empirical study of smoothing techniques for language
        modeling, Computer Speech and Language 13(4), 359-394.
"""

from __future__ import annotations

import math
import os
import sys
import warnings

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, pyro_method
from scipy.optimize import minimize_scalar

from .checks import as_int, as_number, check_module_not_meta, check_word_draws
from .text import Vocabulary, draw_words

#: Largest concentration (pseudo-count per symbol, or in total with ``backoff``). Beyond it
#: the prior swamps the counts of any word list (the predictive is within 1e-6 per count of
#: its prior mean), and the Gamma-function differences of the evidence lose precision
#: (``lgamma(alpha + 1) - lgamma(alpha)`` at alpha = 1e13 is off by 4e-3 in float64) and
#: finally overflow to NaN.
MAX_CONCENTRATION = 1e6


def _check_concentration(value, name: str) -> float:
    """``value`` as a float in ``(0, MAX_CONCENTRATION]``; ``ValueError`` naming ``name``."""
    return as_number(value, name, 0, MAX_CONCENTRATION, low_open=True)


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that makes a ``warnings.warn`` in the calling function name the
    first frame outside this package and torch (the user's ``load_state_dict`` call, however
    deep torch's loader nests)."""
    ours = os.path.dirname(os.path.abspath(__file__))
    theirs = os.path.dirname(os.path.abspath(torch.__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith((ours, theirs)):
        frame, level = frame.f_back, level + 1
    return level


def _lookup(codes: torch.Tensor, counts: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Counts of ``query: [...]`` codes in the sorted table ``codes: [K]`` (zero when absent)."""
    if len(codes) == 0:
        return torch.zeros(query.shape, dtype=counts.dtype, device=query.device)
    index = torch.searchsorted(codes, query).clamp(max=len(codes) - 1)
    return torch.where(codes[index] == query, counts[index], 0.0)


class NGramModel(PyroModule):
    """Character n-gram with Dirichlet(``concentration``) smoothing, fitted by counting.

    ``model(x)`` scores ``x: [batch, max_len]`` (:meth:`Vocabulary.encode`) under the posterior
    predictive, and ``guide`` is empty, so ``inference.elbo(ng.model, ng.guide, x)`` equals
    :meth:`log_prob`. Before :meth:`fit_counts` the model is the prior predictive: uniform.

    Args:
        order: ``n``, so each symbol is predicted from the ``n - 1`` before it.
        vocab: the characters; ``V = vocab.num_outputs`` symbols are predicted.
        concentration: ``alpha`` in ``(0, MAX_CONCENTRATION]`` (1e6): the pseudo-count added
            to every symbol, or with ``backoff`` the total pseudo-count, spread as the lower
            order predicts.
        backoff: the hierarchical prior (module docstring): the Dirichlet's mean is the
            ``(n-1)``-gram's predictive, held in :attr:`lower` (None for ``n = 1``).
    """

    def __init__(self, order: int, vocab: Vocabulary, concentration: float = 1.0,
                 backoff: bool = False):
        super().__init__()
        order = as_int(order, "order")
        concentration = _check_concentration(concentration, "concentration")
        if not isinstance(vocab, Vocabulary):
            raise TypeError(f"vocab must be a Vocabulary, got {type(vocab).__name__}")
        if not isinstance(backoff, bool):
            raise TypeError(f"backoff must be True or False, got {backoff!r}")
        base = vocab.num_symbols
        # in logarithms first: base ** (order - 1) of a huge order is a huge Python integer
        # (order 10**8 took minutes to compute before its comparison)
        bits = (order - 1) * math.log2(base) + math.log2(vocab.num_outputs)
        if bits >= 63 or (bits >= 61 and base ** (order - 1) * vocab.num_outputs >= 2**62):
            raise ValueError(f"order {order} with {base} context symbols overflows the int64 "
                             "codes of (context, symbol) pairs")
        self.order = order
        self.vocab = vocab
        self.concentration = concentration
        self.backoff = backoff
        self.lower = (NGramModel(order - 1, vocab, concentration, backoff=True)
                      if backoff and order > 1 else None)
        # code of context h_1..h_{n-1} = sum_j h_j base^(n-2-j); of a pair = code * V + c
        self.register_buffer("powers", base ** torch.arange(order - 2, -1, -1))
        self.register_buffer("pair_codes", torch.zeros(0, dtype=torch.long))
        self.register_buffer("pair_counts", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("context_codes", torch.zeros(0, dtype=torch.long))
        self.register_buffer("context_counts", torch.zeros(0, dtype=torch.float64))

    COUNT_BUFFERS = ("pair_codes", "pair_counts", "context_codes", "context_counts")

    def get_extra_state(self) -> dict:
        """What ``state_dict`` keeps besides the counts: the concentration (a fitted one
        included, :meth:`fit_concentration`) and the vocabulary's characters, whose ids the
        counts' codes hold."""
        return {"concentration": self.concentration, "characters": "".join(self.vocab.characters)}

    def set_extra_state(self, state) -> None:
        """The concentration of a ``state_dict``, checked as the constructor checks it."""
        self.concentration = self._checked_extra_state(state)

    @staticmethod
    def _checked_extra_state(state) -> float:
        """The concentration a ``state_dict``'s extra entry holds; ``ValueError`` naming what
        is wrong with it."""
        if not isinstance(state, dict) or "concentration" not in state:
            raise ValueError(f"the n-gram state's extra entry must be a dict with the "
                             f"concentration, got {state!r}")
        return _check_concentration(state["concentration"], "the state's concentration")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        verdict = self.__dict__.pop("_load_verdict", None)  # left by the order above
        if verdict == "refused":
            return
        if verdict is None:  # the outermost n-gram of this load: every order checked first,
            problem = self._state_problem(state_dict, prefix)  # so a refusal copies nothing
            self._mark_lower_orders("refused" if problem else "checked")
            if problem:
                error_msgs.append(problem)
                return
        saved = {name: state_dict.get(prefix + name) for name in self.COUNT_BUFFERS}
        if all(torch.is_tensor(value) and value.dim() == 1 for value in saved.values()):
            # the counts have as many entries as the pairs a fit saw: take the saved lengths
            for name, value in saved.items():
                setattr(self, name, getattr(self, name).new_zeros(value.shape[0]))
        try:
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                          missing_keys, unexpected_keys, error_msgs)
        except BaseException:
            self._mark_lower_orders(None)
            raise
        extra = prefix + "_extra_state"
        if extra in missing_keys:  # a state saved before the concentration was in it
            missing_keys.remove(extra)
            if verdict is None:  # once, for the model and its lower orders
                warnings.warn(f"NGramModel: the state holds no concentration (saved before it "
                              f"was kept); the model and its lower orders keep their own "
                              f"({self.concentration:.6g} here): set them or call "
                              "fit_concentration()", stacklevel=_caller_stacklevel())

    def _mark_lower_orders(self, verdict: str | None) -> None:
        """Tell the lower orders, which torch's loader visits next, what this order found of
        the state (None: nothing, a load that stopped)."""
        lower = self.lower
        while lower is not None:
            if verdict is None:
                lower.__dict__.pop("_load_verdict", None)
            else:
                lower.__dict__["_load_verdict"] = verdict
            lower = lower.lower

    def _state_problem(self, state_dict, prefix: str) -> str | None:
        """What is wrong with this order's entries of ``state_dict`` under ``prefix`` (its
        order, counts, concentration) or with its lower orders', or None."""
        where = prefix or "the model"
        has_lower = any(key.startswith(prefix + "lower.") for key in state_dict)
        if has_lower != (self.lower is not None):
            kind = {True: "with backoff (lower orders)", False: "without backoff"}
            return (f"{where}: the state is an n-gram {kind[has_lower]}, the model is one "
                    f"{kind[self.lower is not None]}")
        powers = state_dict.get(prefix + "powers")
        if torch.is_tensor(powers) and powers.shape != self.powers.shape:
            return (f"{where}: the state is an n-gram of order {powers.shape[0] + 1}, the "
                    f"model's order is {self.order}")
        extra = state_dict.get(prefix + "_extra_state")
        if extra is not None:
            try:
                self._checked_extra_state(extra)
            except ValueError as error:
                return f"{where}: {error}"
            characters = extra.get("characters")
            if characters is not None and characters != "".join(self.vocab.characters):
                return (f"{where}: the state counts words over the characters "
                        f"{characters!r}, the model's vocabulary is "
                        f"{''.join(self.vocab.characters)!r}")
        saved = [state_dict.get(prefix + name) for name in self.COUNT_BUFFERS]
        if all(torch.is_tensor(value) and value.dim() == 1 for value in saved):
            problem = self._counts_problem(*saved)
            if problem:
                return (f"the counts of {where} are not an n-gram model's ({problem}): a "
                        "damaged or edited state")
        return None if self.lower is None else self.lower._state_problem(state_dict,
                                                                          prefix + "lower.")

    def _counts_problem(self, codes: torch.Tensor, counts: torch.Tensor,
                        context_codes: torch.Tensor, context_counts: torch.Tensor) -> str | None:
        """What makes count tensors inconsistent (as :meth:`fit_counts` leaves them: pair
        codes sorted and distinct within range, counts positive whole numbers, contexts and
        their totals those of the pairs), or None."""
        if codes.is_floating_point() or context_codes.is_floating_point() or not (
                counts.is_floating_point() and context_counts.is_floating_point()):
            return (f"codes of dtype {codes.dtype} and {context_codes.dtype}, counts of "
                    f"{counts.dtype} and {context_counts.dtype}; expected integer codes and "
                    "floating counts")
        # as the model holds them (a module cast with .float() keeps whole counts exactly)
        codes, context_codes = codes.long(), context_codes.long()
        counts, context_counts = counts.double(), context_counts.double()
        if codes.shape != counts.shape:
            return f"{len(codes)} pair codes but {len(counts)} pair counts"
        limit = self.vocab.num_symbols ** (self.order - 1) * self.num_outputs
        if codes.numel() and (codes.min() < 0 or codes.max() >= limit
                              or (codes.diff() <= 0).any()):
            return f"pair codes not distinct, sorted and within 0..{limit - 1}"
        if counts.numel() and not (torch.isfinite(counts).all() and (counts >= 1).all()
                                   and (counts == counts.round()).all()):
            return "pair counts not whole numbers >= 1"
        contexts, inverse = torch.unique_consecutive(codes // self.num_outputs,
                                                     return_inverse=True)
        totals = torch.zeros(len(contexts), dtype=torch.float64,
                             device=codes.device).index_add_(0, inverse, counts)
        if not (torch.equal(context_codes, contexts) and torch.equal(context_counts, totals)):
            return "context codes or totals differ from those of the pairs"
        return None

    @property
    def concentration(self) -> float:
        """``alpha``, in ``(0, MAX_CONCENTRATION]`` (checked when set)."""
        if "_concentration" not in self.__dict__:  # a module pickled before the property
            self.concentration = self.__dict__.pop("concentration")
        return self._concentration

    @concentration.setter
    def concentration(self, value) -> None:
        self._concentration = _check_concentration(value, "concentration")

    def _check_underflow(self, probabilities: torch.Tensor, what: str) -> None:
        """``FloatingPointError`` when a predictive probability (never 0 for ``alpha > 0``)
        rounded to 0 in float64: a concentration so small that its pseudo-counts vanish."""
        if bool((probabilities == 0).any()):
            raise FloatingPointError(
                f"NGramModel.{what}: a predictive probability of an unseen symbol rounds to 0 "
                f"in float64 at concentration {self.concentration:.3g} (the pseudo-count "
                f"alpha / {self.num_outputs} per symbol, or its share of a lower order's "
                "prediction, underflows); use a larger concentration")

    @property
    def num_outputs(self) -> int:
        """The size of the predicted alphabet (characters and the end-of-word symbol)."""
        return self.vocab.num_outputs

    def contexts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Split words into what is predicted and from what.

        Args:
            x: ``[batch, max_len]`` from :meth:`Vocabulary.encode`.

        Returns:
            ``targets: [batch, max_len]`` (``x`` with ``PAD`` replaced by ``EOS``, so every
            entry is a valid symbol), ``contexts: [batch, max_len, n - 1]`` (the symbols before
            each target, ``BOS`` before the word) and ``mask: [batch, max_len]`` (True where a
            symbol is scored).
        """
        self.vocab.check(x)
        mask = x != self.vocab.pad
        targets = torch.where(mask, x, self.vocab.EOS)
        padded = torch.nn.functional.pad(targets, (self.order - 1, 0), value=self.vocab.bos)
        windows = padded.unfold(1, self.order, 1)  # [batch, max_len, n]
        return targets, windows[..., :-1], mask

    def _context_code(self, contexts: torch.Tensor) -> torch.Tensor:
        """``contexts: [..., n - 1]`` -> integer codes ``[...]``."""
        return (contexts * self.powers).sum(-1)

    def fit_counts(self, x: torch.Tensor) -> NGramModel:
        """Replace the counts by those of the words ``x: [batch, max_len]``; returns self."""
        targets, contexts, mask = self.contexts(x)
        pairs = (self._context_code(contexts) * self.num_outputs + targets)[mask]  # [symbols]
        self.pair_codes, counts = torch.unique(pairs, return_counts=True)  # sorted codes
        self.pair_counts = counts.double()
        # pairs sorted by code are grouped by context, since code = context * V + symbol
        self.context_codes, inverse = torch.unique_consecutive(
            self.pair_codes // self.num_outputs, return_inverse=True)
        self.context_counts = torch.zeros(len(self.context_codes), dtype=torch.float64,
                                          device=x.device).index_add_(0, inverse,
                                                                      self.pair_counts)
        if self.lower is not None:
            self.lower.fit_counts(x)
        return self

    @property
    def num_contexts(self) -> int:
        """Distinct contexts seen in training."""
        return len(self.context_codes)

    def conditional(self, contexts: torch.Tensor) -> torch.Tensor:
        """Posterior predictive ``p(. | h)`` of ``contexts: [..., n - 1]`` ids -> ``[..., V]``
        float64: ``(N_hc + alpha) / (N_h + alpha V)`` for every symbol ``c``, or
        ``(N_hc + alpha m_c(h')) / (N_h + alpha)`` with ``backoff``."""
        if contexts.dtype != torch.long or contexts.shape[-1:] != (self.order - 1,):
            raise ValueError(f"contexts must be int64 [..., {self.order - 1}], got "
                             f"{contexts.dtype} {list(contexts.shape)}")
        if contexts.numel() and (contexts.min() < 0 or contexts.max() > self.vocab.bos):
            raise ValueError(f"context ids must lie in 0..{self.vocab.bos}, got range "
                             f"[{int(contexts.min())}, {int(contexts.max())}]")
        symbols = torch.arange(self.num_outputs, device=contexts.device)
        probabilities = self._predictive(contexts[..., None, :], symbols)
        self._check_underflow(probabilities, "conditional")
        return probabilities

    def _strength(self, alpha: float) -> float:
        """Total prior pseudo-count of a context."""
        return alpha if self.backoff else alpha * self.num_outputs

    def _prior_mean(self, contexts: torch.Tensor, symbols: torch.Tensor) -> torch.Tensor | float:
        """The Dirichlet's mean at ``symbols: [...]`` after ``contexts: [..., n - 1]``."""
        if self.lower is None:
            return 1.0 / self.num_outputs
        return self.lower._predictive(contexts[..., 1:], symbols)

    def _predictive(self, contexts: torch.Tensor, symbols: torch.Tensor,
                    alpha: float | None = None) -> torch.Tensor:
        """Unchecked ``p(symbols | contexts)``: ``contexts: [..., n - 1]`` broadcast against
        ``symbols: [...]`` -> ``[...]`` float64."""
        alpha = self._strength(self.concentration if alpha is None else alpha)
        code = self._context_code(contexts)
        pair_counts = _lookup(self.pair_codes, self.pair_counts, code * self.num_outputs + symbols)
        totals = _lookup(self.context_codes, self.context_counts, code)
        return (pair_counts + alpha * self._prior_mean(contexts, symbols)) / (totals + alpha)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(word)`` in nats, end symbol included: ``x: [batch, max_len]`` ->
        ``[batch]`` float64."""
        targets, contexts, mask = self.contexts(x)
        probabilities = self._predictive(contexts, targets)  # [batch, max_len]
        self._check_underflow(probabilities[mask], "log_prob")
        return torch.where(mask, probabilities.log(), 0.0).sum(1)

    def log_evidence(self, alpha: float | None = None) -> float:
        """Exact ``log p(training symbols | alpha)`` in nats (module docstring); ``alpha`` in
        ``(0, MAX_CONCENTRATION]`` defaults to the model's concentration."""
        alpha = (self.concentration if alpha is None
                 else _check_concentration(alpha, "alpha (the concentration)"))
        evidence = self._log_evidence(alpha, self._pair_prior_means())
        if not math.isfinite(evidence):
            raise FloatingPointError(
                f"NGramModel.log_evidence: not finite in float64 at concentration {alpha:.3g} "
                "(the Gamma functions of pseudo-counts that round to 0); use a larger "
                "concentration")
        return evidence

    def _log_evidence(self, alpha: float, prior_means: torch.Tensor | float) -> float:
        """:meth:`log_evidence` given :meth:`_pair_prior_means` (fixed while ``alpha`` is
        searched: they depend on the lower orders only)."""
        total = self._strength(alpha)
        per_context = math.lgamma(total) - torch.lgamma(self.context_counts + total)
        pseudo = total * prior_means  # [pairs] or a float
        per_pair = torch.lgamma(self.pair_counts + pseudo) - torch.lgamma(
            torch.as_tensor(pseudo, dtype=torch.float64))
        return float(per_context.sum() + per_pair.sum())

    def _pair_prior_means(self) -> torch.Tensor | float:
        """The prior mean at every counted (context, symbol) pair, ``[pairs]`` (a float for the
        symmetric prior)."""
        if self.lower is None:
            return 1.0 / self.num_outputs
        base = self.vocab.num_symbols
        symbols = self.pair_codes % self.num_outputs
        contexts = (self.pair_codes // self.num_outputs)[:, None] // self.powers % base
        return self._prior_mean(contexts, symbols)

    def fit_concentration(self, bounds: tuple[float, float] | None = None) -> float:
        """Set the concentration to the maximizer of :meth:`log_evidence` within ``bounds``
        (a bounded scalar search over ``log alpha``, tolerance 1e-6) and return it; with
        ``backoff`` the lower orders' first. Default bounds: ``(1e-4, 1e3)`` per symbol for
        the symmetric prior, ``(1e-3, 1e5)`` in total for the hierarchical one; given bounds
        ``(low, high)`` need ``0 < low < high <= MAX_CONCENTRATION``."""
        if bounds is not None:
            if (isinstance(bounds, (str, bytes)) or not hasattr(bounds, "__len__")
                    or len(bounds) != 2):
                raise ValueError(f"bounds must be a pair (low, high), got {bounds!r}")
            low, high = (_check_concentration(b, f"bounds[{i}]") for i, b in enumerate(bounds))
            if not low < high:
                raise ValueError(f"bounds must satisfy low < high, got {tuple(bounds)}")
            bounds = (low, high)
        if self.num_contexts == 0:
            raise ValueError("no counts yet: call fit_counts(x) first")
        if self.lower is not None:
            self.lower.fit_concentration(bounds)
        if bounds is None:
            bounds = (1e-3, 1e5) if self.backoff else (1e-4, 1e3)
        prior_means = self._pair_prior_means()
        result = minimize_scalar(lambda log_alpha: -self._log_evidence(math.exp(log_alpha),
                                                                       prior_means),
                                 bounds=tuple(map(math.log, bounds)), method="bounded",
                                 options={"xatol": 1e-6})
        self.concentration = math.exp(result.x)
        return self.concentration

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        """``x: [batch, max_len]`` word ids (``PAD`` after the end symbol), each symbol observed
        given its context, inside ``pyro.plate("data", batch)`` (no latent sites)."""
        targets, contexts, mask = self.contexts(x)
        probs = self.conditional(contexts)  # [batch, max_len, V]
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Categorical(probs=probs).mask(mask).to_event(1), obs=targets)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        """Empty: the Dirichlet parameters are integrated out, nothing is latent."""

    def sample(self, num: int, generator: torch.Generator | None = None,
               max_length: int = 100) -> list[str]:
        """Draw ``num >= 1`` words symbol by symbol from the posterior predictive, each cut
        after ``max_length >= 1`` characters (:func:`ppl_models.text.draw_words`), with
        ``generator`` (a :class:`torch.Generator` on the model's device) or torch's."""
        check_module_not_meta(self, "NGramModel.sample")
        check_word_draws(num, generator, max_length, self.powers.device)
        context = None

        def next_probs(previous: torch.Tensor) -> torch.Tensor:
            nonlocal context
            if context is None:  # the first call passes BOS: the all-BOS start context
                context = previous[:, None].expand(-1, self.order - 1)
            else:
                context = torch.cat([context, previous[:, None]], 1)[:, 1:]  # [num, n - 1]
            return self.conditional(context)

        return draw_words(self.vocab, next_probs, num, generator, max_length, self.powers.device)
