"""Image blending (RealNet Eq. 3) and batched training-sample synthesis.

``A = (1 - M) * I + (1 - delta) * M * I + delta * M * P``

with I the normal image, P the anomaly source (an SDAS image, a texture, ...), M the binary
anomaly mask (Perlin mask times foreground mask) and delta the opacity, drawn per sample from
U(0.5, 1.0). Half the samples stay normal (mask 0, image unchanged).
"""

from __future__ import annotations

from typing import Any

import torch

from realnet_core.runtime import to_device
from realnet_core.synthesis.perlin import PerlinDraw, draw_perlin, evaluate_perlin


def blend(
    images: torch.Tensor, sources: torch.Tensor, masks: torch.Tensor, delta: torch.Tensor | float
) -> torch.Tensor:
    """Eq. 3: ``(1 - M) I + (1 - delta) M I + delta M P``.

    Args:
        images: normal images I, (B, 3, H, W).
        sources: anomaly sources P, same shape.
        masks: M, (B, 1, H, W) in {0, 1}.
        delta: opacity, a float or a tensor broadcastable to (B, 1, 1, 1).

    Where M == 0 the result is bit-identical to ``images`` (every other term is an exact zero).
    """
    if images.shape != sources.shape:
        raise ValueError(f"images {tuple(images.shape)} and sources {tuple(sources.shape)} differ in shape")
    if (
        masks.ndim != 4
        or masks.shape[1] != 1
        or masks.shape[0] != images.shape[0]
        or masks.shape[2:] != images.shape[2:]
    ):
        raise ValueError(f"masks must be (B, 1, H, W) matching images, got {tuple(masks.shape)}")
    if not torch.is_tensor(delta):
        delta = torch.tensor(float(delta), dtype=images.dtype, device=images.device)
    delta = delta.to(images.device, images.dtype)
    if delta.ndim == 1:
        delta = delta.view(-1, 1, 1, 1)
    m = masks.to(images.dtype)
    return (1 - m) * images + (1 - delta) * (m * images) + delta * (m * sources)


def synthesize(
    images: torch.Tensor,
    sources: torch.Tensor,
    fg_masks: torch.Tensor | None,
    *,
    generator: torch.Generator,
    normal_fraction: float = 0.5,
    delta_range: tuple[float, float] = (0.5, 1.0),
    max_redraws: int = 5,
    threshold: float = 0.5,
    **perlin_kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Make a training batch: about ``normal_fraction`` normal samples, the rest with local anomalies.

    Args:
        images: normal images, (B, 3, H, W) float in [0, 1].
        sources: anomaly sources, same shape, float in [0, 1].
        fg_masks: foreground masks (B, 1, H, W) (values > 0.5 count as foreground), or None for
            the whole image.
        generator: all randomness (normal/anomalous choice, opacities, the Perlin fields of every
            possible redraw) comes from it, in that order and in amounts that depend only on the
            batch size, so a seeded generator reproduces the batch exactly on any device.
        normal_fraction: probability that a sample stays normal.
        delta_range: opacity range (low, high) for U(low, high).
        max_redraws: an anomalous sample whose Perlin mask misses the foreground gets this many new
            Perlin masks; if all miss, it stays normal.
        threshold: a Perlin field above it is inside the mask.
        perlin_kwargs: passed to :func:`draw_perlin` (``min_scale_exp``, ``max_scale_exp``, ``rotate``).

    Returns:
        ``(augmented, masks)``: masks (B, 1, H, W) float {0, 1} are exactly the pixels that were
        blended (they differ from the input wherever delta > 0 and P != I there); normal samples
        have an all-zero mask and are returned unchanged.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    if sources.shape != images.shape:
        raise ValueError(f"sources {tuple(sources.shape)} must match images {tuple(images.shape)}")
    b, _, h, w = images.shape
    device = images.device
    if fg_masks is None:
        fg = torch.ones(b, 1, h, w, device=device, dtype=images.dtype)
    else:
        if fg_masks.shape != (b, 1, h, w):
            raise ValueError(f"fg_masks must be {(b, 1, h, w)}, got {tuple(fg_masks.shape)}")
        fg = (fg_masks.to(device) > 0.5).to(images.dtype)
    if max_redraws < 0:
        raise ValueError(f"max_redraws must be >= 0, got {max_redraws}")
    lo, hi = delta_range
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"delta_range must satisfy 0 <= low <= high <= 1, got {delta_range}")

    gdev = generator.device
    anomalous = torch.rand(b, generator=generator, device=gdev) >= normal_fraction
    delta = lo + (hi - lo) * torch.rand(b, generator=generator, device=gdev)
    # Every redraw is drawn up front, so the randomness taken never depends on what the masks hit.
    candidates = draw_perlin((max_redraws + 1) * b, h, w, generator=generator, **perlin_kwargs)
    anomalous, delta = to_device(anomalous, device), to_device(delta, device).to(images.dtype)
    masks = _first_hits(candidates, fg, anomalous, threshold, b)
    augmented = blend(images, sources.to(device, images.dtype), masks, delta)
    return augmented, masks


def _first_hits(candidates: PerlinDraw, fg: torch.Tensor, anomalous: torch.Tensor, threshold: float,
                b: int, lazy: bool | None = None) -> torch.Tensor:
    """Per anomalous sample, the first candidate mask (rows i, b + i, 2b + i, ...) that hits the foreground.

    Samples none of whose candidates hit keep an all-zero mask: they become normal samples. On the
    CPU (``lazy``) only the samples still without a mask are evaluated. On a GPU every candidate is: asking
    which samples are left would make the host wait for the GPU at every training step, and the
    extra Perlin fields cost far less than that wait. Both give the same masks.
    """
    _, _, h, w = fg.shape

    def hitting(rows: PerlinDraw, fg_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = (evaluate_perlin(rows, h, w, fg.device) > threshold).to(fg.dtype) * fg_rows
        return m, m.flatten(1).amax(dim=1) > 0

    lazy = fg.device.type == "cpu" if lazy is None else lazy
    masks, found = torch.zeros_like(fg), ~anomalous
    for k in range(len(candidates) // b):
        if lazy:
            idx = torch.nonzero(~found).flatten()
            if idx.numel() == 0:
                break
            m, hit = hitting(candidates.rows(k * b + idx), fg[idx])
            masks[idx[hit]], found[idx[hit]] = m[hit], True
        else:
            m, hit = hitting(candidates.rows(slice(k * b, (k + 1) * b)), fg)
            hit = hit & ~found
            masks, found = torch.where(hit.view(b, 1, 1, 1), m, masks), found | hit
    return masks
