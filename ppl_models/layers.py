"""Masked layers for autoregressive image models: masked convolutions and gated residual blocks.

An image ``x: [batch, C, H, W]`` is ordered pixel by pixel in raster order (row by row, left
to right) and, inside a pixel, channel by channel. A masked convolution [1] zeroes the kernel
weights that would read the current or a later position:

* rows above the centre row: all taps kept;
* centre row: taps left of the centre kept, taps right of it zeroed;
* rows below: zeroed;
* the centre tap connects output channel group ``g`` to input channel group ``g'`` only if
  ``g' < g`` (mask ``"A"``, the first layer, which reads the data) or ``g' <= g`` (mask
  ``"B"``, every later layer, whose group-``g`` inputs already exclude data channel ``g``).

Channel ``k`` of a layer with ``data_channels = C`` belongs to group ``k mod C`` (PixelRNN's
R/G/B split [1], laid out interleaved so that ``chunk(2)`` of a gated layer's output and a
``[P, C]`` reshape of the last layer both keep groups aligned). A stack of one "A" layer and
any number of "B" layers therefore gives outputs of group ``c`` at pixel ``i`` that depend
only on pixels before ``i`` and on channels ``< c`` of pixel ``i``.

Every layer can also evaluate a single output position from a zero-padded copy of its input
(:meth:`MaskedConv2d.at`): the fast samplers use this to extend a cache by one position.

References:
    [1] van den Oord, Kalchbrenner, Kavukcuoglu (2016), Pixel Recurrent Neural Networks,
        ICML (masks A and B, Section 3.4 and Figure 4).
    [2] van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves, Kavukcuoglu (2016),
        Conditional Image Generation with PixelCNN Decoders, NeurIPS (gated activation
        ``tanh(W_f * x + V_f h) * sigmoid(W_g * x + V_g h)``, eq. 2-4).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .checks import as_int, as_number, check_memory

__all__ = ["GatedResidualBlock", "MaskedConv2d", "gated_tanh", "raster_mask"]


def raster_mask(out_channels: int, in_channels: int, kernel_size: int, mask_type: str,
                data_channels: int = 1) -> torch.Tensor:
    """The 0/1 mask ``[out_channels, in_channels, k, k]`` of a masked convolution.

    See the module docstring; channel ``k`` belongs to group ``k % data_channels``.
    """
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    out_channels = as_int(out_channels, "out_channels")
    in_channels = as_int(in_channels, "in_channels")
    data_channels = as_int(data_channels, "data_channels")
    if as_int(kernel_size, "kernel_size") % 2 == 0:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    check_memory(out_channels * in_channels * kernel_size**2, torch.get_default_dtype(),
                 f"out_channels={out_channels}, in_channels={in_channels}, kernel_size="
                 f"{kernel_size}: the mask [out_channels, in_channels, k, k]")
    centre = kernel_size // 2
    mask = torch.zeros(out_channels, in_channels, kernel_size, kernel_size)
    mask[:, :, :centre, :] = 1  # rows above
    mask[:, :, centre, :centre] = 1  # left of the centre in the centre row
    out_group = torch.arange(out_channels)[:, None] % data_channels
    in_group = torch.arange(in_channels)[None, :] % data_channels
    allowed = in_group < out_group if mask_type == "A" else in_group <= out_group
    mask[:, :, centre, centre] = allowed.float()
    return mask


class MaskedConv2d(nn.Conv2d):
    """A same-size 2-D convolution whose kernel cannot read the current or later positions.

    Args:
        in_channels, out_channels: channel counts; both multiples of ``data_channels`` (or
            ``in_channels == data_channels`` for the first layer).
        kernel_size: odd ``k``; padding ``k // 2`` keeps ``H x W``.
        mask_type: ``"A"`` (first layer: excludes the current data channel) or ``"B"``.
        data_channels: ``C``, the channels of the modelled image (1 for grey, 3 for RGB).
        bias: whether the convolution adds a learned bias per output channel.

    ``forward(x: [batch, in_channels, H, W]) -> [batch, out_channels, H, W]``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 mask_type: str = "B", data_channels: int = 1, bias: bool = True):
        data_channels = as_int(data_channels, "data_channels")
        for name, n in (("in_channels", in_channels), ("out_channels", out_channels)):
            if as_int(n, name) % data_channels:
                raise ValueError(f"{name} must be a positive multiple of data_channels="
                                 f"{data_channels}, got {n}")
        as_int(kernel_size, "kernel_size")
        # the weight and its mask, counted before torch is asked for either
        check_memory(2 * in_channels * out_channels * kernel_size**2, torch.get_default_dtype(),
                     f"in_channels={in_channels}, out_channels={out_channels}, kernel_size="
                     f"{kernel_size}: the weight and its mask [out_channels, in_channels, k, k]")
        mask = raster_mask(out_channels, in_channels, kernel_size, mask_type, data_channels)
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                         bias=bias)
        self.mask_type = mask_type
        self.data_channels = data_channels
        self.register_buffer("mask", mask)

    def masked_weight(self) -> torch.Tensor:
        """``[out_channels, in_channels, k, k]``, the weight with the future zeroed."""
        return self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [batch, in_channels, H, W]`` -> ``[batch, out_channels, H, W]``."""
        return F.conv2d(x, self.masked_weight(), self.bias, padding=self.padding)

    @property
    def half(self) -> int:
        """``k // 2``: rows above and columns either side of the centre that the kernel reads."""
        return self.kernel_size[0] // 2

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad ``x: [batch, in, H, W]`` to ``[batch, in, H + p, W + 2p]`` (``p = k // 2``;
        the rows below are never read), the layout :meth:`at` expects."""
        p = self.half
        return F.pad(x, (p, p, p, 0))

    def flat_weight(self) -> torch.Tensor:
        """``[out_channels, in_channels * (p + 1) * k]``: the masked rows ``0..p`` (the ones
        that can be non-zero), flattened in the order :meth:`at` flattens a window."""
        return self.masked_weight()[:, :, :self.half + 1].flatten(1)

    def at(self, padded: torch.Tensor, i: int, j: int,
           flat_weight: torch.Tensor | None = None) -> torch.Tensor:
        """Output at pixel ``(i, j)`` from ``padded = self.pad(x)``: ``[batch, out_channels]``.

        Equal to ``self(x)[:, :, i, j]`` up to float rounding; reads only rows ``<= i`` of
        ``x``. Pass ``flat_weight = self.flat_weight()`` to reuse it across calls.
        """
        k, p = self.kernel_size[0], self.half
        window = padded[:, :, i:i + p + 1, j:j + k].flatten(1)  # [batch, in * (p + 1) * k]
        weight = self.flat_weight() if flat_weight is None else flat_weight
        return F.linear(window, weight, self.bias)


def gated_tanh(a: torch.Tensor) -> torch.Tensor:
    """``tanh(a_f) * sigmoid(a_g)`` with ``a_f, a_g = a.chunk(2, 1)``: ``[batch, 2n, ...]`` ->
    ``[batch, n, ...]`` ([2] eq. 2)."""
    filt, gate = a.chunk(2, 1)
    return torch.tanh(filt) * torch.sigmoid(gate)


class GatedResidualBlock(nn.Module):
    """``x + W_o * gated_tanh(W * x + b(y, h))``: a masked gated residual block ([2] eq. 2-4).

    ``W`` is a masked ``k x k`` convolution (mask "B") to ``2 * channels``, ``W_o`` a masked
    ``1 x 1`` convolution (mask "B", so channel groups stay causal for ``data_channels > 1``),
    and the optional per-image bias ``b = V_c onehot(y) + V_h h`` comes from a class embedding
    (``num_classes``) and/or a linear map of a conditioning vector ``h: [batch, cond_dim]``
    (e.g. a VAE latent), added at every position.

    Args:
        channels: residual channels, a multiple of ``data_channels``.
        kernel_size: odd size of the masked convolution.
        data_channels: channels of the modelled image.
        num_classes: number of class ids ``y`` (None: no class bias).
        cond_dim: size of the conditioning vector ``h`` (None: none).
        dropout: probability of zeroing each gated activation before ``W_o`` in training
            mode (Srivastava et al. 2014, as in PixelCNN++'s residual blocks); off in
            evaluation mode and in :meth:`at`, so sampling and scoring are deterministic.
    """

    def __init__(self, channels: int, kernel_size: int = 3, data_channels: int = 1,
                 num_classes: int | None = None, cond_dim: int | None = None,
                 dropout: float = 0.0):
        super().__init__()
        dropout = as_number(dropout, "dropout", 0, 1, high_open=True)
        num_classes = None if num_classes is None else as_int(num_classes, "num_classes")
        cond_dim = None if cond_dim is None else as_int(cond_dim, "cond_dim")
        self.dropout = nn.Dropout(dropout)
        self.conv = MaskedConv2d(channels, 2 * channels, kernel_size, "B", data_channels)
        self.out = MaskedConv2d(channels, channels, 1, "B", data_channels)
        self.class_bias = nn.Embedding(num_classes, 2 * channels) if num_classes else None
        self.cond_bias = nn.Linear(cond_dim, 2 * channels, bias=False) if cond_dim else None

    def condition(self, y: torch.Tensor | None = None, h: torch.Tensor | None = None
                  ) -> torch.Tensor | None:
        """Per-image bias ``[batch, 2 * channels]`` from ``y: [batch]`` int64 and ``h: [batch,
        cond_dim]``, or None when the block is unconditional. Inputs are not validated here."""
        bias = None
        if self.class_bias is not None and y is not None:
            bias = self.class_bias(y)
        if self.cond_bias is not None and h is not None:
            term = self.cond_bias(h)
            bias = term if bias is None else bias + term
        return bias

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``x: [batch, channels, H, W]``, ``bias: [batch, 2 * channels]`` or None -> same shape
        as ``x``."""
        a = self.conv(x)  # [batch, 2 * channels, H, W]
        if bias is not None:
            a = a + bias[:, :, None, None]
        return x + self.out(self.dropout(gated_tanh(a)))

    def at(self, padded: torch.Tensor, i: int, j: int, bias: torch.Tensor | None,
           weights: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Output at ``(i, j)`` from ``padded = self.conv.pad(x)``: ``[batch, channels]``.

        ``weights = (self.conv.flat_weight(), self.out.flat_weight())`` may be passed to reuse
        them across calls. Evaluation-mode arithmetic: no dropout.
        """
        conv_w, out_w = weights if weights is not None else (self.conv.flat_weight(),
                                                             self.out.flat_weight())
        p = self.conv.half
        a = self.conv.at(padded, i, j, conv_w)  # [batch, 2 * channels]
        if bias is not None:
            a = a + bias
        return padded[:, :, i + p, j + p] + F.linear(gated_tanh(a), out_w, self.out.bias)
