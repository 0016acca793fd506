"""Image blending (RealNet Eq. 3) and batched training-sample synthesis.

``A = (1 - M) * I + (1 - delta) * M * I + delta * M * P``

with I the normal image, P the anomaly source (an SDAS image, a texture, ...), M the binary
anomaly mask (Perlin mask times foreground mask) and delta the opacity, drawn per sample from
U(0.5, 1.0). Half the samples stay normal (mask 0, image unchanged).
"""

from __future__ import annotations

from typing import Any

import torch

from realnet_core.synthesis.perlin import perlin_masks


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
    **perlin_kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Make a training batch: about ``normal_fraction`` normal samples, the rest with local anomalies.

    Args:
        images: normal images, (B, 3, H, W) float in [0, 1].
        sources: anomaly sources, same shape, float in [0, 1].
        fg_masks: foreground masks (B, 1, H, W) (values > 0.5 count as foreground), or None for
            the whole image.
        generator: all randomness (normal/anomalous choice, opacities, Perlin masks) comes from it,
            in that order, so a seeded generator reproduces the batch exactly.
        normal_fraction: probability that a sample stays normal.
        delta_range: opacity range (low, high) for U(low, high).
        max_redraws: an anomalous sample whose Perlin mask misses the foreground gets this many new
            Perlin masks; if all miss, it stays normal.
        perlin_kwargs: passed to :func:`perlin_masks` (``min_scale_exp``, ``max_scale_exp``,
            ``threshold``, ``rotate``).

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
    lo, hi = delta_range
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"delta_range must satisfy 0 <= low <= high <= 1, got {delta_range}")

    gdev = generator.device
    anomalous = torch.rand(b, generator=generator, device=gdev) >= normal_fraction
    delta = lo + (hi - lo) * torch.rand(b, generator=generator, device=gdev)
    anomalous, delta = anomalous.to(device), delta.to(device, images.dtype)

    masks = torch.zeros(b, 1, h, w, device=device, dtype=images.dtype)
    todo = torch.nonzero(anomalous).flatten()
    for _ in range(max_redraws + 1):
        if todo.numel() == 0:
            break
        perlin = perlin_masks(todo.numel(), h, w, generator=generator, device=device, **perlin_kwargs)
        m = perlin.to(images.dtype) * fg[todo]
        masks[todo] = m
        todo = todo[m.flatten(1).amax(dim=1) == 0]
    # Samples still in `todo` keep an all-zero mask, i.e. they silently become normal samples.

    augmented = blend(images, sources.to(device, images.dtype), masks, delta)
    return augmented, masks
