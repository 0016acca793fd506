"""Tone matching of SIA to the training images: one linear curve per colour channel.

A diffusion model trained for minutes samples off-tone: on the development set its SIA are brighter
and flatter than the training images (BENCHMARKS.md, "SIA tones"), so blended anomalies brighten and
rarely darken. The curve moves the mean and standard deviation of all SIA of a category, pooled per
channel, onto those of its training images. It keeps each SIA's structure and the differences between
SIA; matching the whole histogram instead made the anomalies too like normal texture.
"""

from __future__ import annotations

import numpy as np

_LEVELS = np.arange(256, dtype=np.float64)


def channel_histograms(images: np.ndarray) -> np.ndarray:
    """(3, 256) int64 pixel counts per channel of uint8 (N, H, W, 3) images."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"need uint8 (N, H, W, 3) images, got {images.dtype} {images.shape}")
    return np.stack([np.bincount(images[..., c].ravel(), minlength=256) for c in range(3)]).astype(np.int64)


def _moments(hist: np.ndarray) -> tuple[float, float]:
    mean = float(np.average(_LEVELS, weights=hist))
    return mean, float(np.sqrt(np.average((_LEVELS - mean) ** 2, weights=hist)))


def tone_curve(source_hist: np.ndarray, target_hist: np.ndarray) -> np.ndarray:
    """(3, 256) uint8 lookup table taking each channel's source mean and spread to the target's."""
    for name, h in (("source", source_hist), ("target", target_hist)):
        if h.shape != (3, 256) or (h < 0).any() or (h.sum(axis=1) == 0).any():
            raise ValueError(f"{name} histogram must be (3, 256) non-negative counts with pixels in every channel")
    lut = np.empty((3, 256), np.uint8)
    for c in range(3):
        (ms, ss), (mt, st) = _moments(source_hist[c]), _moments(target_hist[c])
        # A flat source channel has no spread to scale: it is only moved.
        gain = st / ss if ss > 0 else 1.0
        lut[c] = np.clip(np.round((_LEVELS - ms) * gain + mt), 0, 255).astype(np.uint8)
    return lut


def apply_tone_curve(images: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) images through a (3, 256) lookup table."""
    return np.stack([lut[c][images[..., c]] for c in range(3)], axis=-1)
