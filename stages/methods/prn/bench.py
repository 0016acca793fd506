"""PRN's hooks for ``realnet bench`` (``Method.bench_train_step`` and ``bench_detector``): its own training
step and detector at the config's sizes, on random images and weights (speed does not depend on them)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from realnet_core.config import Config
from realnet_core.features.backbones import build_backbone
from realnet_core.runtime import accelerate, for_inference
from stages.methods.prn.batches import PRNData
from stages.methods.prn.detector import PRNDetector
from stages.methods.prn.train_prn import build_model, train_step

PROTOTYPES = 10  # per scale: the paper's 10% of a category of about 100 training images


def _data(cfg: Config, n_images: int = 16) -> PRNData:
    """Random normal images and two random seen anomalies, so that a batch holds normal, extended and
    simulated samples, as the paper's protocol trains."""
    size, rng = cfg.data.image_size, np.random.default_rng(0)
    images = rng.integers(0, 256, (n_images, size, size, 3), dtype=np.uint8)
    masks = np.zeros((2, size, size), bool)
    masks[:, size // 4: size // 2, size // 4: size // 2] = True
    return PRNData(images, np.ones((n_images, size, size), bool), images[:2].copy(), masks, None, tuple(cfg.prn.beta))


def bench_train_step(cfg: Config, device: torch.device) -> tuple[Any, dict[str, Any]]:
    """One training step as train_prn repeats it; the batch is made on the host, as the stage does."""
    backbone = build_backbone(cfg.backbone.name, "random").to(device)
    net = build_model(cfg, list(backbone.channels), [PROTOTYPES] * 3).to(device).train()
    features, forward = accelerate(backbone, cfg, device), accelerate(net, cfg, device)
    opt, data, gen = torch.optim.Adam(net.parameters(), lr=cfg.prn.lr), _data(cfg), torch.Generator().manual_seed(6)

    def step() -> torch.Tensor:  # the stage reads its losses back once per epoch: no sync here
        return train_step(net, forward, features, opt, data, gen, cfg, device)

    return step, {"batch": cfg.prn.batch_size, "params": sum(p.numel() for p in net.parameters())}


def random_detector(cfg: Config, device: torch.device) -> PRNDetector:
    """The config's detector with random weights, as evaluate builds it."""
    backbone = for_inference(build_backbone(cfg.backbone.name, "random").to(device))
    net = for_inference(build_model(cfg, list(backbone.channels), [PROTOTYPES] * 3).to(device))
    return PRNDetector(accelerate(backbone, cfg, device), accelerate(net, cfg, device), cfg.data.image_size,
                       cfg.prn.top_k, cfg.runtime.bf16)
