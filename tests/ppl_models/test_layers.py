"""Masked layers: the masks, causality of stacks by gradients, and single-position evaluation."""

import pytest
import torch

from ppl_models.layers import GatedResidualBlock, MaskedConv2d, raster_mask


def test_masks_of_a_single_channel_kernel():
    a = raster_mask(1, 1, 3, "A")[0, 0]
    b = raster_mask(1, 1, 3, "B")[0, 0]
    assert torch.equal(a, torch.tensor([[1.0, 1, 1], [1, 0, 0], [0, 0, 0]]))
    assert torch.equal(b, torch.tensor([[1.0, 1, 1], [1, 1, 0], [0, 0, 0]]))


def test_centre_tap_follows_channel_groups():
    # 3 data channels, 6 out / 3 in: out channel o is in group o % 3, in channel c in group c
    a = raster_mask(6, 3, 3, "A", data_channels=3)[:, :, 1, 1]
    b = raster_mask(6, 3, 3, "B", data_channels=3)[:, :, 1, 1]
    groups_out = torch.arange(6)[:, None] % 3
    groups_in = torch.arange(3)[None, :]
    assert torch.equal(a, (groups_in < groups_out).float())
    assert torch.equal(b, (groups_in <= groups_out).float())


def influence(net, x, i, j, channel_group, data_channels):
    """``|d out[group, i, j] / d x|`` summed over batch and output channels of that group:
    ``[C, H, W]``."""
    x = x.clone().requires_grad_()
    out = net(x)
    picked = out[:, channel_group::data_channels, i, j].sum()
    (grad,) = torch.autograd.grad(picked, x)
    return grad.abs().sum(0)


@pytest.mark.parametrize("data_channels", [1, 3])
def test_stack_of_masked_layers_is_causal(data_channels):
    torch.manual_seed(0)
    C, H, W = data_channels, 6, 5
    first = MaskedConv2d(C, 4 * C, 5, "A", C)
    blocks = [GatedResidualBlock(4 * C, 3, C) for _ in range(3)]
    head = MaskedConv2d(4 * C, 2 * C, 1, "B", C)

    def net(x):
        h = first(x)
        for block in blocks:
            h = block(h)
        return head(h)

    x = torch.randn(2, C, H, W)
    order = torch.arange(H * W).reshape(H, W)
    for i, j in [(0, 0), (2, 3), (5, 4), (3, 0)]:
        for c in range(C):
            reach = influence(net, x, i, j, c, C)  # [C, H, W]
            future = order > order[i, j]
            # exactly zero: masked weights never multiply the future
            assert (reach[:, future] == 0).all(), f"pixel {(i, j)} group {c} sees later pixels"
            assert (reach[c:, i, j] == 0).all(), f"pixel {(i, j)} group {c} sees channels >= {c}"
            if c > 0:
                assert (reach[:c, i, j] > 0).all(), "earlier channels of the pixel are unused"
            if order[i, j] > 0:
                assert reach[:, order < order[i, j]].sum() > 0


def test_single_position_evaluation_matches_the_convolution():
    torch.manual_seed(1)
    conv = MaskedConv2d(4, 6, 5, "B", 2)
    block = GatedResidualBlock(4, 3, 2, num_classes=3, cond_dim=5)
    x = torch.randn(3, 4, 7, 6)
    y = torch.tensor([0, 2, 1])
    h = torch.randn(3, 5)
    with torch.no_grad():
        full = conv(x)
        bias = block.condition(y, h)
        full_block = block(x, bias)
        for i, j in [(0, 0), (3, 5), (6, 2)]:
            # float32 sums of at most 60 products: agreement to 1e-5
            assert torch.allclose(conv.at(conv.pad(x), i, j), full[:, :, i, j], atol=1e-5)
            assert torch.allclose(block.at(block.conv.pad(x), i, j, bias),
                                  full_block[:, :, i, j], atol=1e-5)


def test_bad_layer_arguments_raise():
    with pytest.raises(ValueError, match="mask_type"):
        MaskedConv2d(1, 4, 3, "C")
    with pytest.raises(ValueError, match="odd"):
        MaskedConv2d(1, 4, 4, "A")
    with pytest.raises(ValueError, match="multiple of data_channels"):
        MaskedConv2d(3, 4, 3, "A", data_channels=3)


def test_masks_too_large_for_memory_are_refused_before_allocating():
    # torch.zeros of the mask (then the weight) failed in the allocator or took minutes
    with pytest.raises(ValueError, match=r"in_channels=100000, out_channels=200000, "
                                         r"kernel_size=3: the weight and its mask.*physical"):
        MaskedConv2d(10**5, 2 * 10**5, 3)
    with pytest.raises(ValueError, match=r"out_channels=100000, in_channels=100000, "
                                         r"kernel_size=3: the mask.*physical memory"):
        raster_mask(10**5, 10**5, 3, "B")
    with pytest.raises(ValueError, match=r"in_channels=100000.*physical memory"):
        GatedResidualBlock(10**5)
