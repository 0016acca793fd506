"""DRAEM's texture augmentation, which the RealNet paper applies to DTD textures (sec. 4.2, "the data
augmentation strategy in [48] is employed").

Each texture gets three distinct operations out of DRAEM's ten, in random order: gamma contrast in
[0.5, 2] per channel, brightness x[0.8, 1.2] + [-30, 30], PIL-style sharpness in [0, 2], hue and
saturation + [-50, 50] (on a 0-255 scale), solarize at [32, 128] half of the time, posterize to 1-8
bits, invert, autocontrast cutting up to 20% of each histogram end, equalize, and rotation in
[-45, 45] degrees. The ranges are DRAEM's; the operations are written with OpenCV and numpy.

All randomness comes from a torch.Generator, and every image takes the same amount of it whatever
operations it gets, so a seeded stage draws the same textures on every run.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch

# ---------------------------------------------------------------- the ten operations
# Each takes one (H, W, 3) uint8 RGB image and a few uniforms in [0, 1), and returns a new image.


def _lut(img: np.ndarray, tables: np.ndarray) -> np.ndarray:
    return np.stack([tables[c][img[..., c]] for c in range(3)], axis=-1)


def _gamma(img: np.ndarray, u: np.ndarray) -> np.ndarray:
    levels = np.arange(256) / 255.0
    tables = [np.clip(255.0 * levels ** (0.5 + 1.5 * u[c]) + 0.5, 0, 255).astype(np.uint8) for c in range(3)]
    return _lut(img, np.stack(tables))


def _brightness(img: np.ndarray, u: np.ndarray) -> np.ndarray:
    ycc = cv2.cvtColor(img, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    ycc[..., 0] = ycc[..., 0] * (0.8 + 0.4 * u[0]) + (-30 + 60 * u[1])
    return cv2.cvtColor(np.clip(ycc, 0, 255).astype(np.uint8), cv2.COLOR_YCrCb2RGB)


_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13  # PIL's ImageFilter.SMOOTH


def _sharpness(img: np.ndarray, u: np.ndarray) -> np.ndarray:
    # PIL's ImageEnhance.Sharpness: blend the smoothed image towards the original by a factor in [0, 2].
    smooth = cv2.filter2D(img.astype(np.float32), -1, _SMOOTH, borderType=cv2.BORDER_REPLICATE)
    return np.clip(smooth + 2 * u[0] * (img - smooth) + 0.5, 0, 255).astype(np.uint8)


def _hue_saturation(img: np.ndarray, u: np.ndarray) -> np.ndarray:
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.int32)  # OpenCV hue is 0-179
    hsv[..., 0] = (hsv[..., 0] + round((-50 + 100 * u[0]) * 180 / 255)) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] + round(-50 + 100 * u[1]), 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def _solarize(img: np.ndarray, u: np.ndarray) -> np.ndarray:
    if u[0] >= 0.5:
        return img.copy()
    return np.where(img >= 32 + 96 * u[1], 255 - img, img).astype(np.uint8)


def _posterize(img: np.ndarray, u: np.ndarray) -> np.ndarray:
    bits = min(8, 1 + int(8 * u[0]))
    return img & np.uint8((0xFF << (8 - bits)) & 0xFF)


def _invert(img: np.ndarray, u: np.ndarray) -> np.ndarray:
    return 255 - img


def _autocontrast(img: np.ndarray, u: np.ndarray) -> np.ndarray:
    cut = 20 * u[0]
    tables = []
    for c in range(3):
        lo, hi = np.percentile(img[..., c], [cut, 100 - cut])
        if hi <= lo:
            tables.append(np.arange(256, dtype=np.uint8))
            continue
        tables.append(np.clip((np.arange(256) - lo) * 255.0 / (hi - lo) + 0.5, 0, 255).astype(np.uint8))
    return _lut(img, np.stack(tables))


def _equalize(img: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.stack([cv2.equalizeHist(np.ascontiguousarray(img[..., c])) for c in range(3)], axis=-1)


def _rotate(img: np.ndarray, u: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), -45 + 90 * u[0], 1.0)
    return cv2.warpAffine(img, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


OPERATIONS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "gamma": _gamma, "brightness": _brightness, "sharpness": _sharpness, "hue_saturation": _hue_saturation,
    "solarize": _solarize, "posterize": _posterize, "invert": _invert, "autocontrast": _autocontrast,
    "equalize": _equalize, "rotate": _rotate,
}
PER_IMAGE = 3  # operations applied to each texture
_UNIFORMS = 3  # uniforms drawn per operation, used or not


# ---------------------------------------------------------------- the augmentation


def augment_textures(images: np.ndarray, generator: torch.Generator) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> the same shape, each image through three random DRAEM operations."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 images, got {images.shape} {images.dtype}")
    n, names = len(images), list(OPERATIONS)
    choice = [torch.randperm(len(names), generator=generator, device=generator.device)[:PER_IMAGE].tolist()
              for _ in range(n)]
    u = torch.rand(n, PER_IMAGE, _UNIFORMS, generator=generator, device=generator.device,
                   dtype=torch.float64).cpu().numpy()
    out = np.empty_like(images)
    for k in range(n):
        img = images[k]
        for j, op in enumerate(choice[k]):
            img = OPERATIONS[names[op]](img, u[k, j])
        out[k] = img
    return out
