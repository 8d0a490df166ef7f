"""A recurrent character language model: a GRU reads the word so far and predicts the next symbol.

For a word ``s_1 ... s_T`` (``s_T = EOS``, :mod:`ppl_models.text`) the exact likelihood is
the chain rule [1]::

    h_t = GRU(h_{t-1}, E s_{t-1}),   h_0 = 0,  s_0 = BOS
    log p(s_1 ... s_T) = sum_t log softmax(W h_t + b)[s_t]

``h_t`` summarizes the whole prefix ``s_{<t}`` (unlike an n-gram, no fixed context length),
and the shared embedding ``E`` and output layer let similar contexts share statistics, which
is where it beats the count-based :class:`ppl_models.ngram.NGramModel` on held-out words.
A GRU [2] was chosen over a causal convolution or a small transformer for this scale: words
are short (at most 23 symbols in ``wamerican``), so recurrence costs little, and on 2 CPU
cores one layer of 256 units trains on 20,000 words in about 80 s (15 epochs), reaching
2.66 held-out bits per character against 2.80 for the best n-gram on the same words.

The model is fully observed: ``model(x)`` scores ``x`` with ``pyro.sample(..., obs=x)`` and the
guide is empty, so ``inference.fit(lm.model, lm.guide, x)`` is maximum likelihood and
``inference.elbo`` equals :meth:`GRULanguageModel.log_prob`.

References:
    [1] Sutskever, Martens, Hinton (2011), Generating text with recurrent neural networks,
        ICML.
    [2] Cho, van Merrienboer, Gulcehre, Bahdanau, Bougares, Schwenk, Bengio (2014), Learning
        phrase representations using RNN encoder-decoder for statistical machine translation,
        EMNLP.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, pyro_method
from torch import nn

from .checks import (as_int, as_number, being_traced, check_depth, check_finite_rows,
                     check_has_values, check_like, check_memory, check_module_not_meta,
                     check_word_draws)
from .networks import full_precision
from .text import Vocabulary, draw_words


class GRULanguageModel(PyroModule):
    """Character-level GRU language model with an empty guide.

    Args:
        vocab: the characters; the network predicts ``vocab.num_outputs`` symbols.
        embedding: size of the symbol embedding (``BOS`` has one too).
        hidden: GRU state size.
        layers: stacked GRU layers, at most ``checks.MAX_DEPTH`` (1024; more is refused before
            building, ``ValueError``: the build time grows with the square of ``layers``).
        dropout: dropout in ``[0, 1)`` on the GRU outputs in training mode (0 disables it); call
            ``.eval()`` before scoring or sampling.
    """

    def __init__(self, vocab: Vocabulary, embedding: int = 32, hidden: int = 256,
                 layers: int = 1, dropout: float = 0.0):
        super().__init__()
        if not isinstance(vocab, Vocabulary):
            raise TypeError(f"vocab must be a Vocabulary, got {type(vocab).__name__}")
        embedding, hidden = as_int(embedding, "embedding"), as_int(hidden, "hidden")
        layers = as_int(layers, "layers")
        check_depth(layers, f"layers={layers}", "layers", 1.3e-7 * layers**2, 1_000 * layers)
        dropout = as_number(dropout, "dropout", 0, 1, high_open=True)
        # the weights, counted before torch is asked for them: per layer 3 gates of
        # (input + hidden + 2) x hidden, the embedding and the output layer
        weights = (vocab.num_symbols * embedding + (hidden + 1) * vocab.num_outputs
                   + 3 * hidden * (embedding + hidden + 2)  # the first layer
                   + (layers - 1) * 3 * hidden * (2 * hidden + 2))  # the layers above it
        check_memory(weights, torch.get_default_dtype(),
                     f"embedding={embedding}, hidden={hidden}, layers={layers}: the GRU's "
                     f"{weights:,} weights")
        self.vocab = vocab
        self.embed = nn.Embedding(vocab.num_symbols, embedding)
        self.gru = nn.GRU(embedding, hidden, num_layers=layers, batch_first=True,
                          dropout=dropout if layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab.num_outputs)

    def prepare(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Check ``x: [batch, max_len]`` and drop its all-padding columns.

        Under a graph tracer (``compile=True`` in ``inference``; :func:`being_traced`) both
        read the data's values, so neither is done: ``T = max_len``, the padding columns
        masked (the same values, the GRU on a few more columns; in eager code the trim saves
        about a quarter of a step on the bundled corpus), the check left to the eager
        passes that precede the trace.

        Returns:
            ``targets: [batch, T]`` with ``PAD`` replaced by ``EOS`` (any valid symbol: those
            positions are masked) and ``mask: [batch, T]``, ``T`` the longest word plus one.
        """
        if not being_traced():
            self.vocab.check(x)
            x = x[:, :int((x != self.vocab.pad).sum(1).max())]  # the longest word
        mask = x != self.vocab.pad
        return torch.where(mask, x, self.vocab.EOS), mask

    def logits_from_embedding(self, e: torch.Tensor) -> torch.Tensor:
        """Network on embedded symbols ``e: [batch, T, embedding]`` (``e[:, t]`` = embedding of
        ``s_t``, ``T >= 1``, the dtype and device of the model's parameters) -> ``[batch, T, V]``,
        entry ``t`` depending on ``e[:, :t]`` only. ``TypeError``/``ValueError`` naming ``e``
        otherwise (a meta tensor: torch combined it with the CPU weights into numbers from
        uninitialized memory)."""
        embedding = self.embed.embedding_dim
        if not torch.is_tensor(e) or not e.is_floating_point():
            raise TypeError(f"e must be a floating-point tensor [batch, T, {embedding}] of "
                            f"embedded symbols, got {getattr(e, 'dtype', type(e).__name__)}")
        if e.dim() != 3 or e.shape[1] < 1 or e.shape[2] != embedding:
            raise ValueError(f"e must have shape [batch, T, {embedding}] with T >= 1, got "
                             f"{list(e.shape)}")
        check_has_values(e, "e")
        check_like(e, "e", self)
        return self._logits_from_embedding(e)

    def _logits_from_embedding(self, e: torch.Tensor) -> torch.Tensor:
        """:meth:`logits_from_embedding` without the checks: ``[batch, T, embedding]`` ->
        ``[batch, T, V]``."""
        bos = self.embed.weight[self.vocab.bos].expand(e.shape[0], 1, -1)
        h, _ = self.gru(torch.cat([bos, e[:, :-1]], 1))  # [batch, T, hidden], t reads s_{<t}
        return full_precision(self.head(self.dropout(h)))

    def check_targets(self, targets: torch.Tensor, name: str = "targets") -> None:
        """``TypeError`` unless ``targets`` is an int64 tensor on the model's device;
        ``ValueError`` unless it has
        shape ``[batch, T]`` with ``T >= 1``, values that can be read (not meta, not sparse)
        and ids in ``0..V - 1`` (``V = vocab.num_outputs``: end symbol and characters, no
        ``BOS``/``PAD``). The ids index the embedding: out of range they failed as a bare
        ``IndexError`` (a device-side assert on CUDA). Under a graph tracer
        (:func:`being_traced`) the range, which reads the values, is not checked."""
        if not torch.is_tensor(targets) or targets.dtype != torch.long:
            raise TypeError(f"{name} must be an int64 tensor [batch, T] of symbol ids, got "
                            f"{getattr(targets, 'dtype', type(targets).__name__)}")
        if targets.dim() != 2 or targets.shape[1] < 1:
            raise ValueError(f"{name} must have shape [batch, T] with T >= 1, got "
                             f"{list(targets.shape)}")
        check_has_values(targets, name)
        device = self.embed.weight.device
        if targets.device != device:
            raise TypeError(f"{name} is on {targets.device}, the model's parameters on "
                            f"{device}: move one to the other ({name}.to(...) or the model's "
                            f".to(...))")
        if being_traced() or not targets.numel():
            return
        low, high = int(targets.min()), int(targets.max())
        if low < 0 or high >= self.vocab.num_outputs:
            raise ValueError(f"{name} must hold ids in 0..{self.vocab.num_outputs - 1} (the end "
                             f"symbol and the characters; no BOS or PAD), got range "
                             f"[{low}, {high}]")

    def logits(self, targets: torch.Tensor) -> torch.Tensor:
        """``targets: [batch, T]`` int64 ids in ``0..V - 1`` (no ``PAD``; :meth:`check_targets`,
        run on every call) -> logits ``[batch, T, V]`` of ``p(s_t | s_{<t})``."""
        self.check_targets(targets)
        return self._logits(targets)

    def _logits(self, targets: torch.Tensor) -> torch.Tensor:
        """:meth:`logits` for targets already checked (:meth:`prepare`)."""
        return self._logits_from_embedding(self.embed(targets))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(word)`` in nats, end symbol included: ``x: [batch, max_len]`` -> ``[batch]``;
        ``FloatingPointError`` naming the rows whose score is NaN or ``+inf`` (NaN weights,
        an overflow); ``-inf`` (a word of probability zero) is returned."""
        targets, mask = self.prepare(x)
        log_p = self._logits(targets).log_softmax(-1)  # [batch, T, V]
        log_p = log_p.gather(-1, targets[..., None]).squeeze(-1)  # [batch, T]
        log_p = torch.where(mask, log_p, 0.0).sum(1)
        check_finite_rows(log_p.detach(), f"{type(self).__name__}.log_prob",
                          "the log-probabilities from the network's logits",
                          log_probability=True)
        return log_p

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        """``x: [batch, max_len]`` word ids (``PAD`` after the end symbol) observed symbol by symbol
        inside ``pyro.plate("data", batch)`` (no latent sites)."""
        targets, mask = self.prepare(x)
        logits = self._logits(targets)  # [batch, T, V]
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Categorical(logits=logits).mask(mask).to_event(1),
                        obs=targets)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        """Empty: with no latent variables the ELBO is ``log p(x)`` itself."""

    def sample(self, num: int, generator: torch.Generator | None = None,
               max_length: int = 100) -> list[str]:
        """Draw ``num >= 1`` words symbol by symbol, carrying the GRU state, each cut after
        ``max_length >= 1`` characters (:func:`ppl_models.text.draw_words`), with
        ``generator`` (a :class:`torch.Generator` on the model's device) or torch's;
        ``FloatingPointError`` naming the symbol and the rows where the network's
        probabilities are NaN or infinite (NaN weights, an overflow)."""
        check_module_not_meta(self, "GRULanguageModel.sample")
        device = self.head.weight.device
        check_word_draws(num, generator, max_length, device)
        state = None

        def next_probs(previous: torch.Tensor) -> torch.Tensor:
            nonlocal state
            h, state = self.gru(self.embed(previous)[:, None], state)  # h: [num, 1, hidden]
            return self.head(h[:, 0]).softmax(-1)  # [num, V]

        return draw_words(self.vocab, next_probs, num, generator, max_length, device,
                          what=f"{type(self).__name__}.sample")

