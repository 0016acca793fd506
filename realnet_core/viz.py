"""Pictures people look at: image grids, heat maps and overlays (uint8 numpy, RGB)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def make_grid(images: np.ndarray, nrow: int = 8, pad: int = 2, labels: list[str] | None = None) -> np.ndarray:
    """Tile (N, H, W, 3) uint8 images into one image, with an optional caption per tile."""
    n, h, w, _ = images.shape
    ncol = min(nrow, n)
    rows = -(-n // ncol)
    grid = np.full((rows * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        tile = images[i].copy()
        if labels:
            scale = max(h / 256, 0.3)
            cv2.putText(tile, labels[i], (3, int(14 * scale) + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale,
                        (255, 255, 0), 1, cv2.LINE_AA)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = tile
    return grid


def heatmap(values: np.ndarray, vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """(H, W) float -> (H, W, 3) uint8 jet colours."""
    norm = np.clip((values - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    bgr = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def overlay(image: np.ndarray, values: np.ndarray, alpha: float = 0.5, vmax: float = 1.0) -> np.ndarray:
    return cv2.addWeighted(image, 1 - alpha, heatmap(values, 0.0, vmax), alpha, 0)


def mask_outline(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (255, 0, 0)) -> np.ndarray:
    out = image.copy()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, colour, 1)
    return out


def triptych(image: np.ndarray, mask: np.ndarray, amap: np.ndarray, vmax: float = 1.0) -> np.ndarray:
    """image | ground truth outline | heat map overlay, side by side."""
    gt = np.repeat((mask.astype(np.uint8) * 255)[..., None], 3, axis=2)
    return np.concatenate([image, gt, overlay(mask_outline(image, mask), amap, vmax=vmax)], axis=1)


def write_png(path: str, image: np.ndarray) -> None:
    """Write an (H, W, 3) RGB or an (H, W) gray uint8 image as PNG."""
    ok, data = cv2.imencode(".png", image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    try:
        with open(path, "wb") as f:  # a plain write, so that a full disk gives ENOSPC, not just False
            f.write(data.tobytes())
    except OSError as e:
        if Path(path).is_file():
            Path(path).unlink()  # no half-written PNG left behind
        e.needed = data.nbytes  # read by stages.common.execute for its out-of-space message
        raise
