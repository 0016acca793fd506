"""Nearest-neighbour patch matching, the reference every learned detector here must beat.

PatchCore-style (Roth et al., CVPR 2022) without coreset subsampling, which small training sets do
not need: each of two mid-level backbone maps is averaged over 3x3 neighbourhoods, the deeper one
resized bilinearly to the finer grid, and the two concatenated into one vector per patch. Every
patch of every normal training image goes into the memory bank. A test patch scores its L2 distance
to the nearest bank entry; the map is upsampled bilinearly to the image size and smoothed by a
Gaussian of sigma 4 (at 256 px, scaled with the size); the image score is the largest patch score.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def patch_embeddings(feats: Sequence[torch.Tensor], layers: Sequence[int] = (1, 2)) -> torch.Tensor:
    """(B, D, h, w) patch vectors from the maps ``feats[k]`` for k in ``layers``, at the first one's grid."""
    chosen = [F.avg_pool2d(feats[k].float(), 3, stride=1, padding=1, count_include_pad=False) for k in layers]
    size = chosen[0].shape[-2:]
    chosen = [c if c.shape[-2:] == size else F.interpolate(c, size=size, mode="bilinear", align_corners=False)
              for c in chosen]
    return torch.cat(chosen, dim=1)


def _gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(round(4 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = (k / k.sum()).view(1, 1, 1, -1)
    m = F.pad(maps[:, None], (radius, radius, 0, 0), mode="reflect")
    m = F.conv2d(m, k)
    m = F.pad(m, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(m, k.transpose(-1, -2))[:, 0]


class PatchKNN:
    """Memory bank of normal patches; ``fit`` once, then ``anomaly_maps`` and ``image_scores``."""

    def __init__(self, layers: Sequence[int] = (1, 2), chunk: int = 4096) -> None:
        self.layers = tuple(layers)
        self.chunk = chunk
        self.bank: torch.Tensor | None = None

    def fit(self, feats: Sequence[torch.Tensor]) -> PatchKNN:
        emb = patch_embeddings(feats, self.layers)
        self.bank = emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1]).contiguous()
        return self

    def patch_scores(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """(B, h, w) distance of each patch to its nearest normal patch."""
        if self.bank is None:
            raise RuntimeError("PatchKNN.patch_scores called before fit")
        emb = patch_embeddings(feats, self.layers)
        b, d, h, w = emb.shape
        q = emb.permute(0, 2, 3, 1).reshape(-1, d)
        best = torch.full((q.shape[0],), float("inf"), device=q.device)
        for lo in range(0, self.bank.shape[0], self.chunk):
            best = torch.minimum(best, torch.cdist(q, self.bank[lo: lo + self.chunk]).amin(dim=1))
        return best.view(b, h, w)

    @staticmethod
    def to_maps(patch_scores: torch.Tensor, size: int) -> torch.Tensor:
        """(B, size, size) anomaly maps: bilinear upsampling, then Gaussian smoothing (sigma 4 at 256 px)."""
        up = F.interpolate(patch_scores[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        return _gaussian_blur(up, 4.0 * size / 256)
