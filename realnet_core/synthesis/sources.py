"""Anomaly sources P for image blending: SDAS images (SIA), textures (DTD-style), cut-paste.

Every source has ``sample(n, generator, size=None) -> Tensor (n, 3, size, size)`` float32 in [0, 1],
drawing all randomness from ``generator`` so that a seeded generator gives the same batch.
``size=None`` means the source's own size. :func:`build_source` creates one by name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from realnet_core.synthesis.augment import augment_textures
from realnet_core.synthesis.tones import apply_tone_curve

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class AnomalySource(Protocol):
    def sample(self, n: int, generator: torch.Generator, size: int | None = None) -> torch.Tensor: ...


def _randint(high: int, n: int, generator: torch.Generator) -> np.ndarray:
    return torch.randint(0, high, (n,), generator=generator, device=generator.device).cpu().numpy()


def _rand(n: int, generator: torch.Generator) -> np.ndarray:
    return torch.rand(n, generator=generator, device=generator.device, dtype=torch.float64).cpu().numpy()


def _to_tensor(batch: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float().div_(255.0)


def _resize(x: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or x.shape[-2:] == (size, size):
        return x
    # Antialiasing matters when shrinking (SIA at 256 -> a smaller demo size).
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp_(
        0, 1
    )


class SIASource:
    """Synthetic Industrial Anomaly images from an (N, H, W, 3) uint8 array (numpy or zarr).

    Indices are drawn with replacement; the distinct ones are read in one sorted selection. That is
    right for a Zarr array too, but zarr 3.1 decodes every chunk of each shard it touches: the stages
    read stored SIA through ``stages.training_data.StoredSIASource``, which reads single chunks.
    ``tones``: an optional (3, 256) uint8 lookup table applied to every image read (sia.match_tones).
    ``augment``: the share of the images drawn that then go through DRAEM's augmentation (synthesis.augment),
    each image drawn in or out on its own (synthesis.sia_augment).
    """

    def __init__(self, array: Any, tones: np.ndarray | None = None, augment: float = 0.0) -> None:
        shape = tuple(array.shape)
        if len(shape) != 4 or shape[-1] != 3:
            raise ValueError(f"SIA array must be (N, H, W, 3), got shape {shape}")
        if shape[0] == 0:
            raise ValueError("SIA array is empty")
        if tones is not None and (tones.shape != (3, 256) or tones.dtype != np.uint8):
            raise ValueError(f"SIA tone curve must be (3, 256) uint8, got {tones.dtype} {tones.shape}")
        if not 0 <= augment <= 1:
            raise ValueError(f"SIA augment share must lie in [0, 1], got {augment}")
        self.array = array
        self.tones = tones
        self.augment = float(augment)
        self.size = int(shape[1]) if shape[1] == shape[2] else None

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def _read(self, indices: np.ndarray) -> np.ndarray:
        if hasattr(self.array, "get_orthogonal_selection"):  # zarr
            return np.asarray(
                self.array.get_orthogonal_selection((indices, slice(None), slice(None), slice(None)))
            )
        return np.asarray(self.array[indices])

    def sample(self, n: int, generator: torch.Generator, size: int | None = None) -> torch.Tensor:
        idx = _randint(len(self), n, generator)
        unique, inverse = np.unique(idx, return_inverse=True)
        data = self._read(unique)
        if data.dtype != np.uint8:
            raise ValueError(f"SIA array must be uint8, got {data.dtype}")
        if self.tones is not None:
            data = apply_tone_curve(data, self.tones)
        batch = data[inverse.reshape(-1)]
        if self.augment:
            chosen = torch.rand(n, generator=generator, device=generator.device).cpu().numpy() < self.augment
            batch = np.where(chosen[:, None, None, None], augment_textures(batch, generator), batch)
        return _resize(_to_tensor(batch), size if size is not None else self.size)


def _check_rows(images: torch.Tensor, sources: torch.Tensor, share: float, name: str) -> None:
    """What both row replacements below need: sources shaped like the images and a share in [0, 1]."""
    if images.shape != sources.shape:
        raise ValueError(f"images {tuple(images.shape)} and sources {tuple(sources.shape)} differ in shape")
    if not 0 <= share <= 1:
        raise ValueError(f"{name} share must lie in [0, 1], got {share}")


def with_own_images(images: torch.Tensor, sources: torch.Tensor, share: float,
                    generator: torch.Generator) -> torch.Tensor:
    """``sources`` with a ``share`` of its rows replaced by the same row of ``images`` through DRAEM's augmentation
    (synthesis.self_augment): an anomaly made of the part's own surface, darker, lighter, blurred, recoloured or
    turned. Each row is drawn in or out on its own; no draw at all when ``share`` is 0."""
    _check_rows(images, sources, share, "own-image")
    if not share:
        return sources
    chosen = torch.rand(len(images), generator=generator, device=generator.device).cpu() < share
    if not chosen.any():
        return sources
    own = images[chosen.to(images.device)].mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    changed = _to_tensor(augment_textures(own.permute(0, 2, 3, 1).cpu().numpy(), generator))
    out = sources.clone()
    out[chosen.to(out.device)] = changed.to(out.device, out.dtype)
    return out


def with_shaded_images(images: torch.Tensor, sources: torch.Tensor, share: float,
                       generator: torch.Generator, factor: tuple[float, float] = (0.1, 0.5)) -> torch.Tensor:
    """``sources`` with a ``share`` of its rows replaced by the same row of ``images`` times a factor drawn in
    ``factor`` (synthesis.shade): a hole, pit or burn under top light, darker with its texture dimmed, which lowers
    the shallow features' residual where every other source raises it. No draw at all when ``share`` is 0."""
    _check_rows(images, sources, share, "shade")
    if not share:
        return sources
    u = torch.rand(2, len(images), generator=generator, device=generator.device).cpu()
    chosen = (u[0] < share).to(images.device)
    scale = (factor[0] + (factor[1] - factor[0]) * u[1]).to(images.device, images.dtype).view(-1, 1, 1, 1)
    return torch.where(chosen.view(-1, 1, 1, 1), images * scale, sources)


class TextureSource:
    """Random crops of texture images found recursively in a folder (e.g. DTD's ``images/``), each through
    DRAEM's augmentation (``augment``, on by default: the paper's DTD protocol; see synthesis.augment)."""

    def __init__(self, folder: str | Path, size: int = 256, min_crop: float = 0.5, augment: bool = True) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"texture folder does not exist: {self.folder}")
        self.files = sorted(
            p for p in self.folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not self.files:
            raise FileNotFoundError(
                f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under texture folder {self.folder}"
            )
        if not 0 < min_crop <= 1:
            raise ValueError(f"min_crop must be in (0, 1], got {min_crop}")
        self.size = size
        self.min_crop = min_crop
        self.augment = augment

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, path: Path) -> np.ndarray:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"cannot read texture image {path}")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def sample(self, n: int, generator: torch.Generator, size: int | None = None) -> torch.Tensor:
        size = size or self.size
        idx = _randint(len(self.files), n, generator)
        u = _rand(3 * n, generator).reshape(n, 3)
        out = np.empty((n, size, size, 3), dtype=np.uint8)
        for k in range(n):
            img = self._load(self.files[idx[k]])
            h, w = img.shape[:2]
            side = max(1, int(round(min(h, w) * (self.min_crop + (1 - self.min_crop) * u[k, 0]))))
            y = int(u[k, 1] * (h - side + 1)) if h > side else 0
            x = int(u[k, 2] * (w - side + 1)) if w > side else 0
            crop = img[y : y + side, x : x + side]
            interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
            out[k] = cv2.resize(crop, (size, size), interpolation=interp)
        return _to_tensor(augment_textures(out, generator) if self.augment else out)


class CutPasteSource:
    """Displaced, colour-jittered copies of training images.

    Each source is a training image (chosen at random) that is circularly shifted by a random
    offset of at least ``min_shift`` of the image side in each axis, optionally flipped, and
    colour-jittered. Every pixel of the source therefore comes from *another place* of a normal
    image, so blending it under a Perlin mask pastes misplaced, recoloured pieces of real object
    content into the target: a cut-paste anomaly with Perlin-shaped patches. (A source that only
    held one pasted rectangle would leave most of the Perlin region identical to a normal image.)
    """

    def __init__(
        self,
        images: np.ndarray,
        min_shift: float = 0.125,
        brightness: float = 0.3,
        contrast: float = 0.3,
        saturation: float = 0.3,
        flip: bool = True,
    ) -> None:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"CutPasteSource needs uint8 images (N, H, W, 3), got {images.dtype} {images.shape}"
            )
        if images.shape[0] == 0:
            raise ValueError("CutPasteSource needs at least one image")
        self.images = images
        self.min_shift = min_shift
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation
        self.flip = flip
        self.size = int(images.shape[1]) if images.shape[1] == images.shape[2] else None

    def sample(self, n: int, generator: torch.Generator, size: int | None = None) -> torch.Tensor:
        h, w = self.images.shape[1:3]
        idx = _randint(self.images.shape[0], n, generator)
        u = torch.from_numpy(_rand(8 * n, generator).reshape(n, 8)).float()
        x = _to_tensor(self.images[idx])

        # Shift in [min_shift, 1 - min_shift] of the side: never (close to) the identity.
        frac = self.min_shift + (1 - 2 * self.min_shift) * u[:, :2]
        out = torch.empty_like(x)
        for k in range(n):
            xk = x[k]
            if self.flip and u[k, 2] < 0.5:
                xk = xk.flip(-1)
            out[k] = torch.roll(xk, shifts=(int(frac[k, 0] * h), int(frac[k, 1] * w)), dims=(1, 2))

        # Colour jitter, vectorised over the batch.
        bright = 1 + self.brightness * (2 * u[:, 3] - 1)
        contrast = 1 + self.contrast * (2 * u[:, 4] - 1)
        sat = 1 + self.saturation * (2 * u[:, 5] - 1)
        out = out * bright.view(n, 1, 1, 1)
        gray = (0.299 * out[:, 0] + 0.587 * out[:, 1] + 0.114 * out[:, 2]).unsqueeze(1)
        out = gray + (out - gray) * sat.view(n, 1, 1, 1)
        mean = gray.mean(dim=(2, 3), keepdim=True)
        out = mean + (out - mean) * contrast.view(n, 1, 1, 1)
        return _resize(out.clamp_(0, 1), size if size is not None else self.size)


_REGISTRY: dict[str, Callable[..., AnomalySource]] = {
    "sia": SIASource,
    "texture": TextureSource,
    "dtd": TextureSource,
    "cutpaste": CutPasteSource,
}


def build_source(kind: str, **kwargs: Any) -> AnomalySource:
    """Create an anomaly source by name: ``sia`` (array=...), ``texture``/``dtd`` (folder=...),
    ``cutpaste`` (images=...)."""
    try:
        factory = _REGISTRY[kind.lower()]
    except KeyError:
        raise ValueError(
            f"unknown anomaly source '{kind}'; choose one of {', '.join(sorted(_REGISTRY))}"
        ) from None
    return factory(**kwargs)
