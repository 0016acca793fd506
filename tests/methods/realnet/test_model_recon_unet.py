"""ReconUNet: shapes for odd/small sizes, zero-initialised output, widths, attention placement."""

import pytest
import torch

from realnet_core.methods.realnet.recon_unet import AttentionBlock, ReconUNet, group_norm


@pytest.mark.parametrize("size", [(8, 8), (16, 16), (7, 7), (64, 64), (2, 2), (5, 9), (1, 1)])
@pytest.mark.parametrize("channels", [4, 6])
def test_output_shape_matches_input(size: tuple[int, int], channels: int) -> None:
    torch.manual_seed(0)
    net = ReconUNet(channels, channel_mult=(1, 2, 4), num_res_blocks=1)
    x = torch.randn(2, channels, *size)
    assert net(x).shape == x.shape


def test_default_widths_follow_the_paper() -> None:
    net = ReconUNet(16)
    assert net.base_channels == 8
    assert net.input_conv.out_channels == 8
    # Bottom level width = base * 4.
    assert net.mid[0].in_channels == 32
    assert isinstance(net.mid[1], AttentionBlock)
    # Attention only at levels 1 and 2: down stages 0-1 (level 0) have none, the others have one.
    has_attn = [isinstance(getattr(m, "attn", None), AttentionBlock) for m in net.down]
    # down = [s0, s0, down, s1, s1, down, s2, s2]
    assert has_attn == [False, False, False, True, True, False, True, True]


def test_direct_prediction_starts_at_zero_and_learns() -> None:
    torch.manual_seed(0)
    net = ReconUNet(4, num_res_blocks=1)
    x = torch.randn(3, 4, 7, 7)
    assert torch.count_nonzero(net(x)) == 0
    # The zero last conv must not block learning: one step moves the output away from zero.
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    target = torch.randn_like(x)
    loss = ((net(x) - target) ** 2).mean()
    loss.backward()
    opt.step()
    assert net(x).abs().sum() > 0


def test_residual_prediction_starts_as_identity() -> None:
    torch.manual_seed(0)
    net = ReconUNet(4, num_res_blocks=1, predict_residual=True)
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(net(x), x)


def test_rejects_wrong_width() -> None:
    with pytest.raises(ValueError):
        ReconUNet(4)(torch.randn(1, 5, 8, 8))


def test_group_norm_divides_odd_widths() -> None:
    assert group_norm(64).num_groups == 32
    assert group_norm(48).num_groups == 24
    assert group_norm(6).num_groups == 6
    assert group_norm(35).num_groups == 7


def test_attention_heads_and_identity_at_init() -> None:
    assert AttentionBlock(128).num_heads == 2
    assert AttentionBlock(12).num_heads == 1
    assert AttentionBlock(12, num_heads=3).num_heads == 3
    x = torch.randn(2, 12, 3, 5)
    torch.testing.assert_close(AttentionBlock(12)(x), x)
