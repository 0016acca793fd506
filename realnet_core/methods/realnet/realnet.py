"""RealNet detector head: AFS channel selection, per-layer reconstruction, RRS, discriminator.

Tensors in, tensors out: the frozen backbone lives elsewhere (`realnet_core.features`), and this
module receives its 4 feature maps. Training follows Eq. 6, loss = L_recon + L_seg:

- L_recon (Eq. 5): for each layer k, MSE between G_k(varphi_k(A)) and varphi_k(I), averaged over
  all elements of that layer, then summed over layers. The per-layer mean (the authors'
  `nn.MSELoss()` per layer) keeps every layer's weight independent of its width and resolution;
  an element sum would let the stride-4 layer (16x more positions than stride 16) dominate, and
  would change the balance with L_seg whenever m_k or the image size changes.
- L_seg: 2-class cross-entropy between the upsampled logits and the mask (> 0.5 is anomalous),
  averaged over pixels.

The segmentation gradient also reaches the reconstruction networks through the gathered raw
residuals, as in the authors' code (`stop_grad: False`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .discriminator import Discriminator
from .recon_unet import ReconUNet
from .rrs import ResidualSelector

__all__ = ["RealNet"]


class RealNet(nn.Module):
    """Reconstruction networks + RRS + discriminator over pre-computed backbone features.

    Args:
        channels: backbone width per layer (c_k), used to validate the indices and the inputs.
        selected: AFS-selected channel indices per layer (LongTensor, length m_k). Stored as
            buffers, so they are part of the state dict and move with `.to(device)`.
        ratio: RRS keep ratio (1/3 in the paper).
        recon_kwargs: extra `ReconUNet` arguments shared by all layers (not `in_channels`).
        disc_hidden: discriminator hidden width (default 128).
        disc_min_width: the narrowest of the discriminator's later convs (`Discriminator(min_width=...)`).
        disc_leak: negative slope of the discriminator's activations after its BatchNorm (0: ReLU).
        rrs_input: what RRS hands the discriminator, one of `rrs.OUTPUTS` (the authors' code: "raw").
            "paired" hands it 2r channels, which a 1x1 convolution maps onto its width r.
    """

    def __init__(
        self,
        channels: Sequence[int],
        selected: Sequence[Tensor | Sequence[int]],
        ratio: float = 1 / 3,
        recon_kwargs: dict[str, Any] | None = None,
        disc_hidden: int | None = None,
        rrs_input: str = "raw",
        disc_min_width: int = 2,
        disc_leak: float = 0.0,
    ) -> None:
        super().__init__()
        if len(channels) != len(selected):
            raise ValueError(f"{len(channels)} layers of channels but {len(selected)} index sets")
        self.channels = [int(c) for c in channels]
        self.ratio = float(ratio)
        self.recon_kwargs = dict(recon_kwargs or {})
        self.disc_hidden = disc_hidden
        self.rrs_input = rrs_input
        self.disc_min_width = int(disc_min_width)
        self.disc_leak = float(disc_leak)

        dims = []
        for k, (c, idx) in enumerate(zip(self.channels, selected, strict=True)):
            idx = torch.as_tensor(idx, dtype=torch.long).flatten().cpu()
            if idx.numel() == 0:
                raise ValueError(f"layer {k}: no channels selected")
            if int(idx.min()) < 0 or int(idx.max()) >= c:
                raise ValueError(f"layer {k}: selected indices must lie in [0, {c})")
            if idx.unique().numel() != idx.numel():
                raise ValueError(f"layer {k}: selected indices must be unique")
            self.register_buffer(f"selected_{k}", idx.clone())
            dims.append(idx.numel())
        self.dims = dims

        self.recon = nn.ModuleList(ReconUNet(m, **self.recon_kwargs) for m in dims)
        self.rrs = ResidualSelector(sum(dims), ratio=self.ratio, output=rrs_input)
        self.discriminator = Discriminator(
            self.rrs.out_channels, hidden=disc_hidden if disc_hidden is not None else 128, width=self.rrs.r,
            min_width=self.disc_min_width, leak=self.disc_leak,
        )

    # -- construction -------------------------------------------------------------------------

    @property
    def selected(self) -> list[Tensor]:
        """The AFS channel indices per layer (buffers)."""
        return [getattr(self, f"selected_{k}") for k in range(len(self.channels))]

    def config(self) -> dict[str, Any]:
        """JSON-serialisable arguments that rebuild this module (weights go in the state dict)."""
        return {
            "channels": list(self.channels),
            "selected": [s.tolist() for s in self.selected],
            "ratio": self.ratio,
            "recon_kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in self.recon_kwargs.items()},
            "disc_hidden": self.disc_hidden,
            "rrs_input": self.rrs_input,
            "disc_min_width": self.disc_min_width,
            "disc_leak": self.disc_leak,
        }

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> RealNet:
        """Inverse of `config()`."""
        return cls(
            channels=cfg["channels"],
            selected=[torch.as_tensor(s, dtype=torch.long) for s in cfg["selected"]],
            ratio=cfg.get("ratio", 1 / 3),
            recon_kwargs=cfg.get("recon_kwargs"),
            disc_hidden=cfg.get("disc_hidden"),
            # Models saved before "paired" existed stored a flag.
            rrs_input=cfg.get("rrs_input", "normed" if cfg.get("rrs_normed") else "raw"),
            disc_min_width=cfg.get("disc_min_width", 2),  # files saved before these two were arguments
            disc_leak=cfg.get("disc_leak", 0.0),
        )

    # -- forward ------------------------------------------------------------------------------

    def select_features(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """varphi_k: keep the AFS-selected channels of each backbone map."""
        if len(feats) != len(self.channels):
            raise ValueError(f"expected {len(self.channels)} feature maps, got {len(feats)}")
        out = []
        for k, (f, idx) in enumerate(zip(feats, self.selected, strict=True)):
            if f.dim() != 4 or f.shape[1] != self.channels[k]:
                raise ValueError(f"layer {k}: expected (B, {self.channels[k]}, H, W), got {tuple(f.shape)}")
            out.append(f.index_select(1, idx))
        return out

    def forward(
        self,
        feats_aug: Sequence[Tensor],
        feats_normal: Sequence[Tensor] | None = None,
        out_size: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        """Run the head.

        Args:
            feats_aug: backbone maps of the (possibly anomalous) input images, one per layer.
            feats_normal: backbone maps of the matching normal images; only for training.
            out_size: (H, W) of the image; None gives the logits at twice the stride-4 resolution.

        Returns:
            dict with `recon` (list of G_k(varphi_k(A))), `recon_loss` (scalar; zero when
            `feats_normal` is None), `logits` (B, 2, H, W), `anomaly_map` (B, H, W) = P(anomalous),
            and `rrs_indices` (B, r) the residual channels chosen per image (2r when paired: m' + c
            names channel c's normalised copy).
        """
        inputs = self.select_features(feats_aug)
        recon = [g(x) for g, x in zip(self.recon, inputs, strict=True)]
        residuals = [(x - y) ** 2 for x, y in zip(inputs, recon, strict=True)]

        if feats_normal is not None:
            # The backbone is frozen; detaching the target makes that explicit.
            targets = [t.detach() for t in self.select_features(feats_normal)]
            recon_loss = torch.stack([F.mse_loss(y, t) for y, t in zip(recon, targets, strict=True)]).sum()
        else:
            recon_loss = inputs[0].new_zeros(())

        chosen, indices = self.rrs(residuals, return_indices=True)
        logits = self.discriminator(chosen, out_size)
        anomaly_map = logits.softmax(dim=1)[:, 1]
        return {
            "recon": recon,
            "recon_loss": recon_loss,
            "logits": logits,
            "anomaly_map": anomaly_map,
            "rrs_indices": indices,
        }

    def loss(self, out: dict[str, Any], masks: Tensor) -> dict[str, Tensor]:
        """Eq. 6. `masks` (B, 1, H, W) in {0, 1}; resized (nearest) if not at the logits' size."""
        logits = out["logits"]
        if masks.dim() == 3:
            masks = masks.unsqueeze(1)
        if tuple(masks.shape[-2:]) != tuple(logits.shape[-2:]):
            masks = F.interpolate(masks.float(), size=tuple(logits.shape[-2:]), mode="nearest")
        labels = (masks[:, 0] > 0.5).long()
        seg = F.cross_entropy(logits, labels)
        recon = out.get("recon_loss")
        if recon is None:
            recon = seg.new_zeros(())
        return {"total": recon + seg, "recon": recon, "seg": seg}
