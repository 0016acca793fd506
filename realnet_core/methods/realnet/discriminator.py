"""Discriminator: selected reconstruction residuals -> 2-class segmentation logits.

The paper (appendix B) calls it "a basic MLP with upsampling layers"; we follow the layout of the
authors' code, whose size the paper's Table S4 counts: two residual units at the full RRS width r
(ReLU, 3x3 conv, ReLU, 1x1 conv, no bias), a 3x3 conv to `hidden` channels with BatchNorm, 3x3
convs narrowing to 2 logits with one x2 bilinear upsampling on the way, then bilinear upsampling
to the image size. Upsampling logits rather than probabilities keeps the softmax sharp at region
borders.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from realnet_core.runtime import no_autocast

__all__ = ["Discriminator", "tail_widths"]


def tail_widths(hidden: int, min_width: int = 2) -> tuple[int, int, int]:
    """Widths of the convs after ``hidden``: hidden/4, hidden/16 and hidden/32 (32, 8 and 4 for the authors'
    128), none below ``min_width``."""
    return tuple(max(hidden // d, min_width) for d in (4, 16, 32))


def _conv(in_ch: int, out_ch: int, kernel: int = 3, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=bias)


def _act(leak: float) -> nn.Module:
    return nn.LeakyReLU(leak) if leak else nn.ReLU()


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(), _conv(channels, channels, 3, bias=False), nn.ReLU(), _conv(channels, channels, 1, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class Discriminator(nn.Module):
    """Residual units at width r, then a conv stack narrowing to 2 logit channels.

    Args:
        in_channels: r, the RRS output width.
        hidden: width after the residual units (128 in the authors' code); the later convs narrow
            to hidden/4, hidden/16 and hidden/32 (32, 8 and 4 for 128), at least `min_width`.
        num_residual: residual units at width r (2 in the authors' configs).
        width: the residual units' width, when it is not `in_channels`: a 1x1 convolution (no bias) maps
            the input onto it first, so that paired RRS input (2r) costs a step almost nothing.
        min_width: the narrowest the later convs get (the authors' tail at 128 is 32, 8 and 4).
        leak: negative slope of the activations after the BatchNorm; 0 is the authors' ReLU. A layer of 4 ReLU
            units can die whole in training and leave a map that no input changes.
    """

    def __init__(self, in_channels: int, hidden: int = 128, num_residual: int = 2, width: int | None = None,
                 min_width: int = 2, leak: float = 0.0) -> None:
        super().__init__()
        if in_channels < 1 or hidden < 1 or min_width < 1:
            raise ValueError("in_channels, hidden and min_width must be positive")
        if not 0 <= leak < 1:
            raise ValueError(f"leak must be in [0, 1), got {leak}")
        self.in_channels = in_channels
        self.hidden = hidden
        w2, w3, w4 = tail_widths(hidden, min_width)
        width = width or in_channels
        entry = [] if width == in_channels else [_conv(in_channels, width, 1, bias=False)]
        self.body = nn.Sequential(
            *entry,
            *(_Residual(width) for _ in range(num_residual)),
            nn.ReLU(),
            _conv(width, hidden),
            nn.BatchNorm2d(hidden),
            _act(leak),
            _conv(hidden, w2),
            _act(leak),
            _conv(w2, w3),
            _act(leak),
        )
        self.head = nn.Sequential(_conv(w3, w4), _act(leak), _conv(w4, 2))

    def forward(self, x: Tensor, out_size: tuple[int, int] | None = None) -> Tensor:
        """Logits (B, 2, H, W): at `out_size` if given, else at twice the input's resolution."""
        h = self.body(x)
        # The x2 step before the last convs lets them refine borders at stride 2 instead of 4.
        h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=True)
        # Outside autocast, at its weights' precision (float32 when trained): the head is a few channels
        # wide, so that costs nothing, while bf16 logits (8 bits of mantissa) would give the anomaly map
        # coarse steps and many tied scores, from which AUROC and PRO suffer.
        with no_autocast(h.device.type):
            logits = self.head(h.to(self.head[-1].weight.dtype))
        if out_size is not None and tuple(logits.shape[-2:]) != tuple(out_size):
            logits = F.interpolate(logits, size=tuple(out_size), mode="bilinear", align_corners=True)
        return logits
