"""WaveNet: an autoregressive model of quantized 1-D signals built from dilated causal convolutions.

A sequence of levels ``x = (x_0, ..., x_{T-1})``, each in ``0..num_levels-1`` (8-bit mu-law
audio: 256 levels, :mod:`ppl_models.audio`), has the exact likelihood [1]::

    log p(x | y) = sum_t log softmax(f(x_{t-R}, ..., x_{t-1}; y))[x_t]

where ``f`` is a stack of gated residual blocks (``z = tanh(W_f * h + V_f y) ⊙ σ(W_g * h +
V_g y)``, [1] eq. 2-3 and Fig. 4) whose kernel-2 convolutions have dilations
``1, 2, 4, ..., 2^(layers-1)``, repeated ``stacks`` times. The receptive field is
``R = 1 + stacks (2^layers - 1)`` past samples. ``y`` is an optional global condition (a
class or speaker id) whose learned embedding is added inside every block.

Convention for the start of a sequence: every layer sees zeros before time 0 (the zero
padding of a causal convolution), so ``x_0`` is predicted from an empty "silence" context
that is no mu-law level, and each ``x_t`` from the ``min(t, R)`` samples before it.

Generation draws ``x_t`` by the Gumbel-max trick [3], ``argmax(logits + g)`` with
``g = -log(-log(u))``, ``u ~ U(0, 1)^num_levels`` from a seeded :class:`torch.Generator`, one
draw per step. The naive sampler reruns the training network on the last ``R`` samples at
every step (work proportional to ``R * layers`` per step); the fast sampler [2] keeps, for
each block of dilation ``d``, a queue of its last ``d`` inputs, so one step costs one
matrix-vector product per layer. Both consume the same draws in the same order, so they
return the same samples; their logits agree up to float rounding (about 1e-6), which could
change a draw only if it fell that close to a tie.

References:
    [1] van den Oord, Dieleman, Zen, Simonyan, Vinyals, Graves, Kalchbrenner, Senior,
        Kavukcuoglu (2016), WaveNet: A Generative Model for Raw Audio, arXiv:1609.03499.
    [2] Paine, Khorrami, Chang, Zhang, Ramachandran, Hasegawa-Johnson, Huang (2016),
        Fast Wavenet Generation Algorithm, arXiv:1611.09482.
    [3] Maddison, Tarlow, Minka (2014), A* Sampling, NeurIPS (the Gumbel-max trick).
"""

from __future__ import annotations

from typing import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, pyro_method
from torch import nn
from torch.nn import functional as F

from .audio import NUM_LEVELS
from .checks import (NonFiniteGuard, as_bool, as_int, as_seed, check_bytes, check_depth,
                     check_finite_rows, check_generator, check_like, check_memory,
                     check_module_not_meta, check_has_values, sampling_bar)
from .networks import full_precision


class ResidualBlock(nn.Module):
    """Gated residual block with dilation ``d`` ([1] Fig. 4).

    ``a_t = W_0 h_{t-d} + W_1 h_t + b (+ V y)``, ``z = tanh(a_filter) * sigmoid(a_gate)``;
    a 1x1 convolution of ``z`` gives the residual added to ``h`` and the skip output.
    Channels sit in dim 1 both for sequences ``[batch, C, T]`` and for single steps
    ``[batch, C]``.
    """

    def __init__(self, channels: int, gate_channels: int, skip_channels: int, dilation: int,
                 num_classes: int | None):
        super().__init__()
        self.dilation = dilation
        self.sizes = [channels, skip_channels]
        self.conv = nn.Conv1d(channels, 2 * gate_channels, kernel_size=2, dilation=dilation)
        self.out = nn.Conv1d(gate_channels, channels + skip_channels, kernel_size=1)
        self.cond = nn.Embedding(num_classes, 2 * gate_channels) if num_classes else None

    def condition(self, y: torch.Tensor | None) -> torch.Tensor | None:
        """Class ids ``y: [batch]`` -> the block's bias ``V y: [batch, 2 * gate_channels]``."""
        return None if self.cond is None else self.cond(y)

    def forward(self, h: torch.Tensor, cond: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``h: [batch, channels, T]`` -> ``(h + residual: [batch, channels, T], skip: [batch,
        skip_channels, T])``; output ``t`` reads ``h`` at ``t`` and ``t - d`` (zeros before 0)."""
        a = self.conv(F.pad(h, (self.dilation, 0)))  # [batch, 2 * gate, T]
        if cond is not None:
            a = a + cond[:, :, None]
        residual, skip = self.out(_gated(a)).split(self.sizes, 1)
        return h + residual, skip

    def step(self, past: torch.Tensor, h: torch.Tensor, cond: torch.Tensor | None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step of :meth:`forward` from ``past = h_{t-d}`` and ``h = h_t``, each
        ``[batch, channels]``: returns ``[batch, channels]`` and ``[batch, skip_channels]``."""
        w = self.conv.weight  # [2 * gate, channels, 2]; tap 0 reads t - d, tap 1 reads t
        a = F.linear(past, w[:, :, 0]) + F.linear(h, w[:, :, 1], self.conv.bias)
        if cond is not None:
            a = a + cond
        out = F.linear(_gated(a), self.out.weight[:, :, 0], self.out.bias)
        residual, skip = out.split(self.sizes, 1)
        return h + residual, skip


def _gated(a: torch.Tensor) -> torch.Tensor:
    """``tanh(filter) * sigmoid(gate)``: ``a: [batch, 2 * gate, ...]`` -> ``[batch, gate, ...]``."""
    filt, gate = a.chunk(2, 1)
    return torch.tanh(filt) * torch.sigmoid(gate)


def _range(x: torch.Tensor) -> tuple[int, int]:
    """``(min, max)`` of the integer tensor ``x`` with one host read; ``(0, 0)`` if empty."""
    if not x.numel():
        return 0, 0
    low, high = torch.stack(torch.aminmax(x)).tolist()
    return low, high


def _gumbel_max(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One categorical draw per row of ``logits: [batch, K]`` -> ``[batch]`` int64."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device)
    return (logits - torch.log(-torch.log(u))).argmax(-1)


class WaveNet(PyroModule):
    """WaveNet [1] as a fully observed Pyro model with an empty guide.

    ``model(x, y)`` scores ``x: [batch, T]`` int64 levels, so ``inference.fit(wn.model,
    wn.guide, x)`` is maximum likelihood and ``inference.elbo`` equals :meth:`log_prob`.

    Args:
        layers: blocks per stack, with dilations ``1, 2, ..., 2^(layers-1)``; every block pads
            its input by its dilation, so a ``layers`` whose one-step input ``[channels, 1 +
            2^(layers-1)]`` exceeds physical memory is refused here (``ValueError``).
        stacks: how many times the dilation pattern repeats; ``layers * stacks`` blocks, at
            most ``checks.MAX_DEPTH`` (1024; more is refused before building, ``ValueError``).
        channels: residual channels (also the size of the input embedding).
        gate_channels: channels of the gated activation (default: ``channels``).
        skip_channels: channels of the skip connections and of the output head.
        num_levels: size of the softmax (256 for 8-bit mu-law).
        num_classes: number of global-condition ids ``y``; None for an unconditional model.
    """

    def __init__(self, layers: int = 8, stacks: int = 1, channels: int = 32,
                 gate_channels: int | None = None, skip_channels: int = 64,
                 num_levels: int = NUM_LEVELS, num_classes: int | None = None):
        super().__init__()
        layers, stacks = as_int(layers, "layers"), as_int(stacks, "stacks")
        channels = as_int(channels, "channels")
        skip_channels = as_int(skip_channels, "skip_channels")
        gate_channels = (channels if gate_channels is None
                         else as_int(gate_channels, "gate_channels"))
        num_levels = as_int(num_levels, "num_levels", minimum=2)
        num_classes = None if num_classes is None else as_int(num_classes, "num_classes")
        # Every block pads its input by its dilation, so even one step of one sequence holds
        # [channels, 1 + 2^(layers-1)] values: refuse a receptive field no machine can run
        # before building anything (a convolution of dilation 2^35 is accepted by torch).
        what = (f"layers={layers}: the largest dilation 2**{layers - 1} pads every block's "
                f"input to [channels, T + 2**{layers - 1}], {channels} x (1 + 2**{layers - 1}) "
                f"values for one sequence of T = 1")
        if layers > 64:  # beyond any memory; spare the message a number of hundreds of digits
            raise ValueError(f"{what}, more than any machine's memory")
        check_memory(channels * (1 + 2 ** (layers - 1)) + 2 * gate_channels,
                     torch.get_default_dtype(), what)
        check_depth(layers * stacks, f"layers={layers}, stacks={stacks}", "blocks",
                    2.5e-4 * layers * stacks, 9_500 * layers * stacks)
        # the weights themselves (a dilated convolution to 2 x gate channels, 1x1 maps to the
        # residual and skip paths, class embeddings), before torch is asked for them
        per_block = gate_channels * (4 * channels + channels + skip_channels
                                     + 2 * (num_classes or 0))
        weights = (layers * stacks * per_block + num_levels * channels
                   + skip_channels * (skip_channels + num_levels))
        check_memory(weights, torch.get_default_dtype(),
                     f"channels={channels}, gate_channels={gate_channels}, skip_channels="
                     f"{skip_channels}, layers={layers}, stacks={stacks}: about {weights:,} "
                     f"weights")
        self.num_levels = num_levels
        self.num_classes = num_classes
        self.channels = channels
        self.embed = nn.Embedding(num_levels, channels)
        self.blocks = nn.ModuleList(
            ResidualBlock(channels, gate_channels, skip_channels, 2**i, num_classes)
            for _ in range(stacks) for i in range(layers)
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(skip_channels, skip_channels), nn.ReLU(),
                                  nn.Linear(skip_channels, num_levels))

    @property
    def receptive_field(self) -> int:
        """Number of past samples that the prediction of ``x_t`` depends on."""
        return 1 + sum(block.dilation for block in self.blocks)

    def _check(self, x: torch.Tensor, y: torch.Tensor | None, fast: bool = False) -> None:
        """Type, shape, the memory of the run (the network's forward pass, or the fast
        sampler's queues when ``fast``), then the values of ``x`` and ``y``."""
        if not torch.is_tensor(x) or x.dtype != torch.long:
            raise TypeError(f"x must be an int64 tensor of levels, got "
                            f"{getattr(x, 'dtype', type(x))}")
        if x.dim() != 2 or x.shape[1] < 1:
            raise ValueError(f"x must have shape [batch, T] with T >= 1, got {list(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"x has no datapoints (shape {list(x.shape)})")
        check_has_values(x, "x")
        what = f"x of shape {list(x.shape)}"
        if fast:
            self._check_run_memory(x.shape[0], x.shape[1], True, what)
        else:
            self._check_forward_memory(x.shape[0], x.shape[1], what)
        # The levels index the embedding: out of range they fail as a bare IndexError (a
        # device-side assert on CUDA), so they are checked whatever Pyro's validation says,
        # with one min/max (one host read).
        low, high = _range(x)
        if low < 0 or high >= self.num_levels:
            raise ValueError(f"x must hold levels in 0..{self.num_levels - 1}, got range "
                             f"[{low}, {high}]")
        self._check_condition(y, x.shape[0])

    def _check_condition(self, y: torch.Tensor | None, batch: int) -> None:
        if self.num_classes is None:
            if y is not None:
                raise ValueError("this WaveNet is unconditional; pass y=None")
            return
        if not torch.is_tensor(y) or y.dtype != torch.long or y.shape != (batch,):
            raise ValueError(f"y must be an int64 tensor [batch] = [{batch}] of class ids, got "
                             f"{getattr(y, 'dtype', type(y))} {list(getattr(y, 'shape', []))}")
        check_has_values(y, "y")
        low, high = _range(y)  # indices of the class embeddings: checked always, as x
        if batch and (low < 0 or high >= self.num_classes):
            raise ValueError(f"y must hold class ids in 0..{self.num_classes - 1}, got range "
                             f"[{low}, {high}]")

    def logits_from_embedding(self, e: torch.Tensor, y: torch.Tensor | None = None
                              ) -> torch.Tensor:
        """Network on embedded samples ``e: [batch, channels, T]`` (``e[..., t]`` = embedding
        of ``x_t``, ``T >= 1``, the dtype and device of the model's parameters) and the class
        ids ``y: [batch]`` of a conditional model -> ``[batch, T, num_levels]``, entry ``t``
        depending on ``e[..., :t]`` only. ``TypeError``/``ValueError`` naming ``e`` or ``y``
        otherwise (``y=None`` on a conditional model failed inside torch's embedding)."""
        if not torch.is_tensor(e) or not e.is_floating_point():
            raise TypeError(f"e must be a floating-point tensor [batch, {self.channels}, T] of "
                            f"embedded levels, got {getattr(e, 'dtype', type(e).__name__)}")
        if e.dim() != 3 or e.shape[1] != self.channels or e.shape[2] < 1:
            raise ValueError(f"e must have shape [batch, {self.channels}, T] with T >= 1, got "
                             f"{list(e.shape)}")
        check_has_values(e, "e")
        check_like(e, "e", self)
        self._check_condition(y, e.shape[0])
        return self._logits_from_embedding(e, y)

    def _logits_from_embedding(self, e: torch.Tensor, y: torch.Tensor | None = None
                               ) -> torch.Tensor:
        """:meth:`logits_from_embedding` without the checks: ``[batch, channels, T]`` ->
        ``[batch, T, num_levels]``."""
        h = F.pad(e, (1, 0))[:, :, :-1]  # [batch, channels, T], position t holds x_{t-1}
        skip = 0
        for block in self.blocks:
            h, s = block(h, block.condition(y))
            skip = skip + s  # [batch, skip_channels, T]
        return full_precision(self.head(skip.transpose(1, 2)))  # [batch, T, num_levels]

    def logits(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Levels ``x: [batch, T]`` -> ``[batch, T, num_levels]``, logits of ``x_t | x_{<t}, y``.

        ``x`` (levels in ``0..num_levels - 1``) and ``y`` (class ids) are range-checked on
        every call, whatever Pyro's validation flag (they index embeddings: out of range they
        fail as a bare ``IndexError``, a device-side assert on CUDA), after a run whose widest
        layer exceeds physical memory is refused (``ValueError`` naming the shape)."""
        self._check(x, y)
        return self._logits_from_embedding(self.embed(x).transpose(1, 2), y)

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(x | y)`` in nats per sequence: ``x: [batch, T]`` -> ``[batch]``;
        ``FloatingPointError`` naming the rows whose score is NaN or ``+inf`` (NaN weights, an
        overflow); ``-inf`` (a sequence of probability zero) is returned."""
        log_p = self.logits(x, y).log_softmax(-1)  # [batch, T, num_levels]
        log_p = log_p.gather(-1, x[..., None]).squeeze(-1).sum(-1)
        check_finite_rows(log_p.detach(), f"{type(self).__name__}.log_prob",
                          "the log-probabilities from the network's logits",
                          log_probability=True)
        return log_p

    @pyro_method
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """``x: [batch, T]`` levels observed step by step inside ``pyro.plate("data", batch)``,
        given the labels ``y: [batch]`` of a conditional model (no latent sites)."""
        logits = self.logits(x, y)  # [batch, T, num_levels]
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Categorical(logits=logits).to_event(1), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Empty: with no latent variables the ELBO is ``log p(x | y)`` itself."""

    def _run_naive(self, batch: int, num_steps: int, y: torch.Tensor | None,
                   choose: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Rerun the whole network on the last ``R`` samples each step; ``choose(t, logits:
        [batch, num_levels]) -> x_t: [batch]``. Returns ``x: [batch, num_steps]``."""
        x = torch.zeros(batch, num_steps, dtype=torch.long, device=self.embed.weight.device)
        field = self.receptive_field
        for t in range(num_steps):
            window = x[:, max(0, t - field):t + 1]  # x_t itself is a placeholder: causality
            logits = self._logits_from_embedding(self.embed(window).transpose(1, 2), y)
            x[:, t] = choose(t, logits[:, -1])
        return x

    def _run_cached(self, batch: int, num_steps: int, y: torch.Tensor | None,
                    choose: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The fast algorithm [2]: per block a circular queue ``[dilation, batch, channels]``
        of its last inputs, zeros before time 0. Same contract as :meth:`_run_naive`."""
        embed, blocks, head = self.embed, list(self.blocks), self.head
        like = embed.weight  # device and dtype of the activations
        conds = [block.condition(y) for block in blocks]
        queues = [like.new_zeros(b.dilation, batch, self.channels) for b in blocks]
        x = torch.zeros(batch, num_steps, dtype=torch.long, device=like.device)
        e = like.new_zeros(batch, self.channels)  # input at t = 0: silence
        for t in range(num_steps):
            h, skip = e, 0
            for block, queue, cond in zip(blocks, queues, conds):
                slot = t % block.dilation  # holds h_{t-d}; replaced by h_t after use
                h_next, s = block.step(queue[slot], h, cond)
                queue[slot] = h
                h, skip = h_next, skip + s  # [batch, channels], [batch, skip_channels]
            x[:, t] = choose(t, head(skip))
            e = embed(x[:, t])  # [batch, channels]
        return x

    def _check_forward_memory(self, batch: int, num_steps: int, what: str) -> None:
        """``ValueError`` naming ``what`` when the network's forward pass on ``[batch,
        num_steps]`` levels would hold more bytes than physical memory: per sequence (a lower
        bound) the widest block's input padded by its dilation and its convolution
        ``channels (T + d) + 2 gate T``, or the head's skip sum and logits."""
        blocks = list(self.blocks)
        gate2 = blocks[0].conv.out_channels  # 2 * gate_channels
        dilation = max(b.dilation for b in blocks)
        per_sequence = max(self.channels * (num_steps + dilation) + gate2 * num_steps,
                           (blocks[0].sizes[1] + self.num_levels) * num_steps)
        check_memory(batch * per_sequence, self.embed.weight.dtype,
                     f"{what}: the network's widest layer, {per_sequence:,} values per "
                     f"sequence")

    def _check_run_memory(self, batch: int, num_steps: int, cached: bool, what: str) -> None:
        """``ValueError`` naming ``what`` (the arguments that set ``batch`` and ``num_steps``)
        when a run would hold more bytes than physical memory (:func:`check_bytes`).

        Counted (a lower bound): the int64 levels ``[batch, num_steps]`` and, per sequence,
        for :meth:`_run_cached` every block's queue ``[dilation, channels]``, the blocks'
        class biases and a step's logits and noise ``[2, num_levels]``; for
        :meth:`_run_naive` the widest layer on the window of ``min(num_steps, R + 1)``
        samples (a block's input, padded by its dilation, and convolution, or the head's skip
        sum and logits).
        """
        blocks = list(self.blocks)
        gate2 = blocks[0].conv.out_channels  # 2 * gate_channels
        if cached:
            per_sequence = sum(b.dilation for b in blocks) * self.channels + 2 * self.num_levels
            if self.num_classes is not None:
                per_sequence += gate2 * len(blocks)
            held = "the fast sampler's queues of every block's last inputs"
        else:
            window = min(num_steps, self.receptive_field + 1)
            dilation = max(b.dilation for b in blocks)  # a block pads its input by it
            per_sequence = max(self.channels * (window + dilation) + gate2 * window,
                               (blocks[0].sizes[1] + self.num_levels) * window)
            held = "the network's widest layer on the receptive field"
        itemsize = self.embed.weight.dtype.itemsize
        check_bytes(batch * (num_steps * torch.long.itemsize + per_sequence * itemsize),
                    f"{what}: the levels [{batch}, {num_steps}] with {held}, "
                    f"{per_sequence:,} values per sequence")

    @torch.no_grad()
    def cached_logits(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """What the fast sampler computes, teacher-forced on ``x: [batch, T]``:
        ``[batch, T, num_levels]``, equal to :meth:`logits` up to float rounding: what to
        compare with :meth:`logits` when the fast sampler is in doubt (the tests do)."""
        self._check(x, y, fast=True)
        steps = []

        def teacher(t, logits):
            steps.append(logits)
            return x[:, t]

        self._run_cached(x.shape[0], x.shape[1], y, teacher)
        return torch.stack(steps, 1)

    @torch.no_grad()
    def generate(self, num_samples: int, *, batch_size: int | None = None,
                 y: torch.Tensor | None = None, seed: int = 0, method: str = "fast",
                 generator: torch.Generator | None = None, progress: bool = True
                 ) -> torch.Tensor:
        """Draw ``[batch_size, num_samples]`` int64 levels from the model.

        Args:
            num_samples: time steps per sequence, a positive integer.
            batch_size: sequences to draw, a positive integer (default: ``len(y)`` when
                conditioned, else 1); the ``[batch_size, num_samples]`` levels and what the
                method holds beside them (the fast sampler's queues, ``[2^i, channels]`` per
                block, per sequence) must fit in memory (``ValueError`` naming both
                counts before any work).
            y: class ids ``[batch_size]`` for a conditional model.
            seed: seeds the :class:`torch.Generator` of the Gumbel noise, an integer in
                ``[0, 2**63)``; ``"naive"`` and ``"fast"`` with the same seed give the same
                samples.
            method: ``"fast"`` (cached queues [2], O(layers) per step) or ``"naive"``
                (the full network on the receptive field every step).
            generator: source of the Gumbel noise instead of ``seed``, a
                :class:`torch.Generator` on the model's device.
            progress: show a bar of the time steps drawn once the call has run for a second
                (True or False; ``TypeError`` naming it otherwise).

        Raises:
            FloatingPointError: the network's logits at a step are NaN or infinite (NaN
                weights, an overflow), naming the first such step and its rows; on the CPU
                at that step, on an accelerator once after the run. No levels are returned.
        """
        check_module_not_meta(self, "WaveNet.generate")
        runs = {"fast": self._run_cached, "naive": self._run_naive}
        if not isinstance(method, str) or method not in runs:
            raise ValueError(f"method must be 'fast' or 'naive', got {method!r}")
        num_samples = as_int(num_samples, "num_samples")
        progress = as_bool(progress, "progress")
        if batch_size is not None:
            batch = as_int(batch_size, "batch_size")
        elif y is None:
            batch = 1
        elif torch.is_tensor(y) and y.dim() == 1:
            batch = y.shape[0]
        else:
            raise ValueError(f"y must be an int64 tensor [batch_size] of class ids, got "
                             f"{getattr(y, 'dtype', type(y))} {list(getattr(y, 'shape', []))}")
        self._check_condition(y, batch)
        seed = as_seed(seed)
        device = self.embed.weight.device
        check_generator(generator, device)
        self._check_run_memory(batch, num_samples, method == "fast",
                               f"num_samples={num_samples}, batch_size={batch}")
        if generator is None:
            generator = torch.Generator(device).manual_seed(seed)
        # the argmax of _gumbel_max would turn NaN logits into level 0, silently
        guard = NonFiniteGuard(f"{type(self).__name__}.generate(method={method!r})", device,
                               lambda t: f"time step {t}")

        with sampling_bar(num_samples, f"WaveNet.generate({method})", progress) as bar:
            def choose(t: int, logits: torch.Tensor) -> torch.Tensor:
                # -inf logits are levels of probability zero; NaN, +inf or no level left are not
                guard.update(t, torch.isnan(logits).any(-1) | torch.isposinf(logits).any(-1)
                             | torch.isneginf(logits.amax(-1)))
                bar.update()
                return _gumbel_max(logits, generator)

            x = runs[method](batch, num_samples, y, choose)
        guard.finish()
        return x
