"""PixelCNN: an exact autoregressive likelihood for images built from masked convolutions.

An image ``x: [C, H, W]`` is factorized in raster order, pixel by pixel and channel by channel
inside a pixel ([1] eq. 1-2)::

    log p(x | y, h) = sum_{i, c} log p(x_{c,i} | x_{<i}, x_{<c,i}, y, h)

where each conditional is a pixel likelihood of :mod:`ppl_models.likelihoods` (Bernoulli,
256-way softmax, or discretized logistic mixture) whose parameters come from a stack of
masked convolutions (:mod:`ppl_models.layers`): one mask-"A" ``k0 x k0`` convolution, gated
residual blocks with mask-"B" ``k x k`` convolutions ([2] eq. 2), and a 1x1 head. ``y`` is an
optional class id and ``h: [batch, cond_dim]`` an optional conditioning vector (e.g. the
latent of a VAE whose decoder this is), both entering every block as a per-image bias
([2] eq. 4). The network has the "blind spot" of plain masked convolutions ([2] Section 2.2):
some pixels above-right of the current one are out of reach; this costs some likelihood and
changes nothing about exactness or normalization.

Sampling draws each ``x_{c,i}`` by the Gumbel-max trick [4] over its levels (2 for binary
pixels, 256 otherwise), ``argmax(log P(k) + g_k)``, ``g = -log(-log u)``, ``u ~ U(0, 1)``
from a seeded :class:`torch.Generator`, one draw of ``u`` per (pixel, channel) in raster
order. :meth:`PixelCNN.sample` reruns the whole network for every draw (``C H W`` forward
passes). :meth:`PixelCNN.sample_fast` uses that a masked layer's activation at position
``q`` depends only on the inputs before ``q`` (and on earlier channels of ``q``), so it is
final once those are drawn: it keeps every layer's input in a zero-padded cache and, per draw,
computes only position ``q`` of each layer, one kernel-window dot product (``k (k//2 + 1)``
taps) per layer, about one forward pass in total [3]. Both consume the same ``u`` in the same
order, so they return the same images; their parameters agree up to float rounding (about
1e-6), which could change a draw only if it fell that close to a tie.

References:
    [1] van den Oord, Kalchbrenner, Kavukcuoglu (2016), Pixel Recurrent Neural Networks, ICML.
    [2] van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves, Kavukcuoglu (2016),
        Conditional Image Generation with PixelCNN Decoders, NeurIPS.
    [3] Ramachandran, Paine, Khorrami, Babaeizadeh, Chang, Zhang, Hasegawa-Johnson, Campbell,
        Huang (2017), Fast Generation for Convolutional Autoregressive Models, ICLR workshop.
    [4] Maddison, Tarlow, Minka (2014), A* Sampling, NeurIPS (the Gumbel-max trick).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import pyro
import torch
from pyro.infer.util import is_validation_enabled
from pyro.nn import PyroModule, pyro_method
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .checks import (NonFiniteGuard, as_bool, as_int, as_number, as_seed, as_sizes,
                     check_depth, check_generator, check_finite_parameters, check_like,
                     check_memory, check_module_not_meta, check_has_values, check_values,
                     sampling_bar)
from .layers import GatedResidualBlock, MaskedConv2d
from .likelihoods import LEVELS, make_likelihood
from .networks import check_parameters, full_precision

__all__ = ["PixelCNN"]

# A chooser gets the pixel (c, i, j) and the likelihood parameters [batch, P] of x_{c,i,j}
# (None where the network was skipped) and returns its values [batch] on the data scale.
Chooser = Callable[[int, int, int, torch.Tensor], torch.Tensor]


def _in_eval_mode(method):
    """Run a method of a module without gradients in evaluation mode (no dropout), then
    restore each submodule's training flag."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        flags = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            with torch.no_grad():
                return method(self, *args, **kwargs)
        finally:
            for m, flag in flags:
                m.training = flag

    return wrapper


def default_depth(image_shape: Sequence[int], num_blocks: int | None = None,
                  first_kernel_size: int | None = None) -> tuple[int, int]:
    """``(num_blocks, first_kernel_size)`` for images of ``image_shape``, the given ones kept.

    Each 3x3 block lets a pixel see one more row up, so the depth grows with the image: 4
    blocks after a 5x5 layer (6 rows) for images up to 16 pixels high such as the 8x8 digits,
    8 blocks after a 7x7 layer (11 rows) for larger ones such as 28x28 Fashion-MNIST, where 4
    blocks trailed the VAE and 8 beat it (docs/pixelcnn.md). The examples fill their unset
    options with it.
    """
    blocks, kernel = (4, 5) if image_shape[-2] <= 16 else (8, 7)
    return (blocks if num_blocks is None else num_blocks,
            kernel if first_kernel_size is None else first_kernel_size)


class PixelCNN(PyroModule):
    """PixelCNN [1, 2] as a fully observed Pyro model with an empty guide.

    ``model(x, y, h)`` scores ``x: [batch, C, H, W]`` (data convention of the likelihood:
    binary {0, 1} for ``"bernoulli"``, levels ``k / 255`` otherwise), so
    ``inference.fit(m.model, m.guide, x)`` is maximum likelihood and ``inference.elbo``
    equals :meth:`log_prob`.

    Args:
        image_shape: ``(C, H, W)``.
        likelihood: ``"bernoulli"``, ``"categorical256"`` or ``"logistic-mixture"``.
        channels: residual channels (a multiple of ``C``).
        num_blocks: gated residual blocks, at most ``checks.MAX_DEPTH`` (1024; more is refused
            before building, ``ValueError``: each block costs time and memory the weight
            count does not see).
        kernel_size: odd kernel of the blocks' masked convolutions.
        first_kernel_size: odd kernel of the first (mask "A") convolution.
        num_classes: class ids ``y`` for p(x | y); None for an unconditional model.
        cond_dim: size of a conditioning vector ``h: [batch, cond_dim]``; None for none.
        num_mixtures: components of the logistic mixture (None: 5); refused with another
            likelihood, which takes none (it was ignored).
        dropout: dropout on the gated activations of every block in training mode (a
            regularizer for small data sets); :meth:`log_prob` is exact only in evaluation
            mode (``m.eval()``), and the samplers switch to it themselves.
    """

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), likelihood: str = "bernoulli",
                 channels: int = 64, num_blocks: int = 5, kernel_size: int = 3,
                 first_kernel_size: int = 7, num_classes: int | None = None,
                 cond_dim: int | None = None, num_mixtures: int | None = None,
                 dropout: float = 0.0):
        super().__init__()
        self.image_shape = as_sizes(image_shape, "image_shape", 3, "(C, H, W)")
        if likelihood not in ("bernoulli", "categorical256", "logistic-mixture"):
            raise ValueError(f"likelihood must be 'bernoulli', 'categorical256' or "
                             f"'logistic-mixture', got {likelihood!r}")
        channels = as_int(channels, "channels")
        if channels % self.image_shape[0]:
            # each residual channel belongs to one data channel (the masks' groups)
            raise ValueError(f"channels must be a multiple of the images' "
                             f"{self.image_shape[0]} channels (image_shape="
                             f"{self.image_shape}), got {channels}")
        num_blocks = as_int(num_blocks, "num_blocks", minimum=0)
        check_depth(num_blocks, f"num_blocks={num_blocks}", "blocks", 7e-4 * num_blocks,
                    19_000 * num_blocks)
        for name, size in (("kernel_size", kernel_size), ("first_kernel_size", first_kernel_size)):
            if as_int(size, name) % 2 == 0:
                raise ValueError(f"{name} must be odd, got {size}")
        num_classes = None if num_classes is None else as_int(num_classes, "num_classes")
        cond_dim = None if cond_dim is None else as_int(cond_dim, "cond_dim")
        as_number(dropout, "dropout", 0, 1, high_open=True)
        if num_mixtures is not None and likelihood != "logistic-mixture":
            raise ValueError(f"num_mixtures={num_mixtures!r} is for the logistic-mixture "
                             f"likelihood; the {likelihood} likelihood takes no mixture: leave "
                             "num_mixtures unset")
        options = ({"num_mixtures": 5 if num_mixtures is None else num_mixtures}
                   if likelihood == "logistic-mixture" else {})
        self.likelihood = make_likelihood(likelihood, **options)
        self.num_classes = num_classes
        self.cond_dim = cond_dim
        C = self.image_shape[0]
        P = self.likelihood.params_per_pixel
        # the weights (masked convolutions twice: weight and mask), counted before torch is
        # asked for them: first layer, blocks (k x k to 2 channels, 1 x 1 back, the biases'
        # embedding and linear map), head (1 x 1, then to P C outputs)
        k1, k = first_kernel_size, kernel_size
        per_block = (4 * channels**2 * k * k + 2 * channels + 2 * channels**2 + channels
                     + ((num_classes or 0) + (cond_dim or 0)) * 2 * channels)
        weights = (2 * C * channels * k1 * k1 + channels + num_blocks * per_block
                   + 2 * channels**2 + channels + 2 * channels * P * C + P * C)
        check_parameters(weights, f"channels={channels}, num_blocks={num_blocks}, kernel_size="
                                  f"{kernel_size}, first_kernel_size={first_kernel_size}: the "
                                  f"PixelCNN's weights and masks")
        self.first = MaskedConv2d(C, channels, first_kernel_size, "A", C)
        self.blocks = nn.ModuleList(
            GatedResidualBlock(channels, kernel_size, C, num_classes, cond_dim, dropout)
            for _ in range(num_blocks))
        # channel k of the last layer is parameter k // C of data channel k % C: [P, C]
        self.head = nn.ModuleList([MaskedConv2d(channels, channels, 1, "B", C),
                                   MaskedConv2d(channels, P * C, 1, "B", C)])
        binary = likelihood == "bernoulli"
        self.register_buffer("levels", torch.arange(2.0) if binary
                             else torch.arange(float(LEVELS)) / (LEVELS - 1), persistent=False)

    # ----------------------------------------------------------------------------- checks
    def check_x(self, x: torch.Tensor, name: str = "x") -> None:
        """``x: [batch, C, H, W]`` floating (``ValueError``); with Pyro's validation on (it
        reads the data), of the parameters' dtype and device (``TypeError``) and in the
        likelihood's support."""
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor [batch, "
                             f"{', '.join(map(str, self.image_shape))}], got "
                             f"{getattr(x, 'dtype', type(x).__name__)}")
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"{name} must have shape [batch, "
                             f"{', '.join(map(str, self.image_shape))}], got {list(x.shape)}")
        check_has_values(x, name)
        check_like(x, name, self)
        if is_validation_enabled() and x.numel():
            self.likelihood.check(x)

    def _check_condition(self, y: torch.Tensor | None, h: torch.Tensor | None,
                         batch: int) -> None:
        if self.num_classes is None:
            if y is not None:
                raise ValueError("this PixelCNN has no classes (num_classes=None); pass y=None")
        else:
            if not torch.is_tensor(y) or y.dtype != torch.long or tuple(y.shape) != (batch,):
                raise ValueError(f"y must be an int64 tensor [batch] = [{batch}] of class ids, "
                                 f"got {getattr(y, 'dtype', type(y).__name__)} "
                                 f"{list(getattr(y, 'shape', []))}")
            check_has_values(y, "y")
            if batch and (y.min() < 0 or y.max() >= self.num_classes):
                raise ValueError(f"y must hold class ids in 0..{self.num_classes - 1}, got "
                                 f"range [{int(y.min())}, {int(y.max())}]")
        if self.cond_dim is None:
            if h is not None:
                raise ValueError("this PixelCNN takes no conditioning vector (cond_dim=None); "
                                 "pass h=None")
        elif (not torch.is_tensor(h) or not h.is_floating_point() or h.dim() < 2
              or tuple(h.shape[-2:]) != (batch, self.cond_dim)):
            raise ValueError(f"h must be a float tensor [..., batch, cond_dim] = [..., {batch}, "
                             f"{self.cond_dim}], got {getattr(h, 'dtype', type(h).__name__)} "
                             f"{list(getattr(h, 'shape', []))}")
        else:
            check_like(h, "h", self)
            # NaN/inf in h made every pixel's logits NaN: torch's refusal of the logits (with
            # validation on) or a NaN log-probability row (off), naming neither h nor a row
            check_values(h, "h")

    # ---------------------------------------------------------------------------- network
    def _network(self, x: torch.Tensor, y: torch.Tensor | None, h: torch.Tensor | None
                 ) -> torch.Tensor:
        """Unchecked: ``x: [n, C, H, W]``, ``y: [n]``, ``h: [n, cond_dim]``
        -> ``[n, P, C, H, W]``."""
        a = self.first(2 * x - 1)  # data scaled to [-1, 1]; the zero padding sits mid-range
        for block in self.blocks:
            a = block(a, block.condition(y, h))
        raw = full_precision(self.head[1](F.relu(self.head[0](F.relu(a)))))  # [n, P * C, H, W]
        return raw.unflatten(1, (self.likelihood.params_per_pixel, self.image_shape[0]))

    def pixel_params(self, x: torch.Tensor, y: torch.Tensor | None = None,
                     h: torch.Tensor | None = None) -> torch.Tensor:
        """Likelihood parameters of every ``x_{c,i}`` given what precedes it.

        Args:
            x: ``[batch, C, H, W]``, of the parameters' dtype and device (named otherwise).
            y: ``[batch]`` int64 class ids (conditional models only).
            h: ``[*lead, batch, cond_dim]`` conditioning vectors, of the parameters' dtype and
                device; leading dims (e.g. VAE particles) broadcast over ``x``.

        Returns:
            ``[*lead, batch, P, C, H, W]``; entry ``[..., c, i, j]`` depends on ``x`` only
            through pixels before ``(i, j)`` in raster order and channels ``< c`` of ``(i, j)``.
        """
        self.check_x(x)
        batch = x.shape[0]
        self._check_condition(y, h, batch)
        lead = () if h is None else tuple(h.shape[:-2])
        if not lead:
            return self._network(x, y, h)
        n = math.prod(lead)
        x_all = x.expand(*lead, *x.shape).reshape(n * batch, *self.image_shape)
        y_all = None if y is None else y.expand(*lead, batch).reshape(-1)
        raw = self._network(x_all, y_all, h.reshape(n * batch, -1))
        return raw.reshape(*lead, batch, *raw.shape[1:])

    def distribution(self, x: torch.Tensor, y: torch.Tensor | None = None,
                     h: torch.Tensor | None = None):
        """The pixel distributions given their predecessors: batch shape ``[*lead, batch, C, H,
        W]`` (see :meth:`pixel_params`); ``.log_prob(x)`` scores each pixel, wrap it in
        ``.to_event(3)`` to score images."""
        return self.likelihood.distribution(self.pixel_params(x, y, h))

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None,
                 h: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(x | y, h)`` in nats per image: ``x: [batch, C, H, W]`` -> ``[*lead, batch]``.

        ``FloatingPointError`` naming the parameters that hold NaN or infinite values (a
        diverged fit) before anything is computed."""
        check_finite_parameters(dict(self.named_parameters()), "PixelCNN.log_prob")
        return self.distribution(x, y, h).log_prob(x).sum((-3, -2, -1))

    @pyro_method
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None,
              h: torch.Tensor | None = None) -> None:
        """``x: [batch, C, H, W]`` observed pixel by pixel inside ``pyro.plate("data", batch)``,
        given the class ids ``y: [batch]`` or the vectors ``h: [batch, cond_dim]`` of a conditional
        model (no latent sites)."""
        if torch.is_tensor(x) and x.dim() and x.shape[0] == 0:  # the rest in distribution
            raise ValueError(f"x has no datapoints (shape {list(x.shape)})")
        d = self.distribution(x, y, h)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", d.to_event(3), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None,
              h: torch.Tensor | None = None) -> None:
        """Empty: with no latent variables the ELBO is ``log p(x | y, h)`` itself."""

    # --------------------------------------------------------------------------- sampling
    def _level_log_probs(self, raw: torch.Tensor) -> torch.Tensor:
        """Parameters ``raw: [batch, P]`` of one pixel -> ``log P(level)``: ``[batch, K]``."""
        # closed forms of BernoulliPixel and Categorical256, without building a distribution
        if self.likelihood.name == "bernoulli":
            return F.logsigmoid(torch.cat([-raw, raw], 1))  # [batch, 2]: P(0), P(1)
        if self.likelihood.name == "categorical256":
            return raw.log_softmax(1)
        d = self.likelihood.distribution(raw[:, :, None], pixel_ndim=1)  # batch shape [batch, 1]
        return d.log_prob(self.levels[:, None, None])[..., 0].T  # [K, batch, 1] -> [batch, K]

    def _run_naive(self, batch: int, y, h, choose: Chooser, skip=None) -> torch.Tensor:
        """The whole network for every draw; ``skip(c, i, j)`` says the network is not needed
        there (every image has that value given). Returns ``x: [batch, C, H, W]``."""
        C, H, W = self.image_shape
        x = self.levels.new_zeros(batch, C, H, W)
        raw = None
        for i in range(H):
            for j in range(W):
                for c in range(C):
                    if skip is None or not skip(c, i, j):
                        raw = self._network(x, y, h)[:, :, c, i, j]  # [batch, P]
                    x[:, c, i, j] = choose(c, i, j, raw)
                    raw = None
        return x

    def _run_cached(self, batch: int, y, h, choose: Chooser) -> torch.Tensor:
        """Fast generation: caches of every layer's padded input, one position per layer per
        draw (module docstring). Same contract as :meth:`_run_naive`."""
        C, H, W = self.image_shape
        first, blocks = self.first, list(self.blocks)
        new = self.levels.new_zeros
        x = new(batch, C, H, W)
        image = first.pad(new(batch, C, H, W))  # scaled data 2x - 1, zero-padded
        caches = [block.conv.pad(new(batch, first.out_channels, H, W)) for block in blocks]
        pads = [block.conv.half for block in blocks]
        biases = [block.condition(y, h) for block in blocks]
        weights = [(block.conv.flat_weight(), block.out.flat_weight()) for block in blocks]
        first_w = first.flat_weight()
        head_w = [(layer.flat_weight(), layer.bias) for layer in self.head]
        p0 = first.half
        for i in range(H):
            for j in range(W):
                for c in range(C):
                    a = first.at(image, i, j, first_w)  # [batch, channels]
                    for block, cache, p, bias, w in zip(blocks, caches, pads, biases, weights):
                        cache[:, :, i + p, j + p] = a
                        a = block.at(cache, i, j, bias, w)
                    for weight, b in head_w:
                        a = F.linear(F.relu(a), weight, b)
                    raw = a.unflatten(1, (-1, C))[:, :, c]  # [batch, P]
                    value = choose(c, i, j, raw)
                    x[:, c, i, j] = value
                    image[:, c, i + p0, j + p0] = 2 * value - 1
        return x

    def _check_run_memory(self, batch: int, cached: bool, what: str) -> None:
        """``ValueError`` naming ``what`` (the argument that sets ``batch``) when a run of
        ``batch`` images would hold more values than physical memory (:func:`check_memory`).

        Counted, per image, what a run holds at once (a lower bound): the images ``[C, H,
        W]`` and, for :meth:`_run_cached`, the zero-padded input of the first layer
        ``[C, H + p, W + 2p]``, every block's input cache ``[channels, H + p, W + 2p]``, the
        blocks' biases ``[2 channels]`` of a conditional model and the widest kernel window;
        for :meth:`_run_naive`, the input and output channels of a forward pass's widest
        layer at every pixel.
        """
        C, H, W = self.image_shape
        first, blocks = self.first, list(self.blocks)
        channels = first.out_channels
        if cached:
            convs = [first] + [block.conv for block in blocks]
            per_image = C * H * W + sum(
                conv.in_channels * (H + conv.half) * (W + 2 * conv.half) for conv in convs)
            per_image += max(conv.in_channels * (conv.half + 1) * conv.kernel_size[0]
                             for conv in convs)
            if self.num_classes is not None or self.cond_dim is not None:
                per_image += 2 * channels * len(blocks)
            held = "the padded caches of every layer's input"
        else:
            # first layer, a block (its input, the convolution's 2 channels per channel),
            # head: input and output channels
            widths = [C + channels, channels + self.head[1].out_channels]
            if blocks:
                widths.append(3 * channels)
            per_image = (C + max(widths)) * H * W
            held = "the network's widest layer"
        check_memory(batch * per_image, self.levels.dtype,
                     f"{what}: the images [{batch}, {', '.join(map(str, self.image_shape))}] "
                     f"with {held}, {per_image:,} values per image")

    def _sampler(self, num: int, y, h, generator, seed, given, mask, cached: bool, bar: tqdm
                 ) -> tuple[Chooser, Callable[[int, int, int], bool] | None, NonFiniteGuard]:
        """Check the arguments (for :meth:`_run_cached` when ``cached``, else
        :meth:`_run_naive`); the Gumbel-max chooser that keeps ``given`` where ``mask`` and
        advances ``bar`` by one per pixel and channel, and the guard that refuses non-finite
        network outputs at the drawn pixels (call its ``finish()`` before returning the
        images)."""
        check_module_not_meta(self, "PixelCNN.sample_fast" if cached else "PixelCNN.sample")
        num, seed = as_int(num, "num"), as_seed(seed)
        device = self.levels.device
        check_generator(generator, device)
        self._check_run_memory(num, cached, f"num={num}")
        self._check_condition(y, h, num)
        if h is not None and h.dim() != 2:
            raise ValueError(f"sampling takes h: [num, cond_dim], got {list(h.shape)}")
        if generator is None:
            generator = torch.Generator(device).manual_seed(seed)
        if (given is None) != (mask is None):
            raise ValueError("completion needs both given: [num, C, H, W] and mask (True where "
                             "a pixel is given)")
        if given is not None:
            self.check_x(given, "given")
            if given.shape[0] != num:
                raise ValueError(f"given must hold num={num} images, got {given.shape[0]}")
            if not torch.is_tensor(mask) or mask.dtype != torch.bool:
                raise ValueError(f"mask must be a bool tensor, got "
                                 f"{getattr(mask, 'dtype', type(mask).__name__)}")
            try:
                mask = mask.expand(given.shape)
            except RuntimeError:
                raise ValueError(f"mask of shape {list(mask.shape)} does not broadcast to given "
                                 f"{list(given.shape)}") from None
        levels = self.levels
        C, _, W = self.image_shape

        def describe(step: int) -> str:
            i, rest = divmod(step, W * C)
            j, c = divmod(rest, C)
            return f"pixel (c={c}, i={i}, j={j})"

        # the argmax below would turn NaN log-probabilities into level 0, silently
        guard = NonFiniteGuard(f"{type(self).__name__}.{'sample_fast' if cached else 'sample'}",
                               device, describe)

        def choose(c: int, i: int, j: int, raw: torch.Tensor | None) -> torch.Tensor:
            bar.update()
            u = torch.rand((num, len(levels)), generator=generator, device=device,
                           dtype=torch.float32)  # (the same draws whatever the default dtype)
            if raw is None:  # every value is given: draw anyway so both samplers stay in step
                return given[:, c, i, j]
            # -inf outputs (logits of levels of probability zero) are allowed; NaN and +inf
            # are not, nor a row whose every level has probability zero (below)
            bad = torch.isnan(raw).any(-1) | torch.isposinf(raw).any(-1)  # [num]
            # zeros in their place keep NaN out of the likelihood's (validated) distribution
            log_p = self._level_log_probs(torch.where(bad[:, None], 0.0, raw))  # [num, K]
            bad |= ~torch.isfinite(log_p.amax(-1))
            if given is not None:
                bad &= ~mask[:, c, i, j]  # only the drawn values depend on these outputs
            guard.update((i * W + j) * C + c, bad)
            value = levels[(log_p - torch.log(-torch.log(u))).argmax(-1)]
            return value if given is None else torch.where(mask[:, c, i, j], given[:, c, i, j],
                                                           value)

        skip = None if given is None else (lambda c, i, j: bool(mask[:, c, i, j].all()))
        return choose, skip, guard

    @_in_eval_mode
    def sample(self, num: int, y: torch.Tensor | None = None, h: torch.Tensor | None = None,
               *, generator: torch.Generator | None = None, seed: int = 0,
               given: torch.Tensor | None = None, mask: torch.Tensor | None = None,
               progress: bool = True) -> torch.Tensor:
        """Draw ``[num, C, H, W]`` images pixel by pixel, rerunning the network every draw.

        Args:
            num: a positive integer; ``ValueError`` naming it, before any work, when the
                images and the activations a pass holds beside them exceed physical memory.
            y: ``[num]`` class ids of a class-conditional model.
            h: ``[num, cond_dim]`` conditioning vectors of a vector-conditional model.
            generator: source of the Gumbel noise, a :class:`torch.Generator` on the
                model's device (default: a new one seeded with ``seed``); :meth:`sample_fast`
                with an equally seeded generator draws the same images.
            seed: an integer in ``[0, 2**63)`` (0-d integer tensors accepted), used only
                without ``generator``.
            given, mask: completion: ``given: [num, C, H, W]`` values kept where the bool
                ``mask`` (broadcasting to ``given``) is True; the rest is sampled given them
                (only pixels before a position condition it, so given pixels below are kept
                but do not inform what is drawn above them).
            progress: show a bar of the pixels drawn once the call has run for a second
                (True or False; ``TypeError`` naming it otherwise).

        Raises:
            ValueError: ``h`` holds NaN or infinite values.
            FloatingPointError: the network's outputs at a drawn pixel are NaN or infinite
                (NaN weights, an overflow), naming the first such pixel and its rows; on the
                CPU at that pixel, on an accelerator once after the run (no host
                synchronization per pixel). No images are returned either way.
        """
        progress = as_bool(progress, "progress")
        with sampling_bar(math.prod(self.image_shape), "PixelCNN.sample", progress) as bar:
            choose, skip, guard = self._sampler(num, y, h, generator, seed, given, mask,
                                                cached=False, bar=bar)
            x = self._run_naive(num, y, h, choose, skip)
        guard.finish()
        return x

    @_in_eval_mode
    def sample_fast(self, num: int, y: torch.Tensor | None = None, h: torch.Tensor | None = None,
                    *, generator: torch.Generator | None = None, seed: int = 0,
                    given: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                    progress: bool = True) -> torch.Tensor:
        """:meth:`sample` with cached activations (module docstring): same arguments, same
        images for the same seed, at the cost of about one forward pass. The caches hold
        every layer's input, ``[num, channels, H + p, W + 2p]`` per block: a ``num`` whose
        caches exceed physical memory is refused before any work (``ValueError`` naming it)."""
        progress = as_bool(progress, "progress")
        with sampling_bar(math.prod(self.image_shape), "PixelCNN.sample_fast", progress) as bar:
            choose, _, guard = self._sampler(num, y, h, generator, seed, given, mask,
                                             cached=True, bar=bar)
            x = self._run_cached(num, y, h, choose)
        guard.finish()
        return x

    @_in_eval_mode
    def cached_params(self, x: torch.Tensor, y: torch.Tensor | None = None,
                      h: torch.Tensor | None = None) -> torch.Tensor:
        """What :meth:`sample_fast` computes, teacher-forced on ``x: [batch, C, H, W]``:
        ``[batch, P, C, H, W]``, equal to :meth:`pixel_params` up to float rounding."""
        self.check_x(x)
        self._check_condition(y, h, x.shape[0])
        self._check_run_memory(x.shape[0], True, f"x of {x.shape[0]} images")
        C, H, W = self.image_shape
        out = x.new_zeros(x.shape[0], self.likelihood.params_per_pixel, C, H, W)

        def teacher(c, i, j, raw):
            out[:, :, c, i, j] = raw
            return x[:, c, i, j]

        self._run_cached(x.shape[0], y, h, teacher)
        return out
