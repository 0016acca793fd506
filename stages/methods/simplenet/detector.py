"""Save, load and run a trained SimpleNet: train_simplenet saves the bundle, ``load_detector`` turns it into
the detector that evaluate, ``realnet predict`` and the bench call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from realnet_core.config import Config
from realnet_core.methods.simplenet import SimpleNet
from realnet_core.runtime import accelerate, autocast
from stages.common import open_bundle, write_bundle

BUNDLE = "simplenet.pt"


def save_bundle(path: Path, model: SimpleNet, backbone: str, backbone_weights: str | None, image_size: int) -> None:
    write_bundle(path, "simplenet", model, backbone, backbone_weights, image_size)


def load_bundle(model: str | Path, device: torch.device) -> tuple[torch.nn.Module, SimpleNet, dict[str, Any]]:
    return open_bundle(model, BUNDLE, "simplenet", "SimpleNet", "train_simplenet", SimpleNet, device)


def backbone_features(backbone: torch.nn.Module, images: torch.Tensor, bf16: bool) -> list[torch.Tensor]:
    """The frozen backbone's layers in float32 (bf16 autocast on a GPU only for the backbone itself)."""
    with torch.no_grad(), autocast(images.device, bf16):
        feats = backbone(images)
    return [f.float() for f in feats]


class SimpleNetDetector:
    """A trained SimpleNet behind the method seam: the smoothed patch-score map, and as image score the
    max of the raw patch scores (paper Eq. 11; the authors' code)."""

    def __init__(self, backbone: torch.nn.Module, net: SimpleNet, image_size: int, bf16: bool = True) -> None:
        self.backbone, self.net, self.image_size, self.bf16 = backbone, net, image_size, bf16

    @torch.no_grad()
    def score(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(backbone_features(self.backbone, images, self.bf16), out_size=tuple(images.shape[-2:]))
        return out["anomaly_map"].float(), out["image_score"].float()

    def anomaly_maps(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, H, W) smoothed patch anomaly scores at the input size."""
        return self.score(images)[0]


def load_detector(model: str | Path, device: torch.device, cfg: Config | None = None) -> SimpleNetDetector:
    """The detector of a train_simplenet artifact (or its ``simplenet.pt``); with ``cfg``, the backbone runs as
    ``runtime.compile`` and ``runtime.bf16`` say (evaluate), else eagerly with bf16 on a GPU (predict)."""
    backbone, net, bundle = load_bundle(model, device)
    if cfg is None:
        return SimpleNetDetector(backbone, net, int(bundle["image_size"]))
    return SimpleNetDetector(accelerate(backbone, cfg, device), net, int(bundle["image_size"]), cfg.runtime.bf16)

