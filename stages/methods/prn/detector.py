"""Save, load and run a trained PRN: train_prn saves the bundle, ``load_detector`` turns it into the detector
that evaluate, ``realnet predict`` and the bench call. Its image score is the mean of the ``top_k`` highest
pixels of the anomaly map (PRN sec. 3.5 and 4.1: the top 100 at 256 px)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from realnet_core.config import Config
from realnet_core.methods.prn import PRN
from realnet_core.runtime import accelerate, autocast
from stages.common import open_bundle, write_bundle

BUNDLE = "prn.pt"


def save_bundle(path: Path, net: PRN, backbone: str, backbone_weights: str | None, image_size: int,
                top_k: int) -> None:
    write_bundle(path, "prn", net, backbone, backbone_weights, image_size, top_k=top_k)


def load_bundle(model: str | Path, device: torch.device) -> tuple[torch.nn.Module, PRN, dict[str, Any]]:
    return open_bundle(model, BUNDLE, "prn", "PRN", "train_prn", PRN, device)


def top_k_scores(maps: torch.Tensor, k: int) -> torch.Tensor:
    """(B, H, W) maps -> (B,) mean of each map's k highest pixels (all of them for a smaller map)."""
    flat = maps.flatten(1)
    return flat.topk(min(k, flat.shape[1]), dim=1).values.mean(dim=1)


class PRNDetector:
    """A trained PRN behind the method seam: the sigmoid map of the decoder, and its top-k mean as the image
    score. Pure torch on the device, so ``score`` traces to ONNX."""

    def __init__(self, backbone: torch.nn.Module, net: PRN, image_size: int, top_k: int, bf16: bool = True) -> None:
        self.backbone, self.net, self.image_size, self.top_k, self.bf16 = backbone, net, image_size, top_k, bf16

    @torch.no_grad()
    def anomaly_maps(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, H, W) anomaly probability at the input size."""
        with autocast(images.device, self.bf16):
            logits = self.net(self.backbone(images)[:3], out_size=tuple(images.shape[-2:]))
        return torch.sigmoid(logits.float())[:, 0]

    def score(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.anomaly_maps(images)
        # k from the model's own size, not the tensor's shape: a traced graph keeps it as a constant.
        k = min(self.top_k, self.image_size ** 2)
        return maps, maps.flatten(1).topk(k, dim=1).values.mean(dim=1)


def load_detector(model: str | Path, device: torch.device, cfg: Config | None = None) -> PRNDetector:
    """The detector of a train_prn artifact (or its ``prn.pt``); with ``cfg``, its networks run as
    ``runtime.compile`` and ``runtime.bf16`` say (evaluate), else eagerly with bf16 on a GPU (predict)."""
    backbone, net, bundle = load_bundle(model, device)
    size, k = int(bundle["image_size"]), int(bundle["top_k"])
    if cfg is None:
        return PRNDetector(backbone, net, size, k)
    return PRNDetector(accelerate(backbone, cfg, device), accelerate(net, cfg, device), size, k, cfg.runtime.bf16)
