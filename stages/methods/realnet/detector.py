"""Save, load and run a trained RealNet: train_realnet saves the bundle, ``load_detector`` turns it into the
detector that evaluate, ``realnet predict`` and the bench call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from realnet_core.config import Config
from realnet_core.methods.realnet.realnet import RealNet
from realnet_core.metrics import image_scores
from realnet_core.runtime import accelerate, autocast
from stages.common import open_bundle, write_bundle

BUNDLE = "realnet.pt"


def save_bundle(path: Path, model: RealNet, backbone: str, backbone_weights: str | None, image_size: int) -> None:
    write_bundle(path, "realnet", model, backbone, backbone_weights, image_size)


def load_bundle(model: str | Path, device: torch.device) -> tuple[torch.nn.Module, RealNet, dict[str, Any]]:
    return open_bundle(model, BUNDLE, "realnet", "RealNet", "train_realnet", RealNet, device)


@torch.no_grad()
def anomaly_maps(backbone: torch.nn.Module, net: RealNet, images: torch.Tensor, bf16: bool = True) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, H, W) anomaly probability at the input size."""
    with autocast(images.device, bf16):
        out = net(backbone(images), out_size=tuple(images.shape[-2:]))
    return out["anomaly_map"].float()


def default_pool(image_size: int) -> int:
    """The paper's 16 x 16 pooling at 256 px, scaled to the model's input size (the demo's 8 at 128 px), as
    the profiles evaluate: the image score of a predict call is then the score evaluate gave the image."""
    return max(1, round(16 * image_size / 256))


class RealNetDetector:
    """A trained RealNet behind the method seam: anomaly maps, and image scores as the max of the
    ``pool`` x ``pool`` average-pooled map (the authors' evaluation)."""

    def __init__(self, backbone: torch.nn.Module, net: RealNet, image_size: int, bf16: bool = True,
                 pool: int | None = None) -> None:
        self.backbone, self.net, self.image_size, self.bf16 = backbone, net, image_size, bf16
        self.pool = pool or default_pool(image_size)

    def anomaly_maps(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, H, W) anomaly probability at the input size."""
        return anomaly_maps(self.backbone, self.net, images, self.bf16)

    def score(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.anomaly_maps(images)
        return maps, image_scores(maps, self.pool)


def load_detector(model: str | Path, device: torch.device, cfg: Config | None = None) -> RealNetDetector:
    """The detector of a train_realnet artifact (or its ``realnet.pt``); with ``cfg``, its networks run as
    ``runtime.compile`` and ``runtime.bf16`` say (evaluate), else eagerly with bf16 on a GPU (predict)."""
    backbone, net, bundle = load_bundle(model, device)
    if cfg is None:
        return RealNetDetector(backbone, net, int(bundle["image_size"]))
    return RealNetDetector(accelerate(backbone, cfg, device), accelerate(net, cfg, device),
                           int(bundle["image_size"]), cfg.runtime.bf16, cfg.evaluate.pool_size)
