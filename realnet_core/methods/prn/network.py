"""The PRN network (sec. 3, Fig. 3): prototype residuals of three encoder scales, multi-scale fusion (MF),
multi-size self-attention (MSA) and a decoder to one sigmoid channel at the input size.

Inputs are the frozen encoder's first three feature maps (ResNet-18 layer1-3 in the paper: 64, 128, 256
channels at strides 4, 8, 16). The prototypes are buffers of the module, so a saved model holds them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .prototypes import prototype_residual

PRIOR = 0.01  # the decoder's initial anomaly probability


def _conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class MultiScaleFusion(nn.Module):
    """Eq. 2: F*_j = sum_r f_rj(F_r). f_jj is the identity; from a finer scale r < j, a depthwise separable
    convolution with stride 2^(j-r), kernel 2^(j-r)+1 and padding 2^(j-r-1); from a coarser one, bilinear
    upsampling and a 1x1 convolution. Each non-identity path ends in a BatchNorm (as HRNet's fusion [57] does),
    so that features and squared residuals of very different magnitudes can be summed."""

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        self.paths = nn.ModuleList()
        for j, cj in enumerate(channels):
            row = nn.ModuleList()
            for r, cr in enumerate(channels):
                if r == j:
                    row.append(nn.Identity())
                elif r < j:
                    s = 2 ** (j - r)
                    row.append(nn.Sequential(
                        nn.Conv2d(cr, cr, s + 1, stride=s, padding=s // 2, groups=cr, bias=False),  # depthwise
                        nn.Conv2d(cr, cj, 1, bias=False), nn.BatchNorm2d(cj)))  # pointwise
                else:
                    row.append(nn.Sequential(nn.Conv2d(cr, cj, 1, bias=False), nn.BatchNorm2d(cj)))
            self.paths.append(row)

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for j, row in enumerate(self.paths):
            total = maps[j]
            for r, path in enumerate(row):
                if r < j:
                    total = total + path(maps[r])
                elif r > j:
                    # Upsampling commutes with the 1x1 convolution: convolving at the coarse size is cheaper.
                    total = total + F.interpolate(path(maps[r]), size=maps[j].shape[-2:], mode="bilinear",
                                                  align_corners=False)
            out.append(total)
        return out


def patch_sizes(h: int, heads: int = 4) -> list[int]:
    """The heads' patch sizes h, h/2, h/4, h/8 (sec. 3.3), each the largest divisor of h not above h / 2^s,
    so that patches tile the map (1 at the least)."""
    return [max(d for d in range(1, max(1, h >> s) + 1) if h % d == 0) for s in range(heads)]


class ResidualBlock(nn.Module):
    """A bottleneck: 1x1 conv-BN-ReLU to ``cout``, 3x3 conv-BN, plus a 1x1 projection shortcut, then ReLU
    (a third of the weights of two 3x3 layers on the four heads' channels)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn_relu(cin, cout, 1), nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(cout))
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class MultiSizeAttention(nn.Module):
    """Eq. 3, one MSA layer on a (B, C, h, h) map: head s cuts the map into p_s x p_s patches, flattens each
    into a token of C p_s^2 values, and returns softmax(Q K^T / c_s) V with c_s = C p_s^2, reshaped back to the
    map; the heads are concatenated and a 2D residual block maps them back to C channels.

    The paper embeds each flattened patch with a fully connected layer of c_s x c_s weights; at the largest
    patch (p = h) that is (C h^2)^2 weights, about 2.7e11 at layer1 of a 256 px image, which no memory holds.
    Here Q, K and V are a per-position projection instead: one C x C linear map (a 1x1 convolution) applied at
    every position of the patch, i.e. a block-diagonal embedding of the same token.
    """

    def __init__(self, channels: int, size: int, heads: int = 4) -> None:
        super().__init__()
        self.patches = patch_sizes(size, heads)
        self.qkv = nn.ModuleList(nn.Conv2d(channels, 3 * channels, 1) for _ in self.patches)
        self.out = ResidualBlock(len(self.patches) * channels, channels)

    @staticmethod
    def _tokens(x: torch.Tensor, p: int) -> torch.Tensor:
        b, c, h, w = x.shape
        tiles = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return tiles.reshape(b, (h // p) * (w // p), c * p * p)

    @staticmethod
    def _untokens(t: torch.Tensor, shape: torch.Size, p: int) -> torch.Tensor:
        b, c, h, w = shape
        return t.reshape(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heads = []
        for p, qkv in zip(self.patches, self.qkv, strict=True):
            q, k, v = (self._tokens(t, p) for t in qkv(x).chunk(3, dim=1))
            attn = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1], dim=-1)  # Eq. 3 divides by c_s itself
            heads.append(self._untokens(attn @ v, x.shape, p))
        return self.out(torch.cat(heads, dim=1))


class SegmentationDecoder(nn.Module):
    """Upsampling with conv-BN-ReLU blocks from the coarsest skip, taking in the finer skips on the way, to
    one logit channel at the input size (strides 16 -> 8 -> 4 -> 2 -> 1)."""

    def __init__(self, skip_channels: list[int]) -> None:
        super().__init__()
        s1, s2, s3 = skip_channels
        half = max(8, s1 // 4)
        self.block3 = nn.Sequential(_conv_bn_relu(s3, s2), _conv_bn_relu(s2, s2))
        self.block2 = nn.Sequential(_conv_bn_relu(2 * s2, s1), _conv_bn_relu(s1, s1))
        self.block1 = nn.Sequential(_conv_bn_relu(2 * s1, s1 // 2), _conv_bn_relu(s1 // 2, s1 // 2))
        self.block0 = nn.Sequential(_conv_bn_relu(s1 // 2, half), _conv_bn_relu(half, half))
        self.blockf = _conv_bn_relu(half, half)
        self.head = nn.Conv2d(half, 1, 1)
        # The focal loss's prior initialisation [29]: start at p = 0.01 anomalous everywhere, not 0.5, so the
        # first steps do not spend themselves pushing every normal pixel down (gamma = 4 barely penalises p = 0.3).
        nn.init.constant_(self.head.bias, -math.log((1 - PRIOR) / PRIOR))

    def forward(self, skips: list[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
        t1, t2, t3 = skips
        x = self.block3(t3)
        x = self.block2(torch.cat([F.interpolate(x, size=t2.shape[-2:], mode="bilinear", align_corners=False), t2], 1))
        x = self.block1(torch.cat([F.interpolate(x, size=t1.shape[-2:], mode="bilinear", align_corners=False), t1], 1))
        x = self.block0(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
        x = self.blockf(F.interpolate(x, size=out_size, mode="bilinear", align_corners=False))
        return self.head(x)


class PRN(nn.Module):
    """Prototype residuals -> MF (features) + MF (residuals) -> concat -> ``msa_layers`` x MSA per scale ->
    MF -> decoder. ``forward(features, out_size) -> (B, 1, H, W)`` logits; the anomaly map is their sigmoid."""

    def __init__(self, channels: list[int], sizes: list[int], prototypes: list[int], heads: int = 4,
                 msa_layers: int = 3) -> None:
        super().__init__()
        if not len(channels) == len(sizes) == len(prototypes) == 3:
            raise ValueError(f"PRN needs three scales, got channels {channels}, sizes {sizes}, prototypes {prototypes}")
        self._config = {"channels": list(channels), "sizes": list(sizes), "prototypes": list(prototypes),
                        "heads": heads, "msa_layers": msa_layers}
        for j, (c, s, k) in enumerate(zip(channels, sizes, prototypes, strict=True)):
            self.register_buffer(f"prototypes{j + 1}", torch.zeros(k, c, s, s))
        wide = [2 * c for c in channels]
        self.fuse_features = MultiScaleFusion(list(channels))
        self.fuse_residuals = MultiScaleFusion(list(channels))
        self.attention = nn.ModuleList(nn.Sequential(*(MultiSizeAttention(w, s, heads) for _ in range(msa_layers)))
                                       for w, s in zip(wide, sizes, strict=True))
        self.fuse_attention = MultiScaleFusion(wide)
        self.decoder = SegmentationDecoder(wide)

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PRN:
        return cls(**config)

    def prototypes(self) -> list[torch.Tensor]:
        return [self.prototypes1, self.prototypes2, self.prototypes3]

    def set_prototypes(self, prototypes: list[torch.Tensor]) -> None:
        for buf, p in zip(self.prototypes(), prototypes, strict=True):
            if buf.shape != p.shape:
                raise ValueError(f"prototypes of shape {tuple(p.shape)} where the model expects {tuple(buf.shape)}")
            buf.copy_(p)

    def forward(self, features: list[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
        feats = list(features[:3])
        # Frozen prototypes on frozen features: nothing to learn in Eq. 1. In float32 even under autocast, so
        # that bf16 rounding of the distances never changes which prototype is nearest.
        with torch.no_grad(), torch.autocast(feats[0].device.type, enabled=False):
            residuals = [prototype_residual(f.float(), p) for f, p in zip(feats, self.prototypes(), strict=True)]
        fused = zip(self.fuse_features(feats), self.fuse_residuals(residuals), strict=True)
        joined = [torch.cat(pair, 1) for pair in fused]
        skips = self.fuse_attention([msa(c) for msa, c in zip(self.attention, joined, strict=True)])
        return self.decoder(skips, out_size)
