"""Reconstruction Residuals Selection (RRS, paper section 3.3 and appendix B).

The per-layer residuals E_k = (varphi_k(A) - G_k(varphi_k(A)))^2 are upsampled to the largest
(stride-4) resolution and concatenated into E (B, m', H', W'). Per image, the r/2 channels with the
largest spatial maximum (local, small anomalies) and the r/2 channels with the largest spatial mean
(large anomalies) are kept and concatenated into E_RRS (B, r, H', W').

Because the residuals come from separate networks, their scales differ per channel; a BatchNorm2d
without affine parameters puts them on a common scale (appendix B). The authors' code uses it only
for ranking and gathers the raw residuals (``output="raw"``); ``"normed"`` gathers the normalised
ones, so the discriminator sees every channel on the scale it was ranked on; ``"paired"`` gathers each
pick twice, raw then normalised (2r channels): the raw scale keeps strong shallow residuals sharp, the
normalised one lets a deep or a below-normal residual count. The selection is
index-based and has no learnable parameters; the gradient flows through the gathered residuals into
the reconstruction networks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["OUTPUTS", "ResidualSelector", "concat_residuals"]

OUTPUTS = ("raw", "normed", "paired")


def concat_residuals(residuals: list[Tensor]) -> Tensor:
    """Upsample each (B, C_k, H_k, W_k) map bilinearly to the largest H and W, concat on channels."""
    if not residuals:
        raise ValueError("need at least one residual map")
    height = max(r.shape[-2] for r in residuals)
    width = max(r.shape[-1] for r in residuals)
    aligned = [
        r
        if r.shape[-2:] == (height, width)
        else F.interpolate(r, size=(height, width), mode="bilinear", align_corners=False)
        for r in residuals
    ]
    return torch.cat(aligned, dim=1)


class ResidualSelector(nn.Module):
    """Per-image top-k channel selection of the concatenated reconstruction residuals.

    Args:
        total_channels: m' = sum of the per-layer reconstructed widths.
        ratio: fraction of channels kept. r = 2 * round(ratio * m' / 2), so that the max and mean
            halves are equal (m' = 1536, ratio 1/3 gives 256 + 256, the authors' setting).
        momentum: BatchNorm running-statistics momentum (PyTorch convention). The default 0.1
            averages over many batches, so the ranking at evaluation time does not hinge on the
            last training batch.
        output: what is gathered: "raw", "normed" or "paired" (both, raw first).

    Max and mean picks may name the same channel; both copies are kept (the output always has
    exactly r channels, which the discriminator's input width relies on).
    """

    def __init__(self, total_channels: int, ratio: float = 1 / 3, momentum: float = 0.1, output: str = "raw") -> None:
        super().__init__()
        if total_channels < 1:
            raise ValueError("total_channels must be positive")
        if not 0.0 < ratio <= 1.0:
            raise ValueError("ratio must be in (0, 1]")
        self.total_channels = total_channels
        self.ratio = ratio
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.output = output
        self.k = min(max(1, round(ratio * total_channels / 2)), total_channels)
        self.bn = nn.BatchNorm2d(total_channels, affine=False, momentum=momentum)

    @property
    def r(self) -> int:
        """r: the channels picked per image (the max half and the mean half)."""
        return 2 * self.k

    @property
    def out_channels(self) -> int:
        """The number of channels the selector returns: r, or 2r when paired."""
        return (2 if self.output == "paired" else 1) * self.r

    def forward(
        self, residuals: list[Tensor], return_indices: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Select residual channels per image.

        Args:
            residuals: per-layer squared residuals (B, m_k, H_k, W_k).
            return_indices: also return the chosen channel indices (B, r).

        Returns:
            (B, r, H', W') residual channels (2r when paired), with H', W' the largest input sizes.
        """
        energy = concat_residuals(residuals)
        if energy.shape[1] != self.total_channels:
            raise ValueError(f"expected {self.total_channels} channels, got {energy.shape[1]}")
        # One BatchNorm pass (updating its running statistics in training mode) ranks the channels;
        # its gradient is kept only where the discriminator is handed its output.
        with torch.set_grad_enabled(self.output != "raw" and torch.is_grad_enabled()):
            normed = self.bn(energy)
        flat = normed.detach().flatten(2)
        by_max = flat.amax(dim=-1).topk(self.k, dim=1).indices
        by_mean = flat.mean(dim=-1).topk(self.k, dim=1).indices
        idx = torch.cat([by_max, by_mean], dim=1)
        b, m, h, w = energy.shape
        where = idx[:, :, None, None].expand(b, idx.shape[1], h, w)
        sources = {"raw": [energy], "normed": [normed], "paired": [energy, normed]}[self.output]
        selected = torch.cat([x.gather(1, where) for x in sources], dim=1)
        if self.output == "paired":  # index m' + c names channel c's normalised copy
            idx = torch.cat([idx, idx + m], dim=1)
        return (selected, idx) if return_indices else selected
