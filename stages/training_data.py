"""The training data of stages 3 and 4: normal images, foreground masks and an anomaly source.

The source is SIA (the default, from the generate_sia artifact), a DTD-style texture folder or
CutPaste. Detectors other than RealNet reuse this unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from realnet_core.config import Config
from realnet_core.data.readers import CategorySplit
from realnet_core.runtime import autocast, to_device
from realnet_core.synthesis.blend import synthesize
from realnet_core.synthesis.sources import CutPasteSource, SIASource, TextureSource, with_own_images, with_shaded_images
from stages.common import StageContext
from stages.inputs import (
    category_split,
    files_fingerprint,
    foreground_masks,
    foreground_of,
    to_tensor,
    train_fingerprint,
    train_images,
)
from storage.arrays import ArrayCorruptError, open_image_array, read_attrs, read_rows

# The files stages 3 and 4 read besides the dataset: the backbone's weights, a texture source's folder.
TRAINING_FILES = ("backbone.weights", "synthesis.texture_root")


def synthesis_key(cfg: Config, exclude: set[str] | None = None) -> dict[str, Any]:
    """The synthesis settings as they enter stages 3 and 4's keys; the texture folder only when it is the source,
    the SIA augmentation only when the SIA are and it is on, the own-image and shade shares only when on (the keys of
    the runs without them stay as they were)."""
    unused = set(exclude or ()) | ({"texture_root"} if cfg.synthesis.source != "texture" else set())
    if cfg.synthesis.source != "sia" or not cfg.synthesis.sia_augment:
        unused.add("sia_augment")
    unused |= {name for name in ("self_augment", "shade") if not getattr(cfg.synthesis, name)}
    return cfg.section("synthesis", exclude=unused)


def training_fingerprint(cfg: Config, dataset: str, category: str) -> str:
    """The category's training images, the files named by TRAINING_FILES and a configured foreground rule
    (only where ``data.foreground`` names one, so that the keys of every other category stay as they were)."""
    parts = [train_fingerprint(cfg, dataset, category), *files_fingerprint(cfg, TRAINING_FILES)]
    if category in cfg.data.foreground:
        parts.append(f"foreground={foreground_of(cfg, dataset, category)}")
    return ",".join(parts)


@dataclass
class TrainingData:
    images: torch.Tensor  # (N, 3, H, W) float [0, 1], on the stage device
    foreground: torch.Tensor  # (N, 1, H, W) float {0, 1}
    source: object
    size: int
    self_augment: float = 0.0  # the share of rows whose source is their own image, augmented (train_realnet's)
    shade: float = 0.0  # the share of rows whose source is their own image, darkened (train_realnet's)

    def batch(self, n: int, gen: torch.Generator, normal_fraction: float, synth_kwargs: dict,
              sources: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(normal, augmented, mask) for n random training images.

        ``sources``: the n anomaly-source images, when a loader (stages.loaders) already drew them;
        otherwise they are drawn here, from ``gen``.
        """
        return self.indexed_batch(n, gen, normal_fraction, synth_kwargs, sources)[1:]

    def indexed_batch(self, n: int, gen: torch.Generator, normal_fraction: float, synth_kwargs: dict,
                      sources: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """``batch``, with the training-image index of each row first: (index, normal, augmented, mask)."""
        idx = to_device(torch.randint(0, len(self.images), (n,), generator=gen), self.images.device)
        normal, fg = self.images[idx], self.foreground[idx]
        src = to_device(sources if sources is not None else self.source.sample(n, gen, self.size), normal.device)
        src = with_own_images(normal, src, self.self_augment, gen)
        src = with_shaded_images(normal, src, self.shade, gen)
        aug, mask = synthesize(normal, src, fg, generator=gen, normal_fraction=normal_fraction, **synth_kwargs)
        return idx, normal, aug, mask


    @classmethod
    def random(cls, cfg: Config, device: torch.device, n_images: int = 32) -> TrainingData:
        """Random normal images and a random in-memory SIA array at the config's sizes, for ``realnet bench``
        (speed does not depend on the pixels)."""
        size, gen = cfg.data.image_size, torch.Generator().manual_seed(1)
        images = torch.rand(n_images, 3, size, size, generator=gen).to(device)
        sia_size = cfg.diffusion.image_size
        sia = np.random.default_rng(0).integers(0, 256, (64, sia_size, sia_size, 3), dtype=np.uint8)
        return cls(images, torch.ones(n_images, 1, size, size, device=device), SIASource(sia), size)


class StoredSIASource(SIASource):
    """The generate_sia artifact as an SIA source: reads by whole chunks, errors that name the array."""

    def __init__(self, path: str, augment: float = 0.0) -> None:
        self.path = path
        try:
            array = open_image_array(path)
            tones = read_attrs(path).get("tone_curve")
            super().__init__(array, None if tones is None else np.asarray(tones, dtype=np.uint8), augment)
        except Exception as e:
            raise ArrayCorruptError(f"cannot open SIA images {path}/images: {e}") from e

    def _read(self, indices: np.ndarray) -> np.ndarray:
        try:
            return read_rows(self.array, indices)
        except Exception as e:
            raise ArrayCorruptError(
                f"SIA images {self.path}/images are corrupt or truncated (reading images "
                f"{indices[:8].tolist()}): {e}; rerun with --rerun generate_sia"
            ) from e


def load_training_data(ctx: StageContext, split: CategorySplit | None = None, augmented: bool = False) -> TrainingData:
    """Training images, foreground masks and the anomaly source; `split` saves listing the category again;
    ``augmented``: with synthesis.sia_augment and synthesis.self_augment applied (train_realnet's), else the
    sources as sampled (AFS)."""
    cfg = ctx.cfg
    sia_augment = cfg.synthesis.sia_augment if augmented else 0.0
    self_augment = cfg.synthesis.self_augment if augmented else 0.0
    shade = cfg.synthesis.shade if augmented else 0.0
    size = cfg.data.image_size
    split = split or category_split(cfg, ctx.dataset, ctx.category)
    imgs = train_images(split, size)
    fg = foreground_masks(imgs, foreground_of(cfg, ctx.dataset, ctx.category), cfg.synthesis.use_foreground)
    if cfg.synthesis.source == "sia":
        source = StoredSIASource(f"{ctx.upstream_path('generate_sia')}/sia.zarr", sia_augment)
    elif cfg.synthesis.source == "texture":
        source = TextureSource(cfg.synthesis.texture_root)
    else:
        source = CutPasteSource(imgs)
    fg_t = torch.from_numpy(fg.astype(np.float32))[:, None].to(ctx.device)
    return TrainingData(to_tensor(imgs, ctx.device), fg_t, source, size, self_augment, shade)


def synth_kwargs(cfg) -> dict:
    lo, hi = cfg.synthesis.perlin_scale_exp
    return {"delta_range": tuple(cfg.synthesis.delta), "min_scale_exp": lo, "max_scale_exp": hi}


@torch.no_grad()
def paired_features(backbone: torch.nn.Module, aug: torch.Tensor, normal: torch.Tensor, device: torch.device,
                    bf16: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Float backbone features of the augmented and the normal images, from one batched pass.

    One pass of 2B images keeps a GPU busier than two of B; the backbone is frozen in eval mode, so
    batching them together changes nothing else.
    """
    feats, n = _features(backbone, torch.cat([aug, normal]), device, bf16), len(aug)
    return [f[:n] for f in feats], [f[n:] for f in feats]


class NormalFeatures:
    """The frozen backbone's features of every training image, computed once.

    A normal image has the same features at every step, and a sample ``synthesize`` left normal is the
    image itself, so a training step needs the backbone only for the rows an anomaly was blended into:
    on the CPU profile that is a quarter of the images ``paired_features`` passes (8 of 2 x 16).
    """

    def __init__(self, backbone: torch.nn.Module, images: torch.Tensor, device: torch.device, bf16: bool,
                 batch_size: int = 16) -> None:
        parts = [_features(backbone, images[i: i + batch_size], device, bf16)
                 for i in range(0, len(images), batch_size)]
        self.maps = [torch.cat(layer) for layer in zip(*parts, strict=True)]

    @staticmethod
    def nbytes(backbone: torch.nn.Module, images: torch.Tensor) -> int:
        """What the cache of ``images`` would hold, from one image's features."""
        with torch.no_grad():
            one = backbone(images[:1])
        return len(images) * sum(f[0].numel() * 4 for f in one)

    def pair(self, backbone: torch.nn.Module, idx: torch.Tensor, aug: torch.Tensor, mask: torch.Tensor,
             device: torch.device, bf16: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(features of the augmented rows, features of their normal images), as ``paired_features`` gives."""
        normal = [m[idx] for m in self.maps]
        if device.type == "cuda":  # one shape every step and no wait on the GPU: the backbone sees every row
            return _features(backbone, aug, device, bf16), normal
        rows = (mask.flatten(1).amax(1) > 0).nonzero().flatten()
        augmented = [n.clone() for n in normal]
        if len(rows):
            for out, f in zip(augmented, _features(backbone, aug[rows], device, bf16), strict=True):
                out[rows] = f
        return augmented, normal


@torch.no_grad()
def _features(backbone: torch.nn.Module, images: torch.Tensor, device: torch.device, bf16: bool) -> list[torch.Tensor]:
    with autocast(device, bf16):
        return [f.float() for f in backbone(images)]
