"""Per-layer feature reconstruction network of RealNet ("architecture A", paper appendix C).

One small UNet is trained per backbone layer k to map the AFS-selected features of an
anomalous image, varphi_k(A), to those of the underlying normal image, varphi_k(I) (Eq. 5).
It is the diffusion-style UNet without any time embedding, laid out as in the authors' code: base
width = input width / 2, channel multipliers (1, 2, 4), two residual blocks per level (one conv
each), residual blocks that pool down and transpose-conv up between levels, self-attention at the
two lower levels and in the middle block, and a zero-initialised output convolution.

Feature maps of any spatial size work (8x8, 7x7, 2x2, ...): downsampling rounds odd sizes up
(ceil(H/2)) and each upsampling step crops to the exact size of the skip tensor it is
concatenated with, so odd sizes round-trip without padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realnet_core.diffusion.unet import GroupNorm32

__all__ = ["ReconUNet", "ResBlock", "AttentionBlock", "group_norm"]


def _num_groups(channels: int, max_groups: int = 32) -> int:
    """Largest group count <= max_groups that divides `channels`.

    The paper's GroupNorm32 assumes widths divisible by 32; AFS widths (and the tiny widths of tests
    and the demo profile) need not be, so fall back to the nearest divisor instead of failing.
    """
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups (see `_num_groups`), statistics in float32 (the diffusion UNet's)."""
    return GroupNorm32(_num_groups(channels), channels)


class ResBlock(nn.Module):
    """GroupNorm, SiLU, one 3x3 conv, plus a skip path (1x1 conv when the width changes).

    `resample` makes it the level-changing block of the authors' UNet: "down" average-pools both
    paths by 2, "up" doubles both with a 4x4 transposed conv. One conv per block is the authors'
    layout, and the paper's sizes confirm it: with WideResNet50 it gives 2.18 GiB for m = {256, 512,
    512, 256} and 0.73 GiB for half those widths (Table S4: 2.2 GB and 0.74 GB); two convs per
    block would give 2.93 and 0.92 GiB.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, resample: str | None = None) -> None:
        super().__init__()
        if resample not in (None, "down", "up"):
            raise ValueError(f"resample must be None, 'down' or 'up', got {resample!r}")
        out_channels = out_channels or in_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resample = resample
        self.norm = nn.Sequential(group_norm(in_channels), nn.SiLU())
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.skip: nn.Module = (
            nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)
        )
        if resample == "up":
            self.up_h = nn.ConvTranspose2d(in_channels, in_channels, 4, stride=2, padding=1)
            self.up_x = nn.ConvTranspose2d(in_channels, in_channels, 4, stride=2, padding=1)

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        h = self.norm(x)
        if self.resample == "down":
            # ceil_mode keeps odd sizes (7 -> 4 -> 2 -> 1) instead of dropping the last row. A 1-pixel side
            # pools with a 1-wide window (the same value): ONNX runtimes such as OpenVINO refuse a window
            # larger than the map. The sizes are fixed by the input size, so an export traces one branch.
            kernel = (min(2, x.shape[-2]), min(2, x.shape[-1]))
            h, x = (F.avg_pool2d(t, kernel, stride=2, ceil_mode=True) for t in (h, x))
        elif self.resample == "up":
            # x2 can overshoot an odd skip size by one (4 -> 8 for 7): crop to the skip's size.
            size = size or (2 * x.shape[-2], 2 * x.shape[-1])
            h = self.up_h(h)[..., : size[0], : size[1]]
            x = self.up_x(x)[..., : size[0], : size[1]]
        return self.skip(x) + self.conv(h)


class AttentionBlock(nn.Module):
    """Multi-head spatial self-attention with a residual connection.

    The output projection starts at zero so that a freshly built block is the identity and does not
    disturb the convolutional path before it has learnt something useful.
    """

    def __init__(self, channels: int, num_heads: int | None = None, head_channels: int = 64) -> None:
        super().__init__()
        if num_heads is None:
            # One head per `head_channels` channels; narrow layers (tests, small AFS widths) get one head.
            num_heads = channels // head_channels if channels % head_channels == 0 else 1
            num_heads = max(num_heads, 1)
        if channels % num_heads != 0:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w)
        # (B, heads, tokens, head_dim) for scaled_dot_product_attention.
        q, k, v = (t.transpose(-1, -2) for t in qkv.unbind(1))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(out)


class _Stage(nn.Module):
    """A residual block, optionally followed by attention."""

    def __init__(self, in_ch: int, out_ch: int, attention: bool, num_heads: int | None, head_ch: int) -> None:
        super().__init__()
        self.res = ResBlock(in_ch, out_ch)
        self.attn: nn.Module = AttentionBlock(out_ch, num_heads, head_ch) if attention else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.attn(self.res(x))


class ReconUNet(nn.Module):
    """UNet (no time embedding) that reconstructs normal features from anomalous ones.

    Args:
        in_channels: width of the selected feature map (m_k); the output has the same width.
        base_channels: width of the first level; defaults to in_channels // 2 (the authors'
            `hide_channels_ratio` of 0.5), at least 1.
        channel_mult: width multiplier per resolution level.
        num_res_blocks: residual blocks per level on the down path (the up path has one more,
            consuming the extra skip from the downsampling layer, as in guided-diffusion).
        attention_levels: level indices (0 = full resolution) that get self-attention; the
            default (1, 2) puts attention at the two lower levels (ds 2 and 4).
        use_mid_attention: attention between the two middle residual blocks.
        num_heads: fixed head count; if None, heads = width // head_channels (or 1).
        head_channels: channels per head when num_heads is None.
        predict_residual: if True the network outputs x + delta instead of the feature itself.

    Output parametrisation. The reconstruction target is varphi(I) given varphi(A). By default
    (`predict_residual=False`) the network predicts the normal feature directly, as the authors
    do; with the zero-initialised last conv, G starts as the zero map, so the initial residual
    (F - G(F))^2 = F^2 is large everywhere and the discriminator first sees "everything anomalous"
    until reconstruction is learnt. We keep that because an explicit identity path (F + delta)
    biases the network towards copying its input, the "identical shortcut" failure of feature
    reconstruction: anomalous features pass through unchanged and their residual vanishes.
    `predict_residual=True` is offered for experiments (it starts as the identity, so the initial
    residual is exactly zero).
    """

    def __init__(
        self,
        in_channels: int,
        base_channels: int | None = None,
        channel_mult: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] = (1, 2),
        use_mid_attention: bool = True,
        num_heads: int | None = None,
        head_channels: int = 64,
        predict_residual: bool = False,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError("in_channels must be positive")
        if not channel_mult:
            raise ValueError("channel_mult must not be empty")
        base = base_channels if base_channels is not None else max(in_channels // 2, 1)
        self.in_channels = in_channels
        self.base_channels = base
        self.channel_mult = tuple(int(m) for m in channel_mult)
        self.num_res_blocks = num_res_blocks
        self.attention_levels = tuple(int(a) for a in attention_levels)
        self.use_mid_attention = use_mid_attention
        self.predict_residual = predict_residual

        attn_set = set(self.attention_levels)
        ch = base * self.channel_mult[0]
        self.input_conv = nn.Conv2d(in_channels, ch, 3, padding=1)
        skip_chs = [ch]

        self.down = nn.ModuleList()
        n_levels = len(self.channel_mult)
        for level, mult in enumerate(self.channel_mult):
            for _ in range(num_res_blocks):
                out_ch = base * mult
                self.down.append(_Stage(ch, out_ch, level in attn_set, num_heads, head_channels))
                ch = out_ch
                skip_chs.append(ch)
            if level != n_levels - 1:
                self.down.append(ResBlock(ch, resample="down"))
                skip_chs.append(ch)

        self.mid = nn.Sequential(
            ResBlock(ch),
            AttentionBlock(ch, num_heads, head_channels) if use_mid_attention else nn.Identity(),
            ResBlock(ch),
        )

        self.up = nn.ModuleList()
        self.upsamplers = nn.ModuleDict()
        for level in reversed(range(n_levels)):
            mult = self.channel_mult[level]
            for i in range(num_res_blocks + 1):
                out_ch = base * mult
                in_ch = ch + skip_chs.pop()
                self.up.append(_Stage(in_ch, out_ch, level in attn_set, num_heads, head_channels))
                ch = out_ch
                if level > 0 and i == num_res_blocks:
                    # Keyed by the index of the up stage it follows.
                    self.upsamplers[str(len(self.up) - 1)] = ResBlock(ch, resample="up")

        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), nn.Conv2d(ch, in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruct (B, C, H, W) features; the output has the input's shape."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        h = self.input_conv(x)
        skips = [h]
        for module in self.down:
            h = module(h)
            skips.append(h)
        h = self.mid(h)
        for i, stage in enumerate(self.up):
            h = stage(torch.cat([h, skips.pop()], dim=1))
            up = self.upsamplers[str(i)] if str(i) in self.upsamplers else None
            if up is not None:
                h = up(h, size=tuple(skips[-1].shape[-2:]))
        out = self.out(h)
        return x + out if self.predict_residual else out
