"""RealNet's hooks for ``realnet bench`` (``Method.bench_train_step`` and ``bench_detector``): its own training
step and detector at the config's sizes, on random images, weights and AFS selection (speed does not depend
on them)."""

from __future__ import annotations

from typing import Any

import torch

from realnet_core.config import Config
from realnet_core.features.backbones import build_backbone
from realnet_core.methods.realnet.realnet import RealNet
from realnet_core.runtime import accelerate, adam, for_inference
from stages.methods.realnet.detector import RealNetDetector
from stages.methods.realnet.train_realnet import build_model, normal_features, train_step
from stages.training_data import TrainingData, synth_kwargs


def random_selection(channels: list[int], dims: list[int]) -> list[torch.Tensor]:
    """A fixed random AFS selection of ``dims`` channels per layer: speed and memory do not depend on which."""
    gen = torch.Generator().manual_seed(2)
    return [torch.randperm(c, generator=gen)[:m].sort().values for c, m in zip(channels, dims, strict=True)]


def random_model(cfg: Config, channels: list[int]) -> RealNet:
    """The config's RealNet head on a random AFS selection of ``afs.dims`` channels."""
    return build_model(cfg, channels, random_selection(channels, list(cfg.afs.dims)))


def bench_train_step(cfg: Config, device: torch.device) -> tuple[Any, dict[str, Any]]:
    """One training step as train_realnet repeats it: the normal images' features cached, SIA in memory."""
    backbone = build_backbone(cfg.backbone.name, "random").to(device)
    net = random_model(cfg, list(backbone.channels)).to(device).train()
    features, forward = accelerate(backbone, cfg, device), accelerate(net, cfg, device)
    opt, data = adam(net.parameters(), cfg.train.lr, device), TrainingData.random(cfg, device)
    cache = normal_features(backbone, features, data, cfg, device)
    gen, kwargs = torch.Generator().manual_seed(4), synth_kwargs(cfg)

    def step() -> torch.Tensor:  # the stage reads its losses back once per epoch: no sync here
        return train_step(net, forward, features, opt, data, gen, cfg, device, kwargs, cache=cache)

    return step, {"batch": cfg.train.batch_size, "params": sum(p.numel() for p in net.parameters())}


def random_detector(cfg: Config, device: torch.device) -> RealNetDetector:
    """The config's detector with random weights, as evaluate builds it."""
    backbone = for_inference(build_backbone(cfg.backbone.name, "random").to(device))
    net = for_inference(random_model(cfg, list(backbone.channels)).to(device))
    return RealNetDetector(accelerate(backbone, cfg, device), accelerate(net, cfg, device), cfg.data.image_size,
                           cfg.runtime.bf16, cfg.evaluate.pool_size)
