"""Anomaly-aware Features Selection (AFS), RealNet Eq. 4.

For layer k and channel i, over N synthetic triplets (A_n, I_n, M_n):

    L(k, i) = 1/N sum_n mean_pixels( (F([phi_ki(A_n) - phi_ki(I_n)]^2) - M_n)^2 )

F min-max normalises each channel over the batch (minimum and maximum over images and pixels),
and the mask is resized (nearest) to the feature resolution. The m_k channels with the lowest
loss are kept. Losses are accumulated as per-image sums, so any number of batches can be fed in;
the normalisation is per batch, as in the authors' code (batches of 16 in the paper).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    import pandas as pd

EPS = 1e-12


def _layer_name(k: int, layer_names: Sequence[str] | None) -> str:
    return layer_names[k] if layer_names is not None else f"layer{k + 1}"


def afs_layer_loss(feat_anom: torch.Tensor, feat_norm: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel AFS loss for one layer: (B, C) float32."""
    if feat_anom.shape != feat_norm.shape or feat_anom.ndim != 4:
        raise ValueError(
            f"feature shapes differ or are not 4-D: {tuple(feat_anom.shape)} vs {tuple(feat_norm.shape)}"
        )
    b, _, h, w = feat_anom.shape
    if masks.ndim != 4 or masks.shape[:2] != (b, 1):
        raise ValueError(f"masks must be (B, 1, H, W) with B={b}, got {tuple(masks.shape)}")
    d = (feat_anom.float() - feat_norm.float()).pow_(2)
    lo = d.amin(dim=(0, 2, 3), keepdim=True)
    hi = d.amax(dim=(0, 2, 3), keepdim=True)
    # Constant channels (hi == lo) normalise to 0 instead of dividing by zero.
    d = (d - lo) / (hi - lo).clamp_min(EPS)
    m = F.interpolate(masks.to(d.device, torch.float32), size=(h, w), mode="nearest")
    return (d - m).pow_(2).mean(dim=(2, 3))


def afs_batch_losses(
    feats_anom: Sequence[torch.Tensor], feats_norm: Sequence[torch.Tensor], masks: torch.Tensor
) -> list[torch.Tensor]:
    """Per-channel AFS losses of one batch, summed over its images: one (C_k,) float64 tensor per layer."""
    if len(feats_anom) != len(feats_norm):
        raise ValueError(f"got {len(feats_anom)} anomalous and {len(feats_norm)} normal feature maps")
    # Summing in float64 keeps the mean over 1000+ images exact enough for stable rankings.
    return [
        afs_layer_loss(a, n, masks).double().sum(dim=0) for a, n in zip(feats_anom, feats_norm, strict=True)
    ]


class AFSAccumulator:
    """Accumulates AFS losses over batches; ``losses()`` gives the mean over all images seen (on the CPU).

    The sums stay on the features' device until ``losses()``: moving each batch's to the host would
    make the host wait for the GPU at every batch.
    """

    def __init__(self, channels: Sequence[int]) -> None:
        self.channels = [int(c) for c in channels]
        self.sums = [torch.zeros(c, dtype=torch.float64) for c in self.channels]
        self.count = 0

    def update(
        self, feats_anom: Sequence[torch.Tensor], feats_norm: Sequence[torch.Tensor], masks: torch.Tensor
    ) -> None:
        if len(feats_anom) != len(self.channels):
            raise ValueError(f"expected {len(self.channels)} feature maps, got {len(feats_anom)}")
        for k, f in enumerate(feats_anom):
            if f.shape[1] != self.channels[k]:
                raise ValueError(f"layer{k + 1}: expected {self.channels[k]} channels, got {f.shape[1]}")
        batch = afs_batch_losses(feats_anom, feats_norm, masks)
        self.sums = [total.to(s.device) + s for total, s in zip(self.sums, batch, strict=True)]
        self.count += int(masks.shape[0])

    def losses(self) -> list[torch.Tensor]:
        if self.count == 0:
            raise RuntimeError("AFSAccumulator.losses() called before any update()")
        return [s.cpu() / self.count for s in self.sums]


def select_channels(
    losses: Sequence[torch.Tensor], dims: Sequence[int], layer_names: Sequence[str] | None = None
) -> list[torch.Tensor]:
    """Indices of the ``dims[k]`` lowest-loss channels of each layer, sorted by channel index.

    Ties are broken by channel index (stable sort), so the selection is reproducible.
    """
    if len(losses) != len(dims):
        raise ValueError(f"got losses for {len(losses)} layers but {len(dims)} dims")
    selected = []
    for k, (loss, m) in enumerate(zip(losses, dims, strict=True)):
        c = int(loss.numel())
        name = _layer_name(k, layer_names)
        if not 0 < m <= c:
            raise ValueError(f"{name}: cannot select {m} channels, the layer has {c}")
        if torch.isnan(loss).any():
            raise ValueError(f"{name}: AFS losses contain NaN")
        order = torch.sort(loss.detach().cpu().flatten(), stable=True).indices
        selected.append(torch.sort(order[:m]).values.long())
    return selected


def afs_ranks(loss: torch.Tensor) -> torch.Tensor:
    """Rank of each channel (0 = lowest loss), ties by channel index."""
    order = torch.sort(loss.detach().cpu().flatten(), stable=True).indices
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.numel())
    return ranks


def afs_table(
    losses: Sequence[torch.Tensor], selected: Sequence[torch.Tensor], layer_names: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per (layer, channel): columns layer, channel, loss, rank (0 = best), selected."""
    import pandas as pd

    frames = []
    for k, loss in enumerate(losses):
        loss = loss.detach().cpu().double().flatten()
        chosen = torch.zeros(loss.numel(), dtype=torch.bool)
        chosen[selected[k].cpu().long()] = True
        frames.append(
            pd.DataFrame(
                {
                    "layer": _layer_name(k, layer_names),
                    "channel": torch.arange(loss.numel()).numpy(),
                    "loss": loss.numpy(),
                    "rank": afs_ranks(loss).numpy(),
                    "selected": chosen.numpy(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
