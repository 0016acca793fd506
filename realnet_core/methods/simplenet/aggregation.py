"""Local aggregation (paper sec. 3.1, as the authors' code does it).

Each chosen layer's p x p neighbourhood (stride 1, zero padding p // 2) around every position is one
C * p * p vector, average-pooled to ``pretrain_dim`` values; deeper layers' patch grids are resized
bilinearly to the first layer's; the layers' vectors are then stacked and pooled to ``target_dim``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _pool_channels(x: Tensor, size: int) -> Tensor:
    """(N, K) -> (N, size): adaptive average pooling along the vector (the code's MeanMapper and Aggregator)."""
    return F.adaptive_avg_pool1d(x.unsqueeze(1), size).squeeze(1)


def local_aggregation(feats: Sequence[Tensor], patch_size: int = 3, pretrain_dim: int = 1536,
                      target_dim: int = 1536) -> tuple[Tensor, tuple[int, int]]:
    """Layer feature maps [(B, C_l, h_l, w_l)] -> ((B * h * w, target_dim) features, (h, w)).

    (h, w) is the first layer's grid; rows are image-major, then row-major over the grid. Pooling each
    layer's vectors before resizing its grid gives the code's result (pooling mixes values of one position,
    resizing mixes positions of one value: the two commute), for a fraction of the memory.
    """
    b, _, h, w = feats[0].shape
    pad = patch_size // 2
    layers = []
    for f in feats:
        hl, wl = f.shape[-2:]
        # (B, C * p * p, h_l * w_l): each column a neighbourhood, channel-major as in the code's unfold.
        cols = F.unfold(f.float(), kernel_size=patch_size, padding=pad, stride=1)
        vec = _pool_channels(cols.transpose(1, 2).reshape(b * hl * wl, -1), pretrain_dim)
        if (hl, wl) != (h, w):
            grid = vec.reshape(b, hl, wl, pretrain_dim).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
            vec = grid.permute(0, 2, 3, 1).reshape(b * h * w, pretrain_dim)
        layers.append(vec)
    stacked = torch.stack(layers, dim=1).reshape(b * h * w, -1)  # (N, L * pretrain_dim), layer-major
    return _pool_channels(stacked, target_dim), (h, w)
