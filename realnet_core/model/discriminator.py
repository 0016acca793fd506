"""Discriminator: selected reconstruction residuals -> 2-class segmentation logits.

The paper (appendix B) describes "a basic MLP with upsampling layers". This is a per-pixel MLP
(1x1 convs) with one 3x3 conv for a little spatial context, BatchNorm + ReLU between layers, and a
final 1x1 conv to two logits (normal, anomalous) at feature resolution; the logits are then
upsampled bilinearly to the image size. Upsampling logits rather than probabilities keeps the
softmax sharp at region borders.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Discriminator"]


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    # No conv bias: the BatchNorm that follows has its own shift.
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class Discriminator(nn.Module):
    """Conv stack to 2 logit channels.

    Args:
        in_channels: r, the RRS output width.
        hidden: width of the hidden layers (the authors' decoder also narrows to 128).
    """

    def __init__(self, in_channels: int, hidden: int = 128) -> None:
        super().__init__()
        if in_channels < 1 or hidden < 1:
            raise ValueError("in_channels and hidden must be positive")
        self.in_channels = in_channels
        self.hidden = hidden
        narrow = max(hidden // 4, 2)
        self.body = nn.Sequential(
            _conv_bn_relu(in_channels, hidden, 1),
            _conv_bn_relu(hidden, hidden, 3),
            _conv_bn_relu(hidden, narrow, 1),
        )
        self.head = nn.Conv2d(narrow, 2, 1)

    def forward(self, x: Tensor, out_size: tuple[int, int] | None = None) -> Tensor:
        """Logits (B, 2, H, W): at `out_size` if given, else at the input's resolution."""
        logits = self.head(self.body(x))
        if out_size is not None and tuple(logits.shape[-2:]) != tuple(out_size):
            logits = F.interpolate(logits, size=tuple(out_size), mode="bilinear", align_corners=False)
        return logits
