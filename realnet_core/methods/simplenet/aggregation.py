"""Local aggregation (paper sec. 3.1, as the authors' code does it).

Each chosen layer's p x p neighbourhood (stride 1, zero padding p // 2) around every position is one
C * p * p vector, average-pooled to ``pretrain_dim`` values; deeper layers' patch grids are resized
bilinearly to the first layer's; the layers' vectors are then stacked and pooled to ``target_dim``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor


@lru_cache(maxsize=32)
def _bins(k: int, size: int) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[float, ...], ...]]:
    """PyTorch's adaptive bins as a gather: output i averages elements floor(i k / size) .. ceil((i + 1) k /
    size) - 1; (size, width) element indices (the last one repeated) and weights (1 / bin length, else 0).
    Plain numbers, not tensors: a tensor made while torch.export traces is a fake one, and a cache would hand
    it to every later eager call."""
    start = [i * k // size for i in range(size)]
    end = [-(-(i + 1) * k // size) for i in range(size)]
    width = max(e - s for s, e in zip(start, end, strict=True))
    bins = list(zip(start, end, strict=True))
    idx = tuple(tuple(min(s + j, e - 1) for j in range(width)) for s, e in bins)
    weight = tuple(tuple(1 / (e - s) if j < e - s else 0.0 for j in range(width)) for s, e in bins)
    return idx, weight


def pool_vectors(x: Tensor, size: int) -> Tensor:
    """(N, K) -> (N, size): ``F.adaptive_avg_pool1d`` along each vector (the code's MeanMapper and Aggregator).

    Written as a reshape-mean (K a multiple of size, as WideResNet50's 4608, 9216 and 3072 -> 1536) or a fixed
    gather of each bin's elements: ONNX has no adaptive pooling for other ratios, and inference must trace.
    """
    k = x.shape[1]
    if k % size == 0:
        return x.reshape(-1, size, k // size).mean(-1)
    idx, weight = _bins(int(k), size)
    idx_t = torch.tensor(idx, device=x.device)
    return (x[:, idx_t] * torch.tensor(weight, device=x.device, dtype=x.dtype)).sum(-1)


def local_aggregation(feats: Sequence[Tensor], patch_size: int = 3, pretrain_dim: int = 1536,
                      target_dim: int = 1536) -> tuple[Tensor, tuple[int, int]]:
    """Layer feature maps [(B, C_l, h_l, w_l)] -> ((B * h * w, target_dim) features, (h, w)).

    (h, w) is the first layer's grid; rows are image-major, then row-major over the grid. Pooling each
    layer's vectors before resizing its grid gives the code's result (pooling mixes values of one position,
    resizing mixes positions of one value: the two commute), for a fraction of the memory.
    """
    h, w = feats[0].shape[-2:]
    pad = patch_size // 2
    layers = []
    for f in feats:
        hl, wl = f.shape[-2:]
        # (B, C * p * p, h_l * w_l): each column a neighbourhood, channel-major as in the code's unfold.
        cols = F.unfold(f.float(), kernel_size=patch_size, padding=pad, stride=1)
        vec = pool_vectors(cols.transpose(1, 2).reshape(-1, cols.shape[1]), pretrain_dim)
        if (hl, wl) != (h, w):
            grid = vec.reshape(-1, hl, wl, pretrain_dim).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
            vec = grid.permute(0, 2, 3, 1).reshape(-1, pretrain_dim)
        layers.append(vec)
    stacked = torch.stack(layers, dim=1).flatten(1)  # (N, L * pretrain_dim), layer-major
    return pool_vectors(stacked, target_dim), (h, w)
