"""The profile's networks with random weights, as the stages build them: speed and memory do not depend on
the weights, so the bench, the roofline and the memory model need no trained artifact."""

from __future__ import annotations

import torch

from realnet_core.config import Config


def prepare(module: torch.nn.Module, device: torch.device, channels_last: bool) -> torch.nn.Module:
    module = module.to(device)
    return module.to(memory_format=torch.channels_last) if channels_last else module


def backbone(cfg: Config, device: torch.device, channels_last: bool) -> torch.nn.Module:
    from realnet_core.features.backbones import build_backbone

    return prepare(build_backbone(cfg.backbone.name, weights="random"), device, channels_last)


def realnet(cfg: Config, backbone: torch.nn.Module, device: torch.device, channels_last: bool) -> torch.nn.Module:
    from stages.methods.realnet.bench import random_model

    return prepare(random_model(cfg, list(backbone.channels)), device, channels_last)


def inference_models(cfg: Config, device: torch.device,
                     channels_last: bool = False) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The profile's backbone and RealNet head (random weights), as evaluation loads them."""
    from realnet_core.runtime import for_inference

    net = for_inference(backbone(cfg, device, channels_last))
    return net, for_inference(realnet(cfg, net, device, channels_last))
